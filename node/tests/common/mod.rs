//! Test harness: real `ha-node` processes on loopback, each on its own free
//! ports and temporary data directory, killed and reaped on drop.
#![allow(dead_code)]

use confd_ha::client::data::{DataClient, Txn};
use confd_ha::client::events::{Event, EventClient};
use confd_ha::client::ha::HaClient;
use confd_ha::client::Endpoint;
use confd_ha::proto::ha::{HaEvent, HaNode, NodeAddr};
use confd_ha::value::Value;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "secret-token";
pub const TICK: &str = "200ms";

static DIRS: AtomicU32 = AtomicU32::new(0);

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "ha-node-test-{}-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed),
            tag
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP port free on all the loopback addresses the tests use.
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = l.local_addr().unwrap().port();
        drop(l);
        let ok = (2..=6).all(|i| TcpListener::bind(format!("127.0.0.{i}:{p}")).is_ok());
        if ok {
            return p;
        }
    }
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn buf(s: &str) -> Value {
    Value::Buf(s.as_bytes().to_vec())
}

/// One ha-node process.
pub struct Node {
    pub name: String,
    /// The node's loopback IP (its HA address).
    pub ip: String,
    pub ha_port: u16,
    pub ipc_port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub extra: Vec<String>,
    child: Option<Child>,
    _tmp: Option<TempDir>,
}

impl Node {
    /// Starts a node with its own data directory on 127.0.0.`n`.
    pub fn start(name: &str, n: u8, ha_port: u16, extra: &[&str]) -> Node {
        let tmp = TempDir::new(name);
        let dir = tmp.path().join("data");
        let mut node = Node {
            name: name.into(),
            ip: format!("127.0.0.{n}"),
            ha_port,
            ipc_port: free_port(),
            log: tmp.path().join("node.log"),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            _tmp: Some(tmp),
        };
        node.spawn();
        node
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        // HA_NODE_BIN runs the tests against another build (before/after measurements).
        let bin = std::env::var("HA_NODE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ha-node").to_string());
        let mut cmd = Command::new(bin);
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
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn ha-node"));
        let addr = format!("127.0.0.1:{}", self.ipc_port);
        wait_for(
            &format!("{} to accept on {addr}", self.name),
            Duration::from_secs(15),
            || {
                if let Some(c) = self.child.as_mut() {
                    if let Ok(Some(st)) = c.try_wait() {
                        panic!("{} exited early: {st}\n{}", self.name, self.log_text());
                    }
                }
                TcpStream::connect(&addr).ok()
            },
        );
    }

    pub fn ep(&self) -> Endpoint {
        Endpoint::Tcp(format!("127.0.0.1:{}", self.ipc_port))
    }

    pub fn ha(&self) -> HaClient {
        HaClient::connect(&self.ep(), TOKEN).expect("HA connect")
    }

    pub fn ha_token(&self, token: &str) -> HaClient {
        HaClient::connect(&self.ep(), token).expect("HA connect")
    }

    pub fn data(&self) -> DataClient {
        DataClient::connect(&self.ep()).expect("data connect")
    }

    pub fn events(&self, mask: i128) -> EventClient {
        EventClient::connect(&self.ep(), mask, 0).expect("event connect")
    }

    /// This node as a primary for besecondary.
    pub fn as_primary(&self) -> HaNode {
        HaNode {
            id: buf(&self.name),
            addr: NodeAddr::V4(self.ip.parse().unwrap()),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit on its own (after a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let c = self.child.as_mut().expect("running");
        let st = wait_for(&format!("{} to exit", self.name), timeout, || {
            c.try_wait().ok().flatten()
        });
        self.child = None;
        st
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stat(&self, key: &str) -> i64 {
        let st = self.data().stats().expect("stats");
        st.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no stat {key} in {st:?}"))
    }

    pub fn status(&self) -> (i32, Vec<HaNode>) {
        self.ha().get_status().expect("get_status")
    }

    pub fn state(&self) -> i32 {
        self.data()
            .node_state()
            .map(|s| s.state)
            .expect("node_state")
    }

    pub fn wait_state(&self, state: i32, timeout: Duration) {
        wait_for(
            &format!("{} to reach state {state}", self.name),
            timeout,
            || (self.state() == state).then_some(()),
        );
    }

    pub fn set(&self, path: &str, v: Value) -> String {
        let mut t = Txn::new();
        t.set(path, v);
        self.data().commit(&t).expect("commit")
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.data().get(path).ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGCONT first in case a test left it stopped.
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log_text());
        }
    }
}

/// Reads events until one matches, failing after `timeout`.
pub fn expect_event(
    ev: &mut EventClient,
    timeout: Duration,
    mut pred: impl FnMut(&HaEvent) -> bool,
) -> HaEvent {
    let _ = ev.stream.set_read_timeout(Some(timeout));
    let deadline = Instant::now() + timeout;
    loop {
        match ev.read() {
            Ok(Event::Ha(e)) if pred(&e) => return e,
            Ok(_) => {}
            Err(e) => panic!("waiting for an event: {e}"),
        }
        if Instant::now() > deadline {
            panic!("no matching event within {timeout:?}");
        }
    }
}

/// Reads the next HA event (skipping heartbeats).
pub fn next_ha_event(ev: &mut EventClient, timeout: Duration) -> HaEvent {
    let _ = ev.stream.set_read_timeout(Some(timeout));
    loop {
        match ev.read() {
            Ok(Event::Ha(e)) => return e,
            Ok(_) => {}
            Err(e) => panic!("waiting for an event: {e}"),
        }
    }
}

/// A TCP connection to `to` from the IP address of `from` (IP:PORT or IP; any port), as a
/// Raft member dials from its node-address IP.
#[allow(dead_code)]
pub fn connect_from_ip(from: &str, to: &str) -> std::net::TcpStream {
    let ip: std::net::IpAddr = from
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| from.parse())
        .expect("an IP address");
    let to: std::net::SocketAddr = to.parse().expect("IP:PORT");
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    sock.bind(&std::net::SocketAddr::new(ip, 0).into())
        .expect("bind");
    sock.connect(&to.into()).expect("connect");
    sock.into()
}
