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

sp_err sp_tok_decode(const sp_vocab *v, const sp_token *ids, size_t n, unsigned flags,
                     char **out, size_t *out_len, sp_diag *diag) {
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
            return sp_diag_set(diag, SP_ERR_RANGE, i, "token id %d out of range [0, %u)",
                               ids[i], v->n_tokens);
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
