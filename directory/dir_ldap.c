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
 * duplicates) is directory.c's, as for every backend. A nisMailAlias
 * (when list_filter names it) is a list by its cn in every local domain,
 * as in /etc/aliases. AD's big groups come in ranges ("member;range=0-1499")
 * and are read to the end; the member DNs of a group are looked at many
 * at a time, in one round trip.
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
 * chased (search references are skipped, a referral is "nothing here").
 * Listings (`postroom user list`, --check's count) page (RFC 2696). Every
 * client value in a filter is escaped (ldap_filter.h). */
#include "service/core/fiber.h"
#include "directory/dir_internal.h"
#include "directory/dir_ldap_int.h"
#include "directory/ldap_filter.h"
#include "service/core/log.h"
#include "service/core/status.h"

#include <apr_file_io.h>
#include <apr_strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- connections */

struct timeval ldapb_tv(apr_interval_time_t t)
{
    struct timeval tv = {(time_t)apr_time_sec(t), (suseconds_t)apr_time_usec(t)};
    return tv;
}

/* A temporary LDAP failure: the server is gone, slow or refused us. */
int ldapb_rc_is_down(int rc)
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

int ldapb_simple_bind(LDAP *ld, const char *dn, const char *password)
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

int ldapb_connect_uri(ldapb_t *b, const char *uri, const char *dn, const char *password,
                      LDAP **ld_r, char *why, apr_size_t why_size)
{
    const pr_config_t *cfg = b->cfg;
    const char *stage = "connect";
    LDAP *ld = NULL;
    int rc = ldap_initialize(&ld, uri);
    *ld_r = NULL;
    if (rc != LDAP_SUCCESS) {
        snprintf(why, why_size, "%s: %s", stage, ldap_err2string(rc));
        return rc;
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
    /* Connect now (TCP, and TLS for ldaps://) rather than at the first
     * operation: with an anonymous service bind and no StartTLS nothing
     * else would touch the network here, and an unreachable first URI
     * would never make way for the next one. */
    rc = ldap_connect(ld);
    if (rc == LDAP_SUCCESS && cfg->ldap.starttls && strncasecmp(uri, "ldap://", 7) == 0) {
        stage = "StartTLS";
        rc = ldap_start_tls_s(ld, NULL, NULL);
    }
    if (rc == LDAP_SUCCESS && dn && *dn) {
        stage = "bind";
        rc = ldapb_simple_bind(ld, dn, password);
    }
    if (rc == LDAP_SUCCESS) {
        *ld_r = ld;
        return rc;
    }
    /* libldap's own words (why a certificate was refused, what the server
     * said about a bind) beside the result code's. */
    char *diag = NULL;
    ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
    if (diag && strcmp(diag, "(unknown error code)") == 0) *diag = '\0'; /* GnuTLS: no news */
    snprintf(why, why_size, "%s: %s%s%s%s", stage, ldap_err2string(rc), diag && *diag ? " (" : "",
             diag && *diag ? diag : "", diag && *diag ? ")" : "");
    ldap_memfree(diag);
    ldap_unbind_ext_s(ld, NULL, NULL);
    return rc;
}

int ldapb_connect(ldapb_t *b, const char *dn, const char *password, LDAP **ld_r)
{
    int rc = LDAP_SERVER_DOWN;
    for (int i = 0; i < b->cfg->ldap.uri.n; i++) {
        char why[512];
        const char *uri = b->cfg->ldap.uri.v[i];
        if ((rc = ldapb_connect_uri(b, uri, dn, password, ld_r, why, sizeof(why))) == LDAP_SUCCESS)
            return rc;
        pr_log_warn(NULL, "ldap: %s: %s", uri, why);
    }
    return rc;
}

/* Borrow a connected handle, bound as the service. PR_ETEMPFAIL when none
 * frees up within the timeout or the directory cannot be reached. */
apr_status_t ldapb_acquire(ldapb_t *b, ldapb_slot_t **sl_r)
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
        rc = ldapb_connect(b, b->cfg->ldap.bind_dn, b->bind_password, &sl->ld);
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
void ldapb_release(ldapb_t *b, ldapb_slot_t *sl, int rc)
{
    if (ldapb_rc_is_down(rc)) ldapb_drop(sl);
    apr_thread_mutex_lock(b->mu);
    sl->busy = 0;
    apr_thread_cond_signal(b->freed);
    apr_thread_mutex_unlock(b->mu);
}

/* ---- searches */

/* Attribute names and DNs compare case-insensitively (ASCII). */
const char *ldapb_lower(apr_pool_t *pool, const char *s)
{
    char *out = apr_pstrdup(pool, s);
    for (char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    return out;
}

const apr_array_header_t *ldapb_values(const ldapb_entry_t *e, const char *attr, apr_pool_t *pool)
{
    return apr_hash_get(e->attrs, ldapb_lower(pool, attr), APR_HASH_KEY_STRING);
}

/* An entry of a search answer, in pool. */
static ldapb_entry_t *ldapb_entry_read(LDAP *ld, LDAPMessage *m, apr_pool_t *pool)
{
    ldapb_entry_t *e = apr_pcalloc(pool, sizeof(*e));
    char *dn = ldap_get_dn(ld, m);
    e->dn = apr_pstrdup(pool, dn ? dn : "");
    ldap_memfree(dn);
    e->attrs = apr_hash_make(pool);
    BerElement *ber = NULL;
    for (char *a = ldap_first_attribute(ld, m, &ber); a; a = ldap_next_attribute(ld, m, ber)) {
        struct berval **vals = ldap_get_values_len(ld, m, a);
        apr_array_header_t *arr = apr_array_make(pool, 2, sizeof(const char *));
        for (int i = 0; vals && vals[i]; i++)
            APR_ARRAY_PUSH(arr, const char *) =
                apr_pstrmemdup(pool, vals[i]->bv_val, vals[i]->bv_len);
        ldap_value_free_len(vals);
        apr_hash_set(e->attrs, ldapb_lower(pool, a), APR_HASH_KEY_STRING, arr);
        ldap_memfree(a);
    }
    if (ber) ber_free(ber, 0);
    return e;
}

/* One search of a batch (ldapb_run): the request, then its answer. */
typedef struct ldapb_query_t {
    const char *base;
    int scope;
    const char *filter;
    const char *const *attrs;
    int sizelimit;               /* 0: none */
    LDAPControl **ctrls;         /* sent with the request; NULL: none */
    int msgid;                   /* -1: not sent */
    int done;                    /* its result has come */
    int rc;                      /* the search's result code */
    apr_array_header_t *entries; /* ldapb_entry_t* */
    LDAPControl **resp_ctrls;    /* the result's controls (freed with the pool) */
} ldapb_query_t;

static apr_status_t ldapb_controls_free(void *ctrls)
{
    ldap_controls_free(ctrls);
    return APR_SUCCESS;
}

/* Send n searches at once on a handle, then read the answers: n searches
 * for one round trip, all answered within [ldap] timeout. Each query's
 * own result code is in its rc: noSuchObject (the base is not there, or
 * not ours to see) and a referral (the base lies in another server's
 * naming context) are a success with nothing found, as referrals are not
 * chased; on other errors a query has no entries. Search references
 * (continuation references to other servers, e.g. AD's DomainDnsZones
 * below a domain's root) are skipped for the same reason. Returns the
 * handle's failure (timeout, server down), which stops every query;
 * unanswered ones are then abandoned. */
static int ldapb_run(ldapb_t *b, LDAP *ld, ldapb_query_t *q, int n, apr_pool_t *pool)
{
    apr_interval_time_t timeout = b->cfg->ldap.timeout;
    struct timeval limit = ldapb_tv(timeout); /* the server's time limit, too */
    int rc = LDAP_SUCCESS, pending = 0;
    for (int i = 0; i < n; i++) {
        q[i].msgid = -1;
        q[i].done = 0;
        q[i].rc = LDAP_OTHER;
        q[i].entries = apr_array_make(pool, 2, sizeof(ldapb_entry_t *));
        q[i].resp_ctrls = NULL;
    }
    for (int i = 0; i < n && rc == LDAP_SUCCESS; i++) {
        rc = ldap_search_ext(ld, q[i].base, q[i].scope, q[i].filter, (char **)q[i].attrs, 0,
                             q[i].ctrls, NULL, &limit, q[i].sizelimit, &q[i].msgid);
        if (rc == LDAP_SUCCESS)
            pending++;
        else
            q[i].msgid = -1;
    }
    apr_time_t deadline = apr_time_now() + timeout;
    while (rc == LDAP_SUCCESS && pending > 0) {
        apr_interval_time_t left = deadline - apr_time_now();
        if (left <= 0) {
            rc = LDAP_TIMEOUT;
            break;
        }
        struct timeval tv = ldapb_tv(left);
        LDAPMessage *res = NULL;
        int type = ldap_result(ld, LDAP_RES_ANY, LDAP_MSG_ONE, &tv, &res);
        if (type <= 0) {
            if (type == 0)
                rc = LDAP_TIMEOUT;
            else if (ldap_get_option(ld, LDAP_OPT_RESULT_CODE, &rc) != LDAP_OPT_SUCCESS ||
                     rc == LDAP_SUCCESS)
                rc = LDAP_SERVER_DOWN;
            if (res) ldap_msgfree(res);
            break;
        }
        ldapb_query_t *qq = NULL;
        for (int i = 0; i < n && !qq; i++)
            if (!q[i].done && q[i].msgid == ldap_msgid(res)) qq = &q[i];
        if (qq && type == LDAP_RES_SEARCH_ENTRY) {
            APR_ARRAY_PUSH(qq->entries, ldapb_entry_t *) = ldapb_entry_read(ld, res, pool);
        } else if (qq && type == LDAP_RES_SEARCH_RESULT) {
            int err = LDAP_OTHER;
            LDAPControl **ctrls = NULL;
            int prc = ldap_parse_result(ld, res, &err, NULL, NULL, NULL, &ctrls, 0);
            if (ctrls) {
                qq->resp_ctrls = ctrls;
                apr_pool_cleanup_register(pool, ctrls, ldapb_controls_free, apr_pool_cleanup_null);
            }
            qq->rc = prc == LDAP_SUCCESS ? err : prc;
            if (qq->rc == LDAP_NO_SUCH_OBJECT || qq->rc == LDAP_REFERRAL) {
                qq->rc = LDAP_SUCCESS; /* nothing there for us */
                apr_array_clear(qq->entries);
            } else if (qq->rc != LDAP_SUCCESS && qq->rc != LDAP_SIZELIMIT_EXCEEDED) {
                apr_array_clear(qq->entries);
            }
            qq->done = 1;
            pending--;
        }
        ldap_msgfree(res);
    }
    for (int i = 0; i < n; i++) {
        if (q[i].done) continue;
        if (q[i].msgid >= 0) ldap_abandon_ext(ld, q[i].msgid, NULL, NULL);
        q[i].rc = rc;
        apr_array_clear(q[i].entries);
    }
    return rc;
}

/* One search on a borrowed handle: the entries (at most sizelimit; 0 = no
 * limit) with the attributes asked for. An LDAP result code; entries_r is
 * an array of ldapb_entry_t*. */
int ldapb_search(ldapb_t *b, ldapb_slot_t *sl, const char *base, int scope, const char *filter,
                 const char *const *attrs, int sizelimit, apr_array_header_t **entries_r,
                 apr_pool_t *pool)
{
    ldapb_query_t q = {
        .base = base, .scope = scope, .filter = filter, .attrs = attrs, .sizelimit = sizelimit};
    int rc = ldapb_run(b, sl->ld, &q, 1, pool);
    *entries_r = q.entries;
    return rc != LDAP_SUCCESS ? rc : q.rc;
}

/* A subtree search below base that may find many entries (listing,
 * counting), page by page (RFC 2696): AD answers a plain search with at
 * most MaxPageSize (1000) entries, slapd with its sizelimit (500), but
 * pages go on to the end. Each page is a round trip within [ldap]
 * timeout; each entry is handed to each (in a pool cleared after every
 * page), which returns non-zero to stop. A server that ignores the
 * (non-critical) control answers in one go; if that answer was cut short,
 * the result is LDAP_SIZELIMIT_EXCEEDED after the entries it had. */
int ldapb_search_paged(ldapb_t *b, LDAP *ld, const char *filter, const char *const *attrs,
                       int (*each)(void *baton, const ldapb_entry_t *e, apr_pool_t *pool),
                       void *baton, apr_pool_t *pool)
{
    struct berval cookie = {0, NULL};
    apr_pool_t *page;
    int rc, stop = 0;
    apr_pool_create(&page, pool);
    for (;;) {
        LDAPControl *pc = NULL;
        rc = ldap_create_page_control(ld, LDAPB_PAGE_SIZE, &cookie, 0, &pc);
        if (rc != LDAP_SUCCESS) break;
        LDAPControl *sent[] = {pc, NULL};
        ldapb_query_t q = {.base = b->cfg->ldap.base,
                           .scope = LDAP_SCOPE_SUBTREE,
                           .filter = filter,
                           .attrs = attrs,
                           .ctrls = sent};
        rc = ldapb_run(b, ld, &q, 1, page);
        ldap_control_free(pc);
        if (rc == LDAP_SUCCESS) rc = q.rc;
        for (int i = 0; i < q.entries->nelts && !stop; i++)
            stop = each(baton, APR_ARRAY_IDX(q.entries, i, ldapb_entry_t *), page);
        /* The next page's cookie: none (a server that does not page) or
         * an empty one ends the search. */
        LDAPControl *resp = NULL;
        if (rc == LDAP_SUCCESS && !stop && q.resp_ctrls)
            resp = ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, q.resp_ctrls, NULL);
        ber_memfree(cookie.bv_val);
        cookie.bv_val = NULL;
        cookie.bv_len = 0;
        ber_int_t estimate = 0;
        if (!resp ||
            ldap_parse_pageresponse_control(ld, resp, &estimate, &cookie) != LDAP_SUCCESS ||
            cookie.bv_len == 0)
            break;
        apr_pool_clear(page);
    }
    ber_memfree(cookie.bv_val);
    apr_pool_destroy(page);
    return rc;
}

/* An LDAP result as a status: found things are the caller's business. */
apr_status_t ldapb_status(int rc, const char *what, const char *filter)
{
    if (rc == LDAP_SUCCESS || rc == LDAP_SIZELIMIT_EXCEEDED) return APR_SUCCESS;
    pr_log_warn(NULL, "ldap: %s %s: %s", what, filter, ldap_err2string(rc));
    return PR_ETEMPFAIL;
}

/* A user's addresses in order, the mailbox first: AD's "SMTP:" primary
 * goes first; then values in attribute order. Lower-cased, deduplicated. */
apr_array_header_t *ldapb_user_addresses(ldapb_t *b, const ldapb_entry_t *e, apr_pool_t *pool)
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
const char **ldapb_attr_list(ldapb_t *b, apr_pool_t *pool)
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
const char *ldapb_user_objfilter(ldapb_t *b, apr_pool_t *pool)
{
    const char *dis = b->cfg->ldap.disabled_filter;
    if (!dis || !*dis) return b->cfg->ldap.user_filter;
    return apr_pstrcat(pool, "(&", b->cfg->ldap.user_filter, "(!", dis, "))", NULL);
}

typedef struct ldapb_members_t {
    ldapb_t *b;
    ldapb_slot_t *sl;
    apr_pool_t *pool;
    const char *domain;      /* of the list looked up: for bare local parts */
    apr_array_header_t *out; /* const char*: member addresses */
    apr_hash_t *groups_seen; /* DNs of groups expanded here */
    int rc;
} ldapb_members_t;

/* The values of a group's member attribute attr, all of them. AD gives at
 * most MaxValRange (1500) values of an attribute in one answer, under
 * "member;range=0-1499" (the plain "member" then empty); the rest comes
 * from base searches for "member;range=1500-*" and on until a range ends
 * in "*" (incremental retrieval). Any member attribute may come so. NULL
 * if the group has no such values. */
static const apr_array_header_t *ldapb_member_values(ldapb_members_t *m, const ldapb_entry_t *g,
                                                     const char *attr)
{
    apr_pool_t *pool = m->pool;
    const apr_array_header_t *plain = ldapb_values(g, attr, pool);
    apr_array_header_t *out = NULL;
    long next = -1;
    for (apr_hash_index_t *hi = apr_hash_first(pool, g->attrs); hi; hi = apr_hash_next(hi)) {
        if (!dir_ldap_parse_range(apr_hash_this_key(hi), attr, &next)) continue;
        out = plain ? apr_array_copy(pool, plain) : apr_array_make(pool, 16, sizeof(const char *));
        apr_array_cat(out, apr_hash_this_val(hi));
        break;
    }
    if (!out) return plain;
    const char *want[] = {NULL, NULL};
    while (next >= 0) {
        if (out->nelts >= LDAPB_RANGE_MAX) {
            pr_log_warn(NULL, "ldap: %s has more than %d %s values; the rest are ignored", g->dn,
                        LDAPB_RANGE_MAX, attr);
            break;
        }
        want[0] = apr_psprintf(pool, "%s;range=%ld-*", attr, next);
        apr_array_header_t *es;
        int rc = ldapb_search(m->b, m->sl, g->dn, LDAP_SCOPE_BASE, "(objectClass=*)", want, 1, &es,
                              pool);
        if (rc != LDAP_SUCCESS) {
            m->rc = rc;
            break;
        }
        if (es->nelts == 0) break; /* the group went away meanwhile */
        const ldapb_entry_t *e = APR_ARRAY_IDX(es, 0, ldapb_entry_t *);
        const apr_array_header_t *vals = NULL;
        long after = -1;
        for (apr_hash_index_t *hi = apr_hash_first(pool, e->attrs); hi && !vals;
             hi = apr_hash_next(hi))
            if (dir_ldap_parse_range(apr_hash_this_key(hi), attr, &after))
                vals = apr_hash_this_val(hi);
        /* Every chunk must bring values and move on, or a confused server
         * would keep us here. */
        if (!vals || vals->nelts == 0 || (after >= 0 && after <= next)) break;
        apr_array_cat(out, vals);
        next = after;
    }
    return out;
}

/* The DN a member value names, a uniqueMember's optional UID
 * ("dn#'0101'B", RFC 4517 3.3.21) cut off. */
static const char *ldapb_member_dn(const char *value, apr_pool_t *pool)
{
    const char *h = strrchr(value, '#');
    apr_size_t n = strlen(value);
    if (!h || h[1] != '\'' || n < 3 || value[n - 2] != '\'' || value[n - 1] != 'B') return value;
    const char *p = h + 2;
    while (p < value + n - 2 && (*p == '0' || *p == '1'))
        p++;
    return p == value + n - 2 ? apr_pstrndup(pool, value, (apr_size_t)(h - value)) : value;
}

static void ldapb_members_of(ldapb_members_t *m, const ldapb_entry_t *g, int depth);

/* The answers for one member DN: as an enabled user, as a list. */
static void ldapb_member_entry(ldapb_members_t *m, const ldapb_query_t *user,
                               const ldapb_query_t *list, int depth)
{
    const ldapb_query_t *both[] = {user, list};
    for (int i = 0; i < 2; i++) {
        if (both[i]->rc == LDAP_INVALID_DN_SYNTAX) {
            pr_log_warn(NULL, "ldap: member '%s' is neither an address nor a DN; skipped",
                        both[i]->base);
            return;
        }
        if (both[i]->rc != LDAP_SUCCESS) {
            m->rc = both[i]->rc;
            return;
        }
    }
    const ldapb_entry_t *e;
    if (user->entries->nelts) {
        e = APR_ARRAY_IDX(user->entries, 0, ldapb_entry_t *);
        apr_array_header_t *addrs = ldapb_user_addresses(m->b, e, m->pool);
        if (addrs->nelts)
            APR_ARRAY_PUSH(m->out, const char *) = APR_ARRAY_IDX(addrs, 0, const char *);
        return;
    }
    /* Not an enabled user. A disabled one (not a list too) is skipped; a
     * group with an address goes by its address (directory.c expands it,
     * with its loop checks); one without is expanded here. */
    if (!list->entries->nelts) return;
    e = APR_ARRAY_IDX(list->entries, 0, ldapb_entry_t *);
    apr_array_header_t *addrs = ldapb_user_addresses(m->b, e, m->pool);
    if (addrs->nelts) {
        APR_ARRAY_PUSH(m->out, const char *) = APR_ARRAY_IDX(addrs, 0, const char *);
        return;
    }
    ldapb_members_of(m, e, depth + 1);
}

/* n member values: addresses (rfc822MailMember; a bare local part, as in
 * /etc/aliases, is in the list's domain) or DNs of users or groups. What
 * each DN is takes two base searches (an enabled user? a list?), and the
 * searches for up to LDAPB_PIPELINE DNs go out together: one round trip
 * for them all. (64 requests in flight stay below slapd's
 * olcConnMaxPending, 100 for an anonymous client.) */
static void ldapb_members_batch(ldapb_members_t *m, const char *const *values, int n, int depth)
{
    ldapb_t *b = m->b;
    apr_pool_t *pool = m->pool;
    const char **dns = apr_pcalloc(pool, sizeof(*dns) * (apr_size_t)n);
    ldapb_query_t *q = apr_pcalloc(pool, sizeof(*q) * (apr_size_t)(2 * n));
    const char *const *attrs = ldapb_attr_list(b, pool);
    const char *users = ldapb_user_objfilter(b, pool);
    int nq = 0;
    if (m->out->nelts >= LDAPB_MEMBERS_MAX) return;
    for (int i = 0; i < n; i++) {
        const char *v = values[i];
        if (strchr(v, '=')) {
            dns[i] = ldapb_member_dn(v, pool);
            q[nq++] = (ldapb_query_t){.base = dns[i],
                                      .scope = LDAP_SCOPE_BASE,
                                      .filter = users,
                                      .attrs = attrs,
                                      .sizelimit = 1};
            q[nq++] = (ldapb_query_t){.base = dns[i],
                                      .scope = LDAP_SCOPE_BASE,
                                      .filter = b->cfg->ldap.list_filter,
                                      .attrs = attrs,
                                      .sizelimit = 1};
        }
    }
    if (nq > 0) {
        int rc = ldapb_run(b, m->sl->ld, q, nq, pool);
        if (rc != LDAP_SUCCESS) {
            m->rc = rc;
            return;
        }
    }
    for (int i = 0, k = 0; i < n && m->rc == LDAP_SUCCESS; i++) {
        if (m->out->nelts >= LDAPB_MEMBERS_MAX) return;
        if (dns[i]) {
            ldapb_member_entry(m, &q[k], &q[k + 1], depth);
            k += 2;
            continue;
        }
        const char *a =
            strchr(values[i], '@') ? values[i] : apr_pstrcat(pool, values[i], "@", m->domain, NULL);
        const char *norm = dir_address_normalize(a, pool);
        if (norm)
            APR_ARRAY_PUSH(m->out, const char *) = norm;
        else
            pr_log_warn(NULL, "ldap: member '%s' is neither an address nor a DN; skipped",
                        values[i]);
    }
}

static void ldapb_members_of(ldapb_members_t *m, const ldapb_entry_t *g, int depth)
{
    const char *key = ldapb_lower(m->pool, g->dn);
    if (depth > LDAPB_GROUP_DEPTH || apr_hash_get(m->groups_seen, key, APR_HASH_KEY_STRING))
        return; /* a loop or too deep among groups without addresses: cut */
    apr_hash_set(m->groups_seen, key, APR_HASH_KEY_STRING, key);
    const pr_strlist_t *attrs = &m->b->cfg->ldap.member_attributes;
    for (int i = 0; i < attrs->n && m->rc == LDAP_SUCCESS; i++) {
        const apr_array_header_t *vals = ldapb_member_values(m, g, attrs->v[i]);
        for (int j = 0; vals && j < vals->nelts && m->rc == LDAP_SUCCESS; j += LDAPB_PIPELINE) {
            int n = vals->nelts - j < LDAPB_PIPELINE ? vals->nelts - j : LDAPB_PIPELINE;
            ldapb_members_batch(m, (const char *const *)vals->elts + j, n, depth);
        }
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

void ldapb_cache_flush(ldapb_t *b)
{
    apr_thread_mutex_lock(b->cache_mu);
    ldapb_cache_clear(b);
    apr_thread_mutex_unlock(b->cache_mu);
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

/* Every exchange with the server runs through pr_fiber_blocking: a session
 * on an event loop waits for LDAP on a helper thread, not on its loop. */
typedef struct ldapb_job_t {
    ldapb_t *b;
    const char *login, *password;
    dir_entry_t **e_r;
    const char **user_r, **tag_r;
    apr_pool_t *pool;
    apr_status_t st;
} ldapb_job_t;

static void ldapb_lookup_job(void *arg)
{
    ldapb_job_t *j = arg;
    j->st = ldapb_lookup_ldap(j->b, j->login, j->e_r, j->pool);
}

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
    ldapb_job_t job = {.b = b, .login = address, .e_r = e_r, .pool = pool};
    pr_fiber_blocking(ldapb_lookup_job, &job);
    apr_status_t st = job.st;
    if (st == APR_SUCCESS)
        ldapb_cache_put(b, key, 1, (*e_r)->kind, ldapb_join((*e_r)->targets, pool),
                        b->cfg->ldap.cache_ttl);
    else if (st == PR_ENOTFOUND)
        ldapb_cache_put(b, key, 0, 0, NULL, b->cfg->ldap.negative_cache_ttl);
    return st;
}

/* A list answers to one address, its own: the first of its address
 * attributes (AD's "SMTP:" primary first), or for a nisMailAlias (known by
 * cn in every local domain) cn at the first of [server] domains. Asked by
 * another, the list is an alias of that one: an alias entry, else NULL. */
static dir_entry_t *ldapb_list_alias(ldapb_t *b, const ldapb_entry_t *g, const char *address,
                                     apr_pool_t *pool)
{
    apr_array_header_t *addrs = ldapb_user_addresses(b, g, pool);
    const char *own = NULL;
    if (addrs->nelts) {
        own = APR_ARRAY_IDX(addrs, 0, const char *);
    } else if (b->cfg->server.domains.n > 0) {
        const char *at = strchr(address, '@');
        own = apr_pstrcat(pool, apr_pstrmemdup(pool, address, (apr_size_t)(at - address)), "@",
                          b->cfg->server.domains.v[0], NULL);
    }
    if (!own || strcmp(own, address) == 0) return NULL;
    dir_entry_t *e = apr_pcalloc(pool, sizeof(*e));
    e->kind = DIR_KIND_ALIAS;
    e->address = address;
    e->targets = apr_array_make(pool, 1, sizeof(const char *));
    APR_ARRAY_PUSH(e->targets, const char *) = own;
    return e;
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
        if (addrs->nelts == 0) {
            /* The filter matched a value that is no usable address (a
             * stray space, an X500: form): nobody to deliver to. */
            pr_log_warn(NULL, "ldap: the entry for %s has no usable address", address);
            e = NULL;
            st = PR_ENOTFOUND;
        } else if (strcmp(APR_ARRAY_IDX(addrs, 0, const char *), address) == 0) {
            e->kind = DIR_KIND_MAILBOX;
        } else {
            /* Another address of the user: an alias of the mailbox. */
            e->kind = DIR_KIND_ALIAS;
            APR_ARRAY_PUSH(e->targets, const char *) = APR_ARRAY_IDX(addrs, 0, const char *);
        }
    } else if (st == APR_SUCCESS) {
        f = dir_ldap_filter_list(cfg->ldap.list_filter, &cfg->ldap.address_attributes, address,
                                 pool);
        rc = !f ? LDAP_SUCCESS
                : ldapb_search(b, sl, cfg->ldap.base, LDAP_SCOPE_SUBTREE, f, attrs, LDAPB_SIZELIMIT,
                               &es, pool);
        if (!f) {
            st = PR_ENOTFOUND;
        } else if ((st = ldapb_status(rc, "list search", f)) == APR_SUCCESS && es->nelts == 1 &&
                   (e = ldapb_list_alias(b, APR_ARRAY_IDX(es, 0, ldapb_entry_t *), address,
                                         pool))) {
            /* Another address of the list: an alias of it, so its posting
             * policy (kept under the list's own address) applies. */
        } else if (st == APR_SUCCESS && es->nelts == 1) {
            ldapb_members_t m = {.b = b,
                                 .sl = sl,
                                 .pool = pool,
                                 .domain = strchr(address, '@') + 1,
                                 .out = apr_array_make(pool, 8, sizeof(const char *)),
                                 .groups_seen = apr_hash_make(pool),
                                 .rc = LDAP_SUCCESS};
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
apr_status_t ldapb_find_login(ldapb_t *b, ldapb_slot_t *sl, const char *login, const char **dn_r,
                              const char **user_r, const char **tag_r, int *rc_r, apr_pool_t *pool)
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

static apr_status_t ldapb_authenticate_now(ldapb_t *b, const char *login, const char *password,
                                           const char **user_r, apr_pool_t *pool)
{
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

static void ldapb_authenticate_job(void *arg)
{
    ldapb_job_t *j = arg;
    j->st = ldapb_authenticate_now(j->b, j->login, j->password, j->user_r, j->pool);
}

static apr_status_t ldapb_authenticate(void *ctx, const char *login, const char *password,
                                       const char **user_r, apr_pool_t *pool)
{
    /* An empty password would be an unauthenticated bind (RFC 4513 5.1.2):
     * a "success" that proves nothing. */
    if (!password || !*password) return PR_EAUTH;
    ldapb_job_t job = {
        .b = ctx, .login = login, .password = password, .user_r = user_r, .pool = pool};
    pr_fiber_blocking(ldapb_authenticate_job, &job);
    return job.st;
}

/* The user and tag of a login, from the server. */
static void ldapb_auth_tag_job(void *arg)
{
    ldapb_job_t *j = arg;
    ldapb_slot_t *sl;
    if ((j->st = ldapb_acquire(j->b, &sl)) != APR_SUCCESS) return;
    const char *dn;
    int rc = LDAP_SUCCESS;
    j->st = ldapb_find_login(j->b, sl, j->login, &dn, j->user_r, j->tag_r, &rc, j->pool);
    ldapb_release(j->b, sl, rc);
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
    const char *user = NULL, *tag = NULL;
    ldapb_job_t job = {.b = b, .login = login, .user_r = &user, .tag_r = &tag, .pool = pool};
    pr_fiber_blocking(ldapb_auth_tag_job, &job);
    apr_status_t st = job.st;
    if (st == PR_EAUTH) st = PR_ENOTFOUND;
    if (st != APR_SUCCESS) return st;
    ldapb_cache_put(b, key, 1, 0, apr_pstrcat(pool, user, "\n", tag, NULL), b->cfg->ldap.cache_ttl);
    *user_r = user;
    *tag_r = tag;
    return APR_SUCCESS;
}

/* ---- listing and --check */

typedef struct ldapb_listing_t {
    ldapb_t *b;
    apr_pool_t *pool;          /* the caller's */
    apr_array_header_t *users; /* dir_user_t; NULL: only count */
    apr_hash_t *seen;          /* mailbox addresses listed */
    int n;                     /* entries met */
} ldapb_listing_t;

static int ldapb_listing_add(void *baton, const ldapb_entry_t *e, apr_pool_t *page)
{
    ldapb_listing_t *l = baton;
    l->n++;
    if (!l->users) return 0;
    apr_array_header_t *addrs = ldapb_user_addresses(l->b, e, page);
    if (addrs->nelts == 0) return 0; /* no mailbox: nobody to list */
    const char *a = APR_ARRAY_IDX(addrs, 0, const char *);
    if (apr_hash_get(l->seen, a, APR_HASH_KEY_STRING)) return 0;
    a = apr_pstrdup(l->pool, a);
    apr_hash_set(l->seen, a, APR_HASH_KEY_STRING, a);
    dir_user_t *u = apr_array_push(l->users);
    u->address = a;
    u->quota = -1; /* [store] default_quota: LDAP holds no quotas */
    u->enabled = 1;
    return 0;
}

static int ldapb_user_cmp(const void *x, const void *y)
{
    return strcmp(((const dir_user_t *)x)->address, ((const dir_user_t *)y)->address);
}

/* Every enabled user with a mailbox, by mailbox address, page by page. */
static apr_status_t ldapb_user_list(void *ctx, apr_array_header_t **users_r, apr_pool_t *pool)
{
    ldapb_t *b = ctx;
    const pr_strlist_t *aa = &b->cfg->ldap.address_attributes;
    const char **attrs = apr_pcalloc(pool, sizeof(*attrs) * (apr_size_t)(aa->n + 1));
    for (int i = 0; i < aa->n; i++)
        attrs[i] = aa->v[i];
    ldapb_slot_t *sl;
    apr_status_t st = ldapb_acquire(b, &sl);
    if (st != APR_SUCCESS) return st;
    ldapb_listing_t l = {.b = b,
                         .pool = pool,
                         .users = apr_array_make(pool, 64, sizeof(dir_user_t)),
                         .seen = apr_hash_make(pool)};
    const char *f = ldapb_user_objfilter(b, pool);
    int rc = ldapb_search_paged(b, sl->ld, f, attrs, ldapb_listing_add, &l, pool);
    ldapb_release(b, sl, rc);
    if (rc == LDAP_SIZELIMIT_EXCEEDED)
        pr_log_warn(NULL,
                    "ldap: user list: the server stopped at its size limit and does not "
                    "page; only %d users listed",
                    l.n);
    if ((st = ldapb_status(rc, "user list", f)) != APR_SUCCESS) return st;
    qsort(l.users->elts, (size_t)l.users->nelts, sizeof(dir_user_t), ldapb_user_cmp);
    *users_r = l.users;
    return APR_SUCCESS;
}

/* What went wrong, in a word, for --check; why as ldapb_connect_uri's. */
static const char *ldapb_check_class(int rc, const char *why)
{
    if (rc == LDAP_TIMEOUT || rc == LDAP_TIMELIMIT_EXCEEDED) return "timeout";
    if (strncmp(why, "StartTLS:", 9) == 0 || strstr(why, "TLS") || strstr(why, "certificate"))
        return "TLS failure";
    if (rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR) return "unreachable";
    if (strncmp(why, "bind:", 5) == 0) return "bind refused";
    return "failed";
}

/* An ldaps:// URI that could not be reached: does its host take a plain
 * TCP connection on that port? Then the TLS handshake failed (libldap
 * says only "Can't contact LDAP server" either way). */
static int ldapb_tcp_reachable(ldapb_t *b, const char *uri, apr_pool_t *pool)
{
    LDAPURLDesc *lud = NULL;
    LDAP *ld = NULL;
    int ok = 0;
    if (ldap_url_parse(uri, &lud) != LDAP_URL_SUCCESS || !lud->lud_host) goto done;
    const char *host = lud->lud_host;
    if (strchr(host, ':')) host = apr_pstrcat(pool, "[", host, "]", NULL);
    if (ldap_initialize(&ld, apr_psprintf(pool, "ldap://%s:%d", host, lud->lud_port)) !=
        LDAP_SUCCESS)
        goto done;
    struct timeval tv = ldapb_tv(b->cfg->ldap.timeout);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ok = ldap_connect(ld) == LDAP_SUCCESS;
done:
    if (ld) ldap_unbind_ext_s(ld, NULL, NULL);
    if (lud) ldap_free_urldesc(lud);
    return ok;
}

/* `postroomd --check`: connect to each URI in order as the pooled
 * connections do (TLS as configured, the service bind), then on the first
 * that takes the bind (the one the pool would use) read the base entry
 * and count the enabled users. */
static apr_status_t ldapb_check(void *ctx, const char **report_r, apr_pool_t *pool)
{
    ldapb_t *b = ctx;
    const pr_config_t *cfg = b->cfg;
    const char *dn = cfg->ldap.bind_dn && *cfg->ldap.bind_dn ? cfg->ldap.bind_dn : NULL;
    const char *base = cfg->ldap.base, *failed = NULL; /* the URIs before, and why */
    const char *const no_attrs[] = {"1.1", NULL};
    for (int i = 0; i < cfg->ldap.uri.n; i++) {
        const char *uri = cfg->ldap.uri.v[i];
        char why[512];
        LDAP *ld;
        int rc = ldapb_connect_uri(b, uri, dn, b->bind_password, &ld, why, sizeof(why));
        if (rc != LDAP_SUCCESS) {
            const char *class = ldapb_check_class(rc, why);
            if (strcmp(class, "unreachable") == 0 && strncasecmp(uri, "ldaps://", 8) == 0 &&
                strncmp(why, "connect:", 8) == 0 && ldapb_tcp_reachable(b, uri, pool))
                class = "TLS failure";
            const char *one = apr_psprintf(pool, "%s: %s (%s)", uri, class, why);
            failed = failed ? apr_pstrcat(pool, failed, "; ", one, NULL) : one;
            continue;
        }
        const char *tls = strncasecmp(uri, "ldaps://", 8) == 0 ? "ldaps"
                          : cfg->ldap.starttls                 ? "StartTLS"
                                                               : "no TLS";
        const char *r =
            apr_psprintf(pool, "ldap: bind ok as %s on %s (%s)", dn ? dn : "anonymous", uri, tls);
        if (failed) r = apr_psprintf(pool, "%s after %s", r, failed);
        apr_status_t st = PR_EINVAL;
        apr_array_header_t *es;
        rc = ldapb_search(b, &(ldapb_slot_t){.ld = ld}, base, LDAP_SCOPE_BASE, "(objectClass=*)",
                          no_attrs, 1, &es, pool);
        if (rc != LDAP_SUCCESS) {
            st = PR_ETEMPFAIL;
            r = apr_psprintf(pool, "%s; reading base %s: %s (%s)", r, base,
                             ldapb_check_class(rc, ""), ldap_err2string(rc));
        } else if (es->nelts == 0) {
            r = apr_psprintf(pool, "%s; base %s not found (or not readable as %s)", r, base,
                             dn ? dn : "anonymous");
        } else {
            ldapb_listing_t l = {.b = b};
            const char *f = ldapb_user_objfilter(b, pool);
            rc = ldapb_search_paged(b, ld, f, no_attrs, ldapb_listing_add, &l, pool);
            if (rc == LDAP_SUCCESS) {
                st = APR_SUCCESS;
                r = apr_psprintf(pool, "%s; base %s found; %d user%s visible", r, base, l.n,
                                 l.n == 1 ? "" : "s");
            } else if (rc == LDAP_SIZELIMIT_EXCEEDED) {
                st = APR_SUCCESS;
                r = apr_psprintf(pool,
                                 "%s; base %s found; at least %d users visible (the server "
                                 "stopped at its size limit and does not page)",
                                 r, base, l.n);
            } else {
                st = PR_ETEMPFAIL;
                r = apr_psprintf(pool, "%s; base %s found; counting users %s: %s (%s)", r, base, f,
                                 ldapb_check_class(rc, ""), ldap_err2string(rc));
            }
        }
        ldap_unbind_ext_s(ld, NULL, NULL);
        *report_r = r;
        return st;
    }
    *report_r = apr_psprintf(pool, "ldap: no server could be used: %s",
                             failed ? failed : "no uri configured");
    return PR_ETEMPFAIL;
}

/* Local domains are [server] domains only: LDAP holds no domain list. */
static apr_status_t ldapb_domain_is_local(void *ctx, const char *domain)
{
    (void)ctx;
    (void)domain;
    return PR_ENOTFOUND;
}

apr_status_t ldapb_read_secret(const char *path, const char **secret_r, apr_pool_t *pool)
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
    if (cfg->ldap.admin_bind_dn && *cfg->ldap.admin_bind_dn) {
        st = ldapb_read_secret(cfg->ldap.admin_bind_password_file, &b->admin_password, pool);
        if (st != APR_SUCCESS) {
            char buf[120];
            pr_log_error(NULL, "ldap: cannot read admin_bind_password_file %s: %s",
                         cfg->ldap.admin_bind_password_file, apr_strerror(st, buf, sizeof(buf)));
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
    /* Admin writes (dir_ldap_admin.c), with an admin bind only. */
    .caps_of = ldapb_caps_of,
    .user_add = ldapb_user_add,
    .user_set_password = ldapb_user_set_password,
    .user_del = ldapb_user_del,
    .alias_add = ldapb_alias_add,
    .alias_del = ldapb_alias_del,
    .list_member_add = ldapb_list_member_add,
    .list_member_del = ldapb_list_member_del,
    .user_list = ldapb_user_list,
    .check = ldapb_check,
};
