/* Helpers shared by the files of the directory folder only (not a face:
 * nothing outside directory/ includes this). */
#ifndef PR_DIR_INTERNAL_H
#define PR_DIR_INTERNAL_H

#include <apr_pools.h>
#include "service/mime/address.h"

/* Longest canonical address: local part, '@', domain (RFC 5321 4.5.3.1). */
#define DIR_ADDRESS_MAX (PR_ADDR_MAX_LOCAL + 1 + PR_ADDR_MAX_DOMAIN)

/* dir_address_normalize into a caller's buffer (at least DIR_ADDRESS_MAX + 1
 * bytes), for code that has no pool at hand. Returns 1 if valid. */
int dir_address_normalize_buf(char *out, apr_size_t size, const char *address);

/* Same for a bare domain (at least PR_ADDR_MAX_DOMAIN + 1 bytes). */
int dir_domain_normalize_buf(char *out, apr_size_t size, const char *domain);

#endif
