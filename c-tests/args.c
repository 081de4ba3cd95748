/*
 * Bad arguments and failing system calls, no daemon needed: NULL pointers,
 * wrong srv_sz, unknown address families, empty token, unsupported value
 * types, connect(2) refused, a closed fd. Each gives CONFD_ERR with the
 * documented confd_errno and a message naming the problem. Also: errno and
 * lasterr are per thread, debug output goes to estream, SIGPIPE is ignored.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"

#define EXPECT_MSG(needle) CHECK(lasterr_has(needle), "lasterr \"%s\" lacks \"%s\"", confd_lasterr(), needle)

static int closed_port(void)
{
    return hn_free_port(NULL); /* nothing listens there */
}

static void loopback4(struct sockaddr_in *a, int port)
{
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

static void test_connect_bad_args(void)
{
    struct sockaddr_in a;
    struct sockaddr_in6 a6;
    struct sockaddr_un un;
    struct sockaddr_storage ss;
    int s = socket(AF_INET, SOCK_STREAM, 0);

    loopback4(&a, closed_port());
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&a, sizeof a, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("token is NULL");
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&a, sizeof a, ""), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("token is empty");
    CHECK_RC(confd_ha_connect(s, NULL, sizeof a, "t"), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("srv is NULL");
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&a, 1, "t"), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("srv_sz 1 is too small");
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&a, -5, "t"), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("srv_sz -5");
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&a, 8, "t"), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("srv_sz 8 does not fit AF_INET");
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&a, 4096, "t"), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("srv_sz 4096 does not fit AF_INET");

    memset(&a6, 0, sizeof a6);
    a6.sin6_family = AF_INET6;
    a6.sin6_addr = in6addr_loopback;
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&a6, sizeof(struct sockaddr_in), "t"), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("does not fit AF_INET6");

    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&un, 2, "t"), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("does not fit AF_UNIX");
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&un, sizeof un + 1, "t"), CONFD_ERR, CONFD_ERR_PROTOUSAGE);

    memset(&ss, 0, sizeof ss);
    ss.ss_family = 99;
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&ss, sizeof ss, "t"), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("unsupported address family 99");
    ss.ss_family = AF_UNSPEC;
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&ss, sizeof ss, "t"), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("unsupported address family 0");

    CHECK_RC(confd_do_connect(s, (struct sockaddr *)&a, sizeof a, 300), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("client id 300");
    close(s);
}

static void test_connect_os_errors(void)
{
    struct sockaddr_in a;
    struct sockaddr_un un;
    int port = closed_port(), s;
    char want[64];

    loopback4(&a, port);
    s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&a, sizeof a, "t"), CONFD_ERR, CONFD_ERR_OS);
    snprintf(want, sizeof want, "connect to 127.0.0.1:%d", port);
    EXPECT_MSG(want);
    EXPECT_MSG("refused");
    close(s);

    s = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    strcpy(un.sun_path, "/nonexistent/confd-ha-test.sock");
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&un, sizeof un, "t"), CONFD_ERR, CONFD_ERR_OS);
    EXPECT_MSG("/nonexistent/confd-ha-test.sock");
    close(s);

    /* A family that does not match the socket: the kernel refuses. */
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&a, sizeof a, "t"), CONFD_ERR, CONFD_ERR_OS);
    close(s);

    /* Not a descriptor at all. */
    CHECK_RC(confd_ha_connect(-1, (struct sockaddr *)&a, sizeof a, "t"), CONFD_ERR, CONFD_ERR_OS);
    EXPECT_MSG("Bad file descriptor");
}

static void test_order_bad_args(void)
{
    confd_value_t v;
    struct confd_ha_node p;
    static struct confd_ha_status st;

    CHECK_RC(confd_ha_beprimary(-1, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("confd_ha_beprimary: mynodeid is NULL");

    memset(&v, 0, sizeof v);
    v.type = C_BUF;
    v.val.buf.size = 3; /* ptr NULL */
    CHECK_RC(confd_ha_beprimary(-1, &v), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("C_BUF of 3 bytes with a NULL pointer");

    memset(&v, 0, sizeof v);
    v.type = C_STR;
    CHECK_RC(confd_ha_beprimary(-1, &v), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("C_STR with a NULL pointer");

    memset(&v, 0, sizeof v);
    v.type = C_QNAME;
    CHECK_RC(confd_ha_beprimary(-1, &v), CONFD_ERR, CONFD_ERR_BADTYPE);
    EXPECT_MSG("C_QNAME (18) is not supported");
    CONFD_SET_DOUBLE(&v, 0.0 / 0.0); /* NaN: the term format has no such float */
    CHECK_RC(confd_ha_beprimary(-1, &v), CONFD_ERR, CONFD_ERR_BADTYPE);
    EXPECT_MSG("only finite doubles");
    v.type = (enum confd_vtype)12345; /* garbage type number from C */
    CHECK_RC(confd_ha_secondary_dead(-1, &v), CONFD_ERR, CONFD_ERR_BADTYPE);
    EXPECT_MSG("type 12345");

    set_buf(&v, "n2");
    CHECK_RC(confd_ha_besecondary(-1, &v, NULL, 1), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("primary is NULL");
    CHECK_RC(confd_ha_besecondary(-1, NULL, &p, 1), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("mynodeid is NULL");
    make_node4(&p, "n1", "127.0.0.1");
    p.af = 77;
    CHECK_RC(confd_ha_besecondary(-1, &v, &p, 1), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("primary->af 77");
    p.af = AF_UNSPEC;
    p.addr.str = NULL;
    CHECK_RC(confd_ha_besecondary(-1, &v, &p, 1), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("addr.str is NULL");
    make_node4(&p, "n1", "127.0.0.1");
    p.nodeid.type = C_LIST;
    CHECK_RC(confd_ha_besecondary(-1, &v, &p, 1), CONFD_ERR, CONFD_ERR_BADTYPE);
    EXPECT_MSG("primary->nodeid of C_LIST");

    CHECK_RC(confd_ha_get_status(-1, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("stat is NULL");
    CHECK_RC(confd_ha_secondary_dead(-1, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    EXPECT_MSG("nodeid is NULL");

    /* Well-formed, but the fd is bad: the OS error, not a crash. */
    CHECK_RC(confd_ha_get_status(-1, &st), CONFD_ERR, CONFD_ERR_OS);
    CHECK_RC(confd_ha_benone(-1), CONFD_ERR, CONFD_ERR_OS);
    CHECK_RC(confd_ha_berelay(-1), CONFD_ERR, CONFD_ERR_OS);
    make_node4(&p, "n1", "127.0.0.1");
    CHECK_RC(confd_ha_besecondary(-1, &v, &p, 0), CONFD_ERR, CONFD_ERR_OS);
}

static void *thread_fail(void *arg)
{
    int *out = arg;
    out[0] = confd_errno; /* fresh thread: 0 */
    out[1] = confd_ha_beprimary(-1, NULL);
    out[2] = confd_errno;
    out[3] = lasterr_has("mynodeid is NULL");
    return NULL;
}

static void test_errno_per_thread(void)
{
    pthread_t t;
    int r[4] = {-9, -9, -9, -9};
    int *p1, *p2;
    /* Main thread: an OS error. */
    CHECK_RC(confd_ha_benone(-1), CONFD_ERR, CONFD_ERR_OS);
    CHECK(pthread_create(&t, NULL, thread_fail, r) == 0, "pthread_create");
    pthread_join(t, NULL);
    CHECK(r[0] == 0, "new thread starts with errno 0, got %d", r[0]);
    CHECK(r[1] == CONFD_ERR && r[2] == CONFD_ERR_PROTOUSAGE && r[3], "thread: rc %d errno %d", r[1], r[2]);
    CHECK(confd_errno == CONFD_ERR_OS, "main thread errno changed to %d", confd_errno);
    EXPECT_MSG("Bad file descriptor");
    /* confd_errno is an lvalue, as in ConfD. */
    confd_errno = 0;
    CHECK(confd_errno == 0, "assign");
    p1 = confd_errno_location();
    p2 = confd_errno_location();
    CHECK(p1 == p2 && p1 != NULL, "stable location");
}

static void test_debug_stream(void)
{
    char line[512];
    int found = 0;
    FILE *f = tmpfile();
    CHECK(f != NULL, "tmpfile");
    if (!f) return;
    CHECK(confd_set_debug(CONFD_DEBUG, f) == CONFD_OK, "set_debug");
    CHECK_RC(confd_ha_beprimary(-1, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    confd_set_debug(CONFD_SILENT, NULL);
    CHECK_RC(confd_ha_beprimary(-1, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE); /* not logged */
    rewind(f);
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "DEBUG confd_ha_beprimary: CONFD_ERR_PROTOUSAGE (21)")) found++;
    }
    CHECK(found == 1, "%d debug lines", found);
    fclose(f);
}

static void test_sigpipe_ignored(void)
{
    struct sigaction sa;
    sigaction(SIGPIPE, NULL, &sa);
    CHECK(sa.sa_handler == SIG_IGN, "SIGPIPE disposition not SIG_IGN");
}

int main(void)
{
    confd_init("args", stderr, CONFD_SILENT);
    confd_init("args", stderr, CONFD_SILENT); /* twice is fine */
    t_run("connect_bad_args", test_connect_bad_args);
    t_run("connect_os_errors", test_connect_os_errors);
    t_run("order_bad_args", test_order_bad_args);
    t_run("errno_per_thread", test_errno_per_thread);
    t_run("debug_stream", test_debug_stream);
    t_run("sigpipe_ignored", test_sigpipe_ignored);
    return t_done();
}
