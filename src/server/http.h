/* HTTP/1.1 server: an epoll event loop, a restartable zero-copy request parser, and buffered,
 * non-blocking responses (whole bodies or streamed chunks, e.g. server-sent events).
 *
 * One thread runs the loop (sp_http_server_run); every callback below runs on it. Requests are
 * handed to the handler once their headers and Content-Length body are complete. A connection
 * carries one request at a time: pipelined requests wait in the input buffer until the current
 * response has ended. The handler answers at once (sp_http_respond) or later, from another loop
 * callback (a watched fd, a timer), e.g. when the engine has output.
 *
 * Limits answer with a status and close: header section too large (431), body too large (413),
 * malformed request (400), unsupported Transfer-Encoding (501), too many connections (503 with
 * Retry-After, once no keep-alive connection idle between requests is left to close for the
 * newcomer), header or idle timeout (the connection is closed; slowloris protection). Those
 * answers have the API's error shape: {"error": {message, type, param: null, code}}. A client
 * that disconnects (EPOLLRDHUP, a failed read or write) is reported through on_close at once, even
 * while a response is pending, so the handler can cancel the work behind it. Output is queued
 * per connection and flushed without blocking; past a high-water mark of unsent bytes,
 * sp_http_stream_write refuses (SP_ERR_LIMIT) so the handler can cancel a reader too slow to
 * keep up. */
#ifndef SP_SERVER_HTTP_H
#define SP_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "gguf/gguf.h" // sp_str

#define SP_HTTP_MAX_HEADERS 64

typedef struct sp_http_header {
    sp_str name;
    sp_str value;
} sp_http_header;

/* A parsed request: views into the connection's input buffer, valid during on_request only. */
typedef struct sp_http_req {
    sp_str method;
    sp_str target;     // request target as sent ("/v1/completions?x=1")
    sp_str path;       // target without the query
    sp_str query;      // after '?', or empty
    int minor_version; // HTTP/1.x
    int n_headers;
    sp_http_header headers[SP_HTTP_MAX_HEADERS];
    const char *body;
    size_t body_len;
    bool keep_alive; // after this response (HTTP/1.1 default unless "Connection: close")
} sp_http_req;

/* Finds a header (case-insensitive name); NULL if absent. */
const sp_str *sp_http_req_header(const sp_http_req *req, const char *name);

/* ---- Parser (used by the server; exposed for tests and fuzzing) ---------------------------- */

typedef enum sp_http_parse_result {
    SP_HTTP_PARSE_DONE,       // *consumed = bytes of the request line and headers
    SP_HTTP_PARSE_INCOMPLETE, // need more bytes
    SP_HTTP_PARSE_ERROR,      // *status = the HTTP status to answer (400, 431, 501, 505, ...)
} sp_http_parse_result;

/* Parses the request line and headers at buf[len] into req (views into buf; body fields are
 * left empty). Never reads past buf + len. Restartable: calling it again on a longer buffer
 * with the same prefix gives the same result as parsing the whole buffer at once. Headers
 * larger than max_header_bytes give SP_HTTP_PARSE_ERROR with status 431 as soon as that is
 * certain. Content-Length is parsed strictly (digits only, no duplicates with different
 * values); Transfer-Encoding gives status 501. The body length is returned in *content_length
 * (0 when absent). */
sp_http_parse_result sp_http_parse(const char *buf, size_t len, size_t max_header_bytes,
                                   sp_http_req *req, size_t *consumed, uint64_t *content_length,
                                   int *status);

/* ---- Server ------------------------------------------------------------------------------- */

typedef struct sp_http_server sp_http_server;
typedef struct sp_http_conn sp_http_conn;

typedef struct sp_http_handler {
    void *ctx;
    /* A complete request. The handler must end the response eventually with sp_http_respond or
     * sp_http_stream_end (or the connection closes). Once the response has ended, c may close
     * without on_close: do not keep it. For HEAD requests only the response head is sent. */
    void (*on_request)(void *ctx, sp_http_conn *c, const sp_http_req *req);
    /* The connection is going away (client disconnect, error, timeout, server stop) while a
     * response was not finished; user is what the handler attached with sp_http_set_user.
     * After this call c is invalid. */
    void (*on_close)(void *ctx, sp_http_conn *c, void *user);
    /* Optional: the largest body of this request (its head parsed, body fields empty); 0 for
     * the server's max_body_bytes. Larger bodies get 413. */
    size_t (*body_limit)(void *ctx, const sp_http_req *req);
} sp_http_handler;

/* Zero (or NULL) fields other than port take the default. */
typedef struct sp_http_opts {
    const char *host;        // default "127.0.0.1"
    int port;                // 0: any free port (see sp_http_server_port); -1: no socket at
                             // all, internal requests only (sp_http_server_inject)
    int max_conns;           // default 256; beyond it the longest-idle keep-alive connection
                             // closes, or with none the newcomer gets 503 and is closed
    size_t max_header_bytes; // default 16 KiB -> 431
    size_t max_body_bytes;   // default 4 MiB -> 413
    int header_timeout_ms;   // default 10000: the whole header section must arrive by then
    int idle_timeout_ms;     // default 60000: keep-alive connections idle this long close
    size_t write_high_water; // default 4 MiB of unsent output per connection
} sp_http_opts;

sp_http_opts sp_http_opts_default(void);

/* Binds and listens (SO_REUSEADDR). SP_ERR_IO with diag (errno text, e.g. "address in use")
 * on failure. */
sp_err sp_http_server_create(const sp_http_opts *opts, const sp_http_handler *h,
                             sp_http_server **out, sp_diag *diag) SP_MUST_USE;
/* Closes every connection (calling on_close for unfinished ones) and frees; NULL ok. Not while
 * run is executing. */
void sp_http_server_destroy(sp_http_server *s);

/* The bound port (useful with port 0). */
int sp_http_server_port(const sp_http_server *s);

/* Runs the loop on the calling thread until sp_http_server_stop. */
sp_err sp_http_server_run(sp_http_server *s) SP_MUST_USE;

/* Makes run return soon; stop accepting connections. Any thread, and async-signal-safe. */
void sp_http_server_stop(sp_http_server *s);

/* Stops accepting new connections (and closes the listening socket) but keeps serving the
 * existing ones: for graceful shutdown. Loop thread only. */
void sp_http_server_stop_accepting(sp_http_server *s);

/* Number of open connections (loop thread). */
int sp_http_server_n_conns(const sp_http_server *s);

/* Watches a readable fd (e.g. the engine's eventfd): cb runs on the loop thread each time it
 * is readable; cb must drain it. */
sp_err sp_http_server_watch_fd(sp_http_server *s, int fd, void (*cb)(void *ctx),
                               void *ctx) SP_MUST_USE;

/* ---- Internal requests (loop thread) ------------------------------------------------------ */

/* The answer to an internal request: its status and body (status 0: none, the request was
 * dropped or its connection closed by the handler). body is valid during the call only. */
typedef void (*sp_http_on_response)(void *ctx, int status, const char *body, size_t len);

/* A request from inside the process (a batch line), handed to the handler as if a client had
 * sent it (method, path, a JSON body copied; the handler sees an sp_http_conn for which
 * sp_http_conn_is_internal is true). Its response, whole or streamed, is collected and given to
 * on_response from the loop, never from within this call, after which the request is freed.
 * *out (may be NULL) identifies it until then, for sp_http_server_cancel_injected. The handler
 * runs within the call. SP_ERR_NOMEM. */
sp_err sp_http_server_inject(sp_http_server *s, const char *method, const char *path,
                             const char *body, size_t len, sp_http_on_response on_response,
                             void *ctx, sp_http_conn **out) SP_MUST_USE;

/* The response to internal request c is no longer wanted: as when a client disconnects, the
 * handler's on_close runs if it still owes a response, and on_response is never called. */
void sp_http_server_cancel_injected(sp_http_conn *c);

/* Whether c is an internal request. */
bool sp_http_conn_is_internal(const sp_http_conn *c);

/* Calls cb on the loop thread every period_ms milliseconds (one timer per server). */
sp_err sp_http_server_set_tick(sp_http_server *s, int period_ms, void (*cb)(void *ctx),
                               void *ctx) SP_MUST_USE;

/* ---- Responding (loop thread) ------------------------------------------------------------- */

void sp_http_set_user(sp_http_conn *c, void *user);
void *sp_http_get_user(const sp_http_conn *c);

/* A whole response: status line, Content-Type, Content-Length, Connection, any extra_headers
 * (each line ending in "\r\n", may be NULL), then the body (copied). Ends the response. */
sp_err sp_http_respond(sp_http_conn *c, int status, const char *content_type,
                       const char *extra_headers, const char *body, size_t len) SP_MUST_USE;

/* Starts a streamed response with Transfer-Encoding: chunked. */
sp_err sp_http_stream_begin(sp_http_conn *c, int status, const char *content_type,
                            const char *extra_headers) SP_MUST_USE;
/* Queues one chunk (copied). SP_ERR_LIMIT when the unsent output is above the high-water mark
 * (nothing queued): the reader is too slow. */
sp_err sp_http_stream_write(sp_http_conn *c, const char *data, size_t len) SP_MUST_USE;
/* Ends the stream (the terminating zero chunk). */
sp_err sp_http_stream_end(sp_http_conn *c) SP_MUST_USE;

/* Unsent bytes queued on the connection. */
size_t sp_http_conn_pending(const sp_http_conn *c);

/* Closes the connection now, dropping unsent output, e.g. after sp_http_stream_write refused
 * a reader too slow to keep up. Ends any response without calling on_close (the caller knows);
 * c is invalid afterwards. */
void sp_http_conn_close(sp_http_conn *c);

#endif
