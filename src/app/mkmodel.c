/* `spindle mkmodel`: writes a Llama-architecture GGUF with seeded random weights of real shapes
 * and a real vocabulary copied from another GGUF. Benchmarks and tests use these in place of
 * trained models that cannot be downloaded. The files follow llama.cpp's conventions (tensor
 * names, metadata keys), so llama.cpp loads them too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "app/cli.h"
#include "app/commands.h"
#include "base/util.h"
#include "gguf/gguf.h"
#include "sample/rng.h"
#include "tensor/quant.h"

typedef struct mk_shape {
    const char *name;
    int32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
} mk_shape;

static const mk_shape presets[] = {
    {"tiny", 64, 2, 4, 2, 256, 2048},
    {"125m", 768, 12, 12, 4, 2048, 2048},
    {"1.1b", 2048, 22, 32, 4, 5632, 2048},
};

/* A mix of types per matrix, as llama.cpp's llama-quantize presets make them. */
typedef enum mk_mix { MK_MIX_NONE, MK_MIX_Q4_K_M, MK_MIX_Q5_K_M } mk_mix;

typedef struct mk_opts {
    const char *out;
    const char *vocab_from;
    mk_shape shape;
    sp_dtype type; // every matrix's type, or a mix's base type
    mk_mix mix;
    uint64_t seed;
    bool tied;
    const char *add[16]; // --add-token: control tokens appended to the vocabulary
    int n_add;
} mk_opts;

static void mk_usage(FILE *f) {
    fprintf(
        f, "usage: spindle mkmodel -o OUT.gguf [--preset NAME | --n-embd N --n-layer N --n-head N\n"
           "                       --n-head-kv N --n-ff N] [--ctx N] [--type TYPE] [--seed S]\n"
           "                       [--vocab-from FILE.gguf] [--add-token TEXT]... [--tied]\n\n"
           "Writes a Llama-architecture model with seeded random weights (normal, scaled by\n"
           "1/sqrt(fan_in), so activations stay finite) and the vocabulary of another GGUF.\n\n"
           "  -o, --output FILE      output path (required)\n"
           "  --preset NAME          tiny (64/2 layers/4 heads/2 KV/ffn 256), 125m "
           "(768/12/12/4/2048),\n"
           "                         1.1b (2048/22/32/4/5632, the TinyLlama shape)\n"
           "  --n-embd, --n-layer, --n-head, --n-head-kv, --n-ff N   shape (override the preset)\n"
           "  --ctx N                context length written to the metadata (default 2048)\n"
           "  --type TYPE            weight type: f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k,\n"
           "                         or a mix, q4_k_m or q5_k_m (default f32); a matrix whose\n"
           "                         rows do not fit the type's blocks is stored as q8_0, or f16\n"
           "                         if that does not fit either.\n"
           "                         The mixes give every matrix the type llama.cpp's\n"
           "                         llama-quantize Q4_K_M / Q5_K_M presets give it (llama\n"
           "                         architecture): q4_k (q5_k) except the output head (the\n"
           "                         embedding with --tied) q6_k, and attn_v and ffn_down q6_k\n"
           "                         in layers i < n/8, i >= 7n/8 and (i - n/8) %% 3 == 2; with\n"
           "                         80 layers and grouped KV heads, q4_k attn_v becomes q5_k.\n"
           "                         Rows that do not fit 256-value blocks (n_embd or n_ff not\n"
           "                         a multiple of 256) are q8_0, where llama-quantize would\n"
           "                         write q5_0 / q5_1, which Spindle does not compute\n"
           "  --seed S               random seed (default 1)\n"
           "  --vocab-from FILE      GGUF whose tokenizer.* metadata is copied (default\n"
           "                         ../shared/vocab/ggml-vocab-llama-spm.gguf)\n"
           "  --add-token TEXT       append a control token to the vocabulary (up to 16), such\n"
           "                         as a chat format's markers that the copied vocabulary\n"
           "                         lacks: [TOOL_CALLS] for a Mistral-style model\n"
           "  --tied                 share the output head with the token embedding\n");
}

static bool parse_i32(const char *s, int32_t lo, int32_t hi, int32_t *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        return false;
    *out = (int32_t)v;
    return true;
}

/* Normal samples via Box-Muller. */
static float randn(sp_rng *r) {
    double u1 = sp_rng_uniform(r), u2 = sp_rng_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Picks the stored type of a matrix with rows of n_in values. */
static sp_dtype fit_type(sp_dtype want, int64_t n_in) {
    const sp_dtype order[] = {want, SP_DTYPE_Q8_0, SP_DTYPE_F16};
    for (size_t i = 0; i < SP_ARRAY_LEN(order); i++) {
        const sp_dtype_info *t = sp_dtype_get(order[i]);
        if (n_in % t->block_size == 0)
            return order[i];
    }
    return SP_DTYPE_F16;
}

/* llama.cpp's use_more_bits (src/llama-quant.cpp): the layers whose attn_v and ffn_down the
 * _M mixes keep at q6_k. */
static bool use_more_bits(int32_t il, int32_t n_layer) {
    return il < n_layer / 8 || il >= 7 * n_layer / 8 || (il - n_layer / 8) % 3 == 2;
}

/* The type of a matrix (rows of n_in values) named `what` ("token_embd", "output", or a layer
 * tensor such as "attn_v" of layer il): --type, or the mix's choice, as llama.cpp b4748's
 * llama_tensor_get_type makes it for the llama architecture without experts; then fitted to
 * n_in (fit_type). */
static sp_dtype matrix_type(const mk_opts *o, const char *what, int32_t il, int64_t n_in) {
    sp_dtype t = o->type;
    if (o->mix != MK_MIX_NONE) {
        const int32_t n_layer = o->shape.n_layer;
        const bool head = !strcmp(what, "output") || (o->tied && !strcmp(what, "token_embd"));
        if (head) {
            // The output head (or the embedding that stands for it) gets 6 bits, or q8_0 when
            // its rows do not fit 256-value blocks.
            t = n_in % SP_QK_K ? SP_DTYPE_Q8_0 : SP_DTYPE_Q6_K;
        } else if (!strcmp(what, "attn_v")) {
            if (use_more_bits(il, n_layer))
                t = SP_DTYPE_Q6_K;
            // llama.cpp's 70B type: 80 layers with grouped KV heads.
            if (t == SP_DTYPE_Q4_K && n_layer == 80 && o->shape.n_head != o->shape.n_head_kv)
                t = SP_DTYPE_Q5_K;
        } else if (!strcmp(what, "ffn_down") && use_more_bits(il, n_layer)) {
            t = SP_DTYPE_Q6_K;
        }
    }
    return fit_type(t, n_in);
}

typedef struct mk_state {
    sp_gguf_writer *w;
    void **bufs; // tensor data kept until the file is saved
    size_t n_bufs, cap_bufs;
    sp_rng rng;
    uint64_t done, total; // values generated, for progress
    bool tty;
} mk_state;

static void progress(mk_state *st, const char *name) {
    if (!st->tty)
        return;
    fprintf(stderr, "\rmkmodel: %3d%% %-32s", (int)(100.0 * (double)st->done / (double)st->total),
            name);
    fflush(stderr);
}

/* Adds a tensor of rows x n_in values drawn as mean + std * N(0, 1), stored as `type`. */
static sp_err add_random(mk_state *st, const char *name, sp_dtype type, int64_t n_in, int64_t rows,
                         float mean, float std) {
    progress(st, name);
    uint64_t row_bytes;
    sp_err err = sp_dtype_row_bytes(type, (uint64_t)n_in, &row_bytes);
    if (err)
        return err;
    if (st->n_bufs == st->cap_bufs) {
        size_t cap = st->cap_bufs ? st->cap_bufs * 2 : 64;
        void **nb = realloc(st->bufs, cap * sizeof *nb);
        if (!nb)
            return SP_ERR_NOMEM;
        st->bufs = nb;
        st->cap_bufs = cap;
    }
    uint8_t *data = malloc(row_bytes * (uint64_t)rows);
    float *row = malloc((size_t)n_in * sizeof(float));
    if (!data || !row) {
        free(data);
        free(row);
        return SP_ERR_NOMEM;
    }
    st->bufs[st->n_bufs++] = data;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < n_in; i++)
            row[i] = mean + std * randn(&st->rng);
        sp_quantize_row(type, row, data + (uint64_t)r * row_bytes, n_in);
        st->done += (uint64_t)n_in;
        if ((r & 1023) == 1023)
            progress(st, name);
    }
    free(row);
    int64_t ne[2] = {n_in, rows};
    return sp_gguf_writer_add_tensor(st->w, name, type, rows == 1 ? 1 : 2, ne, data,
                                     row_bytes * (uint64_t)rows);
}

static bool skip_non_tokenizer(sp_str key, void *ctx) {
    (void)ctx;
    return !(key.len > 10 && !memcmp(key.ptr, "tokenizer.", 10));
}

/* Appends the --add-token control tokens to the vocabulary copied from `vocab` (its tokens,
 * their types and scores; a vocabulary without types or scores gets normal tokens and zeros). */
static sp_err add_tokens(sp_gguf_writer *w, const sp_gguf *vocab, const mk_opts *o) {
    const sp_gguf_kv *toks = sp_gguf_find(vocab, "tokenizer.ggml.tokens");
    const sp_gguf_kv *types_kv = sp_gguf_find(vocab, "tokenizer.ggml.token_type");
    const sp_gguf_kv *scores_kv = sp_gguf_find(vocab, "tokenizer.ggml.scores");
    const uint64_t n = toks->arr_n, m = n + (uint64_t)o->n_add;
    sp_str *strs = malloc(m * sizeof *strs);
    int32_t *types = malloc(m * sizeof *types);
    float *scores = malloc(m * sizeof *scores);
    sp_err err = strs && types && scores ? SP_OK : SP_ERR_NOMEM;
    for (uint64_t i = 0; i < m && !err; i++) {
        int64_t t = 1; // llama.cpp's LLAMA_TOKEN_TYPE_NORMAL; CONTROL is 3
        double sc = 0.0;
        if (i >= n) {
            strs[i] = (sp_str){o->add[i - n], strlen(o->add[i - n])};
            t = 3;
        } else if (!(err = sp_gguf_arr_str(vocab, toks, i, &strs[i])) && types_kv) {
            err = sp_gguf_arr_int(types_kv, i, &t);
        }
        if (!err && i < n && scores_kv)
            err = sp_gguf_arr_float(scores_kv, i, &sc);
        types[i] = (int32_t)t;
        scores[i] = (float)sc;
    }
    if (!err)
        err = sp_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", SP_GGUF_STRING, strs, m);
    if (!err)
        err = sp_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SP_GGUF_INT32, types, m);
    if (!err)
        err = sp_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SP_GGUF_FLOAT32, scores, m);
    free(strs);
    free(types);
    free(scores);
    return err;
}

/* general.file_type: llama.cpp's llama_ftype of the mixes (MOSTLY_Q4_K_M 15, MOSTLY_Q5_K_M
 * 17); otherwise 0 for f32 and 1 for the rest, as before the mixes. */
static uint32_t file_type(const mk_opts *o) {
    switch (o->mix) {
    case MK_MIX_Q4_K_M:
        return 15;
    case MK_MIX_Q5_K_M:
        return 17;
    default:
        return o->type == SP_DTYPE_F32 ? 0 : 1;
    }
}

/* The --type value as given. */
static const char *type_name(const mk_opts *o) {
    return o->mix == MK_MIX_Q4_K_M   ? "q4_k_m"
           : o->mix == MK_MIX_Q5_K_M ? "q5_k_m"
                                     : sp_dtype_get(o->type)->name;
}

static int mk_run(const mk_opts *o) {
    sp_diag diag;
    sp_diag_clear(&diag);
    sp_gguf *vocab = NULL;
    mk_state st = {.tty = isatty(2)};
    int rc = 1;
    sp_err err = sp_gguf_open(o->vocab_from, &vocab, &diag);
    if (err) {
        fprintf(stderr, "spindle mkmodel: cannot read vocabulary '%s': %s (%s)\n", o->vocab_from,
                diag.msg, sp_err_str(err));
        return 1;
    }
    const sp_gguf_kv *toks = sp_gguf_find(vocab, "tokenizer.ggml.tokens");
    if (!toks || toks->type != SP_GGUF_ARRAY || toks->arr_n == 0 || toks->arr_n > (1u << 24)) {
        fprintf(stderr, "spindle mkmodel: '%s' has no tokenizer.ggml.tokens array\n",
                o->vocab_from);
        goto done;
    }
    const mk_shape *s = &o->shape;
    const int64_t V = (int64_t)toks->arr_n + o->n_add, E = s->n_embd, F = s->n_ff;
    const int64_t D = E / s->n_head, nkv = (int64_t)s->n_head_kv * D;
    st.total = (uint64_t)(V * E * (o->tied ? 1 : 2)) +
               (uint64_t)s->n_layer * (uint64_t)(2 * E * E + 2 * E * nkv + 3 * E * F);
    sp_rng_seed(&st.rng, o->seed);

    if ((err = sp_gguf_writer_create(&st.w)))
        goto fail;
    char name[64];
    snprintf(name, sizeof name, "spindle-random-%s", s->name ? s->name : "custom");
    if ((err = sp_gguf_writer_set_str(st.w, "general.architecture", "llama")) ||
        (err = sp_gguf_writer_set_str(st.w, "general.name", name)) ||
        (err = sp_gguf_writer_set_u32(st.w, "general.file_type", file_type(o))) ||
        (err = sp_gguf_writer_set_u32(st.w, "llama.context_length", (uint32_t)s->n_ctx)) ||
        (err = sp_gguf_writer_set_u32(st.w, "llama.embedding_length", (uint32_t)E)) ||
        (err = sp_gguf_writer_set_u32(st.w, "llama.block_count", (uint32_t)s->n_layer)) ||
        (err = sp_gguf_writer_set_u32(st.w, "llama.feed_forward_length", (uint32_t)F)) ||
        (err = sp_gguf_writer_set_u32(st.w, "llama.attention.head_count", (uint32_t)s->n_head)) ||
        (err = sp_gguf_writer_set_u32(st.w, "llama.attention.head_count_kv",
                                      (uint32_t)s->n_head_kv)) ||
        (err = sp_gguf_writer_set_u32(st.w, "llama.rope.dimension_count", (uint32_t)D)) ||
        (err = sp_gguf_writer_set_f32(st.w, "llama.rope.freq_base", 10000.0f)) ||
        (err = sp_gguf_writer_set_f32(st.w, "llama.attention.layer_norm_rms_epsilon", 1e-5f)) ||
        (err = sp_gguf_writer_set_u32(st.w, "llama.vocab_size", (uint32_t)V)) ||
        (err = sp_gguf_writer_copy_kv(st.w, vocab, skip_non_tokenizer, NULL)) ||
        (o->n_add && (err = add_tokens(st.w, vocab, o))))
        goto fail;

    // Small embeddings so the blocks dominate the residual stream; matrices scaled by
    // 1/sqrt(fan_in) keep every activation of order one.
    const float inv_e = 1.0f / sqrtf((float)E), inv_f = 1.0f / sqrtf((float)F);
    if ((err = add_random(&st, "token_embd.weight", matrix_type(o, "token_embd", -1, E), E, V, 0.0f,
                          0.1f)))
        goto fail;
    for (int32_t il = 0; il < s->n_layer; il++) {
        struct {
            const char *what;
            int64_t n_in, rows;
            float mean, std;
        } ts[] = {
            {"attn_norm", E, 1, 1.0f, 0.05f},       {"attn_q", E, E, 0.0f, 1.5f * inv_e},
            {"attn_k", E, nkv, 0.0f, 1.5f * inv_e}, {"attn_v", E, nkv, 0.0f, inv_e},
            {"attn_output", E, E, 0.0f, inv_e},     {"ffn_norm", E, 1, 1.0f, 0.05f},
            {"ffn_gate", E, F, 0.0f, inv_e},        {"ffn_up", E, F, 0.0f, inv_e},
            {"ffn_down", F, E, 0.0f, inv_f},
        };
        for (size_t i = 0; i < SP_ARRAY_LEN(ts); i++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", il, ts[i].what);
            sp_dtype t =
                ts[i].rows == 1 ? SP_DTYPE_F32 : matrix_type(o, ts[i].what, il, ts[i].n_in);
            if ((err = add_random(&st, name, t, ts[i].n_in, ts[i].rows, ts[i].mean, ts[i].std)))
                goto fail;
        }
    }
    // The final norm's gain spreads the logits (standard deviation of a few units).
    if ((err = add_random(&st, "output_norm.weight", SP_DTYPE_F32, E, 1, o->tied ? 4.0f : 1.0f,
                          0.0f)))
        goto fail;
    if (!o->tied && (err = add_random(&st, "output.weight", matrix_type(o, "output", -1, E), E, V,
                                      0.0f, 4.0f * inv_e)))
        goto fail;
    progress(&st, "writing");
    if ((err = sp_gguf_writer_save(st.w, o->out, &diag)))
        goto fail;
    if (st.tty)
        fprintf(stderr, "\r%60s\r", "");
    fprintf(stderr, "spindle mkmodel: wrote %s (%s, %lld-token vocabulary, %s)\n", o->out,
            s->name ? s->name : "custom shape", (long long)V, type_name(o));
    rc = 0;
    goto done;
fail:
    if (st.tty)
        fprintf(stderr, "\n");
    fprintf(stderr, "spindle mkmodel: %s%s%s\n", sp_err_str(err), diag.msg[0] ? ": " : "",
            diag.msg);
done:
    sp_gguf_writer_destroy(st.w);
    for (size_t i = 0; i < st.n_bufs; i++)
        free(st.bufs[i]);
    free(st.bufs);
    sp_gguf_close(vocab);
    return rc;
}

int sp_cmd_mkmodel(int argc, char **argv) {
    mk_opts o = {.vocab_from = "../shared/vocab/ggml-vocab-llama-spm.gguf",
                 .shape = presets[0],
                 .type = SP_DTYPE_F32,
                 .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            mk_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--tied")) {
            o.tied = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "spindle mkmodel: option '%s' needs a value (see --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            o.out = v;
        } else if (!strcmp(a, "--vocab-from")) {
            o.vocab_from = v;
        } else if (!strcmp(a, "--add-token")) {
            ok = *v && o.n_add < (int)SP_ARRAY_LEN(o.add);
            if (ok)
                o.add[o.n_add++] = v;
        } else if (!strcmp(a, "--preset")) {
            ok = false;
            for (size_t p = 0; p < SP_ARRAY_LEN(presets); p++)
                if (!strcmp(v, presets[p].name)) {
                    o.shape = presets[p];
                    ok = true;
                }
        } else if (!strcmp(a, "--type")) {
            o.mix = !strcasecmp(v, "q4_k_m")   ? MK_MIX_Q4_K_M
                    : !strcasecmp(v, "q5_k_m") ? MK_MIX_Q5_K_M
                                               : MK_MIX_NONE;
            if (o.mix != MK_MIX_NONE)
                o.type = o.mix == MK_MIX_Q4_K_M ? SP_DTYPE_Q4_K : SP_DTYPE_Q5_K;
            else
                ok = sp_dtype_from_name(v, &o.type) && sp_dtype_get(o.type)->supported &&
                     o.type != SP_DTYPE_Q8_K;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            o.seed = strtoull(v, &end, 10);
            ok = *v && !*end;
        } else if (!strcmp(a, "--n-embd")) {
            ok = parse_i32(v, 8, 65536, &o.shape.n_embd);
            o.shape.name = NULL;
        } else if (!strcmp(a, "--n-layer")) {
            ok = parse_i32(v, 1, 1024, &o.shape.n_layer);
            o.shape.name = NULL;
        } else if (!strcmp(a, "--n-head")) {
            ok = parse_i32(v, 1, 1024, &o.shape.n_head);
            o.shape.name = NULL;
        } else if (!strcmp(a, "--n-head-kv")) {
            ok = parse_i32(v, 1, 1024, &o.shape.n_head_kv);
            o.shape.name = NULL;
        } else if (!strcmp(a, "--n-ff")) {
            ok = parse_i32(v, 1, 1 << 20, &o.shape.n_ff);
            o.shape.name = NULL;
        } else if (!strcmp(a, "--ctx")) {
            ok = parse_i32(v, 1, 1 << 24, &o.shape.n_ctx);
        } else {
            fprintf(stderr, "spindle mkmodel: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "spindle mkmodel: invalid value '%s' for %s (see --help)\n", v, a);
            return 2;
        }
    }
    if (!o.out) {
        fprintf(stderr, "spindle mkmodel: -o OUT.gguf is required (see --help)\n");
        return 2;
    }
    const mk_shape *s = &o.shape;
    if (s->n_embd % s->n_head || s->n_head % s->n_head_kv || (s->n_embd / s->n_head) % 2) {
        fprintf(stderr,
                "spindle mkmodel: n_embd must be a multiple of n_head with an even head size, "
                "and n_head a multiple of n_head_kv\n");
        return 2;
    }
    return mk_run(&o);
}
