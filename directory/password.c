/* Password hashing for the local directory: scrypt (RFC 7914) through
 * OpenSSL, stored as a PHC-style string
 * "$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>" (unpadded base64). */
#include "directory/directory.h"
#include "service/core/fiber.h"
#include "service/core/status.h"

#include <apr_encode.h>
#include <apr_strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>

/* Defaults for new hashes: N = 2^14, r = 8, p = 1 costs ~16 MiB and tens of
 * milliseconds, the interactive-login figure from the scrypt paper. */
#define PW_LN 14
#define PW_R 8
#define PW_P 1
#define PW_SALT_LEN 16
#define PW_HASH_LEN 32

/* Bounds on what verify accepts: a stored string is data, and a tampered one
 * must not make a login allocate gigabytes or spin for minutes, nor pass
 * with a trivially weak cost. */
#define PW_LN_MIN 10
#define PW_LN_MAX 20
#define PW_R_MAX 32
#define PW_P_MAX 16
#define PW_MEM_MAX (256u * 1024 * 1024)
#define PW_BIN_MIN 16
#define PW_BIN_MAX 64
#define PW_B64_MAX 88 /* unpadded base64 of PW_BIN_MAX bytes is 86 */

typedef struct pw_params_t {
    unsigned ln, r, p;
} pw_params_t;

static int pw_params_sane(const pw_params_t *pp)
{
    if (pp->ln < PW_LN_MIN || pp->ln > PW_LN_MAX) return 0;
    if (pp->r < 1 || pp->r > PW_R_MAX || pp->p < 1 || pp->p > PW_P_MAX) return 0;
    /* scrypt's working memory is about 128 * r * (N + p) bytes. */
    apr_uint64_t mem = 128ull * pp->r * ((1ull << pp->ln) + pp->p);
    return mem <= PW_MEM_MAX;
}

static int pw_scrypt(unsigned char *out, size_t outlen, const char *password,
                     const unsigned char *salt, size_t saltlen, const pw_params_t *pp)
{
    apr_uint64_t maxmem = 128ull * pp->r * ((1ull << pp->ln) + pp->p + 2) + 65536;
    return EVP_PBE_scrypt(password, strlen(password), salt, saltlen, (uint64_t)1 << pp->ln, pp->r,
                          pp->p, maxmem, out, outlen) == 1;
}

apr_status_t dir_password_hash(const char **hash_r, const char *password, apr_pool_t *pool)
{
    unsigned char salt[PW_SALT_LEN], hash[PW_HASH_LEN];
    const pw_params_t pp = {PW_LN, PW_R, PW_P};

    if (!password) return PR_EINVAL;
    if (RAND_bytes(salt, sizeof(salt)) != 1) return PR_ETEMPFAIL;
    if (!pw_scrypt(hash, sizeof(hash), password, salt, sizeof(salt), &pp)) return PR_ETEMPFAIL;
    const char *s64 =
        apr_pencode_base64_binary(pool, salt, sizeof(salt), APR_ENCODE_NOPADDING, NULL);
    const char *h64 =
        apr_pencode_base64_binary(pool, hash, sizeof(hash), APR_ENCODE_NOPADDING, NULL);
    OPENSSL_cleanse(hash, sizeof(hash));
    *hash_r = apr_psprintf(pool, "$scrypt$ln=%u,r=%u,p=%u$%s$%s", pp.ln, pp.r, pp.p, s64, h64);
    return APR_SUCCESS;
}

/* "name=<decimal>" at *s, up to three digits, no leading zero; advances *s. */
static int pw_parse_param(const char **s, const char *name, unsigned *out)
{
    size_t n = strlen(name);
    const char *q = *s;
    unsigned v = 0;
    int digits = 0;

    if (strncmp(q, name, n) != 0 || q[n] != '=') return 0;
    q += n + 1;
    if (*q == '0') return 0;
    while (*q >= '0' && *q <= '9') {
        if (++digits > 3) return 0;
        v = v * 10 + (unsigned)(*q++ - '0');
    }
    if (!digits) return 0;
    *out = v;
    *s = q;
    return 1;
}

/* Decode one '$'-terminated (or NUL-terminated) base64 field into buf.
 * Only the canonical unpadded encoding is accepted, so a string has exactly
 * one spelling and tampering with it cannot go unnoticed. */
static int pw_parse_b64(const char **s, char end, unsigned char *buf, apr_size_t *len_r)
{
    const char *q = *s;
    const char *e = strchr(q, end);
    char again[PW_B64_MAX + 4];
    apr_size_t n, len, elen;

    if (!e) return 0;
    n = (apr_size_t)(e - q);
    if (n == 0 || n > PW_B64_MAX) return 0;
    if (apr_decode_base64_binary(buf, q, (apr_ssize_t)n, APR_ENCODE_NONE, &len) != APR_SUCCESS)
        return 0;
    if (len < PW_BIN_MIN || len > PW_BIN_MAX) return 0;
    if (apr_encode_base64_binary(again, buf, (apr_ssize_t)len, APR_ENCODE_NOPADDING, &elen) !=
            APR_SUCCESS ||
        elen != n || memcmp(again, q, n) != 0)
        return 0;
    *len_r = len;
    *s = e + (end ? 1 : 0);
    return 1;
}

static apr_status_t password_verify_now(const char *hash, const char *password)
{
    unsigned char salt[PW_BIN_MAX], want[PW_BIN_MAX], got[PW_BIN_MAX];
    apr_size_t saltlen, wantlen;
    pw_params_t pp;
    const char *s = hash;
    apr_status_t st = PR_EAUTH;

    if (!hash || !password) return PR_EAUTH;
    if (strncmp(s, "$scrypt$", 8) != 0) return PR_EAUTH;
    s += 8;
    if (!pw_parse_param(&s, "ln", &pp.ln) || *s++ != ',') return PR_EAUTH;
    if (!pw_parse_param(&s, "r", &pp.r) || *s++ != ',') return PR_EAUTH;
    if (!pw_parse_param(&s, "p", &pp.p) || *s++ != '$') return PR_EAUTH;
    if (!pw_params_sane(&pp)) return PR_EAUTH;
    if (!pw_parse_b64(&s, '$', salt, &saltlen)) return PR_EAUTH;
    /* Exactly the length we store: scrypt's shorter outputs are prefixes of
     * the full one, so a truncated hash would still "match". */
    if (!pw_parse_b64(&s, '\0', want, &wantlen) || wantlen != PW_HASH_LEN) return PR_EAUTH;
    if (!pw_scrypt(got, wantlen, password, salt, saltlen, &pp)) return PR_ETEMPFAIL;
    if (CRYPTO_memcmp(got, want, wantlen) == 0) st = APR_SUCCESS;
    OPENSSL_cleanse(got, sizeof(got));
    return st;
}

typedef struct password_verify_t {
    const char *hash, *password;
    apr_status_t st;
} password_verify_t;

static void password_verify_job(void *arg)
{
    password_verify_t *v = arg;
    v->st = password_verify_now(v->hash, v->password);
}

/* scrypt takes tens of milliseconds: a session on an event loop has it done
 * on a helper thread, so the other sessions of its loop do not wait. */
apr_status_t dir_password_verify(const char *hash, const char *password)
{
    password_verify_t v = {hash, password, PR_EAUTH};
    pr_fiber_blocking(password_verify_job, &v);
    return v.st;
}
