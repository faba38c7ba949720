/* OpenAI's Batch API: POST /v1/batches, GET /v1/batches/{id}, GET /v1/batches,
 * POST /v1/batches/{id}/cancel. Batches are records in the store; batch_run.c runs them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/api_int.h"

enum {
    LIST_DEFAULT = 20, // batches in a list page by default (OpenAI's)
    LIST_MAX = 100,
    MAX_METADATA = 16, // metadata pairs (OpenAI's limits)
    MAX_METADATA_KEY = 64,
    MAX_METADATA_VALUE = 512,
};

static json_t *time_or_null(int64_t t) {
    return t ? json_integer((json_int_t)t) : json_null();
}

static json_t *id_or_null(const char *id) {
    return id[0] ? json_string(id) : json_null();
}

static json_t *batch_json(const sp_store_batch *b) {
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "id", b->id, "object", "batch", "endpoint",
                  b->endpoint, "input_file_id", b->input_file_id, "completion_window",
                  b->completion_window, "status", sp_batch_status_name(b->status));
    json_t *errors = b->errors ? json_loads(b->errors, 0, NULL) : NULL;
    json_object_set_new(o, "errors",
                        errors ? json_pack("{s:s, s:o}", "object", "list", "data", errors)
                               : json_null());
    json_object_set_new(o, "output_file_id", id_or_null(b->output_file_id));
    json_object_set_new(o, "error_file_id", id_or_null(b->error_file_id));
    const struct {
        const char *name;
        int64_t t;
    } times[] = {{"created_at", b->created_at},     {"in_progress_at", b->in_progress_at},
                 {"expires_at", b->expires_at},     {"finalizing_at", b->finalizing_at},
                 {"completed_at", b->completed_at}, {"failed_at", b->failed_at},
                 {"expired_at", b->expired_at},     {"cancelling_at", b->cancelling_at},
                 {"cancelled_at", b->cancelled_at}};
    for (size_t i = 0; i < sizeof times / sizeof *times; i++)
        json_object_set_new(o, times[i].name, time_or_null(times[i].t));
    json_object_set_new(o, "request_counts",
                        json_pack("{s:I, s:I, s:I}", "total", (json_int_t)b->total, "completed",
                                  (json_int_t)b->completed, "failed", (json_int_t)b->failed));
    json_t *meta = b->metadata ? json_loads(b->metadata, 0, NULL) : NULL;
    json_object_set_new(o, "metadata", meta ? meta : json_null());
    return o;
}

/* The body's metadata: null or an object of at most 16 string pairs (OpenAI's limits). */
static const char *check_metadata(json_t *m) {
    if (!m || json_is_null(m))
        return NULL;
    if (!json_is_object(m) || json_object_size(m) > MAX_METADATA)
        return "metadata must be an object of at most 16 key-value pairs";
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (!json_is_string(v) || strlen(k) > MAX_METADATA_KEY ||
            json_string_length(v) > MAX_METADATA_VALUE)
            return "metadata values must be strings (keys up to 64 characters, values up to 512)";
    }
    return NULL;
}

static void create(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    const char *path = "/v1/batches";
    json_t *body = sp__api_read_body(a, c, req, path);
    if (!body)
        return;
    const char *input = json_string_value(json_object_get(body, "input_file_id"));
    const char *endpoint = json_string_value(json_object_get(body, "endpoint"));
    const char *window = json_string_value(json_object_get(body, "completion_window"));
    json_t *meta = json_object_get(body, "metadata");
    const char *bad_meta = check_metadata(meta);
    sp_store_file f;
    if (!input) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "input_file_id", NULL, NULL, path,
                           "input_file_id is required");
    } else if (!endpoint || !sp__api_batch_endpoint(endpoint)) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "endpoint", NULL, NULL, path,
                           "endpoint must be \"/v1/chat/completions\" or \"/v1/completions\"");
    } else if (!window || strcmp(window, "24h")) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "completion_window", NULL, NULL,
                           path, "completion_window must be \"24h\"");
    } else if (bad_meta) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "metadata", NULL, NULL, path, "%s",
                           bad_meta);
    } else if (sp_store_file_get(a->store, input, &f)) {
        sp__api_send_error(a, c, 404, "invalid_request_error", "input_file_id", "not_found", NULL,
                           path, "no such file: %s", input);
    } else if (strcmp(f.purpose, "batch")) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "input_file_id", NULL, NULL, path,
                           "file %s has purpose '%s', not 'batch'", input, f.purpose);
    } else {
        sp_store_batch in = {.expires_at = (int64_t)time(NULL) + 24 * 3600}, b;
        snprintf(in.input_file_id, sizeof in.input_file_id, "%s", input);
        snprintf(in.endpoint, sizeof in.endpoint, "%s", endpoint);
        snprintf(in.completion_window, sizeof in.completion_window, "%s", window);
        in.metadata = meta && json_is_object(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
        sp_diag d;
        sp_diag_clear(&d);
        sp_err err = sp_store_batch_create(a->store, &in, &b, &d);
        free(in.metadata);
        if (err) {
            sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, path,
                               "cannot record the batch: %s", d.msg[0] ? d.msg : sp_err_str(err));
        } else {
            sp__api_send_json(a, c, batch_json(&b), path);
            sp_store_batch_deinit(&b);
            sp__batch_advance(a->runner); // validated and started at once
        }
    }
    json_decref(body);
}

static void list(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    const char *path = "/v1/batches";
    char after[SP_STORE_ID_LEN];
    const bool has_after = sp__api_query_param(req, "after", after, sizeof after);
    int32_t limit;
    if (!sp__api_list_limit(a, c, req, path, LIST_DEFAULT, LIST_MAX, &limit))
        return;
    sp_store_batch bs[LIST_MAX];
    int32_t n = 0;
    bool more = false;
    sp_err err = sp_store_batch_list(a->store, has_after ? after : NULL, limit, bs, &n, &more);
    if (err == SP_ERR_NOT_FOUND) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "after", NULL, NULL, path,
                           "after: no such batch");
        return;
    }
    if (err) {
        sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, path, "%s",
                           sp_err_str(err));
        return;
    }
    json_t *data = json_array();
    for (int32_t i = 0; i < n; i++)
        json_array_append_new(data, batch_json(&bs[i]));
    json_t *root = json_pack("{s:s, s:o, s:b}", "object", "list", "data", data, "has_more", more);
    json_object_set_new(root, "first_id", n ? json_string(bs[0].id) : json_null());
    json_object_set_new(root, "last_id", n ? json_string(bs[n - 1].id) : json_null());
    for (int32_t i = 0; i < n; i++)
        sp_store_batch_deinit(&bs[i]);
    sp__api_send_json(a, c, root, path);
}

static void get_or_cancel(sp_api *a, sp_http_conn *c, const char *id, bool cancel) {
    const char *path = "/v1/batches";
    sp_store_batch b;
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = sp_store_batch_get(a->store, id, &b);
    if (!err && cancel) {
        const bool final = sp_batch_status_final(b.status);
        sp_store_batch_deinit(&b);
        if (final) {
            sp__api_send_error(a, c, 409, "invalid_request_error", NULL, NULL, NULL, path,
                               "batch %s has ended: it cannot be cancelled", id);
            return;
        }
        if (!(err = sp__batch_cancel(a->runner, id, &d)))
            err = sp_store_batch_get(a->store, id, &b);
    }
    if (err == SP_ERR_NOT_FOUND) {
        sp__api_send_error(a, c, 404, "invalid_request_error", "batch_id", "not_found", NULL, path,
                           "no such batch: %s", id);
    } else if (err) {
        sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, path, "%s",
                           d.msg[0] ? d.msg : sp_err_str(err));
    } else {
        sp__api_send_json(a, c, batch_json(&b), path);
        sp_store_batch_deinit(&b);
    }
}

void sp__api_handle_batches(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    const char *path = "/v1/batches";
    if (!sp__api_store_ready(a, c, path))
        return;
    char id[SP_STORE_ID_LEN], rest[16]; // "/batches/ID/cancel": ID, "/cancel"
    if (!sp__api_resource_path(a, c, req, "/batches", "batch", id, rest))
        return;
    const bool get = sp_str_eq(req->method, "GET") || sp_str_eq(req->method, "HEAD");
    const bool post = sp_str_eq(req->method, "POST");
    if (!id[0] && post)
        create(a, c, req);
    else if (!id[0] && get)
        list(a, c, req);
    else if (id[0] && !rest[0] && get)
        get_or_cancel(a, c, id, false);
    else if (id[0] && !strcmp(rest, "/cancel") && post)
        get_or_cancel(a, c, id, true);
    else if (!rest[0] || !strcmp(rest, "/cancel"))
        sp__api_send_error(a, c, 405, "invalid_request_error", NULL, "method_not_allowed", NULL,
                           path, "%s takes %s", path,
                           !id[0]    ? "GET or POST"
                           : rest[0] ? "POST"
                                     : "GET");
    else
        sp__api_send_error(a, c, 404, "invalid_request_error", NULL, "not_found", NULL, path,
                           "no endpoint there: see the Batch API");
}
