/* libFuzzer harness for the SMTP command parser and the mail address and
 * header parsers it relies on: any bytes must give a command or a reply
 * with an RFC 3463 code, never a crash, leak or overflow; the RFC 3461
 * DSN parameters come out valid (NOTIFY=NEVER alone, ORCPT "type;addr",
 * printable, within the limits) and only when DSN was advertised; the
 * header scanner must give the same result however its input is chunked. */
#include <apr_general.h>
#include <apr_pools.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "service/core/status.h"
#include "service/mime/address.h"
#include "service/mime/header.h"
#include "service/smtp/smtp_parse.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    apr_initialize();
    return 0;
}

static int fz_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* "NNN N.N.N text": the shape every refusal must have. */
static void fz_check_reply(const char *r)
{
    if (!r || strlen(r) < 11) abort();
    if (!(r[0] == '4' || r[0] == '5') || !fz_digit(r[1]) || !fz_digit(r[2]) || r[3] != ' ') abort();
    if (r[4] != r[0] || r[5] != '.' || !fz_digit(r[6]) || r[7] != '.' || !fz_digit(r[8])) abort();
    if (strchr(r, '\r') || strchr(r, '\n')) abort();
}

static void fz_check_path(const pr_path_t *p)
{
    if (!p->local || !p->address) abort();
    if (p->null) {
        if (*p->address) abort();
        return;
    }
    if (!p->domain) {
        if (strcmp(p->local, "postmaster") != 0) abort();
        return;
    }
    if (strlen(p->local) > PR_ADDR_MAX_LOCAL || strlen(p->domain) > PR_ADDR_MAX_DOMAIN) abort();
    if (strlen(p->address) != strlen(p->local) + 1 + strlen(p->domain)) abort();
    if (!pr_utf8_valid(p->address, strlen(p->address))) abort();
    int high = 0;
    for (const char *s = p->address; *s; s++)
        high |= (unsigned char)*s >= 0x80;
    /* utf8 also counts a source route, which address does not show */
    if (high && !p->utf8) abort();
    if (p->literal && p->domain[0] != '[') abort();
}

static void fz_printable(const char *s)
{
    if (!s || !*s) abort();
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) abort();
}

static void fz_dsn(const smtp_cmd_t *cmd, const smtp_parse_opts_t *opts)
{
    int mail = cmd->verb == SMTP_CMD_MAIL;
    if (cmd->notify || cmd->orcpt || cmd->ret || cmd->envid) {
        if (!opts->dsn) abort();
        if (mail ? (cmd->notify || cmd->orcpt) : (cmd->ret || cmd->envid)) abort();
    }
    if (cmd->notify &
        ~(unsigned)(SMTP_DSN_NEVER | SMTP_DSN_SUCCESS | SMTP_DSN_FAILURE | SMTP_DSN_DELAY))
        abort();
    if ((cmd->notify & SMTP_DSN_NEVER) && cmd->notify != SMTP_DSN_NEVER) abort();
    if (cmd->ret != SMTP_DSN_RET_NONE && cmd->ret != SMTP_DSN_RET_FULL &&
        cmd->ret != SMTP_DSN_RET_HDRS)
        abort();
    if (cmd->envid) {
        fz_printable(cmd->envid);
        if (strlen(cmd->envid) > SMTP_ENVID_MAX) abort();
    }
    if (cmd->orcpt) {
        fz_printable(cmd->orcpt);
        const char *semi = strchr(cmd->orcpt, ';');
        if (!semi || semi == cmd->orcpt || !semi[1] || strlen(cmd->orcpt) > SMTP_ORCPT_MAX) abort();
    }
}

static void fz_smtp(const char *line, size_t size, apr_pool_t *pool)
{
    for (int o = 0; o < 16; o++) {
        smtp_parse_opts_t opts = {o & 1, (o >> 1) & 1, (o >> 2) & 1, (o >> 3) & 1};
        smtp_cmd_t cmd;
        const char *reply = NULL;
        apr_status_t st = smtp_parse(&cmd, line, size, &opts, &reply, pool);
        if (st == APR_SUCCESS) {
            if (reply || !cmd.arg) abort();
            if (cmd.verb != smtp_parse_verb(line, size) || cmd.verb == SMTP_CMD_UNKNOWN) abort();
            if (cmd.verb == SMTP_CMD_MAIL || cmd.verb == SMTP_CMD_RCPT) {
                fz_check_path(&cmd.path);
                if (cmd.path.null && cmd.verb == SMTP_CMD_RCPT) abort();
                if (!cmd.path.domain && !cmd.path.null && cmd.verb == SMTP_CMD_MAIL) abort();
                if (cmd.path.utf8 &&
                    !(opts.smtputf8 &&
                      (cmd.verb == SMTP_CMD_MAIL ? cmd.smtputf8 : opts.mail_smtputf8)))
                    abort();
                if (cmd.smtputf8 && !opts.smtputf8) abort();
                if (cmd.auth && !opts.auth) abort();
                if (cmd.size < -1) abort();
                fz_dsn(&cmd, &opts);
            } else if (cmd.notify || cmd.orcpt || cmd.ret || cmd.envid) {
                abort();
            }
            if (cmd.verb == SMTP_CMD_ETRN && (!*cmd.arg || strchr(cmd.arg, ' '))) abort();
            if (cmd.verb == SMTP_CMD_BDAT && cmd.chunk_size < 0) abort();
            if (cmd.verb == SMTP_CMD_AUTH && (!cmd.mechanism || !*cmd.mechanism)) abort();
            /* Only paths may carry 8-bit octets past the parser. */
            if (cmd.verb != SMTP_CMD_MAIL && cmd.verb != SMTP_CMD_RCPT)
                for (size_t i = 0; i < size; i++)
                    if ((unsigned char)line[i] >= 0x80 || line[i] == '\0') abort();
        } else {
            if (st != PR_EINVAL) abort();
            fz_check_reply(reply);
        }
    }
}

static void fz_addresses(const char *s, size_t size, apr_pool_t *pool)
{
    apr_array_header_t *a = NULL;
    apr_status_t st = pr_header_addresses(s, size, &a, pool);
    if (st == APR_SUCCESS) {
        if (!a || a->nelts < 1 || a->nelts > 100) abort();
        for (int i = 0; i < a->nelts; i++) {
            const char *x = APR_ARRAY_IDX(a, i, const char *);
            if (!strchr(x, '@') || !pr_utf8_valid(x, strlen(x))) abort();
        }
    } else if (st != PR_EINVAL && st != PR_ETOOMANY) {
        abort();
    }
    for (int n = 0; n < 2; n++) {
        pr_path_t p;
        const char *end = NULL;
        if (pr_path_parse(&p, s, size, n, !n, &end, pool) == APR_SUCCESS) {
            fz_check_path(&p);
            if (end <= s || end > s + size || end[-1] != '>') abort();
        }
    }
}

static void fz_scan(pr_hdrscan_t *h, const char *s, size_t size, size_t step, apr_pool_t *pool)
{
    pr_hdrscan_init(h, pool);
    for (size_t pos = 0; pos < size;) {
        size_t n = step && step < size - pos ? step : size - pos;
        pr_hdrscan_feed(h, s + pos, n);
        pos += n;
    }
    pr_hdrscan_finish(h);
}

static void fz_header(const char *s, size_t size, apr_pool_t *pool)
{
    pr_hdrscan_t a, b;
    fz_scan(&a, s, size, 0, pool);
    size_t steps[] = {1, 3, 17};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        fz_scan(&b, s, size, steps[i], pool);
        if (a.in_body != b.in_body || a.has_date != b.has_date ||
            a.has_message_id != b.has_message_id || a.from_count != b.from_count ||
            a.received_count != b.received_count || a.from_truncated != b.from_truncated ||
            !a.from != !b.from)
            abort();
        if (a.from && (a.from_len != b.from_len || memcmp(a.from, b.from, a.from_len) != 0))
            abort();
    }
    if (a.from) {
        if (a.from_len > PR_HDR_MAX_KEPT || a.from[a.from_len] != '\0' || a.from_truncated) abort();
        fz_addresses(a.from, a.from_len, pool);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *pool;
    /* A private copy of exactly size bytes: ASan sees any read past it. */
    char *s = malloc(size ? size : 1);
    if (!s) return 0;
    memcpy(s, data, size);
    if (apr_pool_create(&pool, NULL) != APR_SUCCESS) abort();

    fz_smtp(s, size, pool);
    fz_addresses(s, size, pool);
    fz_header(s, size, pool);

    apr_pool_destroy(pool);
    free(s);
    return 0;
}
