/* Incremental HTTP/1.1 response parser for the benchmark client, and a server-sent events
 * (SSE) parser for the bodies of streaming responses.
 *
 * Both are restartable at any byte: feeding a stream in pieces split anywhere gives the same
 * calls and results as feeding it whole. Body bytes are passed on as views into the caller's
 * input (no copy); only the status line and header lines are buffered. Inputs come from the
 * network, so every malformation is an error with a diagnostic, never an assertion.
 *
 * One parser belongs to one connection and is used by the thread that owns the connection. */
#ifndef SP_LOADGEN_HTTP_H
#define SP_LOADGEN_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Receives a piece of the decoded body (chunked framing removed). Returns false to stop the
 * parse (sp_lg_http_feed then returns SP_ERR_CANCELLED). */
typedef bool (*sp_lg_body_fn)(void *ctx, const char *data, size_t len);

#define SP_LG_HTTP_LINE_MAX    8192  // one status or header line
#define SP_LG_HTTP_HEADERS_MAX 65536 // the whole header section

typedef struct sp_lg_http_resp {
    // Results, valid once the headers are complete (sp_lg_http_headers_done).
    int status;             // e.g. 200
    int minor_version;      // HTTP/1.x
    int64_t content_length; // -1 when absent
    bool chunked;           // Transfer-Encoding: chunked
    bool keep_alive;        // the connection may carry another request afterwards
    char content_type[64];  // the Content-Type value, truncated; "" when absent
    // Private state.
    int state;
    bool no_body;  // 1xx/204/304 or a response to HEAD
    bool head;     // the request was HEAD
    uint64_t left; // bytes left in the Content-Length body or the current chunk
    size_t header_bytes;
    size_t line_len;
    char line[SP_LG_HTTP_LINE_MAX];
    sp_lg_body_fn on_body;
    void *ctx;
} sp_lg_http_resp;

/* Prepares r for one response; on_body (may be NULL) receives its body. head: the request was
 * a HEAD (no body follows whatever the headers say). */
void sp_lg_http_init(sp_lg_http_resp *r, bool head, sp_lg_body_fn on_body, void *ctx);

/* Feeds len bytes. *consumed is set to the bytes used: all of them, unless the response ended
 * inside the input (the rest belongs to the next response on a keep-alive connection).
 * Interim 1xx responses are skipped. Returns SP_OK (check sp_lg_http_done), SP_ERR_FORMAT for
 * a malformed status line, header or chunk framing, SP_ERR_LIMIT for a line or header
 * section over the limits above, SP_ERR_CANCELLED when on_body returned false. On error the
 * parser must not be fed again. */
sp_err sp_lg_http_feed(sp_lg_http_resp *r, const char *data, size_t len, size_t *consumed,
                       sp_diag *d) SP_MUST_USE;

/* The peer closed the connection. Completes a body delimited by the close (no Content-Length,
 * not chunked); SP_ERR_TRUNCATED if the response was incomplete. */
sp_err sp_lg_http_eof(sp_lg_http_resp *r, sp_diag *d) SP_MUST_USE;

/* Whether the header section has been read / the whole response has been read. */
bool sp_lg_http_headers_done(const sp_lg_http_resp *r);
bool sp_lg_http_done(const sp_lg_http_resp *r);

/* ---- Server-sent events -------------------------------------------------------------------- */

/* Receives one dispatched event: its data (the "data:" lines joined with '\n', NUL-terminated,
 * valid during the call) and its "event:" name ("" when none). Returns false to stop. */
typedef bool (*sp_lg_sse_fn)(void *ctx, const char *event, const char *data, size_t len);

typedef struct sp_lg_sse {
    char *data; // data lines of the event being built (heap)
    size_t data_len, data_cap;
    char event[64];
    char *line; // the line being read (heap)
    size_t line_len, line_cap;
    size_t max_bytes; // limit on a line and on an event's data
    bool after_cr;    // the last byte was CR: a following LF belongs to the same line end
    bool bom_checked;
    bool has_data;
    sp_lg_sse_fn on_event;
    void *ctx;
} sp_lg_sse;

/* Prepares an SSE parser; events over max_bytes (a line or an event's data) are an error. */
void sp_lg_sse_init(sp_lg_sse *s, size_t max_bytes, sp_lg_sse_fn on_event, void *ctx);
/* Frees its buffers; the parser may be initialized again. */
void sp_lg_sse_deinit(sp_lg_sse *s);

/* Feeds stream bytes (lines end with CRLF, LF or CR; an empty line dispatches the event;
 * lines starting with ':' are comments; "data", "event" are kept, "id" and "retry" ignored).
 * SP_ERR_LIMIT past max_bytes, SP_ERR_NOMEM, SP_ERR_CANCELLED when on_event returned false. */
sp_err sp_lg_sse_feed(sp_lg_sse *s, const char *data, size_t len, sp_diag *d) SP_MUST_USE;

/* The stream ended: an event not yet terminated by an empty line is discarded, as the SSE
 * specification says. */
void sp_lg_sse_end(sp_lg_sse *s);

#endif
