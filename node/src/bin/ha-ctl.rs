//! ha-ctl: the operator's command-line tool for an HA node, over the
//! libconfd_ha client library.

use confd_ha::client::data::{DataClient, Txn};
use confd_ha::client::ha::HaClient;
use confd_ha::client::Endpoint;
use confd_ha::errcode;
use confd_ha::error::Error;
use confd_ha::proto::data::{NodeState, PeerState};
use confd_ha::proto::ha::{HaNode, NodeAddr, STATE_NONE, STATE_PRIMARY, STATE_SECONDARY};
use confd_ha::value::Value;
use std::process::ExitCode;

/// The daemon's log module, for its timestamp format.
#[allow(dead_code)]
#[path = "../log.rs"]
mod log;

/// The daemon's rollback-file format.
#[allow(dead_code)]
#[path = "../rollback.rs"]
mod rollback;

const USAGE: &str = "\
usage: ha-ctl [-a ADDR] [-p PORT] [-u PATH] [--token-file FILE | -t TOKEN] COMMAND [ARGS]

Talks to one HA node over its IPC port. Without -a/-p/-u the node is found
as NSO's libraries find it: NCS_IPC_PATH, else NCS_IPC_ADDR/NCS_IPC_PORT,
else CONFD_IPC_ADDR/CONFD_IPC_PORT, else 127.0.0.1:4565.

options:
  -a ADDR    IPC address of the node (default 127.0.0.1)
  -p PORT    IPC port of the node (default 4565)
  -u PATH    IPC Unix socket of the node (instead of -a/-p)
  --token-file FILE  read the cluster's shared HA token from FILE (one line)
  -t TOKEN   the token on the command line (visible to every user in ps;
             prefer $HA_CTL_TOKEN or --token-file)
  -h         this help

The token comes from --token-file, else -t, else $HA_CTL_TOKEN.

HA orders (need the token; each opens the node's HA control connection, which
replaces the framework's current one and sets the token, as in ConfD):
  primary NAME                           make the node primary, named NAME
  secondary NAME PRIMARY_NAME PRIMARY_ADDR [--async]
                                         make the node secondary NAME of the primary
  relay                                  make a secondary a relay
  none                                   return the node to state NONE
  dead NAME                              tell the node that secondary NAME is dead

read-only (no token, never touch the HA control connection):
  status [--json]                        print the HA state, seq, txid and the node list
                                         (from the node state of the data API), each
                                         secondary with acked_seq, lag_txns, lag_ms,
                                         last_tick_ms_ago, state (copying|in-sync),
                                         full_copies and catch_ups; on stderr, a warning
                                         if the node's token is weak

HA Raft (mode = \"raft\"; no token, over the data API):
  raft create-cluster [NODE-ADDRESS...]  on the node that becomes the first leader: form a
                                         cluster of it and the named nodes (IP:PORT each;
                                         none: a one-node cluster)
  raft status [--json]                   role, leader, term, members, connected nodes,
                                         current and applied index, and per follower its
                                         index, lag_entries, lag_ms and state
                                         (in-sync|behind|unreachable|requires-snapshot)
  raft handover [NODE-ADDRESS]           on the leader: hand leadership to NODE (or to the
                                         most up-to-date follower)
  raft adjust-membership add-node|remove-node NODE-ADDRESS
                                         on the leader: change the members
  raft reset [--force]                   leave the cluster: drop this node's Raft state
                                         (--force: also when it is a member of a live
                                         cluster); the store's data stays
  raft disconnect NODE-ADDRESS           drop the connections to NODE (they reconnect)

data commands:
  get PATH [--linearizable]              print the value at PATH (alone on stdout);
                                         --linearizable: Raft leader only, read index
  set PATH VALUE [--type TYPE]           commit one value (TYPE: buf (default), int8..int64,
                                         uint8..uint64, bool, double, ipv4, ipv6, enum, binary)
  delete PATH                            commit the deletion of PATH and its subtree
  list PATH                              print the children of PATH, one per line
  txid                                   print the last committed transaction id
  watch [--json] [--heartbeat MS]        print HA events as they arrive, one line each with a
                                         timestamp (and heartbeats every MS milliseconds if given)
  stats                                  print the node's counters, one NAME VALUE per line

local commands (read the node's data directory; no connection):
  rollback list [DATA_DIR]               print the rollback files (local transactions a re-join
                                         discarded), one path per line, oldest first
                                         (DATA_DIR: $HA_NODE_DATA_DIR, else ./ha-node-data)
  rollback show FILE                     print a rollback file: why, then each discarded
                                         transaction (seq, txid) and its operations; for a
                                         state-*.rollback file, the complete local data
                                         before the copy (entries: N, then PATH VALUE lines)

exit status: 0 on success; otherwise 1 with the error's ConfD name and the
message on stderr (2 for a usage error).
";

struct Opts {
    addr: Option<String>,
    port: Option<String>,
    path: Option<String>,
    token: Option<String>,
    token_file: Option<String>,
}

/// Longest token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

fn read_token_file(path: &str) -> Result<String, Failure> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| Failure::Usage(format!("cannot read token file {path}: {e}")))?;
    let mut s = String::new();
    f.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut s)
        .map_err(|e| Failure::Usage(format!("cannot read token file {path}: {e}")))?;
    if s.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(Failure::Usage(format!(
            "token file {path} is longer than {MAX_TOKEN_FILE_BYTES} bytes"
        )));
    }
    Ok(s.trim_end_matches(['\n', '\r']).to_owned())
}

/// Writes to stdout; a closed stdout (`| head -1`) ends the command quietly.
macro_rules! out {
    ($($a:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        writeln!(o, $($a)*).map_err(Failure::Output)?
    }};
}

impl Opts {
    fn endpoint(&self) -> Endpoint {
        if let Some(p) = &self.path {
            return Endpoint::Unix(p.into());
        }
        if self.addr.is_none() && self.port.is_none() {
            return Endpoint::from_env();
        }
        Endpoint::tcp(
            self.addr.as_deref().unwrap_or("127.0.0.1"),
            self.port.as_deref().unwrap_or("4565"),
        )
    }
    fn ha(&self) -> Result<HaClient, Failure> {
        let from_file = match &self.token_file {
            Some(f) => Some(read_token_file(f)?),
            None => None,
        };
        let token = from_file
            .or_else(|| self.token.clone())
            .or_else(|| std::env::var("HA_CTL_TOKEN").ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Failure::Usage(
                    "no token: set HA_CTL_TOKEN or give --token-file FILE (or -t TOKEN)".into(),
                )
            })?;
        Ok(HaClient::connect(&self.endpoint(), &token)?)
    }
    fn data(&self) -> Result<DataClient, Failure> {
        Ok(DataClient::connect(&self.endpoint())?)
    }
}

enum Failure {
    Usage(String),
    Lib(Error),
    Output(std::io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Lib(e)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("ha-ctl: {m}\n(run ha-ctl -h for help)");
            ExitCode::from(2)
        }
        // The reader of stdout went away (`ha-ctl list / | head -1`): not an error.
        Err(Failure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Output(e)) => {
            eprintln!("ha-ctl: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Lib(e)) => {
            let code = e.errno();
            let name = errcode::name(code).unwrap_or("CONFD_ERR");
            // The message can carry a peer's words (a reason, a node id): escaped.
            eprintln!(
                "ha-ctl: {name}: {}: {}",
                errcode::strerror(code),
                printable(&e.to_string())
            );
            ExitCode::from(1)
        }
    }
}

fn run(args: Vec<String>) -> Result<(), Failure> {
    let mut o = Opts {
        addr: None,
        port: None,
        path: None,
        token: None,
        token_file: None,
    };
    let mut it = args.into_iter().peekable();
    let mut rest = Vec::new();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .ok_or_else(|| Failure::Usage(format!("option {name} needs a value")))
        };
        match a.as_str() {
            "-a" => o.addr = Some(val("-a")?),
            "-p" => o.port = Some(val("-p")?),
            "-u" => o.path = Some(val("-u")?),
            "-t" => o.token = Some(val("-t")?),
            "--token-file" => o.token_file = Some(val("--token-file")?),
            "-h" | "--help" => {
                use std::io::Write as _;
                std::io::stdout()
                    .lock()
                    .write_all(USAGE.as_bytes())
                    .map_err(Failure::Output)?;
                return Ok(());
            }
            _ => {
                rest.push(a);
                rest.extend(it.by_ref());
            }
        }
    }
    let (flags, pos): (Vec<String>, Vec<String>) =
        split_flags(rest, &["--type", "--heartbeat"]).map_err(Failure::Usage)?;
    let has = |f: &str| flags.iter().any(|x| x == f);
    let flag_val = |f: &str| {
        flags
            .iter()
            .position(|x| x == f)
            .and_then(|i| flags.get(i + 1))
            .cloned()
    };
    let cmd = pos.first().map(String::as_str).unwrap_or("");
    let argc = pos.len() - usize::from(!pos.is_empty());
    let want = |n: usize, form: &str| {
        if argc == n {
            Ok(())
        } else {
            Err(Failure::Usage(format!("usage: ha-ctl {form}")))
        }
    };
    for f in flags.iter().filter(|f| f.starts_with("--")) {
        let ok = matches!(
            (cmd, f.as_str()),
            ("secondary", "--async")
                | ("status", "--json")
                | ("get", "--linearizable")
                | ("raft", "--json")
                | ("raft", "--force")
                | ("set", "--type")
                | ("watch", "--json")
                | ("watch", "--heartbeat")
        );
        if !ok {
            return Err(Failure::Usage(format!("unknown option {f} for '{cmd}'")));
        }
    }
    match cmd {
        "primary" => {
            want(1, "primary NAME")?;
            o.ha()?.beprimary(&pos[1])?;
        }
        "secondary" => {
            want(3, "secondary NAME PRIMARY_NAME PRIMARY_ADDR [--async]")?;
            let primary = HaNode {
                id: Value::Buf(pos[2].clone().into_bytes()),
                addr: NodeAddr::parse(&pos[3]),
            };
            o.ha()?.besecondary(&pos[1], &primary, !has("--async"))?;
        }
        "relay" => {
            want(0, "relay")?;
            o.ha()?.berelay()?;
        }
        "none" => {
            want(0, "none")?;
            o.ha()?.benone()?;
        }
        "dead" => {
            want(1, "dead NAME")?;
            o.ha()?.secondary_dead(&pos[1])?;
        }
        "status" => {
            want(0, "status [--json]")?;
            // Read-only: the data API's node state, never the HA control
            // connection (opening one would replace the framework's and
            // set the token).
            let ns = o.data()?.node_state()?;
            print_status(&ns, has("--json"))?;
            warn_short_token(&o);
        }
        "get" => {
            want(1, "get PATH [--linearizable]")?;
            let v = if has("--linearizable") {
                o.data()?.get_linearizable(&pos[1])?
            } else {
                o.data()?.get(&pos[1])?
            };
            out!("{v}");
        }
        "raft" => {
            let sub = pos.get(1).map(String::as_str).unwrap_or("");
            let args: Vec<&str> = pos.iter().skip(2).map(String::as_str).collect();
            let usage = |form: &str| Failure::Usage(format!("usage: ha-ctl raft {form}"));
            let reply = match sub {
                "status" if args.is_empty() => o
                    .data()?
                    .raft("status", &[if has("--json") { "json" } else { "text" }])?,
                "status" => return Err(usage("status [--json]")),
                "create-cluster" => o.data()?.raft("create-cluster", &args)?,
                "adjust-membership"
                    if args.len() == 2 && matches!(args[0], "add-node" | "remove-node") =>
                {
                    o.data()?.raft("adjust-membership", &args)?
                }
                "adjust-membership" => {
                    return Err(usage("adjust-membership add-node|remove-node NODE-ADDRESS"))
                }
                "handover" if args.len() <= 1 => o.data()?.raft("handover", &args)?,
                "handover" => return Err(usage("handover [NODE-ADDRESS]")),
                "reset" if args.is_empty() => o
                    .data()?
                    .raft("reset", if has("--force") { &["force"] } else { &[] })?,
                "reset" => return Err(usage("reset [--force]")),
                "disconnect" if args.len() == 1 => o.data()?.raft("disconnect", &args)?,
                "disconnect" => return Err(usage("disconnect NODE-ADDRESS")),
                _ => {
                    return Err(usage(
                        "create-cluster|status|handover|adjust-membership|reset|disconnect ...",
                    ))
                }
            };
            // Peer-supplied text is escaped line by line (JSON is escaped by the node).
            for line in reply.lines() {
                out!("{}", printable(line));
            }
        }
        "set" => {
            want(2, "set PATH VALUE [--type TYPE]")?;
            let ty = flag_val("--type").unwrap_or_else(|| "buf".into());
            let v = Value::parse(&ty, &pos[2]).map_err(Failure::Usage)?;
            let mut t = Txn::new();
            t.set(&pos[1], v);
            o.data()?.commit(&t)?;
        }
        "delete" => {
            want(1, "delete PATH")?;
            let mut t = Txn::new();
            t.delete(&pos[1]);
            o.data()?.commit(&t)?;
        }
        "list" => {
            want(1, "list PATH")?;
            for c in o.data()?.list(&pos[1])? {
                out!("{c}");
            }
        }
        "txid" => {
            want(0, "txid")?;
            let t = o.data()?.txid()?;
            out!("{t}");
        }
        "watch" => {
            want(0, "watch [--json] [--heartbeat MS]")?;
            let hb = match flag_val("--heartbeat") {
                Some(v) => v
                    .parse::<i64>()
                    .map_err(|_| Failure::Usage(format!("--heartbeat '{v}' is not a number")))?,
                None => 0,
            };
            watch(&o.endpoint(), has("--json"), hb)?;
        }
        "stats" => {
            want(0, "stats")?;
            for (k, v) in o.data()?.stats()? {
                out!("{k} {v}");
            }
        }
        "rollback" => return rollback_cmd(&pos[1..]),
        "" => return Err(Failure::Usage("no command given".into())),
        other => return Err(Failure::Usage(format!("unknown command '{other}'"))),
    }
    Ok(())
}

/// Separates `--flags` (and the values of those in `with_value`) from the
/// positional arguments. A lone `--` ends the flags.
fn split_flags(
    args: Vec<String>,
    with_value: &[&str],
) -> Result<(Vec<String>, Vec<String>), String> {
    let mut flags = Vec::new();
    let mut pos = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--" {
            pos.extend(it.by_ref());
            break;
        }
        if a.starts_with("--") {
            let takes = with_value.contains(&a.as_str());
            flags.push(a.clone());
            if takes {
                flags.push(
                    it.next()
                        .ok_or_else(|| format!("option {a} needs a value"))?,
                );
            }
        } else {
            pos.push(a);
        }
    }
    Ok((flags, pos))
}

/// Prints events until the node closes the connection.
fn watch(ep: &Endpoint, json: bool, heartbeat_ms: i64) -> Result<(), Failure> {
    use confd_ha::client::events::{Event, EventClient};
    use confd_ha::proto::ha::{HaEvent, NOTIF_HA_INFO, NOTIF_HEARTBEAT};
    use std::io::Write;
    let mask = if heartbeat_ms > 0 {
        NOTIF_HA_INFO | NOTIF_HEARTBEAT
    } else {
        NOTIF_HA_INFO
    };
    let mut ev = EventClient::connect(ep, mask, heartbeat_ms)?;
    let out = std::io::stdout();
    loop {
        let e = match ev.read() {
            Ok(e) => e,
            Err(Error::Eof) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let ts = log::timestamp(std::time::SystemTime::now());
        let node = |n: &HaNode| (n.id.to_string(), n.addr.to_string());
        let (name, fields): (&str, Vec<(&str, String)>) = match &e {
            Event::Heartbeat => ("HEARTBEAT", vec![]),
            Event::Other(flag, t) => (
                "OTHER",
                vec![("flag", flag.to_string()), ("term", format!("{t:?}"))],
            ),
            Event::Ha(h) => match h {
                HaEvent::NoPrimary { reason } => (
                    "NOPRIMARY",
                    vec![("reason", errcode::name(*reason).unwrap_or("?").to_string())],
                ),
                HaEvent::SecondaryDied(n) | HaEvent::SecondaryArrived(n) => {
                    let (id, addr) = node(n);
                    let name = if matches!(h, HaEvent::SecondaryDied(_)) {
                        "SECONDARY_DIED"
                    } else {
                        "SECONDARY_ARRIVED"
                    };
                    (name, vec![("nodeid", id), ("address", addr)])
                }
                HaEvent::SecondaryInitialized { by_copy } => (
                    "SECONDARY_INITIALIZED",
                    vec![("by_copy", by_copy.to_string())],
                ),
                HaEvent::IsPrimary => ("IS_PRIMARY", vec![]),
                HaEvent::IsNone => ("IS_NONE", vec![]),
                HaEvent::BeSecondaryResult { result } => (
                    "BESECONDARY_RESULT",
                    vec![(
                        "result",
                        if *result == 0 {
                            "ok".to_string()
                        } else {
                            errcode::name(*result).unwrap_or("?").to_string()
                        },
                    )],
                ),
                HaEvent::Unknown { info_type, data } => (
                    "HA_INFO",
                    vec![
                        ("type", info_type.to_string()),
                        ("data", format!("{data:?}")),
                    ],
                ),
            },
        };
        let line = if json {
            let mut s = format!("{{\"time\":{},\"event\":\"{name}\"", json_str(&ts));
            for (k, v) in &fields {
                s.push_str(&format!(",\"{k}\":{}", json_str(v)));
            }
            s.push('}');
            s
        } else {
            let mut s = format!("{ts} {name}");
            for (k, v) in &fields {
                s.push_str(&format!(" {k}={}", printable(v)));
            }
            s
        };
        let mut o = out.lock();
        if writeln!(o, "{line}").and_then(|_| o.flush()).is_err() {
            return Ok(()); // stdout closed (e.g. piped into head)
        }
    }
}

fn state_name(state: i32) -> &'static str {
    match state {
        STATE_NONE => "none",
        STATE_SECONDARY => "secondary",
        STATE_PRIMARY => "primary",
        _ => "secondary-relay",
    }
}

/// `s` for text output: a backslash and every control character escaped (`\\`, `\n`,
/// `\r`, `\t`, `\u{7f}`), so that a node id, address or reason from a peer cannot
/// forge or break a line. `--json` output escapes with [`json_str`] instead.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || c.is_control()) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() => o.push_str(&c.escape_unicode().to_string()),
            c => o.push(c),
        }
    }
    std::borrow::Cow::Owned(o)
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// After `status`: a line on stderr when the node reports a weak HA token
/// (no TLS on its HA port and a token under 16 bytes; stat `short_token`).
fn warn_short_token(o: &Opts) {
    let weak = o
        .data()
        .ok()
        .and_then(|mut d| d.stats().ok())
        .is_some_and(|st| st.iter().any(|(k, v)| k == "short_token" && *v != 0));
    if weak {
        eprintln!(
            "ha-ctl: warning: the HA token is shorter than 16 bytes and the HA port has no TLS: \
             one captured handshake lets it be guessed offline (use a longer token or ha-tls-*)"
        );
    }
}

/// Milliseconds since a Unix-ms time (0 if it is in the future).
fn ms_ago(unix_ms: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    (now - unix_ms).max(0)
}

/// The health fields of a peer, as (name, JSON value): a secondary's lag as
/// this node (primary or relay) sees it; for a secondary's primary, the last
/// tick from it.
fn health(p: &PeerState) -> Vec<(&'static str, String)> {
    let mut f = Vec::new();
    if let Some(l) = &p.lag {
        f.push(("acked_seq", l.acked_seq.to_string()));
        f.push(("lag_txns", l.lag_txns.to_string()));
        f.push(("lag_ms", l.lag_ms.to_string()));
    }
    if let Some(t) = p.last_tick_ms {
        f.push(("last_tick_ms_ago", ms_ago(t).to_string()));
    }
    if let Some(l) = &p.lag {
        let st = if l.copying { "copying" } else { "in-sync" };
        f.push(("state", json_str(st)));
        f.push(("full_copies", l.full_copies.to_string()));
        f.push(("catch_ups", l.catch_ups.to_string()));
    }
    f
}

fn print_status(ns: &NodeState, json: bool) -> Result<(), Failure> {
    // A secondary's or relay's primary first, then the (sub-)secondaries.
    let peers: Vec<(&str, &PeerState)> = ns
        .primary
        .iter()
        .map(|p| ("primary", p))
        .chain(ns.secondaries.iter().map(|p| ("secondary", p)))
        .collect();
    let state = ns.state;
    if json {
        let list: Vec<String> = peers
            .iter()
            .map(|(role, p)| {
                let extra: String = health(p)
                    .into_iter()
                    .map(|(k, v)| format!(",\"{k}\":{v}"))
                    .collect();
                format!(
                    "{{\"nodeid\":{},\"address\":{},\"role\":\"{role}\"{extra}}}",
                    json_str(&p.node.id.to_string()),
                    json_str(&p.node.addr.to_string()),
                )
            })
            .collect();
        let mut top = format!(",\"seq\":{},\"txid\":{}", ns.seq, json_str(&ns.txid));
        if let Some(ms) = ns.last_txn_ms {
            top.push_str(&format!(",\"last_txn_ms_ago\":{}", ms_ago(ms)));
        }
        out!(
            "{{\"state\":{},\"state_name\":\"{}\"{top},\"nodes\":[{}]}}",
            state,
            state_name(state),
            list.join(",")
        );
    } else {
        out!("state: {}", state_name(state));
        out!("seq: {}", ns.seq);
        out!("txid: {}", printable(&ns.txid));
        if let Some(ms) = ns.last_txn_ms {
            out!("last_txn_ms_ago: {}", ms_ago(ms));
        }
        for (role, p) in &peers {
            let extra: String = health(p)
                .into_iter()
                .map(|(k, v)| format!(" {k}={}", v.trim_matches('"')))
                .collect();
            out!(
                "{role}: {} {}{extra}",
                printable(&p.node.id.to_string()),
                printable(&p.node.addr.to_string())
            );
        }
    }
    Ok(())
}

/// `rollback list [DATA_DIR]` and `rollback show FILE`.
fn rollback_cmd(args: &[String]) -> Result<(), Failure> {
    let fail = |msg: String| {
        Failure::Lib(Error::Usage {
            code: errcode::CONFD_ERR_OS,
            msg,
        })
    };
    match (args.first().map(String::as_str), args.len()) {
        (Some("list"), 1 | 2) => {
            let dir = args
                .get(1)
                .cloned()
                .or_else(|| std::env::var("HA_NODE_DATA_DIR").ok())
                .unwrap_or_else(|| "./ha-node-data".into());
            let dir = std::path::Path::new(&dir);
            if !dir.exists() {
                return Err(fail(format!(
                    "data directory {} does not exist (give the node's --data-dir: \
                     ha-ctl rollback list DATA_DIR, or set HA_NODE_DATA_DIR)",
                    dir.display()
                )));
            }
            if !dir.is_dir() {
                return Err(fail(format!(
                    "{} is not a directory (give the node's --data-dir)",
                    dir.display()
                )));
            }
            for f in rollback::list(dir) {
                println!("{}", printable(&f.display().to_string()));
            }
            Ok(())
        }
        (Some("show"), 2) if rollback::is_state_file(std::path::Path::new(&args[1])) => {
            let n = rollback::read_state(
                std::path::Path::new(&args[1]),
                |h| {
                    println!("kind: {}", printable(&h.note));
                    println!("reason: {}", printable(&h.info.reason));
                    println!("primary: {}", printable(&h.info.primary));
                    println!("time_ms: {}", h.info.time_ms);
                    println!(
                        "local_last: seq {} txid {}",
                        h.info.local_seq,
                        printable(&h.info.local_txid)
                    );
                    match h.info.common_seq {
                        Some(c) => println!("common_seq: {c}"),
                        None => println!("common_seq: unknown"),
                    }
                    println!("itemised_from: {}", h.itemised_from);
                    println!("entries: {}", h.entries);
                },
                |p, v| println!("  {} {}", printable(p), printable(&show_value(v))),
            )
            .map_err(fail)?;
            println!("end: {n} entries");
            Ok(())
        }
        (Some("show"), 2) => {
            let (info, txns) = rollback::read(std::path::Path::new(&args[1])).map_err(fail)?;
            println!("reason: {}", printable(&info.reason));
            println!("primary: {}", printable(&info.primary));
            println!("time_ms: {}", info.time_ms);
            println!(
                "local_last: seq {} txid {}",
                info.local_seq,
                printable(&info.local_txid)
            );
            match info.common_seq {
                Some(c) => println!("common_seq: {c}"),
                None => println!("common_seq: unknown"),
            }
            println!("transactions: {}", txns.len());
            for t in txns {
                println!("seq {} txid {}", t.seq, printable(&t.txid));
                for op in &t.ops {
                    println!("  {}", printable(&show_op(op)));
                }
            }
            Ok(())
        }
        _ => Err(Failure::Usage(
            "usage: ha-ctl rollback list [DATA_DIR] | ha-ctl rollback show FILE".into(),
        )),
    }
}

/// A value as the node stores it (the ETF of a ConfD value), decoded for printing.
fn show_value(b: &[u8]) -> String {
    confd_ha::proto::term::Term::decode(b)
        .ok()
        .and_then(|t| Value::from_term(&t).ok())
        .map(|v| v.to_string())
        .unwrap_or_else(|| "<undecodable value>".into())
}

/// `set PATH VALUE` or `delete PATH`, the value decoded as the node stores it.
fn show_op(op: &confd_ha::proto::term::Term) -> String {
    use confd_ha::proto::term::Term;
    let text = |t: &Term| String::from_utf8_lossy(t.as_binary().unwrap_or_default()).into_owned();
    match op.as_tuple() {
        Some([k, p, v]) if k.is_atom("set") => {
            format!(
                "set {} {}",
                text(p),
                show_value(v.as_binary().unwrap_or_default())
            )
        }
        Some([k, p]) if k.is_atom("delete") => format!("delete {}", text(p)),
        _ => format!("{op:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn printable_escapes_backslash_and_control_characters() {
        assert_eq!(printable("s1 10.0.0.1:4570"), "s1 10.0.0.1:4570");
        assert_eq!(
            printable("s\nsecondary: forged\r\t\\\u{1b}[31m\u{7f}"),
            "s\\nsecondary: forged\\r\\t\\\\\\u{1b}[31m\\u{7f}"
        );
        assert_eq!(printable("é/ü"), "é/ü");
    }
}
