/* Tool calls: the format of real chat templates; the calls parsed out of model outputs in each
 * format (with content around them, several at once, and outputs that only look like calls);
 * and the grammar of a forced call, which takes a call with valid arguments and nothing else. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

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

/* Parses text; returns the calls (or NULL) and checks the content. */
static json_t *parse(sp_tool_format f, const char *text, const char *want_content) {
    uint64_t seed = 1;
    char *content = (char *)"unset";
    json_t *calls = sp_tools_parse(f, text, strlen(text), &seed, &content);
    if (want_content)
        assert_string_equal(content ? content : "(null)", want_content);
    if (content != (char *)"unset")
        free(content);
    return calls;
}

static void check_call(json_t *calls, size_t i, const char *name, const char *args_json) {
    json_t *c = json_array_get(calls, i);
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "type")), "function");
    assert_non_null(strstr(json_string_value(json_object_get(c, "id")), "call_"));
    json_t *fn = json_object_get(c, "function");
    assert_string_equal(json_string_value(json_object_get(fn, "name")), name);
    json_t *got = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, NULL);
    json_t *want = json_loads(args_json, 0, NULL);
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(want);
}

static void test_parse(void **st) {
    (void)st;
    json_t *c = parse(SP_TOOLS_HERMES,
                      "Let me look.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": "
                      "{\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\": \"time\", "
                      "\"arguments\": {}}</tool_call>",
                      "Let me look.");
    assert_int_equal(json_array_size(c), 2);
    check_call(c, 0, "weather", "{\"city\": \"Paris\"}");
    check_call(c, 1, "time", "{}");
    assert_string_not_equal(json_string_value(json_object_get(json_array_get(c, 0), "id")),
                            json_string_value(json_object_get(json_array_get(c, 1), "id")));
    json_decref(c);
    c = parse(SP_TOOLS_HERMES, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1]}}",
              "(null)"); // cut short before the closing tag: still a call
    check_call(c, 0, "f", "{\"a\": [1]}");
    json_decref(c);
    assert_null(parse(SP_TOOLS_HERMES, "No tools needed: the answer is 4.", "(null)"));
    assert_null(parse(SP_TOOLS_HERMES, "<tool_call>\nnot json\n</tool_call>", "(null)"));
    assert_null(parse(SP_TOOLS_HERMES, "<tool_call>{\"args\": 1}</tool_call>", "(null)"));
    c = parse(SP_TOOLS_LLAMA3, "{\"name\": \"weather\", \"parameters\": {\"city\": \"Oslo\"}}",
              "(null)");
    check_call(c, 0, "weather", "{\"city\": \"Oslo\"}");
    json_decref(c);
    c = parse(SP_TOOLS_LLAMA3, "<|python_tag|>{\"name\": \"f\", \"parameters\": {}}", "(null)");
    check_call(c, 0, "f", "{}");
    json_decref(c);
    assert_null(parse(SP_TOOLS_LLAMA3, "Hello {\"name\": 1}", "(null)"));
    c = parse(SP_TOOLS_MISTRAL,
              "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", "
              "\"arguments\": {}}]",
              "(null)");
    assert_int_equal(json_array_size(c), 2);
    check_call(c, 0, "a", "{\"x\": 1}");
    check_call(c, 1, "b", "{}");
    json_decref(c);
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
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_forced_grammar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
