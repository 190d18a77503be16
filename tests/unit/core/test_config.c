/* Unit tests for postroom.conf parsing: every value type good and bad,
 * defaults, line-numbered errors, list and listener semantics. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <apr_general.h>
#include <apr_file_io.h>
#include <apr_strings.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "service/core/config.h"
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

/* Parses text that must be valid. */
static pr_config_t *ok(const char *text)
{
    pr_config_t *cfg = NULL;
    const char *err = NULL;
    apr_status_t st = pr_config_parse_string(&cfg, text, "t.conf", &err, pool);
    if (st != APR_SUCCESS) fail_msg("unexpected error: %s", err ? err : "(none)");
    assert_non_null(cfg);
    return cfg;
}

/* Parses text that must be refused; returns the message. */
static const char *bad(const char *text)
{
    pr_config_t *cfg = NULL;
    const char *err = NULL;
    apr_status_t st = pr_config_parse_string(&cfg, text, "t.conf", &err, pool);
    if (st == APR_SUCCESS) fail_msg("accepted bad config:\n%s", text);
    assert_int_equal(st, PR_EINVAL);
    assert_non_null(err);
    return err;
}

static void assert_error(const char *text, const char *expected)
{
    const char *err = bad(text);
    if (strcmp(err, expected) != 0) fail_msg("got '%s'\nwant '%s'", err, expected);
}

static void assert_error_prefix(const char *text, const char *expected)
{
    const char *err = bad(text);
    if (strncmp(err, expected, strlen(expected)) != 0)
        fail_msg("got '%s'\nwant prefix '%s'", err, expected);
}

static void test_defaults(void **state)
{
    (void)state;
    pr_config_t *cfg = ok("");
    assert_string_equal(cfg->path, "t.conf");
    assert_non_null(cfg->server.hostname);
    assert_true(strlen(cfg->server.hostname) > 0);
    assert_int_equal(cfg->server.domains.n, 0);
    assert_string_equal(cfg->server.data_dir, "/var/lib/postroom");
    assert_string_equal(cfg->server.pidfile, "/var/lib/postroom/postroomd.pid");
    assert_string_equal(cfg->server.log, "stderr");
    assert_int_equal(cfg->server.log_level, PR_LOG_INFO);
    assert_int_equal(cfg->server.max_connections, 2000);
    assert_int_equal(cfg->server.max_connections_per_address, 50);
    assert_int_equal(cfg->server.limit_exempt_networks.n, 0);
    assert_true(cfg->server.shutdown_grace == apr_time_from_sec(60));

    assert_int_equal(cfg->smtp.listen.n, 1);
    assert_string_equal(cfg->smtp.listen.v[0].host, "0.0.0.0");
    assert_int_equal(cfg->smtp.listen.v[0].port, 25);
    assert_int_equal(cfg->smtp.submission.n, 1);
    assert_int_equal(cfg->smtp.submission.v[0].port, 587);
    assert_int_equal(cfg->smtp.smtps.n, 1);
    assert_int_equal(cfg->smtp.smtps.v[0].port, 465);
    assert_true(cfg->smtp.max_message_size == 25 * 1024 * 1024);
    assert_int_equal(cfg->smtp.max_recipients, 100);
    assert_int_equal(cfg->smtp.relay_networks.n, 2);
    assert_true(pr_cidr_match_text(cfg->smtp.relay_networks.v, 2, "127.0.0.1"));
    assert_true(pr_cidr_match_text(cfg->smtp.relay_networks.v, 2, "::1"));
    assert_false(pr_cidr_match_text(cfg->smtp.relay_networks.v, 2, "192.0.2.1"));
    assert_int_equal(cfg->smtp.allow_plaintext_auth, 0);
    assert_int_equal(cfg->smtp.vrfy, 0);
    assert_int_equal(cfg->smtp.expn, 0);
    assert_true(cfg->smtp.command_timeout == apr_time_from_sec(300));
    assert_true(cfg->smtp.data_timeout == apr_time_from_sec(180));
    assert_int_equal(cfg->smtp.max_errors, 10);

    assert_true(cfg->store.min_free_space == 0);
    assert_string_equal(cfg->tls.certificate, "");
    assert_string_equal(cfg->tls.key, "");
    assert_int_equal(cfg->tls.min_version, TLS1_2_VERSION);
    assert_string_equal(cfg->directory.backend, "local");

    /* pr_config_defaults alone gives the same. */
    pr_config_t d;
    pr_config_defaults(&d, pool);
    assert_string_equal(d.server.pidfile, "/var/lib/postroom/postroomd.pid");
    assert_int_equal(d.smtp.max_recipients, 100);
}

static void test_full_config(void **state)
{
    (void)state;
    pr_config_t *cfg = ok("; a complete file\n"
                          "[server]\n"
                          "hostname = Mail.Example.ORG\n"
                          "domains = Example.org, staff.example.org\n"
                          "data_dir = /srv/postroom\n"
                          "log = syslog\n"
                          "log_level = debug\n"
                          "max_connections = 100\n"
                          "max_connections_per_address = 5\n"
                          "limit_exempt_networks = 10.0.0.0/8\n"
                          "shutdown_grace = 2m\n"
                          "\n"
                          "[smtp]\n"
                          "listen = 127.0.0.1:2525, [::1]:2525\n"
                          "submission = 127.0.0.1:2587\n"
                          "smtps =\n"
                          "max_message_size = 10m\n"
                          "max_recipients = 50\n"
                          "relay_networks = 192.168.0.0/16 ; the school LAN\n"
                          "allow_plaintext_auth = yes\n"
                          "vrfy = YES\n"
                          "expn = no\n"
                          "command_timeout = 10m\n"
                          "data_timeout = 90\n"
                          "max_errors = 3\n"
                          "[store]\n"
                          "min_free_space = 1g\n"
                          "[tls]\n"
                          "certificate = /etc/postroom/cert.pem\n"
                          "key = /etc/postroom/key.pem\n"
                          "min_version = TLSv1.3\n"
                          "[directory]\n"
                          "backend = local\n");
    assert_string_equal(cfg->server.hostname, "mail.example.org");
    assert_int_equal(cfg->server.domains.n, 2);
    assert_string_equal(cfg->server.domains.v[0], "example.org");
    assert_string_equal(cfg->server.domains.v[1], "staff.example.org");
    assert_string_equal(cfg->server.data_dir, "/srv/postroom");
    assert_string_equal(cfg->server.pidfile, "/srv/postroom/postroomd.pid");
    assert_string_equal(cfg->server.log, "syslog");
    assert_int_equal(cfg->server.log_level, PR_LOG_DEBUG);
    assert_int_equal(cfg->server.max_connections, 100);
    assert_int_equal(cfg->server.max_connections_per_address, 5);
    assert_int_equal(cfg->server.limit_exempt_networks.n, 1);
    assert_true(cfg->server.shutdown_grace == apr_time_from_sec(120));
    assert_int_equal(cfg->smtp.listen.n, 2);
    assert_string_equal(cfg->smtp.listen.v[0].host, "127.0.0.1");
    assert_int_equal(cfg->smtp.listen.v[0].port, 2525);
    assert_string_equal(cfg->smtp.listen.v[1].host, "::1");
    assert_int_equal(cfg->smtp.listen.v[1].port, 2525);
    assert_int_equal(cfg->smtp.submission.n, 1);
    assert_int_equal(cfg->smtp.smtps.n, 0);
    assert_true(cfg->smtp.max_message_size == 10 * 1024 * 1024);
    assert_int_equal(cfg->smtp.max_recipients, 50);
    assert_int_equal(cfg->smtp.relay_networks.n, 1);
    assert_true(pr_cidr_match_text(cfg->smtp.relay_networks.v, 1, "192.168.7.8"));
    assert_false(pr_cidr_match_text(cfg->smtp.relay_networks.v, 1, "127.0.0.1"));
    assert_int_equal(cfg->smtp.allow_plaintext_auth, 1);
    assert_int_equal(cfg->smtp.vrfy, 1);
    assert_int_equal(cfg->smtp.expn, 0);
    assert_true(cfg->smtp.command_timeout == apr_time_from_sec(600));
    assert_true(cfg->smtp.data_timeout == apr_time_from_sec(90));
    assert_int_equal(cfg->smtp.max_errors, 3);
    assert_true(cfg->store.min_free_space == 1024 * 1024 * 1024);
    assert_string_equal(cfg->tls.certificate, "/etc/postroom/cert.pem");
    assert_string_equal(cfg->tls.key, "/etc/postroom/key.pem");
    assert_int_equal(cfg->tls.min_version, TLS1_3_VERSION);
    assert_string_equal(cfg->directory.backend, "local");
}

static void test_pidfile_follows_data_dir(void **state)
{
    (void)state;
    pr_config_t *cfg = ok("[server]\ndata_dir = /srv/pr/\n");
    assert_string_equal(cfg->server.pidfile, "/srv/pr/postroomd.pid");
    /* An explicit pidfile wins, whichever comes first. */
    cfg = ok("[server]\npidfile = /run/p.pid\ndata_dir = /srv/pr\n");
    assert_string_equal(cfg->server.pidfile, "/run/p.pid");
    cfg = ok("[server]\ndata_dir = /srv/pr\npidfile = /run/p.pid\n");
    assert_string_equal(cfg->server.pidfile, "/run/p.pid");
}

static void test_bool(void **state)
{
    (void)state;
    int v = -1;
    assert_int_equal(pr_parse_bool(&v, "yes"), APR_SUCCESS);
    assert_int_equal(v, 1);
    assert_int_equal(pr_parse_bool(&v, "No"), APR_SUCCESS);
    assert_int_equal(v, 0);
    assert_int_equal(pr_parse_bool(&v, "YES"), APR_SUCCESS);
    assert_int_equal(v, 1);
    const char *badv[] = {"", "true", "false", "on", "off", "1", "0", "y", "yes ", " no", "yess"};
    for (size_t i = 0; i < sizeof(badv) / sizeof(badv[0]); i++)
        assert_int_equal(pr_parse_bool(&v, badv[i]), PR_EINVAL);
    assert_int_equal(pr_parse_bool(&v, NULL), PR_EINVAL);

    assert_error("[smtp]\nvrfy = true\n",
                 "t.conf:2: [smtp] vrfy: bad boolean 'true' (use yes or no)");
    assert_error("[smtp]\nexpn =\n", "t.conf:2: [smtp] expn: empty value");
}

static void test_duration(void **state)
{
    (void)state;
    apr_time_t t;
    struct {
        const char *text;
        apr_int64_t sec;
    } good[] = {{"0", 0},
                {"30", 30},
                {"30s", 30},
                {"5m", 300},
                {"4h", 14400},
                {"5d", 432000},
                {"007", 7},
                {"106751991d", 106751991LL * 86400},
                {"9223372036854", 9223372036854LL}};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(pr_parse_duration(&t, good[i].text), APR_SUCCESS);
        assert_true(t == apr_time_from_sec(good[i].sec));
    }
    const char *badv[] = {"",
                          "-5",
                          "+5",
                          "5x",
                          "5 m",
                          "5M",
                          "m",
                          "5mm",
                          "1.5h",
                          " 5",
                          "5 ",
                          "0x10",
                          "106751992d",
                          "99999999999999999999",
                          "9223372036855s"};
    for (size_t i = 0; i < sizeof(badv) / sizeof(badv[0]); i++) {
        if (pr_parse_duration(&t, badv[i]) != PR_EINVAL) fail_msg("accepted '%s'", badv[i]);
    }
    assert_int_equal(pr_parse_duration(&t, NULL), PR_EINVAL);

    assert_error("[smtp]\n\ncommand_timeout = 5x\n",
                 "t.conf:3: [smtp] command_timeout: bad duration '5x'");
    assert_error("[smtp]\ndata_timeout = -1\n", "t.conf:2: [smtp] data_timeout: bad duration '-1'");
    assert_error_prefix("[smtp]\ndata_timeout = 0\n",
                        "t.conf:2: [smtp] data_timeout: 0 is out of range");
    assert_error_prefix("[server]\nshutdown_grace = 400d\n",
                        "t.conf:2: [server] shutdown_grace: 400d is out of range");
    pr_config_t *cfg = ok("[server]\nshutdown_grace = 0\n");
    assert_true(cfg->server.shutdown_grace == 0);
}

static void test_size(void **state)
{
    (void)state;
    apr_off_t v;
    struct {
        const char *text;
        apr_int64_t bytes;
    } good[] = {{"0", 0},
                {"26214400", 26214400},
                {"25m", 25 * 1024 * 1024},
                {"25M", 25 * 1024 * 1024},
                {"1k", 1024},
                {"1K", 1024},
                {"2g", 2LL * 1024 * 1024 * 1024},
                {"9223372036854775807", INT64_MAX},
                {"8589934591g", 8589934591LL * 1024 * 1024 * 1024}};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(pr_parse_size(&v, good[i].text), APR_SUCCESS);
        assert_true(v == good[i].bytes);
    }
    const char *badv[] = {"",
                          "ten",
                          "25mb",
                          "-1",
                          "+1",
                          "1.5m",
                          "1 k",
                          "k",
                          "1t",
                          " 1",
                          "1 ",
                          "0x10",
                          "9223372036854775808",
                          "8589934592g",
                          "9007199254740992k",
                          "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(badv) / sizeof(badv[0]); i++) {
        if (pr_parse_size(&v, badv[i]) != PR_EINVAL) fail_msg("accepted '%s'", badv[i]);
    }

    /* The message format an admin sees (line 12). */
    assert_error("[smtp]\n\n\n\n\n\n\n\n\n\n\nmax_message_size = ten\n",
                 "t.conf:12: [smtp] max_message_size: bad size 'ten'");
    assert_error_prefix("[smtp]\nmax_message_size = 0\n",
                        "t.conf:2: [smtp] max_message_size: 0 is out of range");
    assert_error_prefix("[smtp]\nmax_message_size = 2000g\n",
                        "t.conf:2: [smtp] max_message_size: 2000g is out of range");
    assert_error("[store]\nmin_free_space = 1x\n",
                 "t.conf:2: [store] min_free_space: bad size '1x'");
}

static void test_int_ranges(void **state)
{
    (void)state;
    pr_config_t *cfg = ok("[server]\nmax_connections = 100000\n[smtp]\nmax_recipients = 1\n");
    assert_int_equal(cfg->server.max_connections, 100000);
    assert_int_equal(cfg->smtp.max_recipients, 1);
    assert_error("[server]\nmax_connections = 0\n",
                 "t.conf:2: [server] max_connections: 0 is out of range (1..100000)");
    assert_error("[server]\nmax_connections = 100001\n",
                 "t.conf:2: [server] max_connections: 100001 is out of range (1..100000)");
    assert_error("[smtp]\nmax_recipients = 12a\n",
                 "t.conf:2: [smtp] max_recipients: bad number '12a'");
    assert_error("[smtp]\nmax_recipients = -1\n",
                 "t.conf:2: [smtp] max_recipients: bad number '-1'");
    assert_error("[smtp]\nmax_errors = 99999999999999999999999\n",
                 "t.conf:2: [smtp] max_errors: bad number '99999999999999999999999'");
    assert_error_prefix("[server]\nmax_connections_per_address = 0\n",
                        "t.conf:2: [server] max_connections_per_address: 0 is out of range");
}

static void test_unknown_and_structure(void **state)
{
    (void)state;
    assert_error("[smtp]\nlisten = 0.0.0.0:25\nfoo = 1\n", "t.conf:3: unknown key 'foo' in [smtp]");
    /* An unknown section is an error even with no keys in it. */
    assert_error("[server]\n\n[imap4]\n", "t.conf:3: unknown section [imap4]");
    assert_error("[server]\n[web]\nlisten = 0.0.0.0:80\n", "t.conf:2: unknown section [web]");
    assert_error("[ldap]\nfoo = 1\n", "t.conf:2: unknown key 'foo' in [ldap]");
    assert_error("hostname = x\n", "t.conf:1: key 'hostname' outside any section");
    assert_error("[smtp]\nvrfy = no\n\nvrfy = yes\n",
                 "t.conf:4: [smtp] vrfy: duplicate key (first set on line 2)");
    /* Duplicate across two blocks of the same section. */
    assert_error("[smtp]\nvrfy = no\n[server]\n[smtp]\nVRFY = yes\n",
                 "t.conf:5: [smtp] vrfy: duplicate key (first set on line 2)");
    assert_error_prefix("[smtp]\njust words\n", "t.conf:2: syntax error");
    assert_error("[smtp\nvrfy = no\n", "t.conf:1: syntax error: bad section header");
    assert_error_prefix("[smtp] junk\n", "t.conf:1: syntax error");
    assert_error("[smtp] vrfy = yes\n", "t.conf:1: syntax error: bad section header");
    assert_error("[smtp]\nvrfy = no\n[tls] key = x\n",
                 "t.conf:3: syntax error: bad section header");
    assert_error("[smtp]\n= 5\n", "t.conf:2: unknown key '' in [smtp]");
    /* A key of a different section is unknown here. */
    assert_error("[tls]\nhostname = x\n", "t.conf:2: unknown key 'hostname' in [tls]");
    /* The first error is reported, not a later one. */
    assert_error("[smtp]\nvrfy = maybe\nfoo = 1\n",
                 "t.conf:2: [smtp] vrfy: bad boolean 'maybe' (use yes or no)");
    assert_error("[smtp]\nvrfy = maybe\njunk\n",
                 "t.conf:2: [smtp] vrfy: bad boolean 'maybe' (use yes or no)");
}

static void test_lexical(void **state)
{
    (void)state;
    /* Case-insensitive names, CRLF, BOM, comments, ':' separator. */
    pr_config_t *cfg = ok("\xEF\xBB\xBF# comment\r\n"
                          "[SMTP]\r\n"
                          "Max_Recipients = 7   ; inline comment\r\n"
                          "   vrfy = yes\r\n"
                          "expn: yes\r\n"
                          "  [ tls ]  ; indented header\n"
                          "key = /k;no-comment\n");
    assert_int_equal(cfg->smtp.max_recipients, 7);
    assert_int_equal(cfg->smtp.vrfy, 1);
    assert_int_equal(cfg->smtp.expn, 1);
    assert_string_equal(cfg->tls.key, "/k;no-comment");
    /* A file without a final newline. */
    cfg = ok("[smtp]\nmax_recipients = 9");
    assert_int_equal(cfg->smtp.max_recipients, 9);
}

static void test_long_lines_and_continuation(void **state)
{
    (void)state;
    char *text = apr_pstrcat(pool, "[server]\nhostname = ", NULL);
    for (int i = 0; i < 40; i++)
        text = apr_pstrcat(pool, text, "abcdefgh.", NULL);
    text = apr_pstrcat(pool, text, "org\n", NULL);
    assert_error_prefix(text, "t.conf:2: line too long");

    /* Lists continue on indented lines, with or without a trailing comma. */
    pr_config_t *cfg = ok("[server]\n"
                          "domains = a.example.org,\n"
                          "    b.example.org\n"
                          "\n"
                          "    c.example.org, d.example.org\n"
                          "data_dir = /x\n");
    assert_int_equal(cfg->server.domains.n, 4);
    assert_string_equal(cfg->server.domains.v[2], "c.example.org");
    assert_string_equal(cfg->server.data_dir, "/x");
    cfg = ok("[smtp]\nrelay_networks =\n  10.0.0.0/8\n  192.168.0.0/16\n");
    assert_int_equal(cfg->smtp.relay_networks.n, 2);
    assert_error("[server]\ndata_dir = /x\n  /y\n",
                 "t.conf:3: [server] data_dir: only lists may continue on an indented line (got "
                 "'/y')");
    /* An error in a continued value names the key's line. */
    assert_error("[server]\ndomains = a.org,\n  b_c.org\n",
                 "t.conf:2: [server] domains: bad domain 'b_c.org'");
}

static void test_lists(void **state)
{
    (void)state;
    pr_config_t *cfg = ok("[smtp]\nrelay_networks =\n");
    assert_int_equal(cfg->smtp.relay_networks.n, 0);
    assert_false(
        pr_cidr_match_text(cfg->smtp.relay_networks.v, cfg->smtp.relay_networks.n, "127.0.0.1"));
    cfg = ok("[smtp]\nrelay_networks = 10.0.0.0/8 ,  ::1 ,192.0.2.7\n");
    assert_int_equal(cfg->smtp.relay_networks.n, 3);
    assert_true(pr_cidr_match_text(cfg->smtp.relay_networks.v, 3, "192.0.2.7"));
    assert_false(pr_cidr_match_text(cfg->smtp.relay_networks.v, 3, "192.0.2.8"));

    assert_error("[smtp]\nrelay_networks = 10.0.0.0/8, , ::1\n",
                 "t.conf:2: [smtp] relay_networks: empty item in list '10.0.0.0/8, , ::1'");
    assert_error_prefix("[smtp]\nrelay_networks = 10.0.0.0/8,\n",
                        "t.conf:2: [smtp] relay_networks: empty item in list");
    assert_error_prefix("[smtp]\nrelay_networks = ,10.0.0.0/8\n",
                        "t.conf:2: [smtp] relay_networks: empty item in list");
    assert_error_prefix("[smtp]\nrelay_networks = 10.0.0.0/33\n",
                        "t.conf:2: [smtp] relay_networks: bad network '10.0.0.0/33'");
    assert_error_prefix("[server]\nlimit_exempt_networks = lan\n",
                        "t.conf:2: [server] limit_exempt_networks: bad network 'lan'");

    cfg = ok("[server]\ndomains =\n");
    assert_int_equal(cfg->server.domains.n, 0);
    /* Duplicates collapse; case folds. */
    cfg = ok("[server]\ndomains = a.org, A.ORG, b.org\n");
    assert_int_equal(cfg->server.domains.n, 2);
}

static void test_domains(void **state)
{
    (void)state;
    const char *d;
    assert_int_equal(pr_parse_domain(&d, "Example.ORG", pool), APR_SUCCESS);
    assert_string_equal(d, "example.org");
    assert_int_equal(pr_parse_domain(&d, "localhost", pool), APR_SUCCESS);
    assert_int_equal(pr_parse_domain(&d, "xn--bcher-kva.example", pool), APR_SUCCESS);
    assert_int_equal(pr_parse_domain(&d, "a-b.c1.org", pool), APR_SUCCESS);
    const char *badv[] = {"",        "a..b", ".org",  "a.org.", "-a.org", "a-.org", "ex_ample.org",
                          "a b.org", "a@b",  "é.org", "a.org/x"};
    for (size_t i = 0; i < sizeof(badv) / sizeof(badv[0]); i++) {
        if (pr_parse_domain(&d, badv[i], pool) != PR_EINVAL) fail_msg("accepted '%s'", badv[i]);
    }
    char label[80];
    memset(label, 'a', 64);
    strcpy(label + 64, ".org");
    assert_int_equal(pr_parse_domain(&d, label, pool), PR_EINVAL);
    memmove(label + 1, label + 2, strlen(label + 2) + 1); /* a 63-character label */
    assert_int_equal(pr_parse_domain(&d, label, pool), APR_SUCCESS);

    pr_config_t *cfg = ok("[server]\ndomains = Example.org, staff.example.org\n");
    assert_true(pr_config_is_local_domain(cfg, "example.org"));
    assert_true(pr_config_is_local_domain(cfg, "EXAMPLE.Org"));
    assert_true(pr_config_is_local_domain(cfg, "staff.example.org."));
    assert_false(pr_config_is_local_domain(cfg, "other.org"));
    assert_false(pr_config_is_local_domain(cfg, "example.or"));
    assert_false(pr_config_is_local_domain(cfg, "xexample.org"));
    assert_false(pr_config_is_local_domain(cfg, NULL));

    assert_error("[server]\ndomains = example.org, bad..org\n",
                 "t.conf:2: [server] domains: bad domain 'bad..org'");
    assert_error("[server]\nhostname = mail example\n",
                 "t.conf:2: [server] hostname: bad host name 'mail example'");
    assert_error("[server]\nhostname =\n", "t.conf:2: [server] hostname: empty value");
}

static void test_pop3_store_directory_keys(void **state)
{
    (void)state;
    pr_config_t *cfg = ok("[pop3]\nlisten = 127.0.0.1:2110\npop3s =\n"
                          "allow_plaintext_auth = yes\ntimeout = 15m\n"
                          "[pop2]\nlisten = 127.0.0.1:2109\n"
                          "[store]\ndefault_quota = 0\n"
                          "[directory]\nauth_cache_ttl = 0\n");
    assert_int_equal(cfg->pop3.listen.n, 1);
    assert_int_equal(cfg->pop3.listen.v[0].port, 2110);
    assert_int_equal(cfg->pop3.pop3s.n, 0);
    assert_int_equal(cfg->pop3.allow_plaintext_auth, 1);
    assert_true(cfg->pop3.timeout == apr_time_from_sec(900));
    assert_int_equal(cfg->pop2.listen.n, 1);
    assert_true(cfg->store.default_quota == 0);
    assert_true(cfg->directory.auth_cache_ttl == 0);
    /* RFC 1939: the autologout timer may not be shorter than 10 minutes. */
    assert_error_prefix("[pop3]\ntimeout = 5m\n", "t.conf:2: ");
    assert_error("[pop3]\nlisten = 127.0.0.1:2110\n[pop2]\nlisten = 127.0.0.1:2110\n",
                 "t.conf:4: [pop2] listen: 127.0.0.1:2110 is also used by [pop3] listen");
}

static void test_listeners(void **state)
{
    (void)state;
    pr_config_t *cfg = ok("[smtp]\nlisten = 127.0.0.1:2525, [::1]:2525, localhost:2526\n"
                          "submission =\nsmtps =\n");
    assert_int_equal(cfg->smtp.listen.n, 3);
    assert_string_equal(cfg->smtp.listen.v[1].host, "::1");
    assert_string_equal(cfg->smtp.listen.v[2].host, "localhost");
    assert_int_equal(cfg->smtp.listen.v[2].port, 2526);
    assert_int_equal(cfg->smtp.submission.n, 0);
    assert_int_equal(cfg->smtp.smtps.n, 0);

    cfg = ok("[smtp]\nlisten = [::]:25\n");
    assert_string_equal(cfg->smtp.listen.v[0].host, "::");

    assert_error_prefix("[smtp]\nlisten = 127.0.0.1\n",
                        "t.conf:2: [smtp] listen: bad address:port '127.0.0.1'");
    assert_error_prefix("[smtp]\nsubmission = ::1:587\n",
                        "t.conf:2: [smtp] submission: bad address:port '::1:587'");
    assert_error_prefix("[smtp]\nsmtps = 0.0.0.0:99999\n",
                        "t.conf:2: [smtp] smtps: bad address:port '0.0.0.0:99999'");
    /* Two listeners on one address. */
    assert_error("[smtp]\nlisten = 0.0.0.0:2525, 0.0.0.0:2525\n",
                 "t.conf:2: [smtp] listen: 0.0.0.0:2525 is listed twice");
    assert_error("[smtp]\nlisten = 0.0.0.0:2525\nsubmission = 0.0.0.0:2525\n",
                 "t.conf:3: [smtp] submission: 0.0.0.0:2525 is also used by [smtp] listen");
    /* Against a default: blame the key that was set. */
    assert_error("[smtp]\nsmtps = 0.0.0.0:25\n",
                 "t.conf:2: [smtp] smtps: 0.0.0.0:25 is also used by [smtp] listen");
}

static void test_enums(void **state)
{
    (void)state;
    struct {
        const char *text;
        int version;
    } tls[] = {{"TLSv1", TLS1_VERSION},
               {"TLSv1.0", TLS1_VERSION},
               {"TLSv1.1", TLS1_1_VERSION},
               {"TLSv1.2", TLS1_2_VERSION},
               {"tlsv1.3", TLS1_3_VERSION}};
    for (size_t i = 0; i < sizeof(tls) / sizeof(tls[0]); i++) {
        pr_config_t *cfg = ok(apr_psprintf(pool, "[tls]\nmin_version = %s\n", tls[i].text));
        assert_int_equal(cfg->tls.min_version, tls[i].version);
    }
    assert_error("[tls]\nmin_version = SSLv3\n",
                 "t.conf:2: [tls] min_version: bad TLS version 'SSLv3' (use TLSv1, TLSv1.1, "
                 "TLSv1.2 or TLSv1.3)");
    assert_error_prefix("[tls]\nmin_version = TLSv1.4\n", "t.conf:2: [tls] min_version: bad TLS");

    const char *levels[] = {"debug", "info", "warning", "ERROR"};
    pr_log_level_e want[] = {PR_LOG_DEBUG, PR_LOG_INFO, PR_LOG_WARN, PR_LOG_ERROR};
    for (int i = 0; i < 4; i++) {
        pr_config_t *cfg = ok(apr_psprintf(pool, "[server]\nlog_level = %s\n", levels[i]));
        assert_int_equal(cfg->server.log_level, want[i]);
    }
    assert_error_prefix("[server]\nlog_level = loud\n",
                        "t.conf:2: [server] log_level: bad log level 'loud'");

    pr_config_t *cfg = ok("[server]\nlog = /var/log/postroom.log\n");
    assert_string_equal(cfg->server.log, "/var/log/postroom.log");
    cfg = ok("[server]\nlog = STDERR\n");
    assert_string_equal(cfg->server.log, "stderr");
    assert_error("[server]\nlog =\n", "t.conf:2: [server] log: empty value");

    /* backend = ldap: see test_ldap_backend_checks. */
    assert_error("[directory]\nbackend = nis\n",
                 "t.conf:2: [directory] backend: unknown backend 'nis' (use local)");
    cfg = ok("[tls]\ncertificate =\nkey =\n");
    assert_string_equal(cfg->tls.certificate, "");
}

/* ---- [ldap] ---------------------------------------------------------------- */

static void assert_strlist(const pr_strlist_t *l, const char *const *want, int n)
{
    if (l->n != n) fail_msg("list has %d items, want %d", l->n, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(l->v[i], want[i]);
}

#define ASSERT_STRLIST(l, ...)                                                                     \
    do {                                                                                           \
        static const char *const want_[] = {__VA_ARGS__};                                          \
        assert_strlist((l), want_, (int)(sizeof(want_) / sizeof(want_[0])));                       \
    } while (0)

static void assert_openldap_preset(const pr_config_t *cfg)
{
    assert_int_equal(cfg->ldap.preset, PR_LDAP_OPENLDAP);
    assert_string_equal(cfg->ldap.user_filter, "(objectClass=inetOrgPerson)");
    ASSERT_STRLIST(&cfg->ldap.login_attributes, "uid", "mail");
    ASSERT_STRLIST(&cfg->ldap.address_attributes, "mail", "mailLocalAddress",
                   "mailAlternateAddress");
    assert_string_equal(cfg->ldap.list_filter, "(|(objectClass=groupOfNames)"
                                               "(objectClass=groupOfUniqueNames)"
                                               "(objectClass=nisMailAlias))");
    ASSERT_STRLIST(&cfg->ldap.member_attributes, "member", "uniqueMember", "rfc822MailMember");
    assert_string_equal(cfg->ldap.disabled_filter, "");
}

static void assert_activedirectory_preset(const pr_config_t *cfg)
{
    assert_int_equal(cfg->ldap.preset, PR_LDAP_ACTIVEDIRECTORY);
    assert_string_equal(cfg->ldap.user_filter, "(&(objectCategory=person)(objectClass=user))");
    ASSERT_STRLIST(&cfg->ldap.login_attributes, "sAMAccountName", "userPrincipalName", "mail");
    ASSERT_STRLIST(&cfg->ldap.address_attributes, "mail", "proxyAddresses");
    assert_string_equal(cfg->ldap.list_filter, "(objectClass=group)");
    ASSERT_STRLIST(&cfg->ldap.member_attributes, "member");
    assert_string_equal(cfg->ldap.disabled_filter,
                        "(userAccountControl:1.2.840.113556.1.4.803:=2)");
}

/* The keys that do not depend on the preset. */
static void assert_ldap_common_defaults(const pr_config_t *cfg)
{
    assert_int_equal(cfg->ldap.uri.n, 0);
    assert_int_equal(cfg->ldap.starttls, 1);
    assert_string_equal(cfg->ldap.ca_file, "");
    assert_string_equal(cfg->ldap.bind_dn, "");
    assert_string_equal(cfg->ldap.bind_password_file, "");
    assert_string_equal(cfg->ldap.base, "");
    assert_int_equal(cfg->ldap.login_usernames, 0);
    assert_true(cfg->ldap.timeout == apr_time_from_sec(5));
    assert_true(cfg->ldap.cache_ttl == apr_time_from_sec(300));
    assert_true(cfg->ldap.negative_cache_ttl == apr_time_from_sec(60));
    assert_int_equal(cfg->ldap.pool_size, 4);
    assert_string_equal(cfg->ldap.admin_bind_dn, "");
    assert_string_equal(cfg->ldap.admin_bind_password_file, "");
    assert_string_equal(cfg->ldap.admin_user_base, "");
}

static void test_ldap_defaults(void **state)
{
    (void)state;
    pr_config_t *cfg = ok("");
    assert_ldap_common_defaults(cfg);
    assert_openldap_preset(cfg);

    pr_config_t d;
    pr_config_defaults(&d, pool);
    assert_ldap_common_defaults(&d);
    assert_openldap_preset(&d);

    cfg = ok("[ldap]\n");
    assert_ldap_common_defaults(cfg);
    assert_openldap_preset(cfg);
    cfg = ok("[ldap]\npreset = openldap\n");
    assert_ldap_common_defaults(cfg);
    assert_openldap_preset(cfg);

    cfg = ok("[ldap]\npreset = ActiveDirectory\n");
    assert_ldap_common_defaults(cfg);
    assert_activedirectory_preset(cfg);

    /* The presets' values are valid values of their keys. */
    cfg = ok("[ldap]\n"
             "user_filter = (&(objectCategory=person)(objectClass=user))\n"
             "login_attributes = sAMAccountName, userPrincipalName, mail\n"
             "address_attributes = mail, proxyAddresses\n"
             "list_filter = (objectClass=group)\n"
             "member_attributes = member\n"
             "disabled_filter = (userAccountControl:1.2.840.113556.1.4.803:=2)\n");
    cfg->ldap.preset = PR_LDAP_ACTIVEDIRECTORY;
    assert_activedirectory_preset(cfg);
    cfg = ok("[ldap]\n"
             "user_filter = (objectClass=inetOrgPerson)\n"
             "login_attributes = uid, mail\n"
             "address_attributes = mail, mailLocalAddress, mailAlternateAddress\n"
             "list_filter = (|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)"
             "(objectClass=nisMailAlias))\n"
             "member_attributes = member, uniqueMember, rfc822MailMember\n"
             "disabled_filter =\n"
             "preset = activedirectory\n");
    cfg->ldap.preset = PR_LDAP_OPENLDAP;
    assert_openldap_preset(cfg);
}

static void test_ldap_keys(void **state)
{
    (void)state;
    /* backend = local: the section is read and checked all the same. */
    pr_config_t *cfg = ok("[ldap]\n"
                          "uri = LDAPS://dc1.example.org:636/, ldap://192.0.2.10,\n"
                          "      ldap://[2001:db8::10]:3389, ldaps://dc2\n"
                          "starttls = no\n"
                          "ca_file = /etc/postroom/ad-ca.pem\n"
                          "bind_dn = CN=postroom,OU=Service,DC=example,DC=org\n"
                          "bind_password_file = /etc/postroom/ldap.secret\n"
                          "base = DC=example,DC=org\n"
                          "preset = activedirectory\n"
                          "user_filter = (&(objectClass=user)(!(cn=guest)))\n"
                          "login_attributes = sAMAccountName, 0.9.2342.19200300.100.1.1\n"
                          "address_attributes = mail,proxyAddresses , otherMailbox\n"
                          "list_filter = (|(objectClass=group)(cn=list\\2a))\n"
                          "member_attributes = member, x-Member2\n"
                          "disabled_filter = (accountExpires=1)\n"
                          "login_names = address, username\n"
                          "timeout = 1\n"
                          "cache_ttl = 0\n"
                          "negative_cache_ttl = 0\n"
                          "pool_size = 64\n"
                          "admin_bind_dn = CN=postroom-admin,DC=example,DC=org\n"
                          "admin_bind_password_file = /etc/postroom/ldap-admin.secret\n"
                          "admin_user_base = OU=Pupils,DC=example,DC=org\n");
    /* Scheme lower-cased, the trailing '/' dropped, the rest as written. */
    ASSERT_STRLIST(&cfg->ldap.uri, "ldaps://dc1.example.org:636", "ldap://192.0.2.10",
                   "ldap://[2001:db8::10]:3389", "ldaps://dc2");
    assert_int_equal(cfg->ldap.starttls, 0);
    assert_string_equal(cfg->ldap.ca_file, "/etc/postroom/ad-ca.pem");
    assert_string_equal(cfg->ldap.bind_dn, "CN=postroom,OU=Service,DC=example,DC=org");
    assert_string_equal(cfg->ldap.bind_password_file, "/etc/postroom/ldap.secret");
    assert_string_equal(cfg->ldap.base, "DC=example,DC=org");
    assert_int_equal(cfg->ldap.preset, PR_LDAP_ACTIVEDIRECTORY);
    assert_string_equal(cfg->ldap.user_filter, "(&(objectClass=user)(!(cn=guest)))");
    ASSERT_STRLIST(&cfg->ldap.login_attributes, "sAMAccountName", "0.9.2342.19200300.100.1.1");
    ASSERT_STRLIST(&cfg->ldap.address_attributes, "mail", "proxyAddresses", "otherMailbox");
    assert_string_equal(cfg->ldap.list_filter, "(|(objectClass=group)(cn=list\\2a))");
    ASSERT_STRLIST(&cfg->ldap.member_attributes, "member", "x-Member2");
    assert_string_equal(cfg->ldap.disabled_filter, "(accountExpires=1)");
    assert_int_equal(cfg->ldap.login_usernames, 1);
    assert_true(cfg->ldap.timeout == apr_time_from_sec(1));
    assert_true(cfg->ldap.cache_ttl == 0);
    assert_true(cfg->ldap.negative_cache_ttl == 0);
    assert_int_equal(cfg->ldap.pool_size, 64);
    assert_string_equal(cfg->ldap.admin_bind_dn, "CN=postroom-admin,DC=example,DC=org");
    assert_string_equal(cfg->ldap.admin_bind_password_file, "/etc/postroom/ldap-admin.secret");
    assert_string_equal(cfg->ldap.admin_user_base, "OU=Pupils,DC=example,DC=org");

    /* login_names: with or without spaces, any case. */
    const char *names[] = {"address", "ADDRESS", "address,username", "address , username",
                           "Username, Address"};
    int want[] = {0, 0, 1, 1, 1};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        cfg = ok(apr_psprintf(pool, "[ldap]\nlogin_names = %s\n", names[i]));
        assert_int_equal(cfg->ldap.login_usernames, want[i]);
    }

    cfg = ok("[ldap]\npool_size = 1\ntimeout = 2m\ncache_ttl = 1h\nnegative_cache_ttl = 30s\n"
             "starttls = yes\n");
    assert_int_equal(cfg->ldap.pool_size, 1);
    assert_true(cfg->ldap.timeout == apr_time_from_sec(120));
    assert_true(cfg->ldap.cache_ttl == apr_time_from_sec(3600));
    assert_true(cfg->ldap.negative_cache_ttl == apr_time_from_sec(30));
    assert_int_equal(cfg->ldap.starttls, 1);

    /* URI forms. */
    const char *uris[] = {"ldap://localhost",
                          "ldap://localhost/",
                          "ldap://127.0.0.1:389",
                          "ldaps://[::1]",
                          "ldaps://[::1]:1",
                          "Ldap://A-B.example.ORG:65535/",
                          "ldap://[::ffff:192.0.2.1]:389"};
    for (size_t i = 0; i < sizeof(uris) / sizeof(uris[0]); i++) {
        cfg = ok(apr_psprintf(pool, "[ldap]\nuri = %s\n", uris[i]));
        assert_int_equal(cfg->ldap.uri.n, 1);
    }
    cfg = ok("[ldap]\nuri = Ldap://A-B.example.ORG:65535/\n");
    assert_string_equal(cfg->ldap.uri.v[0], "ldap://A-B.example.ORG:65535");
    /* Explicitly empty: none. */
    cfg = ok("[ldap]\nuri =\nbind_dn =\nca_file =\n");
    assert_int_equal(cfg->ldap.uri.n, 0);
    assert_string_equal(cfg->ldap.bind_dn, "");
}

static void test_ldap_bad_values(void **state)
{
    (void)state;
    /* uri */
    assert_error("[ldap]\n\nuri = http://dc.example.org\n",
                 "t.conf:3: [ldap] uri: bad URI 'http://dc.example.org': use ldap:// or ldaps://");
    assert_error("[ldap]\nuri = ldap://dc.example.org:0\n",
                 "t.conf:2: [ldap] uri: bad URI 'ldap://dc.example.org:0': port must be 1..65535");
    assert_error("[ldap]\nuri = ldap://dc.example.org:70000\n",
                 "t.conf:2: [ldap] uri: bad URI 'ldap://dc.example.org:70000': port must be "
                 "1..65535");
    assert_error("[ldap]\nuri = ldap://\n", "t.conf:2: [ldap] uri: bad URI 'ldap://': no host");
    assert_error("[ldap]\nuri = ldaps:///\n", "t.conf:2: [ldap] uri: bad URI 'ldaps:///': no host");
    assert_error("[ldap]\nuri = ldap://:389\n",
                 "t.conf:2: [ldap] uri: bad URI 'ldap://:389': no host");
    assert_error("[ldap]\nuri = ldap://a.example.org, ldaps://b.example.org:0\n",
                 "t.conf:2: [ldap] uri: bad URI 'ldaps://b.example.org:0': port must be 1..65535");
    assert_error("[ldap]\nuri = ldap://a.example.org,\n  ldapi://%2frun%2fslapd\n",
                 "t.conf:2: [ldap] uri: bad URI 'ldapi://%2frun%2fslapd': use ldap:// or "
                 "ldaps://");
    assert_error("[ldap]\nuri = ldap://dc.example.org/dc=example\n",
                 "t.conf:2: [ldap] uri: bad URI 'ldap://dc.example.org/dc=example': only "
                 "ldap[s]://host[:port] may be given");
    const char *bad_uris[] = {"dc.example.org",
                              "ldap:dc.example.org",
                              "ldap:/dc.example.org",
                              "ldap://dc.example.org:",
                              "ldap://dc.example.org:389:389",
                              "ldap://dc.example.org:-1",
                              "ldap://dc.example.org: 389",
                              "ldap://dc.example.org//",
                              "ldap://dc.example.org?uid",
                              "ldap://user@dc.example.org",
                              "ldap://dc_1.example.org",
                              "ldap://300.1.1.1",
                              "ldap://::1",
                              "ldap://[::1",
                              "ldap://[::1]389",
                              "ldap://[dc.example.org]",
                              "ldap://[]:389",
                              "ldaps://-dc.example.org"};
    for (size_t i = 0; i < sizeof(bad_uris) / sizeof(bad_uris[0]); i++)
        assert_error_prefix(
            apr_psprintf(pool, "[ldap]\nuri = %s\n", bad_uris[i]),
            apr_psprintf(pool, "t.conf:2: [ldap] uri: bad URI '%s': ", bad_uris[i]));

    /* filters */
    assert_error("[ldap]\nuser_filter = (&(objectClass=user)\n",
                 "t.conf:2: [ldap] user_filter: bad filter '(&(objectClass=user)': unbalanced "
                 "parentheses");
    assert_error("[ldap]\nlist_filter = objectClass=group\n",
                 "t.conf:2: [ldap] list_filter: bad filter 'objectClass=group': not in "
                 "parentheses");
    assert_error("[ldap]\ndisabled_filter = (a=1)(b=2)\n",
                 "t.conf:2: [ldap] disabled_filter: bad filter '(a=1)(b=2)': more than one filter "
                 "(combine them with (&...) or (|...))");
    const char *bad_filters[] = {"(",  "()",       "(a=1))",   "((a=1)",    "(a=1))(",
                                 ")(", "(cn=a\\(", "(cn=\\2)", "(cn=\\zz)", "x(a=1)"};
    for (size_t i = 0; i < sizeof(bad_filters) / sizeof(bad_filters[0]); i++)
        assert_error_prefix(apr_psprintf(pool, "[ldap]\nuser_filter = %s\n", bad_filters[i]),
                            "t.conf:2: [ldap] user_filter: bad filter '");
    /* Only disabled_filter may be empty (no user is disabled). */
    assert_error("[ldap]\nuser_filter =\n", "t.conf:2: [ldap] user_filter: empty value");
    assert_error("[ldap]\nlist_filter =\n", "t.conf:2: [ldap] list_filter: empty value");

    /* attribute names */
    assert_error("[ldap]\nlogin_attributes = uid, 1mail\n",
                 "t.conf:2: [ldap] login_attributes: bad attribute name '1mail' (letters, digits "
                 "and '-', starting with a letter, or a numeric OID)");
    assert_error_prefix("[ldap]\nmember_attributes = member;range=0-1499\n",
                        "t.conf:2: [ldap] member_attributes: bad attribute name "
                        "'member;range=0-1499'");
    const char *bad_attrs[] = {"mail_alt", "-mail", "ma il", "1",    "1.",     ".1",
                               "1..2",     "01.2",  "1.02",  "1.2a", "mail=x", "\xc3\xa9mail"};
    for (size_t i = 0; i < sizeof(bad_attrs) / sizeof(bad_attrs[0]); i++)
        assert_error_prefix(apr_psprintf(pool, "[ldap]\naddress_attributes = %s\n", bad_attrs[i]),
                            "t.conf:2: [ldap] address_attributes: bad attribute name '");
    assert_error("[ldap]\naddress_attributes =\n",
                 "t.conf:2: [ldap] address_attributes: empty value (at least one attribute is "
                 "needed)");
    assert_error_prefix("[ldap]\nlogin_attributes = uid,,mail\n",
                        "t.conf:2: [ldap] login_attributes: empty item in list");
    pr_config_t *cfg = ok("[ldap]\nmember_attributes = 2.5.4.31, 0.1, A\n");
    assert_int_equal(cfg->ldap.member_attributes.n, 3);

    /* numbers, durations, enums */
    assert_error("[ldap]\npool_size = 0\n",
                 "t.conf:2: [ldap] pool_size: 0 is out of range (1..64)");
    assert_error("[ldap]\npool_size = 65\n",
                 "t.conf:2: [ldap] pool_size: 65 is out of range (1..64)");
    assert_error("[ldap]\ntimeout = 0\n", "t.conf:2: [ldap] timeout: 0 is out of range (1s..365d)");
    assert_error("[ldap]\ncache_ttl = 5 minutes\n",
                 "t.conf:2: [ldap] cache_ttl: bad duration '5 minutes'");
    assert_error("[ldap]\nnegative_cache_ttl = -1\n",
                 "t.conf:2: [ldap] negative_cache_ttl: bad duration '-1'");
    assert_error("[ldap]\npreset = samba\n",
                 "t.conf:2: [ldap] preset: unknown preset 'samba' (use openldap or "
                 "activedirectory)");
    assert_error("[ldap]\npreset =\n", "t.conf:2: [ldap] preset: empty value");
    assert_error("[ldap]\nlogin_names = username\n",
                 "t.conf:2: [ldap] login_names: bad value 'username' (use address or "
                 "address,username)");
    const char *bad_names[] = {"email", "address,email", "address,,username", "address username",
                               "address,"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
        assert_error_prefix(apr_psprintf(pool, "[ldap]\nlogin_names = %s\n", bad_names[i]),
                            "t.conf:2: [ldap] login_names: bad value '");
    assert_error("[ldap]\nlogin_names =\n", "t.conf:2: [ldap] login_names: empty value");
    assert_error("[ldap]\nstarttls = maybe\n",
                 "t.conf:2: [ldap] starttls: bad boolean 'maybe' (use yes or no)");
    assert_error("[ldap]\nbase = dc=example\nBase = dc=other\n",
                 "t.conf:3: [ldap] base: duplicate key (first set on line 2)");
    /* A DN does not continue: "  dc=b" would read as a key. */
    assert_error("[ldap]\nbase = dc=a,\n  dc=b\n", "t.conf:3: unknown key 'dc' in [ldap]");
    assert_error("[ldap]\nca_file = /a\n  /b\n",
                 "t.conf:3: [ldap] ca_file: only lists may continue on an indented line (got "
                 "'/b')");
}

static void test_ldap_preset_order(void **state)
{
    (void)state;
    /* preset after the keys: it fills only those the file did not set. */
    pr_config_t *cfg = ok("[ldap]\n"
                          "user_filter = (objectClass=person)\n"
                          "member_attributes = uniqueMember\n"
                          "disabled_filter =\n"
                          "preset = activedirectory\n");
    assert_int_equal(cfg->ldap.preset, PR_LDAP_ACTIVEDIRECTORY);
    assert_string_equal(cfg->ldap.user_filter, "(objectClass=person)");
    ASSERT_STRLIST(&cfg->ldap.member_attributes, "uniqueMember");
    assert_string_equal(cfg->ldap.disabled_filter, ""); /* set empty: no user is disabled */
    ASSERT_STRLIST(&cfg->ldap.login_attributes, "sAMAccountName", "userPrincipalName", "mail");
    ASSERT_STRLIST(&cfg->ldap.address_attributes, "mail", "proxyAddresses");
    assert_string_equal(cfg->ldap.list_filter, "(objectClass=group)");

    /* preset first, in another block of the section: the same. */
    cfg = ok("[ldap]\npreset = activedirectory\n[server]\n[ldap]\n"
             "login_attributes = sAMAccountName\n");
    ASSERT_STRLIST(&cfg->ldap.login_attributes, "sAMAccountName");
    assert_string_equal(cfg->ldap.user_filter, "(&(objectCategory=person)(objectClass=user))");
    assert_string_equal(cfg->ldap.disabled_filter,
                        "(userAccountControl:1.2.840.113556.1.4.803:=2)");

    /* openldap with overrides. */
    cfg = ok("[ldap]\naddress_attributes = mail\ndisabled_filter = (pwdAccountLockedTime=*)\n"
             "preset = openldap\n");
    ASSERT_STRLIST(&cfg->ldap.address_attributes, "mail");
    assert_string_equal(cfg->ldap.disabled_filter, "(pwdAccountLockedTime=*)");
    ASSERT_STRLIST(&cfg->ldap.login_attributes, "uid", "mail");
    ASSERT_STRLIST(&cfg->ldap.member_attributes, "member", "uniqueMember", "rfc822MailMember");
}

static void test_ldap_backend_checks(void **state)
{
    (void)state;
    const char *valid = "[ldap]\n"
                        "uri = ldaps://dc1.example.org\n"
                        "base = dc=example,dc=org\n";

    /* Missing keys: blamed on the backend line, wherever it is. */
    assert_error("[directory]\nbackend = ldap\n",
                 "t.conf:2: [directory] backend: ldap needs [ldap] uri");
    assert_error("[directory]\nbackend = LDAP\n",
                 "t.conf:2: [directory] backend: ldap needs [ldap] uri");
    assert_error("[ldap]\nbase = dc=example,dc=org\nuri =\n[directory]\nbackend = ldap\n",
                 "t.conf:5: [directory] backend: ldap needs [ldap] uri");
    assert_error("[directory]\nbackend = ldap\n[ldap]\nuri = ldap://localhost\n",
                 "t.conf:2: [directory] backend: ldap needs [ldap] base");
    assert_error("[directory]\nbackend = ldap\n[ldap]\nuri = ldap://localhost\nbase =\n",
                 "t.conf:2: [directory] backend: ldap needs [ldap] base");

    /* A DN and its password file go together; the one set is blamed. */
    assert_error(apr_pstrcat(pool, valid, "bind_dn = cn=postroom,dc=example,dc=org\n",
                             "[directory]\nbackend = ldap\n", NULL),
                 "t.conf:4: [ldap] bind_dn: needs bind_password_file too (or neither, for an "
                 "anonymous bind)");
    assert_error(apr_pstrcat(pool, valid, "bind_password_file = /etc/postroom/ldap.secret\n",
                             "bind_dn =\n[directory]\nbackend = ldap\n", NULL),
                 "t.conf:4: [ldap] bind_password_file: needs bind_dn too (or neither, for an "
                 "anonymous bind)");
    assert_error(apr_pstrcat(pool, valid, "admin_bind_dn = cn=admin,dc=example,dc=org\n",
                             "[directory]\nbackend = ldap\n", NULL),
                 "t.conf:4: [ldap] admin_bind_dn: needs admin_bind_password_file too (or "
                 "neither, for read-only access)");
    assert_error(apr_pstrcat(pool, valid, "admin_bind_password_file = /etc/postroom/a.secret\n",
                             "[directory]\nbackend = ldap\n", NULL),
                 "t.conf:4: [ldap] admin_bind_password_file: needs admin_bind_dn too (or "
                 "neither, for read-only access)");

    /* A bad value is reported at its line before any whole-file check. */
    assert_error("[directory]\nbackend = ldap\n[ldap]\npool_size = 0\n",
                 "t.conf:4: [ldap] pool_size: 0 is out of range (1..64)");

    /* With backend = local the same section is only checked key by key. */
    pr_config_t *cfg = ok("[ldap]\nbind_dn = cn=x\nadmin_bind_password_file = /x\n"
                          "[directory]\nbackend = local\n");
    assert_string_equal(cfg->directory.backend, "local");
    assert_string_equal(cfg->ldap.bind_dn, "cn=x");
    assert_error("[ldap]\npool_size = 0\n[directory]\nbackend = local\n",
                 "t.conf:2: [ldap] pool_size: 0 is out of range (1..64)");

    /* A complete section, anonymous or with both pairs. */
    const char *complete[] = {
        valid,
        apr_pstrcat(pool, valid, "bind_dn = cn=postroom,dc=example,dc=org\n",
                    "bind_password_file = /etc/postroom/ldap.secret\n",
                    "admin_bind_dn = cn=admin,dc=example,dc=org\n",
                    "admin_bind_password_file = /etc/postroom/ldap-admin.secret\n", NULL),
    };
    for (size_t i = 0; i < sizeof(complete) / sizeof(complete[0]); i++) {
        const char *text = apr_pstrcat(pool, "[directory]\nbackend = ldap\n", complete[i], NULL);
        pr_config_t *cfg = ok(text);
        assert_string_equal(cfg->directory.backend, "ldap");
    }
}

static void test_min_free_space(void **state)
{
    (void)state;
    pr_config_t *cfg = ok("");
    assert_true(pr_config_min_free_space(cfg) == (apr_off_t)25 * 1024 * 1024 * 3 / 2);
    cfg = ok("[smtp]\nmax_message_size = 10m\n");
    assert_true(pr_config_min_free_space(cfg) == (apr_off_t)15 * 1024 * 1024);
    cfg = ok("[smtp]\nmax_message_size = 10m\n[store]\nmin_free_space = 1g\n");
    assert_true(pr_config_min_free_space(cfg) == (apr_off_t)1024 * 1024 * 1024);
    cfg = ok("[store]\nmin_free_space = 0\n");
    assert_true(pr_config_min_free_space(cfg) == (apr_off_t)25 * 1024 * 1024 * 3 / 2);
}

static void test_messages_are_clean(void **state)
{
    (void)state;
    /* Control characters from the file do not reach the terminal or log. */
    const char *err = bad("[smtp]\nvrfy = a\x1b[31mb\n");
    for (const char *p = err; *p; p++)
        assert_true((unsigned char)*p >= 0x20);
    /* Long values are cut in messages. */
    char *text = apr_pstrcat(pool, "[smtp]\nvrfy = ", NULL);
    for (int i = 0; i < 15; i++)
        text = apr_pstrcat(pool, text, "abcdefghij", NULL);
    err = bad(text);
    assert_true(strlen(err) < 160);
    assert_non_null(strstr(err, "..."));
}

static const char *tmpdir(void)
{
    const char *d = getenv("PR_TEST_TMP");
    if (!d || !*d) d = "/tmp";
    apr_dir_make_recursive(d, APR_FPROT_OS_DEFAULT, pool);
    return d;
}

static const char *write_file(const char *name, const char *data, apr_size_t len)
{
    const char *path = apr_psprintf(pool, "%s/%s.%ld", tmpdir(), name, (long)getpid());
    apr_file_t *f;
    assert_int_equal(
        apr_file_open(&f, path,
                      APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_TRUNCATE | APR_FOPEN_BINARY,
                      APR_FPROT_OS_DEFAULT, pool),
        APR_SUCCESS);
    assert_int_equal(apr_file_write_full(f, data, len, NULL), APR_SUCCESS);
    apr_file_close(f);
    return path;
}

static void test_load_file(void **state)
{
    (void)state;
    const char *text = "[server]\ndata_dir = /srv/x\n[smtp]\nmax_recipients = 3\n";
    const char *path = write_file("test_config_ok.conf", text, strlen(text));
    pr_config_t *cfg = NULL;
    const char *err = NULL;
    assert_int_equal(pr_config_load(&cfg, path, &err, pool), APR_SUCCESS);
    assert_string_equal(cfg->path, path);
    assert_int_equal(cfg->smtp.max_recipients, 3);
    assert_string_equal(cfg->server.pidfile, "/srv/x/postroomd.pid");
    apr_file_remove(path, pool);

    text = "[smtp]\nmax_recipients = 3\nbogus = 1\n";
    path = write_file("test_config_bad.conf", text, strlen(text));
    assert_int_equal(pr_config_load(&cfg, path, &err, pool), PR_EINVAL);
    assert_string_equal(err, apr_psprintf(pool, "%s:3: unknown key 'bogus' in [smtp]", path));
    apr_file_remove(path, pool);

    /* A NUL byte is refused, not silently cut. */
    path = write_file("test_config_nul.conf", "[smtp]\nvrfy = no\x00yes\n", 18);
    assert_int_equal(pr_config_load(&cfg, path, &err, pool), PR_EINVAL);
    assert_string_equal(err, apr_psprintf(pool, "%s:2: NUL byte in line", path));
    apr_file_remove(path, pool);

    path = apr_psprintf(pool, "%s/does-not-exist.conf", tmpdir());
    assert_true(pr_config_load(&cfg, path, &err, pool) != APR_SUCCESS);
    assert_non_null(strstr(err, path));
}

/* [outbound] (issue 5): defaults, each value syntax, and the pairs. */
static void test_outbound(void **state)
{
    (void)state;
    pr_config_t *cfg = ok("");
    assert_string_equal(cfg->outbound.smarthost, "");
    assert_int_equal(cfg->outbound.smarthost_port, 25);
    assert_int_equal(cfg->outbound.smarthost_tls, PR_SMARTHOST_STARTTLS);
    assert_int_equal(cfg->outbound.dns_servers.n, 0);
    assert_int_equal(cfg->outbound.port, 25);
    assert_int_equal(cfg->outbound.outbound_tls, PR_OUTBOUND_TLS_MAY);
    assert_int_equal(cfg->outbound.retry_schedule.n, 5);
    assert_true(cfg->outbound.retry_schedule.v[0] == apr_time_from_sec(300));
    assert_true(cfg->outbound.retry_schedule.v[4] == apr_time_from_sec(3600));
    assert_true(cfg->outbound.max_queue_lifetime == apr_time_from_sec(5 * 86400));
    assert_true(cfg->outbound.delay_warning_time == apr_time_from_sec(4 * 3600));
    assert_int_equal(cfg->outbound.max_recipients_per_day, 1000);

    cfg = ok("[outbound]\nsmarthost = Relay.ISP.example:587\nsmarthost_tls = implicit\n"
             "smarthost_auth_user = school\nsmarthost_password_file = /etc/postroom/relay.pw\n"
             "dns_servers = 127.0.0.1:5353, ::1, 127.0.0.2, [::1]:5300\nport = 2525\n"
             "outbound_tls = encrypt\nretry_schedule = 1s, 2s\nmax_queue_lifetime = 1m\n"
             "delay_warning_time = 0\nmax_recipients_per_day = 0\n");
    assert_string_equal(cfg->outbound.smarthost, "relay.isp.example");
    assert_int_equal(cfg->outbound.smarthost_port, 587);
    assert_int_equal(cfg->outbound.smarthost_tls, PR_SMARTHOST_IMPLICIT);
    assert_string_equal(cfg->outbound.smarthost_auth_user, "school");
    assert_int_equal(cfg->outbound.dns_servers.n, 4);
    assert_string_equal(cfg->outbound.dns_servers.v[0], "127.0.0.1:5353");
    assert_string_equal(cfg->outbound.dns_servers.v[1], "[::1]:53");
    assert_string_equal(cfg->outbound.dns_servers.v[2], "127.0.0.2:53");
    assert_string_equal(cfg->outbound.dns_servers.v[3], "[::1]:5300");
    assert_int_equal(cfg->outbound.port, 2525);
    assert_int_equal(cfg->outbound.outbound_tls, PR_OUTBOUND_TLS_ENCRYPT);
    assert_int_equal(cfg->outbound.retry_schedule.n, 2);
    assert_true(cfg->outbound.retry_schedule.v[1] == apr_time_from_sec(2));
    assert_true(cfg->outbound.max_queue_lifetime == apr_time_from_sec(60));
    assert_true(cfg->outbound.delay_warning_time == 0);
    assert_int_equal(cfg->outbound.max_recipients_per_day, 0);

    cfg = ok("[outbound]\nsmarthost = [::1]:2525\nsmarthost_tls = none\n");
    assert_string_equal(cfg->outbound.smarthost, "::1");
    assert_int_equal(cfg->outbound.smarthost_port, 2525);
    cfg = ok("[outbound]\nsmarthost = 127.0.0.1\n");
    assert_string_equal(cfg->outbound.smarthost, "127.0.0.1");
    assert_int_equal(cfg->outbound.smarthost_port, 25);

    assert_error("[outbound]\nsmarthost = relay:0\n",
                 "t.conf:2: [outbound] smarthost: bad port '0' (1..65535)");
    assert_error("[outbound]\nsmarthost = re lay:25\n",
                 "t.conf:2: [outbound] smarthost: bad host name 're lay'");
    assert_error("[outbound]\nsmarthost = [::1:25\n",
                 "t.conf:2: [outbound] smarthost: bad host '[::1:25' (use host:port or [v6]:port)");
    assert_error("[outbound]\nsmarthost_tls = ssl\n",
                 "t.conf:2: [outbound] smarthost_tls: bad value 'ssl' (use starttls, implicit or "
                 "none)");
    assert_error("[outbound]\noutbound_tls = dane\n",
                 "t.conf:2: [outbound] outbound_tls: bad value 'dane' (use may or encrypt)");
    assert_error("[outbound]\ndns_servers = ns1.example:53\n",
                 "t.conf:2: [outbound] dns_servers: bad DNS server 'ns1.example:53' (e.g. "
                 "127.0.0.1:5353 or [::1]:53)");
    assert_error("[outbound]\nretry_schedule =\n",
                 "t.conf:2: [outbound] retry_schedule: empty value");
    assert_error("[outbound]\nretry_schedule = 5m, soon\n",
                 "t.conf:2: [outbound] retry_schedule: bad duration 'soon'");
    assert_error("[outbound]\nsmarthost_auth_user = school\n",
                 "t.conf:2: [outbound] smarthost_auth_user: needs smarthost_password_file too");
    assert_error("[outbound]\nsmarthost_auth_user = school\nsmarthost_password_file = /x\n",
                 "t.conf:2: [outbound] smarthost_auth_user: needs smarthost (AUTH is only for a "
                 "relay)");
    assert_error("[outbound]\nport = 0\n", "t.conf:2: [outbound] port: 0 is out of range (1..65535)");
}

int main(void)
{
    apr_initialize();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pidfile_follows_data_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_int_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_and_structure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lexical, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_lines_and_continuation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_domains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listeners, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pop3_store_directory_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enums, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ldap_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ldap_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ldap_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ldap_preset_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ldap_backend_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_min_free_space, setup, teardown),
        cmocka_unit_test_setup_teardown(test_messages_are_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbound, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_terminate();
    return rc;
}
