/*
 * ha_event: latency of HA events through the C API (issue 4). A subscriber
 * thread blocks in confd_read_notification() on a CONFD_NOTIF_HA_INFO socket;
 * the main thread alternates confd_ha_beprimary() / confd_ha_benone() on an
 * HA socket and, for each call, the time from the call returning to the
 * event being read is recorded (negative when the subscriber read it first:
 * the daemon emits the event before it answers), and from the call's start.
 *
 *   ha_event --tcp 127.0.0.1:PORT --unix /path/ipc.sock [-n CALLS] [--token T]
 *
 * Both sockets use the same transport in one measurement; TCP then Unix.
 * Output: `BENCH <name> <value> <unit>` lines for scripts/bench.sh.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <confd_lib.h>
#include <confd_ha.h>
#include <confd_events.h>

static const char *opt_tcp, *opt_unix, *opt_token = "bench-token";
static long opt_n = 2000;

static void die(const char *what)
{
    fprintf(stderr, "ha_event: %s: %s (confd_errno %d: %s)\n", what, strerror(errno), confd_errno,
            confd_lasterr() ? confd_lasterr() : "");
    exit(1);
}

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

enum transport { T_TCP, T_UNIX };

/* A connected socket of the transport: `ha` 1 = HA control, 0 = events. */
static int connect_to(enum transport t, int ha)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int s, rc;
    memset(&ss, 0, sizeof ss);
    if (t == T_TCP) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        char host[64];
        const char *c = strrchr(opt_tcp, ':');
        if (!c || (size_t)(c - opt_tcp) >= sizeof host) {
            fprintf(stderr, "ha_event: bad HOST:PORT %s\n", opt_tcp);
            exit(2);
        }
        memcpy(host, opt_tcp, (size_t)(c - opt_tcp));
        host[c - opt_tcp] = 0;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)atoi(c + 1));
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
            fprintf(stderr, "ha_event: bad IPv4 address %s\n", host);
            exit(2);
        }
        len = sizeof *a;
        s = socket(AF_INET, SOCK_STREAM, 0);
    } else {
        struct sockaddr_un *a = (struct sockaddr_un *)&ss;
        if (strlen(opt_unix) >= sizeof a->sun_path) {
            fprintf(stderr, "ha_event: Unix path too long\n");
            exit(2);
        }
        a->sun_family = AF_UNIX;
        strcpy(a->sun_path, opt_unix);
        len = sizeof *a;
        s = socket(AF_UNIX, SOCK_STREAM, 0);
    }
    if (s < 0) die("socket");
    rc = ha ? confd_ha_connect(s, (struct sockaddr *)&ss, (int)len, opt_token)
            : confd_notifications_connect(s, (struct sockaddr *)&ss, (int)len, CONFD_NOTIF_HA_INFO);
    if (rc != CONFD_OK) die(ha ? "confd_ha_connect" : "confd_notifications_connect");
    return s;
}

/* What the subscriber saw: read time and type of each HA event. */
static int64_t *seen_at;
static int *seen_type;
static long seen_n;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void *subscriber(void *arg)
{
    int s = *(int *)arg;
    static struct confd_notification n;
    long i;
    for (i = 0; i < opt_n; i++) {
        int64_t t;
        if (confd_read_notification(s, &n) != CONFD_OK) die("confd_read_notification");
        t = now_ns();
        if (n.type != CONFD_NOTIF_HA_INFO) {
            i--;
            continue;
        }
        pthread_mutex_lock(&mu);
        seen_at[i] = t;
        seen_type[i] = (int)n.n.hnot.type;
        seen_n = i + 1;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
        confd_free_notification(&n);
    }
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *name, double *v, long n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    printf("BENCH %s.p50 %.1f us\n", name, v[(n - 1) / 2]);
    printf("BENCH %s.p99 %.1f us\n", name, v[(long)((double)(n - 1) * 0.99)]);
    printf("BENCH %s.max %.1f us\n", name, v[n - 1]);
}

static void run(enum transport t, const char *tn)
{
    int ev, ha = connect_to(t, 1);
    double *from_return = malloc(sizeof(double) * (size_t)opt_n);
    double *from_call = malloc(sizeof(double) * (size_t)opt_n);
    double *call = malloc(sizeof(double) * (size_t)opt_n);
    confd_value_t id;
    pthread_t th;
    long i, early = 0;
    char name[96];

    seen_at = calloc((size_t)opt_n, sizeof(int64_t));
    seen_type = calloc((size_t)opt_n, sizeof(int));
    seen_n = 0;
    if (!from_return || !from_call || !call || !seen_at || !seen_type) die("malloc");
    CONFD_SET_BUF(&id, (unsigned char *)"bench", 5);
    /* Start from NONE so that the first call, a beprimary, is a real change;
       subscribe after it, so that its IS_NONE is not ours to read. */
    if (confd_ha_benone(ha) != CONFD_OK) die("confd_ha_benone");
    ev = connect_to(t, 0);
    if (pthread_create(&th, NULL, subscriber, &ev) != 0) die("pthread_create");
    for (i = 0; i < opt_n; i++) {
        int want = (i % 2 == 0) ? CONFD_HA_INFO_IS_PRIMARY : CONFD_HA_INFO_IS_NONE;
        int64_t t0 = now_ns(), t1, t2;
        int rc = (i % 2 == 0) ? confd_ha_beprimary(ha, &id) : confd_ha_benone(ha);
        t1 = now_ns();
        if (rc != CONFD_OK) die(i % 2 == 0 ? "confd_ha_beprimary" : "confd_ha_benone");
        pthread_mutex_lock(&mu);
        while (seen_n <= i) pthread_cond_wait(&cv, &mu);
        t2 = seen_at[i];
        if (seen_type[i] != want) {
            fprintf(stderr, "ha_event: event %ld has type %d, want %d\n", i, seen_type[i], want);
            exit(1);
        }
        pthread_mutex_unlock(&mu);
        from_return[i] = (double)(t2 - t1) / 1000.0;
        from_call[i] = (double)(t2 - t0) / 1000.0;
        call[i] = (double)(t1 - t0) / 1000.0;
        if (t2 < t1) early++;
    }
    pthread_join(th, NULL);
    printf("BENCH cevent.%s.calls %ld count\n", tn, opt_n);
    snprintf(name, sizeof name, "cevent.%s.from_return", tn);
    report(name, from_return, opt_n);
    snprintf(name, sizeof name, "cevent.%s.from_call", tn);
    report(name, from_call, opt_n);
    snprintf(name, sizeof name, "cevent.%s.call", tn);
    report(name, call, opt_n);
    printf("BENCH cevent.%s.read_before_return %ld count\n", tn, early);
    fflush(stdout);
    close(ha);
    close(ev);
    free(from_return);
    free(from_call);
    free(call);
    free(seen_at);
    free(seen_type);
}

int main(int argc, char **argv)
{
    int i;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tcp") && i + 1 < argc) opt_tcp = argv[++i];
        else if (!strcmp(argv[i], "--unix") && i + 1 < argc) opt_unix = argv[++i];
        else if (!strcmp(argv[i], "--token") && i + 1 < argc) opt_token = argv[++i];
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) opt_n = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: ha_event --tcp HOST:PORT --unix PATH [-n CALLS] [--token T]\n");
            return 2;
        }
    }
    if (!opt_tcp || !opt_unix || opt_n < 2) {
        fprintf(stderr, "usage: ha_event --tcp HOST:PORT --unix PATH [-n CALLS] [--token T]\n");
        return 2;
    }
    confd_init("ha_event", stderr, CONFD_SILENT);
    run(T_TCP, "tcp");
    run(T_UNIX, "unix");
    return 0;
}
