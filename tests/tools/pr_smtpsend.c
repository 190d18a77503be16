/* pr_smtpsend: send one message with Postroom's SMTP client and print what
 * became of each recipient, for the integration tests (a real postroomd as
 * the peer). The message file (default stdin) may use LF line ends; they
 * become CRLF.
 *
 *   pr_smtpsend [--helo NAME] [--from ADDR] --to ADDR [--to ADDR ...]
 *               [--notify success,failure,delay|never] [--orcpt TYPE;ADDR]
 *               [--ret full|hdrs] [--envid ID]
 *               [--tls none|may|encrypt|implicit] [--ca FILE | --verify]
 *               [--name TLS-NAME] [--user U --password-file F]
 *               [--count N] [--timeout SECONDS] [--message FILE] HOST PORT
 *
 * Prints "open: CODE ENH TEXT" when no session came about (exit 2), else
 * "tls: ..." / "caps: ...", then per message "rcpt ADDR: CODE ENH TEXT"
 * lines, "message: CODE ENH TEXT" and "usable: 0|1". Exit 0 when every
 * recipient got a 2xx, 1 otherwise. --notify and --orcpt apply to every
 * --to; --count sends the message N times on one connection (RSET between).
 */
#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_cstr.h>
#include <apr_getopt.h>
#include <apr_strings.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/core/conn.h"
#include "service/core/status.h"
#include "service/core/tls.h"
#include "service/smtp/smtp_client.h"

typedef struct body_t {
    const char *data;
    apr_size_t len, pos;
} body_t;

/* Hand the body out in small chunks so dot-stuffing crosses boundaries. */
static apr_status_t body_read(void *ctx, const char **d, apr_size_t *len)
{
    body_t *b = ctx;
    if (b->pos >= b->len) return APR_EOF;
    apr_size_t n = b->len - b->pos;
    if (n > 1000) n = 1000;
    *d = b->data + b->pos;
    *len = n;
    b->pos += n;
    return APR_SUCCESS;
}

static const char *read_all(const char *path, apr_size_t *len_r, apr_pool_t *pool)
{
    apr_file_t *f;
    apr_status_t st = path ? apr_file_open(&f, path, APR_READ | APR_BINARY, 0, pool)
                           : apr_file_open_stdin(&f, pool);
    if (st != APR_SUCCESS) return NULL;
    char *buf = NULL;
    apr_size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 8192) {
            apr_size_t ncap = cap ? cap * 2 : 65536;
            char *n = apr_palloc(pool, ncap);
            if (len) memcpy(n, buf, len);
            buf = n;
            cap = ncap;
        }
        apr_size_t n = cap - len;
        st = apr_file_read(f, buf + len, &n);
        len += n;
        if (APR_STATUS_IS_EOF(st) || (st == APR_SUCCESS && n == 0)) break;
        if (st != APR_SUCCESS) return NULL;
    }
    *len_r = len;
    return buf ? buf : "";
}

/* LF or CRLF in, CRLF out. */
static const char *to_crlf(const char *s, apr_size_t len, apr_size_t *len_r, apr_pool_t *pool)
{
    char *out = apr_palloc(pool, 2 * len + 1), *o = out;
    for (apr_size_t i = 0; i < len; i++) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) *o++ = '\r';
        *o++ = s[i];
    }
    *len_r = (apr_size_t)(o - out);
    return out;
}

static const char *trim_line(const char *s, apr_pool_t *pool)
{
    apr_size_t n = strcspn(s, "\r\n");
    return apr_pstrndup(pool, s, n);
}

static void print_result(const char *what, const smtp_result_t *r)
{
    printf("%s: %d %s%s%s\n", what, r->code, r->enhanced, *r->enhanced ? " " : "", r->text);
}

static void usage(void)
{
    fprintf(stderr, "usage: pr_smtpsend [options] --to ADDR HOST PORT (see the source)\n");
    exit(64);
}

int main(int argc, const char *const *argv)
{
    apr_pool_t *pool;
    apr_app_initialize(&argc, &argv, NULL);
#ifndef _WIN32
    signal(SIGPIPE, SIG_IGN); /* a peer that hangs up is a result, not a crash */
#endif
    apr_pool_create(&pool, NULL);

    static const apr_getopt_option_t options[] = {
        {"helo", 'h', 1, "our name"},
        {"from", 'f', 1, "sender ('' for <>)"},
        {"to", 't', 1, "recipient (repeat)"},
        {"notify", 'N', 1, "DSN NOTIFY for every recipient"},
        {"orcpt", 'O', 1, "DSN ORCPT for every recipient"},
        {"ret", 'R', 1, "full|hdrs"},
        {"envid", 'E', 1, "DSN ENVID"},
        {"tls", 'T', 1, "none|may|encrypt|implicit"},
        {"ca", 'C', 1, "verify against this CA file"},
        {"verify", 'V', 0, "verify against the system store"},
        {"name", 'n', 1, "the server's name for TLS"},
        {"user", 'u', 1, "AUTH user"},
        {"password-file", 'p', 1, "AUTH password file"},
        {"count", 'c', 1, "send N times on one connection"},
        {"timeout", 'w', 1, "timeout for each reply, in seconds"},
        {"message", 'm', 1, "message file (default stdin)"},
        {NULL, 0, 0, NULL},
    };
    apr_getopt_t *go;
    apr_getopt_init(&go, pool, argc, argv);
    int ch;
    const char *arg;
    smtp_client_opts_t o = {0};
    o.helo = "client.example.net";
    o.tls = SMTP_TLS_NONE;
    const char *from = "", *message = NULL, *ca = NULL, *name = NULL, *pwfile = NULL;
    const char *orcpt = NULL;
    unsigned notify = 0;
    int verify = 0, count = 1;
    smtp_envelope_t env = {0};
    apr_array_header_t *rcpts = apr_array_make(pool, 4, sizeof(smtp_rcpt_t));
    apr_status_t st;
    while ((st = apr_getopt_long(go, options, &ch, &arg)) == APR_SUCCESS) {
        switch (ch) {
        case 'h':
            o.helo = arg;
            break;
        case 'f':
            from = arg;
            break;
        case 't': {
            smtp_rcpt_t *r = &APR_ARRAY_PUSH(rcpts, smtp_rcpt_t);
            memset(r, 0, sizeof(*r));
            r->address = arg;
            break;
        }
        case 'N': {
            char *last, *list = apr_pstrdup(pool, arg);
            for (char *w = apr_strtok(list, ",", &last); w; w = apr_strtok(NULL, ",", &last)) {
                if (!apr_cstr_casecmp(w, "never"))
                    notify |= SMTP_NOTIFY_NEVER;
                else if (!apr_cstr_casecmp(w, "success"))
                    notify |= SMTP_NOTIFY_SUCCESS;
                else if (!apr_cstr_casecmp(w, "failure"))
                    notify |= SMTP_NOTIFY_FAILURE;
                else if (!apr_cstr_casecmp(w, "delay"))
                    notify |= SMTP_NOTIFY_DELAY;
                else
                    usage();
            }
            break;
        }
        case 'O':
            orcpt = arg;
            break;
        case 'R':
            env.ret = !apr_cstr_casecmp(arg, "full")   ? SMTP_RET_FULL
                      : !apr_cstr_casecmp(arg, "hdrs") ? SMTP_RET_HDRS
                                                       : SMTP_RET_UNSET;
            break;
        case 'E':
            env.envid = arg;
            break;
        case 'T':
            if (!strcmp(arg, "none"))
                o.tls = SMTP_TLS_NONE;
            else if (!strcmp(arg, "may"))
                o.tls = SMTP_TLS_MAY;
            else if (!strcmp(arg, "encrypt"))
                o.tls = SMTP_TLS_ENCRYPT;
            else if (!strcmp(arg, "implicit"))
                o.tls = SMTP_TLS_IMPLICIT;
            else
                usage();
            break;
        case 'C':
            ca = arg;
            verify = 1;
            break;
        case 'V':
            verify = 1;
            break;
        case 'n':
            name = arg;
            break;
        case 'u':
            o.auth_user = arg;
            break;
        case 'p':
            pwfile = arg;
            break;
        case 'c':
            count = atoi(arg);
            break;
        case 'w':
            o.command_timeout = o.data_end_timeout = apr_time_from_sec(atoi(arg));
            break;
        case 'm':
            message = arg;
            break;
        default:
            usage();
        }
    }
    if (st != APR_EOF || go->ind + 2 != argc || rcpts->nelts == 0 || count < 1) usage();
    const char *host = argv[go->ind];
    apr_port_t port = (apr_port_t)atoi(argv[go->ind + 1]);

    if (pwfile) {
        apr_size_t n;
        const char *pw = read_all(pwfile, &n, pool);
        if (!pw) {
            fprintf(stderr, "pr_smtpsend: cannot read %s\n", pwfile);
            return 64;
        }
        o.auth_password = trim_line(apr_pstrndup(pool, pw, n), pool);
    }
    if (o.tls != SMTP_TLS_NONE) {
        pr_tls_client_opts_t to = {verify, ca, 0};
        const char *err = NULL;
        if (pr_tls_client_ctx_create(&o.tls_ctx, &to, &err, pool) != APR_SUCCESS) {
            fprintf(stderr, "pr_smtpsend: TLS: %s\n", err);
            return 64;
        }
    }

    apr_size_t raw_len, len;
    const char *raw = read_all(message, &raw_len, pool);
    if (!raw) {
        fprintf(stderr, "pr_smtpsend: cannot read the message\n");
        return 64;
    }
    const char *data = to_crlf(raw, raw_len, &len, pool);

    for (int i = 0; i < rcpts->nelts; i++) {
        APR_ARRAY_IDX(rcpts, i, smtp_rcpt_t).notify = notify;
        APR_ARRAY_IDX(rcpts, i, smtp_rcpt_t).orcpt = orcpt;
    }
    env.sender = from;
    env.rcpts = (const smtp_rcpt_t *)rcpts->elts;
    env.nrcpts = rcpts->nelts;
    env.size = (apr_off_t)len;
    for (apr_size_t i = 0; i < len; i++)
        if ((unsigned char)data[i] >= 0x80) env.body_8bit = 1;

    smtp_client_t *cl;
    smtp_result_t err;
    st = smtp_client_connect(&cl, host, port, name, &o, &err, pool);
    if (st != APR_SUCCESS) {
        print_result("open", &err);
        fflush(stdout);
        apr_pool_destroy(pool);
        apr_terminate();
        return 2;
    }
    const smtp_caps_t *caps = smtp_client_caps(cl);
    printf("tls: %s\n", smtp_client_tls(cl) ? smtp_client_tls(cl) : "none");
    printf("caps:%s%s%s%s%s%s%s%s", caps->esmtp ? " ESMTP" : " HELO",
           caps->ext & SMTP_EXT_PIPELINING ? " PIPELINING" : "",
           caps->ext & SMTP_EXT_8BITMIME ? " 8BITMIME" : "",
           caps->ext & SMTP_EXT_SMTPUTF8 ? " SMTPUTF8" : "",
           caps->ext & SMTP_EXT_STARTTLS ? " STARTTLS" : "",
           caps->ext & SMTP_EXT_AUTH ? " AUTH" : "", caps->ext & SMTP_EXT_DSN ? " DSN" : "",
           caps->ext & SMTP_EXT_ENHANCEDSTATUSCODES ? " ENHANCEDSTATUSCODES" : "");
    if (caps->ext & SMTP_EXT_SIZE) printf(" SIZE=%" APR_OFF_T_FMT, caps->size_max);
    printf("\n");

    int all_ok = 1;
    for (int n = 0; n < count; n++) {
        if (n > 0 && smtp_client_reset(cl) != APR_SUCCESS) {
            printf("reset: failed\n");
            all_ok = 0;
            break;
        }
        body_t b = {data, len, 0};
        smtp_send_result_t res;
        smtp_client_send(cl, &env, body_read, &b, &res, pool);
        for (int i = 0; i < res.nrcpts; i++) {
            print_result(apr_psprintf(pool, "rcpt %s", env.rcpts[i].address), &res.rcpts[i]);
            if (res.rcpts[i].code / 100 != 2) all_ok = 0;
        }
        print_result("message", &res.message);
        printf("usable: %d\n", res.usable);
        if (!res.usable) break;
    }
    fflush(stdout);
    smtp_client_quit(cl);
    apr_pool_destroy(pool);
    apr_terminate();
    return all_ok ? 0 : 1;
}
