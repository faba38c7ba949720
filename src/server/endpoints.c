/* The small endpoints: /v1/models, /health, /metrics, /tokenize, /detokenize. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/util.h"
#include "server/api_int.h"

static void send_tokens(sp_api *a, sp_http_conn *c, const sp_tokens *toks) {
    json_t *arr = json_array();
    for (size_t i = 0; i < toks->n; i++)
        json_array_append_new(arr, json_integer(toks->ids[i]));
    sp__api_send_json(a, c, json_pack("{s:o, s:I}", "tokens", arr, "count", (json_int_t)toks->n),
                      "/tokenize");
}

/* vLLM's form: {"messages": [...]} (a chat request, rendered by the template as generation
 * renders it) or {"prompt": text or token ids}. */
static void tokenize_request(sp_api *a, sp_http_conn *c, json_t *body) {
    const sp_oai_kind kind = json_object_get(body, "messages") ? SP_OAI_CHAT : SP_OAI_COMPLETION;
    sp_oai_req q;
    sp_diag d;
    sp_diag_clear(&d);
    sp_tokens toks;
    sp_tokens_init(&toks);
    sp_err err = sp_oai_parse(body, kind, &q, &d);
    if (!err && kind == SP_OAI_COMPLETION && sp_oai_n_prompts(&q) != 1)
        err = sp_diag_set(&d, SP_ERR_INVALID, UINT64_MAX, "one prompt at a time");
    if (!err)
        err = sp__api_prompt_tokens(a, kind, &q, body, 0, &toks, &d);
    if (err == SP_ERR_NOMEM)
        sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, "/tokenize",
                           "out of memory");
    else if (err)
        sp__api_send_error(a, c, 400, "invalid_request_error",
                           d.param[0] ? d.param : (kind == SP_OAI_CHAT ? "messages" : "prompt"),
                           NULL, NULL, "/tokenize", "%s", d.msg);
    else
        send_tokens(a, c, &toks);
    sp_tokens_deinit(&toks);
}

void sp__api_handle_tokenize(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    json_t *body = sp__api_read_body(a, c, req, "/tokenize");
    if (!body)
        return;
    if (!json_object_get(body, "content") &&
        (json_object_get(body, "messages") || json_object_get(body, "prompt"))) {
        tokenize_request(a, c, body);
        json_decref(body);
        return;
    }
    json_t *content = json_object_get(body, "content");
    json_t *add = json_object_get(body, "add_special");
    json_t *parse = json_object_get(body, "parse_special");
    if (!json_is_string(content) || (add && !json_is_boolean(add)) ||
        (parse && !json_is_boolean(parse))) {
        sp__api_send_error(
            a, c, 400, "invalid_request_error", json_is_string(content) ? "add_special" : "content",
            NULL, NULL, "/tokenize",
            "expected {\"content\": string, \"add_special\": bool, \"parse_special\": bool}, "
            "or a completions or chat request ({\"prompt\": ...} or {\"messages\": [...]})");
        json_decref(body);
        return;
    }
    sp_tokens toks;
    sp_tokens_init(&toks);
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = sp_tok_encode(a->v, json_string_value(content), json_string_length(content),
                               json_is_true(add), !parse || json_is_true(parse), &toks, &d);
    if (err)
        sp__api_send_error(a, c, 400, "invalid_request_error", "content", NULL, NULL, "/tokenize",
                           "%s", d.msg);
    else
        send_tokens(a, c, &toks);
    sp_tokens_deinit(&toks);
    json_decref(body);
}

void sp__api_handle_detokenize(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    json_t *body = sp__api_read_body(a, c, req, "/detokenize");
    if (!body)
        return;
    json_t *arr = json_object_get(body, "tokens");
    if (!json_is_array(arr)) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "tokens", NULL, NULL, "/detokenize",
                           "expected {\"tokens\": [integer, ...]}");
        json_decref(body);
        return;
    }
    size_t n = json_array_size(arr);
    sp_token *ids = malloc((n ? n : 1) * sizeof *ids);
    bool ok = ids != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *t = json_array_get(arr, i);
        ok = json_is_integer(t) && json_integer_value(t) >= 0 &&
             json_integer_value(t) < (json_int_t)sp_vocab_n_tokens(a->v);
        if (ok)
            ids[i] = (sp_token)json_integer_value(t);
    }
    char *text = NULL;
    size_t len = 0;
    sp_diag d;
    if (!ok || sp_tok_decode(a->v, ids, n, 0, &text, &len, &d) != SP_OK)
        sp__api_send_error(a, c, 400, "invalid_request_error", "tokens", NULL, NULL, "/detokenize",
                           "'tokens' must hold token ids of this model's vocabulary (0..%u)",
                           sp_vocab_n_tokens(a->v) - 1);
    else
        sp__api_send_json(a, c, json_pack("{s:o}", "content", sp__api_json_bytes(text, len)),
                          "/detokenize");
    free(text);
    free(ids);
    json_decref(body);
}

void sp__api_handle_health(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    (void)req;
    sp_engine_stats es;
    sp_engine_stats_get(a->e, &es);
    int64_t now = sp_time_us();
    int64_t last = SP_MAX(es.last_step_us, es.busy_since_us);
    bool stalled = es.busy_since_us && now - last > a->o.stall_us;
    if (stalled) {
        sp__api_send_error(a, c, 503, "server_error", NULL, "engine_stalled", "Retry-After: 5\r\n",
                           "/health", "the engine has made no progress for %.1f s",
                           (double)(now - last) / 1e6);
        return;
    }
    sp__api_send_json(a, c,
                      json_pack("{s:s, s:i, s:i}", "status", "ok", "requests_running", es.n_running,
                                "requests_waiting", es.n_waiting),
                      "/health");
}

void sp__api_handle_metrics(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    (void)req;
    sp_engine_stats es;
    sp_engine_stats_get(a->e, &es);
    size_t len;
    char *text = sp_metrics_render(&a->metrics, &es, &len);
    if (!text) {
        sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, "/metrics",
                           "out of memory");
        return;
    }
    sp__api_log_http(a, 200, "/metrics", "");
    if (sp_http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len)) {
        SP_DEBUG("could not queue /metrics: closing the connection");
        sp_http_conn_close(c);
    }
    free(text);
}

void sp__api_handle_models(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    (void)req;
    json_t *model =
        json_pack("{s:s, s:s, s:I, s:s, s:{s:s, s:i, s:I}}", "id", a->o.model_name, "object",
                  "model", "created", (json_int_t)time(NULL), "owned_by", "spindle", "meta",
                  "architecture", a->m->hp.arch_name, "n_ctx", sp_engine_n_ctx(a->e),
                  "n_params_bytes", (json_int_t)sp_model_weight_bytes(a->m));
    sp__api_send_json(a, c, json_pack("{s:s, s:[o]}", "object", "list", "data", model),
                      "/v1/models");
}
