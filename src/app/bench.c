/* `spindle bench`: an offline benchmark of the engine. Requests go through the engine API (no
 * HTTP): for each concurrency level, N requests with random prompts of L tokens generate G
 * tokens each (end-of-generation ignored), with at most C in flight. The engine is stepped on
 * this thread and every step is timed, so the figures separate prefill from decode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/commands.h"
#include "app/options.h"
#include "base/util.h"
#include "grammar/grammar.h"
#include "model/model.h"
#include "sched/engine.h"
#include "tok/tok.h"

#define BENCH_MAX_LEVELS 16

typedef struct bench_opts {
    const char *model;
    int32_t n_requests;
    int32_t prompt_len;
    int32_t gen_len;
    int32_t levels[BENCH_MAX_LEVELS];
    int n_levels;
    int32_t max_batch_tokens;
    int64_t kv_bytes;
    int32_t n_threads;
    uint64_t seed;
    bool latency; // --prefer latency: stall-free steps as in serve
    sp_engine_opts spec; // --spec, --spec-max, --draft-model, --step-log
    double predict;      // --predict P (0: none)
    const char *grammar_src; // --grammar json|FILE.gbnf (NULL: none)
    sp_grammar *grammar;     // compiled from it
} bench_opts;

typedef struct step_acc {
    int64_t t_last;
    double prefill_us, decode_us, mixed_us;
    uint64_t prefill_tokens, decode_tokens, mixed_tokens, steps;
    int32_t max_blocks;
} step_acc;

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: spindle bench -m MODEL.gguf [--requests N] [--prompt-len L] [--gen-len G]\n"
            "                     [--concurrency C ...] [--max-batch-tokens N] [--kv-memory SIZE]\n"
            "                     [--prefer throughput|latency] [--spec off|auto|fixed:K]\n"
            "                     [--spec-max K] [--draft-model FILE] [--predict P] [--seed S]\n"
            "                     [--grammar json|FILE.gbnf] [--step-log FILE] [-t N]\n\n"
            "Runs N requests of L random prompt tokens and G generated tokens through the engine\n"
            "at each concurrency level C (requests in flight) and prints, per level: prefill\n"
            "tokens/s (steps with only prompt tokens), aggregate decode tokens/s (steps with only\n"
            "decode tokens), mean step time, peak KV blocks used, and end-to-end output tokens/s\n"
            "(the tokens generated: fewer than N x G when a grammar ends requests early).\n\n"
            "  --requests N          requests per level (default 32)\n"
            "  --prompt-len L        prompt tokens (default 128)\n"
            "  --gen-len G           generated tokens per request (default 64)\n"
            "  --concurrency C ...   one or more levels (default 1 8 32)\n"
            "  --max-batch-tokens N  token budget per step (default 512)\n"
            "  --kv-memory SIZE      KV pool size, e.g. 512M or 2G (default: enough for C full\n"
            "                        requests)\n"
            "  --prefer WHAT         throughput (default: prompts in whole chunks, as an offline\n"
            "                        job runs them) or latency (the stall-free steps of serve:\n"
            "                        prompts arriving among decodes are split to a time budget)\n"
            "  --spec MODE           speculative decoding, as in serve: off (default without a\n"
            "                        draft model), auto (default with one), or fixed:K (drafts\n"
            "                        of up to K tokens, by prompt lookup or the draft model)\n"
            "  --spec-max K          longest draft of auto (default 8)\n"
            "  --draft-model FILE    a draft model with the model's vocabulary, as in serve\n"
            "  --predict P           each request sends a predicted output (the API's\n"
            "                        prediction): its own greedy output, found by an untimed\n"
            "                        first pass, each token kept with probability P (0-1]\n"
            "                        and otherwise a random one\n"
            "  --grammar G           every request constrained by a grammar: json (the JSON\n"
            "                        object grammar of response_format json_object) or a\n"
            "                        GBNF file; requests end when the grammar allows nothing\n"
            "                        more\n"
            "  --step-log FILE       append one JSON line per engine step to FILE, as in serve\n"
            "  -t, --threads N       compute threads (default: all cores)\n"
            "  --seed S              prompt seed (default 1)\n");
}

static void on_step(void *ctx, const sp_engine_step_info *info) {
    step_acc *a = ctx;
    int64_t now = sp_time_us();
    double dt = (double)(now - a->t_last);
    a->t_last = now;
    a->steps++;
    if (info->n_decode == 0) {
        a->prefill_us += dt;
        a->prefill_tokens += (uint64_t)info->n_tokens;
    } else if (info->n_decode + info->n_draft == info->n_tokens) {
        a->decode_us += dt; // tokens produced: one per decode, and the drafts accepted
        a->decode_tokens += (uint64_t)(info->n_decode + info->n_accepted);
    } else {
        a->mixed_us += dt;
        a->mixed_tokens += (uint64_t)info->n_tokens;
    }
}

/* Runs the n_requests prompts (prompts[i], prompt_len tokens each) through e, conc at a time;
 * with preds, request i gets the predicted output preds[i] (gen_len tokens); with outs, its
 * output tokens go to outs[i] (gen_len). The wall time to *wall_s. Returns 0, or 1 after a
 * message. */
static int run_pass(sp_engine *e, const bench_opts *o, const sp_vocab *v, int32_t conc,
                    const int32_t *prompts, const int32_t *preds, int32_t *outs, step_acc *acc,
                    double *wall_s) {
    sp_request **reqs = calloc((size_t)o->n_requests, sizeof *reqs);
    if (!reqs)
        return 1;
    int32_t submitted = 0, finished = 0, in_flight = 0;
    int rc = 0;
    sp_diag d;
    sp_diag_clear(&d);
    int64_t t0 = sp_time_us();
    acc->t_last = t0;
    while (finished < o->n_requests) {
        while (in_flight < conc && submitted < o->n_requests) {
            sp_req_params p = sp_req_params_default();
            p.max_tokens = o->gen_len;
            p.ignore_eos = true;
            p.sample.temperature = 0.0f;
            p.grammar = o->grammar;
            if (preds) {
                p.prediction = preds + (size_t)submitted * (size_t)o->gen_len;
                p.n_prediction = o->gen_len;
            }
            sp_request *r;
            sp_err err;
            if ((err = sp_request_create(v, prompts + (size_t)submitted * (size_t)o->prompt_len,
                                         o->prompt_len, &p, &r, &d)) ||
                (err = sp_engine_submit(e, r, &d))) {
                fprintf(stderr, "spindle bench: cannot submit: %s\n", d.msg);
                rc = 1;
                goto done;
            }
            reqs[submitted++] = r;
            in_flight++;
        }
        acc->t_last = sp_time_us();
        sp_engine_step(e);
        sp_engine_stats st;
        sp_engine_stats_get(e, &st);
        acc->max_blocks = SP_MAX(acc->max_blocks, st.n_blocks_used);
        for (sp_request *r = sp_engine_take_ready(e); r;) {
            sp_request *next = sp_request_next_ready(r);
            sp_req_stats rst;
            sp_request_stats(r, &rst);
            if (rst.t_end_us) {
                finished++;
                in_flight--;
            }
            sp_request_release(r);
            r = next;
        }
        if (isatty(2))
            fprintf(stderr, "\rconcurrency %3d: %d/%d requests done", conc, finished,
                    o->n_requests);
    }
    *wall_s = (double)(sp_time_us() - t0) / 1e6;
    for (int32_t i = 0; outs && i < submitted; i++) {
        sp_req_cursor cur = {0};
        sp_req_token toks[1024];
        sp_req_read rd;
        int32_t n = 0;
        do {
            if (sp_request_read(reqs[i], &cur, toks, 1024, NULL, NULL, NULL, NULL, NULL, &rd)) {
                rc = 1;
                goto done;
            }
            for (int32_t k = 0; k < rd.n_new_tokens && n < o->gen_len; k++)
                outs[(size_t)i * (size_t)o->gen_len + (size_t)n++] = toks[k].id;
        } while (rd.n_new_tokens > 0);
        for (; n < o->gen_len; n++) // (an output cut short: the prediction ends in token 0s)
            outs[(size_t)i * (size_t)o->gen_len + (size_t)n] = 0;
    }
done:
    for (int32_t i = 0; i < submitted; i++)
        sp_request_release(reqs[i]);
    free(reqs);
    return rc;
}

static bool speculating(const bench_opts *o) {
    return o->predict > 0 || (o->spec.spec_k > 0 && !o->spec.spec_off) ||
           (o->spec.draft_model && !o->spec.spec_off);
}

static int run_level(const bench_opts *o, const sp_model *m, const sp_vocab *v, int32_t conc) {
    step_acc acc = {0};
    sp_engine_opts eo = sp_engine_opts_default();
    eo.max_seqs = conc;
    eo.n_threads = o->n_threads;
    eo.max_batch_tokens = SP_MAX(o->max_batch_tokens, conc);
    eo.n_ctx = SP_MIN(m->hp.n_ctx_train, SP_MAX(o->prompt_len + o->gen_len + 16, 64));
    eo.kv_bytes = o->kv_bytes;
    if (!o->kv_bytes)
        eo.kv_tokens = conc * (o->prompt_len + o->gen_len + 32);
    eo.prefix_cache = false; // random prompts: nothing to share; measure the compute
    eo.prefer_throughput = !o->latency;
    eo.spec_k = o->spec.spec_k;
    eo.spec_auto = o->spec.spec_auto;
    eo.spec_off = o->spec.spec_off;
    eo.draft_model = o->spec.draft_model;
    eo.step_log = o->spec.step_log;
    eo.on_step = on_step;
    eo.hook_ctx = &acc;
    sp_engine *e;
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = sp_engine_create(m, v, &eo, &e, &d);
    if (err) {
        fprintf(stderr, "spindle bench: %s: %s\n", sp_err_str(err), d.msg);
        return 1;
    }
    const size_t n_req = (size_t)o->n_requests, G = (size_t)o->gen_len;
    int32_t *prompts = malloc(n_req * (size_t)o->prompt_len * sizeof *prompts);
    int32_t *preds = o->predict > 0 ? malloc(n_req * G * sizeof *preds) : NULL;
    int rc = 1;
    if (!prompts || (o->predict > 0 && !preds))
        goto done;
    uint64_t rs = o->seed * 7919 + (uint64_t)conc;
    const int32_t V = (int32_t)sp_vocab_n_tokens(v);
    for (size_t i = 0; i < n_req * (size_t)o->prompt_len; i++) {
        rs = rs * 6364136223846793005ull + 1442695040888963407ull;
        prompts[i] = (int32_t)((rs >> 33) % (uint64_t)V);
    }
    // --predict P: a first, untimed pass finds each request's (greedy) output; the timed pass
    // then sends it as the prediction, each token kept with probability P, else replaced by a
    // random token.
    double wall = 0;
    if (preds) {
        if (run_pass(e, o, v, conc, prompts, NULL, preds, &acc, &wall))
            goto done;
        for (size_t i = 0; i < n_req * G; i++) {
            rs = rs * 6364136223846793005ull + 1442695040888963407ull;
            if ((double)(rs >> 11) / 9007199254740992.0 >= o->predict) {
                rs = rs * 6364136223846793005ull + 1442695040888963407ull;
                preds[i] = (int32_t)((rs >> 33) % (uint64_t)V);
            }
        }
        acc = (step_acc){0};
    }
    sp_engine_stats st0, st1;
    sp_engine_stats_get(e, &st0);
    if (run_pass(e, o, v, conc, prompts, preds, NULL, &acc, &wall))
        goto done;
    sp_engine_stats_get(e, &st1);
    rc = 0;
    if (isatty(2))
        fprintf(stderr, "\r%60s\r", "");
    uint64_t total_steps = acc.steps;
    double total_us = acc.prefill_us + acc.decode_us + acc.mixed_us;
    printf("%11d  %14.1f  %14.1f  %12.2f  %9d  %13.1f", conc,
           acc.prefill_us > 0 ? (double)acc.prefill_tokens / (acc.prefill_us / 1e6) : 0.0,
           acc.decode_us > 0 ? (double)acc.decode_tokens / (acc.decode_us / 1e6) : 0.0,
           total_steps ? total_us / (double)total_steps / 1000.0 : 0.0, acc.max_blocks,
           (double)(st1.generated_tokens - st0.generated_tokens) / wall);
    const uint64_t drafted = st1.spec_draft_tokens - st0.spec_draft_tokens;
    if (speculating(o)) {
        uint64_t decodes = 0, k_sum = 0; // draft lengths chosen, the timed pass's decodes
        for (int k = 0; k <= SP_ENGINE_MAX_SPEC; k++) {
            const uint64_t c = st1.spec_k_hist[k] - st0.spec_k_hist[k];
            decodes += c;
            k_sum += (uint64_t)k * c;
        }
        printf("  %15.1f%%  %10.2f",
               drafted ? 100.0 * (double)(st1.spec_accepted_tokens - st0.spec_accepted_tokens) /
                             (double)drafted
                       : 0.0,
               decodes ? (double)k_sum / (double)decodes : 0.0);
    }
    printf("\n");
    fflush(stdout);
done:
    sp_engine_destroy(e);
    free(prompts);
    free(preds);
    return rc;
}

int sp_cmd_bench(int argc, char **argv) {
    bench_opts o = {.n_requests = 32, .prompt_len = 128, .gen_len = 64, .max_batch_tokens = 512,
                    .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bench_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "spindle bench: option '%s' needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        char *end = NULL;
        long n = strtol(v, &end, 10);
        bool num_ok = *v && !*end && n > 0 && n < (1L << 24);
        bool ok = true;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o.model = v;
        else if (!strcmp(a, "--requests"))
            ok = num_ok && (o.n_requests = (int32_t)n);
        else if (!strcmp(a, "--prompt-len"))
            ok = num_ok && (o.prompt_len = (int32_t)n);
        else if (!strcmp(a, "--gen-len"))
            ok = num_ok && (o.gen_len = (int32_t)n);
        else if (!strcmp(a, "--max-batch-tokens"))
            ok = num_ok && (o.max_batch_tokens = (int32_t)n);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = num_ok && n <= 1024 && (o.n_threads = (int32_t)n);
        else if (!strcmp(a, "--seed"))
            ok = num_ok && ((o.seed = (uint64_t)n), true);
        else if (!strcmp(a, "--kv-memory"))
            ok = sp_parse_size(v, &o.kv_bytes);
        else if (!strcmp(a, "--spec") || !strcmp(a, "--spec-max") || !strcmp(a, "--draft-model") ||
                 !strcmp(a, "--step-log"))
            ok = sp_engine_options_parse(&o.spec, 2, argv + i - 1) == 2;
        else if (!strcmp(a, "--grammar"))
            o.grammar_src = v;
        else if (!strcmp(a, "--predict")) {
            o.predict = strtod(v, &end);
            ok = *v && !*end && o.predict > 0 && o.predict <= 1;
        }
        else if (!strcmp(a, "--prefer")) {
            ok = !strcmp(v, "throughput") || !strcmp(v, "latency");
            o.latency = !strcmp(v, "latency");
        }
        else if (!strcmp(a, "--concurrency")) {
            i--;
            while (i + 1 < argc && argv[i + 1][0] != '-') {
                long c = strtol(argv[++i], &end, 10);
                if (*end || c < 1 || c > 4096 || o.n_levels == BENCH_MAX_LEVELS) {
                    fprintf(stderr, "spindle bench: bad concurrency '%s'\n", argv[i]);
                    return 2;
                }
                o.levels[o.n_levels++] = (int32_t)c;
            }
            continue;
        } else {
            fprintf(stderr, "spindle bench: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "spindle bench: invalid value '%s' for %s (see --help)\n", v, a);
            return 2;
        }
    }
    if (!o.model) {
        fprintf(stderr, "spindle bench: -m MODEL is required (see --help)\n");
        return 2;
    }
    if (!o.n_levels) {
        o.levels[0] = 1;
        o.levels[1] = 8;
        o.levels[2] = 32;
        o.n_levels = 3;
    }
    sp_diag d;
    sp_diag_clear(&d);
    sp_model *m = NULL;
    sp_vocab *v = NULL;
    sp_err err = sp_model_load(o.model, &m, &d);
    if (!err)
        err = sp_vocab_load(m->gguf, &v, &d);
    if (err) {
        fprintf(stderr, "spindle bench: cannot load '%s': %s: %s\n", o.model, sp_err_str(err),
                d.msg);
        sp_model_destroy(m);
        return 1;
    }
    if (o.grammar_src) {
        char *text = NULL;
        size_t len = 0;
        if (!strcmp(o.grammar_src, "json"))
            err = sp_grammar_json_object(&o.grammar, &d);
        else if (sp_read_file(o.grammar_src, &text, &len) < 0)
            err = sp_diag_set(&d, SP_ERR_IO, UINT64_MAX, "cannot read '%s'", o.grammar_src);
        else
            err = sp_grammar_from_gbnf(text, len, &o.grammar, &d);
        free(text);
        if (err) {
            fprintf(stderr, "spindle bench: --grammar: %s\n", d.msg);
            sp_vocab_destroy(v);
            sp_model_destroy(m);
            return 1;
        }
    }
    printf("model %s: %s, %d layers, n_embd %d, %.1f MiB of weights\n", o.model, m->hp.arch_name,
           m->hp.n_layer, m->hp.n_embd, (double)sp_model_weight_bytes(m) / (1 << 20));
    printf("%d requests per level, prompt %d tokens, %d generated tokens each\n", o.n_requests,
           o.prompt_len, o.gen_len);
    printf("concurrency  prefill tok/s  decode tok/s  step ms mean  peak blocks  output tok/s%s\n",
           speculating(&o) ? "  drafts accepted  mean draft" : "");
    int rc = 0;
    for (int i = 0; i < o.n_levels && !rc; i++)
        rc = run_level(&o, m, v, o.levels[i]);
    sp_grammar_release(o.grammar);
    sp_vocab_destroy(v);
    sp_model_destroy(m);
    return rc;
}
