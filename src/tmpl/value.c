/* Values of the template engine: the arena they live in, strings and containers, and the
 * Python behaviours templates rely on (str(), repr(), ==, ordering, json.dumps). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/util.h"
#include "tmpl/tmpl_int.h"

/* ---- arena ---------------------------------------------------------------------------- */

struct sp__chunk {
    sp__chunk *next;
    size_t cap, used; // bytes of data
    // data follows, 16-aligned
};

#define CHUNK_HDR ((sizeof(sp__chunk) + 15) & ~(size_t)15)
#define CHUNK_DATA(c) ((unsigned char *)(c) + CHUNK_HDR)

void sp__arena_init(sp__arena *a, size_t limit_bytes) {
    a->head = NULL;
    a->held_bytes = 0;
    a->limit_bytes = limit_bytes ? limit_bytes : SIZE_MAX;
    a->err = SP_OK;
}

void sp__arena_deinit(sp__arena *a) {
    sp__chunk *c = a->head;
    while (c) {
        sp__chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->held_bytes = 0;
}

void *sp__arena_alloc(sp__arena *a, size_t n) {
    if (n > SIZE_MAX / 2) {
        a->err = SP_ERR_LIMIT;
        return NULL;
    }
    size_t need = (n + 15) & ~(size_t)15;
    sp__chunk *c = a->head;
    if (c && c->cap - c->used >= need) {
        void *p = CHUNK_DATA(c) + c->used;
        c->used += need;
        return p;
    }
    // Chunks grow with the arena so that big renders make few of them.
    size_t want = SP_MIN(SP_MAX(a->held_bytes, (size_t)8192), (size_t)1 << 20);
    size_t cap = SP_MAX(need, want);
    if (a->held_bytes + CHUNK_HDR + cap > a->limit_bytes) {
        cap = need; // try the bare minimum before giving up
        if (a->held_bytes > a->limit_bytes || a->limit_bytes - a->held_bytes < CHUNK_HDR + cap) {
            a->err = SP_ERR_LIMIT;
            return NULL;
        }
    }
    c = malloc(CHUNK_HDR + cap);
    if (!c) {
        a->err = SP_ERR_NOMEM;
        return NULL;
    }
    c->cap = cap;
    c->used = need;
    c->next = a->head;
    a->head = c;
    a->held_bytes += CHUNK_HDR + cap;
    return CHUNK_DATA(c);
}

void *sp__arena_grow(sp__arena *a, void *p, size_t old_n, size_t new_n) {
    if (!p)
        return sp__arena_alloc(a, new_n);
    size_t old_r = (old_n + 15) & ~(size_t)15;
    size_t new_r = (new_n + 15) & ~(size_t)15;
    sp__chunk *c = a->head;
    if (new_n <= SIZE_MAX / 2 && c && (unsigned char *)p + old_r == CHUNK_DATA(c) + c->used &&
        c->used - old_r + new_r <= c->cap) {
        c->used = c->used - old_r + new_r;
        return p;
    }
    void *q = sp__arena_alloc(a, new_n);
    if (!q)
        return NULL;
    memcpy(q, p, SP_MIN(old_n, new_n));
    return q;
}

/* ---- errors, budget --------------------------------------------------------------------- */

sp_err sp__fail(sp__rt *r, sp_err err, uint32_t off, const char *fmt, ...) {
    char msg[sizeof(((sp_diag *)0)->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sp_diag_set(r->diag, err, off, "%s", msg);
}

sp_err sp__oom(sp__rt *r, uint32_t off) {
    if (r->arena.err == SP_ERR_LIMIT)
        return sp__fail(r, SP_ERR_LIMIT, off, "template exceeded its memory limit (%zu bytes)",
                        r->arena.limit_bytes);
    return sp__fail(r, SP_ERR_NOMEM, off, "out of memory while rendering the template");
}

sp_err sp__steps(sp__rt *r, uint64_t n, uint32_t off) {
    // Compared before adding, so that no charge can wrap the count around.
    if (n > r->max_steps - r->steps)
        return sp__fail(r, SP_ERR_LIMIT, off, "template exceeded its step limit (%" PRIu64 ")",
                        r->max_steps);
    r->steps += n;
    return SP_OK;
}

sp_err sp__enter(sp__rt *r, uint32_t off) {
    if (r->depth >= r->max_depth)
        return sp__fail(r, SP_ERR_LIMIT, off, "template exceeded its nesting limit (%u)",
                        r->max_depth);
    r->depth++;
    return SP_OK;
}

void *sp__alloc(sp__rt *r, size_t n) { return sp__arena_alloc(&r->arena, n); }

/* ---- buffers and strings ------------------------------------------------------------------ */

/* Makes room for n more bytes in b, within the output limit. */
static sp_err buf_reserve(sp__rt *r, sp__buf *b, size_t n, uint32_t off) {
    if (n > r->max_out || b->n > r->max_out - n)
        return sp__fail(r, SP_ERR_LIMIT, off, "template output exceeds its limit (%zu bytes)",
                        r->max_out);
    if (b->n + n > b->cap) {
        size_t cap = SP_MAX(SP_MAX(b->cap * 2, b->n + n), (size_t)64);
        char *q = sp__arena_grow(&r->arena, b->p, b->cap, cap);
        if (!q)
            return sp__oom(r, off);
        b->p = q;
        b->cap = cap;
    }
    return SP_OK;
}

sp_err sp__buf_put(sp__rt *r, sp__buf *b, const char *p, size_t n, uint32_t off) {
    if (n == 0)
        return SP_OK;
    sp_err e = buf_reserve(r, b, n, off);
    if (e)
        return e;
    memcpy(b->p + b->n, p, n);
    b->n += n;
    return SP_OK;
}

sp_err sp__buf_putc(sp__rt *r, sp__buf *b, char c, uint32_t off) {
    return sp__buf_put(r, b, &c, 1, off);
}

sp_err sp__buf_fill(sp__rt *r, sp__buf *b, char c, size_t n, uint32_t off) {
    if (n == 0)
        return SP_OK;
    sp_err e = buf_reserve(r, b, n, off);
    if (e)
        return e;
    memset(b->p + b->n, c, n);
    b->n += n;
    return SP_OK;
}

sp_err sp__buf_printf(sp__rt *r, sp__buf *b, uint32_t off, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0)
        k = 0;
    return sp__buf_put(r, b, tmp, SP_MIN((size_t)k, sizeof tmp - 1), off);
}

sp__val sp__buf_val(const sp__buf *b) { return sp__v_str(b->p ? b->p : "", (uint32_t)b->n); }

sp_err sp__str_copy(sp__rt *r, const char *p, size_t n, uint32_t off, sp__val *out) {
    if (n > UINT32_MAX)
        return sp__fail(r, SP_ERR_LIMIT, off, "string too long");
    char *q = sp__alloc(r, n);
    if (!q)
        return sp__oom(r, off);
    if (n)
        memcpy(q, p, n);
    *out = sp__v_str(q, (uint32_t)n);
    return SP_OK;
}

/* ---- UTF-8 -------------------------------------------------------------------------------- */

uint32_t sp__utf8_dec(const char *s, size_t n, size_t *len) {
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0) {
        *len = 0;
        return 0;
    }
    unsigned c = u[0];
    if (c < 0x80 || n < 2) {
        *len = 1;
        return c;
    }
    if (c < 0xe0) {
        *len = 2;
        return ((c & 0x1fu) << 6) | (u[1] & 0x3fu);
    }
    if (c < 0xf0 || n < 4) {
        if (n < 3) {
            *len = 1;
            return c;
        }
        *len = 3;
        return ((c & 0x0fu) << 12) | ((u[1] & 0x3fu) << 6) | (u[2] & 0x3fu);
    }
    *len = 4;
    return ((c & 0x07u) << 18) | ((u[1] & 0x3fu) << 12) | ((u[2] & 0x3fu) << 6) | (u[3] & 0x3fu);
}

size_t sp__utf8_enc(uint32_t cp, char out[4]) {
    if (cp >= 0xd800 && cp <= 0xdfff)
        cp = 0xfffd;
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    if (cp > 0x10ffff)
        return sp__utf8_enc(0xfffd, out);
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

size_t sp__utf8_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xc0) != 0x80;
    return k;
}

static bool py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

size_t sp__space_at(const char *s, size_t n) {
    if (n == 0)
        return 0;
    if ((unsigned char)s[0] < 0x80)
        return py_space((unsigned char)s[0]) ? 1 : 0;
    size_t len;
    uint32_t c = sp__utf8_dec(s, n, &len);
    return py_space(c) ? len : 0;
}

size_t sp__space_before(const char *s, size_t n) {
    if (n == 0)
        return 0;
    if ((unsigned char)s[n - 1] < 0x80)
        return py_space((unsigned char)s[n - 1]) ? 1 : 0;
    size_t start = n - 1;
    while (start > 0 && n - start < 4 && ((unsigned char)s[start] & 0xc0) == 0x80)
        start--;
    size_t len;
    uint32_t c = sp__utf8_dec(s + start, n - start, &len);
    return (start + len == n && py_space(c)) ? len : 0;
}

/* ---- lists and dicts ------------------------------------------------------------------------ */

sp_err sp__list_new(sp__rt *r, uint32_t cap, uint32_t off, sp__list **out) {
    sp__list *l = sp__alloc(r, sizeof *l);
    if (!l)
        return sp__oom(r, off);
    l->n = 0;
    l->cap = cap;
    l->v = NULL;
    l->range = NULL;
    if (cap) {
        l->v = sp__alloc(r, (size_t)cap * sizeof *l->v);
        if (!l->v)
            return sp__oom(r, off);
    }
    *out = l;
    return SP_OK;
}

sp_err sp__list_push(sp__rt *r, sp__list *l, sp__val v, uint32_t off) {
    if (l->n == l->cap) {
        if (l->cap >= UINT32_MAX / 2)
            return sp__fail(r, SP_ERR_LIMIT, off, "list too long");
        uint32_t cap = l->cap ? l->cap * 2 : 4;
        sp__val *q = sp__arena_grow(&r->arena, l->v, (size_t)l->cap * sizeof *q,
                                    (size_t)cap * sizeof *q);
        if (!q)
            return sp__oom(r, off);
        l->v = q;
        l->cap = cap;
    }
    l->v[l->n++] = v;
    return SP_OK;
}

sp_err sp__dict_new(sp__rt *r, uint32_t cap, uint32_t off, sp__dict **out) {
    sp__dict *d = sp__alloc(r, sizeof *d);
    if (!d)
        return sp__oom(r, off);
    memset(d, 0, sizeof *d);
    if (cap) {
        d->k = sp__alloc(r, (size_t)cap * sizeof *d->k);
        d->v = sp__alloc(r, (size_t)cap * sizeof *d->v);
        if (!d->k || !d->v)
            return sp__oom(r, off);
        d->cap = cap;
    }
    *out = d;
    return SP_OK;
}

bool sp__hashable(sp__val v) {
    return v.t == SP__STR || v.t == SP__INT || v.t == SP__FLOAT || v.t == SP__BOOL ||
           v.t == SP__NONE;
}

static uint64_t hash_str(const char *s, size_t n) {
    return sp_mix64(sp_fnv1a64(s, n));
}

static uint64_t hash_val(sp__val k) {
    switch (k.t) {
    case SP__STR:
        return hash_str(k.s, k.n);
    case SP__INT:
        return sp_mix64((uint64_t)k.i);
    case SP__BOOL:
        return sp_mix64((uint64_t)k.b);
    case SP__FLOAT:
        // Equal numbers hash equally: 1.0 and 1 are the same key. Every float in [-2^63, 2^63)
        // converts to int64 without overflow.
        if (k.f >= -0x1p63 && k.f < 0x1p63 && k.f == (double)(int64_t)k.f)
            return sp_mix64((uint64_t)(int64_t)k.f);
        {
            uint64_t bits;
            memcpy(&bits, &k.f, sizeof bits);
            return sp_mix64(bits);
        }
    default:
        return 0x1234567;
    }
}

static bool is_num(sp__val v) { return v.t == SP__INT || v.t == SP__BOOL || v.t == SP__FLOAT; }
static int64_t as_int(sp__val v) { return v.t == SP__BOOL ? (int64_t)v.b : v.i; }

/* An int against a float, exactly as Python compares them (converting the int to a double
 * would round it: 2**53 + 1 == 2.0**53 would hold). */
static int cmp_int_float(int64_t i, double f) {
    if (isnan(f))
        return SP__CMP_UNORDERED;
    if (f >= 0x1p63)
        return -1;
    if (f < -0x1p63)
        return 1;
    double whole = trunc(f); // in [-2^63, 2^63): converts exactly
    int64_t w = (int64_t)whole;
    if (i != w)
        return i < w ? -1 : 1;
    double frac = f - whole; // exact
    return frac > 0 ? -1 : frac < 0 ? 1 : 0;
}

/* Python's ordering of two numbers: <0, 0, >0, or SP__CMP_UNORDERED when one is NaN. */
static int cmp_num(sp__val a, sp__val b) {
    if (a.t != SP__FLOAT && b.t != SP__FLOAT) {
        int64_t x = as_int(a), y = as_int(b);
        return x < y ? -1 : x > y;
    }
    if (a.t != SP__FLOAT)
        return cmp_int_float(as_int(a), b.f);
    if (b.t != SP__FLOAT) {
        int c = cmp_int_float(as_int(b), a.f);
        return c == SP__CMP_UNORDERED ? c : -c;
    }
    if (isnan(a.f) || isnan(b.f))
        return SP__CMP_UNORDERED;
    return a.f < b.f ? -1 : a.f > b.f;
}

static bool key_eq(sp__val a, sp__val b) {
    if (is_num(a) && is_num(b))
        return cmp_num(a, b) == 0;
    if (a.t != b.t)
        return false;
    if (a.t == SP__STR)
        return a.n == b.n && (a.n == 0 || memcmp(a.s, b.s, a.n) == 0);
    return a.t == SP__NONE;
}

static bool dict_index(sp__rt *r, sp__dict *d) {
    uint32_t cap = 16;
    while (cap < d->n * 2 + 2)
        cap *= 2;
    uint32_t *idx = sp__alloc(r, (size_t)cap * sizeof *idx);
    if (!idx)
        return false;
    memset(idx, 0, (size_t)cap * sizeof *idx);
    for (uint32_t i = 0; i < d->n; i++) {
        uint32_t s = (uint32_t)hash_val(d->k[i]) & (cap - 1);
        while (idx[s])
            s = (s + 1) & (cap - 1);
        idx[s] = i + 1;
    }
    d->idx = idx;
    d->idx_cap = cap;
    return true;
}

static uint32_t dict_find(const sp__dict *d, sp__val k) {
    if (d->idx) {
        uint32_t s = (uint32_t)hash_val(k) & (d->idx_cap - 1);
        while (d->idx[s]) {
            uint32_t e = d->idx[s] - 1;
            if (key_eq(d->k[e], k))
                return e;
            s = (s + 1) & (d->idx_cap - 1);
        }
        return UINT32_MAX;
    }
    for (uint32_t i = 0; i < d->n; i++)
        if (key_eq(d->k[i], k))
            return i;
    return UINT32_MAX;
}

sp__val *sp__dict_get(const sp__dict *d, sp__val k) {
    uint32_t i = dict_find(d, k);
    return i == UINT32_MAX ? NULL : &d->v[i];
}

sp__val *sp__dict_get_str(const sp__dict *d, const char *s, size_t n) {
    return sp__dict_get(d, sp__v_str(s, (uint32_t)n));
}

sp_err sp__dict_set(sp__rt *r, sp__dict *d, sp__val k, sp__val v, uint32_t off) {
    uint32_t i = dict_find(d, k);
    if (i != UINT32_MAX) {
        d->v[i] = v;
        return SP_OK;
    }
    if (d->n == d->cap) {
        if (d->cap >= UINT32_MAX / 4)
            return sp__fail(r, SP_ERR_LIMIT, off, "dict too large");
        uint32_t cap = d->cap ? d->cap * 2 : 4;
        sp__val *nk = sp__arena_grow(&r->arena, d->k, (size_t)d->cap * sizeof *nk,
                                     (size_t)cap * sizeof *nk);
        if (!nk)
            return sp__oom(r, off);
        d->k = nk;
        sp__val *nv = sp__arena_grow(&r->arena, d->v, (size_t)d->cap * sizeof *nv,
                                     (size_t)cap * sizeof *nv);
        if (!nv)
            return sp__oom(r, off);
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n] = v;
    d->n++;
    if (d->n > 8) {
        if (!d->idx || d->n * 2 > d->idx_cap) {
            if (!dict_index(r, d))
                return sp__oom(r, off);
        } else {
            uint32_t s = (uint32_t)hash_val(k) & (d->idx_cap - 1);
            while (d->idx[s])
                s = (s + 1) & (d->idx_cap - 1);
            d->idx[s] = d->n;
        }
    }
    return SP_OK;
}

/* ---- truth, names, undefined ----------------------------------------------------------------- */

bool sp__truthy(sp__val v) {
    switch (v.t) {
    case SP__UNDEF:
    case SP__NONE:
        return false;
    case SP__BOOL:
        return v.b;
    case SP__INT:
        return v.i != 0;
    case SP__FLOAT:
        return v.f != 0.0;
    case SP__STR:
        return v.n != 0;
    case SP__LIST:
        return v.flag == SP__SEQ_GEN || v.l->n != 0; // a generator is always true
    case SP__DICT:
        return v.d->n != 0;
    default:
        return true;
    }
}

const char *sp__type_name(sp__val v) {
    switch (v.t) {
    case SP__UNDEF:
        return "Undefined";
    case SP__NONE:
        return "NoneType";
    case SP__BOOL:
        return "bool";
    case SP__INT:
        return "int";
    case SP__FLOAT:
        return "float";
    case SP__STR:
        return "str";
    case SP__LIST: {
        static const char *const kinds[] = {"list", "tuple", "generator", "range",
                                            "dict_items", "dict_keys", "dict_values"};
        return v.flag < SP_ARRAY_LEN(kinds) ? kinds[v.flag] : "list";
    }
    case SP__DICT:
        return "dict";
    case SP__NS:
        return "Namespace";
    case SP__MACRO:
        return "Macro";
    case SP__LOOP:
        return "LoopContext";
    default:
        return "builtin_function_or_method";
    }
}

const char *sp__owner_name(sp__val v) {
    switch (v.t) {
    case SP__NONE:
        return "None";
    case SP__UNDEF:
        return "jinja2.runtime.Undefined object";
    case SP__BOOL:
        return "bool object";
    case SP__INT:
        return "int object";
    case SP__FLOAT:
        return "float object";
    case SP__STR:
        return "str object";
    case SP__LIST: {
        static const char *const kinds[] = {"list object", "tuple object", "generator object",
                                            "range object", "dict_items object",
                                            "dict_keys object", "dict_values object"};
        return v.flag < SP_ARRAY_LEN(kinds) ? kinds[v.flag] : "list object";
    }
    case SP__DICT:
        return "dict object";
    case SP__NS:
        return "jinja2.utils.Namespace object";
    case SP__MACRO:
        return "jinja2.runtime.Macro object";
    case SP__LOOP:
        return "jinja2.runtime.LoopContext object";
    default:
        return "builtin_function_or_method object";
    }
}

sp_err sp__undef_attr(sp__rt *r, sp__val owner, sp__val key, uint32_t off, sp__val *out) {
    sp__undef *u = sp__alloc(r, sizeof *u);
    if (!u)
        return sp__oom(r, off);
    u->kind = SP__U_ATTR;
    u->owner = sp__owner_name(owner);
    u->key = key;
    u->msg = NULL;
    *out = sp__v_undef(u);
    return SP_OK;
}

sp_err sp__undef_error(sp__rt *r, sp__val v, uint32_t off) {
    const sp__undef *u = v.t == SP__UNDEF ? v.u : NULL;
    if (!u)
        return sp__fail(r, SP_ERR_FORMAT, off, "value is undefined");
    if (u->kind == SP__U_MSG)
        return sp__fail(r, SP_ERR_FORMAT, off, "%s", u->msg);
    sp__buf b = {0};
    sp_err e = sp__repr(r, u->key, &b, off);
    if (e)
        return e;
    int kn = (int)SP_MIN(b.n, (size_t)200);
    if (u->kind == SP__U_NAME)
        return sp__fail(r, SP_ERR_FORMAT, off, "%.*s is undefined", kn, b.p);
    if (u->key.t == SP__STR)
        return sp__fail(r, SP_ERR_FORMAT, off, "'%s' has no attribute %.*s", u->owner, kn, b.p);
    return sp__fail(r, SP_ERR_FORMAT, off, "%s has no element %.*s", u->owner, kn, b.p);
}

/* ---- str() and repr() -------------------------------------------------------------------------- */

void sp__fmt_float(double d, char out[32]) {
    if (isnan(d)) {
        strcpy(out, "nan");
        return;
    }
    if (isinf(d)) {
        strcpy(out, d < 0 ? "-inf" : "inf");
        return;
    }
    if (d == 0) {
        strcpy(out, signbit(d) ? "-0.0" : "0.0");
        return;
    }
    // The shortest digit string that reads back as d, laid out as Python's repr does.
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    char digits[24];
    int nd = 0;
    const char *p = tmp;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
    }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && nd < 20)
            digits[nd++] = *p;
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    int decpt = exp10 + 1;
    char *o = out;
    if (neg)
        *o++ = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            *o++ = '0';
            *o++ = '.';
            for (int i = 0; i < -decpt; i++)
                *o++ = '0';
            for (int i = 0; i < nd; i++)
                *o++ = digits[i];
        } else if (decpt >= nd) {
            for (int i = 0; i < nd; i++)
                *o++ = digits[i];
            for (int i = nd; i < decpt; i++)
                *o++ = '0';
            *o++ = '.';
            *o++ = '0';
        } else {
            for (int i = 0; i < nd; i++) {
                if (i == decpt)
                    *o++ = '.';
                *o++ = digits[i];
            }
        }
        *o = '\0';
    } else {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            for (int i = 1; i < nd; i++)
                *o++ = digits[i];
        }
        int ex = (exp10 < 0 ? -exp10 : exp10) % 1000; // |exponent| <= 324 for doubles
        snprintf(o, 12, "e%c%02d", exp10 < 0 ? '-' : '+', ex);
    }
}

/* Code points Python's str.isprintable() rejects, approximated without Unicode tables:
 * controls, separators other than ' ', and the common format characters. */
static bool py_unprintable(uint32_t c) {
    return c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f) ||
           (c >= 0x205f && c <= 0x2064) || c == 0x3000 || c == 0xfeff ||
           (c >= 0xe000 && c <= 0xf8ff) || c == 0xfff9 || c == 0xfffa || c == 0xfffb;
}

static sp_err repr_str(sp__rt *r, const char *s, size_t n, sp__buf *b, uint32_t off) {
    bool sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char q = (sq && !dq) ? '"' : '\'';
    sp_err e = sp__buf_putc(r, b, q, off);
    if (e)
        return e;
    size_t run = 0; // start of the pending run of bytes copied as they are
    for (size_t i = 0; i < n;) {
        size_t len;
        uint32_t c = sp__utf8_dec(s + i, n - i, &len);
        char esc[12];
        int k = 0;
        if (c == '\\' || c == (uint32_t)q)
            k = snprintf(esc, sizeof esc, "\\%c", (char)c);
        else if (c == '\n')
            k = snprintf(esc, sizeof esc, "\\n");
        else if (c == '\r')
            k = snprintf(esc, sizeof esc, "\\r");
        else if (c == '\t')
            k = snprintf(esc, sizeof esc, "\\t");
        else if (py_unprintable(c))
            k = c < 0x100 ? snprintf(esc, sizeof esc, "\\x%02x", (unsigned)c)
                          : snprintf(esc, sizeof esc, "\\u%04x", (unsigned)c);
        if (k > 0) {
            if ((e = sp__buf_put(r, b, s + run, i - run, off)) ||
                (e = sp__buf_put(r, b, esc, (size_t)k, off)))
                return e;
            run = i + len;
        }
        i += len;
    }
    if ((e = sp__buf_put(r, b, s + run, n - run, off)))
        return e;
    return sp__buf_putc(r, b, q, off);
}

static sp_err fmt_value(sp__rt *r, sp__val v, sp__buf *b, bool repr, uint32_t off);

static sp_err fmt_seq(sp__rt *r, sp__val v, sp__buf *b, uint32_t off) {
    const sp__list *l = v.l;
    switch (v.flag) {
    case SP__SEQ_GEN:
        return sp__buf_put(r, b, "<generator object>", 18, off);
    case SP__SEQ_RANGE: {
        SP_ASSERT(l->range);
        int64_t start = l->range[0], stop = l->range[1], step = l->range[2];
        if (step == 1)
            return sp__buf_printf(r, b, off, "range(%" PRId64 ", %" PRId64 ")", start, stop);
        return sp__buf_printf(r, b, off, "range(%" PRId64 ", %" PRId64 ", %" PRId64 ")", start,
                              stop, step);
    }
    case SP__SEQ_ITEMS:
    case SP__SEQ_KEYS:
    case SP__SEQ_VALUES: {
        const char *name = sp__type_name(v);
        sp_err e = sp__buf_put(r, b, name, strlen(name), off);
        if (!e)
            e = sp__buf_putc(r, b, '(', off);
        if (!e)
            e = fmt_seq(r, sp__v_list(v.l, false), b, off);
        if (!e)
            e = sp__buf_putc(r, b, ')', off);
        return e;
    }
    default:
        break;
    }
    bool tuple = v.flag == SP__SEQ_TUPLE;
    sp_err e = sp__buf_putc(r, b, tuple ? '(' : '[', off);
    for (uint32_t i = 0; !e && i < v.l->n; i++) {
        if (i)
            e = sp__buf_put(r, b, ", ", 2, off);
        if (!e)
            e = fmt_value(r, v.l->v[i], b, true, off);
    }
    if (!e && tuple && v.l->n == 1)
        e = sp__buf_putc(r, b, ',', off);
    if (!e)
        e = sp__buf_putc(r, b, tuple ? ')' : ']', off);
    return e;
}

static sp_err fmt_dict(sp__rt *r, const sp__dict *d, sp__buf *b, uint32_t off) {
    sp_err e = sp__buf_putc(r, b, '{', off);
    for (uint32_t i = 0; !e && i < d->n; i++) {
        if (i)
            e = sp__buf_put(r, b, ", ", 2, off);
        if (!e)
            e = fmt_value(r, d->k[i], b, true, off);
        if (!e)
            e = sp__buf_put(r, b, ": ", 2, off);
        if (!e)
            e = fmt_value(r, d->v[i], b, true, off);
    }
    if (!e)
        e = sp__buf_putc(r, b, '}', off);
    return e;
}

static sp_err fmt_value(sp__rt *r, sp__val v, sp__buf *b, bool repr, uint32_t off) {
    char tmp[40];
    switch (v.t) {
    case SP__UNDEF:
        return repr ? sp__buf_put(r, b, "Undefined", 9, off) : SP_OK;
    case SP__NONE:
        return sp__buf_put(r, b, "None", 4, off);
    case SP__BOOL:
        return v.b ? sp__buf_put(r, b, "True", 4, off) : sp__buf_put(r, b, "False", 5, off);
    case SP__INT:
        return sp__buf_printf(r, b, off, "%" PRId64, v.i);
    case SP__FLOAT:
        sp__fmt_float(v.f, tmp);
        return sp__buf_put(r, b, tmp, strlen(tmp), off);
    case SP__STR:
        return repr ? repr_str(r, v.s, v.n, b, off) : sp__buf_put(r, b, v.s, v.n, off);
    default:
        break;
    }
    sp_err e = sp__enter(r, off);
    if (e)
        return e;
    switch (v.t) {
    case SP__LIST:
        e = sp__steps(r, v.l->n, off);
        if (!e)
            e = fmt_seq(r, v, b, off);
        break;
    case SP__DICT:
        e = sp__steps(r, v.d->n, off);
        if (!e)
            e = fmt_dict(r, v.d, b, off);
        break;
    case SP__NS:
        e = sp__buf_put(r, b, "<Namespace ", 11, off);
        if (!e)
            e = fmt_dict(r, v.d, b, off);
        if (!e)
            e = sp__buf_putc(r, b, '>', off);
        break;
    case SP__MACRO: {
        const sp__node *def = v.m->def;
        e = sp__buf_put(r, b, "<Macro '", 8, off);
        if (!e && def->kind == SP__N_MACRO)
            e = sp__buf_put(r, b, def->lit.s, def->lit.n, off);
        else if (!e)
            e = sp__buf_put(r, b, "caller", 6, off);
        if (!e)
            e = sp__buf_put(r, b, "'>", 2, off);
        break;
    }
    case SP__LOOP:
        e = sp__buf_printf(r, b, off, "<LoopContext %u/%u>", v.loop->i + 1, v.loop->items->n);
        break;
    default:
        e = sp__buf_put(r, b, "<built-in function>", 19, off);
        break;
    }
    sp__leave(r);
    return e;
}

sp_err sp__to_str(sp__rt *r, sp__val v, sp__buf *b, uint32_t off) {
    return fmt_value(r, v, b, false, off);
}

sp_err sp__repr(sp__rt *r, sp__val v, sp__buf *b, uint32_t off) {
    return fmt_value(r, v, b, true, off);
}

sp_err sp__stringify(sp__rt *r, sp__val v, uint32_t off, sp__val *out) {
    if (v.t == SP__STR) {
        *out = v;
        return SP_OK;
    }
    if (v.t == SP__UNDEF) {
        *out = sp__v_str("", 0);
        return SP_OK;
    }
    sp__buf b = {0};
    sp_err e = sp__to_str(r, v, &b, off);
    if (e)
        return e;
    *out = sp__buf_val(&b);
    return SP_OK;
}

/* ---- equality and ordering ---------------------------------------------------------------------- */

sp_err sp__eq(sp__rt *r, sp__val a, sp__val b, uint32_t off, bool *out) {
    if (is_num(a) && is_num(b)) {
        *out = key_eq(a, b);
        return SP_OK;
    }
    if (a.t != b.t) {
        *out = false;
        return SP_OK;
    }
    switch (a.t) {
    case SP__UNDEF:
    case SP__NONE:
        *out = true;
        return SP_OK;
    case SP__STR:
        *out = key_eq(a, b);
        return SP_OK;
    case SP__LIST: {
        if (a.flag != b.flag || a.l->n != b.l->n || (a.flag == SP__SEQ_GEN && a.l != b.l)) {
            *out = false;
            return SP_OK;
        }
        if (a.l == b.l) {
            *out = true;
            return SP_OK;
        }
        sp_err e = sp__enter(r, off);
        if (!e)
            e = sp__steps(r, a.l->n, off);
        bool eq = true;
        for (uint32_t i = 0; !e && eq && i < a.l->n; i++)
            e = sp__eq(r, a.l->v[i], b.l->v[i], off, &eq);
        sp__leave(r);
        if (!e)
            *out = eq;
        return e;
    }
    case SP__DICT: {
        if (a.d->n != b.d->n) {
            *out = false;
            return SP_OK;
        }
        sp_err e = sp__enter(r, off);
        if (!e)
            e = sp__steps(r, a.d->n, off);
        bool eq = true;
        for (uint32_t i = 0; !e && eq && i < a.d->n; i++) {
            sp__val *bv = sp__dict_get(b.d, a.d->k[i]);
            if (!bv)
                eq = false;
            else
                e = sp__eq(r, a.d->v[i], *bv, off, &eq);
        }
        sp__leave(r);
        if (!e)
            *out = eq;
        return e;
    }
    case SP__NS:
        *out = a.d == b.d;
        return SP_OK;
    case SP__MACRO:
        *out = a.m == b.m;
        return SP_OK;
    case SP__LOOP:
        *out = a.loop == b.loop;
        return SP_OK;
    default:
        *out = a.aux == b.aux && a.bm == b.bm;
        return SP_OK;
    }
}

static uint32_t fold_cp(uint32_t c) {
    if (c < 0x80)
        return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if ((c >= 0xc0 && c <= 0xde && c != 0xd7) || (c >= 0x391 && c <= 0x3ab && c != 0x3a2) ||
        (c >= 0x410 && c <= 0x42f))
        return c + 32;
    if (c >= 0x400 && c <= 0x40f)
        return c + 80;
    return c;
}

static int cmp_str(const char *a, size_t an, const char *b, size_t bn, bool fold) {
    if (!fold) {
        int c = memcmp(a, b, SP_MIN(an, bn));
        if (c)
            return c < 0 ? -1 : 1;
        return an < bn ? -1 : an > bn;
    }
    size_t i = 0, j = 0;
    while (i < an && j < bn) {
        size_t la, lb;
        uint32_t ca = fold_cp(sp__utf8_dec(a + i, an - i, &la));
        uint32_t cb = fold_cp(sp__utf8_dec(b + j, bn - j, &lb));
        if (ca != cb)
            return ca < cb ? -1 : 1;
        i += la;
        j += lb;
    }
    return (i < an) - (j < bn);
}

sp_err sp__cmp(sp__rt *r, sp__val a, sp__val b, bool fold, const char *op, uint32_t off,
              int *out) {
    if (is_num(a) && is_num(b)) {
        *out = cmp_num(a, b);
        return SP_OK;
    }
    if (a.t == SP__STR && b.t == SP__STR) {
        *out = cmp_str(a.s, a.n, b.s, b.n, fold);
        return SP_OK;
    }
    if (sp__is_plain_seq(a) && sp__is_plain_seq(b) && a.flag == b.flag) {
        sp_err e = sp__enter(r, off);
        if (e)
            return e;
        uint32_t n = SP_MIN(a.l->n, b.l->n);
        int c = 0;
        for (uint32_t i = 0; !e && c == 0 && i < n; i++) {
            bool eq;
            e = sp__steps(r, 1, off);
            if (!e)
                e = sp__eq(r, a.l->v[i], b.l->v[i], off, &eq);
            if (!e && !eq)
                e = sp__cmp(r, a.l->v[i], b.l->v[i], fold, op, off, &c);
        }
        sp__leave(r);
        if (e)
            return e;
        *out = c ? c : (a.l->n < b.l->n ? -1 : a.l->n > b.l->n);
        return SP_OK;
    }
    if (a.t == SP__UNDEF)
        return sp__undef_error(r, a, off);
    if (b.t == SP__UNDEF)
        return sp__undef_error(r, b, off);
    return sp__fail(r, SP_ERR_FORMAT, off, "'%s' not supported between instances of '%s' and '%s'",
                    op, sp__type_name(a), sp__type_name(b));
}

bool sp__cmp_holds(int c, uint8_t op) {
    if (c == SP__CMP_UNORDERED)
        return false;
    switch (op) {
    case SP__OP_LT:
        return c < 0;
    case SP__OP_LE:
        return c <= 0;
    case SP__OP_GT:
        return c > 0;
    default:
        return c >= 0;
    }
}

/* ---- numbers --------------------------------------------------------------------------------- */

sp_err sp__overflow(sp__rt *r, uint32_t off) {
    return sp__fail(r, SP_ERR_FORMAT, off,
                    "integer overflow: the result does not fit in a 64-bit integer");
}

sp_err sp__float_to_int(sp__rt *r, double x, uint32_t off, int64_t *out) {
    if (isnan(x))
        return sp__fail(r, SP_ERR_FORMAT, off, "cannot convert float NaN to integer");
    if (isinf(x))
        return sp__fail(r, SP_ERR_FORMAT, off, "cannot convert float infinity to integer");
    // Python truncates toward zero into an unbounded int; ours holds the doubles in
    // [-2^63, 2^63) (no double lies strictly between -2^63 - 1 and -2^63).
    if (!(x >= -0x1p63 && x < 0x1p63)) {
        char num[32];
        sp__fmt_float(x, num);
        return sp__fail(r, SP_ERR_FORMAT, off, "int(%s) does not fit in a 64-bit integer", num);
    }
    *out = (int64_t)x;
    return SP_OK;
}

/* ---- JSON ------------------------------------------------------------------------------------- */

sp_err sp__from_json(sp__rt *r, const json_t *j, uint32_t off, sp__val *out) {
    switch (json_typeof(j)) {
    case JSON_NULL:
        *out = sp__v_none();
        return SP_OK;
    case JSON_TRUE:
        *out = sp__v_bool(true);
        return SP_OK;
    case JSON_FALSE:
        *out = sp__v_bool(false);
        return SP_OK;
    case JSON_INTEGER:
        *out = sp__v_int((int64_t)json_integer_value(j));
        return SP_OK;
    case JSON_REAL:
        *out = sp__v_float(json_real_value(j));
        return SP_OK;
    case JSON_STRING: {
        size_t n = json_string_length(j);
        if (n > UINT32_MAX)
            return sp__fail(r, SP_ERR_LIMIT, off, "string too long");
        *out = sp__v_str(json_string_value(j), (uint32_t)n);
        return SP_OK;
    }
    default:
        break;
    }
    sp_err e = sp__enter(r, off);
    if (e)
        return e;
    if (json_is_array(j)) {
        size_t n = json_array_size(j);
        sp__list *l = NULL;
        if (n > UINT32_MAX / 2)
            e = sp__fail(r, SP_ERR_LIMIT, off, "list too long");
        if (!e)
            e = sp__steps(r, n, off);
        if (!e)
            e = sp__list_new(r, (uint32_t)n, off, &l);
        for (size_t i = 0; !e && i < n; i++) {
            e = sp__from_json(r, json_array_get(j, i), off, &l->v[i]);
            l->n = (uint32_t)(i + 1);
        }
        if (!e)
            *out = sp__v_list(l, false);
    } else {
        size_t n = json_object_size(j);
        sp__dict *d = NULL;
        if (n > UINT32_MAX / 4)
            e = sp__fail(r, SP_ERR_LIMIT, off, "dict too large");
        if (!e)
            e = sp__steps(r, n, off);
        if (!e)
            e = sp__dict_new(r, (uint32_t)n, off, &d);
        // Iteration does not modify the object; jansson's iterator API is not const.
        json_t *obj = (json_t *)j;
        for (void *it = json_object_iter(obj); !e && it; it = json_object_iter_next(obj, it)) {
            const char *k = json_object_iter_key(it);
            size_t kn = json_object_iter_key_len(it);
            sp__val v;
            e = sp__from_json(r, json_object_iter_value(it), off, &v);
            if (!e && kn > UINT32_MAX)
                e = sp__fail(r, SP_ERR_LIMIT, off, "string too long");
            if (!e)
                e = sp__dict_set(r, d, sp__v_str(k, (uint32_t)kn), v, off);
        }
        if (!e)
            *out = sp__v_dict(d);
    }
    sp__leave(r);
    return e;
}

static sp_err json_str(sp__rt *r, const char *s, size_t n, bool ascii, sp__buf *b, uint32_t off) {
    sp_err e = sp__buf_putc(r, b, '"', off);
    size_t run = 0;
    for (size_t i = 0; !e && i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = 1;
        uint32_t cp = c;
        if (c >= 0x80)
            cp = sp__utf8_dec(s + i, n - i, &len);
        char esc[16];
        int k = 0;
        switch (cp) {
        case '"':
            k = snprintf(esc, sizeof esc, "\\\"");
            break;
        case '\\':
            k = snprintf(esc, sizeof esc, "\\\\");
            break;
        case '\n':
            k = snprintf(esc, sizeof esc, "\\n");
            break;
        case '\r':
            k = snprintf(esc, sizeof esc, "\\r");
            break;
        case '\t':
            k = snprintf(esc, sizeof esc, "\\t");
            break;
        case '\b':
            k = snprintf(esc, sizeof esc, "\\b");
            break;
        case '\f':
            k = snprintf(esc, sizeof esc, "\\f");
            break;
        default:
            if (cp < 0x20 || (ascii && cp >= 0x7f)) {
                if (cp >= 0x10000) {
                    uint32_t v = cp - 0x10000;
                    k = snprintf(esc, sizeof esc, "\\u%04x\\u%04x", (unsigned)(0xd800 | (v >> 10)),
                                 (unsigned)(0xdc00 | (v & 0x3ff)));
                } else {
                    k = snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp);
                }
            }
        }
        if (k > 0) {
            e = sp__buf_put(r, b, s + run, i - run, off);
            if (!e)
                e = sp__buf_put(r, b, esc, (size_t)k, off);
            run = i + len;
        }
        i += len;
    }
    if (!e)
        e = sp__buf_put(r, b, s + run, n - run, off);
    if (!e)
        e = sp__buf_putc(r, b, '"', off);
    return e;
}

static sp_err json_newline(sp__rt *r, const sp__json_opts *o, uint32_t level, sp__buf *b,
                           uint32_t off) {
    sp_err e = sp__buf_putc(r, b, '\n', off);
    for (uint32_t i = 0; !e && i < level; i++)
        e = sp__buf_put(r, b, o->indent, o->indent_n, off);
    return e;
}

static sp_err json_val(sp__rt *r, sp__val v, const sp__json_opts *o, uint32_t level, sp__buf *b,
                       uint32_t off);

static sp_err json_key(sp__rt *r, sp__val k, const sp__json_opts *o, sp__buf *b, uint32_t off) {
    char tmp[40];
    switch (k.t) {
    case SP__STR:
        return json_str(r, k.s, k.n, o->ensure_ascii, b, off);
    case SP__INT:
        return sp__buf_printf(r, b, off, "\"%" PRId64 "\"", k.i);
    case SP__BOOL:
        return sp__buf_put(r, b, k.b ? "\"true\"" : "\"false\"", k.b ? 6 : 7, off);
    case SP__NONE:
        return sp__buf_put(r, b, "\"null\"", 6, off);
    case SP__FLOAT:
        if (isnan(k.f))
            strcpy(tmp, "NaN");
        else if (isinf(k.f))
            strcpy(tmp, k.f < 0 ? "-Infinity" : "Infinity");
        else
            sp__fmt_float(k.f, tmp);
        return sp__buf_printf(r, b, off, "\"%s\"", tmp);
    default:
        return sp__fail(r, SP_ERR_FORMAT, off, "keys must be str, int, float, bool or None, not %s",
                        sp__type_name(k));
    }
}

static sp_err json_dict(sp__rt *r, const sp__dict *d, const sp__json_opts *o, uint32_t level,
                        sp__buf *b, uint32_t off) {
    if (d->n == 0)
        return sp__buf_put(r, b, "{}", 2, off);
    uint32_t *order = sp__alloc(r, (size_t)d->n * sizeof *order);
    if (!order)
        return sp__oom(r, off);
    for (uint32_t i = 0; i < d->n; i++)
        order[i] = i;
    sp_err e = SP_OK;
    if (o->sort_keys) {
        // Insertion sort keeps this simple; the step charge bounds its cost.
        e = sp__steps(r, (uint64_t)d->n * d->n / 4 + d->n, off);
        for (uint32_t i = 1; !e && i < d->n; i++) {
            uint32_t x = order[i], j = i;
            while (!e && j > 0) {
                int c;
                e = sp__cmp(r, d->k[order[j - 1]], d->k[x], false, "<", off, &c);
                if (e || c <= 0)
                    break;
                order[j] = order[j - 1];
                j--;
            }
            order[j] = x;
        }
    }
    if (!e)
        e = sp__buf_putc(r, b, '{', off);
    if (!e && o->indent)
        e = json_newline(r, o, level + 1, b, off);
    for (uint32_t i = 0; !e && i < d->n; i++) {
        if (i) {
            e = sp__buf_put(r, b, o->item_sep, o->item_sep_n, off);
            if (!e && o->indent)
                e = json_newline(r, o, level + 1, b, off);
        }
        if (!e)
            e = json_key(r, d->k[order[i]], o, b, off);
        if (!e)
            e = sp__buf_put(r, b, o->key_sep, o->key_sep_n, off);
        if (!e)
            e = json_val(r, d->v[order[i]], o, level + 1, b, off);
    }
    if (!e && o->indent)
        e = json_newline(r, o, level, b, off);
    if (!e)
        e = sp__buf_putc(r, b, '}', off);
    return e;
}

static sp_err json_val(sp__rt *r, sp__val v, const sp__json_opts *o, uint32_t level, sp__buf *b,
                       uint32_t off) {
    char tmp[40];
    switch (v.t) {
    case SP__NONE:
        return sp__buf_put(r, b, "null", 4, off);
    case SP__BOOL:
        return v.b ? sp__buf_put(r, b, "true", 4, off) : sp__buf_put(r, b, "false", 5, off);
    case SP__INT:
        return sp__buf_printf(r, b, off, "%" PRId64, v.i);
    case SP__FLOAT:
        if (isnan(v.f))
            return sp__buf_put(r, b, "NaN", 3, off);
        if (isinf(v.f))
            return v.f < 0 ? sp__buf_put(r, b, "-Infinity", 9, off)
                           : sp__buf_put(r, b, "Infinity", 8, off);
        sp__fmt_float(v.f, tmp);
        return sp__buf_put(r, b, tmp, strlen(tmp), off);
    case SP__STR:
        return json_str(r, v.s, v.n, o->ensure_ascii, b, off);
    case SP__LIST:
        if (!sp__is_plain_seq(v))
            return sp__fail(r, SP_ERR_FORMAT, off, "Object of type %s is not JSON serializable",
                            sp__type_name(v));
        break;
    case SP__DICT:
        break;
    default:
        return sp__fail(r, SP_ERR_FORMAT, off, "Object of type %s is not JSON serializable",
                        sp__type_name(v));
    }
    sp_err e = sp__enter(r, off);
    if (e)
        return e;
    if (v.t == SP__DICT) {
        e = sp__steps(r, v.d->n, off);
        if (!e)
            e = json_dict(r, v.d, o, level, b, off);
    } else if (v.l->n == 0) {
        e = sp__buf_put(r, b, "[]", 2, off);
    } else {
        e = sp__steps(r, v.l->n, off);
        if (!e)
            e = sp__buf_putc(r, b, '[', off);
        if (!e && o->indent)
            e = json_newline(r, o, level + 1, b, off);
        for (uint32_t i = 0; !e && i < v.l->n; i++) {
            if (i) {
                e = sp__buf_put(r, b, o->item_sep, o->item_sep_n, off);
                if (!e && o->indent)
                    e = json_newline(r, o, level + 1, b, off);
            }
            if (!e)
                e = json_val(r, v.l->v[i], o, level + 1, b, off);
        }
        if (!e && o->indent)
            e = json_newline(r, o, level, b, off);
        if (!e)
            e = sp__buf_putc(r, b, ']', off);
    }
    sp__leave(r);
    return e;
}

sp_err sp__to_json(sp__rt *r, sp__val v, const sp__json_opts *o, sp__buf *b, uint32_t off) {
    return json_val(r, v, o, 0, b, off);
}
