/* Unit tests for the POP3 command parser: keywords in any case, argument
 * counts, strict numbers and their ranges, the RFC 2449 line and argument
 * limits with their AUTH and USER/PASS exceptions, and control characters. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <apr_general.h>
#include <apr_strings.h>
#include <string.h>

#include "service/core/status.h"
#include "service/pop3/pop3_parse.h"

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

/* Parse s; returns the reply on failure or NULL on success. */
static const char *parse(pop3_cmd_t *cmd, const char *s)
{
    const char *reply = NULL;
    apr_status_t st = pop3_parse(cmd, s, strlen(s), &reply, pool);
    if (st == APR_SUCCESS) {
        assert_null(reply);
        return NULL;
    }
    assert_int_equal(st, PR_EINVAL);
    assert_non_null(reply);
    assert_true(strncmp(reply, "-ERR ", 5) == 0);
    assert_null(strchr(reply, '\r'));
    return reply;
}

static void test_verbs_any_case(void **state)
{
    (void)state;
    pop3_cmd_t c;
    static const struct {
        const char *line;
        pop3_verb_e verb;
    } ok[] = {
        {"USER a@b.test", POP3_CMD_USER}, {"pass x", POP3_CMD_PASS}, {"StAt", POP3_CMD_STAT},
        {"list", POP3_CMD_LIST},          {"retr 1", POP3_CMD_RETR}, {"dele 2", POP3_CMD_DELE},
        {"noop", POP3_CMD_NOOP},          {"rset", POP3_CMD_RSET},   {"top 1 0", POP3_CMD_TOP},
        {"uidl", POP3_CMD_UIDL},          {"quit", POP3_CMD_QUIT},   {"last", POP3_CMD_LAST},
        {"capa", POP3_CMD_CAPA},          {"stls", POP3_CMD_STLS},   {"auth", POP3_CMD_AUTH},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_null(parse(&c, ok[i].line));
        assert_int_equal(c.verb, ok[i].verb);
        assert_int_equal(pop3_parse_verb(ok[i].line, strlen(ok[i].line)), ok[i].verb);
    }
    assert_string_equal(pop3_verb_name(POP3_CMD_TOP), "TOP");
    /* APOP is not offered; neither are made-up or prefixed keywords. */
    assert_string_equal(parse(&c, "APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
                        "-ERR Unknown command");
    assert_string_equal(parse(&c, "STATS"), "-ERR Unknown command");
    assert_string_equal(parse(&c, "ST"), "-ERR Unknown command");
    assert_string_equal(parse(&c, ""), "-ERR Unknown command");
    assert_string_equal(parse(&c, " STAT"), "-ERR Unknown command");
    assert_string_equal(parse(&c, "STAT\t"), "-ERR Unknown command");
}

static void test_arguments(void **state)
{
    (void)state;
    pop3_cmd_t c;
    assert_null(parse(&c, "LIST"));
    assert_int_equal(c.msgno, 0);
    assert_null(parse(&c, "LIST 7"));
    assert_int_equal(c.msgno, 7);
    assert_null(parse(&c, "UIDL 12 "));
    assert_int_equal(c.msgno, 12);
    assert_null(parse(&c, "TOP 3 0"));
    assert_int_equal(c.msgno, 3);
    assert_int_equal(c.lines, 0);
    assert_null(parse(&c, "TOP 3 2147483647"));
    assert_int_equal(c.lines, 2147483647);
    assert_null(parse(&c, "RETR 2147483647"));
    assert_int_equal(c.msgno, 2147483647);
    assert_null(parse(&c, "RETR 007"));
    assert_int_equal(c.msgno, 7);
    assert_null(parse(&c, "STAT  "));

    /* Wrong argument counts. */
    assert_string_equal(parse(&c, "RETR"), "-ERR Syntax: RETR msg");
    assert_string_equal(parse(&c, "RETR 1 2"), "-ERR Syntax: RETR msg");
    assert_string_equal(parse(&c, "DELE"), "-ERR Syntax: DELE msg");
    assert_string_equal(parse(&c, "LIST 1 2"), "-ERR Syntax: LIST [msg]");
    assert_string_equal(parse(&c, "UIDL 1 2"), "-ERR Syntax: UIDL [msg]");
    assert_string_equal(parse(&c, "TOP 1"), "-ERR Syntax: TOP msg lines");
    assert_string_equal(parse(&c, "TOP 1 2 3"), "-ERR Syntax: TOP msg lines");
    assert_string_equal(parse(&c, "STAT 1"), "-ERR Syntax: STAT takes no argument");
    assert_string_equal(parse(&c, "QUIT now"), "-ERR Syntax: QUIT takes no argument");
    assert_string_equal(parse(&c, "STLS x"), "-ERR Syntax: STLS takes no argument");
    assert_string_equal(parse(&c, "USER"), "-ERR Syntax: USER name");
    assert_string_equal(parse(&c, "USER a b"), "-ERR Syntax: USER name");
    assert_string_equal(parse(&c, "PASS"), "-ERR Syntax: PASS password");
    assert_string_equal(parse(&c, "PASS "), "-ERR Syntax: PASS password");

    /* Numbers: strictly decimal, no sign, in range. */
    assert_string_equal(parse(&c, "RETR 0"), "-ERR Invalid message number");
    assert_string_equal(parse(&c, "RETR -1"), "-ERR Invalid message number");
    assert_string_equal(parse(&c, "RETR +1"), "-ERR Invalid message number");
    assert_string_equal(parse(&c, "RETR 1x"), "-ERR Invalid message number");
    assert_string_equal(parse(&c, "RETR 0x10"), "-ERR Invalid message number");
    assert_string_equal(parse(&c, "RETR 2147483648"), "-ERR Invalid message number");
    assert_string_equal(parse(&c, "LIST 99999999999999999999"), "-ERR Invalid message number");
    assert_string_equal(parse(&c, "TOP 0 1"), "-ERR Invalid message number");
    assert_string_equal(parse(&c, "TOP 1 -1"), "-ERR Invalid line count");
    assert_string_equal(parse(&c, "TOP 1 2147483648"), "-ERR Invalid line count");
}

static void test_user_pass(void **state)
{
    (void)state;
    pop3_cmd_t c;
    assert_null(parse(&c, "user Alice@Example.TEST"));
    assert_string_equal(c.arg, "Alice@Example.TEST");
    /* RFC 1939 7: the password is the rest of the line, spaces included. */
    assert_null(parse(&c, "PASS  my secret pw "));
    assert_string_equal(c.arg, " my secret pw ");
    assert_int_equal(c.arg_len, 14);
    /* UTF-8 in a password or a user name, not elsewhere. */
    assert_null(parse(&c, "PASS gr\xc3\xbc\xc3\x9f" "e"));
    assert_string_equal(parse(&c, "LIST \xc3\xbc"), "-ERR Invalid characters in command");
    /* Long addresses and passwords are fine up to the line limit. */
    char user[300];
    memset(user, 'a', sizeof(user));
    memcpy(user, "USER ", 5);
    user[253] = '\0'; /* 253 + CRLF = 255 */
    assert_null(parse(&c, user));
    assert_int_equal(c.arg_len, 248);
    user[253] = 'a';
    user[254] = '\0';
    assert_string_equal(parse(&c, user), "-ERR Line too long");
}

static void test_limits(void **state)
{
    (void)state;
    pop3_cmd_t c;
    char line[POP3_SASL_LINE_MAX + 16];

    /* A 40-octet argument is fine, 41 is not. */
    memset(line, '0', sizeof(line));
    memcpy(line, "RETR ", 5);
    line[5 + 39] = '1';
    line[5 + 40] = '\0';
    assert_null(parse(&c, line));
    assert_int_equal(c.msgno, 1);
    line[5 + 40] = '1';
    line[5 + 41] = '\0';
    assert_string_equal(parse(&c, line), "-ERR Argument too long");

    /* 255 octets with CRLF. */
    memset(line, ' ', sizeof(line));
    memcpy(line, "NOOP", 4);
    line[253] = '\0';
    assert_null(parse(&c, line));
    line[253] = ' ';
    line[254] = '\0';
    assert_string_equal(parse(&c, line), "-ERR Line too long");
    assert_int_equal(pop3_line_limit(POP3_CMD_NOOP), 255);
    assert_int_equal(pop3_line_limit(POP3_CMD_UNKNOWN), 255);
    assert_int_equal(pop3_line_limit(POP3_CMD_AUTH), POP3_SASL_LINE_MAX);

    /* AUTH with an initial response may go up to POP3_SASL_LINE_MAX. */
    memset(line, 'A', sizeof(line));
    memcpy(line, "AUTH PLAIN ", 11);
    line[POP3_SASL_LINE_MAX - 2] = '\0';
    assert_null(parse(&c, line));
    assert_string_equal(c.mechanism, "PLAIN");
    assert_int_equal(strlen(c.initial_response), POP3_SASL_LINE_MAX - 2 - 11);
    line[POP3_SASL_LINE_MAX - 2] = 'A';
    line[POP3_SASL_LINE_MAX - 1] = '\0';
    assert_string_equal(parse(&c, line), "-ERR Line too long");
}

static void test_auth(void **state)
{
    (void)state;
    pop3_cmd_t c;
    assert_null(parse(&c, "AUTH"));
    assert_null(c.mechanism);
    assert_null(parse(&c, "auth plain"));
    assert_string_equal(c.mechanism, "PLAIN");
    assert_null(c.initial_response);
    assert_null(parse(&c, "AUTH PLAIN AGFAYgBj"));
    assert_string_equal(c.initial_response, "AGFAYgBj");
    assert_null(parse(&c, "AUTH LOGIN ="));
    assert_string_equal(c.initial_response, "=");
    assert_null(parse(&c, "AUTH x-oauth_2"));
    assert_string_equal(c.mechanism, "X-OAUTH_2");
    assert_non_null(parse(&c, "AUTH PLAIN a b"));
    assert_non_null(parse(&c, "AUTH PL*IN"));
    assert_non_null(parse(&c, "AUTH ABCDEFGHIJKLMNOPQRSTU")); /* 21 > 20 */
    assert_string_equal(parse(&c, "AUTH PLAIN a$b"), "-ERR Invalid base64 in initial response");
}

static void test_controls(void **state)
{
    (void)state;
    pop3_cmd_t c;
    const char *reply = NULL;
    assert_int_equal(pop3_parse(&c, "RETR 1\0 2", 9, &reply, pool), PR_EINVAL);
    assert_string_equal(reply, "-ERR Invalid characters in command");
    assert_string_equal(parse(&c, "PASS a\rb"), "-ERR Invalid characters in command");
    assert_string_equal(parse(&c, "USER a\tb"), "-ERR Invalid characters in command");
    assert_string_equal(parse(&c, "NOOP \x7f"), "-ERR Invalid characters in command");
    /* A NUL inside the keyword makes it unknown. */
    assert_int_equal(pop3_parse(&c, "ST\0T", 4, &reply, pool), PR_EINVAL);
    assert_string_equal(reply, "-ERR Unknown command");
}

int main(void)
{
    apr_initialize();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verbs_any_case), cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_user_pass),      cmocka_unit_test(test_limits),
        cmocka_unit_test(test_auth),           cmocka_unit_test(test_controls),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    apr_terminate();
    return rc;
}
