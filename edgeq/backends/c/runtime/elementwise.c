/* ADD, SUB, MUL and PRELU int8 (TFLite reference arithmetic), with 4-D broadcasting. */
#include "edgeq_fixedpoint.h"
#include "edgeq_nn.h"
#include "edgeq_simd.h"

static inline int32_t add_scale1(const edgeq_add_params *p, int32_t x)
{
    return edgeq_requant(edgeq_shl(x + p->input1_offset, p->left_shift), p->input1_multiplier, p->input1_shift);
}

static inline int32_t add_scale2(const edgeq_add_params *p, int32_t x)
{
    return edgeq_requant(edgeq_shl(x + p->input2_offset, p->left_shift), p->input2_multiplier, p->input2_shift);
}

static inline int8_t add_one(const edgeq_add_params *p, int32_t x1, int32_t x2)
{
    const int32_t sa = add_scale1(p, x1);
    const int32_t sb = add_scale2(p, x2);
    /* Both terms are below 2^30 in magnitude: the sum cannot overflow. */
    const int32_t sum = p->subtract ? sa - sb : sa + sb;
    const int32_t raw = edgeq_requant(sum, p->output_multiplier, p->output_shift) + p->output_offset;
    return (int8_t)edgeq_clamp(raw, p->act_min, p->act_max);
}

static inline int8_t mul_one(const edgeq_mul_params *p, int32_t x1, int32_t x2)
{
    const int32_t prod = (x1 + p->input1_offset) * (x2 + p->input2_offset);
    const int32_t raw = edgeq_requant(prod, p->output_multiplier, p->output_shift) + p->output_offset;
    return (int8_t)edgeq_clamp(raw, p->act_min, p->act_max);
}

#define BROADCAST_LOOP(bc, in1, in2, out, one, p)                                                            \
    do {                                                                                                     \
        for (int32_t i0 = 0; i0 < (bc)->shape[0]; i0++) {                                                    \
            for (int32_t i1 = 0; i1 < (bc)->shape[1]; i1++) {                                                \
                for (int32_t i2 = 0; i2 < (bc)->shape[2]; i2++) {                                            \
                    const int8_t *a = (in1) + i0 * (bc)->stride1[0] + i1 * (bc)->stride1[1]                  \
                                      + i2 * (bc)->stride1[2];                                               \
                    const int8_t *b = (in2) + i0 * (bc)->stride2[0] + i1 * (bc)->stride2[1]                  \
                                      + i2 * (bc)->stride2[2];                                               \
                    for (int32_t i3 = 0; i3 < (bc)->shape[3]; i3++) {                                        \
                        *(out)++ = one((p), a[i3 * (bc)->stride1[3]], b[i3 * (bc)->stride2[3]]);             \
                    }                                                                                        \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
    } while (0)

void edgeq_add_s8(const edgeq_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    if (p->size > 0 && p->table1 && p->table2) {
        const int32_t *t1 = p->table1 + 128, *t2 = p->table2 + 128;
        const int32_t m = p->output_multiplier, sh = p->output_shift, zp = p->output_offset;
        const int32_t lo = p->act_min, hi = p->act_max;
#if EDGEQ_DSP
        if (p->fast_requant) {
            for (int32_t i = 0; i < p->size; i++) {
                const int32_t sum = p->subtract ? t1[input1[i]] - t2[input2[i]] : t1[input1[i]] + t2[input2[i]];
                output[i] = (int8_t)edgeq_clamp(edgeq_requant_fast(sum, m, sh) + zp, lo, hi);
            }
            return;
        }
#endif
        for (int32_t i = 0; i < p->size; i++) {
            const int32_t sum = p->subtract ? t1[input1[i]] - t2[input2[i]] : t1[input1[i]] + t2[input2[i]];
            output[i] = (int8_t)edgeq_clamp(edgeq_requant(sum, m, sh) + zp, lo, hi);
        }
        return;
    }
    if (p->size > 0) {
        for (int32_t i = 0; i < p->size; i++) {
            output[i] = add_one(p, input1[i], input2[i]);
        }
        return;
    }
    BROADCAST_LOOP(&p->bc, input1, input2, output, add_one, p);
}

void edgeq_mul_s8(const edgeq_mul_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    if (p->size > 0) {
        for (int32_t i = 0; i < p->size; i++) {
            output[i] = mul_one(p, input1[i], input2[i]);
        }
        return;
    }
    BROADCAST_LOOP(&p->bc, input1, input2, output, mul_one, p);
}

static inline int8_t prelu_one(const edgeq_prelu_params *p, int32_t x, int32_t a)
{
    const int32_t v = x + p->input_offset;
    int32_t r;
    if (v >= 0) {
        r = edgeq_requant(v, p->identity_multiplier, p->identity_shift);
    } else {
        r = edgeq_requant(v * (a + p->alpha_offset), p->alpha_multiplier, p->alpha_shift);
    }
    return (int8_t)edgeq_clamp(r + p->output_offset, -128, 127);
}

void edgeq_prelu_s8(const edgeq_prelu_params *p, const int8_t *input, const int8_t *alpha, int8_t *output)
{
    if (p->size > 0) {
        for (int32_t i = 0; i < p->size; i++) {
            output[i] = prelu_one(p, input[i], alpha[i]);
        }
        return;
    }
    BROADCAST_LOOP(&p->bc, input, alpha, output, prelu_one, p);
}
