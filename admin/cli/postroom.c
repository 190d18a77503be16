/* `postroom`: the command-line admin console. It parses a command, loads
 * postroom.conf and calls the admin operations in-process (SQLite in WAL
 * mode is safe beside a running daemon). Exit status: 0 done, 1 the
 * operation failed, 2 the command line was wrong. */
#include "admin/admin_ops.h"
#include "service/core/config.h"
#include "service/core/log.h"
#include "service/core/status.h"

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLI_DEFAULT_CONFIG "/etc/postroom/postroom.conf"
#define CLI_PASSWORD_MAX 1024 /* longer is a paste accident, not a password */

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

static const char cli_usage_text[] =
    "usage: postroom [-c FILE] COMMAND...\n"
    "\n"
    "  -c FILE   configuration file (default " CLI_DEFAULT_CONFIG ")\n"
    "\n"
    "commands:\n"
    "  domain add DOMAIN\n"
    "  domain del DOMAIN\n"
    "  domain list\n"
    "  user add ADDRESS [--password-stdin]\n"
    "  user passwd ADDRESS [--password-stdin]\n"
    "  user quota ADDRESS SIZE|default\n"
    "  user del ADDRESS\n"
    "  user list\n"
    "  alias add ADDRESS TARGET...\n"
    "  alias del ADDRESS\n"
    "  alias list\n"
    "  list add ADDRESS\n"
    "  list del ADDRESS\n"
    "  list member add LIST ADDRESS\n"
    "  list member del LIST ADDRESS\n"
    "  list policy LIST anyone|members|local\n"
    "  list show [LIST]\n"
    "  mailbox show ADDRESS\n"
    "  mailbox cat ADDRESS UID [FOLDER]\n"
    "  queue list\n"
    "  queue show ID\n"
    "  queue flush\n"
    "  queue retry ID\n"
    "  queue delete ID\n"
    "\n"
    "Without --password-stdin the password is asked twice on the terminal;\n"
    "with it, one line is read from standard input.\n"
    "A quota SIZE is bytes or a number with k, m or g (25m); 0 is unlimited;\n"
    "'default' goes back to [store] default_quota.\n"
    "A list's policy says who may post to it: anyone; members (by envelope\n"
    "sender); local (authenticated senders only). It applies to lists of an\n"
    "LDAP directory too.\n"
    "The queue holds mail waiting to go out to other servers. queue flush\n"
    "makes every waiting message due now, queue retry one message (ID from\n"
    "queue list); the running postroomd tries them within seconds. queue\n"
    "delete removes a message for good WITHOUT a bounce: its sender is not told.\n";

typedef struct cli_t {
    apr_pool_t *pool;
    admin_t *admin;
    const char *const *args; /* the command's arguments after its words */
    int n;
    int password_stdin;
} cli_t;

static int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int cli_fail(const char *fmt, ...)
{
    va_list ap;
    fputs("postroom: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_FAILED;
}

static int cli_result(apr_status_t st, const char *err)
{
    char buf[160];
    if (st == APR_SUCCESS) return CLI_OK;
    return cli_fail("%s", err ? err : pr_strerror(st, buf, sizeof(buf)));
}

/* ---- passwords */

/* One line from standard input; its LF or CRLF is not part of it. */
static int cli_password_from_stdin(const char **pw_r, apr_pool_t *pool)
{
    apr_file_t *in;
    char *buf = apr_palloc(pool, CLI_PASSWORD_MAX + 2);
    apr_size_t n = 0;
    int got_any = 0;
    char c;

    if (apr_file_open_stdin(&in, pool) != APR_SUCCESS)
        return cli_fail("cannot read standard input");
    while (apr_file_getc(&c, in) == APR_SUCCESS) {
        got_any = 1;
        if (c == '\n') break;
        if (c == '\0') return cli_fail("the password contains a NUL byte");
        if (n > CLI_PASSWORD_MAX)
            return cli_fail("password too long (over %d bytes)", CLI_PASSWORD_MAX);
        buf[n++] = c;
    }
    if (n > 0 && buf[n - 1] == '\r') n--;
    buf[n] = '\0';
    if (!got_any) return cli_fail("no password on standard input");
    if (n == 0) return cli_fail("empty password refused");
    *pw_r = buf;
    return CLI_OK;
}

static int cli_password_prompt(const char **pw_r, apr_pool_t *pool)
{
    char *a = apr_palloc(pool, CLI_PASSWORD_MAX + 1);
    char *b = apr_palloc(pool, CLI_PASSWORD_MAX + 1);
    apr_size_t na = CLI_PASSWORD_MAX + 1, nb = CLI_PASSWORD_MAX + 1;
    apr_status_t st;

    st = apr_password_get("New password: ", a, &na);
    if (st == APR_SUCCESS) st = apr_password_get("Retype new password: ", b, &nb);
    if (st == APR_ENAMETOOLONG)
        return cli_fail("password too long (over %d bytes)", CLI_PASSWORD_MAX);
    if (st != APR_SUCCESS)
        return cli_fail("cannot read a password from the terminal; use --password-stdin");
    if (strcmp(a, b) != 0) return cli_fail("the passwords do not match");
    if (!*a) return cli_fail("empty password refused");
    *pw_r = a;
    return CLI_OK;
}

static int cli_password(cli_t *c, const char **pw_r)
{
    return c->password_stdin ? cli_password_from_stdin(pw_r, c->pool)
                             : cli_password_prompt(pw_r, c->pool);
}

/* ---- commands */

static int cmd_domain_add(cli_t *c)
{
    const char *err = NULL;
    apr_status_t st = admin_domain_add(c->admin, c->args[0], &err, c->pool);
    return cli_result(st, err);
}

static int cmd_domain_del(cli_t *c)
{
    const char *err = NULL;
    apr_status_t st = admin_domain_del(c->admin, c->args[0], &err, c->pool);
    return cli_result(st, err);
}

static int cmd_domain_list(cli_t *c)
{
    const char *err = NULL;
    apr_array_header_t *list;
    apr_status_t st = admin_domain_list(c->admin, &list, &err, c->pool);
    if (st != APR_SUCCESS) return cli_result(st, err);
    for (int i = 0; i < list->nelts; i++)
        printf("%s\n", APR_ARRAY_IDX(list, i, const char *));
    return CLI_OK;
}

static int cmd_user_add(cli_t *c)
{
    const char *err = NULL, *pw;
    int rc = cli_password(c, &pw);
    if (rc != CLI_OK) return rc;
    apr_status_t st = admin_user_add(c->admin, c->args[0], pw, &err, c->pool);
    return cli_result(st, err);
}

static int cmd_user_passwd(cli_t *c)
{
    const char *err = NULL, *pw;
    int rc = cli_password(c, &pw);
    if (rc != CLI_OK) return rc;
    apr_status_t st = admin_user_passwd(c->admin, c->args[0], pw, &err, c->pool);
    return cli_result(st, err);
}

static int cmd_user_quota(cli_t *c)
{
    const char *err = NULL;
    apr_off_t quota;
    if (strcmp(c->args[1], "default") == 0) {
        quota = -1;
    } else if (pr_parse_size(&quota, c->args[1]) != APR_SUCCESS) {
        fprintf(stderr,
                "postroom: invalid quota '%s' (bytes, or a number with k, m or g; 0 = unlimited; "
                "or default)\n",
                c->args[1]);
        return CLI_USAGE;
    }
    apr_status_t st = admin_user_quota(c->admin, c->args[0], quota, &err, c->pool);
    return cli_result(st, err);
}

static int cmd_user_del(cli_t *c)
{
    const char *err = NULL;
    apr_status_t st = admin_user_del(c->admin, c->args[0], &err, c->pool);
    return cli_result(st, err);
}

static int cmd_user_list(cli_t *c)
{
    const char *err = NULL;
    apr_array_header_t *users;
    apr_status_t st = admin_user_list(c->admin, &users, &err, c->pool);
    if (st != APR_SUCCESS) return cli_result(st, err);
    for (int i = 0; i < users->nelts; i++) {
        const dir_user_t *u = &APR_ARRAY_IDX(users, i, dir_user_t);
        printf("%s%s", u->address, u->enabled ? "" : "  (disabled)");
        if (u->quota == 0) printf("  quota unlimited");
        if (u->quota > 0) printf("  quota %" APR_OFF_T_FMT, u->quota);
        printf("\n");
    }
    return CLI_OK;
}

static int cmd_alias_add(cli_t *c)
{
    const char *err = NULL;
    apr_status_t st = admin_alias_add(c->admin, c->args[0], c->args + 1, c->n - 1, &err, c->pool);
    return cli_result(st, err);
}

static int cmd_alias_del(cli_t *c)
{
    const char *err = NULL;
    apr_status_t st = admin_alias_del(c->admin, c->args[0], &err, c->pool);
    return cli_result(st, err);
}

static void cli_print_entry(const dir_entry_t *e, const char *sep)
{
    printf("%s%s", e->address, sep);
    for (int j = 0; j < e->targets->nelts; j++)
        printf("%s%s", j ? ", " : "", APR_ARRAY_IDX(e->targets, j, const char *));
    printf("\n");
}

static int cmd_alias_list(cli_t *c)
{
    const char *err = NULL;
    apr_array_header_t *aliases;
    apr_status_t st = admin_alias_list(c->admin, &aliases, &err, c->pool);
    if (st != APR_SUCCESS) return cli_result(st, err);
    for (int i = 0; i < aliases->nelts; i++)
        cli_print_entry(APR_ARRAY_IDX(aliases, i, const dir_entry_t *), " -> ");
    return CLI_OK;
}

static int cmd_list_add(cli_t *c)
{
    const char *err = NULL;
    apr_status_t st = admin_list_add(c->admin, c->args[0], &err, c->pool);
    return cli_result(st, err);
}

static int cmd_list_del(cli_t *c)
{
    const char *err = NULL;
    apr_status_t st = admin_list_del(c->admin, c->args[0], &err, c->pool);
    return cli_result(st, err);
}

static int cmd_list_member_add(cli_t *c)
{
    const char *err = NULL;
    apr_status_t st = admin_list_member_add(c->admin, c->args[0], c->args[1], &err, c->pool);
    return cli_result(st, err);
}

static int cmd_list_member_del(cli_t *c)
{
    const char *err = NULL;
    apr_status_t st = admin_list_member_del(c->admin, c->args[0], c->args[1], &err, c->pool);
    return cli_result(st, err);
}

static int cmd_list_policy(cli_t *c)
{
    const char *err = NULL;
    apr_status_t st = admin_list_policy(c->admin, c->args[0], c->args[1], &err, c->pool);
    return cli_result(st, err);
}

static int cmd_list_show(cli_t *c)
{
    const char *err = NULL, *want = NULL;
    apr_array_header_t *lists;
    apr_status_t st;

    if (c->n == 1 && !(want = dir_address_normalize(c->args[0], c->pool)))
        return cli_fail("invalid address '%s'", c->args[0]);
    if ((st = admin_list_show(c->admin, &lists, &err, c->pool)) != APR_SUCCESS)
        return cli_result(st, err);
    for (int i = 0; i < lists->nelts; i++) {
        const admin_list_t *l = &APR_ARRAY_IDX(lists, i, admin_list_t);
        if (!want) {
            /* "staff@example.org (posting: members): a@example.org, ..." */
            printf("%s (posting: %s):", l->address, dir_post_policy_name(l->policy));
            if (!l->members) printf(" (members kept in the read-only directory)");
            for (int j = 0; l->members && j < l->members->nelts; j++)
                printf("%s%s", j ? ", " : " ", APR_ARRAY_IDX(l->members, j, const char *));
            printf("\n");
        } else if (strcmp(l->address, want) == 0) {
            if (!l->members)
                return cli_fail("list '%s' is in the read-only directory; its members are "
                                "listed there",
                                want);
            /* one list: its members, one a line, for scripts */
            for (int j = 0; j < l->members->nelts; j++)
                printf("%s\n", APR_ARRAY_IDX(l->members, j, const char *));
            return CLI_OK;
        }
    }
    if (want) return cli_fail("list '%s' does not exist", want);
    return CLI_OK;
}

/* "1234 bytes (1.2 KiB)" */
static const char *cli_size(apr_off_t size, apr_pool_t *pool)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    double v = (double)size;
    int u = -1;
    while (v >= 1024 && u < 3) {
        v /= 1024;
        u++;
    }
    if (u < 0) return apr_psprintf(pool, "%" APR_OFF_T_FMT " bytes", size);
    return apr_psprintf(pool, "%" APR_OFF_T_FMT " bytes (%.1f %s)", size, v, units[u]);
}

static int cmd_mailbox_show(cli_t *c)
{
    const char *err = NULL;
    admin_mailbox_t *m;
    apr_status_t st = admin_mailbox_show(c->admin, c->args[0], &m, &err, c->pool);
    if (st != APR_SUCCESS) return cli_result(st, err);
    printf("mailbox %s\n", m->address);
    if (m->folders->nelts == 0) printf("  (no mail yet)\n");
    for (int i = 0; i < m->folders->nelts; i++) {
        const admin_folder_t *f = &APR_ARRAY_IDX(m->folders, i, admin_folder_t);
        printf("  %-20s %6u message%s  %s\n", f->name, f->messages, f->messages == 1 ? " " : "s",
               cli_size(f->size, c->pool));
    }
    printf("  %-20s %6u message%s  %s\n", "total", m->messages, m->messages == 1 ? " " : "s",
           cli_size(m->size, c->pool));
    /* "quota USED/LIMIT bytes" or "quota USED bytes, no limit": scripts split it. */
    if (m->quota > 0)
        printf("  quota %" APR_OFF_T_FMT "/%" APR_OFF_T_FMT " bytes (%d%%%s)\n", m->used, m->quota,
               (int)(m->used * 100 / m->quota), m->quota_is_default ? ", default" : "");
    else
        printf("  quota %" APR_OFF_T_FMT " bytes, no limit\n", m->used);
    return CLI_OK;
}

static int cli_parse_uid(const char *s, apr_uint32_t *uid_r)
{
    apr_uint64_t v = 0;
    if (!*s || *s == '0') return 0;
    for (; *s; s++) {
        if (!apr_isdigit(*s)) return 0;
        v = v * 10 + (apr_uint64_t)(*s - '0');
        if (v > 0xffffffffu) return 0;
    }
    *uid_r = (apr_uint32_t)v;
    return 1;
}

static int cmd_mailbox_cat(cli_t *c)
{
    const char *err = NULL;
    store_stream_t *s;
    apr_file_t *out;
    apr_uint32_t uid;
    apr_status_t st;
    char buf[65536];

    if (!cli_parse_uid(c->args[1], &uid)) {
        fprintf(stderr, "postroom: invalid UID '%s' (a number from 1)\n", c->args[1]);
        return CLI_USAGE;
    }
    st = admin_message_open(c->admin, c->args[0], c->n > 2 ? c->args[2] : NULL, uid, &s, &err,
                            c->pool);
    if (st != APR_SUCCESS) return cli_result(st, err);
    if (apr_file_open_stdout(&out, c->pool) != APR_SUCCESS)
        return cli_fail("cannot write to standard output");
    for (;;) {
        apr_size_t len = sizeof(buf);
        st = store_stream_read(s, buf, &len);
        if (len > 0 && apr_file_write_full(out, buf, len, NULL) != APR_SUCCESS)
            return cli_fail("cannot write to standard output");
        if (st == APR_EOF) break;
        if (st != APR_SUCCESS) {
            char e[160];
            return cli_fail("reading the message failed: %s", pr_strerror(st, e, sizeof(e)));
        }
    }
    return apr_file_flush(out) == APR_SUCCESS ? CLI_OK
                                              : cli_fail("cannot write to standard output");
}

/* ---- the outbound queue */

/* A queue operation's failure; a malformed ID (the only PR_EINVAL these
 * give) is a command-line mistake, as a bad UID is for mailbox cat. */
static int cli_queue_result(apr_status_t st, const char *err)
{
    int rc = cli_result(st, err);
    return st == PR_EINVAL ? CLI_USAGE : rc;
}

/* "45s", "12m", "3h 5m", "2d 4h": a span as a person reads it. */
static const char *cli_span(apr_time_t t, apr_pool_t *pool)
{
    apr_int64_t s = t > 0 ? (apr_int64_t)apr_time_sec(t) : 0;
    if (s < 60) return apr_psprintf(pool, "%ds", (int)s);
    if (s < 3600) return apr_psprintf(pool, "%dm", (int)(s / 60));
    if (s < 86400) {
        int h = (int)(s / 3600), m = (int)(s % 3600 / 60);
        return m ? apr_psprintf(pool, "%dh %dm", h, m) : apr_psprintf(pool, "%dh", h);
    }
    int d = (int)(s / 86400), h = (int)(s % 86400 / 3600);
    return h ? apr_psprintf(pool, "%dd %dh", d, h) : apr_psprintf(pool, "%dd", d);
}

/* "523 B", "1.2 KiB" */
static const char *cli_size_short(apr_off_t size, apr_pool_t *pool)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    double v = (double)size;
    int u = -1;
    while (v >= 1024 && u < 3) {
        v /= 1024;
        u++;
    }
    if (u < 0) return apr_psprintf(pool, "%" APR_OFF_T_FMT " B", size);
    return apr_psprintf(pool, "%.1f %s", v, units[u]);
}

/* Text from a peer or a message, safe for a terminal: control characters
 * (line breaks, escapes) become one space or '?'. */
static void cli_put_safe(const char *s, apr_size_t len)
{
    for (apr_size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\r' || ch == '\n')
            ch = ' ';
        else if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            ch = '?';
        putchar(ch);
    }
}

static void cli_queue_block(const store_qmsg_t *m, apr_time_t now, apr_pool_t *pool)
{
    /* "42  5m  1.2 KiB  <alice@example.org>" */
    printf("%" APR_INT64_T_FMT "  %s  %s  <", m->id, cli_span(now - m->created, pool),
           cli_size_short(m->size, pool));
    cli_put_safe(m->sender, strlen(m->sender));
    printf(">%s\n", *m->sender ? "" : " (a bounce)");
    for (int i = 0; i < m->rcpts->nelts; i++) {
        const store_qrcpt_t *r = &APR_ARRAY_IDX(m->rcpts, i, store_qrcpt_t);
        const char *state, *next = "";
        switch (r->state) {
        case STORE_Q_DELIVERED:
            state = "delivered";
            break;
        case STORE_Q_FAILED:
            state = "failed";
            break;
        default:
            state = r->attempts ? "deferred" : "waiting";
            /* Rounded up past a minute: an hour's wait reads "1h", not "59m". */
            apr_time_t wait = r->next_attempt - now;
            if (wait >= apr_time_from_sec(60)) wait += apr_time_from_sec(59);
            next = r->next_attempt <= now
                       ? ", next try now"
                       : apr_pstrcat(pool, ", next try in ", cli_span(wait, pool), NULL);
        }
        /* "    bob@remote.org  deferred, 1 attempt, next try in 59m, last reply: 451 ..." */
        printf("    ");
        cli_put_safe(r->address, strlen(r->address));
        printf("  %s, %d attempt%s%s", state, r->attempts, r->attempts == 1 ? "" : "s", next);
        if (*r->last_reply) {
            printf(", last reply: ");
            cli_put_safe(r->last_reply, strlen(r->last_reply));
        }
        printf("\n");
    }
}

static int cmd_queue_list(cli_t *c)
{
    const char *err = NULL;
    apr_array_header_t *msgs;
    apr_status_t st = admin_queue_list(c->admin, &msgs, &err, c->pool);
    if (st != APR_SUCCESS) return cli_result(st, err);
    if (msgs->nelts == 0) {
        printf("queue is empty\n");
        return CLI_OK;
    }
    apr_time_t now = apr_time_now();
    int pending = 0;
    for (int i = 0; i < msgs->nelts; i++) {
        const store_qmsg_t *m = APR_ARRAY_IDX(msgs, i, const store_qmsg_t *);
        if (i) printf("\n");
        cli_queue_block(m, now, c->pool);
        for (int j = 0; j < m->rcpts->nelts; j++)
            pending += APR_ARRAY_IDX(m->rcpts, j, store_qrcpt_t).state == STORE_Q_PENDING;
    }
    printf("\n%d message%s in the queue, %d recipient%s still to deliver\n", msgs->nelts,
           msgs->nelts == 1 ? "" : "s", pending, pending == 1 ? "" : "s");
    return CLI_OK;
}

static int cmd_queue_show(cli_t *c)
{
    const char *err = NULL;
    admin_qmsg_t *q;
    apr_status_t st = admin_queue_show(c->admin, c->args[0], &q, &err, c->pool);
    if (st != APR_SUCCESS) return cli_queue_result(st, err);
    const store_qmsg_t *m = q->msg;
    apr_time_t now = apr_time_now();
    apr_time_exp_t tm;
    char when[64];
    apr_size_t n;

    cli_queue_block(m, now, c->pool);
    apr_time_exp_lt(&tm, m->created);
    if (apr_strftime(when, &n, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm) != APR_SUCCESS)
        when[0] = '\0';
    printf("queued at %s (%s ago), %s\n", when, cli_span(now - m->created, c->pool),
           cli_size(m->size, c->pool));
    if (*m->envid) {
        printf("envelope ID: ");
        cli_put_safe(m->envid, strlen(m->envid));
        printf("\n");
    }
    printf("\n");
    /* The header, a line at a time (folded lines keep their indent). */
    const char *h = q->headers, *end = q->headers + q->headers_len;
    while (h < end) {
        const char *nl = memchr(h, '\n', (apr_size_t)(end - h));
        const char *le = nl ? nl : end;
        if (le > h && le[-1] == '\r') le--;
        cli_put_safe(h, (apr_size_t)(le - h));
        printf("\n");
        h = nl ? nl + 1 : end;
    }
    if (q->headers_truncated)
        printf("(header longer than %d KiB: cut here)\n", ADMIN_QUEUE_HEADER_MAX / 1024);
    return CLI_OK;
}

static int cmd_queue_flush(cli_t *c)
{
    const char *err = NULL;
    apr_uint32_t pending = 0;
    apr_status_t st = admin_queue_flush(c->admin, &pending, &err, c->pool);
    if (st != APR_SUCCESS) return cli_result(st, err);
    if (pending == 0)
        printf("queue is empty: nothing to flush\n");
    else
        printf("%u recipient%s due now: postroomd tries %s within seconds\n", pending,
               pending == 1 ? "" : "s", pending == 1 ? "it" : "them");
    return CLI_OK;
}

static int cmd_queue_retry(cli_t *c)
{
    const char *err = NULL;
    apr_status_t st = admin_queue_retry(c->admin, c->args[0], &err, c->pool);
    if (st != APR_SUCCESS) return cli_queue_result(st, err);
    printf("message %s due now: postroomd tries it within seconds\n", c->args[0]);
    return CLI_OK;
}

static int cmd_queue_delete(cli_t *c)
{
    const char *err = NULL;
    apr_status_t st = admin_queue_delete(c->admin, c->args[0], &err, c->pool);
    if (st != APR_SUCCESS) return cli_queue_result(st, err);
    printf("message %s deleted from the queue (its sender was not told)\n", c->args[0]);
    return CLI_OK;
}

/* ---- dispatch */

typedef struct cli_cmd_t {
    const char *words[3]; /* the command's fixed words */
    int min, max;         /* arguments after them */
    int password_flag;    /* takes --password-stdin */
    int (*run)(cli_t *c);
} cli_cmd_t;

/* Longer commands first: "list member add" before "list ...". */
static const cli_cmd_t cli_cmds[] = {
    {{"list", "member", "add"}, 2, 2, 0, cmd_list_member_add},
    {{"list", "member", "del"}, 2, 2, 0, cmd_list_member_del},
    {{"list", "policy"}, 2, 2, 0, cmd_list_policy},
    {{"domain", "add"}, 1, 1, 0, cmd_domain_add},
    {{"domain", "del"}, 1, 1, 0, cmd_domain_del},
    {{"domain", "list"}, 0, 0, 0, cmd_domain_list},
    {{"user", "add"}, 1, 1, 1, cmd_user_add},
    {{"user", "passwd"}, 1, 1, 1, cmd_user_passwd},
    {{"user", "quota"}, 2, 2, 0, cmd_user_quota},
    {{"user", "del"}, 1, 1, 0, cmd_user_del},
    {{"user", "list"}, 0, 0, 0, cmd_user_list},
    {{"alias", "add"}, 2, 1000, 0, cmd_alias_add},
    {{"alias", "del"}, 1, 1, 0, cmd_alias_del},
    {{"alias", "list"}, 0, 0, 0, cmd_alias_list},
    {{"list", "add"}, 1, 1, 0, cmd_list_add},
    {{"list", "del"}, 1, 1, 0, cmd_list_del},
    {{"list", "show"}, 0, 1, 0, cmd_list_show},
    {{"mailbox", "show"}, 1, 1, 0, cmd_mailbox_show},
    {{"mailbox", "cat"}, 2, 3, 0, cmd_mailbox_cat},
    {{"queue", "list"}, 0, 0, 0, cmd_queue_list},
    {{"queue", "show"}, 1, 1, 0, cmd_queue_show},
    {{"queue", "flush"}, 0, 0, 0, cmd_queue_flush},
    {{"queue", "retry"}, 1, 1, 0, cmd_queue_retry},
    {{"queue", "delete"}, 1, 1, 0, cmd_queue_delete},
};

static int cli_usage_error(const char *fmt, const char *arg)
{
    fputs("postroom: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\n(see postroom --help)\n", stderr);
    return CLI_USAGE;
}

static const cli_cmd_t *cli_find(int argc, const char *const *argv, int *nwords_r)
{
    for (apr_size_t i = 0; i < sizeof(cli_cmds) / sizeof(cli_cmds[0]); i++) {
        const cli_cmd_t *cmd = &cli_cmds[i];
        int w = 0;
        while (w < 3 && cmd->words[w] && w < argc && strcmp(cmd->words[w], argv[w]) == 0)
            w++;
        if (w == 3 || (w < 3 && !cmd->words[w])) {
            *nwords_r = w;
            return cmd;
        }
    }
    return NULL;
}

static int cli_run(int argc, const char *const *argv, apr_pool_t *pool)
{
    const char *config = CLI_DEFAULT_CONFIG;
    const char **args;
    const cli_cmd_t *cmd;
    cli_t c = {0};
    int i = 1, nwords, rc;

    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(cli_usage_text, stdout);
            return CLI_OK;
        } else if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            if (++i >= argc) return cli_usage_error("%s needs a file name", argv[i - 1]);
            config = argv[i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config = argv[i] + 9;
        } else if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else {
            return cli_usage_error("unknown option '%s'", argv[i]);
        }
    }
    if (i >= argc) {
        fputs(cli_usage_text, stderr);
        return CLI_USAGE;
    }
    if (!(cmd = cli_find(argc - i, argv + i, &nwords))) {
        /* Name what was typed: up to the three words a command may have. */
        const char *typed = argv[i];
        for (int j = i + 1; j < argc && j < i + 3 && argv[j][0] != '-'; j++)
            typed = apr_pstrcat(pool, typed, " ", argv[j], NULL);
        return cli_usage_error("unknown command '%s'", typed);
    }

    /* The arguments, with the options this command takes taken out. */
    args = apr_pcalloc(pool, sizeof(*args) * (apr_size_t)(argc + 1));
    for (int j = i + nwords; j < argc; j++) {
        if (cmd->password_flag && strcmp(argv[j], "--password-stdin") == 0) {
            c.password_stdin = 1;
        } else if (argv[j][0] == '-' && argv[j][1] != '\0') {
            return cli_usage_error("unknown option '%s'", argv[j]);
        } else {
            args[c.n++] = argv[j];
        }
    }
    if (c.n < cmd->min || c.n > cmd->max) {
        const char *words =
            apr_pstrcat(pool, cmd->words[0], " ", cmd->words[1], cmd->words[2] ? " " : "",
                        cmd->words[2] ? cmd->words[2] : "", NULL);
        return cli_usage_error(
            c.n < cmd->min ? "'%s': missing argument" : "'%s': too many arguments", words);
    }
    c.args = args;
    c.pool = pool;

    pr_config_t *cfg;
    const char *err = NULL;
    apr_status_t st = pr_config_load(&cfg, config, &err, pool);
    if (st != APR_SUCCESS) return cli_fail("%s", err ? err : config);
    /* Warnings (a dangling alias target, a busy database) go to stderr. */
    pr_log_open("stderr", PR_LOG_WARN, pool);
    if ((st = admin_open(&c.admin, cfg, NULL, NULL, pool)) != APR_SUCCESS) {
        char buf[160];
        return cli_fail("cannot open the directory in %s: %s", cfg->server.data_dir,
                        pr_strerror(st, buf, sizeof(buf)));
    }
    rc = cmd->run(&c);
    admin_close(c.admin);
    return rc;
}

int main(int argc, const char *const *argv)
{
    apr_pool_t *pool;
    int rc;

    if (apr_app_initialize(&argc, &argv, NULL) != APR_SUCCESS) {
        fputs("postroom: cannot initialise APR\n", stderr);
        return CLI_FAILED;
    }
    apr_pool_create(&pool, NULL);
    rc = cli_run(argc, argv, pool);
    fflush(stdout);
    apr_pool_destroy(pool);
    apr_terminate();
    return rc;
}
