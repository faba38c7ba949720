/* HTTP/1.1 server: a small level-triggered epoll loop and its connections.
 *
 * The loop (after Redis's ae.c and networking.c):
 *   for (;;) {
 *       service the dirty connections: parse and dispatch buffered requests, flush output;
 *       free the connections closed during the last iteration;
 *       epoll_wait until an event, the next tick or the next timeout scan;
 *       handle the events (accept, read, write readiness, watched fds, stop);
 *       run the tick and, every 100 ms, the timeout scan;
 *   }
 * Responses are only appended to the connection's output buffer; the flush happens before the
 * loop sleeps, and EPOLLOUT is armed only when a send hits EAGAIN. A closed connection is
 * marked, unlinked and its fd closed at once, but its memory is freed only at the top of the
 * next iteration, when no event or callback can still hold it.
 *
 * A connection's life: HEAD (reading a header section, or idle between keep-alive requests)
 * -> BODY (reading the Content-Length body) -> HANDLER (the handler owns the response) ->
 * HEAD again, or DRAIN (the last response is queued; flush it) -> LINGER (write side shut
 * down; for up to 2 s, discard what the client still sends until it closes, so that closing a
 * socket with unread input does not reset the connection before the client has read our
 * answer, e.g. a 413 sent while the body is still arriving). Pipelined requests are parsed
 * only while the connection's unsent output is below the high-water mark.
 *
 * Disconnects. EPOLLRDHUP is watched in every state, so a client that goes away while its
 * request is queued or being generated is noticed without waiting for a write to fail. A
 * client that only half-closes (shutdown(SHUT_WR) after sending its request) is treated as
 * gone, like llama.cpp's server: a response the handler has not finished is cancelled
 * (on_close). Responses already finished are still flushed before the connection closes.
 *
 * Timeouts are checked by a scan every 100 ms (connections are at most a few hundred): a
 * request must arrive whole (header section and body) within header_timeout_ms of its first
 * byte, or of the accept for the first request (slowloris); a keep-alive connection with no
 * request may stay idle_timeout_ms, counted from its last response or write progress. A
 * request cut short by its deadline gets a best-effort 408 before the close. A
 * request the handler owns has no deadline: a slow generation is not the client's fault, and
 * a client too slow to read is caught by the high-water mark instead. */
#include "server/http_int.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"

#define READ_CHUNK      (16 * 1024)   // bytes asked of one recv
#define BODY_READ_MAX   (1024 * 1024) // largest recv while a big body is arriving
#define IN_KEEP_BYTES   (64 * 1024)   // input buffers above this shrink between requests
#define OUT_KEEP_BYTES  (256 * 1024)  // output buffers above this shrink once flushed
#define SCAN_PERIOD_US  100000        // timeout scan period
#define LINGER_US       2000000       // how long a closing connection waits for the client
#define ACCEPT_PAUSE_US 100000        // accept pause after running out of descriptors
// Every connection's output room from its accept on: an error answer never needs an allocation.
#define OUT_MIN_BYTES 4096
#define MAX_EVENTS    64
#define ACCEPT_BATCH  64

typedef enum src_kind { SRC_LISTEN, SRC_WAKE, SRC_WATCH, SRC_CONN } src_kind;

// What an epoll event's data.ptr points at: the first member of every registered object.
typedef struct ev_src {
    src_kind kind;
} ev_src;

typedef struct watch {
    ev_src src;
    int fd; // borrowed
    void (*cb)(void *ctx);
    void *ctx;
    struct watch *next;
} watch;

typedef enum conn_state { ST_HEAD, ST_BODY, ST_HANDLER, ST_DRAIN, ST_LINGER } conn_state;

struct sp_http_conn {
    ev_src src;
    sp_http_server *srv;
    int fd; // -1 once closed
    conn_state state;
    bool closed;      // closed; freed at the top of the next loop iteration
    bool dirty;       // on srv->dirty: to service before the loop sleeps
    bool peer_eof;    // the client shut down its side (EPOLLRDHUP or a read of 0)
    bool paused;      // input processing waits for output to drain below the high-water mark
    bool out_blocked; // the last send hit EAGAIN: EPOLLOUT is armed
    bool streaming;   // between sp_http_stream_begin and sp_http_stream_end
    bool chunked;     // the stream uses chunked encoding (HTTP/1.1 clients)
    bool keep_alive;  // the request allows another one; after the response head, whether the
                      // connection stays open
    bool head_tried;  // the parser has seen this request at least once
    bool head_method; // the request is HEAD: response heads go out, bodies do not
    uint32_t events;  // the interest set registered with epoll
    int minor_version;
    size_t head_len;   // header section of the current request (BODY, HANDLER)
    uint64_t body_len; // its Content-Length
    size_t done_len;   // bytes of a finished request still at the front of in
    size_t scanned;    // HEAD: bytes of in searched for the end of the header section
    char *in;          // (in_cap) received bytes: the current request, then pipelined ones
    size_t in_len, in_cap;
    char *out; // (out_cap) queued output; out[out_off, out_len) is unsent
    size_t out_off, out_len, out_cap;
    int64_t deadline_us; // close when the clock passes it; 0: none
    bool deadline_idle;  // an idle deadline: write progress pushes it back
    void *user;
    // An internal request (sp_http_server_inject): no socket; the response (its status, and
    // its body in out) goes to on_response from the loop once it has ended.
    bool internal;
    bool ended; // internal: the response has ended (or the request was dropped: status 0)
    int status;
    sp_http_on_response on_response;
    void *response_ctx;
    sp_http_conn *prev, *next; // srv->conns (internal: srv->injected); left as they were when
                               // unlinked
    sp_http_conn *next_dirty;
    sp_http_conn *next_closed;
};

struct sp_http_server {
    sp_http_opts opts;
    sp_http_handler h;
    int epfd, lfd, wakefd;
    int port;
    ev_src listen_src, wake_src;
    bool draining;      // stop_accepting was called: no new connections; responses close
    bool accept_paused; // lfd is out of epoll after EMFILE/ENFILE, until accept_resume_us
    int64_t accept_resume_us;
    watch *watches;
    int tick_period_ms; // 0: no tick
    int64_t tick_next_us;
    void (*tick_cb)(void *ctx);
    void *tick_ctx;
    sp_http_conn *conns; // open connections
    int n_conns;
    sp_http_conn *injected; // internal requests in flight or awaiting delivery
    int n_ready;            // of which ended, to deliver before sleeping
    sp_http_conn *dirty;  // connections to service before sleeping (a stack)
    sp_http_conn *closed; // closed connections to free
    int64_t now_us;       // the clock after the last epoll_wait
    int64_t scan_next_us;
    bool stopping;
    bool running;
};

static void conn_close(sp_http_conn *c, bool notify);
static void conn_process(sp_http_conn *c);
static void conn_flush(sp_http_conn *c);

/* ---- Small helpers ---------------------------------------------------------------------- */

static const struct {
    int status;
    const char *reason;
} reasons[] = {
    {100, "Continue"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {417, "Expectation Failed"},
    {422, "Unprocessable Content"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

static const char *reason_phrase(int status) {
    for (size_t i = 0; i < SP_ARRAY_LEN(reasons); i++)
        if (reasons[i].status == status)
            return reasons[i].reason;
    if (status >= 200 && status < 300)
        return "OK";
    if (status >= 400 && status < 500)
        return "Client Error";
    if (status >= 500 && status < 600)
        return "Server Error";
    return "Unknown";
}

static size_t pending(const sp_http_conn *c) {
    return c->out_len - c->out_off;
}

static void mark_dirty(sp_http_conn *c) {
    if (c->dirty || c->closed)
        return;
    c->dirty = true;
    c->next_dirty = c->srv->dirty;
    c->srv->dirty = c;
}

// Ensures room for n more output bytes: compacts when that frees enough, else doubles.
static bool out_reserve(sp_http_conn *c, size_t n) {
    if (c->out_cap - c->out_len >= n)
        return true;
    size_t live = pending(c), need;
    if (__builtin_add_overflow(live, n, &need))
        return false;
    if (c->out_off > 0 && need <= c->out_cap / 2) {
        memmove(c->out, c->out + c->out_off, live);
        c->out_off = 0;
        c->out_len = live;
        return true;
    }
    size_t cap = c->out_cap ? c->out_cap : OUT_MIN_BYTES;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = malloc(cap);
    if (!p)
        return false;
    if (live)
        memcpy(p, c->out + c->out_off, live);
    free(c->out);
    c->out = p;
    c->out_cap = cap;
    c->out_off = 0;
    c->out_len = live;
    return true;
}

// Appends without checking room (out_reserve first).
static void out_put(sp_http_conn *c, const void *p, size_t n) {
    if (n)
        memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static bool in_reserve(sp_http_conn *c, size_t n) {
    if (c->in_cap - c->in_len >= n)
        return true;
    size_t need;
    if (__builtin_add_overflow(c->in_len, n, &need))
        return false;
    size_t cap = c->in_cap ? c->in_cap : READ_CHUNK;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(c->in, cap);
    if (!p)
        return false;
    c->in = p;
    c->in_cap = cap;
    return true;
}

static void update_interest(sp_http_conn *c) {
    if (c->closed)
        return;
    uint32_t ev = 0;
    switch (c->state) {
    case ST_HEAD:
    case ST_BODY:
        if (!c->paused)
            ev |= EPOLLIN;
        break;
    case ST_LINGER:
        ev |= EPOLLIN; // reads return 0 once the client closes
        break;
    case ST_HANDLER:
    case ST_DRAIN:
        break;
    }
    // Once the client's FIN is known, RDHUP would fire on every wait (level-triggered).
    if (!c->peer_eof && c->state != ST_LINGER)
        ev |= EPOLLRDHUP;
    if (c->out_blocked)
        ev |= EPOLLOUT;
    if (ev == c->events)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = &c->src};
    if (epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, c->fd, &e) != 0) {
        SP_WARN("http: epoll_ctl: %s", strerror(errno));
        conn_close(c, true);
        return;
    }
    c->events = ev;
}

static void set_deadline(sp_http_conn *c, int timeout_ms, bool idle) {
    c->deadline_us = c->srv->now_us + (int64_t)timeout_ms * 1000;
    c->deadline_idle = idle;
}

// Whether responses on c may keep the connection open.
static bool may_keep_alive(const sp_http_conn *c) {
    return c->keep_alive && !c->srv->draining && !c->srv->stopping;
}

/* Writes a response head: status line, Content-Type, Content-Length or Transfer-Encoding,
 * Connection, the caller's extra lines, the blank line; reserves extra_room more bytes for
 * what follows. Nothing is queued on failure. */
static sp_err put_head(sp_http_conn *c, int status, const char *content_type,
                       const char *extra_headers, bool chunked, bool has_length, size_t length,
                       bool keep_alive, size_t extra_room) {
    char a[128], b[128];
    int na = snprintf(a, sizeof a, "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
    int nb = 0;
    if (has_length)
        nb += snprintf(b, sizeof b, "Content-Length: %zu\r\n", length);
    if (chunked)
        nb += snprintf(b + nb, sizeof b - (size_t)nb, "Transfer-Encoding: chunked\r\n");
    nb += snprintf(b + nb, sizeof b - (size_t)nb, "Connection: %s\r\n",
                   keep_alive ? "keep-alive" : "close");
    size_t nct = content_type ? strlen(content_type) : 0;
    size_t nex = extra_headers ? strlen(extra_headers) : 0;
    static const char ct[] = "Content-Type: ";
    size_t total = (size_t)na + (size_t)nb + nex + 2;
    if (content_type)
        total += sizeof ct - 1 + nct + 2;
    if (total + extra_room < total || !out_reserve(c, total + extra_room))
        return SP_ERR_NOMEM;
    out_put(c, a, (size_t)na);
    if (content_type) {
        out_put(c, ct, sizeof ct - 1);
        out_put(c, content_type, nct);
        out_put(c, "\r\n", 2);
    }
    out_put(c, b, (size_t)nb);
    out_put(c, extra_headers, nex);
    out_put(c, "\r\n", 2);
    return SP_OK;
}

static const char *error_type(int status) {
    switch (status) {
    case 501:
    case 505:
        return "not_supported_error";
    case 503:
        return "unavailable_error";
    default:
        return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

// OpenAI's error "code" for the answers the server gives by itself.
static const char *error_code(int status) {
    switch (status) {
    case 408:
        return "request_timeout";
    case 413:
        return "request_too_large";
    case 431:
        return "headers_too_large";
    case 501:
        return "not_implemented";
    case 503:
        return "unavailable";
    case 505:
        return "http_version_not_supported";
    default:
        return status >= 500 ? "internal_error" : "bad_request";
    }
}

// The JSON error body of answers the server gives by itself, in the shape of the API's own
// errors. msg must need no escaping.
static int error_body(char *buf, size_t size, int status, const char *msg) {
    return snprintf(buf, size,
                    "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"param\":null,"
                    "\"code\":\"%s\"}}",
                    msg, error_type(status), error_code(status));
}

/* ---- Connections ------------------------------------------------------------------------ */

static void conn_free(sp_http_conn *c) {
    free(c->in);
    free(c->out);
    free(c);
}

/* Closes the socket now; the memory waits for the next loop iteration. When notify is set and
 * the handler still owned a response, on_close tells it (after the connection is marked
 * closed, so anything it calls on c fails cleanly). */
static void conn_close(sp_http_conn *c, bool notify) {
    if (c->closed)
        return;
    sp_http_server *s = c->srv;
    bool owned = c->state == ST_HANDLER;
    c->closed = true;
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    c->next_closed = s->closed;
    s->closed = c;
    if (owned && notify && s->h.on_close)
        s->h.on_close(s->h.ctx, c, c->user);
}

static void free_closed(sp_http_server *s) {
    while (s->closed) {
        sp_http_conn *c = s->closed;
        s->closed = c->next_closed;
        conn_free(c);
    }
}

static void start_linger(sp_http_conn *c) {
    if (c->peer_eof) {
        conn_close(c, true);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = ST_LINGER;
    c->deadline_us = c->srv->now_us + LINGER_US;
    c->deadline_idle = false;
    update_interest(c);
}

// An answer of the server's own (400, 413, 431, ...): the connection closes after it.
static void reply_error(sp_http_conn *c, int status, const char *msg) {
    char body[384];
    int n = error_body(body, sizeof body, status, msg);
    if (n < 0 || (size_t)n >= sizeof body ||
        put_head(c, status, "application/json", status == 503 ? "Retry-After: 1\r\n" : NULL, false,
                 true, (size_t)n, false, (size_t)n) != SP_OK) {
        conn_close(c, true);
        return;
    }
    out_put(c, body, (size_t)n);
    c->keep_alive = false;
    c->state = ST_DRAIN;
    set_deadline(c, c->srv->opts.idle_timeout_ms, true);
    mark_dirty(c);
}

// Drops the finished request from the input and empty lines before the next one.
static void consume_done(sp_http_conn *c) {
    size_t drop = c->done_len;
    while (drop < c->in_len &&
           (c->in[drop] == '\n' ||
            (c->in[drop] == '\r' && drop + 1 < c->in_len && c->in[drop + 1] == '\n')))
        drop += c->in[drop] == '\n' ? 1 : 2;
    c->done_len = 0;
    if (drop == 0)
        return;
    memmove(c->in, c->in + drop, c->in_len - drop);
    c->in_len -= drop;
    if (c->in_cap > IN_KEEP_BYTES && c->in_len <= READ_CHUNK) {
        char *p = realloc(c->in, READ_CHUNK);
        if (p) {
            c->in = p;
            c->in_cap = READ_CHUNK;
        }
    }
}

/* Whether the parser should look at the input again: on the first bytes of a request (so
 * garbage is refused at once), when a new byte could end the header section ("\n\n" or
 * "\n\r\n"), or when the input outgrew the header limit. Avoids reparsing a slowly arriving
 * header section on every read. */
static bool head_worth_parsing(sp_http_conn *c) {
    bool first = !c->head_tried;
    c->head_tried = true;
    size_t i = c->scanned > 0 ? c->scanned : 1;
    bool found = false;
    for (; i < c->in_len; i++) {
        if (c->in[i] != '\n')
            continue;
        if (c->in[i - 1] == '\n' || (c->in[i - 1] == '\r' && i >= 2 && c->in[i - 2] == '\n')) {
            found = true;
            i++;
            break;
        }
    }
    c->scanned = i;
    return first || found || c->in_len > c->srv->opts.max_header_bytes;
}

static bool str_is(sp_str s, const char *lit) {
    return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

static bool expects_continue(const sp_http_req *req) {
    const sp_str *v = sp_http_req_header(req, "expect");
    return v && sp__http_str_ieq(*v, "100-continue");
}

static void dispatch(sp_http_conn *c) {
    sp_http_server *s = c->srv;
    sp_http_req req;
    size_t consumed;
    uint64_t cl;
    int status;
    // Parse again: the views must point into the buffer as it is now (reads may have moved
    // it), and parsing the same bytes gives the same result.
    if (sp_http_parse(c->in, c->in_len, s->opts.max_header_bytes, &req, &consumed, &cl, &status) !=
            SP_HTTP_PARSE_DONE ||
        consumed != c->head_len || cl != c->body_len) {
        reply_error(c, 500, "internal error while parsing the request");
        return;
    }
    req.body = c->in + c->head_len;
    req.body_len = (size_t)c->body_len;
    c->state = ST_HANDLER;
    c->head_method = str_is(req.method, "HEAD");
    c->user = NULL;
    c->streaming = false;
    c->deadline_us = 0;
    s->h.on_request(s->h.ctx, c, &req);
}

/* Parses and dispatches buffered requests, one at a time, while the connection is between
 * responses and its output is below the high-water mark. */
static void conn_process(sp_http_conn *c) {
    sp_http_server *s = c->srv;
    while (!c->closed && (c->state == ST_HEAD || c->state == ST_BODY)) {
        if (c->done_len)
            consume_done(c);
        if (pending(c) > s->opts.write_high_water) {
            c->paused = true;
            break;
        }
        c->paused = false;
        if (c->state == ST_HEAD) {
            if (c->in_len == 0 || !head_worth_parsing(c))
                break;
            sp_http_req req;
            size_t consumed;
            uint64_t cl;
            int status;
            sp_diag diag;
            sp_diag_clear(&diag);
            sp_http_parse_result r = sp__http_parse(c->in, c->in_len, s->opts.max_header_bytes,
                                                    &req, &consumed, &cl, &status, &diag);
            if (r == SP_HTTP_PARSE_INCOMPLETE)
                break;
            if (r == SP_HTTP_PARSE_ERROR) {
                reply_error(c, status, diag.msg);
                break;
            }
            size_t limit = s->h.body_limit ? s->h.body_limit(s->h.ctx, &req) : 0;
            if (!limit)
                limit = s->opts.max_body_bytes;
            if (cl > limit) {
                char msg[96];
                snprintf(msg, sizeof msg, "the request body is larger than %zu bytes", limit);
                reply_error(c, 413, msg);
                break;
            }
            c->head_len = consumed;
            c->body_len = cl;
            c->keep_alive = req.keep_alive;
            c->minor_version = req.minor_version;
            c->state = ST_BODY;
            // RFC 9110 10.1.1: a 1.0 client's Expect is ignored.
            if (c->in_len - consumed < cl && req.minor_version >= 1 && expects_continue(&req)) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                if (!out_reserve(c, sizeof cont - 1)) {
                    conn_close(c, true);
                    break;
                }
                out_put(c, cont, sizeof cont - 1);
                mark_dirty(c);
            }
        }
        if (c->in_len - c->head_len < c->body_len)
            break;
        dispatch(c);
    }
    update_interest(c);
}

// The handler ended its response (respond or stream_end).
static void end_response(sp_http_conn *c) {
    c->streaming = false;
    c->chunked = false;
    c->done_len = c->head_len + (size_t)c->body_len;
    c->head_len = 0;
    c->body_len = 0;
    c->scanned = 0;
    c->head_tried = false;
    if (!c->keep_alive) {
        c->state = ST_DRAIN;
        set_deadline(c, c->srv->opts.idle_timeout_ms, true);
    } else {
        c->state = ST_HEAD;
        if (c->in_len > c->done_len)
            set_deadline(c, c->srv->opts.header_timeout_ms, false);
        else
            set_deadline(c, c->srv->opts.idle_timeout_ms, true);
    }
    mark_dirty(c);
}

/* Sends queued output until done or EAGAIN (then EPOLLOUT is armed). A failed send closes the
 * connection. */
static void conn_flush(sp_http_conn *c) {
    sp_http_server *s = c->srv;
    while (pending(c) > 0) {
        ssize_t n = send(c->fd, c->out + c->out_off, pending(c), MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            if (c->deadline_idle)
                set_deadline(c, s->opts.idle_timeout_ms, true);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->out_blocked = true;
            if (c->paused && pending(c) <= s->opts.write_high_water)
                mark_dirty(c);
            update_interest(c);
            return;
        }
        conn_close(c, true);
        return;
    }
    c->out_off = c->out_len = 0;
    c->out_blocked = false;
    if (c->out_cap > OUT_KEEP_BYTES) {
        char *small = malloc(OUT_MIN_BYTES); // best effort: without it, the next answer grows
        free(c->out);
        c->out = small;
        c->out_cap = small ? OUT_MIN_BYTES : 0;
    }
    if (c->paused)
        mark_dirty(c);
    if (c->state == ST_DRAIN) {
        start_linger(c);
        return;
    }
    update_interest(c);
}

// Sends what the socket takes now, from inside a handler call: failures are left for the
// flush pass to find again (it closes the connection and calls on_close).
static void try_send(sp_http_conn *c) {
    while (pending(c) > 0) {
        ssize_t n = send(c->fd, c->out + c->out_off, pending(c), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0)
            c->out_off += (size_t)n;
        else if (!(n < 0 && errno == EINTR))
            break;
    }
}

static void conn_service(sp_http_conn *c) {
    if (c->closed)
        return;
    conn_process(c);
    if (!c->closed)
        conn_flush(c);
}

static void conn_timeout(sp_http_conn *c) {
    bool partial = (c->state == ST_HEAD && c->in_len > c->done_len) || c->state == ST_BODY;
    if (partial && pending(c) == 0) {
        // Best effort: tell the client why, if the socket takes it now.
        char body[160], msg[320];
        int nb = error_body(body, sizeof body, 408, "the request did not arrive in time");
        int n = snprintf(msg, sizeof msg,
                         "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                         "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                         nb, body);
        if (n > 0 && (size_t)n < sizeof msg &&
            send(c->fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
            SP_DEBUG("http: could not send 408: %s", strerror(errno));
    }
    conn_close(c, true);
}

static void conn_read(sp_http_conn *c) {
    if (c->state == ST_LINGER) {
        char sink[4096];
        for (int i = 0; i < 16; i++) {
            ssize_t n = recv(c->fd, sink, sizeof sink, 0);
            if (n > 0)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (n < 0 && errno == EINTR)
                continue;
            conn_close(c, true); // the client's EOF (or an error): done
            return;
        }
        return;
    }
    if ((c->state != ST_HEAD && c->state != ST_BODY) || c->paused)
        return;
    size_t want = READ_CHUNK;
    if (c->state == ST_BODY) {
        uint64_t need = c->head_len + c->body_len - SP_MIN(c->in_len, c->head_len + c->body_len);
        if (need > want)
            want = need > BODY_READ_MAX ? BODY_READ_MAX : (size_t)need;
    }
    if (!in_reserve(c, want)) {
        SP_WARN("http: out of memory for a request buffer");
        reply_error(c, 503, "out of memory for the request; retry later");
        return;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n > 0) {
        if (c->state == ST_HEAD && c->deadline_idle) // the first byte of the next request
            set_deadline(c, c->srv->opts.header_timeout_ms, false);
        c->in_len += (size_t)n;
        conn_process(c);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    // EOF (or a reset): the request being read can never complete. Answers already queued
    // for earlier pipelined requests still go out.
    c->peer_eof = true;
    if (n == 0 && pending(c) > 0) {
        c->state = ST_DRAIN;
        update_interest(c);
        return;
    }
    conn_close(c, true);
}

static void conn_event(sp_http_conn *c, uint32_t ev) {
    if (c->closed)
        return;
    if (ev & (EPOLLERR | EPOLLHUP)) {
        conn_close(c, true);
        return;
    }
    if (ev & EPOLLOUT) {
        conn_flush(c);
        if (c->closed)
            return;
    }
    if (ev & EPOLLRDHUP)
        c->peer_eof = true;
    if (ev & EPOLLIN) {
        conn_read(c);
        if (c->closed)
            return;
    }
    if (c->peer_eof && c->state == ST_HANDLER) {
        conn_close(c, true); // cancels the request: the client is gone
        return;
    }
    update_interest(c);
}

/* ---- Accepting -------------------------------------------------------------------------- */

// Over the connection cap with no idle connection to close: answer 503 on the spot and close,
// without a connection object.
static void reject(int fd, const char *why) {
    char body[200], msg[400];
    int nb = error_body(body, sizeof body, 503, why);
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
                     nb, body);
    // Read what already arrived so that close() does not reset the connection over it.
    char sink[4096];
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
    if (n > 0 && (size_t)n < sizeof msg &&
        send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        SP_DEBUG("http: could not send 503: %s", strerror(errno));
    shutdown(fd, SHUT_WR);
    close(fd);
}

/* At the connection cap, a keep-alive connection idle between requests gives way to a new one
 * (the one idle longest, as nginx does), so that a crowd of idle clients cannot lock out a
 * health check. Returns false if every connection is busy. */
static bool close_idle(sp_http_server *s) {
    sp_http_conn *oldest = NULL;
    for (sp_http_conn *c = s->conns; c; c = c->next)
        if (!c->closed && c->state == ST_HEAD && c->deadline_idle && c->in_len == c->done_len &&
            pending(c) == 0 && (!oldest || c->deadline_us < oldest->deadline_us))
            oldest = c;
    if (!oldest)
        return false;
    conn_close(oldest, true);
    return true;
}

static void conn_create(sp_http_server *s, int fd) {
    sp_http_conn *c = calloc(1, sizeof *c);
    char *out = malloc(OUT_MIN_BYTES);
    if (!c || !out) {
        free(c);
        free(out);
        reject(fd, "out of memory");
        return;
    }
    c->out = out;
    c->out_cap = OUT_MIN_BYTES;
    c->src.kind = SRC_CONN;
    c->srv = s;
    c->fd = fd;
    c->state = ST_HEAD;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); // small SSE chunks go at once
    c->events = EPOLLIN | EPOLLRDHUP;
    struct epoll_event e = {.events = c->events, .data.ptr = &c->src};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
        SP_WARN("http: epoll_ctl: %s", strerror(errno));
        close(fd);
        conn_free(c);
        return;
    }
    set_deadline(c, s->opts.header_timeout_ms, false);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
}

static void on_accept(sp_http_server *s) {
    for (int i = 0; i < ACCEPT_BATCH && s->lfd >= 0; i++) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                // Level-triggered: the pending connection would wake us at once, forever.
                SP_WARN("http: accept: %s; pausing accept", strerror(errno));
                epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->lfd, NULL);
                s->accept_paused = true;
                s->accept_resume_us = s->now_us + ACCEPT_PAUSE_US;
                return;
            }
            continue; // ECONNABORTED, EINTR, EPROTO, ...: that connection only
        }
        if (s->n_conns >= s->opts.max_conns && !close_idle(s))
            reject(fd, "too many connections; retry later");
        else
            conn_create(s, fd);
    }
}

/* ---- The loop --------------------------------------------------------------------------- */

/* ---- Internal requests -------------------------------------------------------------------- */

static void injected_unlink(sp_http_conn *c) {
    sp_http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->injected = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

/* The response of an internal request has ended (status 0: it was dropped). */
static void injected_end(sp_http_conn *c, int status) {
    if (c->ended)
        return;
    c->ended = true;
    c->status = status;
    c->state = ST_HEAD;
    c->srv->n_ready++;
}

/* Hands every ended internal response to its callback, and frees the request. */
static void deliver_injected(sp_http_server *s) {
    for (sp_http_conn *c = s->injected, *next; c && s->n_ready; c = next) {
        next = c->next;
        if (!c->ended)
            continue;
        s->n_ready--;
        injected_unlink(c);
        if (c->on_response)
            c->on_response(c->response_ctx, c->status, c->out ? c->out : "", c->out_len);
        conn_free(c);
    }
}

sp_err sp_http_server_inject(sp_http_server *s, const char *method, const char *path,
                             const char *body, size_t len, sp_http_on_response on_response,
                             void *ctx, sp_http_conn **out) {
    sp_http_conn *c = calloc(1, sizeof *c);
    if (!c || !(c->in = malloc(len + 1))) {
        free(c);
        return SP_ERR_NOMEM;
    }
    memcpy(c->in, body, len);
    c->in[len] = '\0';
    c->srv = s;
    c->fd = -1;
    c->internal = true;
    c->state = ST_HANDLER;
    c->minor_version = 1;
    c->on_response = on_response;
    c->response_ctx = ctx;
    c->next = s->injected;
    if (s->injected)
        s->injected->prev = c;
    s->injected = c;
    sp_http_req req = {
        .method = {method, strlen(method)},
        .target = {path, strlen(path)},
        .path = {path, strlen(path)},
        .query = {"", 0},
        .minor_version = 1,
        .n_headers = 1,
        .headers = {{.name = {"Content-Type", 12}, .value = {"application/json", 16}}},
        .body = c->in,
        .body_len = len,
        .keep_alive = true,
    };
    if (out)
        *out = c;
    s->h.on_request(s->h.ctx, c, &req);
    return SP_OK;
}

void sp_http_server_cancel_injected(sp_http_conn *c) {
    if (!c || !c->internal)
        return;
    const bool owned = !c->ended && !c->closed;
    c->on_response = NULL;
    c->closed = true;
    if (owned && c->srv->h.on_close)
        c->srv->h.on_close(c->srv->h.ctx, c, c->user);
    injected_end(c, 0);
}

bool sp_http_conn_is_internal(const sp_http_conn *c) {
    return c && c->internal;
}

/* The responding calls on an internal request: the body collected, the head dropped. */
static sp_err injected_put(sp_http_conn *c, const char *data, size_t len) {
    if (!len)
        return SP_OK;
    if (!out_reserve(c, len))
        return SP_ERR_NOMEM;
    out_put(c, data, len);
    return SP_OK;
}

static void service_dirty(sp_http_server *s) {
    while (s->dirty) {
        sp_http_conn *c = s->dirty;
        s->dirty = c->next_dirty;
        c->dirty = false;
        conn_service(c);
    }
}

static void scan_timeouts(sp_http_server *s) {
    for (sp_http_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (!c->closed && c->deadline_us != 0 && s->now_us >= c->deadline_us)
            conn_timeout(c);
    }
    if (s->accept_paused && !s->draining && s->lfd >= 0 && s->now_us >= s->accept_resume_us) {
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &s->listen_src};
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &e) == 0)
            s->accept_paused = false;
        else
            s->accept_resume_us = s->now_us + ACCEPT_PAUSE_US;
    }
}

static void run_timers(sp_http_server *s) {
    if (s->tick_period_ms > 0 && s->now_us >= s->tick_next_us) {
        s->tick_next_us += (int64_t)s->tick_period_ms * 1000;
        if (s->tick_next_us <= s->now_us) // fell behind: do not fire a burst
            s->tick_next_us = s->now_us + (int64_t)s->tick_period_ms * 1000;
        s->tick_cb(s->tick_ctx);
    }
    if (s->now_us >= s->scan_next_us) {
        s->scan_next_us = s->now_us + SCAN_PERIOD_US;
        scan_timeouts(s);
    }
}

static int wait_ms(sp_http_server *s) {
    int64_t next = INT64_MAX;
    if (s->tick_period_ms > 0)
        next = s->tick_next_us;
    if ((s->n_conns > 0 || s->accept_paused) && s->scan_next_us < next)
        next = s->scan_next_us;
    if (next == INT64_MAX)
        return -1;
    int64_t d = next - sp_time_us();
    if (d <= 0)
        return 0;
    d = (d + 999) / 1000; // round up: waking early would spin
    return d > INT_MAX ? INT_MAX : (int)d;
}

static void on_wake(sp_http_server *s) {
    uint64_t v;
    if (read(s->wakefd, &v, sizeof v) == (ssize_t)sizeof v || errno != EAGAIN)
        s->stopping = true;
}

sp_err sp_http_server_run(sp_http_server *s) {
    SP_ASSERT(s && !s->running);
    s->running = true;
    sp_err err = SP_OK;
    s->now_us = sp_time_us();
    while (!s->stopping) {
        service_dirty(s);
        deliver_injected(s);
        free_closed(s);
        struct epoll_event evs[MAX_EVENTS];
        int n = epoll_wait(s->epfd, evs, MAX_EVENTS, wait_ms(s));
        if (n < 0) {
            if (errno != EINTR) {
                SP_ERROR("http: epoll_wait: %s", strerror(errno));
                err = SP_ERR_IO;
                break;
            }
            n = 0;
        }
        s->now_us = sp_time_us();
        for (int i = 0; i < n; i++) {
            ev_src *src = evs[i].data.ptr;
            switch (src->kind) {
            case SRC_LISTEN:
                on_accept(s);
                break;
            case SRC_WAKE:
                on_wake(s);
                break;
            case SRC_WATCH: {
                watch *w = (watch *)src;
                w->cb(w->ctx);
                break;
            }
            case SRC_CONN:
                conn_event((sp_http_conn *)src, evs[i].events);
                break;
            }
        }
        run_timers(s);
    }
    // Send what is already queued (best effort); destroy closes the rest.
    while (s->dirty) {
        sp_http_conn *c = s->dirty;
        s->dirty = c->next_dirty;
        c->dirty = false;
        if (!c->closed)
            try_send(c);
    }
    free_closed(s);
    if (s->stopping)
        sp_http_server_stop_accepting(s);
    free_closed(s);
    s->running = false;
    return err;
}

/* ---- Public API ------------------------------------------------------------------------- */

sp_http_opts sp_http_opts_default(void) {
    return (sp_http_opts){
        .host = "127.0.0.1",
        .port = 0,
        .max_conns = 256,
        .max_header_bytes = 16 * 1024,
        .max_body_bytes = 4 * 1024 * 1024,
        .header_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
        .write_high_water = 4 * 1024 * 1024,
    };
}

static sp_http_opts fill_opts(const sp_http_opts *o) {
    sp_http_opts d = sp_http_opts_default();
    if (!o)
        return d;
    sp_http_opts r = *o;
    if (!r.host || !r.host[0])
        r.host = d.host;
    if (r.max_conns <= 0)
        r.max_conns = d.max_conns;
    if (r.max_header_bytes == 0)
        r.max_header_bytes = d.max_header_bytes;
    if (r.max_body_bytes == 0)
        r.max_body_bytes = d.max_body_bytes;
    if (r.header_timeout_ms <= 0)
        r.header_timeout_ms = d.header_timeout_ms;
    if (r.idle_timeout_ms <= 0)
        r.idle_timeout_ms = d.idle_timeout_ms;
    if (r.write_high_water == 0)
        r.write_high_water = d.write_high_water;
    return r;
}

static sp_err io_fail(sp_diag *diag, const char *what, const sp_http_opts *o, int e) {
    return sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "%s %s:%d: %s", what, o->host, o->port,
                       strerror(e));
}

sp_err sp_http_server_create(const sp_http_opts *opts, const sp_http_handler *h,
                             sp_http_server **out, sp_diag *diag) {
    SP_ASSERT(out && h && h->on_request);
    sp_diag_clear(diag);
    sp_http_opts o = fill_opts(opts);
    if (o.port < -1 || o.port > 65535)
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "port %d is out of range", o.port);
    sp_err err = SP_OK;
    struct addrinfo *ai = NULL;
    sp_http_server *s = calloc(1, sizeof *s);
    if (!s)
        return sp_diag_set(diag, SP_ERR_NOMEM, UINT64_MAX, "out of memory");
    s->opts = o;
    s->h = *h;
    s->epfd = s->lfd = s->wakefd = -1;
    s->listen_src.kind = SRC_LISTEN;
    s->wake_src.kind = SRC_WAKE;

    if (o.port == -1) { // internal requests only
        s->port = -1;
        s->epfd = epoll_create1(EPOLL_CLOEXEC);
        s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event we = {.events = EPOLLIN, .data.ptr = &s->wake_src};
        if (s->epfd < 0 || s->wakefd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wakefd, &we)) {
            err = io_fail(diag, "epoll/eventfd for", &o, errno);
            goto fail;
        }
        s->now_us = sp_time_us();
        *out = s;
        return SP_OK;
    }
    char port[16];
    snprintf(port, sizeof port, "%d", o.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int gai = getaddrinfo(o.host, port, &hints, &ai);
    if (gai != 0) {
        err = sp_diag_set(diag, SP_ERR_IO, UINT64_MAX, "cannot resolve %s: %s", o.host,
                          gai_strerror(gai));
        goto fail;
    }
    int last_errno = EADDRNOTAVAIL;
    for (struct addrinfo *a = ai; a && s->lfd < 0; a = a->ai_next) {
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
            last_errno = errno;
            close(fd);
            continue;
        }
        s->lfd = fd;
    }
    if (s->lfd < 0) {
        err = io_fail(diag, "cannot listen on", &o, last_errno);
        goto fail;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(s->lfd, (struct sockaddr *)&ss, &sl) != 0) {
        err = io_fail(diag, "getsockname on", &o, errno);
        goto fail;
    }
    s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->epfd < 0 || s->wakefd < 0) {
        err = io_fail(diag, "epoll/eventfd for", &o, errno);
        goto fail;
    }
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = &s->listen_src};
    struct epoll_event we = {.events = EPOLLIN, .data.ptr = &s->wake_src};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &le) != 0 ||
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wakefd, &we) != 0) {
        err = io_fail(diag, "epoll_ctl for", &o, errno);
        goto fail;
    }
    freeaddrinfo(ai);
    s->now_us = sp_time_us();
    *out = s;
    return SP_OK;

fail:
    if (ai)
        freeaddrinfo(ai);
    sp_http_server_destroy(s);
    return err;
}

void sp_http_server_destroy(sp_http_server *s) {
    if (!s)
        return;
    SP_ASSERT(!s->running);
    while (s->conns)
        conn_close(s->conns, true);
    free_closed(s);
    for (sp_http_conn *c = s->injected; c; c = c->next) // nobody waits for these answers
        sp_http_server_cancel_injected(c);
    while (s->injected) {
        sp_http_conn *c = s->injected;
        injected_unlink(c);
        conn_free(c);
    }
    while (s->watches) {
        watch *w = s->watches;
        s->watches = w->next;
        free(w);
    }
    if (s->lfd >= 0)
        close(s->lfd);
    if (s->wakefd >= 0)
        close(s->wakefd);
    if (s->epfd >= 0)
        close(s->epfd);
    free(s);
}

int sp_http_server_port(const sp_http_server *s) {
    return s->port;
}

void sp_http_server_stop(sp_http_server *s) {
    int saved = errno; // may run in a signal handler
    uint64_t one = 1;
    ssize_t r = write(s->wakefd, &one, sizeof one); // eventfd: only fails when saturated
    (void)r;
    errno = saved;
}

void sp_http_server_stop_accepting(sp_http_server *s) {
    s->draining = true;
    if (s->lfd >= 0) {
        if (!s->accept_paused)
            epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->lfd, NULL);
        close(s->lfd);
        s->lfd = -1;
    }
    s->accept_paused = false;
    // Idle keep-alive connections would never end by themselves.
    for (sp_http_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (!c->closed && c->state == ST_HEAD && c->in_len == c->done_len && pending(c) == 0)
            conn_close(c, true);
    }
}

int sp_http_server_n_conns(const sp_http_server *s) {
    return s->n_conns;
}

sp_err sp_http_server_watch_fd(sp_http_server *s, int fd, void (*cb)(void *ctx), void *ctx) {
    if (fd < 0 || !cb)
        return SP_ERR_INVALID;
    watch *w = calloc(1, sizeof *w);
    if (!w)
        return SP_ERR_NOMEM;
    w->src.kind = SRC_WATCH;
    w->fd = fd;
    w->cb = cb;
    w->ctx = ctx;
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &w->src};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
        int en = errno;
        free(w);
        return en == ENOMEM || en == ENOSPC ? SP_ERR_NOMEM : SP_ERR_IO;
    }
    w->next = s->watches;
    s->watches = w;
    return SP_OK;
}

sp_err sp_http_server_set_tick(sp_http_server *s, int period_ms, void (*cb)(void *ctx), void *ctx) {
    if (!cb) {
        s->tick_period_ms = 0;
        s->tick_cb = NULL;
        s->tick_ctx = NULL;
        return SP_OK;
    }
    if (period_ms <= 0)
        return SP_ERR_INVALID;
    s->tick_period_ms = period_ms;
    s->tick_cb = cb;
    s->tick_ctx = ctx;
    s->tick_next_us = sp_time_us() + (int64_t)period_ms * 1000;
    return SP_OK;
}

void sp_http_set_user(sp_http_conn *c, void *user) {
    c->user = user;
}

void *sp_http_get_user(const sp_http_conn *c) {
    return c->user;
}

// Checks common to the responding calls: SP_ERR_IO once the connection is closed.
static sp_err check_owned(const sp_http_conn *c, bool streaming) {
    if (!c)
        return SP_ERR_INVALID;
    if (c->closed)
        return SP_ERR_IO;
    if (c->state != ST_HANDLER || c->streaming != streaming)
        return SP_ERR_INVALID;
    return SP_OK;
}

sp_err sp_http_respond(sp_http_conn *c, int status, const char *content_type,
                       const char *extra_headers, const char *body, size_t len) {
    sp_err err = check_owned(c, false);
    if (err != SP_OK)
        return err;
    bool bodiless = status == 204 || status == 304;
    if (status < 200 || status > 599 || (!body && len) || (bodiless && len))
        return SP_ERR_INVALID;
    if (c->internal) {
        if ((err = injected_put(c, body, len)))
            return err;
        injected_end(c, status);
        return SP_OK;
    }
    bool ka = may_keep_alive(c);
    size_t sent = c->head_method ? 0 : len;
    err = put_head(c, status, content_type, extra_headers, false, !bodiless, len, ka, sent);
    if (err != SP_OK)
        return err;
    out_put(c, body, sent);
    c->keep_alive = ka;
    end_response(c);
    return SP_OK;
}

sp_err sp_http_stream_begin(sp_http_conn *c, int status, const char *content_type,
                            const char *extra_headers) {
    sp_err err = check_owned(c, false);
    if (err != SP_OK)
        return err;
    if (status < 200 || status > 599 || status == 204 || status == 304)
        return SP_ERR_INVALID;
    if (c->internal) {
        c->status = status;
        c->streaming = true;
        return SP_OK;
    }
    // An HTTP/1.0 client knows no chunked encoding: its body ends when the connection does.
    bool chunked = c->minor_version >= 1;
    bool ka = chunked && may_keep_alive(c);
    err = put_head(c, status, content_type, extra_headers, chunked, false, 0, ka, 0);
    if (err != SP_OK)
        return err;
    c->streaming = true;
    c->chunked = chunked;
    c->keep_alive = ka;
    mark_dirty(c);
    return SP_OK;
}

sp_err sp_http_stream_write(sp_http_conn *c, const char *data, size_t len) {
    sp_err err = check_owned(c, true);
    if (err != SP_OK)
        return err;
    if (!data && len)
        return SP_ERR_INVALID;
    if (len == 0 || c->head_method) // an empty chunk would end the stream
        return SP_OK;
    if (c->internal)
        return injected_put(c, data, len);
    if (pending(c) > c->srv->opts.write_high_water) {
        try_send(c); // the loop may not have flushed since the handler's last writes
        if (pending(c) > c->srv->opts.write_high_water)
            return SP_ERR_LIMIT;
    }
    char size[24];
    int ns = c->chunked ? snprintf(size, sizeof size, "%zx\r\n", len) : 0;
    size_t total = (size_t)ns + len + (c->chunked ? 2 : 0);
    if (total < len || !out_reserve(c, total))
        return SP_ERR_NOMEM;
    out_put(c, size, (size_t)ns);
    out_put(c, data, len);
    if (c->chunked)
        out_put(c, "\r\n", 2);
    mark_dirty(c);
    return SP_OK;
}

sp_err sp_http_stream_end(sp_http_conn *c) {
    sp_err err = check_owned(c, true);
    if (err != SP_OK)
        return err;
    if (c->internal) {
        c->streaming = false;
        injected_end(c, c->status);
        return SP_OK;
    }
    if (c->chunked && !c->head_method) {
        static const char last[] = "0\r\n\r\n";
        if (!out_reserve(c, sizeof last - 1))
            return SP_ERR_NOMEM;
        out_put(c, last, sizeof last - 1);
    }
    end_response(c);
    return SP_OK;
}

size_t sp_http_conn_pending(const sp_http_conn *c) {
    return pending(c);
}

void sp_http_conn_close(sp_http_conn *c) {
    if (c && c->internal) {
        c->closed = true;
        injected_end(c, 0);
    } else if (c) {
        conn_close(c, false);
    }
}
