/* Endpoints ("addr:port", "[v6]:port") and CIDR networks for the config
 * file (RFC 4632 prefixes, RFC 4291 section 2.2 text forms, RFC 3986 section
 * 3.2.2 brackets), and matching of peers against them, IPv4-mapped IPv6
 * peers (RFC 4291 section 2.5.5.2) included so dual-stack sockets still
 * match IPv4 relay networks. */
#include "service/core/netaddr.h"
#include "service/core/status.h"

#include <apr_strings.h>
#include <string.h>

#ifdef _WIN32
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

/* APR_INET6 exists only when APR was built with IPv6; the networks parse
 * either way so a config stays valid on such a build. */
#ifdef APR_INET6
#define PR_INET6 APR_INET6
#else
#define PR_INET6 AF_INET6
#endif

static const unsigned char v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Strict decimal: digits only (no sign, no spaces), at most maxdigits. */
static int parse_decimal(const char *s, size_t len, size_t maxdigits, long *out)
{
    long v = 0;
    if (len == 0 || len > maxdigits) return 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* A DNS name as a listener host: letters, digits, hyphens, dots; labels of
 * 1..63 characters not starting or ending with a hyphen (RFC 1123 2.1). */
static int host_name_valid(const char *s, size_t len)
{
    size_t label = 0;
    int all_numeric = 1;
    if (len == 0 || len > 253) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-') return 0;
            label = 0;
            continue;
        }
        if (c == '-') {
            if (label == 0) return 0;
        } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
            return 0;
        }
        if (!(c >= '0' && c <= '9')) all_numeric = 0;
        if (++label > 63) return 0;
    }
    if (label == 0 || s[len - 1] == '-') return 0;
    /* "300.1.1.1" or "10.1" look like addresses, so they must be valid ones:
     * resolving them as names would surprise everybody. */
    if (all_numeric) {
        struct in_addr a4;
        char buf[16];
        if (len >= sizeof(buf)) return 0;
        memcpy(buf, s, len);
        buf[len] = '\0';
        return inet_pton(AF_INET, buf, &a4) == 1;
    }
    return 1;
}

apr_status_t pr_endpoint_parse(pr_endpoint_t *ep, const char *text, apr_pool_t *pool)
{
    const char *host, *colon;
    size_t hostlen;
    long port;

    if (!text || !*text) return PR_EINVAL;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        char buf[INET6_ADDRSTRLEN + 1];
        struct in6_addr a6;
        if (!close || close[1] != ':') return PR_EINVAL;
        host = text + 1;
        hostlen = (size_t)(close - host);
        if (hostlen == 0 || hostlen >= sizeof(buf)) return PR_EINVAL;
        memcpy(buf, host, hostlen);
        buf[hostlen] = '\0';
        if (inet_pton(AF_INET6, buf, &a6) != 1) return PR_EINVAL;
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon) return PR_EINVAL;
        host = text;
        hostlen = (size_t)(colon - text);
        /* A bare IPv6 address is ambiguous with the port separator. */
        if (memchr(host, ':', hostlen)) return PR_EINVAL;
        if (!host_name_valid(host, hostlen)) return PR_EINVAL;
    }
    if (!parse_decimal(colon + 1, strlen(colon + 1), 5, &port) || port < 1 || port > 65535)
        return PR_EINVAL;
    ep->host = apr_pstrmemdup(pool, host, hostlen);
    ep->port = (apr_port_t)port;
    return APR_SUCCESS;
}

static void cidr_clear_host_bits(pr_cidr_t *c)
{
    int bytes = c->family == APR_INET ? 4 : 16;
    for (int i = 0; i < bytes; i++) {
        int bits = c->prefix - i * 8;
        if (bits >= 8) continue;
        c->addr[i] &= bits <= 0 ? 0 : (unsigned char)(0xff << (8 - bits));
    }
}

apr_status_t pr_cidr_parse(pr_cidr_t *c, const char *text)
{
    char buf[INET6_ADDRSTRLEN + 1];
    const char *slash;
    size_t alen;
    long prefix = -1;

    if (!text) return PR_EINVAL;
    slash = strchr(text, '/');
    alen = slash ? (size_t)(slash - text) : strlen(text);
    if (alen == 0 || alen >= sizeof(buf)) return PR_EINVAL;
    memcpy(buf, text, alen);
    buf[alen] = '\0';
    if (slash && !parse_decimal(slash + 1, strlen(slash + 1), 3, &prefix)) return PR_EINVAL;

    memset(c, 0, sizeof(*c));
    if (inet_pton(AF_INET, buf, c->addr) == 1) {
        c->family = APR_INET;
        if (prefix > 32) return PR_EINVAL;
        c->prefix = prefix < 0 ? 32 : (int)prefix;
    } else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
        c->family = PR_INET6;
        if (prefix > 128) return PR_EINVAL;
        c->prefix = prefix < 0 ? 128 : (int)prefix;
    } else {
        return PR_EINVAL;
    }
    cidr_clear_host_bits(c);
    return APR_SUCCESS;
}

static int prefix_equal(const unsigned char *a, const unsigned char *b, int prefix)
{
    int full = prefix / 8, rest = prefix % 8;
    if (memcmp(a, b, (size_t)full) != 0) return 0;
    if (rest == 0) return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

/* addr: 4 or 16 bytes (alen). An IPv4 address is compared with IPv4 nets
 * directly and with IPv6 nets as ::ffff:a.b.c.d; a mapped IPv6 address is
 * compared with IPv6 nets as it is and with IPv4 nets by its last 4 bytes. */
static int match_bytes(const pr_cidr_t *nets, int n, const unsigned char *addr, size_t alen)
{
    unsigned char v4[4], v6[16];
    int have_v4 = 0, have_v6 = 0;

    if (alen == 4) {
        memcpy(v4, addr, 4);
        memcpy(v6, v4mapped_prefix, 12);
        memcpy(v6 + 12, addr, 4);
        have_v4 = have_v6 = 1;
    } else if (alen == 16) {
        memcpy(v6, addr, 16);
        have_v6 = 1;
        if (memcmp(addr, v4mapped_prefix, 12) == 0) {
            memcpy(v4, addr + 12, 4);
            have_v4 = 1;
        }
    } else {
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (nets[i].family == APR_INET) {
            if (have_v4 && prefix_equal(nets[i].addr, v4, nets[i].prefix)) return 1;
        } else if (have_v6 && prefix_equal(nets[i].addr, v6, nets[i].prefix)) {
            return 1;
        }
    }
    return 0;
}

int pr_cidr_match_any(const pr_cidr_t *nets, int n, const apr_sockaddr_t *peer)
{
    if (!nets || n <= 0 || !peer || !peer->ipaddr_ptr) return 0;
    if (peer->family == APR_INET && peer->ipaddr_len == 4)
        return match_bytes(nets, n, peer->ipaddr_ptr, 4);
    if (peer->family == PR_INET6 && peer->ipaddr_len == 16)
        return match_bytes(nets, n, peer->ipaddr_ptr, 16);
    return 0;
}

int pr_cidr_match_text(const pr_cidr_t *nets, int n, const char *ip)
{
    unsigned char addr[16];
    if (!nets || n <= 0 || !ip) return 0;
    if (inet_pton(AF_INET, ip, addr) == 1) return match_bytes(nets, n, addr, 4);
    if (inet_pton(AF_INET6, ip, addr) == 1) return match_bytes(nets, n, addr, 16);
    return 0;
}
