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
use crate::proto::hello::{self, ClientHello, ServerHello, HELLO_OK};
use crate::proto::term::Term;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// Runs the 9-byte hello as client `client_id` and checks the answer.
pub fn hello<S: Read + Write + ?Sized>(s: &mut S, client_id: u8) -> Result<ServerHello> {
    hello_with_limits(
        s,
        client_id,
        hello::DEFAULT_MAXDEPTH,
        hello::DEFAULT_MAXKEYLEN,
    )
}

/// The hello, announcing the program's keypath limits (what C programs pass
/// to `confd_init_vsn_sz` as MAXDEPTH and MAXKEYLEN).
pub fn hello_with_limits<S: Read + Write + ?Sized>(
    s: &mut S,
    client_id: u8,
    maxdepth: u8,
    maxkeylen: u8,
) -> Result<ServerHello> {
    let (proto, vsn) = hello::lib_versions();
    let h = ClientHello {
        client_id,
        proto_vsn: proto,
        lib_vsn: vsn,
        maxdepth,
        maxkeylen,
    };
    s.write_all(&h.encode())
        .map_err(|e| Error::from_io("sending the hello", e))?;
    let mut b = [0u8; 9];
    s.read_exact(&mut b)
        .map_err(|e| Error::from_io("reading the hello answer", e))?;
    let sh = ServerHello::decode(&b);
    if sh.status != HELLO_OK {
        return Err(Error::BadVersion {
            proto,
            vsn,
            daemon_proto: sh.proto_vsn,
            daemon_vsn: sh.vsn,
        });
    }
    Ok(sh)
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

    /// Opens a stream and runs the hello as `client_id`.
    pub fn connect(&self, client_id: u8) -> Result<Stream> {
        let mut s = match self {
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
        };
        hello(&mut s, client_id)?;
        Ok(s)
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
