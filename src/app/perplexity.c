/* spindle perplexity: a model's perplexity over a text file, and the KL divergence of its
 * next-token distributions from those of a base run (another model file, weight type or KV
 * cache type) — the measure that tells whether a quantization is safe.
 *
 * Scoring is llama.cpp's `perplexity`: the text, tokenized with BOS, is cut into chunks of
 * n_ctx tokens, each chunk's first token replaced by BOS and evaluated from position 0, and
 * the tokens of its second half scored (the logits at positions n_ctx/2 .. n_ctx - 2 predict
 * the next token), so every scored token has at least n_ctx/2 tokens of context.
 *
 * The base file (--kl-divergence-base FILE, written when --kl-divergence is not given): the
 * magic "SPKLBASE", then uint32 version 1, n_vocab, n_ctx, n_chunks, uint64 n_tokens, the
 * n_tokens token ids (uint32) the chunks were cut from, then the log-probabilities (float32,
 * n_vocab each) of every scored position in order. All little-endian. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/commands.h"
#include "base/threadpool.h"
#include "base/util.h"
#include "model/forward.h"
#include "model/kvbuf.h"
#include "model/model.h"
#include "tok/tok.h"

enum { PPL_BLOCK = 16, PPL_BATCH = 512 };

static const char BASE_MAGIC[8] = {'S', 'P', 'K', 'L', 'B', 'A', 'S', 'E'};

typedef struct ppl_opts {
    const char *model, *file, *base;
    bool kld;      // compare with the base file (else write it, when given)
    int32_t n_ctx; // 0: 512, at most the model's training context
    int32_t n_threads;
    bool f32_kv;
} ppl_opts;

/* Running sums of one measure: mean and its standard error. */
typedef struct stat_sum {
    double sum, sum2;
    int64_t n;
} stat_sum;

static void stat_add(stat_sum *s, double x) {
    s->sum += x;
    s->sum2 += x * x;
    s->n++;
}

static double stat_mean(const stat_sum *s) {
    return s->n ? s->sum / (double)s->n : 0;
}

static double stat_err(const stat_sum *s) {
    if (s->n < 2)
        return 0;
    const double m = stat_mean(s), var = s->sum2 / (double)s->n - m * m;
    return sqrt(fmax(var, 0) / (double)(s->n - 1));
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: spindle perplexity -m MODEL.gguf -f TEXT [-c N] [--kl-divergence-base FILE\n"
            "                          [--kl-divergence]] [--kv-type f16|f32] [-t N]\n"
            "\n"
            "Prints the model's perplexity over a text file, scored as llama.cpp's perplexity\n"
            "does: the tokens (with BOS) cut into chunks of N, each chunk evaluated from BOS,\n"
            "the second half of each scored (every scored token sees at least N/2 tokens).\n"
            "\n"
            "With --kl-divergence-base FILE alone, the log-probabilities of every scored token\n"
            "are also written to FILE (n_vocab floats each: about 64 MB per 1,000 scored tokens\n"
            "of a 32k vocabulary). With --kl-divergence too, they are read back instead and\n"
            "compared: the mean, median, 99th percentile and largest KL divergence of this\n"
            "run's next-token distribution from the base's, how often both put the same token\n"
            "first, and both perplexities. The text, vocabulary and -c must be the same.\n"
            "\n"
            "  -m, --model FILE              GGUF model\n"
            "  -f, --file FILE               the text (UTF-8)\n"
            "  -c, --ctx N                   tokens per chunk (default 512, at most the\n"
            "                                model's training context)\n"
            "  --kl-divergence-base FILE     base log-probabilities: written, or read with\n"
            "                                --kl-divergence\n"
            "  --kl-divergence               compare with the base file\n"
            "  --kv-type TYPE                KV cache element type: f16 (default) or f32\n"
            "  -t, --threads N               compute threads (default: all cores)\n"
            "  -h, --help                    this help\n");
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            char *p = realloc(buf, cap = (n + 65536 + 1) * 2);
            if (!p) {
                free(buf);
                fclose(f);
                errno = ENOMEM;
                return NULL;
            }
            buf = p;
        }
        const size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0)
            break;
    }
    const bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The base file: header and token ids, checked against this run's (compare) or written. */
static bool base_header(FILE *f, bool write, int32_t n_vocab, int32_t n_ctx, int32_t n_chunks,
                        const sp_tokens *toks, const char **why) {
    uint32_t h[4] = {1, (uint32_t)n_vocab, (uint32_t)n_ctx, (uint32_t)n_chunks};
    uint64_t n = toks->n;
    if (write) {
        bool ok = fwrite(BASE_MAGIC, 8, 1, f) == 1 && fwrite(h, sizeof h, 1, f) == 1 &&
                  fwrite(&n, sizeof n, 1, f) == 1;
        for (size_t i = 0; ok && i < toks->n; i++) {
            const uint32_t id = (uint32_t)toks->ids[i];
            ok = fwrite(&id, sizeof id, 1, f) == 1;
        }
        *why = "cannot write it";
        return ok;
    }
    char magic[8];
    uint32_t g[4];
    uint64_t m;
    if (fread(magic, 8, 1, f) != 1 || memcmp(magic, BASE_MAGIC, 8) ||
        fread(g, sizeof g, 1, f) != 1 || fread(&m, sizeof m, 1, f) != 1 || g[0] != 1) {
        *why = "not a base file of spindle perplexity (or a damaged one)";
        return false;
    }
    if (g[1] != h[1] || g[2] != h[2] || g[3] != h[3] || m != n) {
        *why = "made with another vocabulary, -c or text (its vocabulary size, context, chunks "
               "or tokens differ): run the base with the same text and -c";
        return false;
    }
    for (size_t i = 0; i < toks->n; i++) {
        uint32_t id;
        if (fread(&id, sizeof id, 1, f) != 1 || id != (uint32_t)toks->ids[i]) {
            *why = "made from another text (its tokens differ)";
            return false;
        }
    }
    return true;
}

/* log-softmax of logits[n] into out (double sums), and the index of the largest. */
static int32_t log_softmax(const float *logits, int32_t n, float *out) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (logits[i] > logits[best])
            best = i;
    const double mx = logits[best];
    double sum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += exp((double)logits[i] - mx);
    const double lse = mx + log(sum);
    for (int32_t i = 0; i < n; i++)
        out[i] = (float)((double)logits[i] - lse);
    return best;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void progress(bool tty, int32_t done, int32_t total, int64_t t0_us, double ppl) {
    if (!tty)
        return;
    const double secs = (double)(sp_time_us() - t0_us) / 1e6;
    char bar[31];
    const int fill = (int)(30 * done / (total ? total : 1));
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    char eta[32] = "--";
    if (done > 0)
        snprintf(eta, sizeof eta, "%.0fs", secs / done * (total - done));
    fprintf(stderr, "\r[%s] chunk %d/%d  PPL %.4f  ETA %s   ", bar, done, total, ppl, eta);
    fflush(stderr);
}

static int run(const ppl_opts *o) {
    sp_diag d;
    sp_diag_clear(&d);
    sp_model *m = NULL;
    sp_vocab *v = NULL;
    sp_forward *fw = NULL;
    sp_kvbuf kv = {0};
    sp_threadpool *pool = NULL;
    sp_tokens toks;
    sp_tokens_init(&toks);
    char *text = NULL;
    FILE *base = NULL;
    int32_t *table = NULL, *tok = NULL, *pos = NULL, *seq = NULL, *rows = NULL;
    float *logits = NULL, *lp = NULL, *blp = NULL;
    double *klds = NULL;
    int rc = 1;
    size_t len = 0;
    if (!(text = read_file(o->file, &len))) {
        fprintf(stderr, "spindle perplexity: cannot read %s: %s\n", o->file, strerror(errno));
        goto done;
    }
    sp_err err = sp_model_load(o->model, &m, &d);
    if (!err)
        err = sp_vocab_load(m->gguf, &v, &d);
    if (err) {
        fprintf(stderr, "spindle perplexity: cannot load %s: %s: %s\n", o->model, sp_err_str(err),
                d.msg);
        goto done;
    }
    const sp_token bos = sp_vocab_bos(v);
    if ((err = sp_tok_encode(v, text, len, sp_vocab_add_bos(v), false, &toks, &d))) {
        fprintf(stderr, "spindle perplexity: cannot tokenize %s: %s\n", o->file, d.msg);
        goto done;
    }
    const int32_t n_ctx = o->n_ctx ? o->n_ctx : SP_MIN(512, m->hp.n_ctx_train);
    if (n_ctx < 4 || n_ctx > m->hp.n_ctx_train) {
        fprintf(stderr, "spindle perplexity: -c %d is outside [4, %d] (the model's context)\n",
                n_ctx, m->hp.n_ctx_train);
        goto done;
    }
    const int32_t n_chunks = (int32_t)(toks.n / (size_t)n_ctx);
    if (n_chunks < 1) {
        fprintf(stderr,
                "spindle perplexity: %s has %zu tokens, fewer than one chunk of %d: use a longer "
                "text or a smaller -c\n",
                o->file, toks.n, n_ctx);
        goto done;
    }
    const int32_t V = m->hp.n_vocab, first = n_ctx / 2,
                  n_blocks = (n_ctx + PPL_BLOCK - 1) / PPL_BLOCK;
    const int32_t B = SP_MIN(n_ctx, PPL_BATCH);
    const char *why = NULL;
    if (o->base) {
        if (!(base = fopen(o->base, o->kld ? "rb" : "wb"))) {
            fprintf(stderr, "spindle perplexity: cannot open %s: %s\n", o->base, strerror(errno));
            goto done;
        }
        if (!base_header(base, !o->kld, V, n_ctx, n_chunks, &toks, &why)) {
            fprintf(stderr, "spindle perplexity: %s: %s\n", o->base, why);
            goto done;
        }
    }
    const int64_t n_scored = (int64_t)n_chunks * (n_ctx - 1 - first);
    table = malloc((size_t)n_blocks * sizeof *table);
    tok = malloc((size_t)B * sizeof *tok);
    pos = malloc((size_t)B * sizeof *pos);
    seq = calloc((size_t)B, sizeof *seq);
    rows = malloc((size_t)B * sizeof *rows);
    logits = malloc((size_t)B * (size_t)V * sizeof *logits);
    lp = malloc((size_t)V * sizeof *lp);
    blp = malloc((size_t)V * sizeof *blp);
    klds = o->kld ? malloc((size_t)n_scored * sizeof *klds) : NULL;
    if (!table || !tok || !pos || !seq || !rows || !logits || !lp || !blp || (o->kld && !klds)) {
        fprintf(stderr, "spindle perplexity: out of memory\n");
        goto done;
    }
    for (int32_t i = 0; i < n_blocks; i++)
        table[i] = i;
    if ((err = sp_kvbuf_init(&kv, &m->hp, o->f32_kv ? SP_DTYPE_F32 : SP_DTYPE_F16, PPL_BLOCK,
                             n_blocks)) ||
        (err = sp_forward_create(m, B, n_ctx, &fw)) ||
        (err = sp_threadpool_create(o->n_threads, &pool)) ||
        (err = sp_forward_set_pool(fw, pool))) {
        fprintf(stderr, "spindle perplexity: %s\n", sp_err_str(err));
        goto done;
    }
    const bool tty = isatty(STDERR_FILENO);
    const int64_t t0 = sp_time_us();
    stat_sum nll = {0}, base_nll = {0}, kl = {0}, same = {0};
    int64_t n_kl = 0;
    fprintf(stderr, "spindle perplexity: %zu tokens, %d chunks of %d, %lld tokens scored\n", toks.n,
            n_chunks, n_ctx, (long long)n_scored);
    for (int32_t c = 0; c < n_chunks; c++) {
        const int32_t *ids = toks.ids + (size_t)c * (size_t)n_ctx;
        for (int32_t p0 = 0; p0 < n_ctx; p0 += B) {
            const int32_t n = SP_MIN(B, n_ctx - p0);
            int32_t n_out = 0;
            for (int32_t i = 0; i < n; i++) {
                const int32_t p = p0 + i;
                tok[i] = p == 0 && bos != SP_TOKEN_NULL ? bos : ids[p];
                pos[i] = p;
                if (p >= first && p < n_ctx - 1)
                    rows[n_out++] = i;
            }
            const int32_t *tables[1] = {table};
            const sp_batch b = {.n_tokens = n,
                                .token = tok,
                                .pos = pos,
                                .seq = seq,
                                .n_seqs = 1,
                                .block_tables = tables,
                                .n_seq_blocks = &n_blocks,
                                .n_out = n_out,
                                .out_rows = rows};
            if ((err = sp_forward_eval(fw, &kv, &b, logits))) {
                fprintf(stderr, "\nspindle perplexity: evaluation failed: %s\n", sp_err_str(err));
                goto done;
            }
            for (int32_t r = 0; r < n_out; r++) {
                const int32_t p = p0 + rows[r], next = ids[p + 1];
                const int32_t top = log_softmax(logits + (size_t)r * (size_t)V, V, lp);
                stat_add(&nll, -(double)lp[next]);
                if (base && !o->kld && fwrite(lp, sizeof *lp, (size_t)V, base) != (size_t)V) {
                    fprintf(stderr, "\nspindle perplexity: %s: cannot write it\n", o->base);
                    goto done;
                }
                if (!o->kld)
                    continue;
                if (fread(blp, sizeof *blp, (size_t)V, base) != (size_t)V) {
                    fprintf(stderr, "\nspindle perplexity: %s: shorter than its header says\n",
                            o->base);
                    goto done;
                }
                double k = 0;
                int32_t btop = 0;
                for (int32_t i = 0; i < V; i++) {
                    if (blp[i] > blp[btop])
                        btop = i;
                    if (isfinite(blp[i]))
                        k += exp((double)blp[i]) * ((double)blp[i] - (double)lp[i]);
                }
                stat_add(&kl, k);
                stat_add(&same, top == btop ? 1.0 : 0.0);
                stat_add(&base_nll, -(double)blp[next]);
                klds[n_kl++] = k;
            }
        }
        progress(tty, c + 1, n_chunks, t0, exp(stat_mean(&nll)));
    }
    if (tty)
        fprintf(stderr, "\n");
    const double secs = (double)(sp_time_us() - t0) / 1e6;
    fprintf(stderr, "spindle perplexity: %d chunks in %.1f s (%.1f tok/s)\n", n_chunks, secs,
            secs > 0 ? (double)n_chunks * n_ctx / secs : 0.0);
    // The perplexity's error: that of the mean NLL, carried through exp.
    const double ppl = exp(stat_mean(&nll));
    printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, ppl * stat_err(&nll));
    if (o->kld) {
        qsort(klds, (size_t)n_kl, sizeof *klds, cmp_double);
        const double bppl = exp(stat_mean(&base_nll));
        printf("Mean PPL(base): %.4f +/- %.5f\n", bppl, bppl * stat_err(&base_nll));
        printf("Mean ln(PPL/PPL(base)): %.6f\n", stat_mean(&nll) - stat_mean(&base_nll));
        printf("Mean KLD: %.6f +/- %.6f\n", stat_mean(&kl), stat_err(&kl));
        printf("Maximum KLD: %.6f\n", klds[n_kl - 1]);
        printf("99.0%% KLD: %.6f\n", klds[(size_t)((double)(n_kl - 1) * 0.99)]);
        printf("Median KLD: %.6f\n", klds[(n_kl - 1) / 2]);
        printf("Same top token: %.3f +/- %.3f %%\n", 100 * stat_mean(&same), 100 * stat_err(&same));
    } else if (base) {
        if (fflush(base)) {
            fprintf(stderr, "spindle perplexity: %s: cannot write it\n", o->base);
            goto done;
        }
        fprintf(stderr, "spindle perplexity: base log-probabilities written to %s\n", o->base);
    }
    rc = 0;
done:
    if (base && fclose(base) && !o->kld && rc == 0) {
        fprintf(stderr, "spindle perplexity: %s: cannot write it\n", o->base);
        rc = 1;
    }
    free(klds);
    free(blp);
    free(lp);
    free(logits);
    free(rows);
    free(seq);
    free(pos);
    free(tok);
    free(table);
    sp_forward_destroy(fw);
    sp_threadpool_destroy(pool);
    sp_kvbuf_deinit(&kv);
    sp_tokens_deinit(&toks);
    sp_vocab_destroy(v);
    sp_model_destroy(m);
    free(text);
    return rc;
}

static bool arg_int(const char *s, int32_t lo, int32_t hi, int32_t *out) {
    char *end;
    errno = 0;
    const long n = strtol(s, &end, 10);
    if (errno || end == s || *end || n < lo || n > hi)
        return false;
    *out = (int32_t)n;
    return true;
}

int sp_cmd_perplexity(int argc, char **argv) {
    ppl_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--kl-divergence")) {
            o.kld = true;
            continue;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "spindle perplexity: option '%s' needs a value (see --help)\n", a);
            return 2;
        }
        i++;
        bool ok = true;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o.model = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file"))
            o.file = v;
        else if (!strcmp(a, "--kl-divergence-base"))
            o.base = v;
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx"))
            ok = arg_int(v, 4, 1 << 20, &o.n_ctx);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = arg_int(v, 1, 1024, &o.n_threads);
        else if (!strcmp(a, "--kv-type"))
            ok = (o.f32_kv = !strcmp(v, "f32")) || !strcmp(v, "f16");
        else {
            fprintf(stderr, "spindle perplexity: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "spindle perplexity: invalid value '%s' for %s (see --help)\n", v, a);
            return 2;
        }
    }
    if (!o.model || !o.file) {
        fprintf(stderr, "spindle perplexity: -m MODEL and -f TEXT are required (see --help)\n");
        return 2;
    }
    if (o.kld && !o.base) {
        fprintf(stderr, "spindle perplexity: --kl-divergence needs --kl-divergence-base FILE, "
                        "written by a run without --kl-divergence\n");
        return 2;
    }
    return run(&o);
}
