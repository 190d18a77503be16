/* MX resolution for outbound delivery: RFC 5321 5.1 (MX by preference, equal
 * preferences in random order, implicit MX from A/AAAA when there are no MX
 * records), RFC 7505 (null MX), RFC 2181 10.3 (an MX target that turns out
 * to be a CNAME is followed anyway, leniently). DNS through c-ares, one
 * channel per call driven with poll(), so calls on several threads never
 * share c-ares state and no fd is limited by FD_SETSIZE. */
#include "service/queue/mx.h"
#include "service/core/status.h"

#include <apr_general.h>
#include <apr_hash.h>
#include <apr_strings.h>
/* The API of c-ares 1.18 (Debian 12); c-ares >= 1.28 keeps it but marks it
 * deprecated, which -Werror would turn into a build failure. */
#define CARES_NO_DEPRECATED
#include <ares.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#define poll WSAPoll
#define MX_EINTR WSAEINTR
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#define MX_EINTR EINTR
#endif

#define DNS_CLASS_IN 1
#define DNS_TYPE_A 1
#define DNS_TYPE_MX 15
#define DNS_TYPE_AAAA 28

#define MX_DEFAULT_TIMEOUT apr_time_from_sec(30)
#define MX_MAX_RECORDS 1024 /* MX records read from one answer */
/* One try at one server: a share of the whole timeout, so that a dead first
 * server leaves time for the next ones in both rounds (MX, then addresses). */
#define MX_TRY_MIN_MS 100
#define MX_TRY_MAX_MS 5000
#define MX_TRIES 4

struct mx_resolver_t {
    apr_pool_t *pool;
    const char *servers; /* c-ares CSV; NULL = system resolver */
    int nservers;
    apr_interval_time_t timeout;
    int try_ms;
    int alive; /* ares_library_init done, not yet cleaned up */
};

/* What one query found. */
typedef enum {
    LK_PENDING = 0,
    LK_FOUND,    /* records of the type asked for */
    LK_NODATA,   /* the name exists, no record of that type */
    LK_NXDOMAIN, /* no such name */
    LK_TEMP      /* SERVFAIL, REFUSED, timeout, network or parse error */
} lookup_e;

typedef struct call_t {
    ares_channel ch;
    int pending;      /* queries sent and not yet answered */
    apr_pool_t *pool; /* results */
    apr_pool_t *tmp;  /* this call only */
    /* MX round */
    lookup_e mx;
    apr_array_header_t *mx_names; /* const char * as c-ares gives them */
    apr_array_header_t *mx_prefs; /* int */
} call_t;

typedef struct addr_query_t {
    call_t *call;
    mx_host_t *host;
    int family; /* AF_INET or AF_INET6 */
    lookup_e out;
    apr_array_header_t *addrs; /* const char * of this family */
} addr_query_t;

static lookup_e lookup_from_ares(int status)
{
    switch (status) {
    case ARES_SUCCESS:
        return LK_FOUND;
    case ARES_ENODATA:
        return LK_NODATA;
    case ARES_ENOTFOUND:
        return LK_NXDOMAIN;
    default: /* ESERVFAIL, EREFUSED, ETIMEOUT, ECONNREFUSED, EBADRESP, ECANCELLED, ... */
        return LK_TEMP;
    }
}

static apr_status_t resolver_cleanup(void *data)
{
    mx_resolver_t *r = data;
    if (r->alive) {
        r->alive = 0;
        ares_library_cleanup();
    }
    return APR_SUCCESS;
}

/* A channel for one call: the configured servers, or the system's. */
static apr_status_t channel_open(ares_channel *ch_r, const mx_resolver_t *r)
{
    struct ares_options opt;
    int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    memset(&opt, 0, sizeof(opt));
    opt.timeout = r->try_ms;
    opt.tries = MX_TRIES;
    if (r->servers) {
        /* Only DNS: the queries below never consult /etc/hosts anyway, but
         * say so, so a test's hosts file can never answer for its servers. */
        opt.lookups = (char *)"b";
        mask |= ARES_OPT_LOOKUPS;
    }
    if (ares_init_options(ch_r, &opt, mask) != ARES_SUCCESS) return PR_ETEMPFAIL;
    if (r->servers && ares_set_servers_ports_csv(*ch_r, r->servers) != ARES_SUCCESS) {
        ares_destroy(*ch_r);
        return PR_EINVAL;
    }
    return APR_SUCCESS;
}

apr_status_t mx_resolver_create(mx_resolver_t **r_r, const pr_strlist_t *servers,
                                apr_interval_time_t timeout, apr_pool_t *pool)
{
    mx_resolver_t *r = apr_pcalloc(pool, sizeof(*r));
    ares_channel ch;
    apr_status_t st;
    long per_try;

    r->pool = pool;
    r->timeout = timeout > 0 ? timeout : MX_DEFAULT_TIMEOUT;
    if (servers && servers->n > 0) {
        int n = servers->n < MX_MAX_SERVERS ? servers->n : MX_MAX_SERVERS;
        const char *csv = "";
        for (int i = 0; i < n; i++) {
            const char *s = servers->v[i];
            if (!s || !*s || strchr(s, ',')) return PR_EINVAL;
            csv = i ? apr_pstrcat(pool, csv, ",", s, NULL) : apr_pstrdup(pool, s);
        }
        r->servers = csv;
        r->nservers = n;
    }
    /* The system's servers are not known before a channel reads them;
     * resolv.conf usually names one or two. */
    per_try = (long)(apr_time_as_msec(r->timeout) / (2 * (r->nservers ? r->nservers : 2)));
    r->try_ms = (int)(per_try < MX_TRY_MIN_MS   ? MX_TRY_MIN_MS
                      : per_try > MX_TRY_MAX_MS ? MX_TRY_MAX_MS
                                                : per_try);

    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) return PR_ETEMPFAIL;
    r->alive = 1;
    apr_pool_cleanup_register(pool, r, resolver_cleanup, apr_pool_cleanup_null);
    /* Parse the servers once now, so a bad one is a startup error. */
    st = channel_open(&ch, r);
    if (st != APR_SUCCESS) {
        apr_pool_cleanup_run(pool, r, resolver_cleanup);
        return st;
    }
    ares_destroy(ch);
    *r_r = r;
    return APR_SUCCESS;
}

void mx_resolver_destroy(mx_resolver_t *r)
{
    if (r) apr_pool_cleanup_run(r->pool, r, resolver_cleanup);
}

/* Runs the channel until no query is pending or the deadline passes; then
 * cancels what is left (its callbacks see ARES_ECANCELLED). */
static void channel_run(call_t *c, apr_time_t deadline)
{
    while (c->pending > 0) {
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        struct pollfd pfd[ARES_GETSOCK_MAXNUM];
        unsigned bits;
        int n = 0, rc;
        struct timeval maxtv, tv, *tvp;
        apr_time_t left = deadline - apr_time_now();
        long ms;

        if (left <= 0) break;
        /* bit i: socks[i] readable, bit 16 + i: writable (the ARES_GETSOCK_
         * macros shift a signed 1 into bit 31, undefined behaviour) */
        bits = (unsigned)ares_getsock(c->ch, socks, ARES_GETSOCK_MAXNUM);
        for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
            short ev = 0;
            if ((bits >> i) & 1u) ev |= POLLIN;
            if ((bits >> (i + ARES_GETSOCK_MAXNUM)) & 1u) ev |= POLLOUT;
            if (!ev) continue;
            pfd[n].fd = socks[i];
            pfd[n].events = ev;
            pfd[n].revents = 0;
            n++;
        }
        maxtv.tv_sec = (long)apr_time_sec(left);
        maxtv.tv_usec = (long)apr_time_usec(left);
        tvp = ares_timeout(c->ch, &maxtv, &tv);
        ms = tvp->tv_sec * 1000L + (tvp->tv_usec + 999) / 1000;
        if (n == 0 && ms == 0) ms = 1; /* nothing to wait on: let c-ares time out */
        rc = poll(pfd, (unsigned)n, (int)ms);
        if (rc < 0) {
#ifdef _WIN32
            int err = WSAGetLastError();
#else
            int err = errno;
#endif
            if (err == MX_EINTR) continue;
            break;
        }
        if (rc == 0) {
            ares_process_fd(c->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
            continue;
        }
        for (int i = 0; i < n; i++) {
            short re = pfd[i].revents;
            if (!re) continue;
            ares_process_fd(c->ch,
                            (re & (POLLIN | POLLERR | POLLHUP)) ? pfd[i].fd : ARES_SOCKET_BAD,
                            (re & (POLLOUT | POLLERR)) ? pfd[i].fd : ARES_SOCKET_BAD);
        }
    }
    if (c->pending > 0) ares_cancel(c->ch);
}

static void mx_callback(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    call_t *c = arg;
    struct ares_mx_reply *mx = NULL;
    int rc;
    (void)timeouts;
    c->pending--;
    c->mx = lookup_from_ares(status);
    if (c->mx != LK_FOUND) return;
    rc = ares_parse_mx_reply(abuf, alen, &mx);
    if (rc != ARES_SUCCESS) {
        /* ENODATA: an answer without MX records in it (e.g. only a CNAME) */
        c->mx = rc == ARES_ENODATA ? LK_NODATA : LK_TEMP;
        if (mx) ares_free_data(mx);
        return;
    }
    for (struct ares_mx_reply *m = mx; m && c->mx_names->nelts < MX_MAX_RECORDS; m = m->next) {
        APR_ARRAY_PUSH(c->mx_names, const char *) = apr_pstrdup(c->tmp, m->host ? m->host : "");
        APR_ARRAY_PUSH(c->mx_prefs, int) = m->priority;
    }
    ares_free_data(mx);
    if (c->mx_names->nelts == 0) c->mx = LK_NODATA;
}

/* Addresses a client must never be sent to whatever DNS says: "this
 * host" (0.0.0.0/8, ::), which connect() takes as the local machine, and
 * multicast/broadcast. Loopback stays: tests, and local relays. */
static int addr_usable(int family, const unsigned char *a)
{
    /* IPv4: not 0/8, nor 224/4 multicast, class E or broadcast */
    if (family == AF_INET) return a[0] != 0 && a[0] < 224;
    /* IPv6: not ::, nor ff00::/8 multicast */
    for (int i = 0; i < 16; i++)
        if (a[i]) return a[0] != 0xff;
    return 0;
}

static void addr_callback(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    addr_query_t *q = arg;
    char buf[64];
    int n = MX_MAX_ADDRS_PER_FAMILY, rc;
    (void)timeouts;
    q->call->pending--;
    q->out = lookup_from_ares(status);
    if (q->out != LK_FOUND) return;
    if (q->family == AF_INET) {
        struct ares_addrttl ttl[MX_MAX_ADDRS_PER_FAMILY];
        rc = ares_parse_a_reply(abuf, alen, NULL, ttl, &n);
        for (int i = 0; rc == ARES_SUCCESS && i < n; i++) {
            if (!addr_usable(AF_INET, (const unsigned char *)&ttl[i].ipaddr)) continue;
            if (ares_inet_ntop(AF_INET, &ttl[i].ipaddr, buf, sizeof(buf)))
                APR_ARRAY_PUSH(q->addrs, const char *) = apr_pstrdup(q->call->pool, buf);
        }
    } else {
        struct ares_addr6ttl ttl[MX_MAX_ADDRS_PER_FAMILY];
        rc = ares_parse_aaaa_reply(abuf, alen, NULL, ttl, &n);
        for (int i = 0; rc == ARES_SUCCESS && i < n; i++) {
            if (!addr_usable(AF_INET6, (const unsigned char *)&ttl[i].ip6addr)) continue;
            if (ares_inet_ntop(AF_INET6, &ttl[i].ip6addr, buf, sizeof(buf)))
                APR_ARRAY_PUSH(q->addrs, const char *) = apr_pstrdup(q->call->pool, buf);
        }
    }
    if (rc == ARES_ENODATA || (rc == ARES_SUCCESS && n == 0))
        q->out = LK_NODATA;
    else if (rc != ARES_SUCCESS)
        q->out = LK_TEMP;
}

/* Case-insensitive, without a trailing dot, syntax-checked (pr_parse_domain);
 * NULL if unusable. */
static const char *host_name(const char *name, apr_pool_t *pool)
{
    size_t len = strlen(name);
    const char *out;
    if (len > 0 && name[len - 1] == '.') name = apr_pstrmemdup(pool, name, len - 1);
    if (pr_parse_domain(&out, name, pool) != APR_SUCCESS) return NULL;
    return out;
}

typedef struct {
    mx_host_t *host;
    apr_uint32_t key; /* random: order among equal preferences */
} ranked_t;

static int ranked_cmp(const void *a, const void *b)
{
    const ranked_t *x = a, *y = b;
    if (x->host->preference != y->host->preference)
        return x->host->preference < y->host->preference ? -1 : 1;
    return x->key < y->key ? -1 : x->key > y->key;
}

static apr_uint32_t xorshift32(apr_uint32_t *s)
{
    apr_uint32_t x = *s ? *s : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

apr_status_t mx_hosts_from_records(apr_array_header_t **hosts_r, const char *const *names,
                                   const int *prefs, int n, apr_uint32_t seed, apr_pool_t *pool)
{
    apr_hash_t *seen = apr_hash_make(pool);
    apr_array_header_t *hosts;
    ranked_t *rank;
    int m = 0, null = 0;

    if (n > MX_MAX_RECORDS) n = MX_MAX_RECORDS;
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], "") == 0 || strcmp(names[i], ".") == 0) null++;
    if (n > 0 && null == n) return PR_ENULLMX;
    rank = apr_pcalloc(pool, sizeof(*rank) * (n ? n : 1));
    for (int i = 0; i < n; i++) {
        const char *name = host_name(names[i], pool); /* "" and "." fail here */
        mx_host_t *h;
        if (!name || prefs[i] < 0 || prefs[i] > 65535) continue;
        h = apr_hash_get(seen, name, APR_HASH_KEY_STRING);
        if (h) {
            if (prefs[i] < h->preference) h->preference = prefs[i];
            continue;
        }
        h = apr_pcalloc(pool, sizeof(*h));
        h->name = name;
        h->preference = prefs[i];
        h->addrs = apr_array_make(pool, 2, sizeof(const char *));
        apr_hash_set(seen, name, APR_HASH_KEY_STRING, h);
        rank[m].host = h;
        rank[m].key = xorshift32(&seed);
        m++;
    }
    if (m == 0) return PR_ETEMPFAIL;
    qsort(rank, (size_t)m, sizeof(*rank), ranked_cmp);
    if (m > MX_MAX_HOSTS) m = MX_MAX_HOSTS;
    hosts = apr_array_make(pool, m, sizeof(mx_host_t *));
    for (int i = 0; i < m; i++)
        APR_ARRAY_PUSH(hosts, mx_host_t *) = rank[i].host;
    *hosts_r = hosts;
    return APR_SUCCESS;
}

static addr_query_t *addr_query_send(call_t *c, mx_host_t *h, int family, apr_pool_t *tmp)
{
    addr_query_t *q = apr_pcalloc(tmp, sizeof(*q));
    q->call = c;
    q->host = h;
    q->family = family;
    q->addrs = apr_array_make(tmp, MX_MAX_ADDRS_PER_FAMILY, sizeof(const char *));
    c->pending++;
    ares_query(c->ch, h->name, DNS_CLASS_IN, family == AF_INET ? DNS_TYPE_A : DNS_TYPE_AAAA,
               addr_callback, q);
    return q;
}

/* Looks up every host's A and AAAA at once; fills addrs (IPv4 first), drops
 * hosts known to have no address. Returns APR_SUCCESS if some host has an
 * address, PR_ETEMPFAIL if none has but a lookup failed temporarily,
 * PR_ENOTFOUND if all are known to have none. */
static apr_status_t resolve_hosts(call_t *c, apr_array_header_t *hosts, apr_time_t deadline,
                                  apr_pool_t *tmp)
{
    int n = hosts->nelts, found = 0, temp = 0, kept = 0;
    addr_query_t **q = apr_pcalloc(tmp, sizeof(*q) * 2 * (n ? n : 1));
    for (int i = 0; i < n; i++) {
        mx_host_t *h = APR_ARRAY_IDX(hosts, i, mx_host_t *);
        q[2 * i] = addr_query_send(c, h, AF_INET, tmp);
        q[2 * i + 1] = addr_query_send(c, h, AF_INET6, tmp);
    }
    channel_run(c, deadline);
    for (int i = 0; i < n; i++) {
        mx_host_t *h = APR_ARRAY_IDX(hosts, i, mx_host_t *);
        int host_temp = 0;
        for (int k = 0; k < 2; k++) {
            addr_query_t *a = q[2 * i + k];
            if (a->out == LK_PENDING || a->out == LK_TEMP) host_temp = 1;
            for (int j = 0; j < a->addrs->nelts; j++)
                APR_ARRAY_PUSH(h->addrs, const char *) = APR_ARRAY_IDX(a->addrs, j, const char *);
        }
        if (h->addrs->nelts > 0)
            found = 1;
        else if (host_temp)
            temp = 1;
        else
            continue; /* no such host, or no address: nothing to try */
        APR_ARRAY_IDX(hosts, kept, mx_host_t *) = h;
        kept++;
    }
    hosts->nelts = kept;
    return found ? APR_SUCCESS : temp ? PR_ETEMPFAIL : PR_ENOTFOUND;
}

static apr_uint32_t random_seed(void)
{
    apr_uint32_t seed;
    if (apr_generate_random_bytes((unsigned char *)&seed, sizeof(seed)) != APR_SUCCESS)
        seed = (apr_uint32_t)apr_time_now() ^ (apr_uint32_t)(apr_uintptr_t)&seed;
    return seed;
}

apr_status_t mx_resolve(mx_resolver_t *r, const char *domain, mx_route_t **route_r,
                        apr_pool_t *pool)
{
    apr_time_t deadline = apr_time_now() + r->timeout;
    apr_pool_t *tmp;
    call_t c;
    const char *name;
    apr_array_header_t *hosts = NULL;
    mx_route_t *route;
    apr_status_t st;

    if (!domain || !(name = host_name(domain, pool))) return PR_EINVAL;
    memset(&c, 0, sizeof(c));
    st = channel_open(&c.ch, r);
    if (st != APR_SUCCESS) return st == PR_EINVAL ? PR_ETEMPFAIL : st;
    apr_pool_create(&tmp, pool);
    c.pool = pool;
    c.tmp = tmp;
    c.mx_names = apr_array_make(tmp, 4, sizeof(const char *));
    c.mx_prefs = apr_array_make(tmp, 4, sizeof(int));

    c.pending++;
    ares_query(c.ch, name, DNS_CLASS_IN, DNS_TYPE_MX, mx_callback, &c);
    channel_run(&c, deadline);

    route = apr_pcalloc(pool, sizeof(*route));
    switch (c.mx) {
    case LK_FOUND:
        st = mx_hosts_from_records(&hosts, (const char *const *)c.mx_names->elts,
                                   (const int *)c.mx_prefs->elts, c.mx_names->nelts, random_seed(),
                                   pool);
        if (st == APR_SUCCESS) st = resolve_hosts(&c, hosts, deadline, tmp);
        break;
    case LK_NODATA: { /* RFC 5321 5.1: the domain is its own MX, preference 0 */
        mx_host_t *h = apr_pcalloc(pool, sizeof(*h));
        h->name = name;
        h->addrs = apr_array_make(pool, 2, sizeof(const char *));
        hosts = apr_array_make(pool, 1, sizeof(mx_host_t *));
        APR_ARRAY_PUSH(hosts, mx_host_t *) = h;
        route->implicit = 1;
        st = resolve_hosts(&c, hosts, deadline, tmp);
        break;
    }
    case LK_NXDOMAIN:
        st = PR_ENOTFOUND;
        break;
    default:
        st = PR_ETEMPFAIL;
        break;
    }
    ares_destroy(c.ch); /* nothing pending: channel_run cancelled what was left */
    apr_pool_destroy(tmp);
    if (st != APR_SUCCESS) return st;
    route->hosts = hosts;
    *route_r = route;
    return APR_SUCCESS;
}
