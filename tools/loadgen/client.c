/* The benchmark's event loop (see client.h). */
#include "loadgen/client.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/util.h"
#include "loadgen/http.h"
#include "loadgen/stats.h"

#define READ_BUF_BYTES 65536
#define SSE_MAX_BYTES  (16u << 20)
#define ERR_BODY_MAX   512

enum { C_CONNECTING, C_SENDING, C_RECEIVING, C_IDLE };

typedef struct run run;

/* One connection; it carries one request at a time. */
typedef struct conn {
    run *run;
    int fd;
    int state;
    int req;   // the request on it, or -1 when idle
    bool used; // has carried a response before (a stale keep-alive connection may be closed)
    bool got_bytes;
    bool want_out; // EPOLLOUT armed
    bool dead;     // closed; freed after the current batch of events
    char *out;     // request bytes (heap)
    size_t out_len, out_off;
    sp_lg_http_resp http;
    sp_lg_sse sse;
    char err_body[ERR_BODY_MAX + 1];
    size_t err_len;
    struct conn *prev, *next; // all connections
    struct conn *next_idle;
} conn;

/* Per-request progress besides its result. */
typedef struct req_state {
    int64_t ready_ns; // arrived (may then wait for a slot)
    int64_t start_ns; // handed to a connection
    int64_t last_ns;  // last chunk carrying a choice
    bool done_seen;   // [DONE]
    bool failed;      // an error event or an unparsable chunk
    bool retried;
    char *body; // the JSON body (kept for a retry)
    char *err;  // the error message from the stream, heap
    char *text; // generated text so far (multi-turn, keep_text)
    size_t text_len, text_cap;
} req_state;

typedef struct heap_ent {
    int64_t t_ns;
    int idx;
} heap_ent;

struct run {
    const sp_lg_run_opts *o;
    const sp_lg_dataset *ds;
    sp_lg_result *res;
    req_state *rs;
    int ep;
    int64_t t0;
    int64_t now; // time of the current batch of input
    heap_ent *heap;
    size_t n_heap;
    int *ready; // FIFO of arrived request indices
    size_t ready_head, ready_tail;
    conn *all;
    conn *idle;
    conn *dead; // closed connections awaiting free (events of this batch may name them)
    int n_inflight;
    int64_t t_last_done;
    size_t n_done, n_failed;
    sp_lg_history *hist; // per multi-turn session
    sp_lg_rng rng;       // think times
    bool multi_turn;
    bool use_pwait2;
    char *rbuf;
    char hdr_prefix[700]; // request head before Content-Length
    int hdr_prefix_len;
    int64_t last_progress_ns;
    sp_err fatal;
};

void sp_lg_result_free(sp_lg_result *r) {
    if (!r)
        return;
    free(r->itl_s);
    free(r->error);
    free(r->text);
    memset(r, 0, sizeof *r);
}

/* ---- Timer heap ---------------------------------------------------------------------------- */

static void heap_push(run *r, int64_t t, int idx) {
    size_t i = r->n_heap++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (r->heap[p].t_ns <= t)
            break;
        r->heap[i] = r->heap[p];
        i = p;
    }
    r->heap[i] = (heap_ent){t, idx};
}

static heap_ent heap_pop(run *r) {
    heap_ent top = r->heap[0];
    heap_ent last = r->heap[--r->n_heap];
    size_t i = 0, n = r->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && r->heap[c + 1].t_ns < r->heap[c].t_ns)
            c++;
        if (r->heap[c].t_ns >= last.t_ns)
            break;
        r->heap[i] = r->heap[c];
        i = c;
    }
    if (n)
        r->heap[i] = last;
    return top;
}

/* ---- Helpers ------------------------------------------------------------------------------- */

static double secs(int64_t ns) {
    return (double)ns / 1e9;
}

static void set_error(run *r, int idx, const char *fmt, ...) SP_PRINTF(3, 4);
static void set_error(run *r, int idx, const char *fmt, ...) {
    req_state *s = &r->rs[idx];
    if (s->err)
        return; // keep the first cause
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    // Messages may quote a server's bytes: keep them printable ASCII so they stay valid
    // UTF-8 in the result JSON.
    for (char *q = buf; *q; q++)
        if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e)
            *q = '?';
    s->err = strdup(buf);
    s->failed = true;
}

static bool itl_push(sp_lg_result *res, double v) {
    if (res->n_itl == res->cap_itl) {
        int32_t nc = res->cap_itl ? res->cap_itl * 2 : 64;
        double *n = realloc(res->itl_s, (size_t)nc * sizeof *n);
        if (!n)
            return false;
        res->itl_s = n;
        res->cap_itl = nc;
    }
    res->itl_s[res->n_itl++] = v;
    return true;
}

static void ep_mod(run *r, conn *c, bool out) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0u), .data.ptr = c};
    epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = out;
}

static void conn_close(run *r, conn *c) {
    epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        r->all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->state == C_IDLE) { // unlink from the idle stack
        for (conn **p = &r->idle; *p; p = &(*p)->next_idle)
            if (*p == c) {
                *p = c->next_idle;
                break;
            }
    }
    sp_lg_sse_deinit(&c->sse);
    free(c->out);
    c->out = NULL;
    c->dead = true;
    c->next = r->dead;
    r->dead = c;
}

static void free_dead(run *r) {
    while (r->dead) {
        conn *c = r->dead;
        r->dead = c->next;
        free(c);
    }
}

static conn *conn_open(run *r, int idx) {
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->run = r;
    c->req = -1;
    c->fd = socket(r->o->target->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        set_error(r, idx, "socket: %s", strerror(errno));
        free(c);
        return NULL;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = C_CONNECTING;
    if (connect(c->fd, (const struct sockaddr *)&r->o->target->addr, r->o->target->addr_len) &&
        errno != EINPROGRESS) {
        set_error(r, idx, "connect: %s", strerror(errno));
        close(c->fd);
        free(c);
        return NULL;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev)) {
        set_error(r, idx, "epoll_ctl: %s", strerror(errno));
        close(c->fd);
        free(c);
        return NULL;
    }
    c->want_out = true;
    c->next = r->all;
    if (r->all)
        r->all->prev = c;
    r->all = c;
    return c;
}

static bool on_sse(void *ctx, const char *event, const char *data, size_t len);
static bool on_body(void *ctx, const char *data, size_t len);
static void finish_request(run *r, int idx);
static void start_request(run *r, int idx);

/* Prepares c to carry request idx (its bytes in c->out). */
static bool conn_attach(run *r, conn *c, int idx) {
    req_state *s = &r->rs[idx];
    size_t bl = strlen(s->body);
    char cl[48];
    int cll = snprintf(cl, sizeof cl, "Content-Length: %zu\r\n\r\n", bl);
    size_t total = (size_t)r->hdr_prefix_len + (size_t)cll + bl;
    free(c->out);
    c->out = malloc(total);
    if (!c->out)
        return false;
    memcpy(c->out, r->hdr_prefix, (size_t)r->hdr_prefix_len);
    memcpy(c->out + r->hdr_prefix_len, cl, (size_t)cll);
    memcpy(c->out + r->hdr_prefix_len + cll, s->body, bl);
    c->out_len = total;
    c->out_off = 0;
    c->req = idx;
    c->got_bytes = false;
    c->err_len = 0;
    sp_lg_http_init(&c->http, false, on_body, c);
    sp_lg_sse_deinit(&c->sse);
    sp_lg_sse_init(&c->sse, SSE_MAX_BYTES, on_sse, c);
    return true;
}

/* Writes what the socket takes; arms EPOLLOUT while bytes remain. */
static void conn_flush(run *r, conn *c);

/* The connection failed or closed before the response was complete. */
static void conn_fail(run *r, conn *c, const char *what, int e) {
    int idx = c->req;
    bool retry = idx >= 0 && c->used && !c->got_bytes && !r->rs[idx].retried;
    c->req = -1;
    c->state = C_CONNECTING; // not idle
    conn_close(r, c);
    if (idx < 0)
        return;
    if (retry) {
        // A kept-alive connection that the server had closed: send again on a fresh one.
        r->rs[idx].retried = true;
        r->n_inflight--;
        start_request(r, idx);
        return;
    }
    if (e)
        set_error(r, idx, "%s: %s", what, strerror(e));
    else
        set_error(r, idx, "%s", what);
    finish_request(r, idx);
}

static void conn_flush(run *r, conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w > 0) {
            c->out_off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            if (!c->want_out)
                ep_mod(r, c, true);
            return;
        }
        conn_fail(r, c, "send", errno);
        return;
    }
    c->state = C_RECEIVING;
    if (c->want_out)
        ep_mod(r, c, false);
}

/* ---- Response handling --------------------------------------------------------------------- */

static bool on_body(void *ctx, const char *data, size_t len) {
    conn *c = ctx;
    run *r = c->run;
    if (c->http.status != 200) {
        size_t k = SP_MIN(len, ERR_BODY_MAX - c->err_len);
        memcpy(c->err_body + c->err_len, data, k);
        c->err_len += k;
        return true;
    }
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = sp_lg_sse_feed(&c->sse, data, len, &d);
    if (err && err != SP_ERR_CANCELLED)
        set_error(r, c->req, "event stream: %s", d.msg[0] ? d.msg : sp_err_str(err));
    return err == SP_OK;
}

static bool text_append(req_state *s, const char *t, size_t n) {
    if (s->text_len + n + 1 > s->text_cap) {
        size_t nc = s->text_cap ? s->text_cap : 256;
        while (nc < s->text_len + n + 1)
            nc *= 2;
        char *p = realloc(s->text, nc);
        if (!p)
            return false;
        s->text = p;
        s->text_cap = nc;
    }
    memcpy(s->text + s->text_len, t, n);
    s->text_len += n;
    s->text[s->text_len] = '\0';
    return true;
}

static bool on_sse(void *ctx, const char *event, const char *data, size_t len) {
    conn *c = ctx;
    run *r = c->run;
    int idx = c->req;
    req_state *s = &r->rs[idx];
    sp_lg_result *res = &r->res[idx];
    (void)event;
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        s->done_seen = true;
        return true;
    }
    json_error_t je;
    json_t *j = json_loadb(data, len, 0, &je);
    if (!json_is_object(j)) {
        json_decref(j);
        set_error(r, idx, "unparsable event: %s", je.text);
        return false;
    }
    json_t *e = json_object_get(j, "error");
    if (e) {
        json_t *m = json_object_get(e, "message");
        set_error(r, idx, "server error event: %s",
                  json_is_string(m) ? json_string_value(m) : "(no message)");
        json_decref(j);
        return false;
    }
    json_t *choices = json_object_get(j, "choices");
    if (json_is_array(choices) && json_array_size(choices) > 0) {
        json_t *c0 = json_array_get(choices, 0);
        json_t *text = json_object_get(c0, "text");
        bool token = true;
        if (!text) {
            json_t *delta = json_object_get(c0, "delta");
            text = json_object_get(delta, "content");
            // The chat stream's opening {"role": "assistant", "content": ""} is not a token.
            if (json_object_get(delta, "role") &&
                (!json_is_string(text) || json_string_length(text) == 0) &&
                json_is_null(json_object_get(c0, "finish_reason")) &&
                !json_object_get(delta, "tool_calls"))
                token = false;
        }
        if (token) {
            if (res->n_chunks == 0)
                res->ttft_s = secs(r->now - s->start_ns);
            else if (!itl_push(res, secs(r->now - s->last_ns))) {
                r->fatal = SP_ERR_NOMEM;
                json_decref(j);
                return false;
            }
            s->last_ns = r->now;
            res->n_chunks++;
            if ((r->multi_turn || r->o->keep_text) && json_is_string(text) &&
                !text_append(s, json_string_value(text), json_string_length(text))) {
                r->fatal = SP_ERR_NOMEM;
                json_decref(j);
                return false;
            }
        }
    }
    json_t *usage = json_object_get(j, "usage");
    if (json_is_object(usage)) {
        json_t *ct = json_object_get(usage, "completion_tokens");
        json_t *pt = json_object_get(usage, "prompt_tokens");
        if (json_is_integer(ct))
            res->output_tokens = (int32_t)json_integer_value(ct);
        if (json_is_integer(pt))
            res->prompt_len = (int32_t)json_integer_value(pt);
    }
    json_decref(j);
    return true;
}

/* Extracts a readable message from an error response body. */
static void http_error(run *r, conn *c) {
    c->err_body[c->err_len] = '\0';
    const char *msg = c->err_body;
    json_t *j = json_loads(c->err_body, 0, NULL);
    json_t *m = json_object_get(json_object_get(j, "error"), "message");
    if (json_is_string(m))
        msg = json_string_value(m);
    set_error(r, c->req, "HTTP %d: %s", c->http.status, msg);
    json_decref(j);
}

/* The response on c is complete. */
static void conn_response_done(run *r, conn *c) {
    int idx = c->req;
    r->res[idx].http_status = c->http.status;
    if (c->http.status != 200)
        http_error(r, c);
    c->req = -1;
    c->used = true;
    if (c->out_off < c->out_len)
        c->http.keep_alive = false; // answered before the request was sent whole
    if (c->http.keep_alive) {
        c->state = C_IDLE;
        c->next_idle = r->idle;
        r->idle = c;
        if (c->want_out)
            ep_mod(r, c, false);
    } else {
        conn_close(r, c);
    }
    finish_request(r, idx);
}

static void conn_readable(run *r, conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, r->rbuf, READ_BUF_BYTES, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        r->now = sp_time_ns();
        if (c->state == C_IDLE) {
            // The server closed an idle connection (or sent something unasked): drop it.
            conn_close(r, c);
            return;
        }
        if (n < 0) {
            conn_fail(r, c, "recv", errno);
            return;
        }
        if (n == 0) {
            sp_diag d;
            sp_diag_clear(&d);
            if (c->got_bytes && sp_lg_http_eof(&c->http, &d) == SP_OK) {
                c->http.keep_alive = false;
                conn_response_done(r, c);
            } else {
                conn_fail(r, c,
                          c->got_bytes ? "the server closed the connection mid-response"
                                       : "the server closed the connection",
                          0);
            }
            return;
        }
        c->got_bytes = true;
        size_t used = 0;
        sp_diag d;
        sp_diag_clear(&d);
        sp_err err = sp_lg_http_feed(&c->http, r->rbuf, (size_t)n, &used, &d);
        if (r->fatal)
            return;
        if (err) {
            if (err != SP_ERR_CANCELLED)
                set_error(r, c->req, "HTTP: %s", d.msg[0] ? d.msg : sp_err_str(err));
            int idx = c->req;
            c->req = -1;
            c->state = C_CONNECTING;
            conn_close(r, c);
            finish_request(r, idx);
            return;
        }
        if (sp_lg_http_done(&c->http)) {
            if (used < (size_t)n)
                c->http.keep_alive = false; // bytes nobody asked for: do not reuse
            conn_response_done(r, c);
            return;
        }
    }
}

static void conn_event(run *r, conn *c, uint32_t ev) {
    if (c->state == C_CONNECTING && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) {
            conn_fail(r, c, "connect", soerr);
            return;
        }
        c->state = C_SENDING;
    }
    if (c->state == C_SENDING && (ev & EPOLLOUT)) {
        conn_flush(r, c);
        return; // the response cannot have started before the request was sent
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        conn_readable(r, c);
}

/* ---- Scheduling ---------------------------------------------------------------------------- */

static void start_request(run *r, int idx) {
    req_state *s = &r->rs[idx];
    r->n_inflight++;
    if (!s->start_ns)
        s->start_ns = sp_time_ns();
    conn *c = r->idle;
    if (c) {
        r->idle = c->next_idle;
        c->next_idle = NULL;
        c->state = C_SENDING;
    } else {
        c = conn_open(r, idx);
        if (!c) {
            finish_request(r, idx);
            return;
        }
    }
    if (!conn_attach(r, c, idx)) {
        r->fatal = SP_ERR_NOMEM;
        return;
    }
    if (c->state == C_SENDING)
        conn_flush(r, c);
}

/* Builds request idx's body (multi-turn: with its session's history so far). */
static bool prepare(run *r, int idx) {
    const sp_lg_item *it = &r->ds->items[idx];
    const sp_lg_history *h = it->session >= 0 ? &r->hist[it->session] : NULL;
    return sp_lg_build_body(&r->o->body, it, h, &r->rs[idx].body) == SP_OK;
}

static void finish_request(run *r, int idx) {
    req_state *s = &r->rs[idx];
    sp_lg_result *res = &r->res[idx];
    const sp_lg_item *it = &r->ds->items[idx];
    r->n_inflight--;
    r->n_done++;
    r->t_last_done = sp_time_ns();
    if (!s->failed && res->http_status == 200 && res->n_chunks == 0)
        set_error(r, idx, "no chunk carrying a token arrived");
    if (!s->failed && res->http_status != 200 && !s->err)
        set_error(r, idx, "no response");
    res->success = !s->failed;
    res->start_s = secs(s->start_ns - r->t0);
    res->queue_s = secs(s->start_ns - s->ready_ns);
    if (res->success) {
        res->latency_s = secs(s->last_ns - s->start_ns);
        if (res->output_tokens <= 0)
            res->output_tokens = res->n_chunks;
    } else {
        r->n_failed++;
        res->error = s->err;
        s->err = NULL;
    }
    if (res->prompt_len <= 0)
        // Without a usage chunk: the words plus the special tokens, unless a chat template
        // or earlier turns add tokens nobody counted.
        res->prompt_len = it->n_words >= 0 && it->session < 0 && !r->o->body.chat
                              ? it->n_words + r->o->n_special
                              : -1;
    free(s->body);
    s->body = NULL;
    if (r->o->keep_text && !r->multi_turn) {
        res->text = s->text;
        s->text = NULL;
    }
    if (r->multi_turn) {
        res->text = s->text;
        s->text = NULL;
        // Next turn of the session after a think time; a failed turn leaves no history.
        if (res->success && sp_lg_history_add(&r->hist[it->session], it->prompt,
                                              res->text ? res->text : "") != SP_OK)
            r->fatal = SP_ERR_NOMEM;
        size_t nx = (size_t)idx + 1;
        if (nx < r->ds->n && r->ds->items[nx].session == it->session) {
            double think =
                r->o->think_time_s > 0 ? sp_lg_rng_exponential(&r->rng, r->o->think_time_s) : 0.0;
            heap_push(r, sp_time_ns() + (int64_t)(think * 1e9), (int)nx);
        }
    }
}

static void admit_due(run *r) {
    int64_t now = sp_time_ns();
    while (r->n_heap && r->heap[0].t_ns <= now) {
        heap_ent e = heap_pop(r);
        r->rs[e.idx].ready_ns = now;
        r->ready[r->ready_tail++] = e.idx;
    }
    while (r->ready_head < r->ready_tail &&
           (r->o->max_concurrency <= 0 || r->n_inflight < r->o->max_concurrency) && !r->fatal) {
        int idx = r->ready[r->ready_head++];
        if (!prepare(r, idx)) {
            r->fatal = SP_ERR_NOMEM;
            return;
        }
        start_request(r, idx);
    }
}

static void progress(run *r, bool final) {
    int64_t now = sp_time_ns();
    if (!final && now - r->last_progress_ns < 200000000)
        return;
    r->last_progress_ns = now;
    fprintf(stderr, "\r\033[K%zu/%zu done, %zu failed, %d in flight, %.1f s", r->n_done, r->ds->n,
            r->n_failed, r->n_inflight, secs(now - r->t0));
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

static void check_timeouts(run *r) {
    if (r->o->timeout_s <= 0)
        return;
    int64_t limit = (int64_t)(r->o->timeout_s * 1e9);
    int64_t now = sp_time_ns();
    for (conn *c = r->all, *next; c; c = next) {
        next = c->next;
        if (c->req >= 0 && now - r->rs[c->req].start_ns > limit) {
            int idx = c->req;
            set_error(r, idx, "timed out after %.1f s", r->o->timeout_s);
            c->req = -1;
            c->state = C_CONNECTING;
            conn_close(r, c);
            finish_request(r, idx);
        }
    }
}

static int wait_events(run *r, struct epoll_event *evs, int max, int64_t deadline_ns) {
    int64_t now = sp_time_ns();
    int64_t wait = deadline_ns < 0 ? -1 : SP_MAX(deadline_ns - now, 0);
    if (r->o->progress || r->o->timeout_s > 0)
        wait = wait < 0 ? 200000000 : SP_MIN(wait, 200000000);
    if (r->use_pwait2) {
        struct timespec ts = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
        int n = epoll_pwait2(r->ep, evs, max, wait < 0 ? NULL : &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        r->use_pwait2 = false;
    }
    int ms = wait < 0 ? -1 : (int)SP_MIN((wait + 999999) / 1000000, 1000000);
    return epoll_wait(r->ep, evs, max, ms);
}

sp_err sp_lg_run(const sp_lg_run_opts *o, const sp_lg_dataset *ds, sp_lg_result *results,
                 double *duration_s, sp_diag *d) {
    if (!(o->request_rate > 0) || !(o->burstiness > 0) || o->max_concurrency < 0 || !ds->n)
        return sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "invalid run options");
    run r;
    memset(&r, 0, sizeof r);
    r.o = o;
    r.ds = ds;
    r.res = results;
    r.ep = -1;
    r.use_pwait2 = true;
    r.multi_turn = ds->n_sessions > 0;
    sp_err err = SP_ERR_NOMEM;
    double *arrivals = NULL;
    memset(results, 0, ds->n * sizeof *results);
    r.rs = calloc(ds->n, sizeof *r.rs);
    r.heap = malloc(ds->n * sizeof *r.heap);
    r.ready = malloc(ds->n * sizeof *r.ready);
    r.rbuf = malloc(READ_BUF_BYTES);
    if (r.multi_turn)
        r.hist = calloc((size_t)ds->n_sessions, sizeof *r.hist);
    if (!r.rs || !r.heap || !r.ready || !r.rbuf || (r.multi_turn && !r.hist))
        goto done;
    char auth[300] = "";
    if (o->target->api_key[0])
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", o->target->api_key);
    r.hdr_prefix_len = snprintf(r.hdr_prefix, sizeof r.hdr_prefix,
                                "POST %s%s HTTP/1.1\r\nHost: %s\r\nContent-Type: "
                                "application/json\r\nAccept: text/event-stream\r\n%s",
                                o->target->prefix, o->endpoint, o->target->host_header, auth);
    if (r.hdr_prefix_len < 0 || (size_t)r.hdr_prefix_len >= sizeof r.hdr_prefix) {
        err = sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "the endpoint path is too long");
        goto done;
    }
    r.ep = epoll_create1(EPOLL_CLOEXEC);
    if (r.ep < 0) {
        err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "epoll_create1: %s", strerror(errno));
        goto done;
    }
    // Arrival times: the trace's, or the gamma process (per session for multi-turn).
    size_t n_arr = r.multi_turn ? (size_t)ds->n_sessions : ds->n;
    arrivals = malloc(n_arr * sizeof *arrivals);
    if (!arrivals)
        goto done;
    sp_lg_rng_seed(&r.rng, o->seed);
    if (ds->timed) {
        for (size_t i = 0; i < ds->n; i++)
            arrivals[i] = ds->items[i].t_arrival_s;
    } else if ((err = sp_lg_arrivals(&r.rng, n_arr, o->request_rate, o->burstiness, arrivals))) {
        sp_diag_set(d, err, UINT64_MAX, "invalid request rate or burstiness");
        goto done;
    }
    r.t0 = sp_time_ns();
    r.last_progress_ns = r.t0;
    if (r.multi_turn) {
        size_t s = 0;
        for (size_t i = 0; i < ds->n; i++)
            if (ds->items[i].turn == 0)
                heap_push(&r, r.t0 + (int64_t)(arrivals[s++] * 1e9), (int)i);
    } else {
        for (size_t i = 0; i < ds->n; i++)
            heap_push(&r, r.t0 + (int64_t)(arrivals[i] * 1e9), (int)i);
    }
    struct epoll_event evs[256];
    while (r.n_done < ds->n && !r.fatal) {
        admit_due(&r);
        if (r.n_done >= ds->n || r.fatal)
            break;
        int n = wait_events(&r, evs, (int)SP_ARRAY_LEN(evs), r.n_heap ? r.heap[0].t_ns : -1);
        if (n < 0 && errno != EINTR) {
            err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "epoll_wait: %s", strerror(errno));
            goto done;
        }
        for (int i = 0; i < n && !r.fatal; i++) {
            conn *c = evs[i].data.ptr;
            if (!c->dead) // closed earlier in this batch
                conn_event(&r, c, evs[i].events);
        }
        check_timeouts(&r);
        free_dead(&r);
        if (o->progress)
            progress(&r, false);
    }
    if (o->progress)
        progress(&r, true);
    if (r.fatal) {
        err = sp_diag_set(d, r.fatal, UINT64_MAX, "%s", sp_err_str(r.fatal));
        goto done;
    }
    *duration_s = secs(r.t_last_done - r.t0);
    err = SP_OK;
done:
    while (r.all) {
        r.all->state = C_CONNECTING;
        conn_close(&r, r.all);
    }
    free_dead(&r);
    if (r.ep >= 0)
        close(r.ep);
    if (r.rs)
        for (size_t i = 0; i < ds->n; i++) {
            free(r.rs[i].body);
            free(r.rs[i].err);
            free(r.rs[i].text);
        }
    if (r.hist)
        for (int i = 0; i < ds->n_sessions; i++)
            sp_lg_history_free(&r.hist[i]);
    free(r.hist);
    free(r.rs);
    free(r.heap);
    free(r.ready);
    free(r.rbuf);
    free(arrivals);
    return err;
}
