//! The scenarios, the features they need, and the suite runner.

use crate::cluster::{free_bytes, ha_port, make_node, FNode, NodeOpts};
use crate::framework::{self, Framework, Shared};
use crate::load::{self, Load};
use crate::net::{is_root, Net};
use crate::SKIP_MISSING_FEATURES;
use confd_ha::proto::ha::STATE_SECONDARY;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Nodes in the cluster.
const NODES: usize = 3;
/// Writer threads.
const WRITERS: usize = 4;
/// How long a failover, a demotion or a re-join may take.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster may take to be whole again after the last heal.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node given a damaged store may take to refuse to start.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);
/// Load phases (before a fault, during, after a heal) in the bounded form;
/// the full form multiplies them by [`FULL_PHASE_FACTOR`].
const PHASE_BOUNDED: Duration = Duration::from_millis(700);
const FULL_PHASE_FACTOR: u32 = 4;
/// Iterations of the full form unless `HA_FAULTS_ITERATIONS` says otherwise.
const FULL_ITERATIONS: u32 = 5;
/// Freezes and partitions last at least this long (more than 3 ticks).
const OUTAGE_MIN: Duration = Duration::from_millis(1500);

// ---- features --------------------------------------------------------------

/// What a scenario needs from the product or the machine.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Need {
    /// `--min-secondaries` (and, with it, the safety fixes of issue 9).
    MinSecondaries,
    /// `--on-store-error` (storage faults fail-stop the role).
    StoreErrors,
    /// Rollback files (`ha-ctl rollback`).
    Rollback,
    /// strace with syscall fault injection (tool).
    Strace,
    /// root, for tmpfs mounts (machine).
    Root,
}

struct Features {
    min_secondaries: bool,
    store_errors: bool,
    rollback: bool,
    strace: bool,
    root: bool,
}

fn help_of(bin: &str) -> String {
    Command::new(bin)
        .arg("--help")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_default()
}

impl Features {
    fn detect() -> Features {
        let node = help_of(env!("CARGO_BIN_EXE_ha-node"));
        let ctl = help_of(env!("CARGO_BIN_EXE_ha-ctl"));
        Features {
            min_secondaries: node.contains("--min-secondaries"),
            store_errors: node.contains("--on-store-error"),
            rollback: ctl.contains("rollback"),
            strace: Command::new("strace")
                .arg("-V")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false),
            root: is_root(),
        }
    }
    fn has(&self, n: Need) -> bool {
        match n {
            Need::MinSecondaries => self.min_secondaries,
            Need::StoreErrors => self.store_errors,
            Need::Rollback => self.rollback,
            Need::Strace => self.strace,
            Need::Root => self.root,
        }
    }
    fn describe(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "NO" };
        format!(
            "--min-secondaries {}, --on-store-error {}, rollback files {}, strace {}, root {}",
            yn(self.min_secondaries),
            yn(self.store_errors),
            yn(self.rollback),
            yn(self.strace),
            yn(self.root)
        )
    }
}

fn product_feature(n: Need) -> bool {
    matches!(n, Need::MinSecondaries | Need::StoreErrors | Need::Rollback)
}

// ---- the scenario context --------------------------------------------------

/// One running scenario: its nodes, framework, load and findings.
pub struct Ctx<'a> {
    pub nodes: Vec<FNode>,
    pub fw: Arc<Mutex<Framework>>,
    pub shared: Arc<Shared>,
    pub load: Arc<Load>,
    net: &'a Net,
    ms: u32,
    phase: Duration,
    faults: u32,
    /// Nodes deposed while cut off and still serving clients, from when.
    split_brain: Vec<(usize, Instant)>,
    /// Findings that fail the scenario.
    errors: Vec<String>,
    /// Things worth printing that are not failures.
    notes: Vec<String>,
    started: Instant,
}

impl Ctx<'_> {
    fn primary(&self) -> usize {
        self.fw.lock().unwrap().primary
    }
    fn secondaries(&self) -> Vec<usize> {
        let p = self.primary();
        (0..NODES).filter(|&i| i != p).collect()
    }
    /// Lets the writers run (load, not synchronisation).
    fn load_for(&self, d: Duration) {
        std::thread::sleep(d);
    }
    fn outage(&self) -> Duration {
        self.phase.max(OUTAGE_MIN)
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
    fn thaw(&mut self, i: usize) {
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
    fn cut_primary(&mut self, p: usize) {
        self.shared.route.write().unwrap().stale_ok[p] = true;
        self.split_brain.push((p, Instant::now()));
        match self.net.netns() {
            Some(ns) => {
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
            None => self.freeze(p),
        }
    }
    fn uncut_primary(&mut self, p: usize) {
        match self.net.netns() {
            Some(ns) => {
                ns.heal_all();
                self.shared.cut_off[p].store(false, Ordering::SeqCst);
                self.shared
                    .note(format!("heal the partition of {}", self.nodes[p].name));
            }
            None => self.thaw(p),
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
    fn supervise(&mut self) {
        for i in 0..NODES {
            if let Some(st) = self.nodes[i].exited() {
                self.shared.note(format!(
                    "{} exited ({st}); restarting it",
                    self.nodes[i].name
                ));
                if !self.nodes[i].expected_exit {
                    self.notes
                        .push(format!("{} exited on its own: {st}", self.nodes[i].name));
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
        let _ = self.child.wait();
    }
}

// ---- the scenarios ---------------------------------------------------------

fn kill9_primary(c: &mut Ctx) {
    let p = c.primary();
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

/// The primary is frozen (or partitioned with its clients); the framework
/// promotes another; it comes back still thinking it is primary, and its
/// clients keep writing to it until the framework demotes it.
fn split_brain(c: &mut Ctx) {
    let p = c.primary();
    c.cut_primary(p);
    c.wait_failover_from(p);
    c.load_for(c.phase);
    c.uncut_primary(p);
    // Split brain until the framework notices and demotes it.
    c.wait_rejoined(p);
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
        c.wait_rejoined(p);
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
    c.wait_rejoined(p);
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

fn disk_full_primary(c: &mut Ctx) {
    disk_full(c, 0);
}

fn disk_full_secondary(c: &mut Ctx) {
    disk_full(c, 1);
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

struct Scenario {
    name: &'static str,
    run: fn(&mut Ctx),
    /// What it needs with min-secondaries 0 and with 1.
    needs0: &'static [Need],
    needs1: &'static [Need],
    /// The min-secondaries values the bounded form runs.
    bounded: &'static [u32],
    /// `--on-store-error` value, if the scenario is about store faults.
    on_store_error: Option<&'static str>,
    /// The node whose data directory is a tmpfs.
    tmpfs: Option<usize>,
}

use Need::*;

const MS1: &[Need] = &[MinSecondaries];
/// With min-secondaries 0, the split brain's discarded commits must be in
/// rollback files; the frozen primary's in-flight commits must not be
/// acknowledged (that fix comes with --min-secondaries).
const SB0: &[Need] = &[Rollback, MinSecondaries];

const CATALOG: &[Scenario] = &[
    Scenario {
        name: "kill9-primary",
        run: kill9_primary,
        needs0: &[],
        needs1: MS1,
        bounded: &[0, 1],
        on_store_error: None,
        tmpfs: None,
    },
    Scenario {
        name: "kill9-secondary",
        run: kill9_secondary,
        needs0: &[],
        needs1: MS1,
        bounded: &[1],
        on_store_error: None,
        tmpfs: None,
    },
    Scenario {
        name: "freeze-secondary",
        run: freeze_secondary,
        needs0: &[],
        needs1: MS1,
        bounded: &[0],
        on_store_error: None,
        tmpfs: None,
    },
    Scenario {
        name: "isolate-secondary",
        run: isolate_secondary,
        needs0: &[],
        needs1: MS1,
        bounded: &[1],
        on_store_error: None,
        tmpfs: None,
    },
    Scenario {
        name: "one-way-partitions",
        run: oneway,
        needs0: &[],
        needs1: MS1,
        bounded: &[0],
        on_store_error: None,
        tmpfs: None,
    },
    Scenario {
        name: "split-brain",
        run: split_brain,
        needs0: SB0,
        needs1: MS1,
        bounded: &[0, 1],
        on_store_error: None,
        tmpfs: None,
    },
    Scenario {
        name: "switchover",
        run: switchover,
        needs0: MS1,
        needs1: MS1,
        bounded: &[0],
        on_store_error: None,
        tmpfs: None,
    },
    Scenario {
        name: "switchover-slow-disk",
        run: switchover_slow_disk,
        needs0: &[MinSecondaries, Strace],
        needs1: &[MinSecondaries, Strace],
        bounded: &[1],
        on_store_error: None,
        tmpfs: None,
    },
    Scenario {
        name: "disk-full-primary",
        run: disk_full_primary,
        needs0: &[StoreErrors, Root],
        needs1: &[MinSecondaries, StoreErrors, Root],
        bounded: &[1],
        on_store_error: Some("stop-role"),
        tmpfs: Some(0),
    },
    Scenario {
        name: "disk-full-secondary",
        run: disk_full_secondary,
        needs0: &[StoreErrors, Root],
        needs1: &[MinSecondaries, StoreErrors, Root],
        bounded: &[],
        on_store_error: Some("stop-role"),
        tmpfs: Some(1),
    },
    Scenario {
        name: "eio-primary",
        run: eio_primary,
        needs0: &[StoreErrors, Strace],
        needs1: &[MinSecondaries, StoreErrors, Strace],
        bounded: &[0],
        on_store_error: Some("stop-role"),
        tmpfs: None,
    },
    Scenario {
        name: "eio-primary-exit",
        run: eio_primary,
        needs0: &[StoreErrors, Strace],
        needs1: &[MinSecondaries, StoreErrors, Strace],
        bounded: &[1],
        on_store_error: Some("exit"),
        tmpfs: None,
    },
    Scenario {
        name: "eio-secondary",
        run: eio_secondary,
        needs0: &[StoreErrors, Strace],
        needs1: &[MinSecondaries, StoreErrors, Strace],
        bounded: &[],
        on_store_error: Some("stop-role"),
        tmpfs: None,
    },
    Scenario {
        name: "damaged-store",
        run: damaged_store,
        needs0: &[StoreErrors],
        needs1: &[MinSecondaries, StoreErrors],
        bounded: &[1],
        on_store_error: Some("stop-role"),
        tmpfs: None,
    },
];

// ---- running one scenario --------------------------------------------------

#[derive(Default)]
struct Outcome {
    acked: usize,
    lost: usize,
    discarded: usize,
    refused: usize,
    unknown: u64,
    faults: u32,
    errors: Vec<String>,
    notes: Vec<String>,
}

/// Stops the threads of a scenario even when it panics.
struct Threads {
    load: Arc<Load>,
    stop_fw: Arc<AtomicBool>,
    writers: Vec<std::thread::JoinHandle<()>>,
    sampler: Option<std::thread::JoinHandle<()>>,
    fw: Option<std::thread::JoinHandle<()>>,
}

impl Threads {
    fn stop_sampler(&mut self) {
        self.load.stop_sampler.store(true, Ordering::SeqCst);
        if let Some(h) = self.sampler.take() {
            let _ = h.join();
        }
    }
    fn stop_writers(&mut self) {
        self.load.stop.store(true, Ordering::SeqCst);
        for h in self.writers.drain(..) {
            let _ = h.join();
        }
    }
    fn stop_framework(&mut self) {
        self.stop_fw.store(true, Ordering::SeqCst);
        if let Some(h) = self.fw.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop_sampler();
        self.stop_writers();
        self.stop_framework();
    }
}

fn run_one(
    sc: &Scenario,
    ms: u32,
    it: u32,
    net: &Net,
    feats: &Features,
    phase: Duration,
) -> Outcome {
    let mut args = Vec::new();
    if feats.min_secondaries {
        args.push("--min-secondaries".to_string());
        args.push(ms.to_string());
    }
    if let (Some(v), true) = (sc.on_store_error, feats.store_errors) {
        args.push("--on-store-error".into());
        args.push(v.into());
    }
    let port = ha_port(net);
    let nodes: Vec<FNode> = (0..NODES)
        .map(|i| {
            let opts = NodeOpts {
                args: args.clone(),
                tmpfs: sc.tmpfs == Some(i),
            };
            let mut n = make_node(net, i, port, &opts);
            n.spawn();
            n
        })
        .collect();
    let shared = Shared::new(NODES);
    let ipc: Vec<String> = nodes.iter().map(|n| n.ipc.clone()).collect();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut fw = Framework::new(
        shared.clone(),
        names.clone(),
        ipc.clone(),
        nodes.iter().map(FNode::as_primary).collect(),
    );
    fw.start(0)
        .unwrap_or_else(|e| panic!("starting the cluster: {e}"));
    let fw = Arc::new(Mutex::new(fw));
    let load = Arc::new(Load::default());
    let tag = format!("{}-ms{ms}-i{it}", sc.name);
    let stop_fw = Arc::new(AtomicBool::new(false));
    let mut th = Threads {
        load: load.clone(),
        stop_fw: stop_fw.clone(),
        writers: (0..WRITERS)
            .map(|w| {
                let (tag, ipc, shared, load) =
                    (tag.clone(), ipc.clone(), shared.clone(), load.clone());
                std::thread::spawn(move || load::writer(w, tag, ipc, shared, load))
            })
            .collect(),
        sampler: Some({
            let (ipc, load) = (ipc.clone(), load.clone());
            std::thread::spawn(move || load::sampler(ipc, load))
        }),
        fw: Some(framework::run(fw.clone(), stop_fw)),
    };
    let mut c = Ctx {
        nodes,
        fw: fw.clone(),
        shared: shared.clone(),
        load: load.clone(),
        net,
        ms,
        phase,
        faults: 0,
        split_brain: Vec::new(),
        errors: Vec::new(),
        notes: Vec::new(),
        started: Instant::now(),
    };
    c.load_for(phase);
    (sc.run)(&mut c);
    // Heal whatever is left, let the load run, then stop it and settle.
    if let Some(ns) = net.netns() {
        ns.heal_all();
    }
    for i in 0..NODES {
        c.shared.cut_off[i].store(false, Ordering::SeqCst);
        if c.nodes[i].frozen {
            c.thaw(i);
        }
    }
    c.supervise();
    c.load_for(phase);
    th.stop_sampler();
    th.stop_writers();
    let settled = c.wait("the cluster to settle", SETTLE_TIMEOUT, |c| {
        c.fw.lock().unwrap().settled().is_ok()
    });
    th.stop_framework();
    if !settled {
        let why = c.fw.lock().unwrap().settled().err().unwrap_or_default();
        c.errors.push(format!("the cluster did not settle: {why}"));
    }
    let mut out = verify(&mut c, &names, feats);
    out.faults = c.faults;
    out.errors.append(&mut c.errors);
    out.notes.append(&mut c.notes);
    if !out.errors.is_empty() {
        eprintln!("faults: framework actions:\n{}", c.shared.history());
        for n in &c.nodes {
            eprintln!(
                "---- last lines of {}'s log ----\n{}",
                n.name,
                n.log_tail(30)
            );
        }
    }
    drop(th);
    out
}

/// The guarantees, checked once everything has healed.
fn verify(c: &mut Ctx, names: &[String], feats: &Features) -> Outcome {
    let mut o = Outcome {
        refused: c.load.refusals.lock().unwrap().len(),
        unknown: c.load.unknown.load(Ordering::SeqCst),
        ..Outcome::default()
    };
    // No crash, no panic.
    for n in c.nodes.iter_mut() {
        if n.exited().is_some() && !n.expected_exit {
            o.errors.push(format!("{} exited", n.name));
        }
        if n.log_text().contains("panicked") {
            o.errors.push(format!("{} panicked (see its log)", n.name));
        }
    }
    // Identical data everywhere.
    let dumps: Vec<_> = c.nodes.iter().map(|n| load::dump(&n.ipc)).collect();
    let p = c.primary();
    let reference = match &dumps[p] {
        Ok(d) => d.clone(),
        Err(e) => {
            o.errors
                .push(format!("cannot read the primary's data: {e}"));
            return o;
        }
    };
    for (i, d) in dumps.iter().enumerate() {
        match d {
            Err(e) => o
                .errors
                .push(format!("cannot read {}'s data: {e}", names[i])),
            Ok(d) if i != p => {
                let df = load::diff(&reference, d, 5);
                if !df.is_empty() {
                    o.errors.push(format!(
                        "{} and {} differ after the heal: {df:?}",
                        names[p], names[i]
                    ));
                }
            }
            _ => {}
        }
    }
    // Every acknowledged commit is there, or (min-secondaries 0 only) was
    // acknowledged by a deposed or lone primary and is in its rollback file.
    let acks = c.load.acks.lock().unwrap().clone();
    o.acked = acks.len();
    let mut rollback_cache: Vec<Option<String>> = vec![None; NODES];
    let mut examples = Vec::new();
    for a in &acks {
        let want = confd_ha::value::Value::Buf(a.val.clone().into_bytes());
        if reference.get(&a.key) == Some(&want) {
            continue;
        }
        let text =
            rollback_cache[a.node].get_or_insert_with(|| rollback_text(&c.nodes[a.node], feats));
        let in_rollback = text.contains(&a.key);
        if c.ms == 0 && in_rollback {
            o.discarded += 1;
            let in_window = c
                .split_brain
                .iter()
                .any(|(n, from)| *n == a.node && a.acked >= *from);
            if !in_window && o.notes.len() < 3 {
                o.notes.push(format!(
                    "{} (txid {}) acknowledged by {} outside a split brain was discarded \
                     (in its rollback file): a lone primary's commit",
                    a.key, a.txid, names[a.node]
                ));
            }
            continue;
        }
        o.lost += 1;
        if examples.len() < 5 {
            examples.push(format!(
                "{} = {} (txid {}, acknowledged by {} at {:.3}s, sent at {:.3}s){}",
                a.key,
                a.val,
                a.txid,
                names[a.node],
                (a.acked - c.shared.t0).as_secs_f64(),
                (a.sent - c.shared.t0).as_secs_f64(),
                if c.ms == 0 {
                    ", not in any rollback file"
                } else {
                    ""
                }
            ));
        }
    }
    if o.lost > 0 {
        o.errors.push(format!(
            "{} acknowledged commits lost (min-secondaries {}), e.g. {examples:#?}",
            o.lost, c.ms
        ));
    }
    // No zombie primary.
    o.errors.extend(load::zombies(&c.load, names));
    o
}

/// Everything the node's rollback files hold, as `ha-ctl rollback show`
/// prints it, plus the raw bytes (so a key is found whatever the format).
fn rollback_text(n: &FNode, feats: &Features) -> String {
    let dir = n.dir.join("rollback");
    let mut text = String::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return text;
    };
    for e in rd.flatten() {
        let p = e.path();
        if let Ok(b) = std::fs::read(&p) {
            text.push_str(&String::from_utf8_lossy(&b));
        }
        if feats.rollback {
            if let Ok(o) = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
                .args(["rollback", "show"])
                .arg(&p)
                .output()
            {
                text.push_str(&String::from_utf8_lossy(&o.stdout));
            }
        }
    }
    text
}

// ---- the suite -------------------------------------------------------------

pub fn run_suite() {
    let form = std::env::var("HA_FAULTS").unwrap_or_default();
    let full = match form.as_str() {
        "full" => true,
        "bounded" => false,
        _ => {
            println!(
                "faults: not run (HA_FAULTS is unset; `make check` runs HA_FAULTS=bounded, \
                 `make check-faults` HA_FAULTS=full)"
            );
            return;
        }
    };
    let iterations = if full {
        std::env::var("HA_FAULTS_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(FULL_ITERATIONS)
    } else {
        1
    };
    let phase = if full {
        PHASE_BOUNDED * FULL_PHASE_FACTOR
    } else {
        PHASE_BOUNDED
    };
    let only = std::env::var("HA_FAULTS_ONLY").unwrap_or_default();
    // Runs the scenarios whose product features are missing anyway (to see
    // what fails without them).
    let force = std::env::var("HA_FAULTS_FORCE").is_ok_and(|v| v == "1");
    let feats = Features::detect();
    let (net, desc) = Net::choose(NODES);
    println!(
        "faults: {} form, {iterations} iteration(s); network: {desc}",
        if full { "full" } else { "bounded" }
    );
    println!("faults: features: {}", feats.describe());
    let t0 = Instant::now();
    let (mut runs, mut faults, mut acked, mut lost, mut discarded) =
        (0u32, 0u32, 0usize, 0usize, 0usize);
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    for it in 0..iterations {
        for sc in CATALOG {
            let variants: &[u32] = if full { &[0, 1] } else { sc.bounded };
            for &ms in variants {
                let label = format!("{} (min-secondaries {ms})", sc.name);
                if !only.is_empty() && !sc.name.contains(only.as_str()) {
                    continue;
                }
                let needs = if ms == 0 { sc.needs0 } else { sc.needs1 };
                let missing: Vec<Need> = needs
                    .iter()
                    .copied()
                    .filter(|n| !feats.has(*n) && !(force && product_feature(*n)))
                    .collect();
                if !missing.is_empty() {
                    let product = missing.iter().any(|n| product_feature(*n));
                    if product && !SKIP_MISSING_FEATURES {
                        failed.push(format!("{label}: feature missing: {missing:?}"));
                        println!("faults: {label}: FAILED (feature missing: {missing:?})");
                    } else if it == 0 {
                        let kind = if product { "feature" } else { "tool" };
                        println!("faults: {label}: SKIPPED ({kind} missing: {missing:?}) ########");
                        skipped.push(label);
                    }
                    continue;
                }
                let t = Instant::now();
                let o = run_one(sc, ms, it, &net, &feats, phase);
                runs += 1;
                faults += o.faults;
                acked += o.acked;
                lost += o.lost;
                discarded += o.discarded;
                println!(
                    "faults: [{it}] {label}: {} faults, {} acknowledged, {} refused, {} unknown, \
                     {} lost, {} discarded into rollback files, {:.1}s{}",
                    o.faults,
                    o.acked,
                    o.refused,
                    o.unknown,
                    o.lost,
                    o.discarded,
                    t.elapsed().as_secs_f64(),
                    if o.errors.is_empty() { "" } else { "  FAILED" }
                );
                for n in &o.notes {
                    println!("faults:     note: {n}");
                }
                for e in &o.errors {
                    println!("faults:     FAIL: {e}");
                }
                if !o.errors.is_empty() {
                    failed.push(format!("[{it}] {label}: {}", o.errors.join("; ")));
                }
            }
        }
    }
    drop(net);
    if !skipped.is_empty() {
        println!("################################################################");
        println!(
            "faults: {} scenario(s) SKIPPED (feature missing):",
            skipped.len()
        );
        for s in &skipped {
            println!("faults:   {s}");
        }
        println!("################################################################");
    }
    println!("faults: took {:.0}s", t0.elapsed().as_secs_f64());
    println!(
        "faults: {runs} iterations, {faults} faults, {acked} acknowledged, {lost} lost \
         ({discarded} discarded into rollback files with min-secondaries 0)"
    );
    assert!(
        failed.is_empty(),
        "fault scenarios failed:\n{}",
        failed.join("\n")
    );
}
