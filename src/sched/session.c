#include "sched/session.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#define GAP_WINDOW 256
#define N_GAP_HISTS 32 // the global history and up to 31 tools

/* Recent gaps between a turn's end and its session's next turn (us), for all sessions (tool 0)
 * or for turns that ended waiting on one named tool. */
typedef struct gap_hist {
    uint64_t tool;
    int64_t gaps[GAP_WINDOW];
    int32_t n, head;
    int64_t last_us;
} gap_hist;

typedef struct session {
    uint64_t id;       // 0 = empty slot
    uint64_t first_arrival;
    int64_t last_end_us; // 0 while a turn is running
    int64_t last_use_us;
    bool pinned;
    int64_t pinned_at_us;
    int64_t expires_us;
    uint64_t tool;  // the tool the last turn ended waiting on (0: none named)
    sp_kv_seq seq; // the pinned blocks
} session;

struct sp_sessions {
    session *slots;
    int32_t capacity;
    int64_t fixed_ttl_us, cap_ttl_us;
    gap_hist hists[N_GAP_HISTS]; // [0]: every session; then per tool
    sp_session_stats st;
};

sp_err sp_sessions_create(int32_t capacity, int64_t fixed_ttl_ms, int64_t cap_ttl_ms,
                          sp_sessions **out) {
    if (capacity < 1 || fixed_ttl_ms < -1 || cap_ttl_ms < 0)
        return SP_ERR_INVALID;
    sp_sessions *s = calloc(1, sizeof *s);
    if (!s)
        return SP_ERR_NOMEM;
    s->slots = calloc((size_t)capacity, sizeof *s->slots);
    if (!s->slots) {
        free(s);
        return SP_ERR_NOMEM;
    }
    s->capacity = capacity;
    s->fixed_ttl_us = fixed_ttl_ms < 0 ? -1 : fixed_ttl_ms * 1000;
    s->cap_ttl_us = cap_ttl_ms * 1000;
    *out = s;
    return SP_OK;
}

static void release_pin(sp_sessions *s, sp_kv_pool *pool, session *x) {
    if (!x->pinned)
        return;
    s->st.pinned_blocks -= x->seq.n_blocks;
    s->st.n_pinned--;
    sp_kv_seq_release(pool, &x->seq);
    sp_kv_seq_deinit(&x->seq);
    x->pinned = false;
}

void sp_sessions_destroy(sp_sessions *s, sp_kv_pool *pool) {
    if (!s)
        return;
    for (int32_t i = 0; i < s->capacity; i++)
        release_pin(s, pool, &s->slots[i]);
    free(s->slots);
    free(s);
}

static session *find(const sp_sessions *s, uint64_t id) {
    for (int32_t i = 0; i < s->capacity; i++)
        if (s->slots[i].id == id)
            return &s->slots[i];
    return NULL;
}

/* A slot for a new session: an empty one, else the least recently used unpinned one. */
static session *take_slot(sp_sessions *s) {
    session *best = NULL;
    for (int32_t i = 0; i < s->capacity; i++) {
        session *x = &s->slots[i];
        if (!x->id)
            return x;
        if (!x->pinned && (!best || x->last_use_us < best->last_use_us))
            best = x;
    }
    return best;
}

static void record_gap(gap_hist *h, int64_t gap, int64_t now_us) {
    if (!h)
        return;
    h->gaps[h->head] = gap;
    h->head = (h->head + 1) % GAP_WINDOW;
    h->n = SP_MIN(h->n + 1, GAP_WINDOW);
    h->last_us = now_us;
}

/* The history of a tool; with create, a new one replaces the least recently updated. */
static gap_hist *tool_hist(sp_sessions *s, uint64_t tool, bool create) {
    gap_hist *oldest = NULL;
    for (int i = 1; i < N_GAP_HISTS; i++) {
        gap_hist *h = &s->hists[i];
        if (h->tool == tool)
            return h;
        if (!oldest || h->last_us < oldest->last_us)
            oldest = h;
    }
    if (!create)
        return NULL;
    memset(oldest, 0, sizeof *oldest);
    oldest->tool = tool;
    return oldest;
}

uint64_t sp_sessions_arrive(sp_sessions *s, uint64_t id, uint64_t arrival, int64_t now_us) {
    s->st.turns++;
    session *x = find(s, id);
    if (!x) {
        x = take_slot(s);
        if (!x)
            return arrival; // every slot is pinned: serve it as a new program
        memset(x, 0, sizeof *x);
        x->id = id;
        x->first_arrival = arrival;
    } else if (x->last_end_us) {
        int64_t gap = now_us - x->last_end_us;
        record_gap(&s->hists[0], gap, now_us);
        if (x->tool)
            record_gap(tool_hist(s, x->tool, true), gap, now_us);
    }
    x->last_end_us = 0;
    x->last_use_us = now_us;
    return x->first_arrival;
}

/* Insertion sort: at most GAP_WINDOW values, once per finished turn, and no allocation. */
static void sort_i64(int64_t *a, int32_t n) {
    for (int32_t i = 1; i < n; i++) {
        int64_t v = a[i];
        int32_t j = i;
        while (j > 0 && a[j - 1] > v) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = v;
    }
}

/* The TTL to pin for (us) from one gap history, or -1 not to pin; *p_return receives the
 * fraction of recorded gaps within it (0.5 when there is no history yet). */
static int64_t choose_ttl(const sp_sessions *s, const gap_hist *h, double *p_return) {
    *p_return = 1.0;
    if (s->fixed_ttl_us == 0)
        return -1; // pins off: plain LRU caching
    if (s->fixed_ttl_us > 0)
        return s->fixed_ttl_us;
    if (h->n < 4) {
        *p_return = 0.5;
        return SP_MIN(s->cap_ttl_us, 2 * 1000000LL); // no history yet: a short trial pin
    }
    int64_t g[GAP_WINDOW];
    memcpy(g, h->gaps, (size_t)h->n * sizeof *g);
    sort_i64(g, h->n);
    int64_t ttl = SP_MIN(g[(h->n * 9) / 10], s->cap_ttl_us);
    // Pin only if a turn is more likely than not to come back within the TTL.
    int32_t within = 0;
    while (within < h->n && g[within] <= ttl)
        within++;
    *p_return = (double)within / h->n;
    return 2 * within > h->n ? ttl : -1;
}

/* The history that speaks for a turn waiting on tool: the tool's own once it has a few gaps,
 * else every session's. */
static const gap_hist *hist_for(const sp_sessions *s, uint64_t tool) {
    if (tool)
        for (int i = 1; i < N_GAP_HISTS; i++)
            if (s->hists[i].tool == tool && s->hists[i].n >= 4)
                return &s->hists[i];
    return &s->hists[0];
}

int64_t sp_sessions_ttl_ms_for(const sp_sessions *s, uint64_t tool) {
    double p;
    int64_t t = choose_ttl(s, hist_for(s, tool), &p);
    return t < 0 ? -1 : t / 1000;
}

int64_t sp_sessions_ttl_ms(const sp_sessions *s) { return sp_sessions_ttl_ms_for(s, 0); }

bool sp_sessions_end_turn(sp_sessions *s, uint64_t id, uint64_t tool, sp_kv_seq *seq,
                          int64_t now_us, const sp_session_cost *cost) {
    session *x = find(s, id);
    if (!x)
        return false;
    x->last_end_us = now_us;
    x->last_use_us = now_us;
    x->tool = tool;
    double p_return;
    int64_t ttl = choose_ttl(s, hist_for(s, tool), &p_return);
    if (ttl <= 0 || x->pinned || seq->n_blocks == 0)
        return false;
    // Pin only while the expected recompute saved outweighs the memory held: holding a share
    // of the pool for the TTL counts as that share of the engine for that long.
    if (s->fixed_ttl_us < 0 && cost && cost->pool_blocks > 0 && cost->us_per_token > 0) {
        double saving_us = p_return * (double)seq->n_tokens * cost->us_per_token;
        double held_us = (double)seq->n_blocks / cost->pool_blocks * (double)ttl;
        if (saving_us < held_us)
            return false;
    }
    x->seq = *seq;
    memset(seq, 0, sizeof *seq);
    x->pinned = true;
    x->pinned_at_us = now_us;
    x->expires_us = now_us + ttl;
    s->st.pins++;
    s->st.n_pinned++;
    s->st.pinned_blocks += x->seq.n_blocks;
    return true;
}

void sp_sessions_unpin(sp_sessions *s, sp_kv_pool *pool, uint64_t id) {
    session *x = find(s, id);
    if (x && x->pinned) {
        s->st.pins_hit++;
        release_pin(s, pool, x);
    }
}

uint64_t sp_sessions_match(const sp_sessions *s, const sp_kv_seq *seq) {
    for (int32_t i = 0; i < s->capacity; i++) {
        const session *x = &s->slots[i];
        int32_t n = x->seq.n_hashed;
        if (x->pinned && n > 0 && seq->n_blocks >= n &&
            !memcmp(seq->blocks, x->seq.blocks, (size_t)n * sizeof *seq->blocks))
            return x->id;
    }
    return 0;
}

void sp_sessions_expire(sp_sessions *s, sp_kv_pool *pool, int64_t now_us) {
    if (!s->st.n_pinned)
        return;
    for (int32_t i = 0; i < s->capacity; i++) {
        session *x = &s->slots[i];
        if (x->pinned && now_us >= x->expires_us) {
            s->st.pins_expired++;
            release_pin(s, pool, x);
        }
    }
}

bool sp_sessions_reclaim_oldest(sp_sessions *s, sp_kv_pool *pool) {
    session *oldest = NULL;
    for (int32_t i = 0; i < s->capacity; i++) {
        session *x = &s->slots[i];
        if (x->pinned && (!oldest || x->pinned_at_us < oldest->pinned_at_us))
            oldest = x;
    }
    if (!oldest)
        return false;
    s->st.pins_reclaimed++;
    release_pin(s, pool, oldest);
    return true;
}

void sp_sessions_stats(const sp_sessions *s, sp_session_stats *out) { *out = s->st; }
