/* Decoding of OpenAI API request bodies (completions and chat completions) into engine
 * parameters, with the checks and error messages the API promises: every problem names its
 * parameter (OpenAI's error.param). Pure functions; any thread. */
#ifndef SP_SERVER_OAI_H
#define SP_SERVER_OAI_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "base/err.h"
#include "sched/request.h"

typedef enum sp_oai_kind { SP_OAI_COMPLETION, SP_OAI_CHAT } sp_oai_kind;

/* tool_choice: the model may call a tool (auto, the default), may not (none), must call one
 * (required), must call the named function. */
typedef enum sp_oai_tool_choice {
    SP_OAI_TOOLS_AUTO,
    SP_OAI_TOOLS_NONE,
    SP_OAI_TOOLS_REQUIRED,
    SP_OAI_TOOLS_NAMED
} sp_oai_tool_choice;

#define SP_OAI_MAX_N 16       // choices per request
#define SP_OAI_MAX_PROMPTS 16 // prompts in one completions request
#define SP_OAI_MAX_STOP 16    // stop strings

typedef struct sp_oai_req {
    sp_oai_kind kind;
    const char *model;     // as sent, or NULL
    json_t *prompt;        // completions: string, [string...], [int...] or [[int...]...]
    json_t *messages;      // chat: array of messages (validated)
    json_t *template_extra; // chat: object of extra template variables (tools, ...) or NULL
    sp_req_params params;  // stop strings point into the JSON body (valid while it lives)
    const char *stop[SP_OAI_MAX_STOP];
    bool has_max_tokens;   // max_tokens / max_completion_tokens given
    bool has_seed;
    int32_t n;             // choices per prompt
    bool stream;
    bool include_usage;    // stream_options.include_usage
    bool echo;             // completions: prepend the prompt text
    int32_t logprobs;      // -1: none; else top alternatives per token (completions: the
                           // integer; chat: top_logprobs with logprobs true)
    const char *user;
    const char *session;   // "session_id" (extension), else "user": a multi-turn session
    const char *tool;      // "tool" (extension): the tool the turn ends waiting on
    json_t *prediction;    // "prediction.content": the expected output, a string or an array of
                           // text parts (validated), or NULL
    const char *grammar;   // "grammar" (GBNF text), or NULL
    size_t grammar_len;
    bool json_object;      // response_format {"type": "json_object"}
    json_t *json_schema;   // response_format json_schema's "schema", or llama.cpp's
                           // "json_schema" (borrowed from the body), or NULL
    const char *schema_param; // the parameter it came from (for errors)
    json_t *tools;         // chat: "tools" (validated), or NULL
    sp_oai_tool_choice tool_choice;
    const char *tool_name; // tool_choice's function (SP_OAI_TOOLS_NAMED)
} sp_oai_req;

/* Validates body (a JSON object, borrowed; the result points into it) for an endpoint. On
 * failure returns SP_ERR_INVALID with d->msg a sentence for the client and d->param the
 * offending parameter. */
sp_err sp_oai_parse(json_t *body, sp_oai_kind kind, sp_oai_req *out, sp_diag *d) SP_MUST_USE;

/* Number of prompts of a completions request (1 for chat). */
size_t sp_oai_n_prompts(const sp_oai_req *r);

#endif
