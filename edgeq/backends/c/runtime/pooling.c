/* MAX_POOL_2D and AVERAGE_POOL_2D int8 (TFLite reference arithmetic: padding is excluded from the window, the
 * average rounds half away from zero). */
#include "edgeq_fixedpoint.h"
#include "edgeq_nn.h"

#define POOL_WINDOW(p, oy, ox)                                                                               \
    const int32_t iy0 = (oy) * (p)->stride_h - (p)->pad_top, ix0 = (ox) * (p)->stride_w - (p)->pad_left;     \
    const int32_t fy0 = iy0 < 0 ? -iy0 : 0, fx0 = ix0 < 0 ? -ix0 : 0;                                        \
    const int32_t fy1 = (p)->k_h < (p)->in_h - iy0 ? (p)->k_h : (p)->in_h - iy0;                             \
    const int32_t fx1 = (p)->k_w < (p)->in_w - ix0 ? (p)->k_w : (p)->in_w - ix0

void edgeq_max_pool_s8(const edgeq_pool_params *p, const int8_t *input, int8_t *output)
{
    const int32_t c_n = p->channels;
    for (int32_t b = 0; b < p->batches; b++) {
        const int8_t *in_b = input + (size_t)b * p->in_h * p->in_w * c_n;
        for (int32_t oy = 0; oy < p->out_h; oy++) {
            for (int32_t ox = 0; ox < p->out_w; ox++) {
                POOL_WINDOW(p, oy, ox);
                for (int32_t c = 0; c < c_n; c++) {
                    int32_t m = -128;
                    for (int32_t fy = fy0; fy < fy1; fy++) {
                        const int8_t *ip = in_b + ((size_t)(iy0 + fy) * p->in_w + ix0 + fx0) * c_n + c;
                        for (int32_t fx = fx0; fx < fx1; fx++, ip += c_n) {
                            const int32_t v = *ip;
                            m = v > m ? v : m;
                        }
                    }
                    *output++ = (int8_t)edgeq_clamp(m, p->act_min, p->act_max);
                }
            }
        }
    }
}

void edgeq_avg_pool_s8(const edgeq_pool_params *p, const int8_t *input, int8_t *output)
{
    const int32_t c_n = p->channels;
    for (int32_t b = 0; b < p->batches; b++) {
        const int8_t *in_b = input + (size_t)b * p->in_h * p->in_w * c_n;
        for (int32_t oy = 0; oy < p->out_h; oy++) {
            for (int32_t ox = 0; ox < p->out_w; ox++) {
                POOL_WINDOW(p, oy, ox);
                const int32_t count = (fy1 - fy0) * (fx1 - fx0);
                for (int32_t c = 0; c < c_n; c++) {
                    int32_t acc = 0;
                    for (int32_t fy = fy0; fy < fy1; fy++) {
                        const int8_t *ip = in_b + ((size_t)(iy0 + fy) * p->in_w + ix0 + fx0) * c_n + c;
                        for (int32_t fx = fx0; fx < fx1; fx++, ip += c_n) {
                            acc += *ip;
                        }
                    }
                    /* The generated code guarantees count > 0 (every window overlaps the input). */
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    *output++ = (int8_t)edgeq_clamp(acc, p->act_min, p->act_max);
                }
            }
        }
    }
}
