/* The grammar matcher (matcher.h). */
#include "grammar/matcher.h"

#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/util.h"

#define NONE UINT32_MAX

/* Room made when a matcher is created, so that a request under a common grammar (JSON, a
 * schema's) never allocates while it generates: the engine's step stays allocation-free. */
enum { RESERVE_NODES = 2048, RESERVE_SETS = 256, RESERVE_SLOTS = 4096 };

struct sp_matcher {
    sp_grammar *g;
    // The node pool: node i is the stack whose top is element npos[i], under stack npar[i].
    uint32_t *npos, *npar; // (cap_nodes)
    uint64_t *nhash;       // (cap_nodes) a hash of the stack's content (its positions, top down)
    uint32_t *seen;        // (cap_nodes) the epoch of the expansion that last reached node i
    uint32_t n_nodes, cap_nodes;
    uint32_t *table; // (table_mask + 1) open addressing, node id + 1, 0 empty
    uint32_t table_mask;
    uint32_t epoch;
    // The state: the stacks (each top a byte class), and whether the input is a sentence.
    uint32_t *cur; // (cap_cur)
    uint32_t n_cur, cap_cur;
    bool complete;
    // Scratch: sets of stacks as a stack of arrays (accept, the trie walk), the work list.
    uint32_t *sets; // (cap_sets)
    uint32_t n_sets, cap_sets;
    uint32_t *work; // (cap_work)
    uint32_t cap_work;
    // Rolling back the nodes a trie walk creates: the table slots it filled, in order.
    uint32_t *log; // (cap_log)
    uint32_t n_log, cap_log;
    bool logging, rehashed;
    sp_err err;                   // an allocation failure in the middle of an expansion
    struct sp_matcher_walk *walk; // the mask walk's tables (below), made at the first mask
};

static bool grow_u32(uint32_t **p, uint32_t *cap, uint64_t need) {
    return sp_grow((void **)p, cap, need, sizeof **p, 64);
}

/* memcpy / memmove of n ids, any of them possibly NULL when n is 0. */
static void copy_ids(uint32_t *dst, const uint32_t *src, uint32_t n) {
    if (n)
        memmove(dst, src, (size_t)n * sizeof *dst);
}

static uint32_t slot_of(const sp_matcher *m, uint32_t pos, uint32_t par) {
    return (uint32_t)sp_mix64(((uint64_t)pos << 32) | par) & m->table_mask;
}

/* Fills the table with the nodes [0, n_nodes). */
static void reinsert(sp_matcher *m) {
    memset(m->table, 0, ((size_t)m->table_mask + 1) * sizeof *m->table);
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        uint32_t s = slot_of(m, m->npos[i], m->npar[i]);
        while (m->table[s])
            s = (s + 1) & m->table_mask;
        m->table[s] = i + 1;
    }
}

static bool rehash(sp_matcher *m, uint32_t n_slots) {
    uint32_t *t = malloc((size_t)n_slots * sizeof *t);
    if (!t)
        return false;
    free(m->table);
    m->table = t;
    m->table_mask = n_slots - 1;
    reinsert(m);
    return true;
}

/* The node (pos, par), created if new; NONE (and m->err) when out of memory. */
static uint32_t node(sp_matcher *m, uint32_t pos, uint32_t par) {
    uint32_t s = slot_of(m, pos, par);
    for (uint32_t e; (e = m->table[s]); s = (s + 1) & m->table_mask)
        if (m->npos[e - 1] == pos && m->npar[e - 1] == par)
            return e - 1;
    if (m->n_nodes >= SP_MATCHER_MAX_NODES) {
        m->err = SP_ERR_LIMIT;
        return NONE;
    }
    if (m->n_nodes == m->cap_nodes) {
        uint32_t c1 = m->cap_nodes, c2 = m->cap_nodes, c3 = m->cap_nodes, c4 = m->cap_nodes;
        if (!grow_u32(&m->npos, &c1, m->n_nodes + 1ull) ||
            !grow_u32(&m->npar, &c2, m->n_nodes + 1ull) ||
            !grow_u32(&m->seen, &c3, m->n_nodes + 1ull) ||
            !sp_grow((void **)&m->nhash, &c4, m->n_nodes + 1ull, sizeof *m->nhash, 64)) {
            m->err = SP_ERR_NOMEM;
            return NONE;
        }
        for (uint32_t i = m->cap_nodes; i < c3; i++)
            m->seen[i] = 0;
        m->cap_nodes = c1;
    }
    if (m->logging && !grow_u32(&m->log, &m->cap_log, m->n_log + 1ull)) {
        m->err = SP_ERR_NOMEM;
        return NONE;
    }
    const uint32_t id = m->n_nodes++;
    m->npos[id] = pos;
    m->npar[id] = par;
    m->seen[id] = 0;
    m->nhash[id] = sp_mix64(((uint64_t)pos << 1 | 1) ^ (par == NONE ? 0 : m->nhash[par]));
    if (2ull * m->n_nodes > m->table_mask + 1ull) { // at most half full
        if (!rehash(m, 2 * (m->table_mask + 1))) {
            m->n_nodes--;
            m->err = SP_ERR_NOMEM;
            return NONE;
        }
        m->rehashed = true;
        return id;
    }
    m->table[s] = id + 1;
    if (m->logging)
        m->log[m->n_log++] = s;
    return id;
}

/* Forgets the nodes from `mark` on (created while logging). */
static void rollback(sp_matcher *m, uint32_t mark) {
    if (m->rehashed) {
        // The table grew for the trial's nodes: back to a size for the nodes that stay (a mask's
        // walk may have made it far larger, and a large sparse table slows every later lookup).
        m->n_nodes = mark;
        uint32_t slots = RESERVE_SLOTS;
        while (slots < 2ull * mark + 2)
            slots *= 2;
        if (slots >= m->table_mask + 1 || !rehash(m, slots))
            reinsert(m); // in place
    } else {
        while (m->n_log)
            m->table[m->log[--m->n_log]] = 0;
        m->n_nodes = mark;
    }
    m->n_log = 0;
    m->rehashed = false;
}

static bool push_work(sp_matcher *m, uint32_t *n_work, uint32_t id) {
    if (id == NONE)
        return false;
    if (!grow_u32(&m->work, &m->cap_work, *n_work + 1ull)) {
        m->err = SP_ERR_NOMEM;
        return false;
    }
    m->work[(*n_work)++] = id;
    return true;
}

static bool push_set(sp_matcher *m, uint32_t id) {
    if (!grow_u32(&m->sets, &m->cap_sets, m->n_sets + 1ull)) {
        m->err = SP_ERR_NOMEM;
        return false;
    }
    m->sets[m->n_sets++] = id;
    return true;
}

static void next_epoch(sp_matcher *m) {
    if (++m->epoch == 0) {
        memset(m->seen, 0, (size_t)m->cap_nodes * sizeof *m->seen);
        m->epoch = 1;
    }
}

/* Expands the n_work stacks on the work list until every top is a byte class: those stacks are
 * appended to m->sets (each once); a stack that empties means the input is a sentence
 * (*complete). On allocation failure m->err is set. */
static void expand(sp_matcher *m, uint32_t n_work, bool *complete) {
    const sp_grammar *g = m->g;
    const uint32_t start = m->n_sets;
    while (n_work && !m->err) {
        const uint32_t id = m->work[--n_work];
        if (m->seen[id] == m->epoch)
            continue;
        m->seen[id] = m->epoch;
        const uint32_t pos = m->npos[id];
        const sp_gr_elem e = g->elems[pos];
        if (e.kind == SP_GR_BYTES) {
            if (m->n_sets - start >= SP_MATCHER_MAX_STACKS) {
                m->err = SP_ERR_LIMIT;
                return;
            }
            (void)push_set(m, id);
        } else if (e.kind == SP_GR_REF) {
            const sp_gr_kind after = g->elems[pos + 1].kind;
            const uint32_t cont = after == SP_GR_END || after == SP_GR_ALT
                                      ? m->npar[id] // a tail call: the caller's continuation
                                      : node(m, pos + 1, m->npar[id]);
            if (m->err)
                return;
            for (uint32_t a = g->rule_alt[e.arg]; a < g->rule_alt[e.arg + 1]; a++)
                if (!push_work(m, &n_work, node(m, g->alt_start[a], cont)))
                    return;
        } else if (m->npar[id] == NONE) { // the end of an alternative of the start rule
            *complete = true;
        } else if (!push_work(m, &n_work, m->npar[id])) {
            return;
        }
    }
}

/* The stacks of the set at m->sets[in, in + n_in) that take byte b, advanced past it and
 * expanded, appended to m->sets; their count, and whether the input is then a sentence. */
static uint32_t advance(sp_matcher *m, uint32_t in, uint32_t n_in, uint8_t b, bool *complete) {
    const sp_grammar *g = m->g;
    next_epoch(m);
    uint32_t n_work = 0;
    *complete = false;
    for (uint32_t i = 0; i < n_in; i++) {
        const uint32_t id = m->sets[in + i], pos = m->npos[id];
        if (sp_gr_class_has(&g->classes[g->elems[pos].arg], b) &&
            !push_work(m, &n_work, node(m, pos + 1, m->npar[id])))
            return 0;
    }
    const uint32_t start = m->n_sets;
    expand(m, n_work, complete);
    return m->n_sets - start;
}

void sp_matcher_reset(sp_matcher *m) {
    m->n_nodes = 0;
    memset(m->table, 0, ((size_t)m->table_mask + 1) * sizeof *m->table);
    m->n_log = 0;
    m->rehashed = false;
    m->err = SP_OK;
    m->n_sets = 0;
    next_epoch(m);
    uint32_t n_work = 0;
    const sp_grammar *g = m->g;
    m->complete = false;
    for (uint32_t a = g->rule_alt[g->root]; a < g->rule_alt[g->root + 1]; a++)
        (void)push_work(m, &n_work, node(m, g->alt_start[a], NONE));
    expand(m, n_work, &m->complete);
    if (!m->err && grow_u32(&m->cur, &m->cap_cur, m->n_sets)) {
        copy_ids(m->cur, m->sets, m->n_sets);
        m->n_cur = m->n_sets;
    } else {
        m->n_cur = 0; // out of memory: a matcher that allows nothing
        m->complete = false;
    }
}

static void walk_destroy(struct sp_matcher_walk *w);
static bool walk_reserve(sp_matcher *m);

sp_err sp_matcher_create(sp_grammar *g, sp_matcher **out) {
    sp_matcher *m = calloc(1, sizeof *m);
    if (!m)
        return SP_ERR_NOMEM;
    m->g = sp_grammar_ref(g);
    m->table = calloc(2 * RESERVE_NODES, sizeof *m->table);
    m->table_mask = 2 * RESERVE_NODES - 1;
    uint32_t c1 = 0, c2 = 0, c3 = 0, c4 = 0;
    if (!m->table || !grow_u32(&m->npos, &c1, RESERVE_NODES) ||
        !grow_u32(&m->npar, &c2, RESERVE_NODES) || !grow_u32(&m->seen, &c3, RESERVE_NODES) ||
        !sp_grow((void **)&m->nhash, &c4, RESERVE_NODES, sizeof *m->nhash, 64) ||
        !grow_u32(&m->log, &m->cap_log, RESERVE_NODES) ||
        !grow_u32(&m->sets, &m->cap_sets, RESERVE_SETS) ||
        !grow_u32(&m->work, &m->cap_work, RESERVE_SETS) ||
        !grow_u32(&m->cur, &m->cap_cur, RESERVE_SETS) || !walk_reserve(m)) {
        sp_matcher_destroy(m);
        return SP_ERR_NOMEM;
    }
    m->cap_nodes = c1;
    memset(m->seen, 0, (size_t)c3 * sizeof *m->seen);
    sp_matcher_reset(m);
    if (m->err) {
        const sp_err err = m->err;
        sp_matcher_destroy(m);
        return err;
    }
    *out = m;
    return SP_OK;
}

void sp_matcher_destroy(sp_matcher *m) {
    if (!m)
        return;
    sp_grammar_release(m->g);
    free(m->npos);
    free(m->npar);
    free(m->nhash);
    free(m->seen);
    free(m->table);
    free(m->cur);
    free(m->sets);
    free(m->work);
    free(m->log);
    walk_destroy(m->walk);
    free(m);
}

/* Runs bytes[n] from the current state; on success the resulting set is m->sets[0, *n_out).
 * Whether all were taken. */
static bool run(sp_matcher *m, const uint8_t *bytes, size_t n, uint32_t *n_out, bool *complete) {
    m->n_sets = 0;
    if (!grow_u32(&m->sets, &m->cap_sets, m->n_cur)) {
        m->err = SP_ERR_NOMEM;
        return false;
    }
    copy_ids(m->sets, m->cur, m->n_cur);
    m->n_sets = m->n_cur;
    uint32_t k = m->n_cur;
    *complete = m->complete;
    for (size_t i = 0; i < n; i++) {
        k = advance(m, 0, k, bytes[i], complete);
        if (m->err || (k == 0 && !(*complete && i + 1 == n)))
            return false;
        // The new set to the front for the next byte.
        copy_ids(m->sets, m->sets + m->n_sets - k, k);
        m->n_sets = k;
    }
    *n_out = k;
    return true;
}

/* A trial: the nodes created from here on can be rolled back (end_trial). Returns the mark. */
static uint32_t begin_trial(sp_matcher *m) {
    m->logging = true;
    m->n_log = 0;
    m->rehashed = false;
    return m->n_nodes;
}

/* Ends a trial, forgetting its nodes (rollback) or keeping them; the error it met, cleared. */
static sp_err end_trial(sp_matcher *m, uint32_t mark, bool rollback_nodes) {
    if (rollback_nodes)
        rollback(m, mark);
    m->n_log = 0;
    m->rehashed = false;
    m->logging = false;
    const sp_err err = m->err;
    m->err = SP_OK;
    return err;
}

sp_err sp_matcher_allows(sp_matcher *m, const uint8_t *bytes, size_t n, bool *ok) {
    const uint32_t mark = begin_trial(m);
    uint32_t k;
    bool complete;
    const bool r = run(m, bytes, n, &k, &complete);
    const sp_err err = end_trial(m, mark, true);
    if (!err)
        *ok = r;
    return err;
}

sp_err sp_matcher_accept(sp_matcher *m, const uint8_t *bytes, size_t n, bool *ok) {
    const uint32_t mark = begin_trial(m);
    uint32_t k = 0;
    bool complete = false;
    const bool r = run(m, bytes, n, &k, &complete);
    if (r && !m->err && grow_u32(&m->cur, &m->cap_cur, k)) {
        copy_ids(m->cur, m->sets, k);
        m->n_cur = k;
        m->complete = complete;
    } else if (r && !m->err) {
        m->err = SP_ERR_NOMEM;
    }
    // The nodes of an accepted input stay: the new state is made of them.
    const sp_err err = end_trial(m, mark, !r || m->err);
    if (!err)
        *ok = r;
    return err;
}

bool sp_matcher_complete(const sp_matcher *m) {
    return m->complete;
}

bool sp_matcher_can_continue(const sp_matcher *m) {
    return m->n_cur > 0;
}

uint64_t sp_matcher_state_hash(const sp_matcher *m) {
    // Order-independent over the set; each node's hash covers its whole stack.
    uint64_t h = m->complete ? 0x5bd1e995u : 0;
    for (uint32_t i = 0; i < m->n_cur; i++)
        h += sp_mix64(m->nhash[m->cur[i]] + 0x9e3779b97f4a7c15ull);
    return sp_mix64(h ^ m->n_cur);
}

const sp_grammar *sp_matcher_grammar(const sp_matcher *m) {
    return m->g;
}

uint32_t sp_matcher_n_nodes(const sp_matcher *m) {
    return m->n_nodes;
}

/* A mask's walk of the trie meets few distinct sets of stacks (inside a JSON string: the state
 * itself and the states inside a multi-byte character) many times over, so each set it meets is
 * interned (its sorted node ids, whether the input is complete there, the bytes its stacks
 * take) and each transition (set, byte) is computed once per walk and then looked up. The
 * tables live in the matcher and are reused; stamps, not clearing, empty them between walks. */
typedef struct walk_set {
    uint32_t off, n; // the sorted node ids m->walk->ids[off, off + n)
    bool complete;   // whether the input is a sentence there
    sp_gr_class any; // the bytes some stack takes
    uint64_t hash;
    // As text (text_allowed): the set after an ASCII character of ascii_ok (the most common
    // one; UNKNOWN until known, DEAD if none), and the lead bytes whose characters all lead there
    // too (lead_ok, known for those of lead_known; bit i for byte 0xC0 + i).
    int32_t text_to;
    uint64_t ascii_ok[2], lead_known, lead_ok;
} walk_set;

typedef struct walk_slot { // of the open-addressed tables below
    uint32_t stamp, key;
    int32_t val;
} walk_slot;

struct sp_matcher_walk {
    walk_set *sets; // (cap_sets)
    uint32_t n_sets, cap_sets;
    uint32_t *ids; // (cap_ids)
    uint32_t n_ids, cap_ids;
    walk_slot *by_hash; // (mask + 1) interned sets by hash: key the hash's low bits, val the set
    walk_slot *trans;   // (mask + 1) transitions: key set << 8 | byte, val the set or DEAD
    uint32_t by_hash_mask, trans_mask, n_trans, stamp;
};

enum { DEAD = -1, UNKNOWN = -2, WALK_MAX_SETS = 1 << 23 };

typedef struct walk_ctx {
    const sp_token_trie *t;
    uint32_t *allowed;
    int32_t count;
} walk_ctx;

static inline uint32_t slot_hash(uint64_t k) {
    return (uint32_t)((k * 0x9e3779b97f4a7c15ull) >> 32);
}

static void sort_ids(uint32_t *a, uint32_t n) {
    for (uint32_t i = 1; i < n; i++) { // insertion sort: sets are small
        const uint32_t x = a[i];
        uint32_t j = i;
        for (; j > 0 && a[j - 1] > x; j--)
            a[j] = a[j - 1];
        a[j] = x;
    }
}

static void class_union(const sp_matcher *m, uint32_t in, uint32_t n_in, sp_gr_class *any) {
    const sp_grammar *g = m->g;
    memset(any, 0, sizeof *any);
    for (uint32_t i = 0; i < n_in; i++) {
        const sp_gr_class *c = &g->classes[g->elems[m->npos[m->sets[in + i]]].arg];
        for (int k = 0; k < 4; k++)
            any->bits[k] |= c->bits[k];
    }
}

static void walk_destroy(struct sp_matcher_walk *w) {
    if (!w)
        return;
    free(w->sets);
    free(w->ids);
    free(w->by_hash);
    free(w->trans);
    free(w);
}

/* A table of 2^k slots, all empty (stamp 0). */
static bool slots_init(walk_slot **s, uint32_t *mask, uint32_t n) {
    walk_slot *t = calloc(n, sizeof *t);
    if (!t)
        return false;
    free(*s);
    *s = t;
    *mask = n - 1;
    return true;
}

/* The walk's tables, made with the matcher. */
static bool walk_reserve(sp_matcher *m) {
    struct sp_matcher_walk *w = m->walk = calloc(1, sizeof *w);
    return w && slots_init(&w->by_hash, &w->by_hash_mask, 256) &&
           slots_init(&w->trans, &w->trans_mask, 4096) &&
           sp_grow((void **)&w->sets, &w->cap_sets, 64, sizeof *w->sets, 64) &&
           grow_u32(&w->ids, &w->cap_ids, 1024);
}

/* Starts a walk: the tables emptied. */
static void walk_begin(sp_matcher *m) {
    struct sp_matcher_walk *w = m->walk;
    w->n_sets = w->n_ids = w->n_trans = 0;
    if (++w->stamp == 0) { // wrapped: every slot's stamp could look current
        memset(w->by_hash, 0, ((size_t)w->by_hash_mask + 1) * sizeof *w->by_hash);
        memset(w->trans, 0, ((size_t)w->trans_mask + 1) * sizeof *w->trans);
        w->stamp = 1;
    }
}

/* Doubles a table, keeping its current entries. */
static bool slots_grow(walk_slot **s, uint32_t *mask, uint32_t stamp) {
    const uint32_t n = 2 * (*mask + 1);
    walk_slot *t = calloc(n, sizeof *t);
    if (!t)
        return false;
    for (uint32_t i = 0; i <= *mask; i++) {
        if ((*s)[i].stamp != stamp)
            continue;
        uint32_t j = slot_hash((*s)[i].key) & (n - 1);
        while (t[j].stamp == stamp)
            j = (j + 1) & (n - 1);
        t[j] = (*s)[i];
    }
    free(*s);
    *s = t;
    *mask = n - 1;
    return true;
}

/* The set of the k stacks at m->sets[at] (sorted in place) and complete, interned: its index;
 * DEAD with m->err on failure. */
static int32_t intern(sp_matcher *m, uint32_t at, uint32_t k, bool complete) {
    struct sp_matcher_walk *w = m->walk;
    uint32_t *ids = m->sets + at;
    sort_ids(ids, k);
    uint64_t h = complete ? 0x5bd1e995u : 0x2545f491u;
    for (uint32_t i = 0; i < k; i++)
        h = (h ^ ids[i]) * 0x100000001b3ull;
    const uint32_t key = (uint32_t)h;
    uint32_t s = slot_hash(key) & w->by_hash_mask;
    for (; w->by_hash[s].stamp == w->stamp; s = (s + 1) & w->by_hash_mask) {
        const walk_set *e = &w->sets[w->by_hash[s].val];
        if (e->hash == h && e->n == k && e->complete == complete &&
            !memcmp(w->ids + e->off, ids, (size_t)k * sizeof *ids))
            return w->by_hash[s].val;
    }
    if (w->n_sets >= WALK_MAX_SETS) {
        m->err = SP_ERR_LIMIT;
        return DEAD;
    }
    if (!sp_grow((void **)&w->sets, &w->cap_sets, w->n_sets + 1ull, sizeof *w->sets, 64) ||
        !grow_u32(&w->ids, &w->cap_ids, (uint64_t)w->n_ids + k)) {
        m->err = SP_ERR_NOMEM;
        return DEAD;
    }
    const int32_t id = (int32_t)w->n_sets++;
    walk_set *e = &w->sets[id];
    e->off = w->n_ids;
    e->n = k;
    e->complete = complete;
    e->hash = h;
    e->text_to = UNKNOWN;
    e->lead_known = 0;
    class_union(m, at, k, &e->any);
    copy_ids(w->ids + w->n_ids, ids, k);
    w->n_ids += k;
    w->by_hash[s] = (walk_slot){w->stamp, key, id};
    if (2ull * w->n_sets > w->by_hash_mask + 1ull &&
        !slots_grow(&w->by_hash, &w->by_hash_mask, w->stamp)) {
        m->err = SP_ERR_NOMEM;
        return DEAD;
    }
    return id;
}

/* Narrows *c to the bytes that the stacks of interned set x taking byte b take, and no other
 * stack of x takes (all of them step as b does); empty when no stack takes b. */
static void same_stacks(const sp_matcher *m, uint32_t x, uint8_t b, sp_gr_class *c) {
    const walk_set *s = &m->walk->sets[x];
    const sp_grammar *g = m->g;
    const uint32_t *ids = m->walk->ids + s->off;
    bool taken = false;
    for (uint32_t i = 0; i < s->n; i++) {
        const sp_gr_class *top = &g->classes[g->elems[m->npos[ids[i]]].arg];
        const bool in = sp_gr_class_has(top, b);
        taken |= in;
        for (int k = 0; k < 4; k++)
            c->bits[k] &= in ? top->bits[k] : ~top->bits[k];
    }
    if (!taken)
        memset(c, 0, sizeof *c);
}

/* The transition (key: set << 8 | byte) recorded in this walk, or NULL. */
static const int32_t *trans_find(const struct sp_matcher_walk *w, uint32_t key) {
    for (uint32_t s = slot_hash(key) & w->trans_mask; w->trans[s].stamp == w->stamp;
         s = (s + 1) & w->trans_mask)
        if (w->trans[s].key == key)
            return &w->trans[s].val;
    return NULL;
}

/* Records a transition not yet recorded. */
static void trans_put(sp_matcher *m, uint32_t key, int32_t to) {
    struct sp_matcher_walk *w = m->walk;
    uint32_t s = slot_hash(key) & w->trans_mask;
    while (w->trans[s].stamp == w->stamp)
        s = (s + 1) & w->trans_mask;
    w->trans[s] = (walk_slot){w->stamp, key, to};
    if (2ull * ++w->n_trans > w->trans_mask + 1ull &&
        !slots_grow(&w->trans, &w->trans_mask, w->stamp))
        m->err = SP_ERR_NOMEM;
}

/* Where byte b leads from interned set `from`: a set, or DEAD when no stack takes it and the
 * input is not then complete. Computed once per walk and per class of bytes that the same
 * stacks take (they all lead to the same set): inside a string, one step for all of ASCII. */
static int32_t step(sp_matcher *m, uint32_t from, uint8_t b) {
    struct sp_matcher_walk *w = m->walk;
    const uint32_t key = from << 8 | b;
    const int32_t *found = trans_find(w, key);
    if (found)
        return *found;
    sp_gr_class same;
    memset(&same, 0xff, sizeof same);
    same_stacks(m, from, b, &same);
    int k0 = 0;
    while (k0 < 4 && !same.bits[k0])
        k0++;
    if (k0 == 4) { // no stack takes b
        trans_put(m, key, DEAD);
        return DEAD;
    }
    const uint32_t rep = (uint32_t)k0 * 64 + (uint32_t)__builtin_ctzll(same.bits[k0]);
    if (rep != b && (found = trans_find(w, from << 8 | rep))) {
        const int32_t to = *found;
        trans_put(m, key, to);
        return to;
    }
    const uint32_t save = m->n_sets, n = w->sets[from].n;
    if (!grow_u32(&m->sets, &m->cap_sets, (uint64_t)save + n)) {
        m->err = SP_ERR_NOMEM;
        return DEAD;
    }
    copy_ids(m->sets + save, w->ids + w->sets[from].off, n);
    m->n_sets = save + n;
    bool complete;
    const uint32_t k = advance(m, save, n, b, &complete);
    int32_t to = DEAD;
    if (!m->err && (k || complete))
        to = intern(m, save + n, k, complete);
    m->n_sets = save;
    if (m->err)
        return DEAD;
    trans_put(m, key, to);
    if (rep != b && !m->err)
        trans_put(m, from << 8 | rep, to);
    return to;
}

static void allow_tokens(walk_ctx *w, uint32_t node) {
    const sp_token_trie *t = w->t;
    for (uint32_t j = t->tok_start[node]; j < t->tok_start[node + 1]; j++) {
        const int32_t tok = t->toks[j];
        w->allowed[tok >> 5] |= 1u << (tok & 31);
        w->count++;
    }
}

/* Where an ASCII character leads from interned set x as text: to the set that the largest
 * class of ASCII bytes taken by the same stacks leads to; x's ascii_ok, the ASCII bytes that
 * lead there. */
static int32_t text_to(sp_matcher *m, uint32_t x) {
    struct sp_matcher_walk *w = m->walk;
    if (w->sets[x].text_to != UNKNOWN)
        return w->sets[x].text_to;
    uint64_t left[2] = {w->sets[x].any.bits[0], w->sets[x].any.bits[1]}, ok[2] = {0, 0};
    int32_t best = DEAD;
    int best_n = 0;
    while ((left[0] | left[1]) && !m->err) {
        const uint8_t b =
            (uint8_t)(left[0] ? __builtin_ctzll(left[0]) : 64 + __builtin_ctzll(left[1]));
        sp_gr_class same;
        memset(&same, 0xff, sizeof same);
        same_stacks(m, x, b, &same);
        same.bits[0] &= left[0], same.bits[1] &= left[1];
        left[0] &= ~same.bits[0], left[1] &= ~same.bits[1];
        const int32_t to = step(m, x, b);
        const int n = __builtin_popcountll(same.bits[0]) + __builtin_popcountll(same.bits[1]);
        if (to == DEAD)
            continue;
        if (to == best) {
            best_n += n;
            ok[0] |= same.bits[0], ok[1] |= same.bits[1];
        } else if (n > best_n) {
            best = to, best_n = n;
            ok[0] = same.bits[0], ok[1] = same.bits[1];
        }
    }
    walk_set *s = &w->sets[x];
    s->text_to = best;
    s->ascii_ok[0] = ok[0], s->ascii_ok[1] = ok[1];
    return best;
}

/* Whether every character that lead byte l begins (valid UTF-8) leads from interned set x to
 * text_to(x), each of its continuation bytes taken alike. Known once per walk. */
static bool lead_ok(sp_matcher *m, uint32_t x, uint8_t l) {
    struct sp_matcher_walk *w = m->walk;
    const uint64_t bit = 1ull << (l - 0xC0);
    if (w->sets[x].lead_known & bit)
        return w->sets[x].lead_ok & bit;
    const int32_t target = text_to(m, x);
    const int len = l >= 0xF0 ? 4 : l >= 0xE0 ? 3 : 2;
    int32_t y = target == DEAD ? DEAD : step(m, x, l);
    for (int i = 1; i < len && y != DEAD && !m->err; i++) {
        const unsigned lo = i > 1 ? 0x80 : l == 0xE0 ? 0xA0 : l == 0xF0 ? 0x90 : 0x80;
        const unsigned hi = i > 1 ? 0xBF : l == 0xED ? 0x9F : l == 0xF4 ? 0x8F : 0xBF;
        sp_gr_class same;
        memset(&same, 0xff, sizeof same);
        if (w->sets[y].n == 0) {
            y = DEAD;
            break;
        }
        same_stacks(m, (uint32_t)y, (uint8_t)lo, &same);
        for (unsigned b = lo; b <= hi; b++)
            if (!sp_gr_class_has(&same, b)) {
                y = DEAD;
                break;
            }
        if (y != DEAD)
            y = step(m, (uint32_t)y, (uint8_t)lo);
    }
    walk_set *s = &w->sets[x];
    s->lead_known |= bit;
    if (y != DEAD && y == target)
        s->lead_ok |= bit;
    else
        s->lead_ok &= ~bit;
    return s->lead_ok & bit;
}

/* Whether every token below trie node c, reached in interned set x, is allowed, when the
 * subtree is text (trie.h): its paths have at most t->sub_chars[c] characters, of the ASCII
 * bytes and lead bytes of t->sub_bytes[c]. Sure when, at each of that many sets along the way
 * that an ASCII character leads to (text_to), all of those characters lead to the next; or
 * when that way comes back to a set it was at, which it does forever. This takes at once the
 * most of a vocabulary inside a string: unbounded, a character leads back to the string's state;
 * bounded (x{0,n}), to the state with one fewer left, where the characters are taken alike.
 * Otherwise (false) the walk visits the subtree. */
static bool text_allowed(sp_matcher *m, const sp_token_trie *t, uint32_t x, uint32_t c) {
    const uint32_t n = t->sub_chars[c];
    const uint64_t *bytes = t->sub_bytes[c];
    uint64_t leads = bytes[3] & ~3ull; // 0xC2 .. 0xFF (the trie has no 0xF5 .. 0xFF in text)
    for (uint32_t i = 0; i < n && !m->err; i++) {
        const int32_t to = text_to(m, x);
        const walk_set *s = &m->walk->sets[x];
        if (to == DEAD || (bytes[0] & ~s->ascii_ok[0]) || (bytes[1] & ~s->ascii_ok[1]))
            return false;
        for (uint64_t l = leads; l; l &= l - 1)
            if (!lead_ok(m, x, (uint8_t)(0xC0 + __builtin_ctzll(l))))
                return false;
        if ((uint32_t)to == x)
            return true;
        x = (uint32_t)to;
    }
    return !m->err;
}

/* The trie below node tn, from interned set `from` (0: the current state). A subtree whose
 * tokens are all allowed (subtree_allowed; in a string, most of the vocabulary) is taken
 * without a visit. */
static void walk(sp_matcher *m, walk_ctx *w, uint32_t tn, uint32_t from) {
    const sp_token_trie *t = w->t;
    const sp_gr_class any = m->walk->sets[from].any; // (a copy: the table may move)
    for (uint32_t e = t->edge_start[tn]; e < t->edge_start[tn + 1] && !m->err; e++) {
        const uint8_t b = t->edge_byte[e];
        if (!sp_gr_class_has(&any, b))
            continue;
        const uint32_t c = t->edge_node[e];
        const int32_t to = step(m, from, b);
        if (to == DEAD)
            continue;
        if (m->walk->sets[to].n && t->edge_start[c] < t->edge_start[c + 1]) {
            if (t->sub_chars[c] != SP_TRIE_NOT_TEXT && text_allowed(m, t, (uint32_t)to, c)) {
                for (uint32_t j = t->tok_start[c]; j < t->tok_start[t->sub_end[c]]; j++)
                    w->allowed[t->toks[j] >> 5] |= 1u << (t->toks[j] & 31);
                w->count += (int32_t)(t->tok_start[t->sub_end[c]] - t->tok_start[c]);
                continue;
            }
            allow_tokens(w, c);
            walk(m, w, c, (uint32_t)to);
        } else {
            allow_tokens(w, c);
        }
    }
}

sp_err sp_matcher_fill_mask(sp_matcher *m, const sp_token_trie *t, uint32_t *allowed,
                            int32_t *count) {
    memset(allowed, 0, (((size_t)t->n_vocab + 31) / 32) * sizeof *allowed);
    const uint32_t mark = begin_trial(m);
    m->n_sets = 0;
    walk_ctx w = {.t = t, .allowed = allowed};
    walk_begin(m);
    if (grow_u32(&m->sets, &m->cap_sets, m->n_cur)) {
        copy_ids(m->sets, m->cur, m->n_cur);
        if (m->n_cur && intern(m, 0, m->n_cur, m->complete) == 0 && t->n_nodes > 0)
            walk(m, &w, 0, 0);
    } else {
        m->err = SP_ERR_NOMEM;
    }
    const sp_err err = end_trial(m, mark, true);
    if (!err)
        *count = w.count;
    return err;
}
