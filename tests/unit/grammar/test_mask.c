/* The allowed-token mask: for a vocabulary of random byte strings (every single byte, JSON's
 * punctuation, pieces of multi-byte characters, duplicates, an empty token), at every step of
 * random walks through the JSON grammar and others, sp_matcher_fill_mask allows exactly the
 * tokens that sp_matcher_allows accepts one by one, and leaves the matcher's state as it was. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "grammar/matcher.h"
#include "grammar/trie.h"

enum { N_RANDOM = 3000, MAX_LEN = 8 };

typedef struct vocab {
    uint8_t **bytes;
    uint32_t *len;
    int32_t n;
} vocab;

static vocab make_vocab(uint64_t *rs) {
    static const char *alphabet[] = {
        "{", "}", "[",   "]",    "\"",   ",",    ":",        " ",    "\n",
        "a", "b", "e",   "0",    "1",    "9",    "-",        ".",    "\\",
        "u", "t", "rue", "null", "\xc3", "\xa9", "\xe2\x82", "\xac", "\xf0\x9f\x98\x80"};
    const int n_alpha = (int)(sizeof alphabet / sizeof *alphabet);
    vocab v = {.n = 256 + N_RANDOM + 2};
    v.bytes = calloc((size_t)v.n, sizeof *v.bytes);
    v.len = calloc((size_t)v.n, sizeof *v.len);
    for (int32_t i = 0; i < v.n; i++) {
        v.bytes[i] = malloc(MAX_LEN * 4);
        if (i < 256) {
            v.bytes[i][0] = (uint8_t)i, v.len[i] = 1;
        } else if (i < v.n - 2) {
            const int parts = 1 + (int)(sp_test_rand(rs) % 3);
            for (int p = 0; p < parts; p++) {
                const char *a = alphabet[sp_test_rand(rs) % (uint64_t)n_alpha];
                memcpy(v.bytes[i] + v.len[i], a, strlen(a));
                v.len[i] += (uint32_t)strlen(a);
            }
        } else if (i == v.n - 2) { // a duplicate of an earlier token
            memcpy(v.bytes[i], v.bytes[300], v.len[300]), v.len[i] = v.len[300];
        } // the last: no bytes (a control token)
    }
    return v;
}

static void free_vocab(vocab *v) {
    for (int32_t i = 0; i < v->n; i++)
        free(v->bytes[i]);
    free(v->bytes);
    free(v->len);
}

/* Random walks through g: at each step the mask is checked against the tokens one by one,
 * then a random allowed token is taken; a walk ends when nothing is allowed or at random once
 * the input is a sentence. */
static void walk_and_check(sp_grammar *g, const vocab *v, const sp_token_trie *t, uint64_t *rs,
                           int walks, int max_steps) {
    const size_t words = ((size_t)v->n + 31) / 32;
    uint32_t *mask = malloc(words * sizeof *mask);
    int32_t *allowed = malloc((size_t)v->n * sizeof *allowed);
    sp_matcher *m;
    assert_int_equal(sp_matcher_create(g, &m), SP_OK);
    int steps_total = 0, max_allowed = 0;
    for (int w = 0; w < walks; w++) {
        sp_matcher_reset(m);
        for (int step = 0; step < max_steps; step++) {
            const uint32_t nodes = sp_matcher_n_nodes(m);
            int32_t count;
            assert_int_equal(sp_matcher_fill_mask(m, t, mask, &count), SP_OK);
            assert_int_equal(sp_matcher_n_nodes(m), nodes); // rolled back
            int32_t n_allowed = 0;
            for (int32_t i = 0; i < v->n; i++) {
                bool ok = false;
                if (v->len[i])
                    assert_int_equal(sp_matcher_allows(m, v->bytes[i], v->len[i], &ok), SP_OK);
                const bool in_mask = (mask[i >> 5] >> (i & 31)) & 1;
                if (ok != in_mask)
                    fail_msg("walk %d step %d: token %d (%u bytes) allowed %d, mask %d", w, step, i,
                             v->len[i], ok, in_mask);
                if (ok)
                    allowed[n_allowed++] = i;
            }
            assert_int_equal(count, n_allowed);
            steps_total++;
            if (n_allowed > max_allowed)
                max_allowed = n_allowed;
            if (n_allowed == 0 || (sp_matcher_complete(m) && sp_test_rand(rs) % 4 == 0))
                break;
            const int32_t tok = allowed[sp_test_rand(rs) % (uint64_t)n_allowed];
            bool ok;
            assert_int_equal(sp_matcher_accept(m, v->bytes[tok], v->len[tok], &ok), SP_OK);
            assert_true(ok);
        }
    }
    assert_true(steps_total > walks && max_allowed > 10);
    sp_matcher_destroy(m);
    free(mask);
    free(allowed);
}

static void test_mask_matches_tokens(void **st) {
    (void)st;
    uint64_t rs = 42;
    vocab v = make_vocab(&rs);
    sp_token_trie *t;
    assert_int_equal(sp_token_trie_create((const uint8_t *const *)v.bytes, v.len, v.n, &t), SP_OK);
    assert_int_equal(t->n_vocab, v.n);
    sp_grammar *g;
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_grammar_json_object(&g, &d), SP_OK);
    walk_and_check(g, &v, t, &rs, 12, 60);
    sp_grammar_release(g);
    const char *others[] = {
        "root ::= [^\"]* \"\\\"\" (\"ab\" | [0-9]{2,3})+ \"\xc3\xa9\"?\n",
        "root ::= (\"null\" | \"true\" \" \"? | [\\u00e0-\\u20ff] | \"\\\\u\" [0-9]{4})+\n",
        // Bounded runs: a subtree is taken whole only when what is left holds its deepest token.
        "root ::= \"\\\"\" [^\"\\\\]{0,5} \"\\\"\" ([a-e0-9 ]{1,3} \",\")* [a-z]{2,9}\n",
        "root ::= ([^\"]{3} | [0-9]{0,4} \"-\")+ \"\\\"\"\n",
    };
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        assert_int_equal(sp_grammar_from_gbnf(others[i], strlen(others[i]), &g, &d), SP_OK);
        walk_and_check(g, &v, t, &rs, 8, 40);
        sp_grammar_release(g);
    }
    sp_token_trie_destroy(t);
    free_vocab(&v);
}

/* The characters of s[n] if it is valid UTF-8 but for a last character cut short (which
 * counts), else -1. */
static int utf8_prefix_chars(const uint8_t *s, uint32_t n) {
    int chars = 0;
    for (uint32_t i = 0; i < n; chars++) {
        const uint8_t b = s[i++];
        uint32_t cp, more;
        if (b < 0x80)
            continue;
        else if ((b & 0xE0) == 0xC0)
            cp = b & 0x1F, more = 1;
        else if ((b & 0xF0) == 0xE0)
            cp = b & 0x0F, more = 2;
        else if ((b & 0xF8) == 0xF0)
            cp = b & 0x07, more = 3;
        else
            return -1;
        const uint32_t len = more + 1;
        uint32_t k = 0;
        for (; k < more && i < n; k++, i++) {
            if ((s[i] & 0xC0) != 0x80)
                return -1;
            cp = cp << 6 | (s[i] & 0x3F);
        }
        // A cut character: its first bytes must begin some valid character.
        const uint32_t shift = 6 * (more - k);
        const uint32_t lo = cp << shift, hi = lo | ((1u << shift) - 1);
        static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (hi < least[len] || lo > 0x10FFFF || (lo >= 0xD800 && hi <= 0xDFFF))
            return -1;
    }
    return chars;
}

/* The trie holds every token with bytes once, under the path of its bytes; its subtrees are
 * contiguous ranges of nodes, with the bytes below them and how many characters of text. */
static void test_trie(void **st) {
    (void)st;
    uint64_t rs = 7;
    vocab v = make_vocab(&rs);
    sp_token_trie *t;
    assert_int_equal(sp_token_trie_create((const uint8_t *const *)v.bytes, v.len, v.n, &t), SP_OK);
    int32_t *seen = calloc((size_t)v.n, sizeof *seen);
    for (uint32_t i = 0; i < t->tok_start[t->n_nodes]; i++)
        seen[t->toks[i]]++;
    for (int32_t i = 0; i < v.n; i++)
        assert_int_equal(seen[i], v.len[i] > 0);
    for (int32_t i = 0; i < v.n; i++) { // follow each token's bytes from the root
        if (!v.len[i])
            continue;
        uint32_t node = 0;
        for (uint32_t k = 0; k < v.len[i]; k++) {
            uint32_t e = t->edge_start[node];
            while (e < t->edge_start[node + 1] && t->edge_byte[e] != v.bytes[i][k])
                e++;
            assert_true(e < t->edge_start[node + 1]);
            node = t->edge_node[e];
        }
        bool found = false;
        for (uint32_t j = t->tok_start[node]; j < t->tok_start[node + 1]; j++)
            found |= t->toks[j] == i;
        assert_true(found);
    }
    // Each node's subtree: the nodes [i, sub_end[i]), the bytes of their edges, their tokens.
    uint32_t *stack = malloc(t->n_nodes * sizeof *stack);
    uint32_t *depth = calloc(t->n_nodes, sizeof *depth);
    for (uint32_t i = 0; i < t->n_nodes; i++)
        for (uint32_t e = t->edge_start[i]; e < t->edge_start[i + 1]; e++)
            depth[t->edge_node[e]] = depth[i] + 1;
    int n_text = 0, n_not_text = 0;
    for (uint32_t i = 0; i < t->n_nodes; i += 1 + i % 7) {
        uint64_t bytes[4] = {0};
        uint32_t end = i + 1, n = 0;
        stack[n++] = i;
        while (n) {
            const uint32_t x = stack[--n];
            for (uint32_t e = t->edge_start[x]; e < t->edge_start[x + 1]; e++) {
                bytes[t->edge_byte[e] >> 6] |= 1ull << (t->edge_byte[e] & 63);
                assert_true(t->edge_node[e] > i && t->edge_node[e] < t->sub_end[i]);
                end = t->edge_node[e] + 1 > end ? t->edge_node[e] + 1 : end;
                stack[n++] = t->edge_node[e];
            }
        }
        assert_true(end <= t->sub_end[i]);
        assert_memory_equal(bytes, t->sub_bytes[i], sizeof bytes);
        int chars = 0; // the most over its tokens, read from this node on
        for (uint32_t j = t->tok_start[i]; j < t->tok_start[t->sub_end[i]] && chars >= 0; j++) {
            const int32_t tok = t->toks[j];
            const int c = utf8_prefix_chars(v.bytes[tok] + depth[i], v.len[tok] - depth[i]);
            chars = c < 0 ? -1 : c > chars ? c : chars;
        }
        assert_int_equal(t->sub_chars[i], chars < 0 ? SP_TRIE_NOT_TEXT : chars);
        n_text += chars > 0;
        n_not_text += chars < 0;
    }
    assert_true(n_text > 100 && n_not_text > 100);
    free(depth);
    free(stack);
    free(seen);
    sp_token_trie_destroy(t);
    free_vocab(&v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trie),
        cmocka_unit_test(test_mask_matches_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
