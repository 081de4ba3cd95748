//! The scenarios (one function each, run on a healthy, loaded cluster; the
//! suite heals and checks afterwards) and the catalog of what each needs.

use crate::cluster::{free_bytes, FNode};
use crate::framework::{Framework, Shared};
use crate::load::Load;
use crate::net::Net;
use confd_ha::proto::ha::STATE_SECONDARY;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Nodes in the cluster.
pub const NODES: usize = 3;
/// How long a failover, a demotion or a re-join may take.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node given a damaged store may take to refuse to start.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);
/// Freezes and partitions last at least this long (more than 3 ticks).
const OUTAGE_MIN: Duration = Duration::from_millis(1500);

/// What a scenario needs from the product or the machine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Need {
    /// `--min-secondaries` (and, with it, the safety fixes of issue 9).
    MinSecondaries,
    /// `--on-store-error` (storage faults fail-stop the role).
    StoreErrors,
    /// Rollback files (`ha-ctl rollback`).
    Rollback,
    /// strace with syscall fault injection (tool).
    Strace,
    /// Mounting a tmpfs (root, and a machine that allows it).
    Tmpfs,
    /// Network namespaces with tc netem, for loss and delay (machine).
    Netem,
    /// Network namespaces (machine; loopback has other scenarios for it).
    Netns,
}

// ---- the scenario context --------------------------------------------------

/// One running scenario: its nodes, framework, load and findings.
pub struct Ctx<'a> {
    pub nodes: Vec<FNode>,
    pub fw: Arc<Mutex<Framework>>,
    pub shared: Arc<Shared>,
    pub load: Arc<Load>,
    pub net: &'a Net,
    pub ms: u32,
    pub phase: Duration,
    pub faults: u32,
    /// Primaries this scenario killed, froze, cut off or broke: with
    /// min-secondaries 0, what they acknowledged may be discarded on re-join
    /// (split brain, or a lone primary), but only into a rollback file.
    pub faulted_primaries: Vec<usize>,
    /// Findings that fail the scenario.
    pub errors: Vec<String>,
    /// Things worth printing that are not failures.
    pub notes: Vec<String>,
    pub started: Instant,
    /// The node whose data directory is a tmpfs.
    pub tmpfs_node: Option<usize>,
}

impl Ctx<'_> {
    pub fn primary(&self) -> usize {
        self.fw.lock().unwrap().primary
    }
    fn secondaries(&self) -> Vec<usize> {
        let p = self.primary();
        (0..NODES).filter(|&i| i != p).collect()
    }
    /// Lets the writers run (load, not synchronisation).
    pub fn load_for(&self, d: Duration) {
        std::thread::sleep(d);
    }
    fn outage(&self) -> Duration {
        self.phase.max(OUTAGE_MIN)
    }
    pub fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Self) -> bool) -> bool {
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
    fn wait_failover_from(&mut self, old: usize) -> bool {
        let ok = self.wait("the framework to fail over", FAILOVER_TIMEOUT, |c| {
            c.fw.lock().unwrap().primary != old && c.shared.primary().is_some()
        });
        if !ok {
            self.errors.push(format!(
                "no failover from {} within {FAILOVER_TIMEOUT:?}",
                self.nodes[old].name
            ));
        }
        ok
    }
    fn fault(&mut self, what: String) {
        self.faults += 1;
        self.shared.note(format!("FAULT: {what}"));
    }
    fn freeze(&mut self, i: usize) {
        self.nodes[i].freeze();
        self.fault(format!("SIGSTOP {}", self.nodes[i].name));
    }
    pub fn thaw(&mut self, i: usize) {
        self.nodes[i].thaw();
        self.shared.note(format!("SIGCONT {}", self.nodes[i].name));
    }
    /// Cuts node `i` off from everyone (two-way); loopback: freezes it.
    fn isolate(&mut self, i: usize) {
        match self.net.netns() {
            Some(ns) => {
                ns.isolate(i);
                self.fault(format!("isolate {} (two-way)", self.nodes[i].name));
            }
            None => self.freeze(i),
        }
    }
    fn unisolate(&mut self, i: usize) {
        match self.net.netns() {
            Some(ns) => {
                ns.unisolate(i);
                self.shared.note(format!("heal {}", self.nodes[i].name));
            }
            None => self.thaw(i),
        }
    }
    /// `from` can no longer send to `to`; loopback: freezes `to`.
    fn oneway(&mut self, from: usize, to: usize) {
        match self.net.netns() {
            Some(ns) => {
                ns.block(from, to);
                self.fault(format!(
                    "{} cannot send to {} (one-way)",
                    self.nodes[from].name, self.nodes[to].name
                ));
            }
            None => self.freeze(to),
        }
    }
    fn heal_oneway(&mut self, from: usize, to: usize) {
        match self.net.netns() {
            Some(ns) => {
                ns.unblock(from, to);
                self.shared.note("heal one-way".into());
            }
            None => self.thaw(to),
        }
    }
    /// The primary loses its secondaries and the framework, but keeps its
    /// clients (netns: two-way partition from the other nodes; loopback: a
    /// freeze). Its clients keep using it: split brain.
    fn cut_primary(&mut self, p: usize, freeze: bool) {
        self.shared.route.write().unwrap().stale_ok[p] = true;
        self.faulted_primaries.push(p);
        match self.net.netns() {
            Some(ns) if !freeze => {
                for s in (0..NODES).filter(|&s| s != p) {
                    ns.block(p, s);
                    ns.block(s, p);
                }
                self.shared.cut_off[p].store(true, Ordering::SeqCst);
                self.fault(format!(
                    "partition {} from the other nodes and the framework (clients still reach it)",
                    self.nodes[p].name
                ));
            }
            _ => self.freeze(p),
        }
    }
    fn uncut_primary(&mut self, p: usize) {
        if self.nodes[p].frozen {
            self.thaw(p);
        } else if let Some(ns) = self.net.netns() {
            ns.heal_all();
            self.shared.cut_off[p].store(false, Ordering::SeqCst);
            self.shared
                .note(format!("heal the partition of {}", self.nodes[p].name));
        }
    }
    /// Waits until node `i` follows the framework's primary again.
    fn wait_rejoined(&mut self, i: usize) {
        let name = self.nodes[i].name.clone();
        let ok = self.wait(&format!("{name} to re-join"), FAILOVER_TIMEOUT, |c| {
            c.nodes[i]
                .probe()
                .is_some_and(|s| s.state == STATE_SECONDARY)
        });
        if !ok {
            self.errors.push(format!(
                "{name} did not re-join within {FAILOVER_TIMEOUT:?}"
            ));
        }
    }
    /// Commits acknowledged by node `i` since `t`.
    fn acks_since(&self, i: usize, t: Instant) -> usize {
        self.load
            .acks
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.node == i && a.acked >= t)
            .count()
    }
    fn refusals_since(&self, i: usize, t: Instant) -> usize {
        self.load
            .refusals
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.node == i && a.at >= t)
            .count()
    }
    /// Restarts a node that is not running (a supervisor's job).
    pub fn supervise(&mut self) {
        for i in 0..NODES {
            if let Some(st) = self.nodes[i].exited() {
                self.shared.note(format!(
                    "{} exited ({st}); restarting it",
                    self.nodes[i].name
                ));
                if !self.nodes[i].expected_exit {
                    self.notes.push(format!(
                        "{} exited by itself ({st}); restarted, as a supervisor would",
                        self.nodes[i].name
                    ));
                }
            }
            if !self.nodes[i].running() {
                self.nodes[i].spawn();
            }
        }
    }
}

// ---- strace ----------------------------------------------------------------

/// strace attached to a running node, injecting a syscall fault.
struct Strace {
    child: Child,
    out: PathBuf,
}

impl Strace {
    fn attach(pid: i32, inject: &str, out: PathBuf) -> Strace {
        let child = Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=fdatasync,fsync", "-e"])
            .arg(format!("inject={inject}"))
            .arg("-o")
            .arg(&out)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn strace");
        Strace { child, out }
    }
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
    fn injected(&self) -> bool {
        self.output().contains("INJECTED")
    }
    /// SIGTERM: strace detaches and the node runs on untraced.
    fn detach(mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        // A node that exited by itself (on-store-error exit) while traced is a zombie we reap
        // only later, and strace waits for its traced threads: do not wait for strace forever
        // (SIGKILL makes the kernel detach it).
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the scenarios ---------------------------------------------------------

fn kill9_primary(c: &mut Ctx) {
    let p = c.primary();
    c.faulted_primaries.push(p);
    c.nodes[p].kill9();
    c.fault(format!("kill -9 primary {}", c.nodes[p].name));
    c.wait_failover_from(p);
    c.load_for(c.phase);
    c.nodes[p].spawn();
    c.wait_rejoined(p);
}

fn kill9_secondary(c: &mut Ctx) {
    let s = c.secondaries()[0];
    c.nodes[s].kill9();
    c.fault(format!("kill -9 secondary {}", c.nodes[s].name));
    c.load_for(c.phase);
    c.nodes[s].spawn();
    c.wait_rejoined(s);
}

fn freeze_secondary(c: &mut Ctx) {
    let s = c.secondaries()[1];
    c.freeze(s);
    c.load_for(c.outage());
    c.thaw(s);
    c.wait_rejoined(s);
}

fn isolate_secondary(c: &mut Ctx) {
    let s = c.secondaries()[0];
    c.isolate(s);
    c.load_for(c.outage());
    c.unisolate(s);
    c.wait_rejoined(s);
}

fn oneway(c: &mut Ctx) {
    let p = c.primary();
    let s = c.secondaries()[0];
    c.oneway(p, s);
    c.load_for(c.outage());
    c.heal_oneway(p, s);
    c.wait_rejoined(s);
    c.oneway(s, p);
    c.load_for(c.outage());
    c.heal_oneway(s, p);
    c.wait_rejoined(s);
}

/// Every link loses 5% of its packets and is 20 ms slow, for a while.
fn lossy_links(c: &mut Ctx) {
    let ns = c.net.netns().expect("netem needs namespaces");
    for i in 0..NODES {
        assert!(ns.impair(i, 5, 20), "tc netem on n{}", i + 1);
    }
    c.fault("5% loss and 20 ms delay on every link".into());
    c.load_for(c.outage() * 2);
    for i in 0..NODES {
        ns.unimpair(i);
    }
    c.shared.note("links healed".into());
}

/// The primary is frozen (SIGSTOP), or partitioned from the other nodes and
/// the framework but not from its clients; the framework promotes another;
/// it comes back (SIGCONT, heal) still thinking it is primary, and its
/// clients keep writing to it until the framework demotes it.
fn split_brain(c: &mut Ctx, freeze: bool) {
    let p = c.primary();
    c.cut_primary(p, freeze);
    c.wait_failover_from(p);
    c.load_for(c.phase);
    c.uncut_primary(p);
    // Split brain until the framework notices and demotes it.
    c.wait_rejoined(p);
}

fn split_brain_freeze(c: &mut Ctx) {
    split_brain(c, true);
}

fn split_brain_partition(c: &mut Ctx) {
    split_brain(c, false);
}

fn switchover(c: &mut Ctx) {
    for _ in 0..2 {
        let p = c.primary();
        let to = c.secondaries()[0];
        c.load_for(c.phase);
        c.fault(format!(
            "planned switchover {} -> {} under load",
            c.nodes[p].name, c.nodes[to].name
        ));
        let r = c.fw.lock().unwrap().switchover(to);
        if let Err(e) = r {
            c.errors.push(format!("switchover: {e}"));
            return;
        }
        if c.primary() != p {
            c.wait_rejoined(p);
        }
    }
}

/// Switchover to a secondary whose fdatasync is slow (strace delays it).
fn switchover_slow_disk(c: &mut Ctx) {
    let p = c.primary();
    let to = c.secondaries()[0];
    let pid = c.nodes[to].pid().expect("running");
    let st = Strace::attach(
        pid,
        "fdatasync,fsync:delay_enter=30000",
        c.nodes[to].dir.with_extension("strace"),
    );
    c.load_for(c.phase.max(Duration::from_millis(1000)));
    c.fault(format!(
        "planned switchover {} -> {} (fdatasync slowed by 30 ms) under load",
        c.nodes[p].name, c.nodes[to].name
    ));
    let r = c.fw.lock().unwrap().switchover(to);
    st.detach();
    if let Err(e) = r {
        c.errors.push(format!("switchover: {e}"));
        return;
    }
    if c.primary() != p {
        c.wait_rejoined(p);
    }
}

/// Fills the data disk of node `i` (a tmpfs) under load, then frees it.
fn disk_full(c: &mut Ctx, i: usize) {
    let t = Instant::now();
    c.nodes[i].fill_disk(0);
    c.fault(format!(
        "disk of {} full ({} bytes free)",
        c.nodes[i].name,
        free_bytes(&c.nodes[i].dir)
    ));
    let was_primary = c.primary() == i;
    if was_primary {
        c.faulted_primaries.push(i);
        // Its store refuses writes now or soon: it must leave its role.
        let left = c.wait(
            "the primary with a full disk to be replaced",
            FAILOVER_TIMEOUT,
            |c| c.primary() != i,
        );
        if !left {
            if c.refusals_since(i, t) > 0 {
                c.errors.push(format!(
                    "{} refused writes with a full disk but kept its role",
                    c.nodes[i].name
                ));
            } else {
                c.notes.push(format!(
                    "{}: the full disk had no effect within {FAILOVER_TIMEOUT:?}",
                    c.nodes[i].name
                ));
            }
        }
    } else {
        c.load_for(c.outage().max(Duration::from_secs(3)));
    }
    c.nodes[i].unfill_disk();
    c.shared.note(format!("disk of {} freed", c.nodes[i].name));
    c.load_for(c.phase);
    c.supervise();
    if c.primary() != i {
        c.wait_rejoined(i);
    }
}

/// The scenario's tmpfs node is the initial primary or a secondary.
fn disk_full_tmpfs_node(c: &mut Ctx) {
    let i = c.tmpfs_node.expect("a scenario with a tmpfs node");
    disk_full(c, i);
}

/// One fdatasync (or fsync) of node `i` returns EIO.
fn eio(c: &mut Ctx, i: usize) {
    let when = 3 + (c.started.elapsed().as_micros() % 20) as u32;
    let pid = c.nodes[i].pid().expect("running");
    let t = Instant::now();
    let st = Strace::attach(
        pid,
        &format!("fdatasync,fsync:error=EIO:when={when}"),
        c.nodes[i].dir.with_extension("strace"),
    );
    let hit = c.wait("the injected EIO", FAILOVER_TIMEOUT, |_| st.injected());
    st.detach();
    if !hit {
        c.notes.push(format!(
            "{}: no fdatasync reached the injection",
            c.nodes[i].name
        ));
        return;
    }
    c.fault(format!(
        "fdatasync #{when} of {} (after attach) returned EIO",
        c.nodes[i].name
    ));
    let was_primary = c.primary() == i;
    if was_primary {
        c.faulted_primaries.push(i);
        // Either the store was reopened (the node goes on committing) or it
        // left its role (the framework fails over) or it exited.
        let ok = c.wait(
            "the primary to recover or be replaced",
            FAILOVER_TIMEOUT,
            |c| c.primary() != i || c.acks_since(i, t + Duration::from_millis(300)) > 0,
        );
        if !ok {
            c.errors.push(format!(
                "{} neither recovered nor left its role after an EIO",
                c.nodes[i].name
            ));
        }
    }
    c.load_for(c.phase);
    c.supervise();
    if c.primary() != i {
        c.wait_rejoined(i);
    }
}

fn eio_primary(c: &mut Ctx) {
    let p = c.primary();
    eio(c, p);
}

fn eio_secondary(c: &mut Ctx) {
    let s = c.secondaries()[0];
    eio(c, s);
}

/// A stopped secondary restarted on a 0-byte and on a truncated store must
/// refuse to start, naming the file, without panicking; once the operator
/// empties the data directory it starts and gets a full copy.
fn damaged_store(c: &mut Ctx) {
    let s = c.secondaries()[1];
    c.nodes[s].kill9();
    let file = c.nodes[s].store_file();
    let orig = std::fs::read(&file).expect("read the store file");
    for (what, bytes) in [
        ("0-byte", &orig[..0]),
        ("truncated", &orig[..orig.len() / 2]),
    ] {
        std::fs::write(&file, bytes).expect("damage the store file");
        c.fault(format!(
            "{what} store file of {} at restart",
            c.nodes[s].name
        ));
        match c.nodes[s].spawn_expect_refusal(REFUSAL_TIMEOUT) {
            Err(e) => c.errors.push(format!("{what} store: {e}")),
            Ok((st, text)) => {
                if st.success() {
                    c.errors.push(format!("{what} store: exit status 0"));
                }
                if text.contains("panicked") {
                    c.errors
                        .push(format!("{what} store: ha-node panicked:\n{text}"));
                }
                if !text.contains("store.redb") {
                    c.errors.push(format!(
                        "{what} store: the error does not name store.redb:\n{text}"
                    ));
                }
            }
        }
    }
    // The operator's fix: an empty data directory.
    let dir = c.nodes[s].dir.clone();
    for e in std::fs::read_dir(&dir).expect("data dir").flatten() {
        let p = e.path();
        let _ = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
    c.nodes[s].spawn();
    c.wait_rejoined(s);
}

// ---- the catalog -----------------------------------------------------------

pub struct Scenario {
    pub name: &'static str,
    pub run: fn(&mut Ctx),
    /// What it needs with min-secondaries 0 and with 1.
    pub needs0: &'static [Need],
    pub needs1: &'static [Need],
    /// The min-secondaries values the bounded form runs.
    pub bounded: &'static [u32],
    /// `--on-store-error` value, if the scenario is about store faults.
    pub on_store_error: Option<&'static str>,
    /// The node whose data directory is a tmpfs, counted from the initial
    /// primary (0: the primary, 1: the node after it).
    pub tmpfs: Option<usize>,
}

use Need::*;

const MS1: &[Need] = &[MinSecondaries];
/// With min-secondaries 0, the split brain's discarded commits must be in
/// rollback files; the frozen primary's in-flight commits must not be
/// acknowledged (that fix comes with --min-secondaries).
const SB0: &[Need] = &[Rollback, MinSecondaries];
const SB0N: &[Need] = &[Rollback, MinSecondaries, Netns];
const MS1N: &[Need] = &[MinSecondaries, Netns];

#[rustfmt::skip]
pub const CATALOG: &[Scenario] = &[
    Scenario { name: "kill9-primary", run: kill9_primary, needs0: &[], needs1: MS1, bounded: &[0, 1], on_store_error: None, tmpfs: None },
    Scenario { name: "kill9-secondary", run: kill9_secondary, needs0: &[], needs1: MS1, bounded: &[1], on_store_error: None, tmpfs: None },
    Scenario { name: "freeze-secondary", run: freeze_secondary, needs0: &[], needs1: MS1, bounded: &[0], on_store_error: None, tmpfs: None },
    Scenario { name: "isolate-secondary", run: isolate_secondary, needs0: &[], needs1: MS1, bounded: &[1], on_store_error: None, tmpfs: None },
    Scenario { name: "one-way-partitions", run: oneway, needs0: &[], needs1: MS1, bounded: &[0], on_store_error: None, tmpfs: None },
    Scenario { name: "lossy-links", run: lossy_links, needs0: &[Netem], needs1: &[MinSecondaries, Netem], bounded: &[1], on_store_error: None, tmpfs: None },
    Scenario { name: "split-brain-freeze", run: split_brain_freeze, needs0: SB0, needs1: MS1, bounded: &[0, 1], on_store_error: None, tmpfs: None },
    Scenario { name: "split-brain-partition", run: split_brain_partition, needs0: SB0N, needs1: MS1N, bounded: &[1], on_store_error: None, tmpfs: None },
    Scenario { name: "switchover", run: switchover, needs0: MS1, needs1: MS1, bounded: &[0], on_store_error: None, tmpfs: None },
    Scenario { name: "switchover-slow-disk", run: switchover_slow_disk, needs0: &[MinSecondaries, Strace], needs1: &[MinSecondaries, Strace], bounded: &[1], on_store_error: None, tmpfs: None },
    Scenario { name: "disk-full-primary", run: disk_full_tmpfs_node, needs0: &[StoreErrors, Tmpfs], needs1: &[MinSecondaries, StoreErrors, Tmpfs], bounded: &[1], on_store_error: Some("stop-role"), tmpfs: Some(0) },
    Scenario { name: "disk-full-secondary", run: disk_full_tmpfs_node, needs0: &[StoreErrors, Tmpfs], needs1: &[MinSecondaries, StoreErrors, Tmpfs], bounded: &[0], on_store_error: Some("stop-role"), tmpfs: Some(1) },
    Scenario { name: "eio-primary", run: eio_primary, needs0: &[StoreErrors, Strace], needs1: &[MinSecondaries, StoreErrors, Strace], bounded: &[0], on_store_error: Some("stop-role"), tmpfs: None },
    Scenario { name: "eio-primary-exit", run: eio_primary, needs0: &[StoreErrors, Strace], needs1: &[MinSecondaries, StoreErrors, Strace], bounded: &[1], on_store_error: Some("exit"), tmpfs: None },
    Scenario { name: "eio-secondary", run: eio_secondary, needs0: &[StoreErrors, Strace], needs1: &[MinSecondaries, StoreErrors, Strace], bounded: &[], on_store_error: Some("stop-role"), tmpfs: None },
    Scenario { name: "damaged-store", run: damaged_store, needs0: &[StoreErrors], needs1: &[MinSecondaries, StoreErrors], bounded: &[1], on_store_error: Some("stop-role"), tmpfs: None },
];
