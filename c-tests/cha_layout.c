/*
 * cha.h without a daemon: sizeof/offsetof of its public structs (the values
 * src/ffi/cha.rs checks too), enum values (roles equal ConfD's HA states,
 * HA_INFO types equal ConfD's), constants; calls before confd_init(); the
 * local functions (transactions, frees) with NULL and bad arguments.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cha.h>

#include "harness.h"

#define SZ(T, n) CHECK(sizeof(T) == (n), "sizeof(%s) = %zu, want %d", #T, sizeof(T), (n))
#define OFF(T, f, n) CHECK(offsetof(T, f) == (n), "offsetof(%s, %s) = %zu, want %d", #T, #f, offsetof(T, f), (n))
#define EQ(a, b) CHECK((long long)(a) == (long long)(b), "%s = %lld, want %lld", #a, (long long)(a), (long long)(b))

_Static_assert(sizeof(struct cha_peer) == 264, "cha_peer is 264 bytes");
_Static_assert(sizeof(struct cha_node_state) == 67992, "cha_node_state is 67992 bytes");
_Static_assert(sizeof(struct cha_event) == 296, "cha_event is 296 bytes");
_Static_assert(sizeof(enum cha_role) == sizeof(int), "enums are ints");
_Static_assert(sizeof(struct cha_secondary_lag) == 312, "cha_secondary_lag is 312 bytes");
_Static_assert(sizeof(struct cha_node_health) == CHA_NODE_HEALTH_V1_SIZE, "cha_node_health v1");

static void test_layout(void)
{
    SZ(struct cha_peer, 264);
    OFF(struct cha_peer, id, 0);
    OFF(struct cha_peer, address, 128);
    OFF(struct cha_peer, last_tick_ms, 256);
    SZ(struct cha_node_state, 67992);
    OFF(struct cha_node_state, role, 0);
    OFF(struct cha_node_state, has_primary, 4);
    OFF(struct cha_node_state, node_id, 8);
    OFF(struct cha_node_state, primary, 136);
    OFF(struct cha_node_state, num_secondaries, 400);
    OFF(struct cha_node_state, secondaries, 408);
    OFF(struct cha_node_state, seq, 67728);
    OFF(struct cha_node_state, txid, 67736);
    SZ(struct cha_event, 296);
    OFF(struct cha_event, type, 0);
    OFF(struct cha_event, previous_role, 4);
    OFF(struct cha_event, new_role, 8);
    OFF(struct cha_event, ha_info_type, 12);
    OFF(struct cha_event, ha_info_value, 16);
    OFF(struct cha_event, ha_info_node, 24);
    OFF(struct cha_event, closed_errno, 288);
    SZ(struct cha_secondary_lag, 312);
    OFF(struct cha_secondary_lag, peer, 0);
    OFF(struct cha_secondary_lag, acked_seq, 264);
    OFF(struct cha_secondary_lag, lag_txns, 272);
    OFF(struct cha_secondary_lag, lag_ms, 280);
    OFF(struct cha_secondary_lag, full_copies, 288);
    OFF(struct cha_secondary_lag, catch_ups, 296);
    OFF(struct cha_secondary_lag, copy_state, 304);
    SZ(struct cha_node_health, 79856);
    OFF(struct cha_node_health, size, 0);
    OFF(struct cha_node_health, role, 8);
    OFF(struct cha_node_health, seq, 16);
    OFF(struct cha_node_health, last_txn_ms, 24);
    OFF(struct cha_node_health, num_secondaries, 32);
    OFF(struct cha_node_health, txid, 40);
    OFF(struct cha_node_health, secondaries, 296);
    EQ(CHA_COPY_IN_SYNC, 0);
    EQ(CHA_COPY_COPYING, 1);
}

static void test_constants(void)
{
    EQ(CHA_ID_SIZE, 128);
    EQ(CHA_ADDR_SIZE, 128);
    EQ(CHA_TXID_SIZE, 256);
    EQ(CHA_MAX_SECONDARIES, 255);
    EQ(CHA_ROLE_NONE, CONFD_HA_STATE_NONE);
    EQ(CHA_ROLE_SECONDARY, CONFD_HA_STATE_SECONDARY);
    EQ(CHA_ROLE_PRIMARY, CONFD_HA_STATE_PRIMARY);
    EQ(CHA_ROLE_RELAY, CONFD_HA_STATE_SECONDARY_RELAY);
    EQ(CHA_EVENT_ROLE_CHANGED, 1);
    EQ(CHA_EVENT_HA_INFO, 2);
    EQ(CHA_EVENT_HEARTBEAT, 4);
    EQ(CHA_HA_INFO_NOPRIMARY, 1);
    EQ(CHA_HA_INFO_SECONDARY_DIED, 2);
    EQ(CHA_HA_INFO_SECONDARY_ARRIVED, 3);
    EQ(CHA_HA_INFO_SECONDARY_INITIALIZED, 4);
    EQ(CHA_HA_INFO_IS_PRIMARY, 5);
    EQ(CHA_HA_INFO_IS_NONE, 6);
    EQ(CHA_HA_INFO_BESECONDARY_RESULT, 7);
}

static void cb_never(const struct cha_event *ev, void *u)
{
    (void)ev;
    (void)u;
}

/* Everything that talks to a node needs confd_init() first. */
static void test_before_init(void)
{
    struct sockaddr_in a;
    struct cha_node_state st;
    struct cha_subscription *sub = (struct cha_subscription *)&a;
    struct cha_txn *txn;
    confd_value_t v;
    char buf[CHA_TXID_SIZE], **names;
    int e;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    CHECK_RC(cha_data_connect(0, (struct sockaddr *)&a, sizeof a), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK(lasterr_has("confd_init"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_get(0, "/a", &v), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(cha_exists(0, "/a", &e), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(cha_list(0, "/a", &names, NULL), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(cha_txid(0, buf, sizeof buf), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(cha_node_state_get(NULL, 0, &st), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(cha_data_node_state(0, &st), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(cha_subscribe(NULL, 0, CHA_EVENT_ROLE_CHANGED, 0, cb_never, NULL, &sub), CONFD_ERR,
             CONFD_ERR_LIB_NOT_INITIALIZED);
    /* Local transaction building needs no daemon (and no init). */
    txn = cha_txn_new();
    CHECK(txn != NULL, "cha_txn_new");
    CHECK_RC(cha_txn_delete(txn, "/a"), CONFD_OK, 0);
    CHECK_RC(cha_txn_commit(0, txn, buf, sizeof buf), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    cha_txn_free(txn);
}

static void test_local_null_and_bad_args(void)
{
    struct cha_txn *txn = cha_txn_new();
    confd_value_t v;
    char bad_utf8[] = {'/', (char)0xff, (char)0xfe, 0};
    CHECK(txn != NULL, "cha_txn_new");
    memset(&v, 0, sizeof v);
    CONFD_SET_UINT32(&v, 7);
    CHECK_RC(cha_txn_set(NULL, "/a", &v), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("cha_txn_set: txn is NULL"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_txn_set(txn, NULL, &v), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("path is NULL"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_txn_set(txn, "/a", NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("v is NULL"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_txn_set(txn, bad_utf8, &v), CONFD_ERR, CONFD_ERR_BADPATH);
    CHECK(lasterr_has("not UTF-8"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_txn_delete(NULL, "/a"), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK_RC(cha_txn_delete(txn, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    /* C_NOEXISTS is not a value to store; a C_QNAME is not one we keep. */
    CONFD_SET_NOEXISTS(&v);
    CHECK_RC(cha_txn_set(txn, "/a", &v), CONFD_ERR, CONFD_ERR_BADTYPE);
    CHECK(lasterr_has("cha_txn_delete"), "lasterr \"%s\"", confd_lasterr());
    v.type = C_QNAME;
    CHECK_RC(cha_txn_set(txn, "/a", &v), CONFD_ERR, CONFD_ERR_BADTYPE);
    CHECK(lasterr_has("C_QNAME"), "lasterr \"%s\"", confd_lasterr());
    /* A C_BUF with a NULL pointer and a size. */
    v.type = C_BUF;
    v.val.buf.ptr = NULL;
    v.val.buf.size = 3;
    CHECK_RC(cha_txn_set(txn, "/a", &v), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK_RC(cha_txn_commit(0, NULL, NULL, 0), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("txn is NULL"), "lasterr \"%s\"", confd_lasterr());
    {
        char id[4];
        CHECK_RC(cha_txn_commit(0, txn, id, 0), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
        CHECK(lasterr_has("txid_sz 0"), "lasterr \"%s\"", confd_lasterr());
    }
    /* Frees accept NULL; cha_free_value leaves non-buffer values alone. */
    cha_txn_free(NULL);
    cha_free_list(NULL);
    cha_free_value(NULL);
    cha_unsubscribe(NULL);
    CONFD_SET_INT64(&v, -5);
    cha_free_value(&v);
    CHECK(v.type == C_INT64 && v.val.i64 == -5, "int value untouched");
    cha_txn_free(txn);
}

static void test_endpoint_args(void)
{
    struct cha_node_state st;
    struct sockaddr_un u;
    struct sockaddr_in a;
    struct cha_subscription *sub = (struct cha_subscription *)&u;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    CHECK_RC(cha_node_state_get((struct sockaddr *)&a, sizeof a, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("out is NULL"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_node_state_get((struct sockaddr *)&a, 3, &st), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("srv_sz"), "lasterr \"%s\"", confd_lasterr());
    /* An abstract AF_UNIX address cannot be reached through a path. */
    memset(&u, 0, sizeof u);
    u.sun_family = AF_UNIX;
    memcpy(u.sun_path, "\0abstract", 9);
    CHECK_RC(cha_node_state_get((struct sockaddr *)&u, offsetof(struct sockaddr_un, sun_path) + 9, &st),
             CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("abstract"), "lasterr \"%s\"", confd_lasterr());
    CHECK(sub != NULL, "sub preset");
    CHECK_RC(cha_subscribe((struct sockaddr *)&a, 3, CHA_EVENT_HA_INFO, 0, cb_never, NULL, &sub), CONFD_ERR,
             CONFD_ERR_PROTOUSAGE);
    CHECK(sub == NULL, "*sub is NULL after a failure");
}

int main(void)
{
    t_run("layout", test_layout);
    t_run("constants", test_constants);
    t_run("before_init", test_before_init);
    confd_init("cha_layout", stderr, CONFD_SILENT);
    t_run("local_null_and_bad_args", test_local_null_and_bad_args);
    t_run("endpoint_args", test_endpoint_args);
    return t_done();
}
