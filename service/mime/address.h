/* Mail addresses: RFC 5321 4.1.2 paths as they appear in MAIL/RCPT (with
 * RFC 6531 UTF-8 when allowed) and RFC 5322 3.4 address lists in headers
 * (From:). Parsers have limits and never trust the input. */
#ifndef PR_ADDRESS_H
#define PR_ADDRESS_H

#include <apr_pools.h>
#include <apr_tables.h>

#define PR_ADDR_MAX_LOCAL 64    /* RFC 5321 4.5.3.1.1 */
#define PR_ADDR_MAX_DOMAIN 255  /* RFC 5321 4.5.3.1.2 */
#define PR_ADDR_MAX_PATH 256    /* RFC 5321 4.5.3.1.3, with the brackets */

typedef struct pr_path_t {
    int null;           /* "<>" */
    const char *local;  /* local part as written (quoted form keeps its quotes) */
    const char *domain; /* domain as written, or "[literal]" */
    const char *address;/* "local@domain" as written ("" for null) */
    int quoted;         /* local part is a quoted string */
    int literal;        /* domain is an address literal [..] */
    int route;          /* an obsolete source route "@a,@b:" was present (ignored) */
    int utf8;           /* contains non-ASCII octets */
} pr_path_t;

/* Parse a Reverse-path or Forward-path including the angle brackets, e.g.
 * "<user@example.test>" or "<>" (allow_null) or "<@a.test:u@b.test>".
 * *end_r: the first byte after '>'. Non-ASCII only when allow_utf8 (and then it
 * must be valid UTF-8). Returns APR_SUCCESS or PR_EINVAL.
 * A forward-path (!allow_null) may also be "<postmaster>" (any case, RFC 5321
 * 4.1.1.3): local and address "postmaster", domain NULL. */
apr_status_t pr_path_parse(pr_path_t *p, const char *text, apr_size_t len, int allow_null,
                           int allow_utf8, const char **end_r, apr_pool_t *pool);

/* The addr-specs in an RFC 5322 address-list header value (From:, Sender:),
 * unfolded or not, with display names, comments, groups; const char* of
 * "local@domain" as written. PR_EINVAL if malformed or none can be found.
 * At most 100: more is PR_ETOOMANY (none dropped silently, so a check of
 * every address cannot be bypassed). */
apr_status_t pr_header_addresses(const char *value, apr_size_t len,
                                 apr_array_header_t **addrs_r, apr_pool_t *pool);

/* Is s (len bytes) valid UTF-8 (no overlongs, no surrogates)? */
int pr_utf8_valid(const char *s, apr_size_t len);

#endif
