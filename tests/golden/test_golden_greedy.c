/* llama.cpp's prompt tokens and greedy outputs for the trained models in ../shared/models
 * (golden-greedy.json) must be reproduced exactly: prompt tokens for all three files, and all
 * 64 greedy tokens, with the F16 KV cache llama.cpp used and with an F32 cache. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "model/forward.h"
#include "model/kvbuf.h"
#include "model/model.h"
#include "tok/tok.h"

typedef struct gen {
    sp_model *m;
    sp_vocab *v;
} gen;

static void open_model(gen *g, const char *file) {
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s", file);
    char *path = sp_test_shared(rel);
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = sp_model_load(path, &g->m, &d);
    if (err)
        fail_msg("load %s: %s: %s", path, sp_err_str(err), d.msg);
    assert_int_equal(sp_vocab_load(g->m->gguf, &g->v, &d), SP_OK);
    free(path);
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Greedy decoding of n tokens after the prompt, prompt evaluated in one batch. Returns the
 * number of tokens produced (stops after an end-of-generation token). */
static int greedy(gen *g, sp_dtype kv_type, const int32_t *prompt, int n_prompt, int n,
                  int32_t *out) {
    const int32_t bs = 16, n_ctx = 512, nb = n_ctx / bs;
    sp_kvbuf kv;
    assert_int_equal(sp_kvbuf_init(&kv, &g->m->hp, kv_type, bs, nb), SP_OK);
    sp_forward *fw;
    assert_int_equal(sp_forward_create(g->m, n_ctx, n_ctx, &fw), SP_OK);
    int32_t *table = malloc(nb * sizeof *table), *pos = malloc(n_ctx * sizeof *pos);
    int32_t *seq = calloc(n_ctx, sizeof *seq);
    float *logits = malloc(g->m->hp.n_vocab * sizeof *logits);
    for (int i = 0; i < nb; i++)
        table[i] = i;
    const int32_t *tables[1] = {table};
    int produced = 0;
    int32_t cur = -1;
    for (int step = 0; step <= n; step++) {
        int32_t n_tok = step == 0 ? n_prompt : 1;
        const int32_t *toks = step == 0 ? prompt : &cur;
        int32_t p0 = step == 0 ? 0 : n_prompt + step - 1;
        for (int i = 0; i < n_tok; i++)
            pos[i] = p0 + i;
        int32_t out_row = n_tok - 1;
        sp_batch b = {.n_tokens = n_tok, .token = toks, .pos = pos, .seq = seq, .n_seqs = 1,
                      .block_tables = tables, .n_seq_blocks = &nb, .n_out = 1,
                      .out_rows = &out_row};
        assert_int_equal(sp_forward_eval(fw, &kv, &b, logits), SP_OK);
        if (step == n)
            break;
        cur = argmax(logits, g->m->hp.n_vocab);
        out[produced++] = cur;
        if (sp_vocab_is_eog(g->v, cur))
            break;
    }
    free(table);
    free(pos);
    free(seq);
    free(logits);
    sp_forward_destroy(fw);
    sp_kvbuf_deinit(&kv);
    return produced;
}

static void check_model(const char *file, sp_dtype kv_type) {
    char *gpath = sp_test_shared("models/golden-greedy.json");
    json_t *root = sp_test_load_json(gpath);
    json_t *entries = json_object_get(json_object_get(root, "models"), file);
    assert_non_null(entries);
    gen g;
    open_model(&g, file);
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        const char *prompt = json_string_value(json_object_get(e, "prompt"));
        json_t *want_prompt = json_object_get(e, "prompt_tokens");
        json_t *want = json_object_get(e, "greedy_tokens");
        sp_tokens toks;
        sp_tokens_init(&toks);
        sp_diag d;
        assert_int_equal(sp_tok_encode(g.v, prompt, strlen(prompt), true, true, &toks, &d), SP_OK);
        assert_int_equal(toks.n, json_array_size(want_prompt));
        for (size_t k = 0; k < toks.n; k++)
            assert_int_equal(toks.ids[k], json_integer_value(json_array_get(want_prompt, k)));
        int n_want = (int)json_array_size(want);
        int32_t got[128];
        int n_got = greedy(&g, kv_type, toks.ids, (int)toks.n, 64, got);
        int match = 0;
        while (match < n_got && match < n_want &&
               got[match] == json_integer_value(json_array_get(want, match)))
            match++;
        if (match != n_want || n_got != n_want)
            fail_msg("%s (%s KV) \"%s\": %d of %d greedy tokens match (got %d tokens)", file,
                     kv_type == SP_DTYPE_F16 ? "f16" : "f32", prompt, match, n_want, n_got);
        sp_tokens_deinit(&toks);
    }
    sp_vocab_destroy(g.v);
    sp_model_destroy(g.m);
    json_decref(root);
    free(gpath);
}

static void test_stories260k_f16kv(void **s) { (void)s; check_model("stories260K.gguf", SP_DTYPE_F16); }
static void test_stories260k_f32kv(void **s) { (void)s; check_model("stories260K.gguf", SP_DTYPE_F32); }
static void test_656k_f32_f16kv(void **s) { (void)s; check_model("TinyStories-656K-F32.gguf", SP_DTYPE_F16); }
static void test_656k_f32_f32kv(void **s) { (void)s; check_model("TinyStories-656K-F32.gguf", SP_DTYPE_F32); }
static void test_656k_q8_0_f16kv(void **s) { (void)s; check_model("TinyStories-656K-Q8_0.gguf", SP_DTYPE_F16); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k_f16kv), cmocka_unit_test(test_stories260k_f32kv),
        cmocka_unit_test(test_656k_f32_f16kv),    cmocka_unit_test(test_656k_f32_f32kv),
        cmocka_unit_test(test_656k_q8_0_f16kv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
