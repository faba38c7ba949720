/* Every case of shared/templates/expected.json (renderings of real chat templates by Python's
 * Jinja2 with trim_blocks and lstrip_blocks, or the error they raise) must come out byte for
 * byte, or fail with the recorded message. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tmpl/tmpl.h"

#define MIN_SZ(a, b) ((size_t)(a) < (size_t)(b) ? (size_t)(a) : (size_t)(b))

/* The reference renderings were made on 15 Jan 2026 (Llama 3.2 prints strftime_now's date);
 * noon UTC gives that day in every time zone within 12 hours of UTC. */
static int64_t reference_day(void) {
    struct tm tm = {.tm_year = 2026 - 1900, .tm_mon = 0, .tm_mday = 15, .tm_hour = 12};
    return (int64_t)timegm(&tm);
}

static sp_tmpl *load_template(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "templates/%s", name);
    char *path = sp_test_shared(rel);
    size_t len;
    char *src = sp_test_read_file(path, &len);
    sp_tmpl *t = NULL;
    sp_diag d;
    sp_err e = sp_tmpl_compile(src, len, &t, &d);
    if (e)
        fail_msg("%s does not compile: %s (%s)", name, d.msg, sp_err_str(e));
    free(src);
    free(path);
    return t;
}

/* Prints where two renderings part. */
static void show_diff(const char *name, const char *want, size_t want_n, const char *got,
                      size_t got_n) {
    size_t i = 0;
    while (i < want_n && i < got_n && want[i] == got[i])
        i++;
    size_t from = i > 40 ? i - 40 : 0;
    fprintf(stderr, "%s: differs at byte %zu (lengths %zu, %zu)\n  want: %.*s\n  got:  %.*s\n", name,
            i, want_n, got_n, (int)MIN_SZ(want_n - from, 120), want + from,
            (int)MIN_SZ(got_n > from ? got_n - from : 0, 120), got + from);
}

static void test_expected_cases(void **state) {
    (void)state;
    char *path = sp_test_shared("templates/expected.json");
    json_t *root = sp_test_load_json(path);
    free(path);
    const char *bos = json_string_value(json_object_get(root, "bos_token"));
    const char *eos = json_string_value(json_object_get(root, "eos_token"));
    json_t *convs = json_object_get(root, "conversations");
    json_t *cases = json_object_get(root, "cases");
    assert_non_null(bos);
    assert_non_null(eos);
    assert_true(json_is_array(cases) && json_array_size(cases) > 0);
    sp_tmpl_limits lim = {.now_unix_s = reference_day()};
    int failures = 0, passed = 0;
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *tname = json_string_value(json_object_get(c, "template"));
        const char *cname = json_string_value(json_object_get(c, "conversation"));
        json_t *msgs = json_object_get(convs, cname);
        bool agp = json_is_true(json_object_get(c, "add_generation_prompt"));
        json_t *want = json_object_get(c, "expected");
        json_t *want_err = json_object_get(c, "error");
        assert_non_null(tname);
        assert_non_null(msgs);
        char label[256];
        snprintf(label, sizeof label, "%s / %s / agp=%d", tname, cname, agp);
        sp_tmpl *t = load_template(tname);
        char *out = NULL;
        size_t out_n = 0;
        sp_diag d;
        sp_err e = sp_chat_render(t, msgs, NULL, bos, eos, agp, &lim, &out, &out_n, &d);
        bool ok;
        if (want) {
            ok = e == SP_OK && out_n == json_string_length(want) &&
                 memcmp(out, json_string_value(want), out_n) == 0;
            if (e)
                fprintf(stderr, "%s: error %s: %s\n", label, sp_err_str(e), d.msg);
            else if (!ok)
                show_diff(label, json_string_value(want), json_string_length(want), out, out_n);
        } else {
            assert_non_null(want_err);
            ok = e != SP_OK && strcmp(d.msg, json_string_value(want_err)) == 0;
            if (!ok)
                fprintf(stderr, "%s: want error \"%s\", got %s \"%s\"\n", label,
                        json_string_value(want_err), sp_err_str(e), e ? d.msg : "");
        }
        failures += !ok;
        passed += ok;
        free(out);
        sp_tmpl_destroy(t);
    }
    fprintf(stderr, "expected.json: %d of %zu cases pass\n", passed, json_array_size(cases));
    json_decref(root);
    assert_int_equal(failures, 0);
}

/* raise_exception's message comes back exactly, with SP_ERR_INVALID. */
static void test_raise_is_invalid(void **state) {
    (void)state;
    sp_tmpl *t = load_template("google-gemma-2-2b-it.jinja");
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "system", "content", "x");
    char *out = NULL;
    size_t n;
    sp_diag d;
    assert_int_equal(sp_chat_render(t, msgs, NULL, "<s>", "</s>", true, NULL, &out, &n, &d),
                     SP_ERR_INVALID);
    assert_string_equal(d.msg, "System role not supported");
    assert_null(out);
    json_decref(msgs);
    sp_tmpl_destroy(t);
}

/* The built-in ChatML template renders like Qwen2.5's template when a system message is
 * present (Qwen adds its own system prompt otherwise). */
static void test_chatml_default(void **state) {
    (void)state;
    char *path = sp_test_shared("templates/expected.json");
    json_t *root = sp_test_load_json(path);
    free(path);
    json_t *convs = json_object_get(root, "conversations");
    size_t i, checked = 0;
    json_t *c;
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        const char *tname = json_string_value(json_object_get(c, "template"));
        const char *cname = json_string_value(json_object_get(c, "conversation"));
        json_t *msgs = json_object_get(convs, cname);
        if (strcmp(tname, "Qwen-Qwen2.5-7B-Instruct.jinja") != 0)
            continue;
        const char *role = json_string_value(json_object_get(json_array_get(msgs, 0), "role"));
        if (strcmp(role, "system") != 0)
            continue;
        bool agp = json_is_true(json_object_get(c, "add_generation_prompt"));
        char *out = NULL;
        size_t n = 0;
        sp_diag d;
        assert_int_equal(sp_chat_render(NULL, msgs, NULL, NULL, NULL, agp, NULL, &out, &n, &d),
                         SP_OK);
        assert_string_equal(out, json_string_value(json_object_get(c, "expected")));
        free(out);
        checked++;
    }
    assert_true(checked >= 4);
    json_decref(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expected_cases),
        cmocka_unit_test(test_raise_is_invalid),
        cmocka_unit_test(test_chatml_default),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
