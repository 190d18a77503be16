/* TLS server contexts (RFC 8446, RFC 5246 via OpenSSL): the configured
 * certificate or a self-signed one made at first start; TLS 1.2+ unless the
 * admin lowers min_version for old scan-to-mail copiers; swapped atomically
 * on reload while running sessions keep their reference. Client contexts
 * for outbound SMTP: opportunistic (RFC 7435, no verification) or verifying
 * the chain and host name (RFC 6125 via OpenSSL's X509_check_host). */
#include "service/core/tls.h"
#include "service/core/log.h"
#include "service/core/status.h"

#include <apr_atomic.h>
#include <apr_file_info.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

struct pr_tls_ctx_t {
    SSL_CTX *ssl_ctx;
    volatile apr_uint32_t refs;
    int verify; /* client context that verifies the peer */
};

struct pr_tls_t {
    apr_thread_mutex_t *mutex;
    pr_tls_ctx_t *current;
    apr_pool_t *pool;
};

static const char *tls_openssl_error(apr_pool_t *pool)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    if (!e) return "unknown OpenSSL error";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return apr_pstrdup(pool, buf);
}

/* Write a fresh RSA key (widest client support, old copiers included) and a
 * self-signed certificate for hostname, valid ten years. */
static apr_status_t tls_self_sign(const char *cert_path, const char *key_path, const char *hostname,
                                  const char **err_r, apr_pool_t *pool)
{
    apr_status_t rv = PR_ETLS;
    EVP_PKEY *pkey = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    X509_EXTENSION *ext = NULL;
    FILE *f = NULL;
    unsigned char serial[16];

    if (!pkey || !x) goto fail;
    X509_set_version(x, 2);
    RAND_bytes(serial, sizeof(serial));
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3650L * 24 * 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)hostname, -1, -1,
                               0);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                               (const unsigned char *)"Postroom self-signed", -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
                              apr_psprintf(pool, "DNS:%s", hostname));
    if (ext) X509_add_ext(x, ext, -1);
    if (!X509_sign(x, pkey, EVP_sha256())) goto fail;

    mode_t old = umask(077);
    f = fopen(key_path, "w");
    umask(old);
    if (!f || !PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL)) goto fail_io;
    if (fclose(f) != 0) {
        f = NULL;
        goto fail_io;
    }
    f = fopen(cert_path, "w");
    if (!f || !PEM_write_X509(f, x)) goto fail_io;
    if (fclose(f) != 0) {
        f = NULL;
        goto fail_io;
    }
    f = NULL;
    rv = APR_SUCCESS;
    goto done;
fail_io:
    *err_r =
        apr_psprintf(pool, "cannot write self-signed certificate %s / %s", cert_path, key_path);
    goto done;
fail:
    *err_r = apr_psprintf(pool, "cannot generate certificate: %s", tls_openssl_error(pool));
done:
    if (f) fclose(f);
    X509_EXTENSION_free(ext);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rv;
}

static apr_status_t tls_ctx_build(pr_tls_ctx_t **ctx_r, const pr_config_t *cfg, const char **err_r,
                                  apr_pool_t *pool)
{
    const char *cert = cfg->tls.certificate, *key = cfg->tls.key;
    apr_finfo_t fi;

    if (!cert || !*cert) {
        const char *dir = apr_pstrcat(pool, cfg->server.data_dir, "/tls", NULL);
        cert = apr_pstrcat(pool, dir, "/cert.pem", NULL);
        key = apr_pstrcat(pool, dir, "/key.pem", NULL);
        if (apr_stat(&fi, cert, APR_FINFO_TYPE, pool) != APR_SUCCESS) {
            apr_status_t st = apr_dir_make_recursive(dir, APR_FPROT_OS_DEFAULT, pool);
            if (st != APR_SUCCESS) {
                *err_r = apr_psprintf(pool, "cannot create %s", dir);
                return st;
            }
            st = tls_self_sign(cert, key, cfg->server.hostname, err_r, pool);
            if (st != APR_SUCCESS) return st;
            pr_log_info(NULL, "generated self-signed certificate %s for %s", cert,
                        cfg->server.hostname);
        }
    } else if (!key || !*key) {
        key = cert; /* a PEM holding both */
    }

    SSL_CTX *sc = SSL_CTX_new(TLS_server_method());
    if (!sc) {
        *err_r = tls_openssl_error(pool);
        return PR_ETLS;
    }
    if (cfg->tls.min_version < TLS1_2_VERSION) {
        /* Debian's OpenSSL refuses TLS < 1.2 at security level >= 1; the
         * admin asked for old clients explicitly. */
        SSL_CTX_set_security_level(sc, 0);
        SSL_CTX_set_cipher_list(sc, "DEFAULT:@SECLEVEL=0");
    }
    SSL_CTX_set_min_proto_version(sc, cfg->tls.min_version);
    SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                SSL_OP_NO_COMPRESSION);
    /* Idle sessions must stay small: drop record buffers between reads. */
    SSL_CTX_set_mode(sc, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_id_context(sc, (const unsigned char *)"postroom", 8);
    if (SSL_CTX_use_certificate_chain_file(sc, cert) != 1) {
        *err_r = apr_psprintf(pool, "certificate %s: %s", cert, tls_openssl_error(pool));
        SSL_CTX_free(sc);
        return PR_ETLS;
    }
    if (SSL_CTX_use_PrivateKey_file(sc, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(sc) != 1) {
        *err_r = apr_psprintf(pool, "key %s: %s", key, tls_openssl_error(pool));
        SSL_CTX_free(sc);
        return PR_ETLS;
    }
    pr_tls_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) abort();
    ctx->ssl_ctx = sc;
    ctx->refs = 1;
    *ctx_r = ctx;
    return APR_SUCCESS;
}

apr_status_t pr_tls_create(pr_tls_t **t_r, const pr_config_t *cfg, const char **err_r,
                           apr_pool_t *pool)
{
    pr_tls_t *t = apr_pcalloc(pool, sizeof(*t));
    t->pool = pool;
    apr_status_t st = apr_thread_mutex_create(&t->mutex, APR_THREAD_MUTEX_DEFAULT, pool);
    if (st != APR_SUCCESS) return st;
    st = tls_ctx_build(&t->current, cfg, err_r, pool);
    if (st != APR_SUCCESS) return st;
    *t_r = t;
    return APR_SUCCESS;
}

apr_status_t pr_tls_reload(pr_tls_t *t, const pr_config_t *cfg, const char **err_r)
{
    pr_tls_ctx_t *fresh, *old;
    apr_status_t st = tls_ctx_build(&fresh, cfg, err_r, t->pool);
    if (st != APR_SUCCESS) return st;
    apr_thread_mutex_lock(t->mutex);
    old = t->current;
    t->current = fresh;
    apr_thread_mutex_unlock(t->mutex);
    pr_tls_release(old);
    return APR_SUCCESS;
}

pr_tls_ctx_t *pr_tls_acquire(pr_tls_t *t)
{
    apr_thread_mutex_lock(t->mutex);
    pr_tls_ctx_t *ctx = t->current;
    apr_atomic_inc32(&ctx->refs);
    apr_thread_mutex_unlock(t->mutex);
    return ctx;
}

void pr_tls_release(pr_tls_ctx_t *ctx)
{
    if (ctx && !apr_atomic_dec32(&ctx->refs)) {
        SSL_CTX_free(ctx->ssl_ctx);
        free(ctx);
    }
}

void pr_tls_destroy(pr_tls_t *t)
{
    if (t && t->current) {
        pr_tls_release(t->current);
        t->current = NULL;
    }
}

static apr_status_t tls_client_ctx_cleanup(void *data)
{
    pr_tls_release(data);
    return APR_SUCCESS;
}

apr_status_t pr_tls_client_ctx_create(pr_tls_ctx_t **ctx_r, const pr_tls_client_opts_t *opts,
                                      const char **err_r, apr_pool_t *pool)
{
    SSL_CTX *sc = SSL_CTX_new(TLS_client_method());
    if (!sc) {
        *err_r = tls_openssl_error(pool);
        return PR_ETLS;
    }
    int min = opts->min_version ? opts->min_version : TLS1_2_VERSION;
    if (min < TLS1_2_VERSION) {
        SSL_CTX_set_security_level(sc, 0);
        SSL_CTX_set_cipher_list(sc, "DEFAULT:@SECLEVEL=0");
    }
    SSL_CTX_set_min_proto_version(sc, min);
    SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(sc, SSL_MODE_RELEASE_BUFFERS);
    if (opts->verify) {
        int ok = opts->ca_file && *opts->ca_file
                     ? SSL_CTX_load_verify_locations(sc, opts->ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(sc);
        if (ok != 1) {
            *err_r =
                apr_psprintf(pool, "CA %s: %s",
                             opts->ca_file && *opts->ca_file ? opts->ca_file : "(system store)",
                             tls_openssl_error(pool));
            SSL_CTX_free(sc);
            return PR_ETLS;
        }
        SSL_CTX_set_verify(sc, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(sc, SSL_VERIFY_NONE, NULL);
    }
    pr_tls_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) abort();
    ctx->ssl_ctx = sc;
    ctx->refs = 1;
    ctx->verify = opts->verify != 0;
    apr_pool_cleanup_register(pool, ctx, tls_client_ctx_cleanup, apr_pool_cleanup_null);
    *ctx_r = ctx;
    return APR_SUCCESS;
}

pr_tls_ctx_t *pr_tls_ctx_ref(pr_tls_ctx_t *ctx)
{
    apr_atomic_inc32(&ctx->refs);
    return ctx;
}

int pr_tls_ctx_verifies(const pr_tls_ctx_t *ctx)
{
    return ctx->verify;
}

void *pr_tls_ctx_ssl(pr_tls_ctx_t *ctx)
{
    return ctx->ssl_ctx;
}
