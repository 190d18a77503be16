/* The SMTP server's face: one server object shared by the MX (25),
 * submission (587) and implicit-TLS (465) listeners, and the session entry
 * point the listener runs for each connection. */
#ifndef PR_SMTP_H
#define PR_SMTP_H

#include <apr_pools.h>
#include "directory/directory.h"
#include "service/core/config.h"
#include "service/core/listener.h"
#include "service/core/penalty.h"
#include "service/core/tls.h"
#include "service/store/store.h"

#define SMTP_MAX_ERRORS_DEFAULT 10
/* RFC 5321 6.3: a message with this many Received: fields is looping; it
 * is refused at the end of the data with 554 5.4.6 and nothing is stored. */
#define SMTP_MAX_HOPS 100

typedef enum {
    SMTP_SERVICE_MX = 0,     /* port 25: receive for local domains, relay_networks */
    SMTP_SERVICE_SUBMISSION, /* port 587: STARTTLS, AUTH required */
    SMTP_SERVICE_SMTPS,      /* port 465: implicit TLS, AUTH required */
} smtp_service_e;

typedef struct smtp_server_t smtp_server_t;

typedef struct smtp_service_t {
    smtp_server_t *server;
    smtp_service_e kind;
} smtp_service_t;

/* penalty: failed AUTH per client address, shared with the other protocols
 * so that guessing over POP3 and SMTP counts together. The server counts,
 * per authenticated user and UTC calendar day, the outside recipients
 * relayed ([outbound] max_recipients_per_day; past it RCPT gets 450 4.7.1,
 * and the first refusal of the day is logged as a warning). The counts
 * are in memory: a restart forgets them. */
apr_status_t smtp_server_create(smtp_server_t **srv_r, const pr_config_t *cfg, dir_t *dir,
                                store_t *store, pr_tls_t *tls, pr_penalty_t *penalty,
                                apr_pool_t *pool);
/* The outbound queue's kick: called once mail for remote recipients is
 * queued (domain NULL), and for ETRN (RFC 1985) with the domain asked
 * for (lower case), when that domain has pending recipients. Without it
 * queued mail waits for the queue's next look, and ETRN answers 458. */
typedef void (*smtp_queue_kick_fn)(void *ctx, const char *domain);
void smtp_server_set_queue(smtp_server_t *srv, smtp_queue_kick_fn kick, void *ctx);

/* Forwarding outside (an alias or list member elsewhere, or a relay
 * client's foreign sender): the queued copy's envelope sender is rewritten
 * with SRS when the sender's domain is not local, and RCPT to an SRS
 * address of ours (a bounce of such mail) is accepted from anyone and
 * queued back to the original sender. NULL: no rewriting. */
typedef struct srs_t srs_t;
void smtp_server_set_srs(smtp_server_t *srv, srs_t *srs);

/* A service record to hand to pr_listener_add with smtp_session_run. */
smtp_service_t *smtp_server_service(smtp_server_t *srv, smtp_service_e kind);

/* Run one SMTP session on s->conn until QUIT, error, timeout or shutdown;
 * s->service is a smtp_service_t*. */
void smtp_session_run(pr_session_t *s);

#endif
