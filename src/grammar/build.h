/* Building a grammar (grammar.h) rule by rule: what the GBNF parser, and any other front end,
 * emits into. Rules are referred to by id; a rule can be referenced before it is defined. Code
 * point classes are compiled here into UTF-8 byte sequences. Errors carry the byte offset in
 * the source that the front end gives with each call. */
#ifndef SP_GRAMMAR_BUILD_H
#define SP_GRAMMAR_BUILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "grammar/grammar.h"

/* A code point range [lo, hi]. */
typedef struct sp__gr_range {
    uint32_t lo, hi;
} sp__gr_range;

typedef struct sp__gr_seq {
    sp_gr_elem *v; // (n, cap) the elements of one rule's alternatives, as they are emitted
    uint32_t n, cap;
} sp__gr_seq;

typedef struct sp__gr_builder {
    sp__gr_seq *rules;  // (n_rules, cap_rules) each rule's elements, ALT-separated, no END
    char **names;       // (n_rules)
    size_t *ref_offset; // (n_rules) where the rule was first referenced (for errors)
    bool *defined;      // (n_rules)
    uint32_t n_rules, cap_rules;
    uint32_t *name_table; // (name_cap) open addressing: rule id + 1, 0 empty
    uint32_t name_cap;
    sp_gr_class *classes; // (n_classes, cap_classes)
    uint32_t n_classes, cap_classes;
    uint32_t single[256]; // class id + 1 of the class of one byte, 0 if none yet
    uint64_t n_elems;     // in all rules
    sp_diag *diag;
} sp__gr_builder;

void sp__gr_init(sp__gr_builder *b, sp_diag *diag);
void sp__gr_deinit(sp__gr_builder *b);

/* The id of the rule named name[len], created (undefined) if new; referenced at offset.
 * Returns SP_ERR_NOMEM or SP_ERR_INVALID (too many rules) after filling the diagnostic. */
SP_MUST_USE sp_err sp__gr_rule(sp__gr_builder *b, const char *name, size_t len, size_t offset,
                               uint32_t *id);

/* A new rule, already defined, named after `base` with a numeric suffix. */
SP_MUST_USE sp_err sp__gr_new_rule(sp__gr_builder *b, const char *base, size_t offset,
                                   uint32_t *id);

/* Marks rule id defined; SP_ERR_INVALID if it already was. */
SP_MUST_USE sp_err sp__gr_define(sp__gr_builder *b, uint32_t id, size_t offset);

/* Appends an element to rule id's current alternative (ALT starts the next one). */
SP_MUST_USE sp_err sp__gr_emit(sp__gr_builder *b, uint32_t id, sp_gr_kind kind, uint32_t arg,
                               size_t offset);

/* Appends the bytes of one byte string (each a one-byte class). */
SP_MUST_USE sp_err sp__gr_emit_bytes(sp__gr_builder *b, uint32_t id, const uint8_t *s, size_t n,
                                     size_t offset);

/* Appends what matches one code point of the union of ranges r[n] (any order, may overlap;
 * negated: its complement in the Unicode scalar values): one byte class when all of them are
 * ASCII, else a reference to a new rule of their UTF-8 byte sequences. SP_ERR_INVALID for an
 * empty set. */
SP_MUST_USE sp_err sp__gr_emit_class(sp__gr_builder *b, uint32_t id, sp__gr_range *r, size_t n,
                                     bool negated, size_t offset);

/* The finished grammar with start rule `root`: every referenced rule defined, no left
 * recursion. On success *out has one reference and the builder is left empty (deinit it all
 * the same). */
SP_MUST_USE sp_err sp__gr_finish(sp__gr_builder *b, uint32_t root, uint64_t hash, sp_grammar **out);

#endif
