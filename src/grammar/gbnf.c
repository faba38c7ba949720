/* The GBNF front end (grammar.h: sp_grammar_from_gbnf): a recursive-descent parser emitting
 * into the grammar builder. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/util.h"
#include "grammar/build.h"

typedef struct parser {
    const char *s;
    size_t n, pos;
    int depth; // groups open
    sp__gr_builder *b;
} parser;

static sp_err fail(parser *p, size_t at, const char *what) {
    return sp_diag_set(p->b->diag, SP_ERR_INVALID, at, "grammar error at byte %zu: %s", at, what);
}

static int peek(const parser *p) {
    return p->pos < p->n ? (unsigned char)p->s[p->pos] : -1;
}

static bool is_word(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

/* Blanks and # comments; line breaks too when newline_ok. */
static void skip_space(parser *p, bool newline_ok) {
    while (p->pos < p->n) {
        const char c = p->s[p->pos];
        if (c == '#') {
            while (p->pos < p->n && p->s[p->pos] != '\n' && p->s[p->pos] != '\r')
                p->pos++;
        } else if (c == ' ' || c == '\t' || (newline_ok && (c == '\n' || c == '\r'))) {
            p->pos++;
        } else {
            break;
        }
    }
}

static int hex(int c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* One character of a literal or class, escapes decoded, UTF-8 validated: its code point. */
static sp_err parse_char(parser *p, uint32_t *cp) {
    const size_t at = p->pos;
    const unsigned char *u = (const unsigned char *)p->s;
    if (p->pos >= p->n)
        return fail(p, at, "the text ends inside a literal or class");
    if (u[p->pos] == '\\') {
        if (++p->pos >= p->n)
            return fail(p, at, "the text ends inside an escape");
        const char e = p->s[p->pos++];
        int digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (digits) {
            uint32_t v = 0;
            for (int i = 0; i < digits; i++) {
                const int h = p->pos < p->n ? hex(u[p->pos]) : -1;
                if (h < 0)
                    return fail(p, at, "an escape \\x, \\u or \\U needs 2, 4 or 8 hex digits");
                v = v * 16 + (uint32_t)h;
                p->pos++;
            }
            if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
                return fail(p, at, "an escape names no Unicode character");
            *cp = v;
            return SP_OK;
        }
        switch (e) {
        case 'n':
            *cp = '\n';
            break;
        case 'r':
            *cp = '\r';
            break;
        case 't':
            *cp = '\t';
            break;
        case '\\':
        case '"':
        case '\'':
        case '[':
        case ']':
        case '-':
        case '^':
        case '/':
            *cp = (uint32_t)e;
            break;
        default:
            return fail(p, at,
                        "unknown escape (known: \\n \\r \\t \\\\ \\\" \\' \\[ \\] \\- "
                        "\\^ \\/ \\xHH \\uHHHH \\UHHHHHHHH)");
        }
        return SP_OK;
    }
    const unsigned c = u[p->pos];
    const int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || p->pos + (size_t)len > p->n)
        return fail(p, at, "invalid UTF-8");
    uint32_t v = len == 1 ? c : c & (0x7Fu >> len);
    for (int i = 1; i < len; i++) {
        if ((u[p->pos + (size_t)i] & 0xC0) != 0x80)
            return fail(p, at, "invalid UTF-8");
        v = (v << 6) | (u[p->pos + (size_t)i] & 0x3F);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return fail(p, at, "invalid UTF-8");
    p->pos += (size_t)len;
    *cp = v;
    return SP_OK;
}

static size_t encode(uint32_t cp, uint8_t *out) {
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    const size_t n = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    static const uint8_t lead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
    for (size_t i = n - 1; i > 0; i--, cp >>= 6)
        out[i] = (uint8_t)(0x80 | (cp & 0x3F));
    out[0] = (uint8_t)(lead[n] | cp);
    return n;
}

static sp_err parse_alternates(parser *p, uint32_t rule, bool nested);

/* Parses a repetition operator at p->pos, applied to the elements of `rule` from `start` on
 * (the last symbol): they are replaced by their m copies and the rule of the rest. */
static sp_err parse_repeat(parser *p, uint32_t rule, uint32_t start) {
    const size_t at = p->pos;
    const char op = p->s[p->pos++];
    uint64_t m = 0, n = UINT64_MAX;
    if (op == '+')
        m = 1;
    else if (op == '?')
        n = 1;
    else if (op == '{') {
        skip_space(p, true);
        int c = peek(p);
        if (!(c >= '0' && c <= '9'))
            return fail(p, at, "a repetition {m,n} needs a count");
        while ((c = peek(p)) >= '0' && c <= '9' && m <= SP_GRAMMAR_MAX_REPEAT)
            m = m * 10 + (uint64_t)(c - '0'), p->pos++;
        n = m;
        skip_space(p, true);
        if (peek(p) == ',') {
            p->pos++;
            skip_space(p, true);
            n = UINT64_MAX;
            if ((c = peek(p)) >= '0' && c <= '9') {
                n = 0;
                while ((c = peek(p)) >= '0' && c <= '9' && n <= SP_GRAMMAR_MAX_REPEAT)
                    n = n * 10 + (uint64_t)(c - '0'), p->pos++;
            }
            skip_space(p, true);
        }
        if (peek(p) != '}')
            return fail(p, at, "a repetition {m,n} is not closed by '}'");
        p->pos++;
        if (m > SP_GRAMMAR_MAX_REPEAT || (n != UINT64_MAX && n > SP_GRAMMAR_MAX_REPEAT))
            return fail(p, at, "a repetition count is above 4096");
        if (n < m)
            return fail(p, at, "a repetition {m,n} has n < m");
    }
    sp__gr_builder *b = p->b;
    sp__gr_seq *seq = &b->rules[rule];
    const uint32_t len = seq->n - start;
    sp_gr_elem *item = malloc((len ? len : 1) * sizeof *item);
    if (!item)
        return sp_diag_set(b->diag, SP_ERR_NOMEM, at, "out of memory compiling the grammar");
    if (len)
        memcpy(item, seq->v + start, len * sizeof *item);
    seq->n = start;
    b->n_elems -= len;
    sp_err err = SP_OK;
#define EMIT_ITEM(r)                                                                               \
    for (uint32_t i_ = 0; i_ < len && !err; i_++)                                                  \
        err = sp__gr_emit(b, (r), item[i_].kind, item[i_].arg, at);
    for (uint64_t k = 0; k < m && !err; k++)
        EMIT_ITEM(rule)
    if (!err && n == UINT64_MAX) { // r ::= item r |
        uint32_t r;
        if (!(err = sp__gr_new_rule(b, b->names[rule], at, &r))) {
            EMIT_ITEM(r)
            if (!err && !(err = sp__gr_emit(b, r, SP_GR_REF, r, at)) &&
                !(err = sp__gr_emit(b, r, SP_GR_ALT, 0, at)))
                err = sp__gr_emit(b, rule, SP_GR_REF, r, at);
        }
    } else if (!err && n > m) { // r_1 ::= item | ; r_k ::= item r_(k-1) |
        uint32_t prev = UINT32_MAX;
        for (uint64_t k = 0; k < n - m && !err; k++) {
            uint32_t r;
            if ((err = sp__gr_new_rule(b, b->names[rule], at, &r)))
                break;
            EMIT_ITEM(r)
            if (!err && prev != UINT32_MAX)
                err = sp__gr_emit(b, r, SP_GR_REF, prev, at);
            if (!err)
                err = sp__gr_emit(b, r, SP_GR_ALT, 0, at);
            prev = r;
        }
        if (!err)
            err = sp__gr_emit(b, rule, SP_GR_REF, prev, at);
    }
#undef EMIT_ITEM
    free(item);
    return err;
}

/* One alternative: symbols and their repetitions, up to '|', ')', a line break outside groups,
 * or the end. */
static sp_err parse_sequence(parser *p, uint32_t rule, bool nested) {
    sp__gr_builder *b = p->b;
    uint32_t last = UINT32_MAX; // where the last symbol's elements start
    sp_err err = SP_OK;
    for (;;) {
        const int c = peek(p);
        const size_t at = p->pos;
        if (c == '"') {
            last = b->rules[rule].n;
            p->pos++;
            while (!err && peek(p) != '"') {
                uint32_t cp;
                uint8_t u[4];
                if (peek(p) < 0)
                    return fail(p, at, "a literal is not closed by '\"'");
                if (!(err = parse_char(p, &cp)))
                    err = sp__gr_emit_bytes(b, rule, u, encode(cp, u), at);
            }
            p->pos++;
        } else if (c == '[') {
            last = b->rules[rule].n;
            p->pos++;
            const bool neg = peek(p) == '^';
            p->pos += neg;
            sp__gr_range r[64];
            size_t nr = 0;
            while (!err && peek(p) != ']') {
                if (peek(p) < 0)
                    return fail(p, at, "a character class is not closed by ']'");
                if (nr == 64)
                    return fail(p, at, "a character class has more than 64 ranges");
                uint32_t lo, hi;
                if ((err = parse_char(p, &lo)))
                    break;
                hi = lo;
                if (peek(p) == '-' && p->pos + 1 < p->n && p->s[p->pos + 1] != ']') {
                    p->pos++;
                    if ((err = parse_char(p, &hi)))
                        break;
                    if (hi < lo)
                        return fail(p, at, "a range of a character class is out of order");
                }
                r[nr++] = (sp__gr_range){lo, hi};
            }
            p->pos++;
            if (!err && nr == 0 && !neg)
                return fail(p, at, "an empty character class");
            if (!err)
                err = sp__gr_emit_class(b, rule, r, nr, neg, at);
        } else if (c == '.') {
            last = b->rules[rule].n;
            p->pos++;
            sp__gr_range r = {0, 0x10FFFF};
            err = sp__gr_emit_class(b, rule, &r, 1, false, at);
        } else if (is_word(c)) {
            last = b->rules[rule].n;
            while (is_word(peek(p)))
                p->pos++;
            uint32_t ref;
            if (!(err = sp__gr_rule(b, p->s + at, p->pos - at, at, &ref)))
                err = sp__gr_emit(b, rule, SP_GR_REF, ref, at);
        } else if (c == '(') {
            if (p->depth >= SP_GRAMMAR_MAX_NESTING)
                return fail(p, at, "groups nested more than 64 deep");
            last = b->rules[rule].n;
            p->pos++;
            p->depth++;
            uint32_t sub;
            if ((err = sp__gr_new_rule(b, b->names[rule], at, &sub)))
                return err;
            skip_space(p, true);
            if ((err = parse_alternates(p, sub, true)))
                return err;
            if (peek(p) != ')')
                return fail(p, at, "a group is not closed by ')'");
            p->pos++;
            p->depth--;
            err = sp__gr_emit(b, rule, SP_GR_REF, sub, at);
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (last == UINT32_MAX)
                return fail(p, at, "a repetition operator follows nothing to repeat");
            err = parse_repeat(p, rule, last);
            last = UINT32_MAX;
        } else {
            return SP_OK;
        }
        if (err)
            return err;
        skip_space(p, nested);
    }
}

static sp_err parse_alternates(parser *p, uint32_t rule, bool nested) {
    sp_err err = parse_sequence(p, rule, nested);
    while (!err && peek(p) == '|') {
        if ((err = sp__gr_emit(p->b, rule, SP_GR_ALT, 0, p->pos)))
            break;
        p->pos++;
        skip_space(p, true);
        err = parse_sequence(p, rule, nested);
    }
    return err;
}

static sp_err parse_rule(parser *p) {
    const size_t at = p->pos;
    while (is_word(peek(p)))
        p->pos++;
    if (p->pos == at)
        return fail(p, at, "expected a rule name");
    uint32_t rule;
    sp_err err = sp__gr_rule(p->b, p->s + at, p->pos - at, at, &rule);
    if (err || (err = sp__gr_define(p->b, rule, at)))
        return err;
    skip_space(p, false);
    if (p->n - p->pos < 3 || memcmp(p->s + p->pos, "::=", 3))
        return fail(p, p->pos, "expected '::=' after the rule name");
    p->pos += 3;
    skip_space(p, true);
    if ((err = parse_alternates(p, rule, false)))
        return err;
    const int c = peek(p);
    if (c == ')')
        return fail(p, p->pos, "')' without a '(' before it");
    if (c >= 0 && c != '\n' && c != '\r')
        return fail(p, p->pos, "unexpected character (a rule ends at a line break)");
    return SP_OK;
}

sp_err sp_grammar_from_gbnf(const char *text, size_t len, sp_grammar **out, sp_diag *diag) {
    if (len > SP_GRAMMAR_MAX_TEXT)
        return sp_diag_set(diag, SP_ERR_INVALID, 0, "the grammar is longer than %d bytes",
                           SP_GRAMMAR_MAX_TEXT);
    sp__gr_builder b;
    sp__gr_init(&b, diag);
    parser p = {.s = text, .n = len, .b = &b};
    sp_err err = SP_OK;
    skip_space(&p, true);
    while (!err && p.pos < p.n) {
        err = parse_rule(&p);
        skip_space(&p, true);
    }
    uint32_t root = 0;
    if (!err) {
        bool found = false;
        for (uint32_t i = 0; i < b.n_rules && !found; i++)
            if (!strcmp(b.names[i], "root") && b.defined[i])
                root = i, found = true;
        if (!found)
            err = sp_diag_set(diag, SP_ERR_INVALID, 0, "the grammar has no 'root' rule");
    }
    if (!err)
        err = sp__gr_finish(&b, root, sp_fnv1a64_add(0x6762u, text, len), out);
    sp__gr_deinit(&b);
    return err;
}
