/* Filters, tests, global functions and methods, with the semantics of Jinja2's builtins and
 * of the Python str/dict methods templates call. Case mapping covers ASCII, Latin-1, Latin
 * Extended-A, Greek and Cyrillic; other scripts are left as they are. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "tmpl/tmpl_int.h"

/* ---- arguments --------------------------------------------------------------------------- */

static const sp__val ABSENT = {.t = SP__UNDEF, .aux = 0xffff};
static bool absent(sp__val v) { return v.t == SP__UNDEF && v.aux == 0xffff; }

/* Binds a's arguments to the parameter names (NULL-terminated) of function fn: positional in
 * order, then keywords; missing ones are ABSENT. */
static sp_err bind(sp__rt *r, const char *fn, const sp__args *a, const char *const *names,
                   sp__val *vals, uint32_t off) {
    uint32_t n = 0;
    while (names[n])
        vals[n++] = ABSENT;
    if (a->n_pos > n)
        return sp__fail(r, SP_ERR_FORMAT, off, "%s() takes at most %u argument(s) (%u given)", fn, n,
                        a->n_pos);
    for (uint32_t i = 0; i < a->n_pos; i++)
        vals[i] = a->pos[i];
    for (uint32_t k = 0; k < a->n_kw; k++) {
        const sp__val *kn = &a->kw_name[k];
        uint32_t i = 0;
        while (i < n && !(strlen(names[i]) == kn->n && memcmp(names[i], kn->s, kn->n) == 0))
            i++;
        if (i == n)
            return sp__fail(r, SP_ERR_FORMAT, off, "%s() got an unexpected keyword argument '%.*s'",
                            fn, (int)SP_MIN(kn->n, 64u), kn->s);
        if (!absent(vals[i]))
            return sp__fail(r, SP_ERR_FORMAT, off, "%s() got multiple values for argument '%s'", fn,
                            names[i]);
        vals[i] = a->kw[k];
    }
    return SP_OK;
}

#define BIND(fn, ...)                                                                          \
    static const char *const names_[] = {__VA_ARGS__, NULL};                                   \
    sp__val arg[SP_ARRAY_LEN(names_)];                                                         \
    {                                                                                          \
        sp_err be_ = bind(r, fn, a, names_, arg, off);                                         \
        if (be_)                                                                               \
            return be_;                                                                        \
    }

#define NO_ARGS(fn)                                                                            \
    if (a->n_pos || a->n_kw)                                                                   \
        return sp__fail(r, SP_ERR_FORMAT, off, "%s() takes no arguments", fn);

static bool is_int(sp__val v) { return v.t == SP__INT || v.t == SP__BOOL; }
static bool is_num(sp__val v) { return is_int(v) || v.t == SP__FLOAT; }
static int64_t as_int(sp__val v) { return v.t == SP__BOOL ? (int64_t)v.b : v.i; }
static double as_f(sp__val v) { return v.t == SP__FLOAT ? v.f : (double)as_int(v); }

static sp_err want_str(sp__rt *r, sp__val v, const char *what, uint32_t off) {
    if (v.t == SP__STR)
        return SP_OK;
    if (v.t == SP__UNDEF)
        return sp__undef_error(r, v, off);
    return sp__fail(r, SP_ERR_FORMAT, off, "%s must be str, not %s", what, sp__type_name(v));
}

static sp_err want_int(sp__rt *r, sp__val v, const char *what, uint32_t off, int64_t *out) {
    if (is_int(v)) {
        *out = as_int(v);
        return SP_OK;
    }
    if (v.t == SP__UNDEF)
        return sp__undef_error(r, v, off);
    return sp__fail(r, SP_ERR_FORMAT, off, "%s must be an integer, not %s", what, sp__type_name(v));
}

static sp_err undef_msg(sp__rt *r, const char *msg, uint32_t off, sp__val *out) {
    sp__undef *u = sp__alloc(r, sizeof *u);
    if (!u)
        return sp__oom(r, off);
    u->kind = SP__U_MSG;
    u->msg = msg;
    *out = sp__v_undef(u);
    return SP_OK;
}

/* ---- case mapping ------------------------------------------------------------------------ */

static uint32_t cp_lower(uint32_t c) {
    if (c < 0x80)
        return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if ((c >= 0xc0 && c <= 0xde && c != 0xd7) || (c >= 0x391 && c <= 0x3ab && c != 0x3a2) ||
        (c >= 0x410 && c <= 0x42f))
        return c + 32;
    if (c >= 0x400 && c <= 0x40f)
        return c + 80;
    if ((c >= 0x100 && c <= 0x12f) || (c >= 0x132 && c <= 0x137) || (c >= 0x14a && c <= 0x177))
        return (c % 2 == 0) ? c + 1 : c;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e))
        return (c % 2 == 1) ? c + 1 : c;
    return c;
}

static uint32_t cp_upper(uint32_t c) {
    if (c < 0x80)
        return (c >= 'a' && c <= 'z') ? c - 32 : c;
    if ((c >= 0xe0 && c <= 0xfe && c != 0xf7) || (c >= 0x3b1 && c <= 0x3cb && c != 0x3c2) ||
        (c >= 0x430 && c <= 0x44f))
        return c - 32;
    if (c == 0x3c2)
        return 0x3a3;
    if (c >= 0x450 && c <= 0x45f)
        return c - 80;
    if ((c >= 0x100 && c <= 0x12f) || (c >= 0x132 && c <= 0x137) || (c >= 0x14a && c <= 0x177))
        return (c % 2 == 1) ? c - 1 : c;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e))
        return (c % 2 == 0) ? c - 1 : c;
    return c;
}

static bool cp_cased(uint32_t c) { return cp_lower(c) != c || cp_upper(c) != c || c == 0xdf; }
static bool cp_is_upper(uint32_t c) { return cp_lower(c) != c; }
static bool cp_is_lower(uint32_t c) { return cp_upper(c) != c || c == 0xdf; }

enum { CASE_LOWER, CASE_UPPER, CASE_TITLE, CASE_CAPITALIZE, CASE_JINJA_TITLE };

static sp_err map_case(sp__rt *r, sp__val s, int mode, uint32_t off, sp__val *out) {
    sp__buf b = {0};
    bool prev_cased = false, start = true;
    sp_err e = sp__steps(r, s.n / 64, off);
    for (size_t i = 0; !e && i < s.n;) {
        size_t len;
        uint32_t c = sp__utf8_dec(s.s + i, s.n - i, &len), m = c;
        switch (mode) {
        case CASE_LOWER:
            m = cp_lower(c);
            break;
        case CASE_UPPER:
            m = cp_upper(c);
            break;
        case CASE_TITLE:
            m = prev_cased ? cp_lower(c) : cp_upper(c);
            prev_cased = cp_cased(c);
            break;
        case CASE_CAPITALIZE:
            m = i == 0 ? cp_upper(c) : cp_lower(c);
            break;
        default: {
            // Jinja's title: words begin after whitespace, '-', '(', '{', '[' or '<'.
            bool sep = sp__space_at(s.s + i, s.n - i) || c == '-' || c == '(' || c == '{' ||
                       c == '[' || c == '<';
            m = sep ? c : start ? cp_upper(c) : cp_lower(c);
            start = sep;
        }
        }
        char enc[4];
        size_t k = m == c ? len : sp__utf8_enc(m, enc);
        e = sp__buf_put(r, &b, m == c ? s.s + i : enc, k, off);
        i += len;
    }
    if (!e)
        *out = sp__buf_val(&b);
    return e;
}

/* ---- string helpers ------------------------------------------------------------------------ */

static bool in_chars(uint32_t c, sp__val chars) {
    for (size_t i = 0; i < chars.n;) {
        size_t len;
        if (sp__utf8_dec(chars.s + i, chars.n - i, &len) == c)
            return true;
        i += len;
    }
    return false;
}

/* Python's strip family: which = 1 left, 2 right, 3 both; chars ABSENT/None = whitespace. */
static sp__val strip(sp__val s, sp__val chars, int which) {
    size_t a = 0, b = s.n;
    bool ws = chars.t != SP__STR;
    if (which & 1) {
        while (a < b) {
            size_t len;
            if (ws) {
                len = sp__space_at(s.s + a, b - a);
                if (!len)
                    break;
            } else if (!in_chars(sp__utf8_dec(s.s + a, b - a, &len), chars)) {
                break;
            }
            a += len;
        }
    }
    if (which & 2) {
        while (b > a) {
            if (ws) {
                size_t len = sp__space_before(s.s + a, b - a);
                if (!len)
                    break;
                b -= len;
            } else {
                size_t st = b - 1;
                while (st > a && ((unsigned char)s.s[st] & 0xc0) == 0x80)
                    st--;
                size_t len;
                if (!in_chars(sp__utf8_dec(s.s + st, b - st, &len), chars))
                    break;
                b = st;
            }
        }
    }
    return sp__v_str(s.s + a, (uint32_t)(b - a));
}

static const char *find_sub(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn == 0)
        return h;
    if (hn < nn)
        return NULL;
    return memmem(h, hn, n, nn);
}

static const char *rfind_sub(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn == 0)
        return h + hn;
    for (size_t i = hn; i >= nn; i--)
        if (memcmp(h + i - nn, n, nn) == 0)
            return h + i - nn;
    return NULL;
}

static sp_err str_replace(sp__rt *r, sp__val s, sp__val old, sp__val rep, int64_t count,
                          uint32_t off, sp__val *out) {
    if (count < 0)
        count = INT64_MAX;
    sp__buf b = {0};
    sp_err e = sp__steps(r, s.n / 64, off);
    if (e)
        return e;
    if (old.n == 0) {
        // Inserts rep before every character and at the end.
        size_t i = 0;
        int64_t done = 0;
        while (!e && done < count) {
            e = sp__buf_put(r, &b, rep.s, rep.n, off);
            done++;
            if (!e && i >= s.n)
                break;
            size_t len;
            sp__utf8_dec(s.s + i, s.n - i, &len);
            if (!e)
                e = sp__buf_put(r, &b, s.s + i, len, off);
            i += len;
        }
        if (!e && i < s.n)
            e = sp__buf_put(r, &b, s.s + i, s.n - i, off);
        if (!e)
            *out = sp__buf_val(&b);
        return e;
    }
    size_t i = 0;
    int64_t done = 0;
    while (!e && done < count) {
        const char *hit = find_sub(s.s + i, s.n - i, old.s, old.n);
        if (!hit)
            break;
        size_t at = (size_t)(hit - s.s);
        e = sp__buf_put(r, &b, s.s + i, at - i, off);
        if (!e)
            e = sp__buf_put(r, &b, rep.s, rep.n, off);
        i = at + old.n;
        done++;
    }
    if (!e && done == 0) {
        *out = s;
        return SP_OK;
    }
    if (!e)
        e = sp__buf_put(r, &b, s.s + i, s.n - i, off);
    if (!e)
        *out = sp__buf_val(&b);
    return e;
}

static sp_err push_str(sp__rt *r, sp__list *l, const char *p, size_t n, uint32_t off) {
    return sp__list_push(r, l, sp__v_str(p, (uint32_t)n), off);
}

/* str.split / str.rsplit. */
static sp_err str_split(sp__rt *r, sp__val s, sp__val sep, int64_t maxsplit, bool right,
                        uint32_t off, sp__val *out) {
    sp__list *l;
    sp_err e = sp__list_new(r, 0, off, &l);
    if (!e)
        e = sp__steps(r, s.n / 16 + 1, off);
    if (e)
        return e;
    if (maxsplit < 0)
        maxsplit = INT64_MAX;
    if (sep.t == SP__STR) {
        if (sep.n == 0)
            return sp__fail(r, SP_ERR_FORMAT, off, "empty separator");
        if (!right) {
            size_t i = 0;
            for (int64_t k = 0; !e && k < maxsplit; k++) {
                const char *hit = find_sub(s.s + i, s.n - i, sep.s, sep.n);
                if (!hit)
                    break;
                e = push_str(r, l, s.s + i, (size_t)(hit - s.s) - i, off);
                i = (size_t)(hit - s.s) + sep.n;
            }
            if (!e)
                e = push_str(r, l, s.s + i, s.n - i, off);
        } else {
            size_t end = s.n;
            for (int64_t k = 0; !e && k < maxsplit; k++) {
                const char *hit = rfind_sub(s.s, end, sep.s, sep.n);
                if (!hit)
                    break;
                size_t at = (size_t)(hit - s.s);
                e = push_str(r, l, s.s + at + sep.n, end - at - sep.n, off);
                end = at;
            }
            if (!e)
                e = push_str(r, l, s.s, end, off);
            for (uint32_t i = 0; i < l->n / 2; i++) {
                sp__val t = l->v[i];
                l->v[i] = l->v[l->n - 1 - i];
                l->v[l->n - 1 - i] = t;
            }
        }
    } else if (!right) {
        size_t i = 0, k;
        int64_t splits = 0;
        while (!e) {
            while (i < s.n && (k = sp__space_at(s.s + i, s.n - i)))
                i += k;
            if (i >= s.n)
                break;
            if (splits == maxsplit) {
                e = push_str(r, l, s.s + i, s.n - i, off);
                break;
            }
            size_t j = i;
            while (j < s.n && !sp__space_at(s.s + j, s.n - j)) {
                size_t len;
                sp__utf8_dec(s.s + j, s.n - j, &len);
                j += len;
            }
            e = push_str(r, l, s.s + i, j - i, off);
            splits++;
            i = j;
        }
    } else {
        size_t end = s.n, k;
        int64_t splits = 0;
        while (!e) {
            while (end > 0 && (k = sp__space_before(s.s, end)))
                end -= k;
            if (end == 0)
                break;
            if (splits == maxsplit) {
                e = push_str(r, l, s.s, end, off);
                break;
            }
            size_t j = end;
            while (j > 0 && !sp__space_before(s.s, j)) {
                j--;
                while (j > 0 && ((unsigned char)s.s[j] & 0xc0) == 0x80)
                    j--;
            }
            e = push_str(r, l, s.s + j, end - j, off);
            splits++;
            end = j;
        }
        for (uint32_t i = 0; !e && i < l->n / 2; i++) {
            sp__val t = l->v[i];
            l->v[i] = l->v[l->n - 1 - i];
            l->v[l->n - 1 - i] = t;
        }
    }
    if (!e)
        *out = sp__v_list(l, false);
    return e;
}

/* Length of the line break at s (0 if none), as str.splitlines sees them. */
static size_t line_break(const char *s, size_t n) {
    unsigned char c = (unsigned char)s[0];
    if (c == '\r')
        return (n > 1 && s[1] == '\n') ? 2 : 1;
    if (c == '\n' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e))
        return 1;
    if (c >= 0x80) {
        size_t len;
        uint32_t cp = sp__utf8_dec(s, n, &len);
        if (cp == 0x85 || cp == 0x2028 || cp == 0x2029)
            return len;
    }
    return 0;
}

static sp_err splitlines(sp__rt *r, sp__val s, bool keepends, uint32_t off, sp__list **out) {
    sp__list *l;
    sp_err e = sp__list_new(r, 0, off, &l);
    if (!e)
        e = sp__steps(r, s.n / 16 + 1, off);
    size_t start = 0, i = 0;
    while (!e && i < s.n) {
        size_t k = line_break(s.s + i, s.n - i);
        if (!k) {
            i++;
            continue;
        }
        e = push_str(r, l, s.s + start, (keepends ? i + k : i) - start, off);
        i += k;
        start = i;
    }
    if (!e && start < s.n)
        e = push_str(r, l, s.s + start, s.n - start, off);
    if (!e)
        *out = l;
    return e;
}

static size_t cp_len(sp__val s) { return sp__utf8_count(s.s, s.n); }

/* ---- printf-style formatting (str % args, the format filter) --------------------------------- */

/* One conversion's flags, width and precision (-1 when absent). */
typedef struct conv_spec {
    bool left, plus, space, zero, alt;
    int64_t width, prec;
} conv_spec;

static size_t fill_for(const conv_spec *f, size_t len) {
    return f->width > 0 && (uint64_t)f->width > len ? (size_t)f->width - len : 0;
}

/* Text (%s, %r, %c): padded with spaces to the width, counted in characters. */
static sp_err pad(sp__rt *r, sp__buf *b, const char *s, size_t n, const conv_spec *f,
                  uint32_t off) {
    size_t fill = fill_for(f, sp__utf8_count(s, n));
    sp_err e = f->left ? SP_OK : sp__buf_fill(r, b, ' ', fill, off);
    if (!e)
        e = sp__buf_put(r, b, s, n, off);
    if (!e && f->left)
        e = sp__buf_fill(r, b, ' ', fill, off);
    return e;
}

/* A converted number laid out as Python does: sign, prefix ("0x", "0o"), digits; padded to the
 * width with spaces in front, or behind under '-', or with zeros after the prefix under '0'
 * (inf and nan included). */
static sp_err put_number(sp__rt *r, sp__buf *b, const conv_spec *f, bool neg, const char *prefix,
                         const char *digits, size_t n, uint32_t off) {
    const char *sign = neg ? "-" : f->plus ? "+" : f->space ? " " : "";
    size_t ns = strlen(sign), np = strlen(prefix);
    size_t fill = fill_for(f, ns + np + n);
    bool zeros = f->zero && !f->left;
    sp_err e = f->left || zeros ? SP_OK : sp__buf_fill(r, b, ' ', fill, off);
    if (!e)
        e = sp__buf_put(r, b, sign, ns, off);
    if (!e)
        e = sp__buf_put(r, b, prefix, np, off);
    if (!e && zeros)
        e = sp__buf_fill(r, b, '0', fill, off);
    if (!e)
        e = sp__buf_put(r, b, digits, n, off);
    if (!e && f->left)
        e = sp__buf_fill(r, b, ' ', fill, off);
    return e;
}

/* %d %i %u %x %X %o. Python takes any int; %d also takes a float (through int()), %x and %o
 * do not. */
static sp_err conv_int(sp__rt *r, sp__buf *b, char conv, const conv_spec *f, sp__val v,
                       uint32_t off) {
    bool decimal = conv == 'd' || conv == 'i' || conv == 'u';
    int64_t x = 0;
    sp_err e;
    if (is_int(v)) {
        x = as_int(v);
    } else if (v.t == SP__FLOAT && decimal) {
        if ((e = sp__float_to_int(r, v.f, off, &x)))
            return e;
    } else if (v.t == SP__UNDEF && decimal) {
        return sp__undef_error(r, v, off);
    } else {
        return sp__fail(r, SP_ERR_FORMAT, off, "%%%c format: %s is required, not %s", conv,
                        decimal ? "a real number" : "an integer", sp__type_name(v));
    }
    bool neg = x < 0;
    unsigned long long mag = neg ? 0ull - (unsigned long long)x : (unsigned long long)x;
    char digits[32];
    int nd = conv == 'x'   ? snprintf(digits, sizeof digits, "%llx", mag)
             : conv == 'X' ? snprintf(digits, sizeof digits, "%llX", mag)
             : conv == 'o' ? snprintf(digits, sizeof digits, "%llo", mag)
                           : snprintf(digits, sizeof digits, "%llu", mag);
    const char *prefix = !f->alt      ? ""
                         : conv == 'x' ? "0x"
                         : conv == 'X' ? "0X"
                         : conv == 'o' ? "0o"
                                       : "";
    // The precision is a minimum number of digits.
    sp__buf num = {0};
    if (f->prec > nd && (e = sp__buf_fill(r, &num, '0', (size_t)(f->prec - nd), off)))
        return e;
    if ((e = sp__buf_put(r, &num, digits, (size_t)nd, off)))
        return e;
    return put_number(r, b, f, neg, prefix, num.p, num.n, off);
}

/* %f %F %e %E %g %G. */
static sp_err conv_float(sp__rt *r, sp__buf *b, char conv, const conv_spec *f, sp__val v,
                         uint32_t off) {
    if (v.t == SP__UNDEF)
        return sp__undef_error(r, v, off);
    if (!is_num(v))
        return sp__fail(r, SP_ERR_FORMAT, off, "must be real number, not %s", sp__type_name(v));
    double x = as_f(v);
    bool neg = !isnan(x) && signbit(x);
    char spec[16];
    snprintf(spec, sizeof spec, "%%%s.*%c", f->alt ? "#" : "", conv);
    int prec = f->prec < 0 ? 6 : (int)f->prec;
    // spec is built above from a checked conversion and flag only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    int k = snprintf(NULL, 0, spec, prec, fabs(x));
    char *digits = k < 0 ? NULL : sp__alloc(r, (size_t)k + 1);
    if (!digits)
        return sp__oom(r, off);
    snprintf(digits, (size_t)k + 1, spec, prec, fabs(x));
#pragma GCC diagnostic pop
    return put_number(r, b, f, neg, "", digits, (size_t)k, off);
}

/* %c: an int code point or a one-character string. */
static sp_err conv_char(sp__rt *r, sp__buf *b, const conv_spec *f, sp__val v, uint32_t off) {
    char enc[4];
    if (v.t == SP__STR && sp__utf8_count(v.s, v.n) == 1)
        return pad(r, b, v.s, v.n, f, off);
    if (!is_int(v))
        return sp__fail(r, SP_ERR_FORMAT, off, "%%c requires int or char");
    int64_t x = as_int(v);
    if (x < 0 || x >= 0x110000)
        return sp__fail(r, SP_ERR_FORMAT, off, "%%c arg not in range(0x110000)");
    return pad(r, b, enc, sp__utf8_enc((uint32_t)x, enc), f, off);
}

/* Reads the digits of a width or precision at fmt[*i]; one beyond the output limit (or what
 * printf's int takes) fails. */
static sp_err read_count(sp__rt *r, sp__val fmt, size_t *i, uint32_t off, int64_t *out) {
    int64_t v = 0;
    for (; *i < fmt.n && fmt.s[*i] >= '0' && fmt.s[*i] <= '9'; (*i)++) {
        v = v * 10 + (fmt.s[*i] - '0');
        if ((uint64_t)v > r->max_out || v > INT32_MAX / 2)
            return sp__fail(r, SP_ERR_LIMIT, off, "template output exceeds its limit (%zu bytes)",
                            r->max_out);
    }
    *out = v;
    return SP_OK;
}

static sp_err py_format(sp__rt *r, sp__val fmt, const sp__val *args, uint32_t n_args,
                        const sp__dict *map, uint32_t off, sp__val *out) {
    sp__buf b = {0};
    uint32_t next = 0;
    sp_err e = sp__steps(r, fmt.n / 64, off);
    for (size_t i = 0; !e && i < fmt.n;) {
        const char *pct = memchr(fmt.s + i, '%', fmt.n - i);
        size_t stop = pct ? (size_t)(pct - fmt.s) : fmt.n;
        if ((e = sp__buf_put(r, &b, fmt.s + i, stop - i, off)) || !pct)
            break;
        i = stop + 1;
        sp__val v = ABSENT;
        if (i < fmt.n && fmt.s[i] == '(') {
            const char *close = memchr(fmt.s + i, ')', fmt.n - i);
            if (!close)
                return sp__fail(r, SP_ERR_FORMAT, off, "incomplete format key");
            if (!map)
                return sp__fail(r, SP_ERR_FORMAT, off, "format requires a mapping");
            sp__val *hit = sp__dict_get_str(map, fmt.s + i + 1, (size_t)(close - fmt.s) - i - 1);
            if (!hit)
                return sp__fail(r, SP_ERR_FORMAT, off, "'%.*s'", (int)SP_MIN(close - fmt.s - (long)i - 1, 64L),
                                fmt.s + i + 1);
            v = *hit;
            i = (size_t)(close - fmt.s) + 1;
        }
        conv_spec f = {.width = -1, .prec = -1};
        for (; i < fmt.n && fmt.s[i] && strchr("-+ 0#", fmt.s[i]); i++) {
            char c = fmt.s[i];
            f.left |= c == '-';
            f.plus |= c == '+';
            f.space |= c == ' ';
            f.zero |= c == '0';
            f.alt |= c == '#';
        }
        if (i < fmt.n && fmt.s[i] >= '0' && fmt.s[i] <= '9' &&
            (e = read_count(r, fmt, &i, off, &f.width)))
            return e;
        if (i < fmt.n && fmt.s[i] == '.') {
            i++;
            if ((e = read_count(r, fmt, &i, off, &f.prec)))
                return e;
        }
        if (i >= fmt.n)
            return sp__fail(r, SP_ERR_FORMAT, off, "incomplete format");
        char conv = fmt.s[i++];
        if (conv == '%') {
            e = sp__buf_putc(r, &b, '%', off);
            continue;
        }
        if (!conv || !strchr("sradiuxXocfFeEgG", conv)) {
            size_t len;
            uint32_t cp = sp__utf8_dec(fmt.s + i - 1, fmt.n - i + 1, &len);
            return sp__fail(r, SP_ERR_FORMAT, off,
                            "unsupported format character '%c' (0x%x) at index %zu",
                            cp >= 0x20 && cp < 0x7f ? conv : '?', (unsigned)cp,
                            sp__utf8_count(fmt.s, i - 1));
        }
        if (absent(v)) {
            if (map && n_args == 0)
                return sp__fail(r, SP_ERR_FORMAT, off, "format requires a mapping");
            if (next >= n_args)
                return sp__fail(r, SP_ERR_FORMAT, off, "not enough arguments for format string");
            v = args[next++];
        }
        if (conv == 's' || conv == 'r' || conv == 'a') {
            sp__buf t = {0};
            if ((e = conv == 's' ? sp__to_str(r, v, &t, off) : sp__repr(r, v, &t, off)))
                return e;
            size_t n = t.n;
            if (f.prec >= 0) { // precision counts characters
                size_t k = 0, chars = 0;
                while (k < t.n && chars < (size_t)f.prec) {
                    size_t len;
                    sp__utf8_dec(t.p + k, t.n - k, &len);
                    k += len;
                    chars++;
                }
                n = k;
            }
            e = pad(r, &b, t.p ? t.p : "", n, &f, off);
        } else if (conv == 'c') {
            e = conv_char(r, &b, &f, v, off);
        } else if (strchr("diuxXo", conv)) {
            e = conv_int(r, &b, conv, &f, v, off);
        } else {
            e = conv_float(r, &b, conv, &f, v, off);
        }
    }
    if (!e && !map && next < n_args)
        return sp__fail(r, SP_ERR_FORMAT, off, "not all arguments converted during string formatting");
    if (!e)
        *out = sp__buf_val(&b);
    return e;
}

/* str.format: {} {0} {name} with !s / !r; format specs are not supported. */
static sp_err str_format(sp__rt *r, sp__val fmt, const sp__args *a, uint32_t off, sp__val *out) {
    sp__buf b = {0};
    uint32_t next = 0;
    sp_err e = sp__steps(r, fmt.n / 64, off);
    for (size_t i = 0; !e && i < fmt.n; i++) {
        char c = fmt.s[i];
        if (c == '}' ) {
            if (i + 1 < fmt.n && fmt.s[i + 1] == '}')
                i++;
            else
                return sp__fail(r, SP_ERR_FORMAT, off, "Single '}' encountered in format string");
            e = sp__buf_putc(r, &b, '}', off);
            continue;
        }
        if (c != '{') {
            e = sp__buf_putc(r, &b, c, off);
            continue;
        }
        if (i + 1 < fmt.n && fmt.s[i + 1] == '{') {
            i++;
            e = sp__buf_putc(r, &b, '{', off);
            continue;
        }
        const char *close = memchr(fmt.s + i, '}', fmt.n - i);
        if (!close)
            return sp__fail(r, SP_ERR_FORMAT, off, "Single '{' encountered in format string");
        const char *f = fmt.s + i + 1;
        size_t fn = (size_t)(close - f);
        char conv = 's';
        if (fn >= 2 && f[fn - 2] == '!') {
            conv = f[fn - 1];
            fn -= 2;
        }
        if (memchr(f, ':', fn))
            return sp__fail(r, SP_ERR_UNSUPPORTED, off, "format specs in str.format are not supported");
        sp__val v = ABSENT;
        // A field of digits only is an index; anything else names a keyword argument.
        size_t nd = 0;
        uint64_t k = fn == 0 ? next++ : 0;
        for (; nd < fn && f[nd] >= '0' && f[nd] <= '9'; nd++)
            k = k > UINT32_MAX ? k : k * 10 + (uint64_t)(f[nd] - '0'); // saturates: no such index
        if (nd == fn) {
            if (k < a->n_pos)
                v = a->pos[k];
            else
                return sp__fail(r, SP_ERR_FORMAT, off, "tuple index out of range");
        } else {
            for (uint32_t j = 0; j < a->n_kw; j++)
                if (a->kw_name[j].n == fn && memcmp(a->kw_name[j].s, f, fn) == 0)
                    v = a->kw[j];
            if (absent(v))
                return sp__fail(r, SP_ERR_FORMAT, off, "'%.*s'", (int)SP_MIN(fn, (size_t)64), f);
        }
        e = conv == 'r' ? sp__repr(r, v, &b, off) : sp__to_str(r, v, &b, off);
        i = (size_t)(close - fmt.s);
    }
    if (!e)
        *out = sp__buf_val(&b);
    return e;
}

/* ---- attribute paths and sorting -------------------------------------------------------------- */

/* Jinja's make_attrgetter: "a.b.0" looks up a, then b, then index 0. */
static sp_err attr_path(sp__rt *r, sp__val item, sp__val path, sp__val dflt, uint32_t off,
                        sp__val *out) {
    if (is_int(path))
        return sp__getitem(r, item, path, off, out);
    sp_err e = want_str(r, path, "attribute", off);
    size_t i = 0;
    while (!e) {
        const char *dot = memchr(path.s + i, '.', path.n - i);
        size_t end = dot ? (size_t)(dot - path.s) : path.n;
        sp__val key = sp__v_str(path.s + i, (uint32_t)(end - i));
        bool digits = end > i, huge = false;
        int64_t num = 0;
        for (size_t k = i; k < end && digits; k++) {
            digits = path.s[k] >= '0' && path.s[k] <= '9';
            huge |= num > (INT64_MAX - 9) / 10;
            if (digits && !huge)
                num = num * 10 + (path.s[k] - '0');
        }
        if (digits && huge) { // an index beyond any list, and a number that is no key
            if (item.t == SP__UNDEF)
                return sp__undef_error(r, item, off);
            if ((e = sp__undef_attr(r, item, key, off, &item)))
                return e;
        } else if ((e = sp__getitem(r, item, digits ? sp__v_int(num) : key, off, &item))) {
            return e;
        }
        if (item.t == SP__UNDEF && !absent(dflt)) // at each step, as Jinja does: the path
            item = dflt;                           // goes on into the default
        if (!dot)
            break;
        i = end + 1;
    }
    if (e)
        return e;
    *out = item;
    return SP_OK;
}

typedef struct sort_item {
    sp__val key, item;
} sort_item;

/* Stable merge sort by key; errors from comparisons propagate. */
static sp_err sort_items(sp__rt *r, sort_item *v, uint32_t n, bool fold, bool reverse, uint32_t off) {
    if (n < 2)
        return SP_OK;
    sort_item *tmp = sp__alloc(r, (size_t)n * sizeof *tmp);
    if (!tmp)
        return sp__oom(r, off);
    uint64_t logn = 1;
    while ((1ull << logn) < n)
        logn++;
    sp_err e = sp__steps(r, n * logn, off);
    for (uint32_t width = 1; !e && width < n; width *= 2) {
        for (uint32_t lo = 0; !e && lo < n; lo += 2 * width) {
            uint32_t mid = SP_MIN(lo + width, n), hi = SP_MIN(lo + 2 * width, n);
            uint32_t i = lo, j = mid, k = lo;
            while (!e && i < mid && j < hi) {
                int c;
                e = sp__cmp(r, v[j].key, v[i].key, fold, "<", off, &c);
                // Take from the right only when strictly before, which keeps the sort stable.
                bool right = sp__cmp_holds(c, reverse ? SP__OP_GT : SP__OP_LT);
                tmp[k++] = right ? v[j++] : v[i++];
            }
            while (i < mid)
                tmp[k++] = v[i++];
            while (j < hi)
                tmp[k++] = v[j++];
        }
        if (!e)
            memcpy(v, tmp, (size_t)n * sizeof *v);
    }
    return e;
}

static sp_err to_list(sp__rt *r, sp__val v, uint32_t off, sp__list **out) {
    return sp__iterate(r, v, off, out);
}

/* ---- filters ----------------------------------------------------------------------------- */

typedef sp_err (*filter_fn)(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out);

static sp_err f_abs(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    NO_ARGS("abs");
    if (in.t == SP__FLOAT) {
        *out = sp__v_float(fabs(in.f));
        return SP_OK;
    }
    if (is_int(in)) {
        int64_t x = as_int(in);
        if (x == INT64_MIN)
            return sp__overflow(r, off);
        *out = sp__v_int(x < 0 ? -x : x);
        return SP_OK;
    }
    // Undefined included: it has no __abs__.
    return sp__fail(r, SP_ERR_FORMAT, off, "bad operand type for abs(): '%s'", sp__type_name(in));
}

static sp_err f_attr(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("attr", "name");
    sp_err e = want_str(r, arg[0], "attribute name", off);
    if (e)
        return e;
    // Python's getattr only: a dict's keys are not its attributes.
    if (in.t == SP__DICT && !sp__method_id(in, arg[0].s, arg[0].n) &&
        !sp__unsafe_method(in, arg[0].s, arg[0].n))
        return sp__undef_attr(r, in, arg[0], off, out);
    return sp__getattr(r, in, arg[0], off, out);
}

static sp_err case_filter(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out,
                          const char *fn, int mode) {
    NO_ARGS(fn);
    sp__val s;
    sp_err e = sp__stringify(r, in, off, &s);
    if (!e)
        e = map_case(r, s, mode, off, out);
    return e;
}

static sp_err f_capitalize(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    return case_filter(r, in, a, off, out, "capitalize", CASE_CAPITALIZE);
}
static sp_err f_lower(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    return case_filter(r, in, a, off, out, "lower", CASE_LOWER);
}
static sp_err f_upper(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    return case_filter(r, in, a, off, out, "upper", CASE_UPPER);
}
static sp_err f_title(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    return case_filter(r, in, a, off, out, "title", CASE_JINJA_TITLE);
}

static sp_err length_of(sp__rt *r, sp__val in, uint32_t off, int64_t *out) {
    switch (in.t) {
    case SP__STR:
        *out = (int64_t)cp_len(in);
        return SP_OK;
    case SP__LIST:
        if (in.flag == SP__SEQ_GEN)
            break;
        *out = in.l->n;
        return SP_OK;
    case SP__DICT:
        *out = in.d->n;
        return SP_OK;
    case SP__UNDEF:
        *out = 0;
        return SP_OK;
    default:
        break;
    }
    return sp__fail(r, SP_ERR_FORMAT, off, "object of type '%s' has no len()", sp__type_name(in));
}

static sp_err f_length(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    NO_ARGS("length");
    int64_t n = 0;
    sp_err e = length_of(r, in, off, &n);
    if (!e)
        *out = sp__v_int(n);
    return e;
}

static sp_err f_default(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("default", "default_value", "boolean");
    sp__val dflt = absent(arg[0]) ? sp__v_str("", 0) : arg[0];
    bool boolean = !absent(arg[1]) && sp__truthy(arg[1]);
    *out = (in.t == SP__UNDEF || (boolean && !sp__truthy(in))) ? dflt : in;
    return SP_OK;
}

static sp_err f_dictsort(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("dictsort", "case_sensitive", "by", "reverse");
    if (in.t != SP__DICT) // Jinja calls value.items()
        return in.t == SP__UNDEF ? sp__undef_error(r, in, off)
                                 : sp__fail(r, SP_ERR_FORMAT, off,
                                            "'%s' object has no attribute 'items'",
                                            sp__type_name(in));
    bool by_value = false;
    if (!absent(arg[1])) {
        sp_err e = want_str(r, arg[1], "by", off);
        if (e)
            return e;
        if (arg[1].n == 5 && memcmp(arg[1].s, "value", 5) == 0)
            by_value = true;
        else if (!(arg[1].n == 3 && memcmp(arg[1].s, "key", 3) == 0))
            return sp__fail(r, SP_ERR_FORMAT, off, "You can only sort by either \"key\" or \"value\"");
    }
    uint32_t n = in.d->n;
    sort_item *v = sp__alloc(r, (size_t)n * sizeof *v + 1);
    if (!v)
        return sp__oom(r, off);
    for (uint32_t i = 0; i < n; i++) {
        sp__list *pair;
        sp_err e = sp__list_new(r, 2, off, &pair);
        if (e)
            return e;
        pair->v[0] = in.d->k[i];
        pair->v[1] = in.d->v[i];
        pair->n = 2;
        v[i].item = sp__v_list(pair, true);
        v[i].key = by_value ? in.d->v[i] : in.d->k[i];
    }
    bool fold = absent(arg[0]) || !sp__truthy(arg[0]);
    sp_err e = sort_items(r, v, n, fold, !absent(arg[2]) && sp__truthy(arg[2]), off);
    sp__list *l;
    if (!e)
        e = sp__list_new(r, n, off, &l);
    if (e)
        return e;
    for (uint32_t i = 0; i < n; i++)
        l->v[l->n++] = v[i].item;
    *out = sp__v_list(l, false);
    return SP_OK;
}

static sp_err f_escape(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    NO_ARGS("escape");
    sp__val s;
    sp_err e = sp__stringify(r, in, off, &s);
    sp__buf b = {0};
    for (uint32_t i = 0; !e && i < s.n; i++) {
        const char *rep = NULL;
        switch (s.s[i]) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&#34;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            break;
        }
        e = rep ? sp__buf_put(r, &b, rep, strlen(rep), off) : sp__buf_putc(r, &b, s.s[i], off);
    }
    if (!e)
        *out = sp__buf_val(&b);
    return e;
}

static sp_err f_first(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    NO_ARGS("first");
    sp__list *l;
    sp_err e = to_list(r, in, off, &l);
    if (e)
        return e;
    if (l->n == 0)
        return undef_msg(r, "No first item, sequence was empty.", off, out);
    *out = l->v[0];
    return SP_OK;
}

static sp_err f_last(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    NO_ARGS("last");
    // reversed(Undefined) is empty, like iterating it.
    if ((in.t != SP__LIST && in.t != SP__STR && in.t != SP__DICT && in.t != SP__UNDEF) ||
        (in.t == SP__LIST && in.flag == SP__SEQ_GEN))
        return sp__fail(r, SP_ERR_FORMAT, off, "'%s' object is not reversible", sp__type_name(in));
    sp__list *l;
    sp_err e = to_list(r, in, off, &l);
    if (e)
        return e;
    if (l->n == 0)
        return undef_msg(r, "No last item, sequence was empty.", off, out);
    *out = l->v[l->n - 1];
    return SP_OK;
}

/* Python's float(str) of s: optional whitespace and sign, then a decimal number (digits with
 * single '_' between two digits, optional fraction and exponent) or inf, infinity, nan. Sets
 * *ok false where Python raises ValueError. */
static sp_err parse_float(sp__rt *r, sp__val s, uint32_t off, bool *ok, double *out) {
    sp__val t = strip(s, ABSENT, 3);
    *ok = false;
    char *buf = sp__alloc(r, (size_t)t.n + 1);
    if (!buf)
        return sp__oom(r, off);
    size_t k = 0;
    for (uint32_t i = 0; i < t.n; i++) {
        char c = t.s[i];
        if (c == '_') {
            bool between = i > 0 && i + 1 < t.n && t.s[i - 1] >= '0' && t.s[i - 1] <= '9' &&
                           t.s[i + 1] >= '0' && t.s[i + 1] <= '9';
            if (!between)
                return SP_OK;
            continue;
        }
        if (!strchr("0123456789+-.eEinfatyINFATY", c) || !c)
            return SP_OK; // strtod would also take hex floats
        buf[k++] = c;
    }
    buf[k] = '\0';
    if (k == 0)
        return SP_OK;
    char *end;
    double d = strtod(buf, &end);
    if (*end)
        return SP_OK;
    *ok = true;
    *out = d;
    return SP_OK;
}

static sp_err f_float(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("float", "default");
    sp__val dflt = absent(arg[0]) ? sp__v_float(0.0) : arg[0];
    bool ok = false;
    double d = 0;
    sp_err e;
    if (is_num(in)) {
        *out = sp__v_float(as_f(in));
        return SP_OK;
    }
    if (in.t == SP__UNDEF)
        return sp__undef_error(r, in, off);
    if (in.t == SP__STR && (e = parse_float(r, in, off, &ok, &d)))
        return e;
    *out = ok ? sp__v_float(d) : dflt;
    return SP_OK;
}

static int digit_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 32) >= 'a' && (c | 32) <= 'z')
        return (c | 32) - 'a' + 10;
    return -1;
}

/* Python's int(str, base) of s: optional whitespace and sign, a 0x / 0o / 0b prefix where the
 * base allows it (base 0 takes the base from it, and then refuses other leading zeros), digits
 * with single '_' between them (and after a prefix). Returns false where Python raises
 * ValueError; sets *overflow where Python's int would not fit in 64 bits. */
static bool parse_int(sp__val s, int64_t base, bool *overflow, int64_t *out) {
    sp__val t = strip(s, ABSENT, 3);
    const char *p = t.s;
    size_t n = t.n, i = 0;
    bool neg = false;
    if (i < n && (p[i] == '+' || p[i] == '-'))
        neg = p[i++] == '-';
    int b = (int)base;
    bool prefixed = false;
    if (i + 1 < n && p[i] == '0') {
        char c = (char)(p[i + 1] | 32);
        int pb = c == 'x' ? 16 : c == 'o' ? 8 : c == 'b' ? 2 : 0;
        if (pb && (b == 0 || b == pb)) {
            b = pb;
            i += 2;
            prefixed = true;
        }
    }
    bool base0_decimal = b == 0;
    if (b == 0)
        b = 10;
    uint64_t mag = 0;
    size_t n_digits = 0;
    bool big = false, first_zero = false, underscore_ok = prefixed, pending_underscore = false;
    for (; i < n; i++) {
        if (p[i] == '_') {
            if (!underscore_ok)
                return false;
            underscore_ok = false;
            pending_underscore = true;
            continue;
        }
        int d = digit_value(p[i]);
        if (d < 0 || d >= b)
            return false;
        if (n_digits++ == 0)
            first_zero = d == 0;
        if (mag > (UINT64_MAX - (uint64_t)d) / (uint64_t)b)
            big = true;
        else
            mag = mag * (uint64_t)b + (uint64_t)d;
        underscore_ok = true;
        pending_underscore = false;
    }
    if (n_digits == 0 || pending_underscore || (base0_decimal && first_zero && mag != 0))
        return false;
    uint64_t max = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    *overflow = big || mag > max;
    if (!*overflow)
        *out = !neg ? (int64_t)mag : mag > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)mag;
    return true;
}

/* Jinja's int filter: int(value) (int(value, base) for a string), and where that raises
 * TypeError or ValueError, int(float(value)), and where that raises too, the default. */
static sp_err f_int(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("int", "default", "base");
    sp__val dflt = absent(arg[0]) ? sp__v_int(0) : arg[0];
    int64_t x = 0;
    sp_err e;
    if (is_int(in)) {
        *out = sp__v_int(as_int(in));
        return SP_OK;
    }
    if (in.t == SP__UNDEF)
        return sp__undef_error(r, in, off);
    if (in.t == SP__FLOAT) {
        // int(nan) raises ValueError, and so does the retry; int(inf) raises OverflowError.
        if (isnan(in.f)) {
            *out = dflt;
            return SP_OK;
        }
        if ((e = sp__float_to_int(r, in.f, off, &x)))
            return e;
        *out = sp__v_int(x);
        return SP_OK;
    }
    if (in.t != SP__STR) {
        *out = dflt;
        return SP_OK;
    }
    // A base that is not an int, or not 0 or 2..36, raises inside int(): the retry follows.
    int64_t base = absent(arg[1]) ? 10 : is_int(arg[1]) ? as_int(arg[1]) : -1;
    bool big = false;
    if ((base == 0 || (base >= 2 && base <= 36)) && parse_int(in, base, &big, &x)) {
        if (big)
            return sp__overflow(r, off);
        *out = sp__v_int(x);
        return SP_OK;
    }
    bool ok = false;
    double d = 0;
    if ((e = parse_float(r, in, off, &ok, &d)))
        return e;
    // The retry's OverflowError (infinity) is caught as well.
    if (!ok || !isfinite(d)) {
        *out = dflt;
        return SP_OK;
    }
    if ((e = sp__float_to_int(r, d, off, &x)))
        return e;
    *out = sp__v_int(x);
    return SP_OK;
}

static sp_err f_format(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    sp__val s;
    sp_err e = sp__stringify(r, in, off, &s);
    if (e)
        return e;
    if (a->n_pos && a->n_kw)
        return sp__fail(r, SP_ERR_FORMAT, off, "can't handle positional and keyword arguments at the same time");
    if (a->n_kw) {
        sp__dict *d;
        if ((e = sp__dict_new(r, a->n_kw, off, &d)))
            return e;
        for (uint32_t k = 0; k < a->n_kw; k++)
            if ((e = sp__dict_set(r, d, a->kw_name[k], a->kw[k], off)))
                return e;
        return py_format(r, s, NULL, 0, d, off, out);
    }
    if (a->n_pos == 1 && a->pos[0].t == SP__DICT)
        return py_format(r, s, a->pos, 1, a->pos[0].d, off, out);
    return py_format(r, s, a->pos, a->n_pos, NULL, off, out);
}

/* An indentation as the indent filter and json.dumps take it: a string as it is, an int n as
 * " " * n (nothing when n <= 0). */
static sp_err indent_text(sp__rt *r, sp__val width, uint32_t off, sp__val *out) {
    if (width.t == SP__STR) {
        *out = width;
        return SP_OK;
    }
    if (!is_int(width))
        return sp__fail(r, SP_ERR_FORMAT, off, "can't multiply sequence by non-int of type '%s'",
                        sp__type_name(width));
    int64_t w = as_int(width);
    sp__buf b = {0};
    sp_err e = w > 0 ? sp__buf_fill(r, &b, ' ', (uint64_t)w > SIZE_MAX ? SIZE_MAX : (size_t)w, off)
                     : SP_OK;
    if (!e)
        *out = sp__buf_val(&b);
    return e;
}

static sp_err f_indent(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("indent", "width", "first", "blank");
    sp__val ind = sp__v_str("    ", 4);
    sp_err e;
    if (!absent(arg[0]) && (e = indent_text(r, arg[0], off, &ind)))
        return e;
    bool first = !absent(arg[1]) && sp__truthy(arg[1]);
    bool blank = !absent(arg[2]) && sp__truthy(arg[2]);
    // Jinja's first step is `s += "\n"`, which only a string survives.
    if (in.t == SP__UNDEF)
        return sp__undef_error(r, in, off);
    if (in.t != SP__STR)
        return sp__fail(r, SP_ERR_FORMAT, off, "unsupported operand type(s) for +=: '%s' and 'str'",
                        sp__type_name(in));
    sp__val s = in;
    // Jinja appends "\n" before splitlines(), so a trailing newline makes no empty last line.
    sp__buf src = {0};
    if ((e = sp__buf_put(r, &src, s.s, s.n, off)) || (e = sp__buf_putc(r, &src, '\n', off)))
        return e;
    sp__list *lines;
    if ((e = splitlines(r, sp__buf_val(&src), false, off, &lines)))
        return e;
    sp__buf b = {0};
    if (first)
        e = sp__buf_put(r, &b, ind.s, ind.n, off);
    for (uint32_t i = 0; !e && i < lines->n; i++) {
        sp__val line = lines->v[i];
        if (i) {
            e = sp__buf_putc(r, &b, '\n', off);
            if (!e && (blank || line.n))
                e = sp__buf_put(r, &b, ind.s, ind.n, off);
        }
        if (!e)
            e = sp__buf_put(r, &b, line.s, line.n, off);
    }
    if (!e)
        *out = sp__buf_val(&b);
    return e;
}

static sp_err f_items(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    NO_ARGS("items");
    sp__list *l;
    sp_err e;
    if (in.t == SP__UNDEF)
        e = sp__list_new(r, 0, off, &l);
    else if (in.t != SP__DICT)
        return sp__fail(r, SP_ERR_FORMAT, off, "Can only get item pairs from a mapping.");
    else
        e = sp__list_new(r, in.d->n, off, &l);
    if (!e)
        e = sp__steps(r, l->cap, off);
    for (uint32_t i = 0; !e && in.t == SP__DICT && i < in.d->n; i++) {
        sp__list *pair;
        if ((e = sp__list_new(r, 2, off, &pair)))
            break;
        pair->v[0] = in.d->k[i];
        pair->v[1] = in.d->v[i];
        pair->n = 2;
        l->v[l->n++] = sp__v_list(pair, true);
    }
    if (!e)
        *out = sp__v_seq(l, SP__SEQ_GEN);
    return e;
}

static sp_err f_join(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("join", "d", "attribute");
    sp__val sep = absent(arg[0]) ? sp__v_str("", 0) : arg[0];
    sp__list *l;
    sp_err e = sp__stringify(r, sep, off, &sep);
    if (!e)
        e = to_list(r, in, off, &l);
    if (!e)
        e = sp__steps(r, l->n, off);
    sp__buf b = {0};
    for (uint32_t i = 0; !e && i < l->n; i++) {
        sp__val v = l->v[i];
        if (!absent(arg[1]) && (e = attr_path(r, v, arg[1], ABSENT, off, &v)))
            break;
        if (i)
            e = sp__buf_put(r, &b, sep.s, sep.n, off);
        if (!e)
            e = sp__to_str(r, v, &b, off);
    }
    if (!e)
        *out = sp__buf_val(&b);
    return e;
}

static sp_err f_list(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    NO_ARGS("list");
    sp__list *l, *c;
    sp_err e = to_list(r, in, off, &l);
    if (!e)
        e = sp__steps(r, l->n, off);
    if (!e)
        e = sp__list_new(r, l->n, off, &c);
    if (e)
        return e;
    if (l->n)
        memcpy(c->v, l->v, (size_t)l->n * sizeof *c->v);
    c->n = l->n;
    *out = sp__v_list(c, false);
    return SP_OK;
}

/* Jinja's map, select, reject, selectattr and rejectattr begin with `if value:`: a falsy input
 * (undefined, none, false, 0, an empty string or container) gives an empty generator before
 * the input is iterated or the arguments are looked at. */
static sp_err falsy_to_empty(sp__rt *r, sp__val in, uint32_t off, bool *done, sp__val *out) {
    sp__list *l;
    *done = !sp__truthy(in);
    if (!*done)
        return SP_OK;
    sp_err e = sp__list_new(r, 0, off, &l);
    if (!e)
        *out = sp__v_seq(l, SP__SEQ_GEN);
    return e;
}

static sp_err f_map(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    sp__list *l, *res;
    bool done;
    sp_err e = falsy_to_empty(r, in, off, &done, out);
    if (e || done)
        return e;
    if ((e = to_list(r, in, off, &l)) || (e = sp__list_new(r, l->n, off, &res)))
        return e;
    sp__val attr = ABSENT, dflt = ABSENT;
    for (uint32_t k = 0; k < a->n_kw; k++) {
        if (a->kw_name[k].n == 9 && memcmp(a->kw_name[k].s, "attribute", 9) == 0)
            attr = a->kw[k];
        else if (a->kw_name[k].n == 7 && memcmp(a->kw_name[k].s, "default", 7) == 0)
            dflt = a->kw[k];
    }
    if (absent(attr) && a->n_pos == 0)
        return sp__fail(r, SP_ERR_FORMAT, off, "map requires a filter argument");
    int fid = 0;
    sp__args rest = {0};
    if (absent(attr)) {
        if ((e = want_str(r, a->pos[0], "filter name", off)))
            return e;
        fid = sp__filter_id(a->pos[0].s, a->pos[0].n);
        rest.n_pos = a->n_pos - 1;
        rest.pos = a->pos + 1;
        rest.n_kw = a->n_kw;
        rest.kw = a->kw;
        rest.kw_name = a->kw_name;
    }
    for (uint32_t i = 0; !e && i < l->n; i++) {
        sp__val v;
        e = sp__steps(r, 1, off);
        if (!e)
            e = absent(attr) ? sp__filter(r, fid, &a->pos[0], l->v[i], &rest, off, &v)
                             : attr_path(r, l->v[i], attr, dflt, off, &v);
        if (!e)
            res->v[res->n++] = v;
    }
    if (!e)
        *out = sp__v_seq(res, SP__SEQ_GEN);
    return e;
}

/* select / reject / selectattr / rejectattr. */
static sp_err select_common(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out,
                            bool by_attr, bool keep) {
    sp__list *l, *res;
    bool done;
    sp_err e = falsy_to_empty(r, in, off, &done, out);
    if (e || done)
        return e;
    if ((e = to_list(r, in, off, &l)) || (e = sp__list_new(r, 0, off, &res)))
        return e;
    uint32_t first = by_attr ? 1 : 0;
    if (by_attr && a->n_pos < 1)
        return sp__fail(r, SP_ERR_FORMAT, off, "Missing parameter for attribute name");
    int tid = 0;
    const sp__val *tname = NULL;
    sp__args rest = {0};
    if (a->n_pos > first) {
        if ((e = want_str(r, a->pos[first], "test name", off)))
            return e;
        tname = &a->pos[first];
        tid = sp__test_id(tname->s, tname->n);
        rest.n_pos = a->n_pos - first - 1;
        rest.pos = a->pos + first + 1;
        rest.n_kw = a->n_kw;
        rest.kw = a->kw;
        rest.kw_name = a->kw_name;
    }
    for (uint32_t i = 0; !e && i < l->n; i++) {
        sp__val v = l->v[i];
        bool ok;
        e = sp__steps(r, 1, off);
        if (!e && by_attr)
            e = attr_path(r, v, a->pos[0], ABSENT, off, &v);
        if (e)
            break;
        if (tname)
            e = sp__test(r, tid, tname, v, &rest, off, &ok);
        else
            ok = sp__truthy(v);
        if (!e && ok == keep)
            e = sp__list_push(r, res, l->v[i], off);
    }
    if (!e)
        *out = sp__v_seq(res, SP__SEQ_GEN);
    return e;
}

static sp_err f_select(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    return select_common(r, in, a, off, out, false, true);
}
static sp_err f_reject(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    return select_common(r, in, a, off, out, false, false);
}
static sp_err f_selectattr(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    return select_common(r, in, a, off, out, true, true);
}
static sp_err f_rejectattr(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    return select_common(r, in, a, off, out, true, false);
}

static sp_err f_replace(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("replace", "old", "new", "count");
    sp__val s, old, rep;
    int64_t count = -1;
    sp_err e = sp__stringify(r, in, off, &s);
    if (!e)
        e = sp__stringify(r, arg[0], off, &old);
    if (!e)
        e = sp__stringify(r, arg[1], off, &rep);
    if (!e && !absent(arg[2]) && arg[2].t != SP__NONE)
        e = want_int(r, arg[2], "count", off, &count);
    if (!e)
        e = str_replace(r, s, old, rep, count, off, out);
    return e;
}

static sp_err f_reverse(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    NO_ARGS("reverse");
    sp_err e;
    if (in.t == SP__STR) {
        sp__buf b = {0};
        if ((e = sp__steps(r, in.n / 64, off)))
            return e;
        for (size_t i = in.n; i > 0;) {
            size_t st = i - 1;
            while (st > 0 && ((unsigned char)in.s[st] & 0xc0) == 0x80)
                st--;
            if ((e = sp__buf_put(r, &b, in.s + st, i - st, off)))
                return e;
            i = st;
        }
        *out = sp__buf_val(&b);
        return SP_OK;
    }
    sp__list *l, *res;
    if (in.t != SP__LIST && in.t != SP__DICT && in.t != SP__UNDEF)
        return sp__fail(r, SP_ERR_FORMAT, off, "argument must be iterable");
    if ((e = to_list(r, in, off, &l)) || (e = sp__steps(r, l->n, off)) ||
        (e = sp__list_new(r, l->n, off, &res)))
        return e;
    for (uint32_t i = 0; i < l->n; i++)
        res->v[res->n++] = l->v[l->n - 1 - i];
    // reversed() makes an iterator; a generator is not reversible and becomes a list.
    *out = sp__v_seq(res, in.t == SP__LIST && in.flag == SP__SEQ_GEN ? SP__SEQ_LIST : SP__SEQ_GEN);
    return SP_OK;
}

/* Python's round(x, nd) for a float with nd < 0: the multiple of 10^-nd nearest to x's exact
 * value, ties to even, read back correctly rounded; NaN where the result overflows a double. */
static double round_to_tens(double x, int k) {
    // x = whole + frac exactly; whole's decimal digits are exact too.
    double whole = trunc(fabs(x)), frac = fabs(x) - whole;
    char digits[400];
    int nd = snprintf(digits, sizeof digits, "%0*.0f", k + 1, whole);
    // The last k digits decide: above or below half of 10^k, or a tie broken toward even.
    const char *low = digits + nd - k;
    int c = low[0] != '5' ? (low[0] > '5' ? 1 : -1) : 0;
    for (int i = 1; c == 0 && i < k; i++)
        c = low[i] != '0';
    if (c == 0)
        c = frac > 0 ? 1 : ((low[-1] - '0') % 2 ? 1 : -1);
    // digits[0 .. nd - k) + (c > 0), times 10^k.
    int n = nd - k;
    for (int i = n - 1; c > 0 && i >= 0; i--) {
        if (digits[i] == '9') {
            digits[i] = '0';
        } else {
            digits[i]++;
            c = 0;
        }
    }
    char text[420];
    snprintf(text, sizeof text, "%s%.*se%d", c > 0 ? "1" : "", n, digits, k);
    double y = strtod(text, NULL);
    return isinf(y) ? NAN : copysign(y, x);
}

/* Python's round(x, nd) for a float (CPython's float.__round__). */
static sp_err round_float(sp__rt *r, double x, int64_t nd, uint32_t off, double *out) {
    if (!isfinite(x) || nd > 323) { // 323 digits reach past the smallest subnormal
        *out = x;
        return SP_OK;
    }
    if (nd < -308) {
        *out = 0.0 * x;
        return SP_OK;
    }
    if (nd >= 0) {
        char buf[700]; // 309 integer digits, the point, 323 decimals
        snprintf(buf, sizeof buf, "%.*f", (int)nd, x); // exact, ties to even
        *out = strtod(buf, NULL);
        return SP_OK;
    }
    double y = round_to_tens(x, (int)-nd);
    if (isnan(y))
        return sp__fail(r, SP_ERR_FORMAT, off, "rounded value too large to represent");
    *out = y;
    return SP_OK;
}

/* Python's round(x, nd) for an int with nd < 0: an int, ties to even. */
static sp_err round_int(sp__rt *r, int64_t x, int64_t nd, uint32_t off, int64_t *out) {
    if (nd < -19) { // |x| < 10^19 / 2
        *out = 0;
        return SP_OK;
    }
    uint64_t p = 1;
    for (int64_t k = 0; k < -nd; k++)
        p *= 10;
    uint64_t mag = x < 0 ? 0 - (uint64_t)x : (uint64_t)x;
    uint64_t q = mag / p, rem = mag % p;
    if (rem > p - rem || (rem == p - rem && (q & 1)))
        q++;
    uint64_t res;
    if (__builtin_mul_overflow(q, p, &res) || res > (uint64_t)INT64_MAX + (x < 0))
        return sp__overflow(r, off);
    *out = x >= 0 ? (int64_t)res : res > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)res;
    return SP_OK;
}

/* Jinja's round: Python's round(value, precision) for "common", else math.ceil or math.floor
 * of value * 10**precision, divided by 10**precision. */
static sp_err f_round(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("round", "precision", "method");
    enum { COMMON, CEIL, FLOOR } method = COMMON;
    if (!absent(arg[1])) { // checked first, as Jinja does
        if (arg[1].t == SP__STR && arg[1].n == 4 && memcmp(arg[1].s, "ceil", 4) == 0)
            method = CEIL;
        else if (arg[1].t == SP__STR && arg[1].n == 5 && memcmp(arg[1].s, "floor", 5) == 0)
            method = FLOOR;
        else if (!(arg[1].t == SP__STR && arg[1].n == 6 && memcmp(arg[1].s, "common", 6) == 0))
            return sp__fail(r, SP_ERR_FORMAT, off, "method must be common, ceil or floor");
    }
    int64_t prec = 0;
    sp_err e;
    if (!absent(arg[0]) && (e = want_int(r, arg[0], "precision", off, &prec)))
        return e;
    if (!is_num(in))
        return sp__fail(r, SP_ERR_FORMAT, off, "type %s doesn't define __round__ method", sp__type_name(in));
    if (method == COMMON && is_int(in)) {
        int64_t x = as_int(in);
        if (prec < 0 && (e = round_int(r, x, prec, off, &x)))
            return e;
        *out = sp__v_int(x);
        return SP_OK;
    }
    double x = as_f(in), y = 0;
    if (method == COMMON) {
        if ((e = round_float(r, x, prec, off, &y)))
            return e;
        *out = sp__v_float(y);
        return SP_OK;
    }
    if (is_int(in) && prec >= 0) { // int * 10**p / 10**p: exact, then converted
        *out = sp__v_float(x);
        return SP_OK;
    }
    // 10**p: an int that becomes a float when multiplied (too large past 10^308); for p < 0
    // a float, 0.0 past 10^-323.
    if (prec > 308)
        return sp__fail(r, SP_ERR_FORMAT, off, "int too large to convert to float");
    double scale = pow(10.0, (double)SP_MAX(prec, (int64_t)-400));
    double v = x * scale;
    if (isnan(v))
        return sp__fail(r, SP_ERR_FORMAT, off, "cannot convert float NaN to integer");
    if (isinf(v))
        return sp__fail(r, SP_ERR_FORMAT, off, "cannot convert float infinity to integer");
    if (scale == 0)
        return sp__fail(r, SP_ERR_FORMAT, off, "float division by zero");
    *out = sp__v_float((method == CEIL ? ceil(v) : floor(v)) / scale);
    return SP_OK;
}

static sp_err f_safe(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    NO_ARGS("safe");
    *out = in;
    return SP_OK;
}

static sp_err keyed_items(sp__rt *r, sp__val in, sp__val attr, uint32_t off, sort_item **out,
                          uint32_t *n) {
    sp__list *l;
    sp_err e = to_list(r, in, off, &l);
    if (e)
        return e;
    sort_item *v = sp__alloc(r, (size_t)l->n * sizeof *v + 1);
    if (!v)
        return sp__oom(r, off);
    for (uint32_t i = 0; i < l->n; i++) {
        v[i].item = l->v[i];
        v[i].key = l->v[i];
        if (!absent(attr) && attr.t != SP__NONE && (e = attr_path(r, l->v[i], attr, ABSENT, off, &v[i].key)))
            return e;
    }
    *out = v;
    *n = l->n;
    return SP_OK;
}

static sp_err f_sort(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("sort", "reverse", "case_sensitive", "attribute");
    sort_item *v;
    uint32_t n;
    sp__list *res;
    sp_err e = keyed_items(r, in, arg[2], off, &v, &n);
    if (!e)
        e = sort_items(r, v, n, absent(arg[1]) || !sp__truthy(arg[1]),
                       !absent(arg[0]) && sp__truthy(arg[0]), off);
    if (!e)
        e = sp__list_new(r, n, off, &res);
    if (e)
        return e;
    for (uint32_t i = 0; i < n; i++)
        res->v[res->n++] = v[i].item;
    *out = sp__v_list(res, false);
    return SP_OK;
}

static sp_err same_key(sp__rt *r, sp__val x, sp__val y, bool fold, uint32_t off, bool *out) {
    if (fold && x.t == SP__STR && y.t == SP__STR) {
        int c;
        sp_err e = sp__cmp(r, x, y, true, "<", off, &c);
        if (!e)
            *out = c == 0;
        return e;
    }
    return sp__eq(r, x, y, off, out);
}

static sp_err f_unique(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("unique", "case_sensitive", "attribute");
    sort_item *v;
    uint32_t n;
    sp__list *res;
    bool fold = absent(arg[0]) || !sp__truthy(arg[0]);
    sp_err e = keyed_items(r, in, arg[1], off, &v, &n);
    if (!e)
        e = sp__list_new(r, 0, off, &res);
    for (uint32_t i = 0; !e && i < n; i++) {
        bool dup = false;
        for (uint32_t j = 0; !e && !dup && j < i; j++) {
            e = sp__steps(r, 1, off);
            if (!e)
                e = same_key(r, v[j].key, v[i].key, fold, off, &dup);
        }
        if (!e && !dup) // the first of equal keys is kept
            e = sp__list_push(r, res, v[i].item, off);
    }
    if (!e)
        *out = sp__v_seq(res, SP__SEQ_GEN);
    return e;
}

static sp_err minmax(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out, bool max) {
    BIND(max ? "max" : "min", "case_sensitive", "attribute");
    sort_item *v;
    uint32_t n;
    sp_err e = keyed_items(r, in, arg[1], off, &v, &n);
    if (e)
        return e;
    if (n == 0)
        return undef_msg(r, "No aggregated item, sequence was empty.", off, out);
    bool fold = absent(arg[0]) || !sp__truthy(arg[0]);
    uint32_t best = 0;
    for (uint32_t i = 1; !e && i < n; i++) {
        int c;
        e = sp__cmp(r, v[i].key, v[best].key, fold, max ? ">" : "<", off, &c);
        if (!e && sp__cmp_holds(c, max ? SP__OP_GT : SP__OP_LT))
            best = i;
    }
    if (!e)
        *out = v[best].item;
    return e;
}

static sp_err f_max(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    return minmax(r, in, a, off, out, true);
}
static sp_err f_min(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    return minmax(r, in, a, off, out, false);
}

static sp_err f_sum(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("sum", "attribute", "start");
    sort_item *v;
    uint32_t n;
    sp_err e = keyed_items(r, in, arg[0], off, &v, &n);
    if (e)
        return e;
    sp__val acc = absent(arg[1]) ? sp__v_int(0) : arg[1];
    for (uint32_t i = 0; i < n; i++) {
        sp__val x = v[i].key;
        if (!is_num(acc) || !is_num(x))
            return sp__fail(r, SP_ERR_FORMAT, off, "unsupported operand type(s) for +: '%s' and '%s'",
                            sp__type_name(acc), sp__type_name(x));
        if (is_int(acc) && is_int(x)) {
            int64_t z;
            if (__builtin_add_overflow(as_int(acc), as_int(x), &z))
                return sp__overflow(r, off);
            acc = sp__v_int(z);
        } else {
            acc = sp__v_float(as_f(acc) + as_f(x));
        }
    }
    *out = acc;
    return SP_OK;
}

static sp_err f_string(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    NO_ARGS("string");
    return sp__stringify(r, in, off, out);
}

static sp_err f_tojson(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    // transformers' signature: tojson(x, ensure_ascii=False, indent=None, separators=None,
    // sort_keys=False).
    BIND("tojson", "ensure_ascii", "indent", "separators", "sort_keys");
    sp__val tmp_ = arg[0];
    arg[0] = arg[1];
    arg[1] = tmp_;
    sp__json_opts o = {.item_sep = ", ", .item_sep_n = 2, .key_sep = ": ", .key_sep_n = 2};
    sp_err e;
    if (!absent(arg[0]) && arg[0].t != SP__NONE) {
        sp__val ind;
        if ((e = indent_text(r, arg[0], off, &ind)))
            return e;
        o.indent = ind.s;
        o.indent_n = ind.n;
        o.item_sep = ",";
        o.item_sep_n = 1;
    }
    o.ensure_ascii = !absent(arg[1]) && sp__truthy(arg[1]);
    if (!absent(arg[2]) && arg[2].t != SP__NONE) {
        if (arg[2].t != SP__LIST || arg[2].l->n != 2 || arg[2].l->v[0].t != SP__STR ||
            arg[2].l->v[1].t != SP__STR)
            return sp__fail(r, SP_ERR_FORMAT, off, "separators must be a pair of strings");
        o.item_sep = arg[2].l->v[0].s;
        o.item_sep_n = arg[2].l->v[0].n;
        o.key_sep = arg[2].l->v[1].s;
        o.key_sep_n = arg[2].l->v[1].n;
    }
    o.sort_keys = !absent(arg[3]) && sp__truthy(arg[3]);
    sp__buf b = {0};
    if ((e = sp__to_json(r, in, &o, &b, off)))
        return e;
    *out = sp__buf_val(&b);
    return SP_OK;
}

static sp_err f_trim(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    BIND("trim", "chars");
    sp__val s;
    sp_err e = sp__stringify(r, in, off, &s);
    if (!e && !absent(arg[0]) && arg[0].t != SP__NONE)
        e = want_str(r, arg[0], "chars", off);
    if (!e)
        *out = strip(s, arg[0], 3);
    return e;
}

static sp_err f_wordcount(sp__rt *r, sp__val in, const sp__args *a, uint32_t off, sp__val *out) {
    NO_ARGS("wordcount");
    sp__val s, words;
    sp_err e = sp__stringify(r, in, off, &s);
    if (!e)
        e = str_split(r, s, ABSENT, -1, false, off, &words);
    if (!e)
        *out = sp__v_int(words.l->n);
    return e;
}

static const struct {
    const char *name;
    filter_fn fn;
} filters[] = {
    {"", NULL},
    {"abs", f_abs},
    {"attr", f_attr},
    {"capitalize", f_capitalize},
    {"count", f_length},
    {"d", f_default},
    {"default", f_default},
    {"dictsort", f_dictsort},
    {"e", f_escape},
    {"escape", f_escape},
    {"first", f_first},
    {"float", f_float},
    {"format", f_format},
    {"indent", f_indent},
    {"int", f_int},
    {"items", f_items},
    {"join", f_join},
    {"last", f_last},
    {"length", f_length},
    {"list", f_list},
    {"lower", f_lower},
    {"map", f_map},
    {"max", f_max},
    {"min", f_min},
    {"reject", f_reject},
    {"rejectattr", f_rejectattr},
    {"replace", f_replace},
    {"reverse", f_reverse},
    {"round", f_round},
    {"safe", f_safe},
    {"select", f_select},
    {"selectattr", f_selectattr},
    {"sort", f_sort},
    {"string", f_string},
    {"sum", f_sum},
    {"title", f_title},
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"unique", f_unique},
    {"upper", f_upper},
    {"wordcount", f_wordcount},
};

int sp__filter_id(const char *name, size_t n) {
    for (size_t i = 1; i < SP_ARRAY_LEN(filters); i++)
        if (strlen(filters[i].name) == n && memcmp(filters[i].name, name, n) == 0)
            return (int)i;
    return 0;
}

sp_err sp__filter(sp__rt *r, int id, const sp__val *name, sp__val in, const sp__args *a,
                  uint32_t off, sp__val *out) {
    if (id <= 0 || (size_t)id >= SP_ARRAY_LEN(filters)) {
        if (!name || name->t != SP__STR)
            return sp__fail(r, SP_ERR_FORMAT, off, "No filter named ''.");
        return sp__fail(r, SP_ERR_FORMAT, off, "No filter named '%.*s'.", (int)SP_MIN(name->n, 64u),
                        name->s);
    }
    return filters[id].fn(r, in, a, off, out);
}

/* ---- tests ------------------------------------------------------------------------------- */

typedef sp_err (*test_fn)(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out);

#define SIMPLE_TEST(fname, label, expr)                                                        \
    static sp_err fname(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {    \
        NO_ARGS(label);                                                                        \
        (void)v;                                                                               \
        *out = (expr);                                                                         \
        return SP_OK;                                                                          \
    }

SIMPLE_TEST(t_boolean, "boolean", v.t == SP__BOOL)
SIMPLE_TEST(t_callable, "callable", v.t == SP__MACRO || v.t == SP__FUNC || v.t == SP__METHOD)
SIMPLE_TEST(t_defined, "defined", v.t != SP__UNDEF)
SIMPLE_TEST(t_undefined, "undefined", v.t == SP__UNDEF)
SIMPLE_TEST(t_none, "none", v.t == SP__NONE)
SIMPLE_TEST(t_false, "false", v.t == SP__BOOL && !v.b)
SIMPLE_TEST(t_true, "true", v.t == SP__BOOL && v.b)
SIMPLE_TEST(t_float, "float", v.t == SP__FLOAT)
SIMPLE_TEST(t_integer, "integer", v.t == SP__INT)
SIMPLE_TEST(t_number, "number", is_num(v))
SIMPLE_TEST(t_string, "string", v.t == SP__STR)
SIMPLE_TEST(t_mapping, "mapping", v.t == SP__DICT)
SIMPLE_TEST(t_iterable, "iterable", v.t == SP__STR || v.t == SP__LIST || v.t == SP__DICT || v.t == SP__UNDEF)
SIMPLE_TEST(t_sequence, "sequence",
            v.t == SP__STR || sp__is_plain_seq(v) || (v.t == SP__LIST && v.flag == SP__SEQ_RANGE) ||
                v.t == SP__DICT || v.t == SP__UNDEF)
SIMPLE_TEST(t_escaped, "escaped", false)

static sp_err t_parity(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out, int want) {
    NO_ARGS(want ? "odd" : "even");
    int64_t x = 0;
    sp_err e = want_int(r, v, "value", off, &x);
    if (!e)
        *out = (x % 2 != 0) == (want != 0);
    return e;
}
static sp_err t_odd(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    return t_parity(r, v, a, off, out, 1);
}
static sp_err t_even(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    return t_parity(r, v, a, off, out, 0);
}

static sp_err t_divisibleby(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    BIND("divisibleby", "num");
    if (absent(arg[0]))
        return sp__fail(r, SP_ERR_FORMAT, off, "divisibleby() missing required argument 'num'");
    if (is_int(v) && is_int(arg[0])) {
        int64_t d = as_int(arg[0]);
        if (d == 0)
            return sp__fail(r, SP_ERR_FORMAT, off, "integer modulo by zero");
        *out = d == -1 || as_int(v) % d == 0;
        return SP_OK;
    }
    if (is_num(v) && is_num(arg[0])) {
        if (as_f(arg[0]) == 0)
            return sp__fail(r, SP_ERR_FORMAT, off, "float modulo");
        *out = fmod(as_f(v), as_f(arg[0])) == 0;
        return SP_OK;
    }
    if (v.t == SP__UNDEF)
        return sp__undef_error(r, v, off);
    return sp__fail(r, SP_ERR_FORMAT, off, "unsupported operand type(s) for %%: '%s' and '%s'",
                    sp__type_name(v), sp__type_name(arg[0]));
}

static sp_err t_compare(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out,
                        uint8_t op) {
    BIND("compare", "other");
    if (absent(arg[0]))
        return sp__fail(r, SP_ERR_FORMAT, off, "test needs a value to compare with");
    if (op == SP__OP_EQ || op == SP__OP_NE) {
        bool eq;
        sp_err e = sp__eq(r, v, arg[0], off, &eq);
        if (!e)
            *out = op == SP__OP_EQ ? eq : !eq;
        return e;
    }
    static const char *const names[] = {
        [SP__OP_LT] = "<", [SP__OP_LE] = "<=", [SP__OP_GT] = ">", [SP__OP_GE] = ">="};
    int c;
    sp_err e = sp__cmp(r, v, arg[0], false, names[op], off, &c);
    if (!e)
        *out = sp__cmp_holds(c, op);
    return e;
}
static sp_err t_eq(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    return t_compare(r, v, a, off, out, SP__OP_EQ);
}
static sp_err t_ne(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    return t_compare(r, v, a, off, out, SP__OP_NE);
}
static sp_err t_lt(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    return t_compare(r, v, a, off, out, SP__OP_LT);
}
static sp_err t_le(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    return t_compare(r, v, a, off, out, SP__OP_LE);
}
static sp_err t_gt(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    return t_compare(r, v, a, off, out, SP__OP_GT);
}
static sp_err t_ge(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    return t_compare(r, v, a, off, out, SP__OP_GE);
}

static sp_err t_sameas(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    BIND("sameas", "other");
    sp__val o = arg[0];
    if (v.t != o.t) {
        *out = false;
        return SP_OK;
    }
    switch (v.t) {
    case SP__NONE:
    case SP__UNDEF:
        *out = v.t == SP__NONE;
        return SP_OK;
    case SP__BOOL:
        *out = v.b == o.b;
        return SP_OK;
    case SP__INT:
        *out = v.i == o.i && v.i >= -5 && v.i <= 256; // CPython caches these
        return SP_OK;
    case SP__STR:
        *out = v.s == o.s && v.n == o.n;
        return SP_OK;
    case SP__LIST:
        *out = v.l == o.l;
        return SP_OK;
    case SP__DICT:
    case SP__NS:
        *out = v.d == o.d;
        return SP_OK;
    default:
        return sp__eq(r, v, o, off, out);
    }
}

static sp_err t_in(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out);

static sp_err t_case(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out, bool upper) {
    NO_ARGS(upper ? "upper" : "lower");
    sp__val s;
    sp_err e = sp__stringify(r, v, off, &s);
    if (e)
        return e;
    bool cased = false, ok = true;
    for (size_t i = 0; ok && i < s.n;) {
        size_t len;
        uint32_t c = sp__utf8_dec(s.s + i, s.n - i, &len);
        if (cp_cased(c)) {
            cased = true;
            ok = upper ? cp_is_upper(c) : cp_is_lower(c);
        }
        i += len;
    }
    *out = cased && ok;
    return SP_OK;
}
static sp_err t_lower(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    return t_case(r, v, a, off, out, false);
}
static sp_err t_upper(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    return t_case(r, v, a, off, out, true);
}

static sp_err t_filter(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    NO_ARGS("filter");
    *out = v.t == SP__STR && sp__filter_id(v.s, v.n) != 0;
    return SP_OK;
}

static sp_err t_test(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out);

static const struct {
    const char *name;
    test_fn fn;
} tests[] = {
    {"", NULL},
    {"!=", t_ne},
    {"<", t_lt},
    {"<=", t_le},
    {"==", t_eq},
    {">", t_gt},
    {">=", t_ge},
    {"boolean", t_boolean},
    {"callable", t_callable},
    {"defined", t_defined},
    {"divisibleby", t_divisibleby},
    {"eq", t_eq},
    {"equalto", t_eq},
    {"escaped", t_escaped},
    {"even", t_even},
    {"false", t_false},
    {"filter", t_filter},
    {"float", t_float},
    {"ge", t_ge},
    {"greaterthan", t_gt},
    {"gt", t_gt},
    {"in", t_in},
    {"integer", t_integer},
    {"iterable", t_iterable},
    {"le", t_le},
    {"lessthan", t_lt},
    {"lower", t_lower},
    {"lt", t_lt},
    {"mapping", t_mapping},
    {"ne", t_ne},
    {"none", t_none},
    {"number", t_number},
    {"odd", t_odd},
    {"sameas", t_sameas},
    {"sequence", t_sequence},
    {"string", t_string},
    {"test", t_test},
    {"true", t_true},
    {"undefined", t_undefined},
    {"upper", t_upper},
};

int sp__test_id(const char *name, size_t n) {
    for (size_t i = 1; i < SP_ARRAY_LEN(tests); i++)
        if (strlen(tests[i].name) == n && memcmp(tests[i].name, name, n) == 0)
            return (int)i;
    return 0;
}

static sp_err t_test(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    NO_ARGS("test");
    *out = v.t == SP__STR && sp__test_id(v.s, v.n) != 0;
    return SP_OK;
}

static sp_err t_in(sp__rt *r, sp__val v, const sp__args *a, uint32_t off, bool *out) {
    BIND("in", "seq");
    sp__list *l;
    switch (arg[0].t) {
    case SP__STR:
        if (v.t != SP__STR)
            return sp__fail(r, SP_ERR_FORMAT, off,
                            "'in <string>' requires string as left operand, not %s", sp__type_name(v));
        *out = find_sub(arg[0].s, arg[0].n, v.s, v.n) != NULL;
        return SP_OK;
    case SP__DICT:
        *out = sp__hashable(v) && sp__dict_get(arg[0].d, v) != NULL;
        return SP_OK;
    default: {
        sp_err e = to_list(r, arg[0], off, &l);
        if (e)
            return e;
        *out = false;
        for (uint32_t i = 0; !e && !*out && i < l->n; i++)
            e = sp__eq(r, l->v[i], v, off, out);
        return e;
    }
    }
}

sp_err sp__test(sp__rt *r, int id, const sp__val *name, sp__val in, const sp__args *a,
                uint32_t off, bool *out) {
    if (id <= 0 || (size_t)id >= SP_ARRAY_LEN(tests))
        return sp__fail(r, SP_ERR_FORMAT, off, "No test named '%.*s'.",
                        name ? (int)SP_MIN(name->n, 64u) : 0, name ? name->s : "");
    return tests[id].fn(r, in, a, off, out);
}

/* ---- global functions -------------------------------------------------------------------- */

enum { G_NONE, G_RANGE, G_NAMESPACE, G_DICT, G_RAISE, G_STRFTIME, G__COUNT };
static const char *const globals[G__COUNT] = {"", "range", "namespace", "dict", "raise_exception",
                                              "strftime_now"};

int sp__global_id(const char *name, size_t n) {
    for (int i = 1; i < G__COUNT; i++)
        if (strlen(globals[i]) == n && memcmp(globals[i], name, n) == 0)
            return i;
    return 0;
}

/* The sandbox's bound on the length of a range (Jinja2's MAX_RANGE). */
#define MAX_RANGE 100000

static sp_err g_range(sp__rt *r, const sp__args *a, uint32_t off, sp__val *out) {
    if (a->n_kw)
        return sp__fail(r, SP_ERR_FORMAT, off, "range() takes no keyword arguments");
    if (a->n_pos < 1 || a->n_pos > 3)
        return sp__fail(r, SP_ERR_FORMAT, off, "range expected 1 to 3 arguments, got %u", a->n_pos);
    int64_t *v = sp__alloc(r, 3 * sizeof *v); // start, stop, step
    if (!v)
        return sp__oom(r, off);
    v[0] = 0;
    v[2] = 1;
    for (uint32_t i = 0; i < a->n_pos; i++) {
        if (!is_int(a->pos[i]))
            return sp__fail(r, SP_ERR_FORMAT, off,
                            "'%s' object cannot be interpreted as an integer",
                            sp__type_name(a->pos[i]));
        v[a->n_pos == 1 ? 1 : i] = as_int(a->pos[i]);
    }
    if (v[2] == 0)
        return sp__fail(r, SP_ERR_FORMAT, off, "range() arg 3 must not be zero");
    // Count without overflow: the span can exceed int64 range.
    uint64_t count = 0;
    if (v[2] > 0 && v[0] < v[1])
        count = ((uint64_t)v[1] - (uint64_t)v[0] - 1) / (uint64_t)v[2] + 1;
    else if (v[2] < 0 && v[1] < v[0])
        count = ((uint64_t)v[0] - (uint64_t)v[1] - 1) / (0ull - (uint64_t)v[2]) + 1;
    if (count > MAX_RANGE)
        return sp__fail(r, SP_ERR_FORMAT, off,
                        "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).",
                        MAX_RANGE);
    // Producing each element is a step.
    sp__list *l;
    sp_err e = sp__steps(r, count, off);
    if (e || (e = sp__list_new(r, (uint32_t)count, off, &l)))
        return e;
    for (uint64_t i = 0; i < count; i++)
        l->v[l->n++] = sp__v_int((int64_t)((uint64_t)v[0] + i * (uint64_t)v[2]));
    l->range = v;
    *out = sp__v_seq(l, SP__SEQ_RANGE);
    return SP_OK;
}

static sp_err g_dict(sp__rt *r, const sp__args *a, uint32_t off, sp__val *out, bool ns) {
    sp__dict *d;
    sp_err e = sp__dict_new(r, a->n_kw, off, &d);
    if (e)
        return e;
    if (a->n_pos > 1)
        return sp__fail(r, SP_ERR_FORMAT, off, "%s expected at most 1 argument, got %u",
                        ns ? "namespace" : "dict", a->n_pos);
    if (a->n_pos == 1) {
        sp__val src = a->pos[0];
        if (src.t == SP__DICT || src.t == SP__NS) {
            for (uint32_t i = 0; i < src.d->n; i++)
                if ((e = sp__dict_set(r, d, src.d->k[i], src.d->v[i], off)))
                    return e;
        } else {
            sp__list *l;
            if ((e = to_list(r, src, off, &l)))
                return e;
            for (uint32_t i = 0; i < l->n; i++) {
                sp__val p = l->v[i];
                if (p.t != SP__LIST || p.l->n != 2 || !sp__hashable(p.l->v[0]))
                    return sp__fail(r, SP_ERR_FORMAT, off,
                                    "dictionary update sequence element #%u has the wrong shape", i);
                if ((e = sp__dict_set(r, d, p.l->v[0], p.l->v[1], off)))
                    return e;
            }
        }
    }
    for (uint32_t k = 0; k < a->n_kw; k++)
        if ((e = sp__dict_set(r, d, a->kw_name[k], a->kw[k], off)))
            return e;
    sp__val v = {.t = ns ? SP__NS : SP__DICT};
    v.d = d;
    *out = v;
    return SP_OK;
}

static sp_err g_strftime(sp__rt *r, const sp__args *a, uint32_t off, sp__val *out) {
    if (a->n_pos != 1 || a->n_kw)
        return sp__fail(r, SP_ERR_FORMAT, off, "strftime_now() takes exactly one argument");
    sp__val f = a->pos[0];
    sp_err e = want_str(r, f, "format", off);
    if (e)
        return e;
    if (f.n > 4096)
        return sp__fail(r, SP_ERR_LIMIT, off, "strftime format too long");
    char *fmt = sp__alloc(r, (size_t)f.n + 2);
    if (!fmt)
        return sp__oom(r, off);
    memcpy(fmt, f.s, f.n);
    fmt[f.n] = '\x01'; // a sentinel so an empty result is distinguishable from overflow
    fmt[f.n + 1] = '\0';
    time_t now = (time_t)r->now;
    struct tm tm;
    if (!localtime_r(&now, &tm))
        return sp__fail(r, SP_ERR_FORMAT, off, "cannot convert the current time");
    size_t cap = 256;
    for (;;) {
        char *buf = sp__alloc(r, cap);
        if (!buf)
            return sp__oom(r, off);
        // The format is the template's, as with Python's strftime.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        size_t k = strftime(buf, cap, fmt, &tm);
#pragma GCC diagnostic pop
        if (k > 0)
            return sp__str_copy(r, buf, k - 1, off, out);
        if (cap >= 65536)
            return sp__fail(r, SP_ERR_LIMIT, off, "strftime result too long");
        cap *= 4;
    }
}

sp_err sp__call_global(sp__rt *r, int id, const sp__args *a, uint32_t off, sp__val *out) {
    switch (id) {
    case G_RANGE:
        return g_range(r, a, off, out);
    case G_NAMESPACE:
        return g_dict(r, a, off, out, true);
    case G_DICT:
        return g_dict(r, a, off, out, false);
    case G_RAISE: {
        sp__val msg = sp__v_str("", 0);
        if (a->n_pos > 0) {
            sp_err e = sp__stringify(r, a->pos[0], off, &msg);
            if (e)
                return e;
        }
        return sp__fail(r, SP_ERR_INVALID, off, "%.*s", (int)SP_MIN(msg.n, (uint32_t)INT32_MAX),
                        msg.s);
    }
    case G_STRFTIME:
        return g_strftime(r, a, off, out);
    default:
        return sp__fail(r, SP_ERR_FORMAT, off, "unknown function");
    }
}

/* ---- methods ----------------------------------------------------------------------------- */

enum {
    M_NONE,
    // str
    M_CAPITALIZE,
    M_COUNT,
    M_ENDSWITH,
    M_FIND,
    M_FORMAT,
    M_ISALNUM,
    M_ISALPHA,
    M_ISDIGIT,
    M_ISLOWER,
    M_ISSPACE,
    M_ISUPPER,
    M_JOIN,
    M_LOWER,
    M_LSTRIP,
    M_REPLACE,
    M_RFIND,
    M_RSPLIT,
    M_RSTRIP,
    M_SPLIT,
    M_SPLITLINES,
    M_STARTSWITH,
    M_STRIP,
    M_TITLE,
    M_UPPER,
    M__STR_END,
    // dict
    M_GET,
    M_ITEMS,
    M_KEYS,
    M_VALUES,
    M__DICT_END,
    // loop
    M_CYCLE,
};

static const char *const method_names[] = {
    [M_CAPITALIZE] = "capitalize", [M_COUNT] = "count",     [M_ENDSWITH] = "endswith",
    [M_FIND] = "find",             [M_FORMAT] = "format",   [M_ISALNUM] = "isalnum",
    [M_ISALPHA] = "isalpha",       [M_ISDIGIT] = "isdigit", [M_ISLOWER] = "islower",
    [M_ISSPACE] = "isspace",       [M_ISUPPER] = "isupper", [M_JOIN] = "join",
    [M_LOWER] = "lower",           [M_LSTRIP] = "lstrip",   [M_REPLACE] = "replace",
    [M_RFIND] = "rfind",           [M_RSPLIT] = "rsplit",   [M_RSTRIP] = "rstrip",
    [M_SPLIT] = "split",           [M_SPLITLINES] = "splitlines",
    [M_STARTSWITH] = "startswith", [M_STRIP] = "strip",     [M_TITLE] = "title",
    [M_UPPER] = "upper",           [M_GET] = "get",         [M_ITEMS] = "items",
    [M_KEYS] = "keys",             [M_VALUES] = "values",   [M_CYCLE] = "cycle",
};

static bool name_is(const char *name, size_t n, const char *want) {
    return want && strlen(want) == n && memcmp(want, name, n) == 0;
}

int sp__method_id(sp__val v, const char *name, size_t n) {
    int lo, hi;
    if (v.t == SP__STR) {
        lo = M_NONE + 1;
        hi = M__STR_END;
    } else if (v.t == SP__DICT) {
        lo = M__STR_END + 1;
        hi = M__DICT_END;
    } else if (v.t == SP__LOOP) {
        lo = M_CYCLE;
        hi = M_CYCLE + 1;
    } else {
        return 0;
    }
    for (int i = lo; i < hi; i++)
        if (name_is(name, n, method_names[i]))
            return i;
    return 0;
}

bool sp__unsafe_method(sp__val v, const char *name, size_t n) {
    static const char *const list_m[] = {"append", "clear", "extend", "insert", "pop", "remove",
                                         "reverse", "sort"};
    static const char *const dict_m[] = {"clear", "pop", "popitem", "setdefault", "update"};
    if (v.t == SP__LIST) {
        for (size_t i = 0; i < SP_ARRAY_LEN(list_m); i++)
            if (name_is(name, n, list_m[i]))
                return true;
    } else if (v.t == SP__DICT) {
        for (size_t i = 0; i < SP_ARRAY_LEN(dict_m); i++)
            if (name_is(name, n, dict_m[i]))
                return true;
    }
    return false;
}

static sp_err affix(sp__rt *r, sp__val s, sp__val x, bool end, uint32_t off, bool *out) {
    if (sp__is_tuple(x)) {
        *out = false;
        for (uint32_t i = 0; i < x.l->n && !*out; i++) {
            sp_err e = affix(r, s, x.l->v[i], end, off, out);
            if (e)
                return e;
        }
        return SP_OK;
    }
    if (x.t != SP__STR)
        return sp__fail(r, SP_ERR_FORMAT, off,
                        "%s first arg must be str or a tuple of str, not %s",
                        end ? "endswith" : "startswith", sp__type_name(x));
    *out = x.n <= s.n && memcmp(end ? s.s + s.n - x.n : s.s, x.s, x.n) == 0;
    return SP_OK;
}

static sp_err str_method(sp__rt *r, int id, sp__val s, const sp__args *a, uint32_t off,
                         sp__val *out) {
    sp_err e;
    const char *fn = method_names[id];
    switch (id) {
    case M_CAPITALIZE:
    case M_LOWER:
    case M_UPPER:
    case M_TITLE: {
        NO_ARGS(fn);
        int mode = id == M_CAPITALIZE ? CASE_CAPITALIZE
                   : id == M_LOWER    ? CASE_LOWER
                   : id == M_UPPER    ? CASE_UPPER
                                      : CASE_TITLE;
        return map_case(r, s, mode, off, out);
    }
    case M_STRIP:
    case M_LSTRIP:
    case M_RSTRIP: {
        BIND(fn, "chars");
        if (!absent(arg[0]) && arg[0].t != SP__NONE && (e = want_str(r, arg[0], "chars", off)))
            return e;
        *out = strip(s, arg[0], id == M_STRIP ? 3 : id == M_LSTRIP ? 1 : 2);
        return SP_OK;
    }
    case M_SPLIT:
    case M_RSPLIT: {
        BIND(fn, "sep", "maxsplit");
        int64_t maxsplit = -1;
        if (!absent(arg[0]) && arg[0].t != SP__NONE && (e = want_str(r, arg[0], "sep", off)))
            return e;
        if (!absent(arg[1]) && (e = want_int(r, arg[1], "maxsplit", off, &maxsplit)))
            return e;
        return str_split(r, s, arg[0], maxsplit, id == M_RSPLIT, off, out);
    }
    case M_SPLITLINES: {
        BIND(fn, "keepends");
        sp__list *l;
        if ((e = splitlines(r, s, !absent(arg[0]) && sp__truthy(arg[0]), off, &l)))
            return e;
        *out = sp__v_list(l, false);
        return SP_OK;
    }
    case M_STARTSWITH:
    case M_ENDSWITH: {
        BIND(fn, "prefix");
        bool res;
        if ((e = affix(r, s, arg[0], id == M_ENDSWITH, off, &res)))
            return e;
        *out = sp__v_bool(res);
        return SP_OK;
    }
    case M_FIND:
    case M_RFIND:
    case M_COUNT: {
        BIND(fn, "sub");
        if ((e = want_str(r, arg[0], "substring", off)) || (e = sp__steps(r, s.n / 64, off)))
            return e;
        if (id == M_COUNT) {
            int64_t k = 0;
            if (arg[0].n == 0) {
                k = (int64_t)cp_len(s) + 1;
            } else {
                for (size_t i = 0;;) {
                    const char *hit = find_sub(s.s + i, s.n - i, arg[0].s, arg[0].n);
                    if (!hit)
                        break;
                    k++;
                    i = (size_t)(hit - s.s) + arg[0].n;
                }
            }
            *out = sp__v_int(k);
            return SP_OK;
        }
        const char *hit = id == M_FIND ? find_sub(s.s, s.n, arg[0].s, arg[0].n)
                                       : rfind_sub(s.s, s.n, arg[0].s, arg[0].n);
        *out = sp__v_int(hit ? (int64_t)sp__utf8_count(s.s, (size_t)(hit - s.s)) : -1);
        return SP_OK;
    }
    case M_REPLACE: {
        BIND(fn, "old", "new", "count");
        int64_t count = -1;
        if ((e = want_str(r, arg[0], "old", off)) || (e = want_str(r, arg[1], "new", off)))
            return e;
        if (!absent(arg[2]) && (e = want_int(r, arg[2], "count", off, &count)))
            return e;
        return str_replace(r, s, arg[0], arg[1], count, off, out);
    }
    case M_JOIN: {
        BIND(fn, "iterable");
        sp__list *l;
        if ((e = to_list(r, arg[0], off, &l)) || (e = sp__steps(r, l->n, off)))
            return e;
        sp__buf b = {0};
        for (uint32_t i = 0; i < l->n; i++) {
            if (l->v[i].t != SP__STR)
                return sp__fail(r, SP_ERR_FORMAT, off,
                                "sequence item %u: expected str instance, %s found", i,
                                sp__type_name(l->v[i]));
            if ((i && (e = sp__buf_put(r, &b, s.s, s.n, off))) ||
                (e = sp__buf_put(r, &b, l->v[i].s, l->v[i].n, off)))
                return e;
        }
        *out = sp__buf_val(&b);
        return SP_OK;
    }
    case M_FORMAT:
        return str_format(r, s, a, off, out);
    default: {
        NO_ARGS(fn);
        bool ok = s.n > 0, cased = false;
        for (size_t i = 0; ok && i < s.n;) {
            size_t len;
            uint32_t c = sp__utf8_dec(s.s + i, s.n - i, &len);
            bool digit = c >= '0' && c <= '9';
            bool alpha = (c < 0x80 && ((c | 32) >= 'a' && (c | 32) <= 'z')) || cp_cased(c);
            switch (id) {
            case M_ISDIGIT:
                ok = digit;
                break;
            case M_ISALPHA:
                ok = alpha;
                break;
            case M_ISALNUM:
                ok = alpha || digit;
                break;
            case M_ISSPACE:
                ok = sp__space_at(s.s + i, s.n - i) > 0;
                break;
            case M_ISLOWER:
                if (cp_cased(c)) {
                    cased = true;
                    ok = cp_is_lower(c);
                }
                break;
            default: // M_ISUPPER
                if (cp_cased(c)) {
                    cased = true;
                    ok = cp_is_upper(c);
                }
                break;
            }
            i += len;
        }
        if (id == M_ISLOWER || id == M_ISUPPER)
            ok = ok && cased;
        *out = sp__v_bool(ok);
        return SP_OK;
    }
    }
}

sp_err sp__call_method(sp__rt *r, int id, sp__val self, const sp__args *a, uint32_t off,
                       sp__val *out) {
    sp_err e;
    if (id < M__STR_END)
        return str_method(r, id, self, a, off, out);
    if (id == M_CYCLE) {
        if (a->n_kw || a->n_pos == 0)
            return sp__fail(r, SP_ERR_FORMAT, off, "no items for cycling given");
        *out = a->pos[self.loop->i % a->n_pos];
        return SP_OK;
    }
    const sp__dict *d = self.d;
    if (id == M_GET) {
        BIND("get", "key", "default");
        if (absent(arg[0]))
            return sp__fail(r, SP_ERR_FORMAT, off, "get expected at least 1 argument, got 0");
        sp__val *v = sp__hashable(arg[0]) ? sp__dict_get(d, arg[0]) : NULL;
        *out = v ? *v : absent(arg[1]) ? sp__v_none() : arg[1];
        return SP_OK;
    }
    NO_ARGS(method_names[id]);
    sp__list *l;
    if ((e = sp__steps(r, d->n, off)) || (e = sp__list_new(r, d->n, off, &l)))
        return e;
    for (uint32_t i = 0; i < d->n; i++) {
        if (id == M_ITEMS) {
            sp__list *pair;
            if ((e = sp__list_new(r, 2, off, &pair)))
                return e;
            pair->v[0] = d->k[i];
            pair->v[1] = d->v[i];
            pair->n = 2;
            l->v[i] = sp__v_list(pair, true);
        } else {
            l->v[i] = id == M_KEYS ? d->k[i] : d->v[i];
        }
    }
    l->n = d->n;
    *out = sp__v_seq(l, id == M_ITEMS ? SP__SEQ_ITEMS : id == M_KEYS ? SP__SEQ_KEYS : SP__SEQ_VALUES);
    return SP_OK;
}

static const sp__undef no_prev = {.kind = SP__U_MSG, .msg = "there is no previous item"};
static const sp__undef no_next = {.kind = SP__U_MSG, .msg = "there is no next item"};

bool sp__loop_attr(const sp__loop *l, const char *name, size_t n, sp__val *out) {
    uint32_t i = l->i, len = l->items->n;
    if (name_is(name, n, "index"))
        *out = sp__v_int((int64_t)i + 1);
    else if (name_is(name, n, "index0"))
        *out = sp__v_int(i);
    else if (name_is(name, n, "revindex"))
        *out = sp__v_int((int64_t)len - i);
    else if (name_is(name, n, "revindex0"))
        *out = sp__v_int((int64_t)len - i - 1);
    else if (name_is(name, n, "first"))
        *out = sp__v_bool(i == 0);
    else if (name_is(name, n, "last"))
        *out = sp__v_bool(i + 1 == len);
    else if (name_is(name, n, "length"))
        *out = sp__v_int(len);
    else if (name_is(name, n, "depth"))
        *out = sp__v_int(1);
    else if (name_is(name, n, "depth0"))
        *out = sp__v_int(0);
    else if (name_is(name, n, "previtem"))
        *out = i > 0 ? l->items->v[i - 1] : sp__v_undef(&no_prev);
    else if (name_is(name, n, "nextitem"))
        *out = i + 1 < len ? l->items->v[i + 1] : sp__v_undef(&no_next);
    else
        return false;
    return true;
}
