/* `postroomd --check` for the directory: open it as the daemon does, ask
 * the backend to reach its data, close it again. Kept apart from
 * directory.c: it runs once, from the command line, never beside the
 * daemon's calls. */
#include "directory/directory.h"
#include "service/core/status.h"

#include <apr_strings.h>

apr_status_t dir_check(const pr_config_t *cfg, const char **report_r, apr_pool_t *pool)
{
    const char *name =
        cfg->directory.backend && *cfg->directory.backend ? cfg->directory.backend : "local";
    char buf[160];
    dir_t *d;
    apr_status_t st = dir_open(&d, cfg, pool);
    if (st != APR_SUCCESS) {
        *report_r = apr_psprintf(pool, "%s directory: cannot open: %s", name,
                                 pr_strerror(st, buf, sizeof(buf)));
        return st;
    }
    const dir_backend_t *be = dir_backend(d);
    if (be->check) {
        st = be->check(dir_backend_ctx(d), report_r, pool);
    } else {
        /* Without a check of its own: what `postroom user list` would see. */
        apr_array_header_t *users;
        st = dir_user_list(d, &users, pool);
        if (st == APR_SUCCESS)
            *report_r = apr_psprintf(pool, "%s directory: %d user%s", be->name, users->nelts,
                                     users->nelts == 1 ? "" : "s");
        else
            *report_r = apr_psprintf(pool, "%s directory: cannot list users: %s", be->name,
                                     pr_strerror(st, buf, sizeof(buf)));
    }
    dir_close(d);
    return st;
}
