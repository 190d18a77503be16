/* libFuzzer harness for the LDAP filter helpers. The first byte picks the
 * function, the rest is its input: escaping must leave no '*', '(', ')',
 * '\\' or NUL but in an escape and must decode back to the input; a filter
 * keeps exactly the structure of its trusted parts whatever the value;
 * address values and range descriptions keep their documented promises. */
#include <apr_general.h>
#include <apr_pools.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "directory/ldap_filter.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    apr_initialize();
    return 0;
}

static int hexval(char h)
{
    if (h >= '0' && h <= '9') return h - '0';
    if (h >= 'a' && h <= 'f') return h - 'a' + 10;
    return -1; /* upper case is not what dir_ldap_escape writes */
}

/* Escaped text: only plain printable octets outside escapes, and the
 * escapes decode back to exactly len bytes of in. */
static void check_escaped(const char *e, const uint8_t *in, size_t len)
{
    size_t n = 0;

    if (!e) abort();
    for (const char *p = e; *p; p++) {
        unsigned char c = (unsigned char)*p;
        unsigned char d;
        if (c == '\\') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
            if (hi < 0 || lo < 0) abort();
            d = (unsigned char)(hi * 16 + lo);
            p += 2;
        } else {
            if (c < 0x20 || c >= 0x7f || c == '*' || c == '(' || c == ')') abort();
            d = c;
        }
        if (n >= len || in[n] != d) abort();
        n++;
    }
    if (n != len) abort();
}

static size_t count_char(const char *s, char c)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

static void fuzz_filter(const uint8_t *data, size_t size, apr_pool_t *pool)
{
    /* The trusted parts come from a fixed set: the config is not fuzzed. */
    static const char *objfilters[] = {"(objectClass=person)", "", NULL,
                                       "(|(objectClass=user)(objectClass=contact))"};
    static const char *extras[] = {NULL, "", "(userAccountControl:1.2.840.113556.1.4.803:=2)",
                                   "(&(a=*)(!(b=c)))"};
    static const char *names[] = {
        "uid", "mail", "proxyAddresses", "PROXYADDRESSES", "userPrincipalName", "cn;lang-de"};
    const char *v[4];
    pr_strlist_t attrs;
    const char *obj, *extra, *f;
    char *value;
    size_t depth = 0, opens = 0, stars;
    int negate;

    if (size < 1) return;
    obj = objfilters[data[0] & 3];
    extra = extras[(data[0] >> 2) & 3];
    negate = (data[0] >> 4) & 1;
    attrs.n = (data[0] >> 5) & 3; /* 0..3; 0 must give NULL */
    for (int i = 0; i < attrs.n; i++)
        v[i] = names[(size_t)(data[0] + i * 7) % (sizeof(names) / sizeof(names[0]))];
    attrs.v = v;
    value = malloc(size);
    if (!value) return;
    memcpy(value, data + 1, size - 1);
    value[size - 1] = '\0';

    f = dir_ldap_filter_any(obj, &attrs, value, extra, negate, pool);
    if (attrs.n == 0) {
        if (f) abort();
        free(value);
        return;
    }
    if (!f) abort();
    /* Balanced, one filter: depth never below zero, zero only at the end. */
    for (const char *p = f; *p; p++) {
        if (*p == '(') {
            depth++;
            opens++;
        } else if (*p == ')') {
            if (depth == 0) abort();
            if (--depth == 0 && p[1] != '\0') abort();
        }
    }
    if (depth != 0 || f[0] != '(') abort();
    /* The structure is that of the trusted parts alone: "(&", "(|", one
     * "(" per attribute, "(!" when negating, and their own. */
    int has_extra = extra && *extra;
    size_t want = 2 + (size_t)attrs.n + (obj ? count_char(obj, '(') : 0) +
                  (has_extra ? count_char(extra, '(') + (negate ? 1 : 0) : 0);
    if (opens != want) abort();
    stars = (obj ? count_char(obj, '*') : 0) + (has_extra ? count_char(extra, '*') : 0);
    if (count_char(f, '*') != stars) abort();
    /* Each attribute's value, escaped, appears after "name=". */
    const char *e = dir_ldap_escape(value, strlen(value), pool);
    check_escaped(e, (const uint8_t *)value, strlen(value));
    for (int i = 0; i < attrs.n; i++) {
        const char *pre = strcasecmp(v[i], "proxyAddresses") == 0 ? "smtp:" : "";
        size_t nn = strlen(v[i]) + strlen(pre) + strlen(e) + 4;
        char *want_s = apr_palloc(pool, nn);
        strcpy(want_s, "(");
        strcat(want_s, v[i]);
        strcat(want_s, "=");
        strcat(want_s, pre);
        strcat(want_s, e);
        strcat(want_s, ")");
        if (!strstr(f, want_s)) abort();
    }
    free(value);
}

static void fuzz_address(const uint8_t *data, size_t size, apr_pool_t *pool)
{
    char *in = malloc(size + 1);
    const char *a;
    int primary = -1;

    if (!in) return;
    memcpy(in, data, size);
    in[size] = '\0';
    a = dir_ldap_address_value(in, &primary, pool);
    if (primary != 0 && primary != 1) abort();
    if (a) {
        const char *at = strrchr(a, '@');
        if (!at || a[0] == '@' || at[1] == '\0' || strlen(a) > strlen(in)) abort();
        for (const char *p = a; *p; p++) {
            unsigned char c = (unsigned char)*p;
            if (c <= 0x20 || c == 0x7f || (c >= 'A' && c <= 'Z')) abort();
        }
        if (primary && strncmp(in, "SMTP:", 5) != 0) abort();
        /* The result is the input or its part after "smtp:", lower-cased. */
        const char *src = strlen(a) == strlen(in) ? in : in + 5;
        if (strcasecmp(src, a) != 0) abort();
    } else if (primary != 0) {
        abort();
    }
    free(in);
}

static void fuzz_range(const uint8_t *data, size_t size)
{
    static const char *attrs[] = {"member", "Member", "memberOf", "m"};
    char *desc;
    long next = 42;
    int r;

    if (size < 1) return;
    desc = malloc(size);
    if (!desc) return;
    memcpy(desc, data + 1, size - 1);
    desc[size - 1] = '\0';
    r = dir_ldap_parse_range(desc, attrs[data[0] & 3], &next);
    if (r == 1) {
        size_t na = strlen(attrs[data[0] & 3]);
        if (next != -1 && next < 1) abort();
        if (strncasecmp(desc, attrs[data[0] & 3], na) != 0 ||
            strncasecmp(desc + na, ";range=", 7) != 0)
            abort();
        if (next == -1 && desc[strlen(desc) - 1] != '*') abort();
    } else if (r != 0 || next != 42) {
        abort();
    }
    free(desc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *pool;

    if (size < 1) return 0;
    if (apr_pool_create(&pool, NULL) != APR_SUCCESS) abort();
    switch (data[0] & 3) {
    case 0:
        check_escaped(dir_ldap_escape((const char *)data + 1, size - 1, pool), data + 1, size - 1);
        break;
    case 1:
        fuzz_filter(data + 1, size - 1, pool);
        break;
    case 2:
        fuzz_address(data + 1, size - 1, pool);
        break;
    default:
        fuzz_range(data + 1, size - 1);
        break;
    }
    apr_pool_destroy(pool);
    return 0;
}
