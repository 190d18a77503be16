/* Unit tests for the Sender Rewriting Scheme (service/smtp/srs.h): SRS0
 * round trips, case folding on the way back, forged and expired hashes,
 * SRS1 through a second forwarder and back through both, the secret file. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <apr_file_info.h>
#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "service/core/status.h"
#include "service/smtp/srs.h"

static apr_pool_t *pool;
static const unsigned char key_a[] = "0123456789abcdef-forwarder-a";
static const unsigned char key_b[] = "fedcba9876543210-forwarder-b";

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

static srs_t *make(const unsigned char *key, const char *domain)
{
    srs_t *s;
    assert_int_equal(srs_create(&s, key, 28, domain, pool), APR_SUCCESS);
    return s;
}

static char *upper(const char *s)
{
    char *u = apr_pstrdup(pool, s);
    for (char *p = u; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    return u;
}

static void test_srs0_round_trip(void **state)
{
    (void)state;
    srs_t *s = make(key_a, "school.example");
    apr_time_t now = apr_time_from_sec(1795000000);
    const char *f = srs_forward(s, "Pupil.Name@gmail.example", now, pool);
    assert_non_null(f);
    assert_true(strncmp(f, "SRS0=", 5) == 0);
    assert_non_null(strstr(f, "=gmail.example=Pupil.Name@school.example"));
    const char *orig;
    assert_int_equal(srs_reverse(s, f, now, &orig, pool), APR_SUCCESS);
    assert_string_equal(orig, "Pupil.Name@gmail.example");
    /* An MTA on the way upper-cased it: still ours. */
    assert_int_equal(srs_reverse(s, upper(f), now + apr_time_from_sec(86400), &orig, pool),
                     APR_SUCCESS);
    assert_string_equal(orig, "PUPIL.NAME@GMAIL.EXAMPLE");
    /* Three weeks is the limit. */
    assert_int_equal(srs_reverse(s, f, now + apr_time_from_sec(21 * 86400), &orig, pool),
                     APR_SUCCESS);
    assert_int_equal(srs_reverse(s, f, now + apr_time_from_sec(22 * 86400), &orig, pool), PR_EPERM);
    /* Another secret: a forgery. */
    srs_t *other = make(key_b, "school.example");
    assert_int_equal(srs_reverse(other, f, now, &orig, pool), PR_EAUTH);
    /* A changed original: the hash no longer fits. */
    char *forged = apr_pstrdup(pool, f);
    char *p = strstr(forged, "gmail");
    *p = 'h';
    assert_int_equal(srs_reverse(s, forged, now, &orig, pool), PR_EAUTH);
}

static void test_not_rewritten(void **state)
{
    (void)state;
    srs_t *s = make(key_a, "school.example");
    apr_time_t now = apr_time_now();
    assert_string_equal(srs_forward(s, "", now, pool), "");
    assert_string_equal(srs_forward(s, "teacher@school.example", now, pool),
                        "teacher@school.example");
    assert_null(srs_forward(s, "no-at-sign", now, pool));
    assert_null(srs_forward(s, "@domain.example", now, pool));
    const char *orig;
    assert_int_equal(srs_reverse(s, "teacher@school.example", now, &orig, pool), PR_ENOTFOUND);
    assert_int_equal(srs_reverse(s, "SRS0=abcd@school.example", now, &orig, pool), PR_EINVAL);
    assert_int_equal(srs_reverse(s, "SRS0=abcd=ZZ=x.example=@school.example", now, &orig, pool),
                     PR_EINVAL);
    assert_int_equal(srs_reverse(s, "SRS1=abcd=noseparator@school.example", now, &orig, pool),
                     PR_EINVAL);
    /* A local part holding '=' survives the trip. */
    const char *f = srs_forward(s, "a=b@x.example", now, pool);
    assert_int_equal(srs_reverse(s, f, now, &orig, pool), APR_SUCCESS);
    assert_string_equal(orig, "a=b@x.example");
}

static void test_srs1_chain(void **state)
{
    (void)state;
    srs_t *a = make(key_a, "a.example"), *b = make(key_b, "b.example");
    apr_time_t now = apr_time_now();
    const char *at_a = srs_forward(a, "user@origin.example", now, pool);
    const char *at_b = srs_forward(b, at_a, now, pool);
    assert_true(strncmp(at_b, "SRS1=", 5) == 0);
    assert_non_null(strstr(at_b, "=a.example==")); /* names the first forwarder */
    /* a third forwarder keeps pointing at a */
    srs_t *c = make(key_a, "c.example");
    const char *at_c = srs_forward(c, at_b, now, pool);
    assert_true(strncmp(at_c, "SRS1=", 5) == 0);
    assert_non_null(strstr(at_c, "=a.example=="));
    const char *back;
    assert_int_equal(srs_reverse(b, at_b, now, &back, pool), APR_SUCCESS);
    assert_string_equal(back, at_a); /* to a, which undoes its own */
    assert_int_equal(srs_reverse(a, back, now, &back, pool), APR_SUCCESS);
    assert_string_equal(back, "user@origin.example");
    assert_int_equal(srs_reverse(a, at_b, now, &back, pool), PR_EAUTH); /* b's, not a's */
}

static void test_secret_file(void **state)
{
    (void)state;
    const char *base = getenv("PR_TEST_TMP");
    const char *dir =
        apr_psprintf(pool, "%s/srs-%ld", base && *base ? base : "/tmp", (long)getpid());
    assert_int_equal(apr_dir_make_recursive(dir, APR_FPROT_OS_DEFAULT, pool), APR_SUCCESS);
    srs_t *s1, *s2;
    assert_int_equal(srs_open(&s1, dir, "school.example", pool), APR_SUCCESS);
    apr_finfo_t fi;
    const char *path = apr_pstrcat(pool, dir, "/srs.secret", NULL);
    assert_int_equal(apr_stat(&fi, path, APR_FINFO_SIZE | APR_FINFO_PROT, pool), APR_SUCCESS);
    assert_int_equal(fi.size, SRS_SECRET_LEN);
    assert_int_equal(fi.protection & (APR_FPROT_GREAD | APR_FPROT_WREAD), 0);
    /* The next start reads the same secret: addresses made before verify. */
    assert_int_equal(srs_open(&s2, dir, "school.example", pool), APR_SUCCESS);
    apr_time_t now = apr_time_now();
    const char *orig;
    assert_int_equal(srs_reverse(s2, srs_forward(s1, "x@y.example", now, pool), now, &orig, pool),
                     APR_SUCCESS);
    apr_file_remove(path, pool);
    apr_dir_remove(dir, pool);
}

int main(void)
{
    apr_initialize();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_srs0_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_rewritten, setup, teardown),
        cmocka_unit_test_setup_teardown(test_srs1_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_file, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_terminate();
    return rc;
}
