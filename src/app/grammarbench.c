/* `spindle grammar-bench`: what constrained decoding costs per token. Texts that are sentences
 * (or prefixes) of a grammar are tokenized as a model's output and walked through the grammar
 * token by token; at every token it times the three things the engine may do: check the
 * sampler's choice (the token's bytes through the matcher), compute the full mask of allowed
 * tokens, and get the mask through the cache of grammar states (shared by all the texts, as the
 * engine shares it across requests). Also the grammar's compile time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "base/util.h"
#include "gguf/gguf.h"
#include "grammar/grammar.h"
#include "grammar/maskcache.h"
#include "grammar/matcher.h"
#include "grammar/trie.h"
#include "tok/tok.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: spindle grammar-bench -m MODEL.gguf [--grammar FILE.gbnf] TEXT_FILE...\n\n"
            "Walks each text file, tokenized as a model's output, through the grammar (default:\n"
            "the JSON object grammar of response_format json_object) and prints the time per\n"
            "token (p50, p99, max) of checking the token, of the full mask of allowed tokens,\n"
            "and of the mask through the cache of grammar states, with the cache's hit rate and\n"
            "the grammar's compile time. A text the grammar rejects stops at that token.\n\n"
            "  -m, --model FILE    a GGUF model or vocabulary-only file (its vocabulary)\n"
            "  --grammar FILE      GBNF grammar (root rule 'root')\n");
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_row(const char *what, double *us, size_t n) {
    qsort(us, n, sizeof *us, cmp_double);
    printf("%-22s %10.1f %10.1f %10.1f\n", what, us[n / 2], us[(size_t)((double)(n - 1) * 0.99)],
           us[n - 1]);
}

int sp_cmd_grammar_bench(int argc, char **argv) {
    const char *model = NULL, *gpath = NULL;
    const char *texts[256];
    int n_texts = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(a, "--grammar") && i + 1 < argc) {
            gpath = argv[++i];
        } else if (a[0] == '-') {
            fprintf(stderr, "spindle grammar-bench: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (n_texts < 256) {
            texts[n_texts++] = a;
        }
    }
    if (!model || !n_texts) {
        fprintf(stderr, "spindle grammar-bench: -m MODEL and a text file are required (see "
                        "--help)\n");
        return 2;
    }
    sp_diag d;
    sp_diag_clear(&d);
    sp_gguf *gg = NULL;
    sp_vocab *v = NULL;
    sp_err err = sp_gguf_open(model, &gg, &d);
    if (!err && (err = sp_vocab_load(gg, &v, &d)))
        sp_gguf_close(gg);
    if (err) {
        fprintf(stderr, "spindle grammar-bench: cannot read the vocabulary of '%s': %s\n", model,
                d.msg);
        return 1;
    }
    char *gtext = NULL;
    size_t glen = 0;
    if (gpath && sp_read_file(gpath, &gtext, &glen) < 0) {
        fprintf(stderr, "spindle grammar-bench: cannot read '%s'\n", gpath);
        sp_vocab_destroy(v);
        sp_gguf_close(gg);
        return 1;
    }
    const char *src = gtext ? gtext : sp_grammar_json_gbnf;
    const size_t src_len = gtext ? glen : strlen(sp_grammar_json_gbnf);
    // Compile time: the median of 50 compiles.
    enum { COMPILES = 50 };
    double compile_us[COMPILES];
    sp_grammar *g = NULL;
    for (int i = 0; i < COMPILES && !err; i++) {
        sp_grammar_release(g);
        g = NULL;
        const int64_t t0 = sp_time_ns();
        err = sp_grammar_from_gbnf(src, src_len, &g, &d);
        compile_us[i] = (double)(sp_time_ns() - t0) * 1e-3;
    }
    int rc = 1;
    const int32_t n = (int32_t)sp_vocab_n_tokens(v);
    const uint8_t **bytes = calloc((size_t)n, sizeof *bytes);
    uint32_t *len = calloc((size_t)n, sizeof *len), *mask = malloc(((size_t)n + 31) / 32 * 4);
    sp_token_trie *t = NULL;
    sp_mask_cache *cache = NULL;
    sp_matcher *m = NULL;
    double *us[3] = {NULL, NULL, NULL};
    size_t n_us = 0, cap_us = 0;
    int64_t trie_ns = 0;
    if (err) {
        fprintf(stderr, "spindle grammar-bench: %s\n", d.msg);
        goto done;
    }
    for (int32_t i = 0; i < n; i++) {
        const sp_str p = sp_tok_piece_ref(v, i, false);
        bytes[i] = (const uint8_t *)p.ptr;
        len[i] = (uint32_t)p.len;
    }
    trie_ns = sp_time_ns();
    if (sp_token_trie_create(bytes, len, n, &t) ||
        sp_mask_cache_create(t, (size_t)16 << 20, &cache) || sp_matcher_create(g, &m))
        goto done;
    trie_ns = sp_time_ns() - trie_ns;
    size_t hits = 0;
    for (int k = 0; k < n_texts; k++) {
        char *text;
        size_t tlen;
        if (sp_read_file(texts[k], &text, &tlen) < 0) {
            fprintf(stderr, "spindle grammar-bench: cannot read '%s'\n", texts[k]);
            goto done;
        }
        sp_tokens toks;
        sp_tokens_init(&toks);
        err = sp_tok_encode_continuation(v, text, tlen, &toks, &d);
        free(text);
        if (err) {
            fprintf(stderr, "spindle grammar-bench: %s: %s\n", texts[k], d.msg);
            sp_tokens_deinit(&toks);
            goto done;
        }
        sp_matcher_reset(m);
        size_t taken = 0;
        for (size_t i = 0; i < toks.n; i++) {
            const int32_t tok = toks.ids[i];
            if (n_us == cap_us) {
                cap_us = cap_us ? 2 * cap_us : 4096;
                for (int j = 0; j < 3; j++)
                    us[j] = realloc(us[j], cap_us * sizeof *us[j]);
            }
            bool ok = false, hit = false;
            int32_t count;
            int64_t t0 = sp_time_ns();
            err = sp_matcher_allows(m, bytes[tok], len[tok], &ok);
            const int64_t t1 = sp_time_ns();
            if (!err)
                err = sp_matcher_fill_mask(m, t, mask, &count);
            const int64_t t2 = sp_time_ns();
            if (!err)
                err = sp_mask_cache_get(cache, m, true, mask, &count, &hit);
            const int64_t t3 = sp_time_ns();
            if (err || !ok)
                break;
            us[0][n_us] = (double)(t1 - t0) * 1e-3;
            us[1][n_us] = (double)(t2 - t1) * 1e-3;
            us[2][n_us] = (double)(t3 - t2) * 1e-3;
            n_us++;
            hits += hit;
            taken++;
            if (sp_matcher_accept(m, bytes[tok], len[tok], &ok) || !ok)
                break;
        }
        printf("%s: %zu tokens, %zu taken by the grammar%s\n", texts[k], toks.n, taken,
               taken < toks.n ? " (it rejects the next)" : "");
        sp_tokens_deinit(&toks);
    }
    if (!n_us) {
        fprintf(stderr, "spindle grammar-bench: no token was taken by the grammar\n");
        goto done;
    }
    qsort(compile_us, COMPILES, sizeof *compile_us, cmp_double);
    printf("\nvocabulary: %d tokens (trie of %u nodes, built in %.1f ms); grammar compiled in "
           "%.0f us (median)\n",
           n, t->n_nodes, (double)trie_ns * 1e-6, compile_us[COMPILES / 2]);
    printf("%zu tokens; mask cache hits: %.1f%%\n\n", n_us, 100.0 * (double)hits / (double)n_us);
    printf("%-22s %10s %10s %10s\n", "per token (us)", "p50", "p99", "max");
    print_row("check the token", us[0], n_us);
    print_row("full mask", us[1], n_us);
    print_row("mask with the cache", us[2], n_us);
    rc = 0;
done:
    for (int j = 0; j < 3; j++)
        free(us[j]);
    sp_matcher_destroy(m);
    sp_mask_cache_destroy(cache);
    sp_token_trie_destroy(t);
    sp_grammar_release(g);
    free(bytes);
    free(len);
    free(mask);
    free(gtext);
    sp_vocab_destroy(v);
    sp_gguf_close(gg);
    return rc;
}
