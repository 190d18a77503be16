/* Admin writes to the LDAP directory ([ldap] admin_bind_dn), for the
 * console and the CLI: add and delete users, set passwords, add and remove
 * a user's other addresses, add and remove list members. Without an admin
 * bind (the usual case with Active Directory) every write is PR_EPERM and
 * the built-in directory beside takes aliases and lists instead.
 *
 * Each write opens its own connection with the admin bind (writes are rare
 * and must never leave a pooled handle bound with admin rights), TLS as
 * configured. Passwords: RFC 3062 Password Modify on OpenLDAP, so slapd
 * hashes them by its own policy; AD's unicodePwd (the quoted password in
 * UTF-16LE), which AD accepts only over TLS and which is refused here on a
 * connection without it. DNs of new entries are built by libldap from an
 * RDN value (RFC 4514 escaping), never pasted from input. After a write
 * the answer cache is emptied, so this process sees it at once; a daemon
 * beside sees it after [ldap] cache_ttl. */
#include "directory/dir_ldap_int.h"
#include "directory/ldap_filter.h"
#include "service/core/log.h"
#include "service/core/status.h"

#include <apr_strings.h>
#include <string.h>

static int ldapw_is_ad(const ldapb_t *b)
{
    return b->cfg->ldap.preset == PR_LDAP_ACTIVEDIRECTORY;
}

unsigned ldapb_caps_of(void *ctx)
{
    ldapb_t *b = ctx;
    return b->admin_password ? DIR_CAP_WRITE_USERS : 0;
}

/* A write's connection: the admin bind, TLS as configured. */
typedef struct ldapw_t {
    ldapb_t *b;
    LDAP *ld;
    apr_pool_t *pool;
} ldapw_t;

static apr_status_t ldapw_open(ldapw_t *w, void *ctx, apr_pool_t *pool)
{
    ldapb_t *b = ctx;
    w->b = b;
    w->ld = NULL;
    w->pool = pool;
    if (!b->admin_password) return PR_EPERM;
    int rc = ldapb_connect(b, b->cfg->ldap.admin_bind_dn, b->admin_password, &w->ld);
    if (rc != LDAP_SUCCESS) {
        pr_log_warn(NULL, "ldap: admin bind as %s: %s", b->cfg->ldap.admin_bind_dn,
                    ldap_err2string(rc));
        return rc == LDAP_INVALID_CREDENTIALS || rc == LDAP_INSUFFICIENT_ACCESS ? PR_EPERM
                                                                                : PR_ETEMPFAIL;
    }
    return APR_SUCCESS;
}

/* Close; after a successful write, forget cached answers. */
static apr_status_t ldapw_close(ldapw_t *w, apr_status_t st)
{
    if (w->ld) ldap_unbind_ext_s(w->ld, NULL, NULL);
    w->ld = NULL;
    if (st == APR_SUCCESS) ldapb_cache_flush(w->b);
    return st;
}

/* A write's LDAP result as a status, logged with the server's words (a
 * password policy's complaint, an ACL refusal) for the admin. */
static apr_status_t ldapw_status(ldapw_t *w, int rc, const char *what, const char *dn)
{
    if (rc == LDAP_SUCCESS) return APR_SUCCESS;
    char *diag = NULL;
    ldap_get_option(w->ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
    pr_log_warn(NULL, "ldap: %s %s: %s%s%s", what, dn, ldap_err2string(rc),
                diag && *diag ? ": " : "", diag ? diag : "");
    if (diag) ldap_memfree(diag);
    switch (rc) {
    case LDAP_ALREADY_EXISTS:
    case LDAP_TYPE_OR_VALUE_EXISTS:
        return PR_EEXIST;
    case LDAP_NO_SUCH_OBJECT:
    case LDAP_NO_SUCH_ATTRIBUTE:
        return PR_ENOTFOUND;
    case LDAP_INSUFFICIENT_ACCESS:
    case LDAP_STRONG_AUTH_REQUIRED:
    case LDAP_CONFIDENTIALITY_REQUIRED:
        return PR_EPERM;
    default:
        return ldapb_rc_is_down(rc) && rc != LDAP_UNWILLING_TO_PERFORM ? PR_ETEMPFAIL : PR_EINVAL;
    }
}

static int ldapw_has_class(const ldapb_entry_t *e, const char *oc, apr_pool_t *pool)
{
    const apr_array_header_t *v = ldapb_values(e, "objectClass", pool);
    for (int i = 0; v && i < v->nelts; i++)
        if (strcasecmp(APR_ARRAY_IDX(v, i, const char *), oc) == 0) return 1;
    return 0;
}

/* The one entry filter f (NULL: none can match) finds; with its address
 * values. PR_ENOTFOUND, PR_ETEMPFAIL; more than one is PR_EINVAL. */
static apr_status_t ldapw_find_by(ldapw_t *w, const char *f, const char *address,
                                  const ldapb_entry_t **e_r)
{
    const pr_config_t *cfg = w->b->cfg;
    if (!f) return PR_ENOTFOUND;
    apr_array_header_t *es;
    int rc = ldapb_search(w->b, &(ldapb_slot_t){.ld = w->ld}, cfg->ldap.base, LDAP_SCOPE_SUBTREE, f,
                          ldapb_attr_list(w->b, w->pool), 2, &es, w->pool);
    apr_status_t st = ldapb_status(rc, "search", f);
    if (st != APR_SUCCESS) return st;
    if (es->nelts == 0) return PR_ENOTFOUND;
    if (es->nelts > 1) {
        pr_log_warn(NULL, "ldap: %s names more than one entry; not changed", address);
        return PR_EINVAL;
    }
    *e_r = APR_ARRAY_IDX(es, 0, ldapb_entry_t *);
    return APR_SUCCESS;
}

/* The entry matching objfilter with address among the address attributes
 * (the mailbox or another address). */
static apr_status_t ldapw_find(ldapw_t *w, const char *objfilter, const char *address,
                               const ldapb_entry_t **e_r)
{
    const pr_config_t *cfg = w->b->cfg;
    return ldapw_find_by(
        w, dir_ldap_filter_any(objfilter, &cfg->ldap.address_attributes, address, NULL, 0, w->pool),
        address, e_r);
}

/* The list with this address, as lookups find it (a nisMailAlias by cn). */
static apr_status_t ldapw_find_list(ldapw_t *w, const char *address, const ldapb_entry_t **e_r)
{
    const pr_config_t *cfg = w->b->cfg;
    return ldapw_find_by(w,
                         dir_ldap_filter_list(cfg->ldap.list_filter, &cfg->ldap.address_attributes,
                                              address, w->pool),
                         address, e_r);
}

/* The user (disabled ones too: an admin may reset their password) with
 * this address. */
static apr_status_t ldapw_find_user(ldapw_t *w, const char *address, const ldapb_entry_t **e_r)
{
    return ldapw_find(w, w->b->cfg->ldap.user_filter, address, e_r);
}

/* One modification of one attribute of dn: op LDAP_MOD_ADD, _DELETE or
 * _REPLACE; n values of given lengths. */
static int ldapw_modify(ldapw_t *w, const char *dn, int op, const char *attr,
                        const struct berval *vals, int n)
{
    struct berval **bv = apr_pcalloc(w->pool, sizeof(*bv) * (apr_size_t)(n + 1));
    for (int i = 0; i < n; i++)
        bv[i] = (struct berval *)&vals[i];
    LDAPMod mod = {.mod_op = op | LDAP_MOD_BVALUES, .mod_type = (char *)attr, .mod_bvalues = bv};
    LDAPMod *mods[] = {&mod, NULL};
    return ldap_modify_ext_s(w->ld, dn, mods, NULL, NULL);
}

static struct berval ldapw_bv(const char *s)
{
    struct berval v = {strlen(s), (char *)s};
    return v;
}

/* ---- passwords */

/* AD's unicodePwd value: the password in double quotes, as UTF-16LE.
 * NULL if the password is not valid UTF-8. */
static struct berval *ldapw_unicode_pwd(const char *password, apr_pool_t *pool)
{
    apr_size_t n = strlen(password);
    unsigned char *out = apr_palloc(pool, (n + 2) * 4);
    apr_size_t k = 0;
    const unsigned char *s = (const unsigned char *)password;
    out[k++] = '"';
    out[k++] = 0;
    for (apr_size_t i = 0; i < n;) {
        unsigned long c;
        int len;
        if (s[i] < 0x80) {
            c = s[i];
            len = 1;
        } else if ((s[i] & 0xe0) == 0xc0) {
            c = s[i] & 0x1f;
            len = 2;
        } else if ((s[i] & 0xf0) == 0xe0) {
            c = s[i] & 0x0f;
            len = 3;
        } else if ((s[i] & 0xf8) == 0xf0) {
            c = s[i] & 0x07;
            len = 4;
        } else {
            return NULL;
        }
        if (i + (apr_size_t)len > n) return NULL;
        for (int j = 1; j < len; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return NULL;
            c = (c << 6) | (s[i + j] & 0x3f);
        }
        static const unsigned long min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return NULL;
        i += (apr_size_t)len;
        if (c >= 0x10000) { /* a surrogate pair */
            c -= 0x10000;
            unsigned long hi = 0xd800 | (c >> 10), lo = 0xdc00 | (c & 0x3ff);
            out[k++] = (unsigned char)(hi & 0xff);
            out[k++] = (unsigned char)(hi >> 8);
            out[k++] = (unsigned char)(lo & 0xff);
            out[k++] = (unsigned char)(lo >> 8);
        } else {
            out[k++] = (unsigned char)(c & 0xff);
            out[k++] = (unsigned char)(c >> 8);
        }
    }
    out[k++] = '"';
    out[k++] = 0;
    struct berval *bv = apr_palloc(pool, sizeof(*bv));
    bv->bv_val = (char *)out;
    bv->bv_len = k;
    return bv;
}

/* AD takes unicodePwd only over TLS; refuse here rather than send a
 * password in clear and be refused after. */
static apr_status_t ldapw_need_tls(ldapw_t *w)
{
    if (ldap_tls_inplace(w->ld)) return APR_SUCCESS;
    pr_log_warn(NULL, "ldap: Active Directory passwords are set only over TLS (ldaps:// or "
                      "starttls = yes); not sent");
    return PR_ETLS;
}

static apr_status_t ldapw_set_password(ldapw_t *w, const char *dn, const char *password)
{
    if (ldapw_is_ad(w->b)) {
        apr_status_t st = ldapw_need_tls(w);
        if (st != APR_SUCCESS) return st;
        struct berval *pw = ldapw_unicode_pwd(password, w->pool);
        if (!pw) return PR_EINVAL;
        int rc = ldapw_modify(w, dn, LDAP_MOD_REPLACE, "unicodePwd", pw, 1);
        memset(pw->bv_val, 0, pw->bv_len);
        return ldapw_status(w, rc, "set unicodePwd of", dn);
    }
    /* RFC 3062: the server hashes the password by its own policy. */
    struct berval id = ldapw_bv(dn), pw = ldapw_bv(password), generated = {0, NULL};
    int rc = ldap_passwd_s(w->ld, &id, NULL, &pw, &generated, NULL, NULL);
    if (generated.bv_val) ber_memfree(generated.bv_val); /* none: we gave one */
    return ldapw_status(w, rc, "password modify of", dn);
}

/* ---- users */

/* "attr=value" as an RDN, escaped by libldap (RFC 4514), then ",base". */
static const char *ldapw_dn(ldapw_t *w, const char *attr, const char *value)
{
    LDAPAVA ava = {
        .la_attr = ldapw_bv(attr), .la_value = ldapw_bv(value), .la_flags = LDAP_AVA_STRING};
    LDAPAVA *rdn[] = {&ava, NULL};
    LDAPRDN dn[] = {rdn, NULL};
    char *s = NULL;
    if (ldap_dn2str(dn, &s, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS || !s) return NULL;
    const char *base =
        *w->b->cfg->ldap.admin_user_base ? w->b->cfg->ldap.admin_user_base : w->b->cfg->ldap.base;
    const char *out = apr_pstrcat(w->pool, s, ",", base, NULL);
    ldap_memfree(s);
    return out;
}

typedef struct ldapw_attr_t {
    const char *type;
    const char *values[5];
} ldapw_attr_t;

static int ldapw_add_entry(ldapw_t *w, const char *dn, const ldapw_attr_t *attrs, int n,
                           const struct berval *extra_bv, const char *extra_type)
{
    LDAPMod **mods = apr_pcalloc(w->pool, sizeof(*mods) * (apr_size_t)(n + 2));
    for (int i = 0; i < n; i++) {
        mods[i] = apr_pcalloc(w->pool, sizeof(**mods));
        mods[i]->mod_op = LDAP_MOD_ADD;
        mods[i]->mod_type = (char *)attrs[i].type;
        mods[i]->mod_values = (char **)attrs[i].values;
    }
    if (extra_bv) {
        struct berval **bv = apr_pcalloc(w->pool, sizeof(*bv) * 2);
        bv[0] = (struct berval *)extra_bv;
        mods[n] = apr_pcalloc(w->pool, sizeof(**mods));
        mods[n]->mod_op = LDAP_MOD_ADD | LDAP_MOD_BVALUES;
        mods[n]->mod_type = (char *)extra_type;
        mods[n]->mod_bvalues = bv;
    }
    return ldap_add_ext_s(w->ld, dn, mods, NULL, NULL);
}

apr_status_t ldapb_user_add(void *ctx, const char *address, const char *password)
{
    ldapw_t w;
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    apr_status_t st = ldapw_open(&w, ctx, pool);
    const ldapb_entry_t *e;
    if (st == APR_SUCCESS) {
        /* Any entry holding the address, user or list, makes it taken. */
        const char *any = apr_pstrcat(pool, "(|", w.b->cfg->ldap.user_filter,
                                      w.b->cfg->ldap.list_filter, ")", NULL);
        st = ldapw_find(&w, any, address, &e);
        st = st == APR_SUCCESS || st == PR_EINVAL ? PR_EEXIST
             : st == PR_ENOTFOUND                 ? APR_SUCCESS
                                                  : st;
    }
    const char *local = apr_pstrndup(pool, address, (apr_size_t)(strchr(address, '@') - address));
    if (st == APR_SUCCESS && ldapw_is_ad(w.b)) {
        /* AD: the password goes in with the entry (an enabled account
         * without one is refused); so TLS first. sAMAccountName has at most
         * 20 characters. */
        struct berval *pw = NULL;
        if ((st = ldapw_need_tls(&w)) == APR_SUCCESS && strlen(local) > 20) {
            pr_log_warn(NULL, "ldap: %s: an AD sAMAccountName has at most 20 characters", address);
            st = PR_EINVAL;
        }
        if (st == APR_SUCCESS && !(pw = ldapw_unicode_pwd(password, pool))) st = PR_EINVAL;
        const char *dn = st == APR_SUCCESS ? ldapw_dn(&w, "CN", local) : NULL;
        if (st == APR_SUCCESS && !dn) st = PR_EINVAL;
        if (st == APR_SUCCESS) {
            const ldapw_attr_t attrs[] = {
                {"objectClass", {"top", "user", NULL}}, /* AD adds the superclasses */
                {"cn", {local, NULL}},
                {"sAMAccountName", {local, NULL}},
                {"userPrincipalName", {address, NULL}},
                {"mail", {address, NULL}},
                {"proxyAddresses", {apr_pstrcat(pool, "SMTP:", address, NULL), NULL}},
                {"userAccountControl", {"512", NULL}}, /* a normal, enabled account */
            };
            int rc = ldapw_add_entry(&w, dn, attrs, (int)(sizeof(attrs) / sizeof(attrs[0])), pw,
                                     "unicodePwd");
            st = ldapw_status(&w, rc, "add user", dn);
        }
        if (pw) memset(pw->bv_val, 0, pw->bv_len);
    } else if (st == APR_SUCCESS) {
        const char *dn = ldapw_dn(&w, "uid", local);
        if (!dn) st = PR_EINVAL;
        if (st == APR_SUCCESS) {
            const ldapw_attr_t attrs[] = {
                {"objectClass", {"inetOrgPerson", NULL}},
                {"uid", {local, NULL}},
                {"cn", {local, NULL}},
                {"sn", {local, NULL}},
                {"mail", {address, NULL}},
            };
            int rc =
                ldapw_add_entry(&w, dn, attrs, (int)(sizeof(attrs) / sizeof(attrs[0])), NULL, NULL);
            st = ldapw_status(&w, rc, "add user", dn);
        }
        if (st == APR_SUCCESS && (st = ldapw_set_password(&w, dn, password)) != APR_SUCCESS) {
            /* No half-made user: one that exists but has no password. */
            int rc = ldap_delete_ext_s(w.ld, dn, NULL, NULL);
            if (rc != LDAP_SUCCESS) ldapw_status(&w, rc, "undo add user", dn);
        }
    }
    if (st == APR_SUCCESS) pr_log_info(NULL, "ldap: added user %s", address);
    st = ldapw_close(&w, st);
    apr_pool_destroy(pool);
    return st;
}

/* The user whose mailbox (first address) this is. */
static apr_status_t ldapw_find_mailbox(ldapw_t *w, const char *address, const ldapb_entry_t **e_r)
{
    apr_status_t st = ldapw_find_user(w, address, e_r);
    if (st != APR_SUCCESS) return st;
    apr_array_header_t *addrs = ldapb_user_addresses(w->b, *e_r, w->pool);
    if (addrs->nelts == 0 || strcmp(APR_ARRAY_IDX(addrs, 0, const char *), address) != 0)
        return PR_ENOTFOUND; /* another address of someone: not a user */
    return APR_SUCCESS;
}

apr_status_t ldapb_user_set_password(void *ctx, const char *address, const char *password)
{
    ldapw_t w;
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    apr_status_t st = ldapw_open(&w, ctx, pool);
    const ldapb_entry_t *e;
    if (st == APR_SUCCESS) st = ldapw_find_mailbox(&w, address, &e);
    if (st == APR_SUCCESS) st = ldapw_set_password(&w, e->dn, password);
    if (st == APR_SUCCESS) pr_log_info(NULL, "ldap: set the password of %s", address);
    st = ldapw_close(&w, st);
    apr_pool_destroy(pool);
    return st;
}

apr_status_t ldapb_user_del(void *ctx, const char *address)
{
    ldapw_t w;
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    apr_status_t st = ldapw_open(&w, ctx, pool);
    const ldapb_entry_t *e;
    if (st == APR_SUCCESS) st = ldapw_find_mailbox(&w, address, &e);
    if (st == APR_SUCCESS)
        st = ldapw_status(&w, ldap_delete_ext_s(w.ld, e->dn, NULL, NULL), "delete user", e->dn);
    if (st == APR_SUCCESS) pr_log_info(NULL, "ldap: deleted user %s (%s)", address, e->dn);
    st = ldapw_close(&w, st);
    apr_pool_destroy(pool);
    return st;
}

/* ---- other addresses of a user */

/* Where a user's other addresses are written: the second address
 * attribute (openldap: mailLocalAddress), else the only one; in AD's
 * proxyAddresses as "smtp:" (lower case: not the primary). */
static const char *ldapw_alias_attr(const ldapb_t *b)
{
    const pr_strlist_t *a = &b->cfg->ldap.address_attributes;
    return a->v[a->n > 1 ? 1 : 0];
}

static const char *ldapw_alias_value(ldapw_t *w, const char *attr, const char *address)
{
    if (strcasecmp(attr, "proxyAddresses") == 0)
        return apr_pstrcat(w->pool, "smtp:", address, NULL);
    return address;
}

apr_status_t ldapb_alias_add(void *ctx, const char *address, const char *const *targets, int n)
{
    ldapw_t w;
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    apr_status_t st = ldapw_open(&w, ctx, pool);
    const ldapb_entry_t *user = NULL, *taken;
    /* One more address of one user of ours; anything else (several
     * targets, an outside address, a list) is an alias of the built-in
     * directory. */
    if (st == APR_SUCCESS && n != 1) st = APR_ENOTIMPL;
    if (st == APR_SUCCESS) {
        st = ldapw_find_user(&w, targets[0], &user);
        if (st == PR_ENOTFOUND || st == PR_EINVAL) st = APR_ENOTIMPL;
    }
    if (st == APR_SUCCESS) {
        const char *any = apr_pstrcat(pool, "(|", w.b->cfg->ldap.user_filter,
                                      w.b->cfg->ldap.list_filter, ")", NULL);
        apr_status_t f = ldapw_find(&w, any, address, &taken);
        st = f == PR_ENOTFOUND ? APR_SUCCESS : f == APR_SUCCESS || f == PR_EINVAL ? PR_EEXIST : f;
    }
    if (st == APR_SUCCESS) {
        const char *attr = ldapw_alias_attr(w.b);
        struct berval v = ldapw_bv(ldapw_alias_value(&w, attr, address));
        struct berval *vals[] = {&v, NULL};
        char *classes[] = {"inetLocalMailRecipient", NULL};
        LDAPMod mod = {.mod_op = LDAP_MOD_ADD | LDAP_MOD_BVALUES,
                       .mod_type = (char *)attr,
                       .mod_bvalues = vals};
        LDAPMod oc = {.mod_op = LDAP_MOD_ADD, .mod_type = "objectClass", .mod_values = classes};
        /* mailLocalAddress is inetLocalMailRecipient's (the misc schema):
         * a plain inetOrgPerson, as user add makes, gets the class in the
         * same change. */
        int need_class = strcasecmp(attr, "mailLocalAddress") == 0 &&
                         !ldapw_has_class(user, "inetLocalMailRecipient", pool);
        LDAPMod *mods[] = {&mod, need_class ? &oc : NULL, NULL};
        st = ldapw_status(&w, ldap_modify_ext_s(w.ld, user->dn, mods, NULL, NULL),
                          "add address to", user->dn);
    }
    if (st == APR_SUCCESS)
        pr_log_info(NULL, "ldap: %s is now an address of %s", address, targets[0]);
    st = ldapw_close(&w, st);
    apr_pool_destroy(pool);
    return st;
}

apr_status_t ldapb_alias_del(void *ctx, const char *address)
{
    ldapw_t w;
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    apr_status_t st = ldapw_open(&w, ctx, pool);
    const ldapb_entry_t *user = NULL;
    if (st == APR_SUCCESS) st = ldapw_find_user(&w, address, &user);
    if (st == APR_SUCCESS) {
        apr_array_header_t *addrs = ldapb_user_addresses(w.b, user, pool);
        if (addrs->nelts && strcmp(APR_ARRAY_IDX(addrs, 0, const char *), address) == 0) {
            pr_log_warn(NULL, "ldap: %s is the mailbox of %s, not another address", address,
                        user->dn);
            st = PR_ENOTFOUND; /* a user, not an alias */
        }
    }
    /* Delete the stored value(s) spelling this address, whatever their
     * case or "smtp:" prefix, from every address attribute but the first. */
    const pr_strlist_t *attrs = st == APR_SUCCESS ? &w.b->cfg->ldap.address_attributes : NULL;
    int removed = 0;
    for (int i = 0; attrs && i < attrs->n && st == APR_SUCCESS; i++) {
        const apr_array_header_t *vals = ldapb_values(user, attrs->v[i], pool);
        for (int j = 0; vals && j < vals->nelts && st == APR_SUCCESS; j++) {
            const char *raw = APR_ARRAY_IDX(vals, j, const char *);
            int primary = 0;
            const char *a = dir_ldap_address_value(raw, &primary, pool);
            const char *norm = a ? dir_address_normalize(a, pool) : NULL;
            if (!norm || strcmp(norm, address) != 0 || primary || i == 0) continue;
            struct berval v = ldapw_bv(raw);
            st = ldapw_status(&w, ldapw_modify(&w, user->dn, LDAP_MOD_DELETE, attrs->v[i], &v, 1),
                              "remove address from", user->dn);
            removed += st == APR_SUCCESS;
        }
    }
    if (st == APR_SUCCESS && !removed) {
        pr_log_warn(NULL, "ldap: %s is a primary address of %s; not removed", address, user->dn);
        st = PR_ENOTFOUND;
    }
    if (st == APR_SUCCESS) pr_log_info(NULL, "ldap: %s is no longer an address", address);
    st = ldapw_close(&w, st);
    apr_pool_destroy(pool);
    return st;
}

/* ---- list members */


/* The attribute and value naming member in list g: an address in
 * rfc822MailMember (nisMailAlias), else the member's DN in the group's
 * member attribute (the first configured one the entry has: member,
 * uniqueMember). PR_ENOTFOUND if member must be an entry and is none. */
static apr_status_t ldapw_member_value(ldapw_t *w, const ldapb_entry_t *g, const char *member,
                                       const char **attr_r, const char **value_r)
{
    const pr_strlist_t *ma = &w->b->cfg->ldap.member_attributes;
    if (ldapw_has_class(g, "nisMailAlias", w->pool)) {
        *attr_r = "rfc822MailMember";
        *value_r = member;
        return APR_SUCCESS;
    }
    /* uniqueMember on a groupOfUniqueNames, else the first other one. */
    const char *attr = NULL;
    int unique = ldapw_has_class(g, "groupOfUniqueNames", w->pool);
    for (int i = 0; i < ma->n && !attr; i++)
        if (strcasecmp(ma->v[i], "uniqueMember") == 0 && unique) attr = ma->v[i];
    for (int i = 0; i < ma->n && !attr; i++)
        if (strcasecmp(ma->v[i], "rfc822MailMember") != 0 &&
            strcasecmp(ma->v[i], "uniqueMember") != 0)
            attr = ma->v[i];
    if (!attr) return PR_EINVAL;
    const char *any = apr_pstrcat(w->pool, "(|", w->b->cfg->ldap.user_filter,
                                  w->b->cfg->ldap.list_filter, ")", NULL);
    const ldapb_entry_t *m;
    apr_status_t st = ldapw_find(w, any, member, &m);
    if (st == PR_ENOTFOUND)
        pr_log_warn(NULL, "ldap: %s is not in the directory; a group's members are entries",
                    member);
    if (st != APR_SUCCESS) return st == PR_ENOTFOUND ? PR_EINVAL : st;
    *attr_r = attr;
    *value_r = m->dn;
    return APR_SUCCESS;
}

static apr_status_t ldapw_list_member(void *ctx, const char *list, const char *member, int op)
{
    ldapw_t w;
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    apr_status_t st = ldapw_open(&w, ctx, pool);
    const ldapb_entry_t *g;
    const char *attr, *value = NULL;
    if (st == APR_SUCCESS) st = ldapw_find_list(&w, list, &g);
    if (st == PR_EINVAL) st = PR_ENOTFOUND;
    if (st == APR_SUCCESS) st = ldapw_member_value(&w, g, member, &attr, &value);
    if (st == APR_SUCCESS && op == LDAP_MOD_DELETE) {
        /* The stored spelling (case) of the value, which a delete needs
         * for addresses; DNs match by the server's own rules. */
        const apr_array_header_t *vals = ldapb_values(g, attr, pool);
        for (int i = 0; vals && i < vals->nelts; i++)
            if (strcasecmp(APR_ARRAY_IDX(vals, i, const char *), value) == 0)
                value = APR_ARRAY_IDX(vals, i, const char *);
    }
    if (st == APR_SUCCESS) {
        struct berval v = ldapw_bv(value);
        int rc = ldapw_modify(&w, g->dn, op, attr, &v, 1);
        if (rc == LDAP_OBJECT_CLASS_VIOLATION && op == LDAP_MOD_DELETE)
            pr_log_warn(NULL, "ldap: %s: a group keeps at least one member", list);
        st = ldapw_status(&w, rc, op == LDAP_MOD_ADD ? "add member to" : "remove member from",
                          g->dn);
    }
    if (st == APR_SUCCESS)
        pr_log_info(NULL, "ldap: %s %s %s", member,
                    op == LDAP_MOD_ADD ? "added to" : "removed from", list);
    st = ldapw_close(&w, st);
    apr_pool_destroy(pool);
    return st;
}

apr_status_t ldapb_list_member_add(void *ctx, const char *list, const char *member)
{
    return ldapw_list_member(ctx, list, member, LDAP_MOD_ADD);
}

apr_status_t ldapb_list_member_del(void *ctx, const char *list, const char *member)
{
    return ldapw_list_member(ctx, list, member, LDAP_MOD_DELETE);
}
