#include "loadgen/http.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"

enum {
    S_STATUS,
    S_HEADER,
    S_BODY_CL,
    S_CHUNK_SIZE,
    S_CHUNK_DATA,
    S_CHUNK_END, // the CRLF after a chunk's data
    S_TRAILER,
    S_BODY_EOF,
    S_DONE,
};

void sp_lg_http_init(sp_lg_http_resp *r, bool head, sp_lg_body_fn on_body, void *ctx) {
    memset(r, 0, offsetof(sp_lg_http_resp, line));
    r->content_length = -1;
    r->state = S_STATUS;
    r->head = head;
    r->on_body = on_body;
    r->ctx = ctx;
}

bool sp_lg_http_headers_done(const sp_lg_http_resp *r) {
    return r->state != S_STATUS && r->state != S_HEADER;
}

bool sp_lg_http_done(const sp_lg_http_resp *r) {
    return r->state == S_DONE;
}

static bool is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_ws(char c) {
    return c == ' ' || c == '\t';
}

/* Trims spaces and tabs from both ends of [*p, *p + *n). */
static void trim(const char **p, size_t *n) {
    while (*n && is_ws(**p)) {
        (*p)++;
        (*n)--;
    }
    while (*n && is_ws((*p)[*n - 1]))
        (*n)--;
}

/* Whether the comma-separated list [p, p + n) holds the token tok (case-insensitive). */
static bool list_has(const char *p, size_t n, const char *tok) {
    size_t tl = strlen(tok);
    while (n) {
        const char *comma = memchr(p, ',', n);
        size_t el = comma ? (size_t)(comma - p) : n;
        const char *e = p;
        size_t en = el;
        trim(&e, &en);
        if (en == tl && !strncasecmp(e, tok, tl))
            return true;
        if (!comma)
            break;
        p = comma + 1;
        n -= el + 1;
    }
    return false;
}

static sp_err parse_status(sp_lg_http_resp *r, const char *l, size_t n, uint64_t off, sp_diag *d) {
    // HTTP/1.x SP 3DIGIT [SP reason]
    if (n < 12 || memcmp(l, "HTTP/1.", 7) || l[7] < '0' || l[7] > '9' || l[8] != ' ' ||
        l[9] < '1' || l[9] > '9' || l[10] < '0' || l[10] > '9' || l[11] < '0' || l[11] > '9' ||
        (n > 12 && l[12] != ' '))
        return sp_diag_set(d, SP_ERR_FORMAT, off, "malformed HTTP status line");
    r->minor_version = l[7] - '0';
    r->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    r->keep_alive = r->minor_version >= 1;
    return SP_OK;
}

static sp_err parse_header(sp_lg_http_resp *r, const char *l, size_t n, uint64_t off, sp_diag *d) {
    if (n && is_ws(l[0]))
        return sp_diag_set(d, SP_ERR_FORMAT, off, "folded header lines are not allowed");
    const char *colon = memchr(l, ':', n);
    if (!colon || colon == l)
        return sp_diag_set(d, SP_ERR_FORMAT, off, "malformed header line");
    size_t nl = (size_t)(colon - l);
    for (size_t i = 0; i < nl; i++)
        if (!is_tchar((unsigned char)l[i]))
            return sp_diag_set(d, SP_ERR_FORMAT, off + i, "invalid character in a header name");
    const char *v = colon + 1;
    size_t vn = n - nl - 1;
    trim(&v, &vn);
    if (nl == 14 && !strncasecmp(l, "Content-Length", 14)) {
        if (vn == 0 || vn > 18)
            return sp_diag_set(d, SP_ERR_FORMAT, off, "invalid Content-Length");
        int64_t x = 0;
        for (size_t i = 0; i < vn; i++) {
            if (v[i] < '0' || v[i] > '9')
                return sp_diag_set(d, SP_ERR_FORMAT, off, "invalid Content-Length");
            x = x * 10 + (v[i] - '0');
        }
        if (r->content_length >= 0 && r->content_length != x)
            return sp_diag_set(d, SP_ERR_FORMAT, off, "conflicting Content-Length headers");
        r->content_length = x;
    } else if (nl == 17 && !strncasecmp(l, "Transfer-Encoding", 17)) {
        // Only "chunked" (possibly after identity) is understood; it must come last.
        const char *last = v;
        size_t ln = vn;
        const char *comma = NULL;
        for (size_t i = 0; i < vn; i++)
            if (v[i] == ',')
                comma = v + i;
        if (comma) {
            last = comma + 1;
            ln = vn - (size_t)(last - v);
            trim(&last, &ln);
        }
        if (ln == 7 && !strncasecmp(last, "chunked", 7))
            r->chunked = true;
        else if (!(ln == 8 && !strncasecmp(last, "identity", 8)))
            return sp_diag_set(d, SP_ERR_FORMAT, off, "unsupported Transfer-Encoding '%.*s'",
                               (int)SP_MIN(vn, 64), v);
    } else if (nl == 10 && !strncasecmp(l, "Connection", 10)) {
        if (list_has(v, vn, "close"))
            r->keep_alive = false;
        else if (list_has(v, vn, "keep-alive"))
            r->keep_alive = true;
    } else if (nl == 12 && !strncasecmp(l, "Content-Type", 12)) {
        size_t k = SP_MIN(vn, sizeof r->content_type - 1);
        memcpy(r->content_type, v, k);
        r->content_type[k] = '\0';
    }
    return SP_OK;
}

/* The header section ended: choose how the body is delimited. */
static void headers_end(sp_lg_http_resp *r) {
    if (r->status >= 100 && r->status < 200) {
        // An interim response: the real one follows.
        bool head = r->head;
        sp_lg_body_fn fn = r->on_body;
        void *ctx = r->ctx;
        sp_lg_http_init(r, head, fn, ctx);
        return;
    }
    if (r->head || r->status == 204 || r->status == 304) {
        r->no_body = true;
        r->state = S_DONE;
    } else if (r->chunked) {
        if (r->content_length >= 0)
            r->keep_alive = false; // both framings: trust chunked, then do not reuse
        r->state = S_CHUNK_SIZE;
    } else if (r->content_length >= 0) {
        r->left = (uint64_t)r->content_length;
        r->state = r->left ? S_BODY_CL : S_DONE;
    } else {
        r->keep_alive = false;
        r->state = S_BODY_EOF;
    }
}

static sp_err parse_chunk_size(sp_lg_http_resp *r, const char *l, size_t n, uint64_t off,
                               sp_diag *d) {
    size_t i = 0;
    uint64_t x = 0;
    for (; i < n; i++) {
        char c = l[i];
        int v;
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v = c - 'A' + 10;
        else
            break;
        if (x >> 56)
            return sp_diag_set(d, SP_ERR_FORMAT, off, "chunk size too large");
        x = x * 16 + (uint64_t)v;
    }
    if (i == 0)
        return sp_diag_set(d, SP_ERR_FORMAT, off, "malformed chunk size");
    while (i < n && is_ws(l[i]))
        i++;
    if (i < n && l[i] != ';')
        return sp_diag_set(d, SP_ERR_FORMAT, off + i, "malformed chunk size");
    r->left = x;
    r->state = x ? S_CHUNK_DATA : S_TRAILER;
    return SP_OK;
}

/* Handles one complete line (without its line end) in the current state. */
static sp_err on_line(sp_lg_http_resp *r, const char *l, size_t n, uint64_t off, sp_diag *d) {
    switch (r->state) {
    case S_STATUS:
        if (n == 0)
            return SP_OK; // tolerate stray line ends before the status line
        {
            sp_err err = parse_status(r, l, n, off, d);
            if (err)
                return err;
        }
        r->state = S_HEADER;
        return SP_OK;
    case S_HEADER:
        if (n == 0) {
            headers_end(r);
            return SP_OK;
        }
        return parse_header(r, l, n, off, d);
    case S_CHUNK_SIZE:
        return parse_chunk_size(r, l, n, off, d);
    case S_CHUNK_END:
        if (n != 0)
            return sp_diag_set(d, SP_ERR_FORMAT, off, "chunk data longer than its size");
        r->state = S_CHUNK_SIZE;
        return SP_OK;
    case S_TRAILER:
        if (n == 0)
            r->state = S_DONE;
        return SP_OK; // trailer fields are ignored
    default:
        SP_ASSERT(0);
    }
}

static bool line_state(int s) {
    return s == S_STATUS || s == S_HEADER || s == S_CHUNK_SIZE || s == S_CHUNK_END ||
           s == S_TRAILER;
}

sp_err sp_lg_http_feed(sp_lg_http_resp *r, const char *data, size_t len, size_t *consumed,
                       sp_diag *d) {
    size_t i = 0;
    while (i < len && r->state != S_DONE) {
        if (line_state(r->state)) {
            bool in_head = r->state == S_STATUS || r->state == S_HEADER;
            const char *nl = memchr(data + i, '\n', len - i);
            size_t take = nl ? (size_t)(nl - (data + i)) + 1 : len - i;
            if (r->line_len + take > SP_LG_HTTP_LINE_MAX)
                return sp_diag_set(d, SP_ERR_LIMIT, i, "an HTTP line is longer than %d bytes",
                                   SP_LG_HTTP_LINE_MAX);
            if (in_head && r->header_bytes + take > SP_LG_HTTP_HEADERS_MAX)
                return sp_diag_set(d, SP_ERR_LIMIT, i,
                                   "the HTTP header section is longer than %d bytes",
                                   SP_LG_HTTP_HEADERS_MAX);
            memcpy(r->line + r->line_len, data + i, take);
            r->line_len += take;
            if (in_head)
                r->header_bytes += take;
            i += take;
            if (!nl)
                break;
            size_t n = r->line_len - 1; // without the LF
            if (n && r->line[n - 1] == '\r')
                n--;
            r->line_len = 0;
            sp_err err = on_line(r, r->line, n, i, d);
            if (err)
                return err;
            continue;
        }
        size_t avail = len - i;
        size_t take = avail;
        if (r->state == S_BODY_CL || r->state == S_CHUNK_DATA)
            take = (size_t)SP_MIN((uint64_t)avail, r->left);
        if (take && r->on_body && !r->on_body(r->ctx, data + i, take))
            return SP_ERR_CANCELLED;
        i += take;
        if (r->state == S_BODY_CL) {
            r->left -= take;
            if (!r->left)
                r->state = S_DONE;
        } else if (r->state == S_CHUNK_DATA) {
            r->left -= take;
            if (!r->left)
                r->state = S_CHUNK_END;
        }
    }
    *consumed = i;
    return SP_OK;
}

sp_err sp_lg_http_eof(sp_lg_http_resp *r, sp_diag *d) {
    if (r->state == S_BODY_EOF) {
        r->state = S_DONE;
        return SP_OK;
    }
    if (r->state == S_DONE)
        return SP_OK;
    return sp_diag_set(d, SP_ERR_TRUNCATED, UINT64_MAX, "the connection closed mid-response");
}

/* ---- Server-sent events -------------------------------------------------------------------- */

void sp_lg_sse_init(sp_lg_sse *s, size_t max_bytes, sp_lg_sse_fn on_event, void *ctx) {
    memset(s, 0, sizeof *s);
    s->max_bytes = max_bytes;
    s->on_event = on_event;
    s->ctx = ctx;
}

void sp_lg_sse_deinit(sp_lg_sse *s) {
    free(s->data);
    free(s->line);
    memset(s, 0, sizeof *s);
}

static bool grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap)
        return true;
    size_t nc = *cap ? *cap : 256;
    while (nc < need)
        nc *= 2;
    char *nb = realloc(*buf, nc);
    if (!nb)
        return false;
    *buf = nb;
    *cap = nc;
    return true;
}

static sp_err sse_line(sp_lg_sse *s, const char *l, size_t n, sp_diag *d) {
    if (n == 0) { // dispatch
        bool ok = true;
        if (s->has_data) {
            size_t dl = s->data_len;
            if (dl && s->data[dl - 1] == '\n')
                dl--; // the last data line's newline is not part of the data
            s->data[dl] = '\0';
            ok = s->on_event(s->ctx, s->event, s->data, dl);
        }
        s->data_len = 0;
        s->has_data = false;
        s->event[0] = '\0';
        return ok ? SP_OK : SP_ERR_CANCELLED;
    }
    if (l[0] == ':')
        return SP_OK; // a comment (keep-alive pings)
    const char *colon = memchr(l, ':', n);
    size_t fl = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vn = colon ? n - fl - 1 : 0;
    if (vn && v[0] == ' ') {
        v++;
        vn--;
    }
    if (fl == 4 && !memcmp(l, "data", 4)) {
        if (s->data_len + vn + 1 > s->max_bytes)
            return sp_diag_set(d, SP_ERR_LIMIT, UINT64_MAX, "an event is larger than %zu bytes",
                               s->max_bytes);
        if (!grow(&s->data, &s->data_cap, s->data_len + vn + 2))
            return SP_ERR_NOMEM;
        memcpy(s->data + s->data_len, v, vn);
        s->data_len += vn;
        s->data[s->data_len++] = '\n';
        s->has_data = true;
    } else if (fl == 5 && !memcmp(l, "event", 5)) {
        size_t k = SP_MIN(vn, sizeof s->event - 1);
        memcpy(s->event, v, k);
        s->event[k] = '\0';
    }
    return SP_OK;
}

sp_err sp_lg_sse_feed(sp_lg_sse *s, const char *data, size_t len, sp_diag *d) {
    size_t i = 0;
    if (!s->bom_checked && len) {
        // A UTF-8 byte order mark may start the stream; it may arrive split.
        static const char bom[3] = {'\xEF', '\xBB', '\xBF'};
        size_t have = s->line_len;
        while (i < len && have < 3 && data[i] == bom[have]) {
            if (!grow(&s->line, &s->line_cap, have + 1))
                return SP_ERR_NOMEM;
            s->line[have++] = data[i++];
        }
        if (have == 3) {
            s->line_len = 0;
            s->bom_checked = true;
        } else if (i < len) {
            // Not a BOM: what was held back is the start of the first line.
            s->line_len = have;
            s->bom_checked = true;
        } else {
            s->line_len = have;
            return SP_OK; // all input so far is a BOM prefix
        }
    }
    while (i < len) {
        if (s->after_cr) {
            s->after_cr = false;
            if (data[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < len && data[j] != '\n' && data[j] != '\r')
            j++;
        size_t piece = j - i;
        if (j == len) { // no line end yet: keep the piece
            if (s->line_len + piece > s->max_bytes)
                return sp_diag_set(d, SP_ERR_LIMIT, UINT64_MAX,
                                   "an event line is longer than %zu bytes", s->max_bytes);
            if (!grow(&s->line, &s->line_cap, s->line_len + piece))
                return SP_ERR_NOMEM;
            memcpy(s->line + s->line_len, data + i, piece);
            s->line_len += piece;
            break;
        }
        const char *l = data + i;
        size_t n = piece;
        if (s->line_len) { // the line began in an earlier piece
            if (s->line_len + piece > s->max_bytes)
                return sp_diag_set(d, SP_ERR_LIMIT, UINT64_MAX,
                                   "an event line is longer than %zu bytes", s->max_bytes);
            if (!grow(&s->line, &s->line_cap, s->line_len + piece))
                return SP_ERR_NOMEM;
            memcpy(s->line + s->line_len, data + i, piece);
            l = s->line;
            n = s->line_len + piece;
        }
        s->after_cr = data[j] == '\r';
        i = j + 1;
        s->line_len = 0;
        sp_err err = sse_line(s, l, n, d);
        if (err)
            return err;
    }
    return SP_OK;
}

void sp_lg_sse_end(sp_lg_sse *s) {
    s->data_len = 0;
    s->has_data = false;
    s->line_len = 0;
    s->event[0] = '\0';
}
