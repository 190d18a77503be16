/* Unit tests for the LDAP filter helpers: RFC 4515 escaping of every octet
 * that matters, filters whose structure no client value can change
 * (injection attempts are checked against the exact filter text),
 * proxyAddresses-style address values and AD's ranged attribute
 * descriptions. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "directory/ldap_filter.h"

#include <apr_general.h>
#include <apr_strings.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static apr_pool_t *g_pool;

static int setup(void **state)
{
    apr_pool_t *pool;
    apr_pool_create(&pool, g_pool);
    *state = pool;
    return 0;
}

static int teardown(void **state)
{
    apr_pool_destroy(*state);
    return 0;
}

/* Decode \xx escapes (lower-case hex only); -1 if the text is not what
 * dir_ldap_escape may produce. */
static int unescape(const char *s, char *out, apr_size_t *len_r)
{
    apr_size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\\') {
            unsigned v = 0;
            for (int k = 1; k <= 2; k++) {
                char h = s[k];
                if (h >= '0' && h <= '9')
                    v = v * 16 + (unsigned)(h - '0');
                else if (h >= 'a' && h <= 'f')
                    v = v * 16 + (unsigned)(h - 'a' + 10);
                else
                    return -1;
            }
            out[n++] = (char)v;
            s += 2;
        } else {
            if (c < 0x20 || c >= 0x7f || c == '*' || c == '(' || c == ')') return -1;
            out[n++] = (char)c;
        }
    }
    *len_r = n;
    return 0;
}

static void test_escape_specials(void **state)
{
    apr_pool_t *pool = *state;

    assert_string_equal(dir_ldap_escape("a*b(c)d\\e", 9, pool), "a\\2ab\\28c\\29d\\5ce");
    /* NUL inside the value, and len (not strlen) is what counts */
    assert_string_equal(dir_ldap_escape("a\0b", 3, pool), "a\\00b");
    assert_string_equal(dir_ldap_escape("\0", 1, pool), "\\00");
    assert_string_equal(dir_ldap_escape("abc", 2, pool), "ab");
    /* controls, DEL, and lower-case hex */
    assert_string_equal(dir_ldap_escape("\t\n\r\x1f\x7f", 5, pool), "\\09\\0a\\0d\\1f\\7f");
    /* UTF-8: each octet on its own ("é" is c3 a9, "€" e2 82 ac) */
    assert_string_equal(dir_ldap_escape("caf\xc3\xa9", 5, pool), "caf\\c3\\a9");
    assert_string_equal(dir_ldap_escape("\xe2\x82\xac", 3, pool), "\\e2\\82\\ac");
    assert_string_equal(dir_ldap_escape("\xff", 1, pool), "\\ff");
    /* empty */
    assert_string_equal(dir_ldap_escape("", 0, pool), "");
    assert_string_equal(dir_ldap_escape(NULL, 0, pool), "");
    /* what needs no escaping stays as it is */
    assert_string_equal(dir_ldap_escape("Alice.O'Neil+x=y@example.test ~!&|", 34, pool),
                        "Alice.O'Neil+x=y@example.test ~!&|");
    /* an escape in the input is escaped again: its backslash is data */
    assert_string_equal(dir_ldap_escape("\\2a", 3, pool), "\\5c2a");
}

static void test_escape_every_octet(void **state)
{
    apr_pool_t *pool = *state;
    char in[256], back[256];
    apr_size_t n;

    for (int i = 0; i < 256; i++) {
        char one = (char)i;
        const char *e = dir_ldap_escape(&one, 1, pool);
        int special = i < 0x20 || i >= 0x7f || i == '*' || i == '(' || i == ')' || i == '\\';
        if (special) {
            char want[4];
            snprintf(want, sizeof(want), "\\%02x", (unsigned)i);
            assert_string_equal(e, want);
        } else {
            assert_int_equal(strlen(e), 1);
            assert_int_equal((unsigned char)e[0], i);
        }
        in[i] = (char)i;
    }
    const char *all = dir_ldap_escape(in, sizeof(in), pool);
    assert_int_equal(unescape(all, back, &n), 0);
    assert_int_equal(n, sizeof(in));
    assert_memory_equal(back, in, sizeof(in));
}

static pr_strlist_t list(int n, const char **v)
{
    pr_strlist_t l;
    l.n = n;
    l.v = v;
    return l;
}

static void test_filter_injection(void **state)
{
    apr_pool_t *pool = *state;
    static const char *uid[] = {"uid"};
    pr_strlist_t a = list(1, uid);
    const char *of = "(objectClass=person)";

    assert_string_equal(dir_ldap_filter_any(of, &a, "*)(uid=*", NULL, 0, pool),
                        "(&(objectClass=person)(|(uid=\\2a\\29\\28uid=\\2a)))");
    assert_string_equal(dir_ldap_filter_any(of, &a, "admin)(|(uid=*", NULL, 0, pool),
                        "(&(objectClass=person)(|(uid=admin\\29\\28|\\28uid=\\2a)))");
    assert_string_equal(dir_ldap_filter_any(of, &a, "\\2a", NULL, 0, pool),
                        "(&(objectClass=person)(|(uid=\\5c2a)))");
    assert_string_equal(dir_ldap_filter_any(of, &a, "*", NULL, 0, pool),
                        "(&(objectClass=person)(|(uid=\\2a)))");
    assert_string_equal(dir_ldap_filter_any(of, &a, "x\\", NULL, 0, pool),
                        "(&(objectClass=person)(|(uid=x\\5c)))");
    /* a closing of the whole filter and a new one after it */
    assert_string_equal(dir_ldap_filter_any(of, &a, "x)))(&(uid=root", "(!(locked=TRUE))", 0, pool),
                        "(&(objectClass=person)(|(uid=x\\29\\29\\29\\28&\\28uid=root))"
                        "(!(locked=TRUE)))");
    /* controls and UTF-8 */
    assert_string_equal(dir_ldap_filter_any(of, &a, "j\xc3\xb6rg\r\n", NULL, 0, pool),
                        "(&(objectClass=person)(|(uid=j\\c3\\b6rg\\0d\\0a)))");
}

static void test_filter_any(void **state)
{
    apr_pool_t *pool = *state;
    static const char *one[] = {"mail"};
    static const char *three[] = {"mail", "ProxyAddresses", "userPrincipalName"};
    static const char *proxy[] = {"proxyaddresses"};
    static const char *bad[] = {"mail", "uid)(cn"};
    static const char *empty_name[] = {""};
    static const char *null_name[] = {NULL};
    pr_strlist_t a1 = list(1, one), a3 = list(3, three), ap = list(1, proxy);
    pr_strlist_t ab = list(2, bad), ae = list(1, empty_name), an = list(1, null_name);
    pr_strlist_t none = list(0, NULL);
    const char *uac = "(userAccountControl:1.2.840.113556.1.4.803:=2)";

    assert_string_equal(dir_ldap_filter_any("(objectClass=inetOrgPerson)", &a1,
                                            "alice@example.test", NULL, 0, pool),
                        "(&(objectClass=inetOrgPerson)(|(mail=alice@example.test)))");
    assert_string_equal(
        dir_ldap_filter_any("(objectClass=user)", &a3, "Alice@Example.Test", NULL, 0, pool),
        "(&(objectClass=user)(|(mail=Alice@Example.Test)"
        "(ProxyAddresses=smtp:Alice@Example.Test)"
        "(userPrincipalName=Alice@Example.Test)))");
    /* proxyAddresses in any case; the value after "smtp:" is escaped */
    assert_string_equal(dir_ldap_filter_any("(objectClass=user)", &ap, "a*@b", NULL, 0, pool),
                        "(&(objectClass=user)(|(proxyaddresses=smtp:a\\2a@b)))");
    /* extra, negated and not; "" is no extra at all */
    assert_string_equal(dir_ldap_filter_any("(objectClass=user)", &a1, "x@y", uac, 1, pool),
                        "(&(objectClass=user)(|(mail=x@y))"
                        "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))");
    assert_string_equal(dir_ldap_filter_any("(objectClass=group)", &a1, "x@y", "(mail=*)", 0, pool),
                        "(&(objectClass=group)(|(mail=x@y))(mail=*))");
    assert_string_equal(dir_ldap_filter_any("(objectClass=user)", &a1, "x@y", "", 1, pool),
                        "(&(objectClass=user)(|(mail=x@y)))");
    assert_string_equal(dir_ldap_filter_any("(objectClass=user)", &a3, "x", uac, 1, pool),
                        "(&(objectClass=user)(|(mail=x)(ProxyAddresses=smtp:x)"
                        "(userPrincipalName=x))"
                        "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))");
    /* objfilter is inserted as it is, even a complex one */
    assert_string_equal(
        dir_ldap_filter_any("(|(objectClass=a)(objectClass=b))", &a1, "x", NULL, 0, pool),
        "(&(|(objectClass=a)(objectClass=b))(|(mail=x)))");
    /* missing objfilter and value */
    assert_string_equal(dir_ldap_filter_any(NULL, &a1, "x", NULL, 0, pool), "(&(|(mail=x)))");
    assert_string_equal(dir_ldap_filter_any("(o=1)", &a1, NULL, NULL, 0, pool),
                        "(&(o=1)(|(mail=)))");
    assert_string_equal(dir_ldap_filter_any("(o=1)", &a1, "", NULL, 0, pool), "(&(o=1)(|(mail=)))");
    /* no attributes, or one that is not an attribute description */
    assert_null(dir_ldap_filter_any("(o=1)", &none, "x", NULL, 0, pool));
    assert_null(dir_ldap_filter_any("(o=1)", NULL, "x", NULL, 0, pool));
    assert_null(dir_ldap_filter_any("(o=1)", &ab, "x", NULL, 0, pool));
    assert_null(dir_ldap_filter_any("(o=1)", &ae, "x", NULL, 0, pool));
    assert_null(dir_ldap_filter_any("(o=1)", &an, "x", NULL, 0, pool));
    /* options and numeric OIDs are attribute descriptions */
    static const char *opt[] = {"cn;lang-de", "0.9.2342.19200300.100.1.3"};
    pr_strlist_t ao = list(2, opt);
    assert_string_equal(dir_ldap_filter_any("(o=1)", &ao, "x", NULL, 0, pool),
                        "(&(o=1)(|(cn;lang-de=x)(0.9.2342.19200300.100.1.3=x)))");
}

/* The list filter: with the nisMailAlias branch (cn = the local part,
 * escaped) only when the list filter names nisMailAlias. */
static void test_filter_list(void **state)
{
    apr_pool_t *pool = *state;
    static const char *addr[] = {"mail", "mailLocalAddress"};
    pr_strlist_t a = list(2, addr), none = list(0, NULL);
    const char *preset =
        "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=nisMailAlias))";

    assert_string_equal(dir_ldap_filter_list(preset, &a, "postmaster@example.test", pool),
                        "(&(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)"
                        "(objectClass=nisMailAlias))"
                        "(|(mail=postmaster@example.test)(mailLocalAddress=postmaster@example.test)"
                        "(&(objectClass=nisMailAlias)(cn=postmaster))))");
    /* any case of the name; the local part is escaped like every value */
    assert_string_equal(dir_ldap_filter_list("(objectclass=NISMAILALIAS)", &a, "a*)(cn=*@x", pool),
                        "(&(objectclass=NISMAILALIAS)(|(mail=a\\2a\\29\\28cn=\\2a@x)"
                        "(mailLocalAddress=a\\2a\\29\\28cn=\\2a@x)"
                        "(&(objectClass=nisMailAlias)(cn=a\\2a\\29\\28cn=\\2a))))");
    /* other list filters: exactly dir_ldap_filter_any's */
    assert_string_equal(dir_ldap_filter_list("(objectClass=group)", &a, "x@y", pool),
                        dir_ldap_filter_any("(objectClass=group)", &a, "x@y", NULL, 0, pool));
    /* no local part, no attributes */
    assert_string_equal(dir_ldap_filter_list(preset, &a, "@y", pool),
                        dir_ldap_filter_any(preset, &a, "@y", NULL, 0, pool));
    assert_string_equal(dir_ldap_filter_list(preset, &a, "x", pool),
                        dir_ldap_filter_any(preset, &a, "x", NULL, 0, pool));
    assert_null(dir_ldap_filter_list(preset, &none, "x@y", pool));
    assert_null(dir_ldap_filter_list(preset, NULL, "x@y", pool));
}

static void test_address_value(void **state)
{
    apr_pool_t *pool = *state;
    int primary = -1;

    assert_string_equal(dir_ldap_address_value("SMTP:Alice@Example.Test", &primary, pool),
                        "alice@example.test");
    assert_int_equal(primary, 1);
    primary = -1;
    assert_string_equal(dir_ldap_address_value("smtp:x@y", &primary, pool), "x@y");
    assert_int_equal(primary, 0);
    primary = -1;
    assert_string_equal(dir_ldap_address_value("Smtp:X@Y", &primary, pool), "x@y");
    assert_int_equal(primary, 0);
    primary = -1;
    assert_null(dir_ldap_address_value("X500:/o=ExchangeLabs/ou=Exchange Administrative Group"
                                       "/cn=Recipients/cn=alice",
                                       &primary, pool));
    assert_int_equal(primary, 0);
    assert_null(dir_ldap_address_value("sip:x@y", &primary, pool));
    assert_null(dir_ldap_address_value("X400:c=US;a= ;p=Org;o=Ex;s=Alice;", NULL, pool));
    assert_null(dir_ldap_address_value("eum:123@x", NULL, pool));
    primary = -1;
    assert_string_equal(dir_ldap_address_value("alice@example.test", &primary, pool),
                        "alice@example.test");
    assert_int_equal(primary, 0);
    assert_string_equal(dir_ldap_address_value("Bob.Smith+Tag@School.TEST", NULL, pool),
                        "bob.smith+tag@school.test");
    assert_null(dir_ldap_address_value("no-at-sign", NULL, pool));
    assert_null(dir_ldap_address_value("@x", NULL, pool));
    assert_null(dir_ldap_address_value("x@", NULL, pool));
    assert_null(dir_ldap_address_value("@@x", NULL, pool));
    assert_null(dir_ldap_address_value("x@@", NULL, pool));
    assert_null(dir_ldap_address_value("a b@c", NULL, pool));
    assert_null(dir_ldap_address_value("a@b\tc", NULL, pool));
    assert_null(dir_ldap_address_value("a@b\x7f", NULL, pool));
    assert_null(dir_ldap_address_value("", NULL, pool));
    assert_null(dir_ldap_address_value(NULL, &primary, pool));
    /* SMTP: with nothing, or nothing plausible, after it */
    primary = -1;
    assert_null(dir_ldap_address_value("SMTP:", &primary, pool));
    assert_int_equal(primary, 0);
    assert_null(dir_ldap_address_value("SMTP:@x", &primary, pool));
    assert_int_equal(primary, 0);
    /* ":" without a type before it is no prefix: the value is kept */
    assert_string_equal(dir_ldap_address_value(":X@y", NULL, pool), ":x@y");
    /* only ASCII is lower-cased; UTF-8 (RFC 6531) passes */
    assert_string_equal(dir_ldap_address_value("SMTP:J\xc3\x96RG@X.Test", &primary, pool),
                        "j\xc3\x96rg@x.test");
    assert_int_equal(primary, 1);
}

static void test_parse_range(void **state)
{
    (void)state;
    long next = 42;
    char buf[64];

    assert_int_equal(dir_ldap_parse_range("member;range=0-1499", "member", &next), 1);
    assert_int_equal(next, 1500);
    assert_int_equal(dir_ldap_parse_range("member;range=1500-*", "member", &next), 1);
    assert_int_equal(next, -1);
    assert_int_equal(dir_ldap_parse_range("Member;Range=0-9", "member", &next), 1);
    assert_int_equal(next, 10);
    assert_int_equal(dir_ldap_parse_range("member;RANGE=0-9", "MEMBER", &next), 1);
    assert_int_equal(next, 10);
    assert_int_equal(dir_ldap_parse_range("member;range=3000-3000", "member", NULL), 1);

    next = 42;
    assert_int_equal(dir_ldap_parse_range("member", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("memberOf;range=0-1", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=0-1", "memberOf", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=5-", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=-3", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=5", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=*-*", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=0-**", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=0-*x", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=0-9x", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=+0-9", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range= 0-9", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=0--9", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=9-3", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;binary;range=0-1", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member range=0-1", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("", "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range(";range=0-1", "", &next), 0);
    assert_int_equal(dir_ldap_parse_range(NULL, "member", &next), 0);
    assert_int_equal(dir_ldap_parse_range("member;range=0-1", NULL, &next), 0);
    /* overflow, of either end or of the next start */
    assert_int_equal(dir_ldap_parse_range("member;range=9999999999999999999999-*", "member", &next),
                     0);
    assert_int_equal(dir_ldap_parse_range("member;range=0-9999999999999999999999", "member", &next),
                     0);
    snprintf(buf, sizeof(buf), "member;range=0-%ld", LONG_MAX);
    assert_int_equal(dir_ldap_parse_range(buf, "member", &next), 0);
    assert_int_equal(next, 42); /* untouched when 0 */
    snprintf(buf, sizeof(buf), "member;range=0-%ld", LONG_MAX - 1);
    assert_int_equal(dir_ldap_parse_range(buf, "member", &next), 1);
    assert_true(next == LONG_MAX);
}

/* The walk through AD's chunks as dir_ldap.c makes it: each answer names
 * where the next request starts, until one ends in '*'. */
static void test_range_walk(void **state)
{
    (void)state;
    static const char *const answers[] = {"member;range=0-1499", "member;range=1500-2999",
                                          "member;range=3000-*"};
    static const long starts[] = {1500, 3000, -1};
    for (int i = 0; i < 3; i++) {
        long next = 0;
        assert_int_equal(dir_ldap_parse_range(answers[i], "member", &next), 1);
        assert_true(next == starts[i]);
        /* another member attribute is not this one's chunk */
        assert_int_equal(dir_ldap_parse_range(answers[i], "uniqueMember", &next), 0);
    }
    long next = 0;
    assert_int_equal(dir_ldap_parse_range("uniqueMember;range=3-5", "uniquemember", &next), 1);
    assert_true(next == 6);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&g_pool, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_escape_specials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escape_every_octet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filter_injection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filter_any, setup, teardown),
        cmocka_unit_test_setup_teardown(test_address_value, setup, teardown),
        cmocka_unit_test(test_parse_range),
        cmocka_unit_test_setup_teardown(test_filter_list, setup, teardown),
        cmocka_unit_test(test_range_walk),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_pool_destroy(g_pool);
    apr_terminate();
    return rc;
}
