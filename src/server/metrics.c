#include "server/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void hist_init(sp_hist *h, const char *name, const char *help, const double *bounds,
                      int n) {
    memset(h, 0, sizeof *h);
    h->name = name;
    h->help = help;
    h->n_buckets = n;
    memcpy(h->bounds, bounds, (size_t)n * sizeof *bounds);
}

void sp_metrics_init(sp_metrics *m) {
    memset(m, 0, sizeof *m);
    // vLLM's bucket boundaries, so dashboards built for it read these the same way.
    static const double ttft[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
                                  0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0,
                                  640.0, 2560.0};
    static const double itl[] = {0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2,  0.3,  0.4, 0.5,
                                 0.75, 1.0,   2.5,  5.0,   7.5,  10.0, 20.0, 40.0, 80.0};
    static const double e2e[] = {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,    10.0,
                                 15.0, 20.0, 30.0, 40.0, 50.0,  60.0,  120.0, 240.0,  480.0,
                                 960.0, 1920.0, 7680.0};
    hist_init(&m->ttft, "spindle_time_to_first_token_seconds",
              "Time from request arrival to its first generated token.", ttft,
              (int)(sizeof ttft / sizeof *ttft));
    hist_init(&m->itl, "spindle_inter_token_latency_seconds",
              "Time between consecutive generated tokens of a request.", itl,
              (int)(sizeof itl / sizeof *itl));
    hist_init(&m->e2e, "spindle_e2e_request_latency_seconds",
              "Time from request arrival to its end.", e2e, (int)(sizeof e2e / sizeof *e2e));
    hist_init(&m->queue, "spindle_request_queue_time_seconds",
              "Time a request waited before it was first scheduled.", e2e,
              (int)(sizeof e2e / sizeof *e2e));
    for (int i = 0; i < 3; i++)
        hist_init(&m->queue_prio[i], "spindle_request_queue_time_by_priority_seconds",
                  "Queue time by priority class (urgent: priority < 0, normal: 0, low: > 0).",
                  e2e, (int)(sizeof e2e / sizeof *e2e));
}

void sp_hist_observe(sp_hist *h, double v) {
    int i = 0;
    while (i < h->n_buckets && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

typedef struct out_buf {
    char *p;
    size_t len, cap;
    bool oom;
} out_buf;

static void put(out_buf *b, const char *fmt, ...) SP_PRINTF(2, 3);

static void put(out_buf *b, const char *fmt, ...) {
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* One histogram's samples; label is "" or `name="value",` (with the comma). */
static void put_hist_samples(out_buf *b, const sp_hist *h, const char *label) {
    uint64_t cum = 0;
    for (int i = 0; i < h->n_buckets; i++) {
        cum += h->counts[i];
        put(b, "%s_bucket{%sle=\"%g\"} %llu\n", h->name, label, h->bounds[i],
            (unsigned long long)cum);
    }
    cum += h->counts[h->n_buckets];
    size_t ll = strlen(label);
    // The sum and count carry the label without its trailing comma.
    put(b, "%s_bucket{%sle=\"+Inf\"} %llu\n", h->name, label, (unsigned long long)cum);
    if (ll)
        put(b, "%s_sum{%.*s} %.6f\n%s_count{%.*s} %llu\n", h->name, (int)ll - 1, label, h->sum,
            h->name, (int)ll - 1, label, (unsigned long long)h->count);
    else
        put(b, "%s_sum %.6f\n%s_count %llu\n", h->name, h->sum, h->name,
            (unsigned long long)h->count);
}

static void put_hist(out_buf *b, const sp_hist *h) {
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
    put_hist_samples(b, h, "");
}

static void put_scalar(out_buf *b, const char *type, const char *name, const char *help,
                       double v) {
    put(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

char *sp_metrics_render(const sp_metrics *m, const sp_engine_stats *es, size_t *len) {
    out_buf b = {.cap = 8192};
    b.p = malloc(b.cap);
    if (!b.p)
        return NULL;
    put_hist(&b, &m->ttft);
    put_hist(&b, &m->itl);
    put_hist(&b, &m->e2e);
    put_hist(&b, &m->queue);
    const sp_hist *qp = m->queue_prio;
    put(&b, "# HELP %s %s\n# TYPE %s histogram\n", qp->name, qp->help, qp->name);
    put_hist_samples(&b, &qp[0], "priority=\"urgent\",");
    put_hist_samples(&b, &qp[1], "priority=\"normal\",");
    put_hist_samples(&b, &qp[2], "priority=\"low\",");
    put_scalar(&b, "counter", "spindle_prompt_tokens_total",
               "Prompt tokens of finished requests.", (double)m->prompt_tokens);
    put_scalar(&b, "counter", "spindle_generation_tokens_total",
               "Generated tokens of finished requests.", (double)m->generation_tokens);
    put(&b, "# HELP spindle_request_success_total Finished requests by finish reason.\n"
            "# TYPE spindle_request_success_total counter\n");
    static const char *const reasons[5] = {"none", "stop", "length", "abort", "error"};
    for (int i = 1; i < 5; i++)
        put(&b, "spindle_request_success_total{finished_reason=\"%s\"} %llu\n", reasons[i],
            (unsigned long long)m->requests[i]);
    put_scalar(&b, "counter", "spindle_http_requests_total", "HTTP requests answered.",
               (double)m->http_requests);
    put_scalar(&b, "counter", "spindle_http_errors_total", "HTTP requests answered with an error.",
               (double)m->http_errors);
    put_scalar(&b, "counter", "spindle_spec_decode_num_drafts_total",
               "Decodes that carried speculative draft tokens.", (double)es->spec_drafts);
    put_scalar(&b, "counter", "spindle_spec_decode_num_draft_tokens_total",
               "Draft tokens checked by the target model.", (double)es->spec_draft_tokens);
    put_scalar(&b, "counter", "spindle_spec_decode_num_accepted_tokens_total",
               "Draft tokens accepted.", (double)es->spec_accepted_tokens);
    put(&b, "# HELP spindle_spec_decode_num_accepted_tokens_per_pos_total Draft tokens accepted, "
            "by position in their draft (0: the first).\n"
            "# TYPE spindle_spec_decode_num_accepted_tokens_per_pos_total counter\n");
    for (int i = 0; i < SP_ENGINE_MAX_SPEC; i++)
        put(&b, "spindle_spec_decode_num_accepted_tokens_per_pos_total{position=\"%d\"} %llu\n", i,
            (unsigned long long)es->spec_accepted_per_pos[i]);
    put(&b, "# HELP spindle_spec_decode_draft_length Decodes by the length of their draft, as "
            "chosen (0: none), with speculation on or a predicted output.\n"
            "# TYPE spindle_spec_decode_draft_length histogram\n");
    uint64_t k_cum = 0, k_sum = 0;
    for (int i = 0; i <= SP_ENGINE_MAX_SPEC; i++) {
        k_cum += es->spec_k_hist[i];
        k_sum += (uint64_t)i * es->spec_k_hist[i];
        put(&b, "spindle_spec_decode_draft_length_bucket{le=\"%d\"} %llu\n", i,
            (unsigned long long)k_cum);
    }
    put(&b, "spindle_spec_decode_draft_length_bucket{le=\"+Inf\"} %llu\n"
            "spindle_spec_decode_draft_length_sum %llu\n"
            "spindle_spec_decode_draft_length_count %llu\n",
        (unsigned long long)k_cum, (unsigned long long)k_sum, (unsigned long long)k_cum);
    put_scalar(&b, "counter", "spindle_spec_decode_draft_model_seconds_total",
               "Time spent running the draft model (--draft-model).",
               (double)es->spec_draft_model_us * 1e-6);
    put_scalar(&b, "counter", "spindle_grammar_tokens_total",
               "Tokens chosen under a grammar (structured output).", (double)es->grammar_tokens);
    put_scalar(&b, "counter", "spindle_grammar_masks_total",
               "Of those, the tokens for which the sampler's choice broke the grammar and every "
               "allowed token was found (a full mask).",
               (double)es->grammar_masks);
    put_scalar(&b, "counter", "spindle_grammar_mask_cache_hits_total",
               "Of those masks, the ones found in the cache of grammar states.",
               (double)es->grammar_mask_hits);
    put_scalar(&b, "counter", "spindle_grammar_mask_seconds_total",
               "Time spent on full grammar masks (cached or computed).",
               (double)es->grammar_mask_us * 1e-6);
    put_scalar(&b, "counter", "spindle_num_preemptions_total",
               "Requests preempted to free KV memory (recomputed later).",
               (double)es->preemptions);
    put(&b, "# HELP spindle_preemptions_by_cause_total Preemptions by cause: memory for a decode, "
            "or a more urgent request.\n# TYPE spindle_preemptions_by_cause_total counter\n"
            "spindle_preemptions_by_cause_total{cause=\"memory\"} %llu\n"
            "spindle_preemptions_by_cause_total{cause=\"priority\"} %llu\n",
        (unsigned long long)(es->preemptions - es->preemptions_priority),
        (unsigned long long)es->preemptions_priority);
    put(&b, "# HELP spindle_admission_decisions_total Admission decisions for waiting requests.\n"
            "# TYPE spindle_admission_decisions_total counter\n"
            "spindle_admission_decisions_total{decision=\"admit\"} %llu\n"
            "spindle_admission_decisions_total{decision=\"defer\"} %llu\n",
        (unsigned long long)es->admissions, (unsigned long long)es->deferrals);
    put_scalar(&b, "gauge", "spindle_admission_predicted_peak_tokens",
               "Peak KV use (tokens) the admission policy last predicted (past-future).",
               (double)es->predicted_peak_tokens);
    put_scalar(&b, "gauge", "spindle_kv_cache_peak_used_tokens",
               "Most KV tokens (blocks x block size) in use at once since the start.",
               (double)es->peak_blocks_used * es->block_size);
    put_scalar(&b, "counter", "spindle_engine_steps_total", "Forward passes run by the engine.",
               (double)es->steps);
    put_scalar(&b, "gauge", "spindle_step_time_predicted_seconds",
               "The step-time model's prediction for the last step, made before it ran.",
               es->step_predicted_us * 1e-6);
    put_scalar(&b, "gauge", "spindle_step_time_seconds",
               "The last step's measured time (forward pass and sampling).",
               es->step_measured_us * 1e-6);
    put_scalar(&b, "gauge", "spindle_step_time_budget_seconds",
               "The last step's time budget for prefill next to decodes (0: none).",
               es->step_budget_us * 1e-6);
    put_scalar(&b, "gauge", "spindle_step_time_model_median_error_ratio",
               "Median |predicted - measured| / measured step time over recent steps.",
               es->step_model_median_error);
    put(&b, "# HELP spindle_step_time_model_error_ratio Steps by the step-time model's relative "
            "error |predicted - measured| / measured.\n"
            "# TYPE spindle_step_time_model_error_ratio histogram\n");
    static const char *const err_le[6] = {"0.05", "0.1", "0.2", "0.5", "1", "+Inf"};
    uint64_t cum = 0;
    for (int i = 0; i < 6; i++) {
        cum += es->step_error_hist[i];
        put(&b, "spindle_step_time_model_error_ratio_bucket{le=\"%s\"} %llu\n", err_le[i],
            (unsigned long long)cum);
    }
    put(&b, "spindle_step_time_model_error_ratio_sum %.6f\n"
            "spindle_step_time_model_error_ratio_count %llu\n",
        es->step_error_sum, (unsigned long long)cum);
    put_scalar(&b, "counter", "spindle_prompt_tokens_computed_total",
               "Prompt tokens run through the model (prefill and recompute).",
               (double)es->prompt_tokens);
    put_scalar(&b, "counter", "spindle_prefix_cache_queries_total",
               "Prompt tokens looked up in the prefix cache (admitted requests).",
               (double)es->prefix_query_tokens);
    put_scalar(&b, "counter", "spindle_prefix_cache_hits_total",
               "Prompt tokens served from the prefix cache.", (double)es->cached_tokens);
    put_scalar(&b, "counter", "spindle_kv_cache_evictions_total",
               "Cached KV blocks reclaimed for new data.", (double)es->evictions);
    put_scalar(&b, "counter", "spindle_session_turns_total",
               "Turns of multi-turn sessions (by id or by chat history).",
               (double)es->session_turns);
    put_scalar(&b, "counter", "spindle_session_pins_total",
               "Finished turns whose KV was pinned for the session's next turn.",
               (double)es->session_pins);
    put_scalar(&b, "counter", "spindle_session_pins_hit_total",
               "Pins used by the session's next turn.", (double)es->session_pins_hit);
    put_scalar(&b, "counter", "spindle_session_pins_expired_total",
               "Pins that reached their time-to-live unused.", (double)es->session_pins_expired);
    put_scalar(&b, "counter", "spindle_session_pins_reclaimed_total",
               "Pins given up because admission needed the memory.",
               (double)es->session_pins_reclaimed);
    put_scalar(&b, "gauge", "spindle_kv_cache_blocks_pinned",
               "KV cache blocks held by session pins.", (double)es->n_blocks_pinned);
    put(&b, "# HELP spindle_batch_lines_total Batch lines recorded in their output or error file.\n"
            "# TYPE spindle_batch_lines_total counter\n"
            "spindle_batch_lines_total{result=\"completed\"} %llu\n"
            "spindle_batch_lines_total{result=\"failed\"} %llu\n",
        (unsigned long long)m->batch_lines[0], (unsigned long long)m->batch_lines[1]);
    put_scalar(&b, "gauge", "spindle_batches_in_progress", "Batches validated and running.",
               (double)m->batches_in_progress);
    put_scalar(&b, "gauge", "spindle_batch_lines_running", "Batch lines in flight.",
               (double)m->batch_lines_running);
    put_scalar(&b, "gauge", "spindle_batch_lines_pending",
               "Lines of the batches in progress not yet recorded (in flight included).",
               (double)m->batch_lines_pending);
    put_scalar(&b, "gauge", "spindle_num_requests_running", "Requests in the running batch.",
               (double)es->n_running);
    put_scalar(&b, "gauge", "spindle_num_requests_waiting", "Requests waiting to be scheduled.",
               (double)es->n_waiting);
    put_scalar(&b, "gauge", "spindle_kv_cache_blocks_total", "KV cache blocks in the pool.",
               (double)es->n_blocks);
    put_scalar(&b, "gauge", "spindle_kv_cache_blocks_used", "KV cache blocks held by requests.",
               (double)es->n_blocks_used);
    put_scalar(&b, "gauge", "spindle_kv_cache_blocks_cached",
               "KV cache blocks kept for prefix reuse (evictable).", (double)es->n_blocks_cached);
    put_scalar(&b, "gauge", "spindle_kv_cache_blocks_free", "KV cache blocks holding nothing.",
               (double)(es->n_blocks - es->n_blocks_used - es->n_blocks_cached));
    put(&b, "# HELP spindle_cache_config_info The KV cache's configuration, in its labels "
            "(vLLM's and SGLang's names).\n# TYPE spindle_cache_config_info gauge\n"
            "spindle_cache_config_info{block_size=\"%d\",num_gpu_blocks=\"%d\"} 1\n",
        es->block_size, es->n_blocks);
    put_scalar(&b, "gauge", "spindle_kv_cache_usage_perc",
               "Fraction of KV cache blocks held by requests (1 = full).",
               es->n_blocks ? (double)es->n_blocks_used / es->n_blocks : 0.0);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
