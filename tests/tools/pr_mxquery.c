/* Test tool: prints what mx_resolve returns, for tests/integration/test_mx.py.
 *   pr_mxquery [-s SERVERS] [-t MS] [-j THREADS] DOMAIN...
 * SERVERS as [outbound] dns_servers ("127.0.0.1:5353,[::1]:53"); none = the
 * system resolver. Per domain it prints
 *   domain NAME
 *   status OK|ENOTFOUND|ENULLMX|ETEMPFAIL|EINVAL|<number>
 *   ms ELAPSED
 *   implicit 0|1                     (OK only)
 *   host PREF NAME ADDR,ADDR|-       (OK only, in delivery order)
 *   end
 * With -j N, N threads resolve every domain at the same time (one resolver
 * shared, as queue threads share it); the first thread's answers are
 * printed, and the exit status is 2 if another thread got a different
 * status. Exit 1: bad usage or mx_resolver_create failed. */
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/core/status.h"
#include "service/queue/mx.h"

typedef struct job_t {
    mx_resolver_t *r;
    char **domains;
    int n;
    apr_status_t *st; /* per domain */
    char **text;      /* per domain */
    apr_pool_t *pool;
} job_t;

static const char *status_name(apr_status_t st, apr_pool_t *pool)
{
    switch (st) {
    case APR_SUCCESS:
        return "OK";
    case PR_ENOTFOUND:
        return "ENOTFOUND";
    case PR_ENULLMX:
        return "ENULLMX";
    case PR_ETEMPFAIL:
        return "ETEMPFAIL";
    case PR_EINVAL:
        return "EINVAL";
    default:
        return apr_itoa(pool, st);
    }
}

static void *APR_THREAD_FUNC run(apr_thread_t *t, void *data)
{
    job_t *j = data;
    (void)t;
    for (int i = 0; i < j->n; i++) {
        mx_route_t *route = NULL;
        apr_time_t start = apr_time_now();
        apr_status_t st = mx_resolve(j->r, j->domains[i], &route, j->pool);
        long ms = (long)apr_time_as_msec(apr_time_now() - start);
        char *s = apr_psprintf(j->pool, "domain %s\nstatus %s\nms %ld\n", j->domains[i],
                               status_name(st, j->pool), ms);
        j->st[i] = st;
        if (st == APR_SUCCESS) {
            s = apr_psprintf(j->pool, "%simplicit %d\n", s, route->implicit);
            for (int h = 0; h < route->hosts->nelts; h++) {
                mx_host_t *host = APR_ARRAY_IDX(route->hosts, h, mx_host_t *);
                const char *addrs =
                    host->addrs->nelts ? apr_array_pstrcat(j->pool, host->addrs, ',') : "-";
                s = apr_psprintf(j->pool, "%shost %d %s %s\n", s, host->preference, host->name,
                                 addrs);
            }
        }
        j->text[i] = apr_pstrcat(j->pool, s, "end\n", NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    apr_pool_t *pool;
    pr_strlist_t servers = {0, NULL};
    long timeout_ms = 5000;
    int threads = 1, i, rc = 0;
    mx_resolver_t *r;
    apr_status_t st;
    job_t *jobs;
    apr_thread_t **tids;
    char buf[256];

    apr_initialize();
    atexit(apr_terminate);
    apr_pool_create(&pool, NULL);
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (i + 1 >= argc) break;
        if (strcmp(argv[i], "-s") == 0) {
            char *last, *tok, *copy = apr_pstrdup(pool, argv[++i]);
            apr_array_header_t *a = apr_array_make(pool, 4, sizeof(const char *));
            for (tok = apr_strtok(copy, ",", &last); tok; tok = apr_strtok(NULL, ",", &last))
                APR_ARRAY_PUSH(a, const char *) = tok;
            servers.n = a->nelts;
            servers.v = (const char **)a->elts;
        } else if (strcmp(argv[i], "-t") == 0) {
            timeout_ms = atol(argv[++i]);
        } else if (strcmp(argv[i], "-j") == 0) {
            threads = atoi(argv[++i]);
        } else {
            break;
        }
    }
    if (i >= argc || threads < 1 || threads > 64) {
        fprintf(stderr, "usage: pr_mxquery [-s SERVERS] [-t MS] [-j THREADS] DOMAIN...\n");
        return 1;
    }
    st = mx_resolver_create(&r, &servers, apr_time_from_msec(timeout_ms), pool);
    if (st != APR_SUCCESS) {
        printf("create %s %s\n", status_name(st, pool), pr_strerror(st, buf, sizeof(buf)));
        return 1;
    }
    jobs = apr_pcalloc(pool, sizeof(*jobs) * threads);
    tids = apr_pcalloc(pool, sizeof(*tids) * threads);
    for (int t = 0; t < threads; t++) {
        jobs[t].r = r;
        jobs[t].domains = argv + i;
        jobs[t].n = argc - i;
        jobs[t].st = apr_pcalloc(pool, sizeof(apr_status_t) * jobs[t].n);
        jobs[t].text = apr_pcalloc(pool, sizeof(char *) * jobs[t].n);
        apr_pool_create(&jobs[t].pool, pool);
    }
    if (threads == 1) {
        run(NULL, &jobs[0]);
    } else {
        for (int t = 0; t < threads; t++)
            if (apr_thread_create(&tids[t], NULL, run, &jobs[t], pool) != APR_SUCCESS) return 1;
        for (int t = 0; t < threads; t++) {
            apr_status_t ret;
            apr_thread_join(&ret, tids[t]);
        }
    }
    for (int d = 0; d < jobs[0].n; d++) {
        fputs(jobs[0].text[d], stdout);
        for (int t = 1; t < threads; t++)
            if (jobs[t].st[d] != jobs[0].st[d]) {
                fprintf(stderr, "thread %d: %s: %s\n", t, argv[i + d],
                        status_name(jobs[t].st[d], pool));
                rc = 2;
            }
    }
    mx_resolver_destroy(r);
    apr_pool_destroy(pool);
    return rc;
}
