/*
 * confd_events.h against real ha-node processes: every HA event type
 * (IS_PRIMARY, IS_NONE, SECONDARY_ARRIVED, SECONDARY_INITIALIZED,
 * BESECONDARY_RESULT ok and HA_BADTOKEN, SECONDARY_DIED by SIGSTOP of a
 * secondary, NOPRIMARY with HA_NOTICK by SIGSTOP of the primary),
 * heartbeats, the HA_INFO_SYNC hold, CONFD_EOF, and bad arguments.
 */
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include <confd_events.h>

#define TOKEN "events-token"
static struct hn_node n1, n2, n3;
static struct confd_notification ev;

/* A notification socket on node n (TCP), subscribed to mask. */
static int ev_connect(const struct hn_node *n, int mask, int heartbeat_ms)
{
    struct sockaddr_in a;
    struct confd_notifications_data d;
    int s = socket(AF_INET, SOCK_STREAM, 0), rc;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(n->ipc_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    memset(&d, 0, sizeof d);
    d.heartbeat_interval = heartbeat_ms;
    CONFD_SET_NOEXISTS(&d.start_time);
    CONFD_SET_NOEXISTS(&d.stop_time);
    if (heartbeat_ms)
        rc = confd_notifications_connect2(s, (struct sockaddr *)&a, sizeof a, mask, &d);
    else
        rc = confd_notifications_connect(s, (struct sockaddr *)&a, sizeof a, mask);
    if (rc != CONFD_OK) {
        printf("    ev_connect: rc %d errno %d %s\n", rc, confd_errno, confd_lasterr());
        close(s);
        return -1;
    }
    return s;
}

/* Reads the next event within timeout_ms: its rc, or -99 on timeout. */
static int ev_read(int fd, struct confd_notification *n, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, timeout_ms);
    if (r <= 0) return -99;
    return confd_read_notification(fd, n);
}

/* Waits for an HA event of `type`, skipping heartbeats and other HA events
   (printed). Returns 0 when found. */
static int ev_wait_ha(int fd, int type, struct confd_notification *n, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - now_ms();
        int rc;
        if (left <= 0) {
            printf("    ev_wait_ha: no HA event %d within %d ms\n", type, timeout_ms);
            return -1;
        }
        rc = ev_read(fd, n, (int)left);
        if (rc != CONFD_OK) {
            printf("    ev_wait_ha: read rc %d errno %d %s\n", rc, confd_errno, rc == -99 ? "timeout" : confd_lasterr());
            return -1;
        }
        if (n->type == CONFD_NOTIF_HA_INFO && (int)n->n.hnot.type == type) return 0;
        if (n->type == CONFD_NOTIF_HA_INFO) printf("    (skipped HA event %d)\n", n->n.hnot.type);
        confd_free_notification(n);
    }
}

static int id_is(const struct confd_ha_node *node, const char *id)
{
    return node->nodeid.type == C_BUF && CONFD_GET_BUFSIZE(&node->nodeid) == strlen(id) &&
           CONFD_GET_CBUFPTR(&node->nodeid) == node->buf && strcmp(node->buf, id) == 0;
}

static void be_primary(int s, const char *id)
{
    confd_value_t v;
    set_buf(&v, id);
    CHECK_RC(confd_ha_beprimary(s, &v), CONFD_OK, 0);
}

static int be_secondary(int s, const char *me, const char *pid, const char *pip, int wait)
{
    confd_value_t v;
    struct confd_ha_node p;
    set_buf(&v, me);
    make_node4(&p, pid, pip);
    return confd_ha_besecondary(s, &v, &p, wait);
}

static void all_none(int s1, int s2, int s3)
{
    if (s1 >= 0) confd_ha_benone(s1);
    if (s2 >= 0) confd_ha_benone(s2);
    if (s3 >= 0) confd_ha_benone(s3);
}

static void test_bad_args(void)
{
    struct sockaddr_in a;
    int s = socket(AF_INET, SOCK_STREAM, 0), e;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(n1.ipc_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_RC(confd_notifications_connect(s, (struct sockaddr *)&a, sizeof a, 0), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("mask is 0"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(confd_notifications_connect(s, (struct sockaddr *)&a, sizeof a, CONFD_NOTIF_HA_INFO | CONFD_NOTIF_HEARTBEAT),
             CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("data is NULL"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(confd_notifications_connect2(s, (struct sockaddr *)&a, sizeof a, CONFD_NOTIF_STREAM_EVENT, NULL),
             CONFD_ERR, CONFD_ERR_NOT_IMPLEMENTED);
    CHECK_RC(confd_notifications_connect(s, NULL, sizeof a, CONFD_NOTIF_HA_INFO), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK_RC(confd_notifications_connect(s, (struct sockaddr *)&a, 3, CONFD_NOTIF_HA_INFO), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    close(s);
    e = ev_connect(&n1, CONFD_NOTIF_HA_INFO, 0);
    CHECK(e >= 0, "connect");
    CHECK_RC(confd_read_notification(e, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("n is NULL"), "lasterr \"%s\"", confd_lasterr());
    confd_free_notification(NULL);
    CHECK_RC(confd_read_notification(-1, &ev), CONFD_ERR, CONFD_ERR_OS);
    CHECK_RC(confd_sync_ha_notification(-1), CONFD_ERR, CONFD_ERR_OS);
    if (e >= 0) close(e);
}

static void test_is_primary_is_none(void)
{
    int s = ha_connect_tcp(&n1, TOKEN), e = ev_connect(&n1, CONFD_NOTIF_HA_INFO, 0);
    CHECK(s >= 0 && e >= 0, "connect");
    if (s < 0 || e < 0) goto out;
    be_primary(s, "n1");
    CHECK(ev_wait_ha(e, CONFD_HA_INFO_IS_PRIMARY, &ev, 5000) == 0, "IS_PRIMARY");
    CHECK(ev.type == CONFD_NOTIF_HA_INFO, "type %lld", (long long)ev.type);
    confd_free_notification(&ev);
    CHECK_RC(confd_ha_benone(s), CONFD_OK, 0);
    CHECK(ev_wait_ha(e, CONFD_HA_INFO_IS_NONE, &ev, 5000) == 0, "IS_NONE");
    confd_free_notification(&ev);
out:
    if (s >= 0) close(s);
    if (e >= 0) close(e);
}

static void test_arrived_initialized_result(void)
{
    int s1 = ha_connect_tcp(&n1, TOKEN), s2 = ha_connect_tcp(&n2, TOKEN), s3 = ha_connect_tcp(&n3, TOKEN);
    int e1 = ev_connect(&n1, CONFD_NOTIF_HA_INFO, 0), e2 = ev_connect(&n2, CONFD_NOTIF_HA_INFO, 0);
    int e3 = ev_connect(&n3, CONFD_NOTIF_HA_INFO, 0);
    CHECK(s1 >= 0 && s2 >= 0 && s3 >= 0 && e1 >= 0 && e2 >= 0 && e3 >= 0, "connect");
    if (s1 < 0 || s2 < 0 || s3 < 0 || e1 < 0 || e2 < 0 || e3 < 0) goto out;
    be_primary(s1, "n1");
    CHECK_RC(be_secondary(s2, "n2", "n1", n1.ip, 1), CONFD_OK, 0);
    /* On the primary: n2 arrived, with its id and address. */
    CHECK(ev_wait_ha(e1, CONFD_HA_INFO_SECONDARY_ARRIVED, &ev, 5000) == 0, "SECONDARY_ARRIVED");
    {
        struct in_addr ip2;
        inet_pton(AF_INET, n2.ip, &ip2);
        CHECK(id_is(&ev.n.hnot.data.secondary_arrived, "n2"), "arrived id");
        CHECK(ev.n.hnot.data.secondary_arrived.af == AF_INET &&
                  ev.n.hnot.data.secondary_arrived.addr.ip4.s_addr == ip2.s_addr, "arrived addr");
    }
    /* On the secondary: its data is initialised. */
    CHECK(ev_wait_ha(e2, CONFD_HA_INFO_SECONDARY_INITIALIZED, &ev, 5000) == 0, "SECONDARY_INITIALIZED");
    CHECK(ev.n.hnot.data.cdb_initialized_by_copy == 0 || ev.n.hnot.data.cdb_initialized_by_copy == 1,
          "by_copy %d", ev.n.hnot.data.cdb_initialized_by_copy);
    /* Async besecondary: the result comes as an event. */
    CHECK_RC(be_secondary(s3, "n3", "n1", n1.ip, 0), CONFD_OK, 0);
    CHECK(ev_wait_ha(e3, CONFD_HA_INFO_BESECONDARY_RESULT, &ev, 10000) == 0, "BESECONDARY_RESULT");
    CHECK(ev.n.hnot.data.besecondary_result == 0, "result %d", ev.n.hnot.data.besecondary_result);
    CHECK(ev.n.hnot.data.beslave_result == 0, "old name");
    CHECK_RC(confd_ha_benone(s3), CONFD_OK, 0);
    /* Async besecondary with a wrong token: the result is HA_BADTOKEN. */
    close(s3);
    s3 = ha_connect_tcp(&n3, "wrong-token");
    CHECK(s3 >= 0, "connect with a wrong token");
    if (s3 >= 0) {
        CHECK_RC(be_secondary(s3, "n3", "n1", n1.ip, 0), CONFD_OK, 0);
        CHECK(ev_wait_ha(e3, CONFD_HA_INFO_BESECONDARY_RESULT, &ev, 10000) == 0, "BESECONDARY_RESULT (bad token)");
        CHECK(ev.n.hnot.data.besecondary_result == CONFD_ERR_HA_BADTOKEN, "result %d", ev.n.hnot.data.besecondary_result);
    }
out:
    all_none(s1, s2, s3);
    if (s1 >= 0) close(s1);
    if (s2 >= 0) close(s2);
    if (s3 >= 0) close(s3);
    if (e1 >= 0) close(e1);
    if (e2 >= 0) close(e2);
    if (e3 >= 0) close(e3);
}

static void test_secondary_died_on_sigstop(void)
{
    int s1 = ha_connect_tcp(&n1, TOKEN), s2 = ha_connect_tcp(&n2, TOKEN);
    int e1 = ev_connect(&n1, CONFD_NOTIF_HA_INFO, 0);
    CHECK(s1 >= 0 && s2 >= 0 && e1 >= 0, "connect");
    if (s1 < 0 || s2 < 0 || e1 < 0) goto out;
    be_primary(s1, "n1");
    CHECK_RC(be_secondary(s2, "n2", "n1", n1.ip, 1), CONFD_OK, 0);
    CHECK(ev_wait_ha(e1, CONFD_HA_INFO_SECONDARY_ARRIVED, &ev, 5000) == 0, "SECONDARY_ARRIVED");
    kill(n2.pid, SIGSTOP);
    /* 200 ms ticks: dead after 3 missed. */
    CHECK(ev_wait_ha(e1, CONFD_HA_INFO_SECONDARY_DIED, &ev, 10000) == 0, "SECONDARY_DIED");
    CHECK(id_is(&ev.n.hnot.data.secondary_died, "n2"), "died id");
    CHECK(id_is(&ev.n.hnot.data.slave_died, "n2"), "old name");
    kill(n2.pid, SIGCONT);
out:
    all_none(s1, s2, -1);
    if (s1 >= 0) close(s1);
    if (s2 >= 0) close(s2);
    if (e1 >= 0) close(e1);
}

static void test_noprimary_on_sigstop(void)
{
    int s1 = ha_connect_tcp(&n1, TOKEN), s2 = ha_connect_tcp(&n2, TOKEN);
    int e2 = ev_connect(&n2, CONFD_NOTIF_HA_INFO, 0);
    CHECK(s1 >= 0 && s2 >= 0 && e2 >= 0, "connect");
    if (s1 < 0 || s2 < 0 || e2 < 0) goto out;
    be_primary(s1, "n1");
    CHECK_RC(be_secondary(s2, "n2", "n1", n1.ip, 1), CONFD_OK, 0);
    kill(n1.pid, SIGSTOP);
    CHECK(ev_wait_ha(e2, CONFD_HA_INFO_NOPRIMARY, &ev, 10000) == 0, "NOPRIMARY");
    CHECK(ev.n.hnot.data.noprimary == CONFD_ERR_HA_NOTICK, "noprimary %d", ev.n.hnot.data.noprimary);
    CHECK(ev.n.hnot.data.nomaster == CONFD_ERR_HA_NOTICK, "old name");
    kill(n1.pid, SIGCONT);
    CHECK(wait_state(s2, CONFD_HA_STATE_NONE, 0, 5000, NULL) == 0, "n2 NONE");
out:
    all_none(s1, s2, -1);
    if (s1 >= 0) close(s1);
    if (s2 >= 0) close(s2);
    if (e2 >= 0) close(e2);
}

static void test_heartbeat(void)
{
    int e = ev_connect(&n1, CONFD_NOTIF_HEARTBEAT, 1000), rc, got = 0;
    long long deadline = now_ms() + 10000;
    CHECK(e >= 0, "connect2 with heartbeat");
    if (e < 0) return;
    while (!got && now_ms() < deadline) {
        rc = ev_read(e, &ev, 5000);
        CHECK(rc == CONFD_OK, "read rc %d", rc);
        if (rc != CONFD_OK) break;
        got = ev.type == CONFD_NOTIF_HEARTBEAT;
        confd_free_notification(&ev);
    }
    CHECK(got, "a heartbeat event");
    close(e);
}

struct order_arg {
    int sock;
    volatile int done;
    int rc;
};

static void *order_benone(void *p)
{
    struct order_arg *a = p;
    a->rc = confd_ha_benone(a->sock);
    a->done = 1;
    return NULL;
}

static void test_ha_info_sync_hold(void)
{
    int s = ha_connect_tcp(&n1, TOKEN), e = ev_connect(&n1, CONFD_NOTIF_HA_INFO | CONFD_NOTIF_HA_INFO_SYNC, 0);
    struct order_arg a = {s, 0, -9};
    pthread_t t;
    long long until;
    CHECK(s >= 0 && e >= 0, "connect");
    if (s < 0 || e < 0) goto out;
    be_primary(s, "n1");
    CHECK(ev_wait_ha(e, CONFD_HA_INFO_IS_PRIMARY, &ev, 5000) == 0, "IS_PRIMARY");
    /* Not acknowledged yet: the next order must wait. */
    pthread_create(&t, NULL, order_benone, &a);
    until = now_ms() + 500;
    while (now_ms() < until && !a.done) poll_pause();
    CHECK(!a.done, "benone completed (rc %d) before the HA event was acknowledged", a.rc);
    CHECK_RC(confd_sync_ha_notification(e), CONFD_OK, 0);
    until = now_ms() + 10000;
    while (now_ms() < until && !a.done) poll_pause();
    CHECK(a.done && a.rc == CONFD_OK, "benone after the ack: done %d rc %d", a.done, a.rc);
    if (!a.done) kill(n1.pid, SIGKILL); /* unblock the thread; the test has failed anyway */
    pthread_join(t, NULL);
    CHECK(ev_wait_ha(e, CONFD_HA_INFO_IS_NONE, &ev, 5000) == 0, "IS_NONE");
    CHECK_RC(confd_sync_ha_notification(e), CONFD_OK, 0);
out:
    if (s >= 0) close(s);
    if (e >= 0) close(e);
}

static void test_eof(void)
{
    int e = ev_connect(&n3, CONFD_NOTIF_HA_INFO, 0);
    CHECK(e >= 0, "connect");
    if (e < 0) return;
    hn_kill(&n3, SIGKILL);
    CHECK_RC(ev_read(e, &ev, 5000), CONFD_EOF, CONFD_ERR_EOF);
    close(e);
}

int main(void)
{
    int ha_port;
    confd_init("events", stderr, CONFD_SILENT);
    ha_port = hn_free_port("127.0.0.2");
    if (hn_start(&n1, "127.0.0.1", ha_port, NULL) != 0 || hn_start(&n2, "127.0.0.2", ha_port, NULL) != 0 ||
        hn_start(&n3, "127.0.0.3", ha_port, NULL) != 0) {
        printf("FAIL start: ha-node did not start\n");
        return 1;
    }
    t_run("bad_args", test_bad_args);
    t_run("is_primary_is_none", test_is_primary_is_none);
    t_run("arrived_initialized_result", test_arrived_initialized_result);
    t_run("secondary_died_on_sigstop", test_secondary_died_on_sigstop);
    t_run("noprimary_notick_on_sigstop", test_noprimary_on_sigstop);
    t_run("heartbeat", test_heartbeat);
    t_run("ha_info_sync_hold", test_ha_info_sync_hold);
    t_run("eof", test_eof);
    hn_stop(&n1);
    hn_stop(&n2);
    hn_stop(&n3);
    return t_done();
}
