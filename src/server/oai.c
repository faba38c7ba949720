#include "server/oai.h"
#include "server/tools.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static sp_err bad(sp_diag *d, const char *param, const char *fmt, ...) SP_PRINTF(3, 4);

static sp_err bad(sp_diag *d, const char *param, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "%s", msg);
    if (d)
        snprintf(d->param, sizeof d->param, "%s", param);
    return SP_ERR_INVALID;
}

/* Reads an optional number in [lo, hi] (integers accepted). */
static sp_err get_num(json_t *body, const char *key, double lo, double hi, bool *present,
                      double *out, sp_diag *d) {
    json_t *v = json_object_get(body, key);
    if (present)
        *present = false;
    if (!v || json_is_null(v))
        return SP_OK;
    if (!json_is_number(v))
        return bad(d, key, "'%s' must be a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) {
        char m[160];
        snprintf(m, sizeof m, "'%s' must be between %g and %g, got %g", key, lo, hi, x);
        return bad(d, key, "%s", m);
    }
    if (present)
        *present = true;
    *out = x;
    return SP_OK;
}

/* Reads an optional integer in [lo, hi]. */
static sp_err get_int(json_t *body, const char *key, int64_t lo, int64_t hi, bool *present,
                      int64_t *out, sp_diag *d) {
    json_t *v = json_object_get(body, key);
    if (present)
        *present = false;
    if (!v || json_is_null(v))
        return SP_OK;
    if (!json_is_integer(v)) {
        // 3.0 is accepted as 3, as Python clients may send.
        if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
            fabs(json_real_value(v)) < 9e15)
            v = NULL;
        else
            return bad(d, key, "'%s' must be an integer", key);
    }
    int64_t x =
        v ? (int64_t)json_integer_value(v) : (int64_t)json_real_value(json_object_get(body, key));
    if (x < lo || x > hi) {
        char m[160];
        snprintf(m, sizeof m, "'%s' must be between %lld and %lld, got %lld", key, (long long)lo,
                 (long long)hi, (long long)x);
        return bad(d, key, "%s", m);
    }
    if (present)
        *present = true;
    *out = x;
    return SP_OK;
}

static sp_err get_bool(json_t *body, const char *key, bool *out, sp_diag *d) {
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v))
        return SP_OK;
    if (!json_is_boolean(v))
        return bad(d, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return SP_OK;
}

static sp_err check_prompt(json_t *p, sp_diag *d) {
    if (!p || json_is_null(p))
        return bad(d, "prompt", "'prompt' is required");
    if (json_is_string(p))
        return json_string_length(p) ? SP_OK : bad(d, "prompt", "'prompt' is empty");
    if (!json_is_array(p))
        return bad(d, "prompt",
                   "'prompt' must be a string, an array of strings or an array "
                   "of token ids");
    size_t n = json_array_size(p);
    if (n == 0)
        return bad(d, "prompt", "'prompt' is empty");
    json_t *first = json_array_get(p, 0);
    size_t i;
    json_t *e;
    if (json_is_integer(first)) {
        json_array_foreach(p, i, e) if (!json_is_integer(e)) return bad(
            d, "prompt", "'prompt' mixes token ids with other values");
        return SP_OK;
    }
    if (n > SP_OAI_MAX_PROMPTS)
        return bad(d, "prompt", "'prompt' holds more than 16 prompts");
    json_array_foreach(p, i, e) {
        if (json_is_string(e)) {
            if (!json_string_length(e))
                return bad(d, "prompt", "'prompt' contains an empty prompt");
        } else if (json_is_array(e) && json_array_size(e) > 0) {
            size_t k;
            json_t *t;
            json_array_foreach(e, k, t) if (!json_is_integer(t)) return bad(
                d, "prompt", "token id arrays in 'prompt' must hold integers");
        } else {
            return bad(d, "prompt",
                       "each prompt must be a non-empty string or array of token "
                       "ids");
        }
    }
    return SP_OK;
}

static sp_err check_messages(json_t *m, sp_diag *d) {
    if (!m || json_is_null(m))
        return bad(d, "messages", "'messages' is required");
    if (!json_is_array(m) || json_array_size(m) == 0)
        return bad(d, "messages", "'messages' must be a non-empty array");
    size_t i;
    json_t *msg;
    json_array_foreach(m, i, msg) {
        if (!json_is_object(msg))
            return bad(d, "messages", "each message must be an object");
        json_t *role = json_object_get(msg, "role");
        if (!json_is_string(role))
            return bad(d, "messages", "each message needs a string 'role'");
        static const char *const roles[] = {"system",    "developer", "user",
                                            "assistant", "tool",      "function"};
        bool known = false;
        for (size_t r = 0; r < sizeof roles / sizeof *roles && !known; r++)
            known = !strcmp(json_string_value(role), roles[r]);
        if (!known)
            return bad(d, "messages",
                       "message %zu has an unknown role; roles are system, developer, user, "
                       "assistant, tool and function",
                       i);
        json_t *content = json_object_get(msg, "content");
        if (json_is_array(content)) {
            size_t k;
            json_t *part;
            json_array_foreach(content, k, part) {
                json_t *type = json_object_get(part, "type");
                if (!json_is_object(part) || !json_is_string(type))
                    return bad(d, "messages", "content parts must be objects with a 'type'");
                if (strcmp(json_string_value(type), "text"))
                    return bad(d, "messages",
                               "content part type '%s' is not supported (only 'text')",
                               json_string_value(type));
                if (!json_is_string(json_object_get(part, "text")))
                    return bad(d, "messages", "text content parts need a string 'text'");
            }
        } else if (content && !json_is_string(content) && !json_is_null(content)) {
            return bad(d, "messages",
                       "message 'content' must be a string, an array of parts "
                       "or null");
        } else if ((!content || json_is_null(content)) && !json_object_get(msg, "tool_calls")) {
            return bad(d, "messages", "each message needs 'content'");
        }
    }
    return SP_OK;
}

size_t sp_oai_n_prompts(const sp_oai_req *r) {
    if (r->kind == SP_OAI_CHAT || json_is_string(r->prompt))
        return 1;
    if (json_is_integer(json_array_get(r->prompt, 0)))
        return 1;
    return json_array_size(r->prompt);
}

sp_err sp_oai_parse(json_t *body, sp_oai_kind kind, sp_oai_req *out, sp_diag *d) {
    if (!json_is_object(body))
        return bad(d, "", "the request body must be a JSON object");
    sp_oai_req r;
    memset(&r, 0, sizeof r);
    r.kind = kind;
    r.params = sp_req_params_default();
    r.n = 1;
    r.logprobs = -1;
    sp_err err;
    json_t *model = json_object_get(body, "model");
    if (model && !json_is_null(model) && !json_is_string(model))
        return bad(d, "model", "'model' must be a string");
    r.model = json_string_value(model);
    if (kind == SP_OAI_COMPLETION) {
        r.prompt = json_object_get(body, "prompt");
        if ((err = check_prompt(r.prompt, d)))
            return err;
    } else {
        r.messages = json_object_get(body, "messages");
        if ((err = check_messages(r.messages, d)))
            return err;
    }

    // OpenAI's sampling defaults: temperature 1, top_p 1, no top-k or min-p cut.
    sp_sample_params *sp = &r.params.sample;
    sp->temperature = 1.0f;
    sp->top_p = 1.0f;
    sp->top_k = 0;
    sp->min_p = 0.0f;
    double x;
    int64_t i64;
    bool has;
    if ((err = get_num(body, "temperature", 0, 2, &has, &x, d)))
        return err;
    if (has)
        sp->temperature = (float)x;
    if ((err = get_num(body, "top_p", 0, 1, &has, &x, d)))
        return err;
    if (has) {
        if (x == 0)
            return bad(d, "top_p", "'top_p' must be greater than 0");
        sp->top_p = (float)x;
    }
    if ((err = get_int(body, "top_k", 0, 1 << 20, &has, &i64, d)))
        return err;
    if (has)
        sp->top_k = (int32_t)i64;
    if ((err = get_num(body, "min_p", 0, 1, &has, &x, d)))
        return err;
    if (has)
        sp->min_p = (float)x;
    if ((err = get_num(body, "presence_penalty", -2, 2, &has, &x, d)))
        return err;
    if (has)
        sp->presence_penalty = (float)x;
    if ((err = get_num(body, "frequency_penalty", -2, 2, &has, &x, d)))
        return err;
    if (has)
        sp->frequency_penalty = (float)x;
    if ((err = get_num(body, "repeat_penalty", 0.01, 10, &has, &x, d)))
        return err;
    if (has)
        sp->repeat_penalty = (float)x;
    if ((err = get_int(body, "seed", INT64_MIN, INT64_MAX, &r.has_seed, &i64, d)))
        return err;
    if (r.has_seed)
        sp->seed = (uint64_t)i64;

    // max_completion_tokens supersedes max_tokens in the chat API.
    bool has_mct;
    int64_t mct = 0;
    if ((err = get_int(body, "max_tokens", 1, INT32_MAX, &r.has_max_tokens, &i64, d)) ||
        (err = get_int(body, "max_completion_tokens", 1, INT32_MAX, &has_mct, &mct, d)))
        return err;
    if (has_mct) {
        i64 = mct;
        r.has_max_tokens = true;
    }
    r.params.max_tokens = r.has_max_tokens ? (int32_t)i64 : 16;

    if ((err = get_int(body, "n", 1, SP_OAI_MAX_N, &has, &i64, d)))
        return err;
    if (has)
        r.n = (int32_t)i64;
    if ((err = get_bool(body, "stream", &r.stream, d)) ||
        (err = get_bool(body, "ignore_eos", &r.params.ignore_eos, d)) ||
        (err = get_bool(body, "echo", &r.echo, d)))
        return err;
    if (r.echo && kind == SP_OAI_CHAT)
        r.echo = false;
    json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return bad(d, "stream_options", "'stream_options' must be an object");
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_boolean(iu))
            return bad(d, "stream_options", "'include_usage' must be a boolean");
        r.include_usage = json_is_true(iu);
    }

    json_t *stop = json_object_get(body, "stop");
    if (json_is_string(stop)) {
        if (json_string_length(stop)) {
            r.stop[0] = json_string_value(stop);
            r.params.n_stop = 1;
        }
    } else if (json_is_array(stop)) {
        if (json_array_size(stop) > SP_OAI_MAX_STOP)
            return bad(d, "stop", "'stop' holds more than 16 strings");
        size_t k;
        json_t *s;
        json_array_foreach(stop, k, s) {
            if (!json_is_string(s))
                return bad(d, "stop", "'stop' must be a string or an array of strings");
            if (json_string_length(s) > SP_STOP_MAX_BYTES)
                return bad(d, "stop", "a stop string is longer than 4096 bytes");
            if (json_string_length(s))
                r.stop[r.params.n_stop++] = json_string_value(s);
        }
    } else if (stop && !json_is_null(stop)) {
        return bad(d, "stop", "'stop' must be a string or an array of strings");
    }

    if (kind == SP_OAI_COMPLETION) {
        if ((err = get_int(body, "logprobs", 0, SP_REQ_MAX_TOP_LOGPROBS, &has, &i64, d)))
            return err;
        if (has)
            r.logprobs = (int32_t)i64;
    } else {
        bool want = false;
        if ((err = get_bool(body, "logprobs", &want, d)) ||
            (err = get_int(body, "top_logprobs", 0, SP_REQ_MAX_TOP_LOGPROBS, &has, &i64, d)))
            return err;
        if (has && !want)
            return bad(d, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        if (want)
            r.logprobs = has ? (int32_t)i64 : 0;
        json_t *extra = json_object_get(body, "chat_template_kwargs");
        if (extra && !json_is_null(extra) && !json_is_object(extra))
            return bad(d, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
        r.template_extra = json_is_object(extra) ? extra : NULL;
        // The variables the server sets itself cannot be replaced through the back door.
        static const char *const reserved[] = {"messages", "tools", "bos_token", "eos_token",
                                               "add_generation_prompt"};
        for (size_t k = 0; r.template_extra && k < sizeof reserved / sizeof *reserved; k++)
            if (json_object_get(r.template_extra, reserved[k]))
                return bad(d, "chat_template_kwargs",
                           "'chat_template_kwargs' cannot set '%s': the server sets it from "
                           "the request",
                           reserved[k]);
    }
    r.params.n_logprobs = r.logprobs;
    if ((err = get_int(body, "deadline_ms", 0, INT32_MAX, &has, &i64, d)))
        return err;
    if (has)
        r.params.deadline_ms = (int32_t)i64;
    if ((err = get_int(body, "stop_after", 0, INT32_MAX, &has, &i64, d)))
        return err;
    if (has)
        r.params.stop_after = (int32_t)i64;
    if ((err = get_int(body, "priority", -SP_PRIORITY_OFFLINE, SP_PRIORITY_OFFLINE, &has, &i64,
                       d)))
        return err;
    if (has)
        r.params.priority = (int32_t)i64;
    json_t *user = json_object_get(body, "user");
    if (user && !json_is_null(user) && !json_is_string(user))
        return bad(d, "user", "'user' must be a string");
    r.user = json_string_value(user);
    json_t *tool = json_object_get(body, "tool");
    if (tool && !json_is_null(tool) && !json_is_string(tool))
        return bad(d, "tool", "'tool' must be a string (the tool the turn ends waiting on)");
    r.tool = json_is_string(tool) && json_string_length(tool) ? json_string_value(tool) : NULL;
    json_t *pred = json_object_get(body, "prediction");
    if (pred && !json_is_null(pred)) {
        json_t *type = json_object_get(pred, "type"), *content = json_object_get(pred, "content");
        if (!json_is_object(pred) || !json_is_string(type) ||
            strcmp(json_string_value(type), "content"))
            return bad(d, "prediction",
                       "'prediction' must be an object {\"type\": \"content\", \"content\": ...}");
        bool ok = json_is_string(content) || json_is_array(content);
        size_t i;
        json_t *part;
        if (json_is_array(content))
            json_array_foreach(content, i, part) {
                json_t *pt = json_object_get(part, "type");
                ok = ok && json_is_object(part) && json_is_string(pt) &&
                     !strcmp(json_string_value(pt), "text") &&
                     json_is_string(json_object_get(part, "text"));
            }
        if (!ok)
            return bad(d, "prediction",
                       "'prediction.content' must be a string or an array of "
                       "{\"type\": \"text\", \"text\": string} parts");
        r.prediction = content;
    }
    json_t *grammar = json_object_get(body, "grammar");
    if (grammar && !json_is_null(grammar)) {
        if (!json_is_string(grammar))
            return bad(d, "grammar", "'grammar' must be a string of GBNF rules");
        r.grammar = json_string_value(grammar);
        r.grammar_len = json_string_length(grammar);
    }
    json_t *rf = json_object_get(body, "response_format");
    if (rf && !json_is_null(rf)) {
        const char *type = json_string_value(json_object_get(rf, "type"));
        if (!json_is_object(rf) || !type)
            return bad(d, "response_format",
                       "'response_format' must be an object with a 'type': \"text\" or "
                       "\"json_object\"");
        if (!strcmp(type, "json_object")) {
            r.json_object = true;
        } else if (!strcmp(type, "json_schema")) {
            json_t *js = json_object_get(rf, "json_schema");
            json_t *schema = json_object_get(js, "schema");
            if (!json_is_object(js) || !json_is_string(json_object_get(js, "name")))
                return bad(d, "response_format",
                           "response_format json_schema needs a 'json_schema' object with a "
                           "'name' and a 'schema'");
            if (schema && !json_is_object(schema) && !json_is_boolean(schema))
                return bad(d, "response_format", "'json_schema.schema' must be a JSON Schema");
            if (schema) {
                r.json_schema = schema;
                r.schema_param = "response_format";
            } else {
                r.json_object = true; // no schema: any JSON object
            }
        } else if (strcmp(type, "text")) {
            return bad(d, "response_format",
                       "unknown response_format type \"%s\": use \"text\", \"json_object\" "
                       "or \"json_schema\"",
                       type);
        }
    }
    json_t *schema = json_object_get(body, "json_schema");
    if (schema && !json_is_null(schema)) {
        if (!json_is_object(schema) && !json_is_boolean(schema))
            return bad(d, "json_schema", "'json_schema' must be a JSON Schema (an object)");
        if (r.json_schema || r.json_object)
            return bad(d, "json_schema", "give 'json_schema' or a JSON response_format, not both");
        r.json_schema = schema;
        r.schema_param = "json_schema";
    }
    json_t *tools = kind == SP_OAI_CHAT ? json_object_get(body, "tools") : NULL;
    if (tools && !json_is_null(tools) && json_array_size(tools)) {
        if ((err = sp_tools_validate(tools, d)))
            return err;
        r.tools = tools;
    }
    json_t *tc = kind == SP_OAI_CHAT ? json_object_get(body, "tool_choice") : NULL;
    if (tc && !json_is_null(tc)) {
        const char *name = json_string_value(
            json_object_get(json_object_get(tc, "function"), "name"));
        const char *type = json_string_value(json_object_get(tc, "type"));
        if (json_is_string(tc) && !strcmp(json_string_value(tc), "none"))
            r.tool_choice = SP_OAI_TOOLS_NONE;
        else if (json_is_string(tc) && !strcmp(json_string_value(tc), "auto"))
            r.tool_choice = SP_OAI_TOOLS_AUTO;
        else if (json_is_string(tc) && !strcmp(json_string_value(tc), "required"))
            r.tool_choice = SP_OAI_TOOLS_REQUIRED;
        else if (json_is_object(tc) && type && !strcmp(type, "function") && name)
            r.tool_choice = SP_OAI_TOOLS_NAMED, r.tool_name = name;
        else
            return bad(d, "tool_choice",
                       "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                       "{\"type\": \"function\", \"function\": {\"name\": ...}}");
        if (r.tool_choice >= SP_OAI_TOOLS_REQUIRED && !r.tools)
            return bad(d, "tool_choice", "tool_choice asks for a tool call, but 'tools' is empty");
        if (r.tool_choice >= SP_OAI_TOOLS_REQUIRED &&
            (r.grammar || r.json_object || r.json_schema))
            return bad(d, "tool_choice",
                       "a forced tool call cannot be combined with a grammar or response_format");
    }
    if (r.grammar && (r.json_object || r.json_schema))
        return bad(d, "grammar", "give 'grammar' or a JSON schema or response_format, not both");
    json_t *sess = json_object_get(body, "session_id");
    if (sess && !json_is_null(sess) && !json_is_string(sess))
        return bad(d, "session_id", "'session_id' must be a string");
    r.session = json_is_string(sess) && json_string_length(sess)
                    ? json_string_value(sess)
                    : (r.user && *r.user ? r.user : NULL);
    *out = r;
    out->params.stop = out->stop;
    return SP_OK;
}
