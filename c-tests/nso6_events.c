/*
 * A program built the way it would be against NSO 6.x / ConfD 8.x headers,
 * linked with our library: it does NOT include our confd_events.h but
 * declares the notification struct (an 8-byte type at offset 0, the HA
 * member at offset 8, 8464 bytes in all) and the prototypes (a 64-bit
 * mask) itself, as those headers do. Against real ha-node processes it
 * checks that every n.type the library writes is the full 64-bit value:
 * each struct is filled with 0xff first, so a 4-byte write would leave
 * 0xffffffff in the upper half. It also checks that nothing outside
 * `type` and the HA member is written, and that a mask whose upper half
 * holds junk (as an int-mask caller's register may) subscribes to what
 * its lower half says.
 */
#include <arpa/inet.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h" /* confd_lib.h and confd_ha.h; not confd_events.h */

#ifdef _CONFD_EVENTS_H
#error "this test must not see our confd_events.h"
#endif

/* ---- what NSO 6.x's confd_events.h declares (the parts used here) ---- */

typedef int64_t confd_notification_type;
#define CONFD_NOTIF_HA_INFO (1LL << 6)
#define CONFD_NOTIF_HEARTBEAT (1LL << 13)

struct confd_ha_notification {
    int type; /* enum confd_ha_info_type */
    union {
        int noprimary;
        struct confd_ha_node secondary_died;
        struct confd_ha_node secondary_arrived;
        int cdb_initialized_by_copy;
        int besecondary_result;
    } data;
};

struct confd_notification {
    confd_notification_type type;
    union {
        struct confd_ha_notification hnot;
        /* The other members (audit, syslog, commit, ...) of NSO's union;
           the audit event is the largest: 8456 bytes. */
        char others[8456];
    } n;
};
_Static_assert(sizeof(struct confd_notification) == 8464, "NSO 6.2.5's size on x86-64");
_Static_assert(offsetof(struct confd_notification, n) == 8, "union at 8");

struct confd_notifications_data {
    int heartbeat_interval;
    int health_check_interval;
    char *stream_name;
    confd_value_t start_time;
    confd_value_t stop_time;
    char *xpath_filter;
    int usid;
    int verbosity;
};

int confd_notifications_connect(int sock, const struct sockaddr *srv, int srv_sz,
                                confd_notification_type mask);
int confd_notifications_connect2(int sock, const struct sockaddr *srv, int srv_sz,
                                 confd_notification_type mask, struct confd_notifications_data *data);
int confd_read_notification(int sock, struct confd_notification *n);
void confd_free_notification(struct confd_notification *n);

/* ---- the test ---- */

#define TOKEN "nso6-token"
#define HA_INFO_IS_PRIMARY 5
#define HA_INFO_IS_NONE 6
#define HA_INFO_SECONDARY_ARRIVED 3
/* Bytes past the HA member (8 + sizeof hnot) that must stay untouched. */
#define HNOT_END (8 + sizeof(struct confd_ha_notification))

static struct hn_node n1, n2;
static struct confd_notification ev;

static int ev_connect(const struct hn_node *n, confd_notification_type mask, int heartbeat_ms)
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
    rc = heartbeat_ms ? confd_notifications_connect2(s, (struct sockaddr *)&a, sizeof a, mask, &d)
                      : confd_notifications_connect(s, (struct sockaddr *)&a, sizeof a, mask);
    if (rc != CONFD_OK) {
        printf("    ev_connect: rc %d errno %d %s\n", rc, confd_errno, confd_lasterr());
        close(s);
        return -1;
    }
    return s;
}

/* Fills *n with 0xff, then reads the next event within timeout_ms: its rc,
   or -99 on timeout. */
static int ev_read_prefilled(int fd, struct confd_notification *n, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    memset(n, 0xff, sizeof *n);
    if (poll(&p, 1, timeout_ms) <= 0) return -99;
    return confd_read_notification(fd, n);
}

/* Nothing past the HA member was written. */
static int tail_untouched(const struct confd_notification *n)
{
    const unsigned char *b = (const unsigned char *)n;
    size_t i;
    for (i = HNOT_END; i < sizeof *n; i++)
        if (b[i] != 0xff) {
            printf("    byte %zu of the event was written (0x%02x)\n", i, b[i]);
            return 0;
        }
    return 1;
}

/* Reads events until an HA event of `type`; every event read must have a
   whole 64-bit type. Returns 0 when found. */
static int ev_wait_ha(int fd, int type, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - now_ms();
        int rc;
        if (left <= 0) {
            printf("    no HA event %d within %d ms\n", type, timeout_ms);
            return -1;
        }
        rc = ev_read_prefilled(fd, &ev, (int)left);
        if (rc != CONFD_OK) {
            printf("    read rc %d errno %d %s\n", rc, confd_errno, rc == -99 ? "timeout" : confd_lasterr());
            return -1;
        }
        CHECK(ev.type == CONFD_NOTIF_HA_INFO, "n.type = 0x%llx, want 0x%llx (a 4-byte write leaves 0xffffffff above)",
              (unsigned long long)ev.type, (unsigned long long)CONFD_NOTIF_HA_INFO);
        CHECK(tail_untouched(&ev), "bytes past n.hnot were written");
        confd_free_notification(&ev);
        if (ev.type == CONFD_NOTIF_HA_INFO && ev.n.hnot.type == type) return 0;
        printf("    (skipped HA event %d)\n", ev.n.hnot.type);
    }
}

static void test_is_primary_is_none(void)
{
    /* The upper half of the mask is junk: only HA_INFO is subscribed. */
    int s = ha_connect_tcp(&n1, TOKEN), e = ev_connect(&n1, CONFD_NOTIF_HA_INFO | (0x5a5aLL << 40), 0);
    confd_value_t id;
    CHECK(s >= 0 && e >= 0, "connect");
    if (s < 0 || e < 0) goto out;
    set_buf(&id, "n1");
    CHECK_RC(confd_ha_beprimary(s, &id), CONFD_OK, 0);
    CHECK(ev_wait_ha(e, HA_INFO_IS_PRIMARY, 20000) == 0, "IS_PRIMARY");
    CHECK_RC(confd_ha_benone(s), CONFD_OK, 0);
    CHECK(ev_wait_ha(e, HA_INFO_IS_NONE, 20000) == 0, "IS_NONE");
out:
    if (s >= 0) close(s);
    if (e >= 0) close(e);
}

static void test_secondary_arrived(void)
{
    int s1 = ha_connect_tcp(&n1, TOKEN), s2 = ha_connect_tcp(&n2, TOKEN);
    int e = ev_connect(&n1, CONFD_NOTIF_HA_INFO, 0);
    confd_value_t id1, id2;
    struct confd_ha_node p;
    CHECK(s1 >= 0 && s2 >= 0 && e >= 0, "connect");
    if (s1 < 0 || s2 < 0 || e < 0) goto out;
    set_buf(&id1, "n1");
    set_buf(&id2, "n2");
    CHECK_RC(confd_ha_beprimary(s1, &id1), CONFD_OK, 0);
    CHECK(ev_wait_ha(e, HA_INFO_IS_PRIMARY, 20000) == 0, "IS_PRIMARY");
    make_node4(&p, "n1", n1.ip);
    CHECK_RC(confd_ha_besecondary(s2, &id2, &p, 1), CONFD_OK, 0);
    if (ev_wait_ha(e, HA_INFO_SECONDARY_ARRIVED, 20000) == 0) {
        const struct confd_ha_node *a = &ev.n.hnot.data.secondary_arrived;
        CHECK(a->nodeid.type == C_BUF && strcmp(a->buf, "n2") == 0, "arrived node id \"%s\"", a->buf);
        CHECK(CONFD_GET_CBUFPTR(&a->nodeid) == a->buf, "node id points into the event's own buffer");
    } else {
        CHECK(0, "SECONDARY_ARRIVED");
    }
    confd_ha_benone(s2);
    confd_ha_benone(s1);
out:
    if (s1 >= 0) close(s1);
    if (s2 >= 0) close(s2);
    if (e >= 0) close(e);
}

static void test_heartbeat(void)
{
    int e = ev_connect(&n1, CONFD_NOTIF_HEARTBEAT, 1000), rc;
    CHECK(e >= 0, "connect2");
    if (e < 0) return;
    rc = ev_read_prefilled(e, &ev, 20000);
    CHECK(rc == CONFD_OK, "read rc %d errno %d %s", rc, confd_errno, confd_lasterr());
    CHECK(ev.type == CONFD_NOTIF_HEARTBEAT, "n.type = 0x%llx, want 0x%llx", (unsigned long long)ev.type,
          (unsigned long long)CONFD_NOTIF_HEARTBEAT);
    {
        /* A heartbeat has no data: the union is untouched. */
        const unsigned char *b = (const unsigned char *)&ev;
        size_t i, written = 0;
        for (i = 8; i < sizeof ev; i++) written += b[i] != 0xff;
        CHECK(written == 0, "%zu bytes of the union were written", written);
    }
    confd_free_notification(&ev);
    close(e);
}

int main(void)
{
    int ha_port;
    confd_init("nso6_events", stderr, CONFD_SILENT);
    ha_port = hn_free_port("127.0.0.2");
    if (hn_start(&n1, "127.0.0.1", ha_port, NULL) != 0 || hn_start(&n2, "127.0.0.2", ha_port, NULL) != 0) {
        printf("FAIL start: ha-node did not start\n");
        hn_stop(&n1);
        hn_stop(&n2);
        return 1;
    }
    t_run("is_primary_is_none_with_64bit_type", test_is_primary_is_none);
    t_run("secondary_arrived_with_64bit_type", test_secondary_arrived);
    t_run("heartbeat_with_64bit_type", test_heartbeat);
    hn_stop(&n1);
    hn_stop(&n2);
    return t_done();
}
