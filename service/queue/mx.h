/* Where to deliver a domain's mail (RFC 5321 5.1): its MX hosts by
 * preference, or with no MX records the domain itself ("implicit MX"), or no
 * mail at all (null MX, RFC 7505). Looks up MX, A and AAAA with c-ares
 * (DNS queries, not getaddrinfo, so NXDOMAIN, "no such record" and SERVFAIL
 * stay apart) against the system resolver or [outbound] dns_servers.
 *
 * Status of mx_resolve and what the queue makes of it:
 *   APR_SUCCESS    route found; try its hosts in order, each host's
 *                  addresses in order, the next one on failure
 *   PR_ENOTFOUND   NXDOMAIN; or no MX and no A/AAAA; or every MX host is
 *                  known not to exist or to have no address: bounce (5.1.2)
 *   PR_ENULLMX     the domain accepts no mail (RFC 7505): bounce (5.1.10)
 *   PR_ETEMPFAIL   SERVFAIL, REFUSED, timeout, network error, malformed
 *                  answer, MX records that are all unusable names, or every
 *                  MX host's address lookup failed temporarily: defer
 *   PR_EINVAL      the domain is not a syntactically valid name: bounce
 *
 * Thread-safe: a resolver is immutable after mx_resolver_create and every
 * mx_resolve call uses its own c-ares channel, so queue delivery threads may
 * resolve at the same time. Each call takes at most the resolver's timeout. */
#ifndef PR_MX_H
#define PR_MX_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>
#include "service/core/config.h"

#define MX_MAX_HOSTS 16           /* MX hosts kept per route (lowest preferences) */
#define MX_MAX_ADDRS_PER_FAMILY 8 /* per host: at most 8 IPv4 + 8 IPv6 addresses */
#define MX_MAX_SERVERS 8          /* dns_servers entries used */

typedef struct mx_resolver_t mx_resolver_t;

/* servers: [outbound] dns_servers ("ip:port" / "[v6]:port", as the config
 * normalizes them; at most MX_MAX_SERVERS), tried in order, the next on
 * timeout, refusal or SERVFAIL; NULL or empty = the system resolver
 * (/etc/resolv.conf). timeout: bound on one whole mx_resolve call (MX and
 * address lookups); 0 = 30s. Returns PR_EINVAL for a server c-ares cannot
 * parse. Call at startup, from one thread: it initializes the c-ares
 * library. The resolver lives until mx_resolver_destroy or pool cleanup. */
apr_status_t mx_resolver_create(mx_resolver_t **r_r, const pr_strlist_t *servers,
                                apr_interval_time_t timeout, apr_pool_t *pool);
void mx_resolver_destroy(mx_resolver_t *r);

typedef struct mx_host_t {
    const char *name;          /* lower case, no trailing dot */
    int preference;            /* MX preference; 0 for an implicit MX */
    apr_array_header_t *addrs; /* const char *: IP literals, IPv4 first then IPv6;
                                  empty if its lookup failed temporarily */
} mx_host_t;

typedef struct mx_route_t {
    int implicit;              /* no MX records: the domain itself (RFC 5321 5.1) */
    apr_array_header_t *hosts; /* mx_host_t *: lowest preference first, equal
                                  preferences shuffled; never empty, and at least
                                  one host has addresses */
} mx_route_t;

/* domain: as in an address after '@' (any case, an optional trailing dot);
 * not an address literal. *route_r is set only on APR_SUCCESS. */
apr_status_t mx_resolve(mx_resolver_t *r, const char *domain, mx_route_t **route_r,
                        apr_pool_t *pool);

/* Exposed for tests: the pure part of reading an MX answer. names[i] and
 * prefs[i] are its n records as c-ares gives them ("" = the root, "."),
 * seed drives the shuffle of equal preferences. *hosts_r gets mx_host_t *
 * (addrs empty) in delivery order: names validated and lower-cased,
 * duplicates dropped (the lowest preference kept), at most MX_MAX_HOSTS.
 * Returns PR_ENULLMX when every record is "." (RFC 7505: a single one);
 * "." among other records is skipped (RFC 7505 3 forbids the mix);
 * PR_ETEMPFAIL if no record is usable (n == 0, or only bad names). */
apr_status_t mx_hosts_from_records(apr_array_header_t **hosts_r, const char *const *names,
                                   const int *prefs, int n, apr_uint32_t seed, apr_pool_t *pool);

#endif
