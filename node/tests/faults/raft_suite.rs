//! The Raft-mode scenarios of the fault suite (issue 13): 3- and 5-node
//! clusters in `mode = "raft"`, four writers that follow the leader (each on
//! its side of a partition), a poller of every node's Raft status and library
//! state, an availability-group subscription on every node, and faults:
//! kill -9 and SIGSTOP of the leader and of followers, a partition that
//! leaves the leader in a minority with writers on both sides, kill -9 of
//! every node, membership changes and handovers under load, and a follower
//! that falls behind past `log-max-entries` (snapshot). After each scenario
//! has healed: no acknowledged commit lost, never two nodes accepting writes
//! in overlapping terms, a cut-off leader stops acknowledging and steps down
//! within the election timeout, identical data on every member, every role
//! change seen as an HA event and a NODE_ROLE_CHANGED, no crash.
//!
//! Scenario names start with `raft3-` or `raft5-` (HA_FAULTS_ONLY=raft runs
//! only these, HA_FAULTS_ONLY=raft5 only the 5-node ones).

use crate::cluster::FNode;
use crate::load;
use crate::net::Net;
use crate::raft::{self, ctl, raft_addr, status, RaftStatus, Watch, ACTION_TIMEOUT};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writer threads (half of them on each side of a partition).
const WRITERS: usize = 4;
/// How long an election, a handover, a re-join or a catch-up may take.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster may take to be whole and equal after the last heal.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Load phases in the bounded form; the full form multiplies them by 3.
const PHASE_BOUNDED: Duration = Duration::from_millis(800);
const FULL_PHASE_FACTOR: u32 = 3;
/// A partition or a freeze lasts this long: long enough for an election and
/// for the cut-off leader to step down ([`raft::STEP_DOWN_SLACK`] included).
const OUTAGE: Duration = Duration::from_millis(4000);
/// `log-max-entries` of the snapshot scenario, and how many times that many
/// commits the stopped follower misses.
const SNAPSHOT_LOG_MAX_ENTRIES: u64 = 50;
const SNAPSHOT_MISSED_FACTOR: u64 = 4;
/// How long a node cut off in a minority may take to answer a fresh commit
/// (with a refusal).
const PROBE_COMMIT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct RCtx<'a> {
    pub nodes: Vec<FNode>,
    pub w: Arc<Watch>,
    pub net: &'a Net,
    pub names: Vec<String>,
    pub phase: Duration,
    pub faults: u32,
    /// Minorities cut off: (nodes, cut at, healed at).
    pub cuts: Vec<(Vec<usize>, Instant, Instant)>,
    pub errors: Vec<String>,
    pub notes: Vec<String>,
}

impl RCtx<'_> {
    fn n(&self) -> usize {
        self.nodes.len()
    }
    fn fault(&mut self, what: String) {
        self.faults += 1;
        self.w.note(format!("FAULT: {what}"));
    }
    fn load_for(&self, d: Duration) {
        std::thread::sleep(d);
    }
    fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("faults:   (gave up waiting {timeout:?} for {what})");
        false
    }
    /// The last status of every node (None: no answer).
    fn last(&self) -> Vec<Option<RaftStatus>> {
        self.w.last.read().unwrap().clone()
    }
    /// The node that says leader with the highest term, among `among`.
    fn leader_among(&self, among: &[usize]) -> Option<usize> {
        let last = self.last();
        among
            .iter()
            .copied()
            .filter(|&i| !self.w.quiet[i].load(Ordering::SeqCst))
            .filter_map(|i| {
                last[i]
                    .as_ref()
                    .filter(|s| s.is_leader())
                    .map(|s| (s.term, i))
            })
            .max()
            .map(|(_, i)| i)
    }
    fn all(&self) -> Vec<usize> {
        (0..self.n()).collect()
    }
    /// The current leader (waits for one).
    pub fn leader(&mut self) -> usize {
        let all = self.all();
        let mut l = None;
        self.wait("a leader", CONVERGE_TIMEOUT, |c| {
            l = c.leader_among(&all);
            l.is_some()
        });
        l.unwrap_or_else(|| panic!("no leader within {CONVERGE_TIMEOUT:?}"))
    }
    fn followers(&mut self) -> Vec<usize> {
        let l = self.leader();
        (0..self.n()).filter(|&i| i != l).collect()
    }
    /// Waits for a leader other than the nodes in `not`; records how long
    /// it took from `since`.
    fn wait_new_leader(&mut self, not: &[usize], since: Instant) -> Option<usize> {
        let others: Vec<usize> = (0..self.n()).filter(|i| !not.contains(i)).collect();
        let mut l = None;
        let ok = self.wait("a new leader", CONVERGE_TIMEOUT, |c| {
            l = c.leader_among(&others);
            l.is_some()
        });
        if !ok {
            self.errors.push(format!(
                "no new leader among {:?} within {CONVERGE_TIMEOUT:?}",
                others
                    .iter()
                    .map(|&i| self.names[i].clone())
                    .collect::<Vec<_>>()
            ));
            return None;
        }
        let l = l.expect("a leader");
        self.w.note(format!(
            "{} is leader {:.0} ms after the fault",
            self.names[l],
            since.elapsed().as_secs_f64() * 1e3
        ));
        Some(l)
    }
    fn kill9(&mut self, i: usize) {
        self.w.quiet[i].store(true, Ordering::SeqCst);
        self.nodes[i].kill9();
        self.fault(format!("kill -9 {}", self.names[i]));
    }
    fn restart(&mut self, i: usize) {
        self.w.gens[i].fetch_add(1, Ordering::SeqCst);
        self.w.last.write().unwrap()[i] = None;
        self.nodes[i].spawn();
        self.w.quiet[i].store(false, Ordering::SeqCst);
        self.w.note(format!("restarted {}", self.names[i]));
    }
    fn freeze(&mut self, i: usize) {
        self.w.quiet[i].store(true, Ordering::SeqCst);
        self.nodes[i].freeze();
        // SIGSTOP is asynchronous (a thread in an fsync stops when it
        // returns): the freeze starts when the process is seen stopped.
        if let Some(pid) = self.nodes[i].pid() {
            let stat = format!("/proc/{pid}/stat");
            let stopped = || {
                std::fs::read_to_string(&stat)
                    .is_ok_and(|t| t.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('T')))
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while !stopped() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        self.fault(format!("SIGSTOP {}", self.names[i]));
    }
    fn thaw(&mut self, i: usize) {
        self.nodes[i].thaw();
        self.w.quiet[i].store(false, Ordering::SeqCst);
        self.w.note(format!("SIGCONT {}", self.names[i]));
    }
    /// Cuts `minority` off from the other nodes (netns: both directions,
    /// clients still reach every node; the writers split in two, each half
    /// writing to its side). Loopback: the majority is frozen instead (the
    /// minority's writers only).
    fn partition(&mut self, minority: &[usize]) -> Instant {
        let majority: Vec<usize> = (0..self.n()).filter(|i| !minority.contains(i)).collect();
        let all_names = self.names.clone();
        let names = |v: &[usize]| v.iter().map(|&i| all_names[i].clone()).collect::<Vec<_>>();
        match self.net.netns() {
            Some(ns) => {
                {
                    let mut sides = self.w.sides.write().unwrap();
                    for (k, s) in sides.iter_mut().enumerate() {
                        *s = if k < WRITERS / 2 {
                            minority.to_vec()
                        } else {
                            majority.clone()
                        };
                    }
                }
                for &a in minority {
                    for &b in &majority {
                        ns.block(a, b);
                        ns.block(b, a);
                    }
                }
                self.fault(format!(
                    "partition {:?} | {:?} (writers on both sides)",
                    names(minority),
                    names(&majority)
                ));
            }
            None => {
                *self.w.sides.write().unwrap() = vec![minority.to_vec(); WRITERS];
                for &b in &majority {
                    self.freeze(b);
                }
                self.fault(format!(
                    "loopback: {:?} frozen, {:?} alone with the writers",
                    names(&majority),
                    names(minority)
                ));
            }
        }
        Instant::now()
    }
    fn heal(&mut self, minority: &[usize], cut: Instant) {
        match self.net.netns() {
            Some(ns) => ns.heal_all(),
            None => {
                for i in 0..self.n() {
                    if self.nodes[i].frozen {
                        self.thaw(i);
                    }
                }
            }
        }
        let healed = Instant::now();
        let all = self.all();
        *self.w.sides.write().unwrap() = vec![all; WRITERS];
        self.w.note("partition healed".into());
        self.cuts.push((minority.to_vec(), cut, healed));
    }
    /// A fresh client's commit on node `i` (cut off in a minority for longer
    /// than the election timeout) must be refused at once: not acknowledged,
    /// and not left hanging.
    fn probe_refuses(&mut self, i: usize) {
        let name = self.names[i].clone();
        let mut c = match crate::cluster::data_client(&self.nodes[i].ipc, PROBE_COMMIT_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                self.errors
                    .push(format!("{name} (cut off) does not take a client: {e}"));
                return;
            }
        };
        let mut txn = confd_ha::client::data::Txn::new();
        txn.set(
            &format!("/probe/{name}"),
            confd_ha::value::Value::Buf(b"p".to_vec()),
        );
        let t = Instant::now();
        match c.commit(&txn) {
            Ok(txid) => self.errors.push(format!(
                "{name}, cut off in a minority, acknowledged a commit (txid {txid})"
            )),
            Err(e @ confd_ha::error::Error::Remote { .. }) => self.w.note(format!(
                "{name} (cut off) refused a fresh commit in {:.0} ms: {e}",
                t.elapsed().as_secs_f64() * 1e3
            )),
            Err(e) => self.errors.push(format!(
                "{name}, cut off in a minority, neither refused nor acknowledged a commit within \
                 {PROBE_COMMIT_TIMEOUT:?}: {e}"
            )),
        }
    }
    /// Waits until node `i` follows the leader and has applied what the
    /// leader had applied when this was called.
    fn wait_caught_up(&mut self, i: usize) {
        let l = self.leader();
        let target = self.last()[l].as_ref().map_or(0, |s| s.applied_index);
        let name = self.names[i].clone();
        let ok = self.wait(&format!("{name} to catch up"), CONVERGE_TIMEOUT, |c| {
            // A follower of a leader, or the leader itself (a leader cut
            // off from frozen nodes may be elected again once they thaw).
            c.last()[i].as_ref().is_some_and(|s| {
                (s.role == "leader" || s.role == "follower" && s.leader.is_some())
                    && s.applied_index >= target
            })
        });
        if !ok {
            self.errors.push(format!(
                "{name} did not follow and catch up to index {target} within {CONVERGE_TIMEOUT:?} \
                 (its status: {:?})",
                self.last()[i]
            ));
        }
    }
    /// One Raft action on node `i`.
    fn action(&mut self, i: usize, args: &[&str]) -> Result<String, String> {
        let r = ctl(&self.nodes[i].ipc, args, ACTION_TIMEOUT);
        self.w.note(format!(
            "ha-ctl {} on {}: {}",
            args.join(" "),
            self.names[i],
            match &r {
                Ok(s) => format!("ok {}", s.trim()),
                Err(e) => e.clone(),
            }
        ));
        r
    }
    /// Whether the cluster is whole: one leader, every other node its
    /// follower, all members, everyone at the same applied index.
    fn settled(&self) -> Result<usize, String> {
        let st: Vec<Option<RaftStatus>> = self.nodes.iter().map(|n| status(&n.ipc).ok()).collect();
        let leaders: Vec<usize> = (0..self.n())
            .filter(|&i| st[i].as_ref().is_some_and(|s| s.is_leader()))
            .collect();
        let [l] = leaders[..] else {
            return Err(format!("leaders: {leaders:?}"));
        };
        let ls = st[l].as_ref().expect("leader");
        let laddr = raft_addr(&self.nodes[l]);
        if ls.members.len() != self.n() {
            return Err(format!("the leader lists members {:?}", ls.members));
        }
        for (i, s) in st.iter().enumerate() {
            let s = s
                .as_ref()
                .ok_or_else(|| format!("{} does not answer", self.names[i]))?;
            if i != l && (s.role != "follower" || s.leader.as_deref() != Some(laddr.as_str())) {
                return Err(format!(
                    "{} is {} with leader {:?}",
                    self.names[i], s.role, s.leader
                ));
            }
            if s.applied_index != ls.applied_index {
                return Err(format!(
                    "{} applied {}, the leader {}",
                    self.names[i], s.applied_index, ls.applied_index
                ));
            }
        }
        Ok(l)
    }
}

// ---- the scenarios ---------------------------------------------------------

fn kill9_leader(c: &mut RCtx) {
    let l = c.leader();
    c.kill9(l);
    let t = Instant::now();
    c.wait_new_leader(&[l], t);
    c.load_for(c.phase);
    c.restart(l);
    c.wait_caught_up(l);
}

fn kill9_follower(c: &mut RCtx) {
    let f = c.followers()[0];
    c.kill9(f);
    c.load_for(c.phase);
    c.restart(f);
    c.wait_caught_up(f);
}

/// The leader is frozen: the others elect a new one; thawed, it must find
/// itself deposed (its stale writers' commits refused or in the log).
fn freeze_leader(c: &mut RCtx) {
    let l = c.leader();
    c.freeze(l);
    let t = Instant::now();
    c.wait_new_leader(&[l], t);
    c.load_for(c.phase);
    c.thaw(l);
    c.wait_caught_up(l);
}

fn freeze_follower(c: &mut RCtx) {
    let f = *c.followers().last().expect("a follower");
    c.freeze(f);
    c.load_for(OUTAGE);
    c.thaw(f);
    c.wait_caught_up(f);
}

/// The leader (with one follower, of 5) is cut off in a minority; writers
/// keep writing on both sides; the minority must stop acknowledging, the
/// majority elects a new leader and goes on.
fn partition_leader(c: &mut RCtx) {
    let l = c.leader();
    let mut minority = vec![l];
    if c.n() >= 5 {
        minority.push(c.followers()[0]);
    }
    let cut = c.partition(&minority);
    if c.net.netns().is_some() {
        c.wait_new_leader(&minority, cut);
    }
    c.load_for(OUTAGE);
    for &i in &minority {
        c.probe_refuses(i);
    }
    c.heal(&minority, cut);
    for &i in &minority {
        c.wait_caught_up(i);
    }
}

/// A follower is cut off alone (a minority without the leader), then heals.
fn partition_follower(c: &mut RCtx) {
    let f = c.followers()[0];
    let cut = c.partition(&[f]);
    c.load_for(OUTAGE);
    c.probe_refuses(f);
    c.heal(&[f], cut);
    c.wait_caught_up(f);
}

/// kill -9 of every node, then every node restarted: the cluster re-forms
/// from what each has durable (no create-cluster). Under load a store applies without a
/// sync of its own, so it comes back behind its Raft log, which re-applies the rest (the
/// note counts the nodes that did; the end checks find any acknowledged commit lost).
fn restart_all(c: &mut RCtx) {
    let from: Vec<usize> = (0..c.n()).map(|i| c.nodes[i].log_text().len()).collect();
    for i in 0..c.n() {
        c.kill9(i);
    }
    c.load_for(Duration::from_millis(300));
    for i in 0..c.n() {
        c.restart(i);
    }
    let t = Instant::now();
    c.wait_new_leader(&[], t);
    c.load_for(c.phase);
    let behind = (0..c.n())
        .filter(|&i| {
            c.nodes[i]
                .log_text()
                .get(from[i]..)
                .is_some_and(|t| t.contains("applied again from the Raft log"))
        })
        .count();
    c.notes.push(format!(
        "{behind} of {} stores came back behind their Raft log and re-applied from it",
        c.n()
    ));
}

/// A follower removed from the cluster under load, then added back.
fn membership(c: &mut RCtx) {
    let l = c.leader();
    let f = *c.followers().last().expect("a follower");
    let addr = raft_addr(&c.nodes[f]);
    c.fault(format!(
        "adjust-membership remove-node {} under load",
        c.names[f]
    ));
    if let Err(e) = c.action(l, &["raft", "adjust-membership", "remove-node", &addr]) {
        c.errors.push(format!("remove-node: {e}"));
        return;
    }
    let n = c.n();
    let gone = c.wait("the removal", CONVERGE_TIMEOUT, |c| {
        let l = c.leader_among(&(0..n).collect::<Vec<_>>());
        l.and_then(|l| c.last()[l].clone())
            .is_some_and(|s| s.members.len() == n - 1 && !s.members.contains(&addr))
    });
    if !gone {
        c.errors
            .push(format!("{} still a member after remove-node", c.names[f]));
    }
    c.load_for(c.phase);
    let l = c.leader();
    c.fault(format!(
        "adjust-membership add-node {} under load",
        c.names[f]
    ));
    if let Err(e) = c.action(l, &["raft", "adjust-membership", "add-node", &addr]) {
        c.errors.push(format!("add-node: {e}"));
        return;
    }
    c.wait_caught_up(f);
}

/// Two handovers under load: to a follower, then back.
fn handover(c: &mut RCtx) {
    let first = c.leader();
    for k in 0..2 {
        c.load_for(c.phase);
        let l = c.leader();
        let to = if k == 0 { c.followers()[0] } else { first };
        let addr = raft_addr(&c.nodes[to]);
        c.fault(format!(
            "handover {} -> {} under load",
            c.names[l], c.names[to]
        ));
        if let Err(e) = c.action(l, &["raft", "handover", &addr]) {
            c.errors.push(format!("handover: {e}"));
            return;
        }
        let all = c.all();
        let ok = c.wait("the handover", CONVERGE_TIMEOUT, |c| {
            c.leader_among(&all) == Some(to)
        });
        if !ok {
            c.errors.push(format!(
                "{} is not leader {CONVERGE_TIMEOUT:?} after the handover",
                c.names[to]
            ));
        }
        c.wait_caught_up(l);
    }
}

/// A follower stopped while the leader commits several times
/// `log-max-entries`: it must be caught up by a snapshot.
fn snapshot(c: &mut RCtx) {
    let f = *c.followers().last().expect("a follower");
    c.kill9(f);
    let l = c.leader();
    let start = c.last()[l].as_ref().map_or(0, |s| s.current_index);
    let want = start + SNAPSHOT_LOG_MAX_ENTRIES * SNAPSHOT_MISSED_FACTOR;
    let n = c.n();
    let ok = c.wait(
        "the leader to move past the log limit",
        CONVERGE_TIMEOUT,
        |c| {
            c.leader_among(&(0..n).collect::<Vec<_>>())
                .and_then(|l| c.last()[l].clone())
                .is_some_and(|s| s.current_index >= want)
        },
    );
    if !ok {
        c.errors.push(format!(
            "the leader did not reach index {want} (from {start}) within {CONVERGE_TIMEOUT:?}"
        ));
    }
    let log_from = c.nodes[f].log_text().len();
    c.restart(f);
    c.wait_caught_up(f);
    let addr = raft_addr(&c.nodes[f]);
    let seen = c.w.samples.lock().unwrap().iter().any(|s| {
        s.raft.as_ref().is_some_and(|r| {
            r.followers
                .iter()
                .any(|x| x.node == addr && x.state == "requires-snapshot")
        })
    });
    let log = c.nodes[f].log_text();
    let installed = log
        .get(log_from..)
        .is_some_and(|t| t.contains("installed a snapshot"));
    if !installed {
        c.errors.push(format!(
            "{} missed {} entries (log-max-entries {SNAPSHOT_LOG_MAX_ENTRIES}) but its log \
             says no snapshot was installed after its restart",
            c.names[f],
            want - start
        ));
    }
    c.notes.push(format!(
        "{}: snapshot installed {}; state requires-snapshot {}seen in the leader's status",
        c.names[f],
        if installed { "yes" } else { "NO" },
        if seen { "" } else { "not " }
    ));
}

// ---- the catalog -----------------------------------------------------------

pub struct RScenario {
    pub name: &'static str,
    pub run: fn(&mut RCtx),
    /// Cluster sizes the full form runs.
    pub sizes: &'static [usize],
    /// Cluster sizes the bounded form (`make check`) runs.
    pub bounded: &'static [usize],
    /// Extra `[raft]` keys.
    pub extra: &'static [(&'static str, &'static str)],
}

const SNAP: &[(&str, &str)] = &[("log-max-entries", "50")];

#[rustfmt::skip]
pub const CATALOG: &[RScenario] = &[
    RScenario { name: "kill9-leader", run: kill9_leader, sizes: &[3, 5], bounded: &[3], extra: &[] },
    RScenario { name: "kill9-follower", run: kill9_follower, sizes: &[3, 5], bounded: &[], extra: &[] },
    RScenario { name: "freeze-leader", run: freeze_leader, sizes: &[3, 5], bounded: &[5], extra: &[] },
    RScenario { name: "freeze-follower", run: freeze_follower, sizes: &[3, 5], bounded: &[], extra: &[] },
    RScenario { name: "partition-leader", run: partition_leader, sizes: &[3, 5], bounded: &[3], extra: &[] },
    RScenario { name: "partition-follower", run: partition_follower, sizes: &[3, 5], bounded: &[], extra: &[] },
    RScenario { name: "restart-all", run: restart_all, sizes: &[3, 5], bounded: &[3], extra: SNAP },
    RScenario { name: "membership", run: membership, sizes: &[3, 5], bounded: &[3], extra: &[] },
    RScenario { name: "handover", run: handover, sizes: &[3, 5], bounded: &[3], extra: &[] },
    RScenario { name: "snapshot", run: snapshot, sizes: &[3, 5], bounded: &[3], extra: SNAP },
];

// ---- one run ---------------------------------------------------------------

#[derive(Default)]
pub struct ROutcome {
    pub acked: usize,
    pub lost: usize,
    pub refused: usize,
    pub unknown: u64,
    pub overlaps: usize,
    pub faults: u32,
    pub errors: Vec<String>,
    pub notes: Vec<String>,
}

fn run_one(sc: &RScenario, n: usize, it: u32, net: &Net, phase: Duration) -> ROutcome {
    let mut nodes = raft::make_raft_nodes(net, n, sc.extra);
    for node in nodes.iter_mut() {
        node.spawn();
    }
    let names: Vec<String> = nodes.iter().map(|x| x.name.clone()).collect();
    let ipc: Vec<String> = nodes.iter().map(|x| x.ipc.clone()).collect();
    // Each iteration starts on another node.
    let p0 = it as usize % n;
    let others: Vec<String> = (0..n)
        .filter(|&i| i != p0)
        .map(|i| raft_addr(&nodes[i]))
        .collect();
    let mut args = vec!["raft", "create-cluster"];
    args.extend(others.iter().map(String::as_str));
    ctl(&nodes[p0].ipc, &args, ACTION_TIMEOUT)
        .unwrap_or_else(|e| panic!("create-cluster on {}: {e}", names[p0]));
    let w = Watch::new(ipc.clone(), WRITERS);
    w.note(format!("create-cluster on {} ok", names[p0]));
    let tag = format!("raft{n}-{}-i{it}", sc.name);
    let mut threads = Vec::new();
    {
        let w = w.clone();
        threads.push(std::thread::spawn(move || raft::poller(w)));
    }
    for i in 0..n {
        let w = w.clone();
        threads.push(std::thread::spawn(move || raft::event_watcher(w, i)));
    }
    let mut c = RCtx {
        nodes,
        w: w.clone(),
        net,
        names: names.clone(),
        phase,
        faults: 0,
        cuts: Vec::new(),
        errors: Vec::new(),
        notes: Vec::new(),
    };
    // A whole cluster before the load starts.
    let whole = c.wait("the cluster to form", Duration::from_secs(60), |c| {
        c.settled().is_ok()
    });
    if !whole {
        panic!(
            "the cluster did not form: {}",
            c.settled().err().unwrap_or_default()
        );
    }
    let mut writers = Vec::new();
    for k in 0..WRITERS {
        let (w, tag) = (w.clone(), tag.clone());
        writers.push(std::thread::spawn(move || raft::writer(k, tag, w)));
    }
    c.load_for(phase);
    (sc.run)(&mut c);
    // Heal whatever is left, restart what is down, let the load run, settle.
    if let Some(ns) = net.netns() {
        ns.heal_all();
    }
    for i in 0..n {
        if c.nodes[i].frozen {
            c.thaw(i);
        }
        if let Some(st) = c.nodes[i].exited() {
            if !c.nodes[i].expected_exit {
                let name = c.names[i].clone();
                c.errors.push(format!("{name} exited by itself ({st})"));
            }
        }
        if !c.nodes[i].running() {
            c.restart(i);
        }
    }
    c.load_for(phase);
    w.stop_writers.store(true, Ordering::SeqCst);
    for h in writers {
        let _ = h.join();
    }
    let mut leader = None;
    let settled = c.wait("the cluster to settle", SETTLE_TIMEOUT, |c| {
        leader = c.settled().ok();
        leader.is_some()
    });
    if !settled {
        let why = c.settled().err().unwrap_or_default();
        c.errors.push(format!("the cluster did not settle: {why}"));
    }
    // Let the watchers see the last changes, then stop them.
    std::thread::sleep(Duration::from_millis(500));
    w.stop_watch.store(true, Ordering::SeqCst);
    for h in threads {
        let _ = h.join();
    }
    let mut o = verify(&mut c, leader);
    o.faults = c.faults;
    o.errors.append(&mut c.errors);
    o.notes.append(&mut c.notes);
    let verbose = std::env::var("HA_FAULTS_VERBOSE").is_ok_and(|v| v == "1");
    if !o.errors.is_empty() || verbose {
        eprintln!("faults: what happened:\n{}", w.history());
        let refusals = w.refusals.lock().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for r in refusals.iter() {
            if seen.insert((r.node, r.code, r.reason.clone())) {
                eprintln!(
                    "  {:>7.3}s refusal by {}: {} '{}'",
                    w.secs(r.at),
                    names[r.node],
                    r.code,
                    r.reason
                );
            }
        }
    }
    if !o.errors.is_empty() {
        for x in &c.nodes {
            eprintln!(
                "---- last lines of {}'s log ----\n{}",
                x.name,
                x.log_tail(30)
            );
        }
    }
    o
}

/// The guarantees, once everything has healed.
fn verify(c: &mut RCtx, leader: Option<usize>) -> ROutcome {
    let w = c.w.clone();
    let mut o = ROutcome {
        refused: w.refusals.lock().unwrap().len(),
        unknown: w.unknown.load(Ordering::SeqCst),
        ..ROutcome::default()
    };
    for x in c.nodes.iter_mut() {
        if x.exited().is_some() && !x.expected_exit {
            o.errors.push(format!("{} exited", x.name));
        }
        if x.log_text().contains("panicked") {
            o.errors.push(format!("{} panicked (see its log)", x.name));
        }
    }
    let names = c.names.clone();
    // Identical data on every member.
    let dumps: Vec<_> = c.nodes.iter().map(|x| load::dump(&x.ipc)).collect();
    let l = leader.unwrap_or(0);
    let reference = match &dumps[l] {
        Ok(d) => d.clone(),
        Err(e) => {
            o.errors
                .push(format!("cannot read {}'s data: {e}", names[l]));
            return o;
        }
    };
    for (i, d) in dumps.iter().enumerate() {
        match d {
            Err(e) => o
                .errors
                .push(format!("cannot read {}'s data: {e}", names[i])),
            Ok(d) if i != l => {
                let df = load::diff(&reference, d, 5);
                if !df.is_empty() {
                    o.errors.push(format!(
                        "{} and {} differ after the heal: {df:?}",
                        names[l], names[i]
                    ));
                }
            }
            _ => {}
        }
    }
    // Zero acknowledged commits lost.
    let acks = w.acks.lock().unwrap().clone();
    o.acked = acks.len();
    let mut examples = Vec::new();
    for a in &acks {
        let want = confd_ha::value::Value::Buf(a.val.clone().into_bytes());
        if reference.get(&a.key) != Some(&want) {
            o.lost += 1;
            if examples.len() < 5 {
                examples.push(format!(
                    "{} = {} (txid {}, acknowledged by {} at {:.3}s, sent at {:.3}s; now {:?})",
                    a.key,
                    a.val,
                    a.txid,
                    names[a.node],
                    w.secs(a.acked),
                    w.secs(a.sent),
                    reference.get(&a.key)
                ));
            }
        }
    }
    if o.lost > 0 {
        o.errors.push(format!(
            "{} acknowledged commits lost, e.g. {examples:#?}",
            o.lost
        ));
    }
    // Never two nodes accepting writes in overlapping terms.
    let samples = w.samples.lock().unwrap().clone();
    let terms = raft::terms_of_acks(&acks, &samples);
    for e in raft::reply_conflicts(&acks, &samples, &names) {
        o.errors.push(format!("replies: {e}"));
    }
    let unknown_terms = terms
        .iter()
        .filter(|t| matches!(t, raft::TermOf::Unknown))
        .count();
    let ov = raft::overlapping_terms(&acks, &terms, &names, w.t0);
    o.overlaps = ov.len();
    for e in ov {
        o.errors.push(format!("overlapping terms: {e}"));
    }
    if unknown_terms > 0 {
        o.notes.push(format!(
            "{unknown_terms} of {} acknowledged commits with neither a term in the reply nor a \
             status sample of their node as leader before them (not checked for overlap)",
            acks.len()
        ));
    }
    // A cut-off minority stops acknowledging and its leader steps down.
    for (minority, cut, healed) in &c.cuts {
        o.errors
            .extend(raft::minority_checks(&w, minority, *cut, *healed, &names));
        let refusals = w.refusals.lock().unwrap();
        let mine: Vec<_> = refusals
            .iter()
            .filter(|r| minority.contains(&r.node) && r.at > *cut && r.at < *healed)
            .collect();
        o.notes.push(format!(
            "the cut-off minority refused {} commits{}",
            mine.len(),
            mine.first()
                .map(|r| format!(
                    " (first at +{:.0} ms: {} '{}')",
                    (r.at - *cut).as_secs_f64() * 1e3,
                    r.code,
                    r.reason
                ))
                .unwrap_or_default()
        ));
    }
    // Every role change seen as events.
    let events = w.events.lock().unwrap().clone();
    let sessions = w.sessions.lock().unwrap().clone();
    let (checked, unseen) = raft::unseen_role_changes(&samples, &events, &sessions, &names, w.t0);
    for e in unseen {
        o.errors.push(format!("events: {e}"));
    }
    o.notes.push(format!(
        "{checked} role changes sampled, each checked for its HA and NODE_ROLE_CHANGED events; \
         {} HA / availability-group events in all",
        events.len()
    ));
    o
}

// ---- the suite -------------------------------------------------------------

/// Whether this build has Raft mode (its `ha-ctl` knows `raft create-cluster`).
fn raft_present() -> bool {
    std::process::Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .arg("--help")
        .output()
        .map(|o| {
            let t = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            t.contains("create-cluster")
        })
        .unwrap_or(false)
}

/// Runs the Raft scenarios; returns the failures (empty: all passed).
pub fn run() -> Vec<String> {
    let form = std::env::var("HA_FAULTS").unwrap_or_default();
    let full = match form.as_str() {
        "full" => true,
        "bounded" => false,
        _ => return Vec::new(),
    };
    let only = std::env::var("HA_FAULTS_ONLY").unwrap_or_default();
    let selected = |name: &str| only.is_empty() || name.contains(only.as_str());
    let runs: Vec<(&RScenario, usize)> = CATALOG
        .iter()
        .flat_map(|sc| {
            let sizes = if full { sc.sizes } else { sc.bounded };
            sizes.iter().map(move |&n| (sc, n))
        })
        .filter(|(sc, n)| selected(&format!("raft{n}-{}", sc.name)))
        .collect();
    if runs.is_empty() {
        return Vec::new();
    }
    if !raft_present() {
        println!("################################################################");
        println!(
            "faults: raft: {} scenario(s) SKIPPED: this build has no Raft mode",
            runs.len()
        );
        println!("################################################################");
        return Vec::new();
    }
    let iterations = if full {
        std::env::var("HA_FAULTS_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
    } else {
        1
    };
    let max_n = runs.iter().map(|(_, n)| *n).max().unwrap_or(3);
    let (net, desc) = Net::choose(max_n);
    println!(
        "faults: raft: {} form, {iterations} iteration(s); network: {desc}; election-timeout \
         {:?}, heartbeat-interval {:?}",
        if full { "full" } else { "bounded" },
        raft::ELECTION_TIMEOUT,
        raft::HEARTBEAT_INTERVAL
    );
    let t0 = Instant::now();
    let (mut count, mut faults, mut acked, mut lost, mut overlaps) =
        (0u32, 0u32, 0usize, 0usize, 0usize);
    let mut failed = Vec::new();
    for it in 0..iterations {
        for (sc, n) in &runs {
            let label = format!("raft{n}-{}", sc.name);
            let phase = if full {
                PHASE_BOUNDED * FULL_PHASE_FACTOR * (4 + it % 3) / 4
            } else {
                PHASE_BOUNDED
            };
            let t = Instant::now();
            let o = net.guarded(
                || run_one(sc, *n, it, &net, phase),
                |msg| ROutcome {
                    errors: vec![format!("the run panicked: {msg}")],
                    ..ROutcome::default()
                },
            );
            count += 1;
            faults += o.faults;
            acked += o.acked;
            lost += o.lost;
            overlaps += o.overlaps;
            println!(
                "faults: [{it}] {label}: {} faults, {} acknowledged, {} refused, {} unknown, {} \
                 lost, {} term overlaps, {:.1}s{}",
                o.faults,
                o.acked,
                o.refused,
                o.unknown,
                o.lost,
                o.overlaps,
                t.elapsed().as_secs_f64(),
                if o.errors.is_empty() { "" } else { "  FAILED" }
            );
            for x in &o.notes {
                println!("faults:     note: {x}");
            }
            for e in &o.errors {
                println!("faults:     FAIL: {e}");
            }
            if !o.errors.is_empty() {
                failed.push(format!("[{it}] {label}: {}", o.errors.join("; ")));
            }
        }
    }
    drop(net);
    println!("faults: raft: took {:.0}s", t0.elapsed().as_secs_f64());
    println!(
        "faults: raft: {count} runs, {faults} faults, {acked} acknowledged, {lost} lost, \
         {overlaps} term overlaps, {} failed",
        failed.len()
    );
    failed
}
