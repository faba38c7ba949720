/* The generation endpoints (/v1/completions, /v1/chat/completions): an exchange's life.
 *
 * A request body is parsed (oai.c), each prompt rendered and tokenized, and one engine request
 * created per choice (prompts x n); only when every choice exists and the admission limit takes
 * all of them at once are they submitted, so a request is accepted or refused whole. The
 * engine's output arrives through its notify fd (sp_api_on_engine_output): each choice's new
 * tokens and text are read, streamed as server-sent events or accumulated, and once every
 * choice is done the exchange answers (or ends its stream) and is freed.
 *
 * Every way out answers the client exactly once: a whole response, a stream that ends with a
 * finish_reason or an error event and then [DONE], or, when not even that can be queued (out
 * of memory, a reader too slow to keep up), a closed connection. A client that leaves cancels
 * its requests; the exchange is freed when the engine has let go of all of them. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/hash.h"
#include "base/log.h"
#include "base/util.h"
#include "grammar/grammar.h"
#include "server/api_int.h"
#include "server/tools.h"

/* ---- exchanges ------------------------------------------------------------------------------ */

/* The choice no longer counts against the admission limit (it finished, or never ran). */
static void choice_retire(api_choice *ch) {
    if (ch->submitted) {
        ch->submitted = false;
        ch->op->api->n_live_seqs--;
    }
}

static void op_free(api_op *op) {
    sp_api *a = op->api;
    if (op->prev)
        op->prev->next = op->next;
    else
        a->active = op->next;
    if (op->next)
        op->next->prev = op->prev;
    a->n_active--;
    // Every slot: a choice being built when its exchange failed holds buffers too.
    for (int i = 0; i < op->cap_choices; i++) {
        api_choice *ch = &op->choices[i];
        choice_retire(ch);
        // The engine may still hold this request in its ready list (output published after
        // our last read): that entry must find no exchange behind it.
        if (ch->req) {
            sp_request_set_user(ch->req, NULL);
            sp_request_release(ch->req);
        }
        sp_tools_reader_destroy(ch->tools);
        free(ch->text);
        free(ch->toks);
        free(ch->top_ids);
        free(ch->top_lps);
    }
    free(op->choices);
    free(op);
}

/* A new exchange for n_choices choices, in the API's list; NULL when out of memory. */
static api_op *op_create(sp_api *a, sp_oai_kind kind, const sp_oai_req *q, int n_choices) {
    api_op *op = calloc(1, sizeof *op);
    if (!op || !(op->choices = calloc((size_t)n_choices, sizeof *op->choices))) {
        free(op);
        return NULL;
    }
    op->cap_choices = n_choices;
    op->api = a;
    op->kind = kind;
    op->stream = q->stream;
    op->include_usage = q->include_usage;
    op->logprobs = q->logprobs;
    op->priority = q->params.priority;
    op->created = (int64_t)time(NULL);
    snprintf(op->id, sizeof op->id, "%s-%" PRIx64, kind == SP_OAI_CHAT ? "chatcmpl" : "cmpl",
             ++a->next_id);
    op->next = a->active;
    if (a->active)
        a->active->prev = op;
    a->active = op;
    a->n_active++;
    return op;
}

static void op_cancel(api_op *op) {
    for (int i = 0; i < op->n_choices; i++)
        if (op->choices[i].req)
            sp_request_cancel(op->choices[i].req);
}

/* The client cannot be answered any more (gone, or the connection was closed on it): its
 * requests are cancelled and the exchange completes without it. */
static void op_detach(api_op *op) {
    if (op->conn) {
        sp_http_set_user(op->conn, NULL);
        sp_http_conn_close(op->conn);
        op->conn = NULL;
    }
    op_cancel(op);
}

/* Per-request metrics and log lines (the HTTP answer is counted where it is sent). */
static void op_log(api_op *op, int status) {
    sp_api *a = op->api;
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
                    op->id, i, status, sp_finish_name(f), st.n_prompt, st.n_cached, st.n_generated,
                    st.n_preemptions,
                    st.t_admit_us ? (double)(st.t_admit_us - st.t_submit_us) / 1e3 : 0.0,
                    st.t_first_token_us ? (double)(st.t_first_token_us - st.t_submit_us) / 1e3
                                        : 0.0,
                    st.t_end_us ? (double)(st.t_end_us - st.t_submit_us) / 1e3 : 0.0);
    }
}

static const char *op_path(const api_op *op) {
    return op->kind == SP_OAI_CHAT ? "/v1/chat/completions" : "/v1/completions";
}

/* ---- streaming ------------------------------------------------------------------------------ */

/* Sends one server-sent event with root (taken). False if it could not be queued. */
static bool sse_send(api_op *op, json_t *root) {
    if (!root)
        return false;
    char *body = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!body)
        return false;
    size_t len = strlen(body);
    char *buf = malloc(len + 8);
    bool ok = false;
    if (buf) {
        memcpy(buf, "data: ", 6);
        memcpy(buf + 6, body, len);
        memcpy(buf + 6 + len, "\n\n", 2);
        ok = sp_http_stream_write(op->conn, buf, len + 8) == SP_OK;
    }
    free(body);
    free(buf);
    return ok;
}

/* Sends one chunk of a choice: body (taken) as its delta (chat) or text (completions), the
 * log-probabilities of its tokens not sent yet, and finish_reason (null when NULL). */
static bool send_chunk(api_op *op, api_choice *ch, json_t *body, const char *finish) {
    json_t *root = sp__api_chunk_base(op);
    json_t *c = json_pack("{s:i}", "index", ch->index);
    json_object_set_new(c, op->kind == SP_OAI_CHAT ? "delta" : "text", body);
    json_object_set_new(c, "logprobs",
                        op->logprobs >= 0 && ch->n_toks > ch->lp_from
                            ? sp__api_logprobs(op, ch, ch->lp_from, ch->n_toks)
                            : json_null());
    ch->lp_from = ch->n_toks;
    json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
    json_object_set_new(root, "choices", json_pack("[o]", c));
    if (op->include_usage)
        json_object_set_new(root, "usage", json_null());
    return sse_send(op, root);
}

/* One streamed chunk for a choice: its new text (and logprobs), and its finish reason when
 * final. */
static bool stream_choice(api_op *op, api_choice *ch, bool final) {
    json_t *text = sp__api_json_bytes(ch->text, ch->text_len);
    json_t *body = text;
    if (op->kind == SP_OAI_CHAT) {
        body = json_object();
        if (ch->text_len || !final)
            json_object_set_new(body, "content", text);
        else
            json_decref(text);
    }
    return send_chunk(op, ch, body, final ? sp__api_finish_reason(ch) : NULL);
}

/* The chunks of a chat choice that may call tools, from what its reader decided since the
 * last: new content, then each call's start and argument fragments (one chunk each, as OpenAI
 * sends them), then, when final, an empty delta with the finish reason. */
static bool stream_tools(api_op *op, api_choice *ch, bool final) {
    const sp_str content = sp_tools_reader_take_content(ch->tools);
    if (content.len &&
        !send_chunk(op, ch,
                    json_pack("{s:o}", "content", sp__api_json_bytes(content.ptr, content.len)),
                    NULL))
        return false;
    sp_tool_delta d;
    while (sp_tools_reader_next_delta(ch->tools, &d))
        if (!send_chunk(op, ch, json_pack("{s:[o]}", "tool_calls", sp__api_tool_delta(&d)), NULL))
            return false;
    return !final || send_chunk(op, ch, json_object(), sp__api_finish_reason(ch));
}

/* The first events of a stream: the assistant role (chat, as OpenAI's first chunk), or the
 * echoed prompt (completions with echo). */
static bool stream_start(api_op *op) {
    for (int i = 0; i < op->n_choices; i++) {
        api_choice *ch = &op->choices[i];
        if (op->kind == SP_OAI_CHAT) {
            json_t *root = sp__api_chunk_base(op);
            json_t *c = json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", ch->index, "delta",
                                  "role", "assistant", "content", "", "logprobs", "finish_reason");
            json_object_set_new(root, "choices", json_pack("[o]", c));
            if (op->include_usage)
                json_object_set_new(root, "usage", json_null());
            if (!sse_send(op, root))
                return false;
        } else if (ch->text_len) {
            if (!stream_choice(op, ch, false))
                return false;
            ch->text_len = 0;
        }
    }
    return true;
}

/* An event could not be queued (out of memory, or a reader too slow to keep up): the stream
 * ends at once with an error event and [DONE] if the connection still takes those few bytes,
 * else the connection is closed; either way the exchange's requests are cancelled. */
static void stream_abort(api_op *op) {
    static const char end[] = "data: {\"error\":{\"message\":\"the stream could not be "
                              "continued (out of memory or the client reads too slowly)\","
                              "\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n"
                              "data: [DONE]\n\n";
    if (op->conn && sp_http_stream_write(op->conn, end, sizeof end - 1) == SP_OK &&
        sp_http_stream_end(op->conn) == SP_OK) {
        sp_http_set_user(op->conn, NULL);
        op->conn = NULL;
        op->answered = true;
        sp__api_log_http(op->api, 500, op_path(op), "the stream could not be continued");
    }
    op_detach(op);
}

/* ---- completion ----------------------------------------------------------------------------- */

/* All choices are done: send the whole response or end the stream, then free. */
static void op_complete(api_op *op) {
    sp_api *a = op->api;
    if (!op->conn) {
        if (!op->answered)
            sp__api_log_http(a, 499, op_path(op), "the client went away");
        op_log(op, 499);
        op_free(op);
        return;
    }
    api_choice *failed = NULL;
    for (int i = 0; i < op->n_choices; i++)
        if (op->choices[i].finish == SP_FINISH_ERROR ||
            op->choices[i].finish == SP_FINISH_CANCELLED)
            failed = &op->choices[i];
    const char *why = !failed                                 ? NULL
                      : failed->finish == SP_FINISH_CANCELLED ? "the request was cancelled"
                                                              : failed->error_msg;
    // A deadline that cannot be met is the server being too busy: 503, try again later.
    const bool late = failed && failed->finish == SP_FINISH_ERROR && failed->error == SP_ERR_LIMIT;
    const int status = !failed ? 200 : late ? 503 : 500;
    if (op->stream) {
        bool ok = true;
        if (failed) {
            ok = sse_send(op, json_pack("{s:{s:s, s:s, s:n, s:s*}}", "error", "message", why,
                                        "type", "server_error", "param", "code",
                                        late ? "deadline_exceeded" : NULL));
        } else if (op->include_usage) {
            json_t *root = sp__api_chunk_base(op);
            json_object_set_new(root, "choices", json_array());
            json_object_set_new(root, "usage", sp__api_usage(op));
            ok = sse_send(op, root);
        }
        ok = ok && sp_http_stream_write(op->conn, "data: [DONE]\n\n", 14) == SP_OK &&
             sp_http_stream_end(op->conn) == SP_OK;
        if (ok) {
            sp_http_set_user(op->conn, NULL);
            sp__api_log_http(a, status, op_path(op), why ? why : "");
        } else {
            stream_abort(op);
            if (!op->answered)
                sp__api_log_http(a, 499, op_path(op), "the stream could not be ended");
        }
        op_log(op, status);
        op_free(op);
        return;
    }
    sp_http_conn *c = op->conn;
    sp_http_set_user(c, NULL);
    op_log(op, status);
    if (failed)
        sp__api_send_error(a, c, status, "server_error", NULL, late ? "deadline_exceeded" : NULL,
                           late ? "Retry-After: 1\r\n" : NULL, op_path(op), "%s", why);
    else
        sp__api_send_json(a, c, sp__api_response(op), op_path(op));
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
    sp_err err =
        sp_request_read(ch->req, &ch->cur, ch->toks + ch->n_toks, ch->cap_toks - ch->n_toks,
                        k ? ch->top_ids + (size_t)ch->n_toks * (size_t)k : NULL,
                        k ? ch->top_lps + (size_t)ch->n_toks * (size_t)k : NULL, &ch->text,
                        &ch->text_len, &ch->text_cap, &rd);
    if (!err && ch->tools) // a finish reason comes once all the text has been read
        err = sp_tools_reader_feed(ch->tools, ch->text + text_from, ch->text_len - text_from,
                                   rd.finish == SP_FINISH_STOP || rd.finish == SP_FINISH_LENGTH);
    if (err != SP_OK) {
        // Out of memory for the text: the choice ends here with an error (the engine is told
        // to stop; its final notification finds the choice done).
        sp_request_cancel(ch->req);
        rd = (sp_req_read){.finish = SP_FINISH_ERROR, .error = SP_ERR_NOMEM};
        snprintf(rd.error_msg, sizeof rd.error_msg, "out of memory for the output text");
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
        choice_retire(ch);
    }
    if (op->stream && op->conn) {
        bool final = ch->done && ch->finish != SP_FINISH_ERROR && ch->finish != SP_FINISH_CANCELLED;
        bool has_new = ch->text_len > text_from || ch->n_toks > tok_from;
        if (ch->tools) { // the reader has the text: what it decided is streamed
            ch->text_len = 0;
            if (!stream_tools(op, ch, final))
                stream_abort(op);
        } else if (has_new || final) {
            // Stream only the delta: shift it to the front of the buffer.
            memmove(ch->text, ch->text + text_from, ch->text_len - text_from);
            ch->text_len -= text_from;
            bool ok = stream_choice(op, ch, final);
            ch->text_len = 0;
            if (!ok)
                stream_abort(op);
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

void sp__api_on_close(void *ctx, sp_http_conn *c, void *user) {
    (void)ctx;
    (void)c;
    api_op *op = user;
    if (!op)
        return;
    op->conn = NULL;
    op_cancel(op);
}

int sp_api_n_active(const sp_api *a) {
    return a->n_active;
}

void sp_api_cancel_all(sp_api *a) {
    for (api_op *op = a->active; op; op = op->next)
        op_cancel(op);
}

void sp__api_free_all(sp_api *a) {
    while (a->active)
        op_free(a->active);
}

/* ---- the request ---------------------------------------------------------------------------- */

static uint64_t random_seed(sp_api *a) {
    return sp_splitmix64(&a->seed_state);
}

/* A non-zero 64-bit id for a session or tool name. */
static uint64_t name_id(const char *name) {
    uint64_t h = sp_fnv1a64(name, strlen(name));
    return h ? h : 1;
}

/* The tokens of a predicted output (oai.h's prediction: a string or text parts, validated): the
 * tokens that follow a prompt (sp_tok_encode_continuation: no space prefix, which would put
 * every draft one place off), into *out (initialized, empty). */
static sp_err prediction_tokens(const sp_api *a, json_t *content, sp_tokens *out, sp_diag *d) {
    if (json_is_string(content))
        return sp_tok_encode_continuation(a->v, json_string_value(content),
                                          json_string_length(content), out, d);
    size_t i, len = 0;
    json_t *part;
    json_array_foreach(content, i, part) len += json_string_length(json_object_get(part, "text"));
    char *text = malloc(len + 1);
    if (!text)
        return SP_ERR_NOMEM;
    len = 0;
    json_array_foreach(content, i, part) {
        json_t *t = json_object_get(part, "text");
        memcpy(text + len, json_string_value(t), json_string_length(t));
        len += json_string_length(t);
    }
    sp_err err = sp_tok_encode_continuation(a->v, text, len, out, d);
    free(text);
    return err;
}

/* Creates the engine requests of one prompt's n choices. On failure answers the client and
 * returns false. */
static bool add_choices(api_op *op, sp_http_conn *c, const sp_oai_req *q, size_t pi,
                        const sp_tokens *toks) {
    sp_api *a = op->api;
    const char *path = op_path(op);
    const char *prompt_param = op->kind == SP_OAI_CHAT ? "messages" : "prompt";
    const int32_t n_ctx = sp_engine_n_ctx(a->e), max_len = sp_engine_max_len(a->e);
    if (toks->n == 0) {
        sp__api_send_error(a, c, 400, "invalid_request_error", prompt_param, NULL, NULL, path,
                           "the prompt is empty after tokenization");
        return false;
    }
    if ((int64_t)toks->n >= max_len) {
        if (max_len < n_ctx)
            sp__api_send_error(a, c, 400, "invalid_request_error", prompt_param,
                               "context_length_exceeded", NULL, path,
                               "The prompt has %zu tokens, but this server's KV cache holds %d "
                               "tokens per request (the model's context is %d). Shorten the "
                               "prompt, or start the server with more --kv-memory.",
                               toks->n, max_len, n_ctx);
        else
            sp__api_send_error(a, c, 400, "invalid_request_error", prompt_param,
                               "context_length_exceeded", NULL, path,
                               "This model's maximum context length is %d tokens, but the prompt "
                               "has %zu tokens. Shorten the prompt.",
                               n_ctx, toks->n);
        return false;
    }
    sp_req_params p = q->params;
    if (q->session)
        p.session_id = name_id(q->session);
    if (q->tool)
        p.tool_id = name_id(q->tool);
    // max_tokens beyond what the context (or the pool) can hold is clamped: "length" ends it.
    int32_t room = max_len - (int32_t)toks->n;
    if (!q->has_max_tokens && op->kind == SP_OAI_CHAT)
        p.max_tokens = room;
    p.max_tokens = SP_MIN(p.max_tokens, room);
    char *echo = NULL;
    size_t echo_len = 0;
    sp_diag d;
    sp_diag_clear(&d);
    sp_tokens pred; // the predicted output's tokens (sp_request_create copies them)
    sp_tokens_init(&pred);
    if (q->prediction) {
        sp_err err = prediction_tokens(a, q->prediction, &pred, &d);
        if (err == SP_ERR_NOMEM)
            goto nomem;
        if (err) {
            sp__api_send_error(a, c, 400, "invalid_request_error", "prediction", NULL, NULL, path,
                               "%s", d.msg);
            sp_tokens_deinit(&pred);
            return false;
        }
        p.prediction = pred.ids;
        p.n_prediction = (int32_t)SP_MIN(pred.n, (size_t)1 << 24);
        op->predicted = true;
    }
    if (q->echo && op->kind == SP_OAI_COMPLETION &&
        sp_tok_decode(a->v, toks->ids, toks->n, SP_DECODE_REMOVE_SPECIAL, &echo, &echo_len, &d) ==
            SP_ERR_NOMEM)
        goto nomem;
    for (int32_t k = 0; k < q->n; k++) {
        api_choice *ch = &op->choices[op->n_choices];
        ch->op = op;
        ch->index = (int)(pi * (size_t)q->n) + k;
        ch->n_prompt = (int32_t)toks->n;
        ch->first_of_prompt = k == 0;
        p.sample.seed = q->has_seed ? q->params.sample.seed + (uint64_t)k : random_seed(a);
        ch->cap_toks = p.max_tokens;
        ch->toks = malloc((size_t)p.max_tokens * sizeof *ch->toks);
        if (!ch->toks)
            goto nomem;
        if (q->logprobs > 0) {
            ch->top_ids = malloc((size_t)p.max_tokens * (size_t)q->logprobs * sizeof(int32_t));
            ch->top_lps = malloc((size_t)p.max_tokens * (size_t)q->logprobs * sizeof(float));
            if (!ch->top_ids || !ch->top_lps)
                goto nomem;
        }
        if (op->tool_calls &&
            sp_tools_reader_create(a->o.tool_format, op->tools_in_call, random_seed(a), &ch->tools))
            goto nomem;
        sp_err err = sp_request_create(a->v, toks->ids, (int32_t)toks->n, &p, &ch->req, &d);
        if (err == SP_ERR_NOMEM)
            goto nomem;
        if (err) {
            sp__api_send_error(a, c, 400, "invalid_request_error", d.param, NULL, NULL, path, "%s",
                               d.msg);
            free(echo);
            sp_tokens_deinit(&pred);
            return false;
        }
        op->n_choices++;
        if (echo) {
            ch->text = k + 1 < q->n ? strdup(echo) : echo; // the last choice takes the copy
            if (!ch->text)
                goto nomem;
            ch->text_len = echo_len;
            ch->text_cap = echo_len + 1;
            if (k + 1 == q->n)
                echo = NULL;
        }
    }
    free(echo);
    sp_tokens_deinit(&pred);
    return true;
nomem:
    free(echo);
    sp_tokens_deinit(&pred);
    sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, path, "out of memory");
    return false;
}

/* Submits every choice. The engine refuses only when it is shutting down or out of memory;
 * the choices already submitted are then cancelled and the exchange completes through them
 * without a client. */
static bool submit_all(api_op *op, sp_http_conn *c) {
    sp_api *a = op->api;
    for (int i = 0; i < op->n_choices; i++) {
        api_choice *ch = &op->choices[i];
        sp_diag d;
        sp_diag_clear(&d);
        sp_request_set_user(ch->req, ch);
        sp_err err = sp_engine_submit(a->e, ch->req, &d);
        if (err == SP_OK) {
            ch->submitted = true;
            a->n_live_seqs++;
            continue;
        }
        sp_request_set_user(ch->req, NULL);
        if (err == SP_ERR_NOMEM)
            sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, op_path(op),
                               "out of memory");
        else if (err == SP_ERR_RANGE)
            sp__api_send_error(a, c, 400, "invalid_request_error", d.param, NULL, NULL, op_path(op),
                               "%s", d.msg);
        else
            sp__api_send_error(a, c, 503, "server_error", NULL, "unavailable", "Retry-After: 1\r\n",
                               op_path(op), "%s",
                               d.msg[0] ? d.msg : "the server cannot take requests now");
        for (int k = i; k < op->n_choices; k++) {
            op->choices[k].done = true;
            op->choices[k].finish = SP_FINISH_CANCELLED;
            op->n_done++;
        }
        op->answered = true;
        op_cancel(op);
        return false;
    }
    return true;
}

/* Routers hash on headers, not bodies: X-Session-Id and X-User stand for the body's
 * session_id and user where it has none (or null). false after answering 400 (a header that
 * is not UTF-8) or 500. */
static bool header_fields(sp_api *a, sp_http_conn *c, const sp_http_req *req, json_t *body,
                          const char *path) {
    static const struct {
        const char *header, *field;
    } map[] = {{"X-Session-Id", "session_id"}, {"X-User", "user"}};
    for (size_t i = 0; i < SP_ARRAY_LEN(map); i++) {
        const sp_str *h = sp_http_req_header(req, map[i].header);
        const json_t *have = json_object_get(body, map[i].field);
        if (!h || (have && !json_is_null(have)))
            continue;
        json_t *v = json_stringn(h->ptr, h->len);
        if (!v) {
            sp__api_send_error(a, c, 400, "invalid_request_error", map[i].field, NULL, NULL, path,
                               "the %s header is not UTF-8 text", map[i].header);
            return false;
        }
        if (json_object_set_new(body, map[i].field, v)) {
            sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, path,
                               "out of memory");
            return false;
        }
    }
    return true;
}

void sp__api_handle_generate(sp_api *a, sp_http_conn *c, const sp_http_req *req, sp_oai_kind kind) {
    const char *path = kind == SP_OAI_CHAT ? "/v1/chat/completions" : "/v1/completions";
    json_t *body = sp__api_read_body(a, c, req, path);
    if (!body)
        return;
    if (!header_fields(a, c, req, body, path)) {
        json_decref(body);
        return;
    }
    sp_oai_req q;
    sp_diag d;
    sp_diag_clear(&d);
    api_op *op = NULL;
    sp_tokens toks;
    sp_tokens_init(&toks);
    sp_grammar *grammar = NULL; // the requests take their own references
    if (sp_oai_parse(body, kind, &q, &d)) {
        sp__api_send_error(a, c, 400, "invalid_request_error", d.param, NULL, NULL, path, "%s",
                           d.msg);
        goto done;
    }
    if (q.grammar || q.json_object || q.json_schema) {
        sp_err err =
            sp_grammars_get(&a->grammars, q.grammar, q.grammar_len, q.json_schema, &grammar, &d);
        if (err == SP_ERR_NOMEM)
            goto nomem;
        if (err) {
            sp__api_send_error(a, c, 400, "invalid_request_error",
                               q.grammar       ? "grammar"
                               : q.json_schema ? q.schema_param
                                               : "response_format",
                               NULL, NULL, path, "%s", d.msg);
            goto done;
        }
        q.params.grammar = grammar;
    }
    if (q.tool_choice == SP_OAI_TOOLS_REQUIRED || q.tool_choice == SP_OAI_TOOLS_NAMED) {
        // The call is forced: a grammar of one call, in the model's format (after the marker
        // that the prompt ends with, where the format's marker is a control token).
        sp_err err = sp_tools_grammar(a->o.tool_format, q.tools,
                                      q.tool_choice == SP_OAI_TOOLS_NAMED ? q.tool_name : NULL,
                                      &grammar, &d);
        if (err == SP_ERR_NOMEM)
            goto nomem;
        if (err) {
            sp__api_send_error(a, c, 400, "invalid_request_error", d.param, NULL, NULL, path,
                               "%s", d.msg);
            goto done;
        }
        q.params.grammar = grammar;
    }
    const bool tool_calls = q.tools && q.tool_choice != SP_OAI_TOOLS_NONE;
    if (tool_calls && a->o.tool_format == SP_TOOLS_MISTRAL)
        q.params.special = true; // its [TOOL_CALLS] marker is a control token
    // Admission: every sequence of the request counts (prompts x n), and the request is taken
    // whole or not at all. Sequences beyond the running ones wait; at most max_waiting may.
    const size_t n_prompts = sp_oai_n_prompts(&q);
    const int64_t n_seqs = (int64_t)n_prompts * q.n;
    const int64_t cap = (int64_t)sp_engine_max_seqs(a->e) + a->o.max_waiting;
    if (n_seqs > cap) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "n", NULL, NULL, path,
                           "the request asks for %lld sequences (prompts x n), more than this "
                           "server ever takes at once (%lld): split it",
                           (long long)n_seqs, (long long)cap);
        goto done;
    }
    if (a->n_live_seqs + n_seqs > cap) {
        sp__api_send_error(a, c, 503, "server_error", NULL, "overloaded", "Retry-After: 1\r\n",
                           path,
                           "the server is overloaded (%d sequences in flight, at most %lld); "
                           "retry later",
                           a->n_live_seqs, (long long)cap);
        goto done;
    }
    if (!(op = op_create(a, kind, &q, (int)n_seqs)))
        goto nomem;
    op->tool_calls = tool_calls;
    op->tools_in_call = sp__api_forced_prefix(a, &q) != NULL;
    for (size_t pi = 0; pi < n_prompts; pi++) {
        toks.n = 0;
        sp_err err = sp__api_prompt_tokens(a, kind, &q, body, pi, &toks, &d);
        if (err == SP_ERR_NOMEM)
            goto nomem;
        if (err) {
            sp__api_send_error(a, c, 400, "invalid_request_error",
                               d.param[0] ? d.param : (kind == SP_OAI_CHAT ? "messages" : "prompt"),
                               err == SP_ERR_UTF8 ? "invalid_utf8" : NULL, NULL, path, "%s",
                               d.msg[0] ? d.msg : sp_err_str(err));
            goto cancel;
        }
        if (!add_choices(op, c, &q, pi, &toks))
            goto cancel;
    }
    if (!submit_all(op, c)) {
        if (op->n_done == op->n_choices)
            op_free(op); // nothing was submitted; otherwise the engine's answers free it
        op = NULL;
        goto done;
    }
    if (op->stream &&
        sp_http_stream_begin(c, 200, "text/event-stream", "Cache-Control: no-cache\r\n") != SP_OK) {
        // Not even the head can be queued: close the connection (the client sees that at
        // once) and let the engine's answers free the exchange.
        sp_http_conn_close(c);
        sp__api_log_http(a, 500, path, "out of memory for the stream");
        op->answered = true;
        op_cancel(op);
        op = NULL;
        goto done;
    }
    op->conn = c;
    sp_http_set_user(c, op);
    if (op->stream && !stream_start(op))
        stream_abort(op);
    op = NULL;
    goto done;
nomem:
    sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, path, "out of memory");
cancel:
    if (op) {
        for (int i = 0; i < op->n_choices; i++) {
            sp_request_release(op->choices[i].req);
            op->choices[i].req = NULL;
        }
        op_free(op);
    }
done:
    sp_grammar_release(grammar);
    sp_tokens_deinit(&toks);
    json_decref(body);
}
