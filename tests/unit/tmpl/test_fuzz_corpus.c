/* Replays the template fuzzer's seed corpus (tests/fuzz/corpus/fuzz_tmpl: chat-template
 * snippets and the inputs that once crashed it, named crash-*) through the fuzz target itself,
 * so that every build runs them and the sanitizer build checks them for undefined behaviour,
 * leaks and overflows without a fuzzing toolchain. */
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../fuzz/fuzz_tmpl.c"

static void test_replay_corpus(void **state) {
    (void)state;
    const char *src = getenv("SP_SOURCE_DIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/fuzz_tmpl", src ? src : ".");
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n_files = 0, n_crashes = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[4352];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        size_t len;
        char *data = sp_test_read_file(path, &len);
        assert_int_equal(LLVMFuzzerTestOneInput((const uint8_t *)data, len), 0);
        free(data);
        n_files++;
        n_crashes += strncmp(de->d_name, "crash-", 6) == 0;
    }
    closedir(d);
    assert_true(n_files >= 5);
    assert_true(n_crashes >= 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
