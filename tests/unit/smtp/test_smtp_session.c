/* The SMTP session driven without a socket: a memory connection carries a
 * scripted client, the real store and directory sit behind it. Checks the
 * replies a client sees and what lands in the store: deliveries, the queue
 * with its DSN requests (RFC 3461), local success reports, ETRN (RFC
 * 1985), mail loops (RFC 5321 6.3) and the daily relay limit. */
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
#include "service/core/netaddr.h"
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

/* The whole of the newest message in user's INBOX. */
static const char *last_message(fixture_t *f, const char *user, apr_pool_t *pool)
{
    store_reader_t *r;
    store_folder_info_t info;
    apr_array_header_t *msgs;
    store_stream_t *s;
    assert_int_equal(store_reader_open(&r, f->store, pool), APR_SUCCESS);
    assert_int_equal(store_messages_list(r, user, NULL, &info, &msgs, pool), APR_SUCCESS);
    assert_true(msgs->nelts > 0);
    apr_uint32_t uid = APR_ARRAY_IDX(msgs, msgs->nelts - 1, store_msg_info_t).uid;
    assert_int_equal(store_message_open(&s, r, user, NULL, uid, pool), APR_SUCCESS);
    apr_size_t size = (apr_size_t)store_stream_size(s), got = 0;
    char *buf = apr_palloc(pool, size + 1);
    while (got < size) {
        apr_size_t len = size - got;
        if (store_stream_read(s, buf + got, &len) != APR_SUCCESS) break;
        got += len;
    }
    buf[got] = '\0';
    return buf;
}

/* The queued message whose sender is sender (the newest of them). */
static const store_qmsg_t *queued_from(fixture_t *f, const char *sender, apr_pool_t *pool)
{
    store_reader_t *r;
    apr_array_header_t *msgs;
    const store_qmsg_t *found = NULL;
    assert_int_equal(store_reader_open(&r, f->store, pool), APR_SUCCESS);
    assert_int_equal(store_queue_list(r, 0, &msgs, pool), APR_SUCCESS);
    for (int i = 0; i < msgs->nelts; i++) {
        const store_qmsg_t *m = APR_ARRAY_IDX(msgs, i, const store_qmsg_t *);
        if (strcmp(m->sender, sender) == 0) found = m;
    }
    return found;
}

static const store_qrcpt_t *qrcpt(const store_qmsg_t *m, const char *address)
{
    for (int i = 0; i < m->rcpts->nelts; i++) {
        const store_qrcpt_t *r = &APR_ARRAY_IDX(m->rcpts, i, store_qrcpt_t);
        if (strcmp(r->address, address) == 0) return r;
    }
    fail_msg("%s is not queued", address);
    return NULL;
}

#define ALICE_PLAIN "AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wdy0x"
#define TEACHER_PLAIN "AHRlYWNoZXJAZXhhbXBsZS50ZXN0AHRlYWNoZXItcHctMQ=="

/* RFC 3461 parameters are taken only after EHLO, and go with the queued
 * recipients: NOTIFY, ORCPT per recipient, ENVID, RET and the body's needs
 * (8-bit content) per message. */
static void test_dsn_queued(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    f->cfg.smtp.allow_plaintext_auth = 1;
    const char *out = run(f, SMTP_SERVICE_SUBMISSION,
                          "EHLO a\r\nAUTH PLAIN " ALICE_PLAIN "\r\n"
                          "MAIL FROM:<alice@example.test> RET=HDRS ENVID=q+2B1\r\n"
                          "RCPT TO:<bob@Remote.TEST> NOTIFY=SUCCESS,FAILURE "
                          "ORCPT=rfc822;Bob+40remote.test\r\n"
                          "RCPT TO:<carol@remote.test> NOTIFY=NEVER\r\n"
                          "RCPT TO:<dave@remote.test>\r\n"
                          "RCPT TO:<erin@remote.test> NOTIFY=NEVER,DELAY\r\n"
                          "DATA\r\nSubject: caf\xc3\xa9\r\n\r\nhi\r\n.\r\nQUIT\r\n",
                          p);
    f->cfg.smtp.allow_plaintext_auth = 0;
    assert_non_null(strstr(out, "\r\n250-DSN\r\n"));
    assert_non_null(strstr(out, "\r\n250-ETRN\r\n"));
    assert_non_null(strstr(codes(out, p), "|235 2.7.0|250 2.1.0|250 2.1.5|250 2.1.5|250 2.1.5|"
                                          "501 5.5.4|354 End d|250 2.0.0|221 2.0.0"));
    const store_qmsg_t *m = queued_from(f, "alice@example.test", p);
    assert_non_null(m);
    assert_string_equal(m->envid, "q+1");
    assert_int_equal(m->ret, STORE_RET_HDRS);
    assert_int_equal(m->body_flags, STORE_BODY_8BIT);
    assert_int_equal(m->rcpts->nelts, 3);
    const store_qrcpt_t *r = qrcpt(m, "bob@remote.test");
    assert_int_equal(r->dsn.notify, STORE_NOTIFY_SUCCESS | STORE_NOTIFY_FAILURE);
    assert_string_equal(r->dsn.orcpt, "rfc822;Bob@remote.test");
    r = qrcpt(m, "carol@remote.test");
    assert_int_equal(r->dsn.notify, STORE_NOTIFY_NEVER);
    assert_null(r->dsn.orcpt);
    assert_int_equal(qrcpt(m, "dave@remote.test")->dsn.notify, 0);

    /* After HELO there are no extensions; without DSN asked for, none kept. */
    out = run_from(f, SMTP_SERVICE_MX, "127.0.0.1",
                   "HELO a\r\nMAIL FROM:<x@y.test> RET=FULL\r\n"
                   "MAIL FROM:<x@y.test>\r\nRCPT TO:<alice@example.test> NOTIFY=NEVER\r\n"
                   "QUIT\r\n",
                   p);
    assert_non_null(strstr(codes(out, p), "|555 5.5.4|250 2.1.0|555 5.5.4|221 2.0.0"));
    apr_pool_destroy(p);
}

/* NOTIFY=SUCCESS for local recipients: a "delivered" report to the sender
 * right after the delivery, with ENVID and ORCPT, and only the original's
 * headers (RFC 3461 4.3); a list is delivered as a whole, an alias to
 * several addresses is "expanded"; nothing without SUCCESS or for <>. */
static void test_dsn_local_success(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    assert_int_equal(dir_user_add(f->dir, "bob@example.test", "bob-pw-1"), APR_SUCCESS);
    static const char *const two[] = {"alice@example.test", "bob@example.test"};
    assert_int_equal(dir_alias_add(f->dir, "office@example.test", two, 2), APR_SUCCESS);
    assert_int_equal(dir_list_add(f->dir, "class@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->dir, "class@example.test", "bob@example.test"),
                     APR_SUCCESS);
    apr_uint32_t alice0 = inbox_count(f, "alice@example.test", p);
    apr_uint32_t bob0 = inbox_count(f, "bob@example.test", p);

    const char *out = run(f, SMTP_SERVICE_MX,
                          "EHLO a\r\nMAIL FROM:<alice@example.test> ENVID=E-1 RET=FULL\r\n"
                          "RCPT TO:<Bob@example.test> NOTIFY=SUCCESS "
                          "ORCPT=rfc822;Bob+40example.test\r\n"
                          "DATA\r\nSubject: ok\r\n\r\nsecret body\r\n.\r\nQUIT\r\n",
                          p);
    assert_non_null(strstr(codes(out, p), "|250 2.1.5|354 End d|250 2.0.0|221 2.0.0"));
    assert_int_equal(inbox_count(f, "bob@example.test", p), bob0 + 1);
    assert_int_equal(inbox_count(f, "alice@example.test", p), alice0 + 1);
    const char *dsn = last_message(f, "alice@example.test", p);
    assert_true(strncmp(dsn, "Return-Path: <>\r\n", 17) == 0);
    assert_non_null(strstr(dsn, "report-type=delivery-status"));
    assert_non_null(strstr(dsn, "Original-Envelope-Id: E-1\r\n"));
    assert_non_null(strstr(dsn, "Original-Recipient: rfc822;Bob@example.test\r\n"
                                "Final-Recipient: rfc822; bob@example.test\r\n"
                                "Action: delivered\r\nStatus: 2.0.0\r\n"));
    assert_non_null(strstr(dsn, "Content-Type: text/rfc822-headers"));
    assert_non_null(strstr(dsn, "Subject: ok\r\n"));
    assert_null(strstr(dsn, "secret body"));

    /* an alias to two mailboxes, a list, and recipients that asked for no
     * report: one report with "expanded" and "delivered" */
    out = run(f, SMTP_SERVICE_MX,
              "EHLO a\r\nMAIL FROM:<alice@example.test>\r\n"
              "RCPT TO:<office@example.test> NOTIFY=SUCCESS,FAILURE\r\n"
              "RCPT TO:<class@example.test> NOTIFY=SUCCESS\r\n"
              "RCPT TO:<bob@example.test> NOTIFY=FAILURE\r\n"
              "DATA\r\nSubject: two\r\n\r\nx\r\n.\r\nQUIT\r\n",
              p);
    assert_non_null(strstr(codes(out, p), "|354 End d|250 2.0.0|221 2.0.0"));
    assert_int_equal(inbox_count(f, "alice@example.test", p), alice0 + 3); /* message + report */
    dsn = last_message(f, "alice@example.test", p);
    assert_non_null(strstr(dsn, "Original-Recipient: rfc822;office@example.test\r\n"
                                "Final-Recipient: rfc822; office@example.test\r\n"
                                "Action: expanded\r\n"));
    assert_non_null(strstr(dsn, "Final-Recipient: rfc822; class@example.test\r\n"
                                "Action: delivered\r\n"));
    assert_null(strstr(dsn, "Final-Recipient: rfc822; bob@example.test"));
    assert_null(strstr(dsn, "Original-Envelope-Id"));

    /* no SUCCESS asked, or the null sender: no report */
    out = run(f, SMTP_SERVICE_MX,
              "EHLO a\r\nMAIL FROM:<alice@example.test>\r\n"
              "RCPT TO:<bob@example.test> NOTIFY=FAILURE,DELAY\r\n"
              "DATA\r\n\r\nx\r\n.\r\n"
              "MAIL FROM:<>\r\nRCPT TO:<bob@example.test> NOTIFY=SUCCESS\r\n"
              "DATA\r\n\r\nx\r\n.\r\nQUIT\r\n",
              p);
    assert_non_null(strstr(codes(out, p), "|250 2.0.0|250 2.1.0|250 2.1.5|354 End d|250 2.0.0|"));
    assert_int_equal(inbox_count(f, "alice@example.test", p), alice0 + 3);

    /* a remote sender's report is queued for relaying (from <>) */
    out = run(f, SMTP_SERVICE_MX,
              "EHLO a\r\nMAIL FROM:<far@away.test>\r\n"
              "RCPT TO:<bob@example.test> NOTIFY=SUCCESS\r\n"
              "DATA\r\n\r\nx\r\n.\r\nQUIT\r\n",
              p);
    const store_qmsg_t *m = queued_from(f, "", p);
    assert_non_null(m);
    assert_string_equal(qrcpt(m, "far@away.test")->address, "far@away.test");
    apr_pool_destroy(p);
}

/* RFC 5321 6.3: 100 Received: fields is a loop; 99 is not. */
static void test_mail_loop(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    const char *hops = "";
    for (int i = 0; i < SMTP_MAX_HOPS - 1; i++)
        hops = apr_psprintf(p,
                            "%sReceived: from h%d.test by h%d.test; Mon, 1 Jan 2024 "
                            "00:00:00 +0000\r\n",
                            hops, i, i + 1);
    apr_uint32_t before = inbox_count(f, "alice@example.test", p);
    const char *txn = "MAIL FROM:<x@y.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n";
    const char *out = run(f, SMTP_SERVICE_MX,
                          apr_pstrcat(p, "EHLO a\r\n", txn, hops, "Subject: 99\r\n\r\nx\r\n.\r\n",
                                      txn, hops, "Received: from loop.test\r\n\tby x.test; now\r\n",
                                      "Subject: 100\r\n\r\nx\r\n.\r\nQUIT\r\n", NULL),
                          p);
    assert_non_null(strstr(codes(out, p), "|354 End d|250 2.0.0|250 2.1.0|250 2.1.5|354 End d|"
                                          "554 5.4.6|221 2.0.0"));
    assert_non_null(strstr(out, "554 5.4.6 Too many hops"));
    assert_int_equal(inbox_count(f, "alice@example.test", p), before + 1);
    apr_pool_destroy(p);
}

static int kicks;
static char kicked[256];
static void fake_kick(void *ctx, const char *domain)
{
    (void)ctx;
    kicks++;
    snprintf(kicked, sizeof(kicked), "%s", domain ? domain : "(null)");
}

/* ETRN: only for relay networks and authenticated users; 250 with the
 * queue kicked for the domain when mail waits, 251 when none does. */
static void test_etrn(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    /* no queue running */
    const char *out = run(f, SMTP_SERVICE_MX, "EHLO a\r\nETRN remote.test\r\nQUIT\r\n", p);
    assert_non_null(strstr(codes(out, p), "|459 4.7.1|221 2.0.0"));
    pr_cidr_t nets[1];
    assert_int_equal(pr_cidr_parse(&nets[0], "127.0.0.0/8"), APR_SUCCESS);
    f->cfg.smtp.relay_networks.n = 1;
    f->cfg.smtp.relay_networks.v = nets;
    out = run(f, SMTP_SERVICE_MX, "EHLO a\r\nETRN remote.test\r\nQUIT\r\n", p);
    assert_non_null(strstr(codes(out, p), "|458 4.3.0|221 2.0.0"));

    smtp_server_set_queue(f->srv, fake_kick, NULL);
    /* mail for remote.test is queued (test_dsn_queued); none for empty.test */
    out = run(f, SMTP_SERVICE_MX,
              "ETRN remote.test\r\nEHLO a\r\nETRN Remote.Test\r\nETRN @remote.test\r\n"
              "ETRN empty.test\r\nETRN #queue\r\nETRN bad..name\r\nETRN\r\n"
              "MAIL FROM:<x@y.test>\r\nETRN remote.test\r\nQUIT\r\n",
              p);
    assert_non_null(strstr(codes(out, p), "|503 5.5.1|250-mx.ex|"));
    assert_non_null(strstr(codes(out, p), "|250 2.0.0|250 2.0.0|251 2.0.0|458 4.3.0|501 5.5.4|"
                                          "501 5.5.4|250 2.1.0|503 5.5.1|221 2.0.0"));
    assert_non_null(strstr(out, "250 2.0.0 Queuing for node remote.test started\r\n"));
    assert_non_null(strstr(out, "251 2.0.0 No messages waiting for node empty.test\r\n"));
    assert_int_equal(kicks, 2);
    assert_string_equal(kicked, "remote.test");
    /* from elsewhere: refused, authenticated: allowed */
    out = run_from(f, SMTP_SERVICE_MX, "192.0.2.1", "EHLO a\r\nETRN remote.test\r\nQUIT\r\n", p);
    assert_non_null(strstr(out, "459 4.7.1 Node remote.test not allowed"));
    f->cfg.smtp.allow_plaintext_auth = 1;
    out = run_from(f, SMTP_SERVICE_SUBMISSION, "192.0.2.1",
                   "EHLO a\r\nAUTH PLAIN " ALICE_PLAIN "\r\nETRN remote.test\r\nQUIT\r\n", p);
    f->cfg.smtp.allow_plaintext_auth = 0;
    assert_non_null(strstr(codes(out, p), "|235 2.7.0|250 2.0.0|221 2.0.0"));
    assert_int_equal(kicks, 3);
    smtp_server_set_queue(f->srv, NULL, NULL);
    f->cfg.smtp.relay_networks.n = 0;
    f->cfg.smtp.relay_networks.v = NULL;
    apr_pool_destroy(p);
}

/* [outbound] max_recipients_per_day counts an authenticated user's remote
 * recipients; over it RCPT gets 450 4.7.1; what a transaction did not
 * send is not counted; local recipients and other users are not limited. */
static void test_daily_limit(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    assert_int_equal(dir_user_add(f->dir, "teacher@example.test", "teacher-pw-1"), APR_SUCCESS);
    f->cfg.smtp.allow_plaintext_auth = 1;
    f->cfg.outbound.max_recipients_per_day = 3;
    const char *out = run(f, SMTP_SERVICE_SUBMISSION,
                          "EHLO a\r\nAUTH PLAIN " TEACHER_PLAIN "\r\n"
                          "MAIL FROM:<teacher@example.test>\r\n"
                          "RCPT TO:<l1@limit.test>\r\nRCPT TO:<l2@limit.test>\r\nRSET\r\n"
                          "MAIL FROM:<teacher@example.test>\r\n"
                          "RCPT TO:<l1@limit.test>\r\nRCPT TO:<l2@limit.test>\r\n"
                          "RCPT TO:<l2@LIMIT.test>\r\nRCPT TO:<l3@limit.test>\r\n"
                          "RCPT TO:<l4@limit.test>\r\n"
                          "DATA\r\n\r\nx\r\n.\r\nQUIT\r\n",
                          p);
    assert_non_null(strstr(codes(out, p), "|250 2.1.5|250 2.1.5|250 2.0.0|250 2.1.0|250 2.1.5|"
                                          "250 2.1.5|250 2.1.5|250 2.1.5|450 4.7.1|354 End d|"
                                          "250 2.0.0|221 2.0.0"));
    assert_non_null(strstr(out, "450 4.7.1 <l4@limit.test>: Daily limit"));
    out = run(f, SMTP_SERVICE_SUBMISSION,
              "EHLO a\r\nAUTH PLAIN " TEACHER_PLAIN "\r\nMAIL FROM:<teacher@example.test>\r\n"
              "RCPT TO:<l5@limit.test>\r\nRCPT TO:<alice@example.test>\r\nQUIT\r\n",
              p);
    assert_non_null(strstr(codes(out, p), "|250 2.1.0|450 4.7.1|250 2.1.5|221 2.0.0"));
    /* another user has his own count */
    out = run(f, SMTP_SERVICE_SUBMISSION,
              "EHLO a\r\nAUTH PLAIN AGJvYkBleGFtcGxlLnRlc3QAYm9iLXB3LTE=\r\n"
              "MAIL FROM:<bob@example.test>\r\nRCPT TO:<l5@limit.test>\r\nQUIT\r\n",
              p);
    assert_non_null(strstr(codes(out, p), "|235 2.7.0|250 2.1.0|250 2.1.5|221 2.0.0"));
    /* 0: no limit */
    f->cfg.outbound.max_recipients_per_day = 0;
    out = run(f, SMTP_SERVICE_SUBMISSION,
              "EHLO a\r\nAUTH PLAIN " TEACHER_PLAIN "\r\nMAIL FROM:<teacher@example.test>\r\n"
              "RCPT TO:<l5@limit.test>\r\nQUIT\r\n",
              p);
    assert_non_null(strstr(codes(out, p), "|250 2.1.0|250 2.1.5|221 2.0.0"));
    f->cfg.outbound.max_recipients_per_day = 1000;
    f->cfg.smtp.allow_plaintext_auth = 0;
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
        cmocka_unit_test(test_dsn_queued),
        cmocka_unit_test(test_dsn_local_success),
        cmocka_unit_test(test_mail_loop),
        cmocka_unit_test(test_etrn),
        cmocka_unit_test(test_daily_limit),
        cmocka_unit_test(test_starttls_pipelined_input_discarded),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    apr_terminate();
    return rc;
}
