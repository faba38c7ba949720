/* The GGUF reader on the shared fixture files: facts stated in shared/models/README.md and
 * shared/models/random/README.md, plus cross-checks against independent sources (the
 * llama2.c checkpoint of stories260K, the safetensors of TinyStories-656K, and the vocab-only
 * GGUFs the random models copied their vocabularies from). */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/util.h"
#include "gguf/gguf.h"

static sp_gguf *open_shared(const char *rel) {
    char *path = sp_test_shared(rel);
    sp_gguf *g = NULL;
    sp_diag d;
    sp_err err = sp_gguf_open(path, &g, &d);
    if (err)
        fail_msg("%s: %s: %s (offset %llu)", path, sp_err_str(err), d.msg,
                 (unsigned long long)d.offset);
    free(path);
    return g;
}

static int64_t get_int(const sp_gguf *g, const char *key) {
    int64_t v = -1;
    sp_diag d;
    sp_err err = sp_gguf_get_int(g, key, &v, &d);
    if (err)
        fail_msg("%s: %s", key, d.msg);
    return v;
}

static double get_float(const sp_gguf *g, const char *key) {
    double v = NAN;
    sp_diag d;
    sp_err err = sp_gguf_get_float(g, key, &v, &d);
    if (err)
        fail_msg("%s: %s", key, d.msg);
    return v;
}

static void assert_str_kv(const sp_gguf *g, const char *key, const char *want) {
    sp_str s;
    sp_diag d;
    sp_err err = sp_gguf_get_str(g, key, &s, &d);
    if (err)
        fail_msg("%s: %s", key, d.msg);
    if (!sp_str_eq(s, want))
        fail_msg("%s = '%.*s', expected '%s'", key, (int)s.len, s.ptr, want);
}

static void assert_absent(const sp_gguf *g, const char *key) {
    int64_t v;
    sp_diag d;
    assert_null(sp_gguf_find(g, key));
    assert_int_equal(sp_gguf_get_int(g, key, &v, &d), SP_ERR_NOT_FOUND);
}

static const sp_gguf_kv *arr_kv(const sp_gguf *g, const char *key, sp_gguf_type elem, uint64_t n) {
    const sp_gguf_kv *kv = sp_gguf_find(g, key);
    if (!kv)
        fail_msg("missing %s", key);
    assert_int_equal(kv->type, SP_GGUF_ARRAY);
    assert_int_equal(kv->arr_type, elem);
    assert_int_equal(kv->arr_n, n);
    return kv;
}

static void assert_token(const sp_gguf *g, uint64_t id, const char *want) {
    const sp_gguf_kv *kv = sp_gguf_find(g, "tokenizer.ggml.tokens");
    assert_non_null(kv);
    sp_str s;
    assert_int_equal(sp_gguf_arr_str(g, kv, id, &s), SP_OK);
    if (!sp_str_eq(s, want))
        fail_msg("token %llu = '%.*s', expected '%s'", (unsigned long long)id, (int)s.len, s.ptr,
                 want);
}

static const sp_gguf_tensor *assert_tensor(const sp_gguf *g, const char *name, sp_dtype type,
                                           int64_t ne0, int64_t ne1) {
    const sp_gguf_tensor *t = sp_gguf_find_tensor(g, name);
    if (!t)
        fail_msg("missing tensor %s", name);
    if (t->type != type || t->ne[0] != ne0 || t->ne[1] != ne1)
        fail_msg("%s: type %d [%lld, %lld], expected type %d [%lld, %lld]", name, t->type,
                 (long long)t->ne[0], (long long)t->ne[1], type, (long long)ne0, (long long)ne1);
    assert_int_equal(t->n_dims, ne1 == 1 ? 1 : 2);
    return t;
}

/* Checks that hold for every valid file, computed without the reader's own size logic. */
static void check_generic(const char *path) {
    sp_gguf *g = NULL;
    sp_diag d;
    sp_err err = sp_gguf_open(path, &g, &d);
    if (err)
        fail_msg("%s: %s: %s (offset %llu)", path, sp_err_str(err), d.msg,
                 (unsigned long long)d.offset);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(sp_gguf_file_size(g), (uint64_t)st.st_size);
    assert_int_equal(sp_gguf_version(g), 3);
    assert_int_equal(sp_gguf_alignment(g), 32);
    assert_int_equal(sp_gguf_data_offset(g) % 32, 0);
    assert_true(sp_gguf_n_kv(g) > 0);
    assert_non_null(sp_gguf_find(g, "tokenizer.ggml.tokens"));
    assert_non_null(sp_gguf_find(g, "general.architecture"));
    for (uint64_t i = 0; i < sp_gguf_n_kv(g); i++) {
        const sp_gguf_kv *kv = sp_gguf_kv_at(g, i);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.ptr);
        assert_ptr_equal(sp_gguf_find(g, key), kv);
        if (kv->type == SP_GGUF_ARRAY && kv->arr_type == SP_GGUF_STRING) {
            for (uint64_t k = 0; k < kv->arr_n; k++) {
                sp_str s;
                assert_int_equal(sp_gguf_arr_str(g, kv, k, &s), SP_OK);
                assert_true(s.ptr >= (const char *)kv->value);
            }
            sp_str s;
            assert_int_equal(sp_gguf_arr_str(g, kv, kv->arr_n, &s), SP_ERR_RANGE);
        }
    }
    assert_null(sp_gguf_kv_at(g, sp_gguf_n_kv(g)));
    for (uint64_t i = 0; i < sp_gguf_n_tensors(g); i++) {
        const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        assert_ptr_equal(sp_gguf_find_tensor(g, name), t);
        const sp_dtype_info *info = sp_dtype_get(t->type);
        assert_non_null(info);
        uint64_t n = (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
        assert_int_equal(t->n_bytes, n / (uint64_t)info->block_size * (uint64_t)info->type_size);
        assert_int_equal(t->offset % 32, 0);
        assert_true(sp_gguf_data_offset(g) + t->offset + t->n_bytes <= (uint64_t)st.st_size);
    }
    // The same image parsed from memory gives the same result.
    size_t len;
    char *buf = sp_test_read_file(path, &len);
    sp_gguf *m = NULL;
    assert_int_equal(sp_gguf_parse(buf, len, &m, &d), SP_OK);
    assert_int_equal(sp_gguf_n_kv(m), sp_gguf_n_kv(g));
    assert_int_equal(sp_gguf_n_tensors(m), sp_gguf_n_tensors(g));
    assert_int_equal(sp_gguf_data_offset(m), sp_gguf_data_offset(g));
    for (uint64_t i = 0; i < sp_gguf_n_tensors(g); i++) {
        const sp_gguf_tensor *a = sp_gguf_tensor_at(g, i), *b = sp_gguf_tensor_at(m, i);
        assert_int_equal(a->offset, b->offset);
        assert_memory_equal(a->data, b->data, a->n_bytes);
    }
    sp_gguf_close(m);
    free(buf);
    sp_gguf_close(g);
}

static void test_every_shared_file(void **state) {
    (void)state;
    const char *dirs[] = {"models", "models/random", "vocab"};
    int n_files = 0;
    for (size_t k = 0; k < SP_ARRAY_LEN(dirs); k++) {
        char *dir = sp_test_shared(dirs[k]);
        DIR *dp = opendir(dir);
        assert_non_null(dp);
        struct dirent *e;
        while ((e = readdir(dp))) {
            size_t n = strlen(e->d_name);
            if (n < 5 || strcmp(e->d_name + n - 5, ".gguf") != 0)
                continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            check_generic(path);
            n_files++;
        }
        closedir(dp);
        free(dir);
    }
    assert_int_equal(n_files, 3 + 4 + 7);
}

static void test_stories260k(void **state) {
    (void)state;
    sp_gguf *g = open_shared("models/stories260K.gguf");
    assert_str_kv(g, "general.architecture", "llama");
    assert_int_equal(get_int(g, "llama.block_count"), 5);
    assert_int_equal(get_int(g, "llama.embedding_length"), 64);
    assert_int_equal(get_int(g, "llama.attention.head_count"), 8);
    assert_int_equal(get_int(g, "llama.attention.head_count_kv"), 4);
    assert_int_equal(get_int(g, "llama.feed_forward_length"), 172);
    assert_int_equal(get_int(g, "llama.context_length"), 2048);
    assert_float_equal(get_float(g, "llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-12);
    assert_absent(g, "llama.rope.freq_base");
    assert_absent(g, "tokenizer.ggml.add_bos_token");
    assert_str_kv(g, "tokenizer.ggml.model", "llama");

    arr_kv(g, "tokenizer.ggml.tokens", SP_GGUF_STRING, 512);
    assert_token(g, 0, "<unk>");
    assert_token(g, 1, "<s>");
    assert_token(g, 2, "</s>");
    assert_token(g, 3, "<0x00>");
    assert_token(g, 258, "<0xFF>");
    // Prompt tokens from the README: <s> ▁Once ▁upon ▁a ▁time = 1 403 407 261 378.
    assert_token(g, 403, "\xe2\x96\x81Once");
    assert_token(g, 407, "\xe2\x96\x81upon");
    assert_token(g, 261,
                 "\xe2\x96\x81"
                 "a");
    assert_token(g, 378, "\xe2\x96\x81time");
    // Scores 0, -1, ..., -252 for ids 259..511.
    const sp_gguf_kv *scores = arr_kv(g, "tokenizer.ggml.scores", SP_GGUF_FLOAT32, 512);
    for (uint64_t k = 0; k < 253; k++) {
        double s;
        assert_int_equal(sp_gguf_arr_float(scores, 259 + k, &s), SP_OK);
        assert_float_equal(s, -(double)k, 0.0);
    }
    int64_t iv;
    assert_int_equal(sp_gguf_arr_int(scores, 0, &iv), SP_ERR_FORMAT);
    assert_int_equal(sp_gguf_arr_float(scores, 512, &(double){0}), SP_ERR_RANGE);

    const sp_gguf_tensor *emb = assert_tensor(g, "token_embd.weight", SP_DTYPE_F32, 64, 512);
    assert_int_equal(emb->n_bytes, 64 * 512 * 4);
    const sp_gguf_tensor *out = assert_tensor(g, "output.weight", SP_DTYPE_F32, 64, 512);
    assert_memory_equal(out->data, emb->data, emb->n_bytes); // "an exact copy"
    assert_int_equal(sp_gguf_n_tensors(g), 3 + 5 * 9);

    // The llama2.c checkpoint stores the same F32 values: a 7-int header (64, 172, 5, 8, 4,
    // 512, 512), the embedding table, then rms_att_weight for all layers.
    size_t len;
    char *bin_path = sp_test_shared("models/stories260K.bin");
    char *bin = sp_test_read_file(bin_path, &len);
    int32_t hdr[7];
    memcpy(hdr, bin, sizeof hdr);
    const int32_t want_hdr[7] = {64, 172, 5, 8, 4, 512, 512};
    assert_memory_equal(hdr, want_hdr, sizeof hdr);
    assert_memory_equal(bin + 28, emb->data, emb->n_bytes);
    for (int l = 0; l < 5; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        const sp_gguf_tensor *t = assert_tensor(g, name, SP_DTYPE_F32, 64, 1);
        assert_memory_equal(bin + 28 + emb->n_bytes + (size_t)l * 64 * 4, t->data, 64 * 4);
    }
    free(bin);
    free(bin_path);
    sp_gguf_close(g);
}

/* Finds a tensor in a safetensors file: 8-byte header length, JSON header, data. */
static const char *safetensor(const char *file, size_t file_len, const char *name,
                              size_t *n_bytes) {
    uint64_t hlen;
    memcpy(&hlen, file, 8);
    assert_true(8 + hlen <= file_len);
    json_error_t jerr;
    json_t *h = json_loadb(file + 8, hlen, 0, &jerr);
    assert_non_null(h);
    json_t *t = json_object_get(h, name);
    assert_non_null(t);
    assert_string_equal(json_string_value(json_object_get(t, "dtype")), "F32");
    json_t *offs = json_object_get(t, "data_offsets");
    size_t b = (size_t)json_integer_value(json_array_get(offs, 0));
    size_t e = (size_t)json_integer_value(json_array_get(offs, 1));
    json_decref(h);
    assert_true(8 + hlen + e <= file_len);
    *n_bytes = e - b;
    return file + 8 + hlen + b;
}

static void check_656k(const char *rel, bool q8) {
    sp_gguf *g = open_shared(rel);
    assert_str_kv(g, "general.architecture", "llama");
    assert_int_equal(get_int(g, "llama.block_count"), 2);
    assert_int_equal(get_int(g, "llama.embedding_length"), 128);
    assert_int_equal(get_int(g, "llama.attention.head_count"), 8);
    assert_int_equal(get_int(g, "llama.attention.head_count_kv"), 4);
    assert_int_equal(get_int(g, "llama.feed_forward_length"), 384);
    assert_int_equal(get_int(g, "llama.context_length"), 512);
    assert_float_equal(get_float(g, "llama.attention.layer_norm_rms_epsilon"), 1e-6, 1e-12);
    assert_float_equal(get_float(g, "llama.rope.freq_base"), 10000.0, 0.0);
    arr_kv(g, "tokenizer.ggml.tokens", SP_GGUF_STRING, 2048);
    assert_token(g, 0, "<unk>");
    assert_token(g, 1, "<|start_story|>");
    assert_token(g, 2, "<|end_story|>");
    assert_null(sp_gguf_find_tensor(g, "output.weight")); // tied head
    sp_dtype mat = q8 ? SP_DTYPE_Q8_0 : SP_DTYPE_F32;
    const sp_gguf_tensor *emb = assert_tensor(g, "token_embd.weight", mat, 128, 2048);
    assert_tensor(g, "blk.1.ffn_down.weight", mat, 384, 128);
    assert_tensor(g, "blk.0.attn_k.weight", mat, 128, 64);
    const sp_gguf_tensor *norm = assert_tensor(g, "output_norm.weight", SP_DTYPE_F32, 128, 1);
    for (uint64_t i = 0; i < sp_gguf_n_tensors(g); i++) {
        const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
        assert_int_equal(t->type, t->n_dims == 1 ? SP_DTYPE_F32 : mat);
    }
    // The F32 file was converted from the safetensors: the embedding and the final norm are
    // stored unchanged.
    size_t len, n;
    char *st_path = sp_test_shared("models/TinyStories-656K-hf/model.safetensors");
    char *st = sp_test_read_file(st_path, &len);
    const char *w = safetensor(st, len, "model.norm.weight", &n);
    assert_int_equal(n, norm->n_bytes);
    assert_memory_equal(w, norm->data, n);
    if (!q8) {
        // Tied: the safetensors store the embedding once, as lm_head.weight.
        w = safetensor(st, len, "lm_head.weight", &n);
        assert_int_equal(n, emb->n_bytes);
        assert_memory_equal(w, emb->data, n);
    } else {
        assert_int_equal(emb->n_bytes, 2048 * 4 * 34);
        assert_int_equal(get_int(g, "general.file_type"), 7); // MOSTLY_Q8_0
    }
    free(st);
    free(st_path);
    sp_gguf_close(g);
}

static void test_tinystories_656k(void **state) {
    (void)state;
    check_656k("models/TinyStories-656K-F32.gguf", false);
    check_656k("models/TinyStories-656K-Q8_0.gguf", true);
}

/* The random models copied their vocabularies byte for byte from ../vocab. */
static void assert_same_strings(const sp_gguf *a, const sp_gguf *b, const char *key) {
    const sp_gguf_kv *x = sp_gguf_find(a, key), *y = sp_gguf_find(b, key);
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal(x->arr_n, y->arr_n);
    for (uint64_t i = 0; i < x->arr_n; i++) {
        sp_str s, t;
        assert_int_equal(sp_gguf_arr_str(a, x, i, &s), SP_OK);
        assert_int_equal(sp_gguf_arr_str(b, y, i, &t), SP_OK);
        assert_int_equal(s.len, t.len);
        assert_memory_equal(s.ptr, t.ptr, s.len);
    }
}

static void test_qwen2(void **state) {
    (void)state;
    sp_gguf *g = open_shared("models/random/qwen2-gpt2vocab-f32.gguf");
    assert_str_kv(g, "general.architecture", "qwen2");
    assert_int_equal(get_int(g, "qwen2.block_count"), 2);
    assert_int_equal(get_int(g, "qwen2.embedding_length"), 64);
    assert_int_equal(get_int(g, "qwen2.attention.head_count"), 4);
    assert_int_equal(get_int(g, "qwen2.attention.head_count_kv"), 2);
    assert_int_equal(get_int(g, "qwen2.feed_forward_length"), 128);
    assert_int_equal(get_int(g, "qwen2.context_length"), 32768);
    assert_float_equal(get_float(g, "qwen2.rope.freq_base"), 1e6, 0.0);
    assert_float_equal(get_float(g, "qwen2.attention.layer_norm_rms_epsilon"), 1e-6, 1e-12);
    assert_absent(g, "qwen2.rope.dimension_count");
    assert_absent(g, "tokenizer.ggml.add_bos_token");
    assert_str_kv(g, "tokenizer.ggml.model", "gpt2");
    assert_str_kv(g, "tokenizer.ggml.pre", "gpt-2");
    arr_kv(g, "tokenizer.ggml.tokens", SP_GGUF_STRING, 50257);
    arr_kv(g, "tokenizer.ggml.merges", SP_GGUF_STRING, 50000);
    assert_int_equal(get_int(g, "tokenizer.ggml.bos_token_id"), 50256);
    assert_int_equal(get_int(g, "tokenizer.ggml.eos_token_id"), 50256);
    assert_tensor(g, "token_embd.weight", SP_DTYPE_Q8_0, 64, 50257);
    assert_null(sp_gguf_find_tensor(g, "output.weight"));
    assert_tensor(g, "blk.1.attn_q.bias", SP_DTYPE_F32, 64, 1);
    assert_tensor(g, "blk.1.attn_k.bias", SP_DTYPE_F32, 32, 1);
    assert_tensor(g, "blk.1.attn_v.bias", SP_DTYPE_F32, 32, 1);
    assert_tensor(g, "blk.0.attn_k.weight", SP_DTYPE_F32, 64, 32);
    for (uint64_t i = 0; i < sp_gguf_n_tensors(g); i++) {
        const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
        if (!sp_str_eq(t->name, "token_embd.weight"))
            assert_int_equal(t->type, SP_DTYPE_F32);
    }
    sp_gguf *v = open_shared("vocab/ggml-vocab-gpt-2.gguf");
    assert_int_equal(sp_gguf_n_tensors(v), 0);
    assert_same_strings(g, v, "tokenizer.ggml.tokens");
    assert_same_strings(g, v, "tokenizer.ggml.merges");
    sp_gguf_close(v);
    sp_gguf_close(g);
}

static void test_llama_spm_q4k(void **state) {
    (void)state;
    sp_gguf *g = open_shared("models/random/llama-spm-q4k.gguf");
    assert_str_kv(g, "general.architecture", "llama");
    assert_int_equal(get_int(g, "llama.block_count"), 2);
    assert_int_equal(get_int(g, "llama.embedding_length"), 256);
    assert_int_equal(get_int(g, "llama.attention.head_count"), 8);
    assert_int_equal(get_int(g, "llama.attention.head_count_kv"), 2);
    assert_int_equal(get_int(g, "llama.feed_forward_length"), 512);
    assert_int_equal(get_int(g, "llama.context_length"), 4096);
    assert_int_equal(get_int(g, "llama.rope.dimension_count"), 32);
    assert_int_equal(get_int(g, "general.file_type"), 15);
    assert_int_equal(get_int(g, "tokenizer.ggml.bos_token_id"), 1);
    assert_int_equal(get_int(g, "tokenizer.ggml.eos_token_id"), 2);
    assert_int_equal(get_int(g, "tokenizer.ggml.unknown_token_id"), 0);
    arr_kv(g, "tokenizer.ggml.scores", SP_GGUF_FLOAT32, 32000);
    arr_kv(g, "tokenizer.ggml.token_type", SP_GGUF_INT32, 32000);
    for (int l = 0; l < 2; l++) {
        char name[64];
#define T(suffix, type, a, b)                                                                      \
    snprintf(name, sizeof name, "blk.%d." suffix, l);                                              \
    assert_tensor(g, name, type, a, b)
        T("attn_q.weight", SP_DTYPE_Q4_K, 256, 256);
        T("attn_k.weight", SP_DTYPE_Q4_K, 256, 64);
        T("attn_output.weight", SP_DTYPE_Q4_K, 256, 256);
        T("ffn_gate.weight", SP_DTYPE_Q4_K, 256, 512);
        T("ffn_up.weight", SP_DTYPE_Q4_K, 256, 512);
        T("attn_v.weight", l == 0 ? SP_DTYPE_Q4_K : SP_DTYPE_Q6_K, 256, 64);
        T("ffn_down.weight", l == 0 ? SP_DTYPE_Q4_K : SP_DTYPE_Q6_K, 512, 256);
        T("attn_norm.weight", SP_DTYPE_F32, 256, 1);
        T("ffn_norm.weight", SP_DTYPE_F32, 256, 1);
#undef T
    }
    const sp_gguf_tensor *emb = assert_tensor(g, "token_embd.weight", SP_DTYPE_Q6_K, 256, 32000);
    assert_int_equal(emb->n_bytes, 32000 * 210);
    assert_null(sp_gguf_find_tensor(g, "output.weight"));
    sp_gguf *v = open_shared("vocab/ggml-vocab-llama-spm.gguf");
    assert_same_strings(g, v, "tokenizer.ggml.tokens");
    sp_gguf_close(v);
    sp_gguf_close(g);
}

static void test_llama3rope(void **state) {
    (void)state;
    sp_gguf *g = open_shared("models/random/llama3rope-spm-f16.gguf");
    assert_str_kv(g, "general.architecture", "llama");
    assert_int_equal(get_int(g, "llama.attention.head_count"), 4);
    assert_int_equal(get_int(g, "llama.attention.head_count_kv"), 1);
    assert_int_equal(get_int(g, "llama.context_length"), 131072);
    assert_int_equal(get_int(g, "llama.rope.dimension_count"), 32);
    assert_float_equal(get_float(g, "llama.rope.freq_base"), 500000.0, 0.0);
    assert_tensor(g, "token_embd.weight", SP_DTYPE_Q8_0, 128, 32000);
    assert_tensor(g, "blk.0.attn_k.weight", SP_DTYPE_F16, 128, 32);
    assert_tensor(g, "blk.1.ffn_down.weight", SP_DTYPE_F16, 256, 128);
    const sp_gguf_tensor *rf = assert_tensor(g, "rope_freqs.weight", SP_DTYPE_F32, 16, 1);
    const float want[16] = {1, 1, 1, 1, 1, 1, 1, 1, 2.694530f, 8, 8, 8, 8, 8, 8, 8};
    float got[16];
    memcpy(got, rf->data, sizeof got);
    for (int i = 0; i < 16; i++)
        assert_float_equal(got[i], want[i], 1e-5);
    sp_gguf_close(g);
}

static void test_phi3(void **state) {
    (void)state;
    sp_gguf *g = open_shared("models/random/phi3-spm-f32.gguf");
    assert_str_kv(g, "general.architecture", "phi3");
    assert_int_equal(get_int(g, "phi3.attention.sliding_window"), 2047);
    assert_int_equal(get_int(g, "phi3.rope.dimension_count"), 16);
    assert_int_equal(get_int(g, "phi3.rope.scaling.original_context_length"), 4096);
    assert_int_equal(get_int(g, "tokenizer.ggml.eos_token_id"), 32000);
    arr_kv(g, "tokenizer.ggml.tokens", SP_GGUF_STRING, 32064);
    assert_token(g, 32000, "<|endoftext|>");
    assert_token(g, 32007, "<|end|>");
    assert_non_null(sp_gguf_find(g, "tokenizer.chat_template"));
    assert_tensor(g, "blk.0.attn_qkv.weight", SP_DTYPE_F32, 64, 192);
    assert_tensor(g, "blk.1.ffn_up.weight", SP_DTYPE_F32, 64, 256);
    assert_tensor(g, "token_embd.weight", SP_DTYPE_Q8_0, 64, 32064);
    assert_tensor(g, "output.weight", SP_DTYPE_F16, 64, 32064);
    sp_gguf *v = open_shared("vocab/ggml-vocab-phi-3.gguf");
    assert_same_strings(g, v, "tokenizer.ggml.tokens");
    sp_gguf_close(v);
    sp_gguf_close(g);
}

static void test_getter_types(void **state) {
    (void)state;
    sp_gguf *g = open_shared("models/stories260K.gguf");
    sp_diag d;
    int64_t i;
    double f;
    bool b;
    sp_str s;
    // A string is not a number, a u32 is not a string, an array is not a scalar.
    assert_int_equal(sp_gguf_get_int(g, "general.architecture", &i, &d), SP_ERR_FORMAT);
    assert_true(strstr(d.msg, "general.architecture") != NULL);
    assert_int_equal(d.offset, sp_gguf_find(g, "general.architecture")->offset);
    assert_int_equal(sp_gguf_get_str(g, "llama.block_count", &s, &d), SP_ERR_FORMAT);
    assert_int_equal(sp_gguf_get_bool(g, "llama.block_count", &b, &d), SP_ERR_FORMAT);
    assert_int_equal(sp_gguf_get_float(g, "tokenizer.ggml.scores", &f, &d), SP_ERR_FORMAT);
    assert_int_equal(sp_gguf_get_int(g, "no.such.key", &i, &d), SP_ERR_NOT_FOUND);
    // A u32 reads as a float too; the f32 epsilon does not read as an int.
    assert_int_equal(sp_gguf_get_float(g, "llama.block_count", &f, &d), SP_OK);
    assert_float_equal(f, 5.0, 0.0);
    assert_int_equal(sp_gguf_get_int(g, "llama.attention.layer_norm_rms_epsilon", &i, &d),
                     SP_ERR_FORMAT);
    // token_type is i32: readable as int and float, not as strings.
    const sp_gguf_kv *tt = sp_gguf_find(g, "tokenizer.ggml.token_type");
    assert_int_equal(sp_gguf_arr_int(tt, 1, &i), SP_OK);
    assert_int_equal(i, 3); // <s> is a CONTROL token
    assert_int_equal(sp_gguf_arr_str(g, tt, 0, &s), SP_ERR_FORMAT);
    sp_gguf_kv fake = *tt;
    assert_int_equal(sp_gguf_arr_str(g, &fake, 0, &s), SP_ERR_INVALID);
    sp_gguf_close(g);
}

static void test_open_errors(void **state) {
    (void)state;
    sp_gguf *g = NULL;
    sp_diag d;
    char path[512];
    snprintf(path, sizeof path, "%s/missing.gguf", sp_test_tmpdir());
    assert_int_equal(sp_gguf_open(path, &g, &d), SP_ERR_IO);
    assert_true(strstr(d.msg, "No such file or directory") != NULL);
    assert_true(strstr(d.msg, "missing.gguf") != NULL);
    assert_int_equal(sp_gguf_open(sp_test_tmpdir(), &g, &d), SP_ERR_IO);
    assert_true(strstr(d.msg, "Is a directory") != NULL);
    snprintf(path, sizeof path, "%s/empty.gguf", sp_test_tmpdir());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(sp_gguf_open(path, &g, &d), SP_ERR_TRUNCATED);
    assert_true(strstr(d.msg, "empty") != NULL);
    assert_int_equal(sp_gguf_parse("", 0, &g, &d), SP_ERR_TRUNCATED);
    // A file that is not GGUF at all.
    char *readme = sp_test_shared("models/README.md");
    assert_int_equal(sp_gguf_open(readme, &g, &d), SP_ERR_FORMAT);
    assert_int_equal(d.offset, 0);
    free(readme);
    assert_null(g);
    sp_gguf_close(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_shared_file),
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_tinystories_656k),
        cmocka_unit_test(test_qwen2),
        cmocka_unit_test(test_llama_spm_q4k),
        cmocka_unit_test(test_llama3rope),
        cmocka_unit_test(test_phi3),
        cmocka_unit_test(test_getter_types),
        cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
