/* DATA/BDAT content decoding: RFC 5321 4.5.2 dot transparency and the
 * CRLF.CRLF terminator, RFC 3030 chunks; bare CR/LF flagged (CVE-2023-51764);
 * 8-bit octets noted (RFC 6152) for the relayed copy's BODY=8BITMIME.
 * Runs of ordinary bytes are handed to the sink without copying. */
#include "service/smtp/smtp_data.h"

#include <string.h>

enum { S_BOL, S_MID, S_CR, S_DOT, S_DOTCR };

void smtp_data_init(smtp_data_t *d, int dot, apr_off_t limit, smtp_data_sink_fn sink, void *ctx)
{
    memset(d, 0, sizeof(*d));
    d->dot = dot;
    d->state = S_BOL;
    d->limit = limit;
    d->sink = sink;
    d->ctx = ctx;
    d->last_lf = 1;
}

/* Whether any of p[0..n) has its high bit set; a word at a time. */
static int data_has_8bit(const char *p, apr_size_t n)
{
    const apr_uint64_t high = 0x8080808080808080ULL;
    apr_uint64_t acc = 0;
    apr_size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        apr_uint64_t w;
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; i++)
        acc |= (unsigned char)p[i];
    return (acc & high) != 0;
}

static void data_emit(smtp_data_t *d, const char *p, apr_size_t n)
{
    if (n == 0) return;
    d->last_lf = p[n - 1] == '\n';
    if (!d->eightbit) d->eightbit = data_has_8bit(p, n);
    if (d->too_big) return;
    if (d->size + (apr_off_t)n > d->limit) {
        d->too_big = 1;
        return;
    }
    d->size += (apr_off_t)n;
    if (d->sink_status == APR_SUCCESS) d->sink_status = d->sink(d->ctx, p, n);
}

/* First CR or LF at or after p, or end. */
static const char *data_scan(const char *p, const char *end)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    const char *lim = lf ? lf : end;
    const char *cr = memchr(p, '\r', (size_t)(lim - p));
    return cr ? cr : lim;
}

apr_size_t smtp_data_feed(smtp_data_t *d, const char *in, apr_size_t len)
{
    const char *p = in, *end = in + len, *run = in;

    while (p < end && !d->done) {
        switch (d->state) {
        case S_BOL:
            if (d->dot && *p == '.') {
                data_emit(d, run, (apr_size_t)(p - run));
                p++;
                run = p; /* the leading dot is dropped */
                d->state = S_DOT;
                continue;
            }
            d->state = S_MID;
            /* fall through */
        case S_MID:
            p = data_scan(p, end);
            if (p == end) break;
            if (*p == '\r') {
                d->state = S_CR;
            } else {
                d->bare = 1; /* LF without CR */
            }
            p++;
            break;
        case S_CR:
            if (*p == '\n') {
                d->state = S_BOL;
                p++;
            } else {
                d->bare = 1; /* CR without LF; look at this byte again */
                d->state = S_MID;
            }
            break;
        case S_DOT:
            if (*p == '\r') {
                d->state = S_DOTCR;
                p++;
                run = p;
            } else {
                d->state = S_MID; /* dot-stuffed line: this byte is data */
            }
            break;
        case S_DOTCR:
            if (*p == '\n') {
                d->done = 1;
                p++;
                run = p;
            } else {
                d->bare = 1;
                d->state = S_MID;
            }
            break;
        }
    }
    if (!d->done) data_emit(d, run, (apr_size_t)(p - run));
    return (apr_size_t)(p - in);
}

void smtp_data_finish(smtp_data_t *d)
{
    if (d->state == S_CR) d->bare = 1;
    if (!d->last_lf) data_emit(d, "\r\n", 2);
}
