/*
 * ha-node serves a program of any ConfD / NSO release in that release's
 * shapes: a program whose library speaks ConfD 6.6's protocol (66, pinned
 * here with CONFD_HA_LIB_PROTO_VSN, as a program linked with ConfD 6.6's
 * library would) is accepted, its 4-tuple subscription is taken, it gets
 * HA events and heartbeats, its ha_synced acknowledgements release the
 * HA_INFO_SYNC hold, and failed orders come with confd_errno and a reason;
 * a program of the library's default version (87) gets the same. The debug
 * stream shows the subscription shape chosen for each version.
 */
#include <arpa/inet.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include <confd_events.h>

#define TOKEN "versions-token"
static struct hn_node n1;

static int ev_connect(int mask, int heartbeat_ms)
{
    struct sockaddr_in a;
    struct confd_notifications_data d;
    int s = socket(AF_INET, SOCK_STREAM, 0), rc;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(n1.ipc_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    memset(&d, 0, sizeof d);
    d.heartbeat_interval = heartbeat_ms;
    CONFD_SET_NOEXISTS(&d.start_time);
    CONFD_SET_NOEXISTS(&d.stop_time);
    rc = confd_notifications_connect2(s, (struct sockaddr *)&a, sizeof a, mask, &d);
    if (rc != CONFD_OK) {
        printf("    ev_connect: rc %d errno %d %s\n", rc, confd_errno, confd_lasterr());
        close(s);
        return -1;
    }
    return s;
}

/* The next event within timeout_ms: CONFD_OK, another rc, or -99. */
static int ev_read(int fd, struct confd_notification *n, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return -99;
    return confd_read_notification(fd, n);
}

/* Reads until an event of notification type `type` (and, for HA_INFO, HA
   type `ha`). */
static int wait_for(int fd, int type, int ha, struct confd_notification *n)
{
    long long deadline = now_ms() + 20000;
    while (now_ms() < deadline) {
        int rc = ev_read(fd, n, (int)(deadline - now_ms()));
        if (rc != CONFD_OK) {
            printf("    read rc %d errno %d %s\n", rc, confd_errno, confd_lasterr());
            return -1;
        }
        if ((int)n->type == type && (type != CONFD_NOTIF_HA_INFO || (int)n->n.hnot.type == ha)) return 0;
    }
    return -1;
}

static void run_as(const char *pin)
{
    struct confd_notification n;
    confd_value_t me;
    FILE *dbg = tmpfile();
    char text[8192];
    size_t len;
    int h, e;
    if (pin)
        setenv("CONFD_HA_LIB_PROTO_VSN", pin, 1);
    confd_set_debug(CONFD_DEBUG, dbg);
    h = ha_connect_tcp(&n1, TOKEN);
    e = ev_connect(CONFD_NOTIF_HA_INFO | CONFD_NOTIF_HA_INFO_SYNC | CONFD_NOTIF_HEARTBEAT, 1000);
    confd_set_debug(CONFD_SILENT, stderr);
    unsetenv("CONFD_HA_LIB_PROTO_VSN");
    CHECK(h >= 0 && e >= 0, "connect: ha %d events %d", h, e);
    if (h < 0 || e < 0) goto out;

    set_buf(&me, "n1");
    CHECK_RC(confd_ha_beprimary(h, &me), CONFD_OK, 0);
    CHECK(wait_for(e, CONFD_NOTIF_HA_INFO, CONFD_HA_INFO_IS_PRIMARY, &n) == 0, "no IS_PRIMARY");
    CHECK_RC(confd_sync_ha_notification(e), CONFD_OK, 0);
    CHECK(wait_for(e, CONFD_NOTIF_HEARTBEAT, 0, &n) == 0, "no heartbeat");
    /* A failed order: confd_errno and ha-node's reason. */
    CHECK_RC(confd_ha_berelay(h), CONFD_ERR, CONFD_ERR_BADSTATE);
    CHECK(strlen(confd_lasterr()) > 0, "no reason");
    /* The acknowledgement was taken: the next order is not held. */
    CHECK_RC(confd_ha_benone(h), CONFD_OK, 0);
    CHECK(wait_for(e, CONFD_NOTIF_HA_INFO, CONFD_HA_INFO_IS_NONE, &n) == 0, "no IS_NONE");
    CHECK_RC(confd_sync_ha_notification(e), CONFD_OK, 0);
out:
    if (h >= 0) close(h);
    if (e >= 0) close(e);
    rewind(dbg);
    len = fread(text, 1, sizeof text - 1, dbg);
    text[len] = 0;
    fclose(dbg);
    if (pin)
        CHECK(strstr(text, "pinned by CONFD_HA_LIB_PROTO_VSN") &&
                  strstr(text, "subscription of 4 elements for protocol version 66"),
              "debug output:\n%s", text);
    else
        CHECK(strstr(text, "accepted with protocol version 87") &&
                  strstr(text, "subscription of 5 elements for protocol version 87"),
              "debug output:\n%s", text);
}

static void test_confd66_program(void) { run_as("66"); }
static void test_default_program(void) { run_as(NULL); }

int main(void)
{
    int rc;
    confd_init("versions_node", stderr, CONFD_SILENT);
    if (hn_start(&n1, "127.0.0.1", 0, NULL) != 0) {
        printf("FAIL cannot start ha-node\n");
        return 1;
    }
    t_run("confd66_program_gets_its_shapes", test_confd66_program);
    t_run("default_program", test_default_program);
    rc = t_done();
    if (rc) hn_dump_log(&n1);
    hn_stop(&n1);
    return rc;
}
