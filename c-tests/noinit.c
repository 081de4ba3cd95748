/*
 * Every function called before confd_init(): CONFD_ERR with
 * CONFD_ERR_LIB_NOT_INITIALIZED (34) and a message, never a crash. Also
 * the old exported names (confd_ha_bemaster, confd_ha_beslave,
 * confd_ha_slave_dead), declared as functions here.
 */
#define CONFD_HA_OLD_NAMES_AS_FUNCTIONS 1
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static void test_errors_before_init(void)
{
    struct sockaddr_in a;
    confd_value_t id;
    struct confd_ha_node p;
    static struct confd_ha_status st;
    int s = socket(AF_INET, SOCK_STREAM, 0);

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(1);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    set_buf(&id, "n1");
    make_node4(&p, "n0", "127.0.0.1");

    CHECK(strcmp(confd_lasterr(), "") == 0, "lasterr before any failure: \"%s\"", confd_lasterr());
    CHECK(confd_errno == 0, "errno %d", confd_errno);

    CHECK_RC(confd_ha_connect(s, (struct sockaddr *)&a, sizeof a, "tok"), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK(lasterr_has("confd_init"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(confd_do_connect(s, (struct sockaddr *)&a, sizeof a, 17), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(confd_ha_beprimary(s, &id), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(confd_ha_besecondary(s, &id, &p, 1), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(confd_ha_berelay(s), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(confd_ha_benone(s), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(confd_ha_get_status(s, &st), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(confd_ha_secondary_dead(s, &id), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(confd_ha_bemaster(s, &id), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(confd_ha_beslave(s, &id, &p, 0), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(confd_ha_slave_dead(s, &id), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    /* NULL arguments before init: still 34, still no crash. */
    CHECK_RC(confd_ha_connect(-1, NULL, 0, NULL), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK_RC(confd_ha_get_status(-1, NULL), CONFD_ERR, CONFD_ERR_LIB_NOT_INITIALIZED);
    CHECK(strcmp(confd_strerror(confd_errno), "Library not initialized") == 0, "%s", confd_strerror(confd_errno));
    close(s);
}

static void test_after_init(void)
{
    confd_value_t id;
    set_buf(&id, "n1");
    confd_init("noinit", NULL, CONFD_SILENT);
    /* Initialised now: the same call fails for its real reason (a bad fd). */
    CHECK_RC(confd_ha_beprimary(-1, &id), CONFD_ERR, CONFD_ERR_OS);
    CHECK(lasterr_has("Bad file descriptor"), "lasterr \"%s\"", confd_lasterr());
    CHECK_RC(confd_ha_bemaster(-1, NULL), CONFD_ERR, CONFD_ERR_PROTOUSAGE);
    CHECK(lasterr_has("mynodeid is NULL"), "lasterr \"%s\"", confd_lasterr());
}

int main(void)
{
    t_run("errors_before_init", test_errors_before_init);
    t_run("after_init", test_after_init);
    return t_done();
}
