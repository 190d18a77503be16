/* The SMTP session driven without a socket: a memory connection carries a
 * scripted client, the real store and directory sit behind it. Checks the
 * replies a client sees and what lands in the store. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "directory/directory.h"
#include "service/core/conn.h"
#include "service/core/penalty.h"
#include "service/core/listener.h"
#include "service/core/tls.h"
#include "service/smtp/smtp.h"
#include "service/store/store.h"

typedef struct fixture_t {
    apr_pool_t *pool;
    pr_config_t cfg;
    store_t *store;
    dir_t *dir;
    pr_tls_t *tls;
    smtp_server_t *srv;
    pr_penalty_t *penalty;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    const char *err = NULL;
    apr_pool_create(&f->pool, NULL);
    const char *tmp = getenv("PR_TEST_TMP") ? getenv("PR_TEST_TMP") : "/tmp";
    apr_dir_make_recursive(tmp, APR_FPROT_OS_DEFAULT, f->pool);
    char *dir = apr_psprintf(f->pool, "%s/smtp-session-XXXXXX", tmp);
    assert_non_null(mkdtemp(dir));
    pr_config_defaults(&f->cfg, f->pool);
    f->cfg.server.data_dir = dir;
    f->cfg.server.hostname = "mx.example.test";
    static const char *domains[] = {"example.test"};
    f->cfg.server.domains.n = 1;
    f->cfg.server.domains.v = domains;
    f->cfg.smtp.relay_networks.n = 0;
    store_options_t so = {0};
    so.data_dir = dir;
    assert_int_equal(store_open(&f->store, &so, f->pool), APR_SUCCESS);
    assert_int_equal(dir_open(&f->dir, &f->cfg, f->pool), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->dir, "alice@example.test", "alice-pw-1"), APR_SUCCESS);
    assert_int_equal(pr_tls_create(&f->tls, &f->cfg, &err, f->pool), APR_SUCCESS);
    assert_int_equal(pr_penalty_create(&f->penalty, f->pool), APR_SUCCESS);
    assert_int_equal(
        smtp_server_create(&f->srv, &f->cfg, f->dir, f->store, f->tls, f->penalty, f->pool),
        APR_SUCCESS);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    store_close(f->store);
    dir_close(f->dir);
    pr_tls_destroy(f->tls);
    apr_pool_destroy(f->pool);
    free(f);
    return 0;
}

/* Run one session over `script` from peer; returns everything the server wrote. */
static const char *run_from(fixture_t *f, smtp_service_e kind, const char *peer, const char *script,
                            apr_pool_t *pool)
{
    pr_session_t s = {0};
    s.sid = "TEST";
    s.pool = pool;
    s.peer_ip = peer;
    s.local_ip = "127.0.0.1";
    s.local_port = 25;
    s.service = smtp_server_service(f->srv, kind);
    assert_int_equal(pr_conn_create_memory(&s.conn, script, strlen(script), pool), APR_SUCCESS);
    smtp_session_run(&s);
    return pr_conn_memory_output(s.conn, NULL);
}

static const char *run(fixture_t *f, smtp_service_e kind, const char *script, apr_pool_t *pool)
{
    return run_from(f, kind, "127.0.0.1", script, pool);
}

/* The reply lines' first 9 characters ("250 2.1.0"), one per line, joined by '|'. */
static const char *codes(const char *out, apr_pool_t *pool)
{
    const char *res = "";
    for (const char *p = out; *p;) {
        const char *e = strstr(p, "\r\n");
        if (!e) break;
        res = apr_pstrcat(pool, res, *res ? "|" : "", apr_pstrndup(pool, p, 9), NULL);
        p = e + 2;
    }
    return res;
}

static apr_uint32_t inbox_count(fixture_t *f, const char *user, apr_pool_t *pool)
{
    store_reader_t *r;
    apr_array_header_t *folders;
    assert_int_equal(store_reader_open(&r, f->store, pool), APR_SUCCESS);
    assert_int_equal(store_folders_list(r, user, &folders, pool), APR_SUCCESS);
    return folders->nelts ? APR_ARRAY_IDX(folders, 0, store_folder_info_t).messages : 0;
}

static void test_delivery(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    const char *out = run(f, SMTP_SERVICE_MX,
                          "HELO a.test\r\nMAIL FROM:<x@y.test>\r\nRCPT TO:<Alice@Example.TEST>\r\n"
                          "DATA\r\nSubject: t\r\n\r\n..hi\r\n.\r\nQUIT\r\n",
                          p);
    assert_string_equal(codes(out, p), "220 mx.ex|250 mx.ex|250 2.1.0|250 2.1.5|354 End d|"
                                       "250 2.0.0|221 2.0.0");
    assert_int_equal(inbox_count(f, "alice@example.test", p), 1);

    /* The stored copy: trace prefix, then the unstuffed body. */
    store_reader_t *r;
    store_stream_t *s;
    char buf[4096];
    apr_size_t len = sizeof(buf) - 1;
    assert_int_equal(store_reader_open(&r, f->store, p), APR_SUCCESS);
    assert_int_equal(store_message_open(&s, r, "alice@example.test", NULL, 1, p), APR_SUCCESS);
    assert_int_equal(store_stream_read(s, buf, &len), APR_SUCCESS);
    buf[len] = '\0';
    assert_true(
        strncmp(buf, "Return-Path: <x@y.test>\r\nReceived: from a.test ([127.0.0.1])", 60) == 0);
    assert_non_null(strstr(buf, "\tfor <alice@example.test>;"));
    const char *tail = "\r\nSubject: t\r\n\r\n.hi\r\n";
    assert_string_equal(buf + len - strlen(tail), tail);
    apr_pool_destroy(p);
}

static void test_relay_tricks_refused(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    const char *out = run(f, SMTP_SERVICE_MX,
                          "EHLO a\r\nMAIL FROM:<x@y.test>\r\n"
                          "RCPT TO:<u@other.test>\r\n"
                          "RCPT TO:<u%other.test@example.test>\r\n"
                          "RCPT TO:<other.test!u@example.test>\r\n"
                          "RCPT TO:<@example.test:u@other.test>\r\n"
                          "RCPT TO:<\"u@other.test\"@example.test>\r\n"
                          "RCPT TO:<u@[127.0.0.9]>\r\n"
                          "RCPT TO:<nobody@example.test>\r\nDATA\r\nQUIT\r\n",
                          p);
    const char *c = codes(out, p);
    const char *want_tail = "250 2.1.0|550 5.7.1|550 5.7.1|550 5.7.1|550 5.7.1|550 5.7.1|"
                            "550 5.7.1|550 5.1.1|554 5.5.1|221 2.0.0";
    assert_non_null(strstr(c, want_tail));
    apr_pool_destroy(p);
}

static void test_sequence_and_submission(void **state)
{
    fixture_t *f = *state;
    f->cfg.smtp.allow_plaintext_auth = 0;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    const char *out = run(f, SMTP_SERVICE_SUBMISSION,
                          "MAIL FROM:<alice@example.test>\r\nEHLO a\r\n"
                          "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wdy0x\r\n"
                          "MAIL FROM:<alice@example.test>\r\nQUIT\r\n",
                          p);
    const char *c = codes(out, p);
    /* No AUTH before TLS (538); MAIL without AUTH on submission (530). */
    assert_non_null(strstr(c, "220 mx.ex|503 5.5.1|"));
    assert_non_null(strstr(c, "|538 5.7.1|530 5.7.0|221 2.0.0"));
    apr_pool_destroy(p);
}

/* AUTH PLAIN (initial response or 334), LOGIN, and what is refused. A
 * memory connection has no TLS, so plaintext AUTH is allowed here. */
static void test_auth(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    f->cfg.smtp.allow_plaintext_auth = 1;
    const char *plain_ok = "AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wdy0x"; /* \0alice@..\0alice-pw-1 */
    const char *out = run(
        f, SMTP_SERVICE_SUBMISSION,
        apr_pstrcat(p, "EHLO a\r\nAUTH PLAIN ", plain_ok, "\r\nAUTH PLAIN\r\nQUIT\r\n", NULL), p);
    assert_non_null(strstr(codes(out, p), "|235 2.7.0|503 5.5.1|221 2.0.0"));
    out = run(f, SMTP_SERVICE_SUBMISSION,
              apr_pstrcat(p, "EHLO a\r\nAUTH PLAIN\r\n", plain_ok, "\r\nQUIT\r\n", NULL), p);
    assert_non_null(strstr(out, "\r\n334 \r\n235 2.7.0 "));
    /* LOGIN: user and password prompts; "*" cancels; bad base64; a PLAIN
     * message without a password; an unknown mechanism. */
    out = run(f, SMTP_SERVICE_SUBMISSION,
              "EHLO a\r\nAUTH LOGIN\r\n*\r\nAUTH LOGIN\r\nnot*base64\r\n"
              "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAA=\r\nAUTH CRAM-MD5\r\n"
              "AUTH LOGIN YWxpY2VAZXhhbXBsZS50ZXN0\r\nYWxpY2UtcHctMQ==\r\nQUIT\r\n",
              p);
    assert_non_null(strstr(codes(out, p), "|334 VXNlc|501 5.0.0|334 VXNlc|501 5.5.2|501 5.5.2|"
                                          "504 5.5.4|334 UGFzc|235 2.7.0|221 2.0.0"));
    /* A wrong password and an unknown user get the same answer. */
    out = run(f, SMTP_SERVICE_SUBMISSION,
              "EHLO a\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==\r\n"
              "AUTH PLAIN AG5vYm9keUBleGFtcGxlLnRlc3QAYWxpY2UtcHctMQ==\r\nQUIT\r\n",
              p);
    assert_non_null(strstr(out, "535 5.7.8 Authentication credentials invalid\r\n"
                                "535 5.7.8 Authentication credentials invalid\r\n"));
    /* An address with too many recent failures (over any protocol: the
     * penalty table is shared) is refused without a check, even with the
     * right password; another address is not. */
    for (int i = 0; i < PR_PENALTY_LIMIT; i++)
        pr_penalty_fail(f->penalty, "127.0.0.5");
    const char *script = apr_pstrcat(p, "EHLO a\r\nAUTH PLAIN ", plain_ok, "\r\nQUIT\r\n", NULL);
    out = run_from(f, SMTP_SERVICE_SUBMISSION, "127.0.0.5", script, p);
    assert_non_null(strstr(codes(out, p), "|454 4.7.0|221 2.0.0"));
    out = run_from(f, SMTP_SERVICE_SUBMISSION, "127.0.0.6", script, p);
    assert_non_null(strstr(codes(out, p), "|235 2.7.0|221 2.0.0"));
    f->cfg.smtp.allow_plaintext_auth = 0;
    apr_pool_destroy(p);
}

/* A list's posting policy at RCPT: members by envelope sender, local by
 * AUTH only (a claimed MAIL FROM is not enough). */
static void test_list_policy(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    assert_int_equal(dir_list_add(f->dir, "staff@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->dir, "staff@example.test", "alice@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_set_policy(f->dir, "staff@example.test", DIR_POST_MEMBERS),
                     APR_SUCCESS);
    const char *out = run(f, SMTP_SERVICE_MX,
                          "EHLO a\r\nMAIL FROM:<alice@example.test>\r\n"
                          "RCPT TO:<Staff@example.test>\r\nRSET\r\nMAIL FROM:<x@y.test>\r\n"
                          "RCPT TO:<Staff@example.test>\r\nRSET\r\nMAIL FROM:<>\r\n"
                          "RCPT TO:<staff@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
                          "QUIT\r\n",
                          p);
    assert_non_null(strstr(out, "\r\n250 2.1.5 Ok\r\n"));
    assert_non_null(
        strstr(out, "\r\n550 5.7.1 <Staff@example.test>: Only members may post to this list\r\n"));
    assert_non_null(strstr(codes(out, p), "|250 2.1.0|250 2.1.5|250 2.0.0|250 2.1.0|550 5.7.1|"
                                          "250 2.0.0|250 2.1.0|550 5.7.1|250 2.1.5|221 2.0.0"));

    assert_int_equal(dir_list_set_policy(f->dir, "staff@example.test", DIR_POST_LOCAL),
                     APR_SUCCESS);
    out = run(f, SMTP_SERVICE_MX,
              "EHLO a\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<staff@example.test>\r\n"
              "QUIT\r\n",
              p);
    assert_non_null(strstr(out, "\r\n550 5.7.1 <staff@example.test>: Only authenticated local "
                                "senders may post to this list\r\n"));
    f->cfg.smtp.allow_plaintext_auth = 1;
    out = run(f, SMTP_SERVICE_SUBMISSION,
              "EHLO a\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wdy0x\r\n"
              "MAIL FROM:<alice@example.test>\r\nRCPT TO:<staff@example.test>\r\n"
              "DATA\r\nSubject: t\r\n\r\nhi\r\n.\r\nQUIT\r\n",
              p);
    f->cfg.smtp.allow_plaintext_auth = 0;
    assert_non_null(strstr(codes(out, p), "|235 2.7.0|250 2.1.0|250 2.1.5|354 End d|250 2.0.0|"));
    apr_pool_destroy(p);
}

static void test_starttls_pipelined_input_discarded(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    /* The handshake cannot complete over a scripted connection; what matters
     * is that the pipelined RSET is never answered. */
    const char *out = run(f, SMTP_SERVICE_MX, "EHLO a\r\nSTARTTLS\r\nRSET\r\nNOOP\r\n", p);
    const char *c = codes(out, p);
    assert_true(strlen(c) > 0);
    const char *last = strrchr(c, '|');
    assert_string_equal(last + 1, "220 2.0.0");
    apr_pool_destroy(p);
}

int main(void)
{
    apr_initialize();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delivery),
        cmocka_unit_test(test_relay_tricks_refused),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_sequence_and_submission),
        cmocka_unit_test(test_list_policy),
        cmocka_unit_test(test_starttls_pipelined_input_discarded),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    apr_terminate();
    return rc;
}
