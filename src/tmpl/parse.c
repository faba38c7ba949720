/* Lexer and parser: template source to syntax tree.
 *
 * The lexer follows Jinja2's with trim_blocks and lstrip_blocks: `{%-`/`{{-`/`{#-` strip all
 * whitespace before the tag, `-%}`/`-}}`/`-#}` all whitespace after it; without a sign a block
 * or comment tag alone on its line also takes the spaces before it (unless `{%+`), and the
 * newline right after a block or comment tag goes (unless `+%}`). The grammar and operator
 * precedence are Jinja2's (parser.py): filters and tests bind tighter than arithmetic, `**`
 * is left-associative and binds looser than unary minus. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "tmpl/tmpl_int.h"

enum {
    T_EOF,
    T_DATA,
    T_VAR_BEGIN,
    T_VAR_END,
    T_BLOCK_BEGIN,
    T_BLOCK_END,
    T_NAME,
    T_STRING,
    T_INT,
    T_FLOAT,
    T_OP,
};

// Two-character operators get letters; the others are their own character.
enum { O_FLOORDIV = 'D', O_POW = 'P', O_EQ = 'E', O_NE = 'N', O_LE = 'L', O_GE = 'G' };

typedef struct tok {
    uint8_t type;
    uint8_t op;
    uint32_t off;
    const char *s; // T_DATA, T_NAME, T_STRING (decoded)
    uint32_t n;
    int64_t i;
    double f;
} tok;

#define MAX_NEST 200

typedef struct P {
    sp_tmpl *t;
    sp_diag *diag;
    tok *toks;
    uint32_t n_toks, cap_toks, i;
    uint32_t nest;  // parser recursion
    uint32_t loops; // enclosing for loops, for break/continue
    uint32_t syms_cap;
    uint16_t seen; // SP__USES_* seen since the innermost macro began
} P;

uint32_t sp__line_of(const char *src, size_t len, size_t off) {
    uint32_t line = 1;
    for (size_t i = 0; i < off && i < len; i++)
        line += src[i] == '\n';
    return line;
}

static sp_err perr(P *p, sp_err err, uint32_t off, const char *fmt, ...) SP_PRINTF(4, 5);
static sp_err perr(P *p, sp_err err, uint32_t off, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sp_diag_set(p->diag, err, off, "line %u: %s", sp__line_of(p->t->src, p->t->len, off),
                       msg);
}

static sp_err nomem(P *p) {
    return sp_diag_set(p->diag, SP_ERR_NOMEM, UINT64_MAX, "out of memory compiling the template");
}

static void *palloc(P *p, size_t n) {
    void *q = sp__arena_alloc(&p->t->arena, n);
    if (q)
        memset(q, 0, n);
    return q;
}

/* ---- lexer ------------------------------------------------------------------------------- */

static sp_err push_tok(P *p, tok t) {
    if (p->n_toks == p->cap_toks) {
        if (p->cap_toks >= UINT32_MAX / 4)
            return nomem(p);
        uint32_t cap = p->cap_toks ? p->cap_toks * 2 : 256;
        tok *q = sp__arena_grow(&p->t->arena, p->toks, (size_t)p->cap_toks * sizeof *q,
                                (size_t)cap * sizeof *q);
        if (!q)
            return nomem(p);
        p->toks = q;
        p->cap_toks = cap;
    }
    p->toks[p->n_toks++] = t;
    return SP_OK;
}

static bool is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

static size_t skip_space(const char *s, size_t n, size_t pos) {
    size_t k;
    while (pos < n && (k = sp__space_at(s + pos, n - pos)) > 0)
        pos += k;
    return pos;
}

/* Emits the text [a, b) that precedes a tag whose sign is `sign` ('-', '+' or 0); lstrip
 * applies to block and comment tags. */
static sp_err emit_text(P *p, size_t a, size_t b, char sign, bool lstrip, bool line_start) {
    const char *s = p->t->src;
    if (sign == '-') {
        size_t k;
        while (b > a && (k = sp__space_before(s + a, b - a)) > 0)
            b -= k;
    } else if (sign != '+' && lstrip) {
        size_t l = b;
        while (l > a && s[l - 1] != '\n')
            l--;
        if ((l > a || line_start) && l < b) {
            size_t q = l, k;
            while (q < b && (k = sp__space_at(s + q, b - q)) > 0)
                q += k;
            if (q == b)
                b = l;
        }
    }
    if (b > a)
        return push_tok(p, (tok){.type = T_DATA, .off = (uint32_t)a, .s = s + a, .n = (uint32_t)(b - a)});
    return SP_OK;
}

/* After a tag's end delimiter at pos: `-` strips whitespace, a plain block end eats one
 * newline (trim_blocks). */
static size_t after_end(const char *s, size_t n, size_t pos, char sign, bool trim) {
    if (sign == '-')
        return skip_space(s, n, pos);
    if (sign != '+' && trim && pos < n && s[pos] == '\n')
        return pos + 1;
    return pos;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes a string literal body s[0..n) with Python's escapes into the arena. */
static sp_err decode_string(P *p, const char *s, size_t n, uint32_t off, tok *t) {
    if (!memchr(s, '\\', n)) {
        t->s = s;
        t->n = (uint32_t)n;
        return SP_OK;
    }
    char *o = sp__arena_alloc(&p->t->arena, n + 1);
    if (!o)
        return nomem(p);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) {
            o[k++] = s[i];
            continue;
        }
        char c = s[++i];
        uint32_t cp;
        int digits = 0;
        switch (c) {
        case '\n':
            continue;
        case '\\':
        case '\'':
        case '"':
            o[k++] = c;
            continue;
        case 'a':
            o[k++] = '\a';
            continue;
        case 'b':
            o[k++] = '\b';
            continue;
        case 'f':
            o[k++] = '\f';
            continue;
        case 'n':
            o[k++] = '\n';
            continue;
        case 'r':
            o[k++] = '\r';
            continue;
        case 't':
            o[k++] = '\t';
            continue;
        case 'v':
            o[k++] = '\v';
            continue;
        case 'x':
            digits = 2;
            break;
        case 'u':
            digits = 4;
            break;
        case 'U':
            digits = 8;
            break;
        default:
            if (c >= '0' && c <= '7') {
                cp = 0;
                int m = 0;
                while (m < 3 && i < n && s[i] >= '0' && s[i] <= '7') {
                    cp = cp * 8 + (uint32_t)(s[i] - '0');
                    i++;
                    m++;
                }
                i--;
                k += sp__utf8_enc(cp, o + k);
                continue;
            }
            o[k++] = '\\';
            o[k++] = c;
            continue;
        }
        cp = 0;
        for (int m = 0; m < digits; m++) {
            int h = i + 1 + (size_t)m < n ? hexval(s[i + 1 + (size_t)m]) : -1;
            if (h < 0)
                return perr(p, SP_ERR_FORMAT, off, "truncated \\%c escape in a string", c);
            cp = cp * 16 + (uint32_t)h;
        }
        i += (size_t)digits;
        // An escape never takes more bytes than its source text (\xHH: 4 -> at most 2).
        k += sp__utf8_enc(cp, o + k);
    }
    t->s = o;
    t->n = (uint32_t)k;
    return SP_OK;
}

/* Copies a run of digits (with single '_' separators) from s[j..] into buf. */
static size_t lex_digits(const char *s, size_t n, size_t j, char buf[128], size_t *k) {
    while (j < n && (is_digit(s[j]) || (s[j] == '_' && j + 1 < n && is_digit(s[j + 1])))) {
        if (s[j] != '_' && *k < 127)
            buf[(*k)++] = s[j];
        j++;
    }
    return j;
}

/* Lexes one token inside a tag at *pos. */
static sp_err lex_token(P *p, size_t *pos, int *balance) {
    const char *s = p->t->src;
    size_t n = p->t->len, i = *pos;
    tok t = {.off = (uint32_t)i};
    char c = s[i];
    if (is_name_start(c)) {
        size_t j = i;
        while (j < n && is_name_char(s[j]))
            j++;
        t.type = T_NAME;
        t.s = s + i;
        t.n = (uint32_t)(j - i);
        *pos = j;
        return push_tok(p, t);
    }
    if (c == '0' && i + 2 < n && strchr("xXoObB", s[i + 1]) && s[i + 1] &&
        hexval(s[i + 2]) >= 0) {
        int base = (s[i + 1] | 32) == 'x' ? 16 : (s[i + 1] | 32) == 'o' ? 8 : 2;
        size_t j = i + 2;
        uint64_t v = 0;
        for (; j < n && (s[j] == '_' || (hexval(s[j]) >= 0 && hexval(s[j]) < base)); j++) {
            if (s[j] == '_')
                continue;
            if (v > (uint64_t)INT64_MAX / (uint64_t)base)
                return perr(p, SP_ERR_FORMAT, t.off, "integer literal too large");
            v = v * (uint64_t)base + (uint64_t)hexval(s[j]);
        }
        if (v > (uint64_t)INT64_MAX)
            return perr(p, SP_ERR_FORMAT, t.off, "integer literal too large");
        t.type = T_INT;
        t.i = (int64_t)v;
        *pos = j;
        return push_tok(p, t);
    }
    if (is_digit(c)) {
        // A number right after '.' is an index (x.0.1), never a float.
        bool after_dot = i > 0 && s[i - 1] == '.';
        char buf[128];
        size_t k = 0, j = i;
        bool is_float = false;
        j = lex_digits(s, n, j, buf, &k);
        if (!after_dot && j + 1 < n && s[j] == '.' && is_digit(s[j + 1])) {
            is_float = true;
            if (k < sizeof buf - 1)
                buf[k++] = '.';
            j = lex_digits(s, n, j + 1, buf, &k);
        }
        if (!after_dot && j < n && (s[j] == 'e' || s[j] == 'E')) {
            size_t m = j + 1;
            if (m < n && (s[m] == '+' || s[m] == '-'))
                m++;
            if (m < n && is_digit(s[m])) {
                is_float = true;
                if (k < sizeof buf - 1)
                    buf[k++] = 'e';
                if (s[j + 1] == '-' && k < sizeof buf - 1)
                    buf[k++] = '-';
                j = lex_digits(s, n, m, buf, &k);
            }
        }
        if (k >= sizeof buf - 1)
            return perr(p, SP_ERR_FORMAT, t.off, "number literal too long");
        buf[k] = '\0';
        if (is_float) {
            t.type = T_FLOAT;
            t.f = strtod(buf, NULL);
        } else {
            errno = 0;
            long long v = strtoll(buf, NULL, 10);
            if (errno == ERANGE)
                return perr(p, SP_ERR_FORMAT, t.off, "integer literal too large");
            t.type = T_INT;
            t.i = v;
        }
        *pos = j;
        return push_tok(p, t);
    }
    if (c == '\'' || c == '"') {
        size_t j = i + 1;
        while (j < n && s[j] != c) {
            if (s[j] == '\\')
                j++;
            j++;
        }
        if (j >= n)
            return perr(p, SP_ERR_FORMAT, t.off, "unterminated string");
        t.type = T_STRING;
        sp_err e = decode_string(p, s + i + 1, j - i - 1, t.off, &t);
        if (e)
            return e;
        *pos = j + 1;
        return push_tok(p, t);
    }
    static const char two[][3] = {"//", "**", "==", "!=", "<=", ">="};
    static const uint8_t two_op[] = {O_FLOORDIV, O_POW, O_EQ, O_NE, O_LE, O_GE};
    t.type = T_OP;
    for (size_t k = 0; k < SP_ARRAY_LEN(two); k++) {
        if (i + 1 < n && s[i] == two[k][0] && s[i + 1] == two[k][1]) {
            t.op = two_op[k];
            *pos = i + 2;
            return push_tok(p, t);
        }
    }
    if (!strchr("+-/*%~()[]{},.:|=<>;", c) || c == '\0')
        return perr(p, SP_ERR_FORMAT, t.off, "unexpected char '%c'", c);
    if (c == '(' || c == '[' || c == '{')
        (*balance)++;
    if (c == ')' || c == ']' || c == '}') {
        if (*balance == 0)
            return perr(p, SP_ERR_FORMAT, t.off, "unexpected '%c'", c);
        (*balance)--;
    }
    t.op = (uint8_t)c;
    *pos = i + 1;
    return push_tok(p, t);
}

/* If a `{% raw %}` tag starts at q ('{'), returns the offset after it, else 0. */
static size_t raw_begin(const char *s, size_t n, size_t q, char *end_sign) {
    size_t i = q + 2;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    i = skip_space(s, n, i);
    if (n - i < 3 || memcmp(s + i, "raw", 3) != 0)
        return 0;
    i = skip_space(s, n, i + 3);
    *end_sign = 0;
    if (i < n && s[i] == '-') {
        *end_sign = '-';
        i++;
    }
    if (n - i < 2 || s[i] != '%' || s[i + 1] != '}')
        return 0;
    return i + 2;
}

/* Finds `{% endraw %}` from pos; returns its start (or n) and sets *after, the signs. */
static size_t raw_end(const char *s, size_t n, size_t pos, size_t *after, char *bsign,
                      char *esign) {
    for (size_t q = pos; q + 1 < n; q++) {
        if (s[q] != '{' || s[q + 1] != '%')
            continue;
        size_t i = q + 2;
        *bsign = 0;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            *bsign = s[i++];
        i = skip_space(s, n, i);
        if (n - i < 6 || memcmp(s + i, "endraw", 6) != 0)
            continue;
        i = skip_space(s, n, i + 6);
        *esign = 0;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            *esign = s[i++];
        if (n - i < 2 || s[i] != '%' || s[i + 1] != '}')
            continue;
        *after = i + 2;
        return q;
    }
    return n;
}

static sp_err lex(P *p) {
    const char *s = p->t->src;
    size_t n = p->t->len, pos = 0;
    bool line_start = true;
    sp_err e;
    while (pos < n) {
        size_t q = pos;
        while (q + 1 < n && !(s[q] == '{' && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#')))
            q++;
        if (q + 1 >= n) {
            if ((e = emit_text(p, pos, n, 0, false, line_start)))
                return e;
            break;
        }
        char kind = s[q + 1];
        char sign = (q + 2 < n && (s[q + 2] == '-' || s[q + 2] == '+')) ? s[q + 2] : 0;
        if ((e = emit_text(p, pos, q, sign, kind != '{', line_start)))
            return e;
        size_t i = q + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            size_t end = i;
            while (end + 1 < n && !(s[end] == '#' && s[end + 1] == '}'))
                end++;
            if (end + 1 >= n)
                return perr(p, SP_ERR_FORMAT, (uint32_t)q, "missing end of comment tag");
            char esign = (end > i && (s[end - 1] == '-' || s[end - 1] == '+')) ? s[end - 1] : 0;
            pos = after_end(s, n, end + 2, esign, true);
            line_start = s[pos - 1] == '\n';
            continue;
        }
        char rsign;
        size_t rb = kind == '%' ? raw_begin(s, n, q, &rsign) : 0;
        if (rb) {
            size_t body = rsign == '-' ? skip_space(s, n, rb) : rb;
            size_t after;
            char bsign, esign;
            size_t re = raw_end(s, n, body, &after, &bsign, &esign);
            if (re == n)
                return perr(p, SP_ERR_FORMAT, (uint32_t)q, "missing end of raw directive");
            if ((e = emit_text(p, body, re, bsign, true, s[body - 1] == '\n')))
                return e;
            pos = after_end(s, n, after, esign, true);
            line_start = s[pos - 1] == '\n';
            continue;
        }
        bool var = kind == '{';
        if ((e = push_tok(p, (tok){.type = var ? T_VAR_BEGIN : T_BLOCK_BEGIN, .off = (uint32_t)q})))
            return e;
        int balance = 0;
        for (;;) {
            i = skip_space(s, n, i);
            if (i >= n)
                return perr(p, SP_ERR_FORMAT, (uint32_t)q, "unexpected end of template, expected '%s'",
                            var ? "}}" : "%}");
            char close = var ? '}' : '%';
            if (balance == 0) {
                char esign = 0;
                size_t j = i;
                if (s[j] == '-' || (s[j] == '+' && !var))
                    esign = s[j++];
                if (j + 1 < n && s[j] == close && s[j + 1] == '}') {
                    if ((e = push_tok(p, (tok){.type = var ? T_VAR_END : T_BLOCK_END, .off = (uint32_t)i})))
                        return e;
                    pos = after_end(s, n, j + 2, esign, !var);
                    line_start = s[pos - 1] == '\n';
                    break;
                }
            }
            if ((e = lex_token(p, &i, &balance)))
                return e;
        }
    }
    return push_tok(p, (tok){.type = T_EOF, .off = (uint32_t)n});
}

/* ---- parser helpers ---------------------------------------------------------------------- */

static tok *cur(P *p) { return &p->toks[p->i]; }
static tok *peek(P *p, uint32_t k) {
    uint32_t j = p->i + k;
    return &p->toks[j < p->n_toks ? j : p->n_toks - 1];
}
static void adv(P *p) {
    if (p->i + 1 < p->n_toks)
        p->i++;
}
static bool is_op(const tok *t, char op) { return t->type == T_OP && t->op == (uint8_t)op; }
static bool is_name(const tok *t, const char *name) {
    size_t n = strlen(name);
    return t->type == T_NAME && t->n == n && memcmp(t->s, name, n) == 0;
}

static const char *tok_desc(const tok *t, char buf[48]) {
    switch (t->type) {
    case T_EOF:
        return "end of template";
    case T_VAR_END:
        return "end of print statement";
    case T_BLOCK_END:
        return "end of statement block";
    case T_NAME:
        snprintf(buf, 48, "'%.*s'", (int)SP_MIN(t->n, 40u), t->s);
        return buf;
    case T_STRING:
        return "string";
    case T_INT:
    case T_FLOAT:
        return "number";
    case T_OP:
        if (t->op == O_FLOORDIV || t->op == O_POW || t->op == O_EQ || t->op == O_NE ||
            t->op == O_LE || t->op == O_GE)
            return "operator";
        snprintf(buf, 48, "'%c'", t->op);
        return buf;
    default:
        return "template data";
    }
}

static sp_err unexpected(P *p, const char *what) {
    char buf[48];
    return perr(p, SP_ERR_FORMAT, cur(p)->off, "expected %s, got %s", what, tok_desc(cur(p), buf));
}

static sp_err expect_op(P *p, char op) {
    if (!is_op(cur(p), op)) {
        char what[8];
        snprintf(what, sizeof what, "'%c'", op);
        return unexpected(p, what);
    }
    adv(p);
    return SP_OK;
}

static sp_err expect_end(P *p) {
    if (cur(p)->type != T_BLOCK_END)
        return unexpected(p, "end of statement block");
    adv(p);
    return SP_OK;
}

static sp_err new_node(P *p, uint8_t kind, uint32_t off, sp__node **out) {
    sp__node *n = palloc(p, sizeof *n);
    if (!n)
        return nomem(p);
    n->kind = kind;
    n->off = off;
    *out = n;
    return SP_OK;
}

/* A growable array of nodes in the template arena. */
typedef struct nvec {
    sp__node **v;
    uint32_t n, cap;
} nvec;

static sp_err nvec_push(P *p, nvec *a, sp__node *x) {
    if (a->n == a->cap) {
        if (a->cap >= UINT32_MAX / 4)
            return nomem(p);
        uint32_t cap = a->cap ? a->cap * 2 : 4;
        sp__node **q = sp__arena_grow(&p->t->arena, a->v, (size_t)a->cap * sizeof *q,
                                      (size_t)cap * sizeof *q);
        if (!q)
            return nomem(p);
        a->v = q;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return SP_OK;
}

static uint32_t sym_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* Interns an identifier; returns its symbol. */
static sp_err intern(P *p, const char *s, uint32_t n, uint32_t *out) {
    sp_tmpl *t = p->t;
    if (p->t->symtab_cap) {
        uint32_t h = sym_hash(s, n) & (p->t->symtab_cap - 1);
        while (p->t->symtab[h]) {
            const sp__val *v = &t->syms[p->t->symtab[h] - 1];
            if (v->n == n && memcmp(v->s, s, n) == 0) {
                *out = p->t->symtab[h] - 1;
                return SP_OK;
            }
            h = (h + 1) & (p->t->symtab_cap - 1);
        }
    }
    if (t->n_syms == p->syms_cap) {
        uint32_t cap = p->syms_cap ? p->syms_cap * 2 : 32;
        sp__val *q = sp__arena_grow(&t->arena, t->syms, (size_t)p->syms_cap * sizeof *q,
                                    (size_t)cap * sizeof *q);
        if (!q)
            return nomem(p);
        t->syms = q;
        p->syms_cap = cap;
    }
    if ((t->n_syms + 1) * 2 > p->t->symtab_cap) {
        uint32_t cap = p->t->symtab_cap ? p->t->symtab_cap * 2 : 64;
        uint32_t *tab = palloc(p, (size_t)cap * sizeof *tab);
        if (!tab)
            return nomem(p);
        for (uint32_t k = 0; k < t->n_syms; k++) {
            uint32_t h = sym_hash(t->syms[k].s, t->syms[k].n) & (cap - 1);
            while (tab[h])
                h = (h + 1) & (cap - 1);
            tab[h] = k + 1;
        }
        p->t->symtab = tab;
        p->t->symtab_cap = cap;
    }
    uint32_t k = t->n_syms++;
    t->syms[k] = sp__v_str(s, n);
    uint32_t h = sym_hash(s, n) & (p->t->symtab_cap - 1);
    while (p->t->symtab[h])
        h = (h + 1) & (p->t->symtab_cap - 1);
    p->t->symtab[h] = k + 1;
    *out = k;
    return SP_OK;
}

static sp_err name_node(P *p, const tok *t, sp__node **out) {
    sp__node *n = NULL;
    sp_err e = new_node(p, SP__N_NAME, t->off, &n);
    if (!e)
        e = intern(p, t->s, t->n, &n->sym);
    if (e)
        return e;
    n->lit = sp__v_str(t->s, t->n);
    n->flags = (uint16_t)sp__global_id(t->s, t->n);
    if (n->sym == p->t->sym_varargs)
        p->seen |= SP__USES_VARARGS;
    if (n->sym == p->t->sym_kwargs)
        p->seen |= SP__USES_KWARGS;
    *out = n;
    return SP_OK;
}

uint32_t sp__sym_find(const sp_tmpl *t, const char *s, size_t n) {
    if (!t->symtab_cap)
        return UINT32_MAX;
    uint32_t h = sym_hash(s, n) & (t->symtab_cap - 1);
    while (t->symtab[h]) {
        const sp__val *v = &t->syms[t->symtab[h] - 1];
        if (v->n == n && memcmp(v->s, s, n) == 0)
            return t->symtab[h] - 1;
        h = (h + 1) & (t->symtab_cap - 1);
    }
    return UINT32_MAX;
}

/* ---- expressions ------------------------------------------------------------------------- */

static sp_err parse_expr(P *p, sp__node **out);
static sp_err parse_or(P *p, sp__node **out);
static sp_err parse_unary(P *p, bool with_filter, sp__node **out);
static sp_err parse_primary(P *p, sp__node **out);
static sp_err parse_postfix(P *p, sp__node *n, sp__node **out);

static sp_err nest_in(P *p) {
    if (++p->nest > MAX_NEST)
        return perr(p, SP_ERR_FORMAT, cur(p)->off, "template nesting too deep (over %d levels)",
                    MAX_NEST);
    return SP_OK;
}

static bool tuple_end(P *p, const char *extra) {
    const tok *t = cur(p);
    return t->type == T_VAR_END || t->type == T_BLOCK_END || t->type == T_EOF || is_op(t, ')') ||
           (extra && is_name(t, extra));
}

/* Jinja's parse_tuple: one expression, or a tuple when commas follow. */
static sp_err parse_tuple(P *p, bool with_cond, bool paren, const char *extra, sp__node **out) {
    uint32_t off = cur(p)->off;
    nvec items = {0};
    bool is_tuple = false;
    sp_err e;
    for (;;) {
        if (items.n && (e = expect_op(p, ',')))
            return e;
        if (tuple_end(p, extra))
            break;
        sp__node *x = NULL;
        if ((e = with_cond ? parse_expr(p, &x) : parse_or(p, &x)) || (e = nvec_push(p, &items, x)))
            return e;
        if (is_op(cur(p), ','))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple) {
        if (items.n) {
            *out = items.v[0];
            return SP_OK;
        }
        if (!paren)
            return unexpected(p, "an expression");
    }
    sp__node *t = NULL;
    if ((e = new_node(p, SP__N_TUPLE, off, &t)))
        return e;
    t->kids = items.v;
    t->n = items.n;
    *out = t;
    return SP_OK;
}

static sp_err parse_call_args(P *p, sp__args_node **out) {
    sp_err e = expect_op(p, '(');
    if (e)
        return e;
    nvec pos = {0}, kw = {0};
    sp__val *names = NULL;
    uint32_t names_cap = 0;
    while (!is_op(cur(p), ')')) {
        if (pos.n || kw.n) {
            if ((e = expect_op(p, ',')))
                return e;
            if (is_op(cur(p), ')'))
                break;
        }
        if (is_op(cur(p), '*') || (cur(p)->type == T_OP && cur(p)->op == O_POW))
            return perr(p, SP_ERR_UNSUPPORTED, cur(p)->off, "*args and **kwargs are not supported");
        if (cur(p)->type == T_NAME && is_op(peek(p, 1), '=')) {
            const tok *name = cur(p);
            adv(p);
            adv(p);
            sp__node *v = NULL;
            if ((e = parse_expr(p, &v)) || (e = nvec_push(p, &kw, v)))
                return e;
            if (kw.n > names_cap) {
                uint32_t cap = names_cap ? names_cap * 2 : 4;
                sp__val *q = sp__arena_grow(&p->t->arena, names, names_cap * sizeof *q,
                                            cap * sizeof *q);
                if (!q)
                    return nomem(p);
                names = q;
                names_cap = cap;
            }
            names[kw.n - 1] = sp__v_str(name->s, name->n);
        } else {
            if (kw.n)
                return perr(p, SP_ERR_FORMAT, cur(p)->off, "positional argument after keyword argument");
            sp__node *v = NULL;
            if ((e = parse_expr(p, &v)) || (e = nvec_push(p, &pos, v)))
                return e;
        }
    }
    adv(p);
    sp__args_node *a = palloc(p, sizeof *a);
    if (!a)
        return nomem(p);
    a->n_pos = pos.n;
    a->pos = pos.v;
    a->n_kw = kw.n;
    a->kw = kw.v;
    a->kw_name = names;
    *out = a;
    return SP_OK;
}

/* A dotted filter or test name. */
static sp_err parse_dotted(P *p, sp__val *out) {
    const tok *t = cur(p);
    if (t->type != T_NAME)
        return unexpected(p, "a name");
    const char *start = t->s;
    const char *end = t->s + t->n;
    adv(p);
    while (is_op(cur(p), '.') && peek(p, 1)->type == T_NAME) {
        adv(p);
        end = cur(p)->s + cur(p)->n;
        adv(p);
    }
    *out = sp__v_str(start, (uint32_t)(end - start));
    return SP_OK;
}

static sp_err parse_filter(P *p, sp__node *in, sp__node **out) {
    uint32_t off = cur(p)->off;
    sp__node *f = NULL;
    sp_err e = new_node(p, SP__N_FILTER, off, &f);
    if (!e)
        e = parse_dotted(p, &f->lit);
    if (!e && is_op(cur(p), '('))
        e = parse_call_args(p, &f->args);
    if (e)
        return e;
    f->a = in;
    f->op = (uint8_t)sp__filter_id(f->lit.s, f->lit.n);
    *out = f;
    return SP_OK;
}

static sp_err parse_test(P *p, sp__node *in, sp__node **out) {
    uint32_t off = cur(p)->off;
    adv(p); // 'is'
    sp__node *t = NULL;
    sp_err e = new_node(p, SP__N_TEST, off, &t);
    if (e)
        return e;
    if (is_name(cur(p), "not")) {
        t->flags = 1;
        adv(p);
    }
    if ((e = parse_dotted(p, &t->lit)))
        return e;
    const tok *c = cur(p);
    if (is_op(c, '(')) {
        if ((e = parse_call_args(p, &t->args)))
            return e;
    } else if ((c->type == T_NAME || c->type == T_STRING || c->type == T_INT || c->type == T_FLOAT ||
                is_op(c, '[') || is_op(c, '{')) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is"))
            return perr(p, SP_ERR_FORMAT, c->off, "You cannot chain multiple tests with is");
        sp__node *arg = NULL;
        if ((e = parse_primary(p, &arg)) || (e = parse_postfix(p, arg, &arg)))
            return e;
        sp__args_node *a = palloc(p, sizeof *a);
        sp__node **v = palloc(p, sizeof *v);
        if (!a || !v)
            return nomem(p);
        v[0] = arg;
        a->n_pos = 1;
        a->pos = v;
        t->args = a;
    }
    t->a = in;
    t->op = (uint8_t)sp__test_id(t->lit.s, t->lit.n);
    *out = t;
    return SP_OK;
}

static sp_err parse_subscript(P *p, sp__node *obj, sp__node **out) {
    uint32_t off = cur(p)->off;
    sp_err e;
    if (is_op(cur(p), '.')) {
        adv(p);
        const tok *t = cur(p);
        sp__node *n = NULL;
        if (t->type == T_NAME) {
            if ((e = new_node(p, SP__N_GETATTR, off, &n)))
                return e;
            n->a = obj;
            n->lit = sp__v_str(t->s, t->n);
        } else if (t->type == T_INT) {
            sp__node *k = NULL;
            if ((e = new_node(p, SP__N_GETITEM, off, &n)) || (e = new_node(p, SP__N_CONST, t->off, &k)))
                return e;
            k->lit = sp__v_int(t->i);
            n->a = obj;
            n->b = k;
        } else {
            return unexpected(p, "name or number");
        }
        adv(p);
        *out = n;
        return SP_OK;
    }
    adv(p); // '['
    sp__node *part[3] = {NULL, NULL, NULL};
    bool slice = false;
    if (!is_op(cur(p), ':')) {
        if ((e = parse_expr(p, &part[0])))
            return e;
    }
    if (is_op(cur(p), ':')) {
        slice = true;
        adv(p);
        if (!is_op(cur(p), ']') && !is_op(cur(p), ':') && (e = parse_expr(p, &part[1])))
            return e;
        if (is_op(cur(p), ':')) {
            adv(p);
            if (!is_op(cur(p), ']') && (e = parse_expr(p, &part[2])))
                return e;
        }
    }
    if (is_op(cur(p), ','))
        return perr(p, SP_ERR_UNSUPPORTED, cur(p)->off, "tuple subscripts are not supported");
    if ((e = expect_op(p, ']')))
        return e;
    sp__node *n = NULL;
    if ((e = new_node(p, slice ? SP__N_SLICE : SP__N_GETITEM, off, &n)))
        return e;
    n->a = obj;
    if (slice) {
        n->kids = palloc(p, 3 * sizeof *n->kids);
        if (!n->kids)
            return nomem(p);
        memcpy(n->kids, part, sizeof part);
        n->n = 3;
    } else {
        n->b = part[0];
    }
    *out = n;
    return SP_OK;
}

static sp_err parse_postfix(P *p, sp__node *n, sp__node **out) {
    sp_err e;
    for (;;) {
        if (is_op(cur(p), '.') || is_op(cur(p), '[')) {
            if ((e = parse_subscript(p, n, &n)))
                return e;
        } else if (is_op(cur(p), '(')) {
            sp__node *c = NULL;
            if ((e = new_node(p, SP__N_CALL, cur(p)->off, &c)) || (e = parse_call_args(p, &c->args)))
                return e;
            c->a = n;
            n = c;
        } else {
            break;
        }
    }
    *out = n;
    return SP_OK;
}

static sp_err parse_filter_expr(P *p, sp__node *n, sp__node **out) {
    sp_err e;
    for (;;) {
        if (is_op(cur(p), '|')) {
            adv(p);
            if ((e = parse_filter(p, n, &n)))
                return e;
        } else if (is_name(cur(p), "is")) {
            if ((e = parse_test(p, n, &n)))
                return e;
        } else if (is_op(cur(p), '(')) {
            sp__node *c = NULL;
            if ((e = new_node(p, SP__N_CALL, cur(p)->off, &c)) || (e = parse_call_args(p, &c->args)))
                return e;
            c->a = n;
            n = c;
        } else {
            break;
        }
    }
    *out = n;
    return SP_OK;
}

static sp_err parse_primary(P *p, sp__node **out) {
    tok *t = cur(p);
    sp__node *n = NULL;
    sp_err e;
    switch (t->type) {
    case T_NAME: {
        static const struct {
            const char *s;
            int v;
        } consts[] = {{"true", 1}, {"True", 1}, {"false", 0}, {"False", 0}, {"none", 2}, {"None", 2}};
        for (size_t k = 0; k < SP_ARRAY_LEN(consts); k++) {
            if (is_name(t, consts[k].s)) {
                if ((e = new_node(p, SP__N_CONST, t->off, &n)))
                    return e;
                n->lit = consts[k].v == 2 ? sp__v_none() : sp__v_bool(consts[k].v);
                adv(p);
                *out = n;
                return SP_OK;
            }
        }
        if ((e = name_node(p, t, &n)))
            return e;
        adv(p);
        *out = n;
        return SP_OK;
    }
    case T_STRING: {
        if ((e = new_node(p, SP__N_CONST, t->off, &n)))
            return e;
        // Adjacent literals concatenate.
        if (peek(p, 1)->type != T_STRING) {
            n->lit = sp__v_str(t->s, t->n);
            adv(p);
        } else {
            size_t total = 0;
            for (uint32_t k = 0; peek(p, k)->type == T_STRING; k++)
                total += peek(p, k)->n;
            if (total > UINT32_MAX)
                return nomem(p);
            char *buf = sp__arena_alloc(&p->t->arena, total);
            if (!buf)
                return nomem(p);
            size_t o = 0;
            while (cur(p)->type == T_STRING) {
                memcpy(buf + o, cur(p)->s, cur(p)->n);
                o += cur(p)->n;
                adv(p);
            }
            n->lit = sp__v_str(buf, (uint32_t)total);
        }
        *out = n;
        return SP_OK;
    }
    case T_INT:
    case T_FLOAT:
        if ((e = new_node(p, SP__N_CONST, t->off, &n)))
            return e;
        n->lit = t->type == T_INT ? sp__v_int(t->i) : sp__v_float(t->f);
        adv(p);
        *out = n;
        return SP_OK;
    default:
        break;
    }
    if (is_op(t, '(')) {
        adv(p);
        if ((e = parse_tuple(p, true, true, NULL, &n)) || (e = expect_op(p, ')')))
            return e;
        *out = n;
        return SP_OK;
    }
    if (is_op(t, '[') || is_op(t, '{')) {
        bool dict = is_op(t, '{');
        char close = dict ? '}' : ']';
        if ((e = new_node(p, dict ? SP__N_DICT : SP__N_LIST, t->off, &n)))
            return e;
        adv(p);
        nvec items = {0};
        while (!is_op(cur(p), close)) {
            if (items.n) {
                if ((e = expect_op(p, ',')))
                    return e;
                if (is_op(cur(p), close))
                    break;
            }
            sp__node *x = NULL;
            if ((e = parse_expr(p, &x)) || (e = nvec_push(p, &items, x)))
                return e;
            if (dict) {
                if ((e = expect_op(p, ':')) || (e = parse_expr(p, &x)) || (e = nvec_push(p, &items, x)))
                    return e;
            }
        }
        adv(p);
        n->kids = items.v;
        n->n = items.n;
        *out = n;
        return SP_OK;
    }
    return unexpected(p, "an expression");
}

static sp_err parse_unary(P *p, bool with_filter, sp__node **out) {
    sp_err e = nest_in(p);
    if (e)
        return e;
    sp__node *n = NULL;
    const tok *t = cur(p);
    if (is_op(t, '-') || is_op(t, '+')) {
        if ((e = new_node(p, SP__N_UNARY, t->off, &n)))
            return e;
        n->op = t->op;
        adv(p);
        if ((e = parse_unary(p, false, &n->a)))
            return e;
    } else if ((e = parse_primary(p, &n))) {
        return e;
    }
    if ((e = parse_postfix(p, n, &n)))
        return e;
    if (with_filter && (e = parse_filter_expr(p, n, &n)))
        return e;
    p->nest--;
    *out = n;
    return SP_OK;
}

static sp_err binary(P *p, uint8_t op, uint32_t off, sp__node *a, sp__node *b, sp__node **out) {
    sp__node *n = NULL;
    sp_err e = new_node(p, SP__N_BINARY, off, &n);
    if (e)
        return e;
    n->op = op;
    n->a = a;
    n->b = b;
    *out = n;
    return SP_OK;
}

static sp_err parse_pow(P *p, sp__node **out) {
    sp__node *n = NULL, *r = NULL;
    sp_err e = parse_unary(p, true, &n);
    while (!e && cur(p)->type == T_OP && cur(p)->op == O_POW) {
        uint32_t off = cur(p)->off;
        adv(p);
        if (!(e = parse_unary(p, true, &r)))
            e = binary(p, SP__OP_POW, off, n, r, &n);
    }
    if (!e)
        *out = n;
    return e;
}

static sp_err parse_math2(P *p, sp__node **out) {
    sp__node *n = NULL, *r = NULL;
    sp_err e = parse_pow(p, &n);
    for (;;) {
        if (e)
            return e;
        const tok *t = cur(p);
        uint8_t op = 0;
        if (is_op(t, '*'))
            op = SP__OP_MUL;
        else if (is_op(t, '/'))
            op = SP__OP_DIV;
        else if (t->type == T_OP && t->op == O_FLOORDIV)
            op = SP__OP_FLOORDIV;
        else if (is_op(t, '%'))
            op = SP__OP_MOD;
        if (!op)
            break;
        uint32_t off = t->off;
        adv(p);
        if (!(e = parse_pow(p, &r)))
            e = binary(p, op, off, n, r, &n);
    }
    *out = n;
    return SP_OK;
}

static sp_err parse_concat(P *p, sp__node **out) {
    sp__node *n = NULL, *r = NULL;
    sp_err e = parse_math2(p, &n);
    while (!e && is_op(cur(p), '~')) {
        uint32_t off = cur(p)->off;
        adv(p);
        if (!(e = parse_math2(p, &r)))
            e = binary(p, SP__OP_CONCAT, off, n, r, &n);
    }
    if (!e)
        *out = n;
    return e;
}

static sp_err parse_math1(P *p, sp__node **out) {
    sp__node *n = NULL, *r = NULL;
    sp_err e = parse_concat(p, &n);
    while (!e && (is_op(cur(p), '+') || is_op(cur(p), '-'))) {
        uint8_t op = is_op(cur(p), '+') ? SP__OP_ADD : SP__OP_SUB;
        uint32_t off = cur(p)->off;
        adv(p);
        if (!(e = parse_concat(p, &r)))
            e = binary(p, op, off, n, r, &n);
    }
    if (!e)
        *out = n;
    return e;
}

static sp_err parse_compare(P *p, sp__node **out) {
    uint32_t off = cur(p)->off;
    sp__node *first = NULL;
    sp_err e = parse_math1(p, &first);
    if (e)
        return e;
    nvec kids = {0};
    uint8_t ops[64];
    for (;;) {
        const tok *t = cur(p);
        uint8_t op = 0;
        if (t->type == T_OP) {
            switch (t->op) {
            case O_EQ:
                op = SP__OP_EQ;
                break;
            case O_NE:
                op = SP__OP_NE;
                break;
            case '<':
                op = SP__OP_LT;
                break;
            case O_LE:
                op = SP__OP_LE;
                break;
            case '>':
                op = SP__OP_GT;
                break;
            case O_GE:
                op = SP__OP_GE;
                break;
            default:
                break;
            }
            if (op)
                adv(p);
        } else if (is_name(t, "in")) {
            op = SP__OP_IN;
            adv(p);
        } else if (is_name(t, "not") && is_name(peek(p, 1), "in")) {
            op = SP__OP_NOTIN;
            adv(p);
            adv(p);
        }
        if (!op)
            break;
        if (kids.n >= SP_ARRAY_LEN(ops))
            return perr(p, SP_ERR_FORMAT, t->off, "comparison chain too long");
        ops[kids.n] = op;
        sp__node *x = NULL;
        if ((e = parse_math1(p, &x)) || (e = nvec_push(p, &kids, x)))
            return e;
    }
    if (!kids.n) {
        *out = first;
        return SP_OK;
    }
    sp__node *n = NULL;
    if ((e = new_node(p, SP__N_COMPARE, off, &n)))
        return e;
    n->a = first;
    n->kids = kids.v;
    n->n = kids.n;
    n->ops = palloc(p, kids.n);
    if (!n->ops)
        return nomem(p);
    memcpy(n->ops, ops, kids.n);
    *out = n;
    return SP_OK;
}

static sp_err parse_not(P *p, sp__node **out) {
    if (is_name(cur(p), "not")) {
        sp__node *n = NULL;
        sp_err e = nest_in(p);
        if (!e)
            e = new_node(p, SP__N_NOT, cur(p)->off, &n);
        if (e)
            return e;
        adv(p);
        if ((e = parse_not(p, &n->a)))
            return e;
        p->nest--;
        *out = n;
        return SP_OK;
    }
    return parse_compare(p, out);
}

static sp_err parse_and(P *p, sp__node **out) {
    sp__node *n = NULL;
    sp_err e = parse_not(p, &n);
    while (!e && is_name(cur(p), "and")) {
        sp__node *x = NULL;
        if ((e = new_node(p, SP__N_AND, cur(p)->off, &x)))
            return e;
        adv(p);
        x->a = n;
        e = parse_not(p, &x->b);
        n = x;
    }
    if (!e)
        *out = n;
    return e;
}

static sp_err parse_or(P *p, sp__node **out) {
    sp__node *n = NULL;
    sp_err e = parse_and(p, &n);
    while (!e && is_name(cur(p), "or")) {
        sp__node *x = NULL;
        if ((e = new_node(p, SP__N_OR, cur(p)->off, &x)))
            return e;
        adv(p);
        x->a = n;
        e = parse_and(p, &x->b);
        n = x;
    }
    if (!e)
        *out = n;
    return e;
}

static sp_err parse_expr(P *p, sp__node **out) {
    sp_err e = nest_in(p);
    if (e)
        return e;
    sp__node *n = NULL;
    if ((e = parse_or(p, &n)))
        return e;
    while (is_name(cur(p), "if")) {
        sp__node *c = NULL;
        if ((e = new_node(p, SP__N_COND, cur(p)->off, &c)))
            return e;
        adv(p);
        c->b = n;
        if ((e = parse_or(p, &c->a)))
            return e;
        if (is_name(cur(p), "else")) {
            adv(p);
            if ((e = parse_expr(p, &c->c)))
                return e;
        }
        n = c;
    }
    p->nest--;
    *out = n;
    return SP_OK;
}

/* ---- statements -------------------------------------------------------------------------- */

/* A for/set/with target: a name, or names separated by commas (optionally parenthesized);
 * with_ns also allows `name.attr`. */
static sp_err parse_target(P *p, bool with_ns, const char *extra, sp__node **out) {
    sp_err e;
    if (with_ns && cur(p)->type == T_NAME && is_op(peek(p, 1), '.') && peek(p, 2)->type == T_NAME) {
        sp__node *obj = NULL, *n = NULL;
        if ((e = name_node(p, cur(p), &obj)) || (e = new_node(p, SP__N_GETATTR, cur(p)->off, &n)))
            return e;
        adv(p);
        adv(p);
        n->a = obj;
        n->lit = sp__v_str(cur(p)->s, cur(p)->n);
        adv(p);
        *out = n;
        return SP_OK;
    }
    uint32_t off = cur(p)->off;
    bool paren = is_op(cur(p), '(');
    if (paren)
        adv(p);
    nvec names = {0};
    bool is_tuple = paren;
    for (;;) {
        if (names.n) {
            if (!is_op(cur(p), ','))
                break;
            adv(p);
            is_tuple = true;
            if (paren ? is_op(cur(p), ')') : (tuple_end(p, extra) || is_op(cur(p), '=')))
                break;
        }
        if (cur(p)->type != T_NAME)
            return unexpected(p, "a name");
        sp__node *x = NULL;
        if ((e = name_node(p, cur(p), &x)) || (e = nvec_push(p, &names, x)))
            return e;
        adv(p);
    }
    if (paren && (e = expect_op(p, ')')))
        return e;
    if (!is_tuple) {
        *out = names.v[0];
        return SP_OK;
    }
    sp__node *t = NULL;
    if ((e = new_node(p, SP__N_TUPLE, off, &t)))
        return e;
    t->kids = names.v;
    t->n = names.n;
    *out = t;
    return SP_OK;
}

static sp_err parse_body(P *p, const char *const *ends, sp__node **out, int *which);

/* Reads `{% end %}` words: after parse_body stops at one, consumes it and the block end. */
static sp_err finish(P *p) {
    adv(p);
    return expect_end(p);
}

static sp_err parse_if(P *p, uint32_t off, sp__node **out) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    sp__node *first = NULL, *n = NULL;
    sp_err e;
    // Each elif becomes an if in the else branch of the one before, built iteratively.
    for (;;) {
        sp__node *x = NULL;
        int which;
        if ((e = new_node(p, SP__N_IF, off, &x)) || (e = parse_tuple(p, false, false, NULL, &x->a)) ||
            (e = expect_end(p)) || (e = parse_body(p, ends, &x->body, &which)))
            return e;
        if (n)
            n->orelse = x;
        else
            first = x;
        n = x;
        if (which == 0) {
            off = cur(p)->off;
            adv(p);
            continue;
        }
        if (which == 1) {
            static const char *const ends2[] = {"endif", NULL};
            if ((e = finish(p)) || (e = parse_body(p, ends2, &n->orelse, &which)))
                return e;
        }
        if ((e = finish(p)))
            return e;
        break;
    }
    *out = first;
    return SP_OK;
}

static sp_err parse_for(P *p, uint32_t off, sp__node **out) {
    static const char *const ends[] = {"else", "endfor", NULL};
    sp__node *n = NULL;
    sp_err e = new_node(p, SP__N_FOR, off, &n);
    if (e || (e = parse_target(p, false, "in", &n->a)))
        return e;
    if (!is_name(cur(p), "in"))
        return unexpected(p, "'in'");
    adv(p);
    if ((e = parse_tuple(p, false, false, "recursive", &n->b)))
        return e;
    if (is_name(cur(p), "if")) {
        adv(p);
        if ((e = parse_expr(p, &n->c)))
            return e;
    }
    if (is_name(cur(p), "recursive"))
        return perr(p, SP_ERR_UNSUPPORTED, cur(p)->off, "recursive loops are not supported");
    if ((e = expect_end(p)))
        return e;
    int which;
    p->loops++;
    e = parse_body(p, ends, &n->body, &which);
    p->loops--;
    if (e)
        return e;
    if (which == 0) {
        static const char *const ends2[] = {"endfor", NULL};
        if ((e = finish(p)) || (e = parse_body(p, ends2, &n->orelse, &which)))
            return e;
    }
    if ((e = finish(p)))
        return e;
    *out = n;
    return SP_OK;
}

/* Filters of a filter block or block set: `name(args) | name ...` until the block end. */
static sp_err parse_filter_chain(P *p, sp__node *n) {
    nvec chain = {0};
    sp_err e;
    do {
        sp__node *f = NULL;
        if ((e = parse_filter(p, NULL, &f)) || (e = nvec_push(p, &chain, f)))
            return e;
    } while (is_op(cur(p), '|') && (adv(p), true));
    n->kids = chain.v;
    n->n = chain.n;
    return SP_OK;
}

static sp_err parse_set(P *p, uint32_t off, sp__node **out) {
    sp__node *target = NULL;
    sp_err e = parse_target(p, true, NULL, &target);
    if (e)
        return e;
    sp__node *n = NULL;
    if (is_op(cur(p), '=')) {
        adv(p);
        if ((e = new_node(p, SP__N_SET, off, &n)))
            return e;
        n->a = target;
        if ((e = parse_tuple(p, true, false, NULL, &n->b)) || (e = expect_end(p)))
            return e;
        *out = n;
        return SP_OK;
    }
    if ((e = new_node(p, SP__N_SETBLOCK, off, &n)))
        return e;
    n->a = target;
    if (is_op(cur(p), '|')) {
        adv(p);
        if ((e = parse_filter_chain(p, n)))
            return e;
    }
    static const char *const ends[] = {"endset", NULL};
    int which;
    if ((e = expect_end(p)) || (e = parse_body(p, ends, &n->body, &which)) || (e = finish(p)))
        return e;
    *out = n;
    return SP_OK;
}

/* Macro / call-block parameters: `(a, b=default, ...)`. */
static sp_err parse_params(P *p, sp__args_node **out) {
    sp_err e = expect_op(p, '(');
    if (e)
        return e;
    nvec names = {0}, defs = {0};
    bool seen_default = false;
    while (!is_op(cur(p), ')')) {
        if (names.n && (e = expect_op(p, ',')))
            return e;
        if (is_op(cur(p), ')'))
            break;
        if (cur(p)->type != T_NAME)
            return unexpected(p, "a parameter name");
        sp__node *x, *d = NULL;
        if ((e = name_node(p, cur(p), &x)))
            return e;
        adv(p);
        if (is_op(cur(p), '=')) {
            adv(p);
            if ((e = parse_expr(p, &d)))
                return e;
            seen_default = true;
        } else if (seen_default) {
            return perr(p, SP_ERR_FORMAT, x->off, "non-default argument follows default argument");
        }
        if ((e = nvec_push(p, &names, x)) || (e = nvec_push(p, &defs, d)))
            return e;
    }
    adv(p);
    sp__args_node *a = palloc(p, sizeof *a);
    if (!a)
        return nomem(p);
    a->n_pos = names.n;
    a->pos = names.v;
    a->n_kw = names.n;
    a->kw = defs.v;
    *out = a;
    return SP_OK;
}

static sp_err parse_macro_body(P *p, const char *end, sp__node *n) {
    const char *const ends[] = {end, NULL};
    int which;
    uint32_t loops = p->loops;
    uint16_t seen = p->seen;
    p->loops = 0;
    p->seen = 0;
    sp_err e = parse_body(p, ends, &n->body, &which);
    n->flags = p->seen;
    p->loops = loops;
    p->seen = seen;
    if (!e)
        e = finish(p);
    return e;
}

static sp_err parse_macro(P *p, uint32_t off, sp__node **out) {
    sp__node *n = NULL;
    sp_err e = new_node(p, SP__N_MACRO, off, &n);
    if (e)
        return e;
    if (cur(p)->type != T_NAME)
        return unexpected(p, "a macro name");
    if ((e = intern(p, cur(p)->s, cur(p)->n, &n->sym)))
        return e;
    n->lit = sp__v_str(cur(p)->s, cur(p)->n);
    adv(p);
    if ((e = parse_params(p, &n->args)) || (e = expect_end(p)) ||
        (e = parse_macro_body(p, "endmacro", n)))
        return e;
    *out = n;
    return SP_OK;
}

static sp_err parse_call_block(P *p, uint32_t off, sp__node **out) {
    sp__node *n = NULL;
    sp_err e = new_node(p, SP__N_CALLBLOCK, off, &n);
    if (e)
        return e;
    if (is_op(cur(p), '(')) {
        if ((e = parse_params(p, &n->args)))
            return e;
    } else {
        n->args = palloc(p, sizeof *n->args);
        if (!n->args)
            return nomem(p);
    }
    if ((e = parse_expr(p, &n->a)))
        return e;
    if (n->a->kind != SP__N_CALL)
        return perr(p, SP_ERR_FORMAT, n->a->off, "expected call");
    if ((e = expect_end(p)) || (e = parse_macro_body(p, "endcall", n)))
        return e;
    *out = n;
    return SP_OK;
}

static sp_err parse_filter_block(P *p, uint32_t off, sp__node **out) {
    sp__node *n = NULL;
    sp_err e = new_node(p, SP__N_FILTERBLOCK, off, &n);
    static const char *const ends[] = {"endfilter", NULL};
    int which;
    if (e || (e = parse_filter_chain(p, n)) || (e = expect_end(p)) ||
        (e = parse_body(p, ends, &n->body, &which)) || (e = finish(p)))
        return e;
    *out = n;
    return SP_OK;
}

static sp_err parse_with(P *p, uint32_t off, sp__node **out) {
    sp__node *n = NULL;
    sp_err e = new_node(p, SP__N_WITH, off, &n);
    if (e)
        return e;
    nvec pairs = {0};
    while (cur(p)->type != T_BLOCK_END) {
        if (pairs.n && (e = expect_op(p, ',')))
            return e;
        sp__node *t = NULL, *v = NULL;
        if ((e = parse_target(p, false, NULL, &t)) || (e = expect_op(p, '=')) ||
            (e = parse_expr(p, &v)) || (e = nvec_push(p, &pairs, t)) || (e = nvec_push(p, &pairs, v)))
            return e;
    }
    n->kids = pairs.v;
    n->n = pairs.n;
    static const char *const ends[] = {"endwith", NULL};
    int which;
    if ((e = expect_end(p)) || (e = parse_body(p, ends, &n->body, &which)) || (e = finish(p)))
        return e;
    *out = n;
    return SP_OK;
}

static sp_err parse_stmt(P *p, sp__node **out) {
    const tok *t = cur(p);
    uint32_t off = t->off;
    if (t->type != T_NAME)
        return unexpected(p, "a statement name");
    adv(p);
    if (is_name(t, "if"))
        return parse_if(p, off, out);
    if (is_name(t, "for"))
        return parse_for(p, off, out);
    if (is_name(t, "set"))
        return parse_set(p, off, out);
    if (is_name(t, "macro"))
        return parse_macro(p, off, out);
    if (is_name(t, "call"))
        return parse_call_block(p, off, out);
    if (is_name(t, "filter"))
        return parse_filter_block(p, off, out);
    if (is_name(t, "with"))
        return parse_with(p, off, out);
    if (is_name(t, "break") || is_name(t, "continue")) {
        bool brk = is_name(t, "break");
        if (!p->loops)
            return perr(p, SP_ERR_FORMAT, off, "'%s' outside of a loop", brk ? "break" : "continue");
        sp__node *n = NULL;
        sp_err e = new_node(p, brk ? SP__N_BREAK : SP__N_CONTINUE, off, &n);
        if (!e)
            e = expect_end(p);
        if (!e)
            *out = n;
        return e;
    }
    if (is_name(t, "generation")) {
        // transformers' marker of assistant text: renders its body unchanged.
        static const char *const ends[] = {"endgeneration", NULL};
        int which;
        sp_err e = expect_end(p);
        if (!e)
            e = parse_body(p, ends, out, &which);
        if (!e)
            e = finish(p);
        return e;
    }
    static const char *const unsupported[] = {"include", "extends", "block", "import", "from",
                                              "autoescape", "trans", "do", "pluralize"};
    for (size_t k = 0; k < SP_ARRAY_LEN(unsupported); k++)
        if (is_name(t, unsupported[k]))
            return perr(p, SP_ERR_UNSUPPORTED, off, "unsupported tag '%s'", unsupported[k]);
    return perr(p, SP_ERR_FORMAT, off, "Encountered unknown tag '%.*s'", (int)SP_MIN(t->n, 40u), t->s);
}

/* Parses statements until EOF (ends == NULL) or a block whose first word is in ends; then
 * cur(p) is that word and *which its index. */
static sp_err parse_body(P *p, const char *const *ends, sp__node **out, int *which) {
    sp_err e = nest_in(p);
    if (e)
        return e;
    sp__node *body = NULL;
    if ((e = new_node(p, SP__N_BODY, cur(p)->off, &body)))
        return e;
    nvec kids = {0};
    for (;;) {
        tok *t = cur(p);
        sp__node *n = NULL;
        if (t->type == T_EOF) {
            if (ends) {
                char want[64];
                snprintf(want, sizeof want, "'%s'", ends[0]);
                for (int k = 1; ends[k]; k++)
                    if (strcmp(ends[k], "endif") == 0 || strncmp(ends[k], "end", 3) == 0)
                        snprintf(want, sizeof want, "'%s'", ends[k]);
                return perr(p, SP_ERR_FORMAT, t->off, "unexpected end of template, expected %s", want);
            }
            break;
        }
        if (t->type == T_DATA) {
            if ((e = new_node(p, SP__N_DATA, t->off, &n)))
                return e;
            n->lit = sp__v_str(t->s, t->n);
            adv(p);
        } else if (t->type == T_VAR_BEGIN) {
            if ((e = new_node(p, SP__N_PRINT, t->off, &n)))
                return e;
            adv(p);
            if ((e = parse_tuple(p, true, false, NULL, &n->a)))
                return e;
            if (cur(p)->type != T_VAR_END)
                return unexpected(p, "end of print statement");
            adv(p);
        } else if (t->type == T_BLOCK_BEGIN) {
            adv(p);
            const tok *w = cur(p);
            if (ends) {
                for (int k = 0; ends[k]; k++) {
                    if (is_name(w, ends[k])) {
                        *which = k;
                        body->kids = kids.v;
                        body->n = kids.n;
                        *out = body;
                        p->nest--;
                        return SP_OK;
                    }
                }
            }
            static const char *const stray[] = {"endif", "endfor", "else", "elif", "endset",
                                                "endmacro", "endcall", "endfilter", "endwith",
                                                "endgeneration", "endraw"};
            for (size_t k = 0; k < SP_ARRAY_LEN(stray); k++)
                if (is_name(w, stray[k]))
                    return perr(p, SP_ERR_FORMAT, w->off, "unexpected '%s'", stray[k]);
            if ((e = parse_stmt(p, &n)))
                return e;
        } else {
            char buf[48];
            return perr(p, SP_ERR_FORMAT, t->off, "unexpected %s", tok_desc(t, buf));
        }
        if ((e = nvec_push(p, &kids, n)))
            return e;
    }
    body->kids = kids.v;
    body->n = kids.n;
    *out = body;
    p->nest--;
    return SP_OK;
}

sp_err sp__parse(sp_tmpl *t, sp_diag *diag) {
    P p = {.t = t, .diag = diag};
    sp_err e = lex(&p);
    if (e)
        return e;
    static const char *const wk[] = {"loop", "caller", "varargs", "kwargs"};
    uint32_t *dst[] = {&t->sym_loop, &t->sym_caller, &t->sym_varargs, &t->sym_kwargs};
    for (size_t k = 0; k < SP_ARRAY_LEN(wk); k++)
        if ((e = intern(&p, wk[k], (uint32_t)strlen(wk[k]), dst[k])))
            return e;
    int which;
    return parse_body(&p, NULL, &t->root, &which);
}
