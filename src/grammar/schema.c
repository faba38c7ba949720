/* JSON Schema to grammar (grammar.h: sp_grammar_from_json_schema). The schema is translated into
 * GBNF text, one rule per schema node, then compiled like any GBNF grammar: the text is easy to
 * read when something must be debugged (sp_grammar_schema_gbnf gives it).
 *
 * Output shape: JSON with the bounded whitespace of the JSON object grammar (json.c); object
 * properties in the schema's order, every required one present, optional ones skippable. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/hash.h"
#include "grammar/schema.h"

enum {
    MAX_DEPTH = 64,      // schema nesting (and $ref chains) followed
    MAX_REFS = 256,      // distinct $ref targets
    MAX_INT_DIGITS = 18, // digits of integer bounds
    MAX_PROPS = 128,     // properties of one object
};

/* A growing string. */
typedef struct sb {
    char *p;
    size_t n, cap;
    bool nomem;
} sb;

static void sb_put(sb *s, const char *t, size_t n) {
    if (s->nomem)
        return;
    if (s->n + n + 1 > s->cap) {
        size_t c = s->cap ? s->cap : 256;
        while (c < s->n + n + 1)
            c *= 2;
        char *q = realloc(s->p, c);
        if (!q) {
            s->nomem = true;
            return;
        }
        s->p = q;
        s->cap = c;
    }
    memcpy(s->p + s->n, t, n);
    s->n += n;
    s->p[s->n] = 0;
}

static void sb_str(sb *s, const char *t) {
    sb_put(s, t, strlen(t));
}

static void sb_fmt(sb *s, const char *fmt, ...) SP_PRINTF(2, 3);

static void sb_fmt(sb *s, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_put(s, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* A GBNF literal of the bytes t[n]: quotes, backslashes and control characters escaped. */
static void sb_literal(sb *s, const char *t, size_t n) {
    sb_str(s, "\"");
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)t[i];
        if (c == '"' || c == '\\')
            sb_fmt(s, "\\%c", c);
        else if (c < 0x20 || c == 0x7F)
            sb_fmt(s, "\\x%02X", c);
        else
            sb_put(s, (const char *)&c, 1);
    }
    sb_str(s, "\"");
}

/* A GBNF class of one hex digit, either case, of value v. */
static void sb_hex_digit(sb *s, unsigned v) {
    static const char hex[] = "0123456789abcdef";
    const char lo = hex[v & 15];
    if (lo >= 'a')
        sb_fmt(s, "[%c%c]", lo, lo - 'a' + 'A');
    else
        sb_fmt(s, "\"%c\"", lo);
}

/* "\u" and four hex digits (either case) of the UTF-16 unit u. */
static void sb_u_escape(sb *s, unsigned u) {
    sb_str(s, "\"\\\\u\"");
    for (int k = 12; k >= 0; k -= 4) {
        sb_str(s, " ");
        sb_hex_digit(s, (u >> k) & 15);
    }
}

/* Decodes the UTF-8 character at t[*i] (valid UTF-8: jansson's strings are); its code point. */
static unsigned utf8_next(const unsigned char *t, size_t n, size_t *i) {
    unsigned c = t[(*i)++];
    const int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    c &= more == 3 ? 0x07 : more == 2 ? 0x0F : more == 1 ? 0x1F : 0x7F;
    for (int k = 0; k < more && *i < n; k++)
        c = c << 6 | (t[(*i)++] & 0x3F);
    return c;
}

/* A JSON string whose value is the UTF-8 text t[n], in any of its spellings: each character as
 * itself or as a \u escape (a surrogate pair beyond the BMP), the short escapes where JSON has
 * them; characters that must be escaped only escaped. */
static void sb_json_string(sb *s, const char *t, size_t n) {
    sb_str(s, "\"\\\"\"");
    for (size_t i = 0; i < n;) {
        const size_t start = i;
        const unsigned c = utf8_next((const unsigned char *)t, n, &i);
        static const char shorts[] = {'"', '"', '\\', '\\', '/', '/', '\b', 'b',
                                      '\f', 'f',  '\n', 'n',    '\r', 'r', '\t', 't'};
        sb_str(s, " (");
        bool any = false;
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7F) {
            sb_literal(s, t + start, i - start);
            any = true;
        }
        for (size_t k = 0; k < sizeof shorts; k += 2)
            if ((unsigned char)shorts[k] == c) {
                const char esc[2] = {'\\', shorts[k + 1]};
                sb_str(s, any ? " | " : "");
                sb_literal(s, esc, 2);
                any = true;
            }
        sb_str(s, any ? " | " : "");
        if (c >= 0x10000) {
            sb_u_escape(s, 0xD800 + ((c - 0x10000) >> 10));
            sb_str(s, " ");
            sb_u_escape(s, 0xDC00 + ((c - 0x10000) & 0x3FF));
        } else {
            sb_u_escape(s, c);
        }
        sb_str(s, ")");
    }
    sb_str(s, " \"\\\"\"");
}

/* A JSON value equal to v (enum, const): strings in any spelling (sb_json_string), numbers in
 * their shortest spelling that reads back exactly (an integer also with a zero fraction),
 * whitespace allowed between the tokens of arrays and objects as elsewhere. */
static void sb_json_value(sb *s, json_t *v) {
    if (json_is_string(v)) {
        sb_json_string(s, json_string_value(v), json_string_length(v));
    } else if (json_is_integer(v)) {
        sb_fmt(s, "\"%lld\" (\".\" \"0\"+)?", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        const double x = json_real_value(v);
        char buf[40];
        for (int p = 1; p <= 17; p++) {
            snprintf(buf, sizeof buf, "%.*g", p, x);
            if (strtod(buf, NULL) == x)
                break;
        }
        sb_literal(s, buf, strlen(buf));
    } else if (json_is_array(v)) {
        sb_str(s, "\"[\" ws");
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            sb_str(s, i ? " \",\" ws (" : " (");
            sb_json_value(s, e);
            sb_str(s, ") ws");
        }
        sb_str(s, " \"]\"");
    } else if (json_is_object(v)) {
        sb_str(s, "\"{\" ws");
        const char *k;
        json_t *e;
        bool first = true;
        json_object_foreach(v, k, e) {
            sb_str(s, first ? " " : " \",\" ws ");
            sb_json_string(s, k, strlen(k));
            sb_str(s, " ws \":\" ws (");
            sb_json_value(s, e);
            sb_str(s, ") ws");
            first = false;
        }
        sb_str(s, " \"}\"");
    } else {
        sb_str(s, json_is_true(v) ? "\"true\"" : json_is_false(v) ? "\"false\"" : "\"null\"");
    }
}

typedef struct gen {
    sb out;       // the rules written so far
    json_t *root; // the whole schema ($ref targets)
    sp_diag *diag;
    sp_err err;
    int n_names; // rules named so far
    int depth;
    const char *ref_ptr[MAX_REFS]; // $ref pointers already given a rule
    char ref_rule[MAX_REFS][32];
    int n_refs;
    char path[256]; // JSON pointer of the schema being compiled (for errors)
} gen;

static sp_err fail(gen *g, const char *param, const char *fmt, ...) SP_PRINTF(3, 4);

static sp_err fail(gen *g, const char *param, const char *fmt, ...) {
    if (g->err)
        return g->err;
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    g->err = sp_diag_set(g->diag, SP_ERR_INVALID, UINT64_MAX, "%s (at %s)", msg,
                         g->path[0] ? g->path : "the schema's root");
    if (g->diag)
        snprintf(g->diag->param, sizeof g->diag->param, "%s", param);
    return g->err;
}

/* A fresh rule name into name[32]. */
static void new_name(gen *g, char name[32]) {
    snprintf(name, 32, "r%d", g->n_names++);
}

/* Writes `name ::= body`. */
static void define(gen *g, const char *name, const sb *body) {
    if (body->nomem)
        g->out.nomem = true;
    sb_fmt(&g->out, "%s ::= ", name);
    if (body->n) // GBNF skips line breaks after "::=": an empty body is written ""
        sb_put(&g->out, body->p, body->n);
    else
        sb_str(&g->out, "\"\"");
    sb_str(&g->out, "\n");
}

static sp_err schema_rule(gen *g, json_t *s, char name[32]);

/* The keywords a schema may have: those that constrain (all translated) and annotations. */
static const char *const known[] = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
    "maxItems", "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions", "minLength",
    "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    // annotations: they do not constrain the value
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
    "readOnly", "writeOnly", "strict"};

static bool is_known(const char *k) {
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (!strcmp(known[i], k))
            return true;
    return false;
}

/* Appends a path segment to g->path for the duration of a sub-schema; returns the old length. */
static size_t push_path(gen *g, const char *seg) {
    const size_t n = strlen(g->path);
    snprintf(g->path + n, sizeof g->path - n, "/%s", seg);
    return n;
}

/* ---- numbers -------------------------------------------------------------------------------- */

/* GBNF for the decimal strings of [lo, hi], both of len digits (lo <= hi, no sign). */
static void digits_range(sb *s, const char *lo, const char *hi, int len) {
    if (len == 0)
        return;
    if (lo[0] == hi[0]) {
        sb_fmt(s, "\"%c\" ", lo[0]);
        digits_range(s, lo + 1, hi + 1, len - 1);
        return;
    }
    char nines[MAX_INT_DIGITS + 1], zeros[MAX_INT_DIGITS + 1];
    memset(nines, '9', (size_t)len - 1);
    memset(zeros, '0', (size_t)len - 1);
    nines[len - 1] = zeros[len - 1] = 0;
    sb_fmt(s, "(\"%c\" ", lo[0]);
    digits_range(s, lo + 1, nines, len - 1);
    if (hi[0] - lo[0] > 1) {
        sb_fmt(s, "| [%c-%c] ", lo[0] + 1, hi[0] - 1);
        if (len > 1)
            sb_fmt(s, "[0-9]{%d} ", len - 1);
    }
    sb_fmt(s, "| \"%c\" ", hi[0]);
    digits_range(s, zeros, hi + 1, len - 1);
    sb_str(s, ") ");
}

/* GBNF for the non-negative integers in [lo, hi] (hi < 0: no upper bound, up to 18 digits),
 * no leading zeros: one alternative per digit count. */
static void nonneg_range(sb *s, long long lo, long long hi) {
    char a[32], b[32];
    const int la = snprintf(a, sizeof a, "%lld", lo);
    const int lb = hi >= 0 ? snprintf(b, sizeof b, "%lld", hi) : la;
    sb_str(s, "(");
    for (int len = la; len <= lb; len++) {
        char from[32], to[32];
        if (len == la) {
            memcpy(from, a, (size_t)la + 1);
        } else {
            from[0] = '1';
            memset(from + 1, '0', (size_t)len - 1);
            from[len] = 0;
        }
        if (hi >= 0 && len == lb) {
            memcpy(to, b, (size_t)lb + 1);
        } else {
            memset(to, '9', (size_t)len);
            to[len] = 0;
        }
        sb_str(s, len > la ? "| (" : "(");
        digits_range(s, from, to, len);
        sb_str(s, ") ");
    }
    if (hi < 0 && la < MAX_INT_DIGITS)
        sb_fmt(s, "| [1-9] [0-9]{%d,%d} ", la, MAX_INT_DIGITS - 1);
    sb_str(s, ")");
}

static sp_err integer_body(gen *g, json_t *s, sb *body) {
    json_t *mn = json_object_get(s, "minimum"), *mx = json_object_get(s, "maximum");
    json_t *xmn = json_object_get(s, "exclusiveMinimum"),
           *xmx = json_object_get(s, "exclusiveMaximum");
    const long long lim = 999999999999999999LL;
    long long lo = -lim, hi = lim;
    bool bounded = false;
    json_t *bounds[4] = {mn, xmn, mx, xmx};
    const char *names[4] = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"};
    for (int i = 0; i < 4; i++) {
        if (!bounds[i])
            continue;
        if (!json_is_number(bounds[i]))
            return fail(g, names[i], "'%s' must be a number", names[i]);
        const double v = json_number_value(bounds[i]);
        if (!(v > -(double)lim && v < (double)lim))
            return fail(g, names[i], "'%s' is beyond the 18-digit integers this server bounds",
                        names[i]);
        long long x = (long long)v;
        if (i < 2) { // lower bounds: the smallest integer allowed
            if ((double)x < v)
                x++;
            if (i == 1 && (double)x == v)
                x++;
            lo = x > lo ? x : lo;
        } else {
            if ((double)x > v)
                x--;
            if (i == 3 && (double)x == v)
                x--;
            hi = x < hi ? x : hi;
        }
        bounded = true;
    }
    if (!bounded) {
        sb_str(body, "jint ws");
        return SP_OK;
    }
    if (lo > hi)
        return fail(g, "minimum", "no integer is within 'minimum' and 'maximum'");
    sb_str(body, "(");
    bool any = false;
    if (lo < 0) { // negatives: "-" and the magnitudes in [max(1, -hi), -lo]
        const long long mlo = hi < 0 ? -hi : 1;
        sb_str(body, "\"-\" (");
        nonneg_range(body, mlo, lo == -lim ? -1 : -lo);
        sb_str(body, ")");
        any = true;
    }
    if (hi >= 0) {
        if (any)
            sb_str(body, " | ");
        sb_str(body, "(");
        nonneg_range(body, lo > 0 ? lo : 0, hi == lim ? -1 : hi);
        sb_str(body, ")");
    }
    sb_str(body, ") ws");
    return SP_OK;
}

/* ---- strings: patterns ---------------------------------------------------------------------- */

typedef struct rx {
    const char *s;
    size_t n, i;
    gen *g;
    sb *out;
} rx;

static sp_err rx_fail(rx *r, const char *what) {
    return fail(r->g, "pattern",
                "the pattern %s at character %zu (supported: literals, ., "
                "[classes], \\d \\w \\s and their negations, groups, |, * + ? "
                "{m,n}, ^ and $)",
                what, r->i);
}

/* The GBNF of one code point of a JSON string's content, for a set of code points given as a
 * class body (the text between [ and ]) with negation: the raw characters JSON allows, and the
 * escaped forms of " and \ when the set holds them. */
static void rx_class(rx *r, const char *body, size_t n, bool neg, bool has_quote,
                     bool has_backslash) {
    sb_str(r->out, "(");
    if (neg) {
        sb_str(r->out, "[^\"\\\\\\x7F\\x00-\\x1F");
        sb_put(r->out, body, n);
        sb_str(r->out, "]");
    } else {
        sb_str(r->out, "[");
        sb_put(r->out, body, n);
        sb_str(r->out, "]");
    }
    if (has_quote)
        sb_str(r->out, " | \"\\\\\\\"\"");
    if (has_backslash)
        sb_str(r->out, " | \"\\\\\\\\\"");
    sb_str(r->out, ")");
}

static sp_err rx_alt(rx *r);

/* A class escape (\d \w \s, upper case negated) as a class body; NULL if c is not one. */
static const char *class_escape(char c, bool *neg) {
    *neg = c >= 'A' && c <= 'Z';
    switch (c) {
    case 'd':
    case 'D':
        return "0-9";
    case 'w':
    case 'W':
        return "a-zA-Z0-9_";
    case 's':
    case 'S':
        return " "; // the other blanks are control characters: JSON escapes them
    default:
        return NULL;
    }
}

static sp_err rx_atom(rx *r) {
    const char c = r->s[r->i];
    if (c == '(') {
        r->i++;
        if (r->i + 1 < r->n && r->s[r->i] == '?') {
            if (r->s[r->i + 1] != ':')
                return rx_fail(r, "has a lookaround or named group");
            r->i += 2;
        }
        sb_str(r->out, "(");
        sp_err err = rx_alt(r);
        if (err)
            return err;
        if (r->i >= r->n || r->s[r->i] != ')')
            return rx_fail(r, "has an unclosed group");
        r->i++;
        sb_str(r->out, ")");
        return SP_OK;
    }
    if (c == '[') {
        r->i++;
        const bool neg = r->i < r->n && r->s[r->i] == '^';
        r->i += neg;
        sb body = {0};
        bool quote = false, backslash = false;
        for (bool first = true; r->i < r->n && (first || r->s[r->i] != ']'); first = false) {
            const char k = r->s[r->i++];
            bool cneg;
            if (k == '\\' && r->i < r->n) {
                const char e = r->s[r->i++];
                const char *cl = class_escape(e, &cneg);
                if (cl && cneg) {
                    free(body.p);
                    return rx_fail(r, "has a negated class escape inside a class");
                }
                if (cl)
                    sb_str(&body, cl);
                else if (e == 'n' || e == 't' || e == 'r')
                    ; // control characters: JSON would escape them (left out of classes)
                else if (e == '"')
                    quote = true;
                else if (e == '\\')
                    backslash = true;
                else if (strchr("]-^[", e))
                    sb_fmt(&body, "\\%c", e);
                else
                    sb_put(&body, &e, 1);
            } else if (k == '"') {
                quote = true;
            } else if (k == '[' || k == ']') {
                sb_fmt(&body, "\\%c", k);
            } else {
                sb_put(&body, &k, 1);
            }
        }
        if (r->i >= r->n) {
            free(body.p);
            return rx_fail(r, "has an unclosed class");
        }
        r->i++;
        if (neg) // a negated class excludes " and \ unless listed: the raw part excludes them
            quote = !quote, backslash = !backslash;
        if (!body.n && !neg && !quote && !backslash) {
            free(body.p);
            return rx_fail(r, "has an empty class");
        }
        if (body.n || neg)
            rx_class(r, body.p ? body.p : "", body.n, neg, quote, backslash);
        else
            sb_str(r->out, quote ? (backslash ? "(\"\\\\\\\"\" | \"\\\\\\\\\")" : "\"\\\\\\\"\"")
                                 : "\"\\\\\\\\\"");
        free(body.p);
        return SP_OK;
    }
    if (c == '.') {
        r->i++;
        rx_class(r, "\\n", 2, true, true, true);
        return SP_OK;
    }
    if (c == '\\') {
        if (++r->i >= r->n)
            return rx_fail(r, "ends with a backslash");
        const char e = r->s[r->i++];
        bool neg;
        const char *cl = class_escape(e, &neg);
        if (cl) {
            rx_class(r, cl, strlen(cl), neg, neg, neg);
            return SP_OK;
        }
        if ((e >= '0' && e <= '9') || e == 'b' || e == 'B' || e == 'k' || e == 'p' || e == 'P')
            return rx_fail(r, "has a back-reference, word boundary or property escape");
        const char lit = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
        if (lit == '"' || lit == '\\')
            sb_str(r->out, lit == '"' ? "\"\\\\\\\"\"" : "\"\\\\\\\\\"");
        else if (lit == '\n' || lit == '\t' || lit == '\r')
            sb_fmt(r->out, "\"\\\\%c\"", e); // JSON escapes them
        else
            sb_literal(r->out, &lit, 1);
        return SP_OK;
    }
    if (strchr("*+?{", c))
        return rx_fail(r, "has a repetition with nothing before it");
    // A literal character (all the bytes of a UTF-8 sequence).
    size_t len = 1;
    while (r->i + len < r->n && ((unsigned char)r->s[r->i + len] & 0xC0) == 0x80)
        len++;
    if (c == '"')
        sb_str(r->out, "\"\\\\\\\"\"");
    else
        sb_literal(r->out, r->s + r->i, len);
    r->i += len;
    return SP_OK;
}

static sp_err rx_seq(rx *r) {
    while (r->i < r->n && r->s[r->i] != '|' && r->s[r->i] != ')') {
        if (r->s[r->i] == '$' && r->i + 1 == r->n)
            return SP_OK; // the end anchor: handled by the caller
        sp_err err = rx_atom(r);
        if (err)
            return err;
        if (r->i < r->n && strchr("*+?{", r->s[r->i])) {
            const char q = r->s[r->i];
            if (q == '{') {
                size_t j = r->i + 1;
                while (j < r->n && ((r->s[j] >= '0' && r->s[j] <= '9') || r->s[j] == ','))
                    j++;
                if (j >= r->n || r->s[j] != '}' || j == r->i + 1)
                    return rx_fail(r, "has a malformed {m,n}");
                sb_put(r->out, r->s + r->i, j + 1 - r->i);
                r->i = j + 1;
            } else {
                sb_put(r->out, &q, 1);
                r->i++;
            }
            if (r->i < r->n && (r->s[r->i] == '?' || r->s[r->i] == '+'))
                r->i++; // lazy or possessive: the same language
        }
        sb_str(r->out, " ");
    }
    return SP_OK;
}

static sp_err rx_alt(rx *r) {
    sp_err err = rx_seq(r);
    while (!err && r->i < r->n && r->s[r->i] == '|') {
        r->i++;
        sb_str(r->out, "| ");
        err = rx_seq(r);
    }
    return err;
}

static sp_err pattern_body(gen *g, const char *pat, sb *body) {
    rx r = {.s = pat, .n = strlen(pat), .g = g, .out = body};
    const bool start = r.n && pat[0] == '^';
    const bool end =
        r.n > (size_t)start && pat[r.n - 1] == '$' && (r.n < 2 || pat[r.n - 2] != '\\');
    r.i = start;
    sb_str(body, "\"\\\"\" ");
    if (!start)
        sb_str(body, "jchar* ");
    sb_str(body, "(");
    sp_err err = rx_alt(&r);
    if (err)
        return err;
    if (r.i < r.n && !(end && r.i == r.n - 1))
        return rx_fail(&r, "has an unmatched ')'");
    sb_str(body, ") ");
    if (!end)
        sb_str(body, "jchar* ");
    sb_str(body, "\"\\\"\" ws");
    return SP_OK;
}

/* ---- strings, objects, arrays --------------------------------------------------------------- */

static sp_err string_body(gen *g, json_t *s, sb *body) {
    json_t *fmt = json_object_get(s, "format"), *pat = json_object_get(s, "pattern");
    json_t *mn = json_object_get(s, "minLength"), *mx = json_object_get(s, "maxLength");
    if (fmt) {
        const char *f = json_string_value(fmt);
        static const char *const formats[][2] = {
            {"date", "date"}, {"time", "time"}, {"date-time", "date \"T\" time"}, {"uuid", "uuid"}};
        for (size_t i = 0; f && i < sizeof formats / sizeof *formats; i++)
            if (!strcmp(f, formats[i][0])) {
                sb_fmt(body, "\"\\\"\" %s \"\\\"\" ws", formats[i][1]);
                return SP_OK;
            }
        return fail(g, "format",
                    "format '%s' is not supported (supported: date, time, "
                    "date-time, uuid)",
                    f ? f : "(not a string)");
    }
    if (pat) {
        if (!json_is_string(pat))
            return fail(g, "pattern", "'pattern' must be a string");
        if (mn || mx)
            return fail(g, "pattern",
                        "'pattern' with 'minLength' or 'maxLength' is not "
                        "supported");
        return pattern_body(g, json_string_value(pat), body);
    }
    json_int_t lo = 0, hi = -1;
    if (mn && (!json_is_integer(mn) || (lo = json_integer_value(mn)) < 0 || lo > 4096))
        return fail(g, "minLength", "'minLength' must be an integer in [0, 4096]");
    if (mx && (!json_is_integer(mx) || (hi = json_integer_value(mx)) < lo || hi > 4096))
        return fail(g, "maxLength", "'maxLength' must be an integer in [minLength, 4096]");
    if (!mn && !mx)
        sb_str(body, "jstring");
    else if (hi < 0)
        sb_fmt(body, "\"\\\"\" jchar{%lld,} \"\\\"\" ws", (long long)lo);
    else
        sb_fmt(body, "\"\\\"\" jchar{%lld,%lld} \"\\\"\" ws", (long long)lo, (long long)hi);
    return SP_OK;
}

/* Rule `name` for JSON string keys other than the n keys[] (their raw text): a trie of the keys
 * walked a code point at a time; at each node the key may end only if no listed key ends there,
 * or go on with another character than the listed keys' next ones. */
static void key_trie_rule(gen *g, const char *name, const char **keys, size_t n, size_t depth) {
    // The distinct next characters (one byte each: keys are compared by their bytes, and a
    // multi-byte character takes its lead byte's branch).
    sb body = {0};
    bool ends = false;
    char next[256];
    size_t n_next = 0;
    for (size_t i = 0; i < n; i++) {
        if (strlen(keys[i]) == depth) {
            ends = true;
            continue;
        }
        const char c = keys[i][depth];
        if (!memchr(next, c, n_next))
            next[n_next++] = c;
    }
    if (!ends)
        sb_str(&body, "\"\\\"\" | ");
    // Any other first byte: a JSON character that does not start like the listed keys' next.
    sb_str(&body, "([^\"\\\\\\x7F\\x00-\\x1F");
    for (size_t k = 0; k < n_next; k++) {
        const unsigned char c = (unsigned char)next[k];
        if (c >= 0x80)
            continue; // non-ASCII branches are followed below only for ASCII keys
        if (strchr("]-^\\[", (char)c))
            sb_fmt(&body, "\\%c", c);
        else
            sb_put(&body, (const char *)&c, 1);
    }
    sb_str(&body, "] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})) jchar* \"\\\"\"");
    for (size_t k = 0; k < n_next; k++) {
        if ((unsigned char)next[k] >= 0x80)
            continue;
        char sub[32];
        new_name(g, sub);
        const char *sel[MAX_PROPS];
        size_t m = 0;
        for (size_t i = 0; i < n && m < MAX_PROPS; i++)
            if (strlen(keys[i]) > depth && keys[i][depth] == next[k])
                sel[m++] = keys[i];
        key_trie_rule(g, sub, sel, m, depth + 1);
        sb_str(&body, " | ");
        sb_literal(&body, &next[k], 1);
        sb_fmt(&body, " %s", sub);
    }
    define(g, name, &body);
    free(body.p);
}

static sp_err object_rules(gen *g, json_t *s, sb *body, char **keys);

/* The object's body; the properties' written keys in keys[] (freed here). */
static sp_err object_body(gen *g, json_t *s, sb *body) {
    char *keys[MAX_PROPS] = {NULL};
    sp_err err = object_rules(g, s, body, keys);
    for (int i = 0; i < MAX_PROPS; i++)
        free(keys[i]);
    return err;
}

static sp_err object_rules(gen *g, json_t *s, sb *body, char **keys) {
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    json_t *addl = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props))
        return fail(g, "properties", "'properties' must be an object");
    if (req && !json_is_array(req))
        return fail(g, "required", "'required' must be an array of names");
    const size_t n = json_object_size(props);
    if (n > MAX_PROPS)
        return fail(g, "properties", "more than %d properties", MAX_PROPS);
    // Each property's "key": value rule, in the schema's order.
    char kv[MAX_PROPS][32];
    bool required[MAX_PROPS];
    const char *key;
    json_t *sub;
    size_t i = 0;
    json_object_foreach(props, key, sub) {
        const size_t old = push_path(g, "properties");
        push_path(g, key);
        char vr[32];
        sp_err err = schema_rule(g, sub, vr);
        g->path[old] = 0;
        if (err)
            return err;
        sb b = {0};
        json_t *js = json_string(key);
        char *quoted = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
        json_decref(js);
        if (!quoted)
            return fail(g, "properties", "out of memory");
        sb_literal(&b, quoted, strlen(quoted));
        sb_fmt(&b, " ws \":\" ws %s", vr);
        new_name(g, kv[i]);
        define(g, kv[i], &b);
        free(b.p);
        required[i] = false;
        quoted[strlen(quoted) - 1] = 0; // the key as written between its quotes
        memmove(quoted, quoted + 1, strlen(quoted));
        keys[i] = quoted;
        size_t j;
        json_t *r;
        json_array_foreach(req, j, r) required[i] |=
            json_is_string(r) && !strcmp(json_string_value(r), key);
        i++;
    }
    size_t j;
    json_t *r;
    json_array_foreach(req, j, r) {
        if (!json_is_string(r))
            return fail(g, "required", "'required' must be an array of names");
        if (!json_object_get(props, json_string_value(r)))
            return fail(g, "required", "required property '%s' is not in 'properties'",
                        json_string_value(r));
    }
    // Additional properties: none unless the schema allows them (true or a schema).
    char akv[32] = "";
    if (addl && !json_is_false(addl)) {
        char vr[32], kr[32];
        const size_t old = push_path(g, "additionalProperties");
        sp_err err = schema_rule(g, json_is_true(addl) ? NULL : addl, vr);
        g->path[old] = 0;
        if (err)
            return err;
        if (n) {
            new_name(g, kr);
            key_trie_rule(g, kr, (const char **)keys, n, 0);
        }
        sb b = {0};
        if (n)
            sb_fmt(&b, "\"\\\"\" %s ws \":\" ws %s", kr, vr);
        else
            sb_fmt(&b, "jstring \":\" ws %s", vr);
        new_name(g, akv);
        define(g, akv, &b);
        free(b.p);
    }
    // s(i, first): the properties from i on, first when none has been written yet. Written
    // last to first: s(i, .) refers to s(i + 1, .).
    char next_f[32] = "", next_t[32] = ""; // s(i + 1, false), s(i + 1, true)
    for (size_t k = n + 1; k-- > 0;) {
        char cur_f[32], cur_t[32];
        for (int first = 0; first < 2; first++) {
            sb b = {0};
            if (k == n) { // after the listed ones: the additional ones, if any
                if (akv[0])
                    sb_fmt(&b, first ? "(%s (\",\" ws %s)*)?" : "(\",\" ws %s)*", akv, akv);
            } else {
                const char *sep = first ? "" : "\",\" ws ";
                if (required[k])
                    sb_fmt(&b, "%s%s %s", sep, kv[k], next_f);
                else
                    sb_fmt(&b, "%s%s %s | %s", sep, kv[k], next_f, first ? next_t : next_f);
            }
            char *dst = first ? cur_t : cur_f;
            new_name(g, dst);
            define(g, dst, &b);
            free(b.p);
        }
        memcpy(next_f, cur_f, 32);
        memcpy(next_t, cur_t, 32);
    }
    sb_fmt(body, "\"{\" ws %s \"}\" ws", next_t);
    return SP_OK;
}

static sp_err array_body(gen *g, json_t *s, sb *body) {
    json_t *items = json_object_get(s, "items"), *prefix = json_object_get(s, "prefixItems");
    json_t *mn = json_object_get(s, "minItems"), *mx = json_object_get(s, "maxItems");
    json_int_t lo = 0, hi = -1;
    if (mn && (!json_is_integer(mn) || (lo = json_integer_value(mn)) < 0 || lo > 4096))
        return fail(g, "minItems", "'minItems' must be an integer in [0, 4096]");
    if (mx && (!json_is_integer(mx) || (hi = json_integer_value(mx)) < lo || hi > 4096))
        return fail(g, "maxItems", "'maxItems' must be an integer in [minItems, 4096]");
    if (prefix && (!json_is_array(prefix) || json_array_size(prefix) > MAX_REFS))
        return fail(g, "prefixItems", "'prefixItems' must be an array of at most %d schemas",
                    MAX_REFS);
    sb_str(body, "\"[\" ws ");
    const size_t k = json_array_size(prefix);
    if (k) { // the tuple, whole, then items beyond it if a schema for them is given
        size_t i;
        json_t *sub;
        json_array_foreach(prefix, i, sub) {
            char vr[32], idx[24];
            snprintf(idx, sizeof idx, "%zu", i);
            const size_t old = push_path(g, "prefixItems");
            push_path(g, idx);
            sp_err err = schema_rule(g, sub, vr);
            g->path[old] = 0;
            if (err)
                return err;
            sb_fmt(body, "%s%s ", i ? "\",\" ws " : "", vr);
        }
        if (items && !json_is_false(items)) {
            char vr[32];
            const size_t old = push_path(g, "items");
            sp_err err = schema_rule(g, json_is_true(items) ? NULL : items, vr);
            g->path[old] = 0;
            if (err)
                return err;
            const long long more_lo = lo > (json_int_t)k ? (long long)(lo - (json_int_t)k) : 0;
            if (hi < 0)
                sb_fmt(body, "(\",\" ws %s){%lld,} ", vr, more_lo);
            else if (hi > (json_int_t)k)
                sb_fmt(body, "(\",\" ws %s){%lld,%lld} ", vr, more_lo,
                       (long long)(hi - (json_int_t)k));
        }
    } else {
        char vr[32];
        const size_t old = push_path(g, "items");
        sp_err err = schema_rule(g, items && !json_is_true(items) ? items : NULL, vr);
        g->path[old] = 0;
        if (err)
            return err;
        if (hi != 0 && lo == 0 && hi < 0)
            sb_fmt(body, "(%s (\",\" ws %s)*)? ", vr, vr);
        else if (hi != 0 && lo == 0)
            sb_fmt(body, "(%s (\",\" ws %s){0,%lld})? ", vr, vr, (long long)hi - 1);
        else if (hi != 0 && hi < 0)
            sb_fmt(body, "%s (\",\" ws %s){%lld,} ", vr, vr, (long long)lo - 1);
        else if (hi != 0)
            sb_fmt(body, "%s (\",\" ws %s){%lld,%lld} ", vr, vr, (long long)lo - 1,
                   (long long)hi - 1);
    }
    sb_str(body, "\"]\" ws");
    return SP_OK;
}

/* ---- schemas -------------------------------------------------------------------------------- */

/* The body for one type name. */
static sp_err type_body(gen *g, json_t *s, const char *type, sb *body) {
    if (!strcmp(type, "string"))
        return string_body(g, s, body);
    if (!strcmp(type, "integer"))
        return integer_body(g, s, body);
    if (!strcmp(type, "number")) {
        if (json_object_get(s, "minimum") || json_object_get(s, "maximum") ||
            json_object_get(s, "exclusiveMinimum") || json_object_get(s, "exclusiveMaximum"))
            return fail(g, "minimum", "'minimum' and 'maximum' are supported for integers only");
        sb_str(body, "jnumber");
        return SP_OK;
    }
    if (!strcmp(type, "boolean")) {
        sb_str(body, "(\"true\" | \"false\") ws");
        return SP_OK;
    }
    if (!strcmp(type, "null")) {
        sb_str(body, "\"null\" ws");
        return SP_OK;
    }
    if (!strcmp(type, "object"))
        return object_body(g, s, body);
    if (!strcmp(type, "array"))
        return array_body(g, s, body);
    return fail(g, "type", "unknown type '%s'", type);
}

/* Resolves a local $ref ("#", "#/$defs/x", "#/definitions/x", any JSON pointer into the
 * schema). */
static json_t *resolve(gen *g, const char *ref) {
    if (ref[0] != '#')
        return NULL;
    json_t *at = g->root;
    const char *p = ref + 1;
    while (at && *p == '/') {
        p++;
        char seg[128];
        size_t n = 0;
        for (; *p && *p != '/' && n + 1 < sizeof seg; p++) {
            if (p[0] == '~' && (p[1] == '0' || p[1] == '1'))
                seg[n++] = p[1] == '0' ? '~' : '/', p++;
            else
                seg[n++] = *p;
        }
        seg[n] = 0;
        at = json_is_array(at) ? json_array_get(at, strtoul(seg, NULL, 10))
                               : json_object_get(at, seg);
    }
    return *p ? NULL : at;
}

/* The rule for schema s (NULL or true: any JSON value) into name. */
static sp_err schema_rule(gen *g, json_t *s, char name[32]) {
    if (g->err)
        return g->err;
    if (!s || json_is_true(s) || (json_is_object(s) && json_object_size(s) == 0)) {
        snprintf(name, 32, "value");
        return SP_OK;
    }
    if (json_is_false(s))
        return fail(g, "schema", "a schema of false allows no value");
    if (!json_is_object(s))
        return fail(g, "schema", "a schema must be an object or a boolean");
    if (++g->depth > MAX_DEPTH) {
        g->depth--;
        return fail(g, "schema", "the schema nests deeper than %d", MAX_DEPTH);
    }
    const char *key;
    json_t *v;
    json_object_foreach(s, key, v) {
        if (!is_known(key)) {
            g->depth--;
            return fail(g, key, "unsupported keyword '%s'", key);
        }
    }
    sp_err err = SP_OK;
    sb body = {0};
    json_t *ref = json_object_get(s, "$ref"), *any = json_object_get(s, "anyOf");
    json_t *one = json_object_get(s, "oneOf"), *en = json_object_get(s, "enum");
    json_t *cn = json_object_get(s, "const"), *type = json_object_get(s, "type");
    if (!any)
        any = one; // oneOf as anyOf: the alternatives are not checked to be exclusive
    if (ref) {
        const char *r = json_string_value(ref);
        int i = 0;
        while (r && i < g->n_refs && strcmp(g->ref_ptr[i], r))
            i++;
        if (!r) {
            err = fail(g, "$ref", "'$ref' must be a string");
        } else if (i < g->n_refs) {
            snprintf(name, 32, "%s", g->ref_rule[i]);
        } else if (g->n_refs == MAX_REFS) {
            err = fail(g, "$ref", "more than %d distinct $ref targets", MAX_REFS);
        } else {
            json_t *target = resolve(g, r);
            if (!target) {
                err = fail(g, "$ref", "'$ref' %s does not point into this schema", r);
            } else {
                // Named before it is compiled: a recursive reference finds it.
                g->ref_ptr[g->n_refs] = r;
                new_name(g, g->ref_rule[g->n_refs]);
                snprintf(name, 32, "%s", g->ref_rule[g->n_refs]);
                g->n_refs++;
                char inner[32];
                if (!(err = schema_rule(g, target, inner))) {
                    sb_str(&body, inner);
                    define(g, name, &body);
                }
            }
        }
        free(body.p);
        g->depth--;
        return err;
    }
    if (any) {
        if (!json_is_array(any) || !json_array_size(any))
            err = fail(g, "anyOf", "'anyOf' and 'oneOf' must be non-empty arrays of schemas");
        size_t i;
        json_t *sub;
        json_array_foreach(any, i, sub) {
            if (err)
                break;
            char alt[32], idx[24];
            snprintf(idx, sizeof idx, "%zu", i);
            const size_t old = push_path(g, json_object_get(s, "anyOf") ? "anyOf" : "oneOf");
            push_path(g, idx);
            err = schema_rule(g, sub, alt);
            g->path[old] = 0;
            sb_fmt(&body, "%s%s", i ? " | " : "", alt);
        }
    } else if (en || cn) {
        if (en && (!json_is_array(en) || !json_array_size(en)))
            err = fail(g, "enum", "'enum' must be a non-empty array");
        const size_t n = en ? json_array_size(en) : 1;
        for (size_t i = 0; i < n && !err; i++) {
            sb_str(&body, i ? " | (" : "((");
            sb_json_value(&body, en ? json_array_get(en, i) : cn);
            sb_str(&body, ")");
        }
        sb_str(&body, ") ws");
    } else if (json_is_array(type)) {
        size_t i;
        json_t *t;
        sb_str(&body, "(");
        json_array_foreach(type, i, t) {
            if (!json_is_string(t)) {
                err = fail(g, "type", "'type' must be a type name or an array of them");
                break;
            }
            sb_str(&body, i ? " | (" : "(");
            if ((err = type_body(g, s, json_string_value(t), &body)))
                break;
            sb_str(&body, ")");
        }
        sb_str(&body, ")");
    } else if (type) {
        err = json_is_string(type) ? type_body(g, s, json_string_value(type), &body)
                                   : fail(g, "type", "'type' must be a type name or an array");
    } else if (json_object_get(s, "properties") || json_object_get(s, "additionalProperties")) {
        err = object_body(g, s, &body);
    } else if (json_object_get(s, "items") || json_object_get(s, "prefixItems")) {
        err = array_body(g, s, &body);
    } else {
        sb_str(&body, "value");
    }
    if (!err) {
        new_name(g, name);
        define(g, name, &body);
    }
    free(body.p);
    g->depth--;
    return err ? err : g->err;
}

static const char builtins[] =
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n"
    "value ::= jobject | jarray | jstring | jnumber | (\"true\" | \"false\" | \"null\") ws\n"
    "jobject ::= \"{\" ws ( jstring \":\" ws value (\",\" ws jstring \":\" ws value)* )? \"}\" "
    "ws\n"
    "jarray ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
    "jstring ::= \"\\\"\" jchar* \"\\\"\" ws\n"
    "jchar ::= [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n"
    "jnumber ::= jint (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,4})? ws\n"
    "jint ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15})\n"
    "date ::= [0-9]{4} \"-\" (\"0\" [1-9] | \"1\" [0-2]) \"-\" (\"0\" [1-9] | [12] [0-9] | \"3\" "
    "[01])\n"
    "time ::= ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" [0-5] [0-9] (\".\" [0-9]{1,6})? "
    "(\"Z\" | [+-] ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9])\n"
    "uuid ::= [0-9a-fA-F]{8} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" "
    "[0-9a-fA-F]{12}\n";

sp_err sp_grammar_schema_gbnf(json_t *schema, char **out, sp_diag *diag) {
    return sp_grammar_schema_gbnf_wrapped(schema, "", "", out, diag);
}

sp_err sp_grammar_schema_gbnf_wrapped(json_t *schema, const char *before, const char *after,
                                      char **out, sp_diag *diag) {
    gen g = {.root = schema, .diag = diag};
    char top[32];
    sp_err err = schema_rule(&g, schema, top);
    if (!err) {
        sb_str(&g.out, "root ::= ws ");
        if (*before)
            sb_literal(&g.out, before, strlen(before));
        sb_fmt(&g.out, " %s ", top);
        if (*after)
            sb_literal(&g.out, after, strlen(after));
        sb_str(&g.out, "\n");
        sb_str(&g.out, builtins);
        if (g.out.nomem)
            err = sp_diag_set(diag, SP_ERR_NOMEM, UINT64_MAX, "out of memory");
    }
    if (err) {
        free(g.out.p);
        return err;
    }
    *out = g.out.p;
    return SP_OK;
}

sp_err sp_grammar_from_json_schema(json_t *schema, sp_grammar **out, sp_diag *diag) {
    return sp_grammar_from_json_schema_wrapped(schema, "", "", out, diag);
}

sp_err sp_grammar_from_json_schema_wrapped(json_t *schema, const char *before, const char *after,
                                           sp_grammar **out, sp_diag *diag) {
    char *text;
    sp_err err = sp_grammar_schema_gbnf_wrapped(schema, before, after, &text, diag);
    if (err)
        return err;
    err = sp_grammar_from_gbnf(text, strlen(text), out, diag);
    if (err == SP_ERR_INVALID && diag) { // a limit, or a pattern GBNF cannot take: say so
        char msg[sizeof diag->msg];
        snprintf(msg, sizeof msg, "%s", diag->msg);
        sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "the schema's grammar is not valid: %s", msg);
        snprintf(diag->param, sizeof diag->param, "schema");
    }
    free(text);
    return err;
}
