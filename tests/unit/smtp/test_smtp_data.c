/* DATA/BDAT decoding: dot transparency, the CRLF.CRLF terminator, bare CR/LF
 * refusal (SMTP smuggling), size limit, 8-bit content noted; fed whole and
 * one byte at a time. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "service/smtp/smtp_data.h"

typedef struct out_t {
    char buf[4096];
    size_t len;
} out_t;

static apr_status_t sink(void *ctx, const char *d, apr_size_t n)
{
    out_t *o = ctx;
    assert_true(o->len + n < sizeof(o->buf));
    memcpy(o->buf + o->len, d, n);
    o->len += n;
    return APR_SUCCESS;
}

typedef struct result_t {
    out_t out;
    smtp_data_t d;
    size_t consumed;
} result_t;

/* Decode in chunks of `step` bytes (0 = whole). */
static void decode(result_t *r, int dot, const char *in, size_t len, size_t step, apr_off_t limit)
{
    memset(r, 0, sizeof(*r));
    smtp_data_init(&r->d, dot, limit, sink, &r->out);
    size_t pos = 0;
    while (pos < len && !r->d.done) {
        size_t n = step ? step : len;
        if (n > len - pos) n = len - pos;
        size_t used = smtp_data_feed(&r->d, in + pos, n);
        assert_true(used <= n);
        pos += used;
        if (used < n) break;
    }
    r->consumed = pos;
}

static void check_both(int dot, const char *in, const char *want, int done, int bare,
                       size_t consumed)
{
    size_t steps[] = {0, 1, 2, 3, 7};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        result_t r;
        decode(&r, dot, in, strlen(in), steps[i], 1 << 20);
        assert_int_equal(r.d.done, done);
        assert_int_equal(r.d.bare, bare);
        if (!bare) {
            assert_int_equal(r.out.len, strlen(want));
            assert_memory_equal(r.out.buf, want, strlen(want));
            assert_int_equal((size_t)r.d.size, strlen(want));
        }
        if (consumed) assert_int_equal(r.consumed, consumed);
    }
}

static void test_simple(void **state)
{
    (void)state;
    check_both(1, "Subject: x\r\n\r\nhello\r\n.\r\n", "Subject: x\r\n\r\nhello\r\n", 1, 0, 0);
}

static void test_empty_message(void **state)
{
    (void)state;
    check_both(1, ".\r\n", "", 1, 0, 3);
}

static void test_dot_unstuffing(void **state)
{
    (void)state;
    check_both(1, "..leading\r\n...\r\n.x\r\nend\r\n.\r\n", ".leading\r\n..\r\nx\r\nend\r\n", 1, 0,
               0);
}

static void test_stops_at_terminator(void **state)
{
    (void)state;
    const char *in = "a\r\n.\r\nQUIT\r\n";
    check_both(1, in, "a\r\n", 1, 0, strlen("a\r\n.\r\n"));
}

static void test_bare_lf_refused(void **state)
{
    (void)state;
    /* The smuggling pattern: <LF>.<LF> or <LF>.<CRLF> must not end data. */
    check_both(1, "a\n.\nMAIL FROM:<x@y>\r\n.\r\n", NULL, 1, 1, 0);
    check_both(1, "a\r\n.\nb\r\n.\r\n", NULL, 1, 1, 0);
    check_both(1, "a\n.\r\nb\r\n.\r\n", NULL, 1, 1, 0);
}

static void test_bare_cr_refused(void **state)
{
    (void)state;
    check_both(1, "a\r.\r\nb\r\n.\r\n", NULL, 1, 1, 0);
    check_both(1, "a\rb\r\n.\r\n", NULL, 1, 1, 0);
}

static void test_bare_lf_does_not_end(void **state)
{
    (void)state;
    result_t r;
    const char *in = "x\n.\n";
    decode(&r, 1, in, strlen(in), 0, 1 << 20);
    assert_false(r.d.done);
    assert_true(r.d.bare);
}

static void test_size_limit(void **state)
{
    (void)state;
    result_t r;
    const char *in = "0123456789\r\n0123456789\r\n.\r\n";
    decode(&r, 1, in, strlen(in), 0, 15);
    assert_true(r.d.done);
    assert_true(r.d.too_big);
    assert_true(r.out.len <= 15);
}

static void test_8bit_passes(void **state)
{
    (void)state;
    check_both(1, "Gr\xc3\xbc\xc3\x9f\x65\r\n\xff\x80\r\n.\r\n",
               "Gr\xc3\xbc\xc3\x9f\x65\r\n\xff\x80\r\n", 1, 0, 0);
}

/* 8-bit octets are noted (for the relayed copy's BODY=8BITMIME), in any
 * chunking; 7-bit content is not; the dot of a stuffed line is not data. */
static void test_8bit_noted(void **state)
{
    (void)state;
    const char *eight = "Subject: x\r\n\r\ncaf\xc3\xa9\r\n.\r\n";
    const char *seven = "Subject: x\r\n\r\n..cafe~\x7f\r\n.\r\n";
    for (size_t step = 0; step < 5; step++) {
        result_t r;
        decode(&r, 1, eight, strlen(eight), step, 1 << 20);
        assert_true(r.d.eightbit);
        decode(&r, 1, seven, strlen(seven), step, 1 << 20);
        assert_false(r.d.eightbit);
        decode(&r, 0, "\x80", 1, step, 1 << 20);
        assert_true(r.d.eightbit);
    }
}

/* The scan goes a word at a time: a single 8-bit octet is seen wherever it
 * falls in a run, and a long run of the highest 7-bit octet is not one. */
static void test_8bit_any_position(void **state)
{
    (void)state;
    char buf[41];
    memset(buf, 0x7f, sizeof(buf));
    result_t r;
    decode(&r, 0, buf, sizeof(buf), 0, 1 << 20);
    assert_false(r.d.eightbit);
    for (size_t i = 0; i < sizeof(buf); i++) {
        memset(buf, 'a', sizeof(buf));
        buf[i] = (char)0x80;
        decode(&r, 0, buf, sizeof(buf), 0, 1 << 20);
        assert_true(r.d.eightbit);
    }
}

static void test_bdat(void **state)
{
    (void)state;
    result_t r;
    const char *in = ".not stuffed\r\n.\r\nmore";
    decode(&r, 0, in, strlen(in), 0, 1 << 20);
    assert_false(r.d.done);
    smtp_data_finish(&r.d);
    assert_false(r.d.bare);
    const char *want = ".not stuffed\r\n.\r\nmore\r\n";
    assert_int_equal(r.out.len, strlen(want));
    assert_memory_equal(r.out.buf, want, strlen(want));
    assert_int_equal((size_t)r.d.size, strlen(want));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_empty_message),
        cmocka_unit_test(test_dot_unstuffing),
        cmocka_unit_test(test_stops_at_terminator),
        cmocka_unit_test(test_bare_lf_refused),
        cmocka_unit_test(test_bare_cr_refused),
        cmocka_unit_test(test_bare_lf_does_not_end),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_8bit_passes),
        cmocka_unit_test(test_8bit_noted),
        cmocka_unit_test(test_8bit_any_position),
        cmocka_unit_test(test_bdat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
