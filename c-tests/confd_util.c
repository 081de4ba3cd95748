/*
 * confd_lib utilities that ConfD's example HA programs call on their HA
 * paths: confd_pp_value() (snprintf semantics, every value type's text),
 * confd_free_value() (frees what malloc gave a value, NULLs the pointers)
 * and confd_fatal() (printf-style message to stderr, exit status 1; run in
 * a child process).
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* The text confd_pp_value gives v, and that its return is its length. */
static int pp_is(const confd_value_t *v, const char *want)
{
    char b[256];
    int n;
    memset(b, 'X', sizeof b);
    n = confd_pp_value(b, sizeof b, v);
    if (n != (int)strlen(want) || strcmp(b, want) != 0) {
        printf("    confd_pp_value gave \"%s\" (%d), want \"%s\" (%zu)\n", b, n, want, strlen(want));
        return 0;
    }
    return 1;
}

static void test_pp_value_forms(void)
{
    confd_value_t v, list[3];
    struct in_addr a4;
    struct in6_addr a6;
    struct confd_datetime dt = {2026, 11, 29, 22, 10, 5, 250000, 1, 30};
    struct confd_decimal64 d64 = {-1250, 2};
    struct confd_duration du = {0, 0, 1, 2, 0, 3, 0};
    unsigned char bin[] = {0x00, 0xab, 0x10};

    CONFD_SET_BUF(&v, "node-1", 6);
    CHECK(pp_is(&v, "node-1"), "C_BUF");
    CONFD_SET_STR(&v, "str");
    CHECK(pp_is(&v, "str"), "C_STR");
    CONFD_SET_INT8(&v, -8);
    CHECK(pp_is(&v, "-8"), "C_INT8");
    CONFD_SET_INT64(&v, INT64_MIN);
    CHECK(pp_is(&v, "-9223372036854775808"), "C_INT64");
    CONFD_SET_UINT64(&v, UINT64_MAX);
    CHECK(pp_is(&v, "18446744073709551615"), "C_UINT64");
    CONFD_SET_DOUBLE(&v, 2.5);
    CHECK(pp_is(&v, "2.5"), "C_DOUBLE");
    CONFD_SET_BOOL(&v, 1);
    CHECK(pp_is(&v, "true"), "C_BOOL");
    inet_pton(AF_INET, "10.1.2.3", &a4);
    CONFD_SET_IPV4(&v, a4);
    CHECK(pp_is(&v, "10.1.2.3"), "C_IPV4");
    inet_pton(AF_INET6, "2001:db8::7", &a6);
    CONFD_SET_IPV6(&v, a6);
    CHECK(pp_is(&v, "2001:db8::7"), "C_IPV6");
    CONFD_SET_ENUM_VALUE(&v, 7);
    CHECK(pp_is(&v, "enum<7>"), "C_ENUM_VALUE");
    CONFD_SET_BIT32(&v, 0x1f);
    CHECK(pp_is(&v, "bits<1f>"), "C_BIT32");
    CONFD_SET_BINARY(&v, bin, 3);
    CHECK(pp_is(&v, "00AB10"), "C_BINARY");
    CONFD_SET_HEXSTR(&v, bin, 3);
    CHECK(pp_is(&v, "00:ab:10"), "C_HEXSTR");
    CONFD_SET_DECIMAL64(&v, d64);
    CHECK(pp_is(&v, "-12.50"), "C_DECIMAL64");
    CONFD_SET_DATETIME(&v, dt);
    CHECK(pp_is(&v, "2026-11-29T22:10:05.250000+01:30"), "C_DATETIME");
    CONFD_SET_DURATION(&v, du);
    CHECK(pp_is(&v, "P1DT2H3S"), "C_DURATION");
    CONFD_SET_XMLTAG(&v, 1234, 5);
    CHECK(pp_is(&v, "tag<1234>"), "C_XMLTAG");
    CONFD_SET_QNAME(&v, "p", 1, "n", 1);
    CHECK(pp_is(&v, "p:n"), "C_QNAME");
    CONFD_SET_UINT16(&list[0], 1);
    CONFD_SET_BUF(&list[1], "b", 1);
    CONFD_SET_BOOL(&list[2], 0);
    CONFD_SET_LIST(&v, list, 3);
    CHECK(pp_is(&v, "[1 b false]"), "C_LIST");
    CONFD_SET_NOEXISTS(&v);
    CHECK(pp_is(&v, ""), "C_NOEXISTS");
    CHECK(pp_is(NULL, ""), "NULL value");
}

static void test_pp_value_is_snprintf(void)
{
    confd_value_t v;
    char b[8];
    int n;

    CONFD_SET_BUF(&v, "hello world", 11);
    memset(b, 'X', sizeof b);
    n = confd_pp_value(b, 4, &v);
    CHECK(n == 11, "returns the whole length (%d)", n);
    CHECK(strcmp(b, "hel") == 0 && b[4] == 'X', "wrote 3 bytes and a NUL, nothing past bufsiz: \"%s\"", b);
    n = confd_pp_value(NULL, 0, &v);
    CHECK(n == 11, "NULL buf, bufsiz 0: length only (%d)", n);
    memset(b, 'X', sizeof b);
    n = confd_pp_value(b, 1, &v);
    CHECK(n == 11 && b[0] == '\0' && b[1] == 'X', "bufsiz 1: only the NUL");
    n = confd_pp_value(b, -5, &v);
    CHECK(n == 11, "negative bufsiz writes nothing (%d)", n);
    n = confd_ns_pp_value(b, sizeof b, &v, 1234);
    CHECK(n == 11 && strcmp(b, "hello w") == 0, "confd_ns_pp_value is confd_pp_value: \"%s\"", b);
}

static unsigned char *dup_bytes(const char *s)
{
    size_t n = strlen(s);
    unsigned char *p = malloc(n + 1);
    memcpy(p, s, n + 1);
    return p;
}

static void test_free_value(void)
{
    confd_value_t v, *elems;
    /* C_BUF from malloc: freed, pointer NULLed (valgrind checks the free). */
    CONFD_SET_BUF(&v, dup_bytes("id"), 2);
    confd_free_value(&v);
    CHECK(v.type == C_BUF && v.val.buf.ptr == NULL && v.val.buf.size == 0, "buf freed");
    /* A second call is harmless: the pointer is NULL now. */
    confd_free_value(&v);
    /* C_QNAME: both buffers. */
    CONFD_SET_QNAME(&v, dup_bytes("p"), 1, dup_bytes("n"), 1);
    confd_free_value(&v);
    CHECK(v.val.qname.prefix.ptr == NULL && v.val.qname.name.ptr == NULL, "qname freed");
    /* C_LIST of malloc'ed C_BUFs: elements and array. */
    elems = malloc(2 * sizeof *elems);
    CONFD_SET_BUF(&elems[0], dup_bytes("a"), 1);
    CONFD_SET_INT32(&elems[1], 4);
    CONFD_SET_LIST(&v, elems, 2);
    confd_free_value(&v);
    CHECK(v.val.list.ptr == NULL && v.val.list.size == 0, "list freed");
    /* Types without memory are left alone. */
    CONFD_SET_INT32(&v, 9);
    confd_free_value(&v);
    CHECK(v.type == C_INT32 && v.val.i32 == 9, "int untouched");
    confd_free_value(NULL);
}

static void test_fatal(void)
{
    int p[2], status = 0;
    char out[128];
    ssize_t n, got = 0;
    pid_t pid;

    CHECK(pipe(p) == 0, "pipe");
    pid = fork();
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        /* Integer, string and double arguments: the variadic arguments
           must reach the formatter untouched. */
        confd_fatal("fatal: %d %s %.2f %c\n", 42, "node-x", 2.5, 'z');
    }
    close(p[1]);
    while (got < (ssize_t)sizeof out - 1 && (n = read(p[0], out + got, sizeof out - 1 - got)) > 0) got += n;
    out[got] = '\0';
    close(p[0]);
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1, "exit status 1 (status 0x%x)", status);
    CHECK(strcmp(out, "fatal: 42 node-x 2.50 z\n") == 0, "stderr \"%s\"", out);
}

int main(void)
{
    confd_init("confd_util", stderr, CONFD_SILENT);
    t_run("pp_value_forms", test_pp_value_forms);
    t_run("pp_value_is_snprintf", test_pp_value_is_snprintf);
    t_run("free_value", test_free_value);
    t_run("fatal", test_fatal);
    return t_done();
}
