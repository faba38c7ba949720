/* Statistics of a serving benchmark: percentiles, mean and standard deviation as numpy computes
 * them (the numbers `vllm bench serve` reports), goodput, and the seeded random numbers behind
 * arrival processes (a xoshiro256** generator, exponential and gamma variates).
 *
 * Everything here is pure computation on caller-owned memory, callable from any thread. */
#ifndef SP_LOADGEN_STATS_H
#define SP_LOADGEN_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* ---- Descriptive statistics ------------------------------------------------------------- */

/* The q-th percentile (0 <= q <= 100) of sorted[n] (ascending) with numpy's default "linear"
 * method: virtual index (n - 1) * q / 100, interpolated between its neighbours the way
 * numpy's _lerp does (from the upper neighbour when the fraction is >= 0.5), so results match
 * np.percentile bit for bit on the same doubles. Returns 0 for n == 0 (vLLM reports
 * np.percentile(x or 0) for empty lists). */
double sp_lg_percentile_sorted(const double *sorted, size_t n, double q);

/* The median as np.median computes it: the middle element, or the mean of the two middle
 * elements ((a + b) / 2). sorted[n] ascending; 0 for n == 0. */
double sp_lg_median_sorted(const double *sorted, size_t n);

/* Arithmetic mean and population standard deviation (numpy's default ddof = 0) of x[n];
 * both 0 for n == 0. */
double sp_lg_mean(const double *x, size_t n);
double sp_lg_std(const double *x, size_t n);

/* Sorts x[n] ascending in place (NaN-free input). */
void sp_lg_sort(double *x, size_t n);

#define SP_LG_MAX_PCTS 8

/* Summary of one latency metric, in the unit of the input. */
typedef struct sp_lg_summary {
    size_t n;
    double mean, median, std, min, max;
    int n_pcts;
    double pct_q[SP_LG_MAX_PCTS];   // the percentiles asked for (e.g. 99)
    double pct_val[SP_LG_MAX_PCTS]; // their values
} sp_lg_summary;

/* Summarizes x[n] (left unchanged; a sorted copy is made) at the n_pcts percentiles pcts[]
 * (n_pcts <= SP_LG_MAX_PCTS, each in [0, 100]). SP_ERR_NOMEM when the copy cannot be made,
 * SP_ERR_INVALID for bad percentiles; *out is written only on success. */
sp_err sp_lg_summarize(const double *x, size_t n, const double *pcts, int n_pcts,
                       sp_lg_summary *out) SP_MUST_USE;

/* ---- Goodput ------------------------------------------------------------------------------ */

/* Service-level objectives in milliseconds; a value < 0 means "not given". */
typedef struct sp_lg_slo {
    double ttft_ms, tpot_ms, e2el_ms;
} sp_lg_slo;

/* True when at least one objective is given. */
bool sp_lg_slo_any(const sp_lg_slo *slo);

/* Parses one "ttft:MS", "tpot:MS" or "e2el:MS" pair into slo. SP_ERR_INVALID (message in d)
 * for an unknown name, a missing or negative number. */
sp_err sp_lg_slo_parse(const char *pair, sp_lg_slo *slo, sp_diag *d) SP_MUST_USE;

/* Whether one successful request meets every given objective (times in seconds, as vLLM
 * compares them: SLO >= value). tpot_s is 0 for requests of at most one output token. */
bool sp_lg_slo_met(const sp_lg_slo *slo, double ttft_s, double tpot_s, double e2el_s);

/* ---- Random numbers and arrivals ---------------------------------------------------------- */

/* xoshiro256** seeded through splitmix64: the same seed gives the same stream everywhere. */
typedef struct sp_lg_rng {
    uint64_t s[4];
} sp_lg_rng;

void sp_lg_rng_seed(sp_lg_rng *r, uint64_t seed);
uint64_t sp_lg_rng_next(sp_lg_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double sp_lg_rng_uniform(sp_lg_rng *r);
/* Uniform integer in [lo, hi] (lo <= hi), without modulo bias. */
int64_t sp_lg_rng_range(sp_lg_rng *r, int64_t lo, int64_t hi);
/* Standard normal (Marsaglia's polar method). */
double sp_lg_rng_normal(sp_lg_rng *r);
/* Exponential with the given mean (> 0). */
double sp_lg_rng_exponential(sp_lg_rng *r, double mean);
/* Gamma(shape k > 0, scale theta > 0): mean k theta, variance k theta^2. Marsaglia and
 * Tsang's squeeze method for k >= 1; k < 1 by boosting: Gamma(k + 1) * U^(1/k). */
double sp_lg_rng_gamma(sp_lg_rng *r, double shape, double scale);

/* Arrival times of n requests at rate (requests/s) with the given burstiness, like vLLM:
 * gaps drawn from Gamma(shape = burstiness, scale = 1 / (rate * burstiness)) (mean 1/rate,
 * variance 1/(burstiness rate^2); burstiness 1 is a Poisson process), accumulated, then scaled
 * so the last arrival is exactly n / rate (vLLM does this to stabilize throughput across
 * seeds). rate = INFINITY gives all zeros. burstiness = INFINITY gives evenly spaced arrivals.
 * Writes t_s[n] (seconds from the start, non-decreasing). SP_ERR_INVALID for rate <= 0 or
 * burstiness <= 0. */
sp_err sp_lg_arrivals(sp_lg_rng *r, size_t n, double rate, double burstiness,
                      double *t_s) SP_MUST_USE;

#endif
