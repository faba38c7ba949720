#include "testutil.h"

#include <string.h>

#include "base/err.h"
#include "base/util.h"

static void test_err_names(void **state) {
    (void)state;
    for (int e = 0; e < SP_ERR__COUNT; e++)
        assert_string_not_equal(sp_err_str((sp_err)e), "unknown error");
    assert_string_equal(sp_err_str((sp_err)999), "unknown error");
}

static void test_diag(void **state) {
    (void)state;
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(d.offset, UINT64_MAX);
    assert_int_equal(sp_diag_set(&d, SP_ERR_FORMAT, 42, "bad %s", "thing"), SP_ERR_FORMAT);
    assert_string_equal(d.msg, "bad thing");
    assert_int_equal(d.offset, 42);
    assert_int_equal(sp_diag_set(NULL, SP_ERR_RANGE, 0, "x"), SP_ERR_RANGE);
}

static void test_checked_arith(void **state) {
    (void)state;
    uint64_t r;
    assert_true(sp_add_u64(1, 2, &r) && r == 3);
    assert_false(sp_add_u64(UINT64_MAX, 1, &r));
    assert_false(sp_mul_u64(UINT64_MAX / 2 + 1, 2, &r));
    assert_true(sp_align_up_u64(33, 32, &r) && r == 64);
    assert_true(sp_align_up_u64(64, 32, &r) && r == 64);
    assert_false(sp_align_up_u64(UINT64_MAX - 3, 32, &r));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_names),
        cmocka_unit_test(test_diag),
        cmocka_unit_test(test_checked_arith),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
