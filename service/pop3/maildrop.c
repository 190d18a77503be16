/* The maildrop shared by POP3 and POP2: an exclusive in-memory lock per user,
 * the INBOX as listed at login, deletion marks, and the UPDATE state's one
 * durable expunge. */
#include "service/core/status.h"
#include "service/pop3/pop3_int.h"

#include <apr_strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int maildrop_lock(pop3_server_t *srv, const char *user)
{
    int ok = 0;
    apr_thread_mutex_lock(srv->lock_mu);
    if (!apr_hash_get(srv->locked, user, APR_HASH_KEY_STRING)) {
        char *key = strdup(user);
        if (key) {
            apr_hash_set(srv->locked, key, APR_HASH_KEY_STRING, key);
            ok = 1;
        }
    }
    apr_thread_mutex_unlock(srv->lock_mu);
    return ok;
}

static void maildrop_unlock(pop3_server_t *srv, const char *user)
{
    apr_thread_mutex_lock(srv->lock_mu);
    char *key = apr_hash_get(srv->locked, user, APR_HASH_KEY_STRING);
    if (key) {
        apr_hash_set(srv->locked, key, APR_HASH_KEY_STRING, NULL);
        free(key);
    }
    apr_thread_mutex_unlock(srv->lock_mu);
}

static apr_status_t maildrop_cleanup(void *data)
{
    pop3_maildrop_close(data);
    return APR_SUCCESS;
}

apr_status_t pop3_maildrop_open(pop3_maildrop_t **m_r, pop3_server_t *srv, const char *user,
                                apr_pool_t *pool)
{
    if (!maildrop_lock(srv, user)) return PR_EBUSY;
    pop3_maildrop_t *m = apr_pcalloc(pool, sizeof(*m));
    m->srv = srv;
    m->user = apr_pstrdup(pool, user);
    apr_pool_cleanup_register(pool, m, maildrop_cleanup, apr_pool_cleanup_null);

    apr_status_t st = store_reader_open(&m->reader, srv->store, pool);
    if (st != APR_SUCCESS) {
        pop3_maildrop_close(m);
        return st;
    }
    store_folder_info_t info;
    apr_array_header_t *msgs = NULL;
    st = store_messages_list(m->reader, user, "INBOX", &info, &msgs, pool);
    if (st == PR_ENOTFOUND) { /* no mail has ever arrived: an empty maildrop */
        msgs = NULL;
        info.uidvalidity = 0;
    } else if (st != APR_SUCCESS) {
        pop3_maildrop_close(m);
        return st;
    }
    m->uidvalidity = info.uidvalidity;
    m->n = msgs ? msgs->nelts : 0;
    m->msg = msgs ? (const store_msg_info_t *)msgs->elts : NULL;
    m->deleted = apr_pcalloc(pool, (apr_size_t)m->n + 1);
    for (int i = 0; i < m->n; i++)
        m->size += m->msg[i].size;
    m->size_kept = m->size;
    *m_r = m;
    return APR_SUCCESS;
}

const store_msg_info_t *pop3_maildrop_get(const pop3_maildrop_t *m, int msgno)
{
    if (msgno < 1 || msgno > m->n || m->deleted[msgno - 1]) return NULL;
    return &m->msg[msgno - 1];
}

apr_status_t pop3_maildrop_delete(pop3_maildrop_t *m, int msgno)
{
    if (msgno < 1 || msgno > m->n) return PR_ENOTFOUND;
    if (m->deleted[msgno - 1]) return PR_EEXIST;
    m->deleted[msgno - 1] = 1;
    m->n_deleted++;
    m->size_kept -= m->msg[msgno - 1].size;
    return APR_SUCCESS;
}

void pop3_maildrop_undelete_all(pop3_maildrop_t *m)
{
    memset(m->deleted, 0, (apr_size_t)m->n);
    m->n_deleted = 0;
    m->size_kept = m->size;
}

const char *pop3_maildrop_uidl(const pop3_maildrop_t *m, int msgno, char buf[32])
{
    snprintf(buf, 32, "%u.%u", (unsigned)m->uidvalidity, (unsigned)m->msg[msgno - 1].uid);
    return buf;
}

apr_status_t pop3_maildrop_commit(pop3_maildrop_t *m)
{
    if (m->n_deleted == 0) return APR_SUCCESS;
    apr_uint32_t *uids = malloc(sizeof(*uids) * (apr_size_t)m->n_deleted);
    if (!uids) return PR_EIO;
    int k = 0;
    for (int i = 0; i < m->n; i++)
        if (m->deleted[i]) uids[k++] = m->msg[i].uid;
    apr_status_t st = store_messages_expunge(m->srv->store, m->user, "INBOX", uids, k);
    free(uids);
    return st;
}

apr_status_t pop3_maildrop_stream(pop3_maildrop_t *m, int msgno, store_stream_t **s_r,
                                  apr_pool_t *pool)
{
    if (msgno < 1 || msgno > m->n) return PR_ENOTFOUND;
    return store_message_open(s_r, m->reader, m->user, "INBOX", m->msg[msgno - 1].uid, pool);
}

void pop3_maildrop_close(pop3_maildrop_t *m)
{
    if (!m->srv) return;
    maildrop_unlock(m->srv, m->user);
    m->srv = NULL;
}
