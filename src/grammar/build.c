/* Building grammars (build.h): rules, byte classes, UTF-8 sequences of code point classes, and
 * the checks of a finished grammar (every rule defined, no left recursion). */
#include "grammar/build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/util.h"

void sp__gr_init(sp__gr_builder *b, sp_diag *diag) {
    memset(b, 0, sizeof *b);
    b->diag = diag;
}

void sp__gr_deinit(sp__gr_builder *b) {
    for (uint32_t i = 0; i < b->n_rules; i++) {
        free(b->rules[i].v);
        free(b->names[i]);
    }
    free(b->rules);
    free(b->names);
    free(b->ref_offset);
    free(b->defined);
    free(b->name_table);
    free(b->classes);
    memset(b, 0, sizeof *b);
}

static sp_err nomem(sp__gr_builder *b, size_t offset) {
    return sp_diag_set(b->diag, SP_ERR_NOMEM, offset, "out of memory compiling the grammar");
}

static bool grow(void **p, uint32_t *cap, uint32_t need, size_t size) {
    return sp_grow(p, cap, need, size, 8);
}

/* Slot of name[len] in the name table: its entry, or the empty slot where it would go. */
static uint32_t name_slot(const sp__gr_builder *b, const char *name, size_t len) {
    uint32_t i = (uint32_t)sp_fnv1a64(name, len) & (b->name_cap - 1);
    for (;; i = (i + 1) & (b->name_cap - 1)) {
        const uint32_t e = b->name_table[i];
        if (!e || (strlen(b->names[e - 1]) == len && !memcmp(b->names[e - 1], name, len)))
            return i;
    }
}

static sp_err add_rule(sp__gr_builder *b, const char *name, size_t len, size_t offset,
                       uint32_t *id) {
    if (b->n_rules >= SP_GRAMMAR_MAX_RULES)
        return sp_diag_set(b->diag, SP_ERR_INVALID, offset,
                           "the grammar has more than %d rules (after repetitions are expanded)",
                           SP_GRAMMAR_MAX_RULES);
    if (b->n_rules == b->cap_rules) {
        const uint32_t cap = b->cap_rules ? 2 * b->cap_rules : 16;
        sp__gr_seq *rs = realloc(b->rules, cap * sizeof *rs);
        if (rs)
            b->rules = rs;
        char **nm = rs ? realloc(b->names, cap * sizeof *nm) : NULL;
        if (nm)
            b->names = nm;
        size_t *ro = nm ? realloc(b->ref_offset, cap * sizeof *ro) : NULL;
        if (ro)
            b->ref_offset = ro;
        bool *df = ro ? realloc(b->defined, cap * sizeof *df) : NULL;
        if (!df)
            return nomem(b, offset);
        b->defined = df;
        b->cap_rules = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return nomem(b, offset);
    memcpy(copy, name, len);
    copy[len] = 0;
    const uint32_t i = b->n_rules++;
    b->rules[i] = (sp__gr_seq){0};
    b->names[i] = copy;
    b->ref_offset[i] = offset;
    b->defined[i] = false;
    // The name table at most half full.
    if (2 * b->n_rules > b->name_cap) {
        const uint32_t ncap = b->name_cap ? 2 * b->name_cap : 64;
        uint32_t *t = calloc(ncap, sizeof *t);
        if (!t)
            return nomem(b, offset);
        free(b->name_table);
        b->name_table = t;
        b->name_cap = ncap;
        for (uint32_t r = 0; r < b->n_rules; r++)
            b->name_table[name_slot(b, b->names[r], strlen(b->names[r]))] = r + 1;
    } else {
        b->name_table[name_slot(b, copy, len)] = i + 1;
    }
    *id = i;
    return SP_OK;
}

sp_err sp__gr_rule(sp__gr_builder *b, const char *name, size_t len, size_t offset, uint32_t *id) {
    if (b->name_cap) {
        const uint32_t e = b->name_table[name_slot(b, name, len)];
        if (e) {
            *id = e - 1;
            return SP_OK;
        }
    }
    return add_rule(b, name, len, offset, id);
}

sp_err sp__gr_new_rule(sp__gr_builder *b, const char *base, size_t offset, uint32_t *id) {
    char name[96];
    for (uint32_t k = b->n_rules;; k++) { // a name no rule has (GBNF names have no '_')
        snprintf(name, sizeof name, "%.80s_%u", base, k);
        if (!b->name_cap || !b->name_table[name_slot(b, name, strlen(name))])
            break;
    }
    sp_err err = add_rule(b, name, strlen(name), offset, id);
    if (!err)
        b->defined[*id] = true;
    return err;
}

sp_err sp__gr_define(sp__gr_builder *b, uint32_t id, size_t offset) {
    if (b->defined[id])
        return sp_diag_set(b->diag, SP_ERR_INVALID, offset, "rule '%s' is defined twice",
                           b->names[id]);
    b->defined[id] = true;
    return SP_OK;
}

sp_err sp__gr_emit(sp__gr_builder *b, uint32_t id, sp_gr_kind kind, uint32_t arg, size_t offset) {
    if (b->n_elems >= SP_GRAMMAR_MAX_ELEMS)
        return sp_diag_set(b->diag, SP_ERR_INVALID, offset,
                           "the grammar has more than %d elements (after repetitions are "
                           "expanded)",
                           SP_GRAMMAR_MAX_ELEMS);
    sp__gr_seq *s = &b->rules[id];
    if (!grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v))
        return nomem(b, offset);
    s->v[s->n++] = (sp_gr_elem){.kind = kind, .arg = arg};
    b->n_elems++;
    return SP_OK;
}

/* The id of byte class c, added if new. */
static sp_err class_id(sp__gr_builder *b, const sp_gr_class *c, size_t offset, uint32_t *id) {
    int single = -1, count = 0;
    for (int i = 0; i < 256; i++)
        if (sp_gr_class_has(c, (unsigned)i))
            single = i, count++;
    if (count == 1 && b->single[single]) {
        *id = b->single[single] - 1;
        return SP_OK;
    }
    if (count != 1)
        for (uint32_t i = 0; i < b->n_classes; i++)
            if (!memcmp(&b->classes[i], c, sizeof *c)) {
                *id = i;
                return SP_OK;
            }
    if (!grow((void **)&b->classes, &b->cap_classes, b->n_classes + 1, sizeof *b->classes))
        return nomem(b, offset);
    b->classes[b->n_classes] = *c;
    *id = b->n_classes++;
    if (count == 1)
        b->single[single] = *id + 1;
    return SP_OK;
}

static void class_add(sp_gr_class *c, unsigned lo, unsigned hi) {
    for (unsigned x = lo; x <= hi; x++)
        c->bits[x >> 6] |= 1ull << (x & 63);
}

sp_err sp__gr_emit_bytes(sp__gr_builder *b, uint32_t id, const uint8_t *s, size_t n,
                         size_t offset) {
    for (size_t i = 0; i < n; i++) {
        sp_gr_class c = {{0}};
        class_add(&c, s[i], s[i]);
        uint32_t cid;
        sp_err err = class_id(b, &c, offset, &cid);
        if (err || (err = sp__gr_emit(b, id, SP_GR_BYTES, cid, offset)))
            return err;
    }
    return SP_OK;
}

static int cmp_range(const void *a, const void *b) {
    const sp__gr_range *x = a, *y = b;
    return (x->lo > y->lo) - (x->lo < y->lo);
}

static int utf8_len(uint32_t cp) {
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

static void utf8_encode(uint32_t cp, int n, uint8_t *out) {
    static const uint8_t lead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
    for (int i = n - 1; i > 0; i--, cp >>= 6)
        out[i] = (uint8_t)(0x80 | (cp & 0x3F));
    out[0] = (uint8_t)(lead[n] | cp);
}

/* Emits, as alternatives of rule id, the UTF-8 byte sequences of code points [lo, hi] (all of
 * one encoded length n > 1): the range is split until each piece is a product of byte ranges
 * (the classic construction: a piece whose trailing 6k bits do not span their whole range at
 * its ends is split there). *first tells whether an ALT must precede. */
static sp_err emit_utf8(sp__gr_builder *b, uint32_t id, uint32_t lo, uint32_t hi, int n,
                        bool *first, size_t offset) {
    for (int i = 1; i < n; i++) {
        const uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if (lo & m) {
                sp_err err = emit_utf8(b, id, lo, lo | m, n, first, offset);
                return err ? err : emit_utf8(b, id, (lo | m) + 1, hi, n, first, offset);
            }
            if ((hi & m) != m) {
                sp_err err = emit_utf8(b, id, lo, (hi & ~m) - 1, n, first, offset);
                return err ? err : emit_utf8(b, id, hi & ~m, hi, n, first, offset);
            }
        }
    }
    uint8_t a[4], z[4];
    utf8_encode(lo, n, a);
    utf8_encode(hi, n, z);
    sp_err err = SP_OK;
    if (!*first)
        err = sp__gr_emit(b, id, SP_GR_ALT, 0, offset);
    *first = false;
    for (int i = 0; i < n && !err; i++) {
        sp_gr_class c = {{0}};
        class_add(&c, a[i], z[i]);
        uint32_t cid;
        if (!(err = class_id(b, &c, offset, &cid)))
            err = sp__gr_emit(b, id, SP_GR_BYTES, cid, offset);
    }
    return err;
}

sp_err sp__gr_emit_class(sp__gr_builder *b, uint32_t id, sp__gr_range *r, size_t n, bool negated,
                         size_t offset) {
    // Sorted, merged, complemented if negated, surrogates (not scalar values) removed.
    qsort(r, n, sizeof *r, cmp_range);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m && r[i].lo <= r[m - 1].hi + 1)
            r[m - 1].hi = SP_MAX(r[m - 1].hi, r[i].hi);
        else
            r[m++] = r[i];
    }
    if (m > 62)
        return sp_diag_set(b->diag, SP_ERR_INVALID, offset,
                           "a character class has more than 62 ranges");
    // The complement of m ranges has at most m + 1; splitting off the surrogates adds one.
    sp__gr_range tmp[64], set[66];
    size_t nt = 0, ns = 0;
    if (negated) {
        uint32_t next = 0;
        for (size_t i = 0; i < m && next <= 0x10FFFF; i++) {
            if (r[i].lo > next)
                tmp[nt++] = (sp__gr_range){next, r[i].lo - 1};
            next = r[i].hi + 1;
        }
        if (next <= 0x10FFFF)
            tmp[nt++] = (sp__gr_range){next, 0x10FFFF};
    } else {
        for (size_t i = 0; i < m; i++)
            tmp[nt++] = r[i];
    }
    for (size_t i = 0; i < nt; i++) {
        sp__gr_range x = tmp[i];
        if (x.hi > 0x10FFFF)
            x.hi = 0x10FFFF;
        if (x.lo > x.hi)
            continue;
        if (x.lo < 0xD800 && x.hi > 0xDFFF) {
            set[ns++] = (sp__gr_range){x.lo, 0xD7FF};
            set[ns++] = (sp__gr_range){0xE000, x.hi};
        } else if (x.lo >= 0xD800 && x.hi <= 0xDFFF) {
            continue;
        } else {
            if (x.lo >= 0xD800 && x.lo <= 0xDFFF)
                x.lo = 0xE000;
            if (x.hi >= 0xD800 && x.hi <= 0xDFFF)
                x.hi = 0xD7FF;
            if (x.lo <= x.hi)
                set[ns++] = x;
        }
    }
    if (ns == 0)
        return sp_diag_set(b->diag, SP_ERR_INVALID, offset,
                           "a character class that matches no character");
    sp_gr_class ascii = {{0}};
    bool has_ascii = false, has_multi = false;
    for (size_t i = 0; i < ns; i++) {
        if (set[i].lo < 0x80)
            class_add(&ascii, set[i].lo, SP_MIN(set[i].hi, 0x7Fu)), has_ascii = true;
        has_multi |= set[i].hi >= 0x80;
    }
    uint32_t cid;
    sp_err err;
    if (!has_multi) {
        if ((err = class_id(b, &ascii, offset, &cid)))
            return err;
        return sp__gr_emit(b, id, SP_GR_BYTES, cid, offset);
    }
    uint32_t sub;
    if ((err = sp__gr_new_rule(b, b->names[id], offset, &sub)))
        return err;
    bool first = true;
    if (has_ascii) {
        if ((err = class_id(b, &ascii, offset, &cid)) ||
            (err = sp__gr_emit(b, sub, SP_GR_BYTES, cid, offset)))
            return err;
        first = false;
    }
    static const uint32_t bound[5] = {0, 0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
    for (size_t i = 0; i < ns; i++)
        for (int len = 2; len <= 4; len++) {
            const uint32_t lo = SP_MAX(set[i].lo, bound[len - 1] + 1),
                           hi = SP_MIN(set[i].hi, bound[len]);
            if (lo <= hi && utf8_len(lo) == len &&
                (err = emit_utf8(b, sub, lo, hi, len, &first, offset)))
                return err;
        }
    return sp__gr_emit(b, id, SP_GR_REF, sub, offset);
}

/* ---- finishing ------------------------------------------------------------------------------ */

/* Left recursion: rule r's alternatives "start with" the rules they reference before the first
 * byte (skipping nullable rules); a cycle in that relation is a rule reaching itself without
 * consuming input. Depth-first search with colours (0 new, 1 on the path, 2 done); returns the
 * rule found on a cycle, or UINT32_MAX. */
static uint32_t left_cycle(const sp_grammar *g, const bool *nullable, uint8_t *colour, uint32_t r) {
    colour[r] = 1;
    for (uint32_t a = g->rule_alt[r]; a < g->rule_alt[r + 1]; a++)
        for (uint32_t p = g->alt_start[a]; g->elems[p].kind == SP_GR_REF; p++) {
            const uint32_t t = g->elems[p].arg;
            if (colour[t] == 1)
                return t;
            if (colour[t] == 0) {
                const uint32_t c = left_cycle(g, nullable, colour, t);
                if (c != UINT32_MAX)
                    return c;
            }
            if (!nullable[t])
                break;
        }
    colour[r] = 2;
    return UINT32_MAX;
}

sp_err sp__gr_finish(sp__gr_builder *b, uint32_t root, uint64_t hash, sp_grammar **out) {
    for (uint32_t i = 0; i < b->n_rules; i++)
        if (!b->defined[i])
            return sp_diag_set(b->diag, SP_ERR_INVALID, b->ref_offset[i],
                               "rule '%s' is used but not defined", b->names[i]);
    sp_grammar *g = calloc(1, sizeof *g);
    if (g)
        atomic_init(&g->refs, 1);
    uint32_t n_alts = 0;
    for (uint32_t i = 0; i < b->n_rules; i++) {
        n_alts++;
        for (uint32_t k = 0; k < b->rules[i].n; k++)
            n_alts += b->rules[i].v[k].kind == SP_GR_ALT;
    }
    const uint64_t n_elems = b->n_elems + b->n_rules; // and an END each
    if (g) {
        g->elems = malloc(n_elems * sizeof *g->elems);
        g->rule_start = malloc(b->n_rules * sizeof *g->rule_start);
        g->rule_alt = malloc((b->n_rules + 1) * sizeof *g->rule_alt);
        g->alt_start = malloc(n_alts * sizeof *g->alt_start);
    }
    if (!g || !g->elems || !g->rule_start || !g->rule_alt || !g->alt_start) {
        sp_grammar_release(g); // the names are still the builder's
        return nomem(b, 0);
    }
    uint32_t e = 0, a = 0;
    for (uint32_t i = 0; i < b->n_rules; i++) {
        g->rule_start[i] = e;
        g->rule_alt[i] = a;
        g->alt_start[a++] = e;
        for (uint32_t k = 0; k < b->rules[i].n; k++) {
            g->elems[e++] = b->rules[i].v[k];
            if (b->rules[i].v[k].kind == SP_GR_ALT)
                g->alt_start[a++] = e;
        }
        g->elems[e++] = (sp_gr_elem){.kind = SP_GR_END};
    }
    g->rule_alt[b->n_rules] = a;
    g->n_elems = e;
    g->n_alts = a;
    g->n_rules = b->n_rules;
    g->root = root;
    g->hash = hash;
    // The names and classes move to the grammar.
    g->rule_names = b->names;
    g->classes = b->classes;
    g->n_classes = b->n_classes;
    b->names = NULL;
    b->classes = NULL;
    b->n_classes = b->cap_classes = 0;
    for (uint32_t i = 0; i < b->n_rules; i++)
        free(b->rules[i].v);
    free(b->rules);
    b->rules = NULL;
    b->n_rules = b->cap_rules = 0;

    // Nullable rules (a fixed point), then left recursion.
    bool *nullable = calloc(g->n_rules, sizeof *nullable);
    uint8_t *colour = calloc(g->n_rules, 1);
    if (!nullable || !colour) {
        free(nullable);
        free(colour);
        sp_grammar_release(g);
        return nomem(b, 0);
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (uint32_t r = 0; r < g->n_rules; r++)
            for (uint32_t k = g->rule_alt[r]; k < g->rule_alt[r + 1] && !nullable[r]; k++) {
                uint32_t p = g->alt_start[k];
                while (g->elems[p].kind == SP_GR_REF && nullable[g->elems[p].arg])
                    p++;
                if (g->elems[p].kind == SP_GR_ALT || g->elems[p].kind == SP_GR_END)
                    nullable[r] = changed = true;
            }
    }
    uint32_t cyc = UINT32_MAX;
    for (uint32_t r = 0; r < g->n_rules && cyc == UINT32_MAX; r++)
        if (!colour[r])
            cyc = left_cycle(g, nullable, colour, r);
    free(nullable);
    free(colour);
    if (cyc != UINT32_MAX) {
        sp_err err = sp_diag_set(b->diag, SP_ERR_INVALID, b->ref_offset[cyc],
                                 "rule '%s' is left-recursive (it can reach itself before any "
                                 "character): rewrite it with a repetition, e.g. "
                                 "`list ::= item (\",\" item)*`",
                                 g->rule_names[cyc]);
        sp_grammar_release(g);
        return err;
    }
    *out = g;
    return SP_OK;
}

sp_grammar *sp_grammar_ref(sp_grammar *g) {
    if (g)
        atomic_fetch_add(&g->refs, 1);
    return g;
}

void sp_grammar_release(sp_grammar *g) {
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    for (uint32_t i = 0; g->rule_names && i < g->n_rules; i++)
        free(g->rule_names[i]);
    free(g->rule_names);
    free(g->elems);
    free(g->rule_start);
    free(g->rule_alt);
    free(g->alt_start);
    free(g->classes);
    free(g);
}
