/* Fibers and their event loops (see fiber.h).
 *
 * A loop thread owns its fibers: it alone runs, parks and retires them, so
 * a fiber's fields need no lock. Other threads reach a loop only through its
 * inbox (a mutex-guarded array of fiber references plus an eventfd that
 * wakes the loop's epoll_wait). A fiber that ended is kept, stack and all,
 * for the loop's next session; its generation number changes so that late
 * wakes meant for the old session are dropped.
 *
 * Switching: on x86-64 a few instructions save the callee-saved registers
 * and swap stack pointers (no system call, unlike swapcontext, which also
 * sets the signal mask); elsewhere ucontext. Under AddressSanitizer every
 * switch is announced to it (__sanitizer_*_switch_fiber), and a reused
 * stack is unpoisoned first. */
#include "service/core/fiber.h"

#include <apr_atomic.h>

#if defined(__linux__) && !defined(PR_NO_LOOPS)

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define PR_FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PR_FIBER_ASAN 1
#endif
#endif
#ifdef PR_FIBER_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define FIBER_STACK (2 * 1024 * 1024) /* room for the sanitizer's redzones */
#else
#define FIBER_STACK (256 * 1024) /* reserved; an idle session touches a few pages */
#endif
#define FIBER_CACHE 64 /* ended fibers a loop keeps for its next sessions */
#define LOOP_EVENTS 64 /* epoll events taken per wait */
#define LOOP_MAX 16
#define ACCEPT_PAUSE apr_time_from_msec(100) /* after accept ran out of descriptors */
/* Spilling (see loop_spill_check): the first loop takes every new connection
 * until it is busy for more than SPILL_ON of a window's time, then the other
 * loops take them too, until its load falls below SPILL_OFF. */
#define SPILL_WINDOW apr_time_from_msec(20)
#define SPILL_ON 0.75
#define SPILL_OFF 0.40
/* The other loops also look every STALL_CHECK whether the first one is
 * stuck in one fiber (a call that blocks its thread): then they accept. */
#define STALL_CHECK apr_time_from_msec(100)

enum { F_RUNNABLE, F_RUNNING, F_PARKED, F_DEAD };
enum { K_LISTEN = 1, K_WAKE, K_IO };

typedef struct loop_t loop_t;

/* ---- Machine contexts */

#if defined(__x86_64__) && !defined(PR_FIBER_UCONTEXT)
typedef struct ctx_t {
    void *sp;
} ctx_t;

/* pr_ctx_swap(&save_sp, new_sp): push the callee-saved registers and the
 * SSE/x87 control words, store the stack pointer, load the other one, pop
 * its registers and return into it. A new fiber's stack is laid out so that
 * the return lands in pr_ctx_start with the fiber in %rbx. */
void pr_ctx_swap(void **save_sp, void *new_sp) __attribute__((visibility("hidden")));
void pr_ctx_start(void) __attribute__((visibility("hidden")));
__asm__(".text\n"
        ".globl pr_ctx_swap\n"
        ".hidden pr_ctx_swap\n"
        ".type pr_ctx_swap,@function\n"
        "pr_ctx_swap:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  subq $8, %rsp\n"
        "  stmxcsr (%rsp)\n"
        "  fnstcw 4(%rsp)\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  ldmxcsr (%rsp)\n"
        "  fldcw 4(%rsp)\n"
        "  addq $8, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size pr_ctx_swap, .-pr_ctx_swap\n"
        ".globl pr_ctx_start\n"
        ".hidden pr_ctx_start\n"
        ".type pr_ctx_start,@function\n"
        "pr_ctx_start:\n"
        "  movq %rbx, %rdi\n"
        "  call pr_fiber_main\n"
        "  ud2\n"
        ".size pr_ctx_start, .-pr_ctx_start\n");

static void ctx_make(ctx_t *c, char *lo, size_t size, pr_fiber_t *f)
{
    uintptr_t top = ((uintptr_t)(lo + size)) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)(top - 16); /* %rsp after the ret: 16-aligned */
    *--sp = (uint64_t)(uintptr_t)pr_ctx_start;
    *--sp = 0;                                   /* rbp: ends frame-pointer walks */
    *--sp = (uint64_t)(uintptr_t)f;              /* rbx */
    *--sp = 0;                                   /* r12 */
    *--sp = 0;                                   /* r13 */
    *--sp = 0;                                   /* r14 */
    *--sp = 0;                                   /* r15 */
    *--sp = 0x1F80u | ((uint64_t)0x037Fu << 32); /* MXCSR, x87 control word */
    c->sp = sp;
}

static void ctx_switch(ctx_t *from, ctx_t *to)
{
    pr_ctx_swap(&from->sp, to->sp);
}
#else
#include <ucontext.h>
typedef struct ctx_t {
    ucontext_t uc;
} ctx_t;

void pr_fiber_main(pr_fiber_t *f);

static void ctx_entry(unsigned hi, unsigned lo)
{
    pr_fiber_main((pr_fiber_t *)(uintptr_t)(((uint64_t)hi << 32) | lo));
}

static void ctx_make(ctx_t *c, char *lo, size_t size, pr_fiber_t *f)
{
    uint64_t p = (uint64_t)(uintptr_t)f;
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = lo;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = NULL;
    makecontext(&c->uc, (void (*)(void))ctx_entry, 2, (unsigned)(p >> 32), (unsigned)p);
}

static void ctx_switch(ctx_t *from, ctx_t *to)
{
    swapcontext(&from->uc, &to->uc);
}
#endif

/* ---- Structures */

struct pr_fiber_t {
    ctx_t ctx;
    loop_t *loop;
    char *map; /* guard page, then the stack */
    apr_uint32_t gen;
    int state;
    int timed_out;
    apr_time_t deadline; /* while parked; 0: none */
    void (*fn)(void *);
    void *arg;
    pr_fiber_t *run_next;    /* run queue */
    pr_fiber_t *prev, *next; /* live list; next also links the free cache */
#ifdef PR_FIBER_ASAN
    void *fake;
#endif
};

typedef struct listen_t {
    int kind; /* K_LISTEN */
    int fd;
    void *ctx;
} listen_t;

struct loop_t {
    int wake_kind; /* K_WAKE: the eventfd's epoll tag */
    pr_loops_t *owner;
    int epfd, evfd;
    pthread_t thread;
    int started, freed;
    ctx_t ctx; /* the loop's own, while a fiber runs */
    pr_fiber_t *current;
    pr_fiber_t *run_head, *run_tail;
    pr_fiber_t *live;
    int n_live;
    pr_fiber_t *cache;              /* ended fibers, newest first */
    int n_cache;                    /* of those, how many still have a stack */
    apr_time_t next_deadline;       /* no parked fiber's deadline is earlier; 0: none */
    int accepting;                  /* not told to stop accepting yet */
    int watching;                   /* the listening sockets are in epfd */
    apr_time_t accept_paused_until; /* out of descriptors: retry then; 0: not paused */
    apr_time_t load_t0;             /* the first loop's load window: since when */
    apr_int64_t load_cpu0;          /* and its thread's CPU time then (ns) */
    apr_uint32_t rounds;            /* the first loop: rounds gone (atomic) */
    apr_uint32_t rounds_seen;       /* the others: the first's rounds at the last look */
    apr_time_t stall_check_at;      /* the others: when to look next */
    volatile apr_uint32_t quit;
    /* The inbox: wakes from other threads. */
    pthread_mutex_t inbox_mu;
    pr_fiber_ref_t *inbox, *draining;
    int inbox_n, inbox_cap, draining_cap;
    volatile apr_uint32_t notified; /* an eventfd write is pending */
    /* Set while the loop may block in epoll_wait: only then do other
     * threads' wakes cost an eventfd write (see pr_fiber_wake). */
    int sleeping;
#ifdef PR_FIBER_ASAN
    const void *stack_bottom;
    size_t stack_size;
    void *fake;
#endif
};

struct pr_loops_t {
    loop_t *loops;
    int n;
    listen_t *listens;
    int n_listen;
    pr_accept_fn accept;
    volatile apr_uint32_t stop_accepting;
    volatile apr_uint32_t spill; /* loops past the first accept too */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int n_accepting; /* loops not yet told to stop accepting */
};

static __thread loop_t *tls_loop;

static size_t page_size(void)
{
    static size_t ps;
    if (!ps) {
        long v = sysconf(_SC_PAGESIZE);
        ps = v > 0 ? (size_t)v : 4096;
    }
    return ps;
}

/* ---- Switching */

/* From the loop into f, and back when f parks or ends. */
static void loop_resume(loop_t *l, pr_fiber_t *f)
{
    l->current = f;
    f->state = F_RUNNING;
#ifdef PR_FIBER_ASAN
    __sanitizer_start_switch_fiber(&l->fake, f->map + page_size(), FIBER_STACK);
#endif
    ctx_switch(&l->ctx, &f->ctx);
#ifdef PR_FIBER_ASAN
    __sanitizer_finish_switch_fiber(l->fake, NULL, NULL);
#endif
    l->current = NULL;
}

/* From the running fiber back to its loop (its state already says why). */
static void fiber_yield(pr_fiber_t *f)
{
    loop_t *l = f->loop;
#ifdef PR_FIBER_ASAN
    __sanitizer_start_switch_fiber(f->state == F_DEAD ? NULL : &f->fake, l->stack_bottom,
                                   l->stack_size);
#endif
    ctx_switch(&f->ctx, &l->ctx);
#ifdef PR_FIBER_ASAN
    __sanitizer_finish_switch_fiber(f->fake, &l->stack_bottom, &l->stack_size);
#endif
}

void pr_fiber_main(pr_fiber_t *f) __attribute__((visibility("hidden"), used, noreturn));
void pr_fiber_main(pr_fiber_t *f)
{
#ifdef PR_FIBER_ASAN
    __sanitizer_finish_switch_fiber(NULL, &f->loop->stack_bottom, &f->loop->stack_size);
#endif
    f->fn(f->arg);
    f->state = F_DEAD;
    fiber_yield(f);
    abort(); /* a dead fiber is never resumed */
}

/* ---- Scheduling (loop thread only) */

static void loop_make_runnable(loop_t *l, pr_fiber_t *f)
{
    if (f->state != F_PARKED) return;
    f->state = F_RUNNABLE;
    f->run_next = NULL;
    if (l->run_tail)
        l->run_tail->run_next = f;
    else
        l->run_head = f;
    l->run_tail = f;
}

/* An ended fiber goes to the free list. Its struct stays until the loop
 * ends (a late wake may still name it); past FIBER_CACHE its stack goes. */
static void loop_retire(loop_t *l, pr_fiber_t *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        l->live = f->next;
    if (f->next) f->next->prev = f->prev;
    l->n_live--;
    f->gen++;
    if (l->n_cache < FIBER_CACHE) {
        l->n_cache++;
    } else {
        munmap(f->map, FIBER_STACK + page_size());
        f->map = NULL;
    }
    f->next = l->cache;
    l->cache = f;
}

static void loop_run_ready(loop_t *l)
{
    /* Only those runnable now: a fiber made runnable meanwhile waits for
     * the next round, after the loop has looked at its descriptors. */
    pr_fiber_t *f = l->run_head;
    l->run_head = l->run_tail = NULL;
    while (f) {
        pr_fiber_t *next = f->run_next;
        loop_resume(l, f);
        if (f->state == F_DEAD) loop_retire(l, f);
        f = next;
    }
}

/* Wake parked fibers whose deadline has passed; find the next deadline. */
static void loop_expire(loop_t *l)
{
    apr_time_t now = apr_time_now(), next = 0;
    for (pr_fiber_t *f = l->live; f; f = f->next) {
        if (f->state != F_PARKED || !f->deadline) continue;
        if (f->deadline <= now) {
            f->timed_out = 1;
            loop_make_runnable(l, f);
        } else if (!next || f->deadline < next) {
            next = f->deadline;
        }
    }
    l->next_deadline = next;
}

static void loop_notify(loop_t *l)
{
    if (!apr_atomic_xchg32(&l->notified, 1)) {
        uint64_t one = 1;
        ssize_t n = write(l->evfd, &one, sizeof(one));
        (void)n; /* an eventfd write fails only if the counter would overflow */
    }
}

/* The eventfd said the loop was woken. */
static void loop_woken(loop_t *l)
{
    uint64_t v;
    ssize_t n = read(l->evfd, &v, sizeof(v));
    (void)n;
    apr_atomic_set32(&l->notified, 0);
}

static void loop_drain_inbox(loop_t *l)
{
    pthread_mutex_lock(&l->inbox_mu);
    pr_fiber_ref_t *refs = l->inbox;
    int count = l->inbox_n, cap = l->inbox_cap;
    l->inbox = l->draining;
    l->inbox_cap = l->draining_cap;
    __atomic_store_n(&l->inbox_n, 0, __ATOMIC_RELAXED);
    l->draining = refs;
    l->draining_cap = cap;
    pthread_mutex_unlock(&l->inbox_mu);
    for (int i = 0; i < count; i++)
        if (refs[i].f->gen == refs[i].gen) loop_make_runnable(l, refs[i].f);
}

/* Watch the listening sockets (on) or stop; 0 or the errno of a failure. */
static int loop_watch_listeners(loop_t *l, int on)
{
    pr_loops_t *ls = l->owner;
    int err = 0;
    for (int i = 0; i < ls->n_listen; i++) {
        struct epoll_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.events = EPOLLIN | EPOLLEXCLUSIVE; /* one loop woken per connection */
        ev.data.ptr = &ls->listens[i];
        if (epoll_ctl(l->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, ls->listens[i].fd,
                      on ? &ev : NULL) != 0 &&
            !err)
            err = errno;
    }
    l->watching = on;
    return err;
}

/* Should l watch the listening sockets now? The first loop always (unless
 * stopped or paused), the others only while spilling. */
static int loop_should_watch(const loop_t *l)
{
    pr_loops_t *ls = l->owner;
    return l->accepting && !l->accept_paused_until &&
           (l == &ls->loops[0] || apr_atomic_read32(&ls->spill));
}

static void loop_sync_listeners(loop_t *l)
{
    int want = loop_should_watch(l);
    if (want != l->watching) loop_watch_listeners(l, want);
}

static void loop_stop_accepting(loop_t *l)
{
    pr_loops_t *ls = l->owner;
    l->accepting = 0;
    loop_sync_listeners(l);
    pthread_mutex_lock(&ls->mu);
    ls->n_accepting--;
    pthread_cond_broadcast(&ls->cond);
    pthread_mutex_unlock(&ls->mu);
}

static apr_int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
    return (apr_int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The first loop, once per window: is it busy enough that new connections
 * should go to the other loops too? Every loop woken costs a sleep and a
 * wake per connection; with sessions that mostly wait (SMTP), one loop on
 * one core served the same load with 10-20% less CPU than two (measured),
 * so the others join only when the first one's own CPU time says it is
 * becoming the limit (POP3 downloads, TLS handshakes). Sessions stay on
 * the loop that accepted them. */
static void loop_spill_check(loop_t *l, apr_time_t now)
{
    pr_loops_t *ls = l->owner;
    if (now - l->load_t0 < SPILL_WINDOW) return;
    apr_int64_t cpu = thread_cpu_ns();
    double load = (double)(cpu - l->load_cpu0) / (double)((now - l->load_t0) * 1000);
    l->load_t0 = now;
    l->load_cpu0 = cpu;
    int spill = (int)apr_atomic_read32(&ls->spill);
    if (spill ? load >= SPILL_OFF : load <= SPILL_ON) return;
    apr_atomic_set32(&ls->spill, !spill);
    if (!spill) /* the others look at it now, not at their next wake */
        for (int i = 1; i < ls->n; i++)
            loop_notify(&ls->loops[i]);
}

/* Another loop, while not spilling: is the first loop stuck in one fiber
 * (awake, but no round finished since the last look)? Then spill, so that
 * new connections are not held up behind it. */
static int loop_stall_watch(const loop_t *l)
{
    return l != &l->owner->loops[0] && l->accepting && !l->watching;
}

static void loop_stall_check(loop_t *l, apr_time_t now)
{
    pr_loops_t *ls = l->owner;
    loop_t *first = &ls->loops[0];
    if (now < l->stall_check_at) return;
    l->stall_check_at = now + STALL_CHECK;
    apr_uint32_t rounds = __atomic_load_n(&first->rounds, __ATOMIC_RELAXED);
    if (rounds == l->rounds_seen && !__atomic_load_n(&first->sleeping, __ATOMIC_SEQ_CST) &&
        !apr_atomic_read32(&ls->spill))
        apr_atomic_set32(&ls->spill, 1);
    l->rounds_seen = rounds;
}

static void *loop_main(void *arg)
{
    loop_t *l = arg;
    pr_loops_t *ls = l->owner;
    struct epoll_event ev[LOOP_EVENTS];
    char name[16];
    snprintf(name, sizeof(name), "pr-loop%d", (int)(l - ls->loops));
    pr_thread_name(name);
    tls_loop = l;
    l->load_t0 = apr_time_now();
    l->load_cpu0 = thread_cpu_ns();
    l->stall_check_at = l->load_t0 + STALL_CHECK;
    l->rounds_seen = __atomic_load_n(&ls->loops[0].rounds, __ATOMIC_RELAXED);
    for (;;) {
        loop_run_ready(l);
        if (l->accepting && apr_atomic_read32(&ls->stop_accepting)) loop_stop_accepting(l);
        if (ls->n > 1) {
            if (l == &ls->loops[0]) {
                __atomic_store_n(&l->rounds, l->rounds + 1, __ATOMIC_RELAXED);
                loop_spill_check(l, apr_time_now());
            } else if (loop_stall_watch(l)) {
                loop_stall_check(l, apr_time_now());
            }
            loop_sync_listeners(l);
        }
        if (apr_atomic_read32(&l->quit) && l->n_live == 0) break;

        int timeout = -1;
        if (l->run_head) {
            timeout = 0;
        } else if (l->next_deadline || l->accept_paused_until || loop_stall_watch(l)) {
            apr_time_t next = l->next_deadline;
            if (!next || (l->accept_paused_until && l->accept_paused_until < next))
                next = l->accept_paused_until;
            if (loop_stall_watch(l) && (!next || l->stall_check_at < next))
                next = l->stall_check_at;
            apr_time_t left = next - apr_time_now();
            if (left <= 0)
                timeout = 0;
            else if (left >= apr_time_from_sec(60))
                timeout = 60000;
            else
                timeout = (int)((left + 999) / 1000);
        }
        if (timeout != 0) {
            /* Announce the sleep, then look at the inbox once more: a waker
             * either sees sleeping set (and writes the eventfd) or its wake
             * is seen here (both sides are sequentially consistent). */
            __atomic_store_n(&l->sleeping, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&l->inbox_n, __ATOMIC_SEQ_CST) > 0) timeout = 0;
        }
        int n = epoll_wait(l->epfd, ev, LOOP_EVENTS, timeout);
        __atomic_store_n(&l->sleeping, 0, __ATOMIC_RELAXED);
        for (int i = 0; i < n; i++) {
            int kind = *(int *)ev[i].data.ptr;
            if (kind == K_IO) {
                pr_fiber_io_t *io = ev[i].data.ptr;
                unsigned e = ev[i].events;
                if (e & (EPOLLIN | EPOLLRDHUP)) io->ready |= PR_IO_IN;
                if (e & EPOLLOUT) io->ready |= PR_IO_OUT;
                if (e & (EPOLLERR | EPOLLHUP)) io->ready |= PR_IO_IN | PR_IO_OUT;
                if (e & (EPOLLRDHUP | EPOLLERR | EPOLLHUP)) io->ready |= PR_IO_HUP;
                if (io->waiter) loop_make_runnable(l, io->waiter);
            } else if (kind == K_WAKE) {
                loop_woken(l);
            } else if (kind == K_LISTEN && l->watching && !apr_atomic_read32(&ls->stop_accepting)) {
                listen_t *li = ev[i].data.ptr;
                /* One connection per readiness: the listener is level-
                 * triggered, so the next wait reports it again while more
                 * are waiting. Accepting until EAGAIN cost one futile
                 * accept per connection. */
                if (ls->accept(li->ctx) < 0 && !l->accept_paused_until) {
                    /* Out of descriptors (or memory): the connection stays in
                     * the backlog and would wake us at once, forever. Look
                     * away for a moment instead of spinning. */
                    l->accept_paused_until = apr_time_now() + ACCEPT_PAUSE;
                    loop_sync_listeners(l);
                }
            }
        }
        if (__atomic_load_n(&l->inbox_n, __ATOMIC_ACQUIRE) > 0) loop_drain_inbox(l);
        if (l->next_deadline && apr_time_now() >= l->next_deadline) loop_expire(l);
        if (l->accept_paused_until && apr_time_now() >= l->accept_paused_until) {
            l->accept_paused_until = 0;
            loop_sync_listeners(l);
        }
    }
    tls_loop = NULL;
    return NULL;
}

/* ---- The fiber face */

void pr_thread_name(const char *name)
{
    pthread_setname_np(pthread_self(), name);
}

int pr_loops_thread(void)
{
    return tls_loop != NULL;
}

pr_fiber_t *pr_fiber_self(void)
{
    loop_t *l = tls_loop;
    return l ? l->current : NULL;
}

pr_fiber_ref_t pr_fiber_ref(void)
{
    pr_fiber_ref_t r = {pr_fiber_self(), 0};
    if (r.f) r.gen = r.f->gen;
    return r;
}

int pr_fiber_park(apr_time_t deadline)
{
    pr_fiber_t *f = pr_fiber_self();
    if (!f) abort();
    loop_t *l = f->loop;
    f->deadline = deadline;
    f->timed_out = 0;
    f->state = F_PARKED;
    if (deadline && (!l->next_deadline || deadline < l->next_deadline)) l->next_deadline = deadline;
    fiber_yield(f);
    f->deadline = 0;
    return f->timed_out;
}

void pr_fiber_wake(pr_fiber_ref_t r)
{
    if (!r.f) return;
    loop_t *l = r.f->loop;
    if (tls_loop == l) { /* the same loop (a fiber waking another): no inbox */
        if (r.f->gen == r.gen) loop_make_runnable(l, r.f);
        return;
    }
    pthread_mutex_lock(&l->inbox_mu);
    if (l->inbox_n == l->inbox_cap) {
        int cap = l->inbox_cap ? l->inbox_cap * 2 : 64;
        pr_fiber_ref_t *a = realloc(l->inbox, sizeof(*a) * (size_t)cap);
        if (!a) abort(); /* out of memory is fatal, as with APR's pools */
        l->inbox = a;
        l->inbox_cap = cap;
    }
    l->inbox[l->inbox_n] = r;
    __atomic_store_n(&l->inbox_n, l->inbox_n + 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&l->inbox_mu);
    /* A busy loop finds the wake at the end of its round by itself. */
    if (__atomic_load_n(&l->sleeping, __ATOMIC_SEQ_CST)) loop_notify(l);
}

void pr_sleep(apr_interval_time_t t)
{
    if (!pr_fiber_self()) {
        apr_sleep(t);
        return;
    }
    apr_time_t deadline = apr_time_now() + (t > 0 ? t : 0);
    while (!pr_fiber_park(deadline))
        ;
}

/* ---- Blocking work off the loops: helper threads made on demand (up to
 * BLOCKING_MAX), each leaving after BLOCKING_IDLE without work. A job lives
 * on its fiber's stack; the helper touches it only until it sets done. */

#define BLOCKING_MAX 64
#define BLOCKING_IDLE 30 /* seconds */

typedef struct blocking_job_t {
    void (*fn)(void *);
    void *arg;
    pr_fiber_ref_t ref;
    volatile apr_uint32_t done;
    struct blocking_job_t *next;
} blocking_job_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    blocking_job_t *head, *tail;
    int queued, idle, threads;
} g_blocking = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, 0};

static void *blocking_main(void *unused)
{
    (void)unused;
    pr_thread_name("pr-helper");
    pthread_mutex_lock(&g_blocking.mu);
    for (;;) {
        while (!g_blocking.head) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += BLOCKING_IDLE;
            g_blocking.idle++;
            int rc = pthread_cond_timedwait(&g_blocking.cond, &g_blocking.mu, &ts);
            g_blocking.idle--;
            if (rc == ETIMEDOUT && !g_blocking.head) {
                g_blocking.threads--;
                pthread_mutex_unlock(&g_blocking.mu);
                return NULL;
            }
        }
        blocking_job_t *j = g_blocking.head;
        if (!(g_blocking.head = j->next)) g_blocking.tail = NULL;
        g_blocking.queued--;
        pthread_mutex_unlock(&g_blocking.mu);
        j->fn(j->arg);
        pr_fiber_ref_t ref = j->ref;
        apr_atomic_set32(&j->done, 1); /* j may be gone from here on */
        pr_fiber_wake(ref);
        pthread_mutex_lock(&g_blocking.mu);
    }
}

void pr_fiber_blocking(void (*fn)(void *), void *arg)
{
    if (!pr_fiber_self()) {
        fn(arg);
        return;
    }
    blocking_job_t j = {fn, arg, pr_fiber_ref(), 0, NULL};
    pthread_mutex_lock(&g_blocking.mu);
    if (g_blocking.tail)
        g_blocking.tail->next = &j;
    else
        g_blocking.head = &j;
    g_blocking.tail = &j;
    g_blocking.queued++;
    if (g_blocking.idle >= g_blocking.queued) {
        pthread_cond_signal(&g_blocking.cond);
    } else if (g_blocking.threads < BLOCKING_MAX) {
        pthread_attr_t attr;
        pthread_t th;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, blocking_main, NULL) == 0) g_blocking.threads++;
        pthread_attr_destroy(&attr);
        if (g_blocking.threads == 0) { /* none at all: do it here */
            g_blocking.head = g_blocking.tail = NULL;
            g_blocking.queued = 0;
            pthread_mutex_unlock(&g_blocking.mu);
            fn(arg);
            return;
        }
    } /* else: the busy helpers take it in turn */
    pthread_mutex_unlock(&g_blocking.mu);
    while (!apr_atomic_read32(&j.done))
        pr_fiber_park(0);
}

apr_status_t pr_fiber_io_add(pr_fiber_io_t *io, int fd)
{
    loop_t *l = tls_loop;
    if (!l) return APR_EINVAL;
    io->kind = K_IO;
    io->fd = fd;
    /* Not readable until the loop says so: a new connection has mostly
     * nothing to read yet (in SMTP, POP3 and IMAP the server speaks first),
     * and a read would only say EAGAIN. Nothing is missed: EPOLL_CTL_ADD
     * looks at the socket at once and reports data already waiting. */
    io->ready = PR_IO_OUT;
    io->out = 0;
    io->waiter = NULL;
    /* Writability only once a write had to wait: every ACK of a reply
     * would otherwise wake the loop with EPOLLOUT (seen: one spurious wake
     * per SMTP command). */
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = io;
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) return APR_FROM_OS_ERROR(errno);
    return APR_SUCCESS;
}

/* Watch writability from now on (the socket's sends can fill its buffer).
 * MOD looks at the socket at once, so a socket already writable again
 * reports it: no edge is lost. */
static apr_status_t io_watch_out(pr_fiber_io_t *io)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = io;
    if (epoll_ctl(tls_loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) != 0) return APR_FROM_OS_ERROR(errno);
    io->out = 1;
    return APR_SUCCESS;
}

apr_status_t pr_fiber_io_wait(pr_fiber_io_t *io, unsigned what, apr_time_t deadline)
{
    pr_fiber_t *f = pr_fiber_self();
    if (!f) return APR_EINVAL;
    if (io->ready & what) return APR_SUCCESS;
    if ((what & PR_IO_OUT) && !io->out) {
        apr_status_t st = io_watch_out(io);
        if (st != APR_SUCCESS) return st;
    }
    io->waiter = f;
    apr_status_t st = APR_SUCCESS;
    while (!(io->ready & what)) {
        if (pr_fiber_park(deadline) && !(io->ready & what)) {
            st = APR_TIMEUP;
            break;
        }
    }
    io->waiter = NULL;
    return st;
}

/* ---- Loops */

apr_status_t pr_fiber_spawn(void (*fn)(void *), void *arg)
{
    loop_t *l = tls_loop;
    if (!l) return APR_EINVAL;
    pr_fiber_t *f = l->cache;
    if (f) {
        l->cache = f->next;
    } else {
        if (!(f = calloc(1, sizeof(*f)))) return APR_ENOMEM;
        f->loop = l;
    }
    if (f->map) {
        l->n_cache--;
#ifdef PR_FIBER_ASAN
        ASAN_UNPOISON_MEMORY_REGION(f->map + page_size(), FIBER_STACK);
#endif
    } else {
        size_t ps = page_size();
        void *map = mmap(NULL, FIBER_STACK + ps, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (map == MAP_FAILED) {
            f->next = l->cache;
            l->cache = f;
            return APR_ENOMEM;
        }
        mprotect(map, ps, PROT_NONE); /* overflow faults instead of corrupting */
        f->map = map;
    }
    f->fn = fn;
    f->arg = arg;
    f->deadline = 0;
    f->timed_out = 0;
    ctx_make(&f->ctx, f->map + page_size(), FIBER_STACK, f);
    f->prev = NULL;
    f->next = l->live;
    if (l->live) l->live->prev = f;
    l->live = f;
    l->n_live++;
    f->state = F_PARKED;
    loop_make_runnable(l, f);
    return APR_SUCCESS;
}

/* Once per loop: after a join, or for loops that never started. */
static void loop_free(loop_t *l)
{
    if (l->freed) return;
    l->freed = 1;
    while (l->cache) {
        pr_fiber_t *f = l->cache;
        l->cache = f->next;
        if (f->map) munmap(f->map, FIBER_STACK + page_size());
        free(f);
    }
    if (l->epfd >= 0) close(l->epfd);
    if (l->evfd >= 0) close(l->evfd);
    l->epfd = l->evfd = -1;
    free(l->inbox);
    free(l->draining);
    l->inbox = l->draining = NULL;
    pthread_mutex_destroy(&l->inbox_mu);
}

static apr_status_t loops_cleanup(void *data)
{
    pr_loops_t *ls = data;
    for (int i = 0; i < ls->n; i++)
        if (!ls->loops[i].started) loop_free(&ls->loops[i]);
    return APR_SUCCESS;
}

apr_status_t pr_loops_start(pr_loops_t **loops_r, int n, const int *listen_fds,
                            void *const *accept_ctx, int n_listen, pr_accept_fn accept,
                            apr_pool_t *pool)
{
    if (n <= 0) {
        /* One per core. Measured on 2 cores: one loop took 15 to 20% less
         * CPU per SMTP message than two (fewer sleeps and wake-ups), but
         * capped POP3 downloads at one core (31,756 messages/s against
         * 55,157 with two), and TLS work is heavier still. */
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    if (n > LOOP_MAX) n = LOOP_MAX;
    pr_loops_t *ls = apr_pcalloc(pool, sizeof(*ls));
    ls->loops = apr_pcalloc(pool, sizeof(loop_t) * (apr_size_t)n);
    ls->listens = apr_pcalloc(pool, sizeof(listen_t) * (apr_size_t)(n_listen ? n_listen : 1));
    ls->n_listen = n_listen;
    ls->accept = accept;
    pthread_mutex_init(&ls->mu, NULL);
    pthread_cond_init(&ls->cond, NULL);
    for (int i = 0; i < n_listen; i++) {
        ls->listens[i].kind = K_LISTEN;
        ls->listens[i].fd = listen_fds[i];
        ls->listens[i].ctx = accept_ctx[i];
    }
    apr_pool_cleanup_register(pool, ls, loops_cleanup, apr_pool_cleanup_null);

    for (int i = 0; i < n; i++) {
        loop_t *l = &ls->loops[i];
        l->wake_kind = K_WAKE;
        l->owner = ls;
        l->epfd = l->evfd = -1;
        pthread_mutex_init(&l->inbox_mu, NULL);
        ls->n = i + 1;
        l->epfd = epoll_create1(EPOLL_CLOEXEC);
        l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (l->epfd < 0 || l->evfd < 0) return APR_FROM_OS_ERROR(errno);
        struct epoll_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.events = EPOLLIN;
        ev.data.ptr = &l->wake_kind;
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evfd, &ev) != 0) return APR_FROM_OS_ERROR(errno);
        l->accepting = 1;
        if (loop_should_watch(l)) {
            int err = loop_watch_listeners(l, 1);
            if (err) return APR_FROM_OS_ERROR(err);
        }
    }
    ls->n_accepting = n;
    for (int i = 0; i < n; i++) {
        loop_t *l = &ls->loops[i];
        if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
            /* Those started stop again; the caller gives up. */
            pr_loops_stop_accepting(ls);
            ls->n_accepting = 0;
            pr_loops_join(ls);
            return APR_EGENERAL;
        }
        l->started = 1;
    }
    *loops_r = ls;
    return APR_SUCCESS;
}

void pr_loops_stop_accepting(pr_loops_t *ls)
{
    apr_atomic_set32(&ls->stop_accepting, 1);
    pthread_mutex_lock(&ls->mu);
    int waiting = 0;
    for (int i = 0; i < ls->n; i++)
        if (ls->loops[i].started) {
            loop_notify(&ls->loops[i]);
            waiting++;
        } else if (ls->loops[i].accepting) {
            ls->loops[i].accepting = 0;
            ls->n_accepting--;
        }
    while (waiting && ls->n_accepting > 0)
        pthread_cond_wait(&ls->cond, &ls->mu);
    pthread_mutex_unlock(&ls->mu);
}

void pr_loops_join(pr_loops_t *ls)
{
    for (int i = 0; i < ls->n; i++) {
        loop_t *l = &ls->loops[i];
        if (!l->started) continue;
        apr_atomic_set32(&l->quit, 1);
        loop_notify(l);
        pthread_join(l->thread, NULL);
        l->started = 0;
        loop_free(l);
    }
}

#else /* no loops: every wait blocks the calling thread */

void pr_thread_name(const char *name)
{
    (void)name;
}

int pr_loops_thread(void)
{
    return 0;
}

pr_fiber_t *pr_fiber_self(void)
{
    return NULL;
}

pr_fiber_ref_t pr_fiber_ref(void)
{
    pr_fiber_ref_t r = {NULL, 0};
    return r;
}

int pr_fiber_park(apr_time_t deadline)
{
    (void)deadline;
    return 1;
}

void pr_fiber_wake(pr_fiber_ref_t r)
{
    (void)r;
}

void pr_fiber_blocking(void (*fn)(void *), void *arg)
{
    fn(arg);
}

void pr_sleep(apr_interval_time_t t)
{
    apr_sleep(t);
}

apr_status_t pr_fiber_io_add(pr_fiber_io_t *io, int fd)
{
    (void)io;
    (void)fd;
    return APR_ENOTIMPL;
}

apr_status_t pr_fiber_io_wait(pr_fiber_io_t *io, unsigned what, apr_time_t deadline)
{
    (void)io;
    (void)what;
    (void)deadline;
    return APR_ENOTIMPL;
}

apr_status_t pr_fiber_spawn(void (*fn)(void *), void *arg)
{
    (void)fn;
    (void)arg;
    return APR_ENOTIMPL;
}

apr_status_t pr_loops_start(pr_loops_t **loops_r, int n, const int *listen_fds,
                            void *const *accept_ctx, int n_listen, pr_accept_fn accept,
                            apr_pool_t *pool)
{
    (void)loops_r;
    (void)n;
    (void)listen_fds;
    (void)accept_ctx;
    (void)n_listen;
    (void)accept;
    (void)pool;
    return APR_ENOTIMPL;
}

void pr_loops_stop_accepting(pr_loops_t *loops)
{
    (void)loops;
}

void pr_loops_join(pr_loops_t *loops)
{
    (void)loops;
}

#endif
