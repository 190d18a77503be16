/* The "ldap" directory backend: users and lists from OpenLDAP or Active
 * Directory ([ldap], presets in config.c). Read-only here: lookups with the
 * service bind, logins by binding as the user's own DN.
 *
 * A user is an entry matching user_filter (and not disabled_filter); its
 * addresses are the values of address_attributes (AD proxyAddresses: the
 * "smtp:" ones), the first being its mailbox (AD: the "SMTP:" primary).
 * Any other of its addresses is answered as an alias of the mailbox. A list
 * is an entry matching list_filter with an address; its members are the
 * values of member_attributes: DNs (of users, or of groups, which are
 * expanded here, with or without an address of their own) or addresses
 * (rfc822MailMember). Expansion across addresses (loops, depth,
 * duplicates) is directory.c's, as for every backend.
 *
 * Answers are cached (lookups and login tags for cache_ttl, "no such
 * address" for negative_cache_ttl), so known users keep receiving and
 * logging in through a short outage, and Outlook's polling costs no LDAP
 * traffic: a cached login still checks the password, against a keyed hash
 * in directory.c's verified-credential cache (auth_tag below).
 *
 * Connections come from a pool of pool_size handles; each operation has
 * [ldap] timeout, so a directory that accepts connections but never answers
 * gives PR_ETEMPFAIL in time and stalls nobody else; after a failure to
 * connect, new attempts back off (1 s doubling to 30 s). Referrals are not
 * chased. Every client value in a filter is escaped (ldap_filter.h). */
#include "directory/dir_internal.h"
#include "directory/directory.h"
#include "directory/ldap_filter.h"
#include "service/core/log.h"
#include "service/core/status.h"

#include <apr_file_io.h>
#include <apr_hash.h>
#include <apr_strings.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <ldap.h>
#include <stdlib.h>
#include <string.h>

#define LDAPB_POOL_MAX 64
#define LDAPB_BACKOFF_MIN apr_time_from_sec(1)
#define LDAPB_BACKOFF_MAX apr_time_from_sec(30)
#define LDAPB_SIZELIMIT 2   /* a login or an address must name one entry */
#define LDAPB_GROUP_DEPTH 8 /* nested groups without an address of their own */
#define LDAPB_MEMBERS_MAX 5000
#define LDAPB_CACHE_MAX 20000 /* entries; when full, the cache starts over */

typedef struct ldapb_slot_t {
    LDAP *ld;    /* NULL: not connected */
    int as_user; /* last bound as a user: bind as the service before reuse */
    int busy;
} ldapb_slot_t;

/* A cached answer: for a lookup, kind and the address and targets joined
 * by '\n' (addresses never hold one); for a login tag, user '\n' tag. */
typedef struct ldapb_cached_t {
    apr_time_t expires;
    int found;
    dir_kind_e kind;
    char *text; /* malloc'ed */
} ldapb_cached_t;

typedef struct ldapb_t {
    const pr_config_t *cfg;
    apr_thread_mutex_t *cache_mu;
    apr_hash_t *cache;         /* "L:address" / "T:login" -> ldapb_cached_t*; keys malloc'ed */
    const char *bind_password; /* from bind_password_file; NULL: anonymous */
    apr_thread_mutex_t *mu;
    apr_thread_cond_t *freed;
    ldapb_slot_t slots[LDAPB_POOL_MAX];
    int n_slots;
    apr_time_t retry_at; /* no new connection before this (backoff) */
    apr_interval_time_t backoff;
} ldapb_t;

/* ---- connections */

static struct timeval ldapb_tv(apr_interval_time_t t)
{
    struct timeval tv = {(time_t)apr_time_sec(t), (suseconds_t)apr_time_usec(t)};
    return tv;
}

/* A temporary LDAP failure: the server is gone, slow or refused us. */
static int ldapb_rc_is_down(int rc)
{
    return rc == LDAP_SERVER_DOWN || rc == LDAP_TIMEOUT || rc == LDAP_CONNECT_ERROR ||
           rc == LDAP_UNAVAILABLE || rc == LDAP_BUSY || rc == LDAP_UNWILLING_TO_PERFORM ||
           rc == LDAP_LOCAL_ERROR || rc == LDAP_NO_MEMORY || rc == LDAP_TIMELIMIT_EXCEEDED ||
           rc == LDAP_ADMINLIMIT_EXCEEDED || rc == LDAP_OTHER;
}

static void ldapb_drop(ldapb_slot_t *sl)
{
    if (sl->ld) ldap_unbind_ext_s(sl->ld, NULL, NULL);
    sl->ld = NULL;
    sl->as_user = 0;
}

static int ldapb_simple_bind(LDAP *ld, const char *dn, const char *password)
{
    struct berval cred;
    cred.bv_val = (char *)(password ? password : "");
    cred.bv_len = password ? strlen(password) : 0;
    return ldap_sasl_bind_s(ld, dn ? dn : "", LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
}

/* The service bind (or none, for anonymous). */
static int ldapb_bind_service(ldapb_t *b, LDAP *ld)
{
    const char *dn = b->cfg->ldap.bind_dn;
    if (!dn || !*dn) return LDAP_SUCCESS;
    return ldapb_simple_bind(ld, dn, b->bind_password);
}

/* Connect to the first URI that answers: TLS as configured, then the
 * service bind. An LDAP result code. */
static int ldapb_connect(ldapb_t *b, LDAP **ld_r)
{
    const pr_config_t *cfg = b->cfg;
    int rc = LDAP_SERVER_DOWN;
    for (int i = 0; i < cfg->ldap.uri.n; i++) {
        const char *uri = cfg->ldap.uri.v[i];
        LDAP *ld = NULL;
        if ((rc = ldap_initialize(&ld, uri)) != LDAP_SUCCESS) {
            pr_log_warn(NULL, "ldap: %s: %s", uri, ldap_err2string(rc));
            continue;
        }
        int v3 = LDAP_VERSION3, demand = LDAP_OPT_X_TLS_DEMAND, zero = 0;
        struct timeval tv = ldapb_tv(cfg->ldap.timeout);
        ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
        ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
        ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
        ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
        ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand);
        if (cfg->ldap.ca_file && *cfg->ldap.ca_file)
            ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, cfg->ldap.ca_file);
        ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero);
        rc = LDAP_SUCCESS;
        if (cfg->ldap.starttls && strncasecmp(uri, "ldap://", 7) == 0)
            rc = ldap_start_tls_s(ld, NULL, NULL);
        if (rc == LDAP_SUCCESS) rc = ldapb_bind_service(b, ld);
        if (rc == LDAP_SUCCESS) {
            *ld_r = ld;
            return rc;
        }
        pr_log_warn(NULL, "ldap: %s: %s", uri, ldap_err2string(rc));
        ldap_unbind_ext_s(ld, NULL, NULL);
    }
    return rc;
}

/* Borrow a connected handle, bound as the service. PR_ETEMPFAIL when none
 * frees up within the timeout or the directory cannot be reached. */
static apr_status_t ldapb_acquire(ldapb_t *b, ldapb_slot_t **sl_r)
{
    apr_time_t deadline = apr_time_now() + b->cfg->ldap.timeout;
    ldapb_slot_t *sl = NULL;
    apr_thread_mutex_lock(b->mu);
    for (;;) {
        for (int i = 0; i < b->n_slots && !sl; i++)
            if (!b->slots[i].busy && b->slots[i].ld) sl = &b->slots[i];
        for (int i = 0; i < b->n_slots && !sl; i++)
            if (!b->slots[i].busy) sl = &b->slots[i];
        if (sl) break;
        apr_interval_time_t left = deadline - apr_time_now();
        if (left <= 0) {
            apr_thread_mutex_unlock(b->mu);
            pr_log_warn(NULL, "ldap: all %d connections busy for %" APR_TIME_T_FMT " ms",
                        b->n_slots, apr_time_as_msec(b->cfg->ldap.timeout));
            return PR_ETEMPFAIL;
        }
        apr_thread_cond_timedwait(b->freed, b->mu, left);
    }
    sl->busy = 1;
    int need_connect = !sl->ld;
    if (need_connect && apr_time_now() < b->retry_at) {
        sl->busy = 0;
        apr_thread_mutex_unlock(b->mu);
        return PR_ETEMPFAIL; /* backing off after a failed connect */
    }
    apr_thread_mutex_unlock(b->mu);

    int rc = LDAP_SUCCESS;
    if (need_connect) {
        rc = ldapb_connect(b, &sl->ld);
        apr_thread_mutex_lock(b->mu);
        if (rc == LDAP_SUCCESS) {
            b->backoff = 0;
            b->retry_at = 0;
        } else {
            b->backoff = b->backoff ? b->backoff * 2 : LDAPB_BACKOFF_MIN;
            if (b->backoff > LDAPB_BACKOFF_MAX) b->backoff = LDAPB_BACKOFF_MAX;
            b->retry_at = apr_time_now() + b->backoff;
        }
        apr_thread_mutex_unlock(b->mu);
    } else if (sl->as_user) {
        rc = ldapb_bind_service(b, sl->ld);
        sl->as_user = 0;
    }
    if (rc != LDAP_SUCCESS) {
        ldapb_drop(sl);
        apr_thread_mutex_lock(b->mu);
        sl->busy = 0;
        apr_thread_cond_signal(b->freed);
        apr_thread_mutex_unlock(b->mu);
        return PR_ETEMPFAIL;
    }
    *sl_r = sl;
    return APR_SUCCESS;
}

/* Give a handle back; a handle that failed (rc says the server is down or
 * timed out) is closed, so the next user reconnects. */
static void ldapb_release(ldapb_t *b, ldapb_slot_t *sl, int rc)
{
    if (ldapb_rc_is_down(rc)) ldapb_drop(sl);
    apr_thread_mutex_lock(b->mu);
    sl->busy = 0;
    apr_thread_cond_signal(b->freed);
    apr_thread_mutex_unlock(b->mu);
}

/* ---- searches */

/* Attribute names and DNs compare case-insensitively (ASCII). */
static const char *ldapb_lower(apr_pool_t *pool, const char *s)
{
    char *out = apr_pstrdup(pool, s);
    for (char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    return out;
}

typedef struct ldapb_entry_t {
    const char *dn;
    apr_hash_t *attrs; /* lower-case attribute name -> apr_array_header_t of const char* */
} ldapb_entry_t;

static const apr_array_header_t *ldapb_values(const ldapb_entry_t *e, const char *attr,
                                              apr_pool_t *pool)
{
    return apr_hash_get(e->attrs, ldapb_lower(pool, attr), APR_HASH_KEY_STRING);
}

/* One search on a borrowed handle: the entries (at most sizelimit; 0 = no
 * limit) with the attributes asked for. An LDAP result code; entries_r is
 * an array of ldapb_entry_t*. */
static int ldapb_search(ldapb_t *b, ldapb_slot_t *sl, const char *base, int scope,
                        const char *filter, const char *const *attrs, int sizelimit,
                        apr_array_header_t **entries_r, apr_pool_t *pool)
{
    struct timeval tv = ldapb_tv(b->cfg->ldap.timeout);
    LDAPMessage *res = NULL;
    int rc = ldap_search_ext_s(sl->ld, base, scope, filter, (char **)attrs, 0, NULL, NULL, &tv,
                               sizelimit, &res);
    apr_array_header_t *out = apr_array_make(pool, 2, sizeof(ldapb_entry_t *));
    if (rc == LDAP_SUCCESS || rc == LDAP_SIZELIMIT_EXCEEDED || rc == LDAP_NO_SUCH_OBJECT) {
        for (LDAPMessage *m = ldap_first_entry(sl->ld, res); m; m = ldap_next_entry(sl->ld, m)) {
            ldapb_entry_t *e = apr_pcalloc(pool, sizeof(*e));
            char *dn = ldap_get_dn(sl->ld, m);
            e->dn = apr_pstrdup(pool, dn ? dn : "");
            ldap_memfree(dn);
            e->attrs = apr_hash_make(pool);
            BerElement *ber = NULL;
            for (char *a = ldap_first_attribute(sl->ld, m, &ber); a;
                 a = ldap_next_attribute(sl->ld, m, ber)) {
                struct berval **vals = ldap_get_values_len(sl->ld, m, a);
                apr_array_header_t *arr = apr_array_make(pool, 2, sizeof(const char *));
                for (int i = 0; vals && vals[i]; i++)
                    APR_ARRAY_PUSH(arr, const char *) =
                        apr_pstrmemdup(pool, vals[i]->bv_val, vals[i]->bv_len);
                ldap_value_free_len(vals);
                apr_hash_set(e->attrs, ldapb_lower(pool, a), APR_HASH_KEY_STRING, arr);
                ldap_memfree(a);
            }
            if (ber) ber_free(ber, 0);
            APR_ARRAY_PUSH(out, ldapb_entry_t *) = e;
        }
        if (rc == LDAP_NO_SUCH_OBJECT) rc = LDAP_SUCCESS; /* nothing there */
    }
    if (res) ldap_msgfree(res);
    *entries_r = out;
    return rc;
}

/* An LDAP result as a status: found things are the caller's business. */
static apr_status_t ldapb_status(int rc, const char *what, const char *filter)
{
    if (rc == LDAP_SUCCESS || rc == LDAP_SIZELIMIT_EXCEEDED) return APR_SUCCESS;
    pr_log_warn(NULL, "ldap: %s %s: %s", what, filter, ldap_err2string(rc));
    return PR_ETEMPFAIL;
}

/* A user's addresses in order, the mailbox first: AD's "SMTP:" primary
 * goes first; then values in attribute order. Lower-cased, deduplicated. */
static apr_array_header_t *ldapb_user_addresses(ldapb_t *b, const ldapb_entry_t *e,
                                                apr_pool_t *pool)
{
    apr_array_header_t *out = apr_array_make(pool, 4, sizeof(const char *));
    apr_hash_t *seen = apr_hash_make(pool);
    const char *primary = NULL;
    const pr_strlist_t *attrs = &b->cfg->ldap.address_attributes;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < attrs->n; i++) {
            const apr_array_header_t *vals = ldapb_values(e, attrs->v[i], pool);
            for (int j = 0; vals && j < vals->nelts; j++) {
                int is_primary = 0;
                const char *a =
                    dir_ldap_address_value(APR_ARRAY_IDX(vals, j, const char *), &is_primary, pool);
                const char *n = a ? dir_address_normalize(a, pool) : NULL;
                if (!n || apr_hash_get(seen, n, APR_HASH_KEY_STRING)) continue;
                if (pass == 0 && !is_primary) continue;
                if (pass == 0 && primary) continue;
                if (pass == 0) primary = n;
                apr_hash_set(seen, n, APR_HASH_KEY_STRING, n);
                APR_ARRAY_PUSH(out, const char *) = n;
            }
        }
    }
    return out;
}

/* The attributes a lookup needs: addresses and members. */
static const char **ldapb_attr_list(ldapb_t *b, apr_pool_t *pool)
{
    const pr_config_t *cfg = b->cfg;
    int n = cfg->ldap.address_attributes.n + cfg->ldap.member_attributes.n;
    const char **v = apr_pcalloc(pool, sizeof(*v) * (apr_size_t)(n + 2));
    int k = 0;
    for (int i = 0; i < cfg->ldap.address_attributes.n; i++)
        v[k++] = cfg->ldap.address_attributes.v[i];
    for (int i = 0; i < cfg->ldap.member_attributes.n; i++)
        v[k++] = cfg->ldap.member_attributes.v[i];
    v[k++] = "objectClass";
    v[k] = NULL;
    return v;
}

/* "(&(disabled users excluded)...)": the filter of enabled users. */
static const char *ldapb_user_objfilter(ldapb_t *b, apr_pool_t *pool)
{
    const char *dis = b->cfg->ldap.disabled_filter;
    if (!dis || !*dis) return b->cfg->ldap.user_filter;
    return apr_pstrcat(pool, "(&", b->cfg->ldap.user_filter, "(!", dis, "))", NULL);
}

typedef struct ldapb_members_t {
    ldapb_t *b;
    ldapb_slot_t *sl;
    apr_pool_t *pool;
    apr_array_header_t *out; /* const char*: member addresses */
    apr_hash_t *groups_seen; /* DNs of groups expanded here */
    int rc;
} ldapb_members_t;

static void ldapb_members_of(ldapb_members_t *m, const ldapb_entry_t *g, int depth);

/* One member value: an address, or the DN of a user or a group. */
static void ldapb_member(ldapb_members_t *m, const char *value, int depth)
{
    ldapb_t *b = m->b;
    apr_pool_t *pool = m->pool;
    if (m->out->nelts >= LDAPB_MEMBERS_MAX) return;
    if (strchr(value, '@') && !strchr(value, '=')) { /* rfc822MailMember */
        const char *n = dir_address_normalize(value, pool);
        if (n) APR_ARRAY_PUSH(m->out, const char *) = n;
        return;
    }
    /* A DN: read that entry (it may be a user, disabled or not, or a group). */
    const char *filter =
        apr_pstrcat(pool, "(|", b->cfg->ldap.user_filter, b->cfg->ldap.list_filter, ")", NULL);
    apr_array_header_t *es;
    int rc = ldapb_search(b, m->sl, value, LDAP_SCOPE_BASE, filter, ldapb_attr_list(b, pool), 1,
                          &es, pool);
    if (rc != LDAP_SUCCESS) {
        m->rc = rc;
        return;
    }
    if (es->nelts == 0) return; /* gone, or neither user nor list */
    const ldapb_entry_t *e = APR_ARRAY_IDX(es, 0, ldapb_entry_t *);
    /* Is it an enabled user? Ask the server rather than parse the filter. */
    apr_array_header_t *us;
    rc = ldapb_search(b, m->sl, value, LDAP_SCOPE_BASE, ldapb_user_objfilter(b, pool),
                      (const char *[]){"1.1", NULL}, 1, &us, pool);
    if (rc != LDAP_SUCCESS) {
        m->rc = rc;
        return;
    }
    apr_array_header_t *addrs = ldapb_user_addresses(b, e, pool);
    if (us->nelts > 0) {
        if (addrs->nelts)
            APR_ARRAY_PUSH(m->out, const char *) = APR_ARRAY_IDX(addrs, 0, const char *);
        return;
    }
    /* A disabled user: skipped. A group with an address: by its address
     * (directory.c expands it, with its loop checks); without: here. */
    apr_array_header_t *ls;
    rc = ldapb_search(b, m->sl, value, LDAP_SCOPE_BASE, b->cfg->ldap.list_filter,
                      (const char *[]){"1.1", NULL}, 1, &ls, pool);
    if (rc != LDAP_SUCCESS) {
        m->rc = rc;
        return;
    }
    if (ls->nelts == 0) return;
    if (addrs->nelts) {
        APR_ARRAY_PUSH(m->out, const char *) = APR_ARRAY_IDX(addrs, 0, const char *);
        return;
    }
    ldapb_members_of(m, e, depth + 1);
}

static void ldapb_members_of(ldapb_members_t *m, const ldapb_entry_t *g, int depth)
{
    const char *key = ldapb_lower(m->pool, g->dn);
    if (depth > LDAPB_GROUP_DEPTH || apr_hash_get(m->groups_seen, key, APR_HASH_KEY_STRING))
        return; /* a loop or too deep among groups without addresses: cut */
    apr_hash_set(m->groups_seen, key, APR_HASH_KEY_STRING, key);
    const pr_strlist_t *attrs = &m->b->cfg->ldap.member_attributes;
    for (int i = 0; i < attrs->n && m->rc == LDAP_SUCCESS; i++) {
        const apr_array_header_t *vals = ldapb_values(g, attrs->v[i], m->pool);
        for (int j = 0; vals && j < vals->nelts && m->rc == LDAP_SUCCESS; j++)
            ldapb_member(m, APR_ARRAY_IDX(vals, j, const char *), depth);
    }
}

/* ---- the answer cache */

static void ldapb_cache_clear(ldapb_t *b)
{
    for (apr_hash_index_t *hi = apr_hash_first(NULL, b->cache); hi;) {
        void *key = (void *)apr_hash_this_key(hi);
        ldapb_cached_t *c = apr_hash_this_val(hi);
        hi = apr_hash_next(hi);
        apr_hash_set(b->cache, key, APR_HASH_KEY_STRING, NULL);
        free(key);
        free(c->text);
        free(c);
    }
}

/* A fresh answer for key: *c_r gets a copy in pool. 0 if none. */
static int ldapb_cache_get(ldapb_t *b, const char *key, ldapb_cached_t *c_r, apr_pool_t *pool)
{
    int hit = 0;
    apr_thread_mutex_lock(b->cache_mu);
    ldapb_cached_t *c = apr_hash_get(b->cache, key, APR_HASH_KEY_STRING);
    if (c && c->expires > apr_time_now()) {
        *c_r = *c;
        c_r->text = apr_pstrdup(pool, c->text);
        hit = 1;
    }
    apr_thread_mutex_unlock(b->cache_mu);
    return hit;
}

static void ldapb_cache_put(ldapb_t *b, const char *key, int found, dir_kind_e kind,
                            const char *text, apr_interval_time_t ttl)
{
    if (ttl <= 0) return;
    char *t = strdup(text ? text : "");
    ldapb_cached_t *nc = malloc(sizeof(*nc));
    if (!t || !nc) {
        free(t);
        free(nc);
        return;
    }
    nc->expires = apr_time_now() + ttl;
    nc->found = found;
    nc->kind = kind;
    nc->text = t;
    apr_thread_mutex_lock(b->cache_mu);
    ldapb_cached_t *old = apr_hash_get(b->cache, key, APR_HASH_KEY_STRING);
    if (old) {
        free(old->text);
        *old = *nc;
        free(nc);
    } else {
        if (apr_hash_count(b->cache) >= LDAPB_CACHE_MAX) ldapb_cache_clear(b);
        char *k = strdup(key);
        if (k)
            apr_hash_set(b->cache, k, APR_HASH_KEY_STRING, nc);
        else {
            free(nc->text);
            free(nc);
        }
    }
    apr_thread_mutex_unlock(b->cache_mu);
}

static const char *ldapb_join(const apr_array_header_t *a, apr_pool_t *pool)
{
    return a->nelts ? apr_array_pstrcat(pool, a, '\n') : "";
}

static apr_array_header_t *ldapb_split(char *text, apr_pool_t *pool)
{
    apr_array_header_t *a = apr_array_make(pool, 4, sizeof(const char *));
    char *last;
    for (char *t = apr_strtok(text, "\n", &last); t; t = apr_strtok(NULL, "\n", &last))
        APR_ARRAY_PUSH(a, const char *) = t;
    return a;
}

/* ---- the backend */

static apr_status_t ldapb_lookup_ldap(ldapb_t *b, const char *address, dir_entry_t **e_r,
                                      apr_pool_t *pool);

static apr_status_t ldapb_lookup(void *ctx, const char *address, dir_entry_t **e_r,
                                 apr_pool_t *pool)
{
    ldapb_t *b = ctx;
    const char *key = apr_pstrcat(pool, "L:", address, NULL);
    ldapb_cached_t c;
    if (ldapb_cache_get(b, key, &c, pool)) {
        if (!c.found) return PR_ENOTFOUND;
        dir_entry_t *e = apr_pcalloc(pool, sizeof(*e));
        e->kind = c.kind;
        e->address = address;
        e->targets = ldapb_split(c.text, pool);
        *e_r = e;
        return APR_SUCCESS;
    }
    apr_status_t st = ldapb_lookup_ldap(b, address, e_r, pool);
    if (st == APR_SUCCESS)
        ldapb_cache_put(b, key, 1, (*e_r)->kind, ldapb_join((*e_r)->targets, pool),
                        b->cfg->ldap.cache_ttl);
    else if (st == PR_ENOTFOUND)
        ldapb_cache_put(b, key, 0, 0, NULL, b->cfg->ldap.negative_cache_ttl);
    return st;
}

/* What an address is, asked of the server. */
static apr_status_t ldapb_lookup_ldap(ldapb_t *b, const char *address, dir_entry_t **e_r,
                                      apr_pool_t *pool)
{
    const pr_config_t *cfg = b->cfg;
    ldapb_slot_t *sl;
    apr_status_t st = ldapb_acquire(b, &sl);
    if (st != APR_SUCCESS) return st;

    const char **attrs = ldapb_attr_list(b, pool);
    const char *f = dir_ldap_filter_any(ldapb_user_objfilter(b, pool),
                                        &cfg->ldap.address_attributes, address, NULL, 0, pool);
    if (!f) { /* no usable attributes: the config cannot name anyone */
        ldapb_release(b, sl, LDAP_SUCCESS);
        return PR_ENOTFOUND;
    }
    apr_array_header_t *es;
    int rc = ldapb_search(b, sl, cfg->ldap.base, LDAP_SCOPE_SUBTREE, f, attrs, LDAPB_SIZELIMIT, &es,
                          pool);
    dir_entry_t *e = NULL;
    if ((st = ldapb_status(rc, "user search", f)) == APR_SUCCESS && es->nelts > 1) {
        pr_log_warn(NULL, "ldap: %s belongs to more than one user; refused", address);
        st = PR_ENOTFOUND;
    } else if (st == APR_SUCCESS && es->nelts == 1) {
        apr_array_header_t *addrs =
            ldapb_user_addresses(b, APR_ARRAY_IDX(es, 0, ldapb_entry_t *), pool);
        e = apr_pcalloc(pool, sizeof(*e));
        e->targets = apr_array_make(pool, 1, sizeof(const char *));
        e->address = address;
        if (addrs->nelts && strcmp(APR_ARRAY_IDX(addrs, 0, const char *), address) == 0) {
            e->kind = DIR_KIND_MAILBOX;
        } else {
            /* Another address of the user: an alias of the mailbox. */
            e->kind = DIR_KIND_ALIAS;
            APR_ARRAY_PUSH(e->targets, const char *) = APR_ARRAY_IDX(addrs, 0, const char *);
        }
    } else if (st == APR_SUCCESS) {
        f = dir_ldap_filter_any(cfg->ldap.list_filter, &cfg->ldap.address_attributes, address, NULL,
                                0, pool);
        rc = !f ? LDAP_SUCCESS
                : ldapb_search(b, sl, cfg->ldap.base, LDAP_SCOPE_SUBTREE, f, attrs, LDAPB_SIZELIMIT,
                               &es, pool);
        if (!f) {
            st = PR_ENOTFOUND;
        } else if ((st = ldapb_status(rc, "list search", f)) == APR_SUCCESS && es->nelts == 1) {
            ldapb_members_t m = {b,
                                 sl,
                                 pool,
                                 apr_array_make(pool, 8, sizeof(const char *)),
                                 apr_hash_make(pool),
                                 LDAP_SUCCESS};
            ldapb_members_of(&m, APR_ARRAY_IDX(es, 0, ldapb_entry_t *), 0);
            rc = m.rc;
            if ((st = ldapb_status(rc, "list members of", address)) == APR_SUCCESS) {
                e = apr_pcalloc(pool, sizeof(*e));
                e->kind = DIR_KIND_LIST;
                e->address = address;
                e->targets = m.out;
            }
        } else if (st == APR_SUCCESS) {
            if (es->nelts > 1) pr_log_warn(NULL, "ldap: %s names more than one list", address);
            st = PR_ENOTFOUND;
        }
    }
    ldapb_release(b, sl, rc);
    if (st == APR_SUCCESS) *e_r = e;
    return st;
}

/* Find the one enabled user a login names: by address, and by the login
 * attributes (uid, sAMAccountName, ...) when login_names allows bare names. */
static apr_status_t ldapb_find_login(ldapb_t *b, ldapb_slot_t *sl, const char *login,
                                     const char **dn_r, const char **user_r, const char **tag_r,
                                     int *rc_r, apr_pool_t *pool)
{
    const pr_config_t *cfg = b->cfg;
    const char *norm = strchr(login, '@') ? dir_address_normalize(login, pool) : NULL;
    const char *f;
    if (norm) {
        pr_strlist_t both = {0};
        both.n = cfg->ldap.address_attributes.n + cfg->ldap.login_attributes.n;
        both.v = apr_pcalloc(pool, sizeof(*both.v) * (apr_size_t)both.n);
        int k = 0;
        for (int i = 0; i < cfg->ldap.address_attributes.n; i++)
            both.v[k++] = cfg->ldap.address_attributes.v[i];
        for (int i = 0; i < cfg->ldap.login_attributes.n; i++)
            both.v[k++] = cfg->ldap.login_attributes.v[i];
        f = dir_ldap_filter_any(ldapb_user_objfilter(b, pool), &both, norm, NULL, 0, pool);
    } else if (cfg->ldap.login_usernames && *login && strlen(login) <= 256) {
        f = dir_ldap_filter_any(ldapb_user_objfilter(b, pool), &cfg->ldap.login_attributes, login,
                                NULL, 0, pool);
    } else {
        *rc_r = LDAP_SUCCESS;
        return PR_EAUTH;
    }
    *rc_r = LDAP_SUCCESS;
    if (!f) return PR_EAUTH;
    /* The attributes that change with the password: OpenLDAP's entryCSN
     * (every change, microseconds; modifyTimestamp has whole seconds only)
     * and pwdChangedTime (ppolicy), AD's pwdLastSet. */
    static const char *const tag_attrs[] = {"pwdLastSet", "pwdChangedTime", "entryCSN"};
    const char **attrs = ldapb_attr_list(b, pool);
    int n_attrs = 0;
    while (attrs[n_attrs])
        n_attrs++;
    const char **all = apr_pcalloc(pool, sizeof(*all) * (apr_size_t)(n_attrs + 4));
    memcpy(all, attrs, sizeof(*all) * (apr_size_t)n_attrs);
    for (int i = 0; i < 3; i++)
        all[n_attrs + i] = tag_attrs[i];
    apr_array_header_t *es;
    *rc_r =
        ldapb_search(b, sl, cfg->ldap.base, LDAP_SCOPE_SUBTREE, f, all, LDAPB_SIZELIMIT, &es, pool);
    apr_status_t st = ldapb_status(*rc_r, "login search", f);
    if (st != APR_SUCCESS) return st;
    if (es->nelts != 1) return PR_EAUTH;
    const ldapb_entry_t *e = APR_ARRAY_IDX(es, 0, ldapb_entry_t *);
    apr_array_header_t *addrs = ldapb_user_addresses(b, e, pool);
    if (addrs->nelts == 0) return PR_EAUTH; /* no mailbox */
    *dn_r = e->dn;
    *user_r = APR_ARRAY_IDX(addrs, 0, const char *);
    const char *tag = e->dn;
    for (int i = 0; i < 3; i++) {
        const apr_array_header_t *v = ldapb_values(e, tag_attrs[i], pool);
        tag = apr_pstrcat(pool, tag, "\n", v && v->nelts ? APR_ARRAY_IDX(v, 0, const char *) : "",
                          NULL);
    }
    *tag_r = tag;
    return APR_SUCCESS;
}

static apr_status_t ldapb_authenticate(void *ctx, const char *login, const char *password,
                                       const char **user_r, apr_pool_t *pool)
{
    ldapb_t *b = ctx;
    /* An empty password would be an unauthenticated bind (RFC 4513 5.1.2):
     * a "success" that proves nothing. */
    if (!password || !*password) return PR_EAUTH;
    ldapb_slot_t *sl;
    apr_status_t st = ldapb_acquire(b, &sl);
    if (st != APR_SUCCESS) return st;
    const char *dn = NULL, *user = NULL, *tag;
    int rc = LDAP_SUCCESS;
    st = ldapb_find_login(b, sl, login, &dn, &user, &tag, &rc, pool);
    if (st == APR_SUCCESS) {
        sl->as_user = 1;
        rc = ldapb_simple_bind(sl->ld, dn, password);
        if (rc == LDAP_INVALID_CREDENTIALS || rc == LDAP_INAPPROPRIATE_AUTH ||
            rc == LDAP_UNWILLING_TO_PERFORM) {
            st = PR_EAUTH;
            rc = LDAP_SUCCESS; /* the connection is fine */
        } else if (rc != LDAP_SUCCESS) {
            st = ldapb_status(rc, "bind as", dn);
        }
    }
    ldapb_release(b, sl, rc);
    if (st == APR_SUCCESS) *user_r = user;
    return st;
}

/* For the verified-credential cache: the user a login names and a tag that
 * changes with the password (DN, entryCSN or pwdLastSet), from the
 * answer cache while it is fresh. So a cached login costs no LDAP traffic;
 * a password changed in the directory takes effect at the latest after
 * cache_ttl (at once with cache_ttl = 0), as with Dovecot's auth cache. */
static apr_status_t ldapb_auth_tag(void *ctx, const char *login, const char **user_r,
                                   const char **tag_r, apr_pool_t *pool)
{
    ldapb_t *b = ctx;
    const char *key = apr_pstrcat(pool, "T:", login, NULL);
    ldapb_cached_t c;
    if (ldapb_cache_get(b, key, &c, pool)) {
        char *nl = strchr(c.text, '\n');
        if (!c.found || !nl) return PR_ENOTFOUND;
        *nl = '\0';
        *user_r = c.text;
        *tag_r = nl + 1;
        return APR_SUCCESS;
    }
    ldapb_slot_t *sl;
    apr_status_t st = ldapb_acquire(b, &sl);
    if (st != APR_SUCCESS) return st;
    const char *dn, *user = NULL, *tag = NULL;
    int rc = LDAP_SUCCESS;
    st = ldapb_find_login(b, sl, login, &dn, &user, &tag, &rc, pool);
    ldapb_release(b, sl, rc);
    if (st == PR_EAUTH) st = PR_ENOTFOUND;
    if (st != APR_SUCCESS) return st;
    ldapb_cache_put(b, key, 1, 0, apr_pstrcat(pool, user, "\n", tag, NULL), b->cfg->ldap.cache_ttl);
    *user_r = user;
    *tag_r = tag;
    return APR_SUCCESS;
}

/* Local domains are [server] domains only: LDAP holds no domain list. */
static apr_status_t ldapb_domain_is_local(void *ctx, const char *domain)
{
    (void)ctx;
    (void)domain;
    return PR_ENOTFOUND;
}

static apr_status_t ldapb_read_secret(const char *path, const char **secret_r, apr_pool_t *pool)
{
    apr_file_t *f;
    char buf[1024];
    apr_size_t n = sizeof(buf) - 1;
    apr_status_t st = apr_file_open(&f, path, APR_FOPEN_READ, 0, pool);
    if (st != APR_SUCCESS) return st;
    st = apr_file_read(f, buf, &n);
    apr_file_close(f);
    if (st != APR_SUCCESS && st != APR_EOF) return st;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    *secret_r = apr_pstrdup(pool, buf);
    memset(buf, 0, sizeof(buf));
    return APR_SUCCESS;
}

static apr_status_t ldapb_open(void **ctx_r, const pr_config_t *cfg, apr_pool_t *pool)
{
    ldapb_t *b = apr_pcalloc(pool, sizeof(*b));
    apr_status_t st;
    b->cfg = cfg;
    b->n_slots = cfg->ldap.pool_size < 1 ? 1 : cfg->ldap.pool_size;
    if (b->n_slots > LDAPB_POOL_MAX) b->n_slots = LDAPB_POOL_MAX;
    if (cfg->ldap.uri.n == 0 || !cfg->ldap.base) {
        pr_log_error(NULL, "ldap: [ldap] uri and base are required");
        return PR_EINVAL;
    }
    if (cfg->ldap.bind_dn && *cfg->ldap.bind_dn) {
        st = ldapb_read_secret(cfg->ldap.bind_password_file, &b->bind_password, pool);
        if (st != APR_SUCCESS) {
            char buf[120];
            pr_log_error(NULL, "ldap: cannot read bind_password_file %s: %s",
                         cfg->ldap.bind_password_file, apr_strerror(st, buf, sizeof(buf)));
            return PR_EINVAL;
        }
    }
    if ((st = apr_thread_mutex_create(&b->mu, APR_THREAD_MUTEX_DEFAULT, pool)) != APR_SUCCESS ||
        (st = apr_thread_mutex_create(&b->cache_mu, APR_THREAD_MUTEX_DEFAULT, pool)) !=
            APR_SUCCESS ||
        (st = apr_thread_cond_create(&b->freed, pool)) != APR_SUCCESS)
        return st;
    b->cache = apr_hash_make(pool);
    *ctx_r = b;
    return APR_SUCCESS;
}

static void ldapb_close(void *ctx)
{
    ldapb_t *b = ctx;
    for (int i = 0; i < b->n_slots; i++)
        ldapb_drop(&b->slots[i]);
    ldapb_cache_clear(b);
}

const dir_backend_t dir_ldap_backend = {
    .name = "ldap",
    .caps = 0,
    .open = ldapb_open,
    .close = ldapb_close,
    .domain_is_local = ldapb_domain_is_local,
    .lookup = ldapb_lookup,
    .authenticate = ldapb_authenticate,
    .auth_tag = ldapb_auth_tag,
};
