/* Thread pool: every thread runs once per run with the right ith/nth, runs and barriers
 * publish memory, workers sleep when idle, and sp_split_range tiles [0, n) in aligned chunks.
 * cmocka asserts only on the test's own thread; workers record what they saw in arrays that
 * the test checks after the run (which also lets TSan check the run's memory ordering). No
 * assertion depends on how fast anything runs: a test that needs the workers asleep waits until
 * the kernel reports them blocked, with a deadline that only a worker that never sleeps misses. */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/threadpool.h"
#include "base/util.h"

#define MAX_TH 64

static void sleep_us(int64_t us) {
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int n_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

static sp_threadpool *make_pool(int n) {
    sp_threadpool *p = NULL;
    assert_int_equal(sp_threadpool_create(n, &p), SP_OK);
    assert_non_null(p);
    return p;
}

/* ---- the workers' threads, as the kernel sees them ---- */

typedef struct workers {
    int n;                    // threads of the pool, the caller (ith 0) included
    pid_t tid[MAX_TH];        // (n) kernel thread id of each ith
    pthread_t thread[MAX_TH]; // (n)
} workers;

static void workers_fn(void *arg, int ith, int nth) {
    workers *w = arg;
    (void)nth;
    w->tid[ith] = gettid();
    w->thread[ith] = pthread_self();
}

// One run that records which thread is which ith.
static void workers_find(sp_threadpool *p, workers *w) {
    memset(w, 0, sizeof(*w));
    w->n = sp_threadpool_n_threads(p);
    assert_true(w->n <= MAX_TH);
    sp_threadpool_run(p, workers_fn, w);
}

// The state letter of /proc/self/task/TID/stat: 'R' running or runnable (spinning, yielding),
// 'S' blocked in the kernel (a worker blocks only to sleep between runs).
static char thread_state(pid_t tid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')'); // the command name may hold anything but ends at ')'
    assert_non_null(rp);
    return rp[2];
}

/* Waits until every worker (ith > 0) is blocked, i.e. asleep on the pool's condition variable.
 * The deadline is for a pool whose workers never go to sleep, not for a slow machine. */
static void workers_wait_asleep(const workers *w) {
    const int64_t deadline = sp_time_us() + 60 * 1000000;
    for (;;) {
        int awake = 0;
        for (int i = 1; i < w->n; i++)
            awake += thread_state(w->tid[i]) != 'S';
        if (!awake)
            return;
        if (sp_time_us() > deadline)
            fail_msg("%d of %d idle workers still running after 60 s", awake, w->n - 1);
        sleep_us(1000);
    }
}

// CPU time used so far by the workers (ith > 0) together, in ns.
static int64_t workers_cpu_ns(const workers *w) {
    int64_t sum = 0;
    for (int i = 1; i < w->n; i++) {
        clockid_t clock;
        struct timespec ts;
        assert_int_equal(pthread_getcpuclockid(w->thread[i], &clock), 0);
        assert_int_equal(clock_gettime(clock, &ts), 0);
        sum += (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    }
    return sum;
}

/* ---- every thread once, correct ith/nth ---- */

typedef struct ident_ctx {
    int calls[MAX_TH];    // (nth) calls per ith, plain ints: each written by its own thread
    int seen_nth[MAX_TH]; // (nth) nth as seen by each ith
    pthread_t self[MAX_TH];
    atomic_int bad_ith; // calls with ith out of range
} ident_ctx;

static void ident_fn(void *arg, int ith, int nth) {
    ident_ctx *c = arg;
    if (ith < 0 || ith >= nth || ith >= MAX_TH) {
        atomic_fetch_add(&c->bad_ith, 1);
        return;
    }
    c->calls[ith]++;
    c->seen_nth[ith] = nth;
    c->self[ith] = pthread_self();
}

static void check_identity(int n, int n_runs) {
    sp_threadpool *p = make_pool(n);
    assert_int_equal(sp_threadpool_n_threads(p), n);
    ident_ctx c;
    memset(&c, 0, sizeof(c));
    atomic_init(&c.bad_ith, 0);
    for (int r = 0; r < n_runs; r++) {
        sp_threadpool_run(p, ident_fn, &c);
        // After each run, not only at the end: a lost or doubled call shows at once.
        for (int i = 0; i < n; i++)
            assert_int_equal(c.calls[i], r + 1);
    }
    assert_int_equal(atomic_load(&c.bad_ith), 0);
    assert_true(pthread_equal(c.self[0], pthread_self()));
    for (int i = 0; i < n; i++) {
        assert_int_equal(c.seen_nth[i], n);
        for (int j = 0; j < i; j++)
            assert_false(pthread_equal(c.self[i], c.self[j]));
    }
    for (int i = n; i < MAX_TH; i++)
        assert_int_equal(c.calls[i], 0);
    sp_threadpool_destroy(p);
}

static void test_identity(void **state) {
    (void)state;
    int sizes[] = {1, 2, 3, 8, 4 * n_cpus() + 1};
    for (size_t i = 0; i < SP_ARRAY_LEN(sizes); i++)
        check_identity(SP_MIN(sizes[i], MAX_TH), 200);
}

/* ---- n_threads = 1 runs inline; defaults and limits of create ---- */

typedef struct inline_ctx {
    pthread_t self;
    int ith, nth, calls;
} inline_ctx;

static void inline_fn(void *arg, int ith, int nth) {
    inline_ctx *c = arg;
    c->self = pthread_self();
    c->ith = ith;
    c->nth = nth;
    c->calls++;
}

static void barrier_only_fn(void *arg, int ith, int nth) {
    sp_threadpool *p = arg;
    for (int i = 0; i < 10; i++)
        sp_threadpool_barrier(p); // must return at once with one thread
    (void)ith;
    (void)nth;
}

static void test_single_thread_inline(void **state) {
    (void)state;
    sp_threadpool *p = make_pool(1);
    assert_int_equal(sp_threadpool_n_threads(p), 1);
    inline_ctx c = {.ith = -1, .nth = -1};
    sp_threadpool_run(p, inline_fn, &c);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.ith, 0);
    assert_int_equal(c.nth, 1);
    assert_true(pthread_equal(c.self, pthread_self()));
    sp_threadpool_run(p, barrier_only_fn, p);
    sp_threadpool_destroy(p);
}

static void test_create_limits(void **state) {
    (void)state;
    for (int n = 0; n >= -1; n--) {
        sp_threadpool *p = make_pool(n);
        assert_int_equal(sp_threadpool_n_threads(p), n_cpus());
        sp_threadpool_destroy(p);
    }
    static char dummy;
    sp_threadpool *sentinel = (sp_threadpool *)&dummy, *p = sentinel; // untouched on failure
    assert_int_equal(sp_threadpool_create(SP_THREADPOOL_MAX_THREADS + 1, &p), SP_ERR_INVALID);
    assert_ptr_equal(p, sentinel);
    sp_threadpool_destroy(NULL);
}

/* ---- 10,000 short runs: correctness and dispatch+join overhead ---- */

typedef struct count_ctx {
    int64_t counts[MAX_TH * 8]; // (nth * 8) one counter per thread, 64 bytes apart
} count_ctx;

static void count_fn(void *arg, int ith, int nth) {
    (void)nth;
    ((count_ctx *)arg)->counts[ith * 8]++;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

// Times n_runs consecutive runs of a trivial fn on n threads: the mean and the median
// dispatch+join time in µs (the median shows the cost on a machine busy with other work).
static void measure_overhead(int n, int n_runs, double *mean_us, double *median_us) {
    sp_threadpool *p = make_pool(n);
    count_ctx *c = calloc(1, sizeof(count_ctx));
    int64_t *ns = calloc((size_t)n_runs, sizeof(int64_t)); // (n_runs) per-run times
    assert_non_null(c);
    assert_non_null(ns);
    for (int r = 0; r < 100; r++) // wake the workers up
        sp_threadpool_run(p, count_fn, c);
    int64_t t0 = sp_time_ns(), prev = t0;
    for (int r = 0; r < n_runs; r++) {
        sp_threadpool_run(p, count_fn, c);
        int64_t now = sp_time_ns();
        ns[r] = now - prev;
        prev = now;
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(c->counts[i * 8], n_runs + 100);
    qsort(ns, (size_t)n_runs, sizeof(int64_t), cmp_i64);
    *mean_us = (double)(prev - t0) / 1e3 / n_runs;
    *median_us = (double)ns[n_runs / 2] / 1e3;
    free(ns);
    free(c);
    sp_threadpool_destroy(p);
}

static void test_many_short_runs(void **state) {
    (void)state;
    const int n_runs = 10000;
    int sizes[] = {2, n_cpus(), 8};
    for (size_t i = 0; i < SP_ARRAY_LEN(sizes); i++) {
        if (i == 1 && sizes[1] == sizes[0])
            continue;
        double mean, median;
        measure_overhead(sizes[i], n_runs, &mean, &median);
        printf("threadpool: %d threads on %d cpus: dispatch+join mean %.2f us, median %.2f us "
               "over %d runs\n",
               sizes[i], n_cpus(), mean, median, n_runs);
    }
}

/* ---- barriers: a multi-phase stencil where phase k reads phase k-1 of other threads ---- */

#define STENCIL_N      1001
#define STENCIL_PHASES 64

typedef struct stencil_ctx {
    sp_threadpool *pool;
    uint32_t buf[2][STENCIL_N]; // (2, STENCIL_N) phase k reads buf[k % 2], writes the other
    int64_t align;
    atomic_int arrivals; // phases entered, summed over threads
    atomic_int early;    // threads that left a barrier before everyone had arrived
} stencil_ctx;

static uint32_t stencil_cell(const uint32_t *src, int64_t i, int k) {
    uint32_t l = src[(i + STENCIL_N - 1) % STENCIL_N], m = src[i], r = src[(i + 1) % STENCIL_N];
    return l * 3u + (m ^ (r >> 3)) + (uint32_t)k * 2654435761u;
}

static void stencil_fn(void *arg, int ith, int nth) {
    stencil_ctx *c = arg;
    int64_t b, e;
    sp_split_range(STENCIL_N, c->align, ith, nth, &b, &e);
    for (int k = 0; k < STENCIL_PHASES; k++) {
        atomic_fetch_add_explicit(&c->arrivals, 1, memory_order_relaxed);
        const uint32_t *src = c->buf[k % 2];
        uint32_t *dst = c->buf[(k + 1) % 2];
        for (int64_t i = b; i < e; i++)
            dst[i] = stencil_cell(src, i, k);
        sp_threadpool_barrier(c->pool);
        // Everyone has entered phase k by now; faster threads may already be in k + 1.
        if (atomic_load_explicit(&c->arrivals, memory_order_relaxed) < nth * (k + 1))
            atomic_fetch_add(&c->early, 1);
    }
}

static void test_barrier_phases(void **state) {
    (void)state;
    static stencil_ctx c; // 8 KB, kept off the stack
    uint32_t ref[2][STENCIL_N];
    int sizes[] = {2, 3, 8};
    int64_t aligns[] = {1, 16, 7};
    uint64_t rng = 42;
    for (size_t s = 0; s < SP_ARRAY_LEN(sizes); s++) {
        sp_threadpool *p = make_pool(sizes[s]);
        for (int rep = 0; rep < 20; rep++) { // barrier state must carry across runs
            for (int i = 0; i < STENCIL_N; i++)
                ref[0][i] = c.buf[0][i] = (uint32_t)sp_test_rand(&rng);
            for (int k = 0; k < STENCIL_PHASES; k++)
                for (int64_t i = 0; i < STENCIL_N; i++)
                    ref[(k + 1) % 2][i] = stencil_cell(ref[k % 2], i, k);
            c.pool = p;
            c.align = aligns[rep % 3];
            atomic_store(&c.arrivals, 0);
            atomic_store(&c.early, 0);
            sp_threadpool_run(p, stencil_fn, &c);
            assert_int_equal(atomic_load(&c.early), 0);
            assert_int_equal(atomic_load(&c.arrivals), sizes[s] * STENCIL_PHASES);
            assert_memory_equal(c.buf[STENCIL_PHASES % 2], ref[STENCIL_PHASES % 2], sizeof(ref[0]));
        }
        sp_threadpool_destroy(p);
    }
}

/* ---- run returns only after the slowest thread; memory published both ways ---- */

typedef struct slow_ctx {
    int input;         // written by the caller before the run
    int seen[8];       // (nth) input as read by each thread
    atomic_int n_fast; // the other threads that have done their part
    int slow_done;     // written by the last thread, after all the others
} slow_ctx;

static void slow_fn(void *arg, int ith, int nth) {
    slow_ctx *c = arg;
    c->seen[ith] = c->input;
    if (ith != nth - 1) {
        atomic_fetch_add(&c->n_fast, 1);
        return;
    }
    // Finish last: only once every other call has done its part, and 20 ms after that, so
    // that the caller is all but surely waiting for the run to end by then.
    while (atomic_load(&c->n_fast) < nth - 1)
        sleep_us(100);
    sleep_us(20000);
    c->slow_done = 1;
}

static void test_run_waits_for_slowest(void **state) {
    (void)state;
    sp_threadpool *p = make_pool(4);
    slow_ctx c;
    memset(&c, 0, sizeof(c));
    for (int r = 1; r <= 3; r++) {
        c.input = r * 7;
        c.slow_done = 0;
        atomic_store(&c.n_fast, 0);
        sp_threadpool_run(p, slow_fn, &c);
        // A run that returned before its last call would read 0 here (and race under TSan).
        assert_int_equal(c.slow_done, 1);
        for (int i = 0; i < 4; i++)
            assert_int_equal(c.seen[i], r * 7);
    }
    sp_threadpool_destroy(p);
}

/* ---- runs spaced around the spin window: workers go to sleep and must be woken ---- */

static void test_sleep_wake(void **state) {
    (void)state;
    int sizes[] = {2, 5};
    uint64_t rng = 7;
    for (size_t s = 0; s < SP_ARRAY_LEN(sizes); s++) {
        int n = sizes[s];
        sp_threadpool *p = make_pool(n);
        workers w;
        workers_find(p, &w);
        count_ctx *c = calloc(1, sizeof(count_ctx));
        assert_non_null(c);
        const int n_runs = 300;
        for (int r = 0; r < n_runs; r++) {
            // 0 .. 3x the spin time, so some runs land while workers are falling asleep.
            sleep_us((int64_t)(sp_test_rand(&rng) % (3 * SP_THREADPOOL_SPIN_US + 1)));
            sp_threadpool_run(p, count_fn, c);
        }
        for (int k = 0; k < 3; k++) { // and runs that find every worker asleep
            workers_wait_asleep(&w);
            sp_threadpool_run(p, count_fn, c);
        }
        for (int i = 0; i < n; i++)
            assert_int_equal(c->counts[i * 8], n_runs + 3);
        free(c);
        sp_threadpool_destroy(p);
    }
}

/* ---- idle workers use no CPU ---- */

static void test_idle_cpu(void **state) {
    (void)state;
    int n = SP_MAX(4, n_cpus());
    sp_threadpool *p = make_pool(n);
    workers w;
    workers_find(p, &w);
    count_ctx *c = calloc(1, sizeof(count_ctx));
    assert_non_null(c);
    for (int r = 0; r < 1000; r++)
        sp_threadpool_run(p, count_fn, c);
    // Once asleep, a worker stays off the CPU until the next run: none of it in this window
    // (a spinning or periodically waking worker would use a share of it however busy the
    // machine is). 2 ms allows for a few spurious wake-ups.
    workers_wait_asleep(&w);
    int64_t cpu0 = workers_cpu_ns(&w), wall0 = sp_time_us();
    sleep_us(200000);
    int64_t cpu_us = (workers_cpu_ns(&w) - cpu0) / 1000, wall_us = sp_time_us() - wall0;
    printf("threadpool: %d idle workers used %lld us of CPU in %lld us\n", n - 1, (long long)cpu_us,
           (long long)wall_us);
    assert_true(cpu_us < 2000);
    // And they still answer.
    sp_threadpool_run(p, count_fn, c);
    for (int i = 0; i < n; i++)
        assert_int_equal(c->counts[i * 8], 1001);
    free(c);
    sp_threadpool_destroy(p);
}

/* ---- create/destroy many times, with and without runs ---- */

static void test_create_destroy_cycles(void **state) {
    (void)state;
    count_ctx *c = calloc(1, sizeof(count_ctx));
    assert_non_null(c);
    for (int i = 0; i < 300; i++) {
        int n = 1 + i % 9;
        sp_threadpool *p = make_pool(n);
        if (i % 3 != 0) { // every third pool is destroyed before any run
            memset(c, 0, sizeof(*c));
            sp_threadpool_run(p, count_fn, c);
            sp_threadpool_run(p, count_fn, c);
            for (int t = 0; t < n; t++)
                assert_int_equal(c->counts[t * 8], 2);
        }
        if (i % 2 == 0)
            sleep_us(100); // sometimes let the workers fall asleep first
        sp_threadpool_destroy(p);
    }
    free(c);
}

/* ---- sp_split_range ---- */

// Checks that the nth chunks of [0, n) tile it in order with aligned inner boundaries, the
// last chunk ending at n, and block counts differing by at most one.
static void check_split(int64_t n, int64_t align, int nth) {
    int64_t prev_end = 0, min_blocks = INT64_MAX, max_blocks = 0;
    for (int ith = 0; ith < nth; ith++) {
        int64_t b = -1, e = -1;
        sp_split_range(n, align, ith, nth, &b, &e);
        assert_int_equal(b, prev_end);
        assert_true(e >= b);
        assert_true(e <= n);
        if (ith == nth - 1)
            assert_int_equal(e, n);
        if (e < n) // an inner boundary
            assert_int_equal(e % align, 0);
        int64_t blocks = (e - b) / align + ((e - b) % align != 0);
        min_blocks = SP_MIN(min_blocks, blocks);
        max_blocks = SP_MAX(max_blocks, blocks);
        prev_end = e;
    }
    assert_int_equal(prev_end, n);
    assert_true(max_blocks - min_blocks <= 1);
}

static void test_split_range(void **state) {
    (void)state;
    const int64_t aligns[] = {1, 2, 3, 4, 7, 8, 16, 32, 64, 256};
    for (int64_t n = 0; n <= 300; n++)
        for (size_t a = 0; a < SP_ARRAY_LEN(aligns); a++)
            for (int nth = 1; nth <= 17; nth++)
                check_split(n, aligns[a], nth);
    // Large extents: no overflow near INT64_MAX.
    const int64_t big[] = {INT64_MAX, INT64_MAX - 1, (int64_t)1 << 62, 1000000007};
    for (size_t i = 0; i < SP_ARRAY_LEN(big); i++)
        for (int nth = 1; nth <= 64; nth = nth * 3) {
            check_split(big[i], 1, nth);
            check_split(big[i], 32, nth);
            check_split(big[i], (int64_t)1 << 40, nth);
            check_split(big[i], big[i], nth);
        }
    // Where the partial block goes, and who idles: 10 rows in blocks of 4 over 2 and 4 threads.
    int64_t b, e;
    sp_split_range(10, 4, 0, 2, &b, &e);
    assert_true(b == 0 && e == 4);
    sp_split_range(10, 4, 1, 2, &b, &e);
    assert_true(b == 4 && e == 10);
    sp_split_range(10, 4, 0, 4, &b, &e);
    assert_true(b == 0 && e == 0);
    sp_split_range(10, 4, 3, 4, &b, &e);
    assert_true(b == 8 && e == 10);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_single_thread_inline),
        cmocka_unit_test(test_create_limits),
        cmocka_unit_test(test_many_short_runs),
        cmocka_unit_test(test_barrier_phases),
        cmocka_unit_test(test_run_waits_for_slowest),
        cmocka_unit_test(test_sleep_wake),
        cmocka_unit_test(test_idle_cpu),
        cmocka_unit_test(test_create_destroy_cycles),
        cmocka_unit_test(test_split_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
