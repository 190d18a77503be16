/* SMTP command parser (RFC 5321 4.1, with the MAIL/RCPT parameters of
 * RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8, RFC 4954 AUTH=, RFC 3461
 * DSN (RET, ENVID, NOTIFY, ORCPT), RFC 3030 BDAT and RFC 1985 ETRN). Pure:
 * bytes in, a command struct or a ready reply out. */
#ifndef PR_SMTP_PARSE_H
#define PR_SMTP_PARSE_H

#include <apr_pools.h>
#include "service/mime/address.h"

/* RFC 5321 4.5.3.1.4: 512 octets with CRLF; MAIL and RCPT add the
 * allowances of the advertised extensions (SIZE 26 per RFC 1870, AUTH= 500
 * per RFC 4954, RET and ENVID 100 and NOTIFY and ORCPT 500 per RFC 3461 5);
 * AUTH command lines (and SASL responses) may be 12288 (RFC 4954 4). */
#define SMTP_LINE_MAX 512
#define SMTP_MAIL_LINE_MAX (512 + 26 + 500 + 100)
#define SMTP_RCPT_LINE_MAX (512 + 500)
#define SMTP_AUTH_LINE_MAX 12288
#define SMTP_MAX_PARAMS 16
/* RFC 3461 4.4 and 4.2: the longest ENVID and ORCPT values (as sent, that
 * is xtext-encoded; the decoded text is never longer). */
#define SMTP_ENVID_MAX 100
#define SMTP_ORCPT_MAX 500

typedef enum {
    SMTP_CMD_UNKNOWN = 0,
    SMTP_CMD_HELO,
    SMTP_CMD_EHLO,
    SMTP_CMD_MAIL,
    SMTP_CMD_RCPT,
    SMTP_CMD_DATA,
    SMTP_CMD_BDAT,
    SMTP_CMD_RSET,
    SMTP_CMD_NOOP,
    SMTP_CMD_QUIT,
    SMTP_CMD_HELP,
    SMTP_CMD_VRFY,
    SMTP_CMD_EXPN,
    SMTP_CMD_STARTTLS,
    SMTP_CMD_AUTH,
    SMTP_CMD_SEND,
    SMTP_CMD_SOML,
    SMTP_CMD_SAML,
    SMTP_CMD_TURN,
    SMTP_CMD_ETRN,
    SMTP_CMD_COUNT
} smtp_verb_e;

typedef enum {
    SMTP_BODY_NONE = 0,
    SMTP_BODY_7BIT,
    SMTP_BODY_8BITMIME,
    SMTP_BODY_BINARYMIME
} smtp_body_e;

/* RFC 3461 4.1 NOTIFY as given on RCPT; 0: not given. NEVER never comes
 * with another. (The SMTP client's SMTP_NOTIFY_* are its own.) */
enum { SMTP_DSN_NEVER = 1, SMTP_DSN_SUCCESS = 2, SMTP_DSN_FAILURE = 4, SMTP_DSN_DELAY = 8 };
/* RFC 3461 4.3 RET on MAIL. */
typedef enum { SMTP_DSN_RET_NONE = 0, SMTP_DSN_RET_FULL, SMTP_DSN_RET_HDRS } smtp_dsn_ret_e;

typedef struct smtp_cmd_t {
    smtp_verb_e verb;
    const char *arg; /* text after the verb and one space ("" if none) */
    /* MAIL / RCPT */
    pr_path_t path;
    apr_off_t size;     /* SIZE=, -1 if absent */
    smtp_body_e body;   /* BODY= */
    int smtputf8;       /* SMTPUTF8 */
    const char *auth;   /* AUTH= value (xtext decoded), NULL if absent */
    smtp_dsn_ret_e ret; /* MAIL RET= */
    const char *envid;  /* MAIL ENVID= (xtext decoded, printable ASCII), NULL if absent */
    unsigned notify;    /* RCPT NOTIFY= (SMTP_DSN_*), 0 if absent */
    const char *orcpt;  /* RCPT ORCPT= as "addr-type;address" (the address xtext
                           decoded, printable ASCII), NULL if absent */
    /* BDAT */
    apr_off_t chunk_size;
    int last;
    /* AUTH */
    const char *mechanism;        /* upper-cased */
    const char *initial_response; /* NULL if absent; "=" means empty */
} smtp_cmd_t;

/* Which extensions the session advertised (parameters of others are refused). */
typedef struct smtp_parse_opts_t {
    int smtputf8;      /* SMTPUTF8 advertised: UTF-8 allowed in paths when MAIL has it */
    int mail_smtputf8; /* the transaction's MAIL carried SMTPUTF8 (for RCPT) */
    int auth;          /* AUTH advertised: AUTH= accepted on MAIL */
    int dsn;           /* DSN advertised: RET=, ENVID= on MAIL, NOTIFY=, ORCPT= on RCPT */
} smtp_parse_opts_t;

/* The verb of a line (case-insensitive), without parsing arguments. */
smtp_verb_e smtp_parse_verb(const char *line, apr_size_t len);

/* Longest acceptable line for a verb, CRLF included. */
apr_size_t smtp_line_limit(smtp_verb_e verb);

/* Parse one command line (without CRLF; len bytes, may contain NULs which
 * are an error). On success APR_SUCCESS; on failure PR_EINVAL and *reply_r
 * is the complete reply without CRLF, e.g. "501 5.5.4 Syntax: MAIL FROM:<address>"
 * or "555 5.5.4 Unsupported parameter FOO". SMTP_CMD_UNKNOWN is a failure
 * with "500 5.5.1 Command unrecognized". */
apr_status_t smtp_parse(smtp_cmd_t *cmd, const char *line, apr_size_t len,
                        const smtp_parse_opts_t *opts, const char **reply_r, apr_pool_t *pool);

/* xtext (RFC 3461 4) decoding; NULL if malformed (or it would hold a NUL). */
const char *smtp_xtext_decode(const char *s, apr_pool_t *pool);

#endif
