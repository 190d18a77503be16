/* Failed-login penalties per client address, shared by every protocol that
 * checks passwords (SMTP AUTH, POP3, POP2, IMAP): a failure from one counts
 * against the others. Each failure is answered late (the delay
 * pr_penalty_fail returns), and an address with PR_PENALTY_LIMIT failures in
 * PR_PENALTY_WINDOW is refused outright (pr_penalty_blocked) without even
 * asking the directory, so guessing is slow and a stranger cannot lock a
 * pupil's account out in Active Directory. The delay is flat: a client that
 * opens many connections at once gains nothing, since the count, not the
 * delay, is what blocks. Memory is bounded: at most PR_PENALTY_MAX_ADDRS
 * addresses are tracked; the oldest are forgotten first. Thread-safe. */
#ifndef PR_PENALTY_H
#define PR_PENALTY_H

#include <apr_pools.h>
#include <apr_time.h>

#define PR_PENALTY_MAX_ADDRS 4096
#define PR_PENALTY_WINDOW apr_time_from_sec(300) /* failures older than this are forgotten */
#define PR_PENALTY_LIMIT 10                      /* failures in the window before blocking */
#define PR_PENALTY_DELAY apr_time_from_sec(1)    /* before answering a failure */

typedef struct pr_penalty_t pr_penalty_t;

apr_status_t pr_penalty_create(pr_penalty_t **p_r, apr_pool_t *pool);
/* Is this address refused for now? */
int pr_penalty_blocked(pr_penalty_t *p, const char *ip);
/* Record a failure; returns how long to wait before answering it. */
apr_interval_time_t pr_penalty_fail(pr_penalty_t *p, const char *ip);
/* A successful login from the address clears its record. */
void pr_penalty_success(pr_penalty_t *p, const char *ip);

#endif
