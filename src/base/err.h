/* Error codes and diagnostics shared by every layer.
 *
 * Functions that can fail return sp_err and write their out-parameters only on success.
 * Parsers of untrusted input (GGUF, HTTP, JSON, templates, tokenizer) also fill an sp_diag:
 * a message, the offending parameter and a byte offset, which become the user-facing error. */
#ifndef SP_BASE_ERR_H
#define SP_BASE_ERR_H

#include <stdint.h>

#define SP_MUST_USE __attribute__((warn_unused_result))
#define SP_PRINTF(a, b) __attribute__((format(printf, a, b)))

typedef enum sp_err {
    SP_OK = 0,
    SP_ERR_NOMEM,       // an allocation sized by input or a pool ran out
    SP_ERR_IO,          // open/read/mmap/write failed (errno in the message)
    SP_ERR_INVALID,     // an argument is out of its documented domain
    SP_ERR_FORMAT,      // malformed input (file, JSON, template, HTTP)
    SP_ERR_TRUNCATED,   // input ended before a complete structure
    SP_ERR_UNSUPPORTED, // well-formed but not supported (architecture, type, version)
    SP_ERR_RANGE,       // a count, size or offset is out of range or overflows
    SP_ERR_NOT_FOUND,   // a required key, tensor or token is missing
    SP_ERR_UTF8,        // text is not valid UTF-8
    SP_ERR_LIMIT,       // a configured limit (steps, size, recursion) was reached
    SP_ERR_CANCELLED,   // the operation was cancelled by its owner
    SP_ERR__COUNT
} sp_err;

/* Returns a static, human-readable name for an error code ("out of memory", ...). */
const char *sp_err_str(sp_err err);

/* Diagnostic for errors in untrusted input. offset is a byte offset into the input, or
 * UINT64_MAX when no position applies. */
typedef struct sp_diag {
    char msg[256];
    char param[64];
    uint64_t offset;
} sp_diag;

/* Records a message at an offset; d may be NULL. Returns err so callers can write
 * `return sp_diag_set(d, SP_ERR_FORMAT, off, "...")`. */
sp_err sp_diag_set(sp_diag *d, sp_err err, uint64_t offset, const char *fmt, ...) SP_PRINTF(4, 5);

/* Resets a diagnostic to "no message". d may be NULL. */
void sp_diag_clear(sp_diag *d);

/* Programmer errors only; stays on in release builds. Never assert on untrusted bytes. */
#define SP_ASSERT(cond)                                                                        \
    do {                                                                                       \
        if (!(cond))                                                                           \
            sp__assert_fail(#cond, __FILE__, __LINE__);                                        \
    } while (0)

_Noreturn void sp__assert_fail(const char *expr, const char *file, int line);

#endif
