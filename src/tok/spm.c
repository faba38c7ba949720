/* SentencePiece-style tokenization as llama.cpp's llm_tokenizer_spm: start from UTF-8
 * characters, repeatedly merge the adjacent pair whose concatenation is a token with the highest
 * score (leftmost first on ties), then emit each piece, falling back to byte tokens (or, where
 * the vocabulary has none, to the unknown token) for characters that are not tokens.
 *
 * O(n log n) in the text length: a binary heap of candidate pairs, with stale entries skipped
 * when popped. */
#include <stdlib.h>

#include "tok/tok_impl.h"

typedef struct sym {
    int32_t prev, next; // neighbours in the chain of live symbols, -1 at the ends
    uint32_t off, n;    // bytes text[off, off + n); n == 0 once merged into the left neighbour
} sym;

typedef struct bigram {
    float score;
    int32_t left, right;
    uint32_t size; // bytes of both symbols when queued; a mismatch later means it is stale
} bigram;

/* true if a is popped before b: higher score, then smaller left index */
static bool before(const bigram *a, const bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct heap {
    bigram *a;
    size_t n, cap;
} heap;

static void heap_push(heap *h, bigram b) {
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&b, &h->a[p]))
            break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = b;
}

static bigram heap_pop(heap *h) {
    bigram top = h->a[0];
    bigram last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const bigram *best = &last;
        if (l < h->n && before(&h->a[l], best)) {
            m = l;
            best = &h->a[l];
        }
        if (r < h->n && before(&h->a[r], best))
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

static void try_add(const sp_vocab *v, const char *text, const sym *s, heap *h, int32_t l,
                    int32_t r) {
    if (l < 0 || r < 0)
        return;
    uint32_t size = s[l].n + s[r].n; // s[r] follows s[l] in the text
    sp_token t = sp__vocab_lookup(v, text + s[l].off, size);
    if (t == SP_TOKEN_NULL)
        return;
    heap_push(h, (bigram){v->scores[t], l, r, size});
}

sp_err sp__spm_encode(const sp_vocab *v, const char *text, size_t len, sp_tokens *out) {
    if (len == 0)
        return SP_OK;
    if (len > INT32_MAX)
        return SP_ERR_NOMEM;
    sp_err e = SP_OK;
    // each merge queues at most two pairs: (n - 1) initial + 2 (n - 1) later
    sym *s = malloc(len * sizeof *s);
    heap h = {malloc(len * 3 * sizeof(bigram)), 0, len * 3};
    if (!s || !h.a) {
        e = SP_ERR_NOMEM;
        goto done;
    }

    int32_t n_sym = 0;
    for (size_t off = 0; off < len;) {
        size_t n = sp__utf8_len((unsigned char)text[off]);
        if (n > len - off)
            n = len - off;
        s[n_sym] = (sym){n_sym - 1, off + n == len ? -1 : n_sym + 1, (uint32_t)off, (uint32_t)n};
        n_sym++;
        off += n;
    }
    for (int32_t i = 1; i < n_sym; i++)
        try_add(v, text, s, &h, i - 1, i);

    while (h.n) {
        bigram b = heap_pop(&h);
        sym *l = &s[b.left], *r = &s[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = b.left;
        try_add(v, text, s, &h, l->prev, b.left);
        try_add(v, text, s, &h, b.left, l->next);
    }

    bool unk_run = false; // the last token emitted is an unknown standing for a character
    for (int32_t i = 0; i != -1; i = s[i].next) {
        const char *p = text + s[i].off;
        sp_token t = sp__vocab_lookup(v, p, s[i].n);
        if (t != SP_TOKEN_NULL) {
            if ((e = sp_tokens_push(out, t)))
                goto done;
            unk_run = false;
            continue;
        }
        // Not a token: only single characters get here (every merge forms a token).
        bool bytes_ok = true;
        for (uint32_t k = 0; k < s[i].n; k++)
            bytes_ok &= v->byte_tok[(unsigned char)p[k]] != SP_TOKEN_NULL;
        if (bytes_ok) {
            for (uint32_t k = 0; k < s[i].n; k++)
                if ((e = sp_tokens_push(out, v->byte_tok[(unsigned char)p[k]])))
                    goto done;
            unk_run = false;
        } else if (v->unk != SP_TOKEN_NULL && !unk_run) {
            // llama.cpp throws here; Hugging Face (fuse_unk) emits one <unk> per run
            if ((e = sp_tokens_push(out, v->unk)))
                goto done;
            unk_run = true;
        }
    }
done:
    free(h.a);
    free(s);
    return e;
}
