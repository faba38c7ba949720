/* Tool calls (tools.h). */
#include "server/tools.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/util.h"
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

const char *sp_tools_forced_prefix(sp_tool_format f) {
    return f == SP_TOOLS_MISTRAL ? "[TOOL_CALLS]" : NULL;
}

/* ---- reading -------------------------------------------------------------------------------- */

/* The end of a JSON value, found a byte at a time without checking the value: strings (with
 * their escapes) and the nesting of objects and arrays are followed, which is all it takes to
 * know where a value ends. */
typedef struct jscan {
    enum { JS_NONE, JS_STRING, JS_NESTED, JS_SCALAR } kind;
    bool in_str, esc;
    uint32_t depth;
} jscan;

enum { JS_MORE, JS_END, JS_END_BEFORE, JS_BAD }; // JS_END_BEFORE: ended before this byte

static bool is_ws(char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

static int jscan_byte(jscan *j, char c) {
    if (j->kind == JS_NONE) {
        j->kind = c == '"' ? JS_STRING : c == '{' || c == '[' ? JS_NESTED : JS_SCALAR;
        j->in_str = c == '"';
        j->depth = 1;
        return j->kind == JS_SCALAR && !strchr("-0123456789tfn", c) ? JS_BAD : JS_MORE;
    }
    if (j->in_str) {
        if (j->esc)
            j->esc = false;
        else if (c == '\\')
            j->esc = true;
        else if (c == '"')
            j->in_str = false;
        return j->kind == JS_STRING && !j->in_str ? JS_END : JS_MORE;
    }
    if (j->kind == JS_SCALAR)
        return is_ws(c) || c == ',' || c == '}' || c == ']' ? JS_END_BEFORE : JS_MORE;
    if (c == '"')
        j->in_str = true;
    else if (c == '{' || c == '[')
        j->depth++;
    else if ((c == '}' || c == ']') && --j->depth == 0)
        return JS_END;
    return JS_MORE;
}

/* Where the reader is in a region of calls (after a marker): its value is a call object or an
 * array of them. */
typedef enum rd_at {
    AT_START,       // the region's value: '[' or '{'
    AT_ITEM,        // after '[': '{' or ']'
    AT_NEXT_ITEM,   // after ',' in the array: '{'
    AT_AFTER_ITEM,  // ',' or ']'
    AT_KEY_OR_END,  // after '{': a key or '}'
    AT_KEY,         // after ',' in a call: a key
    AT_IN_KEY,      // inside a key
    AT_COLON,       // ':'
    AT_VALUE,       // the value's first byte
    AT_IN_VALUE,    // inside the value
    AT_AFTER_VALUE, // ',' or '}'
} rd_at;

typedef enum rd_role { ROLE_SKIP, ROLE_NAME, ROLE_ARGS } rd_role;

typedef struct rd_call {
    char id[24];
    char *name; // NULL until the name is read
    char *args; // (args_cap) the arguments read so far
    uint32_t args_len, args_cap;
    uint32_t args_taken; // given out by next_delta
    bool has_args, complete, announced;
} rd_call;

struct sp_tools_reader {
    sp_tool_format f;
    const char *marker;
    uint64_t seed;
    char *buf; // (buf_cap) the output so far
    uint32_t len, buf_cap;
    uint32_t pos;     // the next byte to read
    uint32_t pending; // content: [pending, pos) is undecided whitespace
    char *content;    // (content_cap) the content decided so far
    uint32_t content_len, content_cap, content_taken;
    bool at_start; // llama3: only whitespace read so far (or, after a call, ';' too)
    // A region of calls: its marker at [region_from, region_body).
    bool in_region, in_array, obj_open;
    uint32_t region_from, region_body;
    rd_at at;
    rd_role role;
    uint32_t key_from, key_to; // the current key's quotes
    uint32_t value_from;       // the current value's first byte
    jscan scan;
    rd_call *calls; // (cap_calls) the calls; the last may be an object not named yet
    uint32_t n_calls, cap_calls;
    uint32_t n_named;
    uint32_t next_delta; // the first call with steps not given out
};

static sp_err append(char **p, uint32_t *len, uint32_t *cap, const char *s, size_t n) {
    if (!sp_grow((void **)p, cap, (uint64_t)*len + n + 1, 1, 64))
        return SP_ERR_NOMEM;
    memcpy(*p + *len, s, n);
    *len += (uint32_t)n;
    (*p)[*len] = '\0';
    return SP_OK;
}

sp_err sp_tools_reader_create(sp_tool_format f, bool in_call, uint64_t id_seed,
                              sp_tools_reader **out) {
    sp_tools_reader *r = calloc(1, sizeof *r);
    if (!r)
        return SP_ERR_NOMEM;
    r->f = f;
    r->marker = f == SP_TOOLS_MISTRAL  ? "[TOOL_CALLS]"
                : f == SP_TOOLS_LLAMA3 ? "<|python_tag|>"
                                       : "<tool_call>";
    r->seed = id_seed;
    r->at_start = f == SP_TOOLS_LLAMA3;
    r->in_region = in_call;
    *out = r;
    return SP_OK;
}

void sp_tools_reader_destroy(sp_tools_reader *r) {
    if (!r)
        return;
    for (uint32_t i = 0; i < r->n_calls; i++) {
        free(r->calls[i].name);
        free(r->calls[i].args);
    }
    free(r->calls);
    free(r->content);
    free(r->buf);
    free(r);
}

/* Content [pending, to) is decided: it is the message's content, unless a call came before. */
static sp_err decide(sp_tools_reader *r, uint32_t to) {
    sp_err err = SP_OK;
    if (!r->n_named && to > r->pending)
        err = append(&r->content, &r->content_len, &r->content_cap, r->buf + r->pending,
                     to - r->pending);
    r->pending = to;
    return err;
}

static void enter_region(sp_tools_reader *r, uint32_t from, uint32_t body) {
    r->in_region = true;
    r->in_array = false;
    r->region_from = from;
    r->region_body = r->pos = body;
    r->at = AT_START;
}

/* Content until a marker (or, llama3, a JSON value that starts the output) opens a region. */
static sp_err read_content(sp_tools_reader *r, bool final) {
    const size_t k = strlen(r->marker);
    while (r->pos < r->len) {
        const char c = r->buf[r->pos];
        if (r->at_start && !is_ws(c) && !(c == ';' && r->n_named)) {
            r->at_start = false;
            if (c == '{' || c == '[') {
                enter_region(r, r->pos, r->pos);
                return SP_OK;
            }
        }
        const size_t avail = SP_MIN(k, (size_t)(r->len - r->pos));
        if (!memcmp(r->buf + r->pos, r->marker, avail)) {
            if (avail == k) {
                enter_region(r, r->pos, r->pos + (uint32_t)k);
                return SP_OK;
            }
            if (!final)
                return SP_OK; // maybe a marker: wait for the next text
        }
        r->pos++;
        if (!is_ws(c)) {
            sp_err err = decide(r, r->pos);
            if (err)
                return err;
        }
    }
    return final ? decide(r, r->pos) : SP_OK;
}

/* What followed the marker is not a call. Before any call, it is content after all (the marker
 * too), and reading goes on after the marker; after a call, it is not content, and reading
 * goes on at `resume`, looking for the next marker. */
static sp_err not_a_call(sp_tools_reader *r, uint32_t resume) {
    if (r->obj_open && !r->calls[r->n_calls - 1].name) {
        rd_call *c = &r->calls[--r->n_calls];
        free(c->args);
        memset(c, 0, sizeof *c);
    }
    r->obj_open = false;
    r->in_region = false;
    if (r->n_named) {
        r->pos = resume;
        return SP_OK;
    }
    r->pos = r->region_body;
    return r->region_body > r->region_from ? decide(r, r->pos) : SP_OK;
}

static sp_err open_call(sp_tools_reader *r) {
    if (!sp_grow((void **)&r->calls, &r->cap_calls, (uint64_t)r->n_calls + 1, sizeof *r->calls, 4))
        return SP_ERR_NOMEM;
    memset(&r->calls[r->n_calls++], 0, sizeof *r->calls);
    r->obj_open = true;
    r->at = AT_KEY_OR_END;
    return SP_OK;
}

/* The call object ends at `at`. */
static sp_err close_call(sp_tools_reader *r, uint32_t at) {
    rd_call *c = &r->calls[r->n_calls - 1];
    if (!c->name)
        return not_a_call(r, at);
    r->obj_open = false;
    if (!c->has_args) { // a call without arguments takes none
        c->has_args = c->complete = true;
        sp_err err = append(&c->args, &c->args_len, &c->args_cap, "{}", 2);
        if (err)
            return err;
    }
    if (r->in_array)
        r->at = AT_AFTER_ITEM;
    else
        r->in_region = false;
    // Llama 3: parallel calls are JSON objects separated by ';' (vLLM's llama3_json reading).
    r->at_start = r->f == SP_TOOLS_LLAMA3 && !r->in_region;
    return SP_OK;
}

/* The JSON string text[n] (with its quotes) decoded into *out, a new string, or NULL when it
 * is not a valid string. SP_ERR_NOMEM. */
static sp_err decode_string(const char *text, size_t n, char **out) {
    json_error_t e;
    json_t *v = json_loadb(text, n, JSON_DECODE_ANY, &e);
    *out = NULL;
    if (!v) // jansson says it ran out of memory, or says nothing (its lexer had no buffer)
        return json_error_code(&e) == json_error_out_of_memory || !e.text[0] ? SP_ERR_NOMEM : SP_OK;
    sp_err err = SP_OK;
    if (json_is_string(v) && !(*out = strndup(json_string_value(v), json_string_length(v))))
        err = SP_ERR_NOMEM;
    json_decref(v);
    return err;
}

static bool key_is(const sp_tools_reader *r, const char *what) {
    const size_t n = strlen(what);
    return r->key_to - r->key_from - 1 == n && !memcmp(r->buf + r->key_from + 1, what, n);
}

/* A value of the current call starts with c (at pos, read next as the value's first byte). */
static sp_err start_value(sp_tools_reader *r, char c) {
    rd_call *call = &r->calls[r->n_calls - 1];
    r->role = ROLE_SKIP;
    if (key_is(r, "name") && !call->name) {
        if (c != '"')
            return not_a_call(r, r->pos);
        r->role = ROLE_NAME;
    } else if ((key_is(r, "arguments") || key_is(r, "parameters")) && !call->has_args) {
        r->role = ROLE_ARGS;
        call->has_args = true;
    }
    r->value_from = r->pos;
    r->scan = (jscan){0};
    r->at = AT_IN_VALUE;
    return SP_OK;
}

/* The current call's value [value_from, end) has been read. */
static sp_err end_value(sp_tools_reader *r, uint32_t end) {
    rd_call *c = &r->calls[r->n_calls - 1];
    r->at = AT_AFTER_VALUE;
    if (r->role == ROLE_SKIP)
        return SP_OK;
    if (r->role == ROLE_ARGS && r->scan.kind != JS_STRING) {
        c->complete = true;
        return SP_OK;
    }
    char *s;
    sp_err err = decode_string(r->buf + r->value_from, end - r->value_from, &s);
    if (err || !s) // a name that is not a valid string is no call; such arguments stay empty
        return err || r->role != ROLE_NAME ? err : not_a_call(r, end);
    if (r->role == ROLE_ARGS) {
        err = append(&c->args, &c->args_len, &c->args_cap, s, strlen(s));
        free(s);
        c->complete = !err;
        return err;
    }
    c->name = s;
    snprintf(c->id, sizeof c->id, "call_%016llx", (unsigned long long)sp_splitmix64(&r->seed));
    r->n_named++;
    return SP_OK;
}

/* Byte c at pos, inside a value: the arguments are taken as they come (a string's once it
 * ends). */
static sp_err value_byte(sp_tools_reader *r, char c) {
    const int res = jscan_byte(&r->scan, c);
    if (res == JS_BAD)
        return not_a_call(r, r->pos);
    if (res == JS_END_BEFORE) // a number or literal ends before c, which is read after it
        return end_value(r, r->pos);
    rd_call *call = &r->calls[r->n_calls - 1];
    if (r->role == ROLE_ARGS && r->scan.kind != JS_STRING) {
        sp_err err = append(&call->args, &call->args_len, &call->args_cap, &c, 1);
        if (err)
            return err;
    }
    r->pos++;
    return res == JS_END ? end_value(r, r->pos) : SP_OK;
}

/* Byte c at pos, in a region; every case reads it, but a value's and one that is no call's. */
static sp_err region_byte(sp_tools_reader *r, char c) {
    const uint32_t at = r->pos++;
    switch (r->at) {
    case AT_START:
        if (c == '[') {
            r->in_array = true;
            r->at = AT_ITEM;
            return SP_OK;
        }
        return c == '{' ? open_call(r) : not_a_call(r, at);
    case AT_ITEM:
    case AT_NEXT_ITEM:
        return c == '{' ? open_call(r) : not_a_call(r, at); // "[]" is not a call either
    case AT_AFTER_ITEM:
        if (c == ',')
            r->at = AT_NEXT_ITEM;
        else if (c == ']')
            r->in_region = false;
        else
            return not_a_call(r, at);
        return SP_OK;
    case AT_KEY_OR_END:
        if (c == '}')
            return close_call(r, at);
        // fall through
    case AT_KEY:
        if (c != '"')
            return not_a_call(r, at);
        r->key_from = at;
        r->scan = (jscan){0};
        (void)jscan_byte(&r->scan, c);
        r->at = AT_IN_KEY;
        return SP_OK;
    case AT_IN_KEY:
        if (jscan_byte(&r->scan, c) == JS_END) {
            r->key_to = at;
            r->at = AT_COLON;
        }
        return SP_OK;
    case AT_COLON:
        if (c != ':')
            return not_a_call(r, at);
        r->at = AT_VALUE;
        return SP_OK;
    case AT_VALUE:
        r->pos = at;
        return start_value(r, c);
    case AT_IN_VALUE:
        r->pos = at;
        return value_byte(r, c);
    case AT_AFTER_VALUE:
        if (c == ',')
            r->at = AT_KEY;
        else if (c == '}')
            return close_call(r, at);
        else
            return not_a_call(r, at);
        return SP_OK;
    }
    return SP_OK;
}

static sp_err read_region(sp_tools_reader *r) {
    sp_err err = SP_OK;
    while (!err && r->in_region && r->pos < r->len) {
        const char c = r->buf[r->pos];
        if (r->at != AT_IN_KEY && r->at != AT_IN_VALUE && is_ws(c))
            r->pos++;
        else
            err = region_byte(r, c);
    }
    return err;
}

sp_err sp_tools_reader_feed(sp_tools_reader *r, const char *text, size_t n, bool final) {
    if ((uint64_t)r->len + n >= UINT32_MAX / 2)
        return SP_ERR_NOMEM;
    sp_err err = n ? append(&r->buf, &r->len, &r->buf_cap, text, n) : SP_OK;
    while (!err) {
        const uint32_t pos = r->pos;
        const bool in_region = r->in_region;
        err = r->in_region ? read_region(r) : read_content(r, final);
        if (!err && final && r->in_region && r->pos == r->len && !r->n_named)
            err = not_a_call(r, r->pos); // the output ended before a call was named
        if (r->pos == pos && r->in_region == in_region)
            break; // nothing more to read now
    }
    return err;
}

sp_str sp_tools_reader_take_content(sp_tools_reader *r) {
    if (!r->content)
        return (sp_str){"", 0};
    sp_str s = {r->content + r->content_taken, r->content_len - r->content_taken};
    r->content_taken = r->content_len;
    return s;
}

sp_str sp_tools_reader_content(const sp_tools_reader *r) {
    return (sp_str){r->content ? r->content : "", r->content_len};
}

bool sp_tools_reader_next_delta(sp_tools_reader *r, sp_tool_delta *out) {
    while (r->next_delta < r->n_calls) {
        rd_call *c = &r->calls[r->next_delta];
        *out = (sp_tool_delta){.index = (int32_t)r->next_delta};
        if (!c->name)
            return false;
        if (!c->announced) {
            c->announced = true;
            out->id = c->id;
            out->name = c->name;
            out->args = "";
            return true;
        }
        if (c->args_taken < c->args_len) {
            out->args = c->args + c->args_taken;
            out->args_len = c->args_len - c->args_taken;
            c->args_taken = c->args_len;
            return true;
        }
        if (!c->complete && r->next_delta + 1 == r->n_calls)
            return false; // more arguments may come
        r->next_delta++;
    }
    return false;
}

int32_t sp_tools_reader_n_calls(const sp_tools_reader *r) {
    return (int32_t)r->n_named;
}

sp_tool_call sp_tools_reader_call(const sp_tools_reader *r, int32_t i) {
    const rd_call *c = &r->calls[i];
    return (sp_tool_call){.id = c->id,
                          .name = c->name,
                          .args = c->args ? c->args : "",
                          .args_len = c->args_len,
                          .complete = c->complete};
}
