/* Byte-level BPE ("gpt2" vocabularies) as llama.cpp's llm_tokenizer_bpe: a regex pre-tokenizer
 * chosen by tokenizer.ggml.pre splits the text into words; each word's bytes are mapped to
 * GPT-2's printable code points; adjacent symbols are merged by merge rank (lowest first,
 * leftmost on ties) until no listed pair remains.
 *
 * The split regexes are llama.cpp's, run with PCRE2 (UTF + UCP) on the UTF-8 text. llama.cpp
 * runs them with hand-written code (GPT-2 and Llama-3 patterns) or std::regex over text in which
 * every non-ASCII code point is collapsed to its category; in both, `\s` means the Unicode
 * White_Space set. PCRE2's `\s` is slightly different (no U+0085), so `\s` and `\S` are rewritten
 * to that set before compiling. The regexes are applied in sequence, each splitting the pieces
 * left by the previous one; text between matches stays a piece of its own. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "tok/tok_impl.h"

/* ---- the patterns ------------------------------------------------------------------------- */

#define GPT2_RE "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define LLAMA3_RE                                                                                  \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"     \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_RE                                                                                   \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"     \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* DeepSeek LLM: cased letters (Unicode LC), spelled as code points. */
#define DEEPSEEK_LETTERS                                                                           \
    "A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"                 \
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}"         \
    "\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}"                  \
    "\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}"                       \
    "\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"                 \
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}"                 \
    "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}"        \
    "\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}"         \
    "\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}"                 \
    "\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}"                  \
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}"                   \
    "\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}"        \
    "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}"         \
    "\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}"                  \
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}"                 \
    "\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"               \
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}"         \
    "\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}"
/* CJK ideographs, U+0800..U+4E00 and Hangul, as DeepSeek's tokenizers list them. */
#define DEEPSEEK_CJK "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"

typedef struct pre_def {
    const char *const *names;   // tokenizer.ggml.pre values
    const char *const *regexes; // applied in order; NULL-terminated
    bool clean_spaces, ignore_merges, add_bos;
} pre_def;

#define LIST(...) ((const char *const[]){__VA_ARGS__, NULL})

static const pre_def pre_defs[] = {
    {LIST("default"), LIST("[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_RE, "\\p{N}+", "[0-9][0-9][0-9]"),
     true, false, false},
    {LIST("gpt-2", "phi-2", "jina-es", "jina-de", "mpt", "olmo", "jais"), LIST(GPT2_RE), true,
     false, false},
    {LIST("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"), LIST(LLAMA3_RE), true, true,
     true},
    {LIST("dbrx", "smaug-bpe"), LIST(LLAMA3_RE), true, false, false},
    {LIST("qwen2", "deepseek-r1-qwen"), LIST(QWEN2_RE), false, false, false},
    {LIST("stablelm2", "megrez"), LIST(QWEN2_RE), true, false, false},
    {LIST("deepseek-llm"),
     LIST("[\\r\\n]", "\\s?[" DEEPSEEK_LETTERS "]+",
          "\\s?[!-/"
          ":-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
          "\\s+$", DEEPSEEK_CJK, "\\p{N}+"),
     false, false, false},
    {LIST("deepseek-coder"), LIST("[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", DEEPSEEK_CJK, "\\p{N}"),
     false, false, false},
    {LIST("falcon"), LIST("[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_RE, "[0-9][0-9][0-9]"), true, false,
     false},
    {LIST("starcoder", "refact", "codeshell", "exaone"), LIST("\\p{N}", GPT2_RE), true, false,
     false},
    {LIST("command-r", "smollm"), LIST("\\p{N}", GPT2_RE), false, false, false},
};

static const pre_def gpt2_fallback = {NULL, LIST(GPT2_RE), true, false, false};

#define MAX_RE 8

struct sp__pretok {
    pcre2_code *re[MAX_RE];
    uint32_t n_re;
};

/* Unicode White_Space, the set llama.cpp's \s stands for. */
#define WS                                                                                         \
    "\\t-\\r "                                                                                     \
    "\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* Rewrites \s and \S; returns a heap string. */
static char *rewrite_ws(const char *re) {
    size_t n = strlen(re), cap = n * sizeof(WS) + 8, k = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    bool in_class = false;
    for (size_t i = 0; i < n; i++) {
        if (re[i] == '\\' && i + 1 < n) {
            const char *add = NULL;
            if (re[i + 1] == 's')
                add = in_class ? WS : "[" WS "]";
            else if (re[i + 1] == 'S' && !in_class)
                add = "[^" WS "]";
            if (add) {
                memcpy(out + k, add, strlen(add));
                k += strlen(add);
            } else {
                out[k++] = re[i];
                out[k++] = re[i + 1];
            }
            i++;
            continue;
        }
        if (re[i] == '[' && !in_class)
            in_class = true;
        else if (re[i] == ']' && in_class)
            in_class = false;
        out[k++] = re[i];
    }
    out[k] = '\0';
    return out;
}

void sp__pretok_destroy(sp__pretok *p) {
    if (!p)
        return;
    for (uint32_t i = 0; i < p->n_re; i++)
        pcre2_code_free(p->re[i]);
    free(p);
}

sp_err sp__pretok_create(const char *pre, size_t pre_len, sp__pretok **out, sp__pre_flags *flags,
                         sp_diag *diag) {
    const pre_def *def = NULL;
    sp_str name = {pre, pre_len};
    if (pre_len == 0) {
        SP_WARN("tokenizer: missing pre-tokenizer type, using 'default'");
        def = &pre_defs[0];
    }
    for (size_t i = 0; !def && i < sizeof pre_defs / sizeof pre_defs[0]; i++)
        for (const char *const *n = pre_defs[i].names; !def && *n; n++)
            if (strlen(*n) == name.len && memcmp(*n, name.ptr, name.len) == 0)
                def = &pre_defs[i];
    if (!def) {
        SP_WARN("tokenizer: unknown pre-tokenizer type '%.*s', using GPT-2's",
                (int)SP_MIN(pre_len, 64), pre);
        def = &gpt2_fallback;
    }
    sp__pretok *p = calloc(1, sizeof *p);
    if (!p)
        return SP_ERR_NOMEM;
    for (const char *const *r = def->regexes; *r; r++) {
        SP_ASSERT(p->n_re < MAX_RE);
        char *src = rewrite_ws(*r);
        if (!src) {
            sp__pretok_destroy(p);
            return SP_ERR_NOMEM;
        }
        int code;
        PCRE2_SIZE at;
        p->re[p->n_re] =
            pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &code, &at, NULL);
        free(src);
        if (!p->re[p->n_re]) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(code, msg, sizeof msg);
            sp__pretok_destroy(p);
            return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX,
                               "pre-tokenizer regex %s: %s at %zu", *r, (const char *)msg,
                               (size_t)at);
        }
        pcre2_jit_compile(p->re[p->n_re], PCRE2_JIT_COMPLETE); // optional: falls back if absent
        p->n_re++;
    }
    flags->clean_spaces = def->clean_spaces;
    flags->ignore_merges = def->ignore_merges;
    flags->add_bos = def->add_bos;
    *out = p;
    return SP_OK;
}

/* ---- splitting ---------------------------------------------------------------------------- */

void sp__spans_deinit(sp__spans *s) {
    free(s->off);
    free(s->len);
    memset(s, 0, sizeof *s);
}

static sp_err spans_push(sp__spans *s, size_t off, size_t len) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        uint32_t *o = realloc(s->off, cap * sizeof *o);
        if (!o)
            return SP_ERR_NOMEM;
        s->off = o;
        uint32_t *l = realloc(s->len, cap * sizeof *l);
        if (!l)
            return SP_ERR_NOMEM;
        s->len = l;
        s->cap = cap;
    }
    s->off[s->n] = (uint32_t)off;
    s->len[s->n] = (uint32_t)len;
    s->n++;
    return SP_OK;
}

/* Splits each piece of `in` with one regex into `out`: matches and the gaps between them. The
 * piece is the whole subject, so lookaheads and $ see its end, as with llama.cpp's
 * std::regex_iterator over the piece. */
static sp_err split_one(const pcre2_code *re, pcre2_match_data *md, const char *text,
                        const sp__spans *in, sp__spans *out) {
    out->n = 0;
    sp_err e;
    for (size_t i = 0; i < in->n; i++) {
        PCRE2_SPTR subj = (PCRE2_SPTR)(text + in->off[i]);
        size_t n = in->len[i], pos = 0, done = 0;
        while (pos <= n) {
            int rc = pcre2_match(re, subj, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc == PCRE2_ERROR_JIT_STACKLIMIT) // the interpreter keeps its frames on the heap
                rc = pcre2_match(re, subj, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc < 0)
                return rc == PCRE2_ERROR_NOMEMORY ? SP_ERR_NOMEM : SP_ERR_LIMIT;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { // an empty match is no piece; step one character on
                if (ms >= n)
                    break;
                pos = ms + sp__utf8_len(subj[ms]);
                continue;
            }
            if (ms > done && (e = spans_push(out, in->off[i] + done, ms - done)))
                return e;
            if ((e = spans_push(out, in->off[i] + ms, me - ms)))
                return e;
            done = pos = me;
        }
        if (done < n && (e = spans_push(out, in->off[i] + done, n - done)))
            return e;
    }
    return SP_OK;
}

sp_err sp__pretok_split(const sp__pretok *p, const char *text, size_t len, sp__spans *spans) {
    sp__spans tmp = {0};
    spans->n = 0;
    if (len == 0)
        return SP_OK;
    if (len >= UINT32_MAX)
        return SP_ERR_LIMIT;
    sp_err e = spans_push(spans, 0, len);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md)
        e = SP_ERR_NOMEM;
    for (uint32_t r = 0; !e && r < p->n_re; r++) {
        e = split_one(p->re[r], md, text, spans, &tmp);
        if (!e) {
            sp__spans t = *spans;
            *spans = tmp;
            tmp = t;
        }
    }
    pcre2_match_data_free(md);
    sp__spans_deinit(&tmp);
    return e;
}

/* ---- merging ------------------------------------------------------------------------------ */

typedef struct sym {
    int32_t prev, next;
    uint32_t off, n;
} sym;

/* Pending merge: key = rank << 32 | left (smallest first), as llama.cpp's comparator. */
typedef struct cand {
    uint64_t key;
    int32_t right;
    uint32_t size;
} cand;

typedef struct heap {
    cand *a;
    size_t n;
} heap;

static void heap_push(heap *h, cand c) {
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->a[p].key <= c.key)
            break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = c;
}

static cand heap_pop(heap *h) {
    cand top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t best = last.key;
        if (l < h->n && h->a[l].key < best) {
            m = l;
            best = h->a[l].key;
        }
        if (r < h->n && h->a[r].key < best)
            m = r;
        if (m == i)
            break;
        h->a[i] = h->a[m];
        i = m;
    }
    if (h->n)
        h->a[i] = last;
    return top;
}

static void try_add(const sp_vocab *v, const char *w, const sym *s, heap *h, int32_t l, int32_t r) {
    if (l < 0 || r < 0)
        return;
    int32_t rank = sp__vocab_merge_rank(v, w + s[l].off, s[l].n + s[r].n, s[l].n);
    if (rank < 0)
        return;
    heap_push(h, (cand){((uint64_t)(uint32_t)rank << 32) | (uint32_t)l, r, s[l].n + s[r].n});
}

typedef struct scratch {
    char *word; // [2 * max word bytes] the byte-level encoded word
    sym *s;     // [max word chars]
    heap h;     // [3 * max word chars]
} scratch;

/* One pre-tokenized word: bytes -> GPT-2 code points, merges, ids. */
static sp_err encode_word(const sp_vocab *v, const char *src, size_t len, scratch *sc,
                          sp_tokens *out) {
    char *w = sc->word;
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += sp__utf8_encode(sp__gpt2_byte_to_cp((uint8_t)src[i]), w + n);
    if (v->ignore_merges) {
        sp_token t = sp__vocab_lookup(v, w, n);
        if (t != SP_TOKEN_NULL)
            return sp_tokens_push(out, t);
    }
    sym *s = sc->s;
    int32_t n_sym = 0;
    for (size_t off = 0; off < n;) {
        size_t k = sp__utf8_len((unsigned char)w[off]);
        s[n_sym] = (sym){n_sym - 1, off + k == n ? -1 : n_sym + 1, (uint32_t)off, (uint32_t)k};
        n_sym++;
        off += k;
    }
    sc->h.n = 0;
    for (int32_t i = 1; i < n_sym; i++)
        try_add(v, w, s, &sc->h, i - 1, i);
    while (sc->h.n) {
        cand c = heap_pop(&sc->h);
        int32_t li = (int32_t)(uint32_t)c.key;
        sym *l = &s[li], *r = &s[c.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != c.size)
            continue; // stale
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = li;
        try_add(v, w, s, &sc->h, l->prev, li);
        try_add(v, w, s, &sc->h, li, l->next);
    }
    sp_err e;
    for (int32_t i = 0; i != -1 && n_sym > 0; i = s[i].next) {
        sp_token t = sp__vocab_lookup(v, w + s[i].off, s[i].n);
        if (t != SP_TOKEN_NULL) {
            if ((e = sp_tokens_push(out, t)))
                return e;
            continue;
        }
        // llama.cpp looks each byte up as a one-byte token and drops the ones it cannot find
        for (uint32_t k = 0; k < s[i].n; k++) {
            t = sp__vocab_lookup(v, w + s[i].off + k, 1);
            if (t != SP_TOKEN_NULL && (e = sp_tokens_push(out, t)))
                return e;
        }
    }
    return SP_OK;
}

sp_err sp__bpe_encode(const sp_vocab *v, const char *text, size_t len, sp_tokens *out) {
    sp__spans spans = {0};
    scratch sc = {0};
    sp_err e = sp__pretok_split(v->pretok, text, len, &spans);
    if (e)
        goto done;
    size_t max = 0;
    for (size_t i = 0; i < spans.n; i++)
        max = spans.len[i] > max ? spans.len[i] : max;
    // a word of n bytes: at most 2n encoded bytes, n symbols, (n - 1) + 2 (n - 1) candidates
    sc.word = malloc(2 * max + 1);
    sc.s = malloc((max + 1) * sizeof *sc.s);
    sc.h.a = malloc((3 * max + 1) * sizeof *sc.h.a);
    if (!sc.word || !sc.s || !sc.h.a) {
        e = SP_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < spans.n && !e; i++)
        e = encode_word(v, text + spans.off[i], spans.len[i], &sc, out);
done:
    free(sc.h.a);
    free(sc.s);
    free(sc.word);
    sp__spans_deinit(&spans);
    return e;
}
