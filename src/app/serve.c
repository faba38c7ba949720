/* `spindle serve`: the OpenAI-compatible HTTP server. The main thread runs the HTTP event
 * loop; the engine runs on its own thread. SIGINT/SIGTERM stop accepting connections, let the
 * requests in flight finish for a grace period, cancel what is left, and exit 0; a second
 * signal exits at once. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/commands.h"
#include "app/options.h"
#include "app/stack.h"
#include "base/log.h"
#include "base/util.h"
#include "model/model.h"
#include "sched/engine.h"
#include "server/api.h"
#include "server/http.h"
#include "store/store.h"
#include "tmpl/tmpl.h"
#include "tok/tok.h"

static volatile sig_atomic_t n_signals;
static sp_http_server *signal_server;

static void on_signal(int sig) {
    (void)sig;
    n_signals++;
    if (n_signals > 1 && signal_server)
        sp_http_server_stop(signal_server);
}

typedef struct serve_state {
    sp_http_server *http;
    sp_api *api;
    int grace_ms;
    int64_t shutdown_at_us; // 0 until a signal arrives
    bool cancelled;
} serve_state;

static void on_tick(void *ctx) {
    serve_state *st = ctx;
    if (!n_signals) {
        sp_api_tick(st->api);
        return;
    }
    int64_t now = sp_time_us();
    if (!st->shutdown_at_us) {
        st->shutdown_at_us = now;
        sp_http_server_stop_accepting(st->http);
        sp_api_stop_batches(st->api); // (their lines in flight run again at the next start)
        SP_INFO("shutting down: %d requests in flight, %d ms grace period",
                sp_api_n_active(st->api), st->grace_ms);
    }
    if (sp_api_n_active(st->api) == 0) {
        sp_http_server_stop(st->http);
        return;
    }
    if (!st->cancelled && now - st->shutdown_at_us > (int64_t)st->grace_ms * 1000) {
        SP_INFO("grace period over: cancelling %d requests", sp_api_n_active(st->api));
        sp_api_cancel_all(st->api);
        st->cancelled = true;
    }
    if (now - st->shutdown_at_us > (int64_t)st->grace_ms * 1000 + 5000000)
        sp_http_server_stop(st->http);
}

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: spindle serve -m MODEL.gguf [options]\n\n"
            "Serves the OpenAI API (POST /v1/completions, POST /v1/chat/completions, GET\n"
            "/v1/models, GET /health, GET /metrics, POST /tokenize, POST /detokenize, and the\n"
            "Files and Batch APIs: /v1/files, /v1/batches).\n\n"
            "  -m, --model FILE        GGUF model (llama, qwen2, qwen3, phi3)\n"
            "  --host ADDR             address to listen on (default 127.0.0.1)\n"
            "  --port N                port (default 8080; 0 picks a free one)\n"
            "  --api-key KEY           require 'Authorization: Bearer KEY'\n"
            "  --model-name NAME       model id in responses (default: the file's name)\n"
            "  --chat-template FILE    Jinja chat template (default: the model's, else ChatML)\n");
    sp_engine_options_usage(f);
    fprintf(f,
            "  --max-waiting N         waiting requests beyond which new ones get 503\n"
            "                          (default 1024)\n"
            "  --max-conns N           open connections at most (default 256)\n"
            "  --data-dir DIR          files and batch jobs (default $SPINDLE_DATA_DIR, else\n"
            "                          $XDG_DATA_HOME/spindle, else ~/.local/share/spindle)\n"
            "  --max-upload-mb N       largest file upload in MiB (default 200)\n"
            "  --grace SECONDS         on SIGINT/SIGTERM, time for requests to finish (default 10)\n");
}

int sp_cmd_serve(int argc, char **argv) {
    const char *model_path = NULL, *tmpl_path = NULL, *data_dir = NULL;
    sp_http_opts ho = sp_http_opts_default();
    ho.port = 8080;
    sp_api_opts ao = sp_api_opts_default();
    ao.model_name = NULL;
    sp_engine_opts eo = sp_engine_opts_default();
    // Speculation sized by goodput unless --spec says otherwise: it is never a loss
    // (bench/spec-sweep.sh), and the tokens are the same as without it.
    eo.spec_k = SP_ENGINE_SPEC_AUTO_K;
    eo.spec_auto = true;
    int grace_s = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            serve_usage(stdout);
            return 0;
        }
        int used = sp_engine_options_parse(&eo, argc - i, argv + i);
        if (used < 0)
            return 2;
        if (used > 0) {
            i += used - 1;
            continue;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "spindle serve: option '%s' needs a value (see --help)\n", a);
            return 2;
        }
        i++;
        char *end;
        long n = strtol(v, &end, 10);
        bool num = *v && !*end;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            model_path = v;
        else if (!strcmp(a, "--host"))
            ho.host = v;
        else if (!strcmp(a, "--port") && num && n >= 0 && n < 65536)
            ho.port = (int)n;
        else if (!strcmp(a, "--api-key"))
            ao.api_key = v;
        else if (!strcmp(a, "--model-name"))
            ao.model_name = v;
        else if (!strcmp(a, "--chat-template"))
            tmpl_path = v;
        else if (!strcmp(a, "--max-waiting") && num && n > 0 && n < (1 << 24))
            ao.max_waiting = (int32_t)n;
        else if (!strcmp(a, "--max-conns") && num && n > 0 && n < (1 << 20))
            ho.max_conns = (int)n;
        else if (!strcmp(a, "--grace") && num && n >= 0 && n < 3600)
            grace_s = (int)n;
        else if (!strcmp(a, "--data-dir"))
            data_dir = v;
        else if (!strcmp(a, "--max-upload-mb") && num && n > 0 && n <= (1 << 16))
            ao.max_upload_bytes = (size_t)n << 20;
        else {
            fprintf(stderr, "spindle serve: unknown option or bad value: %s %s (see --help)\n",
                    a, v);
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "spindle serve: -m MODEL.gguf is required (see --help)\n");
        return 2;
    }
    if (!ao.model_name) {
        const char *slash = strrchr(model_path, '/');
        ao.model_name = slash ? slash + 1 : model_path;
    }

    int rc = 1;
    sp_diag d;
    sp_diag_clear(&d);
    sp_stack stack = {0};
    sp_engine *e = NULL;
    sp_api *api = NULL;
    sp_store *store = NULL;
    char data_buf[1024];
    serve_state st = {.grace_ms = grace_s * 1000};
    sp_err err;
    if (!sp_stack_load(&stack, "serve", model_path, tmpl_path))
        goto done;
    sp_model *m = stack.m;
    sp_vocab *v = stack.v;
    ao.tool_format = stack.tool_format;
    // A secret seed keeps clients from aiming hash collisions at the prefix index (collisions
    // are harmless for correctness: blocks are verified by their tokens).
    eo.kv_hash_seed = (uint64_t)sp_time_ns() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    if ((err = sp_engine_create(m, v, &eo, &e, &d))) {
        fprintf(stderr, "spindle serve: %s: %s\n", sp_err_str(err), d.msg);
        goto done;
    }
    if ((err = sp_api_create(&ao, m, v, stack.t, e, &api)))
        goto done;
    st.api = api;
    sp_http_handler h = sp_api_handler(api);
    if ((err = sp_http_server_create(&ho, &h, &st.http, &d))) {
        fprintf(stderr, "spindle serve: cannot listen on %s:%d: %s\n", ho.host, ho.port,
                d.msg[0] ? d.msg : sp_err_str(err));
        goto done;
    }
    if (!data_dir)
        data_dir = sp_default_data_dir(data_buf, sizeof data_buf);
    if (data_dir && (err = sp_store_open(data_dir, &store, &d))) {
        // Online serving does not depend on it: the batch endpoints say what is wrong.
        SP_ERROR("files and batches are unavailable: %s", d.msg);
        store = NULL;
    } else if (!data_dir) {
        snprintf(d.msg, sizeof d.msg, "no data directory: start the server with --data-dir");
    }
    if (store)
        SP_INFO("files and batch jobs in %s", data_dir);
    if ((err = sp_api_enable_batches(api, store, d.msg, st.http)) ||
        (err = sp_http_server_watch_fd(st.http, sp_engine_notify_fd(e), sp_api_on_engine_output,
                                       api)) ||
        (err = sp_http_server_set_tick(st.http, 100, on_tick, &st)) ||
        (err = sp_engine_start(e))) {
        fprintf(stderr, "spindle serve: cannot start: %s\n", sp_err_str(err));
        goto done;
    }
    signal_server = st.http;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sp_engine_stats es;
    sp_engine_stats_get(e, &es);
    SP_INFO("model %s: %s, %d layers, %d-token context, %d KV blocks of %d tokens",
            ao.model_name, m->hp.arch_name, m->hp.n_layer, es.n_ctx, es.n_blocks, es.block_size);
    SP_INFO("listening on http://%s:%d", ho.host, sp_http_server_port(st.http));
    fflush(stderr);
    if ((err = sp_http_server_run(st.http))) {
        fprintf(stderr, "spindle serve: the event loop failed: %s\n", sp_err_str(err));
        goto done;
    }
    SP_INFO("stopped");
    rc = 0;
done:
    signal_server = NULL;
    if (api)
        sp_api_stop_batches(api);
    // Closing the connections cancels their requests; the engine then finishes them all.
    sp_http_server_destroy(st.http);
    sp_engine_destroy(e);
    sp_api_destroy(api);
    sp_store_close(store);
    sp_stack_free(&stack);
    return rc;
}
