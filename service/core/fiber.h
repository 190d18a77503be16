/* Fibers on event loops: sessions run as fibers (small stacks, switched in
 * user space) on a few loop threads, one per core, each waiting on its own
 * epoll set. A session's code stays straight-line: when it must wait -- for
 * its socket, for another thread (the store's commit), for time -- it waits
 * through this face, which parks the fiber and lets its loop run others. So
 * thousands of idle sessions cost a few pages each and no thread, and a busy
 * server switches between sessions without the kernel. What may hold a
 * thread for long (LDAP, password hashing) goes to helper threads through
 * pr_fiber_blocking.
 *
 * Every waiting call also works outside a fiber (a thread of its own, a
 * test, the CLI): it then blocks the calling thread as usual. Loops exist on
 * Linux (epoll); elsewhere pr_loops_start answers APR_ENOTIMPL and callers
 * run sessions on threads instead. */
#ifndef PR_FIBER_H
#define PR_FIBER_H

#include <apr_pools.h>
#include <apr_time.h>

typedef struct pr_fiber_t pr_fiber_t;
typedef struct pr_loops_t pr_loops_t;

/* A fiber as another thread may name it: stale references (the fiber has
 * ended, or was reused for another session) are ignored by pr_fiber_wake. */
typedef struct pr_fiber_ref_t {
    pr_fiber_t *f;
    apr_uint32_t gen;
} pr_fiber_ref_t;

/* Name the calling thread (up to 15 characters) for top -H, ps and perf;
 * a no-op where the system has no thread names. */
void pr_thread_name(const char *name);

/* Non-zero on a loop thread (in a fiber, or accepting). */
int pr_loops_thread(void);
/* The running fiber, or NULL on a plain thread. */
pr_fiber_t *pr_fiber_self(void);
pr_fiber_ref_t pr_fiber_ref(void);

/* Park the running fiber until pr_fiber_wake or until deadline (0: none).
 * Returns 1 when the deadline passed. Wakes may be spurious: callers wait in
 * a loop on their own condition. Only in a fiber. */
int pr_fiber_park(apr_time_t deadline);
/* Make a parked fiber runnable; from any thread. */
void pr_fiber_wake(pr_fiber_ref_t r);

/* Run fn(arg), which may hold its thread for long (an LDAP round trip, a
 * password hash): from a fiber on a helper thread while the fiber parks, so
 * its loop goes on with the other sessions; elsewhere right here. fn must
 * not use fiber waits itself. */
void pr_fiber_blocking(void (*fn)(void *), void *arg);

/* Sleep: parks a fiber, blocks a thread. */
void pr_sleep(apr_interval_time_t t);

/* A descriptor a fiber waits on (a session's socket). Its readiness is
 * tracked edge-triggered: the loop sets a bit of ready when it sees fd
 * become ready; the caller clears it when a non-blocking call says EAGAIN
 * (or a read comes back short: the socket is drained), and then waits for
 * it before trying again. So a session waiting for its client's next
 * command parks at once, with no read that can only say EAGAIN. Closing
 * the descriptor unregisters it (nothing else may hold the socket: no dup,
 * no child inheriting it). */
enum {
    PR_IO_IN = 1,
    PR_IO_OUT = 2,
    /* Set for good once the peer closed its side or the socket failed: a
     * short read may then have stopped at the end of input, with no edge to
     * come, so the caller must not take it for "drained". */
    PR_IO_HUP = 4
};
typedef struct pr_fiber_io_t {
    int kind; /* private */
    int fd;
    unsigned ready; /* PR_IO_* seen since the caller cleared it */
    int out;        /* writability watched (after a write first waited) */
    pr_fiber_t *waiter;
} pr_fiber_io_t;

/* Register fd (non-blocking) with the running fiber's loop; ready starts
 * as both (unknown: try). */
apr_status_t pr_fiber_io_add(pr_fiber_io_t *io, int fd);
/* Wait until ready has what (PR_IO_IN or PR_IO_OUT), or until deadline
 * (0: none): APR_SUCCESS or APR_TIMEUP. At once if it is set already. */
apr_status_t pr_fiber_io_wait(pr_fiber_io_t *io, unsigned what, apr_time_t deadline);

/* ---- Loops (the listener's side). */

/* A listening socket as loops see it: on readiness a loop thread (not a
 * fiber) calls accept(ctx), which accepts one connection and starts a fiber
 * for it with pr_fiber_spawn. It returns 1 if it took one, 0 if none was
 * waiting, -1 if accepting failed for want of resources (descriptors,
 * memory): the loop then stops looking at its listeners for a moment. */
typedef int (*pr_accept_fn)(void *ctx);

/* Start n loop threads (n <= 0: one per online core), each watching every
 * listening fd (exclusive wake-ups: one loop per connection). */
apr_status_t pr_loops_start(pr_loops_t **loops_r, int n, const int *listen_fds,
                            void *const *accept_ctx, int n_listen, pr_accept_fn accept,
                            apr_pool_t *pool);
/* Start fn(arg) as a fiber on the calling loop thread (from accept). */
apr_status_t pr_fiber_spawn(void (*fn)(void *), void *arg);
/* Stop accepting; returns once no loop can call accept again, so the
 * listening sockets may be closed. */
void pr_loops_stop_accepting(pr_loops_t *loops);
/* End the loop threads once their fibers have all ended. */
void pr_loops_join(pr_loops_t *loops);

#endif
