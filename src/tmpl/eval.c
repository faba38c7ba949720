/* The tree-walking interpreter: expressions, statements, scopes, macro calls.
 *
 * Scoping follows Jinja2: the context and top-level `set`s share the root scope; each loop
 * iteration, macro call and `with` block gets a fresh scope whose parent is where it was
 * written (a macro sees the scope it was defined in, live, not its caller's); `set` always
 * writes the innermost scope, so a `set` inside a loop does not survive the iteration, which
 * is why templates use namespace(). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/util.h"
#include "tmpl/tmpl_int.h"

static sp_err ev(sp__rt *r, const sp__node *n, sp__scope *s, sp__val *out);
static sp_err ex(sp__rt *r, const sp__node *n, sp__scope *s);

/* ---- scopes ---------------------------------------------------------------------------- */

static sp_err scope_new(sp__rt *r, sp__scope *parent, uint32_t off, sp__scope **out) {
    sp__scope *s = sp__alloc(r, sizeof *s);
    if (!s)
        return sp__oom(r, off);
    memset(s, 0, sizeof *s);
    s->parent = parent;
    *out = s;
    return SP_OK;
}

static sp__val *scope_find(sp__scope *s, uint32_t sym) {
    for (; s; s = s->parent)
        for (uint32_t i = 0; i < s->n; i++)
            if (s->sym[i] == sym)
                return &s->v[i];
    return NULL;
}

static sp_err scope_set(sp__rt *r, sp__scope *s, uint32_t sym, sp__val v, uint32_t off) {
    for (uint32_t i = 0; i < s->n; i++) {
        if (s->sym[i] == sym) {
            s->v[i] = v;
            return SP_OK;
        }
    }
    if (s->n == s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : 4;
        if (cap > UINT32_MAX / 32)
            return sp__fail(r, SP_ERR_LIMIT, off, "too many variables");
        uint32_t *ns = sp__arena_grow(&r->arena, s->sym, (size_t)s->cap * sizeof *ns,
                                      (size_t)cap * sizeof *ns);
        if (!ns)
            return sp__oom(r, off);
        s->sym = ns;
        sp__val *nv = sp__arena_grow(&r->arena, s->v, (size_t)s->cap * sizeof *nv,
                                     (size_t)cap * sizeof *nv);
        if (!nv)
            return sp__oom(r, off);
        s->v = nv;
        s->cap = cap;
    }
    s->sym[s->n] = sym;
    s->v[s->n] = v;
    s->n++;
    return SP_OK;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static bool is_num(sp__val v) { return v.t == SP__INT || v.t == SP__BOOL || v.t == SP__FLOAT; }
static bool is_int(sp__val v) { return v.t == SP__INT || v.t == SP__BOOL; }
static int64_t as_int(sp__val v) { return v.t == SP__BOOL ? (int64_t)v.b : v.i; }
static double as_f(sp__val v) { return v.t == SP__FLOAT ? v.f : (double)as_int(v); }

static sp_err type_error(sp__rt *r, uint32_t off, const char *op, sp__val a, sp__val b) {
    return sp__fail(r, SP_ERR_FORMAT, off, "unsupported operand type(s) for %s: '%s' and '%s'", op,
                    sp__type_name(a), sp__type_name(b));
}

sp_err sp__iterate(sp__rt *r, sp__val v, uint32_t off, sp__list **out) {
    sp__list *l;
    sp_err e;
    switch (v.t) {
    case SP__LIST:
        *out = v.l;
        return SP_OK;
    case SP__UNDEF:
        return sp__list_new(r, 0, off, out);
    case SP__DICT:
        if ((e = sp__list_new(r, v.d->n, off, &l)))
            return e;
        if (v.d->n)
            memcpy(l->v, v.d->k, (size_t)v.d->n * sizeof *l->v);
        l->n = v.d->n;
        *out = l;
        return SP_OK;
    case SP__STR: {
        size_t n = sp__utf8_count(v.s, v.n);
        if ((e = sp__steps(r, n, off)) || (e = sp__list_new(r, (uint32_t)n, off, &l)))
            return e;
        for (size_t i = 0; i < v.n;) {
            size_t len;
            sp__utf8_dec(v.s + i, v.n - i, &len);
            l->v[l->n++] = sp__v_str(v.s + i, (uint32_t)len);
            i += len;
        }
        *out = l;
        return SP_OK;
    }
    default:
        return sp__fail(r, SP_ERR_FORMAT, off, "'%s' object is not iterable", sp__type_name(v));
    }
}

/* Python's slice.indices(): normalizes [start:stop:step] for a sequence of length len. */
static sp_err slice_indices(sp__rt *r, int64_t len, const sp__val *b, uint32_t off, int64_t *start,
                            int64_t *stop, int64_t *step, int64_t *count) {
    for (int k = 0; k < 3; k++)
        if (b[k].t != SP__NONE && !is_int(b[k]))
            return sp__fail(r, SP_ERR_FORMAT, off,
                            "slice indices must be integers or None or have an __index__ method");
    int64_t st = b[2].t == SP__NONE ? 1 : as_int(b[2]);
    if (st == 0)
        return sp__fail(r, SP_ERR_FORMAT, off, "slice step cannot be zero");
    if (st == INT64_MIN)
        st = -INT64_MAX;
    int64_t lo = 0, hi = 0; // set in the loop; initialized for -Wmaybe-uninitialized at -O1
    for (int k = 0; k < 2; k++) {
        int64_t x;
        if (b[k].t == SP__NONE) {
            x = k == 0 ? (st < 0 ? len - 1 : 0) : (st < 0 ? -1 : len);
        } else {
            x = as_int(b[k]);
            if (x < 0) {
                x = x < -len ? (st < 0 ? -1 : 0) : x + len;
            } else if (x >= len) {
                x = st < 0 ? len - 1 : len;
            }
        }
        if (k == 0)
            lo = x;
        else
            hi = x;
    }
    int64_t n = 0;
    if (st > 0 && lo < hi)
        n = (hi - lo - 1) / st + 1;
    else if (st < 0 && hi < lo)
        n = (lo - hi - 1) / (-st) + 1;
    *start = lo;
    *stop = hi;
    *step = st;
    *count = n;
    return SP_OK;
}

/* The arguments of range r[b[0]:b[1]:b[2]] as Python computes them (start + i * step for the
 * slice's start and stop indices i, step times the slice's step), which need not be those of
 * any range() call: range(0, 10, 3)[1:] is range(3, 12, 3). */
static sp_err slice_range(sp__rt *r, const int64_t *rg, const sp__val *b, int64_t start,
                          int64_t stop, uint32_t off, int64_t **out) {
    int64_t *res = sp__alloc(r, 3 * sizeof *res);
    if (!res)
        return sp__oom(r, off);
    int64_t step = b[2].t == SP__NONE ? 1 : as_int(b[2]), t0, t1;
    if (__builtin_mul_overflow(start, rg[2], &t0) || __builtin_add_overflow(rg[0], t0, &res[0]) ||
        __builtin_mul_overflow(stop, rg[2], &t1) || __builtin_add_overflow(rg[0], t1, &res[1]) ||
        __builtin_mul_overflow(rg[2], step, &res[2]))
        return sp__overflow(r, off);
    *out = res;
    return SP_OK;
}

static sp_err do_slice(sp__rt *r, sp__val obj, const sp__val *b, uint32_t off, sp__val *out) {
    int64_t start, stop, step, count;
    sp_err e;
    if (obj.t == SP__LIST && (sp__is_plain_seq(obj) || obj.flag == SP__SEQ_RANGE)) {
        if ((e = slice_indices(r, obj.l->n, b, off, &start, &stop, &step, &count)))
            return e;
        sp__list *l;
        if ((e = sp__steps(r, (uint64_t)count, off)) || (e = sp__list_new(r, (uint32_t)count, off, &l)))
            return e;
        if (obj.flag == SP__SEQ_RANGE &&
            (e = slice_range(r, obj.l->range, b, start, stop, off, &l->range)))
            return e;
        for (int64_t i = 0; i < count; i++)
            l->v[l->n++] = obj.l->v[start + i * step];
        *out = sp__v_seq(l, obj.flag);
        return SP_OK;
    }
    if (obj.t == SP__STR) {
        size_t n = sp__utf8_count(obj.s, obj.n);
        if ((e = slice_indices(r, (int64_t)n, b, off, &start, &stop, &step, &count)))
            return e;
        if (n == obj.n && step == 1) { // ASCII: a view
            *out = sp__v_str(obj.s + start, (uint32_t)count);
            return SP_OK;
        }
        // Byte offset of every code point, then pick.
        uint32_t *at = sp__alloc(r, (n + 1) * sizeof *at);
        if (!at)
            return sp__oom(r, off);
        if ((e = sp__steps(r, n, off)))
            return e;
        size_t k = 0;
        for (size_t i = 0; i < obj.n;) {
            size_t len;
            sp__utf8_dec(obj.s + i, obj.n - i, &len);
            at[k++] = (uint32_t)i;
            i += len;
        }
        at[n] = obj.n;
        if (step == 1) {
            *out = sp__v_str(obj.s + at[start], at[start + count] - at[start]);
            return SP_OK;
        }
        sp__buf buf = {0};
        for (int64_t i = 0; i < count; i++) {
            int64_t c = start + i * step;
            if ((e = sp__buf_put(r, &buf, obj.s + at[c], at[c + 1] - at[c], off)))
                return e;
        }
        *out = sp__buf_val(&buf);
        return SP_OK;
    }
    if (obj.t == SP__UNDEF)
        return sp__undef_error(r, obj, off);
    // Not sliceable: Jinja turns the TypeError into an undefined value.
    sp__undef *u = sp__alloc(r, sizeof *u);
    char *msg = sp__alloc(r, 96);
    if (!u || !msg)
        return sp__oom(r, off);
    snprintf(msg, 96, "%s has no element slice", sp__owner_name(obj));
    u->kind = SP__U_MSG;
    u->msg = msg;
    *out = sp__v_undef(u);
    return SP_OK;
}

static sp_err bind_method(sp__rt *r, sp__val self, int id, uint32_t off, sp__val *out) {
    sp__bound *b = sp__alloc(r, sizeof *b);
    if (!b)
        return sp__oom(r, off);
    b->self = self;
    sp__val v = {.t = SP__METHOD, .aux = (uint16_t)id};
    v.bm = b;
    *out = v;
    return SP_OK;
}

static sp_err unsafe(sp__rt *r, sp__val obj, sp__val name, uint32_t off, sp__val *out) {
    sp__undef *u = sp__alloc(r, sizeof *u);
    char *msg = sp__alloc(r, 160);
    if (!u || !msg)
        return sp__oom(r, off);
    snprintf(msg, 160, "access to attribute '%.*s' of '%s' object is unsafe.",
             (int)SP_MIN(name.n, 64u), name.s, sp__type_name(obj));
    u->kind = SP__U_MSG;
    u->msg = msg;
    *out = sp__v_undef(u);
    return SP_OK;
}

sp_err sp__getattr(sp__rt *r, sp__val obj, sp__val name, uint32_t off, sp__val *out) {
    if (obj.t == SP__UNDEF)
        return sp__undef_error(r, obj, off);
    if (sp__unsafe_method(obj, name.s, name.n))
        return unsafe(r, obj, name, off, out);
    int id = sp__method_id(obj, name.s, name.n);
    if (id)
        return bind_method(r, obj, id, off, out);
    if (obj.t == SP__DICT || obj.t == SP__NS) {
        sp__val *v = sp__dict_get(obj.d, name);
        if (v) {
            *out = *v;
            return SP_OK;
        }
    } else if (obj.t == SP__LOOP) {
        if (sp__loop_attr(obj.loop, name.s, name.n, out))
            return SP_OK;
    }
    return sp__undef_attr(r, obj, name, off, out);
}

sp_err sp__getitem(sp__rt *r, sp__val obj, sp__val key, uint32_t off, sp__val *out) {
    switch (obj.t) {
    case SP__UNDEF:
        return sp__undef_error(r, obj, off);
    case SP__DICT:
        if (sp__hashable(key)) {
            sp__val *v = sp__dict_get(obj.d, key);
            if (v) {
                *out = *v;
                return SP_OK;
            }
        }
        break;
    case SP__LIST:
    case SP__STR:
        if (is_int(key) && (obj.t == SP__STR || sp__is_plain_seq(obj) || obj.flag == SP__SEQ_RANGE)) {
            int64_t i = as_int(key);
            if (obj.t == SP__LIST) {
                int64_t n = obj.l->n;
                if (i < 0)
                    i += n;
                if (i >= 0 && i < n) {
                    *out = obj.l->v[i];
                    return SP_OK;
                }
            } else {
                size_t n = sp__utf8_count(obj.s, obj.n);
                if (i < 0)
                    i += (int64_t)n;
                if (i >= 0 && (size_t)i < n) {
                    if (n == obj.n) {
                        *out = sp__v_str(obj.s + i, 1);
                        return SP_OK;
                    }
                    size_t p = 0, len = 0;
                    for (int64_t k = 0; k <= i; k++) {
                        p += len;
                        sp__utf8_dec(obj.s + p, obj.n - p, &len);
                    }
                    *out = sp__v_str(obj.s + p, (uint32_t)len);
                    return SP_OK;
                }
            }
        }
        break;
    default:
        break;
    }
    // Jinja falls back to the attribute of that name.
    if (key.t == SP__STR)
        return sp__getattr(r, obj, key, off, out);
    return sp__undef_attr(r, obj, key, off, out);
}

static sp_err contains(sp__rt *r, sp__val hay, sp__val x, uint32_t off, bool *out) {
    switch (hay.t) {
    case SP__STR:
        if (x.t == SP__UNDEF)
            return sp__undef_error(r, x, off);
        if (x.t != SP__STR)
            return sp__fail(r, SP_ERR_FORMAT, off,
                            "'in <string>' requires string as left operand, not %s",
                            sp__type_name(x));
        {
            sp_err e = sp__steps(r, (hay.n + x.n) / 64, off);
            if (e)
                return e;
        }
        *out = x.n == 0 || (hay.n >= x.n && memmem(hay.s, hay.n, x.s, x.n) != NULL);
        return SP_OK;
    case SP__LIST:
        *out = false;
        for (uint32_t i = 0; i < hay.l->n; i++) {
            bool eq;
            sp_err e = sp__steps(r, 1, off);
            if (!e)
                e = sp__eq(r, hay.l->v[i], x, off, &eq);
            if (e)
                return e;
            if (eq) {
                *out = true;
                break;
            }
        }
        return SP_OK;
    case SP__DICT:
    case SP__NS:
        if (!sp__hashable(x)) {
            if (x.t == SP__UNDEF) {
                *out = false;
                return SP_OK;
            }
            return sp__fail(r, SP_ERR_FORMAT, off, "unhashable type: '%s'", sp__type_name(x));
        }
        *out = sp__dict_get(hay.d, x) != NULL;
        return SP_OK;
    case SP__UNDEF:
        *out = false;
        return SP_OK;
    default:
        return sp__fail(r, SP_ERR_FORMAT, off, "argument of type '%s' is not iterable",
                        sp__type_name(hay));
    }
}

static sp_err concat_str(sp__rt *r, sp__val a, sp__val b, uint32_t off, sp__val *out) {
    if (a.n == 0) {
        *out = b;
        return SP_OK;
    }
    if (b.n == 0) {
        *out = a;
        return SP_OK;
    }
    size_t n = (size_t)a.n + b.n;
    if (n > r->max_out)
        return sp__fail(r, SP_ERR_LIMIT, off, "template output exceeds its limit (%zu bytes)",
                        r->max_out);
    sp_err e = sp__steps(r, n / 64, off);
    if (e)
        return e;
    char *p = sp__alloc(r, n);
    if (!p)
        return sp__oom(r, off);
    memcpy(p, a.s, a.n);
    memcpy(p + a.n, b.s, b.n);
    *out = sp__v_str(p, (uint32_t)n);
    return SP_OK;
}

static sp_err concat_list(sp__rt *r, sp__val a, sp__val b, uint32_t off, sp__val *out) {
    uint64_t n = (uint64_t)a.l->n + b.l->n;
    sp__list *l;
    sp_err e;
    if (n > UINT32_MAX / 2)
        return sp__fail(r, SP_ERR_LIMIT, off, "list too long");
    if ((e = sp__steps(r, n, off)) || (e = sp__list_new(r, (uint32_t)n, off, &l)))
        return e;
    if (a.l->n)
        memcpy(l->v, a.l->v, (size_t)a.l->n * sizeof *l->v);
    if (b.l->n)
        memcpy(l->v + a.l->n, b.l->v, (size_t)b.l->n * sizeof *l->v);
    l->n = (uint32_t)n;
    *out = sp__v_seq(l, a.flag);
    return SP_OK;
}

static sp_err repeat(sp__rt *r, sp__val seq, int64_t times, uint32_t off, sp__val *out) {
    if (times < 0)
        times = 0;
    sp_err e;
    if (seq.t == SP__STR) {
        uint64_t n = (uint64_t)seq.n * (uint64_t)times;
        if (times && n / (uint64_t)times != seq.n)
            n = UINT64_MAX;
        if (n > r->max_out)
            return sp__fail(r, SP_ERR_LIMIT, off, "template output exceeds its limit (%zu bytes)",
                            r->max_out);
        if ((e = sp__steps(r, n / 64, off)))
            return e;
        char *p = sp__alloc(r, (size_t)n);
        if (!p)
            return sp__oom(r, off);
        // The empty string repeated any number of times is itself: no loop over `times`.
        for (int64_t i = 0; seq.n && i < times; i++)
            memcpy(p + (size_t)i * seq.n, seq.s, seq.n);
        *out = sp__v_str(p, (uint32_t)n);
        return SP_OK;
    }
    uint64_t n = (uint64_t)seq.l->n * (uint64_t)times;
    if ((times && n / (uint64_t)times != seq.l->n) || n > UINT32_MAX / 2)
        return sp__fail(r, SP_ERR_LIMIT, off, "list too long");
    sp__list *l;
    if ((e = sp__steps(r, n, off)) || (e = sp__list_new(r, (uint32_t)n, off, &l)))
        return e;
    for (int64_t i = 0; seq.l->n && i < times; i++)
        memcpy(l->v + (size_t)i * seq.l->n, seq.l->v, (size_t)seq.l->n * sizeof *l->v);
    l->n = (uint32_t)n;
    *out = sp__v_seq(l, seq.flag);
    return SP_OK;
}

static sp_err ipow(sp__rt *r, int64_t base, int64_t exp, uint32_t off, int64_t *out) {
    int64_t acc = 1;
    while (exp > 0) {
        if ((exp & 1) && __builtin_mul_overflow(acc, base, &acc))
            return sp__overflow(r, off);
        exp >>= 1;
        if (exp && __builtin_mul_overflow(base, base, &base))
            return sp__overflow(r, off);
    }
    *out = acc;
    return SP_OK;
}

/* Python's float pow: 0.0 to a negative power and a finite result too large for a double
 * raise; a negative base to a fractional power would be a complex number, which templates do
 * not have. */
static sp_err fpow(sp__rt *r, double x, double y, uint32_t off, double *out) {
    if (x == 0 && y < 0)
        return sp__fail(r, SP_ERR_FORMAT, off, "0.0 cannot be raised to a negative power");
    if (x < 0 && isfinite(x) && isfinite(y) && y != floor(y))
        return sp__fail(r, SP_ERR_FORMAT, off,
                        "a negative number to a fractional power is a complex number, which "
                        "templates do not support");
    double z = pow(x, y);
    if (isinf(z) && isfinite(x) && isfinite(y))
        return sp__fail(r, SP_ERR_FORMAT, off, "(34, 'Numerical result out of range')");
    *out = z;
    return SP_OK;
}

/* Python's float divmod() (floatobject.c): the floor quotient computed from fmod so that it
 * agrees with the remainder; floor(x / y) does not (1 // 0.1 is 9.0, floor(1 / 0.1) is 10). */
static double float_floordiv(double x, double y) {
    double mod = fmod(x, y);
    double div = (x - mod) / y;
    if (mod != 0 && (y < 0) != (mod < 0))
        div -= 1.0;
    if (div == 0)
        return copysign(0.0, x / y);
    double floordiv = floor(div);
    if (div - floordiv > 0.5)
        floordiv += 1.0;
    return floordiv;
}

static sp_err binop(sp__rt *r, uint8_t op, sp__val a, sp__val b, uint32_t off, sp__val *out) {
    sp_err e;
    if (op == SP__OP_CONCAT) {
        sp__val x, y;
        if ((e = sp__stringify(r, a, off, &x)) || (e = sp__stringify(r, b, off, &y)))
            return e;
        return concat_str(r, x, y, off, out);
    }
    if (a.t == SP__UNDEF)
        return sp__undef_error(r, a, off);
    // str % Undefined formats it ('%s' gives ""); every other operation on it raises.
    if (b.t == SP__UNDEF && !(op == SP__OP_MOD && a.t == SP__STR))
        return sp__undef_error(r, b, off);
    static const char *const names[] = {[SP__OP_ADD] = "+", [SP__OP_SUB] = "-", [SP__OP_MUL] = "*",
                                        [SP__OP_DIV] = "/", [SP__OP_FLOORDIV] = "//",
                                        [SP__OP_MOD] = "%", [SP__OP_POW] = "** or pow()"};
    if (is_num(a) && is_num(b)) {
        bool ints = is_int(a) && is_int(b);
        int64_t x = as_int(a), y = as_int(b), z = 0;
        double fx = as_f(a), fy = as_f(b);
        switch (op) {
        case SP__OP_ADD:
            if (!ints) {
                *out = sp__v_float(fx + fy);
            } else {
                if (__builtin_add_overflow(x, y, &z))
                    return sp__overflow(r, off);
                *out = sp__v_int(z);
            }
            return SP_OK;
        case SP__OP_SUB:
            if (!ints) {
                *out = sp__v_float(fx - fy);
            } else {
                if (__builtin_sub_overflow(x, y, &z))
                    return sp__overflow(r, off);
                *out = sp__v_int(z);
            }
            return SP_OK;
        case SP__OP_MUL:
            if (!ints) {
                *out = sp__v_float(fx * fy);
            } else {
                if (__builtin_mul_overflow(x, y, &z))
                    return sp__overflow(r, off);
                *out = sp__v_int(z);
            }
            return SP_OK;
        case SP__OP_DIV:
            if (fy == 0)
                return sp__fail(r, SP_ERR_FORMAT, off, "%sdivision by zero", ints ? "" : "float ");
            *out = sp__v_float(fx / fy);
            return SP_OK;
        case SP__OP_FLOORDIV:
        case SP__OP_MOD:
            if (ints) {
                if (y == 0)
                    return sp__fail(r, SP_ERR_FORMAT, off, "%s by zero",
                                    op == SP__OP_MOD ? "integer modulo"
                                                     : "integer division or modulo");
                if (x == INT64_MIN && y == -1) {
                    if (op == SP__OP_MOD) {
                        *out = sp__v_int(0);
                        return SP_OK;
                    }
                    return sp__overflow(r, off);
                }
                int64_t q = x / y, m = x % y;
                if (m != 0 && ((m < 0) != (y < 0))) {
                    q -= 1;
                    m += y;
                }
                *out = sp__v_int(op == SP__OP_MOD ? m : q);
                return SP_OK;
            }
            if (fy == 0)
                return sp__fail(r, SP_ERR_FORMAT, off, "%s",
                                op == SP__OP_MOD ? "float modulo" : "float floor division by zero");
            if (op == SP__OP_MOD) {
                double m = fmod(fx, fy);
                if (m != 0 && ((m < 0) != (fy < 0)))
                    m += fy;
                else if (m == 0)
                    m = copysign(0.0, fy);
                *out = sp__v_float(m);
            } else {
                *out = sp__v_float(float_floordiv(fx, fy));
            }
            return SP_OK;
        case SP__OP_POW:
            if (ints && y >= 0) {
                if ((e = ipow(r, x, y, off, &z)))
                    return e;
                *out = sp__v_int(z);
                return SP_OK;
            }
            double fz = 0;
            if ((e = fpow(r, fx, fy, off, &fz)))
                return e;
            *out = sp__v_float(fz);
            return SP_OK;
        default:
            break;
        }
    }
    switch (op) {
    case SP__OP_ADD:
        if (a.t == SP__STR && b.t == SP__STR)
            return concat_str(r, a, b, off, out);
        if (sp__is_plain_seq(a) && sp__is_plain_seq(b) && a.flag == b.flag)
            return concat_list(r, a, b, off, out);
        if (a.t == SP__STR || sp__is_plain_seq(a))
            return sp__fail(r, SP_ERR_FORMAT, off, "can only concatenate %s (not \"%s\") to %s",
                            sp__type_name(a), sp__type_name(b), sp__type_name(a));
        break;
    case SP__OP_MUL:
        if ((a.t == SP__STR || sp__is_plain_seq(a)) && is_int(b))
            return repeat(r, a, as_int(b), off, out);
        if ((b.t == SP__STR || sp__is_plain_seq(b)) && is_int(a))
            return repeat(r, b, as_int(a), off, out);
        if (a.t == SP__STR || sp__is_plain_seq(a) || b.t == SP__STR || sp__is_plain_seq(b)) {
            bool seq_a = a.t == SP__STR || sp__is_plain_seq(a);
            return sp__fail(r, SP_ERR_FORMAT, off, "can't multiply sequence by non-int of type '%s'",
                            sp__type_name(seq_a ? b : a));
        }
        break;
    case SP__OP_MOD:
        if (a.t == SP__STR) {
            // printf-style formatting: the `format` filter's work.
            sp__args args = {0};
            if (sp__is_tuple(b)) {
                args.n_pos = b.l->n;
                args.pos = b.l->v;
            } else {
                args.n_pos = 1;
                args.pos = &b;
            }
            return sp__filter(r, sp__filter_id("format", 6), NULL, a, &args, off, out);
        }
        break;
    default:
        break;
    }
    return type_error(r, off, names[op], a, b);
}

/* ---- calls ------------------------------------------------------------------------------- */

static sp_err eval_args(sp__rt *r, const sp__args_node *an, sp__scope *s, uint32_t off,
                        sp__args *out) {
    memset(out, 0, sizeof *out);
    if (!an)
        return SP_OK;
    sp_err e;
    out->n_pos = an->n_pos;
    out->n_kw = an->n_kw;
    out->kw_name = an->kw_name;
    if (an->n_pos) {
        out->pos = sp__alloc(r, (size_t)an->n_pos * sizeof *out->pos);
        if (!out->pos)
            return sp__oom(r, off);
        for (uint32_t i = 0; i < an->n_pos; i++)
            if ((e = ev(r, an->pos[i], s, &out->pos[i])))
                return e;
    }
    if (an->n_kw) {
        out->kw = sp__alloc(r, (size_t)an->n_kw * sizeof *out->kw);
        if (!out->kw)
            return sp__oom(r, off);
        for (uint32_t i = 0; i < an->n_kw; i++)
            if ((e = ev(r, an->kw[i], s, &out->kw[i])))
                return e;
    }
    return SP_OK;
}

static sp_err capture(sp__rt *r, const sp__node *body, sp__scope *s, sp__val *out) {
    sp__buf b = {0};
    sp__buf *saved = r->out;
    r->out = &b;
    sp_err e = ex(r, body, s);
    r->out = saved;
    if (!e)
        *out = sp__buf_val(&b);
    return e;
}

static const char *macro_name(const sp__macro *m, int *n) {
    if (m->def->kind == SP__N_MACRO) {
        *n = (int)SP_MIN(m->def->lit.n, 64u);
        return m->def->lit.s;
    }
    *n = 6;
    return "caller";
}

static sp_err call_macro(sp__rt *r, const sp__macro *m, const sp__args *a, sp__val caller,
                         uint32_t off, sp__val *out) {
    const sp__node *def = m->def;
    const sp__args_node *params = def->args;
    const sp_tmpl *t = r->t;
    int nn;
    const char *name = macro_name(m, &nn);
    sp__scope *ms = NULL;
    sp_err e = scope_new(r, m->closure, off, &ms);
    if (e)
        return e;
    uint32_t np = params->n_pos;
    if (a->n_pos > np && !(def->flags & SP__USES_VARARGS))
        return sp__fail(r, SP_ERR_FORMAT, off, "macro '%.*s' takes not more than %u argument(s)", nn,
                        name, np);
    bool *bound = sp__alloc(r, np + 1);
    if (!bound)
        return sp__oom(r, off);
    memset(bound, 0, np + 1);
    for (uint32_t i = 0; i < np && i < a->n_pos; i++) {
        if ((e = scope_set(r, ms, params->pos[i]->sym, a->pos[i], off)))
            return e;
        bound[i] = true;
    }
    sp__dict *kwargs = NULL;
    if ((e = sp__dict_new(r, 0, off, &kwargs)))
        return e;
    for (uint32_t k = 0; k < a->n_kw; k++) {
        const sp__val *kn = &a->kw_name[k];
        uint32_t i = 0;
        while (i < np && !(params->pos[i]->lit.n == kn->n && memcmp(params->pos[i]->lit.s, kn->s, kn->n) == 0))
            i++;
        if (i < np) {
            if (bound[i])
                return sp__fail(r, SP_ERR_FORMAT, off,
                                "macro '%.*s' got multiple values for argument '%.*s'", nn, name,
                                (int)SP_MIN(kn->n, 64u), kn->s);
            if ((e = scope_set(r, ms, params->pos[i]->sym, a->kw[k], off)))
                return e;
            bound[i] = true;
        } else if (def->flags & SP__USES_KWARGS) {
            if ((e = sp__dict_set(r, kwargs, *kn, a->kw[k], off)))
                return e;
        } else {
            return sp__fail(r, SP_ERR_FORMAT, off, "macro '%.*s' takes no keyword argument '%.*s'", nn,
                            name, (int)SP_MIN(kn->n, 64u), kn->s);
        }
    }
    for (uint32_t i = 0; i < np; i++) {
        if (bound[i])
            continue;
        sp__val v;
        if (params->kw[i]) {
            if ((e = ev(r, params->kw[i], ms, &v)))
                return e;
        } else {
            sp__undef *u = sp__alloc(r, sizeof *u);
            char *msg = sp__alloc(r, 100);
            if (!u || !msg)
                return sp__oom(r, off);
            snprintf(msg, 100, "parameter '%.*s' was not provided", (int)SP_MIN(params->pos[i]->lit.n, 64u),
                     params->pos[i]->lit.s);
            u->kind = SP__U_MSG;
            u->msg = msg;
            v = sp__v_undef(u);
        }
        if ((e = scope_set(r, ms, params->pos[i]->sym, v, off)))
            return e;
    }
    if (def->flags & SP__USES_VARARGS) {
        sp__list *l;
        uint32_t extra = a->n_pos > np ? a->n_pos - np : 0;
        if ((e = sp__list_new(r, extra, off, &l)))
            return e;
        for (uint32_t i = 0; i < extra; i++)
            l->v[l->n++] = a->pos[np + i];
        if ((e = scope_set(r, ms, t->sym_varargs, sp__v_list(l, true), off)))
            return e;
    }
    if ((def->flags & SP__USES_KWARGS) && (e = scope_set(r, ms, t->sym_kwargs, sp__v_dict(kwargs), off)))
        return e;
    if (caller.t != SP__UNDEF && (e = scope_set(r, ms, t->sym_caller, caller, off)))
        return e;
    int ctl = r->ctl;
    e = capture(r, def->body, ms, out);
    r->ctl = ctl;
    return e;
}

sp_err sp__call(sp__rt *r, sp__val f, const sp__args *a, uint32_t off, sp__val *out) {
    switch (f.t) {
    case SP__MACRO:
        return call_macro(r, f.m, a, sp__v_undef(NULL), off, out);
    case SP__FUNC:
        return sp__call_global(r, f.aux, a, off, out);
    case SP__METHOD:
        return sp__call_method(r, f.aux, f.bm->self, a, off, out);
    case SP__UNDEF:
        return sp__undef_error(r, f, off);
    default:
        return sp__fail(r, SP_ERR_FORMAT, off, "'%s' object is not callable", sp__type_name(f));
    }
}

/* ---- expressions ------------------------------------------------------------------------- */

static const char *cmp_op_name(uint8_t op) {
    return op == SP__OP_LT ? "<" : op == SP__OP_LE ? "<=" : op == SP__OP_GT ? ">" : ">=";
}

static sp_err lookup(sp__rt *r, const sp__node *n, sp__scope *s, sp__val *out) {
    sp__val *v = scope_find(s, n->sym);
    if (v) {
        *out = *v;
        return SP_OK;
    }
    if (n->flags) {
        sp__val f = {.t = SP__FUNC, .aux = n->flags};
        *out = f;
        return SP_OK;
    }
    sp__undef *u = sp__alloc(r, sizeof *u);
    if (!u)
        return sp__oom(r, n->off);
    u->kind = SP__U_NAME;
    u->key = n->lit;
    u->owner = NULL;
    u->msg = NULL;
    *out = sp__v_undef(u);
    return SP_OK;
}

static sp_err ev_inner(sp__rt *r, const sp__node *n, sp__scope *s, sp__val *out) {
    sp_err e;
    sp__val a, b;
    switch (n->kind) {
    case SP__N_CONST:
        *out = n->lit;
        return SP_OK;
    case SP__N_NAME:
        return lookup(r, n, s, out);
    case SP__N_LIST:
    case SP__N_TUPLE: {
        sp__list *l;
        if ((e = sp__list_new(r, n->n, n->off, &l)))
            return e;
        for (uint32_t i = 0; i < n->n; i++) {
            if ((e = ev(r, n->kids[i], s, &l->v[i])))
                return e;
            l->n = i + 1;
        }
        *out = sp__v_list(l, n->kind == SP__N_TUPLE);
        return SP_OK;
    }
    case SP__N_DICT: {
        sp__dict *d;
        if ((e = sp__dict_new(r, n->n / 2, n->off, &d)))
            return e;
        for (uint32_t i = 0; i + 1 < n->n; i += 2) {
            if ((e = ev(r, n->kids[i], s, &a)) || (e = ev(r, n->kids[i + 1], s, &b)))
                return e;
            if (!sp__hashable(a))
                return sp__fail(r, SP_ERR_FORMAT, n->kids[i]->off, "unhashable type: '%s'",
                                sp__type_name(a));
            if ((e = sp__dict_set(r, d, a, b, n->off)))
                return e;
        }
        *out = sp__v_dict(d);
        return SP_OK;
    }
    case SP__N_GETATTR:
        if ((e = ev(r, n->a, s, &a)))
            return e;
        return sp__getattr(r, a, n->lit, n->off, out);
    case SP__N_GETITEM:
        if ((e = ev(r, n->a, s, &a)) || (e = ev(r, n->b, s, &b)))
            return e;
        return sp__getitem(r, a, b, n->off, out);
    case SP__N_SLICE: {
        sp__val bounds[3];
        if ((e = ev(r, n->a, s, &a)))
            return e;
        for (int k = 0; k < 3; k++) {
            bounds[k] = sp__v_none();
            if (n->kids[k] && (e = ev(r, n->kids[k], s, &bounds[k])))
                return e;
        }
        return do_slice(r, a, bounds, n->off, out);
    }
    case SP__N_CALL: {
        sp__args args;
        if ((e = ev(r, n->a, s, &a)) || (e = eval_args(r, n->args, s, n->off, &args)))
            return e;
        return sp__call(r, a, &args, n->off, out);
    }
    case SP__N_FILTER: {
        sp__args args;
        if ((e = ev(r, n->a, s, &a)) || (e = eval_args(r, n->args, s, n->off, &args)))
            return e;
        return sp__filter(r, n->op, &n->lit, a, &args, n->off, out);
    }
    case SP__N_TEST: {
        sp__args args;
        bool res;
        if ((e = ev(r, n->a, s, &a)) || (e = eval_args(r, n->args, s, n->off, &args)) ||
            (e = sp__test(r, n->op, &n->lit, a, &args, n->off, &res)))
            return e;
        *out = sp__v_bool(n->flags ? !res : res);
        return SP_OK;
    }
    case SP__N_UNARY:
        if ((e = ev(r, n->a, s, &a)))
            return e;
        if (a.t == SP__UNDEF)
            return sp__undef_error(r, a, n->off);
        if (!is_num(a))
            return sp__fail(r, SP_ERR_FORMAT, n->off, "bad operand type for unary %c: '%s'", n->op,
                            sp__type_name(a));
        if (n->op == '+') {
            *out = a.t == SP__BOOL ? sp__v_int(a.b) : a;
        } else if (a.t == SP__FLOAT) {
            *out = sp__v_float(-a.f);
        } else {
            if (as_int(a) == INT64_MIN)
                return sp__overflow(r, n->off);
            *out = sp__v_int(-as_int(a));
        }
        return SP_OK;
    case SP__N_BINARY:
        if ((e = ev(r, n->a, s, &a)) || (e = ev(r, n->b, s, &b)))
            return e;
        return binop(r, n->op, a, b, n->off, out);
    case SP__N_AND:
    case SP__N_OR:
        if ((e = ev(r, n->a, s, &a)))
            return e;
        if (sp__truthy(a) == (n->kind == SP__N_OR)) {
            *out = a;
            return SP_OK;
        }
        return ev(r, n->b, s, out);
    case SP__N_NOT:
        if ((e = ev(r, n->a, s, &a)))
            return e;
        *out = sp__v_bool(!sp__truthy(a));
        return SP_OK;
    case SP__N_COMPARE: {
        if ((e = ev(r, n->a, s, &a)))
            return e;
        for (uint32_t i = 0; i < n->n; i++) {
            bool res = false;
            int c;
            if ((e = ev(r, n->kids[i], s, &b)))
                return e;
            switch (n->ops[i]) {
            case SP__OP_EQ:
            case SP__OP_NE:
                if ((e = sp__eq(r, a, b, n->off, &res)))
                    return e;
                if (n->ops[i] == SP__OP_NE)
                    res = !res;
                break;
            case SP__OP_IN:
            case SP__OP_NOTIN:
                if ((e = contains(r, b, a, n->off, &res)))
                    return e;
                if (n->ops[i] == SP__OP_NOTIN)
                    res = !res;
                break;
            default:
                if ((e = sp__cmp(r, a, b, false, cmp_op_name(n->ops[i]), n->off, &c)))
                    return e;
                res = sp__cmp_holds(c, n->ops[i]);
                break;
            }
            if (!res) {
                *out = sp__v_bool(false);
                return SP_OK;
            }
            a = b;
        }
        *out = sp__v_bool(true);
        return SP_OK;
    }
    case SP__N_COND:
        if ((e = ev(r, n->a, s, &a)))
            return e;
        if (sp__truthy(a))
            return ev(r, n->b, s, out);
        if (n->c)
            return ev(r, n->c, s, out);
        {
            sp__undef *u = sp__alloc(r, sizeof *u);
            char *msg = sp__alloc(r, 128);
            if (!u || !msg)
                return sp__oom(r, n->off);
            snprintf(msg, 128,
                     "the inline if-expression on line %u evaluated to false and no else section "
                     "was defined.",
                     sp__line_of(r->t->src, r->t->len, n->off));
            u->kind = SP__U_MSG;
            u->msg = msg;
            *out = sp__v_undef(u);
        }
        return SP_OK;
    default:
        return sp__fail(r, SP_ERR_FORMAT, n->off, "statement used as an expression");
    }
}

static sp_err ev(sp__rt *r, const sp__node *n, sp__scope *s, sp__val *out) {
    sp_err e = sp__steps(r, 1, n->off);
    if (!e)
        e = sp__enter(r, n->off);
    if (e)
        return e;
    e = ev_inner(r, n, s, out);
    sp__leave(r);
    return e;
}

/* ---- statements -------------------------------------------------------------------------- */

static sp_err assign(sp__rt *r, const sp__node *target, sp__val v, sp__scope *s) {
    sp_err e;
    if (target->kind == SP__N_NAME)
        return scope_set(r, s, target->sym, v, target->off);
    if (target->kind == SP__N_GETATTR) {
        sp__val obj;
        if ((e = lookup(r, target->a, s, &obj)))
            return e;
        if (obj.t != SP__NS)
            return sp__fail(r, SP_ERR_FORMAT, target->off,
                            "cannot assign attribute on non-namespace object");
        return sp__dict_set(r, obj.d, target->lit, v, target->off);
    }
    // Tuple unpacking.
    sp__list *items;
    if ((e = sp__iterate(r, v, target->off, &items)))
        return e;
    if (items->n < target->n)
        return sp__fail(r, SP_ERR_FORMAT, target->off,
                        "not enough values to unpack (expected %u, got %u)", target->n, items->n);
    if (items->n > target->n)
        return sp__fail(r, SP_ERR_FORMAT, target->off, "too many values to unpack (expected %u)",
                        target->n);
    for (uint32_t i = 0; i < target->n; i++)
        if ((e = assign(r, target->kids[i], items->v[i], s)))
            return e;
    return SP_OK;
}

static sp_err apply_filters(sp__rt *r, const sp__node *n, sp__scope *s, sp__val v, sp__val *out) {
    for (uint32_t i = 0; i < n->n; i++) {
        const sp__node *f = n->kids[i];
        sp__args args;
        sp_err e = eval_args(r, f->args, s, f->off, &args);
        if (!e)
            e = sp__filter(r, f->op, &f->lit, v, &args, f->off, &v);
        if (e)
            return e;
    }
    *out = v;
    return SP_OK;
}

static sp_err ex_for(sp__rt *r, const sp__node *n, sp__scope *s) {
    sp__val seq;
    sp__list *items;
    sp__scope *ls = NULL;
    sp_err e;
    if ((e = ev(r, n->b, s, &seq)) || (e = sp__iterate(r, seq, n->b->off, &items)) ||
        (e = scope_new(r, s, n->off, &ls)))
        return e;
    if (n->c) {
        sp__list *kept;
        if ((e = sp__list_new(r, 0, n->off, &kept)))
            return e;
        for (uint32_t i = 0; i < items->n; i++) {
            sp__val ok;
            ls->n = 0;
            if ((e = sp__steps(r, 1, n->off)) || (e = assign(r, n->a, items->v[i], ls)) ||
                (e = ev(r, n->c, ls, &ok)))
                return e;
            if (sp__truthy(ok) && (e = sp__list_push(r, kept, items->v[i], n->off)))
                return e;
        }
        items = kept;
    }
    if (items->n == 0)
        return n->orelse ? ex(r, n->orelse, s) : SP_OK;
    sp__loop *loop = sp__alloc(r, sizeof *loop);
    if (!loop)
        return sp__oom(r, n->off);
    loop->items = items;
    sp__val lv = {.t = SP__LOOP};
    lv.loop = loop;
    for (uint32_t i = 0; i < items->n; i++) {
        loop->i = i;
        ls->n = 0;
        if ((e = sp__steps(r, 1, n->off)) || (e = assign(r, n->a, items->v[i], ls)) ||
            (e = scope_set(r, ls, r->t->sym_loop, lv, n->off)) || (e = ex(r, n->body, ls)))
            return e;
        if (r->ctl) {
            int ctl = r->ctl;
            r->ctl = 0;
            if (ctl == 1)
                break;
        }
    }
    return SP_OK;
}

static sp_err ex_inner(sp__rt *r, const sp__node *n, sp__scope *s) {
    sp_err e;
    sp__val v;
    switch (n->kind) {
    case SP__N_BODY:
        for (uint32_t i = 0; i < n->n && !r->ctl; i++)
            if ((e = ex(r, n->kids[i], s)))
                return e;
        return SP_OK;
    case SP__N_DATA:
        return sp__buf_put(r, r->out, n->lit.s, n->lit.n, n->off);
    case SP__N_PRINT:
        if ((e = ev(r, n->a, s, &v)))
            return e;
        return sp__to_str(r, v, r->out, n->off);
    case SP__N_IF:
        if ((e = ev(r, n->a, s, &v)))
            return e;
        if (sp__truthy(v))
            return ex(r, n->body, s);
        return n->orelse ? ex(r, n->orelse, s) : SP_OK;
    case SP__N_FOR:
        return ex_for(r, n, s);
    case SP__N_SET:
        if ((e = ev(r, n->b, s, &v)))
            return e;
        return assign(r, n->a, v, s);
    case SP__N_SETBLOCK:
        if ((e = capture(r, n->body, s, &v)) || (e = apply_filters(r, n, s, v, &v)))
            return e;
        return assign(r, n->a, v, s);
    case SP__N_FILTERBLOCK:
        if ((e = capture(r, n->body, s, &v)) || (e = apply_filters(r, n, s, v, &v)))
            return e;
        return sp__to_str(r, v, r->out, n->off);
    case SP__N_MACRO:
    case SP__N_CALLBLOCK: {
        sp__macro *m = sp__alloc(r, sizeof *m);
        if (!m)
            return sp__oom(r, n->off);
        m->def = n;
        m->closure = s;
        sp__val mv = {.t = SP__MACRO};
        mv.m = m;
        if (n->kind == SP__N_MACRO)
            return scope_set(r, s, n->sym, mv, n->off);
        // {% call m(args) %}: call m with this block as `caller`.
        const sp__node *call = n->a;
        sp__val f;
        sp__args args;
        if ((e = ev(r, call->a, s, &f)) || (e = eval_args(r, call->args, s, call->off, &args)))
            return e;
        if (f.t != SP__MACRO)
            return f.t == SP__UNDEF ? sp__undef_error(r, f, call->off)
                                    : sp__fail(r, SP_ERR_FORMAT, call->off,
                                               "a call block needs a macro, not '%s'", sp__type_name(f));
        if ((e = sp__enter(r, n->off)))
            return e;
        e = call_macro(r, f.m, &args, mv, call->off, &v);
        sp__leave(r);
        if (e)
            return e;
        return sp__buf_put(r, r->out, v.s, v.n, n->off);
    }
    case SP__N_WITH: {
        sp__scope *ws = NULL;
        if ((e = scope_new(r, s, n->off, &ws)))
            return e;
        for (uint32_t i = 0; i + 1 < n->n; i += 2)
            if ((e = ev(r, n->kids[i + 1], s, &v)) || (e = assign(r, n->kids[i], v, ws)))
                return e;
        return ex(r, n->body, ws);
    }
    case SP__N_BREAK:
        r->ctl = 1;
        return SP_OK;
    case SP__N_CONTINUE:
        r->ctl = 2;
        return SP_OK;
    default:
        if ((e = ev(r, n, s, &v)))
            return e;
        return sp__to_str(r, v, r->out, n->off);
    }
}

static sp_err ex(sp__rt *r, const sp__node *n, sp__scope *s) {
    sp_err e = sp__steps(r, 1, n->off);
    if (!e)
        e = sp__enter(r, n->off);
    if (e)
        return e;
    e = ex_inner(r, n, s);
    sp__leave(r);
    return e;
}

sp_err sp__render(sp__rt *r, const json_t *context) {
    const sp_tmpl *t = r->t;
    sp_err e = scope_new(r, NULL, 0, &r->root);
    if (e)
        return e;
    if (context) {
        json_t *obj = (json_t *)context; // iteration does not modify it
        for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
            const char *k = json_object_iter_key(it);
            size_t kn = json_object_iter_key_len(it);
            uint32_t sym = sp__sym_find(t, k, kn);
            if (sym == UINT32_MAX)
                continue; // the template never names it
            sp__val v;
            if ((e = sp__from_json(r, json_object_iter_value(it), 0, &v)) ||
                (e = scope_set(r, r->root, sym, v, 0)))
                return e;
        }
    }
    return ex(r, t->root, r->root);
}
