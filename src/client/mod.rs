//! Safe blocking clients of the IPC protocol. They work over any byte stream:
//! the C layer passes a borrowed descriptor ([`FdStream`]), Rust programs use
//! an owned [`Stream`] from an [`Endpoint`].
//!
//! [`FdStream`]: crate::proto::frame::FdStream

pub mod data;
pub mod events;
pub mod group;
pub mod ha;

use crate::error::{Error, Result};
use crate::proto::frame::{self, DEFAULT_MAX_FRAME};
use crate::proto::hello::{
    self, ClientHello, ServerHello, HELLO_BAD_SIZES, HELLO_BAD_VSN, HELLO_OK,
};
use crate::proto::term::Term;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// What a hello settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// The protocol version the daemon accepted: the version whose message
    /// shapes to speak on this connection (e.g. the subscription term).
    pub proto_vsn: u16,
    /// The library version sent in the accepted hello.
    pub lib_vsn: u32,
    /// The daemon's answer (its version, its data model's keypath limits).
    pub daemon: ServerHello,
    /// True when the daemon refused the first version and a second
    /// connection was made with the daemon's own.
    pub adapted: bool,
}

/// How loud a hello note is: `Debug` for each version decision, `Trace`
/// for the bytes of each hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteLevel {
    Debug,
    Trace,
}

/// Most hellos one connect makes: the first, and one with the version a
/// refusing daemon named.
pub const MAX_HELLO_ATTEMPTS: usize = 2;
/// Most daemons (addresses) whose accepted protocol version the process
/// remembers, so that later connections start with it and the daemon does
/// not log a refused hello each time.
pub const MAX_REMEMBERED_DAEMONS: usize = 64;

/// Protocol / library versions accepted by each daemon this process talked
/// to, newest last.
static ACCEPTED: std::sync::Mutex<Vec<(String, u16, u32)>> = std::sync::Mutex::new(Vec::new());

fn remembered(daemon: &str) -> Option<(u16, u32)> {
    let m = ACCEPTED.lock().unwrap_or_else(|e| e.into_inner());
    m.iter()
        .find(|(d, _, _)| d == daemon)
        .map(|&(_, p, v)| (p, v))
}

fn remember(daemon: &str, proto: u16, vsn: u32) {
    let mut m = ACCEPTED.lock().unwrap_or_else(|e| e.into_inner());
    m.retain(|(d, _, _)| d != daemon);
    if m.len() >= MAX_REMEMBERED_DAEMONS {
        m.remove(0);
    }
    m.push((daemon.to_owned(), proto, vsn));
}

fn forget(daemon: &str) {
    let mut m = ACCEPTED.lock().unwrap_or_else(|e| e.into_inner());
    m.retain(|(d, _, _)| d != daemon);
}

/// Sends one hello with the given versions and reads the answer, whatever
/// its status.
pub fn hello_once<S: Read + Write + ?Sized>(s: &mut S, h: &ClientHello) -> Result<ServerHello> {
    s.write_all(&h.encode())
        .map_err(|e| Error::from_io("sending the hello", e))?;
    let mut b = [0u8; 9];
    s.read_exact(&mut b)
        .map_err(|e| Error::from_io("reading the hello answer", e))?;
    Ok(ServerHello::decode(&b))
}

/// Runs the hello as client `client_id` on the connected stream `first`,
/// adapting to the daemon's protocol version (spec §H.2, §H.5): a real
/// daemon refuses (status 1) any version but its own and names its own in
/// the answer; the library then calls `reconnect` for a fresh connection
/// and says hello again with the daemon's versions. The version a daemon
/// accepted is remembered (per `daemon`, the address text) and tried first
/// next time.
///
/// `CONFD_HA_LIB_PROTO_VSN` pins the protocol version: no adaptation, no
/// remembered version; a refusal is an error. `CONFD_HA_LIB_VSN` pins the
/// library version sent in every hello. The keypath limits announced are
/// [`hello::ANNOUNCED_MAXDEPTH`] / [`hello::ANNOUNCED_MAXKEYLEN`].
///
/// Every decision goes to `note` (at [`NoteLevel::Debug`]), every hello's
/// bytes at [`NoteLevel::Trace`]. Returns the stream the daemon accepted
/// (`first` or one from `reconnect`) and what was settled.
pub fn hello_adapting<S: Read + Write>(
    daemon: &str,
    client_id: u8,
    first: S,
    reconnect: &mut dyn FnMut() -> Result<S>,
    note: &mut dyn FnMut(NoteLevel, &str),
) -> Result<(S, Settled)> {
    let v = hello::lib_versions();
    let (mut proto, mut vsn) = (v.proto, v.vsn);
    let mut from_memory = false;
    if v.proto_pinned {
        note(
            NoteLevel::Debug,
            &format!("hello to {daemon}: protocol version {proto} pinned by CONFD_HA_LIB_PROTO_VSN (no adaptation)"),
        );
    } else if let Some((p, lv)) = remembered(daemon) {
        from_memory = true;
        proto = p;
        if !v.vsn_pinned {
            vsn = lv;
        }
        note(
            NoteLevel::Debug,
            &format!("hello to {daemon}: protocol version {proto} / {vsn:#010x}, which this daemon accepted before"),
        );
    } else {
        note(
            NoteLevel::Debug,
            &format!(
                "hello to {daemon}: protocol version {proto} / {vsn:#010x} (the library's default)"
            ),
        );
    }
    let mut s = first;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let h = ClientHello {
            client_id,
            proto_vsn: proto,
            lib_vsn: vsn,
            maxdepth: hello::ANNOUNCED_MAXDEPTH,
            maxkeylen: hello::ANNOUNCED_MAXKEYLEN,
        };
        note(
            NoteLevel::Trace,
            &format!("hello to {daemon}: sent {:02x?}", h.encode()),
        );
        let sh = hello_once(&mut s, &h)?;
        note(
            NoteLevel::Trace,
            &format!("hello to {daemon}: answer {:02x?}", sh.encode()),
        );
        match sh.status {
            HELLO_OK => {
                if !v.proto_pinned {
                    remember(daemon, proto, vsn);
                }
                note(
                    NoteLevel::Debug,
                    &format!(
                        "hello to {daemon}: accepted with protocol version {proto} (daemon {} / {:#010x}; its data model needs keypath depth {} / keys {})",
                        sh.proto_vsn, sh.vsn, sh.maxdepth, sh.maxkeylen
                    ),
                );
                return Ok((
                    s,
                    Settled {
                        proto_vsn: proto,
                        lib_vsn: vsn,
                        daemon: sh,
                        adapted: attempt > 1,
                    },
                ));
            }
            HELLO_BAD_SIZES => {
                return Err(Error::BadSizes {
                    maxdepth: h.maxdepth,
                    maxkeylen: h.maxkeylen,
                    daemon_maxdepth: sh.maxdepth,
                    daemon_maxkeylen: sh.maxkeylen,
                })
            }
            HELLO_BAD_VSN => {
                let refused = |why: &str| Error::BadVersion {
                    proto,
                    vsn,
                    daemon_proto: sh.proto_vsn,
                    daemon_vsn: sh.vsn,
                    why: why.to_owned(),
                };
                if from_memory {
                    forget(daemon);
                }
                if v.proto_pinned {
                    return Err(refused(
                        "; the version is pinned by CONFD_HA_LIB_PROTO_VSN: unset it to adapt",
                    ));
                }
                if sh.proto_vsn == proto {
                    return Err(refused(
                        "; the daemon refuses its own version (an unknown client id?)",
                    ));
                }
                if attempt >= MAX_HELLO_ATTEMPTS {
                    return Err(refused(" after adapting to the daemon's version once"));
                }
                note(
                    NoteLevel::Debug,
                    &format!(
                        "hello to {daemon}: protocol version {proto} refused; the daemon speaks {} / {:#010x}: connecting again with it",
                        sh.proto_vsn, sh.vsn
                    ),
                );
                proto = sh.proto_vsn;
                if !v.vsn_pinned {
                    vsn = sh.vsn;
                }
                from_memory = false;
                s = reconnect()?;
            }
            other => {
                return Err(Error::Protocol(format!(
                    "hello answer with unknown status {other} (daemon {} / {:#010x})",
                    sh.proto_vsn, sh.vsn
                )))
            }
        }
    }
}

/// Writes one term as one frame.
pub fn send<S: Write + ?Sized>(s: &mut S, t: &Term) -> Result<()> {
    frame::write_frame(s, &t.encode()).map_err(|e| Error::from_io("writing to the daemon", e))
}

/// Reads one frame and decodes its term.
pub fn recv<S: Read + ?Sized>(s: &mut S) -> Result<Term> {
    let f = frame::read_frame(s, DEFAULT_MAX_FRAME)?;
    Ok(Term::decode(&f)?)
}

/// A request and its one reply.
pub fn call<S: Read + Write + ?Sized>(s: &mut S, t: &Term) -> Result<Term> {
    send(s, t)?;
    recv(s)
}

/// Where a node's IPC port is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

impl Endpoint {
    /// The local node as NSO's libraries find it: `NCS_IPC_PATH` (a Unix
    /// socket) wins; else `NCS_IPC_ADDR` / `NCS_IPC_PORT`; else
    /// `CONFD_IPC_ADDR` / `CONFD_IPC_PORT`; else 127.0.0.1:4565 (CONFD_PORT).
    pub fn from_env() -> Endpoint {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(p) = var("NCS_IPC_PATH") {
            return Endpoint::Unix(p.into());
        }
        let (addr, port) = if var("NCS_IPC_ADDR").is_some() || var("NCS_IPC_PORT").is_some() {
            (
                var("NCS_IPC_ADDR"),
                var("NCS_IPC_PORT").unwrap_or_else(|| "4569".into()),
            )
        } else {
            (
                var("CONFD_IPC_ADDR"),
                var("CONFD_IPC_PORT").unwrap_or_else(|| "4565".into()),
            )
        };
        let addr = addr.unwrap_or_else(|| "127.0.0.1".into());
        Endpoint::tcp(&addr, &port)
    }

    /// A TCP endpoint; IPv6 literals are bracketed as needed.
    pub fn tcp(host: &str, port: &str) -> Endpoint {
        if host.contains(':') && !host.starts_with('[') {
            Endpoint::Tcp(format!("[{host}]:{port}"))
        } else {
            Endpoint::Tcp(format!("{host}:{port}"))
        }
    }

    /// Opens a stream and runs the hello as `client_id` (adapting to the
    /// daemon's protocol version, see [`hello_adapting`]).
    pub fn connect(&self, client_id: u8) -> Result<Stream> {
        Ok(self.connect_settled(client_id)?.0)
    }

    /// As [`Endpoint::connect`], also returning what the hello settled on.
    pub fn connect_settled(&self, client_id: u8) -> Result<(Stream, Settled)> {
        let first = self.open()?;
        hello_adapting(
            &self.to_string(),
            client_id,
            first,
            &mut || self.open(),
            &mut |_, _| {},
        )
    }

    /// Opens a stream (no hello).
    fn open(&self) -> Result<Stream> {
        Ok(match self {
            Endpoint::Tcp(a) => {
                let addrs: Vec<SocketAddr> = a
                    .to_socket_addrs()
                    .map_err(|e| Error::os(format!("resolving {a}"), e))?
                    .collect();
                let t = TcpStream::connect(&addrs[..])
                    .map_err(|e| Error::os(format!("connecting to {a}"), e))?;
                let _ = t.set_nodelay(true);
                Stream::Tcp(t)
            }
            Endpoint::Unix(p) => Stream::Unix(
                UnixStream::connect(p)
                    .map_err(|e| Error::os(format!("connecting to {}", p.display()), e))?,
            ),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An owned connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn set_read_timeout(&self, d: Option<std::time::Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        }
    }
    /// Waits up to `timeout` for the stream to become readable (data or EOF).
    pub fn wait_readable(&self, timeout: std::time::Duration) -> std::io::Result<bool> {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        loop {
            // SAFETY: p is one valid pollfd.
            let n = unsafe { libc::poll(&mut p, 1, ms) };
            if n >= 0 {
                return Ok(n > 0);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    pub fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A daemon end that answers one hello: status 0 for `accept`, else
    /// status 1, with its version `proto`; returns the hello it got.
    fn daemon(mut s: UnixStream, proto: u16, status_for: fn(&ClientHello) -> u8) -> ClientHello {
        let mut b = [0u8; 9];
        s.read_exact(&mut b).unwrap();
        let h = ClientHello::decode(&b);
        let a = ServerHello {
            status: status_for(&h),
            proto_vsn: proto,
            vsn: 0x0606_0000,
            maxdepth: 20,
            maxkeylen: 9,
        };
        s.write_all(&a.encode()).unwrap();
        h
    }

    fn only_66(h: &ClientHello) -> u8 {
        if h.proto_vsn == 66 {
            HELLO_OK
        } else {
            HELLO_BAD_VSN
        }
    }

    #[test]
    fn a_refused_hello_is_repeated_with_the_daemons_version_and_remembered() {
        let key = "unit-test-daemon-66";
        let (a, b) = UnixStream::pair().unwrap();
        let first = std::thread::spawn(move || daemon(b, 66, only_66));
        let mut threads = Vec::new();
        let mut notes = Vec::new();
        let (_s, settled) = hello_adapting(
            key,
            17,
            a,
            &mut || {
                let (a, b) = UnixStream::pair().unwrap();
                threads.push(std::thread::spawn(move || daemon(b, 66, only_66)));
                Ok(a)
            },
            &mut |l, m| notes.push((l, m.to_owned())),
        )
        .unwrap();
        let h1 = first.join().unwrap();
        assert_eq!(h1.proto_vsn, hello::DEFAULT_PROTO_VSN);
        assert_eq!((h1.maxdepth, h1.maxkeylen), (0, 0));
        assert_eq!(threads.len(), 1);
        let h2 = threads.pop().unwrap().join().unwrap();
        assert_eq!((h2.proto_vsn, h2.lib_vsn), (66, 0x0606_0000));
        assert_eq!(settled.proto_vsn, 66);
        assert!(settled.adapted);
        assert!(notes
            .iter()
            .any(|(l, m)| *l == NoteLevel::Debug && m.contains("refused")));
        // The next connection starts with the version this daemon accepted.
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || daemon(b, 66, only_66));
        let (_s, settled) =
            hello_adapting(key, 17, a, &mut || panic!("no reconnect"), &mut |_, _| {}).unwrap();
        assert_eq!(t.join().unwrap().proto_vsn, 66);
        assert!(!settled.adapted);
    }

    #[test]
    fn status_2_and_self_refusal_are_errors_without_a_retry() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || daemon(b, 66, |_| HELLO_BAD_SIZES));
        let e = hello_adapting(
            "unit-sizes",
            17,
            a,
            &mut || panic!("no retry"),
            &mut |_, _| {},
        )
        .unwrap_err();
        t.join().unwrap();
        assert!(matches!(e, Error::BadSizes { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("MAXDEPTH/MAXKEYLEN 0/0") && msg.contains("depth 20, keys 9"),
            "{msg}"
        );
        // A daemon that refuses its own version (an unknown client id).
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || daemon(b, hello::DEFAULT_PROTO_VSN, |_| HELLO_BAD_VSN));
        let e = hello_adapting(
            "unit-self",
            99,
            a,
            &mut || panic!("no retry"),
            &mut |_, _| {},
        )
        .unwrap_err();
        t.join().unwrap();
        assert!(e.to_string().contains("refuses its own version"), "{e}");
        // A daemon that refuses both versions: one retry, then an error.
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || daemon(b, 66, |_| HELLO_BAD_VSN));
        let mut retries = Vec::new();
        let e = hello_adapting(
            "unit-never",
            17,
            a,
            &mut || {
                let (a, b) = UnixStream::pair().unwrap();
                retries.push(std::thread::spawn(move || daemon(b, 66, |_| HELLO_BAD_VSN)));
                Ok(a)
            },
            &mut |_, _| {},
        )
        .unwrap_err();
        t.join().unwrap();
        assert_eq!(retries.len(), 1);
        for r in retries {
            r.join().unwrap();
        }
        assert!(e.to_string().contains("refuses its own version"), "{e}");
        // Unknown status.
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || daemon(b, 66, |_| 7));
        let e = hello_adapting("unit-7", 17, a, &mut || panic!("no retry"), &mut |_, _| {})
            .unwrap_err();
        t.join().unwrap();
        assert!(e.to_string().contains("unknown status 7"), "{e}");
    }
}
