/*
 * The cha_ data API against real ha-node processes: transactions (set,
 * delete, commit, txid, reuse, retry after a refusal), reads (get of every
 * stored type, exists, list), over TCP and a Unix socket; on a NONE node and
 * on a primary with a secondary (committed data readable on the secondary
 * when the commit returns; writes there refused with CONFD_ERR_NOT_WRITABLE
 * and the daemon's reason); NOEXISTS / BADPATH errors with their messages;
 * NULL and bad arguments; CONFD_EOF when the node goes away.
 */
#include <arpa/inet.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cha.h>

#include "harness.h"

#define TOKEN "cha-data-token"
static struct hn_node n1, n2;
static int h1 = -1, h2 = -1; /* HA control sockets */
static int d1 = -1, d2 = -1; /* data sockets */

static int data_connect_tcp(const struct hn_node *n)
{
    struct sockaddr_in a;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(n->ipc_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (cha_data_connect(s, (struct sockaddr *)&a, sizeof a) != CONFD_OK) {
        printf("    cha_data_connect(%d): errno %d: %s\n", n->ipc_port, confd_errno, confd_lasterr());
        close(s);
        return -1;
    }
    return s;
}

static int data_connect_unix(const struct hn_node *n)
{
    struct sockaddr_un u;
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&u, 0, sizeof u);
    u.sun_family = AF_UNIX;
    snprintf(u.sun_path, sizeof u.sun_path, "%s", n->ipc_path);
    if (cha_data_connect(s, (struct sockaddr *)&u, sizeof u) != CONFD_OK) {
        printf("    cha_data_connect(%s): errno %d: %s\n", n->ipc_path, confd_errno, confd_lasterr());
        close(s);
        return -1;
    }
    return s;
}

/* Is the value at `path` the C_BUF `text`? */
static int get_is_text(int sock, const char *path, const char *text)
{
    confd_value_t v;
    int ok;
    if (cha_get(sock, path, &v) != CONFD_OK) {
        printf("    cha_get(%s): errno %d: %s\n", path, confd_errno, confd_lasterr());
        return 0;
    }
    ok = v.type == C_BUF && CONFD_GET_BUFSIZE(&v) == strlen(text) && strcmp(CONFD_GET_CBUFPTR(&v), text) == 0;
    if (!ok) printf("    cha_get(%s): type %d\n", path, v.type);
    cha_free_value(&v);
    return ok;
}

static void test_none_node_commit_and_get(void)
{
    struct cha_txn *txn = cha_txn_new();
    confd_value_t v, got;
    char txid[CHA_TXID_SIZE] = "", txid2[CHA_TXID_SIZE] = "";
    struct in_addr ip4;
    struct in6_addr ip6;
    unsigned char bin[4] = {0, 1, 0xfe, 0xff};

    inet_pton(AF_INET, "10.1.2.3", &ip4);
    inet_pton(AF_INET6, "2001:db8::7", &ip6);
    set_buf(&v, "alpha");
    CHECK_RC(cha_txn_set(txn, "/system/hostname", &v), CONFD_OK, 0);
    CONFD_SET_UINT16(&v, 80);
    CHECK_RC(cha_txn_set(txn, "/servers/server{www}/port", &v), CONFD_OK, 0);
    CONFD_SET_UINT16(&v, 5432);
    CHECK_RC(cha_txn_set(txn, "/servers/server{db}/port", &v), CONFD_OK, 0);
    CONFD_SET_INT64(&v, -1234567890123LL);
    CHECK_RC(cha_txn_set(txn, "/num/i64", &v), CONFD_OK, 0);
    CONFD_SET_BOOL(&v, 1);
    CHECK_RC(cha_txn_set(txn, "/num/flag", &v), CONFD_OK, 0);
    CONFD_SET_DOUBLE(&v, 2.5);
    CHECK_RC(cha_txn_set(txn, "/num/d", &v), CONFD_OK, 0);
    CONFD_SET_IPV4(&v, ip4);
    CHECK_RC(cha_txn_set(txn, "/net/v4", &v), CONFD_OK, 0);
    CONFD_SET_IPV6(&v, ip6);
    CHECK_RC(cha_txn_set(txn, "/net/v6", &v), CONFD_OK, 0);
    CONFD_SET_BINARY(&v, bin, sizeof bin);
    CHECK_RC(cha_txn_set(txn, "/net/bin", &v), CONFD_OK, 0);
    CONFD_SET_STR(&v, "from a C string");
    CHECK_RC(cha_txn_set(txn, "/system/motd", &v), CONFD_OK, 0);
    CHECK_RC(cha_txn_commit(d1, txn, txid, sizeof txid), CONFD_OK, 0);
    CHECK(strlen(txid) > 0, "a transaction id");
    CHECK_RC(cha_txid(d1, txid2, sizeof txid2), CONFD_OK, 0);
    CHECK(strcmp(txid, txid2) == 0, "cha_txid \"%s\" == commit's \"%s\"", txid2, txid);

    CHECK(get_is_text(d1, "/system/hostname", "alpha"), "hostname");
    CHECK(get_is_text(d1, "/system/motd", "from a C string"), "C_STR comes back as C_BUF");
    CHECK_RC(cha_get(d1, "/servers/server{www}/port", &got), CONFD_OK, 0);
    CHECK(got.type == C_UINT16 && CONFD_GET_UINT16(&got) == 80, "port type %d", got.type);
    CHECK_RC(cha_get(d1, "/num/i64", &got), CONFD_OK, 0);
    CHECK(got.type == C_INT64 && CONFD_GET_INT64(&got) == -1234567890123LL, "i64 type %d", got.type);
    CHECK_RC(cha_get(d1, "/num/flag", &got), CONFD_OK, 0);
    CHECK(got.type == C_BOOL && CONFD_GET_BOOL(&got) == 1, "bool type %d", got.type);
    CHECK_RC(cha_get(d1, "/num/d", &got), CONFD_OK, 0);
    CHECK(got.type == C_DOUBLE && CONFD_GET_DOUBLE(&got) == 2.5, "double type %d", got.type);
    CHECK_RC(cha_get(d1, "/net/v4", &got), CONFD_OK, 0);
    CHECK(got.type == C_IPV4 && CONFD_GET_IPV4(&got).s_addr == ip4.s_addr, "ipv4 type %d", got.type);
    CHECK_RC(cha_get(d1, "/net/v6", &got), CONFD_OK, 0);
    CHECK(got.type == C_IPV6 && memcmp(&got.val.ip6, &ip6, sizeof ip6) == 0, "ipv6 type %d", got.type);
    /* An int value holds nothing to free: cha_free_value leaves it. */
    cha_free_value(&got);
    CHECK(got.type == C_IPV6, "freeing an IPv6 value changes nothing");
    CHECK_RC(cha_get(d1, "/net/bin", &got), CONFD_OK, 0);
    CHECK(got.type == C_BINARY && CONFD_GET_BINARY_SIZE(&got) == 4 &&
              memcmp(CONFD_GET_BINARY_PTR(&got), bin, 4) == 0 && CONFD_GET_BINARY_PTR(&got)[4] == 0,
          "binary type %d", got.type);
    cha_free_value(&got);
    CHECK(got.type == C_NOEXISTS && got.val.buf.ptr == NULL, "freed value is C_NOEXISTS");
    cha_free_value(&got); /* twice: nothing happens */

    /* The committed transaction was emptied: committing it again changes
       nothing but the transaction id. */
    CHECK_RC(cha_txn_commit(d1, txn, txid2, sizeof txid2), CONFD_OK, 0);
    CHECK(strcmp(txid, txid2) != 0, "a new transaction id");
    CHECK(get_is_text(d1, "/system/hostname", "alpha"), "hostname unchanged");
    cha_txn_free(txn);
}

static void test_exists_and_list(void)
{
    char **names = NULL;
    int e = -1, n = -1;
    CHECK_RC(cha_exists(d1, "/servers/server{www}/port", &e), CONFD_OK, 0);
    CHECK(e == 1, "leaf exists: %d", e);
    CHECK_RC(cha_exists(d1, "/servers", &e), CONFD_OK, 0);
    CHECK(e == 1, "a path with descendants exists: %d", e);
    CHECK_RC(cha_exists(d1, "/servers/server{ftp}", &e), CONFD_OK, 0);
    CHECK(e == 0, "missing: %d", e);

    CHECK_RC(cha_list(d1, "/servers", &names, &n), CONFD_OK, 0);
    CHECK(n == 2 && names != NULL, "n %d", n);
    if (names && n == 2) {
        CHECK(strcmp(names[0], "server{db}") == 0 && strcmp(names[1], "server{www}") == 0,
              "sorted children: %s %s", names[0], names[1]);
        CHECK(names[2] == NULL, "NULL-terminated");
    }
    cha_free_list(names);
    names = NULL;
    CHECK_RC(cha_list(d1, "/", &names, NULL), CONFD_OK, 0);
    if (names) {
        int i, found = 0;
        for (i = 0; names[i]; i++)
            if (strcmp(names[i], "system") == 0 || strcmp(names[i], "servers") == 0 || strcmp(names[i], "net") == 0)
                found++;
        CHECK(found == 3, "top level lists net, servers, system (%d found of %d)", found, i);
    }
    cha_free_list(names);
    /* A leaf has no children: an empty array. */
    CHECK_RC(cha_list(d1, "/system/hostname", &names, &n), CONFD_OK, 0);
    CHECK(n == 0 && names != NULL && names[0] == NULL, "empty list, n %d", n);
    cha_free_list(names);
}

static void test_delete(void)
{
    struct cha_txn *txn = cha_txn_new();
    confd_value_t v;
    char **names = NULL;
    int e = -1, n = -1;
    CHECK_RC(cha_txn_delete(txn, "/servers/server{db}"), CONFD_OK, 0);
    CHECK_RC(cha_txn_delete(txn, "/never/was"), CONFD_OK, 0); /* not an error */
    CHECK_RC(cha_txn_commit(d1, txn, NULL, 0), CONFD_OK, 0);
    CHECK_RC(cha_get(d1, "/servers/server{db}/port", &v), CONFD_ERR, CONFD_ERR_NOEXISTS);
    CHECK(lasterr_has("no such path /servers/server{db}/port"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_exists(d1, "/servers/server{db}", &e), CONFD_OK, 0);
    CHECK(e == 0, "deleted subtree: exists %d", e);
    CHECK_RC(cha_list(d1, "/servers", &names, &n), CONFD_OK, 0);
    CHECK(n == 1 && names && strcmp(names[0], "server{www}") == 0, "one child left (n %d)", n);
    cha_free_list(names);
    /* A set and a delete of the same path in one transaction: in order. */
    set_buf(&v, "temporary");
    CHECK_RC(cha_txn_set(txn, "/tmp/x", &v), CONFD_OK, 0);
    CHECK_RC(cha_txn_delete(txn, "/tmp"), CONFD_OK, 0);
    set_buf(&v, "kept");
    CHECK_RC(cha_txn_set(txn, "/tmp/y", &v), CONFD_OK, 0);
    CHECK_RC(cha_txn_commit(d1, txn, NULL, 0), CONFD_OK, 0);
    CHECK(get_is_text(d1, "/tmp/y", "kept"), "/tmp/y");
    CHECK_RC(cha_exists(d1, "/tmp/x", &e), CONFD_OK, 0);
    CHECK(e == 0, "/tmp/x deleted after its set");
    cha_txn_free(txn);
}

static void test_errors(void)
{
    struct cha_txn *txn = cha_txn_new();
    confd_value_t v;
    char **names = (char **)&v;
    int e;
    char before[CHA_TXID_SIZE], after[CHA_TXID_SIZE], small[4];
    CHECK_RC(cha_get(d1, "/no/such/leaf", &v), CONFD_ERR, CONFD_ERR_NOEXISTS);
    CHECK(lasterr_has("/no/such/leaf"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_get(d1, "no-slash", &v), CONFD_ERR, CONFD_ERR_BADPATH);
    CHECK(lasterr_has("no-slash"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_get(d1, "/a//b", &v), CONFD_ERR, CONFD_ERR_BADPATH);
    CHECK_RC(cha_get(d1, "/a/", &v), CONFD_ERR, CONFD_ERR_BADPATH);
    CHECK_RC(cha_exists(d1, "", &e), CONFD_ERR, CONFD_ERR_BADPATH);
    CHECK_RC(cha_list(d1, "x/y", &names, NULL), CONFD_ERR, CONFD_ERR_BADPATH);
    CHECK(names == NULL, "*names is NULL after a failure");
    /* A bad path fails the whole transaction: nothing of it is written. */
    CHECK_RC(cha_txid(d1, before, sizeof before), CONFD_OK, 0);
    set_buf(&v, "must-not-land");
    CHECK_RC(cha_txn_set(txn, "/good/path", &v), CONFD_OK, 0);
    CHECK_RC(cha_txn_set(txn, "bad//path", &v), CONFD_OK, 0); /* checked at commit */
    CHECK_RC(cha_txn_commit(d1, txn, NULL, 0), CONFD_ERR, CONFD_ERR_BADPATH);
    CHECK(lasterr_has("bad//path"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_exists(d1, "/good/path", &e), CONFD_OK, 0);
    CHECK(e == 0, "nothing of the failed transaction was written");
    CHECK_RC(cha_txid(d1, after, sizeof after), CONFD_OK, 0);
    CHECK(strcmp(before, after) == 0, "txid unchanged: %s -> %s", before, after);
    /* The root cannot be written. */
    cha_txn_free(txn);
    txn = cha_txn_new();
    CHECK_RC(cha_txn_delete(txn, "/"), CONFD_OK, 0);
    CHECK_RC(cha_txn_commit(d1, txn, NULL, 0), CONFD_ERR, CONFD_ERR_BADPATH);
    cha_txn_free(txn);
    /* A transaction id does not fit 4 bytes: an error, buf = "". */
    strcpy(small, "xyz");
    CHECK_RC(cha_txid(d1, small, sizeof small), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(small[0] == 0, "buf emptied");
    CHECK(lasterr_has("cannot hold transaction id"), "lasterr \"%s\"", confd_lasterr());
}

static void test_null_args(void)
{
    confd_value_t v;
    char buf[CHA_TXID_SIZE];
    int e, s;
    struct sockaddr_in a;
    CHECK_RC(cha_get(d1, NULL, &v), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("cha_get: path is NULL"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_get(d1, "/system/hostname", NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("v is NULL"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_exists(d1, NULL, &e), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK_RC(cha_exists(d1, "/system", NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("exists is NULL"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_list(d1, "/", NULL, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("names is NULL"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_txid(d1, NULL, 10), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK_RC(cha_txid(d1, buf, 0), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("sz 0"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(cha_data_node_state(d1, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    /* The socket still works after all that (nothing was sent). */
    CHECK(get_is_text(d1, "/system/hostname", "alpha"), "socket usable");
    /* Connect errors. */
    s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_RC(cha_data_connect(s, NULL, 0), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("srv is NULL"), "lasterr \"%s\"", confd_lasterr());
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(hn_free_port(NULL));
    CHECK_RC(cha_data_connect(s, (struct sockaddr *)&a, sizeof a), CONFD_ERR, CONFD_ERR_OS);
    CHECK(lasterr_has("Connection refused"), "lasterr \"%s\"", confd_lasterr());
    close(s);
}

static void test_unix_socket(void)
{
    int u = data_connect_unix(&n1);
    CHECK(u >= 0, "connect over the Unix socket");
    if (u < 0) return;
    CHECK(get_is_text(u, "/system/hostname", "alpha"), "read over the Unix socket");
    close(u);
}

static void test_primary_and_secondary(void)
{
    confd_value_t me, v;
    struct confd_ha_node p;
    struct cha_txn *txn = cha_txn_new();
    char txid[CHA_TXID_SIZE] = "", txid2[CHA_TXID_SIZE] = "";
    set_buf(&me, "n1");
    CHECK_RC(confd_ha_beprimary(h1, &me), CONFD_OK, 0);
    set_buf(&me, "n2");
    make_node4(&p, "n1", n1.ip);
    CHECK_RC(confd_ha_besecondary(h2, &me, &p, 1), CONFD_OK, 0);
    /* The secondary got the primary's data (a full copy). */
    CHECK(get_is_text(d2, "/system/hostname", "alpha"), "copied to the secondary");

    /* Synchronous replication: readable on the secondary when the commit returns. */
    set_buf(&v, "replicated");
    CHECK_RC(cha_txn_set(txn, "/repl/value", &v), CONFD_OK, 0);
    CHECK_RC(cha_txn_commit(d1, txn, txid, sizeof txid), CONFD_OK, 0);
    CHECK(get_is_text(d2, "/repl/value", "replicated"), "on the secondary");
    CHECK_RC(cha_txid(d2, txid2, sizeof txid2), CONFD_OK, 0);
    CHECK(strcmp(txid, txid2) == 0, "same txid on the secondary: %s vs %s", txid2, txid);

    /* A write on the secondary is refused with the daemon's reason, and the
       transaction keeps its operations for a retry on the primary. */
    set_buf(&v, "refused");
    CHECK_RC(cha_txn_set(txn, "/repl/other", &v), CONFD_OK, 0);
    CHECK_RC(cha_txn_commit(d2, txn, txid2, sizeof txid2), CONFD_ERR, CONFD_ERR_NOT_WRITABLE);
    CHECK(lasterr_has("secondary") && lasterr_has("n1"), "lasterr \"%s\"", confd_lasterr());
    CHECK(strcmp(confd_strerror(confd_errno), "item is not writable") == 0, "strerror");
    CHECK_RC(cha_txn_commit(d1, txn, txid2, sizeof txid2), CONFD_OK, 0);
    CHECK(get_is_text(d2, "/repl/other", "refused"), "the retry on the primary reached the secondary");
    cha_txn_free(txn);
}

static void test_node_goes_away(void)
{
    confd_value_t v;
    char buf[CHA_TXID_SIZE];
    hn_kill(&n2, SIGKILL);
    CHECK_RC(cha_get(d2, "/repl/value", &v), CONFD_EOF, CONFD_ERR_EOF);
    CHECK_RC(cha_txid(d2, buf, sizeof buf), CONFD_EOF, CONFD_ERR_EOF);
}

int main(void)
{
    int ha_port;
    confd_init("cha_data", stderr, CONFD_SILENT);
    ha_port = hn_free_port("127.0.0.2");
    if (hn_start(&n1, "127.0.0.1", ha_port, NULL) != 0 || hn_start(&n2, "127.0.0.2", ha_port, NULL) != 0) {
        printf("FAIL start: ha-node did not start\n");
        return 1; /* atexit stops whatever started */
    }
    h1 = ha_connect_tcp(&n1, TOKEN);
    h2 = ha_connect_tcp(&n2, TOKEN);
    d1 = data_connect_tcp(&n1);
    d2 = data_connect_tcp(&n2);
    if (h1 < 0 || h2 < 0 || d1 < 0 || d2 < 0) {
        printf("FAIL connect\n");
        return 1;
    }
    t_run("none_node_commit_and_get", test_none_node_commit_and_get);
    t_run("exists_and_list", test_exists_and_list);
    t_run("delete", test_delete);
    t_run("errors", test_errors);
    t_run("null_args", test_null_args);
    t_run("unix_socket", test_unix_socket);
    t_run("primary_and_secondary", test_primary_and_secondary);
    t_run("node_goes_away", test_node_goes_away);
    close(h1);
    close(h2);
    close(d1);
    close(d2);
    hn_stop(&n1);
    hn_stop(&n2);
    return t_done();
}
