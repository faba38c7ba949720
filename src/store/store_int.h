/* The store's state, shared by its files (not part of the API):
 *   store.c    opening, the schema, transactions, ids, statements;
 *   files.c    file contents and records;
 *   batches.c  batches and their lines. */
#ifndef SP_STORE_STORE_INT_H
#define SP_STORE_STORE_INT_H

#include <sqlite3.h>

#include "store/store.h"

struct sp_store {
    sqlite3 *db;
    char *dir;        // the data directory
    char *files_dir;  // DIR/files
    int lock_fd;      // DIR/lock, held (flock) while the store is open
    int tx_depth;     // sp_store_begin nesting
    uint64_t tmp_seq; // names of files being written
};

/* *out: a statement of sql, prepared. On failure the error, d filled. */
sp_err sp__store_prepare(sp_store *s, const char *sql, sqlite3_stmt **out, sp_diag *d);

/* The error of a failed SQLite call rc, in d: SP_ERR_IO (a full disk, a read-only or locked
 * database, said so), SP_ERR_FORMAT (corruption), SP_ERR_NOMEM. what names the operation. */
sp_err sp__store_fail(sp_store *s, int rc, sp_diag *d, const char *what);

/* A fresh id: prefix and 24 random hex digits. */
void sp__store_new_id(char id[SP_STORE_ID_LEN], const char *prefix);

/* Unix seconds now. */
int64_t sp__store_now(void);

/* The path of file id's content (a new string; NULL when out of memory). */
char *sp__store_file_path(const sp_store *s, const char *id);

/* Copies a text column into dst[cap] (truncating; "" for NULL). */
void sp__store_copy_text(sqlite3_stmt *st, int col, char *dst, size_t cap);

#endif
