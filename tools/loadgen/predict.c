/* The prediction dataset's predicted outputs (client.h): an unmeasured greedy pass, then each
 * output's tokens corrupted through the server's /tokenize and /detokenize. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "loadgen/client.h"

/* POSTs req (taken: it is freed) to path; on SP_OK *resp is the parsed JSON of a 200 answer
 * (caller frees). SP_ERR_FORMAT (message in d) for any other answer. */
static sp_err post_json(const sp_lg_target *t, const char *path, json_t *req, json_t **resp,
                        sp_diag *d) {
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body)
        return SP_ERR_NOMEM;
    int status = 0;
    char *text = NULL;
    size_t len = 0;
    sp_err err = sp_lg_fetch(t, "POST", path, body, 30000, &status, &text, &len, d);
    free(body);
    if (err)
        return err;
    *resp = status == 200 ? json_loadb(text, len, 0, NULL) : NULL;
    if (!*resp)
        err =
            sp_diag_set(d, SP_ERR_FORMAT, UINT64_MAX, "%s answered %d: %.200s", path, status, text);
    free(text);
    return err;
}

/* The token ids /tokenize gives for text (no special tokens), as a heap array in *ids. */
static sp_err tokenize(const sp_lg_target *t, const char *text, int32_t **ids, int32_t *n,
                       sp_diag *d) {
    json_t *j = NULL;
    sp_err err = post_json(t, "/tokenize",
                           json_pack("{s:s, s:b}", "content", text, "add_special", 0), &j, d);
    if (err)
        return err;
    json_t *toks = json_object_get(j, "tokens");
    const size_t m = json_array_size(toks);
    if (!json_is_array(toks))
        err = sp_diag_set(d, SP_ERR_FORMAT, UINT64_MAX, "/tokenize answered no tokens");
    else if (!(*ids = malloc((m ? m : 1) * sizeof **ids)))
        err = SP_ERR_NOMEM;
    for (size_t i = 0; !err && i < m; i++)
        (*ids)[i] = (int32_t)json_integer_value(json_array_get(toks, i));
    *n = (int32_t)m;
    json_decref(j);
    return err;
}

/* The text /detokenize gives for ids[n], as a heap string in *text. */
static sp_err detokenize(const sp_lg_target *t, const int32_t *ids, int32_t n, char **text,
                         sp_diag *d) {
    json_t *arr = json_array();
    for (int32_t i = 0; arr && i < n; i++)
        if (json_array_append_new(arr, json_integer(ids[i]))) {
            json_decref(arr);
            arr = NULL;
        }
    json_t *j = NULL;
    sp_err err = post_json(t, "/detokenize", arr ? json_pack("{s:o}", "tokens", arr) : NULL, &j, d);
    if (err)
        return err;
    json_t *content = json_object_get(j, "content");
    if (!json_is_string(content))
        err = sp_diag_set(d, SP_ERR_FORMAT, UINT64_MAX, "/detokenize answered no content");
    else if (!(*text = strdup(json_string_value(content))))
        err = SP_ERR_NOMEM;
    json_decref(j);
    return err;
}

sp_err sp_lg_make_predictions(const sp_lg_run_opts *o, sp_lg_dataset *ds, double accuracy,
                              uint64_t seed, double *kept_frac, sp_diag *d) {
    sp_lg_run_opts ro = *o;
    ro.keep_text = true;
    ro.body.temperature = 0;
    sp_lg_result *res = calloc(ds->n ? ds->n : 1, sizeof *res);
    if (!res)
        return SP_ERR_NOMEM;
    double dur = 0;
    sp_err err = sp_lg_run(&ro, ds, res, &dur, d);
    sp_lg_rng rng;
    sp_lg_rng_seed(&rng, seed ^ 0x505245444943ull);
    int64_t kept = 0, total = 0;
    for (size_t i = 0; i < ds->n && !err; i++) {
        if (!res[i].success || !res[i].text || !res[i].text[0])
            continue;
        int32_t *ids = NULL, *alt = NULL, n = 0, n_alt = 0;
        err = tokenize(o->target, res[i].text, &ids, &n, d);
        if (!err)
            err = tokenize(o->target, ds->items[i].prompt, &alt, &n_alt, d);
        int32_t *out = err ? NULL : malloc((size_t)(n ? n : 1) * sizeof *out);
        if (!err && !out)
            err = SP_ERR_NOMEM;
        if (!err) {
            kept += sp_lg_corrupt_tokens(ids, n, accuracy, alt, n_alt, &rng, out);
            total += n;
            err = detokenize(o->target, out, n, &ds->items[i].prediction, d);
        }
        free(ids);
        free(alt);
        free(out);
    }
    for (size_t i = 0; i < ds->n; i++)
        sp_lg_result_free(&res[i]);
    free(res);
    if (!err)
        *kept_frac = total ? (double)kept / (double)total : 0.0;
    return err;
}
