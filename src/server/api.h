/* The OpenAI-compatible API on top of the HTTP server and the engine.
 *
 * Endpoints: POST /v1/completions, POST /v1/chat/completions (streaming with server-sent
 * events or not), GET /v1/models, GET /health, GET /metrics, POST /tokenize, POST /detokenize,
 * and OpenAI's Files and Batch APIs (/v1/files, /v1/batches) (the /v1 prefix is optional). Errors use OpenAI's shape {"error": {message, type, param,
 * code}} with the matching status. A client that disconnects cancels its requests at once.
 *
 * Everything here runs on the HTTP loop thread; the engine runs on its own thread and reports
 * output through its notify fd, which the server watches (sp_api_on_engine_output). */
#ifndef SP_SERVER_API_H
#define SP_SERVER_API_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "model/model.h"
#include "sched/engine.h"
#include "server/http.h"
#include "server/tools.h"
#include "store/store.h"
#include "tmpl/tmpl.h"
#include "tok/tok.h"

typedef struct sp_api_opts {
    const char *model_name; // the "model" reported in responses and /v1/models
    const char *api_key;    // required as "Authorization: Bearer KEY" when not NULL
    int32_t max_waiting;    // waiting requests beyond which new ones get 503 (default 1024)
    int64_t stall_us;       // /health fails when the engine is busy without finishing a step
                            // for this long (default 30 s)
    bool log_requests;      // one log line per request (default true)
    sp_tool_format tool_format; // how the model writes tool calls (from its chat template:
                                // sp_tools_detect; default hermes)
    size_t max_upload_bytes; // a file uploaded to /v1/files at most (default 200 MiB; 413)
    size_t max_line_bytes;   // a batch input file's line at most (default 4 MiB)
} sp_api_opts;

sp_api_opts sp_api_opts_default(void);

typedef struct sp_api sp_api;

/* Everything is borrowed and must outlive the API. tmpl may be NULL (ChatML). */
sp_err sp_api_create(const sp_api_opts *opts, const sp_model *m, const sp_vocab *v,
                     const sp_tmpl *tmpl, sp_engine *e, sp_api **out) SP_MUST_USE;
/* Frees the API; pending exchanges must be gone (their connections closed). */
void sp_api_destroy(sp_api *a);

/* The HTTP handler that serves the API. */
sp_http_handler sp_api_handler(sp_api *a);

/* Watched-fd callback for the engine's notify fd (ctx is the sp_api). */
void sp_api_on_engine_output(void *ctx);

/* Requests in flight (exchanges not yet answered). */
int sp_api_n_active(const sp_api *a);

/* Cancels every request in flight (shutdown after the grace period). */
void sp_api_cancel_all(sp_api *a);

/* Offline jobs: the Files and Batch endpoints keep their state in store (borrowed; NULL: they
 * answer 503 saying why, store_error) and run batch lines as internal requests of srv (the
 * server of this API's handler). Resumes the batches a previous process left. Once, after both
 * exist. SP_ERR_NOMEM. */
sp_err sp_api_enable_batches(sp_api *a, sp_store *store, const char *store_error,
                             sp_http_server *srv) SP_MUST_USE;

/* Moves batches along (the loop's tick calls it). */
void sp_api_tick(sp_api *a);

/* Stops running batch lines: those in flight are cancelled and run again at the next start.
 * Before the server is destroyed. */
void sp_api_stop_batches(sp_api *a);

/* Whether no batch is running (all finished, failed or cancelled). */
bool sp_api_batches_idle(const sp_api *a);

#endif
