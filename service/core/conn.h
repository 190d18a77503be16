/* A connection as protocol code sees it: buffered line and byte input with
 * hard limits, buffered output flushed before any blocking read (so pipelined
 * replies go out together, RFC 2920), timeouts, and TLS (STARTTLS or
 * implicit) layered over a transport: a socket, or memory for tests and
 * fuzzers. The protocol cores never touch a socket. */
#ifndef PR_CONN_H
#define PR_CONN_H

#include <apr_network_io.h>
#include <apr_pools.h>
#include <apr_time.h>

typedef struct pr_conn_t pr_conn_t;
typedef struct pr_tls_ctx_t pr_tls_ctx_t;

/* The raw transport under a connection. */
typedef struct pr_transport_t {
    /* *len in: room, out: bytes read (>0). APR_EOF at end, APR_TIMEUP on timeout. */
    apr_status_t (*recv)(void *ctx, char *buf, apr_size_t *len);
    /* Writes everything or fails. */
    apr_status_t (*send)(void *ctx, const char *buf, apr_size_t len);
    void (*set_timeout)(void *ctx, apr_interval_time_t t);
    /* Stop reading (used to wake a session at shutdown); may be NULL. */
    void (*shutdown_read)(void *ctx);
    /* What is sent from now on is the connection's last, and the transport
     * is closed right after: it may hold those bytes back so that they go
     * out together with the end of the connection (one TCP segment with the
     * FIN, instead of the reply and then the FIN). May be NULL. */
    void (*closing)(void *ctx);
} pr_transport_t;

apr_status_t pr_conn_create(pr_conn_t **c_r, const pr_transport_t *tp, void *tp_ctx,
                            apr_pool_t *pool);
/* A connection over an accepted APR socket. */
apr_status_t pr_conn_create_socket(pr_conn_t **c_r, apr_socket_t *sock, apr_pool_t *pool);
/* Open a TCP connection to host (a name, resolved by the system, or a
 * literal address) trying each of its addresses in turn, each attempt
 * bounded by timeout (0: none). The socket belongs to pool and is closed
 * with it. On failure the last attempt's status: PR_ETIMEOUT, PR_ENOTFOUND
 * (no address), or the OS error (e.g. ECONNREFUSED). */
apr_status_t pr_conn_connect(pr_conn_t **c_r, const char *host, apr_port_t port,
                             apr_interval_time_t timeout, apr_pool_t *pool);
/* A connection reading `input` and collecting output (tests, fuzzers). */
apr_status_t pr_conn_create_memory(pr_conn_t **c_r, const char *input, apr_size_t len,
                                   apr_pool_t *pool);
/* What a memory connection has written so far (NUL-terminated copy). */
const char *pr_conn_memory_output(pr_conn_t *c, apr_size_t *len_r);

void pr_conn_set_timeout(pr_conn_t *c, apr_interval_time_t t);

/* Read one line ending in LF (CRLF or bare LF). *line_r points into the
 * connection buffer, valid until the next read; *len_r excludes the line end;
 * *bare_lf_r (optional) tells whether it ended in a bare LF.
 * PR_ELINE: the line (with its end) is longer than limit: it has been
 * skipped to its end, so the session stays in sync. PR_ECLOSED at EOF,
 * PR_ETIMEOUT, PR_ETLS, or another error. Pending output is flushed first
 * when no complete line is buffered. */
apr_status_t pr_conn_read_line(pr_conn_t *c, char **line_r, apr_size_t *len_r, apr_size_t limit,
                               int *bare_lf_r);

/* Borrow buffered input (reading more if none) in data_r, len_r. Consume with
 * pr_conn_consume. For streaming DATA/BDAT without copying. */
apr_status_t pr_conn_peek(pr_conn_t *c, const char **data_r, apr_size_t *len_r);
void pr_conn_consume(pr_conn_t *c, apr_size_t n);

/* Bytes of input already buffered (pipelined by the client). */
apr_size_t pr_conn_pending(const pr_conn_t *c);
/* Throw buffered input away (STARTTLS: CVE-2011-0411). */
void pr_conn_discard_input(pr_conn_t *c);

apr_status_t pr_conn_write(pr_conn_t *c, const char *data, apr_size_t len);
apr_status_t pr_conn_puts(pr_conn_t *c, const char *s);
apr_status_t pr_conn_printf(pr_conn_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
apr_status_t pr_conn_flush(pr_conn_t *c);

/* Server-side TLS handshake over the connection (STARTTLS or implicit). */
apr_status_t pr_conn_start_tls(pr_conn_t *c, pr_tls_ctx_t *tls);
/* Client-side TLS handshake (outbound STARTTLS or implicit TLS). The
 * connection takes its own reference to tls. server_name (may be NULL) is
 * sent as SNI when it is a name, and when the context verifies, the
 * certificate must match it (a name or an IP literal). PR_ETLS on failure,
 * with the reason in pr_conn_tls_error; the connection is then unusable. */
apr_status_t pr_conn_start_tls_client(pr_conn_t *c, pr_tls_ctx_t *tls, const char *server_name);
/* Why the last handshake failed ("certificate verify failed: ..."), or "". */
const char *pr_conn_tls_error(const pr_conn_t *c);
int pr_conn_is_tls(const pr_conn_t *c);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384" or NULL. */
const char *pr_conn_tls_description(pr_conn_t *c, apr_pool_t *pool);

/* Wake a blocked reader (shutdown). Safe from another thread. */
void pr_conn_shutdown_read(pr_conn_t *c);
/* The session is over: what is still written goes out with the end of the
 * connection (see pr_transport_t.closing). Call it only when pr_conn_close
 * and the transport's close follow without waiting on anything. */
void pr_conn_closing(pr_conn_t *c);
/* Flush (best effort), TLS close_notify, free buffers. The transport is
 * closed by whoever created it, right after (see pr_transport_t.closing). */
void pr_conn_close(pr_conn_t *c);

/* Bytes read and written over the connection (after TLS). */
apr_off_t pr_conn_bytes_in(const pr_conn_t *c);

#endif
