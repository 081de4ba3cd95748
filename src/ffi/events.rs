//! `confd_events.h`: the HA parts of ConfD's notification API
//! (`confd_lib_events`), spec §C.5–C.7 and §D.7.
//!
//! Only HA_INFO (with HA_INFO_SYNC) and HEARTBEAT events are decoded; any
//! other event is returned with its `type` set and its union untouched.

// The C contract of every exported function is in its doc comment's fixed
// phrases, which the header carries.
#![allow(clippy::missing_safety_doc)]
#![allow(non_camel_case_types)]

use super::lib::{confd_ha_node, confd_value_t, connect_and_hello, fill_ha_node, CONFD_OK};
use super::{check_init, fail, ffi_boundary, trace, tri, usage};
use crate::client::events::{self as evc, Event};
use crate::errcode::CONFD_ERR_NOT_IMPLEMENTED;
use crate::error::Error;
use crate::proto::frame::FdStream;
use crate::proto::ha::{HaEvent, Subscription};
use crate::proto::hello::CLIENT_EVENT_MGR;
use libc::sockaddr;
use std::ffi::{c_char, c_int};
use std::ptr::{addr_of, addr_of_mut};

/// Event kinds: bits of the subscription mask; a read event's `type` is
/// exactly one of them.
#[repr(C)]
pub enum confd_notification_type {
    CONFD_NOTIF_AUDIT = 1,
    /// Also `CONFD_NOTIF_SYSLOG`.
    CONFD_NOTIF_DAEMON = 1 << 1,
    CONFD_NOTIF_TAKEOVER_SYSLOG = 1 << 2,
    CONFD_NOTIF_COMMIT_SIMPLE = 1 << 3,
    CONFD_NOTIF_COMMIT_DIFF = 1 << 4,
    CONFD_NOTIF_USER_SESSION = 1 << 5,
    /// HA events (`n.hnot`).
    CONFD_NOTIF_HA_INFO = 1 << 6,
    CONFD_NOTIF_SUBAGENT_INFO = 1 << 7,
    CONFD_NOTIF_COMMIT_FAILED = 1 << 8,
    CONFD_NOTIF_SNMPA = 1 << 9,
    CONFD_NOTIF_FORWARD_INFO = 1 << 10,
    CONFD_NOTIF_NETCONF = 1 << 11,
    CONFD_NOTIF_DEVEL = 1 << 12,
    /// Heartbeats at `heartbeat_interval` (needs `confd_notifications_connect2`).
    CONFD_NOTIF_HEARTBEAT = 1 << 13,
    CONFD_NOTIF_CONFIRMED_COMMIT = 1 << 14,
    CONFD_NOTIF_UPGRADE_EVENT = 1 << 15,
    CONFD_NOTIF_COMMIT_PROGRESS = 1 << 16,
    CONFD_NOTIF_AUDIT_SYNC = 1 << 17,
    CONFD_NOTIF_HEALTH_CHECK = 1 << 18,
    CONFD_NOTIF_STREAM_EVENT = 1 << 19,
    /// With CONFD_NOTIF_HA_INFO: the daemon holds HA processing after each
    /// HA event until this subscriber calls `confd_sync_ha_notification()`.
    CONFD_NOTIF_HA_INFO_SYNC = 1 << 20,
    NCS_NOTIF_PACKAGE_RELOAD = 1 << 21,
    NCS_NOTIF_CQ_PROGRESS = 1 << 22,
    CONFD_NOTIF_REOPEN_LOGS = 1 << 23,
    CONFD_NOTIF_PROGRESS = 1 << 24,
    NCS_NOTIF_CALL_HOME_INFO = 1 << 25,
    CONFD_NOTIF_JSONRPC = 1 << 26,
    CONFD_NOTIF_WEBUI = 1 << 27,
    NCS_NOTIF_AUDIT_NETWORK = 1 << 28,
    NCS_NOTIF_AUDIT_NETWORK_SYNC = 1 << 29,
    CONFD_NOTIF_COMPACTION = 1 << 30,
}

/// `enum confd_notification_type` as it sits in memory (an int).
pub type NotifTypeInt = c_int;

/// The kind of an HA event (`n.hnot.type`).
#[repr(C)]
pub enum confd_ha_info_type {
    /// This node lost its primary (`data.noprimary` = CONFD_ERR_HA_CLOSED or
    /// CONFD_ERR_HA_NOTICK); it is now NONE.
    CONFD_HA_INFO_NOPRIMARY = 1,
    /// A secondary went away (`data.secondary_died`).
    CONFD_HA_INFO_SECONDARY_DIED = 2,
    /// A secondary connected to us (`data.secondary_arrived`).
    CONFD_HA_INFO_SECONDARY_ARRIVED = 3,
    /// This secondary's data is initialised (`data.cdb_initialized_by_copy`
    /// nonzero when it took a full copy).
    CONFD_HA_INFO_SECONDARY_INITIALIZED = 4,
    /// This node is now primary.
    CONFD_HA_INFO_IS_PRIMARY = 5,
    /// This node is now NONE.
    CONFD_HA_INFO_IS_NONE = 6,
    /// The result of an asynchronous besecondary (`data.besecondary_result`:
    /// 0 or a confd_errno value).
    CONFD_HA_INFO_BESECONDARY_RESULT = 7,
}

/// `enum confd_ha_info_type` as it sits in memory (an int).
pub type HaInfoTypeInt = c_int;

/// Verbosity of progress events (`confd_notifications_data.verbosity`).
#[repr(C)]
pub enum confd_progress_verbosity {
    CONFD_PROGRESS_NORMAL = 0,
    CONFD_PROGRESS_VERBOSE = 1,
    CONFD_PROGRESS_VERY_VERBOSE = 2,
    CONFD_PROGRESS_DEBUG = 3,
}

/// `enum confd_progress_verbosity` as it sits in memory (an int).
pub type VerbosityInt = c_int;

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

/// An HA event (328 bytes on x86-64).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_ha_notification {
    pub r#type: HaInfoTypeInt,
    pub data: confd_ha_notification_data,
}

/// The event part of `struct confd_notification`. ConfD's union has many
/// more members (audit, syslog, commit, ...), none of which this library
/// fills; `reserved` stands for them and only keeps the space.
#[repr(C)]
#[derive(Clone, Copy)]
pub union confd_notification_union {
    /// Valid when `type` is CONFD_NOTIF_HA_INFO.
    pub hnot: confd_ha_notification,
    /// Not used by this library: room for ConfD's other event members.
    pub reserved: [u8; 16384],
}

/// One event read by `confd_read_notification()`. The library writes only
/// `type` and, for HA events, `n.hnot` (bytes 0-3 and 8-335), so a struct
/// from a header with a larger union is safe to pass too.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_notification {
    pub r#type: NotifTypeInt,
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
#[no_mangle]
pub unsafe extern "C" fn confd_notifications_connect(
    sock: c_int,
    srv: *const sockaddr,
    srv_sz: c_int,
    mask: c_int,
) -> c_int {
    ffi_boundary!("confd_notifications_connect", {
        unsafe {
            connect2(
                "confd_notifications_connect",
                sock,
                srv,
                srv_sz,
                mask,
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
#[no_mangle]
pub unsafe extern "C" fn confd_notifications_connect2(
    sock: c_int,
    srv: *const sockaddr,
    srv_sz: c_int,
    mask: c_int,
    data: *mut confd_notifications_data,
) -> c_int {
    ffi_boundary!("confd_notifications_connect2", {
        unsafe {
            connect2(
                "confd_notifications_connect2",
                sock,
                srv,
                srv_sz,
                mask,
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
/// `*n`: `n->type` is the event's flag; for CONFD_NOTIF_HA_INFO `n->n.hnot`
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
                    addr_of_mut!((*n).r#type).write(HA_INFO);
                    fill_ha_notification(addr_of_mut!((*n).n.hnot), h);
                }
                Event::Heartbeat => addr_of_mut!((*n).r#type).write(HEARTBEAT),
                Event::Other(flag, _) => {
                    let Ok(flag) = u32::try_from(*flag) else {
                        return fail(
                            F,
                            &Error::Protocol(format!(
                                "notification flag {flag} is not a 32-bit mask"
                            )),
                        );
                    };
                    addr_of_mut!((*n).r#type).write(flag as c_int);
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
    fn layouts() {
        assert_eq!(size_of::<confd_ha_notification>(), 328);
        assert_eq!(offset_of!(confd_ha_notification, data), 8);
        assert_eq!(offset_of!(confd_notification, n), 8);
        assert_eq!(size_of::<confd_notifications_data>(), 112);
        assert_eq!(offset_of!(confd_notifications_data, stream_name), 8);
        assert_eq!(offset_of!(confd_notifications_data, start_time), 16);
        assert_eq!(offset_of!(confd_notifications_data, stop_time), 56);
        assert_eq!(offset_of!(confd_notifications_data, xpath_filter), 96);
        assert_eq!(offset_of!(confd_notifications_data, usid), 104);
        assert_eq!(offset_of!(confd_notifications_data, verbosity), 108);
    }
}
