/* libFuzzer harness for SRS (service/smtp/srs.h): any address (a bounce's
 * RCPT TO) given to srs_reverse must be refused or lead somewhere without
 * crashing; an address forwarded and reversed again must come back as it
 * was, case aside; a reversed address must never be one of ours. */
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "service/core/status.h"
#include "service/smtp/srs.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned char secret[] = "fuzzing-secret-0123456789abcdef";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    apr_initialize();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2048) return 0;
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    char *in = apr_pstrmemdup(pool, (const char *)data, size);
    srs_t *s;
    if (srs_create(&s, secret, sizeof(secret) - 1, "school.example", pool) != APR_SUCCESS) abort();
    apr_time_t now = apr_time_from_sec(1795000000);

    const char *orig;
    apr_status_t st = srs_reverse(s, in, now, &orig, pool);
    if (st == APR_SUCCESS && !orig) abort();
    if (st != APR_SUCCESS && st != PR_ENOTFOUND && st != PR_EAUTH && st != PR_EPERM &&
        st != PR_EINVAL)
        abort();

    /* Forward, then back: the original again. */
    const char *f = srs_forward(s, in, now, pool);
    if (f && *f && strcmp(f, in) != 0) {
        const char *back;
        if (srs_reverse(s, f, now, &back, pool) != APR_SUCCESS) abort();
        if (strncasecmp(in, "SRS", 3) != 0 && strcasecmp(back, in) != 0) abort();
    }
    apr_pool_destroy(pool);
    return 0;
}
