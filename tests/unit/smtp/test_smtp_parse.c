/* SMTP command parser: verbs, MAIL/RCPT paths and parameters (SIZE, BODY,
 * SMTPUTF8, AUTH=, the RFC 3461 DSN parameters), BDAT, AUTH, ETRN,
 * argument rules, invalid characters, the relay tricks the session must be
 * able to see, and line limits. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "service/core/status.h"
#include "service/smtp/smtp_parse.h"

static apr_pool_t *pool;
static const smtp_parse_opts_t plain = {0, 0, 0, 0};
static const smtp_parse_opts_t esmtp = {1, 0, 1, 0};   /* SMTPUTF8 + AUTH advertised */
static const smtp_parse_opts_t utf8txn = {1, 1, 0, 0}; /* RCPT after MAIL ... SMTPUTF8 */
static const smtp_parse_opts_t dsn = {1, 0, 0, 1};     /* DSN advertised */

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

/* Parse from a heap copy without a NUL so ASan sees any read past len. */
static apr_status_t parse_n(smtp_cmd_t *cmd, const char *line, size_t n, const smtp_parse_opts_t *o,
                            const char **reply)
{
    char *copy = malloc(n ? n : 1);
    memcpy(copy, line, n);
    apr_status_t st = smtp_parse(cmd, copy, n, o, reply, pool);
    free(copy);
    return st;
}

static smtp_cmd_t ok(const char *line, const smtp_parse_opts_t *o, smtp_verb_e verb)
{
    smtp_cmd_t cmd;
    const char *reply = NULL;
    if (parse_n(&cmd, line, strlen(line), o, &reply) != APR_SUCCESS)
        fail_msg("refused '%s': %s", line, reply ? reply : "(no reply)");
    assert_int_equal(cmd.verb, verb);
    assert_null(reply);
    return cmd;
}

/* The reply must start with want (code, enhanced code, and maybe text). */
static void bad_n(const char *line, size_t n, const smtp_parse_opts_t *o, const char *want)
{
    smtp_cmd_t cmd;
    const char *reply = NULL;
    if (parse_n(&cmd, line, n, o, &reply) != PR_EINVAL) fail_msg("accepted '%s'", line);
    assert_non_null(reply);
    if (strncmp(reply, want, strlen(want)) != 0)
        fail_msg("'%s': reply '%s', want '%s...'", line, reply, want);
    /* RFC 3463: every refusal has "NXX X.Y.Z " with matching class. */
    assert_true(strlen(reply) > 10);
    assert_true(reply[0] == '5' || reply[0] == '4');
    assert_int_equal(reply[3], ' ');
    assert_int_equal(reply[4], reply[0]);
    assert_int_equal(reply[5], '.');
    assert_null(strchr(reply, '\r'));
    assert_null(strchr(reply, '\n'));
}

static void bad(const char *line, const smtp_parse_opts_t *o, const char *want)
{
    bad_n(line, strlen(line), o, want);
}

static void test_verbs(void **state)
{
    (void)state;
    struct {
        const char *line;
        smtp_verb_e verb;
    } v[] = {
        {"HELO a", SMTP_CMD_HELO},
        {"ehlo a", SMTP_CMD_EHLO},
        {"MaIl FROM:<>", SMTP_CMD_MAIL},
        {"DATA", SMTP_CMD_DATA},
        {"bdat 1", SMTP_CMD_BDAT},
        {"RSET", SMTP_CMD_RSET},
        {"noop", SMTP_CMD_NOOP},
        {"QUIT", SMTP_CMD_QUIT},
        {"HELP", SMTP_CMD_HELP},
        {"VRFY x", SMTP_CMD_VRFY},
        {"EXPN x", SMTP_CMD_EXPN},
        {"StartTLS", SMTP_CMD_STARTTLS},
        {"AUTH PLAIN", SMTP_CMD_AUTH},
        {"SEND FROM:<a@b>", SMTP_CMD_SEND},
        {"SOML FROM:<a@b>", SMTP_CMD_SOML},
        {"SAML FROM:<a@b>", SMTP_CMD_SAML},
        {"TURN", SMTP_CMD_TURN},
        {"etrn example.test", SMTP_CMD_ETRN},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        assert_int_equal(smtp_parse_verb(v[i].line, strlen(v[i].line)), v[i].verb);
        ok(v[i].line, &plain, v[i].verb);
    }
    assert_int_equal(smtp_parse_verb("RCPT TO:<a@b>", 13), SMTP_CMD_RCPT);
    assert_int_equal(smtp_parse_verb("MAILX", 5), SMTP_CMD_UNKNOWN);
    assert_int_equal(smtp_parse_verb("MAI", 3), SMTP_CMD_UNKNOWN);
    assert_int_equal(smtp_parse_verb("", 0), SMTP_CMD_UNKNOWN);
    assert_int_equal(smtp_parse_verb("DATA", 3), SMTP_CMD_UNKNOWN);
    bad("FOO", &plain, "500 5.5.1 Command unrecognized");
    bad("", &plain, "500 5.5.1");
    bad(" HELO a", &plain, "500 5.5.1");
    bad("HELO\ta", &plain, "500 5.5.1");
    bad("DATAX", &plain, "500 5.5.1");
    bad("GET / HTTP/1.1", &plain, "500 5.5.1");
    bad("M\xc3\xa4IL FROM:<a@b.test>", &esmtp, "500 5.5.2 Invalid characters in command");
}

static void test_helo(void **state)
{
    (void)state;
    smtp_cmd_t c = ok("EHLO client.example.test", &plain, SMTP_CMD_EHLO);
    assert_string_equal(c.arg, "client.example.test");
    c = ok("HELO [127.0.0.1]", &plain, SMTP_CMD_HELO);
    assert_string_equal(c.arg, "[127.0.0.1]");
    c = ok("EHLO [IPv6:::1]", &plain, SMTP_CMD_EHLO);
    assert_string_equal(c.arg, "[IPv6:::1]");
    /* junk names real clients send */
    c = ok("EHLO my_pc", &plain, SMTP_CMD_EHLO);
    assert_string_equal(c.arg, "my_pc");
    c = ok("HELO  spaced ", &plain, SMTP_CMD_HELO);
    assert_string_equal(c.arg, "spaced");
    c = ok("EHLO LOCALHOST.", &plain, SMTP_CMD_EHLO);
    assert_string_equal(c.arg, "LOCALHOST.");
    bad("EHLO", &plain, "501 5.5.4 Syntax: EHLO hostname");
    bad("EHLO ", &plain, "501 5.5.4 Syntax: EHLO hostname");
    bad("HELO", &plain, "501 5.5.4 Syntax: HELO hostname");
    bad("HELO two words", &plain, "501 5.5.4 Syntax: HELO hostname");
    bad("EHLO h\xc3\xa4st", &esmtp, "500 5.5.2 Invalid characters in command");
}

static void test_mail(void **state)
{
    (void)state;
    smtp_cmd_t c = ok("MAIL FROM:<user@example.test>", &plain, SMTP_CMD_MAIL);
    assert_string_equal(c.path.address, "user@example.test");
    assert_false(c.path.null);
    assert_int_equal(c.size, -1);
    assert_int_equal(c.body, SMTP_BODY_NONE);
    assert_false(c.smtputf8);
    assert_null(c.auth);
    c = ok("mail from:<>", &plain, SMTP_CMD_MAIL);
    assert_true(c.path.null);
    assert_string_equal(c.path.address, "");
    c = ok("MAIL FROM: <user@example.test>", &plain, SMTP_CMD_MAIL);
    assert_string_equal(c.path.address, "user@example.test");
    c = ok("MAIL FROM:<user@example.test> ", &plain, SMTP_CMD_MAIL);
    c = ok("MAIL FROM:<@a.test,@b.test:user@example.test>", &plain, SMTP_CMD_MAIL);
    assert_true(c.path.route);
    assert_string_equal(c.path.address, "user@example.test");

    bad("MAIL", &plain, "501 5.5.4 Syntax: MAIL FROM:<address>");
    bad("MAIL FROM", &plain, "501 5.5.4 Syntax: MAIL FROM:<address>");
    bad("MAIL FROM:", &plain, "501 5.5.4 Syntax: MAIL FROM:<address>");
    bad("MAIL FROM:user@example.test", &plain, "501 5.5.4 Syntax: MAIL FROM:<address>");
    bad("MAIL FROM:  <user@example.test>", &plain, "501 5.5.4");
    bad("MAIL TO:<user@example.test>", &plain, "501 5.5.4");
    bad("MAIL FROM :<user@example.test>", &plain, "501 5.5.4");
    bad("MAIL  FROM:<user@example.test>", &plain, "501 5.5.4");
    bad("MAIL FROM:<user@example.test>x", &plain, "501 5.5.4");
    bad("MAIL FROM:<user>", &plain, "501 5.1.7");
    bad("MAIL FROM:<postmaster>", &plain, "501 5.1.7");
    bad("MAIL FROM:<user@example.test", &plain, "501 5.1.7");
    bad("MAIL FROM:<us er@example.test>", &plain, "501 5.1.7");
    bad("MAIL FROM:<a..b@example.test>", &plain, "501 5.1.7");
}

static void test_rcpt(void **state)
{
    (void)state;
    smtp_cmd_t c = ok("RCPT TO:<user@example.test>", &plain, SMTP_CMD_RCPT);
    assert_string_equal(c.path.local, "user");
    assert_string_equal(c.path.domain, "example.test");
    c = ok("rcpt to: <User@Example.Test>", &plain, SMTP_CMD_RCPT);
    assert_string_equal(c.path.address, "User@Example.Test");
    c = ok("RCPT TO:<postmaster>", &plain, SMTP_CMD_RCPT);
    assert_string_equal(c.path.local, "postmaster");
    assert_null(c.path.domain);
    c = ok("RCPT TO:<Postmaster>", &plain, SMTP_CMD_RCPT);
    assert_null(c.path.domain);
    bad("RCPT TO:<>", &plain, "501 5.1.3");
    bad("RCPT TO:", &plain, "501 5.5.4 Syntax: RCPT TO:<address>");
    bad("RCPT FROM:<a@b.test>", &plain, "501 5.5.4 Syntax: RCPT TO:<address>");
    bad("RCPT TO:<user>", &plain, "501 5.1.3");
    bad("RCPT TO:<a@b.test> NOTIFY=NEVER", &plain, "555 5.5.4 Unsupported parameter NOTIFY");
    bad("RCPT TO:<a@b.test> SIZE=10", &esmtp, "555 5.5.4 Unsupported parameter SIZE");
    bad("RCPT TO:<a@b.test> ORCPT=rfc822;a@b.test", &plain, "555 5.5.4");
}

static void test_relay_tricks(void **state)
{
    (void)state;
    smtp_cmd_t c = ok("RCPT TO:<user%other.test@example.test>", &plain, SMTP_CMD_RCPT);
    assert_string_equal(c.path.local, "user%other.test");
    assert_string_equal(c.path.domain, "example.test");
    c = ok("RCPT TO:<other.test!user@example.test>", &plain, SMTP_CMD_RCPT);
    assert_string_equal(c.path.local, "other.test!user");
    assert_string_equal(c.path.domain, "example.test");
    c = ok("RCPT TO:<@example.test:user@other.test>", &plain, SMTP_CMD_RCPT);
    assert_true(c.path.route);
    assert_string_equal(c.path.address, "user@other.test");
    assert_string_equal(c.path.domain, "other.test");
    c = ok("RCPT TO:<\"user@other.test\"@example.test>", &plain, SMTP_CMD_RCPT);
    assert_true(c.path.quoted);
    assert_string_equal(c.path.local, "\"user@other.test\"");
    assert_string_equal(c.path.domain, "example.test");
    c = ok("RCPT TO:<user@[127.0.0.9]>", &plain, SMTP_CMD_RCPT);
    assert_true(c.path.literal);
    assert_string_equal(c.path.domain, "[127.0.0.9]");
    c = ok("RCPT TO:<user@[IPv6:::1]>", &plain, SMTP_CMD_RCPT);
    assert_true(c.path.literal);
}

static void test_mail_params(void **state)
{
    (void)state;
    smtp_cmd_t c = ok("MAIL FROM:<a@b.test> SIZE=12345", &plain, SMTP_CMD_MAIL);
    assert_int_equal(c.size, 12345);
    c = ok("MAIL FROM:<a@b.test> size=0 body=8bitmime", &plain, SMTP_CMD_MAIL);
    assert_int_equal(c.size, 0);
    assert_int_equal(c.body, SMTP_BODY_8BITMIME);
    c = ok("MAIL FROM:<a@b.test>  BODY=7BIT   SIZE=1 ", &plain, SMTP_CMD_MAIL);
    assert_int_equal(c.body, SMTP_BODY_7BIT);
    c = ok("MAIL FROM:<a@b.test> SIZE=9223372036854775807", &plain, SMTP_CMD_MAIL);
    assert_true(c.size == (apr_off_t)9223372036854775807LL);
    c = ok("MAIL FROM:<a@b.test> SIZE=00000000000000000001", &plain, SMTP_CMD_MAIL);
    assert_int_equal(c.size, 1);
    c = ok("MAIL FROM:<> SMTPUTF8", &esmtp, SMTP_CMD_MAIL);
    assert_true(c.smtputf8);
    c = ok("MAIL FROM:<a@b.test> AUTH=<>", &esmtp, SMTP_CMD_MAIL);
    assert_string_equal(c.auth, "<>");
    c = ok("MAIL FROM:<a@b.test> AUTH=e+3Dmc2@b.test", &esmtp, SMTP_CMD_MAIL);
    assert_string_equal(c.auth, "e=mc2@b.test");
    c = ok("MAIL FROM:<a@b.test> SIZE=1 BODY=8BITMIME SMTPUTF8 AUTH=a@b.test", &esmtp,
           SMTP_CMD_MAIL);
    assert_int_equal(c.size, 1);
    assert_true(c.smtputf8);
    assert_string_equal(c.auth, "a@b.test");

    bad("MAIL FROM:<a@b.test> SIZE", &plain, "501 5.5.4 Bad SIZE parameter");
    bad("MAIL FROM:<a@b.test> SIZE=", &plain, "501 5.5.4");
    bad("MAIL FROM:<a@b.test> SIZE=-1", &plain, "501 5.5.4 Bad SIZE parameter");
    bad("MAIL FROM:<a@b.test> SIZE=12a", &plain, "501 5.5.4 Bad SIZE parameter");
    bad("MAIL FROM:<a@b.test> SIZE=+12", &plain, "501 5.5.4 Bad SIZE parameter");
    bad("MAIL FROM:<a@b.test> SIZE=9223372036854775808", &plain, "501 5.5.4 Bad SIZE parameter");
    bad("MAIL FROM:<a@b.test> SIZE=99999999999999999999", &plain, "501 5.5.4 Bad SIZE parameter");
    bad("MAIL FROM:<a@b.test> SIZE=000000000000000000001", &plain, "501 5.5.4 Bad SIZE parameter");
    bad("MAIL FROM:<a@b.test> SIZE=1 SIZE=2", &plain, "501 5.5.4 Duplicate parameter SIZE");
    bad("MAIL FROM:<a@b.test> BODY=8BITMIME body=7bit", &plain, "501 5.5.4 Duplicate");
    bad("MAIL FROM:<a@b.test> BODY=BINARYMIME", &plain, "555 5.5.4");
    bad("MAIL FROM:<a@b.test> BODY=9BIT", &plain, "501 5.5.4 Bad BODY parameter");
    bad("MAIL FROM:<a@b.test> BODY", &plain, "501 5.5.4 Bad BODY parameter");
    bad("MAIL FROM:<a@b.test> SMTPUTF8", &plain, "555 5.5.4 Unsupported parameter SMTPUTF8");
    bad("MAIL FROM:<a@b.test> SMTPUTF8=yes", &esmtp, "501 5.5.4");
    bad("MAIL FROM:<a@b.test> SMTPUTF8 SMTPUTF8", &esmtp, "501 5.5.4 Duplicate");
    bad("MAIL FROM:<a@b.test> AUTH=<>", &plain, "555 5.5.4 Unsupported parameter AUTH");
    bad("MAIL FROM:<a@b.test> AUTH=a+2", &esmtp, "501 5.5.4 Bad AUTH parameter");
    bad("MAIL FROM:<a@b.test> AUTH=a+00b", &esmtp, "501 5.5.4 Bad AUTH parameter");
    bad("MAIL FROM:<a@b.test> AUTH=a+zzb", &esmtp, "501 5.5.4 Bad AUTH parameter");
    bad("MAIL FROM:<a@b.test> AUTH", &esmtp, "501 5.5.4 Bad AUTH parameter");
    bad("MAIL FROM:<a@b.test> AUTH=<> AUTH=<>", &esmtp, "501 5.5.4 Duplicate");
    bad("MAIL FROM:<a@b.test> RET=HDRS", &plain, "555 5.5.4 Unsupported parameter RET");
    bad("MAIL FROM:<a@b.test> X-FOO=bar", &plain, "555 5.5.4 Unsupported parameter X-FOO");
    bad("MAIL FROM:<a@b.test> =x", &plain, "501 5.5.4");
    bad("MAIL FROM:<a@b.test> -X=1", &plain, "501 5.5.4");
    bad("MAIL FROM:<a@b.test> A_B=1", &plain, "501 5.5.4");
    bad("MAIL FROM:<a@b.test> X=a=b", &plain, "501 5.5.4");
    bad("MAIL FROM:<a@b.test> SIZE=1 X\xc3\xa4=1", &esmtp, "500 5.5.2");
}

static void test_smtputf8(void **state)
{
    (void)state;
    const char *u = "MAIL FROM:<j\xc3\xb6rg@b\xc3\xbc"
                    "cher.test> SMTPUTF8";
    smtp_cmd_t c = ok(u, &esmtp, SMTP_CMD_MAIL);
    assert_true(c.path.utf8);
    assert_true(c.smtputf8);
    assert_string_equal(c.path.local, "j\xc3\xb6rg");
    /* not advertised, or not asked for on this MAIL */
    bad(u, &plain, "555 5.5.4 Unsupported parameter SMTPUTF8");
    bad("MAIL FROM:<j\xc3\xb6rg@x.test>", &esmtp, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
    bad("MAIL FROM:<j\xc3\xb6rg@x.test>", &plain, "553 5.6.7");
    /* RCPT follows the transaction's MAIL */
    c = ok("RCPT TO:<\xe5\xad\xa6\xe7\x94\x9f@\xe5\xad\xa6\xe6\xa0\xa1.test>", &utf8txn,
           SMTP_CMD_RCPT);
    assert_true(c.path.utf8);
    bad("RCPT TO:<\xc3\xa4@x.test>", &esmtp, "553 5.6.7");
    bad("RCPT TO:<\xc3\xa4@x.test>", &plain, "553 5.6.7");
    /* invalid UTF-8 is never an address */
    bad("MAIL FROM:<j\xc3@x.test> SMTPUTF8", &esmtp, "501 5.1.7");
    bad("RCPT TO:<\xed\xa0\x80@x.test>", &utf8txn, "501 5.1.3");
    bad("MAIL FROM:<a@[\xc3\xa4:1]> SMTPUTF8", &esmtp, "501 5.1.7");
    /* never in other commands */
    bad("VRFY j\xc3\xb6rg", &utf8txn, "500 5.5.2 Invalid characters in command");
    bad("NOOP \xff", &plain, "500 5.5.2");
}

static void test_invalid_chars(void **state)
{
    (void)state;
    bad_n("NOOP a\0b", 8, &plain, "500 5.5.2 Invalid characters in command");
    bad_n("\0", 1, &plain, "500 5.5.2");
    bad_n("MAIL FROM:<a@b.test>\0", 21, &plain, "500 5.5.2");
    bad_n("RCPT TO:<a\0@b.test>", 19, &plain, "500 5.5.2");
    bad("NOOP a\rb", &plain, "500 5.5.2");
    bad("DATA\n", &plain, "500 5.5.2");
    bad("RSET\r", &plain, "500 5.5.2");
    bad("HELO a\x01", &plain, "500 5.5.2");
    bad("HELO a\x7f", &plain, "500 5.5.2");
    ok("NOOP a\tb", &plain, SMTP_CMD_NOOP);
}

static void test_no_argument(void **state)
{
    (void)state;
    ok("DATA", &plain, SMTP_CMD_DATA);
    ok("DATA ", &plain, SMTP_CMD_DATA);
    ok("QUIT", &plain, SMTP_CMD_QUIT);
    ok("RSET  ", &plain, SMTP_CMD_RSET);
    ok("STARTTLS", &plain, SMTP_CMD_STARTTLS);
    bad("DATA x", &plain, "501 5.5.4");
    bad("RSET now", &plain, "501 5.5.4");
    bad("QUIT bye", &plain, "501 5.5.4");
    bad("STARTTLS please", &plain, "501 5.5.4");
    smtp_cmd_t c = ok("NOOP", &plain, SMTP_CMD_NOOP);
    assert_string_equal(c.arg, "");
    c = ok("NOOP anything at all", &plain, SMTP_CMD_NOOP);
    assert_string_equal(c.arg, "anything at all");
    c = ok("HELP MAIL", &plain, SMTP_CMD_HELP);
    assert_string_equal(c.arg, "MAIL");
    c = ok("VRFY user@example.test", &plain, SMTP_CMD_VRFY);
    assert_string_equal(c.arg, "user@example.test");
    c = ok("EXPN staff", &plain, SMTP_CMD_EXPN);
    assert_string_equal(c.arg, "staff");
    bad("VRFY", &plain, "501 5.5.4 Syntax: VRFY address");
    bad("VRFY  ", &plain, "501 5.5.4");
    bad("EXPN", &plain, "501 5.5.4 Syntax: EXPN address");
}

static void test_bdat(void **state)
{
    (void)state;
    smtp_cmd_t c = ok("BDAT 1000", &plain, SMTP_CMD_BDAT);
    assert_int_equal(c.chunk_size, 1000);
    assert_false(c.last);
    c = ok("BDAT 0 LAST", &plain, SMTP_CMD_BDAT);
    assert_int_equal(c.chunk_size, 0);
    assert_true(c.last);
    c = ok("bdat 42 last", &plain, SMTP_CMD_BDAT);
    assert_true(c.last);
    c = ok("BDAT 9223372036854775807", &plain, SMTP_CMD_BDAT);
    assert_true(c.chunk_size == (apr_off_t)9223372036854775807LL);
    bad("BDAT", &plain, "501 5.5.4 Syntax: BDAT size [LAST]");
    bad("BDAT LAST", &plain, "501 5.5.4");
    bad("BDAT -1", &plain, "501 5.5.4");
    bad("BDAT 1x", &plain, "501 5.5.4");
    bad("BDAT 1 FIRST", &plain, "501 5.5.4");
    bad("BDAT 1 LAST LAST", &plain, "501 5.5.4");
    bad("BDAT 1 LASTX", &plain, "501 5.5.4");
    bad("BDAT 123456789012345678901", &plain, "501 5.5.4");
    bad("BDAT 99999999999999999999", &plain, "501 5.5.4");
}

static void test_auth(void **state)
{
    (void)state;
    smtp_cmd_t c = ok("AUTH plain", &plain, SMTP_CMD_AUTH);
    assert_string_equal(c.mechanism, "PLAIN");
    assert_null(c.initial_response);
    c = ok("AUTH PLAIN AHVzZXIAcGFzcw==", &plain, SMTP_CMD_AUTH);
    assert_string_equal(c.mechanism, "PLAIN");
    assert_string_equal(c.initial_response, "AHVzZXIAcGFzcw==");
    c = ok("AUTH LOGIN =", &plain, SMTP_CMD_AUTH);
    assert_string_equal(c.initial_response, "=");
    c = ok("auth scram-sha-256", &plain, SMTP_CMD_AUTH);
    assert_string_equal(c.mechanism, "SCRAM-SHA-256");
    c = ok("AUTH X_OAUTH2", &plain, SMTP_CMD_AUTH);
    assert_string_equal(c.mechanism, "X_OAUTH2");
    bad("AUTH", &plain, "501 5.5.4 Syntax: AUTH mechanism");
    bad("AUTH ", &plain, "501 5.5.4");
    bad("AUTH PLAIN a b", &plain, "501 5.5.4");
    bad("AUTH PL@IN", &plain, "501 5.5.4");
    bad("AUTH ABCDEFGHIJKLMNOPQRSTU", &plain, "501 5.5.4");
    ok("AUTH ABCDEFGHIJKLMNOPQRST", &plain, SMTP_CMD_AUTH);
    bad("AUTH PLAIN a*b", &plain, "501 5.5.2");
}

static void test_xtext(void **state)
{
    (void)state;
    assert_string_equal(smtp_xtext_decode("", pool), "");
    assert_string_equal(smtp_xtext_decode("plain", pool), "plain");
    assert_string_equal(smtp_xtext_decode("a+2Bb+3D", pool), "a+b=");
    assert_string_equal(smtp_xtext_decode("+7e", pool), "~");
    assert_null(smtp_xtext_decode("a=b", pool));
    assert_null(smtp_xtext_decode("a b", pool));
    assert_null(smtp_xtext_decode("+", pool));
    assert_null(smtp_xtext_decode("+4", pool));
    assert_null(smtp_xtext_decode("+G0", pool));
    assert_null(smtp_xtext_decode("+00", pool));
    assert_null(smtp_xtext_decode("\xc3\xa4", pool));
}

static void test_dsn_mail(void **state)
{
    (void)state;
    smtp_cmd_t c = ok("MAIL FROM:<a@b.test> RET=FULL ENVID=QQ314159", &dsn, SMTP_CMD_MAIL);
    assert_int_equal(c.ret, SMTP_DSN_RET_FULL);
    assert_string_equal(c.envid, "QQ314159");
    c = ok("MAIL FROM:<a@b.test> ret=hdrs", &dsn, SMTP_CMD_MAIL);
    assert_int_equal(c.ret, SMTP_DSN_RET_HDRS);
    assert_null(c.envid);
    c = ok("MAIL FROM:<> envid=a+2Bb+20c", &dsn, SMTP_CMD_MAIL);
    assert_string_equal(c.envid, "a+b c");
    assert_int_equal(c.ret, SMTP_DSN_RET_NONE);
    c = ok("MAIL FROM:<a@b.test>", &dsn, SMTP_CMD_MAIL);
    assert_int_equal(c.ret, SMTP_DSN_RET_NONE);
    /* 100 octets as sent is the limit (RFC 3461 4.4) */
    char *id = apr_palloc(pool, 102);
    memset(id, 'x', 101);
    id[101] = '\0';
    bad(apr_pstrcat(pool, "MAIL FROM:<a@b.test> ENVID=", id, NULL), &dsn,
        "501 5.5.4 ENVID parameter too long");
    id[100] = '\0';
    c = ok(apr_pstrcat(pool, "MAIL FROM:<a@b.test> ENVID=", id, NULL), &dsn, SMTP_CMD_MAIL);
    assert_int_equal(strlen(c.envid), 100);

    bad("MAIL FROM:<a@b.test> RET=FULL", &plain, "555 5.5.4 Unsupported parameter RET");
    bad("MAIL FROM:<a@b.test> ENVID=x", &esmtp, "555 5.5.4 Unsupported parameter ENVID");
    bad("MAIL FROM:<a@b.test> RET=ALL", &dsn, "501 5.5.4 Bad RET parameter");
    bad("MAIL FROM:<a@b.test> RET", &dsn, "501 5.5.4 Bad RET parameter");
    bad("MAIL FROM:<a@b.test> RET=FULLY", &dsn, "501 5.5.4 Bad RET parameter");
    bad("MAIL FROM:<a@b.test> RET=FULL RET=HDRS", &dsn, "501 5.5.4 Duplicate parameter RET");
    bad("MAIL FROM:<a@b.test> ENVID=a ENVID=b", &dsn, "501 5.5.4 Duplicate parameter ENVID");
    bad("MAIL FROM:<a@b.test> ENVID", &dsn, "501 5.5.4 Bad ENVID parameter");
    bad("MAIL FROM:<a@b.test> ENVID=a+2", &dsn, "501 5.5.4 Bad ENVID parameter");
    bad("MAIL FROM:<a@b.test> ENVID=a+0Ab", &dsn, "501 5.5.4 Bad ENVID parameter");
    bad("MAIL FROM:<a@b.test> ENVID=a+C3+A4", &dsn, "501 5.5.4 Bad ENVID parameter");
    bad("MAIL FROM:<a@b.test> ENVID=+00", &dsn, "501 5.5.4 Bad ENVID parameter");
    /* RCPT parameters on MAIL and the other way round */
    bad("MAIL FROM:<a@b.test> NOTIFY=NEVER", &dsn, "555 5.5.4 Unsupported parameter NOTIFY");
    bad("RCPT TO:<a@b.test> RET=FULL", &dsn, "555 5.5.4 Unsupported parameter RET");
    bad("RCPT TO:<a@b.test> ENVID=x", &dsn, "555 5.5.4 Unsupported parameter ENVID");
}

static void test_dsn_rcpt(void **state)
{
    (void)state;
    smtp_cmd_t c = ok("RCPT TO:<a@b.test> NOTIFY=NEVER", &dsn, SMTP_CMD_RCPT);
    assert_int_equal(c.notify, SMTP_DSN_NEVER);
    assert_null(c.orcpt);
    c = ok("RCPT TO:<a@b.test> NOTIFY=success,Failure,DELAY", &dsn, SMTP_CMD_RCPT);
    assert_int_equal(c.notify, SMTP_DSN_SUCCESS | SMTP_DSN_FAILURE | SMTP_DSN_DELAY);
    c = ok("RCPT TO:<a@b.test> NOTIFY=DELAY", &dsn, SMTP_CMD_RCPT);
    assert_int_equal(c.notify, SMTP_DSN_DELAY);
    c = ok("RCPT TO:<a@b.test>", &dsn, SMTP_CMD_RCPT);
    assert_int_equal(c.notify, 0);
    c = ok("RCPT TO:<a@b.test> ORCPT=rfc822;A+2Bx@B.test NOTIFY=FAILURE", &dsn, SMTP_CMD_RCPT);
    assert_string_equal(c.orcpt, "rfc822;A+x@B.test");
    assert_int_equal(c.notify, SMTP_DSN_FAILURE);
    c = ok("RCPT TO:<a@b.test> ORCPT=x400;c+3Dde+3Ba+20b", &dsn, SMTP_CMD_RCPT);
    assert_string_equal(c.orcpt, "x400;c=de;a b");
    c = ok("RCPT TO:<a@b.test> ORCPT=rfc822;a;b", &dsn, SMTP_CMD_RCPT);
    assert_string_equal(c.orcpt, "rfc822;a;b");

    bad("RCPT TO:<a@b.test> NOTIFY=NEVER", &esmtp, "555 5.5.4 Unsupported parameter NOTIFY");
    bad("RCPT TO:<a@b.test> NOTIFY=NEVER,SUCCESS", &dsn, "501 5.5.4 Bad NOTIFY parameter");
    bad("RCPT TO:<a@b.test> NOTIFY=FAILURE,NEVER", &dsn, "501 5.5.4 Bad NOTIFY parameter");
    bad("RCPT TO:<a@b.test> NOTIFY=SUCCESS,SUCCESS", &dsn, "501 5.5.4 Bad NOTIFY parameter");
    bad("RCPT TO:<a@b.test> NOTIFY=SUCCESS,", &dsn, "501 5.5.4 Bad NOTIFY parameter");
    bad("RCPT TO:<a@b.test> NOTIFY=,SUCCESS", &dsn, "501 5.5.4 Bad NOTIFY parameter");
    bad("RCPT TO:<a@b.test> NOTIFY=SUCCESS,,DELAY", &dsn, "501 5.5.4 Bad NOTIFY parameter");
    bad("RCPT TO:<a@b.test> NOTIFY=ALWAYS", &dsn, "501 5.5.4 Bad NOTIFY parameter");
    bad("RCPT TO:<a@b.test> NOTIFY", &dsn, "501 5.5.4 Bad NOTIFY parameter");
    bad("RCPT TO:<a@b.test> NOTIFY=DELAY NOTIFY=DELAY", &dsn, "501 5.5.4 Duplicate parameter");
    bad("RCPT TO:<a@b.test> ORCPT=rfc822;a@b.test", &esmtp, "555 5.5.4");
    bad("RCPT TO:<a@b.test> ORCPT", &dsn, "501 5.5.4 Bad ORCPT parameter");
    bad("RCPT TO:<a@b.test> ORCPT=a@b.test", &dsn, "501 5.5.4 Bad ORCPT parameter");
    bad("RCPT TO:<a@b.test> ORCPT=;a@b.test", &dsn, "501 5.5.4 Bad ORCPT parameter");
    bad("RCPT TO:<a@b.test> ORCPT=rfc822;", &dsn, "501 5.5.4 Bad ORCPT parameter");
    bad("RCPT TO:<a@b.test> ORCPT=rfc.822;a@b.test", &dsn, "501 5.5.4 Bad ORCPT parameter");
    bad("RCPT TO:<a@b.test> ORCPT=rfc822;a+0D+0A@b.test", &dsn, "501 5.5.4 Bad ORCPT");
    bad("RCPT TO:<a@b.test> ORCPT=rfc822;a+2", &dsn, "501 5.5.4 Bad ORCPT parameter");
    bad("RCPT TO:<a@b.test> ORCPT=rfc822;a ORCPT=rfc822;b", &dsn, "501 5.5.4 Duplicate");
    /* 500 octets as sent (RFC 3461 4.2) */
    char *a = apr_palloc(pool, 502);
    memcpy(a, "rfc822;", 7);
    memset(a + 7, 'x', 494);
    a[501] = '\0';
    bad(apr_pstrcat(pool, "RCPT TO:<a@b.test> ORCPT=", a, NULL), &dsn,
        "501 5.5.4 ORCPT parameter too long");
    a[500] = '\0';
    c = ok(apr_pstrcat(pool, "RCPT TO:<a@b.test> ORCPT=", a, NULL), &dsn, SMTP_CMD_RCPT);
    assert_int_equal(strlen(c.orcpt), 500);
    /* the longest RCPT with both fits the line limit */
    c = ok(apr_pstrcat(pool, "RCPT TO:<a@b.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=", a, NULL),
           &dsn, SMTP_CMD_RCPT);
}

static void test_etrn(void **state)
{
    (void)state;
    smtp_cmd_t c = ok("ETRN example.test", &plain, SMTP_CMD_ETRN);
    assert_string_equal(c.arg, "example.test");
    c = ok("ETRN  @Example.Test ", &plain, SMTP_CMD_ETRN);
    assert_string_equal(c.arg, "@Example.Test");
    c = ok("etrn #queue1", &plain, SMTP_CMD_ETRN);
    assert_string_equal(c.arg, "#queue1");
    bad("ETRN", &plain, "501 5.5.4 Syntax: ETRN");
    bad("ETRN ", &plain, "501 5.5.4 Syntax: ETRN");
    bad("ETRN a.test b.test", &plain, "501 5.5.4 Syntax: ETRN");
    bad("ETRN b\xc3\xbc.test", &esmtp, "500 5.5.2");
}

static void test_limits(void **state)
{
    (void)state;
    assert_int_equal(smtp_line_limit(SMTP_CMD_MAIL), SMTP_MAIL_LINE_MAX);
    assert_int_equal(smtp_line_limit(SMTP_CMD_RCPT), SMTP_RCPT_LINE_MAX);
    assert_int_equal(smtp_line_limit(SMTP_CMD_AUTH), SMTP_AUTH_LINE_MAX);
    assert_int_equal(smtp_line_limit(SMTP_CMD_HELO), SMTP_LINE_MAX);
    assert_int_equal(smtp_line_limit(SMTP_CMD_UNKNOWN), SMTP_LINE_MAX);
    assert_int_equal(smtp_line_limit(SMTP_CMD_DATA), SMTP_LINE_MAX);
    assert_true(SMTP_MAIL_LINE_MAX == 512 + 26 + 500 + 100);
    assert_true(SMTP_RCPT_LINE_MAX == 512 + 500);

    /* the parser enforces the line limits itself too (CRLF counted) */
    char *noop = apr_palloc(pool, SMTP_AUTH_LINE_MAX + 1);
    memset(noop, 'x', SMTP_AUTH_LINE_MAX);
    memcpy(noop, "NOOP ", 5);
    bad_n(noop, SMTP_LINE_MAX - 1, &plain, "500 5.5.2 Line too long");
    smtp_cmd_t c;
    const char *reply;
    assert_int_equal(parse_n(&c, noop, SMTP_LINE_MAX - 2, &plain, &reply), APR_SUCCESS);
    memcpy(noop, "AUTH PLAIN ", 11);
    assert_int_equal(parse_n(&c, noop, SMTP_AUTH_LINE_MAX - 2, &plain, &reply), APR_SUCCESS);
    bad_n(noop, SMTP_AUTH_LINE_MAX - 1, &plain, "500 5.5.2 Line too long");
    char *mail = apr_palloc(pool, SMTP_MAIL_LINE_MAX);
    memset(mail, ' ', SMTP_MAIL_LINE_MAX);
    memcpy(mail, "MAIL FROM:<a@b.test>", 20);
    assert_int_equal(parse_n(&c, mail, SMTP_MAIL_LINE_MAX - 2, &plain, &reply), APR_SUCCESS);
    bad_n(mail, SMTP_MAIL_LINE_MAX - 1, &plain, "500 5.5.2 Line too long");
    memcpy(mail, "RCPT TO:<a@b.test>", 18);
    bad_n(mail, SMTP_RCPT_LINE_MAX - 1, &plain, "500 5.5.2 Line too long");

    /* the DSN allowance is for parameters: a bad path past 512 is a long line */
    char *longpath = apr_palloc(pool, 600);
    memset(longpath, 'a', 599);
    longpath[599] = '\0';
    memcpy(longpath, "RCPT TO:<", 9);
    memcpy(longpath + 580, "@example.test>", 15);
    bad(longpath, &dsn, "500 5.5.2 Line too long");

    /* a path over 256 octets is refused */
    char *local = apr_pstrdup(pool, "u");
    char *dom = "";
    for (int i = 0; i < 30; i++)
        dom = apr_pstrcat(pool, dom, "abcdefgh.", NULL);
    char *line = apr_pstrcat(pool, "RCPT TO:<", local, "@", dom, "test>", NULL);
    bad(line, &plain, "501 5.1.3");
    /* too many parameters: all refused before the 17th */
    char *m = apr_pstrdup(pool, "MAIL FROM:<a@b.test>");
    for (int i = 0; i < SMTP_MAX_PARAMS + 1; i++)
        m = apr_pstrcat(pool, m, " BODY=7BIT", NULL);
    bad(m, &plain, "501 5.5.4");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verbs),        cmocka_unit_test(test_helo),
        cmocka_unit_test(test_mail),         cmocka_unit_test(test_rcpt),
        cmocka_unit_test(test_relay_tricks), cmocka_unit_test(test_mail_params),
        cmocka_unit_test(test_smtputf8),     cmocka_unit_test(test_invalid_chars),
        cmocka_unit_test(test_no_argument),  cmocka_unit_test(test_bdat),
        cmocka_unit_test(test_auth),         cmocka_unit_test(test_xtext),
        cmocka_unit_test(test_dsn_mail),     cmocka_unit_test(test_dsn_rcpt),
        cmocka_unit_test(test_etrn),         cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
