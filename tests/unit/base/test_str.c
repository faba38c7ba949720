#include "testutil.h"

#include "base/str.h"

static void test_str_eq(void **state) {
    (void)state;
    const char buf[] = "general.architecture";
    const sp_str s = {buf, 7};
    assert_true(sp_str_eq(s, "general"));
    assert_false(sp_str_eq(s, "general.")); // longer
    assert_false(sp_str_eq(s, "genera"));   // a prefix
    assert_false(sp_str_eq(s, "General"));
    assert_true(sp_str_eq((sp_str){NULL, 0}, ""));
    assert_false(sp_str_eq((sp_str){NULL, 0}, "x"));
    // The bytes after len do not take part, NUL or not.
    assert_true(sp_str_eq((sp_str){"ab\0c", 2}, "ab"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_str_eq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
