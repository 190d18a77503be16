/* Unit tests for the admin operations: what they accept, what they refuse
 * and the one-line messages they give a human, mailbox show, and the
 * outbound queue (list, show, flush, retry, delete). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "admin/admin_ops.h"
#include "service/core/config.h"
#include "service/core/status.h"

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fixture_t {
    apr_pool_t *pool;
    pr_config_t *cfg;
    const char *dir;
    admin_t *a;
} fixture_t;

static apr_pool_t *g_pool;

/* Remove a test directory tree. */
static void test_rmtree(const char *dir, apr_pool_t *pool)
{
    apr_dir_t *dh;
    apr_finfo_t fi;
    if (apr_dir_open(&dh, dir, pool) != APR_SUCCESS) return;
    while (apr_dir_read(&fi, APR_FINFO_NAME | APR_FINFO_TYPE, dh) == APR_SUCCESS) {
        if (strcmp(fi.name, ".") == 0 || strcmp(fi.name, "..") == 0) continue;
        const char *path = apr_pstrcat(pool, dir, "/", fi.name, NULL);
        if (fi.filetype == APR_DIR)
            test_rmtree(path, pool);
        else
            apr_file_remove(path, pool);
    }
    apr_dir_close(dh);
    apr_dir_remove(dir, pool);
}

static int setup(void **state)
{
    static unsigned counter;
    fixture_t *f = calloc(1, sizeof(*f));
    const char *base = getenv("PR_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    apr_pool_create(&f->pool, g_pool);
    f->dir = apr_psprintf(f->pool, "%s/test_admin.%ld.%" APR_TIME_T_FMT ".%u", base, (long)getpid(),
                          apr_time_now(), counter++);
    assert_int_equal(apr_dir_make_recursive(f->dir, APR_FPROT_OS_DEFAULT, f->pool), APR_SUCCESS);
    f->cfg = apr_pcalloc(f->pool, sizeof(*f->cfg));
    pr_config_defaults(f->cfg, f->pool);
    f->cfg->path = "test.conf";
    f->cfg->server.data_dir = f->dir;
    static const char *domains[] = {"example.test"};
    f->cfg->server.domains.n = 1;
    f->cfg->server.domains.v = domains;
    assert_int_equal(admin_open(&f->a, f->cfg, NULL, NULL, f->pool), APR_SUCCESS);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    admin_close(f->a);
    test_rmtree(f->dir, f->pool);
    apr_pool_destroy(f->pool);
    free(f);
    return 0;
}

#define EXPECT_ERR(call, status, msg)                                                              \
    do {                                                                                           \
        const char *err_ = NULL;                                                                   \
        assert_int_equal((call), (status));                                                        \
        assert_non_null(err_);                                                                     \
        assert_string_equal(err_, (msg));                                                          \
    } while (0)

#define EXPECT_OK(call)                                                                            \
    do {                                                                                           \
        const char *err_ = NULL;                                                                   \
        apr_status_t st_ = (call);                                                                 \
        if (st_ != APR_SUCCESS) fail_msg("%s", err_ ? err_ : "(no message)");                      \
    } while (0)

/* A second directory on the fixture's data dir, closed with the pool. */
static dir_t *dir_open_for_test(fixture_t *f)
{
    dir_t *d;
    assert_int_equal(dir_open(&d, f->cfg, f->pool), APR_SUCCESS);
    return d;
}

static void test_domains(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    apr_array_header_t *list;

    EXPECT_ERR(admin_domain_add(f->a, "Example.test", &err_, p), PR_EEXIST,
               "domain 'example.test' is already local ([server] domains in test.conf)");
    EXPECT_ERR(admin_domain_add(f->a, "bad domain", &err_, p), PR_EINVAL,
               "invalid domain name 'bad domain'");
    EXPECT_OK(admin_domain_add(f->a, "Staff.Example.test", &err_, p));
    EXPECT_ERR(admin_domain_add(f->a, "staff.example.test", &err_, p), PR_EEXIST,
               "domain 'staff.example.test' already exists");
    EXPECT_OK(admin_domain_add(f->a, "a.test", &err_, p));

    EXPECT_OK(admin_domain_list(f->a, &list, &err_, p));
    assert_int_equal(list->nelts, 3);
    assert_string_equal(APR_ARRAY_IDX(list, 0, const char *), "example.test"); /* config first */
    assert_string_equal(APR_ARRAY_IDX(list, 1, const char *), "a.test");
    assert_string_equal(APR_ARRAY_IDX(list, 2, const char *), "staff.example.test");

    EXPECT_ERR(admin_domain_del(f->a, "example.test", &err_, p), PR_EPERM,
               "domain 'example.test' is set in [server] domains in test.conf; remove it there");
    EXPECT_ERR(admin_domain_del(f->a, "nope.test", &err_, p), PR_ENOTFOUND,
               "domain 'nope.test' does not exist");
    EXPECT_OK(admin_user_add(f->a, "t@staff.example.test", "pw", &err_, p));
    EXPECT_OK(admin_list_add(f->a, "all@staff.example.test", &err_, p));
    EXPECT_ERR(admin_domain_del(f->a, "staff.example.test", &err_, p), PR_EPERM,
               "domain 'staff.example.test' still has 1 user, 0 aliases and 1 list; "
               "delete them first");
    EXPECT_OK(admin_user_del(f->a, "t@staff.example.test", &err_, p));
    EXPECT_OK(admin_list_del(f->a, "all@staff.example.test", &err_, p));
    EXPECT_OK(admin_domain_del(f->a, "staff.example.test", &err_, p));
    EXPECT_OK(admin_domain_list(f->a, &list, &err_, p));
    assert_int_equal(list->nelts, 2);
}

static void test_users(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    apr_array_header_t *users;
    const char *user;

    EXPECT_OK(admin_user_add(f->a, "Alice@Example.test", "pw1", &err_, p));
    EXPECT_ERR(admin_user_add(f->a, "alice@example.test", "pw", &err_, p), PR_EEXIST,
               "user 'alice@example.test' already exists");
    EXPECT_ERR(admin_user_add(f->a, "bob@other.test", "pw", &err_, p), PR_EINVAL,
               "domain 'other.test' is not local; add it with: postroom domain add other.test");
    EXPECT_ERR(admin_user_add(f->a, "bob@example.test", "", &err_, p), PR_EINVAL,
               "empty password refused");
    EXPECT_ERR(admin_user_add(f->a, "user%other.test@example.test", "pw", &err_, p), PR_EINVAL,
               "invalid address 'user%other.test@example.test' (expected user@domain)");
    EXPECT_ERR(admin_user_add(f->a, "bob", "pw", &err_, p), PR_EINVAL,
               "invalid address 'bob' (expected user@domain)");

    EXPECT_OK(admin_user_list(f->a, &users, &err_, p));
    assert_int_equal(users->nelts, 1);
    assert_string_equal(APR_ARRAY_IDX(users, 0, dir_user_t).address, "alice@example.test");

    EXPECT_OK(admin_user_passwd(f->a, "alice@example.test", "pw2", &err_, p));
    EXPECT_ERR(admin_user_passwd(f->a, "alice@example.test", "", &err_, p), PR_EINVAL,
               "empty password refused");
    EXPECT_ERR(admin_user_passwd(f->a, "carol@example.test", "x", &err_, p), PR_ENOTFOUND,
               "user 'carol@example.test' does not exist");

    /* the change is visible through the directory the daemon would use */
    dir_t *d;
    assert_int_equal(dir_open(&d, f->cfg, p), APR_SUCCESS);
    assert_int_equal(dir_authenticate(d, "alice@example.test", "pw2", &user, p), APR_SUCCESS);
    assert_int_equal(dir_authenticate(d, "alice@example.test", "pw1", &user, p), PR_EAUTH);
    dir_close(d);

    EXPECT_OK(admin_user_del(f->a, "alice@example.test", &err_, p));
    EXPECT_ERR(admin_user_del(f->a, "alice@example.test", &err_, p), PR_ENOTFOUND,
               "user 'alice@example.test' does not exist");
}

static void test_aliases(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    apr_array_header_t *aliases;

    EXPECT_OK(admin_user_add(f->a, "head@example.test", "pw", &err_, p));
    const char *t1[] = {"Head@example.test", "Someone@Remote.test"};
    EXPECT_OK(admin_alias_add(f->a, "office@example.test", t1, 2, &err_, p));
    EXPECT_ERR(admin_alias_add(f->a, "office@example.test", t1, 2, &err_, p), PR_EEXIST,
               "alias 'office@example.test' already has these targets");
    const char *missing[] = {"typo@example.test"};
    EXPECT_ERR(admin_alias_add(f->a, "info@example.test", missing, 1, &err_, p), PR_ENOTFOUND,
               "'typo@example.test' does not exist (no user, alias or list has this address)");
    const char *self[] = {"info@example.test"};
    EXPECT_ERR(admin_alias_add(f->a, "info@example.test", self, 1, &err_, p), PR_ENOTFOUND,
               "'info@example.test' does not exist (no user, alias or list has this address)");
    const char *self2[] = {"office@example.test"};
    EXPECT_ERR(admin_alias_add(f->a, "office@example.test", self2, 1, &err_, p), PR_EINVAL,
               "alias 'office@example.test' cannot point at itself");
    const char *bad[] = {"a!b@example.test"};
    EXPECT_ERR(admin_alias_add(f->a, "info@example.test", bad, 1, &err_, p), PR_EINVAL,
               "invalid address 'a!b@example.test'");
    EXPECT_ERR(admin_alias_add(f->a, "head@example.test", t1, 1, &err_, p), PR_EEXIST,
               "'head@example.test' is already a user");
    EXPECT_ERR(admin_alias_add(f->a, "x@remote.test", t1, 1, &err_, p), PR_EINVAL,
               "domain 'remote.test' is not local; add it with: postroom domain add remote.test");
    EXPECT_ERR(admin_alias_add(f->a, "info@example.test", t1, 0, &err_, p), PR_EINVAL,
               "alias 'info@example.test' needs at least one target");

    EXPECT_OK(admin_alias_list(f->a, &aliases, &err_, p));
    assert_int_equal(aliases->nelts, 1);
    const dir_entry_t *e = APR_ARRAY_IDX(aliases, 0, const dir_entry_t *);
    assert_string_equal(e->address, "office@example.test");
    assert_int_equal(e->targets->nelts, 2);

    EXPECT_ERR(admin_user_add(f->a, "office@example.test", "pw", &err_, p), PR_EEXIST,
               "'office@example.test' is already an alias");
    EXPECT_OK(admin_alias_del(f->a, "office@example.test", &err_, p));
    EXPECT_ERR(admin_alias_del(f->a, "office@example.test", &err_, p), PR_ENOTFOUND,
               "alias 'office@example.test' does not exist");
}

static void test_lists(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    apr_array_header_t *lists;

    EXPECT_OK(admin_user_add(f->a, "t1@example.test", "pw", &err_, p));
    EXPECT_OK(admin_list_add(f->a, "staff@example.test", &err_, p));
    EXPECT_ERR(admin_list_add(f->a, "staff@example.test", &err_, p), PR_EEXIST,
               "list 'staff@example.test' already exists");
    EXPECT_ERR(admin_list_add(f->a, "t1@example.test", &err_, p), PR_EEXIST,
               "'t1@example.test' is already a user");
    EXPECT_OK(admin_list_member_add(f->a, "staff@example.test", "T1@example.test", &err_, p));
    EXPECT_OK(admin_list_member_add(f->a, "staff@example.test", "parent@remote.test", &err_, p));
    EXPECT_ERR(admin_list_member_add(f->a, "staff@example.test", "t1@example.test", &err_, p),
               PR_EEXIST, "'t1@example.test' is already a member of 'staff@example.test'");
    EXPECT_ERR(admin_list_member_add(f->a, "nolist@example.test", "t1@example.test", &err_, p),
               PR_ENOTFOUND, "list 'nolist@example.test' does not exist");
    EXPECT_ERR(admin_list_member_add(f->a, "t1@example.test", "t1@example.test", &err_, p),
               PR_ENOTFOUND, "list 't1@example.test' does not exist");
    EXPECT_ERR(admin_list_member_add(f->a, "staff@example.test", "staff@example.test", &err_, p),
               PR_EINVAL, "list 'staff@example.test' cannot be a member of itself");
    EXPECT_ERR(admin_list_member_add(f->a, "staff@example.test", "ghost@example.test", &err_, p),
               PR_ENOTFOUND,
               "'ghost@example.test' does not exist (no user, alias or list has this address)");

    EXPECT_OK(admin_list_show(f->a, &lists, &err_, p));
    assert_int_equal(lists->nelts, 1);
    const admin_list_t *l = &APR_ARRAY_IDX(lists, 0, admin_list_t);
    assert_int_equal(l->members->nelts, 2);
    assert_string_equal(APR_ARRAY_IDX(l->members, 0, const char *), "t1@example.test");
    assert_int_equal(l->policy, DIR_POST_ANYONE);

    EXPECT_OK(admin_list_member_del(f->a, "staff@example.test", "t1@example.test", &err_, p));
    EXPECT_ERR(admin_list_member_del(f->a, "staff@example.test", "t1@example.test", &err_, p),
               PR_ENOTFOUND, "'t1@example.test' is not a member of 'staff@example.test'");
    EXPECT_OK(admin_list_del(f->a, "staff@example.test", &err_, p));
    EXPECT_ERR(admin_list_del(f->a, "staff@example.test", &err_, p), PR_ENOTFOUND,
               "list 'staff@example.test' does not exist");
}

static void test_list_policy(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    apr_array_header_t *lists;

    EXPECT_OK(admin_user_add(f->a, "t1@example.test", "pw", &err_, p));
    EXPECT_OK(admin_list_add(f->a, "staff@example.test", &err_, p));
    EXPECT_OK(admin_list_add(f->a, "all@example.test", &err_, p));
    EXPECT_OK(admin_list_policy(f->a, "Staff@example.test", "members", &err_, p));
    EXPECT_OK(admin_list_policy(f->a, "all@example.test", "local", &err_, p));
    EXPECT_ERR(admin_list_policy(f->a, "staff@example.test", "Members", &err_, p), PR_EINVAL,
               "unknown posting policy 'Members' (expected anyone, members or local)");
    EXPECT_ERR(admin_list_policy(f->a, "staff@example.test", "", &err_, p), PR_EINVAL,
               "unknown posting policy '' (expected anyone, members or local)");
    EXPECT_ERR(admin_list_policy(f->a, "t1@example.test", "members", &err_, p), PR_ENOTFOUND,
               "'t1@example.test' is a user, not a list");
    EXPECT_ERR(admin_list_policy(f->a, "nolist@example.test", "members", &err_, p), PR_ENOTFOUND,
               "list 'nolist@example.test' does not exist");
    EXPECT_ERR(admin_list_policy(f->a, "bad", "members", &err_, p), PR_EINVAL,
               "invalid address 'bad'");

    EXPECT_OK(admin_list_show(f->a, &lists, &err_, p));
    assert_int_equal(lists->nelts, 2);
    const admin_list_t *l = &APR_ARRAY_IDX(lists, 0, admin_list_t);
    assert_string_equal(l->address, "all@example.test");
    assert_int_equal(l->policy, DIR_POST_LOCAL);
    assert_non_null(l->members);
    l = &APR_ARRAY_IDX(lists, 1, admin_list_t);
    assert_string_equal(l->address, "staff@example.test");
    assert_int_equal(l->policy, DIR_POST_MEMBERS);

    /* back to anyone; a deleted list's policy goes with it */
    EXPECT_OK(admin_list_policy(f->a, "staff@example.test", "anyone", &err_, p));
    EXPECT_OK(admin_list_del(f->a, "all@example.test", &err_, p));
    EXPECT_OK(admin_list_add(f->a, "all@example.test", &err_, p));
    EXPECT_OK(admin_list_show(f->a, &lists, &err_, p));
    assert_int_equal(lists->nelts, 2);
    for (int i = 0; i < lists->nelts; i++)
        assert_int_equal(APR_ARRAY_IDX(lists, i, admin_list_t).policy, DIR_POST_ANYONE);
}

static void test_mailbox_show_empty(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    admin_mailbox_t *m;

    EXPECT_OK(admin_user_add(f->a, "new@example.test", "pw", &err_, p));
    EXPECT_OK(admin_mailbox_show(f->a, "New@example.test", &m, &err_, p));
    assert_string_equal(m->address, "new@example.test");
    assert_int_equal(m->messages, 0);
    assert_int_equal(m->size, 0);
    for (int i = 0; i < m->folders->nelts; i++)
        assert_int_equal(APR_ARRAY_IDX(m->folders, i, admin_folder_t).messages, 0);
    EXPECT_ERR(admin_mailbox_show(f->a, "nobody@example.test", &m, &err_, p), PR_ENOTFOUND,
               "user 'nobody@example.test' does not exist");
    EXPECT_ERR(admin_mailbox_show(f->a, "bad", &m, &err_, p), PR_EINVAL, "invalid address 'bad'");
}

static void test_user_quota(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    admin_mailbox_t *m;
    dir_user_t *u;

    f->cfg->store.default_quota = 20 * 1024;
    EXPECT_OK(admin_user_add(f->a, "q@example.test", "pw", &err_, p));
    EXPECT_OK(admin_mailbox_show(f->a, "q@example.test", &m, &err_, p));
    assert_int_equal(m->used, 0);
    assert_int_equal(m->quota, 20 * 1024);
    assert_true(m->quota_is_default);

    EXPECT_OK(admin_user_quota(f->a, "Q@example.test", 5000, &err_, p));
    EXPECT_OK(admin_mailbox_show(f->a, "q@example.test", &m, &err_, p));
    assert_int_equal(m->quota, 5000);
    assert_false(m->quota_is_default);
    EXPECT_OK(admin_user_quota(f->a, "q@example.test", 0, &err_, p));
    EXPECT_OK(admin_mailbox_show(f->a, "q@example.test", &m, &err_, p));
    assert_int_equal(m->quota, 0); /* unlimited */
    assert_false(m->quota_is_default);
    EXPECT_OK(admin_user_quota(f->a, "q@example.test", -1, &err_, p));
    assert_int_equal(dir_user_get(dir_open_for_test(f), "q@example.test", &u, p), APR_SUCCESS);
    assert_int_equal(u->quota, -1);
    EXPECT_OK(admin_mailbox_show(f->a, "q@example.test", &m, &err_, p));
    assert_int_equal(m->quota, 20 * 1024);
    assert_true(m->quota_is_default);

    EXPECT_ERR(admin_user_quota(f->a, "nobody@example.test", 1, &err_, p), PR_ENOTFOUND,
               "user 'nobody@example.test' does not exist");
    EXPECT_ERR(admin_user_quota(f->a, "bad", 1, &err_, p), PR_EINVAL, "invalid address 'bad'");
    EXPECT_ERR(admin_user_quota(f->a, "q@example.test", -2, &err_, p), PR_EINVAL,
               "invalid quota (bytes, 0 for unlimited, or the default)");
}

static void test_shared_handles(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    dir_t *d;
    admin_t *a2;
    dir_result_t *r;

    /* as in the daemon: admin on the directory it already has open */
    assert_int_equal(dir_open(&d, f->cfg, p), APR_SUCCESS);
    assert_int_equal(admin_open(&a2, f->cfg, d, NULL, p), APR_SUCCESS);
    EXPECT_OK(admin_user_add(a2, "shared@example.test", "pw", &err_, p));
    admin_close(a2);
    /* admin_close leaves a directory it did not open alone */
    assert_int_equal(dir_resolve(d, "shared@example.test", &r, p), APR_SUCCESS);
    dir_close(d);
}

/* ---- the outbound queue */

static store_body_t *make_body(store_t *st, const char *text, apr_pool_t *p)
{
    store_body_t *b;
    assert_int_equal(store_body_create(&b, st, p), APR_SUCCESS);
    assert_int_equal(store_body_append(b, text, strlen(text)), APR_SUCCESS);
    return b;
}

/* Queue a message for the given remote recipients, as SMTP would. */
static void queue_message(store_t *st, const char *sender, const char *const *rcpts, int n,
                          const char *body, apr_pool_t *p)
{
    store_delivery_t d = {0};
    d.sender = sender;
    d.body = make_body(st, body, p);
    d.n_remote = n;
    d.remote = rcpts;
    d.remote_prefix = "Received: from client.example.net by mail.example.test\r\n";
    d.remote_prefix_len = strlen(d.remote_prefix);
    assert_int_equal(store_deliver(st, &d, NULL, p), APR_SUCCESS);
}

static const store_qmsg_t *queue_find(apr_array_header_t *msgs, apr_int64_t id)
{
    for (int i = 0; i < msgs->nelts; i++)
        if (APR_ARRAY_IDX(msgs, i, const store_qmsg_t *)->id == id)
            return APR_ARRAY_IDX(msgs, i, const store_qmsg_t *);
    return NULL;
}

static void test_queue_errors(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    apr_array_header_t *msgs;
    admin_qmsg_t *q;
    apr_uint32_t pending = 99;

    /* An empty queue: a fresh store, nothing to do, no error. */
    EXPECT_OK(admin_queue_list(f->a, &msgs, &err_, p));
    assert_int_equal(msgs->nelts, 0);
    EXPECT_OK(admin_queue_flush(f->a, &pending, &err_, p));
    assert_int_equal(pending, 0);
    EXPECT_OK(admin_queue_flush(f->a, NULL, &err_, p));

    static const char *const bad[] = {
        "", "abc", "0", "-1", "+1", "1 ", " 1", "1x", "0x10", "1.5", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *msg = apr_psprintf(
            p, "invalid queue ID '%s' (expected a number, as in the queue list)", bad[i]);
        EXPECT_ERR(admin_queue_show(f->a, bad[i], &q, &err_, p), PR_EINVAL, msg);
        EXPECT_ERR(admin_queue_retry(f->a, bad[i], &err_, p), PR_EINVAL, msg);
        EXPECT_ERR(admin_queue_delete(f->a, bad[i], &err_, p), PR_EINVAL, msg);
    }
    EXPECT_ERR(admin_queue_retry(f->a, NULL, &err_, p), PR_EINVAL,
               "invalid queue ID '' (expected a number, as in the queue list)");
    static const char unknown[] =
        "no message with ID 42 in the queue (delivered, bounced or deleted meanwhile?)";
    EXPECT_ERR(admin_queue_show(f->a, "42", &q, &err_, p), PR_ENOTFOUND, unknown);
    EXPECT_ERR(admin_queue_retry(f->a, "42", &err_, p), PR_ENOTFOUND, unknown);
    EXPECT_ERR(admin_queue_delete(f->a, "42", &err_, p), PR_ENOTFOUND, unknown);
    EXPECT_ERR(admin_queue_show(f->a, "9223372036854775807", &q, &err_, p), PR_ENOTFOUND,
               "no message with ID 9223372036854775807 in the queue (delivered, bounced or "
               "deleted meanwhile?)");
}

static void test_queue_ops(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    apr_array_header_t *msgs;
    admin_qmsg_t *q;
    apr_uint32_t pending;
    const store_qmsg_t *m;

    /* The CLI's case: the queue written by another store handle (the
     * daemon's), read and changed through the admin's own. */
    store_t *st;
    store_options_t so = {0};
    so.data_dir = f->dir;
    assert_int_equal(store_open(&st, &so, p), APR_SUCCESS);

    apr_time_t before = apr_time_now();
    static const char *const two[] = {"bob@remote.test", "carol@other.test"};
    static const char *const one[] = {"postmaster@remote.test"};
    queue_message(st, "alice@example.test", two, 2,
                  "From: Alice <alice@example.test>\r\nSubject: trip\r\n\r\nhello\r\n", p);
    queue_message(st, "", one, 1, "Subject: Undelivered\r\n\r\nreport\r\n", p);

    EXPECT_OK(admin_queue_list(f->a, &msgs, &err_, p));
    assert_int_equal(msgs->nelts, 2);
    const store_qmsg_t *m1 = APR_ARRAY_IDX(msgs, 0, const store_qmsg_t *);
    const store_qmsg_t *m2 = APR_ARRAY_IDX(msgs, 1, const store_qmsg_t *);
    assert_true(m1->id > 0 && m2->id > m1->id); /* oldest first */
    assert_string_equal(m1->sender, "alice@example.test");
    assert_string_equal(m2->sender, "");
    assert_true(m1->created >= before && m1->created <= apr_time_now());
    assert_int_equal(m1->size, (apr_off_t)(strlen("Received: from client.example.net by "
                                                  "mail.example.test\r\n") +
                                           strlen("From: Alice <alice@example.test>\r\n"
                                                  "Subject: trip\r\n\r\nhello\r\n")));
    assert_int_equal(m1->rcpts->nelts, 2);
    const store_qrcpt_t *r = &APR_ARRAY_IDX(m1->rcpts, 0, store_qrcpt_t);
    assert_string_equal(r->address, "bob@remote.test");
    assert_int_equal(r->state, STORE_Q_PENDING);
    assert_int_equal(r->attempts, 0);
    assert_string_equal(r->last_reply, "");
    const char *id1 = apr_psprintf(p, "%" APR_INT64_T_FMT, m1->id);
    const char *id2 = apr_psprintf(p, "%" APR_INT64_T_FMT, m2->id);
    apr_int64_t qid1 = m1->id;

    /* Show: the same, with the header as it will be sent. */
    EXPECT_OK(admin_queue_show(f->a, id1, &q, &err_, p));
    assert_int_equal(q->msg->id, qid1);
    assert_int_equal(q->msg->rcpts->nelts, 2);
    assert_string_equal(q->headers, "Received: from client.example.net by mail.example.test\r\n"
                                    "From: Alice <alice@example.test>\r\nSubject: trip\r\n");
    assert_int_equal(q->headers_len, strlen(q->headers));
    assert_false(q->headers_truncated);

    /* The daemon's attempts: both deferred an hour, one after 2 tries. */
    apr_time_t later = apr_time_now() + apr_time_from_sec(3600);
    store_qresult_t res[] = {
        {APR_ARRAY_IDX(m1->rcpts, 0, store_qrcpt_t).id, STORE_Q_PENDING, later,
         "451 4.4.3 DNS lookup failed", 1, 0},
        {APR_ARRAY_IDX(m1->rcpts, 1, store_qrcpt_t).id, STORE_Q_PENDING, later, "421 4.3.2 busy", 1,
         0},
        {APR_ARRAY_IDX(m2->rcpts, 0, store_qrcpt_t).id, STORE_Q_PENDING, later, "451 later", 1, 0},
    };
    assert_int_equal(store_queue_update(st, res, 3, NULL, 0), APR_SUCCESS);
    assert_int_equal(store_queue_update(st, res, 1, NULL, 0), APR_SUCCESS);
    EXPECT_OK(admin_queue_list(f->a, &msgs, &err_, p));
    m = queue_find(msgs, qid1);
    assert_non_null(m);
    r = &APR_ARRAY_IDX(m->rcpts, 0, store_qrcpt_t);
    assert_int_equal(r->attempts, 2);
    assert_string_equal(r->last_reply, "451 4.4.3 DNS lookup failed");
    assert_true(r->next_attempt == later);

    /* Retry one message: its recipients due now, the other untouched. */
    EXPECT_OK(admin_queue_retry(f->a, id1, &err_, p));
    apr_time_t now = apr_time_now();
    EXPECT_OK(admin_queue_list(f->a, &msgs, &err_, p));
    m = queue_find(msgs, qid1);
    for (int i = 0; i < m->rcpts->nelts; i++)
        assert_true(APR_ARRAY_IDX(m->rcpts, i, store_qrcpt_t).next_attempt <= now);
    m = queue_find(msgs, m2->id);
    assert_true(APR_ARRAY_IDX(m->rcpts, 0, store_qrcpt_t).next_attempt == later);

    /* Flush: everything due now. */
    EXPECT_OK(admin_queue_flush(f->a, &pending, &err_, p));
    assert_int_equal(pending, 3);
    now = apr_time_now();
    EXPECT_OK(admin_queue_list(f->a, &msgs, &err_, p));
    for (int i = 0; i < msgs->nelts; i++) {
        m = APR_ARRAY_IDX(msgs, i, const store_qmsg_t *);
        for (int j = 0; j < m->rcpts->nelts; j++)
            assert_true(APR_ARRAY_IDX(m->rcpts, j, store_qrcpt_t).next_attempt <= now);
    }

    /* A finished recipient is still listed beside a pending one. */
    store_qresult_t done = {
        APR_ARRAY_IDX(m1->rcpts, 1, store_qrcpt_t).id, STORE_Q_DELIVERED, 0, "250 2.0.0 ok", 1, 0};
    assert_int_equal(store_queue_update(st, &done, 1, NULL, 0), APR_SUCCESS);
    EXPECT_OK(admin_queue_show(f->a, id1, &q, &err_, p));
    assert_int_equal(APR_ARRAY_IDX(q->msg->rcpts, 1, store_qrcpt_t).state, STORE_Q_DELIVERED);
    EXPECT_OK(admin_queue_flush(f->a, &pending, &err_, p));
    assert_int_equal(pending, 2);

    /* Delete: gone, without a bounce (no mail for alice appears). */
    EXPECT_OK(admin_queue_delete(f->a, id1, &err_, p));
    EXPECT_OK(admin_queue_list(f->a, &msgs, &err_, p));
    assert_int_equal(msgs->nelts, 1);
    assert_null(queue_find(msgs, qid1));
    const char *gone = apr_psprintf(p,
                                    "no message with ID %s in the queue (delivered, bounced or "
                                    "deleted meanwhile?)",
                                    id1);
    EXPECT_ERR(admin_queue_delete(f->a, id1, &err_, p), PR_ENOTFOUND, gone);
    EXPECT_ERR(admin_queue_retry(f->a, id1, &err_, p), PR_ENOTFOUND, gone);
    EXPECT_ERR(admin_queue_show(f->a, id1, &q, &err_, p), PR_ENOTFOUND, gone);
    store_reader_t *rd;
    apr_pool_t *rp;
    apr_pool_create(&rp, p);
    assert_int_equal(store_reader_open(&rd, st, rp), APR_SUCCESS);
    apr_array_header_t *folders;
    assert_int_equal(store_folders_list(rd, "alice@example.test", &folders, rp), APR_SUCCESS);
    assert_int_equal(folders->nelts, 0);
    apr_pool_destroy(rp);

    EXPECT_OK(admin_queue_delete(f->a, id2, &err_, p));
    EXPECT_OK(admin_queue_list(f->a, &msgs, &err_, p));
    assert_int_equal(msgs->nelts, 0);
    store_close(st);
}

/* The header part of show: a message that is all header, and one whose
 * header is longer than the limit. */
static void test_queue_show_headers(void **state)
{
    fixture_t *f = *state;
    apr_pool_t *p = f->pool;
    apr_array_header_t *msgs;
    admin_qmsg_t *q;
    store_t *st;
    store_options_t so = {0};
    so.data_dir = f->dir;
    so.no_writer = 1;
    assert_int_equal(store_open(&st, &so, p), APR_SUCCESS);
    static const char *const one[] = {"bob@remote.test"};
    static const char prefix[] = "Received: from client.example.net by mail.example.test\r\n";

    queue_message(st, "a@example.test", one, 1, "Subject: only a header\r\n", p);
    queue_message(st, "a@example.test", one, 1, "\r\nno header at all\r\n", p);
    char *big = apr_palloc(p, 100 * 1024);
    apr_size_t len = 0;
    while (len < 80 * 1024)
        len += (apr_size_t)sprintf(big + len, "X-Pad-%05zu: %080d\r\n", len, 0);
    strcpy(big + len, "\r\nbody\r\n");
    queue_message(st, "a@example.test", one, 1, big, p);

    EXPECT_OK(admin_queue_list(f->a, &msgs, &err_, p));
    assert_int_equal(msgs->nelts, 3);
    const char *ids[3];
    for (int i = 0; i < 3; i++)
        ids[i] =
            apr_psprintf(p, "%" APR_INT64_T_FMT, APR_ARRAY_IDX(msgs, i, const store_qmsg_t *)->id);

    EXPECT_OK(admin_queue_show(f->a, ids[0], &q, &err_, p));
    assert_string_equal(q->headers, apr_pstrcat(p, prefix, "Subject: only a header\r\n", NULL));
    assert_false(q->headers_truncated);

    EXPECT_OK(admin_queue_show(f->a, ids[1], &q, &err_, p));
    assert_string_equal(q->headers, prefix);
    assert_false(q->headers_truncated);

    EXPECT_OK(admin_queue_show(f->a, ids[2], &q, &err_, p));
    assert_true(q->headers_truncated);
    assert_true(q->headers_len <= ADMIN_QUEUE_HEADER_MAX);
    assert_true(q->headers_len > ADMIN_QUEUE_HEADER_MAX - 200);
    assert_int_equal(strlen(q->headers), q->headers_len);
    assert_memory_equal(q->headers, prefix, strlen(prefix));
    assert_memory_equal(q->headers + q->headers_len - 2, "\r\n", 2); /* whole lines only */
    assert_memory_equal(q->headers + strlen(prefix), big, q->headers_len - strlen(prefix));
    store_close(st);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&g_pool, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_domains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aliases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mailbox_show_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_handles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_show_headers, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_pool_destroy(g_pool);
    apr_terminate();
    return rc;
}
