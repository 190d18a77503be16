/* Listeners, connection limits and sessions. On Linux sessions are fibers
 * on one event loop per core (fiber.h): the loops accept, and a session
 * waiting for its client parks instead of holding a thread. Elsewhere a
 * session runs on its own detached thread with a small stack. Either way it
 * has its own unmanaged pool, so an idle connection costs a few pages and a
 * slow client never delays another. All session pools draw from one shared allocator that keeps a
 * bounded cache of freed blocks: Debian's APR maps every block with mmap, and an munmap per block
 * per session (with its TLB shootdown on every core) was the largest single cost of a short SMTP
 * session. */
#include "service/core/listener.h"
#include "service/core/fiber.h"
#include "service/core/log.h"
#include "service/core/status.h"

#include <apr_atomic.h>
#include <apr_hash.h>
#include <apr_poll.h>
#include <apr_portable.h>
#include <apr_strings.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <pthread.h>
#endif

#ifdef POSTROOM_SANITIZE
#define SESSION_STACK (2 * 1024 * 1024) /* sanitizers need room for redzones */
#else
#define SESSION_STACK (256 * 1024) /* reserved, not committed: idle cost is touched pages */
#endif
#define MAX_LISTENERS 64
#define SESSION_BLOCK_CACHE (8 * 1024 * 1024) /* freed pool blocks kept for reuse */
/* A thread whose session ended waits this long for the next connection
 * before it exits, and at most MAX_SPARE threads wait: a busy server hands
 * connections to waiting threads instead of creating one per connection. */
#define SPARE_WAIT apr_time_from_sec(5)
#define MAX_SPARE 32

typedef struct lsock_t {
    pr_listener_t *owner;
    apr_socket_t *sock;
    apr_port_t port;
    pr_session_fn fn;
    void *service;
    const char *busy_reply;
} lsock_t;

typedef struct addr_count_t {
    int count;
    char ip[];
} addr_count_t;

struct pr_listener_t {
    apr_pool_t *pool;
    pr_listener_opts_t opts;
    lsock_t socks[MAX_LISTENERS];
    int n_socks;
    apr_pollset_t *pollset;
    pr_loops_t *loops;      /* sessions on event loops, or */
    apr_thread_t *acceptor; /* an acceptor thread and a thread per session */
    apr_thread_mutex_t *mutex;
    apr_thread_cond_t *cond;       /* signalled when a session ends */
    apr_thread_cond_t *spare_cond; /* signalled when a session is handed over */
    pr_session_t *handoff;         /* sessions waiting for a spare thread */
    int n_handoff;
    int n_spare;            /* threads waiting for a session */
    int n_threads;          /* session threads alive (busy or spare) */
    apr_allocator_t *alloc; /* shared by all session pools */
    apr_thread_mutex_t *alloc_mutex;
    pr_session_t *sessions; /* doubly linked list of live sessions */
    int n_sessions;
    apr_hash_t *per_addr;
    volatile apr_uint32_t stopping; /* set once, by apr_atomic_xchg32 */
    apr_uint32_t sid_base;
    volatile apr_uint32_t sid_counter;
};

/* The shared allocator goes with the listener's pool, unless sessions that
 * outlived the stop grace still use it (the process is about to exit). */
static apr_status_t listener_cleanup(void *data)
{
    pr_listener_t *l = data;
    if (l->alloc && l->n_sessions == 0) apr_allocator_destroy(l->alloc);
    l->alloc = NULL;
    return APR_SUCCESS;
}

apr_status_t pr_listener_create(pr_listener_t **l_r, const pr_listener_opts_t *opts,
                                apr_pool_t *pool)
{
    pr_listener_t *l = apr_pcalloc(pool, sizeof(*l));
    apr_status_t st;
    l->pool = pool;
    l->opts = *opts;
    l->per_addr = apr_hash_make(pool);
    if ((st = apr_thread_mutex_create(&l->mutex, APR_THREAD_MUTEX_DEFAULT, pool)) ||
        (st = apr_thread_cond_create(&l->cond, pool)) ||
        (st = apr_thread_cond_create(&l->spare_cond, pool)) ||
        (st = apr_thread_mutex_create(&l->alloc_mutex, APR_THREAD_MUTEX_DEFAULT, pool)) ||
        (st = apr_pollset_create(&l->pollset, MAX_LISTENERS, pool, APR_POLLSET_WAKEABLE)) ||
        (st = apr_allocator_create(&l->alloc)))
        return st;
    apr_allocator_mutex_set(l->alloc, l->alloc_mutex);
    apr_allocator_max_free_set(l->alloc, SESSION_BLOCK_CACHE);
    apr_pool_cleanup_register(pool, l, listener_cleanup, apr_pool_cleanup_null);
    RAND_bytes((unsigned char *)&l->sid_base, sizeof(l->sid_base));
    *l_r = l;
    return APR_SUCCESS;
}

apr_status_t pr_listener_add(pr_listener_t *l, const pr_endpoint_t *ep, pr_session_fn fn,
                             void *service, const char *busy_reply, const char **err_r)
{
    apr_sockaddr_t *sa;
    apr_socket_t *sock;
    apr_status_t st;
    char buf[120];

    if (l->n_socks == MAX_LISTENERS) {
        *err_r = "too many listeners";
        return PR_ETOOMANY;
    }
    st = apr_sockaddr_info_get(&sa, ep->host, APR_UNSPEC, ep->port, 0, l->pool);
    if (st == APR_SUCCESS)
        st = apr_socket_create(&sock, sa->family, SOCK_STREAM, APR_PROTO_TCP, l->pool);
    if (st == APR_SUCCESS) {
        apr_socket_opt_set(sock, APR_SO_REUSEADDR, 1);
        /* Accepted sockets inherit it (Linux, BSD), and APR knows: no
         * setsockopt per connection. */
        apr_socket_opt_set(sock, APR_TCP_NODELAY, 1);
#if APR_HAVE_IPV6
        if (sa->family == APR_INET6) apr_socket_opt_set(sock, APR_IPV6_V6ONLY, 1);
#endif
        st = apr_socket_bind(sock, sa);
        if (st == APR_SUCCESS) st = apr_socket_listen(sock, 511);
    }
    if (st != APR_SUCCESS) {
        *err_r = apr_psprintf(l->pool, "cannot listen on %s:%u: %s", ep->host, ep->port,
                              pr_strerror(st, buf, sizeof(buf)));
        return st;
    }
    apr_socket_opt_set(sock, APR_SO_NONBLOCK, 1);
    lsock_t *ls = &l->socks[l->n_socks];
    ls->owner = l;
    ls->sock = sock;
    ls->fn = fn;
    ls->service = service;
    ls->busy_reply = busy_reply;
    apr_sockaddr_t *bound;
    apr_socket_addr_get(&bound, APR_LOCAL, sock);
    ls->port = bound->port;

    apr_pollfd_t pfd = {0};
    pfd.p = l->pool;
    pfd.desc_type = APR_POLL_SOCKET;
    pfd.reqevents = APR_POLLIN;
    pfd.desc.s = sock;
    pfd.client_data = ls;
    st = apr_pollset_add(l->pollset, &pfd);
    if (st != APR_SUCCESS) {
        *err_r = "cannot poll listener";
        return st;
    }
    l->n_socks++;
    return APR_SUCCESS;
}

apr_port_t pr_listener_port(pr_listener_t *l, int i)
{
    return i >= 0 && i < l->n_socks ? l->socks[i].port : 0;
}

static int listener_exempt(pr_listener_t *l, const apr_sockaddr_t *peer)
{
    return l->opts.n_exempt > 0 && pr_cidr_match_any(l->opts.exempt, l->opts.n_exempt, peer);
}

/* Admit a session under the limits; 0 if refused. Called with the mutex held. */
static int listener_admit(pr_listener_t *l, pr_session_t *s, int exempt)
{
    if (l->n_sessions >= l->opts.max_connections) return 0;
    addr_count_t *ac = apr_hash_get(l->per_addr, s->peer_ip, APR_HASH_KEY_STRING);
    if (!exempt && ac && ac->count >= l->opts.max_per_address) return 0;
    if (!ac) {
        size_t n = strlen(s->peer_ip) + 1;
        ac = malloc(sizeof(*ac) + n);
        if (!ac) abort();
        ac->count = 0;
        memcpy(ac->ip, s->peer_ip, n);
        apr_hash_set(l->per_addr, ac->ip, APR_HASH_KEY_STRING, ac);
    }
    ac->count++;
    s->next = l->sessions;
    s->prev = NULL;
    if (l->sessions) l->sessions->prev = s;
    l->sessions = s;
    l->n_sessions++;
    return 1;
}

static void listener_release(pr_listener_t *l, pr_session_t *s)
{
    apr_thread_mutex_lock(l->mutex);
    addr_count_t *ac = apr_hash_get(l->per_addr, s->peer_ip, APR_HASH_KEY_STRING);
    if (ac && --ac->count == 0) {
        apr_hash_set(l->per_addr, ac->ip, APR_HASH_KEY_STRING, NULL);
        free(ac);
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        l->sessions = s->next;
    if (s->next) s->next->prev = s->prev;
    l->n_sessions--;
    apr_thread_cond_broadcast(l->cond);
    apr_thread_mutex_unlock(l->mutex);
}

static void session_run(pr_session_t *s)
{
    lsock_t *ls = s->service;
    s->service = ls->service;
    ls->fn(s);
    pr_conn_close(s->conn);
    /* Off the list before the socket closes: a stop waking sessions (under
     * the listener's lock) must never shut down a descriptor number that
     * some other file may already have been given. */
    apr_pool_t *pool = s->pool;
    listener_release(s->owner, s);
    apr_socket_close(s->sock);
    apr_pool_destroy(pool);
}

/* Wait as a spare for the next session; NULL when none came in time. */
static pr_session_t *listener_next_session(pr_listener_t *l)
{
    pr_session_t *s = NULL;
    apr_thread_mutex_lock(l->mutex);
    if (!l->stopping && l->n_spare < MAX_SPARE) {
        apr_time_t deadline = apr_time_now() + SPARE_WAIT;
        l->n_spare++;
        while (!l->handoff && !l->stopping) {
            apr_time_t now = apr_time_now();
            if (now >= deadline) break;
            apr_thread_cond_timedwait(l->spare_cond, l->mutex, deadline - now);
        }
        l->n_spare--;
        if ((s = l->handoff) != NULL) {
            l->handoff = s->handoff_next;
            l->n_handoff--;
        }
    }
    if (!s) {
        l->n_threads--;
        apr_thread_cond_broadcast(l->cond);
    }
    apr_thread_mutex_unlock(l->mutex);
    return s;
}

static void *session_main(void *arg)
{
    pr_session_t *s = arg;
    pr_listener_t *l = s->owner;
    do
        session_run(s);
    while ((s = listener_next_session(l)) != NULL);
    return NULL;
}

#ifdef _WIN32
static DWORD WINAPI session_main_win(LPVOID arg)
{
    session_main(arg);
    return 0;
}
#endif

static int listener_thread_start(pr_session_t *s)
{
#ifdef _WIN32
    HANDLE h = CreateThread(NULL, SESSION_STACK, session_main_win, s,
                            STACK_SIZE_PARAM_IS_A_RESERVATION, NULL);
    if (!h) return 0;
    CloseHandle(h);
    return 1;
#else
    pthread_attr_t attr;
    pthread_t th;
    int ok;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, SESSION_STACK);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ok = pthread_create(&th, &attr, session_main, s) == 0;
    pthread_attr_destroy(&attr);
    return ok;
#endif
}

/* Hand the session to a spare thread, else start a thread for it. */
static int listener_spawn(pr_listener_t *l, pr_session_t *s)
{
    apr_thread_mutex_lock(l->mutex);
    if (l->n_spare > l->n_handoff) {
        s->handoff_next = l->handoff;
        l->handoff = s;
        l->n_handoff++;
        apr_thread_cond_signal(l->spare_cond);
        apr_thread_mutex_unlock(l->mutex);
        return 1;
    }
    l->n_threads++;
    apr_thread_mutex_unlock(l->mutex);
    if (listener_thread_start(s)) return 1;
    apr_thread_mutex_lock(l->mutex);
    l->n_threads--;
    apr_thread_mutex_unlock(l->mutex);
    return 0;
}

static void session_fiber(void *arg)
{
    session_run(arg);
}

/* Accept one connection: 1 if one was taken (or refused), 0 when none was
 * waiting, -1 when accept failed (out of descriptors...). */
static int listener_accept(pr_listener_t *l, lsock_t *ls)
{
    apr_pool_t *pool;
    apr_socket_t *ns;
    apr_sockaddr_t *peer, *local;
    char buf[120];

    if (apr_pool_create_unmanaged_ex(&pool, NULL, l->alloc) != APR_SUCCESS) abort();

    apr_status_t st = apr_socket_accept(&ns, ls->sock, pool);
    if (st != APR_SUCCESS) {
        apr_pool_destroy(pool);
        if (APR_STATUS_IS_EAGAIN(st) || APR_STATUS_IS_EINTR(st)) return 0;
        if (APR_STATUS_IS_ECONNABORTED(st)) return 1; /* gone already; next */
        pr_log_warn(NULL, "accept: %s", pr_strerror(st, buf, sizeof(buf)));
        return -1;
    }
    pr_session_t *s = apr_pcalloc(pool, sizeof(*s));
    s->pool = pool;
    s->owner = l;
    s->sock = ns;
    s->service = ls;
    apr_socket_addr_get(&peer, APR_REMOTE, ns);
    apr_socket_addr_get(&local, APR_LOCAL, ns);
    apr_sockaddr_ip_get((char **)&s->peer_ip, peer);
    apr_sockaddr_ip_get((char **)&s->local_ip, local);
    s->peer_port = peer->port;
    s->local_port = local->port;
    s->sid =
        apr_psprintf(pool, "%08X%06X", l->sid_base, apr_atomic_inc32(&l->sid_counter) & 0xffffff);
    if (!l->loops) {
        /* Accepted sockets may inherit non-blocking mode; session threads
         * block, with the kernel's timeouts (conn.c). */
        apr_socket_opt_set(ns, APR_SO_NONBLOCK, 0);
        apr_socket_timeout_set(ns, -1);
    }
    apr_socket_opt_set(ns, APR_TCP_NODELAY, 1);

    int exempt = listener_exempt(l, peer);
    apr_thread_mutex_lock(l->mutex);
    int admitted = !l->stopping && listener_admit(l, s, exempt);
    apr_thread_mutex_unlock(l->mutex);
    if (!admitted) {
        pr_log_info(s->sid, "refused %s port %u: connection limit", s->peer_ip,
                    (unsigned)s->local_port);
        apr_size_t n = strlen(ls->busy_reply);
        apr_socket_timeout_set(ns, apr_time_from_sec(1));
        apr_socket_send(ns, ls->busy_reply, &n);
        apr_socket_close(ns);
        apr_pool_destroy(pool);
        return 1;
    }
    int started =
        pr_conn_create_socket(&s->conn, ns, pool) == APR_SUCCESS &&
        (l->loops ? pr_fiber_spawn(session_fiber, s) == APR_SUCCESS : listener_spawn(l, s));
    if (!started) {
        pr_log_error(s->sid, "cannot start a session");
        if (s->conn) pr_conn_close(s->conn);
        listener_release(l, s);
        apr_socket_close(ns);
        apr_pool_destroy(pool);
    }
    return 1;
}

static int listener_accept_fn(void *ctx)
{
    lsock_t *ls = ctx;
    return listener_accept(ls->owner, ls);
}

static void *APR_THREAD_FUNC listener_thread(apr_thread_t *thd, void *data)
{
    pr_listener_t *l = data;
    while (!l->stopping) {
        const apr_pollfd_t *ready;
        apr_int32_t n = 0;
        apr_status_t st = apr_pollset_poll(l->pollset, -1, &n, &ready);
        if (l->stopping) break;
        if (st != APR_SUCCESS) continue; /* EINTR or wakeup */
        for (apr_int32_t i = 0; i < n; i++)
            if (listener_accept(l, ready[i].client_data) < 0)
                apr_sleep(apr_time_from_msec(100)); /* out of descriptors: do not spin */
    }
    /* Return rather than apr_thread_exit(): pthread_exit's unwinding trips
     * ASan's thread teardown (a false stack-buffer-underflow). */
    (void)thd;
    return NULL;
}

apr_status_t pr_listener_start(pr_listener_t *l)
{
    int fds[MAX_LISTENERS];
    void *ctx[MAX_LISTENERS];
    for (int i = 0; i < l->n_socks; i++) {
        apr_os_sock_t fd;
        apr_os_sock_get(&fd, l->socks[i].sock);
        fds[i] = (int)fd;
        ctx[i] = &l->socks[i];
    }
    apr_status_t st =
        pr_loops_start(&l->loops, 0, fds, ctx, l->n_socks, listener_accept_fn, l->pool);
    if (st != APR_ENOTIMPL) return st;
    l->loops = NULL;
    apr_threadattr_t *attr;
    apr_threadattr_create(&attr, l->pool);
    return apr_thread_create(&l->acceptor, attr, listener_thread, l, l->pool);
}

int pr_listener_stopping(pr_listener_t *l)
{
    return l->stopping;
}

int pr_session_stopping(const pr_session_t *s)
{
    return s->owner ? s->owner->stopping : 0;
}

/* Twice per mail transaction, so without the listener's lock: the exchange
 * is a full barrier between publishing busy and reading stopping, and
 * pr_listener_stop does the mirror image (stopping, then each busy), so at
 * least one side sees the other: either this session learns that the
 * server is stopping, or the server sees it busy and lets it finish. */
int pr_session_set_busy(pr_session_t *s, int busy)
{
    apr_atomic_xchg32(&s->busy, busy ? 1 : 0);
    return s->owner ? (int)apr_atomic_read32(&s->owner->stopping) : 0;
}

int pr_listener_sessions(pr_listener_t *l)
{
    apr_thread_mutex_lock(l->mutex);
    int n = l->n_sessions;
    apr_thread_mutex_unlock(l->mutex);
    return n;
}

/* Wake sessions blocked in a read; with all=0 only those not busy. */
static void listener_wake(pr_listener_t *l, int all)
{
    for (pr_session_t *s = l->sessions; s; s = s->next)
        if (all || !apr_atomic_read32(&s->busy)) pr_conn_shutdown_read(s->conn);
}

int pr_listener_stop(pr_listener_t *l, apr_interval_time_t grace)
{
    apr_status_t rv;
    apr_thread_mutex_lock(l->mutex);
    apr_atomic_xchg32(&l->stopping, 1);
    apr_thread_mutex_unlock(l->mutex);
    if (l->loops) pr_loops_stop_accepting(l->loops);
    if (l->acceptor) {
        apr_pollset_wakeup(l->pollset);
        apr_thread_join(&rv, l->acceptor);
        l->acceptor = NULL;
    }
    for (int i = 0; i < l->n_socks; i++)
        apr_socket_close(l->socks[i].sock);
    l->n_socks = 0;

    apr_time_t deadline = apr_time_now() + grace;
    int left, woken_all = 0;
    apr_thread_mutex_lock(l->mutex);
    listener_wake(l, 0);
    while ((left = l->n_sessions) > 0) {
        apr_time_t now = apr_time_now();
        if (now >= deadline) {
            if (woken_all) break;
            listener_wake(l, 1);
            woken_all = 1;
            deadline = now + apr_time_from_sec(5);
            continue;
        }
        /* Re-wake periodically: a session may have turned idle since. */
        apr_interval_time_t wait = deadline - now;
        if (wait > apr_time_from_msec(200)) wait = apr_time_from_msec(200);
        apr_thread_cond_timedwait(l->cond, l->mutex, wait);
        listener_wake(l, 0);
    }
    if (left == 0) { /* let the spare threads go, and wait until they have */
        apr_thread_cond_broadcast(l->spare_cond);
        while (l->n_threads > 0)
            apr_thread_cond_wait(l->cond, l->mutex);
    }
    apr_thread_mutex_unlock(l->mutex);
    if (left == 0 && l->loops) {
        pr_loops_join(l->loops);
        l->loops = NULL;
    }
    return woken_all ? left : 0;
}
