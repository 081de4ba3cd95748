//! The serving side of replication, used by a primary and by a relay: HA
//! listeners, the handshake with joining secondaries, full copies, the
//! per-secondary writer and reader threads, acks, and dropping dead peers.

use crate::node::{id_str, lock, node_addr, Node};
use crate::replication::external::secondary::Upstream;
use crate::replication::peer::{
    chunk_term, frame, framed, negotiate, nonce, proof, push_frame, queue, send_now, verify_proof,
    writer_loop, FrameReader, Out, PeerMsg, ReadErr, WriterState, CATCH_UP_MIN_VSN,
    COPY_CHUNK_BYTES, HA_PROTO_VSN, HA_PROTO_VSN_MIN,
};
use crate::store::{Snapshot, StoreOp, TxMeta};
use crate::tls::HaStream;
use confd_ha::errcode::*;
use confd_ha::proto::ha::{HaEvent, HaNode, NodeAddr};
use confd_ha::value::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// At most this many secondaries per primary or relay (the C status struct holds 255).
pub const MAX_SECONDARIES: usize = 255;
/// Replication data queued for one secondary beyond this cuts it off.
const MAX_QUEUED_BYTES: usize = 256 * 1024 * 1024;
/// A full copy keeps at most this many bytes queued for the writer.
const COPY_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// A joining secondary that needs a copy is told the txids we hold at this many seqs up to
/// the lower of its last seq and ours, so that it can name the transactions the copy
/// discards (its rollback file).
pub const ROLLBACK_WINDOW_TXNS: u64 = 1000;
/// A waiting thread that wakes this much later than it asked was not running (SIGSTOP, a
/// paused VM, a machine under heavy load): the time it lost does not count against a peer's
/// tick or ack deadline, so a node that was frozen never declares its peers dead for its own
/// silence (and never acknowledges a commit because of that).
pub const STALL_SLACK: Duration = Duration::from_millis(500);
/// Slice of the waits that watch for such stalls.
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// When each of at most this many recent transactions was sent, kept for the secondaries'
/// `lag_ms` (a secondary further behind than that reports the age of the oldest one kept).
pub const MAX_SENT_TIMES: usize = 65_536;
/// Full-copy counters kept for at most this many node ids (connected ones are never evicted).
const MAX_COPY_COUNTERS: usize = 4 * MAX_SECONDARIES;
/// A re-joining secondary whose missed transactions take more than this many bytes on the
/// wire gets a full copy instead of a catch-up (the backlog is queued at once, and live data
/// must still fit under MAX_QUEUED_BYTES behind it).
pub const MAX_CATCH_UP_BYTES: usize = 128 * 1024 * 1024;

/// The missed transactions of a re-joining secondary, encoded as `txn` frames, and the
/// last one's (seq, txid) (see [`Downstream::read_backlog`]).
struct Backlog {
    frames: Vec<Arc<Vec<u8>>>,
    bytes: usize,
    last: TxMeta,
    /// The first missed transaction's seq (0 while none).
    first: u64,
    /// It starts after this node's copy base (see `CommitState::copy_base`) at this seq,
    /// which the log does not hold.
    from_base: Option<u64>,
}

impl Backlog {
    /// The missed transactions from `from` on, read only if their log records fit in what
    /// is left of MAX_CATCH_UP_BYTES (so a huge backlog is never read into memory).
    fn read(&self, node: &Node, from: u64) -> Result<Vec<(TxMeta, Vec<StoreOp>)>, String> {
        node.store
            .txlog_within(from, MAX_CATCH_UP_BYTES.saturating_sub(self.bytes))
            .map_err(|e| format!("this node cannot read its transaction log ({e})"))?
            .ok_or_else(Self::too_big)
    }

    fn too_big() -> String {
        format!(
            "the transactions it missed take more than {} MiB (MAX_CATCH_UP_BYTES)",
            MAX_CATCH_UP_BYTES >> 20
        )
    }

    fn add(&mut self, txns: Vec<(TxMeta, Vec<StoreOp>)>) -> Result<(), String> {
        for (m, ops) in txns {
            let f = frame(&PeerMsg::Txn {
                seq: m.seq,
                txid: m.txid.clone(),
                ops,
            });
            self.bytes += f.len();
            if self.bytes > MAX_CATCH_UP_BYTES {
                return Err(Self::too_big());
            }
            self.frames.push(f);
            if self.first == 0 {
                self.first = m.seq;
            }
            self.last = m;
        }
        Ok(())
    }
}

/// How a joining secondary gets our data.
enum JoinPlan {
    /// Its last transaction is ours.
    NoCopy,
    /// Its last transaction is in our history: it is sent the ones after it.
    CatchUp(Backlog),
    /// Everything, for this reason.
    Copy(String),
}

/// What the secondaries said about a commit (see [`Downstream::wait_acks`]).
#[derive(Default, Debug)]
pub struct Acks {
    /// Secondaries that acknowledged it as durable.
    pub confirmed: usize,
    /// Secondaries that neither acknowledged it nor were declared dead (3 ticks without a
    /// tick or an ack, or `secondary_dead`): each "who: why". The commit's outcome is then
    /// unknown and it must not be reported as a success.
    pub lost: Vec<String>,
}

/// Who of `targets` confirmed `seq`, and who was lost without confirming it or being
/// declared dead (once none of them is still pending).
pub fn acks_of(targets: &[Arc<Peer>], seq: u64) -> Acks {
    let mut acks = Acks::default();
    for p in targets {
        if p.acked.load(Ordering::SeqCst) >= seq {
            acks.confirmed += 1;
        } else if !p.declared.load(Ordering::SeqCst) {
            let why = lock(&p.kill_reason)
                .clone()
                .unwrap_or_else(|| "its connection was lost".into());
            acks.lost.push(format!("{}: {why}", p.who));
        }
    }
    acks
}

pub struct Peer {
    pub id: Value,
    pub addr: NodeAddr,
    pub who: String,
    tx: Sender<Out>,
    wstate: Arc<WriterState>,
    out: Mutex<PeerOut>,
    /// Highest seq the secondary acknowledged as durable.
    pub acked: AtomicU64,
    /// Highest seq queued for it (an ack beyond this is a protocol error).
    pub sent_seq: AtomicU64,
    /// It holds our data (no copy, or its copy was acknowledged).
    pub initialized: AtomicBool,
    /// The end of its full copy has been queued (or it needed none): every transaction
    /// queued from now on reaches it after its copy, so sync commits wait for it, even
    /// before its copy acknowledgement makes it `initialized` (its besecondary may return
    /// before that acknowledgement reaches us).
    copy_done_sent: AtomicBool,
    init_seq: u64,
    dead: AtomicBool,
    /// Declared dead (no ticks or acks for 3 ticks, or `secondary_dead`): a commit that it
    /// did not acknowledge may still succeed. Any other loss leaves the commit unconfirmed.
    declared: AtomicBool,
    kill_reason: Mutex<Option<String>>,
    stream: HaStream,
    pub last_rx: Mutex<Instant>,
    /// Everything that reached the socket before this instant has been read and handled
    /// (acks counted): the reader's last read that left nothing buffered started then.
    read_until: Mutex<Instant>,
    /// When it joined (the start of its full copy, if it got one).
    joined: Instant,
    /// The node process's instance id and join attempt (protocol version 2 on).
    instance: Option<(Vec<u8>, u64)>,
    /// The nodes behind this peer when it is a relay, as it last reported them.
    subs: Mutex<Vec<HaNode>>,
    /// Dropped by a `secondary_dead` order: no SECONDARY_DIED for the peer itself.
    quiet: AtomicBool,
    /// Its SECONDARY_DIED events were emitted (held while emitting them, so
    /// that they come before anything emitted by whoever waits for this lock).
    died: Mutex<bool>,
    /// The latest unprocessed report of the nodes behind it, and whether a
    /// worker is processing reports.
    report: Mutex<(Option<Vec<HaNode>>, bool)>,
}

struct PeerOut {
    copying: bool,
    backlog: Vec<Arc<Vec<u8>>>,
    backlog_bytes: usize,
}

impl Peer {
    /// Queues whole frames for the writer thread.
    fn push(&self, f: Arc<Vec<u8>>) {
        queue(&self.tx, &self.wstate, f);
    }

    /// Sends whole transaction frames: held back while a full copy is going out, else
    /// written by the calling thread when the socket takes them at once, else queued
    /// ([`send_now`]: never waits for the socket). A secondary that lets more than
    /// MAX_QUEUED_BYTES pile up is cut off.
    pub fn send(&self, f: Arc<Vec<u8>>) {
        let mut o = lock(&self.out);
        if o.copying {
            o.backlog_bytes += f.len();
            o.backlog.push(f);
            if o.backlog_bytes > MAX_QUEUED_BYTES {
                drop(o);
                self.kill("too much replication data held back during its full copy");
            }
        } else {
            send_now(&self.stream, &self.tx, &self.wstate, f);
            drop(o);
            if self.wstate.queued.load(Ordering::Relaxed) > MAX_QUEUED_BYTES {
                self.kill(&format!(
                    "more than {} MiB of replication data unread",
                    MAX_QUEUED_BYTES >> 20
                ));
            }
        }
    }

    /// Whether its reader has handled everything that reached the socket by `t`.
    pub fn read_since(&self, t: Instant) -> bool {
        *lock(&self.read_until) >= t
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst) || self.wstate.dead.load(Ordering::SeqCst)
    }

    /// Declares the peer dead (it stopped ticking or acking) and cuts it off.
    pub fn declare_dead(&self, why: &str) {
        self.declared.store(true, Ordering::SeqCst);
        self.kill(why);
    }

    /// Cuts the connection; its reader thread then drops the peer with `why`.
    pub fn kill(&self, why: &str) {
        let mut r = lock(&self.kill_reason);
        if r.is_none() {
            *r = Some(why.to_owned());
        }
        drop(r);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn node(&self) -> HaNode {
        HaNode {
            id: self.id.clone(),
            addr: self.addr.clone(),
        }
    }
}

pub struct Downstream {
    node: Arc<Node>,
    pub me: Value,
    pub relay: bool,
    listeners: Vec<TcpListener>,
    peers: Mutex<Vec<Arc<Peer>>>,
    ack_mx: Mutex<()>,
    ack_cv: Condvar,
    stopped: AtomicBool,
    /// The last seq queued to the peers.
    sent_seq: AtomicU64,
    /// A relay's link to its own primary, to report the nodes behind it.
    upstream: Mutex<Option<Arc<Upstream>>>,
    /// Serialises those reports so that the last one sent is the current set.
    report_mx: Mutex<()>,
    /// (seq, when it was sent) of the recent transactions, oldest first, for `lag_ms`.
    sent_at: Mutex<std::collections::VecDeque<(u64, Instant)>>,
    /// Full copies sent per node id (text) since this node started serving.
    copies: Mutex<std::collections::HashMap<String, u64>>,
    /// Incremental catch-ups sent per node id (text), kept the same way.
    catch_ups: Mutex<std::collections::HashMap<String, u64>>,
}

impl Downstream {
    /// Binds the HA address and every extra listen address, and starts accepting.
    pub fn start(node: Arc<Node>, me: Value, relay: bool) -> Result<Arc<Downstream>, String> {
        let mut addrs = vec![node.cfg.ha_addr];
        addrs.extend(node.cfg.extra_listen.iter().copied());
        let mut listeners = Vec::new();
        for a in &addrs {
            let l = TcpListener::bind(a).map_err(|e| format!("cannot bind HA address {a}: {e}"))?;
            listeners.push(l);
        }
        let mut clones = Vec::new();
        for l in &listeners {
            clones.push(l.try_clone().map_err(|e| format!("HA listener: {e}"))?);
        }
        let d = Arc::new(Downstream {
            node,
            me,
            relay,
            listeners,
            peers: Mutex::new(Vec::new()),
            ack_mx: Mutex::new(()),
            ack_cv: Condvar::new(),
            stopped: AtomicBool::new(false),
            sent_seq: AtomicU64::new(0),
            upstream: Mutex::new(None),
            report_mx: Mutex::new(()),
            sent_at: Mutex::new(std::collections::VecDeque::new()),
            copies: Mutex::new(std::collections::HashMap::new()),
            catch_ups: Mutex::new(std::collections::HashMap::new()),
        });
        for (l, a) in clones.into_iter().zip(addrs) {
            let d2 = d.clone();
            std::thread::Builder::new()
                .name("ha-accept".into())
                .spawn(move || d2.accept_loop(l))
                .map_err(|e| format!("cannot start an accept thread: {e}"))?;
            crate::info!(
                "ha",
                "listening for {} on {a}",
                if relay {
                    "sub-secondaries"
                } else {
                    "secondaries"
                }
            );
        }
        Ok(d)
    }

    fn what(&self) -> &'static str {
        if self.relay {
            "sub-secondary"
        } else {
            "secondary"
        }
    }

    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        for l in &self.listeners {
            // Wakes the accept thread (accept then fails with EINVAL).
            // SAFETY: the descriptor is owned by `l`, which outlives this call.
            unsafe {
                libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
        let peers: Vec<_> = lock(&self.peers).drain(..).collect();
        for p in peers {
            p.dead.store(true, Ordering::SeqCst);
            p.kill("this node stopped serving secondaries (role change)");
            let _ = p.tx.send(Out::Stop);
        }
        let _g = lock(&self.ack_mx);
        self.ack_cv.notify_all();
        drop(_g);
        // Commits waiting for those peers are settled now (unconfirmed: HA_ABORT).
        self.node.pipeline.settle();
        // A relay that stops serving (and stays a secondary) has nobody behind it now.
        self.report_upstream();
    }

    /// A relay: from now on, reports the nodes behind it over `up`.
    pub fn set_upstream(&self, up: Arc<Upstream>) {
        *lock(&self.upstream) = Some(up);
        self.report_upstream();
    }

    /// Every node behind this one: each peer followed by the nodes behind it
    /// (ConfD lists the secondaries of relays in the primary's status).
    pub fn nodes(&self) -> Vec<HaNode> {
        let mut out = Vec::new();
        for p in lock(&self.peers).iter() {
            out.push(p.node());
            out.extend(lock(&p.subs).iter().cloned());
        }
        out
    }

    /// A relay tells its primary the nodes now behind it (nothing once stopped).
    fn report_upstream(&self) {
        if !self.relay {
            return;
        }
        let _g = lock(&self.report_mx);
        let nodes = if self.stopped.load(Ordering::SeqCst) {
            Vec::new()
        } else {
            self.nodes()
        };
        if let Some(up) = lock(&self.upstream).clone() {
            up.report_subs(nodes);
        }
    }

    /// A peer reported the nodes behind it: the cluster primary announces
    /// the ones that arrived and left; a relay passes the change upstream.
    fn set_subs(&self, peer: &Arc<Peer>, mut nodes: Vec<HaNode>) {
        // Held across the change and its events, so that a concurrent drop
        // of the peer does not announce a stale set.
        let died = lock(&peer.died);
        if *died || peer.is_dead() {
            return;
        }
        nodes.truncate(crate::replication::peer::MAX_REPORTED_SUBS);
        let old = std::mem::replace(&mut *lock(&peer.subs), nodes.clone());
        if self.relay {
            drop(died);
            self.report_upstream();
            return;
        }
        for n in old.iter().filter(|n| !nodes.contains(n)) {
            self.node.events.emit(HaEvent::SecondaryDied(n.clone()));
        }
        for n in nodes.iter().filter(|n| !old.contains(n)) {
            self.node.events.emit(HaEvent::SecondaryArrived(n.clone()));
        }
    }

    /// SECONDARY_DIED for a dropped peer (unless a `secondary_dead` order
    /// dropped it, as ConfD does) and for every node that was behind it;
    /// a relay reports its new set upstream instead.
    fn announce_death(&self, p: &Arc<Peer>) {
        let mut died = lock(&p.died);
        if *died {
            return;
        }
        *died = true;
        let subs = std::mem::take(&mut *lock(&p.subs));
        if self.relay {
            drop(died);
            self.report_upstream();
            return;
        }
        if !p.quiet.load(Ordering::SeqCst) {
            self.node.events.emit(HaEvent::SecondaryDied(p.node()));
        }
        for n in subs {
            self.node.events.emit(HaEvent::SecondaryDied(n));
        }
    }

    /// The connected secondaries with their lag behind `seq` (this node's last durable seq).
    pub fn peer_states(&self, seq: u64) -> Vec<confd_ha::proto::data::PeerState> {
        use confd_ha::proto::data::{Lag, PeerState};
        let peers: Vec<Arc<Peer>> = lock(&self.peers).clone();
        let now = Instant::now();
        let ms = |t: Instant| now.saturating_duration_since(t).as_millis() as i64;
        let sent = lock(&self.sent_at);
        let copies = lock(&self.copies);
        let catch_ups = lock(&self.catch_ups);
        peers
            .iter()
            .map(|p| {
                let acked = p.acked.load(Ordering::SeqCst);
                let copying = !p.initialized.load(Ordering::SeqCst);
                let lag_txns = seq.saturating_sub(acked);
                let lag_ms = if copying {
                    ms(p.joined)
                } else if lag_txns == 0 {
                    0
                } else {
                    // The oldest transaction sent after the one it acknowledged.
                    let i = sent.partition_point(|(s, _)| *s <= acked);
                    sent.get(i).map(|(_, t)| ms(*t)).unwrap_or(0)
                };
                PeerState {
                    node: p.node(),
                    last_tick_ms: Some(crate::node::unix_ms(*lock(&p.last_rx))),
                    lag: Some(Lag {
                        acked_seq: acked as i64,
                        lag_txns: lag_txns as i64,
                        lag_ms,
                        copying,
                        full_copies: copies.get(&id_str(&p.id)).copied().unwrap_or(0) as i64,
                        catch_ups: catch_ups.get(&id_str(&p.id)).copied().unwrap_or(0) as i64,
                    }),
                }
            })
            .collect()
    }

    fn count_copy(&self, id: &Value) {
        self.count_in(&self.copies, id);
    }

    fn count_in(&self, counters: &Mutex<std::collections::HashMap<String, u64>>, id: &Value) {
        let key = id_str(id);
        let connected: Vec<String> = lock(&self.peers).iter().map(|p| id_str(&p.id)).collect();
        let mut c = lock(counters);
        if !c.contains_key(&key) && c.len() >= MAX_COPY_COUNTERS {
            if let Some(k) = c.keys().find(|k| !connected.contains(k)).cloned() {
                c.remove(&k);
            }
        }
        *c.entry(key).or_insert(0) += 1;
    }

    pub fn count(&self) -> usize {
        lock(&self.peers).len()
    }

    /// Live secondaries that hold our data (counted for min-secondaries).
    pub fn in_sync(&self) -> usize {
        self.initialized_peers().len()
    }

    /// Before a role change: waits (at most `timeout`) until every live peer acknowledged
    /// the last transaction sent to it or was dropped, so that commits already sent finish
    /// before the downstream is stopped. Nobody is cut off here.
    pub fn drain(&self, timeout: Duration) {
        let seq = self.sent_seq.load(Ordering::SeqCst);
        let peers = self.commit_targets();
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.ack_mx);
        loop {
            let pending = peers
                .iter()
                .filter(|p| !p.is_dead() && p.acked.load(Ordering::SeqCst) < seq)
                .count();
            let now = Instant::now();
            if pending == 0 || now >= deadline {
                if pending > 0 {
                    crate::warn!(
                        "ha",
                        "{pending} {}(s) did not acknowledge transaction {seq} within {} ms \
                         before the role change",
                        self.what(),
                        timeout.as_millis()
                    );
                }
                return;
            }
            g = self
                .ack_cv
                .wait_timeout(g, (deadline - now).min(WAIT_SLICE))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Live peers a sync commit waits for: those that hold our data, and those whose full
    /// copy has been queued to the end (they get every later transaction after it).
    pub fn commit_targets(&self) -> Vec<Arc<Peer>> {
        lock(&self.peers)
            .iter()
            .filter(|p| {
                (p.initialized.load(Ordering::SeqCst) || p.copy_done_sent.load(Ordering::SeqCst))
                    && !p.is_dead()
            })
            .cloned()
            .collect()
    }

    /// Live peers that hold our data (acknowledged their copy, or needed none).
    pub fn initialized_peers(&self) -> Vec<Arc<Peer>> {
        lock(&self.peers)
            .iter()
            .filter(|p| p.initialized.load(Ordering::SeqCst) && !p.is_dead())
            .cloned()
            .collect()
    }

    /// Queues each transaction, in order, for every connected peer; returns
    /// the peers that held our data when they were sent (those whose
    /// acknowledgements a sync commit waits for).
    pub fn forward(&self, txns: &[(TxMeta, Vec<StoreOp>)]) -> Vec<Arc<Peer>> {
        let targets = self.commit_targets();
        if let Some(last) = txns.iter().map(|(m, _)| m.seq).max() {
            for p in lock(&self.peers).iter() {
                p.sent_seq.fetch_max(last, Ordering::SeqCst);
            }
        }
        // The batch as one buffer of frames: one write per peer.
        let mut buf = Vec::new();
        for (m, ops) in txns {
            push_frame(
                &mut buf,
                &crate::replication::peer::txn_term(m.seq, &m.txid, ops).encode(),
            );
        }
        if !buf.is_empty() {
            self.broadcast(&Arc::new(buf));
        }
        if let Some((m, _)) = txns.last() {
            self.sent_seq.fetch_max(m.seq, Ordering::SeqCst);
        }
        // Times for lag_ms; what every connected peer acknowledged is no longer needed.
        let min_acked = lock(&self.peers)
            .iter()
            .map(|p| p.acked.load(Ordering::SeqCst))
            .min();
        let now = Instant::now();
        let mut sent = lock(&self.sent_at);
        sent.extend(txns.iter().map(|(m, _)| (m.seq, now)));
        while sent.len() > MAX_SENT_TIMES
            || sent
                .front()
                .is_some_and(|(s, _)| min_acked.is_none_or(|a| *s <= a))
        {
            sent.pop_front();
        }
        drop(sent);
        targets
    }

    /// Sends whole frames to every connected peer (see [`Peer::send`]).
    pub fn broadcast(&self, f: &Arc<Vec<u8>>) {
        for p in lock(&self.peers).iter() {
            p.send(f.clone());
        }
    }

    pub fn kill_by_id(&self, id: &Value, why: &str) -> bool {
        let p = lock(&self.peers).iter().find(|p| p.id == *id).cloned();
        match p {
            Some(p) => {
                p.quiet.store(true, Ordering::SeqCst);
                p.declare_dead(why);
                self.drop_peer(&p, why);
                true
            }
            None => false,
        }
    }

    /// Waits until every peer of `targets` acknowledged `seq` or is gone; peers still
    /// silent at the deadline are declared dead and cut off. Time during which this thread
    /// did not run (see [`STALL_SLACK`]) does not count. Says who confirmed and who was
    /// lost without confirming or being declared dead.
    pub fn wait_acks(&self, targets: &[Arc<Peer>], seq: u64, timeout: Duration) -> Acks {
        let mut deadline = Instant::now() + timeout;
        let mut g = lock(&self.ack_mx);
        let mut woke = Instant::now();
        loop {
            let pending: Vec<&Arc<Peer>> = targets
                .iter()
                .filter(|p| !p.is_dead() && p.acked.load(Ordering::SeqCst) < seq)
                .collect();
            if pending.is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                for p in pending {
                    p.declare_dead(&format!(
                        "no ack for transaction {seq} within {} ms",
                        timeout.as_millis()
                    ));
                }
                break;
            }
            let slice = (deadline - now).min(WAIT_SLICE);
            g = self
                .ack_cv
                .wait_timeout(g, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            let late = woke.elapsed().saturating_sub(slice);
            woke = Instant::now();
            if late > STALL_SLACK {
                deadline += late;
            }
        }
        drop(g);
        acks_of(targets, seq)
    }

    fn drop_peer(&self, p: &Arc<Peer>, why: &str) {
        if p.dead.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = p.stream.shutdown(std::net::Shutdown::Both);
        let _ = p.tx.send(Out::Stop);
        lock(&self.peers).retain(|q| !Arc::ptr_eq(q, p));
        {
            let mut r = lock(&p.kill_reason);
            if r.is_none() {
                *r = Some(why.to_owned());
            }
        }
        {
            let _g = lock(&self.ack_mx);
            self.ack_cv.notify_all();
        }
        self.node.pipeline.settle();
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        self.node.in_sync_changed();
        self.node
            .stats
            .secondaries_dropped
            .fetch_add(1, Ordering::Relaxed);
        crate::warn!("ha", "{} {} dropped: {why}", self.what(), p.who);
        self.announce_death(p);
    }

    fn accept_loop(self: Arc<Self>, l: TcpListener) {
        let pending = Arc::new(crate::ipc::PendingCount::default());
        let mut refused = crate::log::Throttle::default();
        loop {
            match l.accept() {
                Ok((s, a)) => {
                    if self.stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let max = self.node.cfg.max_pending_handshakes;
                    let p = match pending.enter(max, Some(a.ip())) {
                        Ok(p) => p,
                        Err(crate::ipc::PendingFull::Port) => {
                            refused.warn(
                                "ha",
                                &format!("connection from {a} on the HA port closed: {max} connections are still in their handshake (max-pending-handshakes)"),
                            );
                            continue;
                        }
                        Err(crate::ipc::PendingFull::Source) => {
                            refused.warn(
                                "ha",
                                &format!(
                                    "connection from {a} on the HA port closed: {} connections from {} are still in their handshake (MAX_PENDING_HANDSHAKES_PER_SOURCE)",
                                    crate::ipc::MAX_PENDING_HANDSHAKES_PER_SOURCE,
                                    a.ip()
                                ),
                            );
                            continue;
                        }
                    };
                    let d = self.clone();
                    let r = std::thread::Builder::new()
                        .name("ha-peer".into())
                        .spawn(move || d.serve(s, a, p));
                    if let Err(e) = r {
                        crate::error!("ha", "cannot start a thread for {a}: {e}");
                    }
                }
                Err(e) => {
                    if self.stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        crate::warn!("ha", "accept on HA listener: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
    }

    /// One joining secondary: handshake, registration, copy, then its reader loop.
    /// Until the secondary has proven the token, frames are limited to
    /// MAX_HANDSHAKE_FRAME and the whole handshake to one handshake timeout.
    fn serve(self: Arc<Self>, s: TcpStream, a: SocketAddr, pending: crate::ipc::Pending) {
        let _ = s.set_nodelay(true);
        let node = self.node.clone();
        let hs = node.cfg.handshake_timeout();
        let until = Instant::now() + hs;
        let s = match crate::tls::accept(node.tls.as_deref(), s, until) {
            Ok(s) => s,
            Err(e) => {
                crate::peer_warn!("ha", "connection from {a} on the HA port: {e}; closing");
                return;
            }
        };
        let mut fr = FrameReader::new();
        let send = |m: &PeerMsg| {
            let mut w = &s;
            confd_ha::proto::frame::write_frame(&mut w, &m.encode())
        };
        let _ = s.set_write_timeout(Some(hs));
        let recv = |fr: &mut FrameReader| -> Result<PeerMsg, String> {
            match fr.read_until(&s, until) {
                Ok(Some(f)) => PeerMsg::decode(&f),
                Ok(None) => Err(format!("handshake not done within {} ms", hs.as_millis())),
                Err(ReadErr::Closed) => Err("it closed the connection".into()),
                Err(e) => Err(e.to_string()),
            }
        };
        let reject = |code: i32, reason: String| {
            let _ = send(&PeerMsg::Reject {
                code,
                reason: reason.clone(),
            });
            crate::peer_warn!("ha", "{} at {a} refused: {reason}", self.what());
        };
        // 1. hello
        let (ns, vsn) = match recv(&mut fr) {
            Ok(PeerMsg::Hello { vsn, nonce }) => match negotiate(vsn) {
                Some(v) => (nonce, v),
                None => {
                    crate::peer_warn!("ha", "HA_BAD_VSN: incompatible HA version ({vsn}, expected {HA_PROTO_VSN_MIN}..{HA_PROTO_VSN}) from {a}, secondary is not allowed");
                    reject(
                        CONFD_ERR_HA_BADVSN,
                        format!("incompatible HA version ({vsn}, expected {HA_PROTO_VSN_MIN}..{HA_PROTO_VSN})"),
                    );
                    return;
                }
            },
            Ok(m) => {
                crate::peer_warn!(
                    "ha",
                    "{a}: expected ha_hello, got {}; closing",
                    crate::replication::peer::short(&m.to_term())
                );
                return;
            }
            Err(e) => {
                crate::peer_warn!("ha", "connection from {a} on the HA port: {e}; closing");
                return;
            }
        };
        // 2. challenge with our proof
        let token = node.token();
        let np = match nonce() {
            Ok(n) => n,
            Err(e) => {
                crate::error!("ha", "{e}");
                return;
            }
        };
        let mac = proof(&token, "primary", &ns, &np);
        if let Err(e) = send(&PeerMsg::Challenge {
            vsn,
            nonce: np.clone(),
            mac,
        }) {
            crate::peer_warn!("ha", "{a}: {e}");
            return;
        }
        // 3. the secondary's proof and identity
        let (id, expected, seq, txid, instance) = match recv(&mut fr) {
            Ok(PeerMsg::Auth {
                mac,
                my_id,
                expected_primary,
                seq,
                txid,
                instance,
            }) => {
                if !verify_proof(&token, "secondary", &np, &ns, &mac) {
                    crate::peer_warn!(
                        "ha",
                        "TOKEN_MISMATCH: Token mismatch, secondary {my_id} at {a} is not allowed"
                    );
                    reject(CONFD_ERR_HA_BADTOKEN, "token mismatch".into());
                    return;
                }
                fr.authenticated();
                (my_id, expected_primary, seq, txid, instance)
            }
            Ok(PeerMsg::Reject { code, reason }) => {
                crate::peer_warn!(
                    "ha",
                    "{} at {a} refused this node during the handshake: {reason} ({})",
                    self.what(),
                    name(code).unwrap_or("?")
                );
                return;
            }
            Ok(m) => {
                crate::peer_warn!(
                    "ha",
                    "{a}: expected ha_auth, got {}; closing",
                    crate::replication::peer::short(&m.to_term())
                );
                return;
            }
            Err(e) => {
                // A secondary that finds our proof wrong says so (ha_reject, above); a
                // silent close or a timeout is the network or the peer going away.
                crate::peer_warn!(
                    "ha",
                    "{} at {a} did not finish the handshake: {e}",
                    self.what()
                );
                return;
            }
        };
        let who = format!("{} at {}", id_str(&id), a.ip());
        if expected != self.me {
            reject(
                CONFD_ERR_HA_BADNAME,
                format!(
                    "{} expected primary {expected}, but this node is {}",
                    id_str(&id),
                    self.me
                ),
            );
            return;
        }
        if id == self.me {
            reject(
                CONFD_ERR_HA_BADNAME,
                format!("secondary uses this node's own id {id}"),
            );
            return;
        }
        // 4. what it missed, read before the commit lock (the lock only adds what was
        // committed meanwhile), then register under the commit lock: consistent
        // (seq, txid), snapshot or backlog, and the live stream from the next commit on.
        let early = self.read_backlog(seq, &txid, vsn);
        let (tx, rx) = channel();
        let wstate = Arc::new(WriterState::default());
        let Ok(rs) = s.try_clone() else {
            crate::warn!("ha", "{who}: cannot clone the socket");
            return;
        };
        let (peer, snapshot, replaced, plan) = {
            let cs = lock(&node.commit);
            let mut peers = lock(&self.peers);
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            // A node holds one link to its primary at a time, and gives up the
            // old one before it joins again: a peer with the same id, the same
            // node instance and an older join attempt is that node's stale
            // link (e.g. benone then besecondary at once, before its close was
            // read here), so the new link replaces it. A different instance is
            // a second node using the same id, and an older attempt arriving
            // late is one its node has already abandoned: both are refused.
            let mut replaced = None;
            if let Some(i) = peers.iter().position(|p| p.id == id) {
                let newer = match (&instance, &peers[i].instance) {
                    (Some((new, na)), Some((old, oa))) => new == old && na > oa,
                    _ => false,
                };
                if !newer {
                    drop(peers);
                    drop(cs);
                    reject(
                        CONFD_ERR_HA_BADNAME,
                        format!("HA_DUPLICATE_NODEID: node id {id} already exists"),
                    );
                    return;
                }
                replaced = Some(peers.remove(i));
            }
            if peers.len() >= MAX_SECONDARIES {
                drop(peers);
                drop(cs);
                reject(
                    CONFD_ERR_TOO_MANY_SESSIONS,
                    format!("too many secondaries: at most {MAX_SECONDARIES} are supported"),
                );
                return;
            }
            // A node without any transaction (an empty node's first join) is
            // initialized by a copy, as ConfD reports it (by copy = 1).
            let plan = if cs.last.seq == seq && cs.last.txid == txid && seq > 0 {
                JoinPlan::NoCopy
            } else {
                match early {
                    Ok(b) => match self.finish_backlog(b, &cs.last) {
                        Ok(b) => JoinPlan::CatchUp(b),
                        Err(why) => JoinPlan::Copy(why),
                    },
                    Err(why) => JoinPlan::Copy(why),
                }
            };
            let copy = matches!(plan, JoinPlan::Copy(_));
            let snapshot: Option<Snapshot> = if copy {
                match node.store.snapshot() {
                    Ok(sn) => Some(sn),
                    Err(e) => {
                        drop(peers);
                        drop(cs);
                        crate::error!("ha", "full copy for {who}: {e}");
                        let _ = send(&PeerMsg::Reject {
                            code: CONFD_ERR_INTERNAL,
                            reason: format!("primary cannot read its store: {e}"),
                        });
                        return;
                    }
                }
            } else {
                None
            };
            // The txids we hold at the secondary's latest seqs: it compares them with its
            // own log to name what the copy discards there.
            // (Protocol version 2 on: a version-1 peer knows only the 4-element welcome.)
            let history = if copy && seq > 0 && vsn >= 2 {
                // Ending at the lower of the two seqs: a node that kept committing
                // alone may be far ahead of us, and the common transaction is at or
                // below our own last seq (issue 9: a split brain of more than 1,000
                // commits went to no rollback file).
                let top = seq.min(cs.last.seq);
                let lo = top.saturating_sub(ROLLBACK_WINDOW_TXNS - 1).max(1);
                node.store.txlog_ids(lo, top).unwrap_or_default()
            } else {
                Vec::new()
            };
            let init_seq = cs.last.seq;
            let peer = Arc::new(Peer {
                id: id.clone(),
                addr: node_addr(a),
                who: who.clone(),
                tx,
                wstate: wstate.clone(),
                out: Mutex::new(PeerOut {
                    copying: copy,
                    backlog: Vec::new(),
                    backlog_bytes: 0,
                }),
                // A catching-up secondary holds our history up to its own last seq.
                acked: AtomicU64::new(match &plan {
                    JoinPlan::Copy(_) => 0,
                    JoinPlan::CatchUp(_) => seq,
                    JoinPlan::NoCopy => init_seq,
                }),
                sent_seq: AtomicU64::new(init_seq),
                initialized: AtomicBool::new(!copy),
                copy_done_sent: AtomicBool::new(!copy),
                init_seq,
                dead: AtomicBool::new(false),
                declared: AtomicBool::new(false),
                kill_reason: Mutex::new(None),
                stream: rs,
                last_rx: Mutex::new(Instant::now()),
                read_until: Mutex::new(Instant::now()),
                joined: Instant::now(),
                instance,
                subs: Mutex::new(Vec::new()),
                quiet: AtomicBool::new(false),
                died: Mutex::new(false),
                report: Mutex::new((None, false)),
            });
            let catch_up = match &plan {
                JoinPlan::CatchUp(b) => Some(b.frames.len() as u64),
                _ => None,
            };
            peer.push(frame(&PeerMsg::Welcome {
                copy,
                seq: cs.last.seq,
                txid: cs.last.txid.clone(),
                history,
                catch_up,
            }));
            // The missed transactions go out right behind the welcome, before the peer is
            // in `peers`: every commit durable now is in the backlog, every later one is
            // forwarded to it (the committer forwards under this lock), so nothing is
            // missing or sent twice. It is a commit target from now on, as a secondary that
            // needed no copy is: its besecondary returns only after the backlog, and every
            // transaction queued after it, is durable there.
            if let JoinPlan::CatchUp(b) = &plan {
                for f in &b.frames {
                    peer.push(f.clone());
                }
            }
            peers.push(peer.clone());
            (peer, snapshot, replaced, plan)
        };
        if let Some(old) = replaced {
            old.kill("replaced by a new connection from the same node");
            self.drop_peer(&old, "replaced by a new connection from the same node");
            // Its death is announced before this arrival (waits for a
            // concurrent announcement by its reader to finish).
            self.announce_death(&old);
        }
        drop(pending);
        let _ = s.set_write_timeout(Some(node.cfg.ack_timeout().max(Duration::from_secs(1))));
        let Ok(ws) = s.try_clone() else {
            self.drop_peer(&peer, "cannot clone the socket");
            return;
        };
        let tick = node.cfg.tick;
        let wst = wstate.clone();
        let wwho = who.clone();
        if std::thread::Builder::new()
            .name("ha-writer".into())
            .spawn(move || writer_loop(ws, rx, tick, wst, wwho))
            .is_err()
        {
            self.drop_peer(&peer, "cannot start a writer thread");
            return;
        }
        match &plan {
            JoinPlan::NoCopy => crate::info!(
                "ha",
                "{} {who} connected (same transaction {seq}: no copy)",
                self.what()
            ),
            JoinPlan::CatchUp(b) => {
                self.count_in(&self.catch_ups, &peer.id);
                node.stats.catch_ups_sent.fetch_add(1, Ordering::Relaxed);
                crate::info!(
                    "ha",
                    "{} {who} connected (catch-up: {} txns from seq {} to {}, {} bytes; its \
                     seq {seq} txid '{txid}' is in this node's history)",
                    self.what(),
                    b.frames.len(),
                    b.first,
                    b.last.seq,
                    b.bytes
                )
            }
            JoinPlan::Copy(why) => {
                crate::info!("ha", "{} {who} connected (full copy: {why})", self.what())
            }
        }
        drop(plan);
        // 5. the reader runs in its own thread (acks flow even while an
        // HA_INFO_SYNC subscriber holds the event below). The peer's arrival
        // is announced before anything its reader reports (the nodes behind
        // it, its death): they wait for `died`.
        let died = lock(&peer.died);
        let d = self.clone();
        let p2 = peer.clone();
        if std::thread::Builder::new()
            .name("ha-peer-rd".into())
            .spawn(move || d.reader(p2, s, fr, vsn))
            .is_err()
        {
            drop(died);
            self.drop_peer(&peer, "cannot start a reader thread");
            return;
        }
        // The copy goes out on its own thread: the event below may be held
        // by an HA_INFO_SYNC subscriber, and the join must not wait for it.
        if let Some(sn) = snapshot {
            self.count_copy(&peer.id);
            let (d, p2) = (self.clone(), peer.clone());
            if std::thread::Builder::new()
                .name("ha-copy-out".into())
                .spawn(move || d.send_copy(&p2, sn))
                .is_err()
            {
                peer.kill("cannot start a thread for the full copy");
            }
        }
        if !self.relay {
            node.events.emit(HaEvent::SecondaryArrived(peer.node()));
            node.in_sync_changed();
        }
        drop(died);
        self.report_upstream();
    }

    /// The transactions after a joining secondary's last one (`seq`, `txid`), read from the
    /// transaction log without the commit lock; [`Downstream::finish_backlog`] adds, under
    /// the lock, those committed meanwhile. Err says why it gets a full copy instead: its
    /// transaction is not in our history (it diverged: ahead of it, or beside it at the same
    /// seq), or our log no longer (or never) held it (fell out of the backlog of
    /// `txlog-max-txns`, or our data came by a full copy after it).
    fn read_backlog(&self, seq: u64, txid: &str, vsn: i64) -> Result<Backlog, String> {
        let node = &self.node;
        if seq == 0 {
            return Err("it has no transactions yet (seq 0)".into());
        }
        if vsn < CATCH_UP_MIN_VSN {
            return Err(format!(
                "it speaks node-to-node protocol version {vsn}, which has no catch-up"
            ));
        }
        let (last, base) = {
            let cs = lock(&node.commit);
            (cs.last.clone(), cs.copy_base.clone())
        };
        let theirs = format!("secondary's seq {seq} txid '{txid}'");
        let max = node.cfg.txlog_max_txns;
        let mut b = Backlog {
            frames: Vec::new(),
            bytes: 0,
            last: TxMeta {
                seq,
                txid: txid.to_owned(),
            },
            first: 0,
            from_base: None,
        };
        if seq > last.seq {
            return Err(format!(
                "{theirs} is ahead of this node's last transaction (seq {}): diverged",
                last.seq
            ));
        }
        let unreadable = |e: crate::store::StoreError| {
            format!("this node cannot read its transaction log ({e})")
        };
        match node.store.txlog_ids(seq, seq).map_err(unreadable)?.first() {
            Some((_, t)) if t == txid => {}
            // Our data came by a full copy of exactly its last transaction, and the log has
            // kept everything since (it is trimmed only beyond `txlog-max-txns`).
            None if base.as_ref() == Some(&b.last) && last.seq - seq < max => {
                b.from_base = Some(seq);
                let t = b.read(node, seq + 1)?;
                b.add(t)?;
                return Ok(b);
            }
            Some((_, t)) => {
                return Err(format!(
                    "{theirs} is not in history: this node holds txid '{t}' at that seq \
                     (diverged)"
                ))
            }
            None => {
                return Err(if last.seq - seq >= max {
                    format!(
                        "{theirs} is {} transactions behind, beyond the backlog \
                         (txlog-max-txns {max})",
                        last.seq - seq
                    )
                } else {
                    format!(
                        "{theirs} is not in this node's transaction log (diverged, or this \
                         node's own data came by a full copy after it)"
                    )
                });
            }
        }
        let mut txns = b.read(node, seq)?.into_iter();
        match txns.next() {
            Some((m, _)) if m.seq == seq && m.txid == txid => {}
            _ => {
                return Err(format!(
                    "{theirs} fell out of the backlog (txlog-max-txns {max}) while it was read"
                ))
            }
        }
        b.add(txns.collect())?;
        Ok(b)
    }

    /// Under the commit lock: adds to `b` what was committed since it was read, so that it
    /// ends exactly at `last` (our last durable transaction), or says why it cannot.
    fn finish_backlog(&self, mut b: Backlog, last: &TxMeta) -> Result<Backlog, String> {
        // After the copy base, the log holds no entry that shows it is complete: it is, as
        // long as no commit so far (the last is `last`) trimmed anything after the base.
        if let Some(base) = b.from_base {
            if last.seq - base >= self.node.cfg.txlog_max_txns {
                return Err(format!(
                    "its transactions fell out of the backlog (txlog-max-txns {}) while they \
                     were read",
                    self.node.cfg.txlog_max_txns
                ));
            }
        }
        if b.from_base.is_some() && b.frames.is_empty() && b.last.seq < last.seq {
            // Nothing after the copy base was read yet.
            let tail = b.read(&self.node, b.last.seq + 1)?;
            b.add(tail)?;
        } else if b.last.seq < last.seq {
            let mut tail = b.read(&self.node, b.last.seq)?.into_iter();
            // The log is trimmed from its start only: while it still holds the last
            // transaction read, it holds everything after it.
            match tail.next() {
                Some((m, _)) if m == b.last => {}
                _ => {
                    return Err(format!(
                        "its transactions fell out of the backlog (txlog-max-txns {}) while \
                         they were read",
                        self.node.cfg.txlog_max_txns
                    ))
                }
            }
            let before = b.frames.len();
            b.add(tail.collect())?;
            crate::debug!(
                "ha",
                "catch-up: {} transaction(s) committed while the backlog was read added under \
                 the commit lock",
                b.frames.len() - before
            );
        }
        if b.last != *last || b.frames.is_empty() {
            return Err(format!(
                "this node's transaction log ends at seq {} txid '{}', not at its last \
                 transaction (seq {} txid '{}')",
                b.last.seq, b.last.txid, last.seq, last.txid
            ));
        }
        Ok(b)
    }

    fn send_copy(&self, peer: &Arc<Peer>, mut sn: Snapshot) {
        let meta = sn.meta().clone();
        let st = sn.stats();
        let t0 = Instant::now();
        crate::info!(
            "ha",
            "full copy to {}: {} entries, {} bytes, at transaction {}",
            peer.who,
            st.entries,
            st.bytes,
            meta.seq
        );
        loop {
            if peer.is_dead() {
                return;
            }
            // Keep the queue short so that ticks and the end of the copy are not far behind.
            while peer.wstate.queued.load(Ordering::Relaxed) > COPY_QUEUE_BYTES {
                if peer.is_dead() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            match sn.next_chunk(COPY_CHUNK_BYTES) {
                Ok(Some(c)) => peer.push(framed(&chunk_term(&c).encode())),
                Ok(None) => break,
                Err(e) => {
                    crate::error!("ha", "full copy to {}: {e}", peer.who);
                    peer.kill(&format!("full copy failed: {e}"));
                    return;
                }
            }
        }
        // Before CopyDone can reach the secondary (and its besecondary return): from here
        // on, commits wait for it.
        peer.copy_done_sent.store(true, Ordering::SeqCst);
        peer.push(frame(&PeerMsg::CopyDone {
            seq: meta.seq,
            txid: meta.txid.clone(),
        }));
        // Release the transactions held back during the copy, in order.
        loop {
            let mut o = lock(&peer.out);
            if o.backlog.is_empty() {
                o.copying = false;
                break;
            }
            let b = std::mem::take(&mut o.backlog);
            o.backlog_bytes = 0;
            drop(o);
            for f in b {
                peer.push(f);
            }
        }
        self.node
            .stats
            .full_copies_sent
            .fetch_add(1, Ordering::Relaxed);
        crate::info!(
            "ha",
            "full copy to {} queued in {} ms",
            peer.who,
            t0.elapsed().as_millis()
        );
    }

    /// Takes a peer's report of the nodes behind it. Its events are emitted
    /// by a worker thread (one per peer at a time, latest report wins), so
    /// the reader keeps reading acks while an HA_INFO_SYNC subscriber holds
    /// the event stream.
    fn take_report(self: &Arc<Self>, peer: &Arc<Peer>, nodes: Vec<HaNode>) {
        let mut r = lock(&peer.report);
        r.0 = Some(nodes);
        if r.1 {
            return;
        }
        r.1 = true;
        drop(r);
        let (d, p) = (self.clone(), peer.clone());
        let spawned = std::thread::Builder::new()
            .name("ha-sub-report".into())
            .spawn(move || loop {
                let next = {
                    let mut r = lock(&p.report);
                    match r.0.take() {
                        Some(n) => n,
                        None => {
                            r.1 = false;
                            return;
                        }
                    }
                };
                d.set_subs(&p, next);
            });
        if let Err(e) = spawned {
            crate::error!("ha", "cannot start a thread for {}: {e}", peer.who);
            lock(&peer.report).1 = false;
        }
    }

    fn reader(self: Arc<Self>, peer: Arc<Peer>, s: HaStream, mut fr: FrameReader, vsn: i64) {
        let dead_after = self.node.cfg.dead_after();
        let poll = self
            .node
            .cfg
            .tick
            .map(|t| (t / 10).max(Duration::from_millis(5)));
        // Also without ticks: `read_until` must advance while the peer is silent.
        let _ = s.set_read_timeout(Some(poll.unwrap_or(WAIT_SLICE)));
        let mut last = Instant::now();
        let mut woke = Instant::now();
        let mut r = &s;
        let why: String = loop {
            // A read happens in this poll only when no whole frame is buffered; one read
            // takes everything in the socket (acks and ticks are a few bytes; a larger
            // report can leave some unread, which delays, never advances, this mark).
            let fresh = !fr.has_frame();
            let started = Instant::now();
            let polled = fr.poll(&mut r);
            // Not running for a while (frozen): the peer's silence is ours; restart its clock.
            let gap = woke.elapsed();
            woke = Instant::now();
            if gap > poll.unwrap_or(WAIT_SLICE) + STALL_SLACK {
                last = woke;
            }
            match polled {
                Ok(Some(f)) => {
                    last = Instant::now();
                    *lock(&peer.last_rx) = last;
                    match PeerMsg::decode(&f) {
                        Ok(PeerMsg::Tick) => {}
                        Ok(PeerMsg::Ack(n)) if n > peer.sent_seq.load(Ordering::SeqCst) => {
                            break format!(
                                "protocol error: ack of transaction {n}, beyond the last one sent ({})",
                                peer.sent_seq.load(Ordering::SeqCst)
                            );
                        }
                        Ok(PeerMsg::SubSecondaries(nodes)) if vsn >= 2 => {
                            self.take_report(&peer, nodes);
                        }
                        Ok(PeerMsg::Ack(n)) => {
                            peer.acked.fetch_max(n, Ordering::SeqCst);
                            if n >= peer.init_seq && !peer.initialized.load(Ordering::SeqCst) {
                                peer.initialized.store(true, Ordering::SeqCst);
                                crate::info!(
                                    "ha",
                                    "{} {} is initialized (copy applied)",
                                    self.what(),
                                    peer.who
                                );
                                self.node.in_sync_changed();
                            }
                            {
                                let _g = lock(&self.ack_mx);
                                self.ack_cv.notify_all();
                            }
                            // Replies to the commits this ack completes, from this thread.
                            self.node.pipeline.settle();
                        }
                        Ok(m) => break format!("protocol error: unexpected {m:?}"),
                        Err(e) => break format!("protocol error: {e}"),
                    }
                }
                Ok(None) => {}
                Err(ReadErr::Closed) => break "connection closed".into(),
                Err(e) => break e.to_string(),
            }
            // Handled (an ack counted) before the mark moves.
            if fresh && !fr.has_frame() {
                *lock(&peer.read_until) = started;
            }
            if let Some(d) = dead_after {
                // One clock reading for both checks: a freeze anywhere in this iteration
                // (after the check at its start) shows as a gap here, and is ours.
                let now = Instant::now();
                if now.saturating_duration_since(woke) > poll.unwrap_or(WAIT_SLICE) + STALL_SLACK {
                    last = now;
                    woke = now;
                } else if now.saturating_duration_since(last) > d {
                    crate::warn!(
                        "ha",
                        "HA_SECONDARY_KILLED: Secondary {} killed due to no ticks",
                        peer.who
                    );
                    peer.declared.store(true, Ordering::SeqCst);
                    break format!("no ticks for {} ms", d.as_millis());
                }
            }
        };
        let why = lock(&peer.kill_reason).clone().unwrap_or(why);
        self.drop_peer(&peer, &why);
    }
}
