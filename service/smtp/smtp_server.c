/* The SMTP server session: RFC 5321 state machine with the extensions
 * PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152),
 * ENHANCEDSTATUSCODES (RFC 2034, RFC 3463), DSN (RFC 3461), ETRN
 * (RFC 1985), STARTTLS (RFC 3207), AUTH PLAIN and LOGIN (RFC 4954,
 * RFC 4616), CHUNKING (RFC 3030) and SMTPUTF8 (RFC 6531). Recipients
 * resolve through the directory at RCPT time; mail is acknowledged only
 * once the store says it is durable. Mailbox quotas are enforced at RCPT
 * (with the SIZE= estimate) and at the end of the data (with the real
 * size): 452 4.2.2 mailbox full, 552 5.2.2 larger than the quota (RFC 3463
 * X.2.2, RFC 1870 6). Mail loops are cut at SMTP_MAX_HOPS Received: fields
 * (RFC 5321 6.3). Authenticated users may relay to at most [outbound]
 * max_recipients_per_day remote recipients per UTC day.
 *
 * DSN requests (RFC 3461) of relayed recipients are queued with them; the
 * queue reports on them. A local recipient that asked for NOTIFY=SUCCESS
 * gets its report here, right after the delivery. Expansion (RFC 3461
 * 6.2.7): a mailing list is a final delivery ("delivered" for the list;
 * its members are a new submission and get no NOTIFY or ORCPT, so the
 * queue's defaults apply to them); an alias to one address passes NOTIFY
 * and ORCPT on; an alias to several is "expanded" and passes them on
 * without SUCCESS. An alias without an ORCPT passes "rfc822;<alias>", so
 * that a report names the address the sender used. */
#include "service/smtp/smtp.h"
#include "service/core/log.h"
#include "service/core/fiber.h"
#include "service/core/penalty.h"
#include "service/core/sasl.h"
#include "service/core/status.h"
#include "service/mime/date.h"
#include "service/mime/header.h"
#include "service/dsn/bounce.h"
#include "service/smtp/smtp_data.h"
#include "service/smtp/smtp_parse.h"
#include "service/smtp/srs.h"

#include <apr_hash.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_time.h>
#include <ctype.h>
#include <openssl/rand.h>
#include <string.h>
#include <strings.h>

/* Remote recipients an authenticated user relayed today. */
typedef struct smtp_sent_t {
    int count;
    int warned; /* the limit was hit and logged */
} smtp_sent_t;

struct smtp_server_t {
    const pr_config_t *cfg;
    dir_t *dir;
    store_t *store;
    pr_tls_t *tls;
    pr_penalty_t *penalty; /* failed logins per client address, shared */
    smtp_service_t services[3];
    smtp_queue_kick_fn queue_kick; /* may be NULL */
    void *queue_ctx;
    srs_t *srs; /* may be NULL */
    /* [outbound] max_recipients_per_day: user -> smtp_sent_t for the UTC
     * day sent_day, in sent_pool, which is emptied when the day changes
     * (so it holds at most one entry per user who relayed today). In
     * memory only: a restart forgets the day's counts. */
    apr_thread_mutex_t *sent_mu;
    apr_pool_t *sent_pool;
    apr_hash_t *sent;
    apr_int64_t sent_day;
};

void smtp_server_set_queue(smtp_server_t *srv, smtp_queue_kick_fn kick, void *ctx)
{
    srv->queue_kick = kick;
    srv->queue_ctx = ctx;
}

void smtp_server_set_srs(smtp_server_t *srv, srs_t *srs)
{
    srv->srs = srs;
}

typedef enum { ST_GREET = 0, ST_READY, ST_MAIL, ST_RCPT } smtp_state_e;
#define ST(x) (1u << (x))
#define ST_ANY (ST(ST_GREET) | ST(ST_READY) | ST(ST_MAIL) | ST(ST_RCPT))

static const char *const smtp_state_names[] = {"greet", "ready", "mail", "rcpt"};

typedef struct smtp_txn_t {
    apr_pool_t *pool;
    const char *sender; /* "" for <> */
    int smtputf8;
    int body8;                 /* BODY=8BITMIME */
    store_ret_e ret;           /* RET= (RFC 3461 4.3) */
    const char *envid;         /* ENVID= (RFC 3461 4.4), NULL if none */
    apr_array_header_t *local; /* const char*: mailbox owners, deduplicated */
    apr_hash_t *local_set;
    apr_array_header_t *remote;     /* const char*: relayed addresses, deduplicated */
    apr_array_header_t *remote_dsn; /* store_rcpt_dsn_t, one per remote */
    apr_hash_t *remote_set;
    apr_array_header_t *success; /* bounce_rcpt_t: local NOTIFY=SUCCESS reports */
    int sent_reserved;           /* counted against max_recipients_per_day */
    apr_int64_t sent_day;        /* ... on this UTC day */
    int rcpts;                   /* accepted RCPT commands */
    int rcpts_refused;
    apr_off_t size_decl; /* MAIL SIZE= (RFC 1870), -1 if not given */
    apr_hash_t *quota;   /* mailbox owner -> apr_off_t*: its limit, 0 = none */
    int bdat;            /* BDAT chunks are being received */
    int bdat_failed;     /* a chunk was refused: the rest are read and refused */
    smtp_data_t data;
    pr_hdrscan_t hdr;
    const char *id;
} smtp_txn_t;

typedef struct smtp_sess_t {
    pr_session_t *s;
    smtp_server_t *srv;
    const pr_config_t *cfg;
    smtp_service_e kind;
    pr_conn_t *conn;
    apr_pool_t *cmd_pool;
    smtp_state_e state;
    int esmtp;
    const char *helo;
    const char *auth_user;
    const char *tls_desc;
    int relay_client; /* peer inside relay_networks */
    int errors;
    int quit;
    unsigned txn_seq;
    int in_txn;
    smtp_txn_t txn;
    store_body_t *body;
    store_reader_t *reader; /* for quota checks; opened on first use */
} smtp_sess_t;

/* ---- replies */

static int smtp_reply(smtp_sess_t *ss, const char *line)
{
    if (line[0] == '4' || line[0] == '5') {
        ss->errors++;
        pr_log_info(ss->s->sid, "reply: %s", line);
    }
    pr_conn_puts(ss->conn, line);
    return pr_conn_write(ss->conn, "\r\n", 2) == APR_SUCCESS;
}

static void smtp_replyf(smtp_sess_t *ss, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void smtp_replyf(smtp_sess_t *ss, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *line = apr_pvsprintf(ss->cmd_pool, fmt, ap);
    va_end(ap);
    smtp_reply(ss, line);
}

static void smtp_enter_state(smtp_sess_t *ss, smtp_state_e st)
{
    if (ss->state != st)
        pr_log_debug(ss->s->sid, "state %s -> %s", smtp_state_names[ss->state],
                     smtp_state_names[st]);
    ss->state = st;
}

/* ---- the per-user daily relay limit ([outbound] max_recipients_per_day) */

/* The UTC calendar day: the limit's window. A calendar day rather than a
 * sliding 24 hours: one counter per user, and "you can send again
 * tomorrow" is what a school's users understand. */
static apr_int64_t smtp_utc_day(void)
{
    return (apr_int64_t)(apr_time_sec(apr_time_now()) / 86400);
}

/* Count n more remote recipients for user today. 0 if that would go over
 * the limit (nothing is counted then); the first time a user hits it is
 * logged as a warning: a school account that suddenly sends to hundreds
 * of outside addresses is usually a stolen password. */
static int smtp_sent_reserve(smtp_sess_t *ss, int n, apr_int64_t *day_r)
{
    smtp_server_t *srv = ss->srv;
    int limit = ss->cfg->outbound.max_recipients_per_day, ok, first = 0;
    apr_int64_t day = smtp_utc_day();
    *day_r = day;
    if (limit <= 0) return 1;
    apr_thread_mutex_lock(srv->sent_mu);
    if (day != srv->sent_day) {
        apr_pool_clear(srv->sent_pool);
        srv->sent = apr_hash_make(srv->sent_pool);
        srv->sent_day = day;
    }
    smtp_sent_t *e = apr_hash_get(srv->sent, ss->auth_user, APR_HASH_KEY_STRING);
    if (!e) {
        e = apr_pcalloc(srv->sent_pool, sizeof(*e));
        apr_hash_set(srv->sent, apr_pstrdup(srv->sent_pool, ss->auth_user), APR_HASH_KEY_STRING, e);
    }
    ok = e->count + n <= limit;
    if (ok)
        e->count += n;
    else if (!e->warned)
        first = e->warned = 1;
    apr_thread_mutex_unlock(srv->sent_mu);
    if (first)
        pr_log_warn(ss->s->sid,
                    "user %s reached [outbound] max_recipients_per_day (%d) from %s; further "
                    "remote recipients refused until tomorrow (UTC) - a stolen password?",
                    ss->auth_user, limit, ss->s->peer_ip);
    return ok;
}

/* Give back what a transaction counted but did not send. */
static void smtp_sent_release(smtp_sess_t *ss, int n, apr_int64_t day)
{
    smtp_server_t *srv = ss->srv;
    if (n <= 0 || ss->cfg->outbound.max_recipients_per_day <= 0) return;
    apr_thread_mutex_lock(srv->sent_mu);
    smtp_sent_t *e =
        day == srv->sent_day ? apr_hash_get(srv->sent, ss->auth_user, APR_HASH_KEY_STRING) : NULL;
    if (e) e->count = e->count > n ? e->count - n : 0;
    apr_thread_mutex_unlock(srv->sent_mu);
}

/* ---- transactions */

static void smtp_txn_end(smtp_sess_t *ss)
{
    if (!ss->in_txn) return;
    smtp_sent_release(ss, ss->txn.sent_reserved, ss->txn.sent_day);
    store_body_reset(ss->body);
    apr_pool_destroy(ss->txn.pool);
    memset(&ss->txn, 0, sizeof(ss->txn));
    ss->in_txn = 0;
    pr_session_set_busy(ss->s, 0);
    if (ss->state > ST_READY) smtp_enter_state(ss, ST_READY);
}

static void smtp_txn_begin(smtp_sess_t *ss, const char *sender, int smtputf8)
{
    smtp_txn_t *t = &ss->txn;
    memset(t, 0, sizeof(*t));
    apr_pool_create(&t->pool, ss->s->pool);
    t->sender = apr_pstrdup(t->pool, sender);
    t->smtputf8 = smtputf8;
    t->local = apr_array_make(t->pool, 4, sizeof(const char *));
    t->local_set = apr_hash_make(t->pool);
    t->remote = apr_array_make(t->pool, 2, sizeof(const char *));
    t->remote_dsn = apr_array_make(t->pool, 2, sizeof(store_rcpt_dsn_t));
    t->remote_set = apr_hash_make(t->pool);
    t->success = apr_array_make(t->pool, 1, sizeof(bounce_rcpt_t));
    t->size_decl = -1;
    t->quota = apr_hash_make(t->pool);
    t->id = apr_psprintf(t->pool, "%s.%u", ss->s->sid, ++ss->txn_seq);
    ss->in_txn = 1;
    pr_session_set_busy(ss->s, 1);
}

static void smtp_txn_add(apr_array_header_t *arr, apr_hash_t *set, const char *addr,
                         apr_pool_t *pool)
{
    if (apr_hash_get(set, addr, APR_HASH_KEY_STRING)) return;
    addr = apr_pstrdup(pool, addr);
    apr_hash_set(set, addr, APR_HASH_KEY_STRING, addr);
    APR_ARRAY_PUSH(arr, const char *) = addr;
}

/* A relayed recipient with its DSN request; the first RCPT naming an
 * address decides its request. */
static void smtp_txn_remote(smtp_txn_t *t, const char *addr, unsigned notify, const char *orcpt)
{
    if (apr_hash_get(t->remote_set, addr, APR_HASH_KEY_STRING)) return;
    smtp_txn_add(t->remote, t->remote_set, addr, t->pool);
    store_rcpt_dsn_t *d = &APR_ARRAY_PUSH(t->remote_dsn, store_rcpt_dsn_t);
    d->notify = notify;
    d->orcpt = orcpt ? apr_pstrdup(t->pool, orcpt) : NULL;
}

/* A local report to make once the message is stored. */
static void smtp_txn_success(smtp_txn_t *t, const char *addr, const char *orcpt,
                             bounce_action_e action, const char *reason)
{
    bounce_rcpt_t *b = &APR_ARRAY_PUSH(t->success, bounce_rcpt_t);
    memset(b, 0, sizeof(*b));
    b->address = apr_pstrdup(t->pool, addr);
    b->orcpt = orcpt ? apr_pstrdup(t->pool, orcpt) : NULL;
    b->action = action;
    b->reply = apr_pstrdup(t->pool, reason);
}

/* RCPT NOTIFY= as the store keeps it. */
static unsigned smtp_notify_store(unsigned notify)
{
    return (notify & SMTP_DSN_NEVER ? STORE_NOTIFY_NEVER : 0) |
           (notify & SMTP_DSN_SUCCESS ? STORE_NOTIFY_SUCCESS : 0) |
           (notify & SMTP_DSN_FAILURE ? STORE_NOTIFY_FAILURE : 0) |
           (notify & SMTP_DSN_DELAY ? STORE_NOTIFY_DELAY : 0);
}

/* ---- EHLO, HELO */

static void smtp_act_helo(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    smtp_txn_end(ss);
    ss->helo = apr_pstrdup(ss->s->pool, cmd->arg);
    ss->esmtp = 0;
    smtp_enter_state(ss, ST_READY);
    smtp_replyf(ss, "250 %s", ss->cfg->server.hostname);
}

static int smtp_auth_offered(const smtp_sess_t *ss)
{
    return ss->kind != SMTP_SERVICE_MX && !ss->auth_user &&
           (ss->tls_desc || ss->cfg->smtp.allow_plaintext_auth);
}

static void smtp_act_ehlo(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    pr_conn_t *c = ss->conn;
    smtp_txn_end(ss);
    ss->helo = apr_pstrdup(ss->s->pool, cmd->arg);
    ss->esmtp = 1;
    smtp_enter_state(ss, ST_READY);
    pr_conn_printf(c, "250-%s Hello %s [%s]\r\n", ss->cfg->server.hostname, ss->helo,
                   ss->s->peer_ip);
    pr_conn_puts(c, "250-PIPELINING\r\n");
    pr_conn_printf(c, "250-SIZE %" APR_OFF_T_FMT "\r\n", ss->cfg->smtp.max_message_size);
    pr_conn_puts(c, "250-8BITMIME\r\n");
    pr_conn_puts(c, "250-ENHANCEDSTATUSCODES\r\n");
    pr_conn_puts(c, "250-DSN\r\n");
    pr_conn_puts(c, "250-ETRN\r\n");
    if (!ss->tls_desc) pr_conn_puts(c, "250-STARTTLS\r\n");
    if (smtp_auth_offered(ss)) pr_conn_puts(c, "250-AUTH PLAIN LOGIN\r\n");
    pr_conn_puts(c, "250-CHUNKING\r\n");
    pr_conn_puts(c, "250 SMTPUTF8\r\n");
}

/* ---- STARTTLS (RFC 3207) */

static void smtp_act_starttls(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    (void)cmd;
    if (ss->tls_desc) {
        smtp_reply(ss, "503 5.5.1 TLS already active");
        return;
    }
    if (ss->state == ST_GREET) {
        smtp_reply(ss, "503 5.5.1 Send EHLO first");
        return;
    }
    smtp_reply(ss, "220 2.0.0 Ready to start TLS");
    if (pr_conn_flush(ss->conn) != APR_SUCCESS) {
        ss->quit = 1;
        return;
    }
    /* Anything the client pipelined after STARTTLS arrived in plaintext and
     * must not be executed inside the TLS session (CVE-2011-0411). */
    if (pr_conn_pending(ss->conn) > 0)
        pr_log_warn(ss->s->sid, "discarded %lu bytes pipelined after STARTTLS",
                    (unsigned long)pr_conn_pending(ss->conn));
    pr_conn_discard_input(ss->conn);
    pr_tls_ctx_t *ctx = pr_tls_acquire(ss->srv->tls);
    apr_status_t st = pr_conn_start_tls(ss->conn, ctx);
    if (st != APR_SUCCESS) {
        char buf[120];
        pr_log_info(ss->s->sid, "TLS handshake failed: %s", pr_strerror(st, buf, sizeof(buf)));
        ss->quit = 1;
        return;
    }
    ss->tls_desc = pr_conn_tls_description(ss->conn, ss->s->pool);
    pr_log_info(ss->s->sid, "TLS established: %s", ss->tls_desc);
    /* RFC 3207 4.2: forget everything learned before TLS. */
    smtp_txn_end(ss);
    ss->helo = NULL;
    ss->esmtp = 0;
    smtp_enter_state(ss, ST_GREET);
}

/* ---- AUTH (RFC 4954) */

/* Read one SASL response line. NULL if the client cancelled ("*"), timed
 * out, or sent bad base64 (a reply has been sent then). */
static const char *smtp_sasl_read(smtp_sess_t *ss, const char *challenge, apr_size_t *len_r)
{
    char *line;
    apr_size_t len;
    smtp_reply(ss, challenge);
    apr_status_t st = pr_conn_read_line(ss->conn, &line, &len, SMTP_AUTH_LINE_MAX, NULL);
    if (st == PR_ELINE) {
        smtp_reply(ss, "500 5.5.6 Authentication exchange line is too long");
        return NULL;
    }
    if (st != APR_SUCCESS) {
        ss->quit = 1;
        return NULL;
    }
    if (len == 1 && line[0] == '*') {
        smtp_reply(ss, "501 5.0.0 Authentication cancelled");
        return NULL;
    }
    const char *out = pr_b64_decode_strict(line, len_r, ss->cmd_pool);
    memset(line, 0, len);
    if (!out) smtp_reply(ss, "501 5.5.2 Cannot decode response");
    return out;
}

static const char *smtp_initial(smtp_sess_t *ss, const char *ir, apr_size_t *len_r)
{
    if (strcmp(ir, "=") == 0) {
        *len_r = 0;
        return "";
    }
    const char *out = pr_b64_decode_strict(ir, len_r, ss->cmd_pool);
    if (!out) smtp_reply(ss, "501 5.5.2 Cannot decode response");
    return out;
}

static void smtp_auth_check(smtp_sess_t *ss, const char *authz, const char *login,
                            const char *password)
{
    const char *user;
    pr_penalty_t *pen = ss->srv->penalty;
    if (pr_penalty_blocked(pen, ss->s->peer_ip)) {
        pr_log_info(ss->s->sid, "auth refused: too many failed logins from %s", ss->s->peer_ip);
        smtp_reply(ss, "454 4.7.0 Too many failed logins, try again later");
        return;
    }
    apr_status_t st = dir_authenticate(ss->srv->dir, login, password, &user, ss->cmd_pool);
    if (st == APR_SUCCESS && authz && *authz) {
        const char *nz = dir_address_normalize(authz, ss->cmd_pool);
        if (!nz || strcmp(nz, user) != 0) st = PR_EAUTH;
    }
    if (st == APR_SUCCESS) {
        pr_penalty_success(pen, ss->s->peer_ip);
        ss->auth_user = apr_pstrdup(ss->s->pool, user);
        pr_log_info(ss->s->sid, "auth ok: %s", user);
        smtp_reply(ss, "235 2.7.0 Authentication successful");
    } else if (st == PR_ETEMPFAIL) {
        pr_log_warn(ss->s->sid, "auth temporary failure for %.100s", login);
        smtp_reply(ss, "454 4.7.0 Temporary authentication failure");
    } else {
        pr_log_info(ss->s->sid, "auth failed for %.100s from %s", login, ss->s->peer_ip);
        pr_sleep(pr_penalty_fail(pen, ss->s->peer_ip));
        smtp_reply(ss, "535 5.7.8 Authentication credentials invalid");
    }
}

static void smtp_act_auth(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    apr_size_t len;
    if (ss->kind == SMTP_SERVICE_MX) {
        smtp_reply(ss, "503 5.5.1 AUTH not available on this port; use submission");
        return;
    }
    if (ss->auth_user) {
        smtp_reply(ss, "503 5.5.1 Already authenticated");
        return;
    }
    if (ss->state == ST_GREET) {
        smtp_reply(ss, "503 5.5.1 Send EHLO first");
        return;
    }
    if (ss->in_txn) {
        smtp_reply(ss, "503 5.5.1 AUTH not allowed during a mail transaction");
        return;
    }
    if (!ss->tls_desc && !ss->cfg->smtp.allow_plaintext_auth) {
        smtp_reply(ss, "538 5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    if (strcmp(cmd->mechanism, "PLAIN") == 0) {
        const char *msg = cmd->initial_response ? smtp_initial(ss, cmd->initial_response, &len)
                                                : smtp_sasl_read(ss, "334 ", &len);
        if (!msg) return;
        /* authzid NUL authcid NUL passwd (RFC 4616) */
        const char *authz, *authc, *pass;
        if (pr_sasl_plain_parse(msg, len, &authz, &authc, &pass) != APR_SUCCESS) {
            smtp_reply(ss, "501 5.5.2 Malformed PLAIN response");
            return;
        }
        smtp_auth_check(ss, authz, authc, pass);
        memset((char *)msg, 0, len);
    } else if (strcmp(cmd->mechanism, "LOGIN") == 0) {
        const char *user = cmd->initial_response ? smtp_initial(ss, cmd->initial_response, &len)
                                                 : smtp_sasl_read(ss, "334 VXNlcm5hbWU6", &len);
        if (!user) return;
        if (memchr(user, '\0', len) || len == 0) {
            smtp_reply(ss, "501 5.5.2 Malformed LOGIN response");
            return;
        }
        const char *pass = smtp_sasl_read(ss, "334 UGFzc3dvcmQ6", &len);
        if (!pass) return;
        if (memchr(pass, '\0', len) || len == 0) {
            smtp_reply(ss, "501 5.5.2 Malformed LOGIN response");
            return;
        }
        smtp_auth_check(ss, NULL, user, pass);
        memset((char *)pass, 0, len);
    } else {
        smtp_reply(ss, "504 5.5.4 Unrecognized authentication mechanism");
    }
}

/* ---- MAIL, RCPT */

static void smtp_act_mail(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    const pr_config_t *cfg = ss->cfg;
    if (ss->kind != SMTP_SERVICE_MX && !ss->auth_user) {
        smtp_reply(ss, "530 5.7.0 Authentication required");
        return;
    }
    if (cmd->size > cfg->smtp.max_message_size) {
        smtp_reply(ss, "552 5.3.4 Message size exceeds fixed maximum message size");
        return;
    }
    if (cmd->smtputf8 && !ss->esmtp) {
        smtp_reply(ss, "555 5.5.4 SMTPUTF8 requires EHLO");
        return;
    }
    const char *sender = cmd->path.null ? "" : cmd->path.address;
    if (ss->auth_user) {
        /* A pupil may not send as the head teacher (RFC 6409 6.1). */
        const char *norm = cmd->path.null ? NULL : dir_address_normalize(sender, ss->cmd_pool);
        apr_status_t st =
            norm ? dir_sender_allowed(ss->srv->dir, ss->auth_user, norm, ss->cmd_pool) : PR_EPERM;
        if (st == PR_ETEMPFAIL) {
            smtp_reply(ss, "451 4.4.3 Directory temporarily unavailable");
            return;
        }
        if (st != APR_SUCCESS) {
            pr_log_info(ss->s->sid, "sender <%s> refused for user %s", sender, ss->auth_user);
            smtp_replyf(ss, "553 5.7.1 <%s>: Sender address not owned by user %s", sender,
                        ss->auth_user);
            return;
        }
    }
    apr_status_t st = store_check_space(ss->srv->store, pr_config_min_free_space(cfg));
    if (st != APR_SUCCESS) {
        pr_log_warn(ss->s->sid, "refusing mail: low disk space in %s", cfg->server.data_dir);
        smtp_reply(ss, "452 4.3.1 Insufficient system storage");
        return;
    }
    smtp_txn_begin(ss, sender, cmd->smtputf8);
    ss->txn.size_decl = cmd->size;
    ss->txn.body8 = cmd->body == SMTP_BODY_8BITMIME;
    ss->txn.ret = cmd->ret == SMTP_DSN_RET_FULL   ? STORE_RET_FULL
                  : cmd->ret == SMTP_DSN_RET_HDRS ? STORE_RET_HDRS
                                                  : STORE_RET_DEFAULT;
    ss->txn.envid = cmd->envid ? apr_pstrdup(ss->txn.pool, cmd->envid) : NULL;
    smtp_enter_state(ss, ST_MAIL);
    smtp_reply(ss, "250 2.1.0 Ok");
}

/* ---- quotas */

typedef enum {
    SMTP_QUOTA_OK = 0,
    SMTP_QUOTA_FULL,  /* no room now: 452 4.2.2 */
    SMTP_QUOTA_NEVER, /* larger than the quota itself: 552 5.2.2 */
} smtp_quota_e;

/* The limit of a mailbox owner: their own, else [store] default_quota;
 * 0 = none. quota: theirs as the directory's resolution gave it, or
 * DIR_QUOTA_UNKNOWN (then the directory is asked). PR_ETEMPFAIL if the
 * directory cannot say. */
static apr_status_t smtp_quota_limit(smtp_sess_t *ss, const char *user, apr_off_t quota,
                                     apr_off_t *limit_r)
{
    apr_off_t *known = apr_hash_get(ss->txn.quota, user, APR_HASH_KEY_STRING);
    dir_user_t *u;
    if (known) {
        *limit_r = *known;
        return APR_SUCCESS;
    }
    if (quota != DIR_QUOTA_UNKNOWN) {
        *limit_r = quota >= 0 ? quota : ss->cfg->store.default_quota;
        return APR_SUCCESS;
    }
    apr_status_t st = dir_user_get(ss->srv->dir, user, &u, ss->cmd_pool);
    if (st == PR_ENOTFOUND) {
        /* Deleted since it resolved: the mail is stored all the same (an
         * admin may still read it), under the default limit. */
        *limit_r = ss->cfg->store.default_quota;
        return APR_SUCCESS;
    }
    if (st != APR_SUCCESS) return PR_ETEMPFAIL;
    *limit_r = u->quota >= 0 ? u->quota : ss->cfg->store.default_quota;
    return APR_SUCCESS;
}

/* Would a message of size octets (-1: not known yet) fit user's mailbox
 * now? The usage is the store's running total: one read, however big the
 * mailbox. PR_EIO if the store cannot be read. */
static apr_status_t smtp_quota_check(smtp_sess_t *ss, const char *user, apr_off_t limit,
                                     apr_off_t size, smtp_quota_e *q_r)
{
    apr_off_t used = 0;
    apr_status_t st;
    *q_r = SMTP_QUOTA_OK;
    if (limit <= 0) return APR_SUCCESS;
    if (size > limit) {
        *q_r = SMTP_QUOTA_NEVER;
        return APR_SUCCESS;
    }
    if (!ss->reader &&
        (st = store_reader_open(&ss->reader, ss->srv->store, ss->s->pool)) != APR_SUCCESS) {
        ss->reader = NULL;
        return st;
    }
    if ((st = store_user_usage(ss->reader, user, NULL, &used)) != APR_SUCCESS) return st;
    if (used >= limit || (size > 0 && used + size > limit)) *q_r = SMTP_QUOTA_FULL;
    return APR_SUCCESS;
}

/* RCPT: check each local mailbox the recipient expands to against the
 * SIZE= estimate. Refuse the recipient when none of its mailboxes has room
 * (552 if the message can never fit any of them, else 452). If only some
 * are full (a list with one full member) it is accepted: refusing would
 * fail every other member, and the full ones get their copy as a logged
 * one-message overshoot (see smtp_deliver). Returns 1 if a reply was sent. */
static int smtp_rcpt_quota(smtp_sess_t *ss, const char *shown, const dir_result_t *r)
{
    smtp_txn_t *t = &ss->txn;
    int n = r->mailboxes->nelts, full = 0, never = 0;
    apr_off_t *limits = apr_palloc(ss->cmd_pool, sizeof(*limits) * (apr_size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        const char *m = APR_ARRAY_IDX(r->mailboxes, i, const char *);
        smtp_quota_e q;
        if (smtp_quota_limit(ss, m, APR_ARRAY_IDX(r->quotas, i, apr_off_t), &limits[i]) !=
            APR_SUCCESS) {
            t->rcpts_refused++;
            smtp_replyf(ss, "451 4.4.3 <%s>: Directory temporarily unavailable", shown);
            return 1;
        }
        if (smtp_quota_check(ss, m, limits[i], t->size_decl, &q) != APR_SUCCESS) {
            t->rcpts_refused++;
            pr_log_error(ss->s->sid, "cannot read the mailbox usage of %s", m);
            smtp_replyf(ss, "451 4.3.0 <%s>: Temporary local problem, try again later", shown);
            return 1;
        }
        if (q == SMTP_QUOTA_FULL) full++;
        if (q == SMTP_QUOTA_NEVER) never++;
        if (q != SMTP_QUOTA_OK)
            pr_log_info(ss->s->sid,
                        "mailbox %s over quota (limit %" APR_OFF_T_FMT ", size %" APR_OFF_T_FMT
                        ") for <%s>",
                        m, limits[i], t->size_decl, shown);
    }
    if (n > 0 && full + never == n && r->external->nelts == 0) {
        t->rcpts_refused++;
        if (never == n)
            smtp_replyf(ss, "552 5.2.2 <%s>: Mailbox full: message larger than the mailbox quota",
                        shown);
        else
            smtp_replyf(ss, "452 4.2.2 <%s>: Mailbox full, try again later", shown);
        return 1;
    }
    if (full + never)
        pr_log_warn(ss->s->sid, "<%s>: %d of %d mailboxes over quota; accepted for all", shown,
                    full + never, n);
    for (int i = 0; i < n; i++) {
        const char *m = apr_pstrdup(t->pool, APR_ARRAY_IDX(r->mailboxes, i, const char *));
        apr_off_t *l = apr_palloc(t->pool, sizeof(*l));
        *l = limits[i];
        apr_hash_set(t->quota, m, APR_HASH_KEY_STRING, l);
    }
    return 0;
}

/* Add what a local address resolved to, with the DSN requests each part
 * carries (RFC 3461 6.2.7; see the top of this file). */
static void smtp_rcpt_expand(smtp_sess_t *ss, const smtp_cmd_t *cmd, const char *address,
                             const dir_result_t *r)
{
    smtp_txn_t *t = &ss->txn;
    int targets = r->mailboxes->nelts + r->external->nelts;
    unsigned notify = cmd->notify; /* SMTP_DSN_* */
    const char *orcpt = cmd->orcpt;
    int success = (notify & SMTP_DSN_SUCCESS) != 0;

    if (r->kind == DIR_KIND_LIST) {
        if (success)
            smtp_txn_success(t, r->address, orcpt, BOUNCE_DELIVERED, "delivered to the list");
        notify = 0;
        orcpt = NULL;
    } else if (r->kind == DIR_KIND_ALIAS) {
        if (!orcpt) orcpt = apr_pstrcat(ss->cmd_pool, "rfc822;", address, NULL);
        if (targets != 1) {
            if (success)
                smtp_txn_success(t, r->address, orcpt, BOUNCE_EXPANDED,
                                 apr_psprintf(ss->cmd_pool, "expanded to %d addresses", targets));
            notify &= ~(unsigned)SMTP_DSN_SUCCESS;
            if (success && !notify) notify = SMTP_DSN_NEVER;
            success = 0;
        }
    }
    for (int i = 0; i < r->mailboxes->nelts; i++) {
        const char *m = APR_ARRAY_IDX(r->mailboxes, i, const char *);
        smtp_txn_add(t->local, t->local_set, m, t->pool);
        if (success && r->kind != DIR_KIND_LIST)
            smtp_txn_success(t, m, orcpt, BOUNCE_DELIVERED, "delivered to the mailbox");
    }
    for (int i = 0; i < r->external->nelts; i++)
        smtp_txn_remote(t, APR_ARRAY_IDX(r->external, i, const char *), smtp_notify_store(notify),
                        orcpt);
}

/* The one place that decides whether a recipient is ours, relayed or refused. */
static void smtp_act_rcpt(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    smtp_txn_t *t = &ss->txn;
    const pr_config_t *cfg = ss->cfg;
    apr_pool_t *p = ss->cmd_pool;
    const pr_path_t *path = &cmd->path;
    int may_relay = ss->auth_user || ss->relay_client;
    const char *shown = path->address;
    apr_status_t st;

    if (t->rcpts >= cfg->smtp.max_recipients) {
        smtp_reply(ss, "452 4.5.3 Too many recipients");
        return;
    }
    const char *domain = path->domain;
    const char *address = path->address;
    if (!domain) { /* <postmaster> (RFC 5321 4.1.1.3) */
        domain = cfg->server.domains.n > 0 ? cfg->server.domains.v[0] : cfg->server.hostname;
        address = apr_pstrcat(p, "postmaster@", domain, NULL);
        shown = "postmaster";
    }
    int local = 0;
    if (!path->literal) {
        st = dir_domain_is_local(ss->srv->dir, apr_pstrdup(p, domain));
        if (st == PR_ETEMPFAIL) {
            t->rcpts_refused++;
            smtp_replyf(ss, "451 4.4.3 <%s>: Directory temporarily unavailable", shown);
            return;
        }
        local = st == APR_SUCCESS;
    }
    if (!local) {
        if (!may_relay) {
            t->rcpts_refused++;
            pr_log_info(ss->s->sid, "relay denied: <%s> from %s", shown, ss->s->peer_ip);
            smtp_replyf(ss, "550 5.7.1 <%s>: Relay access denied", shown);
            return;
        }
        char *a = apr_pstrdup(p, address);
        char *at = strrchr(a, '@');
        if (at && !path->literal)
            for (char *q = at + 1; *q; q++)
                *q = (char)tolower((unsigned char)*q);
        if (ss->auth_user && !apr_hash_get(t->remote_set, a, APR_HASH_KEY_STRING)) {
            apr_int64_t day;
            if (!smtp_sent_reserve(ss, 1, &day)) {
                t->rcpts_refused++;
                pr_log_info(ss->s->sid, "<%s> refused: user %s is over max_recipients_per_day",
                            shown, ss->auth_user);
                smtp_replyf(ss,
                            "450 4.7.1 <%s>: Daily limit of outside recipients reached, "
                            "try again tomorrow",
                            shown);
                return;
            }
            if (t->sent_reserved && t->sent_day != day) {
                /* Midnight passed in this transaction: yesterday's count is gone. */
                t->sent_reserved = 0;
            }
            t->sent_reserved++;
            t->sent_day = day;
        }
        smtp_txn_remote(t, a, smtp_notify_store(cmd->notify), cmd->orcpt);
        t->rcpts++;
        smtp_enter_state(ss, ST_RCPT);
        smtp_reply(ss, "250 2.1.5 Ok");
        return;
    }
    /* A bounce of mail we forwarded with an SRS sender: back to where it
     * came from, whoever sends it. Only a valid, recent hash of ours opens
     * this path, so it is no open relay. */
    if (ss->srv->srs && !path->quoted) {
        const char *orig;
        st = srs_reverse(ss->srv->srs, address, apr_time_now(), &orig, p);
        if (st == APR_SUCCESS) {
            char *a = apr_pstrdup(p, orig);
            for (char *q = strrchr(a, '@') + 1; *q; q++)
                *q = (char)tolower((unsigned char)*q);
            pr_log_info(ss->s->sid, "SRS <%s> -> <%s>", shown, a);
            smtp_txn_remote(t, a, 0, NULL);
            t->rcpts++;
            smtp_enter_state(ss, ST_RCPT);
            smtp_reply(ss, "250 2.1.5 Ok");
            return;
        }
        if (st != PR_ENOTFOUND) {
            t->rcpts_refused++;
            pr_log_info(ss->s->sid, "invalid SRS address <%s>: %s", shown,
                        st == PR_EPERM ? "expired" : "bad hash or form");
            smtp_replyf(ss, "550 5.1.1 <%s>: Invalid or expired SRS address", shown);
            return;
        }
    }
    /* A local domain: only an exact directory match is local. '%', '!' and
     * quoted local parts never are (no relaying through our own domain). */
    const char *norm = path->quoted ? NULL : dir_address_normalize(address, p);
    dir_result_t *r = NULL;
    st = norm ? dir_resolve(ss->srv->dir, norm, &r, p) : PR_EINVAL;
    if (st == PR_ETEMPFAIL) {
        t->rcpts_refused++;
        smtp_replyf(ss, "451 4.4.3 <%s>: Directory temporarily unavailable", shown);
        return;
    }
    if (st == PR_EINVAL && !may_relay) {
        t->rcpts_refused++;
        pr_log_info(ss->s->sid, "relay denied: <%s> from %s", shown, ss->s->peer_ip);
        smtp_replyf(ss, "550 5.7.1 <%s>: Relay access denied", shown);
        return;
    }
    if (st == PR_ETOOMANY) {
        t->rcpts_refused++;
        pr_log_warn(ss->s->sid, "<%s> expands to too many addresses", shown);
        smtp_replyf(ss, "550 5.2.4 <%s>: Mailing list expansion problem", shown);
        return;
    }
    if (st != APR_SUCCESS) {
        t->rcpts_refused++;
        pr_log_info(ss->s->sid, "unknown recipient <%s>", shown);
        smtp_replyf(ss, "550 5.1.1 <%s>: Recipient address rejected: User unknown", shown);
        return;
    }
    /* Before the quota check: a sender the list refuses learns nothing of
     * its members' mailboxes. */
    const dir_list_policy_t *refused = NULL;
    st = dir_post_allowed(ss->srv->dir, r, t->sender, ss->auth_user, &refused, p);
    if (st == PR_ETEMPFAIL) {
        t->rcpts_refused++;
        smtp_replyf(ss, "451 4.4.3 <%s>: Directory temporarily unavailable", shown);
        return;
    }
    if (st != APR_SUCCESS) {
        t->rcpts_refused++;
        pr_log_info(ss->s->sid, "list %s (posting: %s) refused <%s> from <%s>%s%s", refused->list,
                    dir_post_policy_name(refused->policy), shown, t->sender,
                    ss->auth_user ? ", user " : "", ss->auth_user ? ss->auth_user : "");
        if (refused->policy == DIR_POST_LOCAL)
            smtp_replyf(ss,
                        "550 5.7.1 <%s>: Only authenticated local senders may post to this list",
                        shown);
        else
            smtp_replyf(ss, "550 5.7.1 <%s>: Only members may post to this list", shown);
        return;
    }
    if (smtp_rcpt_quota(ss, shown, r)) return;
    smtp_rcpt_expand(ss, cmd, address, r);
    t->rcpts++;
    smtp_enter_state(ss, ST_RCPT);
    smtp_reply(ss, "250 2.1.5 Ok");
}

/* The envelope sender of the queued copy: SRS-rewritten when the sender's
 * domain is not ours, so the receiver's SPF check sees our domain and a
 * bounce comes back through us. NULL: the directory cannot say now. */
static const char *smtp_remote_sender(smtp_sess_t *ss, apr_pool_t *p)
{
    const char *sender = ss->txn.sender;
    const char *at = strrchr(sender, '@');
    if (!ss->srv->srs || !*sender || !at) return sender;
    apr_status_t st = dir_domain_is_local(ss->srv->dir, apr_pstrdup(p, at + 1));
    if (st == APR_SUCCESS) return sender;
    if (st != PR_ENOTFOUND) return NULL;
    const char *srs = srs_forward(ss->srv->srs, sender, apr_time_now(), p);
    return srs ? srs : sender;
}

/* ---- delivery */

/* RFC 3848 / RFC 6531 transmission type for the Received "with" clause. */
static const char *smtp_with(const smtp_sess_t *ss)
{
    static const char *const names[2][2][2][2] = {
        /* [utf8][esmtp][tls][auth] */
        {{{"SMTP", "SMTP"}, {"SMTP", "SMTP"}}, {{"ESMTP", "ESMTPA"}, {"ESMTPS", "ESMTPSA"}}},
        {{{"UTF8SMTP", "UTF8SMTPA"}, {"UTF8SMTPS", "UTF8SMTPSA"}},
         {{"UTF8SMTP", "UTF8SMTPA"}, {"UTF8SMTPS", "UTF8SMTPSA"}}},
    };
    return names[ss->txn.smtputf8 != 0][ss->esmtp != 0][ss->tls_desc != NULL]
                [ss->auth_user != NULL];
}

/* Trace and missing-origin headers for one copy (rcpt NULL: the relayed copy). */
static const char *smtp_prefix(smtp_sess_t *ss, const char *rcpt, const char *date,
                               const char *extra, apr_pool_t *pool)
{
    const char *facts = "";
    if (ss->tls_desc && ss->auth_user)
        facts = apr_psprintf(pool, "\r\n\t(%s; authenticated as %s)", ss->tls_desc, ss->auth_user);
    else if (ss->tls_desc)
        facts = apr_psprintf(pool, "\r\n\t(%s)", ss->tls_desc);
    else if (ss->auth_user)
        facts = apr_psprintf(pool, "\r\n\t(authenticated as %s)", ss->auth_user);
    return apr_psprintf(pool,
                        "%s%s%s%s"
                        "Received: from %s ([%s])\r\n"
                        "\tby %s (Postroom) with %s id %s%s%s%s%s;\r\n"
                        "\t%s\r\n%s",
                        rcpt ? "Return-Path: <" : "", rcpt ? ss->txn.sender : "", rcpt ? ">" : "",
                        rcpt ? "\r\n" : "", ss->helo ? ss->helo : "unknown", ss->s->peer_ip,
                        ss->cfg->server.hostname, smtp_with(ss), ss->txn.id, facts,
                        rcpt ? "\r\n\tfor <" : "", rcpt ? rcpt : "", rcpt ? ">" : "", date, extra);
}

/* Submission may only use From: addresses the directory gives the user. */
static apr_status_t smtp_check_from(smtp_sess_t *ss, const char **why_r)
{
    const pr_hdrscan_t *h = &ss->txn.hdr;
    apr_array_header_t *addrs;
    if (!ss->auth_user || h->from_count == 0) return APR_SUCCESS;
    if (h->from_count > 1 || h->from_truncated || !h->from ||
        pr_header_addresses(h->from, h->from_len, &addrs, ss->cmd_pool) != APR_SUCCESS) {
        *why_r = "553 5.7.1 Malformed From: header";
        return PR_EPERM;
    }
    for (int i = 0; i < addrs->nelts; i++) {
        const char *a = APR_ARRAY_IDX(addrs, i, const char *);
        const char *norm = dir_address_normalize(a, ss->cmd_pool);
        apr_status_t st =
            norm ? dir_sender_allowed(ss->srv->dir, ss->auth_user, norm, ss->cmd_pool) : PR_EPERM;
        if (st == PR_ETEMPFAIL) {
            *why_r = "451 4.4.3 Directory temporarily unavailable";
            return st;
        }
        if (st != APR_SUCCESS) {
            *why_r = apr_psprintf(ss->cmd_pool, "553 5.7.1 From: <%s> is not an address of user %s",
                                  a, ss->auth_user);
            return PR_EPERM;
        }
    }
    return APR_SUCCESS;
}

/* End of data: the real size of each copy (its own prefix + the body)
 * against each mailbox's quota. There is one reply for all recipients.
 * If no copy fits anywhere (and nothing is relayed), refuse the message and
 * store nothing: 552 5.2.2 if it can never fit any of the mailboxes, else
 * 452 4.2.2. If only some mailboxes would go over, deliver to all of them:
 * RCPT already said 250 to every recipient and there is no bounce path yet,
 * so refusing would fail the mailboxes with room too, and skipping the full
 * ones would lose their copy silently; the overshoot is one message and is
 * logged as a warning.
 * The limits go with the delivery and the store compares them with the
 * usage inside its own transaction (exact, and no read of its own here).
 * This sets each copy's limit; 1 if the message was refused (reply sent). */
static int smtp_deliver_limits(smtp_sess_t *ss, store_local_rcpt_t *rcpts, int n)
{
    for (int i = 0; i < n; i++) {
        if (smtp_quota_limit(ss, rcpts[i].user, DIR_QUOTA_UNKNOWN, &rcpts[i].quota) !=
            APR_SUCCESS) {
            pr_log_error(ss->s->sid, "cannot check the quota of %s; message from <%s> deferred",
                         rcpts[i].user, ss->txn.sender);
            smtp_reply(ss, "451 4.3.0 Error: could not check the mailbox quota, try again later");
            return 1;
        }
    }
    return 0;
}

/* After the store said which copies went over (over[i]), or refused the
 * message (PR_EQUOTA): the log line, and the reply for a refusal. */
static void smtp_deliver_over(smtp_sess_t *ss, const store_local_rcpt_t *rcpts, int n,
                              const int *over, int refused)
{
    apr_off_t body = store_body_size(ss->body);
    int never = 0;
    const char *which = "";
    for (int i = 0; i < n; i++) {
        if (!refused && !over[i]) continue;
        if (rcpts[i].quota > 0 && body + (apr_off_t)rcpts[i].prefix_len > rcpts[i].quota) never++;
        which = apr_pstrcat(ss->cmd_pool, which, *which ? "," : "", rcpts[i].user, NULL);
    }
    if (refused) {
        pr_log_info(ss->s->sid, "message from <%s> size=%" APR_OFF_T_FMT " refused: over quota: %s",
                    ss->txn.sender, body, which);
        smtp_reply(ss, never == n ? "552 5.2.2 Mailbox full: message larger than the mailbox quota"
                                  : "452 4.2.2 Mailbox full, try again later");
    } else if (*which) {
        pr_log_warn(ss->s->sid,
                    "message from <%s> size=%" APR_OFF_T_FMT " goes over the quota of %s; "
                    "delivered anyway (other recipients have room; RCPT was accepted)",
                    ss->txn.sender, body, which);
    }
}

/* The reports asked for with NOTIFY=SUCCESS by local recipients (RFC 3461
 * 6.2.7), delivered once the message is durable, in a second store
 * transaction: a crash between the two loses the report, never the mail.
 * The original's headers come from the stored copy of user (NULL: none
 * stored, no original attached). Returns how many copies were queued for
 * relaying (a report to a remote sender). Failures are logged only: the
 * message itself has been accepted. */
static int smtp_success_dsn(smtp_sess_t *ss, const char *user, apr_array_header_t *uids)
{
    smtp_txn_t *t = &ss->txn;
    apr_pool_t *p = ss->cmd_pool;
    store_delivery_t d = {0};
    store_stream_t *orig = NULL;
    char ebuf[120];

    if (!*t->sender) return 0; /* RFC 3461 6.2: never a report to <> */
    apr_status_t st = bounce_route(ss->srv->dir, t->sender, &d, p);
    if (st != APR_SUCCESS) {
        pr_log_warn(ss->s->sid, "id=%s: no success report: <%s> is %s", t->id, t->sender,
                    st == PR_ETEMPFAIL ? "not resolvable now" : "unknown here");
        return 0;
    }
    if (user && uids && uids->nelts > 0) {
        if (!ss->reader &&
            store_reader_open(&ss->reader, ss->srv->store, ss->s->pool) != APR_SUCCESS)
            ss->reader = NULL;
        if (!ss->reader ||
            store_message_open(&orig, ss->reader, user, NULL, APR_ARRAY_IDX(uids, 0, apr_uint32_t),
                               p) != APR_SUCCESS)
            orig = NULL; /* gone already (expunged): the report goes without it */
    }
    bounce_t b = {0};
    b.reporting_mta = ss->cfg->server.hostname;
    b.sender = t->sender;
    b.envid = t->envid;
    b.arrival = apr_time_now();
    b.ret = t->ret;
    b.n = t->success->nelts;
    b.rcpts = (const bounce_rcpt_t *)t->success->elts;
    /* The original's header goes along, 8-bit octets and all. */
    d.body_flags = t->body8 || t->data.eightbit ? STORE_BODY_8BIT : 0;
    if ((st = store_body_create(&d.body, ss->srv->store, p)) == APR_SUCCESS &&
        (st = bounce_write(d.body, &b, orig, p)) == APR_SUCCESS)
        st = store_deliver(ss->srv->store, &d, NULL, p);
    if (st != APR_SUCCESS) {
        pr_log_error(ss->s->sid, "id=%s: success report to <%s> lost: %s", t->id, t->sender,
                     pr_strerror(st, ebuf, sizeof(ebuf)));
        return 0;
    }
    pr_log_info(ss->s->sid, "id=%s: success report for %d recipient(s) sent to <%s>", t->id, b.n,
                t->sender);
    return d.n_remote;
}

/* The content has been read completely: check it, store it, answer. */
static void smtp_deliver(smtp_sess_t *ss)
{
    smtp_txn_t *t = &ss->txn;
    apr_pool_t *p = ss->cmd_pool;
    const char *why = NULL;

    pr_hdrscan_finish(&t->hdr);
    if (t->data.bare) {
        why = "550 5.6.0 Message refused: bare CR or LF in content (lines must end in CRLF)";
    } else if (t->data.too_big) {
        why = "552 5.3.4 Message size exceeds fixed maximum message size";
    } else if (t->data.sink_status != APR_SUCCESS) {
        why = "451 4.3.0 Error: could not spool the message, try again later";
    } else if (t->hdr.received_count >= SMTP_MAX_HOPS) {
        why = "554 5.4.6 Too many hops: mail loop?";
    } else {
        smtp_check_from(ss, &why);
    }
    if (why) {
        pr_log_info(ss->s->sid, "message from <%s> refused: %s", t->sender, why);
        smtp_reply(ss, why);
        smtp_txn_end(ss);
        return;
    }

    const char *date = pr_date_rfc5322(apr_time_now(), p);
    const char *extra = "";
    if (ss->kind != SMTP_SERVICE_MX) { /* RFC 6409 8.2, 8.3 */
        unsigned char rnd[6];
        RAND_bytes(rnd, sizeof(rnd));
        if (!t->hdr.has_date) extra = apr_pstrcat(p, "Date: ", date, "\r\n", NULL);
        if (!t->hdr.has_message_id)
            extra = apr_psprintf(p, "%sMessage-ID: <%s.%02x%02x%02x%02x%02x%02x@%s>\r\n", extra,
                                 t->id, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5],
                                 ss->cfg->server.hostname);
    }
    int n = t->local->nelts;
    store_local_rcpt_t *rcpts = apr_pcalloc(p, sizeof(*rcpts) * (n ? n : 1));
    for (int i = 0; i < n; i++) {
        rcpts[i].user = APR_ARRAY_IDX(t->local, i, const char *);
        rcpts[i].prefix = smtp_prefix(ss, rcpts[i].user, date, extra, p);
        rcpts[i].prefix_len = strlen(rcpts[i].prefix);
    }
    if (n > 0 && smtp_deliver_limits(ss, rcpts, n)) {
        smtp_txn_end(ss);
        return;
    }
    store_delivery_t d = {0};
    d.sender = t->sender;
    d.body = ss->body;
    d.n_local = n;
    d.local = rcpts;
    d.n_remote = t->remote->nelts;
    d.remote = (const char *const *)t->remote->elts;
    d.remote_dsn = (const store_rcpt_dsn_t *)t->remote_dsn->elts;
    d.envid = t->envid;
    d.ret = t->ret;
    d.body_flags = (t->body8 || t->data.eightbit ? STORE_BODY_8BIT : 0) |
                   (t->smtputf8 ? STORE_BODY_SMTPUTF8 : 0);
    d.over = apr_pcalloc(p, sizeof(*d.over) * (apr_size_t)(n ? n : 1));
    d.refuse_over = 1;
    if (d.n_remote) {
        d.remote_prefix = smtp_prefix(ss, NULL, date, extra, p);
        d.remote_prefix_len = strlen(d.remote_prefix);
        d.remote_sender = smtp_remote_sender(ss, p);
        if (!d.remote_sender) {
            smtp_reply(ss, "451 4.4.3 Directory temporarily unavailable, try again later");
            smtp_txn_end(ss);
            return;
        }
    }
    apr_array_header_t *uids = NULL;
    apr_status_t st = store_deliver(ss->srv->store, &d, &uids, p);
    if (st == PR_EQUOTA || st == APR_SUCCESS)
        smtp_deliver_over(ss, rcpts, n, d.over, st != APR_SUCCESS);
    if (st == PR_EQUOTA) {
        smtp_txn_end(ss);
        return;
    }
    if (st != APR_SUCCESS) {
        char buf[120];
        pr_log_error(ss->s->sid, "store failed for message from <%s>: %s", t->sender,
                     pr_strerror(st, buf, sizeof(buf)));
        smtp_reply(ss, st == PR_ENOSPACE ? "452 4.3.1 Insufficient system storage"
                                         : "451 4.3.0 Error: could not store the message, "
                                           "try again later");
        smtp_txn_end(ss);
        return;
    }
    const char *list = "";
    for (int i = 0; i < n; i++)
        list = apr_pstrcat(p, list, i ? "," : "", rcpts[i].user, NULL);
    for (int i = 0; i < d.n_remote; i++)
        list = apr_pstrcat(p, list, (i || n) ? "," : "", d.remote[i], "(queued)", NULL);
    pr_log_info(ss->s->sid, "accepted id=%s from=<%s> size=%" APR_OFF_T_FMT " rcpts=%s%s", t->id,
                t->sender, store_body_size(ss->body), list, ss->auth_user ? " auth" : "");
    t->sent_reserved = 0; /* sent: the count stays */
    int queued = d.n_remote;
    if (t->success->nelts) queued += smtp_success_dsn(ss, n ? rcpts[0].user : NULL, uids);
    smtp_replyf(ss, "250 2.0.0 Ok: queued as %s", t->id);
    if (queued && ss->srv->queue_kick) ss->srv->queue_kick(ss->srv->queue_ctx, NULL);
    smtp_txn_end(ss);
}

static apr_status_t smtp_sink(void *ctx, const char *data, apr_size_t len)
{
    smtp_sess_t *ss = ctx;
    pr_hdrscan_feed(&ss->txn.hdr, data, len);
    return store_body_append(ss->body, data, len);
}

static void smtp_content_begin(smtp_sess_t *ss, int dot)
{
    smtp_txn_t *t = &ss->txn;
    pr_hdrscan_init(&t->hdr, t->pool);
    smtp_data_init(&t->data, dot, ss->cfg->smtp.max_message_size, smtp_sink, ss);
}

/* ---- DATA */

static void smtp_act_data(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    (void)cmd;
    smtp_txn_t *t = &ss->txn;
    if (ss->state != ST_RCPT || t->bdat) {
        if (ss->in_txn && t->bdat)
            smtp_reply(ss, "503 5.5.1 DATA not allowed after BDAT");
        else if (ss->in_txn && t->rcpts_refused)
            smtp_reply(ss, "554 5.5.1 No valid recipients");
        else
            smtp_reply(ss,
                       ss->in_txn ? "503 5.5.1 Need RCPT command" : "503 5.5.1 Need MAIL command");
        return;
    }
    smtp_reply(ss, "354 End data with <CR><LF>.<CR><LF>");
    smtp_content_begin(ss, 1);
    pr_conn_set_timeout(ss->conn, ss->cfg->smtp.data_timeout);
    while (!t->data.done) {
        const char *buf;
        apr_size_t len;
        apr_status_t st = pr_conn_peek(ss->conn, &buf, &len);
        if (st != APR_SUCCESS) {
            char ebuf[120];
            pr_log_info(ss->s->sid, "connection lost during DATA: %s",
                        pr_strerror(st, ebuf, sizeof(ebuf)));
            if (st == PR_ETIMEOUT) {
                smtp_replyf(ss, "421 4.4.2 %s Error: timeout exceeded", ss->cfg->server.hostname);
            }
            ss->quit = 1;
            smtp_txn_end(ss);
            return;
        }
        pr_conn_consume(ss->conn, smtp_data_feed(&t->data, buf, len));
    }
    smtp_deliver(ss);
}

/* ---- BDAT (RFC 3030) */

/* Read exactly n octets of chunk data into the decoder (or discard them). */
static apr_status_t smtp_bdat_read(smtp_sess_t *ss, apr_off_t n, int keep)
{
    pr_conn_set_timeout(ss->conn, ss->cfg->smtp.data_timeout);
    while (n > 0) {
        const char *buf;
        apr_size_t len;
        apr_status_t st = pr_conn_peek(ss->conn, &buf, &len);
        if (st != APR_SUCCESS) return st;
        if ((apr_off_t)len > n) len = (apr_size_t)n;
        if (keep) smtp_data_feed(&ss->txn.data, buf, len);
        pr_conn_consume(ss->conn, len);
        n -= (apr_off_t)len;
    }
    return APR_SUCCESS;
}

static void smtp_act_bdat(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    smtp_txn_t *t = &ss->txn;
    int usable = ss->state == ST_RCPT && !t->bdat_failed;
    if (usable && !t->bdat) {
        t->bdat = 1;
        smtp_content_begin(ss, 0);
    }
    apr_status_t st = smtp_bdat_read(ss, cmd->chunk_size, usable);
    if (st != APR_SUCCESS) {
        if (st == PR_ETIMEOUT)
            smtp_replyf(ss, "421 4.4.2 %s Error: timeout exceeded", ss->cfg->server.hostname);
        ss->quit = 1;
        smtp_txn_end(ss);
        return;
    }
    if (!usable) {
        /* The chunk has been consumed, so the session stays in sync. */
        if (ss->in_txn && t->bdat_failed)
            smtp_reply(ss, "503 5.5.1 Transaction already failed; send RSET");
        else if (ss->in_txn && t->rcpts_refused)
            smtp_reply(ss, "554 5.5.1 No valid recipients");
        else
            smtp_reply(ss,
                       ss->in_txn ? "503 5.5.1 Need RCPT command" : "503 5.5.1 Need MAIL command");
        if (cmd->last) smtp_txn_end(ss);
        return;
    }
    if (cmd->last) {
        smtp_data_finish(&t->data);
        smtp_deliver(ss);
        return;
    }
    if (t->data.too_big) {
        t->bdat_failed = 1;
        smtp_reply(ss, "552 5.3.4 Message size exceeds fixed maximum message size");
        return;
    }
    smtp_replyf(ss, "250 2.0.0 %" APR_OFF_T_FMT " octets received", cmd->chunk_size);
}

/* ---- the rest */

static void smtp_act_rset(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    (void)cmd;
    smtp_txn_end(ss);
    smtp_reply(ss, "250 2.0.0 Ok");
}

static void smtp_act_noop(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    (void)cmd;
    smtp_reply(ss, "250 2.0.0 Ok");
}

static void smtp_act_quit(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    (void)cmd;
    smtp_replyf(ss, "221 2.0.0 %s closing connection", ss->cfg->server.hostname);
    ss->quit = 1;
}

static void smtp_act_help(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    (void)cmd;
    pr_conn_puts(ss->conn, "214-2.0.0 Commands supported:\r\n"
                           "214-2.0.0   HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT\r\n"
                           "214 2.0.0   HELP VRFY EXPN STARTTLS AUTH ETRN\r\n");
}

/* VRFY/EXPN argument: "<a@b>", "a@b" or "name"; NULL if unusable. */
static const char *smtp_lookup_arg(smtp_sess_t *ss, const char *arg)
{
    apr_size_t n = strlen(arg);
    if (n >= 2 && arg[0] == '<' && arg[n - 1] == '>')
        arg = apr_pstrndup(ss->cmd_pool, arg + 1, n - 2);
    if (!strchr(arg, '@') && ss->cfg->server.domains.n > 0)
        arg = apr_pstrcat(ss->cmd_pool, arg, "@", ss->cfg->server.domains.v[0], NULL);
    return dir_address_normalize(arg, ss->cmd_pool);
}

static void smtp_act_vrfy(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    if (!ss->cfg->smtp.vrfy) {
        smtp_reply(ss, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
        return;
    }
    const char *a = smtp_lookup_arg(ss, cmd->arg);
    dir_result_t *r;
    apr_status_t st = a ? dir_resolve(ss->srv->dir, a, &r, ss->cmd_pool) : PR_ENOTFOUND;
    if (st == APR_SUCCESS)
        smtp_replyf(ss, "250 2.1.5 <%s>", r->address);
    else if (st == PR_ETEMPFAIL)
        smtp_reply(ss, "451 4.4.3 Directory temporarily unavailable");
    else
        smtp_reply(ss, "550 5.1.1 User unknown");
}

static void smtp_act_expn(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    if (!ss->cfg->smtp.expn) {
        smtp_reply(ss, "502 5.5.1 EXPN not available");
        return;
    }
    const char *a = smtp_lookup_arg(ss, cmd->arg);
    dir_result_t *r;
    apr_status_t st = a ? dir_resolve(ss->srv->dir, a, &r, ss->cmd_pool) : PR_ENOTFOUND;
    if (st == PR_ETEMPFAIL) {
        smtp_reply(ss, "451 4.4.3 Directory temporarily unavailable");
        return;
    }
    if (st != APR_SUCCESS) {
        smtp_reply(ss, "550 5.1.1 User unknown");
        return;
    }
    apr_array_header_t *all = apr_array_copy(ss->cmd_pool, r->mailboxes);
    apr_array_cat(all, r->external);
    if (all->nelts == 0) {
        smtp_reply(ss, "550 5.1.1 List has no members");
        return;
    }
    for (int i = 0; i < all->nelts; i++)
        pr_conn_printf(ss->conn, "250%c2.1.5 <%s>\r\n", i + 1 < all->nelts ? '-' : ' ',
                       APR_ARRAY_IDX(all, i, const char *));
}

/* ---- ETRN (RFC 1985) */

/* Pending queued recipients in domain; -1 if the store cannot say. */
static int smtp_etrn_pending(smtp_sess_t *ss, const char *domain)
{
    apr_array_header_t *msgs;
    int n = 0;
    if (!ss->reader && store_reader_open(&ss->reader, ss->srv->store, ss->s->pool) != APR_SUCCESS) {
        ss->reader = NULL;
        return -1;
    }
    if (store_queue_list(ss->reader, 0, &msgs, ss->cmd_pool) != APR_SUCCESS) return -1;
    for (int i = 0; i < msgs->nelts; i++) {
        const store_qmsg_t *m = APR_ARRAY_IDX(msgs, i, const store_qmsg_t *);
        for (int j = 0; j < m->rcpts->nelts; j++) {
            const store_qrcpt_t *r = &APR_ARRAY_IDX(m->rcpts, j, store_qrcpt_t);
            const char *at = strrchr(r->address, '@');
            if (r->state == STORE_Q_PENDING && at && strcasecmp(at + 1, domain) == 0) n++;
        }
    }
    return n;
}

/* ETRN node: make the queued mail for a domain due now. Only for the
 * relay networks and authenticated users (RFC 1985 5: a server may
 * restrict it; anyone else could make us hammer a down site). "@domain"
 * is taken as domain alone (subdomains are optional, 3); "#queue" names
 * are not supported (458). */
static void smtp_act_etrn(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    const char *node = cmd->arg;
    if (ss->state == ST_GREET) {
        smtp_reply(ss, "503 5.5.1 Send HELO/EHLO first");
        return;
    }
    if (ss->in_txn) {
        smtp_reply(ss, "503 5.5.1 ETRN not allowed during a mail transaction");
        return;
    }
    if (!ss->relay_client && !ss->auth_user) {
        pr_log_info(ss->s->sid, "ETRN %s refused for %s", node, ss->s->peer_ip);
        smtp_replyf(ss, "459 4.7.1 Node %s not allowed: client not authorized", node);
        return;
    }
    if (node[0] == '#') {
        smtp_replyf(ss, "458 4.3.0 Unable to queue messages for node %s: no named queues", node);
        return;
    }
    const char *domain = dir_domain_normalize(node[0] == '@' ? node + 1 : node, ss->cmd_pool);
    if (!domain) {
        smtp_reply(ss, "501 5.5.4 Syntax: ETRN [@]domain");
        return;
    }
    int pending = ss->srv->queue_kick ? smtp_etrn_pending(ss, domain) : -1;
    if (pending < 0) {
        smtp_replyf(ss, "458 4.3.0 Unable to queue messages for node %s", domain);
        return;
    }
    pr_log_info(ss->s->sid, "ETRN %s: %d pending recipient(s)", domain, pending);
    if (pending == 0) {
        smtp_replyf(ss, "251 2.0.0 No messages waiting for node %s", domain);
        return;
    }
    ss->srv->queue_kick(ss->srv->queue_ctx, domain);
    smtp_replyf(ss, "250 2.0.0 Queuing for node %s started", domain);
}

static void smtp_act_obsolete(smtp_sess_t *ss, smtp_cmd_t *cmd)
{
    (void)cmd;
    smtp_reply(ss, "502 5.5.1 Command not implemented");
}

typedef struct smtp_cmd_def_t {
    smtp_verb_e verb;
    unsigned states; /* where it is allowed; elsewhere 503 */
    void (*act)(smtp_sess_t *, smtp_cmd_t *);
    const char *refusal;
} smtp_cmd_def_t;

static const smtp_cmd_def_t smtp_commands[] = {
    {SMTP_CMD_HELO, ST_ANY, smtp_act_helo, NULL},
    {SMTP_CMD_EHLO, ST_ANY, smtp_act_ehlo, NULL},
    {SMTP_CMD_MAIL, ST(ST_READY), smtp_act_mail, NULL},
    {SMTP_CMD_RCPT, ST(ST_MAIL) | ST(ST_RCPT), smtp_act_rcpt, "503 5.5.1 Need MAIL command"},
    {SMTP_CMD_DATA, ST_ANY, smtp_act_data, NULL},
    {SMTP_CMD_BDAT, ST_ANY, smtp_act_bdat, NULL},
    {SMTP_CMD_RSET, ST_ANY, smtp_act_rset, NULL},
    {SMTP_CMD_NOOP, ST_ANY, smtp_act_noop, NULL},
    {SMTP_CMD_QUIT, ST_ANY, smtp_act_quit, NULL},
    {SMTP_CMD_HELP, ST_ANY, smtp_act_help, NULL},
    {SMTP_CMD_VRFY, ST_ANY, smtp_act_vrfy, NULL},
    {SMTP_CMD_EXPN, ST_ANY, smtp_act_expn, NULL},
    {SMTP_CMD_STARTTLS, ST_ANY, smtp_act_starttls, NULL},
    {SMTP_CMD_AUTH, ST_ANY, smtp_act_auth, NULL},
    {SMTP_CMD_SEND, ST_ANY, smtp_act_obsolete, NULL},
    {SMTP_CMD_SOML, ST_ANY, smtp_act_obsolete, NULL},
    {SMTP_CMD_SAML, ST_ANY, smtp_act_obsolete, NULL},
    {SMTP_CMD_TURN, ST_ANY, smtp_act_obsolete, NULL},
    {SMTP_CMD_ETRN, ST_ANY, smtp_act_etrn, NULL},
};

static const smtp_cmd_def_t *smtp_command_find(smtp_verb_e verb)
{
    for (size_t i = 0; i < sizeof(smtp_commands) / sizeof(smtp_commands[0]); i++)
        if (smtp_commands[i].verb == verb) return &smtp_commands[i];
    return NULL;
}

static const char *smtp_sequence_reply(const smtp_sess_t *ss, smtp_verb_e verb)
{
    if (verb == SMTP_CMD_MAIL) {
        if (ss->state == ST_GREET) return "503 5.5.1 Send HELO/EHLO first";
        return "503 5.5.1 Nested MAIL command";
    }
    return "503 5.5.1 Bad sequence of commands";
}

/* One command line: parse, check the state, act. */
static void smtp_command(smtp_sess_t *ss, const char *line, apr_size_t len)
{
    smtp_cmd_t cmd;
    const char *reply;
    smtp_verb_e verb = smtp_parse_verb(line, len);
    if (len + 2 > smtp_line_limit(verb)) {
        smtp_reply(ss, "500 5.5.2 Line too long");
        return;
    }
    smtp_parse_opts_t opts = {0};
    opts.smtputf8 = ss->esmtp;
    opts.mail_smtputf8 = ss->in_txn && ss->txn.smtputf8;
    opts.auth = ss->kind != SMTP_SERVICE_MX;
    opts.dsn = ss->esmtp;
    if (smtp_parse(&cmd, line, len, &opts, &reply, ss->cmd_pool) != APR_SUCCESS) {
        /* A BDAT we cannot parse has an unknown length: give up on the session. */
        smtp_reply(ss, reply);
        if (verb == SMTP_CMD_BDAT) {
            smtp_reply(ss, "421 4.5.0 Cannot continue after a malformed BDAT");
            ss->quit = 1;
        }
        return;
    }
    const smtp_cmd_def_t *def = smtp_command_find(cmd.verb);
    if (!def) {
        smtp_reply(ss, "500 5.5.1 Command unrecognized");
        return;
    }
    if (!(def->states & ST(ss->state))) {
        smtp_reply(ss, def->refusal ? def->refusal : smtp_sequence_reply(ss, cmd.verb));
        return;
    }
    def->act(ss, &cmd);
}

static void smtp_session_loop(smtp_sess_t *ss)
{
    const pr_config_t *cfg = ss->cfg;
    char ebuf[120];
    while (!ss->quit) {
        char *line;
        apr_size_t len;
        pr_conn_set_timeout(ss->conn, cfg->smtp.command_timeout);
        apr_status_t st = pr_conn_read_line(ss->conn, &line, &len, SMTP_AUTH_LINE_MAX, NULL);
        if (st == PR_ELINE) {
            smtp_reply(ss, "500 5.5.2 Line too long");
        } else if (st != APR_SUCCESS) {
            if (pr_session_stopping(ss->s)) {
                smtp_replyf(ss, "421 4.3.2 %s Service shutting down", cfg->server.hostname);
            } else if (st == PR_ETIMEOUT) {
                smtp_replyf(ss, "421 4.4.2 %s Error: timeout exceeded", cfg->server.hostname);
                pr_log_info(ss->s->sid, "timeout in state %s", smtp_state_names[ss->state]);
            } else {
                pr_log_info(ss->s->sid, "connection lost: %s", pr_strerror(st, ebuf, sizeof(ebuf)));
            }
            break;
        } else {
            smtp_command(ss, line, len);
        }
        apr_pool_clear(ss->cmd_pool);
        if (!ss->quit && ss->errors >= cfg->smtp.max_errors) {
            smtp_replyf(ss, "421 4.7.0 %s Error: too many errors", cfg->server.hostname);
            pr_log_info(ss->s->sid, "too many errors, disconnecting");
            break;
        }
        if (!ss->quit && !ss->in_txn && pr_session_stopping(ss->s)) {
            smtp_replyf(ss, "421 4.3.2 %s Service shutting down", cfg->server.hostname);
            break;
        }
    }
    smtp_txn_end(ss);
    pr_conn_closing(ss->conn);
    pr_conn_flush(ss->conn);
}

void smtp_session_run(pr_session_t *s)
{
    smtp_service_t *svc = s->service;
    smtp_sess_t *ss = apr_pcalloc(s->pool, sizeof(*ss));
    ss->s = s;
    ss->srv = svc->server;
    ss->cfg = svc->server->cfg;
    ss->kind = svc->kind;
    ss->conn = s->conn;
    ss->state = ST_GREET;
    const pr_config_t *cfg = ss->cfg;
    ss->relay_client =
        cfg->smtp.relay_networks.n > 0 &&
        pr_cidr_match_text(cfg->smtp.relay_networks.v, cfg->smtp.relay_networks.n, s->peer_ip);
    apr_pool_create(&ss->cmd_pool, s->pool);
    static const char *const kinds[] = {"smtp", "submission", "smtps"};
    pr_log_info(s->sid, "connect from [%s]:%u to %s port %u", s->peer_ip, (unsigned)s->peer_port,
                kinds[ss->kind], (unsigned)s->local_port);

    if (store_body_create(&ss->body, ss->srv->store, s->pool) != APR_SUCCESS) {
        smtp_replyf(ss, "421 4.3.0 %s Service temporarily unavailable", cfg->server.hostname);
        pr_conn_flush(ss->conn);
        return;
    }
    if (ss->kind == SMTP_SERVICE_SMTPS) {
        pr_conn_set_timeout(ss->conn, cfg->smtp.command_timeout);
        pr_tls_ctx_t *ctx = pr_tls_acquire(ss->srv->tls);
        apr_status_t st = pr_conn_start_tls(ss->conn, ctx);
        if (st != APR_SUCCESS) {
            char buf[120];
            pr_log_info(s->sid, "TLS handshake failed: %s", pr_strerror(st, buf, sizeof(buf)));
            return;
        }
        ss->tls_desc = pr_conn_tls_description(ss->conn, s->pool);
        pr_log_info(s->sid, "TLS established: %s", ss->tls_desc);
    }
    smtp_replyf(ss, "220 %s ESMTP Postroom", cfg->server.hostname);
    smtp_session_loop(ss);
    pr_log_info(s->sid, "disconnect from [%s] (%d errors)", s->peer_ip, ss->errors);
}

apr_status_t smtp_server_create(smtp_server_t **srv_r, const pr_config_t *cfg, dir_t *dir,
                                store_t *store, pr_tls_t *tls, pr_penalty_t *penalty,
                                apr_pool_t *pool)
{
    smtp_server_t *srv = apr_pcalloc(pool, sizeof(*srv));
    srv->cfg = cfg;
    srv->dir = dir;
    srv->store = store;
    srv->tls = tls;
    srv->penalty = penalty;
    apr_status_t st = apr_thread_mutex_create(&srv->sent_mu, APR_THREAD_MUTEX_DEFAULT, pool);
    if (st != APR_SUCCESS) return st;
    apr_pool_create(&srv->sent_pool, pool);
    srv->sent = apr_hash_make(srv->sent_pool);
    for (int i = 0; i < 3; i++) {
        srv->services[i].server = srv;
        srv->services[i].kind = (smtp_service_e)i;
    }
    *srv_r = srv;
    return APR_SUCCESS;
}

smtp_service_t *smtp_server_service(smtp_server_t *srv, smtp_service_e kind)
{
    return &srv->services[kind];
}
