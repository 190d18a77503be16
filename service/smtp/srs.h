/* The Sender Rewriting Scheme, for mail an alias or list forwards outside:
 * the envelope sender becomes an address of ours, so the receiver's SPF
 * check sees our domain, and a bounce to it finds its way back. Forms as
 * in Shevek's SRS paper and libsrs2/postsrsd (so other SRS forwarders
 * interoperate):
 *   SRS0=HHHH=TT=domain=local@ours          first forwarder
 *   SRS1=HHHH=srsdomain==HHHH=TT=domain=local@ours   forwarding an SRS0
 * HHHH: the first 4 characters of base64(HMAC-SHA1(secret, the rest in
 * lower case)); TT: the day (days since 1970, mod 1024) in base32. A
 * reversed address is checked: a forged hash or one older than
 * SRS_MAX_AGE_DAYS is refused, so the SRS domain is no open relay. */
#ifndef PR_SRS_H
#define PR_SRS_H

#include <apr_pools.h>
#include <apr_time.h>

#define SRS_MAX_AGE_DAYS 21
#define SRS_SECRET_LEN 32

typedef struct srs_t srs_t;

/* A rewriter for addresses at domain with secret (at least 16 bytes). */
apr_status_t srs_create(srs_t **s_r, const unsigned char *secret, apr_size_t len,
                        const char *domain, apr_pool_t *pool);
/* The same with the secret in data_dir/srs.secret, made (SRS_SECRET_LEN
 * random bytes, mode 0600) on first use. */
apr_status_t srs_open(srs_t **s_r, const char *data_dir, const char *domain, apr_pool_t *pool);

/* The sender to give mail from sender forwarded outside. "" (the null
 * sender) stays "". An SRS0 address of another forwarder becomes SRS1;
 * an SRS address of ours is kept. NULL if sender is not an address. */
const char *srs_forward(const srs_t *s, const char *sender, apr_time_t now, apr_pool_t *pool);

/* Is address (any domain: the caller checks it is ours) an SRS address,
 * and where does it lead? APR_SUCCESS and *orig_r; PR_ENOTFOUND: not an
 * SRS address; PR_EAUTH: a hash that does not verify; PR_EPERM: too old;
 * PR_EINVAL: malformed. */
apr_status_t srs_reverse(const srs_t *s, const char *address, apr_time_t now, const char **orig_r,
                         apr_pool_t *pool);

#endif
