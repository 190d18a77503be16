/* The mailbox store's face: durable delivery (group commit), mailboxes with
 * UIDVALIDITY/UIDNEXT, per-message UID, flags, internal date, size, modseq,
 * chunked message streams, and the outbound queue. It hides its backend
 * (SQLite today): no SQL or sqlite3 type crosses this header. Thread-safe:
 * store_deliver may be called from any thread; each reader belongs to one
 * thread at a time. */
#ifndef PR_STORE_H
#define PR_STORE_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>

typedef struct store_t store_t;

typedef struct store_options_t {
    const char *data_dir;          /* database and spool live here (created if missing) */
    apr_size_t spool_memory_limit; /* bodies up to this stay in memory; 0 = 256 KiB */
    int group_commit_max;          /* max deliveries per transaction; 0 = 256 */
    int no_writer;                 /* 1 = no writer thread (CLI): writes are synchronous */
} store_options_t;

/* Open (create, migrate) the store and start its writer thread. */
apr_status_t store_open(store_t **st_r, const store_options_t *opts, apr_pool_t *pool);
/* Drain pending deliveries, stop the writer, close everything. Idempotent. */
void store_close(store_t *st);

/* PR_ENOSPACE when the file system holding data_dir has less than need bytes free. */
apr_status_t store_check_space(store_t *st, apr_off_t need);

/* ---- A body being received. Bounded memory: past spool_memory_limit it
 * spills to a file under data_dir/spool, removed with the pool or on discard. */
typedef struct store_body_t store_body_t;
apr_status_t store_body_create(store_body_t **b_r, store_t *st, apr_pool_t *pool);
apr_status_t store_body_append(store_body_t *b, const void *data, apr_size_t len);
apr_off_t store_body_size(const store_body_t *b);
/* Empty it again (RSET / refused message). */
void store_body_reset(store_body_t *b);

/* ---- Delivery: everything in one transaction, durable before return. */
typedef struct store_local_rcpt_t {
    const char *user;   /* mailbox owner: canonical address, lower case */
    const char *folder; /* NULL: "INBOX" */
    const char *prefix; /* per-delivery header lines (Return-Path, Received, ...) */
    apr_size_t prefix_len;
    /* The owner's quota in bytes, 0: none. The copy is over it if the
     * owner's usage (all folders) plus the copy's size passes it; the usage
     * is read inside the delivery's own transaction, so deliveries committed
     * together see each other. */
    apr_off_t quota;
} store_local_rcpt_t;

/* RFC 3461 DSN requests kept with a queued recipient. notify 0: none
 * given (the default: failures and delays are reported). */
enum { STORE_NOTIFY_SUCCESS = 1, STORE_NOTIFY_FAILURE = 2, STORE_NOTIFY_DELAY = 4,
       STORE_NOTIFY_NEVER = 8 };
typedef struct store_rcpt_dsn_t {
    unsigned notify;   /* STORE_NOTIFY_* */
    const char *orcpt; /* ORCPT as given ("rfc822;addr", xtext decoded), or NULL */
} store_rcpt_dsn_t;

/* RET (RFC 3461 4.3): what a bounce carries of the message. */
typedef enum { STORE_RET_DEFAULT = 0, STORE_RET_FULL, STORE_RET_HDRS } store_ret_e;
/* What a relayed body needs of the next hop. */
enum { STORE_BODY_8BIT = 1, STORE_BODY_SMTPUTF8 = 2 };

typedef struct store_delivery_t {
    const char *sender; /* envelope sender, "" for <> */
    store_body_t *body; /* stored once however many recipients */
    int n_local;
    const store_local_rcpt_t *local;
    int n_remote;              /* recipients to relay: queued */
    const char *const *remote; /* their addresses */
    const store_rcpt_dsn_t *remote_dsn; /* n_remote entries, or NULL: none */
    const char *remote_prefix; /* header lines prepended for the relayed copy */
    apr_size_t remote_prefix_len;
    const char *remote_sender; /* the queued copy's envelope sender (SRS), or NULL: sender */
    const char *envid;   /* ENVID, or NULL */
    store_ret_e ret;
    unsigned body_flags; /* STORE_BODY_* */
    /* Quotas: over (may be NULL) gets a flag per local copy, 1 if over its
     * quota. With refuse_over, a delivery whose every local copy is over,
     * and which relays nothing, stores nothing and fails with PR_EQUOTA. */
    int *over;
    int refuse_over;
} store_delivery_t;

/* Blocks until the transaction holding the message is durable (fsynced).
 * APR_SUCCESS: durable. PR_EIO: the commit failed, nothing was stored.
 * On success *ids_r (may be NULL) gets the new message UID per local
 * recipient (apr_uint32_t, same order). The body may be reused after return. */
apr_status_t store_deliver(store_t *st, const store_delivery_t *d, apr_array_header_t **uids_r,
                           apr_pool_t *pool);

/* Counters for benchmarks and the console. */
typedef struct store_stats_t {
    apr_uint64_t deliveries;   /* committed deliveries */
    apr_uint64_t commits;      /* committed write transactions (each one WAL fsync) */
    apr_uint64_t reader_opens; /* read connections opened (not reused) */
    apr_uint32_t idle_readers; /* read connections kept for reuse now */
} store_stats_t;
void store_stats_get(store_t *st, store_stats_t *out);

/* ---- Reading. A reader is a read connection; open one per session/thread.
 * Cheap: connections are reused (the pool's cleanup hands it back). A
 * reader's pool must be destroyed before the store is closed, or be a
 * descendant of the store's pool. */
typedef struct store_reader_t store_reader_t;
apr_status_t store_reader_open(store_reader_t **r_r, store_t *st, apr_pool_t *pool);

typedef struct store_folder_info_t {
    const char *name;
    apr_uint32_t uidvalidity;
    apr_uint32_t uidnext;
    apr_uint64_t highestmodseq;
    apr_uint32_t messages;
    apr_off_t size; /* sum of message sizes (prefix + body) */
} store_folder_info_t;

/* All folders of a user (array of store_folder_info_t), INBOX first. A user
 * with no mail yet has an empty array. */
apr_status_t store_folders_list(store_reader_t *r, const char *user, apr_array_header_t **folders_r,
                                apr_pool_t *pool);

/* Message flags (IMAP system flags). */
enum {
    STORE_FLAG_SEEN = 1,
    STORE_FLAG_ANSWERED = 2,
    STORE_FLAG_FLAGGED = 4,
    STORE_FLAG_DELETED = 8,
    STORE_FLAG_DRAFT = 16,
};

/* Replace a message's flags (STORE_FLAG_*), bumping its MODSEQ and the
 * folder's HIGHESTMODSEQ. Goes through the writer; returns once durable.
 * folder NULL: "INBOX". PR_ENOTFOUND if the folder or message is missing. */
apr_status_t store_message_flags_set(store_t *st, const char *user, const char *folder,
                                     apr_uint32_t uid, apr_uint32_t flags);

/* Remove messages by UID in one durable transaction (POP3 QUIT, IMAP
 * EXPUNGE); bodies no longer referenced by any message or queue entry go
 * too. UIDs not present are ignored; UIDs are never reused. folder NULL:
 * "INBOX". PR_ENOTFOUND if the folder does not exist. */
apr_status_t store_messages_expunge(store_t *st, const char *user, const char *folder,
                                    const apr_uint32_t *uids, int n);

typedef struct store_msg_info_t {
    apr_uint32_t uid;
    apr_off_t size; /* exact octets of prefix + body */
    apr_uint32_t flags;
    apr_time_t internaldate;
    apr_uint64_t modseq;
} store_msg_info_t;

/* The messages of a folder in UID order (array of store_msg_info_t), plus the
 * folder's info. PR_ENOTFOUND if the folder does not exist. */
apr_status_t store_messages_list(store_reader_t *r, const char *user, const char *folder,
                                 store_folder_info_t *info_r, apr_array_header_t **msgs_r,
                                 apr_pool_t *pool);

/* A message as stored (prefix then body), read in chunks; each read is its
 * own short read transaction so a slow client never pins a WAL snapshot. */
typedef struct store_stream_t store_stream_t;
apr_status_t store_message_open(store_stream_t **s_r, store_reader_t *r, const char *user,
                                const char *folder, apr_uint32_t uid, apr_pool_t *pool);
apr_off_t store_stream_size(const store_stream_t *s);
/* Reads up to *len bytes; *len = bytes read; APR_EOF once nothing is left. */
apr_status_t store_stream_read(store_stream_t *s, char *buf, apr_size_t *len);

/* Total usage of a user over all folders (messages; bytes of prefix + body,
 * as store_msg_info_t.size): running totals kept in the same transaction as
 * every delivery and expunge, so this is O(1) and fit for the SMTP hot path
 * (quota checks). A user without mail has 0, 0. */
apr_status_t store_user_usage(store_reader_t *r, const char *user, apr_uint32_t *messages_r,
                              apr_off_t *bytes_r);

/* ---- The outbound queue: relayed recipients, queued in the transaction
 * that accepted the message (store_deliver), with per-recipient state. A
 * message leaves the queue, with its body when nothing else holds it, once
 * no recipient of it is pending. */

/* Count of queued (relay) recipients not yet delivered. */
apr_status_t store_queue_count(store_reader_t *r, apr_uint32_t *count_r);

typedef enum { STORE_Q_PENDING = 0, STORE_Q_DELIVERED = 1, STORE_Q_FAILED = 2 } store_qstate_e;

typedef struct store_qrcpt_t {
    apr_int64_t id;
    const char *address;
    store_qstate_e state;
    int attempts;
    apr_time_t next_attempt;
    const char *last_reply; /* "" before the first attempt */
    store_rcpt_dsn_t dsn;
    int warned; /* a delay DSN was sent */
} store_qrcpt_t;

typedef struct store_qmsg_t {
    apr_int64_t id;
    const char *sender; /* "" for <> */
    apr_time_t created;
    apr_off_t size; /* prefix + body */
    const char *envid; /* "" if none */
    store_ret_e ret;
    unsigned body_flags;
    apr_array_header_t *rcpts; /* store_qrcpt_t */
} store_qmsg_t;

/* Messages with pending recipients due by now (next_attempt <= now), each
 * with its due recipients only, the longest-waiting first; at most max
 * recipients in all, and only those after the cursor (next_attempt, id)
 * (0, 0: from the start), so a reader can page through a long queue whose
 * first rows are under way already. Array of store_qmsg_t*. */
typedef struct store_qcursor_t {
    apr_time_t next_attempt;
    apr_int64_t id;
} store_qcursor_t;
apr_status_t store_queue_due(store_reader_t *r, apr_time_t now, const store_qcursor_t *after,
                             int max, apr_array_header_t **msgs_r, apr_pool_t *pool);
/* When the next pending recipient is due; 0 if none is pending. */
apr_status_t store_queue_next(store_reader_t *r, apr_time_t *t_r);
/* The queue as it is (every recipient, any state), oldest message first;
 * id 0: every message, else that one (PR_ENOTFOUND). store_qmsg_t*. */
apr_status_t store_queue_list(store_reader_t *r, apr_int64_t id, apr_array_header_t **msgs_r,
                              apr_pool_t *pool);
/* A queued message (prefix then body) as a stream; PR_ENOTFOUND. */
apr_status_t store_queue_open(store_stream_t **s_r, store_reader_t *r, apr_int64_t id,
                              apr_pool_t *pool);

/* The outcome of an attempt for one recipient. */
typedef struct store_qresult_t {
    apr_int64_t rcpt_id;
    store_qstate_e state;
    apr_time_t next_attempt; /* when pending */
    const char *reply;       /* the peer's reply or our reason; kept as last_reply */
    int attempted;           /* 1: counts as an attempt (0: e.g. only a warning sent) */
    int warned;
} store_qresult_t;

/* Record outcomes and, in the same durable transaction, deliver the DSNs
 * they cause (bounce: NULL or n_bounce deliveries), so a crash can neither
 * lose a bounce nor send one twice. Finished messages leave the queue.
 * Unknown recipient ids are ignored (deleted meanwhile by an admin). */
apr_status_t store_queue_update(store_t *st, const store_qresult_t *res, int n,
                                const store_delivery_t *bounce, int n_bounce);
/* Admin: make pending recipients due now: of message id, or all (id 0).
 * PR_ENOTFOUND if id names no queued message. */
apr_status_t store_queue_retry(store_t *st, apr_int64_t id);
/* ETRN (RFC 1985): make the pending recipients in domain due now. */
apr_status_t store_queue_retry_domain(store_t *st, const char *domain);
/* Admin: remove a message from the queue, without a bounce. PR_ENOTFOUND. */
apr_status_t store_queue_delete(store_t *st, apr_int64_t id);

#endif
