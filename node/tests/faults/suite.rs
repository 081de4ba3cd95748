//! The suite runner: features, one scenario's run and its checks, the totals.

use crate::cluster::{ha_port, make_node, FNode, NodeOpts};
use crate::framework::{self, Framework, Shared};
use crate::load::{self, Load};
use crate::net::{is_root, Net};
use crate::scenarios::{Ctx, Need, Scenario, CATALOG, NODES};
use crate::SKIP_MISSING_FEATURES;
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Writer threads.
const WRITERS: usize = 4;
/// How long the cluster may take to be whole again after the last heal.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Load phases (before a fault, during, after a heal) in the bounded form;
/// the full form multiplies them by [`FULL_PHASE_FACTOR`].
const PHASE_BOUNDED: Duration = Duration::from_millis(700);
const FULL_PHASE_FACTOR: u32 = 4;
/// Iterations of the full form unless `HA_FAULTS_ITERATIONS` says otherwise.
const FULL_ITERATIONS: u32 = 3;

// ---- features --------------------------------------------------------------

struct Features {
    min_secondaries: bool,
    store_errors: bool,
    rollback: bool,
    strace: bool,
    tmpfs: bool,
    netns: bool,
    netem: bool,
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

/// Whether strace can attach to a running child of ours (ptrace may be
/// forbidden in a container).
fn can_strace_attach() -> bool {
    let Ok(mut sleeper) = Command::new("sleep").arg("30").spawn() else {
        return false;
    };
    let attached = Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "-e", "trace=fdatasync", "-p"])
        .arg(sleeper.id().to_string())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok_and(|mut st| {
            // A refused attach exits at once; a working one keeps tracing.
            std::thread::sleep(Duration::from_millis(300));
            let running = matches!(st.try_wait(), Ok(None));
            let _ = st.kill();
            let _ = st.wait();
            running
        });
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    attached
}

/// Whether this process may mount a tmpfs (root, and allowed by the machine).
fn can_mount_tmpfs() -> bool {
    if !is_root() {
        return false;
    }
    let d = crate::common::TempDir::new("tmpfs-probe");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(d.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let _ = Command::new("umount").arg(d.path()).status();
    }
    ok
}

impl Features {
    fn detect(net: &Net) -> Features {
        let node = help_of(env!("CARGO_BIN_EXE_ha-node"));
        let ctl = help_of(env!("CARGO_BIN_EXE_ha-ctl"));
        Features {
            min_secondaries: node.contains("--min-secondaries"),
            store_errors: node.contains("--on-store-error"),
            rollback: ctl.contains("rollback"),
            strace: can_strace_attach(),
            tmpfs: can_mount_tmpfs(),
            netns: net.netns().is_some(),
            netem: net.netns().is_some_and(|n| n.netem),
        }
    }
    fn has(&self, n: Need) -> bool {
        match n {
            Need::MinSecondaries => self.min_secondaries,
            Need::StoreErrors => self.store_errors,
            Need::Rollback => self.rollback,
            Need::Strace => self.strace,
            Need::Tmpfs => self.tmpfs,
            Need::Netem => self.netem,
            Need::Netns => self.netns,
        }
    }
    fn describe(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "NO" };
        format!(
            "--min-secondaries {}, --on-store-error {}, rollback files {}, strace {}, tmpfs {}, \
             netem {}",
            yn(self.min_secondaries),
            yn(self.store_errors),
            yn(self.rollback),
            yn(self.strace),
            yn(self.tmpfs),
            yn(self.netem)
        )
    }
}

fn product_feature(n: Need) -> bool {
    matches!(n, Need::MinSecondaries | Need::StoreErrors | Need::Rollback)
}

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
    // Each iteration starts with another node as primary.
    let p0 = it as usize % NODES;
    let tmpfs_node = sc.tmpfs.map(|off| (p0 + off) % NODES);
    let port = ha_port(net);
    let nodes: Vec<FNode> = (0..NODES)
        .map(|i| {
            let opts = NodeOpts {
                args: args.clone(),
                tmpfs: tmpfs_node == Some(i),
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
    fw.start(p0)
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
        faulted_primaries: Vec::new(),
        errors: Vec::new(),
        notes: Vec::new(),
        started: Instant::now(),
        tmpfs_node,
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
        let text = n.log_text();
        if let Some(at) = text.find("panicked") {
            // The panic's own lines (the log goes with the node's temporary directory).
            let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = (at + 1500).min(text.len());
            let end = (end..=text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            o.errors
                .push(format!("{} panicked:\n{}", n.name, &text[from..end]));
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
    let mut rollback_cache: Vec<Option<HashSet<String>>> = vec![None; NODES];
    let mut discarded_by = [0i64; NODES];
    let mut examples = Vec::new();
    for a in &acks {
        let want = confd_ha::value::Value::Buf(a.val.clone().into_bytes());
        if reference.get(&a.key) == Some(&want) {
            continue;
        }
        let kept = rollback_cache[a.node]
            .get_or_insert_with(|| keys_in(&rollback_text(&c.nodes[a.node], feats, &mut o.errors)));
        let in_rollback = kept.contains(&a.key);
        // With min-secondaries 0 a primary that was cut off (or alone) may
        // have acknowledged what the new primary never got: allowed only for
        // a primary this scenario faulted, and only into a rollback file.
        let excused = c.ms == 0 && c.faulted_primaries.contains(&a.node);
        if excused && in_rollback {
            o.discarded += 1;
            discarded_by[a.node] += 1;
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
                match (excused, in_rollback) {
                    (true, _) => ", not in any rollback file",
                    (false, true) =>
                        ", in a rollback file, but this node was not a faulted primary",
                    (false, false) => "",
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
    // Each node counts what it discarded.
    if feats.rollback {
        for (i, &d) in discarded_by.iter().enumerate() {
            if d == 0 {
                continue;
            }
            // Itemised transactions, or a state file (the complete local data before the
            // copy) when the node's transaction log did not reach back that far.
            let st = c.nodes[i]
                .data()
                .ok()
                .and_then(|mut dc| dc.stats().ok())
                .unwrap_or_default();
            let stat = |name: &str| st.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            let counted = stat("discarded_txns");
            let snapshots = stat("rollback_snapshots");
            match (counted, snapshots) {
                (Some(v), _) if v >= d => {}
                (Some(_), Some(n)) if n > 0 => {}
                (v, n) => o.errors.push(format!(
                    "{} discarded {d} acknowledged commits but its stats say discarded_txns \
                     {v:?}, rollback_snapshots {n:?}",
                    names[i]
                )),
            }
        }
    }
    // No zombie primary.
    o.errors.extend(load::zombies(&c.load, names));
    o
}

/// The writers' keys (`/f/w<W>/k<N>`) that occur in `text`.
fn keys_in(text: &str) -> HashSet<String> {
    text.match_indices("/f/w")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '/')
                .collect()
        })
        .collect()
}

/// Everything the node's rollback files hold: with `ha-ctl rollback`, the
/// files `rollback list DATA_DIR` names as `rollback show FILE` prints them
/// (and an error if either fails or a file is not listed); without it, the
/// raw bytes (a key's path is in them whatever the format).
fn rollback_text(n: &FNode, feats: &Features, errors: &mut Vec<String>) -> String {
    let dir = n.dir.join("rollback");
    let mut text = String::new();
    let files: Vec<std::path::PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with('.'))
            })
            .collect(),
        Err(_) => return text,
    };
    if !feats.rollback {
        for p in &files {
            if let Ok(b) = std::fs::read(p) {
                text.push_str(&String::from_utf8_lossy(&b));
            }
        }
        return text;
    }
    let ctl = |args: &[&std::ffi::OsStr]| -> Result<String, String> {
        let o = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(format!(
                "ha-ctl {args:?}: {} {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    };
    let listed = match ctl(&["rollback".as_ref(), "list".as_ref(), n.dir.as_os_str()]) {
        Ok(l) => l,
        Err(e) => {
            errors.push(e);
            String::new()
        }
    };
    for p in &files {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !listed.contains(&name) {
            errors.push(format!(
                "`ha-ctl rollback list` on {} does not list {name}",
                n.name
            ));
        }
        match ctl(&["rollback".as_ref(), "show".as_ref(), p.as_os_str()]) {
            Ok(t) => text.push_str(&t),
            Err(e) => errors.push(e),
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
    let (net, desc) = Net::choose(NODES);
    let feats = Features::detect(&net);
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
                    .filter(|n| !(feats.has(*n) || force && product_feature(*n)))
                    .collect();
                if !missing.is_empty() {
                    let (feature, tool): (Vec<Need>, Vec<Need>) =
                        missing.iter().partition(|n| product_feature(**n));
                    let mut why = Vec::new();
                    if !feature.is_empty() {
                        why.push(format!("feature missing: {feature:?}"));
                    }
                    if !tool.is_empty() {
                        why.push(format!("tool missing: {tool:?}"));
                    }
                    let why = why.join("; ");
                    if !feature.is_empty() && !SKIP_MISSING_FEATURES {
                        failed.push(format!("{label}: {why}"));
                        println!("faults: {label}: FAILED ({why})");
                    } else if it == 0 {
                        println!("faults: {label}: SKIPPED ({why}) ########");
                        skipped.push(label);
                    }
                    continue;
                }
                let t = Instant::now();
                // The full form varies the load phases from one iteration to the next.
                let phase = if full {
                    phase * (4 + it % 3) / 4
                } else {
                    phase
                };
                // A panic (a node that would not start, a broken setup) fails
                // this run, not the suite: the others still run and count.
                let o = net.guarded(
                    || run_one(sc, ms, it, &net, &feats, phase),
                    |msg| Outcome {
                        errors: vec![format!("the run panicked: {msg}")],
                        ..Outcome::default()
                    },
                );
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
            "faults: {} scenario(s) SKIPPED (feature or tool missing):",
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

#[cfg(test)]
mod tests {
    use super::keys_in;

    #[test]
    fn keys_in_finds_every_writer_key() {
        let k = keys_in("seq 3 txid t set /f/w0/k0000001 = x\nset /f/w12/k0000002\u{0}/f/w1/k9");
        assert_eq!(k.len(), 3, "{k:?}");
        assert!(
            k.contains("/f/w0/k0000001") && k.contains("/f/w12/k0000002") && k.contains("/f/w1/k9")
        );
    }
}
