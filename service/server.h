/* The server's face for the platform glue (unix/, win32/): build everything
 * a config describes (store, directory, TLS, listeners), start, reload on
 * SIGHUP, stop gracefully on SIGTERM. */
#ifndef PR_SERVER_H
#define PR_SERVER_H

#include <apr_pools.h>
#include "service/core/config.h"

typedef struct pr_server_t pr_server_t;

/* Open the store and directory, TLS, and bind every listener. *err_r: why not. */
apr_status_t pr_server_create(pr_server_t **srv_r, const pr_config_t *cfg, const char **err_r,
                              apr_pool_t *pool);
/* Start accepting connections. */
apr_status_t pr_server_start(pr_server_t *srv);
/* Re-read the config file: reload the TLS certificate and directory settings. */
apr_status_t pr_server_reload(pr_server_t *srv, const char **err_r);
/* Stop accepting, let transactions in flight finish (up to shutdown_grace),
 * flush the store, close everything. */
void pr_server_stop(pr_server_t *srv);

#endif
