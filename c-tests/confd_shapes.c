/*
 * The shapes a real ConfD daemon uses (spec §H), against a test double: a
 * tiny in-test daemon (a thread) that answers exactly as ConfD 6.6 was
 * measured to answer, which a real ha-node never does (ha-node accepts every
 * protocol version and sends 3-tuple errors):
 *
 *  - a hello refused with the daemon's own version (66), then accepted on
 *    the library's second connection, over Unix, TCP/IPv4 and TCP/IPv6: the
 *    caller's fd number stays valid and carries the new connection, with its
 *    close-on-exec flag and socket options, no descriptor leaks, the version
 *    is remembered for the next connect, and every decision is printed at
 *    CONFD_DEBUG;
 *  - a pinned version (CONFD_HA_LIB_PROTO_VSN) is not adapted;
 *  - hello status 2 (keypath limits below the data model's);
 *  - {error, Code} 2-tuple errors (empty confd_lasterr()), any atom = success;
 *  - a notification daemon of protocol 66 that accepts only the 4-tuple
 *    subscription, and one of 87 that takes the 5-tuple;
 *  - odd HA event terms, delivered; the bare `ha_synced` acknowledgement.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "wire.h"
#include <confd_events.h>

static void t_ip4(struct bytes *b, unsigned a, unsigned c, unsigned d, unsigned e)
{
    t_tuple(b, 4); t_small(b, a); t_small(b, c); t_small(b, d); t_small(b, e);
}

/* The daemon's hello answer: status, protocol 66 / 0x06060000 (ConfD 6.6),
   the model's depth / keys. */
static void answer(int fd, unsigned status, unsigned proto, unsigned depth, unsigned keys)
{
    unsigned char a[9] = {(unsigned char)status, 0, (unsigned char)proto, 6, 6, 0, 0,
                          (unsigned char)depth, (unsigned char)keys};
    if (proto == 87) { a[3] = 8; a[4] = 7; }
    write_full(fd, a, 9);
}

/* ---- the fake daemon: accepts `nconn` connections in turn ---- */

#define MAX_CONN 4
typedef void (*script_fn)(int fd, int k);

static struct {
    int family; /* AF_UNIX, AF_INET, AF_INET6 */
    char dir[64];
    char path[108];
    int port;
    int lfd;
    int nconn;
    script_fn script;
    pthread_t thread;
    unsigned char hello[MAX_CONN][9];
    int accepted;
    unsigned char frame[512]; /* the last frame a script recorded */
    long frame_len;
    int script_ok;
} fk;

static void *server(void *arg)
{
    int k;
    (void)arg;
    for (k = 0; k < fk.nconn; k++) {
        int fd = accept(fk.lfd, NULL, NULL);
        if (fd < 0) break;
        fk.accepted++;
        if (read_full(fd, fk.hello[k], 9) == 0) fk.script(fd, k);
        close(fd);
    }
    return NULL;
}

static int fake_start(int family, int nconn, script_fn script)
{
    memset(&fk, 0, sizeof fk);
    fk.family = family;
    fk.nconn = nconn;
    fk.script = script;
    fk.frame_len = -1;
    fk.lfd = socket(family, SOCK_STREAM, 0);
    if (fk.lfd < 0) return -1;
    if (family == AF_UNIX) {
        struct sockaddr_un a;
        snprintf(fk.dir, sizeof fk.dir, "/tmp/fkshXXXXXX");
        if (!mkdtemp(fk.dir)) abort();
        snprintf(fk.path, sizeof fk.path, "%s/s", fk.dir);
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        strcpy(a.sun_path, fk.path);
        if (bind(fk.lfd, (struct sockaddr *)&a, sizeof a) != 0) return -1;
    } else if (family == AF_INET) {
        struct sockaddr_in a;
        socklen_t l = sizeof a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fk.lfd, (struct sockaddr *)&a, sizeof a) != 0) return -1;
        getsockname(fk.lfd, (struct sockaddr *)&a, &l);
        fk.port = ntohs(a.sin_port);
    } else {
        struct sockaddr_in6 a;
        socklen_t l = sizeof a;
        memset(&a, 0, sizeof a);
        a.sin6_family = AF_INET6;
        a.sin6_addr = in6addr_loopback;
        if (bind(fk.lfd, (struct sockaddr *)&a, sizeof a) != 0) return -1;
        getsockname(fk.lfd, (struct sockaddr *)&a, &l);
        fk.port = ntohs(a.sin6_port);
    }
    if (listen(fk.lfd, MAX_CONN) != 0) return -1;
    pthread_create(&fk.thread, NULL, server, NULL);
    return 0;
}

static void fake_stop(void)
{
    /* Wake a server still waiting in accept (a case that failed early). */
    shutdown(fk.lfd, SHUT_RDWR);
    pthread_join(fk.thread, NULL);
    close(fk.lfd);
    if (fk.family == AF_UNIX) {
        unlink(fk.path);
        rmdir(fk.dir);
    }
}

/* The fake's address. */
static socklen_t fake_addr(struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (fk.family == AF_UNIX) {
        struct sockaddr_un *a = (struct sockaddr_un *)ss;
        a->sun_family = AF_UNIX;
        strcpy(a->sun_path, fk.path);
        return sizeof *a;
    } else if (fk.family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)fk.port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)fk.port);
        a->sin6_addr = in6addr_loopback;
        return sizeof *a;
    }
}

static int ha_connect(int s)
{
    struct sockaddr_storage ss;
    socklen_t l = fake_addr(&ss);
    return confd_ha_connect(s, (struct sockaddr *)&ss, (int)l, "tok");
}

static int hello_proto(int k) { return fk.hello[k][1] << 8 | fk.hello[k][2]; }

/* How many descriptors are open (to see that nothing leaked). */
static int open_fds(void)
{
    int fd, n = 0;
    for (fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) != -1) n++;
    return n;
}

/* ---- hello: refused with 66, accepted on the second connection ---- */

static void s_refuse_then_accept(int fd, int k)
{
    static const unsigned char ok[] = {0, 0, 0, 5, 131, 119, 2, 'o', 'k'};
    unsigned char tok[64];
    if (k == 0 && hello_proto(0) != 66) { /* ConfD: refuse, say 66, close */
        answer(fd, 1, 66, 20, 9);
        return;
    }
    if (hello_proto(k) != 66) return; /* ConfD 6.6 accepts only 66 */
    answer(fd, 0, 66, 20, 9);
    if (read_frame(fd, tok, sizeof tok) != 3) return;
    if (read_frame(fd, fk.frame, sizeof fk.frame) < 0) return; /* the order */
    write_full(fd, ok, sizeof ok);
    fk.script_ok++;
}

static void adapt_case(int family)
{
    int s, s_before, fds_before, one = 1, v;
    socklen_t l = sizeof v;
    confd_value_t id;
    FILE *dbg = tmpfile();
    char text[4096];
    size_t n;
    /* The fake daemon is a thread of this process: count descriptors only
       when it has stopped. */
    fds_before = open_fds();
    if (fake_start(family, 3, s_refuse_then_accept) != 0) {
        CHECK(0, "fake daemon on family %d: %s", family, strerror(errno));
        return;
    }
    s = socket(family, SOCK_STREAM, 0);
    s_before = s;
    fcntl(s, F_SETFD, FD_CLOEXEC);
    setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    confd_set_debug(CONFD_DEBUG, dbg);
    CHECK_RC(ha_connect(s), CONFD_OK, 0);
    confd_set_debug(CONFD_SILENT, stderr);
    CHECK(s == s_before, "fd changed");
    CHECK(fcntl(s, F_GETFD) & FD_CLOEXEC, "close-on-exec flag lost");
    CHECK(getsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &v, &l) == 0 && v == 1, "SO_KEEPALIVE not carried over");
    if (family != AF_UNIX) {
        l = sizeof v;
        CHECK(getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &l) == 0 && v == 1, "TCP_NODELAY not set");
    }
    CHECK(fk.hello[0][0] == 17 && hello_proto(0) == 87, "first hello: proto %d", hello_proto(0));
    CHECK(hello_proto(1) == 66 && fk.hello[1][3] == 6 && fk.hello[1][4] == 6 && fk.hello[1][7] == 0 &&
              fk.hello[1][8] == 0,
          "second hello %02x %02x %02x %02x %02x %02x %02x %02x %02x", fk.hello[1][0], fk.hello[1][1],
          fk.hello[1][2], fk.hello[1][3], fk.hello[1][4], fk.hello[1][5], fk.hello[1][6], fk.hello[1][7],
          fk.hello[1][8]);
    /* The caller's fd carries the accepted connection. */
    set_buf(&id, "n1");
    CHECK_RC(confd_ha_beprimary(s, &id), CONFD_OK, 0);
    CHECK(confd_maxdepth == 20 && confd_maxkeylen == 9, "maxdepth %d maxkeylen %d", confd_maxdepth,
          confd_maxkeylen);
    close(s);
    /* The next connect to this daemon starts with the version it accepted. */
    s = socket(family, SOCK_STREAM, 0);
    CHECK_RC(ha_connect(s), CONFD_OK, 0);
    CHECK_RC(confd_ha_beprimary(s, &id), CONFD_OK, 0);
    close(s);
    fake_stop();
    CHECK(open_fds() == fds_before, "a descriptor leaked: %d open, %d before", open_fds(), fds_before);
    CHECK(fk.accepted == 3 && hello_proto(2) == 66, "third connection: %d accepted, proto %d", fk.accepted,
          hello_proto(2));
    CHECK(fk.script_ok == 2, "script_ok %d", fk.script_ok);
    /* Every decision at CONFD_DEBUG. */
    rewind(dbg);
    n = fread(text, 1, sizeof text - 1, dbg);
    text[n] = 0;
    fclose(dbg);
    CHECK(strstr(text, "protocol version 87") && strstr(text, "refused") && strstr(text, "connecting again") &&
              strstr(text, "accepted with protocol version 66"),
          "debug output:\n%s", text);
}

static void test_adapt_unix(void) { adapt_case(AF_UNIX); }
static void test_adapt_tcp4(void) { adapt_case(AF_INET); }
static void test_adapt_tcp6(void)
{
    if (!have_ipv6_loopback()) {
        printf("    (no ::1 on this machine: not run)\n");
        return;
    }
    adapt_case(AF_INET6);
}

static void s_refuse(int fd, int k)
{
    (void)k;
    answer(fd, 1, 66, 20, 9);
    fk.script_ok++;
}

static void test_pinned_version_is_not_adapted(void)
{
    int s;
    setenv("CONFD_HA_LIB_PROTO_VSN", "87", 1);
    fake_start(AF_UNIX, 2, s_refuse);
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK_RC(ha_connect(s), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("rejected library protocol version 87") && lasterr_has("daemon has 66") &&
              lasterr_has("CONFD_HA_LIB_PROTO_VSN"),
          "lasterr \"%s\"", confd_lasterr());
    close(s);
    fake_stop();
    unsetenv("CONFD_HA_LIB_PROTO_VSN");
    CHECK(fk.accepted == 1, "%d connections (no second one when pinned)", fk.accepted);
}

static void s_sizes(int fd, int k)
{
    (void)k;
    answer(fd, 2, 87, 30, 12);
}

static void test_hello_status_2(void)
{
    int s;
    fake_start(AF_UNIX, 1, s_sizes);
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK_RC(ha_connect(s), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("MAXDEPTH/MAXKEYLEN 0/0") && lasterr_has("data model needs") &&
              lasterr_has("depth 30, keys 12"),
          "lasterr \"%s\"", confd_lasterr());
    close(s);
    fake_stop();
}

/* ---- replies: {error, Code}, any atom ---- */

static void s_replies(int fd, int k)
{
    unsigned char tok[64];
    struct bytes t;
    (void)k;
    answer(fd, 0, 87, 20, 9);
    if (read_frame(fd, tok, sizeof tok) < 0) return;
    /* berelay on a primary: {error, 17} */
    if (read_frame(fd, fk.frame, sizeof fk.frame) < 0) return;
    t.n = 0; t_tuple(&t, 2); t_atom(&t, "error"); t_small(&t, 17);
    send_term(fd, &t);
    /* besecondary that cannot reach its primary: {error, 25} */
    if (read_frame(fd, fk.frame, sizeof fk.frame) < 0) return;
    t.n = 0; t_tuple(&t, 2); t_atom(&t, "error"); t_small(&t, 25);
    send_term(fd, &t);
    /* {error, 28, <<"bad token">>} */
    if (read_frame(fd, fk.frame, sizeof fk.frame) < 0) return;
    t.n = 0; t_tuple(&t, 3); t_atom(&t, "error"); t_small(&t, 28); t_bin_str(&t, "bad token");
    send_term(fd, &t);
    /* an atom other than ok: success */
    if (read_frame(fd, fk.frame, sizeof fk.frame) < 0) return;
    t.n = 0; t_atom(&t, "true");
    send_term(fd, &t);
    fk.script_ok = 1;
}

static void test_error_replies(void)
{
    int s;
    confd_value_t me;
    struct confd_ha_node p;
    fake_start(AF_UNIX, 1, s_replies);
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK_RC(ha_connect(s), CONFD_OK, 0);
    confd_set_debug(CONFD_SILENT, stderr);
    CHECK_RC(confd_ha_berelay(s), CONFD_ERR, CONFD_ERR_BADSTATE);
    CHECK(strcmp(confd_lasterr(), "") == 0, "lasterr \"%s\" (must be empty, as with ConfD)", confd_lasterr());
    set_buf(&me, "n2");
    make_node4(&p, "n1", "127.0.0.1");
    CHECK_RC(confd_ha_besecondary(s, &me, &p, 1), CONFD_ERR, CONFD_ERR_HA_CONNECT);
    CHECK(strcmp(confd_lasterr(), "") == 0, "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(confd_ha_benone(s), CONFD_ERR, CONFD_ERR_HA_BADTOKEN);
    CHECK(strcmp(confd_lasterr(), "bad token") == 0, "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(confd_ha_benone(s), CONFD_OK, 0);
    close(s);
    fake_stop();
    CHECK(fk.script_ok, "script did not finish");
}

/* ---- notifications ---- */

static int ev_connect(int s, int mask)
{
    struct sockaddr_storage ss;
    socklen_t l = fake_addr(&ss);
    return confd_notifications_connect(s, (struct sockaddr *)&ss, (int)l, mask);
}

/* ConfD 6.6: refuses 87, accepts 66, takes only the 4-tuple subscription,
   then sends odd HA events and a heartbeat, and reads the acknowledgement. */
static void s_events66(int fd, int k)
{
    struct bytes t;
    long n;
    if (hello_proto(k) != 66) {
        answer(fd, 1, 66, 20, 9);
        return;
    }
    answer(fd, 0, 66, 20, 9);
    n = read_frame(fd, fk.frame, sizeof fk.frame);
    if (n < 3) return;
    fk.frame_len = n;
    if (!(fk.frame[1] == 104 && fk.frame[2] == 4)) {
        t.n = 0; t_tuple(&t, 3); t_atom(&t, "error"); t_small(&t, 18); t_bin_str(&t, "Bad subscription data");
        send_term(fd, &t);
        return;
    }
    t.n = 0; t_atom(&t, "ok");
    send_term(fd, &t);
    /* {64, {8, 0}}: an HA_INFO type unknown to the library */
    t.n = 0; t_tuple(&t, 2); t_small(&t, 64); t_tuple(&t, 2); t_small(&t, 8); t_small(&t, 0);
    send_term(fd, &t);
    /* {64, {1, closed}}: NOPRIMARY with an atom */
    t.n = 0; t_tuple(&t, 2); t_small(&t, 64); t_tuple(&t, 2); t_small(&t, 1); t_atom(&t, "closed");
    send_term(fd, &t);
    /* {64, {3, {"n2", {10,0,0,2}}}}: a node id as an Erlang string */
    t.n = 0; t_tuple(&t, 2); t_small(&t, 64); t_tuple(&t, 2); t_small(&t, 3);
    t_tuple(&t, 2); t_string(&t, "n2"); t_ip4(&t, 10, 0, 0, 2);
    send_term(fd, &t);
    /* {64, {2, {n3, {10,0,0,3}}}}: a node id as an atom */
    t.n = 0; t_tuple(&t, 2); t_small(&t, 64); t_tuple(&t, 2); t_small(&t, 2);
    t_tuple(&t, 2); t_atom(&t, "n3"); t_ip4(&t, 10, 0, 0, 3);
    send_term(fd, &t);
    /* {64, {4, true}}: the by-copy flag as an atom */
    t.n = 0; t_tuple(&t, 2); t_small(&t, 64); t_tuple(&t, 2); t_small(&t, 4); t_atom(&t, "true");
    send_term(fd, &t);
    /* {8192}: a heartbeat as ConfD 6.6 sends it */
    t.n = 0; t_tuple(&t, 1); t_int(&t, 8192);
    send_term(fd, &t);
    /* the acknowledgement */
    fk.frame_len = read_frame(fd, fk.frame, sizeof fk.frame);
    fk.script_ok = 1;
}

static void test_events_confd66(void)
{
    struct confd_notification n;
    int s;
    fake_start(AF_UNIX, 2, s_events66);
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK_RC(ev_connect(s, CONFD_NOTIF_HA_INFO | CONFD_NOTIF_HA_INFO_SYNC), CONFD_OK, 0);

    CHECK_RC(confd_read_notification(s, &n), CONFD_OK, 0);
    CHECK(n.type == CONFD_NOTIF_HA_INFO && n.n.hnot.type == 8, "type %d hnot.type %d", (int)n.type,
          (int)n.n.hnot.type);
    CHECK_RC(confd_read_notification(s, &n), CONFD_OK, 0);
    CHECK(n.n.hnot.type == CONFD_HA_INFO_NOPRIMARY && n.n.hnot.data.noprimary == 0, "noprimary %d",
          n.n.hnot.data.noprimary);
    CHECK_RC(confd_read_notification(s, &n), CONFD_OK, 0);
    CHECK(n.n.hnot.type == CONFD_HA_INFO_SECONDARY_ARRIVED &&
              n.n.hnot.data.secondary_arrived.nodeid.type == C_BUF &&
              CONFD_GET_BUFSIZE(&n.n.hnot.data.secondary_arrived.nodeid) == 2 &&
              memcmp(CONFD_GET_BUFPTR(&n.n.hnot.data.secondary_arrived.nodeid), "n2", 2) == 0 &&
              n.n.hnot.data.secondary_arrived.af == AF_INET &&
              n.n.hnot.data.secondary_arrived.addr.ip4.s_addr == htonl(0x0a000002),
          "string node id");
    CHECK_RC(confd_read_notification(s, &n), CONFD_OK, 0);
    CHECK(n.n.hnot.type == CONFD_HA_INFO_SECONDARY_DIED && n.n.hnot.data.secondary_died.nodeid.type == C_BUF &&
              strcmp(n.n.hnot.data.secondary_died.buf, "n3") == 0,
          "atom node id");
    CHECK_RC(confd_read_notification(s, &n), CONFD_OK, 0);
    CHECK(n.n.hnot.type == CONFD_HA_INFO_SECONDARY_INITIALIZED && n.n.hnot.data.cdb_initialized_by_copy == 1,
          "by copy %d", n.n.hnot.data.cdb_initialized_by_copy);
    CHECK_RC(confd_read_notification(s, &n), CONFD_OK, 0);
    CHECK(n.type == CONFD_NOTIF_HEARTBEAT, "type %d", (int)n.type);
    CHECK_RC(confd_sync_ha_notification(s), CONFD_OK, 0);
    fake_stop();
    close(s);
    CHECK(fk.script_ok, "the 4-tuple subscription was not taken");
    /* the bare atom ha_synced (SMALL_ATOM_UTF8) */
    CHECK(fk.frame_len == 12 && memcmp(fk.frame, "\x83\x77\x09ha_synced", 12) == 0, "ack of %ld bytes",
          fk.frame_len);
}

/* A daemon of protocol 87: the 5-tuple subscription with verbosity. */
static void s_events87(int fd, int k)
{
    struct bytes t;
    (void)k;
    answer(fd, 0, 87, 20, 9);
    fk.frame_len = read_frame(fd, fk.frame, sizeof fk.frame);
    t.n = 0; t_atom(&t, "ok");
    send_term(fd, &t);
    fk.script_ok = 1;
}

static void test_events_nso(void)
{
    int s;
    fake_start(AF_UNIX, 1, s_events87);
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK_RC(ev_connect(s, CONFD_NOTIF_HA_INFO), CONFD_OK, 0);
    fake_stop();
    close(s);
    /* {64, 0, 0, undefined, 0} */
    CHECK(fk.frame_len == 22 && fk.frame[1] == 104 && fk.frame[2] == 5 && fk.frame[20] == 97 && fk.frame[21] == 0,
          "subscription of %ld bytes, arity %d", fk.frame_len, fk.frame[2]);
}

int main(void)
{
    confd_init("confd_shapes", stderr, CONFD_SILENT);
    unsetenv("CONFD_HA_LIB_PROTO_VSN");
    unsetenv("CONFD_HA_LIB_VSN");
    t_run("hello_refused_then_adapted_unix", test_adapt_unix);
    t_run("hello_refused_then_adapted_tcp4", test_adapt_tcp4);
    t_run("hello_refused_then_adapted_tcp6", test_adapt_tcp6);
    t_run("pinned_version_is_not_adapted", test_pinned_version_is_not_adapted);
    t_run("hello_status_2", test_hello_status_2);
    t_run("error_2tuple_and_atom_replies", test_error_replies);
    t_run("events_confd66_4tuple_odd_terms_ha_synced", test_events_confd66);
    t_run("events_nso_5tuple", test_events_nso);
    return t_done();
}
