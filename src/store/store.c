/* Opening the store, its schema, transactions and the helpers its files share (store_int.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/store_int.h"

enum { SCHEMA_VERSION = 1 };

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS files ("
    "  id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL,"
    "  bytes INTEGER NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS batches ("
    "  id TEXT PRIMARY KEY, input_file_id TEXT NOT NULL, endpoint TEXT NOT NULL,"
    "  completion_window TEXT NOT NULL, status INTEGER NOT NULL, metadata TEXT, errors TEXT,"
    "  output_file_id TEXT NOT NULL DEFAULT '', error_file_id TEXT NOT NULL DEFAULT '',"
    "  created_at INTEGER NOT NULL, in_progress_at INTEGER NOT NULL DEFAULT 0,"
    "  finalizing_at INTEGER NOT NULL DEFAULT 0, completed_at INTEGER NOT NULL DEFAULT 0,"
    "  failed_at INTEGER NOT NULL DEFAULT 0, expired_at INTEGER NOT NULL DEFAULT 0,"
    "  cancelling_at INTEGER NOT NULL DEFAULT 0, cancelled_at INTEGER NOT NULL DEFAULT 0,"
    "  expires_at INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,"
    "  completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0);"
    // state: 0 pending, 1 done with a response, 2 done with an error.
    "CREATE TABLE IF NOT EXISTS lines ("
    "  batch_id TEXT NOT NULL, line_no INTEGER NOT NULL, custom_id TEXT NOT NULL,"
    "  state INTEGER NOT NULL DEFAULT 0, result TEXT,"
    "  PRIMARY KEY (batch_id, line_no)) WITHOUT ROWID;";

sp_err sp__store_prepare(sp_store *s, const char *sql, sqlite3_stmt **out, sp_diag *d) {
    sqlite3_stmt *st = NULL;
    const int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st);
        return sp__store_fail(s, rc, d, "cannot read the database");
    }
    *out = st;
    return SP_OK;
}

sp_err sp__store_fail(sp_store *s, int rc, sp_diag *d, const char *what) {
    const char *why = s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    switch (rc & 0xff) {
    case SQLITE_NOMEM:
        return sp_diag_set(d, SP_ERR_NOMEM, UINT64_MAX, "%s: out of memory", what);
    case SQLITE_FULL:
        return sp_diag_set(d, SP_ERR_IO, UINT64_MAX,
                           "%s: the disk is full (%s): free space under %s and retry", what, why,
                           s ? s->dir : "the data directory");
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return sp_diag_set(d, SP_ERR_FORMAT, UINT64_MAX,
                           "%s: the database %s/spindle.db is damaged: move it away (a new one "
                           "is made at the next start); SQLite says: %s",
                           what, s ? s->dir : "", why);
    default:
        return sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "%s: %s", what, why);
    }
}

void sp__store_new_id(char id[SP_STORE_ID_LEN], const char *prefix) {
    uint8_t r[12];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) { // (never short for 12 bytes)
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
        for (size_t i = 0; i < sizeof r; i++, x = x * 6364136223846793005ull + 1)
            r[i] = (uint8_t)(x >> 56);
    }
    int k = snprintf(id, SP_STORE_ID_LEN, "%s", prefix);
    for (size_t i = 0; i < sizeof r && k + 2 < SP_STORE_ID_LEN; i++)
        k += snprintf(id + k, (size_t)(SP_STORE_ID_LEN - k), "%02x", r[i]);
}

int64_t sp__store_now(void) {
    return (int64_t)time(NULL);
}

char *sp__store_file_path(const sp_store *s, const char *id) {
    const size_t n = strlen(s->files_dir) + strlen(id) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", s->files_dir, id);
    return p;
}

void sp__store_copy_text(sqlite3_stmt *st, int col, char *dst, size_t cap) {
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

/* mkdir -p: each missing component of path, mode 0700 (the store may hold users' data). */
static sp_err make_dirs(const char *path, sp_diag *d) {
    char *p = strdup(path);
    if (!p)
        return SP_ERR_NOMEM;
    sp_err err = SP_OK;
    for (char *c = p + 1;; c++) {
        const char was = *c;
        if (was != '/' && was != '\0')
            continue;
        *c = '\0';
        struct stat sb;
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "cannot create the data directory %s: %s",
                              p, strerror(errno));
            break;
        }
        if (stat(p, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
            err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "%s is not a directory", p);
            break;
        }
        *c = was;
        if (!was)
            break;
    }
    free(p);
    return err;
}

static sp_err exec(sp_store *s, const char *sql, sp_diag *d, const char *what) {
    const int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? SP_OK : sp__store_fail(s, rc, d, what);
}

/* The integrity check, and the schema made or checked. */
static sp_err check_schema(sp_store *s, sp_diag *d) {
    sqlite3_stmt *st;
    sp_err err = sp__store_prepare(s, "PRAGMA quick_check", &st, d);
    if (err)
        return err;
    int rc = sqlite3_step(st);
    const unsigned char *r = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
    if (r && !strncmp((const char *)r, "*** ", 4) && strchr((const char *)r, '\n'))
        r = (const unsigned char *)strchr((const char *)r, '\n') + 1; // past "*** in database"
    if (rc != SQLITE_ROW)
        err = sp__store_fail(s, rc, d, "cannot check the database");
    else if (!r || strcmp((const char *)r, "ok"))
        err = sp_diag_set(d, SP_ERR_FORMAT, UINT64_MAX,
                          "the database %s/spindle.db is damaged: move it away (a new one is "
                          "made at the next start); its check says: %.*s",
                          s->dir, r ? (int)strcspn((const char *)r, "\n") : 1,
                          r ? (const char *)r : "?");
    sqlite3_finalize(st);
    if (err)
        return err;
    if ((err = sp__store_prepare(s, "PRAGMA user_version", &st, d)))
        return err;
    const int version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    if (version > SCHEMA_VERSION)
        return sp_diag_set(d, SP_ERR_UNSUPPORTED, UINT64_MAX,
                           "the database %s/spindle.db is of a newer Spindle (schema %d; this "
                           "one knows %d): run that version, or use another --data-dir",
                           s->dir, version, SCHEMA_VERSION);
    if ((err = exec(s, schema_sql, d, "cannot create the tables")))
        return err;
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
    return exec(s, sql, d, "cannot record the schema version");
}

/* Removes content files no record names: a process killed between writing a file and
 * recording it, or between deleting a record and its content, leaves them. */
static void remove_orphans(sp_store *s) {
    DIR *dir = opendir(s->files_dir);
    if (!dir)
        return;
    sqlite3_stmt *st;
    if (sp__store_prepare(s, "SELECT 1 FROM files WHERE id = ?", &st, NULL)) {
        closedir(dir);
        return;
    }
    for (struct dirent *e; (e = readdir(dir));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue; // (temporary files, ".tmp-*", are orphans too)
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, e->d_name, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            continue;
        char *p = sp__store_file_path(s, e->d_name);
        if (p)
            unlink(p);
        free(p);
    }
    sqlite3_finalize(st);
    closedir(dir);
}

sp_err sp_store_open(const char *dir, sp_store **out, sp_diag *d) {
    sp_store *s = calloc(1, sizeof *s);
    if (s)
        s->lock_fd = -1;
    if (!s || !(s->dir = strdup(dir)) || !(s->files_dir = malloc(strlen(dir) + 8))) {
        sp_store_close(s);
        return SP_ERR_NOMEM;
    }
    snprintf(s->files_dir, strlen(dir) + 8, "%s/files", dir);
    sp_err err = make_dirs(s->files_dir, d);
    char *path = malloc(strlen(dir) + 16);
    if (!err && !path)
        err = SP_ERR_NOMEM;
    if (!err) {
        // One process per data directory: two would run the same batches.
        snprintf(path, strlen(dir) + 16, "%s/lock", dir);
        s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (s->lock_fd < 0)
            err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "cannot create %s: %s", path,
                              strerror(errno));
        else if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0)
            err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX,
                              "the data directory %s is in use by another Spindle process: give "
                              "each one its own --data-dir",
                              dir);
    }
    if (!err) {
        snprintf(path, strlen(dir) + 16, "%s/spindle.db", dir);
        const int rc =
            sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
        if (rc != SQLITE_OK)
            err = sp__store_fail(s, rc, d, "cannot open the database");
    }
    free(path);
    // WAL: readers never block the writer; synchronous FULL: a commit is on disk when it
    // returns (a line's result survives a power loss, not only a killed process).
    if (!err) {
        sqlite3_busy_timeout(s->db, 5000);
        err = exec(s, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;", d,
                   "cannot open the database");
    }
    if (!err)
        err = check_schema(s, d);
    if (err) {
        sp_store_close(s);
        return err;
    }
    remove_orphans(s);
    *out = s;
    return SP_OK;
}

void sp_store_close(sp_store *s) {
    if (!s)
        return;
    sqlite3_close(s->db);
    if (s->lock_fd >= 0)
        close(s->lock_fd); // (releases the lock)
    free(s->dir);
    free(s->files_dir);
    free(s);
}

const char *sp_store_dir(const sp_store *s) {
    return s->dir;
}

sp_err sp_store_begin(sp_store *s, sp_diag *d) {
    if (s->tx_depth++ > 0)
        return SP_OK;
    const sp_err err = exec(s, "BEGIN IMMEDIATE", d, "cannot start a transaction");
    if (err)
        s->tx_depth = 0;
    return err;
}

sp_err sp_store_commit(sp_store *s, sp_diag *d) {
    if (s->tx_depth == 0 || --s->tx_depth > 0)
        return SP_OK;
    const sp_err err = exec(s, "COMMIT", d, "cannot commit");
    if (err)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return err;
}

void sp_store_rollback(sp_store *s) {
    if (s->tx_depth == 0)
        return;
    s->tx_depth = 0;
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}
