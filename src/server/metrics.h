/* Server metrics in the Prometheus text format (version 0.0.4), with vLLM's meanings under the
 * spindle_ prefix: latency histograms observed by the API layer, and the engine's counters and
 * gauges read at scrape time. Owned by the HTTP loop thread. */
#ifndef SP_SERVER_METRICS_H
#define SP_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "sched/engine.h"

#define SP_HIST_MAX_BUCKETS 24

typedef struct sp_hist {
    const char *name;
    const char *help;
    int n_buckets;
    double bounds[SP_HIST_MAX_BUCKETS]; // upper bounds, ascending; +Inf is implicit
    uint64_t counts[SP_HIST_MAX_BUCKETS + 1];
    double sum;
    uint64_t count;
} sp_hist;

typedef struct sp_metrics {
    sp_hist ttft;       // submission to first token
    sp_hist itl;        // between consecutive tokens of a request, as the server sees them
    sp_hist e2e;        // submission to finish
    sp_hist queue;      // submission to first admission
    sp_hist queue_prio[3]; // the same by priority class: urgent (< 0), normal (0), low (> 0)
    uint64_t prompt_tokens;     // of finished requests
    uint64_t generation_tokens; // of finished requests
    uint64_t requests[5];       // finished requests by sp_finish
    uint64_t http_requests;     // HTTP requests answered
    uint64_t http_errors;       // of which 4xx/5xx
    uint64_t batch_lines[2];    // batch lines recorded: answered 200, answered with an error
    // Gauges the batch runner keeps: batches in progress, their lines in flight, and lines
    // still to run (pending, in flight included).
    int64_t batches_in_progress, batch_lines_running, batch_lines_pending;
} sp_metrics;

void sp_metrics_init(sp_metrics *m);
void sp_hist_observe(sp_hist *h, double v);

/* Renders everything (plus the engine's stats) as Prometheus text into a heap buffer. */
char *sp_metrics_render(const sp_metrics *m, const sp_engine_stats *es, size_t *len);

#endif
