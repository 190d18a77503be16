/* The POP2 session (RFC 937) driven without a socket: a memory connection
 * carries a scripted client, the real store and directory sit behind it.
 * Checks the exact bytes a client sees (sizes, unstuffed message octets,
 * replies) and what is left in the store afterwards. */
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
#include "service/pop3/pop3.h"
#include "service/pop3/pop3_int.h"
#include "service/store/store.h"

#define GREETING "+ POP2 mail.example.test server ready\r\n"
#define LOGIN "HELO alice@example.test alice pw 1\r\n" /* the password has spaces */

typedef struct fixture_t {
    apr_pool_t *pool;
    pr_config_t cfg;
    store_t *store;
    dir_t *dir;
    pr_tls_t *tls;
    pop3_server_t *srv;
    const char *msg[4]; /* msg[i]: the stored octets of alice's message i (1..3) */
    apr_size_t len[4];  /* and their sizes */
} fixture_t;

static fixture_t *cur_f; /* the fixture of the running test, for want_size */

static const char *const PREFIX = "Return-Path: <x@y.test>\r\n";

static apr_uint32_t deliver(fixture_t *f, const char *user, const char *body, apr_size_t len)
{
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    store_body_t *b;
    assert_int_equal(store_body_create(&b, f->store, p), APR_SUCCESS);
    assert_int_equal(store_body_append(b, body, len), APR_SUCCESS);
    store_local_rcpt_t r = {.user = user, .prefix = PREFIX, .prefix_len = strlen(PREFIX)};
    store_delivery_t d = {.sender = "x@y.test", .body = b, .n_local = 1, .local = &r};
    apr_array_header_t *uids;
    assert_int_equal(store_deliver(f->store, &d, &uids, p), APR_SUCCESS);
    apr_uint32_t uid = APR_ARRAY_IDX(uids, 0, apr_uint32_t);
    apr_pool_destroy(p);
    return uid;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    const char *err = NULL;
    apr_pool_create(&f->pool, NULL);
    const char *tmp = getenv("PR_TEST_TMP") ? getenv("PR_TEST_TMP") : "/tmp";
    apr_dir_make_recursive(tmp, APR_FPROT_OS_DEFAULT, f->pool);
    char *dir = apr_psprintf(f->pool, "%s/pop2-session-XXXXXX", tmp);
    assert_non_null(mkdtemp(dir));
    pr_config_defaults(&f->cfg, f->pool);
    f->cfg.server.data_dir = dir;
    f->cfg.server.hostname = "mail.example.test";
    static const char *domains[] = {"example.test"};
    f->cfg.server.domains.n = 1;
    f->cfg.server.domains.v = domains;
    store_options_t so = {0};
    so.data_dir = dir;
    assert_int_equal(store_open(&f->store, &so, f->pool), APR_SUCCESS);
    assert_int_equal(dir_open(&f->dir, &f->cfg, f->pool), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->dir, "alice@example.test", "alice pw 1"), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->dir, "bob@example.test", "bob-pw-2"), APR_SUCCESS);
    assert_int_equal(pr_tls_create(&f->tls, &f->cfg, &err, f->pool), APR_SUCCESS);
    pr_penalty_t *penalty;
    assert_int_equal(pr_penalty_create(&penalty, f->pool), APR_SUCCESS);
    assert_int_equal(
        pop3_server_create(&f->srv, &f->cfg, f->dir, f->store, f->tls, penalty, f->pool),
        APR_SUCCESS);

    /* Three messages whose content looks like POP2 and POP3 protocol: POP2
     * sends octets, so none of it may be stuffed, terminated or mistaken. */
    static const char m1[] = "Subject: one\r\n\r\n.\r\n..two dots\r\n=12\r\n#3\r\n+ OK\r\n";
    static const char m2[] = "Subject: two\r\n\r\n\x80\xff 8-bit\r\nbare\nLF and a NUL \0 here\r\n";
    deliver(f, "alice@example.test", m1, sizeof(m1) - 1);
    deliver(f, "alice@example.test", m2, sizeof(m2) - 1);
    /* A third larger than any I/O buffer. */
    apr_size_t n3 = 100000;
    char *m3 = apr_palloc(f->pool, n3);
    memcpy(m3, "Subject: three\r\n\r\n", 18);
    for (apr_size_t i = 18; i < n3; i++)
        m3[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : (char)('a' + i % 26);
    deliver(f, "alice@example.test", m3, n3);
    f->msg[1] = apr_pstrcat(f->pool, PREFIX, m1, NULL);
    f->len[1] = strlen(PREFIX) + sizeof(m1) - 1;
    f->len[2] = strlen(PREFIX) + sizeof(m2) - 1;
    f->len[3] = strlen(PREFIX) + n3;
    char *b2 = apr_palloc(f->pool, strlen(PREFIX) + sizeof(m2));
    memcpy(b2, PREFIX, strlen(PREFIX));
    memcpy(b2 + strlen(PREFIX), m2, sizeof(m2));
    f->msg[2] = b2;
    char *b3 = apr_palloc(f->pool, strlen(PREFIX) + n3 + 1);
    memcpy(b3, PREFIX, strlen(PREFIX));
    memcpy(b3 + strlen(PREFIX), m3, n3);
    b3[strlen(PREFIX) + n3] = '\0';
    f->msg[3] = b3;
    cur_f = f;
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

/* A growing expected transcript (binary-safe). */
typedef struct want_t {
    apr_pool_t *pool;
    char *buf;
    apr_size_t len;
} want_t;

static void want_add(want_t *w, const char *data, apr_size_t len)
{
    char *nb = apr_palloc(w->pool, w->len + len + 1);
    if (w->len) memcpy(nb, w->buf, w->len);
    memcpy(nb + w->len, data, len);
    w->len += len;
    nb[w->len] = '\0';
    w->buf = nb;
}

static void want_str(want_t *w, const char *s)
{
    want_add(w, s, strlen(s));
}

static void want_size(want_t *w, int i)
{
    want_str(w, apr_psprintf(w->pool, "=%lu\r\n", (unsigned long)(i ? cur_f->len[i] : 0)));
}

static void want_msg(want_t *w, fixture_t *f, int i)
{
    want_add(w, f->msg[i], f->len[i]);
}

/* Run one session over `script` from `ip`; returns what the server wrote. */
static const char *run_from(fixture_t *f, const char *ip, const char *script, apr_size_t slen,
                            apr_size_t *len_r, apr_pool_t *pool)
{
    pr_session_t s = {0};
    s.sid = "TEST";
    s.pool = pool;
    s.peer_ip = ip;
    s.local_ip = "127.0.0.1";
    s.local_port = 109;
    s.service = pop3_server_service(f->srv, POP3_SERVICE_POP2);
    assert_int_equal(pr_conn_create_memory(&s.conn, script, slen, pool), APR_SUCCESS);
    pop2_session_run(&s);
    return pr_conn_memory_output(s.conn, len_r);
}

static void check_n(fixture_t *f, const char *script, apr_size_t slen, const want_t *w)
{
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    apr_size_t len;
    const char *out = run_from(f, "127.0.0.1", script, slen, &len, p);
    if (len != w->len || memcmp(out, w->buf, len) != 0) {
        print_error("script:\n%s\nwant (%lu octets):\n%.2000s\ngot (%lu octets):\n%.2000s\n",
                    script, (unsigned long)w->len, w->buf, (unsigned long)len, out);
        fail();
    }
    apr_pool_destroy(p);
}

static void check(fixture_t *f, const char *script, const want_t *w)
{
    check_n(f, script, strlen(script), w);
}

static int inbox_count(fixture_t *f, const char *user)
{
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    store_reader_t *r;
    apr_array_header_t *folders;
    assert_int_equal(store_reader_open(&r, f->store, p), APR_SUCCESS);
    assert_int_equal(store_folders_list(r, user, &folders, p), APR_SUCCESS);
    int n = folders->nelts ? (int)APR_ARRAY_IDX(folders, 0, store_folder_info_t).messages : 0;
    apr_pool_destroy(p);
    return n;
}

static void want_init(want_t *w, fixture_t *f)
{
    memset(w, 0, sizeof(*w));
    w->pool = f->pool;
    want_str(w, GREETING);
}

/* ---- tests */

static void test_login_and_quit(void **state)
{
    fixture_t *f = *state;
    want_t w;
    want_init(&w, f);
    want_str(&w, "#3\r\n+ OK\r\n");
    check(f, LOGIN "QUIT\r\n", &w);
    /* Verbs in any case; the login's address too. */
    check(f, "helo ALICE@Example.Test alice pw 1\r\nquit\r\n", &w);
    /* A user who never had mail has an empty maildrop. */
    want_init(&w, f);
    want_str(&w, "#0\r\n=0\r\n- No message to retrieve\r\n+ OK\r\n");
    check(f, "HELO bob@example.test bob-pw-2\r\nREAD\r\nRETR\r\nQUIT\r\n", &w);
    /* QUIT before HELO. */
    want_init(&w, f);
    want_str(&w, "+ OK\r\n");
    check(f, "QUIT\r\n", &w);
    assert_int_equal(inbox_count(f, "alice@example.test"), 3);
}

static void test_read_retr_exact_octets(void **state)
{
    fixture_t *f = *state;
    want_t w;
    want_init(&w, f);
    want_str(&w, "#3\r\n");
    want_size(&w, 1);
    want_msg(&w, f, 1);
    want_size(&w, 2); /* ACKS: the next message's size */
    want_msg(&w, f, 2);
    want_size(&w, 3);
    want_msg(&w, f, 3);
    want_size(&w, 0); /* no more */
    want_size(&w, 2); /* READ 2 */
    want_msg(&w, f, 2);
    want_size(&w, 3);
    want_size(&w, 0); /* READ 9 */
    want_str(&w, "- No message to retrieve\r\n");
    want_size(&w, 1); /* READ 1 */
    want_size(&w, 1); /* READ: the current one again */
    want_str(&w, "+ OK\r\n");
    check(f,
          LOGIN "READ\r\nRETR\r\nACKS\r\nRETR\r\nACKS\r\nRETR\r\nACKS\r\n"
                "READ 2\r\nRETR\r\nACKS\r\nREAD 9\r\nRETR\r\nREAD 1\r\nREAD\r\nQUIT\r\n",
          &w);
    assert_int_equal(inbox_count(f, "alice@example.test"), 3);
}

static void test_ackd_committed_at_quit(void **state)
{
    fixture_t *f = *state;
    want_t w;
    want_init(&w, f);
    want_str(&w, "#3\r\n");
    want_size(&w, 1);
    want_msg(&w, f, 1);
    want_size(&w, 2); /* ACKD 1 */
    want_msg(&w, f, 2);
    want_size(&w, 3); /* ACKS 2 */
    want_msg(&w, f, 3);
    want_size(&w, 0); /* ACKD 3: none left */
    want_size(&w, 0); /* READ 1: deleted in this session */
    want_str(&w, "+ OK\r\n");
    check(f, LOGIN "READ\r\nRETR\r\nACKD\r\nRETR\r\nACKS\r\nRETR\r\nACKD\r\nREAD 1\r\nQUIT\r\n",
          &w);
    assert_int_equal(inbox_count(f, "alice@example.test"), 1);

    /* The next session sees only message 2, renumbered as 1. */
    want_init(&w, f);
    want_str(&w, "#1\r\n");
    want_size(&w, 2);
    want_msg(&w, f, 2);
    want_size(&w, 0);
    want_str(&w, "+ OK\r\n");
    check(f, LOGIN "READ\r\nRETR\r\nACKD\r\nQUIT\r\n", &w);
    assert_int_equal(inbox_count(f, "alice@example.test"), 0);
}

static void test_ackd_skips_deleted(void **state)
{
    fixture_t *f = *state;
    want_t w;
    want_init(&w, f);
    want_str(&w, "#3\r\n");
    want_size(&w, 2); /* READ 2 */
    want_msg(&w, f, 2);
    want_size(&w, 3); /* ACKD 2 */
    want_size(&w, 1); /* READ 1 */
    want_msg(&w, f, 1);
    want_size(&w, 3); /* ACKS 1: message 2 is gone, so 3 is next */
    want_str(&w, "+ OK\r\n");
    check(f, LOGIN "READ 2\r\nRETR\r\nACKD\r\nREAD 1\r\nRETR\r\nACKS\r\nQUIT\r\n", &w);
    assert_int_equal(inbox_count(f, "alice@example.test"), 2);
}

static void test_nack(void **state)
{
    fixture_t *f = *state;
    want_t w;
    want_init(&w, f);
    want_str(&w, "#3\r\n");
    want_size(&w, 2);
    want_msg(&w, f, 2);
    want_size(&w, 2); /* NACK: the same message again */
    want_msg(&w, f, 2);
    want_size(&w, 3); /* ACKD */
    want_msg(&w, f, 3);
    want_str(&w, "+ OK\r\n"); /* QUIT while unacknowledged: kept */
    check(f, LOGIN "READ 2\r\nRETR\r\nNACK\r\nRETR\r\nACKD\r\nRETR\r\nQUIT\r\n", &w);
    assert_int_equal(inbox_count(f, "alice@example.test"), 2);
}

static void test_dropped_connection_deletes_nothing(void **state)
{
    fixture_t *f = *state;
    want_t w;
    want_init(&w, f);
    want_str(&w, "#3\r\n");
    want_size(&w, 1);
    want_msg(&w, f, 1);
    want_size(&w, 2);
    want_msg(&w, f, 2);
    want_size(&w, 3);
    check(f, LOGIN "READ\r\nRETR\r\nACKD\r\nRETR\r\nACKD\r\n", &w);
    assert_int_equal(inbox_count(f, "alice@example.test"), 3);
    /* The same, cut in the middle of a command line. */
    want_init(&w, f);
    want_str(&w, "#3\r\n");
    want_size(&w, 1);
    want_msg(&w, f, 1);
    check(f, LOGIN "READ\r\nRETR\r\nACKD", &w);
    assert_int_equal(inbox_count(f, "alice@example.test"), 3);
    /* And the lock went with the connection. */
    want_init(&w, f);
    want_str(&w, "#3\r\n+ OK\r\n");
    check(f, LOGIN "QUIT\r\n", &w);
}

static void test_bad_login(void **state)
{
    fixture_t *f = *state;
    want_t w;
    /* RFC 937: a failed HELO ends the session; nothing after it is read. */
    want_init(&w, f);
    want_str(&w, "- Invalid login or password\r\n");
    check(f, "HELO alice@example.test wrong\r\nREAD\r\nQUIT\r\n", &w);
    check(f, "HELO nobody@example.test alice pw 1\r\nQUIT\r\n", &w);
    /* A password that is only a prefix of the real one. */
    check(f, "HELO alice@example.test alice pw\r\nQUIT\r\n", &w);
    /* Syntax errors are not login attempts. */
    want_init(&w, f);
    want_str(&w, "- Syntax: HELO user password\r\n- Syntax: HELO user password\r\n#3\r\n+ OK\r\n");
    check(f, "HELO\r\nHELO alice@example.test\r\n" LOGIN "QUIT\r\n", &w);

    /* An address with too many recent failures is refused without asking
     * the directory, even with the right password; others are not. */
    for (int i = 0; i < PR_PENALTY_LIMIT; i++)
        pr_penalty_fail(f->srv->penalty, "127.0.0.77");
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    const char *out =
        run_from(f, "127.0.0.77", LOGIN "QUIT\r\n", strlen(LOGIN "QUIT\r\n"), NULL, p);
    assert_string_equal(out, GREETING "- Too many failed logins, try again later\r\n");
    want_init(&w, f);
    want_str(&w, "#3\r\n+ OK\r\n");
    check(f, LOGIN "QUIT\r\n", &w);
    apr_pool_destroy(p);
}

static void test_locked_maildrop(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    pop3_maildrop_t *m;
    assert_int_equal(pop3_maildrop_open(&m, f->srv, "alice@example.test", p), APR_SUCCESS);
    want_t w;
    want_init(&w, f);
    want_str(&w, "- Mailbox is locked by another session\r\n");
    check(f, LOGIN "READ\r\nQUIT\r\n", &w);
    pop3_maildrop_close(m);
    want_init(&w, f);
    want_str(&w, "#3\r\n+ OK\r\n");
    check(f, LOGIN "QUIT\r\n", &w);
    apr_pool_destroy(p);
}

static void test_sequence_and_folders(void **state)
{
    fixture_t *f = *state;
    want_t w;
    f->cfg.pop3.max_errors = 100;
    want_init(&w, f);
    want_str(&w, "- Send HELO user password first\r\n" /* READ */
                 "- Send HELO user password first\r\n" /* RETR */
                 "- Unknown command\r\n"               /* USER (POP3) */
                 "#3\r\n"
                 "- Send READ first\r\n"                             /* RETR in MBOX */
                 "- No message was sent: nothing to acknowledge\r\n" /* ACKD in MBOX */
                 "- Already logged in\r\n"                           /* HELO again */
                 "- Bad message number\r\n"
                 "- Bad message number\r\n"
                 "- Syntax: READ [message-number]\r\n");
    want_size(&w, 1);                                                  /* READ */
    want_str(&w, "- No message was sent: nothing to acknowledge\r\n"); /* ACKS in ITEM */
    want_msg(&w, f, 1);
    want_str(&w, "- Send ACKS, ACKD or NACK first\r\n"); /* READ in NEXT */
    want_size(&w, 2);                                    /* ACKD */
    want_str(&w, "#0\r\n");                              /* FOLD other */
    want_size(&w, 0);                                    /* READ */
    want_str(&w, "- No message to retrieve\r\n"
                 "- Syntax: FOLD mailbox\r\n"
                 "#3\r\n"); /* FOLD inbox */
    want_size(&w, 0);       /* READ: message 1, deleted */
    want_size(&w, 2);       /* READ 2 */
    want_str(&w, "+ OK\r\n");
    check(f,
          "READ\r\nRETR\r\nUSER alice\r\n" LOGIN
          "RETR\r\nACKD\r\nHELO alice@example.test x\r\nREAD 0\r\nREAD x1\r\nREAD 1 2\r\n"
          "READ\r\nACKS\r\nRETR\r\nREAD\r\nACKD\r\nFOLD Archive\r\nREAD\r\nRETR\r\nFOLD\r\n"
          "FOLD inbox\r\nREAD\r\nREAD 2\r\nQUIT\r\n",
          &w);
    assert_int_equal(inbox_count(f, "alice@example.test"), 2);
}

static void test_limits(void **state)
{
    fixture_t *f = *state;
    want_t w;
    /* 512 octets with CRLF pass; 513 do not, and the rest of that line is
     * skipped so the session stays in step. */
    char *ok = apr_psprintf(f->pool, "FOLD %0505d\r\n", 0);
    char *over = apr_psprintf(f->pool, "FOLD %05000d\r\n", 0);
    char *over1 = apr_psprintf(f->pool, "FOLD %0506d\r\n", 0);
    assert_int_equal(strlen(ok), 512);
    want_init(&w, f);
    want_str(&w, "#3\r\n#0\r\n- Line too long\r\n- Line too long\r\n#3\r\n+ OK\r\n");
    check(f, apr_pstrcat(f->pool, LOGIN, ok, over, over1, "FOLD INBOX\r\nQUIT\r\n", NULL), &w);

    /* After max_errors bad commands the client is cut off. */
    f->cfg.pop3.max_errors = 3;
    want_init(&w, f);
    want_str(&w, "- Unknown command\r\n- Unknown command\r\n- Send HELO user password first\r\n"
                 "- Too many errors\r\n");
    check(f, "XYZZY\r\n\r\nREAD\r\n" LOGIN "QUIT\r\n", &w);
    /* A NUL in a command line makes it a bad command, not a shorter one. */
    want_init(&w, f);
    want_str(&w, "#3\r\n- Unknown command\r\n- Unknown command\r\n- Unknown command\r\n"
                 "- Too many errors\r\n");
    static const char nul[] = LOGIN "QUIT\0junk\r\nSTAT\r\nLIST\r\nQUIT\r\n";
    check_n(f, nul, sizeof(nul) - 1, &w);
}

int main(void)
{
    apr_initialize();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_login_and_quit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_retr_exact_octets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ackd_committed_at_quit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ackd_skips_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dropped_connection_deletes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_login, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locked_maildrop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sequence_and_folders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_terminate();
    return rc;
}
