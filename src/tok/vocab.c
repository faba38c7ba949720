/* Building a vocabulary from an sp_vocab_spec, following llama.cpp's llama_vocab::load():
 * type defaults, special ids, the text-based fix-ups (EOT/EOG/FIM detection), the special
 * token cache and the token-to-piece cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "tok/tok_impl.h"

#define TOK_SEED   0x9e3779b97f4a7c15ull
#define MERGE_SEED 0x2545f4914f6cdd1dull

/* ---- small growable byte buffer --------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static sp_err buf_put(buf *b, const void *s, size_t n) {
    if (b->cap - b->n < n + 1) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < n + 1) {
            if (cap > SIZE_MAX / 2)
                return SP_ERR_NOMEM;
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p)
            return SP_ERR_NOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return SP_OK;
}

/* ---- tables ------------------------------------------------------------------------------- */

static sp_err map_init(sp__map *m, size_t n_entries) {
    size_t cap = 16;
    while (cap < n_entries * 2) {
        if (cap > SIZE_MAX / 2 / sizeof(sp__map_slot))
            return SP_ERR_NOMEM;
        cap <<= 1;
    }
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots)
        return SP_ERR_NOMEM;
    for (size_t i = 0; i < cap; i++)
        m->slots[i].value = UINT32_MAX;
    m->mask = cap - 1;
    return SP_OK;
}

static bool tok_eq(const sp_vocab *v, uint32_t id, const char *s, size_t n) {
    return v->text_len[id] == n && memcmp(v->text_pool + v->text_off[id], s, n) == 0;
}

sp_token sp__vocab_lookup(const sp_vocab *v, const char *s, size_t n) {
    uint64_t h = sp__hash_bytes(s, n, TOK_SEED);
    for (size_t i = h & v->tok_map.mask;; i = (i + 1) & v->tok_map.mask) {
        const sp__map_slot *sl = &v->tok_map.slots[i];
        if (sl->value == UINT32_MAX)
            return SP_TOKEN_NULL;
        if (sl->hash == (uint32_t)h && tok_eq(v, sl->value, s, n))
            return (sp_token)sl->value;
    }
}

/* Inserts token id; returns the id already holding the same text, or SP_TOKEN_NULL. */
static sp_token tok_insert(sp_vocab *v, uint32_t id) {
    const char *s = v->text_pool + v->text_off[id];
    size_t n = v->text_len[id];
    uint64_t h = sp__hash_bytes(s, n, TOK_SEED);
    for (size_t i = h & v->tok_map.mask;; i = (i + 1) & v->tok_map.mask) {
        sp__map_slot *sl = &v->tok_map.slots[i];
        if (sl->value == UINT32_MAX) {
            sl->value = id;
            sl->hash = (uint32_t)h;
            return SP_TOKEN_NULL;
        }
        if (sl->hash == (uint32_t)h && tok_eq(v, sl->value, s, n))
            return (sp_token)sl->value;
    }
}

static uint64_t merge_hash(const char *s, size_t n, size_t split) {
    return sp__hash_bytes(s, n, MERGE_SEED + split * 0x100000001b3ull);
}

static bool merge_eq(const sp_vocab *v, uint32_t r, const char *s, size_t n, size_t split) {
    return v->merge_len[r] == n && v->merge_split[r] == split &&
           memcmp(v->merge_pool + v->merge_off[r], s, n) == 0;
}

int32_t sp__vocab_merge_rank(const sp_vocab *v, const char *s, size_t n, size_t split) {
    if (!v->n_merges)
        return -1;
    uint64_t h = merge_hash(s, n, split);
    for (size_t i = h & v->merge_map.mask;; i = (i + 1) & v->merge_map.mask) {
        const sp__map_slot *sl = &v->merge_map.slots[i];
        if (sl->value == UINT32_MAX)
            return -1;
        if (sl->hash == (uint32_t)h && merge_eq(v, sl->value, s, n, split))
            return (int32_t)sl->value;
    }
}

/* Inserts merge rank r unless the same pair is already there (llama.cpp keeps the first). */
static void merge_insert(sp_vocab *v, uint32_t r) {
    const char *s = v->merge_pool + v->merge_off[r];
    size_t n = v->merge_len[r], split = v->merge_split[r];
    uint64_t h = merge_hash(s, n, split);
    for (size_t i = h & v->merge_map.mask;; i = (i + 1) & v->merge_map.mask) {
        sp__map_slot *sl = &v->merge_map.slots[i];
        if (sl->value == UINT32_MAX) {
            sl->value = r;
            sl->hash = (uint32_t)h;
            return;
        }
        if (sl->hash == (uint32_t)h && merge_eq(v, sl->value, s, n, split))
            return;
    }
}

/* ---- spec ---------------------------------------------------------------------------------- */

void sp_vocab_spec_init(sp_vocab_spec *spec) {
    memset(spec, 0, sizeof *spec);
    spec->bos_id = spec->eos_id = spec->eot_id = spec->eom_id = SP_VOCAB_SPEC_ABSENT;
    spec->unk_id = spec->sep_id = spec->pad_id = SP_VOCAB_SPEC_ABSENT;
    spec->fim_pre_id = spec->fim_suf_id = spec->fim_mid_id = SP_VOCAB_SPEC_ABSENT;
    spec->fim_pad_id = spec->fim_rep_id = spec->fim_sep_id = SP_VOCAB_SPEC_ABSENT;
    spec->add_bos = spec->add_eos = spec->add_space_prefix = -1;
}

static bool str_is(sp_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

/* ---- the build ----------------------------------------------------------------------------- */

static const char *tok_text(const sp_vocab *v, sp_token id) {
    return v->text_pool + v->text_off[id];
}

static bool text_is(const sp_vocab *v, sp_token id, const char *c) {
    return tok_eq(v, (uint32_t)id, c, strlen(c));
}

static bool text_in(const sp_vocab *v, sp_token id, const char *const *list) {
    for (; *list; list++)
        if (text_is(v, id, *list))
            return true;
    return false;
}

/* Applies a special id from the file over the type default, as llama.cpp does: a default out
 * of range is disabled, a file value out of range is ignored with a warning. */
static void apply_id(sp_token *id, int64_t file_val, uint32_t n_tokens, const char *what) {
    if (*id >= 0 && (uint32_t)*id >= n_tokens) {
        SP_WARN("tokenizer: default %s id %d out of vocab range, disabling", what, *id);
        *id = SP_TOKEN_NULL;
    }
    // -1, also written as the u32 0xFFFFFFFF, is how converters say "none": not worth a warning.
    if (file_val == SP_VOCAB_SPEC_ABSENT || file_val == -1 || file_val == 0xFFFFFFFFll)
        return;
    if (file_val < 0 || file_val >= (int64_t)n_tokens) {
        SP_WARN("tokenizer: bad %s id %lld, using default %d", what, (long long)file_val, *id);
        return;
    }
    *id = (sp_token)file_val;
}

static void mark_control(sp_vocab *v, sp_token id) {
    if (!(v->attr[id] & SP_TOKEN_ATTR_CONTROL)) {
        SP_DEBUG("tokenizer: control-looking token %d '%s' was not control-type; overriding", id,
                 tok_text(v, id));
        v->attr[id] |= SP_TOKEN_ATTR_CONTROL;
    }
}

/* Detects a special token by its text when the file did not name it (the first match in id
 * order wins), marking it control. */
static void detect(sp_vocab *v, sp_token *slot, const char *const *names) {
    if (*slot != SP_TOKEN_NULL)
        return;
    for (uint32_t id = 0; id < v->n_tokens; id++) {
        if (text_in(v, (sp_token)id, names)) {
            *slot = (sp_token)id;
            mark_control(v, (sp_token)id);
            return;
        }
    }
}

static const char *const eot_names[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "<|end_of_text|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "[EOT]",
                                        "<\xef\xbd\x9c"
                                        "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                        "<end_of_utterance>",
                                        NULL};
static const char *const eom_names[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_names[] = {"<|fim_prefix|>",
                                            "<fim-prefix>",
                                            "<fim_prefix>",
                                            "<\xef\xbd\x9c"
                                            "fim\xe2\x96\x81"
                                            "begin\xef\xbd\x9c>",
                                            "<PRE>",
                                            "\xe2\x96\x81<PRE>",
                                            "<|code_prefix|>",
                                            NULL};
static const char *const fim_suf_names[] = {"<|fim_suffix|>",
                                            "<fim-suffix>",
                                            "<fim_suffix>",
                                            "<\xef\xbd\x9c"
                                            "fim\xe2\x96\x81hole\xef\xbd\x9c>",
                                            "<SUF>",
                                            "\xe2\x96\x81<SUF>",
                                            "<|code_suffix|>",
                                            NULL};
static const char *const fim_mid_names[] = {"<|fim_middle|>",
                                            "<fim-middle>",
                                            "<fim_middle>",
                                            "<\xef\xbd\x9c"
                                            "fim\xe2\x96\x81"
                                            "end\xef\xbd\x9c>",
                                            "<MID>",
                                            "\xe2\x96\x81<MID>",
                                            "<|code_middle|>",
                                            NULL};
static const char *const fim_pad_names[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", NULL};
static const char *const fim_rep_names[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                            "<REPO>",       "<reponame>",    NULL};
static const char *const fim_sep_names[] = {"<|file_sep|>", NULL};
/* Tokens that end generation by their text (llama.cpp's special_eog_ids list). */
static const char *const eog_names[] = {
    "<|eot_id|>",      "<|im_end|>",         "<|end|>",    "<|return|>", "<|call|>",
    "<end_of_turn>",   "<|endoftext|>",      "<|eom_id|>", "<EOT>",      "_<EOT>",
    "<|end_of_text|>", "<end_of_utterance>", NULL};

static void set_eog(sp_vocab *v, sp_token id) {
    if (id != SP_TOKEN_NULL)
        v->attr[id] |= SP__ATTR_EOG;
}

static void fixups(sp_vocab *v) {
    detect(v, &v->eot, eot_names);
    detect(v, &v->eom, eom_names);
    detect(v, &v->fim_pre, fim_pre_names);
    detect(v, &v->fim_suf, fim_suf_names);
    detect(v, &v->fim_mid, fim_mid_names);
    detect(v, &v->fim_pad, fim_pad_names);
    detect(v, &v->fim_rep, fim_rep_names);
    detect(v, &v->fim_sep, fim_sep_names);

    // control tokens named "unused..." are unused
    for (uint32_t id = 0; id < v->n_tokens; id++)
        if ((v->attr[id] & SP_TOKEN_ATTR_CONTROL) && strstr(tok_text(v, (sp_token)id), "unused"))
            v->attr[id] |= SP_TOKEN_ATTR_UNUSED;

    set_eog(v, v->fim_pad);
    set_eog(v, v->fim_rep);
    set_eog(v, v->fim_sep);
    for (uint32_t id = 0; id < v->n_tokens; id++) {
        if (text_in(v, (sp_token)id, eog_names)) {
            set_eog(v, (sp_token)id);
            mark_control(v, (sp_token)id);
        }
    }
    // gpt-oss renders these structural tokens always
    static const char *const always_shown[] = {"<|channel|>", "<|message|>", "<|start|>",
                                               "<|constrain|>", NULL};
    for (uint32_t id = 0; id < v->n_tokens; id++)
        if (text_in(v, (sp_token)id, always_shown))
            v->attr[id] = SP_TOKEN_ATTR_USER_DEFINED | (v->attr[id] & SP__ATTR_EOG);
    set_eog(v, v->eos);
    set_eog(v, v->eot);
    set_eog(v, v->eom);

    // o200k_harmony: with <|return|> and <|call|> present, <|end|> does not end generation
    sp_token ret = sp__vocab_lookup(v, "<|return|>", 10);
    sp_token call = sp__vocab_lookup(v, "<|call|>", 8);
    sp_token end = sp__vocab_lookup(v, "<|end|>", 7);
    if (ret != SP_TOKEN_NULL && call != SP_TOKEN_NULL && end != SP_TOKEN_NULL &&
        (v->attr[ret] & SP__ATTR_EOG) && (v->attr[call] & SP__ATTR_EOG) &&
        (v->attr[end] & SP__ATTR_EOG))
        v->attr[end] = SP_TOKEN_ATTR_USER_DEFINED;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const sp_vocab *v = ctx;
    sp_token x = *(const sp_token *)a, y = *(const sp_token *)b;
    if (v->text_len[x] != v->text_len[y])
        return v->text_len[x] > v->text_len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static sp_err build_specials(sp_vocab *v) {
    uint32_t n = 0;
    const uint32_t mask =
        SP_TOKEN_ATTR_CONTROL | SP_TOKEN_ATTR_USER_DEFINED | SP_TOKEN_ATTR_UNKNOWN;
    for (uint32_t id = 0; id < v->n_tokens; id++)
        n += (v->attr[id] & mask) != 0;
    v->specials = malloc((n ? n : 1) * sizeof *v->specials);
    if (!v->specials)
        return SP_ERR_NOMEM;
    n = 0;
    for (uint32_t id = 0; id < v->n_tokens; id++)
        if (v->attr[id] & mask)
            v->specials[n++] = (sp_token)id;
    qsort_r(v->specials, n, sizeof *v->specials, cmp_special, v);
    v->n_specials = n;
    return SP_OK;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The byte of a "<0xNN>" token: strtol over text[3..5), as llama.cpp's token_to_byte. */
static uint8_t token_byte(const sp_vocab *v, sp_token id) {
    const char *t = tok_text(v, id);
    unsigned val = 0;
    for (uint32_t i = 3; i < 5 && i < v->text_len[id]; i++) {
        int h = hexval(t[i]);
        if (h < 0)
            break;
        val = val * 16 + (unsigned)h;
    }
    return (uint8_t)val;
}

/* token_to_piece(id, special = true) into b. */
static sp_err make_piece(const sp_vocab *v, sp_token id, buf *b) {
    const uint32_t attr = v->attr[id];
    const char *t = tok_text(v, id);
    size_t n = v->text_len[id];
    if (attr & (SP_TOKEN_ATTR_UNKNOWN | SP_TOKEN_ATTR_CONTROL | SP_TOKEN_ATTR_USER_DEFINED))
        return buf_put(b, t, n);
    if (attr & SP_TOKEN_ATTR_NORMAL) {
        if (v->type == SP_VOCAB_SPM) {
            // ▁ (U+2581) -> space
            size_t i = 0;
            while (i < n) {
                if (n - i >= 3 && memcmp(t + i, "\xe2\x96\x81", 3) == 0) {
                    sp_err e = buf_put(b, " ", 1);
                    if (e)
                        return e;
                    i += 3;
                    continue;
                }
                size_t j = i + 1;
                while (j < n && !(n - j >= 3 && memcmp(t + j, "\xe2\x96\x81", 3) == 0))
                    j++;
                sp_err e = buf_put(b, t + i, j - i);
                if (e)
                    return e;
                i = j;
            }
            return SP_OK;
        }
        // byte-level BPE: each code point stands for one byte
        size_t i = 0;
        while (i < n) {
            uint32_t cp = 0xFFFD; // invalid UTF-8 reads as U+FFFD, one byte at a time
            size_t k = sp__utf8_len((unsigned char)t[i]);
            if (k <= n - i && sp__utf8_validate(t + i, k) == k)
                sp__utf8_decode(t + i, k, &cp);
            else
                k = 1;
            int byte = sp__gpt2_cp_to_byte(cp);
            sp_err e;
            if (byte >= 0) {
                char c = (char)byte;
                e = buf_put(b, &c, 1);
            } else {
                // llama.cpp's llama_decode_text() marks code points outside the mapping
                char enc[4], hex[16];
                size_t m = sp__utf8_encode(cp, enc);
                e = buf_put(b, "[UNK_BYTE_0x", 12);
                for (size_t q = 0; !e && q < m; q++) {
                    snprintf(hex, sizeof hex, "%02x", (unsigned char)enc[q]);
                    e = buf_put(b, hex, 2);
                }
                if (!e)
                    e = buf_put(b, t, n);
                if (!e)
                    e = buf_put(b, "]", 1);
            }
            if (e)
                return e;
            i += k;
        }
        return SP_OK;
    }
    if (attr & SP_TOKEN_ATTR_BYTE) {
        char c = (char)token_byte(v, id);
        return buf_put(b, &c, 1);
    }
    return SP_OK; // unused / undefined: nothing
}

static sp_err build_pieces(sp_vocab *v) {
    buf b = {0};
    v->piece_off = malloc(v->n_tokens * sizeof *v->piece_off);
    v->piece_len = malloc(v->n_tokens * sizeof *v->piece_len);
    if (!v->piece_off || !v->piece_len)
        return SP_ERR_NOMEM;
    for (uint32_t id = 0; id < v->n_tokens; id++) {
        size_t start = b.n;
        sp_err e = make_piece(v, (sp_token)id, &b);
        if (!e)
            e = buf_put(&b, "", 0);
        if (!e && b.n >= UINT32_MAX)
            e = SP_ERR_RANGE;
        if (e) {
            free(b.p);
            return e;
        }
        v->piece_off[id] = (uint32_t)start;
        v->piece_len[id] = (uint32_t)(b.n - start);
        if (v->piece_len[id] > v->max_piece_len)
            v->max_piece_len = v->piece_len[id];
        b.n++; // keep the NUL
    }
    v->piece_pool = b.p;
    return SP_OK;
}

static void build_byte_tokens(sp_vocab *v) {
    static const char hex[] = "0123456789ABCDEF";
    for (int c = 0; c < 256; c++) {
        sp_token t = SP_TOKEN_NULL;
        if (v->type == SP_VOCAB_SPM) {
            char name[6] = {'<', '0', 'x', hex[c >> 4], hex[c & 15], '>'};
            t = sp__vocab_lookup(v, name, 6);
            if (t == SP_TOKEN_NULL && c != 0) { // llama.cpp falls back to the byte itself
                char ch = (char)c;
                t = sp__vocab_lookup(v, &ch, 1);
            }
        } else {
            char enc[4];
            size_t n = sp__utf8_encode(sp__gpt2_byte_to_cp((uint8_t)c), enc);
            t = sp__vocab_lookup(v, enc, n);
        }
        v->byte_tok[c] = t;
    }
}

static sp_err load_merges(sp_vocab *v, const sp_vocab_spec *spec, sp_diag *diag) {
    if (spec->n_merges > UINT32_MAX / 2)
        return sp_diag_set(diag, SP_ERR_RANGE, UINT64_MAX, "too many merges (%llu)",
                           (unsigned long long)spec->n_merges);
    if (spec->n_merges && !spec->merges)
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "merges missing");
    uint32_t n = (uint32_t)spec->n_merges;
    buf b = {0};
    v->merge_off = malloc((n ? n : 1) * sizeof *v->merge_off);
    v->merge_len = malloc((n ? n : 1) * sizeof *v->merge_len);
    v->merge_split = malloc((n ? n : 1) * sizeof *v->merge_split);
    if (!v->merge_off || !v->merge_len || !v->merge_split)
        return SP_ERR_NOMEM;
    for (uint32_t i = 0; i < n; i++) {
        sp_str m = spec->merges[i];
        // "left right", split at the first space after the first byte; no space: an empty pair
        size_t pos = m.len;
        for (size_t k = 1; k < m.len; k++) {
            if (m.ptr[k] == ' ') {
                pos = k;
                break;
            }
        }
        size_t start = b.n;
        sp_err e = SP_OK;
        uint32_t split = 0;
        if (pos < m.len) {
            e = buf_put(&b, m.ptr, pos);
            if (!e)
                e = buf_put(&b, m.ptr + pos + 1, m.len - pos - 1);
            split = (uint32_t)pos;
        }
        if (!e && b.n >= UINT32_MAX)
            e = SP_ERR_RANGE;
        if (e) {
            free(b.p);
            return e;
        }
        v->merge_off[i] = (uint32_t)start;
        v->merge_len[i] = (uint32_t)(b.n - start);
        v->merge_split[i] = split;
    }
    if (!b.p && buf_put(&b, "", 0))
        return SP_ERR_NOMEM;
    v->merge_pool = b.p;
    v->n_merges = n;
    sp_err e = map_init(&v->merge_map, n);
    if (e)
        return e;
    for (uint32_t i = 0; i < n; i++)
        if (v->merge_len[i]) // llama.cpp keys a space-less merge as ("", ""): never matches
            merge_insert(v, i);
    return SP_OK;
}

/* Phi-3's converted models lack lstrip/rstrip flags; llama.cpp sets them by model name. */
static void model_attrs(sp_vocab *v, sp_str name) {
    char low[128];
    size_t n = SP_MIN(name.len, sizeof low - 1);
    for (size_t i = 0; i < n; i++) {
        char c = name.ptr[i];
        low[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    low[n] = '\0';
    if (!strstr(low, "phi-3") && !strstr(low, "phi3"))
        return;
    for (uint32_t i = 0; i < v->n_specials; i++)
        v->attr[v->specials[i]] |= SP_TOKEN_ATTR_RSTRIP;
    sp_token t = sp__vocab_lookup(v, "</s>", 4);
    if (t != SP_TOKEN_NULL)
        v->attr[t] |= SP_TOKEN_ATTR_RSTRIP;
    static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
    for (size_t i = 0; i < SP_ARRAY_LEN(keep); i++) {
        t = sp__vocab_lookup(v, keep[i], strlen(keep[i]));
        if (t != SP_TOKEN_NULL)
            v->attr[t] &= ~(uint32_t)SP_TOKEN_ATTR_RSTRIP;
    }
}

static uint32_t attr_of_type(int32_t type) {
    switch (type) {
    case 1:
        return SP_TOKEN_ATTR_NORMAL;
    case 2:
        return SP_TOKEN_ATTR_UNKNOWN;
    case 3:
        return SP_TOKEN_ATTR_CONTROL;
    case 4:
        return SP_TOKEN_ATTR_USER_DEFINED;
    case 5:
        return SP_TOKEN_ATTR_UNUSED;
    case 6:
        return SP_TOKEN_ATTR_BYTE;
    default:
        return SP_TOKEN_ATTR_UNDEFINED;
    }
}

static sp_err load_tokens(sp_vocab *v, const sp_vocab_spec *spec, sp_diag *diag) {
    uint32_t n = spec->n_tokens;
    buf b = {0};
    v->text_off = malloc(n * sizeof *v->text_off);
    v->text_len = malloc(n * sizeof *v->text_len);
    v->scores = malloc(n * sizeof *v->scores);
    v->attr = malloc(n * sizeof *v->attr);
    if (!v->text_off || !v->text_len || !v->scores || !v->attr)
        return SP_ERR_NOMEM;
    for (uint32_t i = 0; i < n; i++) {
        sp_str t = spec->tokens[i];
        if (t.len && !t.ptr)
            return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "token %u has no text", i);
        size_t start = b.n;
        sp_err e;
        if (t.len == 0) {
            char name[32];
            int k = snprintf(name, sizeof name, "[EMPTY_%u]", i);
            SP_WARN("tokenizer: empty token at index %u", i);
            e = buf_put(&b, name, (size_t)k);
        } else {
            e = buf_put(&b, t.ptr, t.len);
        }
        if (!e && b.n >= UINT32_MAX)
            e = SP_ERR_RANGE;
        if (e) {
            free(b.p);
            return e == SP_ERR_RANGE ? sp_diag_set(diag, e, UINT64_MAX, "token texts too large")
                                     : e;
        }
        v->text_off[i] = (uint32_t)start;
        v->text_len[i] = (uint32_t)(b.n - start);
        b.n++; // keep the NUL
        v->scores[i] = spec->scores ? spec->scores[i] : 0.0f;
        v->attr[i] = spec->types ? attr_of_type(spec->types[i]) : SP_TOKEN_ATTR_NORMAL;
    }
    v->text_pool = b.p;
    sp_err e = map_init(&v->tok_map, n);
    if (e)
        return e;
    for (uint32_t i = 0; i < n; i++) {
        sp_token dup = tok_insert(v, i);
        if (dup != SP_TOKEN_NULL)
            return sp_diag_set(diag, SP_ERR_FORMAT, UINT64_MAX,
                               "duplicate token in vocabulary: '%.64s' has ids %d and %u",
                               tok_text(v, dup), dup, i);
    }
    return SP_OK;
}

sp_err sp_vocab_build(const sp_vocab_spec *spec, sp_vocab **out, sp_diag *diag) {
    sp_err e;
    if (!spec || !out)
        return SP_ERR_INVALID;
    if (spec->n_tokens == 0 || !spec->tokens || spec->n_tokens > INT32_MAX)
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "vocabulary has no tokens");
    sp_vocab *v = calloc(1, sizeof *v);
    if (!v)
        return SP_ERR_NOMEM;
    v->n_tokens = spec->n_tokens;
    v->eot = v->eom = v->sep = v->pad = SP_TOKEN_NULL;
    v->fim_pre = v->fim_suf = v->fim_mid = SP_TOKEN_NULL;
    v->fim_pad = v->fim_rep = v->fim_sep = SP_TOKEN_NULL;

    if (str_is(spec->model, "llama")) {
        v->type = SP_VOCAB_SPM;
        v->bos = 1;
        v->eos = 2;
        v->unk = 0;
        v->add_space_prefix = true;
        v->add_bos = true;
        v->add_eos = false;
        v->clean_spaces = false;
    } else if (str_is(spec->model, "gpt2")) {
        v->type = SP_VOCAB_BPE;
        v->bos = 11;
        v->eos = 11;
        v->unk = SP_TOKEN_NULL;
        v->add_space_prefix = false;
        v->add_bos = false;
        v->add_eos = false;
        sp__pre_flags pf;
        e = sp__pretok_create(spec->pre.ptr, spec->pre.len, &v->pretok, &pf, diag);
        if (e)
            goto fail;
        v->clean_spaces = pf.clean_spaces;
        v->ignore_merges = pf.ignore_merges;
        v->add_bos = pf.add_bos;
        if (!spec->merges) {
            e = sp_diag_set(diag, SP_ERR_FORMAT, UINT64_MAX, "BPE vocabulary without merges");
            goto fail;
        }
    } else {
        e = sp_diag_set(diag, SP_ERR_UNSUPPORTED, UINT64_MAX, "unsupported tokenizer model '%.*s'",
                        (int)SP_MIN(spec->model.len, 64), spec->model.ptr ? spec->model.ptr : "");
        goto fail;
    }
    if (spec->add_space_prefix >= 0)
        v->add_space_prefix = spec->add_space_prefix;

    e = load_tokens(v, spec, diag);
    if (e)
        goto fail;
    if (v->type == SP_VOCAB_BPE) {
        e = load_merges(v, spec, diag);
        if (e)
            goto fail;
    }

    apply_id(&v->bos, spec->bos_id, v->n_tokens, "bos");
    apply_id(&v->eos, spec->eos_id, v->n_tokens, "eos");
    apply_id(&v->eot, spec->eot_id, v->n_tokens, "eot");
    apply_id(&v->eom, spec->eom_id, v->n_tokens, "eom");
    apply_id(&v->unk, spec->unk_id, v->n_tokens, "unk");
    apply_id(&v->sep, spec->sep_id, v->n_tokens, "sep");
    apply_id(&v->pad, spec->pad_id, v->n_tokens, "pad");
    apply_id(&v->fim_pre, spec->fim_pre_id, v->n_tokens, "fim_pre");
    apply_id(&v->fim_suf, spec->fim_suf_id, v->n_tokens, "fim_suf");
    apply_id(&v->fim_mid, spec->fim_mid_id, v->n_tokens, "fim_mid");
    apply_id(&v->fim_pad, spec->fim_pad_id, v->n_tokens, "fim_pad");
    apply_id(&v->fim_rep, spec->fim_rep_id, v->n_tokens, "fim_rep");
    apply_id(&v->fim_sep, spec->fim_sep_id, v->n_tokens, "fim_sep");
    if (spec->add_bos >= 0)
        v->add_bos = spec->add_bos;
    if (spec->add_eos >= 0)
        v->add_eos = spec->add_eos;
    if (v->add_bos && v->bos == SP_TOKEN_NULL) {
        e = sp_diag_set(diag, SP_ERR_FORMAT, UINT64_MAX, "add_bos_token is true but no BOS id");
        goto fail;
    }
    if (v->add_eos && v->eos == SP_TOKEN_NULL) {
        e = sp_diag_set(diag, SP_ERR_FORMAT, UINT64_MAX, "add_eos_token is true but no EOS id");
        goto fail;
    }

    fixups(v);
    e = build_specials(v);
    if (e)
        goto fail;
    e = build_pieces(v);
    if (e)
        goto fail;
    model_attrs(v, spec->name);
    build_byte_tokens(v);

    *out = v;
    return SP_OK;
fail:
    sp_vocab_destroy(v);
    return e;
}

void sp_vocab_destroy(sp_vocab *v) {
    if (!v)
        return;
    sp__pretok_destroy(v->pretok);
    free(v->merge_map.slots);
    free(v->merge_split);
    free(v->merge_len);
    free(v->merge_off);
    free(v->merge_pool);
    free(v->specials);
    free(v->piece_len);
    free(v->piece_off);
    free(v->piece_pool);
    free(v->tok_map.slots);
    free(v->attr);
    free(v->scores);
    free(v->text_len);
    free(v->text_off);
    free(v->text_pool);
    free(v);
}

/* ---- accessors ---------------------------------------------------------------------------- */

static bool valid(const sp_vocab *v, sp_token id) {
    return id >= 0 && (uint32_t)id < v->n_tokens;
}

sp_vocab_type sp_vocab_get_type(const sp_vocab *v) {
    return v->type;
}
uint32_t sp_vocab_n_tokens(const sp_vocab *v) {
    return v->n_tokens;
}
sp_token sp_vocab_bos(const sp_vocab *v) {
    return v->bos;
}
sp_token sp_vocab_eos(const sp_vocab *v) {
    return v->eos;
}
sp_token sp_vocab_eot(const sp_vocab *v) {
    return v->eot;
}
sp_token sp_vocab_unk(const sp_vocab *v) {
    return v->unk;
}
sp_token sp_vocab_pad(const sp_vocab *v) {
    return v->pad;
}
bool sp_vocab_add_bos(const sp_vocab *v) {
    return v->add_bos;
}
bool sp_vocab_add_eos(const sp_vocab *v) {
    return v->add_eos;
}
bool sp_vocab_add_space_prefix(const sp_vocab *v) {
    return v->add_space_prefix;
}

bool sp_vocab_is_eog(const sp_vocab *v, sp_token id) {
    return valid(v, id) && (v->attr[id] & SP__ATTR_EOG);
}

bool sp_vocab_is_control(const sp_vocab *v, sp_token id) {
    return valid(v, id) && (v->attr[id] & SP_TOKEN_ATTR_CONTROL);
}

uint32_t sp_vocab_token_attr(const sp_vocab *v, sp_token id) {
    return valid(v, id) ? (v->attr[id] & ~SP__ATTR_EOG) : 0;
}

float sp_vocab_token_score(const sp_vocab *v, sp_token id) {
    return valid(v, id) ? v->scores[id] : 0.0f;
}

sp_str sp_vocab_token_text(const sp_vocab *v, sp_token id) {
    if (!valid(v, id))
        return (sp_str){NULL, 0};
    return (sp_str){tok_text(v, id), v->text_len[id]};
}

sp_token sp_vocab_find(const sp_vocab *v, const char *text, size_t len) {
    return sp__vocab_lookup(v, text, len);
}
