/* HTTP request parser: the fields of valid requests (RFC 9112 request line and field lines),
 * the status of every kind of invalid request, the header limit, and restartability: every
 * prefix parses as INCOMPLETE (or as the final error) and the result is the same at the end,
 * including with the input ending exactly at an unmapped page. */
#include "testutil.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/util.h"
#include "server/http.h"

typedef struct parse_out {
    sp_http_parse_result r;
    sp_http_req req;
    size_t consumed;
    uint64_t cl;
    int status;
} parse_out;

static parse_out parse(const char *buf, size_t len, size_t max) {
    parse_out o;
    memset(&o, 0, sizeof o);
    o.r = sp_http_parse(buf, len, max, &o.req, &o.consumed, &o.cl, &o.status);
    return o;
}

static bool str_is(sp_str s, const char *want) {
    return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

static void assert_str(sp_str s, const char *want) {
    if (!str_is(s, want))
        fail_msg("got \"%.*s\", want \"%s\"", (int)s.len, s.ptr, want);
}

/* ---- Valid requests ------------------------------------------------------------------- */

static void test_simple_get(void **state) {
    (void)state;
    const char *s = "GET /v1/models HTTP/1.1\r\nHost: localhost:8080\r\nAccept: */*\r\n\r\n";
    parse_out o = parse(s, strlen(s), 16384);
    assert_int_equal(o.r, SP_HTTP_PARSE_DONE);
    assert_int_equal(o.consumed, strlen(s));
    assert_str(o.req.method, "GET");
    assert_str(o.req.target, "/v1/models");
    assert_str(o.req.path, "/v1/models");
    assert_int_equal(o.req.query.len, 0);
    assert_int_equal(o.req.minor_version, 1);
    assert_int_equal(o.req.n_headers, 2);
    assert_str(o.req.headers[0].name, "Host");
    assert_str(o.req.headers[0].value, "localhost:8080");
    assert_str(o.req.headers[1].name, "Accept");
    assert_str(o.req.headers[1].value, "*/*");
    assert_true(o.req.keep_alive);
    assert_int_equal(o.cl, 0);
    assert_null(o.req.body);
    assert_int_equal(o.req.body_len, 0);
    // Views point into the input (zero-copy).
    assert_ptr_equal(o.req.method.ptr, s);
    assert_ptr_equal(o.req.headers[1].value.ptr, strstr(s, "*/*"));
}

static void test_post_with_body(void **state) {
    (void)state;
    const char *s = "POST /v1/completions?stream=1&x=%20 HTTP/1.1\r\n"
                    "Host: h\r\nContent-Type: application/json\r\nContent-Length: 00011\r\n\r\n"
                    "{\"a\": 1234}";
    parse_out o = parse(s, strlen(s), 16384);
    assert_int_equal(o.r, SP_HTTP_PARSE_DONE);
    assert_int_equal(o.consumed, strlen(s) - 11); // the body is not part of the head
    assert_int_equal(o.cl, 11);
    assert_str(o.req.method, "POST");
    assert_str(o.req.target, "/v1/completions?stream=1&x=%20");
    assert_str(o.req.path, "/v1/completions");
    assert_str(o.req.query, "stream=1&x=%20");
    const sp_str *ct = sp_http_req_header(&o.req, "content-TYPE");
    assert_non_null(ct);
    assert_str(*ct, "application/json");
    assert_null(sp_http_req_header(&o.req, "content-typ"));
    assert_null(sp_http_req_header(&o.req, "Authorization"));
}

static void test_line_endings_and_whitespace(void **state) {
    (void)state;
    // Bare LF line endings, empty lines before the request line, OWS around values,
    // an empty value, obs-text (UTF-8) in a value.
    const char *s = "\r\n\nGET /a?b HTTP/1.1\nX-Empty:\nX-Pad: \t v a l \t \r\n"
                    "X-Utf8: caf\xc3\xa9\n\n";
    parse_out o = parse(s, strlen(s), 16384);
    assert_int_equal(o.r, SP_HTTP_PARSE_DONE);
    assert_int_equal(o.consumed, strlen(s));
    assert_str(o.req.method, "GET");
    assert_str(o.req.path, "/a");
    assert_str(o.req.query, "b");
    assert_int_equal(o.req.n_headers, 3);
    assert_str(o.req.headers[0].value, "");
    assert_str(o.req.headers[1].value, "v a l");
    assert_str(o.req.headers[2].value, "caf\xc3\xa9");
    // Asterisk form and any token method.
    const char *t = "OPTIONS * HTTP/1.1\r\n\r\n";
    o = parse(t, strlen(t), 16384);
    assert_int_equal(o.r, SP_HTTP_PARSE_DONE);
    assert_str(o.req.target, "*");
    const char *u = "M-SEARCH~! /x HTTP/1.1\r\n\r\n";
    o = parse(u, strlen(u), 16384);
    assert_int_equal(o.r, SP_HTTP_PARSE_DONE);
    assert_str(o.req.method, "M-SEARCH~!");
}

static void test_keep_alive_rules(void **state) {
    (void)state;
    static const struct {
        const char *req;
        int minor;
        bool keep_alive;
    } cases[] = {
        {"GET / HTTP/1.1\r\n\r\n", 1, true},
        {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 1, false},
        {"GET / HTTP/1.1\r\nConnection: Upgrade,  CLOSE \r\n\r\n", 1, false},
        {"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", 1, false},
        {"GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", 1, true},
        {"GET / HTTP/1.0\r\n\r\n", 0, false},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0, true},
        {"GET / HTTP/1.0\r\nConnection: x, keep-alive\r\n\r\n", 0, true},
        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", 0, false},
        {"GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n", 0, false},
        {"GET / HTTP/1.9\r\n\r\n", 9, true}, // a later 1.x is handled as 1.1 (RFC 9110 2.5)
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(cases); i++) {
        parse_out o = parse(cases[i].req, strlen(cases[i].req), 16384);
        assert_int_equal(o.r, SP_HTTP_PARSE_DONE);
        assert_int_equal(o.req.minor_version, cases[i].minor);
        if (o.req.keep_alive != cases[i].keep_alive)
            fail_msg("case %zu: keep_alive %d", i, o.req.keep_alive);
    }
}

static void test_content_length(void **state) {
    (void)state;
    const char *dup = "POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc";
    parse_out o = parse(dup, strlen(dup), 16384);
    assert_int_equal(o.r, SP_HTTP_PARSE_DONE);
    assert_int_equal(o.cl, 3);
    const char *max = "POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n";
    o = parse(max, strlen(max), 16384);
    assert_int_equal(o.r, SP_HTTP_PARSE_DONE);
    assert_true(o.cl == UINT64_MAX); // representable: the server answers 413
    const char *zero = "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    o = parse(zero, strlen(zero), 16384);
    assert_int_equal(o.r, SP_HTTP_PARSE_DONE);
    assert_int_equal(o.cl, 0);
}

static void test_max_headers_count(void **state) {
    (void)state;
    char buf[4096];
    for (int n = SP_HTTP_MAX_HEADERS; n <= SP_HTTP_MAX_HEADERS + 1; n++) {
        size_t len = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\n");
        for (int i = 0; i < n; i++)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "X-%d: %d\r\n", i, i);
        len += (size_t)snprintf(buf + len, sizeof buf - len, "\r\n");
        parse_out o = parse(buf, len, sizeof buf);
        if (n == SP_HTTP_MAX_HEADERS) {
            assert_int_equal(o.r, SP_HTTP_PARSE_DONE);
            assert_int_equal(o.req.n_headers, n);
            assert_str(o.req.headers[n - 1].name, "X-63");
        } else {
            assert_int_equal(o.r, SP_HTTP_PARSE_ERROR);
            assert_int_equal(o.status, 431);
        }
    }
}

/* ---- Invalid requests ----------------------------------------------------------------- */

typedef struct bad_case {
    const char *req;
    size_t len; // 0: strlen
    int status;
} bad_case;

#define B(s, st)                                                                                   \
    { s, 0, st }
#define BN(s, st)                                                                                  \
    { s, sizeof(s) - 1, st } // with NUL bytes inside

static const bad_case bad_cases[] = {
    B("GET  / HTTP/1.1\r\n\r\n", 400),                      // two spaces: empty target
    B(" GET / HTTP/1.1\r\n\r\n", 400),                      // whitespace before the method
    B("G(T / HTTP/1.1\r\n\r\n", 400),                       // not a token
    B("GET\t/ HTTP/1.1\r\n\r\n", 400),                      // HTAB is not SP
    B("GET /a b HTTP/1.1\r\n\r\n", 400),                    // space in the target
    B("GET /\x01 HTTP/1.1\r\n\r\n", 400),                   // control in the target
    B("GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", 400),            // non-ASCII target
    B("GET / http/1.1\r\n\r\n", 400),                       // version is case-sensitive
    B("GET / HTTP/1.1 \r\n\r\n", 400),                      // trailing space
    B("GET / HTTP/1.11\r\n\r\n", 400),                      // one digit each
    B("GET / HTTP/1\r\n\r\n", 400),                         // no minor
    B("GET / HTTP/1.x\r\n\r\n", 400),                       // not a digit
    B("GET /\r\n\r\n", 400),                                // HTTP/0.9 style
    B("GET / HTTP/1.1\rX\n\r\n", 400),                      // CR without LF
    B("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400), // a TLS ClientHello
    B("GET / HTTP/2.0\r\n\r\n", 505),
    B("GET / HTTP/0.9\r\n\r\n", 505),
    B("GET / HTTP/3.1\r\nHost: x\r\n\r\n", 505),
    B("GET / HTTP/1.1\r\nHost: a\r\n  folded\r\n\r\n", 400), // obs-fold
    B("GET / HTTP/1.1\r\n\tfirst\r\n\r\n", 400),
    B("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400), // space before ':'
    B("GET / HTTP/1.1\r\n: a\r\n\r\n", 400),      // empty name
    B("GET / HTTP/1.1\r\nNo-Colon\r\n\r\n", 400),
    B("GET / HTTP/1.1\r\nHo\x01st: a\r\n\r\n", 400),
    B("GET / HTTP/1.1\r\nX(y): a\r\n\r\n", 400),
    BN("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 400), // NUL in a value
    B("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),  // bare CR in a value
    B("GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", 400), // DEL in a value
    B("GET / HTTP/1.1\r\nX: a\r\n\rx", 400),      // bad end of the header section
    B("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    B("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
    B("POST / HTTP/1.1\r\nContent-Length: 1a\r\n\r\n", 400),
    B("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400),
    B("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400),
    B("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", 400),
    B("POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", 400),
    B("POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n", 400), // 2^64
    B("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
    B("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    B("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    B("POST / HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n", 501),
    B("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    B("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n", 501),
    B("POST / HTTP/1.1\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
};

static size_t case_len(const bad_case *b) {
    return b->len ? b->len : strlen(b->req);
}

static void test_bad_requests(void **state) {
    (void)state;
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_cases); i++) {
        const bad_case *b = &bad_cases[i];
        parse_out o = parse(b->req, case_len(b), 16384);
        if (o.r != SP_HTTP_PARSE_ERROR || o.status != b->status)
            fail_msg("case %zu (%s): result %d status %d, want status %d", i, b->req, o.r, o.status,
                     b->status);
    }
}

static void test_out_params_untouched(void **state) {
    (void)state;
    sp_http_req req;
    memset(&req, 0xab, sizeof req);
    size_t consumed = 77;
    uint64_t cl = 88;
    int status = 99;
    const char *s = "GET / HTTP/1.1\r\nHost: x\r\n";
    assert_int_equal(sp_http_parse(s, strlen(s), 1024, &req, &consumed, &cl, &status),
                     SP_HTTP_PARSE_INCOMPLETE);
    assert_int_equal(consumed, 77);
    assert_int_equal(cl, 88);
    assert_int_equal(status, 99);
    assert_int_equal(req.n_headers, (int)0xabababab);
    const char *bad = "GET / HTTP/2.0\r\n\r\n";
    assert_int_equal(sp_http_parse(bad, strlen(bad), 1024, &req, &consumed, &cl, &status),
                     SP_HTTP_PARSE_ERROR);
    assert_int_equal(status, 505);
    assert_int_equal(consumed, 77);
    assert_int_equal(req.n_headers, (int)0xabababab);
}

/* ---- Header size limit ---------------------------------------------------------------- */

static void test_header_limit(void **state) {
    (void)state;
    const char *s = "GET / HTTP/1.1\r\nHost: example\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    size_t h = strlen(s);
    // Exactly the limit is fine.
    parse_out o = parse(s, h, h);
    assert_int_equal(o.r, SP_HTTP_PARSE_DONE);
    assert_int_equal(o.consumed, h);
    // One byte less: incomplete while the input fits in the limit, then 431 at once.
    for (size_t len = 0; len <= h; len++) {
        o = parse(s, len, h - 1);
        if (len <= h - 1) {
            assert_int_equal(o.r, SP_HTTP_PARSE_INCOMPLETE);
        } else {
            assert_int_equal(o.r, SP_HTTP_PARSE_ERROR);
            assert_int_equal(o.status, 431);
        }
    }
    // A header section that never ends: 431 as soon as the input exceeds the limit, even if
    // the bytes after the limit would end it.
    char big[300];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    o = parse(big, 100, 100);
    assert_int_equal(o.r, SP_HTTP_PARSE_INCOMPLETE);
    o = parse(big, 101, 100);
    assert_int_equal(o.r, SP_HTTP_PARSE_ERROR);
    assert_int_equal(o.status, 431);
    memcpy(big + 120, "\r\n\r\n", 4);
    o = parse(big, sizeof big, 100);
    assert_int_equal(o.r, SP_HTTP_PARSE_ERROR);
    assert_int_equal(o.status, 431);
    // An error inside the limit wins over the size; one just past it does not count.
    const char *bad = "GET / HTTP/1.1\r\nBad Name: x\r\n"; // the space is byte 19
    o = parse(bad, strlen(bad), 20);
    assert_int_equal(o.r, SP_HTTP_PARSE_ERROR);
    assert_int_equal(o.status, 400);
    o = parse(bad, strlen(bad), 19);
    assert_int_equal(o.r, SP_HTTP_PARSE_ERROR);
    assert_int_equal(o.status, 431);
}

/* ---- Restartability ------------------------------------------------------------------- */

static const char *const valid_cases[] = {
    "GET / HTTP/1.1\r\n\r\n",
    "GET /v1/models HTTP/1.1\r\nHost: localhost:8080\r\nAccept: */*\r\n\r\n",
    "POST /v1/chat/completions?a=b HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
    "Expect: 100-continue\r\n\r\nbody",
    "\r\n\nGET /a?b HTTP/1.1\nX-Empty:\nX-Pad: \t v a l \t \r\nX-Utf8: caf\xc3\xa9\n\n",
    "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
};

// Same request (views compared by offset into their buffers).
static void assert_same(const parse_out *a, const char *abuf, const parse_out *b,
                        const char *bbuf) {
    assert_int_equal(a->r, b->r);
    if (a->r == SP_HTTP_PARSE_ERROR) {
        assert_int_equal(a->status, b->status);
        return;
    }
    if (a->r != SP_HTTP_PARSE_DONE)
        return;
    assert_int_equal(a->consumed, b->consumed);
    assert_int_equal(a->cl, b->cl);
    assert_int_equal(a->req.n_headers, b->req.n_headers);
    assert_int_equal(a->req.minor_version, b->req.minor_version);
    assert_int_equal(a->req.keep_alive, b->req.keep_alive);
    const sp_str *sa[] = {&a->req.method, &a->req.target, &a->req.path, &a->req.query};
    const sp_str *sb[] = {&b->req.method, &b->req.target, &b->req.path, &b->req.query};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(sa[i]->len, sb[i]->len);
        assert_int_equal(sa[i]->ptr - abuf, sb[i]->ptr - bbuf);
    }
    for (int i = 0; i < a->req.n_headers; i++) {
        assert_int_equal(a->req.headers[i].name.ptr - abuf, b->req.headers[i].name.ptr - bbuf);
        assert_int_equal(a->req.headers[i].name.len, b->req.headers[i].name.len);
        assert_int_equal(a->req.headers[i].value.ptr - abuf, b->req.headers[i].value.ptr - bbuf);
        assert_int_equal(a->req.headers[i].value.len, b->req.headers[i].value.len);
    }
}

/* Every prefix of a valid request is INCOMPLETE until the header section ends, then DONE with
 * the same result; every prefix of an invalid one is INCOMPLETE until some point and the final
 * error from there on. */
static void check_prefixes(const char *s, size_t len) {
    parse_out full = parse(s, len, 16384);
    assert_int_not_equal(full.r, SP_HTTP_PARSE_INCOMPLETE);
    bool seen_final = false;
    for (size_t l = 0; l <= len; l++) {
        // A private copy of exactly l bytes so that ASan sees any read past the end.
        char *p = malloc(l ? l : 1);
        assert_non_null(p);
        memcpy(p, s, l);
        parse_out o = parse(p, l, 16384);
        if (o.r == SP_HTTP_PARSE_INCOMPLETE) {
            if (seen_final)
                fail_msg("prefix %zu of \"%s\" is incomplete after a final result", l, s);
            if (full.r == SP_HTTP_PARSE_DONE)
                assert_true(l < full.consumed);
        } else {
            seen_final = true;
            assert_same(&o, p, &full, s);
        }
        free(p);
    }
    assert_true(seen_final);
}

static void test_every_prefix(void **state) {
    (void)state;
    for (size_t i = 0; i < SP_ARRAY_LEN(valid_cases); i++)
        check_prefixes(valid_cases[i], strlen(valid_cases[i]));
    for (size_t i = 0; i < SP_ARRAY_LEN(bad_cases); i++)
        check_prefixes(bad_cases[i].req, case_len(&bad_cases[i]));
}

/* The input ends exactly where an unmapped page begins: any read past len faults. */
static void test_guard_page(void **state) {
    (void)state;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *map = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(mprotect(map + page, page, PROT_NONE), 0);
    char *end = map + page;
    size_t n_cases = SP_ARRAY_LEN(valid_cases) + SP_ARRAY_LEN(bad_cases);
    for (size_t i = 0; i < n_cases; i++) {
        const char *s = i < SP_ARRAY_LEN(valid_cases)
                            ? valid_cases[i]
                            : bad_cases[i - SP_ARRAY_LEN(valid_cases)].req;
        size_t len = i < SP_ARRAY_LEN(valid_cases)
                         ? strlen(s)
                         : case_len(&bad_cases[i - SP_ARRAY_LEN(valid_cases)]);
        for (size_t l = 0; l <= len; l++) {
            memcpy(end - l, s, l);
            parse_out a = parse(end - l, l, 16384);
            parse_out b = parse(s, l, 16384);
            assert_same(&a, end - l, &b, s);
            // A limit beyond the input must not make the parser look further either.
            a = parse(end - l, l, SIZE_MAX);
            assert_same(&a, end - l, &b, s);
        }
    }
    munmap(map, 2 * page);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_post_with_body),
        cmocka_unit_test(test_line_endings_and_whitespace),
        cmocka_unit_test(test_keep_alive_rules),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_max_headers_count),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_out_params_untouched),
        cmocka_unit_test(test_header_limit),
        cmocka_unit_test(test_every_prefix),
        cmocka_unit_test(test_guard_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
