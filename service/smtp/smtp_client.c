/* SMTP client for outbound delivery: RFC 5321 (3.3 transactions, 4.2
 * replies, 4.5.3 limits and timeouts, 3.1 greeting), RFC 2920 PIPELINING,
 * RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3461 DSN
 * parameters (4 xtext), RFC 3207 STARTTLS, RFC 8314 implicit TLS, RFC 4954
 * AUTH (RFC 4616 PLAIN, LOGIN), RFC 3463 enhanced status codes. The reply
 * parser is pure; the session talks only to a pr_conn, so tests drive it
 * with scripted replies. */
#include "service/smtp/smtp_client.h"
#include "service/core/log.h"
#include "service/core/sasl.h"
#include "service/core/status.h"

#include <apr_cstr.h>
#include <apr_strings.h>
#include <string.h>

#define CLIENT_CONNECT_TIMEOUT apr_time_from_sec(30)
#define CLIENT_COMMAND_TIMEOUT apr_time_from_sec(300)
#define CLIENT_DATA_END_TIMEOUT apr_time_from_sec(600)
#define CLIENT_QUIT_TIMEOUT apr_time_from_sec(10) /* nobody waits long for a 221 */

/* ---- reply parser */

void smtp_reply_parser_init(smtp_reply_parser_t *p, apr_size_t line_max, apr_pool_t *pool)
{
    memset(p, 0, sizeof(*p));
    p->pool = pool;
    p->line_max = line_max >= 8 ? line_max : SMTP_REPLY_LINE_MAX;
    p->line = apr_palloc(pool, p->line_max);
    p->lines = apr_array_make(pool, 4, sizeof(const char *));
}

static void reply_parser_next(smtp_reply_parser_t *p)
{
    p->len = 0;
    p->skipping = 0;
    p->code = 0;
    p->bytes = 0;
    p->enhanced[0] = '\0';
    p->truncated = 0;
    p->lines = apr_array_make(p->pool, 4, sizeof(const char *));
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* RFC 3463 2: class "." subject "." detail, class matching the reply's
 * first digit (2, 4 or 5), 1-3 digits each, then a space or the end.
 * Returns its length, 0 if s does not start with one. */
static apr_size_t enhanced_code_len(const char *s, int code)
{
    apr_size_t i = 0;
    if (s[0] != '0' + code / 100 || s[1] != '.') return 0;
    i = 2;
    for (int part = 0; part < 2; part++) {
        apr_size_t start = i;
        while (is_digit(s[i]) && i - start < 4)
            i++;
        if (i == start || i - start > 3) return 0;
        if (part == 0) {
            if (s[i] != '.') return 0;
            i++;
        }
    }
    return s[i] == ' ' || s[i] == '\0' ? i : 0;
}

/* Printable ASCII only: the text ends up in logs and DSNs (RFC 3464). */
static char *sanitize(const char *s, apr_size_t len, apr_pool_t *pool)
{
    char *out = apr_palloc(pool, len + 1);
    for (apr_size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[i] = ch == '\t' ? ' ' : (ch < 0x20 || ch > 0x7e) ? '?' : (char)ch;
    }
    out[len] = '\0';
    return out;
}

static const char *trim(const char *s, apr_pool_t *pool)
{
    while (*s == ' ')
        s++;
    apr_size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        n--;
    return apr_pstrndup(pool, s, n);
}

static smtp_reply_t *reply_build(smtp_reply_parser_t *p)
{
    smtp_reply_t *r = apr_pcalloc(p->pool, sizeof(*r));
    r->code = p->code;
    memcpy(r->enhanced, p->enhanced, sizeof(r->enhanced));
    r->nlines = p->lines->nelts;
    r->lines = (const char **)p->lines->elts;
    r->truncated = p->truncated;
    /* One line of text: every line's text without its enhanced code. */
    char *text = apr_palloc(p->pool, SMTP_RESULT_TEXT_MAX + 1);
    apr_size_t n = 0;
    for (int i = 0; i < r->nlines; i++) {
        const char *t = r->lines[i];
        apr_size_t el = enhanced_code_len(t, r->code);
        t = trim(t + el, p->pool);
        if (!*t) continue;
        apr_size_t tl = strlen(t);
        if (n > 0 && n < SMTP_RESULT_TEXT_MAX) text[n++] = ' ';
        if (tl > SMTP_RESULT_TEXT_MAX - n) tl = SMTP_RESULT_TEXT_MAX - n;
        memcpy(text + n, t, tl);
        n += tl;
    }
    text[n] = '\0';
    r->text = trim(text, p->pool);
    return r;
}

/* One complete line (without its line end). *last_r: the reply's final line. */
static apr_status_t reply_line(smtp_reply_parser_t *p, const char *l, apr_size_t n, int *last_r)
{
    if (n < 3 || l[0] < '2' || l[0] > '5' || !is_digit(l[1]) || !is_digit(l[2])) return PR_EINVAL;
    int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
    if (n > 3 && l[3] != ' ' && l[3] != '-') return PR_EINVAL;
    /* RFC 5321 4.2.1: every line of a multi-line reply has the same code. */
    if (p->code && code != p->code) return PR_EINVAL;
    if (p->lines->nelts >= SMTP_REPLY_MAX_LINES) return PR_EINVAL;
    p->code = code;
    const char *text = n > 4 ? sanitize(l + 4, n - 4, p->pool) : "";
    if (p->lines->nelts == 0) {
        apr_size_t el = enhanced_code_len(text, code);
        if (el > 0 && el < sizeof(p->enhanced)) {
            memcpy(p->enhanced, text, el);
            p->enhanced[el] = '\0';
        }
    }
    APR_ARRAY_PUSH(p->lines, const char *) = text;
    *last_r = n == 3 || l[3] == ' ';
    return APR_SUCCESS;
}

apr_status_t smtp_reply_parser_feed(smtp_reply_parser_t *p, const char *data, apr_size_t len,
                                    apr_size_t *used_r, smtp_reply_t **reply_r)
{
    *reply_r = NULL;
    for (apr_size_t i = 0; i < len; i++) {
        char ch = data[i];
        if (++p->bytes > SMTP_REPLY_MAX_BYTES) {
            *used_r = i + 1;
            return PR_EINVAL;
        }
        if (ch != '\n') {
            /* Keep room for the LF the limit counts. */
            if (p->len < p->line_max - 1)
                p->line[p->len++] = ch;
            else
                p->skipping = 1;
            continue;
        }
        apr_size_t n = p->len;
        if (n > 0 && p->line[n - 1] == '\r') n--;
        if (p->skipping) p->truncated = 1;
        int last = 0;
        apr_status_t st = reply_line(p, p->line, n, &last);
        p->len = 0;
        p->skipping = 0;
        if (st != APR_SUCCESS) {
            *used_r = i + 1;
            return st;
        }
        if (last) {
            *reply_r = reply_build(p);
            *used_r = i + 1;
            reply_parser_next(p);
            return APR_SUCCESS;
        }
    }
    *used_r = len;
    return APR_INCOMPLETE;
}

const char *smtp_xtext_encode(const char *s, apr_pool_t *pool)
{
    static const char hex[] = "0123456789ABCDEF";
    apr_size_t n = strlen(s);
    char *out = apr_palloc(pool, 3 * n + 1), *o = out;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= '!' && ch <= '~' && ch != '+' && ch != '=') {
            *o++ = (char)ch;
        } else {
            *o++ = '+';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    *o = '\0';
    return out;
}

/* ---- capabilities */

void smtp_caps_parse(smtp_caps_t *caps, const smtp_reply_t *ehlo)
{
    memset(caps, 0, sizeof(*caps));
    caps->esmtp = 1;
    for (int i = 1; i < ehlo->nlines; i++) {
        const char *l = ehlo->lines[i];
        apr_size_t kl = strcspn(l, " =");
        const char *args = l[kl] ? l + kl + 1 : "";
        char kw[32];
        if (kl == 0 || kl >= sizeof(kw)) continue;
        memcpy(kw, l, kl);
        kw[kl] = '\0';
        if (!apr_cstr_casecmp(kw, "PIPELINING")) {
            caps->ext |= SMTP_EXT_PIPELINING;
        } else if (!apr_cstr_casecmp(kw, "SIZE")) {
            caps->ext |= SMTP_EXT_SIZE;
            apr_off_t v = 0;
            while (*args == ' ')
                args++;
            for (; is_digit(*args); args++) {
                if (v > (APR_INT64_MAX - 9) / 10) break;
                v = v * 10 + (*args - '0');
            }
            caps->size_max = v;
        } else if (!apr_cstr_casecmp(kw, "8BITMIME")) {
            caps->ext |= SMTP_EXT_8BITMIME;
        } else if (!apr_cstr_casecmp(kw, "SMTPUTF8")) {
            caps->ext |= SMTP_EXT_SMTPUTF8;
        } else if (!apr_cstr_casecmp(kw, "STARTTLS")) {
            caps->ext |= SMTP_EXT_STARTTLS;
        } else if (!apr_cstr_casecmp(kw, "DSN")) {
            caps->ext |= SMTP_EXT_DSN;
        } else if (!apr_cstr_casecmp(kw, "ENHANCEDSTATUSCODES")) {
            caps->ext |= SMTP_EXT_ENHANCEDSTATUSCODES;
        } else if (!apr_cstr_casecmp(kw, "CHUNKING")) {
            caps->ext |= SMTP_EXT_CHUNKING;
        } else if (!apr_cstr_casecmp(kw, "AUTH")) {
            /* "AUTH PLAIN LOGIN", or the pre-standard "AUTH=LOGIN PLAIN" */
            caps->ext |= SMTP_EXT_AUTH;
            while (*args) {
                apr_size_t ml = strcspn(args, " ");
                if (ml == 5 && !apr_cstr_casecmpn(args, "PLAIN", 5)) caps->auth |= SMTP_AUTH_PLAIN;
                if (ml == 5 && !apr_cstr_casecmpn(args, "LOGIN", 5)) caps->auth |= SMTP_AUTH_LOGIN;
                args += ml;
                while (*args == ' ')
                    args++;
            }
        }
    }
}

/* ---- session */

struct smtp_client_t {
    apr_pool_t *pool;    /* the session's; its socket, when connect made it */
    apr_pool_t *tx_pool; /* replies of one transaction; cleared per message */
    pr_conn_t *conn;
    smtp_client_opts_t opts;
    const char *name; /* the peer, for messages */
    const char *sid;
    smtp_caps_t caps;
    const char *tls_desc;
    int usable; /* can start another transaction */
    int dead;   /* the connection is gone or out of sync: no QUIT */
};

static void result_local(smtp_result_t *r, int code, const char *enhanced, const char *text,
                         apr_pool_t *pool)
{
    r->code = code;
    r->enhanced = apr_pstrdup(pool, enhanced);
    r->text = sanitize(text, strlen(text), pool);
    r->remote = 0;
}

static void result_reply(smtp_result_t *r, const smtp_reply_t *reply, apr_pool_t *pool)
{
    r->code = reply->code;
    r->enhanced = apr_pstrdup(pool, reply->enhanced);
    r->text = apr_pstrdup(pool, reply->text);
    r->remote = 1;
}

static apr_status_t client_write(smtp_client_t *cl, const char *line, int secret)
{
    pr_log_debug(cl->sid, "smtp client > %s", secret ? "(credentials)" : line);
    pr_conn_set_timeout(cl->conn, cl->opts.command_timeout);
    apr_status_t st = pr_conn_puts(cl->conn, line);
    if (st == APR_SUCCESS) st = pr_conn_puts(cl->conn, "\r\n");
    return st;
}

/* Read one reply into pool. PR_EINVAL: not SMTP; else the conn's status. */
static apr_status_t client_read(smtp_client_t *cl, smtp_reply_t **reply_r,
                                apr_interval_time_t timeout, apr_pool_t *pool)
{
    smtp_reply_parser_t p;
    smtp_reply_parser_init(&p, cl->opts.reply_line_max, pool);
    pr_conn_set_timeout(cl->conn, timeout);
    /* What we wrote goes out before we wait, even if replies are buffered. */
    apr_status_t fst = pr_conn_flush(cl->conn);
    if (fst != APR_SUCCESS) return fst;
    for (;;) {
        const char *data;
        apr_size_t len, used = 0;
        apr_status_t st = pr_conn_peek(cl->conn, &data, &len);
        if (st != APR_SUCCESS) return st;
        st = smtp_reply_parser_feed(&p, data, len, &used, reply_r);
        pr_conn_consume(cl->conn, used);
        if (st == APR_INCOMPLETE) continue;
        if (st != APR_SUCCESS) return PR_EINVAL;
        pr_log_debug(cl->sid, "smtp client < %d %s%s%s", (*reply_r)->code, (*reply_r)->enhanced,
                     *(*reply_r)->enhanced ? " " : "", (*reply_r)->text);
        return APR_SUCCESS;
    }
}

/* What a failed read or write means for the message: try again later. */
static void result_io(smtp_client_t *cl, smtp_result_t *r, apr_status_t st, const char *when,
                      apr_pool_t *pool)
{
    const char *text;
    const char *enh = "4.4.2";
    if (st == PR_ETIMEOUT)
        text = apr_psprintf(pool, "Timeout talking to %s %s", cl->name, when);
    else if (st == PR_EINVAL) {
        text = apr_psprintf(pool, "Malformed reply from %s %s", cl->name, when);
        enh = "4.5.0";
    } else if (st == PR_ECLOSED)
        text = apr_psprintf(pool, "Connection lost with %s %s", cl->name, when);
    else if (st == PR_ETLS) {
        text = apr_psprintf(pool, "TLS error with %s %s", cl->name, when);
        enh = "4.7.5";
    } else {
        char buf[128];
        text = apr_psprintf(pool, "Connection lost with %s %s: %s", cl->name, when,
                            pr_strerror(st, buf, sizeof(buf)));
    }
    result_local(r, 451, enh, text, pool);
}

static void client_break(smtp_client_t *cl)
{
    cl->usable = 0;
    cl->dead = 1;
}

static void client_close(smtp_client_t *cl)
{
    if (!cl->dead) {
        smtp_reply_t *r;
        if (client_write(cl, "QUIT", 0) == APR_SUCCESS)
            client_read(cl, &r, CLIENT_QUIT_TIMEOUT, cl->tx_pool);
    }
    pr_conn_close(cl->conn);
    apr_pool_destroy(cl->pool);
}

static apr_status_t status_of(int code)
{
    return code / 100 == 4 ? PR_ETEMPFAIL : PR_EPERM;
}

/* EHLO, or HELO when EHLO is refused with a 5xx (RFC 5321 3.2). */
static apr_status_t client_ehlo(smtp_client_t *cl, smtp_result_t *err_r, apr_pool_t *pool)
{
    smtp_reply_t *r;
    apr_status_t st = client_write(cl, apr_pstrcat(cl->tx_pool, "EHLO ", cl->opts.helo, NULL), 0);
    if (st == APR_SUCCESS) st = client_read(cl, &r, cl->opts.command_timeout, cl->pool);
    if (st != APR_SUCCESS) {
        result_io(cl, err_r, st, "after EHLO", pool);
        client_break(cl);
        return st;
    }
    if (r->code == 250) {
        smtp_caps_parse(&cl->caps, r);
        return APR_SUCCESS;
    }
    if (r->code / 100 == 5) {
        st = client_write(cl, apr_pstrcat(cl->tx_pool, "HELO ", cl->opts.helo, NULL), 0);
        if (st == APR_SUCCESS) st = client_read(cl, &r, cl->opts.command_timeout, cl->pool);
        if (st != APR_SUCCESS) {
            result_io(cl, err_r, st, "after HELO", pool);
            client_break(cl);
            return st;
        }
        if (r->code == 250) {
            memset(&cl->caps, 0, sizeof(cl->caps));
            return APR_SUCCESS;
        }
    }
    result_reply(err_r, r, pool);
    if (r->code == 421) client_break(cl);
    return status_of(r->code);
}

static apr_status_t client_starttls(smtp_client_t *cl, smtp_result_t *err_r, apr_pool_t *pool)
{
    smtp_tls_e policy = cl->opts.tls;
    if (!(cl->caps.ext & SMTP_EXT_STARTTLS)) {
        if (policy == SMTP_TLS_MAY) return APR_SUCCESS;
        result_local(
            err_r, 451, "4.7.4",
            apr_psprintf(pool, "TLS is required, but %s does not offer STARTTLS", cl->name), pool);
        return PR_ETLS;
    }
    smtp_reply_t *r;
    apr_status_t st = client_write(cl, "STARTTLS", 0);
    if (st == APR_SUCCESS) st = client_read(cl, &r, cl->opts.command_timeout, cl->pool);
    if (st != APR_SUCCESS) {
        result_io(cl, err_r, st, "after STARTTLS", pool);
        client_break(cl);
        return st;
    }
    if (r->code != 220) {
        if (r->code == 421) {
            result_reply(err_r, r, pool);
            client_break(cl);
            return PR_ETEMPFAIL;
        }
        /* RFC 3207 4: refused, the session goes on in clear if we may. */
        if (policy == SMTP_TLS_MAY) return APR_SUCCESS;
        result_local(err_r, 451, "4.7.4",
                     apr_psprintf(pool, "TLS is required, but %s refused STARTTLS: %d %s", cl->name,
                                  r->code, r->text),
                     pool);
        return PR_ETLS;
    }
    /* Anything sent after the 220 in clear was injected (CVE-2011-0411). */
    if (pr_conn_pending(cl->conn) > 0) {
        pr_log_warn(cl->sid, "smtp client: discarding data %s sent after 220 to STARTTLS",
                    cl->name);
        pr_conn_discard_input(cl->conn);
    }
    st = pr_conn_start_tls_client(cl->conn, cl->opts.tls_ctx, cl->name);
    if (st != APR_SUCCESS) {
        result_local(err_r, 451, "4.7.5",
                     apr_psprintf(pool, "TLS handshake with %s failed: %s", cl->name,
                                  pr_conn_tls_error(cl->conn)),
                     pool);
        client_break(cl);
        return PR_ETLS;
    }
    cl->tls_desc = pr_conn_tls_description(cl->conn, cl->pool);
    pr_log_debug(cl->sid, "smtp client: TLS with %s: %s", cl->name, cl->tls_desc);
    /* RFC 3207 4.2: forget what was learnt in clear; ask again. */
    memset(&cl->caps, 0, sizeof(cl->caps));
    return client_ehlo(cl, err_r, pool);
}

/* One AUTH exchange step: send line, expect code. */
static apr_status_t auth_step(smtp_client_t *cl, const char *line, int expect, int secret,
                              smtp_result_t *err_r, apr_pool_t *pool)
{
    smtp_reply_t *r;
    apr_status_t st = client_write(cl, line, secret);
    if (st == APR_SUCCESS) st = client_read(cl, &r, cl->opts.command_timeout, cl->tx_pool);
    if (st != APR_SUCCESS) {
        result_io(cl, err_r, st, "after AUTH", pool);
        client_break(cl);
        return st;
    }
    if (r->code == expect) return APR_SUCCESS;
    if (r->code == 334) {
        /* A challenge we did not expect: cancel (RFC 4954 4). */
        smtp_reply_t *r2;
        if (client_write(cl, "*", 0) != APR_SUCCESS ||
            client_read(cl, &r2, cl->opts.command_timeout, cl->tx_pool) != APR_SUCCESS)
            client_break(cl);
        result_local(err_r, 451, "4.7.0",
                     apr_psprintf(pool, "Unexpected AUTH challenge from %s", cl->name), pool);
        return PR_EAUTH;
    }
    result_reply(err_r, r, pool);
    if (r->code == 421) client_break(cl);
    return PR_EAUTH;
}

static apr_status_t client_auth(smtp_client_t *cl, smtp_result_t *err_r, apr_pool_t *pool)
{
    const char *user = cl->opts.auth_user,
               *pw = cl->opts.auth_password ? cl->opts.auth_password : "";
    if (!cl->tls_desc && cl->opts.tls != SMTP_TLS_NONE) {
        result_local(err_r, 451, "4.7.4",
                     apr_psprintf(pool, "Not sending credentials to %s without TLS", cl->name),
                     pool);
        return PR_EAUTH;
    }
    apr_pool_t *tp = cl->tx_pool;
    if (cl->caps.auth & SMTP_AUTH_PLAIN) {
        apr_size_t ul = strlen(user), pl = strlen(pw);
        char *msg = apr_palloc(tp, ul + pl + 2);
        msg[0] = '\0';
        memcpy(msg + 1, user, ul);
        msg[1 + ul] = '\0';
        memcpy(msg + 2 + ul, pw, pl);
        const char *line =
            apr_pstrcat(tp, "AUTH PLAIN ", pr_b64_encode(msg, ul + pl + 2, tp), NULL);
        memset(msg, 0, ul + pl + 2);
        return auth_step(cl, line, 235, 1, err_r, pool);
    }
    if (cl->caps.auth & SMTP_AUTH_LOGIN) {
        apr_status_t st = auth_step(cl, "AUTH LOGIN", 334, 0, err_r, pool);
        if (st == APR_SUCCESS)
            st = auth_step(cl, pr_b64_encode(user, strlen(user), tp), 334, 1, err_r, pool);
        if (st == APR_SUCCESS)
            st = auth_step(cl, pr_b64_encode(pw, strlen(pw), tp), 235, 1, err_r, pool);
        return st;
    }
    result_local(
        err_r, 451, "4.7.4",
        apr_psprintf(pool, "%s offers no AUTH mechanism we support (PLAIN, LOGIN)", cl->name),
        pool);
    return PR_EAUTH;
}

static apr_status_t client_start(smtp_client_t *cl, smtp_result_t *err_r, apr_pool_t *pool)
{
    apr_status_t st;
    smtp_reply_t *r;
    if (cl->opts.tls == SMTP_TLS_IMPLICIT) {
        st = pr_conn_start_tls_client(cl->conn, cl->opts.tls_ctx, cl->name);
        if (st != APR_SUCCESS) {
            result_local(err_r, 451, "4.7.5",
                         apr_psprintf(pool, "TLS handshake with %s failed: %s", cl->name,
                                      pr_conn_tls_error(cl->conn)),
                         pool);
            client_break(cl);
            return PR_ETLS;
        }
        cl->tls_desc = pr_conn_tls_description(cl->conn, cl->pool);
    }
    st = client_read(cl, &r, cl->opts.command_timeout, cl->pool);
    if (st != APR_SUCCESS) {
        result_io(cl, err_r, st, "while waiting for the greeting", pool);
        client_break(cl);
        return st;
    }
    if (r->code != 220) {
        /* RFC 5321 3.1: after a 554 greeting the client says QUIT. */
        result_reply(err_r, r, pool);
        if (r->code == 421) client_break(cl);
        return status_of(r->code);
    }
    st = client_ehlo(cl, err_r, pool);
    if (st != APR_SUCCESS) return st;
    if (cl->opts.tls == SMTP_TLS_MAY || cl->opts.tls == SMTP_TLS_ENCRYPT) {
        st = client_starttls(cl, err_r, pool);
        if (st != APR_SUCCESS) return st;
    }
    if (cl->opts.auth_user && *cl->opts.auth_user) {
        st = client_auth(cl, err_r, pool);
        if (st != APR_SUCCESS) return st;
    }
    cl->usable = 1;
    return APR_SUCCESS;
}

static smtp_client_t *client_new(const char *name, const smtp_client_opts_t *opts, apr_pool_t *pool)
{
    apr_pool_t *sp;
    apr_pool_create(&sp, pool);
    smtp_client_t *cl = apr_pcalloc(sp, sizeof(*cl));
    cl->pool = sp;
    apr_pool_create(&cl->tx_pool, sp);
    cl->opts = *opts;
    if (!cl->opts.helo || !*cl->opts.helo) cl->opts.helo = "localhost";
    cl->opts.helo = apr_pstrdup(sp, cl->opts.helo);
    if (cl->opts.auth_user) cl->opts.auth_user = apr_pstrdup(sp, cl->opts.auth_user);
    if (cl->opts.auth_password) cl->opts.auth_password = apr_pstrdup(sp, cl->opts.auth_password);
    if (cl->opts.connect_timeout <= 0) cl->opts.connect_timeout = CLIENT_CONNECT_TIMEOUT;
    if (cl->opts.command_timeout <= 0) cl->opts.command_timeout = CLIENT_COMMAND_TIMEOUT;
    if (cl->opts.data_end_timeout <= 0) cl->opts.data_end_timeout = CLIENT_DATA_END_TIMEOUT;
    cl->sid = apr_pstrdup(sp, opts->sid ? opts->sid : "-");
    cl->name = apr_pstrdup(sp, name && *name ? name : "the server");
    return cl;
}

static apr_status_t client_open_on(smtp_client_t *cl, smtp_client_t **cl_r, smtp_result_t *err_r,
                                   apr_pool_t *pool)
{
    apr_status_t st;
    if (cl->opts.tls != SMTP_TLS_NONE && !cl->opts.tls_ctx) {
        result_local(err_r, 451, "4.7.5", "No TLS context configured", pool);
        st = PR_EINVAL;
    } else {
        st = client_start(cl, err_r, pool);
    }
    if (st != APR_SUCCESS) {
        pr_log_debug(cl->sid, "smtp client: session with %s failed: %d %s %s", cl->name,
                     err_r->code, err_r->enhanced, err_r->text);
        client_close(cl);
        *cl_r = NULL;
        return st;
    }
    apr_pool_clear(cl->tx_pool);
    *cl_r = cl;
    return APR_SUCCESS;
}

apr_status_t smtp_client_open(smtp_client_t **cl_r, pr_conn_t *conn, const char *name,
                              const smtp_client_opts_t *opts, smtp_result_t *err_r,
                              apr_pool_t *pool)
{
    smtp_client_t *cl = client_new(name, opts, pool);
    cl->conn = conn;
    return client_open_on(cl, cl_r, err_r, pool);
}

apr_status_t smtp_client_connect(smtp_client_t **cl_r, const char *address, apr_port_t port,
                                 const char *name, const smtp_client_opts_t *opts,
                                 smtp_result_t *err_r, apr_pool_t *pool)
{
    smtp_client_t *cl = client_new(name && *name ? name : address, opts, pool);
    apr_status_t st = pr_conn_connect(&cl->conn, address, port, cl->opts.connect_timeout, cl->pool);
    if (st != APR_SUCCESS) {
        char buf[128];
        const char *why = st == PR_ETIMEOUT    ? "timed out"
                          : st == PR_ENOTFOUND ? "no address found"
                                               : pr_strerror(st, buf, sizeof(buf));
        result_local(
            err_r, 451, "4.4.1",
            apr_psprintf(pool, "Cannot connect to %s port %u: %s", cl->name, (unsigned)port, why),
            pool);
        apr_pool_destroy(cl->pool);
        *cl_r = NULL;
        return st == PR_ETIMEOUT || st == PR_ENOTFOUND ? st : PR_ECLOSED;
    }
    return client_open_on(cl, cl_r, err_r, pool);
}

const smtp_caps_t *smtp_client_caps(const smtp_client_t *cl)
{
    return &cl->caps;
}

const char *smtp_client_tls(const smtp_client_t *cl)
{
    return cl->tls_desc;
}

const char *smtp_client_peer(const smtp_client_t *cl)
{
    return cl->name;
}

int smtp_client_usable(const smtp_client_t *cl)
{
    return cl->usable;
}

/* ---- one transaction */

/* An address we can put between < and > without changing the command. */
static int address_sane(const char *a, int *utf8_r)
{
    for (const unsigned char *s = (const unsigned char *)a; *s; s++) {
        if (*s < 0x21 || *s == 0x7f || *s == '<' || *s == '>') return 0;
        if (*s >= 0x80) *utf8_r = 1;
    }
    return strlen(a) <= 512;
}

static const char *mail_command(smtp_client_t *cl, const smtp_envelope_t *env, int need_utf8,
                                apr_pool_t *pool)
{
    unsigned ext = cl->caps.ext;
    const char *s = apr_pstrcat(pool, "MAIL FROM:<", env->sender, ">", NULL);
    if ((ext & SMTP_EXT_SIZE) && env->size >= 0)
        s = apr_psprintf(pool, "%s SIZE=%" APR_OFF_T_FMT, s, env->size);
    if (env->body_8bit && (ext & SMTP_EXT_8BITMIME))
        s = apr_pstrcat(pool, s, " BODY=8BITMIME", NULL);
    if (need_utf8 && (ext & SMTP_EXT_SMTPUTF8)) s = apr_pstrcat(pool, s, " SMTPUTF8", NULL);
    if (ext & SMTP_EXT_DSN) {
        if (env->ret == SMTP_RET_FULL) s = apr_pstrcat(pool, s, " RET=FULL", NULL);
        if (env->ret == SMTP_RET_HDRS) s = apr_pstrcat(pool, s, " RET=HDRS", NULL);
        if (env->envid && *env->envid)
            s = apr_pstrcat(pool, s, " ENVID=", smtp_xtext_encode(env->envid, pool), NULL);
    }
    return s;
}

static const char *rcpt_command(smtp_client_t *cl, const smtp_rcpt_t *r, apr_pool_t *pool)
{
    const char *s = apr_pstrcat(pool, "RCPT TO:<", r->address, ">", NULL);
    if (!(cl->caps.ext & SMTP_EXT_DSN)) return s;
    if (r->notify & SMTP_NOTIFY_NEVER) {
        s = apr_pstrcat(pool, s, " NOTIFY=NEVER", NULL);
    } else if (r->notify) {
        const char *l = "";
        if (r->notify & SMTP_NOTIFY_SUCCESS) l = apr_pstrcat(pool, l, ",SUCCESS", NULL);
        if (r->notify & SMTP_NOTIFY_FAILURE) l = apr_pstrcat(pool, l, ",FAILURE", NULL);
        if (r->notify & SMTP_NOTIFY_DELAY) l = apr_pstrcat(pool, l, ",DELAY", NULL);
        if (*l) s = apr_pstrcat(pool, s, " NOTIFY=", l + 1, NULL);
    }
    if (r->orcpt && *r->orcpt) {
        /* RFC 3461 4.2: addr-type ";" xtext; the type is an atom. */
        const char *semi = strchr(r->orcpt, ';');
        const char *type =
            semi ? apr_pstrndup(pool, r->orcpt, (apr_size_t)(semi - r->orcpt)) : "rfc822";
        const char *addr = semi ? semi + 1 : r->orcpt;
        int type_ok = *type != '\0';
        for (const char *t = type; *t; t++)
            if (!((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') || is_digit(*t) ||
                  *t == '-'))
                type_ok = 0;
        if (type_ok && *addr)
            s = apr_pstrcat(pool, s, " ORCPT=", type, ";", smtp_xtext_encode(addr, pool), NULL);
    }
    return s;
}

/* Stream the body with dot-stuffing (RFC 5321 4.5.2) and the final dot. */
static apr_status_t send_body(smtp_client_t *cl, smtp_body_read_fn read, void *ctx,
                              apr_status_t *read_err_r)
{
    pr_conn_t *c = cl->conn;
    int bol = 1;
    char last = '\n';
    apr_status_t st;
    *read_err_r = APR_SUCCESS;
    pr_conn_set_timeout(c, cl->opts.command_timeout);
    for (;;) {
        const char *d;
        apr_size_t n = 0;
        apr_status_t rs = read(ctx, &d, &n);
        if (APR_STATUS_IS_EOF(rs) || (rs == APR_SUCCESS && n == 0)) break;
        if (rs != APR_SUCCESS) {
            *read_err_r = rs;
            return rs;
        }
        const char *seg = d;
        for (apr_size_t i = 0; i < n; i++) {
            if (bol && d[i] == '.') {
                st = pr_conn_write(c, seg, (apr_size_t)(d + i - seg));
                if (st == APR_SUCCESS) st = pr_conn_write(c, ".", 1);
                if (st != APR_SUCCESS) return st;
                seg = d + i; /* the dot itself goes with the next segment */
            }
            bol = d[i] == '\n';
        }
        st = pr_conn_write(c, seg, (apr_size_t)(d + n - seg));
        if (st != APR_SUCCESS) return st;
        last = d[n - 1];
    }
    /* A body not ending in CRLF gets one, so the dot stands on its own line. */
    if (last == '\r')
        st = pr_conn_write(c, "\n", 1);
    else if (last != '\n')
        st = pr_conn_write(c, "\r\n", 2);
    else
        st = APR_SUCCESS;
    if (st == APR_SUCCESS) st = pr_conn_write(c, ".\r\n", 3);
    if (st == APR_SUCCESS) st = pr_conn_flush(c);
    return st;
}

enum { RCPT_PENDING = 1, RCPT_ACCEPTED, RCPT_DONE };

/* Every recipient without a final result gets r. */
static void finish_all(smtp_send_result_t *res, int *state, const smtp_result_t *r)
{
    for (int i = 0; i < res->nrcpts; i++)
        if (state[i] == RCPT_PENDING || state[i] == RCPT_ACCEPTED) {
            res->rcpts[i] = *r;
            state[i] = RCPT_DONE;
        }
    res->message = *r;
}

apr_status_t smtp_client_send(smtp_client_t *cl, const smtp_envelope_t *env, smtp_body_read_fn read,
                              void *read_ctx, smtp_send_result_t *res, apr_pool_t *pool)
{
    memset(res, 0, sizeof(*res));
    int n = env->nrcpts > 0 ? env->nrcpts : 0;
    res->nrcpts = n;
    res->rcpts = apr_pcalloc(pool, sizeof(*res->rcpts) * (apr_size_t)(n ? n : 1));
    int *state = apr_pcalloc(pool, sizeof(int) * (apr_size_t)(n ? n : 1));
    smtp_result_t fail;
    apr_pool_t *tp = cl->tx_pool;
    apr_pool_clear(tp);

    for (int i = 0; i < n; i++)
        state[i] = RCPT_PENDING;
    if (n == 0 || !env->sender || !cl->usable) {
        result_local(&fail, 451, "4.3.0",
                     n == 0         ? "No recipients"
                     : !env->sender ? "No sender"
                                    : "The connection can no longer be used",
                     pool);
        finish_all(res, state, &fail);
        res->usable = cl->usable;
        return PR_EINVAL;
    }
    res->usable = 1;

    /* Checks before anything is sent. */
    int need_utf8 = env->smtputf8 != 0, valid = 0;
    if (!address_sane(env->sender, &need_utf8)) {
        result_local(&fail, 553, "5.1.7", "Invalid sender address", pool);
        finish_all(res, state, &fail);
        return APR_SUCCESS;
    }
    for (int i = 0; i < n; i++) {
        if (!env->rcpts[i].address || !*env->rcpts[i].address ||
            !address_sane(env->rcpts[i].address, &need_utf8)) {
            result_local(&res->rcpts[i], 553, "5.1.3", "Invalid recipient address", pool);
            state[i] = RCPT_DONE;
            res->message = res->rcpts[i];
        } else {
            valid++;
        }
    }
    if (valid == 0) return APR_SUCCESS;
    const smtp_caps_t *caps = &cl->caps;
    if ((caps->ext & SMTP_EXT_SIZE) && caps->size_max > 0 && env->size > caps->size_max) {
        result_local(&fail, 552, "5.3.4",
                     apr_psprintf(pool,
                                  "Message size %" APR_OFF_T_FMT
                                  " exceeds the fixed maximum message size of %s (%" APR_OFF_T_FMT
                                  ")",
                                  env->size, cl->name, caps->size_max),
                     pool);
        finish_all(res, state, &fail);
        return APR_SUCCESS;
    }
    if (env->body_8bit && !(caps->ext & SMTP_EXT_8BITMIME)) {
        result_local(&fail, 554, "5.6.3",
                     apr_psprintf(pool, "8-bit message and %s does not support 8BITMIME (RFC 6152)",
                                  cl->name),
                     pool);
        finish_all(res, state, &fail);
        return APR_SUCCESS;
    }
    if (need_utf8 && !(caps->ext & SMTP_EXT_SMTPUTF8)) {
        result_local(
            &fail, 553, "5.6.7",
            apr_psprintf(pool, "Message needs SMTPUTF8 and %s does not support it", cl->name),
            pool);
        finish_all(res, state, &fail);
        return APR_SUCCESS;
    }

    int pipe = (caps->ext & SMTP_EXT_PIPELINING) != 0;
    apr_status_t st = APR_SUCCESS;
    smtp_reply_t *r = NULL, *mail_reply = NULL, *last_refusal = NULL;
    const char *when = "after MAIL FROM";
    int accepted = 0;

    if (pipe) {
        /* RFC 2920 3.1: MAIL, RCPTs and DATA as one group, then the replies. */
        st = client_write(cl, mail_command(cl, env, need_utf8, tp), 0);
        for (int i = 0; i < n && st == APR_SUCCESS; i++)
            if (state[i] == RCPT_PENDING)
                st = client_write(cl, rcpt_command(cl, &env->rcpts[i], tp), 0);
        if (st == APR_SUCCESS) st = client_write(cl, "DATA", 0);
        if (st == APR_SUCCESS) st = pr_conn_flush(cl->conn);
    } else {
        st = client_write(cl, mail_command(cl, env, need_utf8, tp), 0);
    }
    if (st == APR_SUCCESS) st = client_read(cl, &r, cl->opts.command_timeout, tp);
    if (st != APR_SUCCESS) goto lost;
    if (r->code == 421) goto closing;
    if (r->code / 100 != 2) mail_reply = r;

    for (int i = 0; i < n; i++) {
        if (state[i] != RCPT_PENDING) continue;
        if (!pipe) {
            if (mail_reply) break;
            st = client_write(cl, rcpt_command(cl, &env->rcpts[i], tp), 0);
        }
        when = "after RCPT TO";
        if (st == APR_SUCCESS) st = client_read(cl, &r, cl->opts.command_timeout, tp);
        if (st != APR_SUCCESS) goto lost;
        if (r->code == 421) goto closing;
        if (mail_reply) continue; /* the 503s that follow a refused MAIL */
        if (r->code / 100 == 2) {
            state[i] = RCPT_ACCEPTED;
            accepted++;
        } else {
            result_reply(&res->rcpts[i], r, pool);
            state[i] = RCPT_DONE;
            last_refusal = r;
        }
    }

    if (mail_reply || accepted == 0) {
        if (mail_reply) {
            result_reply(&fail, mail_reply, pool);
            finish_all(res, state, &fail);
        } else {
            result_reply(&res->message, last_refusal, pool);
        }
        if (!pipe) return APR_SUCCESS;
        /* The pipelined DATA must still be answered (RFC 2920 3.1). */
        when = "after DATA";
        st = client_read(cl, &r, cl->opts.command_timeout, tp);
        if (st != APR_SUCCESS) goto lost_quiet;
        if (r->code == 421) goto lost_quiet;
        if (r->code == 354) {
            /* Accepted although nobody can receive: end it empty. */
            st = client_write(cl, ".", 0);
            if (st == APR_SUCCESS) st = client_read(cl, &r, cl->opts.data_end_timeout, tp);
            if (st != APR_SUCCESS) goto lost_quiet;
        }
        return APR_SUCCESS;
    }

    when = "after DATA";
    if (!pipe) st = client_write(cl, "DATA", 0);
    if (st == APR_SUCCESS) st = client_read(cl, &r, cl->opts.command_timeout, tp);
    if (st != APR_SUCCESS) goto lost;
    if (r->code == 421) goto closing;
    if (r->code != 354) {
        result_reply(&fail, r, pool);
        finish_all(res, state, &fail);
        return APR_SUCCESS;
    }
    apr_status_t read_err;
    when = "while sending the message";
    st = send_body(cl, read, read_ctx, &read_err);
    if (read_err != APR_SUCCESS) {
        char buf[128];
        /* DATA cannot be taken back: drop the connection without the dot. */
        result_local(&fail, 451, "4.3.0",
                     apr_psprintf(pool, "Error reading the message: %s",
                                  pr_strerror(read_err, buf, sizeof(buf))),
                     pool);
        finish_all(res, state, &fail);
        client_break(cl);
        res->usable = 0;
        return APR_SUCCESS;
    }
    if (st != APR_SUCCESS) goto lost;
    res->data_sent = 1;
    when = "after end of data";
    st = client_read(cl, &r, cl->opts.data_end_timeout, tp);
    if (st != APR_SUCCESS) goto lost;
    if (r->code == 421) goto closing;
    result_reply(&fail, r, pool);
    finish_all(res, state, &fail);
    return APR_SUCCESS;

lost:
    result_io(cl, &fail, st, when, pool);
    finish_all(res, state, &fail);
    client_break(cl);
    res->usable = 0;
    return APR_SUCCESS;
closing:
    /* RFC 5321 3.8: 421 and the server closes; the rest is unanswered. */
    result_reply(&fail, r, pool);
    finish_all(res, state, &fail);
    client_break(cl);
    res->usable = 0;
    return APR_SUCCESS;
lost_quiet:
    /* Every recipient has its answer already; only the session is lost. */
    client_break(cl);
    res->usable = 0;
    return APR_SUCCESS;
}

apr_status_t smtp_client_reset(smtp_client_t *cl)
{
    smtp_reply_t *r;
    if (!cl->usable) return PR_EINVAL;
    apr_pool_clear(cl->tx_pool);
    apr_status_t st = client_write(cl, "RSET", 0);
    if (st == APR_SUCCESS) st = client_read(cl, &r, cl->opts.command_timeout, cl->tx_pool);
    if (st != APR_SUCCESS) {
        client_break(cl);
        return st;
    }
    if (r->code == 250) return APR_SUCCESS;
    cl->usable = 0;
    if (r->code == 421) cl->dead = 1;
    return status_of(r->code);
}

void smtp_client_quit(smtp_client_t *cl)
{
    if (cl) client_close(cl);
}
