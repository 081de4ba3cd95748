//! Connecting the caller's socket and the hello, with version adaptation
//! (spec §H.2, §H.5). Not a header of its own: the exported functions of
//! `lib`, `ha`, `events` and `cha` call [`connect_adapting`].
//!
//! A real daemon refuses a hello whose protocol version is not its own and
//! names its own in the answer; it then closes the connection. The library
//! opens a fresh socket of the same kind, copies the caller's socket
//! options onto it, connects it, says hello with the daemon's version, and
//! on success makes it the caller's descriptor with `dup2`: the caller's fd
//! number stays valid and now refers to the accepted connection.

use super::{fail, log_line, trace, LEVEL_DEBUG};
use crate::client::{self, NoteLevel, Settled};
use crate::error::Error;
use crate::proto::frame::FdStream;
use libc::sockaddr;
use std::ffi::c_int;
use std::io::{Read, Write};

/// A connected socket during the hello: the caller's (`owned` false) or a
/// fresh one of ours (closed on drop unless handed over).
struct Sock {
    fd: c_int,
    owned: bool,
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        FdStream(self.fd).read(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        FdStream(self.fd).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: fd is a socket this module created and still owns.
            unsafe { libc::close(self.fd) };
        }
    }
}

/// Integer socket options copied from the caller's socket to a fresh one:
/// (level, name, which address families).
const INT_OPTIONS: &[(c_int, c_int, Families)] = &[
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE, Families::All),
    (libc::SOL_SOCKET, libc::SO_RCVBUF, Families::All),
    (libc::SOL_SOCKET, libc::SO_SNDBUF, Families::All),
    (libc::SOL_SOCKET, libc::SO_PRIORITY, Families::All),
    (libc::SOL_SOCKET, libc::SO_PASSCRED, Families::Unix),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY, Families::Ip),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, Families::Ip),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, Families::Ip),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, Families::Ip),
    (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, Families::Ip),
    (libc::IPPROTO_IP, libc::IP_TOS, Families::V4),
    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS, Families::V6),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Families {
    All,
    Unix,
    Ip,
    V4,
    V6,
}

impl Families {
    fn has(self, family: c_int) -> bool {
        match self {
            Families::All => true,
            Families::Unix => family == libc::AF_UNIX,
            Families::Ip => family == libc::AF_INET || family == libc::AF_INET6,
            Families::V4 => family == libc::AF_INET,
            Families::V6 => family == libc::AF_INET6,
        }
    }
}

fn getsockopt_raw<T: Copy>(fd: c_int, level: c_int, name: c_int, zero: T) -> Option<T> {
    let mut v = zero;
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: v/len are valid out-parameters of size_of::<T>() bytes.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut T).cast(), &mut len) };
    (rc == 0 && len as usize == std::mem::size_of::<T>()).then_some(v)
}

fn setsockopt_raw<T: Copy>(fd: c_int, level: c_int, name: c_int, v: T) {
    // SAFETY: v is a valid value of size_of::<T>() bytes for the call.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
}

/// Opens a fresh socket like `old` (domain, type, protocol), with `old`'s
/// socket options and, for IP, its local address (port 0), so that an
/// explicitly bound source address is kept. Blocking until
/// [`adopt_flags`] gives it `old`'s file status flags.
fn fresh_socket_like(old: c_int) -> Result<Sock, Error> {
    let opt = |name| getsockopt_raw::<c_int>(old, libc::SOL_SOCKET, name, 0);
    let (Some(domain), Some(ty), Some(proto)) = (
        opt(libc::SO_DOMAIN),
        opt(libc::SO_TYPE),
        opt(libc::SO_PROTOCOL),
    ) else {
        return Err(Error::os(
            "reading the socket's kind to connect again",
            std::io::Error::last_os_error(),
        ));
    };
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(Error::os(
            "creating a socket to connect again",
            std::io::Error::last_os_error(),
        ));
    }
    let s = Sock { fd, owned: true };
    for &(level, name, fams) in INT_OPTIONS {
        if fams.has(domain) {
            if let Some(v) = getsockopt_raw::<c_int>(old, level, name, 0) {
                setsockopt_raw(fd, level, name, v);
            }
        }
    }
    let zero_tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    for name in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        if let Some(tv) = getsockopt_raw(old, libc::SOL_SOCKET, name, zero_tv) {
            setsockopt_raw(fd, libc::SOL_SOCKET, name, tv);
        }
    }
    let no_linger = libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    if let Some(l) = getsockopt_raw(old, libc::SOL_SOCKET, libc::SO_LINGER, no_linger) {
        setsockopt_raw(fd, libc::SOL_SOCKET, libc::SO_LINGER, l);
    }
    if domain == libc::AF_INET || domain == libc::AF_INET6 {
        // SAFETY: an all-zero sockaddr_storage is a valid out-parameter.
        let mut local: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: local/len are valid out-parameters.
        let got = unsafe {
            libc::getsockname(
                old,
                (&mut local as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if got == 0 {
            // Keep the source address, let the kernel pick the port.
            if domain == libc::AF_INET {
                // SAFETY: the family is AF_INET, so local holds a sockaddr_in.
                unsafe {
                    (*(&mut local as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>())
                        .sin_port = 0
                };
            } else {
                // SAFETY: the family is AF_INET6, so local holds a sockaddr_in6.
                unsafe {
                    (*(&mut local as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>())
                        .sin6_port = 0
                };
            }
            // SAFETY: local/len come from getsockname. A failure only means
            // the kernel chooses the source address, as for the first socket.
            unsafe { libc::bind(fd, (&local as *const libc::sockaddr_storage).cast(), len) };
        }
    }
    Ok(s)
}

/// connect(2) on `sock`; EINTR is followed by a wait for the connection to
/// complete.
///
/// # Safety
/// `srv` must point to `srv_sz` readable bytes of a valid socket address.
pub(crate) unsafe fn connect_fd(
    sock: c_int,
    srv: *const sockaddr,
    srv_sz: c_int,
) -> Result<(), std::io::Error> {
    // SAFETY: caller contract.
    if unsafe { libc::connect(sock, srv, srv_sz as libc::socklen_t) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINTR) {
        return Err(e);
    }
    loop {
        let mut p = libc::pollfd {
            fd: sock,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return match getsockopt_raw::<c_int>(sock, libc::SOL_SOCKET, libc::SO_ERROR, 0) {
            None => Err(std::io::Error::last_os_error()),
            Some(0) => Ok(()),
            Some(err) => Err(std::io::Error::from_raw_os_error(err)),
        };
    }
}

/// Requests are small and answered at once: without TCP_NODELAY a write
/// that follows a write with no reply (async besecondary, the token) waits
/// for the peer's delayed ACK (~40 ms). Not an error where the option does
/// not apply (AF_UNIX).
fn set_nodelay(sock: c_int, family: c_int) {
    if family == libc::AF_INET || family == libc::AF_INET6 {
        setsockopt_raw::<c_int>(sock, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
    }
}

/// Makes `new` the caller's descriptor `sock`: `dup2`, then the caller's
/// close-on-exec flag and file status flags (O_NONBLOCK) on it, which `dup2`
/// does not carry over.
fn adopt(new: &Sock, sock: c_int) -> Result<(), Error> {
    // SAFETY: fcntl queries on a descriptor the caller passed us.
    let fd_flags = unsafe { libc::fcntl(sock, libc::F_GETFD) };
    // SAFETY: as above.
    let fl_flags = unsafe { libc::fcntl(sock, libc::F_GETFL) };
    loop {
        // SAFETY: both are open descriptors; dup2 atomically replaces sock.
        if unsafe { libc::dup2(new.fd, sock) } >= 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(Error::os(
                format!("making the new connection descriptor {sock}"),
                e,
            ));
        }
    }
    // SAFETY: fcntl on the descriptor just installed.
    unsafe {
        if fd_flags >= 0 {
            libc::fcntl(sock, libc::F_SETFD, fd_flags);
        }
        if fl_flags >= 0 {
            libc::fcntl(sock, libc::F_SETFL, fl_flags);
        }
    }
    Ok(())
}

/// Connects the caller's `sock` to `srv` and runs the hello as client `id`,
/// adapting to the daemon's protocol version. Each version decision is
/// written at CONFD_DEBUG, the hello bytes at CONFD_TRACE.
///
/// # Safety
/// `srv`/`srv_sz` must have been validated by `check_sockaddr` (`desc` is
/// its description).
pub(crate) unsafe fn connect_adapting(
    func: &str,
    sock: c_int,
    srv: *const sockaddr,
    srv_sz: c_int,
    desc: &str,
    id: u8,
) -> Result<Settled, c_int> {
    trace(|| format!("{func}: connecting fd {sock} to {desc}"));
    // SAFETY: srv is valid (caller contract).
    let family = c_int::from(unsafe { (*srv).sa_family });
    // SAFETY: caller contract.
    unsafe { connect_fd(sock, srv, srv_sz) }
        .map_err(|e| fail(func, &Error::os(format!("connect to {desc}"), e)))?;
    set_nodelay(sock, family);
    let mut reconnect = || -> Result<Sock, Error> {
        let s = fresh_socket_like(sock)?;
        // SAFETY: caller contract.
        unsafe { connect_fd(s.fd, srv, srv_sz) }
            .map_err(|e| Error::os(format!("connect again to {desc}"), e))?;
        set_nodelay(s.fd, family);
        Ok(s)
    };
    let mut note = |level: NoteLevel, msg: &str| {
        let want = match level {
            NoteLevel::Debug => LEVEL_DEBUG,
            NoteLevel::Trace => super::LEVEL_TRACE,
        };
        if super::debug_level() >= want {
            let tag = if level == NoteLevel::Debug {
                "DEBUG"
            } else {
                "TRACE"
            };
            log_line(&format!("{tag} {func}: {msg}"));
        }
    };
    let first = Sock {
        fd: sock,
        owned: false,
    };
    let (s, settled) = client::hello_adapting(desc, id, first, &mut reconnect, &mut note)
        .map_err(|e| fail(func, &e))?;
    if s.owned {
        adopt(&s, sock).map_err(|e| fail(func, &e))?;
        note(
            NoteLevel::Debug,
            &format!(
                "fd {sock} now holds the connection with protocol version {}",
                settled.proto_vsn
            ),
        );
    }
    Ok(settled)
}
