/* The directory: picks the backend, normalises addresses, decides which
 * domains are local, and expands aliases and lists (RFC 5321 3.9) once for
 * every backend: loops and over-deep nesting are cut, duplicates removed,
 * and a temporary failure anywhere stops the whole lookup. */
#include "directory/directory.h"
#include "directory/dir_internal.h"
#include "service/core/log.h"
#include "service/core/status.h"

#include <apr_hash.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_thread_rwlock.h>
#include <string.h>

/* Backends known by name in [directory] backend. */
static const dir_backend_t *const dir_backends[] = {&dir_local_backend};

struct dir_t {
    apr_pool_t *pool;
    /* Readers (every lookup) share it; dir_reload takes it exclusively to
     * swap the backend, so no call ever runs on a backend being closed. */
    apr_thread_rwlock_t *lock;
    const pr_config_t *cfg;
    const dir_backend_t *be;
    void *ctx;
    apr_pool_t *be_pool;
};

/* ---- addresses */

/* RFC 5322 atext minus '!' and '%' (old source-routing syntaxes that would
 * let "user%other@local" relay through us), plus '.' handled apart. */
static int dir_local_char_ok(unsigned char c)
{
    if (apr_isalnum(c)) return 1;
    return c != '\0' && strchr("#$&'*+-/=?^_`{|}~", c) != NULL;
}

int dir_domain_normalize_buf(char *out, apr_size_t size, const char *domain)
{
    apr_size_t n, label = 0;

    if (!domain) return 0;
    n = strnlen(domain, PR_ADDR_MAX_DOMAIN + 1);
    if (n == 0 || n > PR_ADDR_MAX_DOMAIN || n + 1 > size) return 0;
    for (apr_size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)domain[i];
        if (c == '.') {
            /* no empty label, none ending in '-' (RFC 1123 2.1) */
            if (label == 0 || domain[i - 1] == '-') return 0;
            label = 0;
        } else if (apr_isalnum(c) || c == '-') {
            if (c == '-' && label == 0) return 0;
            if (++label > 63) return 0;
        } else {
            return 0;
        }
        out[i] = (char)apr_tolower(c);
    }
    if (label == 0 || domain[n - 1] == '-') return 0;
    out[n] = '\0';
    return 1;
}

int dir_address_normalize_buf(char *out, apr_size_t size, const char *address)
{
    const char *at;
    apr_size_t n, nl;

    if (!address) return 0;
    n = strnlen(address, DIR_ADDRESS_MAX + 1);
    if (n == 0 || n > DIR_ADDRESS_MAX || n + 1 > size) return 0;
    at = memchr(address, '@', n);
    if (!at) return 0;
    nl = (apr_size_t)(at - address);
    if (nl == 0 || nl > PR_ADDR_MAX_LOCAL) return 0;
    for (apr_size_t i = 0; i < nl; i++) {
        unsigned char c = (unsigned char)address[i];
        if (c == '.') {
            /* dot-atom: no leading, trailing or doubled dots */
            if (i == 0 || i + 1 == nl || address[i - 1] == '.') return 0;
        } else if (!dir_local_char_ok(c)) {
            return 0;
        }
        out[i] = (char)apr_tolower(c);
    }
    out[nl] = '@';
    /* A second '@' fails the domain check. */
    return dir_domain_normalize_buf(out + nl + 1, size - nl - 1, at + 1);
}

const char *dir_address_normalize(const char *address, apr_pool_t *pool)
{
    char buf[DIR_ADDRESS_MAX + 1];
    return dir_address_normalize_buf(buf, sizeof(buf), address) ? apr_pstrdup(pool, buf) : NULL;
}

const char *dir_domain_normalize(const char *domain, apr_pool_t *pool)
{
    char buf[PR_ADDR_MAX_DOMAIN + 1];
    return dir_domain_normalize_buf(buf, sizeof(buf), domain) ? apr_pstrdup(pool, buf) : NULL;
}

/* ---- open, reload, close */

static apr_status_t dir_backend_find(const dir_backend_t **be_r, const pr_config_t *cfg)
{
    const char *name = cfg->directory.backend;
    if (!name || !*name) name = "local";
    for (apr_size_t i = 0; i < sizeof(dir_backends) / sizeof(dir_backends[0]); i++) {
        if (strcmp(dir_backends[i]->name, name) == 0) {
            *be_r = dir_backends[i];
            return APR_SUCCESS;
        }
    }
    pr_log_error(NULL, "directory: unknown backend '%s'", name);
    return PR_EINVAL;
}

static apr_status_t dir_backend_start(const dir_backend_t **be_r, void **ctx_r, apr_pool_t **pool_r,
                                      const pr_config_t *cfg, apr_pool_t *parent)
{
    const dir_backend_t *be;
    apr_pool_t *p;
    apr_status_t st = dir_backend_find(&be, cfg);
    if (st != APR_SUCCESS) return st;
    apr_pool_create(&p, parent);
    if ((st = be->open(ctx_r, cfg, p)) != APR_SUCCESS) {
        apr_pool_destroy(p);
        return st;
    }
    *be_r = be;
    *pool_r = p;
    return APR_SUCCESS;
}

static apr_status_t dir_cleanup(void *data)
{
    dir_t *d = data;
    if (d->be) {
        d->be->close(d->ctx);
        apr_pool_destroy(d->be_pool);
        d->be = NULL;
        d->ctx = NULL;
    }
    apr_thread_rwlock_destroy(d->lock);
    return APR_SUCCESS;
}

apr_status_t dir_open(dir_t **d_r, const pr_config_t *cfg, apr_pool_t *pool)
{
    dir_t *d = apr_pcalloc(pool, sizeof(*d));
    apr_status_t st;

    d->pool = pool;
    d->cfg = cfg;
    st = dir_backend_start(&d->be, &d->ctx, &d->be_pool, cfg, pool);
    if (st != APR_SUCCESS) return st;
    if ((st = apr_thread_rwlock_create(&d->lock, pool)) != APR_SUCCESS) {
        d->be->close(d->ctx);
        apr_pool_destroy(d->be_pool);
        return st;
    }
    apr_pool_cleanup_register(pool, d, dir_cleanup, apr_pool_cleanup_null);
    *d_r = d;
    return APR_SUCCESS;
}

apr_status_t dir_reload(dir_t *d, const pr_config_t *cfg)
{
    const dir_backend_t *be, *old_be;
    void *ctx, *old_ctx;
    apr_pool_t *p, *old_pool;
    /* Open the new one first, outside the lock: an LDAP bind may be slow and
     * lookups should keep being answered meanwhile. */
    apr_status_t st = dir_backend_start(&be, &ctx, &p, cfg, d->pool);
    if (st != APR_SUCCESS) return st;

    apr_thread_rwlock_wrlock(d->lock);
    old_be = d->be;
    old_ctx = d->ctx;
    old_pool = d->be_pool;
    d->be = be;
    d->ctx = ctx;
    d->be_pool = p;
    d->cfg = cfg;
    apr_thread_rwlock_unlock(d->lock);

    old_be->close(old_ctx);
    apr_pool_destroy(old_pool);
    return APR_SUCCESS;
}

void dir_close(dir_t *d)
{
    if (d) apr_pool_cleanup_run(d->pool, d, dir_cleanup);
}

const dir_backend_t *dir_backend(const dir_t *d)
{
    return d->be;
}

void *dir_backend_ctx(const dir_t *d)
{
    return d->ctx;
}

/* ---- lookups; the *_locked helpers expect the read lock held */

static apr_status_t dir_domain_is_local_locked(dir_t *d, const char *domain)
{
    if (pr_config_is_local_domain(d->cfg, domain)) return APR_SUCCESS;
    apr_status_t st = d->be->domain_is_local(d->ctx, domain);
    if (st == APR_SUCCESS || st == PR_ENOTFOUND) return st;
    return PR_ETEMPFAIL;
}

apr_status_t dir_domain_is_local(dir_t *d, const char *domain)
{
    char buf[PR_ADDR_MAX_DOMAIN + 1];
    if (!dir_domain_normalize_buf(buf, sizeof(buf), domain)) return PR_ENOTFOUND;
    apr_thread_rwlock_rdlock(d->lock);
    apr_status_t st = dir_domain_is_local_locked(d, buf);
    apr_thread_rwlock_unlock(d->lock);
    return st;
}

/* A backend's answer: anything but found/unknown stops the caller. */
static apr_status_t dir_lookup_locked(dir_t *d, const char *norm, dir_entry_t **e_r,
                                      apr_pool_t *pool)
{
    apr_status_t st = d->be->lookup(d->ctx, norm, e_r, pool);
    if (st == APR_SUCCESS || st == PR_ENOTFOUND) return st;
    return PR_ETEMPFAIL;
}

apr_status_t dir_lookup(dir_t *d, const char *address, dir_entry_t **e_r, apr_pool_t *pool)
{
    const char *norm = dir_address_normalize(address, pool);
    if (!norm) return PR_EINVAL;
    apr_thread_rwlock_rdlock(d->lock);
    apr_status_t st = dir_lookup_locked(d, norm, e_r, pool);
    apr_thread_rwlock_unlock(d->lock);
    return st;
}

apr_status_t dir_user_get(dir_t *d, const char *address, dir_user_t **u_r, apr_pool_t *pool)
{
    const char *norm = dir_address_normalize(address, pool);
    apr_status_t st;
    if (!norm) return PR_EINVAL;
    apr_thread_rwlock_rdlock(d->lock);
    if (d->be->user_get) {
        st = d->be->user_get(d->ctx, norm, u_r, pool);
        if (st != APR_SUCCESS && st != PR_ENOTFOUND) st = PR_ETEMPFAIL;
    } else {
        dir_entry_t *e;
        st = dir_lookup_locked(d, norm, &e, pool);
        if (st == APR_SUCCESS && e->kind != DIR_KIND_MAILBOX) st = PR_ENOTFOUND;
        if (st == APR_SUCCESS) {
            dir_user_t *u = apr_pcalloc(pool, sizeof(*u));
            u->address = e->address;
            u->quota = -1;
            u->enabled = 1;
            *u_r = u;
        }
    }
    apr_thread_rwlock_unlock(d->lock);
    return st;
}

/* ---- expansion */

typedef struct dir_expand_t {
    dir_t *d;
    apr_pool_t *pool;
    const char *top;
    apr_hash_t *seen;    /* every address met so far: expanded once, delivered once */
    apr_hash_t *on_path; /* aliases/lists being expanded: meeting one again is a loop */
    dir_result_t *r;
    int lookups;
} dir_expand_t;

static apr_status_t dir_expand_add(dir_expand_t *x, apr_array_header_t *to, const char *address)
{
    if (x->r->mailboxes->nelts + x->r->external->nelts >= DIR_MAX_EXPANSION) {
        pr_log_warn(NULL, "directory: %s expands to more than %d addresses; refused", x->top,
                    DIR_MAX_EXPANSION);
        return PR_ETOOMANY;
    }
    APR_ARRAY_PUSH(to, const char *) = address;
    return APR_SUCCESS;
}

static apr_status_t dir_expand(dir_expand_t *x, const dir_entry_t *e, int depth)
{
    for (int i = 0; i < e->targets->nelts; i++) {
        const char *t = APR_ARRAY_IDX(e->targets, i, const char *);
        const char *n = dir_address_normalize(t, x->pool);
        dir_entry_t *sub;
        apr_status_t st;

        if (!n) {
            pr_log_warn(NULL, "directory: %s has a malformed target '%s'; skipped", e->address, t);
            continue;
        }
        if (apr_hash_get(x->on_path, n, APR_HASH_KEY_STRING)) {
            pr_log_warn(NULL, "directory: loop %s -> %s while expanding %s; cut", e->address, n,
                        x->top);
            continue;
        }
        if (apr_hash_get(x->seen, n, APR_HASH_KEY_STRING)) continue;
        apr_hash_set(x->seen, n, APR_HASH_KEY_STRING, n);

        const char *at = strchr(n, '@');
        st = dir_domain_is_local_locked(x->d, at + 1);
        if (st == PR_ENOTFOUND) {
            /* A remote mailbox: only its domain is case-insensitive
             * (RFC 5321 2.4), so the local part goes out as written. */
            const char *ext =
                apr_pstrcat(x->pool, apr_pstrndup(x->pool, t, (apr_size_t)(at - n)), at, NULL);
            if ((st = dir_expand_add(x, x->r->external, ext)) != APR_SUCCESS) return st;
            continue;
        }
        if (st != APR_SUCCESS) return st;

        if (++x->lookups > 2 * DIR_MAX_EXPANSION) {
            pr_log_warn(NULL, "directory: expanding %s needs too many lookups; refused", x->top);
            return PR_ETOOMANY;
        }
        st = dir_lookup_locked(x->d, n, &sub, x->pool);
        if (st == PR_ENOTFOUND) {
            pr_log_warn(NULL, "directory: %s -> %s: no such address; skipped", e->address, n);
            continue;
        }
        if (st != APR_SUCCESS) return st;
        if (sub->kind == DIR_KIND_MAILBOX) {
            if ((st = dir_expand_add(x, x->r->mailboxes, n)) != APR_SUCCESS) return st;
            continue;
        }
        if (depth + 1 >= DIR_MAX_DEPTH) {
            pr_log_warn(NULL, "directory: %s nests deeper than %d at %s; cut", x->top,
                        DIR_MAX_DEPTH, n);
            continue;
        }
        apr_hash_set(x->on_path, n, APR_HASH_KEY_STRING, n);
        st = dir_expand(x, sub, depth + 1);
        apr_hash_set(x->on_path, n, APR_HASH_KEY_STRING, NULL);
        if (st != APR_SUCCESS) return st;
    }
    return APR_SUCCESS;
}

static apr_status_t dir_resolve_locked(dir_t *d, const char *norm, dir_result_t **r_r,
                                       apr_pool_t *pool)
{
    dir_entry_t *e;
    dir_result_t *r;
    apr_status_t st = dir_domain_is_local_locked(d, strchr(norm, '@') + 1);
    if (st != APR_SUCCESS) return st;
    if ((st = dir_lookup_locked(d, norm, &e, pool)) != APR_SUCCESS) return st;

    r = apr_pcalloc(pool, sizeof(*r));
    r->kind = e->kind;
    r->address = norm;
    r->mailboxes = apr_array_make(pool, 4, sizeof(const char *));
    r->external = apr_array_make(pool, 0, sizeof(const char *));
    if (e->kind == DIR_KIND_MAILBOX) {
        APR_ARRAY_PUSH(r->mailboxes, const char *) = norm;
    } else {
        dir_expand_t x = {0};
        x.d = d;
        x.pool = pool;
        x.top = norm;
        x.seen = apr_hash_make(pool);
        x.on_path = apr_hash_make(pool);
        x.r = r;
        apr_hash_set(x.seen, norm, APR_HASH_KEY_STRING, norm);
        apr_hash_set(x.on_path, norm, APR_HASH_KEY_STRING, norm);
        if ((st = dir_expand(&x, e, 0)) != APR_SUCCESS) return st;
    }
    *r_r = r;
    return APR_SUCCESS;
}

apr_status_t dir_resolve(dir_t *d, const char *address, dir_result_t **r_r, apr_pool_t *pool)
{
    const char *norm = dir_address_normalize(address, pool);
    if (!norm) return PR_EINVAL;
    apr_thread_rwlock_rdlock(d->lock);
    apr_status_t st = dir_resolve_locked(d, norm, r_r, pool);
    apr_thread_rwlock_unlock(d->lock);
    return st;
}

apr_status_t dir_authenticate(dir_t *d, const char *login, const char *password,
                              const char **user_r, apr_pool_t *pool)
{
    /* The backend spends the same effort on unknown logins (dummy hash), so
     * malformed ones go to it too rather than failing fast here. */
    apr_thread_rwlock_rdlock(d->lock);
    apr_status_t st =
        d->be->authenticate(d->ctx, login ? login : "", password ? password : "", user_r, pool);
    apr_thread_rwlock_unlock(d->lock);
    if (st == APR_SUCCESS || st == PR_EAUTH) return st;
    return PR_ETEMPFAIL;
}

static int dir_array_has(const apr_array_header_t *a, const char *s)
{
    for (int i = 0; i < a->nelts; i++)
        if (strcmp(APR_ARRAY_IDX(a, i, const char *), s) == 0) return 1;
    return 0;
}

apr_status_t dir_sender_allowed(dir_t *d, const char *user, const char *address, apr_pool_t *pool)
{
    const char *nu = dir_address_normalize(user, pool);
    const char *na = dir_address_normalize(address, pool);
    dir_entry_t *e;
    apr_status_t st;

    if (!nu || !na) return PR_EPERM;
    if (strcmp(nu, na) == 0) return APR_SUCCESS;

    apr_thread_rwlock_rdlock(d->lock);
    st = dir_domain_is_local_locked(d, strchr(na, '@') + 1);
    if (st == APR_SUCCESS) st = dir_lookup_locked(d, na, &e, pool);
    if (st == APR_SUCCESS) {
        if (e->kind == DIR_KIND_LIST) {
            /* Only direct members: belonging to a list nested inside does
             * not make one a voice of the outer list. */
            st = PR_EPERM;
            for (int i = 0; i < e->targets->nelts; i++) {
                const char *m =
                    dir_address_normalize(APR_ARRAY_IDX(e->targets, i, const char *), pool);
                if (m && strcmp(m, nu) == 0) st = APR_SUCCESS;
            }
        } else if (e->kind == DIR_KIND_ALIAS) {
            dir_result_t *r;
            st = dir_resolve_locked(d, na, &r, pool);
            if (st == APR_SUCCESS)
                st = dir_array_has(r->mailboxes, nu) ? APR_SUCCESS : PR_EPERM;
            else if (st != PR_ETEMPFAIL)
                st = PR_EPERM;
        } else {
            st = PR_EPERM;
        }
    } else if (st == PR_ENOTFOUND) {
        st = PR_EPERM;
    }
    apr_thread_rwlock_unlock(d->lock);
    return st;
}

/* ---- admin calls */

/* Every admin call: normalise (before), check the backend has the operation
 * (writes also need DIR_CAP_WRITE), call it under the read lock. */
#define DIR_CALL(d, need_write, fn, ...)                                                           \
    do {                                                                                           \
        apr_status_t st_ = PR_EPERM;                                                               \
        apr_thread_rwlock_rdlock((d)->lock);                                                       \
        if ((d)->be->fn && (!(need_write) || ((d)->be->caps & DIR_CAP_WRITE)))                     \
            st_ = (d)->be->fn((d)->ctx, __VA_ARGS__);                                              \
        apr_thread_rwlock_unlock((d)->lock);                                                       \
        return st_;                                                                                \
    } while (0)

#define DIR_NORM(buf, address)                                                                     \
    char buf[DIR_ADDRESS_MAX + 1];                                                                 \
    if (!dir_address_normalize_buf(buf, sizeof(buf), address)) return PR_EINVAL

apr_status_t dir_domain_add(dir_t *d, const char *domain)
{
    char buf[PR_ADDR_MAX_DOMAIN + 1];
    if (!dir_domain_normalize_buf(buf, sizeof(buf), domain)) return PR_EINVAL;
    DIR_CALL(d, 1, domain_add, buf);
}

apr_status_t dir_domain_del(dir_t *d, const char *domain)
{
    char buf[PR_ADDR_MAX_DOMAIN + 1];
    if (!dir_domain_normalize_buf(buf, sizeof(buf), domain)) return PR_EINVAL;
    DIR_CALL(d, 1, domain_del, buf);
}

apr_status_t dir_domain_list(dir_t *d, apr_array_header_t **domains_r, apr_pool_t *pool)
{
    DIR_CALL(d, 0, domain_list, domains_r, pool);
}

apr_status_t dir_user_add(dir_t *d, const char *address, const char *password)
{
    DIR_NORM(a, address);
    if (!password || !*password) return PR_EINVAL;
    DIR_CALL(d, 1, user_add, a, password);
}

apr_status_t dir_user_set_password(dir_t *d, const char *address, const char *password)
{
    DIR_NORM(a, address);
    if (!password || !*password) return PR_EINVAL;
    DIR_CALL(d, 1, user_set_password, a, password);
}

apr_status_t dir_user_del(dir_t *d, const char *address)
{
    DIR_NORM(a, address);
    DIR_CALL(d, 1, user_del, a);
}

apr_status_t dir_user_list(dir_t *d, apr_array_header_t **users_r, apr_pool_t *pool)
{
    DIR_CALL(d, 0, user_list, users_r, pool);
}

apr_status_t dir_alias_add(dir_t *d, const char *address, const char *const *targets, int n)
{
    char t[DIR_ADDRESS_MAX + 1];
    DIR_NORM(a, address);
    if (n < 1) return PR_EINVAL;
    for (int i = 0; i < n; i++)
        if (!dir_address_normalize_buf(t, sizeof(t), targets[i])) return PR_EINVAL;
    DIR_CALL(d, 1, alias_add, a, targets, n);
}

apr_status_t dir_alias_del(dir_t *d, const char *address)
{
    DIR_NORM(a, address);
    DIR_CALL(d, 1, alias_del, a);
}

apr_status_t dir_alias_list(dir_t *d, apr_array_header_t **aliases_r, apr_pool_t *pool)
{
    DIR_CALL(d, 0, alias_list, aliases_r, pool);
}

apr_status_t dir_list_add(dir_t *d, const char *address)
{
    DIR_NORM(a, address);
    DIR_CALL(d, 1, list_add, a);
}

apr_status_t dir_list_del(dir_t *d, const char *address)
{
    DIR_NORM(a, address);
    DIR_CALL(d, 1, list_del, a);
}

apr_status_t dir_list_member_add(dir_t *d, const char *list, const char *member)
{
    DIR_NORM(l, list);
    DIR_NORM(m, member);
    DIR_CALL(d, 1, list_member_add, l, m);
}

apr_status_t dir_list_member_del(dir_t *d, const char *list, const char *member)
{
    DIR_NORM(l, list);
    DIR_NORM(m, member);
    DIR_CALL(d, 1, list_member_del, l, m);
}

apr_status_t dir_list_list(dir_t *d, apr_array_header_t **lists_r, apr_pool_t *pool)
{
    DIR_CALL(d, 0, list_list, lists_r, pool);
}
