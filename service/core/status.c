/* Human-readable names for Postroom's own status codes, falling back to APR. */
#include "service/core/status.h"
#include <apr_strings.h>

static const char *const pr_status_text[] = {
    [PR_ENOTFOUND - PR_STATUS_BASE] = "not found",
    [PR_ETEMPFAIL - PR_STATUS_BASE] = "temporary failure",
    [PR_EEXIST - PR_STATUS_BASE] = "already exists",
    [PR_EINVAL - PR_STATUS_BASE] = "invalid argument",
    [PR_ETOOBIG - PR_STATUS_BASE] = "too big",
    [PR_ETOOMANY - PR_STATUS_BASE] = "too many",
    [PR_EAUTH - PR_STATUS_BASE] = "authentication failed",
    [PR_EPERM - PR_STATUS_BASE] = "not permitted",
    [PR_ENOSPACE - PR_STATUS_BASE] = "insufficient storage",
    [PR_EIO - PR_STATUS_BASE] = "storage error",
    [PR_ELOOP - PR_STATUS_BASE] = "expansion loop or too deep",
    [PR_EQUOTA - PR_STATUS_BASE] = "mailbox full",
    [PR_EQUOTAPERM - PR_STATUS_BASE] = "message exceeds mailbox quota",
    [PR_ECLOSED - PR_STATUS_BASE] = "connection closed",
    [PR_ETIMEOUT - PR_STATUS_BASE] = "timeout",
    [PR_ESHUTDOWN - PR_STATUS_BASE] = "shutting down",
    [PR_ELINE - PR_STATUS_BASE] = "line too long",
    [PR_ETLS - PR_STATUS_BASE] = "TLS error",
    [PR_EBUSY - PR_STATUS_BASE] = "in use",
    [PR_ENULLMX - PR_STATUS_BASE] = "domain does not accept mail (null MX)",
};

const char *pr_strerror(apr_status_t st, char *buf, apr_size_t bufsize)
{
    apr_size_t i = (apr_size_t)(st - PR_STATUS_BASE);
    if (st > PR_STATUS_BASE && i < sizeof(pr_status_text) / sizeof(pr_status_text[0]) &&
        pr_status_text[i]) {
        apr_cpystrn(buf, pr_status_text[i], bufsize);
        return buf;
    }
    return apr_strerror(st, buf, bufsize);
}
