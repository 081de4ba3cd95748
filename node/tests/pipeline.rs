//! The pipelined commit path with real ha-node processes: a secondary that stops reading
//! its socket (SIGSTOP) never makes commits on the primary hang past the ack deadline (and
//! in async mode, once its socket is full, not at all); a primary frozen past its ack
//! deadline does not declare its secondary dead; under concurrent clients a reply means its
//! transaction (and every one before it) is durable on the secondary, each client's replies
//! in commit order.

mod common;
use common::*;
use confd_ha::client::data::Txn;
use confd_ha::errcode::*;
use confd_ha::proto::ha::{HaEvent, NOTIF_HA_INFO};
use confd_ha::value::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
/// Clients committing at once.
const CLIENTS: usize = 8;
/// Bytes per value in the frozen-secondary test: enough that the frozen secondary's socket
/// buffers fill within its ack deadline, so that the primary's writes to it stop being taken.
const BIG_VALUE_BYTES: usize = 64 * 1024;

/// The seq in a transaction id `<node>-<seq>-<micros>`.
fn seq_of(txid: &str) -> u64 {
    let parts: Vec<&str> = txid.rsplitn(3, '-').collect();
    parts[1].parse().unwrap_or_else(|_| panic!("txid {txid}"))
}

/// Every commit of CLIENTS clients writing BIG_VALUE_BYTES values: when it started, how
/// long it took, and its outcome (the error code).
type Commits = Vec<(Instant, Duration, Result<(), i32>)>;
type Seen = Arc<Mutex<Commits>>;

fn load(p: &Node, stop: &Arc<AtomicBool>, seen: &Seen) -> Vec<std::thread::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|c| {
            let (ep, stop, seen) = (p.ep(), stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut d = confd_ha::client::data::DataClient::connect(&ep).expect("connect");
                let mut i = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let mut t = Txn::new();
                    let mut v = vec![(c as u8).wrapping_add(i as u8); BIG_VALUE_BYTES];
                    v[..4].copy_from_slice(&i.to_be_bytes());
                    t.set(&format!("/c{c}"), Value::Buf(v));
                    let t0 = Instant::now();
                    let r = d.commit(&t).map(|_| ()).map_err(|e| e.errno());
                    seen.lock().unwrap().push((t0, t0.elapsed(), r));
                    i += 1;
                }
            })
        })
        .collect()
}

/// Starts a primary with secondaries s1 and s2 (`extra` options on all three), puts load
/// on it, freezes s1, and waits until the primary drops s1 and 50 more commits went
/// through. Returns the commits seen, how long after the freeze s1 was dropped, and when
/// it was frozen.
fn freeze_under_load(extra: &[&str]) -> (Commits, Duration, Instant, Node, Node) {
    let port = free_port();
    let p = Node::start("p", 2, port, extra);
    let s1 = Node::start("s1", 3, port, extra);
    let s2 = Node::start("s2", 4, port, extra);
    p.ha().beprimary("p").unwrap();
    let mut evp = p.events(NOTIF_HA_INFO);
    s1.ha().besecondary("s1", &p.as_primary(), true).unwrap();
    s2.ha().besecondary("s2", &p.as_primary(), true).unwrap();
    p.set("/warm", Value::Int32(1));
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Seen = Default::default();
    let clients = load(&p, &stop, &seen);
    // Load flowing to both secondaries, then s1 stops reading.
    wait_for("commits under load", T, || {
        (seen.lock().unwrap().len() >= 50).then_some(())
    });
    s1.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    let died = expect_event(&mut evp, T, |e| matches!(e, HaEvent::SecondaryDied(_)));
    let dropped_after = frozen.elapsed();
    assert!(matches!(died, HaEvent::SecondaryDied(n) if n.id == buf("s1")));
    // Commits go on without it.
    let n = seen.lock().unwrap().len();
    wait_for("commits after the drop", T, || {
        (seen.lock().unwrap().len() >= n + 50).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    s1.signal(libc::SIGCONT);
    // s2 has what the primary has (in async mode, shortly).
    for c in 0..CLIENTS {
        let k = format!("/c{c}");
        let want = p.get(&k);
        wait_for(&format!("s2 to have {k}"), T, || {
            (s2.get(&k) == want).then_some(())
        });
    }
    (seen, dropped_after, frozen, p, s1)
}

/// Sync mode: the commits that wait for the frozen secondary complete once it is declared
/// dead at the ack deadline (3 ticks), never later, and none fails.
#[test]
fn a_secondary_that_stops_reading_never_hangs_commits() {
    let (seen, dropped_after, frozen, p, _s1) = freeze_under_load(&[]);
    // The ack deadline is 3 ticks (600 ms); a loaded machine adds scheduling delay but
    // nothing near this bound.
    let bound = Duration::from_secs(8);
    assert!(
        dropped_after < bound,
        "s1 dropped {dropped_after:?} after it froze"
    );
    let mut aborted = 0;
    for (t0, took, r) in &seen {
        assert!(
            *took < bound,
            "a commit started {:?} after the freeze took {took:?}",
            t0.saturating_duration_since(frozen)
        );
        match r {
            Ok(()) => {}
            Err(code) if *code == CONFD_ERR_HA_ABORT => aborted += 1,
            Err(code) => panic!("commit failed with {code}"),
        }
    }
    // s1 was declared dead (no ack within the deadline, or no ticks): the commits that
    // waited for it succeed.
    assert_eq!(aborted, 0, "{aborted} commits aborted");
    let log = p.log_text();
    assert!(
        log.contains("s1 at 127.0.0.3 dropped: no ack for transaction")
            || log.contains("s1 at 127.0.0.3 dropped: no ticks"),
        "{log}"
    );
}

/// Async mode, so that data to the frozen secondary piles up until its socket buffers are
/// full: the committer never waits for that socket (it queues for the writer thread), so
/// no commit waits anywhere near the 6 s (3 ticks of 2 s) after which the frozen secondary
/// is declared dead (or until its queue passes MAX_QUEUED_BYTES and it is cut off). A
/// committer that blocked on the full socket would hold every commit until then.
#[test]
fn a_full_secondary_socket_does_not_block_the_committer() {
    let (seen, dropped_after, frozen, p, _s1) =
        freeze_under_load(&["--replication", "async", "--tick-timeout", "2s"]);
    let during = seen
        .iter()
        .filter(|(t0, _, _)| *t0 >= frozen && *t0 < frozen + dropped_after)
        .count();
    // Far more data than the socket buffers hold went out while s1 was frozen.
    assert!(
        during * BIG_VALUE_BYTES > 64 << 20,
        "only {during} commits while s1 was frozen"
    );
    for (t0, took, r) in &seen {
        assert!(r.is_ok(), "commit failed: {r:?}");
        assert!(
            *took < Duration::from_secs(3),
            "a commit started {:?} after the freeze took {took:?}",
            t0.saturating_duration_since(frozen)
        );
    }
    let log = p.log_text();
    assert!(
        log.contains("s1 at 127.0.0.3 dropped: no ticks")
            || log
                .contains("s1 at 127.0.0.3 dropped: more than 256 MiB of replication data unread"),
        "{log}"
    );
}

#[test]
fn replies_come_in_commit_order_once_the_secondary_has_them() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    p.ha().beprimary("p").unwrap();
    s.ha().besecondary("s", &p.as_primary(), true).unwrap();
    let replies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (ep, sep, replies) = (p.ep(), s.ep(), replies.clone());
        clients.push(std::thread::spawn(move || {
            let mut d = confd_ha::client::data::DataClient::connect(&ep).expect("connect");
            let mut ds = confd_ha::client::data::DataClient::connect(&sep).expect("connect");
            let mut last = 0;
            for i in 0..40 {
                let mut t = Txn::new();
                t.set(&format!("/c{c}"), Value::Int32(i));
                let seq = seq_of(&d.commit(&t).expect("commit"));
                // One client's commits are ordered: each reply names a later transaction.
                assert!(seq > last, "client {c}: seq {seq} after {last}");
                last = seq;
                // A reply comes only once the secondary has the transaction durable, and
                // every transaction before it (its seq is its last durable one).
                let st = ds.stats().expect("stats");
                let sseq = st
                    .iter()
                    .find(|(k, _)| k == "seq")
                    .map(|(_, v)| *v)
                    .unwrap();
                assert!(
                    sseq as u64 >= seq,
                    "client {c}: reply for {seq} while the secondary is at {sseq}"
                );
                assert_eq!(ds.get(&format!("/c{c}")).ok(), Some(Value::Int32(i)));
                replies.lock().unwrap().push(seq);
            }
        }));
    }
    for c in clients {
        c.join().unwrap();
    }
    let mut r = replies.lock().unwrap().clone();
    r.sort_unstable();
    r.dedup();
    assert_eq!(r.len(), CLIENTS * 40, "every commit got its own seq");
}

/// The primary is frozen (SIGSTOP) longer than its ack deadline while commits are in flight,
/// then resumed: the secondary, which kept acknowledging what it had, is not declared dead
/// for the primary's own silence (its acks wait unread in the socket until the primary's
/// reader runs again), and no commit fails.
#[test]
fn a_frozen_primary_does_not_declare_its_secondary_dead() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    // The secondary notices a silent primary only after 3 x 2 s, well after the freeze.
    let s = Node::start("s", 3, port, &["--tick-timeout", "2s"]);
    p.ha().beprimary("p").unwrap();
    s.ha().besecondary("s", &p.as_primary(), true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Seen = Default::default();
    let clients = load(&p, &stop, &seen);
    for round in 0..3 {
        let n = seen.lock().unwrap().len();
        wait_for("commits under load", T, || {
            (seen.lock().unwrap().len() >= n + 30).then_some(())
        });
        // Longer than the primary's ack deadline (3 x 200 ms) and STALL_SLACK together.
        p.signal(libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(1500));
        p.signal(libc::SIGCONT);
        let n = seen.lock().unwrap().len();
        wait_for(&format!("commits after thaw {round}"), T, || {
            (seen.lock().unwrap().len() >= n + 30).then_some(())
        });
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    for (_, _, r) in seen.lock().unwrap().iter() {
        assert!(r.is_ok(), "commit failed: {r:?}");
    }
    assert_eq!(p.stat("secondaries_dropped"), 0, "{}", p.log_text());
    assert_eq!(p.status().1.len(), 1);
}
