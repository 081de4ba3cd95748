/*
 * The HA orders across real ha-node processes on 127.0.0.1/.2/.3 sharing
 * one HA port: besecondary with waitreply 1 and 0, get_status in every
 * state (NONE, PRIMARY, SECONDARY, SECONDARY_RELAY) with the node lists
 * decoded as ConfD does, berelay with a sub-secondary, secondary_dead,
 * AF_UNSPEC (string) primary addresses, and the errors of besecondary:
 * HA_BADTOKEN, HA_BADNAME, HA_CONNECT.
 */
#include <arpa/inet.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define TOKEN "cluster-token"
static struct hn_node n1, n2, n3;
static int s1 = -1, s2 = -1, s3 = -1;
static struct confd_ha_status st;

static int node_is(const struct confd_ha_node *n, const char *id, const char *ip)
{
    struct in_addr a;
    inet_pton(AF_INET, ip, &a);
    return n->nodeid.type == C_BUF && CONFD_GET_BUFSIZE(&n->nodeid) == strlen(id) &&
           strcmp(CONFD_GET_CBUFPTR(&n->nodeid), id) == 0 &&
           CONFD_GET_CBUFPTR(&n->nodeid) == n->buf && n->af == AF_INET && n->addr.ip4.s_addr == a.s_addr;
}

static int has_node(const struct confd_ha_status *s, const char *id, const char *ip)
{
    int i;
    for (i = 0; i < s->num_nodes; i++)
        if (node_is(&s->nodes[i], id, ip)) return 1;
    return 0;
}

static void print_status(const char *who, const struct confd_ha_status *s)
{
    int i;
    printf("    %s: state %d, %d nodes:", who, s->state, s->num_nodes);
    for (i = 0; i < s->num_nodes && i < 8; i++) {
        char a[INET6_ADDRSTRLEN] = "?";
        const struct confd_ha_node *n = &s->nodes[i];
        if (n->af == AF_INET) inet_ntop(AF_INET, &n->addr.ip4, a, sizeof a);
        else if (n->af == AF_INET6) inet_ntop(AF_INET6, &n->addr.ip6, a, sizeof a);
        else if (n->af == AF_UNSPEC && n->addr.str) snprintf(a, sizeof a, "%s", n->addr.str);
        printf(" %s@%s(af %d)", n->nodeid.type == C_BUF ? n->buf : "?", a, n->af);
    }
    printf("\n");
}

static void test_all_none(void)
{
    CHECK_RC(confd_ha_get_status(s1, &st), CONFD_OK, 0);
    CHECK(st.state == CONFD_HA_STATE_NONE && st.num_nodes == 0, "n1 state %d", st.state);
    CHECK_RC(confd_ha_get_status(s2, &st), CONFD_OK, 0);
    CHECK(st.state == CONFD_HA_STATE_NONE, "n2 state %d", st.state);
}

static void test_primary_and_sync_secondary(void)
{
    confd_value_t me;
    struct confd_ha_node p;
    set_buf(&me, "n1");
    CHECK_RC(confd_ha_beprimary(s1, &me), CONFD_OK, 0);
    set_buf(&me, "n2");
    make_node4(&p, "n1", n1.ip);
    CHECK_RC(confd_ha_besecondary(s2, &me, &p, 1), CONFD_OK, 0);
    /* The secondary: nodes[0] is its primary. */
    CHECK_RC(confd_ha_get_status(s2, &st), CONFD_OK, 0);
    CHECK(st.state == CONFD_HA_STATE_SECONDARY && st.num_nodes == 1, "n2 state %d nodes %d", st.state, st.num_nodes);
    CHECK(st.num_nodes >= 1 && node_is(&st.nodes[0], "n1", n1.ip), "n2 nodes[0]");
    if (t_case_failed) print_status("n2", &st);
    /* The primary: its connected secondaries. */
    CHECK(wait_state(s1, CONFD_HA_STATE_PRIMARY, 1, 5000, &st) == 0, "n1 lists n2");
    CHECK(has_node(&st, "n2", n2.ip), "n1 has n2@%s", n2.ip);
    if (t_case_failed) print_status("n1", &st);
}

static void test_async_secondary(void)
{
    confd_value_t me;
    struct confd_ha_node p;
    long long t0;
    set_buf(&me, "n3");
    make_node4(&p, "n1", n1.ip);
    t0 = now_ms();
    CHECK_RC(confd_ha_beslave(s3, &me, &p, 0), CONFD_OK, 0); /* old name, waitreply 0 */
    /* The result arrives as an event; the node gets there on its own. */
    CHECK(wait_state(s3, CONFD_HA_STATE_SECONDARY, 1, 10000, &st) == 0, "n3 becomes secondary");
    CHECK(node_is(&st.nodes[0], "n1", n1.ip), "n3 nodes[0]");
    if (t_case_failed) print_status("n3", &st);
    CHECK(wait_state(s1, CONFD_HA_STATE_PRIMARY, 2, 5000, &st) == 0, "n1 lists 2");
    CHECK(has_node(&st, "n2", n2.ip) && has_node(&st, "n3", n3.ip), "n1 has n2 and n3");
    if (t_case_failed) print_status("n1", &st);
    (void)t0;
}

static void test_secondary_dead(void)
{
    confd_value_t id;
    set_buf(&id, "n3");
    CHECK_RC(confd_ha_secondary_dead(s1, &id), CONFD_OK, 0);
    CHECK(wait_state(s1, CONFD_HA_STATE_PRIMARY, 1, 5000, &st) == 0, "n3 dropped");
    CHECK(has_node(&st, "n2", n2.ip) && !has_node(&st, "n3", n3.ip), "only n2 left");
    /* n3 lost its primary: it ends in NONE (or re-joins); make it NONE. */
    CHECK_RC(confd_ha_benone(s3), CONFD_OK, 0);
    CHECK_RC(confd_ha_get_status(s3, &st), CONFD_OK, 0);
    CHECK(st.state == CONFD_HA_STATE_NONE && st.num_nodes == 0, "n3 state %d", st.state);
}

static void test_besecondary_errors(void)
{
    confd_value_t me;
    struct confd_ha_node p;
    int bad;
    set_buf(&me, "n3");
    /* Wrong primary name. */
    make_node4(&p, "not-n1", n1.ip);
    CHECK_RC(confd_ha_besecondary(s3, &me, &p, 1), CONFD_ERR, CONFD_ERR_HA_BADNAME);
    CHECK(strlen(confd_lasterr()) > 0, "a reason");
    /* Nobody listening at that address. */
    make_node4(&p, "n1", "127.0.0.9");
    CHECK_RC(confd_ha_besecondary(s3, &me, &p, 1), CONFD_ERR, CONFD_ERR_HA_CONNECT);
    CHECK(lasterr_has("127.0.0.9"), "lasterr \"%s\"", confd_lasterr());
    /* Wrong token: the token is set by the HA connection. */
    bad = ha_connect_tcp(&n3, "not-the-cluster-token");
    CHECK(bad >= 0, "connect");
    if (bad >= 0) {
        make_node4(&p, "n1", n1.ip);
        CHECK_RC(confd_ha_besecondary(bad, &me, &p, 1), CONFD_ERR, CONFD_ERR_HA_BADTOKEN);
        CHECK(strcmp(confd_strerror(confd_errno), "Remote HA node has bad credentials") == 0, "strerror");
        CHECK_RC(confd_ha_get_status(bad, &st), CONFD_OK, 0);
        CHECK(st.state == CONFD_HA_STATE_NONE, "n3 state %d after bad token", st.state);
        close(bad);
    }
    /* s3 was replaced by that connection. */
    CHECK_RC(confd_ha_get_status(s3, &st), CONFD_EOF, CONFD_ERR_EOF);
    close(s3);
    s3 = ha_connect_tcp(&n3, TOKEN);
    CHECK(s3 >= 0, "reconnect");
    CHECK(wait_state(s1, CONFD_HA_STATE_PRIMARY, 1, 5000, &st) == 0, "n1 still has only n2");
}

static void test_relay(void)
{
    confd_value_t me;
    struct confd_ha_node p;
    CHECK_RC(confd_ha_berelay(s2), CONFD_OK, 0);
    CHECK_RC(confd_ha_get_status(s2, &st), CONFD_OK, 0);
    CHECK(st.state == CONFD_HA_STATE_SECONDARY_RELAY && st.num_nodes == 1, "n2 state %d nodes %d", st.state, st.num_nodes);
    CHECK(st.num_nodes >= 1 && node_is(&st.nodes[0], "n1", n1.ip), "relay nodes[0] is its primary");
    /* n3 joins the relay, given as a string address (AF_UNSPEC). */
    set_buf(&me, "n3");
    memset(&p, 0, sizeof p);
    set_buf(&p.nodeid, "n2");
    p.af = AF_UNSPEC;
    p.addr.str = n2.ip;
    CHECK_RC(confd_ha_besecondary(s3, &me, &p, 1), CONFD_OK, 0);
    CHECK_RC(confd_ha_get_status(s3, &st), CONFD_OK, 0);
    CHECK(st.state == CONFD_HA_STATE_SECONDARY && st.num_nodes == 1, "n3 state %d", st.state);
    /* Its primary as the daemon reports it: n2, by address or by name. */
    CHECK(st.num_nodes >= 1 && st.nodes[0].nodeid.type == C_BUF && strcmp(st.nodes[0].buf, "n2") == 0, "n3 nodes[0] id");
    CHECK(st.nodes[0].af == AF_INET || (st.nodes[0].af == AF_UNSPEC && st.nodes[0].addr.str == st.nodes[0].addr_buf),
          "n3 nodes[0] af %d", st.nodes[0].af);
    if (t_case_failed) print_status("n3", &st);
    /* The relay: its primary first, then its sub-secondaries. */
    CHECK(wait_state(s2, CONFD_HA_STATE_SECONDARY_RELAY, 2, 5000, &st) == 0, "relay lists n3");
    CHECK(node_is(&st.nodes[0], "n1", n1.ip) && node_is(&st.nodes[1], "n3", n3.ip), "relay nodes");
    if (t_case_failed) print_status("n2", &st);
    /* berelay on a sub-secondary's primary's primary: n1 is no secondary. */
    CHECK_RC(confd_ha_berelay(s1), CONFD_ERR, CONFD_ERR_BADSTATE);
}

static void test_primary_benone_drops_everyone(void)
{
    CHECK_RC(confd_ha_benone(s1), CONFD_OK, 0);
    CHECK_RC(confd_ha_get_status(s1, &st), CONFD_OK, 0);
    CHECK(st.state == CONFD_HA_STATE_NONE && st.num_nodes == 0, "n1 state %d", st.state);
    /* The secondaries notice their primary is gone. */
    CHECK(wait_state(s2, CONFD_HA_STATE_NONE, 0, 10000, NULL) == 0, "n2 to NONE");
    CHECK(wait_state(s3, CONFD_HA_STATE_NONE, 0, 10000, NULL) == 0, "n3 to NONE");
}

static void test_primary_killed(void)
{
    confd_value_t me;
    struct confd_ha_node p;
    set_buf(&me, "n1");
    CHECK_RC(confd_ha_beprimary(s1, &me), CONFD_OK, 0);
    set_buf(&me, "n2");
    make_node4(&p, "n1", n1.ip);
    CHECK_RC(confd_ha_besecondary(s2, &me, &p, 1), CONFD_OK, 0);
    hn_kill(&n1, SIGKILL);
    CHECK_RC(confd_ha_get_status(s1, &st), CONFD_EOF, CONFD_ERR_EOF);
    /* No ticks for 3 x 200 ms: the secondary goes to NONE. */
    CHECK(wait_state(s2, CONFD_HA_STATE_NONE, 0, 10000, NULL) == 0, "n2 to NONE");
}

int main(void)
{
    int ha_port;
    confd_init("ha_cluster", stderr, CONFD_SILENT);
    ha_port = hn_free_port("127.0.0.2");
    if (hn_start(&n1, "127.0.0.1", ha_port, NULL) != 0 || hn_start(&n2, "127.0.0.2", ha_port, NULL) != 0 ||
        hn_start(&n3, "127.0.0.3", ha_port, NULL) != 0) {
        printf("FAIL start: ha-node did not start\n");
        return 1; /* atexit stops whatever started */
    }
    s1 = ha_connect_tcp(&n1, TOKEN);
    s2 = ha_connect_unix(&n2, TOKEN);
    s3 = ha_connect_tcp(&n3, TOKEN);
    if (s1 < 0 || s2 < 0 || s3 < 0) {
        printf("FAIL connect\n");
        return 1;
    }
    t_run("all_none", test_all_none);
    t_run("primary_and_sync_secondary", test_primary_and_sync_secondary);
    t_run("async_secondary", test_async_secondary);
    t_run("secondary_dead", test_secondary_dead);
    t_run("besecondary_errors", test_besecondary_errors);
    t_run("relay", test_relay);
    t_run("primary_benone_drops_everyone", test_primary_benone_drops_everyone);
    t_run("primary_killed", test_primary_killed);
    close(s1);
    close(s2);
    if (s3 >= 0) close(s3);
    hn_stop(&n1);
    hn_stop(&n2);
    hn_stop(&n3);
    return t_done();
}
