/*
 * A ConfD-style HA program, as a user would write it against ConfD's
 * confd_lib.h / confd_ha.h: print a node's HA status.
 *
 *   ha_status --version
 *   ha_status [-a ADDR] [-p PORT] [-u UNIX_PATH] [-t TOKEN]
 *
 * Built by c-tests/link-line.sh with the README's compile-and-link line.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <confd_lib.h>
#include <confd_ha.h>

static struct confd_ha_status st; /* 80 KB: not on the stack */

static const char *state_name(int s)
{
    switch (s) {
    case CONFD_HA_STATE_NONE: return "none";
    case CONFD_HA_STATE_SECONDARY: return "secondary";
    case CONFD_HA_STATE_PRIMARY: return "primary";
    case CONFD_HA_STATE_SECONDARY_RELAY: return "relay";
    default: return "?";
    }
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1", *path = NULL, *token = "secret";
    int port = CONFD_PORT, opt, s, rc, i;

    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        confd_init("ha_status", NULL, CONFD_SILENT);
        printf("libconfd_ha %s (%s)\n", confd_ha_lib_version(), confd_strerror(CONFD_ERR_HA_BADTOKEN));
        return 0;
    }
    while ((opt = getopt(argc, argv, "a:p:u:t:")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'u': path = optarg; break;
        case 't': token = optarg; break;
        default: fprintf(stderr, "usage: %s [-a ADDR] [-p PORT] [-u PATH] [-t TOKEN]\n", argv[0]); return 2;
        }
    }
    confd_init(argv[0], stderr, CONFD_SILENT);
    if (path) {
        struct sockaddr_un un;
        memset(&un, 0, sizeof un);
        un.sun_family = AF_UNIX;
        strncpy(un.sun_path, path, sizeof un.sun_path - 1);
        s = socket(AF_UNIX, SOCK_STREAM, 0);
        rc = confd_ha_connect(s, (struct sockaddr *)&un, sizeof un, token);
    } else {
        struct sockaddr_in in;
        memset(&in, 0, sizeof in);
        in.sin_family = AF_INET;
        in.sin_port = htons(port);
        inet_pton(AF_INET, addr, &in.sin_addr);
        s = socket(AF_INET, SOCK_STREAM, 0);
        rc = confd_ha_connect(s, (struct sockaddr *)&in, sizeof in, token);
    }
    if (rc != CONFD_OK || confd_ha_get_status(s, &st) != CONFD_OK) {
        fprintf(stderr, "error %d (%s): %s\n", confd_errno, confd_strerror(confd_errno), confd_lasterr());
        close(s);
        return 1;
    }
    printf("state %s, %d node(s)\n", state_name(st.state), st.num_nodes);
    for (i = 0; i < st.num_nodes; i++) {
        char a[INET6_ADDRSTRLEN] = "";
        struct confd_ha_node *n = &st.nodes[i];
        if (n->af == AF_INET) inet_ntop(AF_INET, &n->addr.ip4, a, sizeof a);
        else if (n->af == AF_INET6) inet_ntop(AF_INET6, &n->addr.ip6, a, sizeof a);
        else if (n->addr.str) snprintf(a, sizeof a, "%s", n->addr.str);
        printf("  %s at %s\n", n->nodeid.type == C_BUF ? CONFD_GET_CBUFPTR(&n->nodeid) : "?", a);
    }
    close(s);
    return 0;
}
