//! Command line and TOML configuration (every flag, key and default is listed
//! in the README's ha-node section).

use crate::log::Level;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub const HELP: &str = "\
ha-node: HA node daemon with a replicated durable configuration store

USAGE: ha-node [OPTIONS]

OPTIONS (flags override the config file):
  --config FILE            TOML config file with the same keys as the flags
                           (ipc-addr, ipc-path, ha-addr, extra-listen = [..], data-dir,
                           tick-timeout, replication, log-level, max-connections,
                           min-secondaries, on-store-error, max-pending-handshakes,
                           client-idle-timeout, info-sync-timeout, txlog-max-txns,
                           ha-tls-ca, ha-tls-cert, ha-tls-key, metrics-addr; and, file
                           only: mode = \"external\" (default) | \"raft\" with a [raft] table:
                           cluster-name, node-address, seed-nodes, election-timeout,
                           heartbeat-interval, passive, follower-max-lag, log-max-entries,
                           storage-timeout, token-file, snapshot-max-bytes,
                           check-source-address; see the
                           README, \"Raft mode\")
  --ipc-addr HOST:PORT     client IPC over TCP (default 127.0.0.1:4565); 'none' disables it
  --ipc-path PATH          client IPC over a Unix socket (a stale socket file is removed)
  --ha-addr IP:PORT        where this node listens for secondaries when it is primary or
                           relay (default 0.0.0.0:4570). The port is cluster-wide: a
                           secondary connects to PRIMARY_IP:<this port>, binding its own
                           side to this IP unless it is 0.0.0.0 / ::
  --extra-listen IP:PORT   an additional HA listen address (repeatable; IPv6 as [ip]:port;
                           a missing port means the ha-addr port)
  --data-dir DIR           the store's directory (default ./ha-node-data)
  --tick-timeout DURATION  tick interval between HA peers (default 20s; forms 20s, 200ms,
                           1m, PT20S; 0 disables ticks and dead-peer detection). A peer
                           silent for 3 x tick-timeout is dead.
  --replication MODE       sync (default: a commit returns when every connected secondary
                           has it durable) or async (returns after local durability)
  --log-level LEVEL        error | warn | info (default) | debug
  --max-connections N      most client IPC connections served at once (default 1024);
                           more get CONFD_ERR_TOO_MANY_SESSIONS after their hello. HA
                           control connections always get in, and 2 more read-only data
                           connections (node state, stats: what ha-ctl status uses)
  --max-pending-handshakes N  most connections per listening port (IPC and HA) still in
                           their hello / handshake (default 64); more are closed at once
  --client-idle-timeout DURATION  a data connection that sends nothing this long is
                           closed (default 10m; 0 disables)
  --info-sync-timeout DURATION  an HA_INFO_SYNC subscriber that has not acknowledged an
                           event this long is dropped with a WARN and HA processing goes
                           on (default 30s)
  --min-secondaries N      a commit needs N connected in-sync secondaries (sync mode: it
                           returns OK only once N of them have it durable); with fewer,
                           writes are refused (default 0: ConfD's behaviour)
  --on-store-error ACTION  after a store I/O error: stop-role (default: leave the HA role,
                           refuse writes and joins, reopen the store when possible) or
                           exit (exit with status 3 so that a supervisor restarts the node)
  --metrics-addr HOST:PORT serve Prometheus metrics (GET /metrics, OpenMetrics text) on
                           this address (default: off; 'none' turns it off)
  --txlog-max-txns N       transactions the store's transaction log keeps (default
                           10000, at least 1); a re-join itemises discarded transactions
                           from it, and keeps the complete local state beyond it
  --ha-tls-ca FILE         mutual TLS on the HA port: PEM file of the CA (or CAs) that
                           peers' certificates must chain to
  --ha-tls-cert FILE       PEM file of this node's certificate (then any intermediates);
                           it must name the address secondaries dial (IP SAN or DNS)
  --ha-tls-key FILE        PEM file of this node's private key. The three go together;
                           with them every HA connection is TLS 1.3, both ends verified
  -h, --help               this text
  -V, --version            the version

Logs go to stderr, one line per event. SIGTERM / SIGINT stop the node cleanly (exit 0).
The node is ready when its IPC address accepts connections.

EXAMPLE CONFIG:
  ipc-addr = \"127.0.0.1:4565\"
  ipc-path = \"/tmp/ha-node.sock\"
  ha-addr = \"127.0.0.1:4570\"
  extra-listen = [\"[::1]:4570\"]
  data-dir = \"/var/lib/ha-node\"
  tick-timeout = \"2s\"
  replication = \"sync\"
  log-level = \"info\"
  ha-tls-ca = \"/etc/ha-node/ca.pem\"
  ha-tls-cert = \"/etc/ha-node/node.pem\"
  ha-tls-key = \"/etc/ha-node/node-key.pem\"
";

#[derive(Debug, Clone)]
pub struct Config {
    /// None: TCP IPC disabled.
    pub ipc_addr: Option<String>,
    pub ipc_path: Option<PathBuf>,
    pub ha_addr: SocketAddr,
    pub extra_listen: Vec<SocketAddr>,
    pub data_dir: PathBuf,
    /// None: ticks disabled.
    pub tick: Option<Duration>,
    pub sync: bool,
    pub log_level: Level,
    /// Most client IPC connections served at once; more are refused after their hello.
    pub max_connections: usize,
    /// Connected in-sync secondaries a commit needs (0: none, ConfD's behaviour).
    pub min_secondaries: usize,
    /// After a store I/O error: exit the process (true) or leave the role (false).
    pub exit_on_store_error: bool,
    /// Where GET /metrics is served (None: off).
    pub metrics_addr: Option<SocketAddr>,
    /// Most connections per listening port still in their hello or handshake.
    pub max_pending_handshakes: usize,
    /// A data connection idle this long is closed (None: never).
    pub client_idle_timeout: Option<Duration>,
    /// Longest an HA_INFO_SYNC subscriber may hold HA processing.
    pub info_sync_timeout: Duration,
    /// Mutual TLS on the HA port; None: plain TCP.
    pub ha_tls: Option<TlsFiles>,
    /// Transactions the store's transaction log keeps (≥ 1).
    pub txlog_max_txns: u64,
    /// `mode = "raft"`: the `[raft]` table; None: external mode (ConfD's model).
    pub raft: Option<RaftConfig>,
}

/// The `[raft]` table of `mode = "raft"` (README, "Raft mode").
#[derive(Debug, Clone, PartialEq)]
pub struct RaftConfig {
    /// Nodes of other clusters are refused in the handshake.
    pub cluster_name: String,
    /// IP:PORT of this node's Raft/HA listener; its identity in the cluster.
    pub node_address: SocketAddr,
    /// Other members' addresses (informational: the members are what create-cluster and
    /// adjust-membership made them).
    pub seed_nodes: Vec<SocketAddr>,
    /// A follower that hears nothing from a leader this long starts an election (after
    /// `RAFT_ELECTION_MARGIN_MS` plus a random extra of up to `RAFT_ELECTION_SPREAD_MS`);
    /// a leader that hears from no majority this long steps down.
    pub election_timeout: Duration,
    /// How often the leader sends heartbeats (a whole number of Raft ticks of at most
    /// `RAFT_MAX_TICK_MS`).
    pub heartbeat_interval: Duration,
    /// Never candidate or leader; still votes and replicates.
    pub passive: bool,
    /// A follower more than this many entries behind is reported `behind`.
    pub follower_max_lag: u64,
    /// Entries the Raft log keeps after they are applied; a follower further behind gets
    /// a snapshot (the full copy).
    pub log_max_entries: u64,
    /// A commit that is not applied within this long fails with CONFD_ERR_HA_ABORT
    /// (outcome unknown).
    pub storage_timeout: Duration,
    /// The shared token (HMAC proof of the handshake), read from this file.
    pub token_file: Option<PathBuf>,
    /// The largest snapshot this node stages on disk when receiving one; a larger one is
    /// aborted (bytes).
    pub snapshot_max_bytes: u64,
    /// A peer must connect from the IP address of the node address it claims (this node
    /// dials from its own node-address IP); false where members reach each other through
    /// NAT.
    pub check_source_address: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            cluster_name: "ha-node".into(),
            node_address: "127.0.0.1:4570".parse().expect("literal"),
            seed_nodes: Vec::new(),
            election_timeout: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(100),
            passive: false,
            follower_max_lag: 1000,
            log_max_entries: 10_000,
            storage_timeout: Duration::from_secs(10),
            token_file: None,
            snapshot_max_bytes: DEFAULT_RAFT_SNAPSHOT_MAX_BYTES,
            check_source_address: true,
        }
    }
}

/// The default of `snapshot-max-bytes` in [raft]: 4 GiB.
pub const DEFAULT_RAFT_SNAPSHOT_MAX_BYTES: u64 = 4 << 30;

/// Most election-timeout / heartbeat-interval (the election timeout in ticks).
pub const MAX_RAFT_ELECTION_TICKS: u64 = 1000;
/// Fewest election-timeout / heartbeat-interval (raft needs several heartbeats per
/// election timeout).
pub const MIN_RAFT_ELECTION_TICKS: u64 = 4;
/// Most `seed-nodes`.
pub const MAX_RAFT_SEED_NODES: usize = 64;
/// Longest `cluster-name`, in bytes.
pub const MAX_RAFT_CLUSTER_NAME_BYTES: usize = 128;

/// The PEM files of `ha-tls-ca`, `ha-tls-cert` and `ha-tls-key`.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Shortest duration accepted for any duration setting but 0 (where 0 means off).
pub const MIN_DURATION: Duration = Duration::from_millis(10);
/// Longest duration accepted for any duration setting: one day.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);

impl Default for Config {
    fn default() -> Self {
        Config {
            ipc_addr: Some("127.0.0.1:4565".into()),
            ipc_path: None,
            ha_addr: "0.0.0.0:4570".parse().expect("literal"),
            extra_listen: Vec::new(),
            data_dir: PathBuf::from("./ha-node-data"),
            tick: Some(Duration::from_secs(20)),
            sync: true,
            log_level: Level::Info,
            max_connections: 1024,
            min_secondaries: 0,
            exit_on_store_error: false,
            metrics_addr: None,
            max_pending_handshakes: 64,
            client_idle_timeout: Some(Duration::from_secs(600)),
            info_sync_timeout: Duration::from_secs(30),
            ha_tls: None,
            txlog_max_txns: crate::store::TXLOG_MAX_TXNS,
            raft: None,
        }
    }
}

impl Config {
    /// How long a peer may stay silent: 3 x tick, or None when ticks are off.
    pub fn dead_after(&self) -> Option<Duration> {
        self.tick.map(|t| t * 3)
    }
    /// How long the primary waits for a secondary's ack: 3 x tick, or 5 s without ticks.
    pub fn ack_timeout(&self) -> Duration {
        self.tick.map(|t| t * 3).unwrap_or(Duration::from_secs(5))
    }
    /// Timeout for each step of the node-to-node handshake and for connecting.
    pub fn handshake_timeout(&self) -> Duration {
        self.tick
            .map(|t| (t * 3).max(Duration::from_secs(1)))
            .unwrap_or(Duration::from_secs(10))
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Cli {
    Run(Box<Config>),
    Help,
    Version,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    ipc_addr: Option<String>,
    ipc_path: Option<String>,
    ha_addr: Option<String>,
    extra_listen: Option<Vec<String>>,
    data_dir: Option<String>,
    tick_timeout: Option<TomlDuration>,
    replication: Option<String>,
    log_level: Option<String>,
    max_connections: Option<usize>,
    min_secondaries: Option<usize>,
    on_store_error: Option<String>,
    metrics_addr: Option<String>,
    max_pending_handshakes: Option<usize>,
    client_idle_timeout: Option<TomlDuration>,
    info_sync_timeout: Option<TomlDuration>,
    ha_tls_ca: Option<String>,
    ha_tls_cert: Option<String>,
    ha_tls_key: Option<String>,
    txlog_max_txns: Option<u64>,
    mode: Option<String>,
    raft: Option<FileRaft>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileRaft {
    cluster_name: Option<String>,
    node_address: Option<String>,
    seed_nodes: Option<Vec<String>>,
    election_timeout: Option<TomlDuration>,
    heartbeat_interval: Option<TomlDuration>,
    passive: Option<bool>,
    follower_max_lag: Option<u64>,
    log_max_entries: Option<u64>,
    storage_timeout: Option<TomlDuration>,
    token_file: Option<String>,
    snapshot_max_bytes: Option<u64>,
    check_source_address: Option<bool>,
}

/// Builds the Raft settings from `mode` and the `[raft]` table (None: external mode).
fn raft_config(mode: Option<&str>, t: Option<FileRaft>) -> Result<Option<RaftConfig>, String> {
    match mode.unwrap_or("external") {
        "external" => {
            if t.is_some() {
                return Err("a [raft] table needs mode = \"raft\"".into());
            }
            return Ok(None);
        }
        "raft" => {}
        m => return Err(format!("bad mode '{m}' (external or raft)")),
    }
    let t = t.unwrap_or_default();
    let mut r = RaftConfig::default();
    if let Some(n) = t.cluster_name {
        if n.is_empty() || n.len() > MAX_RAFT_CLUSTER_NAME_BYTES {
            return Err(format!(
                "raft cluster-name must have 1 to {MAX_RAFT_CLUSTER_NAME_BYTES} bytes"
            ));
        }
        r.cluster_name = n;
    }
    let a = t
        .node_address
        .ok_or("mode = \"raft\" needs node-address in the [raft] table")?;
    r.node_address = parse_listen(&a, None).map_err(|e| format!("raft node-address: {e}"))?;
    if r.node_address.ip().is_unspecified() || r.node_address.port() == 0 {
        return Err(format!(
            "raft node-address {a} must be the concrete IP:PORT other members dial"
        ));
    }
    let seeds = t.seed_nodes.unwrap_or_default();
    if seeds.len() > MAX_RAFT_SEED_NODES {
        return Err(format!("raft seed-nodes: at most {MAX_RAFT_SEED_NODES}"));
    }
    r.seed_nodes = seeds
        .iter()
        .map(|s| parse_listen(s, None).map_err(|e| format!("raft seed-nodes: {e}")))
        .collect::<Result<_, _>>()?;
    if let Some(d) = t.election_timeout {
        r.election_timeout = checked_duration("election-timeout", &toml_duration(d), false)?;
    }
    if let Some(d) = t.heartbeat_interval {
        r.heartbeat_interval = checked_duration("heartbeat-interval", &toml_duration(d), false)?;
    }
    let ticks = (r.election_timeout.as_millis() / r.heartbeat_interval.as_millis().max(1)) as u64;
    if !(MIN_RAFT_ELECTION_TICKS..=MAX_RAFT_ELECTION_TICKS).contains(&ticks) {
        return Err(format!(
            "raft election-timeout ({} ms) must be {MIN_RAFT_ELECTION_TICKS} to \
             {MAX_RAFT_ELECTION_TICKS} times heartbeat-interval ({} ms)",
            r.election_timeout.as_millis(),
            r.heartbeat_interval.as_millis()
        ));
    }
    if let Some(d) = t.storage_timeout {
        r.storage_timeout = checked_duration("storage-timeout", &toml_duration(d), false)?;
    }
    r.passive = t.passive.unwrap_or(false);
    if let Some(n) = t.follower_max_lag {
        r.follower_max_lag = n.max(1);
    }
    if let Some(n) = t.log_max_entries {
        if !(1..=MAX_TXLOG_MAX_TXNS).contains(&n) {
            return Err(format!(
                "bad raft log-max-entries {n} (1 to {MAX_TXLOG_MAX_TXNS})"
            ));
        }
        r.log_max_entries = n;
    }
    r.token_file = t.token_file.map(PathBuf::from);
    if let Some(n) = t.snapshot_max_bytes {
        if n == 0 {
            return Err("bad raft snapshot-max-bytes 0 (at least 1)".into());
        }
        r.snapshot_max_bytes = n;
    }
    if let Some(b) = t.check_source_address {
        r.check_source_address = b;
    }
    Ok(Some(r))
}

/// tick-timeout may be a string ("200ms") or an integer number of milliseconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum TomlDuration {
    Text(String),
    Millis(u64),
}

/// Parses `20s`, `200ms`, `1m`, `1h`, `1.5s`, `PT20S`, `PT0`, `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("bad duration '{s}' (use e.g. 20s, 200ms, 1m, PT20S or 0)");
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if let Some(rest) = t.strip_prefix("PT").or_else(|| t.strip_prefix("pt")) {
        // ISO 8601 time part: [nH][nM][n[.f]S]; "PT0" is allowed.
        if rest == "0" {
            return Ok(Duration::ZERO);
        }
        let mut total = 0f64;
        let mut num = String::new();
        for c in rest.chars() {
            match c {
                '0'..='9' | '.' => num.push(c),
                'H' | 'h' | 'M' | 'm' | 'S' | 's' => {
                    let v: f64 = num.parse().map_err(|_| bad())?;
                    num.clear();
                    total += v * match c.to_ascii_uppercase() {
                        'H' => 3600.0,
                        'M' => 60.0,
                        _ => 1.0,
                    };
                }
                _ => return Err(bad()),
            }
        }
        if !num.is_empty() || rest.is_empty() {
            return Err(bad());
        }
        return Duration::try_from_secs_f64(total).map_err(|_| bad());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let v: f64 = n.parse().map_err(|_| bad())?;
    let mul = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(v * mul).map_err(|_| bad())
}

/// `IP:PORT` (IPv6 as `[ip]:port`); a bare IP takes `default_port`.
pub fn parse_listen(s: &str, default_port: Option<u16>) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(p) = default_port {
        let ip = s.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = ip.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, p));
        }
    }
    Err(format!(
        "bad address '{s}' (expected IP:PORT, IPv6 as [ip]:port)"
    ))
}

/// A duration setting: 0 (when `zero_ok`: off) or within
/// [`MIN_DURATION`, `MAX_DURATION`], with an error naming the setting.
pub fn checked_duration(key: &str, s: &str, zero_ok: bool) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| format!("{key}: {e}"))?;
    if d.is_zero() && zero_ok {
        return Ok(d);
    }
    if d < MIN_DURATION || d > MAX_DURATION {
        return Err(format!(
            "{key} '{s}' is out of range (from {} ms to {} s{})",
            MIN_DURATION.as_millis(),
            MAX_DURATION.as_secs(),
            if zero_ok { ", or 0 for off" } else { "" }
        ));
    }
    Ok(d)
}

fn toml_duration(v: TomlDuration) -> String {
    match v {
        TomlDuration::Text(s) => s,
        TomlDuration::Millis(ms) => format!("{ms}ms"),
    }
}

fn apply_tick(cfg: &mut Config, s: &str) -> Result<(), String> {
    let d = checked_duration("tick-timeout", s, true)?;
    cfg.tick = if d.is_zero() { None } else { Some(d) };
    Ok(())
}

fn apply_idle(cfg: &mut Config, s: &str) -> Result<(), String> {
    let d = checked_duration("client-idle-timeout", s, true)?;
    cfg.client_idle_timeout = (!d.is_zero()).then_some(d);
    Ok(())
}

fn apply_info_sync(cfg: &mut Config, s: &str) -> Result<(), String> {
    cfg.info_sync_timeout = checked_duration("info-sync-timeout", s, false)?;
    Ok(())
}

fn apply_pending(cfg: &mut Config, s: &str) -> Result<(), String> {
    cfg.max_pending_handshakes = s
        .trim()
        .parse()
        .ok()
        .filter(|&n| n > 0 && n <= 65_536)
        .ok_or_else(|| format!("bad max-pending-handshakes '{s}' (1 to 65536)"))?;
    Ok(())
}

fn apply_replication(cfg: &mut Config, s: &str) -> Result<(), String> {
    cfg.sync = match s {
        "sync" => true,
        "async" => false,
        _ => return Err(format!("bad replication mode '{s}' (sync or async)")),
    };
    Ok(())
}

fn apply_level(cfg: &mut Config, s: &str) -> Result<(), String> {
    cfg.log_level =
        Level::parse(s).ok_or_else(|| format!("bad log level '{s}' (error|warn|info|debug)"))?;
    Ok(())
}

fn apply_max_connections(cfg: &mut Config, s: &str) -> Result<(), String> {
    cfg.max_connections = s
        .trim()
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad max-connections '{s}' (a positive number)"))?;
    Ok(())
}

fn apply_min_secondaries(cfg: &mut Config, s: &str) -> Result<(), String> {
    cfg.min_secondaries = s
        .trim()
        .parse()
        .ok()
        .filter(|&n| n <= crate::replication::external::primary::MAX_SECONDARIES)
        .ok_or_else(|| {
            format!(
                "bad min-secondaries '{s}' (a number from 0 to {})",
                crate::replication::external::primary::MAX_SECONDARIES
            )
        })?;
    Ok(())
}

/// Largest accepted `txlog-max-txns`.
pub const MAX_TXLOG_MAX_TXNS: u64 = 100_000_000;

fn apply_txlog_max(cfg: &mut Config, s: &str) -> Result<(), String> {
    cfg.txlog_max_txns = s
        .trim()
        .parse()
        .ok()
        .filter(|&n| (1..=MAX_TXLOG_MAX_TXNS).contains(&n))
        .ok_or_else(|| {
            format!("bad txlog-max-txns '{s}' (a number from 1 to {MAX_TXLOG_MAX_TXNS})")
        })?;
    Ok(())
}

fn apply_on_store_error(cfg: &mut Config, s: &str) -> Result<(), String> {
    cfg.exit_on_store_error = match s {
        "stop-role" => false,
        "exit" => true,
        _ => return Err(format!("bad on-store-error '{s}' (stop-role or exit)")),
    };
    Ok(())
}

fn apply_metrics_addr(cfg: &mut Config, s: &str) -> Result<(), String> {
    cfg.metrics_addr = if s == "none" || s.is_empty() {
        None
    } else {
        Some(
            std::net::ToSocketAddrs::to_socket_addrs(s)
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("bad metrics-addr '{s}' (expected HOST:PORT)"))?,
        )
    };
    Ok(())
}

fn apply_ipc_addr(cfg: &mut Config, s: &str) -> Result<(), String> {
    cfg.ipc_addr = if s == "none" || s.is_empty() {
        None
    } else {
        Some(s.to_owned())
    };
    Ok(())
}

/// `ha-tls-ca`, `ha-tls-cert`, `ha-tls-key` as given so far (file, then flags).
#[derive(Default)]
struct TlsArgs([Option<String>; 3]);

impl TlsArgs {
    const KEYS: [&'static str; 3] = ["ha-tls-ca", "ha-tls-cert", "ha-tls-key"];

    /// All three or none.
    fn finish(self) -> Result<Option<TlsFiles>, String> {
        match self.0 {
            [Some(ca), Some(cert), Some(key)] => Ok(Some(TlsFiles {
                ca: ca.into(),
                cert: cert.into(),
                key: key.into(),
            })),
            [None, None, None] => Ok(None),
            given => {
                let missing: Vec<&str> = given
                    .iter()
                    .zip(Self::KEYS)
                    .filter(|(v, _)| v.is_none())
                    .map(|(_, k)| k)
                    .collect();
                Err(format!(
                    "ha-tls-ca, ha-tls-cert and ha-tls-key go together: {} missing",
                    missing.join(" and ")
                ))
            }
        }
    }
}

fn load_file(
    cfg: &mut Config,
    tls: &mut TlsArgs,
    path: &str,
    ha_addr_given: &mut bool,
) -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read config {path}: {e}"))?;
    let f: FileConfig =
        toml::from_str(&text).map_err(|e| format!("bad config file {path}: {e}"))?;
    if let Some(a) = f.ipc_addr {
        apply_ipc_addr(cfg, &a)?;
    }
    if let Some(p) = f.ipc_path {
        cfg.ipc_path = Some(p.into());
    }
    if let Some(a) = f.ha_addr {
        cfg.ha_addr = parse_listen(&a, None)?;
        *ha_addr_given = true;
    }
    cfg.raft = raft_config(f.mode.as_deref(), f.raft)?;
    if let Some(d) = f.data_dir {
        cfg.data_dir = d.into();
    }
    if let Some(t) = f.tick_timeout {
        apply_tick(cfg, &toml_duration(t))?;
    }
    if let Some(t) = f.client_idle_timeout {
        apply_idle(cfg, &toml_duration(t))?;
    }
    if let Some(t) = f.info_sync_timeout {
        apply_info_sync(cfg, &toml_duration(t))?;
    }
    if let Some(n) = f.max_pending_handshakes {
        apply_pending(cfg, &n.to_string())?;
    }
    if let Some(r) = f.replication {
        apply_replication(cfg, &r)?;
    }
    if let Some(l) = f.log_level {
        apply_level(cfg, &l)?;
    }
    if let Some(n) = f.max_connections {
        apply_max_connections(cfg, &n.to_string())?;
    }
    if let Some(n) = f.min_secondaries {
        apply_min_secondaries(cfg, &n.to_string())?;
    }
    if let Some(a) = f.on_store_error {
        apply_on_store_error(cfg, &a)?;
    }
    if let Some(a) = f.metrics_addr {
        apply_metrics_addr(cfg, &a)?;
    }
    if let Some(n) = f.txlog_max_txns {
        apply_txlog_max(cfg, &n.to_string())?;
    }
    for (slot, v) in tls
        .0
        .iter_mut()
        .zip([f.ha_tls_ca, f.ha_tls_cert, f.ha_tls_key])
    {
        if v.is_some() {
            *slot = v;
        }
    }
    Ok(f.extra_listen.unwrap_or_default())
}

/// Parses the arguments (without argv[0]).
pub fn parse_args(args: &[String]) -> Result<Cli, String> {
    // Pass 1: --help / --version / --config; flags given as --flag=value are split.
    let mut items: Vec<(String, Option<String>)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        match a.as_str() {
            "-h" | "--help" => return Ok(Cli::Help),
            "-V" | "--version" => return Ok(Cli::Version),
            _ => {}
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        const KNOWN: &[&str] = &[
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
            "--min-secondaries",
            "--on-store-error",
            "--metrics-addr",
            "--txlog-max-txns",
            "--max-pending-handshakes",
            "--client-idle-timeout",
            "--info-sync-timeout",
            "--ha-tls-ca",
            "--ha-tls-cert",
            "--ha-tls-key",
        ];
        if !KNOWN.contains(&name.as_str()) {
            return Err(format!("unknown argument '{a}' (see --help)"));
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let v = args
                    .get(i)
                    .ok_or_else(|| format!("{name} needs a value"))?
                    .clone();
                i += 1;
                v
            }
        };
        items.push((name, Some(value)));
    }
    let mut cfg = Config::default();
    let mut extra: Vec<String> = Vec::new();
    let mut tls = TlsArgs::default();
    let mut ha_addr_given = false;
    if let Some((_, Some(path))) = items.iter().rev().find(|(n, _)| n == "--config") {
        extra = load_file(&mut cfg, &mut tls, path, &mut ha_addr_given)?;
    }
    let mut flag_extra: Vec<String> = Vec::new();
    for (name, v) in items {
        let v = v.unwrap_or_default();
        match name.as_str() {
            "--config" => {}
            "--ipc-addr" => apply_ipc_addr(&mut cfg, &v)?,
            "--ipc-path" => cfg.ipc_path = Some(v.into()),
            "--ha-addr" => {
                cfg.ha_addr = parse_listen(&v, None)?;
                ha_addr_given = true;
            }
            "--extra-listen" => flag_extra.push(v),
            "--data-dir" => cfg.data_dir = v.into(),
            "--tick-timeout" => apply_tick(&mut cfg, &v)?,
            "--replication" => apply_replication(&mut cfg, &v)?,
            "--log-level" => apply_level(&mut cfg, &v)?,
            "--max-connections" => apply_max_connections(&mut cfg, &v)?,
            "--min-secondaries" => apply_min_secondaries(&mut cfg, &v)?,
            "--on-store-error" => apply_on_store_error(&mut cfg, &v)?,
            "--metrics-addr" => apply_metrics_addr(&mut cfg, &v)?,
            "--txlog-max-txns" => apply_txlog_max(&mut cfg, &v)?,
            "--max-pending-handshakes" => apply_pending(&mut cfg, &v)?,
            "--client-idle-timeout" => apply_idle(&mut cfg, &v)?,
            "--info-sync-timeout" => apply_info_sync(&mut cfg, &v)?,
            "--ha-tls-ca" => tls.0[0] = Some(v),
            "--ha-tls-cert" => tls.0[1] = Some(v),
            "--ha-tls-key" => tls.0[2] = Some(v),
            _ => unreachable!("checked above"),
        }
    }
    if !flag_extra.is_empty() {
        extra = flag_extra;
    }
    cfg.extra_listen = extra
        .iter()
        .map(|s| parse_listen(s, Some(cfg.ha_addr.port())))
        .collect::<Result<_, _>>()?;
    cfg.ha_tls = tls.finish()?;
    if let Some(r) = &cfg.raft {
        // The Raft transport runs on the HA listener: node-address is the HA address.
        if ha_addr_given && cfg.ha_addr != r.node_address {
            return Err(format!(
                "ha-addr {} and raft node-address {} must agree (the Raft transport runs on \
                 the HA listener)",
                cfg.ha_addr, r.node_address
            ));
        }
        cfg.ha_addr = r.node_address;
    }
    if cfg.ipc_addr.is_none() && cfg.ipc_path.is_none() {
        return Err("no IPC listener: give --ipc-addr or --ipc-path".into());
    }
    Ok(Cli::Run(Box::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("PT20S").unwrap(), Duration::from_secs(20));
        assert_eq!(
            parse_duration("PT1M0.5S").unwrap(),
            Duration::from_millis(60_500)
        );
        assert_eq!(parse_duration("PT0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("20").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("PT").is_err());
        assert!(parse_duration("5parsecs").is_err());
    }

    #[test]
    fn durations_out_of_range_are_refused_with_the_setting_named() {
        for bad in ["7000000000000000000s", "1ns", "0.000001s", "2d", "100000s"] {
            let e = parse_args(&args(&format!("--tick-timeout {bad}"))).unwrap_err();
            assert!(e.contains("tick-timeout"), "{bad}: {e}");
        }
        let e = parse_args(&args("--tick-timeout 7000000000000000000s")).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        assert!(parse_args(&args("--info-sync-timeout 0")).is_err());
        assert!(parse_args(&args("--client-idle-timeout 5ms")).is_err());
        let Cli::Run(c) = parse_args(&args(
            "--client-idle-timeout 0 --info-sync-timeout 2s --max-pending-handshakes 8 --tick-timeout 1h",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.client_idle_timeout, None);
        assert_eq!(c.info_sync_timeout, Duration::from_secs(2));
        assert_eq!(c.max_pending_handshakes, 8);
        assert_eq!(c.tick, Some(Duration::from_secs(3600)));
        assert!(parse_args(&args("--max-pending-handshakes 0")).is_err());
    }

    #[test]
    fn flags_and_defaults() {
        let Cli::Run(c) = parse_args(&[]).unwrap() else {
            panic!()
        };
        assert_eq!(c.ipc_addr.as_deref(), Some("127.0.0.1:4565"));
        assert_eq!(c.ha_addr.port(), 4570);
        assert_eq!(c.tick, Some(Duration::from_secs(20)));
        assert!(c.sync);
        let Cli::Run(c) = parse_args(&args(
            "--ipc-addr none --ipc-path /tmp/x.sock --ha-addr 127.0.0.2:5000 --extra-listen [::1] \
             --extra-listen 127.0.0.3:6000 --tick-timeout 0 --replication async --data-dir d",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.ipc_addr, None);
        assert_eq!(c.ha_addr, "127.0.0.2:5000".parse().unwrap());
        assert_eq!(
            c.extra_listen,
            vec![
                "[::1]:5000".parse().unwrap(),
                "127.0.0.3:6000".parse().unwrap()
            ]
        );
        assert_eq!(c.tick, None);
        assert!(!c.sync);
        assert!(matches!(parse_args(&args("--help")), Ok(Cli::Help)));
        assert!(parse_args(&args("--bogus 1")).is_err());
        assert!(parse_args(&args("--ha-addr")).is_err());
        assert!(parse_args(&args("--replication maybe")).is_err());
        assert!(parse_args(&args("--ipc-addr none")).is_err());
        let Cli::Run(c) = parse_args(&args("--min-secondaries 2 --on-store-error exit")).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.min_secondaries, 2);
        assert!(c.exit_on_store_error);
        assert!(parse_args(&args("--min-secondaries -1")).is_err());
        assert!(parse_args(&args("--min-secondaries 256")).is_err());
        let Cli::Run(c) = parse_args(&args("--txlog-max-txns 5")).unwrap() else {
            panic!()
        };
        assert_eq!(c.txlog_max_txns, 5);
        assert!(parse_args(&args("--txlog-max-txns 0")).is_err());
        assert!(parse_args(&args("--on-store-error ignore")).is_err());
        assert_eq!(c.metrics_addr, None);
        let Cli::Run(c) = parse_args(&args("--metrics-addr 127.0.0.1:9464")).unwrap() else {
            panic!()
        };
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        let e = parse_args(&args("--metrics-addr nowhere")).unwrap_err();
        assert!(e.contains("bad metrics-addr"), "{e}");
        assert_eq!(c.ha_tls, None);
    }

    #[test]
    fn raft_table() {
        let dir = std::env::temp_dir().join(format!("ha-node-raft-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("r.toml");
        let a = vec!["--config".to_string(), f.display().to_string()];
        std::fs::write(
            &f,
            "mode = \"raft\"\n[raft]\ncluster-name = \"c\"\nnode-address = \"127.0.0.1:7100\"\n\
             seed-nodes = [\"127.0.0.2:7100\"]\nelection-timeout = \"2s\"\n\
             heartbeat-interval = 200\npassive = true\n",
        )
        .unwrap();
        let Cli::Run(c) = parse_args(&a).unwrap() else {
            panic!()
        };
        let r = c.raft.clone().unwrap();
        assert_eq!(c.ha_addr, "127.0.0.1:7100".parse().unwrap());
        assert_eq!(r.election_timeout, Duration::from_secs(2));
        assert_eq!(r.heartbeat_interval, Duration::from_millis(200));
        assert!(r.passive);
        assert_eq!(r.seed_nodes, vec!["127.0.0.2:7100".parse().unwrap()]);
        // ha-addr must agree with node-address.
        let mut b = a.clone();
        b.extend(["--ha-addr".to_string(), "127.0.0.1:7101".into()]);
        assert!(parse_args(&b).unwrap_err().contains("must agree"));
        std::fs::write(&f, "mode = \"raft\"\n[raft]\nelection-timeout = \"1s\"\n").unwrap();
        assert!(parse_args(&a).unwrap_err().contains("node-address"));
        std::fs::write(
            &f,
            "mode = \"raft\"\n[raft]\nnode-address = \"127.0.0.1:7100\"\n\
             election-timeout = \"100ms\"\nheartbeat-interval = \"100ms\"\n",
        )
        .unwrap();
        assert!(parse_args(&a)
            .unwrap_err()
            .contains("times heartbeat-interval"));
        std::fs::write(&f, "[raft]\nnode-address = \"127.0.0.1:7100\"\n").unwrap();
        assert!(parse_args(&a).unwrap_err().contains("needs mode"));
        std::fs::write(&f, "mode = \"paxos\"\n").unwrap();
        assert!(parse_args(&a).unwrap_err().contains("bad mode"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_files_all_or_none() {
        let Cli::Run(c) = parse_args(&args(
            "--ha-tls-ca ca.pem --ha-tls-cert n1.pem --ha-tls-key=n1-key.pem",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            c.ha_tls,
            Some(TlsFiles {
                ca: "ca.pem".into(),
                cert: "n1.pem".into(),
                key: "n1-key.pem".into()
            })
        );
        let e = parse_args(&args("--ha-tls-cert n1.pem")).unwrap_err();
        assert_eq!(
            e,
            "ha-tls-ca, ha-tls-cert and ha-tls-key go together: ha-tls-ca and ha-tls-key missing"
        );
    }

    #[test]
    fn config_file_and_override() {
        let dir = std::env::temp_dir().join(format!("ha-node-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "ipc-addr = \"127.0.0.1:7000\"\nha-addr = \"127.0.0.1:7001\"\n\
             extra-listen = [\"127.0.0.1:7002\"]\ntick-timeout = \"200ms\"\nreplication = \"async\"\n\
             metrics-addr = \"127.0.0.1:9464\"\n",
        )
        .unwrap();
        let a = vec![
            "--config".to_string(),
            f.display().to_string(),
            "--tick-timeout=1s".into(),
        ];
        let Cli::Run(c) = parse_args(&a).unwrap() else {
            panic!()
        };
        assert_eq!(c.ipc_addr.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(c.extra_listen, vec!["127.0.0.1:7002".parse().unwrap()]);
        assert_eq!(c.tick, Some(Duration::from_secs(1)));
        assert!(!c.sync);
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        // TLS keys from the file, one overridden by a flag; a lone one is refused.
        std::fs::write(
            &f,
            "ha-tls-ca = \"ca.pem\"\nha-tls-cert = \"n.pem\"\nha-tls-key = \"k.pem\"\n",
        )
        .unwrap();
        let Cli::Run(c) = parse_args(&[
            "--config".to_string(),
            f.display().to_string(),
            "--ha-tls-key=k2.pem".into(),
        ])
        .unwrap() else {
            panic!()
        };
        let t = c.ha_tls.unwrap();
        assert_eq!((t.ca, t.key), ("ca.pem".into(), "k2.pem".into()));
        std::fs::write(&f, "ha-tls-key = \"k.pem\"\n").unwrap();
        let e = parse_args(&a).unwrap_err();
        assert!(e.contains("go together"), "{e}");
        std::fs::write(&f, "bogus = 1\n").unwrap();
        let e = parse_args(&a).unwrap_err();
        assert!(e.contains("bad config file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
