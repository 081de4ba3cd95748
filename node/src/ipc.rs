//! The client-facing IPC server: listeners, the 9-byte hello, and the HA
//! control (17), event (11) and data (42) connections.

use crate::commit::CommitReq;
use crate::node::{lock, Node};
use crate::store::{StoreError, StoreOp};
use confd_ha::client::Stream;
use confd_ha::errcode::*;
use confd_ha::proto::data::{error_reply, ok_term, stats_to_term, DataRequest, Op};
use confd_ha::proto::frame::{read_frame, write_frame, FrameError, DEFAULT_MAX_FRAME};
use confd_ha::proto::ha::{HaReply, HaRequest};
use confd_ha::proto::hello::{
    ClientHello, ServerHello, CLIENT_EVENT_MGR, CLIENT_HA, CLIENT_HADATA, DEFAULT_MAXDEPTH,
    DEFAULT_MAXKEYLEN, DEFAULT_PROTO_VSN, HELLO_BAD_VSN, HELLO_OK,
};
use confd_ha::proto::term::Term;
use confd_ha::value::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

/// The daemon's own version numbers: what it answers a hello that it
/// refuses (an unknown client id). An accepted hello is answered with the
/// client's own versions: ha-node serves programs built against any ConfD /
/// NSO release (unlike ConfD, which accepts only its own protocol version)
/// and speaks to each as a daemon of that release would.
pub const DAEMON_PROTO_VSN: u16 = DEFAULT_PROTO_VSN;
pub const DAEMON_VSN: u32 = 0x0807_0000;
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest token accepted.
pub const MAX_TOKEN: usize = 1024;

static CONN_IDS: AtomicU64 = AtomicU64::new(1);

pub fn bind_tcp(addr: &str) -> Result<TcpListener, String> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("bad IPC address {addr}: {e}"))?
        .collect();
    TcpListener::bind(&addrs[..]).map_err(|e| format!("cannot listen on IPC address {addr}: {e}"))
}

/// Binds the Unix socket, removing a stale socket file first (never another kind of file).
pub fn bind_unix(path: &Path) -> Result<UnixListener, String> {
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.file_type().is_socket() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "IPC socket {} is in use by another process",
                    path.display()
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
            crate::info!("ipc", "removed stale socket file {}", path.display());
        } else {
            return Err(format!(
                "{} exists and is not a socket; not removing it",
                path.display()
            ));
        }
    }
    UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))
}

pub fn serve_tcp(node: Arc<Node>, l: TcpListener) {
    loop {
        match l.accept() {
            Ok((s, a)) => {
                let _ = s.set_nodelay(true);
                spawn_conn(node.clone(), Stream::Tcp(s), a.to_string());
            }
            Err(e) => {
                crate::warn!("ipc", "accept: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

pub fn serve_unix(node: Arc<Node>, l: UnixListener) {
    loop {
        match l.accept() {
            Ok((s, _)) => spawn_conn(node.clone(), Stream::Unix(s), "unix".into()),
            Err(e) => {
                crate::warn!("ipc", "accept: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Client connections being served (each has a thread).
static LIVE_CONNS: AtomicUsize = AtomicUsize::new(0);

/// Client connections being served now (for the metrics).
pub fn live_connections() -> usize {
    LIVE_CONNS.load(Ordering::SeqCst)
}

/// Counts one live connection while it exists.
struct LiveConn;

impl Drop for LiveConn {
    fn drop(&mut self) {
        LIVE_CONNS.fetch_sub(1, Ordering::SeqCst);
    }
}

fn spawn_conn(node: Arc<Node>, s: Stream, peer: String) {
    let id = CONN_IDS.fetch_add(1, Ordering::Relaxed);
    let who = format!("client #{id} ({peer})");
    let max = node.cfg.max_connections;
    if LIVE_CONNS.fetch_add(1, Ordering::SeqCst) >= max {
        LIVE_CONNS.fetch_sub(1, Ordering::SeqCst);
        crate::warn!(
            "ipc",
            "{who}: {max} client connections already served (--max-connections); closing"
        );
        return;
    }
    let live = LiveConn;
    let r = std::thread::Builder::new()
        .name("ipc-conn".into())
        .spawn(move || {
            let _live = live;
            conn(node, s, id, who)
        });
    if let Err(e) = r {
        crate::error!("ipc", "cannot start a connection thread: {e}");
    }
}

fn server_hello(status: u8, proto_vsn: u16, vsn: u32) -> [u8; 9] {
    ServerHello {
        status,
        proto_vsn,
        vsn,
        maxdepth: DEFAULT_MAXDEPTH,
        maxkeylen: DEFAULT_MAXKEYLEN,
    }
    .encode()
}

fn conn(node: Arc<Node>, mut s: Stream, id: u64, who: String) {
    let _ = s.set_read_timeout(Some(HELLO_TIMEOUT));
    let mut b = [0u8; 9];
    if let Err(e) = s.read_exact(&mut b) {
        let why = match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("no hello within {} s", HELLO_TIMEOUT.as_secs())
            }
            std::io::ErrorKind::UnexpectedEof => "closed before a full hello".into(),
            _ => e.to_string(),
        };
        crate::warn!("ipc", "{who}: {why}; closing");
        return;
    }
    let h = ClientHello::decode(&b);
    let kind = match h.client_id {
        CLIENT_HA => "HA control",
        CLIENT_EVENT_MGR => "event",
        CLIENT_HADATA => "data",
        other => {
            crate::warn!(
                "ipc",
                "{who}: unknown client id {other} in hello {b:02x?}; answering status 1 and closing"
            );
            let _ = s.write_all(&server_hello(HELLO_BAD_VSN, DAEMON_PROTO_VSN, DAEMON_VSN));
            return;
        }
    };
    // Every protocol version is accepted, and answered with itself: the
    // connection then speaks that version's shapes (see events.rs for the
    // subscription and heartbeat terms).
    if h.proto_vsn != DAEMON_PROTO_VSN {
        crate::info!(
            "ipc",
            "{who}: library protocol version {} / {:#010x} (ours is {DAEMON_PROTO_VSN}); accepted, speaking version {}",
            h.proto_vsn,
            h.lib_vsn,
            h.proto_vsn
        );
    }
    if s.write_all(&server_hello(HELLO_OK, h.proto_vsn, h.lib_vsn))
        .is_err()
    {
        return;
    }
    crate::debug!("ipc", "{who}: {kind} connection");
    match h.client_id {
        CLIENT_HA => ha_conn(&node, s, id, &who),
        CLIENT_EVENT_MGR => node.events.serve(s, who, h.proto_vsn),
        _ => {
            let _ = s.set_read_timeout(None);
            data_conn(&node, s, &who)
        }
    }
}

/// Reads one request frame; `None` ends the connection (with a log line).
fn read_request(s: &mut Stream, who: &str) -> Option<Term> {
    match read_frame(s, DEFAULT_MAX_FRAME) {
        Ok(f) => match Term::decode(&f) {
            Ok(t) => Some(t),
            Err(e) => {
                crate::warn!("ipc", "{who}: garbage frame ({e}); closing");
                None
            }
        },
        Err(FrameError::Closed) => {
            crate::debug!("ipc", "{who}: closed");
            None
        }
        Err(FrameError::TooLarge { len, max }) => {
            crate::warn!(
                "ipc",
                "{who}: frame of {len} bytes exceeds the {max}-byte limit; closing"
            );
            None
        }
        Err(FrameError::Io(e)) => {
            crate::warn!("ipc", "{who}: {e}; closing");
            None
        }
    }
}

fn reply(s: &mut Stream, t: &Term) -> bool {
    write_frame(s, &t.encode()).is_ok()
}

fn ha_conn(node: &Arc<Node>, mut s: Stream, id: u64, who: &str) {
    let token = match read_frame(&mut s, MAX_TOKEN) {
        Ok(t) if !t.is_empty() => t,
        Ok(_) => {
            crate::warn!("ipc", "{who}: empty HA token; closing");
            return;
        }
        Err(e) => {
            crate::warn!("ipc", "{who}: no HA token: {e}; closing");
            return;
        }
    };
    let _ = s.set_read_timeout(None);
    let Ok(ctl) = s.try_clone() else {
        crate::warn!("ipc", "{who}: cannot clone the socket");
        return;
    };
    if !node.set_ha_conn(id, ctl, token) {
        crate::info!(
            "ipc",
            "{who}: a newer HA control connection already holds the token; closing this one"
        );
        return;
    }
    crate::info!("ipc", "{who}: HA control connection #{id} (token set)");
    while let Some(t) = read_request(&mut s, who) {
        let req = match HaRequest::from_term(&t) {
            Ok(r) => r,
            Err(e) => {
                crate::warn!("ipc", "{who}: {e}");
                if !reply(
                    &mut s,
                    &HaReply::Error {
                        code: CONFD_ERR_PROTOUSAGE,
                        reason: e,
                    }
                    .to_term(),
                ) {
                    break;
                }
                continue;
            }
        };
        if let Some(r) = node.order(req) {
            if !reply(&mut s, &r.to_term()) {
                break;
            }
        }
    }
    node.clear_ha_conn(id);
}

fn store_err(e: StoreError) -> (i32, String) {
    match e {
        StoreError::BadPath(m) => (CONFD_ERR_BADPATH, format!("bad path {m}")),
        e => (CONFD_ERR_INTERNAL, e.to_string()),
    }
}

fn data_conn(node: &Arc<Node>, mut s: Stream, who: &str) {
    while let Some(t) = read_request(&mut s, who) {
        let r = match DataRequest::from_term(&t) {
            Ok(req) => data_request(node, req),
            Err(e) => {
                crate::warn!("ipc", "{who}: {e}");
                Err((CONFD_ERR_PROTOUSAGE, e))
            }
        };
        let t = match r {
            Ok(x) => ok_term(x),
            Err((code, reason)) => error_reply(code, &reason),
        };
        if !reply(&mut s, &t) {
            break;
        }
    }
}

fn data_request(node: &Arc<Node>, req: DataRequest) -> Result<Term, (i32, String)> {
    let st = &node.store;
    match req {
        DataRequest::Get(p) => match st.get(&p).map_err(store_err)? {
            Some(bytes) => {
                let t = Term::decode(&bytes).map_err(|e| {
                    (
                        CONFD_ERR_INTERNAL,
                        format!("stored value of {p} is damaged: {e}"),
                    )
                })?;
                Value::from_term(&t)
                    .map_err(|e| (CONFD_ERR_INTERNAL, format!("stored value of {p}: {e}")))?;
                Ok(t)
            }
            None => Err((CONFD_ERR_NOEXISTS, format!("no such path {p}"))),
        },
        DataRequest::Exists(p) => Ok(Term::atom(if st.exists(&p).map_err(store_err)? {
            "true"
        } else {
            "false"
        })),
        DataRequest::List(p) => Ok(Term::List(
            st.list(&p)
                .map_err(store_err)?
                .into_iter()
                .map(Term::binary)
                .collect(),
        )),
        DataRequest::TxId => Ok(Term::binary(lock(&node.commit).last.txid.clone())),
        DataRequest::Stats => Ok(stats_to_term(
            &node
                .stats_list()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Vec<_>>(),
        )),
        DataRequest::NodeState => Ok(node.node_state().to_term()),
        DataRequest::Commit(ops) => {
            {
                let cs = lock(&node.commit);
                if !cs.writable {
                    return Err((CONFD_ERR_NOT_WRITABLE, cs.refusal.clone()));
                }
            }
            let mut sops = Vec::with_capacity(ops.len());
            for op in ops {
                let p = match &op {
                    Op::Set(p, _) | Op::Delete(p) => p.clone(),
                };
                // Validate the path now: one bad path must not fail a whole group commit.
                if p == "/" {
                    return Err((
                        CONFD_ERR_BADPATH,
                        "bad path \"/\": the root cannot be written".into(),
                    ));
                }
                st.exists(&p).map_err(store_err)?;
                sops.push(match op {
                    Op::Set(p, v) => StoreOp::Set(p, v.to_term().encode()),
                    Op::Delete(p) => StoreOp::Delete(p),
                });
            }
            let (tx, rx) = sync_channel(1);
            let t0 = std::time::Instant::now();
            let sent = lock(&node.commit_tx)
                .as_ref()
                .map(|c| {
                    c.send(CommitReq {
                        ops: sops,
                        reply: tx,
                    })
                    .is_ok()
                })
                .unwrap_or(false);
            if !sent {
                return Err((CONFD_ERR_INTERNAL, "the committer is not running".into()));
            }
            match rx.recv() {
                Ok(Ok(txid)) => {
                    crate::metrics::COMMIT_LATENCY.observe(t0.elapsed().as_secs_f64());
                    Ok(Term::binary(txid))
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err((CONFD_ERR_INTERNAL, "the committer stopped".into())),
            }
        }
    }
}
