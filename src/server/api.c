#include "server/api.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/log.h"
#include "base/util.h"
#include "server/metrics.h"
#include "server/oai.h"

typedef struct api_op api_op;

/* One choice of an exchange: one engine request. */
typedef struct api_choice {
    api_op *op;
    int index;
    sp_request *req;
    sp_req_cursor cur;
    char *text; // accumulated text (non-streamed) or the latest delta (streamed)
    size_t text_len, text_cap;
    sp_req_token *toks; // (max_tokens) tokens read so far
    int32_t *top_ids;   // (max_tokens, logprobs)
    float *top_lps;
    int32_t n_toks, cap_toks;
    int32_t n_prompt;
    sp_finish finish;
    sp_err error;
    char error_msg[160];
    int64_t t_last_token_us;
    bool done;
} api_choice;

/* One HTTP exchange in flight. */
struct api_op {
    sp_api *api;
    sp_http_conn *conn; // NULL once the client is gone
    sp_oai_kind kind;
    bool stream;
    bool include_usage;
    bool sent_head;
    int32_t logprobs;
    int32_t priority;
    char id[48];
    int64_t created;
    int64_t t_start_us;
    int n_choices;
    int n_done;
    api_choice *choices;
    char *echo; // completions with echo: the prompt text, per prompt (NUL-separated)
    api_op *next, *prev; // the API's list of exchanges in flight
};

struct sp_api {
    sp_api_opts o;
    const sp_model *m;
    const sp_vocab *v;
    const sp_tmpl *tmpl;
    sp_engine *e;
    sp_metrics metrics;
    api_op *active;
    int n_active;
    uint64_t next_id;
    uint64_t seed_state;
};

sp_api_opts sp_api_opts_default(void) {
    return (sp_api_opts){.model_name = "spindle",
                         .max_waiting = 1024,
                         .stall_us = 30 * 1000000LL,
                         .log_requests = true};
}

/* ---- JSON helpers --------------------------------------------------------------------------- */

/* A JSON string from bytes that may not be valid UTF-8 (token pieces): invalid sequences
 * become U+FFFD. */
static json_t *json_bytes(const char *p, size_t n) {
    json_t *s = json_stringn(p, n);
    if (s)
        return s;
    char *buf = malloc(n * 3 + 1);
    if (!buf)
        return json_string("");
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)p[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            ok = ((unsigned char)p[i + k] >> 6) == 2;
        if (ok && len > 1) {
            // Reject overlong forms and surrogates by asking jansson about the character.
            json_t *t = json_stringn(p + i, len);
            ok = t != NULL;
            json_decref(t);
        }
        if (ok) {
            memcpy(buf + o, p + i, len);
            o += len;
            i += len;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    s = json_stringn(buf, o);
    free(buf);
    return s ? s : json_string("");
}

static char *dump(json_t *j, size_t *len) {
    char *s = json_dumps(j, JSON_COMPACT);
    *len = s ? strlen(s) : 0;
    return s;
}

/* ---- errors --------------------------------------------------------------------------------- */

static void log_http(sp_api *a, int status, const char *path, const char *msg) {
    a->metrics.http_requests++;
    if (status >= 400)
        a->metrics.http_errors++;
    if (a->o.log_requests && status >= 400)
        SP_INFO("http %d %s: %s", status, path, msg);
}

static void send_error(sp_api *a, sp_http_conn *c, int status, const char *type,
                       const char *param, const char *code, const char *extra_headers,
                       const char *path, const char *fmt, ...) SP_PRINTF(9, 10);

static void send_error(sp_api *a, sp_http_conn *c, int status, const char *type,
                       const char *param, const char *code, const char *extra_headers,
                       const char *path, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *err = json_pack("{s:o, s:s, s:o, s:o}", "message", json_bytes(msg, strlen(msg)),
                            "type", type, "param",
                            param && *param ? json_string(param) : json_null(), "code",
                            code ? json_string(code) : json_null());
    json_t *root = json_pack("{s:o}", "error", err);
    size_t len;
    char *body = dump(root, &len);
    json_decref(root);
    log_http(a, status, path, msg);
    if (sp_http_respond(c, status, "application/json", extra_headers, body ? body : "{}",
                        body ? len : 2) != SP_OK)
        SP_DEBUG("could not queue an error response");
    free(body);
}

static void send_json(sp_api *a, sp_http_conn *c, json_t *root, const char *path) {
    size_t len;
    char *body = dump(root, &len);
    json_decref(root);
    if (!body) {
        send_error(a, c, 500, "server_error", NULL, NULL, NULL, path, "out of memory");
        return;
    }
    log_http(a, 200, path, "");
    if (sp_http_respond(c, 200, "application/json", NULL, body, len) != SP_OK)
        SP_DEBUG("could not queue a response");
    free(body);
}

/* ---- exchanges ------------------------------------------------------------------------------ */

static void op_free(api_op *op) {
    sp_api *a = op->api;
    if (op->prev)
        op->prev->next = op->next;
    else
        a->active = op->next;
    if (op->next)
        op->next->prev = op->prev;
    a->n_active--;
    for (int i = 0; i < op->n_choices; i++) {
        api_choice *ch = &op->choices[i];
        // The engine may still hold this request in its ready list (output published after
        // our last read): that entry must find no exchange behind it.
        if (ch->req) {
            sp_request_set_user(ch->req, NULL);
            sp_request_release(ch->req);
        }
        free(ch->text);
        free(ch->toks);
        free(ch->top_ids);
        free(ch->top_lps);
    }
    free(op->choices);
    free(op->echo);
    free(op);
}

static const char *finish_reason(sp_finish f) {
    return f == SP_FINISH_LENGTH ? "length" : "stop";
}

static json_t *usage_json(const api_op *op) {
    int64_t prompt = 0, gen = 0, cached = 0;
    // Each prompt counts once even when n > 1 shares it.
    for (int i = 0; i < op->n_choices; i++) {
        const api_choice *ch = &op->choices[i];
        sp_req_stats st;
        sp_request_stats(ch->req, &st);
        gen += st.n_generated;
        if (i == 0 || ch->n_prompt != op->choices[i - 1].n_prompt || true) {
            prompt += ch->n_prompt;
            cached += st.n_cached;
        }
    }
    int n_per_prompt = op->n_choices;
    (void)n_per_prompt;
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)prompt,
                     "completion_tokens", (json_int_t)gen, "total_tokens",
                     (json_int_t)(prompt + gen), "prompt_tokens_details", "cached_tokens",
                     (json_int_t)cached);
}

/* Log-probabilities of tokens [from, to) of a choice in the endpoint's format. */
static json_t *logprobs_json(const api_op *op, const api_choice *ch, int32_t from, int32_t to) {
    const sp_vocab *v = op->api->v;
    const int32_t k = op->logprobs;
    if (op->kind == SP_OAI_CHAT) {
        json_t *content = json_array();
        for (int32_t i = from; i < to; i++) {
            sp_str piece = sp_tok_piece_ref(v, ch->toks[i].id, false);
            json_t *bytes = json_array();
            for (uint64_t b = 0; b < piece.len; b++)
                json_array_append_new(bytes, json_integer((unsigned char)piece.ptr[b]));
            json_t *top = json_array();
            for (int32_t j = 0; j < k; j++) {
                int32_t id = ch->top_ids[(size_t)i * (size_t)k + (size_t)j];
                sp_str tp = sp_tok_piece_ref(v, id, false);
                json_t *tb = json_array();
                for (uint64_t b = 0; b < tp.len; b++)
                    json_array_append_new(tb, json_integer((unsigned char)tp.ptr[b]));
                json_array_append_new(
                    top, json_pack("{s:o, s:f, s:o}", "token", json_bytes(tp.ptr, tp.len),
                                   "logprob", (double)ch->top_lps[(size_t)i * (size_t)k + (size_t)j],
                                   "bytes", tb));
            }
            json_array_append_new(
                content, json_pack("{s:o, s:f, s:o, s:o}", "token",
                                   json_bytes(piece.ptr, piece.len), "logprob",
                                   (double)ch->toks[i].logprob, "bytes", bytes, "top_logprobs",
                                   top));
        }
        return json_pack("{s:o}", "content", content);
    }
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(),
           *offsets = json_array();
    size_t offset = 0;
    for (int32_t i = 0; i < from; i++)
        offset += sp_tok_piece_ref(v, ch->toks[i].id, false).len;
    for (int32_t i = from; i < to; i++) {
        sp_str piece = sp_tok_piece_ref(v, ch->toks[i].id, false);
        json_array_append_new(tokens, json_bytes(piece.ptr, piece.len));
        json_array_append_new(lps, json_real(ch->toks[i].logprob));
        json_array_append_new(offsets, json_integer((json_int_t)offset));
        offset += piece.len;
        json_t *top = json_object();
        for (int32_t j = 0; j < k; j++) {
            int32_t id = ch->top_ids[(size_t)i * (size_t)k + (size_t)j];
            sp_str tp = sp_tok_piece_ref(v, id, false);
            json_t *key = json_bytes(tp.ptr, tp.len);
            json_object_set_new(top, json_string_value(key),
                                json_real(ch->top_lps[(size_t)i * (size_t)k + (size_t)j]));
            json_decref(key);
        }
        json_array_append_new(tops, top);
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lps,
                     "top_logprobs", tops, "text_offset", offsets);
}

static json_t *chunk_base(const api_op *op) {
    const char *model = op->api->o.model_name;
    return json_pack("{s:s, s:s, s:I, s:s}", "id", op->id, "object",
                     op->kind == SP_OAI_CHAT ? "chat.completion.chunk" : "text_completion",
                     "created", (json_int_t)op->created, "model", model);
}

static bool sse_send(api_op *op, json_t *root) {
    size_t len;
    char *body = dump(root, &len);
    json_decref(root);
    if (!body)
        return false;
    char *buf = malloc(len + 9);
    if (!buf) {
        free(body);
        return false;
    }
    memcpy(buf, "data: ", 6);
    memcpy(buf + 6, body, len);
    memcpy(buf + 6 + len, "\n\n", 2);
    sp_err err = sp_http_stream_write(op->conn, buf, len + 8);
    free(body);
    free(buf);
    return err == SP_OK;
}

/* One streamed chunk for a choice: its new text (and logprobs), and its finish reason when
 * final. */
static bool stream_choice(api_op *op, api_choice *ch, int32_t tok_from, bool final) {
    json_t *root = chunk_base(op);
    json_t *c = json_pack("{s:i}", "index", ch->index);
    json_t *text = json_bytes(ch->text, ch->text_len);
    if (op->kind == SP_OAI_CHAT) {
        json_t *delta = json_object();
        if (ch->text_len || !final)
            json_object_set_new(delta, "content", text);
        else
            json_decref(text);
        json_object_set_new(c, "delta", delta);
    } else {
        json_object_set_new(c, "text", text);
    }
    json_object_set_new(c, "logprobs", op->logprobs >= 0 && ch->n_toks > tok_from
                                           ? logprobs_json(op, ch, tok_from, ch->n_toks)
                                           : json_null());
    json_object_set_new(c, "finish_reason",
                        final ? json_string(finish_reason(ch->finish)) : json_null());
    json_object_set_new(root, "choices", json_pack("[o]", c));
    if (op->include_usage)
        json_object_set_new(root, "usage", json_null());
    return sse_send(op, root);
}

static void op_log(api_op *op, int status) {
    sp_api *a = op->api;
    log_http(a, status, op->kind == SP_OAI_CHAT ? "/v1/chat/completions" : "/v1/completions",
             "");
    for (int i = 0; i < op->n_choices; i++) {
        sp_req_stats st;
        sp_request_stats(op->choices[i].req, &st);
        sp_finish f = op->choices[i].finish;
        a->metrics.requests[f]++;
        a->metrics.prompt_tokens += (uint64_t)st.n_prompt;
        a->metrics.generation_tokens += (uint64_t)st.n_generated;
        if (st.t_first_token_us)
            sp_hist_observe(&a->metrics.ttft, (double)(st.t_first_token_us - st.t_submit_us) / 1e6);
        if (st.t_admit_us) {
            double q = (double)(st.t_admit_us - st.t_submit_us) / 1e6;
            int32_t prio = op->priority;
            sp_hist_observe(&a->metrics.queue, q);
            sp_hist_observe(&a->metrics.queue_prio[prio < 0 ? 0 : prio == 0 ? 1 : 2], q);
        }
        if (st.t_end_us)
            sp_hist_observe(&a->metrics.e2e, (double)(st.t_end_us - st.t_submit_us) / 1e6);
        if (a->o.log_requests)
            SP_INFO("%s/%d %d %s prompt=%d cached=%d gen=%d preempted=%d queue=%.1fms "
                    "ttft=%.1fms e2e=%.1fms",
                    op->id, i, status, sp_finish_name(f), st.n_prompt, st.n_cached,
                    st.n_generated, st.n_preemptions,
                    st.t_admit_us ? (double)(st.t_admit_us - st.t_submit_us) / 1e3 : 0.0,
                    st.t_first_token_us ? (double)(st.t_first_token_us - st.t_submit_us) / 1e3
                                        : 0.0,
                    st.t_end_us ? (double)(st.t_end_us - st.t_submit_us) / 1e3 : 0.0);
    }
}

/* All choices are done: send the whole response or end the stream, then free. */
static void op_complete(api_op *op) {
    sp_api *a = op->api;
    if (!op->conn) {
        op_log(op, 499);
        op_free(op);
        return;
    }
    api_choice *failed = NULL;
    for (int i = 0; i < op->n_choices; i++)
        if (op->choices[i].finish == SP_FINISH_ERROR || op->choices[i].finish == SP_FINISH_CANCELLED)
            failed = &op->choices[i];
    if (op->stream) {
        if (failed) {
            json_t *err = json_pack("{s:{s:s, s:s, s:n, s:n}}", "error", "message",
                                    failed->finish == SP_FINISH_CANCELLED
                                        ? "the request was cancelled"
                                        : failed->error_msg,
                                    "type", "server_error", "param", "code");
            sse_send(op, err);
        } else if (op->include_usage) {
            json_t *root = chunk_base(op);
            json_object_set_new(root, "choices", json_array());
            json_object_set_new(root, "usage", usage_json(op));
            sse_send(op, root);
        }
        if (sp_http_stream_write(op->conn, "data: [DONE]\n\n", 14) != SP_OK ||
            sp_http_stream_end(op->conn) != SP_OK)
            SP_DEBUG("stream end failed");
        sp_http_set_user(op->conn, NULL);
        op_log(op, failed ? 500 : 200);
        op_free(op);
        return;
    }
    sp_http_conn *c = op->conn;
    sp_http_set_user(c, NULL);
    if (failed) {
        // A deadline that cannot be met is the server being too busy: 503, try again later.
        bool late = failed->finish == SP_FINISH_ERROR && failed->error == SP_ERR_LIMIT;
        send_error(a, c, late ? 503 : 500, "server_error", NULL,
                   late ? "deadline_exceeded" : NULL, late ? "Retry-After: 1\r\n" : NULL,
                   "/v1/completions", "%s",
                   failed->finish == SP_FINISH_CANCELLED ? "the request was cancelled"
                                                         : failed->error_msg);
        op_log(op, late ? 503 : 500);
        op_free(op);
        return;
    }
    json_t *root = json_pack("{s:s, s:s, s:I, s:s}", "id", op->id, "object",
                             op->kind == SP_OAI_CHAT ? "chat.completion" : "text_completion",
                             "created", (json_int_t)op->created, "model", a->o.model_name);
    json_t *choices = json_array();
    for (int i = 0; i < op->n_choices; i++) {
        api_choice *ch = &op->choices[i];
        json_t *c1 = json_pack("{s:i}", "index", ch->index);
        json_t *text = json_bytes(ch->text, ch->text_len);
        if (op->kind == SP_OAI_CHAT)
            json_object_set_new(c1, "message",
                                json_pack("{s:s, s:o}", "role", "assistant", "content", text));
        else
            json_object_set_new(c1, "text", text);
        json_object_set_new(c1, "logprobs", op->logprobs >= 0 ? logprobs_json(op, ch, 0, ch->n_toks)
                                                              : json_null());
        json_object_set_new(c1, "finish_reason", json_string(finish_reason(ch->finish)));
        json_array_append_new(choices, c1);
    }
    json_object_set_new(root, "choices", choices);
    json_object_set_new(root, "usage", usage_json(op));
    op_log(op, 200);
    a->metrics.http_requests--; // op_log counted it; send_json counts again
    send_json(a, c, root, "/v1/completions");
    op_free(op);
}

/* Reads a choice's new output; streams it when the exchange streams. */
static void pump_choice(api_choice *ch) {
    api_op *op = ch->op;
    if (ch->done)
        return;
    int32_t tok_from = ch->n_toks;
    size_t text_from = ch->text_len;
    sp_req_read rd;
    int32_t k = op->logprobs > 0 ? op->logprobs : 0;
    if (sp_request_read(ch->req, &ch->cur, ch->toks + ch->n_toks, ch->cap_toks - ch->n_toks,
                        k ? ch->top_ids + (size_t)ch->n_toks * (size_t)k : NULL,
                        k ? ch->top_lps + (size_t)ch->n_toks * (size_t)k : NULL, &ch->text,
                        &ch->text_len, &ch->text_cap, &rd) != SP_OK) {
        sp_request_cancel(ch->req);
        return;
    }
    ch->n_toks += rd.n_new_tokens;
    int64_t now = sp_time_us();
    for (int32_t i = 0; i < rd.n_new_tokens; i++) {
        if (ch->t_last_token_us)
            sp_hist_observe(&op->api->metrics.itl, (double)(now - ch->t_last_token_us) / 1e6);
        ch->t_last_token_us = now;
    }
    if (rd.finish != SP_FINISH_NONE) {
        ch->finish = rd.finish;
        ch->error = rd.error;
        snprintf(ch->error_msg, sizeof ch->error_msg, "%s",
                 rd.error_msg[0] ? rd.error_msg : "the request failed");
        ch->done = true;
        op->n_done++;
    }
    if (op->stream && op->conn) {
        bool final = ch->done && ch->finish != SP_FINISH_ERROR && ch->finish != SP_FINISH_CANCELLED;
        bool has_new = ch->text_len > text_from || ch->n_toks > tok_from;
        if (has_new || final) {
            // Stream only the delta: shift it to the front of the buffer.
            memmove(ch->text, ch->text + text_from, ch->text_len - text_from);
            ch->text_len -= text_from;
            if (!stream_choice(op, ch, tok_from, final)) {
                // Too slow a reader (or out of memory): cancel everything of this exchange.
                for (int i = 0; i < op->n_choices; i++)
                    sp_request_cancel(op->choices[i].req);
            }
            ch->text_len = 0;
        }
    }
}

void sp_api_on_engine_output(void *ctx) {
    sp_api *a = ctx;
    uint64_t n;
    if (read(sp_engine_notify_fd(a->e), &n, sizeof n) < 0) {
        // EAGAIN: another wake-up already drained it.
    }
    for (sp_request *r = sp_engine_take_ready(a->e); r;) {
        sp_request *next = sp_request_next_ready(r);
        api_choice *ch = sp_request_get_user(r);
        if (ch) {
            api_op *op = ch->op;
            pump_choice(ch);
            if (op->n_done == op->n_choices)
                op_complete(op);
        }
        sp_request_release(r);
        r = next;
    }
}

static void on_close(void *ctx, sp_http_conn *c, void *user) {
    (void)ctx;
    (void)c;
    api_op *op = user;
    if (!op)
        return;
    op->conn = NULL;
    for (int i = 0; i < op->n_choices; i++)
        if (op->choices[i].req)
            sp_request_cancel(op->choices[i].req);
}

int sp_api_n_active(const sp_api *a) { return a->n_active; }

void sp_api_cancel_all(sp_api *a) {
    for (api_op *op = a->active; op; op = op->next)
        for (int i = 0; i < op->n_choices; i++)
            if (op->choices[i].req)
                sp_request_cancel(op->choices[i].req);
}

/* ---- generation endpoints ------------------------------------------------------------------- */

static uint64_t random_seed(sp_api *a) {
    uint64_t z = (a->seed_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A non-zero 64-bit id for a session or tool name (FNV-1a). */
static uint64_t name_id(const char *name) {
    uint64_t h = 1469598103934665603ull;
    for (const char *c = name; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h ? h : 1;
}

/* Tokenizes prompt number i of a completions request. */
static sp_err prompt_tokens(sp_api *a, const sp_oai_req *q, size_t i, sp_tokens *out,
                            sp_diag *d) {
    json_t *p = q->prompt;
    json_t *one = json_is_string(p) || json_is_integer(json_array_get(p, 0)) ? p
                                                                              : json_array_get(p, i);
    if (json_is_string(one))
        return sp_tok_encode(a->v, json_string_value(one), json_string_length(one), true, true,
                             out, d);
    size_t k;
    json_t *t;
    json_array_foreach(one, k, t) {
        json_int_t id = json_integer_value(t);
        if (id < 0 || id >= (json_int_t)sp_vocab_n_tokens(a->v)) {
            sp_diag_set(d, SP_ERR_INVALID, k, "token id %lld in 'prompt' is not in the vocabulary",
                        (long long)id);
            snprintf(d->param, sizeof d->param, "prompt");
            return SP_ERR_INVALID;
        }
        if (sp_tokens_push(out, (sp_token)id))
            return SP_ERR_NOMEM;
    }
    return SP_OK;
}

/* Renders the conversation and tokenizes it. */
static sp_err chat_tokens(sp_api *a, const sp_oai_req *q, json_t *body, sp_tokens *out,
                          sp_diag *d) {
    json_t *extra = json_object();
    if (!extra)
        return SP_ERR_NOMEM;
    if (q->template_extra)
        json_object_update(extra, q->template_extra);
    json_t *tools = json_object_get(body, "tools");
    if (tools && !json_is_null(tools))
        json_object_set(extra, "tools", tools);
    sp_str bos = sp_vocab_token_text(a->v, sp_vocab_bos(a->v));
    sp_str eos = sp_vocab_token_text(a->v, sp_vocab_eos(a->v));
    char *text = NULL;
    size_t len = 0;
    sp_err err = sp_chat_render(a->tmpl, q->messages, extra, bos.ptr, eos.ptr, true, NULL, &text,
                                &len, d);
    json_decref(extra);
    if (err) {
        if (err != SP_ERR_NOMEM)
            snprintf(d->param, sizeof d->param, "messages");
        return err;
    }
    err = sp_tok_encode(a->v, text, len, true, true, out, d);
    free(text);
    // A template that writes the BOS token itself, on a vocabulary that adds one, would give
    // two: keep one.
    sp_token b = sp_vocab_bos(a->v);
    if (!err && out->n >= 2 && b != SP_TOKEN_NULL && out->ids[0] == b && out->ids[1] == b) {
        memmove(out->ids, out->ids + 1, (out->n - 1) * sizeof *out->ids);
        out->n--;
    }
    return err;
}

static void handle_generate(sp_api *a, sp_http_conn *c, const sp_http_req *req,
                            sp_oai_kind kind) {
    const char *path = kind == SP_OAI_CHAT ? "/v1/chat/completions" : "/v1/completions";
    json_error_t jerr;
    json_t *body = json_loadb(req->body, req->body_len, 0, &jerr);
    if (!body) {
        send_error(a, c, 400, "invalid_request_error", NULL, "invalid_json", NULL, path,
                   "the body is not valid JSON: %s (at byte %d)", jerr.text, jerr.position);
        return;
    }
    sp_oai_req q;
    sp_diag d;
    sp_diag_clear(&d);
    api_op *op = NULL;
    sp_tokens toks;
    sp_tokens_init(&toks);
    if (sp_oai_parse(body, kind, &q, &d)) {
        send_error(a, c, 400, "invalid_request_error", d.param, NULL, NULL, path, "%s", d.msg);
        goto done;
    }
    sp_engine_stats es;
    sp_engine_stats_get(a->e, &es);
    if (es.n_waiting >= a->o.max_waiting) {
        send_error(a, c, 503, "server_error", NULL, "overloaded", "Retry-After: 1\r\n", path,
                   "the server is overloaded (%d requests waiting); retry later", es.n_waiting);
        goto done;
    }
    const size_t n_prompts = sp_oai_n_prompts(&q);
    op = calloc(1, sizeof *op);
    if (!op || !(op->choices = calloc(n_prompts * (size_t)q.n, sizeof *op->choices)))
        goto nomem;
    op->api = a;
    op->kind = kind;
    op->stream = q.stream;
    op->include_usage = q.include_usage;
    op->logprobs = q.logprobs;
    op->priority = q.params.priority;
    op->created = (int64_t)time(NULL);
    op->t_start_us = sp_time_us();
    snprintf(op->id, sizeof op->id, "%s-%" PRIx64, kind == SP_OAI_CHAT ? "chatcmpl" : "cmpl",
             ++a->next_id);
    op->next = a->active;
    if (a->active)
        a->active->prev = op;
    a->active = op;
    a->n_active++;
    const int32_t n_ctx = sp_engine_n_ctx(a->e);
    for (size_t pi = 0; pi < n_prompts; pi++) {
        toks.n = 0;
        sp_err err = kind == SP_OAI_CHAT ? chat_tokens(a, &q, body, &toks, &d)
                                         : prompt_tokens(a, &q, pi, &toks, &d);
        if (err == SP_ERR_NOMEM)
            goto nomem;
        if (err) {
            send_error(a, c, 400, "invalid_request_error",
                       d.param[0] ? d.param : (kind == SP_OAI_CHAT ? "messages" : "prompt"),
                       err == SP_ERR_UTF8 ? "invalid_utf8" : NULL, NULL, path, "%s",
                       d.msg[0] ? d.msg : sp_err_str(err));
            goto cancel;
        }
        if (toks.n == 0) {
            send_error(a, c, 400, "invalid_request_error",
                       kind == SP_OAI_CHAT ? "messages" : "prompt", NULL, NULL, path,
                       "the prompt is empty after tokenization");
            goto cancel;
        }
        if ((int64_t)toks.n >= n_ctx) {
            send_error(a, c, 400, "invalid_request_error",
                       kind == SP_OAI_CHAT ? "messages" : "prompt", "context_length_exceeded",
                       NULL, path,
                       "This model's maximum context length is %d tokens, but the prompt has "
                       "%zu tokens. Shorten the prompt.",
                       n_ctx, toks.n);
            goto cancel;
        }
        sp_req_params p = q.params;
        if (q.session)
            p.session_id = name_id(q.session);
        if (q.tool)
            p.tool_id = name_id(q.tool);
        int32_t room = n_ctx - (int32_t)toks.n;
        if (!q.has_max_tokens && kind == SP_OAI_CHAT)
            p.max_tokens = room;
        p.max_tokens = SP_MIN(p.max_tokens, room);
        for (int32_t k = 0; k < q.n; k++) {
            api_choice *ch = &op->choices[op->n_choices];
            ch->op = op;
            ch->index = (int)(pi * (size_t)q.n) + k;
            ch->n_prompt = (int32_t)toks.n;
            p.sample.seed = q.has_seed ? q.params.sample.seed + (uint64_t)k : random_seed(a);
            ch->cap_toks = p.max_tokens;
            ch->toks = malloc((size_t)p.max_tokens * sizeof *ch->toks);
            if (!ch->toks)
                goto nomem;
            if (q.logprobs > 0) {
                ch->top_ids = malloc((size_t)p.max_tokens * (size_t)q.logprobs * sizeof(int32_t));
                ch->top_lps = malloc((size_t)p.max_tokens * (size_t)q.logprobs * sizeof(float));
                if (!ch->top_ids || !ch->top_lps)
                    goto nomem;
            }
            err = sp_request_create(a->v, toks.ids, (int32_t)toks.n, &p, &ch->req, &d);
            if (err == SP_ERR_NOMEM)
                goto nomem;
            if (err) {
                send_error(a, c, 400, "invalid_request_error", d.param, NULL, NULL, path, "%s",
                           d.msg);
                goto cancel;
            }
            op->n_choices++;
            if (q.echo && kind == SP_OAI_COMPLETION) {
                char *text = NULL;
                size_t len = 0;
                if (sp_tok_decode(a->v, toks.ids, toks.n, SP_DECODE_REMOVE_SPECIAL, &text, &len,
                                  &d) == SP_OK) {
                    if (ch->text_cap < len + 1) {
                        free(ch->text);
                        ch->text = text;
                        ch->text_len = len;
                        ch->text_cap = len + 1;
                    } else {
                        free(text);
                    }
                }
            }
        }
    }
    for (int i = 0; i < op->n_choices; i++) {
        api_choice *ch = &op->choices[i];
        sp_request_set_user(ch->req, ch);
        if (sp_engine_submit(a->e, ch->req, &d)) {
            // Choices already submitted are cancelled; the exchange completes through them.
            op->conn = NULL;
            for (int k = 0; k < op->n_choices; k++)
                if (k < i)
                    sp_request_cancel(op->choices[k].req);
            send_error(a, c, 400, "invalid_request_error", d.param, NULL, NULL, path, "%s",
                       d.msg);
            for (int k = i; k < op->n_choices; k++) {
                op->choices[k].done = true;
                op->choices[k].finish = SP_FINISH_CANCELLED;
                op->n_done++;
            }
            if (op->n_done == op->n_choices)
                op_free(op);
            op = NULL;
            goto done;
        }
    }
    op->conn = c;
    sp_http_set_user(c, op);
    if (op->stream) {
        if (sp_http_stream_begin(c, 200, "text/event-stream",
                                 "Cache-Control: no-cache\r\n") != SP_OK)
            on_close(a, c, op);
        else if (kind == SP_OAI_CHAT) {
            // The first chunk carries the assistant role, as OpenAI's do.
            for (int i = 0; i < op->n_choices; i++) {
                json_t *root = chunk_base(op);
                json_t *ch = json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index",
                                       op->choices[i].index, "delta", "role", "assistant",
                                       "content", "", "logprobs", "finish_reason");
                json_object_set_new(root, "choices", json_pack("[o]", ch));
                if (op->include_usage)
                    json_object_set_new(root, "usage", json_null());
                sse_send(op, root);
            }
        } else {
            for (int i = 0; i < op->n_choices; i++)
                if (op->choices[i].text_len) { // echo
                    stream_choice(op, &op->choices[i], 0, false);
                    op->choices[i].text_len = 0;
                }
        }
    }
    op = NULL;
    goto done;
nomem:
    send_error(a, c, 500, "server_error", NULL, NULL, NULL, path, "out of memory");
cancel:
    if (op) {
        for (int i = 0; i < op->n_choices; i++) {
            sp_request_release(op->choices[i].req);
            op->choices[i].req = NULL;
        }
        op_free(op);
    }
done:
    sp_tokens_deinit(&toks);
    json_decref(body);
}

/* ---- other endpoints ------------------------------------------------------------------------ */

static void handle_tokenize(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    json_error_t jerr;
    json_t *body = json_loadb(req->body, req->body_len, 0, &jerr);
    if (!json_is_object(body)) {
        send_error(a, c, 400, "invalid_request_error", NULL, "invalid_json", NULL, "/tokenize",
                   "the body must be a JSON object: %s", body ? "not an object" : jerr.text);
        json_decref(body);
        return;
    }
    json_t *content = json_object_get(body, "content");
    json_t *add = json_object_get(body, "add_special");
    json_t *parse = json_object_get(body, "parse_special");
    if (!json_is_string(content) || (add && !json_is_boolean(add)) ||
        (parse && !json_is_boolean(parse))) {
        send_error(a, c, 400, "invalid_request_error", json_is_string(content) ? "add_special" : "content",
                   NULL, NULL, "/tokenize",
                   "expected {\"content\": string, \"add_special\": bool, \"parse_special\": bool}");
        json_decref(body);
        return;
    }
    sp_tokens toks;
    sp_tokens_init(&toks);
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = sp_tok_encode(a->v, json_string_value(content), json_string_length(content),
                               json_is_true(add), !parse || json_is_true(parse), &toks, &d);
    if (err) {
        send_error(a, c, 400, "invalid_request_error", "content", NULL, NULL, "/tokenize", "%s",
                   d.msg);
    } else {
        json_t *arr = json_array();
        for (size_t i = 0; i < toks.n; i++)
            json_array_append_new(arr, json_integer(toks.ids[i]));
        send_json(a, c, json_pack("{s:o}", "tokens", arr), "/tokenize");
    }
    sp_tokens_deinit(&toks);
    json_decref(body);
}

static void handle_detokenize(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    json_error_t jerr;
    json_t *body = json_loadb(req->body, req->body_len, 0, &jerr);
    json_t *arr = json_object_get(body, "tokens");
    if (!json_is_array(arr)) {
        send_error(a, c, 400, "invalid_request_error", "tokens", NULL, NULL, "/detokenize",
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
        send_error(a, c, 400, "invalid_request_error", "tokens", NULL, NULL, "/detokenize",
                   "'tokens' must hold token ids of this model's vocabulary (0..%u)",
                   sp_vocab_n_tokens(a->v) - 1);
    else
        send_json(a, c, json_pack("{s:o}", "content", json_bytes(text, len)), "/detokenize");
    free(text);
    free(ids);
    json_decref(body);
}

static void handle_health(sp_api *a, sp_http_conn *c) {
    sp_engine_stats es;
    sp_engine_stats_get(a->e, &es);
    int64_t now = sp_time_us();
    int64_t last = SP_MAX(es.last_step_us, es.busy_since_us);
    bool stalled = es.busy_since_us && now - last > a->o.stall_us;
    if (stalled) {
        send_error(a, c, 503, "server_error", NULL, "engine_stalled", "Retry-After: 5\r\n",
                   "/health", "the engine has made no progress for %.1f s",
                   (double)(now - last) / 1e6);
        return;
    }
    send_json(a, c,
              json_pack("{s:s, s:i, s:i}", "status", "ok", "requests_running", es.n_running,
                        "requests_waiting", es.n_waiting),
              "/health");
}

static void handle_metrics(sp_api *a, sp_http_conn *c) {
    sp_engine_stats es;
    sp_engine_stats_get(a->e, &es);
    size_t len;
    char *text = sp_metrics_render(&a->metrics, &es, &len);
    if (!text) {
        send_error(a, c, 500, "server_error", NULL, NULL, NULL, "/metrics", "out of memory");
        return;
    }
    log_http(a, 200, "/metrics", "");
    if (sp_http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len))
        SP_DEBUG("could not queue /metrics");
    free(text);
}

static void handle_models(sp_api *a, sp_http_conn *c) {
    json_t *model = json_pack("{s:s, s:s, s:I, s:s, s:{s:s, s:i, s:I}}", "id", a->o.model_name,
                              "object", "model", "created", (json_int_t)time(NULL), "owned_by",
                              "spindle", "meta", "architecture", a->m->hp.arch_name, "n_ctx",
                              sp_engine_n_ctx(a->e), "n_params_bytes",
                              (json_int_t)sp_model_weight_bytes(a->m));
    send_json(a, c, json_pack("{s:s, s:[o]}", "object", "list", "data", model), "/v1/models");
}

static bool str_is(sp_str s, const char *c) { return sp_str_eq(s, c); }

static bool authorized(const sp_api *a, const sp_http_req *req) {
    if (!a->o.api_key)
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

static void on_request(void *ctx, sp_http_conn *c, const sp_http_req *req) {
    sp_api *a = ctx;
    sp_str path = req->path;
    // The /v1 prefix is optional.
    if (path.len >= 3 && !memcmp(path.ptr, "/v1", 3) && (path.len == 3 || path.ptr[3] == '/')) {
        path.ptr += 3;
        path.len -= 3;
    }
    char pbuf[64];
    snprintf(pbuf, sizeof pbuf, "%.*s", (int)SP_MIN(req->path.len, 60), req->path.ptr);
    static const struct {
        const char *path, *method;
    } routes[] = {{"/completions", "POST"}, {"/chat/completions", "POST"},
                  {"/models", "GET"},       {"/health", "GET"},
                  {"/metrics", "GET"},      {"/tokenize", "POST"},
                  {"/detokenize", "POST"}};
    int route = -1;
    for (int i = 0; i < (int)SP_ARRAY_LEN(routes); i++)
        if (str_is(path, routes[i].path))
            route = i;
    if (route < 0) {
        send_error(a, c, 404, "invalid_request_error", NULL, "not_found", NULL, pbuf,
                   "no endpoint at %s: see GET /v1/models, POST /v1/completions, POST "
                   "/v1/chat/completions",
                   pbuf);
        return;
    }
    if (!str_is(req->method, routes[route].method)) {
        char allow[64];
        snprintf(allow, sizeof allow, "Allow: %s\r\n", routes[route].method);
        send_error(a, c, 405, "invalid_request_error", NULL, "method_not_allowed", allow, pbuf,
                   "%s takes %s", pbuf, routes[route].method);
        return;
    }
    bool public = route == 3 || route == 4;
    if (!public && !authorized(a, req)) {
        send_error(a, c, 401, "invalid_request_error", NULL, "invalid_api_key",
                   "WWW-Authenticate: Bearer\r\n", pbuf,
                   "missing or invalid API key: send 'Authorization: Bearer <key>'");
        return;
    }
    switch (route) {
    case 0:
        handle_generate(a, c, req, SP_OAI_COMPLETION);
        break;
    case 1:
        handle_generate(a, c, req, SP_OAI_CHAT);
        break;
    case 2:
        handle_models(a, c);
        break;
    case 3:
        handle_health(a, c);
        break;
    case 4:
        handle_metrics(a, c);
        break;
    case 5:
        handle_tokenize(a, c, req);
        break;
    default:
        handle_detokenize(a, c, req);
        break;
    }
}

sp_http_handler sp_api_handler(sp_api *a) {
    return (sp_http_handler){.ctx = a, .on_request = on_request, .on_close = on_close};
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
    a->m = m;
    a->v = v;
    a->tmpl = tmpl;
    a->e = e;
    a->seed_state = (uint64_t)sp_time_ns() ^ ((uint64_t)getpid() << 32);
    sp_metrics_init(&a->metrics);
    *out = a;
    return SP_OK;
}

void sp_api_destroy(sp_api *a) {
    if (!a)
        return;
    while (a->active)
        op_free(a->active);
    free(a);
}
