/*
 * The cha_ availability-group API against real ha-node processes: node
 * state on NONE, PRIMARY, SECONDARY and RELAY nodes (ids, primary,
 * secondaries, last tick times, last transaction), explicit addresses (TCP
 * and Unix) and the environment (NCS_IPC_PATH, NCS_IPC_ADDR/PORT,
 * CONFD_IPC_ADDR/PORT); subscriptions: ROLE_CHANGED NONE -> PRIMARY on a
 * library thread, HA_INFO with the arriving secondary, heartbeats;
 * unsubscribe while events flow (from the main thread with a slow callback,
 * and from inside the callback): after it returns no callback runs;
 * argument errors; a subscription whose node goes away.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cha.h>

#include "harness.h"

#define TOKEN "cha-group-token"
static struct hn_node n1, n2;
static int h1 = -1, h2 = -1;
static pthread_t main_thread;

/* ---- helpers ---- */

static socklen_t addr_of_node(const struct hn_node *n, struct sockaddr_in *a)
{
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons(n->ipc_port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sizeof *a;
}

static int state_of(const struct hn_node *n, struct cha_node_state *st)
{
    struct sockaddr_in a;
    socklen_t len = addr_of_node(n, &a);
    int rc = cha_node_state_get((struct sockaddr *)&a, len, st);
    if (rc != CONFD_OK) printf("    cha_node_state_get(%d): errno %d: %s\n", n->ipc_port, confd_errno, confd_lasterr());
    return rc;
}

static long long unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A plausible Unix time in ms: not negative, within an hour of now. */
static int recent(long long ms)
{
    long long now = unix_ms();
    return ms >= 0 && ms > now - 3600 * 1000LL && ms < now + 60 * 1000LL;
}

#define MAX_EV 256
struct recorder {
    pthread_mutex_t mu;
    struct cha_event ev[MAX_EV];
    int n;                   /* events seen (all, even past MAX_EV) */
    int on_main;             /* a callback ran on the main thread */
    atomic_int calls;        /* completed callbacks */
    atomic_int in_cb;        /* a callback is running */
    int slow_us;             /* time spent in each callback */
    int unsub_self;          /* the callback ends its own subscription */
    struct cha_subscription *_Atomic self;
};

static void rec_init(struct recorder *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
}

static void record(const struct cha_event *ev, void *u)
{
    struct recorder *r = u;
    atomic_store(&r->in_cb, 1);
    pthread_mutex_lock(&r->mu);
    if (r->n < MAX_EV) r->ev[r->n] = *ev;
    r->n++;
    if (pthread_equal(pthread_self(), main_thread)) r->on_main = 1;
    pthread_mutex_unlock(&r->mu);
    if (r->slow_us) usleep(r->slow_us);
    if (r->unsub_self) {
        struct cha_subscription *s = atomic_exchange(&r->self, NULL);
        if (s) cha_unsubscribe(s); /* returns at once; no further callback */
    }
    atomic_store(&r->in_cb, 0);
    atomic_fetch_add(&r->calls, 1);
}

static int rec_count(struct recorder *r)
{
    int n;
    pthread_mutex_lock(&r->mu);
    n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Waits for an event at index >= from with this type (and, if > 0, this
   ha_info_type or new role); returns its index or -1. */
static int wait_event(struct recorder *r, int from, int type, int detail, int timeout_ms, struct cha_event *out)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int i, found = -1;
        pthread_mutex_lock(&r->mu);
        for (i = from; i < r->n && i < MAX_EV && found < 0; i++) {
            const struct cha_event *e = &r->ev[i];
            if ((int)e->type != type) continue;
            if (detail > 0 && type == CHA_EVENT_HA_INFO && (int)e->ha_info_type != detail) continue;
            if (detail > 0 && type == CHA_EVENT_ROLE_CHANGED && (int)e->new_role != detail) continue;
            found = i;
            if (out) *out = *e;
        }
        pthread_mutex_unlock(&r->mu);
        if (found >= 0) return found;
        if (now_ms() >= deadline) return -1;
        poll_pause();
    }
}

static int wait_count(struct recorder *r, int n, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    while (rec_count(r) < n) {
        if (now_ms() >= deadline) return -1;
        poll_pause();
    }
    return 0;
}

static int subscribe_to(const struct hn_node *n, int mask, struct recorder *r, struct cha_subscription **sub)
{
    struct sockaddr_in a;
    socklen_t len = addr_of_node(n, &a);
    int rc = cha_subscribe((struct sockaddr *)&a, len, mask, 0, record, r, sub);
    if (rc != CONFD_OK) printf("    cha_subscribe: errno %d: %s\n", confd_errno, confd_lasterr());
    return rc;
}

static void print_state(const char *who, const struct cha_node_state *st)
{
    int i;
    printf("    %s: role %d id \"%s\" primary %d \"%s\"@%s tick %lld, %d secondaries:", who, st->role, st->node_id,
           st->has_primary, st->primary.id, st->primary.address, (long long)st->primary.last_tick_ms,
           st->num_secondaries);
    for (i = 0; i < st->num_secondaries && i < 4; i++)
        printf(" \"%s\"@%s tick %lld", st->secondaries[i].id, st->secondaries[i].address,
               (long long)st->secondaries[i].last_tick_ms);
    printf(", seq %lld txid \"%s\"\n", (long long)st->seq, st->txid);
}

/* One role change on n1 (beprimary or benone, alternating). */
static int toggle(int i)
{
    confd_value_t me;
    set_buf(&me, "n1");
    return i % 2 == 0 ? confd_ha_beprimary(h1, &me) : confd_ha_benone(h1);
}

/* ---- cases ---- */

static void test_state_none(void)
{
    static struct cha_node_state st;
    int d;
    struct sockaddr_in a;
    memset(&st, 0xa5, sizeof st); /* everything must be written */
    CHECK_RC(state_of(&n1, &st), CONFD_OK, 0);
    CHECK(st.role == CHA_ROLE_NONE, "role %d", st.role);
    CHECK(st.node_id[0] == 0 && st.has_primary == 0 && st.num_secondaries == 0, "empty");
    CHECK(st.primary.id[0] == 0 && st.primary.last_tick_ms == -1, "no primary");
    CHECK(st.seq == 0 && st.txid[0] == 0, "fresh store: seq %lld txid \"%s\"", (long long)st.seq, st.txid);
    if (t_case_failed) print_state("n1", &st);
    /* The same over a data socket. */
    d = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_RC(cha_data_connect(d, (struct sockaddr *)&a, addr_of_node(&n1, &a)), CONFD_OK, 0);
    memset(&st, 0xa5, sizeof st);
    CHECK_RC(cha_data_node_state(d, &st), CONFD_OK, 0);
    CHECK(st.role == CHA_ROLE_NONE && st.node_id[0] == 0 && st.num_secondaries == 0, "over the data socket");
    close(d);
}

static void test_role_changed_none_to_primary(void)
{
    static struct recorder r;
    struct cha_subscription *sub = NULL;
    struct cha_event ev;
    confd_value_t me;
    int i;
    rec_init(&r);
    CHECK_RC(subscribe_to(&n1, CHA_EVENT_ROLE_CHANGED | CHA_EVENT_HA_INFO, &r, &sub), CONFD_OK, 0);
    CHECK(sub != NULL, "a subscription");
    set_buf(&me, "n1");
    CHECK_RC(confd_ha_beprimary(h1, &me), CONFD_OK, 0);
    i = wait_event(&r, 0, CHA_EVENT_ROLE_CHANGED, 0, 10000, &ev);
    CHECK(i >= 0, "a ROLE_CHANGED event");
    if (i >= 0) {
        CHECK(ev.previous_role == CHA_ROLE_NONE && ev.new_role == CHA_ROLE_PRIMARY, "NONE -> PRIMARY, got %d -> %d",
              ev.previous_role, ev.new_role);
        CHECK(ev.ha_info_type == 0 && ev.ha_info_node.id[0] == 0, "no HA_INFO fields");
    }
    i = wait_event(&r, 0, CHA_EVENT_HA_INFO, CHA_HA_INFO_IS_PRIMARY, 10000, &ev);
    CHECK(i >= 0, "an HA_INFO IS_PRIMARY event");
    if (i >= 0) CHECK(ev.previous_role == 0 && ev.new_role == 0 && ev.ha_info_value == 0, "HA_INFO fields only");
    cha_unsubscribe(sub);
    CHECK(!r.on_main, "callbacks run on the subscription's thread");
    pthread_mutex_destroy(&r.mu);
}

static void test_primary_and_secondary_state(void)
{
    static struct cha_node_state st;
    static struct recorder r;
    struct cha_subscription *sub = NULL;
    struct cha_event ev;
    confd_value_t me;
    struct confd_ha_node p;
    long long deadline;
    int i, ok;

    rec_init(&r);
    CHECK_RC(subscribe_to(&n1, CHA_EVENT_HA_INFO, &r, &sub), CONFD_OK, 0);
    set_buf(&me, "n2");
    make_node4(&p, "n1", n1.ip);
    CHECK_RC(confd_ha_besecondary(h2, &me, &p, 1), CONFD_OK, 0);

    /* The secondary: its id, its primary, ticks from the primary. */
    deadline = now_ms() + 10000;
    do {
        ok = state_of(&n2, &st) == CONFD_OK && st.has_primary && st.primary.last_tick_ms >= 0;
        if (!ok) poll_pause();
    } while (!ok && now_ms() < deadline);
    CHECK(ok, "secondary with a primary tick");
    CHECK(st.role == CHA_ROLE_SECONDARY, "role %d", st.role);
    CHECK(strcmp(st.node_id, "n2") == 0, "node_id \"%s\"", st.node_id);
    CHECK(strcmp(st.primary.id, "n1") == 0 && strcmp(st.primary.address, "127.0.0.1") == 0, "primary \"%s\"@%s",
          st.primary.id, st.primary.address);
    CHECK(recent(st.primary.last_tick_ms), "last tick %lld", (long long)st.primary.last_tick_ms);
    CHECK(st.num_secondaries == 0, "%d secondaries", st.num_secondaries);
    if (t_case_failed) print_state("n2", &st);

    /* The primary: its id, the secondary with its last tick. */
    deadline = now_ms() + 10000;
    do {
        ok = state_of(&n1, &st) == CONFD_OK && st.num_secondaries == 1;
        if (!ok) poll_pause();
    } while (!ok && now_ms() < deadline);
    CHECK(ok, "the primary lists one secondary");
    CHECK(st.role == CHA_ROLE_PRIMARY && strcmp(st.node_id, "n1") == 0 && !st.has_primary, "role %d id \"%s\"",
          st.role, st.node_id);
    CHECK(strcmp(st.secondaries[0].id, "n2") == 0 && strcmp(st.secondaries[0].address, "127.0.0.2") == 0,
          "secondary \"%s\"@%s", st.secondaries[0].id, st.secondaries[0].address);
    CHECK(recent(st.secondaries[0].last_tick_ms), "secondary tick %lld", (long long)st.secondaries[0].last_tick_ms);
    if (t_case_failed) print_state("n1", &st);

    /* The primary's subscriber saw the secondary arrive. */
    i = wait_event(&r, 0, CHA_EVENT_HA_INFO, CHA_HA_INFO_SECONDARY_ARRIVED, 10000, &ev);
    CHECK(i >= 0, "SECONDARY_ARRIVED");
    if (i >= 0)
        CHECK(strcmp(ev.ha_info_node.id, "n2") == 0 && strcmp(ev.ha_info_node.address, "127.0.0.2") == 0,
              "arrived \"%s\"@%s", ev.ha_info_node.id, ev.ha_info_node.address);
    cha_unsubscribe(sub);
    pthread_mutex_destroy(&r.mu);

    /* A commit: both report its seq and txid. */
    {
        struct sockaddr_in a;
        struct cha_txn *txn = cha_txn_new();
        char txid[CHA_TXID_SIZE] = "";
        long long seq;
        int d = socket(AF_INET, SOCK_STREAM, 0);
        CHECK_RC(cha_data_connect(d, (struct sockaddr *)&a, addr_of_node(&n1, &a)), CONFD_OK, 0);
        set_buf(&me, "v");
        CHECK_RC(cha_txn_set(txn, "/group/x", &me), CONFD_OK, 0);
        CHECK_RC(cha_txn_commit(d, txn, txid, sizeof txid), CONFD_OK, 0);
        CHECK_RC(cha_data_node_state(d, &st), CONFD_OK, 0);
        CHECK(strcmp(st.txid, txid) == 0 && st.seq > 0, "primary txid \"%s\" seq %lld", st.txid, (long long)st.seq);
        seq = st.seq;
        CHECK_RC(state_of(&n2, &st), CONFD_OK, 0);
        CHECK(strcmp(st.txid, txid) == 0 && st.seq == seq, "secondary txid \"%s\" seq %lld", st.txid,
              (long long)st.seq);

        /* Health: the sync commit returned, so the secondary acknowledged it (lag 0). */
        {
            static struct cha_node_health h;
            memset(&h, 0xa5, sizeof h);
            h.size = sizeof h;
            CHECK_RC(cha_data_node_health(d, &h), CONFD_OK, 0);
            CHECK(h.size == sizeof h && h.role == CHA_ROLE_PRIMARY && h.seq == seq && strcmp(h.txid, txid) == 0,
                  "primary health: size %zu role %d seq %lld txid \"%s\"", h.size, h.role, (long long)h.seq,
                  h.txid);
            CHECK(h.last_txn_ms == -1, "a primary has no last transaction from a primary: %lld",
                  (long long)h.last_txn_ms);
            CHECK(h.num_secondaries == 1, "%d secondaries", h.num_secondaries);
            CHECK(strcmp(h.secondaries[0].peer.id, "n2") == 0 && recent(h.secondaries[0].peer.last_tick_ms),
                  "secondary \"%s\" tick %lld", h.secondaries[0].peer.id,
                  (long long)h.secondaries[0].peer.last_tick_ms);
            CHECK(h.secondaries[0].acked_seq == seq && h.secondaries[0].lag_txns == 0 &&
                      h.secondaries[0].lag_ms == 0 && h.secondaries[0].copy_state == CHA_COPY_IN_SYNC,
                  "acked %lld lag %lld txns %lld ms state %d", (long long)h.secondaries[0].acked_seq,
                  (long long)h.secondaries[0].lag_txns, (long long)h.secondaries[0].lag_ms,
                  h.secondaries[0].copy_state);
            CHECK(h.secondaries[0].full_copies >= 0 && h.secondaries[0].catch_ups == 0, "copies %lld catch-ups %lld",
                  (long long)h.secondaries[0].full_copies, (long long)h.secondaries[0].catch_ups);
            CHECK(h.secondaries[1].peer.id[0] == 0 && h.secondaries[1].acked_seq == 0, "unused entries are zero");
            /* The secondary: its seq and the time of its last transaction from n1. */
            {
                struct sockaddr_in a2;
                socklen_t len = addr_of_node(&n2, &a2);
                h.size = sizeof h;
                CHECK_RC(cha_node_health_get((struct sockaddr *)&a2, len, &h), CONFD_OK, 0);
                CHECK(h.role == CHA_ROLE_SECONDARY && h.seq == seq && recent(h.last_txn_ms) &&
                          h.num_secondaries == 0,
                      "secondary health: role %d seq %lld last txn %lld, %d secondaries", h.role,
                      (long long)h.seq, (long long)h.last_txn_ms, h.num_secondaries);
                /* A size below the first version is refused, *out untouched. */
                h.size = 8;
                h.seq = 12345;
                CHECK_RC(cha_node_health_get((struct sockaddr *)&a2, len, &h), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
                CHECK(h.seq == 12345 && strstr(confd_lasterr(), "size") != NULL, "lasterr \"%s\"",
                      confd_lasterr());
                CHECK_RC(cha_node_health_get((struct sockaddr *)&a2, len, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
            }
        }
        cha_txn_free(txn);
        close(d);
    }
}

static void test_unix_address(void)
{
    static struct cha_node_state st;
    struct sockaddr_un u;
    memset(&u, 0, sizeof u);
    u.sun_family = AF_UNIX;
    snprintf(u.sun_path, sizeof u.sun_path, "%s", n2.ipc_path);
    CHECK_RC(cha_node_state_get((struct sockaddr *)&u, sizeof u, &st), CONFD_OK, 0);
    CHECK(st.role == CHA_ROLE_SECONDARY && strcmp(st.node_id, "n2") == 0, "n2 over its Unix socket: role %d",
          st.role);
}

static void clear_env(void)
{
    unsetenv("NCS_IPC_PATH");
    unsetenv("NCS_IPC_ADDR");
    unsetenv("NCS_IPC_PORT");
    unsetenv("CONFD_IPC_ADDR");
    unsetenv("CONFD_IPC_PORT");
}

static void test_environment(void)
{
    static struct cha_node_state st;
    static struct recorder r;
    struct cha_subscription *sub = NULL;
    char port[16];
    int i;

    clear_env();
    snprintf(port, sizeof port, "%d", n1.ipc_port);
    setenv("NCS_IPC_ADDR", "127.0.0.1", 1);
    setenv("NCS_IPC_PORT", port, 1);
    CHECK_RC(cha_node_state_get(NULL, 0, &st), CONFD_OK, 0);
    CHECK(st.role == CHA_ROLE_PRIMARY && strcmp(st.node_id, "n1") == 0, "NCS_IPC_ADDR/PORT: n1, got \"%s\"",
          st.node_id);
    /* NCS_IPC_PATH wins over NCS_IPC_ADDR/PORT. */
    setenv("NCS_IPC_PATH", n2.ipc_path, 1);
    CHECK_RC(cha_node_state_get(NULL, 0, &st), CONFD_OK, 0);
    CHECK(st.role == CHA_ROLE_SECONDARY && strcmp(st.node_id, "n2") == 0, "NCS_IPC_PATH: n2, got \"%s\"",
          st.node_id);
    /* ConfD's variables when NSO's are not set. */
    clear_env();
    snprintf(port, sizeof port, "%d", n2.ipc_port);
    setenv("CONFD_IPC_ADDR", "127.0.0.1", 1);
    setenv("CONFD_IPC_PORT", port, 1);
    CHECK_RC(cha_node_state_get(NULL, 0, &st), CONFD_OK, 0);
    CHECK(strcmp(st.node_id, "n2") == 0, "CONFD_IPC_PORT: n2, got \"%s\"", st.node_id);
    /* Nobody there. */
    clear_env();
    snprintf(port, sizeof port, "%d", hn_free_port(NULL));
    setenv("NCS_IPC_PORT", port, 1);
    CHECK_RC(cha_node_state_get(NULL, 0, &st), CONFD_ERR, CONFD_ERR_OS);
    CHECK(lasterr_has(port), "lasterr \"%s\" names port %s", confd_lasterr(), port);

    /* A subscription found through the environment, with heartbeats. */
    rec_init(&r);
    snprintf(port, sizeof port, "%d", n1.ipc_port);
    setenv("NCS_IPC_PORT", port, 1);
    CHECK_RC(cha_subscribe(NULL, 0, CHA_EVENT_HEARTBEAT, 50, record, &r, &sub), CONFD_OK, 0);
    clear_env();
    CHECK(wait_count(&r, 2, 10000) == 0, "two heartbeats (%d)", rec_count(&r));
    cha_unsubscribe(sub);
    pthread_mutex_lock(&r.mu);
    for (i = 0; i < r.n && i < MAX_EV; i++)
        CHECK(r.ev[i].type == CHA_EVENT_HEARTBEAT, "event %d type %d", i, r.ev[i].type);
    pthread_mutex_unlock(&r.mu);
    pthread_mutex_destroy(&r.mu);
}

static void test_relay_state(void)
{
    static struct cha_node_state st;
    CHECK_RC(confd_ha_berelay(h2), CONFD_OK, 0);
    CHECK_RC(state_of(&n2, &st), CONFD_OK, 0);
    CHECK(st.role == CHA_ROLE_RELAY && st.has_primary && strcmp(st.primary.id, "n1") == 0, "relay: role %d",
          st.role);
    /* Back to two NONE nodes for the subscription cases. */
    CHECK_RC(confd_ha_benone(h2), CONFD_OK, 0);
    CHECK_RC(confd_ha_benone(h1), CONFD_OK, 0);
    CHECK_RC(state_of(&n2, &st), CONFD_OK, 0);
    CHECK(st.role == CHA_ROLE_NONE && !st.has_primary, "n2 NONE: role %d", st.role);
}

/* Many role changes from the main thread; the victim subscription (with a
   slow callback) is ended in the middle; a control subscription shows the
   events kept flowing; the victim's callback never runs again. */
static void test_unsubscribe_while_events_flow(void)
{
    static struct recorder victim, control;
    struct cha_subscription *vs = NULL, *cs = NULL;
    int i, calls_at_unsub = -1, control_at_unsub = 0, unsubscribed = 0;
    rec_init(&victim);
    rec_init(&control);
    victim.slow_us = 2000;
    CHECK_RC(subscribe_to(&n1, CHA_EVENT_ROLE_CHANGED | CHA_EVENT_HA_INFO, &victim, &vs), CONFD_OK, 0);
    CHECK_RC(subscribe_to(&n1, CHA_EVENT_ROLE_CHANGED | CHA_EVENT_HA_INFO, &control, &cs), CONFD_OK, 0);
    if (!vs || !cs) return;
    for (i = 0; i < 400; i++) {
        CHECK_RC(toggle(i), CONFD_OK, 0);
        if (t_case_failed) break;
        if (!unsubscribed && atomic_load(&victim.calls) >= 3) {
            cha_unsubscribe(vs);
            unsubscribed = 1;
            CHECK(atomic_load(&victim.in_cb) == 0, "no callback running after cha_unsubscribe");
            calls_at_unsub = atomic_load(&victim.calls);
            control_at_unsub = rec_count(&control);
            i = 400 - 30 - 1; /* 30 more role changes (the loop's i++ comes first) */
        }
    }
    CHECK(unsubscribed, "the victim saw events before the unsubscribe");
    /* Each role change gives the control at least one event. */
    CHECK(wait_count(&control, control_at_unsub + 30, 20000) == 0, "events kept flowing: control %d -> %d",
          control_at_unsub, rec_count(&control));
    CHECK(atomic_load(&victim.calls) == calls_at_unsub && rec_count(&victim) == calls_at_unsub,
          "no callback after cha_unsubscribe: %d -> %d", calls_at_unsub, atomic_load(&victim.calls));
    cha_unsubscribe(cs);
    CHECK(!victim.on_main && !control.on_main, "callbacks on library threads");
    pthread_mutex_destroy(&victim.mu);
    pthread_mutex_destroy(&control.mu);
}

/* The callback ends its own subscription on its first event. */
static void test_unsubscribe_inside_callback(void)
{
    static struct recorder self, control;
    struct cha_subscription *ss = NULL, *cs = NULL;
    long long deadline;
    int i, c0;
    rec_init(&self);
    rec_init(&control);
    self.unsub_self = 1;
    CHECK_RC(subscribe_to(&n1, CHA_EVENT_ROLE_CHANGED | CHA_EVENT_HA_INFO, &self, &ss), CONFD_OK, 0);
    CHECK_RC(subscribe_to(&n1, CHA_EVENT_ROLE_CHANGED | CHA_EVENT_HA_INFO, &control, &cs), CONFD_OK, 0);
    if (!ss || !cs) return;
    atomic_store(&self.self, ss);
    /* The first event: the callback ends its own subscription. */
    CHECK_RC(toggle(0), CONFD_OK, 0);
    deadline = now_ms() + 10000;
    while (atomic_load(&self.calls) < 1 && now_ms() < deadline) poll_pause();
    CHECK(atomic_load(&self.calls) == 1, "the first callback returned");
    CHECK(atomic_load(&self.self) == NULL, "the callback ended its subscription");
    /* More events flow (the control sees them); none reaches the callback. */
    c0 = rec_count(&control);
    for (i = 1; i <= 20; i++) CHECK_RC(toggle(i), CONFD_OK, 0);
    CHECK(wait_count(&control, c0 + 20, 20000) == 0, "control saw the changes (%d)", rec_count(&control));
    CHECK(rec_count(&self) == 1 && atomic_load(&self.calls) == 1, "one callback only: %d", rec_count(&self));
    cha_unsubscribe(cs);
    pthread_mutex_destroy(&self.mu);
    pthread_mutex_destroy(&control.mu);
}

static void test_subscribe_errors(void)
{
    static struct recorder r;
    struct cha_subscription *sub = (struct cha_subscription *)&r;
    struct sockaddr_in a;
    socklen_t len = addr_of_node(&n1, &a);
    rec_init(&r);
    CHECK_RC(cha_subscribe((struct sockaddr *)&a, len, CHA_EVENT_HA_INFO, 0, NULL, &r, &sub), CONFD_ERR,
             CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("cb is NULL"), "lasterr \"%s\"", confd_lasterr());
    CHECK(sub == NULL, "*sub NULL after a failure");
    CHECK_RC(cha_subscribe((struct sockaddr *)&a, len, CHA_EVENT_HA_INFO, 0, record, &r, NULL), CONFD_ERR,
             CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("sub is NULL"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_subscribe((struct sockaddr *)&a, len, 0, 0, record, &r, &sub), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("event_mask 0x0"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_subscribe((struct sockaddr *)&a, len, CHA_EVENT_HA_INFO | 8, 0, record, &r, &sub), CONFD_ERR,
             CONFD_ERR_PROTOUSAGE);
    CHECK_RC(cha_subscribe((struct sockaddr *)&a, len, CHA_EVENT_HEARTBEAT, 0, record, &r, &sub), CONFD_ERR,
             CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("heartbeat_ms 0"), "lasterr \"%s\"", confd_lasterr());
    a.sin_port = htons(hn_free_port(NULL));
    CHECK_RC(cha_subscribe((struct sockaddr *)&a, len, CHA_EVENT_HA_INFO, 0, record, &r, &sub), CONFD_ERR,
             CONFD_ERR_OS);
    CHECK(sub == NULL, "*sub NULL");
    CHECK_RC(cha_node_state_get((struct sockaddr *)&a, len, (struct cha_node_state *)NULL), CONFD_ERR,
             CONFD_ERR_PROTOUSAGE);
    CHECK(rec_count(&r) == 0, "no callback");
    pthread_mutex_destroy(&r.mu);
}

/* The node goes away under a subscription: the callback gets a last
   CHA_EVENT_CLOSED (CONFD_ERR_EOF), and cha_unsubscribe still ends and frees
   the subscription. Stops n2. */
static void test_node_goes_away(void)
{
    static struct recorder r;
    static struct cha_node_state st;
    struct cha_subscription *sub = NULL;
    struct sockaddr_in a;
    socklen_t len = addr_of_node(&n2, &a);
    rec_init(&r);
    CHECK_RC(subscribe_to(&n2, CHA_EVENT_ROLE_CHANGED | CHA_EVENT_HA_INFO, &r, &sub), CONFD_OK, 0);
    hn_stop(&n2);
    CHECK_RC(cha_node_state_get((struct sockaddr *)&a, len, &st), CONFD_ERR, CONFD_ERR_OS);
    {
        struct cha_event ev;
        int i = wait_event(&r, 0, CHA_EVENT_CLOSED, 0, 10000, &ev);
        CHECK(i >= 0, "a CHA_EVENT_CLOSED event");
        if (i >= 0) {
            CHECK(ev.closed_errno == CONFD_ERR_EOF, "closed_errno %d", ev.closed_errno);
            CHECK(i == rec_count(&r) - 1, "CLOSED is the last event (%d of %d)", i, rec_count(&r));
        }
    }
    cha_unsubscribe(sub); /* returns: the thread ended or is stopped */
    CHECK(atomic_load(&r.in_cb) == 0, "no callback running");
    pthread_mutex_destroy(&r.mu);
}

int main(void)
{
    int ha_port;
    main_thread = pthread_self();
    confd_init("cha_group", stderr, CONFD_SILENT);
    ha_port = hn_free_port("127.0.0.2");
    if (hn_start(&n1, "127.0.0.1", ha_port, NULL) != 0 || hn_start(&n2, "127.0.0.2", ha_port, NULL) != 0) {
        printf("FAIL start: ha-node did not start\n");
        return 1; /* atexit stops whatever started */
    }
    h1 = ha_connect_tcp(&n1, TOKEN);
    h2 = ha_connect_tcp(&n2, TOKEN);
    if (h1 < 0 || h2 < 0) {
        printf("FAIL connect\n");
        return 1;
    }
    t_run("state_none", test_state_none);
    t_run("role_changed_none_to_primary", test_role_changed_none_to_primary);
    t_run("primary_and_secondary_state", test_primary_and_secondary_state);
    t_run("unix_address", test_unix_address);
    t_run("environment", test_environment);
    t_run("relay_state", test_relay_state);
    t_run("unsubscribe_while_events_flow", test_unsubscribe_while_events_flow);
    t_run("unsubscribe_inside_callback", test_unsubscribe_inside_callback);
    t_run("subscribe_errors", test_subscribe_errors);
    t_run("node_goes_away", test_node_goes_away);
    close(h1);
    close(h2);
    hn_stop(&n1);
    hn_stop(&n2);
    return t_done();
}
