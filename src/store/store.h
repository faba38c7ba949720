/* Durable state of offline work: uploaded files, batch jobs and each batch line's result, in
 * one SQLite database (WAL mode) and a folder of file contents, under a data directory:
 *
 *   DIR/spindle.db     files, batches, lines (the schema in store.c)
 *   DIR/files/ID       the content of file ID (written to a temporary name, synced, renamed)
 *   DIR/lock           held by the process that has the store open
 *
 * A line's result is committed once: sp_store_line_finish records it only while the line is
 * still pending, in one transaction with the batch's counts, so a process killed at any point
 * and restarted finds each line either pending (to run again) or done (never to run again).
 *
 * Errors name what to do next: a disk that is full, a database that is not one or is corrupt
 * (move it away), a content file deleted behind the store's back. An sp_store belongs to one
 * thread (the server's loop thread, or the batch command's), which makes every call. */
#ifndef SP_STORE_STORE_H
#define SP_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct sp_store sp_store;

enum { SP_STORE_ID_LEN = 40 }; // room for an id and its NUL ("file-" or "batch_" + 24 hex)

/* Opens the store in dir, creating dir, the database and the files folder if needed, and
 * removes content files that no row names (left by a process killed between writing a file
 * and recording it). One process at a time: the directory is locked while the store is open.
 * SP_ERR_IO (cannot create or open, or another process has it open; the reason in d),
 * SP_ERR_FORMAT (the database is not one or fails its integrity check), SP_ERR_UNSUPPORTED (a
 * database of a newer schema), SP_ERR_NOMEM. */
SP_MUST_USE sp_err sp_store_open(const char *dir, sp_store **out, sp_diag *d);
void sp_store_close(sp_store *s);

/* The data directory the store was opened in. */
const char *sp_store_dir(const sp_store *s);

/* Transactions around several calls (each call is otherwise its own transaction). Nested
 * begins are counted; the outermost commit commits. SP_ERR_IO on failure (d filled). */
SP_MUST_USE sp_err sp_store_begin(sp_store *s, sp_diag *d);
SP_MUST_USE sp_err sp_store_commit(sp_store *s, sp_diag *d);
void sp_store_rollback(sp_store *s);

/* ---- Files ---------------------------------------------------------------------------------- */

typedef struct sp_store_file {
    char id[SP_STORE_ID_LEN];
    char filename[256];
    char purpose[32]; // "batch", "batch_output"
    int64_t bytes;
    int64_t created_at; // Unix seconds
} sp_store_file;

/* A file being written: its content goes to a temporary file until committed. */
typedef struct sp_store_writer sp_store_writer;

/* Starts a file named filename (as the client named it) for purpose. SP_ERR_IO, SP_ERR_NOMEM. */
SP_MUST_USE sp_err sp_store_writer_open(sp_store *s, const char *filename, const char *purpose,
                                        sp_store_writer **out, sp_diag *d);
/* Appends n bytes. SP_ERR_IO (a full disk says so); the writer must then be aborted. */
SP_MUST_USE sp_err sp_store_writer_write(sp_store_writer *w, const void *p, size_t n, sp_diag *d);
/* Syncs the content, gives it its id and records the file (in the open transaction if any);
 * *out describes it. The writer is freed whatever the result. */
SP_MUST_USE sp_err sp_store_writer_commit(sp_store_writer *w, sp_store_file *out, sp_diag *d);
/* Drops the file being written and frees the writer; NULL is a no-op. */
void sp_store_writer_abort(sp_store_writer *w);

/* A whole file at once (sp_store_writer_* in one call). */
SP_MUST_USE sp_err sp_store_file_add(sp_store *s, const char *filename, const char *purpose,
                                     const void *data, size_t len, sp_store_file *out, sp_diag *d);

/* File id's record. SP_ERR_NOT_FOUND. */
SP_MUST_USE sp_err sp_store_file_get(sp_store *s, const char *id, sp_store_file *out);

/* Up to limit files, newest first, of purpose (NULL: any), after the file with id `after`
 * (NULL: from the newest) into out[], their count in *n; *has_more when more follow.
 * SP_ERR_NOT_FOUND when `after` is no file. */
SP_MUST_USE sp_err sp_store_file_list(sp_store *s, const char *purpose, const char *after,
                                      int32_t limit, sp_store_file *out, int32_t *n,
                                      bool *has_more);

/* Deletes file id (its record, then its content). SP_ERR_NOT_FOUND. */
SP_MUST_USE sp_err sp_store_file_delete(sp_store *s, const char *id, sp_diag *d);

/* File id's whole content into a new NUL-terminated buffer *data (*len without the NUL; the
 * caller frees). SP_ERR_NOT_FOUND (no such file), SP_ERR_IO (its content is gone or
 * unreadable: d says so), SP_ERR_NOMEM. */
SP_MUST_USE sp_err sp_store_file_read(sp_store *s, const char *id, char **data, size_t *len,
                                      sp_diag *d);

/* ---- Batches -------------------------------------------------------------------------------- */

typedef enum sp_batch_status {
    SP_BATCH_VALIDATING,
    SP_BATCH_FAILED,
    SP_BATCH_IN_PROGRESS,
    SP_BATCH_FINALIZING,
    SP_BATCH_COMPLETED,
    SP_BATCH_EXPIRED,
    SP_BATCH_CANCELLING,
    SP_BATCH_CANCELLED,
    SP_BATCH__COUNT
} sp_batch_status;

/* The API's name of a status ("in_progress", ...). */
const char *sp_batch_status_name(sp_batch_status st);

/* Whether a batch in status st has stopped for good. */
bool sp_batch_status_final(sp_batch_status st);

typedef struct sp_store_batch {
    char id[SP_STORE_ID_LEN];
    char input_file_id[SP_STORE_ID_LEN];
    char output_file_id[SP_STORE_ID_LEN]; // "" until there is one
    char error_file_id[SP_STORE_ID_LEN];  // ""
    char endpoint[32];                    // "/v1/chat/completions" or "/v1/completions"
    char completion_window[16];           // "24h"
    sp_batch_status status;
    char *metadata; // JSON object text, or NULL (heap: sp_store_batch_deinit)
    char *errors;   // JSON array text of {code, message, line, param}, or NULL (heap)
    // Unix seconds; 0 where the batch has not reached that point.
    int64_t created_at, in_progress_at, finalizing_at, completed_at, failed_at, expired_at,
        cancelling_at, cancelled_at, expires_at;
    int64_t total, completed, failed; // lines: all, done with a response, done with an error
} sp_store_batch;

/* Frees a batch record's heap fields. */
void sp_store_batch_deinit(sp_store_batch *b);

/* Records a new batch of b's input_file_id, endpoint, completion_window, metadata and
 * expires_at, in status validating; *out is the record (its id made here). */
SP_MUST_USE sp_err sp_store_batch_create(sp_store *s, const sp_store_batch *b, sp_store_batch *out,
                                         sp_diag *d);

/* Batch id's record (deinit it). SP_ERR_NOT_FOUND. */
SP_MUST_USE sp_err sp_store_batch_get(sp_store *s, const char *id, sp_store_batch *out);

/* Up to limit batches, newest first, after batch `after` (NULL: from the newest), as
 * sp_store_file_list. Each to deinit. */
SP_MUST_USE sp_err sp_store_batch_list(sp_store *s, const char *after, int32_t limit,
                                       sp_store_batch *out, int32_t *n, bool *has_more);

/* The ids of the batches in status st, oldest first, into ids[cap] (*n of them: at most cap). */
SP_MUST_USE sp_err sp_store_batch_find(sp_store *s, sp_batch_status st,
                                       char (*ids)[SP_STORE_ID_LEN], int32_t cap, int32_t *n);

/* Moves batch id to status st and stamps the time of that status (now); errors (a JSON array,
 * or NULL to keep the current ones) recorded with it. SP_ERR_NOT_FOUND. */
SP_MUST_USE sp_err sp_store_batch_set_status(sp_store *s, const char *id, sp_batch_status st,
                                             const char *errors, sp_diag *d);

/* Records the output and error files of batch id ("" for none). */
SP_MUST_USE sp_err sp_store_batch_set_files(sp_store *s, const char *id, const char *output,
                                            const char *error, sp_diag *d);

/* Records the lines of batch id: line i (numbered from 0) with custom_ids[i], all pending, and
 * the batch's total. In one transaction. */
SP_MUST_USE sp_err sp_store_batch_add_lines(sp_store *s, const char *id, int64_t n,
                                            const char *const *custom_ids, sp_diag *d);

/* Line line_no of batch id is done: result (a JSON text, the output or error file's line) is
 * recorded and the batch's completed (ok) or failed count grows by one, only if the line was
 * still pending; *recorded says whether it was. */
SP_MUST_USE sp_err sp_store_line_finish(sp_store *s, const char *id, int64_t line_no, bool ok,
                                        const char *result, bool *recorded, sp_diag *d);

/* The pending lines of batch id in line order: their numbers into *lines (a new array, the
 * caller frees; NULL when none) and their count. */
SP_MUST_USE sp_err sp_store_batch_pending(sp_store *s, const char *id, int64_t **lines, int64_t *n);

/* Calls fn for each done line of batch id with the given outcome (ok: responses; else errors),
 * in line order, with its result text; stops at the first nonzero return (returned as
 * SP_ERR_CANCELLED). */
SP_MUST_USE sp_err sp_store_batch_results(sp_store *s, const char *id, bool ok,
                                          int (*fn)(void *ctx, int64_t line_no, const char *result,
                                                    size_t len),
                                          void *ctx);

#endif
