/* POP3 command line parser: RFC 1939 3 (keywords case-insensitive,
 * arguments separated by a space), 5-7 (the commands and their arguments),
 * RFC 2449 4 (255-octet lines, 40-octet arguments) and 5 (CAPA), RFC 1460
 * (LAST), RFC 2595 4 (STLS), RFC 5034 4 (AUTH, with the longer line an
 * initial response needs). It decides syntax only. */
#include "service/pop3/pop3_parse.h"
#include "service/core/status.h"

#include <apr_strings.h>
#include <string.h>
#include <strings.h>

static const char *const pop3_names[POP3_CMD_COUNT] = {
    [POP3_CMD_UNKNOWN] = "?",   [POP3_CMD_USER] = "USER", [POP3_CMD_PASS] = "PASS",
    [POP3_CMD_STAT] = "STAT",   [POP3_CMD_LIST] = "LIST", [POP3_CMD_RETR] = "RETR",
    [POP3_CMD_DELE] = "DELE",   [POP3_CMD_NOOP] = "NOOP", [POP3_CMD_RSET] = "RSET",
    [POP3_CMD_TOP] = "TOP",     [POP3_CMD_UIDL] = "UIDL", [POP3_CMD_QUIT] = "QUIT",
    [POP3_CMD_LAST] = "LAST",   [POP3_CMD_CAPA] = "CAPA", [POP3_CMD_STLS] = "STLS",
    [POP3_CMD_AUTH] = "AUTH",
};

const char *pop3_verb_name(pop3_verb_e verb)
{
    return verb > POP3_CMD_UNKNOWN && verb < POP3_CMD_COUNT ? pop3_names[verb] : "?";
}

pop3_verb_e pop3_parse_verb(const char *line, apr_size_t len)
{
    apr_size_t n = 0;
    while (n < len && line[n] != ' ')
        n++;
    /* RFC 2449 4: keywords are three or four characters. */
    if (n < 3 || n > 4) return POP3_CMD_UNKNOWN;
    for (int v = POP3_CMD_UNKNOWN + 1; v < POP3_CMD_COUNT; v++)
        if (strlen(pop3_names[v]) == n && strncasecmp(line, pop3_names[v], n) == 0)
            return (pop3_verb_e)v;
    return POP3_CMD_UNKNOWN;
}

apr_size_t pop3_line_limit(pop3_verb_e verb)
{
    return verb == POP3_CMD_AUTH ? POP3_SASL_LINE_MAX : POP3_LINE_MAX;
}

static apr_status_t pop3_fail(const char **reply_r, const char *reply)
{
    *reply_r = reply;
    return PR_EINVAL;
}

/* The space-separated words after the verb, at most max of them; returns
 * how many there are (max + 1 when there are more). */
static int pop3_words(const char *s, const char *end, const char **w, apr_size_t *n, int max)
{
    int count = 0;
    for (;;) {
        while (s < end && *s == ' ')
            s++;
        if (s == end) return count;
        if (count == max) return max + 1;
        w[count] = s;
        while (s < end && *s != ' ')
            s++;
        n[count] = (apr_size_t)(s - w[count]);
        count++;
    }
}

/* Strictly decimal, no sign, min..max, without overflow. */
static int pop3_number(const char *s, apr_size_t n, long min, long max, int *v_r)
{
    long v = 0;
    if (n == 0) return 0;
    for (apr_size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        int d = s[i] - '0';
        if (v > (max - d) / 10) return 0;
        v = v * 10 + d;
    }
    if (v < min) return 0;
    *v_r = (int)v;
    return 1;
}

static int pop3_mech_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

static int pop3_b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/' || c == '=';
}

/* AUTH [mechanism [initial-response]] (RFC 5034 4). */
static apr_status_t pop3_parse_auth(pop3_cmd_t *cmd, int nw, const char **w, const apr_size_t *n,
                                    const char **reply_r, apr_pool_t *pool)
{
    const char *syntax = "-ERR Syntax: AUTH [mechanism [initial-response]]";
    if (nw > 2) return pop3_fail(reply_r, syntax);
    if (nw == 0) return APR_SUCCESS;
    if (n[0] > POP3_SASL_MECH_MAX) return pop3_fail(reply_r, syntax);
    char *mech = apr_pstrmemdup(pool, w[0], n[0]);
    for (char *m = mech; *m; m++) {
        if (!pop3_mech_char(*m)) return pop3_fail(reply_r, syntax);
        if (*m >= 'a' && *m <= 'z') *m = (char)(*m - 'a' + 'A');
    }
    cmd->mechanism = mech;
    if (nw == 2) {
        /* The base64 alphabet or "="; decoding is the session's. */
        for (apr_size_t i = 0; i < n[1]; i++)
            if (!pop3_b64_char(w[1][i]))
                return pop3_fail(reply_r, "-ERR Invalid base64 in initial response");
        cmd->initial_response = apr_pstrmemdup(pool, w[1], n[1]);
    }
    return APR_SUCCESS;
}

apr_status_t pop3_parse(pop3_cmd_t *cmd, const char *line, apr_size_t len, const char **reply_r,
                        apr_pool_t *pool)
{
    memset(cmd, 0, sizeof(*cmd));
    cmd->arg = "";
    *reply_r = NULL;

    cmd->verb = pop3_parse_verb(line, len);
    /* The session checks this before parsing; repeated so that the parser
     * is bounded on its own (RFC 2449 4: CRLF included). */
    if (len + 2 > pop3_line_limit(cmd->verb)) return pop3_fail(reply_r, "-ERR Line too long");
    if (cmd->verb == POP3_CMD_UNKNOWN) return pop3_fail(reply_r, "-ERR Unknown command");

    /* Controls (NUL, CR, LF, TAB, DEL) have no place in a command; a CR or
     * LF here would be a line-ending trick. Octets above 127 only in a user
     * name or password (UTF-8 passwords exist). */
    int eight_ok = cmd->verb == POP3_CMD_USER || cmd->verb == POP3_CMD_PASS;
    for (apr_size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 32 || c == 127 || (c >= 128 && !eight_ok))
            return pop3_fail(reply_r, "-ERR Invalid characters in command");
    }

    const char *end = line + len;
    const char *rest = line + strlen(pop3_names[cmd->verb]);
    if (cmd->verb == POP3_CMD_PASS) {
        /* RFC 1939 7: PASS has exactly one argument, so spaces in it are part
         * of the password; only the one separating space is taken off. */
        if (rest == end || rest + 1 == end) return pop3_fail(reply_r, "-ERR Syntax: PASS password");
        cmd->arg_len = (apr_size_t)(end - rest - 1);
        cmd->arg = apr_pstrmemdup(pool, rest + 1, cmd->arg_len);
        return APR_SUCCESS;
    }

    const char *w[3];
    apr_size_t n[3];
    int nw = pop3_words(rest, end, w, n, 2);
    if (cmd->verb == POP3_CMD_AUTH) return pop3_parse_auth(cmd, nw, w, n, reply_r, pool);
    if (cmd->verb == POP3_CMD_USER) {
        if (nw != 1) return pop3_fail(reply_r, "-ERR Syntax: USER name");
        cmd->arg_len = n[0];
        cmd->arg = apr_pstrmemdup(pool, w[0], n[0]);
        return APR_SUCCESS;
    }
    for (int i = 0; i < nw && i < 2; i++)
        if (n[i] > POP3_ARG_MAX) return pop3_fail(reply_r, "-ERR Argument too long");

    switch (cmd->verb) {
    case POP3_CMD_LIST:
    case POP3_CMD_UIDL:
        if (nw > 1)
            return pop3_fail(reply_r, cmd->verb == POP3_CMD_LIST ? "-ERR Syntax: LIST [msg]"
                                                                 : "-ERR Syntax: UIDL [msg]");
        if (nw == 1 && !pop3_number(w[0], n[0], 1, POP3_MSGNO_MAX, &cmd->msgno))
            return pop3_fail(reply_r, "-ERR Invalid message number");
        return APR_SUCCESS;
    case POP3_CMD_RETR:
    case POP3_CMD_DELE:
        if (nw != 1)
            return pop3_fail(reply_r, cmd->verb == POP3_CMD_RETR ? "-ERR Syntax: RETR msg"
                                                                 : "-ERR Syntax: DELE msg");
        if (!pop3_number(w[0], n[0], 1, POP3_MSGNO_MAX, &cmd->msgno))
            return pop3_fail(reply_r, "-ERR Invalid message number");
        return APR_SUCCESS;
    case POP3_CMD_TOP:
        if (nw != 2) return pop3_fail(reply_r, "-ERR Syntax: TOP msg lines");
        if (!pop3_number(w[0], n[0], 1, POP3_MSGNO_MAX, &cmd->msgno))
            return pop3_fail(reply_r, "-ERR Invalid message number");
        if (!pop3_number(w[1], n[1], 0, POP3_LINES_MAX, &cmd->lines))
            return pop3_fail(reply_r, "-ERR Invalid line count");
        return APR_SUCCESS;
    default:
        /* STAT NOOP RSET QUIT LAST CAPA STLS: no argument (trailing spaces
         * are harmless). */
        if (nw != 0) {
            switch (cmd->verb) {
            case POP3_CMD_STAT: return pop3_fail(reply_r, "-ERR Syntax: STAT takes no argument");
            case POP3_CMD_NOOP: return pop3_fail(reply_r, "-ERR Syntax: NOOP takes no argument");
            case POP3_CMD_RSET: return pop3_fail(reply_r, "-ERR Syntax: RSET takes no argument");
            case POP3_CMD_QUIT: return pop3_fail(reply_r, "-ERR Syntax: QUIT takes no argument");
            case POP3_CMD_LAST: return pop3_fail(reply_r, "-ERR Syntax: LAST takes no argument");
            case POP3_CMD_CAPA: return pop3_fail(reply_r, "-ERR Syntax: CAPA takes no argument");
            default: return pop3_fail(reply_r, "-ERR Syntax: STLS takes no argument");
            }
        }
        return APR_SUCCESS;
    }
}
