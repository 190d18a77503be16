/* Project status codes: every fallible call returns apr_status_t; Postroom's
 * own conditions live above APR_OS_START_USERERR so they never collide with
 * APR or OS errors. Protocol code maps them to replies in one table each. */
#ifndef PR_STATUS_H
#define PR_STATUS_H

#include <apr_errno.h>

#define PR_STATUS_BASE (APR_OS_START_USERERR + 5000)

enum {
    PR_ENOTFOUND = PR_STATUS_BASE + 1, /* no such user/mailbox/key */
    PR_ETEMPFAIL,                      /* temporary failure: try again later */
    PR_EEXIST,                         /* already exists */
    PR_EINVAL,                         /* bad input / syntax */
    PR_ETOOBIG,                        /* over a size limit */
    PR_ETOOMANY,                       /* over a count limit */
    PR_EAUTH,                          /* authentication failed */
    PR_EPERM,                          /* not permitted */
    PR_ENOSPACE,                       /* storage full / below min free space */
    PR_EIO,                            /* storage/commit failure */
    PR_ELOOP,                          /* alias/list expansion loop or too deep */
    PR_EQUOTA,                         /* mailbox full now */
    PR_EQUOTAPERM,                     /* message can never fit the quota */
    PR_ECLOSED,                        /* peer closed the connection */
    PR_ETIMEOUT,                       /* peer too slow */
    PR_ESHUTDOWN,                      /* server is stopping */
    PR_ELINE,                          /* line over its limit */
    PR_ETLS,                           /* TLS failure */
    PR_EBUSY,                          /* in use by another session (a locked maildrop) */
    PR_ENULLMX,                        /* the domain accepts no mail (null MX, RFC 7505) */
};

/* Human readable text for any status (project, APR or OS); buf gets it. */
const char *pr_strerror(apr_status_t st, char *buf, apr_size_t bufsize);

#endif
