/* The POP3 (and POP2) server's face: one server object shared by the POP3
 * listeners (STLS on [pop3] listen, implicit TLS on [pop3] pop3s) and the
 * POP2 listener ([pop2] listen, off by default), and the session entry points
 * the listener runs for each connection. */
#ifndef PR_POP3_H
#define PR_POP3_H

#include <apr_pools.h>
#include "directory/directory.h"
#include "service/core/config.h"
#include "service/core/listener.h"
#include "service/core/penalty.h"
#include "service/core/tls.h"
#include "service/store/store.h"

typedef enum {
    POP3_SERVICE_PLAIN = 0, /* port 110: STLS offered */
    POP3_SERVICE_POP3S,     /* port 995: implicit TLS */
    POP3_SERVICE_POP2,      /* port 109: RFC 937 */
} pop3_service_e;

typedef struct pop3_server_t pop3_server_t;

typedef struct pop3_service_t {
    pop3_server_t *server;
    pop3_service_e kind;
} pop3_service_t;

/* penalty: failed logins per client address, shared with SMTP AUTH. */
apr_status_t pop3_server_create(pop3_server_t **srv_r, const pr_config_t *cfg, dir_t *dir,
                                store_t *store, pr_tls_t *tls, pr_penalty_t *penalty,
                                apr_pool_t *pool);
/* A service record to hand to pr_listener_add with the matching entry point. */
pop3_service_t *pop3_server_service(pop3_server_t *srv, pop3_service_e kind);

/* Run one POP3 session on s->conn until QUIT, error, autologout or shutdown;
 * s->service is a pop3_service_t* (PLAIN or POP3S). */
void pop3_session_run(pr_session_t *s);
/* The same for POP2 (s->service kind POP3_SERVICE_POP2). */
void pop2_session_run(pr_session_t *s);
/* POP2 limit: a command line is at most this many octets, CRLF included; a
 * longer one is answered "- Line too long" and skipped to its end. */
#define POP2_LINE_MAX 512

#endif
