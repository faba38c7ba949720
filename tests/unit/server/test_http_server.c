/* HTTP server over real sockets on 127.0.0.1: the loop runs on its own thread with a toy
 * handler (echo, a response delayed through the tick, a stream written over ticks, a flood
 * for a reader that never reads, a request held until the client leaves, a response released
 * by a watched eventfd). The client side is plain blocking sockets with its own small HTTP
 * response reader, so what is checked is the bytes on the wire. */
#include "testutil.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/util.h"
#include "server/http.h"

/* ---- The toy handler (loop thread) ----------------------------------------------------- */

enum { SLOT_DELAY, SLOT_STREAM, SLOT_FLOOD, SLOT_HOLD, SLOT_WATCH };

typedef struct slot {
    bool used;
    int kind;
    sp_http_conn *c;
    int64_t due_us;
    int left, every_ms, seq;
} slot;

#define N_SLOTS    32
#define FLOOD_SIZE (64 * 1024)

typedef struct fixture {
    sp_http_server *srv;
    pthread_t thread;
    sp_err run_err;
    int port;
    int efd;                // watched eventfd
    slot slots[N_SLOTS];    // loop thread only
    char flood[FLOOD_SIZE]; // what /flood writes
    // Observations for the test thread.
    atomic_int n_requests, n_closes, n_conns, stream_writes, limit_hit, requests_at_delay;
    atomic_int errors; // handler-side failures (cmocka asserts are for the test thread)
    atomic_size_t pending_at_limit;
} fixture;

static fixture F;

static int query_int(const sp_http_req *req, const char *key, int dflt) {
    size_t kl = strlen(key);
    const char *q = req->query.ptr, *end = q + req->query.len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *e = amp ? amp : end;
        if ((size_t)(e - q) > kl && memcmp(q, key, kl) == 0 && q[kl] == '=')
            return atoi(q + kl + 1);
        q = amp ? amp + 1 : end;
    }
    return dflt;
}

static slot *slot_new(sp_http_conn *c, int kind) {
    for (int i = 0; i < N_SLOTS; i++) {
        if (!F.slots[i].used) {
            F.slots[i] = (slot){.used = true, .kind = kind, .c = c};
            sp_http_set_user(c, &F.slots[i]);
            return &F.slots[i];
        }
    }
    atomic_fetch_add(&F.errors, 1);
    return &F.slots[0];
}

static void must(sp_err e) {
    if (e != SP_OK)
        atomic_fetch_add(&F.errors, 1);
}

static void on_request(void *ctx, sp_http_conn *c, const sp_http_req *req) {
    (void)ctx;
    atomic_fetch_add(&F.n_requests, 1);
    int64_t now = sp_time_us();
    sp_str p = req->path;
#define IS(s) (p.len == strlen(s) && memcmp(p.ptr, s, p.len) == 0)
    if (IS("/echo")) {
        must(sp_http_respond(c, 200, "text/plain", "X-Echo: yes\r\n", req->body, req->body_len));
    } else if (IS("/delay")) {
        slot *s = slot_new(c, SLOT_DELAY);
        s->due_us = now + query_int(req, "ms", 50) * 1000;
    } else if (IS("/stream")) {
        must(sp_http_stream_begin(c, 200, "text/event-stream", "Cache-Control: no-cache\r\n"));
        must(sp_http_stream_write(c, "chunk 0\n", 8));
        atomic_fetch_add(&F.stream_writes, 1);
        slot *s = slot_new(c, SLOT_STREAM);
        s->left = query_int(req, "n", 3) - 1;
        s->every_ms = query_int(req, "every", 10);
        s->due_us = now + s->every_ms * 1000;
        s->seq = 1;
    } else if (IS("/flood")) {
        must(sp_http_stream_begin(c, 200, "application/octet-stream", NULL));
        slot_new(c, SLOT_FLOOD);
    } else if (IS("/hold")) {
        slot_new(c, SLOT_HOLD);
    } else if (IS("/watch")) {
        slot_new(c, SLOT_WATCH);
    } else if (IS("/hello")) {
        must(sp_http_respond(c, 200, "text/plain", NULL, "hello world", 11));
    } else if (IS("/drain")) {
        sp_http_server_stop_accepting(F.srv);
        must(sp_http_respond(c, 200, "text/plain", NULL, "draining", 8));
    } else {
        must(sp_http_respond(c, 404, "text/plain", NULL, "no", 2));
    }
#undef IS
}

static void on_close(void *ctx, sp_http_conn *c, void *user) {
    (void)ctx;
    slot *s = user;
    if (!s || s < F.slots || s >= F.slots + N_SLOTS || !s->used || s->c != c)
        atomic_fetch_add(&F.errors, 1);
    else
        s->used = false;
    // The connection is gone: the calls that would touch it must fail cleanly.
    if (sp_http_respond(c, 200, NULL, NULL, "x", 1) != SP_ERR_IO)
        atomic_fetch_add(&F.errors, 1);
    atomic_fetch_add(&F.n_closes, 1);
}

static void on_tick(void *ctx) {
    (void)ctx;
    atomic_store(&F.n_conns, sp_http_server_n_conns(F.srv));
    int64_t now = sp_time_us();
    for (int i = 0; i < N_SLOTS; i++) {
        slot *s = &F.slots[i];
        if (!s->used)
            continue;
        if (s->kind == SLOT_DELAY && now >= s->due_us) {
            atomic_store(&F.requests_at_delay, atomic_load(&F.n_requests));
            s->used = false;
            must(sp_http_respond(s->c, 200, "text/plain", NULL, "delayed", 7));
        } else if (s->kind == SLOT_STREAM && now >= s->due_us) {
            char b[32];
            int n = snprintf(b, sizeof b, "chunk %d\n", s->seq++);
            must(sp_http_stream_write(s->c, b, (size_t)n));
            atomic_fetch_add(&F.stream_writes, 1);
            s->due_us += s->every_ms * 1000;
            if (--s->left == 0) {
                s->used = false;
                must(sp_http_stream_end(s->c));
            }
        } else if (s->kind == SLOT_FLOOD) {
            for (int k = 0; k < 4; k++) {
                sp_err e = sp_http_stream_write(s->c, F.flood, sizeof F.flood);
                if (e == SP_ERR_LIMIT) {
                    atomic_store(&F.pending_at_limit, sp_http_conn_pending(s->c));
                    atomic_store(&F.limit_hit, 1);
                    s->used = false;
                    sp_http_conn_close(s->c);
                    break;
                }
                must(e);
            }
        }
    }
}

static void on_eventfd(void *ctx) {
    (void)ctx;
    uint64_t v;
    if (read(F.efd, &v, sizeof v) != (ssize_t)sizeof v)
        return;
    for (int i = 0; i < N_SLOTS; i++) {
        slot *s = &F.slots[i];
        if (s->used && s->kind == SLOT_WATCH) {
            s->used = false;
            must(sp_http_respond(s->c, 200, "text/plain", NULL, "woken", 5));
        }
    }
}

static void *loop_main(void *arg) {
    (void)arg;
    F.run_err = sp_http_server_run(F.srv);
    return NULL;
}

static void start_with(const sp_http_opts *o) {
    memset(&F, 0, sizeof F);
    for (size_t i = 0; i < sizeof F.flood; i++)
        F.flood[i] = (char)('a' + i % 26);
    sp_http_handler h = {.ctx = &F, .on_request = on_request, .on_close = on_close};
    sp_diag d;
    assert_int_equal(sp_http_server_create(o, &h, &F.srv, &d), SP_OK);
    F.port = sp_http_server_port(F.srv);
    assert_true(F.port > 0);
    F.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(F.efd >= 0);
    assert_int_equal(sp_http_server_watch_fd(F.srv, F.efd, on_eventfd, NULL), SP_OK);
    assert_int_equal(sp_http_server_set_tick(F.srv, 5, on_tick, NULL), SP_OK);
    assert_int_equal(pthread_create(&F.thread, NULL, loop_main, NULL), 0);
}

static sp_http_opts test_opts(void) {
    sp_http_opts o = sp_http_opts_default();
    o.port = 0;
    return o;
}

static void start(void) {
    sp_http_opts o = test_opts();
    start_with(&o);
}

static void stop(void) {
    sp_http_server_stop(F.srv);
    assert_int_equal(pthread_join(F.thread, NULL), 0);
    assert_int_equal(F.run_err, SP_OK);
    sp_http_server_destroy(F.srv);
    F.srv = NULL;
    close(F.efd);
    assert_int_equal(atomic_load(&F.errors), 0);
}

// After a failed test: stop the loop it left running so the next test starts clean.
static int teardown(void **state) {
    (void)state;
    if (F.srv) {
        sp_http_server_stop(F.srv);
        pthread_join(F.thread, NULL);
        sp_http_server_destroy(F.srv);
        F.srv = NULL;
        close(F.efd);
    }
    return 0;
}

static int64_t now_ms(void) {
    return sp_time_us() / 1000;
}

// Waits until *v == want (polling); false after timeout_ms.
static bool wait_int(atomic_int *v, int want, int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        if (atomic_load(v) == want)
            return true;
        usleep(2000);
    }
    return atomic_load(v) == want;
}

/* ---- The client ------------------------------------------------------------------------ */

typedef struct cli {
    int fd;
    char *buf; // (cap) received, not yet consumed: buf[0, len)
    size_t len, cap;
} cli;

static cli cli_open_buf(int port, int rcvbuf) {
    cli k = {.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    assert_true(k.fd >= 0);
    if (rcvbuf > 0)
        assert_int_equal(setsockopt(k.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(k.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(k.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(k.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(k.fd, (struct sockaddr *)&a, sizeof a), 0);
    k.cap = 1 << 16;
    k.buf = malloc(k.cap);
    assert_non_null(k.buf);
    return k;
}

static cli cli_open(int port) {
    return cli_open_buf(port, 0);
}

static void cli_close(cli *k) {
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
    free(k->buf);
    k->buf = NULL;
}

static void cli_send(cli *k, const void *p, size_t n) {
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(k->fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            fail_msg("send: %s", strerror(errno));
        s += w;
        n -= (size_t)w;
    }
}

static void cli_sends(cli *k, const char *s) {
    cli_send(k, s, strlen(s));
}

// One recv into the buffer; false at EOF, on an error or after the 5 s receive timeout.
static bool cli_fill(cli *k) {
    if (k->cap - k->len < 4096) {
        k->cap *= 2;
        k->buf = realloc(k->buf, k->cap);
        assert_non_null(k->buf);
    }
    ssize_t n = recv(k->fd, k->buf + k->len, k->cap - k->len, 0);
    if (n < 0 && errno == EINTR)
        return cli_fill(k);
    if (n <= 0)
        return false;
    k->len += (size_t)n;
    return true;
}

static void cli_consume(cli *k, size_t n) {
    memmove(k->buf, k->buf + n, k->len - n);
    k->len -= n;
}

typedef struct resp {
    int status;
    char head[4096]; // status line and header lines, NUL-terminated
    char *body;      // heap, NUL-terminated
    size_t body_len;
} resp;

// A header's value (case-insensitive name) copied into out; NULL if absent.
static const char *resp_header(const resp *r, const char *name, char *out, size_t n) {
    size_t nl = strlen(name);
    for (const char *line = strstr(r->head, "\r\n"); line && line[2];
         line = strstr(line + 2, "\r\n")) {
        const char *l = line + 2;
        if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
            const char *v = l + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t vl = (size_t)(e - v);
            if (vl >= n)
                vl = n - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
    }
    return NULL;
}

static bool find_crlf2(cli *k, size_t *end) {
    for (size_t i = 0; i + 3 < k->len; i++) {
        if (memcmp(k->buf + i, "\r\n\r\n", 4) == 0) {
            *end = i + 4;
            return true;
        }
    }
    return false;
}

static bool need(cli *k, size_t n) {
    while (k->len < n)
        if (!cli_fill(k))
            return false;
    return true;
}

static void body_append(resp *r, const char *p, size_t n) {
    r->body = realloc(r->body, r->body_len + n + 1);
    assert_non_null(r->body);
    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

/* Reads one response (1xx ones included: they have no body; nor do answers to HEAD, with
 * head_only). False if the connection ended before it was complete. The caller frees
 * r->body. */
static bool cli_read_resp_ex(cli *k, resp *r, bool head_only) {
    memset(r, 0, sizeof *r);
    body_append(r, "", 0);
    size_t hend;
    while (!find_crlf2(k, &hend))
        if (!cli_fill(k))
            return false;
    assert_true(hend < sizeof r->head);
    memcpy(r->head, k->buf, hend);
    r->head[hend] = '\0';
    cli_consume(k, hend);
    assert_int_equal(strncmp(r->head, "HTTP/1.1 ", 9), 0);
    r->status = atoi(r->head + 9);
    if (r->status < 200 || head_only)
        return true;
    char v[64];
    if (resp_header(r, "Content-Length", v, sizeof v)) {
        size_t n = (size_t)strtoull(v, NULL, 10);
        if (!need(k, n))
            return false;
        body_append(r, k->buf, n);
        cli_consume(k, n);
        return true;
    }
    if (resp_header(r, "Transfer-Encoding", v, sizeof v)) {
        assert_string_equal(v, "chunked");
        for (;;) {
            size_t lend = 0;
            for (;;) {
                char *nl = k->len ? memchr(k->buf, '\n', k->len) : NULL;
                if (nl) {
                    lend = (size_t)(nl - k->buf) + 1;
                    break;
                }
                if (!cli_fill(k))
                    return false;
            }
            size_t n = (size_t)strtoull(k->buf, NULL, 16);
            cli_consume(k, lend);
            if (!need(k, n + 2))
                return false;
            assert_memory_equal(k->buf + n, "\r\n", 2);
            body_append(r, k->buf, n);
            cli_consume(k, n + 2);
            if (n == 0)
                return true;
        }
    }
    // No length: the body ends with the connection.
    while (cli_fill(k)) {
    }
    body_append(r, k->buf, k->len);
    cli_consume(k, k->len);
    return true;
}

static bool cli_read_resp(cli *k, resp *r) {
    return cli_read_resp_ex(k, r, false);
}

static void resp_free(resp *r) {
    free(r->body);
    r->body = NULL;
}

// Reads until EOF (discarding); milliseconds it took, or -1 after timeout_ms.
static int cli_wait_eof(cli *k, int timeout_ms) {
    int64_t t0 = now_ms();
    for (;;) {
        int left = (int)(t0 + timeout_ms - now_ms());
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = k->fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            continue;
        char b[4096];
        ssize_t n = recv(k->fd, b, sizeof b, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return (int)(now_ms() - t0);
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            return (int)(now_ms() - t0);
    }
}

static void expect_resp(cli *k, int status, const char *body) {
    resp r;
    assert_true(cli_read_resp(k, &r));
    if (r.status != status)
        fail_msg("status %d, want %d:\n%s%s", r.status, status, r.head, r.body);
    if (body)
        assert_string_equal(r.body, body);
    resp_free(&r);
}

// An error the server answers by itself: JSON body with the code, then the connection ends.
static void expect_error_and_close(cli *k, int status) {
    resp r;
    assert_true(cli_read_resp(k, &r));
    if (r.status != status)
        fail_msg("status %d, want %d:\n%s%s", r.status, status, r.head, r.body);
    char v[64];
    assert_non_null(resp_header(&r, "Connection", v, sizeof v));
    assert_string_equal(v, "close");
    assert_non_null(resp_header(&r, "Content-Type", v, sizeof v));
    assert_string_equal(v, "application/json");
    json_error_t je;
    json_t *j = json_loadb(r.body, r.body_len, 0, &je);
    assert_non_null(j);
    json_t *err = json_object_get(j, "error");
    assert_non_null(err);
    // The API's error shape: a string code, a message, a type, and param (null here).
    assert_true(json_is_string(json_object_get(err, "code")));
    assert_true(json_is_string(json_object_get(err, "message")));
    assert_true(json_is_string(json_object_get(err, "type")));
    assert_true(json_is_null(json_object_get(err, "param")));
    if (status == 503)
        assert_non_null(resp_header(&r, "Retry-After", v, sizeof v));
    json_decref(j);
    resp_free(&r);
    assert_true(cli_wait_eof(k, 30000) >= 0);
}

/* ---- Tests ---------------------------------------------------------------------------- */

static void test_keep_alive(void **state) {
    (void)state;
    start();
    cli k = cli_open(F.port);
    for (int i = 0; i < 3; i++) {
        char req[128], body[16];
        int bl = snprintf(body, sizeof body, "hello %d", i);
        snprintf(req, sizeof req, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s",
                 bl, body);
        cli_sends(&k, req);
        resp r;
        assert_true(cli_read_resp(&k, &r));
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, body);
        char v[64];
        assert_string_equal(resp_header(&r, "Connection", v, sizeof v), "keep-alive");
        assert_string_equal(resp_header(&r, "X-Echo", v, sizeof v), "yes");
        assert_string_equal(resp_header(&r, "Content-Type", v, sizeof v), "text/plain");
        assert_true(strncmp(r.head, "HTTP/1.1 200 OK\r\n", 17) == 0);
        resp_free(&r);
    }
    assert_true(wait_int(&F.n_conns, 1, 30000)); // one connection carried all three
    // Connection: close ends it after the response.
    cli_sends(&k, "GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n");
    resp r;
    assert_true(cli_read_resp(&k, &r));
    char v[64];
    assert_string_equal(resp_header(&r, "Connection", v, sizeof v), "close");
    resp_free(&r);
    assert_true(cli_wait_eof(&k, 30000) >= 0);
    cli_close(&k);
    assert_true(wait_int(&F.n_conns, 0, 30000));
    assert_int_equal(atomic_load(&F.n_closes), 0); // every response was finished
    stop();
}

static void test_http10(void **state) {
    (void)state;
    start();
    // No keep-alive by default.
    cli k = cli_open(F.port);
    cli_sends(&k, "GET /echo HTTP/1.0\r\n\r\n");
    resp r;
    assert_true(cli_read_resp(&k, &r));
    assert_int_equal(r.status, 200);
    char v[64];
    assert_string_equal(resp_header(&r, "Connection", v, sizeof v), "close");
    resp_free(&r);
    assert_true(cli_wait_eof(&k, 30000) >= 0);
    cli_close(&k);
    // Keep-alive when asked.
    k = cli_open(F.port);
    cli_sends(&k, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_true(cli_read_resp(&k, &r));
    assert_string_equal(resp_header(&r, "Connection", v, sizeof v), "keep-alive");
    resp_free(&r);
    // A stream to a 1.0 client: no chunked encoding, the body ends with the connection.
    cli_sends(&k, "GET /stream?n=3&every=5 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_true(cli_read_resp(&k, &r));
    assert_int_equal(r.status, 200);
    assert_null(resp_header(&r, "Transfer-Encoding", v, sizeof v));
    assert_string_equal(resp_header(&r, "Connection", v, sizeof v), "close");
    assert_string_equal(r.body, "chunk 0\nchunk 1\nchunk 2\n");
    resp_free(&r);
    cli_close(&k);
    stop();
}

static void test_pipelining(void **state) {
    (void)state;
    start();
    cli k = cli_open(F.port);
    // Three requests in one write; the first is answered late, yet they come back in order
    // and the second is not even parsed before the first response has ended.
    cli_sends(&k, "GET /delay?ms=60 HTTP/1.1\r\nHost: x\r\n\r\n"
                  "POST /echo HTTP/1.1\r\nContent-Length: 6\r\n\r\nsecond"
                  "\r\nPOST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nthird");
    expect_resp(&k, 200, "delayed");
    expect_resp(&k, 200, "second");
    expect_resp(&k, 200, "third");
    assert_int_equal(atomic_load(&F.requests_at_delay), 1);
    assert_int_equal(atomic_load(&F.n_requests), 3);
    cli_close(&k);
    stop();
}

static void test_stream(void **state) {
    (void)state;
    start();
    cli k = cli_open(F.port);
    cli_sends(&k, "GET /stream?n=5&every=5 HTTP/1.1\r\n\r\n");
    resp r;
    assert_true(cli_read_resp(&k, &r));
    assert_int_equal(r.status, 200);
    char v[64];
    assert_string_equal(resp_header(&r, "Transfer-Encoding", v, sizeof v), "chunked");
    assert_string_equal(resp_header(&r, "Content-Type", v, sizeof v), "text/event-stream");
    assert_string_equal(resp_header(&r, "Cache-Control", v, sizeof v), "no-cache");
    assert_string_equal(r.body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
    resp_free(&r);
    // The connection stays usable after the stream.
    cli_sends(&k, "POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
    expect_resp(&k, 200, "ok");
    cli_close(&k);
    stop();
}

static void test_head(void **state) {
    (void)state;
    start();
    cli k = cli_open(F.port);
    // The head of a GET, without its body; the connection stays in step.
    cli_sends(&k, "HEAD /hello HTTP/1.1\r\n\r\nHEAD /stream?n=2&every=5 HTTP/1.1\r\n\r\n"
                  "GET /hello HTTP/1.1\r\n\r\n");
    resp r;
    char v[64];
    assert_true(cli_read_resp_ex(&k, &r, true));
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "Content-Length", v, sizeof v), "11");
    resp_free(&r);
    assert_true(cli_read_resp_ex(&k, &r, true));
    assert_string_equal(resp_header(&r, "Transfer-Encoding", v, sizeof v), "chunked");
    resp_free(&r);
    expect_resp(&k, 200, "hello world");
    cli_close(&k);
    stop();
}

static void test_large_bodies(void **state) {
    (void)state;
    start();
    size_t n = 3 * 1024 * 1024 + 17; // many reads in, many EAGAINs out
    char *body = malloc(n);
    assert_non_null(body);
    uint64_t rng = 1;
    for (size_t i = 0; i < n; i++)
        body[i] = (char)sp_test_rand(&rng);
    cli k = cli_open(F.port);
    char head[128];
    snprintf(head, sizeof head, "POST /echo HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", n);
    cli_sends(&k, head);
    cli_send(&k, body, n);
    resp r;
    assert_true(cli_read_resp(&k, &r));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, n);
    assert_memory_equal(r.body, body, n);
    resp_free(&r);
    free(body);
    cli_close(&k);
    stop();
}

static void test_expect_continue(void **state) {
    (void)state;
    start();
    cli k = cli_open(F.port);
    cli_sends(&k, "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    // Exactly the interim response, then the final one once the body is sent.
    assert_true(need(&k, 25));
    assert_memory_equal(k.buf, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    cli_consume(&k, 25);
    cli_sends(&k, "hello");
    expect_resp(&k, 200, "hello");
    // Body sent along with the head: no interim response.
    cli_sends(&k, "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\nabc");
    expect_resp(&k, 200, "abc");
    // HTTP/1.0 clients' Expect is ignored (RFC 9110 10.1.1): the server waits for the body.
    cli_sends(&k, "POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n"
                  "Expect: 100-continue\r\n\r\n");
    struct pollfd p = {.fd = k.fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 100), 0);
    cli_sends(&k, "xy");
    expect_resp(&k, 200, "xy");
    cli_close(&k);
    stop();
}

static void test_431(void **state) {
    (void)state;
    sp_http_opts o = test_opts();
    o.max_header_bytes = 1024;
    start_with(&o);
    char big[2048];
    int n = snprintf(big, sizeof big, "GET /echo HTTP/1.1\r\nX-Big: ");
    memset(big + n, 'b', 1000);
    memcpy(big + n + 1000, "\r\n\r\n", 5);
    cli k = cli_open(F.port);
    cli_sends(&k, big);
    expect_error_and_close(&k, 431);
    cli_close(&k);
    // As soon as certain: the header section has not ended, but it is already too big.
    k = cli_open(F.port);
    cli_send(&k, big, 1100);
    expect_error_and_close(&k, 431);
    cli_close(&k);
    // Just under the limit is fine.
    n = snprintf(big, sizeof big, "GET /echo HTTP/1.1\r\nX-Big: ");
    memset(big + n, 'b', (size_t)(1024 - n - 4));
    memcpy(big + 1020, "\r\n\r\n", 5);
    k = cli_open(F.port);
    cli_sends(&k, big);
    expect_resp(&k, 200, "");
    cli_close(&k);
    stop();
}

static void test_413(void **state) {
    (void)state;
    sp_http_opts o = test_opts();
    o.max_body_bytes = 1000;
    start_with(&o);
    char body[1001];
    memset(body, 'z', sizeof body);
    cli k = cli_open(F.port);
    cli_sends(&k, "POST /echo HTTP/1.1\r\nContent-Length: 1001\r\n\r\n");
    cli_send(&k, body, 1001);
    expect_error_and_close(&k, 413);
    cli_close(&k);
    // With Expect: the final status comes instead of 100 Continue, and no body is sent.
    k = cli_open(F.port);
    cli_sends(&k, "POST /echo HTTP/1.1\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n");
    expect_error_and_close(&k, 413);
    cli_close(&k);
    // A body while the server lingers: the client can send it all and still read the 413.
    k = cli_open(F.port);
    cli_sends(&k, "POST /echo HTTP/1.1\r\nContent-Length: 200000\r\n\r\n");
    char *lots = calloc(1, 200000);
    assert_non_null(lots);
    cli_send(&k, lots, 200000);
    free(lots);
    expect_error_and_close(&k, 413);
    cli_close(&k);
    // The limit itself is allowed.
    k = cli_open(F.port);
    cli_sends(&k, "POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n");
    cli_send(&k, body, 1000);
    resp r;
    assert_true(cli_read_resp(&k, &r));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 1000);
    resp_free(&r);
    cli_close(&k);
    stop();
}

static void test_bad_requests(void **state) {
    (void)state;
    start();
    static const struct {
        const char *req;
        int status;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: x\r\n continued\r\n\r\n", 400},
        {"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
        {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400}, // TLS: refused without a CRLF
        {"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501},
        {"GET / HTTP/2.0\r\n\r\n", 505},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(cases); i++) {
        cli k = cli_open(F.port);
        cli_sends(&k, cases[i].req);
        expect_error_and_close(&k, cases[i].status);
        cli_close(&k);
    }
    // An error after a good request on the same connection: the first answer stays intact.
    cli k = cli_open(F.port);
    cli_sends(&k,
              "POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n\x01\r\n\r\n");
    expect_resp(&k, 200, "ok");
    expect_error_and_close(&k, 400);
    cli_close(&k);
    assert_int_equal(atomic_load(&F.n_requests), 1);
    stop();
}

static void test_conn_cap(void **state) {
    (void)state;
    sp_http_opts o = test_opts();
    o.max_conns = 2;
    start_with(&o);
    // Two connections busy with held requests: a third gets 503 and is closed.
    cli a = cli_open(F.port), b = cli_open(F.port);
    cli_sends(&a, "GET /hold HTTP/1.1\r\n\r\n");
    cli_sends(&b, "GET /hold HTTP/1.1\r\n\r\n");
    assert_true(wait_int(&F.n_requests, 2, 30000));
    cli c = cli_open(F.port);
    cli_sends(&c, "GET /echo HTTP/1.1\r\n\r\n");
    expect_error_and_close(&c, 503);
    cli_close(&c);
    // A slot frees up when a client leaves.
    cli_close(&a);
    assert_true(wait_int(&F.n_closes, 1, 30000));
    cli d = cli_open(F.port);
    cli_sends(&d, "GET /echo HTTP/1.1\r\n\r\n");
    expect_resp(&d, 200, "");
    // d is now idle between requests (keep-alive): at the cap, a newcomer takes its place
    // instead of getting 503, and d is closed.
    cli e = cli_open(F.port);
    cli_sends(&e, "GET /echo HTTP/1.1\r\n\r\n");
    expect_resp(&e, 200, "");
    assert_true(cli_wait_eof(&d, 30000) >= 0);
    cli_close(&d);
    cli_close(&e);
    cli_close(&b);
    stop();
}

static void test_header_timeout(void **state) {
    (void)state;
    sp_http_opts o = test_opts();
    o.header_timeout_ms = 400;
    start_with(&o);
    // Slowloris: a header section one byte per 100 ms never completes.
    cli k = cli_open(F.port);
    int64_t t0 = now_ms();
    cli_sends(&k, "GET /echo HTTP/1.1\r\n");
    int closed_after = -1, sent = 0;
    resp r = {0};
    while (now_ms() - t0 < 30000) { // a hang, not slowness, fails this
        struct pollfd p = {.fd = k.fd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0) {
            // The server gave up: a 408 it could send, then the end of the connection.
            closed_after = (int)(now_ms() - t0);
            if (cli_read_resp(&k, &r)) {
                assert_int_equal(r.status, 408);
                resp_free(&r);
            }
            break;
        }
        if (send(k.fd, "X", 1, MSG_NOSIGNAL) != 1) {
            closed_after = (int)(now_ms() - t0);
            break;
        }
        sent++;
    }
    cli_close(&k);
    // Not before the deadline (the server cannot be early), and at all (a busy machine may be
    // late, so there is no upper bound).
    if (closed_after < 350)
        fail_msg("closed after %d ms (%d bytes sent), want 400 or later", closed_after, sent);
    // A connection that sends nothing at all.
    k = cli_open(F.port);
    int eof = cli_wait_eof(&k, 30000);
    cli_close(&k);
    if (eof < 300)
        fail_msg("silent connection closed after %d ms", eof);
    // A body that stops halfway.
    k = cli_open(F.port);
    cli_sends(&k, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nhalf");
    eof = cli_wait_eof(&k, 30000);
    cli_close(&k);
    if (eof < 300)
        fail_msg("stalled body closed after %d ms", eof);
    assert_int_equal(atomic_load(&F.n_requests), 0);
    stop();
}

static void test_idle_timeout(void **state) {
    (void)state;
    sp_http_opts o = test_opts();
    o.idle_timeout_ms = 300;
    o.header_timeout_ms = 5000;
    start_with(&o);
    cli k = cli_open(F.port);
    cli_sends(&k, "GET /echo HTTP/1.1\r\n\r\n");
    expect_resp(&k, 200, "");
    int eof = cli_wait_eof(&k, 30000);
    cli_close(&k);
    if (eof < 250)
        fail_msg("idle connection closed after %d ms, want 300 or later", eof);
    // A slow generation is not idleness: a held request outlives the idle timeout.
    k = cli_open(F.port);
    cli_sends(&k, "GET /delay?ms=700 HTTP/1.1\r\n\r\n");
    expect_resp(&k, 200, "delayed");
    cli_close(&k);
    stop();
}

static void test_disconnect_while_held(void **state) {
    (void)state;
    start();
    cli k = cli_open(F.port);
    cli_sends(&k, "GET /hold HTTP/1.1\r\n\r\n");
    assert_true(wait_int(&F.n_requests, 1, 30000));
    assert_int_equal(atomic_load(&F.n_closes), 0);
    // A held request has no deadline and nothing is written to it: only noticing the
    // disconnect itself can call on_close.
    cli_close(&k);
    assert_true(wait_int(&F.n_closes, 1, 30000));
    stop();
}

static void test_disconnect_mid_stream(void **state) {
    (void)state;
    start();
    cli k = cli_open(F.port);
    // One chunk now, the next only after 60 s: the disconnect must be seen without a write.
    cli_sends(&k, "GET /stream?n=10&every=60000 HTTP/1.1\r\n\r\n");
    size_t hend;
    while (!find_crlf2(&k, &hend) || !memmem(k.buf, k.len, "chunk 0\n", 8))
        assert_true(cli_fill(&k));
    cli_close(&k);
    assert_true(wait_int(&F.n_closes, 1, 30000));
    assert_int_equal(atomic_load(&F.stream_writes), 1);
    stop();
}

static void test_half_close_cancels(void **state) {
    (void)state;
    start();
    // A client that shuts down its side after the request is treated as gone.
    cli k = cli_open(F.port);
    cli_sends(&k, "GET /hold HTTP/1.1\r\n\r\n");
    assert_int_equal(shutdown(k.fd, SHUT_WR), 0);
    assert_true(wait_int(&F.n_closes, 1, 30000));
    cli_close(&k);
    // ...but a response finished at once still reaches it.
    k = cli_open(F.port);
    cli_sends(&k, "POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nbye!");
    assert_int_equal(shutdown(k.fd, SHUT_WR), 0);
    expect_resp(&k, 200, "bye!");
    assert_true(cli_wait_eof(&k, 30000) >= 0);
    cli_close(&k);
    stop();
}

static void test_slow_reader(void **state) {
    (void)state;
    sp_http_opts o = test_opts();
    o.write_high_water = 256 * 1024;
    start_with(&o);
    cli k = cli_open_buf(F.port, 4096);
    cli_sends(&k, "GET /flood HTTP/1.1\r\n\r\n");
    // Never read: the server's output piles up until stream_write refuses.
    assert_true(wait_int(&F.limit_hit, 1, 30000));
    assert_true(atomic_load(&F.pending_at_limit) > o.write_high_water);
    // The handler closed the connection itself: no on_close for it.
    assert_true(cli_wait_eof(&k, 30000) >= 0);
    assert_true(wait_int(&F.n_conns, 0, 30000));
    assert_int_equal(atomic_load(&F.n_closes), 0);
    cli_close(&k);
    stop();
}

static void test_watch_fd(void **state) {
    (void)state;
    start();
    cli k = cli_open(F.port);
    cli_sends(&k, "GET /watch HTTP/1.1\r\n\r\n");
    assert_true(wait_int(&F.n_requests, 1, 30000));
    uint64_t one = 1;
    assert_int_equal(write(F.efd, &one, sizeof one), (ssize_t)sizeof one);
    expect_resp(&k, 200, "woken");
    cli_close(&k);
    stop();
}

static void test_stop_and_destroy(void **state) {
    (void)state;
    start();
    cli k = cli_open(F.port);
    cli_sends(&k, "GET /hold HTTP/1.1\r\n\r\n");
    assert_true(wait_int(&F.n_requests, 1, 30000));
    // stop from this thread; run returns; destroy reports the unfinished response.
    sp_http_server_stop(F.srv);
    assert_int_equal(pthread_join(F.thread, NULL), 0);
    assert_int_equal(F.run_err, SP_OK);
    assert_int_equal(atomic_load(&F.n_closes), 0);
    // The listening socket is closed: nobody new gets in.
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)F.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_not_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    close(fd);
    sp_http_server_destroy(F.srv);
    F.srv = NULL;
    assert_int_equal(atomic_load(&F.n_closes), 1);
    assert_true(cli_wait_eof(&k, 30000) >= 0);
    cli_close(&k);
    close(F.efd);
    assert_int_equal(atomic_load(&F.errors), 0);
}

static void test_stop_accepting(void **state) {
    (void)state;
    start();
    cli idle = cli_open(F.port);
    cli_sends(&idle, "GET /echo HTTP/1.1\r\n\r\n");
    expect_resp(&idle, 200, "");
    cli k = cli_open(F.port);
    cli_sends(&k, "GET /drain HTTP/1.1\r\n\r\n");
    resp r;
    assert_true(cli_read_resp(&k, &r));
    assert_string_equal(r.body, "draining");
    char v[64];
    assert_string_equal(resp_header(&r, "Connection", v, sizeof v), "close");
    resp_free(&r);
    assert_true(cli_wait_eof(&k, 30000) >= 0);
    assert_true(cli_wait_eof(&idle, 30000) >= 0); // idle keep-alive connections are closed
    cli_close(&k);
    cli_close(&idle);
    assert_true(wait_int(&F.n_conns, 0, 30000));
    stop();
}

static void test_bind_error(void **state) {
    (void)state;
    start();
    sp_http_opts o = test_opts();
    o.port = F.port; // taken
    sp_http_handler h = {.on_request = on_request};
    sp_http_server *s = NULL;
    sp_diag d;
    assert_int_equal(sp_http_server_create(&o, &h, &s, &d), SP_ERR_IO);
    assert_null(s);
    assert_non_null(strstr(d.msg, "in use"));
    stop();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_keep_alive, teardown),
        cmocka_unit_test_teardown(test_http10, teardown),
        cmocka_unit_test_teardown(test_pipelining, teardown),
        cmocka_unit_test_teardown(test_stream, teardown),
        cmocka_unit_test_teardown(test_head, teardown),
        cmocka_unit_test_teardown(test_large_bodies, teardown),
        cmocka_unit_test_teardown(test_expect_continue, teardown),
        cmocka_unit_test_teardown(test_431, teardown),
        cmocka_unit_test_teardown(test_413, teardown),
        cmocka_unit_test_teardown(test_bad_requests, teardown),
        cmocka_unit_test_teardown(test_conn_cap, teardown),
        cmocka_unit_test_teardown(test_header_timeout, teardown),
        cmocka_unit_test_teardown(test_idle_timeout, teardown),
        cmocka_unit_test_teardown(test_disconnect_while_held, teardown),
        cmocka_unit_test_teardown(test_disconnect_mid_stream, teardown),
        cmocka_unit_test_teardown(test_half_close_cancels, teardown),
        cmocka_unit_test_teardown(test_slow_reader, teardown),
        cmocka_unit_test_teardown(test_watch_fd, teardown),
        cmocka_unit_test_teardown(test_stop_and_destroy, teardown),
        cmocka_unit_test_teardown(test_stop_accepting, teardown),
        cmocka_unit_test_teardown(test_bind_error, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
