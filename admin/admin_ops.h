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

/* ---- The outbound queue (issue 5). A queue ID is what `queue list`
 * shows: a decimal number from 1; the operations take it as typed, so the
 * CLI and the HTTP API refuse a malformed one with the same message. */

/* How much of a queued message admin_queue_show reads for its header. */
#define ADMIN_QUEUE_HEADER_MAX 65536

typedef struct admin_qmsg_t {
    const store_qmsg_t *msg; /* id, sender, created, size, recipients (store_qrcpt_t) */
    /* The header section as it will be sent (our Received: line first),
     * raw bytes with CRLFs, up to and not including the empty line that
     * ends it; cut after the last whole line when longer than
     * ADMIN_QUEUE_HEADER_MAX. NUL-terminated. */
    const char *headers;
    apr_size_t headers_len;
    int headers_truncated;
} admin_qmsg_t;

/* Every queued message with all its recipients (any state), oldest first:
 * store_qmsg_t*. An empty queue is an empty array. */
apr_status_t admin_queue_list(admin_t *a, apr_array_header_t **out_r, const char **err_r,
                              apr_pool_t *p);
/* One message as in the list, with its header section. */
apr_status_t admin_queue_show(admin_t *a, const char *id, admin_qmsg_t **out_r, const char **err_r,
                              apr_pool_t *p);
/* Make every pending recipient due now; the daemon's queue runner picks
 * them up within a second. *pending_r (may be NULL): how many there are. */
apr_status_t admin_queue_flush(admin_t *a, apr_uint32_t *pending_r, const char **err_r,
                               apr_pool_t *p);
/* The same for the pending recipients of one message. */
apr_status_t admin_queue_retry(admin_t *a, const char *id, const char **err_r, apr_pool_t *p);
/* Remove a message from the queue for good, without a bounce to its sender. */
apr_status_t admin_queue_delete(admin_t *a, const char *id, const char **err_r, apr_pool_t *p);

#endif
