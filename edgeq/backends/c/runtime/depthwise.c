/* DEPTHWISE_CONV_2D int8 (TFLite reference arithmetic).  DSP path: four channels per 32-bit load, SMLABB and
 * SMLATT on the sign-extended halves; it needs depth_multiplier 1 and channels % 4 == 0 and falls back to the
 * portable loop otherwise. */
#include "edgeq_fixedpoint.h"
#include "edgeq_nn.h"
#include "edgeq_simd.h"

static inline int8_t dw_out(int32_t acc, int32_t mult, int32_t shift, const edgeq_dw_params *p)
{
    acc = edgeq_requant(acc, mult, shift) + p->output_offset;
    return (int8_t)edgeq_clamp(acc, p->act_min, p->act_max);
}

static void dw_portable(const edgeq_dw_params *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                        const int32_t *multiplier, const int32_t *shift, int8_t *output)
{
    const int32_t in_c = p->in_c, out_c = p->out_c, dm = p->depth_multiplier;
    for (int32_t b = 0; b < p->batches; b++) {
        const int8_t *in_b = input + (size_t)b * p->in_h * p->in_w * in_c;
        for (int32_t oy = 0; oy < p->out_h; oy++) {
            const int32_t iy0 = oy * p->stride_h - p->pad_top;
            for (int32_t ox = 0; ox < p->out_w; ox++) {
                const int32_t ix0 = ox * p->stride_w - p->pad_left;
                for (int32_t ic = 0; ic < in_c; ic++) {
                    for (int32_t m = 0; m < dm; m++) {
                        const int32_t oc = ic * dm + m;
                        int32_t acc = bias ? bias[oc] : 0;
                        for (int32_t ky = 0; ky < p->k_h; ky++) {
                            const int32_t iy = iy0 + ky * p->dil_h;
                            if (iy < 0 || iy >= p->in_h) {
                                continue;
                            }
                            for (int32_t kx = 0; kx < p->k_w; kx++) {
                                const int32_t ix = ix0 + kx * p->dil_w;
                                if (ix < 0 || ix >= p->in_w) {
                                    continue;
                                }
                                const int32_t x = in_b[((size_t)iy * p->in_w + ix) * in_c + ic];
                                acc += (x + p->input_offset) * filter[(ky * p->k_w + kx) * out_c + oc];
                            }
                        }
                        *output++ = dw_out(acc, multiplier[oc], shift[oc], p);
                    }
                }
            }
        }
    }
}

#if EDGEQ_DSP
/* Four channels of one output pixel over the taps [ky_n x kx_n] starting at ip / wp. */
static inline void dw_taps4(const int8_t *ip, const int8_t *wp, int32_t ky_n, int32_t kx_n, size_t in_row,
                            size_t in_col, size_t w_row, size_t w_col, uint32_t off2, int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int32_t ky = 0; ky < ky_n; ky++, ip += in_row, wp += w_row) {
        const int8_t *xp = ip, *fp = wp;
        for (int32_t kx = 0; kx < kx_n; kx++, xp += in_col, fp += w_col) {
            const uint32_t x = edgeq_ld32(xp), w = edgeq_ld32(fp);
            const uint32_t x02 = edgeq_sxtab16(off2, x), x13 = edgeq_sxtab16_ror8(off2, x);
            const uint32_t w02 = edgeq_sxtb16(w), w13 = edgeq_sxtb16_ror8(w);
            a0 = edgeq_smlabb(x02, w02, a0);
            a2 = edgeq_smlatt(x02, w02, a2);
            a1 = edgeq_smlabb(x13, w13, a1);
            a3 = edgeq_smlatt(x13, w13, a3);
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

static void dw_dsp(const edgeq_dw_params *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                   const int32_t *multiplier, const int32_t *shift, int8_t *output)
{
    const int32_t c_n = p->in_c, in_h = p->in_h, in_w = p->in_w, k_h = p->k_h, k_w = p->k_w;
    const int32_t dil_h = p->dil_h, dil_w = p->dil_w;
    const int32_t out_off = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    const uint32_t off2 = ((uint32_t)(uint16_t)p->input_offset << 16) | (uint16_t)p->input_offset;
    const size_t row = (size_t)in_w * c_n;
    const size_t in_row = row * dil_h, in_col = (size_t)c_n * dil_w, w_row = (size_t)k_w * c_n;
    for (int32_t b = 0; b < p->batches; b++) {
        const int8_t *in_b = input + (size_t)b * in_h * row;
        for (int32_t oy = 0; oy < p->out_h; oy++) {
            const int32_t iy0 = oy * p->stride_h - p->pad_top;
            /* The filter rows and columns that fall inside the input for this output pixel. */
            int32_t ky_lo = 0, ky_hi = k_h;
            while (ky_lo < ky_hi && iy0 + ky_lo * dil_h < 0) {
                ky_lo++;
            }
            while (ky_hi > ky_lo && iy0 + (ky_hi - 1) * dil_h >= in_h) {
                ky_hi--;
            }
            for (int32_t ox = 0; ox < p->out_w; ox++) {
                const int32_t ix0 = ox * p->stride_w - p->pad_left;
                int32_t kx_lo = 0, kx_hi = k_w;
                while (kx_lo < kx_hi && ix0 + kx_lo * dil_w < 0) {
                    kx_lo++;
                }
                while (kx_hi > kx_lo && ix0 + (kx_hi - 1) * dil_w >= in_w) {
                    kx_hi--;
                }
                const int32_t ky_n = ky_hi - ky_lo, kx_n = kx_hi - kx_lo;
                const int8_t *ip = ky_n > 0 && kx_n > 0
                                       ? in_b + (size_t)(iy0 + ky_lo * dil_h) * row + (size_t)(ix0 + kx_lo * dil_w) * c_n
                                       : in_b;
                const int8_t *wp = filter + (size_t)(ky_lo * k_w + kx_lo) * c_n;
                for (int32_t c = 0; c < c_n; c += 4) {
                    int32_t acc[4] = {0, 0, 0, 0};
                    if (bias) {
                        acc[0] = bias[c];
                        acc[1] = bias[c + 1];
                        acc[2] = bias[c + 2];
                        acc[3] = bias[c + 3];
                    }
                    dw_taps4(ip + c, wp + c, ky_n, kx_n, in_row, in_col, w_row, (size_t)c_n, off2, acc);
                    for (int32_t j = 0; j < 4; j++) {
                        const int32_t v = edgeq_requant(acc[j], multiplier[c + j], shift[c + j]) + out_off;
                        output[c + j] = (int8_t)edgeq_clamp(v, act_min, act_max);
                    }
                }
                output += c_n;
            }
        }
    }
}
#endif

void edgeq_depthwise_conv2d_s8(const edgeq_dw_params *p, const int8_t *input, const int8_t *filter,
                               const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                               int8_t *output)
{
#if EDGEQ_DSP
    if (p->depth_multiplier == 1 && (p->in_c & 3) == 0) {
        dw_dsp(p, input, filter, bias, multiplier, shift, output);
        return;
    }
#endif
    dw_portable(p, input, filter, bias, multiplier, shift, output);
}

/* ---- 3x3, depth multiplier 1, channels % 4 == 0, filter [C/4][3][3][4] ---------------------------------- */

static inline int8_t dw3_out(int32_t acc, int32_t mult, int32_t shift, int32_t out_off, int32_t lo, int32_t hi,
                             int fast)
{
#if EDGEQ_DSP
    const int32_t v = fast ? edgeq_requant_fast(acc, mult, shift) : edgeq_requant(acc, mult, shift);
#else
    const int32_t v = edgeq_requant(acc, mult, shift);
    (void)fast;
#endif
    return (int8_t)edgeq_clamp(v + out_off, lo, hi);
}

#if EDGEQ_DSP
#define DW3_TAP(xp, a0, a1, a2, a3)                                                                          \
    do {                                                                                                     \
        const uint32_t x_ = edgeq_ld32(xp), w_ = edgeq_ld32(wp);                                             \
        wp += 4;                                                                                             \
        const uint32_t x02_ = edgeq_sxtb16(x_), x13_ = edgeq_sxtb16_ror8(x_);                                \
        const uint32_t w02_ = edgeq_sxtb16(w_), w13_ = edgeq_sxtb16_ror8(w_);                                \
        a0 = edgeq_smlabb(x02_, w02_, a0);                                                                   \
        a2 = edgeq_smlatt(x02_, w02_, a2);                                                                   \
        a1 = edgeq_smlabb(x13_, w13_, a1);                                                                   \
        a3 = edgeq_smlatt(x13_, w13_, a3);                                                                   \
    } while (0)
#endif

void edgeq_depthwise_conv3x3_s8(const edgeq_dw_params *p, const int8_t *input, const int8_t *filter,
                                const int32_t *bias, const int32_t *bias_interior, const int32_t *multiplier,
                                const int32_t *shift, int8_t *output)
{
    /* bias is never NULL here: the code generator passes zeros for a model without one. */
    const int32_t c_n = p->in_c, in_h = p->in_h, in_w = p->in_w;
    const int32_t out_off = p->output_offset, lo = p->act_min, hi = p->act_max, in_off = p->input_offset;
    const int fast = p->fast_requant;
    const size_t row = (size_t)in_w * c_n;
    for (int32_t b = 0; b < p->batches; b++) {
        const int8_t *in_b = input + (size_t)b * in_h * row;
        for (int32_t oy = 0; oy < p->out_h; oy++) {
            const int32_t iy0 = oy * p->stride_h - p->pad_top;
            for (int32_t ox = 0; ox < p->out_w; ox++) {
                const int32_t ix0 = ox * p->stride_w - p->pad_left;
                if (iy0 >= 0 && iy0 + 3 <= in_h && ix0 >= 0 && ix0 + 3 <= in_w) {
                    /* Interior: all nine taps, the input offset already in bias_interior. */
                    const int8_t *r0 = in_b + (size_t)iy0 * row + (size_t)ix0 * c_n;
                    const int8_t *wp = filter;
                    for (int32_t c = 0; c < c_n; c += 4, r0 += 4) {
                        int32_t a0 = bias_interior[c], a1 = bias_interior[c + 1];
                        int32_t a2 = bias_interior[c + 2], a3 = bias_interior[c + 3];
#if EDGEQ_DSP
                        const int8_t *r1 = r0 + row, *r2 = r1 + row;
                        DW3_TAP(r0, a0, a1, a2, a3);
                        DW3_TAP(r0 + c_n, a0, a1, a2, a3);
                        DW3_TAP(r0 + 2 * c_n, a0, a1, a2, a3);
                        DW3_TAP(r1, a0, a1, a2, a3);
                        DW3_TAP(r1 + c_n, a0, a1, a2, a3);
                        DW3_TAP(r1 + 2 * c_n, a0, a1, a2, a3);
                        DW3_TAP(r2, a0, a1, a2, a3);
                        DW3_TAP(r2 + c_n, a0, a1, a2, a3);
                        DW3_TAP(r2 + 2 * c_n, a0, a1, a2, a3);
#else
                        for (int32_t t = 0; t < 9; t++, wp += 4) {
                            const int8_t *xp = r0 + (size_t)(t / 3) * row + (size_t)(t % 3) * c_n;
                            a0 += xp[0] * wp[0];
                            a1 += xp[1] * wp[1];
                            a2 += xp[2] * wp[2];
                            a3 += xp[3] * wp[3];
                        }
#endif
                        output[c] = dw3_out(a0, multiplier[c], shift[c], out_off, lo, hi, fast);
                        output[c + 1] = dw3_out(a1, multiplier[c + 1], shift[c + 1], out_off, lo, hi, fast);
                        output[c + 2] = dw3_out(a2, multiplier[c + 2], shift[c + 2], out_off, lo, hi, fast);
                        output[c + 3] = dw3_out(a3, multiplier[c + 3], shift[c + 3], out_off, lo, hi, fast);
                    }
                } else {
                    /* Border: only the taps inside the input, each with the input offset. */
                    const int32_t ky_lo = iy0 < 0 ? -iy0 : 0, ky_hi = iy0 + 3 > in_h ? in_h - iy0 : 3;
                    const int32_t kx_lo = ix0 < 0 ? -ix0 : 0, kx_hi = ix0 + 3 > in_w ? in_w - ix0 : 3;
#if EDGEQ_DSP
                    const uint32_t off2 = ((uint32_t)(uint16_t)in_off << 16) | (uint16_t)in_off;
#endif
                    for (int32_t c = 0; c < c_n; c += 4) {
                        int32_t a0 = bias[c], a1 = bias[c + 1], a2 = bias[c + 2], a3 = bias[c + 3];
                        const int8_t *wg = filter + (size_t)c * 9;
                        for (int32_t ky = ky_lo; ky < ky_hi; ky++) {
                            const int8_t *xp = in_b + (size_t)(iy0 + ky) * row + (size_t)(ix0 + kx_lo) * c_n + c;
                            const int8_t *wp = wg + (ky * 3 + kx_lo) * 4;
                            for (int32_t kx = kx_lo; kx < kx_hi; kx++, xp += c_n, wp += 4) {
#if EDGEQ_DSP
                                const uint32_t x = edgeq_ld32(xp), w = edgeq_ld32(wp);
                                const uint32_t x02 = edgeq_sxtab16(off2, x), x13 = edgeq_sxtab16_ror8(off2, x);
                                const uint32_t w02 = edgeq_sxtb16(w), w13 = edgeq_sxtb16_ror8(w);
                                a0 = edgeq_smlabb(x02, w02, a0);
                                a2 = edgeq_smlatt(x02, w02, a2);
                                a1 = edgeq_smlabb(x13, w13, a1);
                                a3 = edgeq_smlatt(x13, w13, a3);
#else
                                a0 += (xp[0] + in_off) * wp[0];
                                a1 += (xp[1] + in_off) * wp[1];
                                a2 += (xp[2] + in_off) * wp[2];
                                a3 += (xp[3] + in_off) * wp[3];
#endif
                            }
                        }
                        output[c] = dw3_out(a0, multiplier[c], shift[c], out_off, lo, hi, fast);
                        output[c + 1] = dw3_out(a1, multiplier[c + 1], shift[c + 1], out_off, lo, hi, fast);
                        output[c + 2] = dw3_out(a2, multiplier[c + 2], shift[c + 2], out_off, lo, hi, fast);
                        output[c + 3] = dw3_out(a3, multiplier[c + 3], shift[c + 3], out_off, lo, hi, fast);
                    }
                }
                output += c_n;
            }
        }
    }
}
