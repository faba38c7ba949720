#include "testutil.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sample/stop.h"

/* ---- a brute-force reference ---- */

/* The first end position (1-based byte count) at which some stop string is complete, with the
 * longest such stop (then the lowest index). Returns the stop index or -1; *cut = start of the
 * match. */
static int ref_first_match(const char *text, size_t n, const char *const *stops, int n_stops,
                           size_t *cut) {
    for (size_t e = 1; e <= n; e++) {
        int best = -1;
        size_t best_len = 0;
        for (int i = 0; i < n_stops; i++) {
            size_t L = strlen(stops[i]);
            if (L <= e && memcmp(text + e - L, stops[i], L) == 0 && L > best_len) {
                best = i;
                best_len = L;
            }
        }
        if (best >= 0) {
            *cut = e - best_len;
            return best;
        }
    }
    return -1;
}

/* Longest suffix of text[n] that is a prefix of some stop string. */
static size_t ref_hold(const char *text, size_t n, const char *const *stops, int n_stops) {
    size_t best = 0;
    for (int i = 0; i < n_stops; i++) {
        size_t L = strlen(stops[i]);
        for (size_t k = 1; k <= L && k <= n; k++)
            if (k > best && memcmp(text + n - k, stops[i], k) == 0)
                best = k;
    }
    return best;
}

/* ---- a streaming client ---- */

typedef struct client {
    char out[8192]; // what was sent
    size_t out_len;
    char pending[8192]; // fed but not yet sent
    size_t pend_len;
    int stop;
} client;

static void client_feed(sp_stop *m, client *c, const char *chunk, size_t n) {
    assert_true(c->pend_len + n <= sizeof c->pending);
    memcpy(c->pending + c->pend_len, chunk, n);
    c->pend_len += n;
    sp_stop_status st;
    sp_stop_feed(m, chunk, n, &st);
    assert_true(st.emit_bytes <= c->pend_len);
    memcpy(c->out + c->out_len, c->pending, st.emit_bytes);
    c->out_len += st.emit_bytes;
    assert_true(st.cut_offset == c->out_len);
    if (st.stop >= 0) {
        assert_int_equal(st.hold_bytes, 0);
        c->pend_len = 0;
    } else {
        assert_int_equal(st.emit_bytes + st.hold_bytes, c->pend_len);
        memmove(c->pending, c->pending + st.emit_bytes, st.hold_bytes);
        c->pend_len = st.hold_bytes;
    }
    c->stop = st.stop;
}

/* Feeds text split at the positions whose bit is set in `splits` (bit i: a cut after byte i),
 * and checks every step against the reference. */
static void check_split(const char *text, const char *const *stops, int n_stops,
                        uint64_t splits) {
    size_t n = strlen(text);
    size_t cut = 0;
    int expect = ref_first_match(text, n, stops, n_stops, &cut);
    sp_stop *m = NULL;
    assert_int_equal(sp_stop_create(stops, n_stops, &m, NULL), SP_OK);
    client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->stop = -1;
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        bool last = i + 1 == n;
        if (!last && !(splits >> i & 1))
            continue;
        client_feed(m, c, text + from, i + 1 - from);
        from = i + 1;
        // Nothing sent reaches into the final stop string.
        if (expect >= 0)
            assert_true(c->out_len <= cut);
        if (c->stop < 0) {
            // The held bytes are exactly the longest stop prefix ending the text so far, and
            // everything before them was sent.
            assert_int_equal(c->pend_len, ref_hold(text, from, stops, n_stops));
            assert_int_equal(c->out_len + c->pend_len, from);
            assert_memory_equal(c->out, text, c->out_len);
        } else {
            break;
        }
    }
    if (expect < 0) {
        assert_int_equal(c->stop, -1);
        size_t rest = sp_stop_finish(m);
        assert_int_equal(rest, c->pend_len);
        memcpy(c->out + c->out_len, c->pending, rest);
        c->out_len += rest;
        assert_int_equal(c->out_len, n);
    } else {
        if (c->stop != expect)
            fail_msg("text \"%s\": stop %d, expected %d", text, c->stop, expect);
        assert_int_equal(c->out_len, cut);
        assert_int_equal(sp_stop_finish(m), 0);
    }
    assert_memory_equal(c->out, text, c->out_len);
    free(c);
    sp_stop_destroy(m);
}

/* Every way to split the text into chunks gives the same result. */
static void check_all_splits(const char *text, const char *const *stops, int n_stops) {
    size_t n = strlen(text);
    assert_true(n >= 1 && n <= 16);
    for (uint64_t s = 0; s < (1ull << (n - 1)); s++)
        check_split(text, stops, n_stops, s);
}

/* ---- tests ---- */

static void test_overlapping_prefix(void **state) {
    (void)state;
    static const char *const stops[] = {"aab"};
    check_all_splits("aaab", stops, 1);
    check_all_splits("aaaaab!", stops, 1);
    check_all_splits("aaaaaaa", stops, 1);
    check_all_splits("abaabx", stops, 1);

    // Byte by byte, with the exact hold-back amounts.
    sp_stop *m = NULL;
    assert_int_equal(sp_stop_create(stops, 1, &m, NULL), SP_OK);
    sp_stop_status st;
    sp_stop_feed(m, "a", 1, &st);
    assert_true(st.stop == -1 && st.emit_bytes == 0 && st.hold_bytes == 1);
    sp_stop_feed(m, "a", 1, &st);
    assert_true(st.stop == -1 && st.emit_bytes == 0 && st.hold_bytes == 2);
    sp_stop_feed(m, "a", 1, &st);
    assert_true(st.stop == -1 && st.emit_bytes == 1 && st.hold_bytes == 2);
    sp_stop_feed(m, "b", 1, &st);
    assert_true(st.stop == 0 && st.emit_bytes == 0 && st.hold_bytes == 0 && st.cut_offset == 1);
    // Feeding after the match changes nothing.
    sp_stop_feed(m, "xyz", 3, &st);
    assert_true(st.stop == 0 && st.emit_bytes == 0 && st.cut_offset == 1);
    assert_int_equal(sp_stop_finish(m), 0);
    sp_stop_destroy(m);
}

static void test_several_stops(void **state) {
    (void)state;
    static const char *const s1[] = {"abcd", "bc"};
    check_all_splits("abcd", s1, 2); // "bc" completes first: output "a"
    check_all_splits("xabcabcd", s1, 2);
    static const char *const s2[] = {"cd", "bcd"};
    check_all_splits("xbcd", s2, 2); // both end at 'd': the longer wins, output "x"
    static const char *const s3[] = {"User:", "\n\n", "Us"};
    check_all_splits("hi\nUsX\n\nUser:", s3, 3);
    check_all_splits("hello U", s3, 3);
    static const char *const dup[] = {"zz", "zz"};
    check_all_splits("azzb", dup, 2); // duplicates: the lowest index
    // The expected indices, stated directly.
    size_t cut;
    assert_int_equal(ref_first_match("abcd", 4, s1, 2, &cut), 1);
    assert_int_equal(cut, 1);
    assert_int_equal(ref_first_match("xbcd", 4, s2, 2, &cut), 1);
    assert_int_equal(cut, 1);
}

static void test_no_stops(void **state) {
    (void)state;
    check_all_splits("anything at all", NULL, 0);
    sp_stop *m = NULL;
    assert_int_equal(sp_stop_create(NULL, 0, &m, NULL), SP_OK);
    sp_stop_status st;
    sp_stop_feed(m, "abc", 3, &st);
    assert_true(st.stop == -1 && st.emit_bytes == 3 && st.hold_bytes == 0);
    sp_stop_feed(m, "", 0, &st);
    assert_true(st.stop == -1 && st.emit_bytes == 0 && st.cut_offset == 3);
    sp_stop_destroy(m);
}

/* Multi-byte UTF-8 stop strings split inside a character. */
static void test_utf8(void **state) {
    (void)state;
    static const char *const stops[] = {"\xc3\xa9t\xc3\xa9", "\xe2\x80\x94"}; // "été", "—"
    check_all_splits("l'\xc3\xa9t\xc3\xa9!", stops, 2);
    check_all_splits("a\xc3\xa9tb\xe2\x80\x94", stops, 2);
    check_all_splits("\xe2\x80\x93\xe2\x80", stops, 2);
}

/* Random texts over a small alphabet, random stop sets, random splits. */
static void test_random(void **state) {
    (void)state;
    uint64_t rs = 2024;
    char words[4][8];
    const char *stops[4];
    char text[200];
    for (int round = 0; round < 3000; round++) {
        int n_stops = (int)(sp_test_rand(&rs) % 4) + 1;
        for (int i = 0; i < n_stops; i++) {
            int len = (int)(sp_test_rand(&rs) % 6) + 1;
            for (int k = 0; k < len; k++)
                words[i][k] = (char)('a' + sp_test_rand(&rs) % 3);
            words[i][len] = '\0';
            stops[i] = words[i];
        }
        int n = (int)(sp_test_rand(&rs) % 60) + 1;
        for (int k = 0; k < n; k++)
            text[k] = (char)('a' + sp_test_rand(&rs) % 3);
        text[n] = '\0';
        // Sparse random splits, then byte by byte, then a single chunk.
        check_split(text, stops, n_stops, sp_test_rand(&rs) & sp_test_rand(&rs));
        check_split(text, stops, n_stops, ~0ull);
        check_split(text, stops, n_stops, 0);
    }
}

/* A long stream: state stays bounded, and a stop at the very end is still found. */
static void test_long_stream(void **state) {
    (void)state;
    static const char *const stops[] = {"<|im_end|>"};
    sp_stop *m = NULL;
    assert_int_equal(sp_stop_create(stops, 1, &m, NULL), SP_OK);
    sp_stop_status st;
    uint64_t sent = 0;
    const char *chunk = "lorem ipsum <|im dolor <|im_en ";
    size_t n = strlen(chunk);
    for (int i = 0; i < 100000; i++) {
        sp_stop_feed(m, chunk, n, &st);
        assert_int_equal(st.stop, -1);
        sent += st.emit_bytes;
    }
    assert_true(sent == 100000ull * n && st.hold_bytes == 0);
    sp_stop_feed(m, "<|im_", 5, &st);
    assert_true(st.emit_bytes == 0 && st.hold_bytes == 5);
    sp_stop_feed(m, "end|>tail", 9, &st);
    assert_true(st.stop == 0 && st.emit_bytes == 0 && st.cut_offset == sent);
    sp_stop_reset(m);
    sp_stop_feed(m, "x<|im_end|>", 11, &st);
    assert_true(st.stop == 0 && st.emit_bytes == 1 && st.cut_offset == 1);
    sp_stop_destroy(m);
}

static void test_errors(void **state) {
    (void)state;
    sp_diag d;
    sp_stop *m = NULL;
    static const char *const empty[] = {"ok", ""};
    sp_diag_clear(&d);
    assert_int_equal(sp_stop_create(empty, 2, &m, &d), SP_ERR_INVALID);
    assert_string_equal(d.param, "stop");
    assert_non_null(strstr(d.msg, "1"));
    static const char *const null[] = {NULL};
    assert_int_equal(sp_stop_create(null, 1, &m, &d), SP_ERR_INVALID);
    assert_int_equal(sp_stop_create(NULL, 1, &m, &d), SP_ERR_INVALID);
    assert_int_equal(sp_stop_create(NULL, -1, &m, &d), SP_ERR_INVALID);
    const char *many[SP_STOP_MAX_STRINGS + 1];
    for (int i = 0; i <= SP_STOP_MAX_STRINGS; i++)
        many[i] = "x";
    sp_diag_clear(&d);
    assert_int_equal(sp_stop_create(many, SP_STOP_MAX_STRINGS + 1, &m, &d), SP_ERR_INVALID);
    assert_string_equal(d.param, "stop");
    assert_int_equal(sp_stop_create(many, SP_STOP_MAX_STRINGS, &m, &d), SP_OK);
    sp_stop_destroy(m);
    m = NULL;
    char *big = malloc(SP_STOP_MAX_BYTES + 2);
    assert_non_null(big);
    memset(big, 'q', SP_STOP_MAX_BYTES + 1);
    big[SP_STOP_MAX_BYTES + 1] = '\0';
    const char *one[1] = {big};
    assert_int_equal(sp_stop_create(one, 1, &m, &d), SP_ERR_INVALID);
    assert_null(m);
    big[SP_STOP_MAX_BYTES] = '\0'; // exactly the limit is fine
    assert_int_equal(sp_stop_create(one, 1, &m, &d), SP_OK);
    sp_stop_destroy(m);
    free(big);
    sp_stop_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overlapping_prefix),
        cmocka_unit_test(test_several_stops),
        cmocka_unit_test(test_no_stops),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_long_stream),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
