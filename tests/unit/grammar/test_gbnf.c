/* GBNF grammars: what each construct accepts and rejects, byte by byte and in pieces that split
 * characters; the errors a bad grammar gets, with their offsets; the built-in JSON grammar; and
 * repetitions that run in bounded memory. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "grammar/matcher.h"

static sp_grammar *compile(const char *text) {
    sp_grammar *g = NULL;
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = sp_grammar_from_gbnf(text, strlen(text), &g, &d);
    if (err)
        fail_msg("grammar rejected: %s\n%s", d.msg, text);
    return g;
}

/* Whether the whole of s is a sentence of the grammar; also fed one byte at a time, and as
 * a prefix check at every split. */
static bool matches(sp_grammar *g, const char *s, size_t n) {
    sp_matcher *m;
    assert_int_equal(sp_matcher_create(g, &m), SP_OK);
    bool ok = false;
    assert_int_equal(sp_matcher_allows(m, (const uint8_t *)s, n, &ok), SP_OK);
    const bool prefix_ok = ok;
    bool whole = true;
    for (size_t i = 0; i < n && whole; i++)
        assert_int_equal(sp_matcher_accept(m, (const uint8_t *)s + i, 1, &whole), SP_OK);
    assert_int_equal(whole, prefix_ok); // one call or byte by byte: the same
    const bool complete = whole && sp_matcher_complete(m);
    sp_matcher_destroy(m);
    return complete;
}

static bool is_prefix(sp_grammar *g, const char *s) {
    sp_matcher *m;
    assert_int_equal(sp_matcher_create(g, &m), SP_OK);
    bool ok = false;
    assert_int_equal(sp_matcher_accept(m, (const uint8_t *)s, strlen(s), &ok), SP_OK);
    sp_matcher_destroy(m);
    return ok;
}

#define ACCEPT(g, s) assert_true(matches((g), (s), sizeof(s) - 1))
#define REJECT(g, s) assert_false(matches((g), (s), sizeof(s) - 1))

static void test_literals_and_alternatives(void **st) {
    (void)st;
    sp_grammar *g = compile("root ::= \"abc\" | \"ab\" \"d\" | \"\"\n");
    ACCEPT(g, "abc");
    ACCEPT(g, "abd");
    ACCEPT(g, "");
    REJECT(g, "ab");
    REJECT(g, "abcd");
    REJECT(g, "x");
    assert_true(is_prefix(g, "ab"));
    assert_false(is_prefix(g, "ac"));
    sp_grammar_release(g);
}

static void test_repetitions(void **st) {
    (void)st;
    sp_grammar *g = compile("root ::= \"a\"{2,4} \"b\"* (\"cd\")+ \"e\"? \"f\"{2} \"g\"{1,}\n");
    ACCEPT(g, "aacdffg");
    ACCEPT(g, "aaaabbbcdcdeffggg");
    REJECT(g, "acdffg");     // one a
    REJECT(g, "aaaaacdffg"); // five
    REJECT(g, "aaffg");      // no cd
    REJECT(g, "aacdfg");     // one f
    REJECT(g, "aacdff");     // no g
    REJECT(g, "aacdceffg");  // half a cd
    sp_grammar_release(g);
    g = compile("root ::= [0-9]{0,3}\n");
    ACCEPT(g, "");
    ACCEPT(g, "123");
    REJECT(g, "1234");
    sp_grammar_release(g);
}

static void test_classes_and_unicode(void **st) {
    (void)st;
    sp_grammar *g = compile("root ::= [a-cx] [^a\\n]+ \".\"\n");
    ACCEPT(g, "ab.");
    ACCEPT(g, "x\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80."); // é € 😀
    REJECT(g, "aa.");
    REJECT(g, "d b.");
    REJECT(g, "a\n.");
    // Invalid UTF-8 is no character: an overlong encoding, a surrogate, a stray byte.
    REJECT(g, "a\xc0\x80.");
    REJECT(g, "a\xed\xa0\x80.");
    REJECT(g, "a\xff.");
    REJECT(g, "a\xc3.");
    sp_grammar_release(g);
    g = compile("root ::= [\\u4e00-\\u9fff]+ \" \" . \"\\x41\\u00e9\\U0001F600\"\n");
    ACCEPT(g, "\xe4\xb8\xad\xe6\x96\x87 zA\xc3\xa9\xf0\x9f\x98\x80");
    ACCEPT(g, "\xe4\xb8\xad \xf0\x9f\x98\x80"
              "A\xc3\xa9\xf0\x9f\x98\x80");
    REJECT(g, "ab zA\xc3\xa9\xf0\x9f\x98\x80");
    sp_grammar_release(g);
    // Every code point of a range that crosses encoded lengths and byte boundaries, and the
    // ones just outside it.
    g = compile("root ::= [\\u0070-\\u0801\\uFFF0-\\U00010010]\n");
    for (uint32_t cp = 0x60; cp < 0x10020; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF)
            continue;
        char u[4];
        size_t n;
        if (cp < 0x80)
            u[0] = (char)cp, n = 1;
        else if (cp < 0x800)
            u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), n = 2;
        else if (cp < 0x10000)
            u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 63)),
            u[2] = (char)(0x80 | (cp & 63)), n = 3;
        else
            u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 63)),
            u[2] = (char)(0x80 | ((cp >> 6) & 63)), u[3] = (char)(0x80 | (cp & 63)), n = 4;
        const bool want = (cp >= 0x70 && cp <= 0x801) || (cp >= 0xFFF0 && cp <= 0x10010);
        if (matches(g, u, n) != want)
            fail_msg("code point U+%04X: %s", cp, want ? "rejected" : "accepted");
        if (cp == 0x900)
            cp = 0xFFE0; // the middle of the BMP is the same case many times over
    }
    sp_grammar_release(g);
}

static void test_rules_groups_comments(void **st) {
    (void)st;
    sp_grammar *g = compile("# a list\n"
                            "root ::= item (\",\" ws item)*   # items\n"
                            "item ::= (\n"
                            "    \"x\" |\n"
                            "    \"[\" root \"]\"   # nested\n"
                            ")\n"
                            "ws ::= [ \\t]*\n");
    ACCEPT(g, "x");
    ACCEPT(g, "x, x,\tx");
    ACCEPT(g, "[x,[x, x]],x");
    REJECT(g, "x,");
    REJECT(g, "[x");
    sp_grammar_release(g);
}

static void check_error(const char *text, const char *msg_part, size_t offset) {
    sp_grammar *g = NULL;
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_grammar_from_gbnf(text, strlen(text), &g, &d), SP_ERR_INVALID);
    assert_null(g);
    if (!strstr(d.msg, msg_part) || (offset != SIZE_MAX && d.offset != offset))
        fail_msg("%s: got \"%s\" at %zu, want \"%s\" at %zu", text, d.msg, (size_t)d.offset,
                 msg_part, offset);
}

static void test_errors(void **st) {
    (void)st;
    check_error("root ::= foo\n", "'foo' is used but not defined", 9);
    check_error("main ::= \"a\"\n", "no 'root' rule", SIZE_MAX);
    check_error("root ::= \"a\"\nroot ::= \"b\"\n", "defined twice", 13);
    check_error("root ::= root \"a\" | \"b\"\n", "left-recursive", SIZE_MAX);
    check_error("root ::= x \"a\"\nx ::= \"\" | root\n", "left-recursive", SIZE_MAX);
    check_error("root ::= \"abc\n", "not closed", 9);
    check_error("root ::= (\"a\"\n", "not closed by ')'", 9);
    check_error("root ::= \"a\")\n", "')' without", 12);
    check_error("root ::= \"\\q\"\n", "unknown escape", 10);
    check_error("root ::= \"\\x4\"\n", "hex digits", 10);
    check_error("root ::= \"\xc3\x28\"\n", "invalid UTF-8", 10);
    check_error("root ::= []\n", "empty character class", 9);
    check_error("root ::= [z-a]\n", "out of order", 9);
    check_error("root ::= * \"a\"\n", "nothing to repeat", 9);
    check_error("root ::= \"a\"{3,2}\n", "n < m", 12);
    check_error("root ::= \"a\"{5000}\n", "above 4096", 12);
    check_error("root = \"a\"\n", "expected '::='", 5);
    check_error("root ::= \"a\" @\n", "unexpected character", 13);
    check_error("root ::= [^\\x00-\\U0010FFFF]\n", "matches no character", 9);
    char deep[400] = "root ::= ";
    for (int i = 0; i < 70; i++)
        strcat(deep, "(");
    strcat(deep, "\"a\"");
    for (int i = 0; i < 70; i++)
        strcat(deep, ")");
    strcat(deep, "\n");
    check_error(deep, "nested more than 64", 9 + 64);
}

static void test_json(void **st) {
    (void)st;
    sp_grammar *g;
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_grammar_json_object(&g, &d), SP_OK);
    ACCEPT(g, "{}");
    ACCEPT(g, " {\"a\": 1, \"b\": [true, false, null, -0.5e+10, \"x\\n\\u00e9\\\"\"], \"c\": {}}");
    ACCEPT(g, "{\n  \"k\": [\n    1,\n    {\"\xc3\xa9\": \"\xf0\x9f\x98\x80\"}\n  ]\n}");
    REJECT(g, "[]");          // an object
    REJECT(g, "{\"a\" 1}");   // no colon
    REJECT(g, "{\"a\": 01}"); // a leading zero
    REJECT(g, "{\"a\": 1,}"); // a trailing comma
    REJECT(g, "{\"a\": \"\x01\"}");
    REJECT(g, "{\"a\": \"\\x\"}");
    REJECT(g, "{\"a\": tru}");
    REJECT(g, "{} {}");
    // Deep nesting: the stack grows with the depth, and unwinds.
    char deep[2100] = "{\"a\":";
    for (int i = 0; i < 1000; i++)
        strcat(deep, "[");
    for (int i = 0; i < 1000; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    assert_true(matches(g, deep, strlen(deep)));
    deep[strlen(deep) - 2] = '}';
    assert_false(matches(g, deep, strlen(deep)));
    sp_grammar_release(g);
}

/* A repetition is a tail call: a long run takes no more nodes than a short one. */
static void test_repetition_memory(void **st) {
    (void)st;
    sp_grammar *g = compile("root ::= (\"ab\" | [0-9])* \";\"\n");
    sp_matcher *m;
    assert_int_equal(sp_matcher_create(g, &m), SP_OK);
    bool ok;
    assert_int_equal(sp_matcher_accept(m, (const uint8_t *)"ab1", 3, &ok), SP_OK);
    assert_true(ok);
    const uint32_t early = sp_matcher_n_nodes(m);
    for (int i = 0; i < 100000; i++) {
        assert_int_equal(
            sp_matcher_accept(m, (const uint8_t *)(i % 2 ? "ab" : "7"), i % 2 ? 2 : 1, &ok), SP_OK);
        assert_true(ok);
    }
    assert_true(sp_matcher_n_nodes(m) <= early + 16);
    assert_false(sp_matcher_complete(m));
    assert_int_equal(sp_matcher_accept(m, (const uint8_t *)";", 1, &ok), SP_OK);
    assert_true(ok && sp_matcher_complete(m) && !sp_matcher_can_continue(m));
    // A rejected token leaves the state as it was.
    assert_int_equal(sp_matcher_accept(m, (const uint8_t *)"a", 1, &ok), SP_OK);
    assert_false(ok);
    assert_true(sp_matcher_complete(m));
    sp_matcher_reset(m);
    assert_false(sp_matcher_complete(m));
    assert_true(sp_matcher_can_continue(m));
    sp_matcher_destroy(m);
    sp_grammar_release(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals_and_alternatives),
        cmocka_unit_test(test_repetitions),
        cmocka_unit_test(test_classes_and_unicode),
        cmocka_unit_test(test_rules_groups_comments),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_repetition_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
