/* A message body being received, in bounded memory: up to
 * spool_memory_limit bytes stay in memory, past that everything goes to a
 * spool file under data_dir/spool (deleted on reset or with the pool). At
 * delivery the writer copies it into one blob with SQLite's incremental blob
 * I/O, so even a 25 MB message is never held whole in memory. */
#include "service/core/status.h"
#include "service/store/store_int.h"

#include <apr_strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE_BODY_MIN_CAP (16 * 1024)

static apr_status_t store_body_cleanup(void *data)
{
    store_body_t *b = data;
    free(b->mem);
    b->mem = NULL;
    b->mem_cap = b->mem_len = 0;
    b->file = NULL; /* closed (and removed) by its own pool cleanup */
    return APR_SUCCESS;
}

apr_status_t store_body_create(store_body_t **b_r, store_t *st, apr_pool_t *pool)
{
    store_body_t *b = apr_pcalloc(pool, sizeof(*b));
    b->st = st;
    b->pool = pool;
    apr_pool_cleanup_register(pool, b, store_body_cleanup, apr_pool_cleanup_null);
    *b_r = b;
    return APR_SUCCESS;
}

static void store_body_grow(store_body_t *b, apr_size_t need)
{
    if (need <= b->mem_cap) return;
    apr_size_t cap = b->mem_cap ? b->mem_cap : STORE_BODY_MIN_CAP;
    while (cap < need)
        cap *= 2;
    if (cap > b->st->opts.spool_memory_limit && need <= b->st->opts.spool_memory_limit)
        cap = b->st->opts.spool_memory_limit;
    char *m = realloc(b->mem, cap);
    if (!m) {
        /* Out of memory is fatal, as with APR's pools. */
        fputs("postroom: out of memory\n", stderr);
        abort();
    }
    b->mem = m;
    b->mem_cap = cap;
}

/* Move what is in memory to a new spool file. */
static apr_status_t store_body_spill(store_body_t *b)
{
    /* A subpool per spill, so a long session's pool does not grow by a file
     * handle per large message. */
    if (!b->fpool) apr_pool_create(&b->fpool, b->pool);
    if (!b->fbuf) b->fbuf = apr_palloc(b->pool, STORE_COPY_CHUNK);
    char *tmpl = apr_pstrcat(b->fpool, b->st->spool_dir, "/bodyXXXXXX", NULL);
    apr_file_t *f;
    apr_status_t rv =
        apr_file_mktemp(&f, tmpl,
                        APR_FOPEN_CREATE | APR_FOPEN_READ | APR_FOPEN_WRITE | APR_FOPEN_EXCL |
                            APR_FOPEN_DELONCLOSE | APR_FOPEN_BUFFERED,
                        b->fpool);
    if (rv != APR_SUCCESS) return rv;
    apr_file_buffer_set(f, b->fbuf, STORE_COPY_CHUNK);
    if (b->mem_len && (rv = apr_file_write_full(f, b->mem, b->mem_len, NULL)) != APR_SUCCESS) {
        apr_file_close(f);
        return rv;
    }
    b->file = f;
    b->file_moved = 0;
    b->mem_len = 0;
    return APR_SUCCESS;
}

apr_status_t store_body_append(store_body_t *b, const void *data, apr_size_t len)
{
    apr_status_t rv;
    if (!len) return APR_SUCCESS;
    if (!b->file) {
        if (b->mem_len + len <= b->st->opts.spool_memory_limit) {
            store_body_grow(b, b->mem_len + len);
            memcpy(b->mem + b->mem_len, data, len);
            b->mem_len += len;
            b->size += (apr_off_t)len;
            return APR_SUCCESS;
        }
        if ((rv = store_body_spill(b)) != APR_SUCCESS) return rv;
    } else if (b->file_moved) {
        /* A delivery read it from the start; appends go at the end. */
        apr_off_t end = 0;
        if ((rv = apr_file_seek(b->file, APR_END, &end)) != APR_SUCCESS) return rv;
        b->file_moved = 0;
    }
    if ((rv = apr_file_write_full(b->file, data, len, NULL)) != APR_SUCCESS) return rv;
    b->size += (apr_off_t)len;
    return APR_SUCCESS;
}

apr_off_t store_body_size(const store_body_t *b)
{
    return b->size;
}

void store_body_reset(store_body_t *b)
{
    if (b->file) {
        apr_file_close(b->file); /* APR_FOPEN_DELONCLOSE removes it */
        apr_pool_clear(b->fpool);
    }
    b->file = NULL;
    b->mem_len = 0;
    b->size = 0;
}

apr_status_t store_body_insert(store_t *st, store_body_t *b, sqlite3_int64 *body_id_r)
{
    store_conn_t *c = &st->w;
    sqlite3_stmt *s;
    int rc;

    if (!b->file) {
        /* Small: bind the bytes directly, one statement. */
        if (!(s = store_conn_stmt(c, SQ_BODY_INSERT))) return PR_EIO;
        sqlite3_bind_int64(s, 1, b->size);
        sqlite3_bind_blob64(s, 2, b->mem_len ? b->mem : "", b->mem_len, SQLITE_STATIC);
        rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) return PR_EIO;
        *body_id_r = sqlite3_last_insert_rowid(c->db);
        return APR_SUCCESS;
    }

    /* Large: reserve the row, then stream the spool file into it. */
    if (!(s = store_conn_stmt(c, SQ_BODY_INSERT_ZERO))) return PR_EIO;
    sqlite3_bind_int64(s, 1, b->size);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_TOOBIG) return PR_ETOOBIG;
    if (rc != SQLITE_DONE) return PR_EIO;
    sqlite3_int64 id = sqlite3_last_insert_rowid(c->db);

    apr_off_t off = 0;
    b->file_moved = 1;
    apr_status_t rv = apr_file_seek(b->file, APR_SET, &off);
    if (rv != APR_SUCCESS) return rv;
    sqlite3_blob *blob = NULL;
    if (sqlite3_blob_open(c->db, "main", "bodies", "data", id, 1, &blob) != SQLITE_OK) {
        if (blob) sqlite3_blob_close(blob);
        return PR_EIO;
    }
    while (off < b->size) {
        apr_size_t n = STORE_COPY_CHUNK;
        if ((apr_off_t)n > b->size - off) n = (apr_size_t)(b->size - off);
        if ((rv = apr_file_read_full(b->file, st->copy_buf, n, &n)) != APR_SUCCESS) break;
        if (sqlite3_blob_write(blob, st->copy_buf, (int)n, (int)off) != SQLITE_OK) {
            rv = PR_EIO;
            break;
        }
        off += (apr_off_t)n;
    }
    if (sqlite3_blob_close(blob) != SQLITE_OK && rv == APR_SUCCESS) rv = PR_EIO;
    if (rv != APR_SUCCESS) return rv == APR_EOF ? PR_EIO : rv;
    *body_id_r = id;
    return APR_SUCCESS;
}
