/* The built-in grammar of a JSON object (grammar.h), the API's JSON mode. Whitespace is bounded
 * as in llama.cpp's json.gbnf (a space, or a line break and up to 20 blanks of indentation),
 * numbers' digits as its json-schema converter bounds them, so that a model's run of blanks or
 * digits ends. Whitespace may come first: a tokenizer that spells words with a leading space
 * then keeps its usual first tokens. */
#include <string.h>

#include "grammar/grammar.h"

const char sp_grammar_json_gbnf[] =
    "root   ::= ws object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n"
    "array  ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
    "string ::= \"\\\"\" char* \"\\\"\" ws\n"
    "char   ::= [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n"
    "number ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15}) (\".\" [0-9]{1,16})? "
    "([eE] [-+]? [0-9]{1,4})? ws\n"
    "ws     ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

sp_err sp_grammar_json_object(sp_grammar **out, sp_diag *diag) {
    return sp_grammar_from_gbnf(sp_grammar_json_gbnf, strlen(sp_grammar_json_gbnf), out, diag);
}
