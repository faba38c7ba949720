#include "sched/policy.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "sample/rng.h"

static int32_t max_remaining_capped(const sp_policy_req *q) { return SP_MAX(q->max_remaining, 0); }

/* ---- aggressive ---------------------------------------------------------------------------- */

static bool aggressive_admit(void *ctx, const sp_sched_state *s, const sp_policy_req *cand) {
    (void)ctx;
    return cand->blocks_needed <= s->n_available;
}

sp_admission_policy sp_policy_aggressive(void) {
    return (sp_admission_policy){.name = "aggressive", .admit = aggressive_admit};
}

/* ---- conservative -------------------------------------------------------------------------- */

static int64_t blocks_of(int64_t tokens, int32_t bs) { return (tokens + bs - 1) / bs; }

static bool conservative_admit(void *ctx, const sp_sched_state *s, const sp_policy_req *cand) {
    (void)ctx;
    int64_t need = blocks_of((int64_t)cand->n_kv + max_remaining_capped(cand), s->block_size);
    for (int32_t i = 0; i < s->n_running; i++)
        need += blocks_of((int64_t)s->running[i].n_kv + max_remaining_capped(&s->running[i]),
                          s->block_size);
    return need <= s->n_blocks && cand->blocks_needed <= s->n_available;
}

sp_admission_policy sp_policy_conservative(void) {
    return (sp_admission_policy){.name = "conservative", .admit = conservative_admit};
}

/* ---- past-future --------------------------------------------------------------------------- */

typedef struct past_future {
    int32_t window, samples, max_n;
    int32_t *ring;   // (window) output lengths, in arrival order
    int32_t *sorted; // (window) the same, ascending
    int32_t n, head; // entries, next slot in the ring
    int32_t *c, *r, *order; // (max_n) scratch for one peak
    sp_rng rng;
    int64_t last_peak; // tokens, the last decision's predicted peak (with block rounding)
} past_future;

static int32_t upper_bound(const int32_t *a, int32_t n, int32_t v) {
    int32_t lo = 0, hi = n; // first index with a[i] > v
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (a[mid] <= v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Remaining tokens of a request that generated d of at most d + max_rem: a recorded length
 * above d, drawn uniformly, minus d; max_rem when the history cannot say. */
static int32_t draw_remaining(past_future *pf, int32_t d, int32_t max_rem) {
    if (pf->n < SP_MAX(pf->window / 10, 1))
        return max_rem;
    int32_t first = upper_bound(pf->sorted, pf->n, d);
    if (first == pf->n)
        return max_rem;
    int32_t k = first + (int32_t)(sp_rng_next(&pf->rng) % (uint64_t)(pf->n - first));
    return SP_MIN(pf->sorted[k] - d, max_rem);
}


/* Order of two request indices: r descending, then index ascending (a total order). */
static bool before(const int32_t *r, int32_t a, int32_t b) {
    return r[a] > r[b] || (r[a] == r[b] && a < b);
}

static void sift_down(int32_t *h, int32_t n, int32_t i, const int32_t *r) {
    for (;;) {
        int32_t m = i, lc = 2 * i + 1, rc = 2 * i + 2;
        // A heap whose root comes LAST in the order, so popping builds the order front to back.
        if (lc < n && before(r, h[m], h[lc]))
            m = lc;
        if (rc < n && before(r, h[m], h[rc]))
            m = rc;
        if (m == i)
            return;
        int32_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

int64_t sp_policy_peak(const int32_t *c, const int32_t *r, int32_t n, int32_t *order) {
    // Heap sort of the indices (O(n log n), no allocation).
    for (int32_t i = 0; i < n; i++)
        order[i] = i;
    for (int32_t i = n / 2 - 1; i >= 0; i--)
        sift_down(order, n, i, r);
    for (int32_t end = n - 1; end > 0; end--) {
        int32_t t = order[0];
        order[0] = order[end];
        order[end] = t;
        sift_down(order, end, 0, r);
    }
    int64_t sum_c = 0, peak = 0;
    for (int32_t k = 0; k < n; k++) {
        sum_c += c[order[k]];
        int64_t v = sum_c + (int64_t)(k + 1) * r[order[k]];
        peak = SP_MAX(peak, v);
    }
    return peak;
}

static bool past_future_admit(void *ctx, const sp_sched_state *s, const sp_policy_req *cand) {
    past_future *pf = ctx;
    if (cand->blocks_needed > s->n_available)
        return false;
    const int32_t n = SP_MIN(s->n_running, pf->max_n - 1) + 1;
    const int64_t capacity = (int64_t)s->n_blocks * s->block_size;
    int64_t worst = 0;
    for (int32_t smp = 0; smp < pf->samples; smp++) {
        for (int32_t i = 0; i < n - 1; i++) {
            const sp_policy_req *q = &s->running[i];
            pf->c[i] = q->n_kv;
            pf->r[i] = draw_remaining(pf, q->n_generated, max_remaining_capped(q));
        }
        pf->c[n - 1] = cand->n_kv;
        pf->r[n - 1] = draw_remaining(pf, 0, max_remaining_capped(cand));
        int64_t peak = sp_policy_peak(pf->c, pf->r, n, pf->order);
        worst = SP_MAX(worst, peak);
    }
    // Block rounding: every live request may hold a partly filled last block.
    worst += (int64_t)n * (s->block_size - 1);
    pf->last_peak = worst;
    return worst <= capacity;
}

static void past_future_finish(void *ctx, int32_t n_generated, int32_t max_tokens) {
    (void)max_tokens;
    past_future *pf = ctx;
    if (pf->n == pf->window) {
        // Drop the oldest from the sorted copy.
        int32_t old = pf->ring[pf->head];
        int32_t i = upper_bound(pf->sorted, pf->n, old) - 1;
        memmove(pf->sorted + i, pf->sorted + i + 1, (size_t)(pf->n - i - 1) * sizeof(int32_t));
        pf->n--;
    }
    pf->ring[pf->head] = n_generated;
    pf->head = (pf->head + 1) % pf->window;
    int32_t i = upper_bound(pf->sorted, pf->n, n_generated);
    memmove(pf->sorted + i + 1, pf->sorted + i, (size_t)(pf->n - i) * sizeof(int32_t));
    pf->sorted[i] = n_generated;
    pf->n++;
}

static int64_t past_future_peak(void *ctx) { return ((past_future *)ctx)->last_peak; }

int32_t sp__past_future_draw(void *ctx, int32_t d, int32_t max_rem) {
    return draw_remaining(ctx, d, max_rem);
}

static void past_future_destroy(void *ctx) {
    past_future *pf = ctx;
    if (!pf)
        return;
    free(pf->ring);
    free(pf->sorted);
    free(pf->c);
    free(pf->r);
    free(pf->order);
    free(pf);
}

sp_err sp_policy_past_future_create(int32_t window, int32_t samples, int32_t max_seqs,
                                    uint64_t seed, sp_admission_policy *out) {
    if (window < 1 || samples < 1 || max_seqs < 1)
        return SP_ERR_INVALID;
    past_future *pf = calloc(1, sizeof *pf);
    if (!pf)
        return SP_ERR_NOMEM;
    pf->window = window;
    pf->samples = samples;
    pf->max_n = max_seqs + 1;
    pf->ring = malloc((size_t)window * sizeof(int32_t));
    pf->sorted = malloc((size_t)window * sizeof(int32_t));
    pf->c = malloc((size_t)pf->max_n * sizeof(int32_t));
    pf->r = malloc((size_t)pf->max_n * sizeof(int32_t));
    pf->order = malloc((size_t)pf->max_n * sizeof(int32_t));
    if (!pf->ring || !pf->sorted || !pf->c || !pf->r || !pf->order) {
        past_future_destroy(pf);
        return SP_ERR_NOMEM;
    }
    sp_rng_seed(&pf->rng, seed);
    *out = (sp_admission_policy){.name = "past-future",
                                 .ctx = pf,
                                 .admit = past_future_admit,
                                 .on_finish = past_future_finish,
                                 .destroy = past_future_destroy,
                                 .predicted_peak = past_future_peak};
    return SP_OK;
}

sp_err sp_policy_create(const char *name, int32_t max_seqs, uint64_t seed,
                        sp_admission_policy *out) {
    if (!strcmp(name, "aggressive")) {
        *out = sp_policy_aggressive();
        return SP_OK;
    }
    if (!strcmp(name, "conservative")) {
        *out = sp_policy_conservative();
        return SP_OK;
    }
    if (!strcmp(name, "past-future"))
        return sp_policy_past_future_create(200, 4, max_seqs, seed, out);
    return SP_ERR_INVALID;
}
