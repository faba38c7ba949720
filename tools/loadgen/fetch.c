/* Base URL parsing, the blocking fetch and the prompt-word calibration (see client.h). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "base/util.h"
#include "loadgen/client.h"
#include "loadgen/http.h"

sp_err sp_lg_target_parse(const char *base_url, sp_lg_target *t, sp_diag *d) {
    sp_lg_target r;
    memset(&r, 0, sizeof r);
    const char *p = base_url;
    if (!strncasecmp(p, "https://", 8))
        return sp_diag_set(d, SP_ERR_INVALID, 0, "https is not supported: use http://");
    if (!strncasecmp(p, "http://", 7))
        p += 7;
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    if (hl == 0 || hl >= sizeof r.host_header)
        return sp_diag_set(d, SP_ERR_INVALID, 0, "'%s' has no host", base_url);
    memcpy(r.host_header, p, hl);
    r.host_header[hl] = '\0';
    if (slash) {
        size_t pl = strlen(slash);
        while (pl && slash[pl - 1] == '/')
            pl--;
        if (pl >= sizeof r.prefix)
            return sp_diag_set(d, SP_ERR_INVALID, 0, "the URL path is too long");
        memcpy(r.prefix, slash, pl);
        r.prefix[pl] = '\0';
    }
    // HOST, HOST:PORT, [V6], [V6]:PORT
    char host[256], port[16] = "80";
    const char *h = r.host_header;
    const char *colon;
    if (h[0] == '[') {
        const char *rb = strchr(h, ']');
        if (!rb || (size_t)(rb - h - 1) >= sizeof host)
            return sp_diag_set(d, SP_ERR_INVALID, 0, "malformed host in '%s'", base_url);
        memcpy(host, h + 1, (size_t)(rb - h - 1));
        host[rb - h - 1] = '\0';
        colon = rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = strrchr(h, ':');
        size_t n = colon ? (size_t)(colon - h) : strlen(h);
        if (n >= sizeof host)
            return sp_diag_set(d, SP_ERR_INVALID, 0, "the host name is too long");
        memcpy(host, h, n);
        host[n] = '\0';
    }
    if (colon) {
        size_t n = strlen(colon + 1);
        if (n == 0 || n >= sizeof port || strspn(colon + 1, "0123456789") != n)
            return sp_diag_set(d, SP_ERR_INVALID, 0, "malformed port in '%s'", base_url);
        memcpy(port, colon + 1, n + 1);
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc || !ai)
        return sp_diag_set(d, SP_ERR_NOT_FOUND, 0, "cannot resolve '%s': %s", host,
                           gai_strerror(rc));
    memcpy(&r.addr, ai->ai_addr, ai->ai_addrlen);
    r.addr_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    const char *key = getenv("OPENAI_API_KEY");
    if (key && strlen(key) < sizeof r.api_key)
        strcpy(r.api_key, key);
    *t = r;
    return SP_OK;
}

typedef struct fetch_buf {
    char *p;
    size_t len, cap;
    bool oom;
} fetch_buf;

static bool fetch_on_body(void *ctx, const char *data, size_t len) {
    fetch_buf *b = ctx;
    if (b->len + len + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + len + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = true;
            return false;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
    return true;
}

static int wait_fd(int fd, short ev, int64_t deadline_ns) {
    for (;;) {
        int64_t left_ms = (deadline_ns - sp_time_ns()) / 1000000;
        if (left_ms <= 0)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = ev};
        int rc = poll(&pfd, 1, (int)SP_MIN(left_ms, 1000000));
        if (rc < 0 && errno == EINTR)
            continue;
        return rc;
    }
}

sp_err sp_lg_fetch(const sp_lg_target *t, const char *method, const char *path,
                   const char *json_body, int timeout_ms, int *status, char **body,
                   size_t *body_len, sp_diag *d) {
    int64_t deadline = sp_time_ns() + (int64_t)timeout_ms * 1000000;
    fetch_buf fb = {0};
    char *req = NULL;
    sp_lg_http_resp *http = NULL;
    sp_err err = SP_ERR_IO;
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "socket: %s", strerror(errno));
    if (connect(fd, (const struct sockaddr *)&t->addr, t->addr_len) && errno != EINPROGRESS) {
        err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "connect: %s", strerror(errno));
        goto done;
    }
    if (wait_fd(fd, POLLOUT, deadline) <= 0) {
        err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "connect: timed out");
        goto done;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) {
        err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "connect: %s", strerror(soerr));
        goto done;
    }
    size_t bl = json_body ? strlen(json_body) : 0;
    size_t cap = bl + 1024;
    req = malloc(cap);
    http = malloc(sizeof *http);
    if (!req || !http) {
        err = SP_ERR_NOMEM;
        goto done;
    }
    char auth[300] = "";
    if (t->api_key[0])
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", t->api_key);
    int hl = snprintf(req, cap,
                      "%s %s%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s%s"
                      "Content-Length: %zu\r\n\r\n",
                      method, t->prefix, path, t->host_header, auth,
                      json_body ? "Content-Type: application/json\r\n" : "", bl);
    if (hl < 0 || (size_t)hl + bl > cap) {
        err = sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "request too long");
        goto done;
    }
    memcpy(req + hl, json_body ? json_body : "", bl);
    size_t total = (size_t)hl + bl, off = 0;
    while (off < total) {
        ssize_t w = send(fd, req + off, total - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline) <= 0) {
                err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "send: timed out");
                goto done;
            }
        } else {
            err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "send: %s", strerror(errno));
            goto done;
        }
    }
    sp_lg_http_init(http, !strcmp(method, "HEAD"), fetch_on_body, &fb);
    char buf[16384];
    while (!sp_lg_http_done(http)) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r > 0) {
            size_t used;
            sp_err e = sp_lg_http_feed(http, buf, (size_t)r, &used, d);
            if (e) {
                err = fb.oom ? SP_ERR_NOMEM : e;
                goto done;
            }
        } else if (r == 0) {
            if ((err = sp_lg_http_eof(http, d)))
                goto done;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (wait_fd(fd, POLLIN, deadline) <= 0) {
                err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "%s %s: timed out", method, path);
                goto done;
            }
        } else {
            err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "recv: %s", strerror(errno));
            goto done;
        }
    }
    if (!fb.p && !fetch_on_body(&fb, "", 0)) {
        err = SP_ERR_NOMEM;
        goto done;
    }
    *status = http->status;
    *body = fb.p;
    if (body_len)
        *body_len = fb.len;
    fb.p = NULL;
    err = SP_OK;
done:
    close(fd);
    free(fb.p);
    free(req);
    free(http);
    return err;
}

/* Tokens of text without special tokens (add_special false), or -1. */
static int count_tokens(const sp_lg_target *t, const char *text, bool add_special, sp_diag *d) {
    json_t *req = json_pack("{s:s, s:s, s:b, s:b}", "content", text, "prompt", text, "add_special",
                            add_special, "add_special_tokens", add_special);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body)
        return -1;
    int status = 0;
    char *resp = NULL;
    size_t resp_len = 0;
    sp_err err = sp_lg_fetch(t, "POST", "/tokenize", body, 10000, &status, &resp, &resp_len, d);
    free(body);
    if (err)
        return -1;
    int n = -1;
    json_t *j = status == 200 ? json_loadb(resp, resp_len, 0, NULL) : NULL;
    json_t *toks = json_object_get(j, "tokens");
    if (json_is_array(toks))
        n = (int)json_array_size(toks);
    json_decref(j);
    free(resp);
    return n;
}

sp_err sp_lg_calibrate_words(const sp_lg_target *t, sp_lg_words cand, const char ***kept,
                             int *n_kept, int *n_special, sp_diag *d) {
    const char **k = malloc((size_t)(cand.n > 0 ? cand.n : 1) * sizeof *k);
    if (!k)
        return SP_ERR_NOMEM;
    int n = 0;
    char text[256];
    for (int i = 0; i < cand.n; i++) {
        const char *w = cand.w[i];
        snprintf(text, sizeof text, "%s %s %s", w, w, w);
        int c = count_tokens(t, text, false, d);
        if (c < 0) {
            free(k);
            return sp_diag_set(d, SP_ERR_UNSUPPORTED, UINT64_MAX,
                               "the server has no usable /tokenize");
        }
        if (c == 3)
            k[n++] = w;
    }
    if (n < 8) {
        free(k);
        return sp_diag_set(d, SP_ERR_UNSUPPORTED, UINT64_MAX,
                           "only %d of %d words are single tokens for this server", n, cand.n);
    }
    // A sentence of them must be one token per word (no merges across words).
    sp_lg_rng rng;
    sp_lg_rng_seed(&rng, 12345);
    char *s = NULL;
    size_t len = 0, cap = 0;
    sp_lg_words kw = {k, n};
    sp_err err = sp_lg_append_words(&s, &len, &cap, kw, &rng, 64);
    int c = err ? -1 : count_tokens(t, s, false, d);
    int c_sp = err ? -1 : count_tokens(t, s, true, d);
    free(s);
    if (err) {
        free(k);
        return err;
    }
    if (c != 64 || c_sp < c) {
        free(k);
        return sp_diag_set(d, SP_ERR_UNSUPPORTED, UINT64_MAX,
                           "64 calibrated words tokenize to %d tokens", c);
    }
    *kept = k;
    *n_kept = n;
    *n_special = c_sp - c;
    return SP_OK;
}
