/*
 * peers_load: the load generator of `make bench-peers` (scripts/bench-peers.sh,
 * issue 11 item 5). One program drives ha-node and the systems a user would
 * pick instead, each through its own client library or protocol, with the
 * same workload: one ~100-byte value written per transaction, over loopback.
 *
 *   ha     ha-node's data API through libconfd_ha (cha_txn_set + cha_txn_commit)
 *   pg     PostgreSQL through libpq: a prepared UPDATE of one row (autocommit)
 *   redis  Redis through hiredis: SET, then WAIT n 0 when n replicas are asked for
 *   etcd   etcd's v3 API through its JSON gateway (POST /v3/kv/put over a
 *          keep-alive HTTP/1.1 connection: etcd has no C client; the gateway
 *          costs etcd some CPU per request, which its figures include)
 *
 *   peers_load --sys SYS --addr HOST:PORT [--replicas N] [--token T]
 *              [--cpu-pids PID,..] [--name NAME] [--samples FILE] MODE ARGS
 *
 * Modes:
 *   lat N            one client, N commits; appends each latency (µs) to --samples
 *   tput C SECS      C clients (one connection each) commit for SECS seconds;
 *                    prints BENCH NAME.tputC (commits/s), NAME.cpuC (server
 *                    CPU µs per commit, from /proc/PID/stat of the --cpu-pids
 *                    and their direct children) and NAME.latC.p50 / .p99 (µs,
 *                    over every commit of every client)
 *   failover PID ADDR[,ADDR..] MAX_MS
 *                    kill -9 of PID (a cluster's leader), then one commit after
 *                    the other on each ADDR in turn (each in a child process,
 *                    cut after FAILOVER_TRY_MS) until one succeeds; prints
 *                    BENCH NAME.failover (ms from the kill to that commit's
 *                    reply), or fails after MAX_MS
 *   fill MIB KIB [FIRST]  writes MIB MiB of incompressible values of KIB KiB at
 *                    blob keys FIRST, FIRST+1, ... (default 0)
 *   wait-redis N     polls the Redis primary until N replicas are online with
 *                    the primary's replication offset as read at the start
 *   wait-pg NAME     polls the PostgreSQL primary until standby NAME has
 *                    replayed the primary's WAL position as read at the start
 *   floor-fsync DIR N  4 KiB rewrite + fdatasync of a file in DIR, N times
 *   floor-rtt N      loopback TCP ping-pong of 100 bytes between two threads
 *
 * Output: `BENCH <name> <value> <unit>` lines; anything else is commentary.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <confd_lib.h>
#include <cha.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#define VALUE_BYTES 100 /* the value written per transaction */
#define KEYS 1000       /* keys cycled through (the store does not grow) */
#define MAX_CLIENTS 64

static const char *o_sys, *o_addr = "127.0.0.1:0", *o_token = "bench-token", *o_name = "x",
                  *o_samples, *o_cpu_pids = "";
static int o_replicas;
static char host[64];
static int port;

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "peers_load(%s): ", o_sys ? o_sys : "-");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fill_random(unsigned char *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)x;
    }
}

static int tcp_connect(void)
{
    struct sockaddr_in a;
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &a.sin_addr);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) die("connect %s failed", o_addr);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return s;
}

/* ---- one client connection per system ---- */

struct conn {
    int fd;           /* ha, etcd */
    redisContext *rc; /* redis */
    PGconn *pg;       /* pg */
    char rbuf[65536]; /* etcd replies */
};

static void conn_open(struct conn *c)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    if (!strcmp(o_sys, "ha")) {
        struct sockaddr_in a;
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, host, &a.sin_addr);
        if (cha_data_connect(c->fd, (struct sockaddr *)&a, sizeof a) != CONFD_OK)
            die("cha_data_connect: %s", confd_lasterr());
    } else if (!strcmp(o_sys, "redis")) {
        c->rc = redisConnect(host, port);
        if (!c->rc || c->rc->err) die("redisConnect %s failed", o_addr);
    } else if (!strcmp(o_sys, "pg")) {
        char ci[256];
        snprintf(ci, sizeof ci, "host=%s port=%d dbname=postgres user=postgres", host, port);
        c->pg = PQconnectdb(ci);
        if (PQstatus(c->pg) != CONNECTION_OK) die("PQconnectdb: %s", PQerrorMessage(c->pg));
        PGresult *r = PQprepare(c->pg, "put", "UPDATE kv SET v = $2 WHERE k = $1", 2, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) die("PQprepare: %s", PQerrorMessage(c->pg));
        PQclear(r);
        r = PQprepare(c->pg, "blob", "INSERT INTO blob VALUES ($1, $2)", 2, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) die("PQprepare: %s", PQerrorMessage(c->pg));
        PQclear(r);
    } else if (!strcmp(o_sys, "etcd")) {
        c->fd = tcp_connect();
    } else {
        die("unknown --sys %s", o_sys);
    }
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0) close(c->fd);
    if (c->rc) redisFree(c->rc);
    if (c->pg) PQfinish(c->pg);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64(char *out, const unsigned char *in, size_t n)
{
    size_t o = 0, i;
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) die("write to %s failed", o_addr);
        p += w;
        n -= (size_t)w;
    }
}

/* Reads one HTTP/1.1 response (Content-Length or chunked); fails unless 200. */
static void http_response(struct conn *c)
{
    size_t have = 0;
    char *body;
    for (;;) {
        ssize_t r;
        c->rbuf[have] = 0;
        body = strstr(c->rbuf, "\r\n\r\n");
        if (body) {
            char *cl = strcasestr(c->rbuf, "content-length:");
            body += 4;
            if (cl && cl < body) {
                size_t need = (size_t)(body - c->rbuf) + strtoul(cl + 15, NULL, 10);
                if (have >= need) break;
            } else if (strstr(body, "0\r\n\r\n")) {
                break;
            }
        }
        if (have + 1 >= sizeof c->rbuf) die("HTTP reply too long from %s", o_addr);
        r = read(c->fd, c->rbuf + have, sizeof c->rbuf - 1 - have);
        if (r <= 0) die("HTTP connection to %s closed", o_addr);
        have += (size_t)r;
    }
    if (strncmp(c->rbuf, "HTTP/1.1 200", 12) != 0) die("etcd answered: %.200s", c->rbuf);
}

/* One transaction writing `len` bytes at key number k. */
static void commit(struct conn *c, long k, const unsigned char *val, size_t len, int blob)
{
    char key[64];
    if (!strcmp(o_sys, "ha")) {
        confd_value_t v;
        struct cha_txn *t = cha_txn_new();
        snprintf(key, sizeof key, blob ? "/blob/b{%ld}" : "/bench/k{%ld}", k);
        CONFD_SET_BINARY(&v, val, len);
        if (!t || cha_txn_set(t, key, &v) != CONFD_OK) die("cha_txn_set: %s", confd_lasterr());
        if (cha_txn_commit(c->fd, t, NULL, 0) != CONFD_OK) die("cha_txn_commit: %s", confd_lasterr());
        cha_txn_free(t);
    } else if (!strcmp(o_sys, "redis")) {
        redisReply *r;
        snprintf(key, sizeof key, blob ? "blob:%ld" : "k:%ld", k);
        r = redisCommand(c->rc, "SET %s %b", key, val, len);
        if (!r || r->type == REDIS_REPLY_ERROR) die("SET failed: %s", r ? r->str : c->rc->errstr);
        freeReplyObject(r);
        if (o_replicas > 0) {
            r = redisCommand(c->rc, "WAIT %d 0", o_replicas);
            if (!r || r->type != REDIS_REPLY_INTEGER || r->integer < o_replicas)
                die("WAIT failed (%s)", r && r->str ? r->str : "fewer replicas acknowledged");
            freeReplyObject(r);
        }
    } else if (!strcmp(o_sys, "pg")) {
        char kb[32];
        const char *pv[2] = {kb, (const char *)val};
        int pl[2] = {0, (int)len}, pf[2] = {0, 1};
        PGresult *r;
        snprintf(kb, sizeof kb, "%ld", k);
        r = PQexecPrepared(c->pg, blob ? "blob" : "put", 2, pv, pl, pf, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) die("commit: %s", PQerrorMessage(c->pg));
        PQclear(r);
    } else {
        static __thread char *req;
        static __thread size_t req_cap;
        size_t need = len * 2 + 512, n;
        char k64[128];
        if (need > req_cap) {
            free(req);
            req = malloc(need);
            req_cap = need;
            if (!req) die("out of memory%s", "");
        }
        snprintf(key, sizeof key, blob ? "blob:%ld" : "k:%ld", k);
        k64[b64(k64, (const unsigned char *)key, strlen(key))] = 0;
        n = (size_t)sprintf(req + 256, "{\"key\":\"%s\",\"value\":\"", k64);
        n += b64(req + 256 + n, val, len);
        n += (size_t)sprintf(req + 256 + n, "\"}");
        char hdr[256];
        int h = snprintf(hdr, sizeof hdr,
                         "POST /v3/kv/put HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n",
                         o_addr, n);
        memcpy(req + 256 - h, hdr, (size_t)h);
        write_all(c->fd, req + 256 - h, n + (size_t)h);
        http_response(c);
    }
}

/* ---- server CPU: utime + stime of the given pids and their direct children ---- */

static long long proc_ticks(int pid, int *ppid)
{
    char path[64], buf[1024], *p;
    long long ut = 0, st = 0;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f) return -1;
    if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
    fclose(f);
    p = strrchr(buf, ')');
    if (!p) return -1;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld", ppid, &ut, &st) != 3)
        return -1;
    return ut + st;
}

static double server_cpu_s(void)
{
    int roots[64], nroots = 0, ppid;
    long long total = 0, t;
    const char *s = o_cpu_pids;
    DIR *d;
    struct dirent *e;
    while (*s && nroots < 64) {
        roots[nroots++] = atoi(s);
        s = strchr(s, ',');
        if (!s) break;
        s++;
    }
    if (nroots == 0) return 0;
    d = opendir("/proc");
    while (d && (e = readdir(d)) != NULL) {
        int pid;
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        pid = atoi(e->d_name);
        t = proc_ticks(pid, &ppid);
        if (t < 0) continue;
        for (int i = 0; i < nroots; i++)
            if (roots[i] == pid || roots[i] == ppid) {
                total += t;
                break;
            }
    }
    if (d) closedir(d);
    return (double)total / (double)sysconf(_SC_CLK_TCK);
}

/* Context switches (voluntary + involuntary) of every thread of PID now alive, and its
 * CPU ticks (all threads, live and exited): per-node figures of `tput`. */
static long long proc_ctxt(int pid)
{
    char path[64], line[256];
    long long total = 0, v;
    DIR *d;
    struct dirent *e;
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    d = opendir(path);
    while (d && (e = readdir(d)) != NULL) {
        FILE *f;
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        snprintf(path, sizeof path, "/proc/%d/task/%d/status", pid, atoi(e->d_name));
        f = fopen(path, "r");
        if (!f) continue;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "voluntary_ctxt_switches: %lld", &v) == 1 ||
                sscanf(line, "nonvoluntary_ctxt_switches: %lld", &v) == 1)
                total += v;
        fclose(f);
    }
    if (d) closedir(d);
    return total;
}

static int cpu_roots(int *roots, int max)
{
    int n = 0;
    const char *s = o_cpu_pids;
    while (*s && n < max) {
        roots[n++] = atoi(s);
        s = strchr(s, ',');
        if (!s) break;
        s++;
    }
    return n;
}

/* ---- modes ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void mode_lat(long n)
{
    struct conn c;
    unsigned char val[VALUE_BYTES];
    uint64_t *v = malloc(sizeof(uint64_t) * (size_t)n);
    FILE *out = o_samples ? fopen(o_samples, "a") : NULL;
    if (!v || (o_samples && !out)) die("cannot open %s", o_samples ? o_samples : "memory");
    conn_open(&c);
    for (long i = 0; i < n + 20; i++) { /* 20 warm-up commits */
        uint64_t t0;
        fill_random(val, sizeof val, (uint64_t)i);
        t0 = now_ns();
        commit(&c, i % KEYS, val, sizeof val, 0);
        if (i >= 20) v[i - 20] = now_ns() - t0;
    }
    conn_close(&c);
    for (long i = 0; i < n; i++)
        if (out) fprintf(out, "%.1f\n", (double)v[i] / 1000.0);
    if (out) fclose(out);
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    printf("BENCH %s.lat.p50 %.1f us\n", o_name, (double)v[n / 2] / 1000.0);
    printf("BENCH %s.lat.p99 %.1f us\n", o_name, (double)v[(n * 99) / 100] / 1000.0);
    free(v);
}

/* Latencies kept per client in tput mode (later commits are counted, not kept). */
#define TPUT_MAX_SAMPLES 200000

struct worker {
    pthread_t th;
    int id;
    long count;
    uint64_t *lat; /* TPUT_MAX_SAMPLES latencies (ns) */
    long nlat;
};
static pthread_barrier_t start_bar;
static volatile int stop_flag;
/* Clients connect one at a time: ha-node closes a source's connections beyond
 * MAX_PENDING_HANDSHAKES_PER_SOURCE (8) still in their hello. */
static pthread_mutex_t connect_mx = PTHREAD_MUTEX_INITIALIZER;

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct conn c;
    unsigned char val[VALUE_BYTES];
    long i = 0;
    pthread_mutex_lock(&connect_mx);
    conn_open(&c);
    pthread_mutex_unlock(&connect_mx);
    pthread_barrier_wait(&start_bar);
    while (!__atomic_load_n(&stop_flag, __ATOMIC_RELAXED)) {
        uint64_t t0;
        fill_random(val, sizeof val, (uint64_t)(w->id * 1000003 + i));
        t0 = now_ns();
        commit(&c, (w->id * 31 + i) % KEYS, val, sizeof val, 0);
        if (w->nlat < TPUT_MAX_SAMPLES) w->lat[w->nlat++] = now_ns() - t0;
        i++;
    }
    w->count = i;
    pthread_barrier_wait(&start_bar); /* count the CPU before closing the connections */
    pthread_barrier_wait(&start_bar);
    conn_close(&c);
    return NULL;
}

static void mode_tput(int clients, double secs)
{
    struct worker w[MAX_CLIENTS];
    uint64_t t0, t1;
    double cpu0, cpu1;
    long total = 0;
    if (clients < 1 || clients > MAX_CLIENTS) die("clients must be 1..64, not %s", "that");
    pthread_barrier_init(&start_bar, NULL, (unsigned)clients + 1);
    for (int i = 0; i < clients; i++) {
        w[i].id = i;
        w[i].count = 0;
        w[i].nlat = 0;
        w[i].lat = malloc(sizeof(uint64_t) * TPUT_MAX_SAMPLES);
        if (!w[i].lat) die("out of memory%s", "");
        pthread_create(&w[i].th, NULL, worker_main, &w[i]);
    }
    int roots[8], nroots = cpu_roots(roots, 8), ppid;
    long long cs0[8], cs1[8], tk0[8], tk1[8];
    pthread_barrier_wait(&start_bar);
    for (int i = 0; i < nroots; i++) {
        cs0[i] = proc_ctxt(roots[i]);
        tk0[i] = proc_ticks(roots[i], &ppid);
    }
    cpu0 = server_cpu_s();
    t0 = now_ns();
    usleep((useconds_t)(secs * 1e6));
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    pthread_barrier_wait(&start_bar);
    t1 = now_ns();
    cpu1 = server_cpu_s();
    for (int i = 0; i < nroots; i++) {
        cs1[i] = proc_ctxt(roots[i]);
        tk1[i] = proc_ticks(roots[i], &ppid);
    }
    pthread_barrier_wait(&start_bar);
    long nall = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(w[i].th, NULL);
        total += w[i].count;
        nall += w[i].nlat;
    }
    uint64_t *all = malloc(sizeof(uint64_t) * (size_t)(nall > 0 ? nall : 1));
    if (!all) die("out of memory%s", "");
    nall = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(all + nall, w[i].lat, sizeof(uint64_t) * (size_t)w[i].nlat);
        nall += w[i].nlat;
        free(w[i].lat);
    }
    if (nall > 0) {
        qsort(all, (size_t)nall, sizeof *all, cmp_u64);
        printf("BENCH %s.lat%d.p50 %.1f us\n", o_name, clients, (double)all[nall / 2] / 1000.0);
        printf("BENCH %s.lat%d.p99 %.1f us\n", o_name, clients, (double)all[(nall * 99) / 100] / 1000.0);
    }
    free(all);
    printf("BENCH %s.tput%d %.1f commits/s\n", o_name, clients, (double)total * 1e9 / (double)(t1 - t0));
    printf("BENCH %s.commits%d %ld count\n", o_name, clients, total);
    printf("BENCH %s.cpus%d %.3f s\n", o_name, clients, cpu1 - cpu0);
    if (total > 0)
        printf("BENCH %s.cpu%d %.1f us/commit\n", o_name, clients, (cpu1 - cpu0) * 1e6 / (double)total);
    for (int i = 0; i < nroots && total > 0; i++) {
        printf("BENCH %s.cs%d.node%d %.2f switches/commit\n", o_name, clients, i,
               (double)(cs1[i] - cs0[i]) / (double)total);
        printf("BENCH %s.cpu%d.node%d %.1f us/commit\n", o_name, clients, i,
               (double)(tk1[i] - tk0[i]) * 1e6 / (double)sysconf(_SC_CLK_TCK) / (double)total);
    }
}

/* One failover attempt may take this long (a commit on a member that waits for a
 * leader is cut and tried again). */
#define FAILOVER_TRY_MS 250

/* One commit on `addr` in a child process (die() there only ends the child). */
static int try_commit(const char *addr)
{
    pid_t p = fork();
    if (p < 0) die("fork failed%s", "");
    if (p == 0) {
        struct conn c;
        unsigned char val[VALUE_BYTES];
        const char *colon = strrchr(addr, ':');
        struct itimerval it = {{0, 0}, {0, FAILOVER_TRY_MS * 1000}};
        if (!colon || (size_t)(colon - addr) >= sizeof host) _exit(2);
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = 0;
        port = atoi(colon + 1);
        o_addr = addr;
        setitimer(ITIMER_REAL, &it, NULL); /* SIGALRM ends the child */
        int dn = open("/dev/null", O_WRONLY);
        if (dn >= 0) dup2(dn, 2); /* a refused attempt is not news */
        conn_open(&c);
        fill_random(val, sizeof val, now_ns());
        commit(&c, 0, val, sizeof val, 0);
        _exit(0);
    }
    int st;
    while (waitpid(p, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void mode_failover(int pid, const char *addrs, long max_ms)
{
    char list[16][64];
    int n = 0;
    const char *p = addrs;
    while (*p && n < 16) {
        size_t k = strcspn(p, ",");
        if (k == 0 || k >= sizeof list[0]) die("bad address list %s", addrs);
        memcpy(list[n], p, k);
        list[n++][k] = 0;
        p += k;
        if (*p == ',') p++;
    }
    if (n == 0) die("no address in %s", addrs);
    uint64_t t0 = now_ns();
    if (kill(pid, SIGKILL) != 0) die("cannot kill the leader: %s", strerror(errno));
    for (long i = 0;; i++) {
        if (try_commit(list[i % n])) break;
        if ((now_ns() - t0) / 1000000 > (uint64_t)max_ms) die("no commit within %s ms", "MAX_MS");
        usleep(2000);
    }
    printf("BENCH %s.failover %.1f ms\n", o_name, (double)(now_ns() - t0) / 1e6);
}

static void mode_fill(long mib, long kib, long first)
{
    struct conn c;
    size_t len = (size_t)kib * 1024;
    long n = mib * 1024 / kib;
    unsigned char *val = malloc(len);
    uint64_t t0 = now_ns();
    if (!val) die("out of memory%s", "");
    conn_open(&c);
    for (long i = 0; i < n; i++) {
        fill_random(val, len, (uint64_t)(first + i) + 7777);
        commit(&c, first + i, val, len, 1);
    }
    conn_close(&c);
    printf("BENCH %s.fill %.3f s (%ld values of %ld KiB)\n", o_name, (double)(now_ns() - t0) / 1e9, n, kib);
    free(val);
}

static void mode_wait_redis(int n)
{
    redisContext *rc = redisConnect(host, port);
    redisReply *r;
    long long target = -1;
    if (!rc || rc->err) die("redisConnect %s failed", o_addr);
    for (;;) {
        int online = 0;
        r = redisCommand(rc, "INFO replication");
        if (!r || r->type != REDIS_REPLY_STRING) die("INFO failed%s", "");
        const char *p = strstr(r->str, "master_repl_offset:");
        if (target < 0 && p) target = atoll(p + 19);
        for (p = r->str; (p = strstr(p, "slave")) != NULL; p++) {
            const char *o = strstr(p, "offset="), *st = strstr(p, "state=online");
            const char *eol = strchr(p, '\n');
            if (o && st && eol && st < eol && o < eol && atoll(o + 7) >= target) online++;
        }
        freeReplyObject(r);
        if (target >= 0 && online >= n) break;
        usleep(1000);
    }
    redisFree(rc);
}

static void mode_wait_pg(const char *name)
{
    char ci[256], q[512];
    PGconn *pg;
    PGresult *r;
    char lsn[64];
    snprintf(ci, sizeof ci, "host=%s port=%d dbname=postgres user=postgres", host, port);
    pg = PQconnectdb(ci);
    if (PQstatus(pg) != CONNECTION_OK) die("PQconnectdb: %s", PQerrorMessage(pg));
    r = PQexec(pg, "SELECT pg_current_wal_lsn()");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) die("%s", PQerrorMessage(pg));
    snprintf(lsn, sizeof lsn, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    snprintf(q, sizeof q,
             "SELECT count(*) FROM pg_stat_replication WHERE application_name = '%s' "
             "AND state = 'streaming' AND replay_lsn >= '%s'",
             name, lsn);
    for (;;) {
        int ok;
        r = PQexec(pg, q);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) die("%s", PQerrorMessage(pg));
        ok = atoi(PQgetvalue(r, 0, 0)) > 0;
        PQclear(r);
        if (ok) break;
        usleep(1000);
    }
    PQfinish(pg);
}

static void report_samples(const char *what, uint64_t *v, long n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    printf("BENCH %s.%s.p50 %.1f us\n", o_name, what, (double)v[n / 2] / 1000.0);
    printf("BENCH %s.%s.p99 %.1f us\n", o_name, what, (double)v[(n * 99) / 100] / 1000.0);
}

static void mode_floor_fsync(const char *dir, long n)
{
    char path[4096], buf[4096];
    uint64_t *v = malloc(sizeof(uint64_t) * (size_t)n);
    int fd;
    snprintf(path, sizeof path, "%s/floor-fsync.dat", dir);
    fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    if (fd < 0 || !v) die("cannot create %s", path);
    memset(buf, 'x', sizeof buf);
    if (pwrite(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf || fsync(fd) != 0) die("write %s", path);
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        buf[0] = (char)i;
        if (pwrite(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf || fdatasync(fd) != 0) die("fdatasync %s", path);
        v[i] = now_ns() - t0;
    }
    close(fd);
    unlink(path);
    report_samples("fsync4k", v, n);
    free(v);
}

static int rtt_listen_fd;
static long rtt_n;

static void read_full(int fd, char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) die("ping-pong read failed%s", "");
        p += r;
        n -= (size_t)r;
    }
}

static void *rtt_server(void *arg)
{
    char buf[VALUE_BYTES];
    int one = 1, s = accept(rtt_listen_fd, NULL, NULL);
    (void)arg;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (long i = 0; i < rtt_n + 20; i++) {
        read_full(s, buf, sizeof buf);
        write_all(s, buf, sizeof buf);
    }
    close(s);
    return NULL;
}

static void mode_floor_rtt(long n)
{
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    pthread_t th;
    char buf[VALUE_BYTES] = {0};
    uint64_t *v = malloc(sizeof(uint64_t) * (size_t)n);
    int s, one = 1;
    rtt_n = n;
    rtt_listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(rtt_listen_fd, (struct sockaddr *)&a, sizeof a) || listen(rtt_listen_fd, 1) ||
        getsockname(rtt_listen_fd, (struct sockaddr *)&a, &al))
        die("ping-pong listen failed%s", "");
    pthread_create(&th, NULL, rtt_server, NULL);
    s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) die("ping-pong connect failed%s", "");
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (long i = 0; i < n + 20; i++) {
        uint64_t t0 = now_ns();
        write_all(s, buf, sizeof buf);
        read_full(s, buf, sizeof buf);
        if (i >= 20) v[i - 20] = now_ns() - t0;
    }
    pthread_join(th, NULL);
    close(s);
    close(rtt_listen_fd);
    report_samples("rtt", v, n);
    free(v);
}

int main(int argc, char **argv)
{
    int i;
    for (i = 1; i < argc && argv[i][0] == '-'; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) die("missing value of %s", a);
        if (!strcmp(a, "--sys")) o_sys = v;
        else if (!strcmp(a, "--addr")) o_addr = v;
        else if (!strcmp(a, "--replicas")) o_replicas = atoi(v);
        else if (!strcmp(a, "--token")) o_token = v;
        else if (!strcmp(a, "--name")) o_name = v;
        else if (!strcmp(a, "--samples")) o_samples = v;
        else if (!strcmp(a, "--cpu-pids")) o_cpu_pids = v;
        else die("unknown option %s", a);
    }
    if (i >= argc) die("no mode given%s", "");
    {
        const char *c = strrchr(o_addr, ':');
        if (!c || (size_t)(c - o_addr) >= sizeof host) die("bad --addr %s", o_addr);
        memcpy(host, o_addr, (size_t)(c - o_addr));
        host[c - o_addr] = 0;
        port = atoi(c + 1);
    }
    confd_init("peers_load", stderr, CONFD_SILENT);
    const char *m = argv[i];
    const char *a1 = i + 1 < argc ? argv[i + 1] : "0", *a2 = i + 2 < argc ? argv[i + 2] : "0";
    if (!strcmp(m, "lat")) mode_lat(atol(a1));
    else if (!strcmp(m, "tput")) mode_tput(atoi(a1), atof(a2));
    else if (!strcmp(m, "fill")) mode_fill(atol(a1), atol(a2), i + 3 < argc ? atol(argv[i + 3]) : 0);
    else if (!strcmp(m, "wait-redis")) mode_wait_redis(atoi(a1));
    else if (!strcmp(m, "wait-pg")) mode_wait_pg(a1);
    else if (!strcmp(m, "floor-fsync")) mode_floor_fsync(a1, atol(a2));
    else if (!strcmp(m, "floor-rtt")) mode_floor_rtt(atol(a1));
    else if (!strcmp(m, "failover")) mode_failover(atoi(a1), a2, i + 3 < argc ? atol(argv[i + 3]) : 30000);
    else die("unknown mode %s", m);
    return 0;
}
