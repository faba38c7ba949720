/* libFuzzer target for the multipart/form-data parser. Input: the Content-Type header value,
 * a NUL byte, then the body. Checks that the parser never reads past the body (it gets an
 * exactly-sized copy), and that every part it returns lies inside the body, its name and
 * filename inside its header section (before its data). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static bool inside(sp_str s, const char *body, size_t len) {
    return s.len == 0 || (s.ptr >= body && s.ptr + s.len <= body + len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    if (!nul)
        return 0;
    const size_t ct_len = (size_t)(nul - data), len = size - ct_len - 1;
    char *ct = malloc(ct_len ? ct_len : 1), *body = malloc(len ? len : 1);
    CHECK(ct && body);
    memcpy(ct, data, ct_len);
    memcpy(body, nul + 1, len);
    sp_multipart_part parts[8];
    int n = 0;
    sp_diag d;
    sp_diag_clear(&d);
    if (sp_multipart_parse((sp_str){ct, ct_len}, body, len, parts, 8, &n, &d) == SP_OK) {
        CHECK(n >= 0 && n <= 8);
        for (int i = 0; i < n; i++) {
            CHECK(inside(parts[i].data, body, len));
            CHECK(inside(parts[i].name, body, len) && parts[i].name.ptr < parts[i].data.ptr);
            CHECK(inside(parts[i].filename, body, len));
            CHECK(inside(parts[i].content_type, body, len));
        }
    } else {
        CHECK(d.msg[0]);
    }
    free(ct);
    free(body);
    return 0;
}
