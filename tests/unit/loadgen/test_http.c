#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "loadgen/http.h"

/* ---- HTTP responses, fed whole, at every split point and byte by byte ---------------------- */

typedef struct body_acc {
    char buf[8192];
    size_t len;
    size_t stop_after; // return false once this many bytes arrived (0: never)
} body_acc;

static bool acc_body(void *ctx, const char *d, size_t n) {
    body_acc *a = ctx;
    assert_true(a->len + n <= sizeof a->buf);
    memcpy(a->buf + a->len, d, n);
    a->len += n;
    return !(a->stop_after && a->len >= a->stop_after);
}

typedef struct resp_case {
    const char *name;
    const char *wire; // the response, possibly followed by bytes of the next one
    size_t resp_len;  // bytes that belong to this response (0: all of wire)
    bool head;        // the request was HEAD
    bool needs_eof;   // the body ends with the connection
    int status;
    const char *body; // the decoded body
    bool keep_alive;
    int64_t content_length;
    bool chunked;
} resp_case;

static const resp_case k_cases[] = {
    {"content-length",
     "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello", 0, false,
     false, 200, "hello", true, 5, false},
    {"chunked with extension and trailer",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5;name=val\r\nhello\r\n1A\r\n abcdefghijklmnopqrstuvwxy\r\n0\r\nX-Trailer: 1\r\n\r\n",
     0, false, false, 200, "hello abcdefghijklmnopqrstuvwxy", true, -1, true},
    {"sse over chunked, then the next response",
     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
     "f\r\ndata: {\"a\":1}\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n",
     0, false, false, 200, "data: {\"a\":1}\n\ndata: [DONE]\n\n", true, -1, true},
    {"close-delimited", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", 0, false, true,
     200, "until the end", false, -1, false},
    {"http/1.0 without length", "HTTP/1.0 200 OK\r\n\r\nold", 0, false, true, 200, "old", false, -1,
     false},
    {"http/1.0 keep-alive",
     "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", 0, false, false,
     200, "ok", true, 2, false},
    {"100 continue first",
     "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nContent-Length: 4\r\n"
     "Retry-After: 1\r\n\r\nbusy",
     0, false, false, 503, "busy", true, 4, false},
    {"204 has no body", "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200", 0,
     false, false, 204, "", true, 10, false},
    {"head has no body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 0, true, false, 200, "",
     true, 10, false},
    {"bare LF line ends",
     "HTTP/1.1 404 Not Found\nContent-Length: 3\nConnection: Keep-Alive, close\n\nno!", 0, false,
     false, 404, "no!", false, 3, false},
    {"no reason phrase", "HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n", 0, false, false, 200, "",
     true, 0, false},
};

/* Feeds wire in the given pieces; checks the outcome against c. */
static void run_case(const resp_case *c, const size_t *cuts, int n_cuts) {
    size_t wl = strlen(c->wire);
    body_acc acc = {.len = 0};
    sp_lg_http_resp *r = malloc(sizeof *r);
    assert_non_null(r);
    sp_lg_http_init(r, c->head, acc_body, &acc);
    size_t pos = 0, total_used = 0;
    for (int k = 0; k <= n_cuts && !sp_lg_http_done(r); k++) {
        size_t end = k < n_cuts ? cuts[k] : wl;
        size_t used = 0;
        sp_diag d;
        sp_diag_clear(&d);
        sp_err err = sp_lg_http_feed(r, c->wire + pos, end - pos, &used, &d);
        if (err)
            fail_msg("%s: %s at cut %d", c->name, d.msg, k);
        total_used += used;
        if (used < end - pos)
            assert_true(sp_lg_http_done(r));
        pos = end;
    }
    if (c->needs_eof) {
        assert_false(sp_lg_http_done(r));
        sp_diag d;
        assert_int_equal(sp_lg_http_eof(r, &d), SP_OK);
    }
    assert_true(sp_lg_http_done(r));
    assert_int_equal(r->status, c->status);
    assert_int_equal(acc.len, strlen(c->body));
    assert_memory_equal(acc.buf, c->body, acc.len);
    assert_int_equal(r->keep_alive, c->keep_alive);
    assert_int_equal(r->content_length, c->content_length);
    assert_int_equal(r->chunked, c->chunked);
    // What was consumed ends exactly where this response ends.
    const char *next = strstr(c->wire + 1, "HTTP/1.1 ");
    if (next && !strstr(c->name, "100 continue"))
        assert_int_equal(total_used, (size_t)(next - c->wire));
    else if (!c->needs_eof)
        assert_int_equal(total_used, wl);
    free(r);
}

static void test_responses_every_split(void **state) {
    (void)state;
    for (size_t i = 0; i < SP_ARRAY_LEN(k_cases); i++) {
        const resp_case *c = &k_cases[i];
        size_t wl = strlen(c->wire);
        run_case(c, NULL, 0);
        for (size_t cut = 0; cut <= wl; cut++)
            run_case(c, &cut, 1);
        for (size_t a = 1; a < wl; a += 7)
            for (size_t b = a; b <= wl; b += 5) {
                size_t cuts[2] = {a, b};
                run_case(c, cuts, 2);
            }
        size_t *cuts = malloc(wl * sizeof *cuts);
        for (size_t k = 0; k < wl; k++)
            cuts[k] = k + 1;
        run_case(c, cuts, (int)wl); // byte by byte
        free(cuts);
    }
}

static sp_err feed_all(const char *wire, bool head, body_acc *acc, sp_lg_http_resp *r) {
    sp_lg_http_init(r, head, acc_body, acc);
    size_t used;
    sp_diag d;
    return sp_lg_http_feed(r, wire, strlen(wire), &used, &d);
}

static void test_response_errors(void **state) {
    (void)state;
    static const struct {
        const char *wire;
        sp_err err;
    } bad[] = {
        {"HTTP/2 200 OK\r\n\r\n", SP_ERR_FORMAT},
        {"HTTP/1.1 20 OK\r\n\r\n", SP_ERR_FORMAT},
        {"HTTP/1.1 200OK\r\n\r\n", SP_ERR_FORMAT},
        {"SMTP 220 hello\r\n", SP_ERR_FORMAT},
        {"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", SP_ERR_FORMAT},
        {"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", SP_ERR_FORMAT},
        {"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", SP_ERR_FORMAT},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", SP_ERR_FORMAT},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", SP_ERR_FORMAT},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", SP_ERR_FORMAT},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", SP_ERR_FORMAT},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", SP_ERR_FORMAT},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
         SP_ERR_FORMAT},
    };
    body_acc acc;
    sp_lg_http_resp *r = malloc(sizeof *r);
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        acc.len = 0;
        acc.stop_after = 0;
        sp_err err = feed_all(bad[i].wire, false, &acc, r);
        if (err != bad[i].err)
            fail_msg("case %zu: got %s", i, sp_err_str(err));
    }
    // A header line past the limit, and a header section past its limit.
    size_t big = SP_LG_HTTP_LINE_MAX + 100;
    char *w = malloc(big + 64);
    strcpy(w, "HTTP/1.1 200 OK\r\nX: ");
    memset(w + strlen(w), 'a', big);
    w[big] = '\0';
    acc.len = 0;
    assert_int_equal(feed_all(w, false, &acc, r), SP_ERR_LIMIT);
    free(w);
    char *h = malloc(SP_LG_HTTP_HEADERS_MAX + 4096);
    strcpy(h, "HTTP/1.1 200 OK\r\n");
    while (strlen(h) < SP_LG_HTTP_HEADERS_MAX + 100)
        strcat(h, "X-Pad: 0123456789012345678901234567890123456789\r\n");
    assert_int_equal(feed_all(h, false, &acc, r), SP_ERR_LIMIT);
    free(h);
    // The connection closing mid-body or mid-headers is a truncation.
    sp_diag d;
    assert_int_equal(feed_all("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", false, &acc, r),
                     SP_OK);
    assert_int_equal(sp_lg_http_eof(r, &d), SP_ERR_TRUNCATED);
    assert_int_equal(
        feed_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", false, &acc, r),
        SP_OK);
    assert_int_equal(sp_lg_http_eof(r, &d), SP_ERR_TRUNCATED);
    assert_int_equal(feed_all("HTTP/1.1 200 OK\r\nContent-", false, &acc, r), SP_OK);
    assert_int_equal(sp_lg_http_eof(r, &d), SP_ERR_TRUNCATED);
    // The body callback can stop the parse.
    acc.len = 0;
    acc.stop_after = 2;
    assert_int_equal(feed_all("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, &acc, r),
                     SP_ERR_CANCELLED);
    // Both framings: chunked wins and the connection is not reused.
    acc.len = 0;
    acc.stop_after = 0;
    assert_int_equal(feed_all("HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: "
                              "chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
                              false, &acc, r),
                     SP_OK);
    assert_true(sp_lg_http_done(r) && !r->keep_alive && acc.len == 1);
    free(r);
}

/* ---- Server-sent events -------------------------------------------------------------------- */

typedef struct ev_acc {
    char log[4096]; // "event|data\n" per event
    size_t len;
    int n;
    int stop_at; // return false at this event (1-based; 0: never)
} ev_acc;

static bool acc_event(void *ctx, const char *event, const char *data, size_t len) {
    ev_acc *a = ctx;
    assert_int_equal(strlen(data), len); // NUL-terminated, no embedded NULs here
    int k = snprintf(a->log + a->len, sizeof a->log - a->len, "%s|%s\n", event, data);
    a->len += (size_t)k;
    a->n++;
    return a->n != a->stop_at;
}

static const char k_sse[] = "\xEF\xBB\xBF"
                            ": a comment\r\n"
                            "data: {\"x\":1}\r\n\r\n"
                            "event: usage\n"
                            "data:first\n"
                            "data:  second\n"
                            "id: 7\n"
                            "retry: 100\n\n"
                            "data\r\r"
                            "data: cr only\r\r"
                            ":\n\n"
                            "data: [DONE]\n\n"
                            "data: never dispatched";
static const char k_sse_log[] = "|{\"x\":1}\n"
                                "usage|first\n second\n"
                                "|\n"
                                "|cr only\n"
                                "|[DONE]\n";

static void sse_run(const size_t *cuts, int n_cuts) {
    ev_acc acc = {.len = 0};
    sp_lg_sse s;
    sp_lg_sse_init(&s, 1024, acc_event, &acc);
    size_t wl = sizeof k_sse - 1, pos = 0;
    for (int k = 0; k <= n_cuts; k++) {
        size_t end = k < n_cuts ? cuts[k] : wl;
        sp_diag d;
        assert_int_equal(sp_lg_sse_feed(&s, k_sse + pos, end - pos, &d), SP_OK);
        pos = end;
    }
    sp_lg_sse_end(&s);
    acc.log[acc.len] = '\0';
    if (strcmp(acc.log, k_sse_log))
        fail_msg("events differ:\n%s", acc.log);
    sp_lg_sse_deinit(&s);
}

static void test_sse_every_split(void **state) {
    (void)state;
    size_t wl = sizeof k_sse - 1;
    sse_run(NULL, 0);
    for (size_t cut = 0; cut <= wl; cut++)
        sse_run(&cut, 1);
    for (size_t a = 0; a <= wl; a += 3)
        for (size_t b = a; b <= wl; b += 4) {
            size_t cuts[2] = {a, b};
            sse_run(cuts, 2);
        }
    size_t cuts[sizeof k_sse];
    for (size_t k = 0; k < wl; k++)
        cuts[k] = k + 1;
    sse_run(cuts, (int)wl);
}

static void test_sse_limits(void **state) {
    (void)state;
    ev_acc acc = {.len = 0};
    sp_lg_sse s;
    sp_diag d;
    // A line over the limit, whether it arrives whole or in pieces.
    char big[200];
    memset(big, 'a', sizeof big);
    sp_lg_sse_init(&s, 64, acc_event, &acc);
    assert_int_equal(sp_lg_sse_feed(&s, big, sizeof big, &d), SP_ERR_LIMIT);
    sp_lg_sse_deinit(&s);
    // An event's data over the limit across lines.
    sp_lg_sse_init(&s, 64, acc_event, &acc);
    sp_err err = SP_OK;
    for (int i = 0; i < 10 && !err; i++)
        err = sp_lg_sse_feed(&s, "data: 0123456789\n", 17, &d);
    assert_int_equal(err, SP_ERR_LIMIT);
    sp_lg_sse_deinit(&s);
    // The callback stops the feed.
    acc = (ev_acc){.stop_at = 2};
    sp_lg_sse_init(&s, 64, acc_event, &acc);
    assert_int_equal(sp_lg_sse_feed(&s, "data: a\n\ndata: b\n\ndata: c\n\n", 27, &d),
                     SP_ERR_CANCELLED);
    assert_int_equal(acc.n, 2);
    sp_lg_sse_deinit(&s);
    // Not a BOM: the held bytes start the first line.
    acc = (ev_acc){.len = 0};
    sp_lg_sse_init(&s, 64, acc_event, &acc);
    assert_int_equal(sp_lg_sse_feed(&s, "\xEF", 1, &d), SP_OK);
    assert_int_equal(sp_lg_sse_feed(&s, "x\ndata: y\n\n", 11, &d), SP_OK);
    acc.log[acc.len] = '\0';
    assert_string_equal(acc.log, "|y\n");
    sp_lg_sse_deinit(&s);
}

/* A Spindle-shaped stream: HTTP chunks carrying SSE events, both split anywhere. */
typedef struct pipe_ctx {
    sp_lg_sse *sse;
} pipe_ctx;

static bool pipe_body(void *ctx, const char *d, size_t n) {
    pipe_ctx *p = ctx;
    sp_diag dg;
    return sp_lg_sse_feed(p->sse, d, n, &dg) == SP_OK;
}

static void test_http_sse_pipeline(void **state) {
    (void)state;
    const char *events[] = {"data: {\"choices\":[{\"text\":\" a\"}]}\n\n",
                            "data: {\"choices\":[{\"text\":\" b\"}]}\n\n",
                            "data: {\"choices\":[],\"usage\":{\"completion_tokens\":2}}\n\n",
                            "data: [DONE]\n\n"};
    char wire[2048];
    int len = snprintf(wire, sizeof wire,
                       "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n");
    for (size_t i = 0; i < 4; i++)
        len += snprintf(wire + len, sizeof wire - (size_t)len, "%zx\r\n%s\r\n", strlen(events[i]),
                        events[i]);
    len += snprintf(wire + len, sizeof wire - (size_t)len, "0\r\n\r\n");
    for (int cut = 0; cut <= len; cut++) {
        ev_acc acc = {.len = 0};
        sp_lg_sse s;
        sp_lg_sse_init(&s, 4096, acc_event, &acc);
        pipe_ctx pc = {&s};
        sp_lg_http_resp *r = malloc(sizeof *r);
        sp_lg_http_init(r, false, pipe_body, &pc);
        size_t used;
        sp_diag d;
        assert_int_equal(sp_lg_http_feed(r, wire, (size_t)cut, &used, &d), SP_OK);
        assert_int_equal(sp_lg_http_feed(r, wire + cut, (size_t)(len - cut), &used, &d), SP_OK);
        assert_true(sp_lg_http_done(r));
        assert_int_equal(acc.n, 4);
        acc.log[acc.len] = '\0';
        assert_non_null(strstr(acc.log, "|[DONE]\n"));
        assert_non_null(strstr(acc.log, "\"completion_tokens\":2"));
        free(r);
        sp_lg_sse_deinit(&s);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_responses_every_split), cmocka_unit_test(test_response_errors),
        cmocka_unit_test(test_sse_every_split),       cmocka_unit_test(test_sse_limits),
        cmocka_unit_test(test_http_sse_pipeline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
