/* The mask cache (maskcache.h): set associative, WAYS entries per set, least recently used
 * replaced within a set. The masks' memory is one block allocated with the cache (its pages
 * are only touched, by the system, as entries fill), so that filling an entry allocates
 * nothing. */
#include "grammar/maskcache.h"

#include <stdlib.h>
#include <string.h>

#include "base/hash.h"

enum { WAYS = 8 };

typedef struct entry {
    uint64_t key;  // 0: empty
    uint64_t used; // the clock at its last use
    int32_t count; // tokens allowed
} entry;

struct sp_mask_cache {
    const sp_token_trie *t;
    size_t words;   // of a mask
    entry *e;       // (n)
    uint32_t *bits; // (n * words) entry i's mask at bits + i * words
    int32_t n;
    uint64_t clock;
};

sp_err sp_mask_cache_create(const sp_token_trie *t, size_t max_bytes, sp_mask_cache **out) {
    const size_t words = ((size_t)t->n_vocab + 31) / 32;
    size_t n = max_bytes / (words * sizeof(uint32_t) + sizeof(entry));
    n = n < WAYS ? WAYS : n > 65536 ? 65536 : n / WAYS * WAYS;
    sp_mask_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->e = calloc(n, sizeof *c->e)) ||
        !(c->bits = malloc(n * words * sizeof *c->bits))) {
        if (c)
            free(c->e);
        free(c);
        return SP_ERR_NOMEM;
    }
    c->t = t;
    c->words = words;
    c->n = (int32_t)n;
    *out = c;
    return SP_OK;
}

void sp_mask_cache_destroy(sp_mask_cache *c) {
    if (!c)
        return;
    free(c->bits);
    free(c->e);
    free(c);
}

sp_err sp_mask_cache_get(sp_mask_cache *c, sp_matcher *m, bool use_cache, uint32_t *allowed,
                         int32_t *count, bool *hit) {
    const uint64_t key =
        sp_mix64(sp_matcher_state_hash(m) ^ sp_matcher_grammar(m)->hash) | 1; // never 0
    // WAYS-way set associative: the key's set, its least recently used entry replaced.
    entry *set = c->e + (size_t)(key >> 32) % (size_t)(c->n / WAYS) * WAYS, *slot = set;
    for (int i = 0; i < WAYS; i++) {
        entry *x = &set[i];
        if (use_cache && x->key == key) {
            x->used = ++c->clock;
            memcpy(allowed, c->bits + (size_t)(x - c->e) * c->words, c->words * sizeof *allowed);
            *count = x->count;
            *hit = true;
            return SP_OK;
        }
        if (x->key == key || (slot->key != key && x->used < slot->used))
            slot = x; // the entry to replace: this state's, else the least recently used
    }
    *hit = false;
    sp_err err = sp_matcher_fill_mask(m, c->t, allowed, count);
    if (err)
        return err;
    memcpy(c->bits + (size_t)(slot - c->e) * c->words, allowed, c->words * sizeof *allowed);
    slot->key = key;
    slot->count = *count;
    slot->used = ++c->clock;
    return SP_OK;
}
