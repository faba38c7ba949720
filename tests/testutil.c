#include "testutil.h"

#include <dirent.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/hash.h"

static char *join(const char *env, const char *fallback, const char *rel) {
    const char *base = getenv(env);
    if (!base)
        base = fallback;
    size_t n = strlen(base) + strlen(rel) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", base, rel);
    return p;
}

char *sp_test_shared(const char *rel) { return join("SP_SHARED_DIR", "../shared", rel); }
char *sp_test_build(const char *rel) { return join("SP_BUILD_DIR", "build", rel); }

static char tmpdir[256];

static void rm_tmpdir(void) {
    if (tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    }
}

const char *sp_test_tmpdir(void) {
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/spindle-test-XXXXXX");
        assert_non_null(mkdtemp(tmpdir));
        atexit(rm_tmpdir);
    }
    return tmpdir;
}

json_t *sp_test_load_json(const char *path) {
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j)
        fail_msg("cannot load %s: %s (line %d)", path, err.text, err.line);
    return j;
}

char *sp_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

uint64_t sp_test_rand(uint64_t *s) { return sp_splitmix64(s); }

float sp_test_randf(uint64_t *s) { return (float)((sp_test_rand(s) >> 40) * 0x1p-24 * 2.0 - 1.0); }

float sp_test_randn(uint64_t *s) {
    double u1 = ((sp_test_rand(s) >> 11) + 1) * 0x1p-53;
    double u2 = (sp_test_rand(s) >> 11) * 0x1p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void sp_test_replay_corpus(const char *target, int (*fn)(const uint8_t *, size_t), int min_files,
                           int min_crashes) {
    const char *src = getenv("SP_SOURCE_DIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", src ? src : ".", target);
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
        assert_int_equal(fn((const uint8_t *)data, len), 0);
        free(data);
        n_files++;
        n_crashes += strncmp(de->d_name, "crash-", 6) == 0;
    }
    closedir(d);
    assert_true(n_files >= min_files);
    assert_true(n_crashes >= min_crashes);
}
