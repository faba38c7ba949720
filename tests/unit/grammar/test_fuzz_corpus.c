/* Replays the grammar fuzzer's seed corpus (tests/fuzz/corpus/fuzz_grammar: grammars with
 * output bytes, and the inputs that once failed it, named crash-*) through the fuzz target
 * itself, so that every build runs them and the sanitizer builds check them. */
#include "testutil.h"

#include "../../fuzz/fuzz_grammar.c"

static void test_replay_corpus(void **state) {
    (void)state;
    sp_test_replay_corpus("fuzz_grammar", LLVMFuzzerTestOneInput, 5, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
