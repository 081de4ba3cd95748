/*
 * ha_rtt: round-trip latency of confd_ha_get_status() and
 * confd_ha_beprimary() through libconfd_ha to a running ha-node, over TCP and
 * over a Unix socket, side by side with a bare loopback ping-pong of the same
 * frame sizes, measured in the same run (issue 2).
 *
 *   ha_rtt --tcp 127.0.0.1:PORT --unix /path/ipc.sock [-n CALLS] [-r ROUNDS]
 *          [--token T] [--nodelay] [--tmp DIR]
 *
 * The node must be in state NONE or PRIMARY "bench" (beprimary is sent
 * first, then repeated: on a node that is already primary with the same id
 * the daemon answers ok without doing anything).
 *
 * Request and reply sizes are not guessed: one call of each kind is made
 * over TCP and the bytes that crossed are read from TCP_INFO
 * (tcpi_bytes_acked / tcpi_bytes_received). The ping-pong then uses exactly
 * those sizes and the same syscall pattern as the library and the daemon:
 * the client writes a frame in one write(), the peer reads the 4-byte length
 * then the body, answers with one write(), and the client reads the length
 * then the body. The peer is a forked process (the daemon is another process
 * too); TCP_NODELAY is set on both ends, as the daemon and the Rust client
 * set it.
 *
 * Placements (with --daemon-pid): "natural" leaves both ends to the
 * scheduler; "same" pins this process, every daemon thread and the ping-pong
 * peer to one CPU; "cross" puts this process on one CPU and the daemon / the
 * peer on another (the first two CPUs this process may use).
 *
 * Rounds: every kind of measurement runs in ROUNDS slices interleaved with
 * the others, so that a noisy neighbour hits all of them alike.
 *
 * Output: one line per figure, `BENCH <name> <value> <unit>`, for
 * scripts/bench.sh; anything else is commentary.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <sched.h>
#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <confd_lib.h>
#include <confd_ha.h>

static const char *opt_tcp, *opt_unix, *opt_token = "bench-token", *opt_tmp = "/tmp";
static long opt_n = 10000, opt_rounds = 5;
static int opt_nodelay;
static pid_t opt_daemon_pid;
static const char *opt_placement = "all";
/* CPU of the peer (daemon or ping-pong child) in the current placement; -1 = any */
static int peer_cpu = -1;

static void die(const char *what)
{
    fprintf(stderr, "ha_rtt: %s: %s (confd_errno %d: %s)\n", what, strerror(errno), confd_errno,
            confd_lasterr() ? confd_lasterr() : "");
    exit(1);
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- samples ---- */

struct samples {
    const char *name;
    uint64_t *v;
    long n, cap;
};

static void s_init(struct samples *s, const char *name, long cap)
{
    s->name = name;
    s->n = 0;
    s->cap = cap;
    s->v = malloc(sizeof(uint64_t) * (size_t)cap);
    if (!s->v) die("malloc");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pctl(const struct samples *s, double p)
{
    long i = (long)((double)(s->n - 1) * p + 0.5);
    return (double)s->v[i] / 1000.0;
}

static void s_report(struct samples *s)
{
    double sum = 0;
    long i;
    if (s->n == 0) return;
    qsort(s->v, (size_t)s->n, sizeof(uint64_t), cmp_u64);
    for (i = 0; i < s->n; i++) sum += (double)s->v[i];
    printf("BENCH %s.calls %ld count\n", s->name, s->n);
    printf("BENCH %s.min %.1f us\n", s->name, (double)s->v[0] / 1000.0);
    printf("BENCH %s.p50 %.1f us\n", s->name, pctl(s, 0.50));
    printf("BENCH %s.p90 %.1f us\n", s->name, pctl(s, 0.90));
    printf("BENCH %s.p99 %.1f us\n", s->name, pctl(s, 0.99));
    printf("BENCH %s.p999 %.1f us\n", s->name, pctl(s, 0.999));
    printf("BENCH %s.mean %.1f us\n", s->name, sum / (double)s->n / 1000.0);
    fflush(stdout);
}

/* ---- addresses ---- */

static struct sockaddr_in tcp_addr(const char *hostport)
{
    struct sockaddr_in a;
    char host[64];
    const char *c = strrchr(hostport, ':');
    if (!c || (size_t)(c - hostport) >= sizeof host) {
        fprintf(stderr, "ha_rtt: bad HOST:PORT %s\n", hostport);
        exit(2);
    }
    memcpy(host, hostport, (size_t)(c - hostport));
    host[c - hostport] = 0;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)atoi(c + 1));
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "ha_rtt: bad IPv4 address %s\n", host);
        exit(2);
    }
    return a;
}

static struct sockaddr_un unix_addr(const char *path)
{
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a.sun_path) {
        fprintf(stderr, "ha_rtt: Unix path too long: %s\n", path);
        exit(2);
    }
    strcpy(a.sun_path, path);
    return a;
}

static void nodelay(int s)
{
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---- CPU placement ---- */

/* The CPUs this process may use at start; cpu -1 = all of them. */
static cpu_set_t allowed;

static void set_cpu(pid_t tid, int cpu)
{
    cpu_set_t set;
    if (cpu < 0) {
        set = allowed;
    } else {
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
    }
    if (sched_setaffinity(tid, sizeof set, &set) != 0 && errno != ESRCH) die("sched_setaffinity");
}

/* The n-th allowed CPU (0-based), or -1. */
static int nth_cpu(int n)
{
    int i;
    for (i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &allowed) && n-- == 0) return i;
    return -1;
}

/* Pins every thread of the daemon (threads it starts later inherit it). */
static void pin_daemon(int cpu)
{
    char path[64];
    DIR *d;
    struct dirent *e;
    snprintf(path, sizeof path, "/proc/%d/task", (int)opt_daemon_pid);
    d = opendir(path);
    if (!d) die("opendir /proc/PID/task (is --daemon-pid right?)");
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') set_cpu((pid_t)atoi(e->d_name), cpu);
    closedir(d);
}

/* ---- the library ---- */

enum transport { T_TCP, T_UNIX };

static int lib_connect(enum transport t)
{
    int s;
    if (t == T_TCP) {
        struct sockaddr_in a = tcp_addr(opt_tcp);
        s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) die("socket");
        if (opt_nodelay) nodelay(s);
        if (confd_ha_connect(s, (struct sockaddr *)&a, sizeof a, opt_token) != CONFD_OK)
            die("confd_ha_connect over TCP");
    } else {
        struct sockaddr_un a = unix_addr(opt_unix);
        s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (s < 0) die("socket");
        if (confd_ha_connect(s, (struct sockaddr *)&a, sizeof a, opt_token) != CONFD_OK)
            die("confd_ha_connect over a Unix socket");
    }
    return s;
}

static struct confd_ha_status status;
static confd_value_t myid;

static void call_get_status(int s)
{
    if (confd_ha_get_status(s, &status) != CONFD_OK) die("confd_ha_get_status");
}

static void call_beprimary(int s)
{
    if (confd_ha_beprimary(s, &myid) != CONFD_OK) die("confd_ha_beprimary");
}

static void lib_run(enum transport t, void (*call)(int), struct samples *out, long n, long warm)
{
    int s = lib_connect(t);
    long i;
    for (i = 0; i < warm; i++) call(s);
    for (i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        call(s);
        out->v[out->n++] = now_ns() - t0;
    }
    close(s);
}

/* Bytes sent and received by one call, from TCP_INFO. */
static void frame_sizes(void (*call)(int), long *req, long *rep)
{
    struct tcp_info a, b;
    socklen_t la = sizeof a, lb = sizeof b;
    int s = lib_connect(T_TCP);
    call(s); /* warm */
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    if (getsockopt(s, IPPROTO_TCP, TCP_INFO, &a, &la) != 0) die("TCP_INFO");
    call(s);
    /* the reply has been read; our request has been acked by then */
    if (getsockopt(s, IPPROTO_TCP, TCP_INFO, &b, &lb) != 0) die("TCP_INFO");
    if (la < offsetof(struct tcp_info, tcpi_bytes_received) + 8) {
        fprintf(stderr, "ha_rtt: kernel TCP_INFO has no byte counters\n");
        exit(1);
    }
    *req = (long)(b.tcpi_bytes_acked - a.tcpi_bytes_acked);
    *rep = (long)(b.tcpi_bytes_received - a.tcpi_bytes_received);
    close(s);
}

/* ---- the bare ping-pong ---- */

static int read_full(int fd, char *b, long n)
{
    long got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, (size_t)(n - got));
        if (r == 0) return -1;
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        got += r;
    }
    return 0;
}

static int write_full(int fd, const char *b, long n)
{
    long put = 0;
    while (put < n) {
        ssize_t r = send(fd, b + put, (size_t)(n - put), MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        put += r;
    }
    return 0;
}

static void put_len(char *b, long body)
{
    uint32_t be = htonl((uint32_t)body);
    memcpy(b, &be, 4);
}

/* The peer: frame in (length, then body), frame of rep bytes out (one write). */
static void echo_peer(int c, long rep)
{
    static char in[1 << 16], out[1 << 16];
    put_len(out, rep - 4);
    for (;;) {
        uint32_t be;
        long len;
        if (read_full(c, in, 4) != 0) break;
        memcpy(&be, in, 4);
        len = (long)ntohl(be);
        if (len > (long)sizeof in) break;
        if (read_full(c, in, len) != 0) break;
        if (write_full(c, out, rep) != 0) break;
    }
    close(c);
}

struct pingpong {
    pid_t pid;
    int fd;
};

/* Forks a peer behind a fresh listener of the given kind and connects to it. */
static struct pingpong pp_start(enum transport t, long rep)
{
    struct pingpong p;
    int l, c;
    char path[108];
    if (t == T_TCP) {
        struct sockaddr_in a;
        socklen_t al = sizeof a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        l = socket(AF_INET, SOCK_STREAM, 0);
        if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0)
            die("ping-pong TCP listener");
        getsockname(l, (struct sockaddr *)&a, &al);
        c = socket(AF_INET, SOCK_STREAM, 0);
        nodelay(c);
        if (connect(c, (struct sockaddr *)&a, sizeof a) != 0) die("ping-pong connect");
    } else {
        struct sockaddr_un a;
        snprintf(path, sizeof path, "%s/pp-%d.sock", opt_tmp, (int)getpid());
        unlink(path);
        a = unix_addr(path);
        l = socket(AF_UNIX, SOCK_STREAM, 0);
        if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0)
            die("ping-pong Unix listener");
        c = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(c, (struct sockaddr *)&a, sizeof a) != 0) die("ping-pong connect");
    }
    fflush(stdout);
    p.pid = fork();
    if (p.pid < 0) die("fork");
    if (p.pid == 0) {
        int a = accept(l, NULL, NULL);
        close(c);
        close(l);
        if (a < 0) _exit(1);
        if (t == T_TCP) nodelay(a);
        set_cpu(0, peer_cpu);
        echo_peer(a, rep);
        _exit(0);
    }
    close(l);
    if (t == T_UNIX) unlink(path);
    p.fd = c;
    return p;
}

static void pp_stop(struct pingpong *p)
{
    close(p->fd);
    waitpid(p->pid, NULL, 0);
}

static void pp_run(enum transport t, long req, long rep, struct samples *out, long n, long warm)
{
    static char q[1 << 16], in[1 << 16];
    struct pingpong p = pp_start(t, rep);
    long i;
    memset(q, 0x83, sizeof q);
    put_len(q, req - 4);
    for (i = 0; i < warm + n; i++) {
        uint32_t be;
        uint64_t t0 = now_ns();
        if (write_full(p.fd, q, req) != 0) die("ping-pong write");
        if (read_full(p.fd, in, 4) != 0) die("ping-pong read");
        memcpy(&be, in, 4);
        if (read_full(p.fd, in, (long)ntohl(be)) != 0) die("ping-pong read");
        if (i >= warm) out->v[out->n++] = now_ns() - t0;
    }
    pp_stop(&p);
}

/* ---- main ---- */

static void usage(void)
{
    fprintf(stderr, "usage: ha_rtt --tcp HOST:PORT --unix PATH [--daemon-pid PID] "
                    "[--placement all|natural|same|cross] [-n CALLS] [-r ROUNDS] "
                    "[--token T] [--nodelay] [--tmp DIR]\n");
    exit(2);
}

static long gs_req, gs_rep, bp_req, bp_rep;

/*
 * One placement: `self_cpu` for this process, `srv_cpu` for the daemon and
 * the ping-pong peer (-1 = left to the scheduler).
 */
static void run_placement(const char *pname, int self_cpu, int srv_cpu)
{
    enum transport ts[2] = {T_TCP, T_UNIX};
    const char *tn[2] = {"tcp", "unix"};
    struct samples lib_gs[2], lib_bp[2], pp_gs[2], pp_bp[2];
    char names[8][96];
    long per = (opt_n + opt_rounds - 1) / opt_rounds;
    long warm = per / 10 < 200 ? 200 : per / 10;
    long r;
    int i;

    set_cpu(0, self_cpu);
    if (opt_daemon_pid > 0) pin_daemon(srv_cpu);
    peer_cpu = srv_cpu;
    for (i = 0; i < 2; i++) {
        long cap = per * opt_rounds;
        snprintf(names[4 * i + 0], 96, "rtt.%s.lib.%s.get_status", pname, tn[i]);
        snprintf(names[4 * i + 1], 96, "rtt.%s.pingpong.%s.get_status", pname, tn[i]);
        snprintf(names[4 * i + 2], 96, "rtt.%s.lib.%s.beprimary", pname, tn[i]);
        snprintf(names[4 * i + 3], 96, "rtt.%s.pingpong.%s.beprimary", pname, tn[i]);
        s_init(&lib_gs[i], names[4 * i + 0], cap);
        s_init(&pp_gs[i], names[4 * i + 1], cap);
        s_init(&lib_bp[i], names[4 * i + 2], cap);
        s_init(&pp_bp[i], names[4 * i + 3], cap);
    }
    for (r = 0; r < opt_rounds; r++) {
        for (i = 0; i < 2; i++) {
            pp_run(ts[i], gs_req, gs_rep, &pp_gs[i], per, warm);
            lib_run(ts[i], call_get_status, &lib_gs[i], per, warm);
            pp_run(ts[i], bp_req, bp_rep, &pp_bp[i], per, warm);
            lib_run(ts[i], call_beprimary, &lib_bp[i], per, warm);
        }
    }
    for (i = 0; i < 2; i++) {
        s_report(&lib_gs[i]);
        s_report(&pp_gs[i]);
        s_report(&lib_bp[i]);
        s_report(&pp_bp[i]);
        printf("BENCH rtt.%s.ratio.%s.get_status.p50 %.2f x\n", pname, tn[i],
               pctl(&lib_gs[i], 0.5) / pctl(&pp_gs[i], 0.5));
        printf("BENCH rtt.%s.ratio.%s.beprimary.p50 %.2f x\n", pname, tn[i],
               pctl(&lib_bp[i], 0.5) / pctl(&pp_bp[i], 0.5));
        free(lib_gs[i].v);
        free(pp_gs[i].v);
        free(lib_bp[i].v);
        free(pp_bp[i].v);
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int i, cpu0, cpu1;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tcp") && i + 1 < argc) opt_tcp = argv[++i];
        else if (!strcmp(argv[i], "--unix") && i + 1 < argc) opt_unix = argv[++i];
        else if (!strcmp(argv[i], "--token") && i + 1 < argc) opt_token = argv[++i];
        else if (!strcmp(argv[i], "--tmp") && i + 1 < argc) opt_tmp = argv[++i];
        else if (!strcmp(argv[i], "--daemon-pid") && i + 1 < argc) opt_daemon_pid = (pid_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--placement") && i + 1 < argc) opt_placement = argv[++i];
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) opt_n = atol(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) opt_rounds = atol(argv[++i]);
        else if (!strcmp(argv[i], "--nodelay")) opt_nodelay = 1;
        else usage();
    }
    if (!opt_tcp || !opt_unix || opt_n < 1 || opt_rounds < 1) usage();
    signal(SIGPIPE, SIG_IGN);
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) die("sched_getaffinity");
    cpu0 = nth_cpu(0);
    cpu1 = nth_cpu(1);
    confd_init("ha_rtt", stderr, CONFD_SILENT);
    CONFD_SET_BUF(&myid, (unsigned char *)"bench", 5);

    /* Make the node primary, then learn the frame sizes. */
    {
        int s = lib_connect(T_TCP);
        call_beprimary(s);
        call_get_status(s);
        if (status.state != CONFD_HA_STATE_PRIMARY) {
            fprintf(stderr, "ha_rtt: node state %d after beprimary\n", status.state);
            return 1;
        }
        close(s);
    }
    frame_sizes(call_get_status, &gs_req, &gs_rep);
    frame_sizes(call_beprimary, &bp_req, &bp_rep);
    printf("BENCH size.get_status.request %ld bytes\n", gs_req);
    printf("BENCH size.get_status.reply %ld bytes\n", gs_rep);
    printf("BENCH size.beprimary.request %ld bytes\n", bp_req);
    printf("BENCH size.beprimary.reply %ld bytes\n", bp_rep);
    if (gs_req < 5 || gs_rep < 5 || bp_req < 5 || bp_rep < 5 || gs_req > 65536 ||
        gs_rep > 65536 || bp_req > 65536 || bp_rep > 65536) {
        fprintf(stderr, "ha_rtt: implausible frame sizes\n");
        return 1;
    }
    /* natural: the scheduler decides; same: everything on the first allowed
       CPU; cross: this process on the first, the daemon / ping-pong peer on
       the second. */
    printf("BENCH cpus.first %d id\nBENCH cpus.second %d id\n", cpu0, cpu1);
    if (!strcmp(opt_placement, "all") || !strcmp(opt_placement, "natural"))
        run_placement("natural", -1, -1);
    if (opt_daemon_pid > 0 && (!strcmp(opt_placement, "all") || !strcmp(opt_placement, "same")))
        run_placement("same", cpu0, cpu0);
    if (opt_daemon_pid > 0 && cpu1 >= 0 &&
        (!strcmp(opt_placement, "all") || !strcmp(opt_placement, "cross")))
        run_placement("cross", cpu0, cpu1);
    set_cpu(0, -1);
    if (opt_daemon_pid > 0) pin_daemon(-1);
    return 0;
}
