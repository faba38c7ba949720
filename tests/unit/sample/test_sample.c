#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "sample/sample.h"

/* Parameters with every truncation and penalty off; tests switch on what they exercise. */
static sp_sample_params plain(float temperature, uint64_t seed) {
    sp_sample_params p = sp_sample_params_default();
    p.temperature = temperature;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

static sp_sampler *make(const sp_sample_params *p, int32_t n_vocab) {
    sp_sampler *s = NULL;
    assert_int_equal(sp_sampler_create(p, n_vocab, &s), SP_OK);
    assert_non_null(s);
    return s;
}

static float *random_logits(int32_t n, uint64_t seed, float scale) {
    float *l = malloc((size_t)n * sizeof *l);
    assert_non_null(l);
    for (int32_t i = 0; i < n; i++)
        l[i] = scale * sp_test_randn(&seed);
    return l;
}

/* Reference argmax: first index of the largest value. */
static int32_t ref_argmax(const float *l, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (l[i] > l[best])
            best = i;
    return best;
}

/* Reference softmax(l / T) in double. */
static void ref_softmax(const float *l, int32_t n, double T, double *p) {
    double max = -INFINITY, z = 0;
    for (int32_t i = 0; i < n; i++)
        max = fmax(max, l[i]);
    for (int32_t i = 0; i < n; i++)
        z += p[i] = exp((l[i] - max) / T);
    for (int32_t i = 0; i < n; i++)
        p[i] /= z;
}

/* ---- greedy ---- */

static void test_greedy_is_argmax(void **state) {
    (void)state;
    const int32_t n = 5000;
    sp_sample_params p = plain(0.0f, 1);
    p.top_k = 40; // truncations cannot change the argmax; greedy must ignore them
    p.top_p = 0.5f;
    p.min_p = 0.2f;
    sp_sampler *s = make(&p, n);
    for (uint64_t seed = 1; seed <= 50; seed++) {
        float *l = random_logits(n, seed, 3.0f);
        const float before = l[17];
        assert_int_equal(sp_sampler_sample(s, l), ref_argmax(l, n));
        assert_true(l[17] == before); // logits are not modified
        free(l);
    }
    sp_sampler_destroy(s);
}

static void test_greedy_ties_lowest_id(void **state) {
    (void)state;
    float l[8] = {0, 1, 5, -2, 5, 5, 0, 5};
    sp_sample_params p = plain(0.0f, 1);
    sp_sampler *s = make(&p, 8);
    assert_int_equal(sp_sampler_sample(s, l), 2);
    l[2] = 4.999f;
    assert_int_equal(sp_sampler_sample(s, l), 4);
    // NaN counts as -inf, +inf beats everything finite.
    l[0] = NAN;
    l[6] = INFINITY;
    assert_int_equal(sp_sampler_sample(s, l), 6);
    // Every logit impossible: the lowest id.
    for (int i = 0; i < 8; i++)
        l[i] = -INFINITY;
    assert_int_equal(sp_sampler_sample(s, l), 0);
    sp_sampler_destroy(s);
}

/* top_k = 1 leaves only the argmax, whatever the temperature. */
static void test_top_k_one_is_greedy(void **state) {
    (void)state;
    const int32_t n = 3000;
    const float temps[] = {0.1f, 1.0f, 5.0f, 100.0f};
    for (size_t t = 0; t < SP_ARRAY_LEN(temps); t++) {
        sp_sample_params p = plain(temps[t], 7 + t);
        p.top_k = 1;
        sp_sampler *s = make(&p, n);
        for (uint64_t seed = 1; seed <= 20; seed++) {
            float *l = random_logits(n, seed * 31 + t, 0.5f); // flat: sampling would wander
            assert_int_equal(sp_sampler_sample(s, l), ref_argmax(l, n));
            free(l);
        }
        sp_sampler_destroy(s);
    }
}

/* ---- temperature sampling ---- */

/* Same seed: identical sequences from two samplers; another seed: a different sequence. */
static void test_seed_determinism(void **state) {
    (void)state;
    const int32_t n = 1000;
    float *l = random_logits(n, 5, 1.0f);
    sp_sample_params p = plain(1.0f, 42);
    sp_sampler *a = make(&p, n), *b = make(&p, n);
    p.seed = 43;
    sp_sampler *c = make(&p, n);
    int differ = 0;
    int32_t first[500];
    for (int i = 0; i < 500; i++) {
        int32_t x = sp_sampler_sample(a, l);
        first[i] = x;
        assert_int_equal(x, sp_sampler_sample(b, l));
        differ += x != sp_sampler_sample(c, l);
    }
    // With ~1000 plausible tokens, two independent streams agree rarely.
    assert_true(differ > 400);
    // reset() brings back the start of the sequence.
    sp_sampler_reset(a);
    for (int i = 0; i < 500; i++)
        assert_int_equal(sp_sampler_sample(a, l), first[i]);
    sp_sampler_destroy(a);
    sp_sampler_destroy(b);
    sp_sampler_destroy(c);
    free(l);
}

/* Pearson chi-square of counts against probabilities. */
/* Pearson's statistic of counts[n] against probabilities p[n] over the categories p gives a
 * positive probability; their number less one in *df (if not NULL). */
static double chi_square(const int *counts, const double *p, int n, int draws, int *df) {
    double chi = 0;
    int cats = 0;
    for (int i = 0; i < n; i++) {
        if (!(p[i] > 0))
            continue;
        double e = p[i] * draws;
        chi += (counts[i] - e) * (counts[i] - e) / e;
        cats++;
    }
    if (df)
        *df = cats - 1;
    return chi;
}

/* 100k draws at several temperatures match softmax(logits / T): chi-square with 7 degrees of
 * freedom below 29.88 (p = 1e-4). */
static void test_frequencies_match_softmax(void **state) {
    (void)state;
    const float l[8] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f, 2.2f, -0.3f};
    const float temps[] = {0.5f, 0.7f, 1.0f, 1.8f};
    const int draws = 100000;
    for (size_t t = 0; t < SP_ARRAY_LEN(temps); t++) {
        sp_sample_params p = plain(temps[t], 1000 + t);
        sp_sampler *s = make(&p, 8);
        int counts[8] = {0};
        for (int i = 0; i < draws; i++) {
            int32_t tok = sp_sampler_sample(s, l);
            assert_true(tok >= 0 && tok < 8);
            counts[tok]++;
        }
        double ref[8];
        ref_softmax(l, 8, temps[t], ref);
        double chi = chi_square(counts, ref, 8, draws, NULL);
        if (chi >= 29.88)
            fail_msg("T=%g chi-square %g", (double)temps[t], chi);

        // The distribution the sampler reports is the same softmax, in id order.
        int32_t ids[8];
        float probs[8];
        assert_int_equal(sp_sampler_distribution(s, l, 8, ids, probs), 8);
        for (int i = 0; i < 8; i++) {
            assert_int_equal(ids[i], i);
            assert_true(fabs(probs[i] - ref[i]) < 1e-6);
        }
        sp_sampler_destroy(s);
    }
}

/* A wrong sampler must fail the chi-square check: the same counts against the T=1 softmax when
 * sampling at T=0.5 exceed the bound by far. Guards the statistic itself. */
static void test_chi_square_detects_wrong_temperature(void **state) {
    (void)state;
    const float l[8] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f, 2.2f, -0.3f};
    sp_sample_params p = plain(0.5f, 3);
    sp_sampler *s = make(&p, 8);
    int counts[8] = {0};
    for (int i = 0; i < 100000; i++)
        counts[sp_sampler_sample(s, l)]++;
    double ref[8];
    ref_softmax(l, 8, 1.0, ref);
    assert_true(chi_square(counts, ref, 8, 100000, NULL) > 1000);
    sp_sampler_destroy(s);
}

/* Speculative decoding's check of a point-mass draft: whatever the draft (a likely token, an
 * unlikely one, one top_k has cut), the tokens follow the sampler's distribution (chi-square,
 * 7 degrees of freedom, p = 1e-4), the draft comes back exactly when accepted, at a rate of
 * its probability (within 5 standard deviations), and the tokens are those plain sampling
 * draws with the same seed; greedy gives the argmax. */
static void test_verify_follows_distribution(void **state) {
    (void)state;
    const float l[8] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f, 2.2f, -0.3f};
    const int draws = 100000;
    const int32_t drafts[] = {6, 3, 0};
    for (int top_k = 0; top_k <= 4; top_k += 4) {
        for (size_t d = 0; d < SP_ARRAY_LEN(drafts); d++) {
            sp_sample_params p = plain(0.8f, 77 + d);
            p.top_k = top_k;
            sp_sampler *s = make(&p, 8);
            int32_t ids[8];
            float probs[8];
            const int32_t n = sp_sampler_distribution(s, l, 8, ids, probs);
            double ref[8] = {0};
            for (int32_t i = 0; i < n; i++)
                ref[ids[i]] = probs[i];
            int counts[8] = {0}, accepted = 0;
            for (int i = 0; i < draws; i++) {
                const int32_t tok = sp_sampler_verify_q(s, l, drafts[d], NULL);
                assert_true(tok >= 0 && tok < 8);
                assert_true(ref[tok] > 0); // never a token the sampler would not draw
                counts[tok]++;
                accepted += tok == drafts[d];
            }
            int df;
            const double chi = chi_square(counts, ref, 8, draws, &df);
            if (chi >= (df == 7 ? 29.88 : 21.11)) // p = 1e-4 for 7 or 3 degrees of freedom
                fail_msg("top_k %d draft %d: chi-square %g", top_k, drafts[d], chi);
            const double q = ref[drafts[d]], sd = sqrt(draws * q * (1 - q));
            assert_true(fabs(accepted - draws * q) <= 5 * sd + 1e-9);
            sp_sampler_destroy(s);
        }
    }
    // The checks draw the same tokens as plain sampling with the same seed, whatever the draft.
    sp_sample_params p = plain(0.8f, 5);
    sp_sampler *a = make(&p, 8), *b = make(&p, 8);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(sp_sampler_verify_q(a, l, i % 8, NULL), sp_sampler_sample(b, l));
    sp_sampler_destroy(a);
    sp_sampler_destroy(b);
    sp_sample_params g = plain(0.0f, 1);
    sp_sampler *s = make(&g, 8);
    assert_int_equal(sp_sampler_verify_q(s, l, 3, NULL), 6);
    assert_int_equal(sp_sampler_verify_q(s, l, 6, NULL), 6);
    sp_sampler_destroy(s);
}

/* The check of drafts drawn from another distribution (a draft model's, q): the tokens follow
 * the sampler's own distribution p (chi-square, p = 1e-4), whether q is close to p, far from
 * it, or cut by top_k differently; drafts are accepted at the rate sum_i min(p_i, q_i) (within
 * 5 standard deviations). Greedy proposals are the draft logits' argmax. */
static void test_verify_q_follows_distribution(void **state) {
    (void)state;
    const float l[8] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f, 2.2f, -0.3f};
    const float drafts[2][8] = {{1.1f, 1.8f, 0.4f, -1.0f, 1.6f, 0.1f, 2.0f, -0.2f},
                                {-1.0f, 0.0f, 3.0f, 2.5f, -2.0f, 1.0f, -1.0f, 0.5f}};
    const int draws = 100000;
    for (int top_k = 0; top_k <= 4; top_k += 4) {
        for (int d = 0; d < 2; d++) {
            sp_sample_params p = plain(0.8f, 91 + (uint64_t)d);
            p.top_k = top_k;
            sp_sampler *s = make(&p, 8);
            int32_t ids[8];
            float probs[8];
            double ref[8] = {0}, qref[8] = {0};
            int32_t n = sp_sampler_distribution(s, l, 8, ids, probs);
            for (int32_t i = 0; i < n; i++)
                ref[ids[i]] = probs[i];
            n = sp_sampler_distribution(s, drafts[d], 8, ids, probs);
            for (int32_t i = 0; i < n; i++)
                qref[ids[i]] = probs[i];
            double overlap = 0;
            for (int i = 0; i < 8; i++)
                overlap += fmin(ref[i], qref[i]);
            int counts[8] = {0}, accepted = 0;
            float q[8];
            for (int i = 0; i < draws; i++) {
                const int32_t draft = sp_sampler_propose(s, drafts[d], q);
                assert_true(qref[draft] > 0 && fabs(q[draft] - qref[draft]) < 1e-6);
                const int32_t tok = sp_sampler_verify_q(s, l, draft, q);
                assert_true(tok >= 0 && tok < 8 && ref[tok] > 0);
                counts[tok]++;
                accepted += tok == draft;
            }
            int df;
            const double chi = chi_square(counts, ref, 8, draws, &df);
            if (chi >= (df == 7 ? 29.88 : 21.11))
                fail_msg("top_k %d draft %d: chi-square %g", top_k, d, chi);
            const double sd = sqrt(draws * overlap * (1 - overlap));
            if (fabs(accepted - draws * overlap) > 5 * sd + 1e-9)
                fail_msg("top_k %d draft %d: %d accepted, expected %g", top_k, d, accepted,
                         draws * overlap);
            sp_sampler_destroy(s);
        }
    }
    sp_sample_params g = plain(0.0f, 1);
    sp_sampler *s = make(&g, 8);
    float q[8];
    assert_int_equal(sp_sampler_propose(s, drafts[1], q), 2);
    assert_int_equal(sp_sampler_verify_q(s, l, 2, NULL), 6);
    sp_sampler_destroy(s);
}

/* Extreme temperatures: tiny T behaves like greedy, without overflow; -inf logits never win. */
static void test_temperature_extremes(void **state) {
    (void)state;
    float l[6] = {1.0f, 3.0f, -INFINITY, 2.9999f, NAN, -50.0f};
    sp_sample_params p = plain(1e-6f, 11);
    sp_sampler *s = make(&p, 6);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(sp_sampler_sample(s, l), 1);
    sp_sampler_destroy(s);

    p = plain(100.0f, 12);
    s = make(&p, 6);
    int seen[6] = {0};
    for (int i = 0; i < 20000; i++)
        seen[sp_sampler_sample(s, l)]++;
    assert_int_equal(seen[2], 0);
    assert_int_equal(seen[4], 0);
    for (int i = 0; i < 6; i++)
        if (i != 2 && i != 4)
            assert_true(seen[i] > 3000); // nearly uniform over the four finite logits
    sp_sampler_destroy(s);
}


/* ---- reference chain ---- */

typedef struct ref_cand {
    float l;
    int32_t id;
} ref_cand;

static int ref_cmp(const void *a, const void *b) {
    const ref_cand *x = a, *y = b;
    if (x->l != y->l)
        return x->l > y->l ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The chain written the obvious way: full sort, then each stage on the sorted list. `counts`
 * (n entries, may be NULL) are the token counts in the penalty window. Fills probs[n] (0 for
 * dropped tokens) and returns the number of tokens kept. */
static int32_t ref_chain(const float *logits, int32_t n, const sp_sample_params *p,
                         const int32_t *counts, double *probs) {
    ref_cand *c = malloc((size_t)n * sizeof *c);
    assert_non_null(c);
    for (int32_t i = 0; i < n; i++) {
        float l = logits[i];
        if (counts && counts[i] > 0) {
            l = l <= 0.0f ? l * p->repeat_penalty : l / p->repeat_penalty;
            l -= (float)counts[i] * p->frequency_penalty + 1.0f * p->presence_penalty;
        }
        c[i].l = l;
        c[i].id = i;
        probs[i] = 0;
    }
    qsort(c, (size_t)n, sizeof *c, ref_cmp);
    int32_t m = n;
    if (p->temperature <= 0.0f) {
        probs[c[0].id] = 1;
        free(c);
        return 1;
    }
    if (p->top_k > 0 && p->top_k < m)
        m = p->top_k;
    if (p->top_p < 1.0f) {
        double z = 0, cum = 0;
        for (int32_t i = 0; i < m; i++)
            z += exp((double)c[i].l - c[0].l);
        for (int32_t i = 0; i < m; i++) {
            cum += exp((double)c[i].l - c[0].l) / z;
            if (cum >= p->top_p) {
                m = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        int32_t k = 1;
        while (k < m && (double)c[k].l >= (double)c[0].l + log((double)p->min_p))
            k++;
        m = k;
    }
    double z = 0;
    for (int32_t i = 0; i < m; i++)
        z += exp(((double)c[i].l - c[0].l) / p->temperature);
    for (int32_t i = 0; i < m; i++)
        probs[c[i].id] = exp(((double)c[i].l - c[0].l) / p->temperature) / z;
    free(c);
    return m;
}

/* Compares sp_sampler_distribution with ref_chain. */
static void check_distribution(sp_sampler *s, const float *l, int32_t n, const sp_sample_params *p,
                               const int32_t *counts) {
    double *ref = malloc((size_t)n * sizeof *ref);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    float *probs = malloc((size_t)n * sizeof *probs);
    char *seen = calloc((size_t)n, 1);
    assert_true(ref && ids && probs && seen);
    int32_t m_ref = ref_chain(l, n, p, counts, ref);
    int32_t m = sp_sampler_distribution(s, l, n, ids, probs);
    if (m != m_ref)
        fail_msg("kept %d tokens, reference %d (top_k %d top_p %g min_p %g T %g)", m, m_ref,
                 p->top_k, (double)p->top_p, (double)p->min_p, (double)p->temperature);
    double sum = 0;
    for (int32_t i = 0; i < m; i++) {
        assert_true(ids[i] >= 0 && ids[i] < n && !seen[ids[i]]);
        seen[ids[i]] = 1;
        if (!(fabs(probs[i] - ref[ids[i]]) <= 1e-6 + 1e-5 * ref[ids[i]]))
            fail_msg("token %d: p %g, reference %g", ids[i], (double)probs[i], ref[ids[i]]);
        sum += probs[i];
    }
    assert_true(fabs(sum - 1.0) < 1e-4);
    free(ref);
    free(ids);
    free(probs);
    free(seen);
}

/* ---- truncation ---- */

/* Random logits of several shapes and sizes, many parameter combinations: the kept set and the
 * probabilities equal the full-sort reference. Sizes above 256 exercise the incremental
 * top_p selection; flat logits make the nucleus span many rounds. */
static void test_chain_matches_reference(void **state) {
    (void)state;
    const int32_t sizes[] = {1, 2, 7, 300, 5000, 40000};
    const float scales[] = {0.05f, 1.0f, 4.0f, 12.0f}; // 12: spans many top_p buckets
    const int32_t top_ks[] = {0, 1, 5, 40, 1000, 100000};
    const float top_ps[] = {1.0f, 0.999f, 0.95f, 0.5f, 0.1f};
    const float min_ps[] = {0.0f, 0.05f, 0.3f};
    uint64_t seed = 1;
    for (size_t a = 0; a < SP_ARRAY_LEN(sizes); a++) {
        for (size_t b = 0; b < SP_ARRAY_LEN(scales); b++) {
            float *l = random_logits(sizes[a], seed++, scales[b]);
            for (size_t c = 0; c < SP_ARRAY_LEN(top_ks); c++) {
                for (size_t d = 0; d < SP_ARRAY_LEN(top_ps); d++) {
                    for (size_t e = 0; e < SP_ARRAY_LEN(min_ps); e++) {
                        sp_sample_params p = plain(0.7f, seed);
                        p.top_k = top_ks[c];
                        p.top_p = top_ps[d];
                        p.min_p = min_ps[e];
                        sp_sampler *s = make(&p, sizes[a]);
                        check_distribution(s, l, sizes[a], &p, NULL);
                        sp_sampler_destroy(s);
                    }
                }
            }
            free(l);
        }
    }
}

/* Many equal logits: the order (logit desc, id asc) makes the cut deterministic: top_k keeps
 * the lowest ids among equals. */
static void test_top_k_ties(void **state) {
    (void)state;
    const int32_t n = 1000;
    float *l = malloc(n * sizeof *l);
    assert_non_null(l);
    for (int32_t i = 0; i < n; i++)
        l[i] = (float)(i % 3); // ids 2, 5, 8, ... share the top logit
    sp_sample_params p = plain(1.0f, 1);
    p.top_k = 10;
    sp_sampler *s = make(&p, n);
    int32_t ids[10];
    float probs[10];
    assert_int_equal(sp_sampler_distribution(s, l, 10, ids, probs), 10);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(ids[i], 2 + 3 * i);
        assert_true(fabsf(probs[i] - 0.1f) < 1e-6f);
    }
    for (int i = 0; i < 20000; i++) {
        int32_t t = sp_sampler_sample(s, l);
        assert_true(t % 3 == 2 && t <= 29);
    }
    sp_sampler_destroy(s);
    free(l);
}

/* Four tokens with probabilities 0.5, 0.3, 0.15, 0.05 at shuffled ids: the nucleus is the
 * smallest prefix whose mass reaches top_p. */
static void test_top_p_exact_cut(void **state) {
    (void)state;
    // id:             0                1                 2                 3
    const float l[4] = {logf(0.3f), logf(0.05f), logf(0.15f), logf(0.5f)};
    struct {
        float top_p;
        int32_t n_keep;
    } cases[] = {{0.3f, 1}, {0.49f, 1}, {0.51f, 2}, {0.75f, 2}, {0.79f, 2},
                 {0.81f, 3}, {0.94f, 3}, {0.96f, 4}, {1.0f, 4}};
    const int32_t order[4] = {3, 0, 2, 1};
    const double mass[4] = {0.5, 0.3, 0.15, 0.05};
    for (size_t c = 0; c < SP_ARRAY_LEN(cases); c++) {
        sp_sample_params p = plain(1.0f, 100 + c);
        p.top_p = cases[c].top_p;
        sp_sampler *s = make(&p, 4);
        int32_t ids[4];
        float probs[4];
        int32_t m = sp_sampler_distribution(s, l, 4, ids, probs);
        assert_int_equal(m, cases[c].n_keep);
        double kept = 0;
        for (int32_t i = 0; i < m; i++)
            kept += mass[i];
        // The kept tokens are the m most likely, in some order, renormalized.
        for (int32_t i = 0; i < m; i++) {
            int32_t rank = 0;
            while (rank < 4 && order[rank] != ids[i])
                rank++;
            assert_true(rank < m);
            assert_true(fabs(probs[i] - mass[rank] / kept) < 1e-6);
        }
        // Draws never leave the nucleus and follow the renormalized masses.
        int counts[4] = {0};
        const int draws = 100000;
        for (int i = 0; i < draws; i++)
            counts[sp_sampler_sample(s, l)]++;
        for (int32_t i = 0; i < 4; i++) {
            double expect = i < m ? mass[i] / kept : 0.0;
            double got = (double)counts[order[i]] / draws;
            assert_true(fabs(got - expect) < 0.01);
        }
        sp_sampler_destroy(s);
    }
}

/* min_p keeps p >= min_p * p_max. Probabilities 0.4, 0.2, 0.1, 0.05, 0.25 at ids 0..4. */
static void test_min_p(void **state) {
    (void)state;
    const float l[5] = {logf(0.4f), logf(0.2f), logf(0.1f), logf(0.05f), logf(0.25f)};
    struct {
        float min_p;
        int keep[5];
    } cases[] = {
        {0.0f, {1, 1, 1, 1, 1}}, {0.1f, {1, 1, 1, 1, 1}}, {0.2f, {1, 1, 1, 0, 1}},
        {0.3f, {1, 1, 0, 0, 1}}, {0.55f, {1, 0, 0, 0, 1}}, {0.7f, {1, 0, 0, 0, 0}},
        {1.0f, {1, 0, 0, 0, 0}},
    };
    for (size_t c = 0; c < SP_ARRAY_LEN(cases); c++) {
        sp_sample_params p = plain(1.0f, 7);
        p.min_p = cases[c].min_p;
        sp_sampler *s = make(&p, 5);
        int32_t ids[5];
        float probs[5];
        int32_t m = sp_sampler_distribution(s, l, 5, ids, probs);
        int expect_n = 0;
        double kept = 0;
        for (int i = 0; i < 5; i++) {
            expect_n += cases[c].keep[i];
            kept += cases[c].keep[i] ? exp(l[i]) : 0.0;
        }
        assert_int_equal(m, expect_n);
        for (int32_t i = 0; i < m; i++) {
            assert_true(cases[c].keep[ids[i]]);
            assert_true(i == 0 || ids[i] > ids[i - 1]); // unsorted path keeps id order
            assert_true(fabs(probs[i] - exp(l[ids[i]]) / kept) < 1e-6);
        }
        for (int i = 0; i < 5000; i++)
            assert_true(cases[c].keep[sp_sampler_sample(s, l)]);
        sp_sampler_destroy(s);
    }
}

/* ---- penalties ---- */

/* Counts of each token among the last `window` accepted (window -1: all). */
static void ref_counts(const int32_t *hist, int n_hist, int32_t window, int32_t *counts,
                       int32_t n) {
    memset(counts, 0, (size_t)n * sizeof *counts);
    int from = window < 0 || n_hist <= window ? 0 : n_hist - window;
    for (int i = from; i < n_hist; i++)
        counts[hist[i]]++;
}

static void test_penalties_exact(void **state) {
    (void)state;
    const int32_t n = 200;
    const int32_t windows[] = {1, 8, 64, -1};
    const float reps[] = {1.0f, 1.3f, 0.8f};
    const float freqs[] = {0.0f, 0.5f, -0.25f};
    const float pres[] = {0.0f, 1.5f, -2.0f};
    int32_t *counts = malloc(n * sizeof *counts);
    float *got = malloc(n * sizeof *got);
    int32_t hist[300];
    assert_true(counts && got);
    uint64_t rs = 77;
    for (size_t w = 0; w < SP_ARRAY_LEN(windows); w++)
        for (size_t r = 0; r < SP_ARRAY_LEN(reps); r++)
            for (size_t f = 0; f < SP_ARRAY_LEN(freqs); f++)
                for (size_t q = 0; q < SP_ARRAY_LEN(pres); q++) {
                    sp_sample_params p = plain(0.9f, 5);
                    p.repeat_last_n = windows[w];
                    p.repeat_penalty = reps[r];
                    p.frequency_penalty = freqs[f];
                    p.presence_penalty = pres[q];
                    // Also through the heap top_k (k <= n/16) and the top_p paths.
                    p.top_k = q == 1 ? 5 : 0;
                    p.top_p = f == 1 ? 0.9f : 1.0f;
                    sp_sampler *s = make(&p, n);
                    float *l = random_logits(n, rs++, 2.0f); // both signs
                    int n_hist = 0;
                    for (int step = 0; step < 300; step++) {
                        // Tokens from a small range so that they repeat.
                        int32_t t = (int32_t)(sp_test_rand(&rs) % 40);
                        sp_sampler_accept(s, t);
                        hist[n_hist++] = t;
                        if (step % 37 != 0 && step != 299)
                            continue;
                        ref_counts(hist, n_hist, windows[w], counts, n);
                        memcpy(got, l, n * sizeof *got);
                        sp_sampler_apply_penalties(s, got);
                        for (int32_t i = 0; i < n; i++) {
                            float e = l[i];
                            if (counts[i] > 0) {
                                e = e <= 0.0f ? e * p.repeat_penalty : e / p.repeat_penalty;
                                e -= (float)counts[i] * p.frequency_penalty + p.presence_penalty;
                            }
                            if (got[i] != e)
                                fail_msg("window %d token %d count %d: %.9g, expected %.9g",
                                         windows[w], i, counts[i], (double)got[i], (double)e);
                        }
                        check_distribution(s, l, n, &p, counts);
                    }
                    // reset() forgets the history.
                    sp_sampler_reset(s);
                    memcpy(got, l, n * sizeof *got);
                    sp_sampler_apply_penalties(s, got);
                    assert_memory_equal(got, l, n * sizeof *got);
                    free(l);
                    sp_sampler_destroy(s);
                }
    free(counts);
    free(got);
}

/* Penalties flip greedy choices exactly at the predicted margins. */
static void test_penalties_flip_greedy(void **state) {
    (void)state;
    float l[3] = {5.0f, 4.5f, -1.0f};
    // Presence 0.4 is not enough to overtake a 0.5 lead, 0.6 is.
    sp_sample_params p = plain(0.0f, 1);
    p.presence_penalty = 0.4f;
    sp_sampler *s = make(&p, 3);
    sp_sampler_accept(s, 0);
    assert_int_equal(sp_sampler_sample(s, l), 0);
    sp_sampler_destroy(s);
    p.presence_penalty = 0.6f;
    s = make(&p, 3);
    sp_sampler_accept(s, 0);
    assert_int_equal(sp_sampler_sample(s, l), 1);
    sp_sampler_destroy(s);

    // Frequency 0.2: two occurrences cost 0.4 (stays), three cost 0.6 (flips).
    p = plain(0.0f, 1);
    p.frequency_penalty = 0.2f;
    s = make(&p, 3);
    sp_sampler_accept(s, 0);
    sp_sampler_accept(s, 0);
    assert_int_equal(sp_sampler_sample(s, l), 0);
    sp_sampler_accept(s, 0);
    assert_int_equal(sp_sampler_sample(s, l), 1);
    sp_sampler_destroy(s);

    // Repeat penalty divides positive logits: 5 / 1.2 = 4.17 < 4.5.
    p = plain(0.0f, 1);
    p.repeat_penalty = 1.2f;
    p.repeat_last_n = 2;
    s = make(&p, 3);
    sp_sampler_accept(s, 0);
    assert_int_equal(sp_sampler_sample(s, l), 1);
    // The window holds two tokens: after two more, token 0 is forgiven.
    sp_sampler_accept(s, 2);
    assert_int_equal(sp_sampler_sample(s, l), 1);
    sp_sampler_accept(s, 2);
    assert_int_equal(sp_sampler_sample(s, l), 0);
    sp_sampler_destroy(s);

    // ... and multiplies negative ones: -1 * 3 = -3 loses to -2.
    float neg[2] = {-1.0f, -2.0f};
    p = plain(0.0f, 1);
    p.repeat_penalty = 3.0f;
    s = make(&p, 2);
    assert_int_equal(sp_sampler_sample(s, neg), 0);
    sp_sampler_accept(s, 0);
    assert_int_equal(sp_sampler_sample(s, neg), 1);
    sp_sampler_destroy(s);
}

/* ---- parameters ---- */

static void test_validation_names_parameter(void **state) {
    (void)state;
    sp_sample_params ok = sp_sample_params_default();
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_sample_params_validate(&ok, &d), SP_OK);
    assert_int_equal(sp_sample_params_validate(&ok, NULL), SP_OK);

#define BAD(field, value, name)                                                                \
    do {                                                                                       \
        sp_sample_params p = ok;                                                               \
        p.field = value;                                                                       \
        sp_diag_clear(&d);                                                                     \
        assert_int_equal(sp_sample_params_validate(&p, &d), SP_ERR_INVALID);                   \
        assert_string_equal(d.param, name);                                                    \
        assert_non_null(strstr(d.msg, name));                                                  \
        sp_sampler *s = NULL;                                                                  \
        assert_int_equal(sp_sampler_create(&p, 10, &s), SP_ERR_INVALID);                       \
        assert_null(s);                                                                        \
    } while (0)
#define GOOD(field, value)                                                                     \
    do {                                                                                       \
        sp_sample_params p = ok;                                                               \
        p.field = value;                                                                       \
        assert_int_equal(sp_sample_params_validate(&p, NULL), SP_OK);                          \
    } while (0)

    BAD(temperature, -0.1f, "temperature");
    BAD(temperature, 100.5f, "temperature");
    BAD(temperature, NAN, "temperature");
    BAD(temperature, INFINITY, "temperature");
    GOOD(temperature, 0.0f);
    GOOD(temperature, 100.0f);
    BAD(top_p, 0.0f, "top_p");
    BAD(top_p, 1.01f, "top_p");
    BAD(top_p, NAN, "top_p");
    GOOD(top_p, 1.0f);
    GOOD(top_p, 1e-6f);
    BAD(min_p, -0.01f, "min_p");
    BAD(min_p, 1.5f, "min_p");
    BAD(min_p, NAN, "min_p");
    GOOD(min_p, 0.0f);
    GOOD(min_p, 1.0f);
    BAD(repeat_penalty, 0.0f, "repeat_penalty");
    BAD(repeat_penalty, -1.0f, "repeat_penalty");
    BAD(repeat_penalty, NAN, "repeat_penalty");
    BAD(repeat_penalty, 1000.0f, "repeat_penalty");
    GOOD(repeat_penalty, 0.5f);
    BAD(repeat_last_n, -2, "repeat_last_n");
    BAD(repeat_last_n, SP_SAMPLE_MAX_PENALTY_WINDOW + 1, "repeat_last_n");
    GOOD(repeat_last_n, -1);
    GOOD(repeat_last_n, 0);
    GOOD(repeat_last_n, SP_SAMPLE_MAX_PENALTY_WINDOW);
    BAD(frequency_penalty, 2.01f, "frequency_penalty");
    BAD(frequency_penalty, -2.01f, "frequency_penalty");
    BAD(frequency_penalty, NAN, "frequency_penalty");
    GOOD(frequency_penalty, -2.0f);
    GOOD(frequency_penalty, 2.0f);
    BAD(presence_penalty, 2.5f, "presence_penalty");
    BAD(presence_penalty, -3.0f, "presence_penalty");
    BAD(presence_penalty, NAN, "presence_penalty");
    GOOD(presence_penalty, 2.0f);
    GOOD(top_k, -5);
    GOOD(top_k, 0);
#undef BAD
#undef GOOD

    sp_sampler *s = NULL;
    assert_int_equal(sp_sampler_create(&ok, 0, &s), SP_ERR_INVALID);
    assert_int_equal(sp_sampler_create(&ok, -3, &s), SP_ERR_INVALID);
    assert_null(s);
    sp_sampler_destroy(NULL);
}

/* A penalty window larger than the vocabulary, with the default truncations, end to end: the
 * penalties always match the counts of the last 1000 accepted tokens. */
static void test_defaults_and_big_window(void **state) {
    (void)state;
    const int32_t n = 50;
    sp_sample_params p = sp_sample_params_default();
    p.repeat_penalty = 1.1f;
    p.presence_penalty = 0.3f;
    p.repeat_last_n = 1000;
    sp_sampler *s = make(&p, n);
    float *l = random_logits(n, 3, 2.0f);
    float got[50];
    int32_t counts[50];
    int32_t *hist = malloc(3000 * sizeof *hist);
    assert_non_null(hist);
    for (int i = 0; i < 3000; i++) {
        int32_t t = sp_sampler_sample(s, l);
        assert_true(t >= 0 && t < n);
        sp_sampler_accept(s, t);
        hist[i] = t;
        if (i % 250 == 249) {
            ref_counts(hist, i + 1, 1000, counts, n);
            memcpy(got, l, sizeof got);
            sp_sampler_apply_penalties(s, got);
            for (int32_t k = 0; k < n; k++) {
                float e = l[k];
                if (counts[k] > 0) {
                    e = e <= 0.0f ? e * 1.1f : e / 1.1f;
                    e -= (float)counts[k] * 0.0f + 0.3f;
                }
                assert_true(got[k] == e);
            }
            check_distribution(s, l, n, &p, counts);
        }
    }
    free(hist);
    free(l);
    sp_sampler_destroy(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax),
        cmocka_unit_test(test_greedy_ties_lowest_id),
        cmocka_unit_test(test_top_k_one_is_greedy),
        cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_frequencies_match_softmax),
        cmocka_unit_test(test_chi_square_detects_wrong_temperature),
        cmocka_unit_test(test_verify_follows_distribution),
        cmocka_unit_test(test_verify_q_follows_distribution),
        cmocka_unit_test(test_temperature_extremes),
        cmocka_unit_test(test_chain_matches_reference),
        cmocka_unit_test(test_top_k_ties),
        cmocka_unit_test(test_top_p_exact_cut),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_penalties_exact),
        cmocka_unit_test(test_penalties_flip_greedy),
        cmocka_unit_test(test_validation_names_parameter),
        cmocka_unit_test(test_defaults_and_big_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
