//! Re-joining without a full copy (issue 11): a secondary whose last transaction is in the
//! primary's history gets only the transactions it missed, also while commits go on; one
//! whose history diverged (beside or ahead of the primary's) or fell out of the backlog
//! (`txlog-max-txns`) gets a full copy, and what that discards is in a rollback file.

mod common;
use common::*;
use confd_ha::client::data::Txn;
use confd_ha::proto::frame::{read_frame, write_frame};
use confd_ha::proto::ha::{STATE_NONE, STATE_SECONDARY};
use confd_ha::proto::term::Term;
use confd_ha::value::Value;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Commits `n` transactions on `p`, one key each under `dir`.
fn commit_many(p: &Node, dir: &str, n: i64) {
    let mut d = p.data();
    for i in 0..n {
        let mut t = Txn::new();
        t.set(&format!("{dir}/k{i:05}"), Value::Int64(i));
        d.commit(&t).unwrap();
    }
}

/// Every key of `commit_many(_, dir, n)` has its value on `s`.
fn assert_has_all(s: &Node, dir: &str, n: i64) {
    let mut d = s.data();
    for i in 0..n {
        assert_eq!(
            d.get(&format!("{dir}/k{i:05}")).ok(),
            Some(Value::Int64(i)),
            "{dir}/k{i:05} on {}",
            s.name
        );
    }
}

/// Waits until `p` no longer lists any secondary (after a secondary's benone: until then a
/// commit on `p` still counts on it, and its leaving makes that commit's outcome unknown,
/// CONFD_ERR_HA_ABORT, by design).
fn until_left(p: &Node) {
    wait_for("the primary to see its secondary leave", T, || {
        p.data()
            .node_state()
            .ok()
            .filter(|st| st.secondaries.is_empty())
            .map(|_| ())
    });
}

fn same_txid(a: &Node, b: &Node) {
    assert_eq!(a.data().txid().unwrap(), b.data().txid().unwrap());
    assert_eq!(a.stat("seq"), b.stat("seq"));
}

/// The primary's per-secondary catch-up and full-copy counters for its one secondary.
fn lag_counters(p: &Node) -> (i64, i64) {
    let st = p.data().node_state().unwrap();
    let l = st.secondaries[0].lag.clone().expect("lag");
    (l.catch_ups, l.full_copies)
}

fn rollback_list(n: &Node) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["rollback", "list"])
        .arg(&n.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rollback_show(file: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["rollback", "show", file])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn rejoin_after_missed_commits_catches_up_without_a_copy() {
    const MISSED: i64 = 300;
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let mut s = Node::start("s", 3, port, &[]);
    p.ha().beprimary("p").unwrap();
    p.set("/base", Value::Int32(1));
    let mut hs = s.ha();
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    assert_eq!(s.stat("full_copies_received"), 1);

    // 1. benone, the primary goes on, besecondary: only the missed transactions come.
    hs.benone().unwrap();
    until_left(&p);
    commit_many(&p, "/a", MISSED);
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    assert_eq!(s.stat("full_copies_received"), 1, "{}", s.log_text());
    assert_eq!(s.stat("catch_ups_received"), 1);
    assert_eq!(p.stat("full_copies_sent"), 1);
    assert_eq!(p.stat("catch_ups_sent"), 1);
    assert_eq!(p.stat("catch_ups"), 1);
    assert_eq!(lag_counters(&p), (1, 1));
    let o = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &p.ipc_port.to_string(),
            "-t",
            TOKEN,
            "status",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(" full_copies=1 catch_ups=1\n"), "{text}");
    same_txid(&p, &s);
    assert_has_all(&s, "/a", MISSED);
    let base = p.stat("seq") - MISSED;
    assert!(
        p.log_text().contains(&format!(
            "catch-up: {MISSED} txns from seq {} to {}",
            base + 1,
            base + MISSED
        )),
        "{}",
        p.log_text()
    );
    assert!(s
        .log_text()
        .contains(&format!("catch-up from p at 127.0.0.2: {MISSED} txns")));
    // The stream goes on after the backlog.
    let txid = p.set("/after", Value::Int32(2));
    assert_eq!(s.get("/after"), Some(Value::Int32(2)));
    assert_eq!(s.data().txid().unwrap(), txid);

    // 2. kill -9, the primary goes on, restart from the data directory, besecondary.
    s.kill9();
    commit_many(&p, "/b", MISSED);
    s.spawn();
    s.ha().besecondary("s", &p.as_primary(), true).unwrap();
    assert_eq!(s.stat("full_copies_received"), 0);
    assert_eq!(s.stat("catch_ups_received"), 1);
    assert_eq!(p.stat("catch_ups_sent"), 2);
    same_txid(&p, &s);
    assert_has_all(&s, "/a", MISSED);
    assert_has_all(&s, "/b", MISSED);
    assert_eq!(s.stat("discarded_txns"), 0);
    assert!(rollback_list(&s).is_empty());

    // 3. nothing missed: no copy, no catch-up.
    s.ha().benone().unwrap();
    until_left(&p);
    s.ha().besecondary("s", &p.as_primary(), true).unwrap();
    assert_eq!(s.stat("catch_ups_received"), 1);
    assert_eq!(s.stat("full_copies_received"), 0);
    assert_eq!(p.stat("catch_ups_sent"), 2);
}

/// Writers commit to the primary all through the secondary's re-join, in sync mode. Every
/// commit acknowledged after besecondary returned is on the secondary when its writer
/// reads it there; at the end every acknowledged commit is there, none was applied twice
/// (a repeated or out-of-order seq would have dropped the link) and the histories are equal.
#[test]
fn catch_up_while_commits_go_on_loses_and_duplicates_nothing() {
    const WRITERS: usize = 4;
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    p.ha().beprimary("p").unwrap();
    p.set("/base", Value::Int32(1));
    let mut hs = s.ha();
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    hs.benone().unwrap();
    until_left(&p);
    commit_many(&p, "/missed", 2000);

    let stop = Arc::new(AtomicBool::new(false));
    let joined = Arc::new(AtomicBool::new(false));
    // (writer, i) of every acknowledged commit, and how many were checked on s at once.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let checked = Arc::new(Mutex::new(0usize));
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let (stop, joined, acked, checked) =
            (stop.clone(), joined.clone(), acked.clone(), checked.clone());
        let (pep, sep) = (p.ep(), s.ep());
        threads.push(std::thread::spawn(move || {
            let mut d = confd_ha::client::data::DataClient::connect(&pep).unwrap();
            let mut sd = confd_ha::client::data::DataClient::connect(&sep).unwrap();
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let after_join = joined.load(Ordering::SeqCst);
                let path = format!("/w{w}/k{i:06}");
                let mut t = Txn::new();
                t.set(&path, Value::Int64(i));
                d.commit(&t).unwrap();
                acked.lock().unwrap().push((w, i));
                if after_join {
                    // Started after besecondary returned: sync replication waited for s.
                    assert_eq!(
                        sd.get(&path).ok(),
                        Some(Value::Int64(i)),
                        "{path} acknowledged after the join but not on the secondary"
                    );
                    *checked.lock().unwrap() += 1;
                }
                i += 1;
            }
        }));
    }
    // Let the writers get going, then re-join in the middle of their commits.
    wait_for("writers to commit", T, || {
        (acked.lock().unwrap().len() >= 200).then_some(())
    });
    let dropped = p.stat("secondaries_dropped");
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    joined.store(true, Ordering::SeqCst);
    let n0 = acked.lock().unwrap().len();
    wait_for("writers to commit after the join", T, || {
        (acked.lock().unwrap().len() >= n0 + 400).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("writer");
    }
    assert!(*checked.lock().unwrap() >= 100);
    // Whether commits landed between the backlog read and the registration this time (they
    // usually do with 4 writers; the assertions below hold either way).
    let log = p.log_text();
    eprintln!(
        "hand-over: {}",
        log.lines()
            .find(|l| l.contains("committed while the backlog was read"))
            .unwrap_or("no commit landed while the backlog was read")
    );
    assert_eq!(s.stat("catch_ups_received"), 1, "{}", s.log_text());
    assert_eq!(s.stat("full_copies_received"), 1);
    assert_eq!(s.state(), STATE_SECONDARY);
    assert_eq!(p.stat("secondaries_dropped"), dropped, "{}", p.log_text());
    assert!(!s.log_text().contains("protocol error"));
    wait_for("the secondary to apply the last commit", T, || {
        (s.stat("seq") == p.stat("seq")).then_some(())
    });
    same_txid(&p, &s);
    assert_has_all(&s, "/missed", 2000);
    let acked = acked.lock().unwrap().clone();
    let mut sd = s.data();
    for (w, i) in &acked {
        assert_eq!(
            sd.get(&format!("/w{w}/k{i:06}")).ok(),
            Some(Value::Int64(*i)),
            "acknowledged /w{w}/k{i:06} missing on the secondary"
        );
    }
    // Every transaction applied on s exactly once: seqs only grow on s (a duplicate is a
    // protocol error), and it applied what p committed after its first copy.
    let applied = s.stat("txns_applied");
    assert_eq!(applied, 2000 + acked.len() as i64, "{}", s.log_text());
}

/// A secondary that committed in NONE at seqs the primary gave to other transactions
/// (beside the primary's history) gets a full copy; its own transactions go to a rollback
/// file.
#[test]
fn diverged_history_gets_a_full_copy_and_a_rollback_file() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    p.ha().beprimary("p").unwrap();
    p.set("/base", Value::Int32(1));
    let mut hs = s.ha();
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    // Streamed, so that the secondary's own log holds the last common transaction
    // (its first came by the copy, which the log does not hold).
    let txid = p.set("/base", Value::Int32(2));
    wait_for("the secondary to apply", T, || {
        (s.data().txid().ok() == Some(txid.clone())).then_some(())
    });
    let base = s.stat("seq");
    hs.benone().unwrap();
    until_left(&p);
    commit_many(&s, "/mine", 3);
    commit_many(&p, "/theirs", 5);
    let mine = s.data().txid().unwrap();
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    assert_eq!(s.stat("full_copies_received"), 2);
    assert_eq!(s.stat("catch_ups_received"), 0);
    assert_eq!(p.stat("catch_ups_sent"), 0);
    assert_eq!(s.stat("discarded_txns"), 3);
    same_txid(&p, &s);
    assert_has_all(&s, "/theirs", 5);
    assert_eq!(s.get("/mine/k00000"), None);
    assert!(
        p.log_text().contains(&format!(
            "full copy: secondary's seq {} txid '{mine}' is not in history: this node holds \
             txid",
            base + 3
        )),
        "{}",
        p.log_text()
    );
    let files = rollback_list(&s);
    assert_eq!(files.len(), 1, "{files:?}");
    let show = rollback_show(&files[0]);
    assert!(show.contains("transactions: 3"), "{show}");
    assert!(show.contains(&format!("common_seq: {base}")), "{show}");
    assert!(show.contains("set /mine/k00002 2"), "{show}");
}

/// A secondary ahead of the primary (it went on alone from the primary's last transaction)
/// cannot catch up backwards: full copy, and its transactions go to a rollback file.
#[test]
fn secondary_ahead_gets_a_full_copy_and_a_rollback_file() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    p.ha().beprimary("p").unwrap();
    p.set("/base", Value::Int32(1));
    let mut hs = s.ha();
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    // Streamed, so that the secondary's own log holds the last common transaction
    // (its first came by the copy, which the log does not hold).
    let txid = p.set("/base", Value::Int32(2));
    wait_for("the secondary to apply", T, || {
        (s.data().txid().ok() == Some(txid.clone())).then_some(())
    });
    let base = s.stat("seq");
    hs.benone().unwrap();
    until_left(&p);
    commit_many(&s, "/mine", 4);
    let mine = s.data().txid().unwrap();
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    assert_eq!(s.stat("full_copies_received"), 2);
    assert_eq!(s.stat("catch_ups_received"), 0);
    assert_eq!(s.stat("discarded_txns"), 4);
    same_txid(&p, &s);
    assert_eq!(s.get("/mine/k00000"), None);
    assert!(
        p.log_text().contains(&format!(
            "full copy: secondary's seq {} txid '{mine}' is ahead of this node's last \
             transaction (seq {base})",
            base + 4
        )),
        "{}",
        p.log_text()
    );
    let files = rollback_list(&s);
    assert_eq!(files.len(), 1, "{files:?}");
    let show = rollback_show(&files[0]);
    assert!(show.contains("transactions: 4"), "{show}");
    assert!(show.contains("set /mine/k00003 3"), "{show}");
}

/// With `txlog-max-txns 50` the primary catches up a secondary 49 transactions behind (its
/// last one is the oldest kept) and sends a full copy to one 60 behind.
#[test]
fn fell_out_of_the_backlog_gets_a_full_copy() {
    let port = free_port();
    let p = Node::start("p", 2, port, &["--txlog-max-txns", "50"]);
    let s = Node::start("s", 3, port, &[]);
    p.ha().beprimary("p").unwrap();
    p.set("/base", Value::Int32(1));
    let mut hs = s.ha();
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    hs.benone().unwrap();
    until_left(&p);
    commit_many(&p, "/a", 49);
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    assert_eq!(s.stat("catch_ups_received"), 1, "{}", p.log_text());
    assert_eq!(s.stat("full_copies_received"), 1);
    same_txid(&p, &s);
    hs.benone().unwrap();
    until_left(&p);
    let behind = s.stat("seq");
    commit_many(&p, "/b", 60);
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    assert_eq!(s.stat("catch_ups_received"), 1);
    assert_eq!(s.stat("full_copies_received"), 2);
    same_txid(&p, &s);
    assert_has_all(&s, "/b", 60);
    // The primary's log no longer reaches the secondary's seqs, so nobody can tell whether
    // its 49 transactions are in the primary's history: they go to a rollback file.
    assert_eq!(s.stat("discarded_txns"), 49);
    assert!(!rollback_list(&s).is_empty());
    let txid = p.log_text(); // the secondary's txid at `behind` is in the line
    assert!(
        txid.contains(&format!("full copy: secondary's seq {behind} txid '")),
        "{txid}"
    );
    assert!(
        p.log_text()
            .contains("is 60 transactions behind, beyond the backlog (txlog-max-txns 50)"),
        "{}",
        p.log_text()
    );
}

/// A sub-secondary re-joins its relay by catching up from the relay's own log, and the
/// relay (as a plain secondary again) catches up from the primary.
#[test]
fn relay_chain_catches_up_at_each_hop() {
    let port = free_port();
    let m = Node::start("m", 2, port, &[]);
    let r = Node::start("r", 3, port, &[]);
    let s = Node::start("s", 4, port, &[]);
    m.ha().beprimary("m").unwrap();
    m.set("/base", Value::Int32(1));
    let mut hr = r.ha();
    hr.besecondary("r", &m.as_primary(), true).unwrap();
    hr.berelay().unwrap();
    let mut hs = s.ha();
    hs.besecondary("s", &r.as_primary(), true).unwrap();
    // s's last transaction is the one r's own full copy brought, which r's log does not
    // hold: r remembers it (copy_base) and serves the catch-up from the log after it.
    hs.benone().unwrap();
    commit_many(&m, "/a", 100);
    wait_for("the relay to apply", T, || {
        (r.stat("seq") == m.stat("seq")).then_some(())
    });
    hs.besecondary("s", &r.as_primary(), true).unwrap();
    assert_eq!(s.stat("catch_ups_received"), 1, "{}", r.log_text());
    assert_eq!(r.stat("catch_ups_sent"), 1);
    assert_eq!(s.stat("full_copies_received"), 1);
    same_txid(&m, &s);
    assert_has_all(&s, "/a", 100);
    // Through the chain again.
    m.set("/after", Value::Int32(2));
    wait_for("the sub-secondary to apply", T, || {
        (s.get("/after") == Some(Value::Int32(2))).then_some(())
    });
    // The relay itself: benone (s falls to NONE), the primary goes on, re-join.
    hr.benone().unwrap();
    s.wait_state(STATE_NONE, T);
    commit_many(&m, "/b", 100);
    hr.besecondary("r", &m.as_primary(), true).unwrap();
    assert_eq!(r.stat("catch_ups_received"), 1, "{}", m.log_text());
    assert_eq!(m.stat("catch_ups_sent"), 1);
    same_txid(&m, &r);
    assert_has_all(&r, "/b", 100);
}

// ---- a secondary of the previous protocol version (hand-made) ----

fn mac(label: &str, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(TOKEN.as_bytes()).unwrap();
    m.update(label.as_bytes());
    m.update(a);
    m.update(b);
    m.finalize().into_bytes().to_vec()
}

fn recv(s: &mut TcpStream) -> Term {
    Term::decode(&read_frame(s, 1 << 20).unwrap()).unwrap()
}

/// The welcome a hand-made secondary speaking version `vsn` gets for (seq, txid).
fn welcome(p: &Node, id: &str, vsn: i64, seq: i64, txid: &str) -> Vec<Term> {
    let mut s = TcpStream::connect(format!("{}:{}", p.ip, p.ha_port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let ns = [5u8; 32];
    let hello = Term::Tuple(vec![
        Term::atom("ha_hello"),
        Term::int(vsn),
        Term::binary(ns),
    ]);
    write_frame(&mut s, &hello.encode()).unwrap();
    let ch = recv(&mut s);
    let np = ch.as_tuple().unwrap()[2].as_binary().unwrap().to_vec();
    let auth = Term::Tuple(vec![
        Term::atom("ha_auth"),
        Term::binary(mac("secondary", &np, &ns)),
        Term::binary(id),
        Term::binary(&p.name),
        Term::int(seq),
        Term::binary(txid),
        Term::binary([vsn as u8; 32]),
        Term::int(1),
    ]);
    write_frame(&mut s, &auth.encode()).unwrap();
    recv(&mut s).as_tuple().unwrap().to_vec()
}

#[test]
fn a_version_2_secondary_still_gets_a_copy_and_version_3_a_catch_up() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    p.ha().beprimary("p").unwrap();
    let txid = p.set("/a", Value::Int32(1));
    let seq = p.stat("seq");
    p.set("/b", Value::Int32(2));
    p.set("/c", Value::Int32(3));
    let w = welcome(&p, "a", 2, seq, &txid);
    assert!(w[1].is_atom("copy"), "{w:?}");
    let w = welcome(&p, "b", 3, seq, &txid);
    assert!(w[1].is_atom("catchup"), "{w:?}");
    assert_eq!(w[2].as_int(), Some(seq as i128 + 2));
    assert_eq!(w[4].as_int(), Some(2));
    // Beside the history: same seq, another txid.
    let w = welcome(&p, "c", 3, seq, "someone-else");
    assert!(w[1].is_atom("copy"), "{w:?}");
}

/// Missed transactions over MAX_CATCH_UP_BYTES (128 MiB) give a full copy, decided from the
/// commit log's record sizes before any of them is read into memory.
#[test]
fn a_backlog_over_max_catch_up_bytes_gets_a_full_copy() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    p.ha().beprimary("p").unwrap();
    p.set("/base", Value::Int32(1));
    let mut hs = s.ha();
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    hs.benone().unwrap();
    until_left(&p);
    // 130 transactions of 1 MiB each.
    let mut d = p.data();
    for i in 0..130 {
        let mut t = Txn::new();
        t.set(&format!("/big/k{i:03}"), Value::Buf(vec![i as u8; 1 << 20]));
        d.commit(&t).unwrap();
    }
    hs.besecondary("s", &p.as_primary(), true).unwrap();
    same_txid(&p, &s);
    assert_eq!(s.stat("full_copies_received"), 2, "{}", p.log_text());
    assert_eq!(s.stat("catch_ups_received"), 0);
    assert!(
        p.log_text().contains("MAX_CATCH_UP_BYTES"),
        "{}",
        p.log_text()
    );
    assert_eq!(s.get("/big/k129"), Some(Value::Buf(vec![129; 1 << 20])));
}
