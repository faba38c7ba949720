/* Replays the template fuzzer's seed corpus (tests/fuzz/corpus/fuzz_tmpl: chat-template
 * snippets and the inputs that once crashed it, named crash-*) through the fuzz target itself,
 * so that every build runs them and the sanitizer build checks them for undefined behaviour,
 * leaks and overflows without a fuzzing toolchain. */
#include "testutil.h"

#include "../../fuzz/fuzz_tmpl.c"

static void test_replay_corpus(void **state) {
    (void)state;
    sp_test_replay_corpus("fuzz_tmpl", LLVMFuzzerTestOneInput, 5, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
