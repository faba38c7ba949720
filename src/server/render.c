#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "server/api_int.h"

/* ---- JSON helpers --------------------------------------------------------------------------- */

/* A JSON string from bytes that may not be valid UTF-8 (token pieces): invalid sequences
 * become U+FFFD. */
json_t *sp__api_json_bytes(const char *p, size_t n) {
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

/* ---- answers -------------------------------------------------------------------------------- */

/* Queues a JSON response; a connection that cannot take it (out of memory) is closed, so that
 * the client learns at once instead of waiting for an answer that cannot come. */
static void respond(sp_http_conn *c, int status, const char *extra_headers, const char *body,
                    size_t len) {
    if (sp_http_respond(c, status, "application/json", extra_headers, body, len) != SP_OK) {
        SP_DEBUG("could not queue a response: closing the connection");
        sp_http_conn_close(c);
    }
}

void sp__api_log_http(sp_api *a, int status, const char *path, const char *msg) {
    a->metrics.http_requests++;
    if (status >= 400)
        a->metrics.http_errors++;
    if (a->o.log_requests && status >= 400)
        SP_INFO("http %d %s: %s", status, path, msg);
}

void sp__api_send_error(sp_api *a, sp_http_conn *c, int status, const char *type, const char *param,
                        const char *code, const char *extra_headers, const char *path,
                        const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *err =
        json_pack("{s:o, s:s, s:o, s:o}", "message", sp__api_json_bytes(msg, strlen(msg)), "type",
                  type, "param", param && *param ? json_string(param) : json_null(), "code",
                  code ? json_string(code) : json_null());
    json_t *root = json_pack("{s:o}", "error", err);
    size_t len;
    char *body = dump(root, &len);
    json_decref(root);
    sp__api_log_http(a, status, path, msg);
    static const char nomem[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                "\"server_error\",\"param\":null,\"code\":null}}";
    respond(c, status, extra_headers, body ? body : nomem, body ? len : sizeof nomem - 1);
    free(body);
}

void sp__api_send_json(sp_api *a, sp_http_conn *c, json_t *root, const char *path) {
    size_t len;
    char *body = dump(root, &len);
    json_decref(root);
    if (!body) {
        sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, path, "out of memory");
        return;
    }
    sp__api_log_http(a, 200, path, "");
    respond(c, 200, NULL, body, len);
    free(body);
}

json_t *sp__api_read_body(sp_api *a, sp_http_conn *c, const sp_http_req *req, const char *path) {
    json_error_t jerr;
    json_t *body = json_loadb(req->body, req->body_len, 0, &jerr);
    if (json_is_object(body))
        return body;
    json_decref(body);
    // jansson says it ran out of memory, or says nothing at all (its lexer had no buffer).
    if (!body && (json_error_code(&jerr) == json_error_out_of_memory || !jerr.text[0]))
        sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, path, "out of memory");
    else if (!body)
        sp__api_send_error(a, c, 400, "invalid_request_error", NULL, "invalid_json", NULL, path,
                           "the body is not valid JSON: %s (at byte %d)", jerr.text, jerr.position);
    else
        sp__api_send_error(a, c, 400, "invalid_request_error", NULL, "invalid_json", NULL, path,
                           "the body must be a JSON object");
    return NULL;
}

/* ---- bodies of the generation endpoints ----------------------------------------------------- */

const char *sp__api_finish_reason(const api_choice *ch) {
    if (ch->finish == SP_FINISH_LENGTH)
        return "length";
    return ch->tools && sp_tools_reader_n_calls(ch->tools) ? "tool_calls" : "stop";
}

json_t *sp__api_tool_calls(const sp_tools_reader *r) {
    json_t *calls = json_array();
    for (int32_t i = 0; i < sp_tools_reader_n_calls(r); i++) {
        const sp_tool_call c = sp_tools_reader_call(r, i);
        json_array_append_new(
            calls, json_pack("{s:s, s:s, s:{s:o, s:o}}", "id", c.id, "type", "function", "function",
                             "name", sp__api_json_bytes(c.name, strlen(c.name)), "arguments",
                             sp__api_json_bytes(c.args, c.args_len)));
    }
    return calls;
}

json_t *sp__api_tool_delta(const sp_tool_delta *d) {
    json_t *args = sp__api_json_bytes(d->args, d->args_len);
    if (!d->id)
        return json_pack("{s:i, s:{s:o}}", "index", d->index, "function", "arguments", args);
    return json_pack("{s:i, s:s, s:s, s:{s:o, s:o}}", "index", d->index, "id", d->id, "type",
                     "function", "function", "name", sp__api_json_bytes(d->name, strlen(d->name)),
                     "arguments", args);
}

json_t *sp__api_usage(const api_op *op) {
    int64_t prompt = 0, gen = 0, cached = 0, accepted = 0, rejected = 0;
    for (int i = 0; i < op->n_choices; i++) {
        const api_choice *ch = &op->choices[i];
        sp_req_stats st;
        sp_request_stats(ch->req, &st);
        gen += st.n_generated;
        if (op->predicted) { // the drafts came from the prediction (else: prompt lookup)
            accepted += st.n_draft_accepted;
            rejected += st.n_draft_rejected;
        }
        if (ch->first_of_prompt) {
            prompt += ch->n_prompt;
            cached += st.n_cached;
        }
    }
    // The prediction's tokens checked, under OpenAI's names.
    return json_pack("{s:I, s:I, s:I, s:{s:I}, s:{s:I, s:I, s:I}}", "prompt_tokens",
                     (json_int_t)prompt, "completion_tokens", (json_int_t)gen, "total_tokens",
                     (json_int_t)(prompt + gen), "prompt_tokens_details", "cached_tokens",
                     (json_int_t)cached, "completion_tokens_details", "reasoning_tokens",
                     (json_int_t)0, "accepted_prediction_tokens", (json_int_t)accepted,
                     "rejected_prediction_tokens", (json_int_t)rejected);
}

json_t *sp__api_logprobs(const api_op *op, const api_choice *ch, int32_t from, int32_t to) {
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
                    top,
                    json_pack("{s:o, s:f, s:o}", "token", sp__api_json_bytes(tp.ptr, tp.len),
                              "logprob", (double)ch->top_lps[(size_t)i * (size_t)k + (size_t)j],
                              "bytes", tb));
            }
            json_array_append_new(content, json_pack("{s:o, s:f, s:o, s:o}", "token",
                                                     sp__api_json_bytes(piece.ptr, piece.len),
                                                     "logprob", (double)ch->toks[i].logprob,
                                                     "bytes", bytes, "top_logprobs", top));
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
        json_array_append_new(tokens, sp__api_json_bytes(piece.ptr, piece.len));
        json_array_append_new(lps, json_real(ch->toks[i].logprob));
        json_array_append_new(offsets, json_integer((json_int_t)offset));
        offset += piece.len;
        json_t *top = json_object();
        for (int32_t j = 0; j < k; j++) {
            int32_t id = ch->top_ids[(size_t)i * (size_t)k + (size_t)j];
            sp_str tp = sp_tok_piece_ref(v, id, false);
            json_t *key = sp__api_json_bytes(tp.ptr, tp.len);
            json_object_set_new(top, json_string_value(key),
                                json_real(ch->top_lps[(size_t)i * (size_t)k + (size_t)j]));
            json_decref(key);
        }
        json_array_append_new(tops, top);
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lps,
                     "top_logprobs", tops, "text_offset", offsets);
}

json_t *sp__api_chunk_base(const api_op *op) {
    const char *model = op->api->o.model_name;
    return json_pack("{s:s, s:s, s:I, s:s}", "id", op->id, "object",
                     op->kind == SP_OAI_CHAT ? "chat.completion.chunk" : "text_completion",
                     "created", (json_int_t)op->created, "model", model);
}

json_t *sp__api_response(const api_op *op) {
    json_t *root = json_pack("{s:s, s:s, s:I, s:s}", "id", op->id, "object",
                             op->kind == SP_OAI_CHAT ? "chat.completion" : "text_completion",
                             "created", (json_int_t)op->created, "model", op->api->o.model_name);
    json_t *choices = json_array();
    for (int i = 0; i < op->n_choices; i++) {
        const api_choice *ch = &op->choices[i];
        json_t *c1 = json_pack("{s:i}", "index", ch->index);
        const bool calls = ch->tools && sp_tools_reader_n_calls(ch->tools);
        json_t *text;
        if (calls) { // the text outside the calls is the content (null if none)
            const sp_str content = sp_tools_reader_content(ch->tools);
            text = content.len ? sp__api_json_bytes(content.ptr, content.len) : json_null();
        } else {
            text = sp__api_json_bytes(ch->text, ch->text_len);
        }
        if (op->kind == SP_OAI_CHAT)
            json_object_set_new(c1, "message",
                                json_pack("{s:s, s:o}", "role", "assistant", "content", text));
        else
            json_object_set_new(c1, "text", text);
        if (calls)
            json_object_set_new(json_object_get(c1, "message"), "tool_calls",
                                sp__api_tool_calls(ch->tools));
        json_object_set_new(c1, "logprobs",
                            op->logprobs >= 0 ? sp__api_logprobs(op, ch, 0, ch->n_toks)
                                              : json_null());
        json_object_set_new(c1, "finish_reason", json_string(sp__api_finish_reason(ch)));
        json_array_append_new(choices, c1);
    }
    json_object_set_new(root, "choices", choices);
    json_object_set_new(root, "usage", sp__api_usage(op));
    return root;
}
