/* The SMTP client without a socket: the reply parser fed whole and one
 * octet at a time, EHLO capabilities, xtext, and whole dialogues over a
 * scripted connection that records each write, so a test sees what went
 * out together (PIPELINING) and what the client made of each reply. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "service/core/conn.h"
#include "service/core/sasl.h"
#include "service/core/status.h"
#include "service/core/tls.h"
#include "service/smtp/smtp_client.h"

static apr_pool_t *pool;

static int setup(void **state)
{
    (void)state;
    apr_initialize();
    return apr_pool_create(&pool, NULL) == APR_SUCCESS ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    apr_pool_destroy(pool);
    apr_terminate();
    return 0;
}

/* ---- reply parser */

/* Feed s in steps of `step` octets (0: all at once) from a heap copy. */
static apr_status_t parse_step(const char *s, apr_size_t len, apr_size_t step, apr_size_t line_max,
                               smtp_reply_t **r, apr_size_t *used_total)
{
    smtp_reply_parser_t p;
    char *copy = malloc(len ? len : 1);
    memcpy(copy, s, len);
    smtp_reply_parser_init(&p, line_max, pool);
    apr_size_t pos = 0;
    apr_status_t st = APR_INCOMPLETE;
    *r = NULL;
    while (pos < len) {
        apr_size_t n = step && step < len - pos ? step : len - pos, used = 0;
        st = smtp_reply_parser_feed(&p, copy + pos, n, &used, r);
        assert_true(used <= n);
        pos += used;
        if (st != APR_INCOMPLETE) break;
        assert_int_equal(used, n);
    }
    free(copy);
    *used_total = pos;
    return st;
}

/* Parse in every chunking; all must agree. Returns the whole-feed reply. */
static smtp_reply_t *parse_all(const char *s, apr_status_t want, apr_size_t want_used)
{
    smtp_reply_t *first = NULL;
    apr_size_t steps[] = {0, 1, 2, 3, 7, 64};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        smtp_reply_t *r;
        apr_size_t used;
        apr_status_t st = parse_step(s, strlen(s), steps[i], 0, &r, &used);
        assert_int_equal(st, want);
        if (want != APR_SUCCESS) continue;
        assert_int_equal(used, want_used);
        assert_non_null(r);
        if (!first) {
            first = r;
            continue;
        }
        assert_int_equal(r->code, first->code);
        assert_string_equal(r->enhanced, first->enhanced);
        assert_string_equal(r->text, first->text);
        assert_int_equal(r->nlines, first->nlines);
        for (int l = 0; l < r->nlines; l++)
            assert_string_equal(r->lines[l], first->lines[l]);
    }
    return first;
}

static void test_reply_single(void **state)
{
    (void)state;
    smtp_reply_t *r = parse_all("250 2.1.5 Ok\r\n", APR_SUCCESS, 14);
    assert_int_equal(r->code, 250);
    assert_string_equal(r->enhanced, "2.1.5");
    assert_string_equal(r->text, "Ok");
    assert_int_equal(r->nlines, 1);
    assert_string_equal(r->lines[0], "2.1.5 Ok");

    r = parse_all("220 mx.example.test ESMTP ready\r\n", APR_SUCCESS, 33);
    assert_string_equal(r->enhanced, "");
    assert_string_equal(r->text, "mx.example.test ESMTP ready");

    /* a bare code is a complete reply (RFC 5321 4.2: the text is optional) */
    r = parse_all("354\r\n", APR_SUCCESS, 5);
    assert_int_equal(r->code, 354);
    assert_string_equal(r->text, "");
    /* a bare LF ends a line too; the enhanced code's class must match */
    r = parse_all("550 4.1.1 no\n", APR_SUCCESS, 13);
    assert_string_equal(r->enhanced, "");
    assert_string_equal(r->text, "4.1.1 no");
    r = parse_all("451 4.3.0\r\n", APR_SUCCESS, 11);
    assert_string_equal(r->enhanced, "4.3.0");
    assert_string_equal(r->text, "");
    /* not an enhanced code: four digits, or no space after it */
    r = parse_all("550 5.1.1234 x\r\n", APR_SUCCESS, 16);
    assert_string_equal(r->enhanced, "");
    r = parse_all("550 5.1.1: x\r\n", APR_SUCCESS, 14);
    assert_string_equal(r->enhanced, "");
    r = parse_all("550 5.123.456 x\r\n", APR_SUCCESS, 17);
    assert_string_equal(r->enhanced, "5.123.456");
}

static void test_reply_multiline(void **state)
{
    (void)state;
    const char *gmail = "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
                        "550-5.1.1 Please try double-checking\r\n"
                        "550 5.1.1  the address.   \r\n";
    smtp_reply_t *r = parse_all(gmail, APR_SUCCESS, strlen(gmail));
    assert_int_equal(r->code, 550);
    assert_string_equal(r->enhanced, "5.1.1");
    assert_string_equal(r->text, "The email account that you tried to reach does not exist. "
                                 "Please try double-checking the address.");
    assert_int_equal(r->nlines, 3);

    /* the parser stops at the end of the first reply: the rest is the next */
    const char *two = "250-mx\r\n250 PIPELINING\r\n250 2.1.0 Ok\r\n";
    r = parse_all(two, APR_SUCCESS, 24);
    assert_int_equal(r->nlines, 2);
    assert_string_equal(r->lines[1], "PIPELINING");

    /* "250-" with nothing after it is a line with empty text */
    r = parse_all("250-\r\n250 x\r\n", APR_SUCCESS, 13);
    assert_int_equal(r->nlines, 2);
    assert_string_equal(r->lines[0], "");
    assert_string_equal(r->text, "x");

    /* control characters and 8-bit octets do not reach logs and DSNs */
    r = parse_all("550 5.7.1 bad\x01\x7f\xc3\xa9\ttab\r\n", APR_SUCCESS, 23);
    assert_string_equal(r->text, "bad???? tab");
}

static void test_reply_malformed(void **state)
{
    (void)state;
    smtp_reply_t *r;
    apr_size_t used;
    const char *bad[] = {
        "25\r\n",                      /* too short */
        "abc hello\r\n",               /* not digits */
        "150 hello\r\n",               /* 1yz is not an SMTP reply */
        "650 hello\r\n",               /* nor 6yz */
        "250x hello\r\n",              /* no separator */
        "250-first\r\n251 second\r\n", /* RFC 5321 4.2.1: one code */
        "250-first\r\n\r\n",           /* an empty line */
        "\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        parse_all(bad[i], PR_EINVAL, 0);
        assert_int_equal(parse_step(bad[i], strlen(bad[i]), 1, 0, &r, &used), PR_EINVAL);
        assert_null(r);
    }
    /* incomplete: no line end yet, or a continuation line only */
    assert_int_equal(parse_step("250 ok", 6, 0, 0, &r, &used), APR_INCOMPLETE);
    assert_int_equal(parse_step("250-ok\r\n", 8, 0, 0, &r, &used), APR_INCOMPLETE);

    /* too many lines */
    char *many = "";
    for (int i = 0; i < SMTP_REPLY_MAX_LINES; i++)
        many = apr_pstrcat(pool, many, "250-x\r\n", NULL);
    char *ok = apr_pstrcat(pool, many, "250 x\r\n", NULL);
    parse_all(ok, PR_EINVAL, 0);
    /* one fewer is fine */
    ok = apr_pstrcat(pool, many + 7, "250 x\r\n", NULL);
    r = parse_all(ok, APR_SUCCESS, strlen(ok));
    assert_int_equal(r->nlines, SMTP_REPLY_MAX_LINES);
}

static void test_reply_limits(void **state)
{
    (void)state;
    smtp_reply_t *r;
    apr_size_t used;
    /* 512 octets with CRLF is whole; 513 is cut, and the rest skipped */
    char line[600];
    memset(line, 'a', sizeof(line));
    memcpy(line, "250 ", 4);
    memcpy(line + 510, "\r\n", 2);
    line[512] = '\0';
    r = parse_all(line, APR_SUCCESS, 512);
    assert_int_equal(r->truncated, 0);
    assert_int_equal(strlen(r->text), 506);

    memset(line, 'a', sizeof(line));
    memcpy(line, "250-", 4);
    memcpy(line + 590, "\r\n", 2);
    strcpy(line + 592, "250 b\r\n");
    r = parse_all(line, APR_SUCCESS, 599);
    assert_int_equal(r->truncated, 1);
    assert_int_equal(r->nlines, 2);
    assert_int_equal(strlen(r->lines[0]), SMTP_REPLY_LINE_MAX - 1 - 4);
    assert_string_equal(r->lines[1], "b");

    /* a smaller configured limit */
    assert_int_equal(parse_step("250 abcdefghij\r\n", 16, 1, 10, &r, &used), APR_SUCCESS);
    assert_string_equal(r->text, "abcde");
    assert_int_equal(r->truncated, 1);

    /* an endless line is a protocol error once the reply is over its octets */
    apr_size_t big = SMTP_REPLY_MAX_BYTES + 100;
    char *endless = apr_palloc(pool, big + 1);
    memset(endless, 'x', big);
    memcpy(endless, "250 ", 4);
    endless[big] = '\0';
    assert_int_equal(parse_step(endless, big, 0, 0, &r, &used), PR_EINVAL);
    assert_int_equal(used, SMTP_REPLY_MAX_BYTES + 1);
    assert_int_equal(parse_step(endless, big, 4096, 0, &r, &used), PR_EINVAL);

    /* the text joined from many lines is cut at SMTP_RESULT_TEXT_MAX */
    char *lines = "";
    for (int i = 0; i < 40; i++)
        lines = apr_pstrcat(pool, lines, "550-5.7.1 0123456789012345678901234567890123456789\r\n",
                            NULL);
    lines = apr_pstrcat(pool, lines, "550 5.7.1 end\r\n", NULL);
    r = parse_all(lines, APR_SUCCESS, strlen(lines));
    assert_int_equal(strlen(r->text), SMTP_RESULT_TEXT_MAX);
}

static void test_xtext(void **state)
{
    (void)state;
    assert_string_equal(smtp_xtext_encode("user@example.org", pool), "user@example.org");
    assert_string_equal(smtp_xtext_encode("a+b=c d", pool), "a+2Bb+3Dc+20d");
    assert_string_equal(smtp_xtext_encode("\xc3\xa9\x01~!", pool), "+C3+A9+01~!");
    assert_string_equal(smtp_xtext_encode("", pool), "");
}

static void test_caps(void **state)
{
    (void)state;
    const char *ehlo = "250-mx.example.test Hello\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n"
                       "250-8bitmime\r\n250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n"
                       "250-AUTH=LOGIN\r\n250-AUTH CRAM-MD5 PLAIN\r\n250-DSN\r\n"
                       "250-X-FOO bar\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n";
    smtp_reply_t *r = parse_all(ehlo, APR_SUCCESS, strlen(ehlo));
    smtp_caps_t caps;
    smtp_caps_parse(&caps, r);
    assert_int_equal(caps.esmtp, 1);
    assert_int_equal(caps.ext, SMTP_EXT_PIPELINING | SMTP_EXT_SIZE | SMTP_EXT_8BITMIME |
                                   SMTP_EXT_ENHANCEDSTATUSCODES | SMTP_EXT_STARTTLS |
                                   SMTP_EXT_AUTH | SMTP_EXT_DSN | SMTP_EXT_CHUNKING |
                                   SMTP_EXT_SMTPUTF8);
    assert_int_equal(caps.size_max, 26214400);
    assert_int_equal(caps.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);

    /* the greeting line is not a keyword; SIZE without a number: no limit */
    r = parse_all("250-PIPELINING\r\n250 SIZE\r\n", APR_SUCCESS, 26);
    smtp_caps_parse(&caps, r);
    assert_int_equal(caps.ext, SMTP_EXT_SIZE);
    assert_int_equal(caps.size_max, 0);
    r = parse_all("250 SIZE 99999999999999999999999\r\n", APR_SUCCESS, 34);
    smtp_caps_parse(&caps, r);
    r = parse_all("250-x\r\n250 SIZE 99999999999999999999999\r\n", APR_SUCCESS, 41);
    smtp_caps_parse(&caps, r);
    assert_true(caps.size_max > 0);
}

/* ---- dialogues over a scripted connection */

typedef struct script_t {
    const char *in; /* everything the server says */
    apr_size_t len, pos, step;
    char *out; /* what the client wrote, writes separated by '|' */
    apr_size_t out_len;
} script_t;

static apr_status_t sc_recv(void *ctx, char *buf, apr_size_t *len)
{
    script_t *s = ctx;
    apr_size_t n = s->len - s->pos;
    if (n == 0) return APR_EOF;
    if (s->step && n > s->step) n = s->step;
    if (n > *len) n = *len;
    memcpy(buf, s->in + s->pos, n);
    s->pos += n;
    *len = n;
    return APR_SUCCESS;
}

static apr_status_t sc_send(void *ctx, const char *buf, apr_size_t len)
{
    script_t *s = ctx;
    s->out = realloc(s->out, s->out_len + len + 2);
    if (s->out_len) s->out[s->out_len++] = '|';
    memcpy(s->out + s->out_len, buf, len);
    s->out_len += len;
    s->out[s->out_len] = '\0';
    return APR_SUCCESS;
}

static void sc_timeout(void *ctx, apr_interval_time_t t)
{
    (void)ctx;
    (void)t;
}

static const pr_transport_t script_tp = {sc_recv, sc_send, sc_timeout, NULL, NULL};

static apr_status_t sc_cleanup(void *data)
{
    free(((script_t *)data)->out);
    return APR_SUCCESS;
}

static script_t *script_new(const char *in, apr_size_t step)
{
    script_t *s = apr_pcalloc(pool, sizeof(*s));
    s->in = in;
    s->len = strlen(in);
    s->step = step;
    apr_pool_cleanup_register(pool, s, sc_cleanup, apr_pool_cleanup_null);
    return s;
}

static const char *out(script_t *s)
{
    return s->out ? s->out : "";
}

static void ends_with(script_t *s, const char *tail)
{
    const char *o = out(s);
    size_t n = strlen(o), t = strlen(tail);
    if (n < t || strcmp(o + n - t, tail) != 0)
        fail_msg("output '%s' does not end in '%s'", o, tail);
}

#define GREET "220 mx.example.test ESMTP\r\n"
#define EHLO_FULL                                                                                  \
    "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"                   \
    "250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 SMTPUTF8\r\n"
#define EHLO_PLAIN "250-mx.example.test\r\n250 ENHANCEDSTATUSCODES\r\n"

static smtp_client_opts_t opts_none(void)
{
    smtp_client_opts_t o = {0};
    o.helo = "out.example.org";
    o.tls = SMTP_TLS_NONE;
    return o;
}

static smtp_client_t *open_ok(script_t *s, const smtp_client_opts_t *o)
{
    pr_conn_t *c;
    smtp_client_t *cl = NULL;
    smtp_result_t err = {0};
    assert_int_equal(pr_conn_create(&c, &script_tp, s, pool), APR_SUCCESS);
    apr_status_t st = smtp_client_open(&cl, c, "mx.example.test", o, &err, pool);
    if (st != APR_SUCCESS) fail_msg("open: %d %s %s", err.code, err.enhanced, err.text);
    assert_non_null(cl);
    return cl;
}

static apr_status_t open_fail(script_t *s, const smtp_client_opts_t *o, smtp_result_t *err)
{
    pr_conn_t *c;
    smtp_client_t *cl = (smtp_client_t *)1;
    assert_int_equal(pr_conn_create(&c, &script_tp, s, pool), APR_SUCCESS);
    apr_status_t st = smtp_client_open(&cl, c, "mx.example.test", o, err, pool);
    assert_int_not_equal(st, APR_SUCCESS);
    assert_null(cl);
    return st;
}

typedef struct body_t {
    const char *s;
    apr_size_t len, pos, step;
    apr_status_t fail_at_end; /* returned instead of APR_EOF when set */
} body_t;

static apr_status_t body_read(void *ctx, const char **data, apr_size_t *len)
{
    body_t *b = ctx;
    if (b->pos == b->len) return b->fail_at_end ? b->fail_at_end : APR_EOF;
    apr_size_t n = b->len - b->pos;
    if (b->step && n > b->step) n = b->step;
    *data = b->s + b->pos;
    *len = n;
    b->pos += n;
    return APR_SUCCESS;
}

static body_t body(const char *s, apr_size_t step)
{
    body_t b = {s, strlen(s), 0, step, APR_SUCCESS};
    return b;
}

static smtp_envelope_t env2(const smtp_rcpt_t *r, int n)
{
    smtp_envelope_t e = {0};
    e.sender = "alice@example.org";
    e.rcpts = r;
    e.nrcpts = n;
    e.size = 100;
    return e;
}

static void check(const smtp_result_t *r, int code, const char *enh, const char *text, int remote)
{
    if (r->code != code || strcmp(r->enhanced, enh) != 0 || (text && strcmp(r->text, text) != 0) ||
        r->remote != remote)
        fail_msg("got %d %s '%s' remote=%d, want %d %s '%s' remote=%d", r->code, r->enhanced,
                 r->text, r->remote, code, enh, text ? text : "*", remote);
}

static void test_pipelined_delivery(void **state)
{
    (void)state;
    script_t *s = script_new(GREET EHLO_FULL "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
                                             "354 go\r\n250 2.0.0 Ok: queued as ABC\r\n"
                                             "221 2.0.0 Bye\r\n",
                             0);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    assert_int_equal(smtp_client_caps(cl)->size_max, 1000);
    assert_null(smtp_client_tls(cl));
    smtp_rcpt_t r[] = {{"bob@example.test", 0, NULL}, {"carol@example.test", 0, NULL}};
    smtp_envelope_t e = env2(r, 2);
    body_t b = body("Subject: hi\r\n\r\nhello\r\n", 0);
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.message, 250, "2.0.0", "Ok: queued as ABC", 1);
    check(&res.rcpts[0], 250, "2.0.0", "Ok: queued as ABC", 1);
    check(&res.rcpts[1], 250, "2.0.0", "Ok: queued as ABC", 1);
    assert_int_equal(res.usable, 1);
    assert_int_equal(res.data_sent, 1);
    smtp_client_quit(cl);
    /* MAIL, both RCPTs and DATA in one write (RFC 2920) */
    assert_string_equal(out(s), "EHLO out.example.org\r\n"
                                "|MAIL FROM:<alice@example.org> SIZE=100\r\n"
                                "RCPT TO:<bob@example.test>\r\n"
                                "RCPT TO:<carol@example.test>\r\n"
                                "DATA\r\n"
                                "|Subject: hi\r\n\r\nhello\r\n.\r\n"
                                "|QUIT\r\n");
}

static void test_helo_fallback(void **state)
{
    (void)state;
    /* replies one octet at a time */
    script_t *s = script_new(GREET "502 5.5.1 What?\r\n250 mx.example.test\r\n"
                                   "250 Ok\r\n250 Ok\r\n550 5.1.1 No such user\r\n354 go\r\n"
                                   "250 Ok\r\n221 Bye\r\n",
                             1);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    assert_int_equal(smtp_client_caps(cl)->esmtp, 0);
    assert_int_equal(smtp_client_caps(cl)->ext, 0);
    smtp_rcpt_t r[] = {{"bob@example.test", SMTP_NOTIFY_SUCCESS, "rfc822;bob@example.test"},
                       {"nobody@example.test", 0, NULL}};
    smtp_envelope_t e = env2(r, 2);
    e.ret = SMTP_RET_HDRS;
    e.envid = "id1";

    /* an 8-bit body cannot go to a peer without 8BITMIME: nothing is sent */
    e.body_8bit = 1;
    body_t b = body("x\r\n", 0);
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 554, "5.6.3", NULL, 0);
    check(&res.rcpts[1], 554, "5.6.3", NULL, 0);
    assert_int_equal(res.usable, 1);
    assert_int_equal(res.data_sent, 0);

    /* without PIPELINING: one command per write, each reply awaited; no
     * SIZE or DSN parameters to a peer that did not offer them */
    e.body_8bit = 0;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 250, "", "Ok", 1);
    check(&res.rcpts[1], 550, "5.1.1", "No such user", 1);
    check(&res.message, 250, "", "Ok", 1);
    smtp_client_quit(cl);
    assert_string_equal(out(s), "EHLO out.example.org\r\n|HELO out.example.org\r\n"
                                "|MAIL FROM:<alice@example.org>\r\n"
                                "|RCPT TO:<bob@example.test>\r\n"
                                "|RCPT TO:<nobody@example.test>\r\n"
                                "|DATA\r\n"
                                "|x\r\n.\r\n"
                                "|QUIT\r\n");
}

static void test_size_and_utf8_refusal(void **state)
{
    (void)state;
    script_t *s = script_new(GREET EHLO_FULL "250 Ok\r\n250 Ok\r\n354 go\r\n250 Ok\r\n", 0);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    smtp_rcpt_t r[] = {{"bob@example.test", 0, NULL}};
    smtp_envelope_t e = env2(r, 1);
    e.size = 1001;
    body_t b = body("x\r\n", 0);
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 552, "5.3.4", NULL, 0);
    check(&res.message, 552, "5.3.4", NULL, 0);
    assert_non_null(strstr(res.message.text, "1000"));
    assert_int_equal(res.usable, 1);

    /* at the limit it goes, with BODY=8BITMIME and SMTPUTF8 when needed */
    e.size = 1000;
    e.body_8bit = 1;
    r[0].address = "b\xc3\xb6rje@example.test";
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 250, "", "Ok", 1);
    smtp_client_quit(cl);
    assert_string_equal(out(s),
                        "EHLO out.example.org\r\n"
                        "|MAIL FROM:<alice@example.org> SIZE=1000 BODY=8BITMIME SMTPUTF8\r\n"
                        "RCPT TO:<b\xc3\xb6rje@example.test>\r\nDATA\r\n|x\r\n.\r\n|QUIT\r\n");

    /* a peer without SMTPUTF8: 553 5.6.7 (RFC 6531 3.2), also when only the
     * header needs it */
    s = script_new(GREET EHLO_PLAIN "221 Bye\r\n", 0);
    cl = open_ok(s, &o);
    e.body_8bit = 0;
    e.size = 5;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 553, "5.6.7", NULL, 0);
    r[0].address = "bob@example.test";
    e.smtputf8 = 1;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 553, "5.6.7", NULL, 0);
    smtp_client_quit(cl);
    assert_string_equal(out(s), "EHLO out.example.org\r\n|QUIT\r\n");
}

static void test_dsn_parameters(void **state)
{
    (void)state;
    script_t *s = script_new(GREET EHLO_FULL "250 Ok\r\n250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n"
                                             "250 Ok\r\n221 Bye\r\n",
                             0);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    smtp_rcpt_t r[] = {
        {"bob@example.test", SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE,
         "rfc822;Bob+x@example.test"},
        {"carol@example.test", SMTP_NOTIFY_NEVER | SMTP_NOTIFY_DELAY, "carol=1@example.test"},
        {"dave@example.test", SMTP_NOTIFY_DELAY, "bad type;dave@example.test"},
    };
    smtp_envelope_t e = env2(r, 3);
    e.sender = "";
    e.ret = SMTP_RET_HDRS;
    e.envid = "Q1 +x=";
    e.size = -1;
    body_t b = body("x\r\n", 0);
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.message, 250, "", "Ok", 1);
    smtp_client_quit(cl);
    assert_string_equal(out(s), "EHLO out.example.org\r\n"
                                "|MAIL FROM:<> RET=HDRS ENVID=Q1+20+2Bx+3D\r\n"
                                "RCPT TO:<bob@example.test> NOTIFY=SUCCESS,FAILURE "
                                "ORCPT=rfc822;Bob+2Bx@example.test\r\n"
                                "RCPT TO:<carol@example.test> NOTIFY=NEVER "
                                "ORCPT=rfc822;carol+3D1@example.test\r\n"
                                "RCPT TO:<dave@example.test> NOTIFY=DELAY\r\n"
                                "DATA\r\n|x\r\n.\r\n|QUIT\r\n");

    /* RET=FULL, and a peer without DSN gets none of it */
    s = script_new(GREET "250-mx\r\n250 PIPELINING\r\n250 Ok\r\n250 Ok\r\n354 go\r\n250 Ok\r\n", 0);
    cl = open_ok(s, &o);
    e.nrcpts = 1;
    e.ret = SMTP_RET_FULL;
    b = body("x\r\n", 0);
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 250, "", "Ok", 1);
    assert_int_equal(smtp_client_caps(cl)->ext & SMTP_EXT_DSN, 0);
    smtp_client_quit(cl);
    assert_string_equal(out(s), "EHLO out.example.org\r\n|MAIL FROM:<>\r\n"
                                "RCPT TO:<bob@example.test>\r\nDATA\r\n|x\r\n.\r\n|QUIT\r\n");
}

static void test_mixed_replies(void **state)
{
    (void)state;
    /* 4xx and 5xx next to 2xx; the refused keep their reply, the accepted
     * get the final one */
    script_t *s = script_new(GREET EHLO_FULL "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                                             "450 4.2.1 Mailbox busy\r\n550 5.1.1 Unknown\r\n"
                                             "250 2.1.5 Ok\r\n354 go\r\n"
                                             "250 2.0.0 queued\r\n221 Bye\r\n",
                             3);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    smtp_rcpt_t r[] = {{"a@example.test", 0, NULL},
                       {"b@example.test", 0, NULL},
                       {"c@example.test", 0, NULL},
                       {"d@example.test", 0, NULL}};
    smtp_envelope_t e = env2(r, 4);
    body_t b = body("x\r\n", 0);
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 250, "2.0.0", "queued", 1);
    check(&res.rcpts[1], 450, "4.2.1", "Mailbox busy", 1);
    check(&res.rcpts[2], 550, "5.1.1", "Unknown", 1);
    check(&res.rcpts[3], 250, "2.0.0", "queued", 1);
    assert_int_equal(res.usable, 1);
    smtp_client_quit(cl);
}

static void test_data_refused(void **state)
{
    (void)state;
    script_t *s = script_new(GREET EHLO_FULL "250 Ok\r\n250 Ok\r\n550 5.1.1 Unknown\r\n"
                                             "554 5.7.1 No thanks\r\n250 2.0.0 Reset\r\n"
                                             "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n"
                                             "550 5.7.1 Spam\r\n221 Bye\r\n",
                             0);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    smtp_rcpt_t r[] = {{"a@example.test", 0, NULL}, {"b@example.test", 0, NULL}};
    smtp_envelope_t e = env2(r, 2);
    body_t b = body("x\r\n", 0);
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 554, "5.7.1", "No thanks", 1);
    check(&res.rcpts[1], 550, "5.1.1", "Unknown", 1);
    check(&res.message, 554, "5.7.1", "No thanks", 1);
    assert_int_equal(res.data_sent, 0);
    assert_int_equal(res.usable, 1);
    assert_int_equal(smtp_client_reset(cl), APR_SUCCESS);
    /* the next message on the same connection is refused after its data */
    e.nrcpts = 1;
    b = body("y\r\n", 0);
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 550, "5.7.1", "Spam", 1);
    assert_int_equal(res.data_sent, 1);
    smtp_client_quit(cl);
    assert_string_equal(out(s), "EHLO out.example.org\r\n"
                                "|MAIL FROM:<alice@example.org> SIZE=100\r\n"
                                "RCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
                                "|RSET\r\n"
                                "|MAIL FROM:<alice@example.org> SIZE=100\r\n"
                                "RCPT TO:<a@example.test>\r\nDATA\r\n|y\r\n.\r\n|QUIT\r\n");
}

static void test_all_refused(void **state)
{
    (void)state;
    /* pipelined: every RCPT refused; the DATA reply is read, no data sent */
    script_t *s = script_new(GREET EHLO_FULL "250 Ok\r\n550 5.1.1 A\r\n551 5.1.6 B\r\n"
                                             "554 5.5.1 No valid recipients\r\n"
                                             /* a server that says 354 anyway */
                                             "250 Ok\r\n550 5.1.1 A\r\n354 go\r\n250 Ok\r\n"
                                             "221 Bye\r\n",
                             0);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    smtp_rcpt_t r[] = {{"a@example.test", 0, NULL}, {"b@example.test", 0, NULL}};
    smtp_envelope_t e = env2(r, 2);
    body_t b = body("x\r\n", 0);
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 550, "5.1.1", "A", 1);
    check(&res.rcpts[1], 551, "5.1.6", "B", 1);
    check(&res.message, 551, "5.1.6", "B", 1);
    assert_int_equal(res.usable, 1);
    e.nrcpts = 1;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 550, "5.1.1", "A", 1);
    assert_int_equal(res.data_sent, 0);
    assert_int_equal(res.usable, 1);
    smtp_client_quit(cl);
    assert_non_null(strstr(out(s), "DATA\r\n|.\r\n|QUIT\r\n"));

    /* without pipelining no DATA is sent at all */
    s = script_new(GREET EHLO_PLAIN "250 Ok\r\n550 5.1.1 A\r\n221 Bye\r\n", 0);
    cl = open_ok(s, &o);
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 550, "5.1.1", "A", 1);
    smtp_client_quit(cl);
    assert_string_equal(out(s), "EHLO out.example.org\r\n|MAIL FROM:<alice@example.org>\r\n"
                                "|RCPT TO:<a@example.test>\r\n|QUIT\r\n");
}

static void test_mail_refused(void **state)
{
    (void)state;
    script_t *s = script_new(GREET EHLO_FULL "553 5.1.8 Bad sender\r\n503 5.5.1 MAIL first\r\n"
                                             "503 5.5.1 MAIL first\r\n503 5.5.1 MAIL first\r\n"
                                             "221 Bye\r\n",
                             0);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    smtp_rcpt_t r[] = {{"a@example.test", 0, NULL}, {"b@example.test", 0, NULL}};
    smtp_envelope_t e = env2(r, 2);
    body_t b = body("x\r\n", 0);
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 553, "5.1.8", "Bad sender", 1);
    check(&res.rcpts[1], 553, "5.1.8", "Bad sender", 1);
    check(&res.message, 553, "5.1.8", "Bad sender", 1);
    assert_int_equal(res.usable, 1);
    smtp_client_quit(cl);
    ends_with(s, "|QUIT\r\n");
}

static void test_421_mid_transaction(void **state)
{
    (void)state;
    script_t *s = script_new(GREET EHLO_FULL "250 Ok\r\n550 5.1.1 Unknown\r\n250 Ok\r\n"
                                             "421 4.3.2 Shutting down\r\n",
                             0);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    smtp_rcpt_t r[] = {{"a@example.test", 0, NULL},
                       {"b@example.test", 0, NULL},
                       {"c@example.test", 0, NULL},
                       {"d@example.test", 0, NULL}};
    smtp_envelope_t e = env2(r, 4);
    body_t b = body("x\r\n", 0);
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 550, "5.1.1", "Unknown", 1);
    check(&res.rcpts[1], 421, "4.3.2", "Shutting down", 1); /* accepted, not delivered */
    check(&res.rcpts[2], 421, "4.3.2", "Shutting down", 1);
    check(&res.rcpts[3], 421, "4.3.2", "Shutting down", 1);
    assert_int_equal(res.usable, 0);
    assert_int_equal(smtp_client_usable(cl), 0);
    assert_int_equal(smtp_client_reset(cl), PR_EINVAL);
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), PR_EINVAL);
    check(&res.rcpts[0], 451, "4.3.0", NULL, 0);
    smtp_client_quit(cl);
    /* no QUIT after 421 */
    ends_with(s, "\r\nDATA\r\n");

    /* 421 after the data: everything is "try again" */
    s = script_new(GREET EHLO_FULL "250 Ok\r\n250 Ok\r\n354 go\r\n421 4.4.2 Timeout\r\n", 0);
    cl = open_ok(s, &o);
    e.nrcpts = 1;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 421, "4.4.2", "Timeout", 1);
    assert_int_equal(res.data_sent, 1);
    assert_int_equal(res.usable, 0);
    smtp_client_quit(cl);
}

static void test_connection_lost(void **state)
{
    (void)state;
    /* the peer goes away after the MAIL reply */
    script_t *s = script_new(GREET EHLO_PLAIN "250 Ok\r\n250 Ok\r\n", 0);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    smtp_rcpt_t r[] = {{"a@example.test", 0, NULL}, {"b@example.test", 0, NULL}};
    smtp_envelope_t e = env2(r, 2);
    body_t b = body("x\r\n", 0);
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 451, "4.4.2", NULL, 0);
    check(&res.rcpts[1], 451, "4.4.2", NULL, 0);
    assert_non_null(strstr(res.rcpts[1].text, "Connection lost with mx.example.test"));
    assert_int_equal(res.usable, 0);
    smtp_client_quit(cl);
    ends_with(s, "|RCPT TO:<b@example.test>\r\n");

    /* after the data, before the final reply */
    s = script_new(GREET EHLO_FULL "250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n250 Oops, a par", 0);
    cl = open_ok(s, &o);
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 451, "4.4.2", NULL, 0);
    check(&res.rcpts[1], 451, "4.4.2", NULL, 0);
    assert_non_null(strstr(res.message.text, "after end of data"));
    smtp_client_quit(cl);

    /* a reply that is no SMTP reply: the session is out of sync */
    s = script_new(GREET EHLO_FULL "250 Ok\r\n250 Ok\r\nHTTP/1.1 400 Bad\r\n", 0);
    cl = open_ok(s, &o);
    e.nrcpts = 1;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 451, "4.5.0", NULL, 0);
    assert_int_equal(res.usable, 0);
    smtp_client_quit(cl);
}

static void test_dot_stuffing(void **state)
{
    (void)state;
    const char *in = ".hello\r\n..x\r\nmid.dle\r\n.\r\n.";
    const char *want = "..hello\r\n...x\r\nmid.dle\r\n..\r\n..\r\n.\r\n";
    apr_size_t steps[] = {0, 1, 2, 5};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        script_t *s = script_new(GREET EHLO_PLAIN "250 Ok\r\n250 Ok\r\n354 go\r\n250 Ok\r\n", 0);
        smtp_client_opts_t o = opts_none();
        smtp_client_t *cl = open_ok(s, &o);
        smtp_rcpt_t r[] = {{"a@example.test", 0, NULL}};
        smtp_envelope_t e = env2(r, 1);
        body_t b = body(in, steps[i]);
        smtp_send_result_t res;
        assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
        check(&res.rcpts[0], 250, "", "Ok", 1);
        smtp_client_quit(cl);
        const char *o_ = strstr(out(s), "|DATA\r\n|");
        assert_non_null(o_);
        assert_string_equal(o_ + 8, apr_pstrcat(pool, want, "|QUIT\r\n", NULL));
    }
    /* an empty body, a body ending in a lone CR */
    const char *bodies[][2] = {{"", ".\r\n"}, {"a\r", "a\r\n.\r\n"}, {"a\r\n", "a\r\n.\r\n"}};
    for (size_t i = 0; i < 3; i++) {
        script_t *s = script_new(GREET EHLO_PLAIN "250 Ok\r\n250 Ok\r\n354 go\r\n250 Ok\r\n", 0);
        smtp_client_opts_t o = opts_none();
        smtp_client_t *cl = open_ok(s, &o);
        smtp_rcpt_t r[] = {{"a@example.test", 0, NULL}};
        smtp_envelope_t e = env2(r, 1);
        body_t b = body(bodies[i][0], 0);
        smtp_send_result_t res;
        assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
        smtp_client_quit(cl);
        const char *o_ = strstr(out(s), "|DATA\r\n|");
        assert_non_null(o_);
        assert_string_equal(o_ + 8, apr_pstrcat(pool, bodies[i][1], "|QUIT\r\n", NULL));
    }
}

static void test_body_read_error(void **state)
{
    (void)state;
    script_t *s = script_new(GREET EHLO_FULL "250 Ok\r\n250 Ok\r\n354 go\r\n250 Ok\r\n", 0);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    smtp_rcpt_t r[] = {{"a@example.test", 0, NULL}};
    smtp_envelope_t e = env2(r, 1);
    body_t b = body("partial\r\n", 0);
    b.fail_at_end = PR_EIO;
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 451, "4.3.0", NULL, 0);
    assert_int_equal(res.usable, 0);
    smtp_client_quit(cl);
    /* no final dot and no QUIT: the peer must not take half a message */
    assert_null(strstr(out(s), "\r\n.\r\n"));
    assert_null(strstr(out(s), "QUIT"));
}

static void test_bad_addresses(void **state)
{
    (void)state;
    script_t *s = script_new(GREET EHLO_FULL "250 Ok\r\n250 Ok\r\n354 go\r\n250 Ok\r\n", 0);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    smtp_rcpt_t r[] = {{"a@example.test>\r\nRSET", 0, NULL},
                       {"b@example.test", 0, NULL},
                       {"", 0, NULL},
                       {"c d@example.test", 0, NULL}};
    smtp_envelope_t e = env2(r, 4);
    body_t b = body("x\r\n", 0);
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 553, "5.1.3", NULL, 0);
    check(&res.rcpts[1], 250, "", "Ok", 1);
    check(&res.rcpts[2], 553, "5.1.3", NULL, 0);
    check(&res.rcpts[3], 553, "5.1.3", NULL, 0);
    assert_null(strstr(out(s), "RSET"));
    e.sender = "x<y@example.org";
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[1], 553, "5.1.7", NULL, 0);
    e.nrcpts = 0;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), PR_EINVAL);
    smtp_client_quit(cl);
}

static void test_greeting_and_ehlo_failures(void **state)
{
    (void)state;
    smtp_client_opts_t o = opts_none();
    smtp_result_t err;
    /* 554 greeting: QUIT (RFC 5321 3.1), permanent */
    script_t *s = script_new("554 5.7.1 No service for you\r\n221 Bye\r\n", 1);
    assert_int_equal(open_fail(s, &o, &err), PR_EPERM);
    check(&err, 554, "5.7.1", "No service for you", 1);
    assert_string_equal(out(s), "QUIT\r\n");
    /* 421 greeting: no QUIT, temporary */
    s = script_new("421 4.3.2 Busy\r\n", 0);
    assert_int_equal(open_fail(s, &o, &err), PR_ETEMPFAIL);
    check(&err, 421, "4.3.2", "Busy", 1);
    assert_string_equal(out(s), "");
    /* nothing at all */
    s = script_new("", 0);
    assert_int_equal(open_fail(s, &o, &err), PR_ECLOSED);
    check(&err, 451, "4.4.2", NULL, 0);
    /* EHLO and HELO refused */
    s = script_new(GREET "500 no\r\n501 5.5.2 Bad HELO\r\n221 Bye\r\n", 0);
    assert_int_equal(open_fail(s, &o, &err), PR_EPERM);
    check(&err, 501, "5.5.2", "Bad HELO", 1);
    /* EHLO with 4xx: no HELO */
    s = script_new(GREET "451 4.3.0 later\r\n221 Bye\r\n", 0);
    assert_int_equal(open_fail(s, &o, &err), PR_ETEMPFAIL);
    assert_string_equal(out(s), "EHLO out.example.org\r\n|QUIT\r\n");
    /* a greeting over the reply's octet limit */
    char *huge = apr_palloc(pool, SMTP_REPLY_MAX_BYTES + 10);
    memset(huge, 'x', SMTP_REPLY_MAX_BYTES + 9);
    memcpy(huge, "220 ", 4);
    huge[SMTP_REPLY_MAX_BYTES + 9] = '\0';
    s = script_new(huge, 0);
    assert_int_equal(open_fail(s, &o, &err), PR_EINVAL);
    check(&err, 451, "4.5.0", NULL, 0);
    /* an over-long EHLO line is cut, and the session goes on */
    char *longline = apr_palloc(pool, 700);
    memset(longline, 'k', 699);
    longline[699] = '\0';
    s = script_new(apr_pstrcat(pool, GREET "250-mx\r\n250-X", longline,
                               "\r\n250 PIPELINING\r\n221 Bye\r\n", NULL),
                   0);
    smtp_client_t *cl = open_ok(s, &o);
    assert_int_equal(smtp_client_caps(cl)->ext, SMTP_EXT_PIPELINING);
    smtp_client_quit(cl);
    assert_string_equal(out(s), "EHLO out.example.org\r\n|QUIT\r\n");
}

static pr_tls_ctx_t *client_ctx(void)
{
    pr_tls_ctx_t *ctx;
    const char *err = NULL;
    pr_tls_client_opts_t to = {0, NULL, 0};
    assert_int_equal(pr_tls_client_ctx_create(&ctx, &to, &err, pool), APR_SUCCESS);
    return ctx;
}

static void test_starttls_policy(void **state)
{
    (void)state;
    smtp_result_t err;
    smtp_client_opts_t o = opts_none();
    o.tls_ctx = client_ctx();

    /* encrypt: not offered -> no mail in clear */
    o.tls = SMTP_TLS_ENCRYPT;
    script_t *s = script_new(GREET EHLO_FULL "221 Bye\r\n", 0);
    assert_int_equal(open_fail(s, &o, &err), PR_ETLS);
    check(&err, 451, "4.7.4", NULL, 0);
    assert_string_equal(out(s), "EHLO out.example.org\r\n|QUIT\r\n");
    /* encrypt: refused */
    s = script_new(GREET "250-mx\r\n250 STARTTLS\r\n454 4.7.0 TLS not available\r\n221 Bye\r\n", 0);
    assert_int_equal(open_fail(s, &o, &err), PR_ETLS);
    check(&err, 451, "4.7.4", NULL, 0);
    assert_non_null(strstr(err.text, "454 TLS not available"));
    assert_string_equal(out(s), "EHLO out.example.org\r\n|STARTTLS\r\n|QUIT\r\n");

    /* may: not offered, or refused -> on in clear */
    o.tls = SMTP_TLS_MAY;
    s = script_new(GREET EHLO_FULL "221 Bye\r\n", 0);
    smtp_client_t *cl = open_ok(s, &o);
    assert_null(smtp_client_tls(cl));
    smtp_client_quit(cl);
    s = script_new(GREET "250-mx\r\n250 STARTTLS\r\n454 4.7.0 TLS not available\r\n221 Bye\r\n", 0);
    cl = open_ok(s, &o);
    smtp_client_quit(cl);
    assert_string_equal(out(s), "EHLO out.example.org\r\n|STARTTLS\r\n|QUIT\r\n");
    /* a handshake with something that is no TLS server fails cleanly */
    s = script_new(GREET "250-mx\r\n250 STARTTLS\r\n220 go\r\n", 0);
    assert_int_equal(open_fail(s, &o, &err), PR_ETLS);
    check(&err, 451, "4.7.5", NULL, 0);
    assert_non_null(strstr(err.text, "TLS handshake with mx.example.test failed"));

    /* TLS wanted and no context: a configuration error */
    o.tls_ctx = NULL;
    s = script_new(GREET, 0);
    assert_int_equal(open_fail(s, &o, &err), PR_EINVAL);
}

static void test_auth(void **state)
{
    (void)state;
    smtp_result_t err;
    smtp_client_opts_t o = opts_none();
    o.auth_user = "alice@example.org";
    o.auth_password = "s3cret";
    const char *plain = pr_b64_encode("\0alice@example.org\0s3cret", 25, pool);

    /* PLAIN in clear, because policy none was chosen */
    script_t *s =
        script_new(GREET "250-mx\r\n250 AUTH LOGIN PLAIN\r\n235 2.7.0 Ok\r\n221 Bye\r\n", 1);
    smtp_client_t *cl = open_ok(s, &o);
    smtp_client_quit(cl);
    assert_string_equal(out(s), apr_pstrcat(pool, "EHLO out.example.org\r\n|AUTH PLAIN ", plain,
                                            "\r\n|QUIT\r\n", NULL));

    /* LOGIN when only that is offered */
    s = script_new(GREET "250-mx\r\n250 AUTH=LOGIN\r\n334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
                         "235 2.7.0 Ok\r\n221 Bye\r\n",
                   0);
    cl = open_ok(s, &o);
    smtp_client_quit(cl);
    assert_string_equal(out(s),
                        apr_pstrcat(pool, "EHLO out.example.org\r\n|AUTH LOGIN\r\n|",
                                    pr_b64_encode("alice@example.org", 17, pool), "\r\n|",
                                    pr_b64_encode("s3cret", 6, pool), "\r\n|QUIT\r\n", NULL));

    /* refused */
    s = script_new(GREET "250-mx\r\n250 AUTH PLAIN\r\n535 5.7.8 Bad credentials\r\n221 Bye\r\n", 0);
    assert_int_equal(open_fail(s, &o, &err), PR_EAUTH);
    check(&err, 535, "5.7.8", "Bad credentials", 1);
    /* nothing we can use */
    s = script_new(GREET "250-mx\r\n250 AUTH CRAM-MD5\r\n221 Bye\r\n", 0);
    assert_int_equal(open_fail(s, &o, &err), PR_EAUTH);
    check(&err, 451, "4.7.4", NULL, 0);
    assert_string_equal(out(s), "EHLO out.example.org\r\n|QUIT\r\n");

    /* policy may and no TLS: the credentials stay home */
    o.tls = SMTP_TLS_MAY;
    o.tls_ctx = client_ctx();
    s = script_new(GREET "250-mx\r\n250 AUTH PLAIN\r\n221 Bye\r\n", 0);
    assert_int_equal(open_fail(s, &o, &err), PR_EAUTH);
    check(&err, 451, "4.7.4", NULL, 0);
    assert_non_null(strstr(err.text, "without TLS"));
    assert_string_equal(out(s), "EHLO out.example.org\r\n|QUIT\r\n");
}

static void test_reset_and_reuse(void **state)
{
    (void)state;
    script_t *s = script_new(GREET EHLO_FULL "250 Ok\r\n250 Ok\r\n354 go\r\n250 2.0.0 one\r\n"
                                             "250 2.0.0 Reset\r\n"
                                             "250 Ok\r\n250 Ok\r\n354 go\r\n250 2.0.0 two\r\n"
                                             "500 5.5.1 What\r\n221 Bye\r\n",
                             2);
    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = open_ok(s, &o);
    smtp_rcpt_t r[] = {{"a@example.test", 0, NULL}};
    smtp_envelope_t e = env2(r, 1);
    body_t b = body("one\r\n", 0);
    smtp_send_result_t res;
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 250, "2.0.0", "one", 1);
    assert_int_equal(smtp_client_reset(cl), APR_SUCCESS);
    b = body("two\r\n", 0);
    assert_int_equal(smtp_client_send(cl, &e, body_read, &b, &res, pool), APR_SUCCESS);
    check(&res.rcpts[0], 250, "2.0.0", "two", 1);
    /* RSET refused: the session is not reused, but QUIT is still said */
    assert_int_equal(smtp_client_reset(cl), PR_EPERM);
    assert_int_equal(smtp_client_usable(cl), 0);
    smtp_client_quit(cl);
    ends_with(s, "|RSET\r\n|QUIT\r\n");
}

static void test_connect_refused(void **state)
{
    (void)state;
    /* a port nobody listens on: bind one, learn it, close it */
    apr_socket_t *sock;
    apr_sockaddr_t *sa;
    assert_int_equal(apr_sockaddr_info_get(&sa, "127.0.0.1", APR_INET, 0, 0, pool), APR_SUCCESS);
    assert_int_equal(apr_socket_create(&sock, APR_INET, SOCK_STREAM, APR_PROTO_TCP, pool),
                     APR_SUCCESS);
    assert_int_equal(apr_socket_bind(sock, sa), APR_SUCCESS);
    apr_sockaddr_t *local;
    apr_socket_addr_get(&local, APR_LOCAL, sock);
    apr_port_t port = local->port;
    apr_socket_close(sock);

    smtp_client_opts_t o = opts_none();
    smtp_client_t *cl = (smtp_client_t *)1;
    smtp_result_t err;
    apr_status_t st = smtp_client_connect(&cl, "127.0.0.1", port, NULL, &o, &err, pool);
    assert_int_equal(st, PR_ECLOSED);
    assert_null(cl);
    check(&err, 451, "4.4.1", NULL, 0);
    assert_non_null(strstr(err.text, "Cannot connect to 127.0.0.1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_single),
        cmocka_unit_test(test_reply_multiline),
        cmocka_unit_test(test_reply_malformed),
        cmocka_unit_test(test_reply_limits),
        cmocka_unit_test(test_xtext),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_pipelined_delivery),
        cmocka_unit_test(test_helo_fallback),
        cmocka_unit_test(test_size_and_utf8_refusal),
        cmocka_unit_test(test_dsn_parameters),
        cmocka_unit_test(test_mixed_replies),
        cmocka_unit_test(test_data_refused),
        cmocka_unit_test(test_all_refused),
        cmocka_unit_test(test_mail_refused),
        cmocka_unit_test(test_421_mid_transaction),
        cmocka_unit_test(test_connection_lost),
        cmocka_unit_test(test_dot_stuffing),
        cmocka_unit_test(test_body_read_error),
        cmocka_unit_test(test_bad_addresses),
        cmocka_unit_test(test_greeting_and_ehlo_failures),
        cmocka_unit_test(test_starttls_policy),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_reset_and_reuse),
        cmocka_unit_test(test_connect_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
