/* Unit tests for the directory: address normalisation (and the tricks that
 * must never reach a local mailbox), scrypt password strings, the local
 * SQLite backend, alias/list expansion (loops, depth, duplicates, limits),
 * authentication, the verified- and failed-credential caches, who may send
 * as whom, who may post to a list, and the built-in directory beside a
 * read-only backend (a fake one here: LDAP itself is tested against slapd
 * in tests/integration). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "directory/directory.h"
#include "service/core/config.h"
#include "service/core/status.h"

#include <apr_general.h>
#include <apr_file_io.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>
#include <apr_time.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef struct fixture_t {
    apr_pool_t *pool;
    pr_config_t *cfg;
    const char *dir;
    dir_t *d;
} fixture_t;

static apr_pool_t *g_pool;

static const char *test_tmpdir(apr_pool_t *pool)
{
    static unsigned counter;
    const char *base = getenv("PR_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    const char *dir = apr_psprintf(pool, "%s/test_directory.%ld.%" APR_TIME_T_FMT ".%u", base,
                                   (long)getpid(), apr_time_now(), counter++);
    assert_int_equal(apr_dir_make_recursive(dir, APR_FPROT_OS_DEFAULT, pool), APR_SUCCESS);
    return dir;
}

/* Remove a test directory and what it holds (files only, one level). */
static void test_rmdir(const char *dir, apr_pool_t *pool)
{
    apr_dir_t *dh;
    apr_finfo_t fi;
    if (apr_dir_open(&dh, dir, pool) != APR_SUCCESS) return;
    while (apr_dir_read(&fi, APR_FINFO_NAME | APR_FINFO_TYPE, dh) == APR_SUCCESS)
        if (fi.filetype == APR_REG)
            apr_file_remove(apr_pstrcat(pool, dir, "/", fi.name, NULL), pool);
    apr_dir_close(dh);
    apr_dir_remove(dir, pool);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    apr_pool_create(&f->pool, g_pool);
    f->cfg = apr_pcalloc(f->pool, sizeof(*f->cfg));
    pr_config_defaults(f->cfg, f->pool);
    f->dir = test_tmpdir(f->pool);
    f->cfg->server.data_dir = f->dir;
    static const char *domains[] = {"example.test", "school.test"};
    f->cfg->server.domains.n = 2;
    f->cfg->server.domains.v = domains;
    f->cfg->directory.backend = "local";
    assert_int_equal(dir_open(&f->d, f->cfg, f->pool), APR_SUCCESS);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    dir_close(f->d);
    test_rmdir(f->dir, f->pool);
    apr_pool_destroy(f->pool);
    free(f);
    return 0;
}

/* Run SQL directly on the backend's database (things the face cannot do,
 * like disabling a user or inserting thousands of rows fast). */
static void db_exec(fixture_t *f, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(apr_pstrcat(f->pool, f->dir, "/directory.db", NULL), &db),
                     SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) fail_msg("sql: %s", err);
    sqlite3_close(db);
}

static int has(const apr_array_header_t *a, const char *s)
{
    for (int i = 0; i < a->nelts; i++)
        if (strcmp(APR_ARRAY_IDX(a, i, const char *), s) == 0) return 1;
    return 0;
}

/* ---- normalisation */

static void test_normalize(void **state)
{
    (void)state;
    apr_pool_t *p = g_pool;
    assert_string_equal(dir_address_normalize("Alice@Example.TEST", p), "alice@example.test");
    assert_string_equal(dir_address_normalize("o'brien+tag@school.test", p),
                        "o'brien+tag@school.test");
    assert_string_equal(dir_address_normalize("first.last@a-b.example.test", p),
                        "first.last@a-b.example.test");

    static const char *const bad[] = {
        "",
        "alice",
        "@example.test",
        "alice@",
        "alice@@example.test",
        "a@b@example.test",
        "user%other.test@example.test",
        "other.test!user@example.test",
        "\"user@other.test\"@example.test",
        "\"user\"@example.test",
        "user name@example.test",
        " alice@example.test",
        "alice@example.test ",
        "alice\t@example.test",
        "ali\rce@example.test",
        "alice\n@example.test",
        "a:b@example.test",
        "<alice@example.test>",
        "[alice]@example.test",
        "(c)alice@example.test",
        "alice@[127.0.0.1]",
        ".alice@example.test",
        "alice.@example.test",
        "al..ice@example.test",
        "alice@example..test",
        "alice@.example.test",
        "alice@example.test.",
        "alice@-example.test",
        "alice@example-.test",
        "alice@exa_mple.test",
        "al\\ice@example.test",
        "al,ice@example.test",
        "al;ice@example.test",
        "j\xc3\xbcrgen@example.test",
        "alice@ex\xc3\xa4mple.test",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (dir_address_normalize(bad[i], p) != NULL) fail_msg("accepted: '%s'", bad[i]);
    assert_null(dir_address_normalize(NULL, p));

    /* length limits: local part 64, domain 255 */
    char local[80], longdom[300];
    memset(local, 'a', 64);
    local[64] = '\0';
    assert_non_null(dir_address_normalize(apr_pstrcat(p, local, "@example.test", NULL), p));
    local[64] = 'a';
    local[65] = '\0';
    assert_null(dir_address_normalize(apr_pstrcat(p, local, "@example.test", NULL), p));
    memset(longdom, 'a', 299);
    longdom[299] = '\0';
    for (int i = 60; i < 299; i += 61)
        longdom[i] = '.';
    assert_null(dir_address_normalize(apr_pstrcat(p, "a@", longdom, NULL), p));

    assert_string_equal(dir_domain_normalize("Example.TEST", p), "example.test");
    assert_null(dir_domain_normalize("example test", p));
    assert_null(dir_domain_normalize("", p));
}

/* ---- passwords */

static void test_password(void **state)
{
    (void)state;
    apr_pool_t *p = g_pool;
    const char *h, *h2;
    assert_int_equal(dir_password_hash(&h, "correct horse", p), APR_SUCCESS);
    assert_true(strncmp(h, "$scrypt$ln=14,r=8,p=1$", 22) == 0);
    assert_int_equal(dir_password_verify(h, "correct horse"), APR_SUCCESS);
    assert_int_equal(dir_password_verify(h, "correct horsE"), PR_EAUTH);
    assert_int_equal(dir_password_verify(h, ""), PR_EAUTH);
    assert_int_equal(dir_password_verify(h, "correct horse "), PR_EAUTH);
    /* random salt: two hashes of the same password differ */
    assert_int_equal(dir_password_hash(&h2, "correct horse", p), APR_SUCCESS);
    assert_string_not_equal(h, h2);

    /* tampering: every character of the hash part flipped must fail */
    const char *last = strrchr(h, '$');
    char *t = apr_pstrdup(p, h);
    size_t off = (size_t)(last - h) + 1;
    t[off] = t[off] == 'A' ? 'B' : 'A';
    assert_int_equal(dir_password_verify(t, "correct horse"), PR_EAUTH);
    /* salt changed */
    t = apr_pstrdup(p, h);
    t[22] = t[22] == 'A' ? 'B' : 'A';
    assert_int_equal(dir_password_verify(t, "correct horse"), PR_EAUTH);
    /* parameters changed: a different cost gives a different key */
    t = apr_pstrdup(p, h);
    t[12] = '5'; /* ln=15 */
    assert_int_equal(dir_password_verify(t, "correct horse"), PR_EAUTH);
    /* truncated, padded, junk appended */
    assert_int_equal(dir_password_verify(apr_pstrndup(p, h, strlen(h) - 1), "correct horse"),
                     PR_EAUTH);
    assert_int_equal(dir_password_verify(apr_pstrcat(p, h, "=", NULL), "correct horse"), PR_EAUTH);
    assert_int_equal(dir_password_verify(apr_pstrcat(p, h, "$x", NULL), "correct horse"), PR_EAUTH);

    /* absurd parameters are refused without being run */
    const char *rest = h + 22; /* "salt$hash" */
    static const char *const params[] = {
        "ln=30,r=8,p=1",  "ln=14,r=8,p=999", "ln=14,r=9999,p=1", "ln=20,r=32,p=1", "ln=1,r=8,p=1",
        "ln=014,r=8,p=1", "ln=-1,r=8,p=1",   "r=8,ln=14,p=1",    "ln=14,r=8",      "ln=14,r=0,p=1"};
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        const char *s = apr_pstrcat(p, "$scrypt$", params[i], "$", rest, NULL);
        apr_time_t t0 = apr_time_now();
        assert_int_equal(dir_password_verify(s, "correct horse"), PR_EAUTH);
        assert_true(apr_time_now() - t0 < apr_time_from_sec(2));
    }
    assert_int_equal(dir_password_verify("", "x"), PR_EAUTH);
    assert_int_equal(dir_password_verify("$pbkdf2$whatever", "x"), PR_EAUTH);
    assert_int_equal(dir_password_verify("$scrypt$ln=14,r=8,p=1$$", "x"), PR_EAUTH);
    assert_int_equal(dir_password_verify(NULL, "x"), PR_EAUTH);
}

/* ---- users */

static void test_user_auth(void **state)
{
    fixture_t *f = *state;
    const char *user;
    dir_user_t *u;

    assert_int_equal(dir_user_add(f->d, "Alice@Example.test", "s3cret"), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->d, "alice@example.test", "other"), PR_EEXIST);
    assert_int_equal(dir_user_add(f->d, "bob@example.test", ""), PR_EINVAL);
    assert_int_equal(dir_user_add(f->d, "user%x@example.test", "pw"), PR_EINVAL);

    assert_int_equal(dir_authenticate(f->d, "ALICE@example.test", "s3cret", &user, f->pool),
                     APR_SUCCESS);
    assert_string_equal(user, "alice@example.test");
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "wrong", &user, f->pool),
                     PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "", &user, f->pool), PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "nobody@example.test", "s3cret", &user, f->pool),
                     PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "not an address", "s3cret", &user, f->pool), PR_EAUTH);

    /* unknown users cost about as much as known ones (a dummy hash is
     * checked); passwords not tried before, so neither answer is cached */
    apr_time_t t0 = apr_time_now();
    dir_authenticate(f->d, "alice@example.test", "wrong-t", &user, f->pool);
    apr_time_t known = apr_time_now() - t0;
    t0 = apr_time_now();
    dir_authenticate(f->d, "nobody@example.test", "wrong-t", &user, f->pool);
    apr_time_t unknown = apr_time_now() - t0;
    assert_true(unknown * 4 >= known);

    assert_int_equal(dir_user_get(f->d, "alice@EXAMPLE.test", &u, f->pool), APR_SUCCESS);
    assert_string_equal(u->address, "alice@example.test");
    assert_int_equal(u->quota, -1);
    assert_true(u->enabled);
    assert_int_equal(dir_user_get(f->d, "nobody@example.test", &u, f->pool), PR_ENOTFOUND);

    /* new password replaces the old one */
    assert_int_equal(dir_user_set_password(f->d, "alice@example.test", "n3w"), APR_SUCCESS);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "s3cret", &user, f->pool),
                     PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "n3w", &user, f->pool),
                     APR_SUCCESS);
    assert_int_equal(dir_user_set_password(f->d, "nobody@example.test", "x"), PR_ENOTFOUND);

    /* disabled users cannot log in */
    db_exec(f, "UPDATE users SET enabled = 0 WHERE address = 'alice@example.test'");
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "n3w", &user, f->pool), PR_EAUTH);
    assert_int_equal(dir_user_get(f->d, "alice@example.test", &u, f->pool), APR_SUCCESS);
    assert_false(u->enabled);

    apr_array_header_t *users;
    assert_int_equal(dir_user_list(f->d, &users, f->pool), APR_SUCCESS);
    assert_int_equal(users->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(users, 0, dir_user_t).address, "alice@example.test");

    assert_int_equal(dir_user_del(f->d, "alice@example.test"), APR_SUCCESS);
    assert_int_equal(dir_user_del(f->d, "alice@example.test"), PR_ENOTFOUND);
    dir_result_t *r;
    assert_int_equal(dir_resolve(f->d, "alice@example.test", &r, f->pool), PR_ENOTFOUND);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "n3w", &user, f->pool), PR_EAUTH);
}

static void test_resolve_user(void **state)
{
    fixture_t *f = *state;
    dir_result_t *r;
    assert_int_equal(dir_user_add(f->d, "user@example.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "User@Example.Test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->kind, DIR_KIND_MAILBOX);
    assert_string_equal(r->address, "user@example.test");
    assert_int_equal(r->mailboxes->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(r->mailboxes, 0, const char *), "user@example.test");
    assert_int_equal(r->external->nelts, 0);

    /* the tricks never reach the local mailbox */
    assert_int_equal(dir_resolve(f->d, "user%other.test@example.test", &r, f->pool), PR_EINVAL);
    assert_int_equal(dir_resolve(f->d, "other.test!user@example.test", &r, f->pool), PR_EINVAL);
    assert_int_equal(dir_resolve(f->d, "\"user@other.test\"@example.test", &r, f->pool), PR_EINVAL);
    assert_int_equal(dir_resolve(f->d, "\"user\"@example.test", &r, f->pool), PR_EINVAL);
    /* a non-local domain is not resolved */
    assert_int_equal(dir_resolve(f->d, "user@other.test", &r, f->pool), PR_ENOTFOUND);
    assert_int_equal(dir_resolve(f->d, "nobody@example.test", &r, f->pool), PR_ENOTFOUND);

    dir_entry_t *e;
    assert_int_equal(dir_lookup(f->d, "USER@example.test", &e, f->pool), APR_SUCCESS);
    assert_int_equal(e->kind, DIR_KIND_MAILBOX);
    assert_int_equal(dir_lookup(f->d, "user%x@example.test", &e, f->pool), PR_EINVAL);
}

/* ---- domains */

static void test_domains(void **state)
{
    fixture_t *f = *state;
    apr_array_header_t *list;
    assert_int_equal(dir_domain_is_local(f->d, "example.test"), APR_SUCCESS);
    assert_int_equal(dir_domain_is_local(f->d, "EXAMPLE.Test"), APR_SUCCESS);
    assert_int_equal(dir_domain_is_local(f->d, "other.test"), PR_ENOTFOUND);
    assert_int_equal(dir_domain_is_local(f->d, "bad domain"), PR_ENOTFOUND);

    assert_int_equal(dir_domain_add(f->d, "Other.Test"), APR_SUCCESS);
    assert_int_equal(dir_domain_add(f->d, "other.test"), PR_EEXIST);
    assert_int_equal(dir_domain_add(f->d, "bad domain"), PR_EINVAL);
    assert_int_equal(dir_domain_is_local(f->d, "other.test"), APR_SUCCESS);
    assert_int_equal(dir_domain_list(f->d, &list, f->pool), APR_SUCCESS);
    assert_int_equal(list->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(list, 0, const char *), "other.test");

    /* a domain that still has addresses is not deleted */
    assert_int_equal(dir_user_add(f->d, "x@other.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_domain_del(f->d, "other.test"), PR_EPERM);
    assert_int_equal(dir_user_del(f->d, "x@other.test"), APR_SUCCESS);
    assert_int_equal(dir_domain_del(f->d, "other.test"), APR_SUCCESS);
    assert_int_equal(dir_domain_del(f->d, "other.test"), PR_ENOTFOUND);
    assert_int_equal(dir_domain_is_local(f->d, "other.test"), PR_ENOTFOUND);
}

/* ---- expansion */

static void test_alias(void **state)
{
    fixture_t *f = *state;
    dir_result_t *r;
    const char *t1[] = {"user@example.test"};
    const char *t2[] = {"User@example.test", "Friend.Name@Remote.TEST"};

    assert_int_equal(dir_user_add(f->d, "user@example.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_alias_add(f->d, "office@example.test", t1, 1), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "Office@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->kind, DIR_KIND_ALIAS);
    assert_int_equal(r->mailboxes->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(r->mailboxes, 0, const char *), "user@example.test");
    assert_int_equal(r->external->nelts, 0);

    /* adding targets to an existing alias; all already there: PR_EEXIST */
    assert_int_equal(dir_alias_add(f->d, "office@example.test", t2, 2), APR_SUCCESS);
    assert_int_equal(dir_alias_add(f->d, "office@example.test", t1, 1), PR_EEXIST);
    assert_int_equal(dir_resolve(f->d, "office@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 1);
    assert_int_equal(r->external->nelts, 1);
    /* the remote local part is passed on as written, its domain lower-cased */
    assert_true(
        strcasecmp(APR_ARRAY_IDX(r->external, 0, const char *), "friend.name@remote.test") == 0);
    assert_string_equal(strchr(APR_ARRAY_IDX(r->external, 0, const char *), '@'), "@remote.test");

    /* an alias cannot take a user's address, nor point at itself */
    assert_int_equal(dir_alias_add(f->d, "user@example.test", t1, 1), PR_EEXIST);
    const char *self[] = {"loop@example.test"};
    assert_int_equal(dir_alias_add(f->d, "loop@example.test", self, 1), PR_EINVAL);
    const char *bad[] = {"x%y@example.test"};
    assert_int_equal(dir_alias_add(f->d, "a@example.test", bad, 1), PR_EINVAL);

    apr_array_header_t *aliases;
    assert_int_equal(dir_alias_list(f->d, &aliases, f->pool), APR_SUCCESS);
    assert_int_equal(aliases->nelts, 1);
    dir_entry_t *e = APR_ARRAY_IDX(aliases, 0, dir_entry_t *);
    assert_string_equal(e->address, "office@example.test");
    assert_int_equal(e->targets->nelts, 2);

    /* alias -> external only */
    const char *ext[] = {"someone@remote.test"};
    assert_int_equal(dir_alias_add(f->d, "fwd@example.test", ext, 1), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "fwd@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 0);
    assert_int_equal(r->external->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(r->external, 0, const char *), "someone@remote.test");

    /* a dangling local target is skipped, the rest still delivered */
    const char *dang[] = {"gone@example.test", "user@example.test"};
    assert_int_equal(dir_alias_add(f->d, "d@example.test", dang, 2), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "d@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 1);

    assert_int_equal(dir_alias_del(f->d, "office@example.test"), APR_SUCCESS);
    assert_int_equal(dir_alias_del(f->d, "office@example.test"), PR_ENOTFOUND);
    assert_int_equal(dir_resolve(f->d, "office@example.test", &r, f->pool), PR_ENOTFOUND);
}

static void test_lists(void **state)
{
    fixture_t *f = *state;
    dir_result_t *r;

    assert_int_equal(dir_user_add(f->d, "a@example.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->d, "b@example.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->d, "c@school.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_list_add(f->d, "staff@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_add(f->d, "staff@example.test"), PR_EEXIST);
    assert_int_equal(dir_list_add(f->d, "a@example.test"), PR_EEXIST);
    assert_int_equal(dir_list_add(f->d, "class@example.test"), APR_SUCCESS);

    /* empty list: resolves, nothing to deliver */
    assert_int_equal(dir_resolve(f->d, "staff@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->kind, DIR_KIND_LIST);
    assert_int_equal(r->mailboxes->nelts + r->external->nelts, 0);

    assert_int_equal(dir_list_member_add(f->d, "staff@example.test", "A@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "staff@example.test", "a@example.test"), PR_EEXIST);
    assert_int_equal(dir_list_member_add(f->d, "staff@example.test", "b@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "staff@example.test", "ext@remote.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "nolist@example.test", "a@example.test"),
                     PR_ENOTFOUND);
    /* nested: class contains staff (again a), and c */
    assert_int_equal(dir_list_member_add(f->d, "class@example.test", "staff@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "class@example.test", "a@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "class@example.test", "c@school.test"), APR_SUCCESS);

    assert_int_equal(dir_resolve(f->d, "staff@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 2);
    assert_true(has(r->mailboxes, "a@example.test") && has(r->mailboxes, "b@example.test"));
    assert_int_equal(r->external->nelts, 1);

    assert_int_equal(dir_resolve(f->d, "class@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 3); /* a once, b, c */
    assert_true(has(r->mailboxes, "a@example.test") && has(r->mailboxes, "b@example.test") &&
                has(r->mailboxes, "c@school.test"));
    assert_int_equal(r->external->nelts, 1);

    apr_array_header_t *lists;
    assert_int_equal(dir_list_list(f->d, &lists, f->pool), APR_SUCCESS);
    assert_int_equal(lists->nelts, 2);
    dir_entry_t *e0 = APR_ARRAY_IDX(lists, 0, dir_entry_t *);
    assert_string_equal(e0->address, "class@example.test");
    assert_int_equal(e0->targets->nelts, 3);

    assert_int_equal(dir_list_member_del(f->d, "staff@example.test", "b@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_del(f->d, "staff@example.test", "b@example.test"),
                     PR_ENOTFOUND);
    assert_int_equal(dir_list_del(f->d, "staff@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_del(f->d, "staff@example.test"), PR_ENOTFOUND);
    /* class now has a dangling member staff@: skipped */
    assert_int_equal(dir_resolve(f->d, "class@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 2);
    assert_int_equal(r->external->nelts, 0);
}

/* dir_post_allowed for a recipient, with the refusing list's address. */
static apr_status_t post(fixture_t *f, const char *rcpt, const char *sender, const char *auth_user,
                         const char **list_r)
{
    dir_result_t *r;
    const dir_list_policy_t *lp = NULL;
    assert_int_equal(dir_resolve(f->d, rcpt, &r, f->pool), APR_SUCCESS);
    apr_status_t st = dir_post_allowed(f->d, r, sender, auth_user, &lp, f->pool);
    if (list_r) *list_r = st == PR_EPERM ? lp->list : NULL;
    if (st == PR_EPERM) assert_non_null(lp);
    return st;
}

static void test_list_policy(void **state)
{
    fixture_t *f = *state;
    dir_post_policy_e pol;
    dir_result_t *r;
    const char *who;
    apr_array_header_t *arr;

    assert_string_equal(dir_post_policy_name(DIR_POST_ANYONE), "anyone");
    assert_string_equal(dir_post_policy_name(DIR_POST_MEMBERS), "members");
    assert_string_equal(dir_post_policy_name(DIR_POST_LOCAL), "local");
    assert_int_equal(dir_post_policy_parse(&pol, "local"), APR_SUCCESS);
    assert_int_equal(pol, DIR_POST_LOCAL);
    assert_int_equal(dir_post_policy_parse(&pol, "everyone"), PR_EINVAL);
    assert_int_equal(dir_post_policy_parse(&pol, NULL), PR_EINVAL);

    for (const char *u = "a\0b\0c\0"; *u; u += 2)
        assert_int_equal(dir_user_add(f->d, apr_pstrcat(f->pool, u, "@example.test", NULL), "pw"),
                         APR_SUCCESS);
    const char *to_a[] = {"a@example.test"}, *to_ac[] = {"a@example.test", "c@example.test"};
    assert_int_equal(dir_alias_add(f->d, "a.alias@example.test", to_a, 1), APR_SUCCESS);
    assert_int_equal(dir_alias_add(f->d, "mixed@example.test", to_ac, 2), APR_SUCCESS);
    assert_int_equal(dir_list_add(f->d, "staff@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "staff@example.test", "a@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "staff@example.test", "b@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "staff@example.test", "Ext@remote.test"),
                     APR_SUCCESS);

    /* set and get; only lists take one */
    assert_int_equal(dir_list_get_policy(f->d, "staff@example.test", &pol), APR_SUCCESS);
    assert_int_equal(pol, DIR_POST_ANYONE);
    assert_int_equal(dir_list_set_policy(f->d, "Staff@Example.test", DIR_POST_MEMBERS),
                     APR_SUCCESS);
    assert_int_equal(dir_list_get_policy(f->d, "staff@example.test", &pol), APR_SUCCESS);
    assert_int_equal(pol, DIR_POST_MEMBERS);
    assert_int_equal(dir_list_set_policy(f->d, "a@example.test", DIR_POST_MEMBERS), PR_ENOTFOUND);
    assert_int_equal(dir_list_set_policy(f->d, "a.alias@example.test", DIR_POST_MEMBERS),
                     PR_ENOTFOUND);
    assert_int_equal(dir_list_set_policy(f->d, "none@example.test", DIR_POST_MEMBERS),
                     PR_ENOTFOUND);
    assert_int_equal(dir_list_set_policy(f->d, "bad", DIR_POST_MEMBERS), PR_EINVAL);
    assert_int_equal(dir_list_set_policy(f->d, "staff@example.test", (dir_post_policy_e)7),
                     PR_EINVAL);

    assert_int_equal(dir_resolve(f->d, "staff@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->restricted->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(r->restricted, 0, dir_list_policy_t).list,
                        "staff@example.test");
    assert_int_equal(dir_resolve(f->d, "a@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->restricted->nelts, 0);

    /* members: mailboxes and external members, as written or not; a
     * member's own alias; not an alias that also reaches others, not the
     * null sender, not a stranger; being logged in does not make one */
    assert_int_equal(post(f, "staff@example.test", "a@example.test", NULL, NULL), APR_SUCCESS);
    assert_int_equal(post(f, "staff@example.test", "B@Example.TEST", NULL, NULL), APR_SUCCESS);
    assert_int_equal(post(f, "staff@example.test", "ext@remote.test", NULL, NULL), APR_SUCCESS);
    assert_int_equal(post(f, "staff@example.test", "a.alias@example.test", NULL, NULL),
                     APR_SUCCESS);
    assert_int_equal(post(f, "staff@example.test", "mixed@example.test", NULL, NULL), PR_EPERM);
    assert_int_equal(post(f, "staff@example.test", "c@example.test", NULL, &who), PR_EPERM);
    assert_string_equal(who, "staff@example.test");
    assert_int_equal(post(f, "staff@example.test", "c@example.test", "c@example.test", NULL),
                     PR_EPERM);
    assert_int_equal(post(f, "staff@example.test", "", "a@example.test", NULL), PR_EPERM);
    assert_int_equal(post(f, "staff@example.test", NULL, NULL, NULL), PR_EPERM);
    assert_int_equal(post(f, "staff@example.test", "nobody@example.test", NULL, NULL), PR_EPERM);
    assert_int_equal(post(f, "staff@example.test", "x@remote.test", NULL, NULL), PR_EPERM);
    assert_int_equal(post(f, "staff@example.test", "not an address", NULL, NULL), PR_EPERM);
    /* the list's own address is no member, nor an alias of it (anyone
     * may claim either as sender) */
    const char *to_staff_only[] = {"staff@example.test"};
    assert_int_equal(dir_alias_add(f->d, "staff.alias@example.test", to_staff_only, 1),
                     APR_SUCCESS);
    assert_int_equal(post(f, "staff@example.test", "staff@example.test", NULL, NULL), PR_EPERM);
    assert_int_equal(post(f, "staff@example.test", "staff.alias@example.test", NULL, NULL),
                     PR_EPERM);
    assert_int_equal(dir_alias_del(f->d, "staff.alias@example.test"), APR_SUCCESS);
    /* mailboxes themselves are never restricted */
    assert_int_equal(post(f, "a@example.test", "", NULL, NULL), APR_SUCCESS);

    /* nested: all holds staff and c; staff is not checked again inside
     * all, whatever all's policy */
    assert_int_equal(dir_list_add(f->d, "all@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "all@example.test", "staff@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "all@example.test", "c@example.test"), APR_SUCCESS);
    assert_int_equal(post(f, "all@example.test", "x@remote.test", NULL, NULL), APR_SUCCESS);
    assert_int_equal(dir_list_set_policy(f->d, "all@example.test", DIR_POST_MEMBERS), APR_SUCCESS);
    assert_int_equal(post(f, "all@example.test", "c@example.test", NULL, NULL), APR_SUCCESS);
    assert_int_equal(post(f, "all@example.test", "x@remote.test", NULL, &who), PR_EPERM);
    assert_string_equal(who, "all@example.test");
    assert_int_equal(dir_list_set_policy(f->d, "all@example.test", DIR_POST_ANYONE), APR_SUCCESS);

    /* an alias to a restricted list is checked by that list */
    const char *to_staff[] = {"staff@example.test"};
    assert_int_equal(dir_alias_add(f->d, "team@example.test", to_staff, 1), APR_SUCCESS);
    assert_int_equal(post(f, "team@example.test", "a@example.test", NULL, NULL), APR_SUCCESS);
    assert_int_equal(post(f, "team@example.test", "c@example.test", NULL, &who), PR_EPERM);
    assert_string_equal(who, "staff@example.test");
    /* ... also when the list was met inside another list first, and when
     * it is reached through an alias met there first */
    const char *to_all_staff[] = {"all@example.test", "staff@example.test"};
    assert_int_equal(dir_alias_add(f->d, "office@example.test", to_all_staff, 2), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "office@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 3);
    assert_int_equal(r->restricted->nelts, 1);
    assert_int_equal(post(f, "office@example.test", "c@example.test", NULL, &who), PR_EPERM);
    assert_string_equal(who, "staff@example.test");
    assert_int_equal(dir_list_member_add(f->d, "all@example.test", "team@example.test"),
                     APR_SUCCESS);
    const char *to_all_team[] = {"all@example.test", "team@example.test"};
    assert_int_equal(dir_alias_add(f->d, "office2@example.test", to_all_team, 2), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "office2@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->restricted->nelts, 1);
    assert_int_equal(post(f, "office2@example.test", "c@example.test", NULL, &who), PR_EPERM);
    assert_string_equal(who, "staff@example.test");
    /* an alias to a member and to the list: the member's own address is fine */
    assert_int_equal(post(f, "office2@example.test", "b@example.test", NULL, NULL), APR_SUCCESS);

    /* local: the session's user, never the envelope sender */
    assert_int_equal(dir_list_set_policy(f->d, "staff@example.test", DIR_POST_LOCAL), APR_SUCCESS);
    assert_int_equal(post(f, "staff@example.test", "a@example.test", NULL, &who), PR_EPERM);
    assert_string_equal(who, "staff@example.test");
    assert_int_equal(post(f, "staff@example.test", "c@example.test", "c@example.test", NULL),
                     APR_SUCCESS);
    assert_int_equal(post(f, "team@example.test", "", "c@example.test", NULL), APR_SUCCESS);

    assert_int_equal(dir_list_policies(f->d, &arr, f->pool), APR_SUCCESS);
    assert_int_equal(arr->nelts, 1);
    assert_int_equal(APR_ARRAY_IDX(arr, 0, dir_list_policy_t).policy, DIR_POST_LOCAL);

    /* deleting the list forgets its policy: a new one of that name is open */
    assert_int_equal(dir_list_del(f->d, "staff@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_add(f->d, "staff@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_get_policy(f->d, "staff@example.test", &pol), APR_SUCCESS);
    assert_int_equal(pol, DIR_POST_ANYONE);
    assert_int_equal(dir_list_policies(f->d, &arr, f->pool), APR_SUCCESS);
    assert_int_equal(arr->nelts, 0);
}

static void test_loop_and_depth(void **state)
{
    fixture_t *f = *state;
    dir_result_t *r;
    assert_int_equal(dir_user_add(f->d, "u@example.test", "pw"), APR_SUCCESS);

    /* a -> b -> a, and b -> u: terminates with u once */
    const char *ta[] = {"b@example.test"};
    const char *tb[] = {"a@example.test", "u@example.test"};
    assert_int_equal(dir_alias_add(f->d, "a@example.test", ta, 1), APR_SUCCESS);
    assert_int_equal(dir_alias_add(f->d, "b@example.test", tb, 2), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "a@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(r->mailboxes, 0, const char *), "u@example.test");
    assert_int_equal(dir_resolve(f->d, "b@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 1);

    /* two lists containing each other */
    assert_int_equal(dir_list_add(f->d, "l1@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_add(f->d, "l2@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "l1@example.test", "l2@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "l2@example.test", "l1@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "l2@example.test", "u@example.test"), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "l1@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 1);

    /* a chain deeper than DIR_MAX_DEPTH is cut */
    char sql[8192] = "BEGIN;";
    for (int i = 0; i < DIR_MAX_DEPTH + 4; i++)
        apr_snprintf(sql + strlen(sql), sizeof(sql) - strlen(sql),
                     "INSERT INTO aliases VALUES('c%d@example.test', 'c%d@example.test');", i,
                     i + 1);
    apr_snprintf(sql + strlen(sql), sizeof(sql) - strlen(sql),
                 "INSERT INTO aliases VALUES('c%d@example.test', 'u@example.test'); COMMIT;",
                 DIR_MAX_DEPTH + 4);
    db_exec(f, sql);
    assert_int_equal(dir_resolve(f->d, "c0@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 0);
    /* within the limit it is delivered */
    assert_int_equal(dir_resolve(f->d, "c8@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 1);
}

static void test_expansion_limit(void **state)
{
    fixture_t *f = *state;
    dir_result_t *r;
    apr_pool_t *p = f->pool;
    /* DIR_MAX_EXPANSION + 1 remote members, m0 .. m<MAX> */
    db_exec(f, apr_psprintf(p,
                            "BEGIN; INSERT INTO lists VALUES('big@example.test');"
                            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n "
                            "WHERE i < %d) INSERT INTO list_members SELECT 'big@example.test', "
                            "'m' || i || '@remote.test' FROM n; COMMIT;",
                            DIR_MAX_EXPANSION));
    assert_int_equal(dir_resolve(f->d, "big@example.test", &r, p), PR_ETOOMANY);
    db_exec(f, "DELETE FROM list_members WHERE member = 'm0@remote.test'");
    assert_int_equal(dir_resolve(f->d, "big@example.test", &r, p), APR_SUCCESS);
    assert_int_equal(r->external->nelts, DIR_MAX_EXPANSION);
}

/* ---- who may send as whom */

static void test_sender_allowed(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    assert_int_equal(dir_user_add(f->d, "alice@example.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->d, "bob@example.test", "pw"), APR_SUCCESS);
    const char *office[] = {"alice@example.test"};
    assert_int_equal(dir_alias_add(f->d, "office@example.test", office, 1), APR_SUCCESS);
    const char *outer[] = {"office@example.test"};
    assert_int_equal(dir_alias_add(f->d, "info@example.test", outer, 1), APR_SUCCESS);
    assert_int_equal(dir_list_add(f->d, "staff@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "staff@example.test", "bob@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_add(f->d, "all@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "all@example.test", "staff@example.test"),
                     APR_SUCCESS);

    assert_int_equal(dir_sender_allowed(f->d, "alice@example.test", "alice@example.test", p),
                     APR_SUCCESS);
    assert_int_equal(dir_sender_allowed(f->d, "alice@example.test", "ALICE@Example.test", p),
                     APR_SUCCESS);
    assert_int_equal(dir_sender_allowed(f->d, "alice@example.test", "bob@example.test", p),
                     PR_EPERM);
    assert_int_equal(dir_sender_allowed(f->d, "alice@example.test", "office@example.test", p),
                     APR_SUCCESS);
    assert_int_equal(dir_sender_allowed(f->d, "alice@example.test", "info@example.test", p),
                     APR_SUCCESS);
    assert_int_equal(dir_sender_allowed(f->d, "bob@example.test", "office@example.test", p),
                     PR_EPERM);
    assert_int_equal(dir_sender_allowed(f->d, "bob@example.test", "staff@example.test", p),
                     APR_SUCCESS);
    assert_int_equal(dir_sender_allowed(f->d, "alice@example.test", "staff@example.test", p),
                     PR_EPERM);
    /* only direct members speak for a list */
    assert_int_equal(dir_sender_allowed(f->d, "bob@example.test", "all@example.test", p), PR_EPERM);
    assert_int_equal(dir_sender_allowed(f->d, "alice@example.test", "nobody@example.test", p),
                     PR_EPERM);
    assert_int_equal(dir_sender_allowed(f->d, "alice@example.test", "alice@remote.test", p),
                     PR_EPERM);
    assert_int_equal(
        dir_sender_allowed(f->d, "alice@example.test", "alice%remote.test@example.test", p),
        PR_EPERM);
}

/* ---- verified-credential cache */

static dir_auth_stats_t auth_stats(dir_t *d)
{
    dir_auth_stats_t s;
    dir_auth_stats(d, &s);
    return s;
}

static void test_auth_cache_hit(void **state)
{
    fixture_t *f = *state;
    const char *user = NULL;
    assert_int_equal(dir_user_add(f->d, "alice@example.test", "s3cret"), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->d, "bob@example.test", "s3cret"), APR_SUCCESS);

    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "s3cret", &user, f->pool),
                     APR_SUCCESS);
    dir_auth_stats_t s = auth_stats(f->d);
    assert_int_equal(s.verified, 1);
    assert_int_equal(s.cached, 0);
    assert_int_equal(s.entries, 1);

    /* the same password again, in any case of the login: no full check */
    for (int i = 0; i < 5; i++) {
        user = NULL;
        assert_int_equal(dir_authenticate(f->d, i % 2 ? "ALICE@Example.Test" : "alice@example.test",
                                          "s3cret", &user, f->pool),
                         APR_SUCCESS);
        assert_string_equal(user, "alice@example.test");
    }
    s = auth_stats(f->d);
    assert_int_equal(s.verified, 1);
    assert_int_equal(s.cached, 5);

    /* a wrong password after a cached success still fails, fully checked,
     * and does not disturb the entry */
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "s3creT", &user, f->pool),
                     PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "", &user, f->pool), PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", NULL, &user, f->pool), PR_EAUTH);
    s = auth_stats(f->d);
    assert_int_equal(s.verified, 4);
    assert_int_equal(s.cached, 5);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "s3cret", &user, f->pool),
                     APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).cached, 6);

    /* another user with the same password has an entry of its own */
    assert_int_equal(dir_authenticate(f->d, "bob@example.test", "s3cret", &user, f->pool),
                     APR_SUCCESS);
    assert_string_equal(user, "bob@example.test");
    s = auth_stats(f->d);
    assert_int_equal(s.verified, 5);
    assert_int_equal(s.entries, 2);

    /* a failure goes to the failed-credential cache, never to this one:
     * the same unknown login and password again is refused from there */
    for (int i = 0; i < 2; i++)
        assert_int_equal(dir_authenticate(f->d, "nobody@example.test", "s3cret", &user, f->pool),
                         PR_EAUTH);
    s = auth_stats(f->d);
    assert_int_equal(s.verified, 6);
    assert_int_equal(s.failed_cached, 1);
    assert_int_equal(s.entries, 2);
    assert_int_equal(s.failed_entries, 2); /* "s3creT" and nobody's; empty ones never */
}

static void test_auth_cache_password_change(void **state)
{
    fixture_t *f = *state;
    const char *user;
    dir_t *cli;
    assert_int_equal(dir_user_add(f->d, "alice@example.test", "old-pw"), APR_SUCCESS);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "old-pw", &user, f->pool),
                     APR_SUCCESS);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "old-pw", &user, f->pool),
                     APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).cached, 1);

    /* `postroom user passwd` is another process: a second directory on the
     * same data dir, whose change this one is not told about */
    assert_int_equal(dir_open(&cli, f->cfg, f->pool), APR_SUCCESS);
    assert_int_equal(dir_user_set_password(cli, "alice@example.test", "new-pw"), APR_SUCCESS);
    dir_close(cli);

    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "old-pw", &user, f->pool),
                     PR_EAUTH);
    dir_auth_stats_t s = auth_stats(f->d);
    assert_int_equal(s.cached, 1);
    assert_int_equal(s.verified, 2);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "new-pw", &user, f->pool),
                     APR_SUCCESS);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "new-pw", &user, f->pool),
                     APR_SUCCESS);
    s = auth_stats(f->d);
    assert_int_equal(s.verified, 3);
    assert_int_equal(s.cached, 2);
    /* the stale password again: refused from the failed-credential cache */
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "old-pw", &user, f->pool),
                     PR_EAUTH);
    assert_int_equal(auth_stats(f->d).failed_cached, 1);

    /* the same password set again is a new credential (new salt): checked anew */
    assert_int_equal(dir_user_set_password(f->d, "alice@example.test", "new-pw"), APR_SUCCESS);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "new-pw", &user, f->pool),
                     APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).verified, 4);

    /* disabled by another process: refused although the entry is fresh */
    db_exec(f, "UPDATE users SET enabled = 0 WHERE address = 'alice@example.test'");
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "new-pw", &user, f->pool),
                     PR_EAUTH);
    db_exec(f, "UPDATE users SET enabled = 1 WHERE address = 'alice@example.test'");
    s = auth_stats(f->d);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "new-pw", &user, f->pool),
                     APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).cached, s.cached + 1);

    /* deleted and added again with the same password: a new hash, no hit */
    assert_int_equal(dir_user_del(f->d, "alice@example.test"), APR_SUCCESS);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "new-pw", &user, f->pool),
                     PR_EAUTH);
    assert_int_equal(dir_user_add(f->d, "alice@example.test", "new-pw"), APR_SUCCESS);
    s = auth_stats(f->d);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "new-pw", &user, f->pool),
                     APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).verified, s.verified + 1);
}

static void test_auth_cache_ttl(void **state)
{
    fixture_t *f = *state;
    const char *user;
    assert_int_equal(dir_user_add(f->d, "alice@example.test", "pw"), APR_SUCCESS);

    /* short TTL: the entry is used while young, then checked in full again */
    f->cfg->directory.auth_cache_ttl = apr_time_from_msec(300);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "pw", &user, f->pool),
                     APR_SUCCESS);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "pw", &user, f->pool),
                     APR_SUCCESS);
    dir_auth_stats_t s = auth_stats(f->d);
    assert_int_equal(s.verified, 1);
    assert_int_equal(s.cached, 1);
    apr_sleep(apr_time_from_msec(400));
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "pw", &user, f->pool),
                     APR_SUCCESS);
    s = auth_stats(f->d);
    assert_int_equal(s.verified, 2);
    assert_int_equal(s.cached, 1);
    /* a hit does not extend the entry's life: it runs from the full check */
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "pw", &user, f->pool),
                     APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).cached, 2);

    /* ttl 0: off, every login checked in full, nothing kept */
    f->cfg->directory.auth_cache_ttl = 0;
    assert_int_equal(dir_reload(f->d, f->cfg), APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).entries, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dir_authenticate(f->d, "alice@example.test", "pw", &user, f->pool),
                         APR_SUCCESS);
    s = auth_stats(f->d);
    assert_int_equal(s.verified, 5);
    assert_int_equal(s.cached, 2);
    assert_int_equal(s.entries, 0);
}

static void test_auth_cache_reload_and_bound(void **state)
{
    fixture_t *f = *state;
    const char *user;
    const char *users[] = {"u1@example.test", "u2@example.test", "u3@example.test"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(dir_user_add(f->d, users[i], "pw"), APR_SUCCESS);
    assert_int_equal(dir_authenticate(f->d, users[0], "pw", &user, f->pool), APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).entries, 1);

    /* a reload empties the cache: the next login is checked by the new backend */
    assert_int_equal(dir_reload(f->d, f->cfg), APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).entries, 0);
    dir_auth_stats_t s = auth_stats(f->d);
    assert_int_equal(dir_authenticate(f->d, users[0], "pw", &user, f->pool), APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).verified, s.verified + 1);

    /* bounded: past the limit the oldest entry goes */
    dir_auth_cache_set_max(f->d, 2);
    assert_int_equal(dir_authenticate(f->d, users[1], "pw", &user, f->pool), APR_SUCCESS);
    assert_int_equal(dir_authenticate(f->d, users[2], "pw", &user, f->pool), APR_SUCCESS);
    s = auth_stats(f->d);
    assert_int_equal(s.entries, 2);
    assert_int_equal(dir_authenticate(f->d, users[2], "pw", &user, f->pool), APR_SUCCESS);
    assert_int_equal(dir_authenticate(f->d, users[1], "pw", &user, f->pool), APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).cached, s.cached + 2);
    assert_int_equal(dir_authenticate(f->d, users[0], "pw", &user, f->pool), APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).verified, s.verified + 1);
    dir_auth_cache_set_max(f->d, 0);
    assert_int_equal(auth_stats(f->d).entries, 0);
    dir_auth_cache_set_max(f->d, DIR_AUTH_CACHE_MAX);
}

/* ---- failed-credential cache with the local backend */

static void test_auth_fail_cache_local(void **state)
{
    fixture_t *f = *state;
    const char *user;
    dir_t *cli;
    assert_int_equal(dir_user_add(f->d, "alice@example.test", "real-pw"), APR_SUCCESS);

    /* the user keeps typing a password that is not (yet) hers */
    for (int i = 0; i < 3; i++)
        assert_int_equal(dir_authenticate(f->d, "alice@example.test", "typed-pw", &user, f->pool),
                         PR_EAUTH);
    dir_auth_stats_t s = auth_stats(f->d);
    assert_int_equal(s.verified, 1);
    assert_int_equal(s.failed_cached, 2);
    assert_int_equal(s.failed_entries, 1);

    /* the admin sets it to exactly that, from another process: the stored
     * hash (the tag) changed, so the remembered failure no longer matches */
    assert_int_equal(dir_open(&cli, f->cfg, f->pool), APR_SUCCESS);
    assert_int_equal(dir_user_set_password(cli, "alice@example.test", "typed-pw"), APR_SUCCESS);
    dir_close(cli);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "typed-pw", &user, f->pool),
                     APR_SUCCESS);
    assert_string_equal(user, "alice@example.test");
    assert_int_equal(auth_stats(f->d).verified, s.verified + 1);
}

/* ---- a fake read-only backend (an LDAP directory without the server)
 *
 * Users alice, bob, carol @example.test; alice.smith@ is an address of
 * alice's (an alias); staff@ a group of alice and bob; down@ answers a
 * temporary failure. It counts logins, so the tests see which attempts
 * reached it. */

static struct {
    int opens, closes;
    int auth_calls;
    const char *alice_pw; /* changes like a password set in AD */
    int alice_version;    /* the tagged variant's tag */
} fake;

static const char *const fake_users[] = {"alice@example.test", "bob@example.test",
                                         "carol@example.test"};

static apr_status_t fake_open(void **ctx_r, const pr_config_t *cfg, apr_pool_t *pool)
{
    (void)cfg;
    (void)pool;
    fake.opens++;
    *ctx_r = &fake;
    return APR_SUCCESS;
}

static void fake_close(void *ctx)
{
    (void)ctx;
    fake.closes++;
}

static apr_status_t fake_domain_is_local(void *ctx, const char *domain)
{
    (void)ctx;
    (void)domain;
    return PR_ENOTFOUND;
}

static apr_status_t fake_lookup(void *ctx, const char *address, dir_entry_t **e_r, apr_pool_t *pool)
{
    (void)ctx;
    dir_entry_t *e = apr_pcalloc(pool, sizeof(*e));
    e->address = apr_pstrdup(pool, address);
    e->targets = apr_array_make(pool, 2, sizeof(const char *));
    if (strcmp(address, "down@example.test") == 0) return PR_ETEMPFAIL;
    if (strcmp(address, "alice.smith@example.test") == 0) {
        e->kind = DIR_KIND_ALIAS;
        APR_ARRAY_PUSH(e->targets, const char *) = "alice@example.test";
    } else if (strcmp(address, "staff@example.test") == 0) {
        e->kind = DIR_KIND_LIST;
        APR_ARRAY_PUSH(e->targets, const char *) = "alice@example.test";
        APR_ARRAY_PUSH(e->targets, const char *) = "bob@example.test";
    } else {
        e->kind = DIR_KIND_MAILBOX;
        int found = 0;
        for (size_t i = 0; i < sizeof(fake_users) / sizeof(fake_users[0]); i++)
            found |= strcmp(address, fake_users[i]) == 0;
        if (!found) return PR_ENOTFOUND;
    }
    *e_r = e;
    return APR_SUCCESS;
}

static apr_status_t fake_authenticate(void *ctx, const char *login, const char *password,
                                      const char **user_r, apr_pool_t *pool)
{
    (void)ctx;
    fake.auth_calls++;
    const char *a = dir_address_normalize(login, pool);
    if (a && strcmp(a, "down@example.test") == 0) return PR_ETEMPFAIL;
    if (!a || !password || !*password) return PR_EAUTH;
    const char *want = strcmp(a, "alice@example.test") == 0   ? fake.alice_pw
                       : strcmp(a, "bob@example.test") == 0   ? "bob-pw"
                       : strcmp(a, "carol@example.test") == 0 ? "carol-pw"
                                                              : NULL;
    if (!want || strcmp(password, want) != 0) return PR_EAUTH;
    *user_r = a;
    return APR_SUCCESS;
}

static apr_status_t fake_auth_tag(void *ctx, const char *login, const char **user_r,
                                  const char **tag_r, apr_pool_t *pool)
{
    (void)ctx;
    const char *a = dir_address_normalize(login, pool);
    if (!a || (strcmp(a, "alice@example.test") != 0 && strcmp(a, "bob@example.test") != 0))
        return PR_ENOTFOUND;
    *user_r = a;
    *tag_r = apr_psprintf(pool, "v%d", a[0] == 'a' ? fake.alice_version : 0);
    return APR_SUCCESS;
}

static const dir_backend_t fake_backend = {
    .name = "fake",
    .caps = 0,
    .open = fake_open,
    .close = fake_close,
    .domain_is_local = fake_domain_is_local,
    .lookup = fake_lookup,
    .authenticate = fake_authenticate,
};

/* Quotas its lookup does not tell. */
static apr_status_t fake_user_get(void *ctx, const char *address, dir_user_t **u_r,
                                  apr_pool_t *pool)
{
    (void)ctx;
    if (strcmp(address, "alice@example.test") != 0) return PR_ENOTFOUND;
    dir_user_t *u = apr_pcalloc(pool, sizeof(*u));
    u->address = "alice@example.test";
    u->quota = 12345;
    u->enabled = 1;
    *u_r = u;
    return APR_SUCCESS;
}

/* The same with auth_tag (as LDAP has): verified logins are cached too.
 * And with a user_get whose quotas the lookup does not tell. */
static const dir_backend_t fake_tagged_backend = {
    .name = "fake-tagged",
    .caps = 0,
    .open = fake_open,
    .close = fake_close,
    .domain_is_local = fake_domain_is_local,
    .lookup = fake_lookup,
    .authenticate = fake_authenticate,
    .auth_tag = fake_auth_tag,
    .user_get = fake_user_get,
};

static int setup_fake_with(void **state, const dir_backend_t *be)
{
    memset(&fake, 0, sizeof(fake));
    fake.alice_pw = "alice-pw";
    assert_int_equal(setup(state), 0);
    fixture_t *f = *state;
    /* the data dir's directory.db exists (setup's local directory): the
     * fake's directory opens it beside the fake */
    dir_close(f->d);
    f->cfg->directory.backend = "ldap"; /* never used: the fake takes its place */
    assert_int_equal(dir_open_with(&f->d, f->cfg, be, f->pool), APR_SUCCESS);
    return 0;
}

static int setup_fake(void **state)
{
    return setup_fake_with(state, &fake_backend);
}

static int setup_fake_tagged(void **state)
{
    return setup_fake_with(state, &fake_tagged_backend);
}

/* A second handle with the built-in directory as the backend, as it was
 * before the switch to LDAP (or another process on the same data dir). */
static dir_t *open_builtin(fixture_t *f)
{
    pr_config_t *cfg = apr_pmemdup(f->pool, f->cfg, sizeof(*f->cfg));
    dir_t *d;
    cfg->directory.backend = "local";
    assert_int_equal(dir_open(&d, cfg, f->pool), APR_SUCCESS);
    return d;
}

/* ---- the built-in directory beside a read-only backend (issue 4) */

static void test_overlay_aliases_and_lists(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    dir_result_t *r;
    dir_entry_t *e;
    apr_array_header_t *arr;
    const char *teachers[] = {"alice@example.test", "bob@example.test"};

    assert_int_equal(dir_caps(f->d), DIR_CAP_WRITE_ALIASES);
    assert_string_equal(dir_backend(f->d)->name, "fake");

    /* an alias of backend users, written to the built-in directory */
    assert_int_equal(dir_alias_add(f->d, "Teachers@example.test", teachers, 2), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "teachers@example.test", &r, p), APR_SUCCESS);
    assert_int_equal(r->kind, DIR_KIND_ALIAS);
    assert_int_equal(r->mailboxes->nelts, 2);
    assert_true(has(r->mailboxes, "alice@example.test"));
    assert_true(has(r->mailboxes, "bob@example.test"));
    /* this backend holds no quotas (no user_get, as LDAP): the default */
    assert_int_equal(r->quotas->nelts, 2);
    assert_true(APR_ARRAY_IDX(r->quotas, 0, apr_off_t) == -1);
    assert_true(APR_ARRAY_IDX(r->quotas, 1, apr_off_t) == -1);

    /* a local list of a backend user, a backend group, a backend alias and
     * a remote address: expanded through the combined lookup, once each */
    assert_int_equal(dir_list_add(f->d, "class-7b@example.test"), APR_SUCCESS);
    static const char *const members[] = {"alice@example.test", "staff@example.test",
                                          "alice.smith@example.test", "Pupil@Remote.test"};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(dir_list_member_add(f->d, "class-7b@example.test", members[i]),
                         APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "class-7b@example.test", &r, p), APR_SUCCESS);
    assert_int_equal(r->kind, DIR_KIND_LIST);
    assert_int_equal(r->mailboxes->nelts, 2);
    assert_true(has(r->mailboxes, "alice@example.test"));
    assert_true(has(r->mailboxes, "bob@example.test"));
    assert_int_equal(r->external->nelts, 1);
    /* stored normalised by dir_list_member_add */
    assert_string_equal(APR_ARRAY_IDX(r->external, 0, const char *), "pupil@remote.test");

    /* a local list holding a local alias and a backend user */
    assert_int_equal(dir_list_add(f->d, "all@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "all@example.test", "teachers@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "all@example.test", "carol@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "all@example.test", &r, p), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 3);
    assert_true(has(r->mailboxes, "carol@example.test"));

    /* listed from the built-in directory */
    assert_int_equal(dir_alias_list(f->d, &arr, p), APR_SUCCESS);
    assert_int_equal(arr->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(arr, 0, dir_entry_t *)->address, "teachers@example.test");
    assert_int_equal(dir_list_list(f->d, &arr, p), APR_SUCCESS);
    assert_int_equal(arr->nelts, 2);

    /* where writes go vs. the combined view */
    assert_int_equal(dir_lookup_writable(f->d, "teachers@example.test", &e, p), APR_SUCCESS);
    assert_int_equal(e->kind, DIR_KIND_ALIAS);
    assert_int_equal(dir_lookup_writable(f->d, "alice@example.test", &e, p), PR_ENOTFOUND);
    assert_int_equal(dir_lookup_writable(f->d, "bad address", &e, p), PR_EINVAL);
    assert_int_equal(dir_lookup(f->d, "alice@example.test", &e, p), APR_SUCCESS);
    assert_int_equal(e->kind, DIR_KIND_MAILBOX);

    /* who may send as the local alias and list */
    assert_int_equal(dir_sender_allowed(f->d, "alice@example.test", "teachers@example.test", p),
                     APR_SUCCESS);
    assert_int_equal(dir_sender_allowed(f->d, "carol@example.test", "teachers@example.test", p),
                     PR_EPERM);
    assert_int_equal(dir_sender_allowed(f->d, "alice@example.test", "class-7b@example.test", p),
                     APR_SUCCESS);
    /* bob is in it only through staff@: not a direct member */
    assert_int_equal(dir_sender_allowed(f->d, "bob@example.test", "class-7b@example.test", p),
                     PR_EPERM);

    /* deleted again */
    assert_int_equal(dir_list_member_del(f->d, "class-7b@example.test", "staff@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "class-7b@example.test", &r, p), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 1);
    assert_int_equal(dir_alias_del(f->d, "teachers@example.test"), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "teachers@example.test", &r, p), PR_ENOTFOUND);
    assert_int_equal(dir_list_del(f->d, "class-7b@example.test"), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "class-7b@example.test", &r, p), PR_ENOTFOUND);
}

/* A group of the read-only backend takes a policy, kept in the built-in
 * directory; a temporary failure is never a refusal. */
static void test_overlay_list_policy(void **state)
{
    fixture_t *f = *state;
    dir_post_policy_e pol;
    apr_array_header_t *arr;
    const char *who;

    assert_int_equal(dir_list_set_policy(f->d, "staff@example.test", DIR_POST_MEMBERS),
                     APR_SUCCESS);
    assert_int_equal(dir_list_get_policy(f->d, "staff@example.test", &pol), APR_SUCCESS);
    assert_int_equal(pol, DIR_POST_MEMBERS);
    assert_int_equal(dir_list_set_policy(f->d, "alice@example.test", DIR_POST_MEMBERS),
                     PR_ENOTFOUND);
    assert_int_equal(dir_list_set_policy(f->d, "ghost@example.test", DIR_POST_MEMBERS),
                     PR_ENOTFOUND);
    assert_int_equal(dir_list_set_policy(f->d, "down@example.test", DIR_POST_MEMBERS),
                     PR_ETEMPFAIL);
    assert_int_equal(dir_list_policies(f->d, &arr, f->pool), APR_SUCCESS);
    assert_int_equal(arr->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(arr, 0, dir_list_policy_t).list, "staff@example.test");

    assert_int_equal(post(f, "staff@example.test", "bob@example.test", NULL, NULL), APR_SUCCESS);
    assert_int_equal(post(f, "staff@example.test", "alice.smith@example.test", NULL, NULL),
                     APR_SUCCESS);
    assert_int_equal(post(f, "staff@example.test", "carol@example.test", NULL, &who), PR_EPERM);
    assert_string_equal(who, "staff@example.test");
    assert_int_equal(post(f, "staff@example.test", "down@example.test", NULL, NULL), PR_ETEMPFAIL);

    /* a local list holding the group does not check it again */
    assert_int_equal(dir_list_add(f->d, "all@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "all@example.test", "staff@example.test"),
                     APR_SUCCESS);
    assert_int_equal(post(f, "all@example.test", "carol@example.test", NULL, NULL), APR_SUCCESS);

    assert_int_equal(dir_list_set_policy(f->d, "staff@example.test", DIR_POST_ANYONE), APR_SUCCESS);
    assert_int_equal(dir_list_policies(f->d, &arr, f->pool), APR_SUCCESS);
    assert_int_equal(arr->nelts, 0);
    assert_int_equal(post(f, "staff@example.test", "carol@example.test", NULL, NULL), APR_SUCCESS);
}

static void test_overlay_users_read_only(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    dir_result_t *r;
    dir_entry_t *e;
    dir_user_t *u;
    apr_array_header_t *arr;
    const char *user;

    /* user and domain writes: the backend's, which has none */
    assert_int_equal(dir_user_add(f->d, "new@example.test", "pw"), PR_EPERM);
    assert_int_equal(dir_user_set_password(f->d, "alice@example.test", "pw"), PR_EPERM);
    assert_int_equal(dir_user_set_quota(f->d, "alice@example.test", 1024), PR_EPERM);
    assert_int_equal(dir_user_del(f->d, "alice@example.test"), PR_EPERM);
    assert_int_equal(dir_user_list(f->d, &arr, p), PR_EPERM);
    assert_int_equal(dir_domain_add(f->d, "new.test"), PR_EPERM);
    assert_int_equal(dir_domain_del(f->d, "new.test"), PR_EPERM);

    /* users left in the built-in directory (from before the switch) are
     * not users any more: not for mail, not for logins */
    dir_t *b = open_builtin(f);
    assert_int_equal(dir_caps(b), DIR_CAP_WRITE | DIR_CAP_WRITE_ALIASES);
    assert_int_equal(dir_user_add(b, "ghost@example.test", "ghost-pw"), APR_SUCCESS);
    assert_int_equal(dir_user_add(b, "alice@example.test", "local-pw"), APR_SUCCESS);
    assert_int_equal(dir_domain_add(b, "added.test"), APR_SUCCESS);
    dir_close(b);
    assert_int_equal(dir_resolve(f->d, "ghost@example.test", &r, p), PR_ENOTFOUND);
    assert_int_equal(dir_lookup(f->d, "ghost@example.test", &e, p), PR_ENOTFOUND);
    assert_int_equal(dir_user_get(f->d, "ghost@example.test", &u, p), PR_ENOTFOUND);
    assert_int_equal(dir_authenticate(f->d, "ghost@example.test", "ghost-pw", &user, p), PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "local-pw", &user, p), PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "alice-pw", &user, p),
                     APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "alice@example.test", &r, p), APR_SUCCESS);
    assert_int_equal(r->kind, DIR_KIND_MAILBOX);
    assert_int_equal(dir_user_get(f->d, "alice@example.test", &u, p), APR_SUCCESS);
    assert_int_equal(u->quota, -1);

    /* an added domain still counts, and is listed */
    assert_int_equal(dir_domain_is_local(f->d, "Added.test"), APR_SUCCESS);
    assert_int_equal(dir_domain_is_local(f->d, "other.test"), PR_ENOTFOUND);
    assert_int_equal(dir_domain_list(f->d, &arr, p), APR_SUCCESS);
    assert_int_equal(arr->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(arr, 0, const char *), "added.test");
    const char *t[] = {"alice@example.test"};
    assert_int_equal(dir_alias_add(f->d, "office@added.test", t, 1), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "office@added.test", &r, p), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 1);

    /* the built-in directory keeps one address one thing */
    assert_int_equal(dir_alias_add(f->d, "ghost@example.test", t, 1), PR_EEXIST);
    assert_int_equal(dir_lookup_writable(f->d, "ghost@example.test", &e, p), APR_SUCCESS);
    assert_int_equal(e->kind, DIR_KIND_MAILBOX);
}

static void test_overlay_shadow(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    dir_result_t *r;
    dir_user_t *u;
    const char *carol[] = {"carol@example.test"};
    const char *bob[] = {"bob@example.test"};

    assert_int_equal(dir_resolve(f->d, "staff@example.test", &r, p), APR_SUCCESS);
    assert_int_equal(r->kind, DIR_KIND_LIST);
    assert_int_equal(r->mailboxes->nelts, 2);

    /* a local alias of the backend group's name comes first */
    assert_int_equal(dir_alias_add(f->d, "staff@example.test", carol, 1), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "staff@example.test", &r, p), APR_SUCCESS);
    assert_int_equal(r->kind, DIR_KIND_ALIAS);
    assert_int_equal(r->mailboxes->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(r->mailboxes, 0, const char *), "carol@example.test");

    /* even over a user's address, and expansion meets it too; the user
     * herself is still a user (she logs in, her quota applies) */
    assert_int_equal(dir_alias_add(f->d, "carol@example.test", bob, 1), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "staff@example.test", &r, p), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(r->mailboxes, 0, const char *), "bob@example.test");
    assert_int_equal(dir_user_get(f->d, "carol@example.test", &u, p), APR_SUCCESS);
    assert_string_equal(u->address, "carol@example.test");

    /* deleted: the backend's answer is back */
    assert_int_equal(dir_alias_del(f->d, "carol@example.test"), APR_SUCCESS);
    assert_int_equal(dir_alias_del(f->d, "staff@example.test"), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "staff@example.test", &r, p), APR_SUCCESS);
    assert_int_equal(r->kind, DIR_KIND_LIST);
    assert_int_equal(r->mailboxes->nelts, 2);

    /* a temporary failure of the backend under a local list stops it */
    assert_int_equal(dir_list_add(f->d, "ops@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "ops@example.test", "alice@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "ops@example.test", "down@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "ops@example.test", &r, p), PR_ETEMPFAIL);
}

static void test_overlay_reload(void **state)
{
    fixture_t *f = *state;
    dir_result_t *r;
    const char *t[] = {"alice@example.test", "bob@example.test"};
    assert_int_equal(dir_alias_add(f->d, "teachers@example.test", t, 2), APR_SUCCESS);
    assert_int_equal(fake.opens, 1);

    assert_int_equal(dir_reload(f->d, f->cfg), APR_SUCCESS);
    assert_int_equal(fake.opens, 2);
    assert_int_equal(fake.closes, 1);
    assert_string_equal(dir_backend(f->d)->name, "fake");
    assert_int_equal(dir_caps(f->d), DIR_CAP_WRITE_ALIASES);
    assert_int_equal(dir_resolve(f->d, "teachers@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 2);
    assert_int_equal(dir_list_add(f->d, "after@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "after@example.test", "teachers@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "after@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 2);

    /* the same data dir written by another process while loaded */
    dir_t *b = open_builtin(f);
    assert_int_equal(dir_alias_del(b, "teachers@example.test"), APR_SUCCESS);
    dir_close(b);
    assert_int_equal(dir_resolve(f->d, "teachers@example.test", &r, f->pool), PR_ENOTFOUND);
}

/* ---- failed-credential cache, with the counting fake */

static void test_auth_fail_cache(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    const char *user;

    /* the phone with the stale password: one bind, then the cache */
    for (int i = 0; i < 3; i++)
        assert_int_equal(dir_authenticate(f->d, "alice@example.test", "stale", &user, p), PR_EAUTH);
    assert_int_equal(fake.auth_calls, 1);
    /* the login is normalised as an address: the same key */
    assert_int_equal(dir_authenticate(f->d, "ALICE@Example.test", "stale", &user, p), PR_EAUTH);
    assert_int_equal(fake.auth_calls, 1);
    dir_auth_stats_t s = auth_stats(f->d);
    assert_int_equal(s.verified, 1);
    assert_int_equal(s.failed_cached, 3);
    assert_int_equal(s.failed_entries, 1);
    assert_int_equal(s.entries, 0);

    /* another wrong password goes to the backend (and is remembered too) */
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "stale-2", &user, p), PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "stale-2", &user, p), PR_EAUTH);
    assert_int_equal(fake.auth_calls, 2);
    assert_int_equal(auth_stats(f->d).failed_entries, 2);

    /* the right password works at once, every time (no auth_tag: no
     * verified cache, every success is the backend's) */
    for (int i = 0; i < 2; i++) {
        user = NULL;
        assert_int_equal(dir_authenticate(f->d, "alice@example.test", "alice-pw", &user, p),
                         APR_SUCCESS);
        assert_string_equal(user, "alice@example.test");
    }
    assert_int_equal(fake.auth_calls, 4);
    assert_int_equal(auth_stats(f->d).cached, 0);

    /* a success keeps the failures: the stale phone is still answered here */
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "stale", &user, p), PR_EAUTH);
    assert_int_equal(fake.auth_calls, 4);

    /* keyed by login: the same password for another login, or alice by
     * another name, is asked */
    assert_int_equal(dir_authenticate(f->d, "bob@example.test", "stale", &user, p), PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "alice", "stale", &user, p), PR_EAUTH);
    assert_int_equal(fake.auth_calls, 6);
    assert_int_equal(dir_authenticate(f->d, "alice", "stale", &user, p), PR_EAUTH);
    assert_int_equal(fake.auth_calls, 6);

    /* never remembered: empty passwords and temporary failures */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(dir_authenticate(f->d, "alice@example.test", "", &user, p), PR_EAUTH);
        assert_int_equal(dir_authenticate(f->d, "down@example.test", "x", &user, p), PR_ETEMPFAIL);
    }
    assert_int_equal(fake.auth_calls, 10);

    /* a reload forgets them */
    assert_int_equal(dir_reload(f->d, f->cfg), APR_SUCCESS);
    assert_int_equal(auth_stats(f->d).failed_entries, 0);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "stale", &user, p), PR_EAUTH);
    assert_int_equal(fake.auth_calls, 11);
}

static void test_auth_fail_cache_ttl(void **state)
{
    fixture_t *f = *state;
    const char *user;

    f->cfg->directory.auth_cache_ttl = apr_time_from_msec(300);
    for (int i = 0; i < 2; i++)
        assert_int_equal(dir_authenticate(f->d, "alice@example.test", "stale", &user, f->pool),
                         PR_EAUTH);
    assert_int_equal(fake.auth_calls, 1);
    apr_sleep(apr_time_from_msec(400));
    for (int i = 0; i < 2; i++)
        assert_int_equal(dir_authenticate(f->d, "alice@example.test", "stale", &user, f->pool),
                         PR_EAUTH);
    assert_int_equal(fake.auth_calls, 2);

    /* ttl 0: off, every attempt reaches the backend, nothing kept */
    f->cfg->directory.auth_cache_ttl = 0;
    assert_int_equal(dir_reload(f->d, f->cfg), APR_SUCCESS);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dir_authenticate(f->d, "alice@example.test", "stale", &user, f->pool),
                         PR_EAUTH);
    assert_int_equal(fake.auth_calls, 5);
    dir_auth_stats_t s = auth_stats(f->d);
    assert_int_equal(s.failed_entries, 0);
    assert_int_equal(s.failed_cached, 2); /* one in each TTL above */
}

static void test_auth_fail_cache_bound(void **state)
{
    fixture_t *f = *state;
    const char *user;
    static const char *const pw[] = {"w1", "w2", "w3"};

    dir_auth_cache_set_max(f->d, 2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dir_authenticate(f->d, "alice@example.test", pw[i], &user, f->pool),
                         PR_EAUTH);
    assert_int_equal(fake.auth_calls, 3);
    assert_int_equal(auth_stats(f->d).failed_entries, 2);
    /* the two newest are kept, the oldest went */
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "w3", &user, f->pool), PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "w2", &user, f->pool), PR_EAUTH);
    assert_int_equal(fake.auth_calls, 3);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "w1", &user, f->pool), PR_EAUTH);
    assert_int_equal(fake.auth_calls, 4);
    assert_int_equal(auth_stats(f->d).failed_entries, 2);
    dir_auth_cache_set_max(f->d, 1);
    assert_int_equal(auth_stats(f->d).failed_entries, 1);
    dir_auth_cache_set_max(f->d, 0);
    assert_int_equal(auth_stats(f->d).failed_entries, 0);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "w1", &user, f->pool), PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "w1", &user, f->pool), PR_EAUTH);
    assert_int_equal(fake.auth_calls, 6);
    assert_int_equal(auth_stats(f->d).failed_entries, 0);
    dir_auth_cache_set_max(f->d, DIR_AUTH_CACHE_MAX);
}

static void test_auth_fail_cache_tagged(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    const char *user;

    /* the user keeps typing the password she is about to get */
    for (int i = 0; i < 2; i++)
        assert_int_equal(dir_authenticate(f->d, "alice@example.test", "typed", &user, p), PR_EAUTH);
    assert_int_equal(fake.auth_calls, 1);
    /* set in the directory: a new tag, so it works at once */
    fake.alice_pw = "typed";
    fake.alice_version++;
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "typed", &user, p), APR_SUCCESS);
    assert_int_equal(fake.auth_calls, 2);
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "typed", &user, p), APR_SUCCESS);
    assert_int_equal(fake.auth_calls, 2);
    dir_auth_stats_t s = auth_stats(f->d);
    assert_int_equal(s.cached, 1);
    assert_int_equal(s.entries, 1);

    /* a spray of wrong passwords fills only the failure table: the
     * verified login stays cached */
    dir_auth_cache_set_max(f->d, 2);
    for (int i = 0; i < 5; i++) {
        const char *pw = apr_psprintf(p, "spray-%d", i);
        assert_int_equal(dir_authenticate(f->d, "bob@example.test", pw, &user, p), PR_EAUTH);
    }
    s = auth_stats(f->d);
    assert_int_equal(s.failed_entries, 2);
    assert_int_equal(s.entries, 1);
    int calls = fake.auth_calls;
    assert_int_equal(dir_authenticate(f->d, "alice@example.test", "typed", &user, p), APR_SUCCESS);
    assert_int_equal(fake.auth_calls, calls);

    /* an unknown login (no tag) is remembered with the empty tag */
    assert_int_equal(dir_authenticate(f->d, "nobody@example.test", "x", &user, p), PR_EAUTH);
    assert_int_equal(dir_authenticate(f->d, "nobody@example.test", "x", &user, p), PR_EAUTH);
    assert_int_equal(fake.auth_calls, calls + 1);
    dir_auth_cache_set_max(f->d, DIR_AUTH_CACHE_MAX);
}

/* ---- quota setting */

static void test_user_quota(void **state)
{
    fixture_t *f = *state;
    dir_user_t *u;
    assert_int_equal(dir_user_add(f->d, "alice@example.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_user_set_quota(f->d, "Alice@example.test", 20480), APR_SUCCESS);
    assert_int_equal(dir_user_get(f->d, "alice@example.test", &u, f->pool), APR_SUCCESS);
    assert_int_equal(u->quota, 20480);
    assert_int_equal(dir_user_set_quota(f->d, "alice@example.test", 0), APR_SUCCESS);
    assert_int_equal(dir_user_get(f->d, "alice@example.test", &u, f->pool), APR_SUCCESS);
    assert_int_equal(u->quota, 0);
    assert_int_equal(dir_user_set_quota(f->d, "alice@example.test", -1), APR_SUCCESS);
    assert_int_equal(dir_user_get(f->d, "alice@example.test", &u, f->pool), APR_SUCCESS);
    assert_int_equal(u->quota, -1);
    assert_int_equal(dir_user_set_quota(f->d, "alice@example.test", -2), PR_EINVAL);
    assert_int_equal(dir_user_set_quota(f->d, "nobody@example.test", 1), PR_ENOTFOUND);
    assert_int_equal(dir_user_set_quota(f->d, "not an address", 1), PR_EINVAL);
}

/* The resolution gives each mailbox its user's quota, as dir_user_get
 * would (so the SMTP server asks no second time), and sees a change at
 * once. */
static void test_resolve_quota(void **state)
{
    fixture_t *f = *state;
    dir_result_t *r;
    assert_int_equal(dir_user_add(f->d, "alice@example.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->d, "bob@example.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->d, "carol@example.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_user_set_quota(f->d, "alice@example.test", 20480), APR_SUCCESS);
    assert_int_equal(dir_user_set_quota(f->d, "carol@example.test", 0), APR_SUCCESS);

    assert_int_equal(dir_resolve(f->d, "alice@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->quotas->nelts, 1);
    assert_int_equal(APR_ARRAY_IDX(r->quotas, 0, apr_off_t), 20480);

    /* through an alias and a list: each mailbox its own */
    static const char *const team[] = {"bob@example.test", "everyone@example.test"};
    assert_int_equal(dir_list_add(f->d, "everyone@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "everyone@example.test", "carol@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "everyone@example.test", "alice@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_alias_add(f->d, "team@example.test", team, 2), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "team@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->mailboxes->nelts, 3);
    assert_int_equal(r->quotas->nelts, 3);
    for (int i = 0; i < 3; i++) {
        const char *m = APR_ARRAY_IDX(r->mailboxes, i, const char *);
        apr_off_t q = APR_ARRAY_IDX(r->quotas, i, apr_off_t);
        dir_user_t *u;
        assert_int_equal(dir_user_get(f->d, m, &u, f->pool), APR_SUCCESS);
        assert_true(q == u->quota);
        assert_true(q == (!strcmp(m, "alice@example.test") ? 20480
                          : !strcmp(m, "bob@example.test") ? -1
                                                           : 0));
    }

    assert_int_equal(dir_user_set_quota(f->d, "alice@example.test", 4096), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "alice@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(APR_ARRAY_IDX(r->quotas, 0, apr_off_t), 4096);
}

/* A backend whose lookup does not tell the quota its user_get knows: the
 * resolution says so, for the caller to ask. */
static void test_resolve_quota_unknown(void **state)
{
    fixture_t *f = *state;
    dir_result_t *r;
    dir_user_t *u;
    assert_int_equal(dir_resolve(f->d, "alice@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(r->quotas->nelts, 1);
    assert_true(APR_ARRAY_IDX(r->quotas, 0, apr_off_t) == DIR_QUOTA_UNKNOWN);
    assert_int_equal(dir_user_get(f->d, "alice@example.test", &u, f->pool), APR_SUCCESS);
    assert_int_equal(u->quota, 12345);
}

/* ---- concurrency and reload */

typedef struct worker_t {
    dir_t *d;
    int failures;
} worker_t;

static void *APR_THREAD_FUNC worker_run(apr_thread_t *thd, void *data)
{
    worker_t *w = data;
    apr_pool_t *p;
    apr_pool_create_unmanaged_ex(&p, NULL, NULL);
    for (int i = 0; i < 30; i++) {
        dir_result_t *r;
        const char *user;
        if (dir_resolve(w->d, "staff@example.test", &r, p) != APR_SUCCESS ||
            r->mailboxes->nelts != 2)
            w->failures++;
        if (i % 10 == 0 && dir_authenticate(w->d, "a@example.test", "pw", &user, p) != APR_SUCCESS)
            w->failures++;
        apr_pool_clear(p);
    }
    apr_pool_destroy(p);
    /* Return rather than apr_thread_exit(): pthread_exit's unwinding trips
     * a false stack-buffer-underflow in ASan's thread teardown. */
    (void)thd;
    return NULL;
}

static void test_concurrent(void **state)
{
    fixture_t *f = *state;
    enum { N = 8 };
    apr_thread_t *t[N];
    worker_t w[N];
    assert_int_equal(dir_user_add(f->d, "a@example.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_user_add(f->d, "b@example.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_list_add(f->d, "staff@example.test"), APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "staff@example.test", "a@example.test"),
                     APR_SUCCESS);
    assert_int_equal(dir_list_member_add(f->d, "staff@example.test", "b@example.test"),
                     APR_SUCCESS);
    for (int i = 0; i < N; i++) {
        w[i].d = f->d;
        w[i].failures = 0;
        assert_int_equal(apr_thread_create(&t[i], NULL, worker_run, &w[i], f->pool), APR_SUCCESS);
    }
    /* reload under load: calls in flight finish, later ones see the new backend */
    assert_int_equal(dir_reload(f->d, f->cfg), APR_SUCCESS);
    for (int i = 0; i < N; i++) {
        apr_status_t rv;
        apr_thread_join(&rv, t[i]);
        assert_int_equal(w[i].failures, 0);
    }
    dir_result_t *r;
    assert_int_equal(dir_resolve(f->d, "staff@example.test", &r, f->pool), APR_SUCCESS);
}

static void test_reopen_and_unknown_backend(void **state)
{
    fixture_t *f = *state;
    dir_t *d2;
    dir_result_t *r;
    assert_int_equal(dir_user_add(f->d, "keep@example.test", "pw"), APR_SUCCESS);
    /* a second handle on the same data dir (the CLI beside the daemon) */
    assert_int_equal(dir_open(&d2, f->cfg, f->pool), APR_SUCCESS);
    assert_int_equal(dir_resolve(d2, "keep@example.test", &r, f->pool), APR_SUCCESS);
    assert_int_equal(dir_user_add(d2, "new@example.test", "pw"), APR_SUCCESS);
    assert_int_equal(dir_resolve(f->d, "new@example.test", &r, f->pool), APR_SUCCESS);
    dir_close(d2);

    pr_config_t cfg2 = *f->cfg;
    cfg2.directory.backend = "nosuch";
    assert_int_equal(dir_open(&d2, &cfg2, f->pool), PR_EINVAL);
    assert_int_equal(dir_reload(f->d, &cfg2), PR_EINVAL);
    /* the old backend stays */
    assert_int_equal(dir_resolve(f->d, "keep@example.test", &r, f->pool), APR_SUCCESS);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&g_pool, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_password),
        cmocka_unit_test_setup_teardown(test_user_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolve_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_domains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alias, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop_and_depth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expansion_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sender_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_cache_hit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_cache_password_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_cache_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_cache_reload_and_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_fail_cache_local, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlay_aliases_and_lists, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_overlay_list_policy, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_overlay_users_read_only, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_overlay_shadow, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_overlay_reload, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_auth_fail_cache, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_auth_fail_cache_ttl, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_auth_fail_cache_bound, setup_fake, teardown),
        cmocka_unit_test_setup_teardown(test_auth_fail_cache_tagged, setup_fake_tagged, teardown),
        cmocka_unit_test_setup_teardown(test_resolve_quota_unknown, setup_fake_tagged, teardown),
        cmocka_unit_test_setup_teardown(test_user_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolve_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_and_unknown_backend, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_pool_destroy(g_pool);
    apr_terminate();
    return rc;
}
