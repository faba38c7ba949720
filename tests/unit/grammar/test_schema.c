/* JSON Schema to grammar: for each supported keyword, instances the schema accepts are sentences
 * of its grammar and instances it rejects are not (integer ranges checked exhaustively over a
 * window); unsupported keywords and bad values are errors that name them. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/matcher.h"
#include "grammar/schema.h"

static sp_grammar *compile(const char *schema_json) {
    json_error_t je;
    json_t *s = json_loads(schema_json, JSON_DECODE_ANY, &je);
    if (!s)
        fail_msg("bad test schema: %s: %s", schema_json, je.text);
    sp_grammar *g = NULL;
    sp_diag d;
    sp_diag_clear(&d);
    if (sp_grammar_from_json_schema(s, &g, &d) != SP_OK) {
        char *gbnf = NULL;
        if (sp_grammar_schema_gbnf(s, &gbnf, &d) == SP_OK)
            print_message("%s\n", gbnf);
        free(gbnf);
        fail_msg("schema rejected: %s: %s", schema_json, d.msg);
    }
    json_decref(s);
    return g;
}

static bool accepts(sp_grammar *g, const char *text) {
    sp_matcher *m;
    assert_int_equal(sp_matcher_create(g, &m), SP_OK);
    bool ok = false;
    assert_int_equal(sp_matcher_accept(m, (const uint8_t *)text, strlen(text), &ok), SP_OK);
    ok = ok && sp_matcher_complete(m);
    sp_matcher_destroy(m);
    return ok;
}

#define YES(g, t)                                                                                  \
    do {                                                                                           \
        if (!accepts((g), (t)))                                                                    \
            fail_msg("rejected but valid: %s", (t));                                               \
    } while (0)
#define NO(g, t)                                                                                   \
    do {                                                                                           \
        if (accepts((g), (t)))                                                                     \
            fail_msg("accepted but invalid: %s", (t));                                             \
    } while (0)

static void test_objects(void **st) {
    (void)st;
    sp_grammar *g = compile("{\"type\": \"object\", \"properties\": {\"name\": {\"type\": "
                            "\"string\"}, \"age\": {\"type\": \"integer\"}, \"ok\": {\"type\": "
                            "\"boolean\"}}, \"required\": [\"name\", \"ok\"]}");
    YES(g, "{\"name\": \"x\", \"age\": 3, \"ok\": true}");
    YES(g, "{\"name\":\"x\",\"ok\":false}");
    YES(g, " {\n  \"name\": \"\\u00e9\\\"\",\n  \"ok\": true\n}");
    NO(g, "{\"age\": 3, \"ok\": true}");                    // name is required
    NO(g, "{\"name\": \"x\"}");                             // so is ok
    NO(g, "{\"name\": \"x\", \"ok\": true, \"z\": 1}");     // no additional properties
    NO(g, "{\"name\": 1, \"ok\": true}");                   // a string
    NO(g, "{\"name\": \"x\", \"age\": 1.5, \"ok\": true}"); // an integer
    NO(g, "{\"name\": \"x\", \"ok\": true,}");
    sp_grammar_release(g);
    // Other keys allowed, never the listed ones again.
    g = compile("{\"properties\": {\"name\": {\"const\": \"a\"}}, \"additionalProperties\": "
                "{\"type\": \"number\"}}");
    YES(g, "{}");
    YES(g, "{\"name\": \"a\", \"nam\": 1, \"names\": 2.5, \"x\": -1}");
    YES(g, "{\"zzz\": 1}");
    NO(g, "{\"name\": \"a\", \"name\": 2}");
    NO(g, "{\"name\": \"a\", \"x\": \"s\"}");
    sp_grammar_release(g);
    g = compile("{\"type\": \"object\", \"additionalProperties\": true}");
    YES(g, "{\"a\": [1, {\"b\": null}], \"c\": \"d\"}");
    sp_grammar_release(g);
}

static void test_values(void **st) {
    (void)st;
    sp_grammar *g = compile("{\"enum\": [\"red\", 7, null, {\"a\": [true]}]}");
    YES(g, "\"red\"");
    YES(g, "7");
    YES(g, "null");
    YES(g, "{\"a\":[true]}");
    NO(g, "\"blue\"");
    NO(g, "8");
    sp_grammar_release(g);
    g = compile("{\"anyOf\": [{\"type\": \"string\", \"maxLength\": 2}, {\"type\": \"integer\"}]}");
    YES(g, "\"ab\"");
    YES(g, "-12");
    NO(g, "\"abc\"");
    NO(g, "true");
    sp_grammar_release(g);
    g = compile("{\"type\": [\"number\", \"null\"]}");
    YES(g, "-0.5e3");
    YES(g, "null");
    NO(g, "\"1\"");
    sp_grammar_release(g);
    g = compile("{}");
    YES(g, "[1, \"a\", {\"b\": false}]");
    sp_grammar_release(g);
}

/* enum and const take every spelling of their values that JSON writers write: characters as
 * themselves or escaped (either hex case, surrogate pairs), the short escapes, reals in their
 * shortest exact form, integers with a zero fraction, blanks inside arrays and objects. */
static void test_value_spellings(void **st) {
    (void)st;
    sp_grammar *g = compile("{\"enum\": [\"\u00b0C\", \"a/b\", \"tab\\there\", "
                            "\"\\\"q\\\"\", \"\U0001F600\"]}");
    YES(g, "\"\u00b0C\"");
    YES(g, "\"\\u00b0C\"");
    YES(g, "\"\\u00B0C\"");
    YES(g, "\"a/b\"");
    YES(g, "\"a\\/b\"");
    YES(g, "\"tab\\there\"");
    YES(g, "\"tab\\u0009here\"");
    YES(g, "\"\\\"q\\u0022\"");
    YES(g, "\"\U0001F600\"");
    YES(g, "\"\\ud83d\\ude00\"");
    NO(g, "\"\u00b0F\"");
    NO(g, "\"tab\there\""); // (a raw tab is not JSON)
    NO(g, "\"\\u00b0\"");
    sp_grammar_release(g);
    g = compile("{\"enum\": [0.1, 0.06, 1e20, 1, [1, 2], {\"a\": 1, \"b\": [true]}]}");
    YES(g, "0.1");
    YES(g, "0.06");
    YES(g, "1e+20");
    YES(g, "1");
    YES(g, "1.0");
    YES(g, "[1,2]");
    YES(g, "[ 1, 2 ]");
    YES(g, "{\"a\": 1, \"b\": [ true ]}");
    NO(g, "0.10000000000000001");
    NO(g, "0.2");
    NO(g, "[2, 1]");
    NO(g, "{\"a\": 2, \"b\": [true]}");
    sp_grammar_release(g);
    g = compile("{\"const\": \"Z\u00fcrich\"}");
    YES(g, "\"Z\u00fcrich\"");
    YES(g, "\"Z\\u00fcrich\"");
    sp_grammar_release(g);
}

static void test_integer_ranges(void **st) {
    (void)st;
    static const char *const bounds[][2] = {{"5", "123"}, {"-20", "-3"}, {"-150", "250"},
                                            {"0", NULL},  {NULL, "-1"},  {"100", "100"},
                                            {"-9", "9"}};
    for (size_t b = 0; b < sizeof bounds / sizeof *bounds; b++) {
        char schema[256] = "{\"type\": \"integer\"";
        if (bounds[b][0])
            snprintf(schema + strlen(schema), 64, ", \"minimum\": %s", bounds[b][0]);
        if (bounds[b][1])
            snprintf(schema + strlen(schema), 64, ", \"maximum\": %s", bounds[b][1]);
        strcat(schema, "}");
        sp_grammar *g = compile(schema);
        const long lo = bounds[b][0] ? atol(bounds[b][0]) : -1000000;
        const long hi = bounds[b][1] ? atol(bounds[b][1]) : 1000000;
        for (long v = -400; v <= 400; v++) {
            char text[32];
            snprintf(text, sizeof text, "%ld", v);
            if (accepts(g, text) != (v >= lo && v <= hi))
                fail_msg("%s: %ld %s", schema, v, v >= lo && v <= hi ? "rejected" : "accepted");
        }
        NO(g, "007");
        NO(g, "-0");
        if (!bounds[b][1])
            YES(g, "123456789012");
        sp_grammar_release(g);
    }
    sp_grammar *g = compile("{\"type\": \"integer\", \"exclusiveMinimum\": 0, "
                            "\"exclusiveMaximum\": 10}");
    NO(g, "0");
    YES(g, "1");
    YES(g, "9");
    NO(g, "10");
    sp_grammar_release(g);
}

static void test_strings(void **st) {
    (void)st;
    sp_grammar *g = compile("{\"type\": \"string\", \"minLength\": 1, \"maxLength\": 3}");
    YES(g, "\"a\"");
    YES(g, "\"\\n\\u00e9\\\"\""); // escapes are one character each
    YES(g, "\"\xe2\x82\xac\xe2\x82\xac\"");
    NO(g, "\"\"");
    NO(g, "\"abcd\"");
    sp_grammar_release(g);
    g = compile("{\"type\": \"string\", \"pattern\": \"^[a-z]+-\\\\d{2}(x|yz)?$\"}");
    YES(g, "\"abc-12\"");
    YES(g, "\"q-00yz\"");
    NO(g, "\"abc-1\"");
    NO(g, "\"ABC-12\"");
    NO(g, "\"abc-12y\"");
    sp_grammar_release(g);
    g = compile("{\"type\": \"string\", \"pattern\": \"fo+\\\\.\"}"); // unanchored
    YES(g, "\"xx foo. yy\"");
    YES(g, "\"fo.\"");
    NO(g, "\"f.\"");
    sp_grammar_release(g);
    g = compile("{\"type\": \"string\", \"pattern\": \"^a\\\"[^b]\\\\S$\"}");
    YES(g, "\"a\\\"cd\"");
    YES(g, "\"a\\\"\\\"d\"");
    NO(g, "\"a\\\"bd\"");
    NO(g, "\"a\\\"c \"");
    sp_grammar_release(g);
    g = compile("{\"type\": \"string\", \"format\": \"date-time\"}");
    YES(g, "\"2024-02-29T23:59:59Z\"");
    YES(g, "\"1999-12-31T00:00:00.123+05:30\"");
    NO(g, "\"2024-13-01T00:00:00Z\"");
    NO(g, "\"2024-02-29\"");
    sp_grammar_release(g);
    g = compile("{\"type\": \"string\", \"format\": \"uuid\"}");
    YES(g, "\"123e4567-e89b-12d3-a456-426614174000\"");
    NO(g, "\"123e4567e89b12d3a456426614174000\"");
    sp_grammar_release(g);
}

static void test_arrays(void **st) {
    (void)st;
    sp_grammar *g = compile("{\"type\": \"array\", \"items\": {\"type\": \"integer\"}, "
                            "\"minItems\": 2, \"maxItems\": 3}");
    YES(g, "[1, 2]");
    YES(g, "[1,2,3]");
    NO(g, "[1]");
    NO(g, "[1, 2, 3, 4]");
    NO(g, "[1, \"2\"]");
    sp_grammar_release(g);
    g = compile("{\"type\": \"array\", \"prefixItems\": [{\"type\": \"string\"}, {\"type\": "
                "\"integer\"}], \"items\": {\"type\": \"boolean\"}, \"maxItems\": 3}");
    YES(g, "[\"a\", 1]");
    YES(g, "[\"a\", 1, true]");
    NO(g, "[\"a\"]");
    NO(g, "[\"a\", 1, true, false]");
    sp_grammar_release(g);
    g = compile("{\"type\": \"array\"}");
    YES(g, "[]");
    YES(g, "[[], {}, 1]");
    sp_grammar_release(g);
}

static void test_refs(void **st) {
    (void)st;
    sp_grammar *g =
        compile("{\"$defs\": {\"node\": {\"type\": \"object\", \"properties\": {\"v\": {\"type\": "
                "\"integer\"}, \"kids\": {\"type\": \"array\", \"items\": {\"$ref\": "
                "\"#/$defs/node\"}}}, \"required\": [\"v\"]}}, \"$ref\": \"#/$defs/node\"}");
    YES(g, "{\"v\": 1, \"kids\": [{\"v\": 2}, {\"v\": 3, \"kids\": [{\"v\": 4}]}]}");
    NO(g, "{\"v\": 1, \"kids\": [{\"kids\": []}]}");
    sp_grammar_release(g);
}

static void check_error(const char *schema_json, const char *param, const char *msg_part) {
    json_t *s = json_loads(schema_json, JSON_DECODE_ANY, NULL);
    assert_non_null(s);
    sp_grammar *g = NULL;
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_grammar_from_json_schema(s, &g, &d), SP_ERR_INVALID);
    assert_null(g);
    if (strcmp(d.param, param) || !strstr(d.msg, msg_part))
        fail_msg("%s: got %s: \"%s\"; want %s: \"%s\"", schema_json, d.param, d.msg, param,
                 msg_part);
    json_decref(s);
}

static void test_errors(void **st) {
    (void)st;
    check_error("{\"allOf\": [{}]}", "allOf", "unsupported keyword 'allOf'");
    check_error("{\"properties\": {\"a\": {\"type\": \"string\", \"format\": \"email\"}}}",
                "format", "/properties/a");
    check_error("{\"type\": \"number\", \"minimum\": 1}", "minimum", "integers only");
    check_error("{\"$ref\": \"#/$defs/missing\"}", "$ref", "does not point");
    check_error("{\"type\": \"string\", \"pattern\": \"^(?=a)\"}", "pattern", "lookaround");
    check_error("{\"type\": \"string\", \"pattern\": \"(a)\\\\1\"}", "pattern", "back-reference");
    check_error("{\"properties\": {\"a\": {}}, \"required\": [\"b\"]}", "required", "'b'");
    check_error("{\"type\": \"integer\", \"minimum\": 5, \"maximum\": 4}", "minimum", "no integer");
    check_error("{\"type\": \"strin\"}", "type", "unknown type");
    check_error("false", "schema", "allows no value");
    check_error("{\"type\": \"array\", \"minItems\": -1}", "minItems", "minItems");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objects),        cmocka_unit_test(test_values),
        cmocka_unit_test(test_value_spellings),
        cmocka_unit_test(test_integer_ranges), cmocka_unit_test(test_strings),
        cmocka_unit_test(test_arrays),         cmocka_unit_test(test_refs),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
