#include "model/linear.h"

#include "tensor/quant.h"

size_t sp__linear_scratch_bytes(int64_t n_in, int64_t n_rows) {
    // The widest dot-product type per value is F32 (4 bytes); quantized types take less.
    return (size_t)n_in * (size_t)n_rows * 4;
}

void sp__linear(const sp_weight *w, const float *x, int64_t n_rows, float *y, void *scratch) {
    const int64_t n_in = w->ne[0], n_out = w->ne[1];
    const sp_dtype vt = sp_dtype_vec_dot_type(w->type);
    uint64_t x_row_bytes = 0;
    if (sp_dtype_row_bytes(vt, (uint64_t)n_in, &x_row_bytes) != SP_OK)
        SP_ASSERT(!"activation row size");
    uint8_t *xq = scratch;
    for (int64_t r = 0; r < n_rows; r++)
        sp_quantize_act_row(vt, x + r * n_in, xq + r * (int64_t)x_row_bytes, n_in);
    const uint8_t *wd = w->data;
    for (int64_t r = 0; r < n_rows; r++) {
        const uint8_t *xr = xq + r * (int64_t)x_row_bytes;
        float *yr = y + r * n_out;
        for (int64_t o = 0; o < n_out; o++)
            yr[o] = sp_vec_dot_ref(w->type, wd + o * (int64_t)w->row_bytes, xr, n_in);
    }
}

void sp__weight_row(const sp_weight *w, int64_t row, float *dst) {
    sp_dequantize_row(w->type, (const uint8_t *)w->data + row * (int64_t)w->row_bytes, dst,
                      w->ne[0]);
}
