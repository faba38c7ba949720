/* N-gram drafts (lookup.h): a scan of one token source, and a shared fixed-size index. */
#include "spec/lookup.h"

#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/util.h"

int32_t sp_spec_lookup(const int32_t *src, int32_t n_src, const int32_t *ctx, int32_t n_ctx,
                       int32_t min_n, int32_t max_n, int32_t k, int32_t *out) {
    if (k <= 0 || n_src <= 0 || min_n < 1 || max_n < min_n)
        return 0;
    if (n_ctx < min_n) {
        const int32_t m = SP_MIN(k, n_src);
        memcpy(out, src, sizeof *out * (size_t)m);
        return m;
    }
    for (int32_t n = SP_MIN(max_n, n_ctx); n >= min_n; n--) {
        const int32_t *suffix = ctx + n_ctx - n;
        // The latest occurrence first: it is the likeliest to continue the same way.
        for (int32_t j = n_src - n - 1; j >= 0; j--) {
            if (src[j + n - 1] != suffix[n - 1] || memcmp(src + j, suffix, sizeof *src * (size_t)n))
                continue;
            const int32_t m = SP_MIN(k, n_src - (j + n));
            memcpy(out, src + j + n, sizeof *out * (size_t)m);
            return m;
        }
    }
    return 0;
}

enum { MAX_N = 8, MAX_K = 16 };

typedef struct slot {
    uint64_t salt;
    int32_t gram[MAX_N]; // the n-gram (n_next == 0: empty slot)
    int32_t next[MAX_K]; // the tokens that followed it last
    int32_t n_next;
} slot;

struct sp_spec_index {
    int32_t n, k_max;
    uint64_t mask; // slots - 1
    slot *slots;   // (slots)
};

sp_err sp_spec_index_create(int32_t n, int32_t k_max, int32_t log2_slots, sp_spec_index **out) {
    if (n < 1 || n > MAX_N || k_max < 1 || k_max > MAX_K || log2_slots < 4 || log2_slots > 24)
        return SP_ERR_INVALID;
    sp_spec_index *x = malloc(sizeof *x);
    slot *slots = calloc((size_t)1 << log2_slots, sizeof *slots);
    if (!x || !slots) {
        free(x);
        free(slots);
        return SP_ERR_NOMEM;
    }
    *x = (sp_spec_index){
        .n = n, .k_max = k_max, .mask = ((uint64_t)1 << log2_slots) - 1, .slots = slots};
    *out = x;
    return SP_OK;
}

void sp_spec_index_destroy(sp_spec_index *x) {
    if (!x)
        return;
    free(x->slots);
    free(x);
}

static slot *slot_of(const sp_spec_index *x, uint64_t salt, const int32_t *gram) {
    const uint64_t h =
        sp_fnv1a64_add(sp_fnv1a64(&salt, sizeof salt), gram, sizeof *gram * (size_t)x->n);
    return &x->slots[h & x->mask];
}

void sp_spec_index_add(sp_spec_index *x, uint64_t salt, const int32_t *tokens, int32_t n_tokens) {
    for (int32_t i = 0; i + x->n < n_tokens; i++) {
        const int32_t *gram = tokens + i;
        slot *s = slot_of(x, salt, gram);
        const int32_t m = SP_MIN(x->k_max, n_tokens - (i + x->n));
        // The same n-gram with a longer continuation already recorded from this very text (a
        // growing output added again) keeps it if the new one is its prefix.
        if (s->n_next > m && s->salt == salt &&
            !memcmp(s->gram, gram, sizeof *gram * (size_t)x->n) &&
            !memcmp(s->next, gram + x->n, sizeof *gram * (size_t)m))
            continue;
        s->salt = salt;
        memcpy(s->gram, gram, sizeof *gram * (size_t)x->n);
        memcpy(s->next, gram + x->n, sizeof *gram * (size_t)m);
        s->n_next = m;
    }
}

int32_t sp_spec_index_lookup(const sp_spec_index *x, uint64_t salt, const int32_t *ctx,
                             int32_t n_ctx, int32_t k, int32_t *out) {
    if (k <= 0 || n_ctx < x->n)
        return 0;
    const int32_t *gram = ctx + n_ctx - x->n;
    const slot *s = slot_of(x, salt, gram);
    if (s->n_next == 0 || s->salt != salt || memcmp(s->gram, gram, sizeof *gram * (size_t)x->n))
        return 0;
    const int32_t m = SP_MIN(k, s->n_next);
    memcpy(out, s->next, sizeof *out * (size_t)m);
    return m;
}
