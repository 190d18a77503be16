#include "service/core/penalty.h"

#include <apr_hash.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry_t {
    struct entry_t *prev, *next; /* least recently failed first */
    apr_time_t first;            /* start of the current window */
    int failures;
    char ip[];
} entry_t;

struct pr_penalty_t {
    apr_thread_mutex_t *mu;
    apr_hash_t *by_ip; /* ip -> entry_t* (malloc'ed) */
    entry_t *oldest, *newest;
    int n;
};

static void unlink_entry(pr_penalty_t *p, entry_t *e)
{
    if (e->prev) e->prev->next = e->next;
    else p->oldest = e->next;
    if (e->next) e->next->prev = e->prev;
    else p->newest = e->prev;
    e->prev = e->next = NULL;
}

static void forget(pr_penalty_t *p, entry_t *e)
{
    unlink_entry(p, e);
    apr_hash_set(p->by_ip, e->ip, APR_HASH_KEY_STRING, NULL);
    p->n--;
    free(e);
}

static apr_status_t penalty_cleanup(void *data)
{
    pr_penalty_t *p = data;
    while (p->oldest) forget(p, p->oldest);
    return APR_SUCCESS;
}

apr_status_t pr_penalty_create(pr_penalty_t **p_r, apr_pool_t *pool)
{
    pr_penalty_t *p = apr_pcalloc(pool, sizeof(*p));
    apr_status_t st = apr_thread_mutex_create(&p->mu, APR_THREAD_MUTEX_DEFAULT, pool);
    if (st != APR_SUCCESS) return st;
    p->by_ip = apr_hash_make(pool);
    apr_pool_cleanup_register(pool, p, penalty_cleanup, apr_pool_cleanup_null);
    *p_r = p;
    return APR_SUCCESS;
}

/* The live entry for ip, or NULL; an expired one is dropped. Under mu. */
static entry_t *lookup(pr_penalty_t *p, const char *ip, apr_time_t now)
{
    entry_t *e = apr_hash_get(p->by_ip, ip, APR_HASH_KEY_STRING);
    if (e && now - e->first > PR_PENALTY_WINDOW) {
        forget(p, e);
        e = NULL;
    }
    return e;
}

int pr_penalty_blocked(pr_penalty_t *p, const char *ip)
{
    apr_thread_mutex_lock(p->mu);
    entry_t *e = lookup(p, ip, apr_time_now());
    int blocked = e && e->failures >= PR_PENALTY_LIMIT;
    apr_thread_mutex_unlock(p->mu);
    return blocked;
}

apr_interval_time_t pr_penalty_fail(pr_penalty_t *p, const char *ip)
{
    apr_time_t now = apr_time_now();
    apr_thread_mutex_lock(p->mu);
    entry_t *e = lookup(p, ip, now);
    if (!e) {
        if (p->n >= PR_PENALTY_MAX_ADDRS) forget(p, p->oldest);
        size_t n = strlen(ip) + 1;
        e = calloc(1, sizeof(*e) + n);
        if (!e) {
            apr_thread_mutex_unlock(p->mu);
            return PR_PENALTY_DELAY;
        }
        memcpy(e->ip, ip, n);
        e->first = now;
        apr_hash_set(p->by_ip, e->ip, APR_HASH_KEY_STRING, e);
        p->n++;
    } else {
        unlink_entry(p, e);
    }
    e->prev = p->newest; /* most recent failure goes last */
    if (p->newest) p->newest->next = e;
    else p->oldest = e;
    p->newest = e;
    if (e->failures < PR_PENALTY_LIMIT) e->failures++;
    apr_thread_mutex_unlock(p->mu);
    return PR_PENALTY_DELAY;
}

void pr_penalty_success(pr_penalty_t *p, const char *ip)
{
    apr_thread_mutex_lock(p->mu);
    entry_t *e = apr_hash_get(p->by_ip, ip, APR_HASH_KEY_STRING);
    if (e) forget(p, e);
    apr_thread_mutex_unlock(p->mu);
}
