/* Levelled logging, one line per event, each tagged with a session id so a
 * connection's story can be grepped out. Sinks: stderr, a file, syslog. */
#ifndef PR_LOG_H
#define PR_LOG_H

#include <apr_pools.h>
#include "service/core/config.h"

/* Open the sink named by [server] log ("stderr", "syslog" or a path). */
apr_status_t pr_log_open(const char *sink, pr_log_level_e level, apr_pool_t *pool);
/* Reopen a file sink (SIGHUP, log rotation). */
void pr_log_reopen(void);
void pr_log_close(void);

/* sid: the session id ("-" or NULL for none). */
void pr_log(pr_log_level_e level, const char *sid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define pr_log_debug(sid, ...) pr_log(PR_LOG_DEBUG, sid, __VA_ARGS__)
#define pr_log_info(sid, ...) pr_log(PR_LOG_INFO, sid, __VA_ARGS__)
#define pr_log_warn(sid, ...) pr_log(PR_LOG_WARN, sid, __VA_ARGS__)
#define pr_log_error(sid, ...) pr_log(PR_LOG_ERROR, sid, __VA_ARGS__)

#endif
