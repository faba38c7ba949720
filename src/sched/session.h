/* Multi-turn sessions and time-to-live pinning of their KV cache (Continuum).
 *
 * An agent or a chat comes back after each turn with a prompt that contains everything so far.
 * When a turn ends, its KV blocks can stay pinned (held, not evictable) for a time-to-live, so
 * the next turn finds its prefix in the cache instead of recomputing it. Pins are chosen from
 * the observed gaps between turns: the TTL is the 90th percentile of recent gaps, capped; a
 * turn is pinned only if its session is likely to come back within that TTL (more than half of
 * the recorded gaps are shorter than it), unless a fixed TTL is configured. Pins expire when
 * their TTL passes (then the blocks are merely cached: evictable, least recently used first),
 * are released when the next turn is admitted (it holds the blocks itself then), and are given
 * up oldest first when admission needs memory.
 *
 * A returning turn keeps the arrival order of its session's first turn (program-level
 * first-come-first-served). The table has a fixed capacity; an unpinned session is forgotten
 * first when it is full. Owned by the engine thread. */
#ifndef SP_SCHED_SESSION_H
#define SP_SCHED_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "kv/pool.h"
#include "kv/table.h"

typedef struct sp_sessions sp_sessions;

typedef struct sp_session_stats {
    uint64_t turns;          // turns seen with a session id (or matched by history)
    uint64_t pins;           // turns whose KV was pinned
    uint64_t pins_hit;       // pins released by a returning turn
    uint64_t pins_expired;   // pins that reached their TTL unused
    uint64_t pins_reclaimed; // pins given up for memory
    int32_t n_pinned;        // sessions pinned now
    int32_t pinned_blocks;   // blocks those pins hold (shared blocks counted once per pin)
} sp_session_stats;

/* capacity: sessions remembered; fixed_ttl_ms > 0 pins every turn for that long, 0 never pins
 * (sessions still keep their queue order), -1 chooses the TTL from the gaps; cap_ttl_ms bounds
 * the chosen TTL. */
sp_err sp_sessions_create(int32_t capacity, int64_t fixed_ttl_ms, int64_t cap_ttl_ms,
                          sp_sessions **out) SP_MUST_USE;
/* Releases every pin into pool and frees; NULL ok. */
void sp_sessions_destroy(sp_sessions *s, sp_kv_pool *pool);

/* A turn of session id (non-zero) arrives with arrival number `arrival`: returns the arrival
 * number the turn should be ordered by (its session's first), and records the gap since the
 * session's last turn ended. */
uint64_t sp_sessions_arrive(sp_sessions *s, uint64_t id, uint64_t arrival, int64_t now_us);

/* What pinning costs and saves, for the decision: the engine's recent cost of computing one
 * prompt token and the pool's size. */
typedef struct sp_session_cost {
    double us_per_token;
    int32_t pool_blocks;
} sp_session_cost;

/* The turn of session id ended, waiting on `tool` (0: none named), with the blocks of *seq.
 * The TTL comes from the gaps recorded for that tool (once it has a few), else for all
 * sessions. With a chosen (not fixed) TTL, the turn is pinned only if the expected saving,
 * P(return within TTL) x its tokens x cost->us_per_token, is at least the memory held,
 * (its blocks / pool_blocks) x TTL (cost may be NULL: no such check). Pinning moves *seq into
 * the table (*seq is left empty, its table memory handed over); otherwise *seq stays the
 * caller's. Returns true if it pinned. */
bool sp_sessions_end_turn(sp_sessions *s, uint64_t id, uint64_t tool, sp_kv_seq *seq,
                          int64_t now_us, const sp_session_cost *cost);

/* The next turn of session id now holds its blocks: releases the pin, if any. */
void sp_sessions_unpin(sp_sessions *s, sp_kv_pool *pool, uint64_t id);

/* For a turn without a session id: the pinned session whose blocks are a prefix of seq's (the
 * chat history matched), or 0. */
uint64_t sp_sessions_match(const sp_sessions *s, const sp_kv_seq *seq);

/* Releases pins whose TTL has passed. */
void sp_sessions_expire(sp_sessions *s, sp_kv_pool *pool, int64_t now_us);

/* Releases the oldest pin (for memory); false if nothing is pinned. */
bool sp_sessions_reclaim_oldest(sp_sessions *s, sp_kv_pool *pool);

void sp_sessions_stats(const sp_sessions *s, sp_session_stats *out);

/* The TTL (ms) a turn would be pinned for now, or -1 if it would not be pinned (before the
 * cost check), for turns waiting on tool (0: none named). */
int64_t sp_sessions_ttl_ms(const sp_sessions *s);
int64_t sp_sessions_ttl_ms_for(const sp_sessions *s, uint64_t tool);

#endif
