/* GGUF writer round trips: every metadata type, arrays, tensors of several types with
 * alignment 32 and 64, written to memory and to disk and read back with the reader. */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/util.h"
#include "gguf/gguf.h"

typedef struct scalar {
    const char *key;
    sp_gguf_type type;
    uint8_t raw[8];
} scalar;

static scalar scalars[12];
static size_t n_scalars;

static void add_scalar(const char *key, sp_gguf_type type, const void *v) {
    scalar *s = &scalars[n_scalars++];
    s->key = key;
    s->type = type;
    memcpy(s->raw, v, sp_gguf_type_size(type));
}

static void init_scalars(void) {
    n_scalars = 0;
    uint8_t u8 = 0xfe;
    int8_t i8 = -128;
    uint16_t u16 = 0xbeef;
    int16_t i16 = -32768;
    uint32_t u32 = 0xdeadbeef;
    int32_t i32 = INT32_MIN;
    float f32 = -1.5e-7f;
    uint8_t b = 1;
    uint64_t u64 = UINT64_MAX;
    int64_t i64 = INT64_MIN;
    double f64 = 3.141592653589793;
    add_scalar("t.u8", SP_GGUF_UINT8, &u8);
    add_scalar("t.i8", SP_GGUF_INT8, &i8);
    add_scalar("t.u16", SP_GGUF_UINT16, &u16);
    add_scalar("t.i16", SP_GGUF_INT16, &i16);
    add_scalar("t.u32", SP_GGUF_UINT32, &u32);
    add_scalar("t.i32", SP_GGUF_INT32, &i32);
    add_scalar("t.f32", SP_GGUF_FLOAT32, &f32);
    add_scalar("t.bool", SP_GGUF_BOOL, &b);
    add_scalar("t.u64", SP_GGUF_UINT64, &u64);
    add_scalar("t.i64", SP_GGUF_INT64, &i64);
    add_scalar("t.f64", SP_GGUF_FLOAT64, &f64);
}

static const sp_gguf_type arr_types[] = {
    SP_GGUF_UINT8,   SP_GGUF_INT8, SP_GGUF_UINT16, SP_GGUF_INT16, SP_GGUF_UINT32,  SP_GGUF_INT32,
    SP_GGUF_FLOAT32, SP_GGUF_BOOL, SP_GGUF_UINT64, SP_GGUF_INT64, SP_GGUF_FLOAT64,
};

// Strings with a NUL, multi-byte UTF-8, an empty one and a long one.
static const char long_str[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                               "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd";
static const sp_str strs[] = {
    {"<s>", 3}, {"", 0}, {"a\0b", 3}, {"\xe2\x96\x81the", 6}, {long_str, sizeof long_str - 1},
};

typedef struct test_tensor {
    const char *name;
    sp_dtype type;
    uint32_t n_dims;
    int64_t ne[4];
} test_tensor;

static const test_tensor tensors[] = {
    {"odd.f32", SP_DTYPE_F32, 1, {7, 1, 1, 1}},    {"mat.f16", SP_DTYPE_F16, 2, {3, 5, 1, 1}},
    {"mat.q8_0", SP_DTYPE_Q8_0, 2, {64, 3, 1, 1}}, {"mat.q4_k", SP_DTYPE_Q4_K, 2, {256, 2, 1, 1}},
    {"cube.i8", SP_DTYPE_I8, 4, {5, 2, 3, 2}},     {"mat.q6_k", SP_DTYPE_Q6_K, 3, {256, 1, 2, 1}},
};

static uint64_t tensor_bytes(const test_tensor *t) {
    const sp_dtype_info *info = sp_dtype_get(t->type);
    uint64_t n = (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    return n / (uint64_t)info->block_size * (uint64_t)info->type_size;
}

typedef struct fixture {
    sp_gguf_writer *w;
    uint8_t *data[SP_ARRAY_LEN(tensors)];
} fixture;

static void build(fixture *f, uint32_t alignment) {
    init_scalars();
    assert_int_equal(sp_gguf_writer_create(&f->w), SP_OK);
    sp_gguf_writer *w = f->w;
    assert_int_equal(sp_gguf_writer_set_str(w, "general.architecture", "test"), SP_OK);
    for (size_t i = 0; i < n_scalars; i++)
        assert_int_equal(sp_gguf_writer_set_raw(w, scalars[i].key, scalars[i].type, scalars[i].raw),
                         SP_OK);
    sp_str s = {"raw \xc3\xa9", 6};
    assert_int_equal(sp_gguf_writer_set_raw(w, "t.str", SP_GGUF_STRING, &s), SP_OK);
    assert_int_equal(sp_gguf_writer_set_u32(w, "s.u32", 42), SP_OK);
    assert_int_equal(sp_gguf_writer_set_i32(w, "s.i32", -42), SP_OK);
    assert_int_equal(sp_gguf_writer_set_u64(w, "s.u64", 1ull << 40), SP_OK);
    assert_int_equal(sp_gguf_writer_set_f32(w, "s.f32", 0.25f), SP_OK);
    assert_int_equal(sp_gguf_writer_set_bool(w, "s.bool", false), SP_OK);
    // Replaced values keep their place and take the new type.
    assert_int_equal(sp_gguf_writer_set_str(w, "s.replaced", "first"), SP_OK);
    assert_int_equal(sp_gguf_writer_set_i32(w, "s.replaced", 7), SP_OK);
    for (size_t k = 0; k < SP_ARRAY_LEN(arr_types); k++) {
        sp_gguf_type t = arr_types[k];
        uint8_t buf[8 * 9];
        uint64_t seed = 77 + k;
        for (size_t i = 0; i < sizeof buf; i++)
            buf[i] = (uint8_t)sp_test_rand(&seed);
        if (t == SP_GGUF_BOOL)
            for (size_t i = 0; i < sizeof buf; i++)
                buf[i] &= 1;
        if (t == SP_GGUF_FLOAT32 || t == SP_GGUF_FLOAT64) // keep them finite
            for (size_t i = 0; i < 9; i++) {
                float fv = sp_test_randf(&seed);
                double dv = sp_test_randn(&seed);
                if (t == SP_GGUF_FLOAT32)
                    memcpy(buf + 4 * i, &fv, 4);
                else
                    memcpy(buf + 8 * i, &dv, 8);
            }
        char key[32];
        snprintf(key, sizeof key, "a.%s", sp_gguf_type_name(t));
        assert_int_equal(sp_gguf_writer_set_arr(w, key, t, buf, 9), SP_OK);
    }
    assert_int_equal(
        sp_gguf_writer_set_arr(w, "a.string", SP_GGUF_STRING, strs, SP_ARRAY_LEN(strs)), SP_OK);
    assert_int_equal(sp_gguf_writer_set_arr(w, "a.empty", SP_GGUF_UINT32, NULL, 0), SP_OK);
    assert_int_equal(sp_gguf_writer_set_arr(w, "a.empty_str", SP_GGUF_STRING, NULL, 0), SP_OK);
    if (alignment)
        assert_int_equal(sp_gguf_writer_set_alignment(w, alignment), SP_OK);
    uint64_t seed = 1234;
    for (size_t i = 0; i < SP_ARRAY_LEN(tensors); i++) {
        const test_tensor *t = &tensors[i];
        uint64_t n = tensor_bytes(t);
        f->data[i] = malloc(n);
        for (uint64_t k = 0; k < n; k++)
            f->data[i][k] = (uint8_t)sp_test_rand(&seed);
        assert_int_equal(
            sp_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, f->data[i], n), SP_OK);
    }
}

static void teardown(fixture *f) {
    sp_gguf_writer_destroy(f->w);
    for (size_t i = 0; i < SP_ARRAY_LEN(tensors); i++)
        free(f->data[i]);
}

/* Reads back everything build() wrote. */
static void check(const sp_gguf *g, const fixture *f, uint64_t alignment, bool align_kv) {
    sp_diag d;
    assert_int_equal(sp_gguf_version(g), 3);
    assert_int_equal(sp_gguf_alignment(g), alignment);
    // architecture, 11 raw scalars, t.str, 5 setters, s.replaced, 11 + 3 arrays, alignment
    uint64_t n_kv = 1 + n_scalars + 1 + 5 + 1 + SP_ARRAY_LEN(arr_types) + 3 + align_kv;
    assert_int_equal(sp_gguf_n_kv(g), n_kv);
    assert_true(sp_str_eq(sp_gguf_kv_at(g, 0)->key, "general.architecture"));
    for (size_t i = 0; i < n_scalars; i++) {
        const sp_gguf_kv *kv = sp_gguf_kv_at(g, 1 + i);
        assert_true(sp_str_eq(kv->key, scalars[i].key));
        assert_int_equal(kv->type, scalars[i].type);
        assert_memory_equal(kv->value, scalars[i].raw, sp_gguf_type_size(kv->type));
    }
    int64_t iv;
    double fv;
    bool bv;
    sp_str sv;
    assert_int_equal(sp_gguf_get_int(g, "t.i64", &iv, &d), SP_OK);
    assert_true(iv == INT64_MIN);
    assert_int_equal(sp_gguf_get_int(g, "t.u64", &iv, &d), SP_ERR_FORMAT); // > INT64_MAX
    assert_int_equal(d.offset, sp_gguf_find(g, "t.u64")->offset);
    assert_int_equal(sp_gguf_get_float(g, "t.u64", &fv, &d), SP_OK);
    assert_float_equal(fv, 18446744073709551615.0, 0.0);
    assert_int_equal(sp_gguf_get_int(g, "t.u8", &iv, &d), SP_OK);
    assert_int_equal(iv, 0xfe);
    assert_int_equal(sp_gguf_get_int(g, "t.i8", &iv, &d), SP_OK);
    assert_int_equal(iv, -128);
    assert_int_equal(sp_gguf_get_int(g, "t.u16", &iv, &d), SP_OK);
    assert_int_equal(iv, 0xbeef);
    assert_int_equal(sp_gguf_get_int(g, "t.i16", &iv, &d), SP_OK);
    assert_int_equal(iv, -32768);
    assert_int_equal(sp_gguf_get_int(g, "t.u32", &iv, &d), SP_OK);
    assert_int_equal(iv, 0xdeadbeef);
    assert_int_equal(sp_gguf_get_int(g, "t.i32", &iv, &d), SP_OK);
    assert_true(iv == INT32_MIN);
    assert_int_equal(sp_gguf_get_int(g, "t.bool", &iv, &d), SP_OK);
    assert_int_equal(iv, 1);
    assert_int_equal(sp_gguf_get_float(g, "t.bool", &fv, &d), SP_ERR_FORMAT);
    assert_int_equal(sp_gguf_get_float(g, "t.f32", &fv, &d), SP_OK);
    assert_true(fv == (double)-1.5e-7f);
    assert_int_equal(sp_gguf_get_float(g, "t.f64", &fv, &d), SP_OK);
    assert_true(fv == 3.141592653589793);
    assert_int_equal(sp_gguf_get_str(g, "t.str", &sv, &d), SP_OK);
    assert_true(sv.len == 6 && memcmp(sv.ptr, "raw \xc3\xa9", 6) == 0);
    assert_int_equal(sp_gguf_get_int(g, "s.u32", &iv, &d), SP_OK);
    assert_int_equal(iv, 42);
    assert_int_equal(sp_gguf_get_int(g, "s.i32", &iv, &d), SP_OK);
    assert_int_equal(iv, -42);
    assert_int_equal(sp_gguf_get_int(g, "s.u64", &iv, &d), SP_OK);
    assert_int_equal(iv, 1ll << 40);
    assert_int_equal(sp_gguf_get_float(g, "s.f32", &fv, &d), SP_OK);
    assert_true(fv == 0.25);
    assert_int_equal(sp_gguf_get_bool(g, "s.bool", &bv, &d), SP_OK);
    assert_false(bv);
    assert_int_equal(sp_gguf_get_bool(g, "t.bool", &bv, &d), SP_OK);
    assert_true(bv);
    const sp_gguf_kv *rep = sp_gguf_kv_at(g, 1 + n_scalars + 1 + 5);
    assert_true(sp_str_eq(rep->key, "s.replaced"));
    assert_int_equal(rep->type, SP_GGUF_INT32);
    assert_int_equal(sp_gguf_get_int(g, "s.replaced", &iv, &d), SP_OK);
    assert_int_equal(iv, 7);

    for (size_t k = 0; k < SP_ARRAY_LEN(arr_types); k++) {
        sp_gguf_type t = arr_types[k];
        char key[32];
        snprintf(key, sizeof key, "a.%s", sp_gguf_type_name(t));
        const sp_gguf_kv *kv = sp_gguf_find(g, key);
        assert_non_null(kv);
        assert_int_equal(kv->type, SP_GGUF_ARRAY);
        assert_int_equal(kv->arr_type, t);
        assert_int_equal(kv->arr_n, 9);
        size_t es = sp_gguf_type_size(t);
        for (uint64_t i = 0; i < 9; i++) {
            const uint8_t *p = kv->value + i * es;
            int64_t want_i = 0;
            double want_f = 0;
            bool is_float = t == SP_GGUF_FLOAT32 || t == SP_GGUF_FLOAT64;
            switch (t) {
            case SP_GGUF_UINT8:
            case SP_GGUF_BOOL:
                want_i = p[0];
                break;
            case SP_GGUF_INT8:
                want_i = (int8_t)p[0];
                break;
            case SP_GGUF_UINT16:
                want_i = p[0] | p[1] << 8;
                break;
            case SP_GGUF_INT16:
                want_i = (int16_t)(uint16_t)(p[0] | p[1] << 8);
                break;
            case SP_GGUF_UINT32: {
                uint32_t v;
                memcpy(&v, p, 4);
                want_i = v;
                break;
            }
            case SP_GGUF_INT32: {
                int32_t v;
                memcpy(&v, p, 4);
                want_i = v;
                break;
            }
            case SP_GGUF_INT64:
                memcpy(&want_i, p, 8);
                break;
            case SP_GGUF_FLOAT32: {
                float v;
                memcpy(&v, p, 4);
                want_f = v;
                break;
            }
            case SP_GGUF_FLOAT64:
                memcpy(&want_f, p, 8);
                break;
            default:
                break;
            }
            if (is_float) {
                assert_int_equal(sp_gguf_arr_float(kv, i, &fv), SP_OK);
                assert_true(fv == want_f);
                assert_int_equal(sp_gguf_arr_int(kv, i, &iv), SP_ERR_FORMAT);
            } else if (t == SP_GGUF_UINT64) {
                uint64_t v;
                memcpy(&v, p, 8);
                sp_err e = sp_gguf_arr_int(kv, i, &iv);
                if (v > INT64_MAX)
                    assert_int_equal(e, SP_ERR_FORMAT);
                else
                    assert_true(e == SP_OK && (uint64_t)iv == v);
            } else {
                assert_int_equal(sp_gguf_arr_int(kv, i, &iv), SP_OK);
                assert_true(iv == want_i);
            }
        }
        assert_int_equal(sp_gguf_arr_float(kv, 9, &fv), SP_ERR_RANGE);
    }
    // The random array bytes themselves, compared with a fresh copy of the generator.
    for (size_t k = 0; k < SP_ARRAY_LEN(arr_types); k++) {
        sp_gguf_type t = arr_types[k];
        if (t == SP_GGUF_FLOAT32 || t == SP_GGUF_FLOAT64 || t == SP_GGUF_BOOL)
            continue;
        char key[32];
        snprintf(key, sizeof key, "a.%s", sp_gguf_type_name(t));
        uint8_t buf[8 * 9];
        uint64_t seed = 77 + k;
        for (size_t i = 0; i < sizeof buf; i++)
            buf[i] = (uint8_t)sp_test_rand(&seed);
        assert_memory_equal(sp_gguf_find(g, key)->value, buf, 9 * sp_gguf_type_size(t));
    }
    const sp_gguf_kv *sa = sp_gguf_find(g, "a.string");
    assert_int_equal(sa->arr_n, SP_ARRAY_LEN(strs));
    for (uint64_t i = 0; i < SP_ARRAY_LEN(strs); i++) {
        assert_int_equal(sp_gguf_arr_str(g, sa, i, &sv), SP_OK);
        assert_int_equal(sv.len, strs[i].len);
        assert_memory_equal(sv.ptr, strs[i].ptr, sv.len);
    }
    assert_int_equal(sp_gguf_find(g, "a.empty")->arr_n, 0);
    assert_int_equal(sp_gguf_arr_int(sp_gguf_find(g, "a.empty"), 0, &iv), SP_ERR_RANGE);
    assert_int_equal(sp_gguf_arr_str(g, sp_gguf_find(g, "a.empty_str"), 0, &sv), SP_ERR_RANGE);

    assert_int_equal(sp_gguf_n_tensors(g), SP_ARRAY_LEN(tensors));
    assert_int_equal(sp_gguf_data_offset(g) % alignment, 0);
    uint64_t expect_offset = 0;
    for (size_t i = 0; i < SP_ARRAY_LEN(tensors); i++) {
        const test_tensor *want = &tensors[i];
        const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
        assert_true(sp_str_eq(t->name, want->name));
        assert_ptr_equal(sp_gguf_find_tensor(g, want->name), t);
        assert_int_equal(t->type, want->type);
        assert_int_equal(t->n_dims, want->n_dims);
        for (int d2 = 0; d2 < 4; d2++)
            assert_int_equal(t->ne[d2], want->ne[d2]);
        assert_int_equal(t->n_bytes, tensor_bytes(want));
        assert_int_equal(t->offset, expect_offset);
        assert_int_equal(t->offset % alignment, 0);
        assert_memory_equal(t->data, f->data[i], t->n_bytes);
        expect_offset = (t->offset + t->n_bytes + alignment - 1) / alignment * alignment;
    }
    assert_int_equal(sp_gguf_file_size(g), sp_gguf_data_offset(g) + expect_offset);
}

static void round_trip(uint32_t alignment) {
    fixture f = {0};
    build(&f, alignment);
    uint64_t align = alignment ? alignment : SP_GGUF_DEFAULT_ALIGNMENT;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(sp_gguf_writer_to_buffer(f.w, &buf, &len), SP_OK);
    assert_memory_equal(buf, "GGUF\x03\0\0\0", 8);
    sp_gguf *g = NULL;
    sp_diag d;
    sp_err err = sp_gguf_parse(buf, len, &g, &d);
    if (err)
        fail_msg("%s at %llu", d.msg, (unsigned long long)d.offset);
    check(g, &f, align, alignment != 0);
    sp_gguf_close(g);

    // The same through a file; the bytes are identical and no temporary file is left.
    char path[512];
    snprintf(path, sizeof path, "%s/rt%u.gguf", sp_test_tmpdir(), alignment);
    assert_int_equal(sp_gguf_writer_save(f.w, path, &d), SP_OK);
    size_t flen;
    char *file = sp_test_read_file(path, &flen);
    assert_int_equal(flen, len);
    assert_memory_equal(file, buf, len);
    free(file);
    assert_int_equal(sp_gguf_open(path, &g, &d), SP_OK);
    check(g, &f, align, alignment != 0);
    sp_gguf_close(g);
    DIR *dp = opendir(sp_test_tmpdir());
    struct dirent *e;
    while ((e = readdir(dp)))
        assert_null(strstr(e->d_name, ".tmp."));
    closedir(dp);
    free(buf);
    teardown(&f);
}

static void test_round_trip_default(void **state) {
    (void)state;
    round_trip(0);
}
static void test_round_trip_32(void **state) {
    (void)state;
    round_trip(32);
}
static void test_round_trip_64(void **state) {
    (void)state;
    round_trip(64);
}

static bool skip_name(sp_str key, void *ctx) {
    (*(int *)ctx)++;
    return sp_str_eq(key, "general.name");
}

/* Copies the vocabulary of a real file into a new one, byte for byte. */
static void test_copy_kv(void **state) {
    (void)state;
    char *path = sp_test_shared("models/random/qwen2-gpt2vocab-f32.gguf");
    sp_gguf *src = NULL, *g = NULL;
    sp_diag d;
    assert_int_equal(sp_gguf_open(path, &src, &d), SP_OK);
    sp_gguf_writer *w;
    assert_int_equal(sp_gguf_writer_create(&w), SP_OK);
    int calls = 0;
    assert_int_equal(sp_gguf_writer_copy_kv(w, src, skip_name, &calls), SP_OK);
    assert_int_equal(calls, (int)sp_gguf_n_kv(src));
    uint8_t *buf;
    size_t len;
    assert_int_equal(sp_gguf_writer_to_buffer(w, &buf, &len), SP_OK);
    assert_int_equal(sp_gguf_parse(buf, len, &g, &d), SP_OK);
    assert_int_equal(sp_gguf_n_kv(g), sp_gguf_n_kv(src) - 1);
    assert_null(sp_gguf_find(g, "general.name"));
    for (uint64_t i = 0, j = 0; i < sp_gguf_n_kv(src); i++) {
        const sp_gguf_kv *a = sp_gguf_kv_at(src, i);
        if (sp_str_eq(a->key, "general.name"))
            continue;
        const sp_gguf_kv *b = sp_gguf_kv_at(g, j++);
        assert_int_equal(a->key.len, b->key.len);
        assert_memory_equal(a->key.ptr, b->key.ptr, a->key.len);
        assert_int_equal(a->type, b->type);
        if (a->type == SP_GGUF_ARRAY) {
            assert_int_equal(a->arr_type, b->arr_type);
            assert_int_equal(a->arr_n, b->arr_n);
            for (uint64_t k = 0; a->arr_type == SP_GGUF_STRING && k < a->arr_n; k++) {
                sp_str x, y;
                assert_int_equal(sp_gguf_arr_str(src, a, k, &x), SP_OK);
                assert_int_equal(sp_gguf_arr_str(g, b, k, &y), SP_OK);
                assert_int_equal(x.len, y.len);
                assert_memory_equal(x.ptr, y.ptr, x.len);
            }
            if (a->arr_type != SP_GGUF_STRING)
                assert_memory_equal(a->value, b->value, a->arr_n * sp_gguf_type_size(a->arr_type));
        } else if (a->type == SP_GGUF_STRING) {
            sp_str x, y;
            char key[128];
            snprintf(key, sizeof key, "%.*s", (int)a->key.len, a->key.ptr);
            assert_int_equal(sp_gguf_get_str(src, key, &x, &d), SP_OK);
            assert_int_equal(sp_gguf_get_str(g, key, &y, &d), SP_OK);
            assert_int_equal(x.len, y.len);
            assert_memory_equal(x.ptr, y.ptr, x.len);
        } else {
            assert_memory_equal(a->value, b->value, sp_gguf_type_size(a->type));
        }
    }
    sp_gguf_close(g);
    free(buf);
    sp_gguf_writer_destroy(w);
    sp_gguf_close(src);
    free(path);
}

static void test_writer_rejects(void **state) {
    (void)state;
    sp_gguf_writer *w;
    assert_int_equal(sp_gguf_writer_create(&w), SP_OK);
    uint8_t data[34 * 2] = {0};
    const int64_t ne[4] = {32, 2, 1, 1}, bad0[2] = {31, 2}, zero[2] = {32, 0};
    assert_int_equal(sp_gguf_writer_add_tensor(w, "q", SP_DTYPE_Q8_0, 2, ne, data, 68), SP_OK);
    assert_int_equal(sp_gguf_writer_add_tensor(w, "q", SP_DTYPE_Q8_0, 2, ne, data, 68),
                     SP_ERR_INVALID); // duplicate
    assert_int_equal(sp_gguf_writer_add_tensor(w, "r", SP_DTYPE_Q8_0, 2, ne, data, 67),
                     SP_ERR_INVALID); // wrong size
    assert_int_equal(sp_gguf_writer_add_tensor(w, "r", SP_DTYPE_Q8_0, 2, bad0, data, 68),
                     SP_ERR_INVALID); // not whole blocks
    assert_int_equal(sp_gguf_writer_add_tensor(w, "r", SP_DTYPE_Q8_0, 2, zero, data, 0),
                     SP_ERR_INVALID);
    assert_int_equal(sp_gguf_writer_add_tensor(w, "r", SP_DTYPE_Q8_0, 0, ne, data, 68),
                     SP_ERR_INVALID);
    assert_int_equal(sp_gguf_writer_add_tensor(w, "r", SP_DTYPE_Q8_0, 5, ne, data, 68),
                     SP_ERR_INVALID);
    assert_int_equal(sp_gguf_writer_add_tensor(w, "r", (sp_dtype)4, 1, ne, data, 68),
                     SP_ERR_INVALID); // removed type id
    assert_int_equal(sp_gguf_writer_set_alignment(w, 0), SP_ERR_INVALID);
    assert_int_equal(sp_gguf_writer_set_alignment(w, 48), SP_ERR_INVALID);
    assert_int_equal(sp_gguf_writer_set_arr(w, "x", SP_GGUF_ARRAY, data, 1), SP_ERR_INVALID);
    assert_int_equal(sp_gguf_writer_set_raw(w, "x", SP_GGUF_ARRAY, data), SP_ERR_INVALID);
    assert_int_equal(sp_gguf_writer_set_raw(w, "x", SP_GGUF_TYPE__COUNT, data), SP_ERR_INVALID);
    // A general.alignment set by hand must still be a u32 power of two.
    assert_int_equal(sp_gguf_writer_set_u32(w, "general.alignment", 24), SP_OK);
    uint8_t *buf;
    size_t len;
    assert_int_equal(sp_gguf_writer_to_buffer(w, &buf, &len), SP_ERR_INVALID);
    assert_int_equal(sp_gguf_writer_set_alignment(w, 16), SP_OK);
    assert_int_equal(sp_gguf_writer_to_buffer(w, &buf, &len), SP_OK);
    free(buf);
    sp_diag d;
    char path[512];
    snprintf(path, sizeof path, "%s/no/such/dir/x.gguf", sp_test_tmpdir());
    assert_int_equal(sp_gguf_writer_save(w, path, &d), SP_ERR_IO);
    assert_true(strstr(d.msg, "No such file or directory") != NULL);
    sp_gguf_writer_destroy(w);
    sp_gguf_writer_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_default), cmocka_unit_test(test_round_trip_32),
        cmocka_unit_test(test_round_trip_64),      cmocka_unit_test(test_copy_kv),
        cmocka_unit_test(test_writer_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
