/* Private to service/store/: the structures shared by the store's files
 * (connections and their statement caches, the writer's request queue, the
 * spooled body). Nothing here may be included from outside this folder: the
 * face (store.h) hides SQLite. */
#ifndef PR_STORE_INT_H
#define PR_STORE_INT_H

#include "service/core/fiber.h"
#include "service/store/store.h"

#include <apr_file_io.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>
#include <sqlite3.h>

/* Long enough to ride out a CLI transaction or a checkpoint, short enough
 * that a wedged peer turns into a temporary failure instead of a hang. */
#define STORE_BUSY_TIMEOUT_MS 10000
#define STORE_DEFAULT_SPOOL_LIMIT (256 * 1024)
#define STORE_DEFAULT_GROUP_MAX 256
/* Chunk for copying a spilled body into its blob, and the spill file's
 * write buffer (SMTP appends a line at a time). */
#define STORE_COPY_CHUNK (64 * 1024)

/* Statements cached on a connection; prepared on first use, reset after
 * every use so no connection ever holds a read transaction open. */
typedef enum {
    /* writer */
    SQ_BEGIN,
    SQ_COMMIT,
    SQ_ROLLBACK,
    SQ_SAVEPOINT,
    SQ_RELEASE,
    SQ_ROLLBACK_TO,
    SQ_BODY_INSERT,
    SQ_BODY_INSERT_ZERO,
    SQ_MBOX_BUMP,
    SQ_MBOX_CREATE,
    SQ_META_GET,
    SQ_META_SET,
    SQ_MSG_INSERT,
    SQ_QMSG_INSERT,
    SQ_QRCPT_INSERT,
    SQ_MBOX_TOUCH,
    SQ_MSG_FLAGS,
    SQ_MSG_DELETE,
    SQ_BODY_GC,
    SQ_QRCPT_UPDATE,
    SQ_QMSG_PENDING,
    SQ_QMSG_DELETE,
    SQ_QRCPT_DELETE_MSG,
    SQ_QRETRY,
    SQ_QRETRY_DOMAIN,
    /* readers */
    SQ_R_BEGIN,
    SQ_R_COMMIT,
    SQ_R_FOLDERS,
    SQ_R_MBOX,
    SQ_R_MSGS,
    SQ_R_MSG_OPEN,
    SQ_R_USAGE,
    SQ_R_QCOUNT,
    SQ_R_QDUE,
    SQ_R_QNEXT,
    SQ_R_QLIST,
    SQ_R_QOPEN,
    SQ__COUNT
} store_sq_t;

typedef struct store_conn_t {
    sqlite3 *db;
    sqlite3_stmt *stmt[SQ__COUNT];
} store_conn_t;

/* Reader connections are kept for reuse: opening one (file, schema, the
 * statements) costs far more than a POP3 login or an SMTP quota check. */
#define STORE_IDLE_READERS_MAX 64

typedef struct store_idle_conn_t {
    struct store_idle_conn_t *next;
    store_conn_t c;
} store_idle_conn_t;

struct store_body_t {
    store_t *st;
    apr_pool_t *pool;
    char *mem; /* malloc'd, freed by a pool cleanup */
    apr_size_t mem_len, mem_cap;
    apr_pool_t *fpool; /* holds the spill file; cleared on reset */
    char *fbuf;        /* the spill file's write buffer, kept across resets */
    apr_file_t *file;  /* spill file, deleted on close */
    int file_moved;    /* a delivery read the file: seek to its end before appending */
    apr_off_t size;
};

typedef enum {
    STORE_REQ_DELIVER,
    STORE_REQ_FLAGS,
    STORE_REQ_EXPUNGE,
    STORE_REQ_QUPDATE,
    STORE_REQ_QRETRY,
    STORE_REQ_QDELETE,
} store_req_kind_t;

/* A condition a requester sleeps on, so the writer wakes exactly the
 * requesters whose commit is done (not every waiting thread). Kept on a free
 * list in the store; there are never more than concurrent requesters. */
typedef struct store_waiter_t {
    struct store_waiter_t *next;
    apr_thread_cond_t *cond;
} store_waiter_t;

/* One write request; lives on the requester's stack while it waits. */
typedef struct store_req_t {
    struct store_req_t *next;
    store_req_kind_t kind;
    const store_delivery_t *d;
    apr_uint32_t *uids; /* n_local slots, filled by the writer */
    const char *user, *folder;
    apr_uint32_t uid, flags;
    const apr_uint32_t *uid_list;
    int n_uids;
    const store_qresult_t *qres; /* STORE_REQ_QUPDATE */
    int n_qres;
    const store_delivery_t *bounces;
    int n_bounces;
    apr_int64_t qid;    /* STORE_REQ_QRETRY, _QDELETE */
    const char *domain; /* STORE_REQ_QRETRY: only this domain's recipients */
    apr_status_t status;
    /* Set by the writer when status is final: under the store's mutex for a
     * thread, atomically (release; the fiber reads it acquire, without the
     * mutex) for a fiber. */
    int done;
    store_waiter_t *waiter; /* a thread waits here, or */
    pr_fiber_ref_t fiber;   /* a fiber (waiter NULL) */
} store_req_t;

struct store_t {
    apr_pool_t *pool;
    store_options_t opts;
    const char *db_path;
    const char *spool_dir;
    store_conn_t w; /* write connection: the writer thread's, or the caller's without one */
    char *copy_buf; /* STORE_COPY_CHUNK, used only under the write side */
    /* store_check_space's last answer while space was plentiful: any need
     * up to space_ok_need is met until space_ok_until. */
    volatile apr_uint64_t space_ok_until, space_ok_need;

    apr_thread_mutex_t *mu;      /* guards queue, flags and stats */
    apr_thread_cond_t *work;     /* writer waits for requests */
    store_waiter_t *waiters;     /* free list; requesters wait for their commit */
    apr_pool_t *waiter_pool;     /* the waiters' memory; used only under mu */
    apr_thread_mutex_t *sync_mu; /* serialises writes without a writer thread */
    apr_thread_t *writer;
    store_req_t *head, *tail;
    int queued;  /* requests in head..tail */
    int wake_at; /* the writer waits until queued reaches this (0: it is busy) */
    int stopping, closed;
    store_stats_t stats;

    apr_thread_mutex_t *readers_mu;  /* guards idle_readers, n_idle_readers */
    store_idle_conn_t *idle_readers; /* malloc'ed */
    int n_idle_readers;
    apr_uint64_t reader_opens;
};

struct store_reader_t {
    store_t *st;
    store_conn_t c;
};

/* A stored message (a mailbox's or the queue's) being read. */
struct store_stream_t {
    store_reader_t *r;
    const char *prefix; /* small: header lines, copied at open */
    apr_size_t prefix_len;
    sqlite3_int64 body_id;
    apr_off_t body_size;
    apr_off_t pos;
};

/* A stream from statement s (bound, not yet stepped) whose row is
 * (prefix, body_id, body size); the statement is reset. PR_ENOTFOUND. */
apr_status_t store_stream_open_row(store_stream_t **s_r, store_reader_t *r, sqlite3_stmt *s,
                                   apr_pool_t *pool);

/* Canonical folder name: NULL and any case of "INBOX" become "INBOX". */
const char *store_folder_norm(const char *folder);

/* Connections (store.c). */
apr_status_t store_conn_open(store_conn_t *c, const char *path, int create);
void store_conn_close(store_conn_t *c);
/* The cached statement for q, reset and with bindings cleared; NULL on error. */
sqlite3_stmt *store_conn_stmt(store_conn_t *c, store_sq_t q);

/* Schema (schema.c): creates or migrates the database under c. */
apr_status_t store_schema_migrate(store_conn_t *c);

/* Writer (writer.c). */
apr_status_t store_writer_start(store_t *st);
void store_writer_stop(store_t *st);
apr_status_t store_writer_submit(store_t *st, store_req_t *req);

/* Writer steps shared by writer.c and queue.c, inside the writer's
 * transaction. */
apr_status_t store_apply_deliver_one(store_t *st, const store_delivery_t *d, apr_uint32_t *uids);
/* A user's running totals (store_user_usage), on any connection: the
 * writer's reads them inside its transaction. */
apr_status_t store_conn_usage(store_conn_t *c, const char *user, apr_uint32_t *messages_r,
                              apr_off_t *bytes_r);
apr_status_t store_body_gc(store_t *st, sqlite3_int64 body_id);
apr_status_t store_apply_qupdate(store_t *st, store_req_t *r);
apr_status_t store_apply_qretry(store_t *st, store_req_t *r);
apr_status_t store_apply_qdelete(store_t *st, store_req_t *r);

/* Body (body.c): copy the body into blob row body_id of the write connection. */
apr_status_t store_body_insert(store_t *st, store_body_t *b, sqlite3_int64 *body_id_r);

#endif
