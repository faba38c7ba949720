/* Tool calls of the chat API: the formats models write them in, the grammar that forces one
 * (tool_choice "required" or a named function), and the reader that splits a model's output, as
 * it is generated, into content and calls (OpenAI's message.tool_calls, or their stream deltas).
 *
 * Formats, detected from the chat template:
 *   hermes   Hermes 2 Pro, Qwen 2.5 and the default:
 *            <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>   (one or more)
 *   llama3   Llama 3.1 / 3.2 (the template mentions <|python_tag|> or ipython): the message is
 *            {"name": "f", "parameters": {...}}, possibly after <|python_tag|>
 *   mistral  Mistral ([TOOL_CALLS] in the template): [TOOL_CALLS][{"name": "f",
 *            "arguments": {...}}, ...] (the request renders control tokens to see the marker; a
 *            forced call has it at the end of its prompt: sp_tools_forced_prefix) */
#ifndef SP_SERVER_TOOLS_H
#define SP_SERVER_TOOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/err.h"
#include "base/str.h"
#include "grammar/grammar.h"

typedef enum sp_tool_format { SP_TOOLS_HERMES, SP_TOOLS_LLAMA3, SP_TOOLS_MISTRAL } sp_tool_format;

/* The format of a chat template's tool calls (template text tmpl[n]; NULL: the default). */
sp_tool_format sp_tools_detect(const char *tmpl, size_t n);

const char *sp_tools_format_name(sp_tool_format f);

/* Checks a chat request's tools (an array of {"type": "function", "function": {"name",
 * "description"?, "parameters"?}}). SP_ERR_INVALID with d (param "tools"). */
SP_MUST_USE sp_err sp_tools_validate(json_t *tools, sp_diag *d);

/* The grammar of one call, in format f, to one of the tools (only the one named `name` if not
 * NULL), its arguments valid against the tool's parameters schema. SP_ERR_INVALID with d (a
 * named tool that is not in tools, a parameters schema the schema compiler rejects).
 * SP_ERR_NOMEM. */
SP_MUST_USE sp_err sp_tools_grammar(sp_tool_format f, json_t *tools, const char *name,
                                    sp_grammar **out, sp_diag *d);

/* The text a forced call's prompt ends with (after the generation prompt), or NULL: Mistral's
 * "[TOOL_CALLS]", which is a control token in its vocabularies, and a grammar over the bytes of
 * tokens cannot produce a control token (it has no bytes). The prompt carries the marker
 * instead, as the model's own turn would begin with it, and the grammar forces the calls that
 * follow; the output is then read as starting inside the calls (sp_tools_reader_create's
 * in_call). */
const char *sp_tools_forced_prefix(sp_tool_format f);

/* ---- reading calls out of an output as it is generated ---------------------------------------
 *
 * The reader takes the output's text in pieces, as it is generated, and splits it into content
 * and tool calls, deciding everything as early as it can and never taking back what it gave:
 *   content  the text before the format's call marker (<tool_call>, [TOOL_CALLS],
 *            <|python_tag|>; for llama3 also a JSON value that starts the output); text that
 *            may still be the start of a marker is held until decided, and so is whitespace,
 *            which is dropped when a call follows it. Text after the first call is not content
 *            (closing tags, text between or after calls).
 *   calls    after a marker, a call object {"name": ..., "arguments" (or "parameters"): ...}
 *            or an array of them. A call starts as soon as its name is complete; its
 *            arguments are the text of the arguments value as the model writes it (a string
 *            value: the string's contents), given in fragments as they are generated (after
 *            the name, if they come before it); a call without arguments has "{}".
 * What follows a marker and turns out not to be a call (before any call) is content after
 * all. The whole output read at once gives the same content and calls as the
 * same output read in any pieces.
 *
 * Owned by one thread (the API's). */
typedef struct sp_tools_reader sp_tools_reader;

/* A call as read so far: views into the reader, valid until its next feed or destroy. */
typedef struct sp_tool_call {
    const char *id;   // "call_" and 16 hex digits
    const char *name; // NUL-terminated
    const char *args; // args_len bytes (not terminated)
    size_t args_len;
    bool complete; // its arguments were read to their end
} sp_tool_call;

/* One step of a call for a stream: its start (id and name set, args empty), or the next
 * fragment of its arguments (id and name NULL). Views into the reader, valid until its next
 * feed or destroy. */
typedef struct sp_tool_delta {
    int32_t index; // the call's place among the output's calls, from 0
    const char *id, *name;
    const char *args;
    size_t args_len;
} sp_tool_delta;

/* A reader of an output in format f; in_call: the output starts inside the calls (their marker
 * is at the end of the prompt, sp_tools_forced_prefix). Call ids come from id_seed.
 * SP_ERR_NOMEM. */
SP_MUST_USE sp_err sp_tools_reader_create(sp_tool_format f, bool in_call, uint64_t id_seed,
                                          sp_tools_reader **out);
void sp_tools_reader_destroy(sp_tools_reader *r);

/* Reads the output's next text[n]; final: the output has ended, and everything held is
 * decided. SP_ERR_NOMEM leaves the reader unusable (destroy it). */
SP_MUST_USE sp_err sp_tools_reader_feed(sp_tools_reader *r, const char *text, size_t n, bool final);

/* The content decided since the last take (a view valid until the next feed). */
sp_str sp_tools_reader_take_content(sp_tools_reader *r);

/* The next step of the calls not yet taken, in order; false when there is none. */
bool sp_tools_reader_next_delta(sp_tools_reader *r, sp_tool_delta *out);

/* All the content decided so far. */
sp_str sp_tools_reader_content(const sp_tools_reader *r);

/* The calls whose names have been read so far, and call i of them (i < the count). */
int32_t sp_tools_reader_n_calls(const sp_tools_reader *r);
sp_tool_call sp_tools_reader_call(const sp_tools_reader *r, int32_t i);

#endif
