/* Mailbox quotas in the SMTP session, driven over a memory connection with
 * the real store and directory: 452 4.2.2 when a mailbox is full, 552 5.2.2
 * when a message can never fit (SIZE= at RCPT, the real size at the end of
 * DATA and BDAT), per-user limits and unlimited users, lists with some or
 * all members full, and one reply for several recipients at end of data. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <apr_file_info.h>
#include <apr_file_io.h>
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
    const char *dir;
    store_t *store;
    dir_t *dir_h;
    pr_tls_t *tls;
    smtp_server_t *srv;
} fixture_t;

static void rm_rf(const char *path, apr_pool_t *p)
{
    apr_dir_t *d;
    apr_finfo_t fi;
    if (apr_dir_open(&d, path, p) != APR_SUCCESS) return;
    while (apr_dir_read(&fi, APR_FINFO_NAME | APR_FINFO_TYPE, d) == APR_SUCCESS) {
        if (!strcmp(fi.name, ".") || !strcmp(fi.name, "..")) continue;
        const char *child = apr_pstrcat(p, path, "/", fi.name, NULL);
        if (fi.filetype == APR_DIR)
            rm_rf(child, p);
        else
            apr_file_remove(child, p);
    }
    apr_dir_close(d);
    apr_dir_remove(path, p);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    const char *err = NULL;
    apr_pool_create(&f->pool, NULL);
    const char *tmp = getenv("PR_TEST_TMP") ? getenv("PR_TEST_TMP") : "/tmp";
    apr_dir_make_recursive(tmp, APR_FPROT_OS_DEFAULT, f->pool);
    char *dir = apr_psprintf(f->pool, "%s/smtp-quota-XXXXXX", tmp);
    assert_non_null(mkdtemp(dir));
    f->dir = dir;
    pr_config_defaults(&f->cfg, f->pool);
    f->cfg.server.data_dir = dir;
    f->cfg.server.hostname = "mx.example.test";
    static const char *domains[] = {"example.test"};
    f->cfg.server.domains.n = 1;
    f->cfg.server.domains.v = domains;
    f->cfg.smtp.relay_networks.n = 0;
    f->cfg.smtp.max_errors = 50;
    store_options_t so = {0};
    so.data_dir = dir;
    assert_int_equal(store_open(&f->store, &so, f->pool), APR_SUCCESS);
    assert_int_equal(dir_open(&f->dir_h, &f->cfg, f->pool), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->dir_h, "alice@example.test", "alice-pw-1"), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->dir_h, "bob@example.test", "bob-pw-1"), APR_SUCCESS);
    assert_int_equal(dir_list_add(f->dir_h, "staff@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->dir_h, "staff@example.test", "alice@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->dir_h, "staff@example.test", "bob@example.test"),
                     APR_SUCCESS);
    assert_int_equal(pr_tls_create(&f->tls, &f->cfg, &err, f->pool), APR_SUCCESS);
    pr_penalty_t *penalty;
    assert_int_equal(pr_penalty_create(&penalty, f->pool), APR_SUCCESS);
    assert_int_equal(
        smtp_server_create(&f->srv, &f->cfg, f->dir_h, f->store, f->tls, penalty, f->pool),
        APR_SUCCESS);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    store_close(f->store);
    dir_close(f->dir_h);
    pr_tls_destroy(f->tls);
    apr_pool_create(&p, NULL);
    const char *dir = apr_pstrdup(p, f->dir);
    apr_pool_destroy(f->pool);
    rm_rf(dir, p);
    apr_pool_destroy(p);
    free(f);
    return 0;
}

/* Run one MX session over script; the reply codes ("250 2.1.5"), '|'-joined. */
static const char *run(fixture_t *f, const char *script, apr_pool_t *pool)
{
    pr_session_t s = {0};
    s.sid = "TEST";
    s.pool = pool;
    s.peer_ip = "127.0.0.1";
    s.local_ip = "127.0.0.1";
    s.local_port = 25;
    s.service = smtp_server_service(f->srv, SMTP_SERVICE_MX);
    assert_int_equal(pr_conn_create_memory(&s.conn, script, strlen(script), pool), APR_SUCCESS);
    smtp_session_run(&s);
    const char *out = pr_conn_memory_output(s.conn, NULL);
    const char *res = "";
    for (const char *p = out; *p;) {
        const char *e = strstr(p, "\r\n");
        if (!e) break;
        res = apr_pstrcat(pool, res, *res ? "|" : "", apr_pstrndup(pool, p, 9), NULL);
        p = e + 2;
    }
    return res;
}

static apr_off_t usage(fixture_t *f, const char *user, apr_uint32_t *n_r, apr_pool_t *p)
{
    store_reader_t *r;
    apr_uint32_t n;
    apr_off_t bytes;
    assert_int_equal(store_reader_open(&r, f->store, p), APR_SUCCESS);
    assert_int_equal(store_user_usage(r, user, &n, &bytes), APR_SUCCESS);
    if (n_r) *n_r = n;
    return bytes;
}

static apr_uint32_t count(fixture_t *f, const char *user, apr_pool_t *p)
{
    apr_uint32_t n;
    usage(f, user, &n, p);
    return n;
}

/* A message of exactly n body octets (header, blank line, filler, CRLF). */
static const char *body(apr_size_t n, apr_pool_t *p)
{
    const char *head = "Subject: q\r\n\r\n";
    apr_size_t fill = n - strlen(head) - 2;
    char *b = apr_palloc(p, n + 1);
    memcpy(b, head, strlen(head));
    memset(b + strlen(head), 'x', fill);
    memcpy(b + strlen(head) + fill, "\r\n", 3);
    return b;
}

/* One transaction: MAIL (with mail_params), the RCPTs, DATA with a body of
 * n octets. */
static const char *send_msg(fixture_t *f, const char *mail_params, const char *rcpts, apr_size_t n,
                            apr_pool_t *p)
{
    return run(f,
               apr_pstrcat(p, "EHLO a.test\r\nMAIL FROM:<x@y.test>", mail_params, "\r\n", rcpts,
                           "DATA\r\n", body(n, p), ".\r\nQUIT\r\n", NULL),
               p);
}

static void test_under_quota_delivered(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    f->cfg.store.default_quota = 20 * 1024;
    const char *c = send_msg(f, "", "RCPT TO:<alice@example.test>\r\n", 1000, p);
    assert_non_null(strstr(c, "|250 2.1.5|354 End d|250 2.0.0|221"));
    assert_int_equal(count(f, "alice@example.test", p), 1);
    /* the total counts the stored copy: trace prefix + body */
    assert_true(usage(f, "alice@example.test", NULL, p) > 1000);
    apr_pool_destroy(p);
}

static void test_too_big_never_fits(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    f->cfg.store.default_quota = 4000;

    /* SIZE= over the quota: refused at RCPT, permanently */
    const char *c = send_msg(f, " SIZE=5000", "RCPT TO:<alice@example.test>\r\n", 1000, p);
    assert_non_null(strstr(c, "|250 2.1.0|552 5.2.2|554 5.5.1|"));
    /* no SIZE=: accepted at RCPT, refused at the end of DATA, nothing stored */
    c = send_msg(f, "", "RCPT TO:<alice@example.test>\r\n", 5000, p);
    assert_non_null(strstr(c, "|250 2.1.5|354 End d|552 5.2.2|221"));
    /* the same over BDAT */
    const char *b = body(5000, p);
    c = run(f,
            apr_psprintf(p,
                         "EHLO a.test\r\nMAIL FROM:<x@y.test>\r\nRCPT TO:<alice@example.test>\r\n"
                         "BDAT %" APR_SIZE_T_FMT " LAST\r\n%sQUIT\r\n",
                         strlen(b), b),
            p);
    assert_non_null(strstr(c, "|250 2.1.5|552 5.2.2|221"));
    assert_int_equal(count(f, "alice@example.test", p), 0);

    /* a user's own limit wins over the default; 0 is unlimited */
    assert_int_equal(dir_user_set_quota(f->dir_h, "alice@example.test", 0), APR_SUCCESS);
    c = send_msg(f, " SIZE=5000", "RCPT TO:<alice@example.test>\r\n", 5000, p);
    assert_non_null(strstr(c, "|250 2.1.5|354 End d|250 2.0.0|"));
    assert_int_equal(dir_user_set_quota(f->dir_h, "alice@example.test", 100 * 1024), APR_SUCCESS);
    f->cfg.store.default_quota = 10;
    c = send_msg(f, " SIZE=5000", "RCPT TO:<alice@example.test>\r\n", 5000, p);
    assert_non_null(strstr(c, "|250 2.1.5|354 End d|250 2.0.0|"));
    assert_int_equal(count(f, "alice@example.test", p), 2);
    apr_pool_destroy(p);
}

static void test_full_mailbox(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    const char *c = send_msg(f, "", "RCPT TO:<alice@example.test>\r\n", 500, p);
    assert_non_null(strstr(c, "|250 2.0.0|"));
    apr_off_t used = usage(f, "alice@example.test", NULL, p);

    /* usage reached the limit: every new message is refused for now */
    assert_int_equal(dir_user_set_quota(f->dir_h, "alice@example.test", used), APR_SUCCESS);
    c = send_msg(f, "", "RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n", 300, p);
    assert_non_null(strstr(c, "|250 2.1.0|452 4.2.2|250 2.1.5|354 End d|250 2.0.0|"));
    assert_int_equal(count(f, "alice@example.test", p), 1);
    assert_int_equal(count(f, "bob@example.test", p), 1);

    /* room for 100 more octets: a 300-octet message does not fit now */
    assert_int_equal(dir_user_set_quota(f->dir_h, "alice@example.test", used + 100), APR_SUCCESS);
    c = send_msg(f, " SIZE=300", "RCPT TO:<alice@example.test>\r\n", 300, p); /* at RCPT */
    assert_non_null(strstr(c, "|250 2.1.0|452 4.2.2|554 5.5.1|"));
    c = send_msg(f, "", "RCPT TO:<alice@example.test>\r\n", 300, p); /* at end of data */
    assert_non_null(strstr(c, "|250 2.1.5|354 End d|452 4.2.2|221"));
    assert_int_equal(count(f, "alice@example.test", p), 1);

    /* space given back by an expunge is usable at once */
    apr_uint32_t uid = 1;
    assert_int_equal(store_messages_expunge(f->store, "alice@example.test", NULL, &uid, 1),
                     APR_SUCCESS);
    c = send_msg(f, " SIZE=300", "RCPT TO:<alice@example.test>\r\n", 300, p);
    assert_non_null(strstr(c, "|250 2.1.5|354 End d|250 2.0.0|"));
    apr_pool_destroy(p);
}

static void test_list_members(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    const char *c = send_msg(f, "", "RCPT TO:<staff@example.test>\r\n", 200, p);
    assert_non_null(strstr(c, "|250 2.0.0|"));
    assert_int_equal(dir_user_set_quota(f->dir_h, "alice@example.test", 1), APR_SUCCESS);

    /* one member full: the list is accepted and both get their copy
     * (alice's is a logged overshoot) */
    c = send_msg(f, "", "RCPT TO:<staff@example.test>\r\n", 200, p);
    assert_non_null(strstr(c, "|250 2.1.5|354 End d|250 2.0.0|"));
    assert_int_equal(count(f, "alice@example.test", p), 2);
    assert_int_equal(count(f, "bob@example.test", p), 2);
    /* but alice alone is refused */
    c = send_msg(f, "", "RCPT TO:<alice@example.test>\r\n", 200, p);
    assert_non_null(strstr(c, "|250 2.1.0|452 4.2.2|554 5.5.1|"));

    /* every member full: the list recipient is refused */
    apr_off_t used = usage(f, "bob@example.test", NULL, p);
    assert_int_equal(dir_user_set_quota(f->dir_h, "bob@example.test", used), APR_SUCCESS);
    c = send_msg(f, "", "RCPT TO:<staff@example.test>\r\n", 200, p);
    assert_non_null(strstr(c, "|250 2.1.0|452 4.2.2|554 5.5.1|"));
    /* larger than every member's quota: permanent */
    assert_int_equal(dir_user_set_quota(f->dir_h, "alice@example.test", 100), APR_SUCCESS);
    assert_int_equal(dir_user_set_quota(f->dir_h, "bob@example.test", 100), APR_SUCCESS);
    c = send_msg(f, " SIZE=200", "RCPT TO:<staff@example.test>\r\n", 200, p);
    assert_non_null(strstr(c, "|250 2.1.0|552 5.2.2|554 5.5.1|"));
    assert_int_equal(count(f, "alice@example.test", p), 2);
    assert_int_equal(count(f, "bob@example.test", p), 2);
    apr_pool_destroy(p);
}

/* At end of data there is one reply for all recipients. (Copies are the
 * body plus a trace prefix of about 170 octets.) */
static void test_end_of_data_one_reply(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    const char *both = "RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n";

    /* only some would go over (bob's quota is smaller than the message):
     * delivered to all, bob's copy an overshoot */
    assert_int_equal(dir_user_set_quota(f->dir_h, "alice@example.test", 3000), APR_SUCCESS);
    assert_int_equal(dir_user_set_quota(f->dir_h, "bob@example.test", 1000), APR_SUCCESS);
    const char *c = send_msg(f, "", both, 2000, p);
    assert_non_null(strstr(c, "|250 2.1.5|250 2.1.5|354 End d|250 2.0.0|"));
    assert_int_equal(count(f, "alice@example.test", p), 1);
    assert_int_equal(count(f, "bob@example.test", p), 1);

    /* bob is full now (refused at RCPT); alice has room at RCPT but not
     * for this message: 452 at the end, nothing stored */
    c = send_msg(f, "", both, 1500, p);
    assert_non_null(strstr(c, "|250 2.1.5|452 4.2.2|354 End d|452 4.2.2|221"));

    /* every copy larger than its mailbox's quota: 552 */
    assert_int_equal(dir_user_set_quota(f->dir_h, "alice@example.test", 10000), APR_SUCCESS);
    assert_int_equal(dir_user_set_quota(f->dir_h, "bob@example.test", 10000), APR_SUCCESS);
    c = send_msg(f, "", both, 12000, p);
    assert_non_null(strstr(c, "|250 2.1.5|250 2.1.5|354 End d|552 5.2.2|221"));

    /* larger than alice's quota, no room for now at bob's: 452, since bob
     * may take it later */
    assert_int_equal(dir_user_set_quota(f->dir_h, "bob@example.test", 14000), APR_SUCCESS);
    c = send_msg(f, "", both, 12000, p);
    assert_non_null(strstr(c, "|250 2.1.5|250 2.1.5|354 End d|452 4.2.2|221"));
    assert_int_equal(count(f, "alice@example.test", p), 1);
    assert_int_equal(count(f, "bob@example.test", p), 1);

    /* one unlimited, the other with room: delivered */
    assert_int_equal(dir_user_set_quota(f->dir_h, "alice@example.test", 0), APR_SUCCESS);
    assert_int_equal(dir_user_set_quota(f->dir_h, "bob@example.test", 20000), APR_SUCCESS);
    c = send_msg(f, "", both, 12000, p);
    assert_non_null(strstr(c, "|250 2.1.5|250 2.1.5|354 End d|250 2.0.0|221"));
    assert_int_equal(count(f, "alice@example.test", p), 2);
    assert_int_equal(count(f, "bob@example.test", p), 2);
    apr_pool_destroy(p);
}

int main(void)
{
    apr_initialize();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_under_quota_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big_never_fits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_mailbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_members, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_of_data_one_reply, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_terminate();
    return rc;
}
