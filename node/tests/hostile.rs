//! ha-node against an attacker who can reach its ports (issue 10): bounded
//! cost before authentication, no leaks, no lockouts, bounded and inert logs,
//! and a bounded network fuzzer over mutations of real frames of both
//! protocols. Every test runs real ha-node processes over real sockets and
//! reads the daemon's own accounting from /proc.

mod common;
use common::*;
use confd_ha::client::data::{DataClient, Txn};
use confd_ha::client::events::EventClient;
use confd_ha::client::ha::HaClient;
use confd_ha::client::{recv, send};
use confd_ha::proto::frame::write_frame;
use confd_ha::proto::ha::{
    HaRequest, NOTIF_HA_INFO, NOTIF_HA_INFO_SYNC, NOTIF_HEARTBEAT, STATE_PRIMARY,
};
use confd_ha::proto::hello::{ClientHello, CLIENT_EVENT_MGR, CLIENT_HA, CLIENT_HADATA};
use confd_ha::proto::term::Term;
use confd_ha::value::Value;
use hmac::{Hmac, Mac};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// A field of /proc/PID/status, in kB.
fn proc_kb(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn count_dir(path: String) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

fn threads(pid: i32) -> usize {
    count_dir(format!("/proc/{pid}/task"))
}

fn fds(pid: i32) -> usize {
    count_dir(format!("/proc/{pid}/fd"))
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

fn ipc_raw(n: &Node) -> TcpStream {
    let s = TcpStream::connect(format!("127.0.0.1:{}", n.ipc_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A data connection after its hello.
fn ipc_data(n: &Node) -> TcpStream {
    let mut s = ipc_raw(n);
    s.write_all(&hello(CLIENT_HADATA)).unwrap();
    let mut a = [0u8; 9];
    s.read_exact(&mut a).unwrap();
    assert_eq!(a[0], 0);
    s
}

fn ha_raw(n: &Node) -> TcpStream {
    let s = TcpStream::connect(format!("{}:{}", n.ip, n.ha_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the daemon closes (EOF or reset), or the read times out.
fn closed_by_daemon(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                )
            }
        }
    }
}

/// A list of `n` empty lists, compressed: ~16 KB for 16.7 M elements.
fn nil_bomb(n: u32) -> Vec<u8> {
    let mut raw = vec![108u8];
    raw.extend_from_slice(&n.to_be_bytes());
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&raw).unwrap();
    let chunk = vec![106u8; 1 << 16];
    let mut left = n as usize + 1;
    while left > 0 {
        let k = left.min(chunk.len());
        z.write_all(&chunk[..k]).unwrap();
        left -= k;
    }
    let body = z.finish().unwrap();
    let mut b = vec![131u8, 80];
    b.extend_from_slice(&(raw.len() as u32 + n + 1).to_be_bytes());
    b.extend_from_slice(&body);
    b
}

/// HMAC-SHA-256(token, label ++ a ++ b): the handshake's proofs.
fn proof(token: &[u8], label: &str, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(token).unwrap();
    m.update(label.as_bytes());
    m.update(a);
    m.update(b);
    m.finalize().into_bytes().to_vec()
}

fn atom(s: &str) -> Term {
    Term::atom(s)
}

fn peer_hello(nonce: &[u8]) -> Term {
    Term::Tuple(vec![atom("ha_hello"), Term::int(1), Term::binary(nonce)])
}

fn peer_auth(mac: &[u8], me: &[u8], primary: &[u8]) -> Term {
    Term::Tuple(vec![
        atom("ha_auth"),
        Term::binary(mac),
        Value::Buf(me.to_vec()).to_term(),
        Value::Buf(primary.to_vec()).to_term(),
        Term::int(0),
        Term::binary(""),
    ])
}

/// A fake secondary that completes the handshake with `token`; returns
/// the stream after the welcome.
fn fake_secondary(p: &Node, token: &str, me: &str) -> TcpStream {
    let mut s = ha_raw(p);
    let ns = [7u8; 32];
    send(&mut s, &peer_hello(&ns)).unwrap();
    let ch = recv(&mut s).unwrap();
    let e = ch.as_tuple().expect("challenge");
    assert!(e[0].is_atom("ha_challenge"), "{ch:?}");
    let np = e[2].as_binary().unwrap().to_vec();
    let mac = proof(token.as_bytes(), "secondary", &np, &ns);
    send(&mut s, &peer_auth(&mac, me.as_bytes(), p.name.as_bytes())).unwrap();
    let w = recv(&mut s).unwrap();
    assert!(
        w.as_tuple().is_some_and(|e| e[0].is_atom("ha_welcome")),
        "{w:?}"
    );
    s
}

fn ha_ctl(n: &Node, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .arg("-p")
        .arg(n.ipc_port.to_string())
        .args(args)
        .env_remove("HA_CTL_TOKEN")
        .output()
        .expect("run ha-ctl")
}

// ------------------------------------------------- 1. cost before auth

/// Peak RSS of the node grows by less than `limit_mb` while `attack` runs.
fn hwm_growth_mb(n: &Node, attack: impl FnOnce()) -> u64 {
    // (A daemon without the bounds takes a while to decode these.)
    let before = proc_kb(n.pid(), "VmHWM:");
    attack();
    let after = proc_kb(n.pid(), "VmHWM:");
    (after.saturating_sub(before)) / 1024
}

#[test]
fn bomb_frames_cost_little_on_both_ports() {
    let n = Node::start("n", 2, free_port(), &[]);
    n.ha().beprimary("n").unwrap();
    let bomb = nil_bomb(16_700_000);
    assert!(bomb.len() < 40_000, "{}", bomb.len());
    // Six compressed bombs in parallel on the HA port, no hello, no token.
    let ha = hwm_growth_mb(&n, || {
        let mut conns: Vec<TcpStream> = (0..6).map(|_| ha_raw(&n)).collect();
        for c in conns.iter_mut() {
            let _ = write_frame(c, &bomb);
        }
        for c in conns.iter_mut() {
            c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            assert!(closed_by_daemon(c));
        }
    });
    // The same on IPC data connections (no token there at all).
    let ipc = hwm_growth_mb(&n, || {
        let mut conns: Vec<TcpStream> = (0..6).map(|_| ipc_data(&n)).collect();
        for c in conns.iter_mut() {
            let _ = write_frame(c, &bomb);
        }
        for c in conns.iter_mut() {
            c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            assert!(closed_by_daemon(c));
        }
    });
    // A 40 MiB uncompressed frame of empty lists on each port.
    let mut big = vec![131u8, 108];
    big.extend_from_slice(&((40u32 << 20) - 7).to_be_bytes());
    big.resize(40 << 20, 106);
    let big_ha = hwm_growth_mb(&n, || {
        let mut c = ha_raw(&n);
        let _ = write_frame(&mut c, &big);
        assert!(closed_by_daemon(&mut c));
    });
    let big_ipc = hwm_growth_mb(&n, || {
        let mut c = ipc_data(&n);
        let _ = write_frame(&mut c, &big);
        assert!(closed_by_daemon(&mut c));
    });
    // The largest frame the IPC port takes (16 MiB), all empty lists.
    big.truncate(16 << 20);
    big[2..6].copy_from_slice(&((16u32 << 20) - 7).to_be_bytes());
    let nils_ipc = hwm_growth_mb(&n, || {
        let mut c = ipc_data(&n);
        let _ = write_frame(&mut c, &big);
        assert!(closed_by_daemon(&mut c));
    });
    eprintln!(
        "VmHWM growth (MiB): 6 bombs HA {ha}, 6 bombs IPC {ipc}, 40 MiB frame HA {big_ha}, \
         IPC {big_ipc}, 16 MiB of [] IPC {nils_ipc}; peak {} MiB",
        proc_kb(n.pid(), "VmHWM:") / 1024
    );
    assert!(ha < 32, "6 bombs on the HA port: +{ha} MiB");
    assert!(ipc < 32, "6 bombs on the IPC port: +{ipc} MiB");
    assert!(big_ha < 32, "40 MiB frame on the HA port: +{big_ha} MiB");
    assert!(big_ipc < 32, "40 MiB frame on the IPC port: +{big_ipc} MiB");
    assert!(
        nils_ipc < 80,
        "16 MiB of [] on the IPC port: +{nils_ipc} MiB"
    );
    let log = n.log_text();
    assert!(
        log.contains("compressed terms are not accepted here"),
        "{log}"
    );
    n.set("/alive", Value::Int32(1));
}

// ------------------------------------------------- 3. no leaks, no lockouts

#[test]
fn subscribe_close_cycles_leave_no_threads_or_descriptors() {
    let n = Node::start("n", 2, free_port(), &[]);
    // Settle the readiness probe's connection first.
    let _ = n.data().txid();
    let pid = n.pid();
    let (t0, f0) = wait_for("a quiet node", Duration::from_secs(10), || {
        let (t, f) = (threads(pid), fds(pid));
        std::thread::sleep(Duration::from_millis(100));
        (threads(pid) == t && fds(pid) == f).then_some((t, f))
    });
    for _ in 0..200 {
        // A heartbeat every hour: the writer must not wait for it to notice.
        let c = EventClient::connect(&n.ep(), NOTIF_HA_INFO | NOTIF_HEARTBEAT, 3_600_000)
            .expect("subscribe");
        drop(c);
    }
    let (t, f) = wait_for(
        "threads and descriptors to come back",
        Duration::from_secs(20),
        || {
            let (t, f) = (threads(pid), fds(pid));
            (t <= t0 + 2 && f <= f0 + 2).then_some((t, f))
        },
    );
    eprintln!("after 200 subscribe/close: threads {t0} -> {t}, fds {f0} -> {f}");
}

/// Sends one byte every `every` until the daemon closes; returns how long
/// the connection lived, or None if it outlived `give_up`.
fn dribble(mut s: TcpStream, bytes: &[u8], every: Duration, give_up: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    s.set_read_timeout(Some(every)).unwrap();
    let mut i = 0;
    let mut b = [0u8; 64];
    while t0.elapsed() < give_up {
        if s.write_all(&bytes[i % bytes.len()..][..1]).is_err() {
            return Some(t0.elapsed());
        }
        i += 1;
        match s.read(&mut b) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

#[test]
fn dribbling_connections_are_closed_within_the_deadline() {
    // tick 200ms: the HA handshake deadline is 1 s (3 ticks, at least 1 s);
    // the IPC hello deadline is 5 s. Both are totals, not per read.
    let n = Node::start("n", 2, free_port(), &[]);
    n.ha().beprimary("n").unwrap();
    let give_up = Duration::from_secs(30);
    let mut hs = Vec::new();
    for _ in 0..10 {
        let s = ha_raw(&n);
        // A frame header announcing 100 bytes, then one byte at a time.
        let mut bytes = vec![0u8, 0, 0, 100];
        bytes.extend([131u8; 100]);
        hs.push(std::thread::spawn(move || {
            dribble(s, &bytes, Duration::from_millis(200), give_up)
        }));
        let s = ipc_raw(&n);
        let h = hello(CLIENT_HADATA).to_vec();
        hs.push(std::thread::spawn(move || {
            dribble(s, &h, Duration::from_millis(700), give_up)
        }));
    }
    let lived: Vec<Option<Duration>> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!("dribblers lived {lived:?}");
    for (i, l) in lived.iter().enumerate() {
        let l = l.unwrap_or_else(|| panic!("dribbler {i} still open after {give_up:?}"));
        // Deadline plus generous slack for a loaded machine.
        assert!(l < Duration::from_secs(15), "dribbler {i} lived {l:?}");
    }
    n.set("/alive", Value::Int32(1));
}

#[test]
fn pending_handshakes_are_capped_per_port() {
    let p = Node::start("p", 2, free_port(), &["--max-pending-handshakes", "8"]);
    p.ha().beprimary("p").unwrap();
    let pid = p.pid();
    let t0 = threads(pid);
    // 100 idle connections on each port: only 8 per port get a thread.
    let mut idle: Vec<TcpStream> = (0..100).map(|_| ha_raw(&p)).collect();
    idle.extend((0..100).map(|_| ipc_raw(&p)));
    std::thread::sleep(Duration::from_millis(300));
    let t = threads(pid);
    eprintln!("threads with 200 idle connections: {t0} -> {t}");
    assert!(t <= t0 + 16 + 4, "threads {t0} -> {t}");
    // (All from one address: the per-source cap, also 8, refuses them first.)
    let log = p.log_text();
    assert!(
        log.contains("max-pending-handshakes") || log.contains("MAX_PENDING_HANDSHAKES_PER_SOURCE")
    );
    // Once the idle ones are past their deadline, a real secondary joins.
    let s = Node::start("s", 3, p.ha_port, &[]);
    wait_for("the secondary to join", Duration::from_secs(30), || {
        s.ha().besecondary("s", &p.as_primary(), true).ok()
    });
    drop(idle);
}

/// A TCP connection to `to` leaving from the loopback address `from`.
fn connect_from(from: &str, to: &str) -> TcpStream {
    let to: std::net::SocketAddr = to.parse().unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&local.into()).unwrap();
    sock.connect(&to.into()).unwrap();
    sock.into()
}

#[test]
fn one_source_cannot_fill_the_pending_handshakes_of_a_port() {
    // Default max-pending-handshakes (64): 100 idle connections from one
    // address would hold every slot for a whole handshake timeout (15 s
    // with a 5 s tick) without the per-source cap.
    let p = Node::start("p", 2, free_port(), &["--tick-timeout", "5s"]);
    p.ha().beprimary("p").unwrap();
    let ha_addr = format!("{}:{}", p.ip, p.ha_port);
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| connect_from("127.0.0.1", &ha_addr))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A real secondary on 127.0.0.3 joins well within the handshake timeout.
    let t = Instant::now();
    let s = Node::start("s", 3, p.ha_port, &[]);
    wait_for("the secondary to join", Duration::from_secs(8), || {
        s.ha().besecondary("s", &p.as_primary(), true).ok()
    });
    eprintln!("secondary joined {:?} after the attack", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    drop(idle);
    // The same on the IPC port (127.0.0.1): 100 idle connections from
    // 127.0.0.2, and HA control from 127.0.0.1 gets its status at once
    // (well within the 5 s hello timeout that would free the slots).
    let ipc_addr = format!("127.0.0.1:{}", p.ipc_port);
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| connect_from("127.0.0.2", &ipc_addr))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (state, _) = HaClient::connect(&p.ep(), TOKEN)
        .expect("HA control connects")
        .get_status()
        .expect("status");
    assert_eq!(state, STATE_PRIMARY);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let out = ha_ctl(&p, &["status"]);
    assert!(out.status.success(), "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(p.log_text().contains("MAX_PENDING_HANDSHAKES_PER_SOURCE"));
    drop(idle);
}

/// A burst of connections from one host (a client's pool; every local client comes from
/// 127.0.0.1) is admitted while the port is not under pressure: the per-source cap applies
/// only once half of `max-pending-handshakes` are in use (before, the 9th connection of a
/// pool opening at once was closed at accept).
#[test]
fn a_burst_of_connections_from_one_host_is_admitted() {
    let p = Node::start("p", 2, free_port(), &[]);
    p.ha().beprimary("p").unwrap();
    // 12 connections from 127.0.0.1 in their hello at once (more than the per-source cap)...
    let held: Vec<TcpStream> = (0..12).map(|_| ipc_raw(&p)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // ...and one more from the same host says its hello and commits.
    p.set("/pool", Value::Int32(1));
    assert!(!p.log_text().contains("MAX_PENDING_HANDSHAKES_PER_SOURCE"));
    drop(held);
}

#[test]
fn idle_data_connections_time_out_and_subscriptions_count_against_the_limit() {
    let n = Node::start(
        "n",
        2,
        free_port(),
        &["--client-idle-timeout", "1s", "--max-connections", "2"],
    );
    let mut idle = ipc_data(&n);
    let t0 = Instant::now();
    assert!(closed_by_daemon(&mut idle));
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(n
        .log_text()
        .contains("idle longer than client-idle-timeout"));
    // Two subscribers fill max-connections: an event client is refused
    // with a clear error, a data client gets only a read-only slot.
    let _subs: Vec<EventClient> = (0..2)
        .map(|_| {
            wait_for("a slot", Duration::from_secs(10), || {
                EventClient::connect(&n.ep(), NOTIF_HA_INFO, 0).ok()
            })
        })
        .collect();
    let Err(e) = EventClient::connect(&n.ep(), NOTIF_HA_INFO, 0) else {
        panic!("a third subscriber is refused")
    };
    assert_eq!(
        e.errno(),
        confd_ha::errcode::CONFD_ERR_TOO_MANY_SESSIONS,
        "{e}"
    );
    let mut t = Txn::new();
    t.set("/a", Value::Int32(1));
    let e = n.data().commit(&t).unwrap_err();
    assert_eq!(
        e.errno(),
        confd_ha::errcode::CONFD_ERR_TOO_MANY_SESSIONS,
        "{e}"
    );
}

#[test]
fn ha_ctl_status_with_a_wrong_token_leaves_ha_control_alone() {
    let p = Node::start("p", 2, free_port(), &[]);
    let mut framework = p.ha();
    framework.beprimary("p").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["-p", &p.ipc_port.to_string(), "-t", "anything", "status"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("state: primary"));
    // The framework's connection still works, and the token is unchanged:
    // a secondary holding the real token joins.
    let (state, _) = framework.get_status().expect("framework connection alive");
    assert_eq!(state, STATE_PRIMARY);
    let s = Node::start("s", 3, p.ha_port, &[]);
    s.ha().besecondary("s", &p.as_primary(), true).unwrap();
    let (_, nodes) = framework.get_status().unwrap();
    assert_eq!(nodes.len(), 1);
    framework
        .benone()
        .expect("an order on the framework's connection");
}

// ------------------------------------------------- 5. HA_INFO_SYNC bounded

#[test]
fn a_silent_ha_info_sync_subscriber_is_dropped_and_stale_orders_do_not_run() {
    let n = Node::start("n", 2, free_port(), &["--info-sync-timeout", "1s"]);
    let sub = EventClient::connect(&n.ep(), NOTIF_HA_INFO_SYNC, 0).unwrap();
    let mut ha = n.ha();
    ha.beprimary("n").unwrap(); // IS_PRIMARY goes out; never acknowledged
    ha.benone().unwrap(); // held until the subscriber is dropped
    wait_for("the WARN", Duration::from_secs(10), || {
        n.log_text()
            .contains("no ha_sync_ack within 1000 ms (info-sync-timeout)")
            .then_some(())
    });
    drop(sub);
    // An order whose client went away while it was held is not executed.
    ha.beprimary("n").unwrap();
    let _sub2 = EventClient::connect(&n.ep(), NOTIF_HA_INFO_SYNC, 0).unwrap();
    ha.benone().unwrap(); // IS_NONE to sub2, not acknowledged
    let mut raw = ipc_raw(&n);
    raw.write_all(&hello(CLIENT_HA)).unwrap();
    let mut a = [0u8; 9];
    raw.read_exact(&mut a).unwrap();
    write_frame(&mut raw, TOKEN.as_bytes()).unwrap();
    send(&mut raw, &HaRequest::BePrimary { me: buf("n") }.to_term()).unwrap();
    drop(raw);
    wait_for("the refusal", Duration::from_secs(10), || {
        n.log_text()
            .contains("could run; not executed")
            .then_some(())
    });
    assert_ne!(n.state(), STATE_PRIMARY);
}

// ------------------------------------------------- 6. logs and replies

#[test]
fn logs_and_replies_are_bounded_and_inert() {
    let p = Node::start("p", 2, free_port(), &[]);
    p.ha().beprimary("p").unwrap();
    // A node id with a newline in a failed handshake cannot forge a line.
    let forged = b"x\nFORGED INFO ha: this node is now PRIMARY";
    let mut s = ha_raw(&p);
    send(&mut s, &peer_hello(&[1u8; 32])).unwrap();
    let _ = recv(&mut s).unwrap();
    send(&mut s, &peer_auth(&[0u8; 32], forged, b"p")).unwrap();
    let _ = recv(&mut s);
    // A 1 MiB unknown data request: a short error reply, a short log line.
    let mut c = ipc_data(&p);
    let req = Term::Tuple(vec![atom("bogus"), Term::binary(vec![b'y'; 1 << 20])]);
    write_frame(&mut c, &req.encode()).unwrap();
    let reply = recv(&mut c).unwrap();
    let text = format!("{reply:?}");
    assert!(
        reply.encode().len() < 2048,
        "reply of {} bytes",
        reply.encode().len()
    );
    assert!(text.contains("unknown data request"), "{text}");
    // A 4 KiB garbage message before the handshake.
    let mut s = ha_raw(&p);
    let junk = Term::Tuple(vec![atom("junk"), Term::binary(vec![b'\n'; 4000])]);
    send(&mut s, &junk).unwrap();
    assert!(closed_by_daemon(&mut s));
    wait_for("the log lines", Duration::from_secs(10), || {
        let log = p.log_text();
        (log.contains("TOKEN_MISMATCH") && log.contains("unexpected message")).then_some(())
    });
    let log = p.log_text();
    for l in log.lines() {
        assert!(l.len() <= 4096 + 200, "log line of {} bytes", l.len());
        assert!(!l.starts_with("FORGED"), "forged line: {l}");
    }
    assert!(log.contains("x\\nFORGED"), "escaped id not in the log");
}

#[test]
fn garbage_connections_cannot_flood_the_log() {
    let p = Node::start("p", 2, free_port(), &[]);
    p.ha().beprimary("p").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The nodes of the tests log at DEBUG (one line per connection by
    // design); what is counted is what a production log level keeps.
    let logged = || -> usize {
        p.log_text()
            .lines()
            .filter(|l| !l.contains(" DEBUG "))
            .map(|l| l.len() + 1)
            .sum()
    };
    let before = logged();
    // 2,000 connections on each port, each sending garbage: an unknown
    // client id, a data hello then a garbage frame, an oversized frame,
    // half a hello; on the HA port a garbage frame or a bare close.
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let ipc = format!("127.0.0.1:{}", p.ipc_port);
            let ha = format!("{}:{}", p.ip, p.ha_port);
            std::thread::spawn(move || {
                for i in (w..2000).step_by(4) {
                    let mut s = TcpStream::connect(&ipc).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let _ = match i % 4 {
                        0 => s.write_all(&[0xee; 9]),
                        1 => s
                            .write_all(&hello(CLIENT_HADATA))
                            .and_then(|_| s.read_exact(&mut [0u8; 9]))
                            .and_then(|_| s.write_all(&[0, 0, 0, 3, 1, 2, 3])),
                        2 => s
                            .write_all(&hello(CLIENT_HADATA))
                            .and_then(|_| s.read_exact(&mut [0u8; 9]))
                            .and_then(|_| s.write_all(&[0x7f, 0xff, 0xff, 0xff])),
                        _ => s
                            .write_all(&[1, 2, 3])
                            .and_then(|_| s.shutdown(std::net::Shutdown::Write)),
                    };
                    let _ = s.read_to_end(&mut Vec::new());
                    let mut s = TcpStream::connect(&ha).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    if i % 2 == 0 {
                        let _ = s.write_all(&[0, 0, 0, 5, 131, 1, 2, 3, 4]);
                    }
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    let _ = s.read_to_end(&mut Vec::new());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = logged() - before;
    eprintln!("log grew by {grown} bytes for 4,000 garbage connections");
    assert!(grown < 50_000, "log grew by {grown} bytes");
    // Still serving.
    assert_eq!(p.status().0, STATE_PRIMARY);
}

// ------------------------------------------------- 7. the smaller ones

#[test]
fn acks_beyond_the_last_sent_seq_drop_the_secondary() {
    let p = Node::start("p", 2, free_port(), &[]);
    let mut ha = p.ha();
    ha.beprimary("p").unwrap();
    let mut s = fake_secondary(&p, TOKEN, "evil");
    wait_for("the secondary", Duration::from_secs(10), || {
        (ha.get_status().unwrap().1.len() == 1).then_some(())
    });
    send(
        &mut s,
        &Term::Tuple(vec![atom("ack"), Term::Int(u64::MAX as i128)]),
    )
    .unwrap();
    assert!(closed_by_daemon(&mut s));
    wait_for("the drop", Duration::from_secs(10), || {
        ha.get_status().unwrap().1.is_empty().then_some(())
    });
    assert!(p.log_text().contains("beyond the last one sent"));
    // Sync commits do not wait for it.
    p.set("/a", Value::Int32(1));
}

#[test]
fn store_and_data_dir_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let n = Node::start("n", 2, free_port(), &[]);
    n.set("/a", Value::Int32(1));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&n.dir), 0o700);
    assert_eq!(mode(&n.dir.join("store.redb")), 0o600);
}

#[test]
fn ha_ctl_exits_cleanly_on_a_closed_stdout_and_reads_the_token_safely() {
    let n = Node::start("n", 2, free_port(), &[]);
    let mut t = Txn::new();
    for i in 0..5000 {
        t.set(&format!("/many/child-number-{i:06}"), Value::Int32(i));
    }
    n.data().commit(&t).unwrap();
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' -p {} list /many | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
            env!("CARGO_BIN_EXE_ha-ctl"),
            n.ipc_port
        ))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.starts_with("child-number-000000\n"), "{out}");
    assert!(out.contains("status=0"), "{out} {err}");
    assert!(!err.contains("panicked"), "{err}");
    // The token from a file, and from the environment.
    let dir = TempDir::new("tok");
    let f = dir.path().join("token");
    std::fs::write(&f, format!("{TOKEN}\n")).unwrap();
    let o = ha_ctl(&n, &["--token-file", f.to_str().unwrap(), "primary", "n"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(env!("CARGO_BIN_EXE_ha-ctl"))
        .args(["-p", &n.ipc_port.to_string(), "none"])
        .env("HA_CTL_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ha_ctl(&n, &["--token-file", "/nonexistent/token", "none"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn absurd_settings_are_refused_at_start() {
    for args in [
        &["--tick-timeout", "7000000000000000000s"][..],
        &["--tick-timeout", "1ns"],
        &["--tick-timeout", "0.000000001s"],
        &["--info-sync-timeout", "0"],
        &["--max-pending-handshakes", "0"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_ha-node"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&args[0][2..]), "{args:?}: {err}");
    }
}

#[test]
fn orders_with_bad_node_ids_are_refused() {
    let n = Node::start("n", 2, free_port(), &[]);
    let e = n.ha().beprimary("").unwrap_err();
    assert!(e.to_string().contains("node id is empty"), "{e}");
    let e = n.ha().beprimary(&"x".repeat(200)).unwrap_err();
    assert!(e.to_string().contains("longer than 128"), "{e}");
}

// ------------------------------------------------- the network fuzzer

/// xorshift64*: a reproducible stream of pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Real frames of the IPC data and event protocols (as the library sends
/// them) and of the node-to-node protocol (as a secondary sends them).
fn corpus() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    use confd_ha::proto::data::{DataRequest, Op};
    use confd_ha::proto::ha::Subscription;
    let ipc: Vec<Vec<u8>> = vec![
        DataRequest::Get("/a/b".into()).to_term().encode(),
        DataRequest::Exists("/a".into()).to_term().encode(),
        DataRequest::List("/".into()).to_term().encode(),
        DataRequest::TxId.to_term().encode(),
        DataRequest::Stats.to_term().encode(),
        DataRequest::NodeState.to_term().encode(),
        DataRequest::Commit(vec![
            Op::Set("/fz/a".into(), Value::Int32(5)),
            Op::Set("/fz/b".into(), Value::Buf(b"hello".to_vec())),
            Op::Delete("/fz/c".into()),
        ])
        .to_term()
        .encode(),
        Subscription {
            mask: NOTIF_HA_INFO | NOTIF_HEARTBEAT,
            heartbeat_ms: 1000,
            health_check_ms: 0,
            verbosity: 0,
        }
        .to_term()
        .encode(),
        confd_ha::proto::ha::ha_sync_ack().encode(),
    ];
    let ha: Vec<Vec<u8>> = vec![
        peer_hello(&[3u8; 32]).encode(),
        peer_auth(&[4u8; 32], b"s1", b"p").encode(),
        Term::Tuple(vec![atom("ack"), Term::int(3)]).encode(),
        atom("tick").encode(),
        Term::Tuple(vec![
            atom("sub_secondaries"),
            Term::List(vec![confd_ha::proto::ha::HaNode {
                id: buf("s2"),
                addr: confd_ha::proto::ha::NodeAddr::V4("127.0.0.3".parse().unwrap()),
            }
            .to_term()]),
        ])
        .encode(),
        Term::Tuple(vec![
            atom("txn"),
            Term::int(4),
            Term::binary("p-4-1"),
            Term::List(vec![Term::Tuple(vec![
                atom("set"),
                Term::binary("/a"),
                Term::binary(Value::Int32(1).to_term().encode()),
            ])]),
        ])
        .encode(),
    ];
    (ipc, ha)
}

fn mutate(r: &mut Rng, seed: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + r.below(4) {
        match r.below(8) {
            0 if !b.is_empty() => {
                let i = r.below(b.len());
                b[i] ^= 1 << r.below(8);
            }
            1 if !b.is_empty() => {
                let i = r.below(b.len());
                b[i] = r.next() as u8;
            }
            2 => {
                let i = r.below(b.len() + 1);
                b.insert(i, r.next() as u8);
            }
            3 if !b.is_empty() => {
                let i = r.below(b.len());
                b.remove(i);
            }
            4 => b.truncate(r.below(b.len() + 1)),
            5 if b.len() > 5 => {
                // An interesting 32-bit count or length somewhere.
                let i = r.below(b.len() - 4);
                let v: u32 = [0, 1, 255, 65535, 0x7fff_ffff, 0xffff_ffff][r.below(6)];
                b[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            6 => {
                let o = &corpus[r.below(corpus.len())];
                let i = r.below(b.len() + 1);
                let j = r.below(o.len() + 1);
                b.splice(i..i, o[j..].iter().copied());
            }
            _ => {
                // An interesting tag at a random place (compressed, list, big).
                if !b.is_empty() {
                    let i = r.below(b.len());
                    b[i] = [80u8, 104, 105, 106, 107, 108, 109, 110, 111][r.below(9)];
                }
            }
        }
    }
    b
}

/// Sends one connection's worth of mutated frames; the framing itself is
/// mutated sometimes too.
fn fuzz_conn(r: &mut Rng, mut s: TcpStream, frames: &[Vec<u8>]) {
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_read_timeout(Some(Duration::from_millis(5)));
    for f in frames {
        let mut wire = Vec::with_capacity(f.len() + 4);
        let len = if r.below(10) == 0 {
            r.next() as u32
        } else {
            f.len() as u32
        };
        wire.extend_from_slice(&len.to_be_bytes());
        wire.extend_from_slice(f);
        if s.write_all(&wire).is_err() {
            return;
        }
    }
    let mut b = [0u8; 4096];
    let _ = s.read(&mut b);
}

fn fuzz_port(n: &Node, ipc: bool, total: usize, seed: u64) {
    let (ipc_corpus, ha_corpus) = corpus();
    let corpus = if ipc { &ipc_corpus } else { &ha_corpus };
    let mut r = Rng(seed | 1);
    let pid = n.pid();
    let rss0 = proc_kb(pid, "VmRSS:");
    let batch = 500;
    let mut sent = 0;
    while sent < total {
        let mut in_batch = 0;
        while in_batch < batch {
            let k = 1 + r.below(4);
            let frames: Vec<Vec<u8>> = (0..k)
                .map(|_| {
                    let i = r.below(corpus.len());
                    mutate(&mut r, &corpus[i], corpus)
                })
                .collect();
            let s = if ipc {
                let mut s = ipc_raw(n);
                // The hello is mutated now and then too.
                let mut h = hello(if r.below(2) == 0 {
                    CLIENT_HADATA
                } else {
                    CLIENT_EVENT_MGR
                });
                if r.below(8) == 0 {
                    let i = r.below(9);
                    h[i] = r.next() as u8;
                }
                if s.write_all(&h).is_err() {
                    continue;
                }
                let mut a = [0u8; 9];
                if s.read_exact(&mut a).is_err() {
                    continue;
                }
                s
            } else {
                ha_raw(n)
            };
            fuzz_conn(&mut r, s, &frames);
            in_batch += k;
        }
        sent += in_batch;
        // Liveness: the data API answers; the HA port completes a handshake
        // step; RSS stays near where it started.
        let mut d = DataClient::connect(&n.ep()).expect("IPC port alive");
        d.txid().expect("data API alive");
        let mut h = ha_raw(n);
        send(&mut h, &peer_hello(&[9u8; 32])).unwrap();
        let ch = recv(&mut h).expect("HA port alive");
        assert!(ch.as_tuple().is_some_and(|e| e[0].is_atom("ha_challenge")));
        let rss = proc_kb(pid, "VmRSS:");
        assert!(
            rss < rss0 + 256 * 1024,
            "RSS {rss0} kB -> {rss} kB after {sent} frames (seed {seed})"
        );
    }
    eprintln!(
        "fuzzed {} port: {sent} frames, seed {seed}, RSS {} -> {} kB, peak {} kB",
        if ipc { "IPC" } else { "HA" },
        rss0,
        proc_kb(pid, "VmRSS:"),
        proc_kb(pid, "VmHWM:")
    );
}

/// HA_FUZZ_FRAMES frames per port (default 3000; `make check-fuzz` runs
/// 100 000), seed HA_FUZZ_SEED (default: from the clock, printed).
#[test]
fn network_fuzz_both_ports() {
    let total: usize = std::env::var("HA_FUZZ_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("HA_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let n = Node::start("n", 2, free_port(), &["--log-level", "warn"]);
    n.ha().beprimary("p").unwrap();
    fuzz_port(&n, false, total, seed);
    fuzz_port(&n, true, total, seed.wrapping_add(1));
    // Still a working primary.
    n.set("/alive", Value::Int32(1));
    assert_eq!(n.state(), STATE_PRIMARY);
}
