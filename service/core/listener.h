/* Listeners and the sessions they accept: bind, accept, enforce
 * max_connections and the per-address limit, run each session on its own
 * small-stack thread, and stop gracefully (stop accepting, wake idle
 * sessions, let transactions in flight finish). Knows nothing of mail. */
#ifndef PR_LISTENER_H
#define PR_LISTENER_H

#include <apr_pools.h>
#include "service/core/conn.h"
#include "service/core/netaddr.h"

typedef struct pr_listener_t pr_listener_t;

typedef struct pr_session_t {
    const char *sid;        /* short unique id for logs */
    apr_pool_t *pool;       /* lives as long as the connection */
    pr_conn_t *conn;
    const char *peer_ip;
    apr_port_t peer_port;
    const char *local_ip;
    apr_port_t local_port;
    void *service;          /* the ctx given to pr_listener_add */
    /* Set by the protocol while a transaction is in flight: shutdown lets it
     * finish instead of waking the session. */
    volatile apr_uint32_t busy; /* pr_session_set_busy only */
    /* private */
    pr_listener_t *owner;
    struct pr_session_t *next, *prev;   /* the live sessions */
    struct pr_session_t *handoff_next;  /* waiting for a spare thread */
    apr_socket_t *sock;
} pr_session_t;

typedef void (*pr_session_fn)(pr_session_t *s);

typedef struct pr_listener_opts_t {
    int max_connections;
    int max_per_address;
    const pr_cidr_t *exempt; /* networks without a per-address limit */
    int n_exempt;
} pr_listener_opts_t;

apr_status_t pr_listener_create(pr_listener_t **l_r, const pr_listener_opts_t *opts,
                                apr_pool_t *pool);
/* Bind one endpoint. busy_reply is written (as is) to connections refused for
 * a limit, e.g. "421 4.7.0 Too many connections\r\n". */
apr_status_t pr_listener_add(pr_listener_t *l, const pr_endpoint_t *ep, pr_session_fn fn,
                             void *service, const char *busy_reply, const char **err_r);
/* The port actually bound for endpoint i in order of adding (port 0 binds). */
apr_port_t pr_listener_port(pr_listener_t *l, int i);
/* Start the acceptor thread. */
apr_status_t pr_listener_start(pr_listener_t *l);
/* Stop accepting, wake idle sessions, wait up to grace for the rest. Returns
 * the number of sessions still running at the deadline (then woken hard). */
int pr_listener_stop(pr_listener_t *l, apr_interval_time_t grace);
int pr_listener_stopping(pr_listener_t *l);
/* Sessions alive now. */
int pr_listener_sessions(pr_listener_t *l);

/* Mark a session busy/idle (see pr_session_t.busy); when it turns idle during
 * shutdown it is told to stop. Returns non-zero if the server is stopping. */
int pr_session_set_busy(pr_session_t *s, int busy);
int pr_session_stopping(const pr_session_t *s);

#endif
