/* The step-time model: predicts how long an engine step will take from what it holds, and learns
 * from every step it measures. The engine sizes each step's prefill chunks with it (stall-free
 * steps: decodes get their token every step, prefill fills the rest of a time budget), and
 * estimates the wait of requests with a deadline.
 *
 * A step's time is modelled as linear in five features of its contents:
 *
 *   t = c[0] + c[1] n_decode + c[2] n_prefill + c[3] n_out + c[4] n_attn
 *
 *   c[0]  what every step costs whatever it holds: reading the weights once, fixed overheads;
 *   c[1]  one decode token (a sequence's single new token) through every layer;
 *   c[2]  one prompt token (of a prefill chunk) through every layer;
 *   c[3]  one row of logits (the output matrix) and its sampling;
 *   c[4]  one KV position attended by one token (n_attn sums, over the step's tokens, the
 *         positions each attends to).
 *
 * The coefficients are fitted by weighted least squares of the relative errors (each step's
 * error divided by its measured time) over the last SP_STEPTIME_WINDOW measured steps, with no
 * coefficient negative, pulled toward a prior (from the model's size and nominal machine
 * figures) by a ridge term worth a hundredth of a step (SP_STEPTIME_PRIOR_WEIGHT). The first
 * prediction is the prior's; until SP_STEPTIME_MIN_FIT steps are measured the prior is only
 * scaled by them; a direction the window does not vary (decode-only traffic has n_out =
 * n_tokens) keeps the prior's split, while the directions the data do determine are not biased
 * by it. Huber weights, refined over a few reweighting passes, bound the pull of outliers (a
 * step slowed by another process on the machine). All in microseconds. Not thread safe: the
 * engine thread owns it. */
#ifndef SP_SCHED_STEPTIME_H
#define SP_SCHED_STEPTIME_H

#include <stdint.h>

enum {
    SP_STEPTIME_NF = 5,       // features
    SP_STEPTIME_WINDOW = 128, // steps the fit looks at
    SP_STEPTIME_MIN_FIT = 8,  // steps before the features are fitted (until then the prior is
                              // scaled as a whole)
};
#define SP_STEPTIME_PRIOR_WEIGHT 0.01 // steps' worth of each feature the prior counts for

/* What a step holds. */
typedef struct sp_step_shape {
    int32_t n_decode;  // decode tokens (chunks of one token)
    int32_t n_prefill; // prompt tokens (chunks of more)
    int32_t n_out;     // rows of logits computed
    int64_t n_attn;   // sum over the tokens of the KV positions each attends to
} sp_step_shape;

typedef struct sp_steptime {
    double prior[SP_STEPTIME_NF]; // prior coefficients (us per unit)
    double coef[SP_STEPTIME_NF];  // the current fit
    double x[SP_STEPTIME_WINDOW][SP_STEPTIME_NF]; // ring of the window's features
    double y[SP_STEPTIME_WINDOW];                 // and measured times
    double rel_err[SP_STEPTIME_WINDOW]; // |predicted - measured| / measured, predicted before
    int n;                              // steps in the ring (<= WINDOW)
    int at;                             // next slot
    uint64_t n_observed;
} sp_steptime;

/* The coefficients of a model from its shape and nominal machine figures: weight_bytes read
 * once per step at bw bytes/us; macs_per_token multiply-adds per token (decode or prompt)
 * through the matrices and macs_per_out per logits row at macs_per_us; flops_per_attn per
 * attended position at flops_per_us. Every argument > 0. */
void sp_steptime_prior(double weight_bytes, double bw, double macs_per_token, double macs_per_out,
                       double macs_per_us, double flops_per_attn, double flops_per_us,
                       double out[SP_STEPTIME_NF]);

/* A model with no observations, predicting with prior (SP_STEPTIME_NF coefficients >= 0). */
void sp_steptime_init(sp_steptime *m, const double prior[SP_STEPTIME_NF]);

/* The predicted duration of a step holding s, in us (>= 0). */
double sp_steptime_predict(const sp_steptime *m, sp_step_shape s);

/* Records a measured step (measured_us > 0; others are ignored) and refits. The prediction the
 * model made for it before this call goes into the error statistics. */
void sp_steptime_observe(sp_steptime *m, sp_step_shape s, double measured_us);

/* The median of |predicted - measured| / measured over the window's steps (predictions made
 * before each step was measured); 0 with no observations. */
double sp_steptime_median_error(const sp_steptime *m);

/* The attended positions of a chunk of n tokens at positions [pos, pos + n) of one sequence:
 * token i attends to pos + i + 1 positions (itself and those before). */
static inline int64_t sp_steptime_chunk_attn(int64_t pos, int64_t n) {
    return n * pos + n * (n + 1) / 2;
}

#endif
