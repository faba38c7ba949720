/* Tool calls: the format of real chat templates; the calls read out of model outputs in each
 * format (with content before them, several at once, and outputs that only look like calls),
 * the same whether the output comes whole or in pieces of any size, and the steps a stream
 * gives as an output is generated (content held while it may be a marker, a call's start once
 * its name is complete, its arguments in fragments); and the grammar of a forced call, which
 * takes a call with valid arguments and nothing else. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "../../fuzz/fuzz_tools.c"
#include "base/util.h"
#include "grammar/matcher.h"
#include "server/tools.h"

static void check_detect(const char *file, sp_tool_format want) {
    char rel[256];
    snprintf(rel, sizeof rel, "templates/%s", file);
    char *path = sp_test_shared(rel);
    size_t n;
    char *text = sp_test_read_file(path, &n);
    assert_int_equal(sp_tools_detect(text, n), want);
    free(text);
    free(path);
}

static void test_detect(void **st) {
    (void)st;
    check_detect("Qwen-Qwen2.5-7B-Instruct.jinja", SP_TOOLS_HERMES);
    check_detect("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", SP_TOOLS_HERMES);
    check_detect("meta-llama-Llama-3.1-8B-Instruct.jinja", SP_TOOLS_LLAMA3);
    assert_int_equal(sp_tools_detect(NULL, 0), SP_TOOLS_HERMES);
    assert_int_equal(sp_tools_detect("{{ '[TOOL_CALLS]' }}", 19), SP_TOOLS_MISTRAL);
}

/* ---- reading ---- */

/* What a client makes of a reader's stream of an output fed in pieces of `piece` bytes (all at
 * once when 0), written into out: the content, then a line "=> NAME ARGUMENTS" per call (" ..."
 * after a call cut short). Every step is checked as a client would check it (calls start in
 * order, with an id and empty arguments; fragments belong to a started call), and what the
 * stream adds up to against the reader's own account of the output. */
static void read_output(sp_tool_format f, bool in_call, const char *text, size_t piece, char *out,
                        size_t cap) {
    sp_tools_reader *r;
    assert_int_equal(sp_tools_reader_create(f, in_call, 1, &r), SP_OK);
    const size_t n = strlen(text);
    char content[1024], args[8][512];
    size_t content_len = 0, args_len[8] = {0};
    int32_t n_calls = 0;
    for (size_t at = 0;;) {
        const size_t k = piece && n - at > piece ? piece : n - at;
        assert_int_equal(sp_tools_reader_feed(r, text + at, k, at + k == n), SP_OK);
        at += k;
        const sp_str c = sp_tools_reader_take_content(r);
        assert_true(content_len + c.len < sizeof content);
        memcpy(content + content_len, c.ptr, c.len);
        content_len += c.len;
        sp_tool_delta d;
        while (sp_tools_reader_next_delta(r, &d)) {
            if (d.id) {
                assert_int_equal(d.index, n_calls++);
                assert_int_equal(d.args_len, 0);
                assert_non_null(strstr(d.id, "call_"));
                assert_string_equal(d.name, sp_tools_reader_call(r, d.index).name);
                continue;
            }
            assert_true(d.index >= 0 && d.index < n_calls);
            assert_true(d.args_len > 0 && args_len[d.index] + d.args_len < sizeof args[0]);
            memcpy(args[d.index] + args_len[d.index], d.args, d.args_len);
            args_len[d.index] += d.args_len;
        }
        if (at == n)
            break;
    }
    const sp_str all = sp_tools_reader_content(r);
    assert_int_equal(all.len, content_len);
    assert_memory_equal(all.ptr, content, content_len);
    assert_int_equal(sp_tools_reader_n_calls(r), n_calls);
    size_t o = (size_t)snprintf(out, cap, "%.*s", (int)content_len, content);
    for (int32_t i = 0; i < n_calls; i++) {
        const sp_tool_call c = sp_tools_reader_call(r, i);
        assert_int_equal(c.args_len, args_len[i]);
        assert_memory_equal(c.args, args[i], c.args_len);
        o += (size_t)snprintf(out + o, cap - o, "%s=> %s %.*s%s", o ? "\n" : "", c.name,
                              (int)c.args_len, c.args, c.complete ? "" : " ...");
    }
    assert_true(o < cap);
    sp_tools_reader_destroy(r);
}

static const struct {
    sp_tool_format f;
    bool in_call;
    const char *output, *want; // want: as read_output writes it
} reads[] = {
    {SP_TOOLS_HERMES, false,
     "Let me look.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
     "</tool_call>\n<tool_call>{\"name\": \"time\", \"arguments\": {}}</tool_call>",
     "Let me look.\n=> weather {\"city\": \"Paris\"}\n=> time {}"},
    // Cut short before the closing tag: still a call; inside the arguments: a call cut short.
    {SP_TOOLS_HERMES, false, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1]}}",
     "=> f {\"a\": [1]}"},
    {SP_TOOLS_HERMES, false, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1",
     "=> f {\"a\": [1 ..."},
    // No call: all the text is content, whitespace and what looks like a marker included.
    {SP_TOOLS_HERMES, false, "  No tools: 4 < 5, <tool> <tool_cal\n\n",
     "  No tools: 4 < 5, <tool> <tool_cal\n\n"},
    {SP_TOOLS_HERMES, false, "<tool_call>\nnot json\n</tool_call>",
     "<tool_call>\nnot json\n</tool_call>"},
    {SP_TOOLS_HERMES, false, "A <tool_call>{\"args\": 1}</tool_call> B",
     "A <tool_call>{\"args\": 1}</tool_call> B"},
    {SP_TOOLS_HERMES, false, "<tool_call>{\"name\": 3}", "<tool_call>{\"name\": 3}"},
    // After a call, what is not a call is not content; keys in any order; arguments as a
    // string; a call without arguments; other keys skipped.
    {SP_TOOLS_HERMES, false,
     "<tool_call>{\"arguments\": {\"x\": \"}\"}, \"id\": [1, {\"a\": 2}], \"name\": \"g\"}"
     "</tool_call>\nDone. <tool_call>{\"name\": \"h\", \"arguments\": \"{\\\"y\\\": 2}\"}"
     "</tool_call><tool_call>{\"name\": \"k\"}</tool_call><tool_call>oops",
     "=> g {\"x\": \"}\"}\n=> h {\"y\": 2}\n=> k {}"},
    // Llama 3.1: a JSON value that starts the output, or one after <|python_tag|>.
    {SP_TOOLS_LLAMA3, false,
     "\n{\"name\": \"weather\", \"parameters\": {\"city\": \"Oslo\", \"n\": -1.5e3}}",
     "=> weather {\"city\": \"Oslo\", \"n\": -1.5e3}"},
    {SP_TOOLS_LLAMA3, false, "Sure.<|python_tag|>{\"name\": \"f\", \"parameters\": 7}",
     "Sure.\n=> f 7"},
    {SP_TOOLS_LLAMA3, false, "{\"a\": 1} is JSON; {\"name\": \"f\"} too",
     "{\"a\": 1} is JSON; {\"name\": \"f\"} too"},
    {SP_TOOLS_LLAMA3, false, "Hello {\"name\": 1}", "Hello {\"name\": 1}"},
    // Llama 3.2's parallel calls, separated by ';'; after them, other text is no call.
    {SP_TOOLS_LLAMA3, false,
     "{\"name\": \"f\", \"parameters\": {\"a\": 1}}; {\"name\": \"g\", \"parameters\": {}};"
     "\n{\"name\": \"h\", \"parameters\": {\"b\": \";\"}} then {\"name\": \"k\"}",
     "=> f {\"a\": 1}\n=> g {}\n=> h {\"b\": \";\"}"},
    // Mistral: an array of calls after [TOOL_CALLS]; with in_call, the output starts inside.
    {SP_TOOLS_MISTRAL, false,
     "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", "
     "\"arguments\": {}}]",
     "=> a {\"x\": 1}\n=> b {}"},
    {SP_TOOLS_MISTRAL, true, "[{\"name\": \"a\", \"arguments\": {\"q\": [true, null]}}]",
     "=> a {\"q\": [true, null]}"},
    {SP_TOOLS_MISTRAL, false, "[{\"name\": \"a\", \"arguments\": {}}]", // no marker: content
     "[{\"name\": \"a\", \"arguments\": {}}]"},
    {SP_TOOLS_MISTRAL, false, "x [TOOL_CALLS] []", "x [TOOL_CALLS] []"},
};

/* Each output read whole and in pieces of every size up to 9 bytes gives what it should. */
static void test_read(void **st) {
    (void)st;
    for (size_t i = 0; i < SP_ARRAY_LEN(reads); i++)
        for (size_t piece = 0; piece < 10; piece++) {
            char got[1024];
            read_output(reads[i].f, reads[i].in_call, reads[i].output, piece, got, sizeof got);
            if (strcmp(got, reads[i].want))
                fail_msg("%s\nin pieces of %zu:\n got %s\nwant %s", reads[i].output, piece, got,
                         reads[i].want);
        }
}

/* The steps a stream gives for an output generated in pieces: "c:TEXT" content, "h:I:NAME" a
 * call's start, "a:I:TEXT" an argument fragment, joined by "|" per piece. */
static void check_steps(sp_tool_format f, const char *const *pieces, const char *const *want) {
    sp_tools_reader *r;
    assert_int_equal(sp_tools_reader_create(f, false, 7, &r), SP_OK);
    for (size_t i = 0; pieces[i]; i++) {
        assert_int_equal(sp_tools_reader_feed(r, pieces[i], strlen(pieces[i]), !pieces[i + 1]),
                         SP_OK);
        char got[256] = "";
        size_t n = 0;
        const sp_str c = sp_tools_reader_take_content(r);
        if (c.len)
            n += (size_t)snprintf(got + n, sizeof got - n, "c:%.*s|", (int)c.len, c.ptr);
        sp_tool_delta d;
        while (sp_tools_reader_next_delta(r, &d))
            n += d.id ? (size_t)snprintf(got + n, sizeof got - n, "h:%d:%s|", d.index, d.name)
                      : (size_t)snprintf(got + n, sizeof got - n, "a:%d:%.*s|", d.index,
                                         (int)d.args_len, d.args);
        if (n)
            got[n - 1] = '\0';
        if (strcmp(got, want[i]))
            fail_msg("after piece %zu '%s': got '%s', want '%s'", i, pieces[i], got, want[i]);
    }
    sp_tools_reader_destroy(r);
}

static void test_stream_steps(void **st) {
    (void)st;
    // Content until the marker (a possible marker and whitespace held until decided), then the
    // call's start as soon as its name is complete, then its arguments as they come.
    static const char *const pieces[] = {"Let me",
                                         " look",
                                         ".",
                                         " <",
                                         "tool",
                                         "_call",
                                         ">\n{\"",
                                         "name",
                                         "\":",
                                         " \"wea",
                                         "ther",
                                         "\",",
                                         " \"arguments",
                                         "\": {",
                                         "\"city",
                                         "\": \"",
                                         "Paris",
                                         "\"}}",
                                         "\n</tool_call>",
                                         "\n<tool_call>",
                                         "{\"name\": \"time\", \"arguments\": {\"tz\": 1}}",
                                         "</tool_call>",
                                         NULL};
    static const char *const want[] = {"c:Let me",
                                       "c: look",
                                       "c:.",
                                       "",
                                       "",
                                       "",
                                       "",
                                       "",
                                       "",
                                       "",
                                       "",
                                       "h:0:weather",
                                       "",
                                       "a:0:{",
                                       "a:0:\"city",
                                       "a:0:\": \"",
                                       "a:0:Paris",
                                       "a:0:\"}",
                                       "",
                                       "",
                                       "h:1:time|a:1:{\"tz\": 1}",
                                       ""};
    check_steps(SP_TOOLS_HERMES, pieces, want);
    // What only looked like a marker is content once decided; so is the held whitespace.
    static const char *const p2[] = {"Hi ", "\n", "<tool", "box> ", "ok", "  <", NULL};
    static const char *const w2[] = {"c:Hi", "", "", "c: \n<toolbox>", "c: ok", "c:  <"};
    check_steps(SP_TOOLS_HERMES, p2, w2);
    // Arguments that come before the name: given after the call's start.
    static const char *const p3[] = {"[TOOL_CALLS][{\"arguments\": {\"a\":", " 1}, \"name\": \"f\"",
                                     "}, {\"name\": \"g\"", "}]", NULL};
    static const char *const w3[] = {"", "h:0:f|a:0:{\"a\": 1}", "h:1:g", "a:1:{}"};
    check_steps(SP_TOOLS_MISTRAL, p3, w3);
}

/* The fuzz target's seeds (outputs of every format, read whole and in pieces) through it. */
static void test_replay_fuzz_corpus(void **st) {
    (void)st;
    sp_test_replay_corpus("fuzz_tools", LLVMFuzzerTestOneInput, 10, 0);
}

static const char tools_json[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"weather\", \"parameters\": {\"type\": "
    "\"object\", \"properties\": {\"city\": {\"type\": \"string\"}, \"days\": {\"type\": "
    "\"integer\", \"minimum\": 1, \"maximum\": 7}}, \"required\": [\"city\"]}}}, {\"type\": "
    "\"function\", \"function\": {\"name\": \"time\"}}]";

static bool forced_accepts(sp_tool_format f, const char *name, const char *text) {
    json_t *tools = json_loads(tools_json, 0, NULL);
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_tools_validate(tools, &d), SP_OK);
    sp_grammar *g;
    if (sp_tools_grammar(f, tools, name, &g, &d))
        fail_msg("%s", d.msg);
    sp_matcher *m;
    assert_int_equal(sp_matcher_create(g, &m), SP_OK);
    bool ok;
    assert_int_equal(sp_matcher_accept(m, (const uint8_t *)text, strlen(text), &ok), SP_OK);
    ok = ok && sp_matcher_complete(m);
    sp_matcher_destroy(m);
    sp_grammar_release(g);
    json_decref(tools);
    return ok;
}

static void test_forced_grammar(void **st) {
    (void)st;
    assert_true(forced_accepts(SP_TOOLS_HERMES, NULL,
                               "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": "
                               "\"Rome\", \"days\": 3}}\n</tool_call>"));
    assert_true(forced_accepts(SP_TOOLS_HERMES, NULL,
                               "<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n"
                               "</tool_call>"));
    assert_false(forced_accepts(SP_TOOLS_HERMES, NULL,
                                "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"days\": "
                                "3}}\n</tool_call>")); // city is required
    assert_false(forced_accepts(SP_TOOLS_HERMES, NULL,
                                "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": "
                                "\"Rome\", \"days\": 9}}\n</tool_call>")); // days <= 7
    assert_false(forced_accepts(SP_TOOLS_HERMES, NULL, "The weather is fine."));
    assert_false(forced_accepts(SP_TOOLS_HERMES, "time",
                                "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": "
                                "\"Rome\"}}\n</tool_call>")); // not the named one
    assert_true(forced_accepts(SP_TOOLS_LLAMA3, "weather",
                               "{\"name\": \"weather\", \"parameters\": {\"city\": \"Rome\"}}"));
    assert_true(
        forced_accepts(SP_TOOLS_MISTRAL, NULL, "[{\"name\": \"time\", \"arguments\": {}}]"));
    // Errors: a named tool that does not exist; tools that are not tools.
    json_t *tools = json_loads(tools_json, 0, NULL);
    sp_grammar *g = NULL;
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_tools_grammar(SP_TOOLS_HERMES, tools, "nope", &g, &d), SP_ERR_INVALID);
    assert_string_equal(d.param, "tool_choice");
    json_decref(tools);
    tools = json_loads("[{\"type\": \"function\", \"function\": {}}]", 0, NULL);
    assert_int_equal(sp_tools_validate(tools, &d), SP_ERR_INVALID);
    assert_string_equal(d.param, "tools");
    json_decref(tools);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),         cmocka_unit_test(test_read),
        cmocka_unit_test(test_stream_steps),   cmocka_unit_test(test_replay_fuzz_corpus),
        cmocka_unit_test(test_forced_grammar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
