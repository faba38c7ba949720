#include "model/linear.h"

#include <stdatomic.h>

#include "base/util.h"
#include "tensor/kernels.h"
#include "tensor/quant.h"

enum { PACKED_ALIGN = 64 };

size_t sp__linear_scratch_bytes(int64_t n_in, int64_t n_rows) {
    // The widest dot-product type per value is F32 (4 bytes); quantized types take less. Packed
    // weights also need the rows in the kernel's own layout: Q8_0 rows (34 bytes per 32 values)
    // plus that layout (at most 36 per 32), or Q8_K rows (292 per 256) plus theirs (320 per 256),
    // stay under 4 bytes per value, after alignment.
    return (size_t)n_in * (size_t)n_rows * 4 + PACKED_ALIGN;
}

enum { MAX_MATS = 3 };

typedef struct linear_job {
    int n_mats;
    const sp_weight *w[MAX_MATS];
    float *y[MAX_MATS];
    int64_t groups[MAX_MATS]; // groups of 16 outputs of the matrices before it and of itself
    const float *x;
    int64_t n_in, n_rows;
    uint8_t *xq;
    size_t xq_row_bytes;
    uint8_t *xp; // the rows in the packed kernel's layout, or NULL
    sp_dtype vt;
    const sp_kernels *k;
    sp_threadpool *pool;
    _Atomic int64_t next; // the next group not yet taken, counted over all the matrices
} linear_job;

enum { GROUP = 16, MAX_TAKE = 8 }; // a piece: at most 8 groups (the packed kernel's weight chunk)

/* Each thread converts its share of the activation rows (and lays them out for the packed
 * kernel if a matrix is packed), then, after a barrier, takes pieces of the outputs (whole
 * groups of 16, so threads never share a cache line of y) until none are left. */
static void linear_worker(void *ctx, int ith, int nth) {
    linear_job *j = ctx;
    const int64_t n_in = j->n_in;
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
    // Pieces go to whichever thread is free (a thread the host deschedules for a while costs
    // only its current piece); which thread computes an output never changes it. Pieces shrink
    // as the work runs out, to about a (2 nth)-th of what is left, so that the threads finish
    // together.
    const int64_t total = j->groups[j->n_mats - 1];
    for (;;) {
        int64_t g = atomic_load_explicit(&j->next, memory_order_relaxed), take = 0;
        int i = 0;
        do {
            if (g >= total)
                return;
            for (i = 0; g >= j->groups[i]; i++)
                ;
            take = SP_MAX(1, SP_MIN(MAX_TAKE, (total - g) / (2 * nth)));
            take = SP_MIN(take, j->groups[i] - g);
        } while (!atomic_compare_exchange_weak_explicit(
            &j->next, &g, g + take, memory_order_relaxed, memory_order_relaxed));
        const sp_weight *w = j->w[i];
        const int64_t n_out = w->ne[1];
        const int64_t o0 = (g - (i ? j->groups[i - 1] : 0)) * GROUP;
        const int64_t o1 = SP_MIN(n_out, o0 + take * GROUP);
        if (w->packed)
            j->k->matmul_packed[w->type](w->packed, 0, j->xp, 0, n_in, j->n_rows, j->y[i], n_out,
                                         o0, o1);
        else
            j->k->matmul[w->type](w->data, w->row_bytes, j->xq, j->xq_row_bytes, n_in, j->n_rows,
                                  j->y[i], n_out, o0, o1);
    }
}

void sp__linear_n(int n, const sp_weight *const *w, const float *x, int64_t n_rows, float *const *y,
                  void *scratch, sp_threadpool *pool) {
    SP_ASSERT(n >= 1 && n <= MAX_MATS);
    const int64_t n_in = w[0]->ne[0];
    const sp_dtype vt = sp_dtype_vec_dot_type(w[0]->type);
    for (int i = 1; i < n; i++) {
        SP_ASSERT(w[i]->ne[0] == n_in);
        if (sp_dtype_vec_dot_type(w[i]->type) != vt) {
            // Weights that want x in different forms: one conversion each.
            for (int k = 0; k < n; k++)
                sp__linear_n(1, &w[k], x, n_rows, &y[k], scratch, pool);
            return;
        }
    }
    uint64_t x_row_bytes = 0;
    if (sp_dtype_row_bytes(vt, (uint64_t)n_in, &x_row_bytes) != SP_OK)
        SP_ASSERT(!"activation row size");
    const int nth = pool ? sp_threadpool_n_threads(pool) : 1;
    linear_job j = {.n_mats = n,
                    .x = x,
                    .n_in = n_in,
                    .n_rows = n_rows,
                    .xq = scratch,
                    .xq_row_bytes = (size_t)x_row_bytes,
                    .vt = vt,
                    .k = sp_kernels_get(),
                    .pool = pool};
    bool packed = false;
    for (int i = 0; i < n; i++) {
        j.w[i] = w[i];
        j.y[i] = y[i];
        j.groups[i] = (i ? j.groups[i - 1] : 0) + (w[i]->ne[1] + GROUP - 1) / GROUP;
        packed |= w[i]->packed != NULL;
    }
    atomic_init(&j.next, 0);
    if (packed) {
        const size_t xq_bytes = (size_t)x_row_bytes * (size_t)n_rows;
        const uintptr_t at =
            ((uintptr_t)scratch + xq_bytes + PACKED_ALIGN - 1) & ~(uintptr_t)(PACKED_ALIGN - 1);
        SP_ASSERT(at + j.k->act_pack_bytes(vt, n_in, n_rows) <=
                  (uintptr_t)scratch + sp__linear_scratch_bytes(n_in, n_rows));
        j.xp = (uint8_t *)at;
    }
    if (nth > 1)
        sp_threadpool_run(pool, linear_worker, &j);
    else
        linear_worker(&j, 0, 1);
}

void sp__linear(const sp_weight *w, const float *x, int64_t n_rows, float *y, void *scratch,
                sp_threadpool *pool) {
    sp__linear_n(1, &w, x, n_rows, &y, scratch, pool);
}

void sp__weight_row(const sp_weight *w, int64_t row, float *dst) {
    sp_dequantize_row(w->type, (const uint8_t *)w->data + row * (int64_t)w->row_bytes, dst,
                      w->ne[0]);
}
