/* RFC 5322 3.3 date-time, as Postroom writes it (Received:, Date: of the
 * reports it makes): UTC with a numeric zone. */
#ifndef PR_MIME_DATE_H
#define PR_MIME_DATE_H

#include <apr_pools.h>
#include <apr_time.h>

/* "Mon, 23 Nov 2026 18:32:05 +0000" */
const char *pr_date_rfc5322(apr_time_t t, apr_pool_t *pool);

#endif
