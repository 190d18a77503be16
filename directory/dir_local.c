/* The "local" directory backend: users, aliases, lists and added domains in
 * SQLite (<data_dir>/directory.db, WAL), shared safely between the daemon
 * and the `postroom` CLI. Many session threads call it at once, so each
 * call borrows a connection from a small pool; no lock is held while a
 * query runs or a password is hashed. */
#include "directory/directory.h"
#include "directory/dir_internal.h"
#include "service/core/log.h"
#include "service/core/status.h"

#include <apr_file_info.h>
#include <apr_file_io.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define LOCAL_DB_NAME "directory.db"
#define LOCAL_BUSY_TIMEOUT_MS 10000 /* the CLI and the daemon may write at once */
#define LOCAL_MAX_IDLE 32           /* connections kept open between calls */
#define LOCAL_MAX_STMTS 48          /* prepared statements cached per connection */

/* Numbered migrations: migration i brings the schema to version i + 1
 * (PRAGMA user_version). Never edit one that has shipped; append. */
static const char *const local_migrations[] = {
    "CREATE TABLE domains(domain TEXT PRIMARY KEY NOT NULL);"
    "CREATE TABLE users(address TEXT PRIMARY KEY NOT NULL,"
    "  password_hash TEXT NOT NULL,"
    "  quota INTEGER NOT NULL DEFAULT -1,"
    "  enabled INTEGER NOT NULL DEFAULT 1);"
    "CREATE TABLE aliases(address TEXT NOT NULL, target TEXT NOT NULL,"
    "  UNIQUE(address, target));"
    "CREATE TABLE lists(address TEXT PRIMARY KEY NOT NULL);"
    "CREATE TABLE list_members(list TEXT NOT NULL REFERENCES lists(address) ON DELETE CASCADE,"
    "  member TEXT NOT NULL, UNIQUE(list, member));"
    "CREATE INDEX list_members_member ON list_members(member);",
    /* 2: posting policies, by address and not tied to lists(address): a
     * read-only backend's lists have them too. No row: anyone. */
    "CREATE TABLE list_policy(address TEXT PRIMARY KEY NOT NULL, policy TEXT NOT NULL);",
};
#define LOCAL_SCHEMA_VERSION ((int)(sizeof(local_migrations) / sizeof(local_migrations[0])))

/* "Is this address already something?" across the three kinds, so one
 * address is never both a user and an alias or list. */
#define LOCAL_SQL_TAKEN                                                                            \
    "SELECT 'user' FROM users WHERE address = ?1 UNION ALL "                                       \
    "SELECT 'alias' FROM aliases WHERE address = ?1 UNION ALL "                                    \
    "SELECT 'list' FROM lists WHERE address = ?1 LIMIT 1"

typedef struct local_stmt_t {
    const char *sql; /* a static string: its pointer is the cache key */
    sqlite3_stmt *stmt;
} local_stmt_t;

typedef struct local_conn_t {
    sqlite3 *db;
    local_stmt_t stmts[LOCAL_MAX_STMTS];
    int n_stmts;
    struct local_conn_t *next;
} local_conn_t;

typedef struct local_t {
    apr_pool_t *pool;
    const char *path;
    apr_thread_mutex_t *mutex; /* guards idle and n_idle only */
    local_conn_t *idle;
    int n_idle;
    const char *dummy_hash; /* verified for unknown users so timing tells nothing */
} local_t;

/* ---- connections */

static void local_conn_close(local_conn_t *c)
{
    for (int i = 0; i < c->n_stmts; i++)
        sqlite3_finalize(c->stmts[i].stmt);
    sqlite3_close(c->db);
    free(c);
}

static apr_status_t local_err(sqlite3 *db, int rc, const char *what)
{
    if ((rc & 0xff) == SQLITE_CONSTRAINT) return PR_EEXIST;
    pr_log_warn(NULL, "directory.db: %s: %s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return PR_ETEMPFAIL;
}

static apr_status_t local_conn_open(local_conn_t **c_r, const char *path)
{
    /* malloc, not a pool: connections outlive any one call's pool and are
     * handed between threads. */
    local_conn_t *c = calloc(1, sizeof(*c));
    int rc;

    if (!c) abort();
    rc = sqlite3_open_v2(path, &c->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        apr_status_t st = local_err(c->db, rc, path);
        local_conn_close(c);
        return st;
    }
    sqlite3_busy_timeout(c->db, LOCAL_BUSY_TIMEOUT_MS);
    /* synchronous=FULL: an admin change reported done survives a power cut. */
    rc = sqlite3_exec(c->db, "PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL;", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        apr_status_t st = local_err(c->db, rc, "pragmas");
        local_conn_close(c);
        return st;
    }
    *c_r = c;
    return APR_SUCCESS;
}

static apr_status_t local_conn_get(local_t *l, local_conn_t **c_r)
{
    local_conn_t *c;
    apr_thread_mutex_lock(l->mutex);
    c = l->idle;
    if (c) {
        l->idle = c->next;
        l->n_idle--;
    }
    apr_thread_mutex_unlock(l->mutex);
    if (c) {
        *c_r = c;
        return APR_SUCCESS;
    }
    return local_conn_open(c_r, l->path);
}

static void local_conn_put(local_t *l, local_conn_t *c)
{
    /* A call that failed half-way must not leave a transaction open for the
     * next borrower. */
    if (!sqlite3_get_autocommit(c->db)) sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    apr_thread_mutex_lock(l->mutex);
    if (l->n_idle < LOCAL_MAX_IDLE) {
        c->next = l->idle;
        l->idle = c;
        l->n_idle++;
        c = NULL;
    }
    apr_thread_mutex_unlock(l->mutex);
    if (c) local_conn_close(c);
}

/* A cached prepared statement, reset and unbound, ready for binding. */
static apr_status_t local_stmt(local_conn_t *c, const char *sql, sqlite3_stmt **s_r)
{
    for (int i = 0; i < c->n_stmts; i++) {
        if (c->stmts[i].sql == sql) {
            sqlite3_reset(c->stmts[i].stmt);
            sqlite3_clear_bindings(c->stmts[i].stmt);
            *s_r = c->stmts[i].stmt;
            return APR_SUCCESS;
        }
    }
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) return local_err(c->db, rc, "prepare");
    if (c->n_stmts < LOCAL_MAX_STMTS) {
        c->stmts[c->n_stmts].sql = sql;
        c->stmts[c->n_stmts].stmt = s;
        c->n_stmts++;
    } else {
        /* Should not happen (the statements are few); keep it working. */
        sqlite3_finalize(c->stmts[0].stmt);
        c->stmts[0].sql = sql;
        c->stmts[0].stmt = s;
    }
    *s_r = s;
    return APR_SUCCESS;
}

/* Run a statement with up to two text parameters to completion.
 * *changes_r (may be NULL): rows changed. */
static apr_status_t local_run(local_conn_t *c, const char *sql, const char *a, const char *b,
                              int *changes_r)
{
    sqlite3_stmt *s;
    apr_status_t st = local_stmt(c, sql, &s);
    int rc;
    if (st != APR_SUCCESS) return st;
    if (a) sqlite3_bind_text(s, 1, a, -1, SQLITE_STATIC);
    if (b) sqlite3_bind_text(s, 2, b, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return local_err(c->db, rc, "step");
    if (changes_r) *changes_r = sqlite3_changes(c->db);
    return APR_SUCCESS;
}

/* The first column of the first row as text (pool copy), or PR_ENOTFOUND. */
static apr_status_t local_get_text(local_conn_t *c, const char *sql, const char *a,
                                   const char **out_r, apr_pool_t *pool)
{
    sqlite3_stmt *s;
    apr_status_t st = local_stmt(c, sql, &s);
    int rc;
    if (st != APR_SUCCESS) return st;
    sqlite3_bind_text(s, 1, a, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(s, 0);
        if (out_r) *out_r = apr_pstrdup(pool, t ? t : "");
        st = APR_SUCCESS;
    } else if (rc == SQLITE_DONE) {
        st = PR_ENOTFOUND;
    } else {
        st = local_err(c->db, rc, "step");
    }
    sqlite3_reset(s);
    return st;
}

static apr_status_t local_begin(local_conn_t *c)
{
    /* IMMEDIATE: take the write lock up front, so the checks made inside
     * the transaction still hold when it commits. */
    int rc = sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    return rc == SQLITE_OK ? APR_SUCCESS : local_err(c->db, rc, "begin");
}

static apr_status_t local_end(local_conn_t *c, apr_status_t st)
{
    if (st == APR_SUCCESS) {
        int rc = sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) st = local_err(c->db, rc, "commit");
    }
    if (!sqlite3_get_autocommit(c->db)) sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

/* ---- open, schema */

static apr_status_t local_migrate(local_conn_t *c, const char *path)
{
    sqlite3_stmt *s;
    int version = 0, rc;
    apr_status_t st;

    /* WAL: readers (sessions) never wait for a writer (the CLI). Persistent
     * in the file; set outside any transaction. */
    rc = sqlite3_exec(c->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    if (rc != SQLITE_OK) return local_err(c->db, rc, "journal_mode");
    if ((st = local_begin(c)) != APR_SUCCESS) return st;
    rc = sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &s, NULL);
    if (rc == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        version = sqlite3_column_int(s, 0);
    else
        st = local_err(c->db, rc, "user_version");
    sqlite3_finalize(s);
    if (st == APR_SUCCESS && version > LOCAL_SCHEMA_VERSION) {
        pr_log_error(NULL, "%s: schema version %d is newer than this Postroom knows (%d)", path,
                     version, LOCAL_SCHEMA_VERSION);
        st = PR_EINVAL;
    }
    for (int v = version; st == APR_SUCCESS && v < LOCAL_SCHEMA_VERSION; v++) {
        rc = sqlite3_exec(c->db, local_migrations[v], NULL, NULL, NULL);
        if (rc != SQLITE_OK) st = local_err(c->db, rc, "migration");
    }
    if (st == APR_SUCCESS && version < LOCAL_SCHEMA_VERSION) {
        char sql[48];
        apr_snprintf(sql, sizeof(sql), "PRAGMA user_version=%d", LOCAL_SCHEMA_VERSION);
        rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) st = local_err(c->db, rc, "user_version");
    }
    return local_end(c, st);
}

static apr_status_t local_cleanup(void *data)
{
    local_t *l = data;
    while (l->idle) {
        local_conn_t *c = l->idle;
        l->idle = c->next;
        local_conn_close(c);
    }
    l->n_idle = 0;
    return APR_SUCCESS;
}

static apr_status_t local_open(void **ctx_r, const pr_config_t *cfg, apr_pool_t *pool)
{
    local_t *l = apr_pcalloc(pool, sizeof(*l));
    local_conn_t *c;
    apr_finfo_t fi;
    apr_status_t st;
    int created;

    if (!sqlite3_threadsafe()) {
        pr_log_error(NULL, "directory: SQLite was built without thread support");
        return PR_EINVAL;
    }
    l->pool = pool;
    st = apr_dir_make_recursive(cfg->server.data_dir, APR_FPROT_OS_DEFAULT, pool);
    if (st != APR_SUCCESS) {
        pr_log_error(NULL, "directory: cannot create %s", cfg->server.data_dir);
        return PR_ETEMPFAIL;
    }
    st = apr_filepath_merge((char **)&l->path, cfg->server.data_dir, LOCAL_DB_NAME, 0, pool);
    if (st != APR_SUCCESS) return PR_EINVAL;
    if ((st = apr_thread_mutex_create(&l->mutex, APR_THREAD_MUTEX_DEFAULT, pool)) != APR_SUCCESS)
        return st;
    if ((st = dir_password_hash(&l->dummy_hash, "postroom-no-such-user", pool)) != APR_SUCCESS)
        return st;

    created = apr_stat(&fi, l->path, APR_FINFO_TYPE, pool) != APR_SUCCESS;
    if ((st = local_conn_open(&c, l->path)) != APR_SUCCESS) return st;
    /* It holds password hashes: owner only. SQLite gives the -wal and -shm
     * files the database file's mode. */
    if (created) apr_file_perms_set(l->path, APR_FPROT_UREAD | APR_FPROT_UWRITE);
    if ((st = local_migrate(c, l->path)) != APR_SUCCESS) {
        local_conn_close(c);
        return st;
    }
    l->idle = c;
    l->n_idle = 1;
    apr_pool_cleanup_register(pool, l, local_cleanup, apr_pool_cleanup_null);
    *ctx_r = l;
    return APR_SUCCESS;
}

static void local_close(void *ctx)
{
    local_t *l = ctx;
    apr_pool_cleanup_run(l->pool, l, local_cleanup);
}

/* ---- reads */

static apr_status_t local_domain_is_local(void *ctx, const char *domain)
{
    local_t *l = ctx;
    local_conn_t *c;
    char d[PR_ADDR_MAX_DOMAIN + 1];
    apr_status_t st;

    if (!dir_domain_normalize_buf(d, sizeof(d), domain)) return PR_ENOTFOUND;
    if ((st = local_conn_get(l, &c)) != APR_SUCCESS) return st;
    st = local_get_text(c, "SELECT domain FROM domains WHERE domain = ?1", d, NULL, NULL);
    local_conn_put(l, c);
    return st;
}

/* All rows' first column of a one-parameter query, appended to arr. */
static apr_status_t local_get_column(local_conn_t *c, const char *sql, const char *a,
                                     apr_array_header_t *arr, apr_pool_t *pool)
{
    sqlite3_stmt *s;
    apr_status_t st = local_stmt(c, sql, &s);
    int rc;
    if (st != APR_SUCCESS) return st;
    if (a) sqlite3_bind_text(s, 1, a, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        APR_ARRAY_PUSH(arr, const char *) =
            apr_pstrdup(pool, (const char *)sqlite3_column_text(s, 0));
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? APR_SUCCESS : local_err(c->db, rc, "step");
}

static apr_status_t local_lookup_conn(local_conn_t *c, const char *a, dir_entry_t **e_r,
                                      apr_pool_t *pool)
{
    dir_entry_t *e = apr_pcalloc(pool, sizeof(*e));
    apr_status_t st;

    e->address = apr_pstrdup(pool, a);
    e->targets = apr_array_make(pool, 0, sizeof(const char *));
    const char *quota;
    st = local_get_text(c, "SELECT quota FROM users WHERE address = ?1", a, &quota, pool);
    if (st == APR_SUCCESS) {
        e->kind = DIR_KIND_MAILBOX;
        e->has_quota = 1;
        e->quota = (apr_off_t)apr_atoi64(quota);
    } else if (st == PR_ENOTFOUND) {
        st = local_get_column(c, "SELECT target FROM aliases WHERE address = ?1 ORDER BY rowid", a,
                              e->targets, pool);
        if (st == APR_SUCCESS && e->targets->nelts > 0) {
            e->kind = DIR_KIND_ALIAS;
        } else if (st == APR_SUCCESS) {
            st = local_get_text(c, "SELECT address FROM lists WHERE address = ?1", a, NULL, NULL);
            if (st == APR_SUCCESS) {
                e->kind = DIR_KIND_LIST;
                st = local_get_column(
                    c, "SELECT member FROM list_members WHERE list = ?1 ORDER BY rowid", a,
                    e->targets, pool);
            }
        }
    }
    if (st == APR_SUCCESS) *e_r = e;
    return st;
}

static apr_status_t local_lookup(void *ctx, const char *address, dir_entry_t **e_r,
                                 apr_pool_t *pool)
{
    local_t *l = ctx;
    local_conn_t *c;
    char a[DIR_ADDRESS_MAX + 1];
    apr_status_t st;

    if (!dir_address_normalize_buf(a, sizeof(a), address)) return PR_ENOTFOUND;
    if ((st = local_conn_get(l, &c)) != APR_SUCCESS) return st;
    st = local_lookup_conn(c, a, e_r, pool);
    local_conn_put(l, c);
    return st;
}

static dir_user_t *local_user_row(sqlite3_stmt *s, apr_pool_t *pool)
{
    dir_user_t *u = apr_pcalloc(pool, sizeof(*u));
    u->address = apr_pstrdup(pool, (const char *)sqlite3_column_text(s, 0));
    u->quota = (apr_off_t)sqlite3_column_int64(s, 1);
    u->enabled = sqlite3_column_int(s, 2) != 0;
    return u;
}

static apr_status_t local_user_get(void *ctx, const char *address, dir_user_t **u_r,
                                   apr_pool_t *pool)
{
    static const char sql[] = "SELECT address, quota, enabled FROM users WHERE address = ?1";
    local_t *l = ctx;
    local_conn_t *c;
    sqlite3_stmt *s;
    char a[DIR_ADDRESS_MAX + 1];
    apr_status_t st;
    int rc;

    if (!dir_address_normalize_buf(a, sizeof(a), address)) return PR_ENOTFOUND;
    if ((st = local_conn_get(l, &c)) != APR_SUCCESS) return st;
    if ((st = local_stmt(c, sql, &s)) == APR_SUCCESS) {
        sqlite3_bind_text(s, 1, a, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW)
            *u_r = local_user_row(s, pool);
        else if (rc == SQLITE_DONE)
            st = PR_ENOTFOUND;
        else
            st = local_err(c->db, rc, "step");
        sqlite3_reset(s);
    }
    local_conn_put(l, c);
    return st;
}

/* Shared by authenticate and auth_tag: one prepared statement for both. */
static const char local_sql_credential[] =
    "SELECT password_hash, enabled FROM users WHERE address = ?1";

/* The stored hash is the tag: it has a fresh random salt each time a
 * password is set (even to the same one), so any change shows. */
static apr_status_t local_auth_tag(void *ctx, const char *login, const char **user_r,
                                   const char **tag_r, apr_pool_t *pool)
{
    local_t *l = ctx;
    local_conn_t *c;
    sqlite3_stmt *s;
    char a[DIR_ADDRESS_MAX + 1];
    apr_status_t st;
    int rc;

    if (!dir_address_normalize_buf(a, sizeof(a), login)) return PR_ENOTFOUND;
    if ((st = local_conn_get(l, &c)) != APR_SUCCESS) return st;
    if ((st = local_stmt(c, local_sql_credential, &s)) == APR_SUCCESS) {
        sqlite3_bind_text(s, 1, a, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW && sqlite3_column_int(s, 1) != 0) {
            const char *h = (const char *)sqlite3_column_text(s, 0);
            *tag_r = apr_pstrdup(pool, h ? h : "");
            *user_r = apr_pstrdup(pool, a);
        } else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
            st = PR_ENOTFOUND; /* unknown or disabled */
        } else {
            st = local_err(c->db, rc, "step");
        }
        sqlite3_reset(s);
    }
    local_conn_put(l, c);
    return st;
}

static apr_status_t local_authenticate(void *ctx, const char *login, const char *password,
                                       const char **user_r, apr_pool_t *pool)
{
    const char *sql = local_sql_credential;
    local_t *l = ctx;
    local_conn_t *c;
    sqlite3_stmt *s;
    char a[DIR_ADDRESS_MAX + 1];
    const char *hash = NULL;
    int enabled = 0, rc;
    apr_status_t st = APR_SUCCESS;

    if (dir_address_normalize_buf(a, sizeof(a), login)) {
        if ((st = local_conn_get(l, &c)) != APR_SUCCESS) return st;
        if ((st = local_stmt(c, sql, &s)) == APR_SUCCESS) {
            sqlite3_bind_text(s, 1, a, -1, SQLITE_STATIC);
            rc = sqlite3_step(s);
            if (rc == SQLITE_ROW) {
                hash = apr_pstrdup(pool, (const char *)sqlite3_column_text(s, 0));
                enabled = sqlite3_column_int(s, 1) != 0;
            } else if (rc != SQLITE_DONE) {
                st = local_err(c->db, rc, "step");
            }
            sqlite3_reset(s);
        }
        /* Back to the pool before hashing: scrypt takes tens of ms and the
         * connection is needed by others meanwhile. */
        local_conn_put(l, c);
        if (st != APR_SUCCESS) return st;
    }
    /* Unknown, disabled and known users all pay for one scrypt, so the
     * answer's timing does not tell which addresses exist. */
    st = dir_password_verify(hash ? hash : l->dummy_hash, password);
    if (st == PR_ETEMPFAIL) return st;
    if (st != APR_SUCCESS || !hash || !enabled || !*password) return PR_EAUTH;
    *user_r = apr_pstrdup(pool, a);
    return APR_SUCCESS;
}

/* ---- writes */

/* Run body(c, ...) in a BEGIN IMMEDIATE transaction on a borrowed connection. */
#define LOCAL_TXN(l, body)                                                                         \
    do {                                                                                           \
        local_conn_t *c;                                                                           \
        apr_status_t st = local_conn_get(l, &c);                                                   \
        if (st != APR_SUCCESS) return st;                                                          \
        if ((st = local_begin(c)) == APR_SUCCESS) st = local_end(c, (body));                       \
        local_conn_put(l, c);                                                                      \
        return st;                                                                                 \
    } while (0)

static apr_status_t local_domain_add(void *ctx, const char *domain)
{
    char d[PR_ADDR_MAX_DOMAIN + 1];
    if (!dir_domain_normalize_buf(d, sizeof(d), domain)) return PR_EINVAL;
    LOCAL_TXN((local_t *)ctx,
              local_run(c, "INSERT INTO domains(domain) VALUES(?1)", d, NULL, NULL));
}

static apr_status_t local_domain_del_txn(local_conn_t *c, const char *d)
{
    static const char in_use[] =
        "SELECT address FROM users WHERE substr(address, instr(address, '@') + 1) = ?1 "
        "UNION ALL SELECT address FROM aliases WHERE substr(address, instr(address, '@') + 1) = ?1 "
        "UNION ALL SELECT address FROM lists WHERE substr(address, instr(address, '@') + 1) = ?1 "
        "LIMIT 1";
    int changes;
    apr_status_t st = local_get_text(c, in_use, d, NULL, NULL);
    if (st == APR_SUCCESS) return PR_EPERM; /* still has addresses */
    if (st != PR_ENOTFOUND) return st;
    st = local_run(c, "DELETE FROM domains WHERE domain = ?1", d, NULL, &changes);
    if (st == APR_SUCCESS && changes == 0) st = PR_ENOTFOUND;
    return st;
}

static apr_status_t local_domain_del(void *ctx, const char *domain)
{
    char d[PR_ADDR_MAX_DOMAIN + 1];
    if (!dir_domain_normalize_buf(d, sizeof(d), domain)) return PR_EINVAL;
    LOCAL_TXN((local_t *)ctx, local_domain_del_txn(c, d));
}

static apr_status_t local_domain_list(void *ctx, apr_array_header_t **domains_r, apr_pool_t *pool)
{
    local_t *l = ctx;
    local_conn_t *c;
    apr_array_header_t *arr = apr_array_make(pool, 4, sizeof(const char *));
    apr_status_t st = local_conn_get(l, &c);
    if (st != APR_SUCCESS) return st;
    st = local_get_column(c, "SELECT domain FROM domains ORDER BY domain", NULL, arr, pool);
    local_conn_put(l, c);
    if (st == APR_SUCCESS) *domains_r = arr;
    return st;
}

/* PR_EEXIST if the address is already a user, alias or list. */
static apr_status_t local_check_free(local_conn_t *c, const char *a)
{
    apr_status_t st = local_get_text(c, LOCAL_SQL_TAKEN, a, NULL, NULL);
    if (st == APR_SUCCESS) return PR_EEXIST;
    return st == PR_ENOTFOUND ? APR_SUCCESS : st;
}

static apr_status_t local_user_add_txn(local_conn_t *c, const char *a, const char *hash)
{
    apr_status_t st = local_check_free(c, a);
    if (st != APR_SUCCESS) return st;
    return local_run(c, "INSERT INTO users(address, password_hash) VALUES(?1, ?2)", a, hash, NULL);
}

/* Hash in a private pool: the backend has no caller pool for writes, and
 * its own pool is shared between threads. */
static apr_status_t local_hash(const char **hash_r, apr_pool_t **p_r, const char *password)
{
    apr_status_t st;
    if (!password || !*password) return PR_EINVAL;
    if ((st = apr_pool_create_unmanaged_ex(p_r, NULL, NULL)) != APR_SUCCESS) return st;
    if ((st = dir_password_hash(hash_r, password, *p_r)) != APR_SUCCESS) apr_pool_destroy(*p_r);
    return st;
}

static apr_status_t local_user_add(void *ctx, const char *address, const char *password)
{
    local_t *l = ctx;
    local_conn_t *c;
    char a[DIR_ADDRESS_MAX + 1];
    const char *hash;
    apr_pool_t *p;
    apr_status_t st;

    if (!dir_address_normalize_buf(a, sizeof(a), address)) return PR_EINVAL;
    if ((st = local_hash(&hash, &p, password)) != APR_SUCCESS) return st;
    if ((st = local_conn_get(l, &c)) == APR_SUCCESS) {
        if ((st = local_begin(c)) == APR_SUCCESS) st = local_end(c, local_user_add_txn(c, a, hash));
        local_conn_put(l, c);
    }
    apr_pool_destroy(p);
    return st;
}

static apr_status_t local_user_set_password(void *ctx, const char *address, const char *password)
{
    local_t *l = ctx;
    local_conn_t *c;
    char a[DIR_ADDRESS_MAX + 1];
    const char *hash;
    apr_pool_t *p;
    apr_status_t st;
    int changes = 0;

    if (!dir_address_normalize_buf(a, sizeof(a), address)) return PR_EINVAL;
    if ((st = local_hash(&hash, &p, password)) != APR_SUCCESS) return st;
    if ((st = local_conn_get(l, &c)) == APR_SUCCESS) {
        st = local_run(c, "UPDATE users SET password_hash = ?2 WHERE address = ?1", a, hash,
                       &changes);
        if (st == APR_SUCCESS && changes == 0) st = PR_ENOTFOUND;
        local_conn_put(l, c);
    }
    apr_pool_destroy(p);
    return st;
}

static apr_status_t local_user_set_quota(void *ctx, const char *address, apr_off_t quota)
{
    static const char sql[] = "UPDATE users SET quota = ?2 WHERE address = ?1";
    local_t *l = ctx;
    local_conn_t *c;
    sqlite3_stmt *s;
    char a[DIR_ADDRESS_MAX + 1];
    apr_status_t st;
    int rc;

    if (!dir_address_normalize_buf(a, sizeof(a), address) || quota < -1) return PR_EINVAL;
    if ((st = local_conn_get(l, &c)) != APR_SUCCESS) return st;
    if ((st = local_stmt(c, sql, &s)) == APR_SUCCESS) {
        sqlite3_bind_text(s, 1, a, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)quota);
        rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE)
            st = local_err(c->db, rc, "step");
        else if (sqlite3_changes(c->db) == 0)
            st = PR_ENOTFOUND;
    }
    local_conn_put(l, c);
    return st;
}

/* One DELETE by address; PR_ENOTFOUND if nothing went. */
static apr_status_t local_delete(void *ctx, const char *sql, const char *address)
{
    local_t *l = ctx;
    local_conn_t *c;
    char a[DIR_ADDRESS_MAX + 1];
    int changes = 0;
    apr_status_t st;

    if (!dir_address_normalize_buf(a, sizeof(a), address)) return PR_EINVAL;
    if ((st = local_conn_get(l, &c)) != APR_SUCCESS) return st;
    st = local_run(c, sql, a, NULL, &changes);
    if (st == APR_SUCCESS && changes == 0) st = PR_ENOTFOUND;
    local_conn_put(l, c);
    return st;
}

static apr_status_t local_user_del(void *ctx, const char *address)
{
    return local_delete(ctx, "DELETE FROM users WHERE address = ?1", address);
}

static apr_status_t local_user_list(void *ctx, apr_array_header_t **users_r, apr_pool_t *pool)
{
    static const char sql[] = "SELECT address, quota, enabled FROM users ORDER BY address";
    local_t *l = ctx;
    local_conn_t *c;
    sqlite3_stmt *s;
    apr_array_header_t *arr = apr_array_make(pool, 16, sizeof(dir_user_t));
    apr_status_t st = local_conn_get(l, &c);
    int rc;

    if (st != APR_SUCCESS) return st;
    if ((st = local_stmt(c, sql, &s)) == APR_SUCCESS) {
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
            APR_ARRAY_PUSH(arr, dir_user_t) = *local_user_row(s, pool);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) st = local_err(c->db, rc, "step");
    }
    local_conn_put(l, c);
    if (st == APR_SUCCESS) *users_r = arr;
    return st;
}

static apr_status_t local_alias_add_txn(local_conn_t *c, const char *a, const char *const *targets,
                                        int n)
{
    static const char taken[] = "SELECT 'user' FROM users WHERE address = ?1 UNION ALL "
                                "SELECT 'list' FROM lists WHERE address = ?1 LIMIT 1";
    char t[DIR_ADDRESS_MAX + 1];
    int added = 0, changes;
    apr_status_t st = local_get_text(c, taken, a, NULL, NULL);

    if (st == APR_SUCCESS) return PR_EEXIST;
    if (st != PR_ENOTFOUND) return st;
    for (int i = 0; i < n; i++) {
        if (!dir_address_normalize_buf(t, sizeof(t), targets[i])) return PR_EINVAL;
        if (strcmp(t, a) == 0) return PR_EINVAL; /* a loop of one */
        st = local_run(c, "INSERT OR IGNORE INTO aliases(address, target) VALUES(?1, ?2)", a, t,
                       &changes);
        if (st != APR_SUCCESS) return st;
        added += changes;
    }
    return added ? APR_SUCCESS : PR_EEXIST;
}

static apr_status_t local_alias_add(void *ctx, const char *address, const char *const *targets,
                                    int n)
{
    char a[DIR_ADDRESS_MAX + 1];
    if (!dir_address_normalize_buf(a, sizeof(a), address) || n < 1) return PR_EINVAL;
    LOCAL_TXN((local_t *)ctx, local_alias_add_txn(c, a, targets, n));
}

static apr_status_t local_alias_del(void *ctx, const char *address)
{
    return local_delete(ctx, "DELETE FROM aliases WHERE address = ?1", address);
}

/* Rows (address, member-or-NULL) grouped into dir_entry_t* by address. */
static apr_status_t local_entries(void *ctx, const char *sql, dir_kind_e kind,
                                  apr_array_header_t **out_r, apr_pool_t *pool)
{
    local_t *l = ctx;
    local_conn_t *c;
    sqlite3_stmt *s;
    apr_array_header_t *arr = apr_array_make(pool, 8, sizeof(dir_entry_t *));
    dir_entry_t *e = NULL;
    apr_status_t st = local_conn_get(l, &c);
    int rc;

    if (st != APR_SUCCESS) return st;
    if ((st = local_stmt(c, sql, &s)) == APR_SUCCESS) {
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            const char *a = (const char *)sqlite3_column_text(s, 0);
            const char *m = (const char *)sqlite3_column_text(s, 1);
            if (!e || strcmp(e->address, a) != 0) {
                e = apr_pcalloc(pool, sizeof(*e));
                e->kind = kind;
                e->address = apr_pstrdup(pool, a);
                e->targets = apr_array_make(pool, 4, sizeof(const char *));
                APR_ARRAY_PUSH(arr, dir_entry_t *) = e;
            }
            if (m) APR_ARRAY_PUSH(e->targets, const char *) = apr_pstrdup(pool, m);
        }
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) st = local_err(c->db, rc, "step");
    }
    local_conn_put(l, c);
    if (st == APR_SUCCESS) *out_r = arr;
    return st;
}

static apr_status_t local_alias_list(void *ctx, apr_array_header_t **aliases_r, apr_pool_t *pool)
{
    return local_entries(ctx, "SELECT address, target FROM aliases ORDER BY address, rowid",
                         DIR_KIND_ALIAS, aliases_r, pool);
}

static apr_status_t local_list_add_txn(local_conn_t *c, const char *a)
{
    apr_status_t st = local_check_free(c, a);
    if (st != APR_SUCCESS) return st;
    return local_run(c, "INSERT INTO lists(address) VALUES(?1)", a, NULL, NULL);
}

static apr_status_t local_list_add(void *ctx, const char *address)
{
    char a[DIR_ADDRESS_MAX + 1];
    if (!dir_address_normalize_buf(a, sizeof(a), address)) return PR_EINVAL;
    LOCAL_TXN((local_t *)ctx, local_list_add_txn(c, a));
}

static apr_status_t local_list_del_txn(local_conn_t *c, const char *a)
{
    int changes = 0;
    apr_status_t st = local_run(c, "DELETE FROM list_members WHERE list = ?1", a, NULL, NULL);
    if (st == APR_SUCCESS)
        st = local_run(c, "DELETE FROM lists WHERE address = ?1", a, NULL, &changes);
    if (st == APR_SUCCESS && changes == 0) st = PR_ENOTFOUND;
    /* A list made later under the same name starts open, as any new one. */
    if (st == APR_SUCCESS)
        st = local_run(c, "DELETE FROM list_policy WHERE address = ?1", a, NULL, NULL);
    return st;
}

static apr_status_t local_list_del(void *ctx, const char *address)
{
    char a[DIR_ADDRESS_MAX + 1];
    if (!dir_address_normalize_buf(a, sizeof(a), address)) return PR_EINVAL;
    LOCAL_TXN((local_t *)ctx, local_list_del_txn(c, a));
}

static apr_status_t local_list_member_add_txn(local_conn_t *c, const char *list, const char *m)
{
    apr_status_t st =
        local_get_text(c, "SELECT address FROM lists WHERE address = ?1", list, NULL, NULL);
    if (st != APR_SUCCESS) return st;
    if (strcmp(list, m) == 0) return PR_EINVAL;
    return local_run(c, "INSERT INTO list_members(list, member) VALUES(?1, ?2)", list, m, NULL);
}

static apr_status_t local_list_member_add(void *ctx, const char *list, const char *member)
{
    char a[DIR_ADDRESS_MAX + 1], m[DIR_ADDRESS_MAX + 1];
    if (!dir_address_normalize_buf(a, sizeof(a), list) ||
        !dir_address_normalize_buf(m, sizeof(m), member))
        return PR_EINVAL;
    LOCAL_TXN((local_t *)ctx, local_list_member_add_txn(c, a, m));
}

static apr_status_t local_list_member_del(void *ctx, const char *list, const char *member)
{
    local_t *l = ctx;
    local_conn_t *c;
    char a[DIR_ADDRESS_MAX + 1], m[DIR_ADDRESS_MAX + 1];
    int changes = 0;
    apr_status_t st;

    if (!dir_address_normalize_buf(a, sizeof(a), list) ||
        !dir_address_normalize_buf(m, sizeof(m), member))
        return PR_EINVAL;
    if ((st = local_conn_get(l, &c)) != APR_SUCCESS) return st;
    st = local_run(c, "DELETE FROM list_members WHERE list = ?1 AND member = ?2", a, m, &changes);
    if (st == APR_SUCCESS && changes == 0) st = PR_ENOTFOUND;
    local_conn_put(l, c);
    return st;
}

static apr_status_t local_list_list(void *ctx, apr_array_header_t **lists_r, apr_pool_t *pool)
{
    return local_entries(ctx,
                         "SELECT l.address, m.member FROM lists l "
                         "LEFT JOIN list_members m ON m.list = l.address "
                         "ORDER BY l.address, m.rowid",
                         DIR_KIND_LIST, lists_r, pool);
}

/* ---- posting policies */

/* A stored name; one this version does not know (a hand edit) restricts
 * the most rather than opening the list. */
static dir_post_policy_e local_policy_value(const char *list, const char *name)
{
    dir_post_policy_e p;
    if (dir_post_policy_parse(&p, name) == APR_SUCCESS) return p;
    pr_log_warn(NULL, "directory.db: list %s has an unknown posting policy '%s'; taken as 'local'",
                list, name);
    return DIR_POST_LOCAL;
}

static apr_status_t local_list_policy_get(void *ctx, const char *list, dir_post_policy_e *policy_r,
                                          apr_pool_t *pool)
{
    local_t *l = ctx;
    local_conn_t *c;
    char a[DIR_ADDRESS_MAX + 1];
    const char *name;
    apr_status_t st;

    if (!dir_address_normalize_buf(a, sizeof(a), list)) return PR_EINVAL;
    if ((st = local_conn_get(l, &c)) != APR_SUCCESS) return st;
    st = local_get_text(c, "SELECT policy FROM list_policy WHERE address = ?1", a, &name, pool);
    local_conn_put(l, c);
    if (st == APR_SUCCESS) *policy_r = local_policy_value(a, name);
    if (st == PR_ENOTFOUND) {
        *policy_r = DIR_POST_ANYONE;
        st = APR_SUCCESS;
    }
    return st;
}

static apr_status_t local_list_policy_set(void *ctx, const char *list, dir_post_policy_e policy)
{
    local_t *l = ctx;
    local_conn_t *c;
    char a[DIR_ADDRESS_MAX + 1];
    apr_status_t st;

    if (!dir_address_normalize_buf(a, sizeof(a), list)) return PR_EINVAL;
    if (policy != DIR_POST_ANYONE && policy != DIR_POST_MEMBERS && policy != DIR_POST_LOCAL)
        return PR_EINVAL;
    if ((st = local_conn_get(l, &c)) != APR_SUCCESS) return st;
    if (policy == DIR_POST_ANYONE)
        st = local_run(c, "DELETE FROM list_policy WHERE address = ?1", a, NULL, NULL);
    else
        st = local_run(c, "INSERT OR REPLACE INTO list_policy(address, policy) VALUES(?1, ?2)", a,
                       dir_post_policy_name(policy), NULL);
    local_conn_put(l, c);
    return st;
}

static apr_status_t local_list_policy_list(void *ctx, apr_array_header_t **policies_r,
                                           apr_pool_t *pool)
{
    static const char sql[] = "SELECT address, policy FROM list_policy ORDER BY address";
    local_t *l = ctx;
    local_conn_t *c;
    sqlite3_stmt *s;
    apr_array_header_t *arr = apr_array_make(pool, 4, sizeof(dir_list_policy_t));
    apr_status_t st = local_conn_get(l, &c);
    int rc;

    if (st != APR_SUCCESS) return st;
    if ((st = local_stmt(c, sql, &s)) == APR_SUCCESS) {
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            dir_list_policy_t *lp = apr_array_push(arr);
            lp->list = apr_pstrdup(pool, (const char *)sqlite3_column_text(s, 0));
            const char *v = (const char *)sqlite3_column_text(s, 1);
            lp->policy = local_policy_value(lp->list, v ? v : "");
        }
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) st = local_err(c->db, rc, "step");
    }
    local_conn_put(l, c);
    if (st == APR_SUCCESS) *policies_r = arr;
    return st;
}

const dir_backend_t dir_local_backend = {
    .name = "local",
    .caps = DIR_CAP_WRITE,
    .open = local_open,
    .close = local_close,
    .domain_is_local = local_domain_is_local,
    .lookup = local_lookup,
    .authenticate = local_authenticate,
    .domain_add = local_domain_add,
    .domain_del = local_domain_del,
    .domain_list = local_domain_list,
    .user_add = local_user_add,
    .user_set_password = local_user_set_password,
    .user_del = local_user_del,
    .user_list = local_user_list,
    .alias_add = local_alias_add,
    .alias_del = local_alias_del,
    .alias_list = local_alias_list,
    .list_add = local_list_add,
    .list_del = local_list_del,
    .list_member_add = local_list_member_add,
    .list_member_del = local_list_member_del,
    .list_list = local_list_list,
    .user_get = local_user_get,
    .auth_tag = local_auth_tag,
    .user_set_quota = local_user_set_quota,
    .list_policy_get = local_list_policy_get,
    .list_policy_set = local_list_policy_set,
    .list_policy_list = local_list_policy_list,
};
