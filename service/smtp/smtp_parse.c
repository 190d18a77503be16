/* SMTP command line parser: RFC 5321 4.1.1 commands and 4.1.2 syntax
 * (esmtp-param), 4.5.3.1.4 line limits, RFC 1870 SIZE, RFC 6152 BODY,
 * RFC 3030 BDAT, RFC 6531 3.4 SMTPUTF8, RFC 4954 4 AUTH and 5 AUTH=,
 * RFC 3461 4 DSN parameters and xtext, RFC 1985 ETRN, RFC 3463 enhanced
 * codes in every refusal. It decides
 * syntax only; what is allowed in which state is the session's business. */
#include "service/smtp/smtp_parse.h"
#include "service/core/status.h"

#include <apr_strings.h>
#include <string.h>
#include <strings.h>

#define SMTP_NUM_DIGITS_MAX 20 /* SIZE= and BDAT sizes */
#define SMTP_SASL_MECH_MAX 20  /* RFC 4422 3.1 */

static const struct {
    const char *name;
    smtp_verb_e verb;
} smtp_verbs[] = {
    {"HELO", SMTP_CMD_HELO}, {"EHLO", SMTP_CMD_EHLO},         {"MAIL", SMTP_CMD_MAIL},
    {"RCPT", SMTP_CMD_RCPT}, {"DATA", SMTP_CMD_DATA},         {"BDAT", SMTP_CMD_BDAT},
    {"RSET", SMTP_CMD_RSET}, {"NOOP", SMTP_CMD_NOOP},         {"QUIT", SMTP_CMD_QUIT},
    {"HELP", SMTP_CMD_HELP}, {"VRFY", SMTP_CMD_VRFY},         {"EXPN", SMTP_CMD_EXPN},
    {"AUTH", SMTP_CMD_AUTH}, {"STARTTLS", SMTP_CMD_STARTTLS}, {"SEND", SMTP_CMD_SEND},
    {"SOML", SMTP_CMD_SOML}, {"SAML", SMTP_CMD_SAML},         {"TURN", SMTP_CMD_TURN},
    {"ETRN", SMTP_CMD_ETRN},
};

smtp_verb_e smtp_parse_verb(const char *line, apr_size_t len)
{
    apr_size_t n = 0;
    while (n < len && line[n] != ' ')
        n++;
    for (size_t i = 0; i < sizeof(smtp_verbs) / sizeof(smtp_verbs[0]); i++)
        if (strlen(smtp_verbs[i].name) == n && strncasecmp(line, smtp_verbs[i].name, n) == 0)
            return smtp_verbs[i].verb;
    return SMTP_CMD_UNKNOWN;
}

apr_size_t smtp_line_limit(smtp_verb_e verb)
{
    switch (verb) {
    case SMTP_CMD_MAIL:
        return SMTP_MAIL_LINE_MAX;
    case SMTP_CMD_RCPT:
        return SMTP_RCPT_LINE_MAX;
    case SMTP_CMD_AUTH:
        return SMTP_AUTH_LINE_MAX;
    default:
        return SMTP_LINE_MAX;
    }
}

static int smtp_hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10; /* RFC 3461 says upper; be liberal */
    return -1;
}

const char *smtp_xtext_decode(const char *s, apr_pool_t *pool)
{
    char *out = apr_palloc(pool, strlen(s) + 1), *o = out;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '+') {
            int hi = smtp_hexval(s[1]), lo = hi < 0 ? -1 : smtp_hexval(s[2]);
            /* A decoded NUL would silently cut the C string short. */
            if (lo < 0 || (hi == 0 && lo == 0)) return NULL;
            *o++ = (char)(hi * 16 + lo);
            s += 2;
        } else if (c >= 33 && c <= 126 && c != '=') {
            *o++ = (char)c;
        } else {
            return NULL;
        }
    }
    *o = '\0';
    return out;
}

static apr_status_t smtp_fail(const char **reply_r, const char *reply)
{
    *reply_r = reply;
    return PR_EINVAL;
}

static int smtp_sp(char c)
{
    return c == ' ' || c == '\t';
}

static const char *smtp_skip_sp(const char *s)
{
    while (smtp_sp(*s))
        s++;
    return s;
}

/* The next space-separated word of s: *w and *n; returns the rest. */
static const char *smtp_word(const char *s, const char **w, apr_size_t *n)
{
    s = smtp_skip_sp(s);
    *w = s;
    while (*s && !smtp_sp(*s))
        s++;
    *n = (apr_size_t)(s - *w);
    return s;
}

/* 1..20 decimal digits into a non-negative apr_off_t without overflow. */
static int smtp_number(const char *s, apr_size_t n, apr_off_t *v_r)
{
    apr_off_t v = 0;
    /* The largest apr_off_t, computed without assuming its width. */
    const apr_off_t max = (apr_off_t)(((apr_uint64_t)1 << (sizeof(apr_off_t) * 8 - 1)) - 1);
    if (n == 0 || n > SMTP_NUM_DIGITS_MAX) return 0;
    for (apr_size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        int d = s[i] - '0';
        if (v > (max - d) / 10) return 0;
        v = v * 10 + d;
    }
    *v_r = v;
    return 1;
}

/* RFC 5321 4.1.2 esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
static int smtp_keyword_char(char c, int first)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (!first && c == '-');
}

enum {
    P_SIZE = 1,
    P_BODY = 2,
    P_SMTPUTF8 = 4,
    P_AUTH = 8,
    P_RET = 16,
    P_ENVID = 32,
    P_NOTIFY = 64,
    P_ORCPT = 128
};

/* Decoded DSN text (RFC 3461 4.2, 4.4): printable US-ASCII only, since it
 * ends up in the fields of a report. */
static int smtp_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) return 0;
    return 1;
}

/* NOTIFY="NEVER" / 1#("SUCCESS" / "FAILURE" / "DELAY") (RFC 3461 4.1). */
static int smtp_notify(const char *val, apr_size_t vn, unsigned *notify_r)
{
    static const struct {
        const char *name;
        unsigned bit;
    } items[] = {{"NEVER", SMTP_DSN_NEVER},
                 {"SUCCESS", SMTP_DSN_SUCCESS},
                 {"FAILURE", SMTP_DSN_FAILURE},
                 {"DELAY", SMTP_DSN_DELAY}};
    unsigned notify = 0;
    const char *p = val, *end = val + vn;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        apr_size_t n = (apr_size_t)((comma ? comma : end) - p);
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++)
            if (strlen(items[i].name) == n && strncasecmp(p, items[i].name, n) == 0)
                bit = items[i].bit;
        if (!bit || (notify & bit)) return 0; /* unknown, empty or repeated */
        notify |= bit;
        if (!comma) break;
        p = comma + 1;
    }
    if ((notify & SMTP_DSN_NEVER) && notify != SMTP_DSN_NEVER) return 0;
    *notify_r = notify;
    return 1;
}

/* ORCPT=addr-type ";" xtext (RFC 3461 4.2); addr-type is an RFC 822 atom. */
static const char *smtp_orcpt(const char *val, apr_size_t vn, apr_pool_t *pool)
{
    const char *semi = memchr(val, ';', vn);
    if (!semi || semi == val) return NULL;
    for (const char *t = val; t < semi; t++)
        if (strchr("()<>@,;:\\\".[]", *t)) return NULL;
    const char *addr =
        smtp_xtext_decode(apr_pstrmemdup(pool, semi + 1, vn - (apr_size_t)(semi + 1 - val)), pool);
    if (!addr || !*addr || !smtp_printable(addr)) return NULL;
    return apr_pstrcat(pool, apr_pstrmemdup(pool, val, (apr_size_t)(semi - val)), ";", addr, NULL);
}

/* One MAIL or RCPT parameter, keyword (kn bytes) and value (NULL if no '='). */
static apr_status_t smtp_param(smtp_cmd_t *cmd, int mail, const char *kw, apr_size_t kn,
                               const char *val, apr_size_t vn, unsigned *seen,
                               const smtp_parse_opts_t *opts, const char **reply_r,
                               apr_pool_t *pool)
{
    unsigned bit = 0;
#define SMTP_KW(s) (kn == sizeof(s) - 1 && strncasecmp(kw, s, kn) == 0)
    if (mail && SMTP_KW("SIZE"))
        bit = P_SIZE;
    else if (mail && SMTP_KW("BODY"))
        bit = P_BODY;
    else if (mail && SMTP_KW("SMTPUTF8") && opts->smtputf8)
        bit = P_SMTPUTF8;
    else if (mail && SMTP_KW("AUTH") && opts->auth)
        bit = P_AUTH;
    else if (mail && SMTP_KW("RET") && opts->dsn)
        bit = P_RET;
    else if (mail && SMTP_KW("ENVID") && opts->dsn)
        bit = P_ENVID;
    else if (!mail && SMTP_KW("NOTIFY") && opts->dsn)
        bit = P_NOTIFY;
    else if (!mail && SMTP_KW("ORCPT") && opts->dsn)
        bit = P_ORCPT;
#undef SMTP_KW
    if (!bit) {
        *reply_r = apr_psprintf(pool, "555 5.5.4 Unsupported parameter %.*s", (int)kn, kw);
        return PR_EINVAL;
    }
    if (*seen & bit) {
        *reply_r = apr_psprintf(pool, "501 5.5.4 Duplicate parameter %.*s", (int)kn, kw);
        return PR_EINVAL;
    }
    *seen |= bit;
    switch (bit) {
    case P_SIZE:
        if (!val || !smtp_number(val, vn, &cmd->size))
            return smtp_fail(reply_r, "501 5.5.4 Bad SIZE parameter");
        break;
    case P_BODY:
        if (val && vn == 4 && strncasecmp(val, "7BIT", 4) == 0)
            cmd->body = SMTP_BODY_7BIT;
        else if (val && vn == 8 && strncasecmp(val, "8BITMIME", 8) == 0)
            cmd->body = SMTP_BODY_8BITMIME;
        else if (val && vn == 10 && strncasecmp(val, "BINARYMIME", 10) == 0)
            /* RFC 3030 3: only valid when BINARYMIME was advertised; it is not. */
            return smtp_fail(reply_r, "555 5.5.4 BODY=BINARYMIME not supported");
        else
            return smtp_fail(reply_r, "501 5.5.4 Bad BODY parameter");
        break;
    case P_SMTPUTF8:
        if (val) return smtp_fail(reply_r, "501 5.5.4 SMTPUTF8 takes no value");
        cmd->smtputf8 = 1;
        break;
    case P_AUTH: {
        /* RFC 4954 5: AUTH=<> says the submitter is unknown. */
        const char *v = val ? apr_pstrmemdup(pool, val, vn) : NULL;
        cmd->auth = !v ? NULL : strcmp(v, "<>") == 0 ? v : smtp_xtext_decode(v, pool);
        if (!cmd->auth) return smtp_fail(reply_r, "501 5.5.4 Bad AUTH parameter");
        break;
    }
    case P_RET:
        if (val && vn == 4 && strncasecmp(val, "FULL", 4) == 0)
            cmd->ret = SMTP_DSN_RET_FULL;
        else if (val && vn == 4 && strncasecmp(val, "HDRS", 4) == 0)
            cmd->ret = SMTP_DSN_RET_HDRS;
        else
            return smtp_fail(reply_r, "501 5.5.4 Bad RET parameter");
        break;
    case P_ENVID:
        if (val && vn > SMTP_ENVID_MAX)
            return smtp_fail(reply_r, "501 5.5.4 ENVID parameter too long");
        cmd->envid = val ? smtp_xtext_decode(apr_pstrmemdup(pool, val, vn), pool) : NULL;
        if (!cmd->envid || !*cmd->envid || !smtp_printable(cmd->envid))
            return smtp_fail(reply_r, "501 5.5.4 Bad ENVID parameter");
        break;
    case P_NOTIFY:
        if (!val || !smtp_notify(val, vn, &cmd->notify))
            return smtp_fail(reply_r, "501 5.5.4 Bad NOTIFY parameter");
        break;
    case P_ORCPT:
        if (val && vn > SMTP_ORCPT_MAX)
            return smtp_fail(reply_r, "501 5.5.4 ORCPT parameter too long");
        cmd->orcpt = val ? smtp_orcpt(val, vn, pool) : NULL;
        if (!cmd->orcpt) return smtp_fail(reply_r, "501 5.5.4 Bad ORCPT parameter");
        break;
    }
    return APR_SUCCESS;
}

/* MAIL FROM:<reverse-path> [SP mail-parameters] / RCPT TO:<forward-path> [SP
 * rcpt-parameters]; end is the end of the line's text, line_len its length. */
static apr_status_t smtp_parse_mailrcpt(smtp_cmd_t *cmd, const char *arg, const char *end,
                                        apr_size_t line_len, int has8,
                                        const smtp_parse_opts_t *opts, const char **reply_r,
                                        apr_pool_t *pool)
{
    int mail = cmd->verb == SMTP_CMD_MAIL;
    const char *kw = mail ? "FROM:" : "TO:";
    apr_size_t kwn = strlen(kw);
    const char *syntax =
        mail ? "501 5.5.4 Syntax: MAIL FROM:<address>" : "501 5.5.4 Syntax: RCPT TO:<address>";

    if ((apr_size_t)(end - arg) < kwn || strncasecmp(arg, kw, kwn) != 0)
        return smtp_fail(reply_r, syntax);
    const char *p = arg + kwn;
    if (*p == ' ') p++; /* "MAIL FROM: <a@b>": not RFC 5321, but common */
    if (*p != '<') return smtp_fail(reply_r, syntax);
    if (!mail && p[1] == '>') return smtp_fail(reply_r, "501 5.1.3 Null recipient not allowed");

    const char *after;
    if (pr_path_parse(&cmd->path, p, (apr_size_t)(end - p), mail, 1, &after, pool) != APR_SUCCESS) {
        /* The extensions' allowances are for their parameters; a line past
         * the base limit (CRLF included) without a valid path is too long. */
        if (line_len + 2 > SMTP_LINE_MAX) return smtp_fail(reply_r, "500 5.5.2 Line too long");
        if (has8 && !(opts->smtputf8 && (mail || opts->mail_smtputf8)))
            return smtp_fail(reply_r, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
        return smtp_fail(reply_r, mail ? "501 5.1.7 Bad sender address syntax"
                                       : "501 5.1.3 Bad recipient address syntax");
    }

    /* Parameters: SP-separated keyword[=value]; extra spaces are tolerated. */
    if (after < end && *after != ' ') return smtp_fail(reply_r, syntax);
    for (const char *q = after; q < end; q++)
        if ((unsigned char)*q >= 0x80)
            return smtp_fail(reply_r, "500 5.5.2 Invalid characters in command");
    unsigned seen = 0;
    int count = 0;
    const char *s = after;
    for (;;) {
        const char *w;
        apr_size_t n;
        s = smtp_word(s, &w, &n);
        if (n == 0) break;
        if (++count > SMTP_MAX_PARAMS) return smtp_fail(reply_r, "501 5.5.4 Too many parameters");
        apr_size_t kn = 0;
        while (kn < n && smtp_keyword_char(w[kn], kn == 0))
            kn++;
        const char *val = NULL;
        apr_size_t vn = 0;
        if (kn < n) {
            if (kn == 0 || w[kn] != '=')
                return smtp_fail(reply_r, "501 5.5.4 Syntax error in parameters");
            val = w + kn + 1;
            vn = n - kn - 1;
            /* esmtp-value = 1*(%d33-60 / %d62-126) */
            if (vn == 0 || memchr(val, '=', vn))
                return smtp_fail(reply_r, "501 5.5.4 Syntax error in parameters");
        }
        if (kn == 0) return smtp_fail(reply_r, "501 5.5.4 Syntax error in parameters");
        apr_status_t st = smtp_param(cmd, mail, w, kn, val, vn, &seen, opts, reply_r, pool);
        if (st != APR_SUCCESS) return st;
    }

    /* RFC 6531 3.4: a UTF-8 path needs SMTPUTF8 on this transaction's MAIL. */
    if (cmd->path.utf8 && !(opts->smtputf8 && (mail ? cmd->smtputf8 : opts->mail_smtputf8)))
        return smtp_fail(reply_r, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
    return APR_SUCCESS;
}

/* BDAT SP chunk-size [SP end-marker] (RFC 3030 2) */
static apr_status_t smtp_parse_bdat(smtp_cmd_t *cmd, const char *arg, const char **reply_r)
{
    const char *w;
    apr_size_t n;
    const char *s = smtp_word(arg, &w, &n);
    if (!smtp_number(w, n, &cmd->chunk_size))
        return smtp_fail(reply_r, "501 5.5.4 Syntax: BDAT size [LAST]");
    s = smtp_word(s, &w, &n);
    if (n == 4 && strncasecmp(w, "LAST", 4) == 0) {
        cmd->last = 1;
        s = smtp_word(s, &w, &n);
    }
    if (n != 0) return smtp_fail(reply_r, "501 5.5.4 Syntax: BDAT size [LAST]");
    return APR_SUCCESS;
}

/* AUTH SP sasl-mech [SP initial-response] (RFC 4954 4) */
static apr_status_t smtp_parse_auth(smtp_cmd_t *cmd, const char *arg, const char **reply_r,
                                    apr_pool_t *pool)
{
    const char *syntax = "501 5.5.4 Syntax: AUTH mechanism [initial-response]";
    const char *w;
    apr_size_t n;
    const char *s = smtp_word(arg, &w, &n);
    if (n == 0 || n > SMTP_SASL_MECH_MAX) return smtp_fail(reply_r, syntax);
    char *mech = apr_pstrmemdup(pool, w, n);
    for (char *m = mech; *m; m++) {
        /* sasl-mech = 1*20(UPPER-ALPHA / DIGIT / "-" / "_"), case-insensitive here */
        if (*m >= 'a' && *m <= 'z') *m = (char)(*m - 'a' + 'A');
        if (!((*m >= 'A' && *m <= 'Z') || (*m >= '0' && *m <= '9') || *m == '-' || *m == '_'))
            return smtp_fail(reply_r, syntax);
    }
    cmd->mechanism = mech;
    s = smtp_word(s, &w, &n);
    if (n > 0) {
        /* base64 alphabet, or "=" for an empty response; decoding is the session's. */
        for (apr_size_t i = 0; i < n; i++) {
            char c = w[i];
            if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/' || c == '='))
                return smtp_fail(reply_r, "501 5.5.2 Cannot decode initial response");
        }
        cmd->initial_response = apr_pstrmemdup(pool, w, n);
        s = smtp_word(s, &w, &n);
        if (n != 0) return smtp_fail(reply_r, syntax);
    }
    return APR_SUCCESS;
}

static int smtp_blank(const char *s)
{
    return *smtp_skip_sp(s) == '\0';
}

apr_status_t smtp_parse(smtp_cmd_t *cmd, const char *line, apr_size_t len,
                        const smtp_parse_opts_t *opts, const char **reply_r, apr_pool_t *pool)
{
    static const smtp_parse_opts_t none = {0};
    int has8 = 0;

    memset(cmd, 0, sizeof(*cmd));
    cmd->size = -1;
    cmd->arg = "";
    *reply_r = NULL;
    if (!opts) opts = &none;

    /* NUL, CR, LF and other controls have no place in a command; a CR or LF
     * here would also be a line-ending trick. TAB is tolerated as space. */
    for (apr_size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if ((c < 32 && c != '\t') || c == 127)
            return smtp_fail(reply_r, "500 5.5.2 Invalid characters in command");
        if (c >= 0x80) has8 = 1;
    }
    cmd->verb = smtp_parse_verb(line, len);
    /* Only an RFC 6531 path may carry octets above 127. */
    if (has8 && cmd->verb != SMTP_CMD_MAIL && cmd->verb != SMTP_CMD_RCPT)
        return smtp_fail(reply_r, "500 5.5.2 Invalid characters in command");
    if (cmd->verb == SMTP_CMD_UNKNOWN) return smtp_fail(reply_r, "500 5.5.1 Command unrecognized");
    /* The session checks this before parsing; repeated so the parser is
     * bounded on its own (RFC 5321 4.5.3.1.4, CRLF included). */
    if (len + 2 > smtp_line_limit(cmd->verb)) return smtp_fail(reply_r, "500 5.5.2 Line too long");

    const char *text = apr_pstrmemdup(pool, line, len);
    const char *end = text + len;
    const char *arg = text;
    while (arg < end && *arg != ' ')
        arg++;
    if (arg < end) arg++;
    cmd->arg = arg;

    switch (cmd->verb) {
    case SMTP_CMD_HELO:
    case SMTP_CMD_EHLO: {
        /* Any printable word: real clients send junk names and must still
         * be able to deliver; the name is only logged and put in Received. */
        const char *w;
        apr_size_t n;
        const char *rest = smtp_word(arg, &w, &n);
        if (n == 0 || !smtp_blank(rest))
            return smtp_fail(reply_r, cmd->verb == SMTP_CMD_HELO
                                          ? "501 5.5.4 Syntax: HELO hostname"
                                          : "501 5.5.4 Syntax: EHLO hostname");
        cmd->arg = apr_pstrmemdup(pool, w, n);
        return APR_SUCCESS;
    }
    case SMTP_CMD_MAIL:
    case SMTP_CMD_RCPT:
        return smtp_parse_mailrcpt(cmd, arg, end, len, has8, opts, reply_r, pool);
    case SMTP_CMD_DATA:
    case SMTP_CMD_RSET:
    case SMTP_CMD_QUIT:
    case SMTP_CMD_STARTTLS:
        /* Trailing blanks are harmless; anything else is an argument. */
        if (!smtp_blank(arg)) {
            *reply_r = apr_psprintf(pool, "501 5.5.4 Syntax: %s takes no argument",
                                    cmd->verb == SMTP_CMD_DATA   ? "DATA"
                                    : cmd->verb == SMTP_CMD_RSET ? "RSET"
                                    : cmd->verb == SMTP_CMD_QUIT ? "QUIT"
                                                                 : "STARTTLS");
            return PR_EINVAL;
        }
        cmd->arg = "";
        return APR_SUCCESS;
    case SMTP_CMD_VRFY:
    case SMTP_CMD_EXPN:
        if (smtp_blank(arg))
            return smtp_fail(reply_r, cmd->verb == SMTP_CMD_VRFY
                                          ? "501 5.5.4 Syntax: VRFY address"
                                          : "501 5.5.4 Syntax: EXPN address");
        return APR_SUCCESS;
    case SMTP_CMD_BDAT:
        return smtp_parse_bdat(cmd, arg, reply_r);
    case SMTP_CMD_ETRN: {
        /* ETRN SP ( domain / "@" domain / "#" queue ) (RFC 1985 3); what
         * the node names is the session's business. */
        const char *w;
        apr_size_t n;
        const char *rest = smtp_word(arg, &w, &n);
        if (n == 0 || !smtp_blank(rest))
            return smtp_fail(reply_r, "501 5.5.4 Syntax: ETRN [@]domain");
        cmd->arg = apr_pstrmemdup(pool, w, n);
        return APR_SUCCESS;
    }
    case SMTP_CMD_AUTH:
        return smtp_parse_auth(cmd, arg, reply_r, pool);
    default:
        /* NOOP and HELP take anything; SEND/SOML/SAML/TURN get 502 later. */
        return APR_SUCCESS;
    }
}
