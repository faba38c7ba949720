/* The step-time model (steptime.h): a ridge-regularized, Huber-weighted least-squares fit of
 * relative errors over a window of measured steps. The features are scaled by the prior's
 * coefficients, so the prior is the point (1, ..., 1) and the ridge pulls every scaled
 * coefficient toward 1 with the weight of SP_STEPTIME_PRIOR_WEIGHT steps of that feature's
 * typical size. */
#include "sched/steptime.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum { IRLS_PASSES = 3 };

void sp_steptime_prior(double weight_bytes, double bw, double macs_per_token, double macs_per_out,
                       double macs_per_us, double flops_per_attn, double flops_per_us,
                       double out[SP_STEPTIME_NF]) {
    out[0] = weight_bytes / bw;
    out[1] = out[2] = macs_per_token / macs_per_us;
    out[3] = macs_per_out / macs_per_us;
    out[4] = flops_per_attn / flops_per_us;
}

void sp_steptime_init(sp_steptime *m, const double prior[SP_STEPTIME_NF]) {
    memset(m, 0, sizeof *m);
    for (int j = 0; j < SP_STEPTIME_NF; j++)
        m->prior[j] = m->coef[j] = prior[j] > 0 ? prior[j] : 0;
}

static void features(sp_step_shape s, double x[SP_STEPTIME_NF]) {
    x[0] = 1;
    x[1] = s.n_decode;
    x[2] = s.n_prefill;
    x[3] = s.n_out;
    x[4] = (double)s.n_attn;
}

static double dot(const double *a, const double *b) {
    double t = 0;
    for (int j = 0; j < SP_STEPTIME_NF; j++)
        t += a[j] * b[j];
    return t;
}

double sp_steptime_predict(const sp_steptime *m, sp_step_shape s) {
    double x[SP_STEPTIME_NF];
    features(s, x);
    const double t = dot(m->coef, x);
    return t > 0 ? t : 0;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Solves a x = b (n x n, symmetric positive definite by construction) by Gaussian elimination
 * with partial pivoting; a and b are destroyed. Returns 0, or -1 if singular. */
static int solve(double a[SP_STEPTIME_NF][SP_STEPTIME_NF], double b[SP_STEPTIME_NF],
                 double x[SP_STEPTIME_NF]) {
    const int n = SP_STEPTIME_NF;
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(a[r][c]) > fabs(a[p][c]))
                p = r;
        if (!(fabs(a[p][c]) > 1e-300))
            return -1;
        if (p != c) {
            for (int k = 0; k < n; k++) {
                const double t = a[c][k];
                a[c][k] = a[p][k], a[p][k] = t;
            }
            const double t = b[c];
            b[c] = b[p], b[p] = t;
        }
        for (int r = c + 1; r < n; r++) {
            const double f = a[r][c] / a[c][c];
            for (int k = c; k < n; k++)
                a[r][k] -= f * a[c][k];
            b[r] -= f * b[c];
        }
    }
    for (int r = n - 1; r >= 0; r--) {
        double t = b[r];
        for (int k = r + 1; k < n; k++)
            t -= a[r][k] * x[k];
        x[r] = t / a[r][r];
    }
    return 0;
}

/* One weighted ridge fit of the scaled coefficients theta (prior = 1) over the window, in
 * relative terms: each step's equation is divided by its measured time, so that the fit
 * minimizes relative errors (a 20 ms decode step and a 2 s prefill step count alike, and a
 * step slowed a thousandfold pulls with a residual of at most 1). No coefficient is negative (a
 * step cannot get faster for holding more): a feature whose fitted coefficient would be is held
 * at 0 and the others are fitted again without it (an active-set solution of the non-negative
 * problem, at most SP_STEPTIME_NF solves). */
static int fit(const sp_steptime *m, const double *w, const double *lambda,
               double theta[SP_STEPTIME_NF]) {
    double a0[SP_STEPTIME_NF][SP_STEPTIME_NF] = {{0}}, b0[SP_STEPTIME_NF] = {0};
    for (int i = 0; i < m->n; i++) {
        double z[SP_STEPTIME_NF];
        for (int j = 0; j < SP_STEPTIME_NF; j++)
            z[j] = m->x[i][j] * m->prior[j] / m->y[i];
        for (int j = 0; j < SP_STEPTIME_NF; j++) {
            for (int k = 0; k < SP_STEPTIME_NF; k++)
                a0[j][k] += w[i] * z[j] * z[k];
            b0[j] += w[i] * z[j];
        }
    }
    for (int j = 0; j < SP_STEPTIME_NF; j++) {
        a0[j][j] += lambda[j];
        b0[j] += lambda[j];
    }
    bool held[SP_STEPTIME_NF] = {false};
    for (int round = 0; round < SP_STEPTIME_NF; round++) {
        // The system with the held features' rows and columns replaced by theta_j = 0.
        double a[SP_STEPTIME_NF][SP_STEPTIME_NF], b[SP_STEPTIME_NF];
        for (int j = 0; j < SP_STEPTIME_NF; j++) {
            for (int k = 0; k < SP_STEPTIME_NF; k++)
                a[j][k] = held[j] || held[k] ? (double)(j == k) : a0[j][k];
            b[j] = held[j] ? 0 : b0[j];
        }
        if (solve(a, b, theta))
            return -1;
        bool negative = false;
        for (int j = 0; j < SP_STEPTIME_NF; j++)
            if (!held[j] && theta[j] < 0)
                held[j] = negative = true;
        if (!negative)
            return 0;
    }
    return 0;
}

/* Huber weights of the window's steps under the scaled coefficients theta: 1 within k = 1.345
 * robust scales of the relative residuals (1.4826 MAD, at least 1%), k / |r| beyond. */
static void huber_weights(const sp_steptime *m, const double *theta, double *w) {
    double r[SP_STEPTIME_WINDOW], abs_r[SP_STEPTIME_WINDOW];
    for (int i = 0; i < m->n; i++) {
        double z = 0;
        for (int j = 0; j < SP_STEPTIME_NF; j++)
            z += theta[j] * m->prior[j] * m->x[i][j];
        r[i] = abs_r[i] = fabs(m->y[i] - z) / m->y[i];
    }
    const double k = 1.345 * fmax(1.4826 * median(abs_r, m->n), 0.01);
    for (int i = 0; i < m->n; i++)
        w[i] = r[i] <= k ? 1 : k / r[i];
}

static void refit(sp_steptime *m) {
    // Too few steps to tell the features apart: the prior, scaled by the median ratio of the
    // measured times to its predictions.
    if (m->n < SP_STEPTIME_MIN_FIT) {
        double ratio[SP_STEPTIME_WINDOW];
        int k = 0;
        for (int i = 0; i < m->n; i++) {
            const double p = dot(m->prior, m->x[i]);
            if (p > 0)
                ratio[k++] = m->y[i] / p;
        }
        if (k > 0) {
            const double scale = median(ratio, k);
            for (int j = 0; j < SP_STEPTIME_NF; j++)
                m->coef[j] = m->prior[j] * scale;
        }
        return;
    }
    // The ridge: PRIOR_WEIGHT steps of each feature at its RMS size (relative to the steps'
    // times) over the window, with a floor, so that a feature that is always 0 keeps its prior.
    double lambda[SP_STEPTIME_NF];
    for (int j = 0; j < SP_STEPTIME_NF; j++) {
        double ms = 0;
        for (int i = 0; i < m->n; i++) {
            const double z = m->x[i][j] * m->prior[j] / m->y[i];
            ms += z * z / m->n;
        }
        lambda[j] = SP_STEPTIME_PRIOR_WEIGHT * (ms + 1e-4) + 1e-12;
    }
    // A plain (relative) fit, then reweighting passes.
    double w[SP_STEPTIME_WINDOW], theta[SP_STEPTIME_NF];
    for (int i = 0; i < m->n; i++)
        w[i] = 1;
    for (int pass = 0; pass <= IRLS_PASSES; pass++) {
        if (pass)
            huber_weights(m, theta, w);
        if (fit(m, w, lambda, theta))
            return; // keep the previous coefficients
    }
    for (int j = 0; j < SP_STEPTIME_NF; j++)
        m->coef[j] = theta[j] > 0 ? theta[j] * m->prior[j] : 0;
}

void sp_steptime_observe(sp_steptime *m, sp_step_shape s, double measured_us) {
    if (!(measured_us > 0) || !isfinite(measured_us))
        return;
    const double predicted = sp_steptime_predict(m, s);
    m->rel_err[m->at] = fabs(predicted - measured_us) / measured_us;
    features(s, m->x[m->at]);
    m->y[m->at] = measured_us;
    m->at = (m->at + 1) % SP_STEPTIME_WINDOW;
    if (m->n < SP_STEPTIME_WINDOW)
        m->n++;
    m->n_observed++;
    refit(m);
}

double sp_steptime_median_error(const sp_steptime *m) {
    if (m->n == 0)
        return 0;
    double v[SP_STEPTIME_WINDOW];
    memcpy(v, m->rel_err, sizeof(double) * (size_t)m->n);
    return median(v, m->n);
}
