/* TLS server contexts over OpenSSL: load the configured certificate, or
 * generate a self-signed one in data_dir at first start; minimum version
 * from config (TLS 1.2 by default); replaced whole on SIGHUP while sessions
 * keep the context they started with (reference counted). Client contexts
 * for outbound SMTP, verifying or opportunistic. */
#ifndef PR_TLS_H
#define PR_TLS_H

#include <apr_pools.h>
#include "service/core/config.h"

typedef struct pr_tls_ctx_t pr_tls_ctx_t;
typedef struct pr_tls_t pr_tls_t; /* the holder of the current context */

/* Build the holder from config; *err_r says why on failure. */
apr_status_t pr_tls_create(pr_tls_t **t_r, const pr_config_t *cfg, const char **err_r,
                           apr_pool_t *pool);
/* Rebuild the context from (new) config; the old one lives on until released. */
apr_status_t pr_tls_reload(pr_tls_t *t, const pr_config_t *cfg, const char **err_r);
/* Take a reference to the current context; release it when done. */
pr_tls_ctx_t *pr_tls_acquire(pr_tls_t *t);
void pr_tls_release(pr_tls_ctx_t *ctx);
void pr_tls_destroy(pr_tls_t *t);

/* Client contexts, for outbound SMTP (RFC 3207 STARTTLS, RFC 8314 implicit
 * TLS toward a relay). Opportunistic TLS toward MX hosts (RFC 7435) takes
 * any certificate: encryption without authentication beats plain text, and
 * most MX certificates would not verify against the MX name anyway. A relay
 * the admin names is verified: chain against ca_file or the system store,
 * and the host name (pr_conn_start_tls_client). */
typedef struct pr_tls_client_opts_t {
    int verify;          /* 0: any certificate; 1: chain and host name must verify */
    const char *ca_file; /* with verify: PEM bundle; NULL or "": the system store */
    int min_version;     /* TLS1_2_VERSION etc.; 0: TLS 1.2 */
} pr_tls_client_opts_t;

/* A client context owned by pool (one reference, released with it); each
 * connection using it takes its own. *err_r says why on failure. */
apr_status_t pr_tls_client_ctx_create(pr_tls_ctx_t **ctx_r, const pr_tls_client_opts_t *opts,
                                      const char **err_r, apr_pool_t *pool);
/* Take one more reference to a context (release with pr_tls_release). */
pr_tls_ctx_t *pr_tls_ctx_ref(pr_tls_ctx_t *ctx);
/* Does the context verify the peer (a client context with verify)? */
int pr_tls_ctx_verifies(const pr_tls_ctx_t *ctx);

/* Used by conn.c: the OpenSSL SSL_CTX* behind a context. */
void *pr_tls_ctx_ssl(pr_tls_ctx_t *ctx);

#endif
