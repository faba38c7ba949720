#include "model/ops.h"

void sp__rms_norm(float *y, const float *x, const float *w, int32_t n, float eps) {
    // The squares (rounded to float, as llama.cpp does) are summed in double, in four
    // interleaved sums so that the additions need not wait for each other. llama.cpp sums in
    // order; the two doubles can differ in their last bits, which changes the float mean only
    // when the sum lies that close to a rounding boundary of float.
    double s4[4] = {0.0, 0.0, 0.0, 0.0};
    int32_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++)
            s4[k] += (double)(x[i + k] * x[i + k]);
    double sum = (s4[0] + s4[1]) + (s4[2] + s4[3]);
    for (; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (i = 0; i < n; i++)
        y[i] = (x[i] * scale) * w[i];
}

void sp__rope_cache(const sp_hparams *hp, const float *freq_factors, int32_t pos, float *cs) {
    const float theta_scale = powf(hp->rope_freq_base, -2.0f / (float)hp->n_rot);
    float theta = (float)pos;
    for (int32_t i = 0; i < hp->n_rot / 2; i++) {
        const float ff = freq_factors ? freq_factors[i] : 1.0f;
        const float t = hp->rope_freq_scale * (theta / ff);
        cs[2 * i] = cosf(t);
        cs[2 * i + 1] = sinf(t);
        theta *= theta_scale;
    }
}

void sp__rope_apply(const sp_hparams *hp, const float *cs, float *x) {
    const int32_t half = hp->n_rot / 2;
    for (int32_t i = 0; i < half; i++) {
        const float c = cs[2 * i], s = cs[2 * i + 1];
        // NORM rotates adjacent pairs; NEOX pairs element i with i + n_rot/2.
        const int32_t a = hp->rope_type == SP_ROPE_NEOX ? i : 2 * i;
        const int32_t b = hp->rope_type == SP_ROPE_NEOX ? i + half : 2 * i + 1;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

void sp__add_inplace(float *y, const float *x, int32_t n) {
    for (int32_t i = 0; i < n; i++)
        y[i] += x[i];
}
