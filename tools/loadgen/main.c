/* spindle-bench: a serving benchmark for OpenAI-compatible servers, in the manner of
 * `vllm bench serve` (same metrics, same result JSON field names). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/util.h"
#include "loadgen/client.h"
#include "loadgen/dataset.h"
#include "loadgen/report.h"
#include "loadgen/sampler.h"
#include "loadgen/stats.h"

#define MAX_SWEEP 32

typedef struct opts {
    const char *base_url;
    const char *endpoint;
    const char *model;
    const char *dataset;
    const char *result_json;
    const char *plot;
    const char *label;
    int num_prompts;
    double request_rate;
    double burstiness;
    int max_concurrency;
    int input_len, output_len;
    double range_ratio;
    bool output_pareto;
    int output_cap;
    int max_tokens;
    int deadline_ms;
    int shared_prefix_len, num_groups;
    int turns;
    double think_time;
    sp_lg_slo slo;
    uint64_t seed;
    double sweep[MAX_SWEEP];
    int n_sweep;
    double pcts[SP_LG_MAX_PCTS];
    int n_pcts;
    double temperature;
    double prediction_accuracy;
    bool ignore_eos;
    bool progress;
    bool calibrate;
    double timeout_s;
    int num_warmups;
    bool stub;
    int stub_port;
    double stub_itl_ms;
} opts;

static void usage(FILE *f) {
    fputs(
        "usage: spindle-bench --base-url http://127.0.0.1:8080 [options]\n"
        "\n"
        "A serving benchmark for OpenAI-compatible servers (metrics and result JSON as\n"
        "`vllm bench serve`). Streams every request, with ignore_eos and max_tokens for fixed\n"
        "output lengths, and reads token counts from the usage chunk.\n"
        "\n"
        "Target:\n"
        "  --base-url URL          server (http://127.0.0.1:8080); OPENAI_API_KEY is sent if set\n"
        "  --endpoint PATH         /v1/completions (default) or /v1/chat/completions\n"
        "  --model NAME            model name to send (default: the first of /v1/models)\n"
        "Workload:\n"
        "  --dataset D             random (default), shared-prefix, multi-turn, prediction\n"
        "                          (random prompts, each sent with a predicted output: its\n"
        "                          greedy output from an unmeasured first pass, each token\n"
        "                          kept with probability --prediction-accuracy; greedy\n"
        "                          requests), or FILE.jsonl:\n"
        "                          {timestamp, input_length, output_length, hash_ids} rows\n"
        "                          (Mooncake traces, replayed at their timestamps in ms) or\n"
        "                          {prompt, output_len} rows\n"
        "  --num-prompts N         requests (all turns for multi-turn; rows for a file) (100)\n"
        "  --input-len L           prompt tokens (suffix for shared-prefix, new text per turn\n"
        "                          for multi-turn) (256)\n"
        "  --output-len O          output tokens (128)\n"
        "  --range-ratio X         lengths uniform in [L(1-X), L(1+X)] (0)\n"
        "  --output-dist D         uniform (as --range-ratio, default) or pareto: long-tailed\n"
        "                          output lengths (shape 1.5, mean O, at most --max-tokens)\n"
        "  --max-tokens N          send max_tokens N and end each request after its drawn\n"
        "                          output length with Spindle's stop_after, so the server\n"
        "                          does not know the lengths in advance (as with real EOS)\n"
        "  --deadline-ms MS        send Spindle's deadline_ms: a request whose first token\n"
        "                          cannot come within MS is refused at once (503, counted\n"
        "                          as failed) instead of being served late\n"
        "  --shared-prefix-len P   shared-prefix: system prompt tokens per group (256)\n"
        "  --num-groups G          shared-prefix: groups (4)\n"
        "  --turns T               multi-turn: turns per session (4)\n"
        "  --think-time S          multi-turn: mean exponential pause between turns (1.0 s)\n"
        "  --seed S                dataset, arrivals and think times (0)\n"
        "  --temperature T         sampling temperature to send (server default)\n"
        "  --prediction-accuracy A prediction: share of the predicted tokens that are right\n"
        "                          (0-1, default 0.9)\n"
        "  --no-ignore-eos         let requests stop at end-of-sequence\n"
        "Load:\n"
        "  --request-rate R|inf    arrivals per second (sessions for multi-turn) (inf)\n"
        "  --burstiness B          gamma shape of the gaps; 1 = Poisson (1)\n"
        "  --max-concurrency C     requests in flight at most (no cap)\n"
        "  --sweep R1,R2,...       run once per request rate (rate k uses seed S + k)\n"
        "  --timeout S             fail a request after S seconds (none)\n"
        "  --num-warmups N         unmeasured requests first, to warm the server (0)\n"
        "Output:\n"
        "  --goodput ttft:MS tpot:MS e2el:MS   service-level objectives for goodput\n"
        "  --metric-percentiles P1,P2,...      percentiles to report (99)\n"
        "  --result-json FILE      vLLM-style result JSON (one line per run with --sweep)\n"
        "  --plot FILE.svg         latency CDFs (and throughput-latency curves with --sweep)\n"
        "  --label NAME            label stored in the JSON and the plot\n"
        "  --no-progress           no progress line (it is shown only on a terminal)\n"
        "  --no-calibrate          do not ask /tokenize which words are single tokens\n"
        "Client self-test:\n"
        "  --stub-server [--port N] [--stub-itl-ms MS]   serve a trivial streaming endpoint on\n"
        "                          127.0.0.1 (prints \"listening on http://127.0.0.1:PORT\")\n",
        f);
}

static bool parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno)
        return false;
    *out = v;
    return true;
}

static bool parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

static bool parse_rate(const char *s, double *out) {
    if (!strcmp(s, "inf") || !strcmp(s, "INF")) {
        *out = INFINITY;
        return true;
    }
    return parse_double(s, out) && *out > 0;
}

static bool parse_list(const char *s, double *out, int max, int *n, bool rates) {
    char buf[1024];
    if (strlen(s) >= sizeof buf)
        return false;
    strcpy(buf, s);
    *n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n >= max)
            return false;
        double v;
        if (rates ? !parse_rate(t, &v) : !(parse_double(t, &v) && v >= 0 && v <= 100))
            return false;
        out[(*n)++] = v;
    }
    return *n > 0;
}

static int parse_args(int argc, char **argv, opts *o) {
    *o = (opts){
        .base_url = "http://127.0.0.1:8080",
        .endpoint = "/v1/completions",
        .dataset = "random",
        .num_prompts = 100,
        .request_rate = INFINITY,
        .burstiness = 1.0,
        .input_len = 256,
        .output_len = 128,
        .shared_prefix_len = 256,
        .num_groups = 4,
        .turns = 4,
        .think_time = 1.0,
        .slo = {-1, -1, -1},
        .pcts = {99},
        .n_pcts = 1,
        .temperature = -1,
        .prediction_accuracy = 0.9,
        .ignore_eos = true,
        .progress = true,
        .calibrate = true,
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true, takes = true;
#define IS(name) (!strcmp(a, name))
        if (IS("--help") || IS("-h")) {
            usage(stdout);
            return 1;
        } else if (IS("--no-ignore-eos")) {
            o->ignore_eos = false, takes = false;
        } else if (IS("--no-progress") || IS("--disable-tqdm")) {
            o->progress = false, takes = false;
        } else if (IS("--no-calibrate")) {
            o->calibrate = false, takes = false;
        } else if (IS("--stub-server")) {
            o->stub = true, takes = false;
        } else if (!v) {
            fprintf(stderr, "spindle-bench: %s needs a value (see --help)\n", a);
            return 2;
        } else if (IS("--base-url")) {
            o->base_url = v;
        } else if (IS("--endpoint")) {
            o->endpoint = v;
        } else if (IS("--model")) {
            o->model = v;
        } else if (IS("--dataset") || IS("--dataset-name") || IS("--dataset-path")) {
            o->dataset = v;
        } else if (IS("--result-json")) {
            o->result_json = v;
        } else if (IS("--plot")) {
            o->plot = v;
        } else if (IS("--label")) {
            o->label = v;
        } else if (IS("--num-prompts")) {
            ok = parse_int(v, 1, 10000000, &o->num_prompts);
        } else if (IS("--request-rate")) {
            ok = parse_rate(v, &o->request_rate);
        } else if (IS("--burstiness")) {
            ok = parse_rate(v, &o->burstiness);
        } else if (IS("--max-concurrency")) {
            ok = parse_int(v, 1, 1000000, &o->max_concurrency);
        } else if (IS("--input-len")) {
            ok = parse_int(v, 1, 10000000, &o->input_len);
        } else if (IS("--output-len")) {
            ok = parse_int(v, 1, 10000000, &o->output_len);
        } else if (IS("--output-dist")) {
            ok = !strcmp(v, "uniform") || !strcmp(v, "pareto");
            o->output_pareto = !strcmp(v, "pareto");
        } else if (IS("--max-tokens")) {
            ok = parse_int(v, 1, 10000000, &o->max_tokens);
        } else if (IS("--deadline-ms")) {
            ok = parse_int(v, 1, 86400000, &o->deadline_ms);
        } else if (IS("--range-ratio")) {
            ok = parse_double(v, &o->range_ratio) && o->range_ratio >= 0 && o->range_ratio < 1;
        } else if (IS("--shared-prefix-len")) {
            ok = parse_int(v, 1, 10000000, &o->shared_prefix_len);
        } else if (IS("--num-groups")) {
            ok = parse_int(v, 1, 1000000, &o->num_groups);
        } else if (IS("--turns")) {
            ok = parse_int(v, 1, 100000, &o->turns);
        } else if (IS("--think-time")) {
            ok = parse_double(v, &o->think_time) && o->think_time >= 0;
        } else if (IS("--seed")) {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 10);
            ok = end != v && !*end && !errno;
        } else if (IS("--sweep")) {
            ok = parse_list(v, o->sweep, MAX_SWEEP, &o->n_sweep, true);
        } else if (IS("--metric-percentiles")) {
            ok = parse_list(v, o->pcts, SP_LG_MAX_PCTS, &o->n_pcts, false);
        } else if (IS("--prediction-accuracy")) {
            ok = parse_double(v, &o->prediction_accuracy) && o->prediction_accuracy >= 0 &&
                 o->prediction_accuracy <= 1;
        } else if (IS("--temperature")) {
            ok = parse_double(v, &o->temperature) && o->temperature >= 0;
        } else if (IS("--num-warmups")) {
            ok = parse_int(v, 0, 100000, &o->num_warmups);
        } else if (IS("--timeout")) {
            ok = parse_double(v, &o->timeout_s) && o->timeout_s >= 0;
        } else if (IS("--port")) {
            ok = parse_int(v, 0, 65535, &o->stub_port);
        } else if (IS("--stub-itl-ms")) {
            ok = parse_double(v, &o->stub_itl_ms) && o->stub_itl_ms >= 0;
        } else if (IS("--goodput")) {
            // One or more NAME:MS values up to the next option.
            int k = 0;
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) {
                sp_diag d;
                sp_diag_clear(&d);
                if (sp_lg_slo_parse(argv[i + 1], &o->slo, &d) != SP_OK) {
                    fprintf(stderr, "spindle-bench: --goodput: %s\n", d.msg);
                    return 2;
                }
                i++, k++;
            }
            if (!k) {
                fprintf(stderr, "spindle-bench: --goodput needs NAME:MS values\n");
                return 2;
            }
            takes = false;
        } else {
            fprintf(stderr, "spindle-bench: unknown option '%s' (see --help)\n", a);
            return 2;
        }
#undef IS
        if (!ok) {
            fprintf(stderr, "spindle-bench: invalid value '%s' for %s\n", v, a);
            return 2;
        }
        if (takes)
            i++;
    }
    return 0;
}

static void on_stub_listen(int port, void *ctx) {
    (void)ctx;
    fprintf(stderr, "listening on http://127.0.0.1:%d\n", port);
    fflush(stderr);
}

static void raise_fd_limit(void) {
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The first model of /v1/models, as a heap string; NULL if there is none. */
static char *first_model(const sp_lg_target *t) {
    int status = 0;
    char *body = NULL;
    size_t len = 0;
    sp_diag d;
    if (sp_lg_fetch(t, "GET", "/v1/models", NULL, 10000, &status, &body, &len, &d) != SP_OK)
        return NULL;
    char *id = NULL;
    json_t *j = status == 200 ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *m0 = json_array_get(json_object_get(j, "data"), 0);
    json_t *jid = json_object_get(m0, "id");
    if (json_is_string(jid))
        id = strdup(json_string_value(jid));
    json_decref(j);
    free(body);
    return id;
}

static void read_counters(const sp_lg_target *t, sp_lg_server_counters *c) {
    int status = 0;
    char *body = NULL;
    sp_diag d;
    memset(c, 0, sizeof *c);
    if (sp_lg_fetch(t, "GET", "/metrics", NULL, 10000, &status, &body, NULL, &d) == SP_OK &&
        status == 200)
        sp_lg_server_counters_parse(body, c);
    free(body);
}

/* Sends o->num_warmups random requests (not measured) so that the server has paged in its
 * weights and warmed its caches; their prompts share nothing with the measured ones. */
static bool warm_up(const opts *o, const sp_lg_target *t, const char *model, sp_lg_words words,
                    bool chat) {
    sp_lg_ds_opts wo = {.kind = SP_LG_DS_RANDOM,
                        .num_prompts = o->num_warmups,
                        .input_len = o->input_len,
                        .output_len = o->output_len,
                        .seed = o->seed ^ 0x5741524d55500000ull};
    sp_lg_dataset wds;
    sp_diag d;
    sp_diag_clear(&d);
    if (sp_lg_dataset_build(&wo, words, &wds, &d) != SP_OK) {
        fprintf(stderr, "spindle-bench: warm-up: %s\n", d.msg[0] ? d.msg : "out of memory");
        return false;
    }
    sp_lg_result *wr = calloc(wds.n, sizeof *wr);
    sp_lg_run_opts ro = {
        .target = t,
        .endpoint = o->endpoint,
        .body = {.chat = chat,
                 .model = model,
                 .ignore_eos = o->ignore_eos,
                 .temperature = o->temperature,
                 .max_tokens = o->max_tokens},
        .request_rate = INFINITY,
        .burstiness = 1,
        .max_concurrency = o->max_concurrency,
        .timeout_s = o->timeout_s,
    };
    double dur = 0;
    bool ok = wr && sp_lg_run(&ro, &wds, wr, &dur, &d) == SP_OK;
    if (ok) {
        size_t good = 0;
        for (size_t i = 0; i < wds.n; i++)
            good += wr[i].success;
        fprintf(stderr, "spindle-bench: warm-up: %zu/%zu requests succeeded in %.2f s\n", good,
                wds.n, dur);
    } else {
        fprintf(stderr, "spindle-bench: warm-up: %s\n", d.msg[0] ? d.msg : "out of memory");
    }
    if (wr)
        for (size_t i = 0; i < wds.n; i++)
            sp_lg_result_free(&wr[i]);
    free(wr);
    sp_lg_dataset_free(&wds);
    return ok;
}

/* How often the server's KV use is sampled during a run. */
#define SAMPLE_PERIOD_S 0.25

/* Adds "kv_usage": {"t": [s...], "used": [fraction...], "preemptions": [since start...]} to a
 * run's JSON. Nonzero when out of memory. */
static int add_series(json_t *j, const sp_lg_series *s) {
    json_t *t = json_array(), *u = json_array(), *p = json_array();
    int bad = !t || !u || !p;
    for (size_t i = 0; i < s->n && !bad; i++)
        bad = json_array_append_new(t, json_real(s->t[i])) ||
              json_array_append_new(u, json_real(s->kv_used[i])) ||
              json_array_append_new(p, json_real(s->preemptions[i]));
    json_t *o = bad ? NULL : json_pack("{s:o, s:o, s:o}", "t", t, "used", u, "preemptions", p);
    if (!o) {
        json_decref(t);
        json_decref(u);
        json_decref(p);
        return 1;
    }
    return json_object_set_new(j, "kv_usage", o);
}

/* Per-run data kept for the plot. */
typedef struct run_out {
    sp_lg_metrics m;
    double *ttft, *tpot, *e2el; // ms
    size_t n_ttft, n_tpot, n_e2el;
    char label[64];
} run_out;

static bool keep_for_plot(run_out *ro, const sp_lg_result *res, size_t n) {
    ro->ttft = malloc((n ? n : 1) * sizeof(double));
    ro->tpot = malloc((n ? n : 1) * sizeof(double));
    ro->e2el = malloc((n ? n : 1) * sizeof(double));
    if (!ro->ttft || !ro->tpot || !ro->e2el)
        return false;
    for (size_t i = 0; i < n; i++) {
        const sp_lg_result *r = &res[i];
        if (!r->success)
            continue;
        ro->ttft[ro->n_ttft++] = r->ttft_s * 1000;
        ro->e2el[ro->n_e2el++] = r->latency_s * 1000;
        if (r->output_tokens > 1)
            ro->tpot[ro->n_tpot++] = (r->latency_s - r->ttft_s) * 1000 / (r->output_tokens - 1);
    }
    return true;
}

int main(int argc, char **argv) {
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : 2;
    raise_fd_limit();
    if (o.stub) {
        sp_err err = sp_lg_stub_serve(o.stub_port, o.stub_itl_ms, NULL, true, on_stub_listen, NULL);
        if (err) {
            fprintf(stderr, "spindle-bench: stub server: %s (%s)\n", sp_err_str(err),
                    strerror(errno));
            return 1;
        }
        return 0;
    }

    int status = 1;
    sp_diag d;
    sp_diag_clear(&d);
    sp_lg_target target;
    char *model = NULL;
    const char **kept = NULL;
    sp_lg_dataset ds = {0};
    sp_lg_result *res = NULL;
    run_out *outs = NULL;
    FILE *jf = NULL;
    int n_runs = 0;
    if (sp_lg_target_parse(o.base_url, &target, &d) != SP_OK) {
        fprintf(stderr, "spindle-bench: %s\n", d.msg);
        return 2;
    }
    bool chat = strstr(o.endpoint, "chat") != NULL;
    if (o.model)
        model = strdup(o.model);
    else if (!(model = first_model(&target)))
        fprintf(stderr, "spindle-bench: warning: no model from /v1/models; sending none\n");

    // Words that are one token each, so prompt lengths are exact.
    sp_lg_words words = sp_lg_default_words();
    int n_special = 0;
    if (o.calibrate) {
        int n_kept = 0;
        sp_diag cd;
        sp_diag_clear(&cd);
        sp_err err = sp_lg_calibrate_words(&target, words, &kept, &n_kept, &n_special, &cd);
        if (err == SP_OK) {
            words = (sp_lg_words){kept, n_kept};
            fprintf(stderr,
                    "spindle-bench: %d single-token words; the server adds %d special "
                    "token(s) to a prompt\n",
                    n_kept, n_special);
        } else {
            fprintf(stderr,
                    "spindle-bench: warning: calibration failed (%s); prompt lengths are "
                    "approximate (actual counts come from the usage chunk)\n",
                    cd.msg[0] ? cd.msg : sp_err_str(err));
        }
    }

    sp_lg_ds_opts dso = {
        .num_prompts = o.num_prompts,
        .input_len = o.input_len,
        .output_len = o.output_len,
        .range_ratio = o.range_ratio,
        .output_pareto = o.output_pareto,
        .output_cap = o.max_tokens,
        .shared_prefix_len = o.shared_prefix_len,
        .num_groups = o.num_groups,
        .turns = o.turns,
        .seed = o.seed,
    };
    if (!strcmp(o.dataset, "random"))
        dso.kind = SP_LG_DS_RANDOM;
    else if (!strcmp(o.dataset, "shared-prefix"))
        dso.kind = SP_LG_DS_SHARED_PREFIX;
    else if (!strcmp(o.dataset, "multi-turn"))
        dso.kind = SP_LG_DS_MULTI_TURN;
    else if (!strcmp(o.dataset, "prediction")) {
        dso.kind = SP_LG_DS_PREDICTION;
        o.temperature = 0; // the predictions are greedy outputs
    }
    else {
        dso.kind = SP_LG_DS_FILE;
        dso.path = o.dataset;
        // --num-prompts limits the rows only when given explicitly.
        dso.num_prompts = 0;
        for (int i = 1; i < argc; i++)
            if (!strcmp(argv[i], "--num-prompts"))
                dso.num_prompts = o.num_prompts;
    }
    if (sp_lg_dataset_build(&dso, words, &ds, &d) != SP_OK) {
        fprintf(stderr, "spindle-bench: dataset: %s\n", d.msg[0] ? d.msg : "out of memory");
        goto done;
    }

    double rates[MAX_SWEEP];
    int n_rates = o.n_sweep ? o.n_sweep : 1;
    if (o.n_sweep)
        memcpy(rates, o.sweep, sizeof(double) * (size_t)o.n_sweep);
    else
        rates[0] = o.request_rate;
    res = calloc(ds.n, sizeof *res);
    outs = calloc((size_t)n_rates, sizeof *outs);
    if (!res || !outs) {
        fprintf(stderr, "spindle-bench: out of memory\n");
        goto done;
    }
    if (o.result_json && !(jf = fopen(o.result_json, "w"))) {
        fprintf(stderr, "spindle-bench: cannot write '%s': %s\n", o.result_json, strerror(errno));
        goto done;
    }
    bool progress = o.progress && isatty(STDERR_FILENO);
    if (o.num_warmups > 0 && !warm_up(&o, &target, model, words, chat))
        goto done;
    for (int k = 0; k < n_rates; k++) {
        if (k > 0) {
            // Fresh prompts for every rate (same shapes): the same prompts again would be
            // served from the prefix cache and flatter the later rates.
            sp_lg_dataset_free(&ds);
            dso.seed = o.seed + (uint64_t)k;
            if (sp_lg_dataset_build(&dso, words, &ds, &d) != SP_OK) {
                fprintf(stderr, "spindle-bench: dataset: %s\n", d.msg[0] ? d.msg : "out of memory");
                goto done;
            }
        }
        char date[32];
        time_t now = time(NULL);
        struct tm tmv;
        localtime_r(&now, &tmv);
        strftime(date, sizeof date, "%Y%m%d-%H%M%S", &tmv);
        sp_lg_run_info info = {
            .date = date,
            .backend = chat ? "openai-chat" : "openai",
            .endpoint = o.endpoint,
            .label = o.label,
            .model_id = model,
            .dataset = o.dataset,
            .num_prompts = (int)ds.n,
            .request_rate = rates[k],
            .burstiness = o.burstiness,
            .max_concurrency = o.max_concurrency,
            .timed = ds.timed,
        };
        sp_lg_run_opts ro = {
            .target = &target,
            .endpoint = o.endpoint,
            .body = {.chat = chat,
                     .model = model,
                     .ignore_eos = o.ignore_eos,
                     .temperature = o.temperature,
                     .max_tokens = o.max_tokens,
                     .deadline_ms = o.deadline_ms},
            .request_rate = rates[k],
            .burstiness = o.burstiness,
            .max_concurrency = o.max_concurrency,
            .think_time_s = o.think_time,
            .seed = o.seed,
            .timeout_s = o.timeout_s,
            .progress = progress,
            .n_special = n_special,
        };
        if (ds.timed && k == 0 && (o.n_sweep || !isinf(o.request_rate)))
            fprintf(stderr, "spindle-bench: the trace has timestamps: --request-rate is "
                            "ignored\n");
        fprintf(stderr, "spindle-bench: %zu requests, %s, rate %g, burstiness %g", ds.n, o.dataset,
                rates[k], o.burstiness);
        if (o.max_concurrency)
            fprintf(stderr, ", at most %d in flight", o.max_concurrency);
        fputc('\n', stderr);
        if (dso.kind == SP_LG_DS_PREDICTION) {
            double right = 0;
            fprintf(stderr, "spindle-bench: predicted outputs: a first, unmeasured pass\n");
            if (sp_lg_make_predictions(&ro, &ds, o.prediction_accuracy, dso.seed, &right, &d) !=
                SP_OK) {
                fprintf(stderr, "spindle-bench: predictions: %s\n",
                        d.msg[0] ? d.msg : "out of memory");
                goto done;
            }
            fprintf(stderr, "spindle-bench: predictions with %.1f%% of their tokens right\n",
                    100.0 * right);
        }
        sp_lg_server_counters before, after, delta;
        read_counters(&target, &before);
        sp_lg_sampler *sampler = NULL;
        if (sp_lg_sampler_start(&target, SAMPLE_PERIOD_S, &sampler) != SP_OK)
            sampler = NULL; // the run goes on without the series
        double dur = 0;
        const sp_err run_err = sp_lg_run(&ro, &ds, res, &dur, &d);
        sp_lg_series series = {0};
        if (sampler)
            sp_lg_sampler_stop(sampler, &series);
        if (run_err != SP_OK) {
            fprintf(stderr, "spindle-bench: %s\n", d.msg);
            sp_lg_series_free(&series);
            goto done;
        }
        read_counters(&target, &after);
        delta = after;
        delta.valid = before.valid && after.valid;
        delta.preemptions -= before.preemptions;
        delta.prefix_hit_tokens -= before.prefix_hit_tokens;
        delta.prompt_tokens_computed -= before.prompt_tokens_computed;
        delta.engine_steps -= before.engine_steps;
        delta.prompt_tokens -= before.prompt_tokens;
        delta.generation_tokens -= before.generation_tokens;
        delta.spec_draft_tokens -= before.spec_draft_tokens;
        delta.spec_accepted_tokens -= before.spec_accepted_tokens;
        run_out *out = &outs[n_runs++];
        if (sp_lg_metrics_compute(res, ds.n, dur, &o.slo, o.pcts, o.n_pcts, &out->m) != SP_OK ||
            !keep_for_plot(out, res, ds.n)) {
            fprintf(stderr, "spindle-bench: out of memory\n");
            sp_lg_series_free(&series);
            goto done;
        }
        snprintf(out->label, sizeof out->label, "%s%srate %g", o.label ? o.label : "",
                 o.label ? " " : "", rates[k]);
        int shown = 0;
        for (size_t i = 0; i < ds.n && shown < 10; i++)
            if (!res[i].success) {
                if (!shown)
                    printf("Failed requests (first 10):\n");
                printf("  request %zu: %s\n", i, res[i].error ? res[i].error : "?");
                shown++;
            }
        sp_lg_report_print(stdout, &info, &out->m, &delta);
        fflush(stdout);
        if (jf) {
            json_t *j = sp_lg_result_json(&info, &out->m, res, ds.n, &delta);
            if (j && series.n && add_series(j, &series)) {
                json_decref(j);
                j = NULL;
            }
            if (!j || json_dumpf(j, jf, JSON_COMPACT) || fputc('\n', jf) == EOF) {
                json_decref(j);
                fprintf(stderr, "spindle-bench: cannot write the result JSON\n");
                sp_lg_series_free(&series);
                goto done;
            }
            json_decref(j);
            fflush(jf);
        }
        sp_lg_series_free(&series);
        for (size_t i = 0; i < ds.n; i++)
            sp_lg_result_free(&res[i]);
    }
    if (o.plot) {
        sp_lg_plot_run pr[MAX_SWEEP];
        for (int k = 0; k < n_runs; k++)
            pr[k] = (sp_lg_plot_run){.label = outs[k].label,
                                     .ttft_ms = outs[k].ttft,
                                     .tpot_ms = outs[k].tpot,
                                     .e2el_ms = outs[k].e2el,
                                     .n_ttft = outs[k].n_ttft,
                                     .n_tpot = outs[k].n_tpot,
                                     .n_e2el = outs[k].n_e2el,
                                     .m = &outs[k].m};
        char title[256];
        snprintf(title, sizeof title, "spindle-bench: %s, %s, %zu requests", model ? model : "",
                 o.dataset, ds.n);
        if (sp_lg_plot_svg(o.plot, pr, n_runs, title) != SP_OK) {
            fprintf(stderr, "spindle-bench: cannot write '%s'\n", o.plot);
            goto done;
        }
    }
    status = 0;
done:
    if (jf && fclose(jf)) {
        fprintf(stderr, "spindle-bench: cannot write '%s'\n", o.result_json);
        status = 1;
    }
    if (res)
        for (size_t i = 0; i < ds.n; i++)
            sp_lg_result_free(&res[i]);
    if (outs)
        for (int k = 0; k < n_rates; k++) {
            free(outs[k].ttft);
            free(outs[k].tpot);
            free(outs[k].e2el);
        }
    free(outs);
    free(res);
    sp_lg_dataset_free(&ds);
    free(kept);
    free(model);
    return status;
}
