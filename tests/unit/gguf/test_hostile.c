/* Hostile GGUF images: a small valid file built with the writer, then truncated at every
 * length and patched field by field. Every case must give the expected error code with a
 * message and the offset of the bad field; the images are copied into exactly-sized heap
 * buffers so that the sanitizer build catches any read past the end. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "gguf/gguf.h"

static uint8_t *image;
static size_t image_len;
static sp_gguf *valid; // the valid image parsed, to locate fields

static int setup(void **state) {
    (void)state;
    sp_gguf_writer *w;
    assert_int_equal(sp_gguf_writer_create(&w), SP_OK);
    assert_int_equal(sp_gguf_writer_set_str(w, "general.architecture", "x"), SP_OK);
    assert_int_equal(sp_gguf_writer_set_alignment(w, 32), SP_OK);
    const sp_str toks[3] = {{"<s>", 3}, {"hi", 2}, {"", 0}};
    assert_int_equal(sp_gguf_writer_set_arr(w, "k.tokens", SP_GGUF_STRING, toks, 3), SP_OK);
    const uint32_t nums[4] = {1, 2, 3, 4};
    assert_int_equal(sp_gguf_writer_set_arr(w, "k.nums", SP_GGUF_UINT32, nums, 4), SP_OK);
    assert_int_equal(sp_gguf_writer_set_u32(w, "k.aa", 5), SP_OK);
    assert_int_equal(sp_gguf_writer_set_u32(w, "k.ab", 6), SP_OK);
    static uint8_t a[64], b[68], c[64];
    for (size_t i = 0; i < sizeof b; i++)
        b[i] = (uint8_t)i;
    const int64_t ne_a[2] = {8, 2}, ne_b[2] = {32, 2}, ne_c[1] = {16};
    assert_int_equal(sp_gguf_writer_add_tensor(w, "a", SP_DTYPE_F32, 2, ne_a, a, 64), SP_OK);
    assert_int_equal(sp_gguf_writer_add_tensor(w, "b", SP_DTYPE_Q8_0, 2, ne_b, b, 68), SP_OK);
    // The last tensor fills whole alignment units, so the file ends with its last byte and
    // every shorter length is invalid.
    assert_int_equal(sp_gguf_writer_add_tensor(w, "c", SP_DTYPE_F32, 1, ne_c, c, 64), SP_OK);
    assert_int_equal(sp_gguf_writer_to_buffer(w, &image, &image_len), SP_OK);
    sp_gguf_writer_destroy(w);
    sp_diag d;
    assert_int_equal(sp_gguf_parse(image, image_len, &valid, &d), SP_OK);
    const sp_gguf_tensor *tc = sp_gguf_find_tensor(valid, "c");
    assert_int_equal(sp_gguf_data_offset(valid) + tc->offset + tc->n_bytes, image_len);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    sp_gguf_close(valid);
    free(image);
    return 0;
}

/* ---- locating fields in the valid image ---- */

static uint64_t at(const void *p) {
    return (uint64_t)((const uint8_t *)p - image);
}

static const sp_gguf_kv *kv(const char *key) {
    const sp_gguf_kv *k = sp_gguf_find(valid, key);
    assert_non_null(k);
    return k;
}
static uint64_t key_len_at(const char *key) {
    return at(kv(key)->key.ptr) - 8;
}
static uint64_t type_at(const char *key) {
    return at(kv(key)->key.ptr) + kv(key)->key.len;
}
static uint64_t elem_type_at(const char *key) {
    return type_at(key) + 4;
}
static uint64_t count_at(const char *key) {
    return type_at(key) + 8;
}

static const sp_gguf_tensor *tensor(const char *name) {
    const sp_gguf_tensor *t = sp_gguf_find_tensor(valid, name);
    assert_non_null(t);
    return t;
}
static uint64_t name_len_at(const char *name) {
    return at(tensor(name)->name.ptr) - 8;
}
static uint64_t n_dims_at(const char *name) {
    return at(tensor(name)->name.ptr) + tensor(name)->name.len;
}
static uint64_t ne_at(const char *name, int d) {
    return n_dims_at(name) + 4 + 8 * (uint64_t)d;
}
static uint64_t ttype_at(const char *name) {
    return ne_at(name, (int)tensor(name)->n_dims);
}
static uint64_t toffset_at(const char *name) {
    return ttype_at(name) + 4;
}

/* ---- patching ---- */

typedef struct patch {
    uint64_t offset;
    int width; // 1, 4 or 8 bytes
    uint64_t value;
} patch;

/* Parses the image with up to three patches applied; checks the error, that the message is
 * set and that the diagnostic offset is `want_at`. Returns the diagnostic. */
static sp_diag expect_p(const patch *p, size_t n_p, sp_err want, uint64_t want_at, int line) {
    uint8_t *buf = malloc(image_len);
    assert_non_null(buf);
    memcpy(buf, image, image_len);
    for (size_t i = 0; i < n_p; i++)
        memcpy(buf + p[i].offset, &p[i].value, (size_t)p[i].width);
    sp_gguf *g = NULL;
    sp_diag d;
    sp_err err = sp_gguf_parse(buf, image_len, &g, &d);
    if (err != want || d.offset != want_at || d.msg[0] == '\0')
        fail_msg("line %d: got %s at %llu (\"%s\"), expected %s at %llu", line, sp_err_str(err),
                 (unsigned long long)d.offset, d.msg, sp_err_str(want),
                 (unsigned long long)want_at);
    assert_null(g);
    free(buf);
    return d;
}

#define EXPECT(want, want_at, ...)                                                                 \
    do {                                                                                           \
        const patch ps_[] = {__VA_ARGS__};                                                         \
        expect_p(ps_, SP_ARRAY_LEN(ps_), want, want_at, __LINE__);                                 \
    } while (0)
#define U8(o, v)                                                                                   \
    { (o), 1, (uint64_t)(v) }
#define U32(o, v)                                                                                  \
    { (o), 4, (uint64_t)(v) }
#define U64(o, v)                                                                                  \
    { (o), 8, (uint64_t)(v) }

static void test_truncated_everywhere(void **state) {
    (void)state;
    for (size_t len = 0; len < image_len; len++) {
        uint8_t *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        memcpy(buf, image, len);
        sp_gguf *g = NULL;
        sp_diag d;
        sp_err err = sp_gguf_parse(buf, len, &g, &d);
        if (err == SP_OK)
            fail_msg("a %zu-byte prefix of %zu parsed", len, image_len);
        assert_null(g);
        assert_true(d.msg[0] != '\0');
        assert_true(d.offset <= len);
        free(buf);
    }
}

static void test_header(void **state) {
    (void)state;
    EXPECT(SP_ERR_FORMAT, 0, U8(0, 'X'));
    EXPECT(SP_ERR_FORMAT, 0, U8(3, 'f'));
    sp_diag d;
    d = expect_p((patch[]){U32(4, 1)}, 1, SP_ERR_UNSUPPORTED, 4, __LINE__);
    assert_non_null(strstr(d.msg, "version 1"));
    EXPECT(SP_ERR_UNSUPPORTED, 4, U32(4, 4));
    EXPECT(SP_ERR_UNSUPPORTED, 4, U32(4, 0));
    d = expect_p((patch[]){U32(4, 0x03000000)}, 1, SP_ERR_UNSUPPORTED, 4, __LINE__);
    assert_non_null(strstr(d.msg, "big-endian"));
    // Version 2 has the same layout as 3 and parses.
    uint8_t *buf = malloc(image_len);
    memcpy(buf, image, image_len);
    buf[4] = 2;
    sp_gguf *g = NULL;
    assert_int_equal(sp_gguf_parse(buf, image_len, &g, &d), SP_OK);
    assert_int_equal(sp_gguf_version(g), 2);
    sp_gguf_close(g);
    free(buf);
    // Counts that cannot fit in the file fail before anything is allocated.
    EXPECT(SP_ERR_RANGE, 8, U64(8, 1ull << 60));
    EXPECT(SP_ERR_RANGE, 8, U64(8, UINT64_MAX));
    EXPECT(SP_ERR_RANGE, 16, U64(16, 1ull << 60));
    EXPECT(SP_ERR_RANGE, 16, U64(16, UINT64_MAX));
    EXPECT(SP_ERR_RANGE, 16, U64(16, image_len / 13));
    // Plausible counts one too large run into the following bytes and fail there.
    for (int extra = 1; extra <= 2; extra++) {
        buf = malloc(image_len);
        memcpy(buf, image, image_len);
        buf[8] += (uint8_t)extra;
        assert_int_not_equal(sp_gguf_parse(buf, image_len, &g, &d), SP_OK);
        buf[8] -= (uint8_t)extra;
        buf[16] += (uint8_t)extra;
        assert_int_not_equal(sp_gguf_parse(buf, image_len, &g, &d), SP_OK);
        free(buf);
    }
}

static void test_metadata(void **state) {
    (void)state;
    const char *arch = "general.architecture";
    // Lengths and counts larger than the file.
    EXPECT(SP_ERR_RANGE, key_len_at(arch), U64(key_len_at(arch), 1ull << 62));
    EXPECT(SP_ERR_RANGE, key_len_at(arch), U64(key_len_at(arch), UINT64_MAX));
    EXPECT(SP_ERR_RANGE, kv(arch)->offset, U64(kv(arch)->offset, 1ull << 40));
    EXPECT(SP_ERR_RANGE, count_at("k.nums"), U64(count_at("k.nums"), 1ull << 62));
    EXPECT(SP_ERR_RANGE, count_at("k.nums"), U64(count_at("k.nums"), UINT64_MAX / 2));
    EXPECT(SP_ERR_RANGE, count_at("k.tokens"), U64(count_at("k.tokens"), 1ull << 61));
    // The length of one string inside an array.
    uint64_t s1 = kv("k.tokens")->offset + 8 + 3;
    EXPECT(SP_ERR_RANGE, s1, U64(s1, image_len));
    // Types.
    EXPECT(SP_ERR_FORMAT, type_at("k.aa"), U32(type_at("k.aa"), 13));
    EXPECT(SP_ERR_FORMAT, type_at("k.aa"), U32(type_at("k.aa"), 0x80000000u));
    EXPECT(SP_ERR_FORMAT, elem_type_at("k.nums"), U32(elem_type_at("k.nums"), 13));
    EXPECT(SP_ERR_UNSUPPORTED, elem_type_at("k.nums"),
           U32(elem_type_at("k.nums"), SP_GGUF_ARRAY)); // nested arrays
    // Duplicate keys: "k.ab" becomes "k.aa".
    sp_diag d = expect_p((patch[]){U8(at(kv("k.ab")->key.ptr) + 3, 'a')}, 1, SP_ERR_FORMAT,
                         key_len_at("k.ab"), __LINE__);
    assert_non_null(strstr(d.msg, "duplicate"));
    assert_string_equal(d.param, "k.aa");
}

static void test_alignment(void **state) {
    (void)state;
    const char *al = "general.alignment";
    sp_diag d =
        expect_p((patch[]){U32(kv(al)->offset, 0)}, 1, SP_ERR_RANGE, kv(al)->offset, __LINE__);
    assert_string_equal(d.param, al);
    EXPECT(SP_ERR_RANGE, kv(al)->offset, U32(kv(al)->offset, 3));
    EXPECT(SP_ERR_RANGE, kv(al)->offset, U32(kv(al)->offset, 0x80000001u));
    // An i32 or f32 of the same width is still not a u32.
    EXPECT(SP_ERR_FORMAT, type_at(al), U32(type_at(al), SP_GGUF_INT32));
    EXPECT(SP_ERR_FORMAT, type_at(al), U32(type_at(al), SP_GGUF_FLOAT32));
    // A valid power of two that the tensor offsets do not respect: "b" sits at 64, "c" at 160.
    EXPECT(SP_ERR_FORMAT, toffset_at("c"), U32(kv(al)->offset, 64));
}

static void test_tensors(void **state) {
    (void)state;
    // Names.
    EXPECT(SP_ERR_RANGE, name_len_at("a"), U64(name_len_at("a"), 1ull << 62));
    sp_diag d = expect_p((patch[]){U8(at(tensor("b")->name.ptr), 'a')}, 1, SP_ERR_FORMAT,
                         name_len_at("b"), __LINE__);
    assert_non_null(strstr(d.msg, "duplicate"));
    // Dimensions and extents.
    EXPECT(SP_ERR_FORMAT, n_dims_at("a"), U32(n_dims_at("a"), 0));
    EXPECT(SP_ERR_FORMAT, n_dims_at("a"), U32(n_dims_at("a"), 5));
    EXPECT(SP_ERR_FORMAT, n_dims_at("a"), U32(n_dims_at("a"), UINT32_MAX));
    EXPECT(SP_ERR_FORMAT, ne_at("a", 0), U64(ne_at("a", 0), 0));
    EXPECT(SP_ERR_FORMAT, ne_at("a", 1), U64(ne_at("a", 1), 0));
    EXPECT(SP_ERR_RANGE, ne_at("a", 0), U64(ne_at("a", 0), 1ull << 63));
    EXPECT(SP_ERR_RANGE, ne_at("a", 1), U64(ne_at("a", 0), 1ull << 32),
           U64(ne_at("a", 1), 1ull << 32)); // product overflows
    EXPECT(SP_ERR_RANGE, ne_at("b", 1), U64(ne_at("b", 0), 1ull << 40),
           U64(ne_at("b", 1), 1ull << 23));                       // product 2^63 > INT64_MAX
    EXPECT(SP_ERR_FORMAT, ne_at("b", 0), U64(ne_at("b", 0), 33)); // not whole Q8_0 blocks
    // Types.
    EXPECT(SP_ERR_UNSUPPORTED, ttype_at("a"), U32(ttype_at("a"), 4)); // removed Q4_2
    EXPECT(SP_ERR_UNSUPPORTED, ttype_at("a"), U32(ttype_at("a"), 1000));
    // Bytes past the end: "c" is the last tensor.
    EXPECT(SP_ERR_RANGE, toffset_at("c"), U64(toffset_at("c"), tensor("c")->offset + 32));
    EXPECT(SP_ERR_RANGE, toffset_at("c"), U64(toffset_at("c"), 1ull << 40));
    EXPECT(SP_ERR_RANGE, toffset_at("a"), U64(ne_at("a", 1), 1ull << 40)); // size too large
    // offset + size overflows (the offset itself is aligned).
    EXPECT(SP_ERR_RANGE, toffset_at("c"), U64(toffset_at("c"), UINT64_MAX - 31));
    EXPECT(SP_ERR_RANGE, toffset_at("c"), U64(toffset_at("c"), UINT64_MAX - 63));
    // Misaligned.
    EXPECT(SP_ERR_FORMAT, toffset_at("b"), U64(toffset_at("b"), tensor("b")->offset + 1));
    EXPECT(SP_ERR_FORMAT, toffset_at("b"), U64(toffset_at("b"), tensor("b")->offset + 16));
    // Overlapping: "b" moved into "a" (64 bytes at offset 0).
    d = expect_p((patch[]){U64(toffset_at("b"), 32)}, 1, SP_ERR_FORMAT, toffset_at("b"), __LINE__);
    assert_non_null(strstr(d.msg, "overlaps"));
    EXPECT(SP_ERR_FORMAT, toffset_at("c"), U64(toffset_at("c"), 0));
}

/* Random byte changes anywhere: any result is fine as long as nothing crashes or reads out of
 * bounds, and the result is consistent. */
static void test_random_mutations(void **state) {
    (void)state;
    uint64_t seed = 42;
    uint8_t *buf = malloc(image_len);
    int n_ok = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, image, image_len);
        int n = 1 + (int)(sp_test_rand(&seed) % 4);
        for (int k = 0; k < n; k++) {
            size_t pos = (size_t)(sp_test_rand(&seed) % image_len);
            uint64_t r = sp_test_rand(&seed);
            buf[pos] = (r & 0x300) == 0 ? 0xff : (r & 0x300) == 0x100 ? 0 : (uint8_t)r;
        }
        size_t len = image_len - (sp_test_rand(&seed) % 8 == 0 ? sp_test_rand(&seed) % 64 : 0);
        uint8_t *exact = malloc(len);
        memcpy(exact, buf, len);
        sp_gguf *g = NULL;
        sp_diag d;
        if (sp_gguf_parse(exact, len, &g, &d) == SP_OK) {
            n_ok++;
            for (uint64_t i = 0; i < sp_gguf_n_kv(g); i++) {
                const sp_gguf_kv *e = sp_gguf_kv_at(g, i);
                for (uint64_t j = 0; e->type == SP_GGUF_ARRAY && j < e->arr_n; j++) {
                    sp_str s;
                    int64_t iv;
                    double fv;
                    if (e->arr_type == SP_GGUF_STRING) {
                        assert_int_equal(sp_gguf_arr_str(g, e, j, &s), SP_OK);
                        assert_true((const uint8_t *)s.ptr + s.len <= exact + len);
                    } else {
                        sp_err e1 = sp_gguf_arr_int(e, j, &iv), e2 = sp_gguf_arr_float(e, j, &fv);
                        assert_true(e1 == SP_OK || e2 == SP_OK);
                    }
                }
            }
            for (uint64_t i = 0; i < sp_gguf_n_tensors(g); i++) {
                const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
                assert_true((const uint8_t *)t->data + t->n_bytes <= exact + len);
            }
            sp_gguf_close(g);
        } else {
            assert_true(d.msg[0] != '\0');
        }
        free(exact);
    }
    free(buf);
    assert_true(n_ok > 0); // some mutations hit tensor data or string bytes and stay valid
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_tensors),
        cmocka_unit_test(test_random_mutations),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
