/* The outbound queue runner (see queue.h). RFC 5321 4.5.4 (retry
 * strategy: per destination, a schedule, a lifetime), 5.1 (MX hosts in
 * order, then the next on failure), 6.1 (reliable delivery: the queue is
 * updated only after the peer's reply); RFC 3461/3464 (DSNs).
 *
 * One scheduler thread reads due recipients from the store and turns them
 * into jobs: one message and the recipients it has at one destination.
 * Jobs wait in a FIFO per destination; max_connections worker threads take
 * them, at most max_connections_per_destination per destination, and keep
 * the connection open for the next job to the same destination. Recipients
 * under way are remembered (in memory only: after a restart every pending
 * recipient is simply due again), so the scheduler never hands one out
 * twice. */
#include "service/queue/queue.h"
#include "service/core/log.h"
#include "service/core/status.h"
#include "service/core/fiber.h"
#include "service/core/tls.h"
#include "service/dsn/bounce.h"
#include "service/queue/mx.h"
#include "service/smtp/smtp_client.h"
#include "service/smtp/srs.h"

#include <apr_file_io.h>
#include <apr_hash.h>
#include <apr_strings.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define QUEUE_BODY_CHUNK 65536
#define QUEUE_SMARTHOST_KEY "" /* the one destination when relaying */
#define QUEUE_SESSION_LINGER apr_time_from_msec(1000)
#define QUEUE_DEST_BACKLOG_MIN 64 /* jobs waiting per destination (also 4 per connection) */
#define QUEUE_RECORD_TRIES 5      /* store writes of an outcome, 1 s, 2 s, ... apart */

typedef struct queue_job_t {
    struct queue_job_t *next;
    apr_pool_t *pool;  /* the job's own; destroyed when it is done */
    const char *dest;  /* destination key: the domain, or QUEUE_SMARTHOST_KEY */
    store_qmsg_t *msg; /* with this job's recipients only */
    int recorded;      /* its outcome is in the store (else it stays under way) */
} queue_job_t;

typedef struct queue_inflight_t {
    apr_int64_t id;
    apr_uint64_t done; /* 0: under way; else the stamp of its finish */
} queue_inflight_t;

typedef struct queue_dest_t {
    queue_job_t *head, *tail;
    int len;    /* jobs waiting in head..tail */
    int active; /* workers delivering to it */
} queue_dest_t;

struct queue_t {
    const pr_config_t *cfg;
    store_t *store;
    dir_t *dir;
    srs_t *srs; /* may be NULL */
    apr_pool_t *pool;
    mx_resolver_t *mx;
    pr_tls_ctx_t *tls_mx, *tls_relay;
    const char *relay_password;

    apr_thread_mutex_t *mu;
    apr_thread_cond_t *work; /* workers wait for jobs */
    apr_thread_cond_t *wake; /* the scheduler waits for a kick */
    apr_hash_t *dests;       /* key -> queue_dest_t* (malloc'ed, with their keys) */
    /* Recipients handed out: id -> queue_inflight_t (malloc'ed). A finished
     * one stays, stamped, until a read of the store begun after it: a read
     * begun before may still show it pending and must not hand it out
     * again (a second delivery). */
    apr_hash_t *inflight;
    apr_uint64_t finished; /* stamps: finished jobs so far */
    int waiting;           /* jobs in the destinations' FIFOs */
    int low_water;         /* the scheduler reads while fewer can start */
    int dest_backlog;      /* jobs waiting per destination, at most */
    int kicked, stopping;
    apr_thread_t *scheduler;
    apr_thread_t **workers;
    int n_workers;
    queue_stats_t stats;
};

/* ---- destinations and jobs (under q->mu) */

static queue_dest_t *queue_dest(queue_t *q, const char *key, int create)
{
    queue_dest_t *d = apr_hash_get(q->dests, key, APR_HASH_KEY_STRING);
    if (d || !create) return d;
    d = calloc(1, sizeof(*d));
    char *k = strdup(key);
    if (!d || !k) abort(); /* out of memory is fatal (DESIGN.md) */
    apr_hash_set(q->dests, k, APR_HASH_KEY_STRING, d);
    return d;
}

/* Forget a destination nobody uses. */
static void queue_dest_gc(queue_t *q, const char *key)
{
    queue_dest_t *d = queue_dest(q, key, 0);
    if (!d || d->head || d->active) return;
    apr_hash_index_t *hi = apr_hash_first(NULL, q->dests);
    for (; hi; hi = apr_hash_next(hi)) {
        if (apr_hash_this_val(hi) != d) continue;
        void *k = (void *)apr_hash_this_key(hi);
        apr_hash_set(q->dests, k, APR_HASH_KEY_STRING, NULL);
        free(k);
        free(d);
        return;
    }
}

/* Under q->mu. A backlog running low wakes the scheduler. */
static queue_job_t *queue_pop(queue_t *q, queue_dest_t *d)
{
    queue_job_t *j = d->head;
    if (j) {
        d->head = j->next;
        if (!d->head) d->tail = NULL;
        j->next = NULL;
        d->len--;
        if (--q->waiting <= q->low_water) apr_thread_cond_signal(q->wake);
    }
    return j;
}

static void queue_push(queue_t *q, queue_dest_t *d, queue_job_t *j, int front)
{
    if (front) {
        j->next = d->head;
        d->head = j;
        if (!d->tail) d->tail = j;
    } else {
        j->next = NULL;
        if (d->tail)
            d->tail->next = j;
        else
            d->head = j;
        d->tail = j;
    }
    d->len++;
    q->waiting++;
}

/* Jobs that could start now: waiting ones within each destination's free
 * connections. Jobs for a destination at its limit (a slow or dead site)
 * do not count, so they never keep the scheduler from reading the store
 * for other destinations. Under q->mu. */
static int queue_runnable(queue_t *q)
{
    const int per_dest = q->cfg->outbound.max_connections_per_destination;
    int n = 0;
    for (apr_hash_index_t *hi = apr_hash_first(NULL, q->dests); hi; hi = apr_hash_next(hi)) {
        const queue_dest_t *d = apr_hash_this_val(hi);
        int room = per_dest - d->active;
        n += d->len < room ? d->len : room > 0 ? room : 0;
    }
    return n;
}

/* The job's recipients are finished (recorded in the store). */
static void queue_inflight_finish(queue_t *q, const store_qmsg_t *m)
{
    q->finished++;
    for (int i = 0; i < m->rcpts->nelts; i++) {
        apr_int64_t id = APR_ARRAY_IDX(m->rcpts, i, store_qrcpt_t).id;
        queue_inflight_t *f = apr_hash_get(q->inflight, &id, sizeof(id));
        if (f) f->done = q->finished;
    }
}

/* May recipient id be handed out from a read of the store begun at stamp
 * read? Forgets finished entries that read already reflects. */
static int queue_inflight_free(queue_t *q, apr_int64_t id, apr_uint64_t read)
{
    queue_inflight_t *f = apr_hash_get(q->inflight, &id, sizeof(id));
    if (!f) return 1;
    if (!f->done || f->done > read) return 0;
    apr_hash_set(q->inflight, &f->id, sizeof(f->id), NULL);
    free(f);
    return 1;
}

static void queue_inflight_add(queue_t *q, apr_int64_t id)
{
    queue_inflight_t *f = malloc(sizeof(*f));
    if (!f) abort(); /* out of memory is fatal (DESIGN.md) */
    f->id = id;
    f->done = 0;
    apr_hash_set(q->inflight, &f->id, sizeof(f->id), f);
}

/* Forget finished entries that a read begun at stamp read reflects. */
static void queue_inflight_prune(queue_t *q, apr_uint64_t read)
{
    for (apr_hash_index_t *hi = apr_hash_first(NULL, q->inflight); hi;) {
        queue_inflight_t *f = apr_hash_this_val(hi);
        hi = apr_hash_next(hi);
        if (f->done && f->done <= read) {
            apr_hash_set(q->inflight, &f->id, sizeof(f->id), NULL);
            free(f);
        }
    }
}

/* ---- outcomes */

static const char *queue_domain(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : address;
}

/* Does the sender want a report of this kind (RFC 3461 4.1)? Without
 * NOTIFY: failures and delays. Never for the null sender. */
static int queue_wants(const store_qmsg_t *m, const store_qrcpt_t *r, unsigned kind)
{
    if (!*m->sender) return 0;
    if (r->dsn.notify == 0) return kind != STORE_NOTIFY_SUCCESS;
    return (r->dsn.notify & kind) != 0;
}

/* The outcome of one recipient's attempt, as an SMTP reply. */
typedef struct queue_outcome_t {
    int code; /* 2xx, 4xx, 5xx */
    const char *reply;
    const char *remote_mta; /* NULL: decided here */
    int relayed;            /* 2xx to a peer that does not take DSN requests */
} queue_outcome_t;

/* Record what happened to each recipient of job, with the report the
 * sender asked for, in one store transaction. */
static void queue_record(queue_t *q, queue_job_t *job, const queue_outcome_t *out,
                         store_reader_t *reader)
{
    const pr_config_t *cfg = q->cfg;
    store_qmsg_t *m = job->msg;
    apr_pool_t *pool = job->pool;
    apr_time_t now = apr_time_now();
    int n = m->rcpts->nelts;
    store_qresult_t *res = apr_pcalloc(pool, sizeof(*res) * (apr_size_t)n);
    bounce_rcpt_t *rep = apr_pcalloc(pool, sizeof(*rep) * (apr_size_t)n);
    int n_rep = 0, delivered = 0, deferred = 0, failed = 0;

    for (int i = 0; i < n; i++) {
        store_qrcpt_t *r = &APR_ARRAY_IDX(m->rcpts, i, store_qrcpt_t);
        const queue_outcome_t *o = &out[i];
        store_qresult_t *x = &res[i];
        x->rcpt_id = r->id;
        x->reply = o->reply;
        x->attempted = 1;
        x->warned = r->warned;
        bounce_action_e action = BOUNCE_FAILED;
        unsigned kind = 0;
        if (o->code >= 200 && o->code < 300) {
            x->state = STORE_Q_DELIVERED;
            delivered++;
            if (o->relayed) {
                kind = STORE_NOTIFY_SUCCESS;
                action = BOUNCE_RELAYED;
            }
        } else if (o->code >= 500 || now - m->created >= cfg->outbound.max_queue_lifetime) {
            x->state = STORE_Q_FAILED;
            failed++;
            kind = STORE_NOTIFY_FAILURE;
            if (o->code < 500)
                x->reply = apr_pstrcat(pool, o->reply, " (gave up: in the queue longer than ",
                                       "max_queue_lifetime)", NULL);
        } else {
            x->state = STORE_Q_PENDING;
            deferred++;
            int k = r->attempts < cfg->outbound.retry_schedule.n
                        ? r->attempts
                        : cfg->outbound.retry_schedule.n - 1;
            x->next_attempt = now + cfg->outbound.retry_schedule.v[k];
            if (!r->warned && cfg->outbound.delay_warning_time > 0 &&
                now - m->created >= cfg->outbound.delay_warning_time) {
                x->warned = 1;
                kind = STORE_NOTIFY_DELAY;
                action = BOUNCE_DELAYED;
            }
        }
        if (kind && queue_wants(m, r, kind)) {
            bounce_rcpt_t *b = &rep[n_rep++];
            b->address = r->address;
            b->orcpt = r->dsn.orcpt;
            b->action = action;
            b->reply = x->reply;
            b->remote_mta = o->remote_mta;
            b->last_attempt = now;
        }
        pr_log_info(NULL, "queue %" APR_INT64_T_FMT ": <%s> %s%s%s: %s", m->id, r->address,
                    x->state == STORE_Q_DELIVERED ? "delivered"
                    : x->state == STORE_Q_FAILED  ? "failed"
                                                  : "deferred",
                    o->remote_mta ? " via " : "", o->remote_mta ? o->remote_mta : "", x->reply);
    }

    /* The report, delivered in the same transaction as the outcomes. */
    store_delivery_t dsn = {0};
    int n_dsn = 0;
    if (n_rep) {
        /* A message forwarded with an SRS sender: the report goes to
         * the sender it stands for. */
        const char *to = m->sender, *back;
        if (q->srs && srs_reverse(q->srs, to, now, &back, pool) == APR_SUCCESS) to = back;
        apr_status_t st = reader ? bounce_route(q->dir, to, &dsn, pool) : PR_ETEMPFAIL;
        store_stream_t *orig = NULL;
        if (st == APR_SUCCESS) {
            bounce_t b = {0};
            b.reporting_mta = cfg->server.hostname;
            b.sender = to;
            b.envid = *m->envid ? m->envid : NULL;
            b.arrival = m->created;
            b.retry_until = m->created + cfg->outbound.max_queue_lifetime;
            b.ret = m->ret;
            b.n = n_rep;
            b.rcpts = rep;
            if ((st = store_body_create(&dsn.body, q->store, pool)) == APR_SUCCESS &&
                (st = store_queue_open(&orig, reader, m->id, pool)) == APR_SUCCESS)
                st = bounce_write(dsn.body, &b, orig, pool);
            dsn.sender = "";
            /* The original may go whole: the next hop must take its body. */
            dsn.body_flags = m->body_flags;
            n_dsn = st == APR_SUCCESS;
        }
        if (st == PR_ENOTFOUND) {
            pr_log_warn(NULL, "queue %" APR_INT64_T_FMT ": no report: <%s> is unknown here", m->id,
                        m->sender);
        } else if (st != APR_SUCCESS) {
            /* Not now: keep failed recipients pending, so the report is
             * made on the next attempt instead of being lost. */
            pr_log_warn(NULL, "queue %" APR_INT64_T_FMT ": report to <%s> postponed", m->id,
                        m->sender);
            for (int i = 0; i < n; i++) {
                /* A delay warning not made is made next time. */
                res[i].warned = APR_ARRAY_IDX(m->rcpts, i, store_qrcpt_t).warned;
                if (res[i].state != STORE_Q_FAILED) continue;
                res[i].state = STORE_Q_PENDING;
                res[i].next_attempt = now + cfg->outbound.retry_schedule.v[0];
                failed--;
                deferred++;
            }
        }
    }
    /* The peer has answered: the outcome must be kept, or the mail goes
     * again. A failing store (a full disk) is asked again for a while;
     * if it still refuses, the recipients stay marked as under way (see
     * queue_job_done) and are tried again only after a restart. */
    apr_status_t st = APR_SUCCESS;
    for (int attempt = 0; attempt < QUEUE_RECORD_TRIES; attempt++) {
        if (attempt) apr_sleep(apr_time_from_sec(attempt));
        st = store_queue_update(q->store, res, n, n_dsn ? &dsn : NULL, n_dsn);
        if (st == APR_SUCCESS) break;
    }
    if (st != APR_SUCCESS)
        pr_log_error(NULL,
                     "queue %" APR_INT64_T_FMT ": cannot record the outcome; its recipients "
                     "wait until postroomd restarts",
                     m->id);
    job->recorded = st == APR_SUCCESS;
    apr_thread_mutex_lock(q->mu);
    if (st == APR_SUCCESS) {
        q->stats.delivered += (apr_uint64_t)delivered;
        q->stats.deferred += (apr_uint64_t)deferred;
        q->stats.failed += (apr_uint64_t)failed;
        q->stats.dsns += (apr_uint64_t)n_dsn;
    }
    apr_thread_mutex_unlock(q->mu);
}

/* Every recipient of job gets the same outcome (no connection, DNS). */
static void queue_record_all(queue_t *q, queue_job_t *job, int code, const char *reply,
                             const char *remote_mta, store_reader_t *reader)
{
    int n = job->msg->rcpts->nelts;
    queue_outcome_t *out = apr_pcalloc(job->pool, sizeof(*out) * (apr_size_t)n);
    for (int i = 0; i < n; i++) {
        out[i].code = code;
        out[i].reply = reply;
        out[i].remote_mta = remote_mta;
    }
    queue_record(q, job, out, reader);
}

static const char *queue_result_text(const smtp_result_t *r, apr_pool_t *pool)
{
    return apr_psprintf(pool, "%d%s%s %s", r->code, *r->enhanced ? " " : "", r->enhanced, r->text);
}

/* ---- one SMTP transaction */

typedef struct queue_body_t {
    store_stream_t *s;
    char buf[QUEUE_BODY_CHUNK];
} queue_body_t;

static apr_status_t queue_body_read(void *ctx, const char **data_r, apr_size_t *len_r)
{
    queue_body_t *b = ctx;
    apr_size_t n = sizeof(b->buf);
    apr_status_t st = store_stream_read(b->s, b->buf, &n);
    if (st != APR_SUCCESS) return st;
    if (n == 0) return APR_EOF;
    *data_r = b->buf;
    *len_r = n;
    return APR_SUCCESS;
}

/* Send job over cl and record the outcome. */
static void queue_send(queue_t *q, smtp_client_t *cl, const char *host, queue_job_t *job,
                       store_reader_t *reader)
{
    store_qmsg_t *m = job->msg;
    apr_pool_t *pool = job->pool;
    int n = m->rcpts->nelts;
    smtp_rcpt_t *rc = apr_pcalloc(pool, sizeof(*rc) * (apr_size_t)n);
    for (int i = 0; i < n; i++) {
        const store_qrcpt_t *r = &APR_ARRAY_IDX(m->rcpts, i, store_qrcpt_t);
        rc[i].address = r->address;
        rc[i].orcpt = r->dsn.orcpt;
        unsigned nt = r->dsn.notify;
        rc[i].notify = (nt & STORE_NOTIFY_NEVER ? SMTP_NOTIFY_NEVER : 0) |
                       (nt & STORE_NOTIFY_SUCCESS ? SMTP_NOTIFY_SUCCESS : 0) |
                       (nt & STORE_NOTIFY_FAILURE ? SMTP_NOTIFY_FAILURE : 0) |
                       (nt & STORE_NOTIFY_DELAY ? SMTP_NOTIFY_DELAY : 0);
    }
    smtp_envelope_t env = {0};
    env.sender = m->sender;
    env.rcpts = rc;
    env.nrcpts = n;
    env.ret = m->ret == STORE_RET_FULL   ? SMTP_RET_FULL
              : m->ret == STORE_RET_HDRS ? SMTP_RET_HDRS
                                         : SMTP_RET_UNSET;
    env.envid = *m->envid ? m->envid : NULL;
    env.size = m->size;
    env.body_8bit = (m->body_flags & STORE_BODY_8BIT) != 0;
    env.smtputf8 = (m->body_flags & STORE_BODY_SMTPUTF8) != 0;

    queue_body_t *body = apr_palloc(pool, sizeof(*body));
    apr_status_t st = store_queue_open(&body->s, reader, m->id, pool);
    if (st == PR_ENOTFOUND) { /* deleted by an admin meanwhile */
        pr_log_info(NULL, "queue %" APR_INT64_T_FMT ": gone from the queue", m->id);
        job->recorded = 1;
        return;
    }
    if (st != APR_SUCCESS) {
        queue_record_all(q, job, 451, "451 4.3.0 Mail store unreadable; will retry", NULL, reader);
        return;
    }
    smtp_send_result_t res;
    smtp_client_send(cl, &env, queue_body_read, body, &res, pool);
    int peer_dsn = (smtp_client_caps(cl)->ext & SMTP_EXT_DSN) != 0;
    queue_outcome_t *out = apr_pcalloc(pool, sizeof(*out) * (apr_size_t)n);
    for (int i = 0; i < n; i++) {
        const smtp_result_t *r = i < res.nrcpts ? &res.rcpts[i] : &res.message;
        out[i].code = r->code;
        out[i].reply = queue_result_text(r, pool);
        out[i].remote_mta = r->remote ? host : NULL;
        out[i].relayed = !peer_dsn;
    }
    queue_record(q, job, out, reader);
}

/* ---- a worker */

/* Take the next job for destination key if another may start there. */
static queue_job_t *queue_take(queue_t *q, const char *key)
{
    queue_dest_t *d = queue_dest(q, key, 0);
    return d ? queue_pop(q, d) : NULL;
}

/* The job is finished: its recipients are free again, its memory goes. */
static void queue_job_done(queue_t *q, queue_job_t *job)
{
    apr_thread_mutex_lock(q->mu);
    if (job->recorded) queue_inflight_finish(q, job->msg);
    q->kicked = 1; /* retries may be due at once (a schedule of seconds) */
    apr_thread_cond_signal(q->wake);
    apr_thread_mutex_unlock(q->mu);
    apr_pool_destroy(job->pool);
}

typedef struct queue_host_t {
    const char *name;
    apr_array_header_t *addrs; /* const char* */
} queue_host_t;

/* Deliver job, then any further jobs for its destination over the same
 * connection. */
static void queue_deliver(queue_t *q, queue_job_t *job)
{
    const pr_config_t *cfg = q->cfg;
    int relay = *cfg->outbound.smarthost != '\0';
    apr_pool_t *pool; /* the connection's: outlives the jobs it carries */
    apr_pool_create(&pool, NULL);
    const char *key = apr_pstrdup(pool, job->dest); /* the job's memory goes with it */
    store_reader_t *reader;
    if (store_reader_open(&reader, q->store, pool) != APR_SUCCESS) {
        queue_record_all(q, job, 451, "451 4.3.0 Mail store unavailable", NULL, NULL);
        queue_job_done(q, job);
        apr_pool_destroy(pool);
        return;
    }

    /* Where to: the relay, or the domain's MX hosts (RFC 5321 5.1). */
    apr_array_header_t *hosts = apr_array_make(pool, 4, sizeof(queue_host_t));
    apr_port_t port = (apr_port_t)(relay ? cfg->outbound.smarthost_port : cfg->outbound.port);
    if (relay) {
        queue_host_t *h = apr_array_push(hosts);
        h->name = cfg->outbound.smarthost;
        h->addrs = apr_array_make(pool, 1, sizeof(const char *));
        APR_ARRAY_PUSH(h->addrs, const char *) = cfg->outbound.smarthost;
    } else if (key[0] == '[') {
        /* An address literal (RFC 5321 4.1.3): that host, no DNS. */
        queue_host_t *h = apr_array_push(hosts);
        const char *ip = key + 1;
        if (strncasecmp(ip, "IPv6:", 5) == 0) ip += 5;
        h->name = key;
        h->addrs = apr_array_make(pool, 1, sizeof(const char *));
        APR_ARRAY_PUSH(h->addrs, const char *) = apr_pstrndup(pool, ip, strcspn(ip, "]"));
    } else {
        mx_route_t *route;
        apr_status_t st = mx_resolve(q->mx, key, &route, pool);
        const char *fail = NULL;
        int code = 451;
        if (st == PR_ENOTFOUND) {
            code = 550;
            fail = apr_psprintf(pool, "550 5.1.2 Domain %s not found (no MX or address)", key);
        } else if (st == PR_ENULLMX) {
            code = 556;
            fail = apr_psprintf(pool, "556 5.1.10 Domain %s accepts no mail (null MX)", key);
        } else if (st == PR_EINVAL) {
            code = 553;
            fail = apr_psprintf(pool, "553 5.1.2 Bad destination domain %s", key);
        } else if (st != APR_SUCCESS) {
            fail = apr_psprintf(pool, "451 4.4.3 DNS lookup for %s failed; will retry", key);
        }
        if (fail) {
            queue_record_all(q, job, code, fail, NULL, reader);
            queue_job_done(q, job);
            apr_pool_destroy(pool);
            return;
        }
        /* RFC 5321 5.1: we are one of the MX hosts: only the more
         * preferred ones may take it; none left is a loop. */
        int self_pref = -1;
        for (int i = 0; i < route->hosts->nelts; i++) {
            const mx_host_t *mh = APR_ARRAY_IDX(route->hosts, i, mx_host_t *);
            if (strcasecmp(mh->name, cfg->server.hostname) == 0 &&
                (self_pref < 0 || mh->preference < self_pref))
                self_pref = mh->preference;
        }
        for (int i = 0; i < route->hosts->nelts; i++) {
            const mx_host_t *mh = APR_ARRAY_IDX(route->hosts, i, mx_host_t *);
            if (self_pref >= 0 && mh->preference >= self_pref) continue;
            queue_host_t *h = apr_array_push(hosts);
            h->name = mh->name;
            h->addrs = mh->addrs;
        }
        if (hosts->nelts == 0) {
            const char *loop =
                apr_psprintf(pool, "554 5.4.6 Mail for %s loops back to myself (%s is its MX)", key,
                             cfg->server.hostname);
            queue_record_all(q, job, 554, loop, NULL, reader);
            queue_job_done(q, job);
            apr_pool_destroy(pool);
            return;
        }
    }

    smtp_client_opts_t opts = {0};
    opts.helo = cfg->server.hostname;
    opts.connect_timeout = cfg->outbound.connect_timeout;
    opts.command_timeout = cfg->outbound.command_timeout;
    if (relay) {
        opts.tls = cfg->outbound.smarthost_tls == PR_SMARTHOST_IMPLICIT ? SMTP_TLS_IMPLICIT
                   : cfg->outbound.smarthost_tls == PR_SMARTHOST_NONE   ? SMTP_TLS_NONE
                                                                        : SMTP_TLS_ENCRYPT;
        opts.tls_ctx = q->tls_relay;
        opts.auth_user = cfg->outbound.smarthost_auth_user;
        opts.auth_password = q->relay_password;
    } else {
        opts.tls =
            cfg->outbound.outbound_tls == PR_OUTBOUND_TLS_ENCRYPT ? SMTP_TLS_ENCRYPT : SMTP_TLS_MAY;
        opts.tls_ctx = q->tls_mx;
    }

    /* The first host and address that takes a session. */
    smtp_client_t *cl = NULL;
    const char *host = NULL, *last = "451 4.4.1 No MX host answered";
    for (int i = 0; i < hosts->nelts && !cl; i++) {
        const queue_host_t *h = &APR_ARRAY_IDX(hosts, i, queue_host_t);
        for (int k = 0; k < h->addrs->nelts && !cl; k++) {
            const char *addr = APR_ARRAY_IDX(h->addrs, k, const char *);
            smtp_result_t err;
            apr_status_t st = smtp_client_connect(&cl, addr, port, h->name, &opts, &err, pool);
            if (st == PR_ETLS && opts.tls == SMTP_TLS_MAY) {
                /* Opportunistic TLS that fails (an old or broken peer):
                 * in clear, as RFC 7435 and Postfix do, rather than never. */
                smtp_client_opts_t plain = opts;
                plain.tls = SMTP_TLS_NONE;
                pr_log_info(NULL, "queue: %s[%s]: TLS failed; trying again in clear", h->name,
                            addr);
                st = smtp_client_connect(&cl, addr, port, h->name, &plain, &err, pool);
            }
            if (st == APR_SUCCESS) {
                host = h->name[0] == '[' ? h->name : apr_psprintf(pool, "%s[%s]", h->name, addr);
                apr_thread_mutex_lock(q->mu);
                q->stats.connections++;
                apr_thread_mutex_unlock(q->mu);
                break;
            }
            cl = NULL;
            /* A 5xx from a relay that refuses our login or TLS is an
             * error of ours to fix, not the message's: retry, never
             * bounce on a session failure. */
            last = apr_psprintf(pool, "451 4.4.1 %s[%s]: %d %s", h->name, addr,
                                err.code ? err.code : 421, err.text ? err.text : "no session");
            pr_log_info(NULL, "queue: %s[%s]:%u: %s", h->name, addr, (unsigned)port, last);
        }
    }
    if (!cl) {
        queue_record_all(q, job, 451, last, NULL, reader);
        queue_job_done(q, job);
        apr_pool_destroy(pool);
        return;
    }

    while (job) {
        queue_send(q, cl, host, job, reader);
        queue_job_done(q, job);
        job = NULL;
        if (!smtp_client_usable(cl)) break;
        /* Keep the session a moment for the next message to the same
         * place (as Postfix's connection cache does): a new session costs
         * a handshake, often TLS. */
        apr_time_t until = apr_time_now() + QUEUE_SESSION_LINGER;
        apr_thread_mutex_lock(q->mu);
        while (!q->stopping && !(job = queue_take(q, key))) {
            apr_interval_time_t left = until - apr_time_now();
            if (left <= 0) break;
            apr_thread_cond_timedwait(q->work, q->mu, left);
        }
        apr_thread_mutex_unlock(q->mu);
        if (job && smtp_client_reset(cl) != APR_SUCCESS) {
            /* The session broke between messages: put the job back. */
            apr_thread_mutex_lock(q->mu);
            queue_push(q, queue_dest(q, key, 1), job, 1);
            apr_thread_cond_broadcast(q->work);
            apr_thread_mutex_unlock(q->mu);
            job = NULL;
        }
    }
    smtp_client_quit(cl);
    apr_pool_destroy(pool);
}

static void *APR_THREAD_FUNC queue_worker_main(apr_thread_t *t, void *data)
{
    pr_thread_name("pr-delivery");
    queue_t *q = data;
    const int per_dest = q->cfg->outbound.max_connections_per_destination;
    apr_thread_mutex_lock(q->mu);
    while (!q->stopping) {
        queue_job_t *job = NULL;
        for (apr_hash_index_t *hi = apr_hash_first(NULL, q->dests); hi && !job;
             hi = apr_hash_next(hi)) {
            queue_dest_t *d = apr_hash_this_val(hi);
            if (d->head && d->active < per_dest) {
                job = queue_pop(q, d);
                d->active++;
                q->stats.active++;
            }
        }
        if (!job) {
            apr_thread_cond_wait(q->work, q->mu);
            continue;
        }
        apr_thread_mutex_unlock(q->mu);
        char keybuf[256]; /* the job and its key go with queue_deliver */
        apr_cpystrn(keybuf, job->dest, sizeof(keybuf));
        queue_deliver(q, job);
        apr_thread_mutex_lock(q->mu);
        queue_dest_t *d = queue_dest(q, keybuf, 0);
        if (d) d->active--;
        if (d && d->head) apr_thread_cond_broadcast(q->work); /* a slot for them */
        q->stats.active--;
        queue_dest_gc(q, keybuf);
    }
    apr_thread_mutex_unlock(q->mu);
    /* Return rather than apr_thread_exit(): pthread_exit's unwinding trips
     * ASan's thread teardown (as in store/writer.c). */
    (void)t;
    return NULL;
}

/* ---- the scheduler */

/* A job for recipients rcpts (indexes into m->rcpts) of m at dest. */
static queue_job_t *queue_job_make(const store_qmsg_t *m, const char *dest)
{
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    queue_job_t *j = apr_pcalloc(pool, sizeof(*j));
    j->pool = pool;
    j->dest = apr_pstrdup(pool, dest);
    store_qmsg_t *c = apr_pmemdup(pool, m, sizeof(*m));
    c->sender = apr_pstrdup(pool, m->sender);
    c->envid = apr_pstrdup(pool, m->envid);
    c->rcpts = apr_array_make(pool, 2, sizeof(store_qrcpt_t));
    j->msg = c;
    return j;
}

static void queue_job_add_rcpt(queue_job_t *j, const store_qrcpt_t *r)
{
    store_qrcpt_t *c = apr_array_push(j->msg->rcpts);
    *c = *r;
    c->address = apr_pstrdup(j->pool, r->address);
    c->last_reply = apr_pstrdup(j->pool, r->last_reply);
    c->dsn.orcpt = r->dsn.orcpt ? apr_pstrdup(j->pool, r->dsn.orcpt) : NULL;
}

/* Turn due recipients, read from the store from stamp read on, into jobs.
 * Under q->mu. The number of jobs made. */
static int queue_plan(queue_t *q, apr_array_header_t *msgs, apr_uint64_t read, apr_pool_t *pool)
{
    int relay = *q->cfg->outbound.smarthost != '\0', made = 0;
    for (int i = 0; i < msgs->nelts; i++) {
        const store_qmsg_t *m = APR_ARRAY_IDX(msgs, i, store_qmsg_t *);
        apr_hash_t *by_dest = apr_hash_make(pool);
        apr_array_header_t *order = apr_array_make(pool, 2, sizeof(queue_job_t *));
        for (int k = 0; k < m->rcpts->nelts; k++) {
            const store_qrcpt_t *r = &APR_ARRAY_IDX(m->rcpts, k, store_qrcpt_t);
            if (!queue_inflight_free(q, r->id, read)) continue;
            const char *dest = relay ? QUEUE_SMARTHOST_KEY : queue_domain(r->address);
            queue_job_t *j = apr_hash_get(by_dest, dest, APR_HASH_KEY_STRING);
            if (!j && queue_dest(q, dest, 1)->len >= q->dest_backlog)
                continue; /* enough waiting there: a later read brings it */
            if (!j) {
                j = queue_job_make(m, dest);
                apr_hash_set(by_dest, j->dest, APR_HASH_KEY_STRING, j);
                APR_ARRAY_PUSH(order, queue_job_t *) = j;
            }
            queue_job_add_rcpt(j, r);
            queue_inflight_add(q, r->id);
        }
        for (int k = 0; k < order->nelts; k++) {
            queue_job_t *j = APR_ARRAY_IDX(order, k, queue_job_t *);
            queue_push(q, queue_dest(q, j->dest, 1), j, 0);
            made++;
        }
    }
    return made;
}

/* After a read that filled its batch, go on past its last row; after one
 * that did not, start from the beginning again. */
static void queue_cursor_next(store_qcursor_t *cur, const apr_array_header_t *msgs)
{
    store_qcursor_t last = {0, 0};
    int rows = 0;
    for (int i = 0; i < msgs->nelts; i++) {
        const apr_array_header_t *rc = APR_ARRAY_IDX(msgs, i, store_qmsg_t *)->rcpts;
        for (int k = 0; k < rc->nelts; k++, rows++) {
            const store_qrcpt_t *r = &APR_ARRAY_IDX(rc, k, store_qrcpt_t);
            if (r->next_attempt > last.next_attempt ||
                (r->next_attempt == last.next_attempt && r->id > last.id)) {
                last.next_attempt = r->next_attempt;
                last.id = r->id;
            }
        }
    }
    if (rows >= QUEUE_BATCH_MAX)
        *cur = last;
    else
        cur->next_attempt = cur->id = 0;
}

static void *APR_THREAD_FUNC queue_scheduler_main(apr_thread_t *t, void *data)
{
    pr_thread_name("pr-queue");
    queue_t *q = data;
    apr_pool_t *pool, *pass;
    apr_pool_create(&pool, NULL);
    apr_pool_create(&pass, pool);
    store_reader_t *reader = NULL;
    apr_time_t next = 0; /* when something is due, as last seen */
    /* Where the next read goes on: the first rows of a long queue may all
     * be under way or held back (a destination's backlog is full), so
     * reads page through it and start over at its end. */
    store_qcursor_t cur = {0, 0};

    apr_thread_mutex_lock(q->mu);
    while (!q->stopping) {
        apr_time_t now = apr_time_now();
        /* Read when something may be due, and only while the workers'
         * backlog is short: each read costs up to QUEUE_BATCH_MAX rows,
         * mostly of recipients under way already. */
        if (queue_runnable(q) >= q->low_water) {
            apr_thread_cond_timedwait(q->wake, q->mu, QUEUE_POLL_INTERVAL);
            continue;
        }
        if (!q->kicked && (next == 0 || next > now)) {
            apr_interval_time_t wait = QUEUE_POLL_INTERVAL;
            if (next && next - now < wait) wait = next - now;
            apr_thread_cond_timedwait(q->wake, q->mu, wait); /* then look anyway */
            if (q->stopping || queue_runnable(q) >= q->low_water) continue;
        }
        q->kicked = 0;
        const apr_uint64_t read = q->finished; /* what this read reflects at least */
        apr_thread_mutex_unlock(q->mu);

        apr_pool_clear(pass);
        apr_array_header_t *msgs = NULL;
        apr_status_t st = reader ? APR_SUCCESS : store_reader_open(&reader, q->store, pool);
        now = apr_time_now();
        if (st == APR_SUCCESS)
            st = store_queue_due(reader, now, &cur, QUEUE_BATCH_MAX, &msgs, pass);
        if (st == APR_SUCCESS) queue_cursor_next(&cur, msgs);
        if (st == APR_SUCCESS) st = store_queue_next(reader, &next);
        if (st != APR_SUCCESS) {
            pr_log_warn(NULL, "queue: cannot read the queue; trying again");
            next = now + QUEUE_POLL_INTERVAL;
        }

        apr_thread_mutex_lock(q->mu);
        if (msgs && queue_plan(q, msgs, read, pass) > 0) apr_thread_cond_broadcast(q->work);
        if (st == APR_SUCCESS) queue_inflight_prune(q, read);
        /* What is due but under way now comes back with a kick when done. */
        if (next && next <= apr_time_now()) next = apr_time_now() + QUEUE_POLL_INTERVAL;
    }
    apr_thread_mutex_unlock(q->mu);
    apr_pool_destroy(pool);
    /* Return rather than apr_thread_exit(): pthread_exit's unwinding trips
     * ASan's thread teardown (as in store/writer.c). */
    (void)t;
    return NULL;
}

/* ---- the face */

static apr_status_t queue_read_secret(const char *path, const char **secret_r, apr_pool_t *pool)
{
    char *text;
    apr_file_t *f;
    apr_finfo_t fi;
    apr_status_t st = apr_file_open(&f, path, APR_FOPEN_READ, 0, pool);
    if (st != APR_SUCCESS) return st;
    if ((st = apr_file_info_get(&fi, APR_FINFO_SIZE, f)) == APR_SUCCESS && fi.size > 4096)
        st = PR_ETOOBIG;
    apr_size_t n = st == APR_SUCCESS ? (apr_size_t)fi.size : 0;
    text = apr_pcalloc(pool, n + 1);
    if (st == APR_SUCCESS && n) st = apr_file_read_full(f, text, n, &n);
    apr_file_close(f);
    if (st != APR_SUCCESS) return st;
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        text[--n] = '\0';
    *secret_r = text;
    return APR_SUCCESS;
}

apr_status_t queue_create(queue_t **q_r, const pr_config_t *cfg, store_t *store, dir_t *dir,
                          srs_t *srs, const char **err_r, apr_pool_t *pool)
{
    queue_t *q = apr_pcalloc(pool, sizeof(*q));
    apr_status_t st;
    q->cfg = cfg;
    q->store = store;
    q->dir = dir;
    q->srs = srs;
    q->pool = pool;
    q->dests = apr_hash_make(pool);
    q->inflight = apr_hash_make(pool);
    if ((st = apr_thread_mutex_create(&q->mu, APR_THREAD_MUTEX_DEFAULT, pool)) != APR_SUCCESS ||
        (st = apr_thread_cond_create(&q->work, pool)) != APR_SUCCESS ||
        (st = apr_thread_cond_create(&q->wake, pool)) != APR_SUCCESS) {
        *err_r = "cannot create the queue's locks";
        return st;
    }
    if ((st = mx_resolver_create(&q->mx, &cfg->outbound.dns_servers, cfg->outbound.connect_timeout,
                                 pool)) != APR_SUCCESS) {
        *err_r = "cannot set up the DNS resolver ([outbound] dns_servers)";
        return st;
    }
    pr_tls_client_opts_t mx_opts = {0}, relay_opts = {0};
    relay_opts.verify = 1;
    relay_opts.ca_file = cfg->outbound.smarthost_ca_file;
    const char *why = NULL;
    if ((st = pr_tls_client_ctx_create(&q->tls_mx, &mx_opts, &why, pool)) != APR_SUCCESS ||
        (*cfg->outbound.smarthost &&
         (st = pr_tls_client_ctx_create(&q->tls_relay, &relay_opts, &why, pool)) != APR_SUCCESS)) {
        *err_r = apr_psprintf(pool, "outbound TLS: %s", why ? why : "cannot create a context");
        return st;
    }
    if (*cfg->outbound.smarthost_password_file) {
        st = queue_read_secret(cfg->outbound.smarthost_password_file, &q->relay_password, pool);
        if (st != APR_SUCCESS) {
            char buf[120];
            *err_r = apr_psprintf(pool, "cannot read [outbound] smarthost_password_file %s: %s",
                                  cfg->outbound.smarthost_password_file,
                                  pr_strerror(st, buf, sizeof(buf)));
            return st;
        }
    }
    *q_r = q;
    return APR_SUCCESS;
}

apr_status_t queue_start(queue_t *q)
{
    apr_status_t st;
    q->n_workers = q->cfg->outbound.max_connections;
    q->low_water = 2 * q->n_workers;
    q->dest_backlog = 4 * q->cfg->outbound.max_connections_per_destination;
    if (q->dest_backlog < QUEUE_DEST_BACKLOG_MIN) q->dest_backlog = QUEUE_DEST_BACKLOG_MIN;
    q->workers = apr_pcalloc(q->pool, sizeof(*q->workers) * (apr_size_t)q->n_workers);
    for (int i = 0; i < q->n_workers; i++)
        if ((st = apr_thread_create(&q->workers[i], NULL, queue_worker_main, q, q->pool)) !=
            APR_SUCCESS)
            return st;
    return apr_thread_create(&q->scheduler, NULL, queue_scheduler_main, q, q->pool);
}

void queue_kick(queue_t *q, const char *domain)
{
    if (domain && store_queue_retry_domain(q->store, domain) != APR_SUCCESS)
        pr_log_warn(NULL, "queue: cannot make %s's mail due", domain);
    apr_thread_mutex_lock(q->mu);
    q->kicked = 1;
    apr_thread_cond_signal(q->wake);
    apr_thread_mutex_unlock(q->mu);
}

void queue_stop(queue_t *q)
{
    apr_status_t rv;
    apr_thread_mutex_lock(q->mu);
    q->stopping = 1;
    apr_thread_cond_broadcast(q->work);
    apr_thread_cond_broadcast(q->wake);
    apr_thread_mutex_unlock(q->mu);
    if (q->scheduler) apr_thread_join(&rv, q->scheduler);
    for (int i = 0; i < q->n_workers; i++)
        if (q->workers[i]) apr_thread_join(&rv, q->workers[i]);
    q->scheduler = NULL;
    q->n_workers = 0;
    /* Jobs never started: their recipients stay pending in the store. */
    for (apr_hash_index_t *hi = apr_hash_first(NULL, q->dests); hi;) {
        void *k = (void *)apr_hash_this_key(hi);
        queue_dest_t *d = apr_hash_this_val(hi);
        hi = apr_hash_next(hi);
        for (queue_job_t *j; (j = queue_pop(q, d));)
            apr_pool_destroy(j->pool);
        apr_hash_set(q->dests, k, APR_HASH_KEY_STRING, NULL);
        free(k);
        free(d);
    }
    for (apr_hash_index_t *hi = apr_hash_first(NULL, q->inflight); hi;) {
        queue_inflight_t *f = apr_hash_this_val(hi);
        hi = apr_hash_next(hi);
        apr_hash_set(q->inflight, &f->id, sizeof(f->id), NULL);
        free(f);
    }
}

void queue_stats(queue_t *q, queue_stats_t *out)
{
    apr_thread_mutex_lock(q->mu);
    *out = q->stats;
    apr_thread_mutex_unlock(q->mu);
}
