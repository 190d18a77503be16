/* Levelled log lines tagged with a session id, to stderr, a file or syslog
 * (RFC 5424 facility "mail" via the platform's syslog(3)). Each line is
 * built whole and written with one call under a lock, so lines from worker
 * threads never interleave; control characters from peers are replaced so
 * nobody can forge log lines (CWE-117). */
#include "service/core/log.h"
#include "service/core/status.h"

#include <apr_file_io.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_time.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#ifdef _WIN32
#include <process.h>
#define pr_getpid() _getpid()
#else
#include <syslog.h>
#include <unistd.h>
#define pr_getpid() getpid()
#endif

/* A line longer than this is cut: a peer must not be able to make one log
 * line arbitrarily large. */
#define PR_LOG_LINE_MAX 2000

typedef enum { SINK_STDERR, SINK_SYSLOG, SINK_FILE } sink_e;

static struct {
    apr_pool_t *pool;      /* ours, not the caller's: the log outlives it */
    apr_pool_t *sink_pool; /* holds the open file; cleared on close/reopen */
#if APR_HAS_THREADS
    apr_thread_mutex_t *lock;
#endif
    sink_e sink;
    const char *path;
    apr_file_t *file;
} g_log;

/* Read on every call before any lock, so it is atomic. */
static atomic_int g_level = PR_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARNING", "ERROR"};

static void log_lock(void)
{
#if APR_HAS_THREADS
    if (g_log.lock) apr_thread_mutex_lock(g_log.lock);
#endif
}

static void log_unlock(void)
{
#if APR_HAS_THREADS
    if (g_log.lock) apr_thread_mutex_unlock(g_log.lock);
#endif
}

/* apr_terminate() destroys our pool; fall back to plain stderr after it. */
static apr_status_t log_pool_gone(void *data)
{
    (void)data;
    memset(&g_log, 0, sizeof(g_log));
    return APR_SUCCESS;
}

static apr_status_t log_init(void)
{
    apr_status_t st;
    if (g_log.pool) return APR_SUCCESS;
    st = apr_pool_create(&g_log.pool, NULL);
    if (st != APR_SUCCESS) return st;
    apr_pool_tag(g_log.pool, "pr_log");
#if APR_HAS_THREADS
    st = apr_thread_mutex_create(&g_log.lock, APR_THREAD_MUTEX_DEFAULT, g_log.pool);
    if (st != APR_SUCCESS) {
        apr_pool_destroy(g_log.pool);
        g_log.pool = NULL;
        return st;
    }
#endif
    apr_pool_cleanup_register(g_log.pool, NULL, log_pool_gone, apr_pool_cleanup_null);
    return APR_SUCCESS;
}

/* Under the lock. */
static void sink_close(void)
{
    if (g_log.sink == SINK_FILE && g_log.sink_pool) apr_pool_clear(g_log.sink_pool);
#ifndef _WIN32
    if (g_log.sink == SINK_SYSLOG) closelog();
#endif
    g_log.file = NULL;
    g_log.sink = SINK_STDERR;
}

static apr_status_t file_open(apr_file_t **f_r, const char *path, apr_pool_t *pool)
{
    /* APPEND so several processes (or logrotate's copytruncate) agree on the end. */
    return apr_file_open(f_r, path, APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_APPEND,
                         APR_FPROT_UREAD | APR_FPROT_UWRITE | APR_FPROT_GREAD, pool);
}

apr_status_t pr_log_open(const char *sink, pr_log_level_e level, apr_pool_t *pool)
{
    apr_status_t st = APR_SUCCESS;
    (void)pool;

    if (!sink || !*sink) return PR_EINVAL;
    st = log_init();
    if (st != APR_SUCCESS) return st;

    log_lock();
    if (strcmp(sink, "stderr") == 0) {
        sink_close();
    } else if (strcmp(sink, "syslog") == 0) {
#ifdef _WIN32
        st = APR_ENOTIMPL;
#else
        sink_close();
        openlog("postroomd", LOG_PID | LOG_NDELAY, LOG_MAIL);
        g_log.sink = SINK_SYSLOG;
#endif
    } else {
        apr_pool_t *p;
        apr_file_t *f;
        st = apr_pool_create(&p, g_log.pool);
        if (st == APR_SUCCESS) {
            /* Open first: a bad path keeps the old sink working. */
            st = file_open(&f, sink, p);
            if (st == APR_SUCCESS) {
                sink_close();
                if (g_log.sink_pool) apr_pool_destroy(g_log.sink_pool);
                g_log.sink_pool = p;
                g_log.path = apr_pstrdup(p, sink);
                g_log.file = f;
                g_log.sink = SINK_FILE;
            } else {
                apr_pool_destroy(p);
            }
        }
    }
    if (st == APR_SUCCESS) atomic_store(&g_level, (int)level);
    log_unlock();
    return st;
}

/* Takes the lock: call it from the thread that handles SIGHUP, never from
 * inside a signal handler. */
void pr_log_reopen(void)
{
    apr_pool_t *p;
    apr_file_t *f;
    const char *path;

    log_lock();
    if (g_log.sink == SINK_FILE && g_log.pool && apr_pool_create(&p, g_log.pool) == APR_SUCCESS) {
        path = apr_pstrdup(p, g_log.path);
        if (file_open(&f, path, p) == APR_SUCCESS) {
            apr_pool_destroy(g_log.sink_pool);
            g_log.sink_pool = p;
            g_log.path = path;
            g_log.file = f;
        } else {
            /* Keep writing to the old file rather than lose lines. */
            apr_pool_destroy(p);
        }
    }
    log_unlock();
}

void pr_log_close(void)
{
    log_lock();
    sink_close();
    log_unlock();
}

/* Copies src into dst (room > 0 bytes) with control characters replaced;
 * returns bytes written. */
static size_t put_clean(char *dst, size_t room, const char *src)
{
    size_t n = 0;
    for (; *src && n < room; src++) {
        unsigned char c = (unsigned char)*src;
        dst[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    return n;
}

void pr_log(pr_log_level_e level, const char *sid, const char *fmt, ...)
{
    char msg[PR_LOG_LINE_MAX + 1];
    char line[PR_LOG_LINE_MAX + 2];
    size_t n, sid_start, msg_start, copied;
    apr_time_exp_t tm;
    int ml;
    va_list ap;

    if ((int)level < atomic_load(&g_level)) return;
    if ((int)level < PR_LOG_DEBUG || (int)level > PR_LOG_ERROR) level = PR_LOG_ERROR;
    if (!sid || !*sid) sid = "-";

    va_start(ap, fmt);
    ml = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (ml < 0) {
        apr_cpystrn(msg, "(unformattable log message)", sizeof(msg));
        ml = 0;
    }

    /* Syslog stamps time and pid itself; it gets the line from sid_start.
     * The sink is only read under the lock, so build the prefix always. */
    apr_time_exp_gmt(&tm, apr_time_now());
    n = (size_t)snprintf(line, sizeof(line),
                         "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ postroomd[%ld] %s ",
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                         tm.tm_sec, tm.tm_usec / 1000, (long)pr_getpid(), level_names[level]);
    sid_start = n;
    n += put_clean(line + n, 64, sid);
    line[n++] = ':';
    line[n++] = ' ';
    msg_start = n;
    copied = put_clean(line + n, PR_LOG_LINE_MAX - n, msg);
    n += copied;
    if ((size_t)ml >= sizeof(msg) || msg[copied] != '\0') {
        /* Cut on a UTF-8 character boundary and say so. */
        n = PR_LOG_LINE_MAX - 3;
        while (n > msg_start && ((unsigned char)line[n] & 0xC0) == 0x80)
            n--;
        memcpy(line + n, "...", 3);
        n += 3;
    }
    line[n++] = '\n';

    log_lock();
    switch (g_log.sink) {
#ifndef _WIN32
    case SINK_SYSLOG: {
        static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
        syslog(prio[level], "%.*s", (int)(n - 1 - sid_start), line + sid_start);
        break;
    }
#endif
    case SINK_FILE:
        if (g_log.file) {
            apr_size_t len = n;
            apr_file_write_full(g_log.file, line, len, NULL);
            break;
        }
        /* fall through */
    default:
        fwrite(line, 1, n, stderr);
        fflush(stderr);
        break;
    }
    log_unlock();
}
