/* Address parsing: RFC 5321 paths (routes, quoted local parts, literals,
 * limits, UTF-8), RFC 5322 address lists (display names, comments, groups,
 * obsolete forms) and UTF-8 validation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "service/core/status.h"
#include "service/mime/address.h"

static apr_pool_t *pool;

static int setup(void **state)
{
    (void)state;
    apr_initialize();
    return apr_pool_create(&pool, NULL) == APR_SUCCESS ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    apr_pool_destroy(pool);
    apr_terminate();
    return 0;
}

/* Parse a path that must be good; checks *end_r is just past '>'. */
static pr_path_t path_ok(const char *text, int allow_null, int allow_utf8)
{
    pr_path_t p;
    const char *end = NULL;
    /* Parse from a heap copy with no NUL so ASan catches any over-read. */
    size_t n = strlen(text);
    char *copy = malloc(n ? n : 1);
    memcpy(copy, text, n);
    apr_status_t st = pr_path_parse(&p, copy, n, allow_null, allow_utf8, &end, pool);
    if (st != APR_SUCCESS) fail_msg("path refused: %s", text);
    const char *gt = strrchr(text, '>');
    assert_non_null(gt);
    assert_int_equal(end - copy, gt + 1 - text);
    free(copy);
    return p;
}

static void path_bad(const char *text, int allow_null, int allow_utf8)
{
    pr_path_t p;
    const char *end = NULL;
    size_t n = strlen(text);
    char *copy = malloc(n ? n : 1);
    memcpy(copy, text, n);
    if (pr_path_parse(&p, copy, n, allow_null, allow_utf8, &end, pool) != PR_EINVAL)
        fail_msg("path accepted: %s", text);
    free(copy);
}

static void test_path_simple(void **state)
{
    (void)state;
    pr_path_t p = path_ok("<user@example.test>", 1, 0);
    assert_false(p.null);
    assert_string_equal(p.local, "user");
    assert_string_equal(p.domain, "example.test");
    assert_string_equal(p.address, "user@example.test");
    assert_false(p.quoted || p.literal || p.route || p.utf8);

    p = path_ok("<First.Last+tag@Sub.Example-Domain.test>", 0, 0);
    assert_string_equal(p.local, "First.Last+tag");
    assert_string_equal(p.domain, "Sub.Example-Domain.test");

    p = path_ok("<a@localhost>", 0, 0);
    assert_string_equal(p.domain, "localhost");
    p = path_ok("<!#$%&'*+-/=?^_`{|}~@x.test>", 0, 0);
    assert_string_equal(p.local, "!#$%&'*+-/=?^_`{|}~");
    p = path_ok("<1@2.3>", 0, 0);
    assert_string_equal(p.domain, "2.3");
}

static void test_path_null(void **state)
{
    (void)state;
    pr_path_t p = path_ok("<>", 1, 0);
    assert_true(p.null);
    assert_string_equal(p.address, "");
    path_bad("<>", 0, 0);
    /* end_r points after '>' even when more follows */
    const char *end;
    assert_int_equal(pr_path_parse(&p, "<> SIZE=10", 10, 1, 0, &end, pool), APR_SUCCESS);
    assert_string_equal(end, " SIZE=10");
    assert_int_equal(pr_path_parse(&p, "<a@b.test> X", 12, 1, 0, &end, pool), APR_SUCCESS);
    assert_string_equal(end, " X");
}

static void test_path_postmaster(void **state)
{
    (void)state;
    pr_path_t p = path_ok("<postmaster>", 0, 0);
    assert_string_equal(p.local, "postmaster");
    assert_null(p.domain);
    assert_string_equal(p.address, "postmaster");
    p = path_ok("<PostMaster>", 0, 0);
    assert_string_equal(p.local, "postmaster");
    assert_null(p.domain);
    /* Only as a forward-path; a reverse-path needs a domain. */
    path_bad("<postmaster>", 1, 0);
    path_bad("<postmasterx>", 0, 0);
    path_bad("<root>", 0, 0);
    p = path_ok("<postmaster@example.test>", 0, 0);
    assert_string_equal(p.domain, "example.test");
}

static void test_path_relay_tricks(void **state)
{
    (void)state;
    pr_path_t p = path_ok("<user%other.test@example.test>", 0, 0);
    assert_string_equal(p.local, "user%other.test");
    assert_string_equal(p.domain, "example.test");

    p = path_ok("<other.test!user@example.test>", 0, 0);
    assert_string_equal(p.local, "other.test!user");
    assert_string_equal(p.domain, "example.test");

    p = path_ok("<@example.test:user@other.test>", 0, 0);
    assert_true(p.route);
    assert_string_equal(p.address, "user@other.test");
    assert_string_equal(p.domain, "other.test");

    p = path_ok("<@a.test,@b.test:u@c.test>", 1, 0);
    assert_true(p.route);
    assert_string_equal(p.address, "u@c.test");

    p = path_ok("<\"user@other.test\"@example.test>", 0, 0);
    assert_true(p.quoted);
    assert_string_equal(p.local, "\"user@other.test\"");
    assert_string_equal(p.domain, "example.test");
    assert_string_equal(p.address, "\"user@other.test\"@example.test");

    p = path_ok("<user@[127.0.0.9]>", 0, 0);
    assert_true(p.literal);
    assert_string_equal(p.domain, "[127.0.0.9]");
    assert_string_equal(p.address, "user@[127.0.0.9]");
}

static void test_path_quoted(void **state)
{
    (void)state;
    pr_path_t p = path_ok("<\"a b\\\"c\"@x.test>", 0, 0);
    assert_true(p.quoted);
    assert_string_equal(p.local, "\"a b\\\"c\"");
    p = path_ok("<\"\"@x.test>", 0, 0);
    assert_string_equal(p.local, "\"\"");
    path_bad("<\"abc@x.test>", 0, 0);
    path_bad("<\"a\"b@x.test>", 0, 0);
    path_bad("<\"a\tb\"@x.test>", 0, 0);
    path_bad("<\"a\\\"@x.test>", 0, 0);
}

static void test_path_literals(void **state)
{
    (void)state;
    const char *good[] = {
        "<u@[0.0.0.0]>",
        "<u@[255.255.255.255]>",
        "<u@[IPv6:::1]>",
        "<u@[ipv6:::]>",
        "<u@[IPv6:2001:db8::1]>",
        "<u@[IPv6:1:2:3:4:5:6:7:8]>",
        "<u@[IPv6:1::]>",
        "<u@[IPv6:1:2:3:4:5:6::]>",
        "<u@[IPv6:::ffff:127.0.0.1]>",
        "<u@[IPv6:1:2:3:4:5:6:1.2.3.4]>",
        "<u@[IPv6:1:2:3:4::1.2.3.4]>",
        "<u@[x-tag:anything!here]>",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        pr_path_t p = path_ok(good[i], 0, 0);
        assert_true(p.literal);
    }
    const char *bad[] = {
        "<u@[]>",
        "<u@[256.0.0.1]>",
        "<u@[1.2.3]>",
        "<u@[1.2.3.4.5]>",
        "<u@[1.2.3.4>",
        "<u@[1234.1.1.1]>",
        "<u@[IPv6:1:2:3:4:5:6:7]>",
        "<u@[IPv6:1:2:3:4:5:6:7:8:9]>",
        "<u@[IPv6:1:2:3:4:5:6:7::]>",
        "<u@[IPv6:1::2::3]>",
        "<u@[IPv6:12345::]>",
        "<u@[IPv6::1]>",
        "<u@[IPv6:1:]>",
        "<u@[IPv6:g::1]>",
        "<u@[IPv6:1:2:3:4:5::1.2.3.4]>",
        "<u@[IPv6:1:2:3:4:5:6:7:1.2.3.4]>",
        "<u@[IPv6:::1.2.3]>",
        "<u@[tag-:x]>",
        "<u@[tag:]>",
        "<u@[:x]>",
        "<u@[tag:a b]>",
        "<u@[tag:a\\b]>",
        "<u@[1.2.3.4]x>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        path_bad(bad[i], 0, 0);
}

static void test_path_bad_syntax(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "<",
        ">",
        "user@example.test",
        "<user@example.test",
        "<user>",
        "<@example.test>",
        "<user@>",
        "<user@@example.test>",
        "<.user@example.test>",
        "<user.@example.test>",
        "<us..er@example.test>",
        "<user@.example.test>",
        "<user@example.test.>",
        "<user@example..test>",
        "<user@-example.test>",
        "<user@example-.test>",
        "<user@exa_mple.test>",
        "<us er@example.test>",
        "<user@ example.test>",
        "< user@example.test>",
        "<user@example.test >",
        "<us(c)er@example.test>",
        "<@a.test user@b.test>",
        "<@a.test,b.test:user@c.test>",
        "<@a.test:>",
        "<@:user@c.test>",
        "<@[1.2.3.4]:user@c.test>",
        "<user@b.test:>",
        "<a@b@c.test>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        path_bad(bad[i], 1, 1);
    /* embedded NUL */
    pr_path_t p;
    const char *end;
    assert_int_equal(pr_path_parse(&p, "<a\0b@x.test>", 12, 1, 0, &end, pool), PR_EINVAL);
    assert_int_equal(pr_path_parse(&p, "<a@x.te\0st>", 11, 1, 0, &end, pool), PR_EINVAL);
    /* len is respected: the '>' beyond len is not seen */
    assert_int_equal(pr_path_parse(&p, "<a@x.test>", 9, 1, 0, &end, pool), PR_EINVAL);
}

static void test_path_limits(void **state)
{
    (void)state;
    char buf[600];
    /* local part: 64 fine, 65 not */
    snprintf(buf, sizeof(buf), "<%s@x.test>",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    path_ok(buf, 0, 0);
    snprintf(buf, sizeof(buf), "<%s@x.test>",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    path_bad(buf, 0, 0);
    /* label: 63 fine, 64 not */
    snprintf(buf, sizeof(buf), "<a@%s.test>",
             "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    path_ok(buf, 0, 0);
    snprintf(buf, sizeof(buf), "<a@%s.test>",
             "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    path_bad(buf, 0, 0);
    /* whole path: exactly 256 with brackets fine, 257 not */
    strcpy(buf, "<a@");
    while (strlen(buf) < 255 - 6)
        strcat(buf, "c.");
    while (strlen(buf) < 255)
        strcat(buf, "d");
    strcat(buf, ">");
    assert_int_equal(strlen(buf), 256);
    path_ok(buf, 0, 0);
    buf[255] = 'd';
    strcpy(buf + 256, ">");
    path_bad(buf, 0, 0);
    /* a long route counts too */
    strcpy(buf, "<");
    for (int i = 0; i < 30; i++)
        strcat(buf, i ? ",@route.test" : "@route.test");
    strcat(buf, ":u@x.test>");
    assert_true(strlen(buf) > 256);
    path_bad(buf, 0, 0);
}

static void test_path_utf8(void **state)
{
    (void)state;
    const char *mixed = "<J\xc3\xb6rg@b\xc3\xbc"
                        "cher.test>";
    path_bad(mixed, 0, 0);
    pr_path_t p = path_ok(mixed, 0, 1);
    assert_true(p.utf8);
    assert_string_equal(p.local, "J\xc3\xb6rg");
    assert_string_equal(p.domain, "b\xc3\xbc"
                                  "cher.test");
    p = path_ok("<\"\xe5\xad\xa6 \xe7\x94\x9f\"@x.test>", 0, 1);
    assert_true(p.utf8 && p.quoted);
    p = path_ok("<@\xc3\xa4.test:u@x.test>", 0, 1);
    assert_true(p.utf8 && p.route);
    /* invalid UTF-8 is refused even when allowed */
    path_bad("<J\xc3rg@x.test>", 0, 1);
    path_bad("<a@\xc0\xaf.test>", 0, 1);
    path_bad("<\xed\xa0\x80@x.test>", 0, 1);
    path_bad("<a@[\xc3\xa4:1]>", 0, 1);
    p = path_ok("<ascii@x.test>", 0, 1);
    assert_false(p.utf8);
}

static void test_utf8_valid(void **state)
{
    (void)state;
    assert_true(pr_utf8_valid("", 0));
    assert_true(pr_utf8_valid("plain", 5));
    assert_true(pr_utf8_valid("\xc3\xa4", 2));
    assert_true(pr_utf8_valid("\xe2\x82\xac", 3));
    assert_true(pr_utf8_valid("\xf0\x9f\x98\x80", 4));
    assert_true(pr_utf8_valid("\xf4\x8f\xbf\xbf", 4)); /* U+10FFFF */
    assert_true(pr_utf8_valid("\xef\xbf\xbf", 3));     /* U+FFFF */
    assert_true(pr_utf8_valid("a\0b", 3));
    assert_false(pr_utf8_valid("\xc3", 1));
    assert_false(pr_utf8_valid("\xc3\xa4", 1));
    assert_false(pr_utf8_valid("\x80", 1));
    assert_false(pr_utf8_valid("\xbf", 1));
    assert_false(pr_utf8_valid("\xc0\x80", 2));         /* overlong NUL */
    assert_false(pr_utf8_valid("\xc1\xbf", 2));         /* overlong */
    assert_false(pr_utf8_valid("\xe0\x80\xaf", 3));     /* overlong '/' */
    assert_false(pr_utf8_valid("\xe0\x9f\xbf", 3));     /* overlong */
    assert_false(pr_utf8_valid("\xf0\x8f\xbf\xbf", 4)); /* overlong */
    assert_false(pr_utf8_valid("\xed\xa0\x80", 3));     /* surrogate D800 */
    assert_false(pr_utf8_valid("\xed\xbf\xbf", 3));     /* surrogate DFFF */
    assert_false(pr_utf8_valid("\xf4\x90\x80\x80", 4)); /* 110000 */
    assert_false(pr_utf8_valid("\xf5\x80\x80\x80", 4));
    assert_false(pr_utf8_valid("\xff", 1));
    assert_false(pr_utf8_valid("\xe2\x82", 2));
    assert_false(pr_utf8_valid("\xe2\x28\xa1", 3));
}

/* pr_header_addresses must give exactly the listed addresses (n of them). */
static void hdr_ok(const char *value, int n, ...)
{
    apr_array_header_t *a = NULL;
    size_t len = strlen(value);
    char *copy = malloc(len ? len : 1);
    memcpy(copy, value, len);
    apr_status_t st = pr_header_addresses(copy, len, &a, pool);
    if (st != APR_SUCCESS) fail_msg("header refused: %s", value);
    free(copy);
    if (a->nelts != n) fail_msg("%s: %d addresses, want %d", value, a->nelts, n);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const char *want = va_arg(ap, const char *);
        const char *got = APR_ARRAY_IDX(a, i, const char *);
        if (strcmp(got, want) != 0) fail_msg("%s: [%d] is '%s', want '%s'", value, i, got, want);
    }
    va_end(ap);
}

static void hdr_bad(const char *value)
{
    apr_array_header_t *a = NULL;
    size_t len = strlen(value);
    char *copy = malloc(len ? len : 1);
    memcpy(copy, value, len);
    if (pr_header_addresses(copy, len, &a, pool) == APR_SUCCESS)
        fail_msg("header accepted: %s", value);
    free(copy);
}

static void test_header_mailbox(void **state)
{
    (void)state;
    hdr_ok("user@example.test", 1, "user@example.test");
    hdr_ok("  user@example.test  ", 1, "user@example.test");
    hdr_ok("<user@example.test>", 1, "user@example.test");
    hdr_ok("Jane Doe <jane@example.test>", 1, "jane@example.test");
    hdr_ok("\"Doe, Jane\" <jane@example.test>", 1, "jane@example.test");
    hdr_ok("\"Jane \\\"JD\\\" Doe\" <jane@example.test>", 1, "jane@example.test");
    hdr_ok("J. Doe <jane@example.test>", 1, "jane@example.test");
    hdr_ok("=?utf-8?q?J=C3=B6rg?= <j@example.test>", 1, "j@example.test");
    hdr_ok("jane@example.test (Jane Doe)", 1, "jane@example.test");
    hdr_ok("(c1 (nested (deep)) \\) x) jane (c2) @ (c3) example.test (c4)", 1, "jane@example.test");
    hdr_ok("\"quoted local\"@example.test", 1, "\"quoted local\"@example.test");
    hdr_ok("first.last@sub.example.test", 1, "first.last@sub.example.test");
    hdr_ok("user@[127.0.0.1]", 1, "user@[127.0.0.1]");
    hdr_ok("Name <user@[ 127.0.0.1 ]>", 1, "user@[127.0.0.1]");
    hdr_ok("J\xc3\xb6rg <j\xc3\xb6rg@b\xc3\xbc"
           "cher.test>",
           1,
           "j\xc3\xb6rg@b\xc3\xbc"
           "cher.test");
}

static void test_header_lists(void **state)
{
    (void)state;
    hdr_ok("a@x.test, b@y.test", 2, "a@x.test", "b@y.test");
    hdr_ok("A <a@x.test>,\r\n\tB <b@y.test>", 2, "a@x.test", "b@y.test");
    hdr_ok("a@x.test,\r\n b@y.test", 2, "a@x.test", "b@y.test");
    hdr_ok("team: a@x.test, B <b@y.test>;", 2, "a@x.test", "b@y.test");
    hdr_ok("team: a@x.test, b@y.test;, c@z.test", 3, "a@x.test", "b@y.test", "c@z.test");
    hdr_ok("undisclosed:;, a@x.test", 1, "a@x.test");
    hdr_ok("\"The Team\" : a@x.test ; (end)", 1, "a@x.test");
    /* obsolete forms: empty list elements, routes, CFWS around dots */
    hdr_ok(", a@x.test,, ,b@y.test,", 2, "a@x.test", "b@y.test");
    hdr_ok("Name <@r1.test,@r2.test:a@x.test>", 1, "a@x.test");
    hdr_ok("<,@r1.test,,@[1.2.3.4]:a@x.test>", 1, "a@x.test");
    hdr_ok("john . doe @ example . test", 1, "john.doe@example.test");
    hdr_ok("\"john\".doe@example.test", 1, "\"john\".doe@example.test");
    hdr_ok("team: , a@x.test, ;", 1, "a@x.test");
}

static void test_header_bad(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "   ",
        "(only a comment)",
        "undisclosed-recipients:;",
        "Jane Doe",
        "jane",
        "jane@",
        "@example.test",
        "<>",
        "Jane <>",
        "Jane <jane@example.test",
        "Jane jane@example.test>",
        "victim@school.test <attacker@evil.test>",
        "a@x.test b@y.test",
        "a@x.test; b@y.test",
        "team: a@x.test",
        "team: a@x.test; c@z.test",
        "team: inner: a@x.test;;",
        ": a@x.test;",
        "a@x.test (unterminated",
        "a@x.test )",
        "\"unterminated@x.test",
        "a@[1.2.3.4",
        ".a@x.test",
        "a.@x.test",
        "a..b@x.test",
        "a@x..test",
        "a@x.test.",
        "a@.x.test",
        "a@\"x\".test",
        "a\x01@x.test",
        "<a@x.test>>",
        "j\xc3@x.test",
        "Name <@r1.test a@x.test>",
        "Name <@:a@x.test>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        hdr_bad(bad[i]);
    apr_array_header_t *a;
    assert_int_equal(pr_header_addresses("a@x.test\0b", 10, &a, pool), PR_EINVAL);
}

static void test_header_limit(void **state)
{
    (void)state;
    char *v = "";
    for (int i = 0; i < 100; i++)
        v = apr_psprintf(pool, "%s%su%d@x.test", v, i ? ", " : "", i);
    apr_array_header_t *a;
    assert_int_equal(pr_header_addresses(v, strlen(v), &a, pool), APR_SUCCESS);
    assert_int_equal(a->nelts, 100);
    /* one more: refused outright, so none can slip past a check of the first 100 */
    v = apr_pstrcat(pool, v, ", extra@evil.test", NULL);
    assert_int_not_equal(pr_header_addresses(v, strlen(v), &a, pool), APR_SUCCESS);
    /* deep comment nesting costs nothing */
    size_t n = 200000;
    char *deep = apr_palloc(pool, 2 * n + 20);
    memset(deep, '(', n);
    memset(deep + n, ')', n);
    strcpy(deep + 2 * n, " a@x.test");
    assert_int_equal(pr_header_addresses(deep, strlen(deep), &a, pool), APR_SUCCESS);
    assert_int_equal(a->nelts, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_simple),     cmocka_unit_test(test_path_null),
        cmocka_unit_test(test_path_postmaster), cmocka_unit_test(test_path_relay_tricks),
        cmocka_unit_test(test_path_quoted),     cmocka_unit_test(test_path_literals),
        cmocka_unit_test(test_path_bad_syntax), cmocka_unit_test(test_path_limits),
        cmocka_unit_test(test_path_utf8),       cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_header_mailbox),  cmocka_unit_test(test_header_lists),
        cmocka_unit_test(test_header_bad),      cmocka_unit_test(test_header_limit),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
