//! `confd_events.h`: ConfD's notification API (`confd_lib_events`), spec
//! §C.5–C.7, §D.7 and §H.6.
//!
//! The declarations are those of ConfD 8.x / NSO 6.x: a 64-bit
//! `confd_notification_type`, and a `struct confd_notification` whose union
//! declares a member for every kind of event, so programs written for
//! ConfD compile unchanged. The library decodes HA_INFO (with
//! HA_INFO_SYNC) and HEARTBEAT events; any other event is returned with
//! its `type` set and its union untouched.

// The C contract of every exported function is in its doc comment's fixed
// phrases, which the header carries.
#![allow(clippy::missing_safety_doc)]
#![allow(non_camel_case_types)]

use super::lib::{
    confd_datetime, confd_ha_node, confd_ip, confd_snmp_oid, confd_snmp_varbind, confd_tag_value_t,
    confd_trans_ctx, confd_user_info, confd_value_t, connect_and_hello, fill_ha_node, DbnameInt,
    CONFD_OK, MAXUSERNAMELEN, MAX_DAEMON_NAME_LEN,
};
use super::{check_init, fail, ffi_boundary, trace, tri, usage};
use crate::client::events::{self as evc, Event};
use crate::errcode::CONFD_ERR_NOT_IMPLEMENTED;
use crate::error::Error;
use crate::proto::frame::FdStream;
use crate::proto::ha::{HaEvent, Subscription};
use crate::proto::hello::CLIENT_EVENT_MGR;
use libc::sockaddr;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong};
use std::ptr::{addr_of, addr_of_mut};

/// An event kind: a bit set of the `CONFD_NOTIF_*` bits (64 bits wide, as
/// in ConfD 8.x / NSO 6.x; ConfD 7.x and older used a 4-byte enum). The
/// subscription mask is an OR of them; a read event's `type` is exactly
/// one of them.
pub type confd_notification_type = i64;

/// `BUFSIZ` of the C library (stdio.h), the size of the message buffers in
/// the events' structs.
const BUFSIZ: usize = libc::BUFSIZ as usize;

/// Longest subagent name (with its NUL) in a subagent event.
pub const MAXAGENTNAMELEN: usize = 32;
/// Longest forwarding target name (with its NUL) in a forward event.
pub const MAXTARGETNAMELEN: usize = 32;
/// Size of the comment buffer of a commit-diff event.
pub const MAX_COMMENT_LEN: usize = 256;
/// Size of the label buffer of a commit-diff event.
pub const MAX_LABEL_LEN: usize = 256;
/// Size of the trace id buffer of progress and audit-network events.
pub const MAX_TRACE_ID_LEN: usize = 65;

/// `flags` of commit events: a confirmed commit.
pub const CONFD_NOTIF_COMMIT_FLAG_CONFIRMED: c_int = 1;
/// `flags` of commit events: an extended confirmed commit.
pub const CONFD_NOTIF_COMMIT_FLAG_CONFIRMED_EXTENDED: c_int = 1 << 1;

/// `enum confd_ha_info_type` (declared in the header's raw text with its
/// old MASTER/SLAVE names as enumerators) as it sits in memory.
pub type HaInfoTypeInt = c_int;

/// The data of an HA event; `type` of `struct confd_ha_notification` says
/// which member is valid (none for IS_PRIMARY / IS_NONE).
#[repr(C)]
#[derive(Clone, Copy)]
pub union confd_ha_notification_data {
    pub noprimary: c_int,
    pub secondary_died: confd_ha_node,
    pub secondary_arrived: confd_ha_node,
    pub cdb_initialized_by_copy: c_int,
    pub besecondary_result: c_int,
    /// Old name of `noprimary`.
    pub nomaster: c_int,
    /// Old name of `secondary_died`.
    pub slave_died: confd_ha_node,
    /// Old name of `secondary_arrived`.
    pub slave_arrived: confd_ha_node,
    /// Old name of `besecondary_result`.
    pub beslave_result: c_int,
}

/// An HA event (`n.hnot`, 328 bytes on x86-64).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_ha_notification {
    pub r#type: HaInfoTypeInt,
    pub data: confd_ha_notification_data,
}

/// Subagent events (`n.subagent.type`).
#[repr(C)]
pub enum confd_subagent_info_type {
    CONFD_SUBAGENT_INFO_UP = 1,
    CONFD_SUBAGENT_INFO_DOWN = 2,
}
/// `enum confd_subagent_info_type` as it sits in memory.
pub type SubagentInfoTypeInt = c_int;

/// CONFD_NOTIF_SUBAGENT_INFO (`n.subagent`). Never filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_subagent_notification {
    pub r#type: SubagentInfoTypeInt,
    pub name: [c_char; MAXAGENTNAMELEN],
}

/// Forwarding events (`n.forward.type`).
#[repr(C)]
pub enum confd_forward_info_type {
    CONFD_FORWARD_INFO_UP = 1,
    CONFD_FORWARD_INFO_DOWN = 2,
    CONFD_FORWARD_INFO_FAILED = 3,
}
/// `enum confd_forward_info_type` as it sits in memory.
pub type ForwardInfoTypeInt = c_int;

/// CONFD_NOTIF_FORWARD_INFO (`n.forward`). Never filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_forward_notification {
    pub r#type: ForwardInfoTypeInt,
    pub target: [c_char; MAXTARGETNAMELEN],
    pub uinfo: confd_user_info,
}

/// CONFD_NOTIF_DAEMON, _NETCONF, _DEVEL, _JSONRPC, _WEBUI log lines
/// (`n.syslog`). Never filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_syslog_notification {
    pub prio: c_int,
    pub logno: c_int,
    pub msg: [c_char; BUFSIZ],
}

/// CONFD_NOTIF_AUDIT (`n.audit`), the largest member of the union. Never
/// filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_audit_notification {
    pub logno: c_int,
    pub user: [c_char; MAXUSERNAMELEN],
    pub msg: [c_char; BUFSIZ],
    pub usid: c_int,
}

/// The NETCONF agent whose commit failed.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_netconf_failed_commit {
    pub ip: confd_ip,
    pub port: u16,
}

/// Which data provider failed a commit (`n.cfail.provider`).
#[repr(C)]
pub enum confd_data_provider {
    CONFD_DP_CDB = 1,
    CONFD_DP_NETCONF = 2,
    CONFD_DP_EXTERNAL = 3,
    CONFD_DP_SNMPGW = 4,
    CONFD_DP_JAVASCRIPT = 5,
}
/// `enum confd_data_provider` as it sits in memory.
pub type DataProviderInt = c_int;

/// The provider part of a commit-failed event; `provider` says which.
#[repr(C)]
#[derive(Clone, Copy)]
pub union confd_commit_failed_provider {
    pub nc: confd_netconf_failed_commit,
    pub daemon_name: [c_char; MAX_DAEMON_NAME_LEN],
}

/// CONFD_NOTIF_COMMIT_FAILED (`n.cfail`). Never filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_commit_failed_notification {
    pub provider: DataProviderInt,
    pub dbname: DbnameInt,
    pub v: confd_commit_failed_provider,
}

/// CONFD_NOTIF_COMMIT_SIMPLE (`n.commit`). Never filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_commit_notification {
    pub database: DbnameInt,
    pub diff_available: c_int,
    pub uinfo: confd_user_info,
    pub flags: c_int,
}

/// CONFD_NOTIF_COMMIT_DIFF (`n.commit_diff`). Never filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_commit_diff_notification {
    pub database: DbnameInt,
    pub uinfo: confd_user_info,
    pub tctx: *mut confd_trans_ctx,
    pub flags: c_int,
    pub comment: [c_char; MAX_COMMENT_LEN],
    pub label: [c_char; MAX_LABEL_LEN],
}

/// Confirmed-commit events (`n.confirm.type`).
#[repr(C)]
pub enum confd_confirmed_commit_type {
    CONFD_CONFIRMED_COMMIT = 1,
    CONFD_CONFIRMING_COMMIT = 2,
    CONFD_ABORT_COMMIT = 3,
}
/// `enum confd_confirmed_commit_type` as it sits in memory.
pub type ConfirmedCommitTypeInt = c_int;

/// CONFD_NOTIF_CONFIRMED_COMMIT (`n.confirm`; `timeout` in seconds). Never
/// filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_confirmed_commit_notification {
    pub r#type: ConfirmedCommitTypeInt,
    pub timeout: c_uint,
    pub uinfo: confd_user_info,
}

/// In-service upgrade phases (`n.upgrade.event`).
#[repr(C)]
pub enum confd_upgrade_event_type {
    CONFD_UPGRADE_INIT_STARTED = 1,
    CONFD_UPGRADE_INIT_SUCCEEDED = 2,
    CONFD_UPGRADE_PERFORMED = 3,
    CONFD_UPGRADE_COMMITED = 4,
    CONFD_UPGRADE_ABORTED = 5,
}
/// `enum confd_upgrade_event_type` as it sits in memory.
pub type UpgradeEventTypeInt = c_int;

/// CONFD_NOTIF_UPGRADE_EVENT (`n.upgrade`). Never filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_upgrade_notification {
    pub event: UpgradeEventTypeInt,
}

/// Progress event kinds (`n.progress.type`).
#[repr(C)]
pub enum confd_progress_event_type {
    CONFD_PROGRESS_START = 1,
    CONFD_PROGRESS_STOP = 2,
    CONFD_PROGRESS_INFO = 3,
}
/// `enum confd_progress_event_type` as it sits in memory.
pub type ProgressEventTypeInt = c_int;

/// CONFD_NOTIF_PROGRESS and CONFD_NOTIF_COMMIT_PROGRESS (`n.progress`;
/// times in microseconds), with NSO's fields. Never filled by this
/// library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_progress_notification {
    pub r#type: ProgressEventTypeInt,
    pub timestamp: c_ulonglong,
    pub duration: c_ulonglong,
    pub usid: c_int,
    pub tid: c_int,
    pub datastore: DbnameInt,
    pub context: *mut c_char,
    pub trace_id: [c_char; MAX_TRACE_ID_LEN],
    pub subsystem: *mut c_char,
    pub phase: *mut c_char,
    pub msg: [c_char; BUFSIZ],
    pub annotation: *mut c_char,
    pub service: *mut c_char,
    pub service_phase: *mut c_char,
    pub commit_queue_id: c_ulonglong,
    pub node: *mut c_char,
    pub device: *mut c_char,
    pub device_phase: *mut c_char,
    pub package: *mut c_char,
}

/// User session events (`n.user_sess.type`).
#[repr(C)]
pub enum confd_user_sess_type {
    CONFD_USER_SESS_START = 1,
    CONFD_USER_SESS_STOP = 2,
    CONFD_USER_SESS_LOCK = 3,
    CONFD_USER_SESS_UNLOCK = 4,
    CONFD_USER_SESS_START_TRANS = 5,
    CONFD_USER_SESS_STOP_TRANS = 6,
}
/// `enum confd_user_sess_type` as it sits in memory.
pub type UserSessTypeInt = c_int;

/// CONFD_NOTIF_USER_SESSION (`n.user_sess`). Never filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_user_sess_notification {
    pub r#type: UserSessTypeInt,
    pub uinfo: confd_user_info,
    pub database: DbnameInt,
}

/// SNMP PDU kinds (`n.snmpa.pdu_type`).
#[repr(C)]
pub enum confd_snmp_pdu_type {
    CONFD_SNMPA_PDU_V1TRAP = 1,
    CONFD_SNMPA_PDU_V2TRAP = 2,
    CONFD_SNMPA_PDU_INFORM = 3,
    CONFD_SNMPA_PDU_GET_RESPONSE = 4,
    CONFD_SNMPA_PDU_GET_REQUEST = 5,
    CONFD_SNMPA_PDU_GET_NEXT_REQUEST = 6,
    CONFD_SNMPA_PDU_REPORT = 7,
    CONFD_SNMPA_PDU_GET_BULK_REQUEST = 8,
    CONFD_SNMPA_PDU_SET_REQUEST = 9,
}
/// `enum confd_snmp_pdu_type` as it sits in memory.
pub type SnmpPduTypeInt = c_int;

/// The SNMPv1 trap part of an SNMP event.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_v1_trap_info {
    pub enterprise: confd_snmp_oid,
    pub generic_trap: c_int,
    pub specific_trap: c_int,
    pub time_stamp: c_int,
}

/// CONFD_NOTIF_SNMPA (`n.snmpa`). Never filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_snmpa_notification {
    pub pdu_type: SnmpPduTypeInt,
    pub request_id: c_int,
    pub ip: confd_ip,
    pub port: u16,
    pub error_status: c_int,
    pub error_index: c_int,
    pub num_variables: c_int,
    pub vb: *mut confd_snmp_varbind,
    pub v1_trap: *mut confd_v1_trap_info,
}

/// Notification stream events (`n.stream.type`).
#[repr(C)]
pub enum confd_stream_notif_type {
    CONFD_STREAM_NOTIFICATION_EVENT = 1,
    CONFD_STREAM_NOTIFICATION_COMPLETE = 2,
    CONFD_STREAM_REPLAY_COMPLETE = 3,
    CONFD_STREAM_REPLAY_FAILED = 4,
}
/// `enum confd_stream_notif_type` as it sits in memory.
pub type StreamNotifTypeInt = c_int;

/// CONFD_NOTIF_STREAM_EVENT (`n.stream`). Never filled by this library
/// (stream subscriptions are refused).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_stream_notification {
    pub r#type: StreamNotifTypeInt,
    pub event_time: confd_datetime,
    pub values: *mut confd_tag_value_t,
    pub nvalues: c_int,
    pub replay_error: *mut c_char,
}

/// Commit queue item states (`n.cq_progress.type`).
#[repr(C)]
pub enum ncs_cq_progress_notif_type {
    NCS_CQ_ITEM_WAITING = 1,
    NCS_CQ_ITEM_EXECUTING = 2,
    NCS_CQ_ITEM_LOCKED = 3,
    NCS_CQ_ITEM_COMPLETED = 4,
    NCS_CQ_ITEM_FAILED = 5,
    NCS_CQ_ITEM_DELETED = 6,
}
/// `enum ncs_cq_progress_notif_type` as it sits in memory.
pub type CqProgressTypeInt = c_int;

/// NCS_NOTIF_CQ_PROGRESS (`n.cq_progress`). Never filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ncs_cq_progress_notification {
    pub r#type: CqProgressTypeInt,
    pub timestamp: confd_datetime,
    pub cq_id: u64,
    pub cq_tag: *mut c_char,
    pub completed_devices: *mut *mut c_char,
    pub ncompleted_devices: c_int,
    pub transient_devices: *mut *mut c_char,
    pub ntransient_devices: c_int,
    pub failed_devices: *mut *mut c_char,
    pub failed_reasons: *mut *mut c_char,
    pub nfailed_devices: c_int,
    pub completed_services: *mut *mut c_char,
    pub completed_services_completed_devices: *mut *mut confd_value_t,
    pub ncompleted_services: c_int,
    pub failed_services: *mut *mut c_char,
    pub failed_services_completed_devices: *mut *mut confd_value_t,
    pub failed_services_failed_devices: *mut *mut confd_value_t,
    pub nfailed_services: c_int,
    pub trace_id: *mut c_char,
}

/// NETCONF call-home events (`n.call_home.type`).
#[repr(C)]
pub enum ncs_call_home_info_type {
    CALL_HOME_DEVICE_CONNECTED = 1,
    CALL_HOME_UNKNOWN_DEVICE = 2,
    CALL_HOME_DEVICE_DISCONNECTED = 3,
}
/// `enum ncs_call_home_info_type` as it sits in memory.
pub type CallHomeInfoTypeInt = c_int;

/// NCS_NOTIF_CALL_HOME_INFO (`n.call_home`). Never filled by this library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ncs_call_home_notification {
    pub r#type: CallHomeInfoTypeInt,
    pub device: *mut c_char,
    pub ip: confd_ip,
    pub port: u16,
    pub ssh_host_key: *mut c_char,
    pub ssh_key_alg: *mut c_char,
}

/// NCS_NOTIF_AUDIT_NETWORK (`n.audit_network`). Never filled by this
/// library.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ncs_audit_network_notification {
    pub usid: c_int,
    pub tid: c_int,
    pub user: *mut c_char,
    pub device: *mut c_char,
    pub trace_id: [c_char; MAX_TRACE_ID_LEN],
    pub config: *mut c_char,
}

/// The datastore file a compaction event is about.
#[repr(C)]
pub enum confd_compaction_dbfile {
    CONFD_COMPACTION_A_CDB = 1,
    CONFD_COMPACTION_O_CDB = 2,
    CONFD_COMPACTION_S_CDB = 3,
}
/// `enum confd_compaction_dbfile` as it sits in memory.
pub type CompactionDbfileInt = c_int;

/// What started a compaction.
#[repr(C)]
pub enum confd_compaction_type {
    CONFD_COMPACTION_AUTOMATIC = 1,
    CONFD_COMPACTION_MANUAL = 2,
}
/// `enum confd_compaction_type` as it sits in memory.
pub type CompactionTypeInt = c_int;

/// CONFD_NOTIF_COMPACTION (`n.compaction`): sizes in bytes, times in
/// microseconds. Never filled by this library; the member types are this
/// library's choice (ConfD documents the names and units only).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_compaction_notification {
    pub dbfile: CompactionDbfileInt,
    pub r#type: CompactionTypeInt,
    pub fsize_start: u64,
    pub fsize_end: u64,
    pub fsize_last: u64,
    pub time_start: u64,
    pub duration: u64,
    pub ntrans: u64,
}

/// The event part of `struct confd_notification`: one member per kind of
/// event. This library fills only `hnot` (CONFD_NOTIF_HA_INFO); a heartbeat
/// has no member.
#[repr(C)]
#[derive(Clone, Copy)]
pub union confd_notification_union {
    pub audit: confd_audit_notification,
    pub syslog: confd_syslog_notification,
    pub commit: confd_commit_notification,
    pub commit_diff: confd_commit_diff_notification,
    pub user_sess: confd_user_sess_notification,
    /// Valid when `type` is CONFD_NOTIF_HA_INFO.
    pub hnot: confd_ha_notification,
    pub subagent: confd_subagent_notification,
    pub forward: confd_forward_notification,
    pub cfail: confd_commit_failed_notification,
    pub snmpa: confd_snmpa_notification,
    pub confirm: confd_confirmed_commit_notification,
    pub upgrade: confd_upgrade_notification,
    pub progress: confd_progress_notification,
    pub stream: confd_stream_notification,
    pub cq_progress: ncs_cq_progress_notification,
    pub call_home: ncs_call_home_notification,
    pub audit_network: ncs_audit_network_notification,
    pub compaction: confd_compaction_notification,
}

/// One event read by `confd_read_notification()` (8464 bytes on x86-64
/// Linux, as NSO 6.2.5's): an 8-byte `type` at offset 0, the union at 8.
/// The library writes `type` (all 8 bytes) and, for HA events, `n.hnot`
/// (bytes 8-335) — nothing else, so a struct declared by an older header
/// (a 4-byte type followed by padding, the union at 8) works too on
/// little-endian machines.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_notification {
    pub r#type: confd_notification_type,
    pub n: confd_notification_union,
}

/// Extra subscription parameters for `confd_notifications_connect2()`
/// (112 bytes on x86-64). Intervals are in milliseconds; values below 1000
/// are raised to 1000.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_notifications_data {
    pub heartbeat_interval: c_int,
    pub health_check_interval: c_int,
    pub stream_name: *mut c_char,
    pub start_time: confd_value_t,
    pub stop_time: confd_value_t,
    pub xpath_filter: *mut c_char,
    pub usid: c_int,
    pub verbosity: VerbosityInt,
}

/// `enum confd_progress_verbosity` (confd_lib.h) as it sits in memory.
pub type VerbosityInt = c_int;

/// The event bits (`CONFD_NOTIF_*`, `NCS_NOTIF_*`), by bit number; the
/// header defines each as `(1LL << bit)` (build.rs writes them from this
/// table).
pub const NOTIF_BITS: &[(&str, u32)] = &[
    ("CONFD_NOTIF_AUDIT", 0),
    ("CONFD_NOTIF_DAEMON", 1),
    ("CONFD_NOTIF_TAKEOVER_SYSLOG", 2),
    ("CONFD_NOTIF_COMMIT_SIMPLE", 3),
    ("CONFD_NOTIF_COMMIT_DIFF", 4),
    ("CONFD_NOTIF_USER_SESSION", 5),
    ("CONFD_NOTIF_HA_INFO", 6),
    ("CONFD_NOTIF_SUBAGENT_INFO", 7),
    ("CONFD_NOTIF_COMMIT_FAILED", 8),
    ("CONFD_NOTIF_SNMPA", 9),
    ("CONFD_NOTIF_FORWARD_INFO", 10),
    ("CONFD_NOTIF_NETCONF", 11),
    ("CONFD_NOTIF_DEVEL", 12),
    ("CONFD_NOTIF_HEARTBEAT", 13),
    ("CONFD_NOTIF_CONFIRMED_COMMIT", 14),
    ("CONFD_NOTIF_UPGRADE_EVENT", 15),
    ("CONFD_NOTIF_COMMIT_PROGRESS", 16),
    ("CONFD_NOTIF_AUDIT_SYNC", 17),
    ("CONFD_NOTIF_HEALTH_CHECK", 18),
    ("CONFD_NOTIF_STREAM_EVENT", 19),
    ("CONFD_NOTIF_HA_INFO_SYNC", 20),
    ("NCS_NOTIF_PACKAGE_RELOAD", 21),
    ("NCS_NOTIF_CQ_PROGRESS", 22),
    ("CONFD_NOTIF_REOPEN_LOGS", 23),
    ("CONFD_NOTIF_PROGRESS", 24),
    ("NCS_NOTIF_CALL_HOME_INFO", 25),
    ("CONFD_NOTIF_JSONRPC", 26),
    ("CONFD_NOTIF_WEBUI", 27),
    ("NCS_NOTIF_AUDIT_NETWORK", 28),
    ("NCS_NOTIF_AUDIT_NETWORK_SYNC", 29),
    ("CONFD_NOTIF_COMPACTION", 30),
    ("CONFD_NOTIF_SYSTEM_GOING_DOWN", 31),
];

/// The bits this library reads from a subscription mask: every defined
/// event bit is below bit 32, and the upper half is ignored, so a program
/// built against ConfD 7.x or older headers (which pass the mask as an
/// `int`, leaving the upper half of the 64-bit register undefined) gets
/// the subscription it asked for.
fn mask_low_bits(mask: confd_notification_type) -> c_int {
    mask as u32 as c_int
}

/// Writes an event's flag to `n->type`: all 8 bytes.
///
/// # Safety
/// `n` must point to a writable `struct confd_notification` (its first 8
/// bytes at least).
unsafe fn set_type(n: *mut confd_notification, flag: confd_notification_type) {
    // SAFETY: caller contract.
    unsafe { addr_of_mut!((*n).r#type).write(flag) }
}

const HA_INFO: c_int = 1 << 6;
const HEARTBEAT: c_int = 1 << 13;
const HEALTH_CHECK: c_int = 1 << 18;
const STREAM_EVENT: c_int = 1 << 19;

/// Connects the caller's socket `sock` to the daemon at `srv` as a
/// notification socket subscribed to the events in `mask`
/// (CONFD_NOTIF_* bits). The same as `confd_notifications_connect2()` with
/// `data` NULL, so `mask` must not contain CONFD_NOTIF_HEARTBEAT,
/// CONFD_NOTIF_HEALTH_CHECK or CONFD_NOTIF_STREAM_EVENT. The hello adapts
/// to the daemon's protocol version as in `confd_ha_connect()`, and the
/// subscription takes that version's shape (without the verbosity element
/// for ConfD 6.x daemons, protocol versions below 70).
///
/// NULL: `srv` must not be NULL.
/// Ownership: the caller keeps `sock` (and closes it); on failure close it
/// and create a new socket before retrying.
/// Threads: one thread at a time per socket.
///
/// Mask: only its lower 32 bits are read (every defined event bit is below
/// bit 32), so a program built against ConfD 7.x or older headers, which
/// pass the mask as an `int`, subscribes to what it asked for.
#[no_mangle]
pub unsafe extern "C" fn confd_notifications_connect(
    sock: c_int,
    srv: *const sockaddr,
    srv_sz: c_int,
    mask: confd_notification_type,
) -> c_int {
    ffi_boundary!("confd_notifications_connect", {
        unsafe {
            connect2(
                "confd_notifications_connect",
                sock,
                srv,
                srv_sz,
                mask_low_bits(mask),
                std::ptr::null(),
            )
        }
    })
}

/// As `confd_notifications_connect()`, with `data` giving the heartbeat and
/// health-check intervals and the progress verbosity. Stream events
/// (CONFD_NOTIF_STREAM_EVENT) are not supported: CONFD_ERR with
/// CONFD_ERR_NOT_IMPLEMENTED.
///
/// NULL: `srv` must not be NULL; `data` may be NULL unless `mask` has
/// CONFD_NOTIF_HEARTBEAT or CONFD_NOTIF_HEALTH_CHECK.
/// Ownership: `data` stays the caller's; it is not retained.
/// Threads: one thread at a time per socket.
///
/// Mask: as in `confd_notifications_connect()`, only the lower 32 bits.
#[no_mangle]
pub unsafe extern "C" fn confd_notifications_connect2(
    sock: c_int,
    srv: *const sockaddr,
    srv_sz: c_int,
    mask: confd_notification_type,
    data: *mut confd_notifications_data,
) -> c_int {
    ffi_boundary!("confd_notifications_connect2", {
        unsafe {
            connect2(
                "confd_notifications_connect2",
                sock,
                srv,
                srv_sz,
                mask_low_bits(mask),
                data,
            )
        }
    })
}

unsafe fn connect2(
    f: &str,
    sock: c_int,
    srv: *const sockaddr,
    srv_sz: c_int,
    mask: c_int,
    data: *const confd_notifications_data,
) -> c_int {
    tri!(check_init(f));
    if mask == 0 {
        return usage(f, "mask is 0: no events subscribed");
    }
    if mask & STREAM_EVENT != 0 {
        return fail(
            f,
            &Error::Usage {
                code: CONFD_ERR_NOT_IMPLEMENTED,
                msg: format!("{f}: CONFD_NOTIF_STREAM_EVENT is not supported by this library"),
            },
        );
    }
    let (mut hb, mut hc, mut verbosity) = (0i64, 0i64, 0i64);
    if data.is_null() {
        if mask & (HEARTBEAT | HEALTH_CHECK) != 0 {
            return usage(
                f,
                "data is NULL but mask has CONFD_NOTIF_HEARTBEAT or CONFD_NOTIF_HEALTH_CHECK (use confd_notifications_connect2 with intervals)",
            );
        }
    } else {
        // SAFETY: data points to a readable struct (caller contract).
        unsafe {
            if mask & HEARTBEAT != 0 {
                hb = i64::from(addr_of!((*data).heartbeat_interval).read()).max(1000);
            }
            if mask & HEALTH_CHECK != 0 {
                hc = i64::from(addr_of!((*data).health_check_interval).read()).max(1000);
            }
            verbosity = i64::from(addr_of!((*data).verbosity).read());
        }
        if !(0..=3).contains(&verbosity) {
            return usage(f, format!("data->verbosity {verbosity} is not 0..3"));
        }
    }
    let settled = tri!(unsafe { connect_and_hello(f, sock, srv, srv_sz, CLIENT_EVENT_MGR) });
    let sub = Subscription {
        // The mask is a bit set: bit 31 stays a positive number on the wire.
        mask: i128::from(mask as u32),
        heartbeat_ms: hb,
        health_check_ms: hc,
        verbosity,
    };
    // The subscription's shape follows the protocol version the hello
    // settled on: a 4-tuple for ConfD 6.x daemons, with verbosity after.
    let term = sub.to_term_for(settled.proto_vsn);
    if super::debug_level() >= super::LEVEL_DEBUG {
        super::log_line(&format!(
            "DEBUG {f}: subscription of {} elements for protocol version {}",
            term.as_tuple().map_or(0, <[_]>::len),
            settled.proto_vsn
        ));
    }
    if let Err(e) = evc::subscribe_term(&mut FdStream(sock), &term) {
        return fail(f, &e);
    }
    trace(|| format!("{f}(fd {sock}, mask {mask:#x}) -> CONFD_OK"));
    CONFD_OK
}

/// Blocks until the next event on the notification socket `sock` and fills
/// `*n`: `n->type` is the event's flag (all 8 bytes written); for CONFD_NOTIF_HA_INFO `n->n.hnot`
/// holds it (node ids and string addresses point into the struct itself,
/// as in `confd_ha_get_status()`). Returns CONFD_OK, CONFD_ERR, or CONFD_EOF
/// when the daemon closed the socket. With CONFD_NOTIF_HA_INFO_SYNC the
/// caller must call `confd_sync_ha_notification()` after each HA event.
///
/// NULL: `n` must not be NULL.
/// Ownership: `*n` is the caller's; call `confd_free_notification(n)` when
/// done (nothing to free for HA and heartbeat events).
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn confd_read_notification(sock: c_int, n: *mut confd_notification) -> c_int {
    ffi_boundary!("confd_read_notification", {
        const F: &str = "confd_read_notification";
        tri!(check_init(F));
        if n.is_null() {
            return usage(F, "n is NULL");
        }
        let ev = match evc::read_event(&mut FdStream(sock)) {
            Ok(ev) => ev,
            Err(e) => return fail(F, &e),
        };
        // SAFETY: n points to a writable struct confd_notification (caller
        // contract); writes stay within `type` and `n.hnot`.
        unsafe {
            match &ev {
                Event::Ha(h) => {
                    set_type(n, HA_INFO.into());
                    fill_ha_notification(addr_of_mut!((*n).n.hnot), h);
                }
                Event::Heartbeat => set_type(n, HEARTBEAT.into()),
                Event::Other(flag, _) => {
                    let Ok(flag) = confd_notification_type::try_from(*flag) else {
                        return fail(
                            F,
                            &Error::Protocol(format!(
                                "notification flag {flag} does not fit the 64-bit confd_notification_type"
                            )),
                        );
                    };
                    set_type(n, flag);
                }
            }
        }
        trace(|| format!("{F}(fd {sock}) -> {ev:?}"));
        CONFD_OK
    })
}

/// Releases what `confd_read_notification()` allocated for `n`. HA and
/// heartbeat events allocate nothing, so this does nothing; call it anyway,
/// as with ConfD.
///
/// NULL: `n` may be NULL.
/// Threads: safe from any thread.
#[no_mangle]
pub extern "C" fn confd_free_notification(n: *mut confd_notification) {
    ffi_boundary!("confd_free_notification", {
        let _ = n;
    })
}

/// Acknowledges the last HA event on a socket subscribed with
/// CONFD_NOTIF_HA_INFO_SYNC, letting the daemon go on with HA processing.
/// Sends the bare atom `ha_synced`, as ConfD's own libraries do.
///
/// Threads: one thread at a time per socket.
#[no_mangle]
pub extern "C" fn confd_sync_ha_notification(sock: c_int) -> c_int {
    ffi_boundary!("confd_sync_ha_notification", {
        const F: &str = "confd_sync_ha_notification";
        tri!(check_init(F));
        match evc::sync_ha(&mut FdStream(sock)) {
            Ok(()) => {
                trace(|| format!("{F}(fd {sock}) -> CONFD_OK"));
                CONFD_OK
            }
            Err(e) => fail(F, &e),
        }
    })
}

/// Fills a `struct confd_ha_notification` (zeroed first; nothing written
/// past it).
///
/// # Safety
/// `dst` must point to a writable `struct confd_ha_notification`.
unsafe fn fill_ha_notification(dst: *mut confd_ha_notification, ev: &HaEvent) {
    // SAFETY (whole block): dst is writable for the whole struct.
    unsafe {
        std::ptr::write_bytes(dst, 0, 1);
        addr_of_mut!((*dst).r#type).write(ev.info_type());
        let data = addr_of_mut!((*dst).data);
        match ev {
            HaEvent::NoPrimary { reason } => addr_of_mut!((*data).noprimary).write(*reason),
            HaEvent::SecondaryDied(node) => {
                fill_ha_node(addr_of_mut!((*data).secondary_died), node);
            }
            HaEvent::SecondaryArrived(node) => {
                fill_ha_node(addr_of_mut!((*data).secondary_arrived), node);
            }
            HaEvent::SecondaryInitialized { by_copy } => {
                addr_of_mut!((*data).cdb_initialized_by_copy).write(c_int::from(*by_copy))
            }
            // An unknown type is delivered with its number and no data.
            HaEvent::IsPrimary | HaEvent::IsNone | HaEvent::Unknown { .. } => {}
            HaEvent::BeSecondaryResult { result } => {
                addr_of_mut!((*data).besecondary_result).write(*result)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn bit_table_agrees_with_the_constants_the_library_uses() {
        let bit = |name: &str| {
            let (_, b) = NOTIF_BITS.iter().find(|(n, _)| *n == name).unwrap();
            1i64 << b
        };
        assert_eq!(bit("CONFD_NOTIF_HA_INFO"), i64::from(HA_INFO));
        assert_eq!(bit("CONFD_NOTIF_HEARTBEAT"), i64::from(HEARTBEAT));
        assert_eq!(bit("CONFD_NOTIF_HEALTH_CHECK"), i64::from(HEALTH_CHECK));
        assert_eq!(bit("CONFD_NOTIF_STREAM_EVENT"), i64::from(STREAM_EVENT));
        assert_eq!(bit("CONFD_NOTIF_HA_INFO_SYNC"), 1 << 20);
        assert_eq!(bit("CONFD_NOTIF_SYSTEM_GOING_DOWN"), 1 << 31);
        // Every bit once, 0..=31.
        let mut bits: Vec<u32> = NOTIF_BITS.iter().map(|(_, b)| *b).collect();
        bits.sort_unstable();
        assert_eq!(bits, (0..32).collect::<Vec<_>>());
    }

    #[test]
    fn the_upper_half_of_a_mask_is_ignored() {
        assert_eq!(mask_low_bits(0x5a5a_0000_0000_0040), 0x40);
        assert_eq!(mask_low_bits(1 << 31), i32::MIN);
    }

    #[test]
    fn layouts() {
        assert_eq!(size_of::<confd_ha_notification>(), 328);
        assert_eq!(offset_of!(confd_ha_notification, data), 8);
        assert_eq!(offset_of!(confd_notification, n), 8);
        assert_eq!(size_of::<confd_notification_type>(), 8);
        // NSO 6.2.5's size; the audit event (BUFSIZ 8192) is the largest.
        if BUFSIZ == 8192 {
            assert_eq!(size_of::<confd_notification>(), 8464);
            assert_eq!(size_of::<confd_audit_notification>(), 8456);
        }
        assert_eq!(size_of::<confd_user_info>(), 992);
        assert_eq!(size_of::<confd_notifications_data>(), 112);
        assert_eq!(offset_of!(confd_notifications_data, stream_name), 8);
        assert_eq!(offset_of!(confd_notifications_data, start_time), 16);
        assert_eq!(offset_of!(confd_notifications_data, stop_time), 56);
        assert_eq!(offset_of!(confd_notifications_data, xpath_filter), 96);
        assert_eq!(offset_of!(confd_notifications_data, usid), 104);
        assert_eq!(offset_of!(confd_notifications_data, verbosity), 108);
    }
}
