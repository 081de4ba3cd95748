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
