#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[SP_ERR__COUNT] = {
    [SP_OK] = "ok",
    [SP_ERR_NOMEM] = "out of memory",
    [SP_ERR_IO] = "input/output error",
    [SP_ERR_INVALID] = "invalid argument",
    [SP_ERR_FORMAT] = "malformed input",
    [SP_ERR_TRUNCATED] = "truncated input",
    [SP_ERR_UNSUPPORTED] = "unsupported",
    [SP_ERR_RANGE] = "out of range",
    [SP_ERR_NOT_FOUND] = "not found",
    [SP_ERR_UTF8] = "invalid UTF-8",
    [SP_ERR_LIMIT] = "limit reached",
    [SP_ERR_CANCELLED] = "cancelled",
};

const char *sp_err_str(sp_err err) {
    if ((unsigned)err >= SP_ERR__COUNT || !names[err])
        return "unknown error";
    return names[err];
}

sp_err sp_diag_set(sp_diag *d, sp_err err, uint64_t offset, const char *fmt, ...) {
    if (!d)
        return err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    va_end(ap);
    d->offset = offset;
    return err;
}

void sp_diag_clear(sp_diag *d) {
    if (!d)
        return;
    d->msg[0] = '\0';
    d->param[0] = '\0';
    d->offset = UINT64_MAX;
}

void sp__assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "spindle: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
