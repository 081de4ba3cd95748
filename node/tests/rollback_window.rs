//! A node that committed alone far beyond the primary's last seq (a long split
//! brain) keeps every transaction a re-join discards in its rollback file,
//! not only the last ROLLBACK_WINDOW_TXNS (found by the fault suite, issue 9).

mod common;
use common::*;
use confd_ha::value::Value;
use std::process::Command;

#[test]
fn a_divergence_longer_than_the_history_window_is_all_in_the_rollback_file() {
    // More than ROLLBACK_WINDOW_TXNS (1,000) ahead of the primary.
    const ALONE: i64 = 1_200;
    let port = free_port();
    let n1 = Node::start("n1", 2, port, &[]);
    let n2 = Node::start("n2", 3, port, &[]);
    n1.ha().beprimary("n1").unwrap();
    let mut h2 = n2.ha();
    h2.besecondary("n2", &n1.as_primary(), true).unwrap();
    n1.set("/base", Value::Int32(1));
    let base_seq = n2.stat("seq");
    h2.benone().unwrap();
    let mut d2 = n2.data();
    for i in 0..ALONE {
        let mut t = confd_ha::client::data::Txn::new();
        t.set(&format!("/alone/k{i:05}"), Value::Int64(i));
        d2.commit(&t).unwrap();
    }
    h2.besecondary("n2", &n1.as_primary(), true).unwrap();
    assert_eq!(n2.get("/alone/k00000"), None);
    assert_eq!(n2.stat("discarded_txns"), ALONE);
    let out = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["rollback", "list"])
        .arg(&n2.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8(out.stdout).unwrap();
    let files: Vec<&str> = list.lines().collect();
    assert_eq!(files.len(), 1, "{list}");
    assert!(
        files[0].contains(&format!("seq{}-{}", base_seq + 1, base_seq + ALONE)),
        "{list}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["rollback", "show", files[0]])
        .output()
        .unwrap();
    let show = String::from_utf8(out.stdout).unwrap();
    assert!(show.contains(&format!("transactions: {ALONE}")), "{show}");
    assert!(show.contains(&format!("common_seq: {base_seq}")), "{show}");
    assert!(show.contains("set /alone/k00000 0"), "{show}");
    assert!(
        !n2.log_text().contains("may be discarded too"),
        "{}",
        n2.log_text()
    );
}

/// A node whose transaction log was trimmed (here to 5 transactions by `txlog-max-txns`)
/// below the last transaction it shares with the primary still keeps everything a re-join
/// discards: the itemised file holds the logged transactions, and a state file holds the
/// complete local data as it was before the copy.
#[test]
fn a_divergence_beyond_the_transaction_log_keeps_the_complete_local_state() {
    const ALONE: i64 = 20;
    const LOG: i64 = 5;
    let port = free_port();
    let n1 = Node::start("n1", 2, port, &[]);
    let n2 = Node::start("n2", 3, port, &["--txlog-max-txns", "5"]);
    n1.ha().beprimary("n1").unwrap();
    let mut h2 = n2.ha();
    h2.besecondary("n2", &n1.as_primary(), true).unwrap();
    n1.set("/base", Value::Int32(1));
    let base_seq = n2.stat("seq");
    h2.benone().unwrap();
    let mut d2 = n2.data();
    // The first one overwrites replicated data; all but the last LOG fall out of the log.
    let mut t = confd_ha::client::data::Txn::new();
    t.set("/base", Value::Int32(7));
    d2.commit(&t).unwrap();
    for i in 1..ALONE {
        let mut t = confd_ha::client::data::Txn::new();
        t.set(&format!("/alone/k{i:05}"), Value::Int64(i * 3));
        d2.commit(&t).unwrap();
    }
    n1.set("/other", Value::Int32(2));
    h2.besecondary("n2", &n1.as_primary(), true).unwrap();
    assert_eq!(n2.get("/alone/k00001"), None);
    assert_eq!(n2.get("/base"), Some(Value::Int32(1)));
    assert_eq!(n2.stat("discarded_txns"), LOG);
    assert_eq!(n2.stat("rollback_snapshots"), 1);
    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let list = ctl(&["rollback", "list", n2.dir.to_str().unwrap()]);
    let files: Vec<&str> = list.lines().collect();
    assert_eq!(files.len(), 2, "{list}");
    let state = files
        .iter()
        .find(|f| f.contains("/state-seq"))
        .unwrap_or_else(|| panic!("{list}"));
    let items = files.iter().find(|f| !f.contains("/state-")).unwrap();
    let first_logged = base_seq + ALONE - LOG + 1;
    assert!(
        items.contains(&format!("seq{first_logged}-{}", base_seq + ALONE)),
        "{list}"
    );
    let show = ctl(&["rollback", "show", state]);
    assert!(
        show.contains(&format!(
            "complete local state before the copy; transactions before seq {first_logged} are \
             not itemised"
        )),
        "{show}"
    );
    // Everything the copy discarded is there: the overwritten value and every key.
    assert!(show.contains(&format!("entries: {ALONE}")), "{show}");
    assert!(show.contains("  /base 7\n"), "{show}");
    for i in 1..ALONE {
        assert!(
            show.contains(&format!("  /alone/k{i:05} {}\n", i * 3)),
            "{i}: {show}"
        );
    }
    assert!(show.contains(&format!("end: {ALONE} entries")), "{show}");
    let show = ctl(&["rollback", "show", items]);
    assert!(show.contains(&format!("transactions: {LOG}")), "{show}");
}
