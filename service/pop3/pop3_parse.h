/* POP3 command parser (RFC 1939 3 and 5-7, RFC 2449 4 limits, CAPA and LAST
 * of RFC 1460, STLS of RFC 2595 4, AUTH of RFC 5034 4). Pure: the bytes of
 * one command line in, a command struct or a ready -ERR reply out. What is
 * allowed in which state is the session's business. */
#ifndef PR_POP3_PARSE_H
#define PR_POP3_PARSE_H

#include <apr_pools.h>

/* RFC 2449 4: a command line is at most 255 octets including CRLF and each
 * argument at most 40 octets. Two exceptions, each with its own limit:
 * the AUTH line with an initial response and SASL continuation lines
 * (RFC 5034 4 lets them exceed 255 octets), and the USER/PASS arguments,
 * which are bounded by the line only: school addresses and
 * password-manager passwords are often longer than 40 octets, and every
 * widely used server accepts them. */
#define POP3_LINE_MAX 255
#define POP3_ARG_MAX 40
#define POP3_SASL_LINE_MAX 8192
#define POP3_SASL_MECH_MAX 20      /* RFC 4422 3.1 */
#define POP3_MSGNO_MAX 2147483647  /* message numbers 1..this */
#define POP3_LINES_MAX 2147483647  /* TOP line counts 0..this */

typedef enum {
    POP3_CMD_UNKNOWN = 0,
    POP3_CMD_USER,
    POP3_CMD_PASS,
    POP3_CMD_STAT,
    POP3_CMD_LIST,
    POP3_CMD_RETR,
    POP3_CMD_DELE,
    POP3_CMD_NOOP,
    POP3_CMD_RSET,
    POP3_CMD_TOP,
    POP3_CMD_UIDL,
    POP3_CMD_QUIT,
    POP3_CMD_LAST,
    POP3_CMD_CAPA,
    POP3_CMD_STLS,
    POP3_CMD_AUTH,
    POP3_CMD_COUNT
} pop3_verb_e;

typedef struct pop3_cmd_t {
    pop3_verb_e verb;
    /* USER: the name; PASS: the rest of the line (spaces kept, RFC 1939 7). */
    const char *arg;
    apr_size_t arg_len;
    int msgno; /* LIST, UIDL (0 when absent), RETR, DELE, TOP: 1..POP3_MSGNO_MAX */
    int lines; /* TOP: 0..POP3_LINES_MAX */
    /* AUTH: the mechanism upper-cased (NULL: "AUTH" alone asks for the list),
     * the initial response as sent (NULL if absent; "=" means empty). */
    const char *mechanism;
    const char *initial_response;
} pop3_cmd_t;

/* The verb of a line (case-insensitive), without parsing arguments. */
pop3_verb_e pop3_parse_verb(const char *line, apr_size_t len);

/* Longest acceptable line for a verb, CRLF included. */
apr_size_t pop3_line_limit(pop3_verb_e verb);

/* The keyword of a verb ("RETR"), "?" for POP3_CMD_UNKNOWN. */
const char *pop3_verb_name(pop3_verb_e verb);

/* Parse one command line (without its CRLF: len bytes; NUL and other
 * controls are an error). APR_SUCCESS, or PR_EINVAL with *reply_r the
 * complete reply without CRLF: "-ERR Unknown command", "-ERR Line too long",
 * "-ERR Syntax: RETR msg", ... Strings in cmd live in pool. */
apr_status_t pop3_parse(pop3_cmd_t *cmd, const char *line, apr_size_t len, const char **reply_r,
                        apr_pool_t *pool);

#endif
