/* Buffered connections with limits and timeouts; TLS through an OpenSSL BIO
 * that calls the transport, so sockets (with APR's timeouts) and in-memory
 * test connections get TLS alike; server and client handshakes; outbound
 * TCP connect trying each address of a host in turn. */
#include "service/core/conn.h"
#include "service/core/fiber.h"
#include "service/core/status.h"
#include "service/core/tls.h"

#include <apr_network_io.h>
#include <apr_portable.h>
#include <apr_strings.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <winsock2.h>
#else
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#endif

#define CONN_IN_INITIAL 4096    /* enough for any ordinary command and a DATA read */
#define CONN_IN_MAX (64 * 1024) /* grown only for long lines (AUTH); reset after */
#define CONN_OUT_FLUSH 16384    /* flush output once this much is waiting */

struct pr_conn_t {
    const pr_transport_t *tp;
    void *tp_ctx;
    SSL *ssl;
    pr_tls_ctx_t *tls;
    apr_status_t tp_err; /* last transport error seen under TLS */
    char *in;
    apr_size_t in_cap, in_start, in_end;
    char *out;
    apr_size_t out_len, out_cap;
    apr_off_t bytes_in;
    int closed;
    char tls_err[200]; /* why a client handshake failed */
};

/* ---- transports */

typedef struct sock_tp_t {
    apr_socket_t *sock;
    apr_interval_time_t timeout; /* what the kernel has now; 0 is none */
} sock_tp_t;

static apr_status_t sock_recv(void *ctx, char *buf, apr_size_t *len)
{
    sock_tp_t *s = ctx;
    apr_status_t st = apr_socket_recv(s->sock, buf, len);
    if (st == APR_SUCCESS && *len == 0) return APR_EOF;
    if (APR_STATUS_IS_EOF(st) && *len > 0) return APR_SUCCESS;
    return st;
}

static apr_status_t sock_send(void *ctx, const char *buf, apr_size_t len)
{
    sock_tp_t *s = ctx;
    while (len > 0) {
        apr_size_t n = len;
        apr_status_t st = apr_socket_send(s->sock, buf, &n);
        if (st != APR_SUCCESS && n == 0) return st;
        buf += n;
        len -= n;
    }
    return APR_SUCCESS;
}

/* The socket stays in blocking mode and the kernel enforces the timeout
 * (SO_RCVTIMEO/SO_SNDTIMEO): one read() per receive, where APR's own
 * timeouts would add a poll() before every read that finds nothing yet.
 * A timed-out read or write fails with EAGAIN, reported as PR_ETIMEOUT. */
static void sock_set_timeout(void *ctx, apr_interval_time_t t)
{
    sock_tp_t *s = ctx;
    apr_os_sock_t fd;
    if (t < 0) t = 0; /* 0: no timeout */
    if (t == s->timeout || apr_os_sock_get(&fd, s->sock) != APR_SUCCESS) return;
    s->timeout = t;
#ifdef _WIN32
    DWORD ms = (DWORD)(t / 1000);
    if (t > 0 && ms == 0) ms = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, (const char *)&ms, sizeof(ms));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, (const char *)&ms, sizeof(ms));
#else
    struct timeval tv = {.tv_sec = (time_t)(t / APR_USEC_PER_SEC),
                         .tv_usec = (suseconds_t)(t % APR_USEC_PER_SEC)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
#endif
}

static void sock_shutdown_read(void *ctx)
{
    sock_tp_t *s = ctx;
    apr_socket_shutdown(s->sock, APR_SHUTDOWN_READ);
}

static const pr_transport_t sock_transport = {sock_recv, sock_send, sock_set_timeout,
                                              sock_shutdown_read, NULL};

#ifdef __linux__
/* A socket on an event loop: non-blocking, and a call that would block
 * parks the session's fiber until the loop sees the socket ready (or the
 * timeout passes). No system call beyond the read or write itself. */
typedef struct fiber_tp_t {
    pr_fiber_io_t io;
    apr_interval_time_t timeout; /* 0: none */
    int more;                    /* MSG_MORE: closing, the FIN follows */
} fiber_tp_t;

static apr_status_t fiber_wait(fiber_tp_t *s, unsigned what, apr_time_t *deadline)
{
    if (s->io.ready & what) return APR_SUCCESS;
    if (!*deadline && s->timeout > 0) *deadline = apr_time_now() + s->timeout;
    return pr_fiber_io_wait(&s->io, what, *deadline);
}

static apr_status_t fiber_recv(void *ctx, char *buf, apr_size_t *len)
{
    fiber_tp_t *s = ctx;
    apr_time_t deadline = 0;
    apr_size_t room = *len;
    *len = 0;
    for (;;) {
        /* Drained before: wait for the loop to see more (a session waiting
         * for its client's next command parks without a futile read). */
        if (fiber_wait(s, PR_IO_IN, &deadline) != APR_SUCCESS) return APR_TIMEUP;
        ssize_t n = recv(s->io.fd, buf, room, 0);
        if (n > 0) {
            /* Short: took all there was, unless the read stopped at the
             * peer's FIN (or an error), which no later edge announces. */
            if ((apr_size_t)n < room && !(s->io.ready & PR_IO_HUP)) s->io.ready &= ~PR_IO_IN;
            *len = (apr_size_t)n;
            return APR_SUCCESS;
        }
        if (n == 0) return APR_EOF;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return APR_FROM_OS_ERROR(errno);
        s->io.ready &= ~PR_IO_IN;
    }
}

static apr_status_t fiber_send(void *ctx, const char *buf, apr_size_t len)
{
    fiber_tp_t *s = ctx;
    apr_time_t deadline = 0;
    while (len > 0) {
        ssize_t n = send(s->io.fd, buf, len, MSG_NOSIGNAL | s->more);
        if (n >= 0) {
            buf += n;
            len -= (apr_size_t)n;
            continue;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return APR_FROM_OS_ERROR(errno);
        s->io.ready &= ~PR_IO_OUT;
        if (fiber_wait(s, PR_IO_OUT, &deadline) != APR_SUCCESS) return APR_TIMEUP;
    }
    return APR_SUCCESS;
}

static void fiber_set_timeout(void *ctx, apr_interval_time_t t)
{
    fiber_tp_t *s = ctx;
    s->timeout = t > 0 ? t : 0;
}

/* From any thread (shutdown): the loop sees the socket readable at once. */
static void fiber_shutdown_read(void *ctx)
{
    fiber_tp_t *s = ctx;
    shutdown(s->io.fd, SHUT_RD);
}

/* Closing: the last reply waits in the socket for the close, whose FIN then
 * goes out with it in one segment (the client sees reply and end at once). */
static void fiber_closing(void *ctx)
{
    fiber_tp_t *s = ctx;
    s->more = MSG_MORE;
}

static const pr_transport_t fiber_transport = {fiber_recv, fiber_send, fiber_set_timeout,
                                               fiber_shutdown_read, fiber_closing};
#endif

typedef struct mem_tp_t {
    const char *input;
    apr_size_t len, pos;
    char *out;
    apr_size_t out_len, out_cap;
} mem_tp_t;

static apr_status_t mem_recv(void *ctx, char *buf, apr_size_t *len)
{
    mem_tp_t *m = ctx;
    apr_size_t n = m->len - m->pos;
    if (n == 0) {
        *len = 0;
        return APR_EOF;
    }
    if (n > *len) n = *len;
    memcpy(buf, m->input + m->pos, n);
    m->pos += n;
    *len = n;
    return APR_SUCCESS;
}

static apr_status_t mem_send(void *ctx, const char *buf, apr_size_t len)
{
    mem_tp_t *m = ctx;
    if (m->out_len + len + 1 > m->out_cap) {
        apr_size_t cap = m->out_cap ? m->out_cap : 1024;
        while (cap < m->out_len + len + 1)
            cap *= 2;
        m->out = realloc(m->out, cap);
        if (!m->out) abort();
        m->out_cap = cap;
    }
    memcpy(m->out + m->out_len, buf, len);
    m->out_len += len;
    m->out[m->out_len] = '\0';
    return APR_SUCCESS;
}

static void mem_set_timeout(void *ctx, apr_interval_time_t t)
{
    (void)ctx;
    (void)t;
}

static const pr_transport_t mem_transport = {mem_recv, mem_send, mem_set_timeout, NULL, NULL};

static apr_status_t mem_cleanup(void *data)
{
    mem_tp_t *m = data;
    free(m->out);
    m->out = NULL;
    return APR_SUCCESS;
}

/* ---- the OpenSSL BIO over a transport */

static BIO_METHOD *conn_bio_method;
/* One flag for the server and the client side: a process doing both (a
 * postroomd that receives and relays) must make the method once. */
static CRYPTO_ONCE conn_bio_once = CRYPTO_ONCE_STATIC_INIT;

static int conn_bio_write(BIO *b, const char *data, int len)
{
    pr_conn_t *c = BIO_get_data(b);
    apr_status_t st = c->tp->send(c->tp_ctx, data, (apr_size_t)len);
    if (st != APR_SUCCESS) {
        c->tp_err = st;
        return -1;
    }
    return len;
}

static int conn_bio_read(BIO *b, char *buf, int len)
{
    pr_conn_t *c = BIO_get_data(b);
    apr_size_t n = (apr_size_t)len;
    apr_status_t st = c->tp->recv(c->tp_ctx, buf, &n);
    if (st != APR_SUCCESS) {
        c->tp_err = st;
        return APR_STATUS_IS_EOF(st) ? 0 : -1;
    }
    return (int)n;
}

static long conn_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int conn_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void conn_bio_init_once(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pr_conn");
    if (!m) abort();
    BIO_meth_set_write(m, conn_bio_write);
    BIO_meth_set_read(m, conn_bio_read);
    BIO_meth_set_ctrl(m, conn_bio_ctrl);
    BIO_meth_set_create(m, conn_bio_create);
    conn_bio_method = m;
}

/* ---- connection */

static apr_status_t conn_cleanup(void *data)
{
    pr_conn_t *c = data;
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->tls) {
        pr_tls_release(c->tls);
        c->tls = NULL;
    }
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    return APR_SUCCESS;
}

apr_status_t pr_conn_create(pr_conn_t **c_r, const pr_transport_t *tp, void *tp_ctx,
                            apr_pool_t *pool)
{
    pr_conn_t *c = apr_pcalloc(pool, sizeof(*c));
    c->tp = tp;
    c->tp_ctx = tp_ctx;
    c->in_cap = CONN_IN_INITIAL;
    c->in = malloc(c->in_cap);
    if (!c->in) abort();
    apr_pool_cleanup_register(pool, c, conn_cleanup, apr_pool_cleanup_null);
    *c_r = c;
    return APR_SUCCESS;
}

apr_status_t pr_conn_create_socket(pr_conn_t **c_r, apr_socket_t *sock, apr_pool_t *pool)
{
#ifdef __linux__
    /* On a loop thread the session is a fiber: the loop's transport. The
     * socket leaves the loop's epoll set when it is closed. */
    apr_os_sock_t fd;
    if (pr_loops_thread() && apr_os_sock_get(&fd, sock) == APR_SUCCESS) {
        fiber_tp_t *f = apr_pcalloc(pool, sizeof(*f));
        apr_status_t st;
        if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0) return APR_FROM_OS_ERROR(errno);
        if ((st = pr_fiber_io_add(&f->io, fd)) != APR_SUCCESS) return st;
        return pr_conn_create(c_r, &fiber_transport, f, pool);
    }
#endif
    sock_tp_t *s = apr_pcalloc(pool, sizeof(*s));
    s->sock = sock;
    return pr_conn_create(c_r, &sock_transport, s, pool);
}

apr_status_t pr_conn_connect(pr_conn_t **c_r, const char *host, apr_port_t port,
                             apr_interval_time_t timeout, apr_pool_t *pool)
{
    apr_sockaddr_t *sa;
    apr_status_t st = apr_sockaddr_info_get(&sa, host, APR_UNSPEC, port, 0, pool);
    if (st != APR_SUCCESS) return PR_ENOTFOUND;
    st = PR_ENOTFOUND;
    for (; sa; sa = sa->next) {
        apr_socket_t *sock;
        st = apr_socket_create(&sock, sa->family, SOCK_STREAM, APR_PROTO_TCP, pool);
        if (st != APR_SUCCESS) continue;
        /* APR bounds a connect with a timeout (non-blocking connect + poll);
         * afterwards the socket goes back to blocking mode with kernel
         * timeouts, as sock_set_timeout expects. */
        apr_socket_timeout_set(sock, timeout > 0 ? timeout : -1);
        st = apr_socket_connect(sock, sa);
        if (st == APR_SUCCESS) {
            apr_socket_opt_set(sock, APR_TCP_NODELAY, 1);
            apr_socket_timeout_set(sock, -1);
            st = pr_conn_create_socket(c_r, sock, pool);
            if (st == APR_SUCCESS && timeout > 0) pr_conn_set_timeout(*c_r, timeout);
            return st;
        }
        apr_socket_close(sock);
        if (APR_STATUS_IS_TIMEUP(st) || APR_STATUS_IS_EAGAIN(st) || APR_STATUS_IS_EINPROGRESS(st))
            st = PR_ETIMEOUT;
    }
    return st;
}

apr_status_t pr_conn_create_memory(pr_conn_t **c_r, const char *input, apr_size_t len,
                                   apr_pool_t *pool)
{
    mem_tp_t *m = apr_pcalloc(pool, sizeof(*m));
    m->input = input;
    m->len = len;
    apr_pool_cleanup_register(pool, m, mem_cleanup, apr_pool_cleanup_null);
    return pr_conn_create(c_r, &mem_transport, m, pool);
}

const char *pr_conn_memory_output(pr_conn_t *c, apr_size_t *len_r)
{
    mem_tp_t *m = c->tp_ctx;
    pr_conn_flush(c);
    if (len_r) *len_r = m->out_len;
    return m->out ? m->out : "";
}

void pr_conn_set_timeout(pr_conn_t *c, apr_interval_time_t t)
{
    c->tp->set_timeout(c->tp_ctx, t);
}

static apr_status_t conn_map_error(apr_status_t st)
{
    if (APR_STATUS_IS_EOF(st)) return PR_ECLOSED;
    if (APR_STATUS_IS_TIMEUP(st) || APR_STATUS_IS_EAGAIN(st)) return PR_ETIMEOUT;
    if (APR_STATUS_IS_ECONNRESET(st) || APR_STATUS_IS_ECONNABORTED(st) ||
        st == APR_FROM_OS_ERROR(EPIPE) || st == APR_FROM_OS_ERROR(ENOTCONN))
        return PR_ECLOSED;
    return st;
}

/* Read more bytes into the input buffer (which must have room). */
static apr_status_t conn_fill(pr_conn_t *c)
{
    apr_status_t st;
    if (c->closed) return PR_ECLOSED;
    st = pr_conn_flush(c);
    if (st != APR_SUCCESS) return st;
    if (c->in_start > 0 && (c->in_end == c->in_cap || c->in_start == c->in_end)) {
        memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
        c->in_end -= c->in_start;
        c->in_start = 0;
    }
    if (c->in_end == c->in_cap) return PR_ELINE;
    if (c->ssl) {
        int n;
        ERR_clear_error();
        c->tp_err = APR_SUCCESS;
        n = SSL_read(c->ssl, c->in + c->in_end, (int)(c->in_cap - c->in_end));
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_ZERO_RETURN) return PR_ECLOSED;
            if (c->tp_err != APR_SUCCESS) return conn_map_error(c->tp_err);
            return e == SSL_ERROR_SYSCALL ? PR_ECLOSED : PR_ETLS;
        }
        c->in_end += (apr_size_t)n;
        c->bytes_in += n;
        return APR_SUCCESS;
    }
    apr_size_t n = c->in_cap - c->in_end;
    st = c->tp->recv(c->tp_ctx, c->in + c->in_end, &n);
    if (st != APR_SUCCESS) return conn_map_error(st);
    c->in_end += n;
    c->bytes_in += (apr_off_t)n;
    return APR_SUCCESS;
}

/* Give the buffer back its normal size once a long line has passed. */
static void conn_shrink(pr_conn_t *c)
{
    if (c->in_cap > CONN_IN_INITIAL && c->in_end - c->in_start <= CONN_IN_INITIAL) {
        char *n = malloc(CONN_IN_INITIAL);
        if (!n) abort();
        memcpy(n, c->in + c->in_start, c->in_end - c->in_start);
        free(c->in);
        c->in = n;
        c->in_end -= c->in_start;
        c->in_start = 0;
        c->in_cap = CONN_IN_INITIAL;
    }
}

apr_status_t pr_conn_read_line(pr_conn_t *c, char **line_r, apr_size_t *len_r, apr_size_t limit,
                               int *bare_lf_r)
{
    apr_size_t scanned = 0;
    int skipping = 0;
    conn_shrink(c);
    for (;;) {
        char *start = c->in + c->in_start;
        apr_size_t avail = c->in_end - c->in_start;
        char *lf = avail > scanned ? memchr(start + scanned, '\n', avail - scanned) : NULL;
        if (lf) {
            apr_size_t total = (apr_size_t)(lf - start) + 1;
            c->in_start += total;
            if (skipping || total > limit) return PR_ELINE;
            apr_size_t len = total - 1;
            int bare = 1;
            if (len > 0 && start[len - 1] == '\r') {
                len--;
                bare = 0;
            }
            start[len] = '\0';
            *line_r = start;
            *len_r = len;
            if (bare_lf_r) *bare_lf_r = bare;
            return APR_SUCCESS;
        }
        scanned = avail;
        if (scanned >= limit) {
            /* Over the limit without an end: drop what we have, skip to LF. */
            skipping = 1;
            c->in_start = c->in_end;
            scanned = 0;
        } else if (c->in_end == c->in_cap && c->in_start == 0) {
            apr_size_t cap = c->in_cap * 2;
            if (cap > CONN_IN_MAX) cap = CONN_IN_MAX;
            if (cap <= c->in_cap) {
                skipping = 1;
                c->in_start = c->in_end;
                scanned = 0;
            } else {
                c->in = realloc(c->in, cap);
                if (!c->in) abort();
                c->in_cap = cap;
            }
        }
        apr_status_t st = conn_fill(c);
        if (st == PR_ELINE) {
            skipping = 1;
            c->in_start = c->in_end;
            scanned = 0;
            continue;
        }
        if (st != APR_SUCCESS) return st;
    }
}

apr_status_t pr_conn_peek(pr_conn_t *c, const char **data_r, apr_size_t *len_r)
{
    if (c->in_start == c->in_end) {
        c->in_start = c->in_end = 0;
        apr_status_t st = conn_fill(c);
        if (st != APR_SUCCESS) return st;
    }
    *data_r = c->in + c->in_start;
    *len_r = c->in_end - c->in_start;
    return APR_SUCCESS;
}

void pr_conn_consume(pr_conn_t *c, apr_size_t n)
{
    c->in_start += n;
    if (c->in_start >= c->in_end) c->in_start = c->in_end = 0;
}

apr_size_t pr_conn_pending(const pr_conn_t *c)
{
    return c->in_end - c->in_start;
}

void pr_conn_discard_input(pr_conn_t *c)
{
    c->in_start = c->in_end = 0;
}

static apr_status_t conn_send_raw(pr_conn_t *c, const char *data, apr_size_t len)
{
    if (c->closed) return PR_ECLOSED;
    if (c->ssl) {
        while (len > 0) {
            size_t n = 0;
            ERR_clear_error();
            c->tp_err = APR_SUCCESS;
            if (SSL_write_ex(c->ssl, data, len, &n) <= 0) {
                if (c->tp_err != APR_SUCCESS) return conn_map_error(c->tp_err);
                return PR_ETLS;
            }
            data += n;
            len -= n;
        }
        return APR_SUCCESS;
    }
    apr_status_t st = c->tp->send(c->tp_ctx, data, len);
    return st == APR_SUCCESS ? st : conn_map_error(st);
}

apr_status_t pr_conn_flush(pr_conn_t *c)
{
    if (c->out_len == 0) return APR_SUCCESS;
    apr_status_t st = conn_send_raw(c, c->out, c->out_len);
    c->out_len = 0;
    if (c->out_cap > CONN_OUT_FLUSH) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    return st;
}

apr_status_t pr_conn_write(pr_conn_t *c, const char *data, apr_size_t len)
{
    if (c->out_len + len > c->out_cap) {
        if (c->out_len + len > CONN_OUT_FLUSH) {
            apr_status_t st = pr_conn_flush(c);
            if (st != APR_SUCCESS) return st;
            if (len > CONN_OUT_FLUSH) return conn_send_raw(c, data, len);
        }
        apr_size_t cap = c->out_cap ? c->out_cap : 512;
        while (cap < c->out_len + len)
            cap *= 2;
        c->out = realloc(c->out, cap);
        if (!c->out) abort();
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return APR_SUCCESS;
}

apr_status_t pr_conn_puts(pr_conn_t *c, const char *s)
{
    return pr_conn_write(c, s, strlen(s));
}

apr_status_t pr_conn_printf(pr_conn_t *c, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0) return PR_EINVAL;
    if ((apr_size_t)n >= sizeof(buf)) n = sizeof(buf) - 1;
    return pr_conn_write(c, buf, (apr_size_t)n);
}

apr_status_t pr_conn_start_tls(pr_conn_t *c, pr_tls_ctx_t *tls)
{
    if (!CRYPTO_THREAD_run_once(&conn_bio_once, conn_bio_init_once) || !conn_bio_method)
        return PR_ETLS;
    apr_status_t st = pr_conn_flush(c);
    if (st != APR_SUCCESS) return st;
    SSL *ssl = SSL_new(pr_tls_ctx_ssl(tls));
    if (!ssl) return PR_ETLS;
    BIO *bio = BIO_new(conn_bio_method);
    if (!bio) {
        SSL_free(ssl);
        return PR_ETLS;
    }
    BIO_set_data(bio, c);
    SSL_set_bio(ssl, bio, bio);
    c->ssl = ssl;
    c->tls = tls;
    ERR_clear_error();
    c->tp_err = APR_SUCCESS;
    if (SSL_accept(ssl) != 1) {
        apr_status_t err = c->tp_err != APR_SUCCESS ? conn_map_error(c->tp_err) : PR_ETLS;
        /* No close_notify on a failed handshake: the peer is gone or hostile. */
        c->closed = 1;
        return err;
    }
    return APR_SUCCESS;
}

apr_status_t pr_conn_start_tls_client(pr_conn_t *c, pr_tls_ctx_t *tls, const char *server_name)
{
    c->tls_err[0] = '\0';
    if (!CRYPTO_THREAD_run_once(&conn_bio_once, conn_bio_init_once) || !conn_bio_method)
        return PR_ETLS;
    apr_status_t st = pr_conn_flush(c);
    if (st != APR_SUCCESS) return st;
    SSL *ssl = SSL_new(pr_tls_ctx_ssl(tls));
    if (!ssl) return PR_ETLS;
    BIO *bio = BIO_new(conn_bio_method);
    if (!bio) {
        SSL_free(ssl);
        return PR_ETLS;
    }
    BIO_set_data(bio, c);
    SSL_set_bio(ssl, bio, bio);
    c->ssl = ssl;
    c->tls = pr_tls_ctx_ref(tls);
    if (server_name && *server_name) {
        /* IPv6 literals hold a colon; IPv4 literals only digits and dots. */
        int is_ip = strchr(server_name, ':') != NULL;
        if (!is_ip) {
            is_ip = 1;
            for (const char *p = server_name; *p; p++)
                if (!((*p >= '0' && *p <= '9') || *p == '.')) is_ip = 0;
        }
        if (!is_ip) SSL_set_tlsext_host_name(ssl, server_name);
        if (pr_tls_ctx_verifies(tls)) {
            int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name)
                           : SSL_set1_host(ssl, server_name);
            if (ok != 1) {
                snprintf(c->tls_err, sizeof(c->tls_err), "bad server name for verification");
                c->closed = 1;
                return PR_ETLS;
            }
        }
    }
    ERR_clear_error();
    c->tp_err = APR_SUCCESS;
    if (SSL_connect(ssl) != 1) {
        int lost = c->tp_err != APR_SUCCESS;
        long vr = SSL_get_verify_result(ssl);
        unsigned long e = ERR_peek_error();
        if (pr_tls_ctx_verifies(tls) && vr != X509_V_OK)
            snprintf(c->tls_err, sizeof(c->tls_err), "certificate verify failed: %s",
                     X509_verify_cert_error_string(vr));
        else if (e)
            ERR_error_string_n(e, c->tls_err, sizeof(c->tls_err));
        else
            snprintf(c->tls_err, sizeof(c->tls_err), "%s",
                     lost ? "connection lost during handshake" : "handshake failed");
        ERR_clear_error();
        /* No close_notify on a failed handshake. */
        c->closed = 1;
        return PR_ETLS;
    }
    return APR_SUCCESS;
}

const char *pr_conn_tls_error(const pr_conn_t *c)
{
    return c->tls_err;
}

int pr_conn_is_tls(const pr_conn_t *c)
{
    return c->ssl != NULL;
}

const char *pr_conn_tls_description(pr_conn_t *c, apr_pool_t *pool)
{
    if (!c->ssl) return NULL;
    return apr_psprintf(pool, "%s %s", SSL_get_version(c->ssl),
                        SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)));
}

void pr_conn_shutdown_read(pr_conn_t *c)
{
    if (c->tp->shutdown_read) c->tp->shutdown_read(c->tp_ctx);
}

void pr_conn_closing(pr_conn_t *c)
{
    if (c->tp->closing) c->tp->closing(c->tp_ctx);
}

void pr_conn_close(pr_conn_t *c)
{
    if (!c->closed) {
        pr_conn_closing(c);
        pr_conn_flush(c);
        if (c->ssl) {
            ERR_clear_error();
            SSL_shutdown(c->ssl);
        }
        c->closed = 1;
    }
    conn_cleanup(c);
}

apr_off_t pr_conn_bytes_in(const pr_conn_t *c)
{
    return c->bytes_in;
}
