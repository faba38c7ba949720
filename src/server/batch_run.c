/* Batch jobs run: a batch's lines, validated, become internal requests of the server (their
 * responses exactly what a client would have received), at a priority below every online
 * request, a bounded number in flight; each line's result is recorded once in the store as it
 * arrives, and the output and error files are written when the last one is in.
 *
 * Order (BatchLLM): a batch knows all its prompts up front, so instead of hoping a cache keeps
 * their shared prefixes, its pending lines are sorted by their prompt tokens (a depth-first walk
 * of the prefix tree of the whole batch), cut into groups that share a prefix, and the groups
 * run one after another, decode-heavy groups first: a group's lines are in flight together, so
 * the engine computes their prefix once (it holds back a request whose prefix another is
 * computing) and the group is done before the cache must make room for the next.
 *
 * A process killed at any point loses nothing: on the next start, batches still validating
 * are validated again, batches in progress run their pending lines (the lines whose results
 * were recorded never run again), batches finalizing or cancelling are finalized.
 *
 * Validation parses every line, planning reads every pending line's prompt (its template
 * rendered and tokenized: about a millisecond a line), and so does starting a line; all run in
 * slices of SLICE_US between the loop's other events: a batch of 50,000 lines never holds the
 * server up for more than a slice, nor do the 64 lines that start when a wave of them
 * finishes. Loop thread only. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "server/api_int.h"

enum {
    PRIORITY = SP_PRIORITY_OFFLINE, // behind every online request, yielding to them
    KEY_TOKENS = 1024,              // prompt tokens compared to group lines (enough to tell groups)
    GROUP_MIN_SHARED = 16,          // lines sharing fewer tokens start a new group
    MAX_ERRORS = 100,               // validation errors recorded per batch
    RETRY_US = 500 * 1000,          // a line refused for overload is retried after this
    SLICE_US = 10 * 1000,           // planning's and starting's share of the loop at a time
};

typedef struct keyed keyed;

typedef struct job job;

/* A line in flight. */
typedef struct line_run {
    job *j;
    int64_t line_no;
    sp_http_conn *conn;
    struct line_run *prev, *next; // j->running
} line_run;

struct job {
    char id[SP_STORE_ID_LEN];
    char endpoint[32];
    char *input; // (input_len) the input file's content
    size_t input_len;
    size_t *line_off; // (n_lines) where each line starts in input; its length in line_len
    size_t *line_len;
    int64_t n_lines;
    int64_t *order; // (n_order) pending lines, in the order they run; next: the next to run
    int64_t n_order, next;
    int32_t n_groups; // of shared prefixes among them
    // Validation, a slice at a time (validate_some), of a new batch before it runs: lines
    // checked up to n_checked, their custom ids (for the store), the ids seen, the errors.
    bool validating, recorded_before; // (lines recorded before a crash: nothing to check)
    int64_t n_checked;
    char **ids; // (n_lines)
    json_t *seen, *errors;
    // Planning, a slice at a time (plan_some): the pending lines, keyed up to n_keyed.
    bool planning;
    int64_t *pending; // (n_pending)
    int64_t n_pending, n_keyed;
    keyed *keys;        // (n_pending)
    int64_t plan_t0_us; // when planning started
    line_run *running;
    int32_t n_running;
    bool cancelling;     // cancelled (or expired): no new lines; finalize once none run
    sp_batch_status end; // the status it ends in
    int64_t expires_at;
    int64_t paused_until_us; // the store failed, or the server refused a line: wait
    job *next_job;
};

struct sp__batch_runner {
    sp_api *a;
    job *jobs;   // oldest first
    int wake_fd; // an eventfd the loop watches: written while a plan has slices left
    int32_t n_running;
    bool stopping;
    bool advancing; // (advance does not recurse)
};

/* ---- lines of an input file ----------------------------------------------------------------- */

/* Finds the lines of j->input: the non-blank ones, numbered from 0. */
static sp_err split_lines(job *j) {
    int64_t cap = 0;
    for (size_t i = 0; i < j->input_len; i++)
        cap += j->input[i] == '\n';
    cap++;
    j->line_off = malloc((size_t)cap * sizeof *j->line_off);
    j->line_len = malloc((size_t)cap * sizeof *j->line_len);
    if (!j->line_off || !j->line_len)
        return SP_ERR_NOMEM;
    j->n_lines = 0;
    for (size_t i = 0; i < j->input_len;) {
        const char *nl = memchr(j->input + i, '\n', j->input_len - i);
        size_t end = nl ? (size_t)(nl - j->input) : j->input_len, len = end - i;
        bool blank = true;
        for (size_t k = i; k < end && blank; k++)
            blank = j->input[k] == ' ' || j->input[k] == '\t' || j->input[k] == '\r';
        if (!blank) {
            j->line_off[j->n_lines] = i;
            j->line_len[j->n_lines++] = len;
        }
        i = end + 1;
    }
    return SP_OK;
}

static json_t *line_json(const job *j, int64_t i) {
    return json_loadb(j->input + j->line_off[i], j->line_len[i], 0, NULL);
}

static void free_keys(job *j);

static void free_validation(job *j) {
    for (int64_t i = 0; j->ids && i < j->n_lines; i++)
        free(j->ids[i]);
    free(j->ids);
    j->ids = NULL;
    json_decref(j->seen);
    json_decref(j->errors);
    j->seen = j->errors = NULL;
}

static void job_free(job *j) {
    if (!j)
        return;
    free_validation(j);
    free_keys(j);
    free(j->input);
    free(j->line_off);
    free(j->line_len);
    free(j->order);
    free(j);
}

/* ---- validation ------------------------------------------------------------------------------ */

static void add_error(json_t *errors, const char *code, const char *msg, const char *param,
                      int64_t line) {
    if (json_array_size(errors) >= MAX_ERRORS)
        return;
    json_t *e = json_pack("{s:s, s:s}", "code", code, "message", msg);
    json_object_set_new(e, "param", param ? json_string(param) : json_null());
    json_object_set_new(e, "line", line > 0 ? json_integer(line) : json_null());
    json_array_append_new(errors, e);
}

/* Checks line i of a new batch: its errors into j->errors, its custom id into j->ids[i]. */
static void check_line(job *j, int64_t i) {
    char msg[200];
    json_t *l = line_json(j, i);
    json_t *cid = json_object_get(l, "custom_id"), *url = json_object_get(l, "url");
    if (!json_is_object(l)) {
        add_error(j->errors, "invalid_json_line", "this line is not a JSON object", NULL, i + 1);
    } else if (!json_is_string(cid) || !json_string_length(cid)) {
        add_error(j->errors, "missing_required_parameter", "the line has no custom_id", "custom_id",
                  i + 1);
    } else if (json_object_get(j->seen, json_string_value(cid))) {
        snprintf(msg, sizeof msg, "custom_id '%.100s' is used by an earlier line",
                 json_string_value(cid));
        add_error(j->errors, "duplicate_custom_id", msg, "custom_id", i + 1);
    } else if (!json_is_string(url) || strcmp(json_string_value(url), j->endpoint)) {
        snprintf(msg, sizeof msg, "the line's url is not the batch's endpoint, %s", j->endpoint);
        add_error(j->errors, "mismatched_endpoint", msg, "url", i + 1);
    } else if (!json_is_object(json_object_get(l, "body"))) {
        add_error(j->errors, "missing_required_parameter", "the line has no body object", "body",
                  i + 1);
    }
    if (json_is_string(cid)) {
        json_object_set(j->seen, json_string_value(cid), json_true());
        j->ids[i] = strdup(json_string_value(cid)); // (NULL when out of memory: checked at the end)
    }
    json_decref(l);
}

/* ---- order: groups of shared prefixes ---------------------------------------------------------
 */

struct keyed {
    int64_t line;
    int32_t *tok; // (n) the prompt's first tokens
    int32_t n;
    int32_t decode; // the line's max_tokens (an estimate of its output)
    int32_t group;
};

static void free_keys(job *j) {
    for (int64_t i = 0; j->keys && i < j->n_keyed; i++)
        free(j->keys[i].tok);
    free(j->keys);
    free(j->pending);
    j->keys = NULL;
    j->pending = NULL;
    j->n_keyed = 0;
}

static int cmp_keys(const void *pa, const void *pb) {
    const keyed *a = pa, *b = pb;
    const int32_t n = SP_MIN(a->n, b->n);
    for (int32_t i = 0; i < n; i++)
        if (a->tok[i] != b->tok[i])
            return a->tok[i] < b->tok[i] ? -1 : 1;
    return a->n != b->n ? (a->n < b->n ? -1 : 1) : (a->line > b->line) - (a->line < b->line);
}

static int32_t shared(const keyed *a, const keyed *b) {
    int32_t i = 0;
    while (i < a->n && i < b->n && a->tok[i] == b->tok[i])
        i++;
    return i;
}

typedef struct group_rank {
    int32_t group;
    double ratio; // decode tokens / prefill tokens
} group_rank;

static int cmp_ranks(const void *pa, const void *pb) {
    const group_rank *a = pa, *b = pb;
    if (a->ratio != b->ratio)
        return a->ratio > b->ratio ? -1 : 1;
    return (a->group > b->group) - (a->group < b->group);
}

/* A line's prompt tokens (up to KEY_TOKENS) and output budget; an invalid body (its line will
 * get its 400) keys as empty. */
static void key_line(sp_api *a, const job *j, int64_t line, keyed *k) {
    k->line = line;
    k->n = 0;
    k->decode = 256;
    json_t *l = line_json(j, line), *body = json_object_get(l, "body");
    sp_oai_req q;
    sp_diag d;
    sp_tokens toks;
    sp_tokens_init(&toks);
    const sp_oai_kind kind =
        !strcmp(j->endpoint, "/v1/chat/completions") ? SP_OAI_CHAT : SP_OAI_COMPLETION;
    if (json_is_object(body) && !sp_oai_parse(body, kind, &q, &d) &&
        !sp__api_prompt_tokens(a, kind, &q, body, 0, &toks, &d)) {
        k->n = (int32_t)SP_MIN(toks.n, (size_t)KEY_TOKENS);
        if ((k->tok = malloc(((size_t)k->n + 1) * sizeof *k->tok)))
            memcpy(k->tok, toks.ids, (size_t)k->n * sizeof *k->tok);
        else
            k->n = 0;
        if (q.has_max_tokens)
            k->decode = q.params.max_tokens;
    }
    sp_tokens_deinit(&toks);
    json_decref(l);
}

/* Starts planning the n pending lines (taking them, on success). */
static sp_err plan_start(job *j, int64_t *pending, int64_t n) {
    j->keys = calloc((size_t)n + 1, sizeof *j->keys);
    j->order = malloc(((size_t)n + 1) * sizeof *j->order);
    if (!j->keys || !j->order)
        return SP_ERR_NOMEM;
    j->pending = pending;
    j->n_pending = n;
    j->n_keyed = 0;
    j->planning = true;
    j->plan_t0_us = sp_time_us();
    return SP_OK;
}

/* j->order from the keys: the pending lines, sorted by prompt, grouped, groups decode-heavy
 * first. */
static sp_err plan_finish(job *j) {
    keyed *k = j->keys;
    const int64_t n = j->n_pending;
    group_rank *ranks = calloc((size_t)n + 1, sizeof *ranks);
    if (!ranks)
        return SP_ERR_NOMEM;
    qsort(k, (size_t)n, sizeof *k, cmp_keys);
    int32_t n_groups = 0;
    double prefill = 0, decode = 0;
    for (int64_t i = 0; i < n; i++) {
        const int32_t s = i ? shared(&k[i - 1], &k[i]) : 0;
        if (i == 0 || s < GROUP_MIN_SHARED) {
            if (i)
                ranks[n_groups - 1].ratio = decode / (prefill > 0 ? prefill : 1);
            ranks[n_groups].group = n_groups;
            n_groups++;
            prefill = decode = 0;
        }
        k[i].group = n_groups - 1;
        prefill += k[i].n - (k[i].group == (i ? k[i - 1].group : -1) ? s : 0);
        decode += k[i].decode;
    }
    if (n_groups)
        ranks[n_groups - 1].ratio = decode / (prefill > 0 ? prefill : 1);
    qsort(ranks, (size_t)n_groups, sizeof *ranks, cmp_ranks);
    // Lines of each group in sorted order, the groups by rank: k is sorted by group already,
    // so each group is a run; find the runs' starts.
    int64_t *start = calloc((size_t)n_groups + 1, sizeof *start);
    if (!start) {
        free(ranks);
        return SP_ERR_NOMEM;
    }
    for (int64_t i = n - 1; i >= 0; i--)
        start[k[i].group] = i;
    start[n_groups] = n;
    j->n_order = 0;
    j->n_groups = n_groups;
    for (int32_t g = 0; g < n_groups; g++) {
        const int32_t grp = ranks[g].group;
        for (int64_t i = start[grp]; i < n && k[i].group == grp; i++)
            j->order[j->n_order++] = k[i].line;
    }
    free(start);
    free(ranks);
    free_keys(j);
    j->next = 0;
    j->planning = false;
    SP_INFO("batch %s: %lld lines to run, in %d groups of shared prefixes (planned in %.0f ms)",
            j->id, (long long)n, j->n_groups, (double)(sp_time_us() - j->plan_t0_us) / 1e3);
    return SP_OK;
}

/* Keys j's lines until the deadline, and finishes the plan once all are. */
static sp_err plan_some(sp_api *a, job *j, int64_t deadline_us) {
    while (j->n_keyed < j->n_pending) {
        key_line(a, j, j->pending[j->n_keyed], &j->keys[j->n_keyed]);
        j->n_keyed++;
        if (sp_time_us() >= deadline_us)
            break;
    }
    return j->n_keyed < j->n_pending ? SP_OK : plan_finish(j);
}

/* ---- life of a batch ----------------------------------------------------------------------- */

static sp_store *store(const sp__batch_runner *r) {
    return r->a->store;
}

static void fail_batch(sp__batch_runner *r, const char *id, json_t *errors) {
    char *text = json_dumps(errors, JSON_COMPACT);
    sp_diag d;
    sp_diag_clear(&d);
    if (sp_store_batch_set_status(store(r), id, SP_BATCH_FAILED, text, &d))
        SP_ERROR("batch %s: cannot record its failure: %s", id, d.msg);
    free(text);
}

/* A job for batch b (in progress, finalizing or cancelling): its input read and split, its
 * pending lines planned. NULL (the batch failed, or the store is failing: logged) otherwise. */
static job *load_job(sp__batch_runner *r, const sp_store_batch *b) {
    job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    snprintf(j->id, sizeof j->id, "%s", b->id);
    snprintf(j->endpoint, sizeof j->endpoint, "%s", b->endpoint);
    j->expires_at = b->expires_at;
    j->end = SP_BATCH_COMPLETED;
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = sp_store_file_read(store(r), b->input_file_id, &j->input, &j->input_len, &d);
    if (err) {
        json_t *errors = json_array();
        add_error(errors, "input_file_unavailable",
                  err == SP_ERR_NOT_FOUND ? "the input file was deleted" : d.msg, "input_file_id",
                  0);
        fail_batch(r, b->id, errors);
        json_decref(errors);
        job_free(j);
        return NULL;
    }
    int64_t *pending = NULL, n = 0;
    if ((err = split_lines(j)) || (err = sp_store_batch_pending(store(r), b->id, &pending, &n)) ||
        (err = plan_start(j, pending, n))) {
        SP_ERROR("batch %s: cannot load it: %s", b->id, sp_err_str(err));
        free(pending);
        job_free(j);
        return NULL;
    }
    return j;
}

static void add_job(sp__batch_runner *r, job *j) {
    job **p = &r->jobs;
    while (*p)
        p = &(*p)->next_job;
    *p = j;
}

/* Unlinks job j from the runner and frees it. */
static void remove_job(sp__batch_runner *r, job *j) {
    for (job **p = &r->jobs; *p; p = &(*p)->next_job)
        if (*p == j) {
            *p = j->next_job;
            break;
        }
    job_free(j);
}

static job *find_job(const sp__batch_runner *r, const char *id) {
    for (job *j = r->jobs; j; j = j->next_job)
        if (!strcmp(j->id, id))
            return j;
    return NULL;
}

/* A job that validates new batch b a slice at a time (validate_some); none when its input is
 * gone (the batch failed). */
static void validation_start(sp__batch_runner *r, const sp_store_batch *b) {
    job *j = calloc(1, sizeof *j);
    if (!j)
        return; // (tried again at the next advance)
    snprintf(j->id, sizeof j->id, "%s", b->id);
    snprintf(j->endpoint, sizeof j->endpoint, "%s", b->endpoint);
    j->expires_at = b->expires_at;
    j->end = SP_BATCH_COMPLETED;
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = sp_store_file_read(store(r), b->input_file_id, &j->input, &j->input_len, &d);
    if (err == SP_ERR_NOT_FOUND || err == SP_ERR_IO) {
        json_t *errors = json_array();
        add_error(errors, "input_file_unavailable",
                  err == SP_ERR_NOT_FOUND ? "the input file was deleted" : d.msg, "input_file_id",
                  0);
        fail_batch(r, b->id, errors);
        json_decref(errors);
        job_free(j);
        return;
    }
    j->recorded_before = b->total > 0;
    if (err || (err = split_lines(j)) ||
        (!j->recorded_before && (!(j->ids = calloc((size_t)j->n_lines + 1, sizeof *j->ids)) ||
                                 !(j->seen = json_object()) || !(j->errors = json_array())))) {
        SP_ERROR("batch %s: cannot validate it: %s", b->id,
                 d.msg[0] ? d.msg : sp_err_str(err ? err : SP_ERR_NOMEM));
        job_free(j);
        return;
    }
    if (!j->recorded_before && j->n_lines == 0)
        add_error(j->errors, "empty_file", "the input file has no lines", NULL, 0);
    j->validating = true;
    add_job(r, j);
}

/* Checks j's lines until the deadline; once all are, fails the batch (errors) or records its
 * lines and starts it: in progress, its plan started. j may be freed. */
static void validate_some(sp__batch_runner *r, job *j, int64_t deadline_us) {
    while (!j->recorded_before && j->n_checked < j->n_lines) {
        check_line(j, j->n_checked++);
        if (sp_time_us() >= deadline_us && j->n_checked < j->n_lines)
            return;
    }
    j->validating = false;
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = SP_OK;
    if (j->errors && json_array_size(j->errors)) {
        fail_batch(r, j->id, j->errors);
        remove_job(r, j);
        return;
    }
    for (int64_t i = 0; !j->recorded_before && i < j->n_lines && !err; i++)
        err = j->ids[i] ? SP_OK : SP_ERR_NOMEM;
    int64_t *pending = NULL, n = 0;
    if (err ||
        (!j->recorded_before && (err = sp_store_batch_add_lines(store(r), j->id, j->n_lines,
                                                                (const char **)j->ids, &d))) ||
        (err = sp_store_batch_set_status(store(r), j->id, SP_BATCH_IN_PROGRESS, NULL, &d)) ||
        (err = sp_store_batch_pending(store(r), j->id, &pending, &n)) ||
        (err = plan_start(j, pending, n))) {
        // Still validating in the store (or in progress, resumed at the next start): again.
        SP_ERROR("batch %s: cannot start it: %s", j->id, d.msg[0] ? d.msg : sp_err_str(err));
        free(pending);
        remove_job(r, j);
        return;
    }
    free_validation(j);
}

typedef struct writer_ctx {
    sp_store_writer *w;
    sp_diag *d;
    sp_err err;
} writer_ctx;

static int write_line(void *ctx, int64_t line_no, const char *result, size_t len) {
    (void)line_no;
    writer_ctx *x = ctx;
    if (!(x->err = sp_store_writer_write(x->w, result, len, x->d)))
        x->err = sp_store_writer_write(x->w, "\n", 1, x->d);
    return x->err != SP_OK;
}

/* One results file of batch id (ok: responses; else errors) committed as file *out ("" when
 * there are no such lines). */
static sp_err write_results(sp_store *s, const char *id, bool ok, int64_t count, char *out,
                            sp_diag *d) {
    out[0] = '\0';
    if (count == 0)
        return SP_OK;
    char name[96];
    snprintf(name, sizeof name, "%s_%s.jsonl", id, ok ? "output" : "error");
    writer_ctx x = {.d = d};
    sp_err err = sp_store_writer_open(s, name, "batch_output", &x.w, d);
    if (err)
        return err;
    err = sp_store_batch_results(s, id, ok, write_line, &x);
    if (err == SP_ERR_CANCELLED)
        err = x.err;
    if (err) {
        sp_store_writer_abort(x.w);
        return err;
    }
    sp_store_file f;
    if ((err = sp_store_writer_commit(x.w, &f, d)))
        return err;
    snprintf(out, SP_STORE_ID_LEN, "%s", f.id);
    return SP_OK;
}

/* Writes the output and error files and moves the batch to its end status, in one
 * transaction (a crash in between finalizes again at the next start). */
static sp_err finalize(sp__batch_runner *r, const char *id, sp_batch_status end) {
    sp_store *s = store(r);
    sp_diag d;
    sp_diag_clear(&d);
    sp_store_batch b;
    sp_err err = sp_store_batch_get(s, id, &b);
    if (err)
        return err;
    if (b.status != SP_BATCH_FINALIZING && b.status != SP_BATCH_CANCELLING)
        err = sp_store_batch_set_status(s, id, SP_BATCH_FINALIZING, NULL, &d);
    char out[SP_STORE_ID_LEN], errf[SP_STORE_ID_LEN];
    if (!err)
        err = sp_store_begin(s, &d);
    if (!err) {
        if ((err = write_results(s, id, true, b.completed, out, &d)) ||
            (err = write_results(s, id, false, b.failed, errf, &d)) ||
            (err = sp_store_batch_set_files(s, id, out, errf, &d)) ||
            (err = sp_store_batch_set_status(s, id, end, NULL, &d)) ||
            (err = sp_store_commit(s, &d)))
            sp_store_rollback(s);
    }
    if (err)
        SP_ERROR("batch %s: cannot finalize it: %s", id, d.msg[0] ? d.msg : sp_err_str(err));
    else
        SP_INFO("batch %s %s: %lld completed, %lld failed of %lld", id, sp_batch_status_name(end),
                (long long)b.completed, (long long)b.failed, (long long)b.total);
    sp_store_batch_deinit(&b);
    return err;
}

/* ---- running lines ------------------------------------------------------------------------- */

static void advance(sp__batch_runner *r);

static void random_hex(char *out, size_t n_bytes) {
    uint8_t b[16];
    n_bytes = SP_MIN(n_bytes, sizeof b);
    if (getrandom(b, n_bytes, 0) != (ssize_t)n_bytes)
        memset(b, 0, sizeof b);
    for (size_t i = 0; i < n_bytes; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* The output or error file's line for a line's answer. */
static char *result_line(const job *j, int64_t line, int status, const char *body, size_t len) {
    json_t *l = line_json(j, line);
    json_t *resp = json_loadb(body, len, 0, NULL);
    char id[48] = "batch_req_", req_id[40];
    random_hex(id + 10, 12);
    const char *rid = json_string_value(json_object_get(resp, "id"));
    if (rid)
        snprintf(req_id, sizeof req_id, "%s", rid);
    else
        random_hex(req_id, 12);
    json_t *out = json_pack("{s:s, s:O, s:{s:i, s:s, s:O}, s:n}", "id", id, "custom_id",
                            json_object_get(l, "custom_id"), "response", "status_code", status,
                            "request_id", req_id, "body", resp ? resp : json_null(), "error");
    char *text = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    json_decref(resp);
    json_decref(l);
    return text;
}

static void unlink_run(line_run *lr) {
    job *j = lr->j;
    if (lr->prev)
        lr->prev->next = lr->next;
    else
        j->running = lr->next;
    if (lr->next)
        lr->next->prev = lr->prev;
    j->n_running--;
}

typedef struct run_ctx {
    sp__batch_runner *r;
    line_run lr;
} run_ctx;

/* A line's internal request has its answer (status 0: dropped, it stays pending). */
static void on_line_done(void *ctx, int status, const char *body, size_t len) {
    run_ctx *x = ctx;
    sp__batch_runner *r = x->r;
    job *j = x->lr.j;
    unlink_run(&x->lr);
    r->n_running--;
    const int64_t line = x->lr.line_no;
    free(x);
    if (status == 0) {
        // Cancelled (the batch, or the server stopping: the line runs at the next start), or
        // dropped by the API (out of memory): again later.
        if (!j->cancelling && !r->stopping) {
            j->order[--j->next] = line;
            j->paused_until_us = sp_time_us() + RETRY_US;
        }
        return;
    }
    if (status == 503 || status == 429) {
        // Refused for load: again later (the slot it was taken from, or one before it, is
        // free: every slot before next has been taken).
        j->order[--j->next] = line;
        j->paused_until_us = sp_time_us() + RETRY_US;
        advance(r);
        return;
    }
    char *text = result_line(j, line, status, body, len);
    sp_diag d;
    sp_diag_clear(&d);
    bool recorded;
    sp_err err =
        text ? sp_store_line_finish(store(r), j->id, line, status == 200, text, &recorded, &d)
             : SP_ERR_NOMEM;
    free(text);
    if (!err && recorded)
        r->a->metrics.batch_lines[status == 200 ? 0 : 1]++;
    if (err) {
        SP_ERROR("batch %s: cannot record line %lld (retried): %s", j->id, (long long)line + 1,
                 d.msg[0] ? d.msg : sp_err_str(err));
        j->order[--j->next] = line;
        j->paused_until_us = sp_time_us() + 1000000;
    }
    advance(r);
}

/* The body of a line's request: the line's body, as a batch line (never streamed, behind
 * online requests). NULL when out of memory or not an object (the API answers that). */
static char *line_body(const job *j, int64_t line, size_t *len) {
    json_t *l = line_json(j, line), *body = json_object_get(l, "body");
    char *text = NULL;
    if (json_is_object(body)) {
        json_object_set_new(body, "stream", json_false());
        json_object_del(body, "stream_options");
        json_object_set_new(body, "priority", json_integer(PRIORITY));
        text = json_dumps(body, JSON_COMPACT);
    } else {
        text = strdup("null");
    }
    json_decref(l);
    if (text)
        *len = strlen(text);
    return text;
}

static bool start_line(sp__batch_runner *r, job *j, int64_t line) {
    size_t len = 0;
    char *body = line_body(j, line, &len);
    run_ctx *x = calloc(1, sizeof *x);
    if (!body || !x) {
        free(body);
        free(x);
        return false;
    }
    x->r = r;
    x->lr = (line_run){.j = j, .line_no = line, .next = j->running};
    if (j->running)
        j->running->prev = &x->lr;
    j->running = &x->lr;
    j->n_running++;
    r->n_running++;
    sp_err err = sp_http_server_inject(r->a->srv, "POST", j->endpoint, body, len, on_line_done, x,
                                       &x->lr.conn);
    free(body);
    if (err) {
        unlink_run(&x->lr);
        r->n_running--;
        free(x);
        return false;
    }
    return true;
}

static void cancel_running(job *j) {
    // Each cancellation unlinks its line (its answer never comes): walk a snapshot.
    while (j->running) {
        line_run *lr = j->running;
        sp_http_conn *c = lr->conn;
        run_ctx *x = (run_ctx *)((char *)lr - offsetof(run_ctx, lr));
        sp__batch_runner *r = x->r;
        unlink_run(lr);
        r->n_running--;
        free(x);
        sp_http_server_cancel_injected(c);
    }
}

/* Lines in flight at most: the engine's running sequences (an online request that finds them
 * all taken displaces a batch line, whose prefix stays cached). */
static int32_t max_running(const sp__batch_runner *r) {
    return SP_MAX(1, sp_engine_max_seqs(r->a->e));
}

/* Moves every batch along: validates new ones, finalizes finished ones, keeps lines in
 * flight. */
static void advance(sp__batch_runner *r) {
    if (r->advancing || r->stopping)
        return;
    r->advancing = true;
    // New batches: validated, then planned, a slice at a time each; the loop wakes us again
    // for the next (wake_fd).
    char ids[8][SP_STORE_ID_LEN];
    int32_t n = 0;
    if (!sp_store_batch_find(store(r), SP_BATCH_VALIDATING, ids, 8, &n))
        for (int32_t i = 0; i < n; i++) {
            sp_store_batch b;
            if (!find_job(r, ids[i]) && !sp_store_batch_get(store(r), ids[i], &b)) {
                validation_start(r, &b);
                sp_store_batch_deinit(&b);
            }
        }
    bool more = false; // slices left, of validation, planning or lines to start
    for (job *j = r->jobs; j; j = j->next_job)
        if (j->validating) {
            validate_some(r, j, sp_time_us() + SLICE_US); // (j may be gone)
            more = true;                                  // (its planning next)
            break;
        }
    for (job *j = r->jobs; j && !more; j = j->next_job)
        if (j->planning && !j->cancelling) {
            const sp_err err = plan_some(r->a, j, sp_time_us() + SLICE_US);
            if (err) { // out of memory: tried again in a second
                SP_ERROR("batch %s: cannot plan it: %s", j->id, sp_err_str(err));
                j->paused_until_us = sp_time_us() + 1000000;
            }
            more |= j->planning && !err;
            break; // (one slice per wake-up)
        }
    const int64_t now_us = sp_time_us(), now_s = (int64_t)time(NULL);
    for (job **p = &r->jobs; *p;) {
        job *j = *p;
        if (!j->cancelling && j->expires_at && now_s >= j->expires_at) {
            j->cancelling = true;
            j->end = SP_BATCH_EXPIRED;
            cancel_running(j);
        }
        if (j->validating) {
            p = &j->next_job;
            continue;
        }
        const bool done = j->cancelling || (!j->planning && j->next >= j->n_order);
        if (done && j->n_running == 0) {
            if (finalize(r, j->id, j->end) == SP_OK) {
                *p = j->next_job;
                job_free(j);
                continue;
            }
            j->paused_until_us = now_us + 1000000;
        }
        p = &j->next_job;
    }
    const int64_t start_end_us = sp_time_us() + SLICE_US;
    bool started_all = true;
    for (job *j = r->jobs; j && r->n_running < max_running(r) && started_all; j = j->next_job) {
        if (j->cancelling || j->validating || j->planning || now_us < j->paused_until_us)
            continue;
        while (j->next < j->n_order && r->n_running < max_running(r)) {
            if (sp_time_us() >= start_end_us) {
                started_all = false; // the rest at the next wake-up
                break;
            }
            if (!start_line(r, j, j->order[j->next++])) {
                j->next--; // (retried later)
                j->paused_until_us = now_us + 1000000;
                break;
            }
        }
    }
    if ((more || !started_all) && write(r->wake_fd, &(uint64_t){1}, 8) != 8) {
        // (the counter cannot overflow: the loop drains it before each slice)
    }
    // The gauges of /metrics.
    sp_metrics *m = &r->a->metrics;
    m->batches_in_progress = m->batch_lines_pending = 0;
    for (const job *j = r->jobs; j; j = j->next_job) {
        if (j->validating)
            continue;
        m->batches_in_progress++;
        m->batch_lines_pending += j->n_running + (j->cancelling ? 0
                                                  : j->planning ? j->n_pending
                                                                : j->n_order - j->next);
    }
    m->batch_lines_running = r->n_running;
    r->advancing = false;
}

/* ---- the API's side ------------------------------------------------------------------------ */

/* The loop's call for the next planning slice. */
static void on_wake(void *ctx) {
    sp__batch_runner *r = ctx;
    uint64_t n;
    if (read(r->wake_fd, &n, sizeof n) < 0) {
        // EAGAIN: nothing to drain.
    }
    advance(r);
}

sp_err sp__batch_runner_create(sp_api *a, sp__batch_runner **out) {
    sp__batch_runner *r = calloc(1, sizeof *r);
    if (!r)
        return SP_ERR_NOMEM;
    r->a = a;
    r->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->wake_fd < 0 || sp_http_server_watch_fd(a->srv, r->wake_fd, on_wake, r)) {
        if (r->wake_fd >= 0)
            close(r->wake_fd);
        free(r);
        return SP_ERR_IO;
    }
    // Resume what a previous process left: in progress, finalizing, cancelling.
    const sp_batch_status resume[] = {SP_BATCH_IN_PROGRESS, SP_BATCH_FINALIZING,
                                      SP_BATCH_CANCELLING};
    for (size_t k = 0; k < SP_ARRAY_LEN(resume); k++) {
        char ids[64][SP_STORE_ID_LEN];
        int32_t n = 0;
        if (sp_store_batch_find(a->store, resume[k], ids, 64, &n))
            continue;
        for (int32_t i = 0; i < n; i++) {
            sp_store_batch b;
            if (sp_store_batch_get(a->store, ids[i], &b))
                continue;
            job *j = load_job(r, &b);
            if (j) {
                j->cancelling = b.status == SP_BATCH_CANCELLING;
                j->end = j->cancelling ? SP_BATCH_CANCELLED : SP_BATCH_COMPLETED;
                SP_INFO("batch %s: resumed (%s, %lld of %lld lines to run)", b.id,
                        sp_batch_status_name(b.status), (long long)j->n_pending,
                        (long long)b.total);
                add_job(r, j);
            }
            sp_store_batch_deinit(&b);
        }
    }
    *out = r;
    return SP_OK;
}

void sp__batch_runner_destroy(sp__batch_runner *r) {
    if (!r)
        return;
    r->stopping = true;
    while (r->jobs) {
        job *j = r->jobs;
        r->jobs = j->next_job;
        cancel_running(j);
        job_free(j);
    }
    close(r->wake_fd);
    free(r);
}

void sp__batch_advance(sp__batch_runner *r) {
    if (r)
        advance(r);
}

sp_err sp__batch_cancel(sp__batch_runner *r, const char *id, sp_diag *d) {
    for (job *j = r->jobs; j; j = j->next_job)
        if (!strcmp(j->id, id) && j->validating) { // nothing has run: cancelled at once
            const sp_err err = sp_store_batch_set_status(store(r), id, SP_BATCH_CANCELLED, NULL, d);
            if (!err)
                remove_job(r, j);
            return err;
        } else if (!strcmp(j->id, id)) {
            if (!j->cancelling) {
                j->cancelling = true;
                j->end = SP_BATCH_CANCELLED;
                sp_err err = sp_store_batch_set_status(store(r), id, SP_BATCH_CANCELLING, NULL, d);
                if (err)
                    return err;
                cancel_running(j);
            }
            advance(r);
            return SP_OK;
        }
    // Not running here: a batch still validating is cancelled at once.
    sp_store_batch b;
    sp_err err = sp_store_batch_get(store(r), id, &b);
    if (err)
        return err;
    if (b.status == SP_BATCH_VALIDATING)
        err = sp_store_batch_set_status(store(r), id, SP_BATCH_CANCELLED, NULL, d);
    sp_store_batch_deinit(&b);
    return err;
}

void sp__batch_stop(sp__batch_runner *r) {
    if (!r)
        return;
    r->stopping = true;
    for (job *j = r->jobs; j; j = j->next_job)
        cancel_running(j);
}

bool sp__batch_idle(const sp__batch_runner *r) {
    return !r || !r->jobs;
}
