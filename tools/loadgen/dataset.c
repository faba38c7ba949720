#include "loadgen/dataset.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/util.h"

// Common English words; calibration keeps those the server's vocabulary holds as one token.
static const char *const default_words[] = {
    "the",     "of",      "and",    "to",      "a",        "in",       "is",       "was",
    "he",      "she",     "it",     "that",    "for",      "on",       "with",     "as",
    "his",     "her",     "they",   "at",      "be",       "this",     "from",     "had",
    "by",      "not",     "but",    "what",    "all",      "were",     "we",       "when",
    "your",    "can",     "said",   "there",   "use",      "an",       "each",     "which",
    "do",      "how",     "their",  "if",      "will",     "up",       "other",    "about",
    "out",     "many",    "then",   "them",    "these",    "so",       "some",     "would",
    "make",    "like",    "him",    "into",    "time",     "has",      "look",     "two",
    "more",    "write",   "go",     "see",     "number",   "no",       "way",      "could",
    "people",  "my",      "than",   "first",   "water",    "been",     "call",     "who",
    "its",     "now",     "find",   "long",    "down",     "day",      "did",      "get",
    "come",    "made",    "may",    "part",    "over",     "new",      "sound",    "take",
    "only",    "little",  "work",   "know",    "place",    "year",     "live",     "me",
    "back",    "give",    "most",   "very",    "after",    "thing",    "our",      "just",
    "name",    "good",    "man",    "think",   "say",      "great",    "where",    "help",
    "through", "much",    "before", "line",    "right",    "too",      "mean",     "old",
    "any",     "same",    "tell",   "boy",     "follow",   "came",     "want",     "show",
    "also",    "around",  "form",   "three",   "small",    "set",      "put",      "end",
    "does",    "another", "well",   "large",   "must",     "big",      "even",     "such",
    "because", "turn",    "here",   "why",     "ask",      "went",     "men",      "read",
    "need",    "land",    "home",   "us",      "move",     "try",      "kind",     "hand",
    "again",   "change",  "off",    "play",    "air",      "away",     "animal",   "house",
    "point",   "page",    "letter", "mother",  "answer",   "found",    "study",    "still",
    "learn",   "should",  "world",  "high",    "every",    "near",     "add",      "food",
    "between", "own",     "below",  "country", "plant",    "last",     "school",   "father",
    "keep",    "tree",    "never",  "start",   "city",     "earth",    "eye",      "light",
    "thought", "head",    "under",  "story",   "saw",      "left",     "few",      "while",
    "along",   "might",   "close",  "seem",    "next",     "hard",     "open",     "example",
    "begin",   "life",    "always", "those",   "both",     "paper",    "together", "got",
    "group",   "often",   "run",    "until",   "children", "side",     "feet",     "car",
    "night",   "walk",    "white",  "sea",     "began",    "grow",     "took",     "river",
    "four",    "carry",   "state",  "once",    "book",     "hear",     "stop",     "without",
    "second",  "later",   "idea",   "enough",  "eat",      "face",     "watch",    "far",
    "really",  "almost",  "let",    "above",   "girl",     "mountain", "cut",      "young",
    "talk",    "soon",    "list",   "song",    "being",    "leave",    "family",   "happy",
    "sad",     "dog",     "cat",    "ball",    "sun",      "friend",   "bird",     "fish",
    "red",     "blue",    "green",  "park",    "toy",      "cake",     "rain",     "snow",
    "wind",
};

sp_lg_words sp_lg_default_words(void) {
    return (sp_lg_words){default_words, (int)SP_ARRAY_LEN(default_words)};
}

static bool reserve(char **s, size_t *cap, size_t need) {
    if (need <= *cap)
        return true;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    char *ns = realloc(*s, nc);
    if (!ns)
        return false;
    *s = ns;
    *cap = nc;
    return true;
}

static sp_err append_str(char **s, size_t *len, size_t *cap, const char *t, size_t tl) {
    if (!reserve(s, cap, *len + tl + 1))
        return SP_ERR_NOMEM;
    memcpy(*s + *len, t, tl);
    *len += tl;
    (*s)[*len] = '\0';
    return SP_OK;
}

sp_err sp_lg_append_words(char **s, size_t *len, size_t *cap, sp_lg_words words, sp_lg_rng *rng,
                          int k) {
    SP_ASSERT(words.n >= 1 && k >= 0);
    size_t old_len = *len;
    for (int i = 0; i < k; i++) {
        const char *w = words.w[sp_lg_rng_range(rng, 0, words.n - 1)];
        if ((*len && append_str(s, len, cap, " ", 1)) || append_str(s, len, cap, w, strlen(w))) {
            *len = old_len;
            if (*s)
                (*s)[old_len] = '\0';
            return SP_ERR_NOMEM;
        }
    }
    if (!*s && reserve(s, cap, 1))
        (*s)[0] = '\0';
    return *s ? SP_OK : SP_ERR_NOMEM;
}

/* k random words as a new heap string. */
static char *random_words(sp_lg_words words, sp_lg_rng *rng, int k) {
    char *s = NULL;
    size_t len = 0, cap = 0;
    if (sp_lg_append_words(&s, &len, &cap, words, rng, k) != SP_OK) {
        free(s);
        return NULL;
    }
    return s;
}

/* A length uniform in [L(1-X), L(1+X)], at least lo_min. */
static int sample_len(sp_lg_rng *rng, int len, double ratio, int lo_min) {
    int lo = (int)floor(len * (1.0 - ratio));
    int hi = (int)ceil(len * (1.0 + ratio));
    if (ratio == 0.0)
        lo = hi = len;
    lo = SP_MAX(lo, lo_min);
    hi = SP_MAX(hi, lo);
    return (int)sp_lg_rng_range(rng, lo, hi);
}

/* An output length: uniform as sample_len, or long-tailed (Pareto, shape 1.5, mean len). */
static int sample_output(sp_lg_rng *rng, const sp_lg_ds_opts *o) {
    if (!o->output_pareto)
        return sample_len(rng, o->output_len, o->range_ratio, 1);
    const double shape = 1.5, xm = o->output_len * (shape - 1.0) / shape;
    double u = 1.0 - sp_lg_rng_uniform(rng); // (0, 1]
    double v = xm / pow(u, 1.0 / shape);
    int cap = o->output_cap > 0 ? o->output_cap : 20 * o->output_len;
    return (int)SP_MIN((double)cap, SP_MAX(1.0, floor(v)));
}

void sp_lg_dataset_free(sp_lg_dataset *ds) {
    if (!ds)
        return;
    for (size_t i = 0; i < ds->n; i++) {
        free(ds->items[i].prompt);
        free(ds->items[i].system);
        free(ds->items[i].prediction);
    }
    free(ds->items);
    memset(ds, 0, sizeof *ds);
}

static sp_lg_item blank_item(void) {
    return (sp_lg_item){.n_words = -1, .t_arrival_s = -1.0, .session = -1, .group = -1};
}

static sp_err build_random(const sp_lg_ds_opts *o, sp_lg_words words, sp_lg_rng *rng,
                           sp_lg_dataset *ds) {
    for (size_t i = 0; i < ds->n; i++) {
        sp_lg_item *it = &ds->items[i];
        int in = sample_len(rng, o->input_len, o->range_ratio, 1);
        it->output_len = sample_output(rng, o);
        it->prompt = random_words(words, rng, in);
        if (!it->prompt)
            return SP_ERR_NOMEM;
        it->n_words = in;
    }
    return SP_OK;
}

static sp_err build_shared_prefix(const sp_lg_ds_opts *o, sp_lg_words words, sp_lg_rng *rng,
                                  sp_lg_dataset *ds) {
    int g = o->num_groups;
    char **prefix = calloc((size_t)g, sizeof *prefix);
    if (!prefix)
        return SP_ERR_NOMEM;
    sp_err err = SP_OK;
    for (int i = 0; i < g; i++)
        if (!(prefix[i] = random_words(words, rng, o->shared_prefix_len))) {
            err = SP_ERR_NOMEM;
            goto done;
        }
    // Groups round-robin, then the order shuffled (Fisher-Yates) so groups interleave randomly.
    int32_t *order = malloc(ds->n * sizeof *order);
    if (!order) {
        err = SP_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < ds->n; i++)
        order[i] = (int32_t)(i % (size_t)g);
    for (size_t i = ds->n; i > 1; i--) {
        size_t j = (size_t)sp_lg_rng_range(rng, 0, (int64_t)i - 1);
        int32_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < ds->n; i++) {
        sp_lg_item *it = &ds->items[i];
        int in = sample_len(rng, o->input_len, o->range_ratio, 1);
        it->group = order[i];
        it->output_len = sample_output(rng, o);
        it->system = strdup(prefix[order[i]]);
        it->prompt = random_words(words, rng, in);
        if (!it->system || !it->prompt) {
            err = SP_ERR_NOMEM;
            break;
        }
        it->n_words = o->shared_prefix_len + in;
    }
    free(order);
done:
    for (int i = 0; i < g; i++)
        free(prefix[i]);
    free(prefix);
    return err;
}

static sp_err build_multi_turn(const sp_lg_ds_opts *o, sp_lg_words words, sp_lg_rng *rng,
                               sp_lg_dataset *ds) {
    int t = o->turns;
    ds->n_sessions = (int)((ds->n + (size_t)t - 1) / (size_t)t);
    for (size_t i = 0; i < ds->n; i++) {
        sp_lg_item *it = &ds->items[i];
        int in = sample_len(rng, o->input_len, o->range_ratio, 1);
        it->session = (int32_t)(i / (size_t)t);
        it->turn = (int32_t)(i % (size_t)t);
        it->output_len = sample_output(rng, o);
        it->prompt = random_words(words, rng, in);
        if (!it->prompt)
            return SP_ERR_NOMEM;
        it->n_words = in; // of this turn's new text; the history adds to it
    }
    return SP_OK;
}

/* The 512 words of Mooncake hash block id (the same id gives the same block everywhere). */
static sp_err append_block(char **s, size_t *len, size_t *cap, sp_lg_words words, uint64_t seed,
                           int64_t id, int k) {
    sp_lg_rng r;
    sp_lg_rng_seed(&r, seed ^ ((uint64_t)id * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull));
    return sp_lg_append_words(s, len, cap, words, &r, k);
}

static sp_err trace_row(const sp_lg_ds_opts *o, sp_lg_words words, sp_lg_rng *rng, json_t *row,
                        size_t line_no, sp_lg_item *it, sp_diag *d) {
    if (!json_is_object(row))
        return sp_diag_set(d, SP_ERR_FORMAT, line_no, "line %zu: not a JSON object", line_no);
    json_t *ts = json_object_get(row, "timestamp");
    if (ts) {
        if (!json_is_number(ts) || json_number_value(ts) < 0)
            return sp_diag_set(d, SP_ERR_FORMAT, line_no,
                               "line %zu: 'timestamp' must be a non-negative number of ms",
                               line_no);
        it->t_arrival_s = json_number_value(ts) / 1000.0;
    }
    json_t *prompt = json_object_get(row, "prompt");
    json_t *out = json_object_get(row, "output_length");
    if (!out)
        out = json_object_get(row, "output_len");
    if (!json_is_integer(out) || json_integer_value(out) < 1 || json_integer_value(out) > 1000000)
        return sp_diag_set(d, SP_ERR_FORMAT, line_no,
                           "line %zu: needs an 'output_length' (or 'output_len') >= 1", line_no);
    it->output_len = (int32_t)json_integer_value(out);
    if (prompt) {
        if (!json_is_string(prompt))
            return sp_diag_set(d, SP_ERR_FORMAT, line_no, "line %zu: 'prompt' must be a string",
                               line_no);
        it->prompt = strdup(json_string_value(prompt));
        return it->prompt ? SP_OK : SP_ERR_NOMEM;
    }
    json_t *in = json_object_get(row, "input_length");
    if (!json_is_integer(in) || json_integer_value(in) < 1 || json_integer_value(in) > 10000000)
        return sp_diag_set(d, SP_ERR_FORMAT, line_no,
                           "line %zu: needs a 'prompt' or an 'input_length' >= 1", line_no);
    int n_in = (int)json_integer_value(in);
    json_t *ids = json_object_get(row, "hash_ids");
    if (ids && !json_is_array(ids))
        return sp_diag_set(d, SP_ERR_FORMAT, line_no, "line %zu: 'hash_ids' must be an array",
                           line_no);
    char *s = NULL;
    size_t len = 0, cap = 0;
    sp_err err = SP_OK;
    int done = 0;
    size_t n_ids = ids ? json_array_size(ids) : 0;
    for (size_t b = 0; b < n_ids && done < n_in; b++) {
        json_t *id = json_array_get(ids, b);
        if (!json_is_integer(id)) {
            free(s);
            return sp_diag_set(d, SP_ERR_FORMAT, line_no, "line %zu: 'hash_ids' must hold integers",
                               line_no);
        }
        int k = SP_MIN(SP_LG_TRACE_BLOCK, n_in - done);
        if ((err = append_block(&s, &len, &cap, words, o->seed, json_integer_value(id), k))) {
            free(s);
            return err;
        }
        done += k;
    }
    // Tokens beyond the listed blocks are unique to this request.
    if ((err = sp_lg_append_words(&s, &len, &cap, words, rng, n_in - done))) {
        free(s);
        return err;
    }
    it->prompt = s;
    it->n_words = n_in;
    return SP_OK;
}

static sp_err build_file(const sp_lg_ds_opts *o, sp_lg_words words, sp_lg_rng *rng,
                         sp_lg_dataset *ds, sp_diag *d) {
    char *text = NULL;
    size_t text_len = 0;
    int rc = sp_read_file(o->path, &text, &text_len);
    if (rc)
        return sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "cannot read '%s': %s", o->path,
                           strerror(-rc));
    sp_err err = SP_OK;
    size_t cap = 0;
    size_t line_no = 0;
    bool all_timed = true;
    double t0 = INFINITY;
    char *p = text, *end = text + text_len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        line_no++;
        char *q = p;
        while (q < le && (*q == ' ' || *q == '\t' || *q == '\r'))
            q++;
        if (q < le) {
            if (o->num_prompts > 0 && ds->n >= (size_t)o->num_prompts)
                break;
            json_error_t je;
            json_t *row = json_loadb(p, (size_t)(le - p), 0, &je);
            if (!row) {
                err =
                    sp_diag_set(d, SP_ERR_FORMAT, line_no, "%s:%zu: %s", o->path, line_no, je.text);
                goto fail;
            }
            if (ds->n == cap) {
                size_t nc = cap ? cap * 2 : 256;
                sp_lg_item *ni = realloc(ds->items, nc * sizeof *ni);
                if (!ni) {
                    json_decref(row);
                    err = SP_ERR_NOMEM;
                    goto fail;
                }
                ds->items = ni;
                cap = nc;
            }
            sp_lg_item *it = &ds->items[ds->n];
            *it = blank_item();
            err = trace_row(o, words, rng, row, line_no, it, d);
            json_decref(row);
            if (err) {
                free(it->prompt);
                goto fail;
            }
            ds->n++;
            if (it->t_arrival_s < 0)
                all_timed = false;
            else
                t0 = SP_MIN(t0, it->t_arrival_s);
        }
        p = nl ? nl + 1 : end;
    }
    if (ds->n == 0) {
        err = sp_diag_set(d, SP_ERR_FORMAT, UINT64_MAX, "'%s' has no rows", o->path);
        goto fail;
    }
    ds->timed = all_timed;
    for (size_t i = 0; i < ds->n; i++) {
        if (all_timed)
            ds->items[i].t_arrival_s -= t0; // replay relative to the first row
        else
            ds->items[i].t_arrival_s = -1.0;
    }
    free(text);
    return SP_OK;
fail:
    free(text);
    return err;
}

sp_err sp_lg_dataset_build(const sp_lg_ds_opts *o, sp_lg_words words, sp_lg_dataset *out,
                           sp_diag *d) {
    if (words.n < 1 || !words.w)
        return sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "no words to build prompts from");
    if (!(o->range_ratio >= 0.0 && o->range_ratio < 1.0))
        return sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "--range-ratio must be in [0, 1)");
    if (o->kind != SP_LG_DS_FILE) {
        if (o->num_prompts < 1)
            return sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "--num-prompts must be >= 1");
        if (o->input_len < 1 || o->output_len < 1 || o->input_len > 10000000 ||
            o->output_len > 10000000)
            return sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX,
                               "--input-len and --output-len must be >= 1");
    }
    if (o->kind == SP_LG_DS_SHARED_PREFIX &&
        (o->num_groups < 1 || o->shared_prefix_len < 1 || o->shared_prefix_len > 10000000))
        return sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX,
                           "--num-groups and --shared-prefix-len must be >= 1");
    if (o->kind == SP_LG_DS_MULTI_TURN && o->turns < 1)
        return sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "--turns must be >= 1");
    if (o->kind == SP_LG_DS_FILE && !o->path)
        return sp_diag_set(d, SP_ERR_INVALID, UINT64_MAX, "no dataset file");

    sp_lg_dataset ds = {0};
    sp_lg_rng rng;
    sp_lg_rng_seed(&rng, o->seed);
    sp_err err;
    if (o->kind == SP_LG_DS_FILE) {
        err = build_file(o, words, &rng, &ds, d);
        if (err)
            goto fail;
        *out = ds;
        return SP_OK;
    }
    ds.n = (size_t)o->num_prompts;
    ds.items = malloc(ds.n * sizeof *ds.items);
    if (!ds.items)
        return SP_ERR_NOMEM;
    for (size_t i = 0; i < ds.n; i++)
        ds.items[i] = blank_item();
    switch (o->kind) {
    case SP_LG_DS_RANDOM:
    case SP_LG_DS_PREDICTION: // the predictions are made once the outputs are known
        err = build_random(o, words, &rng, &ds);
        break;
    case SP_LG_DS_SHARED_PREFIX:
        err = build_shared_prefix(o, words, &rng, &ds);
        break;
    case SP_LG_DS_MULTI_TURN:
        err = build_multi_turn(o, words, &rng, &ds);
        break;
    default:
        err = SP_ERR_INVALID;
    }
    if (err)
        goto fail;
    *out = ds;
    return SP_OK;
fail:
    sp_lg_dataset_free(&ds);
    return err;
}

int32_t sp_lg_corrupt_tokens(const int32_t *ids, int32_t n, double accuracy, const int32_t *alt,
                             int32_t n_alt, sp_lg_rng *rng, int32_t *out) {
    int32_t kept = 0;
    for (int32_t i = 0; i < n; i++) {
        if (n_alt == 0 || sp_lg_rng_uniform(rng) < accuracy) {
            out[i] = ids[i];
            kept++;
            continue;
        }
        // Another token than the right one (an alternative equal to it counts as kept).
        out[i] = alt[sp_lg_rng_range(rng, 0, n_alt - 1)];
        kept += out[i] == ids[i];
    }
    return kept;
}

/* ---- Multi-turn history and request bodies ------------------------------------------------ */

void sp_lg_history_free(sp_lg_history *h) {
    if (!h)
        return;
    for (int i = 0; i < h->n; i++) {
        free(h->user[i]);
        free(h->assistant[i]);
    }
    free(h->user);
    free(h->assistant);
    memset(h, 0, sizeof *h);
}

sp_err sp_lg_history_add(sp_lg_history *h, const char *user, const char *assistant) {
    if (h->n == h->cap) {
        int nc = h->cap ? h->cap * 2 : 4;
        char **nu = realloc(h->user, (size_t)nc * sizeof *nu);
        if (!nu)
            return SP_ERR_NOMEM;
        h->user = nu;
        char **na = realloc(h->assistant, (size_t)nc * sizeof *na);
        if (!na)
            return SP_ERR_NOMEM;
        h->assistant = na;
        h->cap = nc;
    }
    char *u = strdup(user), *a = strdup(assistant);
    if (!u || !a) {
        free(u);
        free(a);
        return SP_ERR_NOMEM;
    }
    h->user[h->n] = u;
    h->assistant[h->n] = a;
    h->n++;
    return SP_OK;
}

static json_t *message(const char *role, const char *content) {
    return json_pack("{s:s, s:s}", "role", role, "content", content);
}

sp_err sp_lg_build_body(const sp_lg_body_opts *o, const sp_lg_item *it, const sp_lg_history *h,
                        char **out) {
    sp_err err = SP_ERR_NOMEM;
    json_t *body = json_object();
    char *prompt = NULL;
    if (!body)
        return SP_ERR_NOMEM;
    int n_prev = h ? h->n : 0;
    if (o->chat) {
        json_t *msgs = json_array();
        if (!msgs || json_object_set_new(body, "messages", msgs))
            goto fail;
        if (it->system && json_array_append_new(msgs, message("system", it->system)))
            goto fail;
        for (int i = 0; i < n_prev; i++)
            if (json_array_append_new(msgs, message("user", h->user[i])) ||
                json_array_append_new(msgs, message("assistant", h->assistant[i])))
                goto fail;
        if (json_array_append_new(msgs, message("user", it->prompt)))
            goto fail;
        if (json_object_set_new(body, "max_completion_tokens",
                                json_integer(o->max_tokens > 0 ? o->max_tokens : it->output_len)))
            goto fail;
    } else {
        size_t len = 0, cap = 0;
        const char *parts[2];
        if (it->system && (append_str(&prompt, &len, &cap, it->system, strlen(it->system)) ||
                           append_str(&prompt, &len, &cap, " ", 1)))
            goto fail;
        for (int i = 0; i < n_prev; i++) {
            parts[0] = h->user[i];
            parts[1] = h->assistant[i];
            for (int k = 0; k < 2; k++)
                if (append_str(&prompt, &len, &cap, parts[k], strlen(parts[k])) ||
                    append_str(&prompt, &len, &cap, " ", 1))
                    goto fail;
        }
        if (append_str(&prompt, &len, &cap, it->prompt, strlen(it->prompt)))
            goto fail;
        if (json_object_set_new(body, "prompt", json_stringn(prompt, len)) ||
            json_object_set_new(body, "max_tokens",
                                json_integer(o->max_tokens > 0 ? o->max_tokens : it->output_len)))
            goto fail;
    }
    if (o->model && json_object_set_new(body, "model", json_string(o->model)))
        goto fail;
    if (json_object_set_new(body, "stream", json_true()) ||
        json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1)))
        goto fail;
    if (o->ignore_eos && json_object_set_new(body, "ignore_eos", json_true()))
        goto fail;
    if (o->max_tokens > 0 &&
        json_object_set_new(body, "stop_after", json_integer(SP_MIN(it->output_len, o->max_tokens))))
        goto fail;
    if (o->temperature >= 0 && json_object_set_new(body, "temperature", json_real(o->temperature)))
        goto fail;
    if (o->deadline_ms > 0 &&
        json_object_set_new(body, "deadline_ms", json_integer(o->deadline_ms)))
        goto fail;
    if (it->prediction &&
        json_object_set_new(body, "prediction",
                            json_pack("{s:s, s:s}", "type", "content", "content", it->prediction)))
        goto fail;
    if (it->session >= 0) {
        char user[32];
        snprintf(user, sizeof user, "session-%d", (int)it->session);
        if (json_object_set_new(body, "user", json_string(user)))
            goto fail;
    }
    char *s = json_dumps(body, JSON_COMPACT);
    if (!s)
        goto fail;
    *out = s;
    err = SP_OK;
fail:
    free(prompt);
    json_decref(body);
    return err;
}
