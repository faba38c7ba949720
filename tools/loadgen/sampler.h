/* Samples the server's KV cache use and preemption count over a run: a thread that reads
 * /metrics every period (spindle_kv_cache_usage_perc, spindle_num_preemptions_total) until
 * stopped. For servers without these metrics the series stays empty. */
#ifndef SP_LOADGEN_SAMPLER_H
#define SP_LOADGEN_SAMPLER_H

#include <stddef.h>

#include "base/err.h"
#include "loadgen/client.h"

typedef struct sp_lg_series {
    double *t;           // seconds since the sampler started
    double *kv_used;     // fraction of KV blocks held by requests
    double *preemptions; // preemptions since the sampler started
    size_t n;
} sp_lg_series;

typedef struct sp_lg_sampler sp_lg_sampler;

/* Starts sampling t every period_s seconds (> 0). SP_ERR_NOMEM if a thread or memory could
 * not be had. */
sp_err sp_lg_sampler_start(const sp_lg_target *t, double period_s, sp_lg_sampler **out) SP_MUST_USE;

/* Stops the thread, moves the samples into *series (caller frees with sp_lg_series_free) and
 * frees the sampler. */
void sp_lg_sampler_stop(sp_lg_sampler *s, sp_lg_series *series);

void sp_lg_series_free(sp_lg_series *s);

#endif
