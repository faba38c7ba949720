/* `spindle batch`: a batch job from the command line, no server: the input file's lines run as
 * they would through POST /v1/batches (the same validation, order, responses and output
 * lines), on an engine tuned for throughput, with a progress bar on a terminal. The job's state
 * lives in a data directory beside the output (OUTPUT.state/), so a run that is interrupted
 * (Ctrl-C, a crash, kill -9) is resumed by running the same command again; it is removed
 * once the output is written. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "app/commands.h"
#include "app/options.h"
#include "app/stack.h"
#include "base/log.h"
#include "base/util.h"
#include "sched/engine.h"
#include "server/api.h"
#include "server/http.h"
#include "store/store.h"

static volatile sig_atomic_t interrupted;
static sp_http_server *signal_server;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
    if (signal_server)
        sp_http_server_stop(signal_server);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: spindle batch -m MODEL.gguf --input IN.jsonl --output OUT.jsonl [options]\n\n"
            "Runs a batch input file (the OpenAI Batch API's: one {\"custom_id\", \"method\":\n"
            "\"POST\", \"url\", \"body\"} per line, url /v1/chat/completions or /v1/completions)\n"
            "without a server: OUT.jsonl gets a line {custom_id, response: {status_code,\n"
            "request_id, body}} per request answered, the errors file one per request that\n"
            "failed. The job's state is kept in OUT.jsonl.state/ while it runs: run the same\n"
            "command again to resume an interrupted job (nothing is computed twice).\n\n"
            "  -m, --model FILE        GGUF model\n"
            "  --input FILE            batch input (JSON lines)\n"
            "  --output FILE           responses (JSON lines, in input order)\n"
            "  --errors FILE           failed requests (default OUT.jsonl.errors.jsonl; written\n"
            "                          only when some failed)\n"
            "  --chat-template FILE    Jinja chat template (default: the model's, else ChatML)\n"
            "  --model-name NAME       model id in responses (default: the file's name)\n");
    sp_engine_options_usage(f);
}

typedef struct batch_run {
    sp_http_server *http;
    sp_api *api;
    sp_store *store;
    char id[SP_STORE_ID_LEN];
    sp_store_batch last;
    bool tty;
    int64_t t0_us;
    int64_t done0; // lines already done when this run started
} batch_run;

/* One line of progress: a bar, counts, the rate and time left. */
static void progress(batch_run *r, const sp_store_batch *b) {
    if (!r->tty)
        return;
    const int64_t done = b->completed + b->failed, total = b->total ? b->total : 1;
    const double secs = (double)(sp_time_us() - r->t0_us) / 1e6;
    const double rate = secs > 0 ? (double)(done - r->done0) / secs : 0;
    char eta[32] = "--";
    if (rate > 0)
        snprintf(eta, sizeof eta, "%.0fs", (double)(total - done) / rate);
    char bar[31];
    const int fill = (int)(30 * done / total);
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    fprintf(stderr, "\r[%s] %lld/%lld lines  %lld failed  %.1f lines/s  ETA %s   ", bar,
            (long long)done, (long long)b->total, (long long)b->failed, rate, eta);
}

static void on_tick(void *ctx) {
    batch_run *r = ctx;
    sp_api_tick(r->api);
    sp_store_batch b;
    if (sp_store_batch_get(r->store, r->id, &b))
        return;
    progress(r, &b);
    sp_store_batch_deinit(&r->last);
    r->last = b;
    if (sp_batch_status_final(b.status))
        sp_http_server_stop(r->http);
}

/* The batch of this job in the store: the one there (a run resumed), or a new one for the
 * input file. The endpoint is the first line's url. */
static sp_err find_or_create(sp_store *st, const char *input, char *id, sp_diag *d) {
    sp_store_batch found[1];
    int32_t n = 0;
    bool more;
    sp_err err = sp_store_batch_list(st, NULL, 1, found, &n, &more);
    if (err || n == 1) {
        if (n == 1) {
            snprintf(id, SP_STORE_ID_LEN, "%s", found[0].id);
            sp_store_batch_deinit(&found[0]);
        }
        return err;
    }
    char *data;
    size_t len;
    if (sp_read_file(input, &data, &len) < 0)
        return sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "cannot read '%s'", input);
    json_t *first = json_loadb(data, strcspn(data, "\n"), 0, NULL);
    const char *url = json_string_value(json_object_get(first, "url"));
    sp_store_batch in = {0}, b;
    snprintf(in.endpoint, sizeof in.endpoint, "%s", url ? url : "/v1/chat/completions");
    snprintf(in.completion_window, sizeof in.completion_window, "24h");
    json_decref(first);
    sp_store_file f;
    if (!(err = sp_store_file_add(st, input, "batch", data, len, &f, d))) {
        snprintf(in.input_file_id, sizeof in.input_file_id, "%s", f.id);
        if (!(err = sp_store_batch_create(st, &in, &b, d))) {
            snprintf(id, SP_STORE_ID_LEN, "%s", b.id);
            sp_store_batch_deinit(&b);
        }
    }
    free(data);
    return err;
}

/* Copies file id's content to path (through a temporary name). */
static sp_err export_file(sp_store *st, const char *id, const char *path, sp_diag *d) {
    char *data;
    size_t len;
    sp_err err = sp_store_file_read(st, id, &data, &len, d);
    if (err)
        return err;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0 || rename(tmp, path) != 0)
        err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "cannot write '%s'", path);
    free(data);
    return err;
}

static void print_errors(const sp_store_batch *b) {
    json_t *errors = b->errors ? json_loads(b->errors, 0, NULL) : NULL;
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e) {
        const json_int_t line = json_integer_value(json_object_get(e, "line"));
        fprintf(stderr, "  %s%.0lld%s%s\n", line ? "line " : "", (long long)line, line ? ": " : "",
                json_string_value(json_object_get(e, "message")));
    }
    json_decref(errors);
}

/* Writes the output (and errors) and removes the job's state. */
static int finish(batch_run *r, const char *output, const char *errors, const char *state) {
    const sp_store_batch *b = &r->last;
    sp_diag d;
    sp_diag_clear(&d);
    if (b->status == SP_BATCH_FAILED) {
        fprintf(stderr, "spindle batch: the input is not a valid batch:\n");
        print_errors(b);
        return 1;
    }
    sp_err err = SP_OK;
    if (b->output_file_id[0]) {
        err = export_file(r->store, b->output_file_id, output, &d);
    } else { // nothing answered: an empty output
        FILE *f = fopen(output, "wb");
        if (!f || fclose(f))
            err = sp_diag_set(&d, SP_ERR_IO, UINT64_MAX, "cannot write '%s'", output);
    }
    if (!err && b->error_file_id[0])
        err = export_file(r->store, b->error_file_id, errors, &d);
    if (err) {
        fprintf(stderr, "spindle batch: %s (the job's state is kept in %s)\n", d.msg, state);
        return 1;
    }
    fprintf(stderr, "spindle batch: %lld lines: %lld answered in %s%s%s\n", (long long)b->total,
            (long long)b->completed, output, b->failed ? ", failed ones in " : "",
            b->failed ? errors : "");
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", state);
    if (!strchr(state, '\'') && system(cmd) != 0)
        fprintf(stderr, "spindle batch: could not remove %s\n", state);
    return 0;
}

int sp_cmd_batch(int argc, char **argv) {
    const char *model_path = NULL, *tmpl_path = NULL, *input = NULL, *output = NULL;
    const char *errors = NULL;
    sp_api_opts ao = sp_api_opts_default();
    ao.model_name = NULL;
    ao.log_requests = false;
    sp_engine_opts eo = sp_engine_opts_default();
    eo.prefer_throughput = true; // nobody waits for a token: whole prefill chunks
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        int used = sp_engine_options_parse(&eo, argc - i, argv + i);
        if (used < 0)
            return 2;
        if (used > 0) {
            i += used - 1;
            continue;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v) {
            fprintf(stderr, "spindle batch: option '%s' needs a value (see --help)\n", a);
            return 2;
        }
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            model_path = v;
        else if (!strcmp(a, "--input"))
            input = v;
        else if (!strcmp(a, "--output"))
            output = v;
        else if (!strcmp(a, "--errors"))
            errors = v;
        else if (!strcmp(a, "--chat-template"))
            tmpl_path = v;
        else if (!strcmp(a, "--model-name"))
            ao.model_name = v;
        else {
            fprintf(stderr, "spindle batch: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model_path || !input || !output) {
        fprintf(stderr, "spindle batch: -m MODEL, --input and --output are required (see "
                        "--help)\n");
        return 2;
    }
    if (strlen(output) > 4000) {
        fprintf(stderr, "spindle batch: the output path is too long\n");
        return 2;
    }
    if (!ao.model_name) {
        const char *slash = strrchr(model_path, '/');
        ao.model_name = slash ? slash + 1 : model_path;
    }
    char state[4100], errors_buf[4100];
    snprintf(state, sizeof state, "%s.state", output);
    if (!errors) {
        snprintf(errors_buf, sizeof errors_buf, "%s.errors.jsonl", output);
        errors = errors_buf;
    }
    int rc = 1;
    sp_diag d;
    sp_diag_clear(&d);
    sp_stack stack = {0};
    sp_engine *e = NULL;
    batch_run r = {.tty = isatty(2), .t0_us = sp_time_us()};
    sp_err err;
    if ((err = sp_store_open(state, &r.store, &d))) {
        fprintf(stderr, "spindle batch: %s\n", d.msg);
        return 1;
    }
    if ((err = find_or_create(r.store, input, r.id, &d))) {
        fprintf(stderr, "spindle batch: %s\n", d.msg[0] ? d.msg : sp_err_str(err));
        goto done;
    }
    if (!sp_stack_load(&stack, "batch", model_path, tmpl_path))
        goto done;
    ao.tool_format = stack.tool_format;
    if ((err = sp_engine_create(stack.m, stack.v, &eo, &e, &d))) {
        fprintf(stderr, "spindle batch: %s: %s\n", sp_err_str(err), d.msg);
        goto done;
    }
    sp_http_opts ho = sp_http_opts_default();
    ho.port = -1; // no socket: the lines are internal requests
    if ((err = sp_api_create(&ao, stack.m, stack.v, stack.t, e, &r.api)))
        goto done;
    sp_http_handler h = sp_api_handler(r.api);
    if ((err = sp_http_server_create(&ho, &h, &r.http, &d)) ||
        (err = sp_api_enable_batches(r.api, r.store, NULL, r.http)) ||
        (err = sp_http_server_watch_fd(r.http, sp_engine_notify_fd(e), sp_api_on_engine_output,
                                       r.api)) ||
        (err = sp_http_server_set_tick(r.http, 200, on_tick, &r)) || (err = sp_engine_start(e))) {
        fprintf(stderr, "spindle batch: cannot start: %s\n", d.msg[0] ? d.msg : sp_err_str(err));
        goto done;
    }
    if (!sp_store_batch_get(r.store, r.id, &r.last)) {
        r.done0 = r.last.completed + r.last.failed;
        if (r.done0)
            fprintf(stderr, "spindle batch: resuming: %lld of %lld lines already done\n",
                    (long long)r.done0, (long long)r.last.total);
    }
    signal_server = r.http;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sp_api_tick(r.api); // validate and start at once
    if ((err = sp_http_server_run(r.http))) {
        fprintf(stderr, "spindle batch: the event loop failed: %s\n", sp_err_str(err));
        goto done;
    }
    on_tick(&r); // the final state
    if (r.tty)
        fprintf(stderr, "\n");
    if (interrupted) {
        fprintf(stderr, "spindle batch: interrupted: run the same command again to resume\n");
        rc = 130;
    } else {
        rc = finish(&r, output, errors, state);
    }
done:
    signal_server = NULL;
    if (r.api)
        sp_api_stop_batches(r.api);
    sp_http_server_destroy(r.http);
    sp_engine_destroy(e);
    sp_api_destroy(r.api);
    sp_store_batch_deinit(&r.last);
    sp_store_close(r.store);
    sp_stack_free(&stack);
    return rc;
}
