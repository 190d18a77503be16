/* Internals of the LDAP backend shared by its files (dir_ldap.c: lookups,
 * logins, the user list and --check; dir_ldap_admin.c: admin writes). Not a face:
 * only directory/dir_ldap*.c include this. */
#ifndef PR_DIR_LDAP_INT_H
#define PR_DIR_LDAP_INT_H

#include "directory/directory.h"

#include <apr_hash.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <ldap.h>

#define LDAPB_POOL_MAX 64
#define LDAPB_BACKOFF_MIN apr_time_from_sec(1)
#define LDAPB_BACKOFF_MAX apr_time_from_sec(30)
#define LDAPB_SIZELIMIT 2   /* a login or an address must name one entry */
#define LDAPB_GROUP_DEPTH 8 /* nested groups without an address of their own */
#define LDAPB_MEMBERS_MAX 5000
#define LDAPB_CACHE_MAX 20000 /* entries; when full, the cache starts over */
#define LDAPB_PAGE_SIZE 500    /* entries per page of a listing (RFC 2696) */
#define LDAPB_PIPELINE 32      /* member DNs looked at in one round trip */
#define LDAPB_RANGE_MAX 20000  /* values of one member attribute read by ranges */

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
    const char *bind_password;  /* from bind_password_file; NULL: anonymous */
    const char *admin_password; /* from admin_bind_password_file; NULL: read-only */
    apr_thread_mutex_t *mu;
    apr_thread_cond_t *freed;
    ldapb_slot_t slots[LDAPB_POOL_MAX];
    int n_slots;
    apr_time_t retry_at; /* no new connection before this (backoff) */
    apr_interval_time_t backoff;
} ldapb_t;

typedef struct ldapb_entry_t {
    const char *dn;
    apr_hash_t *attrs; /* lower-case attribute name -> apr_array_header_t of const char* */
} ldapb_entry_t;

/* Connections (dir_ldap.c). LDAP result codes unless said otherwise. */
struct timeval ldapb_tv(apr_interval_time_t t);
int ldapb_rc_is_down(int rc);
int ldapb_simple_bind(LDAP *ld, const char *dn, const char *password);
/* Connect to the first URI that answers, TLS as configured, and bind as
 * dn (NULL: no bind). */
int ldapb_connect(ldapb_t *b, const char *dn, const char *password, LDAP **ld_r);
/* One URI of ldapb_connect: connect (TCP, TLS for ldaps://), StartTLS as
 * configured, bind as dn (NULL: none). On failure *ld_r is NULL and why
 * gets the step that failed and why ("bind: Invalid credentials"). */
int ldapb_connect_uri(ldapb_t *b, const char *uri, const char *dn, const char *password,
                      LDAP **ld_r, char *why, apr_size_t why_size);
/* Borrow a pooled handle bound as the service: PR_ETEMPFAIL when none. */
apr_status_t ldapb_acquire(ldapb_t *b, ldapb_slot_t **sl_r);
void ldapb_release(ldapb_t *b, ldapb_slot_t *sl, int rc);
/* Forget every cached answer (after a write). */
void ldapb_cache_flush(ldapb_t *b);

/* Searches (dir_ldap.c). */
const char *ldapb_lower(apr_pool_t *pool, const char *s);
const apr_array_header_t *ldapb_values(const ldapb_entry_t *e, const char *attr, apr_pool_t *pool);
int ldapb_search(ldapb_t *b, ldapb_slot_t *sl, const char *base, int scope, const char *filter,
                 const char *const *attrs, int sizelimit, apr_array_header_t **entries_r,
                 apr_pool_t *pool);
/* A subtree search of base that may find many entries (listing,
 * counting), page by page; each entry to each (non-zero: stop). */
int ldapb_search_paged(ldapb_t *b, LDAP *ld, const char *filter, const char *const *attrs,
                       int (*each)(void *baton, const ldapb_entry_t *e, apr_pool_t *pool),
                       void *baton, apr_pool_t *pool);
apr_status_t ldapb_status(int rc, const char *what, const char *filter);
apr_array_header_t *ldapb_user_addresses(ldapb_t *b, const ldapb_entry_t *e, apr_pool_t *pool);
const char **ldapb_attr_list(ldapb_t *b, apr_pool_t *pool);
const char *ldapb_user_objfilter(ldapb_t *b, apr_pool_t *pool);
apr_status_t ldapb_find_login(ldapb_t *b, ldapb_slot_t *sl, const char *login, const char **dn_r,
                              const char **user_r, const char **tag_r, int *rc_r,
                              apr_pool_t *pool);
apr_status_t ldapb_read_secret(const char *path, const char **secret_r, apr_pool_t *pool);

/* Admin writes (dir_ldap_admin.c): the dir_backend_t entries. */
unsigned ldapb_caps_of(void *ctx);
apr_status_t ldapb_user_add(void *ctx, const char *address, const char *password);
apr_status_t ldapb_user_set_password(void *ctx, const char *address, const char *password);
apr_status_t ldapb_user_del(void *ctx, const char *address);
apr_status_t ldapb_alias_add(void *ctx, const char *address, const char *const *targets, int n);
apr_status_t ldapb_alias_del(void *ctx, const char *address);
apr_status_t ldapb_list_member_add(void *ctx, const char *list, const char *member);
apr_status_t ldapb_list_member_del(void *ctx, const char *list, const char *member);

#endif
