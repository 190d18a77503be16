/* libFuzzer harness for the POP3 command parser: any bytes must give a
 * command within the RFC 1939 / RFC 2449 limits or a one-line -ERR reply,
 * never a crash, leak or read past the input. */
#include <apr_general.h>
#include <apr_pools.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "service/core/status.h"
#include "service/pop3/pop3_parse.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    apr_initialize();
    return 0;
}

static void fz_check_ok(const pop3_cmd_t *cmd, const char *line, size_t size)
{
    if (cmd->verb <= POP3_CMD_UNKNOWN || cmd->verb >= POP3_CMD_COUNT) abort();
    if (cmd->verb != pop3_parse_verb(line, size)) abort();
    if (size + 2 > pop3_line_limit(cmd->verb)) abort();
    if (!cmd->arg || strlen(cmd->arg) != cmd->arg_len) abort();
    for (size_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 32 || c == 127) abort();
        if (c >= 128 && cmd->verb != POP3_CMD_USER && cmd->verb != POP3_CMD_PASS) abort();
    }
    switch (cmd->verb) {
    case POP3_CMD_USER:
    case POP3_CMD_PASS:
        if (cmd->arg_len == 0 || cmd->arg_len + 5 > size) abort();
        if (cmd->verb == POP3_CMD_USER && strchr(cmd->arg, ' ')) abort();
        break;
    case POP3_CMD_RETR:
    case POP3_CMD_DELE:
        if (cmd->msgno < 1) abort();
        break;
    case POP3_CMD_LIST:
    case POP3_CMD_UIDL:
        if (cmd->msgno < 0) abort();
        break;
    case POP3_CMD_TOP:
        if (cmd->msgno < 1 || cmd->lines < 0) abort();
        break;
    case POP3_CMD_AUTH:
        if (cmd->mechanism) {
            size_t n = strlen(cmd->mechanism);
            if (n == 0 || n > POP3_SASL_MECH_MAX) abort();
            for (const char *m = cmd->mechanism; *m; m++)
                if (!((*m >= 'A' && *m <= 'Z') || (*m >= '0' && *m <= '9') || *m == '-' ||
                      *m == '_'))
                    abort();
        } else if (cmd->initial_response) {
            abort();
        }
        break;
    default:
        if (cmd->msgno || cmd->lines || cmd->mechanism || cmd->arg_len) abort();
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *pool;
    /* A private copy of exactly size bytes: ASan sees any read past it. */
    char *s = malloc(size ? size : 1);
    if (!s) return 0;
    memcpy(s, data, size);
    if (apr_pool_create(&pool, NULL) != APR_SUCCESS) abort();

    pop3_cmd_t cmd;
    const char *reply = NULL;
    apr_status_t st = pop3_parse(&cmd, s, size, &reply, pool);
    if (st == APR_SUCCESS) {
        if (reply) abort();
        fz_check_ok(&cmd, s, size);
    } else {
        if (st != PR_EINVAL || !reply || strncmp(reply, "-ERR ", 5) != 0) abort();
        if (strchr(reply, '\r') || strchr(reply, '\n') || strlen(reply) > 100) abort();
    }
    (void)pop3_verb_name(cmd.verb);

    apr_pool_destroy(pool);
    free(s);
    return 0;
}
