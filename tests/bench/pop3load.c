/* Load client for tests/bench/pop3.sh: POP3 (RFC 1939) downloads and login
 * loops, an SMTP (RFC 5321) loader and a one-shot POP3 probe, on plain
 * sockets with one thread per client. Loopback (127.0.0.0/8) only.
 * Built by the script with `cc -O2 -pthread`; not part of the product.
 *
 *   pop3load probe    HOST PORT USER PASS
 *       USER/PASS/STAT/QUIT once; prints "ok COUNT SIZE", or "FAILED: <step>:
 *       <server reply>" and exits 1.
 *   pop3load download HOST PORT CLIENTS SESSIONS BOXES EXPECT USERFMT PASSFMT
 *       CLIENTS threads share SESSIONS sessions, spread evenly over the BOXES
 *       mailboxes; client k's j-th session is on mailbox (k + j * CLIENTS) mod
 *       BOXES (so client k starts with mailbox k), or on another one that
 *       still has sessions left if that one is in use: a mailbox is never
 *       used by two sessions at once (RFC 1939 8: servers may lock it).
 *       A session: USER, PASS, STAT, LIST, UIDL, RETR 1..n, QUIT (never
 *       DELE). Verifies: STAT count is EXPECT, LIST and UIDL list STAT's
 *       count, LIST sizes add up to STAT's size, each RETR's octets (after
 *       removing dot stuffing, without the terminator) equal its LIST size,
 *       lines end in CRLF, the data ends with CRLF.CRLF, the server closes
 *       after QUIT.
 *   pop3load login    HOST PORT CLIENTS SECONDS MAXLOGINS BOXES USERFMT PASSFMT
 *       each thread k loops: connect, greeting, USER, PASS, QUIT, wait for
 *       the server to close, as user k mod BOXES (another user not in use if
 *       CLIENTS > BOXES), until SECONDS have passed or MAXLOGINS (0 = no
 *       limit) logins were started in all.
 *   pop3load smtp     HOST PORT THREADS MSGDIR NMSGS BOXES RCPTFMT
 *       delivers MSGDIR/0000.eml .. (NMSGS-1) (CRLF files) to every mailbox:
 *       thread t takes mailboxes t, t+THREADS, ..., each in message order, one
 *       transaction per message and recipient, 100 messages per connection.
 *
 * USERFMT/PASSFMT/RCPTFMT contain one %d (the mailbox number), e.g.
 * "u%d@example.test". download/login print one line on stdout:
 *   "sessions messages octets wire_bytes errors wall_s"
 * octets = message octets as counted for LIST; wire_bytes = everything read
 * from the sockets; wall_s from the moment all threads start to the last
 * one's end. The first errors go to stderr; the exit code is 0 even with
 * errors (the caller reads the count), 2 on bad usage. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define LINE_MAX_LEN 4096   /* status and listing lines; longer is an error */
#define IO_TIMEOUT_S 60     /* per read/write: a stuck server is an error, not a hang */
#define MAX_REPORTED 10

/* ------------------------------------------------------------ shared state */
static struct sockaddr_in g_addr;
static const char *g_userfmt, *g_passfmt;
static int g_boxes, g_expect;
static double g_deadline; /* login mode */
static long g_maxlogins;
static atomic_long g_next;  /* logins started */
static atomic_int g_reported;
static pthread_barrier_t g_start;

static void report(const char *fmt, ...)
{
    if (atomic_fetch_add(&g_reported, 1) >= MAX_REPORTED) return;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "error: %s\n", msg);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ connection */
typedef struct {
    int fd;
    char *buf;
    size_t r, w;
    unsigned long long wire; /* bytes read */
} conn_t;

static int conn_open(conn_t *c)
{
    c->r = c->w = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return -1;
    struct timeval tv = {IO_TIMEOUT_S, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&g_addr, sizeof g_addr) != 0) {
        int e = errno;
        close(c->fd);
        c->fd = -1;
        errno = e;
        return -1;
    }
    return 0;
}

static void conn_close(conn_t *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

/* Read more into the buffer; -1 on EOF, error or timeout. */
static int conn_fill(conn_t *c)
{
    if (c->r == c->w) c->r = c->w = 0;
    if (c->w == BUF_SIZE) {
        if (c->r == 0) return -1;
        memmove(c->buf, c->buf + c->r, c->w - c->r);
        c->w -= c->r;
        c->r = 0;
    }
    ssize_t n;
    errno = 0; /* EOF sets none: conn_line reports "EOF", not a stale error */
    do n = recv(c->fd, c->buf + c->w, BUF_SIZE - c->w, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return -1;
    c->w += (size_t)n;
    c->wire += (unsigned long long)n;
    return 0;
}

static int conn_write(conn_t *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int conn_printf(conn_t *c, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) return -1;
    return conn_write(c, line, (size_t)n);
}

/* One line without its CRLF into out. Returns 0, or -1 (connection lost or
 * line over LINE_MAX_LEN: out says which). */
static int conn_line(conn_t *c, char *out, size_t outsz)
{
    for (;;) {
        char *nl = memchr(c->buf + c->r, '\n', c->w - c->r);
        if (nl) {
            size_t n = (size_t)(nl - (c->buf + c->r));
            size_t m = n;
            if (m > 0 && c->buf[c->r + m - 1] == '\r') m--;
            if (m >= outsz) m = outsz - 1;
            memcpy(out, c->buf + c->r, m);
            out[m] = 0;
            c->r += n + 1;
            return 0;
        }
        if (c->w - c->r > LINE_MAX_LEN) {
            snprintf(out, outsz, "(line longer than %d bytes)", LINE_MAX_LEN);
            return -1;
        }
        if (conn_fill(c) != 0) {
            snprintf(out, outsz, "(connection closed or timed out: %s)",
                     errno ? strerror(errno) : "EOF");
            return -1;
        }
    }
}

/* Wait for the server to close (after QUIT): 0 on EOF, -1 if data or timeout. */
static int conn_wait_eof(conn_t *c)
{
    if (c->r != c->w) return -1;
    char tmp[256];
    ssize_t n;
    do n = recv(c->fd, tmp, sizeof tmp, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0) c->wire += (unsigned long long)n;
    return n == 0 ? 0 : -1;
}

/* ------------------------------------------------------------ POP3 */
typedef struct {
    conn_t c;
    char line[LINE_MAX_LEN + 1];
    const char *what; /* current step, for error messages */
    long messages;
    unsigned long long octets;
    long errors, sessions;
} client_t;

/* Send a command (or nothing if cmd is NULL) and read a +OK line. */
static int pop_cmd(client_t *cl, const char *what, const char *cmd)
{
    cl->what = what;
    if (cmd && conn_write(&cl->c, cmd, strlen(cmd)) != 0) {
        snprintf(cl->line, sizeof cl->line, "(send failed: %s)", strerror(errno));
        return -1;
    }
    if (conn_line(&cl->c, cl->line, sizeof cl->line) != 0) return -1;
    return strncmp(cl->line, "+OK", 3) == 0 ? 0 : -1;
}

static void fmt_arg(char *out, size_t n, const char *fmt, int k)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(out, n, fmt, k);
#pragma GCC diagnostic pop
}

/* Greeting, USER, PASS for mailbox box. */
static int pop_login(client_t *cl, int box)
{
    char user[256], pass[256], cmd[600];
    fmt_arg(user, sizeof user, g_userfmt, box);
    fmt_arg(pass, sizeof pass, g_passfmt, box);
    if (pop_cmd(cl, "greeting", NULL) != 0) return -1;
    snprintf(cmd, sizeof cmd, "USER %s\r\n", user);
    if (pop_cmd(cl, "USER", cmd) != 0) return -1;
    snprintf(cmd, sizeof cmd, "PASS %s\r\n", pass);
    if (pop_cmd(cl, "PASS", cmd) != 0) return -1;
    return 0;
}

static int pop_quit(client_t *cl)
{
    if (pop_cmd(cl, "QUIT", "QUIT\r\n") != 0) return -1;
    cl->what = "close after QUIT";
    if (conn_wait_eof(&cl->c) != 0) {
        snprintf(cl->line, sizeof cl->line, "(the server did not close the connection)");
        return -1;
    }
    return 0;
}

/* Read a multi-line response body (after its +OK line) up to ".CRLF" and
 * count the octets the message has without dot stuffing. Sets *bad to a
 * description of a format problem (bare LF, unstuffed dot) or NULL. */
static int pop_read_data(client_t *cl, unsigned long long *octets, const char **bad)
{
    enum { BOL, MID, DOT, DOTCR } st = BOL;
    unsigned long long n = 0;
    char last = '\n';
    conn_t *c = &cl->c;
    *bad = NULL;
    for (;;) {
        if (c->r == c->w && conn_fill(c) != 0) {
            snprintf(cl->line, sizeof cl->line, "(connection lost in the data after %llu octets)", n);
            return -1;
        }
        char *p = c->buf + c->r, *e = c->buf + c->w;
        while (p < e) {
            switch (st) {
            case BOL:
                if (*p == '.') { st = DOT; p++; }
                else st = MID;
                break;
            case DOT: /* the first dot of a line is stuffing (RFC 1939 3) */
                if (*p == '\r') { st = DOTCR; p++; break; }
                if (*p != '.' && !*bad) *bad = "a line starts with an unstuffed '.'";
                last = '.';
                st = MID;
                break;
            case DOTCR:
                if (*p == '\n') { /* ".CRLF" at the start of a line: the end */
                    c->r = (size_t)(p + 1 - c->buf);
                    *octets = n;
                    return 0;
                }
                if (!*bad) *bad = "a line is '.' CR without LF";
                n++; /* the CR is data */
                last = '\r';
                st = MID;
                break;
            case MID: {
                char *nl = memchr(p, '\n', (size_t)(e - p));
                if (!nl) {
                    n += (unsigned long long)(e - p);
                    last = e[-1];
                    p = e;
                    break;
                }
                char before = nl > p ? nl[-1] : last;
                if (before != '\r' && !*bad) *bad = "a line ends in a bare LF";
                n += (unsigned long long)(nl - p + 1);
                last = '\n';
                p = nl + 1;
                st = BOL;
                break;
            }
            }
        }
        c->r = c->w;
    }
}

/* Read a listing ("n value" lines up to "."); vals[i-1] gets the value of
 * message i (NULL: values ignored). Returns the number of lines or -1. */
static long pop_read_listing(client_t *cl, long *vals, long maxn, int want_uid)
{
    long count = 0;
    for (;;) {
        if (conn_line(&cl->c, cl->line, sizeof cl->line) != 0) return -1;
        if (strcmp(cl->line, ".") == 0) return count;
        char *end;
        long num = strtol(cl->line, &end, 10);
        if (end == cl->line || *end != ' ' || num != count + 1) {
            char tmp[LINE_MAX_LEN + 1];
            snprintf(tmp, sizeof tmp, "%s", cl->line);
            snprintf(cl->line, sizeof cl->line, "(listing line %ld is '%.200s')", count + 1, tmp);
            return -1;
        }
        if (want_uid) {
            if (end[1] == 0) {
                snprintf(cl->line, sizeof cl->line, "(empty unique-id for message %ld)", num);
                return -1;
            }
        } else if (vals && count < maxn) {
            vals[count] = strtol(end + 1, NULL, 10);
        }
        count++;
    }
}

static void pop_fail(client_t *cl, int box)
{
    cl->errors++;
    report("mailbox %d: %s: %s", box, cl->what ? cl->what : "?", cl->line);
}

/* One download session of mailbox box. */
static void pop_download(client_t *cl, int box, long *sizes, long maxn)
{
    char cmd[64];
    long st_n, st_size;
    cl->what = "connect";
    if (conn_open(&cl->c) != 0) {
        snprintf(cl->line, sizeof cl->line, "(%s)", strerror(errno));
        pop_fail(cl, box);
        return;
    }
    if (pop_login(cl, box) != 0) goto fail;
    if (pop_cmd(cl, "STAT", "STAT\r\n") != 0) goto fail;
    if (sscanf(cl->line, "+OK %ld %ld", &st_n, &st_size) != 2 || st_n < 0) goto fail;
    if (st_n != g_expect) {
        char tmp[LINE_MAX_LEN + 1];
        snprintf(tmp, sizeof tmp, "%s", cl->line);
        snprintf(cl->line, sizeof cl->line, "%.200s (expected %d messages)", tmp, g_expect);
        goto fail;
    }
    if (st_n > maxn) st_n = maxn;
    if (pop_cmd(cl, "LIST", "LIST\r\n") != 0) goto fail;
    long ln = pop_read_listing(cl, sizes, maxn, 0);
    if (ln < 0) goto fail;
    long sum = 0;
    for (long i = 0; i < ln; i++) sum += sizes[i];
    if (ln != st_n || sum != st_size) {
        snprintf(cl->line, sizeof cl->line, "(LIST has %ld messages, %ld octets; STAT said %ld, %ld)",
                 ln, sum, st_n, st_size);
        goto fail;
    }
    if (pop_cmd(cl, "UIDL", "UIDL\r\n") != 0) goto fail;
    long un = pop_read_listing(cl, NULL, 0, 1);
    if (un < 0) goto fail;
    if (un != st_n) {
        snprintf(cl->line, sizeof cl->line, "(UIDL lists %ld messages, STAT %ld)", un, st_n);
        goto fail;
    }
    for (long i = 1; i <= st_n; i++) {
        snprintf(cmd, sizeof cmd, "RETR %ld\r\n", i);
        if (pop_cmd(cl, "RETR", cmd) != 0) goto fail;
        unsigned long long oct;
        const char *bad;
        if (pop_read_data(cl, &oct, &bad) != 0) goto fail;
        if (oct != (unsigned long long)sizes[i - 1] || bad) {
            cl->errors++;
            report("mailbox %d: RETR %ld: %llu octets, LIST said %ld%s%s", box, i, oct,
                   sizes[i - 1], bad ? "; " : "", bad ? bad : "");
            continue; /* still in sync: the terminator was found */
        }
        cl->messages++;
        cl->octets += oct;
    }
    if (pop_quit(cl) != 0) goto fail;
    cl->sessions++;
    conn_close(&cl->c);
    return;
fail:
    pop_fail(cl, box);
    conn_close(&cl->c);
}

/* Mailboxes in use: RFC 1939 (section 8) lets a server lock the maildrop
 * for the whole session, and postroomd does, so no two sessions ever use
 * the same mailbox at once. A session takes its preferred mailbox if it is
 * free and has sessions left, else the next free one in turn, else waits. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static long *g_remaining; /* sessions left per mailbox */
static char *g_busy;
static long g_left; /* sessions left in all */
static int g_cursor;

static int box_take(int pref)
{
    pthread_mutex_lock(&g_mu);
    for (;;) {
        if (g_left <= 0) {
            pthread_mutex_unlock(&g_mu);
            return -1;
        }
        int b = -1;
        if (pref >= 0 && !g_busy[pref] && g_remaining[pref] > 0) b = pref;
        for (int i = 0; b < 0 && i < g_boxes; i++) {
            int c = (g_cursor + i) % g_boxes;
            if (!g_busy[c] && g_remaining[c] > 0) {
                b = c;
                g_cursor = (c + 1) % g_boxes;
            }
        }
        if (b >= 0) {
            g_busy[b] = 1;
            g_remaining[b]--;
            g_left--;
            pthread_mutex_unlock(&g_mu);
            return b;
        }
        pthread_cond_wait(&g_cv, &g_mu);
    }
}

static void box_release(int b)
{
    pthread_mutex_lock(&g_mu);
    g_busy[b] = 0;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static void boxes_init(long sessions)
{
    g_remaining = calloc((size_t)g_boxes, sizeof *g_remaining);
    g_busy = calloc((size_t)g_boxes, 1);
    if (!g_remaining || !g_busy) abort();
    for (int b = 0; b < g_boxes; b++)
        g_remaining[b] = sessions < 0 ? 1L << 40 : sessions / g_boxes + (b < sessions % g_boxes);
    g_left = sessions < 0 ? 1L << 62 : sessions;
}

static int g_nclients;

typedef struct {
    client_t cl;
    int k;
} client_arg_t;

/* Client k's j-th session prefers mailbox (k + j * CLIENTS) mod BOXES: when
 * CLIENTS divides BOXES, each client has its own mailboxes and never waits. */
static void *download_thread(void *arg)
{
    client_arg_t *ca = arg;
    client_t *cl = &ca->cl;
    long maxn = g_expect + 1000;
    long *sizes = malloc(sizeof(long) * (size_t)maxn);
    if (!sizes) abort();
    pthread_barrier_wait(&g_start);
    for (long j = 0;; j++) {
        int box = box_take((int)((ca->k + j * g_nclients) % g_boxes));
        if (box < 0) break;
        pop_download(cl, box, sizes, maxn);
        box_release(box);
    }
    free(sizes);
    return NULL;
}

static void *login_loop(void *arg)
{
    client_arg_t *ca = arg;
    client_t *cl = &ca->cl;
    pthread_barrier_wait(&g_start);
    while (now() < g_deadline) {
        if (g_maxlogins > 0 && atomic_fetch_add(&g_next, 1) >= g_maxlogins) break;
        int box = box_take(ca->k % g_boxes);
        if (now() >= g_deadline) {
            box_release(box);
            break;
        }
        cl->what = "connect";
        if (conn_open(&cl->c) != 0) {
            snprintf(cl->line, sizeof cl->line, "(%s)", strerror(errno));
            pop_fail(cl, box);
        } else {
            if (pop_login(cl, box) != 0 || pop_quit(cl) != 0) pop_fail(cl, box);
            else cl->sessions++;
            conn_close(&cl->c);
        }
        box_release(box);
    }
    return NULL;
}

/* ------------------------------------------------------------ SMTP loader */
static char **g_msgs;
static size_t *g_msglen;
static int g_nmsgs;
static const char *g_rcptfmt;

/* One SMTP reply (multi-line aware); returns its code or -1. */
static int smtp_reply(conn_t *c, char *line, size_t n)
{
    for (;;) {
        if (conn_line(c, line, n) != 0) return -1;
        if (strlen(line) < 3) return -1;
        if (line[3] != '-') return atoi(line);
    }
}

typedef struct {
    int t, nthreads;
    long sent, errors;
} smtp_arg_t;

static void *smtp_thread(void *arg)
{
    smtp_arg_t *a = arg;
    conn_t c = {.fd = -1, .buf = malloc(BUF_SIZE)};
    char line[LINE_MAX_LEN + 1], rcpt[256];
    if (!c.buf) abort();
    for (int box = a->t; box < g_boxes; box += a->nthreads) {
        fmt_arg(rcpt, sizeof rcpt, g_rcptfmt, box);
        for (int i = 0; i < g_nmsgs; i++) {
            const char *step = "connect";
            if (c.fd < 0) {
                if (conn_open(&c) != 0) {
                    snprintf(line, sizeof line, "(%s)", strerror(errno));
                    goto fail;
                }
                step = "greeting";
                if (smtp_reply(&c, line, sizeof line) != 220) goto fail;
                step = "EHLO";
                if (conn_printf(&c, "EHLO loader.bench.example.test\r\n") != 0 ||
                    smtp_reply(&c, line, sizeof line) != 250)
                    goto fail;
            }
            step = "MAIL";
            if (conn_printf(&c, "MAIL FROM:<sender@example.net>\r\n") != 0 ||
                smtp_reply(&c, line, sizeof line) != 250)
                goto fail;
            step = "RCPT";
            if (conn_printf(&c, "RCPT TO:<%s>\r\n", rcpt) != 0 ||
                smtp_reply(&c, line, sizeof line) / 10 != 25)
                goto fail;
            step = "DATA";
            if (conn_printf(&c, "DATA\r\n") != 0 || smtp_reply(&c, line, sizeof line) != 354)
                goto fail;
            step = "end of DATA";
            if (conn_write(&c, g_msgs[i], g_msglen[i]) != 0 || conn_write(&c, ".\r\n", 3) != 0 ||
                smtp_reply(&c, line, sizeof line) != 250)
                goto fail;
            a->sent++;
            if ((i + 1) % 100 == 0 || i + 1 == g_nmsgs) {
                if (conn_printf(&c, "QUIT\r\n") == 0) smtp_reply(&c, line, sizeof line);
                conn_close(&c);
            }
            continue;
        fail:
            a->errors++;
            report("smtp to %s, message %d: %s: %s", rcpt, i, step, line);
            conn_close(&c);
        }
    }
    free(c.buf);
    return NULL;
}

/* Load the messages, dot-stuffed for DATA (RFC 5321 4.5.2). */
static int load_messages(const char *dir, int n)
{
    g_msgs = calloc((size_t)n, sizeof *g_msgs);
    g_msglen = calloc((size_t)n, sizeof *g_msglen);
    if (!g_msgs || !g_msglen) return -1;
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%04d.eml", dir, i);
        FILE *f = fopen(path, "rb");
        if (!f) { perror(path); return -1; }
        struct stat sb;
        if (fstat(fileno(f), &sb) != 0) { perror(path); fclose(f); return -1; }
        size_t len = (size_t)sb.st_size;
        char *raw = malloc(len + 1), *out = malloc(2 * len + 3);
        if (!raw || !out || fread(raw, 1, len, f) != len) { perror(path); fclose(f); return -1; }
        fclose(f);
        size_t o = 0;
        int bol = 1;
        for (size_t k = 0; k < len; k++) {
            if (bol && raw[k] == '.') out[o++] = '.';
            out[o++] = raw[k];
            bol = raw[k] == '\n';
        }
        if (!bol) { out[o++] = '\r'; out[o++] = '\n'; }
        free(raw);
        g_msgs[i] = out;
        g_msglen[i] = o;
    }
    return 0;
}

/* ------------------------------------------------------------ main */
static int usage(void)
{
    fprintf(stderr,
            "usage: pop3load probe HOST PORT USER PASS\n"
            "       pop3load download HOST PORT CLIENTS SESSIONS BOXES EXPECT USERFMT PASSFMT\n"
            "       pop3load login HOST PORT CLIENTS SECONDS MAXLOGINS BOXES USERFMT PASSFMT\n"
            "       pop3load smtp HOST PORT THREADS MSGDIR NMSGS BOXES RCPTFMT\n");
    return 2;
}

/* Exactly one %d and no other conversion. */
static int fmt_ok(const char *f)
{
    const char *p = strchr(f, '%');
    return p && p[1] == 'd' && !strchr(p + 2, '%');
}

static int set_addr(const char *host, const char *port)
{
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((unsigned short)atoi(port));
    if (inet_pton(AF_INET, host, &g_addr.sin_addr) != 1 ||
        (ntohl(g_addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "pop3load: %s is not a 127.0.0.0/8 address; loopback only\n", host);
        return -1;
    }
    return 0;
}

static int run_probe(const char *user, const char *pass)
{
    client_t cl = {.c = {.fd = -1, .buf = malloc(BUF_SIZE)}};
    char cmd[600];
    long n = -1, size = -1;
    if (!cl.c.buf) abort();
    cl.what = "connect";
    if (conn_open(&cl.c) != 0) {
        printf("FAILED: connect: %s\n", strerror(errno));
        return 1;
    }
    if (pop_cmd(&cl, "greeting", NULL) != 0) goto fail;
    snprintf(cmd, sizeof cmd, "USER %s\r\n", user);
    if (pop_cmd(&cl, "USER", cmd) != 0) goto fail;
    snprintf(cmd, sizeof cmd, "PASS %s\r\n", pass);
    if (pop_cmd(&cl, "PASS", cmd) != 0) goto fail;
    if (pop_cmd(&cl, "STAT", "STAT\r\n") != 0) goto fail;
    if (sscanf(cl.line, "+OK %ld %ld", &n, &size) != 2) goto fail;
    if (pop_quit(&cl) != 0) goto fail;
    printf("ok %ld %ld\n", n, size);
    return 0;
fail:
    printf("FAILED: %s: %s\n", cl.what, cl.line);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 4) return usage();
    const char *mode = argv[1];
    if (set_addr(argv[2], argv[3]) != 0) return 2;
    setvbuf(stderr, NULL, _IOLBF, 0);

    if (strcmp(mode, "probe") == 0) {
        if (argc != 6) return usage();
        return run_probe(argv[4], argv[5]);
    }

    if (strcmp(mode, "smtp") == 0) {
        if (argc != 9) return usage();
        int nt = atoi(argv[4]);
        g_nmsgs = atoi(argv[6]);
        g_boxes = atoi(argv[7]);
        g_rcptfmt = argv[8];
        if (nt < 1 || g_nmsgs < 1 || g_boxes < 1 || !fmt_ok(g_rcptfmt)) return usage();
        if (load_messages(argv[5], g_nmsgs) != 0) return 1;
        if (nt > g_boxes) nt = g_boxes;
        smtp_arg_t *a = calloc((size_t)nt, sizeof *a);
        pthread_t *th = calloc((size_t)nt, sizeof *th);
        double t0 = now();
        for (int t = 0; t < nt; t++) {
            a[t].t = t;
            a[t].nthreads = nt;
            if (pthread_create(&th[t], NULL, smtp_thread, &a[t]) != 0) abort();
        }
        long sent = 0, errors = 0;
        for (int t = 0; t < nt; t++) {
            pthread_join(th[t], NULL);
            sent += a[t].sent;
            errors += a[t].errors;
        }
        printf("%ld %ld %.3f\n", sent, errors, now() - t0);
        return 0;
    }

    int download = strcmp(mode, "download") == 0;
    if (!download && strcmp(mode, "login") != 0) return usage();
    if (argc != 10) return usage();
    g_nclients = atoi(argv[4]);
    g_userfmt = argv[8];
    g_passfmt = argv[9];
    if (g_nclients < 1 || !fmt_ok(g_userfmt) || !fmt_ok(g_passfmt)) return usage();
    if (download) {
        long sessions = atol(argv[5]);
        g_boxes = atoi(argv[6]);
        g_expect = atoi(argv[7]);
        if (sessions < 1 || g_boxes < 1 || g_expect < 0) return usage();
        boxes_init(sessions);
    } else {
        g_maxlogins = atol(argv[6]);
        g_boxes = atoi(argv[7]);
        if (atof(argv[5]) <= 0 || g_boxes < 1) return usage();
        boxes_init(-1);
    }

    client_arg_t *cl = calloc((size_t)g_nclients, sizeof *cl);
    pthread_t *th = calloc((size_t)g_nclients, sizeof *th);
    if (!cl || !th) abort();
    if (pthread_barrier_init(&g_start, NULL, (unsigned)g_nclients + 1) != 0) abort();
    for (int k = 0; k < g_nclients; k++) {
        cl[k].k = k;
        cl[k].cl.c.fd = -1;
        cl[k].cl.c.buf = malloc(BUF_SIZE);
        if (!cl[k].cl.c.buf) abort();
        if (pthread_create(&th[k], NULL, download ? download_thread : login_loop, &cl[k]) != 0) {
            fprintf(stderr, "pop3load: cannot start thread %d\n", k);
            return 1;
        }
    }
    if (!download) g_deadline = now() + atof(argv[5]); /* read only after the barrier */
    pthread_barrier_wait(&g_start);
    double t0 = now();
    long sessions = 0, messages = 0, errors = 0;
    unsigned long long octets = 0, wire = 0;
    for (int k = 0; k < g_nclients; k++) {
        pthread_join(th[k], NULL);
        sessions += cl[k].cl.sessions;
        messages += cl[k].cl.messages;
        errors += cl[k].cl.errors;
        octets += cl[k].cl.octets;
        wire += cl[k].cl.c.wire;
    }
    double wall = now() - t0;
    printf("%ld %ld %llu %llu %ld %.3f\n", sessions, messages, octets, wire, errors, wall);
    return 0;
}
