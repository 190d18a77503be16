/* The server: owns the store, directory, TLS contexts, outbound queue and
 * listeners, and wires each configured endpoint to its protocol. */
#include "service/server.h"
#include "directory/directory.h"
#include "service/core/listener.h"
#include "service/core/log.h"
#include "service/core/status.h"
#include "service/core/tls.h"
#include "service/pop3/pop3.h"
#include "service/queue/queue.h"
#include "service/smtp/smtp.h"
#include "service/smtp/srs.h"
#include "service/store/store.h"

#include <apr_strings.h>

struct pr_server_t {
    apr_pool_t *pool;
    const pr_config_t *cfg;
    store_t *store;
    dir_t *dir;
    pr_tls_t *tls;
    smtp_server_t *smtp;
    pop3_server_t *pop3;
    queue_t *queue;
    pr_listener_t *listener;
};

static void server_queue_kick(void *ctx, const char *domain)
{
    queue_kick(ctx, domain);
}

/* One service on each of its endpoints. busy is the protocol's reply to a
 * connection over the limits; name is for the log. */
static apr_status_t server_listen(pr_server_t *srv, const pr_endpoints_t *eps, pr_session_fn fn,
                                  void *service, const char *busy, const char *name,
                                  const char **err_r)
{
    for (int i = 0; i < eps->n; i++) {
        apr_status_t st = pr_listener_add(srv->listener, &eps->v[i], fn, service, busy, err_r);
        if (st != APR_SUCCESS) return st;
        pr_log_info(NULL, "listening on %s:%u (%s)", eps->v[i].host, (unsigned)eps->v[i].port,
                    name);
    }
    return APR_SUCCESS;
}

static apr_status_t server_listen_smtp(pr_server_t *srv, const pr_endpoints_t *eps,
                                       smtp_service_e kind, const char *name, const char **err_r)
{
    return server_listen(srv, eps, smtp_session_run, smtp_server_service(srv->smtp, kind),
                         "421 4.7.0 Too many connections, try again later\r\n", name, err_r);
}

static apr_status_t server_listen_pop3(pr_server_t *srv, const pr_endpoints_t *eps,
                                       pop3_service_e kind, const char *name, const char **err_r)
{
    return server_listen(srv, eps, pop3_session_run, pop3_server_service(srv->pop3, kind),
                         "-ERR [SYS/TEMP] Too many connections, try again later\r\n", name, err_r);
}

apr_status_t pr_server_create(pr_server_t **srv_r, const pr_config_t *cfg, const char **err_r,
                              apr_pool_t *pool)
{
    pr_server_t *srv = apr_pcalloc(pool, sizeof(*srv));
    char buf[160];
    apr_status_t st;
    srv->pool = pool;
    srv->cfg = cfg;

    st = apr_dir_make_recursive(cfg->server.data_dir, APR_FPROT_OS_DEFAULT, pool);
    if (st != APR_SUCCESS) {
        *err_r = apr_psprintf(pool, "cannot create data_dir %s: %s", cfg->server.data_dir,
                              pr_strerror(st, buf, sizeof(buf)));
        return st;
    }
    store_options_t so = {0};
    so.data_dir = cfg->server.data_dir;
    if ((st = store_open(&srv->store, &so, pool)) != APR_SUCCESS) {
        *err_r = apr_psprintf(pool, "cannot open the store in %s: %s", cfg->server.data_dir,
                              pr_strerror(st, buf, sizeof(buf)));
        return st;
    }
    if ((st = dir_open(&srv->dir, cfg, pool)) != APR_SUCCESS) {
        *err_r =
            apr_psprintf(pool, "cannot open the directory: %s", pr_strerror(st, buf, sizeof(buf)));
        return st;
    }
    if ((st = pr_tls_create(&srv->tls, cfg, err_r, pool)) != APR_SUCCESS) return st;
    pr_penalty_t *penalty;
    if ((st = pr_penalty_create(&penalty, pool)) != APR_SUCCESS) {
        *err_r = "cannot create the login penalty table";
        return st;
    }
    smtp_server_create(&srv->smtp, cfg, srv->dir, srv->store, srv->tls, penalty, pool);
    /* SRS addresses are at the first local domain (its MX is us). */
    srs_t *srs;
    const char *srs_domain =
        cfg->server.domains.n > 0 ? cfg->server.domains.v[0] : cfg->server.hostname;
    if ((st = srs_open(&srs, cfg->server.data_dir, srs_domain, pool)) != APR_SUCCESS) {
        *err_r = apr_psprintf(pool, "cannot read or create %s/srs.secret: %s",
                              cfg->server.data_dir, pr_strerror(st, buf, sizeof(buf)));
        return st;
    }
    smtp_server_set_srs(srv->smtp, srs);
    if ((st = queue_create(&srv->queue, cfg, srv->store, srv->dir, srs, err_r, pool)) !=
        APR_SUCCESS)
        return st;
    smtp_server_set_queue(srv->smtp, server_queue_kick, srv->queue);
    if ((st = pop3_server_create(&srv->pop3, cfg, srv->dir, srv->store, srv->tls, penalty, pool)) !=
        APR_SUCCESS) {
        *err_r = "cannot create the POP3 server";
        return st;
    }

    pr_listener_opts_t lo = {0};
    lo.max_connections = cfg->server.max_connections;
    lo.max_per_address = cfg->server.max_connections_per_address;
    lo.exempt = cfg->server.limit_exempt_networks.v;
    lo.n_exempt = cfg->server.limit_exempt_networks.n;
    if ((st = pr_listener_create(&srv->listener, &lo, pool)) != APR_SUCCESS) {
        *err_r = "cannot create the listener";
        return st;
    }
    if ((st = server_listen_smtp(srv, &cfg->smtp.listen, SMTP_SERVICE_MX, "smtp", err_r)) ||
        (st = server_listen_smtp(srv, &cfg->smtp.submission, SMTP_SERVICE_SUBMISSION, "submission",
                                 err_r)) ||
        (st = server_listen_smtp(srv, &cfg->smtp.smtps, SMTP_SERVICE_SMTPS, "smtps", err_r)) ||
        (st = server_listen_pop3(srv, &cfg->pop3.listen, POP3_SERVICE_PLAIN, "pop3", err_r)) ||
        (st = server_listen_pop3(srv, &cfg->pop3.pop3s, POP3_SERVICE_POP3S, "pop3s", err_r)) ||
        /* POP2 (RFC 937): only where [pop2] listen names endpoints; off by default. */
        (st = server_listen(srv, &cfg->pop2.listen, pop2_session_run,
                            pop3_server_service(srv->pop3, POP3_SERVICE_POP2),
                            "- Too many connections\r\n", "pop2", err_r)))
        return st;
    *srv_r = srv;
    return APR_SUCCESS;
}

apr_status_t pr_server_start(pr_server_t *srv)
{
    apr_status_t st = queue_start(srv->queue);
    if (st == APR_SUCCESS) st = pr_listener_start(srv->listener);
    if (st == APR_SUCCESS) pr_log_info(NULL, "postroomd ready (%s)", srv->cfg->server.hostname);
    return st;
}

apr_status_t pr_server_reload(pr_server_t *srv, const char **err_r)
{
    pr_config_t *cfg;
    char buf[160];
    /* Each reload's config lives as long as the server: sessions and the
     * directory may still point into an older one. */
    apr_status_t st = pr_config_load(&cfg, srv->cfg->path, err_r, srv->pool);
    if (st != APR_SUCCESS) return st;
    if ((st = pr_tls_reload(srv->tls, cfg, err_r)) != APR_SUCCESS) return st;
    if ((st = dir_reload(srv->dir, cfg)) != APR_SUCCESS) {
        *err_r = apr_psprintf(srv->pool, "directory reload failed: %s",
                              pr_strerror(st, buf, sizeof(buf)));
        return st;
    }
    pr_log_info(NULL, "reloaded TLS certificate and directory settings from %s", cfg->path);
    return APR_SUCCESS;
}

void pr_server_stop(pr_server_t *srv)
{
    pr_log_info(NULL, "stopping: no new connections, finishing transactions in flight");
    int left = pr_listener_stop(srv->listener, srv->cfg->server.shutdown_grace);
    if (left) {
        /* Their committed mail is durable; closing the store under them is not safe. */
        pr_log_warn(NULL, "%d sessions still running at shutdown; exiting anyway", left);
        return;
    }
    queue_stop(srv->queue);
    store_close(srv->store);
    dir_close(srv->dir);
    pr_tls_destroy(srv->tls);
    pr_log_info(NULL, "stopped");
}
