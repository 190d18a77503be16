/* Unit tests for the SQLite mailbox store: schema creation and migration,
 * delivery to one and many recipients with the body stored once, UIDs,
 * folders and sizes, byte-exact streams of a 20 MB body received through the
 * spool, group commit under 10 concurrent delivering threads (durable,
 * fewer commits than deliveries, a failing delivery undoing only itself),
 * flags, expunge, a second no-writer process-style store beside the
 * daemon's, and kill -9 in mid-delivery losing nothing that was confirmed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <apr_file_info.h>
#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "service/core/status.h"
#include "service/store/store.h"

static apr_pool_t *pool;
static const char *dir;
static int dir_seq;

/* ---- helpers */

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
    (void)state;
    if (apr_pool_create(&pool, NULL) != APR_SUCCESS) return -1;
    const char *base = getenv("PR_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    dir = apr_psprintf(pool, "%s/store-%ld-%" APR_TIME_T_FMT "-%d", base, (long)getpid(),
                       apr_time_now(), dir_seq++);
    return apr_dir_make_recursive(dir, APR_FPROT_OS_DEFAULT, pool) == APR_SUCCESS ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    apr_pool_t *p;
    apr_pool_create(&p, NULL);
    const char *d = apr_pstrdup(p, dir);
    apr_pool_destroy(pool); /* closes stores and readers first */
    rm_rf(d, p);
    apr_pool_destroy(p);
    return 0;
}

static store_t *open_store(int no_writer, apr_pool_t *p)
{
    store_options_t o = {0};
    o.data_dir = dir;
    o.no_writer = no_writer;
    store_t *st = NULL;
    assert_int_equal(store_open(&st, &o, p), APR_SUCCESS);
    assert_non_null(st);
    return st;
}

static store_body_t *make_body(store_t *st, const char *text, apr_pool_t *p)
{
    store_body_t *b;
    assert_int_equal(store_body_create(&b, st, p), APR_SUCCESS);
    assert_int_equal(store_body_append(b, text, strlen(text)), APR_SUCCESS);
    return b;
}

/* Deliver body to users (INBOX unless folder), each with prefix; returns
 * the status and fills uids (may be NULL). */
static apr_status_t deliver(store_t *st, store_body_t *b, const char *const *users, int n,
                            const char *folder, const char *prefix, apr_uint32_t *uids)
{
    apr_pool_t *p;
    apr_pool_create(&p, pool);
    store_local_rcpt_t *r = apr_pcalloc(p, sizeof(*r) * (apr_size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        r[i].user = users[i];
        r[i].folder = folder;
        r[i].prefix = prefix;
        r[i].prefix_len = prefix ? strlen(prefix) : 0;
    }
    store_delivery_t d = {0};
    d.sender = "sender@example.net";
    d.body = b;
    d.n_local = n;
    d.local = r;
    apr_array_header_t *a = NULL;
    apr_status_t rv = store_deliver(st, &d, &a, p);
    if (rv == APR_SUCCESS) {
        assert_int_equal(a->nelts, n);
        for (int i = 0; uids && i < n; i++)
            uids[i] = APR_ARRAY_IDX(a, i, apr_uint32_t);
    }
    apr_pool_destroy(p);
    return rv;
}

static sqlite3_int64 db_int(const char *sql)
{
    sqlite3 *db;
    const char *path = apr_pstrcat(pool, dir, "/store.db", NULL);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    sqlite3_int64 v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static void db_exec(const char *sql)
{
    sqlite3 *db;
    const char *path = apr_pstrcat(pool, dir, "/store.db", NULL);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static char *read_all(store_reader_t *r, const char *user, const char *folder, apr_uint32_t uid,
                      apr_size_t *len_r, apr_pool_t *p)
{
    store_stream_t *s;
    assert_int_equal(store_message_open(&s, r, user, folder, uid, p), APR_SUCCESS);
    apr_size_t total = (apr_size_t)store_stream_size(s), got = 0;
    char *buf = apr_palloc(p, total + 1);
    for (;;) {
        apr_size_t n = 7; /* odd, to cross the prefix/body boundary mid-read */
        if (got + n > total + 1) n = total + 1 - got;
        apr_status_t rv = store_stream_read(s, buf + got, &n);
        if (rv == APR_EOF) break;
        assert_int_equal(rv, APR_SUCCESS);
        got += n;
    }
    assert_int_equal(got, total);
    buf[got] = 0;
    *len_r = got;
    return buf;
}

static int spool_files(void)
{
    apr_pool_t *p;
    apr_pool_create(&p, pool);
    apr_dir_t *d;
    apr_finfo_t fi;
    int n = 0;
    assert_int_equal(apr_dir_open(&d, apr_pstrcat(p, dir, "/spool", NULL), p), APR_SUCCESS);
    while (apr_dir_read(&fi, APR_FINFO_NAME | APR_FINFO_TYPE, d) == APR_SUCCESS)
        if (fi.filetype == APR_REG) n++;
    apr_dir_close(d);
    apr_pool_destroy(p);
    return n;
}

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* ---- tests */

static void test_open_migrate_twice(void **state)
{
    (void)state;
    apr_pool_t *p;
    apr_pool_create(&p, pool);
    store_t *st = open_store(0, p);
    const char *u[] = {"alice@example.org"};
    apr_uint32_t uid = 0;
    assert_int_equal(
        deliver(st, make_body(st, "Subject: one\r\n\r\nhi\r\n", p), u, 1, NULL, NULL, &uid),
        APR_SUCCESS);
    assert_int_equal(uid, 1);
    store_close(st);
    store_close(st); /* idempotent */
    assert_int_equal(db_int("PRAGMA user_version"), 3);

    /* Second open: already at the current version, nothing to do. */
    st = open_store(0, p);
    assert_int_equal(db_int("PRAGMA user_version"), 3);
    assert_int_equal(db_int("SELECT count(*) FROM messages"), 1);
    store_reader_t *r;
    assert_int_equal(store_reader_open(&r, st, p), APR_SUCCESS);
    apr_uint32_t n = 0;
    apr_off_t bytes = 0;
    assert_int_equal(store_user_usage(r, "alice@example.org", &n, &bytes), APR_SUCCESS);
    assert_int_equal(n, 1);
    assert_int_equal(bytes, strlen("Subject: one\r\n\r\nhi\r\n"));
    assert_int_equal(store_check_space(st, 1), APR_SUCCESS);
    assert_int_equal(store_check_space(st, (apr_off_t)1 << 62), PR_ENOSPACE);
    apr_pool_destroy(p); /* closes through the pool cleanup */

    /* WAL is persistent in the file; the store asked for it. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(apr_pstrcat(pool, dir, "/store.db", NULL), &db,
                                     SQLITE_OPEN_READWRITE, NULL),
                     SQLITE_OK);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    sqlite3_close(db);

    /* A database from a newer Postroom is refused, not misread. */
    db_exec("PRAGMA user_version = 999");
    apr_pool_create(&p, pool);
    store_options_t o = {0};
    o.data_dir = dir;
    assert_int_not_equal(store_open(&st, &o, p), APR_SUCCESS);
    apr_pool_destroy(p);
    db_exec("PRAGMA user_version = 2");
}

/* Quotas travel with the delivery and are checked in its transaction: a
 * copy that would pass its owner's quota is flagged; if every copy would
 * (and nothing is relayed), nothing is stored and the answer is PR_EQUOTA. */
static void test_deliver_quota(void **state)
{
    (void)state;
    store_t *st = open_store(0, pool);
    const char *body = "Subject: q\r\n\r\n0123456789012345678901234567890123456789\r\n";
    store_body_t *b = make_body(st, body, pool);
    apr_off_t size = (apr_off_t)strlen(body);
    store_local_rcpt_t lr[2] = {{.user = "full@example.org", .quota = 2 * size + size / 2},
                                {.user = "roomy@example.org", .quota = 100 * size}};
    int over[2] = {-1, -1};
    store_delivery_t d = {
        .sender = "", .body = b, .n_local = 1, .local = lr, .over = over, .refuse_over = 1};
    /* Two fit, the third would pass 2.5 copies. */
    assert_int_equal(store_deliver(st, &d, NULL, pool), APR_SUCCESS);
    assert_int_equal(over[0], 0);
    assert_int_equal(store_deliver(st, &d, NULL, pool), APR_SUCCESS);
    assert_int_equal(store_deliver(st, &d, NULL, pool), PR_EQUOTA);
    assert_int_equal(over[0], 1);
    assert_int_equal(db_int("SELECT count(*) FROM messages"), 2);
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), 2);
    /* With a recipient that has room, both get their copy; the full one is
     * flagged (the caller logs the overshoot). */
    d.n_local = 2;
    over[0] = over[1] = -1;
    assert_int_equal(store_deliver(st, &d, NULL, pool), APR_SUCCESS);
    assert_int_equal(over[0], 1);
    assert_int_equal(over[1], 0);
    assert_int_equal(db_int("SELECT count(*) FROM messages"), 4);
    /* Without refuse_over, or relaying too, nothing is refused. */
    d.n_local = 1;
    d.refuse_over = 0;
    assert_int_equal(store_deliver(st, &d, NULL, pool), APR_SUCCESS);
    assert_int_equal(over[0], 1);
    /* No quota (0): never over. */
    lr[0].quota = 0;
    assert_int_equal(store_deliver(st, &d, NULL, pool), APR_SUCCESS);
    assert_int_equal(over[0], 0);
    assert_int_equal(db_int("SELECT count(*) FROM messages"), 6);
}

static void test_deliver_one_and_many(void **state)
{
    (void)state;
    store_t *st = open_store(0, pool);
    const char *body = "From: x@example.net\r\nSubject: hello\r\n\r\nbody text\r\n";
    const char *pfx = "Return-Path: <sender@example.net>\r\n";
    store_body_t *b = make_body(st, body, pool);

    const char *one[] = {"alice@example.org"};
    apr_uint32_t uids[3];
    assert_int_equal(deliver(st, b, one, 1, NULL, pfx, uids), APR_SUCCESS);
    assert_int_equal(uids[0], 1);

    const char *many[] = {"alice@example.org", "bob@example.org", "carol@example.org"};
    assert_int_equal(deliver(st, b, many, 3, NULL, pfx, uids), APR_SUCCESS);
    assert_int_equal(uids[0], 2);
    assert_int_equal(uids[1], 1);
    assert_int_equal(uids[2], 1);
    /* Two deliveries, four messages, two bodies: stored once per delivery. */
    assert_int_equal(db_int("SELECT count(*) FROM messages"), 4);
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), 2);

    /* Relayed recipients join the same transaction and the same body. */
    store_local_rcpt_t lr = {.user = "dave@example.org", .prefix = pfx, .prefix_len = strlen(pfx)};
    const char *remote[] = {"x@remote.example", "y@remote.example"};
    store_delivery_t d = {.sender = "",
                          .body = b,
                          .n_local = 1,
                          .local = &lr,
                          .n_remote = 2,
                          .remote = remote,
                          .remote_prefix = "Received: x\r\n",
                          .remote_prefix_len = 13};
    assert_int_equal(store_deliver(st, &d, NULL, pool), APR_SUCCESS);
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), 3);
    assert_int_equal(db_int("SELECT count(DISTINCT body_id) FROM queue_msgs"), 1);

    /* Nothing to deliver to is a caller bug. */
    store_delivery_t empty = {.sender = "", .body = b};
    assert_int_equal(store_deliver(st, &empty, NULL, pool), PR_EINVAL);

    store_reader_t *r;
    assert_int_equal(store_reader_open(&r, st, pool), APR_SUCCESS);
    apr_uint32_t qn = 0;
    assert_int_equal(store_queue_count(r, &qn), APR_SUCCESS);
    assert_int_equal(qn, 2);

    for (int i = 0; i < 3; i++) {
        apr_size_t len;
        char *got = read_all(r, many[i], NULL, i == 0 ? 2 : 1, &len, pool);
        assert_int_equal(len, strlen(pfx) + strlen(body));
        assert_string_equal(got, apr_pstrcat(pool, pfx, body, NULL));
    }
    apr_uint32_t n;
    apr_off_t bytes;
    assert_int_equal(store_user_usage(r, "alice@example.org", &n, &bytes), APR_SUCCESS);
    assert_int_equal(n, 2);
    assert_int_equal(bytes, 2 * (strlen(pfx) + strlen(body)));
    assert_int_equal(store_user_usage(r, "nobody@example.org", &n, &bytes), APR_SUCCESS);
    assert_int_equal(n, 0);
    assert_int_equal(bytes, 0);

    store_stream_t *s;
    assert_int_equal(store_message_open(&s, r, "alice@example.org", NULL, 99, pool), PR_ENOTFOUND);
    store_stats_t stats;
    store_stats_get(st, &stats);
    assert_int_equal(stats.deliveries, 3);
    store_close(st);
}

static void test_uids_increase(void **state)
{
    (void)state;
    store_t *st = open_store(0, pool);
    store_body_t *b = make_body(st, "Subject: u\r\n\r\nx\r\n", pool);
    const char *u[] = {"alice@example.org"};
    apr_uint32_t prev = 0, uid;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(deliver(st, b, u, 1, NULL, NULL, &uid), APR_SUCCESS);
        assert_true(uid > prev);
        prev = uid;
    }
    assert_int_equal(prev, 20);
    /* Expunging the newest must not let its UID come back. */
    assert_int_equal(store_messages_expunge(st, u[0], NULL, &prev, 1), APR_SUCCESS);
    assert_int_equal(deliver(st, b, u, 1, NULL, NULL, &uid), APR_SUCCESS);
    assert_int_equal(uid, 21);
    store_close(st);
}

static void test_folders_and_sizes(void **state)
{
    (void)state;
    store_t *st = open_store(0, pool);
    const char *body = "Subject: s\r\n\r\n0123456789\r\n"; /* 26 octets */
    const char *pfx = "X-Pfx: 1\r\n";                      /* 10 octets */
    store_body_t *b = make_body(st, body, pool);
    const char *u[] = {"alice@example.org"};
    apr_uint32_t uid;
    assert_int_equal(deliver(st, b, u, 1, "Archive", pfx, &uid), APR_SUCCESS);
    assert_int_equal(uid, 1);
    assert_int_equal(deliver(st, b, u, 1, NULL, pfx, &uid), APR_SUCCESS);
    assert_int_equal(deliver(st, b, u, 1, "inbox", pfx, &uid), APR_SUCCESS); /* same as INBOX */
    assert_int_equal(uid, 2);

    store_reader_t *r;
    assert_int_equal(store_reader_open(&r, st, pool), APR_SUCCESS);
    apr_array_header_t *f;
    assert_int_equal(store_folders_list(r, u[0], &f, pool), APR_SUCCESS);
    assert_int_equal(f->nelts, 2);
    store_folder_info_t *in = &APR_ARRAY_IDX(f, 0, store_folder_info_t);
    store_folder_info_t *ar = &APR_ARRAY_IDX(f, 1, store_folder_info_t);
    assert_string_equal(in->name, "INBOX"); /* INBOX first, though created second */
    assert_string_equal(ar->name, "Archive");
    assert_int_equal(in->messages, 2);
    assert_int_equal(in->size, 2 * 36);
    assert_int_equal(in->uidnext, 3);
    assert_int_equal(ar->messages, 1);
    assert_int_equal(ar->size, 36);
    assert_true(in->uidvalidity > ar->uidvalidity); /* strictly increasing, unique */
    assert_int_equal(in->highestmodseq, 2);

    store_folder_info_t info;
    apr_array_header_t *m;
    assert_int_equal(store_messages_list(r, u[0], "INBOX", &info, &m, pool), APR_SUCCESS);
    assert_int_equal(m->nelts, 2);
    assert_int_equal(info.messages, 2);
    assert_int_equal(info.size, 72);
    assert_int_equal(info.uidvalidity, in->uidvalidity);
    for (int i = 0; i < 2; i++) {
        store_msg_info_t *mi = &APR_ARRAY_IDX(m, i, store_msg_info_t);
        assert_int_equal(mi->uid, (apr_uint32_t)i + 1);
        assert_int_equal(mi->size, 36);
        assert_int_equal(mi->flags, 0);
        assert_int_equal(mi->modseq, (apr_uint64_t)i + 1);
        assert_true(mi->internaldate > 0 && mi->internaldate <= apr_time_now());
    }
    assert_int_equal(store_messages_list(r, u[0], "Nope", &info, &m, pool), PR_ENOTFOUND);
    assert_int_equal(store_folders_list(r, "nobody@example.org", &f, pool), APR_SUCCESS);
    assert_int_equal(f->nelts, 0);
    store_close(st);
}

static void test_flags_and_expunge(void **state)
{
    (void)state;
    store_t *st = open_store(0, pool);
    store_body_t *b = make_body(st, "Subject: e\r\n\r\nshared\r\n", pool);
    const char *ab[] = {"alice@example.org", "bob@example.org"};
    apr_uint32_t uids[2];
    assert_int_equal(deliver(st, b, ab, 2, NULL, NULL, uids), APR_SUCCESS); /* shared body */
    store_body_reset(b);
    store_body_append(b, "Subject: only alice\r\n\r\n", 23);
    assert_int_equal(deliver(st, b, ab, 1, NULL, NULL, uids), APR_SUCCESS);
    assert_int_equal(uids[0], 2);
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), 2);

    /* Flags: visible to a reader at once, with a new MODSEQ. */
    store_reader_t *r;
    assert_int_equal(store_reader_open(&r, st, pool), APR_SUCCESS);
    assert_int_equal(
        store_message_flags_set(st, ab[0], NULL, 1, STORE_FLAG_SEEN | STORE_FLAG_DELETED),
        APR_SUCCESS);
    store_folder_info_t info;
    apr_array_header_t *m;
    assert_int_equal(store_messages_list(r, ab[0], NULL, &info, &m, pool), APR_SUCCESS);
    store_msg_info_t *m1 = &APR_ARRAY_IDX(m, 0, store_msg_info_t);
    store_msg_info_t *m2 = &APR_ARRAY_IDX(m, 1, store_msg_info_t);
    assert_int_equal(m1->flags, STORE_FLAG_SEEN | STORE_FLAG_DELETED);
    assert_int_equal(m2->flags, 0);
    assert_true(m1->modseq > m2->modseq);
    assert_int_equal(info.highestmodseq, m1->modseq);
    assert_int_equal(store_message_flags_set(st, ab[0], NULL, 77, STORE_FLAG_SEEN), PR_ENOTFOUND);
    assert_int_equal(store_message_flags_set(st, ab[0], "Nope", 1, STORE_FLAG_SEEN), PR_ENOTFOUND);

    /* A stream opened before the expunge sees the message vanish (uid 2 has
     * a body of its own, no prefix). */
    store_stream_t *s;
    assert_int_equal(store_message_open(&s, r, ab[0], NULL, 2, pool), APR_SUCCESS);

    /* Alice expunges both of hers (and a UID that does not exist). */
    apr_uint32_t ex[] = {1, 2, 99};
    assert_int_equal(store_messages_expunge(st, ab[0], NULL, ex, 3), APR_SUCCESS);
    assert_int_equal(store_messages_list(r, ab[0], NULL, &info, &m, pool), APR_SUCCESS);
    assert_int_equal(m->nelts, 0);
    assert_int_equal(info.uidnext, 3);
    /* Bob still holds the shared body; alice's own one is gone. */
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), 1);
    apr_size_t len;
    char *got = read_all(r, ab[1], NULL, 1, &len, pool);
    assert_string_equal(got, "Subject: e\r\n\r\nshared\r\n");
    char buf[16];
    apr_size_t n = sizeof(buf);
    assert_int_equal(store_stream_read(s, buf, &n), PR_ENOTFOUND);

    assert_int_equal(store_messages_expunge(st, ab[1], NULL, uids, 0), APR_SUCCESS);
    apr_uint32_t one = 1;
    assert_int_equal(store_messages_expunge(st, ab[1], NULL, &one, 1), APR_SUCCESS);
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), 0);
    assert_int_equal(store_messages_expunge(st, ab[1], "Nope", &one, 1), PR_ENOTFOUND);

    /* A body the queue still references outlives the local copy. */
    store_local_rcpt_t lr = {.user = ab[0]};
    const char *remote[] = {"x@remote.example"};
    store_delivery_t d = {
        .sender = "", .body = b, .n_local = 1, .local = &lr, .n_remote = 1, .remote = remote};
    apr_array_header_t *ua;
    assert_int_equal(store_deliver(st, &d, &ua, pool), APR_SUCCESS);
    one = APR_ARRAY_IDX(ua, 0, apr_uint32_t);
    assert_int_equal(one, 3);
    assert_int_equal(store_messages_expunge(st, ab[0], NULL, &one, 1), APR_SUCCESS);
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), 1);
    store_close(st);
}

/* Byte at offset i of the big test body; deterministic, not periodic on
 * any chunk size used below. */
static unsigned char big_byte(apr_uint64_t i)
{
    apr_uint64_t x = i * 0x9E3779B97F4A7C15ULL;
    return (unsigned char)((x >> 29) ^ (i >> 11));
}

#define BIG_SIZE ((apr_off_t)20 * 1024 * 1024 + 13)

static void test_big_body_stream(void **state)
{
    (void)state;
    long rss0 = max_rss_kb();
    store_t *st = open_store(0, pool);
    apr_pool_t *bp;
    apr_pool_create(&bp, pool);
    store_body_t *b;
    assert_int_equal(store_body_create(&b, st, bp), APR_SUCCESS);

    static const apr_size_t sizes[] = {1, 7, 4093, 65537, 12345, 3, 131071, 999};
    unsigned char chunk[131071];
    apr_off_t off = 0;
    int k = 0;
    while (off < BIG_SIZE) {
        apr_size_t n = sizes[k++ % (int)(sizeof(sizes) / sizeof(sizes[0]))];
        if ((apr_off_t)n > BIG_SIZE - off) n = (apr_size_t)(BIG_SIZE - off);
        for (apr_size_t i = 0; i < n; i++)
            chunk[i] = big_byte((apr_uint64_t)off + i);
        assert_int_equal(store_body_append(b, chunk, n), APR_SUCCESS);
        off += (apr_off_t)n;
        if (off <= 256 * 1024) assert_int_equal(spool_files(), 0); /* still in memory */
    }
    assert_int_equal(store_body_size(b), BIG_SIZE);
    assert_int_equal(spool_files(), 1); /* spilled */

    const char *pfx = "Received: from big\r\n";
    const char *u[] = {"alice@example.org", "bob@example.org"};
    apr_uint32_t uids[2];
    apr_time_t t0 = apr_time_now();
    assert_int_equal(deliver(st, b, u, 2, NULL, pfx, uids), APR_SUCCESS);
    apr_time_t t1 = apr_time_now();
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), 1);
    store_body_reset(b);
    assert_int_equal(spool_files(), 0); /* reset removes the spill file */

    store_reader_t *r;
    assert_int_equal(store_reader_open(&r, st, pool), APR_SUCCESS);
    store_stream_t *s;
    assert_int_equal(store_message_open(&s, r, u[1], NULL, uids[1], pool), APR_SUCCESS);
    apr_off_t plen = (apr_off_t)strlen(pfx);
    assert_int_equal(store_stream_size(s), plen + BIG_SIZE);

    static const apr_size_t rsz[] = {5, 65536, 70001, 1, 4096, 100003};
    char *buf = malloc(100003);
    apr_off_t pos = 0;
    k = 0;
    apr_time_t t2 = apr_time_now();
    for (;;) {
        apr_size_t n = rsz[k++ % (int)(sizeof(rsz) / sizeof(rsz[0]))];
        apr_status_t rv = store_stream_read(s, buf, &n);
        if (rv == APR_EOF) break;
        assert_int_equal(rv, APR_SUCCESS);
        assert_true(n > 0);
        for (apr_size_t i = 0; i < n; i++) {
            apr_off_t p = pos + (apr_off_t)i;
            unsigned char want =
                p < plen ? (unsigned char)pfx[p] : big_byte((apr_uint64_t)(p - plen));
            if ((unsigned char)buf[i] != want) fail_msg("byte %ld differs", (long)p);
        }
        pos += (apr_off_t)n;
    }
    apr_time_t t3 = apr_time_now();
    free(buf);
    assert_int_equal(pos, plen + BIG_SIZE);
    long grew = max_rss_kb() - rss0;
    printf("# 20 MB body: deliver %.3f s, stream read %.3f s, peak RSS growth %ld KiB\n",
           (double)(t1 - t0) / 1e6, (double)(t3 - t2) / 1e6, grew);
#ifndef POSTROOM_SANITIZE
    assert_true(grew < 16 * 1024); /* never held whole in memory */
#endif

    /* A spilled body is removed with its pool too. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(store_body_append(b, chunk, sizeof(chunk)), APR_SUCCESS);
    assert_int_equal(spool_files(), 1);
    apr_pool_destroy(bp);
    assert_int_equal(spool_files(), 0);
    store_close(st);
}

/* ---- concurrency */

#define N_THREADS 10
#define MAX_THREADS 64
#define PER_THREAD 400

/* STORE_BENCH_THREADS=n changes the thread count of the throughput test. */
static int bench_threads(void)
{
    const char *e = getenv("STORE_BENCH_THREADS");
    int n = e ? atoi(e) : N_THREADS;
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n;
}

typedef struct worker_t {
    store_t *st;
    int idx;
    int n;
    const char *extra; /* second recipient, or NULL */
    apr_status_t expect;
    int failures;
} worker_t;

static void *APR_THREAD_FUNC worker_main(apr_thread_t *t, void *data)
{
    worker_t *w = data;
    apr_pool_t *p, *it;
    apr_pool_create(&p, NULL);
    apr_pool_create(&it, p);
    store_body_t *b;
    store_body_create(&b, w->st, p);
    char line[100];
    memset(line, 'a' + w->idx, sizeof(line));
    line[98] = '\r';
    line[99] = '\n';
    for (int i = 0; i < 51; i++) /* 5100 octets: a 5 KiB message */
        store_body_append(b, line, sizeof(line));
    store_local_rcpt_t r[2] = {{0}};
    r[0].user = apr_psprintf(p, "user%d@example.org", w->idx);
    r[0].prefix = "Return-Path: <s@example.net>\r\n";
    r[0].prefix_len = strlen(r[0].prefix);
    r[1].user = w->extra;
    for (int i = 0; i < w->n; i++) {
        store_delivery_t d = {0};
        d.sender = "s@example.net";
        d.body = b;
        d.n_local = w->extra ? 2 : 1;
        d.local = r;
        if (store_deliver(w->st, &d, NULL, it) != w->expect) w->failures++;
        apr_pool_clear(it);
    }
    apr_pool_destroy(p);
    (void)t; /* returns: apr_thread_exit's pthread_exit upsets ASan */
    return NULL;
}

static void run_workers(worker_t *w, int n)
{
    apr_thread_t *th[MAX_THREADS];
    for (int i = 0; i < n; i++)
        assert_int_equal(apr_thread_create(&th[i], NULL, worker_main, &w[i], pool), APR_SUCCESS);
    for (int i = 0; i < n; i++) {
        apr_status_t rv;
        apr_thread_join(&rv, th[i]);
    }
}

static void test_concurrent_deliveries(void **state)
{
    (void)state;
    apr_pool_t *p;
    apr_pool_create(&p, pool);
    store_t *st = open_store(0, p);
    int nt = bench_threads();
    worker_t w[MAX_THREADS];
    for (int i = 0; i < nt; i++)
        w[i] = (worker_t){.st = st, .idx = i, .n = PER_THREAD, .expect = APR_SUCCESS};
    apr_time_t t0 = apr_time_now();
    run_workers(w, nt);
    apr_time_t t1 = apr_time_now();
    for (int i = 0; i < nt; i++)
        assert_int_equal(w[i].failures, 0);
    store_stats_t stats;
    store_stats_get(st, &stats);
    double secs = (double)(t1 - t0) / 1e6;
    printf("# %d threads x %d deliveries of 5 KiB: %.3f s, %.0f deliveries/s, %llu commits "
           "(%.1f per commit)\n",
           nt, PER_THREAD, secs, (double)stats.deliveries / secs, (unsigned long long)stats.commits,
           (double)stats.deliveries / (double)stats.commits);
    assert_int_equal(stats.deliveries, nt * PER_THREAD);
    if (nt > 1) assert_true(stats.commits < stats.deliveries); /* group commit happened */
    apr_pool_destroy(p);

    /* Reopened, everything is there, UIDs dense and ordered per user. */
    apr_pool_create(&p, pool);
    st = open_store(0, p);
    store_reader_t *r;
    assert_int_equal(store_reader_open(&r, st, p), APR_SUCCESS);
    for (int i = 0; i < nt; i++) {
        store_folder_info_t info;
        apr_array_header_t *m;
        const char *user = apr_psprintf(p, "user%d@example.org", i);
        assert_int_equal(store_messages_list(r, user, NULL, &info, &m, p), APR_SUCCESS);
        assert_int_equal(m->nelts, PER_THREAD);
        assert_int_equal(info.uidnext, PER_THREAD + 1);
        for (int j = 0; j < m->nelts; j++) {
            store_msg_info_t *mi = &APR_ARRAY_IDX(m, j, store_msg_info_t);
            assert_int_equal(mi->uid, (apr_uint32_t)j + 1);
            assert_int_equal(mi->size, 5100 + 30);
        }
    }
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), nt * PER_THREAD);
    apr_pool_destroy(p);
}

/* One delivery failing inside a group rolls back only itself, body and all. */
static void test_failure_isolated_in_group(void **state)
{
    (void)state;
    store_t *st = open_store(0, pool);
    store_body_t *b = make_body(st, "Subject: bad\r\n\r\n", pool);
    const char *bad[] = {"bad@example.org"};
    assert_int_equal(deliver(st, b, bad, 1, NULL, NULL, NULL), APR_SUCCESS);
    /* Exhaust bad's UID space: its next delivery cannot get a UID. */
    db_exec("UPDATE mailboxes SET uidnext = 4294967296 WHERE user = 'bad@example.org'");

    worker_t w[N_THREADS];
    for (int i = 0; i < N_THREADS; i++)
        w[i] = (worker_t){.st = st, .idx = i, .n = 50, .expect = APR_SUCCESS};
    w[0].extra = bad[0]; /* user0 + bad: must fail whole */
    w[0].expect = PR_EIO;
    run_workers(w, N_THREADS);
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(w[i].failures, 0);

    store_reader_t *r;
    assert_int_equal(store_reader_open(&r, st, pool), APR_SUCCESS);
    apr_uint32_t n;
    apr_off_t bytes;
    assert_int_equal(store_user_usage(r, "user0@example.org", &n, &bytes), APR_SUCCESS);
    assert_int_equal(n, 0);
    assert_int_equal(store_user_usage(r, bad[0], &n, &bytes), APR_SUCCESS);
    assert_int_equal(n, 1);
    for (int i = 1; i < N_THREADS; i++) {
        assert_int_equal(
            store_user_usage(r, apr_psprintf(pool, "user%d@example.org", i), &n, &bytes),
            APR_SUCCESS);
        assert_int_equal(n, 50);
    }
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), 1 + (N_THREADS - 1) * 50);
    store_stats_t stats;
    store_stats_get(st, &stats);
    assert_int_equal(stats.deliveries, 1 + (N_THREADS - 1) * 50);
    store_close(st);
}

/* ---- usage totals (quota) */

/* The running totals must always equal what the messages add up to. */
static void assert_usage(store_reader_t *r, const char *user, apr_uint32_t want_n,
                         apr_off_t want_bytes)
{
    apr_uint32_t n = 99;
    apr_off_t bytes = 99;
    assert_int_equal(store_user_usage(r, user, &n, &bytes), APR_SUCCESS);
    assert_int_equal(n, want_n);
    assert_int_equal(bytes, want_bytes);
    const char *q = sqlite3_mprintf("SELECT count(*) FROM messages m JOIN mailboxes mb"
                                    " ON mb.id = m.mailbox_id WHERE mb.user = %Q",
                                    user);
    assert_int_equal(db_int(q), want_n);
    sqlite3_free((void *)q);
    q = sqlite3_mprintf("SELECT coalesce(sum(m.size), 0) FROM messages m JOIN mailboxes mb"
                        " ON mb.id = m.mailbox_id WHERE mb.user = %Q",
                        user);
    assert_int_equal(db_int(q), want_bytes);
    sqlite3_free((void *)q);
}

/* Read connections are reused, and a reused one sees what was committed
 * since it was last used (no snapshot is held across uses). */
static void test_readers_reused(void **state)
{
    (void)state;
    store_t *st = open_store(0, pool);
    const char *to[] = {"alice@example.org"};
    store_body_t *b = make_body(st, "Subject: r\r\n\r\nx\r\n", pool);
    apr_uint32_t uid;
    store_stats_t stats;
    store_folder_info_t info;
    apr_array_header_t *msgs;
    assert_int_equal(deliver(st, b, to, 1, NULL, NULL, &uid), APR_SUCCESS);
    for (int round = 1; round <= 3; round++) {
        apr_pool_t *p;
        store_reader_t *r;
        apr_pool_create(&p, pool);
        assert_int_equal(store_reader_open(&r, st, p), APR_SUCCESS);
        assert_int_equal(store_messages_list(r, to[0], NULL, &info, &msgs, p), APR_SUCCESS);
        assert_int_equal(msgs->nelts, round);
        apr_size_t len;
        read_all(r, to[0], NULL, uid, &len, p);
        apr_pool_destroy(p);
        assert_int_equal(deliver(st, b, to, 1, NULL, NULL, &uid), APR_SUCCESS);
    }
    store_stats_get(st, &stats);
    assert_int_equal(stats.reader_opens, 1);
    assert_int_equal(stats.idle_readers, 1);
    /* Two at once need two connections; both are kept afterwards. */
    apr_pool_t *p;
    store_reader_t *r1, *r2;
    apr_pool_create(&p, pool);
    assert_int_equal(store_reader_open(&r1, st, p), APR_SUCCESS);
    assert_int_equal(store_reader_open(&r2, st, p), APR_SUCCESS);
    assert_int_equal(store_messages_list(r2, to[0], NULL, &info, &msgs, p), APR_SUCCESS);
    assert_int_equal(msgs->nelts, 4);
    store_stats_get(st, &stats);
    assert_int_equal(stats.reader_opens, 2);
    assert_int_equal(stats.idle_readers, 0);
    apr_pool_destroy(p);
    store_stats_get(st, &stats);
    assert_int_equal(stats.idle_readers, 2);
    store_close(st);
}

static void test_usage_totals(void **state)
{
    (void)state;
    store_t *st = open_store(0, pool);
    const char *body = "Subject: s\r\n\r\n0123456789\r\n"; /* 26 octets */
    const char *pfx = "X-Pfx: 1\r\n";                      /* 10 octets */
    store_body_t *b = make_body(st, body, pool);
    const char *ab[] = {"alice@example.org", "bob@example.org"};
    apr_uint32_t uids[2];
    store_reader_t *r;
    assert_int_equal(store_reader_open(&r, st, pool), APR_SUCCESS);
    assert_usage(r, ab[0], 0, 0);

    /* one body, two mailboxes: each owner pays for its own copy */
    assert_int_equal(deliver(st, b, ab, 2, NULL, pfx, uids), APR_SUCCESS);
    assert_usage(r, ab[0], 1, 36);
    assert_usage(r, ab[1], 1, 36);
    /* every folder counts; the prefix is part of the size */
    assert_int_equal(deliver(st, b, ab, 1, "Archive", NULL, uids), APR_SUCCESS);
    assert_int_equal(deliver(st, b, ab, 1, NULL, pfx, uids), APR_SUCCESS);
    assert_usage(r, ab[0], 3, 36 + 26 + 36);
    assert_usage(r, ab[1], 1, 36);

    /* expunge gives the space back; unknown UIDs change nothing */
    apr_uint32_t gone[] = {1, 77};
    assert_int_equal(store_messages_expunge(st, ab[0], NULL, gone, 2), APR_SUCCESS);
    assert_usage(r, ab[0], 2, 26 + 36);
    assert_int_equal(store_messages_expunge(st, ab[0], NULL, gone, 2), APR_SUCCESS);
    assert_usage(r, ab[0], 2, 26 + 36);
    apr_uint32_t arch[] = {1};
    assert_int_equal(store_messages_expunge(st, ab[0], "Archive", arch, 1), APR_SUCCESS);
    assert_usage(r, ab[0], 1, 36);
    assert_usage(r, ab[1], 1, 36);
    /* a flag change is not a size change */
    assert_int_equal(store_message_flags_set(st, ab[1], NULL, 1, STORE_FLAG_SEEN), APR_SUCCESS);
    assert_usage(r, ab[1], 1, 36);

    /* the CLI's writerless store keeps the same totals */
    apr_pool_t *cp;
    apr_pool_create(&cp, pool);
    store_t *cli = open_store(1, cp);
    assert_int_equal(deliver(cli, make_body(cli, "x", cp), ab + 1, 1, NULL, NULL, uids),
                     APR_SUCCESS);
    apr_pool_destroy(cp);
    assert_usage(r, ab[1], 2, 37);

    /* a delivery that fails leaves the totals as they were */
    db_exec("UPDATE mailboxes SET uidnext = 4294967296 WHERE user = 'bob@example.org'"
            " AND name = 'INBOX'");
    assert_int_equal(deliver(st, b, ab, 2, NULL, pfx, uids), PR_EIO);
    assert_usage(r, ab[0], 1, 36);
    assert_usage(r, ab[1], 2, 37);
    store_close(st);
}

/* A database of schema 1 (before the totals) is brought forward on open
 * with totals computed from the messages it already holds. */
static void test_usage_migration(void **state)
{
    (void)state;
    apr_pool_t *p;
    apr_pool_create(&p, pool);
    store_t *st = open_store(0, p);
    const char *users[] = {"alice@example.org", "bob@example.org"};
    const char *body = "Subject: m\r\n\r\nhello\r\n"; /* 21 octets */
    store_body_t *b = make_body(st, body, p);
    for (int i = 0; i < 5; i++)
        assert_int_equal(
            deliver(st, b, users, i < 2 ? 2 : 1, i == 4 ? "Sent" : NULL, "P: 1\r\n", NULL),
            APR_SUCCESS);
    apr_pool_destroy(p);
    /* What a Postroom of schema 1 left behind: no totals table, no triggers. */
    db_exec("DROP TRIGGER user_usage_add; DROP TRIGGER user_usage_del;"
            " DROP TRIGGER user_usage_move; DROP TABLE user_usage;"
            " ALTER TABLE queue_msgs DROP COLUMN envid; ALTER TABLE queue_msgs DROP COLUMN ret;"
            " ALTER TABLE queue_msgs DROP COLUMN body_flags;"
            " ALTER TABLE queue_rcpts DROP COLUMN notify; ALTER TABLE queue_rcpts DROP COLUMN orcpt;"
            " ALTER TABLE queue_rcpts DROP COLUMN warned; PRAGMA user_version = 1");
    assert_int_equal(db_int("SELECT count(*) FROM sqlite_master WHERE name = 'user_usage'"), 0);

    apr_pool_create(&p, pool);
    st = open_store(0, p);
    assert_int_equal(db_int("PRAGMA user_version"), 3);
    store_reader_t *r;
    assert_int_equal(store_reader_open(&r, st, p), APR_SUCCESS);
    assert_usage(r, users[0], 5, 5 * 27);
    assert_usage(r, users[1], 2, 2 * 27);
    assert_usage(r, "nobody@example.org", 0, 0);
    /* and kept from then on */
    apr_uint32_t uid = 1;
    assert_int_equal(store_messages_expunge(st, users[1], NULL, &uid, 1), APR_SUCCESS);
    assert_usage(r, users[1], 1, 27);
    assert_int_equal(deliver(st, make_body(st, body, p), users + 1, 1, NULL, NULL, NULL),
                     APR_SUCCESS);
    assert_usage(r, users[1], 2, 27 + 21);
    apr_pool_destroy(p);
}

/* The outbound queue: recipients queued with the message and their DSN
 * requests, due and not yet due, outcomes recorded with a bounce in the
 * same transaction, the message and its body leaving once nothing is
 * pending, admin retry and delete. */
static void test_queue(void **state)
{
    (void)state;
    apr_pool_t *p;
    apr_pool_create(&p, pool);
    store_t *st = open_store(0, p);
    store_reader_t *r;
    assert_int_equal(store_reader_open(&r, st, p), APR_SUCCESS);

    const char *remote[] = {"a@remote.example", "b@remote.example", "c@other.example"};
    store_rcpt_dsn_t dsn[] = {{STORE_NOTIFY_FAILURE | STORE_NOTIFY_DELAY, "rfc822;A@remote.example"},
                              {0, NULL},
                              {STORE_NOTIFY_NEVER, NULL}};
    store_delivery_t d = {0};
    d.sender = "alice@example.org";
    d.body = make_body(st, "Subject: out\r\n\r\nhello\r\n", p);
    d.n_remote = 3;
    d.remote = remote;
    d.remote_dsn = dsn;
    d.remote_prefix = "Received: x\r\n";
    d.remote_prefix_len = strlen(d.remote_prefix);
    d.envid = "env-1";
    d.ret = STORE_RET_HDRS;
    d.body_flags = STORE_BODY_8BIT;
    assert_int_equal(store_deliver(st, &d, NULL, p), APR_SUCCESS);

    apr_uint32_t count;
    assert_int_equal(store_queue_count(r, &count), APR_SUCCESS);
    assert_int_equal(count, 3);
    apr_time_t next = 0;
    assert_int_equal(store_queue_next(r, &next), APR_SUCCESS);
    assert_true(next > 0 && next <= apr_time_now());

    apr_array_header_t *msgs;
    assert_int_equal(store_queue_due(r, apr_time_now(), NULL, 100, &msgs, p), APR_SUCCESS);
    assert_int_equal(msgs->nelts, 1);
    store_qmsg_t *m = APR_ARRAY_IDX(msgs, 0, store_qmsg_t *);
    assert_string_equal(m->sender, "alice@example.org");
    assert_string_equal(m->envid, "env-1");
    assert_int_equal(m->ret, STORE_RET_HDRS);
    assert_int_equal(m->body_flags, STORE_BODY_8BIT);
    assert_int_equal(m->size, (apr_off_t)(strlen("Received: x\r\n") + 23));
    assert_int_equal(m->rcpts->nelts, 3);
    store_qrcpt_t *q = (store_qrcpt_t *)m->rcpts->elts;
    assert_string_equal(q[0].address, "a@remote.example");
    assert_int_equal(q[0].dsn.notify, STORE_NOTIFY_FAILURE | STORE_NOTIFY_DELAY);
    assert_string_equal(q[0].dsn.orcpt, "rfc822;A@remote.example");
    assert_null(q[1].dsn.orcpt);
    assert_int_equal(q[2].dsn.notify, STORE_NOTIFY_NEVER);

    /* Paging: after the first recipient, the other two; after all, none. */
    store_qcursor_t cur = {q[0].next_attempt, q[0].id};
    assert_int_equal(store_queue_due(r, apr_time_now(), &cur, 100, &msgs, p), APR_SUCCESS);
    assert_int_equal(APR_ARRAY_IDX(msgs, 0, store_qmsg_t *)->rcpts->nelts, 2);
    cur.id = q[2].id;
    assert_int_equal(store_queue_due(r, apr_time_now(), &cur, 100, &msgs, p), APR_SUCCESS);
    assert_int_equal(msgs->nelts, 0);
    assert_int_equal(store_queue_due(r, apr_time_now(), NULL, 100, &msgs, p), APR_SUCCESS);
    m = APR_ARRAY_IDX(msgs, 0, store_qmsg_t *);
    q = (store_qrcpt_t *)m->rcpts->elts;

    /* The queued copy: prefix then body. */
    store_stream_t *sm;
    assert_int_equal(store_queue_open(&sm, r, m->id, p), APR_SUCCESS);
    char buf[128];
    apr_size_t n = sizeof(buf);
    assert_int_equal(store_stream_read(sm, buf, &n), APR_SUCCESS);
    assert_int_equal(n, (apr_size_t)m->size);
    assert_memory_equal(buf, "Received: x\r\nSubject: out\r\n", 27);
    assert_int_equal(store_queue_open(&sm, r, m->id + 100, p), PR_ENOTFOUND);

    /* a delivered, b deferred an hour, c failed with a bounce to alice. */
    apr_time_t later = apr_time_now() + apr_time_from_sec(3600);
    store_qresult_t res[] = {
        {q[0].id, STORE_Q_DELIVERED, 0, "250 2.0.0 ok", 1, 0},
        {q[1].id, STORE_Q_PENDING, later, "451 4.3.0 try later", 1, 0},
        {q[2].id, STORE_Q_FAILED, 0, "550 5.1.1 no such user", 1, 0},
    };
    const char *alice[] = {"alice@example.org"};
    store_local_rcpt_t lr = {.user = alice[0]};
    store_delivery_t bounce = {0};
    bounce.sender = "";
    bounce.body = make_body(st, "Subject: Undelivered\r\n\r\nreport\r\n", p);
    bounce.n_local = 1;
    bounce.local = &lr;
    assert_int_equal(store_queue_update(st, res, 3, &bounce, 1), APR_SUCCESS);
    assert_int_equal(db_int("SELECT count(*) FROM messages"), 1); /* the bounce */
    assert_int_equal(store_queue_count(r, &count), APR_SUCCESS);
    assert_int_equal(count, 1);
    assert_int_equal(store_queue_due(r, apr_time_now(), NULL, 100, &msgs, p), APR_SUCCESS);
    assert_int_equal(msgs->nelts, 0); /* b is not due for an hour */
    assert_int_equal(store_queue_next(r, &next), APR_SUCCESS);
    assert_true(next == later);
    assert_int_equal(store_queue_list(r, 0, &msgs, p), APR_SUCCESS);
    assert_int_equal(msgs->nelts, 1);
    m = APR_ARRAY_IDX(msgs, 0, store_qmsg_t *);
    assert_int_equal(m->rcpts->nelts, 3); /* the list shows every state */
    q = (store_qrcpt_t *)m->rcpts->elts;
    assert_int_equal(q[0].state, STORE_Q_DELIVERED);
    assert_int_equal(q[1].state, STORE_Q_PENDING);
    assert_int_equal(q[1].attempts, 1);
    assert_string_equal(q[1].last_reply, "451 4.3.0 try later");
    assert_int_equal(q[2].state, STORE_Q_FAILED);

    /* Admin retry: due now. */
    assert_int_equal(store_queue_retry(st, m->id), APR_SUCCESS);
    assert_int_equal(store_queue_due(r, apr_time_now(), NULL, 100, &msgs, p), APR_SUCCESS);
    assert_int_equal(msgs->nelts, 1);
    assert_int_equal(store_queue_retry(st, m->id + 100), PR_ENOTFOUND);

    /* The last pending recipient done: the message and its body go. */
    store_qresult_t last = {q[1].id, STORE_Q_DELIVERED, 0, "250 ok", 1, 0};
    assert_int_equal(store_queue_update(st, &last, 1, NULL, 0), APR_SUCCESS);
    assert_int_equal(db_int("SELECT count(*) FROM queue_msgs"), 0);
    assert_int_equal(db_int("SELECT count(*) FROM queue_rcpts"), 0);
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), 1); /* the bounce's */
    assert_int_equal(store_queue_next(r, &next), APR_SUCCESS);
    assert_true(next == 0);
    /* An outcome for a recipient deleted meanwhile is ignored. */
    assert_int_equal(store_queue_update(st, &last, 1, NULL, 0), APR_SUCCESS);

    /* Admin delete: gone without a bounce, body too. */
    d.body = make_body(st, "Subject: two\r\n\r\nx\r\n", p);
    assert_int_equal(store_deliver(st, &d, NULL, p), APR_SUCCESS);
    assert_int_equal(store_queue_list(r, 0, &msgs, p), APR_SUCCESS);
    m = APR_ARRAY_IDX(msgs, 0, store_qmsg_t *);
    assert_int_equal(store_queue_list(r, m->id, &msgs, p), APR_SUCCESS);
    assert_int_equal(store_queue_delete(st, m->id), APR_SUCCESS);
    assert_int_equal(store_queue_delete(st, m->id), PR_ENOTFOUND);
    assert_int_equal(store_queue_list(r, m->id, &msgs, p), PR_ENOTFOUND);
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), 1);

    /* Every recipient of a message finished in one update: it leaves. */
    d.n_remote = 2;
    d.body = make_body(st, "Subject: three\r\n\r\nx\r\n", p);
    assert_int_equal(store_deliver(st, &d, NULL, p), APR_SUCCESS);
    assert_int_equal(store_queue_due(r, apr_time_now(), NULL, 100, &msgs, p), APR_SUCCESS);
    q = (store_qrcpt_t *)APR_ARRAY_IDX(msgs, 0, store_qmsg_t *)->rcpts->elts;
    store_qresult_t both[] = {{q[0].id, STORE_Q_FAILED, 0, "550 no", 1, 0},
                              {q[1].id, STORE_Q_DELIVERED, 0, "250 ok", 1, 0}};
    assert_int_equal(store_queue_update(st, both, 2, NULL, 0), APR_SUCCESS);
    assert_int_equal(db_int("SELECT count(*) FROM queue_msgs"), 0);
    assert_int_equal(db_int("SELECT count(*) FROM bodies"), 1);
    apr_pool_destroy(p);
}

/* Size of the crash test's i-th message: mostly small, every 7th spilled. */
static apr_size_t crash_size(apr_uint32_t uid)
{
    return uid % 7 == 0 ? 300 * 1024 + uid : 5000 + uid;
}

/* The child delivers as fast as it can and reports each UID only after
 * store_deliver returned; the parent kills it with SIGKILL mid-stream. Every
 * reported message must be there, whole, and nothing else half-written. */
static void test_kill9_durability(void **state)
{
    (void)state;
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        apr_pool_t *p, *it;
        apr_pool_create(&p, NULL);
        apr_pool_create(&it, p);
        store_options_t o = {0};
        o.data_dir = dir;
        store_t *st;
        if (store_open(&st, &o, p) != APR_SUCCESS) _exit(2);
        char *fill = malloc(400 * 1024);
        memset(fill, 'k', 400 * 1024);
        for (apr_uint32_t want = 1;; want++) {
            store_body_t *b;
            store_body_create(&b, st, it);
            store_body_append(b, fill, crash_size(want));
            store_local_rcpt_t r = {.user = "crash@example.org"};
            store_delivery_t d = {.sender = "", .body = b, .n_local = 1, .local = &r};
            apr_array_header_t *u;
            if (store_deliver(st, &d, &u, it) != APR_SUCCESS) _exit(3);
            apr_uint32_t uid = APR_ARRAY_IDX(u, 0, apr_uint32_t);
            if (write(fd[1], &uid, sizeof(uid)) != sizeof(uid)) _exit(4);
            apr_pool_clear(it);
        }
    }
    close(fd[1]);
    apr_uint32_t uid, max_uid = 0;
    int got = 0;
    while (got < 60 && read(fd[0], &uid, sizeof(uid)) == sizeof(uid)) {
        got++;
        max_uid = uid;
    }
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    while (read(fd[0], &uid, sizeof(uid)) == sizeof(uid))
        max_uid = uid; /* confirmed just before the kill */
    close(fd[0]);
    assert_true(max_uid >= 60);

    store_t *st = open_store(0, pool);
    store_reader_t *r;
    assert_int_equal(store_reader_open(&r, st, pool), APR_SUCCESS);
    store_folder_info_t info;
    apr_array_header_t *m;
    assert_int_equal(store_messages_list(r, "crash@example.org", NULL, &info, &m, pool),
                     APR_SUCCESS);
    /* Confirmed ones all there; at most the one in flight beyond them. */
    assert_true((apr_uint32_t)m->nelts >= max_uid && (apr_uint32_t)m->nelts <= max_uid + 1);
    char *buf = malloc(64 * 1024);
    for (int i = 0; i < m->nelts; i++) {
        store_msg_info_t *mi = &APR_ARRAY_IDX(m, i, store_msg_info_t);
        assert_int_equal(mi->uid, (apr_uint32_t)i + 1);
        assert_int_equal(mi->size, crash_size(mi->uid));
        store_stream_t *s;
        assert_int_equal(store_message_open(&s, r, "crash@example.org", NULL, mi->uid, pool),
                         APR_SUCCESS);
        apr_off_t total = 0;
        apr_size_t n;
        while (n = 64 * 1024, store_stream_read(s, buf, &n) == APR_SUCCESS) {
            for (apr_size_t j = 0; j < n; j++)
                if (buf[j] != 'k') fail_msg("uid %u byte %ld wrong", mi->uid, (long)total);
            total += (apr_off_t)n;
        }
        assert_int_equal(total, mi->size);
    }
    free(buf);
    store_close(st);
    assert_int_equal(db_int("SELECT count(*) FROM pragma_integrity_check WHERE "
                            "integrity_check <> 'ok'"),
                     0);
}

/* The CLI opens the same database without a writer thread while the daemon
 * runs; each sees the other's deliveries at once. */
static void test_no_writer_beside_daemon(void **state)
{
    (void)state;
    store_t *daemon = open_store(0, pool);
    store_reader_t *r;
    assert_int_equal(store_reader_open(&r, daemon, pool), APR_SUCCESS);
    apr_uint32_t n = 9;
    assert_int_equal(store_user_usage(r, "alice@example.org", &n, NULL), APR_SUCCESS);
    assert_int_equal(n, 0);

    apr_pool_t *cp;
    apr_pool_create(&cp, pool);
    store_t *cli = open_store(1, cp);
    const char *u[] = {"alice@example.org"};
    apr_uint32_t uid;
    assert_int_equal(
        deliver(cli, make_body(cli, "Subject: cli\r\n\r\n", cp), u, 1, NULL, NULL, &uid),
        APR_SUCCESS);
    assert_int_equal(uid, 1);
    assert_int_equal(store_user_usage(r, u[0], &n, NULL), APR_SUCCESS);
    assert_int_equal(n, 1);
    assert_int_equal(
        deliver(daemon, make_body(daemon, "Subject: d\r\n\r\n", pool), u, 1, NULL, NULL, &uid),
        APR_SUCCESS);
    assert_int_equal(uid, 2);
    assert_int_equal(store_message_flags_set(cli, u[0], NULL, 2, STORE_FLAG_SEEN), APR_SUCCESS);
    store_stats_t stats;
    store_stats_get(cli, &stats);
    assert_int_equal(stats.deliveries, 1);
    assert_int_equal(stats.commits, 2);
    apr_pool_destroy(cp);

    store_folder_info_t info;
    apr_array_header_t *m;
    assert_int_equal(store_messages_list(r, u[0], NULL, &info, &m, pool), APR_SUCCESS);
    assert_int_equal(m->nelts, 2);
    assert_int_equal(APR_ARRAY_IDX(m, 1, store_msg_info_t).flags, STORE_FLAG_SEEN);
    store_close(daemon);
    /* After close, writes are refused instead of hanging. */
    assert_int_equal(deliver(daemon, make_body(daemon, "x", pool), u, 1, NULL, NULL, NULL),
                     PR_ESHUTDOWN);
}

int main(void)
{
    apr_initialize();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_big_body_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_migrate_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_one_and_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uids_increase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_folders_and_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flags_and_expunge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_deliveries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_isolated_in_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_writer_beside_daemon, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_totals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readers_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_migration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_durability, setup, teardown),
    };
    /* STORE_TEST_FILTER=test_big* runs a subset (profiling, benchmarking). */
    if (getenv("STORE_TEST_FILTER")) cmocka_set_test_filter(getenv("STORE_TEST_FILTER"));
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_terminate();
    return rc;
}
