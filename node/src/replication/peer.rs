//! The node-to-node protocol (docs/ha-protocol.md): message terms, the HMAC
//! proofs, a frame reader that tolerates read timeouts, and the per-connection
//! writer thread that carries data and ticks through one queue.

use crate::node::lock;
use crate::store::StoreOp;
use crate::tls::HaStream;
use confd_ha::proto::ha::HaNode;
use confd_ha::proto::term::Term;
use confd_ha::value::Value;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Highest version of the node-to-node protocol this node speaks. Version 2
/// added the node instance in `ha_auth` and the `sub_secondaries` report;
/// version 3 the incremental catch-up (`{ha_welcome, catchup, Seq, TxId, N}`).
pub const HA_PROTO_VSN: i64 = 3;
/// Lowest negotiated version with which a primary sends a re-joining secondary only the
/// transactions it missed (older secondaries get a full copy, as before).
pub const CATCH_UP_MIN_VSN: i64 = 3;
/// Lowest version still spoken (a peer of an older ha-node release).
pub const HA_PROTO_VSN_MIN: i64 = 1;
/// At most this many nodes in one `sub_secondaries` report (a longer list is
/// a protocol error).
pub const MAX_REPORTED_SUBS: usize = 4096;
/// Largest node-to-node frame (a transaction of one 16 MiB value, plus framing),
/// once the peer has proven the token.
pub const MAX_PEER_FRAME: usize = 40 * 1024 * 1024;
/// Largest frame before the peer has proven the token: the handshake's
/// messages (hello, challenge, auth, reject, welcome) are a few hundred bytes.
pub const MAX_HANDSHAKE_FRAME: usize = 4096;
/// Length of a proof (HMAC-SHA-256).
pub const MAC_LEN: usize = 32;
/// Longest node id, in bytes of its text form (ConfD's C struct holds 128).
pub const MAX_NODE_ID_BYTES: usize = 128;

/// Checks a node id: non-empty text of at most MAX_NODE_ID_BYTES bytes.
pub fn check_node_id(v: &Value) -> Result<(), String> {
    let n = id_len(v);
    if n == 0 {
        return Err("node id is empty".into());
    }
    if n > MAX_NODE_ID_BYTES {
        return Err(format!(
            "node id of {n} bytes is longer than {MAX_NODE_ID_BYTES}"
        ));
    }
    Ok(())
}

fn id_len(v: &Value) -> usize {
    match v {
        Value::Buf(b) => b.len(),
        v => v.to_string().len(),
    }
}
/// Target size of one full-copy chunk, so that ticks interleave.
pub const COPY_CHUNK_BYTES: usize = 512 * 1024;
pub const NONCE_LEN: usize = 32;

/// One node-to-node message.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerMsg {
    Hello {
        vsn: i64,
        nonce: Vec<u8>,
    },
    Challenge {
        vsn: i64,
        nonce: Vec<u8>,
        mac: Vec<u8>,
    },
    Auth {
        mac: Vec<u8>,
        my_id: Value,
        expected_primary: Value,
        seq: u64,
        txid: String,
        /// Version 2 on: the joining node process's random instance id and
        /// the number of the join attempt in that process (it grows), so a
        /// primary can tell a newer re-join of the same node from its older
        /// links and from a second node using the same node id.
        instance: Option<(Vec<u8>, u64)>,
    },
    Reject {
        code: i32,
        reason: String,
    },
    /// `history`: with a copy, the (seq, txid) the primary holds at the secondary's latest
    /// seqs (from its transaction log), so that the secondary can tell which of its own
    /// transactions the copy discards. Sent as `{ha_welcome, Copy, Seq, TxId}` when empty,
    /// else `{ha_welcome, Copy, Seq, TxId, [{Seq, TxId}]}`.
    /// `catch_up` (version 3 on, `copy` false): the secondary's last transaction is in the
    /// primary's history; the `N` transactions after it, up to (Seq, TxId), follow as `txn`
    /// frames, then the live stream. Sent as `{ha_welcome, catchup, Seq, TxId, N}`.
    Welcome {
        copy: bool,
        seq: u64,
        txid: String,
        history: Vec<(u64, String)>,
        catch_up: Option<u64>,
    },
    CopyChunk(Vec<(String, Vec<u8>)>),
    CopyDone {
        seq: u64,
        txid: String,
    },
    Txn {
        seq: u64,
        txid: String,
        ops: Vec<StoreOp>,
    },
    Ack(u64),
    Tick,
    /// Version 2 on, secondary to primary: every node now behind this relay
    /// (its sub-secondaries and theirs), each with the address its connection
    /// came from. Sent whenever the set changes; replaces the previous report.
    SubSecondaries(Vec<HaNode>),
}

/// The version a primary speaks with a secondary that offered `theirs`:
/// the lower of the two, or None if that is below what we still speak.
pub fn negotiate(theirs: i64) -> Option<i64> {
    let v = theirs.min(HA_PROTO_VSN);
    (v >= HA_PROTO_VSN_MIN).then_some(v)
}

fn a(s: &str) -> Term {
    Term::atom(s)
}

fn u(n: u64) -> Term {
    Term::Int(i128::from(n))
}

/// `{txn, Seq, TxId, [{set, Path, Bin} | {delete, Path}]}`.
pub fn txn_term(seq: u64, txid: &str, ops: &[StoreOp]) -> Term {
    Term::Tuple(vec![
        a("txn"),
        u(seq),
        Term::binary(txid),
        Term::List(
            ops.iter()
                .map(|op| match op {
                    StoreOp::Set(p, v) => {
                        Term::Tuple(vec![a("set"), Term::binary(p), Term::binary(v)])
                    }
                    StoreOp::Delete(p) => Term::Tuple(vec![a("delete"), Term::binary(p)]),
                })
                .collect(),
        ),
    ])
}

pub fn chunk_term(chunk: &[(String, Vec<u8>)]) -> Term {
    Term::Tuple(vec![
        a("copy_chunk"),
        Term::List(
            chunk
                .iter()
                .map(|(p, v)| Term::Tuple(vec![Term::binary(p), Term::binary(v)]))
                .collect(),
        ),
    ])
}

impl PeerMsg {
    pub fn to_term(&self) -> Term {
        match self {
            PeerMsg::Hello { vsn, nonce } => {
                Term::Tuple(vec![a("ha_hello"), Term::int(*vsn), Term::binary(nonce)])
            }
            PeerMsg::Challenge { vsn, nonce, mac } => Term::Tuple(vec![
                a("ha_challenge"),
                Term::int(*vsn),
                Term::binary(nonce),
                Term::binary(mac),
            ]),
            PeerMsg::Auth {
                mac,
                my_id,
                expected_primary,
                seq,
                txid,
                instance,
            } => {
                let mut t = vec![
                    a("ha_auth"),
                    Term::binary(mac),
                    my_id.to_term(),
                    expected_primary.to_term(),
                    u(*seq),
                    Term::binary(txid),
                ];
                if let Some((i, attempt)) = instance {
                    t.push(Term::binary(i));
                    t.push(u(*attempt));
                }
                Term::Tuple(t)
            }
            PeerMsg::Reject { code, reason } => {
                Term::Tuple(vec![a("ha_reject"), Term::int(*code), Term::binary(reason)])
            }
            PeerMsg::Welcome {
                copy,
                seq,
                txid,
                history,
                catch_up,
            } => {
                let mut e = vec![
                    a("ha_welcome"),
                    a(match (copy, catch_up) {
                        (true, _) => "copy",
                        (false, Some(_)) => "catchup",
                        (false, None) => "nocopy",
                    }),
                    u(*seq),
                    Term::binary(txid),
                ];
                if let (false, Some(n)) = (copy, catch_up) {
                    e.push(u(*n));
                } else if !history.is_empty() {
                    e.push(Term::List(
                        history
                            .iter()
                            .map(|(s, t)| Term::Tuple(vec![u(*s), Term::binary(t)]))
                            .collect(),
                    ));
                }
                Term::Tuple(e)
            }
            PeerMsg::CopyChunk(c) => chunk_term(c),
            PeerMsg::CopyDone { seq, txid } => {
                Term::Tuple(vec![a("copy_done"), u(*seq), Term::binary(txid)])
            }
            PeerMsg::Txn { seq, txid, ops } => txn_term(*seq, txid, ops),
            PeerMsg::Ack(s) => Term::Tuple(vec![a("ack"), u(*s)]),
            PeerMsg::Tick => a("tick"),
            PeerMsg::SubSecondaries(nodes) => Term::Tuple(vec![
                a("sub_secondaries"),
                Term::List(nodes.iter().map(HaNode::to_term).collect()),
            ]),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.to_term().encode()
    }

    /// Decodes a frame: never a compressed term (no node sends one), within
    /// the decoder's memory budget for the frame's size.
    pub fn decode(bytes: &[u8]) -> Result<PeerMsg, String> {
        let t = Term::decode_with(
            bytes,
            confd_ha::proto::term::DecodeLimits::for_input(bytes.len(), false),
        )
        .map_err(|e| format!("undecodable frame: {e}"))?;
        PeerMsg::from_term(&t)
    }

    pub fn from_term(t: &Term) -> Result<PeerMsg, String> {
        let bad = || format!("unexpected message {}", short(t));
        if t.is_atom("tick") {
            return Ok(PeerMsg::Tick);
        }
        let e = t.as_tuple().ok_or_else(bad)?;
        let name = e.first().and_then(Term::as_atom).ok_or_else(bad)?;
        let bin = |x: &Term| x.as_binary().map(<[u8]>::to_vec).ok_or_else(bad);
        let text = |x: &Term| {
            x.as_binary()
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_owned)
                .ok_or_else(bad)
        };
        let seq = |x: &Term| {
            x.as_int()
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(bad)
        };
        let val = |x: &Term| {
            let v = Value::from_term(x).map_err(|e| e.to_string())?;
            check_node_id(&v)?;
            Ok::<Value, String>(v)
        };
        let exact = |x: &Term, n: usize, what: &str| {
            let b = bin(x)?;
            if b.len() != n {
                return Err(format!("{what} of {} bytes, not {n}", b.len()));
            }
            Ok(b)
        };
        Ok(match (name, e.len()) {
            ("ha_hello", 3) => PeerMsg::Hello {
                vsn: e[1].as_i64().ok_or_else(bad)?,
                nonce: exact(&e[2], NONCE_LEN, "nonce")?,
            },
            ("ha_challenge", 4) => PeerMsg::Challenge {
                vsn: e[1].as_i64().ok_or_else(bad)?,
                nonce: exact(&e[2], NONCE_LEN, "nonce")?,
                mac: exact(&e[3], MAC_LEN, "proof")?,
            },
            ("ha_auth", 6 | 8) => PeerMsg::Auth {
                mac: exact(&e[1], MAC_LEN, "proof")?,
                my_id: val(&e[2])?,
                expected_primary: val(&e[3])?,
                seq: seq(&e[4])?,
                txid: text(&e[5])?,
                instance: match (e.get(6), e.get(7)) {
                    (Some(i), Some(n)) => Some((bin(i)?, seq(n)?)),
                    _ => None,
                },
            },
            ("ha_reject", 3) => PeerMsg::Reject {
                code: e[1]
                    .as_int()
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(bad)?,
                reason: String::from_utf8_lossy(&bin(&e[2])?).into_owned(),
            },
            ("ha_welcome", 5) if e[1].is_atom("catchup") => PeerMsg::Welcome {
                copy: false,
                seq: seq(&e[2])?,
                txid: text(&e[3])?,
                history: Vec::new(),
                catch_up: Some(seq(&e[4])?),
            },
            ("ha_welcome", 4 | 5) => PeerMsg::Welcome {
                copy: match e[1].as_atom() {
                    Some("copy") => true,
                    Some("nocopy") if e.len() == 4 => false,
                    _ => return Err(bad()),
                },
                catch_up: None,
                seq: seq(&e[2])?,
                txid: text(&e[3])?,
                history: match e.get(4) {
                    None => Vec::new(),
                    Some(h) => {
                        let items = h.as_list().ok_or_else(bad)?;
                        let mut out = Vec::with_capacity(items.len());
                        for it in items {
                            match it.as_tuple() {
                                Some([s, t]) => out.push((seq(s)?, text(t)?)),
                                _ => return Err(bad()),
                            }
                        }
                        out
                    }
                },
            },
            ("copy_chunk", 2) => {
                let items = e[1].as_list().ok_or_else(bad)?;
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    match it.as_tuple() {
                        Some([p, v]) => out.push((text(p)?, bin(v)?)),
                        _ => return Err(bad()),
                    }
                }
                PeerMsg::CopyChunk(out)
            }
            ("copy_done", 3) => PeerMsg::CopyDone {
                seq: seq(&e[1])?,
                txid: text(&e[2])?,
            },
            ("txn", 4) => {
                let items = e[3].as_list().ok_or_else(bad)?;
                let mut ops = Vec::with_capacity(items.len());
                for it in items {
                    match it.as_tuple() {
                        Some([op, p, v]) if op.is_atom("set") => {
                            ops.push(StoreOp::Set(text(p)?, bin(v)?))
                        }
                        Some([op, p]) if op.is_atom("delete") => {
                            ops.push(StoreOp::Delete(text(p)?))
                        }
                        _ => return Err(bad()),
                    }
                }
                PeerMsg::Txn {
                    seq: seq(&e[1])?,
                    txid: text(&e[2])?,
                    ops,
                }
            }
            ("ack", 2) => PeerMsg::Ack(seq(&e[1])?),
            ("sub_secondaries", 2) => {
                let items = e[1].as_list().ok_or_else(bad)?;
                if items.len() > MAX_REPORTED_SUBS {
                    return Err(format!(
                        "sub_secondaries report of {} nodes exceeds the limit of {MAX_REPORTED_SUBS}",
                        items.len()
                    ));
                }
                let nodes = items
                    .iter()
                    .map(|n| {
                        let h = HaNode::from_term(n).ok_or_else(bad)?;
                        check_node_id(&h.id)?;
                        Ok(h)
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                PeerMsg::SubSecondaries(nodes)
            }
            _ => return Err(bad()),
        })
    }
}

/// A term shown in a log line, cut to a sane length.
pub fn short(t: &Term) -> String {
    let mut s = format!("{t:?}");
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

type HmacSha256 = Hmac<Sha256>;

fn hmac_of(token: &[u8], label: &[u8], a: &[u8], b: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(token).expect("HMAC takes any key length");
    m.update(label);
    m.update(a);
    m.update(b);
    m
}

/// HMAC-SHA-256(token, label ++ a ++ b).
pub fn proof(token: &[u8], label: &str, a: &[u8], b: &[u8]) -> Vec<u8> {
    hmac_of(token, label.as_bytes(), a, b)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Constant-time check of a proof.
pub fn verify_proof(token: &[u8], label: &str, a: &[u8], b: &[u8], mac: &[u8]) -> bool {
    hmac_of(token, label.as_bytes(), a, b)
        .verify_slice(mac)
        .is_ok()
}

pub fn nonce() -> io::Result<Vec<u8>> {
    let mut n = vec![0u8; NONCE_LEN];
    getrandom::getrandom(&mut n).map_err(|e| io::Error::other(format!("getrandom: {e}")))?;
    Ok(n)
}

/// Why reading from a peer stopped.
#[derive(Debug)]
pub enum ReadErr {
    Closed,
    /// A frame's length and the limit it passed.
    TooLarge(usize, usize),
    Io(io::Error),
}

impl std::fmt::Display for ReadErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadErr::Closed => write!(f, "connection closed by peer"),
            ReadErr::TooLarge(n, max) => {
                write!(f, "frame of {n} bytes exceeds the {max}-byte limit")
            }
            ReadErr::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reassembles frames across read timeouts: `poll` returns `Ok(None)` when the
/// read timed out before a whole frame arrived, keeping the partial bytes.
/// Frames are limited to MAX_HANDSHAKE_FRAME until `authenticated` is called
/// (the peer proved the token), then to MAX_PEER_FRAME.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    max: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            max: MAX_HANDSHAKE_FRAME,
        }
    }

    /// The peer proved the token: accept frames up to MAX_PEER_FRAME.
    pub fn authenticated(&mut self) {
        self.max = MAX_PEER_FRAME;
    }

    /// Whether a whole frame is buffered (the next `poll` returns it without reading).
    pub fn has_frame(&self) -> bool {
        let avail = &self.buf[self.start..];
        avail.len() >= 4
            && 4 + u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize
                <= avail.len()
    }

    fn take_frame(&mut self) -> Result<Option<Vec<u8>>, ReadErr> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.max {
            return Err(ReadErr::TooLarge(len, self.max));
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let f = avail[4..4 + len].to_vec();
        self.start += 4 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(f))
    }

    /// One read into the buffer: `Ok(false)` when it timed out.
    fn fill<R: Read>(&mut self, r: &mut R) -> Result<bool, ReadErr> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // The buffer holds at most one frame (within the limit) plus one read.
        let mut tmp = [0u8; 64 * 1024];
        loop {
            match r.read(&mut tmp) {
                Ok(0) => return Err(ReadErr::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(ReadErr::Io(e)),
            }
        }
    }

    pub fn poll<R: Read>(&mut self, r: &mut R) -> Result<Option<Vec<u8>>, ReadErr> {
        loop {
            if let Some(f) = self.take_frame()? {
                return Ok(Some(f));
            }
            if !self.fill(r)? {
                return Ok(None);
            }
        }
    }

    /// Waits for one frame until `deadline`; `Ok(None)` on timeout. The
    /// deadline holds for the whole frame: a peer sending a byte at a time
    /// does not extend it.
    pub fn read_until(
        &mut self,
        s: &HaStream,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, ReadErr> {
        loop {
            if let Some(f) = self.take_frame()? {
                return Ok(Some(f));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wait = (deadline - now).max(Duration::from_millis(1));
            s.set_read_timeout(Some(wait)).map_err(ReadErr::Io)?;
            let mut r = s;
            self.fill(&mut r)?;
        }
    }
}

/// What a writer thread sends.
pub enum Out {
    /// Whole frames, each with its 4-byte length (see [`frame`]); written as they are.
    Frame(Arc<Vec<u8>>),
    Stop,
}

/// One message as a frame on the wire: its 4-byte big-endian length, then the message.
pub fn frame(msg: &PeerMsg) -> Arc<Vec<u8>> {
    let mut f = Vec::new();
    push_frame(&mut f, &msg.encode());
    Arc::new(f)
}

/// `payload` as one frame.
pub fn framed(payload: &[u8]) -> Arc<Vec<u8>> {
    let mut f = Vec::with_capacity(4 + payload.len());
    push_frame(&mut f, payload);
    Arc::new(f)
}

/// Appends one frame (length, then `payload`) to `out`.
pub fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Shared between a connection's writer thread and whoever feeds it.
#[derive(Default)]
pub struct WriterState {
    /// Bytes queued and not yet written (decremented only once written, under `wire`).
    pub queued: AtomicUsize,
    /// The writer failed or stopped.
    pub dead: AtomicBool,
    /// Held by whoever writes to the socket: the writer thread for each queued frame and
    /// tick, or a thread writing directly ([`send_now`]).
    wire: Mutex<()>,
}

/// Sends whole frames `f` on `s`, in order after everything sent before: directly from
/// the calling thread when nothing is queued for the writer thread and the socket takes
/// them at once (no thread hand-off), else (or for the part the socket did not take, a
/// TLS stream, a writer busy on the socket) through the writer's queue. Never waits for
/// the socket: a peer that stops reading makes the queue grow (its owner bounds it), not
/// the caller block.
pub fn send_now(s: &HaStream, tx: &Sender<Out>, st: &WriterState, f: Arc<Vec<u8>>) {
    let Ok(_g) = st.wire.try_lock() else {
        return queue(tx, st, f);
    };
    if st.queued.load(Ordering::SeqCst) > 0 || st.dead.load(Ordering::SeqCst) {
        return queue(tx, st, f);
    }
    match s.send_nowait(&f) {
        Some(Ok(n)) if n == f.len() => {}
        // The rest goes first in the queue: nothing else is queued, and the wire is ours.
        Some(Ok(n)) => queue(tx, st, Arc::new(f[n..].to_vec())),
        // A broken socket: the writer finds out and ends the connection.
        Some(Err(_)) | None => queue(tx, st, f),
    }
}

/// Queues whole frames `f` for the writer thread (behind everything queued before).
pub fn queue(tx: &Sender<Out>, st: &WriterState, f: Arc<Vec<u8>>) {
    st.queued.fetch_add(f.len(), Ordering::SeqCst);
    if tx.send(Out::Frame(f)).is_err() {
        st.dead.store(true, Ordering::SeqCst);
    }
}

/// The writer loop of one peer connection: frames from `rx` in order, and a
/// tick whenever nothing was written for `tick`. Returns when told to stop,
/// when the queue's senders are gone, or on a write error (it then shuts the
/// socket down so that the reader side notices too). Frames written directly by
/// [`send_now`] count as writes for the tick.
pub fn writer_loop(
    mut s: HaStream,
    rx: Receiver<Out>,
    tick: Option<Duration>,
    state: Arc<WriterState>,
    who: String,
) {
    let tick_frame = frame(&PeerMsg::Tick);
    let mut last_write = Instant::now();
    loop {
        let msg = match tick {
            Some(t) => {
                let due = last_write + t;
                let now = Instant::now();
                if now >= due {
                    let g = lock(&state.wire);
                    // Something queued goes first (it may be the rest of a frame that
                    // send_now wrote in part: a tick now would land inside that frame),
                    // and writing it is the write the tick stood for.
                    if state.queued.load(Ordering::SeqCst) > 0 {
                        drop(g);
                        match rx.recv() {
                            Ok(m) => m,
                            Err(_) => break,
                        }
                    } else {
                        if let Err(e) = s.write_all(&tick_frame) {
                            drop(g);
                            crate::debug!("ha", "writing a tick to {who}: {e}");
                            break;
                        }
                        drop(g);
                        last_write = Instant::now();
                        continue;
                    }
                } else {
                    match rx.recv_timeout(due - now) {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        match msg {
            Out::Stop => break,
            Out::Frame(f) => {
                let g = lock(&state.wire);
                let r = s.write_all(&f);
                state.queued.fetch_sub(f.len(), Ordering::SeqCst);
                drop(g);
                if let Err(e) = r {
                    crate::debug!("ha", "writing to {who}: {e}");
                    break;
                }
                last_write = Instant::now();
            }
        }
    }
    state.dead.store(true, Ordering::SeqCst);
    let _ = s.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use confd_ha::proto::frame::write_frame;

    #[test]
    fn messages_round_trip() {
        let msgs = vec![
            PeerMsg::Hello {
                vsn: 1,
                nonce: vec![1; 32],
            },
            PeerMsg::Challenge {
                vsn: 1,
                nonce: vec![2; 32],
                mac: vec![3; 32],
            },
            PeerMsg::Auth {
                mac: vec![4; 32],
                my_id: Value::Buf(b"n2".to_vec()),
                expected_primary: Value::Buf(b"n1".to_vec()),
                seq: 7,
                txid: "n1-7-1".into(),
                instance: None,
            },
            PeerMsg::Auth {
                mac: vec![4; 32],
                my_id: Value::Buf(b"n2".to_vec()),
                expected_primary: Value::Buf(b"n1".to_vec()),
                seq: 7,
                txid: "n1-7-1".into(),
                instance: Some((vec![5; 32], 9)),
            },
            PeerMsg::Reject {
                code: 28,
                reason: "token mismatch".into(),
            },
            PeerMsg::Welcome {
                copy: true,
                seq: 3,
                txid: "x".into(),
                history: vec![],
                catch_up: None,
            },
            PeerMsg::Welcome {
                copy: true,
                seq: 3,
                txid: "x".into(),
                history: vec![(2, "a".into()), (3, "b".into())],
                catch_up: None,
            },
            PeerMsg::Welcome {
                copy: false,
                seq: 3,
                txid: "x".into(),
                history: vec![],
                catch_up: None,
            },
            PeerMsg::Welcome {
                copy: false,
                seq: 1003,
                txid: "x".into(),
                history: vec![],
                catch_up: Some(1000),
            },
            PeerMsg::CopyChunk(vec![("/a".into(), vec![1, 2]), ("/b".into(), vec![])]),
            PeerMsg::CopyDone {
                seq: 3,
                txid: "x".into(),
            },
            PeerMsg::Txn {
                seq: u64::MAX,
                txid: "t".into(),
                ops: vec![
                    StoreOp::Set("/a".into(), vec![9]),
                    StoreOp::Delete("/b".into()),
                ],
            },
            PeerMsg::Ack(5),
            PeerMsg::Tick,
            PeerMsg::SubSecondaries(vec![]),
            PeerMsg::SubSecondaries(vec![
                HaNode {
                    id: Value::Buf(b"n3".to_vec()),
                    addr: confd_ha::proto::ha::NodeAddr::V4("127.0.0.4".parse().unwrap()),
                },
                HaNode {
                    id: Value::Int32(4),
                    addr: confd_ha::proto::ha::NodeAddr::V6("::1".parse().unwrap()),
                },
            ]),
        ];
        for m in msgs {
            assert_eq!(PeerMsg::decode(&m.encode()).unwrap(), m);
        }
        assert!(PeerMsg::decode(b"garbage").is_err());
        // Nonces and proofs of the wrong length, empty or huge node ids.
        for bad in [
            PeerMsg::Hello {
                vsn: 1,
                nonce: vec![1; 31],
            },
            PeerMsg::Challenge {
                vsn: 1,
                nonce: vec![2; 32],
                mac: vec![3; 33],
            },
            PeerMsg::Auth {
                mac: vec![4; 32],
                my_id: Value::Buf(vec![]),
                expected_primary: Value::Buf(b"n1".to_vec()),
                seq: 7,
                txid: "n1-7-1".into(),
                instance: None,
            },
            PeerMsg::Auth {
                mac: vec![4; 32],
                my_id: Value::Buf(vec![b'x'; MAX_NODE_ID_BYTES + 1]),
                expected_primary: Value::Buf(b"n1".to_vec()),
                seq: 7,
                txid: "n1-7-1".into(),
                instance: None,
            },
        ] {
            assert!(PeerMsg::decode(&bad.encode()).is_err(), "{bad:?}");
        }
        assert!(PeerMsg::from_term(&Term::Tuple(vec![a("ack"), Term::int(-1)])).is_err());
        // A catch-up welcome carries its count; a no-copy welcome carries nothing more.
        let w = |e: Vec<Term>| PeerMsg::from_term(&Term::Tuple(e));
        assert!(w(vec![a("ha_welcome"), a("catchup"), u(3), Term::binary("x")]).is_err());
        assert!(w(vec![
            a("ha_welcome"),
            a("catchup"),
            u(3),
            Term::binary("x"),
            a("n")
        ])
        .is_err());
        assert!(w(vec![
            a("ha_welcome"),
            a("nocopy"),
            u(3),
            Term::binary("x"),
            Term::List(vec![])
        ])
        .is_err());
        assert!(PeerMsg::from_term(&Term::Tuple(vec![
            a("txn"),
            u(1),
            Term::binary("t"),
            Term::List(vec![a("x")])
        ]))
        .is_err());
    }

    #[test]
    fn version_negotiation_takes_the_lower_supported_version() {
        assert_eq!(negotiate(1), Some(1));
        assert_eq!(negotiate(HA_PROTO_VSN), Some(HA_PROTO_VSN));
        assert_eq!(negotiate(HA_PROTO_VSN + 7), Some(HA_PROTO_VSN));
        assert_eq!(negotiate(0), None);
        assert_eq!(negotiate(-3), None);
    }

    #[test]
    fn sub_secondaries_report_is_bounded() {
        let node = HaNode {
            id: Value::Buf(b"x".to_vec()),
            addr: confd_ha::proto::ha::NodeAddr::V4("127.0.0.9".parse().unwrap()),
        };
        let big = PeerMsg::SubSecondaries(vec![node; MAX_REPORTED_SUBS + 1]);
        let e = PeerMsg::decode(&big.encode()).unwrap_err();
        assert!(e.contains("exceeds the limit"), "{e}");
        let bad = Term::Tuple(vec![a("sub_secondaries"), Term::List(vec![a("x")])]);
        assert!(PeerMsg::from_term(&bad).is_err());
    }

    #[test]
    fn proofs_verify_and_differ_by_label_and_token() {
        let (ns, np) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(ns, np);
        let m = proof(b"tok", "primary", &ns, &np);
        assert!(verify_proof(b"tok", "primary", &ns, &np, &m));
        assert!(!verify_proof(b"tok2", "primary", &ns, &np, &m));
        assert!(!verify_proof(b"tok", "secondary", &ns, &np, &m));
        assert!(!verify_proof(b"tok", "primary", &np, &ns, &m));
        assert!(!verify_proof(b"tok", "primary", &ns, &np, &m[..31]));
    }

    #[test]
    fn frame_reader_reassembles_and_bounds() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").unwrap();
        write_frame(&mut wire, b"").unwrap();
        // Feed one byte at a time, with a "timeout" after each.
        struct Drip<'a>(&'a [u8], bool);
        impl Read for Drip<'_> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.1 = !self.1;
                if self.1 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                if self.0.is_empty() {
                    return Ok(0);
                }
                b[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let mut d = Drip(&wire, false);
        let mut fr = FrameReader::new();
        let mut got = Vec::new();
        loop {
            match fr.poll(&mut d) {
                Ok(Some(f)) => got.push(f),
                Ok(None) => {}
                Err(ReadErr::Closed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, vec![b"hello".to_vec(), vec![]]);
        let mut big = &[0xffu8, 0xff, 0xff, 0xff][..];
        assert!(matches!(
            FrameReader::new().poll(&mut big),
            Err(ReadErr::TooLarge(_, MAX_HANDSHAKE_FRAME))
        ));
        // Before authentication a 4 KiB + 1 frame is too large; after, not.
        let mut wire = Vec::new();
        write_frame(&mut wire, &vec![0u8; MAX_HANDSHAKE_FRAME + 1]).unwrap();
        assert!(matches!(
            FrameReader::new().poll(&mut &wire[..]),
            Err(ReadErr::TooLarge(_, MAX_HANDSHAKE_FRAME))
        ));
        let mut fr = FrameReader::new();
        fr.authenticated();
        assert_eq!(
            fr.poll(&mut &wire[..]).unwrap().unwrap().len(),
            MAX_HANDSHAKE_FRAME + 1
        );
    }

    #[test]
    fn a_tick_never_splits_a_frame_written_in_part_directly() {
        // send_now writes what the socket takes and queues the rest of the frame; a tick
        // due at that moment must not go between the two parts (it did: the writer wrote
        // the tick before taking the rest from its queue, and the peer read garbage).
        use std::net::{TcpListener, TcpStream};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut r, _) = l.accept().unwrap();
        let s = crate::tls::HaStream::plain(c);
        let (tx, rx) = std::sync::mpsc::channel();
        let st = Arc::new(WriterState::default());
        // Larger than what loopback buffers hold: the peer does not read yet.
        let body = vec![0xabu8; 64 << 20];
        let f = framed(&body);
        send_now(&s, &tx, &st, f.clone());
        assert!(
            st.queued.load(Ordering::SeqCst) > 0,
            "the socket took the whole frame; the test needs a partial write"
        );
        // The writer starts with its tick overdue.
        let w = {
            let st = st.clone();
            let s = s.try_clone().unwrap();
            std::thread::spawn(move || {
                writer_loop(s, rx, Some(Duration::from_nanos(1)), st, "test".into())
            })
        };
        let mut got = vec![0u8; f.len()];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got[..4], &f[..4], "the frame's length");
        let bad = got.iter().skip(4).position(|&b| b != 0xab);
        assert_eq!(bad, None, "foreign bytes inside the frame");
        // The writer goes on ticking: closing our end ends it.
        drop(r);
        let _ = tx.send(Out::Stop);
        w.join().unwrap();
    }
}
