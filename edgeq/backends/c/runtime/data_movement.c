/* Table lookup, int8 requantization, PAD, CONCATENATION, TRANSPOSE and RESIZE (nearest, bilinear). */
#include <string.h>

#include "edgeq_fixedpoint.h"
#include "edgeq_nn.h"

void edgeq_lut_s8(int32_t size, const int8_t *lut, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < size; i++) {
        output[i] = lut[input[i] + 128];
    }
}

void edgeq_requantize_s8(const edgeq_requantize_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < p->size; i++) {
        const int32_t v = edgeq_requant(input[i] - p->input_zero_point, p->multiplier, p->shift);
        output[i] = (int8_t)edgeq_clamp(v + p->output_zero_point, -128, 127);
    }
}

void edgeq_pad_s8(const edgeq_pad_params *p, const int8_t *input, int8_t *output)
{
    const int32_t *is = p->in_shape, *os = p->out_shape, *bf = p->before;
    memset(output, p->value, (size_t)os[0] * os[1] * os[2] * os[3]);
    for (int32_t a = 0; a < is[0]; a++) {
        for (int32_t b = 0; b < is[1]; b++) {
            for (int32_t c = 0; c < is[2]; c++) {
                const size_t o = (((size_t)(a + bf[0]) * os[1] + (b + bf[1])) * os[2] + (c + bf[2])) * os[3] + bf[3];
                memcpy(output + o, input, (size_t)is[3]);
                input += is[3];
            }
        }
    }
}

void edgeq_concat_s8(int32_t n, int32_t outer, const int32_t *chunk, const int8_t *const *inputs, int8_t *output)
{
    for (int32_t o = 0; o < outer; o++) {
        for (int32_t i = 0; i < n; i++) {
            memcpy(output, inputs[i] + (size_t)o * chunk[i], (size_t)chunk[i]);
            output += chunk[i];
        }
    }
}

void edgeq_transpose_s8(const edgeq_transpose_params *p, const int8_t *input, int8_t *output)
{
    const int32_t *s = p->out_shape, *st = p->in_stride;
    for (int32_t a = 0; a < s[0]; a++) {
        for (int32_t b = 0; b < s[1]; b++) {
            for (int32_t c = 0; c < s[2]; c++) {
                const int8_t *ip = input + (size_t)a * st[0] + (size_t)b * st[1] + (size_t)c * st[2];
                for (int32_t d = 0; d < s[3]; d++) {
                    *output++ = ip[(size_t)d * st[3]];
                }
            }
        }
    }
}

void edgeq_resize_nearest_s8(const edgeq_resize_params *p, const int16_t *y_index, const int16_t *x_index,
                             const int8_t *input, int8_t *output)
{
    const size_t c_n = (size_t)p->channels, row = (size_t)p->in_w * c_n;
    for (int32_t b = 0; b < p->batches; b++) {
        const int8_t *in_b = input + (size_t)b * p->in_h * row;
        for (int32_t y = 0; y < p->out_h; y++) {
            const int8_t *in_row = in_b + (size_t)y_index[y] * row;
            for (int32_t x = 0; x < p->out_w; x++) {
                memcpy(output, in_row + (size_t)x_index[x] * c_n, c_n);
                output += c_n;
            }
        }
    }
}

void edgeq_resize_bilinear_s8(const edgeq_resize_params *p, const int16_t *y_lo, const int16_t *y_hi,
                              const int16_t *y_w, const int16_t *x_lo, const int16_t *x_hi, const int16_t *x_w,
                              const int8_t *input, int8_t *output)
{
    const size_t c_n = (size_t)p->channels, row = (size_t)p->in_w * c_n;
    for (int32_t b = 0; b < p->batches; b++) {
        const int8_t *in_b = input + (size_t)b * p->in_h * row;
        for (int32_t y = 0; y < p->out_h; y++) {
            const int8_t *r0 = in_b + (size_t)y_lo[y] * row, *r1 = in_b + (size_t)y_hi[y] * row;
            const int32_t wy1 = y_w[y], wy0 = 1024 - wy1;
            for (int32_t x = 0; x < p->out_w; x++) {
                const size_t c0 = (size_t)x_lo[x] * c_n, c1 = (size_t)x_hi[x] * c_n;
                const int32_t wx1 = x_w[x], wx0 = 1024 - wx1;
                for (size_t c = 0; c < c_n; c++) {
                    /* |sum| <= 128 * 2^20: fits in int32. */
                    const int32_t sum = r0[c0 + c] * wy0 * wx0 + r1[c0 + c] * wy1 * wx0 + r0[c1 + c] * wy0 * wx1
                                        + r1[c1 + c] * wy1 * wx1;
                    const int32_t rounded = sum > 0 ? sum + (1 << 19) : sum - (1 << 19);
                    *output++ = (int8_t)(rounded / (1 << 20));
                }
            }
        }
    }
}
