/* A fixed pool of persistent worker threads that run one function on every thread at once:
 * the shape of a data-parallel kernel (a matmul split by output rows, attention split by
 * heads), dispatched many times per forward pass.
 *
 * sp_threadpool_run(p, fn, ctx) calls fn(ctx, ith, nth) once on each of the nth threads, the
 * calling thread itself being ith 0, and returns when every call has returned. Inside fn the
 * threads may meet at sp_threadpool_barrier as often as they like, so a multi-phase kernel is
 * one run. A run allocates nothing, and while the workers are awake it takes no lock and
 * makes no system call (waits may yield the CPU when threads outnumber cores).
 *
 * Between runs a worker spins for a short while (SP_THREADPOOL_SPIN_US) because the next run
 * usually follows within microseconds; then it sleeps on a condition variable, so an idle
 * server burns no CPU. The first run after such a pause pays one wake-up (tens of µs).
 *
 * Threads: the pool is owned by one thread (the one that created it, or the one it was
 * handed to), typically the engine thread. Only the owner calls run, n_threads and destroy,
 * and never from inside fn; sp_threadpool_barrier is called only from inside fn, by all nth
 * threads the same number of times. fn must not exit its thread or longjmp out.
 * Worker threads start with every signal blocked, so signals go to the other threads. */
#ifndef SP_BASE_THREADPOOL_H
#define SP_BASE_THREADPOOL_H

#include <stdint.h>

#include "base/err.h"

// Upper bound on n_threads accepted by sp_threadpool_create.
#define SP_THREADPOOL_MAX_THREADS 1024
// How long an idle worker spins for the next run before it goes to sleep.
#define SP_THREADPOOL_SPIN_US 50

typedef struct sp_threadpool sp_threadpool;

/* The work of one run: called once per thread with ith in [0, nth). ctx is the pointer given
 * to sp_threadpool_run, shared by all threads; fn must synchronise its own writes to it
 * (disjoint slices, or a barrier between a write and another thread's read). */
typedef void (*sp_threadpool_fn)(void *ctx, int ith, int nth);

/* Creates a pool of n_threads threads in all, counting the caller: n_threads - 1 worker
 * threads are started, and the thread that calls run is worker 0. n_threads <= 0 means one
 * per online CPU (sysconf(_SC_NPROCESSORS_ONLN), at least 1). More threads than CPUs is
 * allowed (every wait yields the CPU after a short spin) but slow. The calling thread owns
 * the result. Returns SP_ERR_INVALID if n_threads > SP_THREADPOOL_MAX_THREADS, SP_ERR_NOMEM
 * if memory or a thread could not be obtained (nothing is left running then); *out is
 * written only on success. */
sp_err sp_threadpool_create(int n_threads, sp_threadpool **out) SP_MUST_USE;

/* Stops and joins the workers and frees the pool. p may be NULL. Owner thread only, not
 * during a run. */
void sp_threadpool_destroy(sp_threadpool *p);

/* The total number of threads (the nth every fn sees), at least 1. */
int sp_threadpool_n_threads(const sp_threadpool *p);

/* Runs fn(ctx, ith, nth) on all nth threads, the calling thread as ith 0, and returns once
 * every call has returned. Everything the caller wrote before run is visible to every fn,
 * and everything any fn wrote is visible to the caller after run. With nth == 1 this is a
 * plain call of fn(ctx, 0, 1). Owner thread only; runs do not nest (asserted). */
void sp_threadpool_run(sp_threadpool *p, sp_threadpool_fn fn, void *ctx);

/* Inside fn only: waits until all nth threads of the run have reached this barrier. Writes
 * made by any thread before the barrier are visible to every thread after it. Every thread
 * of the run must call it the same number of times, or the run never ends. Waiting threads
 * spin, then yield the CPU; they do not sleep. */
void sp_threadpool_barrier(sp_threadpool *p);

/* Splits [0, n) into nth contiguous chunks for thread ith: [*begin, *end). Every boundary
 * between chunks is a multiple of align, so a kernel that works in blocks of align rows
 * (a quant block, a tile) never shares a block between threads; the last chunk (ith ==
 * nth - 1) always ends at n and so takes the partial block when align does not divide n.
 * Chunks differ by at most one block of align; when there are fewer blocks than threads the
 * first threads get empty chunks (begin == end). The split decides only which thread
 * computes which rows, never the values: a kernel must give bit-identical results for any
 * nth, and tests rely on it. Requires n >= 0, align >= 1, 0 <= ith < nth (asserted). */
static inline void sp_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *begin,
                                  int64_t *end) {
    SP_ASSERT(n >= 0 && align >= 1 && nth >= 1 && ith >= 0 && ith < nth);
    int64_t n_blocks = n / align + (n % align != 0);
    int64_t per = n_blocks / nth, extra = n_blocks % nth;
    // The last `extra` threads get one block more; b0 <= n_blocks, so no overflow.
    int64_t first_extra = nth - extra;
    int64_t b0 = ith * per + (ith > first_extra ? ith - first_extra : 0);
    int64_t b1 = b0 + per + (ith >= first_extra ? 1 : 0);
    // b * align < n for b < n_blocks; the end of the last block is n itself.
    *begin = b0 < n_blocks ? b0 * align : n;
    *end = b1 < n_blocks ? b1 * align : n;
}

#endif
