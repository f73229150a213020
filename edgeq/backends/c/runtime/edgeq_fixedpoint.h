/*
 * Fixed-point arithmetic of TFLite's reference int8 kernels, bit for bit (the default build, not
 * TFLITE_SINGLE_ROUNDING): MultiplyByQuantizedMultiplier = SaturatingRoundingDoublingHighMul followed by
 * RoundingDivideByPOT.  Signed overflow is avoided (the arithmetic is done in unsigned or 64 bits where the
 * reference relies on two's-complement wrapping) so the code is clean under -fsanitize=undefined.
 */
#ifndef EDGEQ_FIXEDPOINT_H
#define EDGEQ_FIXEDPOINT_H

#include <stdint.h>

#define EDGEQ_INLINE static inline __attribute__((always_inline))

/* gemmlowp SaturatingRoundingDoublingHighMul: round(2*a*b / 2^32) with the one overflow case saturated.
 * (ab + nudge) / 2^31 truncated toward zero equals floor((ab + 2^30) / 2^31) for either sign of ab. */
EDGEQ_INLINE int32_t edgeq_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    int64_t ab = (int64_t)a * (int64_t)b;
    return (int32_t)((ab + ((int64_t)1 << 30)) >> 31);
}

/* The same without the saturation test: it saturates only for a == b == INT32_MIN, and every multiplier from
 * QuantizeMultiplier lies in [2^30, 2^31) or is 0, so requantization never needs it. */
EDGEQ_INLINE int32_t edgeq_srdhm_nosat(int32_t a, int32_t b)
{
    int64_t ab = (int64_t)a * (int64_t)b;
    return (int32_t)((ab + ((int64_t)1 << 30)) >> 31);
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero. */
EDGEQ_INLINE int32_t edgeq_rdbpot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)(((uint32_t)1 << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x * (1 << shift) as the reference computes it in int32 (two's-complement wrap), without UB. */
EDGEQ_INLINE int32_t edgeq_shl(int32_t x, int32_t shift)
{
    return (int32_t)((uint32_t)x << shift);
}

/* TFLite MultiplyByQuantizedMultiplier(x, multiplier, shift): shift > 0 is a left shift before the
 * multiplication, shift < 0 a rounding right shift after it. */
EDGEQ_INLINE int32_t edgeq_requant(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return edgeq_rdbpot(edgeq_srdhm_nosat(edgeq_shl(x, left), multiplier), right);
}

EDGEQ_INLINE int32_t edgeq_clamp(int32_t x, int32_t lo, int32_t hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

#endif
