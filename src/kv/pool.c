#include "kv/pool.h"

#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "kv/internal.h"

sp_kv_pool_opts sp_kv_pool_opts_default(void) {
    return (sp_kv_pool_opts){.caching = true, .hash_seed = 0, .hash_bits = 0};
}

sp_err sp_kv_pool_create(sp_kvbuf *kv, const sp_kv_pool_opts *opts, sp_kv_pool **out) {
    sp_kv_pool_opts o = opts ? *opts : sp_kv_pool_opts_default();
    if (!kv || kv->n_blocks <= 0 || kv->block_size <= 0 || o.hash_bits < 0 || o.hash_bits > 64)
        return SP_ERR_INVALID;
    // Slots: the next power of two >= 2 * n_blocks, so the load factor stays <= 1/2.
    uint64_t n_slots = 1;
    while (n_slots < 2 * (uint64_t)kv->n_blocks)
        n_slots <<= 1;
    if (n_slots > UINT32_MAX)
        return SP_ERR_NOMEM;
    size_t tok_count;
    if (!sp_mul_size((size_t)kv->n_blocks, (size_t)kv->block_size, &tok_count))
        return SP_ERR_NOMEM;

    sp_kv_pool *p = calloc(1, sizeof *p);
    if (!p)
        return SP_ERR_NOMEM;
    p->blocks = calloc((size_t)kv->n_blocks, sizeof *p->blocks);
    p->tokens = calloc(tok_count, sizeof *p->tokens);
    p->slots = malloc((size_t)n_slots * sizeof *p->slots);
    if (!p->blocks || !p->tokens || !p->slots)
        goto fail;

    p->kv = kv;
    p->n_blocks = kv->n_blocks;
    p->block_size = kv->block_size;
    p->caching = o.caching;
    p->hash_seed = o.hash_seed;
    p->hash_mask =
        o.hash_bits == 0 || o.hash_bits == 64 ? UINT64_MAX : (UINT64_C(1) << o.hash_bits) - 1;
    p->slot_mask = (uint32_t)(n_slots - 1);
    memset(p->slots, 0xff, (size_t)n_slots * sizeof *p->slots); // all -1
    // Free list in ascending id order: block 0 is handed out first.
    for (int32_t i = 0; i < p->n_blocks; i++)
        p->blocks[i] = (sp__kv_block){.next = i + 1 < p->n_blocks ? i + 1 : -1,
                                      .prev = -1,
                                      .parent = -1,
                                      .state = SP__KV_FREE};
    p->free_head = 0;
    p->lru_head = p->lru_tail = -1;
    p->n_free = p->n_blocks;
    *out = p;
    return SP_OK;

fail:
    free(p->slots);
    free(p->tokens);
    free(p->blocks);
    free(p);
    return SP_ERR_NOMEM;
}

void sp_kv_pool_destroy(sp_kv_pool *pool) {
    if (!pool)
        return;
    free(pool->slots);
    free(pool->tokens);
    free(pool->blocks);
    free(pool);
}

int32_t sp_kv_pool_block_size(const sp_kv_pool *pool) {
    return pool->block_size;
}

int32_t sp_kv_pool_n_available(const sp_kv_pool *pool) {
    return pool->n_free + pool->n_cached;
}

bool sp_kv_pool_caching(const sp_kv_pool *pool) {
    return pool->caching;
}

static void lru_unlink(sp_kv_pool *p, int32_t id) {
    sp__kv_block *b = &p->blocks[id];
    if (b->prev >= 0)
        p->blocks[b->prev].next = b->next;
    else
        p->lru_head = b->next;
    if (b->next >= 0)
        p->blocks[b->next].prev = b->prev;
    else
        p->lru_tail = b->prev;
    b->prev = b->next = -1;
}

static void lru_push_tail(sp_kv_pool *p, int32_t id) {
    sp__kv_block *b = &p->blocks[id];
    b->prev = p->lru_tail;
    b->next = -1;
    if (p->lru_tail >= 0)
        p->blocks[p->lru_tail].next = id;
    else
        p->lru_head = id;
    p->lru_tail = id;
}

static void free_push(sp_kv_pool *p, int32_t id) {
    sp__kv_block *b = &p->blocks[id];
    b->state = SP__KV_FREE;
    b->prev = -1;
    b->next = p->free_head;
    p->free_head = id;
    p->n_free++;
}

/* Removes a block's identity. Its children must be gone already: a child names its parent by
 * block id, so a parent that lost its identity while a child kept it could later be reused for
 * another prefix and confuse the child's verification. */
static void unregister(sp_kv_pool *p, int32_t id) {
    sp__kv_block *b = &p->blocks[id];
    SP_ASSERT(b->indexed && b->n_children == 0);
    sp__kv_index_remove(p, id);
    if (b->parent >= 0) {
        SP_ASSERT(p->blocks[b->parent].n_children > 0);
        p->blocks[b->parent].n_children--;
    }
    b->indexed = false;
    b->parent = -1;
    b->hash = 0;
    b->salt = 0;
    p->n_indexed--;
}

/* Moves a cached block to "unlisted": out of the LRU list and the index. */
static void evict(sp_kv_pool *p, int32_t id) {
    SP_ASSERT(p->blocks[id].state == SP__KV_CACHED);
    lru_unlink(p, id);
    unregister(p, id);
    p->n_cached--;
    p->evictions++;
}

sp_err sp_kv_pool_alloc(sp_kv_pool *pool, int32_t *out) {
    int32_t id = pool->free_head;
    if (id >= 0) {
        pool->free_head = pool->blocks[id].next;
        pool->n_free--;
    } else {
        /* The least recently released cached block without registered children. A parent's
         * reference count is never below its children's (a table holding a block also holds
         * the blocks before it) and tables release their blocks last first, so a parent is
         * released no earlier than its children and the list head is normally a leaf: the
         * walk is there for safety, not for speed. */
        id = pool->lru_head;
        while (id >= 0 && pool->blocks[id].n_children > 0)
            id = pool->blocks[id].next;
        if (id < 0)
            return SP_ERR_NOMEM;
        evict(pool, id);
    }
    sp__kv_block *b = &pool->blocks[id];
    b->state = SP__KV_USED;
    b->ref = 1;
    b->next = b->prev = -1;
    pool->n_used++;
    pool->allocations++;
    *out = id;
    return SP_OK;
}

void sp_kv_pool_retain(sp_kv_pool *pool, int32_t block) {
    SP_ASSERT(block >= 0 && block < pool->n_blocks);
    SP_ASSERT(pool->blocks[block].ref > 0);
    pool->blocks[block].ref++;
}

void sp_kv_pool_release(sp_kv_pool *pool, int32_t block) {
    SP_ASSERT(block >= 0 && block < pool->n_blocks);
    sp__kv_block *b = &pool->blocks[block];
    SP_ASSERT(b->ref > 0);
    if (--b->ref > 0)
        return;
    pool->n_used--;
    if (b->indexed && pool->caching) {
        b->state = SP__KV_CACHED;
        lru_push_tail(pool, block);
        pool->n_cached++;
        return;
    }
    if (b->indexed)
        unregister(pool, block);
    free_push(pool, block);
}

int32_t sp_kv_pool_ref(const sp_kv_pool *pool, int32_t block) {
    SP_ASSERT(block >= 0 && block < pool->n_blocks);
    return pool->blocks[block].ref;
}

void sp_kv_pool_set_caching(sp_kv_pool *pool, bool on) {
    pool->caching = on;
    if (on)
        return;
    // Oldest first: children precede their parents in the list (see sp_kv_pool_alloc).
    while (pool->lru_head >= 0) {
        int32_t id = pool->lru_head;
        while (id >= 0 && pool->blocks[id].n_children > 0)
            id = pool->blocks[id].next;
        SP_ASSERT(id >= 0); // a cached block with children has a cached leaf below it
        evict(pool, id);
        free_push(pool, id);
    }
}

void sp_kv_pool_stats(const sp_kv_pool *pool, sp_kv_stats *out) {
    *out = (sp_kv_stats){
        .n_blocks = pool->n_blocks,
        .n_free = pool->n_free,
        .n_used = pool->n_used,
        .n_cached = pool->n_cached,
        .n_indexed = pool->n_indexed,
        .allocations = pool->allocations,
        .evictions = pool->evictions,
        .hit_blocks = pool->hit_blocks,
        .copies = pool->copies,
    };
}

int32_t sp__kv_register(sp_kv_pool *pool, int32_t id, int32_t parent, uint64_t hash, uint64_t salt,
                        const int32_t *tokens) {
    sp__kv_block *b = &pool->blocks[id];
    SP_ASSERT(b->state == SP__KV_USED && !b->indexed);
    SP_ASSERT(parent < 0 || pool->blocks[parent].indexed);
    int32_t other = sp__kv_index_find(pool, hash, parent, salt, tokens);
    if (other >= 0)
        return other;
    b->indexed = true;
    b->hash = hash;
    b->salt = salt;
    b->parent = parent;
    memcpy(pool->tokens + (size_t)id * (size_t)pool->block_size, tokens,
           (size_t)pool->block_size * sizeof *tokens);
    if (parent >= 0)
        pool->blocks[parent].n_children++;
    sp__kv_index_insert(pool, id);
    pool->n_indexed++;
    return id;
}

void sp__kv_take(sp_kv_pool *pool, int32_t id) {
    sp__kv_block *b = &pool->blocks[id];
    SP_ASSERT(b->indexed);
    if (b->state == SP__KV_CACHED) {
        lru_unlink(pool, id);
        b->state = SP__KV_USED;
        pool->n_cached--;
        pool->n_used++;
    }
    b->ref++;
    pool->hit_blocks++;
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            SP_ERROR("kv pool check: " __VA_ARGS__);                                               \
            return false;                                                                          \
        }                                                                                          \
    } while (0)

bool sp_kv_pool_check(const sp_kv_pool *p) {
    int32_t n = p->n_blocks;
    int32_t n_free = 0, n_used = 0, n_cached = 0, n_indexed = 0;
    for (int32_t i = 0; i < n; i++) {
        const sp__kv_block *b = &p->blocks[i];
        switch (b->state) {
        case SP__KV_FREE:
            CHECK(b->ref == 0 && !b->indexed, "free block %d has ref %d or identity", i, b->ref);
            n_free++;
            break;
        case SP__KV_USED:
            CHECK(b->ref > 0, "used block %d has ref %d", i, b->ref);
            n_used++;
            break;
        case SP__KV_CACHED:
            CHECK(b->ref == 0 && b->indexed && p->caching, "cached block %d: ref %d", i, b->ref);
            n_cached++;
            break;
        default:
            CHECK(false, "block %d in state %d", i, b->state);
        }
        if (!b->indexed) {
            CHECK(b->n_children == 0 && b->parent < 0, "unindexed block %d has relations", i);
            continue;
        }
        n_indexed++;
        const int32_t *tok = p->tokens + (size_t)i * (size_t)p->block_size;
        uint64_t ph = b->parent >= 0 ? p->blocks[b->parent].hash : SP__KV_ROOT_HASH;
        CHECK(b->parent < 0 || p->blocks[b->parent].indexed, "block %d: parent unindexed", i);
        CHECK(sp__kv_hash(p, ph, b->salt, tok) == b->hash, "block %d: stale hash", i);
        CHECK(sp__kv_index_find(p, b->hash, b->parent, b->salt, tok) == i,
              "block %d not found by its identity", i);
        int32_t kids = 0;
        for (int32_t j = 0; j < n; j++)
            kids += p->blocks[j].indexed && p->blocks[j].parent == i;
        CHECK(kids == b->n_children, "block %d: %d children, counted %d", i, kids, b->n_children);
        if (b->parent >= 0)
            CHECK(p->blocks[b->parent].ref >= b->ref, "block %d: ref %d above its parent's %d", i,
                  b->ref, p->blocks[b->parent].ref);
    }
    CHECK(n_free == p->n_free && n_used == p->n_used && n_cached == p->n_cached &&
              n_indexed == p->n_indexed,
          "counters free %d/%d used %d/%d cached %d/%d indexed %d/%d", n_free, p->n_free, n_used,
          p->n_used, n_cached, p->n_cached, n_indexed, p->n_indexed);
    CHECK(p->n_free + p->n_used + p->n_cached == n, "states do not add up to n_blocks");

    int32_t steps = 0;
    for (int32_t i = p->free_head; i >= 0; i = p->blocks[i].next, steps++)
        CHECK(steps < n && p->blocks[i].state == SP__KV_FREE, "free list broken at %d", i);
    CHECK(steps == p->n_free, "free list holds %d, expected %d", steps, p->n_free);

    // LRU list: well linked, holds every cached block, and no block precedes a cached child.
    steps = 0;
    for (int32_t i = p->lru_head, prev = -1; i >= 0; prev = i, i = p->blocks[i].next, steps++) {
        CHECK(steps < n && p->blocks[i].state == SP__KV_CACHED, "LRU list broken at %d", i);
        CHECK(p->blocks[i].prev == prev, "LRU back link broken at %d", i);
        int32_t par = p->blocks[i].parent;
        if (par >= 0 && p->blocks[par].state == SP__KV_CACHED) {
            bool later = false;
            for (int32_t j = p->blocks[i].next; j >= 0 && !later; j = p->blocks[j].next)
                later = j == par;
            CHECK(later, "cached block %d listed after its parent %d", i, par);
        }
    }
    CHECK(steps == p->n_cached, "LRU list holds %d, expected %d", steps, p->n_cached);

    int32_t in_slots = 0;
    for (uint64_t s = 0; s <= p->slot_mask; s++)
        if (p->slots[s] >= 0) {
            CHECK(p->slots[s] < n && p->blocks[p->slots[s]].indexed, "slot %d holds %d", (int)s,
                  p->slots[s]);
            in_slots++;
        }
    CHECK(in_slots == p->n_indexed, "index holds %d, expected %d", in_slots, p->n_indexed);
    return true;
}
