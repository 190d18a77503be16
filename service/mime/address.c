/* Mail address parsing: RFC 5321 4.1.2 Reverse-path/Forward-path (with the
 * 4.1.3 address literals, the 4.1.1.3 <postmaster> exception, the 4.5.3.1
 * size limits and the RFC 6531 3.3 UTF-8 extensions), RFC 5322 3.4 address
 * lists with the 4.4 obsolete forms, and RFC 3629 UTF-8 validation.
 * Everything here reads untrusted bytes: lengths are explicit, nothing is
 * assumed NUL-terminated and nothing recurses on the input. */
#include "service/mime/address.h"
#include "service/core/status.h"

#include <apr_strings.h>
#include <string.h>

#define PR_ADDR_MAX_LABEL 63 /* RFC 1035 2.3.4 */
#define PR_HDR_MAX_ADDRS 100

/* Own ASCII classes: <ctype.h> depends on the locale and on signedness. */
static int addr_alpha(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int addr_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int addr_hex(unsigned char c)
{
    return addr_digit(c) || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

/* RFC 5322 3.2.3 atext (the same set as RFC 5321's Atom characters). */
static int addr_atext(unsigned char c)
{
    return addr_alpha(c) || addr_digit(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

int pr_utf8_valid(const char *s, apr_size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *e = p + len;
    while (p < e) {
        unsigned char c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        apr_size_t n;
        unsigned long cp;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0; /* continuation byte, C0/C1 overlong lead, or beyond U+10FFFF */
        }
        if ((apr_size_t)(e - p) <= n) return 0;
        for (apr_size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        /* RFC 3629 3: shortest form only, no surrogates, nothing past U+10FFFF. */
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        p += n + 1;
    }
    return 1;
}

/* ---- RFC 5321 paths */

/* RFC 5321 4.1.2 Domain: LDH labels (RFC 6531 3.3: or U-labels). Returns the
 * end of the domain, or NULL. */
static const char *path_domain(const char *s, const char *lim, int utf8)
{
    const char *start = s;
    for (;;) {
        const char *l = s;
        int ascii = 1;
        while (s < lim) {
            unsigned char c = (unsigned char)*s;
            if (addr_alpha(c) || addr_digit(c) || c == '-') {
                s++;
            } else if (utf8 && c >= 0x80) {
                ascii = 0;
                s++;
            } else {
                break;
            }
        }
        if (s == l || *l == '-' || s[-1] == '-') return NULL;
        /* A U-label's limit applies to its A-label form, which we cannot see
         * without IDNA tables; only ASCII labels are measured. */
        if (ascii && s - l > PR_ADDR_MAX_LABEL) return NULL;
        if (s - start > PR_ADDR_MAX_DOMAIN) return NULL;
        if (s < lim && *s == '.') {
            s++;
            continue;
        }
        return s;
    }
}

/* RFC 5321 4.1.3 IPv4-address-literal: Snum 3("." Snum), Snum 0..255. */
static int path_ipv4(const char *s, const char *e)
{
    for (int i = 0; i < 4; i++) {
        int v = 0, n = 0;
        while (s < e && addr_digit((unsigned char)*s) && n < 3) {
            v = v * 10 + (*s - '0');
            s++;
            n++;
        }
        if (n == 0 || v > 255) return 0;
        if (i < 3) {
            if (s >= e || *s != '.') return 0;
            s++;
        }
    }
    return s == e;
}

/* RFC 5321 4.1.3 IPv6-addr: full, "::"-compressed (at most 6 groups beside
 * the "::"), and both with a trailing IPv4 address counting as 2 groups. */
static int path_ipv6(const char *s, const char *e)
{
    int groups = 0, dbl = 0;
    const char *p = s;
    if (e - p >= 2 && p[0] == ':' && p[1] == ':') {
        dbl = 1;
        p += 2;
        if (p == e) return 1;
    }
    for (;;) {
        const char *g = p;
        while (p < e && p - g < 4 && addr_hex((unsigned char)*p))
            p++;
        if (p < e && *p == '.') {
            if (!path_ipv4(g, e)) return 0;
            groups += 2;
            break;
        }
        if (p == g) return 0;
        groups++;
        if (p == e) break;
        if (*p != ':') return 0;
        p++;
        if (p < e && *p == ':') {
            if (dbl) return 0;
            dbl = 1;
            p++;
            if (p == e) break;
        } else if (p == e) {
            return 0;
        }
    }
    return dbl ? groups <= 6 : groups == 8;
}

/* RFC 5321 4.1.3 address-literal, s at '['. Returns the end after ']'. */
static const char *path_literal(const char *s, const char *lim)
{
    const char *b = s + 1, *e = b;
    while (e < lim && *e != ']')
        e++;
    if (e >= lim || e == b) return NULL;
    if (e - b >= 5 && strncasecmp(b, "IPv6:", 5) == 0) return path_ipv6(b + 5, e) ? e + 1 : NULL;
    if (addr_digit((unsigned char)*b) && !memchr(b, ':', (size_t)(e - b)))
        return path_ipv4(b, e) ? e + 1 : NULL;
    /* General-address-literal: Standardized-tag ":" 1*dcontent */
    const char *t = b;
    while (t < e && (addr_alpha((unsigned char)*t) || addr_digit((unsigned char)*t) || *t == '-'))
        t++;
    if (t == b || t >= e || *t != ':' || t[-1] == '-') return NULL;
    if (t + 1 == e) return NULL;
    for (const char *q = t + 1; q < e; q++) {
        unsigned char c = (unsigned char)*q;
        if (c < 33 || c > 126 || c == '[' || c == '\\') return NULL;
    }
    return e + 1;
}

/* RFC 5321 4.1.2 Local-part; sets *quoted. Returns its end, or NULL. */
static const char *path_local(const char *s, const char *lim, int utf8, int *quoted)
{
    if (s < lim && *s == '"') {
        *quoted = 1;
        s++;
        while (s < lim && *s != '"') {
            unsigned char c = (unsigned char)*s;
            if (c == '\\') {
                /* quoted-pairSMTP = %d92 %d32-126 */
                if (s + 1 >= lim || (unsigned char)s[1] < 32 || (unsigned char)s[1] > 126)
                    return NULL;
                s += 2;
            } else if ((c >= 32 && c <= 126) || (utf8 && c >= 0x80)) {
                s++;
            } else {
                return NULL;
            }
        }
        return s < lim ? s + 1 : NULL;
    }
    /* Dot-string = Atom *("." Atom): no leading, trailing or doubled dots. */
    for (;;) {
        const char *a = s;
        while (s < lim && (addr_atext((unsigned char)*s) || (utf8 && (unsigned char)*s >= 0x80)))
            s++;
        if (s == a) return NULL;
        if (s < lim && *s == '.') {
            s++;
            continue;
        }
        return s;
    }
}

apr_status_t pr_path_parse(pr_path_t *p, const char *text, apr_size_t len, int allow_null,
                           int allow_utf8, const char **end_r, apr_pool_t *pool)
{
    memset(p, 0, sizeof(*p));
    if (!text || len < 2 || text[0] != '<') return PR_EINVAL;
    /* RFC 5321 4.5.3.1.3: the whole path, brackets included, fits in 256. */
    const char *lim = text + (len < PR_ADDR_MAX_PATH ? len : PR_ADDR_MAX_PATH);
    const char *s = text + 1;

    if (*s == '>') {
        if (!allow_null) return PR_EINVAL;
        p->null = 1;
        p->local = p->domain = p->address = "";
        *end_r = s + 1;
        return APR_SUCCESS;
    }
    /* A forward-path may be the bare <postmaster> (RFC 5321 4.1.1.3), which
     * names the postmaster of the receiving host and has no domain. */
    if (!allow_null && lim - s >= 11 && strncasecmp(s, "postmaster>", 11) == 0) {
        p->local = p->address = "postmaster";
        p->domain = NULL;
        *end_r = s + 11;
        return APR_SUCCESS;
    }
    /* A-d-l ":" -- obsolete source route, parsed and then ignored (4.1.1.3). */
    if (*s == '@') {
        for (;;) {
            s = path_domain(s + 1, lim, allow_utf8);
            if (!s || s >= lim) return PR_EINVAL;
            if (*s == ':') break;
            if (*s != ',' || s + 1 >= lim || s[1] != '@') return PR_EINVAL;
            s++;
        }
        s++;
        p->route = 1;
    }
    const char *local = s;
    s = path_local(s, lim, allow_utf8, &p->quoted);
    if (!s || s - local > PR_ADDR_MAX_LOCAL || s >= lim || *s != '@') return PR_EINVAL;
    const char *at = s++;
    if (s >= lim) return PR_EINVAL;
    if (*s == '[') {
        s = path_literal(s, lim);
        p->literal = 1;
    } else {
        s = path_domain(s, lim, allow_utf8);
    }
    if (!s || s >= lim || *s != '>' || s - (at + 1) > PR_ADDR_MAX_DOMAIN) return PR_EINVAL;

    for (const char *q = text; q <= s; q++)
        if ((unsigned char)*q >= 0x80) p->utf8 = 1;
    if (p->utf8 && (!allow_utf8 || !pr_utf8_valid(text, (apr_size_t)(s - text)))) return PR_EINVAL;

    p->local = apr_pstrmemdup(pool, local, (apr_size_t)(at - local));
    p->domain = apr_pstrmemdup(pool, at + 1, (apr_size_t)(s - at - 1));
    p->address = apr_pstrmemdup(pool, local, (apr_size_t)(s - local));
    *end_r = s + 1;
    return APR_SUCCESS;
}

/* ---- RFC 5322 address lists */

typedef enum { T_END, T_ATOM, T_QSTR, T_DLIT, T_SPECIAL } hdr_tok_e;

typedef struct hdr_tok_t {
    hdr_tok_e type;
    const char *s; /* the token as written */
    apr_size_t n;
    char c; /* the special character for T_SPECIAL */
} hdr_tok_t;

typedef struct hdr_parse_t {
    const char *p, *e;
    char *scratch; /* one addr-spec being assembled; input-sized, reused */
    apr_array_header_t *addrs;
    apr_pool_t *pool;
} hdr_parse_t;

/* Octets RFC 5322 never allows in a header value outside quoted-pairs: NUL,
 * controls other than FWS, DEL. Refusing them keeps them out of addresses. */
static int hdr_ctl(unsigned char c)
{
    return (c < 32 && c != '\t' && c != '\r' && c != '\n') || c == 127;
}

static int hdr_wsp(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* RFC 5322 3.2.2 CFWS: whitespace and (nested) comments. The depth is a
 * counter, not recursion, so deep nesting costs nothing. */
static apr_status_t hdr_skip_cfws(hdr_parse_t *h)
{
    while (h->p < h->e) {
        unsigned char c = (unsigned char)*h->p;
        if (hdr_wsp(c)) {
            h->p++;
        } else if (c == '(') {
            apr_size_t depth = 0;
            do {
                c = (unsigned char)*h->p++;
                if (c == '(') {
                    depth++;
                } else if (c == ')') {
                    depth--;
                } else if (c == '\\') {
                    if (h->p >= h->e || *h->p == '\0') return PR_EINVAL;
                    h->p++;
                } else if (hdr_ctl(c)) {
                    return PR_EINVAL;
                }
            } while (depth > 0 && h->p < h->e);
            if (depth > 0) return PR_EINVAL;
        } else {
            break;
        }
    }
    return APR_SUCCESS;
}

/* A delimited token (quoted-string, domain-literal) from the opening char. */
static apr_status_t hdr_delimited(hdr_parse_t *h, char close)
{
    h->p++;
    while (h->p < h->e && *h->p != close) {
        unsigned char c = (unsigned char)*h->p;
        if (c == '\\') {
            if (h->p + 1 >= h->e || hdr_ctl((unsigned char)h->p[1])) return PR_EINVAL;
            h->p += 2;
            continue;
        }
        if (hdr_ctl(c) || (close == ']' && c == '[')) return PR_EINVAL;
        h->p++;
    }
    if (h->p >= h->e) return PR_EINVAL;
    h->p++;
    return APR_SUCCESS;
}

/* The next lexical token after CFWS; does not consume it unless eat. */
static apr_status_t hdr_next(hdr_parse_t *h, hdr_tok_t *t, int eat)
{
    apr_status_t st = hdr_skip_cfws(h);
    if (st != APR_SUCCESS) return st;
    const char *start = h->p;
    memset(t, 0, sizeof(*t));
    t->s = start;
    if (h->p >= h->e) {
        t->type = T_END;
        return APR_SUCCESS;
    }
    unsigned char c = (unsigned char)*h->p;
    if (addr_atext(c) || c >= 0x80) {
        /* RFC 6532 3.2: UTF-8 is atext; validity is checked per address. */
        while (h->p < h->e && (addr_atext((unsigned char)*h->p) || (unsigned char)*h->p >= 0x80))
            h->p++;
        t->type = T_ATOM;
    } else if (c == '"') {
        if ((st = hdr_delimited(h, '"')) != APR_SUCCESS) return st;
        t->type = T_QSTR;
    } else if (c == '[') {
        if ((st = hdr_delimited(h, ']')) != APR_SUCCESS) return st;
        t->type = T_DLIT;
    } else if (strchr("<>:;,@.", c) && c != 0) {
        h->p++;
        t->type = T_SPECIAL;
        t->c = (char)c;
    } else {
        return PR_EINVAL;
    }
    t->n = (apr_size_t)(h->p - start);
    if (!eat) h->p = start;
    return APR_SUCCESS;
}

static int hdr_is(const hdr_tok_t *t, char c)
{
    return t->type == T_SPECIAL && t->c == c;
}

/* Append a token to the scratch buffer, dropping folding CR/LF (and, for
 * domain literals, all FWS) so the result reads as the address was meant. */
static void hdr_put(hdr_parse_t *h, apr_size_t *n, const hdr_tok_t *t)
{
    for (apr_size_t i = 0; i < t->n; i++) {
        char c = t->s[i];
        if (c == '\r' || c == '\n') continue;
        if (t->type == T_DLIT && (c == ' ' || c == '\t')) continue;
        h->scratch[(*n)++] = c;
    }
}

/* addr-spec = local-part "@" domain, with obs-local-part (words and dots
 * with CFWS between) and obs-domain; the result drops the CFWS. */
static apr_status_t hdr_addr_spec(hdr_parse_t *h)
{
    hdr_tok_t t;
    apr_size_t n = 0;
    apr_status_t st;

    for (;;) {
        if ((st = hdr_next(h, &t, 1)) != APR_SUCCESS) return st;
        if (t.type != T_ATOM && t.type != T_QSTR) return PR_EINVAL;
        hdr_put(h, &n, &t);
        if ((st = hdr_next(h, &t, 1)) != APR_SUCCESS) return st;
        if (hdr_is(&t, '@')) break;
        if (!hdr_is(&t, '.')) return PR_EINVAL;
        h->scratch[n++] = '.';
    }
    h->scratch[n++] = '@';
    if ((st = hdr_next(h, &t, 1)) != APR_SUCCESS) return st;
    if (t.type == T_DLIT) {
        hdr_put(h, &n, &t);
    } else {
        for (;;) {
            if (t.type != T_ATOM) return PR_EINVAL;
            hdr_put(h, &n, &t);
            if ((st = hdr_next(h, &t, 0)) != APR_SUCCESS) return st;
            if (!hdr_is(&t, '.')) break;
            hdr_next(h, &t, 1);
            h->scratch[n++] = '.';
            if ((st = hdr_next(h, &t, 1)) != APR_SUCCESS) return st;
        }
    }
    if (!pr_utf8_valid(h->scratch, n)) return PR_EINVAL;
    /* Dropping addresses past the limit would let the rest go unchecked. */
    if (h->addrs->nelts >= PR_HDR_MAX_ADDRS) return PR_ETOOMANY;
    APR_ARRAY_PUSH(h->addrs, const char *) = apr_pstrmemdup(h->pool, h->scratch, n);
    return APR_SUCCESS;
}

/* angle-addr after its "<": [obs-route] addr-spec ">". */
static apr_status_t hdr_angle_addr(hdr_parse_t *h)
{
    hdr_tok_t t;
    apr_status_t st;

    if ((st = hdr_next(h, &t, 0)) != APR_SUCCESS) return st;
    if (hdr_is(&t, '@') || hdr_is(&t, ',')) {
        /* obs-domain-list = *(CFWS / ",") "@" domain *("," [CFWS] ["@" domain]) */
        int seen = 0;
        for (;;) {
            if ((st = hdr_next(h, &t, 1)) != APR_SUCCESS) return st;
            if (hdr_is(&t, ':') && seen) break;
            if (hdr_is(&t, ',')) continue;
            if (!hdr_is(&t, '@')) return PR_EINVAL;
            if ((st = hdr_next(h, &t, 1)) != APR_SUCCESS) return st;
            if (t.type == T_ATOM) {
                for (;;) {
                    if ((st = hdr_next(h, &t, 0)) != APR_SUCCESS) return st;
                    if (!hdr_is(&t, '.')) break;
                    hdr_next(h, &t, 1);
                    if ((st = hdr_next(h, &t, 1)) != APR_SUCCESS) return st;
                    if (t.type != T_ATOM) return PR_EINVAL;
                }
            } else if (t.type != T_DLIT) {
                return PR_EINVAL;
            }
            seen = 1;
        }
    }
    if ((st = hdr_addr_spec(h)) != APR_SUCCESS) return st;
    if ((st = hdr_next(h, &t, 1)) != APR_SUCCESS) return st;
    return hdr_is(&t, '>') ? APR_SUCCESS : PR_EINVAL;
}

/* address = mailbox / group (groups only when !in_group: they do not nest). */
static apr_status_t hdr_address(hdr_parse_t *h, int in_group);

/* The elements of an address-list (or, in_group, of a group-list up to and
 * including its ";"), tolerating the empty elements of obs-addr-list. */
static apr_status_t hdr_list(hdr_parse_t *h, int in_group)
{
    hdr_tok_t t;
    apr_status_t st;

    for (;;) {
        if ((st = hdr_next(h, &t, 0)) != APR_SUCCESS) return st;
        if (t.type == T_END) return in_group ? PR_EINVAL : APR_SUCCESS;
        if (hdr_is(&t, ',')) {
            hdr_next(h, &t, 1);
            continue;
        }
        if (in_group && hdr_is(&t, ';')) {
            hdr_next(h, &t, 1);
            return APR_SUCCESS;
        }
        if ((st = hdr_address(h, in_group)) != APR_SUCCESS) return st;
        if ((st = hdr_next(h, &t, 0)) != APR_SUCCESS) return st;
        if (!(t.type == T_END || hdr_is(&t, ',') || (in_group && hdr_is(&t, ';'))))
            return PR_EINVAL;
    }
}

static apr_status_t hdr_address(hdr_parse_t *h, int in_group)
{
    const char *save = h->p;
    hdr_tok_t t;
    apr_status_t st;
    int words = 0;

    /* Read the phrase (display-name, or the local-part of an addr-spec);
     * what ends it says which production this is. */
    for (;;) {
        if ((st = hdr_next(h, &t, 0)) != APR_SUCCESS) return st;
        if (t.type == T_ATOM || t.type == T_QSTR) {
            words++;
        } else if (hdr_is(&t, '.')) {
            if (words == 0) return PR_EINVAL; /* obs-phrase starts with a word */
        } else {
            break;
        }
        hdr_next(h, &t, 1);
    }
    if (hdr_is(&t, '@')) {
        h->p = save;
        return hdr_addr_spec(h);
    }
    if (hdr_is(&t, '<')) {
        hdr_next(h, &t, 1);
        return hdr_angle_addr(h);
    }
    if (hdr_is(&t, ':') && words > 0 && !in_group) {
        hdr_next(h, &t, 1);
        return hdr_list(h, 1);
    }
    return PR_EINVAL;
}

apr_status_t pr_header_addresses(const char *value, apr_size_t len, apr_array_header_t **addrs_r,
                                 apr_pool_t *pool)
{
    hdr_parse_t h;
    h.p = value;
    h.e = value + len;
    h.pool = pool;
    h.addrs = apr_array_make(pool, 4, sizeof(const char *));
    /* An addr-spec is made of input octets plus at most one '.' per consumed
     * '.' and one '@', so the input length bounds it. */
    h.scratch = apr_palloc(pool, len + 1);
    *addrs_r = h.addrs;
    if (!value) return PR_EINVAL;
    apr_status_t st = hdr_list(&h, 0);
    if (st != APR_SUCCESS) return st;
    return h.addrs->nelts > 0 ? APR_SUCCESS : PR_EINVAL;
}
