/* The store's side of the outbound queue: reading due recipients and whole
 * queued messages (readers), and recording delivery outcomes, retries and
 * deletions through the writer, each in one durable transaction. The
 * bounces an outcome causes are delivered in that same transaction, so a
 * crash can neither lose one nor send it twice. */
#include "service/core/status.h"
#include "service/store/store_int.h"

#include <apr_hash.h>
#include <apr_strings.h>
#include <stdlib.h>
#include <string.h>

/* ---- reading */

static const char *store_col_text(sqlite3_stmt *s, int i, apr_pool_t *pool)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return apr_pstrdup(pool, t ? (const char *)t : "");
}

/* Rows of SQ_R_QDUE / SQ_R_QLIST into messages, in row order. */
static apr_status_t store_queue_rows(sqlite3_stmt *s, apr_array_header_t **msgs_r,
                                     apr_pool_t *pool)
{
    apr_array_header_t *msgs = apr_array_make(pool, 8, sizeof(store_qmsg_t *));
    apr_hash_t *by_id = apr_hash_make(pool);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        apr_int64_t id = sqlite3_column_int64(s, 0);
        store_qmsg_t *m = apr_hash_get(by_id, &id, sizeof(id));
        if (!m) {
            m = apr_pcalloc(pool, sizeof(*m));
            m->id = id;
            m->sender = store_col_text(s, 1, pool);
            m->created = sqlite3_column_int64(s, 2);
            m->size = (apr_off_t)sqlite3_column_int64(s, 3);
            m->envid = store_col_text(s, 4, pool);
            m->ret = (store_ret_e)sqlite3_column_int(s, 5);
            m->body_flags = (unsigned)sqlite3_column_int(s, 6);
            m->rcpts = apr_array_make(pool, 2, sizeof(store_qrcpt_t));
            apr_hash_set(by_id, &m->id, sizeof(m->id), m);
            APR_ARRAY_PUSH(msgs, store_qmsg_t *) = m;
        }
        store_qrcpt_t *r = apr_array_push(m->rcpts);
        memset(r, 0, sizeof(*r));
        r->id = sqlite3_column_int64(s, 7);
        r->address = store_col_text(s, 8, pool);
        r->state = (store_qstate_e)sqlite3_column_int(s, 9);
        r->attempts = sqlite3_column_int(s, 10);
        r->next_attempt = sqlite3_column_int64(s, 11);
        r->last_reply = store_col_text(s, 12, pool);
        r->dsn.notify = (unsigned)sqlite3_column_int(s, 13);
        const char *orcpt = store_col_text(s, 14, pool);
        r->dsn.orcpt = *orcpt ? orcpt : NULL;
        r->warned = sqlite3_column_int(s, 15);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return PR_EIO;
    *msgs_r = msgs;
    return APR_SUCCESS;
}

apr_status_t store_queue_due(store_reader_t *r, apr_time_t now, const store_qcursor_t *after,
                             int max, apr_array_header_t **msgs_r, apr_pool_t *pool)
{
    sqlite3_stmt *s = store_conn_stmt(&r->c, SQ_R_QDUE);
    if (!s) return PR_EIO;
    sqlite3_bind_int64(s, 1, now);
    sqlite3_bind_int(s, 2, max > 0 ? max : 1);
    sqlite3_bind_int64(s, 3, after ? after->next_attempt : 0);
    sqlite3_bind_int64(s, 4, after ? after->id : 0);
    return store_queue_rows(s, msgs_r, pool);
}

apr_status_t store_queue_next(store_reader_t *r, apr_time_t *t_r)
{
    sqlite3_stmt *s = store_conn_stmt(&r->c, SQ_R_QNEXT);
    if (!s) return PR_EIO;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) *t_r = sqlite3_column_int64(s, 0); /* NULL reads as 0 */
    sqlite3_reset(s);
    return rc == SQLITE_ROW ? APR_SUCCESS : PR_EIO;
}

apr_status_t store_queue_list(store_reader_t *r, apr_int64_t id, apr_array_header_t **msgs_r,
                              apr_pool_t *pool)
{
    sqlite3_stmt *s = store_conn_stmt(&r->c, SQ_R_QLIST);
    if (!s) return PR_EIO;
    sqlite3_bind_int64(s, 1, id);
    apr_status_t st = store_queue_rows(s, msgs_r, pool);
    if (st == APR_SUCCESS && id && (*msgs_r)->nelts == 0) st = PR_ENOTFOUND;
    return st;
}

apr_status_t store_queue_open(store_stream_t **s_r, store_reader_t *r, apr_int64_t id,
                              apr_pool_t *pool)
{
    sqlite3_stmt *s = store_conn_stmt(&r->c, SQ_R_QOPEN);
    if (!s) return PR_EIO;
    sqlite3_bind_int64(s, 1, id);
    return store_stream_open_row(s_r, r, s, pool);
}

/* ---- writing (inside the writer's transaction) */

/* Drop message qid with its recipients, and its body unless still held. */
static apr_status_t store_qmsg_remove(store_t *st, sqlite3_int64 qid, int *found_r)
{
    sqlite3_stmt *s = store_conn_stmt(&st->w, SQ_QRCPT_DELETE_MSG);
    if (!s) return PR_EIO;
    sqlite3_bind_int64(s, 1, qid);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return PR_EIO;
    if (!(s = store_conn_stmt(&st->w, SQ_QMSG_DELETE))) return PR_EIO;
    sqlite3_bind_int64(s, 1, qid);
    rc = sqlite3_step(s);
    sqlite3_int64 body_id = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (found_r) *found_r = rc == SQLITE_ROW;
    if (rc == SQLITE_DONE) return APR_SUCCESS;
    if (rc != SQLITE_ROW) return PR_EIO;
    return store_body_gc(st, body_id);
}

apr_status_t store_apply_qupdate(store_t *st, store_req_t *r)
{
    apr_status_t rv;
    /* Bounces first: they may share the body with the message about to
     * leave the queue (a DSN carrying it whole is a new body, but keep
     * the order safe anyway). */
    for (int i = 0; i < r->n_bounces; i++)
        if ((rv = store_apply_deliver_one(st, &r->bounces[i], NULL)) != APR_SUCCESS) return rv;
    /* The messages touched, each once (results come grouped by message). */
    sqlite3_int64 *qids = r->n_qres ? malloc(sizeof(*qids) * (apr_size_t)r->n_qres) : NULL;
    int n_qids = 0;
    rv = APR_SUCCESS;
    for (int i = 0; i < r->n_qres && rv == APR_SUCCESS; i++) {
        const store_qresult_t *q = &r->qres[i];
        sqlite3_stmt *s = store_conn_stmt(&st->w, SQ_QRCPT_UPDATE);
        if (!s) {
            rv = PR_EIO;
            break;
        }
        sqlite3_bind_int64(s, 1, q->rcpt_id);
        sqlite3_bind_int(s, 2, (int)q->state);
        sqlite3_bind_int(s, 3, q->attempted ? 1 : 0);
        sqlite3_bind_int64(s, 4, q->next_attempt);
        sqlite3_bind_text(s, 5, q->reply ? q->reply : "", -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 6, q->warned);
        int rc = sqlite3_step(s);
        sqlite3_int64 qid = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        sqlite3_reset(s);
        if (rc == SQLITE_DONE) continue; /* deleted meanwhile */
        if (rc != SQLITE_ROW) rv = PR_EIO;
        else if (n_qids == 0 || qids[n_qids - 1] != qid)
            qids[n_qids++] = qid;
    }
    /* Once every outcome is in: a message with nothing pending leaves. */
    for (int i = 0; i < n_qids && rv == APR_SUCCESS; i++) {
        sqlite3_stmt *s = store_conn_stmt(&st->w, SQ_QMSG_PENDING);
        if (!s) {
            rv = PR_EIO;
            break;
        }
        sqlite3_bind_int64(s, 1, qids[i]);
        int rc = sqlite3_step(s);
        sqlite3_int64 pending = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
        sqlite3_reset(s);
        if (pending < 0)
            rv = PR_EIO;
        else if (pending == 0)
            rv = store_qmsg_remove(st, qids[i], NULL);
    }
    free(qids);
    return rv;
}

apr_status_t store_apply_qretry(store_t *st, store_req_t *r)
{
    sqlite3_stmt *s = store_conn_stmt(&st->w, r->domain ? SQ_QRETRY_DOMAIN : SQ_QRETRY);
    if (!s) return PR_EIO;
    if (r->domain)
        sqlite3_bind_text(s, 1, r->domain, -1, SQLITE_STATIC);
    else
        sqlite3_bind_int64(s, 1, r->qid);
    sqlite3_bind_int64(s, 2, apr_time_now());
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return PR_EIO;
    return r->qid && !r->domain && sqlite3_changes(st->w.db) == 0 ? PR_ENOTFOUND : APR_SUCCESS;
}

apr_status_t store_apply_qdelete(store_t *st, store_req_t *r)
{
    int found = 0;
    apr_status_t rv = store_qmsg_remove(st, r->qid, &found);
    if (rv != APR_SUCCESS) return rv;
    return found ? APR_SUCCESS : PR_ENOTFOUND;
}

/* ---- the face's writes */

apr_status_t store_queue_update(store_t *st, const store_qresult_t *res, int n,
                                const store_delivery_t *bounce, int n_bounce)
{
    if (n < 0 || (n && !res) || n_bounce < 0 || (n_bounce && !bounce)) return PR_EINVAL;
    for (int i = 0; i < n_bounce; i++)
        if (!bounce[i].body || bounce[i].n_local + bounce[i].n_remote == 0) return PR_EINVAL;
    store_req_t req;
    memset(&req, 0, sizeof(req));
    req.kind = STORE_REQ_QUPDATE;
    req.qres = res;
    req.n_qres = n;
    req.bounces = bounce;
    req.n_bounces = n_bounce;
    return store_writer_submit(st, &req);
}

apr_status_t store_queue_retry(store_t *st, apr_int64_t id)
{
    store_req_t req;
    memset(&req, 0, sizeof(req));
    req.kind = STORE_REQ_QRETRY;
    req.qid = id;
    return store_writer_submit(st, &req);
}

apr_status_t store_queue_retry_domain(store_t *st, const char *domain)
{
    if (!domain || !*domain) return PR_EINVAL;
    store_req_t req;
    memset(&req, 0, sizeof(req));
    req.kind = STORE_REQ_QRETRY;
    req.domain = domain;
    return store_writer_submit(st, &req);
}

apr_status_t store_queue_delete(store_t *st, apr_int64_t id)
{
    if (id <= 0) return PR_ENOTFOUND;
    store_req_t req;
    memset(&req, 0, sizeof(req));
    req.kind = STORE_REQ_QDELETE;
    req.qid = id;
    return store_writer_submit(st, &req);
}
