/* `spindle grammar-bench`: what constrained decoding costs per token. Texts that are sentences
 * (or prefixes) of a grammar are tokenized as a model's output and walked through the grammar
 * token by token; at every token it times the three things the engine may do: check the
 * sampler's choice (the token's bytes through the matcher), compute the full mask of allowed
 * tokens, and get the mask through the cache of grammar states (shared by all the texts, as the
 * engine shares it across requests). Also the grammar's compile time. The texts are files
 * walked through one grammar (here), or a set of JSON Schemas each with its instances
 * (schemabench.c). */
#include "app/grammarbench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "base/util.h"
#include "grammar/grammar.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: spindle grammar-bench -m MODEL.gguf [--grammar FILE.gbnf] TEXT_FILE...\n"
        "       spindle grammar-bench -m MODEL.gguf --schemas FILE.jsonl [--check-only]\n\n"
        "Walks each text file, tokenized as a model's output, through the grammar (default:\n"
        "the JSON object grammar of response_format json_object) and prints the time per\n"
        "token (p50, p99, max) of checking the token, of the full mask of allowed tokens,\n"
        "and of the mask through the cache of grammar states, with the cache's hit rate and\n"
        "the grammar's compile time. A text the grammar rejects stops at that token.\n\n"
        "With --schemas, each line of FILE.jsonl is {\"name\", \"schema\", \"instances\": [JSON\n"
        "text, ...]} (bench/schemas/gen.py writes a set): each schema is compiled as the\n"
        "server compiles response_format json_schema (its time: the median of 5 compiles)\n"
        "and each instance walked through its grammar, one mask cache for all; the report\n"
        "adds the compile time across schemas and the cached mask of each schema's first\n"
        "instance apart from its later ones. Instances must be valid: a schema that does\n"
        "not compile or an instance its grammar rejects is named on stderr and the exit\n"
        "status is 1.\n\n"
        "  -m, --model FILE    a GGUF model or vocabulary-only file (its vocabulary)\n"
        "  --grammar FILE      GBNF grammar (root rule 'root')\n"
        "  --schemas FILE      a set of JSON Schemas with instances (JSON Lines)\n"
        "  --check-only        time the check of each token only, no masks (a fast pass\n"
        "                      over a schema set: does every schema compile and take its\n"
        "                      instances)\n");
}

/* ---- the walk ----------------------------------------------------------------------------- */

sp_err sp__gbench_open(sp__gbench *b, const char *model, bool masks, sp_diag *diag) {
    memset(b, 0, sizeof *b);
    b->masks = masks;
    sp_err err = sp_gguf_open(model, &b->gguf, diag);
    if (!err)
        err = sp_vocab_load(b->gguf, &b->vocab, diag);
    if (err)
        goto fail;
    const int32_t n = b->n_vocab = (int32_t)sp_vocab_n_tokens(b->vocab);
    b->bytes = calloc((size_t)n, sizeof *b->bytes);
    b->len = calloc((size_t)n, sizeof *b->len);
    b->mask = malloc(((size_t)n + 31) / 32 * sizeof *b->mask);
    if (!b->bytes || !b->len || !b->mask)
        goto nomem;
    for (int32_t i = 0; i < n; i++) {
        const sp_str p = sp_tok_piece_ref(b->vocab, i, false);
        b->bytes[i] = (const uint8_t *)p.ptr;
        b->len[i] = (uint32_t)p.len;
    }
    const int64_t t0 = sp_time_ns();
    if (sp_token_trie_create(b->bytes, b->len, n, &b->trie))
        goto nomem;
    b->trie_ms = (double)(sp_time_ns() - t0) * 1e-6;
    if (sp_mask_cache_create(b->trie, (size_t)16 << 20, &b->cache))
        goto nomem;
    return SP_OK;
nomem:
    err = sp_diag_set(diag, SP_ERR_NOMEM, UINT64_MAX, "out of memory");
fail:
    sp__gbench_close(b);
    return err;
}

void sp__gbench_close(sp__gbench *b) {
    for (int j = 0; j < SP__GB_N_TIMES; j++)
        free(b->us[j]);
    free(b->hit);
    free(b->tag);
    sp_mask_cache_destroy(b->cache);
    sp_token_trie_destroy(b->trie);
    free(b->bytes);
    free(b->len);
    free(b->mask);
    sp_vocab_destroy(b->vocab);
    sp_gguf_close(b->gguf);
    memset(b, 0, sizeof *b);
}

/* Room for one more token's entry. */
static bool reserve(sp__gbench *b) {
    if (b->n < b->cap)
        return true;
    const size_t cap = b->cap ? 2 * b->cap : 4096;
    for (int j = 0; j < SP__GB_N_TIMES; j++) {
        double *p = realloc(b->us[j], cap * sizeof *p);
        if (!p)
            return false;
        b->us[j] = p;
    }
    uint8_t *hit = realloc(b->hit, cap);
    if (hit)
        b->hit = hit;
    uint8_t *tag = hit ? realloc(b->tag, cap) : NULL;
    if (!tag)
        return false;
    b->tag = tag;
    b->cap = cap;
    return true;
}

static bool in_mask(const uint32_t *mask, int32_t tok) {
    return (mask[tok / 32] >> (tok % 32)) & 1;
}

/* One token: the engine's work timed (the masks before the token is known to be taken, as the
 * engine computes them after a rejection) and, if the grammar takes it (*ok), recorded and
 * accepted. */
static sp_err step(sp__gbench *b, sp_matcher *m, int32_t tok, uint8_t tag, sp__gb_walk *w,
                   bool *ok) {
    const uint8_t *p = b->bytes[tok];
    const uint32_t n = b->len[tok];
    int32_t count;
    bool hit = false, in_full = true, in_cached = true;
    const int64_t t0 = sp_time_ns();
    sp_err err = sp_matcher_allows(m, p, n, ok);
    const int64_t t1 = sp_time_ns();
    if (!err && b->masks && !(err = sp_matcher_fill_mask(m, b->trie, b->mask, &count)))
        in_full = in_mask(b->mask, tok);
    const int64_t t2 = sp_time_ns();
    if (!err && b->masks && !(err = sp_mask_cache_get(b->cache, m, true, b->mask, &count, &hit)))
        in_cached = in_mask(b->mask, tok);
    const int64_t t3 = sp_time_ns();
    if (err || !*ok)
        return err;
    b->us[SP__GB_CHECK][b->n] = (double)(t1 - t0) * 1e-3;
    b->us[SP__GB_FULL][b->n] = (double)(t2 - t1) * 1e-3;
    b->us[SP__GB_CACHED][b->n] = (double)(t3 - t2) * 1e-3;
    b->hit[b->n] = hit;
    b->tag[b->n] = tag;
    b->n++;
    w->n_taken++;
    w->n_bytes += n;
    w->n_unmasked += !in_full || !in_cached;
    return sp_matcher_accept(m, p, n, ok);
}

sp_err sp__gbench_walk(sp__gbench *b, sp_matcher *m, const char *text, size_t len, uint8_t tag,
                       sp__gb_walk *out, sp_diag *diag) {
    sp_tokens toks;
    sp_tokens_init(&toks);
    sp_err err = sp_tok_encode_continuation(b->vocab, text, len, &toks, diag);
    sp__gb_walk w = {.n_tokens = toks.n};
    sp_matcher_reset(m);
    bool ok = true;
    for (size_t i = 0; !err && ok && i < toks.n; i++)
        err = reserve(b) ? step(b, m, toks.ids[i], tag, &w, &ok) : SP_ERR_NOMEM;
    w.complete = sp_matcher_complete(m);
    sp_tokens_deinit(&toks);
    if (!err)
        *out = w;
    return err;
}

/* ---- the report --------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void sp__gbench_print_header(const char *title) {
    printf("%-22s %10s %10s %10s\n", title, "p50", "p99", "max");
}

void sp__gbench_print_row(const char *what, double *us, size_t n) {
    qsort(us, n, sizeof *us, cmp_double);
    printf("%-22s %10.1f %10.1f %10.1f\n", what, us[n / 2], us[(size_t)((double)(n - 1) * 0.99)],
           us[n - 1]);
}

void sp__gbench_print_rows(sp__gbench *b) {
    sp__gbench_print_header("per token (us)");
    sp__gbench_print_row("check the token", b->us[SP__GB_CHECK], b->n);
    if (!b->masks)
        return;
    sp__gbench_print_row("full mask", b->us[SP__GB_FULL], b->n);
    sp__gbench_print_row("mask with the cache", b->us[SP__GB_CACHED], b->n);
}

/* ---- compile time ------------------------------------------------------------------------ */

sp_err sp__gbench_compile(sp__gb_compile_fn compile, const void *src, int times, sp_grammar **out,
                          double *us, sp_diag *diag) {
    double t[64];
    SP_ASSERT(times >= 1 && times <= 64);
    sp_grammar *g = NULL;
    sp_err err = SP_OK;
    for (int i = 0; i < times && !err; i++) {
        sp_grammar_release(g);
        g = NULL;
        const int64_t t0 = sp_time_ns();
        err = compile(src, &g, diag);
        t[i] = (double)(sp_time_ns() - t0) * 1e-3;
    }
    if (err)
        return err;
    qsort(t, (size_t)times, sizeof *t, cmp_double);
    *us = t[times / 2];
    *out = g;
    return SP_OK;
}

/* ---- the text mode ------------------------------------------------------------------------ */

typedef struct gbnf_src {
    const char *text;
    size_t len;
} gbnf_src;

static sp_err compile_gbnf(const void *src, sp_grammar **out, sp_diag *diag) {
    const gbnf_src *s = src;
    return sp_grammar_from_gbnf(s->text, s->len, out, diag);
}

/* The grammar of the GBNF file at path (NULL: the JSON object grammar) into *out, and its
 * compile time (the median of 50 compiles) into *us. Returns 0, or 1 having said why. */
static int load_grammar(const char *path, sp_grammar **out, double *us) {
    char *text = NULL;
    size_t len = 0;
    if (path && sp_read_file(path, &text, &len) < 0) {
        fprintf(stderr, "spindle grammar-bench: cannot read '%s'\n", path);
        return 1;
    }
    const gbnf_src src = {text ? text : sp_grammar_json_gbnf,
                          text ? len : strlen(sp_grammar_json_gbnf)};
    sp_diag d;
    sp_diag_clear(&d);
    const sp_err err = sp__gbench_compile(compile_gbnf, &src, 50, out, us, &d);
    free(text);
    if (err)
        fprintf(stderr, "spindle grammar-bench: %s\n", d.msg);
    return err != SP_OK;
}

static int text_mode(sp__gbench *b, const char *gpath, char **texts, int n_texts) {
    sp_grammar *g = NULL;
    sp_matcher *m = NULL;
    double compile_us;
    if (load_grammar(gpath, &g, &compile_us))
        return 1;
    int rc = 1;
    size_t n_unmasked = 0;
    if (sp_matcher_create(g, &m)) {
        fprintf(stderr, "spindle grammar-bench: out of memory\n");
        goto done;
    }
    for (int k = 0; k < n_texts; k++) {
        char *text;
        size_t len;
        if (sp_read_file(texts[k], &text, &len) < 0) {
            fprintf(stderr, "spindle grammar-bench: cannot read '%s'\n", texts[k]);
            goto done;
        }
        sp_diag d;
        sp_diag_clear(&d);
        sp__gb_walk w;
        const sp_err err = sp__gbench_walk(b, m, text, len, 0, &w, &d);
        free(text);
        if (err) {
            fprintf(stderr, "spindle grammar-bench: %s: %s\n", texts[k],
                    d.msg[0] ? d.msg : sp_err_str(err));
            goto done;
        }
        printf("%s: %zu tokens, %zu taken by the grammar%s\n", texts[k], w.n_tokens, w.n_taken,
               w.n_taken < w.n_tokens ? " (it rejects the next)" : "");
        n_unmasked += w.n_unmasked;
    }
    if (!b->n) {
        fprintf(stderr, "spindle grammar-bench: no token was taken by the grammar\n");
        goto done;
    }
    size_t hits = 0;
    for (size_t i = 0; i < b->n; i++)
        hits += b->hit[i];
    printf("\nvocabulary: %d tokens (trie of %u nodes, built in %.1f ms); grammar compiled in "
           "%.0f us (median)\n",
           b->n_vocab, b->trie->n_nodes, b->trie_ms, compile_us);
    if (b->masks)
        printf("%zu tokens; mask cache hits: %.1f%%\n\n", b->n,
               100.0 * (double)hits / (double)b->n);
    else
        printf("%zu tokens\n\n", b->n);
    sp__gbench_print_rows(b);
    rc = n_unmasked != 0;
    if (n_unmasked)
        fprintf(stderr,
                "spindle grammar-bench: %zu tokens taken by the grammar were missing "
                "from its mask (a matcher bug)\n",
                n_unmasked);
done:
    sp_matcher_destroy(m);
    sp_grammar_release(g);
    return rc;
}

/* ---- the command -------------------------------------------------------------------------- */

int sp_cmd_grammar_bench(int argc, char **argv) {
    const char *model = NULL, *gpath = NULL, *schemas = NULL;
    char *texts[256];
    int n_texts = 0;
    bool masks = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(a, "--grammar") && i + 1 < argc) {
            gpath = argv[++i];
        } else if (!strcmp(a, "--schemas") && i + 1 < argc) {
            schemas = argv[++i];
        } else if (!strcmp(a, "--check-only")) {
            masks = false;
        } else if (a[0] == '-') {
            fprintf(stderr, "spindle grammar-bench: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (n_texts < 256) {
            texts[n_texts++] = argv[i];
        }
    }
    if (!model || (!n_texts && !schemas) || (schemas && (n_texts || gpath))) {
        fprintf(stderr, "spindle grammar-bench: -m MODEL and either text files or --schemas "
                        "FILE are required (see --help)\n");
        return 2;
    }
    sp_diag d;
    sp_diag_clear(&d);
    sp__gbench b;
    if (sp__gbench_open(&b, model, masks, &d)) {
        fprintf(stderr, "spindle grammar-bench: cannot read the vocabulary of '%s': %s\n", model,
                d.msg);
        return 1;
    }
    const int rc = schemas ? sp__gbench_schemas(&b, schemas) : text_mode(&b, gpath, texts, n_texts);
    sp__gbench_close(&b);
    return rc;
}
