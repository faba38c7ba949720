/* Grammars for constrained decoding: a context-free grammar over bytes, compiled from GBNF text
 * (llama.cpp's grammar format) or built in (any JSON value), and immutable once built, so one
 * grammar serves every request that uses it, from any thread.
 *
 * The compiled form. A grammar is a list of rules; a rule is a list of alternatives, each a
 * sequence of elements; an element is a reference to a rule or a byte class (a set of bytes).
 * Everything is bytes: a GBNF character class over code points is compiled into the
 * alternatives of UTF-8 byte sequences that spell its code points (the way regular-expression
 * engines compile Unicode ranges), so that a matcher advances one byte at a time and a token is
 * checked by feeding it its bytes, wherever the token boundaries fall inside characters.
 * Repetitions (x*, x+, x?, x{m,n}) become rules: x* is `r ::= x r | ` (a tail call, which a
 * matcher runs without growing its stack).
 *
 * All of a grammar's elements live in one array: rule i's alternatives start at rule_start[i],
 * each ends with an ALT element and the last with END. A matcher's position is an index into
 * that array. */
#ifndef SP_GRAMMAR_GRAMMAR_H
#define SP_GRAMMAR_GRAMMAR_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

enum {
    SP_GRAMMAR_MAX_RULES = 1 << 16,  // rules after repetitions are expanded
    SP_GRAMMAR_MAX_ELEMS = 1 << 22,  // elements in all
    SP_GRAMMAR_MAX_REPEAT = 1 << 12, // the largest m or n of x{m,n}
    SP_GRAMMAR_MAX_NESTING = 64,     // parentheses inside each other
    SP_GRAMMAR_MAX_TEXT = 1 << 20,   // bytes of GBNF text
};

typedef enum sp_gr_kind {
    SP_GR_END = 0, // the end of a rule's last alternative
    SP_GR_ALT,     // the end of an alternative that another follows
    SP_GR_REF,     // a reference to rule arg
    SP_GR_BYTES,   // one byte of byte class arg
} sp_gr_kind;

typedef struct sp_gr_elem {
    uint32_t kind : 2;
    uint32_t arg : 30;
} sp_gr_elem;

/* A set of bytes: bit b of bits[b / 64]. */
typedef struct sp_gr_class {
    uint64_t bits[4];
} sp_gr_class;

typedef struct sp_grammar {
    sp_gr_elem *elems; // (n_elems) every rule's alternatives
    uint32_t n_elems;
    uint32_t *rule_start; // (n_rules) index of each rule's first element
    uint32_t *rule_alt;   // (n_rules + 1) rule i's alternatives: alt_start[rule_alt[i] ..
                          // rule_alt[i + 1])
    uint32_t *alt_start;  // (n_alts) index of each alternative's first element
    uint32_t n_alts;
    char **rule_names; // (n_rules) GBNF names; generated rules are named after their origin
    uint32_t n_rules;
    sp_gr_class *classes; // (n_classes) the byte classes
    uint32_t n_classes;
    uint32_t root; // the start rule
    uint64_t hash; // of the source (the grammar cache's key)
    atomic_int refs;
} sp_grammar;

/* Compiles GBNF text (text[len], not NUL-terminated) into a grammar whose start rule is `root`.
 * The syntax is llama.cpp's: `name ::= alternatives` rules (names of letters, digits and '-'),
 * alternatives separated by '|', sequences of "literals", [classes] ([^...] negated, a-z
 * ranges), '.' (any character), rule names, ( groups ), and the repetitions *, +, ?, {m},
 * {m,}, {m,n}; escapes \n \r \t \\ \" \' \[ \] \- \^ \xHH \uHHHH \UHHHHHHHH; # comments; a
 * rule ends at a line break outside parentheses. Rejected, with the byte offset in
 * diag->offset and a message naming what is wrong: syntax errors, invalid UTF-8, a rule used but
 * not defined or defined twice, no `root` rule, left recursion (a rule that can reach itself
 * without consuming a byte, which a top-down matcher cannot run), an empty class, repetition
 * counts above SP_GRAMMAR_MAX_REPEAT, more than SP_GRAMMAR_MAX_NESTING nested groups, and
 * grammars over the size limits above. On success *out has one reference. */
SP_MUST_USE sp_err sp_grammar_from_gbnf(const char *text, size_t len, sp_grammar **out,
                                        sp_diag *diag);

/* The GBNF text of the built-in grammar of a JSON object (RFC 8259; whitespace limited as
 * llama.cpp's json.gbnf does, a space or a line break and indentation between tokens, so that a
 * model cannot fill its output with blanks), and the grammar itself (one reference). */
extern const char sp_grammar_json_gbnf[];
SP_MUST_USE sp_err sp_grammar_json_object(sp_grammar **out, sp_diag *diag);

/* References: a grammar is freed when its last reference is released; NULL is a no-op. */
sp_grammar *sp_grammar_ref(sp_grammar *g);
void sp_grammar_release(sp_grammar *g);

/* Whether byte b is in class c. */
static inline int sp_gr_class_has(const sp_gr_class *c, unsigned b) {
    return (int)((c->bits[b >> 6] >> (b & 63)) & 1);
}

#endif
