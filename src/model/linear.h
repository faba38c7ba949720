/* Matrix products of weights with batches of activation rows (internal to src/model). */
#ifndef SP_MODEL_LINEAR_H
#define SP_MODEL_LINEAR_H

#include <stddef.h>
#include <stdint.h>

#include "base/threadpool.h"
#include "model/model.h"

/* Scratch bytes sp__linear needs for n_rows activation rows of n_in values. */
size_t sp__linear_scratch_bytes(int64_t n_in, int64_t n_rows);

/* y (n_rows, w->ne[1]) = x (n_rows, w->ne[0]) times w transposed, with the CPU's kernels
 * (tensor/kernels.h). Activation rows are first converted to the weight's dot-product type
 * (Q8_0 for Q8_0/Q4_0 weights, Q8_K for K-quants, F16 for F16...) as llama.cpp does; then
 * each output is one fixed-order dot product, so a row's result never depends on the other
 * rows nor on the number of threads. pool may be NULL (single thread); with a pool this runs
 * on all its threads and must be called from the pool's owner. */
void sp__linear(const sp_weight *w, const float *x, int64_t n_rows, float *y, void *scratch,
                sp_threadpool *pool);

/* The same for n (1..3) weights of one input size: y[i] = x times w[i] transposed, with one
 * conversion of x and one pass over the threads when their dot-product types agree (q/k/v,
 * gate/up), one per weight otherwise. */
void sp__linear_n(int n, const sp_weight *const *w, const float *x, int64_t n_rows,
                  float *const *y, void *scratch, sp_threadpool *pool);

/* Dequantizes row `row` of w into dst (w->ne[0] floats): embedding lookup. */
void sp__weight_row(const sp_weight *w, int64_t row, float *dst);

#endif
