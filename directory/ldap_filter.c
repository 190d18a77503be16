/* Safe LDAP search filters (RFC 4515) and the small parsers the LDAP
 * backend needs for what the server returns: proxyAddresses-style address
 * values and Active Directory's ranged attribute descriptions. Pure: no
 * LDAP library, no I/O, only pool memory. */
#include "directory/ldap_filter.h"

#include <apr_strings.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

/* ---- escaping */

/* RFC 4515 3: the octets a filter value must escape, plus every control
 * and non-ASCII octet, so a filter is always plain printable text. */
static int dir_ldap_needs_escape(unsigned char c)
{
    return c < 0x20 || c >= 0x7f || c == '*' || c == '(' || c == ')' || c == '\\';
}

const char *dir_ldap_escape(const char *value, apr_size_t len, apr_pool_t *pool)
{
    static const char hex[] = "0123456789abcdef";
    apr_size_t n = 0;
    char *out, *p;

    if (!value) len = 0;
    for (apr_size_t i = 0; i < len; i++)
        n += dir_ldap_needs_escape((unsigned char)value[i]) ? 3 : 1;
    out = p = apr_palloc(pool, n + 1);
    for (apr_size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (dir_ldap_needs_escape(c)) {
            *p++ = '\\';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0x0f];
        } else {
            *p++ = (char)c;
        }
    }
    *p = '\0';
    return out;
}

/* ---- filters */

/* An attribute description (RFC 4512 2.5: a descr or numeric OID, then
 * ";option"s) is letters, digits, '-', '.' and ';'. Names come from the
 * config, but one holding '(' or '=' would still change the filter's
 * structure, so anything else is refused. */
static int dir_ldap_attr_ok(const char *name)
{
    if (!name || !*name) return 0;
    for (const char *p = name; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == ';'))
            return 0;
    }
    return 1;
}

/* dir_ldap_filter_any with alt, when not NULL, as one more branch of the
 * "(|...)": a filter built here from escaped values. */
static const char *dir_ldap_filter_build(const char *objfilter, const pr_strlist_t *attrs,
                                         const char *value, const char *alt, const char *extra,
                                         int negate, apr_pool_t *pool)
{
    apr_array_header_t *parts;
    const char *v, *pv = NULL;

    if (!attrs || attrs->n <= 0 || !attrs->v) return NULL;
    if (!value) value = "";
    v = dir_ldap_escape(value, strlen(value), pool);
    parts = apr_array_make(pool, 8 + 5 * attrs->n, sizeof(const char *));
    APR_ARRAY_PUSH(parts, const char *) = "(&";
    APR_ARRAY_PUSH(parts, const char *) = objfilter ? objfilter : "";
    APR_ARRAY_PUSH(parts, const char *) = "(|";
    for (int i = 0; i < attrs->n; i++) {
        const char *a = attrs->v[i];
        if (!dir_ldap_attr_ok(a)) return NULL;
        APR_ARRAY_PUSH(parts, const char *) = "(";
        APR_ARRAY_PUSH(parts, const char *) = a;
        APR_ARRAY_PUSH(parts, const char *) = "=";
        if (strcasecmp(a, "proxyAddresses") == 0) {
            /* Exchange's "type:address" values; "smtp:" needs no escaping. */
            if (!pv) pv = apr_pstrcat(pool, "smtp:", v, NULL);
            APR_ARRAY_PUSH(parts, const char *) = pv;
        } else {
            APR_ARRAY_PUSH(parts, const char *) = v;
        }
        APR_ARRAY_PUSH(parts, const char *) = ")";
    }
    if (alt) APR_ARRAY_PUSH(parts, const char *) = alt;
    APR_ARRAY_PUSH(parts, const char *) = ")";
    if (extra && *extra) {
        /* RFC 4515 2: not = "!" filter. */
        if (negate) APR_ARRAY_PUSH(parts, const char *) = "(!";
        APR_ARRAY_PUSH(parts, const char *) = extra;
        if (negate) APR_ARRAY_PUSH(parts, const char *) = ")";
    }
    APR_ARRAY_PUSH(parts, const char *) = ")";
    return apr_array_pstrcat(pool, parts, '\0');
}

const char *dir_ldap_filter_any(const char *objfilter, const pr_strlist_t *attrs, const char *value,
                                const char *extra, int negate, apr_pool_t *pool)
{
    return dir_ldap_filter_build(objfilter, attrs, value, NULL, extra, negate, pool);
}

/* Does text hold word, in any case? */
static int dir_ldap_mentions(const char *text, const char *word)
{
    apr_size_t n = strlen(word);
    for (const char *p = text; p && *p; p++)
        if (strncasecmp(p, word, n) == 0) return 1;
    return 0;
}

const char *dir_ldap_filter_list(const char *list_filter, const pr_strlist_t *attrs,
                                 const char *address, apr_pool_t *pool)
{
    const char *alt = NULL, *at = address ? strrchr(address, '@') : NULL;
    if (at && at > address && list_filter && dir_ldap_mentions(list_filter, "nisMailAlias"))
        alt = apr_pstrcat(pool, "(&(objectClass=nisMailAlias)(cn=",
                          dir_ldap_escape(address, (apr_size_t)(at - address), pool), "))", NULL);
    return dir_ldap_filter_build(list_filter, attrs, address, alt, NULL, 0, pool);
}

/* ---- address values */

static int dir_ldap_is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

const char *dir_ldap_address_value(const char *value, int *primary_r, apr_pool_t *pool)
{
    const char *p = value, *first_at = NULL, *last_at = NULL;
    char *out;
    apr_size_t n;

    if (primary_r) *primary_r = 0;
    if (!value) return NULL;
    /* A "type:" prefix is one or more letters or digits then ':' ("SMTP",
     * "X500", "sip", "EUM"...); an address has an '@' or another character
     * before any ':' it may hold, so it is never taken for one. */
    while (dir_ldap_is_alnum((unsigned char)*p))
        p++;
    if (*p == ':' && p > value) {
        if (p - value != 4 || strncasecmp(value, "smtp", 4) != 0) return NULL;
        if (primary_r) *primary_r = strncmp(value, "SMTP", 4) == 0;
        value = p + 1;
    }
    n = strlen(value);
    out = apr_pstrmemdup(pool, value, n);
    for (apr_size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c <= 0x20 || c == 0x7f) goto bad;
        if (c >= 'A' && c <= 'Z') out[i] = (char)(c - 'A' + 'a');
        if (c == '@') {
            if (!first_at) first_at = out + i;
            last_at = out + i;
        }
    }
    /* The last '@' separates the domain (a local part may hold one only
     * when quoted, RFC 5321 4.1.2), but no reading may leave an empty
     * local part or domain: "@@x" and "x@@" are refused too. */
    if (!first_at || first_at == out || last_at[1] == '\0') goto bad;
    return out;
bad:
    if (primary_r) *primary_r = 0;
    return NULL;
}

/* ---- ranged retrieval */

/* Decimal digits (no sign, no space) at *pp into *n_r; advances *pp. 0 if
 * there are none or the number does not fit a long. */
static int dir_ldap_parse_ulong(const char **pp, long *n_r)
{
    const char *p = *pp;
    long n = 0;

    if (*p < '0' || *p > '9') return 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        int d = *p - '0';
        if (n > (LONG_MAX - d) / 10) return 0;
        n = n * 10 + d;
    }
    *pp = p;
    *n_r = n;
    return 1;
}

int dir_ldap_parse_range(const char *desc, const char *attr, long *next_r)
{
    static const char opt[] = ";range=";
    const char *p;
    apr_size_t na;
    long lo, hi;

    if (!desc || !attr || !*attr) return 0;
    na = strlen(attr);
    if (strncasecmp(desc, attr, na) != 0) return 0;
    p = desc + na;
    /* "attr;range=LOW-HIGH" or "attr;range=LOW-*" (AD's ranged retrieval;
     * option names compare without regard to case, RFC 4512 2.5). */
    if (strncasecmp(p, opt, sizeof(opt) - 1) != 0) return 0;
    p += sizeof(opt) - 1;
    if (!dir_ldap_parse_ulong(&p, &lo) || *p++ != '-') return 0;
    if (p[0] == '*' && p[1] == '\0') {
        if (next_r) *next_r = -1;
        return 1;
    }
    /* hi + 1 must fit too. */
    if (!dir_ldap_parse_ulong(&p, &hi) || *p != '\0' || hi < lo || hi == LONG_MAX) return 0;
    if (next_r) *next_r = hi + 1;
    return 1;
}
