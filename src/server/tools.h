/* Tool calls of the chat API: the formats models write them in, the grammar that forces one
 * (tool_choice "required" or a named function), and the parser that turns a model's output into
 * OpenAI's message.tool_calls.
 *
 * Formats, detected from the chat template:
 *   hermes   Hermes 2 Pro, Qwen 2.5 and the default:
 *            <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>   (one or more)
 *   llama3   Llama 3.1 / 3.2 (the template mentions <|python_tag|> or ipython): the message is
 *            {"name": "f", "parameters": {...}}, possibly after <|python_tag|>
 *   mistral  Mistral ([TOOL_CALLS] in the template): [TOOL_CALLS][{"name": "f",
 *            "arguments": {...}}, ...] (the request renders control tokens to see the marker) */
#ifndef SP_SERVER_TOOLS_H
#define SP_SERVER_TOOLS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/err.h"
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

/* The tool calls in a model's output text[n] in format f: a new JSON array of OpenAI tool calls
 * ({"id", "type": "function", "function": {"name", "arguments": a JSON string}}), ids drawn
 * from *seed; NULL when the output holds none (it is then all content). *content is a new
 * string of the text outside the calls (trimmed), or NULL when there is none. */
json_t *sp_tools_parse(sp_tool_format f, const char *text, size_t n, uint64_t *seed,
                       char **content);

#endif
