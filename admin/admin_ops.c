/* Admin operations, implemented once for the `postroom` CLI and the HTTP
 * API: they check what a human may have got wrong (malformed address,
 * domain not local, target missing, name taken) and say so in one line,
 * then call the directory and the store through their faces. */
#include "admin/admin_ops.h"
#include "service/core/status.h"

#include <apr_hash.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct admin_t {
    apr_pool_t *pool;
    const pr_config_t *cfg;
    dir_t *dir;
    int own_dir;
    store_t *store;
    int own_store;
    apr_thread_mutex_t *mutex; /* guards opening the store on first use */
};

/* ---- errors */

static apr_status_t admin_fail(const char **err_r, apr_pool_t *p, apr_status_t st, const char *fmt,
                               ...) __attribute__((format(printf, 4, 5)));

static apr_status_t admin_fail(const char **err_r, apr_pool_t *p, apr_status_t st, const char *fmt,
                               ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err_r) *err_r = apr_pvsprintf(p, fmt, ap);
    va_end(ap);
    return st;
}

/* A status nobody anticipated at the call site, in words. */
static apr_status_t admin_fail_status(admin_t *a, const char **err_r, apr_pool_t *p,
                                      apr_status_t st, const char *what)
{
    char buf[160];
    if (st == PR_ETEMPFAIL)
        return admin_fail(err_r, p, st,
                          "%s: the directory is temporarily unavailable (busy or unreadable); "
                          "try again",
                          what);
    if (st == PR_EPERM)
        return admin_fail(err_r, p, st, "%s: the '%s' directory is read-only here", what,
                          dir_backend(a->dir)->name);
    return admin_fail(err_r, p, st, "%s: %s", what, pr_strerror(st, buf, sizeof(buf)));
}

static const char *admin_kind_name(dir_kind_e kind)
{
    switch (kind) {
    case DIR_KIND_MAILBOX:
        return "a user";
    case DIR_KIND_ALIAS:
        return "an alias";
    case DIR_KIND_LIST:
        return "a list";
    }
    return "in use";
}

/* ---- open, close */

apr_status_t admin_open(admin_t **a_r, const pr_config_t *cfg, dir_t *dir, store_t *store,
                        apr_pool_t *pool)
{
    admin_t *a = apr_pcalloc(pool, sizeof(*a));
    apr_status_t st;

    a->pool = pool;
    a->cfg = cfg;
    if ((st = apr_thread_mutex_create(&a->mutex, APR_THREAD_MUTEX_DEFAULT, pool)) != APR_SUCCESS)
        return st;
    if (dir) {
        a->dir = dir;
    } else {
        if ((st = dir_open(&a->dir, cfg, pool)) != APR_SUCCESS) return st;
        a->own_dir = 1;
    }
    /* The store is opened on first use (mailbox commands): directory
     * commands should not need, nor create, the mail database. */
    a->store = store;
    *a_r = a;
    return APR_SUCCESS;
}

void admin_close(admin_t *a)
{
    if (!a) return;
    if (a->own_store && a->store) store_close(a->store);
    a->store = NULL;
    a->own_store = 0;
    if (a->own_dir && a->dir) dir_close(a->dir);
    a->dir = NULL;
    a->own_dir = 0;
}

static apr_status_t admin_store(admin_t *a, store_t **st_r, const char **err_r, apr_pool_t *p)
{
    apr_status_t st = APR_SUCCESS;
    apr_thread_mutex_lock(a->mutex);
    if (!a->store) {
        store_options_t so = {0};
        so.data_dir = a->cfg->server.data_dir;
        so.no_writer = 1; /* the CLI: synchronous writes, no thread */
        st = store_open(&a->store, &so, a->pool);
        if (st == APR_SUCCESS)
            a->own_store = 1;
        else
            a->store = NULL;
    }
    *st_r = a->store;
    apr_thread_mutex_unlock(a->mutex);
    if (st != APR_SUCCESS) {
        char buf[160];
        return admin_fail(err_r, p, st, "cannot open the mail store in %s: %s",
                          a->cfg->server.data_dir, pr_strerror(st, buf, sizeof(buf)));
    }
    return APR_SUCCESS;
}

/* ---- checks shared by the operations */

/* Does the backend take writes of its own entries (users; with LDAP's
 * admin bind also their addresses and its lists' members)? */
static int admin_backend_writes(admin_t *a)
{
    return (dir_caps(a->dir) & (DIR_CAP_WRITE | DIR_CAP_WRITE_USERS)) != 0;
}

/* Users and domains: the backend's own. */
static int admin_writable(admin_t *a, const char **err_r, apr_pool_t *p)
{
    if (admin_backend_writes(a)) return 1;
    admin_fail(err_r, p, PR_EPERM,
               "the '%s' directory is read-only; make this change in the directory itself",
               dir_backend(a->dir)->name);
    return 0;
}

/* Aliases and lists: beside a read-only backend they go to the built-in
 * directory (issue 4), so this fails only where neither can take them. */
static int admin_aliases_writable(admin_t *a, const char **err_r, apr_pool_t *p)
{
    if (dir_caps(a->dir) & DIR_CAP_WRITE_ALIASES) return 1;
    return admin_writable(a, err_r, p);
}

/* An address taken where an alias or list would be written. */
static apr_status_t admin_fail_taken(admin_t *a, const char **err_r, apr_pool_t *p, const char *n,
                                     const dir_entry_t *e)
{
    if (e->kind == DIR_KIND_MAILBOX && !(dir_caps(a->dir) & DIR_CAP_WRITE))
        return admin_fail(err_r, p, PR_EEXIST,
                          "'%s' is a user left in the built-in directory (unused beside the "
                          "'%s' directory); pick another address",
                          n, dir_backend(a->dir)->name);
    return admin_fail(err_r, p, PR_EEXIST, "'%s' is already %s", n, admin_kind_name(e->kind));
}

/* Names what a read-only backend holds and admin cannot change. */
static apr_status_t admin_fail_read_only(admin_t *a, const char **err_r, apr_pool_t *p,
                                         const char *n, dir_kind_e kind)
{
    return admin_fail(err_r, p, PR_EPERM,
                      "'%s' is %s in the '%s' directory, which is read-only; change it there", n,
                      admin_kind_name(kind), dir_backend(a->dir)->name);
}

/* Normalise an address that must be in a local domain. */
static apr_status_t admin_local_address(admin_t *a, const char *address, const char **norm_r,
                                        const char **err_r, apr_pool_t *p)
{
    const char *n = dir_address_normalize(address, p);
    apr_status_t st;
    if (!n)
        return admin_fail(err_r, p, PR_EINVAL, "invalid address '%s' (expected user@domain)",
                          address ? address : "");
    const char *domain = strchr(n, '@') + 1;
    st = dir_domain_is_local(a->dir, domain);
    if (st == PR_ENOTFOUND)
        return admin_fail(err_r, p, PR_EINVAL,
                          "domain '%s' is not local; add it with: postroom domain add %s", domain,
                          domain);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, n);
    *norm_r = n;
    return APR_SUCCESS;
}

/* What an address currently is: *e_r NULL if nothing. */
static apr_status_t admin_lookup(admin_t *a, const char *norm, dir_entry_t **e_r,
                                 const char **err_r, apr_pool_t *p)
{
    apr_status_t st = dir_lookup(a->dir, norm, e_r, p);
    if (st == PR_ENOTFOUND) {
        *e_r = NULL;
        return APR_SUCCESS;
    }
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, norm);
    return APR_SUCCESS;
}

/* The same where alias and list writes go (the built-in directory beside
 * LDAP): a name the read-only backend holds is free there, and a local
 * alias or list of that name shadows it. */
static apr_status_t admin_lookup_writable(admin_t *a, const char *norm, dir_entry_t **e_r,
                                          const char **err_r, apr_pool_t *p)
{
    apr_status_t st = dir_lookup_writable(a->dir, norm, e_r, p);
    if (st == PR_ENOTFOUND) {
        *e_r = NULL;
        return APR_SUCCESS;
    }
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, norm);
    return APR_SUCCESS;
}

/* A target or member: any well-formed address; a local one must exist, so
 * a typo is caught now rather than as a silently skipped target later. */
static apr_status_t admin_target(admin_t *a, const char *target, const char **norm_r,
                                 const char **err_r, apr_pool_t *p)
{
    const char *n = dir_address_normalize(target, p);
    dir_entry_t *e;
    apr_status_t st;
    if (!n) return admin_fail(err_r, p, PR_EINVAL, "invalid address '%s'", target ? target : "");
    st = dir_domain_is_local(a->dir, strchr(n, '@') + 1);
    if (st == PR_ENOTFOUND) {
        *norm_r = n;
        return APR_SUCCESS;
    }
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, n);
    if ((st = admin_lookup(a, n, &e, err_r, p)) != APR_SUCCESS) return st;
    if (!e)
        return admin_fail(err_r, p, PR_ENOTFOUND,
                          "'%s' does not exist (no user, alias or list has this address)", n);
    *norm_r = n;
    return APR_SUCCESS;
}

static int admin_domain_configured(admin_t *a, const char *domain)
{
    return pr_config_is_local_domain(a->cfg, domain);
}

/* ---- domains */

apr_status_t admin_domain_add(admin_t *a, const char *domain, const char **err_r, apr_pool_t *p)
{
    const char *d = dir_domain_normalize(domain, p);
    apr_status_t st;
    if (!d)
        return admin_fail(err_r, p, PR_EINVAL, "invalid domain name '%s'", domain ? domain : "");
    if (admin_domain_configured(a, d))
        return admin_fail(err_r, p, PR_EEXIST,
                          "domain '%s' is already local ([server] domains in %s)", d,
                          a->cfg->path ? a->cfg->path : "the configuration");
    if (!admin_writable(a, err_r, p)) return PR_EPERM;
    st = dir_domain_add(a->dir, d);
    if (st == PR_EEXIST) return admin_fail(err_r, p, st, "domain '%s' already exists", d);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, d);
    return APR_SUCCESS;
}

static int admin_count_in_domain(const apr_array_header_t *arr, int entries, const char *domain)
{
    int n = 0;
    for (int i = 0; i < arr->nelts; i++) {
        const char *addr = entries ? APR_ARRAY_IDX(arr, i, dir_entry_t *)->address
                                   : APR_ARRAY_IDX(arr, i, dir_user_t).address;
        const char *at = strchr(addr, '@');
        if (at && strcmp(at + 1, domain) == 0) n++;
    }
    return n;
}

apr_status_t admin_domain_del(admin_t *a, const char *domain, const char **err_r, apr_pool_t *p)
{
    const char *d = dir_domain_normalize(domain, p);
    apr_status_t st;
    if (!d)
        return admin_fail(err_r, p, PR_EINVAL, "invalid domain name '%s'", domain ? domain : "");
    if (admin_domain_configured(a, d))
        return admin_fail(err_r, p, PR_EPERM,
                          "domain '%s' is set in [server] domains in %s; remove it there", d,
                          a->cfg->path ? a->cfg->path : "the configuration");
    if (!admin_writable(a, err_r, p)) return PR_EPERM;
    st = dir_domain_del(a->dir, d);
    if (st == PR_ENOTFOUND) return admin_fail(err_r, p, st, "domain '%s' does not exist", d);
    if (st == PR_EPERM) {
        /* Say what is left, so the admin knows what to delete first. */
        apr_array_header_t *users, *aliases, *lists;
        if (dir_user_list(a->dir, &users, p) == APR_SUCCESS &&
            dir_alias_list(a->dir, &aliases, p) == APR_SUCCESS &&
            dir_list_list(a->dir, &lists, p) == APR_SUCCESS) {
            int nu = admin_count_in_domain(users, 0, d);
            int na = admin_count_in_domain(aliases, 1, d);
            int nl = admin_count_in_domain(lists, 1, d);
            return admin_fail(err_r, p, st,
                              "domain '%s' still has %d user%s, %d alias%s and %d list%s; "
                              "delete them first",
                              d, nu, nu == 1 ? "" : "s", na, na == 1 ? "" : "es", nl,
                              nl == 1 ? "" : "s");
        }
        return admin_fail(err_r, p, st, "domain '%s' still has addresses; delete them first", d);
    }
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, d);
    return APR_SUCCESS;
}

apr_status_t admin_domain_list(admin_t *a, apr_array_header_t **out_r, const char **err_r,
                               apr_pool_t *p)
{
    const pr_strlist_t *conf = &a->cfg->server.domains;
    apr_array_header_t *out = apr_array_make(p, conf->n + 4, sizeof(const char *));
    apr_array_header_t *added;
    apr_status_t st;

    for (int i = 0; i < conf->n; i++) {
        const char *d = dir_domain_normalize(conf->v[i], p);
        APR_ARRAY_PUSH(out, const char *) = d ? d : conf->v[i];
    }
    st = dir_domain_list(a->dir, &added, p);
    if (st == PR_EPERM) { /* a backend without its own domains */
        *out_r = out;
        return APR_SUCCESS;
    }
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, "domain list");
    for (int i = 0; i < added->nelts; i++) {
        const char *d = APR_ARRAY_IDX(added, i, const char *);
        if (!admin_domain_configured(a, d)) APR_ARRAY_PUSH(out, const char *) = d;
    }
    *out_r = out;
    return APR_SUCCESS;
}

/* ---- users */

apr_status_t admin_user_add(admin_t *a, const char *address, const char *password,
                            const char **err_r, apr_pool_t *p)
{
    const char *n;
    dir_entry_t *e;
    apr_status_t st;

    if (!admin_writable(a, err_r, p)) return PR_EPERM;
    if ((st = admin_local_address(a, address, &n, err_r, p)) != APR_SUCCESS) return st;
    if (!password || !*password) return admin_fail(err_r, p, PR_EINVAL, "empty password refused");
    if ((st = admin_lookup(a, n, &e, err_r, p)) != APR_SUCCESS) return st;
    if (e && e->kind == DIR_KIND_MAILBOX)
        return admin_fail(err_r, p, PR_EEXIST, "user '%s' already exists", n);
    if (e)
        return admin_fail(err_r, p, PR_EEXIST, "'%s' is already %s", n, admin_kind_name(e->kind));
    st = dir_user_add(a->dir, n, password);
    if (st == PR_EEXIST) return admin_fail(err_r, p, st, "'%s' already exists", n);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, n);
    return APR_SUCCESS;
}

apr_status_t admin_user_passwd(admin_t *a, const char *address, const char *password,
                               const char **err_r, apr_pool_t *p)
{
    const char *n = dir_address_normalize(address, p);
    apr_status_t st;
    if (!admin_writable(a, err_r, p)) return PR_EPERM;
    if (!n) return admin_fail(err_r, p, PR_EINVAL, "invalid address '%s'", address ? address : "");
    if (!password || !*password) return admin_fail(err_r, p, PR_EINVAL, "empty password refused");
    st = dir_user_set_password(a->dir, n, password);
    if (st == PR_ENOTFOUND) return admin_fail(err_r, p, st, "user '%s' does not exist", n);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, n);
    return APR_SUCCESS;
}

apr_status_t admin_user_quota(admin_t *a, const char *address, apr_off_t quota, const char **err_r,
                              apr_pool_t *p)
{
    const char *n = dir_address_normalize(address, p);
    apr_status_t st;
    if (!admin_writable(a, err_r, p)) return PR_EPERM;
    if (!n) return admin_fail(err_r, p, PR_EINVAL, "invalid address '%s'", address ? address : "");
    if (quota < -1)
        return admin_fail(err_r, p, PR_EINVAL,
                          "invalid quota (bytes, 0 for unlimited, or the default)");
    st = dir_user_set_quota(a->dir, n, quota);
    if (st == PR_ENOTFOUND) return admin_fail(err_r, p, st, "user '%s' does not exist", n);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, n);
    return APR_SUCCESS;
}

apr_status_t admin_user_del(admin_t *a, const char *address, const char **err_r, apr_pool_t *p)
{
    const char *n = dir_address_normalize(address, p);
    apr_status_t st;
    if (!admin_writable(a, err_r, p)) return PR_EPERM;
    if (!n) return admin_fail(err_r, p, PR_EINVAL, "invalid address '%s'", address ? address : "");
    st = dir_user_del(a->dir, n);
    if (st == PR_ENOTFOUND) return admin_fail(err_r, p, st, "user '%s' does not exist", n);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, n);
    return APR_SUCCESS;
}

apr_status_t admin_user_list(admin_t *a, apr_array_header_t **out_r, const char **err_r,
                             apr_pool_t *p)
{
    apr_status_t st = dir_user_list(a->dir, out_r, p);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, "user list");
    return APR_SUCCESS;
}

/* ---- aliases */

apr_status_t admin_alias_add(admin_t *a, const char *address, const char *const *targets, int n,
                             const char **err_r, apr_pool_t *p)
{
    const char *addr, **norm;
    dir_entry_t *e;
    apr_status_t st;

    if (!admin_aliases_writable(a, err_r, p)) return PR_EPERM;
    if ((st = admin_local_address(a, address, &addr, err_r, p)) != APR_SUCCESS) return st;
    if (n < 1) return admin_fail(err_r, p, PR_EINVAL, "alias '%s' needs at least one target", addr);
    if ((st = admin_lookup_writable(a, addr, &e, err_r, p)) != APR_SUCCESS) return st;
    if (e && e->kind != DIR_KIND_ALIAS) return admin_fail_taken(a, err_r, p, addr, e);
    norm = apr_pcalloc(p, sizeof(*norm) * (apr_size_t)n);
    for (int i = 0; i < n; i++) {
        if ((st = admin_target(a, targets[i], &norm[i], err_r, p)) != APR_SUCCESS) return st;
        if (strcmp(norm[i], addr) == 0)
            return admin_fail(err_r, p, PR_EINVAL, "alias '%s' cannot point at itself", addr);
    }
    st = dir_alias_add(a->dir, addr, norm, n);
    if (st == PR_EEXIST)
        return admin_fail(err_r, p, st, "alias '%s' already has %s", addr,
                          n == 1 ? "this target" : "these targets");
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, addr);
    return APR_SUCCESS;
}

apr_status_t admin_alias_del(admin_t *a, const char *address, const char **err_r, apr_pool_t *p)
{
    const char *n = dir_address_normalize(address, p);
    apr_status_t st;
    dir_entry_t *e;
    if (!admin_aliases_writable(a, err_r, p)) return PR_EPERM;
    if (!n) return admin_fail(err_r, p, PR_EINVAL, "invalid address '%s'", address ? address : "");
    st = dir_alias_del(a->dir, n);
    if (st == PR_ENOTFOUND && dir_lookup(a->dir, n, &e, p) == APR_SUCCESS &&
        e->kind == DIR_KIND_ALIAS && !admin_backend_writes(a))
        return admin_fail_read_only(a, err_r, p, n, e->kind);
    if (st == PR_ENOTFOUND) return admin_fail(err_r, p, st, "alias '%s' does not exist", n);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, n);
    return APR_SUCCESS;
}

apr_status_t admin_alias_list(admin_t *a, apr_array_header_t **out_r, const char **err_r,
                              apr_pool_t *p)
{
    apr_status_t st = dir_alias_list(a->dir, out_r, p);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, "alias list");
    return APR_SUCCESS;
}

/* ---- lists */

apr_status_t admin_list_add(admin_t *a, const char *address, const char **err_r, apr_pool_t *p)
{
    const char *n;
    dir_entry_t *e;
    apr_status_t st;

    if (!admin_aliases_writable(a, err_r, p)) return PR_EPERM;
    if ((st = admin_local_address(a, address, &n, err_r, p)) != APR_SUCCESS) return st;
    if ((st = admin_lookup_writable(a, n, &e, err_r, p)) != APR_SUCCESS) return st;
    if (e && e->kind == DIR_KIND_LIST)
        return admin_fail(err_r, p, PR_EEXIST, "list '%s' already exists", n);
    if (e) return admin_fail_taken(a, err_r, p, n, e);
    st = dir_list_add(a->dir, n);
    if (st == PR_EEXIST) return admin_fail(err_r, p, st, "'%s' already exists", n);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, n);
    return APR_SUCCESS;
}

apr_status_t admin_list_del(admin_t *a, const char *address, const char **err_r, apr_pool_t *p)
{
    const char *n = dir_address_normalize(address, p);
    apr_status_t st;
    dir_entry_t *e;
    if (!admin_aliases_writable(a, err_r, p)) return PR_EPERM;
    if (!n) return admin_fail(err_r, p, PR_EINVAL, "invalid address '%s'", address ? address : "");
    st = dir_list_del(a->dir, n);
    if (st == PR_ENOTFOUND && dir_lookup(a->dir, n, &e, p) == APR_SUCCESS &&
        e->kind == DIR_KIND_LIST && !(dir_caps(a->dir) & DIR_CAP_WRITE))
        return admin_fail_read_only(a, err_r, p, n, e->kind);
    if (st == PR_ENOTFOUND) return admin_fail(err_r, p, st, "list '%s' does not exist", n);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, n);
    return APR_SUCCESS;
}

/* The list's canonical address, or a message if it is not a list. */
static apr_status_t admin_existing_list(admin_t *a, const char *list, const char **norm_r,
                                        const char **err_r, apr_pool_t *p)
{
    const char *n = dir_address_normalize(list, p);
    dir_entry_t *e;
    apr_status_t st;
    if (!n) return admin_fail(err_r, p, PR_EINVAL, "invalid address '%s'", list ? list : "");
    if ((st = admin_lookup_writable(a, n, &e, err_r, p)) != APR_SUCCESS) return st;
    if (e && e->kind == DIR_KIND_LIST) {
        *norm_r = n;
        return APR_SUCCESS;
    }
    /* A group in LDAP: its members are changed there, or here through
     * the admin bind. */
    if (!e && (st = admin_lookup(a, n, &e, err_r, p)) != APR_SUCCESS) return st;
    if (e && e->kind == DIR_KIND_LIST && admin_backend_writes(a)) {
        *norm_r = n;
        return APR_SUCCESS;
    }
    if (e && e->kind == DIR_KIND_LIST) return admin_fail_read_only(a, err_r, p, n, e->kind);
    return admin_fail(err_r, p, PR_ENOTFOUND, "list '%s' does not exist", n);
}

apr_status_t admin_list_member_add(admin_t *a, const char *list, const char *member,
                                   const char **err_r, apr_pool_t *p)
{
    const char *l, *m;
    apr_status_t st;
    if (!admin_aliases_writable(a, err_r, p)) return PR_EPERM;
    if ((st = admin_existing_list(a, list, &l, err_r, p)) != APR_SUCCESS) return st;
    if ((st = admin_target(a, member, &m, err_r, p)) != APR_SUCCESS) return st;
    if (strcmp(l, m) == 0)
        return admin_fail(err_r, p, PR_EINVAL, "list '%s' cannot be a member of itself", l);
    st = dir_list_member_add(a->dir, l, m);
    if (st == PR_EEXIST) return admin_fail(err_r, p, st, "'%s' is already a member of '%s'", m, l);
    if (st == PR_ENOTFOUND) return admin_fail(err_r, p, st, "list '%s' does not exist", l);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, l);
    return APR_SUCCESS;
}

apr_status_t admin_list_member_del(admin_t *a, const char *list, const char *member,
                                   const char **err_r, apr_pool_t *p)
{
    const char *l, *m;
    apr_status_t st;
    if (!admin_aliases_writable(a, err_r, p)) return PR_EPERM;
    if ((st = admin_existing_list(a, list, &l, err_r, p)) != APR_SUCCESS) return st;
    /* No existence check: removing a member that was deleted meanwhile must work. */
    if (!(m = dir_address_normalize(member, p)))
        return admin_fail(err_r, p, PR_EINVAL, "invalid address '%s'", member ? member : "");
    st = dir_list_member_del(a->dir, l, m);
    if (st == PR_ENOTFOUND) return admin_fail(err_r, p, st, "'%s' is not a member of '%s'", m, l);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, l);
    return APR_SUCCESS;
}

apr_status_t admin_list_policy(admin_t *a, const char *list, const char *policy, const char **err_r,
                               apr_pool_t *p)
{
    const char *n = dir_address_normalize(list, p);
    dir_post_policy_e pol;
    dir_entry_t *e;
    apr_status_t st;
    if (!admin_aliases_writable(a, err_r, p)) return PR_EPERM;
    if (!n) return admin_fail(err_r, p, PR_EINVAL, "invalid address '%s'", list ? list : "");
    if (dir_post_policy_parse(&pol, policy) != APR_SUCCESS)
        return admin_fail(err_r, p, PR_EINVAL,
                          "unknown posting policy '%s' (expected anyone, members or local)",
                          policy ? policy : "");
    st = dir_list_set_policy(a->dir, n, pol);
    if (st == PR_ENOTFOUND && dir_lookup(a->dir, n, &e, p) == APR_SUCCESS)
        return admin_fail(err_r, p, st, "'%s' is %s, not a list", n, admin_kind_name(e->kind));
    if (st == PR_ENOTFOUND) return admin_fail(err_r, p, st, "list '%s' does not exist", n);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, n);
    return APR_SUCCESS;
}

static int admin_list_cmp(const void *x, const void *y)
{
    return strcmp(((const admin_list_t *)x)->address, ((const admin_list_t *)y)->address);
}

apr_status_t admin_list_show(admin_t *a, apr_array_header_t **out_r, const char **err_r,
                             apr_pool_t *p)
{
    apr_array_header_t *lists, *policies, *out;
    apr_hash_t *policy_of = apr_hash_make(p), *local = apr_hash_make(p);
    apr_status_t st = dir_list_list(a->dir, &lists, p);
    if (st == APR_SUCCESS) st = dir_list_policies(a->dir, &policies, p);
    if (st != APR_SUCCESS) return admin_fail_status(a, err_r, p, st, "list show");

    for (int i = 0; i < policies->nelts; i++) {
        dir_list_policy_t *lp = &APR_ARRAY_IDX(policies, i, dir_list_policy_t);
        apr_hash_set(policy_of, lp->list, APR_HASH_KEY_STRING, lp);
    }
    out = apr_array_make(p, lists->nelts + policies->nelts, sizeof(admin_list_t));
    for (int i = 0; i < lists->nelts; i++) {
        const dir_entry_t *e = APR_ARRAY_IDX(lists, i, const dir_entry_t *);
        const dir_list_policy_t *lp = apr_hash_get(policy_of, e->address, APR_HASH_KEY_STRING);
        admin_list_t *l = apr_array_push(out);
        l->address = e->address;
        l->members = e->targets;
        l->policy = lp ? lp->policy : DIR_POST_ANYONE;
        apr_hash_set(local, e->address, APR_HASH_KEY_STRING, l);
    }
    /* A policy on an address not listed above: a list of the read-only
     * backend, unless it has been deleted there since (then not shown). */
    int added = 0;
    for (int i = 0; i < policies->nelts; i++) {
        const dir_list_policy_t *lp = &APR_ARRAY_IDX(policies, i, dir_list_policy_t);
        dir_entry_t *e;
        if (apr_hash_get(local, lp->list, APR_HASH_KEY_STRING)) continue;
        st = dir_lookup(a->dir, lp->list, &e, p);
        if (st == PR_ETEMPFAIL) return admin_fail_status(a, err_r, p, st, "list show");
        if (st != APR_SUCCESS || e->kind != DIR_KIND_LIST) continue;
        admin_list_t *l = apr_array_push(out);
        l->address = lp->list;
        l->members = NULL;
        l->policy = lp->policy;
        added = 1;
    }
    if (added) qsort(out->elts, (size_t)out->nelts, sizeof(admin_list_t), admin_list_cmp);
    *out_r = out;
    return APR_SUCCESS;
}

/* ---- mailboxes */

apr_status_t admin_mailbox_show(admin_t *a, const char *address, admin_mailbox_t **out_r,
                                const char **err_r, apr_pool_t *p)
{
    const char *n = dir_address_normalize(address, p);
    dir_user_t *u;
    store_t *store;
    store_reader_t *r;
    apr_array_header_t *folders;
    apr_pool_t *rp;
    apr_status_t st, ust;
    char buf[160];

    if (!n) return admin_fail(err_r, p, PR_EINVAL, "invalid address '%s'", address ? address : "");
    ust = dir_user_get(a->dir, n, &u, p);
    if (ust != APR_SUCCESS && ust != PR_ENOTFOUND) return admin_fail_status(a, err_r, p, ust, n);
    if ((st = admin_store(a, &store, err_r, p)) != APR_SUCCESS) return st;

    /* The reader (a database connection) lives only for this call. */
    apr_off_t used = 0;
    apr_pool_create(&rp, p);
    st = store_reader_open(&r, store, rp);
    if (st == APR_SUCCESS) st = store_folders_list(r, n, &folders, p);
    if (st == APR_SUCCESS) st = store_user_usage(r, n, NULL, &used);
    apr_pool_destroy(rp);
    if (st != APR_SUCCESS)
        return admin_fail(err_r, p, st, "cannot read the mailbox of '%s': %s", n,
                          pr_strerror(st, buf, sizeof(buf)));
    /* A deleted user's mail is still shown; an address that never was anything is an error. */
    if (ust == PR_ENOTFOUND && folders->nelts == 0)
        return admin_fail(err_r, p, PR_ENOTFOUND, "user '%s' does not exist", n);

    admin_mailbox_t *m = apr_pcalloc(p, sizeof(*m));
    m->address = n;
    m->used = used;
    /* The same rule as SMTP delivery applies: the user's own, else the default. */
    m->quota_is_default = ust != APR_SUCCESS || u->quota < 0;
    m->quota = m->quota_is_default ? a->cfg->store.default_quota : u->quota;
    m->folders = apr_array_make(p, folders->nelts, sizeof(admin_folder_t));
    for (int i = 0; i < folders->nelts; i++) {
        const store_folder_info_t *fi = &APR_ARRAY_IDX(folders, i, store_folder_info_t);
        admin_folder_t *f = &APR_ARRAY_PUSH(m->folders, admin_folder_t);
        f->name = fi->name;
        f->messages = fi->messages;
        f->size = fi->size;
        m->messages += fi->messages;
        m->size += fi->size;
    }
    *out_r = m;
    return APR_SUCCESS;
}

apr_status_t admin_message_open(admin_t *a, const char *address, const char *folder,
                                apr_uint32_t uid, store_stream_t **s_r, const char **err_r,
                                apr_pool_t *p)
{
    const char *n = dir_address_normalize(address, p);
    store_t *store;
    store_reader_t *r;
    apr_status_t st;
    char buf[160];

    if (!n) return admin_fail(err_r, p, PR_EINVAL, "invalid address '%s'", address ? address : "");
    if (!folder || !*folder) folder = "INBOX";
    if ((st = admin_store(a, &store, err_r, p)) != APR_SUCCESS) return st;
    if ((st = store_reader_open(&r, store, p)) != APR_SUCCESS)
        return admin_fail(err_r, p, st, "cannot read the mail store: %s",
                          pr_strerror(st, buf, sizeof(buf)));
    st = store_message_open(s_r, r, n, folder, uid, p);
    if (st == PR_ENOTFOUND)
        return admin_fail(err_r, p, st, "no message with UID %u in folder '%s' of '%s'", uid,
                          folder, n);
    if (st != APR_SUCCESS)
        return admin_fail(err_r, p, st, "cannot read the message: %s",
                          pr_strerror(st, buf, sizeof(buf)));
    return APR_SUCCESS;
}

/* ---- the outbound queue */

/* A queue ID as typed: a decimal number from 1 that fits the store's. */
static apr_status_t admin_queue_id(const char *text, apr_int64_t *id_r, const char **err_r,
                                   apr_pool_t *p)
{
    apr_int64_t v = 0;
    const char *s = text ? text : "";
    if (!*s) goto bad;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') goto bad;
        if (v > (APR_INT64_MAX - (*s - '0')) / 10) goto bad;
        v = v * 10 + (*s - '0');
    }
    if (v == 0) goto bad;
    *id_r = v;
    return APR_SUCCESS;
bad:
    return admin_fail(err_r, p, PR_EINVAL,
                      "invalid queue ID '%s' (expected a number, as in the queue list)",
                      text ? text : "");
}

static apr_status_t admin_queue_unknown(const char **err_r, apr_pool_t *p, apr_int64_t id)
{
    return admin_fail(err_r, p, PR_ENOTFOUND,
                      "no message with ID %" APR_INT64_T_FMT
                      " in the queue (delivered, bounced or deleted meanwhile?)",
                      id);
}

static apr_status_t admin_queue_fail(const char **err_r, apr_pool_t *p, apr_status_t st,
                                     const char *what)
{
    char buf[160];
    return admin_fail(err_r, p, st, "cannot %s: %s", what, pr_strerror(st, buf, sizeof(buf)));
}

/* Where the header section of buf ends: the offset of the empty line
 * (CRLF or a lone LF), or -1 when buf holds none. */
static apr_ssize_t admin_header_end(const char *buf, apr_size_t len)
{
    apr_size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl) break;
        apr_size_t line = (apr_size_t)(nl - (buf + pos));
        if (line == 0 || (line == 1 && buf[pos] == '\r')) return (apr_ssize_t)pos;
        pos = (apr_size_t)(nl - buf) + 1;
    }
    return -1;
}

/* The header section of queued message id, read through r. */
static apr_status_t admin_queue_headers(admin_qmsg_t *q, store_reader_t *r, apr_int64_t id,
                                        apr_pool_t *p)
{
    store_stream_t *s;
    apr_status_t st = store_queue_open(&s, r, id, p);
    if (st != APR_SUCCESS) return st;
    char *buf = apr_palloc(p, ADMIN_QUEUE_HEADER_MAX + 1);
    apr_size_t len = 0;
    int eof = 0;
    /* Read until the header's end is in, or the limit, or the end. */
    while (len < ADMIN_QUEUE_HEADER_MAX && admin_header_end(buf, len) < 0) {
        apr_size_t n = ADMIN_QUEUE_HEADER_MAX - len;
        st = store_stream_read(s, buf + len, &n);
        len += n;
        if (st == APR_EOF) {
            eof = 1;
            break;
        }
        if (st != APR_SUCCESS) return st;
    }
    apr_ssize_t end = admin_header_end(buf, len);
    if (end >= 0) {
        len = (apr_size_t)end;
    } else if (!eof) {
        /* Longer than the limit: up to its last whole line. */
        while (len > 0 && buf[len - 1] != '\n')
            len--;
        q->headers_truncated = 1;
    }
    /* At the end without an empty line, the whole message is header. */
    buf[len] = '\0';
    q->headers = buf;
    q->headers_len = len;
    return APR_SUCCESS;
}

/* List the queue (id 0) or one message, with a reader that lives only for
 * this call; with show, read that message's header too. */
static apr_status_t admin_queue_read(admin_t *a, apr_int64_t id, apr_array_header_t **msgs_r,
                                     admin_qmsg_t *show, const char **err_r, apr_pool_t *p)
{
    store_t *store;
    store_reader_t *r;
    apr_pool_t *rp;
    apr_status_t st;

    if ((st = admin_store(a, &store, err_r, p)) != APR_SUCCESS) return st;
    apr_pool_create(&rp, p);
    st = store_reader_open(&r, store, rp);
    if (st == APR_SUCCESS) st = store_queue_list(r, id, msgs_r, p);
    /* Delivered or deleted between the two reads: not found either way. */
    if (st == APR_SUCCESS && show) st = admin_queue_headers(show, r, id, p);
    apr_pool_destroy(rp);
    if (st == PR_ENOTFOUND && id) return admin_queue_unknown(err_r, p, id);
    if (st != APR_SUCCESS) return admin_queue_fail(err_r, p, st, "read the queue");
    return APR_SUCCESS;
}

apr_status_t admin_queue_list(admin_t *a, apr_array_header_t **out_r, const char **err_r,
                              apr_pool_t *p)
{
    return admin_queue_read(a, 0, out_r, NULL, err_r, p);
}

apr_status_t admin_queue_show(admin_t *a, const char *id, admin_qmsg_t **out_r, const char **err_r,
                              apr_pool_t *p)
{
    apr_int64_t qid;
    apr_array_header_t *msgs;
    apr_status_t st;
    if ((st = admin_queue_id(id, &qid, err_r, p)) != APR_SUCCESS) return st;
    admin_qmsg_t *q = apr_pcalloc(p, sizeof(*q));
    if ((st = admin_queue_read(a, qid, &msgs, q, err_r, p)) != APR_SUCCESS) return st;
    q->msg = APR_ARRAY_IDX(msgs, 0, const store_qmsg_t *);
    *out_r = q;
    return APR_SUCCESS;
}

apr_status_t admin_queue_flush(admin_t *a, apr_uint32_t *pending_r, const char **err_r,
                               apr_pool_t *p)
{
    store_t *store;
    store_reader_t *r;
    apr_pool_t *rp;
    apr_uint32_t pending = 0;
    apr_status_t st;

    if ((st = admin_store(a, &store, err_r, p)) != APR_SUCCESS) return st;
    if ((st = store_queue_retry(store, 0)) != APR_SUCCESS)
        return admin_queue_fail(err_r, p, st, "flush the queue");
    if (pending_r) {
        apr_pool_create(&rp, p);
        st = store_reader_open(&r, store, rp);
        if (st == APR_SUCCESS) st = store_queue_count(r, &pending);
        apr_pool_destroy(rp);
        if (st != APR_SUCCESS) return admin_queue_fail(err_r, p, st, "count the queue");
        *pending_r = pending;
    }
    return APR_SUCCESS;
}

apr_status_t admin_queue_retry(admin_t *a, const char *id, const char **err_r, apr_pool_t *p)
{
    store_t *store;
    apr_int64_t qid;
    apr_status_t st;
    if ((st = admin_queue_id(id, &qid, err_r, p)) != APR_SUCCESS) return st;
    if ((st = admin_store(a, &store, err_r, p)) != APR_SUCCESS) return st;
    st = store_queue_retry(store, qid);
    if (st == PR_ENOTFOUND) return admin_queue_unknown(err_r, p, qid);
    if (st != APR_SUCCESS)
        return admin_queue_fail(err_r, p, st,
                                apr_psprintf(p, "retry message %" APR_INT64_T_FMT, qid));
    return APR_SUCCESS;
}

apr_status_t admin_queue_delete(admin_t *a, const char *id, const char **err_r, apr_pool_t *p)
{
    store_t *store;
    apr_int64_t qid;
    apr_status_t st;
    if ((st = admin_queue_id(id, &qid, err_r, p)) != APR_SUCCESS) return st;
    if ((st = admin_store(a, &store, err_r, p)) != APR_SUCCESS) return st;
    st = store_queue_delete(store, qid);
    if (st == PR_ENOTFOUND) return admin_queue_unknown(err_r, p, qid);
    if (st != APR_SUCCESS)
        return admin_queue_fail(err_r, p, st,
                                apr_psprintf(p, "delete message %" APR_INT64_T_FMT, qid));
    return APR_SUCCESS;
}
