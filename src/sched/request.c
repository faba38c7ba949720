#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "sched/internal.h"

const char *sp_finish_name(sp_finish f) {
    switch (f) {
    case SP_FINISH_STOP:
        return "stop";
    case SP_FINISH_LENGTH:
        return "length";
    case SP_FINISH_CANCELLED:
        return "cancelled";
    case SP_FINISH_ERROR:
        return "error";
    default:
        return "";
    }
}

sp_req_params sp_req_params_default(void) {
    sp_req_params p = {.sample = sp_sample_params_default(), .max_tokens = 16, .n_logprobs = -1};
    p.sample.temperature = 1.0f;
    return p;
}

static void request_free(sp_request *r) {
    sp_sampler_destroy(r->sampler);
    sp_matcher_destroy(r->matcher);
    sp_stop_destroy(r->stop);
    if (r->detok.v)
        sp_detok_deinit(&r->detok);
    if (r->seq_ready)
        sp_kv_seq_deinit(&r->seq);
    free(r->tokens);
    free((void *)r->params.prediction);
    free(r->pending);
    free(r->out_tokens);
    free(r->out_top_ids);
    free(r->out_top_lps);
    free(r->out_text);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

sp_err sp_request_create(const sp_vocab *v, const int32_t *prompt, int32_t n_prompt,
                         const sp_req_params *params, sp_request **out, sp_diag *d) {
    if (n_prompt < 1)
        return sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "the prompt is empty");
    const int32_t n_vocab = (int32_t)sp_vocab_n_tokens(v);
    for (int32_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= n_vocab) {
            sp_diag_set(d, SP_ERR_INVALID, (uint64_t)i,
                        "prompt token %d at index %d is not in the vocabulary (0..%d)", prompt[i],
                        i, n_vocab - 1);
            if (d)
                snprintf(d->param, sizeof d->param, "prompt");
            return SP_ERR_INVALID;
        }
    if (params->n_prediction < 0 || params->n_prediction > (1 << 24) ||
        (params->n_prediction > 0 && !params->prediction)) {
        if (d)
            snprintf(d->param, sizeof d->param, "prediction");
        return sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "the prediction is invalid");
    }
    for (int32_t i = 0; i < params->n_prediction; i++)
        if (params->prediction[i] < 0 || params->prediction[i] >= n_vocab) {
            if (d)
                snprintf(d->param, sizeof d->param, "prediction");
            return sp_diag_set(d, SP_ERR_INVALID, (uint64_t)i,
                               "prediction token %d at index %d is not in the vocabulary",
                               params->prediction[i], i);
        }
    if (params->max_tokens < 1 || params->max_tokens > (1 << 24)) {
        sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "max_tokens must be between 1 and %d",
                    1 << 24);
        if (d)
            snprintf(d->param, sizeof d->param, "max_tokens");
        return SP_ERR_INVALID;
    }
    if (params->n_logprobs < -1 || params->n_logprobs > SP_REQ_MAX_TOP_LOGPROBS) {
        sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "logprobs must be between 0 and %d",
                    SP_REQ_MAX_TOP_LOGPROBS);
        if (d)
            snprintf(d->param, sizeof d->param, "logprobs");
        return SP_ERR_INVALID;
    }
    sp_err err = sp_sample_params_validate(&params->sample, d);
    if (err)
        return err;

    sp_request *r = calloc(1, sizeof *r);
    if (!r)
        return SP_ERR_NOMEM;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    atomic_init(&r->refs, 1);
    atomic_init(&r->cancel, false);
    r->vocab = v;
    r->params = *params;
    r->params.stop = NULL;
    r->params.n_stop = 0;
    r->params.prediction = NULL;
    r->params.n_prediction = 0;
    r->params.grammar = NULL; // the matcher holds it
    r->n_prompt = n_prompt;
    r->cap_tokens = n_prompt + params->max_tokens;
    r->n_tokens = n_prompt;
    r->stats.n_prompt = n_prompt;
    const size_t mt = (size_t)params->max_tokens;
    r->tokens = malloc((size_t)r->cap_tokens * sizeof *r->tokens);
    r->out_tokens = malloc(mt * sizeof *r->out_tokens);
    if (!r->tokens || !r->out_tokens)
        goto nomem;
    memcpy(r->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
    if (params->n_prediction > 0) {
        int32_t *pred = malloc((size_t)params->n_prediction * sizeof *pred);
        if (!pred)
            goto nomem;
        memcpy(pred, params->prediction, (size_t)params->n_prediction * sizeof *pred);
        r->params.prediction = pred;
        r->params.n_prediction = params->n_prediction;
    }
    if (params->n_logprobs > 0) {
        r->out_top_ids = malloc(mt * (size_t)params->n_logprobs * sizeof *r->out_top_ids);
        r->out_top_lps = malloc(mt * (size_t)params->n_logprobs * sizeof *r->out_top_lps);
        if (!r->out_top_ids || !r->out_top_lps)
            goto nomem;
    }
    if ((err = sp_stop_create(params->stop, params->n_stop, &r->stop, d)))
        goto fail;
    if ((err = sp_sampler_create(&params->sample, n_vocab, &r->sampler)))
        goto fail;
    if (params->grammar && (err = sp_matcher_create(params->grammar, &r->matcher)))
        goto fail;
    unsigned flags = SP_DETOK_REPLACE_INVALID | (params->special ? SP_DECODE_SPECIAL : 0u);
    if ((err = sp_detok_init(&r->detok, v, flags)))
        goto fail;
    size_t longest_stop = 0;
    for (int32_t i = 0; i < params->n_stop; i++)
        longest_stop = SP_MAX(longest_stop, strlen(params->stop[i]));
    // Pending text: at most the held-back start of a stop string plus one chunk of output.
    r->cap_pending = longest_stop + r->detok.cap + 16;
    r->pending = malloc(r->cap_pending);
    // Output text: room for typical pieces so the engine rarely grows it.
    r->out_cap = SP_MIN(mt, (size_t)1 << 16) * 8 + 256;
    r->out_text = malloc(r->out_cap);
    if (!r->pending || !r->out_text)
        goto nomem;
    *out = r;
    return SP_OK;
nomem:
    err = SP_ERR_NOMEM;
fail:
    request_free(r);
    return err;
}

void sp_request_retain(sp_request *r) { atomic_fetch_add(&r->refs, 1); }

void sp_request_release(sp_request *r) {
    if (r && atomic_fetch_sub(&r->refs, 1) == 1)
        request_free(r);
}

uint64_t sp_request_id(const sp_request *r) { return r->id; }

int32_t sp_request_n_prompt(const sp_request *r) { return r->n_prompt; }

void sp_request_set_user(sp_request *r, void *user) { r->user = user; }

void *sp_request_get_user(const sp_request *r) { return r->user; }

sp_err sp__request_publish(sp_request *r, const sp_req_token *tok, const int32_t *top_ids,
                           const float *top_lps, const char *text, size_t n_text) {
    pthread_mutex_lock(&r->mu);
    if (n_text > r->out_cap - r->out_len) {
        size_t cap = SP_MAX(r->out_cap * 2, r->out_len + n_text);
        char *nt = realloc(r->out_text, cap);
        if (!nt) {
            pthread_mutex_unlock(&r->mu);
            return SP_ERR_NOMEM;
        }
        r->out_text = nt;
        r->out_cap = cap;
    }
    memcpy(r->out_text + r->out_len, text, n_text);
    r->out_len += n_text;
    if (tok) {
        const int32_t k = r->params.n_logprobs;
        SP_ASSERT(r->out_n_tokens < r->params.max_tokens);
        if (k > 0) {
            memcpy(r->out_top_ids + (size_t)r->out_n_tokens * (size_t)k, top_ids,
                   (size_t)k * sizeof *top_ids);
            memcpy(r->out_top_lps + (size_t)r->out_n_tokens * (size_t)k, top_lps,
                   (size_t)k * sizeof *top_lps);
        }
        r->out_tokens[r->out_n_tokens++] = *tok;
        r->stats.n_generated = r->out_n_tokens;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return SP_OK;
}

void sp__request_finish(sp_request *r, sp_finish f, sp_err err, const char *msg) {
    pthread_mutex_lock(&r->mu);
    if (r->finish == SP_FINISH_NONE) {
        r->finish = f;
        r->error = err;
        if (msg)
            snprintf(r->error_msg, sizeof r->error_msg, "%s", msg);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}


sp_err sp_request_read(sp_request *r, sp_req_cursor *cur, sp_req_token *tokens,
                       int32_t cap_tokens, int32_t *top_ids, float *top_logprobs, char **text,
                       size_t *text_len, size_t *text_cap, sp_req_read *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->mu);
    size_t n_text = r->out_len - cur->n_text;
    if (n_text > 0 && text) {
        if (*text_len + n_text + 1 > *text_cap) {
            size_t cap = SP_MAX(*text_cap * 2, *text_len + n_text + 1);
            char *nt = realloc(*text, cap);
            if (!nt) {
                pthread_mutex_unlock(&r->mu);
                return SP_ERR_NOMEM;
            }
            *text = nt;
            *text_cap = cap;
        }
        memcpy(*text + *text_len, r->out_text + cur->n_text, n_text);
        *text_len += n_text;
        (*text)[*text_len] = '\0';
    }
    if (!text)
        n_text = 0;
    int32_t n_tok = SP_MIN(r->out_n_tokens - cur->n_tokens, cap_tokens);
    const int32_t k = r->params.n_logprobs;
    for (int32_t i = 0; i < n_tok; i++) {
        int32_t src = cur->n_tokens + i;
        tokens[i] = r->out_tokens[src];
        if (k > 0 && top_ids) {
            memcpy(top_ids + (size_t)i * (size_t)k, r->out_top_ids + (size_t)src * (size_t)k,
                   (size_t)k * sizeof *top_ids);
            memcpy(top_logprobs + (size_t)i * (size_t)k,
                   r->out_top_lps + (size_t)src * (size_t)k, (size_t)k * sizeof *top_logprobs);
        }
    }
    cur->n_tokens += n_tok;
    cur->n_text += n_text;
    out->n_new_tokens = n_tok;
    out->n_new_text = n_text;
    if (r->finish != SP_FINISH_NONE && cur->n_tokens == r->out_n_tokens &&
        (cur->n_text == r->out_len || !text)) {
        out->finish = r->finish;
        out->error = r->error;
        snprintf(out->error_msg, sizeof out->error_msg, "%s", r->error_msg);
    }
    pthread_mutex_unlock(&r->mu);
    return SP_OK;
}

bool sp_request_wait(sp_request *r, const sp_req_cursor *cur, int timeout_ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    if (timeout_ms >= 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&r->mu);
    for (;;) {
        bool ready = r->out_n_tokens > cur->n_tokens || r->out_len > cur->n_text ||
                     r->finish != SP_FINISH_NONE;
        if (ready) {
            pthread_mutex_unlock(&r->mu);
            return true;
        }
        if (timeout_ms < 0)
            pthread_cond_wait(&r->cv, &r->mu);
        else if (pthread_cond_timedwait(&r->cv, &r->mu, &deadline)) {
            pthread_mutex_unlock(&r->mu);
            return false;
        }
    }
}

void sp_request_stats(sp_request *r, sp_req_stats *out) {
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    pthread_mutex_unlock(&r->mu);
}
