/* The OpenAI API served in-process (real engine on stories260K, real HTTP server on loopback,
 * a blocking-socket client on the test thread): the request path under allocation failures
 * (every allocation of the HTTP loop thread made to fail in turn: each request still gets an
 * answer, the server keeps serving, and under AddressSanitizer nothing leaks), and the
 * admission, accounting and framing rules of the API. */
#include "testutil.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/util.h"
#include "fault_alloc.h"
#include "server/api.h"
#include "server/http.h"

/* ---- The server ------------------------------------------------------------------------- */

typedef struct server {
    sp_model *m;
    sp_vocab *v;
    sp_engine *e;
    sp_api *api;
    sp_http_server *http;
    pthread_t loop;
    sp_err run_err;
    int port;
} server;

static server S;

static void *loop_main(void *arg) {
    (void)arg;
    S.run_err = sp_http_server_run(S.http);
    return NULL;
}

static void server_start(const sp_engine_opts *eo, const sp_api_opts *ao) {
    memset(&S, 0, sizeof S);
    char *path = sp_test_shared("models/stories260K.gguf");
    sp_diag d;
    assert_int_equal(sp_model_load(path, &S.m, &d), SP_OK);
    free(path);
    assert_int_equal(sp_vocab_load(S.m->gguf, &S.v, &d), SP_OK);
    assert_int_equal(sp_engine_create(S.m, S.v, eo, &S.e, &d), SP_OK);
    assert_int_equal(sp_api_create(ao, S.m, S.v, NULL, S.e, &S.api), SP_OK);
    sp_http_opts ho = sp_http_opts_default();
    ho.port = 0;
    sp_http_handler h = sp_api_handler(S.api);
    assert_int_equal(sp_http_server_create(&ho, &h, &S.http, &d), SP_OK);
    S.port = sp_http_server_port(S.http);
    assert_int_equal(
        sp_http_server_watch_fd(S.http, sp_engine_notify_fd(S.e), sp_api_on_engine_output, S.api),
        SP_OK);
    assert_int_equal(sp_engine_start(S.e), SP_OK);
    assert_int_equal(pthread_create(&S.loop, NULL, loop_main, NULL), 0);
}

static sp_engine_opts engine_opts(void) {
    sp_engine_opts o = sp_engine_opts_default();
    o.n_threads = 1;
    o.n_ctx = 512;
    return o;
}

static sp_api_opts api_opts(void) {
    sp_api_opts o = sp_api_opts_default();
    o.log_requests = false;
    return o;
}

/* Waits until the engine has nothing running or waiting and no KV block is used. */
static void wait_engine_idle(void) {
    for (int i = 0; i < 30000; i++) {
        sp_engine_stats st;
        sp_engine_stats_get(S.e, &st);
        if (st.n_running == 0 && st.n_waiting == 0 && st.n_blocks_used == 0)
            return;
        usleep(1000);
    }
    fail_msg("the engine did not become idle");
}

static void server_stop(void) {
    wait_engine_idle();
    sp_http_server_stop(S.http);
    assert_int_equal(pthread_join(S.loop, NULL), 0);
    assert_int_equal(S.run_err, SP_OK);
    // The loop has stopped: this thread takes its place to read the engine's last
    // notifications. Every exchange has then been answered and freed.
    sp_api_on_engine_output(S.api);
    assert_int_equal(sp_api_n_active(S.api), 0);
    sp_http_server_destroy(S.http);
    sp_engine_destroy(S.e);
    sp_api_destroy(S.api);
    sp_vocab_destroy(S.v);
    sp_model_destroy(S.m);
    S.http = NULL;
}

static int teardown(void **state) {
    (void)state;
    sp_fault_disarm();
    if (S.http)
        server_stop();
    return 0;
}

/* ---- The client ------------------------------------------------------------------------- */

typedef struct reply {
    int status;      // 0: no status line arrived
    char head[2048]; // status line and headers
    char *body;      // de-chunked, NUL-terminated
    size_t body_len;
    bool complete; // the whole body arrived (Content-Length, or the last chunk)
} reply;

static int conn_open(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)S.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void conn_send(int fd, const char *method, const char *path, const char *body) {
    char head[512];
    size_t n = body ? strlen(body) : 0;
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      method, path, n);
    // The server may answer and close before it has read everything (e.g. a 503): the
    // answer is what the test reads, so a refused send is not an error here.
    if (send(fd, head, (size_t)hn, MSG_NOSIGNAL) == hn && n)
        (void)!send(fd, body, n, MSG_NOSIGNAL);
}

static const char *header(const reply *r, const char *name) {
    size_t nl = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n"))
        if (!strncasecmp(p + 2, name, nl) && p[2 + nl] == ':')
            return p + 3 + nl + strspn(p + 3 + nl, " ");
    return NULL;
}

/* Reads the whole answer (the server closes after it). A hang fails the test. */
static void conn_read(int fd, reply *r) {
    memset(r, 0, sizeof *r);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, 60000);
        if (pr == 0)
            fail_msg("no answer within 60 s");
        if (len + 4096 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    r->body = calloc(len + 1, 1);
    assert_non_null(r->body);
    char *end = strstr(buf, "\r\n\r\n");
    if (!end || sscanf(buf, "HTTP/1.1 %d", &r->status) != 1) {
        free(buf);
        return;
    }
    size_t hl = (size_t)(end - buf) + 2;
    snprintf(r->head, sizeof r->head, "%.*s", (int)SP_MIN(hl, sizeof r->head - 1), buf);
    const char *p = end + 4, *stop = buf + len;
    const char *te = header(r, "Transfer-Encoding");
    if (te && !strncasecmp(te, "chunked", 7)) {
        for (;;) {
            char *eol = strstr(p, "\r\n");
            if (!eol)
                break;
            size_t n = strtoul(p, NULL, 16);
            if (n == 0) {
                r->complete = true;
                break;
            }
            if ((size_t)(stop - (eol + 2)) < n + 2)
                break;
            memcpy(r->body + r->body_len, eol + 2, n);
            r->body_len += n;
            p = eol + 2 + n + 2;
        }
    } else {
        const char *cl = header(r, "Content-Length");
        size_t want = cl ? strtoul(cl, NULL, 10) : 0;
        r->body_len = SP_MIN(want, (size_t)(stop - p));
        memcpy(r->body, p, r->body_len);
        r->complete = r->body_len == want;
    }
    free(buf);
}

/* A long streamed completion (about 500 steps) sent on a new connection, not yet read. */
static int send_long_stream(void) {
    int fd = conn_open();
    conn_send(fd, "POST", "/v1/completions",
              "{\"prompt\": \"Once\", \"max_tokens\": 500, \"ignore_eos\": true, \"stream\": "
              "true}");
    return fd;
}

/* Waits for the head of a stream's 200 answer on fd (the request is running). */
static void expect_stream_started(int fd) {
    char b[65];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 60000), 1);
    ssize_t n = recv(fd, b, sizeof b - 1, 0);
    assert_true(n > 0);
    b[n] = 0;
    assert_non_null(strstr(b, "HTTP/1.1 200"));
}

static void call(const char *method, const char *path, const char *body, reply *r) {
    int fd = conn_open();
    conn_send(fd, method, path, body);
    conn_read(fd, r);
}

static json_t *body_json(const reply *r) {
    json_error_t je;
    return json_loadb(r->body, r->body_len, 0, &je);
}

/* An error answer in the API's shape. */
static void expect_error(const reply *r, int status, const char *code) {
    if (r->status != status)
        fail_msg("status %d, want %d: %s", r->status, status, r->body);
    json_t *j = body_json(r);
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_string(json_object_get(e, "message")));
    assert_true(json_is_string(json_object_get(e, "type")));
    assert_non_null(json_object_get(e, "param"));
    json_t *c = json_object_get(e, "code");
    if (code)
        assert_string_equal(json_string_value(c), code);
    else
        assert_true(json_is_string(c) || json_is_null(c));
    json_decref(j);
}

/* Appends tool calls (a message's, or a delta's: names when calls start, arguments or their
 * next fragments) to a choice's text, so that calls streamed and not compare as one text. */
static void append_calls(char *text, size_t cap, json_t *calls) {
    size_t i;
    json_t *call;
    json_array_foreach(calls, i, call) {
        json_t *name = json_object_get(json_object_get(call, "function"), "name");
        json_t *args = json_object_get(json_object_get(call, "function"), "arguments");
        if (json_is_string(name))
            snprintf(text + strlen(text), cap - strlen(text), " => %s ", json_string_value(name));
        if (json_is_string(args))
            strncat(text, json_string_value(args), cap - strlen(text) - 1);
    }
}

/* The streamed events of a reply: the texts (tool calls included) and finish reasons of
 * choices 0..1, whether an error event came, and whether [DONE] ended the stream. */
typedef struct events {
    char text[2][2048];
    char finish[2][16];
    bool error, done;
    json_t *usage;
} events;

static void parse_events(const reply *r, events *ev) {
    memset(ev, 0, sizeof *ev);
    for (const char *p = r->body; (p = strstr(p, "data: ")) != NULL;) {
        p += 6;
        const char *end = strstr(p, "\n\n");
        assert_non_null(end);
        assert_false(ev->done); // nothing after [DONE]
        if (!strncmp(p, "[DONE]", 6)) {
            ev->done = true;
            p = end;
            continue;
        }
        json_error_t je;
        json_t *j = json_loadb(p, (size_t)(end - p), 0, &je);
        assert_non_null(j);
        if (json_object_get(j, "error"))
            ev->error = true;
        json_t *u = json_object_get(j, "usage");
        if (json_is_object(u)) {
            json_decref(ev->usage);
            ev->usage = json_incref(u);
        }
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(j, "choices"), i, c) {
            int idx = (int)json_integer_value(json_object_get(c, "index"));
            assert_true(idx >= 0 && idx < 2);
            json_t *t = json_object_get(c, "text");
            if (!t)
                t = json_object_get(json_object_get(c, "delta"), "content");
            if (json_is_string(t))
                strncat(ev->text[idx], json_string_value(t),
                        sizeof ev->text[idx] - strlen(ev->text[idx]) - 1);
            append_calls(ev->text[idx], sizeof ev->text[idx],
                         json_object_get(json_object_get(c, "delta"), "tool_calls"));
            json_t *f = json_object_get(c, "finish_reason");
            if (json_is_string(f)) {
                assert_string_equal(ev->finish[idx], ""); // one finish_reason per choice
                snprintf(ev->finish[idx], sizeof ev->finish[idx], "%s", json_string_value(f));
            }
        }
        json_decref(j);
        p = end;
    }
}

/* The choice texts (tool calls included) of a non-streamed answer. */
static void parse_choices(const reply *r, events *ev) {
    memset(ev, 0, sizeof *ev);
    json_t *j = body_json(r);
    assert_non_null(j);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(j, "choices"), i, c) {
        int idx = (int)json_integer_value(json_object_get(c, "index"));
        assert_true(idx >= 0 && idx < 2);
        json_t *t = json_object_get(c, "text");
        if (!t)
            t = json_object_get(json_object_get(c, "message"), "content");
        assert_true(json_is_string(t));
        snprintf(ev->text[idx], sizeof ev->text[idx], "%s", json_string_value(t));
        append_calls(ev->text[idx], sizeof ev->text[idx],
                     json_object_get(json_object_get(c, "message"), "tool_calls"));
        snprintf(ev->finish[idx], sizeof ev->finish[idx], "%s",
                 json_string_value(json_object_get(c, "finish_reason")));
    }
    ev->usage = json_incref(json_object_get(j, "usage"));
    json_decref(j);
}

/* ---- Allocation failures on the request path --------------------------------------------- */

typedef struct variant {
    const char *path;
    const char *body;
    bool stream;
    int n_choices;
} variant;

/* A chat whose grammar makes the model write some content, then call a tool twice; `more`
 * adds fields. */
#define TOOLS_BODY(more)                                                                           \
    "{\"messages\": [{\"role\": \"user\", \"content\": \"Weather?\"}], \"max_tokens\": 200, "      \
    "\"temperature\": 0, \"n\": 2, " more ", \"tools\": "                                          \
    "[{\"type\": \"function\", \"function\": {\"name\": \"w\"}}], \"grammar\": "                   \
    "\"root ::= \\\"Checking.\\\" (\\\"\\\\n<tool_call>{\\\\\\\"name\\\\\\\": "                    \
    "\\\\\\\"w\\\\\\\", \\\\\\\"arguments\\\\\\\": {\\\\\\\"n\\\\\\\": \\\" [0-9] "                \
    "\\\"}}</tool_call>\\\"){2}\\n\"}"

static const variant variants[] = {
    {"/v1/completions",
     "{\"prompt\": \"Once upon a time\", \"max_tokens\": 6, \"temperature\": 0, \"logprobs\": 2, "
     "\"echo\": true, \"stop\": [\"zzz\"]}",
     false, 1},
    {"/v1/chat/completions",
     "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", "
     "\"content\": \"Tell a story.\"}], \"max_tokens\": 5, \"temperature\": 0, \"n\": 2, "
     "\"stream\": true, \"logprobs\": true, \"top_logprobs\": 2, \"stream_options\": "
     "{\"include_usage\": true}}",
     true, 2},
    {"/v1/completions",
     "{\"prompt\": [\"The cat\", \"A dog\"], \"max_tokens\": 4, \"temperature\": 0, \"stream\": "
     "true}",
     true, 2},
    // Content, then two tool calls (a grammar writes them), streamed as tool_calls deltas, and
    // not (small enough for the connection's output buffer: a response that cannot be queued
    // closes the connection).
    {"/v1/chat/completions", TOOLS_BODY("\"stream\": true, \"logprobs\": true"), true, 2},
    {"/v1/chat/completions", TOOLS_BODY("\"stream\": false"), false, 2},
};

/* Checks one answer given under an injected failure against the answer without one: the same
 * output, or an error answer (500/503 in the API's shape, or a stream's error event), or, only
 * where a stream's output could not be queued, a stream cut short. Never silence. */
static void check_under_fault(const variant *va, const reply *r, const events *want, long n) {
    if (r->status == 0) {
        sp_fault_print_where();
        fail_msg("%s allocation %ld: no answer at all", va->path, n);
    }
    if (r->status != 200) {
        if (r->status != 500 && r->status != 503)
            fail_msg("allocation %ld: status %d: %s", n, r->status, r->body);
        expect_error(r, r->status, NULL);
        return;
    }
    events got;
    if (!va->stream) {
        assert_true(r->complete);
        parse_choices(r, &got);
    } else {
        parse_events(r, &got);
        if (!r->complete || !got.done) {
            assert_false(got.done && !r->complete);
            json_decref(got.usage);
            return; // cut short: the client sees a stream without its last chunk
        }
        if (got.error) {
            json_decref(got.usage);
            return;
        }
    }
    for (int i = 0; i < va->n_choices; i++) {
        if (strcmp(got.text[i], want->text[i]) || strcmp(got.finish[i], want->finish[i]))
            fail_msg("allocation %ld: choice %d '%s' (%s), want '%s' (%s)", n, i, got.text[i],
                     got.finish[i], want->text[i], want->finish[i]);
    }
    json_decref(got.usage);
}

static void expected_output(const variant *va, events *want) {
    reply r;
    call("POST", va->path, va->body, &r);
    assert_int_equal(r.status, 200);
    if (va->stream) {
        parse_events(&r, want);
        assert_true(want->done && !want->error);
    } else {
        parse_choices(&r, want);
    }
    for (int i = 0; i < va->n_choices; i++) {
        assert_true(want->finish[i][0]);
        if (strstr(va->body, "\"tools\"")) { // the content, then the two calls
            assert_string_equal(want->finish[i], "tool_calls");
            assert_non_null(strstr(want->text[i], "Checking. => w {\"n\": "));
            assert_non_null(strstr(strstr(want->text[i], "}") + 1, " => w {\"n\": "));
        }
    }
    free(r.body);
}

static void test_allocation_failures(void **state) {
    (void)state;
    sp_engine_opts eo = engine_opts();
    sp_api_opts ao = api_opts();
    server_start(&eo, &ao);
    long total = 0, answered_with_error = 0;
    for (size_t vi = 0; vi < SP_ARRAY_LEN(variants); vi++) {
        const variant *va = &variants[vi];
        events want;
        expected_output(va, &want);
        json_decref(want.usage);
        // How many allocations the loop thread makes for one such request.
        sp_fault_arm(S.loop, LONG_MAX);
        reply r;
        call("POST", va->path, va->body, &r);
        free(r.body);
        long n_allocs = sp_fault_seen();
        sp_fault_disarm();
        assert_true(n_allocs > 10);
        for (long n = 1; n <= n_allocs; n++) {
            sp_fault_arm(S.loop, n);
            call("POST", va->path, va->body, &r);
            bool hit = sp_fault_disarm();
            if (hit) {
                check_under_fault(va, &r, &want, n);
                answered_with_error += r.status != 200;
            }
            free(r.body);
            total++;
            // The server keeps serving, with the same output.
            events again;
            expected_output(va, &again);
            for (int i = 0; i < va->n_choices; i++)
                assert_string_equal(again.text[i], want.text[i]);
            json_decref(again.usage);
        }
    }
    print_message("%ld failed allocations, %ld answered with an error\n", total,
                  answered_with_error);
    assert_true(answered_with_error > 0);
    server_stop();
}

/* ---- Admission, accounting, framing ---------------------------------------------------- */

static void test_usage_counts_each_prompt_once(void **state) {
    (void)state;
    sp_engine_opts eo = engine_opts();
    sp_api_opts ao = api_opts();
    server_start(&eo, &ao);
    int64_t prompt[4] = {0};
    for (int n = 1; n <= 3; n++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"prompt\": \"Once upon a time\", \"max_tokens\": 3, \"n\": %d, "
                 "\"temperature\": 0}",
                 n);
        reply r;
        call("POST", "/v1/completions", body, &r);
        assert_int_equal(r.status, 200);
        json_t *j = body_json(&r);
        json_t *u = json_object_get(j, "usage");
        prompt[n] = json_integer_value(json_object_get(u, "prompt_tokens"));
        assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 3 * n);
        json_decref(j);
        free(r.body);
    }
    assert_true(prompt[1] > 1);
    assert_int_equal(prompt[2], prompt[1]);
    assert_int_equal(prompt[3], prompt[1]);
    server_stop();
}

/* With one running sequence and two waiting at most, requests sent at once are taken while
 * their sequences fit (3 of 6), the others get 503 with Retry-After; a request that could
 * never fit gets 400 on 'n'. */
static void test_waiting_limit_counts_sequences(void **state) {
    (void)state;
    sp_engine_opts eo = engine_opts();
    eo.max_seqs = 1;
    sp_api_opts ao = api_opts();
    ao.max_waiting = 2;
    server_start(&eo, &ao);
    reply r;
    call("POST", "/v1/completions", "{\"prompt\": [\"a\", \"b\"], \"n\": 2, \"max_tokens\": 2}",
         &r);
    expect_error(&r, 400, NULL);
    assert_non_null(strstr(r.body, "\"param\":\"n\""));
    free(r.body);
    // Long requests, all sent before any answer is read.
    int fds[6];
    for (int i = 0; i < 6; i++)
        fds[i] = send_long_stream();
    int overloaded = 0;
    for (int i = 3; i < 6; i++) {
        conn_read(fds[i], &r);
        expect_error(&r, 503, "overloaded");
        assert_non_null(header(&r, "Retry-After"));
        overloaded++;
        free(r.body);
    }
    assert_int_equal(overloaded, 3);
    // The three taken are streaming; their clients leave, which cancels them.
    for (int i = 0; i < 3; i++) {
        expect_stream_started(fds[i]);
        close(fds[i]);
    }
    server_stop();
}

static double metric(const char *name) {
    reply r;
    call("GET", "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    const char *p = r.body;
    double v = -1;
    size_t nl = strlen(name);
    while ((p = strstr(p, name)) != NULL) {
        if ((p == r.body || p[-1] == '\n') && p[nl] == ' ') {
            v = strtod(p + nl + 1, NULL);
            break;
        }
        p += nl;
    }
    free(r.body);
    assert_true(v >= 0);
    return v;
}

/* A request that fails in the engine (its deadline passes while another runs) is answered
 * once: 503 deadline_exceeded, counted once in the HTTP metrics; streamed, it ends with an
 * error event and [DONE]. */
static void test_failures_answered_once(void **state) {
    (void)state;
    sp_engine_opts eo = engine_opts();
    eo.max_seqs = 1;
    sp_api_opts ao = api_opts();
    server_start(&eo, &ao);
    int busy = send_long_stream();
    expect_stream_started(busy);
    double req0 = metric("spindle_http_requests_total");
    double err0 = metric("spindle_http_errors_total");
    reply r;
    call("POST", "/v1/completions", "{\"prompt\": \"Hi\", \"max_tokens\": 2, \"deadline_ms\": 1}",
         &r);
    expect_error(&r, 503, "deadline_exceeded");
    free(r.body);
    // Since req0: the second /metrics, the failed request, the third /metrics (this one is not
    // counted yet).
    double req1 = metric("spindle_http_requests_total");
    double err1 = metric("spindle_http_errors_total");
    if (req1 != req0 + 3 || err1 != err0 + 1)
        fail_msg("requests %g -> %g, errors %g -> %g", req0, req1, err0, err1);
    call("POST", "/v1/completions",
         "{\"prompt\": \"Hi\", \"max_tokens\": 2, \"deadline_ms\": 1, \"stream\": true}", &r);
    assert_int_equal(r.status, 200);
    assert_true(r.complete);
    events ev;
    parse_events(&r, &ev);
    assert_true(ev.error && ev.done);
    assert_non_null(strstr(r.body, "deadline_exceeded"));
    free(r.body);
    close(busy);
    server_stop();
}

/* A KV pool of 96 tokens: a request asking for 2000 tokens ends with "length" when it fills
 * the pool, its stream ends properly, and the next request is served; a prompt that cannot
 * fit the pool is a 400 that names it. */
static void test_pool_bounds_requests(void **state) {
    (void)state;
    sp_engine_opts eo = engine_opts();
    eo.kv_tokens = 96;
    sp_api_opts ao = api_opts();
    server_start(&eo, &ao);
    reply r;
    call("POST", "/v1/completions",
         "{\"prompt\": \"Once upon a time\", \"max_tokens\": 2000, \"ignore_eos\": true, "
         "\"stream\": true, \"stream_options\": {\"include_usage\": true}}",
         &r);
    assert_int_equal(r.status, 200);
    assert_true(r.complete);
    events ev;
    parse_events(&r, &ev);
    assert_true(ev.done && !ev.error);
    assert_string_equal(ev.finish[0], "length");
    json_t *u = ev.usage;
    assert_non_null(u);
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")) +
                         json_integer_value(json_object_get(u, "completion_tokens")),
                     96);
    json_decref(u);
    free(r.body);
    call("POST", "/v1/completions", "{\"prompt\": \"Hi\", \"max_tokens\": 3}", &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    char big[2048] = "{\"prompt\": [1";
    for (int i = 0; i < 120; i++)
        strcat(big, ", 300");
    strcat(big, "]}");
    call("POST", "/v1/completions", big, &r);
    expect_error(&r, 400, "context_length_exceeded");
    assert_non_null(strstr(r.body, "kv-memory"));
    free(r.body);
    server_stop();
}

static void test_head_and_methods(void **state) {
    (void)state;
    sp_engine_opts eo = engine_opts();
    sp_api_opts ao = api_opts();
    server_start(&eo, &ao);
    reply r;
    call("HEAD", "/health", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    free(r.body);
    call("HEAD", "/v1/models", NULL, &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    call("GET", "/v1/completions", NULL, &r);
    expect_error(&r, 405, "method_not_allowed");
    assert_true(!strncmp(header(&r, "Allow"), "POST\r\n", 6));
    free(r.body);
    call("POST", "/health", NULL, &r);
    expect_error(&r, 405, "method_not_allowed");
    assert_non_null(strstr(header(&r, "Allow"), "GET, HEAD"));
    free(r.body);
    server_stop();
}

/* /tokenize in llama.cpp's form and vLLM's: a completions prompt tokenizes as the content with
 * special tokens added, and a chat request's count is what generation counts as its prompt. */
static void test_tokenize(void **state) {
    (void)state;
    sp_engine_opts eo = engine_opts();
    sp_api_opts ao = api_opts();
    server_start(&eo, &ao);
    reply r;
    call("POST", "/tokenize", "{\"content\": \"Once upon a time\", \"add_special\": true}", &r);
    assert_int_equal(r.status, 200);
    json_t *a = body_json(&r);
    free(r.body);
    call("POST", "/tokenize", "{\"prompt\": \"Once upon a time\"}", &r);
    assert_int_equal(r.status, 200);
    json_t *b = body_json(&r);
    free(r.body);
    assert_true(json_equal(json_object_get(a, "tokens"), json_object_get(b, "tokens")));
    assert_int_equal(json_integer_value(json_object_get(b, "count")),
                     json_array_size(json_object_get(b, "tokens")));
    assert_true(json_array_size(json_object_get(b, "tokens")) > 2);
    json_decref(a);
    json_decref(b);
    const char *msgs = "\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
                       "{\"role\": \"user\", \"content\": \"Once upon a time\"}]";
    char body[512];
    snprintf(body, sizeof body, "{%s}", msgs);
    call("POST", "/tokenize", body, &r);
    assert_int_equal(r.status, 200);
    a = body_json(&r);
    free(r.body);
    snprintf(body, sizeof body, "{%s, \"max_tokens\": 1}", msgs);
    call("POST", "/v1/chat/completions", body, &r);
    assert_int_equal(r.status, 200);
    b = body_json(&r);
    free(r.body);
    assert_int_equal(json_integer_value(json_object_get(a, "count")),
                     json_integer_value(json_object_get(json_object_get(b, "usage"),
                                                        "prompt_tokens")));
    json_decref(a);
    json_decref(b);
    call("POST", "/tokenize", "{\"messages\": 3}", &r);
    expect_error(&r, 400, NULL);
    free(r.body);
    server_stop();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_usage_counts_each_prompt_once, teardown),
        cmocka_unit_test_teardown(test_waiting_limit_counts_sequences, teardown),
        cmocka_unit_test_teardown(test_failures_answered_once, teardown),
        cmocka_unit_test_teardown(test_pool_bounds_requests, teardown),
        cmocka_unit_test_teardown(test_head_and_methods, teardown),
        cmocka_unit_test_teardown(test_tokenize, teardown),
        cmocka_unit_test_teardown(test_allocation_failures, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
