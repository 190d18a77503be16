/* The single writer: one thread owns the write connection and commits every
 * waiting request (delivery, flag change, expunge) in one transaction, each
 * inside its own SAVEPOINT so one failure undoes only itself. With WAL and
 * synchronous=FULL the COMMIT is the fsync, so a group of deliveries costs
 * one fsync, and each requester is woken only once its data is durable (the
 * "250 OK after DATA" rule of RFC 5321 4.1.1.4 / 6.1). Without a writer
 * thread (the CLI) the same code runs in the caller, serialised by a mutex. */
#include "service/core/status.h"
#include "service/store/store_int.h"

#include <string.h>

static apr_status_t store_w_exec(store_t *st, store_sq_t q)
{
    sqlite3_stmt *s = store_conn_stmt(&st->w, q);
    if (!s) return PR_EIO;
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? APR_SUCCESS : PR_EIO;
}

static void store_bind_bytes(sqlite3_stmt *s, int i, const char *p, apr_size_t len)
{
    sqlite3_bind_blob64(s, i, len ? p : "", len, SQLITE_STATIC);
}

/* A UIDVALIDITY for a new mailbox: the clock, but always above every value
 * handed out before, so a folder deleted and re-created (even within one
 * second) never repeats one (RFC 3501 2.3.1.1). */
static apr_status_t store_uidvalidity_next(store_t *st, apr_uint32_t *v_r)
{
    sqlite3_stmt *s = store_conn_stmt(&st->w, SQ_META_GET);
    if (!s) return PR_EIO;
    sqlite3_bind_text(s, 1, "last_uidvalidity", -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    apr_int64_t last = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW) return PR_EIO;

    apr_int64_t v = (apr_int64_t)apr_time_sec(apr_time_now());
    if (v <= last) v = last + 1;
    if (v > 0xffffffffLL) return PR_EIO;
    if (!(s = store_conn_stmt(&st->w, SQ_META_SET))) return PR_EIO;
    sqlite3_bind_text(s, 1, "last_uidvalidity", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, v);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return PR_EIO;
    *v_r = (apr_uint32_t)v;
    return APR_SUCCESS;
}

/* Allocate the next UID and MODSEQ of user's folder, creating the folder on
 * first delivery. One indexed UPDATE on the hot path; uidnext only grows. */
static apr_status_t store_mbox_bump(store_t *st, const char *user, const char *folder,
                                    sqlite3_int64 *id_r, apr_uint32_t *uid_r,
                                    apr_uint64_t *modseq_r)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        sqlite3_stmt *s = store_conn_stmt(&st->w, SQ_MBOX_BUMP);
        if (!s) return PR_EIO;
        sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, folder, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            *id_r = sqlite3_column_int64(s, 0);
            sqlite3_int64 uid = sqlite3_column_int64(s, 1);
            *modseq_r = (apr_uint64_t)sqlite3_column_int64(s, 2);
            sqlite3_reset(s);
            /* RFC 3501: UIDs are 32-bit, non-zero. */
            if (uid < 1 || uid > 0xffffffffLL) return PR_EIO;
            *uid_r = (apr_uint32_t)uid;
            return APR_SUCCESS;
        }
        sqlite3_reset(s);
        if (rc != SQLITE_DONE || attempt) return PR_EIO;

        apr_uint32_t uidvalidity;
        apr_status_t rv = store_uidvalidity_next(st, &uidvalidity);
        if (rv != APR_SUCCESS) return rv;
        if (!(s = store_conn_stmt(&st->w, SQ_MBOX_CREATE))) return PR_EIO;
        sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, folder, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, uidvalidity);
        rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) return PR_EIO;
    }
    return PR_EIO;
}

/* Bump an existing folder's HIGHESTMODSEQ (flag change, expunge). */
static apr_status_t store_mbox_touch(store_t *st, const char *user, const char *folder,
                                     sqlite3_int64 *id_r, apr_uint64_t *modseq_r)
{
    sqlite3_stmt *s = store_conn_stmt(&st->w, SQ_MBOX_TOUCH);
    if (!s) return PR_EIO;
    sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, folder, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *id_r = sqlite3_column_int64(s, 0);
        *modseq_r = (apr_uint64_t)sqlite3_column_int64(s, 1);
    }
    sqlite3_reset(s);
    if (rc == SQLITE_ROW) return APR_SUCCESS;
    return rc == SQLITE_DONE ? PR_ENOTFOUND : PR_EIO;
}

/* Which local copies go over their owners' quotas (see store_delivery_t);
 * PR_EQUOTA if the delivery is to be refused for it. */
static apr_status_t store_deliver_quota(store_t *st, const store_delivery_t *d, apr_off_t body_size)
{
    int n_over = 0;
    for (int i = 0; i < d->n_local; i++) {
        const store_local_rcpt_t *lr = &d->local[i];
        int over = 0;
        if (lr->quota > 0) {
            apr_off_t used;
            apr_status_t rv = store_conn_usage(&st->w, lr->user, NULL, &used);
            if (rv != APR_SUCCESS) return rv;
            over = used + (apr_off_t)lr->prefix_len + body_size > lr->quota;
        }
        if (d->over) d->over[i] = over;
        n_over += over;
    }
    return d->refuse_over && d->n_local > 0 && n_over == d->n_local && d->n_remote == 0
               ? PR_EQUOTA
               : APR_SUCCESS;
}

apr_status_t store_apply_deliver_one(store_t *st, const store_delivery_t *d, apr_uint32_t *uids)
{
    sqlite3_int64 body_id;
    apr_off_t body_size = store_body_size(d->body);
    apr_status_t rv = store_deliver_quota(st, d, body_size);
    if (rv != APR_SUCCESS) return rv;
    if ((rv = store_body_insert(st, d->body, &body_id)) != APR_SUCCESS) return rv;
    apr_time_t now = apr_time_now();

    for (int i = 0; i < d->n_local; i++) {
        const store_local_rcpt_t *lr = &d->local[i];
        sqlite3_int64 mbox_id;
        apr_uint32_t uid;
        apr_uint64_t modseq;
        rv = store_mbox_bump(st, lr->user, store_folder_norm(lr->folder), &mbox_id, &uid, &modseq);
        if (rv != APR_SUCCESS) return rv;
        sqlite3_stmt *s = store_conn_stmt(&st->w, SQ_MSG_INSERT);
        if (!s) return PR_EIO;
        sqlite3_bind_int64(s, 1, mbox_id);
        sqlite3_bind_int64(s, 2, uid);
        sqlite3_bind_int64(s, 3, body_id);
        store_bind_bytes(s, 4, lr->prefix, lr->prefix_len);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)lr->prefix_len + body_size);
        sqlite3_bind_int64(s, 6, now);
        sqlite3_bind_int64(s, 7, (sqlite3_int64)modseq);
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) return PR_EIO;
        if (uids) uids[i] = uid;
    }

    if (d->n_remote > 0) {
        sqlite3_stmt *s = store_conn_stmt(&st->w, SQ_QMSG_INSERT);
        if (!s) return PR_EIO;
        sqlite3_bind_int64(s, 1, body_id);
        const char *sender = d->remote_sender ? d->remote_sender : d->sender;
        sqlite3_bind_text(s, 2, sender ? sender : "", -1, SQLITE_STATIC);
        store_bind_bytes(s, 3, d->remote_prefix, d->remote_prefix_len);
        sqlite3_bind_int64(s, 4, now);
        sqlite3_bind_text(s, 5, d->envid ? d->envid : "", -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 6, (int)d->ret);
        sqlite3_bind_int(s, 7, (int)d->body_flags);
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) return PR_EIO;
        sqlite3_int64 qid = sqlite3_last_insert_rowid(st->w.db);
        for (int i = 0; i < d->n_remote; i++) {
            const store_rcpt_dsn_t *dsn = d->remote_dsn ? &d->remote_dsn[i] : NULL;
            if (!(s = store_conn_stmt(&st->w, SQ_QRCPT_INSERT))) return PR_EIO;
            sqlite3_bind_int64(s, 1, qid);
            sqlite3_bind_text(s, 2, d->remote[i], -1, SQLITE_STATIC);
            sqlite3_bind_int64(s, 3, now);
            sqlite3_bind_int(s, 4, dsn ? (int)dsn->notify : 0);
            sqlite3_bind_text(s, 5, dsn && dsn->orcpt ? dsn->orcpt : "", -1, SQLITE_STATIC);
            rc = sqlite3_step(s);
            sqlite3_reset(s);
            if (rc != SQLITE_DONE) return PR_EIO;
        }
    }
    return APR_SUCCESS;
}

static apr_status_t store_apply_deliver(store_t *st, store_req_t *r)
{
    return store_apply_deliver_one(st, r->d, r->uids);
}

/* The body goes with its last reference (other recipients and the queue
 * may still hold it). */
apr_status_t store_body_gc(store_t *st, sqlite3_int64 body_id)
{
    sqlite3_stmt *s = store_conn_stmt(&st->w, SQ_BODY_GC);
    if (!s) return PR_EIO;
    sqlite3_bind_int64(s, 1, body_id);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? APR_SUCCESS : PR_EIO;
}

static apr_status_t store_apply_flags(store_t *st, store_req_t *r)
{
    sqlite3_int64 mbox_id;
    apr_uint64_t modseq;
    apr_status_t rv = store_mbox_touch(st, r->user, r->folder, &mbox_id, &modseq);
    if (rv != APR_SUCCESS) return rv;
    sqlite3_stmt *s = store_conn_stmt(&st->w, SQ_MSG_FLAGS);
    if (!s) return PR_EIO;
    sqlite3_bind_int64(s, 1, mbox_id);
    sqlite3_bind_int64(s, 2, r->uid);
    sqlite3_bind_int64(s, 3, r->flags);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)modseq);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return PR_EIO;
    return sqlite3_changes(st->w.db) ? APR_SUCCESS : PR_ENOTFOUND;
}

static apr_status_t store_apply_expunge(store_t *st, store_req_t *r)
{
    sqlite3_int64 mbox_id;
    apr_uint64_t modseq;
    apr_status_t rv = store_mbox_touch(st, r->user, r->folder, &mbox_id, &modseq);
    if (rv != APR_SUCCESS) return rv;
    for (int i = 0; i < r->n_uids; i++) {
        sqlite3_stmt *s = store_conn_stmt(&st->w, SQ_MSG_DELETE);
        if (!s) return PR_EIO;
        sqlite3_bind_int64(s, 1, mbox_id);
        sqlite3_bind_int64(s, 2, r->uid_list[i]);
        int rc = sqlite3_step(s);
        sqlite3_int64 body_id = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        sqlite3_reset(s);
        if (rc == SQLITE_DONE) continue; /* already gone: expunge is idempotent */
        if (rc != SQLITE_ROW) return PR_EIO;
        if ((rv = store_body_gc(st, body_id)) != APR_SUCCESS) return rv;
    }
    return APR_SUCCESS;
}

static apr_status_t store_apply(store_t *st, store_req_t *r)
{
    switch (r->kind) {
    case STORE_REQ_DELIVER:
        return store_apply_deliver(st, r);
    case STORE_REQ_FLAGS:
        return store_apply_flags(st, r);
    case STORE_REQ_EXPUNGE:
        return store_apply_expunge(st, r);
    case STORE_REQ_QUPDATE:
        return store_apply_qupdate(st, r);
    case STORE_REQ_QRETRY:
        return store_apply_qretry(st, r);
    case STORE_REQ_QDELETE:
        return store_apply_qdelete(st, r);
    }
    return PR_EINVAL;
}

/* Run a batch (linked by next) in one transaction; sets every status and
 * counts what was committed. */
static void store_writer_run(store_t *st, store_req_t *batch, apr_uint64_t *commits_r,
                             apr_uint64_t *deliveries_r)
{
    store_req_t *r;
    int broken = 0;
    *commits_r = *deliveries_r = 0;

    if (store_w_exec(st, SQ_BEGIN) != APR_SUCCESS) {
        for (r = batch; r; r = r->next)
            r->status = PR_EIO;
        if (!sqlite3_get_autocommit(st->w.db)) store_w_exec(st, SQ_ROLLBACK);
        return;
    }
    for (r = batch; r; r = r->next) {
        if (broken || store_w_exec(st, SQ_SAVEPOINT) != APR_SUCCESS) {
            broken = 1;
            r->status = PR_EIO;
            continue;
        }
        r->status = store_apply(st, r);
        if (r->status == APR_SUCCESS) {
            if (store_w_exec(st, SQ_RELEASE) != APR_SUCCESS) broken = 1;
        } else if (sqlite3_get_autocommit(st->w.db)) {
            /* SQLite rolled the whole transaction back (I/O error, full disk):
             * the savepoints released before are gone too. */
            broken = 1;
        } else if (store_w_exec(st, SQ_ROLLBACK_TO) != APR_SUCCESS ||
                   store_w_exec(st, SQ_RELEASE) != APR_SUCCESS) {
            broken = 1;
        }
    }
    if (!broken && store_w_exec(st, SQ_COMMIT) == APR_SUCCESS) {
        *commits_r = 1;
        for (r = batch; r; r = r->next)
            if (r->kind == STORE_REQ_DELIVER && r->status == APR_SUCCESS) ++*deliveries_r;
        return;
    }
    if (!sqlite3_get_autocommit(st->w.db)) store_w_exec(st, SQ_ROLLBACK);
    for (r = batch; r; r = r->next)
        r->status = PR_EIO;
}

/* How long the writer may hold a group open for requesters it expects back:
 * at most the last commit's time (a requester waits at most one commit
 * longer, and shares its fsync), and never more than this. Measured at 10
 * and 50 SMTP sessions (interleaved runs): half of it took 7% more CPU per
 * message at the same rate, none 25% more CPU and 13% less rate; twice it
 * gained nothing more. */
#define STORE_GATHER_MAX apr_time_from_msec(1)

static void *APR_THREAD_FUNC store_writer_main(apr_thread_t *t, void *data)
{
    pr_thread_name("pr-writer");
    store_t *st = data;
    int expect = 0;                   /* requesters active around the last commit */
    apr_interval_time_t last_dur = 0; /* how long the last batch took */

    apr_thread_mutex_lock(st->mu);
    for (;;) {
        st->wake_at = 1;
        while (!st->head && !st->stopping)
            apr_thread_cond_wait(st->work, st->mu);
        st->wake_at = 0;
        if (!st->head) break; /* stopping, and everything drained */

        /* Commit delay (as PostgreSQL's commit_delay): the requesters woken by
         * the last commit are usually about to come back; without waiting for
         * them the groups settle into two alternating halves, each paying a
         * full fsync. Wait only while fewer are queued than were active. */
        if (st->queued < expect && st->queued < st->opts.group_commit_max && last_dur > 0) {
            apr_interval_time_t d = last_dur;
            if (d > STORE_GATHER_MAX) d = STORE_GATHER_MAX;
            apr_time_t deadline = apr_time_now() + d;
            st->wake_at = expect; /* not woken by every arrival, only by the last */
            while (st->queued < expect && !st->stopping) {
                apr_interval_time_t left = deadline - apr_time_now();
                if (left <= 0) break;
                apr_thread_cond_timedwait(st->work, st->mu, left);
            }
            st->wake_at = 0;
        }

        /* Take everything waiting, up to the group limit. */
        store_req_t *batch = st->head, *last = batch;
        int n = 1;
        for (; last->next && n < st->opts.group_commit_max; n++)
            last = last->next;
        st->head = last->next;
        if (!st->head) st->tail = NULL;
        last->next = NULL;
        st->queued -= n;
        apr_thread_mutex_unlock(st->mu);

        apr_time_t t0 = apr_time_now();
        apr_uint64_t commits, deliveries;
        store_writer_run(st, batch, &commits, &deliveries);
        last_dur = apr_time_now() - t0;

        apr_thread_mutex_lock(st->mu);
        /* This group plus whoever arrived while it committed. */
        expect = n + st->queued;
        if (expect > st->opts.group_commit_max) expect = st->opts.group_commit_max;
        st->stats.commits += commits;
        st->stats.deliveries += deliveries;
        /* Threads wait on their conditions under the mutex; fibers only
         * look at done, and are woken after the mutex is let go: a loop
         * thread must never block on it while the writer makes wake-ups. */
        store_req_t *fibers = NULL;
        for (store_req_t *r = batch, *next; r; r = next) {
            next = r->next; /* r may be gone once done is seen */
            if (r->waiter) {
                r->done = 1;
                apr_thread_cond_signal(r->waiter->cond);
            } else {
                r->next = fibers;
                fibers = r;
            }
        }
        if (fibers) {
            apr_thread_mutex_unlock(st->mu);
            for (store_req_t *r = fibers, *next; r; r = next) {
                next = r->next;
                pr_fiber_ref_t ref = r->fiber;
                __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
                pr_fiber_wake(ref);
            }
            apr_thread_mutex_lock(st->mu);
        }
    }
    apr_thread_mutex_unlock(st->mu);
    /* Return rather than apr_thread_exit(): pthread_exit's unwinding trips a
     * false stack-buffer-underflow in ASan's thread teardown, and the
     * thread's pool goes with st->pool anyway. */
    (void)t;
    return NULL;
}

apr_status_t store_writer_start(store_t *st)
{
    return apr_thread_create(&st->writer, NULL, store_writer_main, st, st->pool);
}

void store_writer_stop(store_t *st)
{
    apr_thread_mutex_lock(st->mu);
    st->stopping = 1;
    apr_thread_cond_signal(st->work);
    apr_thread_mutex_unlock(st->mu);
    if (st->writer) {
        apr_status_t rv;
        apr_thread_join(&rv, st->writer);
        st->writer = NULL;
    }
}

/* Queue a request for the writer; under mu. */
static void store_writer_enqueue(store_t *st, store_req_t *req)
{
    if (st->tail)
        st->tail->next = req;
    else
        st->head = req;
    st->tail = req;
    st->queued++;
    /* A futex wake (and the writer's round) only when it waits for this. */
    if (st->wake_at && st->queued >= st->wake_at) apr_thread_cond_signal(st->work);
}

apr_status_t store_writer_submit(store_t *st, store_req_t *req)
{
    req->next = NULL;
    req->done = 0;
    req->status = PR_EIO;

    if (st->opts.no_writer) {
        apr_uint64_t commits = 0, deliveries = 0;
        apr_thread_mutex_lock(st->sync_mu);
        if (st->closed)
            req->status = PR_ESHUTDOWN;
        else
            store_writer_run(st, req, &commits, &deliveries);
        apr_thread_mutex_unlock(st->sync_mu);
        apr_thread_mutex_lock(st->mu);
        st->stats.commits += commits;
        st->stats.deliveries += deliveries;
        apr_thread_mutex_unlock(st->mu);
        return req->status;
    }

    apr_thread_mutex_lock(st->mu);
    if (st->stopping) {
        apr_thread_mutex_unlock(st->mu);
        return PR_ESHUTDOWN;
    }
    if (pr_fiber_self()) {
        /* A session on an event loop parks its fiber; the loop runs others
         * meanwhile and the writer wakes it through the loop. */
        req->waiter = NULL;
        req->fiber = pr_fiber_ref();
        store_writer_enqueue(st, req);
        apr_thread_mutex_unlock(st->mu);
        while (!__atomic_load_n(&req->done, __ATOMIC_ACQUIRE))
            pr_fiber_park(0);
        return req->status;
    }
    store_waiter_t *w = st->waiters;
    if (w)
        st->waiters = w->next;
    else if (!(w = apr_palloc(st->waiter_pool, sizeof(*w))) ||
             apr_thread_cond_create(&w->cond, st->waiter_pool) != APR_SUCCESS) {
        apr_thread_mutex_unlock(st->mu);
        return PR_EIO;
    }
    req->waiter = w;
    store_writer_enqueue(st, req);
    while (!req->done)
        apr_thread_cond_wait(w->cond, st->mu);
    w->next = st->waiters;
    st->waiters = w;
    apr_thread_mutex_unlock(st->mu);
    return req->status;
}

/* ---- The face's write operations. */

apr_status_t store_deliver(store_t *st, const store_delivery_t *d, apr_array_header_t **uids_r,
                           apr_pool_t *pool)
{
    if (!d || !d->body || d->n_local < 0 || d->n_remote < 0 || d->n_local + d->n_remote == 0 ||
        (d->n_local && !d->local) || (d->n_remote && !d->remote))
        return PR_EINVAL;
    for (int i = 0; i < d->n_local; i++)
        if (!d->local[i].user || (d->local[i].prefix_len && !d->local[i].prefix)) return PR_EINVAL;
    for (int i = 0; i < d->n_remote; i++)
        if (!d->remote[i]) return PR_EINVAL;

    store_req_t req;
    memset(&req, 0, sizeof(req));
    req.kind = STORE_REQ_DELIVER;
    req.d = d;
    req.uids = d->n_local ? apr_pcalloc(pool, sizeof(apr_uint32_t) * (apr_size_t)d->n_local) : NULL;
    apr_status_t rv = store_writer_submit(st, &req);
    if (rv == APR_SUCCESS && uids_r) {
        apr_array_header_t *a =
            apr_array_make(pool, d->n_local ? d->n_local : 1, sizeof(apr_uint32_t));
        for (int i = 0; i < d->n_local; i++)
            APR_ARRAY_PUSH(a, apr_uint32_t) = req.uids[i];
        *uids_r = a;
    }
    return rv;
}

apr_status_t store_message_flags_set(store_t *st, const char *user, const char *folder,
                                     apr_uint32_t uid, apr_uint32_t flags)
{
    if (!user) return PR_EINVAL;
    store_req_t req;
    memset(&req, 0, sizeof(req));
    req.kind = STORE_REQ_FLAGS;
    req.user = user;
    req.folder = store_folder_norm(folder);
    req.uid = uid;
    req.flags = flags;
    return store_writer_submit(st, &req);
}

apr_status_t store_messages_expunge(store_t *st, const char *user, const char *folder,
                                    const apr_uint32_t *uids, int n)
{
    if (!user || n < 0 || (n && !uids)) return PR_EINVAL;
    store_req_t req;
    memset(&req, 0, sizeof(req));
    req.kind = STORE_REQ_EXPUNGE;
    req.user = user;
    req.folder = store_folder_norm(folder);
    req.uid_list = uids;
    req.n_uids = n;
    return store_writer_submit(st, &req);
}
