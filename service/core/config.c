/* postroom.conf: INI (via inih) into one typed struct, every key with a
 * default, every mistake an error "FILE:LINE: reason" so an admin can fix the
 * file without reading code. inih sees the file through our own line reader,
 * which counts lines (this inih build does not pass line numbers to the
 * handler), refuses over-long lines instead of letting inih split them
 * silently, and reports unknown sections even when they hold no keys. */
#include "service/core/config.h"
#include "service/core/status.h"

#include <apr_file_io.h>
#include <apr_hash.h>
#include <apr_lib.h>
#include <apr_network_io.h>
#include <apr_strings.h>
#include <ini.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PR_OFF_MAX ((apr_off_t)(sizeof(apr_off_t) == 8 ? APR_INT64_MAX : APR_INT32_MAX))
#define PR_CONFIG_MAX_FILE (1024 * 1024)

/* Ranges shared by several keys; limits guard later arithmetic too. */
#define PR_COUNT_MAX 100000
#define PR_DURATION_MAX apr_time_from_sec(365 * 86400)
#define PR_MESSAGE_SIZE_MAX ((apr_off_t)1 << 40)

typedef enum {
    T_HOSTNAME,  /* one domain name */
    T_DOMAINS,   /* list of domain names */
    T_PATH,      /* non-empty string */
    T_PATH_OPT,  /* string (a path or DN), empty = none or the documented fallback */
    T_LOG,       /* stderr | syslog | path */
    T_LOG_LEVEL, /* debug | info | warning | error */
    T_INT,       /* int in [min, max] */
    T_DURATION,  /* apr_time_t in [min, max] */
    T_SIZE,      /* apr_off_t in [min, max] */
    T_BOOL,      /* yes | no */
    T_CIDRS,     /* list of networks */
    T_ENDPOINTS, /* list of addr:port */
    T_TLS_VERSION,
    T_BACKEND,
    T_LDAP_URIS,       /* list of ldap[s]://host[:port] */
    T_LDAP_PRESET,     /* openldap | activedirectory */
    T_LDAP_FILTER,     /* one parenthesised LDAP filter */
    T_LDAP_FILTER_OPT, /* same, empty = none */
    T_LDAP_ATTRS,      /* non-empty list of attribute names or OIDs */
    T_LOGIN_NAMES,     /* address | address,username */
    T_SMARTHOST,       /* host[:port], empty = none; the port goes to the next int field */
    T_SMARTHOST_TLS,   /* starttls | implicit | none */
    T_OUTBOUND_TLS,    /* may | encrypt */
    T_DNS_SERVERS,     /* list of ip[:port] */
    T_DURATIONS,       /* non-empty list of durations in [min, max] */
} key_type_e;

typedef struct {
    const char *section;
    const char *key;
    key_type_e type;
    size_t offset;
    apr_int64_t min, max;
} key_def_t;

#define K(sec, name, type, field, min, max)                                                        \
    {                                                                                              \
        sec, name, type, offsetof(pr_config_t, field), min, max                                    \
    }

static const char *const sections[] = {"server", "smtp",      "pop3", "pop2",    "store",
                                       "tls",    "directory", "ldap", "outbound"};

static const key_def_t keys[] = {
    K("server", "hostname", T_HOSTNAME, server.hostname, 0, 0),
    K("server", "domains", T_DOMAINS, server.domains, 0, 0),
    K("server", "data_dir", T_PATH, server.data_dir, 0, 0),
    K("server", "pidfile", T_PATH, server.pidfile, 0, 0),
    K("server", "log", T_LOG, server.log, 0, 0),
    K("server", "log_level", T_LOG_LEVEL, server.log_level, 0, 0),
    K("server", "max_connections", T_INT, server.max_connections, 1, PR_COUNT_MAX),
    K("server", "max_connections_per_address", T_INT, server.max_connections_per_address, 1,
      PR_COUNT_MAX),
    K("server", "limit_exempt_networks", T_CIDRS, server.limit_exempt_networks, 0, 0),
    K("server", "shutdown_grace", T_DURATION, server.shutdown_grace, 0, PR_DURATION_MAX),
    K("smtp", "listen", T_ENDPOINTS, smtp.listen, 0, 0),
    K("smtp", "submission", T_ENDPOINTS, smtp.submission, 0, 0),
    K("smtp", "smtps", T_ENDPOINTS, smtp.smtps, 0, 0),
    K("smtp", "max_message_size", T_SIZE, smtp.max_message_size, 1, PR_MESSAGE_SIZE_MAX),
    K("smtp", "max_recipients", T_INT, smtp.max_recipients, 1, PR_COUNT_MAX),
    K("smtp", "relay_networks", T_CIDRS, smtp.relay_networks, 0, 0),
    K("smtp", "allow_plaintext_auth", T_BOOL, smtp.allow_plaintext_auth, 0, 0),
    K("smtp", "vrfy", T_BOOL, smtp.vrfy, 0, 0),
    K("smtp", "expn", T_BOOL, smtp.expn, 0, 0),
    K("smtp", "command_timeout", T_DURATION, smtp.command_timeout, APR_USEC_PER_SEC,
      PR_DURATION_MAX),
    K("smtp", "data_timeout", T_DURATION, smtp.data_timeout, APR_USEC_PER_SEC, PR_DURATION_MAX),
    K("smtp", "max_errors", T_INT, smtp.max_errors, 1, PR_COUNT_MAX),
    K("pop3", "listen", T_ENDPOINTS, pop3.listen, 0, 0),
    K("pop3", "pop3s", T_ENDPOINTS, pop3.pop3s, 0, 0),
    K("pop3", "allow_plaintext_auth", T_BOOL, pop3.allow_plaintext_auth, 0, 0),
    /* RFC 1939 3: the autologout timer is at least 10 minutes. */
    K("pop3", "timeout", T_DURATION, pop3.timeout, apr_time_from_sec(600), PR_DURATION_MAX),
    K("pop3", "max_errors", T_INT, pop3.max_errors, 1, PR_COUNT_MAX),
    K("pop2", "listen", T_ENDPOINTS, pop2.listen, 0, 0),
    K("store", "min_free_space", T_SIZE, store.min_free_space, 0, 0),
    K("store", "default_quota", T_SIZE, store.default_quota, 0, 0),
    K("tls", "certificate", T_PATH_OPT, tls.certificate, 0, 0),
    K("tls", "key", T_PATH_OPT, tls.key, 0, 0),
    K("tls", "min_version", T_TLS_VERSION, tls.min_version, 0, 0),
    K("directory", "backend", T_BACKEND, directory.backend, 0, 0),
    K("directory", "auth_cache_ttl", T_DURATION, directory.auth_cache_ttl, 0, PR_DURATION_MAX),
    K("ldap", "uri", T_LDAP_URIS, ldap.uri, 0, 0),
    K("ldap", "starttls", T_BOOL, ldap.starttls, 0, 0),
    K("ldap", "ca_file", T_PATH_OPT, ldap.ca_file, 0, 0),
    K("ldap", "bind_dn", T_PATH_OPT, ldap.bind_dn, 0, 0),
    K("ldap", "bind_password_file", T_PATH_OPT, ldap.bind_password_file, 0, 0),
    K("ldap", "base", T_PATH_OPT, ldap.base, 0, 0),
    K("ldap", "preset", T_LDAP_PRESET, ldap.preset, 0, 0),
    K("ldap", "user_filter", T_LDAP_FILTER, ldap.user_filter, 0, 0),
    K("ldap", "login_attributes", T_LDAP_ATTRS, ldap.login_attributes, 0, 0),
    K("ldap", "address_attributes", T_LDAP_ATTRS, ldap.address_attributes, 0, 0),
    K("ldap", "list_filter", T_LDAP_FILTER, ldap.list_filter, 0, 0),
    K("ldap", "member_attributes", T_LDAP_ATTRS, ldap.member_attributes, 0, 0),
    K("ldap", "disabled_filter", T_LDAP_FILTER_OPT, ldap.disabled_filter, 0, 0),
    K("ldap", "login_names", T_LOGIN_NAMES, ldap.login_usernames, 0, 0),
    K("ldap", "timeout", T_DURATION, ldap.timeout, APR_USEC_PER_SEC, PR_DURATION_MAX),
    K("ldap", "cache_ttl", T_DURATION, ldap.cache_ttl, 0, PR_DURATION_MAX),
    K("ldap", "negative_cache_ttl", T_DURATION, ldap.negative_cache_ttl, 0, PR_DURATION_MAX),
    K("ldap", "pool_size", T_INT, ldap.pool_size, 1, 64),
    K("ldap", "admin_bind_dn", T_PATH_OPT, ldap.admin_bind_dn, 0, 0),
    K("ldap", "admin_bind_password_file", T_PATH_OPT, ldap.admin_bind_password_file, 0, 0),
    K("ldap", "admin_user_base", T_PATH_OPT, ldap.admin_user_base, 0, 0),
    K("outbound", "smarthost", T_SMARTHOST, outbound.smarthost, 0, 0),
    K("outbound", "smarthost_tls", T_SMARTHOST_TLS, outbound.smarthost_tls, 0, 0),
    K("outbound", "smarthost_auth_user", T_PATH_OPT, outbound.smarthost_auth_user, 0, 0),
    K("outbound", "smarthost_password_file", T_PATH_OPT, outbound.smarthost_password_file, 0, 0),
    K("outbound", "smarthost_ca_file", T_PATH_OPT, outbound.smarthost_ca_file, 0, 0),
    K("outbound", "dns_servers", T_DNS_SERVERS, outbound.dns_servers, 0, 0),
    K("outbound", "port", T_INT, outbound.port, 1, 65535),
    K("outbound", "outbound_tls", T_OUTBOUND_TLS, outbound.outbound_tls, 0, 0),
    K("outbound", "retry_schedule", T_DURATIONS, outbound.retry_schedule, APR_USEC_PER_SEC,
      PR_DURATION_MAX),
    K("outbound", "max_queue_lifetime", T_DURATION, outbound.max_queue_lifetime, APR_USEC_PER_SEC,
      PR_DURATION_MAX),
    K("outbound", "delay_warning_time", T_DURATION, outbound.delay_warning_time, 0,
      PR_DURATION_MAX),
    K("outbound", "max_recipients_per_day", T_INT, outbound.max_recipients_per_day, 0,
      PR_COUNT_MAX),
    K("outbound", "max_connections", T_INT, outbound.max_connections, 1, 1000),
    K("outbound", "max_connections_per_destination", T_INT,
      outbound.max_connections_per_destination, 1, 1000),
    K("outbound", "connect_timeout", T_DURATION, outbound.connect_timeout, APR_USEC_PER_SEC,
      PR_DURATION_MAX),
    K("outbound", "command_timeout", T_DURATION, outbound.command_timeout, APR_USEC_PER_SEC,
      PR_DURATION_MAX),
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static int key_index(const char *section, const char *key)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].key, key) == 0) return (int)i;
    return -1;
}

/* ---- value parsers ---------------------------------------------------- */

/* Digits only, no sign or space; *end gets the first non-digit. */
static int parse_digits(const char *s, apr_int64_t max, apr_int64_t *out, const char **end)
{
    apr_int64_t v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9') return 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        int d = *p - '0';
        if (v > (max - d) / 10) return 0;
        v = v * 10 + d;
    }
    *out = v;
    *end = p;
    return 1;
}

apr_status_t pr_parse_bool(int *out, const char *text)
{
    if (!text) return PR_EINVAL;
    if (strcasecmp(text, "yes") == 0) {
        *out = 1;
        return APR_SUCCESS;
    }
    if (strcasecmp(text, "no") == 0) {
        *out = 0;
        return APR_SUCCESS;
    }
    return PR_EINVAL;
}

apr_status_t pr_parse_duration(apr_time_t *out, const char *text)
{
    apr_int64_t v, unit;
    const char *end;
    if (!text || !parse_digits(text, APR_INT64_MAX, &v, &end)) return PR_EINVAL;
    /* Lower case only: "5M" could as well mean months. */
    switch (*end) {
    case '\0':
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    default:
        return PR_EINVAL;
    }
    if (*end && end[1]) return PR_EINVAL;
    if (v > APR_INT64_MAX / unit / APR_USEC_PER_SEC) return PR_EINVAL;
    *out = (apr_time_t)(v * unit * APR_USEC_PER_SEC);
    return APR_SUCCESS;
}

apr_status_t pr_parse_size(apr_off_t *out, const char *text)
{
    apr_int64_t v, mult;
    const char *end;
    if (!text || !parse_digits(text, PR_OFF_MAX, &v, &end)) return PR_EINVAL;
    switch (apr_tolower(*end)) {
    case '\0':
        mult = 1;
        break;
    case 'k':
        mult = 1024;
        break;
    case 'm':
        mult = 1024 * 1024;
        break;
    case 'g':
        mult = 1024 * 1024 * 1024;
        break;
    default:
        return PR_EINVAL;
    }
    if (*end && end[1]) return PR_EINVAL;
    if (v > PR_OFF_MAX / mult) return PR_EINVAL;
    *out = (apr_off_t)(v * mult);
    return APR_SUCCESS;
}

apr_status_t pr_parse_domain(const char **out, const char *text, apr_pool_t *pool)
{
    size_t len, label = 0;
    char *d;
    if (!text) return PR_EINVAL;
    len = strlen(text);
    if (len == 0 || len > 253) return PR_EINVAL;
    d = apr_pstrmemdup(pool, text, len);
    for (size_t i = 0; i < len; i++) {
        char c = (char)apr_tolower(d[i]);
        d[i] = c;
        if (c == '.') {
            if (label == 0 || d[i - 1] == '-') return PR_EINVAL;
            label = 0;
            continue;
        }
        if (c == '-') {
            if (label == 0) return PR_EINVAL;
        } else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
            return PR_EINVAL;
        }
        if (++label > 63) return PR_EINVAL;
    }
    if (label == 0 || d[len - 1] == '-') return PR_EINVAL;
    *out = d;
    return APR_SUCCESS;
}

static char *trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    return s;
}

/* Splits a comma-separated value; an empty value is an empty list, an empty
 * item (",,", trailing ",") a mistake. Returns -1 on an empty item. */
static int split_list(const char *value, char ***items_r, apr_pool_t *pool)
{
    char *copy = apr_pstrdup(pool, value), *p;
    int n = 1, i = 0;
    if (*trim(copy) == '\0') {
        *items_r = NULL;
        return 0;
    }
    for (p = copy; *p; p++)
        if (*p == ',') n++;
    *items_r = apr_pcalloc(pool, (size_t)n * sizeof(char *));
    for (p = copy;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        (*items_r)[i] = trim(p);
        if (!*(*items_r)[i]) return -1;
        i++;
        if (!comma) break;
        p = comma + 1;
    }
    return n;
}

/* "ldap://host[:port]" or "ldaps://..." (RFC 4516 without DN, attributes,
 * scope, filter or extensions: those come from other keys), an optional
 * trailing "/". *out gets it with the scheme lower-cased and no "/".
 * Returns NULL, or why text is refused. */
static const char *parse_ldap_uri(const char **out, const char *text, apr_pool_t *pool)
{
    const char *scheme, *host, *end, *colon = NULL;
    pr_endpoint_t ep;
    apr_int64_t port;

    if (strncasecmp(text, "ldap://", 7) == 0)
        scheme = "ldap";
    else if (strncasecmp(text, "ldaps://", 8) == 0)
        scheme = "ldaps";
    else
        return "use ldap:// or ldaps://";
    host = text + strlen(scheme) + 3;
    end = host + strlen(host);
    if (end > host && end[-1] == '/') end--;
    if (host == end) return "no host";
    for (const char *p = host; p < end; p++)
        if (*p == '/' || *p == '?' || *p == '#' || *p == '@')
            return "only ldap[s]://host[:port] may be given";
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (!close || (close + 1 < end && close[1] != ':')) return "bad host";
        if (close + 1 < end) colon = close + 1;
    } else {
        for (const char *p = host; p < end; p++)
            if (*p == ':') colon = p;
    }
    if (colon == host) return "no host";
    if (colon) {
        const char *pend;
        if (!parse_digits(colon + 1, 65535, &port, &pend) || pend != end || port < 1)
            return "port must be 1..65535";
    }
    /* The host as a listener would take it: a name, IPv4 or [IPv6]. */
    if (pr_endpoint_parse(
            &ep,
            apr_pstrcat(pool, apr_pstrmemdup(pool, host, (size_t)((colon ? colon : end) - host)),
                        ":1", NULL),
            pool) != APR_SUCCESS)
        return "bad host";
    *out = apr_pstrcat(pool, scheme, "://", apr_pstrmemdup(pool, host, (size_t)(end - host)), NULL);
    return NULL;
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A cheap sanity check of an RFC 4515 filter, not a parser: one
 * parenthesised filter, balanced, no "()", escapes as \XX. Returns NULL, or
 * why text is refused. */
static const char *ldap_filter_problem(const char *text)
{
    size_t len = strlen(text);
    int depth = 0;
    if (len < 2 || text[0] != '(' || text[len - 1] != ')') return "not in parentheses";
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\\') {
            if (!is_hex(text[i + 1]) || !is_hex(text[i + 2]))
                return "bad escape (use \\ and two hex digits, e.g. \\28 for '(')";
            i += 2;
        } else if (text[i] == '(') {
            if (text[i + 1] == ')') return "empty parentheses";
            depth++;
        } else if (text[i] == ')') {
            if (--depth < 0) return "unbalanced parentheses";
            if (depth == 0 && i + 1 < len)
                return text[i + 1] == '('
                           ? "more than one filter (combine them with (&...) or (|...))"
                           : "unbalanced parentheses";
        }
    }
    return depth == 0 ? NULL : "unbalanced parentheses";
}

/* RFC 4512 oid: a descr (a letter, then letters, digits, hyphens) or a
 * numericoid (numbers without leading zeros, dot-separated, two or more).
 * Options such as AD's "member;range=0-1499" are not attribute names. */
static int ldap_attr_valid(const char *s)
{
    int parts = 0;
    if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')) {
        for (s++; *s; s++)
            if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                  (*s >= '0' && *s <= '9') || *s == '-'))
                return 0;
        return 1;
    }
    for (;;) {
        const char *start = s;
        while (*s >= '0' && *s <= '9')
            s++;
        if (s == start || (*start == '0' && s - start > 1)) return 0;
        parts++;
        if (!*s) return parts >= 2;
        if (*s++ != '.') return 0;
    }
}

/* ---- defaults ----------------------------------------------------------- */

static const char *machine_hostname(apr_pool_t *pool)
{
    char buf[APRMAXHOSTLEN + 1];
    if (apr_gethostname(buf, sizeof(buf), pool) != APR_SUCCESS || !buf[0]) return "localhost";
    buf[sizeof(buf) - 1] = '\0';
    for (char *p = buf; *p; p++)
        *p = (char)apr_tolower(*p);
    return apr_pstrdup(pool, buf);
}

static const char *default_pidfile(const char *data_dir, apr_pool_t *pool)
{
    char *path;
    if (apr_filepath_merge(&path, data_dir, "postroomd.pid", APR_FILEPATH_NATIVE, pool) ==
        APR_SUCCESS)
        return path;
    return apr_pstrcat(pool, data_dir, "/postroomd.pid", NULL);
}

static void endpoints_one(pr_endpoints_t *eps, const char *host, apr_port_t port, apr_pool_t *pool)
{
    eps->n = 1;
    eps->v = apr_pcalloc(pool, sizeof(*eps->v));
    eps->v[0].host = host;
    eps->v[0].port = port;
}

/* [ldap] keys whose default depends on preset, in the syntax of the file,
 * indexed by pr_ldap_preset_e. */
static const struct {
    const char *key;
    const char *value[2];
} ldap_presets[] = {
    {"user_filter",
     {"(objectClass=inetOrgPerson)", "(&(objectCategory=person)(objectClass=user))"}},
    {"login_attributes", {"uid, mail", "sAMAccountName, userPrincipalName, mail"}},
    {"address_attributes",
     {"mail, mailLocalAddress, mailAlternateAddress", "mail, proxyAddresses"}},
    {"list_filter",
     {"(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=nisMailAlias))",
      "(objectClass=group)"}},
    {"member_attributes", {"member, uniqueMember, rfc822MailMember", "member"}},
    {"disabled_filter", {"", "(userAccountControl:1.2.840.113556.1.4.803:=2)"}},
};

/* Sets every preset key that seen (indexed like keys[]; NULL: nothing was
 * set) does not mark to the value of cfg's preset. */
static void ldap_preset_fill(pr_config_t *cfg, const int *seen, apr_pool_t *pool)
{
    for (size_t i = 0; i < sizeof(ldap_presets) / sizeof(ldap_presets[0]); i++) {
        int ki = key_index("ldap", ldap_presets[i].key);
        const char *value = ldap_presets[i].value[cfg->ldap.preset];
        void *f = (char *)cfg + keys[ki].offset;
        if (seen && seen[ki]) continue;
        if (keys[ki].type == T_LDAP_ATTRS) {
            char **items;
            pr_strlist_t *l = f;
            l->n = split_list(value, &items, pool);
            l->v = (const char **)items;
        } else {
            *(const char **)f = value;
        }
    }
}

void pr_config_defaults(pr_config_t *cfg, apr_pool_t *pool)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->path = "";

    cfg->server.hostname = machine_hostname(pool);
    cfg->server.data_dir = "/var/lib/postroom";
    cfg->server.pidfile = default_pidfile(cfg->server.data_dir, pool);
    cfg->server.log = "stderr";
    cfg->server.log_level = PR_LOG_INFO;
    cfg->server.max_connections = 2000;
    cfg->server.max_connections_per_address = 50;
    cfg->server.shutdown_grace = apr_time_from_sec(60);

    endpoints_one(&cfg->smtp.listen, "0.0.0.0", 25, pool);
    endpoints_one(&cfg->smtp.submission, "0.0.0.0", 587, pool);
    endpoints_one(&cfg->smtp.smtps, "0.0.0.0", 465, pool);
    cfg->smtp.max_message_size = (apr_off_t)25 * 1024 * 1024;
    cfg->smtp.max_recipients = 100;
    cfg->smtp.relay_networks.n = 2;
    cfg->smtp.relay_networks.v = apr_pcalloc(pool, 2 * sizeof(pr_cidr_t));
    pr_cidr_parse(&cfg->smtp.relay_networks.v[0], "127.0.0.0/8");
    pr_cidr_parse(&cfg->smtp.relay_networks.v[1], "::1/128");
    cfg->smtp.command_timeout = apr_time_from_sec(5 * 60);
    cfg->smtp.data_timeout = apr_time_from_sec(3 * 60);
    cfg->smtp.max_errors = 10;

    endpoints_one(&cfg->pop3.listen, "0.0.0.0", 110, pool);
    endpoints_one(&cfg->pop3.pop3s, "0.0.0.0", 995, pool);
    cfg->pop3.timeout = apr_time_from_sec(10 * 60);
    cfg->pop3.max_errors = 10;
    /* [pop2] listen: empty, POP2 is off unless asked for. */

    cfg->store.default_quota = (apr_off_t)2 * 1024 * 1024 * 1024;

    cfg->tls.certificate = "";
    cfg->tls.key = "";
    cfg->tls.min_version = TLS1_2_VERSION;

    cfg->directory.backend = "local";
    cfg->directory.auth_cache_ttl = apr_time_from_sec(10 * 60);

    /* [ldap] uri: empty, required only with backend = ldap. */
    cfg->ldap.starttls = 1;
    cfg->ldap.ca_file = "";
    cfg->ldap.bind_dn = "";
    cfg->ldap.bind_password_file = "";
    cfg->ldap.base = "";
    cfg->ldap.preset = PR_LDAP_OPENLDAP;
    ldap_preset_fill(cfg, NULL, pool);
    cfg->ldap.login_usernames = 0;
    cfg->ldap.timeout = apr_time_from_sec(5);
    cfg->ldap.cache_ttl = apr_time_from_sec(5 * 60);
    cfg->ldap.negative_cache_ttl = apr_time_from_sec(60);
    cfg->ldap.pool_size = 4;
    cfg->ldap.admin_bind_dn = "";
    cfg->ldap.admin_bind_password_file = "";
    cfg->ldap.admin_user_base = "";

    cfg->outbound.smarthost = "";
    cfg->outbound.smarthost_port = 25;
    cfg->outbound.smarthost_tls = PR_SMARTHOST_STARTTLS;
    cfg->outbound.smarthost_auth_user = "";
    cfg->outbound.smarthost_password_file = "";
    cfg->outbound.smarthost_ca_file = "";
    cfg->outbound.port = 25;
    cfg->outbound.outbound_tls = PR_OUTBOUND_TLS_MAY;
    static const int retry_minutes[] = {5, 10, 20, 40, 60};
    cfg->outbound.retry_schedule.n = 5;
    cfg->outbound.retry_schedule.v = apr_pcalloc(pool, 5 * sizeof(apr_time_t));
    for (int i = 0; i < 5; i++)
        cfg->outbound.retry_schedule.v[i] = apr_time_from_sec(60 * retry_minutes[i]);
    cfg->outbound.max_queue_lifetime = apr_time_from_sec(5 * 86400);
    cfg->outbound.delay_warning_time = apr_time_from_sec(4 * 3600);
    cfg->outbound.max_recipients_per_day = 1000;
    cfg->outbound.max_connections = 20;
    cfg->outbound.max_connections_per_destination = 4;
    cfg->outbound.connect_timeout = apr_time_from_sec(30);
    cfg->outbound.command_timeout = apr_time_from_sec(300);
}

/* ---- parsing state ------------------------------------------------------ */

typedef struct {
    pr_config_t *cfg;
    apr_pool_t *pool;
    const char *name; /* file name for messages */

    const char *text; /* the whole input */
    apr_size_t len, pos;
    int lineno;       /* of the line inih is processing */
    int continuation; /* inih will read that line as a continuation */
    int have_prev;    /* inih has a previous key to continue */

    const key_def_t *pending; /* key whose value may still continue */
    int pending_line;
    char *pending_value; /* grows by doubling: continuations stay linear */
    apr_size_t pending_len, pending_cap;

    int seen[NKEYS]; /* line each key was set on, 0 = not set */

    int err_line;
    const char *err;
} parse_t;

/* A value as shown in a message: control characters would let a crafted
 * file mess up the terminal or the log, and huge values bury the point. */
static const char *shown(const char *v, apr_pool_t *pool)
{
    size_t len = strlen(v), max = 80;
    char *s = apr_pstrmemdup(pool, v, len > max ? max : len);
    for (char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    return len > max ? apr_pstrcat(pool, s, "...", NULL) : s;
}

static void fail(parse_t *ps, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(parse_t *ps, int line, const char *fmt, ...)
{
    va_list ap;
    if (ps->err) return; /* the first error is the one to fix */
    va_start(ap, fmt);
    ps->err = apr_psprintf(ps->pool, "%s:%d: %s", ps->name, line, apr_pvsprintf(ps->pool, fmt, ap));
    va_end(ap);
    ps->err_line = line;
}

static void fail_key(parse_t *ps, int line, const key_def_t *k, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail_key(parse_t *ps, int line, const key_def_t *k, const char *fmt, ...)
{
    va_list ap;
    const char *reason;
    va_start(ap, fmt);
    reason = apr_pvsprintf(ps->pool, fmt, ap);
    va_end(ap);
    fail(ps, line, "[%s] %s: %s", k->section, k->key, reason);
}

static void *field(parse_t *ps, const key_def_t *k)
{
    return (char *)ps->cfg + k->offset;
}

static int is_list(const key_def_t *k)
{
    return k->type == T_DOMAINS || k->type == T_CIDRS || k->type == T_ENDPOINTS ||
           k->type == T_LDAP_URIS || k->type == T_LDAP_ATTRS || k->type == T_DNS_SERVERS;
}

static const char *duration_text(apr_time_t t, apr_pool_t *pool)
{
    apr_int64_t s = apr_time_sec(t);
    if (s > 0 && s % 86400 == 0) return apr_psprintf(pool, "%" APR_INT64_T_FMT "d", s / 86400);
    if (s > 0 && s % 3600 == 0) return apr_psprintf(pool, "%" APR_INT64_T_FMT "h", s / 3600);
    if (s > 0 && s % 60 == 0) return apr_psprintf(pool, "%" APR_INT64_T_FMT "m", s / 60);
    return apr_psprintf(pool, "%" APR_INT64_T_FMT "s", s);
}

static const char *size_text(apr_off_t v, apr_pool_t *pool)
{
    static const char units[] = "kmgt";
    int u = -1;
    while (v > 0 && v % 1024 == 0 && u < 3) {
        v /= 1024;
        u++;
    }
    if (u < 0) return apr_psprintf(pool, "%" APR_OFF_T_FMT, v);
    return apr_psprintf(pool, "%" APR_OFF_T_FMT "%c", v, units[u]);
}

/* Parses one complete value into the struct. */
static void apply(parse_t *ps, const key_def_t *k, int line, const char *value)
{
    apr_pool_t *pool = ps->pool;
    void *f = field(ps, k);
    char **items;
    int n;

    if (!*value && !is_list(k) && k->type != T_PATH_OPT && k->type != T_LDAP_FILTER_OPT &&
        k->type != T_SMARTHOST) {
        fail_key(ps, line, k, "empty value");
        return;
    }

    switch (k->type) {
    case T_HOSTNAME:
        if (pr_parse_domain((const char **)f, value, pool) != APR_SUCCESS)
            fail_key(ps, line, k, "bad host name '%s'", shown(value, pool));
        return;

    case T_PATH:
    case T_PATH_OPT:
        *(const char **)f = apr_pstrdup(pool, value);
        return;

    case T_LOG:
        if (strcasecmp(value, "stderr") == 0)
            *(const char **)f = "stderr";
        else if (strcasecmp(value, "syslog") == 0)
            *(const char **)f = "syslog";
        else
            *(const char **)f = apr_pstrdup(pool, value);
        return;

    case T_LOG_LEVEL: {
        static const char *const names[] = {"debug", "info", "warning", "error"};
        static const pr_log_level_e levels[] = {PR_LOG_DEBUG, PR_LOG_INFO, PR_LOG_WARN,
                                                PR_LOG_ERROR};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (strcasecmp(value, names[i]) == 0) {
                *(pr_log_level_e *)f = levels[i];
                return;
            }
        }
        fail_key(ps, line, k, "bad log level '%s' (use debug, info, warning or error)",
                 shown(value, pool));
        return;
    }

    case T_INT: {
        apr_int64_t v;
        const char *end;
        if (!parse_digits(value, APR_INT64_MAX, &v, &end) || *end) {
            fail_key(ps, line, k, "bad number '%s'", shown(value, pool));
            return;
        }
        if (v < k->min || v > k->max) {
            fail_key(ps, line, k, "%s is out of range (%" APR_INT64_T_FMT "..%" APR_INT64_T_FMT ")",
                     value, k->min, k->max);
            return;
        }
        *(int *)f = (int)v;
        return;
    }

    case T_DURATION: {
        apr_time_t v;
        if (pr_parse_duration(&v, value) != APR_SUCCESS) {
            fail_key(ps, line, k, "bad duration '%s'", shown(value, pool));
            return;
        }
        if (v < k->min || v > k->max) {
            fail_key(ps, line, k, "%s is out of range (%s..%s)", value, duration_text(k->min, pool),
                     duration_text(k->max, pool));
            return;
        }
        *(apr_time_t *)f = v;
        return;
    }

    case T_SIZE: {
        apr_off_t v;
        apr_int64_t max = k->max ? k->max : PR_OFF_MAX;
        if (pr_parse_size(&v, value) != APR_SUCCESS) {
            fail_key(ps, line, k, "bad size '%s'", shown(value, pool));
            return;
        }
        if (v < k->min || v > max) {
            fail_key(ps, line, k, "%s is out of range (%s..%s)", value, size_text(k->min, pool),
                     size_text(max, pool));
            return;
        }
        *(apr_off_t *)f = v;
        return;
    }

    case T_BOOL:
        if (pr_parse_bool((int *)f, value) != APR_SUCCESS)
            fail_key(ps, line, k, "bad boolean '%s' (use yes or no)", shown(value, pool));
        return;

    case T_TLS_VERSION: {
        static const struct {
            const char *name;
            int version;
        } versions[] = {{"TLSv1", TLS1_VERSION},
                        {"TLSv1.0", TLS1_VERSION},
                        {"TLSv1.1", TLS1_1_VERSION},
                        {"TLSv1.2", TLS1_2_VERSION},
                        {"TLSv1.3", TLS1_3_VERSION}};
        for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
            if (strcasecmp(value, versions[i].name) == 0) {
                *(int *)f = versions[i].version;
                return;
            }
        }
        fail_key(ps, line, k, "bad TLS version '%s' (use TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3)",
                 shown(value, pool));
        return;
    }

    case T_BACKEND:
        if (strcasecmp(value, "local") == 0)
            *(const char **)f = "local";
        else if (strcasecmp(value, "ldap") == 0)
            *(const char **)f = "ldap"; /* checked with [ldap] once the file is read */
        else
            fail_key(ps, line, k, "unknown backend '%s' (use local)", shown(value, pool));
        return;

    case T_LDAP_PRESET:
        if (strcasecmp(value, "openldap") == 0)
            *(pr_ldap_preset_e *)f = PR_LDAP_OPENLDAP;
        else if (strcasecmp(value, "activedirectory") == 0)
            *(pr_ldap_preset_e *)f = PR_LDAP_ACTIVEDIRECTORY;
        else
            fail_key(ps, line, k, "unknown preset '%s' (use openldap or activedirectory)",
                     shown(value, pool));
        return;

    case T_LDAP_FILTER:
    case T_LDAP_FILTER_OPT: {
        const char *problem = *value ? ldap_filter_problem(value) : NULL;
        if (problem)
            fail_key(ps, line, k, "bad filter '%s': %s", shown(value, pool), problem);
        else
            *(const char **)f = apr_pstrdup(pool, value);
        return;
    }

    case T_LOGIN_NAMES: {
        int address = 0, username = 0;
        n = split_list(value, &items, pool);
        for (int i = 0; i < n; i++) {
            if (strcasecmp(items[i], "address") == 0)
                address = 1;
            else if (strcasecmp(items[i], "username") == 0)
                username = 1;
            else
                n = -1;
        }
        if (n < 0 || !address) {
            fail_key(ps, line, k, "bad value '%s' (use address or address,username)",
                     shown(value, pool));
            return;
        }
        *(int *)f = username;
        return;
    }

    case T_SMARTHOST: {
        /* host, host:port, [v6] or [v6]:port; the port field follows. */
        const char *host = value, *port = NULL;
        int *port_f = (int *)((char *)f + offsetof(pr_config_t, outbound.smarthost_port) -
                              offsetof(pr_config_t, outbound.smarthost));
        if (!*value) {
            *(const char **)f = "";
            return;
        }
        if (*value == '[') {
            const char *end = strchr(value, ']');
            if (!end || (end[1] && end[1] != ':')) {
                fail_key(ps, line, k, "bad host '%s' (use host:port or [v6]:port)",
                         shown(value, pool));
                return;
            }
            host = apr_pstrmemdup(pool, value + 1, (apr_size_t)(end - value - 1));
            port = end[1] ? end + 2 : NULL;
            pr_cidr_t c;
            if (pr_cidr_parse(&c, host) != APR_SUCCESS || !strchr(host, ':')) {
                fail_key(ps, line, k, "bad IPv6 address '%s'", shown(host, pool));
                return;
            }
        } else {
            const char *colon = strchr(value, ':');
            if (colon) {
                host = apr_pstrmemdup(pool, value, (apr_size_t)(colon - value));
                port = colon + 1;
            }
            const char *d;
            if (pr_parse_domain(&d, host, pool) != APR_SUCCESS) {
                fail_key(ps, line, k, "bad host name '%s'", shown(host, pool));
                return;
            }
            host = d;
        }
        if (port) {
            char *end;
            long v = strtol(port, &end, 10);
            if (!*port || *end || v < 1 || v > 65535) {
                fail_key(ps, line, k, "bad port '%s' (1..65535)", shown(port, pool));
                return;
            }
            *port_f = (int)v;
        }
        *(const char **)f = host;
        return;
    }

    case T_SMARTHOST_TLS:
        if (strcasecmp(value, "starttls") == 0)
            *(pr_smarthost_tls_e *)f = PR_SMARTHOST_STARTTLS;
        else if (strcasecmp(value, "implicit") == 0)
            *(pr_smarthost_tls_e *)f = PR_SMARTHOST_IMPLICIT;
        else if (strcasecmp(value, "none") == 0)
            *(pr_smarthost_tls_e *)f = PR_SMARTHOST_NONE;
        else
            fail_key(ps, line, k, "bad value '%s' (use starttls, implicit or none)",
                     shown(value, pool));
        return;

    case T_OUTBOUND_TLS:
        if (strcasecmp(value, "may") == 0)
            *(pr_outbound_tls_e *)f = PR_OUTBOUND_TLS_MAY;
        else if (strcasecmp(value, "encrypt") == 0)
            *(pr_outbound_tls_e *)f = PR_OUTBOUND_TLS_ENCRYPT;
        else
            fail_key(ps, line, k, "bad value '%s' (use may or encrypt)", shown(value, pool));
        return;

    case T_DURATIONS: {
        pr_durations_t *l = f;
        n = split_list(value, &items, pool);
        if (n <= 0) {
            fail_key(ps, line, k, "needs at least one duration, e.g. 5m, 10m, 1h");
            return;
        }
        apr_time_t *v = apr_pcalloc(pool, (size_t)n * sizeof(*v));
        for (int i = 0; i < n; i++) {
            if (pr_parse_duration(&v[i], items[i]) != APR_SUCCESS) {
                fail_key(ps, line, k, "bad duration '%s'", shown(items[i], pool));
                return;
            }
            if (v[i] < k->min || v[i] > k->max) {
                fail_key(ps, line, k, "%s is out of range (%s..%s)", items[i],
                         duration_text(k->min, pool), duration_text(k->max, pool));
                return;
            }
        }
        l->n = n;
        l->v = v;
        return;
    }

    case T_DOMAINS:
    case T_CIDRS:
    case T_ENDPOINTS:
    case T_LDAP_URIS:
    case T_LDAP_ATTRS:
    case T_DNS_SERVERS:
        break;
    }

    n = split_list(value, &items, pool);
    if (n < 0) {
        fail_key(ps, line, k, "empty item in list '%s'", shown(value, pool));
        return;
    }

    if (k->type == T_DOMAINS) {
        pr_strlist_t *l = f;
        l->n = 0;
        l->v = n ? apr_pcalloc(pool, (size_t)n * sizeof(*l->v)) : NULL;
        apr_hash_t *seen = apr_hash_make(pool);
        for (int i = 0; i < n; i++) {
            const char *d;
            if (pr_parse_domain(&d, items[i], pool) != APR_SUCCESS) {
                fail_key(ps, line, k, "bad domain '%s'", shown(items[i], pool));
                return;
            }
            /* Listing a domain twice is harmless; keep it once. */
            if (apr_hash_get(seen, d, APR_HASH_KEY_STRING)) continue;
            apr_hash_set(seen, d, APR_HASH_KEY_STRING, d);
            l->v[l->n++] = d;
        }
    } else if (k->type == T_CIDRS) {
        pr_cidrs_t *l = f;
        l->n = n;
        l->v = n ? apr_pcalloc(pool, (size_t)n * sizeof(*l->v)) : NULL;
        for (int i = 0; i < n; i++) {
            if (pr_cidr_parse(&l->v[i], items[i]) != APR_SUCCESS) {
                fail_key(ps, line, k, "bad network '%s' (use an address or address/prefix)",
                         shown(items[i], pool));
                return;
            }
        }
    } else if (k->type == T_LDAP_URIS) {
        pr_strlist_t *l = f;
        l->n = n;
        l->v = n ? apr_pcalloc(pool, (size_t)n * sizeof(*l->v)) : NULL;
        for (int i = 0; i < n; i++) {
            const char *problem = parse_ldap_uri(&l->v[i], items[i], pool);
            if (problem) {
                fail_key(ps, line, k, "bad URI '%s': %s", shown(items[i], pool), problem);
                return;
            }
        }
    } else if (k->type == T_DNS_SERVERS) {
        /* An address with an optional port (default 53), kept in the
         * "ip:port" / "[v6]:port" form c-ares reads. */
        pr_strlist_t *l = f;
        l->n = n;
        l->v = n ? apr_pcalloc(pool, (size_t)n * sizeof(*l->v)) : NULL;
        for (int i = 0; i < n; i++) {
            const char *it = items[i], *full;
            int colons = 0;
            for (const char *c = it; *c; c++)
                colons += *c == ':';
            if (it[0] == '[')
                full = strstr(it, "]:") ? it : apr_pstrcat(pool, it, ":53", NULL);
            else if (colons == 0)
                full = apr_pstrcat(pool, it, ":53", NULL);
            else if (colons == 1)
                full = it;
            else /* a bare IPv6 address */
                full = apr_pstrcat(pool, "[", it, "]:53", NULL);
            pr_endpoint_t ep;
            pr_cidr_t ip; /* an address: a resolver cannot be found by name */
            if (pr_endpoint_parse(&ep, full, pool) != APR_SUCCESS ||
                pr_cidr_parse(&ip, ep.host) != APR_SUCCESS || strchr(ep.host, '/')) {
                fail_key(ps, line, k, "bad DNS server '%s' (e.g. 127.0.0.1:5353 or [::1]:53)",
                         shown(it, pool));
                return;
            }
            l->v[i] = full;
        }
    } else if (k->type == T_LDAP_ATTRS) {
        pr_strlist_t *l = f;
        if (n == 0) {
            fail_key(ps, line, k, "empty value (at least one attribute is needed)");
            return;
        }
        for (int i = 0; i < n; i++) {
            if (!ldap_attr_valid(items[i])) {
                fail_key(ps, line, k,
                         "bad attribute name '%s' (letters, digits and '-', starting with a "
                         "letter, or a numeric OID)",
                         shown(items[i], pool));
                return;
            }
        }
        l->n = n;
        l->v = (const char **)items;
    } else {
        pr_endpoints_t *l = f;
        l->n = n;
        l->v = n ? apr_pcalloc(pool, (size_t)n * sizeof(*l->v)) : NULL;
        for (int i = 0; i < n; i++) {
            if (pr_endpoint_parse(&l->v[i], items[i], pool) != APR_SUCCESS) {
                fail_key(ps, line, k, "bad address:port '%s' (e.g. 0.0.0.0:25 or [::]:25)",
                         shown(items[i], pool));
                return;
            }
        }
    }
}

static void flush_pending(parse_t *ps)
{
    if (!ps->pending) return;
    apply(ps, ps->pending, ps->pending_line, ps->pending_value);
    ps->pending = NULL;
}

static void pending_append(parse_t *ps, const char *s, apr_size_t len)
{
    if (ps->pending_len + len + 1 > ps->pending_cap) {
        apr_size_t cap = ps->pending_cap ? ps->pending_cap * 2 : 256;
        while (cap < ps->pending_len + len + 1)
            cap *= 2;
        char *buf = apr_palloc(ps->pool, cap);
        if (ps->pending_len) memcpy(buf, ps->pending_value, ps->pending_len);
        ps->pending_value = buf;
        ps->pending_cap = cap;
    }
    memcpy(ps->pending_value + ps->pending_len, s, len);
    ps->pending_len += len;
    ps->pending_value[ps->pending_len] = '\0';
}

/* Section names compare case-insensitively and without the spaces inih
 * keeps inside the brackets ("[ smtp ]"). */
static const char *find_section(const char *name)
{
    size_t len;
    while (*name == ' ' || *name == '\t')
        name++;
    len = strlen(name);
    while (len > 0 && (name[len - 1] == ' ' || name[len - 1] == '\t'))
        len--;
    for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
        if (strlen(sections[i]) == len && strncasecmp(name, sections[i], len) == 0)
            return sections[i];
    return NULL;
}

/* inih handler: records the key (its value is parsed once no indented
 * continuation can follow) or appends a continuation line. Line numbers
 * come from our reader, whether or not inih passes them. */
#if INI_HANDLER_LINENO
static int on_value(void *user, const char *section, const char *name, const char *value,
                    int lineno)
#else
static int on_value(void *user, const char *section, const char *name, const char *value)
#endif
{
    parse_t *ps = user;
    const char *sec;

#if INI_HANDLER_LINENO
    (void)lineno;
#endif
    if (ps->err) return 0;

    if (ps->continuation) {
        const key_def_t *k = ps->pending;
        if (!k) {
            fail(ps, ps->lineno, "indented line continues nothing");
            return 0;
        }
        if (!is_list(k)) {
            fail_key(ps, ps->lineno, k, "only lists may continue on an indented line (got '%s')",
                     shown(value, ps->pool));
            return 0;
        }
        /* A line break after a comma must not turn into an empty item. */
        apr_size_t plen = ps->pending_len;
        if (plen > 0 && ps->pending_value[plen - 1] != ',' && value[0] != ',')
            pending_append(ps, ",", 1);
        pending_append(ps, value, strlen(value));
        return 1;
    }

    flush_pending(ps);
    if (ps->err) return 0;

    if (!section[0]) {
        fail(ps, ps->lineno, "key '%s' outside any section", shown(name, ps->pool));
        return 0;
    }
    sec = find_section(section);
    if (!sec) {
        fail(ps, ps->lineno, "unknown section [%s]", shown(section, ps->pool));
        return 0;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].section != sec || strcasecmp(keys[i].key, name) != 0) continue;
        if (ps->seen[i]) {
            fail_key(ps, ps->lineno, &keys[i], "duplicate key (first set on line %d)", ps->seen[i]);
            return 0;
        }
        ps->seen[i] = ps->lineno;
        ps->pending = &keys[i];
        ps->pending_line = ps->lineno;
        ps->pending_len = 0;
        pending_append(ps, value, strlen(value));
        return 1;
    }
    fail(ps, ps->lineno, "unknown key '%s' in [%s]", shown(name, ps->pool), sec);
    return 0;
}

/* ---- the line reader ---------------------------------------------------- */

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* Like inih: the first of chars, or an inline ';' comment after a space. */
static const char *find_or_comment(const char *s, const char *end, const char *chars)
{
    int was_space = 0;
    for (; s < end; s++) {
        if (chars && strchr(chars, *s)) return s;
        if (was_space && *s == ';') return s;
        was_space = is_space(*s);
    }
    return end;
}

/* "[name]" followed by nothing or a comment; the name goes to name_r, nlen_r. */
static int is_header(const char *s, const char *end, const char **name_r, size_t *nlen_r)
{
    const char *close, *p;
    if (s >= end || *s != '[') return 0;
    close = find_or_comment(s + 1, end, "]");
    if (close >= end || *close != ']') return 0;
    for (p = close + 1; p < end && is_space(*p); p++)
        ;
    if (p < end && *p != ';') return 0;
    *name_r = s + 1;
    *nlen_r = (size_t)(close - s - 1);
    return 1;
}

/* "name =" : an indented key, not a continuation. ':' would catch "a:25". */
static int looks_like_key(const char *s, const char *end)
{
    const char *p = s;
    while (p < end && (apr_isalnum(*p) || *p == '_' || *p == '-' || *p == '.'))
        p++;
    if (p == s) return 0;
    while (p < end && is_space(*p))
        p++;
    return p < end && *p == '=';
}

/* Classifies each line as inih will see it, so the handler knows its line
 * number and whether it is a continuation. Stops the parse (EOF) at the
 * first error, which is what an admin needs. */
static char *read_line(char *str, int num, void *stream)
{
    parse_t *ps = stream;
    const char *line, *eol, *end, *start;
    size_t raw_len;
    int indented;

    if (ps->err) return NULL;
    if (ps->pos >= ps->len) {
        flush_pending(ps);
        return NULL;
    }
    line = ps->text + ps->pos;
    eol = memchr(line, '\n', ps->len - ps->pos);
    end = eol ? eol : ps->text + ps->len;
    ps->pos = eol ? (apr_size_t)(eol - ps->text) + 1 : ps->len;
    ps->lineno++;
    ps->continuation = 0;

    raw_len = (size_t)(end - line);
    if (memchr(line, '\0', raw_len)) {
        flush_pending(ps);
        fail(ps, ps->lineno, "NUL byte in line");
        return NULL;
    }
    while (end > line && is_space(end[-1]))
        end--;
    if (num < 3 || (size_t)(end - line) > (size_t)num - 2) {
        flush_pending(ps);
        fail(ps, ps->lineno,
             "line too long (over %d characters; lists may continue on "
             "indented lines)",
             num - 2);
        return NULL;
    }

    start = line;
    if (ps->lineno == 1 && end - start >= 3 && memcmp(start, "\xEF\xBB\xBF", 3) == 0) start += 3;
    indented = start < end && is_space(*start);
    while (start < end && is_space(*start))
        start++;

    if (start == end || *start == ';' || *start == '#') {
        /* Blank or comment: inih keeps its previous key for continuations. */
        start = line;
    } else {
        const char *name;
        size_t nlen;
        if (is_header(start, end, &name, &nlen)) {
            char *sec = trim(apr_pstrmemdup(ps->pool, name, nlen));
            flush_pending(ps);
            if (ps->err) return NULL;
            if (!find_section(sec)) {
                fail(ps, ps->lineno, "unknown section [%s]", shown(sec, ps->pool));
                return NULL;
            }
            ps->have_prev = 0;
            /* An indented header would be a continuation to inih. */
        } else if (*start == '[' && !(indented && ps->have_prev)) {
            /* inih would take "[smtp] x = 1" as a header and drop the rest. */
            flush_pending(ps);
            fail(ps, ps->lineno, "syntax error: bad section header");
            return NULL;
        } else if (indented && ps->have_prev && !looks_like_key(start, end)) {
            ps->continuation = 1;
            start = line;
        } else {
            const char *sep = find_or_comment(start, end, "=:");
            flush_pending(ps);
            if (ps->err) return NULL;
            if (sep >= end || (*sep != '=' && *sep != ':')) {
                fail(ps, ps->lineno, "syntax error: expected 'key = value' or '[section]'");
                return NULL;
            }
            ps->have_prev = 1;
        }
    }

    memcpy(str, start, (size_t)(end - start));
    str[end - start] = '\n';
    str[end - start + 1] = '\0';
    return str;
}

/* ---- entry points ------------------------------------------------------- */

/* Two listeners on one address:port would fail at bind time, far from the
 * line that caused it; blame the key set last in the file. */
static void check_listeners(parse_t *ps)
{
    const int idx[] = {key_index("smtp", "listen"), key_index("smtp", "submission"),
                       key_index("smtp", "smtps"),  key_index("pop3", "listen"),
                       key_index("pop3", "pop3s"),  key_index("pop2", "listen")};
    const int n_idx = (int)(sizeof(idx) / sizeof(idx[0]));
    apr_hash_t *used = apr_hash_make(ps->pool); /* "host port" -> &idx[key] */
    for (int a = 0; a < n_idx; a++) {
        const pr_endpoints_t *l = field(ps, &keys[idx[a]]);
        for (int i = 0; i < l->n; i++) {
            const pr_endpoint_t *x = &l->v[i];
            char *id = apr_psprintf(ps->pool, "%s %u", x->host, (unsigned)x->port);
            for (char *p = id; *p; p++)
                *p = (char)apr_tolower(*p);
            const int *prev = apr_hash_get(used, id, APR_HASH_KEY_STRING);
            if (!prev) {
                apr_hash_set(used, id, APR_HASH_KEY_STRING, &idx[a]);
                continue;
            }
            if (*prev == idx[a]) {
                fail_key(ps, ps->seen[idx[a]], &keys[idx[a]], "%s:%u is listed twice",
                         shown(x->host, ps->pool), (unsigned)x->port);
            } else {
                int blame = ps->seen[idx[a]] >= ps->seen[*prev] ? idx[a] : *prev;
                int other = blame == idx[a] ? *prev : idx[a];
                fail_key(ps, ps->seen[blame], &keys[blame], "%s:%u is also used by [%s] %s",
                         shown(x->host, ps->pool), (unsigned)x->port, keys[other].section,
                         keys[other].key);
            }
            return;
        }
    }
}

/* A DN and its password file go together; blame the one that is set. */
static void check_ldap_pair(parse_t *ps, const char *dn_key, const char *pw_key, const char *why)
{
    const int dn = key_index("ldap", dn_key), pw = key_index("ldap", pw_key);
    const char *dn_value = *(const char **)field(ps, &keys[dn]);
    const char *pw_value = *(const char **)field(ps, &keys[pw]);
    if (*dn_value && !*pw_value)
        fail_key(ps, ps->seen[dn], &keys[dn], "needs %s too (or neither, %s)", pw_key, why);
    else if (*pw_value && !*dn_value)
        fail_key(ps, ps->seen[pw], &keys[pw], "needs %s too (or neither, %s)", dn_key, why);
}

/* With backend = ldap, what [ldap] must hold. A missing key has no line of
 * its own: blame the backend line, which asked for it (as check_listeners
 * blames the key that was set). With backend = local an [ldap] section is
 * only checked key by key. */
static void check_ldap(parse_t *ps)
{
    const pr_config_t *cfg = ps->cfg;
    const int backend = key_index("directory", "backend");
    if (strcmp(cfg->directory.backend, "ldap") != 0) return;
    if (cfg->ldap.uri.n == 0)
        fail_key(ps, ps->seen[backend], &keys[backend], "ldap needs [ldap] uri");
    if (!*cfg->ldap.base) fail_key(ps, ps->seen[backend], &keys[backend], "ldap needs [ldap] base");
    check_ldap_pair(ps, "bind_dn", "bind_password_file", "for an anonymous bind");
    check_ldap_pair(ps, "admin_bind_dn", "admin_bind_password_file", "for read-only access");
}

/* A relay login needs its password file, and the other way round. */
static void check_outbound(parse_t *ps)
{
    const int user = key_index("outbound", "smarthost_auth_user"),
              pw = key_index("outbound", "smarthost_password_file");
    const pr_config_t *cfg = ps->cfg;
    if (*cfg->outbound.smarthost_auth_user && !*cfg->outbound.smarthost_password_file)
        fail_key(ps, ps->seen[user], &keys[user], "needs smarthost_password_file too");
    else if (*cfg->outbound.smarthost_password_file && !*cfg->outbound.smarthost_auth_user)
        fail_key(ps, ps->seen[pw], &keys[pw], "needs smarthost_auth_user too");
    else if (*cfg->outbound.smarthost_auth_user && !*cfg->outbound.smarthost)
        fail_key(ps, ps->seen[user], &keys[user], "needs smarthost (AUTH is only for a relay)");
}

static apr_status_t parse_buffer(pr_config_t **cfg_r, const char *text, apr_size_t len,
                                 const char *name, const char **err_r, apr_pool_t *pool)
{
    parse_t *ps = apr_pcalloc(pool, sizeof(*ps));
    int rc;

    ps->cfg = apr_pcalloc(pool, sizeof(*ps->cfg));
    pr_config_defaults(ps->cfg, pool);
    ps->cfg->path = name = apr_pstrdup(pool, name ? name : "(config)");
    ps->pool = pool;
    ps->name = name;
    ps->text = text;
    ps->len = len;

    rc = ini_parse_stream(read_line, ps, on_value, ps);
    if (!ps->err && rc == 0) flush_pending(ps);
    if (rc > 0 && (!ps->err || rc < ps->err_line)) {
        /* inih refused a line our reader let through. */
        ps->err = apr_psprintf(pool, "%s:%d: syntax error", name, rc);
    } else if (rc < 0 && !ps->err) {
        ps->err = apr_psprintf(pool, "%s: out of memory while parsing", name);
    }
    if (!ps->err) {
        /* After parsing, so the default follows data_dir wherever it is set. */
        if (!ps->seen[key_index("server", "pidfile")])
            ps->cfg->server.pidfile = default_pidfile(ps->cfg->server.data_dir, pool);
        /* Likewise, so preset may come after the keys it fills. */
        ldap_preset_fill(ps->cfg, ps->seen, pool);
        check_listeners(ps);
        check_ldap(ps);
        check_outbound(ps);
    }
    if (ps->err) {
        if (err_r) *err_r = ps->err;
        return PR_EINVAL;
    }
    *cfg_r = ps->cfg;
    if (err_r) *err_r = NULL;
    return APR_SUCCESS;
}

apr_status_t pr_config_parse_string(pr_config_t **cfg_r, const char *text, const char *name,
                                    const char **err_r, apr_pool_t *pool)
{
    return parse_buffer(cfg_r, text ? text : "", text ? strlen(text) : 0, name, err_r, pool);
}

apr_status_t pr_config_load(pr_config_t **cfg_r, const char *path, const char **err_r,
                            apr_pool_t *pool)
{
    apr_file_t *f;
    apr_finfo_t info;
    apr_status_t st;
    char *buf, msg[256];
    apr_size_t got = 0;

    st = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, APR_FPROT_OS_DEFAULT, pool);
    if (st == APR_SUCCESS) st = apr_file_info_get(&info, APR_FINFO_SIZE, f);
    if (st == APR_SUCCESS && info.size > PR_CONFIG_MAX_FILE) {
        apr_file_close(f);
        if (err_r) *err_r = apr_psprintf(pool, "%s: file too large (over 1 MB)", path);
        return PR_EINVAL;
    }
    if (st == APR_SUCCESS) {
        buf = apr_palloc(pool, (apr_size_t)info.size + 1);
        st = apr_file_read_full(f, buf, (apr_size_t)info.size, &got);
        if (st == APR_EOF) st = APR_SUCCESS;
        buf[got] = '\0';
    }
    if (st != APR_SUCCESS) {
        if (err_r) *err_r = apr_psprintf(pool, "%s: %s", path, apr_strerror(st, msg, sizeof(msg)));
        return st;
    }
    apr_file_close(f);
    return parse_buffer(cfg_r, buf, got, path, err_r, pool);
}

apr_off_t pr_config_min_free_space(const pr_config_t *cfg)
{
    if (cfg->store.min_free_space > 0) return cfg->store.min_free_space;
    return cfg->smtp.max_message_size + cfg->smtp.max_message_size / 2;
}

int pr_config_is_local_domain(const pr_config_t *cfg, const char *domain)
{
    size_t len;
    if (!domain) return 0;
    len = strlen(domain);
    /* An absolute name ("example.org.") is the same domain. */
    if (len > 0 && domain[len - 1] == '.') len--;
    for (int i = 0; i < cfg->server.domains.n; i++) {
        const char *d = cfg->server.domains.v[i];
        if (strlen(d) == len && strncasecmp(d, domain, len) == 0) return 1;
    }
    return 0;
}
