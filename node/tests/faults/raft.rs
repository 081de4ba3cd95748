//! The Raft-mode cluster of the fault suite (issue 13): N ha-node processes
//! with `mode = "raft"`, started from a config file, formed with
//! `ha-ctl raft create-cluster`, watched through `ha-ctl raft status --json`
//! and the library (node state, HA events, availability-group events); the
//! writers that follow the leader and record every acknowledged commit with
//! what the node said about its term; and the checks made after a scenario:
//! no acknowledged commit lost, never two nodes accepting writes in
//! overlapping terms, identical data everywhere, every role change seen as an
//! HA event and a `NODE_ROLE_CHANGED`.

use crate::cluster::{connect, data_client, make_node, FNode, NodeOpts, PROBE_TIMEOUT};
use crate::common::TOKEN;
use crate::net::Net;
use confd_ha::client::group::{self, GroupEvent, Role};
use confd_ha::client::{recv, send, Endpoint, Stream};
use confd_ha::proto::data::{parse_reply, DataRequest, Op};
use confd_ha::proto::ha::HaEvent;
use confd_ha::proto::hello::CLIENT_HADATA;
use confd_ha::value::Value;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// `[raft] election-timeout` of every node.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);
/// `[raft] heartbeat-interval` of every node.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(150);
/// `[raft] cluster-name`.
pub const CLUSTER_NAME: &str = "faults";
/// How long `create-cluster`, `handover` or `adjust-membership` may take.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the status poller asks every node.
pub const POLL_EVERY: Duration = Duration::from_millis(150);
/// A commit reply slower than this is given up (outcome unknown).
pub const WRITER_REPLY_TIMEOUT: Duration = Duration::from_secs(8);
/// Extra time a leader cut off from the majority may take, beyond the
/// election timeout, to stop saying it is leader (a loaded 2-core machine
/// delays both the node's timer and the poller; the issue's bound is the
/// election timeout).
pub const STEP_DOWN_SLACK: Duration = Duration::from_millis(2000);
/// How long after the second of two samples that differ in role the
/// events of that change may arrive.
pub const EVENT_SLACK: Duration = Duration::from_secs(5);

// ---- ha-ctl ------------------------------------------------------------------

/// `ha-ctl raft status --json`, as issue 13 names its fields.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RaftStatus {
    pub role: String,
    pub leader: Option<String>,
    pub term: u64,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub connected_nodes: Vec<String>,
    #[serde(default)]
    pub current_index: u64,
    #[serde(default)]
    pub applied_index: u64,
    #[serde(default)]
    pub followers: Vec<FollowerStatus>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct FollowerStatus {
    pub node: String,
    #[serde(default)]
    pub index: u64,
    #[serde(default)]
    pub lag_entries: u64,
    #[serde(default)]
    pub lag_ms: Option<u64>,
    #[serde(default)]
    pub state: String,
}

impl RaftStatus {
    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }
}

/// Runs `ha-ctl -a IP -p PORT -t TOKEN ARGS` against the node whose IPC
/// address is `ipc`, killing it after `timeout`. Ok(stdout) on exit 0.
pub fn ctl(ipc: &str, args: &[&str], timeout: Duration) -> Result<String, String> {
    let (ip, port) = ipc.rsplit_once(':').expect("IP:PORT");
    let out = std::env::temp_dir().join(format!(
        "hafr-ctl-{}-{}.out",
        std::process::id(),
        CTL_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let err = out.with_extension("err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["-a", ip, "-p", port, "-t", TOKEN])
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).map_err(|e| e.to_string())?)
        .stderr(std::fs::File::create(&err).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("ha-ctl: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let so = std::fs::read_to_string(&out).unwrap_or_default();
    let se = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    match status {
        Some(st) if st.success() => Ok(so),
        Some(st) => Err(format!("ha-ctl {}: {st}: {}", args.join(" "), se.trim())),
        None => Err(format!(
            "ha-ctl {}: no answer within {timeout:?}",
            args.join(" ")
        )),
    }
}

static CTL_SEQ: AtomicU64 = AtomicU64::new(0);

/// The node's Raft status over the data API (what `ha-ctl raft status
/// --json` prints), with [`PROBE_TIMEOUT`] as deadline.
pub fn status(ipc: &str) -> Result<RaftStatus, String> {
    let s = data_client(ipc, PROBE_TIMEOUT)?
        .raft("status", &["json"])
        .map_err(|e| format!("raft status on {ipc}: {e}"))?;
    serde_json::from_str(s.trim()).map_err(|e| format!("raft status --json: {e}: {s}"))
}

// ---- the nodes -------------------------------------------------------------

/// The `[raft]` configuration of node `me` among `addrs`.
pub fn config_text(
    addrs: &[String],
    me: usize,
    token_file: &str,
    extra: &[(&str, &str)],
) -> String {
    let seeds: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != me)
        .map(|(_, a)| format!("\"{a}\""))
        .collect();
    let mut t = format!(
        "mode = \"raft\"\n\n[raft]\ncluster-name = \"{CLUSTER_NAME}\"\nnode-address = \"{}\"\n\
         seed-nodes = [{}]\nelection-timeout = \"{}ms\"\nheartbeat-interval = \"{}ms\"\n\
         token-file = \"{token_file}\"\n",
        addrs[me],
        seeds.join(", "),
        ELECTION_TIMEOUT.as_millis(),
        HEARTBEAT_INTERVAL.as_millis()
    );
    for (k, v) in extra {
        t.push_str(&format!("{k} = {v}\n"));
    }
    t
}

/// Creates `n` Raft-mode nodes on `net` (not started); `extra` adds
/// `[raft]` keys (TOML values, e.g. `("log-max-entries", "100")`).
pub fn make_raft_nodes(net: &Net, n: usize, extra: &[(&str, &str)]) -> Vec<FNode> {
    let port = crate::cluster::ha_port(net);
    let mut nodes: Vec<FNode> = (0..n)
        .map(|i| make_node(net, i, port, &NodeOpts::default()))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(raft_addr).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        // Beside the data directory, so that emptying it keeps the config.
        let cfg = node.dir.with_extension("toml");
        let token = node.dir.with_extension("token");
        std::fs::write(&token, format!("{TOKEN}\n")).expect("write the token file");
        let text = config_text(&addrs, i, &token.display().to_string(), extra);
        std::fs::write(&cfg, text).expect("write the config");
        node.args = vec!["--config".into(), cfg.display().to_string()];
    }
    nodes
}

pub fn raft_addr(n: &FNode) -> String {
    format!("{}:{}", n.ip, n.ha_port)
}

// ---- what the poller saw ---------------------------------------------------

/// One look at one node.
#[derive(Debug, Clone)]
pub struct RSample {
    pub node: usize,
    /// The process generation (bumped on every start of the node).
    pub gen: u64,
    /// When the question was asked and when the answer came: the node said
    /// this at some moment in between.
    pub asked: Instant,
    pub answered: Instant,
    pub raft: Option<RaftStatus>,
    /// `state` of the library's node state (`confd_ha_get_status`).
    pub lib_state: Option<i32>,
}

/// One event from a node's availability-group subscription.
#[derive(Debug, Clone)]
pub struct REvent {
    pub node: usize,
    pub gen: u64,
    pub at: Instant,
    pub ev: GroupEvent,
}

/// One subscription of an event watcher: node, process generation,
/// subscribed at, ended at.
pub type Session = (usize, u64, Instant, Option<Instant>);

/// One acknowledged commit.
#[derive(Debug, Clone)]
pub struct RAck {
    pub key: String,
    pub val: String,
    pub txid: String,
    pub node: usize,
    pub gen: u64,
    pub sent: Instant,
    pub acked: Instant,
}

/// A commit answered with an error.
#[derive(Debug, Clone)]
pub struct RRefusal {
    pub node: usize,
    pub at: Instant,
    pub code: i32,
    pub reason: String,
}

/// Everything the threads of one scenario share and record.
pub struct Watch {
    pub ipc: Vec<String>,
    pub gens: Vec<AtomicU64>,
    /// Nodes the poller and the event watchers leave alone (frozen or down).
    pub quiet: Vec<AtomicBool>,
    pub samples: Mutex<Vec<RSample>>,
    pub events: Mutex<Vec<REvent>>,
    /// Subscription sessions: (node, gen, subscribed at, ended at).
    pub sessions: Mutex<Vec<Session>>,
    pub acks: Mutex<Vec<RAck>>,
    pub refusals: Mutex<Vec<RRefusal>>,
    pub unknown: AtomicU64,
    /// Which nodes each writer may send to (its side of a partition).
    pub sides: RwLock<Vec<Vec<usize>>>,
    /// The last status of each node.
    pub last: RwLock<Vec<Option<RaftStatus>>>,
    pub stop_writers: AtomicBool,
    pub stop_watch: AtomicBool,
    pub t0: Instant,
    pub notes: Mutex<Vec<(Instant, String)>>,
}

impl Watch {
    pub fn new(ipc: Vec<String>, writers: usize) -> Arc<Watch> {
        let n = ipc.len();
        Arc::new(Watch {
            gens: (0..n).map(|_| AtomicU64::new(1)).collect(),
            quiet: (0..n).map(|_| AtomicBool::new(false)).collect(),
            samples: Mutex::default(),
            events: Mutex::default(),
            sessions: Mutex::default(),
            acks: Mutex::default(),
            refusals: Mutex::default(),
            unknown: AtomicU64::new(0),
            sides: RwLock::new(vec![(0..n).collect(); writers]),
            last: RwLock::new(vec![None; n]),
            stop_writers: AtomicBool::new(false),
            stop_watch: AtomicBool::new(false),
            t0: Instant::now(),
            notes: Mutex::default(),
            ipc,
        })
    }
    pub fn note(&self, s: String) {
        self.notes.lock().unwrap().push((Instant::now(), s));
    }
    pub fn history(&self) -> String {
        self.notes
            .lock()
            .unwrap()
            .iter()
            .map(|(t, w)| format!("  {:>7.3}s {w}", (*t - self.t0).as_secs_f64()))
            .collect::<Vec<_>>()
            .join("\n")
    }
    pub fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.t0).as_secs_f64()
    }
}

/// Asks every node for its Raft status and library state every
/// [`POLL_EVERY`] until `stop_watch`.
pub fn poller(w: Arc<Watch>) {
    while !w.stop_watch.load(Ordering::SeqCst) {
        let t = Instant::now();
        std::thread::scope(|sc| {
            for i in 0..w.ipc.len() {
                let w = &w;
                sc.spawn(move || {
                    if w.quiet[i].load(Ordering::SeqCst) {
                        return;
                    }
                    let gen = w.gens[i].load(Ordering::SeqCst);
                    let asked = Instant::now();
                    let raft = status(&w.ipc[i]).ok();
                    let lib_state = data_client(&w.ipc[i], PROBE_TIMEOUT)
                        .ok()
                        .and_then(|mut c| c.node_state().ok())
                        .map(|s| s.state);
                    let answered = Instant::now();
                    if raft.is_none() && lib_state.is_none() {
                        return;
                    }
                    w.last.write().unwrap()[i] = raft.clone();
                    w.samples.lock().unwrap().push(RSample {
                        node: i,
                        gen,
                        asked,
                        answered,
                        raft,
                        lib_state,
                    });
                });
            }
        });
        std::thread::sleep(POLL_EVERY.saturating_sub(t.elapsed()));
    }
}

/// Keeps an availability-group subscription (role changes and HA events) on
/// node `i`, re-subscribing after the node restarts, until `stop_watch`.
pub fn event_watcher(w: Arc<Watch>, i: usize) {
    while !w.stop_watch.load(Ordering::SeqCst) {
        if w.quiet[i].load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let gen = w.gens[i].load(Ordering::SeqCst);
        let closed = Arc::new(AtomicBool::new(false));
        let (w2, closed2) = (w.clone(), closed.clone());
        let sub = group::subscribe(
            &Endpoint::Tcp(w.ipc[i].clone()),
            group::EVENT_ROLE_CHANGED | group::EVENT_HA_INFO,
            0,
            move |ev| {
                if matches!(ev, GroupEvent::Closed { .. }) {
                    closed2.store(true, Ordering::SeqCst);
                }
                w2.events.lock().unwrap().push(REvent {
                    node: i,
                    gen,
                    at: Instant::now(),
                    ev: ev.clone(),
                });
            },
        );
        let Ok(sub) = sub else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let session = {
            let mut s = w.sessions.lock().unwrap();
            s.push((i, gen, Instant::now(), None));
            s.len() - 1
        };
        while !w.stop_watch.load(Ordering::SeqCst)
            && !closed.load(Ordering::SeqCst)
            && w.gens[i].load(Ordering::SeqCst) == gen
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        // A frozen node does not answer: unsubscribe shuts the socket down
        // and does not wait for it.
        sub.unsubscribe();
        w.sessions.lock().unwrap()[session].3 = Some(Instant::now());
    }
}

/// The node a writer restricted to `side` sends to: the one whose last
/// status says leader with the highest term; else the one `rr` picks.
fn pick(w: &Watch, side: &[usize], rr: usize) -> usize {
    let last = w.last.read().unwrap();
    side.iter()
        .copied()
        .filter_map(|i| {
            last[i]
                .as_ref()
                .filter(|s| s.is_leader())
                .map(|s| (s.term, i))
        })
        .max()
        .map(|(_, i)| i)
        .unwrap_or(side[rr % side.len()])
}

/// Commits `/f/w<w>/k<n>` = "<tag>-<w>-<n>" one after the other to the
/// leader of its side, until `stop_writers`.
pub fn writer(w_no: usize, tag: String, w: Arc<Watch>) {
    let mut conn: Option<(usize, u64, Stream)> = None;
    let mut n: u64 = 0;
    let mut rr = w_no;
    while !w.stop_writers.load(Ordering::SeqCst) {
        let side = w.sides.read().unwrap()[w_no].clone();
        let want = pick(&w, &side, rr);
        // Keep the connection while its node is still the one to use.
        if let Some((node, gen, _)) = &conn {
            if *node != want || *gen != w.gens[*node].load(Ordering::SeqCst) {
                conn = None;
            }
        }
        let Some((node, gen, mut s)) = conn.take() else {
            if w.quiet[want].load(Ordering::SeqCst) {
                rr += 1;
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let gen = w.gens[want].load(Ordering::SeqCst);
            match connect(&w.ipc[want], CLIENT_HADATA, PROBE_TIMEOUT) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(WRITER_REPLY_TIMEOUT));
                    conn = Some((want, gen, s));
                }
                Err(_) => {
                    rr += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            continue;
        };
        n += 1;
        let key = format!("/f/w{w_no}/k{n:07}");
        let val = format!("{tag}-{w_no}-{n}");
        let req = DataRequest::Commit(vec![Op::Set(key.clone(), Value::Buf(val.clone().into()))]);
        let sent = Instant::now();
        if send(&mut s, &req.to_term()).is_err() {
            w.unknown.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match recv(&mut s).map(|t| parse_reply(&t)) {
            Ok(Some(Ok(t))) => {
                let txid = t
                    .as_binary()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                w.acks.lock().unwrap().push(RAck {
                    key,
                    val,
                    txid,
                    node,
                    gen,
                    sent,
                    acked: Instant::now(),
                });
                conn = Some((node, gen, s));
            }
            Ok(Some(Err((code, reason)))) => {
                w.refusals.lock().unwrap().push(RRefusal {
                    node,
                    at: Instant::now(),
                    code,
                    reason,
                });
                rr += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                w.unknown.fetch_add(1, Ordering::Relaxed);
                rr += 1;
            }
        }
    }
}

// ---- the checks ------------------------------------------------------------

/// The term an acknowledged commit was accepted in, as far as the samples
/// of its node tell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TermOf {
    /// Leader in term T before it was sent and still in term T after it was
    /// acknowledged: accepted in T.
    Exact(u64),
    /// Leader in T before, in term T2 > T after: accepted in T..=T2.
    Between(u64, u64),
    /// Leader in T before; nothing after (the node stopped answering).
    AtLeast(u64),
    /// No sample says it was leader before the commit was sent.
    Unknown,
}

impl TermOf {
    fn lo(self) -> Option<u64> {
        match self {
            TermOf::Exact(t) | TermOf::Between(t, _) | TermOf::AtLeast(t) => Some(t),
            TermOf::Unknown => None,
        }
    }
    fn hi(self) -> Option<u64> {
        match self {
            TermOf::Exact(t) | TermOf::Between(_, t) => Some(t),
            _ => None,
        }
    }
}

/// The term and index a commit reply carries: ha-node's Raft mode answers
/// a commit with the txid `raft-TERM-INDEX` of its log entry.
pub fn txid_term_index(txid: &str) -> Option<(u64, u64)> {
    let rest = txid.strip_prefix("raft-")?;
    let (t, i) = rest.split_once('-')?;
    Some((t.parse().ok()?, i.parse().ok()?))
}

/// The term of each ack: from its reply (txid), else from the samples.
pub fn terms_of_acks(acks: &[RAck], samples: &[RSample]) -> Vec<TermOf> {
    terms_of(acks, samples)
        .into_iter()
        .zip(acks)
        .map(|(t, a)| txid_term_index(&a.txid).map_or(t, |(term, _)| TermOf::Exact(term)))
        .collect()
}

/// Raft's log matching, from the replies: no two acknowledged commits at
/// one log index; and the term a reply carries agrees with what the node's
/// status said around the commit (when the samples pin it down).
pub fn reply_conflicts(acks: &[RAck], samples: &[RSample], names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at: HashMap<u64, &RAck> = HashMap::new();
    for a in acks {
        let Some((_, idx)) = txid_term_index(&a.txid) else {
            continue;
        };
        if let Some(b) = at.insert(idx, a) {
            if out.len() < 5 {
                out.push(format!(
                    "two commits acknowledged at log index {idx}: {} by {} ({}) and {} by {} ({})",
                    b.key, names[b.node], b.txid, a.key, names[a.node], a.txid
                ));
            }
        }
    }
    for (a, t) in acks.iter().zip(terms_of(acks, samples)) {
        if let (Some((term, _)), TermOf::Exact(st)) = (txid_term_index(&a.txid), t) {
            if term != st && out.len() < 10 {
                out.push(format!(
                    "{} acknowledged {} as {} while its status said leader in term {st} before \
                     and term {st} after",
                    names[a.node], a.key, a.txid
                ));
            }
        }
    }
    out
}

/// The term of each ack from the samples of its node and process.
pub fn terms_of(acks: &[RAck], samples: &[RSample]) -> Vec<TermOf> {
    // Per (node, gen): samples with a Raft status, by answer time.
    let mut by: HashMap<(usize, u64), Vec<&RSample>> = HashMap::new();
    for s in samples.iter().filter(|s| s.raft.is_some()) {
        by.entry((s.node, s.gen)).or_default().push(s);
    }
    for v in by.values_mut() {
        v.sort_by_key(|s| s.asked);
    }
    acks.iter()
        .map(|a| {
            let Some(v) = by.get(&(a.node, a.gen)) else {
                return TermOf::Unknown;
            };
            let before = v.iter().rev().find(|s| s.answered <= a.sent);
            let Some(b) = before
                .and_then(|s| s.raft.as_ref())
                .filter(|r| r.is_leader())
            else {
                return TermOf::Unknown;
            };
            match v.iter().find(|s| s.asked >= a.acked) {
                None => TermOf::AtLeast(b.term),
                Some(s) => {
                    let t2 = s.raft.as_ref().map_or(b.term, |r| r.term);
                    if t2 <= b.term {
                        TermOf::Exact(b.term)
                    } else {
                        TermOf::Between(b.term, t2)
                    }
                }
            }
        })
        .collect()
}

/// Never two nodes accepting writes in overlapping terms:
/// - no term in which two nodes acknowledged commits (exact terms);
/// - a node never acknowledged a commit sent after another node, in a term
///   surely newer, had acknowledged one (a deposed leader accepting writes
///   once its successor does).
pub fn overlapping_terms(
    acks: &[RAck],
    terms: &[TermOf],
    names: &[String],
    t0: Instant,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut by_term: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    for (a, t) in acks.iter().zip(terms) {
        if let TermOf::Exact(t) = t {
            by_term.entry(*t).or_default().insert(a.node);
        }
    }
    for (t, nodes) in &by_term {
        if nodes.len() > 1 {
            out.push(format!(
                "term {t}: commits acknowledged by {} nodes: {:?}",
                nodes.len(),
                nodes.iter().map(|&i| names[i].clone()).collect::<Vec<_>>()
            ));
        }
    }
    // (node, lowest possible term) -> earliest acknowledgement.
    let mut first: BTreeMap<(usize, u64), &RAck> = BTreeMap::new();
    for (a, t) in acks.iter().zip(terms) {
        if let Some(lo) = t.lo() {
            let e = first.entry((a.node, lo)).or_insert(a);
            if a.acked < e.acked {
                *e = a;
            }
        }
    }
    let mut reported = 0;
    for (a, t) in acks.iter().zip(terms) {
        let Some(hi) = t.hi() else { continue };
        for (&(node, lo), b) in &first {
            if node != a.node && lo > hi && b.acked < a.sent && reported < 5 {
                reported += 1;
                out.push(format!(
                    "{} acknowledged {} (term {t:?}, sent at {:.3}s) after {} had acknowledged \
                     {} in the newer term {lo} at {:.3}s",
                    names[a.node],
                    a.key,
                    a.sent.saturating_duration_since(t0).as_secs_f64(),
                    names[node],
                    b.key,
                    b.acked.saturating_duration_since(t0).as_secs_f64()
                ));
            }
        }
    }
    out
}

/// A minority cut off at `cut` (until `healed`): none of its nodes may
/// acknowledge a commit sent after the cut (it cannot reach a majority), and
/// a leader among them must stop saying so within the election timeout
/// (plus [`STEP_DOWN_SLACK`]).
pub fn minority_checks(
    w: &Watch,
    minority: &[usize],
    cut: Instant,
    healed: Instant,
    names: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    for a in w.acks.lock().unwrap().iter() {
        if minority.contains(&a.node) && a.sent > cut && a.sent < healed {
            out.push(format!(
                "{} (cut off in a minority at {:.3}s) acknowledged {} sent at {:.3}s",
                names[a.node],
                w.secs(cut),
                a.key,
                w.secs(a.sent)
            ));
            break;
        }
    }
    let limit = cut + ELECTION_TIMEOUT + STEP_DOWN_SLACK;
    for s in w.samples.lock().unwrap().iter() {
        if minority.contains(&s.node)
            && s.asked > limit
            && s.answered < healed
            && s.raft.as_ref().is_some_and(|r| r.is_leader())
        {
            out.push(format!(
                "{} still said leader at {:.3}s, {:.1}s after it was cut off in a minority",
                names[s.node],
                w.secs(s.asked),
                (s.asked - cut).as_secs_f64()
            ));
            break;
        }
    }
    out
}

/// Every change of a node's library role between two samples of the same
/// process shows up on its subscription: a `NODE_ROLE_CHANGED` to the new
/// role, and an HA event (IS_PRIMARY when it became PRIMARY).
pub fn unseen_role_changes(
    samples: &[RSample],
    events: &[REvent],
    sessions: &[Session],
    names: &[String],
    t0: Instant,
) -> (usize, Vec<String>) {
    let mut out = Vec::new();
    let mut checked = 0;
    let mut by: HashMap<(usize, u64), Vec<&RSample>> = HashMap::new();
    for s in samples.iter().filter(|s| s.lib_state.is_some()) {
        by.entry((s.node, s.gen)).or_default().push(s);
    }
    let mut keys: Vec<_> = by.keys().copied().collect();
    keys.sort();
    for k in keys {
        let v = by.get_mut(&k).unwrap();
        v.sort_by_key(|s| s.asked);
        for pair in v.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (ra, rb) = (
                Role::from_state(a.lib_state.unwrap()),
                Role::from_state(b.lib_state.unwrap()),
            );
            if ra == rb {
                continue;
            }
            // Only changes a subscription of this process was there for from
            // before to after (a change before it subscribed has no event on it).
            let watched = sessions.iter().any(|&(n, g, from, to)| {
                n == k.0 && g == k.1 && from <= a.asked && to.is_none_or(|t| t >= b.answered)
            });
            if !watched {
                continue;
            }
            checked += 1;
            // The change came after the first answer was being made, the
            // events after the change.
            let (from, to) = (a.asked, b.answered + EVENT_SLACK);
            let mine = |e: &&REvent| e.node == k.0 && e.gen == k.1 && e.at >= from && e.at <= to;
            let role_changed = events
                .iter()
                .filter(mine)
                .any(|e| matches!(e.ev, GroupEvent::RoleChanged { new, .. } if new == rb));
            // The HA event each change must have (issue 13, item 3):
            // IS_PRIMARY on becoming leader, NOPRIMARY or IS_NONE on losing
            // the leader, some event on leaving PRIMARY. Finding a leader
            // (NONE -> SECONDARY) has no HA event of its own in ConfD.
            let ha = events.iter().filter(mine).any(|e| match &e.ev {
                GroupEvent::Ha(h) if rb == Role::Primary => *h == HaEvent::IsPrimary,
                GroupEvent::Ha(h) if ra == Role::Secondary && rb == Role::None => {
                    matches!(h, HaEvent::NoPrimary { .. } | HaEvent::IsNone)
                }
                GroupEvent::Ha(_) => true,
                _ => false,
            }) || !(ra == Role::Primary
                || rb == Role::Primary
                || (ra == Role::Secondary && rb == Role::None));
            if !role_changed || !ha {
                out.push(format!(
                    "{} went {} -> {} between {:.3}s and {:.3}s without {}",
                    names[k.0],
                    ra.name(),
                    rb.name(),
                    (a.asked - t0).as_secs_f64(),
                    (b.answered - t0).as_secs_f64(),
                    match (role_changed, ha) {
                        (false, false) => "a NODE_ROLE_CHANGED or an HA event",
                        (false, true) => "a NODE_ROLE_CHANGED to the new role",
                        _ if rb == Role::Primary => "an IS_PRIMARY HA event",
                        _ if ra == Role::Secondary => "a NOPRIMARY or IS_NONE HA event",
                        _ => "an HA event",
                    }
                ));
                if out.len() >= 5 {
                    return (checked, out);
                }
            }
        }
    }
    (checked, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use confd_ha::proto::ha::{STATE_PRIMARY as P, STATE_SECONDARY as S};

    fn st(role: &str, term: u64) -> Option<RaftStatus> {
        Some(RaftStatus {
            role: role.into(),
            leader: None,
            term,
            members: vec![],
            connected_nodes: vec![],
            current_index: 0,
            applied_index: 0,
            followers: vec![],
        })
    }

    fn sample(t0: Instant, node: usize, ms: u64, role: &str, term: u64, lib: i32) -> RSample {
        let at = t0 + Duration::from_millis(ms);
        RSample {
            node,
            gen: 1,
            asked: at,
            answered: at + Duration::from_millis(5),
            raft: st(role, term),
            lib_state: Some(lib),
        }
    }

    fn ack(t0: Instant, node: usize, sent: u64, acked: u64, k: &str) -> RAck {
        RAck {
            key: k.into(),
            val: "v".into(),
            txid: String::new(),
            node,
            gen: 1,
            sent: t0 + Duration::from_millis(sent),
            acked: t0 + Duration::from_millis(acked),
        }
    }

    fn names() -> Vec<String> {
        vec!["n1".into(), "n2".into(), "n3".into()]
    }

    #[test]
    fn terms_come_from_the_samples_around_the_commit() {
        let t0 = Instant::now();
        let s = vec![
            sample(t0, 0, 0, "leader", 2, P),
            sample(t0, 0, 100, "leader", 2, P),
            sample(t0, 0, 200, "follower", 3, S),
        ];
        let a = vec![
            ack(t0, 0, 20, 50, "a"),
            ack(t0, 0, 120, 150, "b"),
            ack(t0, 0, 220, 250, "c"),
            ack(t0, 1, 20, 50, "d"),
        ];
        assert_eq!(
            terms_of(&a, &s),
            vec![
                TermOf::Exact(2),
                TermOf::Between(2, 3),
                TermOf::Unknown,
                TermOf::Unknown
            ]
        );
    }

    #[test]
    fn two_leaders_in_one_term_and_a_deposed_leader_writing_late_are_found() {
        let t0 = Instant::now();
        let n = names();
        // n1 leader in 2, n2 leader in 3 from 300 ms: fine as long as n1's
        // acknowledged commits were sent before n2 acknowledged anything.
        let mut s = vec![
            sample(t0, 0, 0, "leader", 2, P),
            sample(t0, 0, 1000, "leader", 2, P),
            sample(t0, 1, 300, "leader", 3, P),
            sample(t0, 1, 1000, "leader", 3, P),
        ];
        let good = vec![ack(t0, 0, 100, 200, "a"), ack(t0, 1, 400, 450, "b")];
        assert!(overlapping_terms(&good, &terms_of(&good, &s), &n, t0).is_empty());
        // n1 acknowledges a commit sent after n2's first acknowledgement.
        let late = vec![ack(t0, 1, 400, 450, "b"), ack(t0, 0, 500, 600, "a")];
        let f = overlapping_terms(&late, &terms_of(&late, &s), &n, t0);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("n1 acknowledged a"), "{f:?}");
        // Both leaders in term 2.
        s[2] = sample(t0, 1, 300, "leader", 2, P);
        s[3] = sample(t0, 1, 1000, "leader", 2, P);
        let f = overlapping_terms(&good, &terms_of(&good, &s), &n, t0);
        assert!(
            f.iter()
                .any(|e| e.contains("term 2: commits acknowledged by 2 nodes")),
            "{f:?}"
        );
    }

    #[test]
    fn role_changes_need_their_events() {
        let t0 = Instant::now();
        let n = names();
        let s = vec![
            sample(t0, 0, 100, "follower", 1, S),
            sample(t0, 0, 200, "leader", 2, P),
        ];
        let ev = |ms: u64, e: GroupEvent| REvent {
            node: 0,
            gen: 1,
            at: t0 + Duration::from_millis(ms),
            ev: e,
        };
        let sess = vec![(0, 1, t0, None)];
        let both = vec![
            ev(150, GroupEvent::Ha(HaEvent::IsPrimary)),
            ev(
                151,
                GroupEvent::RoleChanged {
                    previous: Role::Secondary,
                    new: Role::Primary,
                },
            ),
        ];
        assert_eq!(unseen_role_changes(&s, &both, &sess, &n, t0), (1, vec![]));
        let f = unseen_role_changes(&s, &both[1..], &sess, &n, t0).1;
        assert!(f[0].contains("without an IS_PRIMARY HA event"), "{f:?}");
        let f = unseen_role_changes(&s, &both[..1], &sess, &n, t0).1;
        assert!(f[0].contains("NODE_ROLE_CHANGED"), "{f:?}");
        // Not watched from before the change: not checked.
        let late = vec![(0, 1, t0 + Duration::from_millis(150), None)];
        let f = unseen_role_changes(&s, &[], &late, &n, t0).1;
        assert!(f.is_empty(), "{f:?}");
        let f = unseen_role_changes(&s, &[], &sess, &n, t0).1;
        assert!(f[0].contains("NODE_ROLE_CHANGED"), "{f:?}");
    }

    #[test]
    fn replies_carry_term_and_index() {
        let t0 = Instant::now();
        let n = names();
        assert_eq!(txid_term_index("raft-3-17"), Some((3, 17)));
        assert_eq!(txid_term_index("1-abc"), None);
        let s = vec![
            sample(t0, 0, 0, "leader", 2, P),
            sample(t0, 0, 100, "leader", 2, P),
        ];
        let mut a = ack(t0, 0, 20, 50, "a");
        a.txid = "raft-2-5".into();
        let mut b = ack(t0, 1, 20, 50, "b");
        b.txid = "raft-2-6".into();
        assert_eq!(
            terms_of_acks(&[a.clone(), b.clone()], &s),
            vec![TermOf::Exact(2), TermOf::Exact(2)]
        );
        assert!(reply_conflicts(&[a.clone(), b.clone()], &s, &n).is_empty());
        // Two nodes in term 2: an overlap, found from the replies alone.
        let both = [a.clone(), b.clone()];
        let f = overlapping_terms(&both, &terms_of_acks(&both, &s), &n, t0);
        assert!(
            f[0].contains("term 2: commits acknowledged by 2 nodes"),
            "{f:?}"
        );
        // The same index twice; a reply term the status contradicts.
        b.txid = "raft-2-5".into();
        let f = reply_conflicts(&[a.clone(), b], &s, &n);
        assert!(
            f[0].contains("two commits acknowledged at log index 5"),
            "{f:?}"
        );
        a.txid = "raft-3-7".into();
        let f = reply_conflicts(&[a], &s, &n);
        assert!(f[0].contains("status said leader in term 2"), "{f:?}");
    }

    #[test]
    fn config_names_the_other_members_as_seeds() {
        let a = vec![
            "10.0.0.2:4570".to_string(),
            "10.0.0.3:4570".into(),
            "10.0.0.4:4570".into(),
        ];
        let t = config_text(&a, 1, "/t/token", &[("log-max-entries", "100")]);
        let v: toml::Value = toml::from_str(&t).expect("valid TOML");
        assert_eq!(v["mode"].as_str(), Some("raft"));
        let r = &v["raft"];
        assert_eq!(r["node-address"].as_str(), Some("10.0.0.3:4570"));
        assert_eq!(r["seed-nodes"].as_array().unwrap().len(), 2);
        assert_eq!(r["election-timeout"].as_str(), Some("1000ms"));
        assert_eq!(r["log-max-entries"].as_integer(), Some(100));
        assert_eq!(r["token-file"].as_str(), Some("/t/token"));
    }

    #[test]
    fn status_json_parses() {
        let j = r#"{"role":"leader","leader":"127.0.0.2:4570","term":3,"members":["a","b"],
            "connected_nodes":["b"],"current_index":10,"applied_index":10,
            "followers":[{"node":"b","index":9,"lag_entries":1,"lag_ms":3,"state":"in-sync"}]}"#;
        let s: RaftStatus = serde_json::from_str(j).unwrap();
        assert!(s.is_leader());
        assert_eq!(s.followers[0].lag_entries, 1);
        let j = r#"{"role":"follower","leader":null,"term":0}"#;
        assert_eq!(serde_json::from_str::<RaftStatus>(j).unwrap().leader, None);
    }
}
