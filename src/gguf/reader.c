/* GGUF reader: maps a file (or borrows a buffer) and validates it completely at parse time, so
 * that every accessor afterwards is a plain lookup. Each check that reads a count, length or
 * offset from the file compares it with the bytes left before anything is allocated or
 * dereferenced. */
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/hash.h"
#include "base/util.h"
#include "gguf/internal.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "the GGUF reader assumes a little-endian host");

#define HEADER_BYTES 24u
#define MIN_KV_BYTES 13u // key length (8) + type (4) + the smallest value (1)
#define MIN_TENSOR_BYTES                                                                           \
    32u // name length (8) + n_dims (4) + one extent (8) + type (4) + offset (8)
#define NO_INDEX UINT64_MAX

struct sp_gguf {
    const uint8_t *base; // the image: a mapping we own or a borrowed buffer
    uint64_t size;
    void *map; // non-NULL when base is our mapping of map_len bytes
    size_t map_len;

    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;

    uint64_t n_kv;
    sp_gguf_kv *kv;    // (n_kv)
    uint64_t *kv_strs; // (n_kv) first index into strs for string arrays, else NO_INDEX
    uint64_t *strs;    // (n_strs) file offset of the length prefix of each string-array element
    uint64_t n_strs, cap_strs;
    uint64_t *kv_hash; // (kv_hash_mask + 1) kv index + 1, 0 = empty slot
    uint64_t kv_hash_mask;

    uint64_t n_tensors;
    sp_gguf_tensor *tensors; // (n_tensors)
    uint64_t *t_hash;        // (t_hash_mask + 1) tensor index + 1, 0 = empty slot
    uint64_t t_hash_mask;
};

static const struct {
    const char *name;
    uint32_t size; // 0 for variable-sized types
} type_infos[SP_GGUF_TYPE__COUNT] = {
    [SP_GGUF_UINT8] = {"u8", 1},    [SP_GGUF_INT8] = {"i8", 1},    [SP_GGUF_UINT16] = {"u16", 2},
    [SP_GGUF_INT16] = {"i16", 2},   [SP_GGUF_UINT32] = {"u32", 4}, [SP_GGUF_INT32] = {"i32", 4},
    [SP_GGUF_FLOAT32] = {"f32", 4}, [SP_GGUF_BOOL] = {"bool", 1},  [SP_GGUF_STRING] = {"string", 0},
    [SP_GGUF_ARRAY] = {"array", 0}, [SP_GGUF_UINT64] = {"u64", 8}, [SP_GGUF_INT64] = {"i64", 8},
    [SP_GGUF_FLOAT64] = {"f64", 8},
};

const char *sp_gguf_type_name(sp_gguf_type t) {
    if ((unsigned)t >= SP_GGUF_TYPE__COUNT)
        return "unknown";
    return type_infos[t].name;
}

size_t sp_gguf_type_size(sp_gguf_type t) {
    if ((unsigned)t >= SP_GGUF_TYPE__COUNT)
        return 0;
    return type_infos[t].size;
}

/* ---- hashing of keys and tensor names ------------------------------------------------- */

// A table of at least 2 * n slots, a power of two; n was validated against the file size.
static sp_err hash_alloc(uint64_t n, uint64_t **out, uint64_t *mask) {
    uint64_t cap = 8;
    while (cap < 2 * n)
        cap *= 2;
    uint64_t *t = calloc(cap, sizeof *t);
    if (!t)
        return SP_ERR_NOMEM;
    *out = t;
    *mask = cap - 1;
    return SP_OK;
}

static sp_str kv_name(const sp_gguf *g, uint64_t i) {
    return g->kv[i].key;
}
static sp_str tensor_name(const sp_gguf *g, uint64_t i) {
    return g->tensors[i].name;
}

/* Looks up name; returns the index or NO_INDEX. If insert_index != NO_INDEX and the name is
 * absent, inserts it. */
static uint64_t hash_find(const sp_gguf *g, uint64_t *table, uint64_t mask,
                          sp_str (*name_of)(const sp_gguf *, uint64_t), const char *p, uint64_t n,
                          uint64_t insert_index) {
    if (!table)
        return NO_INDEX;
    // n fits in size_t: the name lies within the mapped file.
    for (uint64_t slot = sp_fnv1a64(p, (size_t)n) & mask;; slot = (slot + 1) & mask) {
        uint64_t e = table[slot];
        if (e == 0) {
            if (insert_index != NO_INDEX)
                table[slot] = insert_index + 1;
            return NO_INDEX;
        }
        sp_str s = name_of(g, e - 1);
        if (s.len == n && (n == 0 || memcmp(s.ptr, p, n) == 0))
            return e - 1;
    }
}

/* ---- cursor over the image ------------------------------------------------------------- */

typedef struct cursor {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    sp_diag *diag;
} cursor;

static uint64_t left(const cursor *c) {
    return c->size - c->pos;
}

static sp_err rd(cursor *c, void *dst, uint64_t n, const char *what) {
    if (n > left(c))
        return sp_diag_set(c->diag, SP_ERR_TRUNCATED, c->pos,
                           "%s at offset %llu needs %llu bytes but the file ends after %llu", what,
                           (unsigned long long)c->pos, (unsigned long long)n,
                           (unsigned long long)c->size);
    memcpy(dst, c->base + c->pos, n);
    c->pos += n;
    return SP_OK;
}

static sp_err rd_u32(cursor *c, uint32_t *v, const char *what) {
    return rd(c, v, 4, what);
}
static sp_err rd_u64(cursor *c, uint64_t *v, const char *what) {
    return rd(c, v, 8, what);
}

static sp_err rd_str(cursor *c, sp_str *out, const char *what) {
    uint64_t at = c->pos, len = 0;
    sp_err err = rd_u64(c, &len, what);
    if (err)
        return err;
    if (len > left(c))
        return sp_diag_set(c->diag, SP_ERR_RANGE, at,
                           "%s length %llu at offset %llu exceeds the %llu bytes left in the file",
                           what, (unsigned long long)len, (unsigned long long)at,
                           (unsigned long long)left(c));
    out->ptr = (const char *)c->base + c->pos;
    out->len = len;
    c->pos += len;
    return SP_OK;
}

static void set_param(sp_diag *d, sp_str s) {
    if (!d)
        return;
    size_t n = s.len < sizeof d->param - 1 ? (size_t)s.len : sizeof d->param - 1;
    memcpy(d->param, s.ptr, n);
    d->param[n] = '\0';
}

/* ---- metadata -------------------------------------------------------------------------- */

static sp_err push_str(sp_gguf *g, uint64_t off) {
    if (g->n_strs == g->cap_strs) {
        uint64_t cap = g->cap_strs ? g->cap_strs * 2 : 64;
        uint64_t *p = realloc(g->strs, cap * sizeof *p);
        if (!p)
            return SP_ERR_NOMEM;
        g->strs = p;
        g->cap_strs = cap;
    }
    g->strs[g->n_strs++] = off;
    return SP_OK;
}

static sp_err reserve_strs(sp_gguf *g, uint64_t n) {
    // n <= bytes left / 8, so the table stays proportional to the file size.
    if (g->cap_strs - g->n_strs >= n)
        return SP_OK;
    // Grow geometrically so that many small arrays do not copy the table each time.
    uint64_t cap = SP_MAX(g->n_strs + n, g->cap_strs * 2);
    uint64_t *p = realloc(g->strs, cap * sizeof *p);
    if (!p)
        return SP_ERR_NOMEM;
    g->strs = p;
    g->cap_strs = cap;
    return SP_OK;
}

static sp_err parse_value(sp_gguf *g, cursor *c, uint64_t i, uint32_t type, uint64_t type_at) {
    sp_gguf_kv *kv = &g->kv[i];
    sp_err err;
    if (type >= SP_GGUF_TYPE__COUNT)
        return sp_diag_set(c->diag, SP_ERR_FORMAT, type_at,
                           "unknown metadata value type %u at offset %llu", type,
                           (unsigned long long)type_at);
    kv->type = (sp_gguf_type)type;
    if (kv->type == SP_GGUF_ARRAY) {
        uint32_t et = 0;
        uint64_t n = 0, n_at;
        if ((err = rd_u32(c, &et, "array element type")))
            return err;
        if (et == SP_GGUF_ARRAY)
            return sp_diag_set(
                c->diag, SP_ERR_UNSUPPORTED, c->pos - 4,
                "nested arrays (array element type at offset %llu) are not supported",
                (unsigned long long)(c->pos - 4));
        if (et >= SP_GGUF_TYPE__COUNT)
            return sp_diag_set(c->diag, SP_ERR_FORMAT, c->pos - 4,
                               "unknown array element type %u at offset %llu", et,
                               (unsigned long long)(c->pos - 4));
        n_at = c->pos;
        if ((err = rd_u64(c, &n, "array length")))
            return err;
        kv->arr_type = (sp_gguf_type)et;
        kv->arr_n = n;
        kv->value = c->base + c->pos;
        kv->offset = c->pos;
        uint64_t esize = et == SP_GGUF_STRING ? 8 : type_infos[et].size, bytes;
        if (!sp_mul_u64(n, esize, &bytes) || bytes > left(c))
            return sp_diag_set(c->diag, SP_ERR_RANGE, n_at,
                               "array of %llu %s at offset %llu cannot fit in the %llu bytes left",
                               (unsigned long long)n, type_infos[et].name, (unsigned long long)n_at,
                               (unsigned long long)left(c));
        if (et != SP_GGUF_STRING) {
            c->pos += bytes;
            return SP_OK;
        }
        if (reserve_strs(g, n))
            return sp_diag_set(c->diag, SP_ERR_NOMEM, n_at, "out of memory indexing %llu strings",
                               (unsigned long long)n);
        g->kv_strs[i] = g->n_strs;
        for (uint64_t k = 0; k < n; k++) {
            sp_str s;
            uint64_t at = c->pos;
            if ((err = rd_str(c, &s, "array string")))
                return err;
            if ((err = push_str(g, at)))
                return sp_diag_set(c->diag, err, at, "out of memory indexing strings");
        }
        return SP_OK;
    }
    kv->value = c->base + c->pos;
    kv->offset = c->pos;
    if (kv->type == SP_GGUF_STRING) {
        sp_str s;
        return rd_str(c, &s, "string value");
    }
    uint32_t size = type_infos[kv->type].size;
    if (size > left(c))
        return sp_diag_set(c->diag, SP_ERR_TRUNCATED, c->pos,
                           "%s value at offset %llu needs %u bytes but the file ends after %llu",
                           type_infos[kv->type].name, (unsigned long long)c->pos, size,
                           (unsigned long long)c->size);
    c->pos += size;
    return SP_OK;
}

static sp_err parse_kvs(sp_gguf *g, cursor *c) {
    sp_err err;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        sp_gguf_kv *kv = &g->kv[i];
        uint64_t key_at = c->pos;
        g->kv_strs[i] = NO_INDEX;
        if ((err = rd_str(c, &kv->key, "metadata key")))
            return err;
        set_param(c->diag, kv->key);
        uint64_t prev =
            hash_find(g, g->kv_hash, g->kv_hash_mask, kv_name, kv->key.ptr, kv->key.len, i);
        if (prev != NO_INDEX)
            return sp_diag_set(
                c->diag, SP_ERR_FORMAT, key_at, "duplicate metadata key '%.*s' at offset %llu",
                (int)SP_MIN(kv->key.len, 128), kv->key.ptr, (unsigned long long)key_at);
        uint32_t type = 0;
        uint64_t type_at = c->pos;
        if ((err = rd_u32(c, &type, "metadata value type")))
            return err;
        if ((err = parse_value(g, c, i, type, type_at)))
            return err;
    }
    if (c->diag)
        c->diag->param[0] = '\0';
    return SP_OK;
}

static sp_err read_alignment(sp_gguf *g, sp_diag *diag) {
    g->alignment = SP_GGUF_DEFAULT_ALIGNMENT;
    const sp_gguf_kv *kv = sp_gguf_find(g, "general.alignment");
    if (!kv)
        return SP_OK;
    if (diag)
        strcpy(diag->param, "general.alignment");
    if (kv->type != SP_GGUF_UINT32) {
        uint64_t type_at = kv->offset - (kv->type == SP_GGUF_ARRAY ? 16 : 4);
        return sp_diag_set(diag, SP_ERR_FORMAT, type_at,
                           "general.alignment at offset %llu has type %s, expected u32",
                           (unsigned long long)type_at, sp_gguf_type_name(kv->type));
    }
    uint32_t a;
    memcpy(&a, kv->value, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return sp_diag_set(diag, SP_ERR_RANGE, kv->offset,
                           "general.alignment at offset %llu is %u, not a power of two",
                           (unsigned long long)kv->offset, a);
    g->alignment = a;
    if (diag)
        diag->param[0] = '\0';
    return SP_OK;
}

/* ---- tensors --------------------------------------------------------------------------- */

typedef struct span {
    uint64_t begin, end; // relative to the data section
    uint64_t field_at;   // file offset of the tensor's offset field
    uint64_t index;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index; // stable: report the later tensor
}

static sp_err parse_tensor_infos(sp_gguf *g, cursor *c, span *spans) {
    sp_err err;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        sp_gguf_tensor *t = &g->tensors[i];
        uint64_t name_at = c->pos;
        if ((err = rd_str(c, &t->name, "tensor name")))
            return err;
        set_param(c->diag, t->name);
        if (hash_find(g, g->t_hash, g->t_hash_mask, tensor_name, t->name.ptr, t->name.len, i) !=
            NO_INDEX)
            return sp_diag_set(
                c->diag, SP_ERR_FORMAT, name_at, "duplicate tensor name '%.*s' at offset %llu",
                (int)SP_MIN(t->name.len, 128), t->name.ptr, (unsigned long long)name_at);
        uint64_t dims_at = c->pos;
        if ((err = rd_u32(c, &t->n_dims, "tensor n_dims")))
            return err;
        if (t->n_dims < 1 || t->n_dims > SP_GGUF_MAX_DIMS)
            return sp_diag_set(c->diag, SP_ERR_FORMAT, dims_at,
                               "tensor n_dims %u at offset %llu is not in 1..%d", t->n_dims,
                               (unsigned long long)dims_at, SP_GGUF_MAX_DIMS);
        uint64_t n_elems = 1;
        for (uint32_t d = 0; d < SP_GGUF_MAX_DIMS; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t ne = 0, ne_at = c->pos;
            if ((err = rd_u64(c, &ne, "tensor extent")))
                return err;
            if (ne == 0)
                return sp_diag_set(c->diag, SP_ERR_FORMAT, ne_at,
                                   "tensor extent ne[%u] at offset %llu is 0", d,
                                   (unsigned long long)ne_at);
            if (ne > INT64_MAX || !sp_mul_u64(n_elems, ne, &n_elems) || n_elems > INT64_MAX)
                return sp_diag_set(c->diag, SP_ERR_RANGE, ne_at,
                                   "tensor extent ne[%u] = %llu at offset %llu overflows the "
                                   "element count",
                                   d, (unsigned long long)ne, (unsigned long long)ne_at);
            t->ne[d] = (int64_t)ne;
        }
        uint32_t type = 0;
        uint64_t type_at = c->pos;
        if ((err = rd_u32(c, &type, "tensor type")))
            return err;
        const sp_dtype_info *info = sp_dtype_get(type);
        if (!info)
            return sp_diag_set(c->diag, SP_ERR_UNSUPPORTED, type_at,
                               "unknown tensor type %u at offset %llu", type,
                               (unsigned long long)type_at);
        t->type = (sp_dtype)type;
        if ((uint64_t)t->ne[0] % (uint64_t)info->block_size != 0)
            return sp_diag_set(c->diag, SP_ERR_FORMAT, dims_at + 4,
                               "tensor ne[0] = %lld (offset %llu) is not a multiple of the %s "
                               "block size %d",
                               (long long)t->ne[0], (unsigned long long)(dims_at + 4), info->name,
                               info->block_size);
        uint64_t row_bytes, rows = n_elems / (uint64_t)t->ne[0];
        if (sp_dtype_row_bytes(type, (uint64_t)t->ne[0], &row_bytes) != SP_OK ||
            !sp_mul_u64(row_bytes, rows, &t->n_bytes))
            return sp_diag_set(c->diag, SP_ERR_RANGE, dims_at + 4,
                               "tensor size at offset %llu overflows",
                               (unsigned long long)(dims_at + 4));
        spans[i].field_at = c->pos;
        spans[i].index = i;
        if ((err = rd_u64(c, &t->offset, "tensor offset")))
            return err;
    }
    if (c->diag)
        c->diag->param[0] = '\0';
    return SP_OK;
}

static sp_err place_tensors(sp_gguf *g, span *spans, sp_diag *diag) {
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        sp_gguf_tensor *t = &g->tensors[i];
        uint64_t at = spans[i].field_at, end;
        set_param(diag, t->name);
        if (t->offset % g->alignment != 0)
            return sp_diag_set(diag, SP_ERR_FORMAT, at,
                               "tensor offset %llu at offset %llu is not a multiple of the "
                               "alignment %llu",
                               (unsigned long long)t->offset, (unsigned long long)at,
                               (unsigned long long)g->alignment);
        if (!sp_add_u64(g->data_offset, t->offset, &end) || !sp_add_u64(end, t->n_bytes, &end) ||
            end > g->size)
            return sp_diag_set(diag, SP_ERR_RANGE, at,
                               "tensor data (offset %llu at offset %llu, %llu bytes, data "
                               "section at %llu) extends past the end of the file (%llu bytes)",
                               (unsigned long long)t->offset, (unsigned long long)at,
                               (unsigned long long)t->n_bytes, (unsigned long long)g->data_offset,
                               (unsigned long long)g->size);
        t->data = g->base + g->data_offset + t->offset;
        spans[i].begin = t->offset;
        spans[i].end = t->offset + t->n_bytes;
    }
    if (g->n_tensors)
        qsort(spans, g->n_tensors, sizeof *spans, span_cmp);
    for (uint64_t i = 1; i < g->n_tensors; i++) {
        if (spans[i].begin < spans[i - 1].end) {
            set_param(diag, g->tensors[spans[i].index].name);
            return sp_diag_set(diag, SP_ERR_FORMAT, spans[i].field_at,
                               "tensor data at offset %llu (field at offset %llu) overlaps "
                               "tensor '%.*s'",
                               (unsigned long long)spans[i].begin,
                               (unsigned long long)spans[i].field_at,
                               (int)SP_MIN(g->tensors[spans[i - 1].index].name.len, 128),
                               g->tensors[spans[i - 1].index].name.ptr);
        }
    }
    if (diag)
        diag->param[0] = '\0';
    return SP_OK;
}

/* ---- header and driver ----------------------------------------------------------------- */

static sp_err parse_header(sp_gguf *g, cursor *c) {
    uint32_t magic = 0, version = 0;
    sp_err err;
    if (c->size < 4 || memcmp(c->base, "GGUF", 4) != 0) {
        if (c->size < 4 && memcmp(c->base, "GGUF", (size_t)c->size) == 0)
            return sp_diag_set(c->diag, SP_ERR_TRUNCATED, 0,
                               "file of %llu bytes is too short for a GGUF header",
                               (unsigned long long)c->size);
        return sp_diag_set(c->diag, SP_ERR_FORMAT, 0, "not a GGUF file (bad magic at offset 0)");
    }
    if ((err = rd_u32(c, &magic, "GGUF magic")) || (err = rd_u32(c, &version, "GGUF version")))
        return err;
    if (version != 0 && (version & 0xffffu) == 0 && __builtin_bswap32(version) <= 3)
        return sp_diag_set(c->diag, SP_ERR_UNSUPPORTED, 4,
                           "big-endian GGUF file (version %u byte-swapped at offset 4) is not "
                           "supported",
                           __builtin_bswap32(version));
    if (version != 2 && version != 3)
        return sp_diag_set(c->diag, SP_ERR_UNSUPPORTED, 4,
                           "GGUF version %u at offset 4 is not supported (only 2 and 3)", version);
    g->version = version;
    if ((err = rd_u64(c, &g->n_tensors, "tensor count")) ||
        (err = rd_u64(c, &g->n_kv, "metadata count")))
        return err;
    uint64_t room = left(c), kv_bytes, t_bytes, sum;
    if (!sp_mul_u64(g->n_tensors, MIN_TENSOR_BYTES, &t_bytes) || t_bytes > room)
        return sp_diag_set(c->diag, SP_ERR_RANGE, 8,
                           "tensor count %llu at offset 8 cannot fit in the %llu bytes left",
                           (unsigned long long)g->n_tensors, (unsigned long long)room);
    if (!sp_mul_u64(g->n_kv, MIN_KV_BYTES, &kv_bytes) || !sp_add_u64(kv_bytes, t_bytes, &sum) ||
        sum > room)
        return sp_diag_set(c->diag, SP_ERR_RANGE, 16,
                           "metadata count %llu at offset 16 cannot fit in the %llu bytes left",
                           (unsigned long long)g->n_kv, (unsigned long long)room);
    return SP_OK;
}

static sp_err parse_image(sp_gguf *g, sp_diag *diag) {
    cursor c = {g->base, g->size, 0, diag};
    span *spans = NULL;
    sp_err err;
    if ((err = parse_header(g, &c)))
        return err;
    if (g->n_kv) {
        g->kv = calloc(g->n_kv, sizeof *g->kv);
        g->kv_strs = calloc(g->n_kv, sizeof *g->kv_strs);
        if (!g->kv || !g->kv_strs)
            return sp_diag_set(diag, SP_ERR_NOMEM, 16, "out of memory for %llu metadata entries",
                               (unsigned long long)g->n_kv);
        if (hash_alloc(g->n_kv, &g->kv_hash, &g->kv_hash_mask))
            return sp_diag_set(diag, SP_ERR_NOMEM, 16, "out of memory");
    }
    if (g->n_tensors) {
        g->tensors = calloc(g->n_tensors, sizeof *g->tensors);
        spans = calloc(g->n_tensors, sizeof *spans);
        if (!g->tensors || !spans || hash_alloc(g->n_tensors, &g->t_hash, &g->t_hash_mask)) {
            err = sp_diag_set(diag, SP_ERR_NOMEM, 8, "out of memory for %llu tensors",
                              (unsigned long long)g->n_tensors);
            goto fail;
        }
    }
    if ((err = parse_kvs(g, &c)) || (err = read_alignment(g, diag)) ||
        (err = parse_tensor_infos(g, &c, spans)))
        goto fail;
    if (!sp_align_up_u64(c.pos, g->alignment, &g->data_offset)) {
        err = sp_diag_set(diag, SP_ERR_RANGE, c.pos, "data section offset overflows");
        goto fail;
    }
    if ((err = place_tensors(g, spans, diag)))
        goto fail;
    free(spans);
    return SP_OK;
fail:
    free(spans);
    return err;
}

void sp_gguf_close(sp_gguf *g) {
    if (!g)
        return;
    free(g->kv);
    free(g->kv_strs);
    free(g->strs);
    free(g->kv_hash);
    free(g->tensors);
    free(g->t_hash);
    if (g->map)
        munmap(g->map, g->map_len);
    free(g);
}

sp_err sp_gguf_parse(const void *buf, size_t n_bytes, sp_gguf **out, sp_diag *diag) {
    sp_diag_clear(diag);
    if (!buf || n_bytes == 0)
        return sp_diag_set(diag, SP_ERR_TRUNCATED, 0, "empty GGUF image");
    sp_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return sp_diag_set(diag, SP_ERR_NOMEM, UINT64_MAX, "out of memory");
    g->base = buf;
    g->size = n_bytes;
    sp_err err = parse_image(g, diag);
    if (err) {
        sp_gguf_close(g);
        return err;
    }
    *out = g;
    return SP_OK;
}

sp_err sp_gguf_open(const char *path, sp_gguf **out, sp_diag *diag) {
    sp_diag_clear(diag);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "cannot open %s: %s", path,
                           strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "cannot stat %s: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "cannot map %s: %s", path,
                           strerror(EISDIR));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "cannot map %s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return sp_diag_set(diag, SP_ERR_TRUNCATED, 0, "%s is empty", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return sp_diag_set(diag, SP_ERR_RANGE, UINT64_MAX, "%s is too large to map", path);
    }
    size_t len = (size_t)st.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "cannot map %s: %s", path, strerror(e));
    sp_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(map, len);
        return sp_diag_set(diag, SP_ERR_NOMEM, UINT64_MAX, "out of memory");
    }
    g->map = map;
    g->map_len = len;
    g->base = map;
    g->size = len;
    sp_err err = parse_image(g, diag);
    if (err) {
        sp_gguf_close(g);
        return err;
    }
    *out = g;
    return SP_OK;
}

/* ---- accessors ------------------------------------------------------------------------- */

uint32_t sp_gguf_version(const sp_gguf *g) {
    return g->version;
}
uint64_t sp_gguf_alignment(const sp_gguf *g) {
    return g->alignment;
}
uint64_t sp_gguf_data_offset(const sp_gguf *g) {
    return g->data_offset;
}
uint64_t sp_gguf_file_size(const sp_gguf *g) {
    return g->size;
}

uint64_t sp_gguf_n_kv(const sp_gguf *g) {
    return g->n_kv;
}

const sp_gguf_kv *sp_gguf_kv_at(const sp_gguf *g, uint64_t i) {
    return i < g->n_kv ? &g->kv[i] : NULL;
}

const sp_gguf_kv *sp_gguf_find(const sp_gguf *g, const char *key) {
    uint64_t i = hash_find(g, g->kv_hash, g->kv_hash_mask, kv_name, key, strlen(key), NO_INDEX);
    return i == NO_INDEX ? NULL : &g->kv[i];
}

uint64_t sp_gguf_n_tensors(const sp_gguf *g) {
    return g->n_tensors;
}

const sp_gguf_tensor *sp_gguf_tensor_at(const sp_gguf *g, uint64_t i) {
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const sp_gguf_tensor *sp_gguf_find_tensor(const sp_gguf *g, const char *name) {
    uint64_t i = hash_find(g, g->t_hash, g->t_hash_mask, tensor_name, name, strlen(name), NO_INDEX);
    return i == NO_INDEX ? NULL : &g->tensors[i];
}

/* ---- typed values ---------------------------------------------------------------------- */

static bool is_int_type(sp_gguf_type t) {
    switch (t) {
    case SP_GGUF_UINT8:
    case SP_GGUF_INT8:
    case SP_GGUF_UINT16:
    case SP_GGUF_INT16:
    case SP_GGUF_UINT32:
    case SP_GGUF_INT32:
    case SP_GGUF_UINT64:
    case SP_GGUF_INT64:
    case SP_GGUF_BOOL:
        return true;
    default:
        return false;
    }
}

// Reads an integer (or bool) of type t at p; false if a u64 does not fit in int64.
static bool load_int(sp_gguf_type t, const uint8_t *p, int64_t *out) {
    switch (t) {
    case SP_GGUF_UINT8:
    case SP_GGUF_BOOL:
        *out = p[0];
        return true;
    case SP_GGUF_INT8: {
        int8_t v;
        memcpy(&v, p, 1);
        *out = v;
        return true;
    }
    case SP_GGUF_UINT16: {
        uint16_t v;
        memcpy(&v, p, 2);
        *out = v;
        return true;
    }
    case SP_GGUF_INT16: {
        int16_t v;
        memcpy(&v, p, 2);
        *out = v;
        return true;
    }
    case SP_GGUF_UINT32: {
        uint32_t v;
        memcpy(&v, p, 4);
        *out = v;
        return true;
    }
    case SP_GGUF_INT32: {
        int32_t v;
        memcpy(&v, p, 4);
        *out = v;
        return true;
    }
    case SP_GGUF_INT64: {
        int64_t v;
        memcpy(&v, p, 8);
        *out = v;
        return true;
    }
    case SP_GGUF_UINT64: {
        uint64_t v;
        memcpy(&v, p, 8);
        if (v > INT64_MAX)
            return false;
        *out = (int64_t)v;
        return true;
    }
    default:
        return false;
    }
}

static bool load_float(sp_gguf_type t, const uint8_t *p, double *out) {
    if (t == SP_GGUF_FLOAT32) {
        float v;
        memcpy(&v, p, 4);
        *out = v;
        return true;
    }
    if (t == SP_GGUF_FLOAT64) {
        memcpy(out, p, 8);
        return true;
    }
    if (t == SP_GGUF_UINT64) {
        uint64_t v;
        memcpy(&v, p, 8);
        *out = (double)v;
        return true;
    }
    int64_t v;
    if (t == SP_GGUF_BOOL || !load_int(t, p, &v))
        return false;
    *out = (double)v;
    return true;
}

static const sp_gguf_kv *find_for_get(const sp_gguf *g, const char *key, sp_diag *diag) {
    const sp_gguf_kv *kv = sp_gguf_find(g, key);
    if (diag) {
        snprintf(diag->param, sizeof diag->param, "%s", key);
        if (!kv)
            sp_diag_set(diag, SP_ERR_NOT_FOUND, UINT64_MAX, "metadata key %s not found", key);
    }
    return kv;
}

static sp_err type_mismatch(const sp_gguf_kv *kv, const char *key, const char *want,
                            sp_diag *diag) {
    return sp_diag_set(diag, SP_ERR_FORMAT, kv->offset,
                       "metadata %s at offset %llu is %s, expected %s", key,
                       (unsigned long long)kv->offset,
                       kv->type == SP_GGUF_ARRAY ? "an array" : sp_gguf_type_name(kv->type), want);
}

sp_err sp_gguf_get_int(const sp_gguf *g, const char *key, int64_t *out, sp_diag *diag) {
    const sp_gguf_kv *kv = find_for_get(g, key, diag);
    if (!kv)
        return SP_ERR_NOT_FOUND;
    int64_t v;
    if (!is_int_type(kv->type))
        return type_mismatch(kv, key, "an integer", diag);
    if (!load_int(kv->type, kv->value, &v))
        return sp_diag_set(diag, SP_ERR_FORMAT, kv->offset,
                           "metadata %s at offset %llu does not fit in int64", key,
                           (unsigned long long)kv->offset);
    *out = v;
    return SP_OK;
}

sp_err sp_gguf_get_float(const sp_gguf *g, const char *key, double *out, sp_diag *diag) {
    const sp_gguf_kv *kv = find_for_get(g, key, diag);
    if (!kv)
        return SP_ERR_NOT_FOUND;
    double v;
    if (kv->type == SP_GGUF_ARRAY || !load_float(kv->type, kv->value, &v))
        return type_mismatch(kv, key, "a number", diag);
    *out = v;
    return SP_OK;
}

sp_err sp_gguf_get_bool(const sp_gguf *g, const char *key, bool *out, sp_diag *diag) {
    const sp_gguf_kv *kv = find_for_get(g, key, diag);
    if (!kv)
        return SP_ERR_NOT_FOUND;
    if (kv->type != SP_GGUF_BOOL)
        return type_mismatch(kv, key, "bool", diag);
    *out = kv->value[0] != 0;
    return SP_OK;
}

sp_err sp_gguf_get_str(const sp_gguf *g, const char *key, sp_str *out, sp_diag *diag) {
    const sp_gguf_kv *kv = find_for_get(g, key, diag);
    if (!kv)
        return SP_ERR_NOT_FOUND;
    if (kv->type != SP_GGUF_STRING)
        return type_mismatch(kv, key, "string", diag);
    uint64_t len;
    memcpy(&len, kv->value, 8);
    out->ptr = (const char *)kv->value + 8;
    out->len = len;
    return SP_OK;
}

sp_err sp_gguf_arr_str(const sp_gguf *g, const sp_gguf_kv *kv, uint64_t i, sp_str *out) {
    uintptr_t p = (uintptr_t)kv, lo = (uintptr_t)g->kv;
    if (!g->kv || p < lo || p >= lo + g->n_kv * sizeof *kv)
        return SP_ERR_INVALID; // not an entry of g
    if (kv->type != SP_GGUF_ARRAY || kv->arr_type != SP_GGUF_STRING)
        return SP_ERR_FORMAT;
    if (i >= kv->arr_n)
        return SP_ERR_RANGE;
    uint64_t at = g->strs[g->kv_strs[kv - g->kv] + i], len;
    memcpy(&len, g->base + at, 8);
    out->ptr = (const char *)g->base + at + 8;
    out->len = len;
    return SP_OK;
}

sp_err sp_gguf_arr_int(const sp_gguf_kv *kv, uint64_t i, int64_t *out) {
    if (kv->type != SP_GGUF_ARRAY || !is_int_type(kv->arr_type))
        return SP_ERR_FORMAT;
    if (i >= kv->arr_n)
        return SP_ERR_RANGE;
    int64_t v;
    if (!load_int(kv->arr_type, kv->value + i * type_infos[kv->arr_type].size, &v))
        return SP_ERR_FORMAT;
    *out = v;
    return SP_OK;
}

sp_err sp_gguf_arr_float(const sp_gguf_kv *kv, uint64_t i, double *out) {
    if (kv->type != SP_GGUF_ARRAY || (unsigned)kv->arr_type >= SP_GGUF_TYPE__COUNT ||
        type_infos[kv->arr_type].size == 0)
        return SP_ERR_FORMAT;
    if (i >= kv->arr_n)
        return SP_ERR_RANGE;
    double v;
    if (!load_float(kv->arr_type, kv->value + i * type_infos[kv->arr_type].size, &v))
        return SP_ERR_FORMAT;
    *out = v;
    return SP_OK;
}

uint64_t sp__gguf_value_bytes(const sp_gguf *g, const sp_gguf_kv *kv) {
    uint64_t len;
    if (kv->type == SP_GGUF_STRING) {
        memcpy(&len, kv->value, 8);
        return 8 + len;
    }
    if (kv->type != SP_GGUF_ARRAY)
        return type_infos[kv->type].size;
    if (kv->arr_type != SP_GGUF_STRING)
        return kv->arr_n * type_infos[kv->arr_type].size;
    if (kv->arr_n == 0)
        return 0;
    uint64_t last = g->strs[g->kv_strs[kv - g->kv] + kv->arr_n - 1];
    memcpy(&len, g->base + last, 8);
    return last + 8 + len - kv->offset;
}
