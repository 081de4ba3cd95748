//! The Raft transport on the HA listener: one connection per direction and peer. The
//! dialing side proves the token (HMAC, as the HA port's handshake) and the listening
//! side proves it back; with `ha-tls-*` both ends are TLS-verified first. Before the
//! proof, frames are limited to MAX_HANDSHAKE_FRAME; after it to MAX_PEER_FRAME. A
//! snapshot is streamed in chunks and staged in a file in the data directory, never in
//! memory.

use super::Ev;
use crate::ipc::{PendingCount, PendingFull, MAX_PENDING_HANDSHAKES_PER_SOURCE};
use crate::node::{lock, Node};
use crate::replication::peer::{
    nonce, proof, verify_proof, FrameReader, PeerMsg, COPY_CHUNK_BYTES,
};
use crate::store::Snapshot as StoreSnapshot;
use crate::tls::HaStream;
use confd_ha::proto::frame::write_frame;
use confd_ha::proto::term::Term;
use protobuf::Message as _;
use raft::prelude::Message;
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Raft messages queued for one peer; more are dropped (Raft sends them again).
pub const MAX_QUEUED_RAFT_MSGS: usize = 1024;
/// Most authenticated inbound Raft connections claiming one node address at once; a new
/// one closes the oldest (a restarted member's stale connection, or one more of a peer
/// that claims that address).
pub const MAX_RAFT_INBOUND_PER_NODE: usize = 4;
/// Most authenticated inbound Raft connections at once. When they are all taken, a member
/// (a node this one keeps a link to) closes a non-member's to get in: non-members cannot
/// lock the members out.
pub const MAX_RAFT_INBOUND_CONNECTIONS: usize = 256;
/// Version of the Raft transport's handshake, offered first. 2 adds keepalive frames
/// (`TAG_PING`). A dialer whose version 2 hello is refused by a version 1 node (one from
/// before keepalives, which refuses any other version) dials it again with version 1 and
/// sends it no keepalives; a listener takes either. So a cluster can be upgraded one node
/// at a time.
const RAFT_PROTO_VSN: i64 = 2;
/// The oldest handshake version spoken (and the one without keepalives).
const RAFT_PROTO_VSN_MIN: i64 = 1;
/// How a version 1 node (and this one) refuses a hello of a version it does not speak.
const VSN_REFUSAL: &str = "unsupported Raft transport version";
/// Frame tags after the handshake.
const TAG_MSG: u8 = 1;
const TAG_SNAP_CHUNK: u8 = 2;
const TAG_SNAP_END: u8 = 3;
/// A keepalive (empty body), sent on a connection idle for a heartbeat interval: a link
/// between two followers stays open and checked, so that a candidate's vote request goes
/// out on an established connection (a dead one is found by the next write).
const TAG_PING: u8 = 4;
/// The wait before re-dialing a member that could not be reached starts at
/// RAFT_RECONNECT_MIN_BACKOFF_MS and doubles up to this.
pub const RAFT_RECONNECT_MAX_BACKOFF_MS: u64 = 500;
/// The first wait before re-dialing a member that could not be reached.
pub const RAFT_RECONNECT_MIN_BACKOFF_MS: u64 = 50;
/// The snapshot being received is staged in this file of the data directory.
pub const SNAPSHOT_STAGING_FILE: &str = "raft-snapshot.staging";

/// A stable id for a node address (raft-rs ids are u64; 0 is reserved).
pub fn id_of(addr: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(addr.as_bytes());
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes")).max(1)
}

enum Out {
    Msg(Vec<u8>),
    /// A MsgSnapshot (its bytes) with the store's view at its index.
    Snap(Vec<u8>, Box<StoreSnapshot>),
}

struct Outbound {
    tx: SyncSender<Out>,
    stream: Mutex<Option<HaStream>>,
    connected: AtomicBool,
    /// Set when the peer is no longer a member (keep_links): the sender thread ends.
    retired: AtomicBool,
}

pub struct Transport {
    node: Arc<Node>,
    me: String,
    cluster: String,
    passive: bool,
    token: Vec<u8>,
    to_raft: SyncSender<Ev>,
    out: Mutex<HashMap<u64, Arc<Outbound>>>,
    inbound: Mutex<HashMap<u64, (u64, HaStream)>>,
    /// How many inbound connections each node id has opened (authenticated) so far: a new
    /// one means the peer restarted or re-dialled.
    pub inbound_opened: Mutex<HashMap<u64, u64>>,
    inbound_ids: AtomicU64,
    /// When a Raft message last arrived from each node id (the leader lease counts these).
    pub last_rx: Mutex<HashMap<u64, Instant>>,
    /// When any frame (a Raft message or a keepalive) last arrived from each node id:
    /// `connected_nodes`.
    pub last_link: Mutex<HashMap<u64, Instant>>,
    /// The members this node keeps a connection to (see `keep_links`).
    linked: Mutex<std::collections::HashSet<u64>>,
    /// A digest of the membership `keep_links` last saw (the raft thread's own).
    pub links_sig: AtomicU64,
    /// Node addresses learned from handshakes, by id (a new member answers the leader
    /// before it knows the members).
    pub heard_addrs: Mutex<HashMap<u64, String>>,
    /// Node ids that said they are passive.
    pub passive_ids: Mutex<std::collections::HashSet<u64>>,
    receiving_snapshot: AtomicBool,
    stopped: AtomicBool,
    listener: Mutex<Option<TcpListener>>,
}

fn hs_timeout(node: &Node) -> Duration {
    node.cfg.handshake_timeout().max(Duration::from_secs(2))
}

fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(body.len() + 1);
    f.push(tag);
    f.extend_from_slice(body);
    f
}

impl Transport {
    pub fn start(
        node: Arc<Node>,
        token: Vec<u8>,
        to_raft: SyncSender<Ev>,
    ) -> Result<Arc<Transport>, String> {
        let r = node.cfg.raft.clone().ok_or("not in Raft mode")?;
        // A snapshot staged before a crash or stop is never resumed.
        let staged = node.cfg.data_dir.join(SNAPSHOT_STAGING_FILE);
        match std::fs::remove_file(&staged) {
            Ok(()) => crate::info!(
                "raft",
                "removed {} (left by the last run)",
                staged.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Staging fails then, and the transfer is retried: not a reason not to start.
            Err(e) => crate::warn!("raft", "cannot remove {}: {e}", staged.display()),
        }
        let l = TcpListener::bind(r.node_address)
            .map_err(|e| format!("cannot listen on raft node-address {}: {e}", r.node_address))?;
        let t = Arc::new(Transport {
            node,
            me: r.node_address.to_string(),
            cluster: r.cluster_name.clone(),
            passive: r.passive,
            token,
            to_raft,
            out: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
            inbound_opened: Mutex::new(HashMap::new()),
            inbound_ids: AtomicU64::new(1),
            last_rx: Mutex::new(HashMap::new()),
            last_link: Mutex::new(HashMap::new()),
            linked: Mutex::new(Default::default()),
            links_sig: AtomicU64::new(u64::MAX),
            passive_ids: Mutex::new(Default::default()),
            heard_addrs: Mutex::new(HashMap::new()),
            receiving_snapshot: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            listener: Mutex::new(l.try_clone().ok()),
        });
        let t2 = t.clone();
        std::thread::Builder::new()
            .name("raft-accept".into())
            .spawn(move || t2.accept_loop(l))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        crate::info!("raft", "Raft transport listening on {}", r.node_address);
        Ok(t)
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(l) = lock(&self.listener).take() {
            use std::os::fd::AsRawFd;
            // SAFETY: shutdown(2) on a listening socket we own wakes accept().
            unsafe {
                libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
        for o in lock(&self.out).values() {
            if let Some(s) = lock(&o.stream).as_ref() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        for (_, s) in lock(&self.inbound).values() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Sends a Raft message to its `to` node (at `addr`). Never blocks: a full queue drops it.
    pub fn send(self: &Arc<Self>, m: Message, addr: &str, snap: Option<StoreSnapshot>) -> bool {
        let to = m.to;
        let Ok(bytes) = m.write_to_bytes() else {
            return false;
        };
        let o = self.outbound(to, addr);
        let item = match snap {
            Some(s) => Out::Snap(bytes, Box::new(s)),
            None => Out::Msg(bytes),
        };
        match o.tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    fn outbound(self: &Arc<Self>, id: u64, addr: &str) -> Arc<Outbound> {
        let mut m = lock(&self.out);
        if let Some(o) = m.get(&id) {
            return o.clone();
        }
        let (tx, rx) = sync_channel(MAX_QUEUED_RAFT_MSGS);
        let o = Arc::new(Outbound {
            tx,
            stream: Mutex::new(None),
            connected: AtomicBool::new(false),
            retired: AtomicBool::new(false),
        });
        m.insert(id, o.clone());
        let t = self.clone();
        let o2 = o.clone();
        let addr = addr.to_string();
        let r = std::thread::Builder::new()
            .name("raft-out".into())
            .spawn(move || t.out_loop(id, addr, o2, rx));
        if let Err(e) = r {
            crate::error!("raft", "cannot start a sender thread: {e}");
        }
        o
    }

    /// Keeps a connection open to every member in `members` (id, node address) other than
    /// this node, made now if missing and re-made with backoff when lost; a member no
    /// longer listed loses its sender (it ends once its queue is written).
    pub fn keep_links(self: &Arc<Self>, members: &[(u64, String)]) {
        let want: std::collections::HashSet<u64> = members
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != id_of(&self.me))
            .collect();
        let gone: Vec<u64> = {
            let mut l = lock(&self.linked);
            if *l == want {
                return;
            }
            let gone = l.difference(&want).copied().collect();
            *l = want.clone();
            gone
        };
        for id in gone {
            if let Some(o) = lock(&self.out).remove(&id) {
                o.retired.store(true, Ordering::SeqCst);
            }
        }
        for (id, addr) in members {
            if want.contains(id) {
                self.outbound(*id, addr);
            }
        }
    }

    /// Drops the connections to and from `addr` (they are made again when needed).
    pub fn disconnect(&self, addr: &str) -> usize {
        let id = id_of(addr);
        let mut n = 0;
        if let Some(o) = lock(&self.out).get(&id) {
            if let Some(s) = lock(&o.stream).as_ref() {
                let _ = s.shutdown(std::net::Shutdown::Both);
                n += 1;
            }
        }
        for (from, s) in lock(&self.inbound).values() {
            if *from == id {
                let _ = s.shutdown(std::net::Shutdown::Both);
                n += 1;
            }
        }
        n
    }

    fn out_loop(self: Arc<Self>, id: u64, addr: String, o: Arc<Outbound>, rx: Receiver<Out>) {
        let interval = self
            .node
            .cfg
            .raft
            .as_ref()
            .map(|r| r.heartbeat_interval)
            .unwrap_or(Duration::from_millis(100));
        let mut failures = 0u32;
        let mut backoff = Duration::from_millis(RAFT_RECONNECT_MIN_BACKOFF_MS);
        // The handshake version this peer takes (see RAFT_PROTO_VSN).
        let mut vsn = RAFT_PROTO_VSN;
        while !self.stopped.load(Ordering::SeqCst) && !o.retired.load(Ordering::SeqCst) {
            let s = match self.dial(&addr, vsn) {
                Ok(s) => s,
                Err(e) if vsn > RAFT_PROTO_VSN_MIN && e.contains(VSN_REFUSAL) => {
                    crate::info!(
                        "raft",
                        "{addr} speaks Raft transport version {RAFT_PROTO_VSN_MIN} only (an \
                         older ha-node): connecting with it, without keepalives"
                    );
                    vsn = RAFT_PROTO_VSN_MIN;
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(100) {
                        crate::peer_warn!("raft", "cannot connect to {addr}: {e}");
                    }
                    let _ = self.to_raft.try_send(Ev::Unreachable(id));
                    // Drop what queued meanwhile (Raft sends again); a snapshot failed.
                    let until = Instant::now() + backoff;
                    backoff =
                        (backoff * 2).min(Duration::from_millis(RAFT_RECONNECT_MAX_BACKOFF_MS));
                    loop {
                        let left = until.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(Out::Snap(..)) => {
                                let _ = self.to_raft.try_send(Ev::SnapshotDone(id, false));
                            }
                            Ok(Out::Msg(_)) => {}
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    continue;
                }
            };
            if failures > 0 {
                crate::info!("raft", "connected to {addr}");
            }
            failures = 0;
            backoff = Duration::from_millis(RAFT_RECONNECT_MIN_BACKOFF_MS);
            *lock(&o.stream) = s.try_clone().ok();
            o.connected.store(true, Ordering::Relaxed);
            // No keepalives to a version 1 node: it would close the connection on one.
            let idle = if vsn >= 2 { Some(interval) } else { None };
            let r = self.pump(id, &s, &rx, idle, &o.retired);
            o.connected.store(false, Ordering::Relaxed);
            *lock(&o.stream) = None;
            let _ = s.shutdown(std::net::Shutdown::Both);
            match r {
                Ok(()) => return,
                Err(e) => {
                    crate::info!("raft", "connection to {addr} lost: {e}");
                    let _ = self.to_raft.try_send(Ev::Unreachable(id));
                }
            }
        }
    }

    /// Writes queued messages until an error (Ok: the queue closed, or the peer was
    /// retired and nothing is queued); a keepalive after `idle` without one (None: the
    /// peer takes no keepalives; the queue is still checked that often).
    fn pump(
        &self,
        id: u64,
        s: &HaStream,
        rx: &Receiver<Out>,
        idle: Option<Duration>,
        retired: &AtomicBool,
    ) -> Result<(), String> {
        let pings = idle.is_some();
        let idle = idle.unwrap_or(Duration::from_millis(100));
        let _ = s.set_write_timeout(Some(hs_timeout(&self.node) * 2));
        let mut w = s;
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return Ok(());
            }
            let item = match rx.recv_timeout(idle) {
                Ok(i) => i,
                Err(RecvTimeoutError::Timeout) if retired.load(Ordering::SeqCst) => {
                    return Ok(());
                }
                Err(RecvTimeoutError::Timeout) if !pings => continue,
                Err(RecvTimeoutError::Timeout) => {
                    write_frame(&mut w, &[TAG_PING]).map_err(|e| e.to_string())?;
                    let _ = w.flush();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            match item {
                Out::Msg(b) => {
                    write_frame(&mut w, &tagged(TAG_MSG, &b)).map_err(|e| e.to_string())?;
                }
                Out::Snap(b, mut sn) => {
                    let r = (|| -> Result<(), String> {
                        while let Some(c) =
                            sn.next_chunk(COPY_CHUNK_BYTES).map_err(|e| e.to_string())?
                        {
                            let body = PeerMsg::CopyChunk(c).encode();
                            write_frame(&mut w, &tagged(TAG_SNAP_CHUNK, &body))
                                .map_err(|e| e.to_string())?;
                        }
                        write_frame(&mut w, &tagged(TAG_SNAP_END, &b)).map_err(|e| e.to_string())
                    })();
                    let _ = self.to_raft.send(Ev::SnapshotDone(id, r.is_ok()));
                    r?;
                }
            }
            let _ = w.flush();
        }
    }

    /// A TCP connection to `a` from this node's node-address IP (so that the peer can
    /// check that it comes from the address it claims); from any address when that IP is
    /// not one of this host's (NAT: the peer then needs check-source-address = false).
    fn connect_from_node_address(&self, a: &SocketAddr, hs: Duration) -> Result<TcpStream, String> {
        use socket2::{Domain, Socket, Type};
        let mine: Option<SocketAddr> = self.me.parse().ok();
        if let Some(m) = mine.filter(|m| m.is_ipv4() == a.is_ipv4()) {
            let sock = Socket::new(Domain::for_address(*a), Type::STREAM, None)
                .map_err(|e| e.to_string())?;
            if sock.bind(&SocketAddr::new(m.ip(), 0).into()).is_ok() {
                sock.connect_timeout(&(*a).into(), hs)
                    .map_err(|e| e.to_string())?;
                return Ok(sock.into());
            }
        }
        TcpStream::connect_timeout(a, hs).map_err(|e| e.to_string())
    }

    fn dial(&self, addr: &str, vsn: i64) -> Result<HaStream, String> {
        let a: SocketAddr = addr
            .parse()
            .map_err(|e| format!("bad address {addr}: {e}"))?;
        let hs = hs_timeout(&self.node);
        let until = Instant::now() + hs;
        let tcp = self.connect_from_node_address(&a, hs)?;
        let _ = tcp.set_nodelay(true);
        let s = crate::tls::connect(
            self.node.tls.as_deref(),
            tcp,
            &crate::node::node_addr(a),
            until,
        )?;
        let mut fr = FrameReader::new();
        let nc = nonce().map_err(|e| e.to_string())?;
        let hello = Term::Tuple(vec![
            Term::atom("raft_hello"),
            Term::int(vsn),
            Term::binary(&self.cluster),
            Term::binary(&self.me),
            Term::binary(&nc),
            Term::atom(if self.passive { "true" } else { "false" }),
        ]);
        let _ = s.set_write_timeout(Some(hs));
        write_frame(&mut &s, &hello.encode()).map_err(|e| e.to_string())?;
        let t = read_term(&mut fr, &s, until)?;
        let e = t.as_tuple().unwrap_or(&[]);
        match e {
            [a, ns, p] if a.is_atom("raft_challenge") => {
                let ns = ns.as_binary().ok_or("bad challenge")?.to_vec();
                let p = p.as_binary().ok_or("bad challenge")?;
                if !verify_proof(&self.token, "raft-server", &nc, &ns, p) {
                    return Err("the peer does not know the token (its proof is wrong)".into());
                }
                let mut mine = nc.clone();
                mine.extend_from_slice(self.me.as_bytes());
                let auth = Term::Tuple(vec![
                    Term::atom("raft_auth"),
                    Term::binary(proof(&self.token, "raft-client", &ns, &mine)),
                ]);
                write_frame(&mut &s, &auth.encode()).map_err(|e| e.to_string())?;
                let t = read_term(&mut fr, &s, until)?;
                match t.as_tuple().unwrap_or(&[]) {
                    [a] if a.is_atom("raft_welcome") => Ok(s),
                    [a, r] if a.is_atom("raft_reject") => Err(format!(
                        "refused: {}",
                        String::from_utf8_lossy(r.as_binary().unwrap_or(b"?"))
                    )),
                    _ => Err("unexpected answer to raft_auth".into()),
                }
            }
            [a, r] if a.is_atom("raft_reject") => Err(format!(
                "refused: {}",
                String::from_utf8_lossy(r.as_binary().unwrap_or(b"?"))
            )),
            _ => Err("unexpected answer to raft_hello (not an ha-node in Raft mode?)".into()),
        }
    }

    fn accept_loop(self: Arc<Self>, l: TcpListener) {
        let pending = Arc::new(PendingCount::default());
        let mut refused = crate::log::Throttle::default();
        loop {
            let (s, a) = match l.accept() {
                Ok(x) => x,
                Err(e) => {
                    if self.stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    crate::warn!("raft", "accept: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            let max = self.node.cfg.max_pending_handshakes;
            let p = match pending.enter(max, Some(a.ip())) {
                Ok(p) => p,
                Err(PendingFull::Port) => {
                    refused.warn("raft", &format!("connection from {a} closed: {max} connections are still in their handshake (max-pending-handshakes)"));
                    continue;
                }
                Err(PendingFull::Source) => {
                    refused.warn("raft", &format!("connection from {a} closed: {MAX_PENDING_HANDSHAKES_PER_SOURCE} connections from {} are still in their handshake (MAX_PENDING_HANDSHAKES_PER_SOURCE)", a.ip()));
                    continue;
                }
            };
            let t = self.clone();
            let r = std::thread::Builder::new()
                .name("raft-in".into())
                .spawn(move || t.serve(s, a, p));
            if let Err(e) = r {
                crate::error!("raft", "cannot start a connection thread: {e}");
            }
        }
    }

    fn reject(s: &HaStream, why: &str) {
        let t = Term::Tuple(vec![Term::atom("raft_reject"), Term::binary(why)]);
        let _ = write_frame(&mut &*s, &t.encode());
    }

    fn serve(self: Arc<Self>, tcp: TcpStream, a: SocketAddr, pending: crate::ipc::Pending) {
        let hs = hs_timeout(&self.node);
        let until = Instant::now() + hs;
        let _ = tcp.set_nodelay(true);
        let s = match crate::tls::accept(self.node.tls.as_deref(), tcp, until) {
            Ok(s) => s,
            Err(e) => {
                crate::peer_warn!("raft", "connection from {a}: {e}; closed");
                return;
            }
        };
        let _ = s.set_write_timeout(Some(hs));
        let mut fr = FrameReader::new();
        let from = match self.handshake(&s, &mut fr, until, a.ip()) {
            Ok(f) => f,
            Err(e) => {
                crate::peer_warn!("raft", "connection from {a} refused: {e}");
                Self::reject(&s, &e);
                return;
            }
        };
        drop(pending);
        fr.authenticated();
        let from_id = id_of(&from);
        let cid = self.inbound_ids.fetch_add(1, Ordering::Relaxed);
        {
            // (A copy: `linked` is never held while `inbound` is.)
            let linked = lock(&self.linked).clone();
            let member = linked.contains(&from_id);
            let mut m = lock(&self.inbound);
            // The oldest connection claiming the same node, when it has its share.
            let mut same: Vec<u64> = m
                .iter()
                .filter(|(_, (id, _))| *id == from_id)
                .map(|(c, _)| *c)
                .collect();
            let mut evict = None;
            if same.len() >= MAX_RAFT_INBOUND_PER_NODE {
                same.sort_unstable();
                evict = same.first().copied();
            } else if m.len() >= MAX_RAFT_INBOUND_CONNECTIONS {
                if member {
                    evict = m
                        .iter()
                        .filter(|(_, (id, _))| !linked.contains(id))
                        .map(|(c, _)| *c)
                        .min();
                }
                if evict.is_none() {
                    drop(m);
                    crate::peer_warn!("raft", "connection from {from} ({a}) closed: {MAX_RAFT_INBOUND_CONNECTIONS} Raft connections already (MAX_RAFT_INBOUND_CONNECTIONS)");
                    return;
                }
            }
            if let Some((_, old)) = evict.and_then(|c| m.remove(&c)) {
                let _ = old.shutdown(std::net::Shutdown::Both);
                crate::debug!(
                    "raft",
                    "connection from {from} ({a}): an older inbound connection closed to make room"
                );
            }
            if let Ok(c) = s.try_clone() {
                m.insert(cid, (from_id, c));
            }
        }
        *lock(&self.inbound_opened).entry(from_id).or_insert(0) += 1;
        crate::debug!("raft", "connection from {from} ({a}) authenticated");
        let r = self.read_loop(&s, &mut fr, from_id);
        lock(&self.inbound).remove(&cid);
        let _ = s.shutdown(std::net::Shutdown::Both);
        if let Err(e) = r {
            crate::debug!("raft", "connection from {from} ({a}) ended: {e}");
        }
    }

    /// The listening side of the handshake; the dialer's node address on success.
    fn handshake(
        &self,
        s: &HaStream,
        fr: &mut FrameReader,
        until: Instant,
        source: std::net::IpAddr,
    ) -> Result<String, String> {
        let t = read_term(fr, s, until)?;
        let e = t.as_tuple().unwrap_or(&[]);
        let [a, vsn, cluster, from, nc, passive] = e else {
            return Err("expected raft_hello (is the peer an ha-node in Raft mode?)".into());
        };
        if !a.is_atom("raft_hello") {
            return Err("expected raft_hello (is the peer an ha-node in Raft mode?)".into());
        }
        if !vsn
            .as_i64()
            .is_some_and(|v| (RAFT_PROTO_VSN_MIN..=RAFT_PROTO_VSN).contains(&v))
        {
            return Err(format!("{VSN_REFUSAL} {vsn:?}"));
        }
        let cluster = String::from_utf8_lossy(cluster.as_binary().unwrap_or(b"")).into_owned();
        if cluster != self.cluster {
            // This node's own cluster-name is not told to an unauthenticated peer.
            return Err(format!(
                "cluster-name '{}' is not this node's cluster",
                cluster
            ));
        }
        let from = String::from_utf8(from.as_binary().unwrap_or(b"").to_vec())
            .ok()
            .filter(|f| f.parse::<SocketAddr>().is_ok())
            .ok_or("the peer's node address is not IP:PORT")?;
        // The claimed node address's IP is the one it connects from (nodes dial from their
        // node-address IP): a token holder on another host cannot speak as a member.
        let check_source = self
            .node
            .cfg
            .raft
            .as_ref()
            .is_none_or(|r| r.check_source_address);
        if let Ok(sa) = from.parse::<SocketAddr>() {
            let same = sa.ip() == source
                || matches!((sa.ip(), source), (std::net::IpAddr::V4(c), std::net::IpAddr::V6(s)) if s.to_ipv4_mapped() == Some(c));
            if check_source && !same {
                return Err(format!(
                    "the peer claims node address {from} but connects from {source} \
                     (check-source-address; set it to false where members reach each other \
                     through NAT)"
                ));
            }
        }
        // With TLS, the claimed node address must be one its certificate names (a dialer
        // checks the same of the node it dials): a certificate of the CA does not make its
        // holder any member it likes.
        if let Ok(sa) = from.parse::<SocketAddr>() {
            s.check_peer_names(sa.ip())
                .map_err(|e| format!("the peer claims node address {from}, but {e}"))?;
        }
        let nc = nc.as_binary().ok_or("bad nonce")?.to_vec();
        let ns = nonce().map_err(|e| e.to_string())?;
        let ch = Term::Tuple(vec![
            Term::atom("raft_challenge"),
            Term::binary(&ns),
            Term::binary(proof(&self.token, "raft-server", &nc, &ns)),
        ]);
        write_frame(&mut &*s, &ch.encode()).map_err(|e| e.to_string())?;
        let t = read_term(fr, s, until)?;
        let p = match t.as_tuple().unwrap_or(&[]) {
            [a, p] if a.is_atom("raft_auth") => p.as_binary().ok_or("bad raft_auth")?.to_vec(),
            _ => return Err("expected raft_auth".into()),
        };
        let mut theirs = nc.clone();
        theirs.extend_from_slice(from.as_bytes());
        if !verify_proof(&self.token, "raft-client", &ns, &theirs, &p) {
            return Err("wrong token proof".into());
        }
        write_frame(
            &mut &*s,
            &Term::Tuple(vec![Term::atom("raft_welcome")]).encode(),
        )
        .map_err(|e| e.to_string())?;
        let id = id_of(&from);
        {
            let mut h = lock(&self.heard_addrs);
            if h.len() < MAX_RAFT_INBOUND_CONNECTIONS || h.contains_key(&id) {
                h.insert(id, from.clone());
            }
        }
        if passive.is_atom("true") {
            lock(&self.passive_ids).insert(id);
        } else {
            lock(&self.passive_ids).remove(&id);
        }
        Ok(from)
    }

    fn read_loop(&self, s: &HaStream, fr: &mut FrameReader, from_id: u64) -> Result<(), String> {
        let idle = self
            .node
            .cfg
            .raft
            .as_ref()
            .map(|r| (r.election_timeout * 10).max(Duration::from_secs(10)))
            .unwrap_or(Duration::from_secs(10));
        let mut staging: Option<(std::fs::File, PathBuf)> = None;
        let max_bytes = self
            .node
            .cfg
            .raft
            .as_ref()
            .map(|r| r.snapshot_max_bytes)
            .unwrap_or(crate::config::DEFAULT_RAFT_SNAPSHOT_MAX_BYTES);
        let mut staged_bytes = 0u64;
        // This connection holds `receiving_snapshot` (set by it, not yet handed over with
        // the staged file): cleared below however the connection ends.
        let mut holds_flag = false;
        let r = (|| loop {
            if self.stopped.load(Ordering::SeqCst) {
                return Ok(());
            }
            let f = match fr.read_until(s, Instant::now() + idle) {
                Ok(Some(f)) => f,
                Ok(None) => return Err(format!("nothing received for {} ms", idle.as_millis())),
                Err(e) => return Err(e.to_string()),
            };
            lock(&self.last_link).insert(from_id, Instant::now());
            let (tag, body) = f.split_first().ok_or("empty frame")?;
            if *tag != TAG_PING {
                lock(&self.last_rx).insert(from_id, Instant::now());
            }
            match *tag {
                TAG_PING => {}
                TAG_MSG => {
                    let m = Message::parse_from_bytes(body)
                        .map_err(|e| format!("bad Raft message: {e}"))?;
                    if m.from != from_id {
                        crate::peer_warn!(
                            "raft",
                            "a Raft message from {} claims node id {} (not its own): dropped",
                            self.name_of(from_id),
                            m.from
                        );
                        continue;
                    }
                    if self.to_raft.send(Ev::Msg(m)).is_err() {
                        return Ok(());
                    }
                }
                TAG_SNAP_CHUNK => {
                    if staging.is_none() {
                        if self.receiving_snapshot.swap(true, Ordering::SeqCst) {
                            return Err("a second snapshot while one is being received".into());
                        }
                        holds_flag = true;
                        let p = self.node.cfg.data_dir.join(SNAPSHOT_STAGING_FILE);
                        let f = std::fs::File::create(&p)
                            .map_err(|e| format!("{}: {e}", p.display()))?;
                        staging = Some((f, p));
                    }
                    // Checked now, so that the raft thread reads back only valid chunks.
                    match PeerMsg::decode(body) {
                        Ok(PeerMsg::CopyChunk(_)) => {}
                        _ => return Err("bad snapshot chunk".into()),
                    }
                    staged_bytes += 4 + body.len() as u64;
                    if staged_bytes > max_bytes {
                        if let Some((_, p)) = staging.take() {
                            let _ = std::fs::remove_file(p);
                        }
                        crate::peer_warn!(
                            "raft",
                            "the snapshot from {} exceeds snapshot-max-bytes ({max_bytes} \
                             bytes): transfer aborted, staged data removed",
                            self.name_of(from_id)
                        );
                        return Err("snapshot over snapshot-max-bytes".into());
                    }
                    let (file, _) = staging.as_mut().expect("set above");
                    file.write_all(&(body.len() as u32).to_be_bytes())
                        .and_then(|_| file.write_all(body))
                        .map_err(|e| format!("staging the snapshot: {e}"))?;
                }
                TAG_SNAP_END => {
                    let m = Message::parse_from_bytes(body)
                        .map_err(|e| format!("bad Raft message: {e}"))?;
                    if m.from != from_id {
                        return Err("a Raft message from another node's id".into());
                    }
                    let path = match staging.take() {
                        Some((f, p)) => {
                            f.sync_all()
                                .map_err(|e| format!("staging the snapshot: {e}"))?;
                            p
                        }
                        None => {
                            // An empty store: no chunks.
                            if self.receiving_snapshot.swap(true, Ordering::SeqCst) {
                                return Err("a second snapshot while one is being received".into());
                            }
                            holds_flag = true;
                            let p = self.node.cfg.data_dir.join(SNAPSHOT_STAGING_FILE);
                            std::fs::File::create(&p)
                                .map_err(|e| format!("{}: {e}", p.display()))?;
                            p
                        }
                    };
                    // The raft thread owns the staged file from here and clears the flag.
                    holds_flag = false;
                    staged_bytes = 0;
                    if self.to_raft.send(Ev::Snapshot(m, path)).is_err() {
                        return Ok(());
                    }
                }
                t => return Err(format!("unknown frame tag {t}")),
            }
        })();
        if let Some((_, p)) = staging.take() {
            // A transfer cut off midway.
            let _ = std::fs::remove_file(p);
        }
        if holds_flag {
            self.receiving_snapshot.store(false, Ordering::SeqCst);
        }
        r
    }

    fn name_of(&self, id: u64) -> String {
        lock(&self.heard_addrs)
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("node id {id}"))
    }

    /// The staged snapshot was consumed (or dropped).
    pub fn snapshot_consumed(&self) {
        self.receiving_snapshot.store(false, Ordering::SeqCst);
    }
}

fn read_term(fr: &mut FrameReader, s: &HaStream, until: Instant) -> Result<Term, String> {
    match fr.read_until(s, until) {
        Ok(Some(f)) => crate::ipc::decode_client(&f).map_err(|e| format!("garbage frame ({e})")),
        Ok(None) => Err("handshake not done in time".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// One chunk of (path, value) pairs, or why it cannot be read.
pub type ChunkResult = Result<Vec<(String, Vec<u8>)>, String>;

/// Reads back a staged snapshot's chunks, one at a time.
pub fn staged_chunks(path: &std::path::Path) -> Result<impl Iterator<Item = ChunkResult>, String> {
    use std::io::Read;
    let mut f = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| e.to_string())?);
    Ok(std::iter::from_fn(move || {
        let mut len = [0u8; 4];
        match f.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(e.to_string())),
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > crate::replication::peer::MAX_PEER_FRAME {
            return Some(Err("staged chunk too large".into()));
        }
        let mut b = Vec::new();
        if let Err(e) = (&mut f).take(n as u64).read_to_end(&mut b) {
            return Some(Err(e.to_string()));
        }
        match PeerMsg::decode(&b) {
            Ok(PeerMsg::CopyChunk(c)) => Some(Ok(c)),
            _ => Some(Err("bad staged chunk".into())),
        }
    }))
}
