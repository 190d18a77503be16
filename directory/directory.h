/* The directory's face: who the users are, what an address resolves to, who
 * may send as whom. A const backend vtable (local SQLite, LDAP) sits behind
 * it; expansion of aliases and lists (loops, depth, duplicates) is done
 * once, here, for every backend. A temporary failure is never "unknown
 * user": it stops the lookup and becomes 451 / [SYS/TEMP].
 *
 * Beside a read-only backend (LDAP) the built-in directory
 * (data_dir/directory.db) is opened too, for aliases, lists and added
 * domains (issue 4: admins add lists and aliases without write rights in
 * AD). Its aliases and lists are consulted first and shadow the backend's
 * addresses of the same name; its users are ignored (users come from the
 * backend only). Expansion goes through the same combined lookup, so a
 * local list may hold LDAP users and LDAP groups. */
#ifndef PR_DIRECTORY_H
#define PR_DIRECTORY_H

#include <apr_pools.h>
#include <apr_tables.h>
#include "service/core/config.h"

#define DIR_MAX_DEPTH 8        /* alias/list nesting */
#define DIR_MAX_EXPANSION 5000 /* addresses one recipient may expand to */

typedef struct dir_t dir_t;

typedef enum {
    DIR_KIND_MAILBOX = 1, /* a user with a mailbox */
    DIR_KIND_ALIAS,       /* an address forwarding to targets */
    DIR_KIND_LIST,        /* a mailing list with members */
} dir_kind_e;

/* One level of lookup, as a backend answers it. */
typedef struct dir_entry_t {
    dir_kind_e kind;
    const char *address;         /* canonical address (lower case) */
    apr_array_header_t *targets; /* const char*: alias targets or list members */
    /* A mailbox: its user's quota as in dir_user_t, if the backend's lookup
     * tells it (has_quota); else dir_user_get does. */
    int has_quota;
    apr_off_t quota;
} dir_entry_t;

/* Who may post to a mailing list. Set per list address in the built-in
 * directory (also for a read-only backend's lists: admins cannot write to
 * AD, yet must restrict who posts to an AD group); none set: anyone. */
typedef enum {
    DIR_POST_ANYONE = 0, /* "anyone" */
    DIR_POST_MEMBERS,    /* "members": the envelope sender is one (see dir_post_allowed) */
    DIR_POST_LOCAL,      /* "local": an authenticated session; a claimed MAIL FROM never counts */
} dir_post_policy_e;

/* The name of a policy ("anyone", "members", "local"). */
const char *dir_post_policy_name(dir_post_policy_e policy);
/* A policy by name (exact, lower case). PR_EINVAL for any other. */
apr_status_t dir_post_policy_parse(dir_post_policy_e *policy_r, const char *name);

/* One list's policy. */
typedef struct dir_list_policy_t {
    const char *list; /* canonical address */
    dir_post_policy_e policy;
} dir_list_policy_t;

#define DIR_QUOTA_UNKNOWN ((apr_off_t)-2)

/* A fully expanded recipient. */
typedef struct dir_result_t {
    dir_kind_e kind;               /* what the address itself is */
    const char *address;           /* canonical address */
    apr_array_header_t *mailboxes; /* const char*: local users to deliver to (deduplicated) */
    apr_array_header_t *external;  /* const char*: non-local addresses to relay to */
    /* apr_off_t, one for each of mailboxes: its user's quota as in
     * dir_user_t, or DIR_QUOTA_UNKNOWN if the lookup did not tell it. */
    apr_array_header_t *quotas;
    /* dir_list_policy_t: the restricted lists (policy not DIR_POST_ANYONE)
     * whose policy this recipient is subject to: the address itself if it
     * is a list, and lists reached from it through aliases only; the
     * address itself first. Lists nested in a list are the outer list's
     * owner's choice and are not checked again. See dir_post_allowed. */
    apr_array_header_t *restricted;
} dir_result_t;

typedef struct dir_user_t {
    const char *address;
    apr_off_t quota; /* mailbox quota in bytes; -1: the default, 0: unlimited */
    int enabled;
} dir_user_t;

/* The backend interface, in the manner of Postfix's DICT. All functions are
 * called concurrently from many threads. Unknown: PR_ENOTFOUND. Backend
 * unreachable: PR_ETEMPFAIL. */
enum { DIR_CAP_WRITE = 1 };
/* dir_caps only, never a backend's: alias and list writes have somewhere
 * to go (the backend, or the built-in directory beside a read-only one). */
enum { DIR_CAP_WRITE_ALIASES = 2 };
/* A backend's caps_of (never its static caps): users are written to the
 * backend (add, delete, password), and so are the other addresses of its
 * users and the members of its lists; new aliases and lists still go to the
 * built-in directory beside it. LDAP with an admin bind. */
enum { DIR_CAP_WRITE_USERS = 4 };
typedef struct dir_backend_t {
    const char *name;
    unsigned caps;
    apr_status_t (*open)(void **ctx_r, const pr_config_t *cfg, apr_pool_t *pool);
    void (*close)(void *ctx);
    apr_status_t (*domain_is_local)(void *ctx, const char *domain);
    apr_status_t (*lookup)(void *ctx, const char *address, dir_entry_t **e_r, apr_pool_t *pool);
    /* login: address (or user name where configured). *user_r: canonical address. */
    apr_status_t (*authenticate)(void *ctx, const char *login, const char *password,
                                 const char **user_r, apr_pool_t *pool);
    /* Admin writes (DIR_CAP_WRITE). */
    apr_status_t (*domain_add)(void *ctx, const char *domain);
    apr_status_t (*domain_del)(void *ctx, const char *domain);
    apr_status_t (*domain_list)(void *ctx, apr_array_header_t **domains_r, apr_pool_t *pool);
    apr_status_t (*user_add)(void *ctx, const char *address, const char *password);
    apr_status_t (*user_set_password)(void *ctx, const char *address, const char *password);
    apr_status_t (*user_del)(void *ctx, const char *address);
    apr_status_t (*user_list)(void *ctx, apr_array_header_t **users_r /* dir_user_t */,
                              apr_pool_t *pool);
    apr_status_t (*alias_add)(void *ctx, const char *address, const char *const *targets, int n);
    apr_status_t (*alias_del)(void *ctx, const char *address);
    apr_status_t (*alias_list)(void *ctx, apr_array_header_t **aliases_r /* dir_entry_t* */,
                               apr_pool_t *pool);
    apr_status_t (*list_add)(void *ctx, const char *address);
    apr_status_t (*list_del)(void *ctx, const char *address);
    apr_status_t (*list_member_add)(void *ctx, const char *list, const char *member);
    apr_status_t (*list_member_del)(void *ctx, const char *list, const char *member);
    apr_status_t (*list_list)(void *ctx, apr_array_header_t **lists_r /* dir_entry_t* */,
                              apr_pool_t *pool);
    /* One user's settings; PR_ENOTFOUND if address is not a user. May be NULL
     * (then dir_user_get answers from lookup: default quota, enabled). */
    apr_status_t (*user_get)(void *ctx, const char *address, dir_user_t **u_r, apr_pool_t *pool);
    /* Optional, for the verified-credential cache (see dir_authenticate): a
     * cheap lookup (no password hashing) of an enabled user by login giving
     * its canonical address and a tag, a string that changes whenever the
     * stored credential does (the local backend gives the stored password
     * hash). The tag never leaves the process: only an HMAC of it is kept.
     * PR_ENOTFOUND: unknown or disabled; PR_ETEMPFAIL. Without it (NULL),
     * every login is checked in full. */
    apr_status_t (*auth_tag)(void *ctx, const char *login, const char **user_r, const char **tag_r,
                             apr_pool_t *pool);
    /* Admin write (DIR_CAP_WRITE): a user's mailbox quota in bytes; -1 = the
     * default ([store] default_quota), 0 = unlimited. PR_ENOTFOUND. */
    apr_status_t (*user_set_quota)(void *ctx, const char *address, apr_off_t quota);
    /* Optional: caps that depend on the backend's settings, ORed to caps
     * (DIR_CAP_WRITE_USERS). A backend with DIR_CAP_WRITE_USERS answers
     * APR_ENOTIMPL from alias_add when the alias is not one more address
     * of one of its users (the built-in directory then takes it), and
     * PR_ENOTFOUND from alias_del and list_member_* for addresses that
     * are not its own. */
    unsigned (*caps_of)(void *ctx);
    /* Posting policies by list address, whoever holds the list (see
     * dir_post_policy_e); the backend does not check that it is a list.
     * get: DIR_POST_ANYONE when none is set. set (DIR_CAP_WRITE):
     * DIR_POST_ANYONE forgets the address. list: those set, by address.
     * A backend that deletes a list of its own forgets its policy. */
    apr_status_t (*list_policy_get)(void *ctx, const char *list, dir_post_policy_e *policy_r,
                                    apr_pool_t *pool);
    apr_status_t (*list_policy_set)(void *ctx, const char *list, dir_post_policy_e policy);
    apr_status_t (*list_policy_list)(void *ctx,
                                     apr_array_header_t **policies_r /* dir_list_policy_t */,
                                     apr_pool_t *pool);
    /* Optional, for `postroomd --check` (dir_check): reach the data the
     * way the daemon will and say in one line what was found or why it
     * failed (e.g. "ldap: bind ok as DN on URI (StartTLS); base B found;
     * 12 users visible"). Any failure status fails the check. */
    apr_status_t (*check)(void *ctx, const char **report_r, apr_pool_t *pool);
} dir_backend_t;

extern const dir_backend_t dir_local_backend;
extern const dir_backend_t dir_ldap_backend;

/* Open the backend named by [directory] backend ("local": data_dir/directory.db),
 * and beside a backend without DIR_CAP_WRITE the built-in directory too.
 * PR_EINVAL for an unknown backend name. */
apr_status_t dir_open(dir_t **d_r, const pr_config_t *cfg, apr_pool_t *pool);
/* For tests: dir_open with primary in place of the backend [directory]
 * backend names, kept across dir_reload (a fake read-only backend shows the
 * built-in directory beside it without an LDAP server). */
apr_status_t dir_open_with(dir_t **d_r, const pr_config_t *cfg, const dir_backend_t *primary,
                           apr_pool_t *pool);
/* SIGHUP: reopen the backend with new settings (cfg must outlive the directory).
 * Calls in flight finish on the old backend; on failure the old one stays. */
apr_status_t dir_reload(dir_t *d, const pr_config_t *cfg);
void dir_close(dir_t *d);
/* `postroomd --check`: open the directory cfg names, reach its data as the
 * daemon will (LDAP: connect, bind, read the base, count the users; the
 * backend's check, else its user list) and close it again. *report_r:
 * one line saying what was found ("local directory: 3 users") or why it
 * failed. APR_SUCCESS, or the failure. */
apr_status_t dir_check(const pr_config_t *cfg, const char **report_r, apr_pool_t *pool);
/* The current backend and its context; valid only until the next dir_reload.
 * Prefer the dir_* calls below, which are safe against a concurrent reload. */
const dir_backend_t *dir_backend(const dir_t *d);
void *dir_backend_ctx(const dir_t *d);
/* The admin writes this directory takes: DIR_CAP_WRITE (users, domains:
 * the backend's own caps) and DIR_CAP_WRITE_ALIASES (aliases, lists). */
unsigned dir_caps(dir_t *d);

/* Lower-case and check an address "local@domain"; NULL if malformed. This is
 * the one normalisation every lookup uses. ASCII only; exactly one '@'; the
 * local part is a dot-atom without '%', '!' (no source routing through us),
 * at most 64 octets; the domain is a host name (A-labels for IDN). */
const char *dir_address_normalize(const char *address, apr_pool_t *pool);
/* Lower-case and check a domain name; NULL if malformed. */
const char *dir_domain_normalize(const char *domain, apr_pool_t *pool);

/* APR_SUCCESS: the domain is local ([server] domains or added with
 * `postroom domain add`); PR_ENOTFOUND: not local; PR_ETEMPFAIL. */
apr_status_t dir_domain_is_local(dir_t *d, const char *domain);

/* Resolve and fully expand a local address. PR_ENOTFOUND: unknown (or not in
 * a local domain); PR_EINVAL: malformed; PR_ETEMPFAIL: try later; PR_ETOOMANY:
 * expands to more than DIR_MAX_EXPANSION addresses; PR_ELOOP never (loops,
 * nesting deeper than DIR_MAX_DEPTH and dangling targets are cut and logged).
 * The arrays may be empty (a list without members). */
apr_status_t dir_resolve(dir_t *d, const char *address, dir_result_t **r_r, apr_pool_t *pool);

/* Check a password. APR_SUCCESS and *user_r = canonical address; PR_EAUTH
 * for unknown user or wrong password alike; PR_ETEMPFAIL.
 * Clients such as Outlook log in at every poll and the password hash is
 * slow on purpose, so a successful check is remembered for
 * [directory] auth_cache_ttl (0 = never) when the backend has auth_tag: per
 * login, HMAC-SHA256(per-process random key, tag || 0 || password). A later
 * login with the same password is accepted without the slow hash while the
 * entry is young and the backend's tag is unchanged, so a new password
 * (set by this process or another, e.g. `postroom user passwd`) or a
 * disabled account takes effect at once. At most DIR_AUTH_CACHE_MAX entries
 * (oldest go first); dir_reload empties it.
 * Failures are remembered too, for every backend and the same TTL (issue 4:
 * a phone retrying a stale password must not lock the account out of AD):
 * HMAC(same key, "fail" 0 login 0 tag 0 password), the tag empty without
 * auth_tag or for an unknown login. The same login with the same wrong
 * password is answered PR_EAUTH without asking the backend; any other
 * password (the right one included) goes to the backend, and a changed tag
 * (a new password, an enabled account) misses at once. A table of its own,
 * also bounded by DIR_AUTH_CACHE_MAX, so a spray of wrong passwords never
 * pushes verified logins out. Empty passwords are never cached. */
apr_status_t dir_authenticate(dir_t *d, const char *login, const char *password,
                              const char **user_r, apr_pool_t *pool);

#define DIR_AUTH_CACHE_MAX 10000

/* Counters of dir_authenticate, for tests and the console. */
typedef struct dir_auth_stats_t {
    apr_uint64_t verified;       /* full checks by the backend (the slow hash) */
    apr_uint64_t cached;         /* logins accepted from the cache */
    apr_uint32_t entries;        /* entries in the cache now */
    apr_uint64_t failed_cached;  /* logins refused from the failed-credential cache */
    apr_uint32_t failed_entries; /* entries in the failed-credential cache now */
} dir_auth_stats_t;
void dir_auth_stats(dir_t *d, dir_auth_stats_t *out);
/* Tests: bound each cache to max entries (default DIR_AUTH_CACHE_MAX). */
void dir_auth_cache_set_max(dir_t *d, int max);

/* May authenticated user send with this address as envelope sender / From:?
 * Yes for their own address, aliases that expand to them, and lists they are
 * a member of. APR_SUCCESS, PR_EPERM, or PR_ETEMPFAIL. */
apr_status_t dir_sender_allowed(dir_t *d, const char *user, const char *address, apr_pool_t *pool);

/* Password hashing (scrypt via OpenSSL, PHC-like string "$scrypt$ln=..,r=..,p=..$salt$hash"). */
apr_status_t dir_password_hash(const char **hash_r, const char *password, apr_pool_t *pool);
/* APR_SUCCESS if it matches, PR_EAUTH if not; constant-time compare. */
apr_status_t dir_password_verify(const char *hash, const char *password);

/* One level of lookup (no expansion): what the address itself is.
 * PR_ENOTFOUND, PR_EINVAL (malformed), PR_ETEMPFAIL. */
apr_status_t dir_lookup(dir_t *d, const char *address, dir_entry_t **e_r, apr_pool_t *pool);
/* dir_lookup in the one place alias and list writes go (DIR_CAP_WRITE_ALIASES):
 * the backend when writable, else the built-in directory beside it, whose
 * users are answered here although lookups ignore them. For admin checks
 * (is the name taken where it would be written?). PR_EPERM: nowhere. */
apr_status_t dir_lookup_writable(dir_t *d, const char *address, dir_entry_t **e_r,
                                 apr_pool_t *pool);
/* A user's settings (the backend's users only). PR_ENOTFOUND if the
 * address is not a user. */
apr_status_t dir_user_get(dir_t *d, const char *address, dir_user_t **u_r, apr_pool_t *pool);

/* Admin writes, safe against a concurrent dir_reload. Addresses are
 * normalised here (PR_EINVAL if malformed); PR_EPERM if the backend is
 * read-only. Checks that need a message for a human (local domain, target
 * exists) are the caller's (admin/); the backend enforces uniqueness:
 * PR_EEXIST, PR_ENOTFOUND. Aliases and lists (written and listed) go to the
 * built-in directory when the backend is read-only; users and domains do
 * not (PR_EPERM), though domains added before still count as local and are
 * listed. */
apr_status_t dir_domain_add(dir_t *d, const char *domain);
apr_status_t dir_domain_del(dir_t *d, const char *domain);
/* Domains added to the backend (not those of [server] domains). */
apr_status_t dir_domain_list(dir_t *d, apr_array_header_t **domains_r, apr_pool_t *pool);
apr_status_t dir_user_add(dir_t *d, const char *address, const char *password);
apr_status_t dir_user_set_password(dir_t *d, const char *address, const char *password);
/* quota: bytes, 0 = unlimited, -1 = the default; PR_EINVAL below -1. */
apr_status_t dir_user_set_quota(dir_t *d, const char *address, apr_off_t quota);
apr_status_t dir_user_del(dir_t *d, const char *address);
apr_status_t dir_user_list(dir_t *d, apr_array_header_t **users_r /* dir_user_t */,
                           apr_pool_t *pool);
/* Adds the targets to the alias (creating it); PR_EEXIST if all were there. */
apr_status_t dir_alias_add(dir_t *d, const char *address, const char *const *targets, int n);
apr_status_t dir_alias_del(dir_t *d, const char *address);
apr_status_t dir_alias_list(dir_t *d, apr_array_header_t **aliases_r /* dir_entry_t* */,
                            apr_pool_t *pool);
apr_status_t dir_list_add(dir_t *d, const char *address);
apr_status_t dir_list_del(dir_t *d, const char *address);
apr_status_t dir_list_member_add(dir_t *d, const char *list, const char *member);
apr_status_t dir_list_member_del(dir_t *d, const char *list, const char *member);
apr_status_t dir_list_list(dir_t *d, apr_array_header_t **lists_r /* dir_entry_t* */,
                           apr_pool_t *pool);
/* A list's posting policy, kept where list writes go (the built-in
 * directory beside a read-only backend), also for the backend's lists.
 * PR_ENOTFOUND if the address is not a list (dir_lookup: a list of the
 * read-only backend counts), PR_EINVAL, PR_EPERM, PR_ETEMPFAIL.
 * dir_list_del forgets it; a list of the backend keeps it until set to
 * DIR_POST_ANYONE. */
apr_status_t dir_list_set_policy(dir_t *d, const char *list, dir_post_policy_e policy);
/* DIR_POST_ANYONE when none is set (any address). PR_EINVAL, PR_ETEMPFAIL. */
apr_status_t dir_list_get_policy(dir_t *d, const char *list, dir_post_policy_e *policy_r);
/* The policies set (not DIR_POST_ANYONE), by address; they may name lists
 * deleted from the read-only backend since. */
apr_status_t dir_list_policies(dir_t *d, apr_array_header_t **policies_r /* dir_list_policy_t */,
                               apr_pool_t *pool);

/* May this message go to a resolved recipient (dir_resolve's r), by the
 * policies of r->restricted? "members": the envelope sender (normalised;
 * the null sender "" never is one) is among the list's expanded
 * recipients (mailboxes or external), or is a local address resolving to
 * mailboxes only, all of them the list's (a member writing from an alias
 * of hers). "local": auth_user (the session's authenticated user) is not
 * NULL. APR_SUCCESS; PR_EPERM and *refused_r the first list that refuses;
 * PR_ETEMPFAIL. */
apr_status_t dir_post_allowed(dir_t *d, const dir_result_t *r, const char *sender,
                              const char *auth_user, const dir_list_policy_t **refused_r,
                              apr_pool_t *pool);

#endif
