/* MEAN over H and W, int8 (TFLite reference_ops::QuantizedMeanOrSum arithmetic): the division by the element
 * count is folded into the multiplier by the code generator. */
#include "edgeq_fixedpoint.h"
#include "edgeq_nn.h"

void edgeq_mean_hw_s8(const edgeq_mean_params *p, const int8_t *input, int8_t *output)
{
    const int32_t n = p->pixels, c_n = p->channels;
    /* Summed in uint32: the reference wraps to int32 the same way. */
    const uint32_t zp_total = (uint32_t)p->input_zero_point * (uint32_t)n;
    for (int32_t b = 0; b < p->batches; b++) {
        const int8_t *in_b = input + (size_t)b * n * c_n;
        for (int32_t c = 0; c < c_n; c++) {
            uint32_t sum = 0;
            const int8_t *ip = in_b + c;
            for (int32_t i = 0; i < n; i++, ip += c_n) {
                sum += (uint32_t)(int32_t)*ip;
            }
            const int32_t acc = edgeq_requant((int32_t)(sum - zp_total), p->multiplier, p->shift);
            *output++ = (int8_t)edgeq_clamp(acc + p->output_zero_point, -128, 127);
        }
    }
}
