/* Safe LDAP search filters (RFC 4515) for the LDAP backend: every value that
 * came from a client is escaped; attribute names come only from the config. */
#ifndef PR_LDAP_FILTER_H
#define PR_LDAP_FILTER_H
#include <apr_pools.h>
#include "service/core/config.h" /* pr_strlist_t */

/* RFC 4515 3: value with '*', '(', ')', '\\' and NUL (and, to keep log lines
 * and filters plain, every octet < 0x20 or >= 0x7f) written as \\XX (two hex
 * digits, lower case). len bytes of value (may contain NUL). */
const char *dir_ldap_escape(const char *value, apr_size_t len, apr_pool_t *pool);

/* "(&" objfilter "(|(a1=v1)(a2=v2)...))": an object matching objfilter with
 * any of attrs equal to value (escaped here). For the attribute
 * proxyAddresses (any case) the value searched is "smtp:" + value (AD
 * matches it case-insensitively, so it finds "SMTP:" primaries too).
 * extra, when not NULL or "", is ANDed in as well, negated when negate is
 * non-zero: used for "(!disabled_filter)". objfilter and extra are trusted
 * config text and are inserted as they are. NULL if attrs is empty. */
const char *dir_ldap_filter_any(const char *objfilter, const pr_strlist_t *attrs, const char *value,
                                const char *extra, int negate, apr_pool_t *pool);

/* The list an address "local@domain" names: dir_ldap_filter_any(list_filter,
 * attrs, address) and, when list_filter mentions nisMailAlias (the
 * openldap preset's does), one more branch of the "(|...)":
 * "(&(objectClass=nisMailAlias)(cn=local))". Such an entry has no mail
 * attribute: its cn is the local part, as in /etc/aliases, valid in every
 * local domain (the backend is only asked about local addresses). One
 * search finds either. NULL if attrs is empty. */
const char *dir_ldap_filter_list(const char *list_filter, const pr_strlist_t *attrs,
                                 const char *address, apr_pool_t *pool);

/* An address from an address attribute value: for proxyAddresses-style
 * values "smtp:x" / "SMTP:x" gives x; other prefixed types ("X500:...",
 * "sip:...") give NULL; a value without a "type:" prefix is returned as it
 * is. *primary_r (may be NULL) is set to 1 for "SMTP:" (upper case). The
 * result is lower-cased. NULL also if the result is not a plausible address
 * (no '@', or empty local part or domain, or any octet <= 0x20 or 0x7f). */
const char *dir_ldap_address_value(const char *value, int *primary_r, apr_pool_t *pool);

/* AD's ranged attribute retrieval (member;range=0-1499): parse an attribute
 * description returned by the server, e.g. "member;range=0-1499" or
 * "member;range=1500-*". Returns 1 and sets *next_r to the next start
 * (1500), or -1 in *next_r when the range ended with '*' (the last chunk);
 * returns 0 if desc is not a range description of attribute attr (compare
 * the attribute name case-insensitively). */
int dir_ldap_parse_range(const char *desc, const char *attr, long *next_r);

#endif
