/* multipart/form-data (multipart.h). */
#include "server/multipart.h"

#include <string.h>
#include <strings.h>

enum { MAX_BOUNDARY = 70 }; // RFC 2046

static bool is_space(char c) {
    return c == ' ' || c == '\t';
}

/* The value of parameter `key` in a header value's ";"-separated parameters (quotes removed,
 * no escapes: RFC 7578 names and boundaries do not need them); false if absent. */
static bool header_param(sp_str v, const char *key, sp_str *out) {
    const size_t klen = strlen(key);
    for (size_t i = 0; i < v.len;) {
        // The next parameter starts after a ';'.
        while (i < v.len && v.ptr[i] != ';')
            i++;
        if (i++ >= v.len)
            break;
        while (i < v.len && is_space(v.ptr[i]))
            i++;
        if (v.len - i <= klen || strncasecmp(v.ptr + i, key, klen) || v.ptr[i + klen] != '=')
            continue;
        i += klen + 1;
        size_t start = i, end;
        if (i < v.len && v.ptr[i] == '"') {
            start = ++i;
            while (i < v.len && v.ptr[i] != '"')
                i++;
            if (i >= v.len)
                return false; // unterminated
            end = i++;
        } else {
            while (i < v.len && v.ptr[i] != ';' && !is_space(v.ptr[i]))
                i++;
            end = i;
        }
        *out = (sp_str){v.ptr + start, end - start};
        return true;
    }
    return false;
}

/* Whether the header value v starts with the media type (case-insensitive). */
static bool has_type(sp_str v, const char *type) {
    const size_t n = strlen(type);
    return v.len >= n && !strncasecmp(v.ptr, type, n) &&
           (v.len == n || v.ptr[n] == ';' || is_space(v.ptr[n]));
}

static const char *find(const char *hay, size_t n, const char *needle, size_t m) {
    return m <= n ? memmem(hay, n, needle, m) : NULL;
}

/* Parses one part's header section [p, end) into part (name, filename, content type). */
static sp_err part_headers(const char *p, const char *end, sp_multipart_part *part, sp_diag *d,
                           size_t off) {
    bool disposition = false;
    while (p < end) {
        const char *eol = find(p, (size_t)(end - p), "\r\n", 2);
        if (!eol)
            eol = end;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon) {
            sp_str name = {p, (size_t)(colon - p)};
            const char *v = colon + 1;
            while (v < eol && is_space(*v))
                v++;
            sp_str value = {v, (size_t)(eol - v)};
            if (name.len == 19 && !strncasecmp(name.ptr, "Content-Disposition", 19)) {
                if (!has_type(value, "form-data") || !header_param(value, "name", &part->name))
                    return sp_diag_set(d, SP_ERR_FORMAT, off,
                                       "a part's Content-Disposition is not form-data with a "
                                       "name");
                part->has_filename = header_param(value, "filename", &part->filename);
                disposition = true;
            } else if (name.len == 12 && !strncasecmp(name.ptr, "Content-Type", 12)) {
                part->content_type = value;
            }
        }
        p = eol + 2;
    }
    if (!disposition)
        return sp_diag_set(d, SP_ERR_FORMAT, off, "a part has no Content-Disposition");
    return SP_OK;
}

sp_err sp_multipart_parse(sp_str content_type, const char *body, size_t len,
                          sp_multipart_part *parts, int cap, int *n, sp_diag *d) {
    sp_str boundary;
    if (!has_type(content_type, "multipart/form-data") ||
        !header_param(content_type, "boundary", &boundary) || boundary.len == 0 ||
        boundary.len > MAX_BOUNDARY)
        return sp_diag_set(d, SP_ERR_FORMAT, UINT64_MAX,
                           "expected a multipart/form-data body with a boundary (as curl -F and "
                           "the OpenAI SDKs send)");
    // The delimiter: CRLF "--" boundary; the first one may open the body without the CRLF.
    char delim[MAX_BOUNDARY + 4] = "\r\n--";
    memcpy(delim + 4, boundary.ptr, boundary.len);
    const size_t dlen = boundary.len + 4;
    const char *end = body + len, *p;
    if (len >= dlen - 2 && !memcmp(body, delim + 2, dlen - 2))
        p = body + dlen - 2;
    else if ((p = find(body, len, delim, dlen)))
        p += dlen; // (a preamble before the first delimiter is ignored)
    else
        return sp_diag_set(d, SP_ERR_FORMAT, 0, "the body has no multipart boundary delimiter");
    int k = 0;
    for (;;) {
        // After a delimiter: "--" closes the body, else transport padding and CRLF.
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            break;
        while (p < end && is_space(*p))
            p++;
        const size_t off = (size_t)(p - body);
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return sp_diag_set(d, SP_ERR_FORMAT, off,
                               "a multipart delimiter is not followed by "
                               "a line break");
        p += 2;
        const char *hend = find(p, (size_t)(end - p), "\r\n\r\n", 4);
        const char *hstop = hend ? hend : p;
        if (!hend && !(end - p >= 2 && p[0] == '\r' && p[1] == '\n'))
            return sp_diag_set(d, SP_ERR_FORMAT, off, "a part's headers do not end");
        if (k == cap)
            return sp_diag_set(d, SP_ERR_FORMAT, off, "more than %d parts", cap);
        sp_multipart_part *part = &parts[k];
        memset(part, 0, sizeof *part);
        sp_err err = part_headers(p, hstop, part, d, off);
        if (err)
            return err;
        const char *data = hend ? hend + 4 : p + 2;
        const char *next = find(data, (size_t)(end - data), delim, dlen);
        if (!next)
            return sp_diag_set(d, SP_ERR_FORMAT, (size_t)(data - body),
                               "a part does not end with the boundary delimiter");
        part->data = (sp_str){data, (size_t)(next - data)};
        k++;
        p = next + dlen;
    }
    *n = k;
    return SP_OK;
}
