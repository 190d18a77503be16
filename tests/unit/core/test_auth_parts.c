/* Unit tests for the protocol-neutral authentication parts: strict base64,
 * the SASL PLAIN message, and the failed-login penalties. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <apr_general.h>
#include <stdio.h>
#include <string.h>

#include "service/core/penalty.h"
#include "service/core/sasl.h"
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

static void test_b64_strict(void **state)
{
    (void)state;
    apr_size_t len = 99;
    const char *out = pr_b64_decode_strict("AHVzZXIAcGFzcw==", &len, pool);
    assert_non_null(out);
    assert_int_equal(len, 10);
    assert_memory_equal(out, "\0user\0pass", 10);
    assert_non_null(pr_b64_decode_strict("", &len, pool));
    assert_int_equal(len, 0);
    /* Not a multiple of 4, characters outside the alphabet, padding inside,
     * too much padding, whitespace. */
    assert_null(pr_b64_decode_strict("AHVzZXIAcGFzcw=", &len, pool));
    assert_null(pr_b64_decode_strict("AHVz*XIAcGFzcw==", &len, pool));
    assert_null(pr_b64_decode_strict("AH=zZXIA", &len, pool));
    assert_null(pr_b64_decode_strict("A===", &len, pool));
    assert_null(pr_b64_decode_strict("AHVz ZXIA", &len, pool));
    const char *enc = pr_b64_encode("\0user\0pass", 10, pool);
    assert_string_equal(enc, "AHVzZXIAcGFzcw==");
}

static void test_plain(void **state)
{
    (void)state;
    const char *z, *c, *p;
    assert_int_equal(pr_sasl_plain_parse("\0user\0pass", 10, &z, &c, &p), APR_SUCCESS);
    assert_string_equal(z, "");
    assert_string_equal(c, "user");
    assert_string_equal(p, "pass");
    assert_int_equal(pr_sasl_plain_parse("admin\0user\0pw", 13, &z, &c, &p), APR_SUCCESS);
    assert_string_equal(z, "admin");
    assert_string_equal(c, "user");
    assert_string_equal(p, "pw");
    /* Missing parts, empty user or password, a third NUL. */
    assert_int_equal(pr_sasl_plain_parse("userpass", 8, &z, &c, &p), PR_EINVAL);
    assert_int_equal(pr_sasl_plain_parse("\0userpass", 9, &z, &c, &p), PR_EINVAL);
    assert_int_equal(pr_sasl_plain_parse("\0\0pass", 6, &z, &c, &p), PR_EINVAL);
    assert_int_equal(pr_sasl_plain_parse("\0user\0", 6, &z, &c, &p), PR_EINVAL);
    assert_int_equal(pr_sasl_plain_parse("\0user\0pa\0ss", 11, &z, &c, &p), PR_EINVAL);
}

static void test_penalty(void **state)
{
    (void)state;
    pr_penalty_t *pen;
    assert_int_equal(pr_penalty_create(&pen, pool), APR_SUCCESS);
    assert_false(pr_penalty_blocked(pen, "127.0.0.1"));
    for (int i = 0; i < PR_PENALTY_LIMIT - 1; i++) {
        assert_true(pr_penalty_fail(pen, "127.0.0.1") == PR_PENALTY_DELAY);
        assert_false(pr_penalty_blocked(pen, "127.0.0.1"));
    }
    pr_penalty_fail(pen, "127.0.0.1");
    assert_true(pr_penalty_blocked(pen, "127.0.0.1"));
    /* Another address is not affected; a success clears the record. */
    assert_false(pr_penalty_blocked(pen, "127.0.0.2"));
    pr_penalty_success(pen, "127.0.0.1");
    assert_false(pr_penalty_blocked(pen, "127.0.0.1"));
}

static void test_penalty_bounded(void **state)
{
    (void)state;
    pr_penalty_t *pen;
    char ip[32];
    assert_int_equal(pr_penalty_create(&pen, pool), APR_SUCCESS);
    for (int f = 0; f < PR_PENALTY_LIMIT; f++) pr_penalty_fail(pen, "10.0.0.1");
    assert_true(pr_penalty_blocked(pen, "10.0.0.1"));
    /* Flooding with other addresses forgets the oldest entry, not memory. */
    for (int i = 0; i < PR_PENALTY_MAX_ADDRS; i++) {
        snprintf(ip, sizeof(ip), "10.1.%d.%d", i / 256, i % 256);
        pr_penalty_fail(pen, ip);
    }
    assert_false(pr_penalty_blocked(pen, "10.0.0.1"));
    assert_false(pr_penalty_blocked(pen, "10.1.0.0"));
}

int main(void)
{
    apr_initialize();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_b64_strict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_penalty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_penalty_bounded, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_terminate();
    return rc;
}
