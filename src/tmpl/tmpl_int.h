/* Internals of the template engine shared by its files: the arena, values, the syntax tree
 * and the render state. Nothing here is part of the public API.
 *
 * Memory: a compiled template keeps its tree, names and string constants in one arena owned
 * by the sp_tmpl. A render allocates every value (strings, lists, dicts, scopes, captured
 * output) from a second arena that is freed in one go when the render ends, so values never
 * need freeing and may share storage freely (a string value may point into the template's
 * constants, into the borrowed JSON context, or into another string). */
#ifndef SP_TMPL_TMPL_INT_H
#define SP_TMPL_TMPL_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "tmpl/tmpl.h"

/* ---- arena ---------------------------------------------------------------------------- */

typedef struct sp__chunk sp__chunk;

typedef struct sp__arena {
    sp__chunk *head;
    size_t held_bytes;  // sum of chunk sizes
    size_t limit_bytes; // allocation fails (err = SP_ERR_LIMIT) beyond this
    sp_err err;         // why the last allocation failed: SP_ERR_NOMEM or SP_ERR_LIMIT
} sp__arena;

void sp__arena_init(sp__arena *a, size_t limit_bytes);
void sp__arena_deinit(sp__arena *a);
/* 16-byte aligned, uninitialized; NULL on failure (a->err says why). n may be 0. */
void *sp__arena_alloc(sp__arena *a, size_t n);
/* Resizes the block p of old_n bytes (the newest block grows in place); NULL on failure,
 * p stays valid. */
void *sp__arena_grow(sp__arena *a, void *p, size_t old_n, size_t new_n);

/* ---- values --------------------------------------------------------------------------- */

typedef enum sp__type {
    SP__UNDEF,  // Jinja's Undefined: prints as "", falsy, iterates as empty; most uses raise
    SP__NONE,
    SP__BOOL,
    SP__INT,
    SP__FLOAT,
    SP__STR,    // UTF-8 bytes s[0..n), not NUL-terminated
    SP__LIST,   // flag: the SP__SEQ_* kind
    SP__DICT,
    SP__NS,     // namespace(): a mutable dict of attributes
    SP__MACRO,  // a macro or a call block's caller
    SP__FUNC,   // a global function; aux = its id
    SP__METHOD, // a bound method (str.strip, dict.items, loop.cycle ...); aux = its id
    SP__LOOP,   // the `loop` variable of a for loop
} sp__type;

/* The Python type a SP__LIST value stands for. Lazy kinds (generators from map/select/...,
 * range(), dict views) hold their items like a list but print, serialize, index and measure
 * as Python's objects do, so templates fail or succeed as they do under Jinja2. */
enum {
    SP__SEQ_LIST,
    SP__SEQ_TUPLE,
    SP__SEQ_GEN,
    SP__SEQ_RANGE,
    SP__SEQ_ITEMS,
    SP__SEQ_KEYS,
    SP__SEQ_VALUES,
};

typedef struct sp__list sp__list;
typedef struct sp__dict sp__dict;
typedef struct sp__macro sp__macro;
typedef struct sp__bound sp__bound;
typedef struct sp__loop sp__loop;
typedef struct sp__undef sp__undef;

typedef struct sp__val {
    uint8_t t;     // sp__type
    uint8_t flag;  // SP__LIST: SP__SEQ_* kind
    uint16_t aux;  // SP__FUNC / SP__METHOD id
    uint32_t n;    // SP__STR: length in bytes
    union {
        bool b;
        int64_t i;
        double f;
        const char *s;
        sp__list *l;
        sp__dict *d;  // SP__DICT, SP__NS
        sp__macro *m;
        sp__bound *bm;
        sp__loop *loop;
        const sp__undef *u; // may be NULL
    };
} sp__val;

struct sp__list {
    uint32_t n, cap;
    sp__val *v;     // (cap)
    int64_t *range; // SP__SEQ_RANGE: (3) start, stop, step, as repr() shows them; else NULL
};

/* Insertion-ordered; keys are str, int, float, bool or none. A hash index (idx, open
 * addressing, entry+1 per slot, 0 = empty) is built once a dict passes 8 entries. */
struct sp__dict {
    uint32_t n, cap;
    sp__val *k, *v;    // (cap)
    uint32_t *idx;     // (idx_cap), idx_cap a power of two, or NULL
    uint32_t idx_cap;
};

struct sp__bound {
    sp__val self;
};

/* Why a value is undefined, for the message raised when it is used. */
enum { SP__U_NAME, SP__U_ATTR, SP__U_MSG };
struct sp__undef {
    uint8_t kind;
    const char *owner; // SP__U_ATTR: "dict object", "None", ...
    sp__val key;       // SP__U_NAME: the name; SP__U_ATTR: the attribute (str) or index (int)
    const char *msg;   // SP__U_MSG
};

static inline sp__val sp__v_undef(const sp__undef *u) {
    sp__val v = {.t = SP__UNDEF};
    v.u = u;
    return v;
}
static inline sp__val sp__v_none(void) { return (sp__val){.t = SP__NONE}; }
static inline sp__val sp__v_bool(bool b) {
    sp__val v = {.t = SP__BOOL};
    v.b = b;
    return v;
}
static inline sp__val sp__v_int(int64_t i) {
    sp__val v = {.t = SP__INT};
    v.i = i;
    return v;
}
static inline sp__val sp__v_float(double f) {
    sp__val v = {.t = SP__FLOAT};
    v.f = f;
    return v;
}
static inline sp__val sp__v_str(const char *s, uint32_t n) {
    sp__val v = {.t = SP__STR, .n = n};
    v.s = s;
    return v;
}
static inline sp__val sp__v_seq(sp__list *l, uint8_t kind) {
    sp__val v = {.t = SP__LIST, .flag = kind};
    v.l = l;
    return v;
}
static inline sp__val sp__v_list(sp__list *l, bool tuple) {
    return sp__v_seq(l, tuple ? SP__SEQ_TUPLE : SP__SEQ_LIST);
}
static inline bool sp__is_tuple(sp__val v) { return v.t == SP__LIST && v.flag == SP__SEQ_TUPLE; }
/* A real list or tuple (not a lazy kind). */
static inline bool sp__is_plain_seq(sp__val v) {
    return v.t == SP__LIST && (v.flag == SP__SEQ_LIST || v.flag == SP__SEQ_TUPLE);
}
static inline sp__val sp__v_dict(sp__dict *d) {
    sp__val v = {.t = SP__DICT};
    v.d = d;
    return v;
}

/* ---- syntax tree ---------------------------------------------------------------------- */

typedef enum sp__kind {
    // expressions
    SP__N_CONST,   // lit
    SP__N_NAME,    // sym; flags = global function id + 1, or 0
    SP__N_LIST,    // kids
    SP__N_TUPLE,   // kids
    SP__N_DICT,    // kids: key, value, key, value ...
    SP__N_GETATTR, // a.lit (lit: str name)
    SP__N_GETITEM, // a[b]
    SP__N_SLICE,   // a[b:c:d]; b, c, d (in kids[0..3)) may be NULL
    SP__N_CALL,    // a(args)
    SP__N_FILTER,  // a | lit(args); a NULL inside filter blocks; op = filter id
    SP__N_TEST,    // a is [not] lit(args); op = test id; flags 1 = negated
    SP__N_UNARY,   // op a   (op: '-', '+')
    SP__N_BINARY,  // a op b (op: SP__OP_*)
    SP__N_AND,
    SP__N_OR,
    SP__N_NOT,
    SP__N_COMPARE, // a ops[0] kids[0] ops[1] kids[1] ...
    SP__N_COND,    // b if a else c (c may be NULL)
    // statements
    SP__N_BODY,    // kids
    SP__N_DATA,    // lit: text
    SP__N_PRINT,   // {{ a }}
    SP__N_IF,      // if a: body else orelse
    SP__N_FOR,     // for a in b [if c]: body else orelse
    SP__N_SET,     // a = b; a is a name, a tuple of names, or a GETATTR on a name
    SP__N_SETBLOCK, // a = body | kids (filters)
    SP__N_MACRO,   // sym = lit(params): body; flags SP__USES_*
    SP__N_CALLBLOCK, // call(params) a: body
    SP__N_FILTERBLOCK, // body | kids (filters)
    SP__N_WITH,    // with kids (name, value pairs): body
    SP__N_BREAK,
    SP__N_CONTINUE,
} sp__kind;

enum {
    SP__OP_ADD = 1, SP__OP_SUB, SP__OP_MUL, SP__OP_DIV, SP__OP_FLOORDIV, SP__OP_MOD, SP__OP_POW,
    SP__OP_CONCAT, SP__OP_EQ, SP__OP_NE, SP__OP_LT, SP__OP_LE, SP__OP_GT, SP__OP_GE, SP__OP_IN,
    SP__OP_NOTIN,
};

typedef struct sp__node sp__node;

/* Arguments of a call, filter or test; or the parameters of a macro / call block
 * (pos: SP__N_NAME nodes, kw: their defaults or NULL, n_kw == n_pos). */
typedef struct sp__args_node {
    uint32_t n_pos, n_kw;
    sp__node **pos;    // (n_pos)
    sp__node **kw;     // (n_kw) values
    sp__val *kw_name;  // (n_kw) names (str)
} sp__args_node;

struct sp__node {
    uint8_t kind, op;
    uint16_t flags;
    uint32_t off; // byte offset in the normalized source
    uint32_t sym; // SP__N_NAME, SP__N_MACRO
    uint32_t n;   // kids
    sp__node *a, *b, *c;
    sp__node *body, *orelse;
    sp__node **kids; // (n)
    uint8_t *ops;    // SP__N_COMPARE: (n)
    sp__val lit;
    sp__args_node *args;
};

/* ---- templates and renders ------------------------------------------------------------- */

struct sp_tmpl {
    sp__arena arena;
    sp__node *root;
    char *src; // normalized source (arena)
    size_t len;
    uint32_t n_syms;
    sp__val *syms;   // (n_syms) identifier names, indexed by symbol
    uint32_t *symtab; // (symtab_cap) open addressing: symbol + 1, 0 = empty
    uint32_t symtab_cap;
    uint32_t sym_loop, sym_caller, sym_varargs, sym_kwargs;
};

typedef struct sp__buf {
    char *p; // (cap)
    size_t n, cap;
} sp__buf;

typedef struct sp__scope sp__scope;
struct sp__scope {
    sp__scope *parent;
    uint32_t n, cap;
    uint32_t *sym; // (cap)
    sp__val *v;    // (cap)
};

typedef struct sp__rt {
    const sp_tmpl *t;
    sp__arena arena;
    sp_diag *diag;
    uint64_t steps, max_steps;
    uint32_t depth, max_depth;
    size_t max_out;
    int64_t now;
    sp__buf *out; // where statements write
    int ctl;      // a pending {% break %} (1) or {% continue %} (2)
    sp__scope *root;
} sp__rt;

/* Runtime arguments of a call. */
typedef struct sp__args {
    uint32_t n_pos, n_kw;
    sp__val *pos;
    sp__val *kw;
    const sp__val *kw_name;
} sp__args;

/* ---- value.c --------------------------------------------------------------------------- */

/* Records an error at a source offset and returns err. */
sp_err sp__fail(sp__rt *r, sp_err err, uint32_t off, const char *fmt, ...) SP_PRINTF(4, 5);
/* The error for a failed arena allocation. */
sp_err sp__oom(sp__rt *r, uint32_t off);
/* Charges n steps. */
sp_err sp__steps(sp__rt *r, uint64_t n, uint32_t off);
/* Enters / leaves one level of nesting. */
sp_err sp__enter(sp__rt *r, uint32_t off);
static inline void sp__leave(sp__rt *r) { r->depth--; }

void *sp__alloc(sp__rt *r, size_t n); // render arena
sp_err sp__buf_put(sp__rt *r, sp__buf *b, const char *p, size_t n, uint32_t off);
sp_err sp__buf_putc(sp__rt *r, sp__buf *b, char c, uint32_t off);
/* Appends n copies of c (padding, indentation), within the output limit. */
sp_err sp__buf_fill(sp__rt *r, sp__buf *b, char c, size_t n, uint32_t off);
sp_err sp__buf_printf(sp__rt *r, sp__buf *b, uint32_t off, const char *fmt, ...) SP_PRINTF(4, 5);
/* A string value holding b's bytes (no copy; b must not be written again). */
sp__val sp__buf_val(const sp__buf *b);
sp_err sp__str_copy(sp__rt *r, const char *p, size_t n, uint32_t off, sp__val *out);

sp_err sp__list_new(sp__rt *r, uint32_t cap, uint32_t off, sp__list **out);
sp_err sp__list_push(sp__rt *r, sp__list *l, sp__val v, uint32_t off);
sp_err sp__dict_new(sp__rt *r, uint32_t cap, uint32_t off, sp__dict **out);
/* Inserts or replaces; the key must be hashable (sp__hashable). */
sp_err sp__dict_set(sp__rt *r, sp__dict *d, sp__val k, sp__val v, uint32_t off);
/* Looks a key up; NULL when absent. */
sp__val *sp__dict_get(const sp__dict *d, sp__val k);
sp__val *sp__dict_get_str(const sp__dict *d, const char *s, size_t n);
bool sp__hashable(sp__val v);

bool sp__truthy(sp__val v);
/* Python's type(v).__name__: "int", "str", "list", "NoneType" ... */
const char *sp__type_name(sp__val v);
/* Jinja's object_type_repr: "None", "dict object", "list object" ... */
const char *sp__owner_name(sp__val v);
/* Raises the UndefinedError of an undefined value. */
sp_err sp__undef_error(sp__rt *r, sp__val v, uint32_t off);
sp_err sp__undef_attr(sp__rt *r, sp__val owner, sp__val key, uint32_t off, sp__val *out);

/* str(v) appended to b; repr(v) appended to b. */
sp_err sp__to_str(sp__rt *r, sp__val v, sp__buf *b, uint32_t off);
sp_err sp__repr(sp__rt *r, sp__val v, sp__buf *b, uint32_t off);
/* str(v) as a string value (v itself when it is a string). */
sp_err sp__stringify(sp__rt *r, sp__val v, uint32_t off, sp__val *out);
void sp__fmt_float(double d, char out[32]);

/* Python ==. */
sp_err sp__eq(sp__rt *r, sp__val a, sp__val b, uint32_t off, bool *out);
/* Python ordering (<0, 0, >0, or SP__CMP_UNORDERED when a NaN makes <, <=, > and >= all
 * false); TypeError for unorderable types, naming the operator op ("<", ">=", ...).
 * fold: compare strings case-insensitively. */
enum { SP__CMP_UNORDERED = 2 };
sp_err sp__cmp(sp__rt *r, sp__val a, sp__val b, bool fold, const char *op, uint32_t off, int *out);
/* Whether the ordering c from sp__cmp satisfies op (SP__OP_LT, _LE, _GT or _GE). */
bool sp__cmp_holds(int c, uint8_t op);

/* The error for an integer result beyond 64 bits, where Python's would be a big int. */
sp_err sp__overflow(sp__rt *r, uint32_t off);
/* Python's int(x) for a float x: truncated toward zero. Fails (SP_ERR_FORMAT) with Python's
 * message for NaN and infinity, and where Python's result would not fit in 64 bits. */
sp_err sp__float_to_int(sp__rt *r, double x, uint32_t off, int64_t *out);

sp_err sp__from_json(sp__rt *r, const json_t *j, uint32_t off, sp__val *out);

typedef struct sp__json_opts {
    const char *indent; // NULL: single line
    uint32_t indent_n;
    const char *item_sep, *key_sep;
    uint32_t item_sep_n, key_sep_n;
    bool sort_keys, ensure_ascii;
} sp__json_opts;
sp_err sp__to_json(sp__rt *r, sp__val v, const sp__json_opts *o, sp__buf *b, uint32_t off);

/* UTF-8 helpers (input is valid UTF-8). */
uint32_t sp__utf8_dec(const char *s, size_t n, size_t *len);
size_t sp__utf8_enc(uint32_t cp, char out[4]);
size_t sp__utf8_count(const char *s, size_t n);
/* Length of the Python-whitespace character at s (0 if none). */
size_t sp__space_at(const char *s, size_t n);
/* Length of the whitespace character ending at s + n (0 if none). */
size_t sp__space_before(const char *s, size_t n);

/* ---- lex.c / parse.c ------------------------------------------------------------------- */

sp_err sp__parse(sp_tmpl *t, sp_diag *diag);
uint32_t sp__line_of(const char *src, size_t len, size_t off);
/* The symbol of an identifier, or UINT32_MAX if the template never uses it. */
uint32_t sp__sym_find(const sp_tmpl *t, const char *s, size_t n);

/* SP__N_MACRO / SP__N_CALLBLOCK flags: the body names varargs / kwargs. */
enum { SP__USES_VARARGS = 1, SP__USES_KWARGS = 2 };

/* ---- eval.c ---------------------------------------------------------------------------- */

sp_err sp__render(sp__rt *r, const json_t *context);
/* Calls a callable value (macro, global function, bound method). */
sp_err sp__call(sp__rt *r, sp__val f, const sp__args *a, uint32_t off, sp__val *out);
/* Jinja's getattr (x.name) and getitem (x[key]). */
sp_err sp__getattr(sp__rt *r, sp__val obj, sp__val name, uint32_t off, sp__val *out);
sp_err sp__getitem(sp__rt *r, sp__val obj, sp__val key, uint32_t off, sp__val *out);
/* The items a for loop visits: list items, dict keys, string characters, nothing for
 * undefined. */
sp_err sp__iterate(sp__rt *r, sp__val v, uint32_t off, sp__list **out);

/* ---- builtins.c ------------------------------------------------------------------------ */

int sp__filter_id(const char *name, size_t n); // 0 if unknown
int sp__test_id(const char *name, size_t n);   // 0 if unknown
int sp__global_id(const char *name, size_t n); // 0 if unknown
/* The method `name` of v's type, or 0. */
int sp__method_id(sp__val v, const char *name, size_t n);
/* Whether `name` is a mutating method the immutable sandbox refuses on v's type. */
bool sp__unsafe_method(sp__val v, const char *name, size_t n);

sp_err sp__filter(sp__rt *r, int id, const sp__val *name, sp__val in, const sp__args *a,
                  uint32_t off, sp__val *out);
sp_err sp__test(sp__rt *r, int id, const sp__val *name, sp__val in, const sp__args *a,
                uint32_t off, bool *out);
sp_err sp__call_global(sp__rt *r, int id, const sp__args *a, uint32_t off, sp__val *out);
sp_err sp__call_method(sp__rt *r, int id, sp__val self, const sp__args *a, uint32_t off,
                       sp__val *out);
/* loop.<name>; false if the loop has no such attribute. */
bool sp__loop_attr(const sp__loop *l, const char *name, size_t n, sp__val *out);

struct sp__loop {
    sp__list *items;
    uint32_t i; // current index0
};

struct sp__macro {
    const sp__node *def; // SP__N_MACRO, or SP__N_CALLBLOCK for a call block's caller
    sp__scope *closure;  // where it was defined, read live at call time
};

#endif
