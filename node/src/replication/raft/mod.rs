//! HA Raft mode (`mode = "raft"`, NSO's HA Raft): the nodes elect a leader by majority on
//! tikv's raft-rs engine. The leader is PRIMARY and the only writable node; a commit
//! returns once a majority has its entry durable and the leader applied it to the
//! configuration store (the state machine). Followers apply committed entries to their
//! store; one that is too far behind gets a snapshot, the store's full copy.
//!
//! Threads: `raft` runs the RawNode (ticks, messages, proposals, the Ready loop: persist
//! the log in `raft.log`, send, apply); `raft-events` emits HA events in order (an
//! HA_INFO_SYNC subscriber may hold it, never the Raft loop); the transport has an accept
//! thread, one thread per inbound connection and one sender per peer.
//!
//! The store's transaction seq is the Raft log index of the entry that made it: the
//! applied index is kept atomically with the data, so a restart does not apply twice.

mod guard;
mod links;
mod log;
mod observe;
mod recover;
mod storage;
mod transport;

use crate::commit::{CommitReq, CommitResult};
use crate::node::{lock, Node};
use crate::replication::{Managed, Refusal};
use crate::store::{StoreOp, TxMeta};
use confd_ha::errcode::*;
use confd_ha::proto::data::{NodeState, PeerState};
use confd_ha::proto::ha::{HaEvent, HaNode, HaReply, STATE_NONE, STATE_PRIMARY, STATE_SECONDARY};
use confd_ha::proto::term::Term;
use confd_ha::value::Value;
use protobuf::Message as _;
use raft::prelude::*;
use raft::{ProgressState, StateRole};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage::RaftStore;
use transport::{id_of, Transport};

/// Events queued for the raft thread (network messages, proposals, actions); senders
/// block when it is full.
pub const MAX_RAFT_EVENTS_QUEUED: usize = 4096;
/// Largest append message raft-rs builds, in bytes.
pub const RAFT_MAX_MSG_BYTES: u64 = 1024 * 1024;
/// Most append messages in flight to one follower.
pub const RAFT_MAX_INFLIGHT_MSGS: usize = 256;
/// Most entries whose propose time is remembered for `lag_ms`.
const MAX_TRACKED_PROPOSALS: usize = 100_000;
/// A follower applies committed entries to its store this long after it learns they are
/// committed (one Raft tick later at most), in batches: one store transaction per batch
/// instead of one per append. Reads on a follower are that much staler at most.
pub const RAFT_FOLLOWER_APPLY_DELAY_MS: u64 = 5;
/// A follower applies at once when this many committed entries wait.
pub const RAFT_FOLLOWER_APPLY_BATCH: usize = 512;

pub enum Ev {
    Msg(Message),
    Snapshot(Message, PathBuf),
    Propose(Vec<CommitReq>),
    Read(SyncSender<Result<(), Refusal>>),
    Action(Action, Sender<Result<String, Refusal>>),
    Unreachable(u64),
    SnapshotDone(u64, bool),
    Stop,
}

type ReadReply = SyncSender<Result<(), Refusal>>;

pub enum Action {
    Create(Vec<String>),
    Add(String),
    Remove(String),
    Handover(Option<String>),
    Reset(bool),
}

#[derive(Clone, Default)]
struct FollowerView {
    addr: String,
    /// When something last arrived from it.
    heard: Option<Instant>,
    index: u64,
    lag_entries: u64,
    lag_ms: u64,
    state: &'static str,
}

/// What status reads, refreshed by the raft thread.
#[derive(Clone, Default)]
struct View {
    role: &'static str,
    reason: Option<String>,
    leader: Option<String>,
    term: u64,
    members: Vec<String>,
    connected: Vec<String>,
    current: u64,
    commit: u64,
    applied: u64,
    followers: Vec<FollowerView>,
    /// The leader has heard from a majority within the election timeout.
    lease: bool,
    last_leader_rx: Option<Instant>,
    /// Times a new leader was seen (metrics).
    leader_changes: u64,
    /// Peer messages dropped by guard.rs (metrics).
    msgs_dropped: u64,
}

pub struct RaftMode {
    node: Arc<Node>,
    me: String,
    view: Mutex<View>,
    tx: SyncSender<Ev>,
    transport: Mutex<Option<Arc<Transport>>>,
}

fn refusal_not_leader(v: &View) -> Refusal {
    (
        CONFD_ERR_NOT_WRITABLE,
        match (&v.leader, v.role) {
            (_, "disabled") => format!(
                "HA Raft is disabled on this node ({}): writes are refused",
                v.reason.as_deref().unwrap_or("?")
            ),
            (_, "stalled") => {
                "this node is in no HA Raft cluster (stalled): writes are refused".into()
            }
            (Some(l), _) if !l.is_empty() => {
                format!(
                    "this node is a Raft {}: writes are refused (leader is {l})",
                    v.role
                )
            }
            (_, _) => format!(
                "this node is a Raft {}: writes are refused (no leader known)",
                v.role
            ),
        },
    )
}

fn ha_node(addr: &str) -> HaNode {
    HaNode {
        id: Value::Buf(addr.as_bytes().to_vec()),
        addr: match addr.parse::<std::net::SocketAddr>() {
            Ok(a) => crate::node::node_addr(a),
            Err(_) => confd_ha::proto::ha::NodeAddr::Str(addr.to_string()),
        },
    }
}

fn token_of(node: &Node) -> Result<Vec<u8>, String> {
    let r = node.cfg.raft.as_ref().ok_or("not in Raft mode")?;
    match &r.token_file {
        Some(p) => {
            use std::io::Read;
            let mut s = String::new();
            std::fs::File::open(p)
                .and_then(|f| f.take(4097).read_to_string(&mut s))
                .map_err(|e| format!("raft token-file {}: {e}", p.display()))?;
            let t = s.trim_end_matches(['\n', '\r']).as_bytes().to_vec();
            if t.is_empty() || t.len() > 4096 {
                return Err(format!(
                    "raft token-file {} must hold one line of 1 to 4096 bytes",
                    p.display()
                ));
            }
            Ok(t)
        }
        None if node.tls.is_some() => Ok(Vec::new()),
        None => {
            Err("Raft mode needs a shared secret: token-file in [raft], or TLS (ha-tls-*)".into())
        }
    }
}

pub fn start(node: &Arc<Node>) -> Result<Arc<RaftMode>, String> {
    let r = node.cfg.raft.clone().ok_or("not in Raft mode")?;
    let token = token_of(node)?;
    let (tx, rx) = sync_channel(MAX_RAFT_EVENTS_QUEUED);
    let me = r.node_address.to_string();
    let mode = Arc::new(RaftMode {
        node: node.clone(),
        me: me.clone(),
        view: Mutex::new(View {
            role: "stalled",
            ..View::default()
        }),
        tx: tx.clone(),
        transport: Mutex::new(None),
    });
    let store = RaftStore::open(&node.cfg.data_dir)?;
    let t = Transport::start(node.clone(), token, tx)?;
    *lock(&mode.transport) = Some(t.clone());
    let (etx, erx) = std::sync::mpsc::channel::<HaEvent>();
    let n2 = node.clone();
    std::thread::Builder::new()
        .name("raft-events".into())
        .spawn(move || {
            while let Ok(ev) = erx.recv() {
                n2.events.emit(ev);
            }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let m2 = mode.clone();
    std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || {
            let m3 = m2.clone();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                Engine::run(m3, store, t, rx, etx)
            }));
            let why = match r {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(p) => format!(
                    "the Raft engine stopped on an internal error: {}",
                    p.downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| p.downcast_ref::<&str>().copied())
                        .unwrap_or("panic")
                ),
            };
            crate::error!("raft", "HA Raft disabled: {why}");
            let mut v = lock(&m2.view);
            v.role = "disabled";
            v.reason = Some(why);
            v.leader = None;
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    crate::info!(
        "raft",
        "HA Raft mode: node {me}, cluster '{}', election timeout {} ms, heartbeat {} ms{}",
        r.cluster_name,
        r.election_timeout.as_millis(),
        r.heartbeat_interval.as_millis(),
        if r.passive { ", passive" } else { "" }
    );
    Ok(mode)
}

struct Pending {
    term: u64,
    reply: SyncSender<CommitResult>,
    deadline: Instant,
}

enum Waiter {
    /// create-cluster / add / remove: done when `applied >= index` (0: not proposed yet).
    Conf {
        index: u64,
        /// The term the change was proposed in (the entry's term at `index`).
        term: u64,
        what: String,
        reply: Sender<Result<String, Refusal>>,
        deadline: Instant,
    },
    Create {
        reply: Sender<Result<String, Refusal>>,
        deadline: Instant,
    },
    Handover {
        to: u64,
        addr: String,
        reply: Sender<Result<String, Refusal>>,
        deadline: Instant,
    },
}

struct Engine {
    mode: Arc<RaftMode>,
    node: Arc<Node>,
    cfg: crate::config::RaftConfig,
    id: u64,
    me: String,
    raw: RawNode<Shared>,
    store: Shared,
    t: Arc<Transport>,
    events: Sender<HaEvent>,
    pending: BTreeMap<u64, Pending>,
    reads: HashMap<Vec<u8>, (ReadReply, Instant)>,
    ready_reads: Vec<(u64, SyncSender<Result<(), Refusal>>)>,
    read_ctx: u64,
    waiters: Vec<Waiter>,
    adds: VecDeque<String>,
    staged: Option<(u64, PathBuf)>,
    proposed_at: VecDeque<(u64, Instant)>,
    // What was reported, for events.
    was_role: StateRole,
    was_leader: u64,
    was_connected: std::collections::BTreeSet<u64>,
    fatal: Option<String>,
    /// Since when this node leads (None: it does not): the votes that made it leader
    /// count as hearing from their voters then.
    leader_since: Option<Instant>,
    /// Since when this leader is no longer a voter (it applied its own removal).
    removed_since: Option<Instant>,
    /// Per follower sent a snapshot it has not taken yet: when the next may be sent, the
    /// wait, and the last snapshot's index (see `snapshot_due`).
    snap_backoff: HashMap<u64, (Instant, Duration, u64)>,
    /// Per follower, its count of inbound connections when it was last sent a snapshot.
    snap_opened: HashMap<u64, u64>,
    /// When each voter became one: a new voter counts as heard from then.
    voter_since: HashMap<u64, Instant>,
    /// The log was rebased on the store at start: a snapshot is to be asked for.
    resnap: bool,
    /// Committed entries a follower has not applied yet, and since when they wait.
    deferred: Vec<Entry>,
    deferred_since: Option<Instant>,
}

/// The RaftStore shared between the engine and the RawNode.
#[derive(Clone)]
struct Shared(Arc<Mutex<RaftStore>>);

impl raft::Storage for Shared {
    fn initial_state(&self) -> raft::Result<raft::RaftState> {
        lock(&self.0).initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max: impl Into<Option<u64>>,
        c: raft::GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        lock(&self.0).entries(low, high, max, c)
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        lock(&self.0).term(idx)
    }
    fn first_index(&self) -> raft::Result<u64> {
        lock(&self.0).first_index()
    }
    fn last_index(&self) -> raft::Result<u64> {
        lock(&self.0).last_index()
    }
    fn snapshot(&self, i: u64, to: u64) -> raft::Result<Snapshot> {
        lock(&self.0).snapshot(i, to)
    }
}

/// raft-rs's own log lines, into ours under the "raft-rs" tag: its warnings and errors as
/// WARN, its info lines (elections, votes, term changes, refusals to campaign) as DEBUG;
/// its debug and trace lines (per message) are dropped.
struct EngineLog;

impl slog::Drain for EngineLog {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, r: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match r.level() {
            slog::Level::Critical | slog::Level::Error | slog::Level::Warning => {
                crate::warn!("raft-rs", "{}", r.msg())
            }
            slog::Level::Info => crate::debug!("raft-rs", "{}", r.msg()),
            _ => {}
        }
        Ok(())
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(EngineLog, slog::o!())
}

/// A follower that did not take a snapshot gets the next 1 s later, doubling up to this.
pub const RAFT_SNAPSHOT_RETRY_MAX_MS: u64 = 30_000;

/// The Raft tick is at most this long (the heartbeat interval is a whole number of
/// ticks): a follower's election timer and the leader's step-down are this precise.
pub const RAFT_MAX_TICK_MS: u64 = 10;
/// A follower stands for election this long after the election timeout, at least:
/// by then its peers, which heard the same last heartbeat within a tick or two, are
/// out of their leader lease too and grant the pre-vote.
pub const RAFT_ELECTION_MARGIN_MS: u64 = 20;
/// The random spread of a follower's election timer beyond the margin: followers
/// seldom stand at once (pre-vote makes a split vote rarer still; one costs another
/// timeout), and a failover takes at most the election timeout plus margin plus spread
/// from the dead leader's last heartbeat.
pub const RAFT_ELECTION_SPREAD_MS: u64 = 50;

/// The tick and raft-rs's configuration for `cfg`.
fn engine_config(
    cfg: &crate::config::RaftConfig,
    id: u64,
    applied: u64,
) -> (Duration, raft::Config) {
    let hb_us = cfg.heartbeat_interval.as_micros().max(1) as u64;
    let per_hb = hb_us.div_ceil(RAFT_MAX_TICK_MS * 1000).max(1);
    let tick_us = (hb_us / per_hb).max(1);
    let ticks_of = |us: u64| us.div_ceil(tick_us) as usize;
    let election_tick = ticks_of(cfg.election_timeout.as_micros() as u64).max(per_hb as usize + 1);
    let min_election_tick = election_tick + ticks_of(RAFT_ELECTION_MARGIN_MS * 1000).max(1);
    let max_election_tick = min_election_tick + ticks_of(RAFT_ELECTION_SPREAD_MS * 1000).max(2);
    let c = raft::Config {
        id,
        election_tick,
        heartbeat_tick: per_hb as usize,
        min_election_tick,
        max_election_tick,
        applied,
        max_size_per_msg: RAFT_MAX_MSG_BYTES,
        max_inflight_msgs: RAFT_MAX_INFLIGHT_MSGS,
        check_quorum: true,
        pre_vote: true,
        // A commit advance rides on the next append or heartbeat instead of an append
        // of its own to every follower (and its response): half the messages per commit.
        // Followers apply a little later; nothing waits on that (reads on them may be
        // stale, and a membership change still broadcasts).
        skip_bcast_commit: true,
        // Appends queued for one follower go as one message.
        batch_append: true,
        read_only_option: raft::ReadOnlyOption::Safe,
        ..Default::default()
    };
    (Duration::from_micros(tick_us), c)
}

fn raw_node(
    cfg: &crate::config::RaftConfig,
    id: u64,
    store: &Shared,
) -> Result<RawNode<Shared>, String> {
    let applied = {
        let s = lock(&store.0);
        if s.initialized() {
            s.applied
        } else {
            0
        }
    };
    let (_, c) = engine_config(cfg, id, applied);
    c.validate()
        .map_err(|e| format!("raft configuration: {e}"))?;
    RawNode::new(&c, store.clone(), &logger()).map_err(|e| format!("raft: {e}"))
}

/// Entry data: `[{set, Path, Bin} | {delete, Path}]`.
fn encode_ops(ops: &[StoreOp]) -> Vec<u8> {
    crate::store::ops_term(ops).encode()
}

fn decode_ops(b: &[u8]) -> Result<Vec<StoreOp>, String> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    let t = Term::decode(b).map_err(|e| format!("damaged entry: {e}"))?;
    let text = |t: &Term| -> Result<String, String> {
        String::from_utf8(t.as_binary().ok_or("bad path")?.to_vec())
            .map_err(|_| "bad path".to_string())
    };
    let mut ops = Vec::new();
    for o in t.as_list().ok_or("damaged entry")? {
        let f = o.as_tuple().ok_or("damaged entry")?;
        ops.push(match (f.first().and_then(|a| a.as_atom()), f.len()) {
            (Some("set"), 3) => StoreOp::Set(
                text(&f[1])?,
                f[2].as_binary().ok_or("damaged entry")?.to_vec(),
            ),
            (Some("delete"), 2) => StoreOp::Delete(text(&f[1])?),
            _ => return Err("damaged entry".into()),
        });
    }
    Ok(ops)
}

fn txid(term: u64, index: u64) -> String {
    format!("raft-{term}-{index}")
}

fn role_name(r: StateRole) -> &'static str {
    match r {
        StateRole::Leader => "leader",
        StateRole::Follower => "follower",
        StateRole::Candidate | StateRole::PreCandidate => "candidate",
    }
}

impl Engine {
    fn run(
        mode: Arc<RaftMode>,
        rs: RaftStore,
        t: Arc<Transport>,
        rx: Receiver<Ev>,
        events: Sender<HaEvent>,
    ) -> Result<(), String> {
        let node = mode.node.clone();
        let cfg = node.cfg.raft.clone().ok_or("not in Raft mode")?;
        let me = mode.me.clone();
        let id = id_of(&me);
        let store = Shared(Arc::new(Mutex::new(rs)));
        let mut resnap = false;
        {
            // The store's seq is the applied index.
            let tx = node
                .store
                .last_tx()
                .map_err(|e| format!("cannot read the store: {e}"))?;
            let seq = tx.seq;
            let mut s = lock(&store.0);
            if s.hard_state().term > guard::RAFT_MAX_TERM {
                return Err(format!(
                    "the Raft log's saved term {} is above RAFT_MAX_TERM ({}): it came from a \
                     faulty or hostile peer (a later election would wrap it to 0); remove this \
                     node on the leader, run `ha-ctl raft reset --force` here and add it again",
                    s.hard_state().term,
                    guard::RAFT_MAX_TERM
                ));
            }
            // Index 1 stands for the empty store (create-cluster on an empty store).
            let seq = if seq == 0 && s.first() == 2 { 1 } else { seq };
            if s.initialized() {
                // A snapshot in the store that the log does not record (recover.rs).
                resnap = recover::reconcile(&mut s, seq, &tx.txid)?;
                if seq < s.first() - 1 || seq > s.last() {
                    return Err(format!(
                        "the store (applied index {seq}) does not match the Raft log (entries {}..={}); \
                         on the leader, remove this node (raft adjust-membership remove-node), \
                         then clear its data directory, restart it and add it again: it \
                         re-joins by snapshot",
                        s.first(),
                        s.last()
                    ));
                }
                let mut hs = s.hard_state().clone();
                if seq < s.last() {
                    // The store applies without a sync: after a crash it may come back
                    // behind the Raft log, which kept every entry above its durable seq.
                    crate::info!(
                        "raft",
                        "the store is at index {seq}; committed entries after it are applied \
                         again from the Raft log (entries up to {})",
                        s.last()
                    );
                }
                if hs.commit < seq {
                    hs.commit = seq;
                    s.persist(&[], Some(&hs))?;
                }
            }
            s.applied = seq;
        }
        let raw = raw_node(&cfg, id, &store)?;
        let mut e = Engine {
            mode,
            node,
            cfg,
            id,
            me,
            raw,
            store,
            t,
            events,
            pending: BTreeMap::new(),
            reads: HashMap::new(),
            ready_reads: Vec::new(),
            read_ctx: 0,
            waiters: Vec::new(),
            adds: VecDeque::new(),
            staged: None,
            proposed_at: VecDeque::new(),
            was_role: StateRole::Follower,
            was_leader: 0,
            was_connected: Default::default(),
            fatal: None,
            leader_since: None,
            removed_since: None,
            snap_backoff: HashMap::new(),
            snap_opened: HashMap::new(),
            voter_since: HashMap::new(),
            resnap,
            deferred: Vec::new(),
            deferred_since: None,
        };
        e.refresh_view();
        let tick = engine_config(&e.cfg, e.id, 0).0;
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Ev::Stop) => return Ok(()),
                Ok(ev) => {
                    e.handle(ev);
                    for _ in 0..256 {
                        match rx.try_recv() {
                            Ok(Ev::Stop) => return Ok(()),
                            Ok(ev) => e.handle(ev),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if Instant::now() >= next_tick {
                e.tick();
                next_tick += tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
            }
            e.check_lease();
            e.drive();
            e.on_ready()?;
            e.apply_deferred_when_due();
            e.after_role_change();
            e.expire();
            e.refresh_view();
            e.keep_links();
            e.ask_snapshot_after_rebase();
            if let Some(f) = e.fatal.take() {
                return Err(f);
            }
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        lock(&self.mode.view)
    }

    fn addr_of(&self, id: u64) -> Option<String> {
        let a = lock(&self.store.0).addrs.get(&id).cloned();
        a.or_else(|| lock(&self.t.heard_addrs).get(&id).cloned())
    }

    fn tick(&mut self) {
        if self.cfg.passive && self.raw.raft.state != StateRole::Leader {
            // Passive: never campaign; stay out of the leader lease so votes still count.
            // The timer is held at the election timeout (out of the lease, so it grants
            // votes), below the randomized one (at least a margin of ticks more).
            let et = self.raw.raft.election_timeout();
            let r = &mut self.raw.raft;
            if r.election_elapsed + 1 >= r.randomized_election_timeout() {
                r.election_elapsed = et;
            }
        }
        self.raw.tick();
    }

    /// When this leader last heard from a majority of the voters (itself counting as
    /// now; a voter as heard at the latest of its last message, when it became a voter,
    /// and when this node became leader). None when it is not the leader or never did.
    fn majority_heard(&self) -> Option<Instant> {
        if self.raw.raft.state != StateRole::Leader {
            return None;
        }
        let voters: Vec<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
        let now = Instant::now();
        let rx = lock(&self.t.last_rx);
        let mut heard: Vec<Option<Instant>> = voters
            .iter()
            .map(|v| {
                if *v == self.id {
                    return Some(now);
                }
                [
                    rx.get(v).copied(),
                    self.voter_since.get(v).copied(),
                    self.leader_since,
                ]
                .into_iter()
                .flatten()
                .max()
            })
            .collect();
        // Newest first: the majority-th newest is when a majority was last heard.
        heard.sort_by(|a, b| b.cmp(a));
        heard.get(voters.len() / 2).copied().flatten()
    }

    fn has_lease(&self) -> bool {
        self.majority_heard()
            .is_some_and(|t| t.elapsed() < self.cfg.election_timeout)
    }

    /// A leader that has not heard from a majority within the election timeout steps
    /// down at once (raft-rs's own check-quorum only looks at election-timeout
    /// boundaries, up to twice as late).
    fn check_lease(&mut self) {
        let now = Instant::now();
        let voters: Vec<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
        self.voter_since.retain(|v, _| voters.contains(v));
        for &v in &voters {
            self.voter_since.entry(v).or_insert(now);
        }
        if self.raw.raft.state != StateRole::Leader {
            self.removed_since = None;
            return;
        }
        if self.leader_since.is_none() {
            self.leader_since = Some(now);
        }
        if !voters.contains(&self.id) {
            self.step_aside_removed(now);
            return;
        }
        if !self.has_lease() {
            let ago = self
                .majority_heard()
                .map(|t| now.saturating_duration_since(t).as_millis().to_string())
                .unwrap_or_else(|| "never".into());
            crate::warn!(
                "raft",
                "stepping down: heard from no majority for {ago} ms (election timeout {} ms)",
                self.cfg.election_timeout.as_millis()
            );
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
        }
    }

    /// A leader that applied its own removal (raft-rs keeps it leading, and its heartbeats
    /// would keep the remaining voters from ever electing one of them): it hands over to the
    /// most up-to-date voter at once, and becomes a follower (which, not being a voter, never
    /// stands) when that has not happened within an election timeout, or at once when no
    /// voter is left to hand over to.
    fn step_aside_removed(&mut self, now: Instant) {
        let first = self.removed_since.is_none();
        let since = *self.removed_since.get_or_insert(now);
        let me = self.id;
        let best = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .filter(|(id, _)| self.raw.raft.prs().conf().voters().contains(**id))
            .max_by_key(|(_, p)| p.matched)
            .map(|(id, _)| *id);
        if first {
            crate::warn!(
                "raft",
                "this leader is no longer a member: handing over to {}",
                best.and_then(|b| self.addr_of(b))
                    .unwrap_or_else(|| "nobody (no voter left)".into())
            );
            if let Some(b) = best {
                self.raw.transfer_leader(b);
            }
        }
        if best.is_none() || now.saturating_duration_since(since) >= self.cfg.election_timeout {
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
            self.removed_since = None;
        }
    }

    /// A proposed membership change waits (in this term) until it is applied; a refused
    /// proposal is answered now.
    fn wait_conf(
        &mut self,
        proposed: Result<u64, Refusal>,
        what: String,
        reply: Sender<Result<String, Refusal>>,
        deadline: Instant,
    ) {
        match proposed {
            Ok(index) => self.waiters.push(Waiter::Conf {
                index,
                term: self.raw.raft.term,
                what,
                reply,
                deadline,
            }),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// After the Ready: a node that stopped leading answers every commit still waiting
    /// for its majority at once.
    fn after_role_change(&mut self) {
        let leading = self.raw.raft.state == StateRole::Leader;
        if leading {
            if self.leader_since.is_none() {
                self.leader_since = Some(Instant::now());
            }
            return;
        }
        if self.leader_since.take().is_none() {
            return;
        }
        let committed = self.raw.raft.raft_log.committed;
        let term_now = self.raw.raft.term;
        let mut keep = BTreeMap::new();
        for (idx, p) in std::mem::take(&mut self.pending) {
            if idx <= committed {
                // Committed: it is applied (and answered) in a moment, unless another
                // entry was committed at its index.
                if self.raw.raft.raft_log.term(idx).is_ok_and(|t| t == p.term) {
                    keep.insert(idx, p);
                } else {
                    let _ = p.reply.send(Err((
                        CONFD_ERR_NOT_WRITABLE,
                        "leadership changed before the commit was replicated: it was not committed"
                            .into(),
                    )));
                }
                continue;
            }
            let _ = p.reply.send(Err((
                CONFD_ERR_HA_ABORT,
                format!(
                    "this node stopped being the Raft leader (now term {term_now}) before entry \
                     {idx} (term {}) was confirmed by a majority: the outcome is unknown (the \
                     next leader may still commit it); read back and retry if missing",
                    p.term
                ),
            )));
        }
        self.pending = keep;
        for (_, (r, _)) in self.reads.drain() {
            let _ = r.send(Err((
                CONFD_ERR_NOT_WRITABLE,
                "this node stopped being the Raft leader before the read index was confirmed"
                    .into(),
            )));
        }
        // Membership changes: as commits, answered now unless their entry is committed.
        let mut keep = Vec::new();
        for w in self.waiters.drain(..) {
            match w {
                Waiter::Conf {
                    index,
                    term,
                    what,
                    reply,
                    deadline,
                } if index > 0 => {
                    let ours = self.raw.raft.raft_log.term(index).is_ok_and(|t| t == term);
                    if index <= committed && ours {
                        keep.push(Waiter::Conf {
                            index,
                            term,
                            what,
                            reply,
                            deadline,
                        });
                    } else if index <= committed {
                        Self::reply_err(&reply, CONFD_ERR_NOT_WRITABLE, format!("leadership changed before the membership change ({what}, entry {index}) was replicated: it was not made"));
                    } else {
                        Self::reply_err(&reply, CONFD_ERR_HA_ABORT, format!("this node stopped being the Raft leader (now term {term_now}) before the membership change ({what}, entry {index}) was confirmed by a majority: the outcome is unknown; check 'ha-ctl raft status' on the new leader"));
                    }
                }
                w => keep.push(w),
            }
        }
        self.waiters = keep;
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Msg(m) => {
                // Checked first: raft-rs trusts its peers (guard.rs).
                let Some(m) = self.admit(m, false) else {
                    return;
                };
                if self.cfg.passive && m.get_msg_type() == MessageType::MsgTimeoutNow {
                    crate::info!("raft", "handover to this passive node refused");
                    return;
                }
                let _ = self.raw.step(m);
            }
            Ev::Snapshot(m, path) => {
                let Some(m) = self.admit(m, true) else {
                    let _ = std::fs::remove_file(path);
                    self.t.snapshot_consumed();
                    return;
                };
                let idx = m.get_snapshot().get_metadata().index;
                if let Some((_, old)) = self.staged.replace((idx, path)) {
                    let _ = std::fs::remove_file(old);
                }
                let _ = self.raw.step(m);
            }
            Ev::Propose(batch) => self.propose(batch),
            Ev::Read(reply) => {
                if !self.has_lease() {
                    let v = self.view().clone();
                    let (code, why) = refusal_not_leader(&v);
                    // The refusal names the leader; this was a read, not a write.
                    let why = why.replace(
                        "writes are refused",
                        "linearizable reads are served by the leader only",
                    );
                    let _ = reply.send(Err((code, why)));
                    return;
                }
                self.read_ctx += 1;
                let ctx = self.read_ctx.to_be_bytes().to_vec();
                self.raw.read_index(ctx.clone());
                self.reads
                    .insert(ctx, (reply, Instant::now() + self.cfg.storage_timeout));
            }
            Ev::Action(a, reply) => {
                // An action sees the store with every known committed entry applied.
                if let Err(e) = self.apply_deferred() {
                    self.fatal.get_or_insert(e);
                }
                self.action(a, reply)
            }
            Ev::Unreachable(id) => self.raw.report_unreachable(id),
            Ev::SnapshotDone(id, ok) => self.raw.report_snapshot(
                id,
                if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                },
            ),
            Ev::Stop => {}
        }
    }

    fn propose(&mut self, batch: Vec<CommitReq>) {
        for r in batch {
            if !self.has_lease() {
                let mut v = self.view().clone();
                if self.raw.raft.state == StateRole::Leader {
                    let _ = r.reply.send(Err((
                        CONFD_ERR_NOT_WRITABLE,
                        format!(
                            "this Raft leader has not heard from a majority within the election \
                             timeout ({} ms): writes are refused",
                            self.cfg.election_timeout.as_millis()
                        ),
                    )));
                    continue;
                }
                v.leader = self.addr_of(self.raw.raft.leader_id);
                let _ = r.reply.send(Err(refusal_not_leader(&v)));
                continue;
            }
            let before = self.raw.raft.raft_log.last_index();
            if let Err(e) = self.raw.propose(vec![], encode_ops(&r.ops)) {
                let _ = r.reply.send(Err((
                    CONFD_ERR_NOT_WRITABLE,
                    format!("the Raft leader did not take the commit: {e}"),
                )));
                continue;
            }
            let idx = self.raw.raft.raft_log.last_index();
            if idx == before {
                let _ = r.reply.send(Err((
                    CONFD_ERR_NOT_WRITABLE,
                    "the Raft leader dropped the commit".into(),
                )));
                continue;
            }
            self.pending.insert(
                idx,
                Pending {
                    term: self.raw.raft.term,
                    reply: r.reply,
                    deadline: Instant::now() + self.cfg.storage_timeout,
                },
            );
            if self.proposed_at.len() < MAX_TRACKED_PROPOSALS {
                self.proposed_at.push_back((idx, Instant::now()));
            }
        }
    }

    fn reply_err(reply: &Sender<Result<String, Refusal>>, code: i32, why: String) {
        let _ = reply.send(Err((code, why)));
    }

    fn not_leader(&self, what: &str) -> Refusal {
        let l = self.addr_of(self.raw.raft.leader_id);
        (
            CONFD_ERR_BADSTATE,
            format!(
                "raft {what}: this node is not the leader ({})",
                l.map(|l| format!("the leader is {l}"))
                    .unwrap_or_else(|| "no leader known".into())
            ),
        )
    }

    fn action(&mut self, a: Action, reply: Sender<Result<String, Refusal>>) {
        let deadline = Instant::now() + self.cfg.storage_timeout;
        let initialized = lock(&self.store.0).initialized();
        match a {
            Action::Create(addrs) => {
                if initialized {
                    return Self::reply_err(&reply, CONFD_ERR_BADSTATE, "raft create-cluster: this node is already in a cluster (raft status; raft reset to leave it)".into());
                }
                let seq = lock(&self.store.0).applied;
                if let Err(e) = lock(&self.store.0).bootstrap(self.id, &self.me, seq.max(1)) {
                    return Self::reply_err(&reply, CONFD_ERR_INTERNAL, e);
                }
                if seq == 0 {
                    // Index 1 stands for the empty store: a joiner starts from a snapshot.
                    let r = self.commit_to_store(&[(
                        TxMeta {
                            seq: 1,
                            txid: txid(1, 1),
                        },
                        vec![],
                    )]);
                    if let Err(e) = r {
                        return Self::reply_err(&reply, CONFD_ERR_INTERNAL, e);
                    }
                    lock(&self.store.0).applied = 1;
                }
                match raw_node(&self.cfg, self.id, &self.store) {
                    Ok(r) => self.raw = r,
                    Err(e) => return Self::reply_err(&reply, CONFD_ERR_INTERNAL, e),
                }
                if let Err(e) = self.raw.campaign() {
                    return Self::reply_err(&reply, CONFD_ERR_INTERNAL, format!("campaign: {e}"));
                }
                let mut seen = std::collections::HashSet::new();
                seen.insert(self.me.clone());
                for a in addrs {
                    if seen.insert(a.clone()) {
                        self.adds.push_back(a);
                    }
                }
                crate::info!(
                    "raft",
                    "create-cluster: this node leads a new cluster; adding {:?}",
                    self.adds
                );
                self.waiters.push(Waiter::Create { reply, deadline });
            }
            Action::Add(addr) | Action::Remove(addr)
                if self.raw.raft.state != StateRole::Leader =>
            {
                let _ = addr;
                let _ = reply.send(Err(self.not_leader("adjust-membership")));
            }
            Action::Add(addr) => {
                let r = self.propose_conf(&addr, ConfChangeType::AddNode);
                self.wait_conf(r, format!("{addr} added"), reply, deadline);
            }
            Action::Remove(addr) => {
                if addr == self.me {
                    return Self::reply_err(&reply, CONFD_ERR_BADSTATE, "raft adjust-membership remove-node: this node is the leader; hand over first (raft handover), then remove it on the new leader".into());
                }
                let id = id_of(&addr);
                let conf = self.raw.raft.prs().conf();
                if !conf.voters().ids().iter().any(|v| v == id) && !conf.learners().contains(&id) {
                    return Self::reply_err(
                        &reply,
                        CONFD_ERR_NOEXISTS,
                        format!("raft adjust-membership remove-node: {addr} is not a member"),
                    );
                }
                let r = self.propose_conf(&addr, ConfChangeType::RemoveNode);
                self.wait_conf(r, format!("{addr} removed"), reply, deadline);
            }
            Action::Handover(to) => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(self.not_leader("handover")));
                    return;
                }
                let passive = lock(&self.t.passive_ids).clone();
                let voters: Vec<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
                let target = match to {
                    Some(a) => {
                        let id = id_of(&a);
                        if id == self.id {
                            let _ = reply.send(Ok(format!("{a} is already the leader")));
                            return;
                        }
                        if !voters.contains(&id) {
                            return Self::reply_err(
                                &reply,
                                CONFD_ERR_BADSTATE,
                                format!("raft handover: {a} is not a member"),
                            );
                        }
                        if passive.contains(&id) {
                            return Self::reply_err(
                                &reply,
                                CONFD_ERR_BADSTATE,
                                format!("raft handover: {a} is passive (never leader)"),
                            );
                        }
                        id
                    }
                    None => {
                        let best = self
                            .raw
                            .raft
                            .prs()
                            .iter()
                            .filter(|(id, _)| {
                                **id != self.id && voters.contains(id) && !passive.contains(id)
                            })
                            .max_by_key(|(_, p)| p.matched)
                            .map(|(id, _)| *id);
                        match best {
                            Some(id) => id,
                            None => {
                                return Self::reply_err(
                                    &reply,
                                    CONFD_ERR_BADSTATE,
                                    "raft handover: no other member can lead".into(),
                                )
                            }
                        }
                    }
                };
                let addr = self.addr_of(target).unwrap_or_else(|| target.to_string());
                crate::info!("raft", "handover: transferring leadership to {addr}");
                self.raw.transfer_leader(target);
                let et = self.cfg.election_timeout;
                self.waiters.push(Waiter::Handover {
                    to: target,
                    addr,
                    reply,
                    deadline: Instant::now() + et * 3,
                });
            }
            Action::Reset(force) => {
                let conf = self.raw.raft.prs().conf();
                let member = conf.voters().contains(self.id) || conf.learners().contains(&self.id);
                // A node removed from its cluster is no member: it resets without --force.
                if initialized && member && !force {
                    let n = conf.voters().ids().len();
                    return Self::reply_err(&reply, CONFD_ERR_BADSTATE, format!("raft reset: this node is a member of a cluster of {n}; remove it on the leader first (adjust-membership remove-node), or use --force"));
                }
                if let Err(e) = lock(&self.store.0).wipe() {
                    return Self::reply_err(&reply, CONFD_ERR_INTERNAL, e);
                }
                match raw_node(&self.cfg, self.id, &self.store) {
                    Ok(r) => self.raw = r,
                    Err(e) => return Self::reply_err(&reply, CONFD_ERR_INTERNAL, e),
                }
                self.fail_all("the node left its HA Raft cluster (raft reset)");
                crate::info!(
                    "raft",
                    "reset: this node left its cluster (stalled); the store's data stays"
                );
                let _ = reply.send(Ok(
                    "this node left its Raft cluster (stalled); its data stays".into(),
                ));
            }
        }
    }

    fn propose_conf(&mut self, addr: &str, ty: ConfChangeType) -> Result<u64, Refusal> {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                CONFD_ERR_BADSTATE,
                format!("bad node address '{addr}' (IP:PORT)"),
            ));
        }
        let applied = lock(&self.store.0).applied;
        if self.raw.raft.pending_conf_index > applied {
            return Err((
                CONFD_ERR_BADSTATE,
                "a membership change is still in progress; try again".into(),
            ));
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(ty);
        cc.node_id = id_of(addr);
        let before = self.raw.raft.raft_log.last_index();
        self.raw
            .propose_conf_change(addr.as_bytes().to_vec(), cc)
            .map_err(|e| {
                (
                    CONFD_ERR_BADSTATE,
                    format!("membership change refused: {e}"),
                )
            })?;
        let idx = self.raw.raft.raft_log.last_index();
        if idx == before {
            return Err((CONFD_ERR_BADSTATE, "membership change dropped".into()));
        }
        Ok(idx)
    }

    /// Starts the next member addition of create-cluster when none is in flight.
    fn drive(&mut self) {
        if self.adds.is_empty() || self.raw.raft.state != StateRole::Leader {
            return;
        }
        let applied = lock(&self.store.0).applied;
        if self.raw.raft.pending_conf_index > applied || !self.raw.raft.commit_to_current_term() {
            return;
        }
        let a = self.adds.pop_front().expect("not empty");
        if let Err((_, e)) = self.propose_conf(&a, ConfChangeType::AddNode) {
            crate::warn!("raft", "create-cluster: adding {a}: {e}");
            self.adds.push_front(a);
        }
    }

    fn fail_all(&mut self, why: &str) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err((
                CONFD_ERR_HA_ABORT,
                format!("{why}: the outcome is unknown"),
            )));
        }
        for (_, (r, _)) in self.reads.drain() {
            let _ = r.send(Err((CONFD_ERR_NOT_WRITABLE, why.to_string())));
        }
        for (_, r) in self.ready_reads.drain(..) {
            let _ = r.send(Err((CONFD_ERR_NOT_WRITABLE, why.to_string())));
        }
        self.adds.clear();
        for w in self.waiters.drain(..) {
            let r = match w {
                Waiter::Conf { reply, .. }
                | Waiter::Create { reply, .. }
                | Waiter::Handover { reply, .. } => reply,
            };
            let _ = r.send(Err((CONFD_ERR_BADSTATE, why.to_string())));
        }
    }

    /// Times out what waited too long.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in late {
            if let Some(p) = self.pending.remove(&i) {
                let _ = p.reply.send(Err((
                    CONFD_ERR_HA_ABORT,
                    format!(
                        "entry {i} was not committed within storage-timeout ({} ms): the outcome is unknown",
                        self.cfg.storage_timeout.as_millis()
                    ),
                )));
            }
        }
        let late: Vec<Vec<u8>> = self
            .reads
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in late {
            if let Some((r, _)) = self.reads.remove(&k) {
                let _ = r.send(Err((
                    CONFD_ERR_NOT_WRITABLE,
                    "the read index was not confirmed by a majority in time".into(),
                )));
            }
        }
        let applied = lock(&self.store.0).applied;
        let leader = self.raw.raft.leader_id;
        let is_leader = self.raw.raft.state == StateRole::Leader;
        let adds_left = self.adds.len();
        let pending_conf = self.raw.raft.pending_conf_index > applied;
        let members = self.members();
        // Members not heard from within the election timeout.
        let silent: Vec<String> = {
            let et = self.cfg.election_timeout;
            let rx = lock(&self.t.last_rx);
            let voters: Vec<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
            voters
                .into_iter()
                .filter(|v| *v != self.id && rx.get(v).is_none_or(|t| t.elapsed() >= et))
                .map(|v| self.addr_of(v).unwrap_or_else(|| format!("id:{v}")))
                .collect()
        };
        let leader_name = self.addr_of(leader).unwrap_or_else(|| "unknown".into());
        let mut keep = Vec::new();
        for w in self.waiters.drain(..) {
            match w {
                Waiter::Conf {
                    index,
                    term,
                    what,
                    reply,
                    deadline,
                } => {
                    if applied >= index {
                        let _ = reply.send(Ok(what));
                    } else if now >= deadline {
                        Self::reply_err(&reply, CONFD_ERR_TIMEOUT, format!("membership change (entry {index}) not applied within storage-timeout"));
                    } else {
                        keep.push(Waiter::Conf {
                            index,
                            term,
                            what,
                            reply,
                            deadline,
                        });
                    }
                }
                Waiter::Create { reply, deadline } => {
                    if is_leader && adds_left == 0 && !pending_conf && silent.is_empty() {
                        let _ = reply.send(Ok(format!(
                            "cluster created; members: {}",
                            members.join(" ")
                        )));
                    } else if now >= deadline {
                        Self::reply_err(&reply, CONFD_ERR_TIMEOUT, format!("create-cluster: not done within storage-timeout (members so far: {}; not heard from: {}; {adds_left} still to add: they are added as they become reachable)", members.join(" "), if silent.is_empty() { "none".to_string() } else { silent.join(" ") }));
                    } else {
                        keep.push(Waiter::Create { reply, deadline });
                    }
                }
                Waiter::Handover {
                    to,
                    addr,
                    reply,
                    deadline,
                } => {
                    if leader == to {
                        let _ = reply.send(Ok(format!("leadership handed over to {addr}")));
                    } else if now >= deadline {
                        Self::reply_err(
                            &reply,
                            CONFD_ERR_TIMEOUT,
                            format!(
                                "handover to {addr} did not complete (leader is {leader_name})"
                            ),
                        );
                    } else {
                        keep.push(Waiter::Handover {
                            to,
                            addr,
                            reply,
                            deadline,
                        });
                    }
                }
            }
        }
        self.waiters = keep;
    }

    fn members(&self) -> Vec<String> {
        let cs = lock(&self.store.0).conf_state().clone();
        let mut v: Vec<String> = cs
            .voters
            .iter()
            .map(|id| self.addr_of(*id).unwrap_or_else(|| format!("id:{id}")))
            .collect();
        v.sort();
        v
    }

    /// Whether a snapshot at `idx` may go to `to` now. A follower that did not take the
    /// last one (its match index is still below it: it refused it, over its
    /// snapshot-max-bytes, or the link broke) gets the next one 1 s later, then 2 s, 4 s...
    /// up to RAFT_SNAPSHOT_RETRY_MAX_MS, not the whole store again at every heartbeat; one
    /// that has connected to this node again since (it restarted) gets it at once.
    fn snapshot_due(&mut self, to: u64, idx: u64, addr: &str) -> bool {
        let now = Instant::now();
        let matched = self.raw.raft.prs().get(to).map_or(0, |p| p.matched);
        // A follower that connected again since (it restarted: a transfer cut by its
        // restart, or a larger snapshot-max-bytes) starts over: no wait.
        let opened = lock(&self.t.inbound_opened).get(&to).copied().unwrap_or(0);
        if self.snap_opened.get(&to).is_some_and(|o| *o != opened) {
            self.snap_backoff.remove(&to);
        }
        self.snap_opened.insert(to, opened);
        match self.snap_backoff.get(&to).copied() {
            Some((_, _, last)) if matched >= last => {
                self.snap_backoff.remove(&to);
            }
            Some((next, _, _)) if now < next => return false,
            Some((_, d, last)) => {
                let d = (d * 2).min(Duration::from_millis(RAFT_SNAPSHOT_RETRY_MAX_MS));
                crate::warn!(
                    "raft",
                    "{addr} did not take the snapshot at index {last}; sending one at index \
                     {idx}, the next not before {} ms",
                    d.as_millis()
                );
                self.snap_backoff.insert(to, (now + d, d, idx));
                return true;
            }
            None => {}
        }
        let d = Duration::from_secs(1);
        self.snap_backoff.insert(to, (now + d, d, idx));
        true
    }

    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            let Some(addr) = self.addr_of(m.to) else {
                crate::debug!("raft", "message to unknown node id {} dropped", m.to);
                continue;
            };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                let idx = m.get_snapshot().get_metadata().index;
                if !self.snapshot_due(m.to, idx, &addr) {
                    // Not yet: raft-rs asks again later.
                    self.raw
                        .report_snapshot(m.to, raft::SnapshotStatus::Failure);
                    continue;
                }
                match self.node.store.snapshot() {
                    Ok(sn) if sn.meta().seq == idx => {
                        crate::info!("raft", "sending a snapshot at index {idx} to {addr}");
                        if !self.t.send(m, &addr, Some(sn)) {
                            self.raw
                                .report_snapshot(id_of(&addr), raft::SnapshotStatus::Failure);
                        }
                    }
                    _ => self
                        .raw
                        .report_snapshot(id_of(&addr), raft::SnapshotStatus::Failure),
                }
                continue;
            }
            self.t.send(m, &addr, None);
        }
    }

    fn commit_to_store(&mut self, txns: &[(TxMeta, Vec<StoreOp>)]) -> Result<(), String> {
        // Unsynced: the entries are durable in the Raft log, which keeps every entry above
        // the store's durable seq (see the compaction in `apply`) and re-applies them after
        // a crash; the store's records are synced by its next checkpoint.
        if let Err(e) = self.node.store.commit_unsynced(txns) {
            let why = format!("the local store failed to apply Raft entries: {e}");
            if e.is_fault() {
                self.node.store_failed("raft apply", &e);
            }
            return Err(why);
        }
        if let Some((m, _)) = txns.last() {
            lock(&self.node.commit).last = m.clone();
        }
        Ok(())
    }

    fn apply(&mut self, ents: Vec<Entry>) -> Result<(), String> {
        if ents.is_empty() {
            return Ok(());
        }
        let applied = lock(&self.store.0).applied;
        let mut txns = Vec::with_capacity(ents.len());
        for e in &ents {
            if e.index <= applied {
                continue;
            }
            let ops = match e.get_entry_type() {
                EntryType::EntryNormal => {
                    decode_ops(&e.data).map_err(|x| format!("entry {}: {x}", e.index))?
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data)
                        .map_err(|x| format!("entry {}: {x}", e.index))?;
                    let cs = self
                        .raw
                        .apply_conf_change(&cc)
                        .map_err(|x| format!("entry {}: {x}", e.index))?;
                    let mut addrs = lock(&self.store.0).addrs.clone();
                    let addr = String::from_utf8_lossy(&e.context).into_owned();
                    match cc.get_change_type() {
                        ConfChangeType::RemoveNode => {
                            crate::info!("raft", "member {addr} removed (entry {})", e.index);
                            if cc.node_id == self.id {
                                crate::warn!("raft", "this node was removed from the cluster");
                            }
                        }
                        _ => {
                            crate::info!("raft", "member {addr} added (entry {})", e.index);
                            addrs.insert(cc.node_id, addr);
                        }
                    }
                    lock(&self.store.0).set_conf(&cs, &addrs)?;
                    Vec::new()
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&e.data)
                        .map_err(|x| format!("entry {}: {x}", e.index))?;
                    let cs = self
                        .raw
                        .apply_conf_change(&cc)
                        .map_err(|x| format!("entry {}: {x}", e.index))?;
                    let addrs = lock(&self.store.0).addrs.clone();
                    lock(&self.store.0).set_conf(&cs, &addrs)?;
                    Vec::new()
                }
            };
            txns.push((
                TxMeta {
                    seq: e.index,
                    txid: txid(e.term, e.index),
                },
                ops,
            ));
        }
        if txns.is_empty() {
            return Ok(());
        }
        self.commit_to_store(&txns)?;
        let last = txns.last().map(|t| t.0.seq).unwrap_or(applied);
        lock(&self.store.0).applied = last;
        let n = txns.len() as u64;
        if self.raw.raft.state == StateRole::Leader {
            self.node.stats.commits.fetch_add(n, Ordering::Relaxed);
        } else {
            self.node.stats.txns_applied.fetch_add(n, Ordering::Relaxed);
            self.node.stats.last_txn_unix_ms.store(
                crate::node::unix_ms(Instant::now()) as u64,
                Ordering::Relaxed,
            );
        }
        for e in &ents {
            if let Some(p) = self.pending.remove(&e.index) {
                let r = if p.term == e.term {
                    Ok(txid(e.term, e.index))
                } else {
                    Err((
                        CONFD_ERR_NOT_WRITABLE,
                        "leadership changed before the commit was replicated: it was not committed"
                            .into(),
                    ))
                };
                let _ = p.reply.send(r);
            }
        }
        // Proposals at or below the applied index that were overwritten and never seen.
        let stale: Vec<u64> = self.pending.range(..=last).map(|(i, _)| *i).collect();
        for i in stale {
            if let Some(p) = self.pending.remove(&i) {
                let _ = p.reply.send(Err((
                    CONFD_ERR_NOT_WRITABLE,
                    "leadership changed: the commit was not committed".into(),
                )));
            }
        }
        let (ready, wait): (Vec<_>, Vec<_>) =
            self.ready_reads.drain(..).partition(|(i, _)| *i <= last);
        self.ready_reads = wait;
        for (_, r) in ready {
            let _ = r.send(Ok(()));
        }
        // Compaction: keep log-max-entries applied entries, and every entry the store may
        // lose in a crash (above its durable seq): after a restart they are re-applied. When
        // the store is not durable that far (its checkpoint is due later), its log is synced
        // now (one fdatasync per log-max-entries entries at most).
        let keep = self.cfg.log_max_entries;
        let first = lock(&self.store.0).first();
        if last >= first + keep + keep / 4 {
            let upto = last - keep;
            if self.node.store.durable_seq() < upto {
                if let Err(e) = self.node.store.sync_log() {
                    if e.is_fault() {
                        self.node.store_failed("raft apply", &e);
                    }
                    return Err(format!("the local store failed to sync its log: {e}"));
                }
            }
            let upto = upto.min(self.node.store.durable_seq());
            let mut s = lock(&self.store.0);
            if let Err(e) = s.compact(upto) {
                crate::warn!("raft", "log compaction: {e}");
            }
        }
        Ok(())
    }

    /// Applies committed entries, or, on a follower with nothing waiting on them, keeps
    /// them for a batch (applied within RAFT_FOLLOWER_APPLY_DELAY_MS). Anything else
    /// (leader, a membership change, a waiting commit or read) applies what waits first.
    fn apply_or_defer(&mut self, ents: Vec<Entry>) -> Result<(), String> {
        if ents.is_empty() {
            return Ok(());
        }
        let defer = self.raw.raft.state != StateRole::Leader
            && self.pending.is_empty()
            && self.ready_reads.is_empty()
            && self.waiters.is_empty()
            && ents
                .iter()
                .all(|e| e.get_entry_type() == EntryType::EntryNormal);
        if defer && self.deferred.len() + ents.len() < RAFT_FOLLOWER_APPLY_BATCH {
            self.deferred_since.get_or_insert_with(Instant::now);
            self.deferred.extend(ents);
            return Ok(());
        }
        let mut all = std::mem::take(&mut self.deferred);
        self.deferred_since = None;
        all.extend(ents);
        self.apply(all)
    }

    fn apply_deferred(&mut self) -> Result<(), String> {
        self.deferred_since = None;
        let all = std::mem::take(&mut self.deferred);
        self.apply(all)
    }

    fn apply_deferred_when_due(&mut self) {
        let due = self.deferred_since.is_some_and(|t| {
            t.elapsed() >= Duration::from_millis(RAFT_FOLLOWER_APPLY_DELAY_MS)
                || self.raw.raft.state == StateRole::Leader
        });
        if due {
            if let Err(e) = self.apply_deferred() {
                self.fatal.get_or_insert(e);
            }
        }
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), String> {
        let meta = snap.get_metadata();
        let Some((idx, path)) = self.staged.take() else {
            return Err(format!("snapshot {} has no staged data", meta.index));
        };
        let r = (|| -> Result<(), String> {
            if idx != meta.index {
                return Err(format!(
                    "staged snapshot {idx} is not the one accepted ({})",
                    meta.index
                ));
            }
            let mut w = self.node.store.begin_copy().map_err(|e| e.to_string())?;
            for c in transport::staged_chunks(&path)? {
                w.put_chunk(&c?).map_err(|e| e.to_string())?;
            }
            let m = TxMeta {
                seq: meta.index,
                txid: txid(meta.term, meta.index),
            };
            w.finish(&m).map_err(|e| e.to_string())?;
            lock(&self.node.commit).last = m;
            let addrs = storage::decode_addrs(&snap.data).unwrap_or_default();
            let mut s = lock(&self.store.0);
            s.apply_snapshot(meta, &addrs)?;
            s.applied = meta.index;
            Ok(())
        })();
        let _ = std::fs::remove_file(&path);
        self.t.snapshot_consumed();
        self.node
            .stats
            .full_copies_received
            .fetch_add(1, Ordering::Relaxed);
        crate::info!(
            "raft",
            "installed a snapshot at index {} (term {})",
            meta.index,
            meta.term
        );
        r
    }

    fn on_ready(&mut self) -> Result<(), String> {
        if !self.raw.has_ready() {
            if let Some((_, p)) = self.staged.take() {
                // A snapshot raft did not take.
                if self.raw.raft.raft_log.unstable.snapshot.is_none() {
                    let _ = std::fs::remove_file(p);
                    self.t.snapshot_consumed();
                } else {
                    self.staged = Some((0, p));
                }
            }
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if !rd.messages().is_empty() {
            let m = rd.take_messages();
            self.send(m);
        }
        if !rd.snapshot().is_empty() {
            let s = rd.snapshot().clone();
            let r = self
                .apply_deferred()
                .and_then(|_| self.install_snapshot(&s));
            if let Err(e) = r {
                self.fatal = Some(format!("installing a snapshot failed: {e}"));
                return Ok(());
            }
        } else if let Some((_, p)) = self.staged.take() {
            let _ = std::fs::remove_file(p);
            self.t.snapshot_consumed();
        }
        let ce = rd.take_committed_entries();
        if let Err(e) = self.apply_or_defer(ce) {
            self.fatal = Some(e);
            return Ok(());
        }
        {
            let mut s = lock(&self.store.0);
            s.persist(rd.entries(), rd.hs())?;
        }
        if !rd.read_states().is_empty() {
            for rs in rd.take_read_states() {
                if let Some((r, _)) = self.reads.remove(&rs.request_ctx) {
                    self.ready_reads.push((rs.index, r));
                }
            }
        }
        let pm = rd.take_persisted_messages();
        self.send(pm);
        let mut light = self.raw.advance(rd);
        if let Some(c) = light.commit_index() {
            lock(&self.store.0).set_commit(c);
        }
        let m = light.take_messages();
        self.send(m);
        let ce = light.take_committed_entries();
        if let Err(e) = self.apply_or_defer(ce) {
            self.fatal = Some(e);
            return Ok(());
        }
        self.raw.advance_apply();
        // Reads whose index is already applied.
        let applied = lock(&self.store.0).applied;
        let (ready, wait): (Vec<_>, Vec<_>) =
            self.ready_reads.drain(..).partition(|(i, _)| *i <= applied);
        self.ready_reads = wait;
        for (_, r) in ready {
            let _ = r.send(Ok(()));
        }
        Ok(())
    }

    fn emit(&self, ev: HaEvent) {
        let _ = self.events.send(ev);
    }

    fn refresh_view(&mut self) {
        let r = &self.raw.raft;
        let (initialized, applied, addrs, cs) = {
            let s = lock(&self.store.0);
            (
                s.initialized(),
                s.applied,
                s.addrs.clone(),
                s.conf_state().clone(),
            )
        };
        let member = cs.voters.contains(&self.id);
        let role = if !initialized || !member {
            "stalled"
        } else {
            role_name(r.state)
        };
        let leader_id = if initialized { r.leader_id } else { 0 };
        let et = self.cfg.election_timeout;
        let rx = lock(&self.t.last_rx).clone();
        let heard = |id: u64| rx.get(&id).is_some_and(|t| t.elapsed() < et);
        let name = |id: u64| {
            addrs
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("id:{id}"))
        };
        let last = r.raft_log.last_index();
        let now = Instant::now();
        // Drop propose times every follower has passed.
        let min_match = r
            .prs()
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(_, p)| p.matched)
            .min()
            .unwrap_or(last);
        while self
            .proposed_at
            .front()
            .is_some_and(|(i, _)| *i <= min_match.min(applied))
        {
            self.proposed_at.pop_front();
        }
        let mut followers = Vec::new();
        let mut connected_set = std::collections::BTreeSet::new();
        if r.state == StateRole::Leader {
            for (id, p) in r.prs().iter() {
                if *id == self.id {
                    continue;
                }
                let lag = last.saturating_sub(p.matched);
                let lag_ms = self.lag_ms_of(*id, p.matched, now);
                let state = if p.state == ProgressState::Snapshot {
                    "requires-snapshot"
                } else if !heard(*id) {
                    "unreachable"
                } else if lag > self.cfg.follower_max_lag {
                    "behind"
                } else {
                    "in-sync"
                };
                if heard(*id) {
                    connected_set.insert(*id);
                }
                followers.push(FollowerView {
                    heard: rx.get(id).copied(),
                    addr: name(*id),
                    index: p.matched,
                    lag_entries: lag,
                    lag_ms: if lag == 0 { 0 } else { lag_ms },
                    state,
                });
            }
            followers.sort_by(|a, b| a.addr.cmp(&b.addr));
        }
        let link = lock(&self.t.last_link).clone();
        let linked = |id: u64| link.get(&id).is_some_and(|t| t.elapsed() < et);
        let mut connected: Vec<String> = cs
            .voters
            .iter()
            .chain(cs.learners.iter())
            .filter(|id| **id != self.id && linked(**id))
            .map(|id| name(*id))
            .collect();
        connected.sort();
        let lease = self.has_lease();
        let state = r.state;
        {
            let mut v = self.view();
            v.role = role;
            v.reason = None;
            let leader = (leader_id != 0).then(|| name(leader_id));
            if leader.is_some() && leader != v.leader {
                v.leader_changes += 1;
            }
            v.leader = leader;
            v.term = r.term;
            let mut members: Vec<String> = cs.voters.iter().map(|id| name(*id)).collect();
            members.sort();
            v.members = members;
            v.connected = connected;
            v.current = last;
            v.commit = r.raft_log.committed;
            v.applied = applied;
            v.followers = followers;
            v.lease = lease;
            v.last_leader_rx = if leader_id != 0 && leader_id != self.id {
                rx.get(&leader_id).copied()
            } else {
                None
            };
        }
        // Events.
        let leader_now = if role == "stalled" { 0 } else { leader_id };
        let is_leader = state == StateRole::Leader && role == "leader";
        let was_leader = self.was_role == StateRole::Leader;
        if is_leader && !was_leader {
            crate::info!(
                "raft",
                "this node is now the Raft leader (PRIMARY), term {}",
                r.term
            );
            self.emit(HaEvent::IsPrimary);
            self.was_connected.clear();
        } else if !is_leader && was_leader {
            crate::warn!(
                "raft",
                "this node is no longer the Raft leader (term {}); writes are refused",
                r.term
            );
            self.emit(HaEvent::IsNone);
            // As ConfD's primary that leaves the role: no SECONDARY_DIED for each follower.
            self.was_connected.clear();
        } else if !is_leader
            && self.was_leader != 0
            && self.was_leader != self.id
            && leader_now != self.was_leader
        {
            crate::warn!("raft", "lost the Raft leader {}", name(self.was_leader));
            self.emit(HaEvent::NoPrimary {
                reason: CONFD_ERR_HA_CLOSED,
            });
            self.emit(HaEvent::IsNone);
        }
        if !is_leader && leader_now != 0 && leader_now != self.was_leader {
            crate::info!(
                "raft",
                "following Raft leader {} (SECONDARY), term {}",
                name(leader_now),
                r.term
            );
            self.emit(HaEvent::SecondaryInitialized { by_copy: false });
        }
        if is_leader {
            for id in connected_set.difference(&self.was_connected.clone()) {
                self.emit(HaEvent::SecondaryArrived(ha_node(&name(*id))));
            }
            for id in self.was_connected.clone().difference(&connected_set) {
                self.emit(HaEvent::SecondaryDied(ha_node(&name(*id))));
            }
            self.was_connected = connected_set;
        }
        self.was_role = if is_leader {
            StateRole::Leader
        } else {
            StateRole::Follower
        };
        self.was_leader = if is_leader { self.id } else { leader_now };
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl RaftMode {
    fn transport(&self) -> Option<Arc<Transport>> {
        lock(&self.transport).clone()
    }

    fn status_json(&self, v: &View) -> String {
        let list = |l: &[String]| l.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(",");
        let followers = v
            .followers
            .iter()
            .map(|f| {
                format!(
                    "{{\"node\":{},\"index\":{},\"lag_entries\":{},\"lag_ms\":{},\"state\":{}}}",
                    json_str(&f.addr),
                    f.index,
                    f.lag_entries,
                    f.lag_ms,
                    json_str(f.state)
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let r = self.node.cfg.raft.as_ref();
        format!(
            "{{\"role\":{},\"node\":{},\"cluster_name\":{},\"leader\":{},\"term\":{},\"members\":[{}],\"connected_nodes\":[{}],\"current_index\":{},\"applied_index\":{},\"commit_index\":{},\"passive\":{},\"reason\":{},\"followers\":[{}]}}",
            json_str(v.role),
            json_str(&self.me),
            json_str(r.map(|r| r.cluster_name.as_str()).unwrap_or("")),
            v.leader.as_deref().map(json_str).unwrap_or_else(|| "null".into()),
            v.term,
            list(&v.members),
            list(&v.connected),
            v.current,
            v.applied,
            v.commit,
            r.is_some_and(|r| r.passive),
            v.reason.as_deref().map(json_str).unwrap_or_else(|| "null".into()),
            followers
        )
    }

    fn status_text(&self, v: &View) -> String {
        let mut o = format!(
            "role: {}{}\nnode: {}\nleader: {}\nterm: {}\nmembers: {}\nconnected nodes: {}\ncurrent index: {}\napplied index: {}\ncommit index: {}\n",
            v.role,
            v.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
            self.me,
            v.leader.as_deref().unwrap_or("none"),
            v.term,
            v.members.join(" "),
            v.connected.join(" "),
            v.current,
            v.applied,
            v.commit
        );
        for f in &v.followers {
            o.push_str(&format!(
                "follower {}: index {} lag_entries {} lag_ms {} state {}\n",
                f.addr, f.index, f.lag_entries, f.lag_ms, f.state
            ));
        }
        o
    }

    fn call(&self, a: Action, wait: Duration) -> Result<String, Refusal> {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Ev::Action(a, tx)).is_err() {
            return Err((
                CONFD_ERR_BADSTATE,
                "HA Raft is not running on this node".into(),
            ));
        }
        rx.recv_timeout(wait).map_err(|_| {
            (
                CONFD_ERR_TIMEOUT,
                "no answer from the Raft engine in time".into(),
            )
        })?
    }
}

impl Managed for RaftMode {
    fn order_refusal(&self) -> String {
        "this node is managed by HA Raft (mode = \"raft\"): external HA orders are refused; \
         use ha-ctl raft ..."
            .into()
    }

    fn check_writable(&self) -> Result<(), Refusal> {
        let v = lock(&self.view);
        if v.role == "leader" && v.lease {
            Ok(())
        } else if v.role == "leader" {
            Err((
                CONFD_ERR_NOT_WRITABLE,
                "this Raft leader has not heard from a majority within the election timeout: writes are refused".into(),
            ))
        } else {
            Err(refusal_not_leader(&v))
        }
    }

    fn commit(&self, batch: Vec<CommitReq>) {
        if let Err(std::sync::mpsc::SendError(Ev::Propose(b))) = self.tx.send(Ev::Propose(batch)) {
            for r in b {
                let _ = r.reply.send(Err((
                    CONFD_ERR_NOT_WRITABLE,
                    "HA Raft is not running on this node".into(),
                )));
            }
        }
    }

    fn read_barrier(&self) -> Result<(), Refusal> {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Ev::Read(tx)).is_err() {
            return Err((
                CONFD_ERR_NOT_WRITABLE,
                "HA Raft is not running on this node".into(),
            ));
        }
        let wait = self
            .node
            .cfg
            .raft
            .as_ref()
            .map(|r| r.storage_timeout)
            .unwrap_or(Duration::from_secs(10));
        rx.recv_timeout(wait + Duration::from_secs(1))
            .map_err(|_| {
                (
                    CONFD_ERR_NOT_WRITABLE,
                    "the read index was not confirmed in time".into(),
                )
            })?
    }

    fn ha_status(&self) -> HaReply {
        let v = lock(&self.view).clone();
        match v.role {
            "leader" => HaReply::Status {
                state: STATE_PRIMARY,
                nodes: v
                    .followers
                    .iter()
                    .filter(|f| f.state != "unreachable")
                    .map(|f| ha_node(&f.addr))
                    .collect(),
            },
            "follower" if v.leader.is_some() => HaReply::Status {
                state: STATE_SECONDARY,
                nodes: v.leader.iter().map(|l| ha_node(l)).collect(),
            },
            _ => HaReply::Status {
                state: STATE_NONE,
                nodes: vec![],
            },
        }
    }

    fn state_code(&self) -> i32 {
        let v = lock(&self.view);
        match v.role {
            "leader" => STATE_PRIMARY,
            "follower" if v.leader.is_some() => STATE_SECONDARY,
            _ => STATE_NONE,
        }
    }

    fn node_state(&self, mut base: NodeState) -> NodeState {
        let v = lock(&self.view).clone();
        base.state = self.state_code();
        base.node_id = Some(Value::Buf(self.me.as_bytes().to_vec()));
        base.secondaries.clear();
        base.primary = None;
        match v.role {
            "leader" => {
                base.secondaries = v
                    .followers
                    .iter()
                    .filter(|f| f.state != "unreachable")
                    .map(|f| PeerState {
                        node: ha_node(&f.addr),
                        last_tick_ms: f.heard.map(crate::node::unix_ms),
                        lag: Some(confd_ha::proto::data::Lag {
                            acked_seq: f.index as i64,
                            lag_txns: f.lag_entries as i64,
                            lag_ms: f.lag_ms as i64,
                            copying: f.state == "requires-snapshot",
                            full_copies: 0,
                            catch_ups: 0,
                        }),
                    })
                    .collect();
                base.last_txn_ms = None;
            }
            "follower" => {
                base.primary = v.leader.as_ref().map(|l| PeerState {
                    node: ha_node(l),
                    last_tick_ms: v.last_leader_rx.map(crate::node::unix_ms),
                    lag: None,
                });
            }
            _ => base.last_txn_ms = None,
        }
        base
    }

    fn action(&self, name: &str, args: &[String]) -> Result<String, Refusal> {
        let wait = self
            .node
            .cfg
            .raft
            .as_ref()
            .map(|r| r.storage_timeout + r.election_timeout * 4)
            .unwrap_or(Duration::from_secs(15));
        let bad = |form: &str| Err((CONFD_ERR_PROTOUSAGE, format!("usage: raft {form}")));
        let addr_ok = |a: &str| -> Result<String, Refusal> {
            a.parse::<std::net::SocketAddr>()
                .map(|s| s.to_string())
                .map_err(|_| {
                    (
                        CONFD_ERR_PROTOUSAGE,
                        format!("bad node address '{a}' (IP:PORT)"),
                    )
                })
        };
        match (name, args) {
            ("status", a) => {
                let v = lock(&self.view).clone();
                Ok(if a.first().map(String::as_str) == Some("text") {
                    self.status_text(&v)
                } else {
                    self.status_json(&v)
                })
            }
            ("create-cluster", a) => {
                let addrs = a
                    .iter()
                    .map(|x| addr_ok(x))
                    .collect::<Result<Vec<_>, _>>()?;
                self.call(Action::Create(addrs), wait)
            }
            ("adjust-membership", [op, a]) if op == "add-node" => {
                self.call(Action::Add(addr_ok(a)?), wait)
            }
            ("adjust-membership", [op, a]) if op == "remove-node" => {
                self.call(Action::Remove(addr_ok(a)?), wait)
            }
            ("adjust-membership", _) => bad("adjust-membership add-node|remove-node NODE-ADDRESS"),
            ("handover", []) => self.call(Action::Handover(None), wait),
            ("handover", [a]) => self.call(Action::Handover(Some(addr_ok(a)?)), wait),
            ("handover", _) => bad("handover [NODE-ADDRESS]"),
            ("reset", []) => self.call(Action::Reset(false), wait),
            ("reset", [f]) if f == "force" => self.call(Action::Reset(true), wait),
            ("reset", _) => bad("reset [--force]"),
            ("disconnect", [a]) => {
                let a = addr_ok(a)?;
                let n = self.transport().map(|t| t.disconnect(&a)).unwrap_or(0);
                Ok(format!(
                    "{n} connections to and from {a} closed (they reconnect when needed)"
                ))
            }
            ("disconnect", _) => bad("disconnect NODE-ADDRESS"),
            (other, _) => Err((
                CONFD_ERR_PROTOUSAGE,
                format!("unknown raft action '{other}'"),
            )),
        }
    }

    fn metrics(&self) -> Vec<crate::replication::ModeSample> {
        self.samples()
    }

    fn stop(&self) {
        let _ = self.tx.try_send(Ev::Stop);
        if let Some(t) = self.transport() {
            t.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(et_ms: u64, hb_ms: u64) -> crate::config::RaftConfig {
        crate::config::RaftConfig {
            election_timeout: Duration::from_millis(et_ms),
            heartbeat_interval: Duration::from_millis(hb_ms),
            ..Default::default()
        }
    }

    /// A follower stands within the election timeout plus margin and spread of the
    /// last heartbeat (raft-rs's default would be up to twice the election timeout), and
    /// never before the election timeout; heartbeats keep their interval.
    #[test]
    fn election_timer_is_narrow_and_above_the_election_timeout() {
        for (et, hb) in [
            (1000, 150),
            (1000, 100),
            (300, 50),
            (40, 10),
            (10_000, 15),
            (45, 11),
        ] {
            let (tick, c) = engine_config(&cfg(et, hb), 1, 0);
            c.validate().expect("valid");
            assert!(
                tick <= Duration::from_millis(RAFT_MAX_TICK_MS),
                "{et}/{hb}: {tick:?}"
            );
            let at = |ticks: usize| tick * ticks as u32;
            let et_d = Duration::from_millis(et);
            assert!(at(c.election_tick) >= et_d, "{et}/{hb}");
            assert!(at(c.election_tick) < et_d + tick, "{et}/{hb}");
            assert!(
                at(c.min_election_tick()) >= et_d + Duration::from_millis(RAFT_ELECTION_MARGIN_MS)
            );
            // raft-rs draws in [min, max): the latest is max - 1 ticks.
            let latest = at(c.max_election_tick() - 1);
            assert!(
                latest
                    <= et_d
                        + Duration::from_millis(RAFT_ELECTION_MARGIN_MS + RAFT_ELECTION_SPREAD_MS)
                        + tick * 2,
                "{et}/{hb}: {latest:?}"
            );
            let hb_d = at(c.heartbeat_tick);
            assert!(
                hb_d.abs_diff(Duration::from_millis(hb)) < Duration::from_millis(1),
                "{et}/{hb}: {hb_d:?}"
            );
        }
    }
}
