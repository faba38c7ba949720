/* JSON Schema to grammar: the schemas of structured output (the API's response_format
 * json_schema, llama.cpp's json_schema, tool parameters).
 *
 * Supported keywords: type (a name or an array of them: object, array, string, number,
 * integer, boolean, null), properties, required, additionalProperties (false by default, as in
 * OpenAI's strict mode; true or a schema allows other keys, never the listed ones again), items,
 * prefixItems, minItems, maxItems, enum, const, anyOf, oneOf (as anyOf: exclusivity is not
 * enforced), $ref (a JSON pointer into the schema: #/$defs/x, #/definitions/x, #; recursion
 * allowed), minLength, maxLength, pattern (a regular-expression subset: literals, ., classes,
 * \d \w \s and their negations, groups, |, * + ? {m,n}, ^ and $; unanchored ends match any
 * text; control characters are left out of classes), format (date, time, date-time, uuid),
 * minimum, maximum, exclusiveMinimum, exclusiveMaximum (integers). Annotations (title,
 * description, default, examples, $schema, $id, $comment, deprecated, readOnly, writeOnly) are
 * ignored. Any other keyword is an error naming it (never silently ignored), as is a bound or
 * pattern outside what is supported. Output: JSON with the JSON object grammar's bounded
 * whitespace, properties in the schema's order. */
#ifndef SP_GRAMMAR_SCHEMA_H
#define SP_GRAMMAR_SCHEMA_H

#include <jansson.h>

#include "base/err.h"
#include "grammar/grammar.h"

/* The grammar of the JSON values schema accepts (borrowed). SP_ERR_INVALID with diag (message
 * with the JSON pointer of the offending schema; diag->param the keyword) for what is not
 * supported; SP_ERR_NOMEM. */
SP_MUST_USE sp_err sp_grammar_from_json_schema(json_t *schema, sp_grammar **out, sp_diag *diag);

/* The GBNF text that grammar is compiled from (*out to free). */
SP_MUST_USE sp_err sp_grammar_schema_gbnf(json_t *schema, char **out, sp_diag *diag);

/* The same, for the value written between the texts before and after (e.g. a tool call's
 * "<tool_call>\n" and "\n</tool_call>"). */
SP_MUST_USE sp_err sp_grammar_from_json_schema_wrapped(json_t *schema, const char *before,
                                                       const char *after, sp_grammar **out,
                                                       sp_diag *diag);
SP_MUST_USE sp_err sp_grammar_schema_gbnf_wrapped(json_t *schema, const char *before,
                                                  const char *after, char **out, sp_diag *diag);

#endif
