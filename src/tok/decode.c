/* Token ids back to text: single pieces and llama.cpp's detokenize(). */
#include <stdlib.h>
#include <string.h>

#include "tok/tok_impl.h"

sp_str sp_tok_piece_ref(const sp_vocab *v, sp_token id, bool special) {
    if (id < 0 || (uint32_t)id >= v->n_tokens)
        return (sp_str){"", 0};
    if (!special && (v->attr[id] & (SP_TOKEN_ATTR_UNKNOWN | SP_TOKEN_ATTR_CONTROL)))
        return (sp_str){"", 0};
    return (sp_str){v->piece_pool + v->piece_off[id], v->piece_len[id]};
}

size_t sp_tok_piece(const sp_vocab *v, sp_token id, bool special, char *buf, size_t cap) {
    sp_str p = sp_tok_piece_ref(v, id, special);
    if (p.len)
        memcpy(buf, p.ptr, p.len < cap ? p.len : cap);
    return p.len;
}

/* llama.cpp's clean_up_tokenization_spaces passes, in place; returns the new length. The three
 * passes are kept exactly as llama.cpp writes them (in-place rewriting included). */
static size_t clean_spaces(char *text, size_t total) {
    // " ?", " !", " .", " ," lose the space
    size_t total1 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < total1; ++i) {
        const char x = text[i];
        if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ','))
            total--;
        text[total++] = x;
    }
    // " ' " -> "'"
    size_t total2 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < total2; ++i) {
        const char x = text[i];
        if (x == '\'' && i + 1 < total2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
            total--;
            text[++i] = '\0';
        }
        text[total++] = x;
    }
    // " 's", " 'm", " 're", " 've" lose the space
    size_t total3 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < total3; ++i) {
        const char x = text[i];
        if (text[i - 1] == ' ' && x == '\'' && i + 1 < total3) {
            const char x1 = text[i + 1];
            if (x1 == 's' || x1 == 'm') {
                total--;
            } else if (x1 != 't' && x1 != 'd' && i + 2 < total3) {
                const char x2 = text[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e'))
                    total--;
            }
        }
        text[total++] = x;
    }
    return total;
}

sp_err sp_tok_decode(const sp_vocab *v, const sp_token *ids, size_t n, unsigned flags, char **out,
                     size_t *out_len, sp_diag *diag) {
    if (!v || !out || (!ids && n))
        return SP_ERR_INVALID;
    const bool special = flags & SP_DECODE_SPECIAL;
    bool remove_space = v->add_space_prefix;
    if ((flags & SP_DECODE_REMOVE_SPECIAL) && v->add_bos && n > 0 && ids[0] == v->bos) {
        remove_space = false;
        ids++;
        n--;
    }
    if ((flags & SP_DECODE_REMOVE_SPECIAL) && v->add_eos && n > 0 && ids[n - 1] == v->eos)
        n--;

    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= v->n_tokens)
            return sp_diag_set(diag, SP_ERR_RANGE, i, "token id %d out of range [0, %u)", ids[i],
                               v->n_tokens);
        total += sp_tok_piece_ref(v, ids[i], special).len;
    }
    char *text = malloc(total + 1);
    if (!text)
        return SP_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        sp_str p = sp_tok_piece_ref(v, ids[i], special);
        if (remove_space && p.len && p.ptr[0] == ' ') {
            p.ptr++;
            p.len--;
        }
        remove_space = false;
        memcpy(text + k, p.ptr, p.len);
        k += p.len;
    }
    if (v->clean_spaces)
        k = clean_spaces(text, k);
    text[k] = '\0';
    *out = text;
    if (out_len)
        *out_len = k;
    return SP_OK;
}

/* ---- streaming ------------------------------------------------------------------------------ */

sp_err sp_detok_init(sp_detok *d, const sp_vocab *v, unsigned flags) {
    memset(d, 0, sizeof *d);
    // worst case: 3 held bytes + the piece, every byte replaced by U+FFFD (3 bytes)
    size_t cap = 3 * ((size_t)v->max_piece_len + 4);
    d->buf = malloc(cap);
    if (!d->buf)
        return SP_ERR_NOMEM;
    d->cap = cap;
    d->v = v;
    d->flags = flags;
    d->first = true;
    return SP_OK;
}

void sp_detok_deinit(sp_detok *d) {
    free(d->buf);
    memset(d, 0, sizeof *d);
}

/* The length of a UTF-8 character starting with lead byte c, and the range its second byte must
 * fall in (Unicode's well-formed sequences table); 0 if c cannot start one. */
static size_t lead_info(uint8_t c, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0)
            *lo = 0xA0;
        else if (c == 0xED)
            *hi = 0x9F;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0)
            *lo = 0x90;
        else if (c == 0xF4)
            *hi = 0x8F;
        return 4;
    }
    return 0;
}

static size_t put_invalid(const sp_detok *d, const uint8_t *s, size_t n, char *out) {
    if (d->flags & SP_DETOK_REPLACE_INVALID) {
        memcpy(out, "\xef\xbf\xbd", 3);
        return 3;
    }
    memcpy(out, s, n);
    return n;
}

sp_err sp_detok_push(sp_detok *d, sp_token id, sp_str *out) {
    const sp_vocab *v = d->v;
    if (id < 0 || (uint32_t)id >= v->n_tokens)
        return SP_ERR_RANGE;
    sp_str p = sp_tok_piece_ref(v, id, d->flags & SP_DECODE_SPECIAL);
    if (d->first && (d->flags & SP_DETOK_STRIP_SPACE) && v->add_space_prefix && p.len &&
        p.ptr[0] == ' ') {
        p.ptr++;
        p.len--;
    }
    d->first = false;

    // the held bytes followed by the piece, scanned character by character
    uint8_t in[4];
    const size_t nh = d->n_held, n = nh + p.len;
    memcpy(in, d->held, nh);
#define AT(i) ((i) < nh ? in[i] : (uint8_t)p.ptr[(i)-nh])
    size_t k = 0, i = 0;
    d->n_held = 0;
    while (i < n) {
        uint8_t c = AT(i), lo, hi;
        if (c < 0x80) {
            d->buf[k++] = (char)c;
            i++;
            continue;
        }
        size_t len = lead_info(c, &lo, &hi), m = 1;
        while (m < len && i + m < n) {
            uint8_t b = AT(i + m);
            if (b < (m == 1 ? lo : 0x80) || b > (m == 1 ? hi : 0xBF))
                break;
            m++;
        }
        uint8_t seq[4];
        for (size_t q = 0; q < m; q++)
            seq[q] = AT(i + q);
        if (len && m == len) {
            memcpy(d->buf + k, seq, m);
            k += m;
        } else if (len && i + m == n) {
            memcpy(d->held, seq, m); // a valid start, cut short: wait for the rest
            d->n_held = (uint32_t)m;
        } else {
            k += put_invalid(d, seq, m, d->buf + k);
        }
        i += m;
    }
#undef AT
    *out = (sp_str){d->buf, k};
    return SP_OK;
}

sp_str sp_detok_flush(sp_detok *d) {
    size_t k = 0;
    if (d->n_held)
        k = put_invalid(d, d->held, d->n_held, d->buf);
    d->n_held = 0;
    d->first = true;
    return (sp_str){d->buf, k};
}
