/* The API's routing: a table from path and method to handler, authorization, creation. */
#include "server/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/util.h"
#include "server/api_int.h"

sp_api_opts sp_api_opts_default(void) {
    return (sp_api_opts){.model_name = "spindle",
                         .max_waiting = 1024,
                         .stall_us = 30 * 1000000LL,
                         .log_requests = true,
                         .max_upload_bytes = (size_t)200 << 20,
                         .max_line_bytes = (size_t)4 << 20};
}

static void handle_completions(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    sp__api_handle_generate(a, c, req, SP_OAI_COMPLETION);
}

static void handle_chat(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    sp__api_handle_generate(a, c, req, SP_OAI_CHAT);
}

typedef struct route {
    const char *path;   // without the optional /v1 prefix
    const char *method; // GET routes answer HEAD too (the server sends only the head); NULL:
                        // the path and everything below it ("/files/ID"), the handler checks
                        // methods
    bool public;        // reachable without the API key (health checks, scrapers)
    void (*handle)(sp_api *a, sp_http_conn *c, const sp_http_req *req);
} route;

static const route routes[] = {
    {"/completions", "POST", false, handle_completions},
    {"/chat/completions", "POST", false, handle_chat},
    {"/models", "GET", false, sp__api_handle_models},
    {"/health", "GET", true, sp__api_handle_health},
    {"/metrics", "GET", true, sp__api_handle_metrics},
    {"/tokenize", "POST", false, sp__api_handle_tokenize},
    {"/detokenize", "POST", false, sp__api_handle_detokenize},
    {"/files", NULL, false, sp__api_handle_files},
    {"/batches", NULL, false, sp__api_handle_batches},
};

/* Whether path is r's (a subtree route: its path or below it). */
static bool route_matches(const route *r, sp_str path) {
    if (r->method)
        return sp_str_eq(path, r->path);
    const size_t n = strlen(r->path);
    return path.len >= n && !memcmp(path.ptr, r->path, n) && (path.len == n || path.ptr[n] == '/');
}

static bool authorized(const sp_api *a, const sp_http_conn *c, const sp_http_req *req) {
    if (!a->o.api_key || sp_http_conn_is_internal(c)) // (a batch line: authorized when created)
        return true;
    const sp_str *h = sp_http_req_header(req, "Authorization");
    if (!h || h->len < 7 || strncasecmp(h->ptr, "Bearer ", 7))
        return false;
    size_t klen = strlen(a->o.api_key);
    if (h->len - 7 != klen)
        return false;
    // Constant-time comparison.
    unsigned diff = 0;
    for (size_t i = 0; i < klen; i++)
        diff |= (unsigned)(h->ptr[7 + i] ^ a->o.api_key[i]);
    return diff == 0;
}

static bool method_allowed(const route *r, sp_str method) {
    return !r->method || sp_str_eq(method, r->method) ||
           (!strcmp(r->method, "GET") && sp_str_eq(method, "HEAD"));
}

sp_str sp__api_route_path(sp_str path) {
    if (path.len >= 3 && !memcmp(path.ptr, "/v1", 3) && (path.len == 3 || path.ptr[3] == '/'))
        return (sp_str){path.ptr + 3, path.len - 3};
    return path;
}

static void on_request(void *ctx, sp_http_conn *c, const sp_http_req *req) {
    sp_api *a = ctx;
    const sp_str path = sp__api_route_path(req->path);
    char pbuf[64];
    snprintf(pbuf, sizeof pbuf, "%.*s", (int)SP_MIN(req->path.len, 60), req->path.ptr);
    const route *r = NULL;
    for (size_t i = 0; i < SP_ARRAY_LEN(routes) && !r; i++)
        if (route_matches(&routes[i], path))
            r = &routes[i];
    if (!r) {
        sp__api_send_error(a, c, 404, "invalid_request_error", NULL, "not_found", NULL, pbuf,
                           "no endpoint at %s: see GET /v1/models, POST /v1/completions, POST "
                           "/v1/chat/completions",
                           pbuf);
        return;
    }
    if (!method_allowed(r, req->method)) {
        char allow[64];
        snprintf(allow, sizeof allow, "Allow: %s%s\r\n", r->method,
                 strcmp(r->method, "GET") ? "" : ", HEAD");
        sp__api_send_error(a, c, 405, "invalid_request_error", NULL, "method_not_allowed", allow,
                           pbuf, "%s takes %s", pbuf, r->method);
        return;
    }
    if (!r->public && !authorized(a, c, req)) {
        sp__api_send_error(a, c, 401, "invalid_request_error", NULL, "invalid_api_key",
                           "WWW-Authenticate: Bearer\r\n", pbuf,
                           "missing or invalid API key: send 'Authorization: Bearer <key>'");
        return;
    }
    r->handle(a, c, req);
}

/* Uploads to /v1/files may be larger than other bodies. */
static size_t body_limit(void *ctx, const sp_http_req *req) {
    const sp_api *a = ctx;
    return sp_str_eq(req->method, "POST") && sp_str_eq(sp__api_route_path(req->path), "/files")
               ? a->o.max_upload_bytes
               : 0;
}

sp_http_handler sp_api_handler(sp_api *a) {
    return (sp_http_handler){.ctx = a,
                             .on_request = on_request,
                             .on_close = sp__api_on_close,
                             .body_limit = body_limit};
}

sp_err sp_api_create(const sp_api_opts *opts, const sp_model *m, const sp_vocab *v,
                     const sp_tmpl *tmpl, sp_engine *e, sp_api **out) {
    sp_api *a = calloc(1, sizeof *a);
    if (!a)
        return SP_ERR_NOMEM;
    a->o = opts ? *opts : sp_api_opts_default();
    if (!a->o.model_name)
        a->o.model_name = "spindle";
    if (a->o.max_waiting <= 0)
        a->o.max_waiting = 1024;
    if (a->o.stall_us <= 0)
        a->o.stall_us = 30 * 1000000LL;
    if (!a->o.max_upload_bytes)
        a->o.max_upload_bytes = (size_t)200 << 20;
    if (!a->o.max_line_bytes)
        a->o.max_line_bytes = (size_t)4 << 20;
    a->m = m;
    a->v = v;
    a->tmpl = tmpl;
    a->e = e;
    a->seed_state = (uint64_t)sp_time_ns() ^ ((uint64_t)getpid() << 32);
    sp_metrics_init(&a->metrics);
    *out = a;
    return SP_OK;
}

sp_err sp_api_enable_batches(sp_api *a, sp_store *store, const char *store_error,
                             sp_http_server *srv) {
    a->store = store;
    a->srv = srv;
    snprintf(a->store_error, sizeof a->store_error, "%s",
             store_error ? store_error : "the server was started without a data directory");
    return store ? sp__batch_runner_create(a, &a->runner) : SP_OK;
}

void sp_api_tick(sp_api *a) {
    sp__batch_advance(a->runner);
}

void sp_api_stop_batches(sp_api *a) {
    sp__batch_stop(a->runner);
}

bool sp_api_batches_idle(const sp_api *a) {
    return sp__batch_idle(a->runner);
}

void sp_api_destroy(sp_api *a) {
    if (!a)
        return;
    sp__batch_runner_destroy(a->runner);
    sp__api_free_all(a);
    sp_grammars_clear(&a->grammars);
    free(a);
}
