/* Batches and their lines in the store (store.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

static const char *const status_names[SP_BATCH__COUNT] = {
    "validating", "failed",  "in_progress", "finalizing",
    "completed",  "expired", "cancelling",  "cancelled",
};

/* The column stamped when a batch reaches each status (validating: created_at, set at
 * creation). */
static const char *const status_columns[SP_BATCH__COUNT] = {
    "created_at",   "failed_at",  "in_progress_at", "finalizing_at",
    "completed_at", "expired_at", "cancelling_at",  "cancelled_at",
};

const char *sp_batch_status_name(sp_batch_status st) {
    return st < SP_BATCH__COUNT ? status_names[st] : "unknown";
}

bool sp_batch_status_final(sp_batch_status st) {
    return st == SP_BATCH_FAILED || st == SP_BATCH_COMPLETED || st == SP_BATCH_EXPIRED ||
           st == SP_BATCH_CANCELLED;
}

void sp_store_batch_deinit(sp_store_batch *b) {
    free(b->metadata);
    free(b->errors);
    b->metadata = b->errors = NULL;
}

#define BATCH_COLUMNS                                                                              \
    "id, input_file_id, output_file_id, error_file_id, endpoint, completion_window, status, "      \
    "metadata, errors, created_at, in_progress_at, finalizing_at, completed_at, failed_at, "       \
    "expired_at, cancelling_at, cancelled_at, expires_at, total, completed, failed"

static char *dup_text(sqlite3_stmt *st, int col) {
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? strdup((const char *)t) : NULL;
}

static sp_err read_row(sqlite3_stmt *st, sp_store_batch *b) {
    memset(b, 0, sizeof *b);
    sp__store_copy_text(st, 0, b->id, sizeof b->id);
    sp__store_copy_text(st, 1, b->input_file_id, sizeof b->input_file_id);
    sp__store_copy_text(st, 2, b->output_file_id, sizeof b->output_file_id);
    sp__store_copy_text(st, 3, b->error_file_id, sizeof b->error_file_id);
    sp__store_copy_text(st, 4, b->endpoint, sizeof b->endpoint);
    sp__store_copy_text(st, 5, b->completion_window, sizeof b->completion_window);
    const int status = sqlite3_column_int(st, 6);
    b->status = status >= 0 && status < SP_BATCH__COUNT ? (sp_batch_status)status : SP_BATCH_FAILED;
    b->metadata = dup_text(st, 7);
    b->errors = dup_text(st, 8);
    int64_t *times[] = {&b->created_at, &b->in_progress_at, &b->finalizing_at, &b->completed_at,
                        &b->failed_at,  &b->expired_at,     &b->cancelling_at, &b->cancelled_at,
                        &b->expires_at, &b->total,          &b->completed,     &b->failed};
    for (size_t i = 0; i < sizeof times / sizeof *times; i++)
        *times[i] = sqlite3_column_int64(st, 9 + (int)i);
    if ((sqlite3_column_type(st, 7) != SQLITE_NULL && !b->metadata) ||
        (sqlite3_column_type(st, 8) != SQLITE_NULL && !b->errors)) {
        sp_store_batch_deinit(b);
        return SP_ERR_NOMEM;
    }
    return SP_OK;
}

sp_err sp_store_batch_create(sp_store *s, const sp_store_batch *b, sp_store_batch *out,
                             sp_diag *d) {
    char id[SP_STORE_ID_LEN];
    sp__store_new_id(id, "batch_");
    sqlite3_stmt *st;
    sp_err err = sp__store_prepare(s,
                                   "INSERT INTO batches (id, input_file_id, endpoint, "
                                   "completion_window, status, metadata, created_at, expires_at) "
                                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                   &st, d);
    if (err)
        return err;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, b->input_file_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, b->endpoint, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, b->completion_window, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, SP_BATCH_VALIDATING);
    sqlite3_bind_text(st, 6, b->metadata, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, sp__store_now());
    sqlite3_bind_int64(st, 8, b->expires_at);
    const int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sp__store_fail(s, rc, d, "cannot record the batch");
    return sp_store_batch_get(s, id, out);
}

sp_err sp_store_batch_get(sp_store *s, const char *id, sp_store_batch *out) {
    sqlite3_stmt *st;
    sp_err err =
        sp__store_prepare(s, "SELECT " BATCH_COLUMNS " FROM batches WHERE id = ?", &st, NULL);
    if (err)
        return err;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = read_row(st, out);
    else
        err = rc == SQLITE_DONE ? SP_ERR_NOT_FOUND : sp__store_fail(s, rc, NULL, "");
    sqlite3_finalize(st);
    return err;
}

sp_err sp_store_batch_list(sp_store *s, const char *after, int32_t limit, sp_store_batch *out,
                           int32_t *n, bool *has_more) {
    if (after) {
        sp_store_batch b;
        sp_err err = sp_store_batch_get(s, after, &b);
        if (err)
            return err;
        sp_store_batch_deinit(&b);
    }
    sqlite3_stmt *st;
    sp_err err =
        sp__store_prepare(s,
                          "SELECT " BATCH_COLUMNS " FROM batches WHERE "
                          "(?1 IS NULL OR rowid < (SELECT rowid FROM batches WHERE id = ?1)) "
                          "ORDER BY rowid DESC LIMIT ?2",
                          &st, NULL);
    if (err)
        return err;
    sqlite3_bind_text(st, 1, after, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, limit + 1);
    int32_t k = 0;
    int rc;
    *has_more = false;
    while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (k == limit) {
            *has_more = true;
            break;
        }
        if (!(err = read_row(st, &out[k])))
            k++;
    }
    if (!err && rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = sp__store_fail(s, rc, NULL, "");
    sqlite3_finalize(st);
    if (err) {
        for (int32_t i = 0; i < k; i++)
            sp_store_batch_deinit(&out[i]);
        return err;
    }
    *n = k;
    return SP_OK;
}

sp_err sp_store_batch_find(sp_store *s, sp_batch_status status, char (*ids)[SP_STORE_ID_LEN],
                           int32_t cap, int32_t *n) {
    sqlite3_stmt *st;
    sp_err err = sp__store_prepare(
        s, "SELECT id FROM batches WHERE status = ? ORDER BY rowid LIMIT ?", &st, NULL);
    if (err)
        return err;
    sqlite3_bind_int(st, 1, status);
    sqlite3_bind_int(st, 2, cap);
    int32_t k = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && k < cap)
        sp__store_copy_text(st, 0, ids[k++], SP_STORE_ID_LEN);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = sp__store_fail(s, rc, NULL, "");
    sqlite3_finalize(st);
    if (!err)
        *n = k;
    return err;
}

/* Runs an UPDATE of one batch (bound by the caller from ?2 on; ?1 is the id). */
static sp_err update(sp_store *s, const char *sql, const char *id, sqlite3_stmt **stp, sp_diag *d) {
    sp_err err = sp__store_prepare(s, sql, stp, d);
    if (err)
        return err;
    sqlite3_bind_text(*stp, 1, id, -1, SQLITE_STATIC);
    return SP_OK;
}

static sp_err finish_update(sp_store *s, sqlite3_stmt *st, sp_diag *d, const char *what) {
    const int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sp__store_fail(s, rc, d, what);
    return sqlite3_changes(s->db) ? SP_OK : SP_ERR_NOT_FOUND;
}

sp_err sp_store_batch_set_status(sp_store *s, const char *id, sp_batch_status status,
                                 const char *errors, sp_diag *d) {
    if (status >= SP_BATCH__COUNT)
        return SP_ERR_INVALID;
    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE batches SET status = ?2, %s = ?3, errors = coalesce(?4, errors) "
             "WHERE id = ?1",
             status_columns[status]);
    sqlite3_stmt *st;
    sp_err err = update(s, sql, id, &st, d);
    if (err)
        return err;
    sqlite3_bind_int(st, 2, status);
    sqlite3_bind_int64(st, 3, sp__store_now());
    sqlite3_bind_text(st, 4, errors, -1, SQLITE_STATIC);
    return finish_update(s, st, d, "cannot record the batch's status");
}

sp_err sp_store_batch_set_files(sp_store *s, const char *id, const char *output, const char *error,
                                sp_diag *d) {
    sqlite3_stmt *st;
    sp_err err = update(
        s, "UPDATE batches SET output_file_id = ?2, error_file_id = ?3 WHERE id = ?1", id, &st, d);
    if (err)
        return err;
    sqlite3_bind_text(st, 2, output, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, error, -1, SQLITE_STATIC);
    return finish_update(s, st, d, "cannot record the batch's files");
}

sp_err sp_store_batch_add_lines(sp_store *s, const char *id, int64_t n,
                                const char *const *custom_ids, sp_diag *d) {
    sp_err err = sp_store_begin(s, d);
    if (err)
        return err;
    sqlite3_stmt *st;
    if (!(err = sp__store_prepare(
              s, "INSERT INTO lines (batch_id, line_no, custom_id) VALUES (?, ?, ?)", &st, d))) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        for (int64_t i = 0; i < n && !err; i++) {
            sqlite3_bind_int64(st, 2, i);
            sqlite3_bind_text(st, 3, custom_ids[i], -1, SQLITE_STATIC);
            const int rc = sqlite3_step(st);
            if (rc != SQLITE_DONE)
                err = sp__store_fail(s, rc, d, "cannot record the batch's lines");
            sqlite3_reset(st);
        }
        sqlite3_finalize(st);
    }
    if (!err && !(err = update(s, "UPDATE batches SET total = ?2 WHERE id = ?1", id, &st, d))) {
        sqlite3_bind_int64(st, 2, n);
        err = finish_update(s, st, d, "cannot record the batch's lines");
    }
    if (err) {
        sp_store_rollback(s);
        return err;
    }
    return sp_store_commit(s, d);
}

sp_err sp_store_line_finish(sp_store *s, const char *id, int64_t line_no, bool ok,
                            const char *result, bool *recorded, sp_diag *d) {
    sp_err err = sp_store_begin(s, d);
    if (err)
        return err;
    sqlite3_stmt *st;
    bool changed = false;
    if (!(err = sp__store_prepare(s,
                                  "UPDATE lines SET state = ?3, result = ?4 "
                                  "WHERE batch_id = ?1 AND line_no = ?2 AND state = 0",
                                  &st, d))) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, line_no);
        sqlite3_bind_int(st, 3, ok ? 1 : 2);
        sqlite3_bind_text(st, 4, result, -1, SQLITE_STATIC);
        const int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            err = sp__store_fail(s, rc, d, "cannot record a line's result");
        changed = !err && sqlite3_changes(s->db) == 1;
    }
    if (changed && !(err = update(s,
                                  ok ? "UPDATE batches SET completed = completed + 1 WHERE id = ?1"
                                     : "UPDATE batches SET failed = failed + 1 WHERE id = ?1",
                                  id, &st, d)))
        err = finish_update(s, st, d, "cannot record a line's result");
    if (err) {
        sp_store_rollback(s);
        return err;
    }
    if ((err = sp_store_commit(s, d)))
        return err;
    *recorded = changed;
    return SP_OK;
}

sp_err sp_store_batch_pending(sp_store *s, const char *id, int64_t **lines, int64_t *n) {
    sqlite3_stmt *st;
    sp_err err = sp__store_prepare(
        s, "SELECT line_no FROM lines WHERE batch_id = ? AND state = 0 ORDER BY line_no", &st,
        NULL);
    if (err)
        return err;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int64_t *a = NULL, k = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (k == cap) {
            cap = cap ? 2 * cap : 256;
            int64_t *b = realloc(a, (size_t)cap * sizeof *a);
            if (!b) {
                err = SP_ERR_NOMEM;
                break;
            }
            a = b;
        }
        a[k++] = sqlite3_column_int64(st, 0);
    }
    if (!err && rc != SQLITE_DONE)
        err = sp__store_fail(s, rc, NULL, "");
    sqlite3_finalize(st);
    if (err) {
        free(a);
        return err;
    }
    *lines = a;
    *n = k;
    return SP_OK;
}

sp_err sp_store_batch_results(sp_store *s, const char *id, bool ok,
                              int (*fn)(void *ctx, int64_t line_no, const char *result, size_t len),
                              void *ctx) {
    sqlite3_stmt *st;
    sp_err err = sp__store_prepare(s,
                                   "SELECT line_no, result FROM lines WHERE batch_id = ? AND "
                                   "state = ? ORDER BY line_no",
                                   &st, NULL);
    if (err)
        return err;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, ok ? 1 : 2);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *r = (const char *)sqlite3_column_text(st, 1);
        if (fn(ctx, sqlite3_column_int64(st, 0), r ? r : "", (size_t)sqlite3_column_bytes(st, 1))) {
            err = SP_ERR_CANCELLED;
            break;
        }
    }
    if (!err && rc != SQLITE_DONE)
        err = sp__store_fail(s, rc, NULL, "");
    sqlite3_finalize(st);
    return err;
}
