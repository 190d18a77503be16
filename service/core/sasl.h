/* SASL pieces shared by every protocol that authenticates (SMTP AUTH,
 * POP3 AUTH, IMAP AUTHENTICATE): strict base64 and the PLAIN message. */
#ifndef PR_SASL_H
#define PR_SASL_H

#include <apr_pools.h>

/* Strict base64 (RFC 4648): only the alphabet, padding only at the end, a
 * length that is a multiple of 4. Returns the decoded bytes, NUL-terminated
 * (they may contain NULs: use *len_r), or NULL if in is not valid. */
const char *pr_b64_decode_strict(const char *in, apr_size_t *len_r, apr_pool_t *pool);

/* Base64 of len bytes, NUL-terminated. */
const char *pr_b64_encode(const void *data, apr_size_t len, apr_pool_t *pool);

/* RFC 4616 PLAIN: "authzid NUL authcid NUL passwd". authcid and passwd must
 * be non-empty and hold no NUL; authzid may be empty (*authz_r = "").
 * APR_SUCCESS, or PR_EINVAL for a malformed message. */
apr_status_t pr_sasl_plain_parse(const char *msg, apr_size_t len, const char **authz_r,
                                 const char **authc_r, const char **passwd_r);

#endif
