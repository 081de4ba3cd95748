//! The IPC server against hostile clients, the Unix socket, and clean stop.

mod common;
use common::*;
use confd_ha::client::data::DataClient;
use confd_ha::client::Endpoint;
use confd_ha::proto::ha::{STATE_NONE, STATE_PRIMARY};
use confd_ha::proto::hello::{ClientHello, CLIENT_HA, CLIENT_HADATA};
use confd_ha::value::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn raw(n: &Node) -> TcpStream {
    let s = TcpStream::connect(format!("127.0.0.1:{}", n.ipc_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn hello(id: u8) -> [u8; 9] {
    ClientHello {
        client_id: id,
        proto_vsn: 87,
        lib_vsn: 0x0807_0000,
        maxdepth: 20,
        maxkeylen: 9,
    }
    .encode()
}

/// Reads until EOF (or error); true when the daemon closed the connection.
fn closed_by_daemon(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn still_serving(n: &Node, i: i32) {
    n.set("/alive", Value::Int32(i));
    assert_eq!(n.get("/alive"), Some(Value::Int32(i)));
}

#[test]
fn hostile_clients_only_lose_their_own_connection() {
    let port = free_port();
    let n = Node::start("n", 2, port, &[]);
    let mut ha = n.ha();
    ha.beprimary("n").unwrap();
    let silent_since = Instant::now();
    let mut silent = raw(&n);
    // A half-sent frame on a data connection stalls only that connection.
    let mut half = raw(&n);
    half.write_all(&hello(CLIENT_HADATA)).unwrap();
    let mut ans = [0u8; 9];
    half.read_exact(&mut ans).unwrap();
    half.write_all(&[0, 0, 0, 100, 131, 104]).unwrap();
    still_serving(&n, 1);

    // Unknown client id: status 1 then closed.
    let mut s = raw(&n);
    s.write_all(&hello(99)).unwrap();
    let mut ans = [0u8; 9];
    s.read_exact(&mut ans).unwrap();
    assert_eq!(ans[0], 1);
    assert!(closed_by_daemon(&mut s));
    still_serving(&n, 2);

    // A short hello then close.
    let mut s = raw(&n);
    s.write_all(&[17, 0, 87]).unwrap();
    drop(s);
    still_serving(&n, 3);

    // Garbage frames on the data socket and on the HA socket.
    for id in [CLIENT_HADATA, CLIENT_HA] {
        let mut s = raw(&n);
        s.write_all(&hello(id)).unwrap();
        s.read_exact(&mut ans).unwrap();
        assert_eq!(ans[0], 0);
        if id == CLIENT_HA {
            // token, then garbage
            s.write_all(&[0, 0, 0, 3, b'a', b'b', b'c']).unwrap();
        }
        s.write_all(&[0, 0, 0, 5, 1, 2, 3, 4, 5]).unwrap();
        assert!(closed_by_daemon(&mut s), "client id {id}");
    }
    // The garbage HA connection replaced ours; the node still is primary.
    assert_eq!(n.state(), STATE_PRIMARY);
    still_serving(&n, 4);

    // An oversized length (data socket) and an oversized token (HA socket).
    for id in [CLIENT_HADATA, CLIENT_HA] {
        let mut s = raw(&n);
        s.write_all(&hello(id)).unwrap();
        s.read_exact(&mut ans).unwrap();
        s.write_all(&[0xff, 0xff, 0xff, 0xf0]).unwrap();
        assert!(closed_by_daemon(&mut s), "client id {id}");
    }
    still_serving(&n, 5);

    // A well-formed term that is not a request gets an error reply, connection kept.
    let mut d = n.data();
    let r =
        confd_ha::client::call(&mut d.stream, &confd_ha::proto::term::Term::atom("hello")).unwrap();
    assert!(confd_ha::proto::ha::parse_error(&r).is_some(), "{r:?}");
    assert_eq!(d.get("/alive").unwrap(), Value::Int32(5));

    // The silent client is closed after the 5 s hello deadline.
    assert!(closed_by_daemon(&mut silent));
    assert!(silent_since.elapsed() >= Duration::from_secs(4));
    still_serving(&n, 6);
    let log = n.log_text();
    for needle in [
        "unknown client id 99",
        "closed before a full hello",
        "garbage frame",
        "exceeds the",
        "no hello within 5 s",
    ] {
        assert!(log.contains(needle), "log lacks '{needle}':\n{log}");
    }
    drop(half);
}

#[test]
fn unix_socket_stale_file_and_clean_stop() {
    let tmp = TempDir::new("unix");
    let path = tmp.path().join("ipc.sock");
    // A stale socket file from a dead process.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let port = free_port();
    let p = path.display().to_string();
    let mut n = Node::start("u", 2, port, &["--ipc-path", &p]);
    let ep = Endpoint::Unix(path.clone());
    let mut ha = confd_ha::client::ha::HaClient::connect(&ep, TOKEN).unwrap();
    assert_eq!(ha.get_status().unwrap().0, STATE_NONE);
    ha.beprimary("u").unwrap();
    let mut d = DataClient::connect(&ep).unwrap();
    let mut t = confd_ha::client::data::Txn::new();
    t.set("/via/unix", Value::Bool(true));
    d.commit(&t).unwrap();
    assert_eq!(n.get("/via/unix"), Some(Value::Bool(true)));
    // SIGTERM: exit 0 and the socket file is gone.
    n.signal(libc::SIGTERM);
    let st = n.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(!path.exists());
    assert!(n.log_text().contains("SIGTERM received"));
    // SIGINT too.
    n.spawn();
    n.signal(libc::SIGINT);
    assert_eq!(n.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn help_and_bad_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ha-node"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--ipc-addr",
        "--ipc-path",
        "--ha-addr",
        "--extra-listen",
        "--data-dir",
        "--tick-timeout",
        "--replication",
        "--log-level",
        "--max-connections",
        "--ha-tls-ca",
        "--ha-tls-cert",
        "--ha-tls-key",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ha-node"))
        .args(["--tick-timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad duration 'soon'"));
}

#[test]
fn extra_listen_address_serves_secondaries() {
    let port = free_port();
    let port2 = free_port();
    // The primary also listens on 127.0.0.5:<port2>; a secondary whose
    // cluster HA port is port2 reaches it there.
    let extra = format!("127.0.0.5:{port2}");
    let p = Node::start("p", 2, port, &["--extra-listen", &extra]);
    let s = Node::start("s", 3, port2, &[]);
    p.ha().beprimary("p").unwrap();
    p.set("/e", Value::Int32(5));
    let mut prim = p.as_primary();
    prim.addr = confd_ha::proto::ha::NodeAddr::V4("127.0.0.5".parse().unwrap());
    s.ha().besecondary("s", &prim, true).unwrap();
    assert_eq!(s.get("/e"), Some(Value::Int32(5)));
}

#[test]
fn connections_beyond_max_connections_are_refused_clearly_and_ha_control_gets_in() {
    let n = Node::start("n", 2, free_port(), &["--max-connections", "3"]);
    // Three idle data clients hold every slot (retried: the readiness
    // probe's connection may still hold one for a moment).
    let mut held: Vec<DataClient> = (0..3)
        .map(|_| {
            wait_for("a connection slot", Duration::from_secs(5), || {
                let mut c = DataClient::connect(&n.ep()).ok()?;
                c.commit(&{
                    let mut t = confd_ha::client::data::Txn::new();
                    t.set("/x", Value::Int32(1));
                    t
                })
                .ok()?;
                Some(c)
            })
        })
        .collect();
    // HA control always gets in: `ha-ctl primary` works.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["-p", &n.ipc_port.to_string(), "-t", TOKEN, "primary", "n"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // `ha-ctl status` gets a reserved read-only slot.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["-p", &n.ipc_port.to_string(), "status"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("state: primary"));
    // Over the limit, data clients get the reserved read-only slots
    // (a commit there is refused with a clear error) ...
    let mut ro: Vec<DataClient> = (0..2)
        .map(|_| DataClient::connect(&n.ep()).unwrap())
        .collect();
    assert_eq!(ro[0].node_state().unwrap().state, STATE_PRIMARY);
    let mut t = confd_ha::client::data::Txn::new();
    t.set("/y", Value::Int32(1));
    let e = ro[1].commit(&t).unwrap_err();
    assert_eq!(
        e.errno(),
        confd_ha::errcode::CONFD_ERR_TOO_MANY_SESSIONS,
        "{e}"
    );
    // ... and beyond those, a clear CONFD_ERR_TOO_MANY_SESSIONS, not an EOF.
    let mut extra = DataClient::connect(&n.ep()).unwrap();
    let e = extra.txid().unwrap_err();
    assert_eq!(
        e.errno(),
        confd_ha::errcode::CONFD_ERR_TOO_MANY_SESSIONS,
        "{e}"
    );
    assert!(e.to_string().contains("max-connections"), "{e}");
    assert!(n
        .log_text()
        .contains("refused: 3 client connections already served"));
    // The held ones still work; once one goes, its slot is free again.
    assert!(!held[0].txid().unwrap().is_empty());
    held.pop();
    drop(ro);
    let mut again = wait_for("a free connection slot", Duration::from_secs(5), || {
        let mut c = DataClient::connect(&n.ep()).ok()?;
        c.commit(&t).ok()?;
        Some(c)
    });
    assert!(!again.txid().unwrap().is_empty());
}
