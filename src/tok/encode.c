/* sp_tok_encode(): UTF-8 validation, splitting out special tokens (llama.cpp's
 * tokenizer_st_partition), then the SPM or BPE algorithm on each text fragment. */
#include <stdlib.h>
#include <string.h>

#include "tok/tok_impl.h"

/* ---- sp_tokens ------------------------------------------------------------------------------ */

void sp_tokens_init(sp_tokens *t) {
    t->ids = NULL;
    t->n = 0;
    t->cap = 0;
}

void sp_tokens_deinit(sp_tokens *t) {
    free(t->ids);
    sp_tokens_init(t);
}

sp_err sp_tokens_reserve(sp_tokens *t, size_t n_total) {
    if (n_total <= t->cap)
        return SP_OK;
    size_t cap = t->cap ? t->cap : 16;
    while (cap < n_total) {
        if (cap > SIZE_MAX / 2 / sizeof(sp_token))
            return SP_ERR_NOMEM;
        cap *= 2;
    }
    sp_token *ids = realloc(t->ids, cap * sizeof *ids);
    if (!ids)
        return SP_ERR_NOMEM;
    t->ids = ids;
    t->cap = cap;
    return SP_OK;
}

sp_err sp_tokens_push(sp_tokens *t, sp_token id) {
    if (t->n == t->cap) {
        sp_err e = sp_tokens_reserve(t, t->n + 1);
        if (e)
            return e;
    }
    t->ids[t->n++] = id;
    return SP_OK;
}

/* ---- special-token partition ---------------------------------------------------------------- */

typedef struct frag {
    sp_token tok; // SP_TOKEN_NULL for raw text
    size_t off, len;
} frag;

typedef struct frags {
    frag *a;
    size_t n, cap;
} frags;

static sp_err frags_push(frags *f, sp_token tok, size_t off, size_t len) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        frag *a = realloc(f->a, cap * sizeof *a);
        if (!a)
            return SP_ERR_NOMEM;
        f->a = a;
        f->cap = cap;
    }
    f->a[f->n++] = (frag){tok, off, len};
    return SP_OK;
}

/* isspace() in the C locale, as llama.cpp uses for lstrip/rstrip */
static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Splits every raw fragment of `in` at the occurrences of special token id, into `out`. */
static sp_err split_at(const sp_vocab *v, sp_token id, const char *text, const frags *in,
                       frags *out) {
    const char *st = v->text_pool + v->text_off[id];
    size_t sn = v->text_len[id];
    uint32_t attr = v->attr[id];
    out->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        frag f = in->a[i];
        sp_err e;
        if (f.tok != SP_TOKEN_NULL) {
            if ((e = frags_push(out, f.tok, 0, 0)))
                return e;
            continue;
        }
        size_t off = f.off, len = f.len;
        for (;;) {
            const char *m = memmem(text + off, len, st, sn);
            if (!m) {
                if (len > 0 && (e = frags_push(out, SP_TOKEN_NULL, off, len)))
                    return e;
                break;
            }
            size_t pos = (size_t)(m - text);
            size_t left = pos - off;
            if (attr & SP_TOKEN_ATTR_LSTRIP)
                while (left > 0 && is_space(text[off + left - 1]))
                    left--;
            if (left > 0 && (e = frags_push(out, SP_TOKEN_NULL, off, left)))
                return e;
            if ((e = frags_push(out, id, 0, 0)))
                return e;
            size_t end = off + len;
            off = pos + sn;
            len = end - off;
            if (attr & SP_TOKEN_ATTR_RSTRIP)
                while (len > 0 && is_space(text[off])) {
                    off++;
                    len--;
                }
            if (len == 0)
                break;
        }
    }
    return SP_OK;
}

/* llama.cpp's tokenizer_st_partition: special tokens, longest first, each split out of every
 * remaining raw fragment. */
static sp_err partition(const sp_vocab *v, const char *text, size_t len, bool parse_special,
                        frags *f, frags *tmp) {
    f->n = 0;
    if (len == 0)
        return SP_OK;
    sp_err e = frags_push(f, SP_TOKEN_NULL, 0, len);
    if (e)
        return e;
    for (uint32_t k = 0; k < v->n_specials; k++) {
        sp_token id = v->specials[k];
        if (!parse_special && (v->attr[id] & (SP_TOKEN_ATTR_CONTROL | SP_TOKEN_ATTR_UNKNOWN)))
            continue;
        // cheap filter: a token absent from the whole text is absent from every fragment
        if (!memmem(text, len, v->text_pool + v->text_off[id], v->text_len[id]))
            continue;
        if ((e = split_at(v, id, text, f, tmp)))
            return e;
        frags t = *f;
        *f = *tmp;
        *tmp = t;
    }
    return SP_OK;
}

/* ---- encode --------------------------------------------------------------------------------- */

/* SPM text of a fragment: an optional leading space, then every ' ' replaced by ▁. */
static size_t spm_escape(const char *s, size_t n, bool prefix, char *out) {
    size_t k = 0;
    if (prefix) {
        memcpy(out, "\xe2\x96\x81", 3);
        k = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(out + k, "\xe2\x96\x81", 3);
            k += 3;
        } else {
            out[k++] = s[i];
        }
    }
    return k;
}

static sp_err encode(const sp_vocab *v, const char *text, size_t len, bool add_special,
                     bool parse_special, bool space_prefix, sp_tokens *out, sp_diag *diag) {
    if (!v || !out || (!text && len))
        return SP_ERR_INVALID;
    size_t bad = sp__utf8_validate(text, len);
    if (bad != len)
        return sp_diag_set(diag, SP_ERR_UTF8, bad, "invalid UTF-8 at byte %zu", bad);

    const size_t n0 = out->n;
    frags f = {0}, tmp = {0};
    char *esc = NULL;
    sp_err e = partition(v, text, len, parse_special, &f, &tmp);
    if (e)
        goto fail;

    if (add_special && v->add_bos && (e = sp_tokens_push(out, v->bos)))
        goto fail;
    if (v->type == SP_VOCAB_SPM) {
        size_t max_len = 0;
        for (size_t i = 0; i < f.n; i++)
            if (f.a[i].tok == SP_TOKEN_NULL && f.a[i].len > max_len)
                max_len = f.a[i].len;
        if (max_len > (SIZE_MAX - 3) / 3) {
            e = SP_ERR_NOMEM;
            goto fail;
        }
        esc = malloc(max_len * 3 + 3);
        if (!esc) {
            e = SP_ERR_NOMEM;
            goto fail;
        }
        bool prev_special = space_prefix; // the text start counts as after a special token
        for (size_t i = 0; i < f.n; i++) {
            if (f.a[i].tok != SP_TOKEN_NULL) {
                if ((e = sp_tokens_push(out, f.a[i].tok)))
                    goto fail;
                prev_special = true;
                continue;
            }
            size_t n =
                spm_escape(text + f.a[i].off, f.a[i].len, v->add_space_prefix && prev_special, esc);
            if ((e = sp__spm_encode(v, esc, n, out)))
                goto fail;
            prev_special = false;
        }
    } else {
        for (size_t i = 0; i < f.n; i++) {
            if (f.a[i].tok != SP_TOKEN_NULL)
                e = sp_tokens_push(out, f.a[i].tok);
            else
                e = sp__bpe_encode(v, text + f.a[i].off, f.a[i].len, out);
            if (e)
                goto fail;
        }
    }
    if (add_special && v->add_eos && (e = sp_tokens_push(out, v->eos)))
        goto fail;

    free(esc);
    free(tmp.a);
    free(f.a);
    return SP_OK;
fail:
    if (e == SP_ERR_LIMIT)
        sp_diag_set(diag, e, UINT64_MAX, "text too long or too complex for the pre-tokenizer");
    out->n = n0;
    free(esc);
    free(tmp.a);
    free(f.a);
    return e;
}

sp_err sp_tok_encode(const sp_vocab *v, const char *text, size_t len, bool add_special,
                     bool parse_special, sp_tokens *out, sp_diag *diag) {
    return encode(v, text, len, add_special, parse_special, true, out, diag);
}

sp_err sp_tok_encode_continuation(const sp_vocab *v, const char *text, size_t len, sp_tokens *out,
                                  sp_diag *diag) {
    return encode(v, text, len, false, false, false, out, diag);
}
