/* Files: contents in DIR/files, records in the files table (store.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store_int.h"

struct sp_store_writer {
    sp_store *s;
    int fd;
    char *tmp; // DIR/files/.tmp-PID-N (no id: an orphan if the process dies)
    char filename[256];
    char purpose[32];
    int64_t bytes;
};

static sp_err io_fail(sp_diag *d, const char *what, const char *path, int e) {
    if (e == ENOSPC || e == EDQUOT || e == EFBIG)
        return sp_diag_set(d, SP_ERR_IO, UINT64_MAX,
                           "%s %s: the disk is full (%s): free space there and retry", what, path,
                           strerror(e));
    return sp_diag_set(d, SP_ERR_IO, UINT64_MAX, "%s %s: %s", what, path, strerror(e));
}

sp_err sp_store_writer_open(sp_store *s, const char *filename, const char *purpose,
                            sp_store_writer **out, sp_diag *d) {
    sp_store_writer *w = calloc(1, sizeof *w);
    const size_t n = strlen(s->files_dir) + 64;
    if (!w || !(w->tmp = malloc(n))) {
        free(w);
        return SP_ERR_NOMEM;
    }
    snprintf(w->tmp, n, "%s/.tmp-%ld-%llu", s->files_dir, (long)getpid(),
             (unsigned long long)++s->tmp_seq);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        const sp_err err = io_fail(d, "cannot create", w->tmp, errno);
        free(w->tmp);
        free(w);
        return err;
    }
    w->s = s;
    snprintf(w->filename, sizeof w->filename, "%s", filename);
    snprintf(w->purpose, sizeof w->purpose, "%s", purpose);
    *out = w;
    return SP_OK;
}

sp_err sp_store_writer_write(sp_store_writer *w, const void *p, size_t n, sp_diag *d) {
    for (const char *c = p; n > 0;) {
        const ssize_t k = write(w->fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return io_fail(d, "cannot write", w->tmp, k < 0 ? errno : EIO);
        c += k;
        n -= (size_t)k;
        w->bytes += k;
    }
    return SP_OK;
}

void sp_store_writer_abort(sp_store_writer *w) {
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    unlink(w->tmp);
    free(w->tmp);
    free(w);
}

/* Makes the rename of a file into dir durable. */
static void sync_dir(const char *dir) {
    const int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

sp_err sp_store_writer_commit(sp_store_writer *w, sp_store_file *out, sp_diag *d) {
    sp_store *s = w->s;
    sp_store_file f = {.bytes = w->bytes, .created_at = sp__store_now()};
    sp__store_new_id(f.id, "file-");
    snprintf(f.filename, sizeof f.filename, "%s", w->filename);
    snprintf(f.purpose, sizeof f.purpose, "%s", w->purpose);
    char *path = sp__store_file_path(s, f.id);
    sp_err err = path ? SP_OK : SP_ERR_NOMEM;
    if (!err && fsync(w->fd) < 0)
        err = io_fail(d, "cannot write", w->tmp, errno);
    if (!err && close(w->fd) < 0)
        err = io_fail(d, "cannot write", w->tmp, errno);
    w->fd = -1;
    if (!err && rename(w->tmp, path) < 0)
        err = io_fail(d, "cannot name", path, errno);
    if (err) {
        free(path);
        sp_store_writer_abort(w);
        return err;
    }
    sync_dir(s->files_dir);
    // Recorded after the content is in place: a crash between the two leaves an orphan that
    // the next open removes, never a record without content.
    sqlite3_stmt *st;
    if (!(err = sp__store_prepare(s,
                                  "INSERT INTO files (id, filename, purpose, bytes, created_at) "
                                  "VALUES (?, ?, ?, ?, ?)",
                                  &st, d))) {
        sqlite3_bind_text(st, 1, f.id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, f.filename, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, f.purpose, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, f.bytes);
        sqlite3_bind_int64(st, 5, f.created_at);
        const int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
            err = sp__store_fail(s, rc, d, "cannot record the file");
        sqlite3_finalize(st);
    }
    if (err)
        unlink(path);
    else
        *out = f;
    free(path);
    free(w->tmp);
    free(w);
    return err;
}

sp_err sp_store_file_add(sp_store *s, const char *filename, const char *purpose, const void *data,
                         size_t len, sp_store_file *out, sp_diag *d) {
    sp_store_writer *w;
    sp_err err = sp_store_writer_open(s, filename, purpose, &w, d);
    if (err)
        return err;
    if ((err = sp_store_writer_write(w, data, len, d))) {
        sp_store_writer_abort(w);
        return err;
    }
    return sp_store_writer_commit(w, out, d);
}

static void read_row(sqlite3_stmt *st, sp_store_file *f) {
    sp__store_copy_text(st, 0, f->id, sizeof f->id);
    sp__store_copy_text(st, 1, f->filename, sizeof f->filename);
    sp__store_copy_text(st, 2, f->purpose, sizeof f->purpose);
    f->bytes = sqlite3_column_int64(st, 3);
    f->created_at = sqlite3_column_int64(st, 4);
}

#define FILE_COLUMNS "id, filename, purpose, bytes, created_at"

sp_err sp_store_file_get(sp_store *s, const char *id, sp_store_file *out) {
    sqlite3_stmt *st;
    sp_err err = sp__store_prepare(s, "SELECT " FILE_COLUMNS " FROM files WHERE id = ?", &st, NULL);
    if (err)
        return err;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_row(st, out);
    else
        err = rc == SQLITE_DONE ? SP_ERR_NOT_FOUND : sp__store_fail(s, rc, NULL, "");
    sqlite3_finalize(st);
    return err;
}

sp_err sp_store_file_list(sp_store *s, const char *purpose, const char *after, int32_t limit,
                          sp_store_file *out, int32_t *n, bool *has_more) {
    sqlite3_stmt *st;
    // Newest first; rowid breaks ties of the same second (files are never updated).
    sp_err err = sp__store_prepare(
        s,
        "SELECT " FILE_COLUMNS " FROM files WHERE (?1 IS NULL OR purpose = ?1) AND "
        "(?2 IS NULL OR rowid < (SELECT rowid FROM files WHERE id = ?2)) "
        "ORDER BY rowid DESC LIMIT ?3",
        &st, NULL);
    if (err)
        return err;
    if (after) {
        sp_store_file f;
        if ((err = sp_store_file_get(s, after, &f))) {
            sqlite3_finalize(st);
            return err;
        }
    }
    sqlite3_bind_text(st, 1, purpose, -1, SQLITE_STATIC); // NULL binds NULL
    sqlite3_bind_text(st, 2, after, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, limit + 1);
    int32_t k = 0;
    int rc;
    *has_more = false;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (k == limit) {
            *has_more = true;
            break;
        }
        read_row(st, &out[k++]);
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = sp__store_fail(s, rc, NULL, "");
    sqlite3_finalize(st);
    if (!err)
        *n = k;
    return err;
}

sp_err sp_store_file_delete(sp_store *s, const char *id, sp_diag *d) {
    sqlite3_stmt *st;
    sp_err err = sp__store_prepare(s, "DELETE FROM files WHERE id = ?", &st, d);
    if (err)
        return err;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    const int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        err = sp__store_fail(s, rc, d, "cannot delete the file");
    else if (sqlite3_changes(s->db) == 0)
        err = SP_ERR_NOT_FOUND;
    sqlite3_finalize(st);
    if (!err) {
        char *path = sp__store_file_path(s, id);
        if (path)
            unlink(path); // (an orphan if this fails; the next open removes it)
        free(path);
    }
    return err;
}

sp_err sp_store_file_read(sp_store *s, const char *id, char **data, size_t *len, sp_diag *d) {
    sp_store_file f;
    sp_err err = sp_store_file_get(s, id, &f);
    if (err)
        return err;
    char *path = sp__store_file_path(s, id);
    if (!path)
        return SP_ERR_NOMEM;
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    char *buf = NULL;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        err = sp_diag_set(d, SP_ERR_IO, UINT64_MAX,
                          "the content of file %s is gone (%s: %s): upload it again", id, path,
                          strerror(errno));
    } else if (!(buf = malloc((size_t)sb.st_size + 1))) {
        err = SP_ERR_NOMEM;
    } else {
        size_t got = 0;
        while (got < (size_t)sb.st_size) {
            const ssize_t k = read(fd, buf + got, (size_t)sb.st_size - got);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                err = io_fail(d, "cannot read", path, k < 0 ? errno : EIO);
                break;
            }
            got += (size_t)k;
        }
        buf[got] = '\0';
        *len = got;
    }
    if (fd >= 0)
        close(fd);
    free(path);
    if (err)
        free(buf);
    else
        *data = buf;
    return err;
}
