/* Replays the multipart fuzzer's seed corpus (tests/fuzz/corpus/fuzz_multipart: uploads as
 * clients send them, and near misses) through the fuzz target itself, so that every build runs
 * them and the sanitizer builds check them. */
#include "testutil.h"

#include "../../fuzz/fuzz_multipart.c"

static void test_replay_corpus(void **state) {
    (void)state;
    sp_test_replay_corpus("fuzz_multipart", LLVMFuzzerTestOneInput, 5, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
