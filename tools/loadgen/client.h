/* The benchmark client: an epoll event loop that sends streaming OpenAI requests over
 * non-blocking keep-alive connections at scheduled arrival times, with an optional cap on
 * requests in flight, and times every streamed token chunk; plus a small blocking HTTP
 * fetch for /metrics, /v1/models and /tokenize, and the prompt-word calibration.
 *
 * Timing follows `vllm bench serve`: a request starts when it is handed to a connection;
 * TTFT is the time to the first chunk carrying a choice, each later such chunk adds an
 * inter-token latency, and the end-to-end latency ends at the last such chunk. A chat stream's
 * opening chunk that only announces the assistant role is not a token (Spindle, like OpenAI,
 * sends it before any token is computed). Token counts come from the usage chunk.
 *
 * Single-threaded: sp_lg_run owns everything it creates and returns when every request has
 * finished. */
#ifndef SP_LOADGEN_CLIENT_H
#define SP_LOADGEN_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/err.h"
#include "loadgen/dataset.h"

/* Where the server is: http://HOST[:PORT][/PREFIX]. */
typedef struct sp_lg_target {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char host_header[300]; // HOST[:PORT] for the Host header
    char prefix[256];      // path prefix without a trailing slash ("" usually)
    char api_key[256];     // Bearer token ("" for none)
} sp_lg_target;

/* Parses and resolves a base URL (getaddrinfo; blocking). Only plain http is supported.
 * SP_ERR_INVALID / SP_ERR_NOT_FOUND with a message in d. */
sp_err sp_lg_target_parse(const char *base_url, sp_lg_target *t, sp_diag *d) SP_MUST_USE;

/* One blocking request with its own connection: method and path (appended to the prefix),
 * an optional JSON body. Waits at most timeout_ms in all. On SP_OK, *status is the HTTP
 * status and *body a NUL-terminated heap copy of the response body (caller frees). SP_ERR_IO
 * (connection failed, timed out; message in d), SP_ERR_FORMAT for a malformed response. */
sp_err sp_lg_fetch(const sp_lg_target *t, const char *method, const char *path,
                   const char *json_body, int timeout_ms, int *status, char **body,
                   size_t *body_len, sp_diag *d) SP_MUST_USE;

/* Keeps the candidate words that the server's /tokenize (llama.cpp's {"content"} or vLLM's
 * {"prompt"} shape, without special tokens) turns into one token each when repeated, checks
 * that a random sentence of them tokenizes to one token per word, and measures how many
 * special tokens the server adds to a prompt (*n_special). On SP_OK *kept holds a heap array of
 * borrowed pointers into cand (caller frees the array). SP_ERR_UNSUPPORTED when the server has
 * no usable /tokenize (the caller then uses the candidates as they are). */
sp_err sp_lg_calibrate_words(const sp_lg_target *t, sp_lg_words cand, const char ***kept,
                             int *n_kept, int *n_special, sp_diag *d) SP_MUST_USE;

/* What happened to one request. Times are seconds. */
typedef struct sp_lg_result {
    bool success;
    int32_t prompt_len;    // usage.prompt_tokens, else the expected count (-1 if unknown)
    int32_t output_tokens; // usage.completion_tokens, else the token chunks received
    int32_t n_chunks;      // chunks carrying a choice
    int http_status;       // 0 when no response arrived
    double start_s;        // when it was sent, from the benchmark start
    double queue_s;        // time it waited for a slot under --max-concurrency
    double ttft_s;
    double latency_s; // to the last chunk carrying a choice
    double *itl_s;    // [n_itl] heap
    int32_t n_itl, cap_itl;
    char *error; // heap message for a failed request, NULL otherwise
    char *text;  // generated text (multi-turn histories, keep_text), heap or NULL
} sp_lg_result;

void sp_lg_result_free(sp_lg_result *r);

typedef struct sp_lg_run_opts {
    const sp_lg_target *target;
    const char *endpoint; // e.g. "/v1/completions"
    sp_lg_body_opts body; // chat, model, ignore_eos, ...
    double request_rate;  // requests/s (sessions/s for multi-turn); INFINITY: all at once
    double burstiness;    // gamma shape (1: Poisson)
    int max_concurrency;  // requests in flight at most; 0: no cap
    double think_time_s;  // multi-turn: mean of the exponential pause between turns
    uint64_t seed;        // arrivals and think times
    double timeout_s;     // per request; 0: none
    bool progress;        // redraw a progress line on stderr
    int n_special;        // special tokens the server adds (for expected prompt lengths)
    bool keep_text;       // keep every request's generated text in its result (multi-turn
                          // runs always do)
} sp_lg_run_opts;

/* Runs the whole workload. results[ds->n] is filled in dataset order (the caller frees each
 * with sp_lg_result_free); *duration_s is from the first scheduled arrival to the last
 * completion. Requests that fail are recorded as failures, not errors; the function fails
 * only for SP_ERR_NOMEM, SP_ERR_IO (epoll/timer setup) or SP_ERR_INVALID options. */
sp_err sp_lg_run(const sp_lg_run_opts *o, const sp_lg_dataset *ds, sp_lg_result *results,
                 double *duration_s, sp_diag *d) SP_MUST_USE;

/* The prediction dataset's predicted outputs: runs ds once (greedy, unmeasured), then gives
 * every item that got an output the prediction made from it by sp_lg_corrupt_tokens (each
 * token kept with probability accuracy, else replaced by one of the item's prompt tokens),
 * through the server's /tokenize and /detokenize. *kept_frac: the share of tokens kept. */
sp_err sp_lg_make_predictions(const sp_lg_run_opts *o, sp_lg_dataset *ds, double accuracy,
                              uint64_t seed, double *kept_frac, sp_diag *d) SP_MUST_USE;

/* A trivial OpenAI-style streaming endpoint for measuring the client itself: answers every
 * request (any method and path) at once with a chunked SSE stream of max_tokens (from the
 * body, default 16, at most 4096) one-word chunks, a usage chunk and [DONE], keeping the
 * connection alive. itl_ms > 0 spaces the chunks that far apart. Listens on 127.0.0.1:port
 * (0: any free port), writes the port to *bound_port through on_listen, and serves until
 * *stop becomes nonzero (checked at least every 100 ms) or SIGTERM/SIGINT when
 * handle_signals. */
sp_err sp_lg_stub_serve(int port, double itl_ms, volatile int *stop, bool handle_signals,
                        void (*on_listen)(int port, void *ctx), void *ctx) SP_MUST_USE;

#endif
