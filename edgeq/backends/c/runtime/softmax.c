/* SOFTMAX int8 -> int8 (TFLite reference_ops::Softmax with gemmlowp's fixed-point exp and reciprocal). */
#include "edgeq_fixedpoint.h"
#include "edgeq_nn.h"

static inline int32_t wrap_add(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static inline int32_t wrap_sub(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a - (uint32_t)b);
}

/* gemmlowp SaturatingRoundingMultiplyByPOT. */
static int32_t sat_mul_pot(int32_t x, int32_t exponent)
{
    if (exponent == 0) {
        return x;
    }
    if (exponent < 0) {
        return edgeq_rdbpot(x, -exponent);
    }
    const int32_t threshold = (int32_t)(((uint32_t)1 << (31 - exponent)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return edgeq_shl(x, exponent);
}

/* exp on [-1/4, 0), Q0.31 in and out. */
static int32_t exp_neg_quarter(int32_t a)
{
    const int32_t constant_term = 1895147668, one_third = 715827883;
    const int32_t x = wrap_add(a, 1 << 28);
    const int32_t x2 = edgeq_srdhm(x, x);
    const int32_t x3 = edgeq_srdhm(x2, x);
    const int32_t x4 = edgeq_srdhm(x2, x2);
    const int32_t x4_over_4 = sat_mul_pot(x4, -2);
    const int32_t inner = sat_mul_pot(wrap_add(edgeq_srdhm(wrap_add(x4_over_4, x3), one_third), x2), -1);
    return wrap_add(constant_term, edgeq_srdhm(constant_term, wrap_add(x, inner)));
}

/* gemmlowp exp_on_negative_values for FixedPoint<int32, 5>; Q0.31 result. */
static int32_t exp_on_negative_values_5(int32_t a)
{
    enum { INTEGER_BITS = 5, FRAC_BITS = 31 - INTEGER_BITS };
    static const int32_t multipliers[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int32_t one_quarter = 1 << (FRAC_BITS - 2), mask = one_quarter - 1;
    const int32_t a_mod = wrap_sub(a & mask, one_quarter);
    int32_t result = exp_neg_quarter(sat_mul_pot(a_mod, INTEGER_BITS));
    const int32_t remainder = wrap_sub(a_mod, a);
    for (int32_t e = -2; e <= 4; e++) {
        if (INTEGER_BITS > e && (remainder & (1 << (FRAC_BITS + e)))) {
            result = edgeq_srdhm(result, multipliers[e + 2]);
        }
    }
    return a == 0 ? INT32_MAX : result;
}

/* gemmlowp one_over_one_plus_x_for_x_in_0_1, Q0.31 in and out. */
static int32_t one_over_one_plus_x(int32_t a)
{
    const int64_t sum = (int64_t)a + INT32_MAX;
    const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    const int32_t c48_17 = 1515870810, cneg32_17 = -1010580540, one_q29 = 1 << 29;
    int32_t x = wrap_add(c48_17, edgeq_srdhm(half_denominator, cneg32_17));
    for (int i = 0; i < 3; i++) {
        const int32_t one_minus = wrap_sub(one_q29, edgeq_srdhm(half_denominator, x));
        x = wrap_add(x, sat_mul_pot(edgeq_srdhm(x, one_minus), 2));
    }
    return sat_mul_pot(x, 1);
}

static int32_t count_leading_zeros(uint32_t x)
{
    int32_t n = 0;
    if (x == 0) {
        return 32;
    }
    while (!(x & 0x80000000u)) {
        x <<= 1;
        n++;
    }
    return n;
}

static inline int32_t rescaled_exp(const edgeq_softmax_params *p, int32_t diff)
{
    const int32_t rescaled = edgeq_srdhm(edgeq_shl(diff, p->input_left_shift), p->input_multiplier);
    return exp_on_negative_values_5(rescaled);
}

void edgeq_softmax_s8(const edgeq_softmax_params *p, const int8_t *input, int8_t *output)
{
    const int32_t depth = p->depth;
    for (int32_t r = 0; r < p->rows; r++, input += depth, output += depth) {
        int32_t max = -128;
        for (int32_t i = 0; i < depth; i++) {
            max = input[i] > max ? input[i] : max;
        }
        uint32_t sum_of_exps = 0; /* Q12.19, wrapping like the reference's int32 */
        for (int32_t i = 0; i < depth; i++) {
            const int32_t diff = input[i] - max;
            if (diff >= p->diff_min) {
                sum_of_exps += (uint32_t)edgeq_rdbpot(rescaled_exp(p, diff), 12);
            }
        }
        const int32_t headroom_plus_one = count_leading_zeros(sum_of_exps);
        const int32_t num_bits_over_unit = 12 - headroom_plus_one;
        const int32_t shifted_sum_minus_one = (int32_t)((sum_of_exps << headroom_plus_one) - 0x80000000u);
        const int32_t shifted_scale = one_over_one_plus_x(shifted_sum_minus_one);
        const int32_t exponent = num_bits_over_unit + 31 - 8;
        for (int32_t i = 0; i < depth; i++) {
            const int32_t diff = input[i] - max;
            int32_t out = -128;
            if (diff >= p->diff_min) {
                const int32_t unsat = edgeq_rdbpot(edgeq_srdhm(shifted_scale, rescaled_exp(p, diff)), exponent);
                out = edgeq_clamp(unsat - 128, -128, 127);
            }
            output[i] = (int8_t)out;
        }
    }
}
