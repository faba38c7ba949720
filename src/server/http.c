/* HTTP/1.x request parser: request line and header section, zero-copy, stateless.
 *
 * Restartability comes from statelessness: the parser reads its input strictly left to right
 * and decides from the bytes seen so far only, so parsing a longer buffer with the same prefix
 * ends in the same place (picohttpparser's approach; the server only calls it again when a
 * new read could have completed the header section). Errors are reported at the first byte
 * that makes the request invalid, so a prefix that already fails fails the same way whatever
 * follows.
 *
 * Grammar (RFC 9112), strict except for bare LF line endings, which are accepted like CRLF:
 *   request-line = method SP request-target SP "HTTP/" DIGIT "." DIGIT EOL
 *   field-line   = token ":" OWS value OWS EOL      (no whitespace before ':', no obs-fold)
 * Empty lines before the request line are skipped (RFC 9112 section 2.2). */
#include "server/http_int.h"

#include <string.h>

#include "base/util.h"

enum { P_OK, P_MORE, P_BAD };

typedef struct parser {
    const char *buf; // start of the input (diagnostic offsets are relative to it)
    const char *p;   // cursor
    const char *end; // buf + min(len, max_header_bytes): the parser never looks further
    int status;      // on P_BAD: the HTTP status to answer
    const char *why; // on P_BAD: the reason (a static string)
} parser;

// State accumulated over the header fields.
typedef struct fields {
    bool have_cl;
    uint64_t content_length;
    bool conn_close;
    bool conn_keep_alive;
} fields;

static int fail(parser *ps, int status, const char *why) {
    ps->status = status;
    ps->why = why;
    return P_BAD;
}

// RFC 9110 tchar: the characters of methods and header names.
static bool is_tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return memchr("!#$%&'*+-.^_`|~", c, 15) != NULL;
}

static unsigned char lower(unsigned char c) {
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

bool sp__http_str_ieq(sp_str a, const char *b) {
    size_t n = strlen(b);
    if (a.len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a.ptr[i]) != lower((unsigned char)b[i]))
            return false;
    return true;
}

const sp_str *sp_http_req_header(const sp_http_req *req, const char *name) {
    for (int i = 0; i < req->n_headers; i++)
        if (sp__http_str_ieq(req->headers[i].name, name))
            return &req->headers[i].value;
    return NULL;
}

// Consumes a line ending (CRLF or LF) at the cursor; anything else is the caller's `why`.
static int eol(parser *ps, const char *why) {
    if (ps->p == ps->end)
        return P_MORE;
    if (*ps->p == '\n') {
        ps->p++;
        return P_OK;
    }
    if (*ps->p != '\r')
        return fail(ps, 400, why);
    if (ps->p + 1 == ps->end)
        return P_MORE;
    if (ps->p[1] != '\n')
        return fail(ps, 400, "a CR is not followed by LF");
    ps->p += 2;
    return P_OK;
}

static int parse_request_line(parser *ps, sp_http_req *r) {
    // Empty lines before the request line are ignored.
    while (ps->p < ps->end && (*ps->p == '\r' || *ps->p == '\n')) {
        int rc = eol(ps, "");
        if (rc != P_OK)
            return rc;
    }
    const char *m = ps->p;
    while (ps->p < ps->end && is_tchar((unsigned char)*ps->p))
        ps->p++;
    if (ps->p == ps->end)
        return P_MORE;
    if (ps->p == m)
        return fail(ps, 400, "the request line does not start with a method");
    if (*ps->p != ' ')
        return fail(ps, 400, "invalid character in the method");
    r->method = (sp_str){m, (uint64_t)(ps->p - m)};
    ps->p++;

    // The target: visible ASCII only (no controls, spaces or bytes >= 0x80).
    const char *t = ps->p;
    while (ps->p < ps->end && (unsigned char)*ps->p > 0x20 && (unsigned char)*ps->p < 0x7f)
        ps->p++;
    if (ps->p == ps->end)
        return P_MORE;
    if (ps->p == t)
        return fail(ps, 400, "the request target is empty");
    if (*ps->p != ' ')
        return fail(ps, 400, "invalid character in the request target");
    size_t tlen = (size_t)(ps->p - t);
    r->target = (sp_str){t, tlen};
    const char *q = memchr(t, '?', tlen);
    if (q) {
        r->path = (sp_str){t, (uint64_t)(q - t)};
        r->query = (sp_str){q + 1, (uint64_t)(t + tlen - q - 1)};
    } else {
        r->path = r->target;
        r->query = (sp_str){t + tlen, 0};
    }
    ps->p++;

    static const char proto[] = "HTTP/";
    for (size_t i = 0; i < sizeof proto - 1; i++, ps->p++) {
        if (ps->p == ps->end)
            return P_MORE;
        if (*ps->p != proto[i])
            return fail(ps, 400, "malformed HTTP version");
    }
    int digits[2];
    for (int i = 0; i < 2; i++) {
        if (i == 1) {
            if (ps->p == ps->end)
                return P_MORE;
            if (*ps->p != '.')
                return fail(ps, 400, "malformed HTTP version");
            ps->p++;
        }
        if (ps->p == ps->end)
            return P_MORE;
        if (*ps->p < '0' || *ps->p > '9')
            return fail(ps, 400, "malformed HTTP version");
        digits[i] = *ps->p - '0';
        ps->p++;
    }
    int rc = eol(ps, "malformed HTTP version");
    if (rc != P_OK)
        return rc;
    if (digits[0] != 1)
        return fail(ps, 505, "only HTTP/1.x is supported");
    r->minor_version = digits[1];
    return P_OK;
}

// Content-Length: 1*DIGIT, fitting in 64 bits. Lists ("5, 5") are not accepted.
static bool parse_length(sp_str v, uint64_t *out) {
    if (v.len == 0)
        return false;
    uint64_t x = 0;
    for (uint64_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.ptr[i];
        if (c < '0' || c > '9')
            return false;
        if (!sp_mul_u64(x, 10, &x) || !sp_add_u64(x, c - '0', &x))
            return false;
    }
    *out = x;
    return true;
}

// Connection: a comma-separated list of tokens; we care about "close" and "keep-alive".
static void scan_connection(sp_str v, fields *f) {
    uint64_t i = 0;
    while (i < v.len) {
        while (i < v.len && (v.ptr[i] == ' ' || v.ptr[i] == '\t' || v.ptr[i] == ','))
            i++;
        uint64_t s = i;
        while (i < v.len && v.ptr[i] != ',')
            i++;
        uint64_t e = i;
        while (e > s && (v.ptr[e - 1] == ' ' || v.ptr[e - 1] == '\t'))
            e--;
        sp_str tok = {v.ptr + s, e - s};
        if (sp__http_str_ieq(tok, "close"))
            f->conn_close = true;
        else if (sp__http_str_ieq(tok, "keep-alive"))
            f->conn_keep_alive = true;
    }
}

// The meaning of the fields the parser itself acts on. Called once a field line is complete.
static int check_field(parser *ps, const sp_http_header *h, fields *f) {
    if (sp__http_str_ieq(h->name, "content-length")) {
        uint64_t n;
        if (!parse_length(h->value, &n))
            return fail(ps, 400, "Content-Length is not a decimal number of bytes");
        if (f->have_cl && n != f->content_length)
            return fail(ps, 400, "conflicting Content-Length fields");
        f->have_cl = true;
        f->content_length = n;
    } else if (sp__http_str_ieq(h->name, "transfer-encoding")) {
        return fail(ps, 501, "Transfer-Encoding is not supported; send a Content-Length body");
    } else if (sp__http_str_ieq(h->name, "connection")) {
        scan_connection(h->value, f);
    }
    return P_OK;
}

static int parse_fields(parser *ps, sp_http_req *r, fields *f) {
    for (;;) {
        if (ps->p == ps->end)
            return P_MORE;
        char c = *ps->p;
        if (c == '\r' || c == '\n')
            return eol(ps, ""); // the empty line ending the header section
        if (c == ' ' || c == '\t')
            return fail(ps, 400, "obsolete line folding (a field line starting with whitespace)");
        const char *n = ps->p;
        while (ps->p < ps->end && is_tchar((unsigned char)*ps->p))
            ps->p++;
        if (ps->p == ps->end)
            return P_MORE;
        if (ps->p == n || *ps->p != ':')
            return fail(ps, 400, "invalid character in a header name");
        if (r->n_headers == SP_HTTP_MAX_HEADERS)
            return fail(ps, 431, "too many header fields");
        sp_http_header *h = &r->headers[r->n_headers];
        h->name = (sp_str){n, (uint64_t)(ps->p - n)};
        ps->p++;
        while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
            ps->p++;
        const char *v = ps->p;
        while (ps->p < ps->end && *ps->p != '\r' && *ps->p != '\n') {
            unsigned char b = (unsigned char)*ps->p;
            if ((b < 0x20 && b != '\t') || b == 0x7f)
                return fail(ps, 400, "invalid character in a header value");
            ps->p++;
        }
        const char *ve = ps->p;
        int rc = eol(ps, "");
        if (rc != P_OK)
            return rc;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        h->value = (sp_str){v, (uint64_t)(ve - v)};
        r->n_headers++;
        rc = check_field(ps, h, f);
        if (rc != P_OK)
            return rc;
    }
}

sp_http_parse_result sp__http_parse(const char *buf, size_t len, size_t max_header_bytes,
                                    sp_http_req *req, size_t *consumed, uint64_t *content_length,
                                    int *status, sp_diag *diag) {
    parser ps = {.buf = buf, .p = buf, .end = buf + SP_MIN(len, max_header_bytes)};
    sp_http_req r;
    memset(&r, 0, sizeof r);
    fields f = {0};
    int rc = parse_request_line(&ps, &r);
    if (rc == P_OK)
        rc = parse_fields(&ps, &r, &f);
    if (rc == P_MORE) {
        if (len <= max_header_bytes)
            return SP_HTTP_PARSE_INCOMPLETE;
        *status = 431;
        sp_diag_set(diag, SP_ERR_LIMIT, max_header_bytes,
                    "the request header section is larger than %zu bytes", max_header_bytes);
        return SP_HTTP_PARSE_ERROR;
    }
    if (rc == P_BAD) {
        *status = ps.status;
        sp_diag_set(diag, ps.status == 431 ? SP_ERR_LIMIT : SP_ERR_FORMAT, (uint64_t)(ps.p - buf),
                    "%s", ps.why);
        return SP_HTTP_PARSE_ERROR;
    }
    r.keep_alive = r.minor_version == 0 ? f.conn_keep_alive && !f.conn_close : !f.conn_close;
    *req = r;
    *consumed = (size_t)(ps.p - buf);
    *content_length = f.have_cl ? f.content_length : 0;
    return SP_HTTP_PARSE_DONE;
}

sp_http_parse_result sp_http_parse(const char *buf, size_t len, size_t max_header_bytes,
                                   sp_http_req *req, size_t *consumed, uint64_t *content_length,
                                   int *status) {
    return sp__http_parse(buf, len, max_header_bytes, req, consumed, content_length, status, NULL);
}
