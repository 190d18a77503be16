/* TLS server contexts over OpenSSL: load the configured certificate, or
 * generate a self-signed one in data_dir at first start; minimum version
 * from config (TLS 1.2 by default); replaced whole on SIGHUP while sessions
 * keep the context they started with (reference counted). */
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

/* Used by conn.c: the OpenSSL SSL_CTX* behind a context. */
void *pr_tls_ctx_ssl(pr_tls_ctx_t *ctx);

#endif
