/* Admin operations, implemented once: the `postroom` CLI calls them
 * in-process, the HTTP API (later) from inside the daemon. Each returns a
 * status and, on failure, one clear line in *err_r. */
#ifndef PR_ADMIN_OPS_H
#define PR_ADMIN_OPS_H

#include <apr_pools.h>
#include <apr_tables.h>
#include "service/core/config.h"
#include "directory/directory.h"
#include "service/store/store.h"

typedef struct admin_t admin_t;

/* Open the directory and the store of a config (store without a writer
 * thread when store is NULL; else use the given one, as in the daemon). */
apr_status_t admin_open(admin_t **a_r, const pr_config_t *cfg, dir_t *dir, store_t *store,
                        apr_pool_t *pool);
void admin_close(admin_t *a);

typedef struct admin_folder_t {
    const char *name;
    apr_uint32_t messages;
    apr_off_t size;
} admin_folder_t;

typedef struct admin_mailbox_t {
    const char *address;
    apr_array_header_t *folders; /* admin_folder_t */
    apr_uint32_t messages;
    apr_off_t size;
    apr_off_t used;       /* what the quota counts: the store's running total */
    apr_off_t quota;      /* the limit that applies, bytes; 0 = none */
    int quota_is_default; /* 1: [store] default_quota; 0: set for this user */
} admin_mailbox_t;

apr_status_t admin_domain_add(admin_t *a, const char *domain, const char **err_r, apr_pool_t *p);
apr_status_t admin_domain_del(admin_t *a, const char *domain, const char **err_r, apr_pool_t *p);
/* const char*: configured domains first, then added ones */
apr_status_t admin_domain_list(admin_t *a, apr_array_header_t **out_r, const char **err_r,
                               apr_pool_t *p);
apr_status_t admin_user_add(admin_t *a, const char *address, const char *password,
                            const char **err_r, apr_pool_t *p);
apr_status_t admin_user_passwd(admin_t *a, const char *address, const char *password,
                               const char **err_r, apr_pool_t *p);
/* quota: bytes, 0 = unlimited, -1 = back to [store] default_quota. */
apr_status_t admin_user_quota(admin_t *a, const char *address, apr_off_t quota, const char **err_r,
                              apr_pool_t *p);
apr_status_t admin_user_del(admin_t *a, const char *address, const char **err_r, apr_pool_t *p);
apr_status_t admin_user_list(admin_t *a, apr_array_header_t **out_r /* dir_user_t */,
                             const char **err_r, apr_pool_t *p);
apr_status_t admin_alias_add(admin_t *a, const char *address, const char *const *targets, int n,
                             const char **err_r, apr_pool_t *p);
apr_status_t admin_alias_del(admin_t *a, const char *address, const char **err_r, apr_pool_t *p);
apr_status_t admin_alias_list(admin_t *a, apr_array_header_t **out_r /* dir_entry_t* */,
                              const char **err_r, apr_pool_t *p);
apr_status_t admin_list_add(admin_t *a, const char *address, const char **err_r, apr_pool_t *p);
apr_status_t admin_list_del(admin_t *a, const char *address, const char **err_r, apr_pool_t *p);
apr_status_t admin_list_member_add(admin_t *a, const char *list, const char *member,
                                   const char **err_r, apr_pool_t *p);
apr_status_t admin_list_member_del(admin_t *a, const char *list, const char *member,
                                   const char **err_r, apr_pool_t *p);
/* Who may post: policy is "anyone", "members" or "local" (see
 * dir_post_policy_e); also for a list of a read-only backend. */
apr_status_t admin_list_policy(admin_t *a, const char *list, const char *policy, const char **err_r,
                               apr_pool_t *p);

typedef struct admin_list_t {
    const char *address;
    /* const char*; NULL: a list of the read-only backend, shown for the
     * policy set on it here (its members are kept there) */
    apr_array_header_t *members;
    dir_post_policy_e policy;
} admin_list_t;

/* The lists that can be changed here, and the read-only backend's lists
 * that have a policy, by address. */
apr_status_t admin_list_show(admin_t *a, apr_array_header_t **out_r /* admin_list_t */,
                             const char **err_r, apr_pool_t *p);
apr_status_t admin_mailbox_show(admin_t *a, const char *address, admin_mailbox_t **out_r,
                                const char **err_r, apr_pool_t *p);
/* A stored message as delivered (prefix then body), byte-exact, to read with
 * store_stream_read; folder NULL: INBOX. The stream lives in p. */
apr_status_t admin_message_open(admin_t *a, const char *address, const char *folder,
                                apr_uint32_t uid, store_stream_t **s_r, const char **err_r,
                                apr_pool_t *p);

#endif
