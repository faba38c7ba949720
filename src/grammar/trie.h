/* A trie of a vocabulary's token byte strings, for computing which tokens a grammar allows
 * (sp_matcher_fill_mask): tokens sharing a prefix share the work of matching it, and a prefix
 * the grammar rejects prunes every token under it. Immutable once built; thread-safe to read. */
#ifndef SP_GRAMMAR_TRIE_H
#define SP_GRAMMAR_TRIE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

enum { SP_TRIE_NOT_TEXT = 255 };

typedef struct sp_token_trie {
    uint32_t n_nodes;     // node 0 is the root (the empty string)
    uint32_t *edge_start; // (n_nodes + 1) node i's children: edges [edge_start[i],
                          // edge_start[i + 1]), in byte order
    uint8_t *edge_byte;   // (n_edges)
    uint32_t *edge_node;  // (n_edges)
    uint32_t *tok_start;  // (n_nodes + 1) the tokens spelled by node i: toks[tok_start[i] ..
                          // tok_start[i + 1])
    int32_t *toks;        // (tokens with bytes)
    // Nodes are numbered depth first, so node i's subtree is the nodes [i, sub_end[i]) and its
    // tokens toks[tok_start[i] .. tok_start[sub_end[i]]).
    uint32_t *sub_end;        // (n_nodes)
    uint64_t (*sub_bytes)[4]; // (n_nodes) the bytes on the edges below node i (a 256-bit set)
    // Node i's subtree as text: read from node i on, a fresh start, are its paths (prefixes of)
    // valid UTF-8? Then sub_chars[i] is the most characters on a path (a last one begun counts),
    // else SP_TRIE_NOT_TEXT (also when a path has more than 254).
    uint8_t *sub_chars; // (n_nodes)
    int32_t n_vocab;    // token ids are below this
    uint32_t max_depth; // the longest token's bytes
} sp_token_trie;

/* Builds the trie of tokens 0 .. n_vocab - 1, token i spelled by bytes[i][len[i]] (borrowed;
 * copied into the trie's structure); tokens with no bytes are left out (a grammar never allows
 * them through the trie). SP_ERR_NOMEM; *out only on success. */
SP_MUST_USE sp_err sp_token_trie_create(const uint8_t *const *bytes, const uint32_t *len,
                                        int32_t n_vocab, sp_token_trie **out);

void sp_token_trie_destroy(sp_token_trie *t);

#endif
