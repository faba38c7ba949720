/* The store: files (content and records, listing, deletion, orphans), batches and their lines
 * (a line's result recorded once), and the errors of a damaged or foreign database and of
 * content deleted behind its back. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"

/* A fresh data directory under the test's temporary directory (to free). */
static char *fresh_dir(const char *name) {
    char *p = malloc(512);
    snprintf(p, 512, "%s/store-%s-%ld", sp_test_tmpdir(), name, (long)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    assert_int_equal(system(cmd), 0);
    return p;
}

static sp_store *open_ok(const char *dir) {
    sp_store *s;
    sp_diag d;
    sp_diag_clear(&d);
    if (sp_store_open(dir, &s, &d))
        fail_msg("%s", d.msg);
    return s;
}

static void test_files(void **st) {
    (void)st;
    char *dir = fresh_dir("files");
    sp_store *s = open_ok(dir);
    sp_diag d;
    sp_store_file f[5], g;
    for (int i = 0; i < 5; i++) {
        char name[32], body[64];
        snprintf(name, sizeof name, "in%d.jsonl", i);
        snprintf(body, sizeof body, "{\"line\": %d}\n", i);
        assert_int_equal(sp_store_file_add(s, name, i == 2 ? "batch_output" : "batch", body,
                                           strlen(body), &f[i], &d),
                         SP_OK);
        assert_int_equal(strncmp(f[i].id, "file-", 5), 0);
        assert_int_equal(f[i].bytes, (int64_t)strlen(body));
    }
    assert_int_equal(sp_store_file_get(s, f[3].id, &g), SP_OK);
    assert_string_equal(g.filename, "in3.jsonl");
    assert_string_equal(g.purpose, "batch");
    char *data;
    size_t len;
    assert_int_equal(sp_store_file_read(s, f[1].id, &data, &len, &d), SP_OK);
    assert_string_equal(data, "{\"line\": 1}\n");
    assert_int_equal(len, strlen(data));
    free(data);
    // Listing: newest first, by pages, by purpose.
    sp_store_file page[3];
    int32_t n;
    bool more;
    assert_int_equal(sp_store_file_list(s, NULL, NULL, 3, page, &n, &more), SP_OK);
    assert_int_equal(n, 3);
    assert_true(more);
    assert_string_equal(page[0].id, f[4].id);
    assert_string_equal(page[2].id, f[2].id);
    assert_int_equal(sp_store_file_list(s, NULL, page[2].id, 3, page, &n, &more), SP_OK);
    assert_int_equal(n, 2);
    assert_false(more);
    assert_string_equal(page[0].id, f[1].id);
    assert_int_equal(sp_store_file_list(s, "batch", NULL, 3, page, &n, &more), SP_OK);
    assert_int_equal(n, 3);
    assert_string_equal(page[1].id, f[3].id); // f[2] is batch_output
    assert_int_equal(sp_store_file_list(s, NULL, "file-none", 3, page, &n, &more),
                     SP_ERR_NOT_FOUND);
    // Deletion: the record and the content.
    assert_int_equal(sp_store_file_delete(s, f[0].id, &d), SP_OK);
    assert_int_equal(sp_store_file_get(s, f[0].id, &g), SP_ERR_NOT_FOUND);
    assert_int_equal(sp_store_file_delete(s, f[0].id, &d), SP_ERR_NOT_FOUND);
    // Content deleted behind the store's back: a clear error.
    char path[600];
    snprintf(path, sizeof path, "%s/files/%s", dir, f[1].id);
    assert_int_equal(unlink(path), 0);
    sp_diag_clear(&d);
    assert_int_equal(sp_store_file_read(s, f[1].id, &data, &len, &d), SP_ERR_IO);
    assert_non_null(strstr(d.msg, "is gone"));
    // A writer left half done (the process killed) leaves an orphan the next open removes.
    sp_store_writer *w;
    assert_int_equal(sp_store_writer_open(s, "x", "batch", &w, &d), SP_OK);
    assert_int_equal(sp_store_writer_write(w, "abc", 3, &d), SP_OK);
    snprintf(path, sizeof path, "%s/files/file-orphan", dir);
    FILE *o = fopen(path, "w");
    fclose(o);
    sp_store_close(s); // (the writer's temporary file stays, as after a crash)
    s = open_ok(dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), -1);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s/files' | grep -v '^file-')\"", dir);
    assert_int_equal(system(cmd), 0);
    sp_store_writer_abort(w);
    assert_int_equal(sp_store_file_get(s, f[4].id, &g), SP_OK); // the rest survived
    sp_store_close(s);
    free(dir);
}

static int collect(void *ctx, int64_t line_no, const char *result, size_t len) {
    char *buf = ctx;
    char one[64];
    snprintf(one, sizeof one, "%lld:%.*s;", (long long)line_no, (int)len, result);
    strcat(buf, one);
    return 0;
}

static void test_batches(void **st) {
    (void)st;
    char *dir = fresh_dir("batches");
    sp_store *s = open_ok(dir);
    sp_diag d;
    sp_store_batch in = {.metadata = "{\"k\":\"v\"}", .expires_at = 123}, b[3];
    snprintf(in.input_file_id, sizeof in.input_file_id, "file-x");
    snprintf(in.endpoint, sizeof in.endpoint, "/v1/chat/completions");
    snprintf(in.completion_window, sizeof in.completion_window, "24h");
    for (int i = 0; i < 3; i++)
        assert_int_equal(sp_store_batch_create(s, &in, &b[i], &d), SP_OK);
    assert_int_equal(strncmp(b[0].id, "batch_", 6), 0);
    assert_int_equal(b[0].status, SP_BATCH_VALIDATING);
    assert_string_equal(b[0].metadata, "{\"k\":\"v\"}");
    assert_true(b[0].created_at > 0);
    assert_int_equal(b[0].expires_at, 123);
    const char *ids[] = {"a", "b", "c", "d"};
    assert_int_equal(sp_store_batch_add_lines(s, b[1].id, 4, ids, &d), SP_OK);
    assert_int_equal(sp_store_batch_set_status(s, b[1].id, SP_BATCH_IN_PROGRESS, NULL, &d), SP_OK);
    // Each line's result once.
    bool rec;
    assert_int_equal(sp_store_line_finish(s, b[1].id, 2, true, "R2", &rec, &d), SP_OK);
    assert_true(rec);
    assert_int_equal(sp_store_line_finish(s, b[1].id, 2, true, "again", &rec, &d), SP_OK);
    assert_false(rec);
    assert_int_equal(sp_store_line_finish(s, b[1].id, 0, false, "E0", &rec, &d), SP_OK);
    assert_true(rec);
    int64_t *pend, n_pend;
    assert_int_equal(sp_store_batch_pending(s, b[1].id, &pend, &n_pend), SP_OK);
    assert_int_equal(n_pend, 2);
    assert_int_equal(pend[0], 1);
    assert_int_equal(pend[1], 3);
    free(pend);
    sp_store_batch got;
    assert_int_equal(sp_store_batch_get(s, b[1].id, &got), SP_OK);
    assert_int_equal(got.status, SP_BATCH_IN_PROGRESS);
    assert_true(got.in_progress_at > 0);
    assert_int_equal(got.total, 4);
    assert_int_equal(got.completed, 1);
    assert_int_equal(got.failed, 1);
    sp_store_batch_deinit(&got);
    char buf[256] = "";
    assert_int_equal(sp_store_batch_results(s, b[1].id, true, collect, buf), SP_OK);
    assert_string_equal(buf, "2:R2;");
    buf[0] = '\0';
    assert_int_equal(sp_store_batch_results(s, b[1].id, false, collect, buf), SP_OK);
    assert_string_equal(buf, "0:E0;");
    // Status with errors; listing and finding.
    assert_int_equal(
        sp_store_batch_set_status(s, b[2].id, SP_BATCH_FAILED, "[{\"code\":\"x\"}]", &d), SP_OK);
    assert_int_equal(sp_store_batch_set_files(s, b[1].id, "file-o", "file-e", &d), SP_OK);
    assert_int_equal(sp_store_batch_set_status(s, "batch_none", SP_BATCH_FAILED, NULL, &d),
                     SP_ERR_NOT_FOUND);
    sp_store_batch page[2];
    int32_t n;
    bool more;
    assert_int_equal(sp_store_batch_list(s, NULL, 2, page, &n, &more), SP_OK);
    assert_int_equal(n, 2);
    assert_true(more);
    assert_string_equal(page[0].id, b[2].id);
    assert_int_equal(page[0].status, SP_BATCH_FAILED);
    assert_string_equal(page[0].errors, "[{\"code\":\"x\"}]");
    assert_string_equal(page[1].output_file_id, "file-o");
    for (int i = 0; i < n; i++)
        sp_store_batch_deinit(&page[i]);
    char found[4][SP_STORE_ID_LEN];
    assert_int_equal(sp_store_batch_find(s, SP_BATCH_VALIDATING, found, 4, &n), SP_OK);
    assert_int_equal(n, 1);
    assert_string_equal(found[0], b[0].id);
    for (int i = 0; i < 3; i++)
        sp_store_batch_deinit(&b[i]);
    // What a reopened store sees.
    sp_store_close(s);
    s = open_ok(dir);
    assert_int_equal(sp_store_batch_get(s, b[1].id, &got), SP_OK);
    assert_int_equal(got.completed, 1);
    sp_store_batch_deinit(&got);
    // One process at a time (flock locks belong to open files: a second open in this process
    // is refused as another process's would be).
    sp_store *s2;
    sp_diag_clear(&d);
    assert_int_equal(sp_store_open(dir, &s2, &d), SP_ERR_IO);
    assert_non_null(strstr(d.msg, "in use"));
    sp_store_close(s);
    free(dir);
}

/* A file that is not a database, and a database damaged in its pages: errors that say so. */
static void test_damaged(void **st) {
    (void)st;
    char *dir = fresh_dir("damaged");
    sp_store *s = open_ok(dir);
    sp_diag d;
    sp_store_batch in = {0}, b;
    assert_int_equal(sp_store_batch_create(s, &in, &b, &d), SP_OK);
    enum { LINES = 3000 };
    static char names[LINES][24];
    const char *ids[LINES];
    for (int i = 0; i < LINES; i++) {
        snprintf(names[i], sizeof names[i], "request-%d", i);
        ids[i] = names[i];
    }
    assert_int_equal(sp_store_batch_add_lines(s, b.id, LINES, ids, &d), SP_OK);
    sp_store_batch_deinit(&b);
    sp_store_close(s);
    char path[600];
    snprintf(path, sizeof path, "%s/spindle.db", dir);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, 4096 + 100, SEEK_SET); // into the pages after the header
    for (int i = 0; i < 20000; i++)
        fputc(i * 7 & 0xff, fp);
    fclose(fp);
    sp_diag_clear(&d);
    assert_int_equal(sp_store_open(dir, &s, &d), SP_ERR_FORMAT);
    print_message("%s\n", d.msg);
    assert_non_null(strstr(d.msg, "move it away"));
    fp = fopen(path, "wb");
    fputs("this is not a database, but it is long enough to have a header of one.........", fp);
    fclose(fp);
    snprintf(path, sizeof path, "%s/spindle.db-wal", dir);
    unlink(path);
    sp_diag_clear(&d);
    assert_int_equal(sp_store_open(dir, &s, &d), SP_ERR_FORMAT);
    print_message("%s\n", d.msg);
    assert_non_null(strstr(d.msg, "move it away"));
    // A data directory that is a file.
    snprintf(path, sizeof path, "%s/spindle.db", dir);
    sp_diag_clear(&d);
    assert_int_equal(sp_store_open(path, &s, &d), SP_ERR_IO);
    print_message("%s\n", d.msg);
    free(dir);
}

/* A full disk (a file size limit stands in for it): the write fails with an error that says
 * so, nothing is recorded, and the store works again once there is room. */
static void test_full_disk(void **st) {
    (void)st;
    char *dir = fresh_dir("full");
    sp_store *s = open_ok(dir);
    sp_diag d;
    sp_diag_clear(&d);
    sp_store_file f;
    enum { BIG = 1 << 20 };
    char *big = calloc(1, BIG);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 64 << 10;
    signal(SIGXFSZ, SIG_IGN); // (a write past the limit fails instead of killing the process)
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    const sp_err err = sp_store_file_add(s, "big.jsonl", "batch", big, BIG, &f, &d);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    print_message("%s\n", d.msg);
    assert_int_equal(err, SP_ERR_IO);
    assert_non_null(strstr(d.msg, "disk is full"));
    sp_store_file page[2];
    int32_t n;
    bool more;
    assert_int_equal(sp_store_file_list(s, NULL, NULL, 2, page, &n, &more), SP_OK);
    assert_int_equal(n, 0);
    assert_int_equal(sp_store_file_add(s, "big.jsonl", "batch", big, BIG, &f, &d), SP_OK);
    free(big);
    sp_store_close(s);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_damaged),
        cmocka_unit_test(test_full_disk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
