#include "testutil.h"

#include <string.h>

#include "base/hash.h"

/* FNV-1a 64 against the published test vectors (Noll's FNV test suite). */
static void test_fnv1a64_vectors(void **state) {
    (void)state;
    assert_true(sp_fnv1a64("", 0) == 0xcbf29ce484222325ull);
    assert_true(sp_fnv1a64(NULL, 0) == SP_FNV1A64_BASIS);
    assert_true(sp_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(sp_fnv1a64("foobar", 6) == 0x85944171f73967e8ull);
}

/* Bytes above 0x7f are folded in as unsigned values, whatever the signedness of char. */
static void test_fnv1a64_high_bytes(void **state) {
    (void)state;
    const unsigned char b[1] = {0xff};
    const char c[1] = {(char)0xff};
    assert_true(sp_fnv1a64(b, 1) == ((SP_FNV1A64_BASIS ^ 0xffu) * 0x100000001b3ull));
    assert_true(sp_fnv1a64(c, 1) == sp_fnv1a64(b, 1));
}

/* A message hashed piece by piece has the hash of the whole. */
static void test_fnv1a64_add_pieces(void **state) {
    (void)state;
    uint64_t h = sp_fnv1a64_add(SP_FNV1A64_BASIS, "foo", 3);
    h = sp_fnv1a64_add(h, "", 0);
    h = sp_fnv1a64_add(h, "bar", 3);
    assert_true(h == sp_fnv1a64("foobar", 6));
}

/* splitmix64 seeded with 0: the first outputs of Vigna's reference splitmix64.c. */
static void test_splitmix64_reference(void **state) {
    (void)state;
    uint64_t sm = 0;
    assert_true(sp_splitmix64(&sm) == 0xe220a8397b1dcdafull);
    assert_true(sp_splitmix64(&sm) == 0x6e789e6aa1b965f4ull);
    assert_true(sp_splitmix64(&sm) == 0x06c45d188009454full);
    assert_true(sp_splitmix64(&sm) == 0xf88bb8a8724c81ecull);
    assert_true(sm == 4 * 0x9e3779b97f4a7c15ull);
}

/* sp_mix64 is splitmix64's output function: the step is mix64 of the advanced state. */
static void test_mix64(void **state) {
    (void)state;
    assert_true(sp_mix64(0) == 0);
    assert_true(sp_mix64(0x9e3779b97f4a7c15ull) == 0xe220a8397b1dcdafull);
    uint64_t sm = 12345;
    const uint64_t out = sp_splitmix64(&sm);
    assert_true(out == sp_mix64(sm));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fnv1a64_vectors),
        cmocka_unit_test(test_fnv1a64_high_bytes),
        cmocka_unit_test(test_fnv1a64_add_pieces),
        cmocka_unit_test(test_splitmix64_reference),
        cmocka_unit_test(test_mix64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
