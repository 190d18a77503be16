/* The outbound queue's face: a scheduler that takes due recipients from
 * the store, groups them by destination (the smarthost, or each domain's
 * MX hosts), and worker threads that deliver one copy per destination with
 * all its recipients in one SMTP transaction, reusing a connection for
 * further messages to the same destination, within [outbound]
 * max_connections and max_connections_per_destination. Outcomes go back
 * to the store with the DSNs (RFC 3464) they cause in the same
 * transaction: 5xx bounces at once, 4xx and connection failures retry on
 * retry_schedule until max_queue_lifetime, with one delay warning after
 * delay_warning_time. Never a bounce for a bounce (null sender). */
#ifndef PR_QUEUE_H
#define PR_QUEUE_H

#include <apr_pools.h>
#include "directory/directory.h"
#include "service/core/config.h"
#include "service/store/store.h"

/* Due recipients fetched per scheduler pass. */
#define QUEUE_BATCH_MAX 1000
/* How often the store is looked at without a kick (a CLI flush, mail
 * queued by another process). */
#define QUEUE_POLL_INTERVAL apr_time_from_msec(1000)

typedef struct queue_t queue_t;

/* cfg, store, dir and srs must outlive the queue. srs (may be NULL): a
 * report about a message forwarded with an SRS sender goes to the original
 * sender directly. *err_r says why on failure
 * (an unreadable smarthost password file, a TLS context). */
typedef struct srs_t srs_t;
apr_status_t queue_create(queue_t **q_r, const pr_config_t *cfg, store_t *store, dir_t *dir,
                          srs_t *srs, const char **err_r, apr_pool_t *pool);
/* Start the scheduler and workers. */
apr_status_t queue_start(queue_t *q);
/* Look at the store now: new mail was queued (domain NULL), or ETRN
 * (RFC 1985) asked for domain's recipients, which are made due now. */
void queue_kick(queue_t *q, const char *domain);
/* Finish the attempts under way (bounded by the SMTP timeouts), stop. */
void queue_stop(queue_t *q);

typedef struct queue_stats_t {
    apr_uint64_t delivered;   /* recipients accepted by a peer */
    apr_uint64_t deferred;    /* recipient attempts that will be retried */
    apr_uint64_t failed;      /* recipients given up (bounced when asked for) */
    apr_uint64_t dsns;        /* reports sent (failures, delays, successes) */
    apr_uint64_t connections; /* SMTP sessions opened */
    apr_uint32_t active;      /* deliveries under way now */
} queue_stats_t;
void queue_stats(queue_t *q, queue_stats_t *out);

#endif
