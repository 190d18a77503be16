/* Unit tests for fibers on event loops (fiber.c) and the fiber-aware socket
 * transport (conn.c), over real loopback sockets: many sessions parked on
 * their reads, read timeouts, a sleeping fiber beside a busy one on a single
 * loop, wakes from another thread (stale ones, and many in a row racing the
 * loop's sleep), a large reply to a slow reader, the face outside a fiber,
 * and stopping (join waits for a session still running).
 *
 * The server side is the real thing: a listening socket on 127.0.0.1 (port
 * 0: the kernel picks one) handed to pr_loops_start, an accept function that
 * starts one fiber per connection with pr_conn_create_socket (which picks
 * the loop's non-blocking transport), and a small line protocol. Clients are
 * plain blocking sockets on the test's thread. Waits for what a client
 * should see are generous (WAIT_MS) so slow machines pass; timing checks are
 * lower bounds only. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <apr_general.h>
#include <stdio.h>

#ifdef __linux__

#include <apr_allocator.h>
#include <apr_network_io.h>
#include <apr_portable.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>
#include <apr_time.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "service/core/conn.h"
#include "service/core/fiber.h"
#include "service/core/status.h"

#define WAIT_MS 10000 /* longest a client waits for what it expects */
#define MAX_CLIENTS 512
#define N_MANY 200 /* sessions at once in test_many_sessions */
#define BIG_SIZE (8u * 1024 * 1024)
#define SLEEP_MS 500  /* the "sleep" command */
#define BLOCK_MS 3000 /* the "block" command */
#define N_WAKES 10000 /* park/wake rounds in test_cross_thread_wake_many */

/* ---- The server side: loops, accept, sessions */

typedef struct client_t client_t;

typedef struct server_t {
    apr_pool_t *pool;
    apr_allocator_t *alloc; /* session pools, created on any loop thread */
    apr_thread_mutex_t *alloc_mu;
    apr_socket_t *lsock;
    apr_port_t port;
    pr_loops_t *loops;
    int running; /* started and not yet joined */
    int stopped; /* pr_loops_stop_accepting called */
    /* How sessions behave in this test. */
    int greet;                   /* "hi" on start */
    int accept_after_data;       /* accept_fn registers a connection only once data is waiting */
    apr_interval_time_t timeout; /* pr_conn_set_timeout on start; 0: none */
    /* What sessions report. */
    atomic_uint started, ended, errors;
    atomic_uint sleepers;  /* sessions that have begun a "sleep" */
    atomic_int last_error; /* the status behind the last error */
    /* The "park" command: the parked session's reference, and its condition. */
    pr_fiber_ref_t park_ref; /* valid once have_ref is set */
    atomic_uint have_ref, flag, park_returns;
    /* The "manywakes" command: the round the session is parked in, and how
     * many wakes the other thread has sent. */
    atomic_uint step, wakes_sent;
    /* The "burn" command runs until this is set. */
    atomic_uint stop_burn;
    atomic_uint blockers; /* sessions that have begun a "block" */
    /* Clients, closed at the end of the test (also when it fails). */
    client_t *clients[MAX_CLIENTS];
    int n_clients;
} server_t;

typedef struct session_t {
    server_t *srv;
    apr_pool_t *pool;
    apr_socket_t *sock;
    pr_conn_t *conn;
} session_t;

static void note_error(server_t *s, apr_status_t st)
{
    atomic_store(&s->last_error, (int)st);
    atomic_fetch_add(&s->errors, 1);
}

static apr_status_t reply(pr_conn_t *c, const char *text)
{
    apr_status_t st = pr_conn_puts(c, text);
    return st == APR_SUCCESS ? pr_conn_flush(c) : st;
}

/* Byte i of the "big" reply: not periodic over any short stretch. */
static unsigned char pattern_at(size_t i)
{
    return (unsigned char)((uint32_t)(i * 2654435761u) >> 24);
}

/* 8 MiB in chunks of varied sizes (some buffered, some over the connection's
 * flush size and sent directly), then "done <ms the writing took>". The
 * socket's send buffer is made small so the writes must wait for the
 * reader: the transport parks the fiber until the socket is writable. */
static apr_status_t session_big(session_t *ss)
{
    static const apr_size_t sizes[] = {1000, 16384, 70001, 5, 40000, 4096};
    const apr_size_t max_chunk = 70001;
    pr_conn_t *c = ss->conn;
    apr_os_sock_t fd;
    if (apr_os_sock_get(&fd, ss->sock) == APR_SUCCESS) {
        int sndbuf = 32 * 1024;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    }
    unsigned char *chunk = apr_palloc(ss->pool, max_chunk);
    apr_time_t t0 = apr_time_now();
    apr_size_t off = 0;
    for (unsigned k = 0; off < BIG_SIZE; k++) {
        apr_size_t n = sizes[k % (sizeof(sizes) / sizeof(sizes[0]))];
        if (n > BIG_SIZE - off) n = BIG_SIZE - off;
        for (apr_size_t i = 0; i < n; i++)
            chunk[i] = pattern_at(off + i);
        apr_status_t st = pr_conn_write(c, (const char *)chunk, n);
        if (st != APR_SUCCESS) return st;
        off += n;
    }
    apr_status_t st = pr_conn_flush(c);
    if (st != APR_SUCCESS) return st;
    apr_interval_time_t took = apr_time_now() - t0;
    st = pr_conn_printf(c, "done %ld\r\n", (long)apr_time_as_msec(took));
    return st == APR_SUCCESS ? pr_conn_flush(c) : st;
}

/* One command: APR_SUCCESS to read the next, else the session ends. */
static apr_status_t session_command(session_t *ss, const char *line)
{
    server_t *s = ss->srv;
    pr_conn_t *c = ss->conn;
    if (!strcmp(line, "ping")) return reply(c, "pong\r\n");
    if (!strcmp(line, "sleep")) {
        atomic_fetch_add(&s->sleepers, 1);
        pr_sleep(apr_time_from_msec(SLEEP_MS));
        return reply(c, "slept\r\n");
    }
    if (!strcmp(line, "park")) {
        /* Publish the reference, then wait on the condition: wakes may be
         * spurious, so park in a loop and count how often park returned. */
        s->park_ref = pr_fiber_ref();
        atomic_store(&s->park_returns, 0);
        atomic_store(&s->have_ref, 1);
        while (!atomic_load(&s->flag)) {
            pr_fiber_park(0);
            atomic_fetch_add(&s->park_returns, 1);
        }
        return reply(c, "woken\r\n");
    }
    if (!strcmp(line, "manywakes")) {
        /* N_WAKES rounds: announce the round, park until the other thread
         * has answered it. A lost wake leaves the session parked for good. */
        s->park_ref = pr_fiber_ref();
        atomic_store(&s->have_ref, 1);
        for (unsigned i = 0; i < N_WAKES; i++) {
            atomic_store(&s->step, i + 1);
            while (atomic_load(&s->wakes_sent) <= i)
                pr_fiber_park(0);
        }
        apr_status_t st = pr_conn_printf(c, "woken %u\r\n", (unsigned)N_WAKES);
        return st == APR_SUCCESS ? pr_conn_flush(c) : st;
    }
    if (!strcmp(line, "big")) return session_big(ss);
    if (!strcmp(line, "where")) { /* the loop thread running this session */
        apr_status_t st = pr_conn_printf(c, "thread %lu\r\n", (unsigned long)pthread_self());
        return st == APR_SUCCESS ? pr_conn_flush(c) : st;
    }
    if (!strcmp(line, "block")) { /* hold the loop's thread, as a stuck call would */
        atomic_fetch_add(&s->blockers, 1);
        apr_sleep(apr_time_from_msec(BLOCK_MS));
        return reply(c, "unblocked\r\n");
    }
    if (!strcmp(line, "burn")) {
        /* Keep the loop busy: spin 5 ms, let the loop go round, again,
         * until told to stop (or 10 s). */
        apr_time_t end = apr_time_now() + apr_time_from_sec(10);
        while (!atomic_load(&s->stop_burn) && apr_time_now() < end) {
            apr_time_t spin = apr_time_now() + apr_time_from_msec(5);
            while (apr_time_now() < spin)
                ;
            pr_sleep(0);
        }
        return reply(c, "burnt\r\n");
    }
    apr_status_t st = pr_conn_printf(c, "echo %s\r\n", line);
    return st == APR_SUCCESS ? pr_conn_flush(c) : st;
}

static void session_fn(void *arg)
{
    session_t *ss = arg;
    server_t *s = ss->srv;
    pr_conn_t *c = ss->conn;
    apr_status_t st = APR_SUCCESS;
    char *line;
    apr_size_t len;

    /* A session runs as a fiber, on a loop thread. */
    if (!pr_fiber_self() || !pr_loops_thread()) note_error(s, APR_EGENERAL);
    if (s->timeout) pr_conn_set_timeout(c, s->timeout);
    if (s->greet) st = reply(c, "hi\r\n");
    while (st == APR_SUCCESS && (st = pr_conn_read_line(c, &line, &len, 1000, NULL)) == APR_SUCCESS)
        st = session_command(ss, line);
    if (st == PR_ETIMEOUT)
        reply(c, "timeout\r\n");
    else if (st != PR_ECLOSED)
        note_error(s, st);

    pr_conn_close(c);
    apr_socket_close(ss->sock);
    apr_pool_destroy(ss->pool);
    atomic_fetch_add(&s->ended, 1);
}

static int wait_readable(int fd, int ms);

/* On a loop thread, not in a fiber: accept one connection, start its fiber. */
static int accept_fn(void *ctx)
{
    server_t *s = ctx;
    apr_pool_t *pool;
    apr_socket_t *ns;
    if (apr_pool_create_unmanaged_ex(&pool, NULL, s->alloc) != APR_SUCCESS) abort();
    apr_status_t st = apr_socket_accept(&ns, s->lsock, pool);
    if (st != APR_SUCCESS) {
        if (!APR_STATUS_IS_EAGAIN(st) && !APR_STATUS_IS_EINTR(st) &&
            !APR_STATUS_IS_ECONNABORTED(st))
            note_error(s, st);
        apr_pool_destroy(pool);
        return 0;
    }
    if (!pr_loops_thread() || pr_fiber_self()) note_error(s, APR_EGENERAL);
    if (s->accept_after_data) {
        apr_os_sock_t nfd;
        apr_os_sock_get(&nfd, ns);
        if (wait_readable(nfd, WAIT_MS) <= 0) note_error(s, APR_TIMEUP);
    }
    session_t *ss = apr_pcalloc(pool, sizeof(*ss));
    ss->srv = s;
    ss->pool = pool;
    ss->sock = ns;
    if ((st = pr_conn_create_socket(&ss->conn, ns, pool)) != APR_SUCCESS ||
        (st = pr_fiber_spawn(session_fn, ss)) != APR_SUCCESS) {
        note_error(s, st);
        if (ss->conn) pr_conn_close(ss->conn);
        apr_socket_close(ns);
        apr_pool_destroy(pool);
        return 1;
    }
    atomic_fetch_add(&s->started, 1);
    return 1;
}

/* Listen on 127.0.0.1, a port the kernel picks, and start n loops. */
static void server_start(server_t *s, int n_loops)
{
    apr_sockaddr_t *sa, *local;
    apr_os_sock_t fd;
    assert_int_equal(apr_sockaddr_info_get(&sa, "127.0.0.1", APR_INET, 0, 0, s->pool), APR_SUCCESS);
    assert_int_equal(apr_socket_create(&s->lsock, APR_INET, SOCK_STREAM, APR_PROTO_TCP, s->pool),
                     APR_SUCCESS);
    assert_int_equal(apr_socket_bind(s->lsock, sa), APR_SUCCESS);
    assert_int_equal(apr_socket_listen(s->lsock, 511), APR_SUCCESS);
    assert_int_equal(apr_socket_opt_set(s->lsock, APR_SO_NONBLOCK, 1), APR_SUCCESS);
    assert_int_equal(apr_socket_addr_get(&local, APR_LOCAL, s->lsock), APR_SUCCESS);
    s->port = local->port;
    assert_true(s->port != 0);
    assert_int_equal(apr_os_sock_get(&fd, s->lsock), APR_SUCCESS);

    int fds[1] = {(int)fd};
    void *ctx[1] = {s};
    assert_int_equal(pr_loops_start(&s->loops, n_loops, fds, ctx, 1, accept_fn, s->pool),
                     APR_SUCCESS);
    s->running = 1;
}

static void server_stop_accepting(server_t *s)
{
    if (s->running && !s->stopped) pr_loops_stop_accepting(s->loops);
    s->stopped = 1;
}

/* ---- Clients: plain blocking sockets */

struct client_t {
    int fd;
    int id;
    char buf[4096]; /* received, not yet taken */
    size_t len;
};

/* Connect to the server; rcvbuf > 0 sets a small receive buffer first. */
static client_t *client_connect_buf(server_t *s, int rcvbuf)
{
    assert_true(s->n_clients < MAX_CLIENTS);
    client_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->id = s->n_clients;
    s->clients[s->n_clients++] = c;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    if (rcvbuf > 0)
        assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(s->port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
        fail_msg("client %d: connect: %s", c->id, strerror(errno));
    return c;
}

static client_t *client_connect(server_t *s)
{
    return client_connect_buf(s, 0);
}

static void client_close(client_t *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static void clients_close_all(server_t *s)
{
    for (int i = 0; i < s->n_clients; i++) {
        client_close(s->clients[i]);
        free(s->clients[i]);
    }
    s->n_clients = 0;
}

/* 1: readable (or closed), 0: nothing within ms. */
static int wait_readable(int fd, int ms)
{
    apr_time_t end = apr_time_now() + apr_time_from_msec(ms);
    for (;;) {
        apr_interval_time_t left = end - apr_time_now();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, left > 0 ? (int)((left + 999) / 1000) : 0);
        if (r > 0) return 1;
        if (r == 0) return 0;
        if (errno != EINTR) return 1; /* let recv report it */
    }
}

static void client_send(client_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void client_send(client_t *c, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof(buf));
    for (const char *p = buf; n > 0;) {
        ssize_t w = send(c->fd, p, (size_t)n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) fail_msg("client %d: send: %s", c->id, strerror(errno));
        p += w;
        n -= (int)w;
    }
}

/* A line without its CRLF: 1, 0 when nothing came within ms, -1 at end of
 * stream (or an error). */
static int client_read_line(client_t *c, char *out, size_t outsz, int ms)
{
    apr_time_t end = apr_time_now() + apr_time_from_msec(ms);
    for (;;) {
        char *lf = memchr(c->buf, '\n', c->len);
        if (lf) {
            size_t n = (size_t)(lf - c->buf), line = n;
            if (line > 0 && c->buf[line - 1] == '\r') line--;
            if (line >= outsz) line = outsz - 1;
            memcpy(out, c->buf, line);
            out[line] = '\0';
            memmove(c->buf, lf + 1, c->len - n - 1);
            c->len -= n + 1;
            return 1;
        }
        if (c->len == sizeof(c->buf)) return -1;
        apr_interval_time_t left = end - apr_time_now();
        if (!wait_readable(c->fd, left > 0 ? (int)apr_time_as_msec(left) : 0)) return 0;
        ssize_t got = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
        if (got > 0)
            c->len += (size_t)got;
        else if (got < 0 && errno == EINTR)
            continue;
        else
            return -1;
    }
}

static void expect_line(client_t *c, const char *want)
{
    char got[512];
    int r = client_read_line(c, got, sizeof(got), WAIT_MS);
    if (r != 1)
        fail_msg("client %d: expected '%s', got %s", c->id, want,
                 r == 0 ? "nothing (timed out)" : "end of stream");
    if (strcmp(got, want) != 0) fail_msg("client %d: expected '%s', got '%s'", c->id, want, got);
}

/* Nothing has arrived on c, and nothing arrives within ms. */
static void expect_nothing(client_t *c, int ms)
{
    if (c->len > 0 || wait_readable(c->fd, ms))
        fail_msg("client %d: expected nothing, but data (or end of stream) arrived", c->id);
}

static void expect_eof(client_t *c)
{
    char got[512];
    int r = client_read_line(c, got, sizeof(got), WAIT_MS);
    if (r != -1)
        fail_msg("client %d: expected end of stream, got %s", c->id,
                 r == 0 ? "nothing (timed out)" : got);
}

/* ---- Waiting and ending */

static int wait_count(atomic_uint *v, unsigned want, int ms)
{
    apr_time_t end = apr_time_now() + apr_time_from_msec(ms);
    while (atomic_load(v) < want) {
        if (apr_time_now() >= end) return 0;
        apr_sleep(apr_time_from_msec(2));
    }
    return 1;
}

static void wait_sessions_ended(server_t *s, unsigned want)
{
    if (!wait_count(&s->ended, want, WAIT_MS))
        fail_msg("sessions ended: %u, expected %u", atomic_load(&s->ended), want);
}

/* Whatever state a test left: clients closed (their sessions see the end),
 * a parked session released, accepting stopped, loops joined (which waits
 * for every fiber to end). */
static void server_shutdown(server_t *s)
{
    clients_close_all(s);
    if (!s->running) return;
    atomic_store(&s->flag, 1);
    atomic_store(&s->wakes_sent, UINT_MAX);
    if (atomic_load(&s->have_ref)) pr_fiber_wake(s->park_ref); /* stale wakes are ignored */
    server_stop_accepting(s);
    pr_loops_join(s->loops);
    s->running = 0;
}

/* The normal end of a test: close the clients, every session started has
 * ended, join, and no session saw anything unexpected. */
static void server_finish(server_t *s)
{
    clients_close_all(s);
    wait_sessions_ended(s, atomic_load(&s->started));
    server_shutdown(s);
    assert_int_equal(atomic_load(&s->ended), atomic_load(&s->started));
    if (atomic_load(&s->errors)) {
        char buf[200];
        fail_msg("%u session error(s), the last: %s", atomic_load(&s->errors),
                 pr_strerror(atomic_load(&s->last_error), buf, sizeof(buf)));
    }
}

static int setup(void **state)
{
    apr_pool_t *pool;
    if (apr_pool_create(&pool, NULL) != APR_SUCCESS) return -1;
    server_t *s = apr_pcalloc(pool, sizeof(*s));
    s->pool = pool;
    if (apr_thread_mutex_create(&s->alloc_mu, APR_THREAD_MUTEX_DEFAULT, pool) != APR_SUCCESS ||
        apr_allocator_create(&s->alloc) != APR_SUCCESS)
        return -1;
    apr_allocator_mutex_set(s->alloc, s->alloc_mu);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    server_t *s = *state;
    server_shutdown(s);
    if (s->lsock) apr_socket_close(s->lsock);
    apr_allocator_destroy(s->alloc); /* every session pool has gone */
    apr_pool_destroy(s->pool);
    return 0;
}

/* ---- Tests */

/* 200 sessions at once on 2 loops, each parked on its read: lines sent in an
 * interleaved order each come back to their own client, twice over. Then
 * another 200 (reusing ended fibers, some of whose stacks were released). */
static void test_many_sessions(void **state)
{
    server_t *s = *state;
    client_t *c[N_MANY];
    char want[64];
    server_start(s, 2);

    for (int i = 0; i < N_MANY; i++)
        c[i] = client_connect(s);
    for (int k = 0; k < N_MANY; k++) { /* 73 is prime to 200: a permutation */
        int i = (k * 73) % N_MANY;
        client_send(c[i], "line %d round 1\r\n", i);
    }
    for (int k = N_MANY - 1; k >= 0; k--) {
        snprintf(want, sizeof(want), "echo line %d round 1", k);
        expect_line(c[k], want);
    }
    assert_int_equal(atomic_load(&s->started), N_MANY);

    for (int k = 0; k < N_MANY; k++) {
        int i = (k * 31 + 17) % N_MANY;
        client_send(c[i], "line %d round 2\r\n", i);
    }
    for (int k = 0; k < N_MANY; k++) {
        int i = (k * 57 + 3) % N_MANY;
        snprintf(want, sizeof(want), "echo line %d round 2", i);
        expect_line(c[i], want);
    }

    /* All end when their clients close; a second wave reuses the fibers. */
    clients_close_all(s);
    wait_sessions_ended(s, N_MANY);
    for (int i = 0; i < N_MANY; i++)
        c[i] = client_connect(s);
    for (int i = 0; i < N_MANY; i++)
        client_send(c[i], "ping\r\n");
    for (int i = N_MANY - 1; i >= 0; i--)
        expect_line(c[i], "pong");
    assert_int_equal(atomic_load(&s->started), 2 * N_MANY);
    server_finish(s);
    assert_int_equal(atomic_load(&s->ended), 2 * N_MANY);
}

/* A session with a 200 ms read timeout gets PR_ETIMEOUT when its client says
 * nothing, and can still write; a line in time re-arms the timeout (the
 * talker's session times out 200 ms after its last read began, not 200 ms
 * after it started). */
/* The client's last line and its end of input arrive together while the
 * session is busy (asleep): one read returns the line, short, and stops at
 * the FIN, which no later readiness edge announces. The session must still
 * see the end at once, not wait for its read timeout. */
static void test_fin_behind_last_line(void **state)
{
    server_t *s = *state;
    s->timeout = apr_time_from_sec(3);
    server_start(s, 1);
    client_t *c = client_connect(s);
    client_send(c, "sleep\r\n");
    assert_true(wait_count(&s->sleepers, 1, WAIT_MS));
    client_send(c, "ping\r\n");
    assert_int_equal(shutdown(c->fd, SHUT_WR), 0);
    expect_line(c, "slept");
    expect_line(c, "pong");
    expect_eof(c);
    assert_true(wait_count(&s->ended, 1, WAIT_MS));
    assert_int_equal(atomic_load(&s->errors), 0);
}

/* A client that talks before the session is set up (the bytes are
 * waiting before its socket joins the loop) is still heard: a new
 * connection is taken as having nothing to read, so this rests on the loop
 * reporting data already there when the socket is added. */
static void test_early_talker(void **state)
{
    server_t *s = *state;
    s->accept_after_data = 1;
    server_start(s, 1);
    client_t *c = client_connect(s);
    client_send(c, "ping\r\n");
    expect_line(c, "pong");
    client_send(c, "ping\r\n");
    expect_line(c, "pong");
    server_finish(s);
    assert_int_equal(atomic_load(&s->errors), 0);
}

static void where(client_t *c, char *out, size_t outsz)
{
    client_send(c, "where\r\n");
    if (client_read_line(c, out, outsz, WAIT_MS) != 1 || strncmp(out, "thread ", 7))
        fail_msg("client %d: no answer to where", c->id);
}

/* Spilling: while the first loop has little to do, every session goes to
 * it (waking a second loop per connection costs more than it gives); once
 * it is kept busy, new sessions go to the other loop. */
static void test_spill(void **state)
{
    server_t *s = *state;
    char first[64], t[64];
    server_start(s, 2);
    client_t *c = client_connect(s);
    where(c, first, sizeof(first));
    client_close(c);
    for (int i = 0; i < 10; i++) {
        c = client_connect(s);
        where(c, t, sizeof(t));
        client_close(c);
        if (strcmp(t, first)) fail_msg("session %d of a light load on another loop", i + 1);
        apr_sleep(apr_time_from_msec(5));
    }

    client_t *busy = client_connect(s);
    where(busy, t, sizeof(t));
    assert_string_equal(t, first);
    client_send(busy, "burn\r\n");
    int spilled = 0;
    for (int i = 0; i < 200 && !spilled; i++) {
        apr_sleep(apr_time_from_msec(10));
        c = client_connect(s);
        where(c, t, sizeof(t));
        client_close(c);
        spilled = strcmp(t, first) != 0;
    }
    atomic_store(&s->stop_burn, 1);
    expect_line(busy, "burnt");
    if (!spilled) fail_msg("no session went to the second loop while the first was busy");
    assert_int_equal(atomic_load(&s->errors), 0);
}

/* A session that holds the first loop's thread (a call that blocks where it
 * should have parked) must not hold up new connections: the other loop
 * sees the first one stuck and takes them. */
static void test_stuck_first_loop(void **state)
{
    server_t *s = *state;
    char first[64], t[64];
    s->greet = 1;
    server_start(s, 2);
    client_t *a = client_connect(s);
    expect_line(a, "hi");
    where(a, first, sizeof(first));
    client_send(a, "block\r\n");
    assert_true(wait_count(&s->blockers, 1, WAIT_MS));
    apr_time_t t0 = apr_time_now();
    client_t *b = client_connect(s);
    expect_line(b, "hi");
    apr_interval_time_t waited = apr_time_now() - t0;
    where(b, t, sizeof(t));
    if (!strcmp(t, first)) fail_msg("the new session ran on the stuck loop");
    if (waited > apr_time_from_msec(BLOCK_MS / 2))
        fail_msg("the new session waited %ld ms for its greeting", (long)apr_time_as_msec(waited));
    expect_line(a, "unblocked");
    assert_int_equal(atomic_load(&s->errors), 0);
}

static void test_read_timeout(void **state)
{
    server_t *s = *state;
    s->timeout = apr_time_from_msec(200);
    server_start(s, 2);

    apr_time_t t0 = apr_time_now();
    client_t *idle = client_connect(s);
    client_t *talker = client_connect(s);
    apr_sleep(apr_time_from_msec(80)); /* well within the timeout */
    client_send(talker, "ping\r\n");
    expect_line(talker, "pong");
    apr_time_t t1 = apr_time_now();

    expect_line(idle, "timeout");
    apr_interval_time_t idle_waited = apr_time_now() - t0;
    expect_line(talker, "timeout");
    apr_interval_time_t talker_waited = apr_time_now() - t1;
    if (idle_waited < apr_time_from_msec(150))
        fail_msg("timed out after %ld ms, expected at least 150",
                 (long)apr_time_as_msec(idle_waited));
    if (talker_waited < apr_time_from_msec(150))
        fail_msg("timed out %ld ms after its last reply, expected at least 150",
                 (long)apr_time_as_msec(talker_waited));
    /* The sessions end after the timeout: the clients see the end. */
    expect_eof(idle);
    expect_eof(talker);
    wait_sessions_ended(s, 2);
    server_finish(s);
}

/* On a single loop, a fiber in pr_sleep does not hold up another session. */
static void test_sleep_does_not_block_loop(void **state)
{
    server_t *s = *state;
    server_start(s, 1);
    client_t *a = client_connect(s);
    client_t *b = client_connect(s);
    client_send(a, "ping\r\n"); /* both sessions are running */
    expect_line(a, "pong");
    client_send(b, "ping\r\n");
    expect_line(b, "pong");

    apr_time_t t0 = apr_time_now();
    client_send(a, "sleep\r\n");
    /* Once A is asleep, B's request comes in (so B cannot be served first
     * merely because the loop saw it first). */
    if (!wait_count(&s->sleepers, 1, WAIT_MS)) fail_msg("the session did not start to sleep");
    client_send(b, "ping\r\n");
    expect_line(b, "pong");
    expect_nothing(a, 0); /* A is still asleep */
    expect_line(a, "slept");
    apr_interval_time_t slept = apr_time_now() - t0;
    if (slept < apr_time_from_msec(SLEEP_MS - 50))
        fail_msg("slept %ld ms, expected at least %d", (long)apr_time_as_msec(slept), SLEEP_MS);
    /* And B is still served afterwards. */
    client_send(b, "after\r\n");
    expect_line(b, "echo after");
    server_finish(s);
}

typedef struct waker_t {
    server_t *srv;
    pr_fiber_ref_t ref;
} waker_t;

static void *APR_THREAD_FUNC waker_main(apr_thread_t *thd, void *data)
{
    waker_t *w = data;
    atomic_store(&w->srv->flag, 1);
    pr_fiber_wake(w->ref);
    (void)thd;
    return NULL; /* not apr_thread_exit: see listener.c */
}

/* Set the flag and wake ref from a thread of its own. */
static void wake_from_thread(server_t *s, pr_fiber_ref_t ref)
{
    apr_thread_t *thd;
    apr_status_t rv;
    waker_t w = {s, ref};
    assert_int_equal(apr_thread_create(&thd, NULL, waker_main, &w, s->pool), APR_SUCCESS);
    assert_int_equal(apr_thread_join(&rv, thd), APR_SUCCESS);
}

static pr_fiber_ref_t wait_parked(server_t *s)
{
    if (!wait_count(&s->have_ref, 1, WAIT_MS)) fail_msg("the session did not park");
    pr_fiber_ref_t r = s->park_ref;
    assert_non_null(r.f);
    return r;
}

/* A parked fiber is woken from another thread; a stale reference (its
 * session ended, the fiber since reused) wakes nothing. One loop, so the
 * ended fiber is the one the next session gets. */
static void test_cross_thread_wake(void **state)
{
    server_t *s = *state;
    server_start(s, 1);

    client_t *c1 = client_connect(s);
    client_send(c1, "park\r\n");
    pr_fiber_ref_t stale = wait_parked(s);
    expect_nothing(c1, 100); /* parked: no reply before the wake */
    wake_from_thread(s, stale);
    expect_line(c1, "woken");
    client_send(c1, "ping\r\n"); /* the session goes on */
    expect_line(c1, "pong");
    client_close(c1);
    wait_sessions_ended(s, 1);

    /* A new session parks (reusing the ended fiber), and the old session's
     * reference is used from this thread. */
    atomic_store(&s->have_ref, 0);
    atomic_store(&s->flag, 0);
    client_t *c2 = client_connect(s);
    client_send(c2, "park\r\n");
    pr_fiber_ref_t fresh = wait_parked(s);
    if (fresh.f == stale.f)
        assert_true(fresh.gen != stale.gen);
    else
        print_message("note: the new session did not reuse the ended fiber\n");
    pr_fiber_wake(stale);
    client_t *c3 = client_connect(s); /* the loop has drained its inbox once this answers */
    client_send(c3, "ping\r\n");
    expect_line(c3, "pong");
    apr_sleep(apr_time_from_msec(100));
    if (atomic_load(&s->park_returns) != 0)
        fail_msg("a stale reference woke the fiber's new session");
    expect_nothing(c2, 0);

    wake_from_thread(s, fresh);
    expect_line(c2, "woken");
    client_send(c3, "ping\r\n");
    expect_line(c3, "pong");
    server_finish(s);
}

typedef struct many_waker_t {
    server_t *srv;
    unsigned sent;
} many_waker_t;

/* Answer each round of "manywakes" once the session has announced it: the
 * wake races the loop going to sleep in epoll_wait, N_WAKES times. */
static void *APR_THREAD_FUNC many_waker_main(apr_thread_t *thd, void *data)
{
    many_waker_t *w = data;
    server_t *s = w->srv;
    for (unsigned i = 0; i < N_WAKES; i++) {
        apr_time_t end = apr_time_now() + apr_time_from_msec(WAIT_MS);
        while (atomic_load(&s->step) < i + 1) {
            if (apr_time_now() >= end) goto out; /* the session is stuck */
            sched_yield();
        }
        atomic_store(&s->wakes_sent, i + 1);
        pr_fiber_wake(s->park_ref);
        w->sent = i + 1;
    }
out:
    (void)thd;
    return NULL;
}

/* Many park/wake rounds between a fiber and another thread, each wake sent
 * as soon as the fiber is about to park: none may be lost. */
static void test_cross_thread_wake_many(void **state)
{
    server_t *s = *state;
    char want[64];
    server_start(s, 1);
    client_t *c = client_connect(s);
    client_t *other = client_connect(s);
    client_send(other, "ping\r\n");
    expect_line(other, "pong");

    apr_thread_t *thd;
    apr_status_t rv;
    many_waker_t w = {s, 0};
    client_send(c, "manywakes\r\n");
    assert_int_equal(apr_thread_create(&thd, NULL, many_waker_main, &w, s->pool), APR_SUCCESS);
    assert_int_equal(apr_thread_join(&rv, thd), APR_SUCCESS);
    if (w.sent != N_WAKES)
        fail_msg("the session stopped after %u of %u rounds: a wake was lost", w.sent,
                 (unsigned)N_WAKES);
    snprintf(want, sizeof(want), "woken %u", (unsigned)N_WAKES);
    expect_line(c, want);
    client_send(other, "ping\r\n");
    expect_line(other, "pong");
    server_finish(s);
}

/* 8 MiB to a client that waits 300 ms before reading: the session's writes
 * park until the socket is writable (the loop meanwhile serves another
 * session), and every byte arrives in order. */
static void test_large_output_slow_reader(void **state)
{
    server_t *s = *state;
    server_start(s, 1);
    client_t *big = client_connect_buf(s, 64 * 1024);
    client_t *other = client_connect(s);
    client_send(other, "ping\r\n");
    expect_line(other, "pong");

    client_send(big, "big\r\n");
    apr_sleep(apr_time_from_msec(300));
    /* The writer is waiting for its reader; the (only) loop is not. */
    client_send(other, "ping\r\n");
    expect_line(other, "pong");

    unsigned char *data = malloc(BIG_SIZE);
    assert_non_null(data);
    size_t got = big->len < BIG_SIZE ? big->len : BIG_SIZE;
    memcpy(data, big->buf, got);
    memmove(big->buf, big->buf + got, big->len - got);
    big->len -= got;
    const char *problem = NULL;
    while (got < BIG_SIZE && !problem) {
        if (!wait_readable(big->fd, WAIT_MS)) {
            problem = "timed out";
            break;
        }
        ssize_t n = recv(big->fd, data + got, BIG_SIZE - got, 0);
        if (n > 0)
            got += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else
            problem = "end of stream";
    }
    size_t bad = BIG_SIZE;
    for (size_t i = 0; i < got && bad == BIG_SIZE; i++)
        if (data[i] != pattern_at(i)) bad = i;
    free(data);
    if (problem) fail_msg("after %zu of %u bytes: %s", got, BIG_SIZE, problem);
    if (bad != BIG_SIZE) fail_msg("byte %zu differs from the pattern", bad);

    char line[100];
    long took = -1;
    assert_int_equal(client_read_line(big, line, sizeof(line), WAIT_MS), 1);
    if (sscanf(line, "done %ld", &took) != 1) fail_msg("after the data: '%s'", line);
    /* The writes could not all be done before the reader started. */
    if (took < 250) fail_msg("the writes took %ld ms: they never waited for the reader", took);
    client_send(big, "ping\r\n");
    expect_line(big, "pong");
    server_finish(s);
}

/* Outside a fiber: no fiber, not a loop thread, sleeping blocks the thread. */
static void test_outside_fiber(void **state)
{
    (void)state;
    assert_null(pr_fiber_self());
    assert_int_equal(pr_loops_thread(), 0);
    pr_fiber_ref_t r = pr_fiber_ref();
    assert_null(r.f);
    pr_fiber_wake(r); /* names no fiber: nothing happens */

    apr_time_t t0 = apr_time_now();
    pr_sleep(apr_time_from_msec(10));
    apr_interval_time_t slept = apr_time_now() - t0;
    if (slept < apr_time_from_msec(9))
        fail_msg("pr_sleep(10 ms) returned after %ld us", (long)slept);

    pr_fiber_io_t io;
    memset(&io, 0, sizeof(io));
    assert_int_not_equal(pr_fiber_io_add(&io, 0), APR_SUCCESS);
    assert_int_not_equal(pr_fiber_spawn(NULL, NULL), APR_SUCCESS);
}

/* After pr_loops_stop_accepting a new connection is not served (the kernel
 * completes it, but no session greets it), an open session still is, and
 * pr_loops_join waits for that session's fiber to end. */
static void test_stop_accepting(void **state)
{
    server_t *s = *state;
    s->greet = 1;
    server_start(s, 2);
    client_t *a = client_connect(s);
    expect_line(a, "hi");

    server_stop_accepting(s);
    client_t *b = client_connect(s);
    expect_nothing(b, 300);
    client_send(a, "ping\r\n");
    expect_line(a, "pong");
    assert_int_equal(atomic_load(&s->started), 1);

    /* A's session is asleep when join is called; it then replies, sees the
     * end of its input and ends, and only then may join return. */
    client_close(b);
    client_send(a, "sleep\r\n");
    assert_int_equal(shutdown(a->fd, SHUT_WR), 0);
    pr_loops_join(s->loops);
    s->running = 0;
    assert_int_equal(atomic_load(&s->started), 1);
    assert_int_equal(atomic_load(&s->ended), 1);
    expect_line(a, "slept");
    expect_eof(a);
    server_finish(s);
}

int main(void)
{
    apr_initialize();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_many_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fin_behind_last_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_early_talker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stuck_first_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sleep_does_not_block_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cross_thread_wake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cross_thread_wake_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_output_slow_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outside_fiber, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_accepting, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_terminate();
    return rc;
}

#else /* loops exist on Linux only */

int main(void)
{
    printf("test_fiber: event loops are Linux only; skipped\n");
    return 0;
}

#endif
