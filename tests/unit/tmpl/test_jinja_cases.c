/* The language, piece by piece, against the reference engine: jinja_cases.json holds
 * templates and contexts rendered by Python's Jinja2 set up as transformers sets it up
 * (gen_jinja_cases.py), including the shared model templates with tools and tool calls.
 * Each must render byte for byte, or fail with the same message (any failure where the
 * reference's message is a CPython detail). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tmpl/tmpl.h"

#define MIN_SZ(a, b) ((size_t)(a) < (size_t)(b) ? (size_t)(a) : (size_t)(b))

static char *case_file(void) {
    const char *src = getenv("SP_SOURCE_DIR");
    char *p = malloc(4096);
    assert_non_null(p);
    snprintf(p, 4096, "%s/tests/unit/tmpl/jinja_cases.json", src ? src : ".");
    return p;
}

static sp_tmpl *compile_case(json_t *c, sp_err *err, sp_diag *d) {
    const char *file = json_string_value(json_object_get(c, "template_file"));
    char *src;
    size_t len;
    if (file) {
        char rel[256];
        snprintf(rel, sizeof rel, "templates/%s", file);
        char *path = sp_test_shared(rel);
        src = sp_test_read_file(path, &len);
        free(path);
    } else {
        json_t *t = json_object_get(c, "template");
        assert_non_null(t);
        len = json_string_length(t);
        src = malloc(len + 1);
        assert_non_null(src);
        memcpy(src, json_string_value(t), len + 1);
    }
    sp_tmpl *t = NULL;
    *err = sp_tmpl_compile(src, len, &t, d);
    free(src);
    return t;
}

static void test_reference_cases(void **state) {
    (void)state;
    // The reference's strftime_now formats in UTC.
    setenv("TZ", "UTC", 1);
    tzset();
    char *path = case_file();
    json_t *root = sp_test_load_json(path);
    free(path);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) > 100);
    sp_tmpl_limits lim = {.now_unix_s = json_integer_value(json_object_get(root, "now_unix_s"))};
    int failures = 0, passed = 0;
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        json_t *want = json_object_get(c, "expected");
        const char *want_err = json_string_value(json_object_get(c, "error"));
        bool any_err = json_is_true(json_object_get(c, "error_any"));
        sp_diag d;
        sp_err e;
        char *out = NULL;
        size_t n = 0;
        sp_tmpl *t = compile_case(c, &e, &d);
        if (!e)
            e = sp_tmpl_render(t, json_object_get(c, "context"), &lim, &out, &n, &d);
        bool ok;
        if (want) {
            ok = e == SP_OK && n == json_string_length(want) &&
                 memcmp(out, json_string_value(want), n) == 0;
            if (e) {
                fprintf(stderr, "%s: error %s: %s\n", name, sp_err_str(e), d.msg);
            } else if (!ok) {
                const char *w = json_string_value(want);
                size_t wn = json_string_length(want), k = 0;
                while (k < wn && k < n && w[k] == out[k])
                    k++;
                size_t from = k > 30 ? k - 30 : 0;
                fprintf(stderr, "%s: differs at byte %zu\n  want: %.*s\n  got:  %.*s\n", name, k,
                        (int)MIN_SZ(wn - from, 100), w + from,
                        (int)MIN_SZ(n > from ? n - from : 0, 100), out + from);
            }
        } else {
            // raise_exception must come back as SP_ERR_INVALID, runaway recursion as a limit,
            // everything else as a template error.
            assert_non_null(want_err);
            const char *kind = json_string_value(json_object_get(c, "error_kind"));
            assert_non_null(kind);
            sp_err want_e = strcmp(kind, "raise") == 0       ? SP_ERR_INVALID
                            : strcmp(kind, "recursion") == 0 ? SP_ERR_LIMIT
                                                             : SP_ERR_FORMAT;
            ok = (e == want_e || (want_e == SP_ERR_FORMAT && e == SP_ERR_UNSUPPORTED)) &&
                 (any_err || want_e == SP_ERR_LIMIT || strcmp(d.msg, want_err) == 0);
            if (!ok)
                fprintf(stderr, "%s: want error \"%s\", got %s \"%s\"\n", name, want_err,
                        sp_err_str(e), e ? d.msg : (out ? out : ""));
        }
        failures += !ok;
        passed += ok;
        free(out);
        sp_tmpl_destroy(t);
    }
    fprintf(stderr, "jinja_cases.json: %d of %zu cases pass\n", passed, json_array_size(cases));
    json_decref(root);
    assert_int_equal(failures, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
