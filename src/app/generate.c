/* `spindle generate`: completes one prompt on the command line. The text goes to stdout (or
 * the generated ids with --ids) and a one-line timing summary to stderr. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "base/hash.h"
#include "base/util.h"
#include "model/forward.h"
#include "model/kvbuf.h"
#include "model/model.h"
#include "sample/sample.h"
#include "tensor/kernels.h"
#include "tok/tok.h"

#define GEN_BLOCK 16
#define GEN_CHUNK 512

typedef struct gen_opts {
    const char *model;
    const char *prompt;
    int32_t n_predict;
    int32_t n_ctx;
    int32_t n_threads;
    bool ids;
    bool logits_hash;
    bool f32_kv;
    sp_sample_params sp;
} gen_opts;

static void gen_usage(FILE *f) {
    fprintf(f, "usage: spindle generate -m MODEL.gguf -p PROMPT [-n N] [--temp T] [--seed S]\n"
               "                        [--top-k K] [--top-p P] [--min-p P] [--ids] [-c N]\n"
               "                        [--kv-type f16|f32] [-t N] [--logits-hash]\n\n"
               "Completes PROMPT and writes the text to stdout, then a timing line to stderr.\n\n"
               "  -m, --model FILE   GGUF model (llama, qwen2, qwen3, phi3 architectures)\n"
               "  -p, --prompt TEXT  prompt; special tokens written in it (e.g. <s>) are parsed\n"
               "  -n, --n-predict N  tokens to generate at most (default 128); stops earlier at\n"
               "                     an end-of-generation token or the context length\n"
               "  -c, --ctx N        context length (default: the model's, at most 4096)\n"
               "  --temp T           temperature; 0 (default) is greedy\n"
               "  --seed S           sampling seed (default 0); the same seed gives the same text\n"
               "  --top-k K          keep the K most likely tokens (default 40; 0 = off)\n"
               "  --top-p P          nucleus sampling threshold (default 0.95; 1 = off)\n"
               "  --min-p P          drop tokens below P times the best one's probability\n"
               "                     (default 0.05; 0 = off)\n"
               "  --ids              print the generated token ids (one line) instead of text\n"
               "  --logits-hash      also print (to stderr) a hash of every logits row sampled\n"
               "                     from and the kernel table (SPINDLE_ISA) that computed them:\n"
               "                     equal hashes mean bitwise equal logits\n"
               "  --kv-type TYPE     KV cache element type: f16 (default) or f32\n"
               "  -t, --threads N    compute threads (default: all cores)\n");
}

static bool arg_f(const char *s, float *out) {
    char *end;
    float v = strtof(s, &end);
    if (!*s || *end)
        return false;
    *out = v;
    return true;
}

static bool arg_i(const char *s, int32_t *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < -1 || v > (1 << 30))
        return false;
    *out = (int32_t)v;
    return true;
}

/* Runs the prompt through the model in chunks; leaves the last position's logits. */
static sp_err eval_tokens(sp_forward *fw, sp_kvbuf *kv, const int32_t *table, int32_t n_blocks,
                          const sp_token *ids, int32_t n, int32_t pos0, float *logits,
                          int32_t *pos_buf, int32_t *seq_buf) {
    for (int32_t start = 0; start < n; start += GEN_CHUNK) {
        int32_t len = SP_MIN(GEN_CHUNK, n - start);
        for (int32_t i = 0; i < len; i++) {
            pos_buf[i] = pos0 + start + i;
            seq_buf[i] = 0;
        }
        int32_t out_row = len - 1;
        const int32_t *tables[1] = {table};
        sp_batch b = {.n_tokens = len,
                      .token = ids + start,
                      .pos = pos_buf,
                      .seq = seq_buf,
                      .n_seqs = 1,
                      .block_tables = tables,
                      .n_seq_blocks = &n_blocks,
                      .n_out = 1,
                      .out_rows = &out_row};
        sp_err err = sp_forward_eval(fw, kv, &b, logits);
        if (err)
            return err;
    }
    return SP_OK;
}

static int gen_run(const gen_opts *o) {
    sp_diag diag;
    sp_diag_clear(&diag);
    sp_model *m = NULL;
    sp_vocab *v = NULL;
    sp_forward *fw = NULL;
    sp_sampler *smp = NULL;
    sp_kvbuf kv = {0};
    sp_threadpool *pool = NULL;
    sp_tokens toks;
    sp_tokens_init(&toks);
    int32_t *table = NULL, *pos_buf = NULL, *seq_buf = NULL;
    float *logits = NULL;
    int rc = 1;
    const char *what = "load the model";

    sp_err err = sp_model_load(o->model, &m, &diag);
    if (err)
        goto fail;
    what = "load the vocabulary";
    if ((err = sp_vocab_load(m->gguf, &v, &diag)))
        goto fail;
    what = "tokenize the prompt";
    if ((err = sp_tok_encode(v, o->prompt, strlen(o->prompt), true, true, &toks, &diag)))
        goto fail;
    if (toks.n == 0) {
        fprintf(stderr, "spindle generate: the prompt is empty\n");
        goto done;
    }
    int32_t n_ctx = o->n_ctx > 0 ? o->n_ctx : SP_MIN(m->hp.n_ctx_train, 4096);
    if ((int64_t)toks.n >= n_ctx) {
        fprintf(stderr, "spindle generate: the prompt has %zu tokens, more than the context (%d)\n",
                toks.n, n_ctx);
        goto done;
    }
    int32_t n_blocks = (n_ctx + GEN_BLOCK - 1) / GEN_BLOCK;
    what = "allocate memory";
    table = malloc((size_t)n_blocks * sizeof *table);
    pos_buf = malloc(GEN_CHUNK * sizeof *pos_buf);
    seq_buf = malloc(GEN_CHUNK * sizeof *seq_buf);
    logits = malloc((size_t)m->hp.n_vocab * sizeof *logits);
    if (!table || !pos_buf || !seq_buf || !logits) {
        err = SP_ERR_NOMEM;
        goto fail;
    }
    for (int32_t i = 0; i < n_blocks; i++)
        table[i] = i;
    if ((err = sp_kvbuf_init(&kv, &m->hp, o->f32_kv ? SP_DTYPE_F32 : SP_DTYPE_F16, GEN_BLOCK,
                             n_blocks)) ||
        (err = sp_forward_create(m, GEN_CHUNK, n_ctx, &fw)) ||
        (err = sp_threadpool_create(o->n_threads, &pool)) || (err = sp_forward_set_pool(fw, pool)))
        goto fail;
    what = "create the sampler";
    if ((err = sp_sampler_create(&o->sp, m->hp.n_vocab, &smp)))
        goto fail;
    for (size_t i = 0; i < toks.n; i++)
        sp_sampler_accept(smp, toks.ids[i]);

    what = "evaluate the prompt";
    int64_t t0 = sp_time_us();
    if ((err = eval_tokens(fw, &kv, table, n_blocks, toks.ids, (int32_t)toks.n, 0, logits, pos_buf,
                           seq_buf)))
        goto fail;
    int64_t t1 = sp_time_us();
    int32_t n_gen = 0, pos = (int32_t)toks.n;
    uint64_t hash = SP_FNV1A64_BASIS;
    what = "generate";
    while (n_gen < o->n_predict && pos < n_ctx) {
        hash = sp_fnv1a64_add(hash, logits, (size_t)m->hp.n_vocab * sizeof *logits);
        sp_token tok = sp_sampler_sample(smp, logits);
        sp_sampler_accept(smp, tok);
        n_gen++;
        if (o->ids) {
            printf("%s%d", n_gen > 1 ? " " : "", tok);
        } else if (!sp_vocab_is_eog(v, tok)) {
            sp_str piece = sp_tok_piece_ref(v, tok, false);
            fwrite(piece.ptr, 1, piece.len, stdout);
        }
        fflush(stdout);
        if (sp_vocab_is_eog(v, tok))
            break;
        if (n_gen == o->n_predict || pos + 1 >= n_ctx)
            break;
        if ((err = eval_tokens(fw, &kv, table, n_blocks, &tok, 1, pos, logits, pos_buf, seq_buf)))
            goto fail;
        pos++;
    }
    int64_t t2 = sp_time_us();
    printf("\n");
    double pms = (double)(t1 - t0) / 1000.0, gms = (double)(t2 - t1) / 1000.0;
    fprintf(stderr,
            "spindle generate: prompt %zu tokens in %.1f ms (%.1f tok/s), generated %d tokens in "
            "%.1f ms (%.1f tok/s)\n",
            toks.n, pms, pms > 0 ? (double)toks.n * 1000.0 / pms : 0.0, n_gen, gms,
            gms > 0 ? n_gen * 1000.0 / gms : 0.0);
    if (o->logits_hash)
        fprintf(stderr, "spindle generate: logits hash %016" PRIx64 " (kernels: %s)\n", hash,
                sp_kernels_get()->isa);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "spindle generate: cannot %s: %s%s%s\n", what, sp_err_str(err),
            diag.msg[0] ? ": " : "", diag.msg);
done:
    sp_sampler_destroy(smp);
    sp_forward_destroy(fw);
    sp_threadpool_destroy(pool);
    sp_kvbuf_deinit(&kv);
    free(table);
    free(pos_buf);
    free(seq_buf);
    free(logits);
    sp_tokens_deinit(&toks);
    sp_vocab_destroy(v);
    sp_model_destroy(m);
    return rc;
}

int sp_cmd_generate(int argc, char **argv) {
    gen_opts o = {.n_predict = 128, .sp = sp_sample_params_default()};
    o.sp.temperature = 0.0f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            gen_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--logits-hash")) {
            o.logits_hash = true;
            continue;
        }
        if (!strcmp(a, "--ids")) {
            o.ids = true;
            continue;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "spindle generate: option '%s' needs a value (see --help)\n", a);
            return 2;
        }
        i++;
        bool ok = true;
        int32_t seed_hi;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o.model = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt"))
            o.prompt = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict"))
            ok = arg_i(v, &o.n_predict) && o.n_predict >= 0;
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx"))
            ok = arg_i(v, &o.n_ctx) && o.n_ctx > 0;
        else if (!strcmp(a, "--temp"))
            ok = arg_f(v, &o.sp.temperature);
        else if (!strcmp(a, "--top-k"))
            ok = arg_i(v, &o.sp.top_k);
        else if (!strcmp(a, "--top-p"))
            ok = arg_f(v, &o.sp.top_p);
        else if (!strcmp(a, "--min-p"))
            ok = arg_f(v, &o.sp.min_p);
        else if (!strcmp(a, "--seed"))
            ok = arg_i(v, &seed_hi) && seed_hi >= 0 && ((o.sp.seed = (uint64_t)seed_hi), true);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = arg_i(v, &o.n_threads) && o.n_threads >= 1 && o.n_threads <= 1024;
        else if (!strcmp(a, "--kv-type"))
            ok = (o.f32_kv = !strcmp(v, "f32")) || !strcmp(v, "f16");
        else {
            fprintf(stderr, "spindle generate: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "spindle generate: invalid value '%s' for %s (see --help)\n", v, a);
            return 2;
        }
    }
    if (!o.model || !o.prompt) {
        fprintf(stderr, "spindle generate: -m MODEL and -p PROMPT are required (see --help)\n");
        return 2;
    }
    sp_diag d;
    sp_diag_clear(&d);
    if (sp_sample_params_validate(&o.sp, &d)) {
        fprintf(stderr, "spindle generate: %s\n", d.msg);
        return 2;
    }
    return gen_run(&o);
}
