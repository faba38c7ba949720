/* The token trie (trie.h): the tokens sorted by their bytes, then nodes numbered depth first,
 * each node's edges contiguous. */
#include "grammar/trie.h"

#include "base/util.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    const uint8_t *bytes;
    uint32_t len;
    int32_t id;
} entry;

typedef struct builder {
    const entry *tok; // the tokens with bytes, sorted by them
    sp_token_trie *t;
    uint32_t n_edges, n_toks;
    uint32_t cap_es, cap_ts, cap_eb, cap_en; // capacities of edge_start, tok_start, edge_*
    bool nomem;
} builder;

static int cmp_entries(const void *a, const void *b) {
    const entry *x = a, *y = b;
    const uint32_t n = x->len < y->len ? x->len : y->len;
    const int c = memcmp(x->bytes, y->bytes, n);
    if (c)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static bool reserve(void **p, uint32_t *cap, uint32_t need, size_t size) {
    return sp_grow(p, cap, need, size, 1024);
}

/* The node for the sorted tokens [lo, hi), which share their first `depth` bytes; its id. */
static uint32_t build(builder *b, uint32_t lo, uint32_t hi, uint32_t depth) {
    sp_token_trie *t = b->t;
    if (!reserve((void **)&t->edge_start, &b->cap_es, t->n_nodes + 2, sizeof(uint32_t)) ||
        !reserve((void **)&t->tok_start, &b->cap_ts, t->n_nodes + 2, sizeof(uint32_t))) {
        b->nomem = true;
        return 0;
    }
    const uint32_t id = t->n_nodes++;
    if (depth > t->max_depth)
        t->max_depth = depth;
    // The tokens that end here come first.
    t->tok_start[id] = b->n_toks;
    while (lo < hi && b->tok[lo].len == depth)
        t->toks[b->n_toks++] = b->tok[lo++].id;
    // One edge per distinct next byte, reserved together, then each child built.
    uint32_t n_children = 0;
    for (uint32_t i = lo; i < hi;) {
        const uint8_t c = b->tok[i].bytes[depth];
        while (i < hi && b->tok[i].bytes[depth] == c)
            i++;
        n_children++;
    }
    if (!reserve((void **)&t->edge_byte, &b->cap_eb, b->n_edges + n_children, 1) ||
        !reserve((void **)&t->edge_node, &b->cap_en, b->n_edges + n_children, sizeof(uint32_t))) {
        b->nomem = true;
        return 0;
    }
    uint32_t e = b->n_edges;
    b->n_edges += n_children;
    t->edge_start[id] = e;
    for (uint32_t i = lo; i < hi && !b->nomem;) {
        const uint8_t c = b->tok[i].bytes[depth];
        uint32_t j = i;
        while (j < hi && b->tok[j].bytes[depth] == c)
            j++;
        t->edge_byte[e] = c;
        const uint32_t child = build(b, i, j, depth + 1);
        t->edge_node[e++] = child;
        i = j;
    }
    return id;
}

/* The most characters after the one whose last r bytes start at node d (the next in
 * [lo, hi], then continuation bytes): 0 where a path ends inside it; SP_TRIE_NOT_TEXT if a path
 * is not valid UTF-8. Nodes below d are done (sub_chars). */
static unsigned rest_of_char(const sp_token_trie *t, uint32_t d, int r, unsigned lo, unsigned hi) {
    unsigned most = 0;
    for (uint32_t e = t->edge_start[d]; e < t->edge_start[d + 1]; e++) {
        const unsigned b = t->edge_byte[e], c = t->edge_node[e];
        if (b < lo || b > hi)
            return SP_TRIE_NOT_TEXT;
        const unsigned n = r == 1 ? t->sub_chars[c] : rest_of_char(t, c, r - 1, 0x80, 0xBF);
        if (n == SP_TRIE_NOT_TEXT)
            return n;
        most = n > most ? n : most;
    }
    return most;
}

/* sub_chars of node i, those of the nodes below it done. */
static uint8_t text_chars(const sp_token_trie *t, uint32_t i) {
    unsigned most = 0;
    for (uint32_t e = t->edge_start[i]; e < t->edge_start[i + 1]; e++) {
        const unsigned b = t->edge_byte[e], c = t->edge_node[e];
        unsigned n;
        if (b < 0x80)
            n = t->sub_chars[c];
        else if (b >= 0xC2 && b <= 0xDF)
            n = rest_of_char(t, c, 1, 0x80, 0xBF);
        else if (b >= 0xE0 && b <= 0xEF) // no overlong forms, no surrogates
            n = rest_of_char(t, c, 2, b == 0xE0 ? 0xA0 : 0x80, b == 0xED ? 0x9F : 0xBF);
        else if (b >= 0xF0 && b <= 0xF4) // nothing above U+10FFFF
            n = rest_of_char(t, c, 3, b == 0xF0 ? 0x90 : 0x80, b == 0xF4 ? 0x8F : 0xBF);
        else
            return SP_TRIE_NOT_TEXT;
        if (n >= SP_TRIE_NOT_TEXT - 1)
            return SP_TRIE_NOT_TEXT;
        most = n + 1 > most ? n + 1 : most;
    }
    return (uint8_t)most;
}

sp_err sp_token_trie_create(const uint8_t *const *bytes, const uint32_t *len, int32_t n_vocab,
                            sp_token_trie **out) {
    sp_token_trie *t = calloc(1, sizeof *t);
    entry *tok = malloc((size_t)(n_vocab > 0 ? n_vocab : 1) * sizeof *tok);
    if (!t || !tok) {
        free(t);
        free(tok);
        return SP_ERR_NOMEM;
    }
    uint32_t n = 0;
    for (int32_t i = 0; i < n_vocab; i++)
        if (len[i] > 0)
            tok[n++] = (entry){bytes[i], len[i], i};
    qsort(tok, n, sizeof *tok, cmp_entries);
    t->toks = malloc((size_t)(n ? n : 1) * sizeof *t->toks);
    t->n_vocab = n_vocab;
    builder b = {.tok = tok, .t = t, .nomem = !t->toks};
    if (!b.nomem)
        (void)build(&b, 0, n, 0);
    free(tok);
    if (b.nomem) {
        sp_token_trie_destroy(t);
        return SP_ERR_NOMEM;
    }
    // Each node's edges and tokens were written when it was entered, before its children's:
    // the end of the last node closes both arrays.
    t->edge_start[t->n_nodes] = b.n_edges;
    t->tok_start[t->n_nodes] = b.n_toks;
    // Subtrees, children first (a child's number is above its parent's).
    t->sub_end = malloc((size_t)t->n_nodes * sizeof *t->sub_end);
    t->sub_bytes = calloc(t->n_nodes, sizeof *t->sub_bytes);
    t->sub_chars = calloc(t->n_nodes, sizeof *t->sub_chars);
    if (!t->sub_end || !t->sub_bytes || !t->sub_chars) {
        sp_token_trie_destroy(t);
        return SP_ERR_NOMEM;
    }
    for (uint32_t i = t->n_nodes; i-- > 0;) {
        t->sub_end[i] = i + 1;
        for (uint32_t e = t->edge_start[i]; e < t->edge_start[i + 1]; e++) {
            const uint32_t c = t->edge_node[e];
            const uint8_t by = t->edge_byte[e];
            t->sub_bytes[i][by >> 6] |= 1ull << (by & 63);
            for (int k = 0; k < 4; k++)
                t->sub_bytes[i][k] |= t->sub_bytes[c][k];
            if (t->sub_end[c] > t->sub_end[i])
                t->sub_end[i] = t->sub_end[c];
        }
        t->sub_chars[i] = text_chars(t, i);
    }
    *out = t;
    return SP_OK;
}

void sp_token_trie_destroy(sp_token_trie *t) {
    if (!t)
        return;
    free(t->edge_start);
    free(t->edge_byte);
    free(t->edge_node);
    free(t->tok_start);
    free(t->toks);
    free(t->sub_end);
    free(t->sub_bytes);
    free(t->sub_chars);
    free(t);
}
