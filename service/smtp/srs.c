/* Sender Rewriting Scheme (see srs.h). HMAC-SHA1 via OpenSSL; base64 and
 * base32 as libsrs2 writes them. */
#include "service/smtp/srs.h"
#include "service/core/status.h"

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>
#include <strings.h>

#define SRS_HASH_LEN 4
#define SRS_DAY_SECONDS 86400
#define SRS_TIME_SLOTS 1024 /* two base32 characters */

struct srs_t {
    unsigned char secret[64];
    apr_size_t secret_len;
    const char *domain;
};

static const char srs_base32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

apr_status_t srs_create(srs_t **s_r, const unsigned char *secret, apr_size_t len,
                        const char *domain, apr_pool_t *pool)
{
    if (len < 16 || !domain || !*domain) return PR_EINVAL;
    srs_t *s = apr_pcalloc(pool, sizeof(*s));
    s->secret_len = len > sizeof(s->secret) ? sizeof(s->secret) : len;
    memcpy(s->secret, secret, s->secret_len);
    s->domain = apr_pstrdup(pool, domain);
    *s_r = s;
    return APR_SUCCESS;
}

apr_status_t srs_open(srs_t **s_r, const char *data_dir, const char *domain, apr_pool_t *pool)
{
    const char *path = apr_pstrcat(pool, data_dir, "/srs.secret", NULL);
    unsigned char key[SRS_SECRET_LEN];
    apr_size_t n = sizeof(key);
    apr_file_t *f;
    apr_status_t st = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, pool);
    if (st == APR_SUCCESS) {
        st = apr_file_read_full(f, key, sizeof(key), &n);
        apr_file_close(f);
        if (st != APR_SUCCESS || n != sizeof(key)) return st != APR_SUCCESS ? st : PR_EINVAL;
    } else if (APR_STATUS_IS_ENOENT(st)) {
        /* First start: a new secret, written whole or not at all (EXCL:
         * a second process starting at the same moment reads ours). */
        if ((st = apr_generate_random_bytes(key, sizeof(key))) != APR_SUCCESS) return st;
        const char *tmp = apr_pstrcat(pool, path, ".new", NULL);
        st = apr_file_open(
            &f, tmp, APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_TRUNCATE | APR_FOPEN_BINARY,
            APR_FPROT_UREAD | APR_FPROT_UWRITE, pool);
        if (st != APR_SUCCESS) return st;
        st = apr_file_write_full(f, key, sizeof(key), NULL);
        if (st == APR_SUCCESS) st = apr_file_sync(f);
        apr_file_close(f);
        if (st == APR_SUCCESS) st = apr_file_rename(tmp, path, pool);
        if (st != APR_SUCCESS) return st;
    } else {
        return st;
    }
    st = srs_create(s_r, key, sizeof(key), domain, pool);
    OPENSSL_cleanse(key, sizeof(key));
    return st;
}

/* The 4-character hash of the parts, lower-cased first: some MTAs change
 * the case of local parts on the way back. */
static void srs_hash(const srs_t *s, const char *const *parts, int n, char out[SRS_HASH_LEN + 1])
{
    char data[1024];
    apr_size_t len = 0;
    for (int i = 0; i < n; i++)
        for (const char *p = parts[i]; *p && len < sizeof(data); p++)
            data[len++] = (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (!HMAC(EVP_sha1(), s->secret, (int)s->secret_len, (const unsigned char *)data, len, mac,
              &mac_len))
        mac_len = 0;
    unsigned char b64[((EVP_MAX_MD_SIZE + 2) / 3) * 4 + 1];
    EVP_EncodeBlock(b64, mac, (int)mac_len);
    memcpy(out, b64, SRS_HASH_LEN);
    out[SRS_HASH_LEN] = '\0';
}

static int srs_hash_ok(const srs_t *s, const char *given, const char *const *parts, int n)
{
    char want[SRS_HASH_LEN + 1];
    srs_hash(s, parts, n, want);
    if (strlen(given) != SRS_HASH_LEN) return 0;
    /* Case-insensitively (base64 is not, but MTAs fold case) and in
     * constant time. */
    unsigned diff = 0;
    for (int i = 0; i < SRS_HASH_LEN; i++) {
        unsigned char a = (unsigned char)given[i], b = (unsigned char)want[i];
        if (a >= 'A' && a <= 'Z') a = (unsigned char)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z') b = (unsigned char)(b - 'A' + 'a');
        diff |= (unsigned)(a ^ b);
    }
    return diff == 0;
}

static void srs_stamp(apr_time_t now, char out[3])
{
    unsigned long day = (unsigned long)(apr_time_sec(now) / SRS_DAY_SECONDS) % SRS_TIME_SLOTS;
    out[0] = srs_base32[(day >> 5) & 31];
    out[1] = srs_base32[day & 31];
    out[2] = '\0';
}

/* Days since the stamp was made (mod 1024); -1 if it is no stamp. */
static long srs_stamp_age(const char *tt, apr_time_t now)
{
    if (strlen(tt) != 2) return -1;
    long v = 0;
    for (int i = 0; i < 2; i++) {
        char ch = tt[i];
        if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
        const char *p = strchr(srs_base32, ch);
        if (!ch || !p) return -1;
        v = v * 32 + (long)(p - srs_base32);
    }
    long today = (long)((apr_time_sec(now) / SRS_DAY_SECONDS) % SRS_TIME_SLOTS);
    return (today - v + SRS_TIME_SLOTS) % SRS_TIME_SLOTS;
}

static int srs_prefix(const char *local, const char *tag)
{
    return strncasecmp(local, tag, 4) == 0 &&
           (local[4] == '=' || local[4] == '-' || local[4] == '+');
}

const char *srs_forward(const srs_t *s, const char *sender, apr_time_t now, apr_pool_t *pool)
{
    if (!sender) return NULL;
    if (!*sender) return "";
    const char *at = strrchr(sender, '@');
    if (!at || at == sender || !at[1]) return NULL;
    const char *domain = at + 1;
    /* The domain is a field of the new address: '=' in it (no host name
     * has one) would make it unreadable on the way back. */
    if (strchr(domain, '=')) return NULL;
    char *local = apr_pstrmemdup(pool, sender, (apr_size_t)(at - sender));
    if (strcasecmp(domain, s->domain) == 0) return sender; /* ours already */
    char hash[SRS_HASH_LEN + 1];
    if (srs_prefix(local, "SRS0") && local[4] == '=') {
        /* Forwarding an SRS0 of another forwarder: SRS1 keeps its part
         * whole and names its domain, so a bounce goes back through it. */
        const char *rest = local + 4; /* "=HHHH=TT=domain=local" */
        const char *parts[] = {domain, rest};
        srs_hash(s, parts, 2, hash);
        return apr_pstrcat(pool, "SRS1=", hash, "=", domain, "=", rest, "@", s->domain, NULL);
    }
    char *p = srs_prefix(local, "SRS1") ? local + 5 : NULL;
    char *eq = p ? strchr(p, '=') : NULL;
    char *orig = eq ? strchr(eq + 1, '=') : NULL;
    if (orig && orig > eq + 1 && orig[1] == '=') {
        /* SRS1=HHHH=srsdomain==rest: re-sign, keep the first forwarder.
         * Anything else that merely starts "SRS1=" is an address like any. */
        *orig = '\0';
        const char *srsdomain = eq + 1, *rest = orig + 1;
        const char *parts[] = {srsdomain, rest};
        srs_hash(s, parts, 2, hash);
        return apr_pstrcat(pool, "SRS1=", hash, "=", srsdomain, "=", rest, "@", s->domain, NULL);
    }
    char tt[3];
    srs_stamp(now, tt);
    const char *parts[] = {tt, domain, local};
    srs_hash(s, parts, 3, hash);
    return apr_pstrcat(pool, "SRS0=", hash, "=", tt, "=", domain, "=", local, "@", s->domain, NULL);
}

apr_status_t srs_reverse(const srs_t *s, const char *address, apr_time_t now, const char **orig_r,
                         apr_pool_t *pool)
{
    const char *at = address ? strrchr(address, '@') : NULL;
    if (!at) return PR_ENOTFOUND;
    char *local = apr_pstrmemdup(pool, address, (apr_size_t)(at - address));
    if (srs_prefix(local, "SRS0")) {
        /* =HHHH=TT=domain=local (the original local part may hold '='). */
        char *f[4];
        char *p = local + 5;
        for (int i = 0; i < 3; i++) {
            char *eq = strchr(p, '=');
            if (!eq) return PR_EINVAL;
            *eq = '\0';
            f[i] = p;
            p = eq + 1;
        }
        f[3] = p;
        if (!*f[2] || !*f[3]) return PR_EINVAL;
        const char *parts[] = {f[1], f[2], f[3]};
        if (!srs_hash_ok(s, f[0], parts, 3)) return PR_EAUTH;
        long age = srs_stamp_age(f[1], now);
        if (age < 0) return PR_EINVAL;
        if (age > SRS_MAX_AGE_DAYS) return PR_EPERM;
        *orig_r = apr_pstrcat(pool, f[3], "@", f[2], NULL);
        return APR_SUCCESS;
    }
    if (srs_prefix(local, "SRS1")) {
        /* =HHHH=srsdomain==rest: back to SRS0 rest at srsdomain. */
        char *p = local + 5;
        char *eq = strchr(p, '=');
        if (!eq) return PR_EINVAL;
        *eq = '\0';
        const char *hash = p;
        char *srsdomain = eq + 1;
        char *sep = strchr(srsdomain, '=');
        if (!sep || sep[1] != '=') return PR_EINVAL;
        *sep = '\0';
        const char *rest = sep + 1; /* "=HHHH=TT=domain=local" */
        if (!*srsdomain) return PR_EINVAL;
        const char *parts[] = {srsdomain, rest};
        if (!srs_hash_ok(s, hash, parts, 2)) return PR_EAUTH;
        *orig_r = apr_pstrcat(pool, "SRS0", rest, "@", srsdomain, NULL);
        return APR_SUCCESS;
    }
    return PR_ENOTFOUND;
}
