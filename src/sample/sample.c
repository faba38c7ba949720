#include "sample/sample.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

/* top_p buckets: candidates are grouped by how far their logit lies below the maximum, in
 * 1/32-logit steps; everything more than 32 below the maximum (weight < 1.3e-14 each) shares the
 * last bucket. The grouping only decides how much has to be sorted, never the result. */
#define TOP_P_BUCKETS 1024
#define TOP_P_RANGE 32.0

/* ---- parameters ---------------------------------------------------------------------------- */

sp_sample_params sp_sample_params_default(void) {
    sp_sample_params p = {
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .frequency_penalty = 0.0f,
        .presence_penalty = 0.0f,
        .seed = 0,
    };
    return p;
}

static sp_err bad_param(sp_diag *d, const char *param, const char *range, double value) {
    if (d) {
        sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "%s must be %s, got %g", param, range, value);
        snprintf(d->param, sizeof d->param, "%s", param);
    }
    return SP_ERR_INVALID;
}

sp_err sp_sample_params_validate(const sp_sample_params *p, sp_diag *d) {
    SP_ASSERT(p);
    // Every comparison is written so that NaN fails it.
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return bad_param(d, "temperature", "between 0 and 100",
                         p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return bad_param(d, "top_p", "in (0, 1]", p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return bad_param(d, "min_p", "in [0, 1]", p->min_p);
    if (!(p->repeat_penalty > 0.0f && p->repeat_penalty <= 100.0f))
        return bad_param(d, "repeat_penalty", "in (0, 100]",
                         p->repeat_penalty);
    if (p->repeat_last_n < -1 || p->repeat_last_n > SP_SAMPLE_MAX_PENALTY_WINDOW)
        return bad_param(d, "repeat_last_n", "-1 or in [0, 1048576]",
                         (double)p->repeat_last_n);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return bad_param(d, "frequency_penalty", "between -2 and 2",
                         p->frequency_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return bad_param(d, "presence_penalty", "between -2 and 2",
                         p->presence_penalty);
    return SP_OK;
}

/* ---- candidates and their order ------------------------------------------------------------ */

typedef struct cand {
    float logit;
    int32_t id;
} cand;

// The strict total order of the header: higher logit first, then lower id.
static inline int better(const cand *x, const cand *y) {
    return x->logit > y->logit || (x->logit == y->logit && x->id < y->id);
}

static inline void swap_cand(cand *a, size_t i, size_t j) {
    cand t = a[i];
    a[i] = a[j];
    a[j] = t;
}

static inline float clean_logit(float x) {
    if (x != x)
        return -INFINITY;
    if (x == INFINITY)
        return FLT_MAX;
    return x;
}

static int depth_limit(size_t n) {
    int d = 0;
    while (n > 1) {
        n >>= 1;
        d++;
    }
    return 2 * d + 2;
}

/* Heapsort into candidate order (best first). The heap keeps the worst candidate at the root,
 * which is moved to the end each round. Used when quicksort/quickselect recurse too deep. */
static void sift_down(cand *a, size_t root, size_t n) {
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && better(&a[child], &a[child + 1]))
            child++; // the worse of the two children
        if (!better(&a[root], &a[child]))
            return;
        swap_cand(a, root, child);
        root = child;
    }
}

static void heap_sort(cand *a, size_t n) {
    if (n < 2)
        return;
    for (size_t i = n / 2; i-- > 0;)
        sift_down(a, i, n);
    for (size_t end = n - 1; end > 0; end--) {
        swap_cand(a, 0, end);
        sift_down(a, 0, end);
    }
}

static void insertion_sort(cand *a, size_t n) {
    for (size_t i = 1; i < n; i++) {
        cand x = a[i];
        size_t j = i;
        while (j > 0 && better(&x, &a[j - 1])) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Partitions a[lo..hi] (inclusive, hi > lo) around a median-of-three pivot and returns its final
 * index p: a[lo..p) are better than a[p], a(p..hi] worse. Keys are distinct (ids break ties), so
 * there is no run of equal keys to degrade on. */
static size_t partition(cand *a, size_t lo, size_t hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (better(&a[mid], &a[lo]))
        swap_cand(a, mid, lo);
    if (better(&a[hi], &a[lo]))
        swap_cand(a, hi, lo);
    if (better(&a[hi], &a[mid]))
        swap_cand(a, hi, mid);
    swap_cand(a, mid, hi); // the median becomes the pivot at a[hi]
    const cand pivot = a[hi];
    size_t store = lo;
    for (size_t i = lo; i < hi; i++)
        if (better(&a[i], &pivot))
            swap_cand(a, i, store++);
    swap_cand(a, store, hi);
    return store;
}

/* Sorts a[n] into candidate order: introsort (quicksort, insertion sort below 16 elements,
 * heapsort past the depth limit). No allocation, unlike glibc's qsort. */
static void sort_cands(cand *a, size_t n) {
    int depth = depth_limit(n);
    while (n > 16) {
        if (depth-- == 0) {
            heap_sort(a, n);
            return;
        }
        size_t p = partition(a, 0, n - 1);
        // Recurse into the smaller side, loop on the larger: O(log n) stack.
        if (p < n - 1 - p) {
            sort_cands(a, p);
            a += p + 1;
            n -= p + 1;
        } else {
            sort_cands(a + p + 1, n - 1 - p);
            n = p;
        }
    }
    insertion_sort(a, n);
}

/* Moves the k best of a[n] (0 < k < n) to a[0..k), in no particular order: quickselect with a
 * heapsort fallback past the depth limit. Expected O(n). */
static void select_best(cand *a, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1, nth = k - 1;
    int depth = depth_limit(n);
    while (lo < hi) {
        if (depth-- == 0) {
            heap_sort(a + lo, hi - lo + 1);
            return;
        }
        size_t p = partition(a, lo, hi);
        if (p == nth)
            return;
        if (p < nth)
            lo = p + 1;
        else
            hi = p - 1;
    }
}

/* ---- the sampler --------------------------------------------------------------------------- */

struct sp_sampler {
    sp_sample_params p;
    int32_t n_vocab;
    bool penalties_on; // a window and at least one non-neutral penalty
    sp_rng rng;

    cand *cand; // (n_vocab) working candidates: logits after each stage
    double *w;  // (n_vocab) unnormalized final probabilities, parallel to cand

    // Penalty history (allocated only when penalties_on).
    int32_t *count;      // (n_vocab) occurrences of each token in the window
    int32_t *active_pos; // (n_vocab) index of the token in `active`, or -1
    int32_t *active;     // (n_active_cap) tokens whose count is > 0, in no order
    int32_t n_active;
    int32_t *ring;       // (window) the window's tokens, oldest at ring_head once full
    int32_t window;      // repeat_last_n, or -1 for the whole history (then ring is NULL)
    int32_t ring_len;
    int32_t ring_head;

    double bucket_mass[TOP_P_BUCKETS]; // top_p scratch: weight per logit bucket
};

sp_err sp_sampler_create(const sp_sample_params *p, int32_t n_vocab, sp_sampler **out) {
    SP_ASSERT(p && out);
    if (sp_sample_params_validate(p, NULL) != SP_OK || n_vocab <= 0)
        return SP_ERR_INVALID;
    sp_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return SP_ERR_NOMEM;
    s->p = *p;
    s->n_vocab = n_vocab;
    sp_rng_seed(&s->rng, p->seed);
    size_t n = (size_t)n_vocab;
    s->cand = malloc(n * sizeof *s->cand);
    s->w = malloc(n * sizeof *s->w);
    if (!s->cand || !s->w)
        goto fail;

    s->window = p->repeat_last_n;
    s->penalties_on = p->repeat_last_n != 0 &&
                      (p->repeat_penalty != 1.0f || p->frequency_penalty != 0.0f ||
                       p->presence_penalty != 0.0f);
    if (s->penalties_on) {
        size_t cap = s->window > 0 ? SP_MIN((size_t)s->window, n) : n;
        s->count = calloc(n, sizeof *s->count);
        s->active_pos = malloc(n * sizeof *s->active_pos);
        s->active = malloc(cap * sizeof *s->active);
        if (!s->count || !s->active_pos || !s->active)
            goto fail;
        for (size_t i = 0; i < n; i++)
            s->active_pos[i] = -1;
        if (s->window > 0) {
            s->ring = malloc((size_t)s->window * sizeof *s->ring);
            if (!s->ring)
                goto fail;
        }
    }
    *out = s;
    return SP_OK;

fail:
    sp_sampler_destroy(s);
    return SP_ERR_NOMEM;
}

void sp_sampler_destroy(sp_sampler *s) {
    if (!s)
        return;
    free(s->ring);
    free(s->active);
    free(s->active_pos);
    free(s->count);
    free(s->w);
    free(s->cand);
    free(s);
}

void sp_sampler_reset(sp_sampler *s) {
    SP_ASSERT(s);
    if (s->penalties_on) {
        for (int32_t i = 0; i < s->n_active; i++) {
            s->count[s->active[i]] = 0;
            s->active_pos[s->active[i]] = -1;
        }
        s->n_active = 0;
        s->ring_len = 0;
        s->ring_head = 0;
    }
    sp_rng_seed(&s->rng, s->p.seed);
}

static void count_add(sp_sampler *s, int32_t t) {
    if (s->count[t]++ == 0) {
        s->active_pos[t] = s->n_active;
        s->active[s->n_active++] = t;
    }
}

static void count_remove(sp_sampler *s, int32_t t) {
    if (--s->count[t] == 0) {
        int32_t i = s->active_pos[t];
        int32_t last = s->active[--s->n_active];
        s->active[i] = last;
        s->active_pos[last] = i;
        s->active_pos[t] = -1;
    }
}

void sp_sampler_accept(sp_sampler *s, int32_t token) {
    SP_ASSERT(s && token >= 0 && token < s->n_vocab);
    if (!s->penalties_on)
        return;
    if (s->window > 0) {
        if (s->ring_len == s->window) {
            count_remove(s, s->ring[s->ring_head]);
        } else {
            s->ring_len++;
        }
        s->ring[s->ring_head] = token;
        s->ring_head = s->ring_head + 1 == s->window ? 0 : s->ring_head + 1;
    }
    count_add(s, token);
}

static inline float penalize(const sp_sample_params *p, float l, int32_t count) {
    if (l <= 0.0f)
        l *= p->repeat_penalty;
    else
        l /= p->repeat_penalty;
    l -= (float)count * p->frequency_penalty + (float)(count > 0) * p->presence_penalty;
    return l;
}

void sp_sampler_apply_penalties(const sp_sampler *s, float *logits) {
    SP_ASSERT(s && logits);
    if (!s->penalties_on)
        return;
    for (int32_t i = 0; i < s->n_active; i++) {
        int32_t t = s->active[i];
        logits[t] = penalize(&s->p, logits[t], s->count[t]);
    }
}

static inline size_t top_p_bucket(double max, float logit) {
    double d = (max - (double)logit) * (TOP_P_BUCKETS / TOP_P_RANGE); // >= 0; +inf for -inf
    return d < TOP_P_BUCKETS - 1 ? (size_t)d : TOP_P_BUCKETS - 1;
}

/* top_p over c[n]: keeps the smallest prefix, in candidate order, whose probability (at
 * temperature 1, over the current candidates) reaches top_p, and returns its length.
 *
 * Sorted input (after top_k): one cumulative scan. Unsorted input (the whole vocabulary): one
 * pass sums the weights exp(l - max) per bucket (bucket_mass, TOP_P_BUCKETS entries); the first
 * bucket at which the cumulative mass reaches top_p holds the cut. A three-way partition puts
 * the buckets before it at the front (all kept, left unsorted), then that bucket's candidates,
 * which alone are sorted and scanned for the exact cut. O(n) plus sorting one bucket; the kept
 * candidates are not in candidate order afterwards (*sorted is set accordingly). */
static size_t apply_top_p(cand *c, size_t n, bool *sorted, double top_p, double *bucket_mass) {
    if (*sorted) {
        const double max = c[0].logit;
        if (max == -INFINITY)
            return n; // nothing has any probability; leave the list alone
        double z = 0.0;
        for (size_t i = 0; i < n; i++)
            z += exp((double)c[i].logit - max);
        double cum = 0.0;
        for (size_t i = 0; i < n; i++) {
            cum += exp((double)c[i].logit - max) / z;
            if (cum >= top_p)
                return i + 1;
        }
        return n; // rounding kept the sum below top_p: keep everything
    }

    double max = -INFINITY;
    for (size_t i = 0; i < n; i++)
        max = c[i].logit > max ? c[i].logit : max;
    if (max == -INFINITY)
        return n;
    memset(bucket_mass, 0, TOP_P_BUCKETS * sizeof *bucket_mass);
    double z = 0.0;
    for (size_t i = 0; i < n; i++) {
        double w = exp((double)c[i].logit - max);
        z += w;
        bucket_mass[top_p_bucket(max, c[i].logit)] += w;
    }
    const double target = top_p * z;
    double cum = 0.0; // mass of the buckets before `cut_bucket`
    size_t cut_bucket = 0;
    while (cut_bucket < TOP_P_BUCKETS && cum + bucket_mass[cut_bucket] < target)
        cum += bucket_mass[cut_bucket++];
    if (cut_bucket == TOP_P_BUCKETS)
        return n; // rounding: the total never reached top_p

    // [0, lo): earlier buckets; [lo, hi): the cut bucket; [hi, n): later buckets.
    size_t lo = 0, mid = 0, hi = n;
    while (mid < hi) {
        size_t b = top_p_bucket(max, c[mid].logit);
        if (b < cut_bucket)
            swap_cand(c, lo++, mid++);
        else if (b == cut_bucket)
            mid++;
        else
            swap_cand(c, mid, --hi);
    }
    *sorted = false;
    sort_cands(c + lo, hi - lo);
    for (size_t i = lo; i < hi; i++) {
        cum += exp((double)c[i].logit - max);
        if (cum >= target)
            return i + 1;
    }
    // Rounding between the bucket sums and this scan: go on through the rest, in order.
    sort_cands(c + hi, n - hi);
    for (size_t i = hi; i < n; i++) {
        cum += exp((double)c[i].logit - max);
        if (cum >= target)
            return i + 1;
    }
    return n;
}

/* min_p over c[n]: keeps candidates with p >= min_p * p_max, i.e. logit >= max + log(min_p),
 * preserving their order. The best candidate always stays. Returns the new count. */
static size_t apply_min_p(cand *c, size_t n, bool sorted, double min_p) {
    double max = -INFINITY;
    if (sorted) {
        max = c[0].logit;
    } else {
        for (size_t i = 0; i < n; i++)
            max = c[i].logit > max ? c[i].logit : max;
    }
    if (max == -INFINITY)
        return n;
    const double threshold = max + log(min_p);
    if (sorted) {
        size_t k = 1;
        while (k < n && (double)c[k].logit >= threshold)
            k++;
        return k;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if ((double)c[i].logit >= threshold)
            c[k++] = c[i];
    return k;
}

/* The logit of token i after cleaning and penalties. */
static inline float effective_logit(const sp_sampler *s, const float *logits, size_t i) {
    float l = clean_logit(logits[i]);
    if (s->penalties_on && s->count[i] > 0)
        l = clean_logit(penalize(&s->p, l, s->count[i]));
    return l;
}

/* top_k for small k: one pass over the logits keeping the k best in a heap whose root is the
 * worst kept, so most tokens cost one comparison; then the heap is sorted. Leaves c[0..k) in
 * candidate order. O(n + k log k log n). */
static void top_k_heap(const sp_sampler *s, const float *logits, size_t k) {
    cand *c = s->cand;
    const size_t n = (size_t)s->n_vocab;
    for (size_t i = 0; i < k; i++)
        c[i] = (cand){effective_logit(s, logits, i), (int32_t)i};
    for (size_t i = k / 2; i-- > 0;)
        sift_down(c, i, k);
    for (size_t i = k; i < n; i++) {
        float l = effective_logit(s, logits, i);
        // Later ids lose ties, so an equal logit cannot enter either.
        if (l <= c[0].logit)
            continue;
        c[0] = (cand){l, (int32_t)i};
        sift_down(c, 0, k);
    }
    for (size_t end = k - 1; end > 0; end--) {
        swap_cand(c, 0, end);
        sift_down(c, 0, end);
    }
}

/* Runs the chain up to the final softmax: leaves the candidates in s->cand[0..count) with their
 * unnormalized probabilities in s->w, returns count and the sum of the weights. */
static size_t build_distribution(sp_sampler *s, const float *logits, double *sum_out) {
    const sp_sample_params *p = &s->p;
    cand *c = s->cand;
    size_t n = (size_t)s->n_vocab;

    if (p->temperature <= 0.0f) {
        // Greedy: the first maximum is the lowest id among equals.
        size_t best = 0;
        float best_l = effective_logit(s, logits, 0);
        for (size_t i = 1; i < n; i++) {
            float l = effective_logit(s, logits, i);
            if (l > best_l) {
                best = i;
                best_l = l;
            }
        }
        c[0] = (cand){best_l, (int32_t)best};
        s->w[0] = 1.0;
        *sum_out = 1.0;
        return 1;
    }

    bool sorted = false;
    const bool top_k_on = p->top_k > 0 && (size_t)p->top_k < n;
    if (top_k_on && (size_t)p->top_k <= n / 16) {
        n = (size_t)p->top_k;
        top_k_heap(s, logits, n);
        sorted = true;
    } else {
        for (size_t i = 0; i < n; i++)
            c[i] = (cand){clean_logit(logits[i]), (int32_t)i};
        if (s->penalties_on) {
            for (int32_t i = 0; i < s->n_active; i++) {
                int32_t t = s->active[i];
                c[t].logit = clean_logit(penalize(p, c[t].logit, s->count[t]));
            }
        }
        if (top_k_on) {
            select_best(c, n, (size_t)p->top_k);
            n = (size_t)p->top_k;
            sort_cands(c, n);
            sorted = true;
        }
    }
    if (p->top_p < 1.0f)
        n = apply_top_p(c, n, &sorted, p->top_p, s->bucket_mass);
    if (p->min_p > 0.0f)
        n = apply_min_p(c, n, sorted, p->min_p);

    double max = -INFINITY;
    for (size_t i = 0; i < n; i++)
        max = c[i].logit > max ? c[i].logit : max;
    if (max == -INFINITY) { // every candidate is impossible: take the first
        s->w[0] = 1.0;
        *sum_out = 1.0;
        return 1;
    }
    const double temp = p->temperature;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        s->w[i] = exp(((double)c[i].logit - max) / temp);
        sum += s->w[i];
    }
    *sum_out = sum;
    return n;
}

/* A draw from the candidates built (one RNG draw; greedy: the first, none). */
static int32_t sample_from(sp_sampler *s, size_t n, double sum) {
    if (s->p.temperature <= 0.0f)
        return s->cand[0].id;
    const double u = sp_rng_uniform(&s->rng) * sum; // one draw per non-greedy token, always
    double acc = 0.0;
    size_t last = 0;
    for (size_t i = 0; i < n; i++) {
        if (s->w[i] > 0.0) {
            acc += s->w[i];
            last = i;
            if (u < acc)
                return s->cand[i].id;
        }
    }
    return s->cand[last].id; // rounding left u at or past the last partial sum
}

int32_t sp_sampler_sample(sp_sampler *s, const float *logits) {
    SP_ASSERT(s && logits);
    double sum;
    const size_t n = build_distribution(s, logits, &sum);
    return sample_from(s, n, sum);
}

int32_t sp_sampler_propose(sp_sampler *s, const float *draft_logits, float *q) {
    SP_ASSERT(s && draft_logits && q);
    double sum;
    const size_t n = build_distribution(s, draft_logits, &sum);
    if (s->p.temperature <= 0.0f)
        return s->cand[0].id;
    memset(q, 0, sizeof *q * (size_t)s->n_vocab);
    for (size_t i = 0; i < n; i++)
        q[s->cand[i].id] = (float)(s->w[i] / sum);
    // Drawn from q as stored (floats), so that the check divides by the probability it was
    // drawn with.
    double total = 0.0;
    for (size_t i = 0; i < n; i++)
        total += q[s->cand[i].id];
    const double u = sp_rng_uniform(&s->rng) * total;
    double acc = 0.0;
    size_t last = 0;
    for (size_t i = 0; i < n; i++) {
        const float qi = q[s->cand[i].id];
        if (qi > 0.0f) {
            acc += qi;
            last = i;
            if (u < acc)
                return s->cand[i].id;
        }
    }
    return s->cand[last].id; // rounding left u at or past the last partial sum
}

int32_t sp_sampler_verify_q(sp_sampler *s, const float *logits, int32_t draft, const float *q) {
    SP_ASSERT(s && logits && draft >= 0 && draft < s->n_vocab);
    double sum;
    const size_t n = build_distribution(s, logits, &sum);
    if (s->p.temperature <= 0.0f)
        return s->cand[0].id;
    if (!q) // a point mass: a plain draw
        return sample_from(s, n, sum);
    double w_draft = 0.0;
    for (size_t i = 0; i < n; i++)
        if (s->cand[i].id == draft)
            w_draft = s->w[i];
    // Accepted with probability min(1, p(draft) / q(draft)).
    const double q_draft = (double)q[draft];
    if (q_draft > 0.0 ? sp_rng_uniform(&s->rng) * sum * q_draft < w_draft
                      : (sp_rng_uniform(&s->rng), false))
        return draft;
    // Rejected: a draw from the residual max(0, p - q).
    double rsum = 0.0;
    for (size_t i = 0; i < n; i++) {
        const int32_t id = s->cand[i].id;
        const double qi = (double)q[id] * sum;
        s->w[i] = s->w[i] > qi ? s->w[i] - qi : 0.0;
        rsum += s->w[i];
    }
    if (!(rsum > 0.0)) // p and q equal up to rounding: the draft would always be accepted
        return draft;
    const double u = sp_rng_uniform(&s->rng) * rsum;
    double acc = 0.0;
    size_t last = n;
    for (size_t i = 0; i < n; i++) {
        if (!(s->w[i] > 0.0))
            continue;
        acc += s->w[i];
        last = i;
        if (u < acc)
            return s->cand[i].id;
    }
    SP_ASSERT(last < n);
    return s->cand[last].id; // rounding left u at or past the last partial sum
}

int32_t sp_sampler_distribution(sp_sampler *s, const float *logits, int32_t cap, int32_t *ids,
                                float *probs) {
    SP_ASSERT(s && logits && cap >= 0 && (cap == 0 || (ids && probs)));
    double sum;
    size_t n = build_distribution(s, logits, &sum);
    for (size_t i = 0; i < n && i < (size_t)cap; i++) {
        ids[i] = s->cand[i].id;
        probs[i] = (float)(s->w[i] / sum);
    }
    return (int32_t)n;
}

/* ---- log-probabilities --------------------------------------------------------------------- */

// Order of logprob entries: higher logit first, then lower id.
static inline int lp_better(const float *logits, int32_t a, int32_t b) {
    float la = clean_logit(logits[a]), lb = clean_logit(logits[b]);
    return la > lb || (la == lb && a < b);
}

/* Min-heap (worst at the root) of token ids kept in heap[n]. */
static void lp_sift_down(const float *logits, int32_t *heap, size_t root, size_t n) {
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && lp_better(logits, heap[child], heap[child + 1]))
            child++;
        if (!lp_better(logits, heap[root], heap[child]))
            return;
        int32_t t = heap[root];
        heap[root] = heap[child];
        heap[child] = t;
        root = child;
    }
}

sp_err sp_sample_logprobs(const float *logits, int32_t n_vocab, int32_t token, int32_t n_top,
                          float *token_logprob, int32_t *top_ids, float *top_logprobs) {
    if (!logits || n_vocab <= 0 || n_top < 0)
        return SP_ERR_INVALID;
    if (token_logprob && (token < 0 || token >= n_vocab))
        return SP_ERR_INVALID;
    if (n_top > 0 && (!top_ids || !top_logprobs))
        return SP_ERR_INVALID;
    double max = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) {
        float l = clean_logit(logits[i]);
        max = l > max ? l : max;
    }
    if (max == -INFINITY)
        return SP_ERR_INVALID;
    double z = 0.0;
    for (int32_t i = 0; i < n_vocab; i++)
        z += exp((double)clean_logit(logits[i]) - max);
    // (l - max) - log z, not l - (max + log z): the latter loses log z next to a huge max.
    const double log_z = log(z);

    if (token_logprob)
        *token_logprob = (float)(((double)clean_logit(logits[token]) - max) - log_z);

    size_t k = (size_t)SP_MIN(n_top, n_vocab);
    if (k == 0)
        return SP_OK;
    // Keep the k best in a heap whose root is the worst kept, then heap-sort it in place.
    size_t len = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        if (len < k) {
            top_ids[len++] = i;
            if (len == k)
                for (size_t j = k / 2; j-- > 0;)
                    lp_sift_down(logits, top_ids, j, k);
        } else if (lp_better(logits, i, top_ids[0])) {
            top_ids[0] = i;
            lp_sift_down(logits, top_ids, 0, k);
        }
    }
    for (size_t end = k - 1; end > 0; end--) {
        int32_t t = top_ids[0];
        top_ids[0] = top_ids[end];
        top_ids[end] = t;
        lp_sift_down(logits, top_ids, 0, end);
    }
    for (size_t i = 0; i < k; i++)
        top_logprobs[i] = (float)(((double)clean_logit(logits[top_ids[i]]) - max) - log_z);
    return SP_OK;
}
