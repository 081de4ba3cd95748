/* See harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int t_case_failed;
static int n_pass, n_fail, n_skip;

#define MAX_NODES 16
static struct hn_node *live[MAX_NODES];
static int handlers_installed;

long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void poll_pause(void)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

int lasterr_has(const char *needle)
{
    const char *l = confd_lasterr();
    return l != NULL && strstr(l, needle) != NULL;
}

void t_run(const char *name, void (*fn)(void))
{
    int i;
    t_case_failed = 0;
    printf("---- %s\n", name);
    fflush(stdout);
    fn();
    if (t_case_failed) {
        n_fail++;
        printf("FAIL %s\n", name);
        for (i = 0; i < MAX_NODES; i++)
            if (live[i]) hn_dump_log(live[i]);
    } else {
        n_pass++;
        printf("PASS %s\n", name);
    }
    fflush(stdout);
}

void t_skip(const char *name, const char *why)
{
    n_skip++;
    printf("SKIP %s: %s\n", name, why);
    fflush(stdout);
}

int t_done(void)
{
    printf("==== %d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
    fflush(stdout);
    return n_fail ? 1 : 0;
}

/* ---- process lifecycle ---- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void unregister(struct hn_node *n)
{
    int i;
    for (i = 0; i < MAX_NODES; i++)
        if (live[i] == n) live[i] = NULL;
}

static void kill_all_now(void)
{
    int i;
    for (i = 0; i < MAX_NODES; i++)
        if (live[i] && live[i]->pid > 0) kill(live[i]->pid, SIGKILL);
}

static void on_exit_cleanup(void)
{
    int i;
    for (i = 0; i < MAX_NODES; i++)
        if (live[i]) hn_stop(live[i]);
}

static void on_fatal_signal(int sig)
{
    /* Only async-signal-safe calls: kill the daemons, then die as asked. */
    kill_all_now();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_handlers(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGALRM};
    unsigned i;
    if (handlers_installed) return;
    handlers_installed = 1;
    atexit(on_exit_cleanup);
    for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], on_fatal_signal);
    /* A hung test must not hang CI: the alarm kills it (and its daemons). */
    alarm(600);
}

static int port_free_on(const char *ip, int port)
{
    struct sockaddr_in a;
    int s = socket(AF_INET, SOCK_STREAM, 0), ok, one = 1;
    if (s < 0) return 0;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, ip, &a.sin_addr);
    ok = bind(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

int hn_free_port(const char *ip2)
{
    int attempt;
    for (attempt = 0; attempt < 100; attempt++) {
        struct sockaddr_in a;
        socklen_t len = sizeof a;
        int port, s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) return -1;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
            getsockname(s, (struct sockaddr *)&a, &len) != 0) {
            close(s);
            return -1;
        }
        port = ntohs(a.sin_port);
        close(s);
        if (ip2 == NULL || port_free_on(ip2, port)) return port;
    }
    return -1;
}

int have_ipv6_loopback(void)
{
    struct sockaddr_in6 a;
    int s = socket(AF_INET6, SOCK_STREAM, 0), ok;
    if (s < 0) return 0;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    ok = bind(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

/* Does the node's IPC endpoint accept a connection? */
static int ipc_accepts(const struct hn_node *n)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int s, ok;
    memset(&ss, 0, sizeof ss);
    if (strcmp(n->ipc_host, "none") == 0) {
        struct sockaddr_un *u = (struct sockaddr_un *)&ss;
        u->sun_family = AF_UNIX;
        snprintf(u->sun_path, sizeof u->sun_path, "%s", n->ipc_path);
        len = sizeof *u;
    } else if (strchr(n->ipc_host, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(n->ipc_port);
        inet_pton(AF_INET6, n->ipc_host, &a->sin6_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(n->ipc_port);
        inet_pton(AF_INET, n->ipc_host, &a->sin_addr);
        len = sizeof *a;
    }
    s = socket(ss.ss_family, SOCK_STREAM, 0);
    if (s < 0) return 0;
    ok = connect(s, (struct sockaddr *)&ss, len) == 0;
    close(s);
    return ok;
}

void hn_dump_log(const struct hn_node *n)
{
    char line[512];
    FILE *f = fopen(n->log, "r");
    if (!f) return;
    printf("    ---- log of ha-node %s (%s)\n", n->ip, n->log);
    while (fgets(line, sizeof line, f)) printf("    | %s", line);
    fclose(f);
}

int hn_start(struct hn_node *n, const char *ip, int ha_port, const char *const *extra)
{
    return hn_start_ipc(n, ip, ha_port, "127.0.0.1", extra);
}

int hn_start_ipc(struct hn_node *n, const char *ip, int ha_port, const char *ipc_host,
                 const char *const *extra)
{
    const char *bin = getenv("HA_NODE");
    char ipc_addr[64], ha_addr[64], data_dir[128];
    const char *argv[32];
    int argc = 0, i, slot = -1;
    long long deadline;

    install_handlers();
    if (!bin || !*bin) bin = "target/release/ha-node";
    memset(n, 0, sizeof *n);
    snprintf(n->ip, sizeof n->ip, "%s", ip);
    snprintf(n->ipc_host, sizeof n->ipc_host, "%s", ipc_host);
    snprintf(n->dir, sizeof n->dir, "/tmp/hnXXXXXX");
    if (!mkdtemp(n->dir)) {
        printf("    hn_start: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    n->ha_port = ha_port ? ha_port : hn_free_port(ip);
    n->ipc_port = hn_free_port(NULL);
    if (n->ha_port <= 0 || n->ipc_port <= 0) {
        printf("    hn_start: no free port\n");
        return -1;
    }
    snprintf(n->ipc_path, sizeof n->ipc_path, "%s/ipc.sock", n->dir);
    snprintf(n->log, sizeof n->log, "%s/ha-node.log", n->dir);
    if (strcmp(ipc_host, "none") == 0)
        snprintf(ipc_addr, sizeof ipc_addr, "none");
    else if (strchr(ipc_host, ':'))
        snprintf(ipc_addr, sizeof ipc_addr, "[%s]:%d", ipc_host, n->ipc_port);
    else
        snprintf(ipc_addr, sizeof ipc_addr, "%s:%d", ipc_host, n->ipc_port);
    snprintf(ha_addr, sizeof ha_addr, "%s:%d", ip, n->ha_port);
    snprintf(data_dir, sizeof data_dir, "%s/data", n->dir);

    argv[argc++] = bin;
    argv[argc++] = "--ipc-addr"; argv[argc++] = ipc_addr;
    argv[argc++] = "--ipc-path"; argv[argc++] = n->ipc_path;
    argv[argc++] = "--ha-addr"; argv[argc++] = ha_addr;
    argv[argc++] = "--data-dir"; argv[argc++] = data_dir;
    argv[argc++] = "--tick-timeout"; argv[argc++] = "200ms";
    argv[argc++] = "--log-level"; argv[argc++] = "debug";
    for (i = 0; extra && extra[i] && argc < 30; i++) argv[argc++] = extra[i];
    argv[argc] = NULL;

    for (i = 0; i < MAX_NODES; i++)
        if (!live[i]) { slot = i; break; }
    if (slot < 0) {
        printf("    hn_start: too many nodes\n");
        return -1;
    }

    fflush(stdout);
    fflush(stderr);
    n->pid = fork();
    if (n->pid < 0) {
        printf("    hn_start: fork: %s\n", strerror(errno));
        n->pid = 0;
        return -1;
    }
    if (n->pid == 0) {
        int fd = open(n->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* die with the test */
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(bin, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    live[slot] = n;

    deadline = now_ms() + 20000;
    while (now_ms() < deadline) {
        int status;
        if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
            printf("    hn_start: ha-node exited early (status %d)\n", status);
            n->pid = 0;
            hn_dump_log(n);
            return -1;
        }
        if (ipc_accepts(n)) return 0;
        poll_pause();
    }
    printf("    hn_start: ha-node did not accept on %s within 20 s\n", ipc_addr);
    hn_dump_log(n);
    hn_stop(n);
    return -1;
}

static void reap(struct hn_node *n, int ms)
{
    long long deadline = now_ms() + ms;
    int status;
    while (n->pid > 0) {
        pid_t r = waitpid(n->pid, &status, WNOHANG);
        if (r == n->pid || (r < 0 && errno == ECHILD)) {
            n->pid = 0;
            return;
        }
        if (now_ms() >= deadline) return;
        poll_pause();
    }
}

void hn_kill(struct hn_node *n, int sig)
{
    if (n->pid <= 0) return;
    kill(n->pid, sig);
    if (sig == SIGKILL || sig == SIGTERM) {
        reap(n, 10000);
        if (n->pid > 0) { /* did not stop in time */
            kill(n->pid, SIGKILL);
            reap(n, 10000);
        }
    }
}

void hn_stop(struct hn_node *n)
{
    if (n->pid > 0) {
        kill(n->pid, SIGCONT); /* in case a test stopped it */
        hn_kill(n, SIGTERM);
    }
    unregister(n);
    if (n->dir[0]) {
        nftw(n->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        n->dir[0] = 0;
    }
}

/* ---- values and sockets ---- */

void set_buf(confd_value_t *v, const char *s)
{
    memset(v, 0, sizeof *v);
    CONFD_SET_BUF(v, s, strlen(s));
}

void make_node4(struct confd_ha_node *n, const char *id, const char *ip)
{
    memset(n, 0, sizeof *n);
    set_buf(&n->nodeid, id);
    n->af = AF_INET;
    inet_pton(AF_INET, ip, &n->addr.ip4);
}

int ha_connect_tcp(const struct hn_node *n, const char *token)
{
    struct sockaddr_in a;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(n->ipc_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (confd_ha_connect(s, (struct sockaddr *)&a, sizeof a, token) != CONFD_OK) {
        printf("    ha_connect_tcp(%d): errno %d: %s\n", n->ipc_port, confd_errno, confd_lasterr());
        close(s);
        return -1;
    }
    return s;
}

int ha_connect_tcp6(const struct hn_node *n, const char *token)
{
    struct sockaddr_in6 a;
    int s = socket(AF_INET6, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(n->ipc_port);
    a.sin6_addr = in6addr_loopback;
    if (confd_ha_connect(s, (struct sockaddr *)&a, sizeof a, token) != CONFD_OK) {
        printf("    ha_connect_tcp6(%d): errno %d: %s\n", n->ipc_port, confd_errno, confd_lasterr());
        close(s);
        return -1;
    }
    return s;
}

int ha_connect_unix(const struct hn_node *n, const char *token)
{
    struct sockaddr_un a;
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", n->ipc_path);
    if (confd_ha_connect(s, (struct sockaddr *)&a, sizeof a, token) != CONFD_OK) {
        printf("    ha_connect_unix(%s): errno %d: %s\n", n->ipc_path, confd_errno, confd_lasterr());
        close(s);
        return -1;
    }
    return s;
}

int wait_state(int sock, int state, int nodes, int timeout_ms, struct confd_ha_status *out)
{
    /* Filled in place: the node ids point into the struct itself, so a copy
       would point into the original. */
    static struct confd_ha_status own;
    struct confd_ha_status *st = out ? out : &own;
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int rc = confd_ha_get_status(sock, st);
        if (rc == CONFD_OK && (int)st->state == state && (nodes < 0 || st->num_nodes == nodes)) return 0;
        if (rc != CONFD_OK || now_ms() >= deadline) {
            if (rc != CONFD_OK)
                printf("    wait_state: get_status failed: %d errno %d %s\n", rc, confd_errno, confd_lasterr());
            else
                printf("    wait_state: state %d with %d nodes, wanted %d with %d\n",
                       (int)st->state, st->num_nodes, state, nodes);
            return -1;
        }
        poll_pause();
    }
}
