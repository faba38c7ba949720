/* OpenAI's Files API, for batch input: POST /v1/files (multipart/form-data, purpose "batch"),
 * GET /v1/files, GET /v1/files/{id}, GET /v1/files/{id}/content, DELETE /v1/files/{id}. An
 * upload is checked as a batch input file (JSON lines of {custom_id, method, url, body} for
 * an endpoint this server has) before it is kept, so that a bad file is refused at once with
 * the line that is wrong. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "server/api_int.h"
#include "server/multipart.h"

enum {
    MAX_LINES = 50000,  // lines of a batch input file (OpenAI's limit)
    LIST_DEFAULT = 100, // files in a list page by default
    LIST_MAX = 10000,   // at most
};

bool sp__api_query_param(const sp_http_req *req, const char *name, char *out, size_t cap) {
    const size_t n = strlen(name);
    for (const char *p = req->query.ptr, *end = p + req->query.len; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > n && !memcmp(p, name, n) && p[n] == '=') {
            const size_t len = (size_t)(stop - p) - n - 1;
            if (len >= cap)
                return false;
            memcpy(out, p + n + 1, len);
            out[len] = '\0';
            return true;
        }
        p = stop + 1;
    }
    return false;
}

bool sp__api_resource_path(sp_api *a, sp_http_conn *c, const sp_http_req *req, const char *prefix,
                           const char *what, char id[SP_STORE_ID_LEN], char rest[16]) {
    const sp_str p = sp__api_route_path(req->path);
    const size_t skip = strlen(prefix);
    id[0] = rest[0] = '\0';
    if (p.len <= skip)
        return true;
    const char *s = p.ptr + skip + 1, *end = p.ptr + p.len;
    const char *slash = memchr(s, '/', (size_t)(end - s));
    const size_t n = (size_t)((slash ? slash : end) - s);
    if (n == 0 || n >= SP_STORE_ID_LEN || (slash && (size_t)(end - slash) >= 16)) {
        char logged[32];
        snprintf(logged, sizeof logged, "/v1%s", prefix);
        sp__api_send_error(a, c, 404, "invalid_request_error", NULL, "not_found", NULL, logged,
                           "no such %s", what);
        return false;
    }
    memcpy(id, s, n);
    id[n] = '\0';
    if (slash)
        snprintf(rest, 16, "%.*s", (int)(end - slash), slash);
    return true;
}

bool sp__api_list_limit(sp_api *a, sp_http_conn *c, const sp_http_req *req, const char *path,
                        int32_t dflt, int32_t max, int32_t *out) {
    char lim[16];
    *out = dflt;
    if (!sp__api_query_param(req, "limit", lim, sizeof lim))
        return true;
    char *end;
    const long v = strtol(lim, &end, 10);
    if (!*lim || *end || v < 1 || v > max) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "limit", NULL, NULL, path,
                           "limit must be an integer from 1 to %d", max);
        return false;
    }
    *out = (int32_t)v;
    return true;
}

bool sp__api_store_ready(sp_api *a, sp_http_conn *c, const char *path) {
    if (a->store)
        return true;
    sp__api_send_error(a, c, 503, "server_error", NULL, "unavailable", NULL, path,
                       "files and batches are unavailable: %s", a->store_error);
    return false;
}

json_t *sp__api_file_json(const sp_store_file *f) {
    return json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:n}", "id", f->id, "object", "file",
                     "bytes", (json_int_t)f->bytes, "created_at", (json_int_t)f->created_at,
                     "filename", f->filename, "purpose", f->purpose, "status", "processed",
                     "expires_at");
}

bool sp__api_batch_endpoint(const char *url) {
    return !strcmp(url, "/v1/chat/completions") || !strcmp(url, "/v1/completions");
}

/* Whether data[len] is a batch input file; else a sentence saying which line is wrong. */
static bool check_input(const sp_api *a, const char *data, size_t len, char *why, size_t cap) {
    int64_t line = 0, n = 0;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(data + i, '\n', len - i);
        const size_t end = nl ? (size_t)(nl - data) : len;
        line++;
        size_t k = i;
        while (k < end && (data[k] == ' ' || data[k] == '\t' || data[k] == '\r'))
            k++;
        if (k < end) {
            if (++n > MAX_LINES) {
                snprintf(why, cap, "the file has more than %d lines: split it", MAX_LINES);
                return false;
            }
            if (end - i > a->o.max_line_bytes) {
                snprintf(why, cap, "line %lld is longer than %zu bytes", (long long)line,
                         a->o.max_line_bytes);
                return false;
            }
            json_error_t je;
            json_t *l = json_loadb(data + i, end - i, 0, &je);
            json_t *url = json_object_get(l, "url"), *method = json_object_get(l, "method");
            const char *err = !json_is_object(l) ? "is not a JSON object (the file must be JSON "
                                                   "lines)"
                              : !json_is_string(json_object_get(l, "custom_id"))
                                  ? "has no custom_id string"
                              : !json_is_string(method) || strcmp(json_string_value(method), "POST")
                                  ? "has no method \"POST\""
                              : !json_is_string(url) ? "has no url"
                              : !sp__api_batch_endpoint(json_string_value(url))
                                  ? "has a url this server does not run in batches (use "
                                    "/v1/chat/completions or /v1/completions)"
                              : !json_is_object(json_object_get(l, "body")) ? "has no body object"
                                                                            : NULL;
            json_decref(l);
            if (err) {
                snprintf(why, cap, "line %lld %s", (long long)line, err);
                return false;
            }
        }
        i = end + 1;
    }
    if (n == 0) {
        snprintf(why, cap, "the file has no lines");
        return false;
    }
    return true;
}

static void upload(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    const char *path = "/v1/files";
    const sp_str *ct = sp_http_req_header(req, "Content-Type");
    sp_multipart_part parts[8];
    int n = 0;
    sp_diag d;
    sp_diag_clear(&d);
    if (!ct || sp_multipart_parse(*ct, req->body, req->body_len, parts, 8, &n, &d)) {
        sp__api_send_error(a, c, 400, "invalid_request_error", NULL, NULL, NULL, path, "%s",
                           ct ? d.msg : "expected a multipart/form-data body (curl -F)");
        return;
    }
    const sp_multipart_part *file = NULL, *purpose = NULL;
    for (int i = 0; i < n; i++) {
        if (sp_str_eq(parts[i].name, "file"))
            file = &parts[i];
        else if (sp_str_eq(parts[i].name, "purpose"))
            purpose = &parts[i];
    }
    if (!purpose || !sp_str_eq(purpose->data, "batch")) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "purpose", NULL, NULL, path,
                           "purpose must be \"batch\": this server keeps files for batch jobs");
        return;
    }
    if (!file) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "file", NULL, NULL, path,
                           "no file part: send the file as the form field 'file'");
        return;
    }
    char why[200];
    if (!check_input(a, file->data.ptr, file->data.len, why, sizeof why)) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "file", "invalid_file", NULL, path,
                           "not a batch input file: %s", why);
        return;
    }
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)SP_MIN(file->filename.len, 255),
             file->has_filename ? file->filename.ptr : "upload.jsonl");
    if (!file->has_filename)
        snprintf(name, sizeof name, "upload.jsonl");
    sp_store_file f;
    sp_err err = sp_store_file_add(a->store, name, "batch", file->data.ptr, file->data.len, &f, &d);
    if (err)
        sp__api_send_error(a, c, err == SP_ERR_NOMEM ? 500 : 507, "server_error", NULL, NULL, NULL,
                           path, "cannot keep the file: %s", d.msg[0] ? d.msg : sp_err_str(err));
    else
        sp__api_send_json(a, c, sp__api_file_json(&f), path);
}

static void list(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    const char *path = "/v1/files";
    char purpose[32], after[SP_STORE_ID_LEN];
    const bool has_purpose = sp__api_query_param(req, "purpose", purpose, sizeof purpose);
    const bool has_after = sp__api_query_param(req, "after", after, sizeof after);
    int32_t limit;
    if (!sp__api_list_limit(a, c, req, path, LIST_DEFAULT, LIST_MAX, &limit))
        return;
    sp_store_file *fs = malloc((size_t)limit * sizeof *fs);
    int32_t n = 0;
    bool more = false;
    sp_err err = fs ? sp_store_file_list(a->store, has_purpose ? purpose : NULL,
                                         has_after ? after : NULL, limit, fs, &n, &more)
                    : SP_ERR_NOMEM;
    if (err == SP_ERR_NOT_FOUND) {
        sp__api_send_error(a, c, 400, "invalid_request_error", "after", NULL, NULL, path,
                           "after: no such file");
    } else if (err) {
        sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, path, "%s",
                           sp_err_str(err));
    } else {
        json_t *data = json_array();
        for (int32_t i = 0; i < n; i++)
            json_array_append_new(data, sp__api_file_json(&fs[i]));
        json_t *root =
            json_pack("{s:s, s:o, s:b}", "object", "list", "data", data, "has_more", more);
        json_object_set_new(root, "first_id", n ? json_string(fs[0].id) : json_null());
        json_object_set_new(root, "last_id", n ? json_string(fs[n - 1].id) : json_null());
        sp__api_send_json(a, c, root, path);
    }
    free(fs);
}

static void not_found(sp_api *a, sp_http_conn *c, const char *id) {
    sp__api_send_error(a, c, 404, "invalid_request_error", "file_id", "not_found", NULL,
                       "/v1/files", "no such file: %s", id);
}

static void content(sp_api *a, sp_http_conn *c, const char *id) {
    char *data;
    size_t len;
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = sp_store_file_read(a->store, id, &data, &len, &d);
    if (err == SP_ERR_NOT_FOUND) {
        not_found(a, c, id);
        return;
    }
    if (err) {
        sp__api_send_error(a, c, err == SP_ERR_NOMEM ? 500 : 410, "server_error", NULL, NULL, NULL,
                           "/v1/files", "%s", d.msg[0] ? d.msg : sp_err_str(err));
        return;
    }
    sp__api_log_http(a, 200, "/v1/files", "");
    if (sp_http_respond(c, 200, "application/octet-stream", NULL, data, len))
        sp_http_conn_close(c);
    free(data);
}

void sp__api_handle_files(sp_api *a, sp_http_conn *c, const sp_http_req *req) {
    const char *path = "/v1/files";
    if (!sp__api_store_ready(a, c, path))
        return;
    char id[SP_STORE_ID_LEN], rest[16]; // "/files/ID/content": ID, "/content"
    if (!sp__api_resource_path(a, c, req, "/files", "file", id, rest))
        return;
    const bool get = sp_str_eq(req->method, "GET") || sp_str_eq(req->method, "HEAD");
    sp_store_file f;
    if (!id[0] && sp_str_eq(req->method, "POST")) {
        upload(a, c, req);
    } else if (!id[0] && get) {
        list(a, c, req);
    } else if (id[0] && !rest[0] && get) {
        if (sp_store_file_get(a->store, id, &f))
            not_found(a, c, id);
        else
            sp__api_send_json(a, c, sp__api_file_json(&f), path);
    } else if (id[0] && !strcmp(rest, "/content") && get) {
        content(a, c, id);
    } else if (id[0] && !rest[0] && sp_str_eq(req->method, "DELETE")) {
        sp_diag d;
        sp_diag_clear(&d);
        sp_err err = sp_store_file_delete(a->store, id, &d);
        if (err == SP_ERR_NOT_FOUND)
            not_found(a, c, id);
        else if (err)
            sp__api_send_error(a, c, 500, "server_error", NULL, NULL, NULL, path, "%s", d.msg);
        else
            sp__api_send_json(
                a, c, json_pack("{s:s, s:s, s:b}", "id", id, "object", "file", "deleted", 1), path);
    } else if (!rest[0] || !strcmp(rest, "/content")) {
        sp__api_send_error(a, c, 405, "invalid_request_error", NULL, "method_not_allowed", NULL,
                           path, "%s takes %s", path,
                           !id[0]    ? "GET or POST"
                           : rest[0] ? "GET"
                                     : "GET or DELETE");
    } else {
        sp__api_send_error(a, c, 404, "invalid_request_error", NULL, "not_found", NULL, path,
                           "no endpoint there: see the Files API");
    }
}
