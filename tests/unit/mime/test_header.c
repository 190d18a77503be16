/* Streaming header scanner: the end of the header, unfolded From:, counts of
 * From/Received, Date/Message-ID flags, limits; each input is fed whole, one
 * byte at a time and in other chunk sizes, and every way must agree. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "service/mime/header.h"

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

typedef struct want_t {
    int in_body;
    int has_date, has_message_id;
    int from_count, received_count;
    const char *from; /* NULL: none */
    int from_truncated;
} want_t;

/* Feed in chunks of step bytes (0: whole), optionally call finish. */
static void scan(pr_hdrscan_t *h, const char *msg, size_t len, size_t step, int finish)
{
    pr_hdrscan_init(h, pool);
    size_t pos = 0;
    while (pos < len) {
        size_t n = step ? step : len;
        if (n > len - pos) n = len - pos;
        /* A separate heap chunk per feed lets ASan see any read past it. */
        char *chunk = malloc(n);
        memcpy(chunk, msg + pos, n);
        pr_hdrscan_feed(h, chunk, n);
        free(chunk);
        pos += n;
    }
    if (finish) pr_hdrscan_finish(h);
}

static void check_scan(const char *msg, size_t len, int finish, const want_t *w)
{
    size_t steps[] = {0, 1, 2, 3, 5, 7, 64};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        pr_hdrscan_t h;
        scan(&h, msg, len, steps[i], finish);
        assert_int_equal(h.in_body, w->in_body);
        assert_int_equal(h.has_date, w->has_date);
        assert_int_equal(h.has_message_id, w->has_message_id);
        assert_int_equal(h.from_count, w->from_count);
        assert_int_equal(h.received_count, w->received_count);
        assert_int_equal(h.from_truncated, w->from_truncated);
        if (w->from) {
            if (!h.from) fail_msg("step %zu: no From, want '%s'", steps[i], w->from);
            assert_int_equal(h.from_len, strlen(w->from));
            assert_memory_equal(h.from, w->from, h.from_len);
            assert_int_equal(h.from[h.from_len], '\0');
        } else {
            assert_null(h.from);
        }
    }
}

static void check(const char *msg, const want_t *w)
{
    check_scan(msg, strlen(msg), 1, w);
}

static void test_basic(void **state)
{
    (void)state;
    want_t w = {.in_body = 1,
                .has_date = 1,
                .has_message_id = 1,
                .from_count = 1,
                .received_count = 2,
                .from = "Jane <jane@example.test>"};
    check("Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
          "Received: from c by d; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
          "From: Jane <jane@example.test>\r\n"
          "To: bob@example.test\r\n"
          "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
          "Message-ID: <1@example.test>\r\n"
          "Subject: hi\r\n"
          "\r\n"
          "From: not a header\r\n"
          "Received: nor this\r\n",
          &w);
}

static void test_case_and_space(void **state)
{
    (void)state;
    want_t w = {.in_body = 1,
                .has_date = 1,
                .has_message_id = 1,
                .from_count = 1,
                .received_count = 1,
                .from = "a@x.test"};
    check("FROM:a@x.test\r\nmessage-id: <x>\r\nDATE : today\r\nreceived\t: x\r\n\r\n", &w);
    /* value whitespace: leading and trailing trimmed, inner kept */
    want_t w2 = {.in_body = 1, .from_count = 1, .from = "a  b@x.test"};
    check("From: \t a  b@x.test \t \r\n\r\n", &w2);
    /* empty From */
    want_t w3 = {.in_body = 1, .from_count = 1, .from = ""};
    check("From:\r\n\r\nbody", &w3);
}

static void test_folding(void **state)
{
    (void)state;
    /* Unfolding removes only the CRLF before WSP (RFC 5322 2.2.3). */
    want_t w = {.in_body = 1,
                .from_count = 1,
                .from = "\"Doe, Jane\"\t <jane@example.test>, bob@example.test"};
    check("Subject: a\r\n folded\r\n subject\r\n"
          "From: \"Doe, Jane\"\r\n\t <jane@example.test>,\r\n bob@example.test\r\n"
          "X-Long: a\r\n\tb\r\n"
          "\r\n",
          &w);
}

static void test_multiple_from(void **state)
{
    (void)state;
    want_t w = {.in_body = 1, .from_count = 3, .from = "first@x.test"};
    check("From: first@x.test\r\nFrom: second@x.test\r\nfrom: third@x.test\r\n\r\n", &w);
}

static void test_not_interesting_names(void **state)
{
    (void)state;
    want_t w = {.in_body = 1};
    check("Fromage: x\r\nX-From: y\r\nResent-From: z\r\nReceived-SPF: pass\r\nDates: x\r\n"
          "Message-IDs: x\r\nMessage-ID-Extra: x\r\n"
          "A-Very-Long-Field-Name-That-Does-Not-Fit-In-The-Buffer-At-All: v\r\n"
          "Fromxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: v\r\n\r\n",
          &w);
}

static void test_no_header(void **state)
{
    (void)state;
    want_t w = {.in_body = 1};
    check("Hello there, this is a body\r\nFrom: x@y.test\r\n\r\n", &w);
    check("\r\nFrom: x@y.test\r\n", &w);
    check(" From: x@y.test\r\n\r\n", &w);
    check(": x\r\nFrom: x@y.test\r\n\r\n", &w);
    check("From x@y.test Mon Jan 1\r\nFrom: x@y.test\r\n\r\n", &w);
    check("NoColon\r\nFrom: a@x.test\r\n", &w);
    static const char nul[] = "Subj\0ect: x\r\nFrom: a@x.test\r\n\r\n";
    check_scan(nul, sizeof(nul) - 1, 1, &w);
}

static void test_non_field_ends_header(void **state)
{
    (void)state;
    want_t w = {.in_body = 1, .from_count = 1, .from = "a@x.test"};
    check("From: a@x.test\r\nthis line is not a field\r\nDate: x\r\n\r\n", &w);
}

static void test_unfinished(void **state)
{
    (void)state;
    /* the message ends inside the header: finish completes the field */
    want_t w = {.from_count = 1, .has_date = 1, .from = "a@x.test"};
    check("Date: x\r\nFrom: a@x.test", &w);
    check("Date: x\r\nFrom: a@x.test\r\n", &w);
    want_t w2 = {.from_count = 1, .has_date = 1, .from = "a@x.test b"};
    check("Date: x\r\nFrom: a@x.test\r\n b\r\n", &w2);
    want_t w3 = {0};
    check("", &w3);
    /* without finish, a From whose next line is unknown is not complete yet */
    pr_hdrscan_t h;
    scan(&h, "From: a@x.test\r\n", 16, 1, 0);
    assert_null(h.from);
    assert_int_equal(h.from_count, 1);
    pr_hdrscan_feed(&h, "\r\n", 2);
    assert_true(h.in_body);
    assert_non_null(h.from);
    assert_string_equal(h.from, "a@x.test");
    pr_hdrscan_finish(&h);
    pr_hdrscan_finish(&h);
    assert_string_equal(h.from, "a@x.test");
}

static void test_bare_cr_lf(void **state)
{
    (void)state;
    want_t w = {.in_body = 1, .from_count = 1, .from = "a@x\r.test"};
    check("From: a@x\r.test\r\n\r\n", &w);
    want_t w2 = {.in_body = 1, .from_count = 1, .has_date = 1, .from = "a@x.test"};
    check("From: a@x.test\nDate: x\n\nbody", &w2);
    want_t w3 = {.in_body = 1, .from_count = 1, .from = "a@x.test"};
    check("From: a@x.test\r\n\rx", &w3);
}

static void test_from_limit(void **state)
{
    (void)state;
    char *v = apr_palloc(pool, PR_HDR_MAX_KEPT + 2);
    memset(v, 'a', PR_HDR_MAX_KEPT + 1);
    v[PR_HDR_MAX_KEPT + 1] = '\0';
    /* exactly the limit: kept */
    v[PR_HDR_MAX_KEPT] = '\0';
    want_t w = {.in_body = 1, .from_count = 1, .from = v};
    check(apr_pstrcat(pool, "From: ", v, "\r\n\r\n", NULL), &w);
    /* one over: truncated, not kept */
    v[PR_HDR_MAX_KEPT] = 'a';
    want_t w2 = {.in_body = 1, .from_count = 1, .from_truncated = 1};
    check(apr_pstrcat(pool, "From: ", v, "\r\n\r\n", NULL), &w2);
    /* folded over the limit */
    v[PR_HDR_MAX_KEPT - 10] = '\0';
    check(apr_pstrcat(pool, "From: ", v, "\r\n ", v, "\r\n\r\n", NULL), &w2);
}

static void test_huge_header(void **state)
{
    (void)state;
    /* Many fields and a huge value of an uninteresting field: no growth. */
    size_t n = 1 << 20;
    char *msg = apr_palloc(pool, n + 100);
    strcpy(msg, "X-Big: ");
    memset(msg + 7, 'x', n);
    strcpy(msg + 7 + n, "\r\nReceived: y\r\n\r\n");
    want_t w = {.in_body = 1, .received_count = 1};
    check_scan(msg, strlen(msg), 1, &w);
    pr_hdrscan_t h;
    pr_hdrscan_init(&h, pool);
    for (int i = 0; i < 100000; i++)
        pr_hdrscan_feed(&h, "Received: x\r\n", 13);
    pr_hdrscan_feed(&h, "\r\n", 2);
    assert_int_equal(h.received_count, 100000);
    assert_true(h.in_body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_case_and_space),
        cmocka_unit_test(test_folding),
        cmocka_unit_test(test_multiple_from),
        cmocka_unit_test(test_not_interesting_names),
        cmocka_unit_test(test_no_header),
        cmocka_unit_test(test_non_field_ends_header),
        cmocka_unit_test(test_unfinished),
        cmocka_unit_test(test_bare_cr_lf),
        cmocka_unit_test(test_from_limit),
        cmocka_unit_test(test_huge_header),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
