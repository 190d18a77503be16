/* Inside service/pop3: the server object and the maildrop shared by the POP3
 * and POP2 sessions. Not a face: only pop3/ includes it. */
#ifndef PR_POP3_INT_H
#define PR_POP3_INT_H

#include "service/core/penalty.h"
#include "service/pop3/pop3.h"

#include <apr_hash.h>
#include <apr_thread_mutex.h>

struct pop3_server_t {
    apr_pool_t *pool;
    const pr_config_t *cfg;
    dir_t *dir;
    store_t *store;
    pr_tls_t *tls;
    pr_penalty_t *penalty; /* failed logins per client address */
    pop3_service_t services[3];
    /* Maildrop locks (RFC 1939 4: exclusive access). In the daemon's memory
     * only, so no stale lock survives a restart or kill -9; a session's lock
     * goes when its connection does. */
    apr_thread_mutex_t *lock_mu;
    apr_hash_t *locked; /* user -> (void*)1; keys malloc'ed */
};

/* A locked maildrop: the INBOX as it was at login (RFC 1939 numbers the
 * messages 1..n for the whole session), with the deletion marks. */
typedef struct pop3_maildrop_t {
    pop3_server_t *srv;
    const char *user;            /* canonical address */
    store_reader_t *reader;      /* the session's read connection */
    apr_uint32_t uidvalidity;    /* 0: the user has no INBOX yet */
    int n;                       /* messages 1..n */
    const store_msg_info_t *msg; /* msg[i] is message i + 1 */
    unsigned char *deleted;      /* deleted[i]: DELE'd in this session */
    int n_deleted;
    apr_off_t size;      /* octets of all messages (exact, CRLF, unstuffed) */
    apr_off_t size_kept; /* octets of those not deleted */
} pop3_maildrop_t;

/* Lock the user's maildrop and read its INBOX. PR_EBUSY: another session
 * holds it ([IN-USE]); PR_EIO/PR_ETEMPFAIL: store trouble ([SYS/TEMP]). The
 * lock is released by pop3_maildrop_close or when pool is destroyed. */
apr_status_t pop3_maildrop_open(pop3_maildrop_t **m_r, pop3_server_t *srv, const char *user,
                                apr_pool_t *pool);
/* Mark / unmark. Numbers are 1-based; out of range or already deleted gives
 * PR_ENOTFOUND / PR_EEXIST. */
apr_status_t pop3_maildrop_delete(pop3_maildrop_t *m, int msgno);
void pop3_maildrop_undelete_all(pop3_maildrop_t *m);
/* A message that exists and is not deleted (1-based), else NULL. */
const store_msg_info_t *pop3_maildrop_get(const pop3_maildrop_t *m, int msgno);
/* The UIDL of a message: unique and stable forever for a message in this
 * mailbox, and the same identity IMAP uses: "<UIDVALIDITY>.<UID>" in
 * decimal (RFC 1939 7: 1..70 characters in 0x21..0x7E). */
const char *pop3_maildrop_uidl(const pop3_maildrop_t *m, int msgno, char buf[32]);
/* The UPDATE state: expunge the deleted messages in one durable transaction.
 * APR_SUCCESS, or an error (nothing deleted: [SYS/TEMP]). */
apr_status_t pop3_maildrop_commit(pop3_maildrop_t *m);
/* Release the lock (idempotent; also done by the pool cleanup). */
void pop3_maildrop_close(pop3_maildrop_t *m);

/* Open a message for sending: its exact bytes (prefix + body) in chunks. */
apr_status_t pop3_maildrop_stream(pop3_maildrop_t *m, int msgno, store_stream_t **s_r,
                                  apr_pool_t *pool);

#endif
