/* Chat templates: an interpreter for the subset of Jinja2 that model chat templates use.
 *
 * Semantics follow Python's Jinja2 as configured by Hugging Face transformers for chat
 * templates: trim_blocks and lstrip_blocks on, a single trailing newline of the source dropped,
 * the loopcontrols extension ({% break %}, {% continue %}), the globals raise_exception(msg),
 * strftime_now(fmt), range, namespace and dict, an immutable sandbox (list.append and friends
 * are refused), and transformers' `tojson` filter (no HTML escaping, non-ASCII kept, keys in
 * insertion order; indent, separators, sort_keys and ensure_ascii arguments).
 *
 * Supported: {{ }}, {% %}, {# #} with `-`/`+` whitespace control; if/elif/else; for (else,
 * inline `if` filter, tuple targets, loop.*), set (plain, tuple, namespace attribute and block
 * form with filters), macro (defaults, keyword arguments, varargs/kwargs), call blocks
 * (caller()), filter blocks, with, raw, generation (a no-op wrapper). Not supported: include,
 * extends, block, import, recursive loops (compile error "unsupported tag").
 *
 * A compiled template is immutable: any number of threads may render the same sp_tmpl at
 * once. Rendering is bounded: a step budget (statements, expressions, loop iterations and
 * work done inside filters), an output size, a memory budget for the values the template
 * builds, and a nesting depth (expressions, statements, macro calls, nested values), so a
 * hostile template or context cannot hang or exhaust memory; exceeding one gives
 * SP_ERR_LIMIT. */
#ifndef SP_TMPL_TMPL_H
#define SP_TMPL_TMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/err.h"

typedef struct sp_tmpl sp_tmpl;

/* Bounds on one render. A zero field takes its default (SP_TMPL_DEFAULT_*). */
typedef struct sp_tmpl_limits {
    uint64_t max_steps;      // statements + expressions + iterations + filter work
    size_t max_output_bytes; // the rendered text, and any one captured block or macro result
    size_t max_memory_bytes; // every value the render allocates (strings, lists, scopes)
    uint32_t max_depth;      // nesting of evaluation: expressions, blocks, macro calls, values
    /* Not a bound: the clock strftime_now() reads, in seconds since the epoch, formatted in
     * local time. 0 means the current time; tests pin it. */
    int64_t now_unix_s;
} sp_tmpl_limits;

#define SP_TMPL_DEFAULT_MAX_STEPS 20000000ull
#define SP_TMPL_DEFAULT_MAX_OUTPUT_BYTES ((size_t)16 << 20)
#define SP_TMPL_DEFAULT_MAX_MEMORY_BYTES ((size_t)256 << 20)
#define SP_TMPL_DEFAULT_MAX_DEPTH 1000u

/* Parses src[0..len) (UTF-8, need not be NUL-terminated) into a template. On failure fills
 * diag: msg ("line N: ..."), offset (byte offset into src after "\r\n"/"\r" became "\n").
 * Syntax is checked here; unknown filters and tests, and undefined names, are runtime errors
 * (as in Jinja2). Returns SP_ERR_FORMAT for a syntax error, SP_ERR_UNSUPPORTED for a known
 * but unsupported tag, SP_ERR_NOMEM. The caller owns *out (sp_tmpl_destroy). Any thread. */
SP_MUST_USE sp_err sp_tmpl_compile(const char *src, size_t len, sp_tmpl **out, sp_diag *diag);

/* Frees a template; NULL is a no-op. No render of it may be in progress. */
void sp_tmpl_destroy(sp_tmpl *t);

/* Renders t with the variables of `context` (a JSON object, borrowed; its keys become
 * template variables: messages, bos_token, eos_token, add_generation_prompt, tools, ...).
 * limits may be NULL (defaults). On success *out is a NUL-terminated heap string the caller
 * frees and *out_len its length. On failure nothing is written to out/out_len and diag gets
 * the message and the byte offset of the failing expression in the (newline-normalized)
 * source:
 *   SP_ERR_INVALID  the template called raise_exception(msg); diag->msg is msg exactly
 *                   (truncated to the size of diag->msg);
 *   SP_ERR_FORMAT   a runtime error with Jinja2's message ("'x' is undefined",
 *                   "'dict object' has no attribute 'y'", type errors, ...);
 *   SP_ERR_LIMIT    a bound of `limits` was reached;
 *   SP_ERR_NOMEM    the process ran out of memory.
 * Any thread; t is only read. */
SP_MUST_USE sp_err sp_tmpl_render(const sp_tmpl *t, const json_t *context,
                                  const sp_tmpl_limits *limits, char **out, size_t *out_len,
                                  sp_diag *diag);

/* The 1-based line of a byte offset reported by sp_tmpl_render for this template. */
uint32_t sp_tmpl_line(const sp_tmpl *t, uint64_t offset);

/* ChatML, for models whose GGUF carries no template:
 * <|im_start|>{role}\n{content}<|im_end|>\n per message, then <|im_start|>assistant\n when
 * add_generation_prompt. */
extern const char sp_tmpl_chatml[];

/* Convenience for the chat endpoint: renders t (or the ChatML template when t is NULL) with
 * the context {messages, bos_token, eos_token, add_generation_prompt} plus every key of
 * `extra` (a JSON object or NULL: tools, documents, chat-template keyword arguments; it cannot
 * replace the four above). messages is a JSON array, borrowed. bos/eos may be NULL (empty
 * strings). Results and errors as sp_tmpl_render. Any thread. */
SP_MUST_USE sp_err sp_chat_render(const sp_tmpl *t, const json_t *messages, const json_t *extra,
                                  const char *bos_token, const char *eos_token,
                                  bool add_generation_prompt, const sp_tmpl_limits *limits,
                                  char **out, size_t *out_len, sp_diag *diag);

#endif
