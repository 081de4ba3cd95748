/*
 * Every HA function against one real ha-node: connect over TCP v4, TCP v6
 * and a Unix socket; beprimary, benone, berelay, secondary_dead,
 * get_status; the old-name macros and symbols; errors with the right
 * confd_errno and message (HA_BIND, BADSTATE); a second connect replacing
 * the first; CONFD_EOF when the daemon goes away.
 */
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define TOKEN "c-test-token"
static struct hn_node node;
static struct confd_ha_status st;

static void test_connect_tcp_v4(void)
{
    int s = ha_connect_tcp(&node, TOKEN);
    CHECK(s >= 0, "connect");
    if (s < 0) return;
    CHECK_RC(confd_ha_get_status(s, &st), CONFD_OK, 0);
    CHECK(st.state == CONFD_HA_STATE_NONE && st.num_nodes == 0, "state %d nodes %d", st.state, st.num_nodes);
    CHECK(confd_maxdepth > 0 && confd_maxkeylen > 0, "maxdepth %d maxkeylen %d from the hello",
          confd_maxdepth, confd_maxkeylen);
    {
        /* Small requests must not wait for delayed ACKs (Nagle). */
        int nodelay = 0;
        socklen_t len = sizeof nodelay;
        CHECK(getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len) == 0 && nodelay,
              "TCP_NODELAY set on the caller's socket (%d)", nodelay);
    }
    close(s);
}

static void test_connect_unix(void)
{
    int s = ha_connect_unix(&node, TOKEN);
    CHECK(s >= 0, "connect");
    if (s < 0) return;
    CHECK_RC(confd_ha_get_status(s, &st), CONFD_OK, 0);
    CHECK(st.state == CONFD_HA_STATE_NONE, "state %d", st.state);
    close(s);
}

static void test_connect_tcp_v6(void)
{
    struct hn_node n6;
    int s;
    if (hn_start_ipc(&n6, "127.0.0.1", 0, "::1", NULL) != 0) {
        CHECK(0, "ha-node with --ipc-addr [::1]:port did not start");
        hn_stop(&n6);
        return;
    }
    s = ha_connect_tcp6(&n6, TOKEN);
    CHECK(s >= 0, "connect over IPv6");
    if (s >= 0) {
        CHECK_RC(confd_ha_get_status(s, &st), CONFD_OK, 0);
        CHECK(st.state == CONFD_HA_STATE_NONE, "state %d", st.state);
        close(s);
    }
    hn_stop(&n6);
}

static void test_connect_unix_only(void)
{
    struct hn_node nu;
    int s;
    if (hn_start_ipc(&nu, "127.0.0.1", 0, "none", NULL) != 0) {
        CHECK(0, "ha-node with --ipc-addr none did not start");
        hn_stop(&nu);
        return;
    }
    s = ha_connect_unix(&nu, TOKEN);
    CHECK(s >= 0, "connect");
    if (s >= 0) {
        CHECK_RC(confd_ha_get_status(s, &st), CONFD_OK, 0);
        close(s);
    }
    hn_stop(&nu);
}

static void test_primary_none_cycle(void)
{
    confd_value_t id;
    int s = ha_connect_tcp(&node, TOKEN);
    CHECK(s >= 0, "connect");
    if (s < 0) return;
    set_buf(&id, "n1");
    CHECK_RC(confd_ha_beprimary(s, &id), CONFD_OK, 0);
    CHECK_RC(confd_ha_get_status(s, &st), CONFD_OK, 0);
    CHECK(st.state == CONFD_HA_STATE_PRIMARY && st.num_nodes == 0, "state %d nodes %d", st.state, st.num_nodes);
    /* berelay on a primary: BADSTATE with the daemon's reason */
    CHECK_RC(confd_ha_berelay(s), CONFD_ERR, CONFD_ERR_BADSTATE);
    CHECK(lasterr_has("not a secondary"), "lasterr \"%s\"", confd_lasterr());
    /* secondary_dead of a node nobody knows: ok, as ConfD */
    set_buf(&id, "ghost");
    CHECK_RC(confd_ha_secondary_dead(s, &id), CONFD_OK, 0);
    CHECK_RC(confd_ha_benone(s), CONFD_OK, 0);
    CHECK_RC(confd_ha_get_status(s, &st), CONFD_OK, 0);
    CHECK(st.state == CONFD_HA_STATE_NONE && st.num_nodes == 0, "state %d nodes %d", st.state, st.num_nodes);
    CHECK_RC(confd_ha_berelay(s), CONFD_ERR, CONFD_ERR_BADSTATE);
    CHECK(strcmp(confd_strerror(confd_errno), "operation in wrong state") == 0, "strerror");
    close(s);
}

static void test_old_names_and_value_types(void)
{
    confd_value_t id;
    int s = ha_connect_unix(&node, TOKEN);
    CHECK(s >= 0, "connect");
    if (s < 0) return;
    CONFD_SET_STR(&id, "n1-str"); /* C_STR travels as C_BUF would */
    CHECK_RC(confd_ha_bemaster(s, &id), CONFD_OK, 0);
    CHECK_RC(confd_ha_status(s, &st), CONFD_OK, 0);
    CHECK(st.state == CONFD_HA_STATE_MASTER, "state %d", st.state);
    CHECK_RC(confd_ha_slave_dead(s, &id), CONFD_OK, 0);
    CHECK_RC(confd_ha_benone(s), CONFD_OK, 0);
    close(s);
}

static void test_ha_bind_error(void)
{
    struct sockaddr_in a;
    confd_value_t id;
    int blocker = socket(AF_INET, SOCK_STREAM, 0), s, bound = 0;
    long long deadline = now_ms() + 10000;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(node.ha_port);
    inet_pton(AF_INET, node.ip, &a.sin_addr);
    /* The node let go of its HA port at benone, but may close it a moment later. */
    while (!(bound = bind(blocker, (struct sockaddr *)&a, sizeof a) == 0) && now_ms() < deadline) poll_pause();
    CHECK(bound && listen(blocker, 1) == 0, "blocker bind");
    s = ha_connect_tcp(&node, TOKEN);
    CHECK(s >= 0, "connect");
    if (s >= 0) {
        set_buf(&id, "n1");
        CHECK_RC(confd_ha_beprimary(s, &id), CONFD_ERR, CONFD_ERR_HA_BIND);
        CHECK(lasterr_has("bind"), "lasterr \"%s\"", confd_lasterr());
        close(blocker);
        blocker = -1;
        CHECK_RC(confd_ha_beprimary(s, &id), CONFD_OK, 0);
        CHECK_RC(confd_ha_benone(s), CONFD_OK, 0);
        close(s);
    }
    if (blocker >= 0) close(blocker);
}

static void test_second_connect_replaces_first(void)
{
    int s1 = ha_connect_tcp(&node, TOKEN), s2;
    CHECK(s1 >= 0, "connect 1");
    if (s1 < 0) return;
    CHECK_RC(confd_ha_get_status(s1, &st), CONFD_OK, 0);
    s2 = ha_connect_unix(&node, TOKEN);
    CHECK(s2 >= 0, "connect 2");
    if (s2 >= 0) {
        /* One round trip on the new socket: the daemon has taken it over. */
        CHECK_RC(confd_ha_get_status(s2, &st), CONFD_OK, 0);
        CHECK_RC(confd_ha_get_status(s1, &st), CONFD_EOF, CONFD_ERR_EOF);
        CHECK(lasterr_has("closed"), "lasterr \"%s\"", confd_lasterr());
        CHECK_RC(confd_ha_get_status(s2, &st), CONFD_OK, 0);
        close(s2);
    }
    close(s1);
}

static void test_eof_when_daemon_goes_away(void)
{
    struct hn_node n;
    confd_value_t id;
    int s, s2;
    if (hn_start(&n, "127.0.0.1", 0, NULL) != 0) {
        CHECK(0, "start");
        hn_stop(&n);
        return;
    }
    s = ha_connect_tcp(&n, TOKEN);
    s2 = ha_connect_tcp(&n, TOKEN); /* replaces s; keep both to probe */
    CHECK(s >= 0 && s2 >= 0, "connect");
    CHECK_RC(confd_ha_get_status(s2, &st), CONFD_OK, 0);
    hn_kill(&n, SIGKILL);
    set_buf(&id, "n1");
    CHECK_RC(confd_ha_beprimary(s2, &id), CONFD_EOF, CONFD_ERR_EOF);
    CHECK_RC(confd_ha_get_status(s2, &st), CONFD_EOF, CONFD_ERR_EOF);
    CHECK_RC(confd_ha_benone(s), CONFD_EOF, CONFD_ERR_EOF);
    if (s >= 0) close(s);
    if (s2 >= 0) close(s2);
    /* Nobody listens any more: a new connect fails with the OS error. */
    s = socket(AF_INET, SOCK_STREAM, 0);
    {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons(n.ipc_port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&a, sizeof a, TOKEN), CONFD_ERR, CONFD_ERR_OS);
    }
    close(s);
    hn_stop(&n);
}

int main(void)
{
    confd_init("ha_node", stderr, CONFD_SILENT);
    if (hn_start(&node, "127.0.0.1", 0, NULL) != 0) {
        printf("FAIL start: ha-node did not start (HA_NODE=%s)\n", getenv("HA_NODE") ? getenv("HA_NODE") : "");
        hn_stop(&node);
        return 1;
    }
    t_run("connect_tcp_v4", test_connect_tcp_v4);
    t_run("connect_unix", test_connect_unix);
    if (have_ipv6_loopback())
        t_run("connect_tcp_v6", test_connect_tcp_v6);
    else
        t_skip("connect_tcp_v6", "no IPv6 loopback (::1) on this machine");
    t_run("connect_unix_only", test_connect_unix_only);
    t_run("primary_none_cycle", test_primary_none_cycle);
    t_run("old_names_and_value_types", test_old_names_and_value_types);
    t_run("ha_bind_error", test_ha_bind_error);
    t_run("second_connect_replaces_first", test_second_connect_replaces_first);
    t_run("eof_when_daemon_goes_away", test_eof_when_daemon_goes_away);
    hn_stop(&node);
    return t_done();
}
