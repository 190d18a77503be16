/* The message content decoder for DATA (RFC 5321 4.1.1.4, 4.5.2: dot
 * transparency, end of data only at CRLF.CRLF) and BDAT (RFC 3030: counted
 * octets). Bare CR or bare LF anywhere is recorded as an error instead of
 * being normalised (SMTP smuggling, CVE-2023-51764), and decoding goes on to
 * the true end so the session stays in sync. Pure: bytes in, bytes out. */
#ifndef PR_SMTP_DATA_H
#define PR_SMTP_DATA_H

#include <apr_pools.h>

/* Receives decoded message bytes; a non-success stops the output (not the
 * decoding). */
typedef apr_status_t (*smtp_data_sink_fn)(void *ctx, const char *data, apr_size_t len);

typedef struct smtp_data_t {
    int dot; /* DATA (dot transparency) vs BDAT */
    int state;
    int bare;        /* saw a bare CR or LF */
    int done;        /* DATA: the terminating CRLF.CRLF was consumed */
    int last_lf;     /* BDAT: the output so far ends in LF (or is empty) */
    int eightbit;    /* the content holds an octet above 127 (RFC 6152: the
                        next hop must take 8BITMIME) */
    apr_off_t size;  /* octets handed to the sink */
    apr_off_t limit; /* beyond this the sink gets nothing more */
    int too_big;
    apr_status_t sink_status;
    smtp_data_sink_fn sink;
    void *ctx;
} smtp_data_t;

void smtp_data_init(smtp_data_t *d, int dot, apr_off_t limit, smtp_data_sink_fn sink, void *ctx);
/* Decode len bytes; returns how many were consumed (DATA stops right after
 * the terminating CRLF.CRLF, leaving pipelined commands unread). */
apr_size_t smtp_data_feed(smtp_data_t *d, const char *in, apr_size_t len);
/* BDAT LAST: a message not ending in CRLF gets one (counted in size). */
void smtp_data_finish(smtp_data_t *d);

#endif
