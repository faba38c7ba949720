#include "base/str.h"

#include <string.h>

bool sp_str_eq(sp_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}
