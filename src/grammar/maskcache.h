/* A cache of allowed-token masks by grammar state. Generation under a grammar revisits the same
 * states again and again (every character inside a JSON string leaves the matcher where it was;
 * every record of a list repeats its fields' states), in one request and across requests of the
 * same grammar, so the mask of a state is computed once and then copied. Keyed by the grammar's
 * hash and the matcher's state hash (sp_matcher_state_hash: the stacks' content, not a
 * matcher's node ids); least recently used entries are replaced. Not thread-safe: one cache per
 * engine thread. */
#ifndef SP_GRAMMAR_MASKCACHE_H
#define SP_GRAMMAR_MASKCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "grammar/matcher.h"
#include "grammar/trie.h"

typedef struct sp_mask_cache sp_mask_cache;

/* A cache of at most max_bytes of masks (at least 8 masks) for the vocabulary of trie t
 * (borrowed; it must outlive the cache), allocated at once (the system commits its pages as
 * entries fill: filling an entry allocates nothing). SP_ERR_NOMEM. */
SP_MUST_USE sp_err sp_mask_cache_create(const sp_token_trie *t, size_t max_bytes,
                                        sp_mask_cache **out);
void sp_mask_cache_destroy(sp_mask_cache *c);

/* The tokens m allows now, into allowed (as sp_matcher_fill_mask) and *count: from the cache
 * when use_cache and it holds m's state (*hit true), else computed and kept. Two states whose
 * hashes collide (probability about 2^-64) would share a mask: a caller that must be exact
 * checks the token it picks with sp_matcher_allows and, if it fails, asks again with use_cache
 * false. Errors as sp_matcher_fill_mask's. */
SP_MUST_USE sp_err sp_mask_cache_get(sp_mask_cache *c, sp_matcher *m, bool use_cache,
                                     uint32_t *allowed, int32_t *count, bool *hit);

#endif
