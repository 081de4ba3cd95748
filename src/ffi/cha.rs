//! `cha.h`: the project's own C API, prefix `cha_`: the data API of ha-node
//! (client id 42, issue 3) and the availability-group API (node state and
//! subscriptions with callbacks, issue 4).
//!
//! Conventions are those of `confd_ha.h`: functions return CONFD_OK,
//! CONFD_ERR (with `confd_errno` and `confd_lasterr()` set) or CONFD_EOF;
//! the data API runs on the caller's own socket; `confd_init()` must have
//! been called before any function that talks to a node.
//!
//! Enum-typed fields are `c_int` here (the `*Int` aliases, printed as
//! `enum ...` by cbindgen's rename table), as in `lib.rs`.

// The C contract of every exported function (pointer validity, NULL,
// ownership, threads) is in its doc comment's fixed phrases, which the
// header carries; a Rust `# Safety` heading would only repeat it.
#![allow(clippy::missing_safety_doc)]
#![allow(non_camel_case_types)]

use super::lib::CONFD_OK;
use super::lib::{check_sockaddr, confd_buf, confd_value_t, connect_and_hello, value_from_c};
use super::{check_init, copy_cstr, fail, ffi_boundary, trace, tri, usage};
use crate::client::data::{self as dc, Txn};
use crate::client::group::{self, GroupEvent, Subscription};
use crate::client::Endpoint;
use crate::errcode::{CONFD_ERR_BADPATH, CONFD_ERR_BADTYPE, CONFD_ERR_MALLOC};
use crate::error::Error;
use crate::proto::data::NodeState;
use crate::proto::frame::FdStream;
use crate::proto::ha::{HaEvent, HaNode};
use crate::proto::hello::CLIENT_HADATA;
use crate::value::Value;
use libc::{in6_addr, in_addr, sockaddr};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::ptr::{addr_of, addr_of_mut};

/// Size of the node id strings of `struct cha_peer` and
/// `struct cha_node_state` (at most 127 bytes + NUL; a longer id is cut).
pub const CHA_ID_SIZE: usize = 128;
/// Size of the address strings of `struct cha_peer` (at most 127 bytes +
/// NUL; a longer one is cut).
pub const CHA_ADDR_SIZE: usize = 128;
/// A buffer of this size always holds a transaction id of ha-node and its
/// NUL (`cha_txid()`, `cha_txn_commit()`, `struct cha_node_state`).
pub const CHA_TXID_SIZE: usize = 256;
/// Most secondaries `struct cha_node_state` holds (ha-node refuses more).
pub const CHA_MAX_SECONDARIES: usize = 255;

/// A node's role. The numbers are those of `enum confd_ha_status_state`
/// (`CHA_ROLE_PRIMARY == CONFD_HA_STATE_PRIMARY`, ...).
#[repr(C)]
pub enum cha_role {
    /// Neither primary nor secondary: the state every node starts in.
    CHA_ROLE_NONE = 1,
    /// A secondary of a primary (or of a relay).
    CHA_ROLE_SECONDARY = 2,
    /// The primary: the only node that accepts writes (with NONE).
    CHA_ROLE_PRIMARY = 3,
    /// A secondary that relays to sub-secondaries.
    CHA_ROLE_RELAY = 4,
}

/// `enum cha_role` as it sits in memory (an int).
pub type RoleInt = c_int;

/// The events a subscription asks for (bits, may be or-ed into
/// `event_mask`) and the `type` of a `struct cha_event`.
#[repr(C)]
pub enum cha_event_type {
    /// The node's role changed: `previous_role` and `new_role` are set.
    CHA_EVENT_ROLE_CHANGED = 1,
    /// An HA_INFO notification of the node: the `ha_info_*` fields are set.
    CHA_EVENT_HA_INFO = 2,
    /// A heartbeat, every `heartbeat_ms` milliseconds; no other field set.
    CHA_EVENT_HEARTBEAT = 4,
    /// The subscription lost its node (it stopped or closed the
    /// connection): `closed_errno` is set. The last event of a subscription,
    /// delivered whatever `event_mask` says (not a bit to ask for), and never
    /// after `cha_unsubscribe()`; the subscription must still be released
    /// with `cha_unsubscribe()`.
    CHA_EVENT_CLOSED = 8,
}

/// `enum cha_event_type` as it sits in memory (an int).
pub type EventTypeInt = c_int;

/// The HA_INFO notification types, with ConfD's numbers
/// (`CHA_HA_INFO_NOPRIMARY == CONFD_HA_INFO_NOPRIMARY`, ...).
#[repr(C)]
pub enum cha_ha_info_type {
    /// A secondary lost its primary; `ha_info_value` is CONFD_ERR_HA_CLOSED
    /// or CONFD_ERR_HA_NOTICK.
    CHA_HA_INFO_NOPRIMARY = 1,
    /// On a primary: a secondary died; `ha_info_node` names it.
    CHA_HA_INFO_SECONDARY_DIED = 2,
    /// On a primary: a secondary arrived; `ha_info_node` names it.
    CHA_HA_INFO_SECONDARY_ARRIVED = 3,
    /// On a secondary: it is in sync; `ha_info_value` is 1 when it got a
    /// full copy, else 0.
    CHA_HA_INFO_SECONDARY_INITIALIZED = 4,
    /// The node became primary.
    CHA_HA_INFO_IS_PRIMARY = 5,
    /// The node became NONE.
    CHA_HA_INFO_IS_NONE = 6,
    /// The result of an asynchronous besecondary; `ha_info_value` is 0 or
    /// the confd_errno of the failure.
    CHA_HA_INFO_BESECONDARY_RESULT = 7,
}

/// `enum cha_ha_info_type` as it sits in memory (an int).
pub type HaInfoInt = c_int;

/// Another node as a node sees it (264 bytes on x86-64).
#[repr(C)]
pub struct cha_peer {
    /// Its node id as text (a C_BUF id as is, other types printed),
    /// NUL-terminated.
    pub id: [c_char; CHA_ID_SIZE],
    /// Its address as text ("127.0.0.2", "::1", or a host name),
    /// NUL-terminated.
    pub address: [c_char; CHA_ADDR_SIZE],
    /// When the last tick (or any frame) arrived from it, in Unix time
    /// milliseconds; -1 when unknown (none yet, ticks disabled, or not
    /// applicable).
    pub last_tick_ms: i64,
}

/// What a node says about itself (67992 bytes on x86-64).
#[repr(C)]
pub struct cha_node_state {
    /// The node's role.
    pub role: RoleInt,
    /// Nonzero when `primary` is set (the node is a secondary or a relay).
    pub has_primary: c_int,
    /// This node's id ("" when it has none: role NONE).
    pub node_id: [c_char; CHA_ID_SIZE],
    /// The node's primary (a relay, for a relay's sub-secondary), with the
    /// time of the last tick received from it.
    pub primary: cha_peer,
    /// How many entries of `secondaries` are set.
    pub num_secondaries: c_int,
    /// The connected secondaries (of a primary or a relay), each with the
    /// time of the last tick received from it.
    pub secondaries: [cha_peer; CHA_MAX_SECONDARIES],
    /// The sequence number of the last committed transaction (0 if none).
    pub seq: i64,
    /// The id of the last committed transaction ("" if none).
    pub txid: [c_char; CHA_TXID_SIZE],
}

/// A secondary's copy state (`cha_secondary_lag.copy_state`).
#[repr(C)]
pub enum cha_copy_state {
    /// It holds the serving node's data and receives its transactions.
    CHA_COPY_IN_SYNC = 0,
    /// A full copy is being sent to it or is not yet acknowledged.
    CHA_COPY_COPYING = 1,
}

/// One secondary's replication progress as its primary (or relay) sees it
/// (312 bytes on x86-64).
#[repr(C)]
pub struct cha_secondary_lag {
    /// Its id, address and the time of the last tick (or ack) received.
    pub peer: cha_peer,
    /// Highest seq it acknowledged as durable (0 while its full copy is
    /// unacknowledged).
    pub acked_seq: i64,
    /// The serving node's seq minus `acked_seq`, in transactions.
    pub lag_txns: i64,
    /// Age in milliseconds of the oldest transaction sent to it and not yet
    /// acknowledged (during a full copy: since the copy began); 0 when
    /// caught up.
    pub lag_ms: i64,
    /// Full copies sent to this node id since the serving node started.
    pub full_copies: i64,
    /// Re-joins of this node id served by an incremental catch-up (only the
    /// transactions it missed) since the serving node started.
    pub catch_ups: i64,
    /// `enum cha_copy_state`.
    pub copy_state: c_int,
    /// Zero.
    pub reserved: c_int,
}

/// Size of the first version of `struct cha_node_health`: `size` must be at
/// least this.
pub const CHA_NODE_HEALTH_V1_SIZE: usize = 79856;

/// A node's replication health (79856 bytes on x86-64): what
/// `struct cha_node_state` has no room for. That struct has no size field,
/// so it cannot grow without overrunning the buffers of programs built
/// against an older cha.h; this one starts with its size, set by the
/// caller, so later versions can append fields.
#[repr(C)]
pub struct cha_node_health {
    /// Set by the caller to `sizeof(struct cha_node_health)` (at least
    /// CHA_NODE_HEALTH_V1_SIZE); the library sets it to the bytes it filled.
    pub size: usize,
    /// The node's role (`enum cha_role`).
    pub role: RoleInt,
    /// Zero.
    pub reserved: c_int,
    /// The sequence number of the last transaction durable on the node.
    pub seq: i64,
    /// On a secondary or relay: when its last transaction (or full copy)
    /// from its primary was applied, Unix time in milliseconds; -1 if none
    /// since it started or not a secondary.
    pub last_txn_ms: i64,
    /// How many entries of `secondaries` are set.
    pub num_secondaries: c_int,
    /// Zero.
    pub reserved2: c_int,
    /// The id of the last transaction ("" if none).
    pub txid: [c_char; CHA_TXID_SIZE],
    /// The connected secondaries (of a primary or relay) with their lag.
    pub secondaries: [cha_secondary_lag; CHA_MAX_SECONDARIES],
}

/// One event of a subscription, given to the callback (296 bytes on
/// x86-64). Fields that do not apply to `type` are zero (`ha_info_node`:
/// empty strings and `last_tick_ms` -1).
#[repr(C)]
pub struct cha_event {
    /// CHA_EVENT_ROLE_CHANGED, CHA_EVENT_HA_INFO, CHA_EVENT_HEARTBEAT or
    /// CHA_EVENT_CLOSED.
    pub r#type: EventTypeInt,
    /// CHA_EVENT_ROLE_CHANGED: the role before the change.
    pub previous_role: RoleInt,
    /// CHA_EVENT_ROLE_CHANGED: the role now.
    pub new_role: RoleInt,
    /// CHA_EVENT_HA_INFO: which notification.
    pub ha_info_type: HaInfoInt,
    /// CHA_EVENT_HA_INFO: NOPRIMARY: CONFD_ERR_HA_CLOSED or
    /// CONFD_ERR_HA_NOTICK; SECONDARY_INITIALIZED: 1 if by full copy, else
    /// 0; BESECONDARY_RESULT: 0 or a confd_errno value; otherwise 0.
    pub ha_info_value: c_int,
    /// CHA_EVENT_HA_INFO SECONDARY_DIED / SECONDARY_ARRIVED: the secondary.
    pub ha_info_node: cha_peer,
    /// CHA_EVENT_CLOSED: why, as a confd_errno value (CONFD_ERR_EOF when the
    /// node closed the connection).
    pub closed_errno: c_int,
}

/// The callback of a subscription: `ev` points to the event (valid only
/// during the call; copy what you need), `user_data` is the pointer given
/// to `cha_subscribe()`. It runs on the subscription's own thread.
pub type cha_event_cb = Option<unsafe extern "C" fn(ev: *const cha_event, user_data: *mut c_void)>;

/// A transaction being built on the client side (opaque). Nothing reaches a
/// node before `cha_txn_commit()`.
pub struct cha_txn {
    txn: Txn,
}

/// A running subscription (opaque).
pub struct cha_subscription {
    sub: Subscription,
}

// ---------------------------------------------------------------------------
// The data API

/// Connects the caller's socket `sock` to the node at `srv` (AF_INET,
/// AF_INET6 or AF_UNIX; `srv_sz` must fit the family) and runs the hello
/// as the data client (id 42). The socket then serves any number of
/// `cha_get()`, `cha_exists()`, `cha_list()`, `cha_txid()`,
/// `cha_txn_commit()` and `cha_data_node_state()` calls.
/// Errors: CONFD_ERR_LIB_NOT_INITIALIZED, CONFD_ERR_PROTOUSAGE (bad
/// arguments, hello refused), CONFD_ERR_OS (connect(2) failed), CONFD_EOF.
///
/// NULL: `srv` must not be NULL.
/// Ownership: the caller keeps `sock` (and closes it); on failure close it
/// and create a new socket before retrying. `srv` is not retained.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn cha_data_connect(
    sock: c_int,
    srv: *const sockaddr,
    srv_sz: c_int,
) -> c_int {
    ffi_boundary!("cha_data_connect", {
        const F: &str = "cha_data_connect";
        tri!(check_init(F));
        tri!(unsafe { connect_and_hello(F, sock, srv, srv_sz, CLIENT_HADATA) });
        trace(|| format!("{F}(fd {sock}) -> CONFD_OK"));
        CONFD_OK
    })
}

/// Reads the value at `path` (a keypath such as "/servers/server{www}/port")
/// into `*v`. A C_BUF or C_BINARY value gets a buffer from malloc(3), one
/// byte longer than `size` and NUL-terminated, so `CONFD_GET_CBUFPTR(v)` is
/// a C string for text; release it with `cha_free_value(v)`. Other types
/// allocate nothing. On failure `*v` is left untouched.
/// Errors: CONFD_ERR_NOEXISTS (no value at `path`), CONFD_ERR_BADPATH,
/// CONFD_ERR_MALLOC, and the common ones.
///
/// NULL: `path` and `v` must not be NULL.
/// Ownership: the caller owns `*v` and, after success, its buffer (free it
/// with `cha_free_value()`). `path` is not retained.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn cha_get(sock: c_int, path: *const c_char, v: *mut confd_value_t) -> c_int {
    ffi_boundary!("cha_get", {
        const F: &str = "cha_get";
        tri!(check_init(F));
        let p = tri!(unsafe { path_from_c(F, path) });
        if v.is_null() {
            return usage(F, "v is NULL");
        }
        let val = match dc::get(&mut FdStream(sock), &p) {
            Ok(val) => val,
            Err(e) => return fail(F, &e),
        };
        tri!(unsafe { value_to_c(F, &val, v) });
        trace(|| format!("{F}(fd {sock}, {p}) -> {} {val}", val.type_name()));
        CONFD_OK
    })
}

/// As `cha_get()`, but linearizable: served only by the leader of an HA Raft
/// cluster, after a read index round (a majority confirms the leadership and
/// the store has applied everything committed before the call).
/// Errors: as `cha_get()`, and CONFD_ERR_NOT_WRITABLE on a node that is not
/// the Raft leader (the message names the leader), CONFD_ERR_BADSTATE in
/// external mode.
///
/// NULL: `path` and `v` must not be NULL.
/// Ownership: as `cha_get()`.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn cha_get_linearizable(
    sock: c_int,
    path: *const c_char,
    v: *mut confd_value_t,
) -> c_int {
    ffi_boundary!("cha_get_linearizable", {
        const F: &str = "cha_get_linearizable";
        tri!(check_init(F));
        let p = tri!(unsafe { path_from_c(F, path) });
        if v.is_null() {
            return usage(F, "v is NULL");
        }
        let val = match dc::get_linearizable(&mut FdStream(sock), &p) {
            Ok(val) => val,
            Err(e) => return fail(F, &e),
        };
        tri!(unsafe { value_to_c(F, &val, v) });
        trace(|| format!("{F}(fd {sock}, {p}) -> {} {val}", val.type_name()));
        CONFD_OK
    })
}

/// Most arguments of one `cha_raft()` call.
pub const CHA_RAFT_MAX_ARGS: c_int = 64;

/// Runs an HA Raft action on the node (README, "Raft mode"): `action` is
/// "status" (args: "json" or "text"), "create-cluster" (args: the other
/// nodes' addresses IP:PORT), "adjust-membership" ("add-node" or
/// "remove-node", then an address), "handover" (none, or an address),
/// "reset" (none, or "force") or "disconnect" (an address). `*reply` is set
/// to the node's answer, a NUL-terminated string from malloc(3) (JSON for
/// "status --json", else a message). On failure `*reply` is NULL.
/// Errors: CONFD_ERR_BADSTATE (external mode; wrong role, e.g. not the
/// leader, naming it), CONFD_ERR_TIMEOUT (not done within the node's
/// storage-timeout), CONFD_ERR_PROTOUSAGE (bad arguments), and the common ones.
///
/// NULL: `action` and `reply` must not be NULL; `args` may be NULL when
/// `nargs` is 0. `nargs`: 0 to CHA_RAFT_MAX_ARGS.
/// Ownership: the caller owns `*reply`; free it with `cha_free_text()`.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn cha_raft(
    sock: c_int,
    action: *const c_char,
    args: *const *const c_char,
    nargs: c_int,
    reply: *mut *mut c_char,
) -> c_int {
    ffi_boundary!("cha_raft", {
        const F: &str = "cha_raft";
        tri!(check_init(F));
        if reply.is_null() {
            return usage(F, "reply is NULL");
        }
        // SAFETY: reply is writable (caller contract).
        unsafe { reply.write(std::ptr::null_mut()) };
        let a = tri!(unsafe { text_from_c(F, "action", action) });
        if !(0..=CHA_RAFT_MAX_ARGS).contains(&nargs) {
            return usage(F, format!("nargs {nargs} is not 0 to {CHA_RAFT_MAX_ARGS}"));
        }
        if nargs > 0 && args.is_null() {
            return usage(F, "args is NULL");
        }
        let mut list = Vec::with_capacity(nargs as usize);
        for i in 0..nargs as usize {
            // SAFETY: args has nargs readable pointers (caller contract).
            let p = unsafe { *args.add(i) };
            list.push(tri!(unsafe { text_from_c(F, "an argument", p) }));
        }
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        let text = match dc::raft(&mut FdStream(sock), &a, &refs) {
            Ok(t) => t,
            Err(e) => return fail(F, &e),
        };
        if text.as_bytes().contains(&0) {
            return usage(F, "the node's reply has a NUL byte");
        }
        // SAFETY: a fresh malloc'ed, NUL-terminated copy, published once complete.
        unsafe {
            let s = malloc_bytes(text.as_bytes());
            if s.is_null() {
                return no_memory(F, text.len() + 1);
            }
            reply.write(s.cast());
        }
        trace(|| format!("{F}(fd {sock}, {a}, {list:?}) -> {} bytes", text.len()));
        CONFD_OK
    })
}

/// Frees a string returned by `cha_raft()`.
///
/// NULL: `s` may be NULL (nothing happens).
/// Ownership: `s` must come from `cha_raft()`; it is invalid afterwards.
/// Threads: safe from any thread for distinct strings.
#[no_mangle]
pub unsafe extern "C" fn cha_free_text(s: *mut c_char) {
    ffi_boundary!("cha_free_text", {
        // SAFETY: from malloc (documented).
        unsafe { libc::free(s.cast()) };
    })
}

/// Frees the buffer of a C_BUF or C_BINARY value filled by `cha_get()` and
/// makes `*v` a C_NOEXISTS value (so a second call does nothing). Values of
/// other types are left as they are.
///
/// NULL: `v` may be NULL (nothing happens).
/// Ownership: only for values filled by `cha_get()`: a value whose buffer
/// the caller set with `CONFD_SET_BUF` must not be given here.
/// Threads: safe from any thread for distinct values.
#[no_mangle]
pub unsafe extern "C" fn cha_free_value(v: *mut confd_value_t) {
    ffi_boundary!("cha_free_value", {
        if v.is_null() {
            return;
        }
        // SAFETY: v points to a value filled by cha_get (documented); the
        // buffer of a C_BUF/C_BINARY one came from malloc.
        unsafe {
            let ty = addr_of!((*v).r#type).read();
            if ty == C_BUF || ty == C_BINARY {
                let b = addr_of!((*v).val.buf).read();
                libc::free(b.ptr.cast());
                addr_of_mut!((*v).val.buf).write(confd_buf {
                    size: 0,
                    ptr: std::ptr::null_mut(),
                });
                addr_of_mut!((*v).r#type).write(C_NOEXISTS);
            }
        }
    })
}

/// Sets `*exists` to 1 when `path` holds a value or has descendants, else 0.
/// Errors: CONFD_ERR_BADPATH, and the common ones.
///
/// NULL: `path` and `exists` must not be NULL.
/// Ownership: `path` is not retained.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn cha_exists(sock: c_int, path: *const c_char, exists: *mut c_int) -> c_int {
    ffi_boundary!("cha_exists", {
        const F: &str = "cha_exists";
        tri!(check_init(F));
        let p = tri!(unsafe { path_from_c(F, path) });
        if exists.is_null() {
            return usage(F, "exists is NULL");
        }
        match dc::exists(&mut FdStream(sock), &p) {
            Ok(b) => {
                // SAFETY: exists is a writable int (caller contract).
                unsafe { exists.write(c_int::from(b)) };
                trace(|| format!("{F}(fd {sock}, {p}) -> {b}"));
                CONFD_OK
            }
            Err(e) => fail(F, &e),
        }
    })
}

/// Lists the names of the immediate children of `path` ("/" for the top
/// level), sorted: `*names` is set to a NULL-terminated array of
/// NUL-terminated strings and `*count` (if not NULL) to their number. A
/// path without children gives an empty array (`(*names)[0] == NULL`). On
/// failure `*names` is set to NULL.
/// Errors: CONFD_ERR_BADPATH, CONFD_ERR_MALLOC, CONFD_ERR_PROTOUSAGE (a
/// name with a NUL byte), and the common ones.
///
/// NULL: `path` and `names` must not be NULL; `count` may be NULL.
/// Ownership: the caller owns the array and its strings (malloc'ed); free
/// them with `cha_free_list(*names)`.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn cha_list(
    sock: c_int,
    path: *const c_char,
    names: *mut *mut *mut c_char,
    count: *mut c_int,
) -> c_int {
    ffi_boundary!("cha_list", {
        const F: &str = "cha_list";
        tri!(check_init(F));
        if names.is_null() {
            return usage(F, "names is NULL");
        }
        // SAFETY: names is writable (caller contract).
        unsafe { names.write(std::ptr::null_mut()) };
        let p = tri!(unsafe { path_from_c(F, path) });
        let list = match dc::list(&mut FdStream(sock), &p) {
            Ok(l) => l,
            Err(e) => return fail(F, &e),
        };
        if let Some(bad) = list.iter().find(|n| n.as_bytes().contains(&0)) {
            return usage(
                F,
                format!("child {bad:?} of {p} has a NUL byte and cannot be a C string"),
            );
        }
        let Ok(n) = c_int::try_from(list.len()) else {
            return usage(F, format!("{} children of {p} are too many", list.len()));
        };
        // SAFETY: calloc/malloc'ed memory, filled before it is published.
        unsafe {
            let arr = libc::calloc(list.len() + 1, std::mem::size_of::<*mut c_char>())
                .cast::<*mut c_char>();
            if arr.is_null() {
                return no_memory(F, (list.len() + 1) * std::mem::size_of::<*mut c_char>());
            }
            for (i, name) in list.iter().enumerate() {
                let s = malloc_bytes(name.as_bytes());
                if s.is_null() {
                    free_list(arr);
                    return no_memory(F, name.len() + 1);
                }
                arr.add(i).write(s.cast());
            }
            names.write(arr);
            if !count.is_null() {
                count.write(n);
            }
        }
        trace(|| format!("{F}(fd {sock}, {p}) -> {n} names"));
        CONFD_OK
    })
}

/// Frees an array returned by `cha_list()` and its strings.
///
/// NULL: `names` may be NULL (nothing happens).
/// Ownership: `names` must come from `cha_list()`; it is invalid afterwards.
/// Threads: safe from any thread for distinct arrays.
#[no_mangle]
pub unsafe extern "C" fn cha_free_list(names: *mut *mut c_char) {
    ffi_boundary!("cha_free_list", {
        if !names.is_null() {
            // SAFETY: a NULL-terminated array from cha_list (documented).
            unsafe { free_list(names) };
        }
    })
}

/// Copies the id of the node's last committed transaction ("" if none) into
/// `buf` of `sz` bytes, NUL-terminated. A buffer of CHA_TXID_SIZE bytes
/// always suffices; a smaller one that cannot hold the id gives
/// CONFD_ERR_PROTOUSAGE (the message says the size needed) and `buf` = "".
///
/// NULL: `buf` must not be NULL; `sz` must be at least 1.
/// Ownership: `buf` stays the caller's.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn cha_txid(sock: c_int, buf: *mut c_char, sz: c_int) -> c_int {
    ffi_boundary!("cha_txid", {
        const F: &str = "cha_txid";
        tri!(check_init(F));
        if buf.is_null() {
            return usage(F, "buf is NULL");
        }
        if sz < 1 {
            return usage(F, format!("sz {sz} is too small (want CHA_TXID_SIZE)"));
        }
        let id = match dc::txid(&mut FdStream(sock)) {
            Ok(id) => id,
            Err(e) => return fail(F, &e),
        };
        // SAFETY: buf has sz >= 1 writable bytes (caller contract).
        unsafe {
            if id.len() >= sz as usize {
                copy_cstr(buf, sz as usize, b"");
                return usage(
                    F,
                    format!(
                        "buffer of {sz} bytes cannot hold transaction id {id:?} ({} bytes + NUL)",
                        id.len()
                    ),
                );
            }
            copy_cstr(buf, sz as usize, id.as_bytes());
        }
        trace(|| format!("{F}(fd {sock}) -> {id:?}"));
        CONFD_OK
    })
}

/// A new, empty transaction. Returns NULL only if the library failed
/// (confd_errno = CONFD_ERR_INTERNAL).
///
/// Ownership: the caller owns the transaction and frees it with
/// `cha_txn_free()`.
/// Threads: a transaction must not be used by two threads at once.
#[no_mangle]
pub extern "C" fn cha_txn_new() -> *mut cha_txn {
    ffi_boundary!("cha_txn_new", {
        Box::into_raw(Box::new(cha_txn { txn: Txn::new() }))
    })
}

/// Adds "set `path` to `*v`" to the transaction. The value is copied (a
/// C_STR is sent as C_BUF); nothing is sent before `cha_txn_commit()`,
/// which also checks the path.
/// Errors: CONFD_ERR_BADTYPE (a type the store does not keep, or
/// C_NOEXISTS: use `cha_txn_delete()`), CONFD_ERR_BADPATH (not UTF-8),
/// CONFD_ERR_PROTOUSAGE.
///
/// NULL: `txn`, `path` and `v` must not be NULL.
/// Ownership: `path` and `v` stay the caller's; they are not retained.
/// Threads: a transaction must not be used by two threads at once.
#[no_mangle]
pub unsafe extern "C" fn cha_txn_set(
    txn: *mut cha_txn,
    path: *const c_char,
    v: *const confd_value_t,
) -> c_int {
    ffi_boundary!("cha_txn_set", {
        const F: &str = "cha_txn_set";
        if txn.is_null() {
            return usage(F, "txn is NULL");
        }
        let p = tri!(unsafe { path_from_c(F, path) });
        let val = tri!(unsafe { value_from_c(F, "v", v) });
        if val == Value::NoExists {
            return fail(
                F,
                &Error::Usage {
                    code: CONFD_ERR_BADTYPE,
                    msg: format!("{F}: v of {p} is C_NOEXISTS (use cha_txn_delete to remove it)"),
                },
            );
        }
        // SAFETY: txn came from cha_txn_new (caller contract).
        unsafe { (*txn).txn.set(&p, val) };
        CONFD_OK
    })
}

/// Adds "delete `path` and everything below it" to the transaction.
/// Deleting a path that does not exist is not an error.
/// Errors: CONFD_ERR_BADPATH (not UTF-8), CONFD_ERR_PROTOUSAGE.
///
/// NULL: `txn` and `path` must not be NULL.
/// Ownership: `path` is not retained.
/// Threads: a transaction must not be used by two threads at once.
#[no_mangle]
pub unsafe extern "C" fn cha_txn_delete(txn: *mut cha_txn, path: *const c_char) -> c_int {
    ffi_boundary!("cha_txn_delete", {
        const F: &str = "cha_txn_delete";
        if txn.is_null() {
            return usage(F, "txn is NULL");
        }
        let p = tri!(unsafe { path_from_c(F, path) });
        // SAFETY: txn came from cha_txn_new (caller contract).
        unsafe { (*txn).txn.delete(&p) };
        CONFD_OK
    })
}

/// Commits the transaction's operations, in order and atomically, on the
/// node at `sock` (a PRIMARY or a NONE node). With synchronous replication
/// it returns when every connected secondary has the transaction durable.
/// On success the transaction is emptied (ready for reuse) and, if `txid`
/// is not NULL, the new transaction id is copied into it (cut to fit
/// `txid_sz`; CHA_TXID_SIZE bytes always suffice). On failure the
/// transaction keeps its operations (e.g. to retry on the new primary).
/// Errors: CONFD_ERR_NOT_WRITABLE (the node is a secondary; `confd_lasterr()`
/// names its primary), CONFD_ERR_BADPATH (a bad path; nothing is written),
/// and the common ones.
///
/// NULL: `txn` must not be NULL; `txid` may be NULL (then `txid_sz` is
/// ignored), else `txid_sz` must be at least 1.
/// Ownership: `txn` and `txid` stay the caller's.
/// Threads: one thread at a time per socket and per transaction.
#[no_mangle]
pub unsafe extern "C" fn cha_txn_commit(
    sock: c_int,
    txn: *mut cha_txn,
    txid: *mut c_char,
    txid_sz: c_int,
) -> c_int {
    ffi_boundary!("cha_txn_commit", {
        const F: &str = "cha_txn_commit";
        tri!(check_init(F));
        if txn.is_null() {
            return usage(F, "txn is NULL");
        }
        if !txid.is_null() && txid_sz < 1 {
            return usage(
                F,
                format!("txid_sz {txid_sz} is too small (want CHA_TXID_SIZE)"),
            );
        }
        // SAFETY: txn came from cha_txn_new (caller contract).
        let t = unsafe { &mut (*txn).txn };
        let id = match dc::commit(&mut FdStream(sock), t) {
            Ok(id) => id,
            Err(e) => return fail(F, &e),
        };
        let n = t.ops.len();
        t.ops.clear();
        if !txid.is_null() {
            // SAFETY: txid has txid_sz >= 1 writable bytes (caller contract).
            let (_, cut) = unsafe { copy_cstr(txid, txid_sz as usize, id.as_bytes()) };
            if cut {
                trace(|| format!("{F}: transaction id {id:?} cut to {txid_sz} bytes"));
            }
        }
        trace(|| format!("{F}(fd {sock}, {n} operations) -> {id:?}"));
        CONFD_OK
    })
}

/// Frees a transaction (committed or not).
///
/// NULL: `txn` may be NULL (nothing happens).
/// Ownership: `txn` must come from `cha_txn_new()`; it is invalid afterwards.
/// Threads: no other thread may be using the transaction.
#[no_mangle]
pub unsafe extern "C" fn cha_txn_free(txn: *mut cha_txn) {
    ffi_boundary!("cha_txn_free", {
        if !txn.is_null() {
            // SAFETY: txn came from cha_txn_new (caller contract).
            drop(unsafe { Box::from_raw(txn) });
        }
    })
}

// ---------------------------------------------------------------------------
// The availability group

/// Fills `*out` with the state of the node at `srv`: its role, id, primary,
/// connected secondaries (at most CHA_MAX_SECONDARIES), last transaction and
/// the times of the last ticks. The call opens its own connection and
/// closes it. With `srv` NULL the node is found from the environment as
/// NSO's libraries find it: NCS_IPC_PATH (a Unix socket); else NCS_IPC_ADDR
/// / NCS_IPC_PORT (port default 4569); else CONFD_IPC_ADDR /
/// CONFD_IPC_PORT; else 127.0.0.1:4565. On failure `*out` is left
/// untouched.
/// Errors: CONFD_ERR_OS (no node there), CONFD_ERR_PROTOUSAGE (bad
/// arguments, an abstract AF_UNIX address), and the common ones.
///
/// NULL: `srv` may be NULL (the environment; `srv_sz` is then ignored);
/// `out` must not be NULL.
/// Ownership: `*out` is the caller's; it holds no pointers.
/// Threads: safe from any thread.
#[no_mangle]
pub unsafe extern "C" fn cha_node_state_get(
    srv: *const sockaddr,
    srv_sz: c_int,
    out: *mut cha_node_state,
) -> c_int {
    ffi_boundary!("cha_node_state_get", {
        const F: &str = "cha_node_state_get";
        tri!(check_init(F));
        if out.is_null() {
            return usage(F, "out is NULL");
        }
        let ep = tri!(unsafe { endpoint_from_c(F, srv, srv_sz) });
        match group::node_state(&ep) {
            Ok(st) => {
                // SAFETY: out is a writable struct (caller contract).
                unsafe { fill_node_state(F, out, &st) };
                trace(|| format!("{F}({ep}) -> role {}", st.state));
                CONFD_OK
            }
            Err(e) => fail(F, &e),
        }
    })
}

/// Fills `*out` with the replication health of the node at `srv` (found
/// as for `cha_node_state_get()`): its seq and txid, on a secondary the time
/// of its last transaction from the primary, and per connected secondary
/// (on a primary or relay) its acknowledged seq, lag in transactions and
/// milliseconds, last tick, copy state and copy counters. The caller sets
/// `out->size` to `sizeof(struct cha_node_health)` first. On failure `*out`
/// is left untouched.
/// Errors: CONFD_ERR_PROTOUSAGE (`out` NULL, `out->size` below
/// CHA_NODE_HEALTH_V1_SIZE, bad address), CONFD_ERR_OS (no node there),
/// CONFD_ERR_PROTOUSAGE from an older ha-node that reports no lag, and the
/// common ones.
///
/// NULL: `srv` may be NULL (the environment); `out` must not be NULL.
/// Ownership: `*out` is the caller's; it holds no pointers.
/// Threads: safe from any thread.
#[no_mangle]
pub unsafe extern "C" fn cha_node_health_get(
    srv: *const sockaddr,
    srv_sz: c_int,
    out: *mut cha_node_health,
) -> c_int {
    ffi_boundary!("cha_node_health_get", {
        const F: &str = "cha_node_health_get";
        tri!(check_init(F));
        // SAFETY: out, when not NULL, points to a struct whose size field the caller set.
        if let Err(why) = unsafe { check_health_out(out) } {
            return usage(F, &why);
        }
        let ep = tri!(unsafe { endpoint_from_c(F, srv, srv_sz) });
        match group::node_state(&ep) {
            Ok(st) => {
                // SAFETY: checked above: out holds at least the first version.
                unsafe { fill_node_health(F, out, &st) }
            }
            Err(e) => fail(F, &e),
        }
    })
}

/// The same as `cha_node_health_get()` over a data socket connected with
/// `cha_data_connect()`.
///
/// NULL: `out` must not be NULL.
/// Ownership: `*out` is the caller's; it holds no pointers.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn cha_data_node_health(sock: c_int, out: *mut cha_node_health) -> c_int {
    ffi_boundary!("cha_data_node_health", {
        const F: &str = "cha_data_node_health";
        tri!(check_init(F));
        // SAFETY: as in cha_node_health_get.
        if let Err(why) = unsafe { check_health_out(out) } {
            return usage(F, &why);
        }
        match dc::node_state(&mut FdStream(sock)) {
            // SAFETY: checked above.
            Ok(st) => unsafe { fill_node_health(F, out, &st) },
            Err(e) => fail(F, &e),
        }
    })
}

/// `out` is not NULL and its `size` covers the first version.
unsafe fn check_health_out(out: *const cha_node_health) -> Result<(), String> {
    if out.is_null() {
        return Err("out is NULL".into());
    }
    // SAFETY: out points to at least the size field (caller contract).
    let size = unsafe { std::ptr::read_unaligned(addr_of!((*out).size)) };
    if size < CHA_NODE_HEALTH_V1_SIZE {
        return Err(format!(
            "out->size is {size}: set it to sizeof(struct cha_node_health) \
             (at least {CHA_NODE_HEALTH_V1_SIZE})"
        ));
    }
    Ok(())
}

/// Fills the caller's `*out` (at least the first version; zeroed first).
unsafe fn fill_node_health(func: &str, out: *mut cha_node_health, st: &NodeState) -> c_int {
    let lags: Vec<_> = st
        .secondaries
        .iter()
        .filter_map(|p| p.lag.as_ref())
        .collect();
    if lags.len() != st.secondaries.len() {
        return usage(
            func,
            "the node reports no lag for its secondaries (an older ha-node)",
        );
    }
    // SAFETY: out is writable for the whole struct (checked size); all zero
    // bytes are a valid cha_node_health.
    let o = unsafe {
        std::ptr::write_bytes(out, 0, 1);
        &mut *out
    };
    o.size = size_of::<cha_node_health>();
    o.role = st.state;
    o.seq = st.seq;
    o.last_txn_ms = st.last_txn_ms.unwrap_or(-1);
    let mut cut = put_text(&mut o.txid, &st.txid);
    let n = st.secondaries.len().min(CHA_MAX_SECONDARIES);
    for (dst, (p, l)) in o
        .secondaries
        .iter_mut()
        .zip(st.secondaries.iter().zip(lags))
    {
        cut |= fill_peer(&mut dst.peer, &p.node, p.last_tick_ms);
        dst.acked_seq = l.acked_seq;
        dst.lag_txns = l.lag_txns;
        dst.lag_ms = l.lag_ms;
        dst.full_copies = l.full_copies;
        dst.catch_ups = l.catch_ups;
        dst.copy_state = if l.copying {
            cha_copy_state::CHA_COPY_COPYING as c_int
        } else {
            cha_copy_state::CHA_COPY_IN_SYNC as c_int
        };
    }
    o.num_secondaries = n as c_int;
    if cut || st.secondaries.len() > n {
        trace(|| format!("{func}: node health cut to fit"));
    }
    trace(|| format!("{func} -> role {}, seq {}", st.state, st.seq));
    CONFD_OK
}

/// The same as `cha_node_state_get()` over a data socket connected with
/// `cha_data_connect()`.
///
/// NULL: `out` must not be NULL.
/// Ownership: `*out` is the caller's; it holds no pointers.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn cha_data_node_state(sock: c_int, out: *mut cha_node_state) -> c_int {
    ffi_boundary!("cha_data_node_state", {
        const F: &str = "cha_data_node_state";
        tri!(check_init(F));
        if out.is_null() {
            return usage(F, "out is NULL");
        }
        match dc::node_state(&mut FdStream(sock)) {
            Ok(st) => {
                // SAFETY: out is a writable struct (caller contract).
                unsafe { fill_node_state(F, out, &st) };
                trace(|| format!("{F}(fd {sock}) -> role {}", st.state));
                CONFD_OK
            }
            Err(e) => fail(F, &e),
        }
    })
}

/// Subscribes to the events in `event_mask` (CHA_EVENT_* bits) of the node
/// at `srv` (NULL: found from the environment as for
/// `cha_node_state_get()`), with heartbeats every `heartbeat_ms` ms when the
/// mask has CHA_EVENT_HEARTBEAT (ha-node sends them at most once a second).
/// On success `*sub` is the running subscription; on failure it is set to
/// NULL.
///
/// The callback runs on a thread the subscription owns: one thread per
/// subscription, one callback at a time, events in the order the node
/// emitted them. It may run before `cha_subscribe()` returns. A role change
/// is reported as observed after each HA event (two quick changes may be
/// reported as one, from the first role to the last). The callback may
/// call any function of the library, including `cha_unsubscribe()` of its
/// own subscription; it must not throw or longjmp out. If the node closes
/// the connection the thread ends quietly; `cha_unsubscribe()` is still
/// needed to free the subscription.
/// Errors: CONFD_ERR_PROTOUSAGE (no known bit in `event_mask`, a bad
/// `heartbeat_ms`, NULL `cb`), CONFD_ERR_OS (no node there), and the common
/// ones.
///
/// NULL: `srv` may be NULL; `cb` and `sub` must not be NULL; `user_data`
/// may be anything (it is only passed to `cb`).
/// Ownership: the caller owns `*sub` and ends it with `cha_unsubscribe()`;
/// `user_data` must stay valid until then.
/// Threads: safe from any thread.
#[no_mangle]
pub unsafe extern "C" fn cha_subscribe(
    srv: *const sockaddr,
    srv_sz: c_int,
    event_mask: c_int,
    heartbeat_ms: c_int,
    cb: cha_event_cb,
    user_data: *mut c_void,
    sub: *mut *mut cha_subscription,
) -> c_int {
    ffi_boundary!("cha_subscribe", {
        const F: &str = "cha_subscribe";
        tri!(check_init(F));
        if sub.is_null() {
            return usage(F, "sub is NULL");
        }
        // SAFETY: sub is writable (caller contract).
        unsafe { sub.write(std::ptr::null_mut()) };
        let Some(cb) = cb else {
            return usage(F, "cb is NULL");
        };
        const KNOWN: c_int = 1 | 2 | 4;
        if event_mask & KNOWN == 0 || event_mask & !KNOWN != 0 {
            return usage(
                F,
                format!("event_mask {event_mask:#x} is not an or of CHA_EVENT_ROLE_CHANGED, CHA_EVENT_HA_INFO, CHA_EVENT_HEARTBEAT"),
            );
        }
        if event_mask & 4 != 0 && heartbeat_ms <= 0 {
            return usage(
                F,
                format!("heartbeat_ms {heartbeat_ms} must be positive with CHA_EVENT_HEARTBEAT"),
            );
        }
        let ep = tri!(unsafe { endpoint_from_c(F, srv, srv_sz) });
        let target = CallbackTarget { cb, user_data };
        let trampoline = move |ev: &GroupEvent| target.call(ev);
        match group::subscribe(&ep, event_mask as u32, heartbeat_ms.into(), trampoline) {
            Ok(s) => {
                let b = Box::into_raw(Box::new(cha_subscription { sub: s }));
                // SAFETY: sub is writable (caller contract).
                unsafe { sub.write(b) };
                trace(|| format!("{F}({ep}, mask {event_mask:#x}) -> CONFD_OK"));
                CONFD_OK
            }
            Err(e) => fail(F, &e),
        }
    })
}

/// Ends a subscription and frees it. From any other thread it stops the
/// subscription's thread and returns when that thread has ended: no
/// callback of the subscription is running when it returns, and none runs
/// afterwards. From inside the subscription's own callback it marks the
/// subscription stopped and returns at once: no further callback runs,
/// and the thread ends when the callback returns. Do not hold, while
/// calling it, a lock that the callback waits for.
///
/// NULL: `sub` may be NULL (nothing happens).
/// Ownership: `sub` must come from `cha_subscribe()`; it is invalid
/// afterwards (also inside the callback that ended it).
/// Threads: safe from any thread, once per subscription.
#[no_mangle]
pub unsafe extern "C" fn cha_unsubscribe(sub: *mut cha_subscription) {
    ffi_boundary!("cha_unsubscribe", {
        if !sub.is_null() {
            // SAFETY: sub came from cha_subscribe (caller contract).
            let s = unsafe { Box::from_raw(sub) };
            s.sub.unsubscribe();
            trace(|| "cha_unsubscribe -> done".to_owned());
        }
    })
}

// ---------------------------------------------------------------------------
// Helpers (not exported)

impl super::PanicResult for *mut cha_txn {
    fn on_panic(func: &str, msg: &str) -> *mut cha_txn {
        <() as super::PanicResult>::on_panic(func, msg);
        std::ptr::null_mut()
    }
}

const C_NOEXISTS: c_int = 1;
const C_BUF: c_int = 5;
const C_BINARY: c_int = 39;

/// The C callback and its pointer, moved to the subscription's thread.
struct CallbackTarget {
    cb: unsafe extern "C" fn(*const cha_event, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: the caller of cha_subscribe hands `user_data` to the
// subscription's thread (documented: the callback runs there).
unsafe impl Send for CallbackTarget {}

impl CallbackTarget {
    /// Runs the callback for one event; a panic (a library bug) stops at
    /// this frame and never reaches the C frames around it.
    fn call(&self, ev: &GroupEvent) {
        ffi_boundary!("cha_event_cb", {
            let e = event_to_c(ev);
            // SAFETY: cb is the caller's callback; e lives across the call.
            unsafe { (self.cb)(&e, self.user_data) }
        })
    }
}

/// A path from C: not NULL, UTF-8 (the node's paths are text).
unsafe fn path_from_c(func: &str, path: *const c_char) -> Result<String, c_int> {
    if path.is_null() {
        return Err(usage(func, "path is NULL"));
    }
    // SAFETY: path is a NUL-terminated string (caller contract).
    let b = unsafe { CStr::from_ptr(path) };
    match b.to_str() {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Err(fail(
            func,
            &Error::Usage {
                code: CONFD_ERR_BADPATH,
                msg: format!("{func}: path {:?} is not UTF-8", b.to_string_lossy()),
            },
        )),
    }
}

/// A UTF-8 C string argument (`what` names it in the error).
unsafe fn text_from_c(func: &str, what: &str, p: *const c_char) -> Result<String, c_int> {
    if p.is_null() {
        return Err(usage(func, format!("{what} is NULL")));
    }
    // SAFETY: p is a NUL-terminated string (caller contract).
    let b = unsafe { CStr::from_ptr(p) };
    b.to_str().map(str::to_owned).map_err(|_| {
        usage(
            func,
            format!("{what} {:?} is not UTF-8", b.to_string_lossy()),
        )
    })
}

/// The node at `srv`, or the one the environment names when `srv` is NULL.
unsafe fn endpoint_from_c(
    func: &str,
    srv: *const sockaddr,
    srv_sz: c_int,
) -> Result<Endpoint, c_int> {
    if srv.is_null() {
        return Ok(Endpoint::from_env());
    }
    // SAFETY: srv points to srv_sz readable bytes (caller contract).
    let desc = unsafe { check_sockaddr(func, srv, srv_sz)? };
    // SAFETY: check_sockaddr checked the size holds the family.
    let family = c_int::from(unsafe { addr_of!((*srv).sa_family).read_unaligned() });
    match family {
        libc::AF_INET | libc::AF_INET6 => Ok(Endpoint::Tcp(desc)),
        _ => {
            use std::os::unix::ffi::OsStrExt;
            const FAM: usize = std::mem::size_of::<libc::sa_family_t>();
            // SAFETY: srv_sz bytes are readable (checked: > FAM).
            let bytes = unsafe {
                std::slice::from_raw_parts(srv.cast::<u8>().add(FAM), srv_sz as usize - FAM)
            };
            if bytes.first() == Some(&0) {
                return Err(usage(
                    func,
                    format!("abstract AF_UNIX address {desc} is not supported (give a path)"),
                ));
            }
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            let path = std::ffi::OsStr::from_bytes(&bytes[..end]);
            Ok(Endpoint::Unix(path.into()))
        }
    }
}

fn no_memory(func: &str, bytes: usize) -> c_int {
    fail(
        func,
        &Error::Usage {
            code: CONFD_ERR_MALLOC,
            msg: format!("{func}: cannot allocate {bytes} bytes"),
        },
    )
}

/// A malloc'ed copy of `b` with a NUL after it (NULL if malloc failed).
unsafe fn malloc_bytes(b: &[u8]) -> *mut u8 {
    // SAFETY: a fresh allocation of b.len() + 1 bytes, filled in full.
    unsafe {
        let p = libc::malloc(b.len() + 1).cast::<u8>();
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(b.as_ptr(), p, b.len());
            p.add(b.len()).write(0);
        }
        p
    }
}

/// Frees a NULL-terminated array of malloc'ed strings and the array.
unsafe fn free_list(arr: *mut *mut c_char) {
    // SAFETY: arr is a NULL-terminated array of malloc'ed pointers.
    unsafe {
        let mut i = 0;
        loop {
            let s = arr.add(i).read();
            if s.is_null() {
                break;
            }
            libc::free(s.cast());
            i += 1;
        }
        libc::free(arr.cast());
    }
}

/// Writes `v` into the caller's `*dst`; C_BUF/C_BINARY bytes go into a
/// malloc'ed, NUL-terminated buffer.
unsafe fn value_to_c(func: &str, v: &Value, dst: *mut confd_value_t) -> Result<(), c_int> {
    // SAFETY: an all-zero confd_value_t is valid (type 0, zero union).
    let mut c: confd_value_t = unsafe { std::mem::zeroed() };
    c.r#type = v.vtype();
    match v {
        Value::NoExists => {}
        Value::Buf(b) | Value::Binary(b) => {
            let Ok(size) = c_uint::try_from(b.len()) else {
                return Err(usage(
                    func,
                    format!("a value of {} bytes is too large", b.len()),
                ));
            };
            // SAFETY: see malloc_bytes.
            let p = unsafe { malloc_bytes(b) };
            if p.is_null() {
                return Err(no_memory(func, b.len() + 1));
            }
            c.val.buf = confd_buf { size, ptr: p };
        }
        Value::Int8(x) => c.val.i8 = *x,
        Value::Int16(x) => c.val.i16 = *x,
        Value::Int32(x) => c.val.i32 = *x,
        Value::Int64(x) => c.val.i64 = *x,
        Value::UInt8(x) => c.val.u8 = *x,
        Value::UInt16(x) => c.val.u16 = *x,
        Value::UInt32(x) => c.val.u32 = *x,
        Value::UInt64(x) => c.val.u64 = *x,
        Value::Double(x) => c.val.d = *x,
        Value::Bool(x) => c.val.boolean = c_int::from(*x),
        Value::Ipv4(a) => {
            c.val.ip = in_addr {
                s_addr: u32::from_ne_bytes(a.octets()),
            }
        }
        Value::Ipv6(a) => {
            c.val.ip6 = in6_addr {
                s6_addr: a.octets(),
            }
        }
        Value::Enum(x) => c.val.enumvalue = *x,
    }
    // SAFETY: dst is a writable confd_value_t (caller contract).
    unsafe { dst.write(c) };
    Ok(())
}

/// Copies text into a fixed C array, cut to fit. Returns true when cut.
fn put_text<const N: usize>(dst: &mut [c_char; N], s: &str) -> bool {
    // SAFETY: dst has N >= 1 writable bytes.
    unsafe { copy_cstr(dst.as_mut_ptr(), N, s.as_bytes()).1 }
}

fn fill_peer(dst: &mut cha_peer, n: &HaNode, last_tick_ms: Option<i64>) -> bool {
    let a = put_text(&mut dst.id, &n.id.to_string());
    let b = put_text(&mut dst.address, &n.addr.to_string());
    dst.last_tick_ms = last_tick_ms.unwrap_or(-1);
    a || b
}

fn empty_peer() -> cha_peer {
    cha_peer {
        id: [0; CHA_ID_SIZE],
        address: [0; CHA_ADDR_SIZE],
        last_tick_ms: -1,
    }
}

/// Fills the caller's `*out` from a node state (zeroing it first).
unsafe fn fill_node_state(func: &str, out: *mut cha_node_state, st: &NodeState) {
    // SAFETY: out is writable for the whole struct (caller contract); all
    // zero bytes are a valid cha_node_state, so it may be referenced.
    let o = unsafe {
        std::ptr::write_bytes(out, 0, 1);
        &mut *out
    };
    let mut cut = false;
    o.role = st.state;
    if let Some(id) = &st.node_id {
        cut |= put_text(&mut o.node_id, &id.to_string());
    }
    o.primary = empty_peer();
    if let Some(p) = &st.primary {
        o.has_primary = 1;
        cut |= fill_peer(&mut o.primary, &p.node, p.last_tick_ms);
    }
    let n = st.secondaries.len().min(CHA_MAX_SECONDARIES);
    for (dst, p) in o.secondaries.iter_mut().zip(&st.secondaries) {
        cut |= fill_peer(dst, &p.node, p.last_tick_ms);
    }
    o.num_secondaries = n as c_int;
    o.seq = st.seq;
    cut |= put_text(&mut o.txid, &st.txid);
    if cut || st.secondaries.len() > n {
        trace(|| {
            format!(
                "{func}: node state cut to fit ({} secondaries)",
                st.secondaries.len()
            )
        });
    }
}

fn event_to_c(ev: &GroupEvent) -> cha_event {
    let mut e = cha_event {
        r#type: 0,
        previous_role: 0,
        new_role: 0,
        ha_info_type: 0,
        ha_info_value: 0,
        ha_info_node: empty_peer(),
        closed_errno: 0,
    };
    match ev {
        GroupEvent::RoleChanged { previous, new } => {
            e.r#type = cha_event_type::CHA_EVENT_ROLE_CHANGED as c_int;
            e.previous_role = previous.state();
            e.new_role = new.state();
        }
        GroupEvent::Heartbeat => e.r#type = cha_event_type::CHA_EVENT_HEARTBEAT as c_int,
        GroupEvent::Closed { errno, .. } => {
            e.r#type = cha_event_type::CHA_EVENT_CLOSED as c_int;
            e.closed_errno = *errno;
        }
        GroupEvent::Ha(h) => {
            e.r#type = cha_event_type::CHA_EVENT_HA_INFO as c_int;
            e.ha_info_type = h.info_type();
            match h {
                HaEvent::NoPrimary { reason } => e.ha_info_value = *reason,
                HaEvent::SecondaryInitialized { by_copy } => {
                    e.ha_info_value = c_int::from(*by_copy)
                }
                HaEvent::BeSecondaryResult { result } => e.ha_info_value = *result,
                HaEvent::SecondaryDied(n) | HaEvent::SecondaryArrived(n) => {
                    fill_peer(&mut e.ha_info_node, n, None);
                }
                HaEvent::IsPrimary | HaEvent::IsNone | HaEvent::Unknown { .. } => {}
            }
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::group::Role;
    use crate::proto::ha::NodeAddr;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts() {
        assert_eq!(size_of::<cha_peer>(), 264);
        assert_eq!(offset_of!(cha_peer, address), 128);
        assert_eq!(offset_of!(cha_peer, last_tick_ms), 256);
        assert_eq!(offset_of!(cha_node_state, node_id), 8);
        assert_eq!(offset_of!(cha_node_state, primary), 136);
        assert_eq!(offset_of!(cha_node_state, num_secondaries), 400);
        assert_eq!(offset_of!(cha_node_state, secondaries), 408);
        assert_eq!(offset_of!(cha_node_state, seq), 67728);
        assert_eq!(offset_of!(cha_node_state, txid), 67736);
        assert_eq!(size_of::<cha_node_state>(), 67992);
        assert_eq!(offset_of!(cha_event, ha_info_value), 16);
        assert_eq!(offset_of!(cha_event, ha_info_node), 24);
        assert_eq!(offset_of!(cha_event, closed_errno), 288);
        assert_eq!(size_of::<cha_event>(), 296);
        assert_eq!(size_of::<cha_secondary_lag>(), 312);
        assert_eq!(offset_of!(cha_secondary_lag, acked_seq), 264);
        assert_eq!(offset_of!(cha_secondary_lag, copy_state), 304);
        assert_eq!(size_of::<cha_node_health>(), CHA_NODE_HEALTH_V1_SIZE);
        assert_eq!(offset_of!(cha_node_health, seq), 16);
        assert_eq!(offset_of!(cha_node_health, last_txn_ms), 24);
        assert_eq!(offset_of!(cha_node_health, num_secondaries), 32);
        assert_eq!(offset_of!(cha_node_health, txid), 40);
        assert_eq!(offset_of!(cha_node_health, secondaries), 296);
    }

    #[test]
    fn roles_are_confd_states() {
        assert_eq!(cha_role::CHA_ROLE_PRIMARY as i32, Role::Primary.state());
        assert_eq!(cha_role::CHA_ROLE_SECONDARY as i32, Role::Secondary.state());
        assert_eq!(cha_role::CHA_ROLE_RELAY as i32, Role::Relay.state());
        assert_eq!(cha_role::CHA_ROLE_NONE as i32, Role::None.state());
        assert_eq!(
            cha_event_type::CHA_EVENT_ROLE_CHANGED as u32,
            group::EVENT_ROLE_CHANGED
        );
        assert_eq!(
            cha_event_type::CHA_EVENT_HA_INFO as u32,
            group::EVENT_HA_INFO
        );
        assert_eq!(
            cha_event_type::CHA_EVENT_HEARTBEAT as u32,
            group::EVENT_HEARTBEAT
        );
    }

    #[test]
    fn events_convert() {
        let e = event_to_c(&GroupEvent::Ha(HaEvent::SecondaryArrived(HaNode {
            id: Value::Buf(b"n2".to_vec()),
            addr: NodeAddr::parse("127.0.0.2"),
        })));
        assert_eq!(e.r#type, 2);
        assert_eq!(e.ha_info_type, 3);
        let id = unsafe { CStr::from_ptr(e.ha_info_node.id.as_ptr()) };
        let ad = unsafe { CStr::from_ptr(e.ha_info_node.address.as_ptr()) };
        assert_eq!(
            (id.to_str().unwrap(), ad.to_str().unwrap()),
            ("n2", "127.0.0.2")
        );
        assert_eq!(e.ha_info_node.last_tick_ms, -1);
        let e = event_to_c(&GroupEvent::RoleChanged {
            previous: Role::None,
            new: Role::Primary,
        });
        assert_eq!((e.r#type, e.previous_role, e.new_role), (1, 1, 3));
    }

    #[test]
    fn values_to_c_and_free() {
        for v in [
            Value::Buf(b"hello".to_vec()),
            Value::Binary(vec![0, 1, 2]),
            Value::UInt16(80),
            Value::Ipv6("::1".parse().unwrap()),
            Value::Bool(true),
        ] {
            let mut c: confd_value_t = unsafe { std::mem::zeroed() };
            unsafe { value_to_c("t", &v, &mut c) }.unwrap_or_else(|_| panic!());
            let back = unsafe { value_from_c("t", "v", &c) }.unwrap_or_else(|_| panic!());
            assert_eq!(back, v);
            unsafe { cha_free_value(&mut c) };
            if matches!(v, Value::Buf(_) | Value::Binary(_)) {
                assert_eq!(c.r#type, C_NOEXISTS);
            } else {
                assert_eq!(c.r#type, v.vtype());
            }
        }
    }
}
