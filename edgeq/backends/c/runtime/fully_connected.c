/* FULLY_CONNECTED int8 (TFLite reference arithmetic, per-tensor or per-channel requantization).  DSP path: two
 * output rows per pass, four inputs per 32-bit load, the input offset added by SXTAB16. */
#include "edgeq_fixedpoint.h"
#include "edgeq_nn.h"
#include "edgeq_simd.h"

static inline int8_t fc_out(int32_t acc, const edgeq_fc_params *p, const int32_t *multiplier,
                            const int32_t *shift, int32_t o)
{
    const int32_t i = p->per_channel ? o : 0;
    if (p->scale) {
        const double v = (double)acc * p->scale[i];
        double a = v < 0 ? -v : v;
        /* Anything this large clamps to the int8 range; the cap keeps the conversion defined. */
        a = a > 1e9 ? 1e9 : a;
        const int32_t r = (int32_t)(a + 0.5);
        return (int8_t)edgeq_clamp((v < 0 ? -r : r) + p->output_offset, p->act_min, p->act_max);
    }
#if EDGEQ_DSP
    acc = (p->fast_requant ? edgeq_requant_fast(acc, multiplier[i], shift[i])
                           : edgeq_requant(acc, multiplier[i], shift[i])) + p->output_offset;
#else
    acc = edgeq_requant(acc, multiplier[i], shift[i]) + p->output_offset;
#endif
    return (int8_t)edgeq_clamp(acc, p->act_min, p->act_max);
}

void edgeq_fully_connected_s8(const edgeq_fc_params *p, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                              int8_t *output)
{
    const int32_t in_n = p->in_n, out_n = p->out_n;
    for (int32_t b = 0; b < p->batches; b++) {
        const int8_t *x = input + (size_t)b * in_n;
        int32_t o = 0;
#if EDGEQ_DSP
        const uint32_t off2 = ((uint32_t)(uint16_t)p->input_offset << 16) | (uint16_t)p->input_offset;
        const int32_t groups = in_n >> 2;
        for (; o + 1 < out_n; o += 2) {
            const int8_t *w0 = filter + (size_t)o * in_n;
            const int8_t *xp = x;
            int32_t s0 = bias ? bias[o] : 0, s1 = bias ? bias[o + 1] : 0;
            for (int32_t g = 0; g < groups; g++) {
                const uint32_t xv = edgeq_ld32(xp), wa = edgeq_ld32(w0), wb = edgeq_ld32(w0 + in_n);
                xp += 4;
                w0 += 4;
                const uint32_t x02 = edgeq_sxtab16(off2, xv), x13 = edgeq_sxtab16_ror8(off2, xv);
                s0 = edgeq_smlad(edgeq_sxtb16(wa), x02, s0);
                s0 = edgeq_smlad(edgeq_sxtb16_ror8(wa), x13, s0);
                s1 = edgeq_smlad(edgeq_sxtb16(wb), x02, s1);
                s1 = edgeq_smlad(edgeq_sxtb16_ror8(wb), x13, s1);
            }
            for (int32_t i = groups * 4; i < in_n; i++, w0++) {
                const int32_t xi = x[i] + p->input_offset;
                s0 += xi * w0[0];
                s1 += xi * w0[in_n];
            }
            output[o] = fc_out(s0, p, multiplier, shift, o);
            output[o + 1] = fc_out(s1, p, multiplier, shift, o + 1);
        }
#endif
        for (; o < out_n; o++) {
            const int8_t *w = filter + (size_t)o * in_n;
            int32_t acc = bias ? bias[o] : 0;
            for (int32_t i = 0; i < in_n; i++) {
                acc += (x[i] + p->input_offset) * w[i];
            }
            output[o] = fc_out(acc, p, multiplier, shift, o);
        }
        output += out_n;
    }
}
