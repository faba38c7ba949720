/* A generation request's prompt as tokens: a completions prompt (text or token ids) tokenized,
 * a chat conversation rendered by the model's template and tokenized. Shared by the generation
 * endpoints and /tokenize, so that what /tokenize counts is what generation computes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api_int.h"

/* Tokenizes prompt number i of a completions request. */
static sp_err prompt_tokens(sp_api *a, const sp_oai_req *q, size_t i, sp_tokens *out, sp_diag *d) {
    json_t *p = q->prompt;
    json_t *one =
        json_is_string(p) || json_is_integer(json_array_get(p, 0)) ? p : json_array_get(p, i);
    if (json_is_string(one))
        return sp_tok_encode(a->v, json_string_value(one), json_string_length(one), true, true, out,
                             d);
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

const char *sp__api_forced_prefix(const sp_api *a, const sp_oai_req *q) {
    const bool forced =
        q->tool_choice == SP_OAI_TOOLS_REQUIRED || q->tool_choice == SP_OAI_TOOLS_NAMED;
    return forced ? sp_tools_forced_prefix(a->o.tool_format) : NULL;
}

/* Renders the conversation and tokenizes it; control tokens are written by their text. */
static sp_err chat_tokens(sp_api *a, const sp_oai_req *q, json_t *body, sp_tokens *out,
                          sp_diag *d) {
    json_t *extra = json_object();
    if (!extra)
        return SP_ERR_NOMEM;
    json_t *tools = json_object_get(body, "tools");
    if ((q->template_extra && json_object_update(extra, q->template_extra)) ||
        (tools && !json_is_null(tools) && json_object_set(extra, "tools", tools))) {
        json_decref(extra);
        return SP_ERR_NOMEM;
    }
    sp_str bos = sp_vocab_token_text(a->v, sp_vocab_bos(a->v));
    sp_str eos = sp_vocab_token_text(a->v, sp_vocab_eos(a->v));
    char *text = NULL;
    size_t len = 0;
    sp_err err =
        sp_chat_render(a->tmpl, q->messages, extra, bos.ptr, eos.ptr, true, NULL, &text, &len, d);
    json_decref(extra);
    if (err) {
        if (err != SP_ERR_NOMEM)
            snprintf(d->param, sizeof d->param, "messages");
        return err;
    }
    const char *suffix = sp__api_forced_prefix(a, q);
    if (suffix) {
        const size_t n = strlen(suffix);
        char *t = realloc(text, len + n + 1);
        if (!t) {
            free(text);
            return SP_ERR_NOMEM;
        }
        memcpy(t + len, suffix, n + 1);
        text = t;
        len += n;
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

sp_err sp__api_prompt_tokens(sp_api *a, sp_oai_kind kind, const sp_oai_req *q, json_t *body,
                             size_t i, sp_tokens *out, sp_diag *d) {
    return kind == SP_OAI_CHAT ? chat_tokens(a, q, body, out, d) : prompt_tokens(a, q, i, out, d);
}
