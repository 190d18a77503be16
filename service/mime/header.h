/* An RFC 5322 header scanner fed the message as it streams in: it finds the
 * end of the header section and keeps, within limits, the few fields the
 * SMTP server needs (From, Sender, Date, Message-ID, count of Received). */
#ifndef PR_HEADER_H
#define PR_HEADER_H

#include <apr_pools.h>

#define PR_HDR_MAX_KEPT 8192 /* octets kept of one interesting field (unfolded) */

typedef struct pr_hdrscan_t {
    /* results */
    int in_body;        /* the blank line has been seen */
    int has_date;
    int has_message_id;
    int from_count;     /* number of From: fields */
    int received_count; /* number of Received: fields */
    const char *from;   /* value of the first From: (unfolded), NULL if none/too long */
    apr_size_t from_len;
    int from_truncated;
    /* private */
    apr_pool_t *pool;
    int state;
    char name[32];
    apr_size_t name_len;
    int field;
    char *buf;
    apr_size_t buf_len;
} pr_hdrscan_t;

void pr_hdrscan_init(pr_hdrscan_t *h, apr_pool_t *pool);
/* Feed message bytes (CRLF line ends, any chunking, even one byte at a time). */
void pr_hdrscan_feed(pr_hdrscan_t *h, const char *data, apr_size_t len);
/* The message ended (a message with no body ends its header here). */
void pr_hdrscan_finish(pr_hdrscan_t *h);

#endif
