#include "service/core/sasl.h"
#include "service/core/status.h"

#include <apr_base64.h>
#include <apr_strings.h>
#include <string.h>

static int b64_char(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '+' || ch == '/';
}

const char *pr_b64_decode_strict(const char *in, apr_size_t *len_r, apr_pool_t *pool)
{
    apr_size_t n = strlen(in), pad = 0;
    if (n % 4 != 0) return NULL;
    for (apr_size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch == '=') {
            if (i + 2 < n) return NULL; /* '=' only in the last two places */
            pad++;
        } else if (pad || !b64_char(ch)) {
            return NULL;
        }
    }
    char *out = apr_palloc(pool, (apr_size_t)apr_base64_decode_len(in) + 1);
    int len = apr_base64_decode(out, in);
    out[len] = '\0';
    *len_r = (apr_size_t)len;
    return out;
}

const char *pr_b64_encode(const void *data, apr_size_t len, apr_pool_t *pool)
{
    char *out = apr_palloc(pool, (apr_size_t)apr_base64_encode_len((int)len));
    apr_base64_encode(out, data, (int)len);
    return out;
}

apr_status_t pr_sasl_plain_parse(const char *msg, apr_size_t len, const char **authz_r,
                                 const char **authc_r, const char **passwd_r)
{
    const char *end = msg + len;
    const char *authc = memchr(msg, '\0', len);
    if (!authc) return PR_EINVAL;
    authc++;
    const char *pass = memchr(authc, '\0', (size_t)(end - authc));
    if (!pass) return PR_EINVAL;
    pass++;
    /* The message must end exactly at the password: no third NUL. */
    if (pass == end || authc + 1 == pass || memchr(pass, '\0', (size_t)(end - pass)))
        return PR_EINVAL;
    *authz_r = msg;
    *authc_r = authc;
    *passwd_r = pass;
    return APR_SUCCESS;
}
