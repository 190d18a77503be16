/* The store's schema and its numbered migrations, tracked in PRAGMA
 * user_version. Migrations only ever get appended: a database written by an
 * older Postroom is brought forward on open, one written by a newer one is
 * refused rather than misread. */
#include "service/core/status.h"
#include "service/store/store_int.h"

/* Times are apr_time_t (microseconds since the epoch). Each body is stored
 * once and referenced by every message and queue entry carrying it; a body
 * row goes when the last reference does. messages is keyed (mailbox, uid) so
 * a folder's listing is one range scan; uid comes from mailboxes.uidnext,
 * which only ever grows, so UIDs are never reused within a UIDVALIDITY.
 * bodies and queue ids use AUTOINCREMENT so an id held by an open stream can
 * never come to name another message's bytes. */
static const char *const store_migrations[] = {
    /* 1: mailboxes, messages, bodies, outbound queue. */
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "INSERT INTO meta(key, value) VALUES('last_uidvalidity', 0);"
    "CREATE TABLE bodies(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " size INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE TABLE mailboxes(id INTEGER PRIMARY KEY, user TEXT NOT NULL,"
    " name TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uidnext INTEGER NOT NULL,"
    " highestmodseq INTEGER NOT NULL, UNIQUE(user, name));"
    "CREATE TABLE messages(mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id),"
    " uid INTEGER NOT NULL, body_id INTEGER NOT NULL REFERENCES bodies(id),"
    " prefix BLOB NOT NULL, size INTEGER NOT NULL, flags INTEGER NOT NULL DEFAULT 0,"
    " internaldate INTEGER NOT NULL, modseq INTEGER NOT NULL,"
    " PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;"
    "CREATE INDEX messages_body ON messages(body_id);"
    "CREATE TABLE queue_msgs(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " body_id INTEGER NOT NULL REFERENCES bodies(id), sender TEXT NOT NULL,"
    " prefix BLOB NOT NULL, created INTEGER NOT NULL);"
    "CREATE INDEX queue_msgs_body ON queue_msgs(body_id);"
    /* state: 0 pending, 1 delivered, 2 failed (store_qstate_e). */
    "CREATE TABLE queue_rcpts(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " queue_id INTEGER NOT NULL REFERENCES queue_msgs(id), address TEXT NOT NULL,"
    " state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt INTEGER NOT NULL, last_reply TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX queue_rcpts_due ON queue_rcpts(state, next_attempt);"
    "CREATE INDEX queue_rcpts_msg ON queue_rcpts(queue_id);",

    /* 2: per-user running totals over all folders, so a quota check at RCPT
     * time is one primary-key read however big the mailbox. Kept by
     * triggers, hence in the same transaction as every insert or delete of
     * a message, whichever write path (delivery, expunge, later APPEND,
     * COPY or MOVE) makes it. Initialised from the messages already there. */
    "CREATE TABLE user_usage(user TEXT PRIMARY KEY NOT NULL,"
    " messages INTEGER NOT NULL, bytes INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT INTO user_usage(user, messages, bytes)"
    " SELECT mb.user, count(*), sum(m.size) FROM mailboxes mb"
    " JOIN messages m ON m.mailbox_id = mb.id GROUP BY mb.user;"
    "CREATE TRIGGER user_usage_add AFTER INSERT ON messages BEGIN"
    " INSERT INTO user_usage(user, messages, bytes)"
    "  SELECT user, 1, NEW.size FROM mailboxes WHERE id = NEW.mailbox_id"
    "  ON CONFLICT(user) DO UPDATE SET messages = messages + 1,"
    "  bytes = bytes + excluded.bytes;"
    " END;"
    "CREATE TRIGGER user_usage_del AFTER DELETE ON messages BEGIN"
    " UPDATE user_usage SET messages = messages - 1, bytes = bytes - OLD.size"
    "  WHERE user = (SELECT user FROM mailboxes WHERE id = OLD.mailbox_id);"
    " END;"
    "CREATE TRIGGER user_usage_move AFTER UPDATE OF mailbox_id, size ON messages BEGIN"
    " UPDATE user_usage SET messages = messages - 1, bytes = bytes - OLD.size"
    "  WHERE user = (SELECT user FROM mailboxes WHERE id = OLD.mailbox_id);"
    " INSERT INTO user_usage(user, messages, bytes)"
    "  SELECT user, 1, NEW.size FROM mailboxes WHERE id = NEW.mailbox_id"
    "  ON CONFLICT(user) DO UPDATE SET messages = messages + 1,"
    "  bytes = bytes + excluded.bytes;"
    " END;",

    /* 3: what outbound delivery and its DSNs (RFC 3461) need: the
     * envelope's ENVID, RET and body type, each recipient's NOTIFY and
     * ORCPT, and whether a delay warning went out. */
    "ALTER TABLE queue_msgs ADD COLUMN envid TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE queue_msgs ADD COLUMN ret INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE queue_msgs ADD COLUMN body_flags INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE queue_rcpts ADD COLUMN notify INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE queue_rcpts ADD COLUMN orcpt TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE queue_rcpts ADD COLUMN warned INTEGER NOT NULL DEFAULT 0;",
};

#define STORE_SCHEMA_VERSION ((int)(sizeof(store_migrations) / sizeof(store_migrations[0])))

static apr_status_t store_schema_version(sqlite3 *db, int *v_r)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK) return PR_EIO;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) *v_r = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return rc == SQLITE_ROW ? APR_SUCCESS : PR_EIO;
}

apr_status_t store_schema_migrate(store_conn_t *c)
{
    int v = 0;
    apr_status_t st = store_schema_version(c->db, &v);
    if (st != APR_SUCCESS) return st;
    if (v == STORE_SCHEMA_VERSION) return APR_SUCCESS; /* the usual case: no write lock */
    if (v > STORE_SCHEMA_VERSION) return PR_EIO;       /* written by a newer Postroom */

    /* Another process (the CLI, a second daemon) may be migrating at the same
     * moment: take the write lock, then look again. */
    if (sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return PR_EIO;
    st = store_schema_version(c->db, &v);
    if (st == APR_SUCCESS && v > STORE_SCHEMA_VERSION) st = PR_EIO;
    for (; st == APR_SUCCESS && v < STORE_SCHEMA_VERSION; v++) {
        if (sqlite3_exec(c->db, store_migrations[v], NULL, NULL, NULL) != SQLITE_OK) st = PR_EIO;
    }
    if (st == APR_SUCCESS) {
        char sql[64];
        sqlite3_snprintf(sizeof(sql), sql, "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
        if (sqlite3_exec(c->db, sql, NULL, NULL, NULL) != SQLITE_OK) st = PR_EIO;
    }
    if (st == APR_SUCCESS && sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        st = PR_EIO;
    if (st != APR_SUCCESS && !sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}
