//! `confd_lib.h`: values, HA node records, initialisation, error reporting.
//!
//! Layouts follow ConfD's x86-64 ABI (spec §C); the C test
//! `c-tests/layout.c` checks every size and offset.
//!
//! Enum-typed parameters and fields are `c_int` on the Rust side (the
//! `*Int` aliases below, printed as `enum ...` in the header by cbindgen's
//! rename table): a number coming from C is never read as a Rust enum.

// The C contract of every exported function (pointer validity, NULL,
// ownership, threads) is in its doc comment's fixed phrases, which the
// header carries; a Rust `# Safety` heading would only repeat it.
#![allow(clippy::missing_safety_doc)]
#![allow(non_camel_case_types, non_upper_case_globals)]

use super::{check_init, fail, ffi_boundary, tri, usage};
use crate::client;
use crate::error::Error;
use crate::proto::ha::{HaNode, NodeAddr};
use crate::value::Value;
use libc::{in6_addr, in_addr, sockaddr, FILE};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ptr::{addr_of, addr_of_mut};
use std::sync::OnceLock;

/// Success.
pub const CONFD_OK: c_int = 0;
/// Failure; `confd_errno` and `confd_lasterr()` say why.
pub const CONFD_ERR: c_int = -1;
/// The daemon closed the socket; `confd_errno` is `CONFD_ERR_EOF`.
pub const CONFD_EOF: c_int = -2;
pub const CONFD_DELAYED_RESPONSE: c_int = 2;
pub const CONFD_ACCUMULATE: c_int = 1;
pub const CONFD_VALIDATION_WARN: c_int = -3;
pub const CONFD_ALREADY_LOCKED: c_int = -4;
pub const CONFD_IN_USE: c_int = -5;

/// ConfD's default IPC port.
pub const CONFD_PORT: c_int = 4565;
/// NSO's default IPC port.
pub const NCS_PORT: c_int = 4569;

/// The protocol version this library starts its hello with (NSO 6.7). A
/// daemon of another release refuses it and names its own; the library then
/// connects again with that one (same fd) and remembers it for the daemon.
/// The environment variable `CONFD_HA_LIB_PROTO_VSN` pins a version instead
/// (no adaptation).
pub const CONFD_LIB_PROTO_VSN: c_int = 87;
/// The library version this library starts its hello with (NSO 6.7); after
/// a refusal the daemon's own is sent. `CONFD_HA_LIB_VSN` (decimal or
/// 0x-hex) pins it.
pub const CONFD_LIB_VSN: c_int = 0x0807_0000;
/// The API version `confd_init()` passes to `confd_init_vsn_sz()`.
pub const CONFD_LIB_API_VSN: c_int = 0x0807_0000;

/// `CONFD_TIMEZONE_UNDEF`: no time zone in a date/time value.
pub const CONFD_TIMEZONE_UNDEF: c_int = -111;

/// Longest user name (with its NUL) in `struct confd_user_info`.
pub const MAXUSERNAMELEN: usize = 255;
/// Longest session context (with its NUL) in `struct confd_user_info`.
pub const MAXCTXLEN: usize = 32;
/// Longest daemon name (with its NUL) in a commit-failed event.
pub const MAX_DAEMON_NAME_LEN: usize = 255;

/// Value types (`confd_value_t.type`). The numbers never change.
#[repr(C)]
pub enum confd_vtype {
    C_NOEXISTS = 1,
    C_XMLTAG = 2,
    C_SYMBOL = 3,
    C_STR = 4,
    C_BUF = 5,
    C_INT8 = 6,
    C_INT16 = 7,
    C_INT32 = 8,
    C_INT64 = 9,
    C_UINT8 = 10,
    C_UINT16 = 11,
    C_UINT32 = 12,
    C_UINT64 = 13,
    C_DOUBLE = 14,
    C_IPV4 = 15,
    C_IPV6 = 16,
    C_BOOL = 17,
    C_QNAME = 18,
    C_DATETIME = 19,
    C_DATE = 20,
    C_TIME = 23,
    C_DURATION = 27,
    C_ENUM_VALUE = 28,
    C_BIT32 = 29,
    C_BIT64 = 30,
    C_LIST = 31,
    C_XMLBEGIN = 32,
    C_XMLEND = 33,
    C_OBJECTREF = 34,
    C_UNION = 35,
    C_PTR = 36,
    C_CDBBEGIN = 37,
    C_OID = 38,
    C_BINARY = 39,
    C_IPV4PREFIX = 40,
    C_IPV6PREFIX = 41,
    C_DEFAULT = 42,
    C_DECIMAL64 = 43,
    C_IDENTITYREF = 44,
    C_XMLBEGINDEL = 45,
    C_DQUAD = 46,
    C_HEXSTR = 47,
    C_IPV4_AND_PLEN = 48,
    C_IPV6_AND_PLEN = 49,
    C_BITBIG = 50,
    C_XMLMOVEFIRST = 51,
    C_XMLMOVEAFTER = 52,
    C_EMPTY = 53,
    C_MAXTYPE = 54,
}

/// `enum confd_vtype` as it sits in memory (an int).
pub type VtypeInt = c_int;

/// Debug output levels for `confd_init()` / `confd_set_debug()`.
#[repr(C)]
pub enum confd_debug_level {
    /// No output.
    CONFD_SILENT = 0,
    /// Failed calls are written to `estream` with their errno and message.
    CONFD_DEBUG = 1,
    /// Also every call and its result.
    CONFD_TRACE = 2,
    /// As `CONFD_TRACE` (protocol traces are not written separately).
    CONFD_PROTO_TRACE = 3,
}

/// `enum confd_debug_level` as passed by value (an int).
pub type DebugLevelInt = c_int;

/// An XML tag: namespace and tag hashes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct xml_tag {
    pub tag: u32,
    pub ns: u32,
}

/// A counted byte buffer (C_BUF, C_BINARY, C_HEXSTR, C_BITBIG).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_buf {
    pub size: c_uint,
    pub ptr: *mut u8,
}
pub type confd_buf_t = confd_buf;

/// A counted read-only byte buffer (the `c_buf` view of a C_BUF).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_buf_const {
    pub size: c_uint,
    pub ptr: *const u8,
}
pub type confd_buf_const_t = confd_buf_const;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_qname {
    pub prefix: confd_buf_t,
    pub name: confd_buf_t,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_datetime {
    pub year: i16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub min: u8,
    pub sec: u8,
    pub micro: u32,
    pub timezone: i8,
    pub timezone_minutes: i8,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_date {
    pub year: i16,
    pub month: u8,
    pub day: u8,
    pub timezone: i8,
    pub timezone_minutes: i8,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_time {
    pub hour: u8,
    pub min: u8,
    pub sec: u8,
    pub micro: u32,
    pub timezone: i8,
    pub timezone_minutes: i8,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_duration {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
    pub mins: u32,
    pub secs: u32,
    pub micros: u32,
}

/// A C_LIST: `size` values at `ptr`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_list {
    pub size: c_uint,
    pub ptr: *mut confd_value,
}

/// A C_PTR: a typed pointer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_vptr {
    pub r#type: VtypeInt,
    pub valp: *mut c_void,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_ipv4_prefix {
    pub ip: in_addr,
    pub len: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_ipv6_prefix {
    pub ip6: in6_addr,
    pub len: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_decimal64 {
    pub value: i64,
    pub fraction_digits: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_identityref {
    pub ns: u32,
    pub id: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_dotted_quad {
    pub quad: [u8; 4],
}

/// A hashed keypath (C_OBJECTREF). Opaque here: the HA API never uses one.
pub struct confd_hkeypath {
    _private: [u8; 0],
}
pub type confd_hkeypath_t = confd_hkeypath;

/// An SNMP OID (C_OID): `len` numbers of `oid` are used.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_snmp_oid {
    pub oid: [u32; 128],
    pub len: c_int,
}

/// The value part of `confd_value_t`; which member is valid depends on
/// `type`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union confd_value_union {
    pub xmltag: xml_tag,
    pub symbol: u32,
    pub buf: confd_buf_t,
    pub c_buf: confd_buf_const_t,
    pub s: *mut c_char,
    pub c_s: *const c_char,
    pub i8: i8,
    pub i16: i16,
    pub i32: i32,
    pub i64: i64,
    pub u8: u8,
    pub u16: u16,
    pub u32: u32,
    pub u64: u64,
    pub d: f64,
    pub ip: in_addr,
    pub ip6: in6_addr,
    pub boolean: c_int,
    pub qname: confd_qname,
    pub datetime: confd_datetime,
    pub date: confd_date,
    pub time: confd_time,
    pub duration: confd_duration,
    pub enumvalue: i32,
    pub b32: u32,
    pub b64: u64,
    pub list: confd_list,
    pub hkp: *mut confd_hkeypath_t,
    pub ptr: confd_vptr,
    pub oidp: *mut confd_snmp_oid,
    pub ipv4prefix: confd_ipv4_prefix,
    pub ipv6prefix: confd_ipv6_prefix,
    pub d64: confd_decimal64,
    pub idref: confd_identityref,
    pub dquad: confd_dotted_quad,
    pub enumhash: u32,
}

/// A typed value (40 bytes on x86-64: `type` at 0, `val` at 8). Set it with
/// the `CONFD_SET_*` macros, read it with `CONFD_GET_*`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_value {
    pub r#type: VtypeInt,
    pub val: confd_value_union,
}
pub type confd_value_t = confd_value;

/// The address of an HA node; `af` of `struct confd_ha_node` says which
/// member is valid (AF_INET `ip4`, AF_INET6 `ip6`, AF_UNSPEC `str`).
#[repr(C)]
#[derive(Clone, Copy)]
pub union confd_ha_node_addr {
    pub ip4: in_addr,
    pub ip6: in6_addr,
    pub str: *mut c_char,
}

/// An HA node: its id and its address (320 bytes on x86-64).
///
/// When the library fills one (`confd_ha_get_status()`, notifications), a
/// C_BUF `nodeid` points into `buf` (NUL-terminated, at most 127 bytes; a
/// longer id is cut) and an AF_UNSPEC `addr.str` points into `addr_buf`;
/// those pointers live as long as the struct itself.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_ha_node {
    pub nodeid: confd_value_t,
    pub af: c_int,
    pub addr: confd_ha_node_addr,
    pub buf: [c_char; 128],
    pub addr_buf: [c_char; 128],
}

/// A tagged value (`confd_tag_value_t`): an XML tag and its value, as in
/// the values of a notification stream event. Set and read it with the
/// `CONFD_SET_TAG_*` / `CONFD_GET_TAG_*` macros.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_tag_value {
    pub tag: xml_tag,
    pub v: confd_value_t,
}
pub type confd_tag_value_t = confd_tag_value;

/// Datastores (`enum confd_dbname`).
#[repr(C)]
pub enum confd_dbname {
    CONFD_NO_DB = 0,
    CONFD_CANDIDATE = 1,
    CONFD_RUNNING = 2,
    CONFD_STARTUP = 3,
    CONFD_OPERATIONAL = 4,
    CONFD_TRANSACTION = 5,
    CONFD_PRE_COMMIT_RUNNING = 6,
}

/// `enum confd_dbname` as it sits in memory (an int).
pub type DbnameInt = c_int;

/// Verbosity of progress events (`confd_notifications_data.verbosity`).
#[repr(C)]
pub enum confd_progress_verbosity {
    CONFD_VERBOSITY_NORMAL = 0,
    CONFD_VERBOSITY_VERBOSE = 1,
    CONFD_VERBOSITY_VERY_VERBOSE = 2,
    CONFD_VERBOSITY_DEBUG = 3,
}

/// Northbound protocols of a user session (`enum confd_proto`).
#[repr(C)]
pub enum confd_proto {
    CONFD_PROTO_UNKNOWN = 0,
    CONFD_PROTO_TCP = 1,
    CONFD_PROTO_SSH = 2,
    CONFD_PROTO_SYSTEM = 3,
    CONFD_PROTO_CONSOLE = 4,
    CONFD_PROTO_SSL = 5,
    CONFD_PROTO_HTTP = 6,
    CONFD_PROTO_HTTPS = 7,
    CONFD_PROTO_UDP = 8,
}

/// `enum confd_proto` as it sits in memory (an int).
pub type ProtoInt = c_int;

/// Locks a user session holds (`enum confd_usess_lock_mode`).
#[repr(C)]
pub enum confd_usess_lock_mode {
    CONFD_USESS_LOCK_MODE_NONE = 0,
    CONFD_USESS_LOCK_MODE_PRIVATE = 1,
    CONFD_USESS_LOCK_MODE_EXCLUSIVE = 2,
    CONFD_USESS_LOCK_MODE_SHARED = 3,
}

/// `enum confd_usess_lock_mode` as it sits in memory (an int).
pub type LockModeInt = c_int;

/// Error classes of a callback's error (`enum confd_errcode`).
#[repr(C)]
pub enum confd_errcode {
    CONFD_ERRCODE_IN_USE = 0,
    CONFD_ERRCODE_RESOURCE_DENIED = 1,
    CONFD_ERRCODE_INCONSISTENT_VALUE = 2,
    CONFD_ERRCODE_ACCESS_DENIED = 3,
    CONFD_ERRCODE_APPLICATION = 4,
    CONFD_ERRCODE_APPLICATION_INTERNAL = 5,
    CONFD_ERRCODE_PROTO_USAGE = 6,
    CONFD_ERRCODE_INTERNAL = 7,
    CONFD_ERRCODE_DATA_MISSING = 8,
    CONFD_ERRCODE_INTERRUPT = 9,
}

/// `enum confd_errcode` as it sits in memory (an int).
pub type ErrcodeInt = c_int;

/// A callback's error (`struct confd_error`, 32 bytes on x86-64).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_error {
    pub code: ErrcodeInt,
    pub apptag: xml_tag,
    pub str: *mut c_char,
    pub info: *mut c_void,
}

/// A data provider daemon's context. Opaque here: this library has no
/// data provider API.
pub struct confd_daemon_ctx {
    _private: [u8; 0],
}

/// A data provider's action callbacks. Opaque here.
pub struct confd_action_cbs {
    _private: [u8; 0],
}

/// A transaction of a data provider or MAAPI (`struct confd_trans_ctx`).
/// Opaque here: this library has neither API; a commit-diff event would
/// carry one.
pub struct confd_trans_ctx {
    _private: [u8; 0],
}

/// An action callback's context (`struct confd_action_ctx`, 120 bytes on
/// x86-64), part of `struct confd_user_info`. This library never fills
/// one.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_action_ctx {
    pub fd: c_int,
    pub dx: *mut confd_daemon_ctx,
    pub t_opaque: *mut c_void,
    pub error: confd_error,
    pub cb_opaque: *mut c_void,
    pub thandle: c_int,
    pub actionpoint_opaque: *mut c_char,
    pub state: c_int,
    pub last_op: c_int,
    pub seen_reply: c_int,
    pub rterm: *mut c_void,
    pub query_ref: c_int,
    pub acb: *mut confd_action_cbs,
}

/// An IPv4 or IPv6 address; `af` of the enclosing struct says which.
#[repr(C)]
#[derive(Clone, Copy)]
pub union confd_ip_addr {
    pub v4: in_addr,
    pub v6: in6_addr,
}

/// An address with its family (`struct confd_ip`, 20 bytes): `af` is
/// AF_INET (`ip.v4`) or AF_INET6 (`ip.v6`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_ip {
    pub af: c_int,
    pub ip: confd_ip_addr,
}

/// A user session (`struct confd_user_info`, 992 bytes on x86-64), as
/// carried by commit, user-session, forward and confirmed-commit events.
/// This library never fills one.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_user_info {
    pub af: c_int,
    pub ip: confd_ip_addr,
    pub port: u16,
    pub username: [c_char; MAXUSERNAMELEN],
    pub usid: c_int,
    pub context: [c_char; MAXCTXLEN],
    pub proto: ProtoInt,
    pub actx: confd_action_ctx,
    pub logintime: libc::time_t,
    pub lmode: LockModeInt,
    pub snmp_v3_ctx: [c_char; 255],
    pub clearpass: [c_char; 255],
    pub flags: c_int,
    pub u_opaque: *mut c_void,
    pub errstr: *mut c_char,
    pub refc: c_int,
}

/// What an SNMP varbind names (`enum confd_snmp_var_type`).
#[repr(C)]
pub enum confd_snmp_var_type {
    CONFD_SNMP_VARIABLE = 1,
    CONFD_SNMP_OID = 2,
    CONFD_SNMP_COL_ROW = 3,
}

/// `enum confd_snmp_var_type` as it sits in memory (an int).
pub type SnmpVarTypeInt = c_int;

/// SNMP value types (`enum confd_snmp_type`).
#[repr(C)]
pub enum confd_snmp_type {
    CONFD_SNMP_NULL = 0,
    CONFD_SNMP_INTEGER = 1,
    CONFD_SNMP_Interger32 = 2,
    CONFD_SNMP_OCTET_STRING = 3,
    CONFD_SNMP_OBJECT_IDENTIFIER = 4,
    CONFD_SNMP_IpAddress = 5,
    CONFD_SNMP_Counter32 = 6,
    CONFD_SNMP_TimeTicks = 7,
    CONFD_SNMP_Opaque = 8,
    CONFD_SNMP_Counter64 = 9,
    CONFD_SNMP_Unsigned32 = 10,
}

/// `enum confd_snmp_type` as it sits in memory (an int).
pub type SnmpTypeInt = c_int;

/// A table column and row index of an SNMP varbind.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_snmp_col_row {
    pub column: [c_char; 256],
    pub rowindex: confd_snmp_oid,
}

/// The name part of an SNMP varbind; `type` of the varbind says which.
#[repr(C)]
#[derive(Clone, Copy)]
pub union confd_snmp_var {
    pub name: [c_char; 256],
    pub oid: confd_snmp_oid,
    pub cr: confd_snmp_col_row,
}

/// An SNMP varbind (`struct confd_snmp_varbind`), as in SNMP events.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct confd_snmp_varbind {
    pub r#type: SnmpVarTypeInt,
    pub var: confd_snmp_var,
    pub val: confd_value_t,
    pub vartype: SnmpTypeInt,
}

/// Deepest keypath the data model uses, as the daemon told us in the hello
/// of the last connection (0 before any connection).
#[no_mangle]
pub static mut confd_maxdepth: c_int = 0;

/// Most keys of a list in the data model, as the daemon told us in the hello
/// of the last connection (0 before any connection).
#[no_mangle]
pub static mut confd_maxkeylen: c_int = 0;

/// Kept for source compatibility; this library never writes to syslog.
#[no_mangle]
pub static mut confd_lib_use_syslog: c_int = 0;

/// Initialises the library; use it through the `confd_init()` macro, which
/// passes the header's `CONFD_LIB_API_VSN`, `MAXDEPTH` and `MAXKEYLEN`.
/// Must be called before any other function; calling it again only updates
/// the debug settings. Sets SIGPIPE to SIG_IGN if it was SIG_DFL (writes use
/// MSG_NOSIGNAL anyway).
///
/// NULL: `name` may be NULL; `estream` may be NULL (no debug output).
/// Ownership: the caller keeps `estream` and must keep it open while the
/// library may write to it (until `confd_set_debug()` replaces it).
/// Threads: call once, before other threads use the library.
#[no_mangle]
pub unsafe extern "C" fn confd_init_vsn_sz(
    name: *const c_char,
    estream: *mut FILE,
    debug: DebugLevelInt,
    vsn: c_int,
    maxdepth: c_int,
    maxkeylen: c_int,
) {
    ffi_boundary!("confd_init_vsn_sz", {
        // SAFETY: a SIG_IGN disposition for SIGPIPE only changes what a
        // write to a closed socket does.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_DFL
            {
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            }
        }
        super::set_debug(debug, estream);
        // maxdepth / maxkeylen size the program's own keypath arrays; the
        // hello announces the library's (no limit), see
        // proto::hello::ANNOUNCED_MAXDEPTH.
        super::set_initialized();
        super::trace(|| {
            let n = if name.is_null() {
                "(null)".to_owned()
            } else {
                // SAFETY: name is a NUL-terminated string (documented).
                unsafe { CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned()
            };
            format!(
                "confd_init(name={n}, debug={debug}, vsn={vsn:#010x}, maxdepth={maxdepth}, maxkeylen={maxkeylen}) library {}",
                crate::VERSION
            )
        });
    })
}

/// The same as `confd_init(name, estream, debug)` for callers that cannot
/// use the header's macro (dlopen users such as Python's ctypes).
/// cbindgen:ignore
#[export_name = "confd_init"]
pub unsafe extern "C" fn confd_init_function(
    name: *const c_char,
    estream: *mut FILE,
    debug: DebugLevelInt,
) {
    confd_init_vsn_sz(
        name,
        estream,
        debug,
        CONFD_LIB_API_VSN,
        crate::proto::hello::DEFAULT_MAXDEPTH.into(),
        crate::proto::hello::DEFAULT_MAXKEYLEN.into(),
    )
}

/// Changes the debug level and stream. Returns CONFD_OK.
///
/// NULL: `estream` may be NULL (no debug output).
/// Ownership: the caller keeps `estream` open while the library may write to it.
/// Threads: safe from any thread; affects all threads.
#[no_mangle]
pub unsafe extern "C" fn confd_set_debug(debug: DebugLevelInt, estream: *mut FILE) -> c_int {
    ffi_boundary!("confd_set_debug", {
        super::set_debug(debug, estream);
        CONFD_OK
    })
}

/// The address of this thread's error number; use it through the
/// `confd_errno` macro. Every failing call sets it.
///
/// Lifetime: the pointer is valid for the life of the calling thread.
/// Threads: each thread has its own `confd_errno`.
#[no_mangle]
pub extern "C" fn confd_errno_location() -> *mut c_int {
    ffi_boundary!("confd_errno_location", { super::errno_location() })
}

/// The message of this thread's last failed call ("" if none failed yet),
/// e.g. the daemon's reason text or "confd_ha_connect: token is NULL".
///
/// Ownership: the string belongs to the library; do not free or modify it.
/// Lifetime: valid until the next failing call on the same thread.
/// Threads: each thread has its own last error.
#[no_mangle]
pub extern "C" fn confd_lasterr() -> *mut c_char {
    ffi_boundary!("confd_lasterr", { super::lasterr_ptr().cast_mut() })
}

/// ConfD's fixed description of an error number ("Unknown error" for
/// numbers without one).
///
/// Ownership: the string belongs to the library; do not free or modify it.
/// Lifetime: valid for the life of the process.
/// Threads: safe from any thread.
#[no_mangle]
pub extern "C" fn confd_strerror(code: c_int) -> *mut c_char {
    ffi_boundary!("confd_strerror", {
        static TEXTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        const N: i32 = 128;
        let texts = TEXTS.get_or_init(|| {
            (0..N)
                .map(|c| {
                    let mut t = crate::errcode::strerror(c).as_bytes().to_vec();
                    t.push(0);
                    t
                })
                .collect()
        });
        let idx = if (0..N).contains(&code) { code } else { 0 };
        texts[idx as usize].as_ptr().cast::<c_char>().cast_mut()
    })
}

/// The version of this library ("0.1.0"), equal to `CONFD_HA_VERSION` of
/// the header it was built with.
///
/// Ownership: the string belongs to the library; do not free it.
/// Lifetime: valid for the life of the process.
/// Threads: safe from any thread.
#[no_mangle]
pub extern "C" fn confd_ha_lib_version() -> *const c_char {
    ffi_boundary!("confd_ha_lib_version", {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
    })
}

/// Connects the caller's socket `sock` to the daemon at `srv` and runs the
/// IPC hello as client `id` (17 = HA, 11 = notifications). Sets
/// `confd_maxdepth` / `confd_maxkeylen` from the daemon's answer.
/// Returns CONFD_OK, CONFD_ERR (CONFD_ERR_OS for a failed connect(2),
/// CONFD_ERR_PROTOUSAGE for bad arguments or a refused hello) or CONFD_EOF.
///
/// NULL: `srv` must not be NULL (CONFD_ERR_PROTOUSAGE).
/// Ownership: the caller keeps `sock` and `srv`; on failure the caller must
/// close `sock` and create a new socket before retrying.
/// Threads: safe from any thread for distinct sockets.
#[no_mangle]
pub unsafe extern "C" fn confd_do_connect(
    sock: c_int,
    srv: *const sockaddr,
    srv_sz: c_int,
    id: c_int,
) -> c_int {
    ffi_boundary!("confd_do_connect", {
        const F: &str = "confd_do_connect";
        tri!(check_init(F));
        let Ok(id) = u8::try_from(id) else {
            return usage(F, format!("client id {id} is not in 0..=255"));
        };
        tri!(connect_and_hello(F, sock, srv, srv_sz, id));
        CONFD_OK
    })
}

/// Writes the text form of the value `*v` into `buf`, as snprintf(3)
/// does: at most `bufsiz` bytes including the terminating NUL, and returns
/// the length of the whole text (not counting the NUL) even when it was
/// cut, so a result >= `bufsiz` means the text was cut. Never negative.
///
/// Forms: C_BUF/C_STR as their bytes; integers in decimal; C_DOUBLE in
/// the shortest decimal that reads back the same; C_BOOL "true"/"false";
/// C_IPV4/C_IPV6 (and their prefixes "a.b.c.d/len") in the usual
/// notation; C_BINARY as upper-case hex digits; C_HEXSTR as "0a:ff";
/// C_ENUM_VALUE "enum<N>"; C_BIT32/C_BIT64/C_BITBIG "bits<X>" (hex);
/// C_DECIMAL64 with its fraction digits ("invalid64<N>" when they are not
/// 1..18); C_XMLTAG/C_XMLBEGIN/C_XMLEND/C_XMLBEGINDEL "tag<N>";
/// C_IDENTITYREF "idref<N>" (no schema is loaded by this library);
/// C_DATETIME/C_DATE/C_TIME/C_DURATION in their XML Schema forms; C_QNAME
/// "prefix:name"; C_DQUAD "a.b.c.d"; C_OID "1.3.6"; C_LIST its elements
/// between "[" and "]" separated by spaces; C_NOEXISTS, C_DEFAULT and
/// C_EMPTY as "". Any other type prints as "<type N>".
///
/// NULL: `buf` may be NULL when `bufsiz` is 0; `v` NULL prints "".
/// Ownership: the caller keeps `buf` and `*v`; nothing is retained.
/// Threads: safe from any thread.
#[no_mangle]
pub unsafe extern "C" fn confd_pp_value(
    buf: *mut c_char,
    bufsiz: c_int,
    v: *const confd_value_t,
) -> c_int {
    ffi_boundary!("confd_pp_value", {
        // SAFETY: v is NULL or a readable value whose pointers are valid as
        // its type says (caller contract).
        let text = if v.is_null() {
            Vec::new()
        } else {
            unsafe { pp_bytes(v, 0) }
        };
        if bufsiz > 0 && !buf.is_null() {
            // SAFETY: buf has room for bufsiz bytes (caller contract).
            unsafe { super::copy_cstr(buf, bufsiz as usize, &text) };
        }
        c_int::try_from(text.len()).unwrap_or(c_int::MAX)
    })
}

/// ConfD's deprecated variant of `confd_pp_value()`: `ns` is ignored and
/// the result is `confd_pp_value(buf, bufsiz, v)`.
///
/// NULL: as `confd_pp_value()`.
/// Threads: safe from any thread.
#[no_mangle]
pub unsafe extern "C" fn confd_ns_pp_value(
    buf: *mut c_char,
    bufsiz: c_int,
    v: *const confd_value_t,
    ns: c_int,
) -> c_int {
    let _ = ns;
    // SAFETY: same contract as confd_pp_value.
    unsafe { confd_pp_value(buf, bufsiz, v) }
}

/// How deep C_LIST values may nest in `confd_pp_value()` before the rest
/// prints as "[...]" (a list of lists does not occur in ConfD's values;
/// the bound only stops a self-referencing list).
const PP_MAX_LIST_DEPTH: usize = 4;

/// The text of one C value (see `confd_pp_value`).
///
/// # Safety
/// `v` must point to a readable value whose pointers are valid as its type
/// says.
unsafe fn pp_bytes(v: *const confd_value_t, depth: usize) -> Vec<u8> {
    use crate::value::pp;
    // SAFETY (whole block): v is readable; each union member is read as the
    // type number says.
    unsafe {
        let ty = addr_of!((*v).r#type).read();
        let u = addr_of!((*v).val);
        let bytes = |b: confd_buf| -> Vec<u8> {
            if b.ptr.is_null() || b.size == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(b.ptr, b.size as usize).to_vec()
            }
        };
        let s: String = match ty {
            4 => {
                let p = (*u).c_s;
                return if p.is_null() {
                    Vec::new()
                } else {
                    CStr::from_ptr(p).to_bytes().to_vec()
                };
            }
            5 => return bytes((*u).buf),
            6 => (*u).i8.to_string(),
            7 => (*u).i16.to_string(),
            8 => (*u).i32.to_string(),
            9 => (*u).i64.to_string(),
            10 => (*u).u8.to_string(),
            11 => (*u).u16.to_string(),
            12 => (*u).u32.to_string(),
            13 => (*u).u64.to_string(),
            14 => (*u).d.to_string(),
            15 => Ipv4Addr::from((*u).ip.s_addr.to_ne_bytes()).to_string(),
            16 => Ipv6Addr::from((*u).ip6.s6_addr).to_string(),
            17 => if (*u).boolean != 0 { "true" } else { "false" }.to_owned(),
            18 => {
                let q = (*u).qname;
                let (pre, name) = (bytes(q.prefix), bytes(q.name));
                let mut out = pre;
                if !out.is_empty() {
                    out.push(b':');
                }
                out.extend_from_slice(&name);
                return out;
            }
            19 => {
                let d = (*u).datetime;
                pp::datetime(
                    d.year,
                    d.month,
                    d.day,
                    d.hour,
                    d.min,
                    d.sec,
                    d.micro,
                    d.timezone,
                    d.timezone_minutes,
                )
            }
            20 => {
                let d = (*u).date;
                pp::date(d.year, d.month, d.day, d.timezone, d.timezone_minutes)
            }
            23 => {
                let t = (*u).time;
                pp::time(
                    t.hour,
                    t.min,
                    t.sec,
                    t.micro,
                    t.timezone,
                    t.timezone_minutes,
                )
            }
            27 => {
                let d = (*u).duration;
                pp::duration(d.years, d.months, d.days, d.hours, d.mins, d.secs, d.micros)
            }
            28 => format!("enum<{}>", (*u).enumvalue),
            29 => format!("bits<{:x}>", (*u).b32),
            30 => format!("bits<{:x}>", (*u).b64),
            31 => {
                let l = (*u).list;
                if depth >= PP_MAX_LIST_DEPTH {
                    return b"[...]".to_vec();
                }
                let mut out = b"[".to_vec();
                if !l.ptr.is_null() {
                    for i in 0..l.size as usize {
                        if i > 0 {
                            out.push(b' ');
                        }
                        out.extend(pp_bytes(l.ptr.add(i), depth + 1));
                    }
                }
                out.push(b']');
                return out;
            }
            2 | 32 | 33 | 45 => format!("tag<{}>", (*u).xmltag.tag),
            38 => {
                let p = (*u).oidp;
                if p.is_null() {
                    String::new()
                } else {
                    let n = usize::try_from((*p).len).unwrap_or(0).min(128);
                    let oid = &(*p).oid;
                    let parts: Vec<String> = oid[..n].iter().map(u32::to_string).collect();
                    parts.join(".")
                }
            }
            39 => pp::hex_upper(&bytes((*u).buf)),
            40 | 48 => {
                let p = (*u).ipv4prefix;
                format!("{}/{}", Ipv4Addr::from(p.ip.s_addr.to_ne_bytes()), p.len)
            }
            41 | 49 => {
                let p = (*u).ipv6prefix;
                format!("{}/{}", Ipv6Addr::from(p.ip6.s6_addr), p.len)
            }
            43 => pp::decimal64((*u).d64.value, (*u).d64.fraction_digits),
            44 => format!("idref<{}>", (*u).idref.id),
            46 => {
                let q = (*u).dquad.quad;
                format!("{}.{}.{}.{}", q[0], q[1], q[2], q[3])
            }
            47 => pp::hex_colon(&bytes((*u).buf)),
            50 => pp::bitbig(&bytes((*u).buf)),
            1 | 42 | 53 => String::new(),
            other => format!("<type {other}>"),
        };
        s.into_bytes()
    }
}

/// Releases the memory a value points to when that memory came from
/// malloc(3) — as values from `cha_get()` do (and, with ConfD, values from
/// CDB/MAAPI reads and `confd_str2val()`): the buffer of C_BUF, C_BINARY,
/// C_HEXSTR and C_BITBIG, both buffers of C_QNAME, the elements and array
/// of C_LIST, the OID of C_OID and the keypath of C_OBJECTREF. The freed
/// pointers are set to NULL (sizes to 0); other types are left alone. The
/// struct itself is not freed.
///
/// Never pass a value whose memory the program or the library owns
/// otherwise: the node ids in `confd_ha_get_status()` results and in
/// notifications point into their struct's `buf`, and a value set with
/// `CONFD_SET_BUF` points wherever the program pointed it.
///
/// NULL: `v` may be NULL (nothing happens).
/// Threads: one thread at a time per value.
#[no_mangle]
pub unsafe extern "C" fn confd_free_value(v: *mut confd_value_t) {
    ffi_boundary!("confd_free_value", {
        if !v.is_null() {
            // SAFETY: v is a writable value whose pointers came from malloc
            // as its type says (caller contract).
            unsafe { free_value(v, 0) }
        }
    })
}

/// # Safety
/// As `confd_free_value`.
unsafe fn free_value(v: *mut confd_value_t, depth: usize) {
    // SAFETY (whole block): see confd_free_value.
    unsafe {
        let u = addr_of_mut!((*v).val);
        let free_buf = |b: *mut confd_buf| {
            libc::free((*b).ptr.cast());
            (*b).ptr = std::ptr::null_mut();
            (*b).size = 0;
        };
        match addr_of!((*v).r#type).read() {
            5 | 39 | 47 | 50 => free_buf(addr_of_mut!((*u).buf)),
            18 => {
                free_buf(addr_of_mut!((*u).qname.prefix));
                free_buf(addr_of_mut!((*u).qname.name));
            }
            31 => {
                let l = addr_of_mut!((*u).list);
                if !(*l).ptr.is_null() && depth < PP_MAX_LIST_DEPTH {
                    for i in 0..(*l).size as usize {
                        free_value((*l).ptr.add(i), depth + 1);
                    }
                }
                libc::free((*l).ptr.cast());
                (*l).ptr = std::ptr::null_mut();
                (*l).size = 0;
            }
            34 => {
                libc::free((*u).hkp.cast());
                (*u).hkp = std::ptr::null_mut();
            }
            38 => {
                libc::free((*u).oidp.cast());
                (*u).oidp = std::ptr::null_mut();
            }
            _ => {}
        }
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "confd_fatal's entry point (a jump to its C body) is written for x86-64 and aarch64 only"
);

/// Formats the printf(3)-style message `fmt` and its arguments, writes it
/// to stderr and exits the process with status 1, as ConfD's
/// `confd_fatal()` does. No newline is added.
///
/// NULL: `fmt` must not be NULL.
/// Threads: safe from any thread; ends the whole process.
///
/// The header declares it as `void confd_fatal(const char *fmt, ...)`.
/// The entry point jumps to the C body with every register and the stack
/// untouched, so the variadic arguments arrive as the caller passed them.
///
/// cbindgen:ignore
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn confd_fatal(fmt: *const c_char) -> ! {
    #[cfg(target_arch = "x86_64")]
    std::arch::naked_asm!("jmp {body}", body = sym super::confd_ha_fatal_impl);
    #[cfg(target_arch = "aarch64")]
    std::arch::naked_asm!("b {body}", body = sym super::confd_ha_fatal_impl);
}

// ---- helpers shared by the other ffi modules (not exported) ----

/// Checks `srv`/`srv_sz`, connects `sock` and runs the hello as `id`,
/// adapting to the daemon's protocol version (see `ffi::connect`). Sets
/// `confd_maxdepth` / `confd_maxkeylen` from the daemon's answer.
///
/// # Safety
/// `srv` must be NULL or point to `srv_sz` readable bytes.
pub(crate) unsafe fn connect_and_hello(
    func: &str,
    sock: c_int,
    srv: *const sockaddr,
    srv_sz: c_int,
    id: u8,
) -> Result<client::Settled, c_int> {
    let desc = check_sockaddr(func, srv, srv_sz)?;
    // SAFETY: srv/srv_sz were validated by check_sockaddr.
    let settled = unsafe { super::connect::connect_adapting(func, sock, srv, srv_sz, &desc, id)? };
    // SAFETY: plain int globals, written as ConfD's library writes them.
    unsafe {
        addr_of_mut!(confd_maxdepth).write(settled.daemon.maxdepth.into());
        addr_of_mut!(confd_maxkeylen).write(settled.daemon.maxkeylen.into());
    }
    Ok(settled)
}

/// Validates a socket address from C and describes it for messages
/// ("127.0.0.1:4565", "[::1]:4565", "/tmp/ha.sock").
///
/// # Safety
/// `srv` must be NULL or point to `srv_sz` readable bytes.
pub(crate) unsafe fn check_sockaddr(
    func: &str,
    srv: *const sockaddr,
    srv_sz: c_int,
) -> Result<String, c_int> {
    if srv.is_null() {
        return Err(usage(func, "srv is NULL"));
    }
    const FAM: c_int = std::mem::size_of::<libc::sa_family_t>() as c_int;
    const STORAGE: c_int = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
    if srv_sz < FAM {
        return Err(usage(
            func,
            format!("srv_sz {srv_sz} is too small for a socket address"),
        ));
    }
    // SAFETY: srv points to at least FAM bytes (checked above); read
    // unaligned because C may pass any byte buffer.
    let family = unsafe { addr_of!((*srv).sa_family).read_unaligned() } as c_int;
    let range = |lo: usize, hi: usize, what: &str| -> Result<(), c_int> {
        if (srv_sz as usize) < lo || srv_sz as usize > hi {
            Err(usage(
                func,
                format!(
                    "srv_sz {srv_sz} does not fit {what} (expected {lo}..={hi}, sizeof(struct {}) = {lo})",
                    match what {
                        "AF_INET" => "sockaddr_in",
                        "AF_INET6" => "sockaddr_in6",
                        _ => "sockaddr_un path",
                    }
                ),
            ))
        } else {
            Ok(())
        }
    };
    match family {
        libc::AF_INET => {
            range(
                std::mem::size_of::<libc::sockaddr_in>(),
                STORAGE as usize,
                "AF_INET",
            )?;
            // SAFETY: size checked.
            let sin = unsafe { srv.cast::<libc::sockaddr_in>().read_unaligned() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(format!("{ip}:{}", u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            range(
                std::mem::size_of::<libc::sockaddr_in6>(),
                STORAGE as usize,
                "AF_INET6",
            )?;
            // SAFETY: size checked.
            let sin6 = unsafe { srv.cast::<libc::sockaddr_in6>().read_unaligned() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(format!("[{ip}]:{}", u16::from_be(sin6.sin6_port)))
        }
        libc::AF_UNIX => {
            range(
                FAM as usize + 1,
                std::mem::size_of::<libc::sockaddr_un>(),
                "AF_UNIX",
            )?;
            // SAFETY: srv_sz bytes are readable; the path follows the family.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    srv.cast::<u8>().add(FAM as usize),
                    (srv_sz - FAM) as usize,
                )
            };
            let (abstract_, path) = match bytes.split_first() {
                Some((0, rest)) => (true, rest),
                _ => (false, bytes),
            };
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            let p = String::from_utf8_lossy(&path[..end]);
            Ok(if abstract_ {
                format!("@{p}")
            } else {
                p.into_owned()
            })
        }
        other => Err(usage(
            func,
            format!("unsupported address family {other} (expected AF_INET, AF_INET6 or AF_UNIX)"),
        )),
    }
}

/// The name of a `confd_vtype` number for messages ("C_QNAME (18)").
fn vtype_name(t: c_int) -> String {
    const NAMES: &[(c_int, &str)] = &[
        (1, "C_NOEXISTS"),
        (2, "C_XMLTAG"),
        (3, "C_SYMBOL"),
        (4, "C_STR"),
        (5, "C_BUF"),
        (18, "C_QNAME"),
        (19, "C_DATETIME"),
        (20, "C_DATE"),
        (23, "C_TIME"),
        (27, "C_DURATION"),
        (29, "C_BIT32"),
        (30, "C_BIT64"),
        (31, "C_LIST"),
        (34, "C_OBJECTREF"),
        (36, "C_PTR"),
        (38, "C_OID"),
        (40, "C_IPV4PREFIX"),
        (41, "C_IPV6PREFIX"),
        (43, "C_DECIMAL64"),
        (44, "C_IDENTITYREF"),
        (46, "C_DQUAD"),
        (47, "C_HEXSTR"),
        (50, "C_BITBIG"),
        (53, "C_EMPTY"),
    ];
    match NAMES.iter().find(|(n, _)| *n == t) {
        Some((_, name)) => format!("{name} ({t})"),
        None => format!("type {t}"),
    }
}

/// Converts a caller's `confd_value_t` into a [`Value`]: the one place where
/// C values enter the library. `what` names the argument in messages.
///
/// # Safety
/// `v` must be NULL or point to a readable `confd_value_t` whose pointers
/// (for C_BUF/C_BINARY/C_STR) are valid as the type says.
pub(crate) unsafe fn value_from_c(
    func: &str,
    what: &str,
    v: *const confd_value_t,
) -> Result<Value, c_int> {
    use crate::errcode::CONFD_ERR_BADTYPE;
    if v.is_null() {
        return Err(usage(func, format!("{what} is NULL")));
    }
    // SAFETY (whole block): v is readable (caller contract); each union
    // member is read as the type number says, via raw pointers.
    unsafe {
        let ty = addr_of!((*v).r#type).read();
        let val = addr_of!((*v).val);
        let buf = |kind: &str| -> Result<Vec<u8>, c_int> {
            let b = (*val).buf;
            if b.size == 0 {
                Ok(Vec::new())
            } else if b.ptr.is_null() {
                Err(usage(
                    func,
                    format!("{what} is a {kind} of {} bytes with a NULL pointer", b.size),
                ))
            } else {
                Ok(std::slice::from_raw_parts(b.ptr, b.size as usize).to_vec())
            }
        };
        Ok(match ty {
            1 => Value::NoExists,
            4 => {
                let s = (*val).c_s;
                if s.is_null() {
                    return Err(usage(func, format!("{what} is a C_STR with a NULL pointer")));
                }
                Value::Buf(CStr::from_ptr(s).to_bytes().to_vec())
            }
            5 => Value::Buf(buf("C_BUF")?),
            6 => Value::Int8((*val).i8),
            7 => Value::Int16((*val).i16),
            8 => Value::Int32((*val).i32),
            9 => Value::Int64((*val).i64),
            10 => Value::UInt8((*val).u8),
            11 => Value::UInt16((*val).u16),
            12 => Value::UInt32((*val).u32),
            13 => Value::UInt64((*val).u64),
            14 if !(*val).d.is_finite() => {
                return Err(fail(
                    func,
                    &Error::Usage {
                        code: CONFD_ERR_BADTYPE,
                        msg: format!(
                            "{func}: {what} is the C_DOUBLE {}, which the Erlang term format cannot carry (only finite doubles)",
                            (*val).d
                        ),
                    },
                ))
            }
            14 => Value::Double((*val).d),
            15 => Value::Ipv4(Ipv4Addr::from((*val).ip.s_addr.to_ne_bytes())),
            16 => Value::Ipv6(Ipv6Addr::from((*val).ip6.s6_addr)),
            17 => Value::Bool((*val).boolean != 0),
            28 => Value::Enum((*val).enumvalue),
            39 => Value::Binary(buf("C_BINARY")?),
            other => {
                return Err(fail(
                    func,
                    &Error::Usage {
                        code: CONFD_ERR_BADTYPE,
                        msg: format!(
                            "{func}: {what} of {} is not supported (use C_BUF, C_STR, an integer, C_BOOL, C_DOUBLE, C_IPV4, C_IPV6, C_ENUM_VALUE or C_BINARY)",
                            vtype_name(other)
                        ),
                    },
                ))
            }
        })
    }
}

/// Converts a caller's `struct confd_ha_node` (node id and address).
///
/// # Safety
/// `n` must be NULL or point to a readable `struct confd_ha_node`.
pub(crate) unsafe fn ha_node_from_c(
    func: &str,
    what: &str,
    n: *const confd_ha_node,
) -> Result<HaNode, c_int> {
    if n.is_null() {
        return Err(usage(func, format!("{what} is NULL")));
    }
    // SAFETY: n is readable (caller contract); the address member is read
    // as `af` says.
    unsafe {
        let id = value_from_c(func, &format!("{what}->nodeid"), addr_of!((*n).nodeid))?;
        let af = addr_of!((*n).af).read();
        let addr = addr_of!((*n).addr);
        let addr = match af {
            libc::AF_INET => NodeAddr::V4(Ipv4Addr::from((*addr).ip4.s_addr.to_ne_bytes())),
            libc::AF_INET6 => NodeAddr::V6(Ipv6Addr::from((*addr).ip6.s6_addr)),
            libc::AF_UNSPEC => {
                let s = (*addr).str;
                if s.is_null() {
                    return Err(usage(
                        func,
                        format!("{what}->af is AF_UNSPEC but {what}->addr.str is NULL"),
                    ));
                }
                NodeAddr::Str(CStr::from_ptr(s).to_string_lossy().into_owned())
            }
            other => {
                return Err(usage(
                    func,
                    format!("{what}->af {other} is not AF_INET, AF_INET6 or AF_UNSPEC"),
                ))
            }
        };
        Ok(HaNode { id, addr })
    }
}

/// Fills a `struct confd_ha_node` from a decoded node: the whole struct is
/// zeroed first; C_BUF/C_BINARY ids point into `buf`, string addresses into
/// `addr_buf` (each cut at 127 bytes + NUL). Returns true when something had
/// to be cut.
///
/// # Safety
/// `dst` must point to a writable `struct confd_ha_node`.
pub(crate) unsafe fn fill_ha_node(dst: *mut confd_ha_node, n: &HaNode) -> bool {
    // SAFETY (whole block): dst is writable for the whole struct (caller
    // contract); all writes go through raw pointers into it.
    unsafe {
        std::ptr::write_bytes(dst, 0, 1);
        let mut cut = false;
        let bufp = addr_of_mut!((*dst).buf).cast::<c_char>();
        let mut v: confd_value_t = std::mem::zeroed();
        let mut in_buf = |ty: c_int, bytes: &[u8], v: &mut confd_value_t| {
            let (len, c) = super::copy_cstr(bufp, 128, bytes);
            cut |= c;
            v.r#type = ty;
            v.val.buf = confd_buf {
                size: len as c_uint,
                ptr: bufp.cast(),
            };
        };
        match &n.id {
            Value::NoExists => v.r#type = 1,
            Value::Buf(b) => in_buf(5, b, &mut v),
            Value::Binary(b) => in_buf(39, b, &mut v),
            Value::Int8(x) => (v.r#type, v.val.i8) = (6, *x),
            Value::Int16(x) => (v.r#type, v.val.i16) = (7, *x),
            Value::Int32(x) => (v.r#type, v.val.i32) = (8, *x),
            Value::Int64(x) => (v.r#type, v.val.i64) = (9, *x),
            Value::UInt8(x) => (v.r#type, v.val.u8) = (10, *x),
            Value::UInt16(x) => (v.r#type, v.val.u16) = (11, *x),
            Value::UInt32(x) => (v.r#type, v.val.u32) = (12, *x),
            Value::UInt64(x) => (v.r#type, v.val.u64) = (13, *x),
            Value::Double(x) => (v.r#type, v.val.d) = (14, *x),
            Value::Ipv4(a) => {
                v.r#type = 15;
                v.val.ip = in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                };
            }
            Value::Ipv6(a) => {
                v.r#type = 16;
                v.val.ip6 = in6_addr {
                    s6_addr: a.octets(),
                };
            }
            Value::Bool(x) => (v.r#type, v.val.boolean) = (17, c_int::from(*x)),
            Value::Enum(x) => (v.r#type, v.val.enumvalue) = (28, *x),
        }
        addr_of_mut!((*dst).nodeid).write(v);
        let addr = addr_of_mut!((*dst).addr);
        match &n.addr {
            NodeAddr::V4(a) => {
                addr_of_mut!((*dst).af).write(libc::AF_INET);
                addr.write(confd_ha_node_addr {
                    ip4: in_addr {
                        s_addr: u32::from_ne_bytes(a.octets()),
                    },
                });
            }
            NodeAddr::V6(a) => {
                addr_of_mut!((*dst).af).write(libc::AF_INET6);
                addr.write(confd_ha_node_addr {
                    ip6: in6_addr {
                        s6_addr: a.octets(),
                    },
                });
            }
            NodeAddr::Str(s) => {
                addr_of_mut!((*dst).af).write(libc::AF_UNSPEC);
                let ab = addr_of_mut!((*dst).addr_buf).cast::<c_char>();
                let (_, c) = super::copy_cstr(ab, 128, s.as_bytes());
                cut |= c;
                addr.write(confd_ha_node_addr { str: ab });
            }
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn layouts_match_confd_on_lp64() {
        assert_eq!(size_of::<confd_value_t>(), 40);
        assert_eq!(align_of::<confd_value_t>(), 8);
        assert_eq!(offset_of!(confd_value_t, val), 8);
        assert_eq!(size_of::<confd_datetime>(), 16);
        assert_eq!(size_of::<confd_date>(), 6);
        assert_eq!(size_of::<confd_time>(), 12);
        assert_eq!(size_of::<confd_duration>(), 28);
        assert_eq!(size_of::<confd_ipv6_prefix>(), 20);
        assert_eq!(size_of::<confd_decimal64>(), 16);
        assert_eq!(size_of::<confd_ha_node>(), 320);
        assert_eq!(offset_of!(confd_ha_node, af), 40);
        assert_eq!(offset_of!(confd_ha_node, addr), 48);
        assert_eq!(offset_of!(confd_ha_node, buf), 64);
        assert_eq!(offset_of!(confd_ha_node, addr_buf), 192);
    }

    #[test]
    fn versions_match_the_hello_defaults() {
        use crate::proto::hello::*;
        assert_eq!(CONFD_LIB_PROTO_VSN, i32::from(DEFAULT_PROTO_VSN));
        assert_eq!(CONFD_LIB_VSN as u32, DEFAULT_LIB_VSN);
        assert_eq!(CONFD_PORT, 4565);
    }

    #[test]
    fn values_round_trip_through_c() {
        let vals = [
            Value::Buf(b"n1".to_vec()),
            Value::Int32(-5),
            Value::UInt64(u64::MAX),
            Value::Ipv4("10.1.2.3".parse().unwrap()),
            Value::Ipv6("2001:db8::7".parse().unwrap()),
            Value::Bool(true),
            Value::Enum(4),
            Value::Binary(vec![0, 1, 2]),
        ];
        for v in vals {
            let n = HaNode {
                id: v.clone(),
                addr: NodeAddr::Str("host.example".into()),
            };
            let mut c: confd_ha_node = unsafe { std::mem::zeroed() };
            assert!(!unsafe { fill_ha_node(&mut c, &n) });
            let back = unsafe { ha_node_from_c("t", "n", &c) }.unwrap_or_else(|_| panic!());
            assert_eq!(back, n);
        }
    }

    #[test]
    fn long_ids_are_cut_at_127_bytes() {
        let n = HaNode {
            id: Value::Buf(vec![b'x'; 300]),
            addr: NodeAddr::V4("127.0.0.1".parse().unwrap()),
        };
        let mut c: confd_ha_node = unsafe { std::mem::zeroed() };
        assert!(unsafe { fill_ha_node(&mut c, &n) });
        unsafe {
            assert_eq!(c.nodeid.r#type, 5);
            assert_eq!(c.nodeid.val.buf.size, 127);
            assert_eq!(c.buf[127], 0);
            assert_eq!(c.nodeid.val.buf.ptr, c.buf.as_mut_ptr().cast());
        }
    }
}
