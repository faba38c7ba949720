/* GGUF v3 writer. Metadata values are serialized into their on-disk form when set, so saving
 * is a matter of concatenating them; tensor data is borrowed and streamed at save time. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"
#include "gguf/gguf.h"
#include "gguf/internal.h"

typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

typedef struct wkv {
    char *key; // (key_len) not NUL-terminated in general (a copied key may hold NULs)
    size_t key_len;
    sp_gguf_type type;
    bytes payload; // the value as stored after the type field
} wkv;

typedef struct wtensor {
    char *name; // NUL-terminated
    sp_dtype type;
    uint32_t n_dims;
    int64_t ne[SP_GGUF_MAX_DIMS];
    const void *data; // borrowed (n_bytes)
    uint64_t n_bytes;
} wtensor;

struct sp_gguf_writer {
    wkv *kv; // (n_kv) in insertion order
    size_t n_kv, cap_kv;
    wtensor *t; // (n_t)
    size_t n_t, cap_t;
};

static sp_err put(bytes *b, const void *p, size_t n) {
    if (n > b->cap - b->n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n < n) {
            if (cap > SIZE_MAX / 2)
                return SP_ERR_NOMEM;
            cap *= 2;
        }
        uint8_t *q = realloc(b->p, cap);
        if (!q)
            return SP_ERR_NOMEM;
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
    return SP_OK;
}

static sp_err put_u32(bytes *b, uint32_t v) {
    return put(b, &v, 4);
}
static sp_err put_u64(bytes *b, uint64_t v) {
    return put(b, &v, 8);
}

static sp_err put_str(bytes *b, const char *p, uint64_t n) {
    if (n > SIZE_MAX)
        return SP_ERR_NOMEM;
    sp_err err = put_u64(b, n);
    return err ? err : put(b, p, (size_t)n);
}

sp_err sp_gguf_writer_create(sp_gguf_writer **out) {
    sp_gguf_writer *w = calloc(1, sizeof *w);
    if (!w)
        return SP_ERR_NOMEM;
    *out = w;
    return SP_OK;
}

void sp_gguf_writer_destroy(sp_gguf_writer *w) {
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].payload.p);
    }
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

static wkv *find_kv(sp_gguf_writer *w, const char *key, size_t n) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (w->kv[i].key_len == n && memcmp(w->kv[i].key, key, n) == 0)
            return &w->kv[i];
    return NULL;
}

/* Stores key = payload (taking ownership of payload on success; the caller frees it on
 * failure). */
static sp_err set_kv(sp_gguf_writer *w, const char *key, size_t key_len, sp_gguf_type type,
                     bytes *payload) {
    wkv *kv = find_kv(w, key, key_len);
    if (kv) {
        free(kv->payload.p);
        kv->type = type;
        kv->payload = *payload;
        return SP_OK;
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *p = realloc(w->kv, cap * sizeof *p);
        if (!p)
            return SP_ERR_NOMEM;
        w->kv = p;
        w->cap_kv = cap;
    }
    char *k = malloc(key_len + 1);
    if (!k)
        return SP_ERR_NOMEM;
    memcpy(k, key, key_len);
    k[key_len] = '\0';
    w->kv[w->n_kv++] = (wkv){k, key_len, type, *payload};
    return SP_OK;
}

static sp_err set_payload(sp_gguf_writer *w, const char *key, sp_gguf_type type, const void *p,
                          size_t n) {
    if (!w || !key)
        return SP_ERR_INVALID;
    bytes b = {0};
    sp_err err = put(&b, p, n);
    if (!err)
        err = set_kv(w, key, strlen(key), type, &b);
    if (err)
        free(b.p);
    return err;
}

sp_err sp_gguf_writer_set_u32(sp_gguf_writer *w, const char *key, uint32_t v) {
    return set_payload(w, key, SP_GGUF_UINT32, &v, 4);
}

sp_err sp_gguf_writer_set_i32(sp_gguf_writer *w, const char *key, int32_t v) {
    return set_payload(w, key, SP_GGUF_INT32, &v, 4);
}

sp_err sp_gguf_writer_set_u64(sp_gguf_writer *w, const char *key, uint64_t v) {
    return set_payload(w, key, SP_GGUF_UINT64, &v, 8);
}

sp_err sp_gguf_writer_set_f32(sp_gguf_writer *w, const char *key, float v) {
    return set_payload(w, key, SP_GGUF_FLOAT32, &v, 4);
}

sp_err sp_gguf_writer_set_bool(sp_gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    return set_payload(w, key, SP_GGUF_BOOL, &b, 1);
}

sp_err sp_gguf_writer_set_str(sp_gguf_writer *w, const char *key, const char *v) {
    if (!v)
        return SP_ERR_INVALID;
    sp_str s = {v, strlen(v)};
    return sp_gguf_writer_set_raw(w, key, SP_GGUF_STRING, &s);
}

sp_err sp_gguf_writer_set_raw(sp_gguf_writer *w, const char *key, sp_gguf_type type,
                              const void *value) {
    if (!w || !key || !value || (unsigned)type >= SP_GGUF_TYPE__COUNT || type == SP_GGUF_ARRAY)
        return SP_ERR_INVALID;
    if (type != SP_GGUF_STRING)
        return set_payload(w, key, type, value, sp_gguf_type_size(type));
    const sp_str *s = value;
    if (!s->ptr && s->len)
        return SP_ERR_INVALID;
    bytes b = {0};
    sp_err err = put_str(&b, s->ptr, s->len);
    if (!err)
        err = set_kv(w, key, strlen(key), SP_GGUF_STRING, &b);
    if (err)
        free(b.p);
    return err;
}

sp_err sp_gguf_writer_set_arr(sp_gguf_writer *w, const char *key, sp_gguf_type elem,
                              const void *elems, uint64_t n) {
    if (!w || !key || (unsigned)elem >= SP_GGUF_TYPE__COUNT || elem == SP_GGUF_ARRAY ||
        (n && !elems))
        return SP_ERR_INVALID;
    bytes b = {0};
    sp_err err = put_u32(&b, (uint32_t)elem);
    if (!err)
        err = put_u64(&b, n);
    if (!err && elem == SP_GGUF_STRING) {
        const sp_str *s = elems;
        for (uint64_t i = 0; i < n && !err; i++)
            err = (!s[i].ptr && s[i].len) ? SP_ERR_INVALID : put_str(&b, s[i].ptr, s[i].len);
    } else if (!err) {
        uint64_t len;
        if (!sp_mul_u64(n, sp_gguf_type_size(elem), &len) || len > SIZE_MAX)
            err = SP_ERR_RANGE;
        else
            err = put(&b, elems, (size_t)len);
    }
    if (!err)
        err = set_kv(w, key, strlen(key), SP_GGUF_ARRAY, &b);
    if (err)
        free(b.p);
    return err;
}

sp_err sp_gguf_writer_copy_kv(sp_gguf_writer *w, const sp_gguf *g,
                              bool (*skip)(sp_str key, void *ctx), void *ctx) {
    if (!w || !g)
        return SP_ERR_INVALID;
    for (uint64_t i = 0; i < sp_gguf_n_kv(g); i++) {
        const sp_gguf_kv *kv = sp_gguf_kv_at(g, i);
        if (skip && skip(kv->key, ctx))
            continue;
        uint64_t n = sp__gguf_value_bytes(g, kv);
        bytes b = {0};
        sp_err err = SP_OK;
        if (kv->type == SP_GGUF_ARRAY) {
            err = put_u32(&b, (uint32_t)kv->arr_type);
            if (!err)
                err = put_u64(&b, kv->arr_n);
        }
        if (!err)
            err = put(&b, kv->value, (size_t)n); // n lies inside the parsed image
        if (!err)
            err = set_kv(w, kv->key.ptr, (size_t)kv->key.len, kv->type, &b);
        if (err) {
            free(b.p);
            return err;
        }
    }
    return SP_OK;
}

sp_err sp_gguf_writer_add_tensor(sp_gguf_writer *w, const char *name, sp_dtype type,
                                 uint32_t n_dims, const int64_t *ne, const void *data,
                                 uint64_t n_bytes) {
    if (!w || !name || !ne || n_dims < 1 || n_dims > SP_GGUF_MAX_DIMS || (n_bytes && !data))
        return SP_ERR_INVALID;
    const sp_dtype_info *info = sp_dtype_get((uint32_t)type);
    if (!info)
        return SP_ERR_INVALID;
    uint64_t rows = 1, row_bytes, size;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1)
            return SP_ERR_INVALID;
        if (d > 0 && !sp_mul_u64(rows, (uint64_t)ne[d], &rows))
            return SP_ERR_RANGE;
    }
    sp_err err = sp_dtype_row_bytes((uint32_t)type, (uint64_t)ne[0], &row_bytes);
    if (err)
        return err;
    if (!sp_mul_u64(row_bytes, rows, &size))
        return SP_ERR_RANGE;
    if (size != n_bytes)
        return SP_ERR_INVALID;
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return SP_ERR_INVALID;
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 16;
        wtensor *p = realloc(w->t, cap * sizeof *p);
        if (!p)
            return SP_ERR_NOMEM;
        w->t = p;
        w->cap_t = cap;
    }
    char *nm = strdup(name);
    if (!nm)
        return SP_ERR_NOMEM;
    wtensor *t = &w->t[w->n_t++];
    *t = (wtensor){.name = nm, .type = type, .n_dims = n_dims, .data = data, .n_bytes = n_bytes};
    for (uint32_t d = 0; d < SP_GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    return SP_OK;
}

sp_err sp_gguf_writer_set_alignment(sp_gguf_writer *w, uint32_t alignment) {
    if (!w || alignment == 0 || (alignment & (alignment - 1)) != 0)
        return SP_ERR_INVALID;
    return sp_gguf_writer_set_u32(w, "general.alignment", alignment);
}

/* ---- serialization --------------------------------------------------------------------- */

static sp_err alignment_of(sp_gguf_writer *w, uint64_t *out) {
    const wkv *kv = find_kv(w, "general.alignment", strlen("general.alignment"));
    if (!kv) {
        *out = SP_GGUF_DEFAULT_ALIGNMENT;
        return SP_OK;
    }
    uint32_t a;
    if (kv->type != SP_GGUF_UINT32 || kv->payload.n != 4)
        return SP_ERR_INVALID;
    memcpy(&a, kv->payload.p, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return SP_ERR_INVALID;
    *out = a;
    return SP_OK;
}

static sp_err pad_to(bytes *b, uint64_t align) {
    static const uint8_t zeros[256];
    while (b->n % align) {
        size_t n = (size_t)SP_MIN(align - b->n % align, sizeof zeros);
        sp_err err = put(b, zeros, n);
        if (err)
            return err;
    }
    return SP_OK;
}

/* Everything before the data section (header, metadata, tensor infos, padding), and the size
 * of the data section. */
static sp_err build_meta(sp_gguf_writer *w, bytes *b, uint64_t *align, uint64_t *data_bytes) {
    sp_err err = alignment_of(w, align);
    if (err)
        return err;
    uint64_t offset = 0;
    if ((err = put(b, "GGUF", 4)) || (err = put_u32(b, 3)) || (err = put_u64(b, w->n_t)) ||
        (err = put_u64(b, w->n_kv)))
        return err;
    for (size_t i = 0; i < w->n_kv; i++) {
        const wkv *kv = &w->kv[i];
        if ((err = put_str(b, kv->key, kv->key_len)) || (err = put_u32(b, (uint32_t)kv->type)) ||
            (err = put(b, kv->payload.p, kv->payload.n)))
            return err;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        if ((err = put_str(b, t->name, strlen(t->name))) || (err = put_u32(b, t->n_dims)))
            return err;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if ((err = put_u64(b, (uint64_t)t->ne[d])))
                return err;
        if ((err = put_u32(b, (uint32_t)t->type)) || (err = put_u64(b, offset)))
            return err;
        if (!sp_add_u64(offset, t->n_bytes, &offset) || !sp_align_up_u64(offset, *align, &offset))
            return SP_ERR_RANGE;
    }
    if ((err = pad_to(b, *align)))
        return err;
    *data_bytes = offset;
    return SP_OK;
}

sp_err sp_gguf_writer_to_buffer(sp_gguf_writer *w, uint8_t **out, size_t *out_len) {
    if (!w || !out || !out_len)
        return SP_ERR_INVALID;
    bytes b = {0};
    uint64_t align, data_bytes, total;
    sp_err err = build_meta(w, &b, &align, &data_bytes);
    if (err)
        goto fail;
    if (!sp_add_u64(b.n, data_bytes, &total) || total > SIZE_MAX) {
        err = SP_ERR_RANGE;
        goto fail;
    }
    if (total > b.cap) { // one allocation for the whole image
        uint8_t *p = realloc(b.p, (size_t)total);
        if (!p) {
            err = SP_ERR_NOMEM;
            goto fail;
        }
        b.p = p;
        b.cap = (size_t)total;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        if ((err = put(&b, w->t[i].data, (size_t)w->t[i].n_bytes)) || (err = pad_to(&b, align)))
            goto fail;
    }
    *out = b.p;
    *out_len = b.n;
    return SP_OK;
fail:
    free(b.p);
    return err;
}

static bool write_all(int fd, const void *p, size_t n) {
    const uint8_t *q = p;
    while (n) {
        ssize_t k = write(fd, q, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        q += k;
        n -= (size_t)k;
    }
    return true;
}

sp_err sp_gguf_writer_save(sp_gguf_writer *w, const char *path, sp_diag *diag) {
    static const uint8_t zeros[256];
    sp_diag_clear(diag);
    if (!w || !path)
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "no writer or path");
    bytes b = {0};
    uint64_t align, data_bytes, pos;
    char *tmp = NULL;
    int fd = -1;
    bool created = false;
    sp_err err = build_meta(w, &b, &align, &data_bytes);
    if (err) {
        sp_diag_set(diag, err, UINT64_MAX, "cannot lay out %s: %s", path, sp_err_str(err));
        goto fail;
    }
    size_t n = strlen(path) + sizeof ".tmp.XXXXXX";
    if (!(tmp = malloc(n))) {
        err = sp_diag_set(diag, SP_ERR_NOMEM, UINT64_MAX, "out of memory");
        goto fail;
    }
    snprintf(tmp, n, "%s.tmp.XXXXXX", path);
    if ((fd = mkstemp(tmp)) < 0) {
        err =
            sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "cannot create %s: %s", tmp, strerror(errno));
        goto fail;
    }
    created = true;
    if (fchmod(fd, 0644) != 0 || !write_all(fd, b.p, b.n))
        goto io_fail;
    pos = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        if (!write_all(fd, w->t[i].data, (size_t)w->t[i].n_bytes))
            goto io_fail;
        pos += w->t[i].n_bytes;
        while (pos % align) {
            size_t k = (size_t)SP_MIN(align - pos % align, sizeof zeros);
            if (!write_all(fd, zeros, k))
                goto io_fail;
            pos += k;
        }
    }
    if (fsync(fd) != 0)
        goto io_fail;
    if (close(fd) != 0) {
        fd = -1;
        goto io_fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        err = sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "cannot rename %s to %s: %s", tmp, path,
                          strerror(errno));
        goto fail;
    }
    free(tmp);
    free(b.p);
    return SP_OK;
io_fail:
    err = sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "cannot write %s: %s", tmp, strerror(errno));
fail:
    if (fd >= 0)
        close(fd);
    if (created)
        unlink(tmp);
    free(tmp);
    free(b.p);
    return err;
}
