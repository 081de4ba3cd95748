/*
 * ha-keepalived: carries keepalived's VRRP decisions to an ha-node through
 * libconfd_ha, as a ConfD HA framework does.
 *
 * It reads keepalived's notify FIFO (`vrrp_notify_fifo` / `notify_fifo`),
 * one line per state change, in order:
 *
 *     INSTANCE "VI_HA" MASTER 100
 *
 * and keeps one HA control connection to its own node open for its whole
 * life (one HA control connection per node, as ConfD frameworks do):
 *
 *   MASTER        -> confd_ha_beprimary(own id)
 *   BACKUP        -> confd_ha_besecondary(own id, the current primary), the
 *                    current primary found by asking each peer for its state
 *                    (cha_data_node_state over a data connection)
 *   FAULT, STOP   -> confd_ha_benone()
 *   keepalived gone -> confd_ha_benone() (a node must not stay primary
 *                    without its framework): checked every interval, the
 *                    process in --keepalived-pidfile no longer running. A
 *                    closed FIFO alone is not enough: a reload closes and
 *                    reopens it, and the role stays
 *
 * Every RECONCILE_INTERVAL_MS (and after each event) it compares the node's
 * state (confd_ha_get_status) with what keepalived last said and acts again
 * when they differ: a BACKUP whose primary died (no new VRRP event on this
 * node) re-joins the new primary that way, and a node restarted by its
 * supervisor gets its role back.
 *
 * usage: ha-keepalived --fifo PATH --id NODE_ID [--ipc HOST:PORT]
 *            --peer ID=HOST[:IPC_PORT] ... [--token-file FILE]
 *            [--instance NAME] [--async] [--interval-ms MS]
 *            [--keepalived-pidfile FILE]   (default /run/keepalived.pid)
 *
 * A peer's HOST is also its HA address (the HA port is cluster-wide, see
 * ha-node --ha-addr). The token comes from --token-file, else HA_CTL_TOKEN.
 * Logs go to stderr, one line per action.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <confd_lib.h>
#include <confd_ha.h>
#include <cha.h>

/* How often the node's state is compared with keepalived's, in ms. */
#define RECONCILE_INTERVAL_MS_DEFAULT 500
/* Connect / read timeout of a peer state query, in ms. */
#define PEER_TIMEOUT_MS 1000
/* At most this many peers. */
#define MAX_PEERS 16
/* Longest FIFO line kept; longer lines are dropped with a log line. */
#define MAX_LINE_BYTES 512
/* After the FIFO closes, the pause before it is opened again, in ms. */
#define FIFO_REOPEN_PAUSE_MS 200
/* Longest token read from --token-file. */
#define MAX_TOKEN_BYTES 1024

enum want { W_UNKNOWN, W_MASTER, W_BACKUP, W_NONE };

struct peer {
    char id[128];
    char host[128];
    char port[16];
};

static const char *fifo_path, *my_id, *instance, *ka_pidfile = "/run/keepalived.pid";
static char my_host[128] = "127.0.0.1", my_port[16] = "4565";
static struct peer peers[MAX_PEERS];
static int npeers, async_join, interval_ms = RECONCILE_INTERVAL_MS_DEFAULT;
static char token[MAX_TOKEN_BYTES];
static int ha_sock = -1;
static enum want want = W_UNKNOWN;
static volatile sig_atomic_t stopping;

static void logf_(const char *fmt, ...)
{
    struct timespec ts;
    struct tm tm;
    char buf[32];
    va_list ap;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(buf, sizeof buf, "%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ ha-keepalived[%s]: ", buf, ts.tv_nsec / 1000000, my_id ? my_id : "?");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int resolve(const char *host, const char *port, struct sockaddr_storage *ss, socklen_t *len)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        logf_("cannot resolve %s:%s: %s", host, port, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

/* The HA control connection to our own node, opened when missing. */
static int ha_conn(void)
{
    static int last_errno_logged = -1;
    struct sockaddr_storage ss;
    socklen_t len;
    if (ha_sock >= 0) return ha_sock;
    if (resolve(my_host, my_port, &ss, &len) < 0) return -1;
    int s = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    if (confd_ha_connect(s, (struct sockaddr *)&ss, (int)len, token) != CONFD_OK) {
        if (confd_errno != last_errno_logged)
            logf_("HA connect to %s:%s failed: %s (%s)", my_host, my_port,
                  confd_strerror(confd_errno), confd_lasterr());
        last_errno_logged = confd_errno;
        close(s);
        return -1;
    }
    last_errno_logged = -1;
    logf_("HA control connection to %s:%s open", my_host, my_port);
    ha_sock = s;
    return s;
}

static void ha_drop(const char *what)
{
    logf_("%s failed: %s (%s); reconnecting", what, confd_strerror(confd_errno), confd_lasterr());
    if (ha_sock >= 0) close(ha_sock);
    ha_sock = -1;
}

/* Asks peer p for its state over a data connection with timeouts. */
static int peer_state(const struct peer *p, struct cha_node_state *st)
{
    struct sockaddr_storage ss;
    socklen_t len;
    struct timeval tv = {PEER_TIMEOUT_MS / 1000, (PEER_TIMEOUT_MS % 1000) * 1000};
    if (resolve(p->host, p->port, &ss, &len) < 0) return -1;
    int s = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    /* SO_SNDTIMEO bounds connect(2) on Linux; SO_RCVTIMEO the replies. */
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int rc = cha_data_connect(s, (struct sockaddr *)&ss, (int)len);
    if (rc == CONFD_OK) rc = cha_data_node_state(s, st);
    close(s);
    return rc == CONFD_OK ? 0 : -1;
}

/* The one peer that says it is primary; NULL when none or several do. */
static const struct peer *find_primary(void)
{
    static struct cha_node_state st; /* 68 KB: not on the stack */
    const struct peer *found = NULL;
    int n = 0;
    for (int i = 0; i < npeers; i++) {
        if (peer_state(&peers[i], &st) == 0 && st.role == CHA_ROLE_PRIMARY) {
            found = &peers[i];
            n++;
        }
    }
    if (n > 1) {
        logf_("%d peers say they are primary; waiting for keepalived to settle", n);
        return NULL;
    }
    return found;
}

static void set_buf(confd_value_t *v, const char *s)
{
    CONFD_SET_BUF(v, (unsigned char *)s, strlen(s));
}

static void reconcile(void)
{
    static struct confd_ha_status st; /* 80 KB: not on the stack */
    static int waiting_logged;
    confd_value_t me;
    if (want == W_UNKNOWN) return;
    int s = ha_conn();
    if (s < 0) return;
    if (confd_ha_get_status(s, &st) != CONFD_OK) {
        ha_drop("confd_ha_get_status");
        return;
    }
    set_buf(&me, my_id);
    switch (want) {
    case W_MASTER:
        if (st.state == CONFD_HA_STATE_PRIMARY) return;
        logf_("keepalived says MASTER: confd_ha_beprimary(%s)", my_id);
        if (confd_ha_beprimary(s, &me) != CONFD_OK) ha_drop("confd_ha_beprimary");
        else logf_("node is primary");
        return;
    case W_BACKUP: {
        const struct peer *p = find_primary();
        if (!p) {
            if (!waiting_logged) logf_("keepalived says BACKUP; no peer is primary yet, waiting");
            waiting_logged = 1;
            return;
        }
        waiting_logged = 0;
        if ((st.state == CONFD_HA_STATE_SECONDARY || st.state == CONFD_HA_STATE_SECONDARY_RELAY) &&
            st.num_nodes > 0 && st.nodes[0].nodeid.type == C_BUF &&
            strcmp((const char *)st.nodes[0].buf, p->id) == 0)
            return; /* already a secondary of the current primary */
        struct confd_ha_node prim;
        memset(&prim, 0, sizeof prim);
        set_buf(&prim.nodeid, p->id);
        prim.af = AF_INET;
        if (inet_pton(AF_INET, p->host, &prim.addr.ip4) != 1) {
            prim.af = AF_INET6;
            if (inet_pton(AF_INET6, p->host, &prim.addr.ip6) != 1) {
                prim.af = AF_UNSPEC;
                snprintf(prim.addr_buf, sizeof prim.addr_buf, "%s", p->host);
                prim.addr.str = prim.addr_buf;
            }
        }
        logf_("keepalived says BACKUP: confd_ha_besecondary(%s, primary %s at %s)", my_id, p->id, p->host);
        if (confd_ha_besecondary(s, &me, &prim, !async_join) != CONFD_OK)
            ha_drop("confd_ha_besecondary");
        else logf_("node is a secondary of %s", p->id);
        return;
    }
    case W_NONE:
        if (st.state == CONFD_HA_STATE_NONE) return;
        logf_("keepalived says FAULT/STOP (or is gone): confd_ha_benone()");
        if (confd_ha_benone(s) != CONFD_OK) ha_drop("confd_ha_benone");
        else logf_("node is none");
        return;
    default:
        return;
    }
}

/* One FIFO line: TYPE "NAME" STATE PRIORITY. */
static void on_line(char *line)
{
    char type[32], name[128], state[32];
    if (sscanf(line, "%31s \"%127[^\"]\" %31s", type, name, state) != 3) {
        logf_("ignoring FIFO line '%.80s'", line);
        return;
    }
    if (strcmp(type, "INSTANCE") != 0 && strcmp(type, "GROUP") != 0) return;
    if (instance && strcmp(name, instance) != 0) return;
    enum want w;
    if (strcmp(state, "MASTER") == 0) w = W_MASTER;
    else if (strcmp(state, "BACKUP") == 0) w = W_BACKUP;
    else if (strcmp(state, "FAULT") == 0 || strcmp(state, "STOP") == 0) w = W_NONE;
    else {
        /* MASTER_RX_LOWER_PRI (a master heard a lower priority) and the like. */
        if (strcmp(state, "MASTER_RX_LOWER_PRI") != 0) logf_("ignoring state %s of %s", state, name);
        return;
    }
    logf_("event: %s %s %s", type, name, state);
    want = w;
    reconcile();
}

/* Whether the keepalived of --keepalived-pidfile is running. */
static int keepalived_alive(void)
{
    FILE *f = fopen(ka_pidfile, "r");
    long pid = 0;
    if (!f) return 0;
    if (fscanf(f, "%ld", &pid) != 1) pid = 0;
    fclose(f);
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* keepalived gone while it had given a role: the node must not keep it. */
static void check_keepalived(void)
{
    if ((want == W_MASTER || want == W_BACKUP) && !keepalived_alive()) {
        logf_("keepalived is gone (no process for %s): the node must not keep a role", ka_pidfile);
        want = W_NONE;
    }
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: ha-keepalived --fifo PATH --id NODE_ID [--ipc HOST:PORT] --peer ID=HOST[:IPC_PORT] ...\n"
            "                     [--token-file FILE] [--instance NAME] [--async] [--interval-ms MS]\n"
            "                     [--keepalived-pidfile FILE]\n");
    exit(2);
}

static void split_hostport(const char *hp, char *host, size_t hsz, char *port, size_t psz)
{
    const char *c = strrchr(hp, ':');
    if (c && !strchr(c + 1, ']') && strchr(hp, ':') == c) {
        snprintf(host, hsz, "%.*s", (int)(c - hp), hp);
        snprintf(port, psz, "%s", c + 1);
    } else {
        snprintf(host, hsz, "%s", hp);
    }
}

int main(int argc, char **argv)
{
    const char *token_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--async")) { async_join = 1; continue; }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--fifo")) fifo_path = v;
        else if (!strcmp(a, "--id")) my_id = v;
        else if (!strcmp(a, "--ipc")) split_hostport(v, my_host, sizeof my_host, my_port, sizeof my_port);
        else if (!strcmp(a, "--token-file")) token_file = v;
        else if (!strcmp(a, "--instance")) instance = v;
        else if (!strcmp(a, "--interval-ms")) interval_ms = atoi(v);
        else if (!strcmp(a, "--keepalived-pidfile")) ka_pidfile = v;
        else if (!strcmp(a, "--peer")) {
            const char *eq = strchr(v, '=');
            if (!eq || npeers == MAX_PEERS) usage();
            struct peer *p = &peers[npeers++];
            snprintf(p->id, sizeof p->id, "%.*s", (int)(eq - v), v);
            snprintf(p->port, sizeof p->port, "%s", my_port);
            split_hostport(eq + 1, p->host, sizeof p->host, p->port, sizeof p->port);
        } else usage();
    }
    if (!fifo_path || !my_id || npeers == 0 || interval_ms <= 0) usage();
    if (token_file) {
        FILE *f = fopen(token_file, "r");
        if (!f || !fgets(token, sizeof token, f)) {
            fprintf(stderr, "ha-keepalived: cannot read the token from %s\n", token_file);
            return 1;
        }
        fclose(f);
        token[strcspn(token, "\r\n")] = 0;
    } else if (getenv("HA_CTL_TOKEN")) {
        snprintf(token, sizeof token, "%s", getenv("HA_CTL_TOKEN"));
    }
    if (!token[0]) {
        fprintf(stderr, "ha-keepalived: no token: give --token-file or set HA_CTL_TOKEN\n");
        return 1;
    }
    confd_init("ha-keepalived", stderr, CONFD_SILENT);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    if (mkfifo(fifo_path, 0600) < 0 && errno != EEXIST) {
        logf_("mkfifo %s: %s", fifo_path, strerror(errno));
        return 1;
    }
    logf_("reading %s; node %s:%s; %d peers", fifo_path, my_host, my_port, npeers);

    char line[MAX_LINE_BYTES];
    size_t used = 0;
    int dropping = 0;
    while (!stopping) {
        /* Non-blocking open: the reconcile timer runs while no keepalived
         * has the FIFO open. Linux reports POLLHUP only after a writer has
         * come and gone. */
        int fd = open(fifo_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            logf_("open %s: %s", fifo_path, strerror(errno));
            sleep(1);
            continue;
        }
        int had_writer = 0;
        while (!stopping) {
            struct pollfd pfd = {fd, POLLIN, 0};
            int n = poll(&pfd, 1, interval_ms);
            if (n < 0 && errno != EINTR) break;
            if (n <= 0) { check_keepalived(); reconcile(); continue; }
            char buf[256];
            ssize_t r = read(fd, buf, sizeof buf);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) {
                if (had_writer || (pfd.revents & POLLHUP)) break;
                check_keepalived();
                reconcile();
                continue;
            }
            had_writer = 1;
            for (ssize_t i = 0; i < r; i++) {
                if (buf[i] == '\n') {
                    line[used] = 0;
                    if (!dropping) on_line(line);
                    else logf_("dropped a FIFO line longer than %d bytes", MAX_LINE_BYTES);
                    used = 0;
                    dropping = 0;
                } else if (used + 1 < sizeof line) {
                    line[used++] = buf[i];
                } else {
                    dropping = 1;
                }
            }
        }
        close(fd);
        used = 0;
        dropping = 0;
        if (stopping) break;
        usleep(FIFO_REOPEN_PAUSE_MS * 1000);
        if (keepalived_alive())
            logf_("keepalived closed the FIFO and is still running (a reload): the role stays");
        check_keepalived();
        reconcile();
    }
    logf_("stopping (the node keeps its role)");
    if (ha_sock >= 0) close(ha_sock);
    return 0;
}
