/* Thread pool: persistent workers, dispatch by an atomic generation counter, a
 * sense-reversing barrier, completion by an atomic counter the caller spins on.
 *
 * Dispatch protocol. The owner writes fn/ctx, clears n_done, then increments gen (release).
 * A worker that sees gen change (acquire) reads fn/ctx, calls fn, and increments n_done
 * (release); the owner, after its own share, spins until n_done == nth - 1 (acquire). The
 * owner touches fn/ctx/n_done again only after that, when no worker reads them any more.
 *
 * Sleeping. A worker that has waited SP_THREADPOOL_SPIN_US for gen to change takes the mutex,
 * announces itself in n_sleeping, re-checks gen and waits on the condition variable. The
 * owner increments gen and then reads n_sleeping, both seq_cst: of the two orders, either the
 * worker sees the new gen and does not sleep, or the owner sees it in n_sleeping and
 * broadcasts under the mutex, which the worker holds until it is inside pthread_cond_wait.
 * So no wake-up is lost, and a run with every worker awake makes no system call.
 *
 * Barrier. A thread reads the barrier generation, then increments n_barrier (acq_rel). The
 * last arrival resets n_barrier and bumps the generation (release); the others spin until the
 * generation moves (acquire). Reading the generation before arriving is what makes it
 * reusable: nobody can arrive at the next barrier before the generation they wait on moves,
 * and by then n_barrier is already 0 again. The RMW chain on n_barrier carries every
 * arrival's writes to the last thread, and its release store carries them to all. */
#include "base/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"

// Busy-wait iterations with a CPU pause before a waiter starts yielding the CPU: long enough
// to catch a partner that is a few µs behind, short enough that oversubscribed threads (more
// threads than cores) hand the core over to the thread they are waiting for.
#define SPIN_PAUSES 256

typedef struct worker {
    sp_threadpool *pool;
    int ith;
    pthread_t thread;
} worker;

struct sp_threadpool {
    // Each hot atomic on its own cache line: the workers poll gen while the barrier and the
    // completion counter are hammered, and false sharing would slow all three.
    alignas(64) atomic_uint gen;         // run generation; bumped by the owner to start a run
    alignas(64) atomic_int n_done;       // workers (ith > 0) that finished the current run
    alignas(64) atomic_int n_barrier;    // threads arrived at the current barrier
    alignas(64) atomic_uint barrier_gen; // bumped by the last arrival: the "sense"
    alignas(64) atomic_int n_sleeping;   // workers waiting (or about to) on cv
    atomic_bool stop;                    // set by destroy before its final gen bump
    atomic_bool running;                 // owner is inside run (nesting check)

    // Written by the owner before a gen bump, read by workers after it (see protocol).
    alignas(64) sp_threadpool_fn fn;
    void *ctx;
    int n_threads;
    worker *workers; // (n_threads) workers[0] is the owner's slot and has no thread

    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

// One step of a wait: a pause for the first SPIN_PAUSES steps, then a sched_yield.
static inline void backoff(unsigned *step) {
    if (*step < SPIN_PAUSES) {
        cpu_relax();
        (*step)++;
    } else {
        sched_yield();
    }
}

// Waits for gen to differ from last: spin, then sleep. Returns the new generation.
static unsigned wait_for_run(sp_threadpool *p, unsigned last) {
    unsigned g;
    unsigned step = 0;
    int64_t deadline = 0;
    for (unsigned i = 0;; i++) {
        g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != last)
            return g;
        // The clock is read only every 32 steps; vDSO clock_gettime is cheap but not free.
        if ((i & 31) == 0) {
            int64_t now = sp_time_ns();
            if (deadline == 0)
                deadline = now + (int64_t)SP_THREADPOOL_SPIN_US * 1000;
            else if (now >= deadline)
                break;
        }
        backoff(&step);
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->n_sleeping, 1, memory_order_seq_cst);
    while ((g = atomic_load_explicit(&p->gen, memory_order_seq_cst)) == last)
        pthread_cond_wait(&p->cv, &p->mu);
    atomic_fetch_sub_explicit(&p->n_sleeping, 1, memory_order_relaxed);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    sp_threadpool *p = w->pool;
    unsigned last = 0; // gen is 0 when the workers are started
    for (;;) {
        last = wait_for_run(p, last);
        if (atomic_load_explicit(&p->stop, memory_order_relaxed))
            break;
        p->fn(p->ctx, w->ith, p->n_threads);
        atomic_fetch_add_explicit(&p->n_done, 1, memory_order_release);
    }
    return NULL;
}

// Starts a new generation and wakes sleeping workers. Owner only.
static void kick(sp_threadpool *p) {
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&p->n_sleeping, memory_order_seq_cst) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

// Stops and joins workers[1 .. n_started], then frees everything.
static void shutdown_and_free(sp_threadpool *p, int n_started) {
    if (n_started > 0) {
        atomic_store_explicit(&p->stop, true, memory_order_relaxed);
        kick(p);
        for (int i = 1; i <= n_started; i++)
            pthread_join(p->workers[i].thread, NULL);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

sp_err sp_threadpool_create(int n_threads, sp_threadpool **out) {
    if (n_threads <= 0) {
        long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n_cpu < 1 ? 1 : (int)SP_MIN(n_cpu, (long)SP_THREADPOOL_MAX_THREADS);
    }
    if (n_threads > SP_THREADPOOL_MAX_THREADS)
        return SP_ERR_INVALID;

    // alignas(64) members need a 64-byte aligned block, which malloc does not promise.
    size_t size = (sizeof(sp_threadpool) + 63) / 64 * 64;
    sp_threadpool *p = aligned_alloc(64, size);
    if (!p)
        return SP_ERR_NOMEM;
    memset(p, 0, size);
    atomic_init(&p->gen, 0);
    atomic_init(&p->n_done, 0);
    atomic_init(&p->n_barrier, 0);
    atomic_init(&p->barrier_gen, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->stop, false);
    atomic_init(&p->running, false);
    p->n_threads = n_threads;
    p->workers = calloc((size_t)n_threads, sizeof(worker));
    if (!p->workers) {
        free(p);
        return SP_ERR_NOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);

    // Workers inherit the creator's signal mask: block everything while creating them so
    // that process signals (SIGINT, SIGTERM) are handled by the application's own threads.
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    int n_started = 0;
    for (int i = 1; i < n_threads; i++) {
        worker *w = &p->workers[i];
        w->pool = p;
        w->ith = i;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            break;
        n_started = i;
        char name[16];
        snprintf(name, sizeof(name), "sp-worker-%u", (unsigned)i % 10000u); // i < 1025
        pthread_setname_np(w->thread, name); // best effort, for debuggers and top
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (n_started != n_threads - 1) {
        shutdown_and_free(p, n_started);
        return SP_ERR_NOMEM;
    }
    p->workers[0].pool = p;
    *out = p;
    return SP_OK;
}

void sp_threadpool_destroy(sp_threadpool *p) {
    if (!p)
        return;
    SP_ASSERT(!atomic_load_explicit(&p->running, memory_order_relaxed));
    shutdown_and_free(p, p->n_threads - 1);
}

int sp_threadpool_n_threads(const sp_threadpool *p) {
    return p->n_threads;
}

void sp_threadpool_run(sp_threadpool *p, sp_threadpool_fn fn, void *ctx) {
    SP_ASSERT(fn != NULL);
    SP_ASSERT(!atomic_exchange_explicit(&p->running, true, memory_order_relaxed));
    int nth = p->n_threads;
    if (nth == 1) {
        fn(ctx, 0, 1);
        atomic_store_explicit(&p->running, false, memory_order_relaxed);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->n_done, 0, memory_order_relaxed); // published by the gen bump
    kick(p);
    fn(ctx, 0, nth);
    unsigned step = 0;
    while (atomic_load_explicit(&p->n_done, memory_order_acquire) != nth - 1)
        backoff(&step);
    atomic_store_explicit(&p->running, false, memory_order_relaxed);
}

void sp_threadpool_barrier(sp_threadpool *p) {
    int nth = p->n_threads;
    if (nth == 1)
        return;
    unsigned g = atomic_load_explicit(&p->barrier_gen, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&p->n_barrier, 1, memory_order_acq_rel) == nth - 1) {
        atomic_store_explicit(&p->n_barrier, 0, memory_order_relaxed);
        atomic_store_explicit(&p->barrier_gen, g + 1, memory_order_release);
        return;
    }
    unsigned step = 0;
    while (atomic_load_explicit(&p->barrier_gen, memory_order_acquire) == g)
        backoff(&step);
}
