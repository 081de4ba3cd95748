//! Mutual TLS on the HA port (rustls with the ring provider, TLS 1.3 only).
//!
//! Configured by `ha-tls-ca`, `ha-tls-cert` and `ha-tls-key` (all three or
//! none). Each node presents the same certificate in both roles: a joining
//! secondary checks that the primary's certificate chains to the CA and names
//! the address it dialled (an IP SAN, or a DNS name when it was given a name);
//! the primary requires a client certificate chaining to the CA. The token's
//! challenge-response then runs inside the TLS session, unchanged.
//!
//! The replication code keeps its shape: blocking threads, a reader and a
//! writer per connection on clones of one stream, `shutdown()` from any
//! thread, read timeouts for tick deadlines. [`HaStream`] is that stream, plain
//! or TLS. With TLS the clones share one `rustls::Connection` behind a mutex
//! that is never held across socket I/O: a read takes bytes from the socket
//! without the lock (so `SO_RCVTIMEO` and `shutdown()` work as on a plain
//! socket) and then decrypts under it; a write encrypts under it and then
//! sends without it. A second mutex keeps sends in the order rustls sealed
//! the records. No thread and no hand-off is added on the commit path (a pump
//! thread per connection bridging to a socketpair would add a thread per peer
//! and two hand-offs each way).

use crate::config::TlsFiles;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::ServerConnection;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Without TLS, an HA token shorter than this is reported as weak.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Plaintext handed to rustls per write call: bounds the sealed bytes held
/// before they go to the socket.
const TLS_WRITE_CHUNK_BYTES: usize = 64 * 1024;
/// Bytes taken from the socket per read.
const TLS_READ_CHUNK_BYTES: usize = 32 * 1024;
/// Longest TLS error text put in a log line or a reply.
const TLS_ERROR_TEXT_BYTES: usize = 400;
/// The first byte of a TLS handshake record (a ClientHello). No node-to-node
/// frame starts with it: its length would be over 350 MiB.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The loaded certificates, key and CA, as rustls configurations.
pub struct Tls {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A TLS failure, told apart from other I/O errors by [`is_tls_error`].
#[derive(Debug)]
struct TlsFailure(String);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

fn tls_io(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TlsFailure(msg))
}

/// The error came from TLS (a refused or broken TLS session), not the network.
pub fn is_tls_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<TlsFailure>())
}

/// Text for a log line: control characters escaped, cut to a bound.
fn inert(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if o.len() >= TLS_ERROR_TEXT_BYTES {
            o.push_str("...");
            break;
        }
        if c.is_control() {
            o.push_str(&c.escape_default().to_string());
        } else {
            o.push(c);
        }
    }
    o
}

/// What a rustls error means, said from this side (`peer` is "the primary" or
/// "the secondary").
fn describe(e: &rustls::Error, peer: &str) -> String {
    use rustls::AlertDescription as A;
    use rustls::Error as E;
    let s = match e {
        E::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => format!(
            "{peer}'s certificate is refused: it does not chain to a CA in our ha-tls-ca \
             (UnknownIssuer)"
        ),
        E::InvalidCertificate(c) => format!("{peer}'s certificate is refused: {c}"),
        E::NoCertificatesPresented => format!("{peer} presented no certificate"),
        E::AlertReceived(a) => {
            let ours = matches!(
                a,
                A::BadCertificate
                    | A::UnknownCA
                    | A::CertificateExpired
                    | A::CertificateRevoked
                    | A::CertificateUnknown
                    | A::UnsupportedCertificate
                    | A::CertificateRequired
                    | A::AccessDenied
            );
            if ours {
                format!("{peer} refused our certificate (alert {a:?})")
            } else {
                format!("{peer} ended the TLS session (alert {a:?})")
            }
        }
        E::InvalidMessage(_) => format!("{peer} does not speak TLS ({e})"),
        other => format!("{other}"),
    };
    inert(&format!("TLS: {s}"))
}

fn read_pem_certs(
    path: &std::path::Path,
    key: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{key} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no PEM certificate (BEGIN CERTIFICATE) in the file",
            path.display()
        ));
    }
    Ok(certs)
}

impl Tls {
    /// Reads the CA, certificate chain and key, and checks them together.
    /// Problems that only peers can judge (our certificate expired, or not
    /// naming `ha_addr`) are logged as warnings; the rest are errors.
    pub fn load(f: &TlsFiles, ha_addr: SocketAddr) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in read_pem_certs(&f.ca, "ha-tls-ca")? {
            roots
                .add(c)
                .map_err(|e| format!("ha-tls-ca {}: {e}", f.ca.display()))?;
        }
        let roots = Arc::new(roots);
        let chain = read_pem_certs(&f.cert, "ha-tls-cert")?;
        let key = PrivateKeyDer::from_pem_file(&f.key)
            .map_err(|e| format!("ha-tls-key {}: no usable private key: {e}", f.key.display()))?;
        let bad = |e: rustls::Error| format!("TLS configuration: {e}");
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("ha-tls-ca {}: {e}", f.ca.display()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(bad)?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                format!(
                    "ha-tls-cert {} / ha-tls-key {}: {e}",
                    f.cert.display(),
                    f.key.display()
                )
            })?;
        // No resumption: every connection is a full handshake with both certificates.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(bad)?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key)
            .map_err(|e| {
                format!(
                    "ha-tls-cert {} / ha-tls-key {}: {e}",
                    f.cert.display(),
                    f.key.display()
                )
            })?;
        client.resumption = rustls::client::Resumption::disabled();
        // Our own certificate as peers will see it.
        let now = UnixTime::now();
        let own = |e: rustls::Error| match e {
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                "it does not chain to a CA in ha-tls-ca (UnknownIssuer)".to_string()
            }
            rustls::Error::InvalidCertificate(c) => inert(&c.to_string()),
            e => inert(&e.to_string()),
        };
        if let Err(e) = verifier.verify_client_cert(&chain[0], &chain[1..], now) {
            crate::warn!(
                "ha",
                "ha-tls-cert {}: peers will refuse it: {}",
                f.cert.display(),
                own(e)
            );
        } else if !ha_addr.ip().is_unspecified() {
            let sv = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("ha-tls-ca {}: {e}", f.ca.display()))?;
            let name = ServerName::IpAddress(ha_addr.ip().into());
            if let Err(e) = sv.verify_server_cert(&chain[0], &chain[1..], &name, &[], now) {
                crate::warn!(
                    "ha",
                    "ha-tls-cert {}: secondaries that dial {} will refuse it: {}",
                    f.cert.display(),
                    ha_addr.ip(),
                    own(e)
                );
            }
        }
        crate::info!(
            "ha",
            "mutual TLS on the HA port: CA {}, certificate {}",
            f.ca.display(),
            f.cert.display()
        );
        Ok(Tls {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }
}

/// Start-up warnings for a node without TLS.
pub fn startup_warnings(tls: bool, ha_addrs: &[SocketAddr]) {
    if tls {
        return;
    }
    for a in ha_addrs.iter().filter(|a| !a.ip().is_loopback()) {
        crate::warn!(
            "ha",
            "the HA port {a} is not on loopback and has no TLS: whoever reaches it can \
             capture one handshake and guess the token offline; configure ha-tls-ca, \
             ha-tls-cert and ha-tls-key"
        );
    }
}

/// Whether a token just set by HA control connection `id` is weak (no TLS
/// and shorter than MIN_TOKEN_BYTES); logs a warning if so. It is accepted
/// either way: ConfD programs use short tokens.
pub fn token_is_weak(tls: bool, token_len: usize, id: u64) -> bool {
    let weak = !tls && token_len < MIN_TOKEN_BYTES;
    if weak {
        crate::warn!(
            "ipc",
            "HA connection #{id} set a token of {token_len} bytes (fewer than {MIN_TOKEN_BYTES}) \
             and the HA port has no TLS: one captured handshake lets it be guessed offline"
        );
    }
    weak
}

/// A node-to-node connection, plain TCP or TLS over it. Clones share the
/// socket and the TLS session; every method may be called from any clone.
pub struct HaStream {
    tcp: TcpStream,
    tls: Option<Arc<Session>>,
}

struct Session {
    conn: Mutex<Connection>,
    /// Received bytes not yet given to rustls. Held by the one reading thread.
    rx: Mutex<RxBuf>,
    /// Held from sealing records to their last byte on the socket.
    tx: Mutex<Vec<u8>>,
    /// "the primary" / "the secondary", for error texts.
    peer: &'static str,
}

struct RxBuf {
    buf: Vec<u8>,
    start: usize,
    eof: bool,
}

impl HaStream {
    pub fn plain(tcp: TcpStream) -> HaStream {
        HaStream { tcp, tls: None }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// On a TLS stream, whether the peer's certificate is valid for the IP address `ip`
    /// (WebPKI's name check, as rustls makes of a server it dials): a peer that claims a
    /// node address must hold a certificate naming it. Ok on a plain stream.
    pub fn check_peer_names(&self, ip: IpAddr) -> Result<(), String> {
        let Some(s) = &self.tls else {
            return Ok(());
        };
        let c = lock(&s.conn);
        let cert = c
            .peer_certificates()
            .and_then(|v| v.first())
            .ok_or("it presented no certificate")?;
        let ee = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| format!("its certificate cannot be read ({e:?})"))?;
        ee.verify_is_valid_for_subject_name(&ServerName::IpAddress(ip.into()))
            .map_err(|_| format!("its certificate does not name {ip}"))
    }

    pub fn try_clone(&self) -> io::Result<HaStream> {
        Ok(HaStream {
            tcp: self.tcp.try_clone()?,
            tls: self.tls.clone(),
        })
    }

    /// Shuts the socket down (no close_notify: another thread may be mid-record).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp.shutdown(how)
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(d)
    }

    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp.set_write_timeout(d)
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp.set_nodelay(on)
    }

    /// Writes as much of `buf` as the socket takes now, without waiting (MSG_DONTWAIT):
    /// how many bytes went (WouldBlock when none could). None on a TLS stream, whose
    /// records are sealed and sent by one writer at a time (the caller queues instead).
    pub fn send_nowait(&self, buf: &[u8]) -> Option<io::Result<usize>> {
        if self.tls.is_some() {
            return None;
        }
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: the descriptor is owned by `self.tcp`, and `buf` is valid for its length.
            let n = unsafe {
                libc::send(
                    self.tcp.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Some(Ok(n as usize));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Some(Err(e));
            }
        }
    }

    fn tls_read(&self, s: &Session, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut rx = lock(&s.rx);
        loop {
            let flush = {
                let mut c = lock(&s.conn);
                // Hand over received bytes as far as rustls wants them
                // (it stops wanting once it holds plaintext).
                while rx.start < rx.buf.len() && c.wants_read() {
                    let RxBuf { buf, start, .. } = &mut *rx;
                    let mut rest = &buf[*start..];
                    let n = c.read_tls(&mut rest)?;
                    *start += n;
                    if n == 0 {
                        break;
                    }
                    if let Err(e) = c.process_new_packets() {
                        // Tell the peer why (the alert rustls queued), unless
                        // the writer is mid-record; the connection ends anyway.
                        if let Ok(mut tx) = s.tx.try_lock() {
                            tx.clear();
                            let _ = c.write_tls(&mut *tx);
                            let _ = (&self.tcp).write_all(&tx);
                        }
                        return Err(tls_io(describe(&e, s.peer)));
                    }
                }
                if rx.eof && rx.start == rx.buf.len() {
                    // Tells rustls the socket ended (read_tls of nothing).
                    let _ = c.read_tls(&mut &[][..]);
                }
                match c.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // Closed without close_notify: as for a plain socket, the
                    // frames' lengths tell whether anything was cut.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if rx.eof {
                    return Ok(0);
                }
                c.wants_write()
            };
            // rustls has something to send on its own (a key update): send
            // it unless the writer is busy, which then sends it after its own.
            if flush {
                if let Ok(mut tx) = s.tx.try_lock() {
                    self.seal_and_send(s, &mut tx, &[])?;
                }
            }
            // Receive, outside the connection lock: the writer goes on, and
            // the socket's timeout and shutdown apply as without TLS.
            rx.buf.resize(TLS_READ_CHUNK_BYTES, 0);
            rx.start = 0;
            let r = (&self.tcp).read(&mut rx.buf);
            match r {
                Ok(0) => {
                    rx.buf.clear();
                    rx.eof = true;
                }
                Ok(n) => rx.buf.truncate(n),
                Err(e) => {
                    rx.buf.clear();
                    return Err(e);
                }
            }
        }
    }

    /// Seals up to TLS_WRITE_CHUNK_BYTES of `data` (and whatever rustls has
    /// queued) and sends it; returns how much of `data` went.
    fn seal_and_send(&self, s: &Session, out: &mut Vec<u8>, data: &[u8]) -> io::Result<usize> {
        out.clear();
        let n = {
            let mut c = lock(&s.conn);
            let n = if data.is_empty() {
                0
            } else {
                c.writer()
                    .write(&data[..data.len().min(TLS_WRITE_CHUNK_BYTES)])?
            };
            while c.wants_write() {
                c.write_tls(out)?;
            }
            n
        };
        (&self.tcp).write_all(out)?;
        if out.capacity() > 2 * TLS_WRITE_CHUNK_BYTES {
            *out = Vec::new();
        }
        Ok(n)
    }
}

impl Read for &HaStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.tls {
            None => (&self.tcp).read(buf),
            Some(s) => self.tls_read(s, buf),
        }
    }
}

impl Read for HaStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for &HaStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.tls {
            None => (&self.tcp).write(buf),
            Some(s) => {
                if buf.is_empty() {
                    return Ok(0);
                }
                let mut tx = lock(&s.tx);
                self.seal_and_send(s, &mut tx, buf)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for HaStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs a handshake to its end, before the stream is shared, within `deadline`.
fn handshake(
    c: &mut Connection,
    tcp: &TcpStream,
    deadline: Instant,
    peer: &'static str,
) -> Result<(), String> {
    let timeout = |d: Instant| d.saturating_duration_since(Instant::now());
    loop {
        let left = timeout(deadline);
        if left.is_zero() {
            return Err(format!(
                "TLS: {peer} did not finish the TLS handshake in time"
            ));
        }
        tcp.set_write_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        while c.wants_write() {
            c.write_tls(&mut &*tcp)
                .map_err(|e| format!("TLS handshake: sending to {peer}: {e}"))?;
        }
        if !c.is_handshaking() {
            return Ok(());
        }
        tcp.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        match c.read_tls(&mut &*tcp) {
            Ok(0) => {
                return Err(format!(
                    "TLS: {peer} closed the connection during the TLS handshake \
                     (does it have TLS configured?)"
                ))
            }
            Ok(_) => {
                if let Err(e) = c.process_new_packets() {
                    // Tell the peer why (the alert rustls queued), best effort.
                    let _ = c.write_tls(&mut &*tcp);
                    return Err(describe(&e, peer));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(format!(
                    "TLS: {peer} reset the connection during the TLS handshake \
                     (does it have TLS configured?)"
                ))
            }
            Err(e) => {
                return Err(format!(
                    "TLS handshake with {peer}: {}",
                    inert(&e.to_string())
                ))
            }
        }
    }
}

fn wrap(tcp: TcpStream, conn: Connection, peer: &'static str) -> HaStream {
    HaStream {
        tcp,
        tls: Some(Arc::new(Session {
            conn: Mutex::new(conn),
            rx: Mutex::new(RxBuf {
                buf: Vec::new(),
                start: 0,
                eof: false,
            }),
            tx: Mutex::new(Vec::new()),
            peer,
        })),
    }
}

/// The name a secondary expects in the primary's certificate: the IP it
/// dialled, or the DNS name it was given.
fn server_name(addr: &confd_ha::proto::ha::NodeAddr) -> Result<ServerName<'static>, String> {
    use confd_ha::proto::ha::NodeAddr;
    Ok(match addr {
        NodeAddr::V4(a) => ServerName::IpAddress(IpAddr::V4(*a).into()),
        NodeAddr::V6(a) => ServerName::IpAddress(IpAddr::V6(*a).into()),
        NodeAddr::Str(h) => ServerName::try_from(h.clone()).map_err(|_| {
            format!(
                "TLS: '{}' is neither an IP address nor a DNS name to check the primary's certificate against",
                inert(h)
            )
        })?,
    })
}

/// The joining side: TLS to the primary when configured (its certificate
/// must chain to our CA and name `addr`), else the plain socket.
pub fn connect(
    tls: Option<&Tls>,
    tcp: TcpStream,
    addr: &confd_ha::proto::ha::NodeAddr,
    deadline: Instant,
) -> Result<HaStream, String> {
    let Some(t) = tls else {
        return Ok(HaStream::plain(tcp));
    };
    let peer = "the primary";
    let name = server_name(addr)?;
    let c = ClientConnection::new(t.client.clone(), name).map_err(|e| describe(&e, peer))?;
    let mut c = Connection::Client(c);
    handshake(&mut c, &tcp, deadline, peer)?;
    Ok(wrap(tcp, c, peer))
}

/// The serving side of a new HA connection. With TLS: the handshake, in
/// which the secondary must present a certificate chaining to the CA; a peer
/// that starts in plaintext gets a refusal it can read. Without TLS: a TLS
/// ClientHello is refused. Err: why the connection is to be closed.
pub fn accept(tls: Option<&Tls>, tcp: TcpStream, deadline: Instant) -> Result<HaStream, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    tcp.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(|e| e.to_string())?;
    let mut first = [0u8; 1];
    let starts_tls = match tcp.peek(&mut first) {
        Ok(0) => return Err("closed before sending anything".into()),
        Ok(_) => first[0] == TLS_HANDSHAKE_RECORD,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(format!("nothing received within {} ms", left.as_millis()))
        }
        Err(e) => return Err(e.to_string()),
    };
    let Some(t) = tls else {
        if starts_tls {
            return Err("a TLS ClientHello on a plaintext HA port: the peer has \
                        ha-tls-* configured, this node has not"
                .into());
        }
        return Ok(HaStream::plain(tcp));
    };
    if !starts_tls {
        let refusal = crate::replication::peer::PeerMsg::Reject {
            code: confd_ha::errcode::CONFD_ERR_HA_CONNECT,
            reason: "this node requires TLS on its HA port (ha-tls-ca, ha-tls-cert, ha-tls-key)"
                .into(),
        };
        let _ = tcp.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = confd_ha::proto::frame::write_frame(&mut &tcp, &refusal.encode());
        return Err("plaintext on a TLS HA port (a secondary without ha-tls-*?): refused".into());
    }
    let peer = "the secondary";
    let c = ServerConnection::new(t.server.clone()).map_err(|e| describe(&e, peer))?;
    let mut c = Connection::Server(c);
    handshake(&mut c, &tcp, deadline, peer)?;
    Ok(wrap(tcp, c, peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::path::Path;

    struct Pki {
        ca: rcgen::Certificate,
        ca_key: rcgen::KeyPair,
    }

    impl Pki {
        fn new() -> Pki {
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "test CA");
            let ca = p.self_signed(&ca_key).unwrap();
            Pki { ca, ca_key }
        }
        fn files(&self, dir: &Path, tag: &str, ip: &str) -> TlsFiles {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(vec![ip.to_string()]).unwrap();
            p.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
            let f = TlsFiles {
                ca: dir.join(format!("{tag}-ca.pem")),
                cert: dir.join(format!("{tag}-cert.pem")),
                key: dir.join(format!("{tag}-key.pem")),
            };
            std::fs::write(&f.ca, self.ca.pem()).unwrap();
            std::fs::write(&f.cert, cert.pem()).unwrap();
            std::fs::write(&f.key, key.serialize_pem()).unwrap();
            f
        }
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ha-tls-unit-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A connected pair with small socket buffers (set before connecting,
    /// as shrinking them later stalls TCP itself); TLS when `tls` is given.
    fn pair(tls: Option<(&Tls, &Tls)>) -> (HaStream, HaStream) {
        let small = |s: &socket2::Socket| {
            s.set_send_buffer_size(8192).unwrap();
            s.set_recv_buffer_size(8192).unwrap();
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        small(&l);
        l.bind(&any.into()).unwrap();
        l.listen(1).unwrap();
        let l: TcpListener = l.into();
        let addr = l.local_addr().unwrap();
        let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        small(&c);
        c.connect(&addr.into()).unwrap();
        let c: TcpStream = c.into();
        let (srv, _) = l.accept().unwrap();
        let Some((a, b)) = tls else {
            return (HaStream::plain(c), HaStream::plain(srv));
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let (x, y) = std::thread::scope(|sc| {
            let y = sc.spawn(|| accept(Some(b), srv, deadline));
            let ip = confd_ha::proto::ha::NodeAddr::V4("127.0.0.1".parse().unwrap());
            (connect(Some(a), c, &ip, deadline), y.join().unwrap())
        });
        (x.unwrap(), y.unwrap())
    }

    /// Both sides write 8 MiB at once while reading, through small socket
    /// buffers: neither the shared session lock nor the send order may stall
    /// (the write timeout turns a stall into a failure).
    #[test]
    fn concurrent_bulk_both_ways() {
        let d = tmp("bulk");
        let pki = Pki::new();
        let a = Tls::load(
            &pki.files(&d, "a", "127.0.0.1"),
            "127.0.0.1:1".parse().unwrap(),
        )
        .unwrap();
        let b = Tls::load(
            &pki.files(&d, "b", "127.0.0.1"),
            "127.0.0.1:1".parse().unwrap(),
        )
        .unwrap();
        // Plain TCP first, as the baseline for the same test.
        for tls in [false, true] {
            let (x, y) = pair(tls.then_some((&a, &b)));
            assert_eq!(x.is_tls(), tls);
            bulk_both_ways(&x, &y);
            // shutdown from another clone ends a blocked reader with EOF.
            let z = y.try_clone().unwrap();
            y.set_read_timeout(None).unwrap();
            let t = std::thread::spawn(move || {
                let mut b = [0u8; 10];
                (&y).read(&mut b)
            });
            std::thread::sleep(Duration::from_millis(50));
            z.shutdown(Shutdown::Both).unwrap();
            assert_eq!(t.join().unwrap().unwrap(), 0);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    fn bulk_both_ways(x: &HaStream, y: &HaStream) {
        for s in [x, y] {
            s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        }
        const N: usize = 8 << 20;
        let data: Vec<u8> = (0..N).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::thread::scope(|sc| {
            for s in [x, y] {
                let w = s.try_clone().unwrap();
                let data = &data;
                sc.spawn(move || {
                    let mut w = w;
                    for c in data.chunks(100_003) {
                        w.write_all(c).unwrap();
                    }
                });
                sc.spawn(move || {
                    let mut got = Vec::with_capacity(N);
                    let mut buf = vec![0u8; 70_000];
                    let mut r = s;
                    while got.len() < N {
                        match r.read(&mut buf) {
                            Ok(0) => panic!("early EOF"),
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    assert!(got == *data, "data differs");
                });
            }
        });
    }

    #[test]
    fn names_checked_and_texts_inert() {
        use confd_ha::proto::ha::NodeAddr;
        let ip = |s: &str| ServerName::IpAddress(s.parse::<IpAddr>().unwrap().into());
        assert_eq!(
            server_name(&NodeAddr::V4("10.0.0.1".parse().unwrap())).unwrap(),
            ip("10.0.0.1")
        );
        assert_eq!(
            server_name(&NodeAddr::V6("fe80::1".parse().unwrap())).unwrap(),
            ip("fe80::1")
        );
        // A name that is an IP is checked as an IP; a DNS name as a name.
        assert_eq!(
            server_name(&NodeAddr::Str("10.0.0.2".into())).unwrap(),
            ip("10.0.0.2")
        );
        assert!(matches!(
            server_name(&NodeAddr::Str("n1.example.net".into())).unwrap(),
            ServerName::DnsName(_)
        ));
        let e = server_name(&NodeAddr::Str("bad name\n".into())).unwrap_err();
        assert!(e.contains("bad name\\n") && !e.contains('\n'), "{e}");
        let long = inert(&"x".repeat(10_000));
        assert!(long.len() <= TLS_ERROR_TEXT_BYTES + 3 && long.ends_with("..."));
        // What each side is told.
        let e = describe(
            &rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
            "the primary",
        );
        assert_eq!(
            e,
            "TLS: the primary refused our certificate (alert UnknownCA)"
        );
        let e = describe(
            &rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            "the secondary",
        );
        assert!(e.starts_with("TLS: the secondary's certificate is refused: it does not chain"));
        assert!(is_tls_error(&tls_io(e)));
        assert!(!is_tls_error(&io::Error::other("x")));
    }

    #[test]
    fn load_errors_name_the_file() {
        let d = tmp("load");
        let pki = Pki::new();
        let f = pki.files(&d, "a", "127.0.0.1");
        let e = Tls::load(
            &TlsFiles {
                ca: d.join("missing.pem"),
                ..f.clone()
            },
            "127.0.0.1:1".parse().unwrap(),
        )
        .err()
        .unwrap();
        assert!(e.contains("ha-tls-ca") && e.contains("missing.pem"), "{e}");
        let e = Tls::load(
            &TlsFiles {
                key: f.cert.clone(),
                ..f.clone()
            },
            "127.0.0.1:1".parse().unwrap(),
        )
        .err()
        .unwrap();
        assert!(e.contains("ha-tls-key"), "{e}");
        // A key that is not the certificate's.
        let other = pki.files(&d, "b", "127.0.0.1");
        let e = Tls::load(
            &TlsFiles {
                key: other.key.clone(),
                ..f.clone()
            },
            "127.0.0.1:1".parse().unwrap(),
        )
        .err()
        .unwrap();
        assert!(e.contains("ha-tls-cert"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
