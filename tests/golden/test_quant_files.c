/* Quantized tensors of the shared model files.
 *
 * - TinyStories-656K-Q8_0.gguf was made from TinyStories-656K-F32.gguf by llama-quantize, so
 *   quantizing the F32 tensors with sp_quantize_row must give back its Q8_0 tensors byte for
 *   byte: a direct check against llama.cpp's quantizer.
 * - Every Q4_K and Q6_K tensor of random/llama-spm-q4k.gguf (llama-quantize Q4_K_M) and the
 *   Q8_0 token_embd of random/qwen2-gpt2vocab-f32.gguf dequantize to finite values with the
 *   statistics random/README.md gives for the weights before quantization: token_embd
 *   ~ N(0, 0.1^2), other matrices ~ N(0, (gain/sqrt(fan_in))^2).
 * - On those real rows sp_vec_dot_ref agrees with the double dot of the dequantized rows. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tensor/quant.h"

static sp_gguf *open_shared(const char *rel) {
    char *path = sp_test_shared(rel);
    sp_gguf *g = NULL;
    sp_diag diag;
    if (sp_gguf_open(path, &g, &diag) != SP_OK)
        fail_msg("cannot open %s: %s", path, diag.msg);
    free(path);
    return g;
}

static bool name_is(const sp_gguf_tensor *t, const char *name) {
    return t->name.len == strlen(name) && !memcmp(t->name.ptr, name, t->name.len);
}

static bool name_has(const sp_gguf_tensor *t, const char *part) {
    size_t n = strlen(part);
    for (uint64_t i = 0; i + n <= t->name.len; i++)
        if (!memcmp(t->name.ptr + i, part, n))
            return true;
    return false;
}

static int64_t n_elements(const sp_gguf_tensor *t) {
    int64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        n *= t->ne[d];
    return n;
}

static float *dequantize_tensor(const sp_gguf_tensor *t) {
    int64_t n = n_elements(t);
    uint64_t bytes = 0;
    assert_int_equal(sp_dtype_row_bytes(t->type, (uint64_t)n, &bytes), SP_OK);
    assert_int_equal(bytes, t->n_bytes);
    float *y = malloc((size_t)n * sizeof(float));
    assert_non_null(y);
    sp_dequantize_row(t->type, t->data, y, n);
    return y;
}

/* Checks finiteness, |mean| below 5 standard errors, max |x| below 7 sigma, and the standard
 * deviation within 3% of want_std (its sampling noise on >= 16k values is at most 0.6%, and
 * Q4_K's quantization noise adds about 0.3%). */
static void check_stats(const sp_gguf_tensor *t, const float *y, double want_std) {
    int64_t n = n_elements(t);
    double sum = 0, sum2 = 0, amax = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(y[i]))
            fail_msg("%.*s[%lld] is not finite", (int)t->name.len, t->name.ptr, (long long)i);
        sum += y[i];
        sum2 += (double)y[i] * y[i];
        amax = fmax(amax, fabs(y[i]));
    }
    double mean = sum / (double)n;
    double std = sqrt(sum2 / (double)n - mean * mean);
    print_message("%-24.*s %-5s n=%-8lld mean % .5f std %.5f (want %.5f) max|x| %.4f\n",
                  (int)t->name.len, t->name.ptr, sp_dtype_get(t->type)->name, (long long)n, mean,
                  std, want_std, amax);
    if (fabs(std / want_std - 1) > 0.03)
        fail_msg("%.*s: std %g, want %g", (int)t->name.len, t->name.ptr, std, want_std);
    assert_true(fabs(mean) < 5 * want_std / sqrt((double)n));
    assert_true(amax < 7 * want_std);
}

/* sp_vec_dot_ref on the first rows of a real weight tensor against the double dot of the
 * dequantized rows, with a random activation converted to the vec-dot type. */
static void check_real_dots(const sp_gguf_tensor *t, const float *wd, int n_rows) {
    int64_t n_in = t->ne[0];
    sp_dtype xt = sp_dtype_vec_dot_type(t->type);
    uint64_t wrow = 0, xrow = 0;
    assert_int_equal(sp_dtype_row_bytes(t->type, (uint64_t)n_in, &wrow), SP_OK);
    assert_int_equal(sp_dtype_row_bytes(xt, (uint64_t)n_in, &xrow), SP_OK);
    float *x = malloc((size_t)n_in * sizeof(float));
    float *xd = malloc((size_t)n_in * sizeof(float));
    void *xq = malloc(xrow);
    assert_true(x && xd && xq);
    uint64_t rng = 99;
    for (int64_t i = 0; i < n_in; i++)
        x[i] = sp_test_randn(&rng);
    sp_quantize_row(xt, x, xq, n_in);
    sp_dequantize_row(xt, xq, xd, n_in);
    for (int r = 0; r < n_rows && r < t->ne[1]; r++) {
        const float *w = wd + (int64_t)r * n_in;
        double exact = 0, mag = 0;
        for (int64_t i = 0; i < n_in; i++) {
            exact += (double)w[i] * xd[i];
            mag += fabs((double)w[i] * xd[i]);
        }
        float got = sp_vec_dot_ref(t->type, (const uint8_t *)t->data + (size_t)r * wrow, xq, n_in);
        int64_t n_blocks = n_in / sp_dtype_get(t->type)->block_size;
        assert_true(fabs(got - exact) <= (double)(n_blocks + 12) * 0x1p-23 * mag);
    }
    free(x);
    free(xd);
    free(xq);
}

static void test_tinystories_q8_0_matches_llama_quantize(void **state) {
    (void)state;
    sp_gguf *f32 = open_shared("models/TinyStories-656K-F32.gguf");
    sp_gguf *q8 = open_shared("models/TinyStories-656K-Q8_0.gguf");
    int n_compared = 0;
    for (uint64_t i = 0; i < sp_gguf_n_tensors(q8); i++) {
        const sp_gguf_tensor *tq = sp_gguf_tensor_at(q8, i);
        if (tq->type != SP_DTYPE_Q8_0)
            continue;
        char name[128];
        assert_true(tq->name.len < sizeof name);
        memcpy(name, tq->name.ptr, tq->name.len);
        name[tq->name.len] = '\0';
        const sp_gguf_tensor *tf = sp_gguf_find_tensor(f32, name);
        assert_non_null(tf);
        assert_int_equal(tf->type, SP_DTYPE_F32);
        int64_t n = n_elements(tf);
        assert_int_equal(n, n_elements(tq));
        uint8_t *buf = malloc(tq->n_bytes);
        assert_non_null(buf);
        sp_quantize_row(SP_DTYPE_Q8_0, tf->data, buf, n);
        if (memcmp(buf, tq->data, tq->n_bytes) != 0) {
            size_t at = 0;
            while (buf[at] == ((const uint8_t *)tq->data)[at])
                at++;
            fail_msg("%s: first differing byte at %zu (block %zu)", name, at, at / 34);
        }
        // The source weights are all exactly representable in bf16 (models/README.md).
        const float *v = tf->data;
        for (int64_t k = 0; k < n; k++)
            assert_true(sp_bf16_to_f32(sp_f32_to_bf16(v[k])) == v[k]);
        free(buf);
        n_compared++;
    }
    // token_embd and the 7 matrices of each of the 2 layers.
    assert_int_equal(n_compared, 15);
    sp_gguf_close(f32);
    sp_gguf_close(q8);
}

/* Weight deviations from random/README.md for llama-spm-q4k (n_embd 256, n_ff 512):
 * gain / sqrt(fan_in) with gains q, k, o 1.5; v, gate, up 1.0; down 2.0. */
static double llama_q4k_std(const sp_gguf_tensor *t) {
    if (name_is(t, "token_embd.weight"))
        return 0.1;
    if (name_has(t, ".attn_q.") || name_has(t, ".attn_k.") || name_has(t, ".attn_output."))
        return 1.5 / 16.0;
    if (name_has(t, ".attn_v.") || name_has(t, ".ffn_gate.") || name_has(t, ".ffn_up."))
        return 1.0 / 16.0;
    if (name_has(t, ".ffn_down."))
        return 2.0 / sqrt(512.0);
    fail_msg("unexpected quantized tensor %.*s", (int)t->name.len, t->name.ptr);
    return 0;
}

static void test_llama_q4k_tensors(void **state) {
    (void)state;
    sp_gguf *g = open_shared("models/random/llama-spm-q4k.gguf");
    int n_q4k = 0, n_q6k = 0;
    for (uint64_t i = 0; i < sp_gguf_n_tensors(g); i++) {
        const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
        if (t->type != SP_DTYPE_Q4_K && t->type != SP_DTYPE_Q6_K)
            continue;
        n_q4k += t->type == SP_DTYPE_Q4_K;
        n_q6k += t->type == SP_DTYPE_Q6_K;
        float *y = dequantize_tensor(t);
        check_stats(t, y, llama_q4k_std(t));
        check_real_dots(t, y, 8);
        free(y);
    }
    // Q4_K_M: q, k, o, gate, up of both layers plus blk.0.attn_v and blk.0.ffn_down are Q4_K;
    // blk.1.attn_v, blk.1.ffn_down and token_embd are Q6_K.
    assert_int_equal(n_q4k, 12);
    assert_int_equal(n_q6k, 3);
    sp_gguf_close(g);
}

static void test_qwen2_token_embd_q8_0(void **state) {
    (void)state;
    sp_gguf *g = open_shared("models/random/qwen2-gpt2vocab-f32.gguf");
    const sp_gguf_tensor *t = sp_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->type, SP_DTYPE_Q8_0);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 50257);
    float *y = dequantize_tensor(t);
    check_stats(t, y, 0.1);
    check_real_dots(t, y, 16);
    // Requantizing the dequantized values reproduces the file's bytes.
    uint8_t *buf = malloc(t->n_bytes);
    assert_non_null(buf);
    sp_quantize_row(SP_DTYPE_Q8_0, y, buf, n_elements(t));
    assert_memory_equal(buf, t->data, t->n_bytes);
    free(buf);
    free(y);
    sp_gguf_close(g);
}

/* F16 matrices of llama3rope-spm-f16: finite, and converting the dequantized values back
 * gives the file's bits. */
static void test_f16_file_round_trip(void **state) {
    (void)state;
    sp_gguf *g = open_shared("models/random/llama3rope-spm-f16.gguf");
    int n_f16 = 0;
    for (uint64_t i = 0; i < sp_gguf_n_tensors(g); i++) {
        const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
        if (t->type != SP_DTYPE_F16)
            continue;
        float *y = dequantize_tensor(t);
        int64_t n = n_elements(t);
        sp_f16 *back = malloc((size_t)n * sizeof(sp_f16));
        assert_non_null(back);
        sp_quantize_row(SP_DTYPE_F16, y, back, n);
        assert_memory_equal(back, t->data, t->n_bytes);
        for (int64_t k = 0; k < n; k++)
            assert_true(isfinite(y[k]) && fabsf(y[k]) < 4.0f);
        free(back);
        free(y);
        n_f16++;
    }
    assert_int_equal(n_f16, 14); // 7 matrices in each of 2 layers
    sp_gguf_close(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tinystories_q8_0_matches_llama_quantize),
        cmocka_unit_test(test_llama_q4k_tensors),
        cmocka_unit_test(test_qwen2_token_embd_q8_0),
        cmocka_unit_test(test_f16_file_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
