#include "loadgen/stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/hash.h"

/* ---- Descriptive statistics ------------------------------------------------------------- */

static double lerp_numpy(double a, double b, double t) {
    // numpy's _lerp: a + (b - a) t, but b - (b - a)(1 - t) for t >= 0.5, which is exact at
    // t = 1 and keeps the result monotonic in t.
    double diff = b - a;
    if (t >= 0.5)
        return b - diff * (1.0 - t);
    return a + diff * t;
}

double sp_lg_percentile_sorted(const double *sorted, size_t n, double q) {
    if (n == 0)
        return 0.0;
    double vi = (double)(n - 1) * (q / 100.0);
    double lo = floor(vi);
    double t = vi - lo;
    size_t i = (size_t)lo;
    if (i >= n - 1)
        return sorted[n - 1];
    return lerp_numpy(sorted[i], sorted[i + 1], t);
}

double sp_lg_median_sorted(const double *sorted, size_t n) {
    if (n == 0)
        return 0.0;
    if (n % 2)
        return sorted[n / 2];
    return (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0;
}

/* Pairwise summation, as numpy sums: the error grows with log n instead of n. */
static double pairwise_sum(const double *x, size_t n) {
    if (n <= 8) {
        double s = 0.0;
        for (size_t i = 0; i < n; i++)
            s += x[i];
        return s;
    }
    size_t h = n / 2;
    return pairwise_sum(x, h) + pairwise_sum(x + h, n - h);
}

double sp_lg_mean(const double *x, size_t n) {
    if (n == 0)
        return 0.0;
    return pairwise_sum(x, n) / (double)n;
}

double sp_lg_std(const double *x, size_t n) {
    if (n == 0)
        return 0.0;
    double m = sp_lg_mean(x, n);
    // Two passes, like numpy: the mean first, then the mean squared deviation.
    double s = 0.0, c = 0.0; // Kahan-compensated for long inputs
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - m;
        double y = d * d - c;
        double t = s + y;
        c = (t - s) - y;
        s = t;
    }
    return sqrt(s / (double)n);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void sp_lg_sort(double *x, size_t n) {
    if (n > 1)
        qsort(x, n, sizeof *x, cmp_double);
}

sp_err sp_lg_summarize(const double *x, size_t n, const double *pcts, int n_pcts,
                       sp_lg_summary *out) {
    if (n_pcts < 0 || n_pcts > SP_LG_MAX_PCTS)
        return SP_ERR_INVALID;
    for (int i = 0; i < n_pcts; i++)
        if (!(pcts[i] >= 0.0 && pcts[i] <= 100.0))
            return SP_ERR_INVALID;
    double *s = NULL;
    if (n) {
        s = malloc(n * sizeof *s);
        if (!s)
            return SP_ERR_NOMEM;
        memcpy(s, x, n * sizeof *s);
        sp_lg_sort(s, n);
    }
    sp_lg_summary r = {.n = n, .n_pcts = n_pcts};
    r.mean = sp_lg_mean(x, n);
    r.std = sp_lg_std(x, n);
    r.median = sp_lg_median_sorted(s, n);
    r.min = n ? s[0] : 0.0;
    r.max = n ? s[n - 1] : 0.0;
    for (int i = 0; i < n_pcts; i++) {
        r.pct_q[i] = pcts[i];
        r.pct_val[i] = sp_lg_percentile_sorted(s, n, pcts[i]);
    }
    free(s);
    *out = r;
    return SP_OK;
}

/* ---- Goodput ------------------------------------------------------------------------------ */

bool sp_lg_slo_any(const sp_lg_slo *slo) {
    return slo->ttft_ms >= 0 || slo->tpot_ms >= 0 || slo->e2el_ms >= 0;
}

sp_err sp_lg_slo_parse(const char *pair, sp_lg_slo *slo, sp_diag *d) {
    const char *colon = strchr(pair, ':');
    if (!colon)
        return sp_diag_set(d, SP_ERR_INVALID, 0, "'%s' is not NAME:MILLISECONDS", pair);
    size_t nlen = (size_t)(colon - pair);
    char *end = NULL;
    double v = strtod(colon + 1, &end);
    if (end == colon + 1 || *end || !(v >= 0.0) || !isfinite(v))
        return sp_diag_set(d, SP_ERR_INVALID, (uint64_t)nlen + 1,
                           "'%s': the objective must be a non-negative number of milliseconds",
                           pair);
    double *dst = NULL;
    if (nlen == 4 && !strncasecmp(pair, "ttft", 4))
        dst = &slo->ttft_ms;
    else if (nlen == 4 && !strncasecmp(pair, "tpot", 4))
        dst = &slo->tpot_ms;
    else if (nlen == 4 && !strncasecmp(pair, "e2el", 4))
        dst = &slo->e2el_ms;
    else
        return sp_diag_set(d, SP_ERR_INVALID, 0, "'%.*s' is not an objective (ttft, tpot or e2el)",
                           (int)nlen, pair);
    *dst = v;
    return SP_OK;
}

bool sp_lg_slo_met(const sp_lg_slo *slo, double ttft_s, double tpot_s, double e2el_s) {
    if (slo->ttft_ms >= 0 && !(slo->ttft_ms / 1000.0 >= ttft_s))
        return false;
    if (slo->tpot_ms >= 0 && !(slo->tpot_ms / 1000.0 >= tpot_s))
        return false;
    if (slo->e2el_ms >= 0 && !(slo->e2el_ms / 1000.0 >= e2el_s))
        return false;
    return true;
}

/* ---- Random numbers ----------------------------------------------------------------------- */

void sp_lg_rng_seed(sp_lg_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = sp_splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t sp_lg_rng_next(sp_lg_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double sp_lg_rng_uniform(sp_lg_rng *r) {
    return (double)(sp_lg_rng_next(r) >> 11) * 0x1.0p-53;
}

int64_t sp_lg_rng_range(sp_lg_rng *r, int64_t lo, int64_t hi) {
    SP_ASSERT(lo <= hi);
    uint64_t span = (uint64_t)hi - (uint64_t)lo + 1; // 0 means the full 64-bit range
    if (span == 0)
        return (int64_t)sp_lg_rng_next(r);
    uint64_t limit = UINT64_MAX - UINT64_MAX % span; // reject the biased tail
    uint64_t v;
    do
        v = sp_lg_rng_next(r);
    while (v >= limit);
    return (int64_t)((uint64_t)lo + v % span);
}

double sp_lg_rng_normal(sp_lg_rng *r) {
    for (;;) {
        double u = 2.0 * sp_lg_rng_uniform(r) - 1.0;
        double v = 2.0 * sp_lg_rng_uniform(r) - 1.0;
        double s = u * u + v * v;
        if (s > 0.0 && s < 1.0)
            return u * sqrt(-2.0 * log(s) / s);
    }
}

double sp_lg_rng_exponential(sp_lg_rng *r, double mean) {
    // 1 - U is in (0, 1], so the log is finite.
    return -mean * log(1.0 - sp_lg_rng_uniform(r));
}

double sp_lg_rng_gamma(sp_lg_rng *r, double shape, double scale) {
    SP_ASSERT(shape > 0.0 && scale > 0.0);
    if (shape < 1.0) {
        double g = sp_lg_rng_gamma(r, shape + 1.0, 1.0);
        double u = 1.0 - sp_lg_rng_uniform(r); // (0, 1]
        return g * pow(u, 1.0 / shape) * scale;
    }
    double dd = shape - 1.0 / 3.0;
    double c = 1.0 / sqrt(9.0 * dd);
    for (;;) {
        double x, v;
        do {
            x = sp_lg_rng_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = 1.0 - sp_lg_rng_uniform(r);
        double x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2)
            return dd * v * scale;
        if (log(u) < 0.5 * x2 + dd * (1.0 - v + log(v)))
            return dd * v * scale;
    }
}

sp_err sp_lg_arrivals(sp_lg_rng *r, size_t n, double rate, double burstiness, double *t_s) {
    if (!(rate > 0.0) || !(burstiness > 0.0))
        return SP_ERR_INVALID;
    if (isinf(rate)) {
        for (size_t i = 0; i < n; i++)
            t_s[i] = 0.0;
        return SP_OK;
    }
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        double gap = isinf(burstiness) ? 1.0 / rate
                                       : sp_lg_rng_gamma(r, burstiness, 1.0 / (rate * burstiness));
        acc += gap;
        t_s[i] = acc;
    }
    if (n && acc > 0.0) {
        double f = ((double)n / rate) / acc;
        for (size_t i = 0; i < n; i++)
            t_s[i] *= f;
    }
    return SP_OK;
}
