//! The three ha-node processes of one scenario, each with a fresh data
//! directory (optionally a small tmpfs), started directly or inside its
//! network namespace; and the connections the clients use (with deadlines,
//! so a frozen or partitioned node cannot hang the suite).

use crate::common::{free_port, TempDir, TOKEN};
use crate::net::Net;
use confd_ha::client::data::DataClient;
use confd_ha::client::ha::HaClient;
use confd_ha::client::{hello_adapting, Stream};
use confd_ha::proto::data::NodeState;
use confd_ha::proto::ha::{HaNode, NodeAddr};
use confd_ha::proto::hello::{CLIENT_HA, CLIENT_HADATA};
use confd_ha::value::Value;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Tick interval of every node (dead after 3 ticks).
pub const TICK: &str = "250ms";
/// How long a probe of a node (connect, hello, one request) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long an HA order (besecondary may copy everything) may take.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to accept after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Size of a tmpfs data directory (filled on purpose by the disk-full faults).
pub const TMPFS_SIZE_MB: u32 = 64;

/// Opens a TCP stream with a connect, read and write deadline (no hello).
fn open(addr: &str, timeout: Duration) -> confd_ha::error::Result<Stream> {
    let os = |e: std::io::Error| confd_ha::error::Error::os(format!("connecting to {addr}"), e);
    let sa: SocketAddr = addr
        .parse()
        .map_err(|_| confd_ha::error::Error::usage(format!("bad address {addr}")))?;
    let t = TcpStream::connect_timeout(&sa, timeout).map_err(os)?;
    let _ = t.set_nodelay(true);
    t.set_read_timeout(Some(timeout)).map_err(os)?;
    t.set_write_timeout(Some(timeout)).map_err(os)?;
    Ok(Stream::Tcp(t))
}

/// Opens a client connection with a connect and read deadline and runs the
/// hello as `client`.
pub fn connect(addr: &str, client: u8, timeout: Duration) -> Result<Stream, String> {
    let first = open(addr, timeout).map_err(|e| e.to_string())?;
    hello_adapting(
        addr,
        client,
        first,
        &mut || open(addr, timeout),
        &mut |_, _| {},
    )
    .map(|(s, _)| s)
    .map_err(|e| format!("{addr}: hello: {e}"))
}

pub fn data_client(addr: &str, timeout: Duration) -> Result<DataClient, String> {
    connect(addr, CLIENT_HADATA, timeout).map(|stream| DataClient { stream })
}

pub fn ha_client(addr: &str, timeout: Duration) -> Result<HaClient, String> {
    let mut s = connect(addr, CLIENT_HA, timeout)?;
    confd_ha::client::ha::send_token(&mut s, TOKEN.as_bytes()).map_err(|e| e.to_string())?;
    Ok(HaClient { stream: s })
}

/// One ha-node process.
pub struct FNode {
    pub name: String,
    /// HA address (its own IP).
    pub ip: String,
    /// IPC address the clients use.
    pub ipc: String,
    pub ha_port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    prefix: Vec<String>,
    pub args: Vec<String>,
    child: Option<Child>,
    pub frozen: bool,
    tmpfs: bool,
    /// Exits we caused or expected (kill -9, `--on-store-error exit`).
    pub expected_exit: bool,
    _tmp: TempDir,
}

impl FNode {
    pub fn as_primary(&self) -> HaNode {
        HaNode {
            id: Value::Buf(self.name.as_bytes().to_vec()),
            addr: NodeAddr::V4(self.ip.parse().expect("IPv4")),
        }
    }

    pub fn store_file(&self) -> PathBuf {
        self.dir.join("store.redb")
    }

    fn command(&self) -> Command {
        let bin = env!("CARGO_BIN_EXE_ha-node");
        let mut cmd = if self.prefix.is_empty() {
            Command::new(bin)
        } else {
            let mut c = Command::new(&self.prefix[0]);
            c.args(&self.prefix[1..]).arg(bin);
            c
        };
        cmd.arg("--ipc-addr")
            .arg(&self.ipc)
            .arg("--ha-addr")
            .arg(format!("{}:{}", self.ip, self.ha_port))
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--tick-timeout")
            .arg(TICK)
            .arg("--log-level")
            .arg("info")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file")
    }

    /// Starts the process and waits until it accepts.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let mut cmd = self.command();
        cmd.stderr(self.log_file());
        self.child = Some(cmd.spawn().expect("spawn ha-node"));
        self.frozen = false;
        self.expected_exit = false;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = self.exited() {
                panic!("{} exited at start: {st}\n{}", self.name, self.log_tail(40));
            }
            if connect(&self.ipc, CLIENT_HADATA, PROBE_TIMEOUT).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!("{} did not accept on {} in time", self.name, self.ipc);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process expecting it to refuse to start; returns its exit
    /// status and what it wrote on stderr.
    pub fn spawn_expect_refusal(
        &mut self,
        timeout: Duration,
    ) -> Result<(ExitStatus, String), String> {
        assert!(self.child.is_none());
        let errf = self.dir.with_extension("refusal.log");
        let _ = std::fs::remove_file(&errf);
        let mut cmd = self.command();
        cmd.stderr(std::fs::File::create(&errf).expect("stderr file"));
        let mut c = cmd.spawn().expect("spawn ha-node");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                let text = std::fs::read_to_string(&errf).unwrap_or_default();
                return Ok((st, text));
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                let text = std::fs::read_to_string(&errf).unwrap_or_default();
                return Err(format!(
                    "{} did not refuse to start within {timeout:?}; it logged:\n{text}",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The exit status if the process has exited (reaped; the node is then
    /// not running).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        self.frozen = false;
        Some(st)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            self.expected_exit = true;
            let _ = c.kill();
            let _ = c.wait();
        }
        self.frozen = false;
    }

    pub fn freeze(&mut self) {
        self.signal(libc::SIGSTOP);
        self.frozen = true;
    }

    pub fn thaw(&mut self) {
        self.signal(libc::SIGCONT);
        self.frozen = false;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn data(&self) -> Result<DataClient, String> {
        data_client(&self.ipc, PROBE_TIMEOUT)
    }

    /// Role and last transaction, or None if the node does not answer in time.
    pub fn probe(&self) -> Option<NodeState> {
        if self.frozen || self.child.is_none() {
            return None;
        }
        self.data().ok()?.node_state().ok()
    }

    /// Fills the node's tmpfs data directory, leaving `leave` bytes free.
    pub fn fill_disk(&self, leave: u64) {
        assert!(self.tmpfs, "{} has no tmpfs data directory", self.name);
        let free = free_bytes(&self.dir);
        let n = free.saturating_sub(leave);
        let f = std::fs::File::create(self.filler()).expect("filler");
        let chunk = vec![0xa5u8; 1 << 20];
        let mut left = n;
        use std::io::Write;
        let mut w = std::io::BufWriter::new(f);
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            if w.write_all(&chunk[..k]).is_err() {
                break;
            }
            left -= k as u64;
        }
        let _ = w.flush();
    }

    pub fn unfill_disk(&self) {
        let _ = std::fs::remove_file(self.filler());
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler.bin")
    }
}

pub fn free_bytes(p: &Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statvfs on a NUL-terminated path into a zeroed struct.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return 0;
        }
        s.f_bavail as u64 * s.f_frsize as u64
    }
}

impl Drop for FNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of {}'s log ----\n{}",
                self.name,
                self.log_tail(30)
            );
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child (SIGCONT in case it is frozen).
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.tmpfs {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// What a node is started with.
#[derive(Clone, Default)]
pub struct NodeOpts {
    pub args: Vec<String>,
    /// Data directory on a tmpfs of [`TMPFS_SIZE_MB`].
    pub tmpfs: bool,
}

/// Creates (does not start) node `idx` on `net`.
pub fn make_node(net: &Net, idx: usize, ha_port: u16, opts: &NodeOpts) -> FNode {
    let name = format!("n{}", idx + 1);
    let tmp = TempDir::new(&name);
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).expect("data dir");
    if opts.tmpfs {
        let size = format!("size={TMPFS_SIZE_MB}m");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot mount a tmpfs on {}", dir.display());
    }
    let (ip, ipc, prefix) = match net.netns() {
        Some(ns) => (ns.ip(idx), format!("{}:4565", ns.ip(idx)), ns.prefix(idx)),
        None => (
            format!("127.0.0.{}", idx + 2),
            format!("127.0.0.1:{}", free_port()),
            Vec::new(),
        ),
    };
    FNode {
        name,
        ip,
        ipc,
        ha_port,
        log: tmp.path().join("node.log"),
        dir,
        prefix,
        args: opts.args.clone(),
        child: None,
        frozen: false,
        tmpfs: opts.tmpfs,
        expected_exit: false,
        _tmp: tmp,
    }
}

/// The HA port all nodes share.
pub fn ha_port(net: &Net) -> u16 {
    match net {
        Net::Netns(_) => 4570,
        Net::Loopback => free_port(),
    }
}
