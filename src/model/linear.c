#include "model/linear.h"

#include <stdatomic.h>

#include "base/util.h"
#include "tensor/kernels.h"
#include "tensor/quant.h"

enum { PACKED_ALIGN = 64 };

size_t sp__linear_scratch_bytes(int64_t n_in, int64_t n_rows) {
    // The widest dot-product type per value is F32 (4 bytes); quantized types take less. Packed
    // weights also need the rows in the kernel's own layout: Q8_0 rows (34 bytes per 32 values)
    // plus that layout (at most 36 per 32) stay under 4 bytes per value, after alignment.
    return (size_t)n_in * (size_t)n_rows * 4 + PACKED_ALIGN;
}

typedef struct linear_job {
    const sp_weight *w;
    const float *x;
    int64_t n_rows;
    float *y;
    uint8_t *xq;
    size_t xq_row_bytes;
    uint8_t *xp; // the rows in the packed kernel's layout, or NULL
    sp_dtype vt;
    const sp_kernels *k;
    sp_threadpool *pool;
    int64_t chunk;           // outputs per piece of work (a multiple of 16)
    _Atomic int64_t next;    // the next piece not yet taken
} linear_job;

/* Each thread converts its share of the activation rows (and lays them out for the packed
 * kernel if the weights are packed), then, after a barrier, computes its share of the output
 * columns (whole groups of 16, so threads never share a cache line of y). */
static void linear_worker(void *ctx, int ith, int nth) {
    linear_job *j = ctx;
    const sp_weight *w = j->w;
    const int64_t n_in = w->ne[0], n_out = w->ne[1];
    int64_t r0, r1;
    sp_split_range(j->n_rows, 1, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        uint8_t *xq = j->xq + (size_t)r * j->xq_row_bytes;
        j->k->quantize_act(j->vt, j->x + r * n_in, xq, n_in);
        if (j->xp)
            j->k->act_pack(j->vt, xq, n_in, r, j->n_rows, j->xp);
    }
    if (nth > 1)
        sp_threadpool_barrier(j->pool);
    // The outputs go in pieces to whichever thread is free (a thread the host deschedules for a
    // while costs only its current piece); which thread computes an output never changes it.
    for (;;) {
        const int64_t o0 = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed) * j->chunk;
        if (o0 >= n_out)
            break;
        const int64_t o1 = SP_MIN(n_out, o0 + j->chunk);
        if (w->packed)
            j->k->matmul_packed[w->type](w->packed, 0, j->xp, 0, n_in, j->n_rows, j->y, n_out, o0,
                                         o1);
        else
            j->k->matmul[w->type](w->data, w->row_bytes, j->xq, j->xq_row_bytes, n_in, j->n_rows,
                                  j->y, n_out, o0, o1);
    }
}

void sp__linear(const sp_weight *w, const float *x, int64_t n_rows, float *y, void *scratch,
                sp_threadpool *pool) {
    const sp_dtype vt = sp_dtype_vec_dot_type(w->type);
    uint64_t x_row_bytes = 0;
    if (sp_dtype_row_bytes(vt, (uint64_t)w->ne[0], &x_row_bytes) != SP_OK)
        SP_ASSERT(!"activation row size");
    linear_job j = {.w = w,
                    .x = x,
                    .n_rows = n_rows,
                    .y = y,
                    .xq = scratch,
                    .xq_row_bytes = (size_t)x_row_bytes,
                    .vt = vt,
                    .k = sp_kernels_get(),
                    .pool = pool};
    // About eight pieces per thread, at most 128 outputs (the packed kernel's weight chunk).
    const int nth = pool ? sp_threadpool_n_threads(pool) : 1;
    const int64_t groups = (w->ne[1] + 15) / 16;
    j.chunk = 16 * SP_MAX(1, SP_MIN(8, groups / (8 * (int64_t)nth)));
    atomic_init(&j.next, 0);
    if (w->packed) {
        const size_t xq_bytes = (size_t)x_row_bytes * (size_t)n_rows;
        const uintptr_t at =
            ((uintptr_t)scratch + xq_bytes + PACKED_ALIGN - 1) & ~(uintptr_t)(PACKED_ALIGN - 1);
        SP_ASSERT(at + j.k->act_pack_bytes(vt, w->ne[0], n_rows) <=
                  (uintptr_t)scratch + sp__linear_scratch_bytes(w->ne[0], n_rows));
        j.xp = (uint8_t *)at;
    }
    if (nth > 1)
        sp_threadpool_run(pool, linear_worker, &j);
    else
        linear_worker(&j, 0, 1);
}

void sp__weight_row(const sp_weight *w, int64_t row, float *dst) {
    sp_dequantize_row(w->type, (const uint8_t *)w->data + row * (int64_t)w->row_bytes, dst,
                      w->ne[0]);
}
