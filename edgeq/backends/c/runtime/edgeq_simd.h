/*
 * The few SIMD operations of the DSP paths (SXTB16, SXTAB16, SMLAD, SMLABB/SMLATT, ROR), on arm_acle.h
 * intrinsics.  With EDGEQ_EMULATE_DSP they are plain C instead, so that the DSP paths can be compiled and
 * checked on the host (under -fsanitize=address,undefined) against the same reference as the portable paths.
 * EDGEQ_PORTABLE forces the portable paths on a DSP core.
 */
#ifndef EDGEQ_SIMD_H
#define EDGEQ_SIMD_H

#include <stdint.h>
#include <string.h>

#define EDGEQ_ALWAYS_INLINE static inline __attribute__((always_inline))

#if defined(EDGEQ_PORTABLE)
#define EDGEQ_DSP 0
#elif defined(EDGEQ_EMULATE_DSP)
#define EDGEQ_DSP 1

EDGEQ_ALWAYS_INLINE uint32_t edgeq_ror(uint32_t x, uint32_t r)
{
    return r ? (x >> r) | (x << (32 - r)) : x;
}

EDGEQ_ALWAYS_INLINE uint32_t edgeq_sxtb16(uint32_t x)
{
    return (uint32_t)(uint16_t)(int16_t)(int8_t)(x & 0xff) | ((uint32_t)(uint16_t)(int16_t)(int8_t)(x >> 16) << 16);
}

EDGEQ_ALWAYS_INLINE uint32_t edgeq_sxtab16(uint32_t a, uint32_t x)
{
    const uint32_t e = edgeq_sxtb16(x);
    return ((a + e) & 0xffffu) | (((a >> 16) + (e >> 16)) << 16);
}

EDGEQ_ALWAYS_INLINE uint32_t edgeq_sxtb16_ror8(uint32_t x)
{
    return edgeq_sxtb16(edgeq_ror(x, 8));
}

EDGEQ_ALWAYS_INLINE uint32_t edgeq_sxtab16_ror8(uint32_t a, uint32_t x)
{
    return edgeq_sxtab16(a, edgeq_ror(x, 8));
}

EDGEQ_ALWAYS_INLINE int32_t edgeq_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    const int32_t lo = (int32_t)(int16_t)(a & 0xffff) * (int32_t)(int16_t)(b & 0xffff);
    const int32_t hi = (int32_t)(int16_t)(a >> 16) * (int32_t)(int16_t)(b >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)lo + (uint32_t)hi);
}

EDGEQ_ALWAYS_INLINE int32_t edgeq_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)((int32_t)(int16_t)(a & 0xffff) * (int32_t)(int16_t)(b & 0xffff)));
}

EDGEQ_ALWAYS_INLINE int32_t edgeq_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)((int32_t)(int16_t)(a >> 16) * (int32_t)(int16_t)(b >> 16)));
}

/* SMMULR: the high word of a * b, rounded (+ 2^31 before the shift). */
EDGEQ_ALWAYS_INLINE int32_t edgeq_smmulr(int32_t a, int32_t b)
{
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
}

#elif defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define EDGEQ_DSP 1
#include <arm_acle.h>

#define edgeq_sxtb16(x) __sxtb16(x)
#define edgeq_sxtab16(a, x) __sxtab16((a), (x))
#define edgeq_smlad(a, b, acc) __smlad((a), (b), (acc))
#define edgeq_smlabb(a, b, acc) __smlabb((a), (b), (acc))
#define edgeq_smlatt(a, b, acc) __smlatt((a), (b), (acc))

/* The rotated forms are one instruction; GCC 12's arm_acle.h has no __ror to express them. */
EDGEQ_ALWAYS_INLINE uint32_t edgeq_sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

EDGEQ_ALWAYS_INLINE uint32_t edgeq_sxtab16_ror8(uint32_t a, uint32_t x)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}

EDGEQ_ALWAYS_INLINE int32_t edgeq_smmulr(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

#else
#define EDGEQ_DSP 0
#endif

#if EDGEQ_DSP
/* MultiplyByQuantizedMultiplier(x, m, shift) in 8 instructions, exactly, for shift <= -1 (a right shift
 * e = -shift >= 1) and |x| < 2^30, conditions the code generator proves per op (accumulator bounds from the
 * weights and bias):
 *   SaturatingRoundingDoublingHighMul(x, m) = floor((x*m + 2^30) / 2^31) = SMMULR(2x, m) when 2x fits;
 *   RoundingDivideByPOT(r, e) = (r + 2^(e-1) - (r < 0)) >> e, and |r| < 2^30 keeps the sum in range. */
EDGEQ_ALWAYS_INLINE int32_t edgeq_requant_fast(int32_t x, int32_t m, int32_t shift)
{
    const int32_t e = -shift;
    const int32_t r = edgeq_smmulr((int32_t)((uint32_t)x << 1), m);
    return (r + (1 << (e - 1)) + (r >> 31)) >> e;
}

/* Unaligned 32-bit access through memcpy: one LDR/STR on cores that allow unaligned access. */
EDGEQ_ALWAYS_INLINE uint32_t edgeq_ld32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

EDGEQ_ALWAYS_INLINE void edgeq_st32(void *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
#endif

#endif
