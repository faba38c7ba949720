/* sp_vocab_load(): the tokenizer.ggml.* metadata of a GGUF file into an sp_vocab_spec. */
#include <stdlib.h>
#include <string.h>

#include "tok/tok_impl.h"

/* An optional integer key: SP_VOCAB_SPEC_ABSENT if absent, an error if mistyped. */
static sp_err opt_int(const sp_gguf *g, const char *key, int64_t *out, sp_diag *diag) {
    if (!sp_gguf_find(g, key))
        return SP_OK;
    int64_t v;
    sp_err e = sp_gguf_get_int(g, key, &v, diag);
    if (e)
        return e;
    *out = v;
    return SP_OK;
}

static sp_err opt_bool(const sp_gguf *g, const char *key, int8_t *out, sp_diag *diag) {
    if (!sp_gguf_find(g, key))
        return SP_OK;
    bool b;
    sp_err e = sp_gguf_get_bool(g, key, &b, diag);
    if (e)
        return e;
    *out = b;
    return SP_OK;
}

static sp_err opt_str(const sp_gguf *g, const char *key, sp_str *out, sp_diag *diag) {
    if (!sp_gguf_find(g, key))
        return SP_OK;
    return sp_gguf_get_str(g, key, out, diag);
}

/* A string array key into a heap array of views (into g). */
static sp_err str_array(const sp_gguf *g, const sp_gguf_kv *kv, const char *key, sp_str **out,
                        uint64_t *n_out, sp_diag *diag) {
    if (kv->type != SP_GGUF_ARRAY || kv->arr_type != SP_GGUF_STRING)
        return sp_diag_set(diag, SP_ERR_FORMAT, kv->offset, "%s is not an array of strings", key);
    if (kv->arr_n > SIZE_MAX / sizeof(sp_str))
        return sp_diag_set(diag, SP_ERR_RANGE, kv->offset, "%s is too long", key);
    sp_str *a = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof *a);
    if (!a)
        return SP_ERR_NOMEM;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        sp_err e = sp_gguf_arr_str(g, kv, i, &a[i]);
        if (e) {
            free(a);
            return sp_diag_set(diag, e, kv->offset, "%s[%llu] unreadable", key,
                               (unsigned long long)i);
        }
    }
    *out = a;
    *n_out = kv->arr_n;
    return SP_OK;
}

sp_err sp_vocab_load(const sp_gguf *g, sp_vocab **out, sp_diag *diag) {
    sp_vocab_spec spec;
    sp_vocab_spec_init(&spec);
    sp_str *tokens = NULL, *merges = NULL;
    float *scores = NULL;
    int32_t *types = NULL;
    sp_err e;

    if (!sp_gguf_find(g, "tokenizer.ggml.model")) {
        e = sp_diag_set(diag, SP_ERR_NOT_FOUND, UINT64_MAX, "tokenizer.ggml.model is missing");
        goto done;
    }
    if ((e = sp_gguf_get_str(g, "tokenizer.ggml.model", &spec.model, diag)) ||
        (e = opt_str(g, "tokenizer.ggml.pre", &spec.pre, diag)) ||
        (e = opt_str(g, "general.name", &spec.name, diag)))
        goto done;

    const sp_gguf_kv *kv = sp_gguf_find(g, "tokenizer.ggml.tokens");
    if (!kv) {
        e = sp_diag_set(diag, SP_ERR_NOT_FOUND, UINT64_MAX, "tokenizer.ggml.tokens is missing");
        goto done;
    }
    uint64_t n_tokens;
    if ((e = str_array(g, kv, "tokenizer.ggml.tokens", &tokens, &n_tokens, diag)))
        goto done;
    if (n_tokens == 0 || n_tokens > INT32_MAX) {
        e = sp_diag_set(diag, SP_ERR_RANGE, kv->offset, "bad token count %llu",
                        (unsigned long long)n_tokens);
        goto done;
    }
    spec.n_tokens = (uint32_t)n_tokens;
    spec.tokens = tokens;

    if ((kv = sp_gguf_find(g, "tokenizer.ggml.scores"))) {
        if (kv->type != SP_GGUF_ARRAY ||
            (kv->arr_type != SP_GGUF_FLOAT32 && kv->arr_type != SP_GGUF_INT32)) {
            e = sp_diag_set(diag, SP_ERR_FORMAT, kv->offset,
                            "tokenizer.ggml.scores is not an array of float32 or int32");
            goto done;
        }
        if (kv->arr_n < n_tokens) {
            e = sp_diag_set(diag, SP_ERR_FORMAT, kv->offset, "fewer scores (%llu) than tokens",
                            (unsigned long long)kv->arr_n);
            goto done;
        }
        if (!(scores = malloc(n_tokens * sizeof *scores))) {
            e = SP_ERR_NOMEM;
            goto done;
        }
        for (uint64_t i = 0; i < n_tokens; i++) {
            double d;
            if ((e = sp_gguf_arr_float(kv, i, &d)))
                goto done;
            scores[i] = (float)d;
        }
        spec.scores = scores;
    }

    if ((kv = sp_gguf_find(g, "tokenizer.ggml.token_type"))) {
        if (kv->type != SP_GGUF_ARRAY || kv->arr_type != SP_GGUF_INT32) {
            e = sp_diag_set(diag, SP_ERR_FORMAT, kv->offset,
                            "tokenizer.ggml.token_type is not an array of int32");
            goto done;
        }
        if (kv->arr_n < n_tokens) {
            e = sp_diag_set(diag, SP_ERR_FORMAT, kv->offset, "fewer token types (%llu) than tokens",
                            (unsigned long long)kv->arr_n);
            goto done;
        }
        if (!(types = malloc(n_tokens * sizeof *types))) {
            e = SP_ERR_NOMEM;
            goto done;
        }
        for (uint64_t i = 0; i < n_tokens; i++) {
            int64_t t;
            if ((e = sp_gguf_arr_int(kv, i, &t)))
                goto done;
            types[i] = (int32_t)t;
        }
        spec.types = types;
    }

    if ((kv = sp_gguf_find(g, "tokenizer.ggml.merges"))) {
        if ((e = str_array(g, kv, "tokenizer.ggml.merges", &merges, &spec.n_merges, diag)))
            goto done;
        spec.merges = merges;
    }

    // the deprecated prefix/suffix/middle keys come last, as in llama.cpp, and win
    if ((e = opt_int(g, "tokenizer.ggml.bos_token_id", &spec.bos_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.eos_token_id", &spec.eos_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.eot_token_id", &spec.eot_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.eom_token_id", &spec.eom_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.unknown_token_id", &spec.unk_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.seperator_token_id", &spec.sep_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.padding_token_id", &spec.pad_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.fim_pre_token_id", &spec.fim_pre_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.fim_suf_token_id", &spec.fim_suf_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.fim_mid_token_id", &spec.fim_mid_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.fim_pad_token_id", &spec.fim_pad_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.fim_rep_token_id", &spec.fim_rep_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.fim_sep_token_id", &spec.fim_sep_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.prefix_token_id", &spec.fim_pre_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.suffix_token_id", &spec.fim_suf_id, diag)) ||
        (e = opt_int(g, "tokenizer.ggml.middle_token_id", &spec.fim_mid_id, diag)) ||
        (e = opt_bool(g, "tokenizer.ggml.add_bos_token", &spec.add_bos, diag)) ||
        (e = opt_bool(g, "tokenizer.ggml.add_eos_token", &spec.add_eos, diag)) ||
        (e = opt_bool(g, "tokenizer.ggml.add_space_prefix", &spec.add_space_prefix, diag)))
        goto done;

    e = sp_vocab_build(&spec, out, diag);
done:
    free(merges);
    free(types);
    free(scores);
    free(tokens);
    return e;
}
