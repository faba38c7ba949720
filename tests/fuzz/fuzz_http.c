/* libFuzzer target for the HTTP request parser. Input: two bytes choosing the header limit,
 * one byte choosing a split point, then the request bytes. Checks that the parser never reads
 * past its input (each parse gets an exactly-sized copy), that an accepted request's views lie
 * inside the header section, and restartability: the prefix up to the split point parses as
 * INCOMPLETE, or exactly as the whole input does. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

typedef struct result {
    sp_http_parse_result r;
    sp_http_req req;
    size_t consumed;
    uint64_t cl;
    int status;
} result;

static result parse_copy(const uint8_t *data, size_t len, size_t max, char **copy) {
    char *p = malloc(len ? len : 1);
    CHECK(p);
    if (len)
        memcpy(p, data, len);
    result o;
    memset(&o, 0, sizeof o);
    o.r = sp_http_parse(p, len, max, &o.req, &o.consumed, &o.cl, &o.status);
    *copy = p;
    return o;
}

static bool inside(sp_str s, const char *buf, size_t n) {
    return s.ptr >= buf && s.len <= n && (size_t)(s.ptr - buf) <= n - s.len;
}

static void check_done(const result *o, const char *buf, size_t len, size_t max) {
    CHECK(o->consumed > 0 && o->consumed <= len && o->consumed <= max);
    size_t n = o->consumed;
    CHECK(o->req.method.len > 0 && inside(o->req.method, buf, n));
    CHECK(o->req.target.len > 0 && inside(o->req.target, buf, n));
    CHECK(inside(o->req.path, buf, n) && inside(o->req.query, buf, n));
    CHECK(o->req.path.ptr == o->req.target.ptr && o->req.path.len <= o->req.target.len);
    CHECK(o->req.minor_version >= 0 && o->req.minor_version <= 9);
    CHECK(o->req.n_headers >= 0 && o->req.n_headers <= SP_HTTP_MAX_HEADERS);
    for (int i = 0; i < o->req.n_headers; i++) {
        CHECK(o->req.headers[i].name.len > 0 && inside(o->req.headers[i].name, buf, n));
        CHECK(inside(o->req.headers[i].value, buf, n));
        // Every header is found by name (the first with that name).
        char name[64];
        size_t nl = o->req.headers[i].name.len;
        if (nl < sizeof name) {
            memcpy(name, o->req.headers[i].name.ptr, nl);
            name[nl] = '\0';
            const sp_str *v = sp_http_req_header(&o->req, name);
            CHECK(v && v->ptr <= o->req.headers[i].value.ptr);
        }
    }
    CHECK(o->req.body == NULL && o->req.body_len == 0);
}

static void check_same(const result *a, const char *abuf, const result *b, const char *bbuf) {
    CHECK(a->r == b->r);
    if (a->r == SP_HTTP_PARSE_ERROR) {
        CHECK(a->status == b->status);
        return;
    }
    if (a->r != SP_HTTP_PARSE_DONE)
        return;
    CHECK(a->consumed == b->consumed && a->cl == b->cl);
    CHECK(a->req.n_headers == b->req.n_headers && a->req.keep_alive == b->req.keep_alive);
    CHECK(a->req.minor_version == b->req.minor_version);
    CHECK(a->req.method.ptr - abuf == b->req.method.ptr - bbuf);
    CHECK(a->req.target.ptr - abuf == b->req.target.ptr - bbuf);
    CHECK(a->req.target.len == b->req.target.len);
    for (int i = 0; i < a->req.n_headers; i++) {
        CHECK(a->req.headers[i].name.ptr - abuf == b->req.headers[i].name.ptr - bbuf);
        CHECK(a->req.headers[i].value.ptr - abuf == b->req.headers[i].value.ptr - bbuf);
        CHECK(a->req.headers[i].value.len == b->req.headers[i].value.len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3)
        return 0;
    size_t max = 1 + (size_t)(data[0] | data[1] << 8) % 8192;
    uint8_t split_sel = data[2];
    data += 3;
    size -= 3;

    char *whole_buf;
    result whole = parse_copy(data, size, max, &whole_buf);
    if (whole.r == SP_HTTP_PARSE_DONE)
        check_done(&whole, whole_buf, size, max);
    else if (whole.r == SP_HTTP_PARSE_ERROR)
        CHECK(whole.status == 400 || whole.status == 431 || whole.status == 501 ||
              whole.status == 505);
    else
        CHECK(whole.r == SP_HTTP_PARSE_INCOMPLETE && size <= max);

    size_t k = size ? (size_t)split_sel * (size + 1) / 256 : 0;
    char *prefix_buf;
    result prefix = parse_copy(data, k, max, &prefix_buf);
    if (prefix.r == SP_HTTP_PARSE_INCOMPLETE) {
        // Restarting on the whole input gives the whole input's result; a complete request
        // cannot have been missed in the prefix.
        if (whole.r == SP_HTTP_PARSE_DONE)
            CHECK(k < whole.consumed);
    } else {
        check_same(&prefix, prefix_buf, &whole, whole_buf);
    }
    free(prefix_buf);
    free(whole_buf);
    return 0;
}
