/* postroom.conf: one INI file read into one typed struct. Every key has a
 * default; an unknown section or key, or a bad value, is an error naming the
 * line. Value syntax: booleans yes/no; durations N[s|m|h|d] (bare = seconds);
 * sizes N[k|m|g] (bare = bytes); lists comma-separated; empty = none. */
#ifndef PR_CONFIG_H
#define PR_CONFIG_H

#include <apr_pools.h>
#include <apr_time.h>
#include "service/core/netaddr.h"

typedef struct pr_strlist_t {
    int n;
    const char **v;
} pr_strlist_t;

typedef struct pr_endpoints_t {
    int n;
    pr_endpoint_t *v;
} pr_endpoints_t;

typedef struct pr_cidrs_t {
    int n;
    pr_cidr_t *v;
} pr_cidrs_t;

typedef enum { PR_LOG_DEBUG, PR_LOG_INFO, PR_LOG_WARN, PR_LOG_ERROR } pr_log_level_e;
typedef enum { PR_LDAP_OPENLDAP = 0, PR_LDAP_ACTIVEDIRECTORY } pr_ldap_preset_e;
/* [outbound] smarthost_tls: how the connection to the relay is secured. */
typedef enum { PR_SMARTHOST_STARTTLS = 0, PR_SMARTHOST_IMPLICIT, PR_SMARTHOST_NONE } pr_smarthost_tls_e;
/* [outbound] outbound_tls, toward MX hosts: STARTTLS when offered, or
 * required (no delivery in clear). */
typedef enum { PR_OUTBOUND_TLS_MAY = 0, PR_OUTBOUND_TLS_ENCRYPT } pr_outbound_tls_e;

typedef struct pr_durations_t {
    int n;
    apr_time_t *v;
} pr_durations_t;

typedef struct pr_config_t {
    const char *path; /* the file it was read from */

    struct {
        const char *hostname;        /* default: the machine's name */
        pr_strlist_t domains;        /* local domains (lower-cased) */
        const char *data_dir;        /* default: /var/lib/postroom */
        const char *pidfile;         /* default: <data_dir>/postroomd.pid */
        const char *log;             /* "stderr" (default), "syslog" or a file path */
        pr_log_level_e log_level;    /* default info */
        int max_connections;         /* default 2000 */
        int max_connections_per_address; /* default 50 */
        pr_cidrs_t limit_exempt_networks;  /* default none */
        apr_time_t shutdown_grace;   /* default 60s: how long SIGTERM waits */
    } server;

    struct {
        pr_endpoints_t listen;     /* MX, STARTTLS; default 0.0.0.0:25 */
        pr_endpoints_t submission; /* STARTTLS + AUTH; default 0.0.0.0:587 */
        pr_endpoints_t smtps;      /* implicit TLS + AUTH; default 0.0.0.0:465 */
        apr_off_t max_message_size; /* default 25m */
        int max_recipients;         /* default 100 */
        pr_cidrs_t relay_networks;  /* default 127.0.0.0/8, ::1/128 */
        int allow_plaintext_auth;   /* default no */
        int vrfy;                   /* default no: 252 */
        int expn;                   /* default no: 502 */
        apr_time_t command_timeout; /* default 5m (RFC 5321 4.5.3.2.7) */
        apr_time_t data_timeout;    /* default 3m (RFC 5321 4.5.3.2.6) */
        int max_errors;             /* default 10: then 421 and close */
    } smtp;

    struct {
        pr_endpoints_t listen;    /* STLS; default 0.0.0.0:110 */
        pr_endpoints_t pop3s;     /* implicit TLS; default 0.0.0.0:995 */
        int allow_plaintext_auth; /* default no */
        apr_time_t timeout;       /* autologout; default and minimum 10m (RFC 1939 3) */
        int max_errors;           /* default 10: then -ERR and close */
    } pop3;

    struct {
        pr_endpoints_t listen; /* RFC 937; default empty (off) */
    } pop2;

    struct {
        apr_off_t min_free_space;   /* default 0 = 1.5 x max_message_size */
        apr_off_t default_quota;    /* per mailbox owner, all folders; default 2g, 0 = none */
    } store;

    struct {
        const char *certificate; /* default empty: <data_dir>/tls/cert.pem, self-signed */
        const char *key;         /* default empty: <data_dir>/tls/key.pem */
        int min_version;         /* OpenSSL TLS1_x_VERSION; default TLS1_2_VERSION.
                                    Values: TLSv1, TLSv1.0, TLSv1.1, TLSv1.2, TLSv1.3 */
    } tls;

    struct {
        const char *backend;       /* "local" (default) or "ldap" */
        apr_time_t auth_cache_ttl; /* verified-credential cache; default 10m, 0 = off */
    } directory;

    /* [ldap]: read when [directory] backend = ldap. After loading, every
     * key left unset holds its preset's value (see pr_config_load).
     * With backend = ldap, loading also checks that uri and base are set
     * and that each DN comes with its password file (and vice versa);
     * with backend = local the section is only checked key by key. */
    struct {
        pr_strlist_t uri;               /* ldap:// or ldaps:// URIs, tried in order; required */
                                        /* each "ldap[s]://host[:port]": scheme lower-cased,
                                           no trailing '/'; host a name, IPv4 or [IPv6] */
        int starttls;                   /* default yes (for ldap:// URIs) */
        const char *ca_file;            /* default empty: the system's CAs */
        const char *bind_dn;            /* default empty: anonymous service bind */
        const char *bind_password_file; /* required with bind_dn */
        const char *base;               /* search base; required */
        pr_ldap_preset_e preset;        /* default openldap */
        const char *user_filter;        /* objects that are users */
        pr_strlist_t login_attributes;  /* attributes a login name is matched against
                                           (this and the other attribute lists: never empty) */
        pr_strlist_t address_attributes; /* attributes holding a user's addresses */
        const char *list_filter;        /* objects that are lists (groups) */
        pr_strlist_t member_attributes; /* attributes naming a list's members */
        const char *disabled_filter;    /* users matching it cannot log in nor receive;
                                           "" = none (the openldap preset's value) */
        int login_usernames;            /* login_names = address,username: bare names too */
        apr_time_t timeout;             /* per operation; default 5s */
        apr_time_t cache_ttl;           /* positive answers; default 5m */
        apr_time_t negative_cache_ttl;  /* "no such address"; default 1m */
        int pool_size;                  /* connections; default 4 */
        const char *admin_bind_dn;      /* default empty: read-only */
        const char *admin_bind_password_file;
        const char *admin_user_base;    /* where admin writes create users; default
                                           empty: base */
    } ldap;

    /* [outbound]: delivery of mail that leaves (issue 5). */
    struct {
        const char *smarthost;             /* relay host name or address; default empty: MX */
        int smarthost_port;                /* "host:port"; default 25 */
        pr_smarthost_tls_e smarthost_tls;  /* default starttls */
        const char *smarthost_auth_user;   /* default empty: no AUTH */
        const char *smarthost_password_file; /* required with smarthost_auth_user */
        const char *smarthost_ca_file;     /* the relay's certificate is verified against
                                              it; default empty: the system's CAs */
        pr_strlist_t dns_servers;          /* "ip:port" (c-ares syntax, [v6]:port);
                                              default empty: the system resolver */
        int port;                          /* MX hosts' port; default 25 (tests change it) */
        pr_outbound_tls_e outbound_tls;    /* default may */
        pr_durations_t retry_schedule;     /* default 5m,10m,20m,40m,1h; the last repeats */
        apr_time_t max_queue_lifetime;     /* default 5d: then bounce */
        apr_time_t delay_warning_time;     /* default 4h: then a delay DSN; 0 = never */
        int max_recipients_per_day;        /* per authenticated user, relayed; default 1000,
                                              0 = no limit */
        int max_connections;               /* outbound, in total; default 20 */
        int max_connections_per_destination; /* default 4 */
        apr_time_t connect_timeout;        /* default 30s */
        apr_time_t command_timeout;        /* per reply; default 5m (RFC 5321 4.5.3.2) */
    } outbound;
} pr_config_t;

/* A config with every default filled in (data_dir etc. as documented). */
void pr_config_defaults(pr_config_t *cfg, apr_pool_t *pool);

/* Read a file over the defaults. On error returns PR_EINVAL and sets *err_r
 * to one line: "FILE:LINE: reason" (e.g. "unknown key 'foo' in [smtp]"). */
apr_status_t pr_config_load(pr_config_t **cfg_r, const char *path, const char **err_r,
                            apr_pool_t *pool);

/* Same from a string (tests, fuzzing); name is used in messages. */
apr_status_t pr_config_parse_string(pr_config_t **cfg_r, const char *text, const char *name,
                                    const char **err_r, apr_pool_t *pool);

/* Value parsers, exposed for tests and other modules. Return PR_EINVAL on bad input. */
apr_status_t pr_parse_bool(int *out, const char *text);
apr_status_t pr_parse_duration(apr_time_t *out, const char *text);
apr_status_t pr_parse_size(apr_off_t *out, const char *text);
/* A domain name (letters, digits, hyphens; dot-separated labels of 1..63,
 * no leading/trailing hyphen, at most 253): *out gets it lower-cased. */
apr_status_t pr_parse_domain(const char **out, const char *text, apr_pool_t *pool);

/* Derived: effective min free space (1.5 x max_message_size unless set). */
apr_off_t pr_config_min_free_space(const pr_config_t *cfg);

/* Is domain (any case) one of [server] domains? */
int pr_config_is_local_domain(const pr_config_t *cfg, const char *domain);

#endif
