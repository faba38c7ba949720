/* The API's state, shared by its files (not part of the API):
 *   api.c       routing, authorization, creation;
 *   generate.c  the generation endpoints: an HTTP exchange's life from the request body to the
 *               last byte of its response (non-streamed or server-sent events);
 *   render.c    JSON bodies: errors, responses, chunks, usage, log-probabilities;
 *   endpoints.c the small endpoints (models, health, metrics, tokenize, detokenize).
 * Everything runs on the HTTP loop thread. */
#ifndef SP_SERVER_API_INT_H
#define SP_SERVER_API_INT_H

#include <stdarg.h>
#include <stdbool.h>

#include <jansson.h>

#include "server/api.h"
#include "server/grammars.h"
#include "server/metrics.h"
#include "server/oai.h"
#include "server/tools.h"
#include "store/store.h"

typedef struct api_op api_op;

/* One choice of an exchange: one engine request. */
typedef struct api_choice {
    api_op *op;
    int index;
    sp_request *req; // NULL once released
    sp_req_cursor cur;
    char *text; // accumulated text (non-streamed) or the latest delta (streamed)
    size_t text_len, text_cap;
    sp_tools_reader *tools; // chat with tools: the output's content and calls (else NULL)
    sp_req_token *toks;     // (max_tokens) tokens read so far
    int32_t *top_ids;   // (max_tokens, logprobs)
    float *top_lps;
    int32_t n_toks, cap_toks;
    int32_t lp_from; // streamed: the first token whose log-probabilities are not yet sent
    int32_t n_prompt;
    bool first_of_prompt; // the first choice of its prompt: usage counts the prompt here
    bool submitted;       // the engine has it: it counts as a live sequence until done
    sp_finish finish;
    sp_err error;
    char error_msg[160];
    int64_t t_last_token_us;
    bool done;
} api_choice;

/* One HTTP exchange of a generation endpoint in flight. */
struct api_op {
    sp_api *api;
    sp_http_conn *conn; // NULL once the client is gone
    sp_oai_kind kind;
    bool stream;
    bool include_usage;
    bool answered; // the client got its answer (an error) before the choices finished
    bool predicted; // the request brought a predicted output (usage counts its tokens)
    bool tool_calls;    // chat with tools: each choice's output is read for calls (its tools)
    bool tools_in_call; // a forced call whose marker ends the prompt (sp_tools_forced_prefix)
    int32_t logprobs;
    int32_t priority;
    char id[48];
    int64_t created;
    int n_choices;   // created (the requests exist)
    int cap_choices; // slots; the one after the last created may hold buffers
    int n_done;
    api_choice *choices;
    api_op *next, *prev; // the API's list of exchanges in flight
};

struct sp_api {
    sp_api_opts o;
    const sp_model *m;
    const sp_vocab *v;
    const sp_tmpl *tmpl;
    sp_engine *e;
    sp_metrics metrics;
    api_op *active;
    int n_active;
    int32_t n_live_seqs; // sequences submitted to the engine and not finished
    uint64_t next_id;
    uint64_t seed_state;
    sp_grammars grammars; // compiled grammars of recent requests
    // Offline jobs (sp_api_enable_batches): the store (NULL: the Files and Batch endpoints
    // answer 503 with store_error), the server that runs batch lines, and their runner.
    sp_store *store;
    char store_error[256];
    sp_http_server *srv;
    struct sp__batch_runner *runner;
};

/* ---- render.c ---- */

/* A JSON string from bytes that may not be valid UTF-8 (token pieces): invalid sequences
 * become U+FFFD. NULL only when out of memory. */
json_t *sp__api_json_bytes(const char *p, size_t n);

/* The request body as a JSON object (a new reference); NULL after answering the client: 400
 * invalid_json for text that is not a JSON object, 500 when jansson reports that memory ran
 * out. path names the endpoint in the log. */
json_t *sp__api_read_body(sp_api *a, sp_http_conn *c, const sp_http_req *req, const char *path);

/* Counts an answered HTTP request in the metrics and logs errors; once per request. */
void sp__api_log_http(sp_api *a, int status, const char *path, const char *msg);

/* Answers with OpenAI's error shape {"error": {message, type, param, code}} (param and code
 * null when NULL) and counts the request. extra_headers as sp_http_respond. */
void sp__api_send_error(sp_api *a, sp_http_conn *c, int status, const char *type, const char *param,
                        const char *code, const char *extra_headers, const char *path,
                        const char *fmt, ...) SP_PRINTF(9, 10);

/* Answers 200 with root (taken) and counts the request; a 500 if it cannot be rendered. */
void sp__api_send_json(sp_api *a, sp_http_conn *c, json_t *root, const char *path);

/* The "finish_reason" of a finished choice: "length" when max_tokens or the context cut it,
 * else "tool_calls" when it called tools, else "stop". */
const char *sp__api_finish_reason(const api_choice *ch);

/* message.tool_calls of a choice's calls: OpenAI's {"id", "type": "function", "function":
 * {"name", "arguments"}} each. */
json_t *sp__api_tool_calls(const sp_tools_reader *r);

/* One element of a streamed delta's tool_calls: {"index", "id", "type": "function",
 * "function": {"name", "arguments": ""}} when a call starts, {"index", "function":
 * {"arguments": fragment}} as its arguments come. */
json_t *sp__api_tool_delta(const sp_tool_delta *d);

/* The usage object of an exchange: each prompt counted once, whatever n. */
json_t *sp__api_usage(const api_op *op);

/* Log-probabilities of tokens [from, to) of a choice in the endpoint's format. */
json_t *sp__api_logprobs(const api_op *op, const api_choice *ch, int32_t from, int32_t to);

/* The id/object/created/model fields of a streamed chunk. */
json_t *sp__api_chunk_base(const api_op *op);

/* The whole non-streamed response of a finished exchange. */
json_t *sp__api_response(const api_op *op);

/* ---- prompt.c ---- */

/* The tokens of prompt i of a parsed request q (its body: a chat's tools go to the template),
 * appended to out: completions' prompt i tokenized (text, or token ids checked against the
 * vocabulary), or the chat conversation rendered (with sp__api_forced_prefix after it) and
 * tokenized. Errors as sp_tok_encode's and
 * sp_chat_render's, d filled (d->param names the field). */
sp_err sp__api_prompt_tokens(sp_api *a, sp_oai_kind kind, const sp_oai_req *q, json_t *body,
                             size_t i, sp_tokens *out, sp_diag *d);

/* The text a chat's prompt ends with after its generation prompt: a forced tool call's marker
 * where the model's format needs it there (sp_tools_forced_prefix), else NULL. */
const char *sp__api_forced_prefix(const sp_api *a, const sp_oai_req *q);

/* ---- generate.c ---- */

void sp__api_handle_generate(sp_api *a, sp_http_conn *c, const sp_http_req *req, sp_oai_kind kind);

/* The HTTP server's on_close: the client is gone; its requests are cancelled. */
void sp__api_on_close(void *ctx, sp_http_conn *c, void *user);

/* Frees every exchange (API teardown). */
void sp__api_free_all(sp_api *a);

/* ---- files.c, batches.c: the Files and Batch endpoints ---- */

void sp__api_handle_files(sp_api *a, sp_http_conn *c, const sp_http_req *req);
void sp__api_handle_batches(sp_api *a, sp_http_conn *c, const sp_http_req *req);

/* A request path without the optional /v1 prefix (api.c). */
sp_str sp__api_route_path(sp_str path);

/* The id and what follows it in a resource path below prefix ("/files"): "/files/ID/content"
 * gives ID and "/content"; "/files" gives "" and "". False (after answering 404, as `what`)
 * for a path that cannot be one. */
bool sp__api_resource_path(sp_api *a, sp_http_conn *c, const sp_http_req *req, const char *prefix,
                           const char *what, char id[SP_STORE_ID_LEN], char rest[16]);

/* The "limit" query parameter of a list (dflt when absent), from 1 to max; false after
 * answering 400. */
bool sp__api_list_limit(sp_api *a, sp_http_conn *c, const sp_http_req *req, const char *path,
                        int32_t dflt, int32_t max, int32_t *out);

/* The value of query parameter name (no percent-decoding: ids and numbers need none) into
 * out[cap]; false when absent or too long. */
bool sp__api_query_param(const sp_http_req *req, const char *name, char *out, size_t cap);
/* Whether the store is there; otherwise answers 503 saying why. */
bool sp__api_store_ready(sp_api *a, sp_http_conn *c, const char *path);
/* A file object of the Files API. */
json_t *sp__api_file_json(const sp_store_file *f);
/* Whether url is an endpoint batch lines may call. */
bool sp__api_batch_endpoint(const char *url);

/* ---- batch_run.c: running batches ---- */

typedef struct sp__batch_runner sp__batch_runner;

/* A runner for a's store and server, resuming the batches a previous process left. */
sp_err sp__batch_runner_create(sp_api *a, sp__batch_runner **out);
/* Cancels the lines in flight (they stay pending) and frees; NULL is a no-op. */
void sp__batch_runner_destroy(sp__batch_runner *r);
/* Validates new batches, finalizes finished ones, keeps lines in flight. */
void sp__batch_advance(sp__batch_runner *r);
/* Starts cancelling batch id (cancelling, then cancelled with the results so far).
 * SP_ERR_NOT_FOUND. */
sp_err sp__batch_cancel(sp__batch_runner *r, const char *id, sp_diag *d);
/* Shutdown: the lines in flight are cancelled (pending, for the next start); no new ones. */
void sp__batch_stop(sp__batch_runner *r);
/* Whether no batch is running. */
bool sp__batch_idle(const sp__batch_runner *r);

/* ---- endpoints.c ---- */

void sp__api_handle_models(sp_api *a, sp_http_conn *c, const sp_http_req *req);
void sp__api_handle_health(sp_api *a, sp_http_conn *c, const sp_http_req *req);
void sp__api_handle_metrics(sp_api *a, sp_http_conn *c, const sp_http_req *req);
void sp__api_handle_tokenize(sp_api *a, sp_http_conn *c, const sp_http_req *req);
void sp__api_handle_detokenize(sp_api *a, sp_http_conn *c, const sp_http_req *req);

#endif
