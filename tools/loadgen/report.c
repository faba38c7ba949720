#include "loadgen/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

typedef struct dvec {
    double *v;
    size_t n, cap;
} dvec;

static bool dpush(dvec *a, double x) {
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        double *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv)
            return false;
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return true;
}

static void scale(dvec *a, double f) {
    for (size_t i = 0; i < a->n; i++)
        a->v[i] *= f;
}

typedef struct event {
    double t;
    int delta;
} event;

static int cmp_event(const void *a, const void *b) {
    const event *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return x->delta - y->delta; // departures (-1) before arrivals at the same time
}

/* Peak tokens per one-second bucket and peak concurrency, as vLLM computes them. */
static sp_err peaks(const sp_lg_result *res, size_t n, sp_lg_metrics *m) {
    double t_min = INFINITY, t_max = -INFINITY;
    size_t n_ok = 0;
    for (size_t i = 0; i < n; i++)
        if (res[i].success) {
            n_ok++;
            t_min = SP_MIN(t_min, res[i].start_s);
            t_max = SP_MAX(t_max, res[i].start_s + res[i].latency_s);
        }
    if (!n_ok)
        return SP_OK;
    size_t n_buckets = (size_t)ceil(t_max - t_min) + 1;
    double *tok = calloc(n_buckets, sizeof *tok);
    event *ev = malloc(2 * n_ok * sizeof *ev);
    if (!tok || !ev) {
        free(tok);
        free(ev);
        return SP_ERR_NOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const sp_lg_result *r = &res[i];
        if (!r->success)
            continue;
        double t = r->start_s + r->ttft_s;
        for (int32_t j = -1; j < r->n_itl; j++) {
            if (j >= 0)
                t += r->itl_s[j];
            double b = floor(t - t_min);
            if (b >= 0 && b < (double)n_buckets)
                tok[(size_t)b] += 1;
        }
        ev[k++] = (event){r->start_s, +1};
        ev[k++] = (event){r->start_s + r->latency_s, -1};
    }
    qsort(ev, k, sizeof *ev, cmp_event);
    int cur = 0, peak = 0;
    for (size_t i = 0; i < k; i++) {
        cur += ev[i].delta;
        peak = SP_MAX(peak, cur);
    }
    double best = 0;
    for (size_t b = 0; b < n_buckets; b++)
        best = SP_MAX(best, tok[b]);
    m->max_output_tokens_per_s = best;
    m->max_concurrent_requests = peak;
    free(tok);
    free(ev);
    return SP_OK;
}

sp_err sp_lg_metrics_compute(const sp_lg_result *res, size_t n, double duration_s,
                             const sp_lg_slo *slo, const double *pcts, int n_pcts,
                             sp_lg_metrics *out) {
    sp_lg_metrics m;
    memset(&m, 0, sizeof m);
    dvec ttft = {0}, tpot = {0}, itl = {0}, e2el = {0};
    sp_err err = SP_ERR_NOMEM;
    size_t good = 0;
    m.has_goodput = slo && sp_lg_slo_any(slo);
    for (size_t i = 0; i < n; i++) {
        const sp_lg_result *r = &res[i];
        if (!r->success) {
            m.failed++;
            continue;
        }
        m.completed++;
        int64_t out_len = r->output_tokens > 0 ? r->output_tokens : 1;
        m.total_output += out_len;
        m.total_input += r->prompt_len > 0 ? r->prompt_len : 0;
        double tp = 0.0;
        if (out_len > 1) {
            tp = (r->latency_s - r->ttft_s) / (double)(out_len - 1);
            if (!dpush(&tpot, tp))
                goto done;
        }
        if (!dpush(&ttft, r->ttft_s) || !dpush(&e2el, r->latency_s))
            goto done;
        for (int32_t j = 0; j < r->n_itl; j++)
            if (!dpush(&itl, r->itl_s[j]))
                goto done;
        if (m.has_goodput && sp_lg_slo_met(slo, r->ttft_s, tp, r->latency_s))
            good++;
    }
    m.duration_s = duration_s;
    double dur = duration_s > 0 ? duration_s : 1e-9;
    m.request_throughput = (double)m.completed / dur;
    m.request_goodput = (double)good / dur;
    m.output_throughput = (double)m.total_output / dur;
    m.total_token_throughput = (double)(m.total_input + m.total_output) / dur;
    scale(&ttft, 1000.0);
    scale(&tpot, 1000.0);
    scale(&itl, 1000.0);
    scale(&e2el, 1000.0);
    if ((err = sp_lg_summarize(ttft.v, ttft.n, pcts, n_pcts, &m.ttft_ms)) ||
        (err = sp_lg_summarize(tpot.v, tpot.n, pcts, n_pcts, &m.tpot_ms)) ||
        (err = sp_lg_summarize(itl.v, itl.n, pcts, n_pcts, &m.itl_ms)) ||
        (err = sp_lg_summarize(e2el.v, e2el.n, pcts, n_pcts, &m.e2el_ms)) ||
        (err = peaks(res, n, &m)))
        goto done;
    *out = m;
    err = SP_OK;
done:
    free(ttft.v);
    free(tpot.v);
    free(itl.v);
    free(e2el.v);
    return err;
}

/* ---- Prometheus ---------------------------------------------------------------------------- */

bool sp_lg_prom_sum(const char *text, const char *name, double *out) {
    size_t nl = strlen(name);
    bool found = false;
    double sum = 0;
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > nl && *p != '#' && !strncmp(p, name, nl) &&
            (p[nl] == ' ' || p[nl] == '{' || p[nl] == '\t')) {
            const char *v = p + nl;
            if (*v == '{') { // skip labels (values may hold '}' inside quotes)
                bool q = false;
                for (v++; v < p + ll; v++) {
                    if (*v == '\\' && q)
                        v++;
                    else if (*v == '"')
                        q = !q;
                    else if (*v == '}' && !q)
                        break;
                }
                v++;
            }
            if (v < p + ll) {
                char *end;
                double x = strtod(v, &end);
                if (end != v) {
                    sum += x;
                    found = true;
                }
            }
        }
        p = eol ? eol + 1 : NULL;
    }
    if (found)
        *out = sum;
    return found;
}

void sp_lg_server_counters_parse(const char *text, sp_lg_server_counters *c) {
    memset(c, 0, sizeof *c);
    c->valid = sp_lg_prom_sum(text, "spindle_engine_steps_total", &c->engine_steps);
    sp_lg_prom_sum(text, "spindle_num_preemptions_total", &c->preemptions);
    sp_lg_prom_sum(text, "spindle_prefix_cache_hits_total", &c->prefix_hit_tokens);
    sp_lg_prom_sum(text, "spindle_prompt_tokens_computed_total", &c->prompt_tokens_computed);
    sp_lg_prom_sum(text, "spindle_prompt_tokens_total", &c->prompt_tokens);
    sp_lg_prom_sum(text, "spindle_generation_tokens_total", &c->generation_tokens);
    sp_lg_prom_sum(text, "spindle_spec_decode_num_draft_tokens_total", &c->spec_draft_tokens);
    sp_lg_prom_sum(text, "spindle_spec_decode_num_accepted_tokens_total",
                   &c->spec_accepted_tokens);
}

/* ---- Report -------------------------------------------------------------------------------- */

static void line_i(FILE *f, const char *k, long long v) {
    fprintf(f, "%-40s %-10lld\n", k, v);
}
static void line_f(FILE *f, const char *k, double v) {
    fprintf(f, "%-40s %-10.2f\n", k, v);
}

static void banner(FILE *f, const char *title, char fill) {
    int tl = (int)strlen(title);
    int left = (50 - tl) / 2, right = 50 - tl - left;
    for (int i = 0; i < left; i++)
        fputc(fill, f);
    fputs(title, f);
    for (int i = 0; i < right; i++)
        fputc(fill, f);
    fputc('\n', f);
}

static void pct_word(char *buf, size_t n, double q) {
    if (q == floor(q))
        snprintf(buf, n, "%d", (int)q);
    else
        snprintf(buf, n, "%g", q);
}

static void metric_block(FILE *f, const char *header, const char *name, const sp_lg_summary *s) {
    char k[64], pw[16];
    banner(f, header, '-');
    snprintf(k, sizeof k, "Mean %s (ms):", name);
    line_f(f, k, s->mean);
    snprintf(k, sizeof k, "Median %s (ms):", name);
    line_f(f, k, s->median);
    for (int i = 0; i < s->n_pcts; i++) {
        pct_word(pw, sizeof pw, s->pct_q[i]);
        snprintf(k, sizeof k, "P%s %s (ms):", pw, name);
        line_f(f, k, s->pct_val[i]);
    }
}

void sp_lg_report_print(FILE *f, const sp_lg_run_info *info, const sp_lg_metrics *m,
                        const sp_lg_server_counters *delta) {
    banner(f, " Serving Benchmark Result ", '=');
    line_i(f, "Successful requests:", (long long)m->completed);
    line_i(f, "Failed requests:", (long long)m->failed);
    if (info->max_concurrency > 0)
        line_i(f, "Maximum request concurrency:", info->max_concurrency);
    if (info->timed)
        fprintf(f, "%-40s %-10s\n", "Request arrivals:", "trace timestamps");
    else if (!isinf(info->request_rate))
        line_f(f, "Request rate configured (RPS):", info->request_rate);
    line_f(f, "Benchmark duration (s):", m->duration_s);
    line_i(f, "Total input tokens:", (long long)m->total_input);
    line_i(f, "Total generated tokens:", (long long)m->total_output);
    line_f(f, "Request throughput (req/s):", m->request_throughput);
    if (m->has_goodput)
        line_f(f, "Request goodput (req/s):", m->request_goodput);
    line_f(f, "Output token throughput (tok/s):", m->output_throughput);
    line_f(f, "Peak output token throughput (tok/s):", m->max_output_tokens_per_s);
    line_f(f, "Peak concurrent requests:", m->max_concurrent_requests);
    line_f(f, "Total token throughput (tok/s):", m->total_token_throughput);
    metric_block(f, "Time to First Token", "TTFT", &m->ttft_ms);
    metric_block(f, "Time per Output Token (excl. 1st token)", "TPOT", &m->tpot_ms);
    metric_block(f, "Inter-token Latency", "ITL", &m->itl_ms);
    metric_block(f, "End-to-end Latency", "E2EL", &m->e2el_ms);
    if (delta && delta->valid) {
        banner(f, "Spindle server (deltas)", '-');
        line_i(f, "Preemptions:", (long long)delta->preemptions);
        line_i(f, "Prefix-cache hit tokens:", (long long)delta->prefix_hit_tokens);
        line_i(f, "Prompt tokens computed:", (long long)delta->prompt_tokens_computed);
        line_i(f, "Engine steps:", (long long)delta->engine_steps);
        double pt = delta->prompt_tokens;
        if (pt > 0)
            line_f(f, "Prefix-cache hit rate (%):", 100.0 * delta->prefix_hit_tokens / pt);
        if (delta->spec_draft_tokens > 0) {
            line_i(f, "Draft tokens checked:", (long long)delta->spec_draft_tokens);
            line_f(f, "Draft acceptance rate (%):",
                   100.0 * delta->spec_accepted_tokens / delta->spec_draft_tokens);
        }
    }
    for (int i = 0; i < 50; i++)
        fputc('=', f);
    fputc('\n', f);
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static int add(json_t *o, const char *k, json_t *v) {
    return json_object_set_new(o, k, v);
}

static int add_summary(json_t *o, const char *name, const sp_lg_summary *s) {
    char k[64], pw[16];
    int bad = 0;
    snprintf(k, sizeof k, "mean_%s_ms", name);
    bad |= add(o, k, json_real(s->mean));
    snprintf(k, sizeof k, "median_%s_ms", name);
    bad |= add(o, k, json_real(s->median));
    snprintf(k, sizeof k, "std_%s_ms", name);
    bad |= add(o, k, json_real(s->std));
    for (int i = 0; i < s->n_pcts; i++) {
        pct_word(pw, sizeof pw, s->pct_q[i]);
        snprintf(k, sizeof k, "p%s_%s_ms", pw, name);
        bad |= add(o, k, json_real(s->pct_val[i]));
    }
    return bad;
}

json_t *sp_lg_result_json(const sp_lg_run_info *info, const sp_lg_metrics *m,
                          const sp_lg_result *res, size_t n, const sp_lg_server_counters *delta) {
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = 0;
    bad |= add(o, "date", json_string(info->date));
    bad |= add(o, "endpoint_type", json_string(info->backend));
    bad |= add(o, "backend", json_string(info->backend));
    bad |= add(o, "endpoint", json_string(info->endpoint));
    bad |= add(o, "label", info->label ? json_string(info->label) : json_null());
    bad |= add(o, "model_id", info->model_id ? json_string(info->model_id) : json_null());
    bad |= add(o, "tokenizer_id", json_null());
    bad |= add(o, "dataset", json_string(info->dataset));
    bad |= add(o, "num_prompts", json_integer(info->num_prompts));
    bad |= add(o, "request_rate",
               isinf(info->request_rate) ? json_string("inf") : json_real(info->request_rate));
    bad |= add(o, "burstiness", json_real(info->burstiness));
    bad |= add(o, "max_concurrency",
               info->max_concurrency > 0 ? json_integer(info->max_concurrency) : json_null());
    bad |= add(o, "duration", json_real(m->duration_s));
    bad |= add(o, "completed", json_integer((json_int_t)m->completed));
    bad |= add(o, "failed", json_integer((json_int_t)m->failed));
    bad |= add(o, "total_input_tokens", json_integer(m->total_input));
    bad |= add(o, "total_output_tokens", json_integer(m->total_output));
    bad |= add(o, "request_throughput", json_real(m->request_throughput));
    bad |= add(o, "request_goodput", m->has_goodput ? json_real(m->request_goodput) : json_null());
    bad |= add(o, "output_throughput", json_real(m->output_throughput));
    bad |= add(o, "total_token_throughput", json_real(m->total_token_throughput));
    bad |= add(o, "max_output_tokens_per_s", json_real(m->max_output_tokens_per_s));
    bad |= add(o, "max_concurrent_requests", json_integer(m->max_concurrent_requests));
    bad |= add_summary(o, "ttft", &m->ttft_ms);
    bad |= add_summary(o, "tpot", &m->tpot_ms);
    bad |= add_summary(o, "itl", &m->itl_ms);
    bad |= add_summary(o, "e2el", &m->e2el_ms);
    json_t *in = json_array(), *outl = json_array(), *ttfts = json_array(), *itls = json_array(),
           *lat = json_array(), *st = json_array(), *qt = json_array(), *errs = json_array();
    bad |= add(o, "input_lens", in) | add(o, "output_lens", outl) | add(o, "ttfts", ttfts) |
           add(o, "itls", itls) | add(o, "latencies", lat) | add(o, "start_times", st) |
           add(o, "queue_times", qt) | add(o, "errors", errs);
    for (size_t i = 0; i < n && !bad; i++) {
        const sp_lg_result *r = &res[i];
        json_t *il = json_array();
        for (int32_t j = 0; j < r->n_itl && il; j++)
            if (json_array_append_new(il, json_real(r->itl_s[j])))
                bad = 1;
        bad |= json_array_append_new(in, json_integer(r->prompt_len));
        bad |= json_array_append_new(outl, json_integer(r->success ? r->output_tokens : 0));
        bad |= json_array_append_new(ttfts, json_real(r->success ? r->ttft_s : 0.0));
        bad |= json_array_append_new(itls, il);
        bad |= json_array_append_new(lat, json_real(r->success ? r->latency_s : 0.0));
        bad |= json_array_append_new(st, json_real(r->start_s));
        bad |= json_array_append_new(qt, json_real(r->queue_s));
        bad |= json_array_append_new(errs, json_string(r->error ? r->error : ""));
    }
    if (delta && delta->valid) {
        json_t *sm = json_pack(
            "{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "num_preemptions", delta->preemptions,
            "prefix_cache_hit_tokens", delta->prefix_hit_tokens, "prompt_tokens_computed",
            delta->prompt_tokens_computed, "engine_steps", delta->engine_steps, "prompt_tokens",
            delta->prompt_tokens, "generation_tokens", delta->generation_tokens,
            "spec_draft_tokens", delta->spec_draft_tokens, "spec_accepted_tokens",
            delta->spec_accepted_tokens);
        bad |= add(o, "server_metrics", sm);
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}
