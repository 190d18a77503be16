/* The POP2 server session (RFC 937), off by default ([pop2] listen empty).
 * The server states of RFC 937's state diagram: AUTH (waiting for
 * HELO), MBOX (a folder is selected: FOLD, READ, QUIT), ITEM (a message is
 * current: FOLD, READ, RETR, QUIT) and NEXT (a message was sent: ACKS, ACKD,
 * NACK). Replies: "+" / "-" with text, "#nnn" (messages in the folder) and
 * "=ccc" (octets in the current message). RETR sends exactly ccc octets,
 * unstuffed and unterminated. It runs on the maildrop POP3 uses (exclusive
 * lock, INBOX snapshot, deletions committed in one durable expunge at QUIT),
 * so a dropped connection deletes nothing. POP2 has no TLS: it is only
 * offered where an administrator configured it. */
#include "service/core/log.h"
#include "service/core/fiber.h"
#include "service/core/status.h"
#include "service/pop3/pop3_int.h"

#include <apr_strings.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef enum { P2_AUTH = 0, P2_MBOX, P2_ITEM, P2_NEXT } pop2_state_e;
#define P2(x) (1u << (x))
#define P2_ANY (P2(P2_AUTH) | P2(P2_MBOX) | P2(P2_ITEM) | P2(P2_NEXT))

static const char *const pop2_state_names[] = {"AUTH", "MBOX", "ITEM", "NEXT"};

typedef struct pop2_sess_t {
    pr_session_t *s;
    pop3_server_t *srv;
    const pr_config_t *cfg;
    pr_conn_t *conn;
    apr_pool_t *cmd_pool;
    pop2_state_e state;
    pop3_maildrop_t *m; /* from HELO on */
    int inbox;          /* the selected folder is the INBOX (else an empty one) */
    int cur;            /* the current message number (1-based) */
    int errors;
    int quit;
} pop2_sess_t;

typedef struct pop2_cmd_t {
    const char *verb; /* upper case */
    int argc;
    const char *argv[2];
    const char *rest; /* everything after the verb and one space (HELO's password) */
} pop2_cmd_t;

/* ---- replies */

static void pop2_reply(pop2_sess_t *ps, const char *line)
{
    if (line[0] == '-') {
        ps->errors++;
        pr_log_info(ps->s->sid, "reply: %s", line);
    }
    pr_conn_puts(ps->conn, line);
    pr_conn_write(ps->conn, "\r\n", 2);
}

static void pop2_enter_state(pop2_sess_t *ps, pop2_state_e st)
{
    if (ps->state != st)
        pr_log_debug(ps->s->sid, "state %s -> %s", pop2_state_names[ps->state],
                     pop2_state_names[st]);
    ps->state = st;
}

/* The current message if it exists and is not deleted, else NULL. */
static const store_msg_info_t *pop2_current(const pop2_sess_t *ps)
{
    if (!ps->inbox) return NULL;
    return pop3_maildrop_get(ps->m, ps->cur);
}

/* "=ccc": the size of the current message, "=0" when there is none. */
static void pop2_reply_size(pop2_sess_t *ps)
{
    const store_msg_info_t *mi = pop2_current(ps);
    pr_conn_printf(ps->conn, "=%" APR_OFF_T_FMT "\r\n", mi ? mi->size : (apr_off_t)0);
}

/* "#nnn": the messages of the selected folder. Numbers stay those of the
 * snapshot taken at HELO for the whole session, so nnn is the highest
 * message number even after ACKD (deleted ones answer READ with "=0"). */
static void pop2_reply_count(pop2_sess_t *ps)
{
    pr_conn_printf(ps->conn, "#%d\r\n", ps->inbox ? ps->m->n : 0);
}

/* Move to the next message that is still there (ACKS, ACKD). */
static void pop2_advance(pop2_sess_t *ps)
{
    int n = ps->inbox ? ps->m->n : 0;
    if (ps->cur <= n) ps->cur++;
    while (ps->cur <= n && !pop3_maildrop_get(ps->m, ps->cur))
        ps->cur++;
}

/* ---- parsing: "VERB[ arg[ arg]]", verbs case-insensitive */

static int pop2_parse(pop2_cmd_t *cmd, const char *line, apr_size_t len, apr_pool_t *pool)
{
    memset(cmd, 0, sizeof(*cmd));
    if (memchr(line, '\0', len)) return 0;
    char *text = apr_pstrndup(pool, line, len);
    apr_size_t vlen = strcspn(text, " ");
    if (vlen == 0 || vlen > 4) return 0;
    char *verb = apr_pstrndup(pool, text, vlen);
    for (char *p = verb; *p; p++) {
        if (!isalpha((unsigned char)*p)) return 0;
        *p = (char)toupper((unsigned char)*p);
    }
    cmd->verb = verb;
    cmd->rest = text[vlen] == ' ' ? text + vlen + 1 : "";
    char *args = apr_pstrdup(pool, cmd->rest), *last;
    for (char *tok = apr_strtok(args, " ", &last); tok; tok = apr_strtok(NULL, " ", &last)) {
        if (cmd->argc < 2) cmd->argv[cmd->argc] = tok;
        cmd->argc++;
    }
    return 1;
}

/* ---- HELO user password */

static void pop2_act_helo(pop2_sess_t *ps, pop2_cmd_t *cmd)
{
    pr_session_t *s = ps->s;
    /* The password is the rest of the line after the user, so it may hold spaces. */
    const char *rest = cmd->rest;
    while (*rest == ' ')
        rest++;
    const char *sp = strchr(rest, ' ');
    if (cmd->argc < 2 || !sp) {
        pop2_reply(ps, "- Syntax: HELO user password");
        return;
    }
    const char *login = apr_pstrndup(ps->cmd_pool, rest, (apr_size_t)(sp - rest));
    const char *password = sp + 1;

    if (pr_penalty_blocked(ps->srv->penalty, s->peer_ip)) {
        pr_log_info(s->sid, "login refused for %.100s from %s: too many failures", login,
                    s->peer_ip);
        pop2_reply(ps, "- Too many failed logins, try again later");
        ps->quit = 1;
        return;
    }
    const char *user;
    apr_status_t st = dir_authenticate(ps->srv->dir, login, password, &user, ps->cmd_pool);
    if (st == PR_ETEMPFAIL) {
        pr_log_warn(s->sid, "login temporary failure for %.100s", login);
        pop2_reply(ps, "- Temporary authentication failure, try again later");
        ps->quit = 1;
        return;
    }
    if (st != APR_SUCCESS) {
        /* RFC 937: the server closes the connection after a failed HELO. */
        pr_log_info(s->sid, "login failed for %.100s from %s", login, s->peer_ip);
        apr_interval_time_t delay = pr_penalty_fail(ps->srv->penalty, s->peer_ip);
        if (delay > 0) pr_sleep(delay);
        pop2_reply(ps, "- Invalid login or password");
        ps->quit = 1;
        return;
    }
    pr_penalty_success(ps->srv->penalty, s->peer_ip);
    st = pop3_maildrop_open(&ps->m, ps->srv, user, s->pool);
    if (st == PR_EBUSY) {
        pr_log_info(s->sid, "login ok: %s, but the maildrop is locked", user);
        pop2_reply(ps, "- Mailbox is locked by another session");
        ps->quit = 1;
        return;
    }
    if (st != APR_SUCCESS) {
        char buf[120];
        pr_log_error(s->sid, "cannot open the maildrop of %s: %s", user,
                     pr_strerror(st, buf, sizeof(buf)));
        pop2_reply(ps, "- Mailbox temporarily unavailable, try again later");
        ps->quit = 1;
        return;
    }
    ps->inbox = 1;
    ps->cur = 1;
    pr_log_info(s->sid, "login ok: %s (%d messages, %" APR_OFF_T_FMT " octets)", user, ps->m->n,
                ps->m->size);
    pop2_enter_state(ps, P2_MBOX);
    pop2_reply_count(ps);
}

/* ---- FOLD mailbox: only the INBOX is served (any case, as IMAP's INBOX).
 * Any other name selects an empty folder ("#0") rather than failing, so a
 * client that asks for its default folder by another name just sees no mail;
 * the INBOX's deletion marks are kept for QUIT. */

static void pop2_act_fold(pop2_sess_t *ps, pop2_cmd_t *cmd)
{
    if (cmd->argc != 1) {
        pop2_reply(ps, "- Syntax: FOLD mailbox");
        return;
    }
    ps->inbox = strcasecmp(cmd->argv[0], "INBOX") == 0;
    ps->cur = 1;
    pr_log_debug(ps->s->sid, "folder %.100s%s", cmd->argv[0],
                 ps->inbox ? "" : " (not served: empty)");
    pop2_enter_state(ps, P2_MBOX);
    pop2_reply_count(ps);
}

/* ---- READ [n] */

static void pop2_act_read(pop2_sess_t *ps, pop2_cmd_t *cmd)
{
    if (cmd->argc > 1) {
        pop2_reply(ps, "- Syntax: READ [message-number]");
        return;
    }
    if (cmd->argc == 1) {
        const char *a = cmd->argv[0];
        apr_size_t n = strlen(a);
        if (n == 0 || n > 9 || strspn(a, "0123456789") != n || atoi(a) < 1) {
            pop2_reply(ps, "- Bad message number");
            return;
        }
        ps->cur = atoi(a);
    }
    pop2_enter_state(ps, P2_ITEM);
    pop2_reply_size(ps);
}

/* ---- RETR: the current message's exact octets, nothing around them */

static void pop2_act_retr(pop2_sess_t *ps, pop2_cmd_t *cmd)
{
    (void)cmd;
    const store_msg_info_t *mi = pop2_current(ps);
    if (!mi) {
        pop2_reply(ps, "- No message to retrieve");
        return;
    }
    store_stream_t *str;
    apr_status_t st = pop3_maildrop_stream(ps->m, ps->cur, &str, ps->cmd_pool);
    if (st == APR_SUCCESS && store_stream_size(str) != mi->size) st = PR_EIO;
    if (st != APR_SUCCESS) {
        /* Nothing sent yet, but the client waits for ccc octets: it cannot
         * stay in step, so the session ends (and deletes nothing). */
        char buf[120];
        pr_log_error(ps->s->sid, "cannot read message %d: %s", ps->cur,
                     pr_strerror(st, buf, sizeof(buf)));
        pop2_reply(ps, "- Message temporarily unavailable, try again later");
        ps->quit = 1;
        return;
    }
    apr_off_t left = mi->size;
    char buf[16384];
    while (left > 0) {
        apr_size_t len = left < (apr_off_t)sizeof(buf) ? (apr_size_t)left : sizeof(buf);
        st = store_stream_read(str, buf, &len);
        if (st != APR_SUCCESS) break;
        st = pr_conn_write(ps->conn, buf, len);
        if (st != APR_SUCCESS) break;
        left -= (apr_off_t)len;
    }
    if (left > 0) {
        char ebuf[120];
        pr_log_error(ps->s->sid, "message %d cut short (%" APR_OFF_T_FMT " octets missing): %s",
                     ps->cur, left, pr_strerror(st, ebuf, sizeof(ebuf)));
        ps->quit = 1;
        return;
    }
    pr_log_debug(ps->s->sid, "sent message %d (%" APR_OFF_T_FMT " octets)", ps->cur, mi->size);
    pop2_enter_state(ps, P2_NEXT);
}

/* ---- ACKS, ACKD, NACK: the client's answer to RETR */

static void pop2_act_acks(pop2_sess_t *ps, pop2_cmd_t *cmd)
{
    (void)cmd;
    pop2_advance(ps);
    pop2_enter_state(ps, P2_ITEM);
    pop2_reply_size(ps);
}

static void pop2_act_ackd(pop2_sess_t *ps, pop2_cmd_t *cmd)
{
    (void)cmd;
    /* Marked now, expunged at QUIT in one transaction. */
    pop3_maildrop_delete(ps->m, ps->cur);
    pop2_advance(ps);
    pop2_enter_state(ps, P2_ITEM);
    pop2_reply_size(ps);
}

static void pop2_act_nack(pop2_sess_t *ps, pop2_cmd_t *cmd)
{
    (void)cmd;
    pop2_enter_state(ps, P2_ITEM);
    pop2_reply_size(ps);
}

/* ---- QUIT: RFC 1939's UPDATE state, shared with POP3 */

static void pop2_act_quit(pop2_sess_t *ps, pop2_cmd_t *cmd)
{
    (void)cmd;
    ps->quit = 1;
    if (!ps->m) {
        pop2_reply(ps, "+ OK");
        pr_log_info(ps->s->sid, "quit before login");
        return;
    }
    int deleted = ps->m->n_deleted;
    pr_session_set_busy(ps->s, 1);
    apr_status_t st = pop3_maildrop_commit(ps->m);
    pr_session_set_busy(ps->s, 0);
    if (st != APR_SUCCESS) {
        char buf[120];
        pr_log_error(ps->s->sid, "quit: %s: could not delete %d messages: %s", ps->m->user, deleted,
                     pr_strerror(st, buf, sizeof(buf)));
        pop2_reply(ps, "- Could not delete the messages, nothing was deleted; try again later");
        return;
    }
    pr_log_info(ps->s->sid, "quit: %s, %d of %d messages deleted", ps->m->user, deleted, ps->m->n);
    pop2_reply(ps, "+ OK");
}

typedef struct pop2_cmd_def_t {
    const char *verb;
    unsigned states;
    void (*act)(pop2_sess_t *, pop2_cmd_t *);
} pop2_cmd_def_t;

static const pop2_cmd_def_t pop2_commands[] = {
    {"HELO", P2(P2_AUTH), pop2_act_helo},
    {"FOLD", P2(P2_MBOX) | P2(P2_ITEM), pop2_act_fold},
    {"READ", P2(P2_MBOX) | P2(P2_ITEM), pop2_act_read},
    {"RETR", P2(P2_ITEM), pop2_act_retr},
    {"ACKS", P2(P2_NEXT), pop2_act_acks},
    {"ACKD", P2(P2_NEXT), pop2_act_ackd},
    {"NACK", P2(P2_NEXT), pop2_act_nack},
    /* Also in NEXT: the unacknowledged message is simply kept. */
    {"QUIT", P2_ANY, pop2_act_quit},
};

/* Why a known command is refused in this state. */
static const char *pop2_sequence_reply(const pop2_sess_t *ps, const char *verb)
{
    if (ps->state == P2_AUTH) return "- Send HELO user password first";
    if (ps->state == P2_NEXT) return "- Send ACKS, ACKD or NACK first";
    if (strcmp(verb, "HELO") == 0) return "- Already logged in";
    if (strcmp(verb, "RETR") == 0) return "- Send READ first";
    return "- No message was sent: nothing to acknowledge"; /* ACKS, ACKD, NACK */
}

static void pop2_command(pop2_sess_t *ps, const char *line, apr_size_t len)
{
    pop2_cmd_t cmd;
    if (!pop2_parse(&cmd, line, len, ps->cmd_pool)) {
        pop2_reply(ps, "- Unknown command");
        return;
    }
    for (size_t i = 0; i < sizeof(pop2_commands) / sizeof(pop2_commands[0]); i++) {
        const pop2_cmd_def_t *def = &pop2_commands[i];
        if (strcmp(def->verb, cmd.verb) != 0) continue;
        if (!(def->states & P2(ps->state))) {
            pop2_reply(ps, pop2_sequence_reply(ps, cmd.verb));
            return;
        }
        def->act(ps, &cmd);
        return;
    }
    pop2_reply(ps, "- Unknown command");
}

static void pop2_session_loop(pop2_sess_t *ps)
{
    const pr_config_t *cfg = ps->cfg;
    char ebuf[120];
    while (!ps->quit) {
        char *line;
        apr_size_t len;
        pr_conn_set_timeout(ps->conn, cfg->pop3.timeout);
        apr_status_t st = pr_conn_read_line(ps->conn, &line, &len, POP2_LINE_MAX, NULL);
        if (st == PR_ELINE) {
            pop2_reply(ps, "- Line too long");
        } else if (st != APR_SUCCESS) {
            if (pr_session_stopping(ps->s)) {
                pop2_reply(ps, "- Server shutting down");
                pr_log_info(ps->s->sid, "closed at shutdown in state %s",
                            pop2_state_names[ps->state]);
            } else if (st == PR_ETIMEOUT) {
                pop2_reply(ps, "- Autologout; idle for too long");
                pr_log_info(ps->s->sid, "autologout in state %s", pop2_state_names[ps->state]);
            } else {
                pr_log_info(ps->s->sid, "connection lost in state %s: %s",
                            pop2_state_names[ps->state], pr_strerror(st, ebuf, sizeof(ebuf)));
            }
            break;
        } else {
            pop2_command(ps, line, len);
        }
        apr_pool_clear(ps->cmd_pool);
        if (!ps->quit && ps->errors >= cfg->pop3.max_errors) {
            pop2_reply(ps, "- Too many errors");
            pr_log_info(ps->s->sid, "too many errors, disconnecting");
            break;
        }
        if (!ps->quit && pr_session_stopping(ps->s)) {
            pop2_reply(ps, "- Server shutting down");
            pr_log_info(ps->s->sid, "closed at shutdown in state %s", pop2_state_names[ps->state]);
            break;
        }
    }
    pr_conn_flush(ps->conn);
}

void pop2_session_run(pr_session_t *s)
{
    pop3_service_t *svc = s->service;
    pop2_sess_t *ps = apr_pcalloc(s->pool, sizeof(*ps));
    ps->s = s;
    ps->srv = svc->server;
    ps->cfg = svc->server->cfg;
    ps->conn = s->conn;
    ps->state = P2_AUTH;
    apr_pool_create(&ps->cmd_pool, s->pool);
    pr_log_info(s->sid, "connect from [%s]:%u to pop2 port %u", s->peer_ip, (unsigned)s->peer_port,
                (unsigned)s->local_port);
    pr_conn_printf(ps->conn, "+ POP2 %s server ready\r\n", ps->cfg->server.hostname);
    pop2_session_loop(ps);
    /* Without QUIT nothing is deleted; the lock goes now, not with the pool. */
    if (ps->m) pop3_maildrop_close(ps->m);
    pr_log_info(s->sid, "disconnect from [%s] (%d errors)", s->peer_ip, ps->errors);
}
