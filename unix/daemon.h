/* The Unix face of postroomd: arguments, daemonizing, pidfile, signals. */
#ifndef PR_UNIX_DAEMON_H
#define PR_UNIX_DAEMON_H

/* Runs postroomd; returns the process exit code. */
int pr_daemon_main(int argc, const char *const *argv);

#endif
