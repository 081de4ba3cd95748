//! Replication safety and storage faults, with real ha-node processes: a planned
//! switchover under load loses no acknowledged commit, min-secondaries refuses and
//! accepts, a diverged re-join leaves a rollback file that ha-ctl lists and shows,
//! store I/O errors (injected into fdatasync by strace) fail-stop the role, and
//! damaged store files are refused at start.

mod common;
use common::*;
use confd_ha::client::data::{DataClient, Txn};
use confd_ha::client::events::EventClient;
use confd_ha::client::ha::HaClient;
use confd_ha::client::Endpoint;
use confd_ha::errcode::*;
use confd_ha::proto::ha::{HaEvent, HaNode, NodeAddr, NOTIF_HA_INFO, STATE_NONE, STATE_PRIMARY};
use confd_ha::value::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// An ha-node process, optionally run under strace (in its own process group, so that
/// both die together), with its own data directory.
struct Proc {
    name: String,
    ip: String,
    ha_port: u16,
    ipc_port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _tmp: TempDir,
}

/// Whether strace can trace a process here (it needs ptrace).
fn have_strace() -> bool {
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Proc {
    fn start(name: &str, n: u8, ha_port: u16, extra: &[&str], strace: &[&str]) -> Proc {
        let tmp = TempDir::new(name);
        let mut p = Proc {
            name: name.into(),
            ip: format!("127.0.0.{n}"),
            ha_port,
            ipc_port: free_port(),
            dir: tmp.path().join("data"),
            log: tmp.path().join("node.log"),
            child: None,
            _tmp: tmp,
        };
        p.spawn(extra, strace);
        p
    }

    fn spawn(&mut self, extra: &[&str], strace: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let bin = env!("CARGO_BIN_EXE_ha-node");
        let mut cmd = if strace.is_empty() {
            Command::new(bin)
        } else {
            let mut c = Command::new("strace");
            c.args(["-f", "-qq", "-o", "/dev/null"])
                .args(strace)
                .arg(bin);
            c
        };
        cmd.arg("--ipc-addr")
            .arg(format!("127.0.0.1:{}", self.ipc_port))
            .arg("--ha-addr")
            .arg(format!("{}:{}", self.ip, self.ha_port))
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--tick-timeout")
            .arg(TICK)
            .arg("--log-level")
            .arg("debug")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        self.child = Some(cmd.spawn().expect("spawn"));
        let addr = format!("127.0.0.1:{}", self.ipc_port);
        wait_for(&format!("{} to accept", self.name), T, || {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("{} exited early: {st}\n{}", self.name, self.log_text());
            }
            std::net::TcpStream::connect(&addr).ok()
        });
    }

    fn ep(&self) -> Endpoint {
        Endpoint::Tcp(format!("127.0.0.1:{}", self.ipc_port))
    }
    fn ha(&self) -> HaClient {
        HaClient::connect(&self.ep(), TOKEN).expect("HA connect")
    }
    fn data(&self) -> DataClient {
        DataClient::connect(&self.ep()).expect("data connect")
    }
    fn events(&self) -> EventClient {
        EventClient::connect(&self.ep(), NOTIF_HA_INFO, 0).expect("events")
    }
    fn as_primary(&self) -> HaNode {
        HaNode {
            id: buf(&self.name),
            addr: NodeAddr::V4(self.ip.parse().unwrap()),
        }
    }
    fn stats(&self) -> Vec<(String, i64)> {
        self.data().stats().expect("stats")
    }
    fn stat(&self, key: &str) -> i64 {
        let st = self.stats();
        st.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no stat {key} in {st:?}"))
    }
    fn commit(&self, path: &str, v: Value) -> Result<String, confd_ha::error::Error> {
        let mut t = Txn::new();
        t.set(path, v);
        self.data().commit(&t)
    }
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's process group.
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
    /// Waits for the node (not strace) to exit; returns its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let c = self.child.as_mut().expect("running");
        let st = wait_for(&format!("{} to exit", self.name), T, || {
            c.try_wait().ok().flatten()
        });
        self.child = None;
        st.code()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log_text());
        }
    }
}

fn errno(e: &confd_ha::error::Error) -> i32 {
    e.errno()
}

/// Planned switchover while 4 clients commit: benone on n1, then beprimary on n2.
/// Every commit n1 acknowledged as primary is on n2 (n2's fdatasync is slowed down
/// with strace when it can be, which made the old code lose 2-3 of them every time).
#[test]
fn planned_switchover_under_load_loses_no_acknowledged_commit() {
    let port = free_port();
    let slow: &[&str] = if have_strace() {
        &[
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:delay_exit=20000",
        ]
    } else {
        eprintln!("strace unavailable: n2's disk is not slowed down");
        &[]
    };
    let n1 = Proc::start("n1", 2, port, &[], &[]);
    let n2 = Proc::start("n2", 3, port, &[], slow);
    n1.ha().beprimary("n1").unwrap();
    n2.ha().besecondary("n2", &n1.as_primary(), true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, u32, String)>>> = Arc::default();
    let writers: Vec<_> = (0..4)
        .map(|c| {
            let (ep, stop, acked) = (n1.ep(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut d = DataClient::connect(&ep).unwrap();
                let mut i = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let path = format!("/w{c}/i{i}");
                    let mut t = Txn::new();
                    t.set(&path, Value::UInt32(i));
                    if let Ok(txid) = d.commit(&t) {
                        acked.lock().unwrap().push((path, i, txid));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    wait_for("commits under load", T, || {
        (acked.lock().unwrap().len() >= 40).then_some(())
    });
    n1.ha().benone().unwrap();
    n2.ha().beprimary("n2").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap();
    let as_primary: Vec<_> = acked.iter().filter(|a| a.2.starts_with("n1-")).collect();
    assert!(as_primary.len() >= 40, "{} commits", as_primary.len());
    let mut d2 = n2.data();
    let missing: Vec<_> = as_primary
        .iter()
        .filter(|(p, i, _)| d2.get(p).ok() != Some(Value::UInt32(*i)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged commits missing on n2: {missing:?}",
        missing.len(),
        as_primary.len()
    );
    eprintln!(
        "switchover: {} commits acknowledged by n1 as primary, all on n2",
        as_primary.len()
    );
}

/// min-secondaries 1: writes refused without an in-sync secondary (NOT_WRITABLE, a
/// message, stats), accepted with one, refused again when it is gone.
#[test]
fn min_secondaries_refuses_and_accepts() {
    let port = free_port();
    let n1 = Proc::start("n1", 2, port, &["--min-secondaries", "1"], &[]);
    let mut n2 = Proc::start("n2", 3, port, &[], &[]);
    // In NONE too: a commit needs a secondary.
    let e = n1.commit("/x", Value::Int32(0)).unwrap_err();
    assert_eq!(errno(&e), CONFD_ERR_NOT_WRITABLE, "{e}");
    n1.ha().beprimary("n1").unwrap();
    let e = n1.commit("/x", Value::Int32(1)).unwrap_err();
    assert_eq!(errno(&e), CONFD_ERR_NOT_WRITABLE, "{e}");
    assert!(e.to_string().contains("min-secondaries 1"), "{e}");
    assert_eq!(n1.stat("min_secondaries_met"), 0);
    assert_eq!(n1.stat("writable"), 0);
    assert_eq!(n1.stat("min_secondaries"), 1);
    n2.ha().besecondary("n2", &n1.as_primary(), true).unwrap();
    wait_for("min-secondaries met", T, || {
        (n1.stat("min_secondaries_met") == 1).then_some(())
    });
    assert_eq!(n1.stat("writable"), 1);
    n1.commit("/x", Value::Int32(2)).unwrap();
    assert_eq!(n2.data().get("/x").unwrap(), Value::Int32(2));
    // The secondary dies: once it is dropped, writes are refused again.
    n2.kill9();
    wait_for("min-secondaries lost", T, || {
        (n1.stat("min_secondaries_met") == 0).then_some(())
    });
    let e = n1.commit("/x", Value::Int32(3)).unwrap_err();
    assert_eq!(errno(&e), CONFD_ERR_NOT_WRITABLE, "{e}");
    assert_eq!(n1.data().get("/x").unwrap(), Value::Int32(2));
    let log = n1.log_text();
    assert!(log.contains("min-secondaries 1 met"), "{log}");
    assert!(log.contains("min-secondaries 1 not met"), "{log}");
}

/// A secondary that wrote on its own (in NONE) re-joins: the copy discards its two
/// transactions, which land in a rollback file that ha-ctl lists and shows.
#[test]
fn diverged_rejoin_keeps_a_rollback_file() {
    let port = free_port();
    let n1 = Proc::start("n1", 2, port, &[], &[]);
    let n2 = Proc::start("n2", 3, port, &[], &[]);
    n1.ha().beprimary("n1").unwrap();
    n2.ha().besecondary("n2", &n1.as_primary(), true).unwrap();
    n1.commit("/base", Value::Int32(1)).unwrap();
    let base_seq = n2.stat("seq");
    n2.ha().benone().unwrap();
    n2.commit("/mine/a", buf("lost-a")).unwrap();
    let mut t = Txn::new();
    t.set("/mine/b", buf("lost-b")).delete("/base");
    let last_txid = n2.data().commit(&t).unwrap();
    n1.commit("/theirs", Value::Int32(2)).unwrap();
    assert_eq!(n2.stat("rollback_files"), 0);
    n2.ha().besecondary("n2", &n1.as_primary(), true).unwrap();
    assert_eq!(n2.data().get("/mine/a").ok(), None);
    assert_eq!(n2.data().get("/base").unwrap(), Value::Int32(1));
    assert_eq!(n2.stat("discarded_txns"), 2);
    assert_eq!(n2.stat("rollback_files"), 1);
    let log = n2.log_text();
    assert!(
        log.contains("WARN ha: the full copy from") && log.contains("discarded 2 local"),
        "{log}"
    );
    let ctl = env!("CARGO_BIN_EXE_ha-ctl");
    let out = Command::new(ctl)
        .args(["rollback", "list"])
        .arg(&n2.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8(out.stdout).unwrap();
    let files: Vec<&str> = list.lines().collect();
    assert_eq!(files.len(), 1, "{list}");
    assert!(
        files[0].contains(&format!("seq{}-{}", base_seq + 1, base_seq + 2)),
        "{list}"
    );
    let out = Command::new(ctl)
        .args(["rollback", "show", files[0]])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let show = String::from_utf8(out.stdout).unwrap();
    assert!(show.contains("transactions: 2"), "{show}");
    assert!(show.contains(&format!("common_seq: {base_seq}")), "{show}");
    assert!(show.contains(&format!("txid {last_txid}")), "{show}");
    assert!(show.contains("set /mine/a lost-a"), "{show}");
    assert!(show.contains("set /mine/b lost-b"), "{show}");
    assert!(show.contains("delete /base"), "{show}");
    // A re-join that discards nothing writes no file.
    n2.ha().benone().unwrap();
    n1.commit("/more", Value::Int32(3)).unwrap();
    n2.ha().besecondary("n2", &n1.as_primary(), true).unwrap();
    assert_eq!(n2.stat("rollback_files"), 1);
    assert_eq!(n2.stat("discarded_txns"), 2);
    let out = Command::new(ctl)
        .args(["rollback", "show", "/nonexistent/file"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// One fdatasync fails on the primary: the commit gets an error (never OK), the node
/// leaves PRIMARY (IS_NONE) and never reports itself writable while the store is out,
/// then reopens its store and can be primary again.
#[test]
fn store_error_on_primary_fail_stops_the_role() {
    if !have_strace() {
        eprintln!("SKIPPED: strace cannot trace here");
        return;
    }
    let port = free_port();
    // strace counts calls per thread: the committer's 10th fdatasync is its 10th commit
    // (opening the store takes fewer, on other threads).
    let n1 = Proc::start(
        "n1",
        2,
        port,
        &[],
        &[
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:error=EIO:when=10",
        ],
    );
    n1.ha().beprimary("n1").unwrap();
    let mut ev = n1.events();
    let mut failed = None;
    for i in 0..12 {
        match n1.commit(&format!("/k{i}"), Value::Int32(i)) {
            Ok(_) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let e = failed.expect("a commit fails");
    assert_eq!(errno(&e), CONFD_ERR_OS, "{e}");
    assert!(e.to_string().contains("local store"), "{e}");
    assert!(e.to_string().contains("unknown"), "{e}");
    let got = expect_event(&mut ev, T, |e| matches!(e, HaEvent::IsNone));
    assert_eq!(got, HaEvent::IsNone);
    // While failed, or after reopening: never PRIMARY, never writable with store_failed.
    let mut saw_failed = false;
    wait_for("the store reopened", T, || {
        let st = n1.stats();
        let get = |k: &str| st.iter().find(|(n, _)| n == k).unwrap().1;
        assert_ne!(get("state"), i64::from(STATE_PRIMARY), "{st:?}");
        if get("store_failed") == 1 {
            saw_failed = true;
            assert_eq!(get("writable"), 0, "{st:?}");
            None
        } else {
            Some(())
        }
    });
    let _ = saw_failed;
    let log = n1.log_text();
    assert!(log.contains("leaving the primary role"), "{log}");
    assert!(log.contains("reopened"), "{log}");
    // Fit again: primary and writable.
    n1.ha().beprimary("n1").unwrap();
    n1.commit("/after", Value::Int32(1)).unwrap();
    assert_eq!(n1.stat("store_failed"), 0);
}

/// A secondary's fdatasync fails: NOPRIMARY with the local-store reason (not
/// CONFD_ERR_HA_CLOSED), and after the store reopened, besecondary works again.
#[test]
fn store_error_on_secondary_blames_the_local_store() {
    if !have_strace() {
        eprintln!("SKIPPED: strace cannot trace here");
        return;
    }
    let port = free_port();
    let n1 = Proc::start("n1", 2, port, &[], &[]);
    let n2 = Proc::start(
        "n2",
        3,
        port,
        &[],
        &[
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:error=EIO:when=10",
        ],
    );
    n1.ha().beprimary("n1").unwrap();
    n2.ha().besecondary("n2", &n1.as_primary(), true).unwrap();
    let mut ev = n2.events();
    // The 10th transaction n2 applies (its applier's 10th fdatasync) fails there.
    // Commits may then fail on n1 (HA_ABORT: the secondary left before confirming).
    for i in 0..12 {
        match n1.commit(&format!("/k{i}"), Value::Int32(i)) {
            Ok(_) => {}
            Err(e) => assert_eq!(errno(&e), CONFD_ERR_HA_ABORT, "{e}"),
        }
    }
    let got = expect_event(&mut ev, T, |e| matches!(e, HaEvent::NoPrimary { .. }));
    assert_eq!(
        got,
        HaEvent::NoPrimary {
            reason: CONFD_ERR_OS
        }
    );
    wait_for("n2 reopened its store", T, || {
        (n2.stat("store_failed") == 0).then_some(())
    });
    n2.ha().besecondary("n2", &n1.as_primary(), true).unwrap();
    n1.commit("/after", Value::Int32(9)).unwrap();
    assert_eq!(n2.data().get("/after").unwrap(), Value::Int32(9));
    assert_eq!(n2.data().txid().unwrap(), n1.data().txid().unwrap());
}

/// A store that keeps failing: joins are refused with a reason naming the local store;
/// with --on-store-error exit the node exits with status 3 instead.
#[test]
fn persistent_store_error_refuses_joins_or_exits() {
    if !have_strace() {
        eprintln!("SKIPPED: strace cannot trace here");
        return;
    }
    let port = free_port();
    let n1 = Proc::start("n1", 2, port, &[], &[]);
    let n2 = Proc::start(
        "n2",
        3,
        port,
        &[],
        &[
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:error=EIO:when=10+",
        ],
    );
    n1.ha().beprimary("n1").unwrap();
    for i in 0..9 {
        n2.commit("/a", Value::Int32(i)).unwrap();
    }
    // The committer's 10th fdatasync and every later one fail.
    let e = n2.commit("/b", Value::Int32(2)).unwrap_err();
    assert_eq!(errno(&e), CONFD_ERR_OS, "{e}");
    // Within the reopen interval: out of service, refusing roles and writes.
    let st = n2.stats();
    let get = |k: &str| st.iter().find(|(n, _)| n == k).unwrap().1;
    assert_eq!(get("writable"), 0, "{st:?}");
    match n2.ha().besecondary("n2", &n1.as_primary(), true) {
        Err(e) => {
            assert_eq!(errno(&e), CONFD_ERR_OS, "{e}");
            assert!(e.to_string().contains("local store"), "{e}");
        }
        // Only if the store was reopened already (the machine stalled for seconds).
        Ok(()) => assert!(n2.log_text().contains("reopened"), "besecondary accepted"),
    }
    let _ = n2.ha().benone();
    // Every later commit fails too, and each fail-stops again.
    wait_for("n2 back in NONE", T, || {
        (n2.stat("store_failed") == 0).then_some(())
    });
    let e = n2.commit("/c", Value::Int32(3)).unwrap_err();
    assert_eq!(errno(&e), CONFD_ERR_OS, "{e}");
    assert_eq!(n2.stat("store_failed"), 1);
    assert_eq!(n2.ha().get_status().unwrap().0, STATE_NONE);

    let mut n3 = Proc::start(
        "n3",
        4,
        port,
        &["--on-store-error", "exit"],
        &[
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:error=EIO:when=10+",
        ],
    );
    for i in 0..9 {
        n3.commit("/a", Value::Int32(i)).unwrap();
    }
    assert!(n3.commit("/b", Value::Int32(2)).is_err());
    assert_eq!(n3.wait_exit(), Some(3));
    assert!(n3.log_text().contains("on-store-error exit"));
}

fn start_fails(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ha-node"))
        .arg("--ipc-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--ha-addr")
        .arg(format!("127.0.0.2:{}", free_port()))
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("store.redb"), "{err}");
    assert!(err.contains("move the data directory away"), "{err}");
    err
}

/// A 0-byte or truncated store.redb is refused at start with a clear error (no panic,
/// no silent empty store); an empty data directory starts normally.
#[test]
fn damaged_store_files_are_refused_at_start() {
    let port = free_port();
    let mut n = Proc::start("n", 2, port, &[], &[]);
    for i in 0..50 {
        n.commit(&format!("/k{i}"), buf(&"v".repeat(200))).unwrap();
    }
    n.kill9();
    let file = n.dir.join("store.redb");
    let good = std::fs::read(&file).unwrap();
    for cut in [good.len() / 2, 4096, 100] {
        std::fs::write(&file, &good[..cut]).unwrap();
        let err = start_fails(&n.dir);
        assert!(
            err.contains("truncated") || err.contains("damaged"),
            "{err}"
        );
    }
    std::fs::write(&file, b"").unwrap();
    let err = start_fails(&n.dir);
    assert!(err.contains("empty (0 bytes)"), "{err}");
    // The intact file still starts, with its data.
    std::fs::write(&file, &good).unwrap();
    n.spawn(&[], &[]);
    assert_eq!(n.data().get("/k49").unwrap(), buf(&"v".repeat(200)));
}

/// The primary (min-secondaries 1) is frozen (SIGSTOP) while commits wait for its
/// secondary; the secondary gives up on it and is promoted; when the old primary wakes,
/// it acknowledges nothing the new primary lacks: a commit its secondary confirmed
/// before leaving is OK, any other fails (HA_ABORT: outcome unknown; or NOT_WRITABLE
/// once it has no secondary). Its time frozen does not make it declare the secondary
/// dead (which would let a waiting commit succeed).
#[test]
fn frozen_primary_does_not_acknowledge_what_it_could_not_replicate() {
    let port = free_port();
    let slow: &[&str] = if have_strace() {
        &[
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:delay_exit=100000",
        ]
    } else {
        &[]
    };
    let n1 = Proc::start("n1", 2, port, &["--min-secondaries", "1"], &[]);
    let n2 = Proc::start("n2", 3, port, &[], slow);
    n1.ha().beprimary("n1").unwrap();
    n2.ha().besecondary("n2", &n1.as_primary(), true).unwrap();
    wait_for("n2 in sync", T, || {
        (n1.stat("min_secondaries_met") == 1).then_some(())
    });
    let acked: Arc<Mutex<Vec<(String, u32, String)>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let writers: Vec<_> = (0..3)
        .map(|c| {
            let (ep, acked, errors) = (n1.ep(), acked.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut d = DataClient::connect(&ep).unwrap();
                for i in 0.. {
                    let path = format!("/w{c}/i{i}");
                    let mut t = Txn::new();
                    t.set(&path, Value::UInt32(i));
                    match d.commit(&t) {
                        Ok(txid) => acked.lock().unwrap().push((path, i, txid)),
                        Err(e) => {
                            errors.lock().unwrap().push(e.to_string());
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    wait_for("commits", T, || {
        (acked.lock().unwrap().len() >= 10).then_some(())
    });
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(n1.child.as_ref().unwrap().id() as i32, libc::SIGSTOP);
    }
    wait_for("n2 to give up on n1", T, || {
        (n2.stat("state") == i64::from(STATE_NONE)).then_some(())
    });
    n2.ha().beprimary("n2").unwrap();
    // SAFETY: as above.
    unsafe {
        libc::kill(n1.child.as_ref().unwrap().id() as i32, libc::SIGCONT);
    }
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap();
    let mut d2 = n2.data();
    let missing: Vec<_> = acked
        .iter()
        .filter(|(p, i, _)| d2.get(p).ok() != Some(Value::UInt32(*i)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged commits missing on the new primary: {missing:?}",
        missing.len(),
        acked.len()
    );
    let errors = errors.lock().unwrap();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("outcome is unknown") || e.contains("min-secondaries 1")),
        "{errors:?}"
    );
    eprintln!(
        "frozen primary: {} acknowledged, all on n2; {} failed with an unknown outcome",
        acked.len(),
        errors.len()
    );
}

/// Handshake failures say what happened: a secondary with another token refuses the
/// primary (and the primary logs that, not a guess); a peer that goes silent after its
/// hello is logged as a handshake timeout, not as a token mismatch.
#[test]
fn handshake_failures_say_what_happened() {
    use confd_ha::proto::frame::write_frame;
    use confd_ha::proto::term::Term;
    let port = free_port();
    let n1 = Proc::start("n1", 2, port, &[], &[]);
    let n2 = Proc::start("n2", 3, port, &[], &[]);
    n1.ha().beprimary("n1").unwrap();
    let e = HaClient::connect(&n2.ep(), "another-token")
        .unwrap()
        .besecondary("n2", &n1.as_primary(), true)
        .unwrap_err();
    assert_eq!(errno(&e), CONFD_ERR_HA_BADTOKEN, "{e}");
    wait_for("n1 to log the refusal", T, || {
        n1.log_text()
            .contains("refused this node during the handshake: token mismatch")
            .then_some(())
    });
    // A hello, then silence: the primary gives up after its handshake deadline.
    let mut s = std::net::TcpStream::connect(format!("{}:{}", n1.ip, n1.ha_port)).unwrap();
    let hello = Term::Tuple(vec![
        Term::atom("ha_hello"),
        Term::int(1),
        Term::binary([7u8; 32]),
    ]);
    write_frame(&mut s, &hello.encode()).unwrap();
    wait_for("n1 to log the handshake timeout", T, || {
        n1.log_text()
            .contains("did not finish the handshake: handshake not done within 1000 ms")
            .then_some(())
    });
    assert!(!n1.log_text().contains("token mismatch on its side"));
    drop(s);
}

/// Starts one commit on `n1` in a thread and returns once n1 made it durable locally (its
/// `commits` counter moved), i.e. while it waits for the secondaries' acks.
fn commit_in_flight(
    n1: &Proc,
    path: &str,
) -> std::thread::JoinHandle<Result<String, confd_ha::error::Error>> {
    let before = n1.stat("commits");
    let (ep, path) = (n1.ep(), path.to_string());
    let h = std::thread::spawn(move || {
        let mut t = Txn::new();
        t.set(&path, Value::Int32(1));
        DataClient::connect(&ep).unwrap().commit(&t)
    });
    wait_for("the commit to be durable on n1", T, || {
        (n1.stat("commits") > before).then_some(())
    });
    h
}

/// Mode 0 (ConfD's): a secondary that goes away (kill -9) before confirming a commit
/// makes that commit fail with HA_ABORT (outcome unknown), not succeed; benone while a
/// commit waits lets the secondary confirm it first, and the commit succeeds.
#[test]
fn a_commit_succeeds_only_when_confirmed_or_the_secondary_is_declared_dead() {
    if !have_strace() {
        eprintln!("SKIPPED: strace cannot slow the secondary's disk here");
        return;
    }
    let port = free_port();
    let slow = &[
        "-e",
        "trace=fdatasync",
        "-e",
        "inject=fdatasync:delay_exit=400000",
    ];
    let n1 = Proc::start("n1", 2, port, &[], &[]);
    let mut n2 = Proc::start("n2", 3, port, &[], slow);
    n1.ha().beprimary("n1").unwrap();
    n2.ha().besecondary("n2", &n1.as_primary(), true).unwrap();

    // benone while the commit waits: it is confirmed first, then the role changes.
    let h = commit_in_flight(&n1, "/drained");
    n1.ha().benone().unwrap();
    h.join()
        .unwrap()
        .expect("the commit sent before benone succeeds");
    assert_eq!(n2.data().get("/drained").unwrap(), Value::Int32(1));

    // The secondary dies while the commit waits: the commit fails, outcome unknown.
    n1.ha().beprimary("n1").unwrap();
    n2.ha().besecondary("n2", &n1.as_primary(), true).unwrap();
    let h = commit_in_flight(&n1, "/unconfirmed");
    n2.kill9();
    let e = h
        .join()
        .unwrap()
        .expect_err("an unconfirmed commit must not succeed");
    assert_eq!(errno(&e), CONFD_ERR_HA_ABORT, "{e}");
    assert!(e.to_string().contains("outcome is unknown"), "{e}");
    // With the secondary gone, commits succeed again (ConfD's behaviour).
    n1.commit("/alone", Value::Int32(2)).unwrap();
}
