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

enum { DEAD = -1, WALK_MAX_SETS = 1 << 23 };

typedef struct walk_ctx {
    const sp_token_trie *t;
    uint32_t *allowed;
    int32_t count;
    sp_gr_class loop; // the bytes after which the current state (set 0) is itself again
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

/* Where byte b leads from interned set `from`: a set, or DEAD when no stack takes it and the
 * input is not then complete. Computed once per walk. */
static int32_t step(sp_matcher *m, uint32_t from, uint8_t b) {
    struct sp_matcher_walk *w = m->walk;
    const uint32_t key = from << 8 | b;
    uint32_t s = slot_hash(key) & w->trans_mask;
    for (; w->trans[s].stamp == w->stamp; s = (s + 1) & w->trans_mask)
        if (w->trans[s].key == key)
            return w->trans[s].val;
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
    w->trans[s] = (walk_slot){w->stamp, key, to};
    if (2ull * ++w->n_trans > w->trans_mask + 1ull &&
        !slots_grow(&w->trans, &w->trans_mask, w->stamp))
        m->err = SP_ERR_NOMEM;
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

/* The trie below node tn, from interned set `from` (0: the current state). From the current
 * state, a byte of w->loop leads back to it: when every byte below such an edge does too (in a
 * JSON string, most of the vocabulary), the whole subtree is allowed without a visit. */
static void walk(sp_matcher *m, walk_ctx *w, uint32_t tn, uint32_t from) {
    const sp_token_trie *t = w->t;
    const sp_gr_class any = m->walk->sets[from].any; // (a copy: the table may move)
    for (uint32_t e = t->edge_start[tn]; e < t->edge_start[tn + 1] && !m->err; e++) {
        const uint8_t b = t->edge_byte[e];
        if (!sp_gr_class_has(&any, b))
            continue;
        const uint32_t c = t->edge_node[e];
        if (from == 0 && sp_gr_class_has(&w->loop, b)) {
            const uint64_t *below = t->sub_bytes[c];
            if (!(below[0] & ~w->loop.bits[0]) && !(below[1] & ~w->loop.bits[1]) &&
                !(below[2] & ~w->loop.bits[2]) && !(below[3] & ~w->loop.bits[3])) {
                for (uint32_t j = t->tok_start[c]; j < t->tok_start[t->sub_end[c]]; j++)
                    w->allowed[t->toks[j] >> 5] |= 1u << (t->toks[j] & 31);
                w->count += (int32_t)(t->tok_start[t->sub_end[c]] - t->tok_start[c]);
                continue;
            }
            allow_tokens(w, c);
            walk(m, w, c, 0);
            continue;
        }
        const int32_t to = step(m, from, b);
        if (to == DEAD)
            continue;
        allow_tokens(w, c);
        if (m->walk->sets[to].n && t->edge_start[c] < t->edge_start[c + 1])
            walk(m, w, c, (uint32_t)to);
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
        if (m->n_cur && intern(m, 0, m->n_cur, m->complete) == 0) {
            const sp_gr_class any = m->walk->sets[0].any;
            for (unsigned b = 0; b < 256 && !m->err; b++)
                if (sp_gr_class_has(&any, b) && step(m, 0, (uint8_t)b) == 0)
                    w.loop.bits[b >> 6] |= 1ull << (b & 63);
            if (t->n_nodes > 0 && !m->err)
                walk(m, &w, 0, 0);
        }
    } else {
        m->err = SP_ERR_NOMEM;
    }
    const sp_err err = end_trial(m, mark, true);
    if (!err)
        *count = w.count;
    return err;
}
