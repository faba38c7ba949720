#include "sample/stop.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A trie node of the Aho-Corasick automaton. Node 0 is the root (the empty string). */
typedef struct node {
    int32_t depth;        // length of the string this node spells
    int32_t fail;         // longest proper suffix of this string that is also a node
    int32_t out;          // deepest node on the fail chain, self included, that ends a stop
                          // string, or -1
    int32_t term;         // index of the stop string spelled exactly by this node, or -1
    int32_t first_child;  // children as a sibling list (-1 = none)
    int32_t next_sibling;
    uint8_t label;        // the byte leading here from the parent
} node;

struct sp_stop {
    node *nodes; // (n_nodes) the trie
    int32_t n_nodes;
    int32_t root_next[256]; // transitions out of the root, complete (0 = stay at the root)

    int32_t state;     // longest suffix of the text that is a prefix of a stop string
    uint64_t total;    // bytes fed
    uint64_t released; // bytes released to the caller
    int32_t matched;   // stop index, or -1
    bool finished;
};

static int32_t child(const sp_stop *m, int32_t v, uint8_t c) {
    if (v == 0)
        return m->root_next[c] > 0 ? m->root_next[c] : -1;
    for (int32_t k = m->nodes[v].first_child; k >= 0; k = m->nodes[k].next_sibling)
        if (m->nodes[k].label == c)
            return k;
    return -1;
}

// The automaton's transition: follow fail links until some node has a child labelled c.
static int32_t step(const sp_stop *m, int32_t v, uint8_t c) {
    for (;;) {
        int32_t k = child(m, v, c);
        if (k >= 0)
            return k;
        if (v == 0)
            return 0;
        v = m->nodes[v].fail;
    }
}

// Names the "stop" parameter in a diagnostic already filled by sp_diag_set.
static sp_err stop_param(sp_diag *d, sp_err err) {
    if (d)
        snprintf(d->param, sizeof d->param, "stop");
    return err;
}

sp_err sp_stop_create(const char *const *stops, int32_t n_stops, sp_stop **out, sp_diag *d) {
    SP_ASSERT(out);
    if (n_stops < 0 || n_stops > SP_STOP_MAX_STRINGS)
        return stop_param(d, sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX,
                                             "at most %d stop strings are allowed",
                                             SP_STOP_MAX_STRINGS));
    if (n_stops > 0 && !stops)
        return stop_param(d, sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX,
                                         "%d stop strings but no array", (int)n_stops));
    size_t total_len = 0;
    for (int32_t i = 0; i < n_stops; i++) {
        if (!stops[i] || !stops[i][0])
            return stop_param(d, sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX,
                                             "stop string %d is empty", (int)i));
        size_t len = strnlen(stops[i], SP_STOP_MAX_BYTES + 1);
        if (len > SP_STOP_MAX_BYTES)
            return stop_param(d, sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX,
                                             "stop string %d is longer than %d bytes",
                                             (int)i, SP_STOP_MAX_BYTES));
        total_len += len;
    }

    sp_stop *m = calloc(1, sizeof *m);
    int32_t *queue = NULL;
    if (!m)
        return SP_ERR_NOMEM;
    // total_len <= 64 * 4096, so the node count fits easily.
    m->nodes = malloc((total_len + 1) * sizeof *m->nodes);
    queue = malloc((total_len + 1) * sizeof *queue);
    if (!m->nodes || !queue)
        goto fail;
    m->nodes[0] = (node){.depth = 0, .fail = 0, .out = -1, .term = -1, .first_child = -1,
                         .next_sibling = -1};
    m->n_nodes = 1;

    // The trie.
    for (int32_t i = 0; i < n_stops; i++) {
        int32_t v = 0;
        for (const uint8_t *p = (const uint8_t *)stops[i]; *p; p++) {
            int32_t k = child(m, v, *p);
            if (k < 0) {
                k = m->n_nodes++;
                m->nodes[k] = (node){.depth = m->nodes[v].depth + 1, .fail = 0, .out = -1,
                                     .term = -1, .first_child = -1, .next_sibling = -1,
                                     .label = *p};
                if (v == 0) {
                    m->root_next[*p] = k;
                } else {
                    m->nodes[k].next_sibling = m->nodes[v].first_child;
                    m->nodes[v].first_child = k;
                }
            }
            v = k;
        }
        if (m->nodes[v].term < 0) // duplicates: the lowest index
            m->nodes[v].term = i;
    }

    // Fail and output links, breadth first so that shallower nodes are done first.
    int32_t head = 0, tail = 0;
    for (int c = 0; c < 256; c++) {
        int32_t k = m->root_next[c];
        if (k > 0) {
            m->nodes[k].fail = 0;
            queue[tail++] = k;
        }
    }
    while (head < tail) {
        int32_t v = queue[head++];
        node *nv = &m->nodes[v];
        nv->out = nv->term >= 0 ? v : m->nodes[nv->fail].out;
        for (int32_t k = nv->first_child; k >= 0; k = m->nodes[k].next_sibling) {
            m->nodes[k].fail = step(m, nv->fail, m->nodes[k].label);
            queue[tail++] = k;
        }
    }
    free(queue);
    m->matched = -1;
    *out = m;
    return SP_OK;

fail:
    free(queue);
    sp_stop_destroy(m);
    return SP_ERR_NOMEM;
}

void sp_stop_destroy(sp_stop *m) {
    if (!m)
        return;
    free(m->nodes);
    free(m);
}

void sp_stop_reset(sp_stop *m) {
    SP_ASSERT(m);
    m->state = 0;
    m->total = 0;
    m->released = 0;
    m->matched = -1;
    m->finished = false;
}

void sp_stop_feed(sp_stop *m, const char *text, size_t len, sp_stop_status *out) {
    SP_ASSERT(m && out && (text || len == 0));
    SP_ASSERT(!m->finished);
    if (m->matched < 0) {
        const uint64_t released_before = m->released;
        int32_t v = m->state;
        for (size_t i = 0; i < len; i++) {
            v = step(m, v, (uint8_t)text[i]);
            m->total++;
            int32_t o = m->nodes[v].out;
            if (o >= 0) {
                // The deepest terminal on the chain is the longest stop ending here.
                m->matched = m->nodes[o].term;
                m->released = m->total - (uint64_t)m->nodes[o].depth;
                break;
            }
        }
        m->state = v;
        if (m->matched < 0)
            m->released = m->total - (uint64_t)m->nodes[v].depth;
        // Held bytes were always withheld before, so the released offset never goes back.
        SP_ASSERT(m->released >= released_before);
        out->stop = m->matched;
        out->emit_bytes = (size_t)(m->released - released_before);
        out->hold_bytes = m->matched < 0 ? (size_t)m->nodes[v].depth : 0;
        out->cut_offset = m->released;
        return;
    }
    out->stop = m->matched;
    out->emit_bytes = 0;
    out->hold_bytes = 0;
    out->cut_offset = m->released;
}

size_t sp_stop_finish(sp_stop *m) {
    SP_ASSERT(m);
    m->finished = true;
    if (m->matched >= 0)
        return 0;
    size_t n = (size_t)(m->total - m->released);
    m->released = m->total;
    return n;
}
