/* libFuzzer harness for postroom.conf parsing: any byte string must yield a
 * config or one error message, never a crash, leak or overflow. */
#include <apr_general.h>
#include <apr_pools.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "service/core/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    apr_initialize();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *pool;
    pr_config_t *cfg = NULL;
    const char *err = NULL;
    /* The parser takes a C string; a copy also lets ASan see reads past it. */
    char *text = malloc(size + 1);

    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (apr_pool_create(&pool, NULL) != APR_SUCCESS) abort();
    if (pr_config_parse_string(&cfg, text, "fuzz.conf", &err, pool) == APR_SUCCESS) {
        /* Touch what other modules rely on after a successful parse. */
        if (!cfg->server.pidfile || !cfg->server.hostname || !cfg->server.data_dir) abort();
        for (int i = 0; i < cfg->smtp.listen.n; i++)
            if (!cfg->smtp.listen.v[i].host || cfg->smtp.listen.v[i].port == 0) abort();
        (void)pr_config_min_free_space(cfg);
        (void)pr_config_is_local_domain(cfg, "example.org");
        (void)pr_cidr_match_text(cfg->smtp.relay_networks.v, cfg->smtp.relay_networks.n,
                                 "::ffff:127.0.0.1");
    } else if (!err || strncmp(err, "fuzz.conf:", 10) != 0) {
        abort();
    }
    apr_pool_destroy(pool);
    free(text);
    return 0;
}
