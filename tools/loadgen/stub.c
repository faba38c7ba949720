/* A trivial streaming endpoint for measuring the client itself (see client.h). It answers as
 * fast as it can, so a benchmark against it measures the client's own ceiling. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/util.h"
#include "loadgen/client.h"

#define STUB_IN_MAX     65536
#define STUB_MAX_TOKENS 4096

typedef struct stub_conn {
    int fd;
    char in[STUB_IN_MAX];
    size_t in_len;
    char *out;
    size_t out_len, out_off, out_cap;
    int tokens_left; // paced mode: chunks still to send
    int tokens_total;
    int64_t next_ns; // paced mode: when the next chunk is due
    bool chat;       // the request was for /v1/chat/completions
    bool want_out;
} stub_conn;

static volatile sig_atomic_t g_signalled;
static void on_signal(int sig) {
    (void)sig;
    g_signalled = 1;
}

static bool out_put(stub_conn *c, const char *p, size_t n) {
    if (c->out_len + n > c->out_cap) {
        size_t nc = c->out_cap ? c->out_cap : 4096;
        while (nc < c->out_len + n)
            nc *= 2;
        char *np = realloc(c->out, nc);
        if (!np)
            return false;
        c->out = np;
        c->out_cap = nc;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    return true;
}

/* One SSE event as an HTTP chunk. */
static bool put_event(stub_conn *c, const char *data) {
    char buf[512];
    size_t dl = strlen(data);
    int n = snprintf(buf, sizeof buf, "%zx\r\ndata: %s\n\n\r\n", dl + 8, data);
    return n > 0 && (size_t)n < sizeof buf && out_put(c, buf, (size_t)n);
}

static const char k_token[] =
    "{\"id\":\"stub\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\" "
    "word\",\"logprobs\":null,\"finish_reason\":null}]}";

// Chat streams open with a role-only chunk before any token, as OpenAI's and Spindle's do.
static const char k_chat_role[] =
    "{\"id\":\"stub\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]"
    "}";
static const char k_chat_token[] =
    "{\"id\":\"stub\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\" word\"},\"logprobs\":null,\"finish_reason\":null}]}";

static bool put_token(stub_conn *c) {
    return put_event(c, c->chat ? k_chat_token : k_token);
}

static bool put_tail(stub_conn *c) {
    char usage[256];
    snprintf(usage, sizeof usage,
             "{\"id\":\"stub\",\"object\":\"text_completion\",\"choices\":[],\"usage\":"
             "{\"prompt_tokens\":8,\"completion_tokens\":%d,\"total_tokens\":%d}}",
             c->tokens_total, c->tokens_total + 8);
    return put_event(c, usage) && put_event(c, "[DONE]") && out_put(c, "0\r\n\r\n", 5);
}

/* max_tokens from the body, without a JSON parser: this endpoint must stay trivial. */
static int body_max_tokens(const char *body, size_t len) {
    const char *keys[] = {"\"max_tokens\"", "\"max_completion_tokens\""};
    for (size_t k = 0; k < 2; k++) {
        size_t kl = strlen(keys[k]);
        for (size_t i = 0; i + kl < len; i++)
            if (!memcmp(body + i, keys[k], kl)) {
                size_t j = i + kl;
                while (j < len && (body[j] == ' ' || body[j] == ':'))
                    j++;
                int v = 0;
                while (j < len && body[j] >= '0' && body[j] <= '9' && v < STUB_MAX_TOKENS)
                    v = v * 10 + (body[j++] - '0');
                return SP_MAX(1, SP_MIN(v, STUB_MAX_TOKENS));
            }
    }
    return 16;
}

/* Parses complete requests in c->in and queues their responses. Returns false to close. */
static bool stub_parse(stub_conn *c, double itl_ms) {
    for (;;) {
        if (c->tokens_left > 0)
            return true; // a paced response is still going: later requests wait
        char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end)
            return c->in_len < STUB_IN_MAX;
        size_t head = (size_t)(end - c->in) + 4;
        size_t cl = 0;
        for (char *p = c->in; p < end; p++)
            if ((p == c->in || p[-1] == '\n') && !strncasecmp(p, "Content-Length:", 15))
                cl = strtoul(p + 15, NULL, 10);
        if (cl > STUB_IN_MAX - head)
            return false;
        if (c->in_len < head + cl)
            return true;
        int n = body_max_tokens(c->in + head, cl);
        char *line_end = memchr(c->in, '\n', head);
        c->chat = line_end && memmem(c->in, (size_t)(line_end - c->in), "/chat/", 6);
        static const char hdr[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                  "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
        if (!out_put(c, hdr, sizeof hdr - 1))
            return false;
        c->tokens_total = n;
        if (c->chat && !put_event(c, k_chat_role))
            return false;
        if (itl_ms > 0) {
            // The first token comes at once, or one interval after a chat's role chunk.
            c->tokens_left = n;
            c->next_ns = sp_time_ns() + (c->chat ? (int64_t)(itl_ms * 1e6) : 0);
        } else {
            for (int i = 0; i < n; i++)
                if (!put_token(c))
                    return false;
            if (!put_tail(c))
                return false;
        }
        memmove(c->in, c->in + head + cl, c->in_len - head - cl);
        c->in_len -= head + cl;
    }
}

static bool stub_flush(int ep, stub_conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w > 0) {
            c->out_off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            if (!c->want_out) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                c->want_out = true;
            }
            return true;
        } else {
            return false;
        }
    }
    c->out_off = c->out_len = 0;
    if (c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = false;
    }
    return true;
}

static void stub_close(int ep, stub_conn *c, stub_conn **list, int *n) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->out);
    for (int i = 0; i < *n; i++)
        if (list[i] == c) {
            list[i] = list[--*n];
            break;
        }
    free(c);
}

sp_err sp_lg_stub_serve(int port, double itl_ms, volatile int *stop, bool handle_signals,
                        void (*on_listen)(int port, void *ctx), void *ctx) {
    sp_err err = SP_ERR_IO;
    int ep = -1;
    int max_conns = 4096, n_conns = 0;
    stub_conn **conns = calloc((size_t)max_conns, sizeof *conns);
    if (!conns)
        return SP_ERR_NOMEM;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        goto done;
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 1024))
        goto done;
    socklen_t al = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        goto done;
    static char listener_tag;
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listener_tag};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev))
        goto done;
    if (handle_signals) {
        struct sigaction sa = {.sa_handler = on_signal};
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
    }
    if (on_listen)
        on_listen(ntohs(a.sin_port), ctx);
    struct epoll_event evs[128];
    while (!(stop && *stop) && !g_signalled) {
        int timeout = 100;
        if (itl_ms > 0) {
            int64_t now = sp_time_ns();
            for (int i = 0; i < n_conns; i++)
                if (conns[i]->tokens_left > 0) {
                    int64_t left = (conns[i]->next_ns - now) / 1000000;
                    timeout = (int)SP_MAX(0, SP_MIN(timeout, left));
                }
        }
        int n = epoll_wait(ep, evs, (int)SP_ARRAY_LEN(evs), timeout);
        if (n < 0 && errno != EINTR)
            goto done;
        for (int i = 0; i < n; i++) {
            if (!evs[i].events)
                continue; // its connection was closed earlier in this batch
            if (evs[i].data.ptr == &listener_tag) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    stub_conn *nc = n_conns < max_conns ? calloc(1, sizeof *nc) : NULL;
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                    conns[n_conns++] = nc;
                }
                continue;
            }
            stub_conn *c = evs[i].data.ptr;
            bool ok = true;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = recv(c->fd, c->in + c->in_len, STUB_IN_MAX - c->in_len, 0);
                if (r > 0) {
                    c->in_len += (size_t)r;
                    ok = stub_parse(c, itl_ms);
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    ok = false;
                }
            }
            if (ok)
                ok = stub_flush(ep, c);
            if (!ok) {
                stub_close(ep, c, conns, &n_conns);
                // Later events of this batch may name c: drop them.
                for (int k = i + 1; k < n; k++)
                    if (evs[k].data.ptr == c)
                        evs[k].events = 0;
            }
        }
        if (itl_ms > 0) {
            int64_t now = sp_time_ns();
            for (int i = 0; i < n_conns; i++) {
                stub_conn *c = conns[i];
                bool ok = true;
                while (ok && c->tokens_left > 0 && c->next_ns <= now) {
                    ok = put_token(c);
                    c->next_ns += (int64_t)(itl_ms * 1e6);
                    if (--c->tokens_left == 0 && ok) {
                        ok = put_tail(c) && stub_parse(c, itl_ms);
                    }
                }
                if (ok)
                    ok = stub_flush(ep, c);
                if (!ok) {
                    stub_close(ep, c, conns, &n_conns);
                    i--;
                }
            }
        }
    }
    err = SP_OK;
done:
    while (n_conns)
        stub_close(ep, conns[0], conns, &n_conns);
    free(conns);
    if (ep >= 0)
        close(ep);
    if (lfd >= 0)
        close(lfd);
    return err;
}
