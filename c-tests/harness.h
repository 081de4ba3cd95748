/*
 * Test harness for the C tests: PASS/FAIL bookkeeping, real ha-node
 * processes (free ports, start, wait until ready, always stop and reap), and
 * small helpers to build confd values and connect HA sockets.
 */
#ifndef HARNESS_H
#define HARNESS_H

#include <stdio.h>
#include <sys/types.h>

#include <confd_lib.h>
#include <confd_ha.h>

/* ---- bookkeeping ---- */

extern int t_case_failed; /* set by CHECK in the running case */

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            t_case_failed = 1;                                               \
            printf("    check failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                                             \
            printf("\n");                                                    \
            fflush(stdout);                                                  \
        }                                                                    \
    } while (0)

/* A call that must return `rc` and, unless rc is CONFD_OK, leave
   confd_errno == `err`. Prints errno and lasterr on mismatch. */
#define CHECK_RC(call, rc, err)                                               \
    do {                                                                      \
        int rc_ = (call);                                                     \
        if (rc_ != (rc) || ((rc) != CONFD_OK && confd_errno != (err))) {      \
            t_case_failed = 1;                                                \
            printf("    check failed at %s:%d: %s returned %d (want %d), "    \
                   "confd_errno %d (want %d), lasterr \"%s\"\n",               \
                   __FILE__, __LINE__, #call, rc_, (int)(rc),                 \
                   confd_errno, (int)(err), confd_lasterr());                 \
            fflush(stdout);                                                   \
        }                                                                     \
    } while (0)

/* Runs one case and prints "PASS name" or "FAIL name". */
void t_run(const char *name, void (*fn)(void));
/* Prints "SKIP name: why" (a case that cannot run on this machine). */
void t_skip(const char *name, const char *why);
/* Summary line; returns the process exit status (0 = all passed). */
int t_done(void);
/* lasterr contains `needle`? */
int lasterr_has(const char *needle);

/* ---- ha-node processes ---- */

struct hn_node {
    pid_t pid;          /* 0 when not running */
    char ip[32];        /* its HA address (127.0.0.x) */
    int ha_port;        /* cluster-wide HA port */
    int ipc_port;       /* TCP IPC port */
    char ipc_host[48];  /* TCP IPC host: 127.0.0.1, ::1, or "none" */
    char dir[64];       /* scratch dir: data/, ipc.sock, ha-node.log */
    char ipc_path[108]; /* Unix IPC socket */
    char log[96];
};

/* A TCP port free on 127.0.0.1 and, if ip2 != NULL, on ip2 too. */
int hn_free_port(const char *ip2);
/* Starts ha-node with HA address ip:ha_port (ha_port 0 = a free one) and
   extra flags (NULL-terminated list, may be NULL); returns 0 when its IPC
   port accepts connections within 20 s, else -1 (with the log printed). */
int hn_start(struct hn_node *n, const char *ip, int ha_port, const char *const *extra);
/* The same with TCP IPC on ipc_host ("127.0.0.1", "::1", or "none" for the
   Unix socket only; readiness is then checked on the Unix socket). */
int hn_start_ipc(struct hn_node *n, const char *ip, int ha_port, const char *ipc_host,
                 const char *const *extra);
/* Is there an IPv6 loopback (::1) on this machine? */
int have_ipv6_loopback(void);
/* SIGTERM, wait (with a deadline) and reap; SIGKILL if it does not stop. */
void hn_stop(struct hn_node *n);
/* Sends `sig` and, for fatal signals, reaps. */
void hn_kill(struct hn_node *n, int sig);
/* Prints the node's log (on failure). */
void hn_dump_log(const struct hn_node *n);

/* ---- values and sockets ---- */

void set_buf(confd_value_t *v, const char *s);
/* A node record with a C_BUF id and an IPv4 address. */
void make_node4(struct confd_ha_node *n, const char *id, const char *ip);
/* A new TCP socket connected with confd_ha_connect to the node's IPC port;
   -1 on failure (the socket is closed). */
int ha_connect_tcp(const struct hn_node *n, const char *token);
int ha_connect_unix(const struct hn_node *n, const char *token);
int ha_connect_tcp6(const struct hn_node *n, const char *token);
/* Polls confd_ha_get_status on the HA socket `sock` until the node is in
   `state` with `nodes` nodes (nodes < 0: any), within timeout_ms. Fills
   *out (if not NULL) with the last status. Returns 0 when reached. */
int wait_state(int sock, int state, int nodes, int timeout_ms, struct confd_ha_status *out);
/* Milliseconds on the monotonic clock. */
long long now_ms(void);
/* Short pause inside a polling loop (never used as synchronisation alone). */
void poll_pause(void);

#endif
