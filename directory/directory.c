/* The directory: picks the backend, normalises addresses, decides which
 * domains are local, and expands aliases and lists (RFC 5321 3.9) once for
 * every backend: loops and over-deep nesting are cut, duplicates removed,
 * and a temporary failure anywhere stops the whole lookup. Beside a
 * read-only backend it keeps the built-in directory for aliases, lists and
 * added domains (issue 4), consulted first. */
#include "directory/directory.h"
#include "directory/dir_internal.h"
#include "service/core/log.h"
#include "service/core/status.h"

#include <apr_cstr.h>
#include <apr_hash.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_thread_rwlock.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

/* Backends known by name in [directory] backend. */
static const dir_backend_t *const dir_backends[] = {&dir_local_backend, &dir_ldap_backend};

#define DIR_AC_MAC_LEN 32 /* HMAC-SHA256 */

/* One remembered login: a success (user set, keyed by login) or a failure
 * (user NULL, keyed by its MAC, so one login may have several wrong
 * passwords remembered). malloc'd: entries come and go for the life of the
 * process, which a pool would never give back. */
typedef struct dir_ac_entry_t {
    struct dir_ac_entry_t *prev, *next; /* insertion order, oldest first */
    apr_time_t expires;
    unsigned char mac[DIR_AC_MAC_LEN]; /* see dir_authenticate */
    const char *user;                  /* canonical address, after login; NULL: a failure */
    char login[];                      /* the key of a success; "" for a failure */
} dir_ac_entry_t;

typedef struct dir_ac_table_t {
    apr_hash_t *h; /* login -> entry, or (by_mac) mac -> entry */
    dir_ac_entry_t *head, *tail;
    int n;
    int by_mac;
} dir_ac_table_t;

/* One opened backend. */
typedef struct dir_layer_t {
    const dir_backend_t *be; /* NULL: none */
    void *ctx;
    apr_pool_t *pool;
} dir_layer_t;

struct dir_t {
    apr_pool_t *pool;
    /* Readers (every lookup) share it; dir_reload takes it exclusively to
     * swap the backends, so no call ever runs on a backend being closed. */
    apr_thread_rwlock_t *lock;
    const pr_config_t *cfg;
    const dir_backend_t *fixed; /* dir_open_with's backend, also on reload */
    dir_layer_t primary;        /* the one [directory] backend names */
    /* The built-in directory beside a primary without DIR_CAP_WRITE:
     * its aliases and lists come first, its users are ignored. */
    dir_layer_t local;
    int closed;

    /* The verified- and failed-credential caches (dir_authenticate).
     * ac_mutex guards the tables, the counters; it is taken inside lock. */
    apr_thread_mutex_t *ac_mutex;
    apr_pool_t *ac_pool; /* the tables' own memory, used under ac_mutex */
    dir_ac_table_t ac_ok, ac_fail;
    int ac_max;
    dir_auth_stats_t ac_stats;
    EVP_MAC *ac_hmac;
    /* Random per process: a cached value means nothing outside it, and
     * nothing derived from a password survives a restart. */
    unsigned char ac_key[32];
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

/* ---- credential caches; the dir_ac_* helpers expect ac_mutex held */

static const void *dir_ac_key(const dir_ac_table_t *t, const dir_ac_entry_t *e, apr_ssize_t *len)
{
    *len = t->by_mac ? DIR_AC_MAC_LEN : APR_HASH_KEY_STRING;
    return t->by_mac ? (const void *)e->mac : (const void *)e->login;
}

static void dir_ac_unlink(dir_ac_table_t *t, dir_ac_entry_t *e)
{
    apr_ssize_t klen;
    const void *k = dir_ac_key(t, e, &klen);
    apr_hash_set(t->h, k, klen, NULL);
    if (e->prev)
        e->prev->next = e->next;
    else
        t->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        t->tail = e->prev;
    t->n--;
    OPENSSL_cleanse(e->mac, sizeof(e->mac));
    free(e);
}

static void dir_ac_flush(dir_ac_table_t *t)
{
    while (t->head)
        dir_ac_unlink(t, t->head);
}

static void dir_ac_trim(dir_ac_table_t *t, int max)
{
    while (t->head && t->n > max)
        dir_ac_unlink(t, t->head);
}

/* The entry of a login (by login) or of a MAC (by_mac); NULL if none. */
static dir_ac_entry_t *dir_ac_get(dir_ac_table_t *t, const char *login, const unsigned char *mac)
{
    if (t->by_mac) return apr_hash_get(t->h, mac, DIR_AC_MAC_LEN);
    return apr_hash_get(t->h, login, APR_HASH_KEY_STRING);
}

/* user NULL: a failure, keyed by mac (login is not kept). */
static void dir_ac_insert(dir_t *d, dir_ac_table_t *t, const char *login, const char *user,
                          const unsigned char *mac, apr_time_t expires)
{
    dir_ac_entry_t *e = dir_ac_get(t, login, mac);
    apr_time_t now = apr_time_now();
    apr_size_t nl, nu = user ? strlen(user) + 1 : 0;
    apr_ssize_t klen;

    if (!user) login = "";
    nl = strlen(login) + 1;
    if (e) dir_ac_unlink(t, e);
    /* Entries are in insertion order under one TTL (a reload empties the
     * table), so the expired ones are at the head; past the bound the
     * oldest go even if still valid. */
    while (t->head && (t->head->expires <= now || t->n >= d->ac_max))
        dir_ac_unlink(t, t->head);
    if (d->ac_max <= 0) return;
    if (!(e = malloc(sizeof(*e) + nl + nu))) abort();
    memcpy(e->login, login, nl);
    e->user = NULL;
    if (user) {
        memcpy(e->login + nl, user, nu);
        e->user = e->login + nl;
    }
    memcpy(e->mac, mac, DIR_AC_MAC_LEN);
    e->expires = expires;
    e->next = NULL;
    e->prev = t->tail;
    if (t->tail)
        t->tail->next = e;
    else
        t->head = e;
    t->tail = e;
    t->n++;
    const void *k = dir_ac_key(t, e, &klen);
    apr_hash_set(t->h, k, klen, e);
}

/* HMAC-SHA256(key, part1 || 0 || part2 || 0 || ... || last): binds the
 * password to this very credential; the NULs keep the parts from running
 * together (none can hold one). */
static int dir_ac_mac(dir_t *d, unsigned char out[DIR_AC_MAC_LEN], const char *const *parts, int n)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC_CTX *c = EVP_MAC_CTX_new(d->ac_hmac);
    size_t len = 0;
    int ok = c && EVP_MAC_init(c, d->ac_key, sizeof(d->ac_key), params);
    for (int i = 0; ok && i < n; i++)
        ok = EVP_MAC_update(c, (const unsigned char *)parts[i],
                            strlen(parts[i]) + (i + 1 < n ? 1 : 0));
    ok = ok && EVP_MAC_final(c, out, &len, DIR_AC_MAC_LEN) && len == DIR_AC_MAC_LEN;
    EVP_MAC_CTX_free(c);
    return ok;
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

static apr_status_t dir_layer_start(dir_layer_t *l, const dir_backend_t *be, const pr_config_t *cfg,
                                    apr_pool_t *parent)
{
    apr_pool_t *p;
    apr_status_t st;
    apr_pool_create(&p, parent);
    if ((st = be->open(&l->ctx, cfg, p)) != APR_SUCCESS) {
        apr_pool_destroy(p);
        return st;
    }
    l->be = be;
    l->pool = p;
    return APR_SUCCESS;
}

static void dir_layer_stop(dir_layer_t *l)
{
    if (!l->be) return;
    l->be->close(l->ctx);
    apr_pool_destroy(l->pool);
    l->be = NULL;
    l->ctx = NULL;
    l->pool = NULL;
}

/* Open the primary backend (fixed, or the one cfg names) and, beside a
 * read-only one, the built-in directory: all or nothing. */
static apr_status_t dir_layers_start(dir_layer_t *primary, dir_layer_t *local,
                                     const dir_backend_t *fixed, const pr_config_t *cfg,
                                     apr_pool_t *parent)
{
    const dir_backend_t *be = fixed;
    apr_status_t st = APR_SUCCESS;
    memset(primary, 0, sizeof(*primary));
    memset(local, 0, sizeof(*local));
    if (!be && (st = dir_backend_find(&be, cfg)) != APR_SUCCESS) return st;
    if ((st = dir_layer_start(primary, be, cfg, parent)) != APR_SUCCESS) return st;
    if (be->caps & DIR_CAP_WRITE) return APR_SUCCESS;
    /* The same data_dir/directory.db the CLI writes, so `postroom alias
     * add` beside a running daemon takes effect at its next lookup. */
    if ((st = dir_layer_start(local, &dir_local_backend, cfg, parent)) != APR_SUCCESS) {
        pr_log_error(NULL,
                     "directory: cannot open the built-in directory for local aliases "
                     "and lists beside '%s'",
                     be->name);
        dir_layer_stop(primary);
    }
    return st;
}

static apr_status_t dir_cleanup(void *data)
{
    dir_t *d = data;
    if (d->closed) return APR_SUCCESS;
    d->closed = 1;
    dir_layer_stop(&d->local);
    dir_layer_stop(&d->primary);
    dir_ac_flush(&d->ac_ok);
    dir_ac_flush(&d->ac_fail);
    EVP_MAC_free(d->ac_hmac);
    d->ac_hmac = NULL;
    OPENSSL_cleanse(d->ac_key, sizeof(d->ac_key));
    apr_thread_rwlock_destroy(d->lock);
    return APR_SUCCESS;
}

static apr_status_t dir_open_impl(dir_t **d_r, const pr_config_t *cfg, const dir_backend_t *fixed,
                                  apr_pool_t *pool)
{
    dir_t *d = apr_pcalloc(pool, sizeof(*d));
    apr_status_t st;

    d->pool = pool;
    d->cfg = cfg;
    d->fixed = fixed;
    d->ac_max = DIR_AUTH_CACHE_MAX;
    /* Without the key or HMAC the cache cannot be trusted: refuse to start
     * rather than run without it silently. */
    if (RAND_bytes(d->ac_key, sizeof(d->ac_key)) != 1 ||
        !(d->ac_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL))) {
        pr_log_error(NULL, "directory: no random key or HMAC for the credential cache");
        return PR_ETEMPFAIL;
    }
    if ((st = apr_thread_mutex_create(&d->ac_mutex, APR_THREAD_MUTEX_DEFAULT, pool)) !=
            APR_SUCCESS ||
        (st = apr_pool_create(&d->ac_pool, pool)) != APR_SUCCESS) {
        EVP_MAC_free(d->ac_hmac);
        return st;
    }
    d->ac_ok.h = apr_hash_make(d->ac_pool);
    d->ac_fail.h = apr_hash_make(d->ac_pool);
    d->ac_fail.by_mac = 1;
    st = dir_layers_start(&d->primary, &d->local, fixed, cfg, pool);
    if (st != APR_SUCCESS) {
        EVP_MAC_free(d->ac_hmac);
        return st;
    }
    if ((st = apr_thread_rwlock_create(&d->lock, pool)) != APR_SUCCESS) {
        dir_layer_stop(&d->local);
        dir_layer_stop(&d->primary);
        EVP_MAC_free(d->ac_hmac);
        return st;
    }
    /* A pre-cleanup: it must run before the pool destroys its subpools
     * (the backends' and the cache tables'), which it still uses. */
    apr_pool_pre_cleanup_register(pool, d, dir_cleanup);
    *d_r = d;
    return APR_SUCCESS;
}

apr_status_t dir_open(dir_t **d_r, const pr_config_t *cfg, apr_pool_t *pool)
{
    return dir_open_impl(d_r, cfg, NULL, pool);
}

apr_status_t dir_open_with(dir_t **d_r, const pr_config_t *cfg, const dir_backend_t *primary,
                           apr_pool_t *pool)
{
    return dir_open_impl(d_r, cfg, primary, pool);
}

apr_status_t dir_reload(dir_t *d, const pr_config_t *cfg)
{
    dir_layer_t primary, local, old_primary, old_local;
    /* Open the new ones first, outside the lock: an LDAP bind may be slow
     * and lookups should keep being answered meanwhile. */
    apr_status_t st = dir_layers_start(&primary, &local, d->fixed, cfg, d->pool);
    if (st != APR_SUCCESS) return st;

    apr_thread_rwlock_wrlock(d->lock);
    old_primary = d->primary;
    old_local = d->local;
    d->primary = primary;
    d->local = local;
    d->cfg = cfg;
    /* A new backend (or new settings for it) may see other users or other
     * credentials: what the old one verified or refused is not evidence
     * any more. Every dir_authenticate holds the read lock from its tag
     * lookup to its insert, so none can slip an old answer in after this. */
    apr_thread_mutex_lock(d->ac_mutex);
    dir_ac_flush(&d->ac_ok);
    dir_ac_flush(&d->ac_fail);
    apr_thread_mutex_unlock(d->ac_mutex);
    apr_thread_rwlock_unlock(d->lock);

    dir_layer_stop(&old_local);
    dir_layer_stop(&old_primary);
    return APR_SUCCESS;
}

void dir_close(dir_t *d)
{
    /* Idempotent: the pool's pre-cleanup finds it closed later. */
    if (d) dir_cleanup(d);
}

const dir_backend_t *dir_backend(const dir_t *d)
{
    return d->primary.be;
}

void *dir_backend_ctx(const dir_t *d)
{
    return d->primary.ctx;
}

/* Where alias and list writes go: the primary backend if writable, else the
 * built-in directory beside it; NULL: nowhere. Under the read lock. */
static const dir_layer_t *dir_alias_layer(const dir_t *d)
{
    if (d->primary.be->caps & DIR_CAP_WRITE) return &d->primary;
    return d->local.be ? &d->local : NULL;
}

/* A layer's caps now: its backend's and those of its settings. */
static unsigned dir_layer_caps(const dir_layer_t *l)
{
    return l->be->caps | (l->be->caps_of ? l->be->caps_of(l->ctx) : 0);
}

unsigned dir_caps(dir_t *d)
{
    apr_thread_rwlock_rdlock(d->lock);
    unsigned caps = dir_layer_caps(&d->primary) & (DIR_CAP_WRITE | DIR_CAP_WRITE_USERS);
    if (dir_alias_layer(d)) caps |= DIR_CAP_WRITE_ALIASES;
    apr_thread_rwlock_unlock(d->lock);
    return caps;
}

/* ---- lookups; the *_locked helpers expect the read lock held */

static apr_status_t dir_domain_is_local_locked(dir_t *d, const char *domain)
{
    if (pr_config_is_local_domain(d->cfg, domain)) return APR_SUCCESS;
    apr_status_t st = d->primary.be->domain_is_local(d->primary.ctx, domain);
    /* Domains added with `postroom domain add` (maybe before the switch to
     * LDAP, which holds no domain list) are in the built-in directory. */
    if (st == PR_ENOTFOUND && d->local.be) st = d->local.be->domain_is_local(d->local.ctx, domain);
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
static apr_status_t dir_layer_lookup(const dir_layer_t *l, const char *norm, dir_entry_t **e_r,
                                     apr_pool_t *pool)
{
    apr_status_t st = l->be->lookup(l->ctx, norm, e_r, pool);
    if (st == APR_SUCCESS || st == PR_ENOTFOUND) return st;
    return PR_ETEMPFAIL;
}

/* The combined lookup: the built-in directory's aliases and lists first
 * (they shadow the backend's addresses), then the backend. A user left in
 * the built-in directory is not one: users come from the backend only, or
 * a stale local account would take mail meant for the LDAP one. */
static apr_status_t dir_lookup_locked(dir_t *d, const char *norm, dir_entry_t **e_r,
                                      apr_pool_t *pool)
{
    if (d->local.be) {
        dir_entry_t *e;
        apr_status_t st = dir_layer_lookup(&d->local, norm, &e, pool);
        if (st == APR_SUCCESS && e->kind != DIR_KIND_MAILBOX) {
            *e_r = e;
            return st;
        }
        /* A temporary failure stops here: the answer might have been a
         * local alias shadowing what the backend would say. */
        if (st != APR_SUCCESS && st != PR_ENOTFOUND) return st;
    }
    return dir_layer_lookup(&d->primary, norm, e_r, pool);
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

apr_status_t dir_lookup_writable(dir_t *d, const char *address, dir_entry_t **e_r, apr_pool_t *pool)
{
    const char *norm = dir_address_normalize(address, pool);
    if (!norm) return PR_EINVAL;
    apr_thread_rwlock_rdlock(d->lock);
    const dir_layer_t *l = dir_alias_layer(d);
    apr_status_t st = l ? dir_layer_lookup(l, norm, e_r, pool) : PR_EPERM;
    apr_thread_rwlock_unlock(d->lock);
    return st;
}

apr_status_t dir_user_get(dir_t *d, const char *address, dir_user_t **u_r, apr_pool_t *pool)
{
    const char *norm = dir_address_normalize(address, pool);
    apr_status_t st;
    if (!norm) return PR_EINVAL;
    apr_thread_rwlock_rdlock(d->lock);
    if (d->primary.be->user_get) {
        st = d->primary.be->user_get(d->primary.ctx, norm, u_r, pool);
        if (st != APR_SUCCESS && st != PR_ENOTFOUND) st = PR_ETEMPFAIL;
    } else {
        /* The backend's own answer, not the combined one: a local alias
         * shadowing a user's address does not make the user vanish (she
         * still logs in, her quota still applies). */
        dir_entry_t *e;
        st = dir_layer_lookup(&d->primary, norm, &e, pool);
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
    /* Aliases and lists met only inside a list so far (address -> entry):
     * met again through aliases only, their policies apply after all. */
    apr_hash_t *guarded;
    dir_result_t *r;
    int lookups;
} dir_expand_t;

/* A list's posting policy, from where list writes go. Under the read lock. */
static apr_status_t dir_policy_get_locked(dir_t *d, const char *norm, dir_post_policy_e *policy_r,
                                          apr_pool_t *pool)
{
    const dir_layer_t *l = dir_alias_layer(d);
    *policy_r = DIR_POST_ANYONE;
    if (!l || !l->be->list_policy_get) return APR_SUCCESS;
    apr_status_t st = l->be->list_policy_get(l->ctx, norm, policy_r, pool);
    return st == APR_SUCCESS ? st : PR_ETEMPFAIL;
}

/* A list reached from the top through aliases only: its policy applies. */
static apr_status_t dir_expand_restrict(dir_expand_t *x, const char *list)
{
    dir_post_policy_e policy;
    apr_status_t st = dir_policy_get_locked(x->d, list, &policy, x->pool);
    if (st != APR_SUCCESS || policy == DIR_POST_ANYONE) return st;
    dir_list_policy_t *lp = apr_array_push(x->r->restricted);
    lp->list = list;
    lp->policy = policy;
    return APR_SUCCESS;
}

/* An alias or list first met inside a list, now met through aliases only:
 * its targets were expanded then (and are not again); only the policies
 * it leads to are still to collect. Each entry leaves x->guarded before
 * its targets are looked at, so this ends. */
static apr_status_t dir_expand_unguard(dir_expand_t *x, const char *n, const dir_entry_t *e)
{
    apr_hash_set(x->guarded, n, APR_HASH_KEY_STRING, NULL);
    if (e->kind == DIR_KIND_LIST) return dir_expand_restrict(x, n);
    for (int i = 0; i < e->targets->nelts; i++) {
        const char *t = dir_address_normalize(APR_ARRAY_IDX(e->targets, i, const char *), x->pool);
        const dir_entry_t *g = t ? apr_hash_get(x->guarded, t, APR_HASH_KEY_STRING) : NULL;
        apr_status_t st = g ? dir_expand_unguard(x, t, g) : APR_SUCCESS;
        if (st != APR_SUCCESS) return st;
    }
    return APR_SUCCESS;
}

/* Room for one more address in the expansion? */
static apr_status_t dir_expand_room(dir_expand_t *x)
{
    if (x->r->mailboxes->nelts + x->r->external->nelts >= DIR_MAX_EXPANSION) {
        pr_log_warn(NULL, "directory: %s expands to more than %d addresses; refused", x->top,
                    DIR_MAX_EXPANSION);
        return PR_ETOOMANY;
    }
    return APR_SUCCESS;
}

/* A local mailbox, with its quota as the lookup that found it (e) told it.
 * A backend without user_get holds no quotas: dir_user_get would answer
 * the default. */
static void dir_result_add_mailbox(const dir_t *d, dir_result_t *r, const char *address,
                                   const dir_entry_t *e)
{
    APR_ARRAY_PUSH(r->mailboxes, const char *) = address;
    APR_ARRAY_PUSH(r->quotas, apr_off_t) = e->has_quota              ? e->quota
                                           : d->primary.be->user_get ? DIR_QUOTA_UNKNOWN
                                                                     : -1;
}

/* in_list: e was reached through a list, whose owner answers for what it
 * holds; its targets then are not subject to their own policies. */
static apr_status_t dir_expand(dir_expand_t *x, const dir_entry_t *e, int depth, int in_list)
{
    int guarded = in_list || e->kind == DIR_KIND_LIST;
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
        if (apr_hash_get(x->seen, n, APR_HASH_KEY_STRING)) {
            const dir_entry_t *g =
                guarded ? NULL : apr_hash_get(x->guarded, n, APR_HASH_KEY_STRING);
            if (g && (st = dir_expand_unguard(x, n, g)) != APR_SUCCESS) return st;
            continue;
        }
        apr_hash_set(x->seen, n, APR_HASH_KEY_STRING, n);

        const char *at = strchr(n, '@');
        st = dir_domain_is_local_locked(x->d, at + 1);
        if (st == PR_ENOTFOUND) {
            /* A remote mailbox: only its domain is case-insensitive
             * (RFC 5321 2.4), so the local part goes out as written. */
            const char *ext =
                apr_pstrcat(x->pool, apr_pstrndup(x->pool, t, (apr_size_t)(at - n)), at, NULL);
            if ((st = dir_expand_room(x)) != APR_SUCCESS) return st;
            APR_ARRAY_PUSH(x->r->external, const char *) = ext;
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
            if ((st = dir_expand_room(x)) != APR_SUCCESS) return st;
            dir_result_add_mailbox(x->d, x->r, n, sub);
            continue;
        }
        if (depth + 1 >= DIR_MAX_DEPTH) {
            pr_log_warn(NULL, "directory: %s nests deeper than %d at %s; cut", x->top,
                        DIR_MAX_DEPTH, n);
            continue;
        }
        if (guarded)
            apr_hash_set(x->guarded, n, APR_HASH_KEY_STRING, sub);
        else if (sub->kind == DIR_KIND_LIST && (st = dir_expand_restrict(x, n)) != APR_SUCCESS)
            return st;
        apr_hash_set(x->on_path, n, APR_HASH_KEY_STRING, n);
        st = dir_expand(x, sub, depth + 1, guarded);
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
    r->quotas = apr_array_make(pool, 4, sizeof(apr_off_t));
    r->external = apr_array_make(pool, 0, sizeof(const char *));
    r->restricted = apr_array_make(pool, 0, sizeof(dir_list_policy_t));
    if (e->kind == DIR_KIND_MAILBOX) {
        dir_result_add_mailbox(d, r, norm, e);
    } else {
        dir_expand_t x = {0};
        x.d = d;
        x.pool = pool;
        x.top = norm;
        x.seen = apr_hash_make(pool);
        x.on_path = apr_hash_make(pool);
        x.guarded = apr_hash_make(pool);
        x.r = r;
        apr_hash_set(x.seen, norm, APR_HASH_KEY_STRING, norm);
        apr_hash_set(x.on_path, norm, APR_HASH_KEY_STRING, norm);
        if (e->kind == DIR_KIND_LIST && (st = dir_expand_restrict(&x, norm)) != APR_SUCCESS)
            return st;
        if ((st = dir_expand(&x, e, 0, 0)) != APR_SUCCESS) return st;
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
    char key[DIR_ADDRESS_MAX + 1];
    unsigned char mac[DIR_AC_MAC_LEN], fmac[DIR_AC_MAC_LEN];
    const char *tag_user = NULL, *tag = NULL, *user = NULL;
    int have_mac = 0, have_fmac = 0;
    apr_status_t st;

    if (!login) login = "";
    if (!password) password = "";
    apr_thread_rwlock_rdlock(d->lock);
    apr_time_t ttl = d->cfg->directory.auth_cache_ttl;
    const dir_backend_t *be = d->primary.be;

    /* The key is the login as given, normalised when it is an address; a
     * login that is neither an address nor short is simply not cached. An
     * empty password is never: the backends refuse it without a bind. */
    int cacheable = ttl > 0 && *password;
    if (cacheable && !dir_address_normalize_buf(key, sizeof(key), login)) {
        apr_size_t n = strlen(login);
        cacheable = n > 0 && n < sizeof(key);
        if (cacheable) memcpy(key, login, n + 1);
    }
    if (cacheable) {
        /* The tag is asked for before the full check, never after: if the
         * password changes in between, the entry holds the older tag and
         * the next login misses, instead of an old password being bound to
         * the new credential. Asked on every login (not only when an entry
         * exists), so the timing of a failure says nothing about recent
         * logins. */
        apr_status_t tst = PR_ENOTFOUND;
        if (be->auth_tag) tst = be->auth_tag(d->primary.ctx, key, &tag_user, &tag, pool);
        if (tst == APR_SUCCESS && tag && tag_user)
            have_mac = dir_ac_mac(d, mac, (const char *const[]){tag, password}, 2);
        else
            tag = NULL;
        /* A failure is bound to the tag as well, so a credential changed
         * to the very password that failed (the admin sets what the user
         * kept typing) works at once, not after the TTL. Unknown logins and
         * backends without auth_tag have the empty tag; when the tag is
         * unknown (a temporary failure) the failure is not remembered. */
        if (tst == APR_SUCCESS || tst == PR_ENOTFOUND)
            have_fmac = dir_ac_mac(d, fmac,
                                   (const char *const[]){"fail", key, tag ? tag : "", password}, 4);
    }

    apr_thread_mutex_lock(d->ac_mutex);
    apr_time_t now = apr_time_now();
    dir_ac_entry_t *e = have_mac ? dir_ac_get(&d->ac_ok, key, NULL) : NULL;
    int hit = e && e->expires > now && CRYPTO_memcmp(e->mac, mac, sizeof(mac)) == 0 &&
              strcmp(e->user, tag_user) == 0;
    /* The table is keyed by the MAC itself: found is equal (the HMAC key is
     * secret, so the lookup's timing tells nothing). A remembered failure
     * is answered at once: that only tells the client what it knows, that
     * this password is wrong for this login; the protocols' delay after a
     * failed login applies all the same. */
    e = !hit && have_fmac ? dir_ac_get(&d->ac_fail, NULL, fmac) : NULL;
    int fail_hit = e && e->expires > now;
    if (hit)
        d->ac_stats.cached++;
    else if (fail_hit)
        d->ac_stats.failed_cached++;
    else
        d->ac_stats.verified++;
    apr_thread_mutex_unlock(d->ac_mutex);
    if (hit || fail_hit) {
        apr_thread_rwlock_unlock(d->lock);
        OPENSSL_cleanse(mac, sizeof(mac));
        OPENSSL_cleanse(fmac, sizeof(fmac));
        if (!hit) return PR_EAUTH;
        *user_r = apr_pstrdup(pool, tag_user);
        return APR_SUCCESS;
    }

    /* The backend spends the same effort on unknown logins (dummy hash), so
     * malformed ones go to it too rather than failing fast here. Two
     * threads with the same wrong password at once both ask it: rare, and
     * not worth making one wait for the other. */
    st = be->authenticate(d->primary.ctx, login, password, &user, pool);
    if (st == APR_SUCCESS && have_mac && strcmp(user, tag_user) == 0) {
        apr_thread_mutex_lock(d->ac_mutex);
        dir_ac_insert(d, &d->ac_ok, key, user, mac, apr_time_now() + ttl);
        apr_thread_mutex_unlock(d->ac_mutex);
    } else if (st == PR_EAUTH && have_fmac) {
        /* Not dropped when the login later succeeds: an entry matches only
         * the password that failed under this very tag, never the right
         * one, so there is nothing to correct; and dropping them would send
         * the stale phone's password to AD again after each good login
         * from the user's PC, which is what counts towards the lockout.
         * Only a password changed without its tag changing (a backend
         * without auth_tag, or a tag still cached there) waits for the TTL. */
        apr_thread_mutex_lock(d->ac_mutex);
        dir_ac_insert(d, &d->ac_fail, key, NULL, fmac, apr_time_now() + ttl);
        apr_thread_mutex_unlock(d->ac_mutex);
    }
    apr_thread_rwlock_unlock(d->lock);
    OPENSSL_cleanse(mac, sizeof(mac));
    OPENSSL_cleanse(fmac, sizeof(fmac));
    if (st == APR_SUCCESS) *user_r = user;
    if (st == APR_SUCCESS || st == PR_EAUTH) return st;
    return PR_ETEMPFAIL;
}

void dir_auth_stats(dir_t *d, dir_auth_stats_t *out)
{
    apr_thread_mutex_lock(d->ac_mutex);
    *out = d->ac_stats;
    out->entries = (apr_uint32_t)d->ac_ok.n;
    out->failed_entries = (apr_uint32_t)d->ac_fail.n;
    apr_thread_mutex_unlock(d->ac_mutex);
}

void dir_auth_cache_set_max(dir_t *d, int max)
{
    apr_thread_mutex_lock(d->ac_mutex);
    d->ac_max = max < 0 ? 0 : max;
    dir_ac_trim(&d->ac_ok, d->ac_max);
    dir_ac_trim(&d->ac_fail, d->ac_max);
    apr_thread_mutex_unlock(d->ac_mutex);
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

/* ---- posting policies */

static const char *const dir_post_policy_names[] = {"anyone", "members", "local"};

const char *dir_post_policy_name(dir_post_policy_e policy)
{
    if ((unsigned)policy >= sizeof(dir_post_policy_names) / sizeof(dir_post_policy_names[0]))
        return "?";
    return dir_post_policy_names[policy];
}

apr_status_t dir_post_policy_parse(dir_post_policy_e *policy_r, const char *name)
{
    apr_size_t n = sizeof(dir_post_policy_names) / sizeof(dir_post_policy_names[0]);
    for (apr_size_t i = 0; name && i < n; i++) {
        if (strcmp(name, dir_post_policy_names[i]) == 0) {
            *policy_r = (dir_post_policy_e)i;
            return APR_SUCCESS;
        }
    }
    return PR_EINVAL;
}

/* Is sender (normalised) a member of list, by dir_post_allowed's rule?
 * *sr caches the sender's own expansion between lists (NULL: not yet;
 * its kind 0: not a local address). APR_SUCCESS, PR_EPERM, PR_ETEMPFAIL. */
static apr_status_t dir_member_locked(dir_t *d, const char *list, const char *sender,
                                      dir_result_t **sr, apr_pool_t *pool)
{
    dir_result_t *lr;
    apr_status_t st = dir_resolve_locked(d, list, &lr, pool);
    if (st == PR_ETEMPFAIL) return st;
    /* Gone or grown too big since the recipient was resolved: nobody is
     * shown to be a member, which is what a restriction asks. */
    if (st != APR_SUCCESS) return PR_EPERM;
    if (dir_array_has(lr->mailboxes, sender)) return APR_SUCCESS;
    /* External members keep their local part as written; the sender's is
     * lower-cased. Mail systems do not tell case apart in practice. */
    for (int i = 0; i < lr->external->nelts; i++)
        if (apr_cstr_casecmp(APR_ARRAY_IDX(lr->external, i, const char *), sender) == 0)
            return APR_SUCCESS;
    if (!*sr) {
        st = dir_resolve_locked(d, sender, sr, pool);
        if (st == PR_ETEMPFAIL) return st;
        if (st != APR_SUCCESS) *sr = apr_pcalloc(pool, sizeof(**sr));
    }
    /* Her own alias: it leads to one mailbox, a member's, and nowhere
     * else. Never a list (the list's own address, or an alias of it,
     * would let anyone in who names it as sender). */
    const dir_result_t *r = *sr;
    if (!r->kind || r->kind == DIR_KIND_LIST || r->mailboxes->nelts != 1 ||
        r->external->nelts > 0)
        return PR_EPERM;
    return dir_array_has(lr->mailboxes, APR_ARRAY_IDX(r->mailboxes, 0, const char *))
               ? APR_SUCCESS
               : PR_EPERM;
}

apr_status_t dir_post_allowed(dir_t *d, const dir_result_t *r, const char *sender,
                              const char *auth_user, const dir_list_policy_t **refused_r,
                              apr_pool_t *pool)
{
    const char *ns = sender && *sender ? dir_address_normalize(sender, pool) : NULL;
    dir_result_t *sr = NULL;
    apr_status_t st = APR_SUCCESS;

    if (!r->restricted || r->restricted->nelts == 0) return APR_SUCCESS;
    apr_thread_rwlock_rdlock(d->lock);
    for (int i = 0; st == APR_SUCCESS && i < r->restricted->nelts; i++) {
        const dir_list_policy_t *lp = &APR_ARRAY_IDX(r->restricted, i, dir_list_policy_t);
        if (lp->policy == DIR_POST_LOCAL)
            st = auth_user ? APR_SUCCESS : PR_EPERM;
        else if (lp->policy == DIR_POST_MEMBERS)
            st = ns ? dir_member_locked(d, lp->list, ns, &sr, pool) : PR_EPERM;
        if (st == PR_EPERM) *refused_r = lp;
    }
    apr_thread_rwlock_unlock(d->lock);
    return st;
}

/* ---- admin calls */

/* Every admin call: normalise (before), check the backend has the operation
 * (writes also need DIR_CAP_WRITE or _USERS), call it under the read lock. */
#define DIR_CALL(d, need_write, fn, ...)                                                           \
    do {                                                                                           \
        apr_status_t st_ = PR_EPERM;                                                               \
        apr_thread_rwlock_rdlock((d)->lock);                                                       \
        if ((d)->primary.be->fn &&                                                                 \
            (!(need_write) ||                                                                      \
             (dir_layer_caps(&(d)->primary) & (DIR_CAP_WRITE | DIR_CAP_WRITE_USERS))))             \
            st_ = (d)->primary.be->fn((d)->primary.ctx, __VA_ARGS__);                              \
        apr_thread_rwlock_unlock((d)->lock);                                                       \
        return st_;                                                                                \
    } while (0)

/* The same for aliases and lists, which go where dir_alias_layer says. */
#define DIR_CALL_ALIASES(d, fn, ...)                                                               \
    do {                                                                                           \
        apr_status_t st_ = PR_EPERM;                                                               \
        apr_thread_rwlock_rdlock((d)->lock);                                                       \
        const dir_layer_t *l_ = dir_alias_layer(d);                                                \
        if (l_ && l_->be->fn) st_ = l_->be->fn(l_->ctx, __VA_ARGS__);                              \
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
    apr_status_t st = PR_EPERM;
    apr_thread_rwlock_rdlock(d->lock);
    /* Beside LDAP (no domain list of its own): the built-in directory's,
     * which dir_domain_is_local counts too. */
    const dir_layer_t *l = d->primary.be->domain_list ? &d->primary : &d->local;
    if (l->be && l->be->domain_list) st = l->be->domain_list(l->ctx, domains_r, pool);
    apr_thread_rwlock_unlock(d->lock);
    return st;
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

apr_status_t dir_user_set_quota(dir_t *d, const char *address, apr_off_t quota)
{
    DIR_NORM(a, address);
    if (quota < -1) return PR_EINVAL;
    DIR_CALL(d, 1, user_set_quota, a, quota);
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

/* Beside a backend that writes its own users (DIR_CAP_WRITE_USERS):
 * does an alias or list write about address belong to the backend? Not
 * when the built-in directory holds the address (its entries shadow the
 * backend's). Under the read lock. */
static int dir_backend_owns(const dir_t *d, const char *address, apr_pool_t *pool)
{
    if (!(dir_layer_caps(&d->primary) & DIR_CAP_WRITE_USERS) || !d->local.be) return 0;
    dir_entry_t *e;
    return dir_layer_lookup(&d->local, address, &e, pool) == PR_ENOTFOUND;
}

/* An alias, list-member write: to the backend when it owns the address and
 * answers (fn_backend gives APR_ENOTIMPL or, for a removal, PR_ENOTFOUND
 * for what is not its own), else where dir_alias_layer says. */
#define DIR_CALL_OWNER(d, address, fn, ...)                                                        \
    do {                                                                                           \
        apr_status_t st_ = APR_ENOTIMPL;                                                           \
        apr_pool_t *p_;                                                                            \
        apr_pool_create(&p_, NULL);                                                                \
        apr_thread_rwlock_rdlock((d)->lock);                                                       \
        if (dir_backend_owns(d, address, p_) && (d)->primary.be->fn)                               \
            st_ = (d)->primary.be->fn((d)->primary.ctx, __VA_ARGS__);                              \
        if (st_ == APR_ENOTIMPL) {                                                                 \
            const dir_layer_t *l_ = dir_alias_layer(d);                                            \
            st_ = l_ && l_->be->fn ? l_->be->fn(l_->ctx, __VA_ARGS__) : PR_EPERM;                  \
        }                                                                                          \
        apr_thread_rwlock_unlock((d)->lock);                                                       \
        apr_pool_destroy(p_);                                                                      \
        return st_;                                                                                \
    } while (0)

apr_status_t dir_alias_add(dir_t *d, const char *address, const char *const *targets, int n)
{
    char t[DIR_ADDRESS_MAX + 1];
    DIR_NORM(a, address);
    if (n < 1) return PR_EINVAL;
    for (int i = 0; i < n; i++)
        if (!dir_address_normalize_buf(t, sizeof(t), targets[i])) return PR_EINVAL;
    DIR_CALL_OWNER(d, a, alias_add, a, targets, n);
}

/* The built-in directory's alias first (it shadows), then the backend's. */
static apr_status_t dir_alias_del_locked(dir_t *d, const char *a)
{
    const dir_layer_t *l = dir_alias_layer(d);
    apr_status_t st = l && l->be->alias_del ? l->be->alias_del(l->ctx, a) : PR_EPERM;
    if (st == PR_ENOTFOUND && l != &d->primary && d->primary.be->alias_del &&
        (dir_layer_caps(&d->primary) & DIR_CAP_WRITE_USERS))
        st = d->primary.be->alias_del(d->primary.ctx, a);
    return st;
}

apr_status_t dir_alias_del(dir_t *d, const char *address)
{
    DIR_NORM(a, address);
    apr_thread_rwlock_rdlock(d->lock);
    apr_status_t st = dir_alias_del_locked(d, a);
    apr_thread_rwlock_unlock(d->lock);
    return st;
}

apr_status_t dir_alias_list(dir_t *d, apr_array_header_t **aliases_r, apr_pool_t *pool)
{
    DIR_CALL_ALIASES(d, alias_list, aliases_r, pool);
}

apr_status_t dir_list_add(dir_t *d, const char *address)
{
    DIR_NORM(a, address);
    DIR_CALL_ALIASES(d, list_add, a);
}

apr_status_t dir_list_del(dir_t *d, const char *address)
{
    DIR_NORM(a, address);
    DIR_CALL_ALIASES(d, list_del, a);
}

apr_status_t dir_list_member_add(dir_t *d, const char *list, const char *member)
{
    DIR_NORM(l, list);
    DIR_NORM(m, member);
    DIR_CALL_OWNER(d, l, list_member_add, l, m);
}

apr_status_t dir_list_member_del(dir_t *d, const char *list, const char *member)
{
    DIR_NORM(l, list);
    DIR_NORM(m, member);
    DIR_CALL_OWNER(d, l, list_member_del, l, m);
}

apr_status_t dir_list_list(dir_t *d, apr_array_header_t **lists_r, apr_pool_t *pool)
{
    DIR_CALL_ALIASES(d, list_list, lists_r, pool);
}

apr_status_t dir_list_set_policy(dir_t *d, const char *list, dir_post_policy_e policy)
{
    apr_pool_t *p;
    dir_entry_t *e;
    DIR_NORM(l, list);
    if ((unsigned)policy > DIR_POST_LOCAL) return PR_EINVAL;
    apr_pool_create(&p, NULL);
    apr_thread_rwlock_rdlock(d->lock);
    /* Any list the directory answers for, a read-only backend's too: that
     * is what the policy beside it is for. */
    apr_status_t st = dir_lookup_locked(d, l, &e, p);
    if (st == APR_SUCCESS && e->kind != DIR_KIND_LIST) st = PR_ENOTFOUND;
    if (st == APR_SUCCESS) {
        const dir_layer_t *w = dir_alias_layer(d);
        st = w && w->be->list_policy_set ? w->be->list_policy_set(w->ctx, l, policy) : PR_EPERM;
    }
    apr_thread_rwlock_unlock(d->lock);
    apr_pool_destroy(p);
    return st;
}

apr_status_t dir_list_get_policy(dir_t *d, const char *list, dir_post_policy_e *policy_r)
{
    apr_pool_t *p;
    DIR_NORM(l, list);
    apr_pool_create(&p, NULL);
    apr_thread_rwlock_rdlock(d->lock);
    apr_status_t st = dir_policy_get_locked(d, l, policy_r, p);
    apr_thread_rwlock_unlock(d->lock);
    apr_pool_destroy(p);
    return st;
}

apr_status_t dir_list_policies(dir_t *d, apr_array_header_t **policies_r, apr_pool_t *pool)
{
    DIR_CALL_ALIASES(d, list_policy_list, policies_r, pool);
}
