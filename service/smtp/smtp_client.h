/* The SMTP client's face (outbound delivery, RFC 5321): open a session
 * (greeting, EHLO or HELO, RFC 3207 STARTTLS, RFC 4954 AUTH), send
 * messages with one transaction each (RFC 2920 PIPELINING, RFC 1870 SIZE,
 * RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3461 DSN parameters) and get one
 * result per recipient, reuse the connection (RSET), QUIT. Also the pure
 * reply parser (RFC 5321 4.2, RFC 3463 enhanced codes) it reads with. */
#ifndef PR_SMTP_CLIENT_H
#define PR_SMTP_CLIENT_H

#include <apr_pools.h>
#include "service/core/conn.h"

/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF.
 * Longer lines are cut to the limit (the rest skipped up to LF, so the
 * dialogue stays in sync): the code is in the first octets and real servers
 * do send long rejection texts. A reply over SMTP_REPLY_MAX_LINES lines or
 * SMTP_REPLY_MAX_BYTES octets (all lines, skipped octets too) is a protocol
 * error: nothing legitimate is that large, and it bounds a hostile peer. */
#define SMTP_REPLY_LINE_MAX 512
#define SMTP_REPLY_MAX_LINES 100
#define SMTP_REPLY_MAX_BYTES (64 * 1024)
/* The joined text of a result is cut to this many octets. */
#define SMTP_RESULT_TEXT_MAX 1000

/* ---- replies */

typedef struct smtp_reply_t {
    int code;          /* 200..599 */
    char enhanced[12]; /* RFC 3463 "5.1.1" of the first line, "" if none */
    const char *text;  /* every line's text joined by a space, without the
                          code or the enhanced code; printable ASCII only */
    int nlines;
    const char **lines; /* each line's text after "NNN-" / "NNN " (EHLO keywords) */
    int truncated;      /* some line was over the limit and was cut */
} smtp_reply_t;

typedef struct smtp_reply_parser_t {
    apr_pool_t *pool;    /* the replies are allocated here */
    apr_size_t line_max; /* with CRLF */
    char *line;          /* line_max octets */
    apr_size_t len;      /* octets of the current line kept */
    int skipping;        /* the current line is over the limit */
    int code;            /* of the first line; 0 before it */
    apr_size_t bytes;    /* of the reply so far */
    apr_array_header_t *lines;
    char enhanced[12];
    int truncated;
} smtp_reply_parser_t;

/* line_max 0: SMTP_REPLY_LINE_MAX. */
void smtp_reply_parser_init(smtp_reply_parser_t *p, apr_size_t line_max, apr_pool_t *pool);
/* Feed octets of the peer's output. Consumes up to the end of the first
 * complete reply and no further (pipelined replies that follow stay with the
 * caller): *used_r says how many. APR_SUCCESS: *reply_r is the reply (in
 * p->pool) and the parser is ready for the next one. APR_INCOMPLETE: all
 * len octets were taken, more are needed. PR_EINVAL: not an SMTP reply (bad
 * code, a continuation line with another code, too many lines or octets);
 * the parser must be re-initialised before further use. */
apr_status_t smtp_reply_parser_feed(smtp_reply_parser_t *p, const char *data, apr_size_t len,
                                    apr_size_t *used_r, smtp_reply_t **reply_r);

/* RFC 3461 4 xtext: octets outside "!".."~", "+" and "=" become "+XX". */
const char *smtp_xtext_encode(const char *s, apr_pool_t *pool);

/* ---- the server's capabilities (EHLO keywords, RFC 5321 4.1.1.1) */

enum {
    SMTP_EXT_PIPELINING = 1 << 0,          /* RFC 2920 */
    SMTP_EXT_SIZE = 1 << 1,                /* RFC 1870 */
    SMTP_EXT_8BITMIME = 1 << 2,            /* RFC 6152 */
    SMTP_EXT_SMTPUTF8 = 1 << 3,            /* RFC 6531 */
    SMTP_EXT_STARTTLS = 1 << 4,            /* RFC 3207 */
    SMTP_EXT_AUTH = 1 << 5,                /* RFC 4954 */
    SMTP_EXT_DSN = 1 << 6,                 /* RFC 3461 */
    SMTP_EXT_ENHANCEDSTATUSCODES = 1 << 7, /* RFC 2034 */
    SMTP_EXT_CHUNKING = 1 << 8,            /* RFC 3030 (noted, not used) */
};
enum { SMTP_AUTH_PLAIN = 1 << 0, SMTP_AUTH_LOGIN = 1 << 1 };

typedef struct smtp_caps_t {
    int esmtp;          /* EHLO was accepted (else HELO, no extensions) */
    unsigned ext;       /* SMTP_EXT_* */
    apr_off_t size_max; /* SIZE n; 0: no limit given */
    unsigned auth;      /* SMTP_AUTH_* among the AUTH mechanisms */
} smtp_caps_t;

/* The capabilities in a 250 reply to EHLO (the first line is the greeting). */
void smtp_caps_parse(smtp_caps_t *caps, const smtp_reply_t *ehlo);

/* ---- the client */

typedef enum {
    SMTP_TLS_NONE = 0, /* never TLS; credentials may then go in clear */
    SMTP_TLS_MAY,      /* STARTTLS when offered (RFC 7435), else in clear */
    SMTP_TLS_ENCRYPT,  /* STARTTLS required: no mail and no credentials in clear */
    SMTP_TLS_IMPLICIT, /* TLS from the first octet (RFC 8314, port 465) */
} smtp_tls_e;

typedef struct smtp_client_opts_t {
    const char *helo; /* our name for EHLO/HELO (required) */
    smtp_tls_e tls;
    pr_tls_ctx_t *tls_ctx; /* client context (pr_tls_client_ctx_create); required
                              unless tls is SMTP_TLS_NONE. Verification is its
                              business: opportunistic for MX, verifying for a relay */
    const char *auth_user; /* NULL or "": no AUTH */
    const char *auth_password;
    apr_interval_time_t connect_timeout; /* 0: 30s */
    /* Every reply and every write: RFC 5321 4.5.3.2 gives 5 minutes for the
     * greeting, MAIL and RCPT, 2 for DATA, 3 per data block; 0: 5 minutes. */
    apr_interval_time_t command_timeout;
    apr_interval_time_t data_end_timeout; /* the reply to "." (4.5.3.2.6); 0: 10 minutes */
    apr_size_t reply_line_max;            /* 0: SMTP_REPLY_LINE_MAX */
    const char *sid;                      /* log tag (NULL: "-") */
} smtp_client_opts_t;

/* One outcome: a reply of the peer, or one made here (remote == 0) when the
 * message could not be offered (SIZE, 8BITMIME, SMTPUTF8, TLS, lost
 * connection). Codes follow RFC 5321: 2xx done, 4xx try again, 5xx fail. */
typedef struct smtp_result_t {
    int code;
    const char *enhanced; /* "5.1.1" or "" */
    const char *text;     /* one line, printable ASCII, trimmed */
    int remote;           /* the peer said it */
} smtp_result_t;

/* RFC 3461 4.1 NOTIFY; 0 means not given (the peer's default). */
enum {
    SMTP_NOTIFY_NEVER = 1 << 0,
    SMTP_NOTIFY_SUCCESS = 1 << 1,
    SMTP_NOTIFY_FAILURE = 1 << 2,
    SMTP_NOTIFY_DELAY = 1 << 3,
};
typedef enum { SMTP_RET_UNSET = 0, SMTP_RET_FULL, SMTP_RET_HDRS } smtp_ret_e;

typedef struct smtp_rcpt_t {
    const char *address; /* "user@domain", no brackets */
    unsigned notify;     /* SMTP_NOTIFY_* */
    const char *orcpt;   /* RFC 3461 4.2 decoded: "rfc822;user@domain"; NULL: none */
} smtp_rcpt_t;

typedef struct smtp_envelope_t {
    const char *sender; /* "" for the null path <> */
    const smtp_rcpt_t *rcpts;
    int nrcpts;        /* >= 1 */
    smtp_ret_e ret;    /* RFC 3461 4.3 */
    const char *envid; /* RFC 3461 4.4 decoded; NULL: none */
    apr_off_t size;    /* octets of the body as it will be sent; -1: unknown */
    int body_8bit;     /* holds 8-bit octets: BODY=8BITMIME needed */
    int smtputf8;      /* UTF-8 in addresses or headers: SMTPUTF8 needed */
} smtp_envelope_t;

/* The message body, already CRLF text, in chunks of any size: APR_SUCCESS
 * with *len_r > 0, APR_EOF at the end, another status on a read error (the
 * transaction is then abandoned and the connection dropped: DATA cannot be
 * taken back). The client adds dot-stuffing and the final ".". */
typedef apr_status_t (*smtp_body_read_fn)(void *ctx, const char **data_r, apr_size_t *len_r);

typedef struct smtp_send_result_t {
    smtp_result_t message; /* what ended the transaction: the reply to ".", or the
                              refusal or failure that stopped it */
    smtp_result_t *rcpts;  /* one per envelope recipient, in order: a refused RCPT's
                              reply, else the transaction's */
    int nrcpts;
    int data_sent; /* the body went out */
    int usable;    /* the connection can carry another message (after
                      smtp_client_reset); 0 after 421, a lost connection,
                      a protocol error or a timeout */
} smtp_send_result_t;

typedef struct smtp_client_t smtp_client_t;

/* Start a session on an open connection (the caller keeps the transport;
 * opts->tls SMTP_TLS_IMPLICIT does the handshake first). name: the server's
 * host name for SNI, certificate verification and messages (may be NULL).
 * Reads the greeting, says EHLO (HELO when EHLO gets a 5xx), STARTTLS and
 * EHLO again per opts->tls, AUTH when configured. On failure *err_r says why
 * (a peer's reply or one made here) and the session is closed (QUIT sent
 * when the peer is still listening): PR_ETEMPFAIL for a 4xx, PR_EPERM for a
 * 5xx, PR_ETLS, PR_EAUTH (AUTH refused or impossible), PR_ECLOSED,
 * PR_ETIMEOUT, PR_EINVAL (a malformed reply; or TLS asked without a context).
 * Under SMTP_TLS_MAY a failed handshake (PR_ETLS) leaves the connection
 * useless; the caller may reconnect with SMTP_TLS_NONE to deliver in clear,
 * as Postfix does for opportunistic TLS. */
apr_status_t smtp_client_open(smtp_client_t **cl_r, pr_conn_t *conn, const char *name,
                              const smtp_client_opts_t *opts, smtp_result_t *err_r,
                              apr_pool_t *pool);
/* The same over a new TCP connection to address (a literal IP or a name the
 * system resolves) and port; name as above (NULL: address). The socket is
 * the session's and closes with it. A failed connect gives 451 4.4.1 and
 * PR_ETIMEOUT, PR_ENOTFOUND (no address) or PR_ECLOSED (refused, unreachable). */
apr_status_t smtp_client_connect(smtp_client_t **cl_r, const char *address, apr_port_t port,
                                 const char *name, const smtp_client_opts_t *opts,
                                 smtp_result_t *err_r, apr_pool_t *pool);

const smtp_caps_t *smtp_client_caps(const smtp_client_t *cl);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384" or NULL when in clear. */
const char *smtp_client_tls(const smtp_client_t *cl);
/* The peer's name as given to open (or its greeting's first word). */
const char *smtp_client_peer(const smtp_client_t *cl);

/* One transaction for all of env's recipients. Refuses locally, without
 * sending, what the peer announced it would refuse (SIZE: 552 5.3.4; 8-bit
 * body without 8BITMIME: 554 5.6.3, RFC 6152 3; SMTPUTF8 needed and not
 * offered: 553 5.6.7, RFC 6531 3.2). DSN parameters go only to peers that
 * offer DSN (smtp_client_caps tells the queue whether to issue "relayed"
 * notices, RFC 3461 4.1). With PIPELINING, MAIL, the RCPTs and DATA go in
 * one write. res (in pool) is always filled; returns APR_SUCCESS, or
 * PR_EINVAL for an empty envelope or a session that is no longer usable. */
apr_status_t smtp_client_send(smtp_client_t *cl, const smtp_envelope_t *env, smtp_body_read_fn read,
                              void *read_ctx, smtp_send_result_t *res, apr_pool_t *pool);

/* RSET before reusing the connection for the next message. APR_SUCCESS on
 * 250; otherwise the session is no longer usable. */
apr_status_t smtp_client_reset(smtp_client_t *cl);
/* Is the session still usable for another message? */
int smtp_client_usable(const smtp_client_t *cl);

/* QUIT (when the session is usable; the 221 is awaited briefly) and close.
 * cl is gone afterwards. */
void smtp_client_quit(smtp_client_t *cl);

#endif
