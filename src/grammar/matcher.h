/* The grammar matcher: where a request's output stands in its grammar, advanced byte by byte
 * as tokens are accepted, and the set of tokens it allows next.
 *
 * A pushdown recognizer over the byte grammar (grammar.h) that follows every parse at once:
 * its state is a set of stacks, each a path of positions in the grammar's elements (the
 * innermost rule's next element on top, the callers' continuations below), every top a byte
 * class. A byte keeps the stacks whose top class holds it, each advanced past it and then
 * expanded (rule references pushed, finished rules popped) until its top is a byte class again.
 * Stacks are hash-consed nodes (position, parent node) in a pool, so that parses sharing a
 * suffix share it, a set of stacks is a set of node ids, and duplicate parses merge. A
 * reference that ends its alternative is a tail call (the continuation is the caller's own):
 * repetitions run in constant stack depth.
 *
 * The allowed tokens (sp_matcher_fill_mask) are found by walking the token trie from the
 * current state, pruning at the first byte no stack takes, and taking at once a subtree of text
 * whose every character the grammar takes alike (inside a string, most of the vocabulary); the
 * nodes that walk creates are rolled back after it. Not thread-safe: one matcher per request, used by one thread. */
#ifndef SP_GRAMMAR_MATCHER_H
#define SP_GRAMMAR_MATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "grammar/grammar.h"
#include "grammar/trie.h"

/* Bounds on the work of one matcher: an ambiguous grammar can make the parses in flight grow
 * exponentially with the input (root ::= "a" root "b" | "a" root |), and a hostile one would
 * exhaust memory; beyond these, calls fail with SP_ERR_LIMIT. */
enum {
    SP_MATCHER_MAX_STACKS = 1 << 14, // parses in flight at one byte
    SP_MATCHER_MAX_NODES = 1 << 22,  // stack nodes in the pool
};

typedef struct sp_matcher sp_matcher;

/* A matcher at the start of g (it takes a reference to g). SP_ERR_NOMEM. */
SP_MUST_USE sp_err sp_matcher_create(sp_grammar *g, sp_matcher **out);
void sp_matcher_destroy(sp_matcher *m);

/* Back to the start of the grammar. */
void sp_matcher_reset(sp_matcher *m);

/* Whether bytes[n] can follow the input so far (a prefix of a sentence, or a sentence, after
 * them); the state is unchanged. SP_ERR_NOMEM, SP_ERR_LIMIT. */
SP_MUST_USE sp_err sp_matcher_allows(sp_matcher *m, const uint8_t *bytes, size_t n, bool *ok);

/* Appends bytes[n] to the input if they can follow it (*ok true); otherwise *ok is false and
 * the state is unchanged. SP_ERR_NOMEM, SP_ERR_LIMIT (the state unchanged). */
SP_MUST_USE sp_err sp_matcher_accept(sp_matcher *m, const uint8_t *bytes, size_t n, bool *ok);

/* Whether the input so far is a sentence of the grammar (it may end here). */
bool sp_matcher_complete(const sp_matcher *m);

/* Whether some byte can follow the input so far. */
bool sp_matcher_can_continue(const sp_matcher *m);

/* The tokens of t that can follow the input so far: bit i of allowed[i / 32] set for each
 * (t->n_vocab bits; tokens without bytes are never set, the caller decides about end of
 * generation from sp_matcher_complete). Returns the count. The state is unchanged. On
 * SP_ERR_NOMEM or SP_ERR_LIMIT *count is not written and the mask is incomplete. */
SP_MUST_USE sp_err sp_matcher_fill_mask(sp_matcher *m, const sp_token_trie *t, uint32_t *allowed,
                                        int32_t *count);

/* A hash of the state: the content of its stacks (their grammar positions, not the pool's node
 * ids) and whether the input is complete. Two matchers of grammars with the same compiled
 * elements that are in the same state have the same hash, so the allowed tokens of a state
 * can be cached across requests; different states collide with probability about 2^-64 (a
 * cache must still check each token it takes from a cached mask). */
uint64_t sp_matcher_state_hash(const sp_matcher *m);

/* The grammar the matcher follows. */
const sp_grammar *sp_matcher_grammar(const sp_matcher *m);

/* Pool nodes in use (a measure of the state's memory, for tests). */
uint32_t sp_matcher_n_nodes(const sp_matcher *m);

#endif
