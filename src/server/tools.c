/* Tool calls (tools.h). */
#include "server/tools.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "grammar/schema.h"

static bool contains(const char *s, size_t n, const char *what) {
    const size_t k = strlen(what);
    for (size_t i = 0; s && i + k <= n; i++)
        if (!memcmp(s + i, what, k))
            return true;
    return false;
}

sp_tool_format sp_tools_detect(const char *tmpl, size_t n) {
    if (contains(tmpl, n, "[TOOL_CALLS]"))
        return SP_TOOLS_MISTRAL;
    if (contains(tmpl, n, "<|python_tag|>") || contains(tmpl, n, "Environment: ipython"))
        return SP_TOOLS_LLAMA3;
    return SP_TOOLS_HERMES;
}

const char *sp_tools_format_name(sp_tool_format f) {
    return f == SP_TOOLS_MISTRAL ? "mistral" : f == SP_TOOLS_LLAMA3 ? "llama3" : "hermes";
}

static const char *tool_name(json_t *tool) {
    return json_string_value(json_object_get(json_object_get(tool, "function"), "name"));
}

sp_err sp_tools_validate(json_t *tools, sp_diag *d) {
    sp_err err = SP_OK;
    size_t i;
    json_t *t;
    if (!json_is_array(tools))
        err = sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "'tools' must be an array of tools");
    json_array_foreach(tools, i, t) {
        if (err)
            break;
        json_t *fn = json_object_get(t, "function"), *params = json_object_get(fn, "parameters");
        const char *type = json_string_value(json_object_get(t, "type"));
        if (!json_is_object(t) || !type || strcmp(type, "function") || !json_is_object(fn) ||
            !tool_name(t) || !tool_name(t)[0])
            err = sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX,
                              "tools[%zu] must be {\"type\": \"function\", \"function\": "
                              "{\"name\": ..., \"parameters\": {...}}}",
                              i);
        else if (params && !json_is_object(params))
            err = sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX,
                              "tools[%zu].function.parameters must be a JSON Schema object", i);
    }
    if (err && d)
        snprintf(d->param, sizeof d->param, "tools");
    return err;
}

/* The JSON Schema of one call (an object with the name and the arguments) to one of the tools
 * (only `name` if not NULL); the tools' $defs and definitions gathered at its root, where
 * their $refs point. NULL when no tool has that name (or out of memory). */
static json_t *call_schema(sp_tool_format f, json_t *tools, const char *name) {
    json_t *any = json_array(), *root = json_object(), *defs = json_object();
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        if (name && strcmp(tool_name(t), name))
            continue;
        json_t *params = json_object_get(json_object_get(t, "function"), "parameters");
        json_t *p = params ? json_deep_copy(params) : json_pack("{s:s}", "type", "object");
        for (int k = 0; k < 2 && p; k++) {
            const char *key = k ? "definitions" : "$defs";
            json_object_update(defs, json_object_get(p, key));
            json_object_del(p, key);
        }
        json_array_append_new(any, json_pack("{s:s, s:{s:{s:s}, s:o}, s:[s, s], s:b}", "type",
                                             "object", "properties", "name", "const", tool_name(t),
                                             f == SP_TOOLS_LLAMA3 ? "parameters" : "arguments", p,
                                             "required", "name",
                                             f == SP_TOOLS_LLAMA3 ? "parameters" : "arguments",
                                             "additionalProperties", 0));
    }
    if (!json_array_size(any)) {
        json_decref(any);
        json_decref(root);
        json_decref(defs);
        return NULL;
    }
    json_object_set_new(root, "anyOf", any);
    json_object_set(root, "$defs", defs);
    json_object_set_new(root, "definitions", defs);
    if (f == SP_TOOLS_MISTRAL) { // an array of calls
        json_t *arr = json_pack("{s:s, s:o, s:i}", "type", "array", "items", root, "minItems", 1);
        json_object_set(arr, "$defs", defs);
        json_object_set(arr, "definitions", defs);
        return arr;
    }
    return root;
}

sp_err sp_tools_grammar(sp_tool_format f, json_t *tools, const char *name, sp_grammar **out,
                        sp_diag *d) {
    json_t *schema = call_schema(f, tools, name);
    if (!schema) {
        sp_err err = sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX,
                                 name ? "tool_choice names a function, '%s', that is not in "
                                        "'tools'"
                                      : "tool_choice \"required\" needs 'tools'",
                                 name ? name : "");
        if (d)
            snprintf(d->param, sizeof d->param, "tool_choice");
        return err;
    }
    sp_err err =
        sp_grammar_from_json_schema_wrapped(schema, f == SP_TOOLS_HERMES ? "<tool_call>\n" : "",
                                            f == SP_TOOLS_HERMES ? "\n</tool_call>" : "", out, d);
    json_decref(schema);
    if (err && d)
        snprintf(d->param, sizeof d->param, "tools");
    return err;
}

/* ---- parsing -------------------------------------------------------------------------------- */

/* An OpenAI tool call from a call object ({"name", "arguments" or "parameters"}); NULL if it is
 * not one. */
static json_t *openai_call(json_t *call, uint64_t *seed) {
    const char *name = json_string_value(json_object_get(call, "name"));
    json_t *args = json_object_get(call, "arguments");
    if (!args)
        args = json_object_get(call, "parameters");
    if (!json_is_object(call) || !name || !args)
        return NULL;
    char *text = json_is_string(args) ? strdup(json_string_value(args))
                                      : json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
    char id[32];
    snprintf(id, sizeof id, "call_%016llx", (unsigned long long)sp_splitmix64(seed));
    json_t *out = text ? json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function",
                                   "function", "name", name, "arguments", text)
                       : NULL;
    free(text);
    return out;
}

static char *trimmed(const char *s, size_t n) {
    while (n && (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        n--;
    return n ? strndup(s, n) : NULL;
}

json_t *sp_tools_parse(sp_tool_format f, const char *text, size_t n, uint64_t *seed,
                       char **content) {
    json_t *calls = json_array();
    *content = NULL;
    if (!calls)
        return NULL;
    const char *end = text + n;
    if (f == SP_TOOLS_HERMES) {
        static const char open[] = "<tool_call>", close[] = "</tool_call>";
        const char *p = text, *first = NULL;
        for (;;) {
            const char *a = memmem(p, (size_t)(end - p), open, sizeof open - 1);
            if (!a)
                break;
            const char *body = a + sizeof open - 1;
            const char *b = memmem(body, (size_t)(end - body), close, sizeof close - 1);
            json_t *call = json_loadb(body, (size_t)((b ? b : end) - body), 0, NULL);
            json_t *oc = openai_call(call, seed);
            json_decref(call);
            if (!oc)
                break; // not a call after all: the rest is content
            json_array_append_new(calls, oc);
            if (!first)
                first = a;
            p = b ? b + sizeof close - 1 : end;
        }
        if (json_array_size(calls))
            *content = trimmed(text, (size_t)(first - text));
    } else {
        const char *p = text;
        static const char tag[] = "<|python_tag|>", mark[] = "[TOOL_CALLS]";
        const char *m = f == SP_TOOLS_MISTRAL ? memmem(text, n, mark, sizeof mark - 1) : NULL;
        if (m)
            p = m + sizeof mark - 1;
        else if (f == SP_TOOLS_LLAMA3 && (m = memmem(text, n, tag, sizeof tag - 1)))
            p = m + sizeof tag - 1;
        while (p < end && (*p == ' ' || *p == '\n'))
            p++;
        json_t *v = json_loadb(p, (size_t)(end - p), JSON_DISABLE_EOF_CHECK, NULL);
        if (json_is_object(v)) {
            json_t *oc = openai_call(v, seed);
            if (oc)
                json_array_append_new(calls, oc);
        } else if (json_is_array(v)) {
            size_t i;
            json_t *c;
            json_array_foreach(v, i, c) {
                json_t *oc = openai_call(c, seed);
                if (oc)
                    json_array_append_new(calls, oc);
            }
        }
        json_decref(v);
        if (json_array_size(calls))
            *content = trimmed(text, (size_t)((m ? m : p) - text));
    }
    if (!json_array_size(calls)) {
        json_decref(calls);
        return NULL;
    }
    return calls;
}
