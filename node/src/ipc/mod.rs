//! The client-facing IPC server: listeners, the 9-byte hello, and the HA
//! control (17), event (11) and data (42) connections.

use crate::commit::CommitReq;
use crate::node::{lock, Node};
use crate::store::{StoreError, StoreOp};
use confd_ha::client::Stream;
use confd_ha::errcode::*;
use confd_ha::proto::data::{error_reply, ok_term, stats_to_term, DataRequest, Op};
use confd_ha::proto::frame::{read_frame, write_frame, FrameError, DEFAULT_MAX_FRAME};
use confd_ha::proto::ha::{HaReply, HaRequest};
use confd_ha::proto::hello::{
    ClientHello, ServerHello, CLIENT_EVENT_MGR, CLIENT_HA, CLIENT_HADATA, DEFAULT_MAXDEPTH,
    DEFAULT_MAXKEYLEN, DEFAULT_PROTO_VSN, HELLO_BAD_VSN, HELLO_OK,
};
use confd_ha::proto::term::Term;
use confd_ha::value::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The daemon's own version numbers: what it answers a hello that it
/// refuses (an unknown client id). An accepted hello is answered with the
/// client's own versions: ha-node serves programs built against any ConfD /
/// NSO release (unlike ConfD, which accepts only its own protocol version)
/// and speaks to each as a daemon of that release would.
pub const DAEMON_PROTO_VSN: u16 = DEFAULT_PROTO_VSN;
pub const DAEMON_VSN: u32 = 0x0807_0000;
/// Absolute deadline for the hello, and then for the token (HA control) or
/// the subscription (events): the whole exchange, not each read.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest token accepted.
pub const MAX_TOKEN: usize = 1024;
/// Largest frame of a subscription or an ha_sync_ack (both a few dozen bytes).
pub const MAX_SMALL_FRAME: usize = 64 * 1024;
/// Data connections admitted beyond `max-connections`, for read-only
/// requests (node state, stats, txid: what `ha-ctl status` uses).
pub const RESERVED_STATUS_SLOTS: usize = 2;
/// A connection refused for a limit is given this long to read its error.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Reads from a stream with an absolute deadline: each read waits at most
/// the time left, and reads past the deadline fail with `TimedOut`, so a
/// peer that sends one byte at a time cannot stretch the deadline.
pub struct Deadline<'a> {
    pub s: &'a mut Stream,
    pub until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.s.set_read_timeout(Some(left))?;
        self.s.read(buf)
    }
}

/// Decodes a term from a client: never compressed (no ConfD library sends
/// compressed terms), within the memory budget of its size.
pub fn decode_client(f: &[u8]) -> Result<Term, confd_ha::proto::term::DecodeError> {
    Term::decode_with(
        f,
        confd_ha::proto::term::DecodeLimits::for_input(f.len(), false),
    )
}

/// Reads one small frame (subscription, ack) by `until` and decodes it.
pub fn recv_small(s: &mut Stream, until: Option<Instant>) -> Result<Term, String> {
    let f = match until {
        Some(until) => read_frame(&mut Deadline { s, until }, MAX_SMALL_FRAME),
        None => read_frame(s, MAX_SMALL_FRAME),
    };
    match f {
        Ok(f) => decode_client(&f).map_err(|e| format!("garbage frame ({e})")),
        Err(FrameError::Closed) => Err("closed".into()),
        Err(FrameError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            Err("deadline passed".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

pub fn set_write_timeout(s: &Stream, d: Option<Duration>) {
    let _ = match s {
        Stream::Tcp(t) => t.set_write_timeout(d),
        Stream::Unix(u) => u.set_write_timeout(d),
    };
}

/// Most connections from one source address still in their hello or
/// handshake on one listening port once half of `max-pending-handshakes` are
/// in use, so that one source cannot fill the port for everyone else. Below
/// that a source may have more: a burst of connections from one host (a
/// client's connection pool, every local client on 127.0.0.1) is admitted.
pub const MAX_PENDING_HANDSHAKES_PER_SOURCE: usize = 8;

/// Connections of one listening port still in their hello: in all, and per
/// source address.
#[derive(Default)]
pub struct PendingCount {
    total: AtomicUsize,
    by_source: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection counted in a `PendingCount` while it lives.
pub struct Pending(Arc<PendingCount>, Option<std::net::IpAddr>);

/// Why a connection was not admitted to its hello.
pub enum PendingFull {
    /// `max` connections on the port are already pending.
    Port,
    /// `MAX_PENDING_HANDSHAKES_PER_SOURCE` from this source are already pending
    /// and half of the port's `max` are in use.
    Source,
}

impl PendingCount {
    /// Counts one more from `src` (None: a Unix socket, no source address),
    /// or says which cap is full.
    pub fn enter(
        self: &Arc<Self>,
        max: usize,
        src: Option<std::net::IpAddr>,
    ) -> Result<Pending, PendingFull> {
        if let Some(ip) = src {
            let mut m = lock(&self.by_source);
            let n = m.entry(ip).or_insert(0);
            if *n >= MAX_PENDING_HANDSHAKES_PER_SOURCE
                && self.total.load(Ordering::SeqCst) >= max / 2
            {
                return Err(PendingFull::Source);
            }
            *n += 1;
        }
        if self.total.fetch_add(1, Ordering::SeqCst) >= max {
            self.total.fetch_sub(1, Ordering::SeqCst);
            self.leave_source(src);
            return Err(PendingFull::Port);
        }
        Ok(Pending(self.clone(), src))
    }

    fn leave_source(&self, src: Option<std::net::IpAddr>) {
        if let Some(ip) = src {
            let mut m = lock(&self.by_source);
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        (self.0).total.fetch_sub(1, Ordering::SeqCst);
        self.0.leave_source(self.1);
    }
}

static CONN_IDS: AtomicU64 = AtomicU64::new(1);

pub fn bind_tcp(addr: &str) -> Result<TcpListener, String> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("bad IPC address {addr}: {e}"))?
        .collect();
    TcpListener::bind(&addrs[..]).map_err(|e| format!("cannot listen on IPC address {addr}: {e}"))
}

/// Binds the Unix socket, removing a stale socket file first (never another kind of file).
pub fn bind_unix(path: &Path) -> Result<UnixListener, String> {
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.file_type().is_socket() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "IPC socket {} is in use by another process",
                    path.display()
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
            crate::info!("ipc", "removed stale socket file {}", path.display());
        } else {
            return Err(format!(
                "{} exists and is not a socket; not removing it",
                path.display()
            ));
        }
    }
    UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))
}

pub fn serve_tcp(node: Arc<Node>, l: TcpListener) {
    let pending = Arc::new(PendingCount::default());
    let mut refused = crate::log::Throttle::default();
    loop {
        match l.accept() {
            Ok((s, a)) => {
                let max = node.cfg.max_pending_handshakes;
                let p = match pending.enter(max, Some(a.ip())) {
                    Ok(p) => p,
                    Err(PendingFull::Port) => {
                        refused.warn("ipc", &format!(
                            "connection from {a} closed: {max} connections on this port are still in their hello (max-pending-handshakes)"
                        ));
                        continue;
                    }
                    Err(PendingFull::Source) => {
                        refused.warn("ipc", &format!(
                            "connection from {a} closed: {MAX_PENDING_HANDSHAKES_PER_SOURCE} connections from {} on this port are still in their hello (MAX_PENDING_HANDSHAKES_PER_SOURCE)",
                            a.ip()
                        ));
                        continue;
                    }
                };
                let _ = s.set_nodelay(true);
                spawn_conn(node.clone(), Stream::Tcp(s), a.to_string(), p);
            }
            Err(e) => {
                crate::warn!("ipc", "accept: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

pub fn serve_unix(node: Arc<Node>, l: UnixListener) {
    let pending = Arc::new(PendingCount::default());
    let mut refused = crate::log::Throttle::default();
    loop {
        match l.accept() {
            Ok((s, _)) => {
                let Ok(p) = pending.enter(node.cfg.max_pending_handshakes, None) else {
                    refused.warn("ipc", &format!(
                        "connection on the Unix socket closed: {} connections are still in their hello (max-pending-handshakes)",
                        node.cfg.max_pending_handshakes
                    ));
                    continue;
                };
                spawn_conn(node.clone(), Stream::Unix(s), "unix".into(), p)
            }
            Err(e) => {
                crate::warn!("ipc", "accept: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Data and event connections admitted after their hello (each has a
/// thread; a subscriber has a writer thread too): at most `max-connections`.
static CLIENTS: AtomicUsize = AtomicUsize::new(0);
/// Data connections admitted beyond the limit, read-only.
static RESERVED: AtomicUsize = AtomicUsize::new(0);

/// Client connections being served now, admitted and read-only reserve (for the metrics).
pub fn live_connections() -> usize {
    CLIENTS.load(Ordering::SeqCst) + RESERVED.load(Ordering::SeqCst)
}

/// Counts one admitted connection in a counter while it exists.
struct Slot(&'static AtomicUsize);

impl Slot {
    fn take(c: &'static AtomicUsize, max: usize) -> Option<Slot> {
        if c.fetch_add(1, Ordering::SeqCst) >= max {
            c.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot(c))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn spawn_conn(node: Arc<Node>, s: Stream, peer: String, pending: Pending) {
    let id = CONN_IDS.fetch_add(1, Ordering::Relaxed);
    let who = format!("client #{id} ({peer})");
    let r = std::thread::Builder::new()
        .name("ipc-conn".into())
        .spawn(move || conn(node, s, id, who, pending));
    if let Err(e) = r {
        crate::error!("ipc", "cannot start a connection thread: {e}");
    }
}

/// Tells a client it was refused (one error frame), then closes gently: the
/// request it may already have sent is read and dropped for a moment, so
/// the close does not reset the connection before it reads the error.
fn refuse(mut s: Stream, code: i32, reason: &str) {
    let _ = write_frame(&mut s, &error_reply(code, reason).encode());
    let _ = match &s {
        Stream::Tcp(t) => t.shutdown(std::net::Shutdown::Write),
        Stream::Unix(u) => u.shutdown(std::net::Shutdown::Write),
    };
    let until = Instant::now() + REFUSAL_LINGER;
    let mut sink = [0u8; 4096];
    let mut d = Deadline { s: &mut s, until };
    while matches!(d.read(&mut sink), Ok(n) if n > 0) {}
}

fn server_hello(status: u8, proto_vsn: u16, vsn: u32) -> [u8; 9] {
    ServerHello {
        status,
        proto_vsn,
        vsn,
        maxdepth: DEFAULT_MAXDEPTH,
        maxkeylen: DEFAULT_MAXKEYLEN,
    }
    .encode()
}

fn conn(node: Arc<Node>, mut s: Stream, id: u64, who: String, pending: Pending) {
    let until = Instant::now() + HELLO_TIMEOUT;
    let mut b = [0u8; 9];
    if let Err(e) = (Deadline { s: &mut s, until }).read_exact(&mut b) {
        let why = match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("no hello within {} s", HELLO_TIMEOUT.as_secs())
            }
            std::io::ErrorKind::UnexpectedEof => "closed before a full hello".into(),
            _ => e.to_string(),
        };
        crate::peer_warn!("ipc", "{who}: {why}; closing");
        return;
    }
    let h = ClientHello::decode(&b);
    let kind = match h.client_id {
        CLIENT_HA => "HA control",
        CLIENT_EVENT_MGR => "event",
        CLIENT_HADATA => "data",
        other => {
            crate::peer_warn!(
                "ipc",
                "{who}: unknown client id {other} in hello {b:02x?}; answering status 1 and closing"
            );
            let _ = s.write_all(&server_hello(HELLO_BAD_VSN, DAEMON_PROTO_VSN, DAEMON_VSN));
            return;
        }
    };
    // Every protocol version is accepted, and answered with itself: the
    // connection then speaks that version's shapes (see events.rs for the
    // subscription and heartbeat terms).
    if h.proto_vsn != DAEMON_PROTO_VSN {
        crate::info!(
            "ipc",
            "{who}: library protocol version {} / {:#010x} (ours is {DAEMON_PROTO_VSN}); accepted, speaking version {}",
            h.proto_vsn,
            h.lib_vsn,
            h.proto_vsn
        );
    }
    set_write_timeout(&s, Some(HELLO_TIMEOUT));
    if s.write_all(&server_hello(HELLO_OK, h.proto_vsn, h.lib_vsn))
        .is_err()
    {
        return;
    }
    crate::debug!("ipc", "{who}: {kind} connection");
    let max = node.cfg.max_connections;
    // HA control always gets in: at most one is current (a newer one
    // replaces it), and the token read below has the hello's deadline.
    if h.client_id == CLIENT_HA {
        return ha_conn(&node, s, id, &who, until, pending);
    }
    let (slot, read_only) = match Slot::take(&CLIENTS, max) {
        Some(sl) => (sl, false),
        None => match Slot::take(&RESERVED, RESERVED_STATUS_SLOTS) {
            Some(sl) if h.client_id == CLIENT_HADATA => (sl, true),
            other => {
                drop(other);
                // Still counted as pending while it lingers to be refused.
                static REFUSED: std::sync::Mutex<crate::log::Throttle> =
                    std::sync::Mutex::new(crate::log::Throttle::new());
                lock(&REFUSED).warn(
                    "ipc",
                    &format!("{who}: {kind} connection refused: {max} client connections already served (max-connections)"),
                );
                refuse(
                    s,
                    CONFD_ERR_TOO_MANY_SESSIONS,
                    &format!("ha-node serves at most {max} client connections (max-connections); try again later"),
                );
                return;
            }
        },
    };
    let _slot = slot;
    drop(pending);
    match h.client_id {
        CLIENT_EVENT_MGR => node.events.serve(s, who, h.proto_vsn, until),
        _ => {
            if read_only {
                crate::info!(
                    "ipc",
                    "{who}: over max-connections ({max}); served read-only on a reserved slot"
                );
            }
            data_conn(&node, s, &who, read_only)
        }
    }
}

/// Reads one request frame; `None` ends the connection (with a log line).
fn read_request(s: &mut Stream, who: &str) -> Option<Term> {
    match read_frame(s, DEFAULT_MAX_FRAME) {
        Ok(f) => match decode_client(&f) {
            Ok(t) => Some(t),
            Err(e) => {
                crate::peer_warn!("ipc", "{who}: garbage frame ({e}); closing");
                None
            }
        },
        Err(FrameError::Closed) => {
            crate::debug!("ipc", "{who}: closed");
            None
        }
        Err(FrameError::TooLarge { len, max }) => {
            crate::peer_warn!(
                "ipc",
                "{who}: frame of {len} bytes exceeds the {max}-byte limit; closing"
            );
            None
        }
        Err(FrameError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            crate::info!(
                "ipc",
                "{who}: idle longer than client-idle-timeout; closing"
            );
            None
        }
        Err(FrameError::Io(e)) => {
            crate::warn!("ipc", "{who}: {e}; closing");
            None
        }
    }
}

fn reply(s: &mut Stream, t: &Term) -> bool {
    write_frame(s, &t.encode()).is_ok()
}

fn ha_conn(node: &Arc<Node>, mut s: Stream, id: u64, who: &str, until: Instant, pending: Pending) {
    let token = match read_frame(&mut Deadline { s: &mut s, until }, MAX_TOKEN) {
        Ok(t) if !t.is_empty() => t,
        Ok(_) => {
            crate::peer_warn!("ipc", "{who}: empty HA token; closing");
            return;
        }
        Err(e) => {
            crate::peer_warn!("ipc", "{who}: no HA token: {e}; closing");
            return;
        }
    };
    drop(pending);
    let _ = s.set_read_timeout(None);
    set_write_timeout(&s, None);
    let Ok(ctl) = s.try_clone() else {
        crate::warn!("ipc", "{who}: cannot clone the socket");
        return;
    };
    if !node.set_ha_conn(id, ctl, token) {
        crate::info!(
            "ipc",
            "{who}: a newer HA control connection already holds the token; closing this one"
        );
        return;
    }
    crate::info!("ipc", "{who}: HA control connection #{id} (token set)");
    while let Some(t) = read_request(&mut s, who) {
        let req = match HaRequest::from_term(&t) {
            Ok(r) => r,
            Err(e) => {
                crate::warn!("ipc", "{who}: {e}");
                if !reply(
                    &mut s,
                    &HaReply::Error {
                        code: CONFD_ERR_PROTOUSAGE,
                        reason: e,
                    }
                    .to_term(),
                ) {
                    break;
                }
                continue;
            }
        };
        if let Err(e) = check_order_ids(&req) {
            crate::warn!("ipc", "{who}: {e}");
            if !reply(
                &mut s,
                &HaReply::Error {
                    code: CONFD_ERR_PROTOUSAGE,
                    reason: e,
                }
                .to_term(),
            ) {
                break;
            }
            continue;
        }
        if req != HaRequest::GetStatus {
            // An HA_INFO_SYNC subscriber may hold the order (bounded by
            // info-sync-timeout); an order whose client went away meanwhile,
            // or whose connection was replaced, is not executed. (An order
            // that was not held runs even if its client closed right after
            // sending it, as an async besecondary's client may.)
            if node.events.wait_synced() && peer_gone(&s) {
                crate::warn!(
                    "ipc",
                    "{who}: the HA control connection closed before its order {req:?} could run; not executed"
                );
                break;
            }
        }
        if let Some(r) = node.order(req) {
            if !reply(&mut s, &r.to_term()) {
                break;
            }
        }
    }
    node.clear_ha_conn(id);
}

/// The node ids in an HA order are valid (non-empty, bounded).
fn check_order_ids(req: &HaRequest) -> Result<(), String> {
    use crate::replication::peer::check_node_id;
    match req {
        HaRequest::BePrimary { me } => check_node_id(me),
        HaRequest::BeSecondary { me, primary, .. } => {
            check_node_id(me).and_then(|_| check_node_id(&primary.id))
        }
        HaRequest::SecondaryDead { node } => check_node_id(node),
        _ => Ok(()),
    }
}

/// The peer closed (or this side shut the socket down): poll says so at once.
fn peer_gone(s: &Stream) -> bool {
    use std::os::fd::AsRawFd;
    let fd = match s {
        Stream::Tcp(t) => t.as_raw_fd(),
        Stream::Unix(u) => u.as_raw_fd(),
    };
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

fn store_err(e: StoreError) -> (i32, String) {
    match e {
        StoreError::BadPath(m) => (CONFD_ERR_BADPATH, format!("bad path {m}")),
        e => (CONFD_ERR_INTERNAL, e.to_string()),
    }
}

fn data_conn(node: &Arc<Node>, mut s: Stream, who: &str, read_only: bool) {
    // A reserved (over the limit) connection gets the hello's deadline as
    // its idle timeout: it is there for one status request.
    let idle = if read_only {
        Some(HELLO_TIMEOUT)
    } else {
        node.cfg.client_idle_timeout
    };
    let _ = s.set_read_timeout(idle);
    set_write_timeout(&s, None);
    // Bound to the PRIMARY role the node has now, if any (see `CommitReq::session`).
    let session = Arc::new(AtomicU64::new(node.primary_term_now.load(Ordering::SeqCst)));
    while let Some(t) = read_request(&mut s, who) {
        let r = match DataRequest::from_term(&t) {
            Ok(DataRequest::Raft(a, _)) if read_only && a != "status" => Err((
                CONFD_ERR_TOO_MANY_SESSIONS,
                format!(
                    "this connection is over max-connections ({}) and may only read the node state, stats, txid and raft status",
                    node.cfg.max_connections
                ),
            )),
            Ok(DataRequest::Commit(_)) if read_only => Err((
                CONFD_ERR_TOO_MANY_SESSIONS,
                format!(
                    "this connection is over max-connections ({}) and may only read the node state, stats and txid",
                    node.cfg.max_connections
                ),
            )),
            Ok(req) => data_request(node, req, &session),
            Err(e) => {
                crate::warn!("ipc", "{who}: {e}");
                Err((CONFD_ERR_PROTOUSAGE, e))
            }
        };
        let t = match r {
            Ok(x) => ok_term(x),
            Err((code, reason)) => error_reply(code, &reason),
        };
        if !reply(&mut s, &t) {
            break;
        }
    }
}

fn data_request(
    node: &Arc<Node>,
    req: DataRequest,
    session: &Arc<AtomicU64>,
) -> Result<Term, (i32, String)> {
    let st = &node.store;
    match req {
        DataRequest::Get(p) => match st.get(&p).map_err(store_err)? {
            Some(bytes) => {
                let t = Term::decode(&bytes).map_err(|e| {
                    (
                        CONFD_ERR_INTERNAL,
                        format!("stored value of {p} is damaged: {e}"),
                    )
                })?;
                Value::from_term(&t)
                    .map_err(|e| (CONFD_ERR_INTERNAL, format!("stored value of {p}: {e}")))?;
                Ok(t)
            }
            None => Err((CONFD_ERR_NOEXISTS, format!("no such path {p}"))),
        },
        DataRequest::Exists(p) => Ok(Term::atom(if st.exists(&p).map_err(store_err)? {
            "true"
        } else {
            "false"
        })),
        DataRequest::List(p) => Ok(Term::List(
            st.list(&p)
                .map_err(store_err)?
                .into_iter()
                .map(Term::binary)
                .collect(),
        )),
        DataRequest::TxId => Ok(Term::binary(lock(&node.commit).last.txid.clone())),
        DataRequest::Stats => Ok(stats_to_term(
            &node
                .stats_list()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Vec<_>>(),
        )),
        DataRequest::NodeState => Ok(node.node_state().to_term()),
        DataRequest::GetLinearizable(p) => match node.managed() {
            Some(m) => {
                m.read_barrier()?;
                data_request(node, DataRequest::Get(p), session)
            }
            None => Err((
                CONFD_ERR_BADSTATE,
                "a linearizable read needs mode = \"raft\" (this node is in external mode)".into(),
            )),
        },
        DataRequest::Raft(action, args) => match node.managed() {
            Some(m) => m.action(&action, &args).map(Term::binary),
            None => Err((
                CONFD_ERR_BADSTATE,
                format!("raft {action}: this node is not in Raft mode (mode = \"external\")"),
            )),
        },
        DataRequest::Commit(ops) => {
            // A commit that arrives while the node is PRIMARY binds the session to that role
            // (if it is not bound yet): if the node leaves the role before the committer
            // takes it, it is refused, not made in NONE (see `CommitReq::session`).
            let now = node.primary_term_now.load(Ordering::SeqCst);
            if now != 0 {
                let _ = session.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
            }
            // An early refusal, when the commit lock is free: the committer holds it across
            // a batch's fsync, and the committer checks again anyway (no wait here).
            if let Some(m) = node.managed() {
                m.check_writable()?;
            } else if let Ok(cs) = node.commit.try_lock() {
                if !cs.writable {
                    return Err((CONFD_ERR_NOT_WRITABLE, cs.refusal.clone()));
                }
            }
            let mut sops = Vec::with_capacity(ops.len());
            for op in ops {
                let p = match &op {
                    Op::Set(p, _) | Op::Delete(p) => p.clone(),
                };
                // Validate the path now: one bad path must not fail a whole group commit.
                if p == "/" {
                    return Err((
                        CONFD_ERR_BADPATH,
                        "bad path \"/\": the root cannot be written".into(),
                    ));
                }
                st.exists(&p).map_err(store_err)?;
                sops.push(match op {
                    Op::Set(p, v) => StoreOp::Set(p, v.to_term().encode()),
                    Op::Delete(p) => StoreOp::Delete(p),
                });
            }
            let (tx, rx) = sync_channel(1);
            let t0 = std::time::Instant::now();
            let req = CommitReq {
                ops: sops,
                reply: tx,
                session: session.clone(),
            };
            // A self-managing mode (Raft) orders and batches commits itself: straight to
            // it, one thread hand-off fewer than through the committer (the session binding
            // is external mode's).
            let sent = if let Some(m) = node.managed() {
                m.commit(vec![req]);
                true
            } else {
                // Sent outside the lock (the send may wake the committer).
                let committer = lock(&node.commit_tx).clone();
                committer
                    .as_ref()
                    .map(|c| c.send(req).is_ok())
                    .unwrap_or(false)
            };
            if !sent {
                return Err((CONFD_ERR_INTERNAL, "the committer is not running".into()));
            }
            match rx.recv() {
                Ok(Ok(txid)) => {
                    crate::metrics::COMMIT_LATENCY.observe(t0.elapsed().as_secs_f64());
                    Ok(Term::binary(txid))
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err((
                    CONFD_ERR_HA_ABORT,
                    "the committer stopped before answering: the outcome of this commit is \
                     unknown (read back and retry if missing)"
                        .into(),
                )),
            }
        }
    }
}
