/* The SQLite mailbox store: opening and closing, connections with their
 * statement caches, readers (folder and message listings, usage, queue
 * count), chunked message streams and the free-space check. Writes go
 * through writer.c; bodies being received live in body.c. */
#include "service/core/status.h"
#include "service/store/store_int.h"

#include <apr_cstr.h>
#include <apr_file_info.h>
#include <apr_atomic.h>
#include <apr_strings.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <sys/statvfs.h>
#endif

/* Spool files older than this are leftovers of a crash (no SMTP transaction
 * lasts a day), safe to remove at daemon start. */
#define STORE_SPOOL_STALE apr_time_from_sec(24 * 3600)

static const char *const store_sql[SQ__COUNT] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_SAVEPOINT] = "SAVEPOINT req",
    [SQ_RELEASE] = "RELEASE req",
    [SQ_ROLLBACK_TO] = "ROLLBACK TO req",
    [SQ_BODY_INSERT] = "INSERT INTO bodies(size, data) VALUES(?1, ?2)",
    [SQ_BODY_INSERT_ZERO] = "INSERT INTO bodies(size, data) VALUES(?1, zeroblob(?1))",
    [SQ_MBOX_BUMP] = "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
                     " WHERE user = ?1 AND name = ?2 RETURNING id, uidnext - 1, highestmodseq",
    [SQ_MBOX_CREATE] = "INSERT INTO mailboxes(user, name, uidvalidity, uidnext, highestmodseq)"
                       " VALUES(?1, ?2, ?3, 1, 0)",
    [SQ_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [SQ_META_SET] = "UPDATE meta SET value = ?2 WHERE key = ?1",
    [SQ_MSG_INSERT] = "INSERT INTO messages(mailbox_id, uid, body_id, prefix, size, flags,"
                      " internaldate, modseq) VALUES(?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)",
    [SQ_QMSG_INSERT] = "INSERT INTO queue_msgs(body_id, sender, prefix, created, envid, ret,"
                       " body_flags) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [SQ_QRCPT_INSERT] = "INSERT INTO queue_rcpts(queue_id, address, state, attempts,"
                        " next_attempt, last_reply, notify, orcpt)"
                        " VALUES(?1, ?2, 0, 0, ?3, '', ?4, ?5)",
    [SQ_MBOX_TOUCH] = "UPDATE mailboxes SET highestmodseq = highestmodseq + 1"
                      " WHERE user = ?1 AND name = ?2 RETURNING id, highestmodseq",
    [SQ_MSG_FLAGS] = "UPDATE messages SET flags = ?3, modseq = ?4"
                     " WHERE mailbox_id = ?1 AND uid = ?2",
    [SQ_MSG_DELETE] = "DELETE FROM messages WHERE mailbox_id = ?1 AND uid = ?2 RETURNING body_id",
    [SQ_BODY_GC] = "DELETE FROM bodies WHERE id = ?1"
                   " AND NOT EXISTS(SELECT 1 FROM messages WHERE body_id = ?1)"
                   " AND NOT EXISTS(SELECT 1 FROM queue_msgs WHERE body_id = ?1)",
    [SQ_QRCPT_UPDATE] = "UPDATE queue_rcpts SET state = ?2, attempts = attempts + ?3,"
                        " next_attempt = ?4, last_reply = ?5, warned = ?6"
                        " WHERE id = ?1 RETURNING queue_id",
    [SQ_QMSG_PENDING] = "SELECT count(*) FROM queue_rcpts WHERE queue_id = ?1 AND state = 0",
    [SQ_QMSG_DELETE] = "DELETE FROM queue_msgs WHERE id = ?1 RETURNING body_id",
    [SQ_QRCPT_DELETE_MSG] = "DELETE FROM queue_rcpts WHERE queue_id = ?1",
    [SQ_QRETRY] = "UPDATE queue_rcpts SET next_attempt = ?2 WHERE state = 0"
                  " AND (?1 = 0 OR queue_id = ?1)",
    [SQ_QRETRY_DOMAIN] = "UPDATE queue_rcpts SET next_attempt = ?2 WHERE state = 0"
                         " AND lower(substr(address, instr(address, '@') + 1)) = lower(?1)",
    [SQ_R_BEGIN] = "BEGIN",
    [SQ_R_COMMIT] = "COMMIT",
    [SQ_R_FOLDERS] = "SELECT mb.name, mb.uidvalidity, mb.uidnext, mb.highestmodseq,"
                     " count(m.uid), coalesce(sum(m.size), 0)"
                     " FROM mailboxes mb LEFT JOIN messages m ON m.mailbox_id = mb.id"
                     " WHERE mb.user = ?1 GROUP BY mb.id ORDER BY mb.name <> 'INBOX', mb.name",
    [SQ_R_MBOX] = "SELECT id, uidvalidity, uidnext, highestmodseq FROM mailboxes"
                  " WHERE user = ?1 AND name = ?2",
    [SQ_R_MSGS] = "SELECT uid, size, flags, internaldate, modseq FROM messages"
                  " WHERE mailbox_id = ?1 ORDER BY uid",
    [SQ_R_MSG_OPEN] = "SELECT m.prefix, m.body_id, b.size FROM mailboxes mb"
                      " JOIN messages m ON m.mailbox_id = mb.id JOIN bodies b ON b.id = m.body_id"
                      " WHERE mb.user = ?1 AND mb.name = ?2 AND m.uid = ?3",
    [SQ_R_USAGE] = "SELECT messages, bytes FROM user_usage WHERE user = ?1",
    [SQ_R_QCOUNT] = "SELECT count(*) FROM queue_rcpts WHERE state = 0",
    [SQ_R_QDUE] = "SELECT m.id, m.sender, m.created, length(m.prefix) + b.size, m.envid, m.ret,"
                  " m.body_flags, r.id, r.address, r.state, r.attempts, r.next_attempt,"
                  " r.last_reply, r.notify, r.orcpt, r.warned"
                  " FROM queue_rcpts r JOIN queue_msgs m ON m.id = r.queue_id"
                  " JOIN bodies b ON b.id = m.body_id"
                  " WHERE r.state = 0 AND r.next_attempt <= ?1"
                  " AND (r.next_attempt, r.id) > (?3, ?4)"
                  " ORDER BY r.next_attempt, r.id LIMIT ?2",
    [SQ_R_QNEXT] = "SELECT min(next_attempt) FROM queue_rcpts WHERE state = 0",
    [SQ_R_QLIST] = "SELECT m.id, m.sender, m.created, length(m.prefix) + b.size, m.envid, m.ret,"
                   " m.body_flags, r.id, r.address, r.state, r.attempts, r.next_attempt,"
                   " r.last_reply, r.notify, r.orcpt, r.warned"
                   " FROM queue_rcpts r JOIN queue_msgs m ON m.id = r.queue_id"
                   " JOIN bodies b ON b.id = m.body_id"
                   " WHERE ?1 = 0 OR m.id = ?1 ORDER BY m.id, r.id",
    [SQ_R_QOPEN] = "SELECT m.prefix, m.body_id, b.size FROM queue_msgs m"
                   " JOIN bodies b ON b.id = m.body_id WHERE m.id = ?1",
};

const char *store_folder_norm(const char *folder)
{
    /* RFC 3501 5.1: INBOX is case-insensitive; every other name is exact. */
    if (!folder || !apr_cstr_casecmp(folder, "INBOX")) return "INBOX";
    return folder;
}

apr_status_t store_conn_open(store_conn_t *c, const char *path, int create)
{
    memset(c, 0, sizeof(*c));
    /* NOMUTEX: a connection is only ever used by one thread at a time (the
     * writer, or the reader's owner), so SQLite's own locking is waste. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &c->db, flags, NULL) != SQLITE_OK) {
        store_conn_close(c);
        return PR_EIO;
    }
    sqlite3_busy_timeout(c->db, STORE_BUSY_TIMEOUT_MS);
    /* Only takes effect on a new, empty file, and must come before WAL mode
     * writes the header. Its pointer map lets a blob read skip to an offset
     * in a long body without reading every overflow page before it, which
     * keeps stream reads linear even though each one reopens the blob. */
    if (create) sqlite3_exec(c->db, "PRAGMA auto_vacuum = INCREMENTAL", NULL, NULL, NULL);
    /* WAL lets readers run beside the writer and other processes; with
     * synchronous=FULL every COMMIT fsyncs the WAL, which is what makes a
     * returned store_deliver durable. journal_mode is persistent in the file
     * but asking again is cheap and repairs a database made elsewhere. */
    if (sqlite3_exec(c->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL", NULL, NULL,
                     NULL) != SQLITE_OK) {
        store_conn_close(c);
        return PR_EIO;
    }
    /* A large body passes through the WAL; once checkpointed, give the space
     * back instead of keeping a WAL as big as the largest message ever. */
    if (create && sqlite3_exec(c->db, "PRAGMA journal_size_limit = 16777216", NULL, NULL, NULL) !=
                      SQLITE_OK) {
        store_conn_close(c);
        return PR_EIO;
    }
    return APR_SUCCESS;
}

void store_conn_close(store_conn_t *c)
{
    for (int i = 0; i < SQ__COUNT; i++) {
        if (c->stmt[i]) sqlite3_finalize(c->stmt[i]);
        c->stmt[i] = NULL;
    }
    if (c->db) sqlite3_close(c->db);
    c->db = NULL;
}

sqlite3_stmt *store_conn_stmt(store_conn_t *c, store_sq_t q)
{
    sqlite3_stmt *s = c->stmt[q];
    if (!s) {
        if (sqlite3_prepare_v3(c->db, store_sql[q], -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) !=
            SQLITE_OK)
            return NULL;
        c->stmt[q] = s;
        return s;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

/* Remove spool files a crashed process left behind. */
static void store_spool_sweep(store_t *st, apr_pool_t *pool)
{
    apr_pool_t *p;
    apr_dir_t *dir;
    apr_finfo_t fi;
    apr_pool_create(&p, pool);
    if (apr_dir_open(&dir, st->spool_dir, p) == APR_SUCCESS) {
        apr_time_t cutoff = apr_time_now() - STORE_SPOOL_STALE;
        while (apr_dir_read(&fi, APR_FINFO_NAME | APR_FINFO_TYPE | APR_FINFO_MTIME, dir) ==
               APR_SUCCESS) {
            if (fi.filetype == APR_REG && fi.mtime < cutoff && !strncmp(fi.name, "body", 4))
                apr_file_remove(apr_pstrcat(p, st->spool_dir, "/", fi.name, NULL), p);
        }
        apr_dir_close(dir);
    }
    apr_pool_destroy(p);
}

static apr_status_t store_cleanup(void *data)
{
    store_close(data);
    return APR_SUCCESS;
}

apr_status_t store_open(store_t **st_r, const store_options_t *opts, apr_pool_t *pool)
{
    apr_status_t rv;
    if (!opts || !opts->data_dir || !*opts->data_dir) return PR_EINVAL;

    store_t *st = apr_pcalloc(pool, sizeof(*st));
    st->pool = pool;
    st->opts = *opts;
    st->opts.data_dir = apr_pstrdup(pool, opts->data_dir);
    if (!st->opts.spool_memory_limit) st->opts.spool_memory_limit = STORE_DEFAULT_SPOOL_LIMIT;
    if (st->opts.group_commit_max <= 0) st->opts.group_commit_max = STORE_DEFAULT_GROUP_MAX;
    st->db_path = apr_pstrcat(pool, st->opts.data_dir, "/store.db", NULL);
    st->spool_dir = apr_pstrcat(pool, st->opts.data_dir, "/spool", NULL);

    if ((rv = apr_dir_make_recursive(st->spool_dir, APR_FPROT_OS_DEFAULT, pool)) != APR_SUCCESS)
        return rv;
    if (!st->opts.no_writer) store_spool_sweep(st, pool);

    if ((rv = apr_thread_mutex_create(&st->mu, APR_THREAD_MUTEX_DEFAULT, pool)) != APR_SUCCESS ||
        (rv = apr_thread_mutex_create(&st->sync_mu, APR_THREAD_MUTEX_DEFAULT, pool)) !=
            APR_SUCCESS ||
        (rv = apr_thread_mutex_create(&st->readers_mu, APR_THREAD_MUTEX_DEFAULT, pool)) !=
            APR_SUCCESS ||
        (rv = apr_thread_cond_create(&st->work, pool)) != APR_SUCCESS ||
        (rv = apr_pool_create(&st->waiter_pool, pool)) != APR_SUCCESS)
        return rv;
    st->copy_buf = apr_palloc(pool, STORE_COPY_CHUNK);

    if ((rv = store_conn_open(&st->w, st->db_path, 1)) != APR_SUCCESS) return rv;
    if ((rv = store_schema_migrate(&st->w)) != APR_SUCCESS) {
        store_conn_close(&st->w);
        return rv;
    }
    /* A pre-cleanup: it must stop the writer before the pool destroys its
     * subpools (the thread's among them) and the mutexes. */
    apr_pool_pre_cleanup_register(pool, st, store_cleanup);
    if (!st->opts.no_writer && (rv = store_writer_start(st)) != APR_SUCCESS) {
        store_close(st);
        return rv;
    }
    *st_r = st;
    return APR_SUCCESS;
}

void store_close(store_t *st)
{
    if (!st || st->closed) return;
    store_writer_stop(st); /* drains what is queued first */
    apr_thread_mutex_lock(st->sync_mu);
    st->closed = 1;
    store_conn_close(&st->w);
    apr_thread_mutex_unlock(st->sync_mu);
    apr_thread_mutex_lock(st->readers_mu);
    while (st->idle_readers) {
        store_idle_conn_t *ic = st->idle_readers;
        st->idle_readers = ic->next;
        store_conn_close(&ic->c);
        free(ic);
    }
    st->n_idle_readers = 0;
    apr_thread_mutex_unlock(st->readers_mu);
}

apr_status_t store_check_space(store_t *st, apr_off_t need)
{
#ifdef _WIN32
    ULARGE_INTEGER avail;
    if (!GetDiskFreeSpaceExA(st->opts.data_dir, &avail, NULL, NULL)) return apr_get_os_error();
    return (apr_off_t)avail.QuadPart < need ? PR_ENOSPACE : APR_SUCCESS;
#else
    /* A statvfs per MAIL is a system call per message; while the space is
     * plentiful (1 GiB and twice the need over) the answer holds for a
     * second. Close to the limit every MAIL looks again. */
    const apr_uint64_t slack = (apr_uint64_t)1 << 30;
    apr_uint64_t now = (apr_uint64_t)apr_time_now();
    if (need <= 0) return APR_SUCCESS;
    if (now < apr_atomic_read64(&st->space_ok_until) &&
        (apr_uint64_t)need <= apr_atomic_read64(&st->space_ok_need))
        return APR_SUCCESS;
    struct statvfs vfs;
    if (statvfs(st->opts.data_dir, &vfs) != 0) return APR_FROM_OS_ERROR(errno);
    apr_uint64_t avail = (apr_uint64_t)vfs.f_bavail * (apr_uint64_t)vfs.f_frsize;
    if (avail < (apr_uint64_t)need) return PR_ENOSPACE;
    if (avail >= 2 * (apr_uint64_t)need + slack) {
        apr_atomic_set64(&st->space_ok_need, (avail - slack) / 2);
        apr_atomic_set64(&st->space_ok_until, now + (apr_uint64_t)apr_time_from_sec(1));
    }
    return APR_SUCCESS;
#endif
}

void store_stats_get(store_t *st, store_stats_t *out)
{
    apr_thread_mutex_lock(st->mu);
    *out = st->stats;
    apr_thread_mutex_unlock(st->mu);
    apr_thread_mutex_lock(st->readers_mu);
    out->reader_opens = st->reader_opens;
    out->idle_readers = (apr_uint32_t)st->n_idle_readers;
    apr_thread_mutex_unlock(st->readers_mu);
}

/* ---- Readers */

/* A reader's connection goes back to the idle list when its pool goes,
 * unless the store is closed, the list is full, or the connection is inside
 * a transaction (it never should be: every read ends its own). */
static apr_status_t store_reader_cleanup(void *data)
{
    store_reader_t *r = data;
    store_t *st = r->st;
    store_idle_conn_t *ic = NULL;
    if (sqlite3_get_autocommit(r->c.db)) ic = malloc(sizeof(*ic));
    if (ic) {
        ic->c = r->c;
        apr_thread_mutex_lock(st->readers_mu);
        if (!st->closed && st->n_idle_readers < STORE_IDLE_READERS_MAX) {
            ic->next = st->idle_readers;
            st->idle_readers = ic;
            st->n_idle_readers++;
            ic = NULL;
            r->c.db = NULL;
        }
        apr_thread_mutex_unlock(st->readers_mu);
        free(ic);
    }
    if (r->c.db) store_conn_close(&r->c);
    return APR_SUCCESS;
}

apr_status_t store_reader_open(store_reader_t **r_r, store_t *st, apr_pool_t *pool)
{
    store_reader_t *r = apr_pcalloc(pool, sizeof(*r));
    r->st = st;
    apr_thread_mutex_lock(st->readers_mu);
    store_idle_conn_t *ic = st->idle_readers;
    if (ic) {
        st->idle_readers = ic->next;
        st->n_idle_readers--;
    } else {
        st->reader_opens++;
    }
    apr_thread_mutex_unlock(st->readers_mu);
    if (ic) {
        r->c = ic->c;
        free(ic);
    } else {
        apr_status_t rv = store_conn_open(&r->c, st->db_path, 0);
        if (rv != APR_SUCCESS) return rv;
        /* Readers never write: all writes go through the single writer. */
        sqlite3_exec(r->c.db, "PRAGMA query_only = 1", NULL, NULL, NULL);
    }
    apr_pool_cleanup_register(pool, r, store_reader_cleanup, apr_pool_cleanup_null);
    *r_r = r;
    return APR_SUCCESS;
}

/* A short explicit read transaction, for listings that need one snapshot
 * across two statements. */
static apr_status_t store_reader_begin(store_reader_t *r)
{
    sqlite3_stmt *s = store_conn_stmt(&r->c, SQ_R_BEGIN);
    int rc = s ? sqlite3_step(s) : SQLITE_ERROR;
    if (s) sqlite3_reset(s);
    return rc == SQLITE_DONE ? APR_SUCCESS : PR_EIO;
}

static void store_reader_end(store_reader_t *r)
{
    sqlite3_stmt *s = store_conn_stmt(&r->c, SQ_R_COMMIT);
    if (s) {
        sqlite3_step(s);
        sqlite3_reset(s);
    }
    if (!sqlite3_get_autocommit(r->c.db)) sqlite3_exec(r->c.db, "ROLLBACK", NULL, NULL, NULL);
}

static void store_bind_text(sqlite3_stmt *s, int i, const char *v)
{
    sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

apr_status_t store_folders_list(store_reader_t *r, const char *user, apr_array_header_t **folders_r,
                                apr_pool_t *pool)
{
    sqlite3_stmt *s = store_conn_stmt(&r->c, SQ_R_FOLDERS);
    if (!s) return PR_EIO;
    apr_array_header_t *a = apr_array_make(pool, 4, sizeof(store_folder_info_t));
    store_bind_text(s, 1, user);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_folder_info_t *f = apr_array_push(a);
        f->name = apr_pstrdup(pool, (const char *)sqlite3_column_text(s, 0));
        f->uidvalidity = (apr_uint32_t)sqlite3_column_int64(s, 1);
        f->uidnext = (apr_uint32_t)sqlite3_column_int64(s, 2);
        f->highestmodseq = (apr_uint64_t)sqlite3_column_int64(s, 3);
        f->messages = (apr_uint32_t)sqlite3_column_int64(s, 4);
        f->size = (apr_off_t)sqlite3_column_int64(s, 5);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return PR_EIO;
    *folders_r = a;
    return APR_SUCCESS;
}

apr_status_t store_messages_list(store_reader_t *r, const char *user, const char *folder,
                                 store_folder_info_t *info_r, apr_array_header_t **msgs_r,
                                 apr_pool_t *pool)
{
    folder = store_folder_norm(folder);
    apr_status_t rv = store_reader_begin(r);
    if (rv != APR_SUCCESS) return rv;

    sqlite3_stmt *s = store_conn_stmt(&r->c, SQ_R_MBOX);
    if (!s) {
        store_reader_end(r);
        return PR_EIO;
    }
    store_bind_text(s, 1, user);
    store_bind_text(s, 2, folder);
    int rc = sqlite3_step(s);
    store_folder_info_t info = {0};
    sqlite3_int64 mbox_id = 0;
    if (rc == SQLITE_ROW) {
        mbox_id = sqlite3_column_int64(s, 0);
        info.name = apr_pstrdup(pool, folder);
        info.uidvalidity = (apr_uint32_t)sqlite3_column_int64(s, 1);
        info.uidnext = (apr_uint32_t)sqlite3_column_int64(s, 2);
        info.highestmodseq = (apr_uint64_t)sqlite3_column_int64(s, 3);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW) {
        store_reader_end(r);
        return rc == SQLITE_DONE ? PR_ENOTFOUND : PR_EIO;
    }

    apr_array_header_t *a = apr_array_make(pool, 16, sizeof(store_msg_info_t));
    s = store_conn_stmt(&r->c, SQ_R_MSGS);
    if (!s) {
        store_reader_end(r);
        return PR_EIO;
    }
    sqlite3_bind_int64(s, 1, mbox_id);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_msg_info_t *m = apr_array_push(a);
        m->uid = (apr_uint32_t)sqlite3_column_int64(s, 0);
        m->size = (apr_off_t)sqlite3_column_int64(s, 1);
        m->flags = (apr_uint32_t)sqlite3_column_int64(s, 2);
        m->internaldate = (apr_time_t)sqlite3_column_int64(s, 3);
        m->modseq = (apr_uint64_t)sqlite3_column_int64(s, 4);
        info.messages++;
        info.size += m->size;
    }
    sqlite3_reset(s);
    store_reader_end(r);
    if (rc != SQLITE_DONE) return PR_EIO;
    if (info_r) *info_r = info;
    *msgs_r = a;
    return APR_SUCCESS;
}

apr_status_t store_user_usage(store_reader_t *r, const char *user, apr_uint32_t *messages_r,
                              apr_off_t *bytes_r)
{
    return store_conn_usage(&r->c, user, messages_r, bytes_r);
}

apr_status_t store_conn_usage(store_conn_t *c, const char *user, apr_uint32_t *messages_r,
                              apr_off_t *bytes_r)
{
    /* The running totals of schema 2 (kept by triggers with every message
     * insert and delete): one primary-key read, not a scan of the mailbox. */
    sqlite3_stmt *s = store_conn_stmt(c, SQ_R_USAGE);
    if (!s) return PR_EIO;
    store_bind_text(s, 1, user);
    int rc = sqlite3_step(s);
    sqlite3_int64 n = 0, bytes = 0;
    if (rc == SQLITE_ROW) {
        n = sqlite3_column_int64(s, 0);
        bytes = sqlite3_column_int64(s, 1);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return PR_EIO; /* DONE: no mail yet */
    if (messages_r) *messages_r = (apr_uint32_t)(n > 0 ? n : 0);
    if (bytes_r) *bytes_r = (apr_off_t)(bytes > 0 ? bytes : 0);
    return APR_SUCCESS;
}

apr_status_t store_queue_count(store_reader_t *r, apr_uint32_t *count_r)
{
    sqlite3_stmt *s = store_conn_stmt(&r->c, SQ_R_QCOUNT);
    if (!s) return PR_EIO;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) *count_r = (apr_uint32_t)sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    return rc == SQLITE_ROW ? APR_SUCCESS : PR_EIO;
}

/* ---- Streams */

apr_status_t store_message_open(store_stream_t **s_r, store_reader_t *r, const char *user,
                                const char *folder, apr_uint32_t uid, apr_pool_t *pool)
{
    sqlite3_stmt *s = store_conn_stmt(&r->c, SQ_R_MSG_OPEN);
    if (!s) return PR_EIO;
    store_bind_text(s, 1, user);
    store_bind_text(s, 2, store_folder_norm(folder));
    sqlite3_bind_int64(s, 3, uid);
    return store_stream_open_row(s_r, r, s, pool);
}

apr_status_t store_stream_open_row(store_stream_t **s_r, store_reader_t *r, sqlite3_stmt *s,
                                   apr_pool_t *pool)
{
    int rc = sqlite3_step(s);
    store_stream_t *m = NULL;
    if (rc == SQLITE_ROW) {
        m = apr_pcalloc(pool, sizeof(*m));
        m->r = r;
        m->prefix_len = (apr_size_t)sqlite3_column_bytes(s, 0);
        m->prefix = apr_pmemdup(pool, sqlite3_column_blob(s, 0), m->prefix_len);
        m->body_id = sqlite3_column_int64(s, 1);
        m->body_size = (apr_off_t)sqlite3_column_int64(s, 2);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW) return rc == SQLITE_DONE ? PR_ENOTFOUND : PR_EIO;
    *s_r = m;
    return APR_SUCCESS;
}

apr_off_t store_stream_size(const store_stream_t *s)
{
    return (apr_off_t)s->prefix_len + s->body_size;
}

apr_status_t store_stream_read(store_stream_t *s, char *buf, apr_size_t *len)
{
    apr_size_t want = *len, got = 0;
    *len = 0;
    if (s->pos >= store_stream_size(s)) return APR_EOF;

    if (s->pos < (apr_off_t)s->prefix_len) {
        apr_size_t n = s->prefix_len - (apr_size_t)s->pos;
        if (n > want) n = want;
        memcpy(buf, s->prefix + s->pos, n);
        got = n;
        s->pos += (apr_off_t)n;
    }
    apr_off_t off = s->pos - (apr_off_t)s->prefix_len;
    if (got < want && off >= 0 && off < s->body_size) {
        apr_off_t left = s->body_size - off;
        apr_size_t n = want - got;
        if ((apr_off_t)n > left) n = (apr_size_t)left;
        if (n > INT32_MAX) n = INT32_MAX;
        /* Open, read, close: the blob handle is an implicit read transaction,
         * so closing it at once keeps a slow client from pinning a WAL
         * snapshot (which would stop checkpoints and grow the WAL). */
        sqlite3_blob *blob = NULL;
        int rc = sqlite3_blob_open(s->r->c.db, "main", "bodies", "data", s->body_id, 0, &blob);
        if (rc != SQLITE_OK) {
            if (blob) sqlite3_blob_close(blob);
            *len = got;
            /* The message was expunged while being read. */
            return got ? APR_SUCCESS : (rc == SQLITE_ERROR ? PR_ENOTFOUND : PR_EIO);
        }
        if (sqlite3_blob_bytes(blob) != s->body_size) rc = SQLITE_CORRUPT;
        if (rc == SQLITE_OK) rc = sqlite3_blob_read(blob, buf + got, (int)n, (int)off);
        sqlite3_blob_close(blob);
        if (rc != SQLITE_OK) {
            *len = got;
            return got ? APR_SUCCESS : PR_EIO;
        }
        got += n;
        s->pos += (apr_off_t)n;
    }
    *len = got;
    return APR_SUCCESS;
}
