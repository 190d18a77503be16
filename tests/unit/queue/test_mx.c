/* Unit tests for the pure part of MX resolution (mx_hosts_from_records):
 * order by preference, equal preferences shuffled by the seed, duplicates,
 * null MX (RFC 7505), bad names, the host limit; and what mx_resolver_create
 * and mx_resolve refuse before any query is sent. No network. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <apr_general.h>
#include <apr_strings.h>
#include <string.h>

#include "service/core/status.h"
#include "service/queue/mx.h"

static apr_pool_t *pool;

static int setup(void **state)
{
    (void)state;
    return apr_pool_create(&pool, NULL) == APR_SUCCESS ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    apr_pool_destroy(pool);
    return 0;
}

static mx_host_t *host_at(apr_array_header_t *hosts, int i)
{
    return APR_ARRAY_IDX(hosts, i, mx_host_t *);
}

static void test_order_by_preference(void **state)
{
    (void)state;
    const char *names[] = {"mx3.example.org", "MX1.Example.ORG.", "mx2.example.org"};
    int prefs[] = {30, 10, 20};
    apr_array_header_t *hosts;
    assert_int_equal(mx_hosts_from_records(&hosts, names, prefs, 3, 1, pool), APR_SUCCESS);
    assert_int_equal(hosts->nelts, 3);
    assert_string_equal(host_at(hosts, 0)->name, "mx1.example.org"); /* lower case, no dot */
    assert_int_equal(host_at(hosts, 0)->preference, 10);
    assert_string_equal(host_at(hosts, 1)->name, "mx2.example.org");
    assert_string_equal(host_at(hosts, 2)->name, "mx3.example.org");
    assert_int_equal(host_at(hosts, 2)->preference, 30);
    for (int i = 0; i < 3; i++) {
        assert_non_null(host_at(hosts, i)->addrs);
        assert_int_equal(host_at(hosts, i)->addrs->nelts, 0);
    }
}

/* Equal preferences come out in an order the seed decides: every order
 * shows up over many seeds, the same seed gives the same order, and no host
 * ever crosses into another preference. */
static void test_equal_preferences_shuffled(void **state)
{
    (void)state;
    const char *names[] = {"z.example", "a.example", "b.example", "c.example", "last.example"};
    int prefs[] = {0, 5, 5, 5, 9};
    int seen[3][3] = {{0}};
    char first[64] = "";
    for (apr_uint32_t seed = 0; seed < 300; seed++) {
        apr_array_header_t *hosts;
        assert_int_equal(mx_hosts_from_records(&hosts, names, prefs, 5, seed, pool), APR_SUCCESS);
        assert_int_equal(hosts->nelts, 5);
        assert_string_equal(host_at(hosts, 0)->name, "z.example");
        assert_string_equal(host_at(hosts, 4)->name, "last.example");
        for (int i = 1; i <= 3; i++) {
            const char *n = host_at(hosts, i)->name;
            assert_int_equal(host_at(hosts, i)->preference, 5);
            assert_true(n[0] >= 'a' && n[0] <= 'c');
            seen[i - 1][n[0] - 'a']++;
        }
        if (seed == 7) apr_cpystrn(first, host_at(hosts, 1)->name, sizeof(first));
    }
    for (int pos = 0; pos < 3; pos++)
        for (int h = 0; h < 3; h++)
            assert_true(seen[pos][h] > 30); /* each host in each place, roughly 1/3 */
    {
        apr_array_header_t *hosts;
        mx_hosts_from_records(&hosts, names, prefs, 5, 7, pool);
        assert_string_equal(host_at(hosts, 1)->name, first);
    }
}

static void test_duplicates_keep_lowest(void **state)
{
    (void)state;
    const char *names[] = {"mx.example", "other.example", "MX.example.", "mx.example"};
    int prefs[] = {30, 20, 10, 40};
    apr_array_header_t *hosts;
    assert_int_equal(mx_hosts_from_records(&hosts, names, prefs, 4, 3, pool), APR_SUCCESS);
    assert_int_equal(hosts->nelts, 2);
    assert_string_equal(host_at(hosts, 0)->name, "mx.example");
    assert_int_equal(host_at(hosts, 0)->preference, 10);
    assert_string_equal(host_at(hosts, 1)->name, "other.example");
}

static void test_null_mx(void **state)
{
    (void)state;
    apr_array_header_t *hosts = NULL;
    const char *root[] = {""}, *dot[] = {"."}, *two[] = {"", "."};
    const char *mixed[] = {"", "mx.example"};
    int p0[] = {0, 0}, p2[] = {0, 10};
    assert_int_equal(mx_hosts_from_records(&hosts, root, p0, 1, 1, pool), PR_ENULLMX);
    assert_int_equal(mx_hosts_from_records(&hosts, dot, p0, 1, 1, pool), PR_ENULLMX);
    assert_int_equal(mx_hosts_from_records(&hosts, two, p0, 2, 1, pool), PR_ENULLMX);
    /* RFC 7505 3: a null MX must stand alone; beside a real one it is skipped */
    assert_int_equal(mx_hosts_from_records(&hosts, mixed, p2, 2, 1, pool), APR_SUCCESS);
    assert_int_equal(hosts->nelts, 1);
    assert_string_equal(host_at(hosts, 0)->name, "mx.example");
    {
        char buf[128];
        assert_non_null(strstr(pr_strerror(PR_ENULLMX, buf, sizeof(buf)), "null MX"));
    }
}

static void test_bad_names(void **state)
{
    (void)state;
    char long_label[80], long_name[300];
    memset(long_label, 'a', 64);
    strcpy(long_label + 64, ".example");
    long_name[0] = '\0';
    for (int i = 0; i < 26; i++)
        strcat(long_name, "abcdefghi."); /* 260 > 253 */
    strcat(long_name, "x");
    const char *bad[] = {"bad_name.example", "a..example",    "-lead.example",
                         "trail-.example",   long_label,      long_name,
                         "sp ace.example",   "a\\.b.example", ".."};
    int prefs[9] = {0};
    apr_array_header_t *hosts;
    for (int i = 0; i < 9; i++)
        assert_int_equal(mx_hosts_from_records(&hosts, bad + i, prefs, 1, 1, pool), PR_ETEMPFAIL);
    /* all bad: unusable MX records defer (someone will fix the zone) */
    assert_int_equal(mx_hosts_from_records(&hosts, bad, prefs, 9, 1, pool), PR_ETEMPFAIL);
    assert_int_equal(mx_hosts_from_records(&hosts, bad, prefs, 0, 1, pool), PR_ETEMPFAIL);
    {
        const char *some[] = {"bad_name.example", "good.example"};
        int p[] = {1, 2};
        assert_int_equal(mx_hosts_from_records(&hosts, some, p, 2, 1, pool), APR_SUCCESS);
        assert_int_equal(hosts->nelts, 1);
        assert_string_equal(host_at(hosts, 0)->name, "good.example");
    }
}

static void test_host_limit(void **state)
{
    (void)state;
    enum { N = 40 };
    const char *names[N];
    int prefs[N];
    apr_array_header_t *hosts;
    for (int i = 0; i < N; i++) {
        names[i] = apr_psprintf(pool, "mx%d.example", N - i);
        prefs[i] = N - i; /* mxK has preference K */
    }
    assert_int_equal(mx_hosts_from_records(&hosts, names, prefs, N, 9, pool), APR_SUCCESS);
    assert_int_equal(hosts->nelts, MX_MAX_HOSTS);
    for (int i = 0; i < MX_MAX_HOSTS; i++) {
        assert_int_equal(host_at(hosts, i)->preference, i + 1);
        assert_string_equal(host_at(hosts, i)->name, apr_psprintf(pool, "mx%d.example", i + 1));
    }
}

static void test_resolver_refuses(void **state)
{
    (void)state;
    mx_resolver_t *r = NULL;
    mx_route_t *route = NULL;
    const char *bad[] = {"not-an-ip:53"};
    const char *comma[] = {"127.0.0.1:53,127.0.0.2:53"};
    const char *good[] = {"127.0.0.1:5353", "[::1]:5300", "127.0.0.2:53"};
    pr_strlist_t l = {1, bad};
    assert_int_equal(mx_resolver_create(&r, &l, apr_time_from_sec(1), pool), PR_EINVAL);
    l.v = comma;
    assert_int_equal(mx_resolver_create(&r, &l, apr_time_from_sec(1), pool), PR_EINVAL);
    l.n = 3;
    l.v = good;
    assert_int_equal(mx_resolver_create(&r, &l, apr_time_from_sec(1), pool), APR_SUCCESS);
    /* bad domains are refused before any query */
    assert_int_equal(mx_resolve(r, "bad..example", &route, pool), PR_EINVAL);
    assert_int_equal(mx_resolve(r, "", &route, pool), PR_EINVAL);
    assert_int_equal(mx_resolve(r, "[127.0.0.1]", &route, pool), PR_EINVAL);
    assert_null(route);
    mx_resolver_destroy(r);
    mx_resolver_destroy(r); /* idempotent; the pool cleanup then does nothing */
    /* no servers: the system resolver (reads resolv.conf, sends nothing here) */
    assert_int_equal(mx_resolver_create(&r, NULL, 0, pool), APR_SUCCESS);
    assert_int_equal(mx_resolve(r, "a..b", &route, pool), PR_EINVAL);
    l.n = 0;
    assert_int_equal(mx_resolver_create(&r, &l, 0, pool), APR_SUCCESS);
    /* left to the pool cleanup */
}

int main(void)
{
    apr_initialize();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_order_by_preference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_equal_preferences_shuffled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates_keep_lowest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_mx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolver_refuses, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_terminate();
    return rc;
}
