/* Speculative decoding changes no greedy token: every prompt of golden-greedy.json, run together
 * through the engine with prompt-lookup drafts of up to K tokens per step (K = 1, 3, 8), gives
 * llama.cpp's greedy tokens exactly, as without drafts (the forward pass is batch-invariant, so
 * a drafted position's logits are those of a plain decode); and drafts were accepted, so the
 * check is not vacuous. A small KV pool forces preemption in the middle for one of the runs.
 * Predicted outputs (drafts from the client's expected text, without --spec): the exact output
 * is accepted nearly whole, a wrong one costs nothing but rejected drafts, and the output is the
 * same either way. A draft model (the Q8_0 file of a model drafting for its F32 file; a
 * random-weight model of the same vocabulary) changes no token either, at any draft length,
 * with preemption, and with a draft model of another vocabulary the engine does not start.
 * Sampled requests keep the target model's distribution with a deliberately bad draft model
 * (chi-square). Drafts never take a decode's place under a tight token budget, and a draft
 * model left behind catches up exactly. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "base/util.h"
#include "model/model.h"
#include "sample/sample.h"
#include "sched/engine.h"
#include "sched/internal.h"
#include "sched/request.h"
#include "tok/tok.h"

enum { MAX_PROMPTS = 16, MAX_GEN = 128 };

typedef enum { PRED_NONE, PRED_EXACT, PRED_WRONG } pred_mode;

/* Loads a model of ../shared/models and its vocabulary. */
static void load(const char *file, sp_model **m, sp_vocab **v) {
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s", file);
    char *path = sp_test_shared(rel);
    sp_diag d;
    sp_diag_clear(&d);
    assert_int_equal(sp_model_load(path, m, &d), SP_OK);
    assert_int_equal(sp_vocab_load((*m)->gguf, v, &d), SP_OK);
    free(path);
}

/* Steps e until it is idle, dropping the ready list's references. */
static void run_all(sp_engine *e) {
    for (int steps = 0; sp_engine_busy(e); steps++) {
        sp_engine_step(e);
        assert_true(steps < 100000);
    }
    for (sp_request *r = sp_engine_take_ready(e); r;) {
        sp_request *next = sp_request_next_ready(r);
        sp_request_release(r);
        r = next;
    }
}

/* A random-weight model (mkmodel's tiny shape) with the vocabulary of the shared model file;
 * its path (to free). */
static char *random_draft(const char *file) {
    char rel[256], *out = malloc(512);
    snprintf(rel, sizeof rel, "models/%s", file);
    snprintf(out, 512, "%s/draft-%s", sp_test_tmpdir(), file);
    char *vocab = sp_test_shared(rel);
    char *argv[] = {"mkmodel", "-o",     out,     "--preset", "tiny", "--vocab-from",
                    vocab,     "--seed", "7",     NULL};
    assert_int_equal(sp_cmd_mkmodel(9, argv), 0);
    free(vocab);
    return out;
}

static uint64_t check_model_draft(const char *file, int32_t spec_k, bool spec_auto,
                                  int32_t kv_tokens, pred_mode pm, const char *draft) {
    char *gpath = sp_test_shared("models/golden-greedy.json");
    json_t *root = sp_test_load_json(gpath);
    json_t *entries = json_object_get(json_object_get(root, "models"), file);
    assert_non_null(entries);
    sp_diag d;
    sp_diag_clear(&d);
    sp_model *m;
    sp_vocab *v;
    load(file, &m, &v);

    sp_engine_opts o = sp_engine_opts_default();
    o.n_threads = 1;
    o.spec_k = spec_k;
    o.spec_auto = spec_auto;
    o.kv_tokens = kv_tokens;
    o.draft_model = draft;
    if (kv_tokens) // admit while the prompt fits: decodes then run out of blocks
        snprintf(o.admission, sizeof o.admission, "aggressive");
    o.n_ctx = 256;
    sp_engine *e;
    assert_int_equal(sp_engine_create(m, v, &o, &e, &d), SP_OK);
    sp_request *reqs[MAX_PROMPTS];
    const size_t n = json_array_size(entries);
    assert_true(n > 0 && n <= MAX_PROMPTS);
    for (size_t i = 0; i < n; i++) {
        json_t *want_prompt = json_object_get(json_array_get(entries, i), "prompt_tokens");
        int32_t prompt[256];
        const int32_t n_prompt = (int32_t)json_array_size(want_prompt);
        assert_true(n_prompt <= 256);
        for (int32_t k = 0; k < n_prompt; k++)
            prompt[k] = (int32_t)json_integer_value(json_array_get(want_prompt, (size_t)k));
        sp_req_params p = sp_req_params_default();
        p.max_tokens =
            (int32_t)json_array_size(json_object_get(json_array_get(entries, i), "greedy_tokens"));
        p.sample.temperature = 0;
        int32_t pred[MAX_GEN];
        if (pm != PRED_NONE) {
            json_t *want = json_object_get(json_array_get(entries, i), "greedy_tokens");
            p.n_prediction = (int32_t)json_array_size(want);
            for (int32_t k = 0; k < p.n_prediction; k++) // wrong: the output backwards
                pred[k] = (int32_t)json_integer_value(
                    json_array_get(want, (size_t)(pm == PRED_EXACT ? k : p.n_prediction - 1 - k)));
            p.prediction = pred;
        }
        assert_int_equal(sp_request_create(v, prompt, n_prompt, &p, &reqs[i], &d), SP_OK);
        assert_int_equal(sp_engine_submit(e, reqs[i], &d), SP_OK);
    }
    run_all(e);
    sp_engine_stats st;
    sp_engine_stats_get(e, &st);
    for (size_t i = 0; i < n; i++) {
        json_t *want = json_object_get(json_array_get(entries, i), "greedy_tokens");
        sp_req_cursor cur = {0};
        sp_req_token toks[MAX_GEN];
        sp_req_read rd;
        assert_int_equal(
            sp_request_read(reqs[i], &cur, toks, MAX_GEN, NULL, NULL, NULL, NULL, NULL, &rd),
            SP_OK);
        int match = 0;
        while (match < rd.n_new_tokens && match < (int)json_array_size(want) &&
               toks[match].id == json_integer_value(json_array_get(want, (size_t)match)))
            match++;
        if (match != (int)json_array_size(want) || rd.n_new_tokens != match)
            fail_msg("%s, K=%d, draft %s, prompt %zu: %d of %zu greedy tokens match (got %d)",
                     file, spec_k, draft ? draft : "none", i, match, json_array_size(want),
                     rd.n_new_tokens);
        sp_req_stats rs;
        sp_request_stats(reqs[i], &rs);
        // Every token after the first (which the prompt's step makes) was a draft when the
        // prediction was the output: all accepted but the ones a step's last row produced.
        if (pm == PRED_EXACT)
            assert_true(rs.n_draft_accepted >= (rd.n_new_tokens - 1) * 8 / 9 - 1 &&
                        rs.n_draft_rejected == 0);
        if (pm == PRED_WRONG)
            assert_true(rs.n_draft_rejected > 0);
        sp_request_release(reqs[i]);
    }
    // auto may find drafting not worth its cost on a model this small; the others draft.
    assert_true(spec_auto || st.spec_drafts > 0);
    if (pm == PRED_EXACT)
        assert_int_equal(st.spec_accepted_tokens, st.spec_draft_tokens);
    assert_true(st.spec_accepted_tokens <= st.spec_draft_tokens);
    if (pm != PRED_WRONG && !spec_auto) // a backwards prediction may be rejected throughout
        assert_true(st.spec_accepted_tokens > 0);
    if (kv_tokens)
        assert_true(st.preemptions > 0);
    sp_engine_destroy(e);
    sp_vocab_destroy(v);
    sp_model_destroy(m);
    json_decref(root);
    free(gpath);
    return st.spec_draft_tokens;
}

static uint64_t check_model_pred(const char *file, int32_t spec_k, bool spec_auto,
                                 int32_t kv_tokens, pred_mode pm) {
    return check_model_draft(file, spec_k, spec_auto, kv_tokens, pm, NULL);
}

static void check_model(const char *file, int32_t spec_k, int32_t kv_tokens) {
    (void)check_model_pred(file, spec_k, false, kv_tokens, PRED_NONE);
}

static void test_predicted_outputs(void **s) {
    (void)s;
    (void)check_model_pred("stories260K.gguf", 0, false, 0, PRED_EXACT);
    (void)check_model_pred("stories260K.gguf", 0, false, 0, PRED_WRONG);
    (void)check_model_pred("TinyStories-656K-Q8_0.gguf", 0, false, 0, PRED_EXACT);
}

/* --spec auto: draft lengths chosen per request and step; the tokens are still the goldens. A
 * drafter that is always wrong (a backwards prediction) soon gets few draft tokens checked: a
 * small fraction of what fixed:8 spends on it. */
static void test_auto(void **s) {
    (void)s;
    (void)check_model_pred("stories260K.gguf", 8, true, 0, PRED_NONE);
    (void)check_model_pred("TinyStories-656K-F32.gguf", 4, true, 0, PRED_NONE);
    // A perfect drafter (the exact output as the prediction) is used: auto drafts and every
    // draft is accepted.
    assert_true(check_model_pred("TinyStories-656K-F32.gguf", 8, true, 0, PRED_EXACT) > 0);
    const uint64_t fixed = check_model_pred("stories260K.gguf", 8, false, 0, PRED_WRONG);
    const uint64_t autok = check_model_pred("stories260K.gguf", 8, true, 0, PRED_WRONG);
    if (!(autok * 4 < fixed))
        fail_msg("draft tokens checked for a wrong drafter: auto %llu, fixed:8 %llu",
                 (unsigned long long)autok, (unsigned long long)fixed);
}

static void test_stories260k(void **s) {
    (void)s;
    for (int32_t k = 1; k <= 8; k += k < 3 ? 2 : 5)
        check_model("stories260K.gguf", k, 0);
}

static void test_656k_f32(void **s) {
    (void)s;
    check_model("TinyStories-656K-F32.gguf", 3, 0);
}

static void test_656k_q8_0(void **s) {
    (void)s;
    check_model("TinyStories-656K-Q8_0.gguf", 4, 0);
}

static void test_preemption_in_the_middle(void **s) {
    (void)s;
    check_model("stories260K.gguf", 4, 160);
}

/* The Q8_0 file drafts for the F32 one: the goldens at every draft length and with auto, most
 * drafts accepted; a random-weight draft model (rarely right) changes nothing either, with
 * preemption in the middle too. */
static void test_draft_model(void **s) {
    (void)s;
    char *q8 = sp_test_shared("models/TinyStories-656K-Q8_0.gguf");
    for (int32_t k = 1; k <= 8; k += k < 3 ? 2 : 5) {
        const uint64_t n = check_model_draft("TinyStories-656K-F32.gguf", k, false, 0, PRED_NONE, q8);
        assert_true(n > 0);
    }
    (void)check_model_draft("TinyStories-656K-F32.gguf", 8, true, 0, PRED_NONE, q8);
    (void)check_model_draft("TinyStories-656K-F32.gguf", 8, false, 0, PRED_EXACT, q8);
    char *bad = random_draft("stories260K.gguf");
    (void)check_model_draft("stories260K.gguf", 4, false, 0, PRED_NONE, bad);
    (void)check_model_draft("stories260K.gguf", 3, false, 160, PRED_NONE, bad);
    (void)check_model_draft("stories260K.gguf", 8, true, 0, PRED_NONE, bad);
    free(bad);
    free(q8);
}

/* A draft model of another vocabulary: the engine is not created, and says why. */
static void test_draft_model_vocabulary(void **s) {
    (void)s;
    char *other = sp_test_shared("models/stories260K.gguf");
    sp_diag d;
    sp_diag_clear(&d);
    sp_model *m;
    sp_vocab *v;
    load("TinyStories-656K-F32.gguf", &m, &v);
    sp_engine_opts o = sp_engine_opts_default();
    o.n_threads = 1;
    o.n_ctx = 256;
    o.draft_model = other;
    sp_engine *e = NULL;
    assert_int_equal(sp_engine_create(m, v, &o, &e, &d), SP_ERR_INVALID);
    assert_null(e);
    assert_non_null(strstr(d.msg, "another vocabulary"));
    o.draft_model = "/nonexistent/draft.gguf";
    assert_int_not_equal(sp_engine_create(m, v, &o, &e, &d), SP_OK);
    sp_vocab_destroy(v);
    sp_model_destroy(m);
    free(other);
}

enum { SAMPLED = 4096 };

typedef struct hook_ctx {
    float *logits; // (SAMPLED, n_vocab) the logits each request's second token came from
    int32_t n_vocab;
} hook_ctx;

static void grab_logits(void *ctx, sp_request *r, const float *logits, int32_t n_vocab) {
    hook_ctx *h = ctx;
    const uint64_t slot = r->params.sample.seed - 1; // the tests' seeds number the requests
    if (r->n_generated == 1 && slot < SAMPLED)
        memcpy(h->logits + slot * (size_t)n_vocab, logits, sizeof *logits * (size_t)n_vocab);
}

/* Rejection sampling keeps the target's distribution with a draft model that is mostly wrong
 * (random weights): sampled requests (temperature 1, top_k 20) draft their second token and
 * later ones from the draft model, which the step checks against the target's p (accepted with
 * min(1, p/q), else redrawn from the residual). The second tokens' randomized probability
 * integral transforms (u = F(t-) + U p(t) under the target's distribution for the logits the
 * token was sampled from) are uniform: chi-square over 20 bins, p = 1e-4; and drafts were both
 * accepted and rejected, so both paths ran. */
static void test_draft_model_sampling(void **s) {
    (void)s;
    char *bad = random_draft("stories260K.gguf");
    sp_diag d;
    sp_diag_clear(&d);
    sp_model *m;
    sp_vocab *v;
    load("stories260K.gguf", &m, &v);
    const int32_t V = m->hp.n_vocab;
    hook_ctx h = {.logits = malloc(sizeof(float) * (size_t)V * SAMPLED), .n_vocab = V};
    assert_non_null(h.logits);
    sp_engine_opts o = sp_engine_opts_default();
    o.n_threads = 1;
    o.n_ctx = 64;
    o.draft_model = bad;
    o.spec_k = 2;
    o.on_logits = grab_logits;
    o.hook_ctx = &h;
    sp_engine *e;
    assert_int_equal(sp_engine_create(m, v, &o, &e, &d), SP_OK);
    const int32_t prompt[] = {1, 403, 407, 261, 378, 260, 293, 411};
    sp_sample_params sp = sp_sample_params_default();
    sp.temperature = 1.0f;
    sp.top_k = 20;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.repeat_last_n = 0;
    sp_sampler *ref;
    assert_int_equal(sp_sampler_create(&sp, V, &ref), SP_OK);
    int32_t *ids = malloc(sizeof *ids * (size_t)V);
    float *probs = malloc(sizeof *probs * (size_t)V);
    double *p_of = malloc(sizeof *p_of * (size_t)V);
    assert_true(ids && probs && p_of);
    enum { BINS = 20, BATCH = 64 };
    int bins[BINS] = {0};
    uint64_t rng = 12345;
    for (int batch = 0; batch < SAMPLED / BATCH; batch++) {
        sp_request *reqs[BATCH];
        for (int i = 0; i < BATCH; i++) {
            sp_req_params p = sp_req_params_default();
            p.sample = sp;
            p.sample.seed = (uint64_t)(batch * BATCH + i + 1);
            p.max_tokens = 4;
            p.ignore_eos = true;
            assert_int_equal(sp_request_create(v, prompt, 8, &p, &reqs[i], &d), SP_OK);
            assert_int_equal(sp_engine_submit(e, reqs[i], &d), SP_OK);
        }
        run_all(e);
        for (int i = 0; i < BATCH; i++) {
            sp_req_cursor cur = {0};
            sp_req_token toks[4];
            sp_req_read rd;
            assert_int_equal(
                sp_request_read(reqs[i], &cur, toks, 4, NULL, NULL, NULL, NULL, NULL, &rd), SP_OK);
            assert_int_equal(rd.n_new_tokens, 4);
            const size_t slot = (size_t)(batch * BATCH + i);
            const int32_t n = sp_sampler_distribution(ref, h.logits + slot * (size_t)V, V, ids,
                                                      probs);
            memset(p_of, 0, sizeof *p_of * (size_t)V);
            for (int32_t c = 0; c < n; c++)
                p_of[ids[c]] = probs[c];
            const int32_t t = toks[1].id;
            assert_true(p_of[t] > 0); // never a token the target's sampler could not draw
            double below = 0;
            for (int32_t x = 0; x < t; x++)
                below += p_of[x];
            const double u = below + (0.5 * (sp_test_randf(&rng) + 1.0)) * p_of[t];
            bins[SP_MIN((int)(u * BINS), BINS - 1)]++;
            sp_request_release(reqs[i]);
        }
    }
    double chi = 0;
    const double expect = (double)SAMPLED / BINS;
    for (int b = 0; b < BINS; b++)
        chi += (bins[b] - expect) * (bins[b] - expect) / expect;
    if (chi >= 50.80) // p = 1e-4, 19 degrees of freedom
        fail_msg("second tokens do not follow the target's distribution: chi-square %g", chi);
    sp_engine_stats st;
    sp_engine_stats_get(e, &st);
    assert_true(st.spec_accepted_tokens > 0 && st.spec_accepted_tokens < st.spec_draft_tokens);
    sp_sampler_destroy(ref);
    free(ids);
    free(probs);
    free(p_of);
    sp_engine_destroy(e);
    sp_vocab_destroy(v);
    sp_model_destroy(m);
    free(h.logits);
    free(bad);
}

/* What a request returned: its tokens with their log-probabilities, its text. */
typedef struct sampled {
    int32_t n;
    sp_req_token toks[MAX_GEN];
    char text[1024];
} sampled;

/* Every golden prompt of stories260K, sampled (temperature 0.8, seeds by prompt) with
 * log-probabilities and a stop string, with the engine options o, into out[MAX_PROMPTS]; the
 * accepted drafts. */
static uint64_t sampled_tokens(sp_engine_opts o, bool predict, sampled *out) {
    char *gpath = sp_test_shared("models/golden-greedy.json");
    json_t *root = sp_test_load_json(gpath);
    json_t *entries = json_object_get(json_object_get(root, "models"), "stories260K.gguf");
    sp_diag d;
    sp_diag_clear(&d);
    sp_model *m;
    sp_vocab *v;
    load("stories260K.gguf", &m, &v);
    o.n_threads = 1;
    o.n_ctx = 256;
    sp_engine *e;
    assert_int_equal(sp_engine_create(m, v, &o, &e, &d), SP_OK);
    sp_request *reqs[MAX_PROMPTS];
    const size_t n = json_array_size(entries);
    for (size_t i = 0; i < n; i++) {
        json_t *jp = json_object_get(json_array_get(entries, i), "prompt_tokens");
        json_t *jg = json_object_get(json_array_get(entries, i), "greedy_tokens");
        int32_t prompt[256], pred[MAX_GEN];
        const int32_t n_prompt = (int32_t)json_array_size(jp);
        for (int32_t k = 0; k < n_prompt; k++)
            prompt[k] = (int32_t)json_integer_value(json_array_get(jp, (size_t)k));
        sp_req_params p = sp_req_params_default();
        p.max_tokens = 64;
        p.ignore_eos = true;
        p.sample.temperature = 0.8f;
        p.sample.seed = 100 + i;
        p.n_logprobs = 1;
        const char *stop[] = {". "};
        p.stop = stop;
        p.n_stop = 1;
        if (predict) { // the greedy output: often right where sampling follows the top token
            p.n_prediction = (int32_t)SP_MIN(json_array_size(jg), (size_t)MAX_GEN);
            for (int32_t k = 0; k < p.n_prediction; k++)
                pred[k] = (int32_t)json_integer_value(json_array_get(jg, (size_t)k));
            p.prediction = pred;
        }
        assert_int_equal(sp_request_create(v, prompt, n_prompt, &p, &reqs[i], &d), SP_OK);
        assert_int_equal(sp_engine_submit(e, reqs[i], &d), SP_OK);
    }
    run_all(e);
    memset(out, 0, sizeof *out * MAX_PROMPTS);
    for (size_t i = 0; i < n; i++) {
        sp_req_cursor cur = {0};
        sp_req_read rd;
        char *text = NULL;
        size_t len = 0, cap = 0;
        int32_t top_ids[MAX_GEN];
        float top_lps[MAX_GEN];
        assert_int_equal(sp_request_read(reqs[i], &cur, out[i].toks, MAX_GEN, top_ids, top_lps,
                                         &text, &len, &cap, &rd),
                         SP_OK);
        out[i].n = rd.n_new_tokens;
        assert_true(len < sizeof out[i].text);
        memcpy(out[i].text, text, len);
        free(text);
        sp_request_release(reqs[i]);
    }
    sp_engine_stats st;
    sp_engine_stats_get(e, &st);
    sp_engine_destroy(e);
    sp_vocab_destroy(v);
    sp_model_destroy(m);
    json_decref(root);
    free(gpath);
    return st.spec_accepted_tokens;
}

/* Sampled requests draw the same tokens with speculation as without (point-mass drafts are
 * checked by the plain draw of the seed): prompt lookup at a fixed length and with auto,
 * predicted outputs, all with drafts accepted; their log-probabilities and their text, cut at
 * a stop string, are the same too. */
static void test_sampled_same_tokens(void **s) {
    (void)s;
    static sampled want[MAX_PROMPTS], got[MAX_PROMPTS];
    sp_engine_opts o = sp_engine_opts_default();
    o.spec_off = true;
    assert_int_equal(sampled_tokens(o, true, want), 0);
    for (int mode = 0; mode < 3; mode++) {
        o = sp_engine_opts_default();
        o.spec_k = mode == 0 ? 3 : mode == 1 ? 8 : 0;
        o.spec_auto = mode == 1;
        const uint64_t acc = sampled_tokens(o, mode == 2, got);
        if (mode != 1) // auto may find drafting this model not worth it
            assert_true(acc > 0);
        for (int i = 0; i < MAX_PROMPTS; i++) {
            assert_int_equal(want[i].n, got[i].n);
            for (int k = 0; k < want[i].n; k++) {
                assert_int_equal(want[i].toks[k].id, got[i].toks[k].id);
                assert_true(want[i].toks[k].logprob == got[i].toks[k].logprob);
            }
            assert_string_equal(want[i].text, got[i].text);
        }
    }
    int stopped = 0; // the stop string was met somewhere, and cut the text there
    for (int i = 0; i < MAX_PROMPTS; i++)
        stopped += want[i].n > 0 && want[i].n < 64;
    assert_true(stopped > 0);
}

/* Runs one request to its end on e; returns it (the caller releases it). */
static sp_request *run_one(sp_engine *e, const sp_vocab *v, const int32_t *prompt, int32_t n,
                           int32_t max_tokens, uint64_t salt) {
    sp_diag d;
    sp_diag_clear(&d);
    sp_req_params p = sp_req_params_default();
    p.sample.temperature = 0;
    p.max_tokens = max_tokens;
    p.cache_salt = salt;
    sp_request *r;
    assert_int_equal(sp_request_create(v, prompt, n, &p, &r, &d), SP_OK);
    assert_int_equal(sp_engine_submit(e, r, &d), SP_OK);
    run_all(e);
    return r;
}

/* Prompt lookup also drafts from the text of earlier requests (the n-gram index): a request
 * that repeats an earlier one's output has nearly all of its drafts accepted, far more than the
 * first, which had only its own prompt and output; a request of another cache salt does not
 * see that text. The tokens are the same every time. */
static void test_ngram_index(void **s) {
    (void)s;
    sp_diag d;
    sp_diag_clear(&d);
    sp_model *m;
    sp_vocab *v;
    load("stories260K.gguf", &m, &v);
    sp_engine_opts o = sp_engine_opts_default();
    o.n_threads = 1;
    o.n_ctx = 256;
    o.spec_k = 4;
    o.prefix_cache = false;
    sp_engine *e;
    assert_int_equal(sp_engine_create(m, v, &o, &e, &d), SP_OK);
    const int32_t prompt[] = {1, 403, 407, 261, 378};
    sp_req_stats st[3];
    sp_req_token toks[3][128];
    const uint64_t salts[3] = {0, 0, 9};
    for (int i = 0; i < 3; i++) {
        sp_request *r = run_one(e, v, prompt, 5, 120, salts[i]);
        sp_request_stats(r, &st[i]);
        sp_req_cursor cur = {0};
        sp_req_read rd;
        assert_int_equal(
            sp_request_read(r, &cur, toks[i], 128, NULL, NULL, NULL, NULL, NULL, &rd), SP_OK);
        assert_int_equal(rd.n_new_tokens, 120);
        sp_request_release(r);
    }
    print_message("accepted/rejected: first %d/%d, again %d/%d, other salt %d/%d\n",
                  st[0].n_draft_accepted, st[0].n_draft_rejected, st[1].n_draft_accepted,
                  st[1].n_draft_rejected, st[2].n_draft_accepted, st[2].n_draft_rejected);
    for (int i = 0; i < 120; i++)
        assert_true(toks[1][i].id == toks[0][i].id && toks[2][i].id == toks[0][i].id);
    assert_true(st[1].n_draft_accepted >= 80 && st[1].n_draft_rejected * 4 < st[1].n_draft_accepted &&
                st[1].n_draft_accepted > 4 * st[0].n_draft_accepted);
    assert_int_equal(st[2].n_draft_accepted, st[0].n_draft_accepted);
    sp_engine_destroy(e);
    sp_vocab_destroy(v);
    sp_model_destroy(m);
}

enum { TIGHT_COPIES = 5, TIGHT_BUDGET = 24 };

typedef struct tight_ctx {
    sp_request **reqs;
    int n;
    int32_t ready; // requests ready for a decode when the step began
    int steps;     // steps with decodes checked
} tight_ctx;

/* Requests that the coming step must give a decode token: running, prompt done. */
static int32_t decode_ready(const tight_ctx *c) {
    int32_t n = 0;
    for (int i = 0; i < c->n; i++) {
        const sp_request *r = c->reqs[i];
        n += r->state == SP__REQ_RUNNING && r->n_generated > 0 && r->n_tokens - r->n_computed == 1;
    }
    return n;
}

static void check_decodes(void *ctx, const sp_engine_step_info *info) {
    tight_ctx *c = ctx;
    if (info->n_decode != c->ready)
        fail_msg("a step decoded %d of the %d requests ready (%d draft tokens)", info->n_decode,
                 c->ready, info->n_draft);
    c->steps += c->ready > 0;
    assert_true(info->n_tokens <= TIGHT_BUDGET);
}

/* The prompts of file, TIGHT_COPIES times each, through an engine whose step takes
 * TIGHT_BUDGET tokens (fewer than the requests' decodes and drafts): every step gives every
 * request ready for it its decode token, whatever the drafts would take; the tokens are the
 * goldens. The engine's statistics to *st. */
static void run_tight(const char *file, int32_t spec_k, bool spec_auto, pred_mode pm,
                      const char *draft, sp_engine_stats *st) {
    char *gpath = sp_test_shared("models/golden-greedy.json");
    json_t *root = sp_test_load_json(gpath);
    json_t *entries = json_object_get(json_object_get(root, "models"), file);
    sp_diag d;
    sp_diag_clear(&d);
    sp_model *m;
    sp_vocab *v;
    load(file, &m, &v);
    sp_engine_opts o = sp_engine_opts_default();
    o.n_threads = 1;
    o.n_ctx = 256;
    o.spec_k = spec_k;
    o.spec_auto = spec_auto;
    o.draft_model = draft;
    o.max_batch_tokens = TIGHT_BUDGET;
    sp_request *reqs[MAX_PROMPTS];
    tight_ctx c = {.reqs = reqs};
    o.on_step = check_decodes;
    o.hook_ctx = &c;
    sp_engine *e;
    assert_int_equal(sp_engine_create(m, v, &o, &e, &d), SP_OK);
    const int n = (int)json_array_size(entries) * TIGHT_COPIES;
    assert_true(n <= MAX_PROMPTS && n > TIGHT_BUDGET / 8);
    for (int i = 0; i < n; i++) {
        json_t *entry = json_array_get(entries, (size_t)i % json_array_size(entries));
        json_t *jp = json_object_get(entry, "prompt_tokens");
        json_t *jg = json_object_get(entry, "greedy_tokens");
        int32_t prompt[256], pred[MAX_GEN];
        const int32_t n_prompt = (int32_t)json_array_size(jp);
        for (int32_t k = 0; k < n_prompt; k++)
            prompt[k] = (int32_t)json_integer_value(json_array_get(jp, (size_t)k));
        sp_req_params p = sp_req_params_default();
        p.max_tokens = (int32_t)json_array_size(jg);
        p.sample.temperature = 0;
        if (pm == PRED_EXACT) {
            p.n_prediction = p.max_tokens;
            for (int32_t k = 0; k < p.n_prediction; k++)
                pred[k] = (int32_t)json_integer_value(json_array_get(jg, (size_t)k));
            p.prediction = pred;
        }
        assert_int_equal(sp_request_create(v, prompt, n_prompt, &p, &reqs[i], &d), SP_OK);
        assert_int_equal(sp_engine_submit(e, reqs[i], &d), SP_OK);
        c.n = i + 1;
    }
    for (int steps = 0; sp_engine_busy(e); steps++) {
        c.ready = decode_ready(&c);
        sp_engine_step(e);
        assert_true(steps < 100000);
    }
    assert_true(c.steps > 0);
    for (int i = 0; i < n; i++) {
        json_t *entry = json_array_get(entries, (size_t)i % json_array_size(entries));
        json_t *want = json_object_get(entry, "greedy_tokens");
        sp_req_cursor cur = {0};
        sp_req_token toks[MAX_GEN];
        sp_req_read rd;
        assert_int_equal(
            sp_request_read(reqs[i], &cur, toks, MAX_GEN, NULL, NULL, NULL, NULL, NULL, &rd),
            SP_OK);
        assert_int_equal(rd.n_new_tokens, (int)json_array_size(want));
        for (int k = 0; k < rd.n_new_tokens; k++)
            assert_int_equal(toks[k].id, json_integer_value(json_array_get(want, (size_t)k)));
    }
    sp_engine_stats_get(e, st);
    for (sp_request *r = sp_engine_take_ready(e); r;) {
        sp_request *next = sp_request_next_ready(r);
        sp_request_release(r);
        r = next;
    }
    for (int i = 0; i < n; i++)
        sp_request_release(reqs[i]);
    sp_engine_destroy(e);
    sp_vocab_destroy(v);
    sp_model_destroy(m);
    json_decref(root);
    free(gpath);
}

/* Drafts never take a decode's place in the step: with a token budget smaller than the
 * requests' decodes and drafts, every request ready for a decode gets it, under fixed lengths
 * and auto, with predicted outputs (exact: every draft accepted) and prompt lookup. */
static void test_decodes_before_drafts(void **s) {
    (void)s;
    sp_engine_stats st;
    run_tight("stories260K.gguf", 8, false, PRED_EXACT, NULL, &st);
    assert_true(st.spec_draft_tokens > 0 && st.spec_accepted_tokens == st.spec_draft_tokens);
    run_tight("stories260K.gguf", 8, true, PRED_EXACT, NULL, &st);
    assert_true(st.spec_accepted_tokens == st.spec_draft_tokens);
    run_tight("stories260K.gguf", 4, false, PRED_NONE, NULL, &st);
    assert_true(st.spec_draft_tokens > 0);
}

/* A draft model that falls behind (the step's budget leaves the younger requests no drafts;
 * auto drafts now and then) catches up before it drafts again: the model drafting for itself
 * has every draft accepted (its drafts are the model's own greedy tokens, the forward pass
 * being batch-invariant), however far behind each request's draft KV was. */
static void test_draft_model_catch_up(void **s) {
    (void)s;
    char *self = sp_test_shared("models/TinyStories-656K-F32.gguf");
    sp_engine_stats st;
    run_tight("TinyStories-656K-F32.gguf", 8, false, PRED_NONE, self, &st);
    print_message("fixed:8: %llu of %llu drafts accepted\n",
                  (unsigned long long)st.spec_accepted_tokens,
                  (unsigned long long)st.spec_draft_tokens);
    assert_true(st.spec_draft_tokens > 0 && st.spec_accepted_tokens == st.spec_draft_tokens);
    run_tight("TinyStories-656K-F32.gguf", 8, true, PRED_NONE, self, &st);
    print_message("auto: %llu of %llu drafts accepted\n",
                  (unsigned long long)st.spec_accepted_tokens,
                  (unsigned long long)st.spec_draft_tokens);
    assert_true(st.spec_accepted_tokens == st.spec_draft_tokens);
    free(self);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k),       cmocka_unit_test(test_656k_f32),
        cmocka_unit_test(test_656k_q8_0),         cmocka_unit_test(test_preemption_in_the_middle),
        cmocka_unit_test(test_predicted_outputs), cmocka_unit_test(test_auto),
        cmocka_unit_test(test_draft_model),       cmocka_unit_test(test_draft_model_vocabulary),
        cmocka_unit_test(test_draft_model_sampling), cmocka_unit_test(test_ngram_index),
        cmocka_unit_test(test_sampled_same_tokens), cmocka_unit_test(test_decodes_before_drafts),
        cmocka_unit_test(test_draft_model_catch_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
