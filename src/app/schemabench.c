/* `spindle grammar-bench --schemas`: what JSON Schema constraints cost over a set of schemas
 * (bench/schemas/gen.py writes one). Each schema is compiled as the server compiles
 * response_format json_schema, and each of its instances walked through the grammar
 * (grammarbench.c), with one mask cache for the whole set as in the engine. A schema's first
 * instance meets grammar states that no walk has cached yet (the first request with a schema);
 * its later instances find those of the instances before (the requests after it): the cached
 * mask is reported for both. Every instance is valid against its schema, so a rejection is a
 * bug of the compiler or the matcher, named on stderr. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/grammarbench.h"
#include "base/util.h"
#include "grammar/schema.h"

enum {
    COMPILES = 5, // a schema's compile time is the median of this many compiles
    TAG_FIRST = 1,
    TAG_LATER = 2,
};

typedef struct set_stats {
    double *compile_us; // (lines in the file) each compiled schema's time
    size_t n_schemas, n_compiled, n_instances, n_rejected;
    double slowest_us, slowest_mask_us;
    char slowest[128];      // the schema slowest to compile
    char slowest_mask[128]; // the schema of the slowest full mask
} set_stats;

static sp_err compile_schema(const void *schema, sp_grammar **out, sp_diag *diag) {
    return sp_grammar_from_json_schema((json_t *)schema, out, diag);
}

/* Writes text[from, to) to stderr, line breaks and other control characters escaped, the ends
 * moved off the middle of UTF-8 characters. */
static void put_snippet(const char *text, size_t len, size_t from, size_t to) {
    while (from > 0 && ((unsigned char)text[from] & 0xC0) == 0x80)
        from--;
    while (to < len && ((unsigned char)text[to] & 0xC0) == 0x80)
        to++;
    for (size_t i = from; i < to; i++) {
        const unsigned char c = (unsigned char)text[i];
        if (c == '\n')
            fputs("\\n", stderr);
        else if (c < 0x20 || c == 0x7F)
            fprintf(stderr, "\\x%02X", c);
        else
            fputc(c, stderr);
    }
}

/* Says on stderr what is wrong with the walk of instance k of schema name; false if nothing. */
static bool report_walk(const char *name, size_t k, const char *text, size_t len,
                        const sp__gb_walk *w) {
    const size_t at = w->n_bytes;
    if (w->n_taken < w->n_tokens) {
        fprintf(stderr, "schema %s, instance %zu: rejected at byte %zu (token %zu of %zu): ", name,
                k, at, w->n_taken, w->n_tokens);
        put_snippet(text, len, at > 60 ? at - 60 : 0, at);
        fputs(" >>> ", stderr);
        put_snippet(text, len, at, at + 20 < len ? at + 20 : len);
        fputc('\n', stderr);
    } else if (!w->complete) {
        fprintf(stderr, "schema %s, instance %zu: the grammar does not end after the instance\n",
                name, k);
    }
    if (w->n_unmasked)
        fprintf(stderr,
                "schema %s, instance %zu: %zu tokens the grammar took were missing from "
                "its mask (a matcher bug)\n",
                name, k, w->n_unmasked);
    return w->n_taken < w->n_tokens || !w->complete || w->n_unmasked;
}

/* Walks each instance (JSON strings) through g; counts them and the rejected ones in s. */
static sp_err walk_instances(sp__gbench *b, sp_grammar *g, const char *name, json_t *instances,
                             set_stats *s) {
    sp_matcher *m = NULL;
    sp_err err = sp_matcher_create(g, &m);
    const size_t start = b->n;
    size_t k;
    json_t *x;
    json_array_foreach(instances, k, x) {
        if (err)
            break;
        const char *text = json_string_value(x);
        const size_t len = json_string_length(x);
        sp_diag d;
        sp_diag_clear(&d);
        sp__gb_walk w;
        s->n_instances++;
        err = sp__gbench_walk(b, m, text, len, k ? TAG_LATER : TAG_FIRST, &w, &d);
        if (err == SP_ERR_NOMEM)
            break;
        if (err) { // the tokenizer's or the matcher's limits: this instance fails
            fprintf(stderr, "schema %s, instance %zu: %s\n", name, k,
                    d.msg[0] ? d.msg : sp_err_str(err));
            s->n_rejected++;
            err = SP_OK;
            continue;
        }
        s->n_rejected += report_walk(name, k, text, len, &w);
    }
    for (size_t i = start; b->masks && i < b->n; i++)
        if (b->us[SP__GB_FULL][i] > s->slowest_mask_us) {
            s->slowest_mask_us = b->us[SP__GB_FULL][i];
            snprintf(s->slowest_mask, sizeof s->slowest_mask, "%s", name);
        }
    sp_matcher_destroy(m);
    return err;
}

/* One line of the set: {"name", "schema", "instances": [JSON text, ...]}. Returns 0, or 1 if
 * the line is not such an entry or memory runs out (said on stderr). */
static int run_entry(sp__gbench *b, const char *path, size_t line_no, json_t *e, set_stats *s) {
    json_t *schema = json_object_get(e, "schema"), *instances = json_object_get(e, "instances");
    const char *name = json_string_value(json_object_get(e, "name"));
    bool strings = json_is_array(instances);
    for (size_t k = 0; strings && k < json_array_size(instances); k++)
        strings = json_is_string(json_array_get(instances, k));
    if (!name || !schema || !strings) {
        fprintf(stderr,
                "spindle grammar-bench: %s:%zu: not {\"name\", \"schema\", \"instances\": "
                "[strings]}\n",
                path, line_no);
        return 1;
    }
    s->n_schemas++;
    sp_diag d;
    sp_diag_clear(&d);
    sp_grammar *g = NULL;
    double us;
    sp_err err = sp__gbench_compile(compile_schema, schema, COMPILES, &g, &us, &d);
    if (err == SP_ERR_NOMEM)
        goto nomem;
    if (err) {
        fprintf(stderr, "schema %s: does not compile: %s\n", name, d.msg);
        s->n_instances += json_array_size(instances);
        return 0;
    }
    s->compile_us[s->n_compiled++] = us;
    if (us > s->slowest_us) {
        s->slowest_us = us;
        snprintf(s->slowest, sizeof s->slowest, "%s", name);
    }
    err = walk_instances(b, g, name, instances, s);
    sp_grammar_release(g);
    if (!err)
        return 0;
nomem:
    fprintf(stderr, "spindle grammar-bench: out of memory\n");
    return 1;
}

/* The cached mask's times of the walks tagged tag into out (b->n entries), their count in *n
 * and the cache hits among them in *hits. */
static void split_cached(const sp__gbench *b, uint8_t tag, double *out, size_t *n, size_t *hits) {
    *n = *hits = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->tag[i] == tag) {
            out[(*n)++] = b->us[SP__GB_CACHED][i];
            *hits += b->hit[i];
        }
}

static double pct(size_t part, size_t all) {
    return all ? 100.0 * (double)part / (double)all : 0.0;
}

/* The mask rows, the cached mask's of first and later instances apart, and the hit rates. */
static int print_mask_rows(sp__gbench *b, const set_stats *s) {
    double *first = malloc(b->n * sizeof *first), *later = malloc(b->n * sizeof *later);
    if (!first || !later) {
        free(first);
        free(later);
        fprintf(stderr, "spindle grammar-bench: out of memory\n");
        return 1;
    }
    size_t n_first, n_later, hits_first, hits_later;
    split_cached(b, TAG_FIRST, first, &n_first, &hits_first);
    split_cached(b, TAG_LATER, later, &n_later, &hits_later);
    sp__gbench_print_rows(b);
    if (n_first)
        sp__gbench_print_row("  first instance", first, n_first);
    if (n_later)
        sp__gbench_print_row("  later instances", later, n_later);
    printf("\nmask cache hits: %.1f%% (first instances %.1f%%, later instances %.1f%%)\n",
           pct(hits_first + hits_later, b->n), pct(hits_first, n_first), pct(hits_later, n_later));
    printf("slowest full mask: %s (%.0f us)\n", s->slowest_mask, s->slowest_mask_us);
    free(first);
    free(later);
    return 0;
}

static int print_report(sp__gbench *b, const set_stats *s) {
    printf("schemas: %zu (%zu do not compile); instances: %zu (%zu rejected); tokens taken: "
           "%zu\n",
           s->n_schemas, s->n_schemas - s->n_compiled, s->n_instances, s->n_rejected, b->n);
    printf("vocabulary: %d tokens (trie of %u nodes, built in %.1f ms)\n\n", b->n_vocab,
           b->trie->n_nodes, b->trie_ms);
    if (s->n_compiled) {
        sp__gbench_print_header("compile (us)");
        sp__gbench_print_row("per schema", s->compile_us, s->n_compiled);
        printf("slowest to compile: %s (%.0f us)\n\n", s->slowest, s->slowest_us);
    }
    if (!b->n)
        return 0;
    if (!b->masks) {
        sp__gbench_print_rows(b);
        return 0;
    }
    return print_mask_rows(b, s);
}

int sp__gbench_schemas(sp__gbench *b, const char *path) {
    char *text;
    size_t len;
    if (sp_read_file(path, &text, &len) < 0) {
        fprintf(stderr, "spindle grammar-bench: cannot read '%s'\n", path);
        return 1;
    }
    set_stats s = {0};
    size_t n_lines = 1;
    for (const char *p = text; (p = memchr(p, '\n', len - (size_t)(p - text))); p++)
        n_lines++;
    int rc = 0;
    if (!(s.compile_us = malloc(n_lines * sizeof *s.compile_us))) {
        fprintf(stderr, "spindle grammar-bench: out of memory\n");
        rc = 1;
    }
    size_t line_no = 0;
    for (char *p = text; !rc && p < text + len;) {
        char *end = memchr(p, '\n', len - (size_t)(p - text));
        const size_t n = end ? (size_t)(end - p) : len - (size_t)(p - text);
        line_no++;
        json_error_t jerr;
        json_t *e = strspn(p, " \t\r") >= n ? NULL : json_loadb(p, n, 0, &jerr);
        if (e) {
            rc = run_entry(b, path, line_no, e, &s);
            json_decref(e);
        } else if (strspn(p, " \t\r") < n) {
            fprintf(stderr, "spindle grammar-bench: %s:%zu: %s\n", path, line_no, jerr.text);
            rc = 1;
        }
        p += n + 1;
    }
    if (!rc && !s.n_schemas) {
        fprintf(stderr, "spindle grammar-bench: no schema in '%s'\n", path);
        rc = 1;
    }
    if (!rc)
        rc = print_report(b, &s);
    if (!rc && (s.n_compiled < s.n_schemas || s.n_rejected)) {
        fprintf(stderr,
                "spindle grammar-bench: %zu schemas do not compile, %zu instances "
                "rejected (each is valid against its schema)\n",
                s.n_schemas - s.n_compiled, s.n_rejected);
        rc = 1;
    }
    free(s.compile_us);
    free(text);
    return rc;
}
