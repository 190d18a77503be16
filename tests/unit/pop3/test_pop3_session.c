/* The POP3 session driven without a socket: a memory connection carries a
 * scripted client, the real store and directory sit behind it. Checks the
 * exact bytes a client sees (octet counts, byte-stuffing, terminators),
 * what QUIT removes and what a dropped connection keeps, the maildrop
 * lock, logins and their refusals, and the error limits. */
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
#include "service/core/listener.h"
#include "service/core/penalty.h"
#include "service/core/status.h"
#include "service/core/tls.h"
#include "service/pop3/pop3.h"
#include "service/pop3/pop3_int.h"
#include "service/store/store.h"

#define HOST "pop.example.test"
#define ALICE "alice@example.test"
#define LOGIN_ALICE "USER alice@example.test\r\nPASS alice-pw-1\r\n"
#define GREETING "+OK " HOST " POP3 server ready\r\n"
#define PREFIX "Return-Path: <x@y.test>\r\n"

typedef struct fixture_t {
    apr_pool_t *pool;
    pr_config_t cfg;
    store_t *store;
    dir_t *dir;
    pr_tls_t *tls;
    pop3_server_t *srv;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    const char *err = NULL;
    apr_pool_create(&f->pool, NULL);
    const char *tmp = getenv("PR_TEST_TMP") ? getenv("PR_TEST_TMP") : "/tmp";
    apr_dir_make_recursive(tmp, APR_FPROT_OS_DEFAULT, f->pool);
    char *dir = apr_psprintf(f->pool, "%s/pop3-session-XXXXXX", tmp);
    assert_non_null(mkdtemp(dir));
    pr_config_defaults(&f->cfg, f->pool);
    f->cfg.server.data_dir = dir;
    f->cfg.server.hostname = HOST;
    static const char *domains[] = {"example.test"};
    f->cfg.server.domains.n = 1;
    f->cfg.server.domains.v = domains;
    /* A memory connection cannot do TLS: most tests log in in plaintext. */
    f->cfg.pop3.allow_plaintext_auth = 1;
    store_options_t so = {0};
    so.data_dir = dir;
    assert_int_equal(store_open(&f->store, &so, f->pool), APR_SUCCESS);
    assert_int_equal(dir_open(&f->dir, &f->cfg, f->pool), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->dir, ALICE, "alice-pw-1"), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->dir, "bob@example.test", "bob-pw-1"), APR_SUCCESS);
    /* Generating a certificate takes a while: the first test's serves all. */
    static char *cert, *key;
    if (cert) {
        f->cfg.tls.certificate = cert;
        f->cfg.tls.key = key;
    }
    assert_int_equal(pr_tls_create(&f->tls, &f->cfg, &err, f->pool), APR_SUCCESS);
    if (!cert) {
        cert = strdup(apr_psprintf(f->pool, "%s/tls/cert.pem", dir));
        key = strdup(apr_psprintf(f->pool, "%s/tls/key.pem", dir));
    }
    pr_penalty_t *penalty;
    assert_int_equal(pr_penalty_create(&penalty, f->pool), APR_SUCCESS);
    assert_int_equal(
        pop3_server_create(&f->srv, &f->cfg, f->dir, f->store, f->tls, penalty, f->pool),
        APR_SUCCESS);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    /* Every session released its lock. */
    assert_int_equal(apr_hash_count(f->srv->locked), 0);
    store_close(f->store);
    dir_close(f->dir);
    pr_tls_destroy(f->tls);
    apr_pool_destroy(f->pool);
    free(f);
    return 0;
}

static void session_init(pr_session_t *s, fixture_t *f, pop3_service_e kind, const char *peer,
                         apr_pool_t *pool)
{
    memset(s, 0, sizeof(*s));
    s->sid = "TEST";
    s->pool = pool;
    s->peer_ip = peer;
    s->local_ip = "127.0.0.1";
    s->local_port = kind == POP3_SERVICE_POP3S ? 995 : 110;
    s->service = pop3_server_service(f->srv, kind);
}

/* Run one session over script (len bytes) from peer; returns everything
 * the server wrote (*len_r its length). */
static const char *run_from(fixture_t *f, pop3_service_e kind, const char *peer, const char *script,
                            apr_size_t len, apr_size_t *len_r, apr_pool_t *pool)
{
    pr_session_t s;
    session_init(&s, f, kind, peer, pool);
    assert_int_equal(pr_conn_create_memory(&s.conn, script, len, pool), APR_SUCCESS);
    pop3_session_run(&s);
    return pr_conn_memory_output(s.conn, len_r);
}

static const char *run(fixture_t *f, const char *script, apr_pool_t *pool)
{
    return run_from(f, POP3_SERVICE_PLAIN, "127.0.0.1", script, strlen(script), NULL, pool);
}

/* The status of each reply line that starts with +OK or -ERR, up to the
 * first space or the end ("+OK", "-ERR [AUTH]" keeps its code), joined by
 * '|'. Multi-line bodies are skipped as long as they do not start so. */
static const char *statuses(const char *out, apr_pool_t *pool)
{
    const char *res = "";
    for (const char *p = out; *p;) {
        const char *e = strstr(p, "\r\n");
        if (!e) break;
        const char *word = NULL;
        if (strncmp(p, "+OK", 3) == 0)
            word = "+OK";
        else if (strncmp(p, "-ERR [", 6) == 0)
            word = apr_pstrndup(pool, p, (apr_size_t)(strchr(p, ']') - p) + 1);
        else if (strncmp(p, "-ERR", 4) == 0)
            word = "-ERR";
        if (word) res = apr_pstrcat(pool, res, *res ? "|" : "", word, NULL);
        p = e + 2;
    }
    return res;
}

/* The body of a delivered message is stored after PREFIX. */
static apr_uint32_t deliver(fixture_t *f, const char *user, const char *body, apr_size_t len)
{
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    store_body_t *b;
    assert_int_equal(store_body_create(&b, f->store, p), APR_SUCCESS);
    assert_int_equal(store_body_append(b, body, len), APR_SUCCESS);
    store_local_rcpt_t r = {.user = user, .prefix = PREFIX, .prefix_len = strlen(PREFIX)};
    store_delivery_t d = {0};
    d.sender = "x@y.test";
    d.body = b;
    d.n_local = 1;
    d.local = &r;
    apr_array_header_t *uids;
    assert_int_equal(store_deliver(f->store, &d, &uids, p), APR_SUCCESS);
    apr_uint32_t uid = APR_ARRAY_IDX(uids, 0, apr_uint32_t);
    apr_pool_destroy(p);
    return uid;
}

static apr_uint32_t uidvalidity(fixture_t *f, const char *user, apr_pool_t *pool)
{
    store_reader_t *r;
    store_folder_info_t info;
    apr_array_header_t *msgs;
    assert_int_equal(store_reader_open(&r, f->store, pool), APR_SUCCESS);
    assert_int_equal(store_messages_list(r, user, "INBOX", &info, &msgs, pool), APR_SUCCESS);
    return info.uidvalidity;
}

/* What RETR (lines < 0) or TOP must send for a stored message, computed
 * octet by octet: the reference the streaming code is checked against. */
static const char *expect_body(const char *msg, apr_size_t len, long lines, apr_size_t *len_r,
                               apr_pool_t *pool)
{
    apr_size_t cut = len;
    if (lines >= 0) {
        apr_size_t i = 0, line_start = 0;
        int in_body = 0;
        long left = lines;
        cut = len;
        for (i = 0; i < len; i++) {
            if (in_body && left == 0) {
                cut = i;
                break;
            }
            if (msg[i] != '\n') continue;
            if (in_body) {
                left--;
            } else {
                apr_size_t ll = i - line_start;
                if (ll == 0 || (ll == 1 && msg[line_start] == '\r')) in_body = 1;
            }
            line_start = i + 1;
        }
        if (i == len && in_body && left == 0) cut = len;
    }
    char *out = apr_palloc(pool, cut * 2 + 8), *o = out;
    for (apr_size_t i = 0; i < cut; i++) {
        if (msg[i] == '.' && (i == 0 || msg[i - 1] == '\n')) *o++ = '.';
        *o++ = msg[i];
    }
    if (cut > 0 && !(cut >= 2 && msg[cut - 2] == '\r' && msg[cut - 1] == '\n')) {
        *o++ = '\r';
        *o++ = '\n';
    }
    memcpy(o, ".\r\n", 3);
    o += 3;
    *o = '\0';
    *len_r = (apr_size_t)(o - out);
    return out;
}

static const char *full(const char *body, apr_pool_t *pool)
{
    return apr_pstrcat(pool, PREFIX, body, NULL);
}

/* ---- tests */

static void test_capa_and_login(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    const char *out = run(f, "capa\r\n" LOGIN_ALICE "CAPA\r\nQUIT\r\n", p);
    assert_string_equal(out,
                        GREETING "+OK Capability list follows\r\n"
                                 "TOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\n"
                                 "AUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\nEXPIRE NEVER\r\n"
                                 "IMPLEMENTATION Postroom\r\n.\r\n"
                                 "+OK Send PASS\r\n"
                                 "+OK Logged in, 0 messages (0 octets)\r\n"
                                 "+OK Capability list follows\r\n"
                                 "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
                                 "EXPIRE NEVER\r\nIMPLEMENTATION Postroom\r\n.\r\n"
                                 "+OK " HOST " POP3 server signing off (maildrop empty)\r\n");

    /* Without TLS and without allow_plaintext_auth: no USER/SASL offered,
     * and every way of sending a password is refused before it is sent. */
    f->cfg.pop3.allow_plaintext_auth = 0;
    out = run(f,
              "CAPA\r\n" LOGIN_ALICE "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wdy0x\r\n"
              "AUTH\r\nSTAT\r\nQUIT\r\n",
              p);
    assert_string_equal(out,
                        GREETING "+OK Capability list follows\r\n"
                                 "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
                                 "STLS\r\nEXPIRE NEVER\r\nIMPLEMENTATION Postroom\r\n.\r\n"
                                 "-ERR [AUTH] Plaintext authentication disallowed; use STLS\r\n"
                                 "-ERR [AUTH] Plaintext authentication disallowed; use STLS\r\n"
                                 "-ERR [AUTH] Plaintext authentication disallowed; use STLS\r\n"
                                 "-ERR [AUTH] Plaintext authentication disallowed; use STLS\r\n"
                                 "-ERR Not logged in\r\n"
                                 "+OK " HOST " POP3 server signing off\r\n");
    f->cfg.pop3.allow_plaintext_auth = 1;
    apr_pool_destroy(p);
}

static void test_login_failures_look_alike(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    const char *script = "USER nobody@example.test\r\nPASS alice-pw-1\r\n"
                         "USER alice@example.test\r\nPASS wrong\r\n"
                         "PASS alice-pw-1\r\n" /* USER is used up by a failed PASS */
                         "AUTH PLAIN AGJvYkBleGFtcGxlLnRlc3QAYm9iLXB3LTE=\r\n" /* bob's, fine */
                         "QUIT\r\n";
    const char *out = run_from(f, POP3_SERVICE_PLAIN, "127.0.0.3", script, strlen(script), NULL, p);
    const char *bad = "-ERR [AUTH] Invalid login or password\r\n";
    const char *a = strstr(out, bad);
    assert_non_null(a);
    const char *b = strstr(a + strlen(bad), bad);
    assert_non_null(b);
    assert_int_equal(b - a, strlen(bad) + strlen("+OK Send PASS\r\n"));
    assert_string_equal(statuses(out, p), "+OK|+OK|-ERR [AUTH]|+OK|-ERR [AUTH]|-ERR|+OK|+OK");
    assert_non_null(strstr(out, "-ERR Send USER first\r\n+OK Logged in, 0 messages"));

    /* SASL: PLAIN in a continuation, LOGIN, cancel, the list, an unknown
     * mechanism, an authorization identity that is someone else. */
    script = "AUTH\r\n"
             "AUTH CRAM-MD5\r\n"
             "AUTH PLAIN\r\n*\r\n"
             "AUTH LOGIN\r\nYWxpY2VAZXhhbXBsZS50ZXN0\r\n*\r\n"
             "AUTH PLAIN Ym9iQGV4YW1wbGUudGVzdABhbGljZUBleGFtcGxlLnRlc3QAYWxpY2UtcHctMQ==\r\n"
             "AUTH PLAIN\r\nnot base64!\r\n"
             "AUTH LOGIN\r\nYWxpY2VAZXhhbXBsZS50ZXN0\r\nYWxpY2UtcHctMQ==\r\n"
             "STAT\r\nQUIT\r\n";
    out = run_from(f, POP3_SERVICE_PLAIN, "127.0.0.4", script, strlen(script), NULL, p);
    assert_string_equal(out, GREETING "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"
                                      "-ERR Unsupported authentication mechanism\r\n"
                                      "+ \r\n-ERR Authentication cancelled\r\n"
                                      "+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n"
                                      "-ERR Authentication cancelled\r\n"
                                      "-ERR [AUTH] Invalid login or password\r\n"
                                      "+ \r\n-ERR Invalid base64 data\r\n"
                                      "+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n"
                                      "+OK Logged in, 0 messages (0 octets)\r\n"
                                      "+OK 0 0\r\n"
                                      "+OK " HOST " POP3 server signing off (maildrop empty)\r\n");
    apr_pool_destroy(p);
}

static void test_login_delay(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    for (int i = 0; i < PR_PENALTY_LIMIT; i++)
        pr_penalty_fail(f->srv->penalty, "127.0.0.5");
    /* Even the right password is not checked from a blocked address. */
    const char *script =
        LOGIN_ALICE "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wdy0x\r\nQUIT\r\n";
    const char *out = run_from(f, POP3_SERVICE_PLAIN, "127.0.0.5", script, strlen(script), NULL, p);
    assert_string_equal(statuses(out, p), "+OK|+OK|-ERR [LOGIN-DELAY]|-ERR [LOGIN-DELAY]|+OK");
    /* Another address is not affected. */
    out = run_from(f, POP3_SERVICE_PLAIN, "127.0.0.6", script, strlen(script), NULL, p);
    assert_string_equal(statuses(out, p), "+OK|+OK|+OK|-ERR|+OK");
    apr_pool_destroy(p);
}

static void test_exact_bytes(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    const char *m1 = "Subject: one\r\n\r\nHello\r\n.dot line\r\n..two dots\r\nno final CRLF";
    const char *m2 = "X-A: b\r\nX-C: d\r\n\r\nline1\r\n.line2\r\nline3\r\n";
    const char *m3 = "Subject: three\r\n\r\n";
    apr_uint32_t u1 = deliver(f, ALICE, m1, strlen(m1));
    apr_uint32_t u2 = deliver(f, ALICE, m2, strlen(m2));
    apr_uint32_t u3 = deliver(f, ALICE, m3, strlen(m3));
    unsigned v = uidvalidity(f, ALICE, p);
    apr_size_t s1 = strlen(PREFIX) + strlen(m1), s2 = strlen(PREFIX) + strlen(m2),
               s3 = strlen(PREFIX) + strlen(m3);
    const char *out = run(f,
                          LOGIN_ALICE "STAT\r\nLIST\r\nLIST 2\r\nLIST 4\r\nUIDL\r\nUIDL 3\r\n"
                                      "LAST\r\nRETR 2\r\nLAST\r\nRETR 1\r\nLAST\r\n"
                                      "TOP 2 0\r\nTOP 2 2\r\nTOP 1 100\r\nTOP 3 1\r\nRETR 3\r\n"
                                      "RETR 4\r\nTOP 4 1\r\nLAST\r\nRSET\r\nLAST\r\nQUIT\r\n",
                          p);
    apr_size_t n;
    const char *want = apr_psprintf(
        p,
        GREETING "+OK Send PASS\r\n"
                 "+OK Logged in, 3 messages (%lu octets)\r\n"
                 "+OK 3 %lu\r\n"
                 "+OK 3 messages (%lu octets)\r\n1 %lu\r\n2 %lu\r\n3 %lu\r\n.\r\n"
                 "+OK 2 %lu\r\n"
                 "-ERR No such message\r\n"
                 "+OK\r\n1 %u.%u\r\n2 %u.%u\r\n3 %u.%u\r\n.\r\n"
                 "+OK 3 %u.%u\r\n"
                 "+OK 0\r\n",
        (unsigned long)(s1 + s2 + s3), (unsigned long)(s1 + s2 + s3), (unsigned long)(s1 + s2 + s3),
        (unsigned long)s1, (unsigned long)s2, (unsigned long)s3, (unsigned long)s2, v, (unsigned)u1,
        v, (unsigned)u2, v, (unsigned)u3, v, (unsigned)u3);
    want = apr_pstrcat(p, want, apr_psprintf(p, "+OK %lu octets\r\n", (unsigned long)s2),
                       expect_body(full(m2, p), s2, -1, &n, p), "+OK 2\r\n",
                       apr_psprintf(p, "+OK %lu octets\r\n", (unsigned long)s1),
                       expect_body(full(m1, p), s1, -1, &n, p), "+OK 2\r\n", NULL);
    /* Literal expectations for the stuffing and TOP, besides the reference. */
    assert_string_equal(expect_body(full(m1, p), s1, -1, &n, p),
                        PREFIX "Subject: one\r\n\r\nHello\r\n..dot line\r\n...two dots\r\n"
                               "no final CRLF\r\n.\r\n");
    assert_string_equal(expect_body(full(m2, p), s2, 2, &n, p),
                        PREFIX "X-A: b\r\nX-C: d\r\n\r\nline1\r\n..line2\r\n.\r\n");
    want = apr_pstrcat(p, want, "+OK Top of message follows\r\n",
                       PREFIX "X-A: b\r\nX-C: d\r\n\r\n.\r\n", "+OK Top of message follows\r\n",
                       PREFIX "X-A: b\r\nX-C: d\r\n\r\nline1\r\n..line2\r\n.\r\n",
                       "+OK Top of message follows\r\n", expect_body(full(m1, p), s1, -1, &n, p),
                       "+OK Top of message follows\r\n", PREFIX "Subject: three\r\n\r\n.\r\n",
                       apr_psprintf(p, "+OK %lu octets\r\n", (unsigned long)s3),
                       PREFIX "Subject: three\r\n\r\n.\r\n", "-ERR No such message\r\n",
                       "-ERR No such message\r\n", "+OK 3\r\n",
                       apr_psprintf(p, "+OK Maildrop has 3 messages (%lu octets)\r\n",
                                    (unsigned long)(s1 + s2 + s3)),
                       "+OK 0\r\n", "+OK " HOST " POP3 server signing off (3 messages left)\r\n",
                       NULL);
    assert_string_equal(out, want);
    apr_pool_destroy(p);
}

/* A message larger than many chunks, with dots at line starts everywhere,
 * including exactly on the chunk boundaries, and a header whose empty
 * line straddles a boundary. */
static void test_big_message(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    const apr_size_t chunk = 64 * 1024;
    apr_size_t size = 5 * 1024 * 1024;
    char *body = malloc(size);
    assert_non_null(body);
    apr_size_t pre = strlen(PREFIX), i = 0;
    /* Header lines until the empty line's CR is the last octet of the
     * first chunk (stream offset chunk - 1). */
    apr_size_t rem = chunk - 1 - pre;
    while (rem > 0) {
        apr_size_t n = rem > 2000 ? 1000 : rem > 1000 ? rem / 2 : rem;
        memcpy(body + i, "X-Long: ", 8);
        memset(body + i + 8, 'a', n - 10);
        body[i + n - 2] = '\r';
        body[i + n - 1] = '\n';
        i += n;
        rem -= n;
    }
    assert_int_equal(pre + i, chunk - 1);
    body[i++] = '\r';
    body[i++] = '\n';
    /* Body lines of varying length, every third starting with a dot, some
     * with dots inside, one ending exactly where the second chunk ends so
     * that the next line's dot is the third chunk's first octet. */
    for (unsigned k = 0; i < size - 200; k++) {
        apr_size_t pos = pre + i, len = 3 + (k * 37) % 120;
        if (pos < 2 * chunk && pos + len > 2 * chunk) len = 2 * chunk - pos;
        if (pos < 2 * chunk && 2 * chunk - (pos + len) == 1) len++;
        int dot = k % 3 == 0 || pos == 2 * chunk;
        for (apr_size_t j = 0; j + 2 < len; j++)
            body[i + j] = j == 0 && dot ? '.' : j % 13 == 5 ? '.' : 'x';
        body[i + len - 2] = '\r';
        body[i + len - 1] = '\n';
        i += len;
    }
    size = i;
    assert_int_equal(body[chunk - pre], '\n');
    assert_int_equal(body[2 * chunk - pre], '.');
    assert_int_equal(body[2 * chunk - pre - 1], '\n');
    deliver(f, ALICE, body, size);

    apr_size_t full_len = pre + size;
    char *msg = malloc(full_len);
    assert_non_null(msg);
    memcpy(msg, PREFIX, pre);
    memcpy(msg + pre, body, size);
    free(body);

    const char *script = LOGIN_ALICE "TOP 1 3\r\nRETR 1\r\nTOP 1 0\r\nQUIT\r\n";
    apr_size_t out_len;
    const char *out =
        run_from(f, POP3_SERVICE_PLAIN, "127.0.0.1", script, strlen(script), &out_len, p);
    apr_size_t n_top3, n_retr, n_top0;
    const char *top3 = expect_body(msg, full_len, 3, &n_top3, p);
    const char *retr = expect_body(msg, full_len, -1, &n_retr, p);
    const char *top0 = expect_body(msg, full_len, 0, &n_top0, p);
    assert_int_equal(n_top0, chunk + 1 + 3); /* the header alone; ".." for none of it */
    free(msg);

    const char *head = apr_psprintf(p,
                                    GREETING "+OK Send PASS\r\n"
                                             "+OK Logged in, 1 messages (%lu octets)\r\n"
                                             "+OK Top of message follows\r\n",
                                    (unsigned long)full_len);
    const char *retr_ok = apr_psprintf(p, "+OK %lu octets\r\n", (unsigned long)full_len);
    const char *top_ok = "+OK Top of message follows\r\n";
    const char *bye = "+OK " HOST " POP3 server signing off (1 messages left)\r\n";
    apr_size_t want_len =
        strlen(head) + n_top3 + strlen(retr_ok) + n_retr + strlen(top_ok) + n_top0 + strlen(bye);
    assert_int_equal(out_len, want_len);
    const char *o = out;
    assert_memory_equal(o, head, strlen(head));
    o += strlen(head);
    assert_memory_equal(o, top3, n_top3);
    o += n_top3;
    assert_memory_equal(o, retr_ok, strlen(retr_ok));
    o += strlen(retr_ok);
    assert_memory_equal(o, retr, n_retr);
    o += n_retr;
    assert_memory_equal(o, top_ok, strlen(top_ok));
    o += strlen(top_ok);
    assert_memory_equal(o, top0, n_top0);
    o += n_top0;
    assert_memory_equal(o, bye, strlen(bye));
    apr_pool_destroy(p);
}

static const char *uidl_of(const char *out, int msgno, apr_pool_t *pool)
{
    /* The line "<msgno> <uidl>" of a UIDL listing. */
    const char *key = apr_psprintf(pool, "\r\n%d ", msgno);
    const char *a = strstr(out, "+OK\r\n");
    assert_non_null(a);
    const char *l = strstr(a, key);
    if (!l) return NULL;
    l += strlen(key);
    return apr_pstrndup(pool, l, (apr_size_t)(strstr(l, "\r\n") - l));
}

static void test_dele_rset_quit(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    for (int i = 0; i < 4; i++) {
        const char *m = apr_psprintf(p, "Subject: m%d\r\n\r\nbody %d\r\n", i + 1, i + 1);
        deliver(f, ALICE, m, strlen(m));
    }
    apr_size_t sz = strlen(PREFIX) + strlen("Subject: m1\r\n\r\nbody 1\r\n");
    const char *out = run(f, LOGIN_ALICE "UIDL\r\nQUIT\r\n", p);
    const char *uidl2 = uidl_of(out, 2, p), *uidl4 = uidl_of(out, 4, p);

    out = run(f,
              LOGIN_ALICE "DELE 1\r\nDELE 1\r\nDELE 5\r\nLIST 1\r\nRETR 1\r\nTOP 1 0\r\n"
                          "UIDL 1\r\nSTAT\r\nLIST\r\nUIDL\r\nRSET\r\nSTAT\r\n"
                          "DELE 1\r\nDELE 3\r\nQUIT\r\n",
              p);
    const char *want =
        apr_psprintf(p,
                     "+OK Message 1 deleted\r\n-ERR Message 1 already deleted\r\n"
                     "-ERR No such message\r\n-ERR No such message\r\n-ERR No such message\r\n"
                     "-ERR No such message\r\n-ERR No such message\r\n+OK 3 %lu\r\n"
                     "+OK 3 messages (%lu octets)\r\n2 %lu\r\n3 %lu\r\n4 %lu\r\n.\r\n",
                     (unsigned long)(3 * sz), (unsigned long)(3 * sz), (unsigned long)sz,
                     (unsigned long)sz, (unsigned long)sz);
    assert_non_null(strstr(out, want));
    assert_null(uidl_of(out, 1, p)); /* a deleted message is not listed */
    assert_string_equal(uidl_of(out, 2, p), uidl2);
    assert_non_null(strstr(out, apr_psprintf(p,
                                             "+OK Maildrop has 4 messages (%lu octets)\r\n"
                                             "+OK 4 %lu\r\n",
                                             (unsigned long)(4 * sz), (unsigned long)(4 * sz))));
    assert_non_null(strstr(out, "signing off (2 messages left)\r\n"));

    /* A new session sees two messages, renumbered, with the same UIDLs. */
    out = run(f, LOGIN_ALICE "STAT\r\nUIDL\r\nRETR 1\r\nQUIT\r\n", p);
    assert_non_null(strstr(out, apr_psprintf(p, "+OK 2 %lu\r\n", (unsigned long)(2 * sz))));
    assert_string_equal(uidl_of(out, 1, p), uidl2);
    assert_string_equal(uidl_of(out, 2, p), uidl4);
    assert_null(uidl_of(out, 3, p));
    assert_non_null(strstr(out, "Subject: m2\r\n\r\nbody 2\r\n.\r\n"));
    apr_pool_destroy(p);
}

static void test_drop_deletes_nothing(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    for (int i = 0; i < 2; i++)
        deliver(f, ALICE, "Subject: x\r\n\r\nhi\r\n", 18);
    /* The connection drops after DELE; then too many errors; neither is QUIT. */
    const char *out = run(f, LOGIN_ALICE "DELE 1\r\nDELE 2\r\n", p);
    assert_string_equal(statuses(out, p), "+OK|+OK|+OK|+OK|+OK");
    f->cfg.pop3.max_errors = 3;
    out = run(f, LOGIN_ALICE "DELE 1\r\nDELE 2\r\nFOO\r\nBAR\r\nBAZ\r\nQUIT\r\n", p);
    assert_string_equal(statuses(out, p), "+OK|+OK|+OK|+OK|+OK|-ERR|-ERR|-ERR|-ERR");
    assert_non_null(strstr(out, "-ERR Too many errors\r\n"));
    f->cfg.pop3.max_errors = 10;
    out = run(f, LOGIN_ALICE "STAT\r\nQUIT\r\n", p);
    assert_non_null(strstr(out, "+OK 2 "));
    apr_pool_destroy(p);
}

/* A transport whose second read runs another session while the first one
 * still holds the maildrop, then feeds the first one QUIT. */
typedef struct nested_tp_t {
    fixture_t *f;
    apr_pool_t *pool;
    int reads;
    const char *nested_out;
    char *out;
    apr_size_t out_len;
} nested_tp_t;

static apr_status_t nested_recv(void *ctx, char *buf, apr_size_t *len)
{
    nested_tp_t *t = ctx;
    const char *give = NULL;
    switch (t->reads++) {
    case 0:
        give = LOGIN_ALICE;
        break;
    case 1:
        t->nested_out = run(t->f, LOGIN_ALICE "QUIT\r\n", t->pool);
        give = "QUIT\r\n";
        break;
    default:
        *len = 0;
        return APR_EOF;
    }
    apr_size_t n = strlen(give);
    assert_true(n <= *len);
    memcpy(buf, give, n);
    *len = n;
    return APR_SUCCESS;
}

static apr_status_t nested_send(void *ctx, const char *buf, apr_size_t len)
{
    nested_tp_t *t = ctx;
    t->out = realloc(t->out, t->out_len + len + 1);
    memcpy(t->out + t->out_len, buf, len);
    t->out_len += len;
    t->out[t->out_len] = '\0';
    return APR_SUCCESS;
}

static void nested_set_timeout(void *ctx, apr_interval_time_t t)
{
    (void)ctx;
    (void)t;
}

static void test_in_use(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    static const pr_transport_t tp = {nested_recv, nested_send, nested_set_timeout, NULL, NULL};
    nested_tp_t t = {0};
    t.f = f;
    t.pool = p;
    pr_session_t s;
    session_init(&s, f, POP3_SERVICE_PLAIN, "127.0.0.1", p);
    assert_int_equal(pr_conn_create(&s.conn, &tp, &t, p), APR_SUCCESS);
    pop3_session_run(&s);
    pr_conn_flush(s.conn);
    assert_string_equal(statuses(t.out, p), "+OK|+OK|+OK|+OK");
    assert_string_equal(t.nested_out,
                        GREETING "+OK Send PASS\r\n"
                                 "-ERR [IN-USE] Mailbox is locked by another session\r\n"
                                 "+OK " HOST " POP3 server signing off\r\n");
    free(t.out);
    /* Once the first session is over, the maildrop is free again. */
    const char *out = run(f, LOGIN_ALICE "QUIT\r\n", p);
    assert_string_equal(statuses(out, p), "+OK|+OK|+OK|+OK");
    /* And a session that was cut off released it too. */
    run(f, LOGIN_ALICE, p);
    out = run(f, LOGIN_ALICE "QUIT\r\n", p);
    assert_string_equal(statuses(out, p), "+OK|+OK|+OK|+OK");
    apr_pool_destroy(p);
}

/* A client that logs in, marks a message and then goes quiet: the read
 * times out (the kernel timer the session set from [pop3] timeout). */
typedef struct idle_tp_t {
    const char *script;
    int reads;
    apr_interval_time_t timeout; /* last one set */
    char out[4096];
    apr_size_t out_len;
} idle_tp_t;

static apr_status_t idle_recv(void *ctx, char *buf, apr_size_t *len)
{
    idle_tp_t *t = ctx;
    if (t->reads++ > 0) {
        *len = 0;
        return PR_ETIMEOUT;
    }
    apr_size_t n = strlen(t->script);
    assert_true(n <= *len);
    memcpy(buf, t->script, n);
    *len = n;
    return APR_SUCCESS;
}

static apr_status_t idle_send(void *ctx, const char *buf, apr_size_t len)
{
    idle_tp_t *t = ctx;
    assert_true(t->out_len + len < sizeof(t->out));
    memcpy(t->out + t->out_len, buf, len);
    t->out_len += len;
    t->out[t->out_len] = '\0';
    return APR_SUCCESS;
}

static void idle_set_timeout(void *ctx, apr_interval_time_t timeout)
{
    ((idle_tp_t *)ctx)->timeout = timeout;
}

static void test_autologout(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    deliver(f, ALICE, "Subject: x\r\n\r\nhi\r\n", 18);
    static const pr_transport_t tp = {idle_recv, idle_send, idle_set_timeout, NULL, NULL};
    idle_tp_t t = {0};
    t.script = LOGIN_ALICE "DELE 1\r\n";
    pr_session_t s;
    session_init(&s, f, POP3_SERVICE_PLAIN, "127.0.0.1", p);
    assert_int_equal(pr_conn_create(&s.conn, &tp, &t, p), APR_SUCCESS);
    pop3_session_run(&s);
    pr_conn_flush(s.conn);
    /* RFC 1939 3: the timer is at least 10 minutes (the configured one); on
     * expiry the server closes without a response and without UPDATE. */
    assert_true(t.timeout >= apr_time_from_sec(600));
    assert_int_equal(t.timeout, f->cfg.pop3.timeout);
    assert_string_equal(statuses(t.out, p), "+OK|+OK|+OK|+OK");
    assert_non_null(strstr(t.out, "+OK Message 1 deleted\r\n"));
    assert_int_equal(strlen(strstr(t.out, "+OK Message 1 deleted\r\n")), 23);
    const char *out = run(f, LOGIN_ALICE "STAT\r\nQUIT\r\n", p);
    assert_non_null(strstr(out, "+OK 1 "));
    apr_pool_destroy(p);
}

static void test_errors_and_limits(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    /* 255 octets with CRLF pass; 256 and a line beyond any buffer are
     * refused and skipped whole, and the session stays in sync. */
    char *ok = apr_palloc(p, 254);
    memset(ok, ' ', 253);
    memcpy(ok, "NOOP", 4);
    ok[253] = '\0';
    assert_int_equal(strlen(ok), 253);
    char *huge = apr_palloc(p, 100001);
    memset(huge, 'A', 100000);
    huge[100000] = '\0';
    const char *script = apr_pstrcat(p, ok, "\r\n", ok, " \r\n", huge,
                                     "\r\nNOOP\r\n"
                                     "STAT\r\nRETR 1\r\nAPOP a b\r\nRETR\r\n\r\nQUIT\r\n",
                                     NULL);
    const char *out = run(f, script, p);
    assert_string_equal(out, GREETING "+OK\r\n-ERR Line too long\r\n-ERR Line too long\r\n+OK\r\n"
                                      "-ERR Not logged in\r\n-ERR Not logged in\r\n"
                                      "-ERR Unknown command\r\n-ERR Syntax: RETR msg\r\n"
                                      "-ERR Unknown command\r\n"
                                      "+OK " HOST " POP3 server signing off\r\n");

    /* max_errors bad commands, then the session is closed. */
    script = "FOO\r\nBAR\r\nBAZ\r\nQUX\r\nA\r\nB\r\nC\r\nD\r\nE\r\nF\r\nNOOP\r\nQUIT\r\n";
    out = run(f, script, p);
    const char *want = GREETING;
    for (int i = 0; i < 10; i++)
        want = apr_pstrcat(p, want, "-ERR Unknown command\r\n", NULL);
    want = apr_pstrcat(p, want, "-ERR Too many errors\r\n", NULL);
    assert_string_equal(out, want);

    /* After login: AUTHORIZATION commands are refused. */
    out = run(f, LOGIN_ALICE "USER x\r\nSTLS\r\nQUIT\r\n", p);
    assert_non_null(strstr(out, "-ERR Already logged in\r\n-ERR Already logged in\r\n+OK"));
    apr_pool_destroy(p);
}

static void test_stls(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p;
    apr_pool_create(&p, f->pool);
    /* The handshake cannot complete over a scripted connection; what
     * matters is that the commands pipelined after STLS are never run. */
    const char *out = run(f, "STLS\r\n" LOGIN_ALICE "QUIT\r\n", p);
    assert_string_equal(out, GREETING "+OK Begin TLS negotiation\r\n");
    /* POP3S: TLS first; a client that does not speak it never sees a
     * greeting. STLS is not offered there. */
    const char *script = "CAPA\r\n";
    out = run_from(f, POP3_SERVICE_POP3S, "127.0.0.1", script, strlen(script), NULL, p);
    assert_null(strstr(out, "+OK"));
    apr_pool_destroy(p);
}

int main(void)
{
    apr_initialize();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_capa_and_login, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_failures_look_alike, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exact_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dele_rset_quit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_deletes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_autologout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_and_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stls, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_terminate();
    return rc;
}
