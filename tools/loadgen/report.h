/* Benchmark results: the metrics `vllm bench serve` computes from per-request results, its
 * printed report, its result JSON (same field names), Prometheus text parsing for the
 * server's own counters, and the SVG plot.
 *
 * Pure functions over caller-owned data; any thread. */
#ifndef SP_LOADGEN_REPORT_H
#define SP_LOADGEN_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "base/err.h"
#include "loadgen/client.h"
#include "loadgen/stats.h"

typedef struct sp_lg_metrics {
    size_t completed, failed;
    int64_t total_input, total_output; // over successful requests
    double duration_s;
    double request_throughput;     // completed / duration
    double request_goodput;        // requests meeting every SLO / duration
    bool has_goodput;              // an SLO was given
    double output_throughput;      // output tokens / duration
    double total_token_throughput; // (input + output tokens) / duration
    // Milliseconds. TPOT = (E2EL - TTFT) / (output tokens - 1) for requests of > 1 token;
    // ITL pools every inter-chunk gap of every request.
    sp_lg_summary ttft_ms, tpot_ms, itl_ms, e2el_ms;
    double max_output_tokens_per_s; // busiest one-second bucket from the first start
    int max_concurrent_requests;    // most requests in flight at once
} sp_lg_metrics;

/* Computes the metrics of n results over duration_s (vLLM's calculate_metrics). slo may be
 * NULL. pcts[n_pcts] are the percentiles to report (e.g. {99}). SP_ERR_NOMEM; *m is
 * written only on success. */
sp_err sp_lg_metrics_compute(const sp_lg_result *res, size_t n, double duration_s,
                             const sp_lg_slo *slo, const double *pcts, int n_pcts,
                             sp_lg_metrics *m) SP_MUST_USE;

/* The sum of every sample of metric `name` (any labels) in Prometheus text exposition; false
 * when there is none. */
bool sp_lg_prom_sum(const char *text, const char *name, double *out);

/* Spindle's counters, before and after a run. */
typedef struct sp_lg_server_counters {
    bool valid; // the server exposes spindle_* metrics
    double preemptions, prefix_hit_tokens, prompt_tokens_computed, engine_steps, prompt_tokens,
        generation_tokens, spec_draft_tokens, spec_accepted_tokens;
} sp_lg_server_counters;

/* Reads the counters from a /metrics body. */
void sp_lg_server_counters_parse(const char *text, sp_lg_server_counters *c);

/* The run's settings, for the report and the JSON. */
typedef struct sp_lg_run_info {
    const char *date;     // "YYYYmmdd-HHMMSS"
    const char *backend;  // "openai" or "openai-chat"
    const char *endpoint; // path
    const char *label;    // may be NULL
    const char *model_id;
    const char *dataset; // "random", "shared-prefix", "multi-turn" or the file
    int num_prompts;
    double request_rate; // INFINITY for all at once
    double burstiness;
    int max_concurrency; // 0: none
    bool timed;          // arrivals from trace timestamps
} sp_lg_run_info;

/* Prints the report in vLLM's layout; delta (may be NULL or invalid) adds the server's
 * counters over the run. */
void sp_lg_report_print(FILE *f, const sp_lg_run_info *info, const sp_lg_metrics *m,
                        const sp_lg_server_counters *delta);

/* The result JSON (vLLM's field names; per-request lists in seconds like vLLM's; the server
 * counters under "server_metrics"). Returns a new reference or NULL when out of memory. */
json_t *sp_lg_result_json(const sp_lg_run_info *info, const sp_lg_metrics *m,
                          const sp_lg_result *res, size_t n, const sp_lg_server_counters *delta);

/* ---- Plot ---------------------------------------------------------------------------------- */

/* One run of a plot: its label and per-request values in milliseconds (borrowed). */
typedef struct sp_lg_plot_run {
    const char *label; // e.g. "rate 4"
    const double *ttft_ms, *tpot_ms, *e2el_ms;
    size_t n_ttft, n_tpot, n_e2el;
    const sp_lg_metrics *m;
} sp_lg_plot_run;

/* Writes an SVG: the CDFs of TTFT, TPOT and E2EL of every run, and with two or more runs a
 * throughput-latency panel (output token throughput against median and p99 TTFT and mean
 * TPOT). SP_ERR_IO when the file cannot be written. */
sp_err sp_lg_plot_svg(const char *path, const sp_lg_plot_run *runs, int n_runs,
                      const char *title) SP_MUST_USE;

#endif
