/*
 * A ConfD-style event printer: it switches over every kind of event and
 * touches the members and fields ConfD's programs use (audit, syslog,
 * commit, commit diff, user session, HA, subagent, commit failed, SNMP,
 * forward, confirmed commit, upgrade, progress, stream, compaction, CQ
 * progress, call-home, audit-network), so it compiles only if our
 * confd_events.h declares all of them with ConfD's names. Run on a few
 * hand-made events, it checks that the member a type selects is the one
 * read.
 */
#include <arpa/inet.h>
#include <string.h>

#include "harness.h"
#include <confd_events.h>

static const char *describe(struct confd_notification *n, char *out, size_t len)
{
    char v[64];
    switch (n->type) {
    case CONFD_NOTIF_AUDIT:
        snprintf(out, len, "audit %d %s %d %s", n->n.audit.logno, n->n.audit.user, n->n.audit.usid, n->n.audit.msg);
        break;
    case CONFD_NOTIF_DAEMON:
    case CONFD_NOTIF_NETCONF:
    case CONFD_NOTIF_DEVEL:
    case CONFD_NOTIF_JSONRPC:
    case CONFD_NOTIF_WEBUI:
    case CONFD_NOTIF_TAKEOVER_SYSLOG:
        snprintf(out, len, "syslog %d %d %s", n->n.syslog.prio, n->n.syslog.logno, n->n.syslog.msg);
        break;
    case CONFD_NOTIF_COMMIT_SIMPLE:
        snprintf(out, len, "commit db %d %s usid %d flags %d diff %d", n->n.commit.database,
                 n->n.commit.uinfo.username, n->n.commit.uinfo.usid, n->n.commit.flags,
                 n->n.commit.diff_available);
        break;
    case CONFD_NOTIF_COMMIT_DIFF:
        snprintf(out, len, "diff db %d %s %s %s %d %p", n->n.commit_diff.database, n->n.commit_diff.uinfo.username,
                 n->n.commit_diff.comment, n->n.commit_diff.label,
                 (n->n.commit_diff.flags & CONFD_NOTIF_COMMIT_FLAG_CONFIRMED_EXTENDED) != 0,
                 (void *)n->n.commit_diff.tctx);
        break;
    case CONFD_NOTIF_USER_SESSION:
        snprintf(out, len, "user %d %s %d %d ctx %s proto %d", n->n.user_sess.type, n->n.user_sess.uinfo.username,
                 n->n.user_sess.uinfo.usid, n->n.user_sess.database, n->n.user_sess.uinfo.context,
                 n->n.user_sess.uinfo.proto);
        break;
    case CONFD_NOTIF_HA_INFO: {
        struct confd_ha_notification *h = &n->n.hnot;
        switch (h->type) {
        case CONFD_HA_INFO_NOMASTER:
            snprintf(out, len, "ha noprimary %d", h->data.nomaster);
            break;
        case CONFD_HA_INFO_SLAVE_DIED:
            confd_pp_value(v, sizeof v, &h->data.slave_died.nodeid);
            snprintf(out, len, "ha died %s", v);
            break;
        case CONFD_HA_INFO_SLAVE_ARRIVED:
            confd_pp_value(v, sizeof v, &h->data.slave_arrived.nodeid);
            snprintf(out, len, "ha arrived %s", v);
            break;
        case CONFD_HA_INFO_SLAVE_INITIALIZED:
            snprintf(out, len, "ha initialized %d", h->data.cdb_initialized_by_copy);
            break;
        case CONFD_HA_INFO_IS_MASTER:
            snprintf(out, len, "ha primary");
            break;
        case CONFD_HA_INFO_IS_NONE:
            snprintf(out, len, "ha none");
            break;
        case CONFD_HA_INFO_BESLAVE_RESULT:
            snprintf(out, len, "ha result %d", h->data.beslave_result);
            break;
        default:
            snprintf(out, len, "ha unknown %d", h->type);
        }
        break;
    }
    case CONFD_NOTIF_SUBAGENT_INFO:
        snprintf(out, len, "subagent %s %s", n->n.subagent.type == CONFD_SUBAGENT_INFO_UP ? "up" : "down",
                 n->n.subagent.name);
        break;
    case CONFD_NOTIF_COMMIT_FAILED: {
        struct confd_commit_failed_notification *cf = &n->n.cfail;
        char dst[INET6_ADDRSTRLEN] = "";
        if (cf->provider == CONFD_DP_NETCONF)
            inet_ntop(cf->v.nc.ip.af, &cf->v.nc.ip.ip.v4, dst, sizeof dst);
        snprintf(out, len, "cfail %d %d %s:%d %s", cf->provider, cf->dbname, dst, cf->v.nc.port,
                 cf->provider == CONFD_DP_EXTERNAL ? cf->v.daemon_name : "");
        break;
    }
    case CONFD_NOTIF_SNMPA: {
        char dst[INET6_ADDRSTRLEN] = "";
        struct confd_ip *ip = &n->n.snmpa.ip;
        inet_ntop(ip->af, ip->af == AF_INET6 ? (void *)&ip->ip.v6 : (void *)&ip->ip.v4, dst, sizeof dst);
        snprintf(out, len, "snmpa %d %d %s:%d %d vars %d %p", n->n.snmpa.pdu_type, n->n.snmpa.request_id, dst,
                 n->n.snmpa.port, n->n.snmpa.error_status, n->n.snmpa.num_variables,
                 n->n.snmpa.v1_trap ? (void *)&n->n.snmpa.v1_trap->enterprise : NULL);
        break;
    }
    case CONFD_NOTIF_FORWARD_INFO:
        snprintf(out, len, "forward %d %s %s", n->n.forward.type, n->n.forward.target, n->n.forward.uinfo.username);
        break;
    case CONFD_NOTIF_HEARTBEAT:
        snprintf(out, len, "heartbeat");
        break;
    case CONFD_NOTIF_HEALTH_CHECK:
        snprintf(out, len, "health check");
        break;
    case CONFD_NOTIF_CONFIRMED_COMMIT:
        snprintf(out, len, "confirm %d %u %s", n->n.confirm.type, n->n.confirm.timeout, n->n.confirm.uinfo.username);
        break;
    case CONFD_NOTIF_UPGRADE_EVENT:
        snprintf(out, len, "upgrade %d", n->n.upgrade.event == CONFD_UPGRADE_COMMITED);
        break;
    case CONFD_NOTIF_COMMIT_PROGRESS:
    case CONFD_NOTIF_PROGRESS:
        snprintf(out, len, "progress %d %llu %llu %d %d %d %s %s", n->n.progress.type, n->n.progress.timestamp,
                 n->n.progress.duration, n->n.progress.usid, n->n.progress.tid, n->n.progress.datastore,
                 n->n.progress.trace_id, n->n.progress.msg);
        break;
    case CONFD_NOTIF_STREAM_EVENT:
        if (n->n.stream.type == CONFD_STREAM_NOTIFICATION_EVENT && n->n.stream.nvalues > 0)
            confd_pp_value(v, sizeof v, CONFD_GET_TAG_VALUE(&n->n.stream.values[0]));
        else
            v[0] = '\0';
        snprintf(out, len, "stream %d %d %s %s", n->n.stream.type, n->n.stream.event_time.year, v,
                 n->n.stream.replay_error ? n->n.stream.replay_error : "");
        break;
    case CONFD_NOTIF_COMPACTION:
        snprintf(out, len, "compaction %d %d %llu", n->n.compaction.dbfile, n->n.compaction.type,
                 (unsigned long long)n->n.compaction.fsize_end);
        break;
    case NCS_NOTIF_CQ_PROGRESS:
        snprintf(out, len, "cq %d %llu %d", n->n.cq_progress.type, (unsigned long long)n->n.cq_progress.cq_id,
                 n->n.cq_progress.nfailed_devices);
        break;
    case NCS_NOTIF_CALL_HOME_INFO:
        snprintf(out, len, "call home %d %d", n->n.call_home.type, n->n.call_home.port);
        break;
    case NCS_NOTIF_AUDIT_NETWORK:
        snprintf(out, len, "audit network %d %d %s", n->n.audit_network.usid, n->n.audit_network.tid,
                 n->n.audit_network.trace_id);
        break;
    case NCS_NOTIF_PACKAGE_RELOAD:
    case CONFD_NOTIF_REOPEN_LOGS:
    case CONFD_NOTIF_SYSTEM_GOING_DOWN:
        snprintf(out, len, "no data 0x%llx", (unsigned long long)n->type);
        break;
    default:
        snprintf(out, len, "unknown 0x%llx", (unsigned long long)n->type);
    }
    return out;
}

static struct confd_notification n;
static char out[256];

static void test_members_by_type(void)
{
    memset(&n, 0, sizeof n);
    n.type = CONFD_NOTIF_AUDIT;
    n.n.audit.logno = 3;
    strcpy(n.n.audit.user, "admin");
    n.n.audit.usid = 12;
    strcpy(n.n.audit.msg, "hello");
    CHECK(strcmp(describe(&n, out, sizeof out), "audit 3 admin 12 hello") == 0, "%s", out);

    memset(&n, 0, sizeof n);
    n.type = CONFD_NOTIF_HA_INFO;
    n.n.hnot.type = CONFD_HA_INFO_SECONDARY_ARRIVED;
    CONFD_SET_BUF(&n.n.hnot.data.secondary_arrived.nodeid, "n2", 2);
    CHECK(strcmp(describe(&n, out, sizeof out), "ha arrived n2") == 0, "%s", out);

    memset(&n, 0, sizeof n);
    n.type = CONFD_NOTIF_COMMIT_SIMPLE;
    n.n.commit.database = CONFD_RUNNING;
    strcpy(n.n.commit.uinfo.username, "oper");
    n.n.commit.uinfo.usid = 7;
    CHECK(strcmp(describe(&n, out, sizeof out), "commit db 2 oper usid 7 flags 0 diff 0") == 0, "%s", out);

    memset(&n, 0, sizeof n);
    n.type = CONFD_NOTIF_SYSTEM_GOING_DOWN;
    CHECK(strcmp(describe(&n, out, sizeof out), "no data 0x80000000") == 0, "%s", out);

    /* The audit event ends where NSO's struct ends. */
    CHECK((char *)&n.n.audit.usid + sizeof n.n.audit.usid - (char *)&n == (long)sizeof n, "audit is the largest");
}

int main(void)
{
    confd_init("notif_switch", stderr, CONFD_SILENT);
    t_run("members_by_type", test_members_by_type);
    return t_done();
}
