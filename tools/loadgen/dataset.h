/* Benchmark workloads: prompts made of words that are one token each, so a prompt of k words
 * is k tokens (plus whatever special tokens the server adds), and the request bodies built
 * from them.
 *
 * Datasets:
 *   random         input/output lengths uniform in [L(1-X), L(1+X)] (seeded);
 *   shared-prefix  G groups; each request is its group's P-word system prompt followed by a
 *                  unique suffix of the random length (the prefix-cache workload);
 *   prediction     as random, and each request sends a predicted output (the OpenAI API's
 *                  `prediction`): the text the server generated for it greedily (found by an
 *                  unmeasured first pass) with each token kept with probability A and
 *                  otherwise replaced (sp_lg_make_prediction); requests are greedy;
 *   multi-turn     sessions of T turns: each turn's prompt holds the previous turns (prompts
 *                  and completions) and a new user message; turns are separated by a think
 *                  time (the client schedules them);
 *   FILE.jsonl     trace replay: {timestamp, input_length, output_length, hash_ids} rows (the
 *                  Mooncake format: equal hash ids are equal 512-token prompt blocks; the
 *                  timestamps are milliseconds) or {prompt, output_len} rows.
 *
 * A dataset owns its items; it is built and read by one thread. */
#ifndef SP_LOADGEN_DATASET_H
#define SP_LOADGEN_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "loadgen/stats.h"

#define SP_LG_TRACE_BLOCK 512 // tokens per Mooncake hash block

/* Words that the server's tokenizer turns into exactly one token each, in any position
 * (see the client's calibration). Borrowed strings. */
typedef struct sp_lg_words {
    const char *const *w;
    int n;
} sp_lg_words;

/* A built-in list of common English words, the candidates for calibration. */
sp_lg_words sp_lg_default_words(void);

typedef enum sp_lg_ds_kind {
    SP_LG_DS_RANDOM,
    SP_LG_DS_SHARED_PREFIX,
    SP_LG_DS_MULTI_TURN,
    SP_LG_DS_FILE,
    SP_LG_DS_PREDICTION,
} sp_lg_ds_kind;

typedef struct sp_lg_ds_opts {
    sp_lg_ds_kind kind;
    const char *path;      // SP_LG_DS_FILE
    int num_prompts;       // requests (all turns of all sessions for multi-turn); for a file,
                           // at most this many rows (0: all)
    int input_len;         // L (the suffix length for shared-prefix; per turn for multi-turn)
    int output_len;        // O
    double range_ratio;    // X in [0, 1)
    bool output_pareto;    // output lengths long-tailed: Pareto (shape 1.5) with mean O, at
                           // most output_cap
    int output_cap;        // upper bound of Pareto output lengths (0: 20 O)
    int shared_prefix_len; // P
    int num_groups;        // G
    int turns;             // T
    uint64_t seed;
} sp_lg_ds_opts;

typedef struct sp_lg_item {
    char *prompt;       // the (new) user text: the whole prompt for completions, or the text
                        // after the system prompt / previous turns
    char *system;       // shared-prefix: the group's system prompt; NULL otherwise
    int32_t n_words;    // words in system + prompt (= tokens of text), -1 when unknown
    int32_t output_len; // max_tokens
    double t_arrival_s; // trace timestamp relative to the first row, or -1 (scheduler decides)
    int32_t session;    // multi-turn session, else -1
    int32_t turn;       // multi-turn turn index within its session (0-based), else 0
    int32_t group;      // shared-prefix group, else -1
    char *prediction;   // the predicted output to send, or NULL
} sp_lg_item;

typedef struct sp_lg_dataset {
    sp_lg_item *items; // [n]; multi-turn: session-major (all turns of session 0, then 1, ...)
    size_t n;
    int n_sessions; // multi-turn
    bool timed;     // every item has a trace timestamp
} sp_lg_dataset;

/* Builds a dataset. Words must be non-empty (n >= 1). SP_ERR_INVALID (message in d) for
 * inconsistent options, SP_ERR_IO / SP_ERR_FORMAT for an unreadable or malformed trace (d has
 * the line), SP_ERR_NOMEM. *out is written only on success; free it with sp_lg_dataset_free. */
sp_err sp_lg_dataset_build(const sp_lg_ds_opts *o, sp_lg_words words, sp_lg_dataset *out,
                           sp_diag *d) SP_MUST_USE;
void sp_lg_dataset_free(sp_lg_dataset *ds);

/* The predicted output for a text the server generated: the text's tokens (ids[n], from the
 * server's /tokenize) each kept with probability accuracy and otherwise replaced by one of
 * alt[n_alt] (other tokens, e.g. a prompt's), drawn with rng, into out[n]; the count kept. */
int32_t sp_lg_corrupt_tokens(const int32_t *ids, int32_t n, double accuracy, const int32_t *alt,
                             int32_t n_alt, sp_lg_rng *rng, int32_t *out);

/* Appends k words drawn from words with rng to a heap string (separated by single spaces; a
 * space is put first when *len > 0). SP_ERR_NOMEM leaves the string as it was. */
sp_err sp_lg_append_words(char **s, size_t *len, size_t *cap, sp_lg_words words, sp_lg_rng *rng,
                          int k) SP_MUST_USE;

/* ---- Multi-turn history and request bodies ------------------------------------------------ */

/* The turns of one session so far: user texts and the completions that answered them. */
typedef struct sp_lg_history {
    char **user;
    char **assistant;
    int n, cap;
} sp_lg_history;

void sp_lg_history_free(sp_lg_history *h);
/* Records a finished turn (copies both strings). */
sp_err sp_lg_history_add(sp_lg_history *h, const char *user, const char *assistant) SP_MUST_USE;

typedef struct sp_lg_body_opts {
    bool chat;         // /v1/chat/completions (messages) rather than /v1/completions (prompt)
    const char *model; // may be NULL
    bool ignore_eos;
    double temperature; // < 0: not sent
    bool logprobs_none; // unused; reserved
    int32_t max_tokens; // > 0: send this max_tokens and end each request after its output
                        // length with Spindle's "stop_after" (lengths the server cannot know)
    int32_t deadline_ms; // > 0: send Spindle's "deadline_ms" (first token within this or 503)
} sp_lg_body_opts;

/* The JSON body of one streaming request for item it after history h (NULL or empty for
 * single-turn items): stream with usage, max_tokens (max_completion_tokens for chat),
 * ignore_eos, and "user": "session-N" for multi-turn items. For completions the prompt is the
 * system prompt, the previous turns and the new text joined by spaces; for chat they become
 * system, user and assistant messages. Returns a heap string (caller frees) in *out. */
sp_err sp_lg_build_body(const sp_lg_body_opts *o, const sp_lg_item *it, const sp_lg_history *h,
                        char **out) SP_MUST_USE;

#endif
