/* Unit tests for the admin operations: what they accept, what they refuse
 * and the one-line messages they give a human, and mailbox show. */
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
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_pool_destroy(g_pool);
    apr_terminate();
    return rc;
}
