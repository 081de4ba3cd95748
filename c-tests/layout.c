/*
 * Layout and constants: sizeof/offsetof of every public struct (x86-64
 * values of ConfD's headers, spec §C), every enum value, every error
 * number with its confd_strerror() text (spec §B.3/§B.4), the ports, the
 * value macros, and the library version (header == library == Cargo.toml).
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include <confd_events.h>

#ifndef CARGO_PKG_VERSION
#error "build with -DCARGO_PKG_VERSION=... (the Makefile does)"
#endif

#define SZ(T, n) CHECK(sizeof(T) == (n), "sizeof(%s) = %zu, want %d", #T, sizeof(T), (n))
#define OFF(T, f, n) CHECK(offsetof(T, f) == (n), "offsetof(%s, %s) = %zu, want %d", #T, #f, offsetof(T, f), (n))
#define EQ(a, b) CHECK((long long)(a) == (long long)(b), "%s = %lld, want %lld", #a, (long long)(a), (long long)(b))

/* Compile-time too: a wrong layout must not even build. */
_Static_assert(sizeof(confd_value_t) == 40, "confd_value_t is 40 bytes");
_Static_assert(offsetof(confd_value_t, val) == 8, "val at 8");
_Static_assert(sizeof(struct confd_ha_node) == 320, "confd_ha_node is 320 bytes");
_Static_assert(sizeof(struct confd_ha_status) == 81616, "confd_ha_status is 81616 bytes");

static void test_value_layout(void)
{
    confd_value_t v;
    SZ(confd_value_t, 40);
    SZ(struct confd_value, 40);
    CHECK(_Alignof(confd_value_t) == 8, "align %zu", _Alignof(confd_value_t));
    OFF(confd_value_t, type, 0);
    OFF(confd_value_t, val, 8);
    SZ(v.type, 4);
    SZ(v.val, 32);
    /* C_BUF: size at byte 8, ptr at byte 16 of the value. */
    CHECK((char *)&v.val.buf.size - (char *)&v == 8, "buf.size");
    CHECK((char *)&v.val.buf.ptr - (char *)&v == 16, "buf.ptr");
    CHECK((char *)&v.val.c_buf.ptr - (char *)&v == 16, "c_buf.ptr");
    SZ(confd_buf_t, 16);
    SZ(confd_buf_const_t, 16);
    OFF(confd_buf_t, size, 0);
    OFF(confd_buf_t, ptr, 8);
    SZ(struct xml_tag, 8);
    OFF(struct xml_tag, tag, 0);
    OFF(struct xml_tag, ns, 4);
    SZ(struct confd_qname, 32);
    OFF(struct confd_qname, name, 16);
    SZ(struct confd_datetime, 16);
    OFF(struct confd_datetime, year, 0);
    OFF(struct confd_datetime, month, 2);
    OFF(struct confd_datetime, sec, 6);
    OFF(struct confd_datetime, micro, 8);
    OFF(struct confd_datetime, timezone, 12);
    OFF(struct confd_datetime, timezone_minutes, 13);
    SZ(struct confd_date, 6);
    OFF(struct confd_date, timezone, 4);
    SZ(struct confd_time, 12);
    OFF(struct confd_time, micro, 4);
    OFF(struct confd_time, timezone, 8);
    SZ(struct confd_duration, 28);
    OFF(struct confd_duration, micros, 24);
    SZ(struct confd_list, 16);
    OFF(struct confd_list, ptr, 8);
    SZ(struct confd_vptr, 16);
    OFF(struct confd_vptr, valp, 8);
    SZ(struct confd_ipv4_prefix, 8);
    OFF(struct confd_ipv4_prefix, len, 4);
    SZ(struct confd_ipv6_prefix, 20);
    OFF(struct confd_ipv6_prefix, len, 16);
    SZ(struct confd_decimal64, 16);
    OFF(struct confd_decimal64, fraction_digits, 8);
    SZ(struct confd_identityref, 8);
    OFF(struct confd_identityref, id, 4);
    SZ(struct confd_dotted_quad, 4);
    /* Every union member is at offset 0 of val. */
    CHECK((void *)&v.val.i64 == (void *)&v.val, "i64");
    CHECK((void *)&v.val.ip6 == (void *)&v.val, "ip6");
    CHECK((void *)&v.val.hkp == (void *)&v.val, "hkp");
    CHECK((void *)&v.val.oidp == (void *)&v.val, "oidp");
    CHECK((void *)&v.val.enumhash == (void *)&v.val, "enumhash");
    CHECK(sizeof v.val.hkp == sizeof(void *) && sizeof v.val.oidp == sizeof(void *), "pointers");
}

/* Types of confd_lib.h that the events use (ConfD's field lists; the
   sizes follow from them on x86-64). */
static void test_lib_struct_layout(void)
{
    SZ(confd_tag_value_t, 48);
    OFF(confd_tag_value_t, v, 8);
    SZ(struct confd_ip, 20);
    OFF(struct confd_ip, ip, 4);
    SZ(struct confd_error, 32);
    OFF(struct confd_error, str, 16);
    SZ(struct confd_action_ctx, 120);
    OFF(struct confd_action_ctx, error, 24);
    OFF(struct confd_action_ctx, acb, 112);
    SZ(struct confd_user_info, 992);
    OFF(struct confd_user_info, port, 20);
    OFF(struct confd_user_info, username, 22);
    OFF(struct confd_user_info, usid, 280);
    OFF(struct confd_user_info, context, 284);
    OFF(struct confd_user_info, proto, 316);
    OFF(struct confd_user_info, actx, 320);
    OFF(struct confd_user_info, logintime, 440);
    OFF(struct confd_user_info, lmode, 448);
    OFF(struct confd_user_info, snmp_v3_ctx, 452);
    OFF(struct confd_user_info, clearpass, 707);
    OFF(struct confd_user_info, flags, 964);
    OFF(struct confd_user_info, refc, 984);
    SZ(struct confd_snmp_oid, 516);
    OFF(struct confd_snmp_oid, len, 512);
    OFF(struct confd_snmp_varbind, val, 776); /* type, then the 772-byte name union */
    EQ(MAXUSERNAMELEN, 255); EQ(MAXCTXLEN, 32); EQ(MAX_DAEMON_NAME_LEN, 255);
    EQ(CONFD_RUNNING, 2); EQ(CONFD_OPERATIONAL, 4); EQ(CONFD_PRE_COMMIT_RUNNING, 6);
}

static void test_ha_layout(void)
{
    struct confd_ha_node n;
    SZ(struct confd_ha_node, 320);
    CHECK(_Alignof(struct confd_ha_node) == 8, "align");
    OFF(struct confd_ha_node, nodeid, 0);
    OFF(struct confd_ha_node, af, 40);
    OFF(struct confd_ha_node, addr, 48);
    OFF(struct confd_ha_node, buf, 64);
    OFF(struct confd_ha_node, addr_buf, 192);
    SZ(n.addr, 16);
    SZ(n.buf, 128);
    SZ(n.addr_buf, 128);
    CHECK((void *)&n.addr.ip4 == (void *)&n.addr.ip6 && (void *)&n.addr.str == (void *)&n.addr, "addr union");

    SZ(struct confd_ha_status, 81616);
    OFF(struct confd_ha_status, state, 0);
    OFF(struct confd_ha_status, nodes, 8);
    OFF(struct confd_ha_status, num_nodes, 81608);
    CHECK(sizeof(((struct confd_ha_status *)0)->nodes) / sizeof(struct confd_ha_node) == 255, "255 nodes");
    SZ(enum confd_ha_status_state, 4);
}

static void test_events_layout(void)
{
    struct confd_notification n;
    SZ(struct confd_ha_notification, 328);
    OFF(struct confd_ha_notification, type, 0);
    OFF(struct confd_ha_notification, data, 8);
    CHECK((void *)&n.n.hnot.data.secondary_died == (void *)&n.n.hnot.data.slave_arrived, "aliases");
    SZ(n.n.hnot.data, 320);
    OFF(struct confd_notification, type, 0);
    OFF(struct confd_notification, n, 8);
    CHECK((char *)&n.n.hnot - (char *)&n == 8, "hnot at 8");
    /* NSO 6.2.5's struct: 8464 bytes on x86-64 (its largest member is the
       audit event: logno, user[MAXUSERNAMELEN], msg[BUFSIZ], usid). */
    SZ(struct confd_notification, 8 + 8456);
    SZ(n.type, 8);
    SZ(confd_notification_type, 8);
    SZ(struct confd_audit_notification, 8456);
    OFF(struct confd_audit_notification, user, 4);
    OFF(struct confd_audit_notification, msg, 259);
    OFF(struct confd_audit_notification, usid, 8452);
    SZ(struct confd_syslog_notification, 8200);
    OFF(struct confd_syslog_notification, msg, 8);
    SZ(struct confd_progress_notification, 8392);
    OFF(struct confd_progress_notification, timestamp, 8);
    OFF(struct confd_progress_notification, context, 40);
    OFF(struct confd_progress_notification, trace_id, 48);
    OFF(struct confd_progress_notification, msg, 136);
    OFF(struct confd_progress_notification, package, 8384);
    SZ(struct confd_commit_diff_notification, 1528);
    OFF(struct confd_commit_diff_notification, uinfo, 8);
    OFF(struct confd_commit_diff_notification, tctx, 1000);
    OFF(struct confd_commit_diff_notification, comment, 1012);
    OFF(struct confd_commit_diff_notification, label, 1268);
    OFF(struct confd_commit_failed_notification, v, 8);
    SZ(struct confd_commit_failed_notification, 264);
    OFF(struct confd_snmpa_notification, port, 28);
    OFF(struct confd_snmpa_notification, vb, 48);
    SZ(struct confd_subagent_notification, 36);
    OFF(struct confd_forward_notification, uinfo, 40);
    SZ(struct confd_stream_notification, 48);
    OFF(struct confd_stream_notification, values, 24);
    /* Every member of the union starts at offset 8 of the event. */
    CHECK((char *)&n.n.audit - (char *)&n == 8 && (char *)&n.n.compaction - (char *)&n == 8 &&
              (char *)&n.n.cq_progress - (char *)&n == 8 && (char *)&n.n.audit_network - (char *)&n == 8,
          "union members at 8");
    SZ(struct confd_notifications_data, 112);
    OFF(struct confd_notifications_data, heartbeat_interval, 0);
    OFF(struct confd_notifications_data, health_check_interval, 4);
    OFF(struct confd_notifications_data, stream_name, 8);
    OFF(struct confd_notifications_data, start_time, 16);
    OFF(struct confd_notifications_data, stop_time, 56);
    OFF(struct confd_notifications_data, xpath_filter, 96);
    OFF(struct confd_notifications_data, usid, 104);
    OFF(struct confd_notifications_data, verbosity, 108);
    SZ(enum confd_ha_info_type, 4);
    /* enum confd_ha_info_type and old names */
    EQ(CONFD_HA_INFO_NOPRIMARY, 1); EQ(CONFD_HA_INFO_SECONDARY_DIED, 2); EQ(CONFD_HA_INFO_SECONDARY_ARRIVED, 3);
    EQ(CONFD_HA_INFO_SECONDARY_INITIALIZED, 4); EQ(CONFD_HA_INFO_IS_PRIMARY, 5); EQ(CONFD_HA_INFO_IS_NONE, 6);
    EQ(CONFD_HA_INFO_BESECONDARY_RESULT, 7); EQ(CONFD_HA_INFO_NOMASTER, 1); EQ(CONFD_HA_INFO_SLAVE_DIED, 2);
    EQ(CONFD_HA_INFO_SLAVE_ARRIVED, 3); EQ(CONFD_HA_INFO_SLAVE_INITIALIZED, 4); EQ(CONFD_HA_INFO_IS_MASTER, 5);
    EQ(CONFD_HA_INFO_BESLAVE_RESULT, 7);
    /* enum confd_notification_type, spec §C.6 */
    EQ(CONFD_NOTIF_AUDIT, 1); EQ(CONFD_NOTIF_DAEMON, 2); EQ(CONFD_NOTIF_SYSLOG, 2); EQ(CONFD_NOTIF_TAKEOVER_SYSLOG, 4);
    EQ(CONFD_NOTIF_SYSLOG_TAKEOVER, 6); EQ(CONFD_NOTIF_COMMIT_SIMPLE, 8); EQ(CONFD_NOTIF_COMMIT_DIFF, 16);
    EQ(CONFD_NOTIF_USER_SESSION, 32); EQ(CONFD_NOTIF_HA_INFO, 64); EQ(CONFD_NOTIF_SUBAGENT_INFO, 128);
    EQ(CONFD_NOTIF_COMMIT_FAILED, 256); EQ(CONFD_NOTIF_SNMPA, 512); EQ(CONFD_NOTIF_FORWARD_INFO, 1024);
    EQ(CONFD_NOTIF_NETCONF, 2048); EQ(CONFD_NOTIF_DEVEL, 4096); EQ(CONFD_NOTIF_HEARTBEAT, 8192);
    EQ(CONFD_NOTIF_CONFIRMED_COMMIT, 1 << 14); EQ(CONFD_NOTIF_UPGRADE_EVENT, 1 << 15);
    EQ(CONFD_NOTIF_COMMIT_PROGRESS, 1 << 16); EQ(CONFD_NOTIF_AUDIT_SYNC, 1 << 17);
    EQ(CONFD_NOTIF_HEALTH_CHECK, 1 << 18); EQ(CONFD_NOTIF_STREAM_EVENT, 1 << 19);
    EQ(CONFD_NOTIF_HA_INFO_SYNC, 1048576); EQ(NCS_NOTIF_PACKAGE_RELOAD, 1 << 21); EQ(NCS_NOTIF_CQ_PROGRESS, 1 << 22);
    EQ(CONFD_NOTIF_REOPEN_LOGS, 1 << 23); EQ(CONFD_NOTIF_PROGRESS, 1 << 24); EQ(NCS_NOTIF_CALL_HOME_INFO, 1 << 25);
    EQ(CONFD_NOTIF_JSONRPC, 1 << 26); EQ(CONFD_NOTIF_WEBUI, 1 << 27); EQ(NCS_NOTIF_AUDIT_NETWORK, 1 << 28);
    EQ(NCS_NOTIF_AUDIT_NETWORK_SYNC, 1 << 29); EQ(CONFD_NOTIF_COMPACTION, 1 << 30);
    EQ(CONFD_NOTIF_SYSTEM_GOING_DOWN, 2147483648u);
    /* 64-bit constants, as in ConfD 8.x / NSO 6.x. */
    SZ(CONFD_NOTIF_AUDIT, 8); SZ(CONFD_NOTIF_SYSTEM_GOING_DOWN, 8);
    CHECK(CONFD_NOTIF_SYSTEM_GOING_DOWN > 0, "bit 31 is a positive 64-bit mask");
    EQ(CONFD_VERBOSITY_NORMAL, 0); EQ(CONFD_VERBOSITY_VERBOSE, 1); EQ(CONFD_VERBOSITY_VERY_VERBOSE, 2);
    EQ(CONFD_VERBOSITY_DEBUG, 3);
}

static void test_enums(void)
{
    /* enum confd_vtype, spec §C.1 */
    EQ(C_NOEXISTS, 1); EQ(C_XMLTAG, 2); EQ(C_SYMBOL, 3); EQ(C_STR, 4); EQ(C_BUF, 5);
    EQ(C_INT8, 6); EQ(C_INT16, 7); EQ(C_INT32, 8); EQ(C_INT64, 9);
    EQ(C_UINT8, 10); EQ(C_UINT16, 11); EQ(C_UINT32, 12); EQ(C_UINT64, 13);
    EQ(C_DOUBLE, 14); EQ(C_IPV4, 15); EQ(C_IPV6, 16); EQ(C_BOOL, 17); EQ(C_QNAME, 18);
    EQ(C_DATETIME, 19); EQ(C_DATE, 20); EQ(C_TIME, 23); EQ(C_DURATION, 27);
    EQ(C_ENUM_VALUE, 28); EQ(C_ENUM_HASH, 28); EQ(C_BIT32, 29); EQ(C_BIT64, 30); EQ(C_LIST, 31);
    EQ(C_XMLBEGIN, 32); EQ(C_XMLEND, 33); EQ(C_OBJECTREF, 34); EQ(C_UNION, 35); EQ(C_PTR, 36);
    EQ(C_CDBBEGIN, 37); EQ(C_OID, 38); EQ(C_BINARY, 39); EQ(C_IPV4PREFIX, 40); EQ(C_IPV6PREFIX, 41);
    EQ(C_DEFAULT, 42); EQ(C_DECIMAL64, 43); EQ(C_IDENTITYREF, 44); EQ(C_XMLBEGINDEL, 45);
    EQ(C_DQUAD, 46); EQ(C_HEXSTR, 47); EQ(C_IPV4_AND_PLEN, 48); EQ(C_IPV6_AND_PLEN, 49);
    EQ(C_BITBIG, 50); EQ(C_XMLMOVEFIRST, 51); EQ(C_XMLMOVEAFTER, 52); EQ(C_EMPTY, 53);
    EQ(C_MAXTYPE, 54);
    SZ(enum confd_vtype, 4);
    /* enum confd_debug_level */
    EQ(CONFD_SILENT, 0); EQ(CONFD_DEBUG, 1); EQ(CONFD_TRACE, 2); EQ(CONFD_PROTO_TRACE, 3);
    /* enum confd_ha_status_state and the old names */
    EQ(CONFD_HA_STATE_NONE, 1); EQ(CONFD_HA_STATE_SECONDARY, 2); EQ(CONFD_HA_STATE_PRIMARY, 3);
    EQ(CONFD_HA_STATE_SECONDARY_RELAY, 4); EQ(CONFD_HA_STATE_SLAVE, 2); EQ(CONFD_HA_STATE_MASTER, 3);
    EQ(CONFD_HA_STATE_SLAVE_RELAY, 4);
    /* return codes, spec §B.3 */
    EQ(CONFD_DELAYED_RESPONSE, 2); EQ(CONFD_ACCUMULATE, 1); EQ(CONFD_OK, 0); EQ(CONFD_ERR, -1);
    EQ(CONFD_EOF, -2); EQ(CONFD_VALIDATION_WARN, -3); EQ(CONFD_ALREADY_LOCKED, -4); EQ(CONFD_IN_USE, -5);
    /* ports, limits, versions */
    EQ(CONFD_PORT, 4565); EQ(NCS_PORT, 4569); EQ(MAXDEPTH, 20); EQ(MAXKEYLEN, 9);
    EQ(CONFD_LIB_PROTO_VSN, 87); EQ(CONFD_LIB_VSN, 0x08070000); EQ(CONFD_LIB_API_VSN, 0x08070000);
    EQ(CONFD_TIMEZONE_UNDEF, -111);
    /* The *_VSN_STR strings say the same as the numbers. */
    {
        char b[16];
        snprintf(b, sizeof b, "%08x", CONFD_LIB_VSN);
        CHECK(strcmp(b, CONFD_LIB_VSN_STR) == 0, "CONFD_LIB_VSN_STR %s", CONFD_LIB_VSN_STR);
        snprintf(b, sizeof b, "%08x", CONFD_LIB_API_VSN);
        CHECK(strcmp(b, CONFD_LIB_API_VSN_STR) == 0, "CONFD_LIB_API_VSN_STR %s", CONFD_LIB_API_VSN_STR);
        snprintf(b, sizeof b, "%d", CONFD_LIB_PROTO_VSN);
        CHECK(strcmp(b, CONFD_LIB_PROTO_VSN_STR) == 0, "CONFD_LIB_PROTO_VSN_STR %s", CONFD_LIB_PROTO_VSN_STR);
    }
}

/* The old MASTER/SLAVE names are enumerators, as in ConfD's headers: a
   #define of them would make these #ifdefs true. */
#if defined(CONFD_HA_STATE_MASTER) || defined(CONFD_HA_STATE_SLAVE) || defined(CONFD_HA_STATE_SLAVE_RELAY) || \
    defined(CONFD_HA_INFO_NOMASTER) || defined(CONFD_HA_INFO_SLAVE_DIED) || defined(CONFD_HA_INFO_IS_MASTER) || \
    defined(CONFD_HA_INFO_BESLAVE_RESULT) || defined(CONFD_HA_INFO_SLAVE_ARRIVED) || \
    defined(CONFD_HA_INFO_SLAVE_INITIALIZED)
#error "the old MASTER/SLAVE names must be enumerators, not macros"
#endif
static void test_old_names_are_enumerators(void)
{
    enum confd_ha_status_state s = CONFD_HA_STATE_MASTER;
    enum confd_ha_info_type t = CONFD_HA_INFO_SLAVE_DIED;
    EQ(s, CONFD_HA_STATE_PRIMARY);
    EQ(t, CONFD_HA_INFO_SECONDARY_DIED);
    /* A switch over both spellings would not compile if they were
       distinct values; ConfD's header has the same values. */
    switch (t) {
    case CONFD_HA_INFO_NOMASTER: case CONFD_HA_INFO_SLAVE_DIED: case CONFD_HA_INFO_SLAVE_ARRIVED:
    case CONFD_HA_INFO_SLAVE_INITIALIZED: case CONFD_HA_INFO_IS_MASTER: case CONFD_HA_INFO_IS_NONE:
    case CONFD_HA_INFO_BESLAVE_RESULT:
        break;
    }
}

/* spec §B.4: every number and its confd_strerror() text */
static const struct { int code; int num; const char *text; } errs[] = {
    {CONFD_ERR_NOEXISTS, 1, "item does not exist"},
    {CONFD_ERR_ALREADY_EXISTS, 2, "item already exists"},
    {CONFD_ERR_ACCESS_DENIED, 3, "access denied"},
    {CONFD_ERR_NOT_WRITABLE, 4, "item is not writable"},
    {CONFD_ERR_BADTYPE, 5, "item has a bad/wrong type"},
    {CONFD_ERR_NOTCREATABLE, 6, "item is not creatable"},
    {CONFD_ERR_NOTDELETABLE, 7, "item is not deletable"},
    {CONFD_ERR_BADPATH, 8, "badly formatted or nonexistent path"},
    {CONFD_ERR_NOSTACK, 9, "cannot pop an empty stack"},
    {CONFD_ERR_LOCKED, 10, "locked"},
    {CONFD_ERR_INUSE, 11, "in use"},
    {CONFD_ERR_NOTSET, 12, "notset"},
    {CONFD_ERR_NON_UNIQUE, 13, "non unique"},
    {CONFD_ERR_BAD_KEYREF, 14, "bad keyref"},
    {CONFD_ERR_TOO_FEW_ELEMS, 15, "too few elems"},
    {CONFD_ERR_TOO_MANY_ELEMS, 16, "too many elems"},
    {CONFD_ERR_BADSTATE, 17, "operation in wrong state"},
    {CONFD_ERR_INTERNAL, 18, "internal error"},
    {CONFD_ERR_EXTERNAL, 19, "external error"},
    {CONFD_ERR_MALLOC, 20, "Failed to allocate"},
    {CONFD_ERR_PROTOUSAGE, 21, "Bad protocol usage or unexpected retval"},
    {CONFD_ERR_NOSESSION, 22, "A session must be established prior to this command"},
    {CONFD_ERR_TOOMANYTRANS, 23, "Too many transactions"},
    {CONFD_ERR_OS, 24, "system call failed"},
    {CONFD_ERR_HA_CONNECT, 25, "Failed to connect to remote HA node"},
    {CONFD_ERR_HA_CLOSED, 26, "Remote HA node closed socket to us"},
    {CONFD_ERR_HA_BADFXS, 27, "Remote HA node has incompatible config to us"},
    {CONFD_ERR_HA_BADTOKEN, 28, "Remote HA node has bad credentials"},
    {CONFD_ERR_HA_BADNAME, 29, "remote HA node has other/wrong name"},
    {CONFD_ERR_HA_BIND, 30, "failed to bind HA socket"},
    {CONFD_ERR_HA_NOTICK, 31, "Remote HA node doesn't send us any ticks"},
    {CONFD_ERR_VALIDATION_WARNING, 32, "Validation warnings"},
    {CONFD_ERR_SUBAGENT_DOWN, 33, "Subagent down"},
    {CONFD_ERR_LIB_NOT_INITIALIZED, 34, "Library not initialized"},
    {CONFD_ERR_TOO_MANY_SESSIONS, 35, "Maximum number of sessions reached"},
    {CONFD_ERR_BAD_CONFIG, 36, "Error in a configuration"},
    {CONFD_ERR_RESOURCE_DENIED, 37, "Data provider returned CONFD_ERRCODE_RESOURCE_DENIED"},
    {CONFD_ERR_INCONSISTENT_VALUE, 38, "Data provider returned CONFD_ERRCODE_INCONSISTENT_VALUE"},
    {CONFD_ERR_APPLICATION_INTERNAL, 39, "Data provider returned CONFD_ERRCODE_APPLICATION_INTERNAL"},
    {CONFD_ERR_UNSET_CHOICE, 40, "No case selected for mandatory choice"},
    {CONFD_ERR_MUST_FAILED, 41, "Unsatisfied must constraint"},
    {CONFD_ERR_MISSING_INSTANCE, 42, "Required instance does not exist"},
    {CONFD_ERR_INVALID_INSTANCE, 43, "Instance does not conform to path filters"},
    {CONFD_ERR_UNAVAILABLE, 44, "Unavailable functionality"},
    {CONFD_ERR_EOF, 45, "Lost connection to ConfD"},
    {CONFD_ERR_NOTMOVABLE, 46, "item is not movable"},
    {CONFD_ERR_HA_WITH_UPGRADE, 47, "HA secondary not allowed during upgrade"},
    {CONFD_ERR_TIMEOUT, 48, "Operation timed out"},
    {CONFD_ERR_ABORTED, 49, "Operation was aborted"},
    {CONFD_ERR_XPATH, 50, "XPath compilation/evaluation failed"},
    {CONFD_ERR_NOT_IMPLEMENTED, 51, "Operation not implemented"},
    {CONFD_ERR_HA_BADVSN, 52, "Remote HA node has incompatible version"},
    {CONFD_ERR_POLICY_FAILED, 53, "Policy expression evaluated to false"},
    {CONFD_ERR_POLICY_COMPILATION_FAILED, 54, "Policy XPath expression could not be compiled"},
    {CONFD_ERR_POLICY_EVALUATION_FAILED, 55, "Policy expression failed XPath evaluation"},
    {NCS_ERR_CONNECTION_REFUSED, 56, "Unknown error"},
    {CONFD_ERR_START_FAILED, 57, "Failed to proceed to next start phase"},
    {CONFD_ERR_DATA_MISSING, 58, "Data provider returned CONFD_ERRCODE_DATA_MISSING"},
    {CONFD_ERR_CLI_CMD, 59, "CLI command error"},
    {CONFD_ERR_UPGRADE_IN_PROGRESS, 60, "Not allowed during upgrade"},
    {CONFD_ERR_NOTRANS, 61, "Transaction not found"},
    {NCS_ERR_SERVICE_CONFLICT, 62, "Unknown error"},
    {NCS_ERR_CONNECTION_TIMEOUT, 63, "Unknown error"},
    {NCS_ERR_CONNECTION_CLOSED, 64, "Unknown error"},
    {NCS_ERR_DEVICE, 65, "Unknown error"},
    {NCS_ERR_TEMPLATE, 66, "Unknown error"},
    {CONFD_ERR_NO_MOUNT_ID, 67, "Path is ambiguous due to traversing a mount point"},
    {CONFD_ERR_STALE_INSTANCE, 68, "Required instance does not exist"},
    {CONFD_ERR_HA_BADCONFIG, 69, "Remote HA node has bad configuration"},
    {CONFD_ERR_TRANSACTION_CONFLICT, 70, "Conflict detected"},
    {CONFD_ERR_HA_ABORT, 71, "Transaction aborted"},
    {CONFD_ERR_BAD_PAYLOAD, 72, "Error in payload data"},
    {CONFD_ERR_CHECKSUM_MISMATCH, 73, "Checksum mismatch"},
};

static void test_error_numbers_and_texts(void)
{
    unsigned i;
    for (i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        const char *t = confd_strerror(errs[i].code);
        CHECK(errs[i].code == errs[i].num, "error %s: %d, want %d", errs[i].text, errs[i].code, errs[i].num);
        CHECK(t && strcmp(t, errs[i].text) == 0, "confd_strerror(%d) = \"%s\", want \"%s\"",
              errs[i].num, t ? t : "(null)", errs[i].text);
    }
    CHECK(i == 73, "%u error numbers", i);
    CHECK(strcmp(confd_strerror(0), "Unknown error") == 0, "0");
    CHECK(strcmp(confd_strerror(74), "Unknown error") == 0, "74");
    CHECK(strcmp(confd_strerror(-5), "Unknown error") == 0, "-5");
    CHECK(strcmp(confd_strerror(1 << 30), "Unknown error") == 0, "huge");
}

static void test_version(void)
{
    const char *v = confd_ha_lib_version();
    CHECK(v && strcmp(v, CONFD_HA_VERSION) == 0, "library %s, header %s", v, CONFD_HA_VERSION);
    CHECK(strcmp(CONFD_HA_VERSION, CARGO_PKG_VERSION) == 0, "header %s, Cargo.toml %s",
          CONFD_HA_VERSION, CARGO_PKG_VERSION);
}

static void test_value_macros(void)
{
    confd_value_t v;
    struct in_addr a4;
    struct in6_addr a6, a6b;
    const char *ro = "ro";
    char rw[] = "rw";

    CONFD_SET_BUF(&v, rw, 2);
    EQ(v.type, C_BUF); EQ(CONFD_GET_BUFSIZE(&v), 2);
    CHECK(CONFD_GET_BUFPTR(&v) == (unsigned char *)rw, "bufptr");
    CHECK(CONFD_GET_CBUFPTR(&v) == rw, "cbufptr");
    CONFD_SET_CBUF(&v, ro, 2);
    EQ(v.type, C_BUF); CHECK(v.val.c_buf.ptr == (const unsigned char *)ro, "c_buf");
    CONFD_SET_STR(&v, ro);
    EQ(v.type, C_STR); CHECK(v.val.c_s == ro, "c_s");
    CONFD_SET_INT8(&v, -8); EQ(v.type, C_INT8); EQ(CONFD_GET_INT8(&v), -8);
    CONFD_SET_INT16(&v, -16); EQ(v.type, C_INT16); EQ(CONFD_GET_INT16(&v), -16);
    CONFD_SET_INT32(&v, -32); EQ(v.type, C_INT32); EQ(CONFD_GET_INT32(&v), -32);
    CONFD_SET_INT64(&v, INT64_MIN); EQ(v.type, C_INT64); CHECK(CONFD_GET_INT64(&v) == INT64_MIN, "i64");
    CONFD_SET_UINT8(&v, 200); EQ(v.type, C_UINT8); EQ(CONFD_GET_UINT8(&v), 200);
    CONFD_SET_UINT16(&v, 60000); EQ(v.type, C_UINT16); EQ(CONFD_GET_UINT16(&v), 60000);
    CONFD_SET_UINT32(&v, 4000000000u); EQ(v.type, C_UINT32); EQ(CONFD_GET_UINT32(&v), 4000000000u);
    CONFD_SET_UINT64(&v, UINT64_MAX); EQ(v.type, C_UINT64); CHECK(CONFD_GET_UINT64(&v) == UINT64_MAX, "u64");
    CONFD_SET_BOOL(&v, 1); EQ(v.type, C_BOOL); EQ(CONFD_GET_BOOL(&v), 1);
    CONFD_SET_DOUBLE(&v, 2.5); EQ(v.type, C_DOUBLE); CHECK(CONFD_GET_DOUBLE(&v) == 2.5, "d");
    inet_pton(AF_INET, "10.1.2.3", &a4);
    CONFD_SET_IPV4(&v, a4); EQ(v.type, C_IPV4); CHECK(CONFD_GET_IPV4(&v).s_addr == a4.s_addr, "ip");
    inet_pton(AF_INET6, "2001:db8::1", &a6);
    CONFD_SET_IPV6(&v, a6); EQ(v.type, C_IPV6);
    a6b = CONFD_GET_IPV6(&v); CHECK(memcmp(&a6b, &a6, 16) == 0, "ip6");
    CONFD_SET_ENUM_VALUE(&v, 7); EQ(v.type, C_ENUM_VALUE); EQ(CONFD_GET_ENUM_VALUE(&v), 7);
    CONFD_SET_BINARY(&v, rw, 1); EQ(v.type, C_BINARY); EQ(CONFD_GET_BINARY_SIZE(&v), 1);
    CONFD_SET_NOEXISTS(&v); EQ(v.type, C_NOEXISTS);
}

/* Every CONFD_SET_* / CONFD_GET_* macro takes its value pointer once: an
   argument with a side effect (p++) moves the pointer by exactly one. */
static void test_value_macros_evaluate_once(void)
{
    confd_value_t vs[4], *p;
    struct confd_datetime dt = {2026, 11, 29, 22, 10, 5, 0, 0, 0};
    struct confd_decimal64 d64 = {1250, 2};
    unsigned char bits[2] = {0, 0};
    unsigned pos = 3;
    int n = 0;

#define ONCE(stmt)                                                                  \
    do {                                                                             \
        p = vs;                                                                      \
        stmt;                                                                        \
        CHECK(p == vs + 1, "%s evaluated its value argument %d times", #stmt, (int)(p - vs)); \
    } while (0)
    ONCE(CONFD_SET_INT32(p++, 5));
    ONCE(n = CONFD_GET_INT32(p++));
    EQ(n, 5);
    ONCE(CONFD_SET_BUF(p++, "ab", 2));
    ONCE(n = (int)CONFD_GET_BUFSIZE(p++));
    EQ(n, 2);
    ONCE(CONFD_SET_DATETIME(p++, dt));
    ONCE(n = CONFD_GET_DATETIME(p++).year);
    EQ(n, 2026);
    ONCE(CONFD_SET_DECIMAL64(p++, d64));
    ONCE(n = (int)CONFD_GET_DECIMAL64(p++).value);
    EQ(n, 1250);
    ONCE(CONFD_SET_XMLBEGIN(p++, 11, 22));
    ONCE(n = (int)CONFD_GET_XML(p++));
    EQ(n, 11);
    ONCE(CONFD_SET_QNAME(p++, "pre", 3, "name", 4));
    ONCE(n = (int)CONFD_GET_QNAME_NAME_SIZE(p++));
    EQ(n, 4);
    ONCE(CONFD_SET_NOEXISTS(p++));
    EQ(vs[0].type, C_NOEXISTS);
#undef ONCE
    /* The bit helpers take the position once. */
    CONFD_BITBIG_SET_BIT(bits, pos++);
    EQ(pos, 4); EQ(bits[0], 8);
    CHECK(CONFD_BITBIG_BIT_IS_SET(bits, 3), "bit 3");
    CONFD_BITBIG_CLR_BIT(bits, 3);
    EQ(bits[0], 0);
    /* A const value can be read. */
    {
        const confd_value_t *cv = &vs[0];
        CONFD_SET_UINT16(&vs[0], 7);
        EQ(CONFD_GET_UINT16(cv), 7);
    }
}

static void test_tag_value_macros(void)
{
    confd_tag_value_t tv[2], *tp;
    confd_value_t v;

    tp = tv;
    CONFD_SET_TAG_INT64(tp++, 42, -5);
    CHECK(tp == tv + 1, "tag macro took its pointer once");
    EQ(CONFD_GET_TAG_TAG(&tv[0]), 42); EQ(CONFD_GET_TAG_NS(&tv[0]), 0);
    EQ(CONFD_GET_INT64(CONFD_GET_TAG_VALUE(&tv[0])), -5);
    CONFD_SET_TAG_XMLBEGIN(&tv[1], 7, 99);
    EQ(tv[1].tag.tag, 7); EQ(tv[1].tag.ns, 99); EQ(tv[1].v.type, C_XMLBEGIN);
    EQ(CONFD_GET_XMLBEGIN_NS(&tv[1].v), 99);
    CONFD_SET_TAG_NS(&tv[0], 5);
    EQ(tv[0].tag.ns, 5);
    CONFD_SET_BOOL(&v, 1);
    CONFD_SET_TAG_VALUE(&tv[0], 9, &v);
    EQ(tv[0].tag.tag, 9); EQ(tv[0].v.type, C_BOOL);
}

int main(void)
{
    t_run("value_layout", test_value_layout);
    t_run("lib_struct_layout", test_lib_struct_layout);
    t_run("ha_layout", test_ha_layout);
    t_run("events_layout", test_events_layout);
    t_run("enums_and_constants", test_enums);
    t_run("error_numbers_and_texts", test_error_numbers_and_texts);
    t_run("version", test_version);
    t_run("value_macros", test_value_macros);
    t_run("value_macros_evaluate_once", test_value_macros_evaluate_once);
    t_run("tag_value_macros", test_tag_value_macros);
    t_run("old_names_are_enumerators", test_old_names_are_enumerators);
    return t_done();
}
