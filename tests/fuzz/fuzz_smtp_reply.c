/* libFuzzer harness for the SMTP client's reply parser (RFC 5321 4.2) and
 * the client dialogue: any bytes from a peer must give replies with a code
 * of 200..599, printable one-line text and a well-formed enhanced code, the
 * same however the bytes are chunked; and a whole session (open, one
 * message, QUIT) over a memory connection holding those bytes must end
 * with one result per recipient, never a crash, leak or overflow. */
#include <apr_general.h>
#include <apr_pools.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "service/core/conn.h"
#include "service/core/status.h"
#include "service/smtp/smtp_client.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    apr_initialize();
    return 0;
}

static void fz_check_text(const char *t)
{
    for (; *t; t++)
        if ((unsigned char)*t < 0x20 || (unsigned char)*t > 0x7e) abort();
}

static void fz_check_reply(const smtp_reply_t *r)
{
    if (r->code < 200 || r->code > 599 || r->nlines < 1 || r->nlines > SMTP_REPLY_MAX_LINES)
        abort();
    if (strlen(r->text) > SMTP_RESULT_TEXT_MAX) abort();
    fz_check_text(r->text);
    for (int i = 0; i < r->nlines; i++) {
        if (strlen(r->lines[i]) >= SMTP_REPLY_LINE_MAX) abort();
        fz_check_text(r->lines[i]);
    }
    const char *e = r->enhanced;
    if (*e) {
        if (e[0] != '0' + r->code / 100 || e[1] != '.' || strlen(e) > 9) abort();
    }
}

typedef struct fz_out_t {
    int status[64];
    int code[64];
    apr_size_t used[64];
    int n;
} fz_out_t;

/* Parse all replies in data, step octets at a time (0: all). */
static void fz_parse(const char *data, size_t size, size_t step, fz_out_t *o, apr_pool_t *pool)
{
    smtp_reply_parser_t p;
    smtp_reply_parser_init(&p, 0, pool);
    size_t pos = 0, start = 0;
    o->n = 0;
    while (pos < size && o->n < 64) {
        size_t n = step && step < size - pos ? step : size - pos, used = 0;
        smtp_reply_t *r = NULL;
        apr_status_t st = smtp_reply_parser_feed(&p, data + pos, n, &used, &r);
        if (used > n) abort();
        pos += used;
        if (st == APR_INCOMPLETE) {
            if (used != n || r) abort();
            continue;
        }
        o->status[o->n] = st;
        o->used[o->n] = pos - start;
        start = pos;
        if (st == APR_SUCCESS) {
            if (!r) abort();
            fz_check_reply(r);
            o->code[o->n++] = r->code;
        } else {
            if (st != PR_EINVAL || r) abort();
            o->code[o->n++] = 0;
            smtp_reply_parser_init(&p, 0, pool);
        }
    }
}

static apr_status_t fz_body(void *ctx, const char **d, apr_size_t *len)
{
    int *done = ctx;
    if (*done) return APR_EOF;
    *done = 1;
    *d = ".x\r\nbody\r\n";
    *len = 10;
    return APR_SUCCESS;
}

static void fz_session(const char *data, size_t size, apr_pool_t *pool)
{
    pr_conn_t *c;
    smtp_client_t *cl;
    smtp_result_t err;
    smtp_client_opts_t o = {0};
    o.helo = "fuzz.example.org";
    o.tls = SMTP_TLS_NONE;
    o.auth_user = size % 2 ? "u" : NULL;
    o.auth_password = "p";
    if (pr_conn_create_memory(&c, data, size, pool) != APR_SUCCESS) abort();
    if (smtp_client_open(&cl, c, "mx", &o, &err, pool) != APR_SUCCESS) {
        if (cl || err.code < 200 || err.code > 599 || !err.text) abort();
        fz_check_text(err.text);
        return;
    }
    smtp_rcpt_t r[3] = {{"a@example.test", SMTP_NOTIFY_SUCCESS, "rfc822;a@example.test"},
                        {"b@example.test", 0, NULL},
                        {"c@example.test", SMTP_NOTIFY_NEVER, NULL}};
    smtp_envelope_t env = {"s@example.org", r, 3, SMTP_RET_HDRS, "id", 12, (int)(size % 3 == 0), 0};
    for (int round = 0; round < 2 && smtp_client_usable(cl); round++) {
        smtp_send_result_t res;
        int done = 0;
        if (smtp_client_send(cl, &env, fz_body, &done, &res, pool) != APR_SUCCESS) abort();
        if (res.nrcpts != 3) abort();
        for (int i = 0; i < 3; i++) {
            if (res.rcpts[i].code < 200 || res.rcpts[i].code > 599) abort();
            fz_check_text(res.rcpts[i].text);
        }
        if (res.usable != smtp_client_usable(cl)) abort();
        if (res.usable && smtp_client_reset(cl) != APR_SUCCESS) break;
    }
    smtp_client_quit(cl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *pool;
    char *s = malloc(size ? size : 1);
    if (!s) return 0;
    memcpy(s, data, size);
    if (apr_pool_create(&pool, NULL) != APR_SUCCESS) abort();

    fz_out_t a, b;
    fz_parse(s, size, 0, &a, pool);
    size_t steps[] = {1, 2, 7};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        fz_parse(s, size, steps[i], &b, pool);
        if (a.n != b.n) abort();
        for (int k = 0; k < a.n; k++)
            if (a.status[k] != b.status[k] || a.code[k] != b.code[k] || a.used[k] != b.used[k])
                abort();
    }
    fz_session(s, size, pool);

    apr_pool_destroy(pool);
    free(s);
    return 0;
}
