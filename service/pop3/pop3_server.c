/* The POP3 server session: RFC 1939 states AUTHORIZATION -> TRANSACTION ->
 * UPDATE with USER/PASS, STAT, LIST, RETR, DELE, NOOP, RSET, QUIT, TOP and
 * UIDL (RFC 1939 5-7), LAST (RFC 1460), CAPA and response codes (RFC 2449
 * 5, 8; RFC 3206), STLS (RFC 2595 4), AUTH PLAIN/LOGIN (RFC 5034, RFC 4616).
 * Messages are streamed from the store in chunks with byte-stuffing, so a
 * session's memory stays bounded whatever the message size. */
#include "service/core/log.h"
#include "service/core/fiber.h"
#include "service/core/sasl.h"
#include "service/core/status.h"
#include "service/pop3/pop3_int.h"
#include "service/pop3/pop3_parse.h"

#include <apr_strings.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* One store read per chunk: large enough that a message costs few reads
 * and few writes, small enough to keep every session's memory bounded. */
#define POP3_CHUNK (64 * 1024)

typedef enum { ST_AUTHORIZATION = 0, ST_TRANSACTION, ST_UPDATE } pop3_state_e;
#define ST(x) (1u << (x))
#define ST_BOTH (ST(ST_AUTHORIZATION) | ST(ST_TRANSACTION))

static const char *const pop3_state_names[] = {"authorization", "transaction", "update"};

typedef struct pop3_sess_t {
    pr_session_t *s;
    pop3_server_t *srv;
    const pr_config_t *cfg;
    pop3_service_e kind;
    pr_conn_t *conn;
    apr_pool_t *cmd_pool; /* cleared after every command */
    apr_pool_t *md_pool;  /* the maildrop and its store reader */
    pop3_state_e state;
    const char *tls_desc;
    char user_arg[POP3_LINE_MAX]; /* USER given, waiting for PASS ("" if none) */
    const char *user;             /* logged in: canonical address */
    pop3_maildrop_t *md;
    int last; /* RFC 1460 LAST */
    int errors;
    int quit;
    /* for the QUIT log line */
    unsigned n_retr, n_top;
    apr_off_t octets_sent;
} pop3_sess_t;

/* ---- replies */

static void pop3_reply(pop3_sess_t *ps, const char *line)
{
    pr_conn_puts(ps->conn, line);
    pr_conn_write(ps->conn, "\r\n", 2);
}

/* A refusal of a bad command: counts toward max_errors. */
static void pop3_bad(pop3_sess_t *ps, const char *line)
{
    ps->errors++;
    pr_log_debug(ps->s->sid, "reply: %s", line);
    pop3_reply(ps, line);
}

static void pop3_replyf(pop3_sess_t *ps, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void pop3_replyf(pop3_sess_t *ps, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *line = apr_pvsprintf(ps->cmd_pool, fmt, ap);
    va_end(ap);
    pop3_reply(ps, line);
}

/* Decimal without printf: LIST and UIDL listings write one line per message. */
static apr_size_t pop3_fmt_u64(char *out, apr_uint64_t v)
{
    char tmp[24];
    apr_size_t n = 0, i;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static void pop3_enter_state(pop3_sess_t *ps, pop3_state_e st)
{
    if (ps->state != st)
        pr_log_debug(ps->s->sid, "state %s -> %s", pop3_state_names[ps->state],
                     pop3_state_names[st]);
    ps->state = st;
}

/* ---- authorization */

/* RFC 2595 2.2, 4: no password in the clear unless the admin allows it. */
static int pop3_login_allowed(const pop3_sess_t *ps)
{
    return ps->tls_desc || ps->cfg->pop3.allow_plaintext_auth;
}

static int pop3_stls_offered(const pop3_sess_t *ps)
{
    return ps->kind == POP3_SERVICE_PLAIN && !ps->tls_desc && ps->state == ST_AUTHORIZATION;
}

static const char *const pop3_plaintext_refusal =
    "-ERR [AUTH] Plaintext authentication disallowed; use STLS";

static int pop3_login_blocked(pop3_sess_t *ps)
{
    if (!pr_penalty_blocked(ps->srv->penalty, ps->s->peer_ip)) return 0;
    pr_log_info(ps->s->sid, "login refused: too many failed logins from %s", ps->s->peer_ip);
    pop3_reply(ps, "-ERR [LOGIN-DELAY] Too many failed logins, try again later");
    return 1;
}

/* Check the credentials, then lock and open the maildrop. authz: the SASL
 * authorization identity ("" or NULL for none). */
static void pop3_login(pop3_sess_t *ps, const char *authz, const char *login, apr_size_t login_len,
                       const char *password, const char *how)
{
    pop3_server_t *srv = ps->srv;
    /* pr_log replaces control characters; the name is also bounded. */
    int who_len = login_len > 100 ? 100 : (int)login_len;
    const char *user = NULL;
    if (pop3_login_blocked(ps)) return;
    apr_status_t st = dir_authenticate(srv->dir, login, password, &user, ps->cmd_pool);
    if (st == APR_SUCCESS && authz && *authz) {
        /* RFC 4616 2: acting for someone else is not offered. */
        const char *nz = dir_address_normalize(authz, ps->cmd_pool);
        if (!nz || strcmp(nz, user) != 0) st = PR_EAUTH;
    }
    if (st == PR_ETEMPFAIL) {
        pr_log_warn(ps->s->sid, "login %.*s: directory temporarily unavailable", who_len, login);
        pop3_reply(ps, "-ERR [SYS/TEMP] Authentication temporarily unavailable, try again later");
        return;
    }
    if (st != APR_SUCCESS) {
        /* The same answer, equally late, for an unknown user and a wrong
         * password (RFC 2449 8.1.1 [AUTH]). */
        apr_interval_time_t delay = pr_penalty_fail(srv->penalty, ps->s->peer_ip);
        pr_log_info(ps->s->sid, "login failed (%s): %.*s from %s", how, who_len, login,
                    ps->s->peer_ip);
        ps->errors++;
        if (delay > 0) pr_sleep(delay);
        pop3_reply(ps, "-ERR [AUTH] Invalid login or password");
        return;
    }
    pr_penalty_success(srv->penalty, ps->s->peer_ip);

    apr_pool_create(&ps->md_pool, ps->s->pool);
    pop3_maildrop_t *md = NULL;
    st = pop3_maildrop_open(&md, srv, user, ps->md_pool);
    if (st != APR_SUCCESS) {
        apr_pool_destroy(ps->md_pool);
        ps->md_pool = NULL;
        if (st == PR_EBUSY) {
            /* RFC 2449 8.1.2: the maildrop is held by another session. */
            pr_log_info(ps->s->sid, "login %s: maildrop locked by another session", user);
            pop3_reply(ps, "-ERR [IN-USE] Mailbox is locked by another session");
        } else {
            char buf[120];
            pr_log_error(ps->s->sid, "login %s: cannot open the maildrop: %s", user,
                         pr_strerror(st, buf, sizeof(buf)));
            pop3_reply(ps, "-ERR [SYS/TEMP] Cannot open the mailbox, try again later");
        }
        return;
    }
    ps->md = md;
    ps->user = apr_pstrdup(ps->s->pool, user);
    ps->last = 0;
    pop3_enter_state(ps, ST_TRANSACTION);
    pr_log_info(ps->s->sid, "login ok (%s): %s, %d messages, %" APR_OFF_T_FMT " octets%s", how,
                user, md->n, md->size, ps->tls_desc ? ", TLS" : "");
    pop3_replyf(ps, "+OK Logged in, %d messages (%" APR_OFF_T_FMT " octets)", md->n, md->size);
}

static void pop3_act_user(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    if (!pop3_login_allowed(ps)) {
        pop3_reply(ps, pop3_plaintext_refusal);
        return;
    }
    /* Nothing is looked up yet, so the reply says nothing about the user. */
    memcpy(ps->user_arg, cmd->arg, cmd->arg_len + 1);
    pop3_reply(ps, "+OK Send PASS");
}

static void pop3_act_pass(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    if (!pop3_login_allowed(ps)) {
        pop3_reply(ps, pop3_plaintext_refusal);
        return;
    }
    if (!ps->user_arg[0]) {
        pop3_bad(ps, "-ERR Send USER first");
        return;
    }
    pop3_login(ps, NULL, ps->user_arg, strlen(ps->user_arg), cmd->arg, "USER");
    memset((char *)cmd->arg, 0, cmd->arg_len);
    ps->user_arg[0] = '\0';
}

/* One SASL client response (RFC 5034 4), decoded (length in len_r), or NULL
 * when the client cancelled, sent bad base64 or an over-long line (a reply
 * has been sent then) or the connection failed. */
static const char *pop3_sasl_read(pop3_sess_t *ps, const char *challenge, apr_size_t *len_r)
{
    char *line;
    apr_size_t len;
    pop3_reply(ps, challenge);
    apr_status_t st = pr_conn_read_line(ps->conn, &line, &len, POP3_SASL_LINE_MAX, NULL);
    if (st == PR_ELINE) {
        pop3_bad(ps, "-ERR Line too long");
        return NULL;
    }
    if (st != APR_SUCCESS) {
        ps->quit = 1;
        return NULL;
    }
    if (len == 1 && line[0] == '*') {
        pop3_reply(ps, "-ERR Authentication cancelled");
        return NULL;
    }
    const char *out = pr_b64_decode_strict(line, len_r, ps->cmd_pool);
    memset(line, 0, len);
    if (!out) pop3_bad(ps, "-ERR Invalid base64 data");
    return out;
}

static const char *pop3_sasl_initial(pop3_sess_t *ps, const char *ir, apr_size_t *len_r)
{
    if (strcmp(ir, "=") == 0) {
        *len_r = 0;
        return "";
    }
    const char *out = pr_b64_decode_strict(ir, len_r, ps->cmd_pool);
    if (!out) pop3_bad(ps, "-ERR Invalid base64 data");
    return out;
}

static void pop3_act_auth(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    apr_size_t len;
    if (!pop3_login_allowed(ps)) {
        pop3_reply(ps, pop3_plaintext_refusal);
        return;
    }
    if (!cmd->mechanism) {
        /* "AUTH" alone: the mechanism list, as RFC 1734 clients expect. */
        pr_conn_puts(ps->conn, "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
        return;
    }
    int plain = strcmp(cmd->mechanism, "PLAIN") == 0;
    if (!plain && strcmp(cmd->mechanism, "LOGIN") != 0) {
        pop3_bad(ps, "-ERR Unsupported authentication mechanism");
        return;
    }
    if (pop3_login_blocked(ps)) return;
    ps->user_arg[0] = '\0';
    if (plain) {
        const char *msg = cmd->initial_response ? pop3_sasl_initial(ps, cmd->initial_response, &len)
                                                : pop3_sasl_read(ps, "+ ", &len);
        if (!msg) return;
        const char *authz, *authc, *pass;
        if (pr_sasl_plain_parse(msg, len, &authz, &authc, &pass) != APR_SUCCESS) {
            pop3_bad(ps, "-ERR [AUTH] Malformed PLAIN response");
            return;
        }
        pop3_login(ps, authz, authc, strlen(authc), pass, "PLAIN");
        memset((char *)msg, 0, len);
        return;
    }
    const char *user = cmd->initial_response ? pop3_sasl_initial(ps, cmd->initial_response, &len)
                                             : pop3_sasl_read(ps, "+ VXNlcm5hbWU6", &len);
    if (!user) return;
    if (len == 0 || memchr(user, '\0', len)) {
        pop3_bad(ps, "-ERR [AUTH] Malformed LOGIN response");
        return;
    }
    apr_size_t user_len = len;
    const char *pass = pop3_sasl_read(ps, "+ UGFzc3dvcmQ6", &len);
    if (!pass) return;
    if (len == 0 || memchr(pass, '\0', len)) {
        pop3_bad(ps, "-ERR [AUTH] Malformed LOGIN response");
        return;
    }
    pop3_login(ps, NULL, user, user_len, pass, "LOGIN");
    memset((char *)pass, 0, len);
}

/* ---- STLS (RFC 2595 4) */

static void pop3_act_stls(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    (void)cmd;
    if (ps->tls_desc) {
        pop3_bad(ps, "-ERR Command not permitted when TLS active");
        return;
    }
    if (ps->kind != POP3_SERVICE_PLAIN) {
        pop3_bad(ps, "-ERR STLS not available");
        return;
    }
    pop3_reply(ps, "+OK Begin TLS negotiation");
    if (pr_conn_flush(ps->conn) != APR_SUCCESS) {
        ps->quit = 1;
        return;
    }
    /* Anything pipelined after STLS arrived in plaintext and must not be
     * executed inside the TLS session (CVE-2011-0411). */
    if (pr_conn_pending(ps->conn) > 0)
        pr_log_warn(ps->s->sid, "discarded %lu bytes pipelined after STLS",
                    (unsigned long)pr_conn_pending(ps->conn));
    pr_conn_discard_input(ps->conn);
    apr_status_t st = pr_conn_start_tls(ps->conn, pr_tls_acquire(ps->srv->tls));
    if (st != APR_SUCCESS) {
        char buf[120];
        pr_log_info(ps->s->sid, "TLS handshake failed: %s", pr_strerror(st, buf, sizeof(buf)));
        ps->quit = 1;
        return;
    }
    ps->tls_desc = pr_conn_tls_description(ps->conn, ps->s->pool);
    pr_log_info(ps->s->sid, "TLS established: %s", ps->tls_desc);
    /* RFC 2595 4: forget what was said before TLS. */
    ps->user_arg[0] = '\0';
}

/* ---- CAPA (RFC 2449 5) */

static void pop3_act_capa(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    (void)cmd;
    pr_conn_t *c = ps->conn;
    int auth = ps->state == ST_AUTHORIZATION && pop3_login_allowed(ps);
    pr_conn_puts(c, "+OK Capability list follows\r\n"
                    "TOP\r\n"
                    "UIDL\r\n");
    if (auth) pr_conn_puts(c, "USER\r\nSASL PLAIN LOGIN\r\n");
    pr_conn_puts(c, "RESP-CODES\r\n"
                    "AUTH-RESP-CODE\r\n"
                    "PIPELINING\r\n");
    if (pop3_stls_offered(ps)) pr_conn_puts(c, "STLS\r\n");
    pr_conn_puts(c, "EXPIRE NEVER\r\n"
                    "IMPLEMENTATION Postroom\r\n"
                    ".\r\n");
}

/* ---- transaction */

static const char *const pop3_no_such = "-ERR No such message";

static void pop3_act_stat(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    (void)cmd;
    pop3_maildrop_t *m = ps->md;
    pop3_replyf(ps, "+OK %d %" APR_OFF_T_FMT, m->n - m->n_deleted, m->size_kept);
}

/* "<a> <b>\r\n" without printf. */
static void pop3_write_pair(pr_conn_t *c, apr_uint64_t a, const char *b, apr_size_t blen)
{
    char line[80];
    apr_size_t n = pop3_fmt_u64(line, a);
    line[n++] = ' ';
    memcpy(line + n, b, blen);
    n += blen;
    line[n++] = '\r';
    line[n++] = '\n';
    pr_conn_write(c, line, n);
}

static void pop3_act_list(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    pop3_maildrop_t *m = ps->md;
    char num[24];
    if (cmd->msgno) {
        const store_msg_info_t *mi = pop3_maildrop_get(m, cmd->msgno);
        if (!mi) {
            pop3_reply(ps, pop3_no_such);
            return;
        }
        pop3_replyf(ps, "+OK %d %" APR_OFF_T_FMT, cmd->msgno, mi->size);
        return;
    }
    pop3_replyf(ps, "+OK %d messages (%" APR_OFF_T_FMT " octets)", m->n - m->n_deleted,
                m->size_kept);
    for (int i = 0; i < m->n; i++) {
        if (m->deleted[i]) continue;
        pop3_write_pair(ps->conn, (apr_uint64_t)i + 1, num,
                        pop3_fmt_u64(num, (apr_uint64_t)m->msg[i].size));
    }
    pr_conn_write(ps->conn, ".\r\n", 3);
}

static void pop3_act_uidl(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    pop3_maildrop_t *m = ps->md;
    char uidl[32];
    if (cmd->msgno) {
        if (!pop3_maildrop_get(m, cmd->msgno)) {
            pop3_reply(ps, pop3_no_such);
            return;
        }
        pop3_replyf(ps, "+OK %d %s", cmd->msgno, pop3_maildrop_uidl(m, cmd->msgno, uidl));
        return;
    }
    pr_conn_write(ps->conn, "+OK\r\n", 5);
    for (int i = 0; i < m->n; i++) {
        if (m->deleted[i]) continue;
        const char *u = pop3_maildrop_uidl(m, i + 1, uidl);
        pop3_write_pair(ps->conn, (apr_uint64_t)i + 1, u, strlen(u));
    }
    pr_conn_write(ps->conn, ".\r\n", 3);
}

/* Where a message being sent is: RFC 1939 3 byte-stuffing needs to know
 * whether the next octet starts a line; TOP needs the end of the header
 * and a count of body lines; the terminator needs the last two octets. */
typedef struct pop3_pump_t {
    int bol;            /* the next octet starts a line */
    apr_size_t hdr_len; /* TOP: octets of the current header line so far (capped) */
    char hdr_first;     /* its first octet */
    int in_body;        /* TOP: the empty line has been sent */
    int lines_left;     /* TOP: body lines still to send; -1 for RETR */
    char tail[2];       /* the last two octets sent */
    apr_off_t sent;
} pop3_pump_t;

/* TOP: how much of buf (n octets) to send; *done once nothing more is wanted. */
static apr_size_t pop3_top_cut(pop3_pump_t *p, const char *buf, apr_size_t n, int *done)
{
    apr_size_t i = 0;
    while (i < n) {
        if (p->in_body && p->lines_left == 0) break;
        const char *lf = memchr(buf + i, '\n', n - i);
        if (!lf) {
            if (!p->in_body) {
                if (p->hdr_len == 0) p->hdr_first = buf[i];
                p->hdr_len += n - i > 2 ? 2 : n - i;
                if (p->hdr_len > 2) p->hdr_len = 2;
            }
            return n;
        }
        apr_size_t seg = (apr_size_t)(lf - (buf + i)); /* octets before the LF */
        if (p->in_body) {
            p->lines_left--;
        } else {
            char first = p->hdr_len ? p->hdr_first : seg ? buf[i] : '\n';
            apr_size_t total = p->hdr_len + seg;
            /* An empty line ("\r\n", or a bare "\n") ends the header. */
            if (total == 0 || (total == 1 && first == '\r')) p->in_body = 1;
            p->hdr_len = 0;
        }
        i = (apr_size_t)(lf - buf) + 1;
    }
    if (p->in_body && p->lines_left == 0) *done = 1;
    return i;
}

/* Write n octets with a '.' doubled at the start of every line: runs
 * between such dots go out whole, each dot once with the run before it and
 * again with the run after it, so there is no per-line write. */
static apr_status_t pop3_write_stuffed(pr_conn_t *c, pop3_pump_t *p, const char *buf, apr_size_t n)
{
    const char *end = buf + n, *run = buf, *q = buf;
    apr_status_t st;
    if (n == 0) return APR_SUCCESS;
    while (q < end) {
        const char *dot = memchr(q, '.', (apr_size_t)(end - q));
        if (!dot) break;
        if (dot == buf ? p->bol : dot[-1] == '\n') {
            if ((st = pr_conn_write(c, run, (apr_size_t)(dot - run) + 1)) != APR_SUCCESS) return st;
            run = dot;
        }
        q = dot + 1;
    }
    if ((st = pr_conn_write(c, run, (apr_size_t)(end - run))) != APR_SUCCESS) return st;
    p->bol = end[-1] == '\n';
    if (n >= 2) {
        p->tail[0] = end[-2];
        p->tail[1] = end[-1];
    } else {
        p->tail[0] = p->tail[1];
        p->tail[1] = end[-1];
    }
    p->sent += (apr_off_t)n;
    return APR_SUCCESS;
}

/* RETR (lines < 0) and TOP: the +OK line, the message, the terminator.
 * Returns whether the message went out whole. */
static int pop3_send_message(pop3_sess_t *ps, int msgno, int lines)
{
    const store_msg_info_t *mi = pop3_maildrop_get(ps->md, msgno);
    if (!mi) {
        pop3_reply(ps, pop3_no_such);
        return 0;
    }
    store_stream_t *stream;
    apr_status_t st = pop3_maildrop_stream(ps->md, msgno, &stream, ps->cmd_pool);
    if (st != APR_SUCCESS) {
        char ebuf[120];
        if (st == PR_ENOTFOUND) { /* expunged meanwhile (IMAP) */
            pop3_reply(ps, "-ERR [SYS/PERM] Message was removed by another client");
            return 0;
        }
        pr_log_error(ps->s->sid, "cannot open message %d (uid %u): %s", msgno, (unsigned)mi->uid,
                     pr_strerror(st, ebuf, sizeof(ebuf)));
        pop3_reply(ps, "-ERR [SYS/TEMP] Cannot read the message, try again later");
        return 0;
    }
    char *buf = malloc(POP3_CHUNK);
    if (!buf) abort();
    pop3_pump_t p = {0};
    p.bol = 1;
    p.lines_left = lines;
    if (lines < 0)
        pop3_replyf(ps, "+OK %" APR_OFF_T_FMT " octets", mi->size);
    else
        pop3_reply(ps, "+OK Top of message follows");
    int done = 0;
    apr_status_t wst = APR_SUCCESS;
    while (!done) {
        apr_size_t len = POP3_CHUNK;
        st = store_stream_read(stream, buf, &len);
        if (st == APR_EOF) break;
        if (st != APR_SUCCESS) break;
        apr_size_t cut = lines < 0 ? len : pop3_top_cut(&p, buf, len, &done);
        if ((wst = pop3_write_stuffed(ps->conn, &p, buf, cut)) != APR_SUCCESS) break;
    }
    free(buf);
    if (wst != APR_SUCCESS) {
        ps->quit = 1; /* the client is gone */
        return 0;
    }
    if (st != APR_SUCCESS && st != APR_EOF) {
        /* Half a message has gone out: there is no way to say -ERR now, so
         * the session ends and the client sees a cut-off response. */
        char ebuf[120];
        pr_log_error(ps->s->sid,
                     "reading message %d (uid %u) failed after %" APR_OFF_T_FMT
                     " octets: %s; closing",
                     msgno, (unsigned)mi->uid, p.sent, pr_strerror(st, ebuf, sizeof(ebuf)));
        ps->quit = 1;
        return 0;
    }
    /* RFC 1939 3: the terminator follows a CRLF. */
    if (p.sent > 0 && !(p.tail[0] == '\r' && p.tail[1] == '\n'))
        pr_conn_write(ps->conn, "\r\n.\r\n", 5);
    else
        pr_conn_write(ps->conn, ".\r\n", 3);
    ps->octets_sent += p.sent;
    return 1;
}

static void pop3_act_retr(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    if (pop3_send_message(ps, cmd->msgno, -1)) {
        ps->n_retr++;
        if (cmd->msgno > ps->last) ps->last = cmd->msgno;
    }
}

static void pop3_act_top(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    if (pop3_send_message(ps, cmd->msgno, cmd->lines)) ps->n_top++;
}

static void pop3_act_dele(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    apr_status_t st = pop3_maildrop_delete(ps->md, cmd->msgno);
    if (st == PR_EEXIST)
        pop3_replyf(ps, "-ERR Message %d already deleted", cmd->msgno);
    else if (st != APR_SUCCESS)
        pop3_reply(ps, pop3_no_such);
    else
        pop3_replyf(ps, "+OK Message %d deleted", cmd->msgno);
}

static void pop3_act_rset(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    (void)cmd;
    pop3_maildrop_undelete_all(ps->md);
    ps->last = 0; /* RFC 1460 */
    pop3_replyf(ps, "+OK Maildrop has %d messages (%" APR_OFF_T_FMT " octets)", ps->md->n,
                ps->md->size);
}

static void pop3_act_last(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    (void)cmd;
    pop3_replyf(ps, "+OK %d", ps->last);
}

static void pop3_act_noop(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    (void)cmd;
    pop3_reply(ps, "+OK");
}

static void pop3_act_quit(pop3_sess_t *ps, pop3_cmd_t *cmd)
{
    (void)cmd;
    const char *host = ps->cfg->server.hostname;
    ps->quit = 1;
    if (ps->state == ST_AUTHORIZATION) {
        pop3_replyf(ps, "+OK %s POP3 server signing off", host);
        return;
    }
    /* RFC 1939 6: the UPDATE state removes what was marked, at once and
     * durably, or nothing at all. */
    pop3_maildrop_t *m = ps->md;
    pop3_enter_state(ps, ST_UPDATE);
    apr_status_t st = pop3_maildrop_commit(m);
    int left = m->n - m->n_deleted;
    if (st != APR_SUCCESS) {
        char ebuf[120];
        pr_log_error(ps->s->sid, "quit %s: removing %d messages failed: %s; nothing deleted",
                     ps->user, m->n_deleted, pr_strerror(st, ebuf, sizeof(ebuf)));
        pop3_reply(ps, "-ERR [SYS/TEMP] Could not remove the deleted messages; none were "
                       "removed, try again later");
    } else {
        pr_log_info(ps->s->sid,
                    "quit %s: retr=%u top=%u sent=%" APR_OFF_T_FMT " deleted=%d left=%d", ps->user,
                    ps->n_retr, ps->n_top, ps->octets_sent, m->n_deleted, left);
        if (left == 0)
            pop3_replyf(ps, "+OK %s POP3 server signing off (maildrop empty)", host);
        else
            pop3_replyf(ps, "+OK %s POP3 server signing off (%d messages left)", host, left);
    }
    pop3_maildrop_close(m);
}

/* ---- dispatch */

typedef struct pop3_cmd_def_t {
    pop3_verb_e verb;
    unsigned states; /* where it is allowed */
    void (*act)(pop3_sess_t *, pop3_cmd_t *);
} pop3_cmd_def_t;

static const pop3_cmd_def_t pop3_commands[POP3_CMD_COUNT] = {
    [POP3_CMD_USER] = {POP3_CMD_USER, ST(ST_AUTHORIZATION), pop3_act_user},
    [POP3_CMD_PASS] = {POP3_CMD_PASS, ST(ST_AUTHORIZATION), pop3_act_pass},
    [POP3_CMD_AUTH] = {POP3_CMD_AUTH, ST(ST_AUTHORIZATION), pop3_act_auth},
    [POP3_CMD_STLS] = {POP3_CMD_STLS, ST(ST_AUTHORIZATION), pop3_act_stls},
    [POP3_CMD_CAPA] = {POP3_CMD_CAPA, ST_BOTH, pop3_act_capa},
    [POP3_CMD_QUIT] = {POP3_CMD_QUIT, ST_BOTH, pop3_act_quit},
    [POP3_CMD_NOOP] = {POP3_CMD_NOOP, ST_BOTH, pop3_act_noop},
    [POP3_CMD_STAT] = {POP3_CMD_STAT, ST(ST_TRANSACTION), pop3_act_stat},
    [POP3_CMD_LIST] = {POP3_CMD_LIST, ST(ST_TRANSACTION), pop3_act_list},
    [POP3_CMD_RETR] = {POP3_CMD_RETR, ST(ST_TRANSACTION), pop3_act_retr},
    [POP3_CMD_DELE] = {POP3_CMD_DELE, ST(ST_TRANSACTION), pop3_act_dele},
    [POP3_CMD_RSET] = {POP3_CMD_RSET, ST(ST_TRANSACTION), pop3_act_rset},
    [POP3_CMD_TOP] = {POP3_CMD_TOP, ST(ST_TRANSACTION), pop3_act_top},
    [POP3_CMD_UIDL] = {POP3_CMD_UIDL, ST(ST_TRANSACTION), pop3_act_uidl},
    [POP3_CMD_LAST] = {POP3_CMD_LAST, ST(ST_TRANSACTION), pop3_act_last},
};

/* One command line: check its length, parse, check the state, act. */
static void pop3_command(pop3_sess_t *ps, const char *line, apr_size_t len)
{
    pop3_cmd_t cmd;
    const char *reply;
    if (len + 2 > pop3_line_limit(pop3_parse_verb(line, len))) {
        pop3_bad(ps, "-ERR Line too long");
        return;
    }
    if (pop3_parse(&cmd, line, len, &reply, ps->cmd_pool) != APR_SUCCESS) {
        pop3_bad(ps, reply);
        return;
    }
    const pop3_cmd_def_t *def = &pop3_commands[cmd.verb];
    if (!def->act) {
        pop3_bad(ps, "-ERR Unknown command");
        return;
    }
    if (!(def->states & ST(ps->state))) {
        pop3_bad(ps,
                 ps->state == ST_AUTHORIZATION ? "-ERR Not logged in" : "-ERR Already logged in");
        return;
    }
    def->act(ps, &cmd);
}

static void pop3_session_loop(pop3_sess_t *ps)
{
    const pr_config_t *cfg = ps->cfg;
    char ebuf[120];
    /* RFC 1939 3: the autologout timer; also bounds SASL exchanges. */
    pr_conn_set_timeout(ps->conn, cfg->pop3.timeout);
    while (!ps->quit) {
        char *line;
        apr_size_t len;
        apr_status_t st = pr_conn_read_line(ps->conn, &line, &len, POP3_SASL_LINE_MAX, NULL);
        if (st == PR_ELINE) {
            pop3_bad(ps, "-ERR Line too long");
        } else if (st != APR_SUCCESS) {
            if (pr_session_stopping(ps->s)) {
                pop3_reply(ps, "-ERR [SYS/TEMP] Server shutting down");
            } else if (st == PR_ETIMEOUT) {
                /* RFC 1939 3: close without a response and without UPDATE. */
                pr_log_info(ps->s->sid, "autologout in state %s", pop3_state_names[ps->state]);
            } else {
                pr_log_info(ps->s->sid, "connection lost in state %s: %s",
                            pop3_state_names[ps->state], pr_strerror(st, ebuf, sizeof(ebuf)));
            }
            break;
        } else {
            pop3_command(ps, line, len);
        }
        apr_pool_clear(ps->cmd_pool);
        if (!ps->quit && ps->errors >= cfg->pop3.max_errors) {
            pop3_reply(ps, "-ERR Too many errors");
            pr_log_info(ps->s->sid, "too many errors, disconnecting");
            break;
        }
        if (!ps->quit && pr_session_stopping(ps->s)) {
            pop3_reply(ps, "-ERR [SYS/TEMP] Server shutting down");
            break;
        }
    }
    pr_conn_flush(ps->conn);
}

void pop3_session_run(pr_session_t *s)
{
    pop3_service_t *svc = s->service;
    pop3_sess_t *ps = apr_pcalloc(s->pool, sizeof(*ps));
    ps->s = s;
    ps->srv = svc->server;
    ps->cfg = svc->server->cfg;
    ps->kind = svc->kind;
    ps->conn = s->conn;
    ps->state = ST_AUTHORIZATION;
    apr_pool_create(&ps->cmd_pool, s->pool);
    pr_log_info(s->sid, "connect from [%s]:%u to %s port %u", s->peer_ip, (unsigned)s->peer_port,
                ps->kind == POP3_SERVICE_POP3S ? "pop3s" : "pop3", (unsigned)s->local_port);

    if (ps->kind == POP3_SERVICE_POP3S) {
        pr_conn_set_timeout(ps->conn, ps->cfg->pop3.timeout);
        apr_status_t st = pr_conn_start_tls(ps->conn, pr_tls_acquire(ps->srv->tls));
        if (st != APR_SUCCESS) {
            char buf[120];
            pr_log_info(s->sid, "TLS handshake failed: %s", pr_strerror(st, buf, sizeof(buf)));
            return;
        }
        ps->tls_desc = pr_conn_tls_description(ps->conn, s->pool);
        pr_log_info(s->sid, "TLS established: %s", ps->tls_desc);
    }
    /* RFC 1939 4; no APOP timestamp: APOP is not offered. */
    pop3_replyf(ps, "+OK %s POP3 server ready", ps->cfg->server.hostname);
    pop3_session_loop(ps);

    /* Whatever ended the session, only QUIT deletes; the lock goes now. */
    if (ps->md && ps->state == ST_TRANSACTION)
        pr_log_info(s->sid, "%s left without QUIT: nothing deleted", ps->user);
    if (ps->md) pop3_maildrop_close(ps->md);
    ps->md = NULL;
    if (ps->md_pool) apr_pool_destroy(ps->md_pool);
    ps->md_pool = NULL;
    pr_log_info(s->sid, "disconnect from [%s] (%d errors)", s->peer_ip, ps->errors);
}

/* Locks left at server teardown (none in normal operation): free their keys. */
static apr_status_t pop3_server_cleanup(void *data)
{
    pop3_server_t *srv = data;
    apr_hash_index_t *hi = apr_hash_first(NULL, srv->locked);
    while (hi) {
        void *key = (void *)apr_hash_this_key(hi);
        hi = apr_hash_next(hi);
        apr_hash_set(srv->locked, key, APR_HASH_KEY_STRING, NULL);
        free(key);
    }
    return APR_SUCCESS;
}

apr_status_t pop3_server_create(pop3_server_t **srv_r, const pr_config_t *cfg, dir_t *dir,
                                store_t *store, pr_tls_t *tls, pr_penalty_t *penalty,
                                apr_pool_t *pool)
{
    pop3_server_t *srv = apr_pcalloc(pool, sizeof(*srv));
    srv->pool = pool;
    srv->cfg = cfg;
    srv->dir = dir;
    srv->store = store;
    srv->tls = tls;
    srv->penalty = penalty;
    apr_status_t st = apr_thread_mutex_create(&srv->lock_mu, APR_THREAD_MUTEX_DEFAULT, pool);
    if (st != APR_SUCCESS) return st;
    srv->locked = apr_hash_make(pool);
    apr_pool_cleanup_register(pool, srv, pop3_server_cleanup, apr_pool_cleanup_null);
    for (int i = 0; i < 3; i++) {
        srv->services[i].server = srv;
        srv->services[i].kind = (pop3_service_e)i;
    }
    *srv_r = srv;
    return APR_SUCCESS;
}

pop3_service_t *pop3_server_service(pop3_server_t *srv, pop3_service_e kind)
{
    return &srv->services[kind];
}
