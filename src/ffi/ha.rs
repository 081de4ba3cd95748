//! `confd_ha.h`: ConfD's HA control API (`confd_lib_ha`), spec §A.
//!
//! Every function returns CONFD_OK, CONFD_ERR (with `confd_errno` and
//! `confd_lasterr()` set) or CONFD_EOF (the daemon closed the socket;
//! `confd_errno` = CONFD_ERR_EOF).

// The C contract of every exported function (pointer validity, NULL,
// ownership, threads) is in its doc comment's fixed phrases, which the
// header carries; a Rust `# Safety` heading would only repeat it.
#![allow(clippy::missing_safety_doc)]
#![allow(non_camel_case_types)]

use super::lib::{
    confd_ha_node, confd_value_t, connect_and_hello, fill_ha_node, ha_node_from_c, value_from_c,
    CONFD_OK,
};
use super::{check_init, fail, ffi_boundary, trace, tri, usage};
use crate::client::ha as hac;
use crate::proto::frame::FdStream;
use crate::proto::hello::CLIENT_HA;
use libc::sockaddr;
use std::ffi::{c_char, c_int, CStr};
use std::ptr::addr_of_mut;

/// The HA state reported by `confd_ha_get_status()`.
#[repr(C)]
pub enum confd_ha_status_state {
    /// Neither primary nor secondary: the state every node starts in.
    CONFD_HA_STATE_NONE = 1,
    /// A secondary; `nodes[0]` is its primary.
    CONFD_HA_STATE_SECONDARY = 2,
    /// The primary; `nodes[]` are its connected secondaries.
    CONFD_HA_STATE_PRIMARY = 3,
    /// A relay secondary; `nodes[0]` is its primary, then its sub-secondaries.
    CONFD_HA_STATE_SECONDARY_RELAY = 4,
}

/// `enum confd_ha_status_state` as it sits in memory (an int).
pub type HaStateInt = c_int;

/// Most nodes `confd_ha_get_status()` reports.
pub const CONFD_HA_MAX_NODES: usize = 255;

/// A node's HA state and its peers (81616 bytes on x86-64).
#[repr(C)]
pub struct confd_ha_status {
    pub state: HaStateInt,
    pub nodes: [confd_ha_node; 255],
    pub num_nodes: c_int,
}

/// Connects the caller's socket `sock` to the daemon at `srv` (AF_INET,
/// AF_INET6 or AF_UNIX; `srv_sz` must fit the family), runs the hello as
/// the HA client and sends `token`, the secret shared by the cluster. A new
/// HA connection makes the daemon close the previous one.
/// Versions: a daemon that refuses the library's protocol version names its
/// own; the library then connects a new socket of the same kind (with
/// `sock`'s socket options, close-on-exec and O_NONBLOCK flags, and local
/// IP address) using the daemon's version, and installs it as `sock` with
/// dup2(2): `sock` stays the caller's descriptor number. Unless
/// `CONFD_HA_LIB_PROTO_VSN` pins the version. CONFD_DEBUG shows each step.
/// Errors: CONFD_ERR_LIB_NOT_INITIALIZED, CONFD_ERR_PROTOUSAGE (bad
/// arguments, hello refused), CONFD_ERR_OS (connect(2) failed), CONFD_EOF.
///
/// NULL: `srv` and `token` must not be NULL; `token` must not be empty.
/// Ownership: the caller keeps `sock` (and closes it); on failure close it
/// and create a new socket before retrying. `token` is not retained.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn confd_ha_connect(
    sock: c_int,
    srv: *const sockaddr,
    srv_sz: c_int,
    token: *const c_char,
) -> c_int {
    ffi_boundary!("confd_ha_connect", {
        const F: &str = "confd_ha_connect";
        tri!(check_init(F));
        if token.is_null() {
            return usage(F, "token is NULL");
        }
        // SAFETY: token is a NUL-terminated string (caller contract).
        let token = unsafe { CStr::from_ptr(token) }.to_bytes();
        if token.is_empty() {
            return usage(F, "token is empty");
        }
        tri!(unsafe { connect_and_hello(F, sock, srv, srv_sz, CLIENT_HA) });
        if let Err(e) = hac::send_token(&mut FdStream(sock), token) {
            return fail(F, &e);
        }
        trace(|| format!("{F}(fd {sock}) -> CONFD_OK"));
        CONFD_OK
    })
}

/// Orders the node to become primary, named `mynodeid`.
/// Errors: CONFD_ERR_HA_BIND (HA port busy), CONFD_ERR_BADSTATE, and the
/// common ones.
///
/// NULL: `mynodeid` must not be NULL.
/// Ownership: `mynodeid` stays the caller's; it is not retained.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn confd_ha_beprimary(sock: c_int, mynodeid: *mut confd_value_t) -> c_int {
    ffi_boundary!("confd_ha_beprimary", {
        const F: &str = "confd_ha_beprimary";
        tri!(check_init(F));
        let me = tri!(unsafe { value_from_c(F, "mynodeid", mynodeid) });
        done(F, sock, hac::beprimary(&mut FdStream(sock), &me))
    })
}

/// Orders the node to become a secondary named `mynodeid` of `primary`
/// (its node id and address: AF_INET `addr.ip4`, AF_INET6 `addr.ip6`, or
/// AF_UNSPEC with `addr.str` a host name or address text). With
/// `waitreply` nonzero the call returns when the node has synchronised with
/// the primary; with 0 the order is only written and the result arrives as
/// an HA_INFO_BESECONDARY_RESULT notification.
/// Errors: CONFD_ERR_HA_CONNECT, CONFD_ERR_HA_BADTOKEN, CONFD_ERR_HA_BADNAME,
/// CONFD_ERR_HA_BADVSN, CONFD_ERR_HA_CLOSED, CONFD_ERR_BADSTATE, and the
/// common ones.
///
/// NULL: `mynodeid` and `primary` must not be NULL.
/// Ownership: both stay the caller's; they are not retained.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn confd_ha_besecondary(
    sock: c_int,
    mynodeid: *mut confd_value_t,
    primary: *mut confd_ha_node,
    waitreply: c_int,
) -> c_int {
    ffi_boundary!("confd_ha_besecondary", {
        const F: &str = "confd_ha_besecondary";
        tri!(check_init(F));
        let me = tri!(unsafe { value_from_c(F, "mynodeid", mynodeid) });
        let p = tri!(unsafe { ha_node_from_c(F, "primary", primary) });
        done(
            F,
            sock,
            hac::besecondary(&mut FdStream(sock), &me, &p, waitreply != 0),
        )
    })
}

/// Turns a secondary into a relay for other secondaries.
/// Errors: CONFD_ERR_BADSTATE (not a secondary), CONFD_ERR_HA_BIND, and the
/// common ones.
///
/// Threads: one thread at a time per socket.
#[no_mangle]
pub extern "C" fn confd_ha_berelay(sock: c_int) -> c_int {
    ffi_boundary!("confd_ha_berelay", {
        const F: &str = "confd_ha_berelay";
        tri!(check_init(F));
        done(F, sock, hac::berelay(&mut FdStream(sock)))
    })
}

/// Returns the node to state NONE (neither primary nor secondary).
///
/// Threads: one thread at a time per socket.
#[no_mangle]
pub extern "C" fn confd_ha_benone(sock: c_int) -> c_int {
    ffi_boundary!("confd_ha_benone", {
        const F: &str = "confd_ha_benone";
        tri!(check_init(F));
        done(F, sock, hac::benone(&mut FdStream(sock)))
    })
}

/// Fills `*stat` with the node's HA state and its peers: none for NONE;
/// `nodes[0]` = the primary for SECONDARY; the connected secondaries for
/// PRIMARY; the primary then the sub-secondaries for SECONDARY_RELAY. At
/// most 255 nodes. Node ids come back as C_BUF pointing into `nodes[i].buf`
/// (NUL-terminated, cut at 127 bytes); AF_UNSPEC addresses point into
/// `nodes[i].addr_buf`. On failure `*stat` is left untouched.
///
/// NULL: `stat` must not be NULL.
/// Ownership: `*stat` is the caller's; its inner pointers point into the
/// struct itself and live as long as it.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn confd_ha_get_status(sock: c_int, stat: *mut confd_ha_status) -> c_int {
    ffi_boundary!("confd_ha_get_status", {
        const F: &str = "confd_ha_get_status";
        tri!(check_init(F));
        if stat.is_null() {
            return usage(F, "stat is NULL");
        }
        let (state, nodes) = match hac::get_status(&mut FdStream(sock)) {
            Ok(r) => r,
            Err(e) => return fail(F, &e),
        };
        let n = nodes.len().min(CONFD_HA_MAX_NODES);
        // SAFETY: stat points to a writable struct confd_ha_status (caller
        // contract); we write through raw pointers only.
        unsafe {
            addr_of_mut!((*stat).state).write(state);
            let base = addr_of_mut!((*stat).nodes).cast::<confd_ha_node>();
            for (i, node) in nodes.iter().take(n).enumerate() {
                if fill_ha_node(base.add(i), node) {
                    trace(|| format!("{F}: node {i} ({:?}) cut to fit 127 bytes", node.id));
                }
            }
            addr_of_mut!((*stat).num_nodes).write(n as c_int);
        }
        if nodes.len() > n {
            trace(|| format!("{F}: {} nodes reported, kept {n}", nodes.len()));
        }
        trace(|| format!("{F}(fd {sock}) -> state {state}, {n} nodes"));
        CONFD_OK
    })
}

/// Tells the daemon that node `nodeid` is dead (an unknown node is not an
/// error).
///
/// NULL: `nodeid` must not be NULL.
/// Ownership: `nodeid` stays the caller's; it is not retained.
/// Threads: one thread at a time per socket.
#[no_mangle]
pub unsafe extern "C" fn confd_ha_secondary_dead(sock: c_int, nodeid: *mut confd_value_t) -> c_int {
    ffi_boundary!("confd_ha_secondary_dead", {
        const F: &str = "confd_ha_secondary_dead";
        tri!(check_init(F));
        let node = tri!(unsafe { value_from_c(F, "nodeid", nodeid) });
        done(F, sock, hac::secondary_dead(&mut FdStream(sock), &node))
    })
}

/// Old exported name of `confd_ha_beprimary` (header: a macro).
/// cbindgen:ignore
#[export_name = "confd_ha_bemaster"]
pub unsafe extern "C" fn confd_ha_bemaster_symbol(
    sock: c_int,
    mynodeid: *mut confd_value_t,
) -> c_int {
    confd_ha_beprimary(sock, mynodeid)
}

/// Old exported name of `confd_ha_besecondary` (header: a macro).
/// cbindgen:ignore
#[export_name = "confd_ha_beslave"]
pub unsafe extern "C" fn confd_ha_beslave_symbol(
    sock: c_int,
    mynodeid: *mut confd_value_t,
    primary: *mut confd_ha_node,
    waitreply: c_int,
) -> c_int {
    confd_ha_besecondary(sock, mynodeid, primary, waitreply)
}

/// Old exported name of `confd_ha_secondary_dead` (header: a macro).
/// cbindgen:ignore
#[export_name = "confd_ha_slave_dead"]
pub unsafe extern "C" fn confd_ha_slave_dead_symbol(
    sock: c_int,
    nodeid: *mut confd_value_t,
) -> c_int {
    confd_ha_secondary_dead(sock, nodeid)
}

/// Maps a client result to the C return code.
fn done(func: &str, sock: c_int, r: crate::error::Result<()>) -> c_int {
    match r {
        Ok(()) => {
            trace(|| format!("{func}(fd {sock}) -> CONFD_OK"));
            CONFD_OK
        }
        Err(e) => fail(func, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn status_layout() {
        assert_eq!(size_of::<confd_ha_status>(), 81616);
        assert_eq!(offset_of!(confd_ha_status, nodes), 8);
        assert_eq!(offset_of!(confd_ha_status, num_nodes), 81608);
    }
}
