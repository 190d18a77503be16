/* Network addresses for configuration: "addr:port" endpoints and CIDR
 * networks (RFC 4632, RFC 4291 text forms), matched against peers. */
#ifndef PR_NETADDR_H
#define PR_NETADDR_H

#include <apr_network_io.h>
#include <apr_pools.h>

typedef struct pr_endpoint_t {
    const char *host; /* literal address or name, without brackets */
    apr_port_t port;
} pr_endpoint_t;

typedef struct pr_cidr_t {
    int family;              /* APR_INET or APR_INET6 */
    unsigned char addr[16];  /* network address, host bits cleared */
    int prefix;              /* 0..32 or 0..128 */
} pr_cidr_t;

/* "127.0.0.1:25", "[::1]:25", "localhost:25"; port is required (1..65535). */
apr_status_t pr_endpoint_parse(pr_endpoint_t *ep, const char *text, apr_pool_t *pool);

/* "10.0.0.0/8", "::1/128", "192.0.2.7" (a single host). */
apr_status_t pr_cidr_parse(pr_cidr_t *c, const char *text);

/* Is the peer in any of the n networks? IPv4-mapped IPv6 peers match IPv4 nets. */
int pr_cidr_match_any(const pr_cidr_t *nets, int n, const apr_sockaddr_t *peer);

/* Same for a textual IP address; 0 if text is not an IP address. */
int pr_cidr_match_text(const pr_cidr_t *nets, int n, const char *ip);

#endif
