/* Helpers shared by the C tests: locating ../shared and the build folder, reading files,
 * loading JSON fixtures. Include after <cmocka.h>'s prerequisites. */
#ifndef SP_TESTS_TESTUTIL_H
#define SP_TESTS_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>

/* Path of a file under ../shared (SP_SHARED_DIR). Returns a heap string the caller frees. */
char *sp_test_shared(const char *rel);
/* Path of a file under the build folder (SP_BUILD_DIR). Heap string. */
char *sp_test_build(const char *rel);
/* A fresh temporary directory for this test process (created once, removed at exit). */
const char *sp_test_tmpdir(void);
/* Loads a JSON file; fails the test if it cannot. */
json_t *sp_test_load_json(const char *path);
/* Reads a whole file; fails the test if it cannot. The caller frees the result. */
char *sp_test_read_file(const char *path, size_t *len);
/* Runs every file of a fuzzer's seed corpus (tests/fuzz/corpus/TARGET, under SP_SOURCE_DIR)
 * through its entry point fn, which must return 0; checks there are at least min_files files,
 * min_crashes of them regression seeds named crash-*. */
void sp_test_replay_corpus(const char *target, int (*fn)(const uint8_t *, size_t), int min_files,
                           int min_crashes);
/* Deterministic pseudo-random numbers for tests (splitmix64). */
uint64_t sp_test_rand(uint64_t *state);
float sp_test_randf(uint64_t *state); // uniform in [-1, 1)
float sp_test_randn(uint64_t *state); // standard normal

#endif
