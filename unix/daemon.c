/* postroomd on Unix: `-c FILE` to run (in the background with a pidfile, or
 * in the foreground with -f), `--check` to validate the config. Signals are
 * taken synchronously by the main thread (sigwait), so no mail logic ever
 * runs in a signal handler: SIGTERM/SIGINT stop gracefully, SIGHUP reloads. */
#include "unix/daemon.h"
#include "directory/directory.h"
#include "service/core/config.h"
#include "service/core/log.h"
#include "service/core/status.h"
#include "service/server.h"

#include <apr_general.h>
#include <apr_strings.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_CONFIG "/etc/postroom/postroom.conf"

static void usage(FILE *f)
{
    fprintf(f, "usage: postroomd [-c FILE] [-f] [--check]\n"
               "  -c FILE   configuration file (default " DEFAULT_CONFIG ")\n"
               "  -f        stay in the foreground (log to stderr unless configured)\n"
               "  --check   validate the configuration, reach the directory and exit\n"
               "            (0 = valid and reachable)\n");
}

static int pidfile_write(const char *path)
{
    char buf[32];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    int ok = write(fd, buf, (size_t)n) == n;
    return close(fd) == 0 && ok ? 0 : -1;
}

/* Fork into the background; the parent waits until the child reports that
 * it is listening (or why it is not), so `postroomd -c FILE` fails loudly. */
static int daemon_detach(int *report_fd)
{
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid > 0) {
        char msg[512];
        close(fds[1]);
        ssize_t n = read(fds[0], msg, sizeof(msg) - 1);
        if (n > 0 && msg[0] == 'O') exit(0);
        if (n > 0) {
            msg[n] = '\0';
            fprintf(stderr, "postroomd: %s\n", msg + 1);
        } else {
            fprintf(stderr, "postroomd: failed to start (see the log)\n");
        }
        exit(1);
    }
    close(fds[0]);
    setsid();
    if (fork() > 0) _exit(0);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        close(null);
    }
    *report_fd = fds[1];
    return 0;
}

static void daemon_report(int fd, const char *err)
{
    if (fd < 0) return;
    const char *msg = err ? apr_pstrcat(NULL, "E", err, NULL) : "O";
    if (write(fd, msg, strlen(msg)) < 0) { /* the parent is gone; nothing to tell */
    }
    close(fd);
}

/* Each connection is a descriptor, and the usual soft limit (1024) is below
 * max_connections' default (2000): take what the hard limit allows, up to
 * the connections plus room for the stores, logs and outbound work. Past
 * the limit accept fails and the connection waits in the backlog. */
static void raise_fd_limit(const pr_config_t *cfg)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)cfg->server.max_connections + 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        pr_log_warn(NULL, "cannot raise the descriptor limit: %s", strerror(errno));
    if (rl.rlim_cur < want)
        pr_log_warn(NULL, "descriptor limit %lu is below max_connections + 1024",
                    (unsigned long)rl.rlim_cur);
}

int pr_daemon_main(int argc, const char *const *argv)
{
    const char *conf = DEFAULT_CONFIG, *err = NULL;
    int foreground = 0, check = 0, report_fd = -1;
    apr_pool_t *pool;
    pr_config_t *cfg;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            conf = argv[++i];
        else if (strcmp(argv[i], "-f") == 0)
            foreground = 1;
        else if (strcmp(argv[i], "--check") == 0)
            check = 1;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    apr_pool_create(&pool, NULL);
    if (pr_config_load(&cfg, conf, &err, pool) != APR_SUCCESS) {
        fprintf(stderr, "postroomd: %s\n", err);
        return 1;
    }
    if (check) {
        /* The file is fine; now what the daemon will meet: the directory
         * (for LDAP: connect, bind, base, users), so a wrong password or
         * base shows here rather than as 451s for every recipient. */
        const char *report = NULL;
        printf("%s: configuration ok\n", conf);
        fflush(stdout);
        apr_status_t st = dir_check(cfg, &report, pool);
        if (st != APR_SUCCESS) {
            fprintf(stderr, "postroomd: %s\n", report ? report : "directory check failed");
            return 1;
        }
        printf("%s\n", report);
        return 0;
    }

    /* Every thread inherits this mask; the main thread takes signals with sigwait. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (!foreground && daemon_detach(&report_fd) != 0) {
        fprintf(stderr, "postroomd: cannot detach: %s\n", strerror(errno));
        return 1;
    }
    if (pr_log_open(cfg->server.log, cfg->server.log_level, pool) != APR_SUCCESS) {
        err = apr_psprintf(pool, "cannot open log %s", cfg->server.log);
        fprintf(stderr, "postroomd: %s\n", err);
        daemon_report(report_fd, err);
        return 1;
    }
    raise_fd_limit(cfg);
    pr_server_t *srv;
    if (pr_server_create(&srv, cfg, &err, pool) != APR_SUCCESS ||
        pr_server_start(srv) != APR_SUCCESS) {
        pr_log_error(NULL, "cannot start: %s", err ? err : "listener failed");
        if (foreground) fprintf(stderr, "postroomd: %s\n", err ? err : "cannot start");
        daemon_report(report_fd, err ? err : "cannot start");
        return 1;
    }
    if (pidfile_write(cfg->server.pidfile) != 0)
        pr_log_warn(NULL, "cannot write pidfile %s: %s", cfg->server.pidfile, strerror(errno));
    daemon_report(report_fd, NULL);
    if (!foreground && strcmp(cfg->server.log, "stderr") != 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 2);
            close(null);
        }
    }

    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) continue;
        if (sig == SIGHUP) {
            pr_log_reopen();
            if (pr_server_reload(srv, &err) != APR_SUCCESS)
                pr_log_error(NULL, "reload failed, keeping the old settings: %s", err);
            continue;
        }
        pr_log_info(NULL, "received %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    pr_server_stop(srv);
    unlink(cfg->server.pidfile);
    pr_log_close();
    return 0;
}
