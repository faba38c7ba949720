/* Length-delimited strings: views into bytes owned by someone else (a mapped file, a request
 * buffer), so a string is passed without copying or terminating it. */
#ifndef SP_BASE_STR_H
#define SP_BASE_STR_H

#include <stdbool.h>
#include <stdint.h>

/* A length-delimited string; not NUL-terminated. It borrows ptr: whoever made the view says how
 * long the bytes stay valid. */
typedef struct sp_str {
    const char *ptr;
    uint64_t len;
} sp_str;

/* Whether s holds exactly the bytes of the NUL-terminated string c. */
bool sp_str_eq(sp_str s, const char *c);

#endif
