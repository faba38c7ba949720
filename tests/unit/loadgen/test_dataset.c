#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "loadgen/dataset.h"

static const char *const k_words[] = {"the", "a", "dog", "cat", "ran", "sat", "big", "red"};
static const sp_lg_words k_w = {k_words, 8};

/* Splits on single spaces; checks every word is in the pool; returns the count. */
static int count_words(const char *s) {
    if (!*s)
        return 0;
    int n = 0;
    const char *p = s;
    for (;;) {
        const char *sp = strchr(p, ' ');
        size_t l = sp ? (size_t)(sp - p) : strlen(p);
        bool known = false;
        for (int i = 0; i < k_w.n; i++)
            known |= strlen(k_words[i]) == l && !strncmp(k_words[i], p, l);
        if (!known)
            fail_msg("unknown word in '%.40s'", p);
        n++;
        if (!sp)
            break;
        p = sp + 1;
    }
    return n;
}

static void test_random_lengths(void **state) {
    (void)state;
    sp_lg_ds_opts o = {.kind = SP_LG_DS_RANDOM,
                       .num_prompts = 500,
                       .input_len = 100,
                       .output_len = 20,
                       .range_ratio = 0.5,
                       .seed = 3};
    sp_lg_dataset ds, ds2, ds3;
    sp_diag d;
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds, &d), SP_OK);
    assert_int_equal(ds.n, 500);
    int min_in = 1 << 30, max_in = 0, min_out = 1 << 30, max_out = 0;
    for (size_t i = 0; i < ds.n; i++) {
        const sp_lg_item *it = &ds.items[i];
        int n = count_words(it->prompt);
        assert_int_equal(n, it->n_words);
        assert_true(n >= 50 && n <= 150);
        assert_true(it->output_len >= 10 && it->output_len <= 30);
        assert_null(it->system);
        assert_true(it->session == -1 && it->group == -1 && it->t_arrival_s < 0);
        min_in = SP_MIN(min_in, n);
        max_in = SP_MAX(max_in, n);
        min_out = SP_MIN(min_out, it->output_len);
        max_out = SP_MAX(max_out, it->output_len);
    }
    // Uniform over the range: 500 draws reach close to both ends.
    assert_true(min_in <= 53 && max_in >= 147 && min_out <= 11 && max_out >= 29);
    // The seed decides everything.
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds2, &d), SP_OK);
    o.seed = 4;
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds3, &d), SP_OK);
    int differ = 0;
    for (size_t i = 0; i < ds.n; i++) {
        assert_string_equal(ds.items[i].prompt, ds2.items[i].prompt);
        assert_int_equal(ds.items[i].output_len, ds2.items[i].output_len);
        differ += strcmp(ds.items[i].prompt, ds3.items[i].prompt) != 0;
    }
    assert_true(differ > 490);
    sp_lg_dataset_free(&ds);
    sp_lg_dataset_free(&ds2);
    sp_lg_dataset_free(&ds3);
    // Range ratio 0: exact lengths.
    o.range_ratio = 0;
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds, &d), SP_OK);
    for (size_t i = 0; i < ds.n; i++)
        assert_true(count_words(ds.items[i].prompt) == 100 && ds.items[i].output_len == 20);
    sp_lg_dataset_free(&ds);
    // Bad options.
    o.range_ratio = 1.0;
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds, &d), SP_ERR_INVALID);
    o.range_ratio = 0;
    o.num_prompts = 0;
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds, &d), SP_ERR_INVALID);
}

static void test_shared_prefix(void **state) {
    (void)state;
    sp_lg_ds_opts o = {.kind = SP_LG_DS_SHARED_PREFIX,
                       .num_prompts = 40,
                       .input_len = 20,
                       .output_len = 8,
                       .shared_prefix_len = 64,
                       .num_groups = 4,
                       .seed = 9};
    sp_lg_dataset ds;
    sp_diag d;
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds, &d), SP_OK);
    const char *prefix[4] = {0};
    int per_group[4] = {0};
    for (size_t i = 0; i < ds.n; i++) {
        const sp_lg_item *it = &ds.items[i];
        assert_true(it->group >= 0 && it->group < 4);
        per_group[it->group]++;
        assert_int_equal(count_words(it->system), 64);
        assert_int_equal(count_words(it->prompt), 20);
        assert_int_equal(it->n_words, 84);
        if (!prefix[it->group])
            prefix[it->group] = it->system;
        assert_string_equal(it->system, prefix[it->group]); // really shared
        for (size_t j = 0; j < i; j++)                      // suffixes unique
            assert_string_not_equal(it->prompt, ds.items[j].prompt);
    }
    for (int g = 0; g < 4; g++) {
        assert_int_equal(per_group[g], 10);
        for (int h = 0; h < g; h++)
            assert_string_not_equal(prefix[g], prefix[h]);
    }
    // Groups interleave (shuffled), not in blocks.
    int changes = 0;
    for (size_t i = 1; i < ds.n; i++)
        changes += ds.items[i].group != ds.items[i - 1].group;
    assert_true(changes > 10);
    // The completions prompt is the prefix, a space, then the suffix.
    sp_lg_body_opts bo = {.chat = false, .model = "m", .ignore_eos = true, .temperature = -1};
    char *body;
    assert_int_equal(sp_lg_build_body(&bo, &ds.items[0], NULL, &body), SP_OK);
    json_t *j = json_loads(body, 0, NULL);
    char want[4096];
    snprintf(want, sizeof want, "%s %s", ds.items[0].system, ds.items[0].prompt);
    assert_string_equal(json_string_value(json_object_get(j, "prompt")), want);
    assert_null(json_object_get(j, "deadline_ms")); // only when asked for
    json_decref(j);
    free(body);
    bo.deadline_ms = 2000;
    assert_int_equal(sp_lg_build_body(&bo, &ds.items[0], NULL, &body), SP_OK);
    j = json_loads(body, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "deadline_ms")), 2000);
    json_decref(j);
    free(body);
    bo.deadline_ms = 0;
    // For chat: a system message and a user message.
    bo.chat = true;
    assert_int_equal(sp_lg_build_body(&bo, &ds.items[0], NULL, &body), SP_OK);
    j = json_loads(body, 0, NULL);
    json_t *msgs = json_object_get(j, "messages");
    assert_int_equal(json_array_size(msgs), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 0), "role")),
                        "system");
    assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 0), "content")),
                        ds.items[0].system);
    json_decref(j);
    free(body);
    sp_lg_dataset_free(&ds);
}

static void test_multi_turn(void **state) {
    (void)state;
    sp_lg_ds_opts o = {.kind = SP_LG_DS_MULTI_TURN,
                       .num_prompts = 10,
                       .input_len = 12,
                       .output_len = 5,
                       .turns = 4,
                       .seed = 1};
    sp_lg_dataset ds;
    sp_diag d;
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds, &d), SP_OK);
    assert_int_equal(ds.n_sessions, 3); // 4 + 4 + 2 turns
    for (size_t i = 0; i < ds.n; i++) {
        assert_int_equal(ds.items[i].session, (int)(i / 4));
        assert_int_equal(ds.items[i].turn, (int)(i % 4));
        assert_int_equal(count_words(ds.items[i].prompt), 12);
    }
    // Each turn's prompt holds every previous prompt and completion, in order, and grows.
    for (int chat = 0; chat < 2; chat++) {
        sp_lg_body_opts bo = {.chat = chat, .ignore_eos = true, .temperature = 0};
        sp_lg_history h = {0};
        size_t prev_len = 0;
        for (int t = 0; t < 4; t++) {
            const sp_lg_item *it = &ds.items[t];
            char *body;
            assert_int_equal(sp_lg_build_body(&bo, it, &h, &body), SP_OK);
            json_t *j = json_loads(body, 0, NULL);
            assert_non_null(j);
            assert_string_equal(json_string_value(json_object_get(j, "user")), "session-0");
            assert_true(json_is_true(json_object_get(j, "stream")));
            assert_true(json_is_true(
                json_object_get(json_object_get(j, "stream_options"), "include_usage")));
            assert_true(json_is_true(json_object_get(j, "ignore_eos")));
            assert_null(json_object_get(j, "model"));
            assert_true(json_real_value(json_object_get(j, "temperature")) == 0.0);
            if (chat) {
                json_t *msgs = json_object_get(j, "messages");
                assert_int_equal(json_array_size(msgs), 2 * t + 1);
                for (int k = 0; k < t; k++) {
                    assert_string_equal(
                        json_string_value(json_object_get(json_array_get(msgs, 2 * k), "content")),
                        ds.items[k].prompt);
                    assert_string_equal(
                        json_string_value(json_object_get(json_array_get(msgs, 2 * k + 1), "role")),
                        "assistant");
                }
                assert_int_equal(json_integer_value(json_object_get(j, "max_completion_tokens")),
                                 5);
            } else {
                const char *p = json_string_value(json_object_get(j, "prompt"));
                size_t len = strlen(p);
                assert_true(len > prev_len);
                prev_len = len;
                const char *at = p;
                for (int k = 0; k < t; k++) { // in order
                    at = strstr(at, ds.items[k].prompt);
                    assert_non_null(at);
                    char reply[32];
                    snprintf(reply, sizeof reply, "reply%d", k);
                    at = strstr(at, reply);
                    assert_non_null(at);
                }
                assert_non_null(strstr(at, it->prompt));
                assert_int_equal(json_integer_value(json_object_get(j, "max_tokens")), 5);
            }
            json_decref(j);
            free(body);
            char reply[32];
            snprintf(reply, sizeof reply, "reply%d", t);
            assert_int_equal(sp_lg_history_add(&h, it->prompt, reply), SP_OK);
        }
        sp_lg_history_free(&h);
    }
    sp_lg_dataset_free(&ds);
}

static char *write_tmp(const char *name, const char *text) {
    char *path = malloc(4096);
    snprintf(path, 4096, "%s/%s", sp_test_tmpdir(), name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_trace_mooncake(void **state) {
    (void)state;
    // Rows 0 and 1 share blocks 7 and 8; row 2 shares block 7 only; row 3 has none.
    char *path = write_tmp("mooncake.jsonl",
                           "{\"timestamp\": 1000, \"input_length\": 1100, \"output_length\": 10, "
                           "\"hash_ids\": [7, 8, 9]}\n"
                           "\n"
                           "{\"timestamp\": 1250, \"input_length\": 1024, \"output_length\": 3, "
                           "\"hash_ids\": [7, 8]}\n"
                           "{\"timestamp\": 3000, \"input_length\": 600, \"output_length\": 1, "
                           "\"hash_ids\": [7, 11]}\n"
                           "{\"timestamp\": 3000, \"input_length\": 40, \"output_length\": 2}\n");
    sp_lg_ds_opts o = {.kind = SP_LG_DS_FILE, .path = path, .seed = 5};
    sp_lg_dataset ds;
    sp_diag d;
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds, &d), SP_OK);
    assert_int_equal(ds.n, 4);
    assert_true(ds.timed);
    double want_t[] = {0.0, 0.25, 2.0, 2.0};
    int want_in[] = {1100, 1024, 600, 40}, want_out[] = {10, 3, 1, 2};
    for (size_t i = 0; i < 4; i++) {
        assert_true(fabs(ds.items[i].t_arrival_s - want_t[i]) < 1e-12);
        assert_int_equal(count_words(ds.items[i].prompt), want_in[i]);
        assert_int_equal(ds.items[i].n_words, want_in[i]);
        assert_int_equal(ds.items[i].output_len, want_out[i]);
    }
    // Word offsets of the block boundaries: equal hash ids give equal 512-word blocks.
    const char *p0 = ds.items[0].prompt, *p1 = ds.items[1].prompt, *p2 = ds.items[2].prompt;
    size_t common01 = 0, common02 = 0;
    while (p0[common01] && p0[common01] == p1[common01])
        common01++;
    while (p0[common02] && p0[common02] == p2[common02])
        common02++;
    int words01 = 0, words02 = 0;
    for (size_t i = 0; i < common01; i++)
        words01 += p0[i] == ' ';
    for (size_t i = 0; i < common02; i++)
        words02 += p0[i] == ' ';
    assert_true(words01 >= 1024 - 1);             // blocks 7 and 8 shared
    assert_true(words02 >= 511 && words02 < 560); // only block 7 (a short chance overlap)
    assert_int_equal(strlen(p1), common01);       // row 1 is exactly blocks 7 and 8
    // Deterministic for the same seed; the rows without ids differ between seeds.
    sp_lg_dataset ds2;
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds2, &d), SP_OK);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(ds.items[i].prompt, ds2.items[i].prompt);
    sp_lg_dataset_free(&ds2);
    // --num-prompts limits the rows.
    o.num_prompts = 2;
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds2, &d), SP_OK);
    assert_int_equal(ds2.n, 2);
    sp_lg_dataset_free(&ds2);
    sp_lg_dataset_free(&ds);
    free(path);
}

static void test_trace_prompts_and_errors(void **state) {
    (void)state;
    char *path =
        write_tmp("prompts.jsonl", "{\"prompt\": \"Once upon a time\", \"output_len\": 7}\n"
                                   "{\"prompt\": \"x\", \"output_len\": 1}");
    sp_lg_ds_opts o = {.kind = SP_LG_DS_FILE, .path = path};
    sp_lg_dataset ds;
    sp_diag d;
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds, &d), SP_OK);
    assert_int_equal(ds.n, 2);
    assert_false(ds.timed); // no timestamps: the arrival process decides
    assert_string_equal(ds.items[0].prompt, "Once upon a time");
    assert_int_equal(ds.items[0].output_len, 7);
    assert_int_equal(ds.items[0].n_words, -1); // unknown: measured from usage
    assert_true(ds.items[0].t_arrival_s < 0);
    sp_lg_dataset_free(&ds);
    free(path);

    static const struct {
        const char *text;
        int line;
    } bad[] = {
        {"{\"prompt\": \"a\", \"output_len\": 1}\n{not json}\n", 2},
        {"{\"prompt\": \"a\"}\n", 1},
        {"\n\n{\"input_length\": 0, \"output_length\": 1}\n", 3},
        {"{\"input_length\": 5, \"output_length\": 1, \"hash_ids\": [\"x\"]}\n", 1},
        {"{\"timestamp\": -1, \"prompt\": \"a\", \"output_len\": 1}\n", 1},
        {"[1, 2]\n", 1},
        {"", 0},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        char *p = write_tmp("bad.jsonl", bad[i].text);
        o.path = p;
        sp_diag_clear(&d);
        assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds, &d), SP_ERR_FORMAT);
        if (bad[i].line)
            assert_int_equal(d.offset, bad[i].line);
        free(p);
    }
    o.path = "/nonexistent/trace.jsonl";
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds, &d), SP_ERR_IO);
}

/* Predictions: each token kept with the chosen probability (within 5 standard deviations of
 * 10000 draws), replacements drawn from the alternatives, nothing replaced at accuracy 1 or
 * without alternatives; a prediction goes into the body as OpenAI's predicted output. */
static void test_prediction(void **state) {
    (void)state;
    enum { N = 10000 };
    static int32_t ids[N], out[N];
    for (int i = 0; i < N; i++)
        ids[i] = i % 50;
    const int32_t alt[] = {1000, 1001, 1002};
    sp_lg_rng r;
    sp_lg_rng_seed(&r, 5);
    const int32_t kept = sp_lg_corrupt_tokens(ids, N, 0.6, alt, 3, &r, out);
    assert_true(fabs(kept - 0.6 * N) < 5 * sqrt(N * 0.6 * 0.4));
    int32_t same = 0;
    for (int i = 0; i < N; i++) {
        assert_true(out[i] == ids[i] || (out[i] >= 1000 && out[i] <= 1002));
        same += out[i] == ids[i];
    }
    assert_int_equal(same, kept);
    assert_int_equal(sp_lg_corrupt_tokens(ids, N, 1.0, alt, 3, &r, out), N);
    assert_int_equal(sp_lg_corrupt_tokens(ids, N, 0.0, alt, 0, &r, out), N);

    sp_lg_ds_opts o = {.kind = SP_LG_DS_PREDICTION, .num_prompts = 2, .input_len = 4,
                       .output_len = 8, .seed = 1};
    sp_lg_dataset ds;
    sp_diag d;
    assert_int_equal(sp_lg_dataset_build(&o, k_w, &ds, &d), SP_OK);
    assert_int_equal(ds.n, 2);
    assert_null(ds.items[0].prediction);
    ds.items[0].prediction = strdup("the \"end\"");
    sp_lg_body_opts bo = {.temperature = 0};
    char *body = NULL;
    assert_int_equal(sp_lg_build_body(&bo, &ds.items[0], NULL, &body), SP_OK);
    assert_non_null(strstr(body, "\"prediction\":{\"type\":\"content\",\"content\":\"the \\\"end\\\"\"}"));
    free(body);
    assert_int_equal(sp_lg_build_body(&bo, &ds.items[1], NULL, &body), SP_OK);
    assert_null(strstr(body, "prediction"));
    free(body);
    sp_lg_dataset_free(&ds);
}

static void test_append_words(void **state) {
    (void)state;
    sp_lg_rng r;
    sp_lg_rng_seed(&r, 1);
    char *s = NULL;
    size_t len = 0, cap = 0;
    assert_int_equal(sp_lg_append_words(&s, &len, &cap, k_w, &r, 0), SP_OK);
    assert_string_equal(s, "");
    assert_int_equal(sp_lg_append_words(&s, &len, &cap, k_w, &r, 3), SP_OK);
    assert_int_equal(count_words(s), 3);
    assert_int_equal(sp_lg_append_words(&s, &len, &cap, k_w, &r, 2), SP_OK);
    assert_int_equal(count_words(s), 5); // joined by one space
    assert_int_equal(strlen(s), len);
    free(s);
    // Every default word is a plain lower-case word (no spaces to break the count).
    sp_lg_words dw = sp_lg_default_words();
    assert_true(dw.n >= 200);
    for (int i = 0; i < dw.n; i++)
        for (const char *c = dw.w[i]; *c; c++)
            assert_true(*c >= 'a' && *c <= 'z');
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_lengths),
        cmocka_unit_test(test_shared_prefix),
        cmocka_unit_test(test_multi_turn),
        cmocka_unit_test(test_trace_mooncake),
        cmocka_unit_test(test_trace_prompts_and_errors),
        cmocka_unit_test(test_append_words),
        cmocka_unit_test(test_prediction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
