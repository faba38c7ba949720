#include <math.h>

#include "tensor/quant.h"

/* Q8_0 activation quantization as llama.cpp's AVX2/AVX-512 quantize_row_q8_0: d = amax/127
 * stored as F16, q = round_half_even(x * (127/amax)). */
static void act_q8_0(const float *x, sp_block_q8_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * SP_QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < SP_QK8_0; j++) {
            float a = fabsf(xb[j]);
            amax = a > amax ? a : amax;
        }
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[i].d = sp_f32_to_f16(d);
        for (int j = 0; j < SP_QK8_0; j++)
            y[i].qs[j] = (int8_t)nearbyintf(xb[j] * id); // default rounding: nearest, ties even
    }
}

void sp_quantize_act_row(sp_dtype vt, const float *src, void *dst, int64_t n) {
    if (vt == SP_DTYPE_Q8_0)
        act_q8_0(src, dst, n / SP_QK8_0);
    else
        sp_quantize_row(vt, src, dst, n);
}
