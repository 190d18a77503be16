/* Delivery status notifications (RFC 3464): a multipart/report (RFC 6522)
 * with a human part, a message/delivery-status part and the original
 * message (RET=FULL) or its headers (RET=HDRS), from the null sender,
 * marked Auto-Submitted (RFC 3834). One implementation for its two users,
 * which is why it is a library of its own below both: the outbound queue
 * (failures, delays, "relayed") and the SMTP server ("delivered" and
 * "expanded" for local recipients that asked for NOTIFY=SUCCESS). Text
 * building and the route to the sender; the caller decides who gets one
 * and delivers it. */
#ifndef PR_BOUNCE_H
#define PR_BOUNCE_H

#include <apr_pools.h>
#include <apr_time.h>
#include "directory/directory.h"
#include "service/store/store.h"

/* RET unspecified: the whole original up to this size, else its headers. */
#define BOUNCE_FULL_MAX (1024 * 1024)

typedef enum {
    BOUNCE_FAILED,    /* Action: failed */
    BOUNCE_DELAYED,   /* Action: delayed (still being retried) */
    BOUNCE_DELIVERED, /* Action: delivered (NOTIFY=SUCCESS, final delivery) */
    BOUNCE_RELAYED,   /* Action: relayed (NOTIFY=SUCCESS, to a peer without DSN) */
    BOUNCE_EXPANDED,  /* Action: expanded (NOTIFY=SUCCESS, an alias to several addresses) */
} bounce_action_e;

typedef struct bounce_rcpt_t {
    const char *address; /* Final-Recipient */
    const char *orcpt;   /* ORCPT as received ("rfc822;addr"), or NULL */
    bounce_action_e action;
    const char *reply;      /* the last reply ("550 5.1.1 no such user") or our reason */
    const char *remote_mta; /* the host that gave the reply, or NULL */
    apr_time_t last_attempt;
} bounce_rcpt_t;

typedef struct bounce_t {
    const char *reporting_mta; /* our host name */
    const char *sender;        /* the original envelope sender: To: of the report */
    const char *envid;         /* ENVID, or NULL */
    apr_time_t arrival;
    apr_time_t retry_until; /* for delayed recipients */
    store_ret_e ret;
    int n;
    const bounce_rcpt_t *rcpts; /* all of one action kind, or mixed */
} bounce_t;

/* The status code of a reply: its enhanced code (RFC 3463) when it has one
 * that agrees with the reply class, else X.0.0 from the basic code's class;
 * "4.0.0" for text without a code (a connection failure). */
const char *bounce_status(const char *reply, apr_pool_t *pool);

/* Write the report into body (CRLF text), reading the original message
 * from orig (prefix and body as queued; orig may be NULL: no original).
 * A report without a failure carries only the original's headers whatever
 * RET says (RFC 3461 4.3). */
apr_status_t bounce_write(store_body_t *body, const bounce_t *b, store_stream_t *orig,
                          apr_pool_t *pool);

/* Where a report to sender goes: fills d's recipients (local mailboxes,
 * each with a "Return-Path: <>" prefix, and remote addresses to queue) and
 * d->sender ""; the caller sets d->body. PR_ENOTFOUND: nowhere (the null
 * sender, a malformed address, an unknown local address, a list, or one that
 * expands to nobody); PR_ETEMPFAIL: the directory cannot say now. */
apr_status_t bounce_route(dir_t *dir, const char *sender, store_delivery_t *d, apr_pool_t *pool);

#endif
