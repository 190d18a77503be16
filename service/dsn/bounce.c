/* RFC 3464 delivery status notifications in an RFC 6522 multipart/report
 * (see bounce.h). Field syntax: RFC 3464 2.2 (per message) and 2.3 (per
 * recipient); status codes RFC 3463; Diagnostic-Code "smtp;" type; what
 * of the original goes back: RFC 3461 4.3. */
#include "service/dsn/bounce.h"
#include "service/core/status.h"
#include "service/mime/date.h"

#include <apr_general.h>
#include <apr_strings.h>
#include <ctype.h>
#include <string.h>

#define BOUNCE_CHUNK 16384

/* Is s "C.X.Y" with class C and 1-3 digit X, Y? Its length, else 0. */
static apr_size_t bounce_enhanced_len(const char *s, char cls)
{
    const char *p = s;
    if (*p != cls || p[1] != '.') return 0;
    p += 2;
    for (int part = 0; part < 2; part++) {
        int digits = 0;
        while (isdigit((unsigned char)*p) && digits < 4) {
            p++;
            digits++;
        }
        if (digits < 1 || digits > 3) return 0;
        if (part == 0 && *p++ != '.') return 0;
    }
    if (*p && *p != ' ') return 0;
    return (apr_size_t)(p - s);
}

const char *bounce_status(const char *reply, apr_pool_t *pool)
{
    if (!reply || !(reply[0] == '4' || reply[0] == '5') || !isdigit((unsigned char)reply[1]) ||
        !isdigit((unsigned char)reply[2]))
        return "4.0.0";
    const char *text = reply + 3;
    while (*text == ' ' || *text == '-')
        text++;
    apr_size_t n = bounce_enhanced_len(text, reply[0]);
    if (n) return apr_pstrmemdup(pool, text, n);
    return reply[0] == '5' ? "5.0.0" : "4.0.0";
}

/* A value on one header or DSN field line: no CR, LF or other control. */
static const char *bounce_clean(const char *s, apr_pool_t *pool)
{
    char *out = apr_pstrdup(pool, s ? s : "");
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = ' ';
    return out;
}

static const char *bounce_action_name(bounce_action_e a)
{
    switch (a) {
    case BOUNCE_FAILED:
        return "failed";
    case BOUNCE_DELAYED:
        return "delayed";
    case BOUNCE_DELIVERED:
        return "delivered";
    case BOUNCE_RELAYED:
        return "relayed";
    case BOUNCE_EXPANDED:
        return "expanded";
    }
    return "failed";
}

static apr_status_t bounce_puts(store_body_t *body, const char *s)
{
    return store_body_append(body, s, strlen(s));
}

/* Copy the original: whole, or up to the end of its header (the empty
 * line, which is kept out: text/rfc822-headers holds only fields). */
static apr_status_t bounce_copy(store_body_t *body, store_stream_t *orig, int headers_only)
{
    char buf[BOUNCE_CHUNK];
    int last_nl = 1; /* at the start of a line */
    apr_size_t len;
    apr_status_t st;
    for (;;) {
        len = sizeof(buf);
        st = store_stream_read(orig, buf, &len);
        if (st == APR_EOF) break;
        if (st != APR_SUCCESS) return st;
        apr_size_t keep = len;
        int end = 0;
        if (headers_only) {
            for (apr_size_t i = 0; i < len; i++) {
                if (last_nl && (buf[i] == '\r' || buf[i] == '\n')) { /* empty line */
                    keep = i;
                    end = 1;
                    break;
                }
                if (buf[i] == '\n')
                    last_nl = 1;
                else if (buf[i] != '\r')
                    last_nl = 0;
            }
        } else if (len) {
            last_nl = buf[len - 1] == '\n';
        }
        if ((st = store_body_append(body, buf, keep)) != APR_SUCCESS) return st;
        if (end) {
            last_nl = 1;
            break;
        }
    }
    /* The part ends with a line break before the boundary's own CRLF. */
    return last_nl ? APR_SUCCESS : bounce_puts(body, "\r\n");
}

apr_status_t bounce_write(store_body_t *body, const bounce_t *b, store_stream_t *orig,
                          apr_pool_t *pool)
{
    apr_status_t st;
    int failed = 0, delayed = 0;
    for (int i = 0; i < b->n; i++) {
        failed += b->rcpts[i].action == BOUNCE_FAILED;
        delayed += b->rcpts[i].action == BOUNCE_DELAYED;
    }
    const char *mta = bounce_clean(b->reporting_mta, pool);
    apr_time_t now = apr_time_now();
    unsigned char rnd[8];
    apr_generate_random_bytes(rnd, sizeof(rnd));
    const char *tag =
        apr_psprintf(pool, "%" APR_TIME_T_FMT ".%02x%02x%02x%02x%02x%02x%02x%02x", now, rnd[0],
                     rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    const char *boundary = apr_pstrcat(pool, "=_postroom_dsn_", tag, NULL);
    const char *subject = failed    ? "Undelivered Mail Returned to Sender"
                          : delayed ? "Delayed Mail (still being retried)"
                                    : "Successful Mail Delivery Report";

    /* RFC 3834 5: Auto-Submitted keeps auto-responders from answering. */
    const char *head = apr_pstrcat(
        pool, "From: Mail Delivery System <MAILER-DAEMON@", mta, ">\r\n", "To: <",
        bounce_clean(b->sender, pool), ">\r\n", "Subject: ", subject, "\r\n",
        "Date: ", pr_date_rfc5322(now, pool), "\r\n", "Message-ID: <", tag, ".dsn@", mta, ">\r\n",
        "Auto-Submitted: auto-replied\r\n", "MIME-Version: 1.0\r\n",
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"", boundary,
        "\"\r\n\r\n", "This is a MIME-encapsulated delivery status notification.\r\n\r\n", NULL);
    if ((st = bounce_puts(body, head)) != APR_SUCCESS) return st;

    /* The part a person reads. */
    const char *human = apr_pstrcat(pool, "--", boundary, "\r\n",
                                    "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
                                    "This is the mail system at host ", mta, ".\r\n\r\n", NULL);
    if (failed)
        human = apr_pstrcat(pool, human,
                            "Your message could not be delivered to one or more recipients.\r\n"
                            "It is attached below.\r\n\r\n",
                            NULL);
    else if (delayed)
        human = apr_pstrcat(
            pool, human,
            "Your message has not yet been delivered to one or more recipients.\r\n"
            "The mail system will keep trying until ",
            pr_date_rfc5322(b->retry_until, pool),
            ";\r\nyou need not send it again. The message headers are attached below.\r\n\r\n",
            NULL);
    else
        human = apr_pstrcat(pool, human, "Your message was delivered as requested.\r\n\r\n", NULL);
    if ((st = bounce_puts(body, human)) != APR_SUCCESS) return st;
    /* Each recipient's lines go out as they are made, in a pool cleared
     * each time: a report on a thousand recipients stays small. */
    apr_pool_t *rp;
    apr_pool_create(&rp, pool);
    for (int i = 0; i < b->n && st == APR_SUCCESS; i++, apr_pool_clear(rp)) {
        const bounce_rcpt_t *r = &b->rcpts[i];
        st = bounce_puts(body, apr_pstrcat(rp, "<", bounce_clean(r->address, rp), ">: ",
                                           bounce_action_name(r->action),
                                           r->remote_mta ? ", host " : "",
                                           r->remote_mta ? bounce_clean(r->remote_mta, rp) : "",
                                           r->remote_mta ? " said" : "", ":\r\n    ",
                                           bounce_clean(r->reply, rp), "\r\n", NULL));
    }
    if (st == APR_SUCCESS) st = bounce_puts(body, "\r\n");
    if (st != APR_SUCCESS) return st;

    /* The part programs read (RFC 3464 2.1-2.3). */
    const char *dsn =
        apr_pstrcat(pool, "--", boundary, "\r\n", "Content-Type: message/delivery-status\r\n\r\n",
                    "Reporting-MTA: dns; ", mta, "\r\n", NULL);
    if (b->envid && *b->envid)
        dsn = apr_pstrcat(pool, dsn, "Original-Envelope-Id: ", bounce_clean(b->envid, pool), "\r\n",
                          NULL);
    if (b->arrival)
        dsn = apr_pstrcat(pool, dsn, "Arrival-Date: ", pr_date_rfc5322(b->arrival, pool), "\r\n",
                          NULL);
    if ((st = bounce_puts(body, dsn)) != APR_SUCCESS) return st;
    for (int i = 0; i < b->n && st == APR_SUCCESS; i++, apr_pool_clear(rp)) {
        const bounce_rcpt_t *r = &b->rcpts[i];
        apr_pool_t *pool = rp; /* this recipient's block only */
        const char *dsn = "";
        const char *status = r->action == BOUNCE_DELIVERED || r->action == BOUNCE_RELAYED ||
                                     r->action == BOUNCE_EXPANDED
                                 ? "2.0.0"
                                 : bounce_status(r->reply, pool);
        /* A delay is temporary whatever the last reply said. */
        if (r->action == BOUNCE_DELAYED && status[0] != '4')
            status = apr_pstrcat(pool, "4", status + 1, NULL);
        /* A failure is permanent even when the last reply was a 4xx (the
         * message expired). */
        if (r->action == BOUNCE_FAILED && status[0] != '5')
            status = apr_pstrcat(pool, "5", status + 1, NULL);
        dsn = apr_pstrcat(pool, dsn, "\r\n", NULL);
        if (r->orcpt && *r->orcpt)
            dsn = apr_pstrcat(pool, dsn, "Original-Recipient: ", bounce_clean(r->orcpt, pool),
                              "\r\n", NULL);
        dsn = apr_pstrcat(pool, dsn, "Final-Recipient: rfc822; ", bounce_clean(r->address, pool),
                          "\r\n", "Action: ", bounce_action_name(r->action), "\r\n",
                          "Status: ", status, "\r\n", NULL);
        if (r->remote_mta)
            dsn = apr_pstrcat(pool, dsn, "Remote-MTA: dns; ", bounce_clean(r->remote_mta, pool),
                              "\r\n", NULL);
        if (r->reply && isdigit((unsigned char)r->reply[0]))
            dsn = apr_pstrcat(pool, dsn, "Diagnostic-Code: smtp; ", bounce_clean(r->reply, pool),
                              "\r\n", NULL);
        if (r->last_attempt)
            dsn = apr_pstrcat(pool, dsn,
                              "Last-Attempt-Date: ", pr_date_rfc5322(r->last_attempt, pool), "\r\n",
                              NULL);
        if (r->action == BOUNCE_DELAYED && b->retry_until)
            dsn =
                apr_pstrcat(pool, dsn, "Will-Retry-Until: ", pr_date_rfc5322(b->retry_until, pool),
                            "\r\n", NULL);
        st = bounce_puts(body, dsn);
    }
    apr_pool_destroy(rp);
    if (st == APR_SUCCESS) st = bounce_puts(body, "\r\n");
    if (st != APR_SUCCESS) return st;

    /* The original: whole when asked for, and only in a report of a
     * failure (RFC 3461 4.3: "If a DSN contains no indications of delivery
     * failure, only the headers of the message SHOULD be returned"), else
     * its header. */
    if (orig) {
        int full =
            failed && (b->ret == STORE_RET_FULL ||
                       (b->ret == STORE_RET_DEFAULT && store_stream_size(orig) <= BOUNCE_FULL_MAX));
        const char *part =
            apr_pstrcat(pool, "--", boundary, "\r\n",
                        "Content-Type: ", full ? "message/rfc822" : "text/rfc822-headers", "\r\n",
                        full ? "Content-Transfer-Encoding: 8bit\r\n" : "", "\r\n", NULL);
        if ((st = bounce_puts(body, part)) != APR_SUCCESS) return st;
        if ((st = bounce_copy(body, orig, !full)) != APR_SUCCESS) return st;
        if ((st = bounce_puts(body, "\r\n")) != APR_SUCCESS) return st;
    }
    return bounce_puts(body, apr_pstrcat(pool, "--", boundary, "--\r\n", NULL));
}

apr_status_t bounce_route(dir_t *dir, const char *sender, store_delivery_t *d, apr_pool_t *pool)
{
    const char *norm = sender && *sender ? dir_address_normalize(sender, pool) : NULL;
    if (!norm) return PR_ENOTFOUND;
    d->sender = "";
    apr_status_t st = dir_domain_is_local(dir, strrchr(norm, '@') + 1);
    if (st == PR_ENOTFOUND) {
        const char **remote = apr_palloc(pool, sizeof(*remote));
        remote[0] = sender;
        d->n_remote = 1;
        d->remote = remote;
        return APR_SUCCESS;
    }
    if (st != APR_SUCCESS) return st;
    dir_result_t *r;
    if ((st = dir_resolve(dir, norm, &r, pool)) != APR_SUCCESS)
        return st == PR_ETEMPFAIL ? st : PR_ENOTFOUND;
    /* A report goes to a person. A list as sender gets none: anyone may
     * name it in MAIL FROM, and a report would post what they sent, past
     * the list's posting policy, to all its members. */
    if (r->kind == DIR_KIND_LIST || (r->restricted && r->restricted->nelts > 0))
        return PR_ENOTFOUND;
    store_local_rcpt_t *local =
        apr_pcalloc(pool, sizeof(*local) * (apr_size_t)(r->mailboxes->nelts + 1));
    static const char prefix[] = "Return-Path: <>\r\n";
    for (int i = 0; i < r->mailboxes->nelts; i++) {
        local[i].user = APR_ARRAY_IDX(r->mailboxes, i, const char *);
        local[i].prefix = prefix;
        local[i].prefix_len = sizeof(prefix) - 1;
    }
    d->n_local = r->mailboxes->nelts;
    d->local = local;
    d->n_remote = r->external->nelts;
    d->remote = (const char *const *)r->external->elts;
    return d->n_local + d->n_remote ? APR_SUCCESS : PR_ENOTFOUND;
}
