/*
 * A test double, only for what a real ha-node cannot be made to do: a tiny
 * in-test "daemon" (a thread on a Unix socket) that checks the bytes the
 * library sends (hello, token, request terms) and answers with refused
 * hellos, malformed or oversized frames, replies of the wrong shape, a
 * closed socket mid-call, and status lists longer than 255 nodes with
 * over-long ids and every address kind.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define WIRE_BYTES_CAP 200000 /* status lists longer than 255 nodes */
#include "harness.h"
#include "wire.h"

/* ---- the fake daemon ---- */

typedef void (*script_fn)(int fd);

static struct {
    char dir[64];
    char path[108];
    int lfd;
    script_fn script;
    pthread_t thread;
    /* what the script saw */
    unsigned char hello[9];
    unsigned char token[64];
    size_t token_len;
    unsigned char req[256];
    size_t req_len;
    int script_ok;
} fk;

static void hello_ok(int fd, unsigned depth, unsigned keys)
{
    unsigned char a[9] = {0, 0, 87, 8, 7, 0, 0, (unsigned char)depth, (unsigned char)keys};
    write_full(fd, a, 9);
}

/* The usual start: read the hello, answer it, read the token frame. */
static int accept_client(int fd)
{
    long n;
    if (read_full(fd, fk.hello, 9) != 0) return -1;
    hello_ok(fd, 20, 9);
    n = read_frame(fd, fk.token, sizeof fk.token);
    if (n < 0) return -1;
    fk.token_len = (size_t)n;
    return 0;
}

static int read_request(int fd)
{
    long n = read_frame(fd, fk.req, sizeof fk.req);
    if (n < 0) return -1;
    fk.req_len = (size_t)n;
    return 0;
}

static void *server(void *arg)
{
    int fd;
    (void)arg;
    fd = accept(fk.lfd, NULL, NULL);
    if (fd >= 0) {
        fk.script(fd);
        close(fd);
    }
    return NULL;
}

static void fake_start(script_fn script)
{
    struct sockaddr_un a;
    memset(&fk, 0, sizeof fk);
    snprintf(fk.dir, sizeof fk.dir, "/tmp/fkXXXXXX");
    if (!mkdtemp(fk.dir)) abort();
    snprintf(fk.path, sizeof fk.path, "%s/s", fk.dir);
    fk.lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strcpy(a.sun_path, fk.path);
    if (bind(fk.lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fk.lfd, 1) != 0) abort();
    fk.script = script;
    pthread_create(&fk.thread, NULL, server, NULL);
}

static void fake_stop(void)
{
    pthread_join(fk.thread, NULL);
    close(fk.lfd);
    unlink(fk.path);
    rmdir(fk.dir);
}

/* A socket connected with confd_ha_connect (token "tok"); returns the rc. */
static int client_connect(int *s)
{
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strcpy(a.sun_path, fk.path);
    *s = socket(AF_UNIX, SOCK_STREAM, 0);
    return confd_ha_connect(*s, (struct sockaddr *)&a, sizeof a, "tok");
}

/* ---- scripts and cases ---- */

static void s_reply_ok(int fd)
{
    struct bytes *b = calloc(1, sizeof *b);
    if (accept_client(fd) == 0 && read_request(fd) == 0) {
        put1(b, 131);
        t_atom(b, "ok");
        send_frame(fd, b);
        fk.script_ok = 1;
    }
    free(b);
}

static void test_bytes_on_the_wire(void)
{
    int s;
    confd_value_t id;
    static const unsigned char beprimary_n1[] = {0x83, 0x68, 0x02, 0x61, 0x01, 0x6D, 0x00, 0x00, 0x00, 0x02, 0x6E, 0x31};
    fake_start(s_reply_ok);
    CHECK_RC(client_connect(&s), CONFD_OK, 0);
    set_buf(&id, "n1");
    CHECK_RC(confd_ha_beprimary(s, &id), CONFD_OK, 0);
    close(s);
    fake_stop();
    CHECK(fk.script_ok, "script did not finish");
    /* hello: id 17, proto 87, vsn 0x08070000, keypath limits 0 / 0 (spec §D.2, §H.5) */
    CHECK(fk.hello[0] == 17 && fk.hello[1] == 0 && fk.hello[2] == 87 && fk.hello[3] == 8 &&
              fk.hello[4] == 7 && fk.hello[5] == 0 && fk.hello[6] == 0 && fk.hello[7] == 0 && fk.hello[8] == 0,
          "hello %02x %02x %02x %02x %02x %02x %02x %02x %02x", fk.hello[0], fk.hello[1], fk.hello[2],
          fk.hello[3], fk.hello[4], fk.hello[5], fk.hello[6], fk.hello[7], fk.hello[8]);
    /* token: raw bytes, no NUL (spec §D.5) */
    CHECK(fk.token_len == 3 && memcmp(fk.token, "tok", 3) == 0, "token of %zu bytes", fk.token_len);
    /* beprimary "n1": the worked frame of spec §D.5 */
    CHECK(fk.req_len == sizeof beprimary_n1 && memcmp(fk.req, beprimary_n1, sizeof beprimary_n1) == 0,
          "request of %zu bytes", fk.req_len);
    CHECK(confd_maxdepth == 20 && confd_maxkeylen == 9, "maxdepth %d maxkeylen %d", confd_maxdepth, confd_maxkeylen);
}

static void s_hello_rejected(int fd)
{
    unsigned char a[9] = {1, 0, 60, 6, 0, 0, 0, 20, 9};
    if (read_full(fd, fk.hello, 9) == 0) write_full(fd, a, 9);
    fk.script_ok = 1;
}

/* With the version pinned the library does not adapt (adaptation itself:
   confd_shapes.c). */
static void test_hello_rejected(void)
{
    int s;
    setenv("CONFD_HA_LIB_PROTO_VSN", "87", 1);
    fake_start(s_hello_rejected);
    CHECK_RC(client_connect(&s), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("rejected library protocol version 87"), "lasterr \"%s\"", confd_lasterr());
    close(s);
    fake_stop();
    unsetenv("CONFD_HA_LIB_PROTO_VSN");
}

static void s_close_in_hello(int fd)
{
    unsigned char a[4] = {0, 0, 87, 8};
    if (read_full(fd, fk.hello, 9) == 0) write_full(fd, a, 4); /* a partial answer, then close */
}

static void test_closed_during_hello(void)
{
    int s;
    fake_start(s_close_in_hello);
    CHECK_RC(client_connect(&s), CONFD_EOF, CONFD_ERR_EOF);
    close(s);
    fake_stop();
}

static void s_hello_sizes(int fd)
{
    if (read_full(fd, fk.hello, 9) != 0) return;
    hello_ok(fd, 33, 7);
    if (read_frame(fd, fk.token, sizeof fk.token) >= 0) fk.script_ok = 1;
}

static void test_hello_sizes_recorded(void)
{
    int s;
    fake_start(s_hello_sizes);
    CHECK_RC(client_connect(&s), CONFD_OK, 0);
    close(s);
    fake_stop();
    CHECK(confd_maxdepth == 33 && confd_maxkeylen == 7, "maxdepth %d maxkeylen %d", confd_maxdepth, confd_maxkeylen);
}

/* Whatever MAXDEPTH / MAXKEYLEN a program was compiled with, the library
   announces 0 / 0 (no limit; it has no fixed-size keypath arrays). */
static void test_hello_announces_init_limits(void)
{
    int s;
    confd_init_vsn_sz("fake_daemon", stderr, CONFD_SILENT, CONFD_LIB_API_VSN, 30, 12);
    fake_start(s_hello_sizes);
    CHECK_RC(client_connect(&s), CONFD_OK, 0);
    close(s);
    fake_stop();
    CHECK(fk.hello[7] == 0 && fk.hello[8] == 0, "hello bytes 7-8: %u %u", fk.hello[7], fk.hello[8]);
    confd_init("fake_daemon", stderr, CONFD_SILENT);
}

static void test_hello_versions_from_env(void)
{
    int s;
    setenv("CONFD_HA_LIB_PROTO_VSN", "86", 1);
    setenv("CONFD_HA_LIB_VSN", "0x08060800", 1);
    fake_start(s_hello_sizes);
    CHECK_RC(client_connect(&s), CONFD_OK, 0);
    close(s);
    fake_stop();
    unsetenv("CONFD_HA_LIB_PROTO_VSN");
    unsetenv("CONFD_HA_LIB_VSN");
    CHECK(fk.hello[0] == 17 && fk.hello[1] == 0 && fk.hello[2] == 86 && fk.hello[3] == 8 && fk.hello[4] == 6 &&
              fk.hello[5] == 8 && fk.hello[6] == 0,
          "hello %02x %02x %02x %02x %02x %02x %02x", fk.hello[0], fk.hello[1], fk.hello[2], fk.hello[3],
          fk.hello[4], fk.hello[5], fk.hello[6]);
}

/* One reply after one request: the reply is prepared by the case. */
static struct bytes *canned;
static int canned_raw; /* 1: canned is a whole frame (header included) */

static void s_canned(int fd)
{
    if (accept_client(fd) != 0 || read_request(fd) != 0) return;
    if (canned_raw)
        write_full(fd, canned->d, canned->n);
    else
        send_frame(fd, canned);
    fk.script_ok = 1;
}

static int canned_call(int which)
{
    int s, rc;
    confd_value_t id;
    static struct confd_ha_status st;
    fake_start(s_canned);
    rc = client_connect(&s);
    CHECK(rc == CONFD_OK, "connect %d", rc);
    set_buf(&id, "n1");
    if (which == 0)
        rc = confd_ha_beprimary(s, &id);
    else
        rc = confd_ha_get_status(s, &st);
    close(s);
    fake_stop();
    return rc;
}

static void test_malformed_frame(void)
{
    canned = calloc(1, sizeof *canned);
    put1(canned, 131);
    put1(canned, 0xFF); /* no such tag */
    put1(canned, 0x00);
    canned_raw = 0;
    CHECK_RC(canned_call(0), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("undecodable reply"), "lasterr \"%s\"", confd_lasterr());
    canned->n = 0;
    put1(canned, 0x70); /* not even the version byte */
    CHECK_RC(canned_call(4), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("version byte"), "lasterr \"%s\"", confd_lasterr());
    free(canned);
}

static void test_wrong_shape(void)
{
    canned = calloc(1, sizeof *canned);
    canned_raw = 0;
    put1(canned, 131); /* {ok, 1} to beprimary */
    t_tuple(canned, 2);
    t_atom(canned, "ok");
    t_small(canned, 1);
    CHECK_RC(canned_call(0), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("unexpected reply"), "lasterr \"%s\"", confd_lasterr());
    canned->n = 0; /* {9, []}: no such state */
    put1(canned, 131);
    t_tuple(canned, 2);
    t_small(canned, 9);
    t_nil(canned);
    CHECK_RC(canned_call(4), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("get_status"), "lasterr \"%s\"", confd_lasterr());
    canned->n = 0; /* ok to get_status */
    put1(canned, 131);
    t_atom(canned, "ok");
    CHECK_RC(canned_call(4), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    canned->n = 0; /* {3, [{<<"n2">>, 42}]}: a node with a bad address */
    put1(canned, 131);
    t_tuple(canned, 2);
    t_small(canned, 3);
    t_list(canned, 1);
    t_tuple(canned, 2);
    t_bin(canned, "n2", 2);
    t_small(canned, 42);
    t_nil(canned);
    CHECK_RC(canned_call(4), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    free(canned);
}

static void test_oversized_frame(void)
{
    canned = calloc(1, sizeof *canned);
    canned_raw = 1;
    put32(canned, 0x7fffffff); /* announces 2 GiB, sends nothing more */
    CHECK_RC(canned_call(0), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("exceeds"), "lasterr \"%s\"", confd_lasterr());
    canned->n = 0;
    put32(canned, 10); /* a truncated frame, then the socket closes */
    put1(canned, 131);
    CHECK_RC(canned_call(0), CONFD_EOF, CONFD_ERR_EOF);
    canned->n = 0; /* closed with no reply at all */
    CHECK_RC(canned_call(4), CONFD_EOF, CONFD_ERR_EOF);
    free(canned);
}

static void test_error_reply(void)
{
    static const char reason[] = "token mismatch with primary n1";
    canned = calloc(1, sizeof *canned);
    canned_raw = 0;
    put1(canned, 131);
    t_tuple(canned, 3);
    t_atom(canned, "error");
    t_small(canned, CONFD_ERR_HA_BADTOKEN);
    t_bin(canned, reason, strlen(reason));
    CHECK_RC(canned_call(0), CONFD_ERR, CONFD_ERR_HA_BADTOKEN);
    CHECK(strcmp(confd_lasterr(), reason) == 0, "lasterr \"%s\"", confd_lasterr());
    canned->n = 0; /* a big code that is no ConfD error still comes through */
    put1(canned, 131);
    t_tuple(canned, 3);
    t_atom(canned, "error");
    t_int(canned, 100000);
    t_bin(canned, "x", 1);
    CHECK_RC(canned_call(4), CONFD_ERR, 100000);
    free(canned);
}

/* 300 nodes: ids of 200 bytes, and every address kind. */
static void test_status_big_list(void)
{
    static struct confd_ha_status st;
    char id[200];
    int i, s, rc;
    uint32_t k;
    canned = calloc(1, sizeof *canned);
    canned_raw = 0;
    put1(canned, 131);
    t_tuple(canned, 2);
    t_small(canned, CONFD_HA_STATE_PRIMARY);
    t_list(canned, 300);
    for (k = 0; k < 300; k++) {
        t_tuple(canned, 2);
        if (k == 1) {
            t_int(canned, -77); /* an integer node id (C_INT32) */
        } else {
            char pre[16];
            memset(id, 'a' + (int)(k % 26), sizeof id);
            snprintf(pre, sizeof pre, "n%03u-", (unsigned)k);
            memcpy(id, pre, 5);
            t_bin(canned, id, k == 0 ? 200 : 7);
        }
        if (k % 3 == 0) {
            t_tuple(canned, 4);
            t_small(canned, 10); t_small(canned, 0); t_small(canned, (k >> 8) & 255); t_small(canned, k & 255);
        } else if (k % 3 == 1) {
            t_tuple(canned, 8);
            t_int(canned, 0x2001); t_int(canned, 0xdb8); t_small(canned, 0); t_small(canned, 0);
            t_small(canned, 0); t_small(canned, 0); t_small(canned, 0); t_int(canned, (int32_t)k);
        } else {
            char host[40];
            snprintf(host, sizeof host, "node-%u.example", (unsigned)k);
            t_bin(canned, host, strlen(host));
        }
    }
    t_nil(canned);

    fake_start(s_canned);
    CHECK_RC(client_connect(&s), CONFD_OK, 0);
    memset(&st, 0xAB, sizeof st);
    rc = confd_ha_get_status(s, &st);
    close(s);
    fake_stop();
    CHECK(rc == CONFD_OK, "rc %d errno %d %s", rc, confd_errno, confd_lasterr());
    if (rc != CONFD_OK) { free(canned); return; }
    CHECK(st.state == CONFD_HA_STATE_PRIMARY, "state %d", st.state);
    CHECK(st.num_nodes == 255, "num_nodes %d", st.num_nodes);
    /* node 0: a 200-byte id cut to 127 + NUL, pointing into buf */
    CHECK(st.nodes[0].nodeid.type == C_BUF, "type %d", st.nodes[0].nodeid.type);
    CHECK(CONFD_GET_BUFSIZE(&st.nodes[0].nodeid) == 127, "size %u", CONFD_GET_BUFSIZE(&st.nodes[0].nodeid));
    CHECK(CONFD_GET_CBUFPTR(&st.nodes[0].nodeid) == st.nodes[0].buf, "ptr into buf");
    CHECK(st.nodes[0].buf[127] == 0 && strncmp(st.nodes[0].buf, "n000-", 5) == 0, "buf");
    CHECK(st.nodes[0].af == AF_INET && st.nodes[0].addr.ip4.s_addr == htonl(0x0a000000), "addr 0");
    /* node 1: integer id, IPv6 address */
    CHECK(st.nodes[1].nodeid.type == C_INT32 && st.nodes[1].nodeid.val.i32 == -77, "int id");
    CHECK(st.nodes[1].af == AF_INET6, "af %d", st.nodes[1].af);
    CHECK(st.nodes[1].addr.ip6.s6_addr[0] == 0x20 && st.nodes[1].addr.ip6.s6_addr[1] == 0x01 &&
              st.nodes[1].addr.ip6.s6_addr[15] == 1, "ip6");
    /* node 2: string address in addr_buf */
    CHECK(st.nodes[2].af == AF_UNSPEC && st.nodes[2].addr.str == st.nodes[2].addr_buf, "af/str");
    CHECK(strcmp(st.nodes[2].addr_buf, "node-2.example") == 0, "addr_buf \"%s\"", st.nodes[2].addr_buf);
    CHECK(strcmp(CONFD_GET_CBUFPTR(&st.nodes[2].nodeid), "n002-") != 0 &&
              strncmp(CONFD_GET_CBUFPTR(&st.nodes[2].nodeid), "n002-", 5) == 0 &&
              CONFD_GET_BUFSIZE(&st.nodes[2].nodeid) == 7, "id 2");
    /* the last one kept, and nothing written past nodes[254] */
    CHECK(strncmp(st.nodes[254].buf, "n254-", 5) == 0, "node 254 \"%s\"", st.nodes[254].buf);
    for (i = 0; i < 255; i++) {
        if (st.nodes[i].nodeid.type == C_BUF)
            CHECK(CONFD_GET_BUFPTR(&st.nodes[i].nodeid) == (unsigned char *)st.nodes[i].buf, "node %d ptr", i);
    }
    free(canned);
}

static void s_async(int fd)
{
    if (accept_client(fd) != 0 || read_request(fd) != 0) return;
    fk.script_ok = 1; /* and never answer */
}

static void test_async_besecondary_reads_nothing(void)
{
    int s;
    confd_value_t me;
    struct confd_ha_node p;
    /* {2, <<"n2">>, {<<"n1">>, {127,0,0,1}}, 0} */
    static const unsigned char want[] = {0x83, 0x68, 0x04, 0x61, 0x02, 0x6D, 0, 0, 0, 2, 'n', '2', 0x68, 0x02,
                                         0x6D, 0, 0, 0, 2, 'n', '1', 0x68, 0x04, 0x61, 0x7F, 0x61, 0x00,
                                         0x61, 0x00, 0x61, 0x01, 0x61, 0x00};
    fake_start(s_async);
    CHECK_RC(client_connect(&s), CONFD_OK, 0);
    set_buf(&me, "n2");
    make_node4(&p, "n1", "127.0.0.1");
    /* The fake never answers: a blocking read would hang here. */
    CHECK_RC(confd_ha_besecondary(s, &me, &p, 0), CONFD_OK, 0);
    fake_stop();
    CHECK(fk.script_ok && fk.req_len == sizeof want && memcmp(fk.req, want, sizeof want) == 0,
          "request of %zu bytes", fk.req_len);
    /* The daemon has closed now: the next call sees EOF. */
    CHECK_RC(confd_ha_benone(s), CONFD_EOF, CONFD_ERR_EOF);
    CHECK(strcmp(confd_strerror(confd_errno), "Lost connection to ConfD") == 0, "strerror");
    close(s);
}

static void s_requests(int fd)
{
    /* Records each request's first bytes; answers ok. */
    struct bytes *b = calloc(1, sizeof *b);
    put1(b, 131);
    t_atom(b, "ok");
    if (accept_client(fd) == 0) {
        while (read_request(fd) == 0) send_frame(fd, b);
        fk.script_ok = 1;
    }
    free(b);
}

static void test_value_types_as_node_ids(void)
{
    int s;
    confd_value_t v;
    struct confd_ha_node p;
    fake_start(s_requests);
    CHECK_RC(client_connect(&s), CONFD_OK, 0);
    CONFD_SET_STR(&v, "n1");
    CHECK_RC(confd_ha_beprimary(s, &v), CONFD_OK, 0);
    CHECK(fk.req_len == 12 && fk.req[5] == 0x6D && fk.req[10] == 'n' && fk.req[11] == '1', "C_STR sent as a binary");
    CONFD_SET_UINT32(&v, 7);
    CHECK_RC(confd_ha_secondary_dead(s, &v), CONFD_OK, 0);
    CHECK(fk.req_len == 11 && fk.req[5] == 0x68 && fk.req[8] == 12 && fk.req[10] == 7, "{5, {12, 7}}");
    CONFD_SET_INT32(&v, 5);
    CHECK_RC(confd_ha_secondary_dead(s, &v), CONFD_OK, 0);
    CHECK(fk.req_len == 7 && fk.req[5] == 0x61 && fk.req[6] == 5, "{5, 5}");
    CONFD_SET_BUF(&v, "", 0);
    v.val.buf.ptr = NULL; /* an empty C_BUF may have no pointer */
    CHECK_RC(confd_ha_beprimary(s, &v), CONFD_OK, 0);
    /* AF_UNSPEC primary: the address travels as a binary */
    CONFD_SET_BUF(&v, "n2", 2);
    memset(&p, 0, sizeof p);
    set_buf(&p.nodeid, "n1");
    p.af = AF_UNSPEC;
    p.addr.str = (char *)"primary.example";
    CHECK_RC(confd_ha_besecondary(s, &v, &p, 1), CONFD_OK, 0);
    CHECK(fk.req_len > 20 && memmem(fk.req, fk.req_len, "primary.example", 15) != NULL, "string address");
    /* AF_INET6 primary */
    memset(&p, 0, sizeof p);
    set_buf(&p.nodeid, "n1");
    p.af = AF_INET6;
    p.addr.ip6 = in6addr_loopback;
    CHECK_RC(confd_ha_beslave(s, &v, &p, 1), CONFD_OK, 0);
    CHECK(fk.req_len > 20 && fk.req[fk.req_len - 20] == 0x68 && fk.req[fk.req_len - 19] == 8, "8-tuple address");
    close(s);
    fake_stop();
}

int main(void)
{
    confd_init("fake_daemon", stderr, CONFD_SILENT);
    t_run("bytes_on_the_wire", test_bytes_on_the_wire);
    t_run("hello_rejected", test_hello_rejected);
    t_run("closed_during_hello", test_closed_during_hello);
    t_run("hello_sizes_recorded", test_hello_sizes_recorded);
    t_run("hello_announces_init_limits", test_hello_announces_init_limits);
    t_run("hello_versions_from_env", test_hello_versions_from_env);
    t_run("malformed_frame", test_malformed_frame);
    t_run("wrong_shape", test_wrong_shape);
    t_run("oversized_and_truncated_frames", test_oversized_frame);
    t_run("error_reply", test_error_reply);
    t_run("status_big_list", test_status_big_list);
    t_run("async_besecondary_reads_nothing", test_async_besecondary_reads_nothing);
    t_run("value_types_as_node_ids", test_value_types_as_node_ids);
    return t_done();
}
