/* CONV_2D int8 (TFLite reference arithmetic), portable path and a DSP path (im2col + 2x2 SMLAD blocking). */
#include "edgeq_fixedpoint.h"
#include "edgeq_nn.h"
#include "edgeq_simd.h"

static inline int8_t conv_out(int32_t acc, int32_t mult, int32_t shift, const edgeq_conv_params *p)
{
    acc = edgeq_requant(acc, mult, shift) + p->output_offset;
    return (int8_t)edgeq_clamp(acc, p->act_min, p->act_max);
}

#if EDGEQ_DSP
/* Requantize, offset, clamp and store the accumulators of one output channel for two pixels. */
#define CONV_STORE2(fast, sa, sb, oc)                                                                         \
    do {                                                                                                     \
        const int32_t m_ = multiplier[oc], sh_ = shift[oc];                                                  \
        int32_t va_, vb_;                                                                                    \
        if (fast) {                                                                                          \
            va_ = edgeq_requant_fast(sa, m_, sh_);                                                           \
            vb_ = edgeq_requant_fast(sb, m_, sh_);                                                           \
        } else {                                                                                             \
            va_ = edgeq_requant(sa, m_, sh_);                                                                \
            vb_ = edgeq_requant(sb, m_, sh_);                                                                \
        }                                                                                                    \
        out_a[oc] = (int8_t)edgeq_clamp(va_ + out_off, act_min, act_max);                                   \
        out_b[oc] = (int8_t)edgeq_clamp(vb_ + out_off, act_min, act_max);                                   \
    } while (0)
#endif

#if !EDGEQ_DSP

/* One im2col column as int16 with the input offset added (padding = 0, i.e. the zero point), in filter
 * order (ky, kx, ic). */
static void im2col_plain(const edgeq_conv_params *p, const int8_t *in_b, int32_t oy, int32_t ox, int16_t *col)
{
    const int32_t in_c = p->in_c, off = p->input_offset;
    const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    for (int32_t ky = 0; ky < p->k_h; ky++) {
        const int32_t iy = iy0 + ky * p->dil_h;
        for (int32_t kx = 0; kx < p->k_w; kx++, col += in_c) {
            const int32_t ix = ix0 + kx * p->dil_w;
            if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) {
                memset(col, 0, (size_t)in_c * sizeof(int16_t));
                continue;
            }
            const int8_t *ip = in_b + ((size_t)iy * p->in_w + ix) * in_c;
            for (int32_t ic = 0; ic < in_c; ic++) {
                col[ic] = (int16_t)(ip[ic] + off);
            }
        }
    }
}

/* Two pixels x two output channels per pass: every load feeds two multiply-accumulates. */
static void matmul_plain(const edgeq_conv_params *p, const int8_t *filter, const int32_t *bias,
                         const int32_t *multiplier, const int32_t *shift, const int16_t *col_a,
                         const int16_t *col_b, int8_t *out_a, int8_t *out_b)
{
    const int32_t k_total = p->k_h * p->k_w * p->in_c, out_c = p->out_c;
    int32_t oc = 0;
    for (; oc + 1 < out_c; oc += 2) {
        const int8_t *w0 = filter + (size_t)oc * k_total, *w1 = w0 + k_total;
        int32_t s0a = bias ? bias[oc] : 0, s1a = bias ? bias[oc + 1] : 0;
        int32_t s0b = s0a, s1b = s1a;
        if (col_b) {
            for (int32_t k = 0; k < k_total; k++) {
                const int32_t a = col_a[k], b = col_b[k], x0 = w0[k], x1 = w1[k];
                s0a += a * x0;
                s0b += b * x0;
                s1a += a * x1;
                s1b += b * x1;
            }
            out_b[oc] = conv_out(s0b, multiplier[oc], shift[oc], p);
            out_b[oc + 1] = conv_out(s1b, multiplier[oc + 1], shift[oc + 1], p);
        } else {
            for (int32_t k = 0; k < k_total; k++) {
                const int32_t a = col_a[k];
                s0a += a * w0[k];
                s1a += a * w1[k];
            }
        }
        out_a[oc] = conv_out(s0a, multiplier[oc], shift[oc], p);
        out_a[oc + 1] = conv_out(s1a, multiplier[oc + 1], shift[oc + 1], p);
    }
    if (oc < out_c) {
        const int8_t *w0 = filter + (size_t)oc * k_total;
        int32_t sa = bias ? bias[oc] : 0, sb = sa;
        for (int32_t k = 0; k < k_total; k++) {
            sa += col_a[k] * w0[k];
            if (col_b) {
                sb += col_b[k] * w0[k];
            }
        }
        out_a[oc] = conv_out(sa, multiplier[oc], shift[oc], p);
        if (col_b) {
            out_b[oc] = conv_out(sb, multiplier[oc], shift[oc], p);
        }
    }
}

void edgeq_conv2d_s8(const edgeq_conv_params *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                     const int32_t *multiplier, const int32_t *shift, int8_t *output, int16_t *scratch)
{
    const int32_t k_total = p->k_h * p->k_w * p->in_c, pixels = p->out_h * p->out_w;
    int16_t *col_a = scratch, *col_b = scratch + k_total;
    for (int32_t b = 0; b < p->batches; b++) {
        const int8_t *in_b = input + (size_t)b * p->in_h * p->in_w * p->in_c;
        int8_t *out_b = output + (size_t)b * pixels * p->out_c;
        for (int32_t px = 0; px < pixels; px += 2) {
            const int two = px + 1 < pixels;
            im2col_plain(p, in_b, px / p->out_w, px % p->out_w, col_a);
            if (two) {
                im2col_plain(p, in_b, (px + 1) / p->out_w, (px + 1) % p->out_w, col_b);
            }
            matmul_plain(p, filter, bias, multiplier, shift, col_a, two ? col_b : NULL,
                         out_b + (size_t)px * p->out_c, out_b + (size_t)(px + 1) * p->out_c);
        }
    }
}

#else /* EDGEQ_DSP */

/* One im2col column as int16 with the input offset added (padding = 0, i.e. the zero point).  Within every
 * complete group of 4 values the order is [k0, k2, k1, k3]: SXTB16 splits a filter word the same way, so one
 * SMLAD multiplies matching pairs. */
static void im2col_q15(const edgeq_conv_params *p, const int8_t *in_b, int32_t oy, int32_t ox, int16_t *col)
{
    const int32_t in_c = p->in_c;
    const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    if ((in_c & 3) == 0 && p->dil_w == 1) {
        /* Per filter row, the taps that fall inside the input are one contiguous run of memory. */
        const uint32_t off2 = ((uint32_t)(uint16_t)p->input_offset << 16) | (uint16_t)p->input_offset;
        const int32_t kx_lo = ix0 < 0 ? -ix0 : 0;
        const int32_t kx_hi = ix0 + p->k_w > p->in_w ? p->in_w - ix0 : p->k_w;
        const int32_t left = kx_lo * in_c, right = (p->k_w - (kx_hi > kx_lo ? kx_hi : kx_lo)) * in_c;
        const int32_t run = p->k_w * in_c - left - right;
        for (int32_t ky = 0; ky < p->k_h; ky++) {
            const int32_t iy = iy0 + ky * p->dil_h;
            if (iy < 0 || iy >= p->in_h || run <= 0) {
                memset(col, 0, (size_t)p->k_w * in_c * sizeof(int16_t));
                col += p->k_w * in_c;
                continue;
            }
            if (left) {
                memset(col, 0, (size_t)left * sizeof(int16_t));
                col += left;
            }
            const int8_t *ip = in_b + ((size_t)iy * p->in_w + ix0 + kx_lo) * in_c;
            const int8_t *ip_end = ip + run;
            while (ip < ip_end) {
                const uint32_t w = edgeq_ld32(ip);
                ip += 4;
                edgeq_st32(col, edgeq_sxtab16(off2, w));
                edgeq_st32(col + 2, edgeq_sxtab16_ror8(off2, w));
                col += 4;
            }
            if (right) {
                memset(col, 0, (size_t)right * sizeof(int16_t));
                col += right;
            }
        }
        return;
    }
    /* Few input channels (the first layer): one value at a time, placed at its reordered slot. */
    const int32_t k_total = p->k_h * p->k_w * in_c, k_full = k_total & ~3;
    static const uint8_t slot[4] = {0, 2, 1, 3};
    int32_t k = 0;
    for (int32_t ky = 0; ky < p->k_h; ky++) {
        const int32_t iy = iy0 + ky * p->dil_h;
        for (int32_t kx = 0; kx < p->k_w; kx++) {
            const int32_t ix = ix0 + kx * p->dil_w;
            const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
            const int8_t *ip = inside ? in_b + ((size_t)iy * p->in_w + ix) * in_c : NULL;
            for (int32_t ic = 0; ic < in_c; ic++, k++) {
                const int16_t v = inside ? (int16_t)(ip[ic] + p->input_offset) : 0;
                col[k < k_full ? (k & ~3) + slot[k & 3] : k] = v;
            }
        }
    }
}

/* Two output pixels (columns a, b) x all output channels, two channels at a time. */
static void matmul_2col(const edgeq_conv_params *p, const int8_t *filter, const int32_t *bias,
                        const int32_t *multiplier, const int32_t *shift, const int16_t *col_a,
                        const int16_t *col_b, int8_t *out_a, int8_t *out_b)
{
    const int32_t k_total = p->k_h * p->k_w * p->in_c, groups = k_total >> 2, tail = k_total & 3;
    const int32_t out_c = p->out_c, out_off = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    const int fast = p->fast_requant;
    int32_t oc = 0;
    for (; oc + 1 < out_c; oc += 2) {
        /* One pointer per operand pair (the second row / column at a fixed distance) keeps the loop free of
         * register spills on a 13-register core. */
        const int8_t *w0 = filter + (size_t)oc * k_total, *w1 = w0 + k_total;
        const int16_t *ca = col_a, *cb = col_b;
        const ptrdiff_t w_step = k_total, c_step = col_b - col_a;
        int32_t s0a = bias ? bias[oc] : 0, s1a = bias ? bias[oc + 1] : 0;
        int32_t s0b = s0a, s1b = s1a;
        const int8_t *w_end = w0 + 4 * groups;
        while (w0 < w_end) {
            const uint32_t wa = edgeq_ld32(w0), wb = edgeq_ld32(w0 + w_step);
            const uint32_t a02 = edgeq_ld32(ca), a13 = edgeq_ld32(ca + 2);
            const uint32_t b02 = edgeq_ld32(ca + c_step), b13 = edgeq_ld32(ca + c_step + 2);
            w0 += 4;
            ca += 4;
            const uint32_t wa02 = edgeq_sxtb16(wa), wa13 = edgeq_sxtb16_ror8(wa);
            s0a = edgeq_smlad(wa02, a02, s0a);
            s0b = edgeq_smlad(wa02, b02, s0b);
            s0a = edgeq_smlad(wa13, a13, s0a);
            s0b = edgeq_smlad(wa13, b13, s0b);
            const uint32_t wb02 = edgeq_sxtb16(wb), wb13 = edgeq_sxtb16_ror8(wb);
            s1a = edgeq_smlad(wb02, a02, s1a);
            s1b = edgeq_smlad(wb02, b02, s1b);
            s1a = edgeq_smlad(wb13, a13, s1a);
            s1b = edgeq_smlad(wb13, b13, s1b);
        }
        w1 = w0 + w_step;
        cb = ca + c_step;
        for (int32_t t = 0; t < tail; t++) {
            s0a += w0[t] * ca[t];
            s0b += w0[t] * cb[t];
            s1a += w1[t] * ca[t];
            s1b += w1[t] * cb[t];
        }
        CONV_STORE2(fast, s0a, s0b, oc);
        CONV_STORE2(fast, s1a, s1b, oc + 1);
    }
    if (oc < out_c) {
        const int8_t *w0 = filter + (size_t)oc * k_total;
        const int16_t *ca = col_a, *cb = col_b;
        int32_t sa = bias ? bias[oc] : 0, sb = sa;
        for (int32_t g = 0; g < groups; g++) {
            const uint32_t w = edgeq_ld32(w0);
            w0 += 4;
            const uint32_t w02 = edgeq_sxtb16(w), w13 = edgeq_sxtb16_ror8(w);
            sa = edgeq_smlad(w02, edgeq_ld32(ca), sa);
            sa = edgeq_smlad(w13, edgeq_ld32(ca + 2), sa);
            sb = edgeq_smlad(w02, edgeq_ld32(cb), sb);
            sb = edgeq_smlad(w13, edgeq_ld32(cb + 2), sb);
            ca += 4;
            cb += 4;
        }
        for (int32_t t = 0; t < tail; t++) {
            sa += w0[t] * ca[t];
            sb += w0[t] * cb[t];
        }
        CONV_STORE2(fast, sa, sb, oc);
    }
}

static void matmul_1col(const edgeq_conv_params *p, const int8_t *filter, const int32_t *bias,
                        const int32_t *multiplier, const int32_t *shift, const int16_t *col, int8_t *out)
{
    const int32_t k_total = p->k_h * p->k_w * p->in_c, groups = k_total >> 2, tail = k_total & 3;
    const int8_t *w = filter;
    for (int32_t oc = 0; oc < p->out_c; oc++) {
        const int16_t *c = col;
        int32_t s = bias ? bias[oc] : 0;
        for (int32_t g = 0; g < groups; g++) {
            const uint32_t wv = edgeq_ld32(w);
            w += 4;
            s = edgeq_smlad(edgeq_sxtb16(wv), edgeq_ld32(c), s);
            s = edgeq_smlad(edgeq_sxtb16_ror8(wv), edgeq_ld32(c + 2), s);
            c += 4;
        }
        for (int32_t t = 0; t < tail; t++) {
            s += *w++ * c[t];
        }
        const int32_t v = p->fast_requant ? edgeq_requant_fast(s, multiplier[oc], shift[oc])
                                          : edgeq_requant(s, multiplier[oc], shift[oc]);
        out[oc] = (int8_t)edgeq_clamp(v + p->output_offset, p->act_min, p->act_max);
    }
}

void edgeq_conv2d_s8(const edgeq_conv_params *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                     const int32_t *multiplier, const int32_t *shift, int8_t *output, int16_t *scratch)
{
    const int32_t k_total = p->k_h * p->k_w * p->in_c, pixels = p->out_h * p->out_w;
    int16_t *col_a = scratch, *col_b = scratch + k_total;
    for (int32_t b = 0; b < p->batches; b++) {
        const int8_t *in_b = input + (size_t)b * p->in_h * p->in_w * p->in_c;
        int8_t *out_b = output + (size_t)b * pixels * p->out_c;
        int32_t px = 0;
        for (; px + 1 < pixels; px += 2) {
            im2col_q15(p, in_b, px / p->out_w, px % p->out_w, col_a);
            im2col_q15(p, in_b, (px + 1) / p->out_w, (px + 1) % p->out_w, col_b);
            matmul_2col(p, filter, bias, multiplier, shift, col_a, col_b, out_b + (size_t)px * p->out_c,
                        out_b + (size_t)(px + 1) * p->out_c);
        }
        if (px < pixels) {
            im2col_q15(p, in_b, px / p->out_w, px % p->out_w, col_a);
            matmul_1col(p, filter, bias, multiplier, shift, col_a, out_b + (size_t)px * p->out_c);
        }
    }
}

#endif /* EDGEQ_DSP */
