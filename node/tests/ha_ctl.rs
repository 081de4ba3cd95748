//! ha-ctl against real ha-node processes: every command, its output and its
//! exit status.

mod common;
use common::*;
use std::process::{Command, Output};
use std::time::Duration;

/// Runs ha-ctl against `n` with the cluster token.
fn ctl(n: &Node, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &n.ipc_port.to_string(),
            "-t",
            TOKEN,
        ])
        .args(args)
        .env_remove("HA_CTL_TOKEN")
        .output()
        .expect("run ha-ctl")
}

fn ok(n: &Node, args: &[&str]) -> String {
    let o = ctl(n, args);
    assert!(
        o.status.success(),
        "ha-ctl {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 output")
}

/// Runs a failing command: its exit code and stderr.
fn fails(n: &Node, args: &[&str]) -> (i32, String) {
    let o = ctl(n, args);
    assert!(!o.status.success(), "ha-ctl {args:?} succeeded");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn roles_status_and_data_through_ha_ctl() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    assert_eq!(ok(&p, &["status"]), "state: none\nseq: 0\ntxid: \n");
    ok(&p, &["primary", "p"]);
    ok(&p, &["set", "/system/hostname", "router-1"]);
    ok(
        &p,
        &[
            "set",
            "/servers/server{www}/port",
            "8080",
            "--type",
            "uint16",
        ],
    );
    ok(&s, &["secondary", "s", "p", &p.ip]);
    // The secondary line carries its lag; last_tick_ms_ago varies, so it is cut out.
    let txid = ok(&p, &["txid"]);
    let st = ok(&p, &["status"]);
    let (head, tail) = st
        .split_once(" last_tick_ms_ago=")
        .expect("last_tick_ms_ago");
    assert_eq!(
        head,
        format!(
            "state: primary\nseq: 2\ntxid: {txid}secondary: s {} acked_seq=2 lag_txns=0 lag_ms=0",
            s.ip
        )
    );
    let (ms, tail) = tail.split_once(' ').unwrap();
    assert!(ms.parse::<u64>().is_ok(), "{st}");
    assert_eq!(tail, "state=in-sync full_copies=1 catch_ups=0\n");
    let js = ok(&s, &["status", "--json"]);
    let (head, tail) = js
        .split_once(",\"last_tick_ms_ago\":")
        .expect("last_tick_ms_ago");
    assert_eq!(
        head,
        format!(
            "{{\"state\":2,\"state_name\":\"secondary\",\"seq\":2,\"txid\":\"{}\",\
             \"last_txn_ms_ago\":{},\"nodes\":[{{\"nodeid\":\"p\",\"address\":\"{}\",\
             \"role\":\"primary\"",
            txid.trim(),
            head.split("\"last_txn_ms_ago\":")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .unwrap_or("?"),
            p.ip
        )
    );
    assert!(tail.ends_with("}]}\n"), "{js}");
    // Reads on the secondary: the value alone on stdout.
    assert_eq!(ok(&s, &["get", "/system/hostname"]), "router-1\n");
    assert_eq!(ok(&s, &["get", "/servers/server{www}/port"]), "8080\n");
    assert_eq!(ok(&s, &["list", "/servers"]), "server{www}\n");
    assert_eq!(ok(&s, &["txid"]), ok(&p, &["txid"]));
    assert!(ok(&s, &["stats"]).contains("full_copies_received 1\n"));
    // A write on the secondary is refused with ConfD's error name.
    let (code, err) = fails(&s, &["set", "/system/hostname", "rogue"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "ha-ctl: CONFD_ERR_NOT_WRITABLE: item is not writable: node is a secondary"
        ),
        "{err}"
    );
    // Delete on the primary reaches the secondary.
    ok(&p, &["delete", "/servers"]);
    let (_, err) = fails(&s, &["get", "/servers/server{www}/port"]);
    assert!(err.starts_with("ha-ctl: CONFD_ERR_NOEXISTS:"), "{err}");
    // dead, relay, none.
    ok(&p, &["dead", "s"]);
    s.wait_state(confd_ha::proto::ha::STATE_NONE, Duration::from_secs(5));
    let (_, err) = fails(&s, &["relay"]);
    assert!(err.starts_with("ha-ctl: CONFD_ERR_BADSTATE:"), "{err}");
    ok(&p, &["none"]);
    assert!(ok(&p, &["status"]).starts_with("state: none\nseq: 3\n"));
}

#[test]
fn errors_and_usage() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    ok(&p, &["primary", "p"]);
    // Wrong token on the joining side.
    let o = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["-p", &s.ipc_port.to_string(), "-t", "not-the-token"])
        .args(["secondary", "s", "p", &p.ip])
        .output()
        .expect("run ha-ctl");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("ha-ctl: CONFD_ERR_HA_BADTOKEN:"), "{err}");
    // Usage errors exit 2; values are checked before anything is sent.
    assert_eq!(fails(&p, &["bogus"]).0, 2);
    assert_eq!(fails(&p, &["primary"]).0, 2);
    let (code, err) = fails(&p, &["set", "/a", "300", "--type", "uint8"]);
    assert_eq!(code, 2);
    assert!(err.contains("'300' is not a valid uint8"), "{err}");
    // No token at all: an order is a usage error; status needs none.
    let o = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["-p", &p.ipc_port.to_string(), "primary", "p"])
        .env_remove("HA_CTL_TOKEN")
        .output()
        .expect("run ha-ctl");
    assert_eq!(o.status.code(), Some(2));
    let o = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["-p", &p.ipc_port.to_string(), "status"])
        .env_remove("HA_CTL_TOKEN")
        .output()
        .expect("run ha-ctl");
    assert_eq!(o.status.code(), Some(0));
    // Nobody listening: the OS error, exit 1.
    let o = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["-p", &free_port().to_string(), "txid"])
        .output()
        .expect("run ha-ctl");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("ha-ctl: CONFD_ERR_OS:"));
}

#[test]
fn watch_prints_events_with_timestamps() {
    use std::io::{BufRead, BufReader};
    let p = Node::start("p", 2, free_port(), &[]);
    let mut w = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["-p", &p.ipc_port.to_string(), "watch", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run ha-ctl watch");
    let mut lines = BufReader::new(w.stdout.take().expect("stdout")).lines();
    // The subscription is in place once the node has logged it; then order.
    wait_for("the watch subscription", Duration::from_secs(5), || {
        p.log_text().contains("subscribed, mask").then_some(())
    });
    ok(&p, &["primary", "p"]);
    let line = lines.next().expect("a line").expect("read");
    let _ = w.kill();
    let _ = w.wait();
    assert!(line.starts_with("{\"time\":\"20"), "{line}");
    assert!(line.ends_with("\"event\":\"IS_PRIMARY\"}"), "{line}");
}

#[test]
fn rollback_errors_name_the_file() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
            .args(args)
            .env_remove("HA_NODE_DATA_DIR")
            .output()
            .expect("run ha-ctl")
    };
    let missing = std::env::temp_dir().join(format!("ha-ctl-no-such-dir-{}", std::process::id()));
    let o = run(&["rollback", "list", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "data directory {} does not exist",
            missing.display()
        )) && err.contains("--data-dir"),
        "{err}"
    );
    // Not a rollback file (read, then refused by content): exit 1, the file named.
    let o = run(&["rollback", "show", "/dev/null"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/dev/null is not a rollback file"), "{err}");
}

#[test]
fn status_text_escapes_a_node_id_with_a_newline() {
    let port = free_port();
    let p = Node::start("p", 2, port, &[]);
    let s = Node::start("s", 3, port, &[]);
    ok(&p, &["primary", "p"]);
    ok(&s, &["secondary", "s\nsecondary: forged", "p", &p.ip]);
    let st = ok(&p, &["status"]);
    assert!(
        st.contains(&format!("secondary: s\\nsecondary: forged {} ", s.ip)),
        "{st}"
    );
    assert_eq!(
        st.lines().filter(|l| l.starts_with("secondary:")).count(),
        1,
        "{st}"
    );
}
