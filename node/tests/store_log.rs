//! The store's commit log with real ha-node processes (issue 11): group commit packs
//! concurrent transactions into one fdatasync (counted, not timed); kill -9 at random moments
//! under load loses no acknowledged commit; SIGTERM closes the store so that the next start
//! replays nothing.

mod common;
use common::*;
use confd_ha::client::data::{DataClient, Txn};
use confd_ha::proto::ha::STATE_NONE;
use confd_ha::value::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Writers committing `/w/<writer>` = n with n = 1, 2, ... until stopped; each records the
/// last n the node acknowledged.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<u32, u32>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    fn start(node: &Node, n: u32, first: &BTreeMap<u32, u32>) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(first.clone()));
        let mut threads = Vec::new();
        for w in 0..n {
            let ep = node.ep();
            let (stop, acked) = (stop.clone(), acked.clone());
            let from = first.get(&w).copied().unwrap_or(0);
            threads.push(std::thread::spawn(move || {
                let Ok(mut d) = DataClient::connect(&ep) else {
                    return;
                };
                let mut v = from;
                while !stop.load(Ordering::Relaxed) {
                    v += 1;
                    let mut t = Txn::new();
                    t.set(&format!("/w/{w}"), Value::UInt32(v));
                    match d.commit(&t) {
                        Ok(_) => {
                            acked.lock().unwrap().insert(w, v);
                        }
                        // The node was killed (or refused): this value's outcome is unknown.
                        Err(_) => return,
                    }
                }
            }));
        }
        Writers {
            stop,
            acked,
            threads,
        }
    }

    fn finish(self) -> BTreeMap<u32, u32> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// A stat of the node, retrying a connection refused under load (the writers hold 16).
fn stat(node: &Node, key: &str) -> i64 {
    wait_for(&format!("stat {key}"), T, || {
        let st = DataClient::connect(&node.ep())
            .and_then(|mut d| d.stats())
            .ok()?;
        st.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    })
}

fn value_of(node: &Node, path: &str) -> u32 {
    match node.get(path) {
        Some(Value::UInt32(v)) => v,
        None => 0,
        other => panic!("{path}: unexpected {other:?}"),
    }
}

#[test]
fn store_log_group_commit_packs_concurrent_transactions_into_one_fdatasync() {
    let node = Node::start("group", 2, free_port(), &[]);
    node.wait_state(STATE_NONE, T);
    let syncs0 = stat(&node, "store_log_fdatasyncs");
    let commits0 = stat(&node, "commits");
    // 16 writers commit concurrently until 2000 commits were made.
    let w = Writers::start(&node, 16, &BTreeMap::new());
    wait_for("2000 commits", Duration::from_secs(120), || {
        (stat(&node, "commits") - commits0 >= 2000).then_some(())
    });
    let acked = w.finish();
    let commits = stat(&node, "commits") - commits0;
    let syncs = stat(&node, "store_log_fdatasyncs") - syncs0;
    eprintln!("{commits} commits in {syncs} fdatasyncs of the commit log");
    assert!(syncs > 0);
    // With 16 writers waiting on each fdatasync, groups hold several transactions each.
    assert!(
        syncs * 2 <= commits,
        "{commits} commits took {syncs} fdatasyncs: not grouped"
    );
    for (w, v) in acked {
        assert!(value_of(&node, &format!("/w/{w}")) >= v);
    }
}

#[test]
fn store_log_kill9_at_random_moments_under_load_loses_no_acknowledged_commit() {
    let mut node = Node::start("kill9", 2, free_port(), &[]);
    let mut acked: BTreeMap<u32, u32> = BTreeMap::new();
    let mut seed = std::process::id() as u64;
    for round in 0..10 {
        node.wait_state(STATE_NONE, T);
        let w = Writers::start(&node, 4, &acked);
        // A pseudo-random moment between 20 and 300 ms into the load.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(20 + (seed >> 33) % 280));
        node.kill9();
        acked = w.finish();
        node.spawn();
        for (w, v) in acked.clone().iter() {
            let got = value_of(&node, &format!("/w/{w}"));
            assert!(
                got >= *v,
                "round {round}: writer {w} was acknowledged {v}, the restarted node has {got}\n{}",
                node.log_text()
            );
            // Go on from what the node has (one more than acknowledged may be durable).
            acked.insert(*w, got);
        }
    }
    assert!(
        acked.values().sum::<u32>() > 10,
        "the writers made progress: {acked:?}"
    );
}

#[test]
fn store_log_sigterm_closes_the_store_and_the_next_start_replays_nothing() {
    let mut node = Node::start("term", 2, free_port(), &[]);
    node.wait_state(STATE_NONE, T);
    for i in 0..50u32 {
        node.set(&format!("/t/{i}"), Value::UInt32(i));
    }
    node.signal(libc::SIGTERM);
    let st = node.wait_exit(T);
    assert!(st.success(), "{st}\n{}", node.log_text());
    let before = node.log_text();
    assert!(before.contains("closed"), "{before}");
    let mark = before.len();
    node.spawn();
    assert_eq!(node.get("/t/49"), Some(Value::UInt32(49)));
    let after = node.log_text()[mark..].to_string();
    assert!(!after.contains("replayed"), "{after}");
    assert!(!after.contains("torn"), "{after}");
    // After kill -9 the next start replays what the last checkpoint did not hold (or
    // nothing, if a checkpoint came in between): never an error.
    node.set("/t/after", Value::UInt32(1));
    node.kill9();
    node.spawn();
    assert_eq!(node.get("/t/after"), Some(Value::UInt32(1)));
}
