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
    assert_eq!(ok(&p, &["status"]), "state: none\n");
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
    assert_eq!(
        ok(&p, &["status"]),
        format!("state: primary\nsecondary: s {}\n", s.ip)
    );
    assert_eq!(
        ok(&s, &["status", "--json"]),
        format!(
            "{{\"state\":2,\"state_name\":\"secondary\",\"nodes\":[{{\"nodeid\":\"p\",\"address\":\"{}\",\"role\":\"primary\"}}]}}\n",
            p.ip
        )
    );
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
    assert_eq!(ok(&p, &["status"]), "state: none\n");
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
