/* Streaming RFC 5322 header scanner: 2.2 header fields (with the 4.5
 * obsolete WSP before the colon), 2.2.3 unfolding, 2.1 the empty line that
 * ends the header section; 3.6 From/Date/Message-ID and RFC 5321 4.4
 * Received fields are what it notes. One state machine byte by byte, so any
 * chunking gives the same result; memory is one bounded buffer. */
#include "service/mime/header.h"

#include <string.h>
#include <strings.h>

enum {
    HS_BOL = 0,  /* at the start of a line */
    HS_NAME,     /* in a field name */
    HS_NAME_WSP, /* WSP after the name, before the colon (obs-optional) */
    HS_VALUE,    /* in a field body */
    HS_VALUE_CR, /* CR seen in a field body */
    HS_EOH_CR,   /* CR at the start of a line: the empty line, probably */
    HS_DONE      /* the header has ended */
};

enum { HF_NONE = 0, HF_OTHER, HF_FROM_KEPT };

/* A name longer than any we look for is remembered only as "too long". */
#define HS_NAME_LONG (sizeof(((pr_hdrscan_t *)0)->name))

void pr_hdrscan_init(pr_hdrscan_t *h, apr_pool_t *pool)
{
    memset(h, 0, sizeof(*h));
    h->pool = pool;
    h->state = HS_BOL;
    h->field = HF_NONE;
}

static int hs_wsp(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 5322 3.6.8 ftext: printable US-ASCII except the colon. */
static int hs_ftext(unsigned char c)
{
    return c >= 33 && c <= 126 && c != ':';
}

static int hs_named(const pr_hdrscan_t *h, const char *want)
{
    size_t n = strlen(want);
    return h->name_len == n && strncasecmp(h->name, want, n) == 0;
}

/* The colon after a field name: note the field and start its body. */
static void hs_field_begin(pr_hdrscan_t *h)
{
    h->field = HF_OTHER;
    if (hs_named(h, "From")) {
        if (++h->from_count == 1) {
            if (!h->buf) h->buf = apr_palloc(h->pool, PR_HDR_MAX_KEPT + 1);
            h->buf_len = 0;
            h->field = HF_FROM_KEPT;
        }
    } else if (hs_named(h, "Received")) {
        h->received_count++;
    } else if (hs_named(h, "Date")) {
        h->has_date = 1;
    } else if (hs_named(h, "Message-ID")) {
        h->has_message_id = 1;
    }
    h->state = HS_VALUE;
}

/* One octet of an (unfolded) field body. */
static void hs_value_byte(pr_hdrscan_t *h, char c)
{
    if (h->field != HF_FROM_KEPT) return;
    if (h->buf_len == 0 && hs_wsp((unsigned char)c)) return; /* the WSP after the colon */
    if (h->buf_len < PR_HDR_MAX_KEPT)
        h->buf[h->buf_len++] = c;
    else
        h->from_truncated = 1;
}

/* The field is complete (the next line is not a continuation). */
static void hs_field_end(pr_hdrscan_t *h)
{
    if (h->field == HF_FROM_KEPT && !h->from_truncated) {
        while (h->buf_len > 0 && hs_wsp((unsigned char)h->buf[h->buf_len - 1]))
            h->buf_len--;
        h->buf[h->buf_len] = '\0';
        h->from = h->buf;
        h->from_len = h->buf_len;
    }
    h->field = HF_NONE;
}

/* The header section has ended: the empty line, or a line that is not a
 * field, which RFC 5322 does not allow there and which we take as the body. */
static void hs_end(pr_hdrscan_t *h)
{
    hs_field_end(h);
    h->in_body = 1;
    h->state = HS_DONE;
}

static void hs_byte(pr_hdrscan_t *h, char ch)
{
    unsigned char c = (unsigned char)ch;
    for (;;) {
        switch (h->state) {
        case HS_BOL:
            if (hs_wsp(c) && h->field != HF_NONE) { /* folded continuation */
                h->state = HS_VALUE;
                hs_value_byte(h, ch);
                return;
            }
            hs_field_end(h);
            if (c == '\r') {
                h->state = HS_EOH_CR;
            } else if (c == '\n') {
                hs_end(h); /* a bare LF blank line still ends the header */
            } else if (hs_ftext(c)) {
                h->name[0] = ch;
                h->name_len = 1;
                h->state = HS_NAME;
            } else {
                hs_end(h);
            }
            return;
        case HS_NAME:
            if (hs_ftext(c)) {
                /* A full buffer matches none of the names we look for. */
                if (h->name_len < HS_NAME_LONG) h->name[h->name_len++] = ch;
            } else if (c == ':') {
                hs_field_begin(h);
            } else if (hs_wsp(c)) {
                h->state = HS_NAME_WSP;
            } else {
                hs_end(h);
            }
            return;
        case HS_NAME_WSP:
            if (c == ':')
                hs_field_begin(h);
            else if (!hs_wsp(c))
                hs_end(h);
            return;
        case HS_VALUE:
            if (c == '\r')
                h->state = HS_VALUE_CR;
            else if (c == '\n')
                h->state = HS_BOL; /* bare LF: the DATA layer refuses it anyway */
            else
                hs_value_byte(h, ch);
            return;
        case HS_VALUE_CR:
            if (c == '\n') {
                h->state = HS_BOL;
                return;
            }
            /* A bare CR stays in the body of the field; look at c again. */
            hs_value_byte(h, '\r');
            h->state = HS_VALUE;
            continue;
        case HS_EOH_CR:
            hs_end(h);
            return;
        default:
            return;
        }
    }
}

void pr_hdrscan_feed(pr_hdrscan_t *h, const char *data, apr_size_t len)
{
    for (apr_size_t i = 0; i < len && h->state != HS_DONE; i++) {
        /* Skip quickly through the bodies of fields we do not keep. */
        if (h->state == HS_VALUE && h->field != HF_FROM_KEPT) {
            const char *p = data + i, *e = data + len;
            while (p < e && *p != '\r' && *p != '\n')
                p++;
            i = (apr_size_t)(p - data);
            if (i >= len) break;
        }
        hs_byte(h, data[i]);
    }
}

void pr_hdrscan_finish(pr_hdrscan_t *h)
{
    if (h->state == HS_DONE) return;
    hs_field_end(h);
    h->state = HS_DONE;
}
