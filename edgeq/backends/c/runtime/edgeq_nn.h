/*
 * edgeq's int8 kernels for microcontrollers (C99, no allocation, no libc beyond memcpy/memset).
 *
 * Tensors are NHWC int8; weights and per-channel requantization (multiplier, shift) are const arrays; the
 * arithmetic is TFLite's reference int8 arithmetic bit for bit.  Cores with the DSP extension
 * (__ARM_FEATURE_DSP: Cortex-M4, M7, M33, M55) take SIMD paths through arm_acle.h; every other core takes a
 * portable path with the same results.
 */
#ifndef EDGEQ_NN_H
#define EDGEQ_NN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CONV_2D.  filter: [out_c][k_h][k_w][in_c] (OHWI). */
typedef struct {
    int32_t batches, in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
    int32_t input_offset;  /* -input zero point */
    int32_t output_offset; /* output zero point */
    int32_t act_min, act_max;
    int32_t fast_requant; /* 1: every shift <= -1 and |accumulator| < 2^30 (edgeq_requant_fast applies) */
} edgeq_conv_params;

/* scratch: 4 * k_h * k_w * in_c bytes, 2-byte aligned (two int16 im2col columns), on every core; the generated
 * code places it in the arena. */
void edgeq_conv2d_s8(const edgeq_conv_params *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                     const int32_t *multiplier, const int32_t *shift, int8_t *output, int16_t *scratch);

/* DEPTHWISE_CONV_2D.  filter: [k_h][k_w][out_c] with out_c = in_c * depth_multiplier. */
typedef struct {
    int32_t batches, in_h, in_w, in_c;
    int32_t out_h, out_w, out_c, depth_multiplier;
    int32_t k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
    int32_t input_offset, output_offset, act_min, act_max;
    int32_t fast_requant; /* as in edgeq_conv_params */
} edgeq_dw_params;

void edgeq_depthwise_conv2d_s8(const edgeq_dw_params *p, const int8_t *input, const int8_t *filter,
                               const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                               int8_t *output);

/* DEPTHWISE_CONV_2D, 3x3, dilation 1, depth multiplier 1, channels % 4 == 0: the fast path.
 * filter: [channels / 4][3][3][4] (four channels of every tap together); bias_interior[c] = bias[c] +
 * input_offset * (sum of the 9 taps of channel c) serves the output pixels whose window lies inside the input
 * (the offset folded into the bias); border pixels use bias and add the offset per tap. */
void edgeq_depthwise_conv3x3_s8(const edgeq_dw_params *p, const int8_t *input, const int8_t *filter,
                                const int32_t *bias, const int32_t *bias_interior, const int32_t *multiplier,
                                const int32_t *shift, int8_t *output);

/* FULLY_CONNECTED.  filter: [out_n][in_n]; per_channel = 0: one (multiplier, shift) for all outputs.
 * With scale != NULL the accumulator is rescaled as TFLite's builtin reference kernel does,
 * (int32)round(double(acc) * scale[c]) (halves away from zero; IEEE double, in software on cores without a
 * double-precision FPU); with scale == NULL by the fixed-point multipliers, as TFLite Micro and CMSIS-NN do.
 * The two differ by 1 LSB on about 0.1 % of outputs. */
typedef struct {
    int32_t batches, in_n, out_n, per_channel;
    int32_t input_offset, output_offset, act_min, act_max;
    int32_t fast_requant; /* as in edgeq_conv_params */
    const double *scale;
} edgeq_fc_params;

void edgeq_fully_connected_s8(const edgeq_fc_params *p, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                              int8_t *output);

/* Broadcasting over up to 4 dimensions: output shape, and each input's element strides (0 where it is
 * broadcast). */
typedef struct {
    int32_t shape[4];
    int32_t stride1[4];
    int32_t stride2[4];
} edgeq_broadcast;

/* ADD and SUB: TFLite's int8 add (inputs shifted left by left_shift, rescaled, summed or subtracted, rescaled).
 * table1/table2 (optional, 256 int32 each): the rescaled value of every int8 input, index q + 128, computed
 * at generation time with the same arithmetic; NULL computes it per element. */
typedef struct {
    int32_t size; /* elements when no broadcast is needed; 0 = use bc */
    int32_t subtract;
    const int32_t *table1, *table2;
    edgeq_broadcast bc;
    int32_t input1_offset, input2_offset, left_shift;
    int32_t input1_multiplier, input1_shift, input2_multiplier, input2_shift;
    int32_t output_multiplier, output_shift, output_offset, act_min, act_max;
    int32_t fast_requant; /* with tables: output shift <= -1 and |table1| + |table2| < 2^30 */
} edgeq_add_params;

void edgeq_add_s8(const edgeq_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);

/* MUL: (x1 + offset1) * (x2 + offset2) rescaled. */
typedef struct {
    int32_t size;
    edgeq_broadcast bc;
    int32_t input1_offset, input2_offset;
    int32_t output_multiplier, output_shift, output_offset, act_min, act_max;
} edgeq_mul_params;

void edgeq_mul_s8(const edgeq_mul_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);

/* MAX_POOL_2D / AVERAGE_POOL_2D (padding positions excluded from the average, as in TFLite). */
typedef struct {
    int32_t batches, in_h, in_w, channels, out_h, out_w;
    int32_t k_h, k_w, stride_h, stride_w, pad_top, pad_left;
    int32_t act_min, act_max;
} edgeq_pool_params;

void edgeq_max_pool_s8(const edgeq_pool_params *p, const int8_t *input, int8_t *output);
void edgeq_avg_pool_s8(const edgeq_pool_params *p, const int8_t *input, int8_t *output);

/* MEAN over H and W of an NHWC tensor (keep_dims): (sum of q) - zp_in * H*W, requantized with the
 * count-adjusted multiplier (the division by H*W folded in, as TFLite's QuantizedMeanOrSum). */
typedef struct {
    int32_t batches, pixels, channels;
    int32_t input_zero_point, output_zero_point, multiplier, shift;
} edgeq_mean_params;

void edgeq_mean_hw_s8(const edgeq_mean_params *p, const int8_t *input, int8_t *output);

/* SOFTMAX over the last dimension (TFLite's int8 reference: gemmlowp fixed-point exp; output scale 1/256,
 * zero point -128). */
typedef struct {
    int32_t rows, depth;
    int32_t input_multiplier, input_left_shift, diff_min;
} edgeq_softmax_params;

void edgeq_softmax_s8(const edgeq_softmax_params *p, const int8_t *input, int8_t *output);

/* Elementwise int8 -> int8 through a 256-entry table indexed by q + 128 (LOGISTIC, HARD_SWISH, LEAKY_RELU,
 * RELU, RELU6: the table holds TFLite's exact results).  In place is allowed. */
void edgeq_lut_s8(int32_t size, const int8_t *lut, const int8_t *input, int8_t *output);

/* QUANTIZE int8 -> int8: MultiplyByQuantizedMultiplier(q - zp_in) + zp_out, clamped.  In place is allowed. */
typedef struct {
    int32_t size, input_zero_point, output_zero_point, multiplier, shift;
} edgeq_requantize_params;

void edgeq_requantize_s8(const edgeq_requantize_params *p, const int8_t *input, int8_t *output);

/* PRELU: x >= 0 ? x * identity : x * alpha * alpha_multiplier, requantized (alpha broadcast through bc). */
typedef struct {
    int32_t size; /* 0: use bc */
    edgeq_broadcast bc;
    int32_t input_offset, alpha_offset, output_offset;
    int32_t identity_multiplier, identity_shift, alpha_multiplier, alpha_shift;
} edgeq_prelu_params;

void edgeq_prelu_s8(const edgeq_prelu_params *p, const int8_t *input, const int8_t *alpha, int8_t *output);

/* PAD a tensor of up to 4 dimensions (shapes padded to 4 at the front) with a constant. */
typedef struct {
    int32_t in_shape[4];
    int32_t before[4];
    int32_t out_shape[4];
    int32_t value;
} edgeq_pad_params;

void edgeq_pad_s8(const edgeq_pad_params *p, const int8_t *input, int8_t *output);

/* CONCATENATION: n inputs, each copied in outer blocks of chunk[i] bytes. */
void edgeq_concat_s8(int32_t n, int32_t outer, const int32_t *chunk, const int8_t *const *inputs, int8_t *output);

/* TRANSPOSE of up to 4 dimensions: output index (i0..i3) reads input at sum(i_k * in_stride[k]). */
typedef struct {
    int32_t out_shape[4];
    int32_t in_stride[4];
} edgeq_transpose_params;

void edgeq_transpose_s8(const edgeq_transpose_params *p, const int8_t *input, int8_t *output);

/* RESIZE_NEAREST_NEIGHBOR with the source row / column of every output row / column precomputed. */
typedef struct {
    int32_t batches, in_h, in_w, channels, out_h, out_w;
} edgeq_resize_params;

void edgeq_resize_nearest_s8(const edgeq_resize_params *p, const int16_t *y_index, const int16_t *x_index,
                             const int8_t *input, int8_t *output);

/* RESIZE_BILINEAR (TFLite's 10-bit integer path): per output row / column the lower and upper source index and
 * the Q10 weight of the upper one. */
void edgeq_resize_bilinear_s8(const edgeq_resize_params *p, const int16_t *y_lo, const int16_t *y_hi,
                              const int16_t *y_w, const int16_t *x_lo, const int16_t *x_hi, const int16_t *x_w,
                              const int8_t *input, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif
