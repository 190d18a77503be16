/* Unit tests for endpoints and CIDR networks: parsing good and bad text,
 * host bits, prefix edges, IPv4-mapped IPv6 peers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <apr_general.h>
#include <apr_network_io.h>
#include <string.h>

#include "service/core/netaddr.h"
#include "service/core/status.h"

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

static void test_endpoint_good(void **state)
{
    (void)state;
    struct {
        const char *text, *host;
        unsigned port;
    } good[] = {
        {"127.0.0.1:25", "127.0.0.1", 25},
        {"0.0.0.0:65535", "0.0.0.0", 65535},
        {"[::1]:2525", "::1", 2525},
        {"[::]:25", "::", 25},
        {"[2001:db8::1]:587", "2001:db8::1", 587},
        {"[::ffff:192.0.2.1]:25", "::ffff:192.0.2.1", 25},
        {"localhost:25", "localhost", 25},
        {"mail.example.org:1", "mail.example.org", 1},
        {"Mail-1.Example.org:0025", "Mail-1.Example.org", 25},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        pr_endpoint_t ep;
        if (pr_endpoint_parse(&ep, good[i].text, pool) != APR_SUCCESS)
            fail_msg("refused '%s'", good[i].text);
        assert_string_equal(ep.host, good[i].host);
        assert_int_equal(ep.port, good[i].port);
    }
}

static void test_endpoint_bad(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "127.0.0.1",
        "127.0.0.1:",
        ":25",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:+25",
        "127.0.0.1: 25",
        "127.0.0.1:25 ",
        " 127.0.0.1:25",
        "127.0.0.1:25x",
        "127.0.0.1:100000",
        "::1:25",
        "[::1]",
        "[::1]25",
        "[::1]:",
        "[]:25",
        "[zz::1]:25",
        "[127.0.0.1]:25",
        "[::1:25",
        "300.1.1.1:25",
        "10.1:25",
        "a..b:25",
        "-a.org:25",
        "a-.org:25",
        "a_b:25",
        "host name:25",
        "*:25",
        "[::1]:25:25",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pr_endpoint_t ep;
        if (pr_endpoint_parse(&ep, bad[i], pool) != PR_EINVAL) fail_msg("accepted '%s'", bad[i]);
    }
    pr_endpoint_t ep;
    assert_int_equal(pr_endpoint_parse(&ep, NULL, pool), PR_EINVAL);
}

static void test_cidr_parse(void **state)
{
    (void)state;
    pr_cidr_t c;
    assert_int_equal(pr_cidr_parse(&c, "10.0.0.0/8"), APR_SUCCESS);
    assert_int_equal(c.family, APR_INET);
    assert_int_equal(c.prefix, 8);
    assert_int_equal(c.addr[0], 10);

    /* Host bits are cleared. */
    assert_int_equal(pr_cidr_parse(&c, "10.1.2.3/8"), APR_SUCCESS);
    assert_int_equal(c.addr[0], 10);
    assert_int_equal(c.addr[1] | c.addr[2] | c.addr[3], 0);
    assert_int_equal(pr_cidr_parse(&c, "192.168.255.255/23"), APR_SUCCESS);
    assert_int_equal(c.addr[2], 254);
    assert_int_equal(c.addr[3], 0);

    /* A single host. */
    assert_int_equal(pr_cidr_parse(&c, "192.0.2.7"), APR_SUCCESS);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(c.addr[3], 7);

    assert_int_equal(pr_cidr_parse(&c, "::1/128"), APR_SUCCESS);
    assert_int_equal(c.family, APR_INET6);
    assert_int_equal(c.prefix, 128);
    assert_int_equal(c.addr[15], 1);
    assert_int_equal(pr_cidr_parse(&c, "::1"), APR_SUCCESS);
    assert_int_equal(c.prefix, 128);
    assert_int_equal(pr_cidr_parse(&c, "2001:db8:ffff::/33"), APR_SUCCESS);
    assert_int_equal(c.prefix, 33);
    assert_int_equal(c.addr[4], 0x80);
    assert_int_equal(c.addr[5], 0);
    assert_int_equal(pr_cidr_parse(&c, "0.0.0.0/0"), APR_SUCCESS);
    assert_int_equal(c.prefix, 0);
    assert_int_equal(pr_cidr_parse(&c, "::/0"), APR_SUCCESS);

    const char *bad[] = {
        "",
        "junk",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/8x",
        "10.0.0.0/ 8",
        "10.0.0/8",
        "10.0.0.0.0",
        "[::1]/128",
        "::1/1280",
        "10.0.0.0/8/8",
        "/8",
        "256.0.0.0/8",
        " 10.0.0.0/8",
        "10.0.0.0/8 ",
        "gggg::/16",
        "10.0.0.0/0008",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (pr_cidr_parse(&c, bad[i]) != PR_EINVAL) fail_msg("accepted '%s'", bad[i]);
    }
    assert_int_equal(pr_cidr_parse(&c, NULL), PR_EINVAL);
}

static pr_cidr_t nets[8];
static int nnets;

static void set_nets(const char *const *texts, int n)
{
    nnets = n;
    for (int i = 0; i < n; i++)
        assert_int_equal(pr_cidr_parse(&nets[i], texts[i]), APR_SUCCESS);
}

static void test_match_text(void **state)
{
    (void)state;
    const char *const t1[] = {"127.0.0.0/8", "::1/128", "192.168.0.0/23"};
    set_nets(t1, 3);
    assert_true(pr_cidr_match_text(nets, nnets, "127.0.0.1"));
    assert_true(pr_cidr_match_text(nets, nnets, "127.255.255.255"));
    assert_true(pr_cidr_match_text(nets, nnets, "::1"));
    assert_true(pr_cidr_match_text(nets, nnets, "::ffff:127.0.0.1"));
    assert_true(pr_cidr_match_text(nets, nnets, "::FFFF:127.1.2.3"));
    assert_true(pr_cidr_match_text(nets, nnets, "192.168.1.5"));
    assert_false(pr_cidr_match_text(nets, nnets, "192.168.2.1"));
    assert_false(pr_cidr_match_text(nets, nnets, "128.0.0.1"));
    assert_false(pr_cidr_match_text(nets, nnets, "::2"));
    assert_false(pr_cidr_match_text(nets, nnets, "::ffff:10.0.0.1"));
    /* An IPv4-compatible (not mapped) address is not IPv4. */
    assert_false(pr_cidr_match_text(nets, nnets, "::127.0.0.1"));
    assert_false(pr_cidr_match_text(nets, nnets, "junk"));
    assert_false(pr_cidr_match_text(nets, nnets, ""));
    assert_false(pr_cidr_match_text(nets, nnets, NULL));
    assert_false(pr_cidr_match_text(nets, 0, "127.0.0.1"));
    assert_false(pr_cidr_match_text(NULL, 0, "127.0.0.1"));

    /* /0 matches every address of its family, IPv4-mapped included. */
    const char *const t2[] = {"0.0.0.0/0"};
    set_nets(t2, 1);
    assert_true(pr_cidr_match_text(nets, nnets, "203.0.113.9"));
    assert_true(pr_cidr_match_text(nets, nnets, "::ffff:203.0.113.9"));
    assert_false(pr_cidr_match_text(nets, nnets, "2001:db8::1"));

    /* IPv6 nets written in mapped form match plain IPv4 peers too. */
    const char *const t3[] = {"::ffff:10.0.0.0/104", "2001:db8::/32"};
    set_nets(t3, 2);
    assert_true(pr_cidr_match_text(nets, nnets, "10.1.2.3"));
    assert_true(pr_cidr_match_text(nets, nnets, "2001:db8:1::5"));
    assert_false(pr_cidr_match_text(nets, nnets, "2001:db9::5"));
    assert_false(pr_cidr_match_text(nets, nnets, "11.1.2.3"));

    const char *const t4[] = {"192.0.2.7"};
    set_nets(t4, 1);
    assert_true(pr_cidr_match_text(nets, nnets, "192.0.2.7"));
    assert_false(pr_cidr_match_text(nets, nnets, "192.0.2.6"));
}

static void test_match_sockaddr(void **state)
{
    (void)state;
    apr_sockaddr_t *sa;
    const char *const t1[] = {"127.0.0.0/8", "2001:db8::/32"};
    set_nets(t1, 2);

    assert_int_equal(apr_sockaddr_info_get(&sa, "127.0.0.1", APR_INET, 25, 0, pool), APR_SUCCESS);
    assert_true(pr_cidr_match_any(nets, nnets, sa));
    assert_int_equal(apr_sockaddr_info_get(&sa, "10.0.0.1", APR_INET, 25, 0, pool), APR_SUCCESS);
    assert_false(pr_cidr_match_any(nets, nnets, sa));
#if APR_HAVE_IPV6
    /* A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d. */
    assert_int_equal(apr_sockaddr_info_get(&sa, "::ffff:127.0.0.1", APR_INET6, 25, 0, pool),
                     APR_SUCCESS);
    assert_true(pr_cidr_match_any(nets, nnets, sa));
    assert_int_equal(apr_sockaddr_info_get(&sa, "2001:db8::25", APR_INET6, 25, 0, pool),
                     APR_SUCCESS);
    assert_true(pr_cidr_match_any(nets, nnets, sa));
    assert_int_equal(apr_sockaddr_info_get(&sa, "::1", APR_INET6, 25, 0, pool), APR_SUCCESS);
    assert_false(pr_cidr_match_any(nets, nnets, sa));
#endif
    assert_false(pr_cidr_match_any(nets, nnets, NULL));
    assert_false(pr_cidr_match_any(nets, 0, sa));
}

int main(void)
{
    apr_initialize();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_endpoint_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cidr_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_match_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_match_sockaddr, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_terminate();
    return rc;
}
