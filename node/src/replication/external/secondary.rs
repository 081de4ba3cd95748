//! The receiving side of replication: joining a primary (or relay), the full
//! copy, then the reader thread: ticks, ordered txns, and the group apply of
//! every transaction read (durable, then the ack from the same thread; a relay
//! forwards to its subs first).

use crate::node::{lock, Node};
use crate::replication::peer::{
    frame, nonce, proof, queue, send_now, verify_proof, writer_loop, FrameReader, Out, PeerMsg,
    ReadErr, WriterState, CATCH_UP_MIN_VSN, HA_PROTO_VSN, HA_PROTO_VSN_MIN,
};
use crate::store::{StoreOp, TxMeta};
use crate::tls::HaStream;
use confd_ha::errcode::*;
use confd_ha::proto::ha::{HaNode, NodeAddr};
use confd_ha::value::Value;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The link to our primary.
#[allow(dead_code)]
pub struct Upstream {
    pub who: String,
    stream: HaStream,
    tx: Sender<Out>,
    wstate: Arc<WriterState>,
    stopped: AtomicBool,
    pub last_rx: Mutex<Instant>,
    /// The reader thread (which applies), and whether it has applied everything it
    /// received for the last time (it then only reports the loss).
    reader: Mutex<Option<std::thread::ThreadId>>,
    applied: Mutex<bool>,
    applied_cv: Condvar,
    /// The node-to-node protocol version agreed with the primary.
    vsn: i64,
}

impl Upstream {
    /// Waits until the reader has made every transaction it received durable (it does
    /// once its link is gone). Call after `stop`.
    pub fn wait_applied(&self) {
        if *lock(&self.reader) == Some(std::thread::current().id()) {
            return;
        }
        let mut done = lock(&self.applied);
        while !*done {
            done = self
                .applied_cv
                .wait(done)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn set_applied(&self) {
        *lock(&self.applied) = true;
        self.applied_cv.notify_all();
    }
    /// A relay reports the nodes now behind it (protocol version 2 on; an
    /// older primary does not know the message and is not sent it).
    pub fn report_subs(&self, nodes: Vec<HaNode>) {
        if self.vsn >= 2 && !self.is_stopped() {
            queue(
                &self.tx,
                &self.wstate,
                frame(&PeerMsg::SubSecondaries(nodes)),
            );
        }
    }
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let _ = self.tx.send(Out::Stop);
    }
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
    /// Acknowledges from the calling thread (the applier, which made `seq` durable) when
    /// the socket takes it at once, else through the writer's queue.
    fn ack(&self, seq: u64) {
        send_now(
            &self.stream,
            &self.tx,
            &self.wstate,
            frame(&PeerMsg::Ack(seq)),
        );
    }
}

/// A catch-up is applied in durable store commits of at most this many transactions...
const CATCH_UP_APPLY_TXNS: usize = 1024;
/// ... or about this many bytes of values and paths.
const CATCH_UP_APPLY_BYTES: usize = 8 * 1024 * 1024;

/// A completed join, not yet installed as the node's role.
pub struct Joined {
    pub by_copy: bool,
    /// Transactions received by an incremental catch-up (0: none).
    pub caught_up: u64,
    stream: HaStream,
    ctl: HaStream,
    fr: FrameReader,
    tx: Sender<Out>,
    wstate: Arc<WriterState>,
    next_seq: u64,
    who: String,
    vsn: i64,
}

impl Joined {
    /// The join was superseded: close the link.
    pub fn abandon(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let _ = self.tx.send(Out::Stop);
    }

    /// Starts the reader thread for generation `gen`.
    pub fn start(self, node: Arc<Node>, gen: u64) -> Arc<Upstream> {
        let up = Arc::new(Upstream {
            who: self.who,
            stream: self.ctl,
            tx: self.tx,
            wstate: self.wstate,
            stopped: AtomicBool::new(false),
            last_rx: Mutex::new(Instant::now()),
            reader: Mutex::new(None),
            applied: Mutex::new(false),
            applied_cv: Condvar::new(),
            vsn: self.vsn,
        });
        let (n1, u1) = (node.clone(), up.clone());
        let stream = self.stream;
        let fr = self.fr;
        let next = self.next_seq;
        // Held until the thread id is recorded: the reader reports a loss only after.
        let mut rid = lock(&up.reader);
        match std::thread::Builder::new()
            .name("ha-up-rd".into())
            .spawn(move || reader(n1, u1, gen, stream, fr, next))
        {
            Ok(h) => *rid = Some(h.thread().id()),
            Err(_) => {
                drop(rid);
                crate::error!("ha", "cannot start the secondary's thread");
                up.stop();
                up.set_applied();
                return up;
            }
        }
        drop(rid);
        up
    }
}

fn connect(node: &Node, primary: &HaNode) -> Result<(TcpStream, SocketAddr), String> {
    let port = node.cfg.ha_addr.port();
    let targets: Vec<SocketAddr> = match &primary.addr {
        NodeAddr::V4(a) => vec![SocketAddr::new(IpAddr::V4(*a), port)],
        NodeAddr::V6(a) => vec![SocketAddr::new(IpAddr::V6(*a), port)],
        NodeAddr::Str(h) => (h.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {h}: {e}"))?
            .collect(),
    };
    let timeout = node.cfg.handshake_timeout();
    let mut last_err = format!("no address for {}", primary.addr);
    for t in targets {
        let domain = if t.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)
            .map_err(|e| format!("socket: {e}"))?;
        // Leave from our own HA address so that the primary sees who we are.
        let local = node.cfg.ha_addr.ip();
        if !local.is_unspecified() && local.is_ipv4() == t.is_ipv4() {
            let _ = sock.bind(&SocketAddr::new(local, 0).into());
        }
        match sock.connect_timeout(&t.into(), timeout) {
            Ok(()) => {
                let s: TcpStream = sock.into();
                let _ = s.set_nodelay(true);
                return Ok((s, t));
            }
            Err(e) => last_err = format!("{t}: {e}"),
        }
    }
    Err(last_err)
}

/// Connects, authenticates and receives the initial data (copy or not).
pub fn join(
    node: &Arc<Node>,
    gen: u64,
    me: &Value,
    primary: &HaNode,
) -> Result<Joined, (i32, String)> {
    let pname = format!("{} at {}", primary.id, primary.addr);
    // Offer our highest version; a primary of an older release refuses it
    // with HA_BADVSN, and we connect again offering the one below.
    let mut offer = HA_PROTO_VSN;
    loop {
        match join_vsn(node, gen, me, primary, &pname, offer) {
            Err((code, why)) if code == CONFD_ERR_HA_BADVSN && offer > HA_PROTO_VSN_MIN => {
                crate::info!(
                    "ha",
                    "primary {pname} refused HA protocol version {offer} ({why}); offering {}",
                    offer - 1
                );
                offer -= 1;
            }
            r => return r,
        }
    }
}

/// One join attempt offering node-to-node protocol version `offer`.
fn join_vsn(
    node: &Arc<Node>,
    gen: u64,
    me: &Value,
    primary: &HaNode,
    pname: &str,
    offer: i64,
) -> Result<Joined, (i32, String)> {
    let (s, addr) = connect(node, primary).map_err(|e| {
        (
            CONFD_ERR_HA_CONNECT,
            format!("cannot connect to primary {}: {e}", primary.id),
        )
    })?;
    let hs = node.cfg.handshake_timeout();
    let s = crate::tls::connect(node.tls.as_deref(), s, &primary.addr, Instant::now() + hs)
        .map_err(|e| {
            let why = format!("cannot connect to primary {pname}: {e}");
            (CONFD_ERR_HA_CONNECT, why)
        })?;
    let _ = s.set_write_timeout(Some(hs));
    let mut fr = FrameReader::new();
    let send = |m: &PeerMsg| -> Result<(), (i32, String)> {
        let mut w = &s;
        confd_ha::proto::frame::write_frame(&mut w, &m.encode()).map_err(|e| {
            (
                CONFD_ERR_HA_CLOSED,
                format!("primary {pname} closed the connection: {e}"),
            )
        })
    };
    let recv = |fr: &mut FrameReader, wait: Duration| -> Result<PeerMsg, (i32, String)> {
        match fr.read_until(&s, Instant::now() + wait) {
            Ok(Some(f)) => match PeerMsg::decode(&f) {
                Ok(PeerMsg::Reject { code, reason }) => {
                    Err((code, format!("primary {pname} refused us: {reason}")))
                }
                Ok(m) => Ok(m),
                Err(e) => Err((
                    CONFD_ERR_HA_CLOSED,
                    format!("protocol error from primary {pname}: {e}"),
                )),
            },
            Ok(None) => Err((
                CONFD_ERR_HA_NOTICK,
                format!("primary {pname} sent nothing for {} ms", wait.as_millis()),
            )),
            Err(ReadErr::Closed) => Err((
                CONFD_ERR_HA_CLOSED,
                format!("primary {pname} closed the connection"),
            )),
            Err(ReadErr::Io(e)) if crate::tls::is_tls_error(&e) => {
                Err((CONFD_ERR_HA_CONNECT, format!("primary {pname}: {e}")))
            }
            Err(e) => Err((CONFD_ERR_HA_CLOSED, format!("primary {pname}: {e}"))),
        }
    };
    let ns = nonce().map_err(|e| (CONFD_ERR_OS, e.to_string()))?;
    send(&PeerMsg::Hello {
        vsn: offer,
        nonce: ns.clone(),
    })?;
    let token = node.token();
    let (np, vsn) = match recv(&mut fr, hs)? {
        PeerMsg::Challenge { vsn, nonce, mac } => {
            if !(HA_PROTO_VSN_MIN..=offer).contains(&vsn) {
                return Err((
                    CONFD_ERR_HA_BADVSN,
                    format!(
                        "primary {pname} speaks HA protocol version {vsn}, we speak {HA_PROTO_VSN_MIN}..{offer}"
                    ),
                ));
            }
            if !verify_proof(&token, "primary", &ns, &nonce, &mac) {
                crate::warn!(
                    "ha",
                    "TOKEN_MISMATCH: primary {pname} does not hold our token"
                );
                // Say so, so that the primary does not guess at a network fault.
                let _ = send(&PeerMsg::Reject {
                    code: CONFD_ERR_HA_BADTOKEN,
                    reason: "token mismatch: the primary's proof does not match this \
                             secondary's token"
                        .into(),
                });
                return Err((
                    CONFD_ERR_HA_BADTOKEN,
                    format!("token mismatch: primary {pname} does not hold our token"),
                ));
            }
            // The primary proved the token: its frames may now be full size.
            fr.authenticated();
            (nonce, vsn)
        }
        m => {
            return Err((
                CONFD_ERR_HA_CLOSED,
                format!("protocol error: expected ha_challenge from {pname}, got {m:?}"),
            ))
        }
    };
    let last = lock(&node.commit).last.clone();
    send(&PeerMsg::Auth {
        mac: proof(&token, "secondary", &np, &ns),
        my_id: me.clone(),
        expected_primary: primary.id.clone(),
        seq: last.seq,
        txid: last.txid.clone(),
        instance: (vsn >= 2).then(|| (node.instance.clone(), gen)),
    })?;
    let (copy, wseq, wtxid, history, catch_up) = match recv(&mut fr, hs)? {
        PeerMsg::Welcome {
            copy,
            seq,
            txid,
            history,
            catch_up,
        } => {
            if !copy && catch_up.is_none() && (seq != last.seq || txid != last.txid) {
                return Err((
                    CONFD_ERR_HA_CLOSED,
                    format!("protocol error: primary {pname} skipped the copy for a different transaction"),
                ));
            }
            // A catch-up brings us from our last transaction to the primary's, which is
            // further on (only version 3 on knows it).
            if catch_up.is_some() && (vsn < CATCH_UP_MIN_VSN || seq <= last.seq) {
                return Err((
                    CONFD_ERR_HA_CLOSED,
                    format!(
                        "protocol error: primary {pname} offered a catch-up to seq {seq} \
                         (protocol version {vsn}) to this node at seq {}",
                        last.seq
                    ),
                ));
            }
            (copy, seq, txid, history, catch_up)
        }
        m => {
            return Err((
                CONFD_ERR_HA_CLOSED,
                format!("protocol error: expected ha_welcome from {pname}, got {m:?}"),
            ))
        }
    };
    // From here on we tick.
    let (tx, rx) = channel();
    let ws = s
        .try_clone()
        .map_err(|e| (CONFD_ERR_OS, format!("socket: {e}")))?;
    let _ = s.set_write_timeout(Some(node.cfg.ack_timeout().max(Duration::from_secs(1))));
    let tick = node.cfg.tick;
    let who = format!("primary {pname}");
    let wwho = who.clone();
    let wstate = Arc::new(WriterState::default());
    let wst = wstate.clone();
    std::thread::Builder::new()
        .name("ha-up-wr".into())
        .spawn(move || writer_loop(ws, rx, tick, wst, wwho))
        .map_err(|e| (CONFD_ERR_OS, format!("cannot start a thread: {e}")))?;
    // Acknowledges a durable seq (the copy's, or each batch of a catch-up).
    let send_ack = |tx: &Sender<Out>, seq: u64| {
        queue(tx, &wstate, frame(&PeerMsg::Ack(seq)));
    };
    let fail = |tx: &Sender<Out>, e: (i32, String)| {
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = tx.send(Out::Stop);
        e
    };
    // A local store failure is this node's, never the primary's: fail-stop and say so.
    let store_fail = |tx: &Sender<Out>, what: &str, e: crate::store::StoreError| {
        if e.is_fault() {
            node.store_failed(what, &e);
            fail(
                tx,
                (
                    crate::node::LOCAL_STORE_ERR,
                    format!("the local store failed ({what}): {e}"),
                ),
            )
        } else {
            fail(tx, (CONFD_ERR_INTERNAL, format!("{what}: {e}")))
        }
    };
    let next_seq;
    let mut caught_up = 0;
    if copy {
        let t0 = Instant::now();
        // What the copy discards of our own history goes to a rollback file first.
        let rollback = match discarded(node, &last, &history) {
            Ok(r) => r,
            Err(e) => return Err(store_fail(&tx, "reading the transaction log", e)),
        };
        let reason = if history.is_empty() {
            // The primary's log does not reach our seqs: it cannot say; keep them.
            if wseq == 0 {
                format!("full copy from primary {pname}, which has no transactions (seq 0)")
            } else {
                format!(
                    "full copy from primary {pname} (at seq {wseq}), whose transaction log \
                     does not reach seq {}: these transactions may or may not be there",
                    last.seq
                )
            }
        } else {
            format!("full copy from primary {pname}, which does not have these transactions")
        };
        let refuse = |e: String| {
            crate::error!("ha", "{e}");
            fail(
                &tx,
                (
                    crate::node::LOCAL_STORE_ERR,
                    format!("refusing the full copy: {e}"),
                ),
            )
        };
        // Removed again if the copy fails (then nothing was discarded).
        struct Pending(Vec<std::path::PathBuf>);
        impl Drop for Pending {
            fn drop(&mut self) {
                for f in self.0.drain(..) {
                    let _ = std::fs::remove_file(f);
                }
            }
        }
        let mut pending = Pending(Vec::new());
        let mut rb_file = None;
        let mut state_file = None;
        if let Some(d) = &rollback {
            if !d.txns.is_empty() {
                let f = write_rollback(node, pname, &reason, &last, &d.txns, d.common)
                    .map_err(&refuse)?;
                pending.0.push(f.clone());
                rb_file = Some(f);
            }
            if !d.complete {
                let (f, n) =
                    write_rollback_state(node, pname, &reason, &last, d).map_err(&refuse)?;
                pending.0.push(f.clone());
                state_file = Some((f, n));
            }
        }
        let w = node
            .store
            .begin_copy()
            .map_err(|e| store_fail(&tx, "starting the full copy", e))?;
        // Chunks are staged in the store by a second thread, so decoding the next
        // chunk overlaps with writing this one.
        let (ctx, crx) = sync_channel::<Vec<(String, Vec<u8>)>>(4);
        let stager = std::thread::Builder::new()
            .name("ha-copy".into())
            .spawn(move || {
                let mut w = w;
                for c in crx {
                    w.put_chunk(&c)?;
                }
                Ok::<_, crate::store::StoreError>(w)
            })
            .map_err(|e| fail(&tx, (CONFD_ERR_OS, format!("cannot start a thread: {e}"))))?;
        let mut ctx = Some(ctx);
        let mut stager = Some(stager);
        // Stops the stager and returns its writer (or why it failed).
        let mut finish_staging = |ctx: &mut Option<SyncSender<_>>| {
            drop(ctx.take());
            match stager.take().map(|h| h.join()) {
                Some(Ok(Ok(w))) => Ok(w),
                Some(Ok(Err(e))) => Err(Some(e)),
                _ => Err(None),
            }
        };
        let staging_err = |tx: &Sender<Out>, e: Option<crate::store::StoreError>| match e {
            Some(e) => store_fail(tx, "staging the full copy", e),
            None => fail(
                tx,
                (CONFD_ERR_INTERNAL, "the copy thread failed".to_string()),
            ),
        };
        let silence = node.cfg.dead_after().unwrap_or(Duration::from_secs(3600));
        let mut entries = 0usize;
        loop {
            if lock(&node.state).gen != gen {
                let _ = finish_staging(&mut ctx);
                return Err(fail(
                    &tx,
                    (CONFD_ERR_HA_CLOSED, "superseded by another order".into()),
                ));
            }
            match recv(&mut fr, silence) {
                Ok(PeerMsg::Tick) => {}
                Ok(PeerMsg::CopyChunk(c)) => {
                    entries += c.len();
                    let sent = ctx.as_ref().map(|t| t.send(c).is_ok()).unwrap_or(false);
                    if !sent {
                        let e = match finish_staging(&mut ctx) {
                            Err(e) => e,
                            Ok(_) => None,
                        };
                        return Err(staging_err(&tx, e));
                    }
                }
                Ok(PeerMsg::CopyDone { seq, txid }) => {
                    let meta = TxMeta { seq, txid };
                    let w = finish_staging(&mut ctx).map_err(|e| staging_err(&tx, e))?;
                    let mut cs = lock(&node.commit);
                    if node.gen_now.load(Ordering::SeqCst) != gen {
                        drop(cs);
                        return Err(fail(
                            &tx,
                            (CONFD_ERR_HA_CLOSED, "superseded by another order".into()),
                        ));
                    }
                    if let Err(e) = w.finish(&meta) {
                        drop(cs);
                        return Err(store_fail(&tx, "finishing the full copy", e));
                    }
                    cs.copy_base = Some(meta.clone());
                    cs.last = meta;
                    cs.seq_floor = cs.seq_floor.max(seq);
                    drop(cs);
                    pending.0.clear();
                    if let (Some(f), Some(d)) = (&rb_file, &rollback) {
                        let txns = &d.txns;
                        node.stats
                            .discarded_txns
                            .fetch_add(txns.len() as u64, Ordering::Relaxed);
                        crate::warn!(
                            "ha",
                            "the full copy from {pname} discarded {} local transaction(s) the \
                             primary does not have, from seq {} txid '{}' to seq {} txid '{}'; \
                             they are kept in the rollback file {}",
                            txns.len(),
                            txns[0].0.seq,
                            txns[0].0.txid,
                            last.seq,
                            last.txid,
                            f.display()
                        );
                    }
                    if let Some((f, n)) = &state_file {
                        node.stats
                            .rollback_snapshots
                            .fetch_add(1, Ordering::Relaxed);
                        crate::warn!(
                            "ha",
                            "the full copy from {pname} replaced local data (seq {} txid '{}') \
                             whose divergence from the primary the transaction log cannot \
                             itemise; the complete local state before the copy ({n} entries) \
                             is kept in the rollback file {}",
                            last.seq,
                            last.txid,
                            f.display()
                        );
                    }
                    next_seq = seq + 1;
                    node.stats
                        .full_copies_received
                        .fetch_add(1, Ordering::Relaxed);
                    node.stats.last_txn_unix_ms.store(
                        crate::node::unix_ms(std::time::Instant::now()) as u64,
                        Ordering::Relaxed,
                    );
                    send_ack(&tx, seq);
                    crate::info!(
                        "ha",
                        "full copy from {pname}: {entries} entries at transaction {seq} in {} ms",
                        t0.elapsed().as_millis()
                    );
                    break;
                }
                Ok(m) => {
                    let _ = finish_staging(&mut ctx);
                    return Err(fail(
                        &tx,
                        (
                            CONFD_ERR_HA_CLOSED,
                            format!("protocol error during the copy from {pname}: {m:?}"),
                        ),
                    ));
                }
                Err(e) => {
                    let _ = finish_staging(&mut ctx);
                    return Err(fail(&tx, e));
                }
            }
        }
    } else if let Some(n) = catch_up {
        // The transactions after our last one, up to (wseq, wtxid), then the live stream:
        // applied here, in durable batches, each acknowledged, before besecondary returns.
        let t0 = Instant::now();
        let silence = node.cfg.dead_after().unwrap_or(Duration::from_secs(3600));
        let proto_err = |why: String| {
            fail(
                &tx,
                (
                    CONFD_ERR_HA_CLOSED,
                    format!("protocol error during the catch-up from {pname}: {why}"),
                ),
            )
        };
        let mut batch: Vec<(TxMeta, Vec<StoreOp>)> = Vec::new();
        let (mut bytes, mut prev, mut got, mut first) = (0usize, last.seq, 0u64, 0u64);
        loop {
            let (seq, txid, ops) = match recv(&mut fr, silence) {
                Ok(PeerMsg::Tick) => continue,
                Ok(PeerMsg::Txn { seq, txid, ops }) => (seq, txid, ops),
                Ok(m) => return Err(proto_err(format!("unexpected {m:?}"))),
                Err(e) => return Err(fail(&tx, e)),
            };
            if seq <= prev || seq > wseq {
                return Err(proto_err(format!(
                    "transaction {seq} after {prev}, the catch-up ends at {wseq}"
                )));
            }
            let done = seq == wseq;
            if done && txid != wtxid {
                return Err(proto_err(format!(
                    "it ends with txid '{txid}', the welcome named '{wtxid}'"
                )));
            }
            got += 1;
            if first == 0 {
                first = seq;
            }
            if got > n {
                return Err(proto_err(format!(
                    "more than the {n} transactions announced"
                )));
            }
            bytes += ops
                .iter()
                .map(|o| match o {
                    StoreOp::Set(p, v) => p.len() + v.len(),
                    StoreOp::Delete(p) => p.len(),
                })
                .sum::<usize>();
            prev = seq;
            batch.push((TxMeta { seq, txid }, ops));
            if !done && batch.len() < CATCH_UP_APPLY_TXNS && bytes < CATCH_UP_APPLY_BYTES {
                continue;
            }
            let mut cs = lock(&node.commit);
            if node.gen_now.load(Ordering::SeqCst) != gen {
                drop(cs);
                return Err(fail(
                    &tx,
                    (CONFD_ERR_HA_CLOSED, "superseded by another order".into()),
                ));
            }
            if let Err(e) = node.store.commit(&batch) {
                drop(cs);
                return Err(store_fail(&tx, "applying the catch-up", e));
            }
            cs.last = batch[batch.len() - 1].0.clone();
            cs.seq_floor = cs.seq_floor.max(seq);
            drop(cs);
            node.stats
                .txns_applied
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
            bytes = 0;
            send_ack(&tx, seq);
            if done {
                break;
            }
        }
        if got != n {
            crate::warn!(
                "ha",
                "catch-up from {pname}: {got} transactions arrived, {n} were announced"
            );
        }
        node.stats
            .catch_ups_received
            .fetch_add(1, Ordering::Relaxed);
        node.stats.last_txn_unix_ms.store(
            crate::node::unix_ms(std::time::Instant::now()) as u64,
            Ordering::Relaxed,
        );
        crate::info!(
            "ha",
            "catch-up from {pname}: {got} txns from seq {first} to {wseq} in {} ms (our seq {} \
             txid '{}' is in its history: no copy)",
            t0.elapsed().as_millis(),
            last.seq,
            last.txid
        );
        caught_up = got;
        next_seq = wseq + 1;
    } else {
        next_seq = wseq + 1;
    }
    crate::debug!("ha", "joined {pname} at {addr}");
    let ctl = s
        .try_clone()
        .map_err(|e| fail(&tx, (CONFD_ERR_OS, format!("socket: {e}"))))?;
    Ok(Joined {
        by_copy: copy,
        caught_up,
        ctl,
        stream: s,
        fr,
        tx,
        wstate,
        next_seq,
        who,
        vsn,
    })
}

fn reader(
    node: Arc<Node>,
    up: Arc<Upstream>,
    gen: u64,
    s: HaStream,
    mut fr: FrameReader,
    mut next: u64,
) {
    // Until `start` has recorded this thread's id (wait_applied must know it).
    drop(lock(&up.reader));
    let dead_after = node.cfg.dead_after();
    let poll = node
        .cfg
        .tick
        .map(|t| (t / 10).max(Duration::from_millis(5)));
    let _ = s.set_read_timeout(poll);
    let mut last = Instant::now();
    let mut woke = Instant::now();
    let mut r = &s;
    // Transactions received and not yet applied: applied (one store commit, one ack) once
    // no other whole frame is buffered, or MAX_APPLY_BATCH of them are.
    let mut batch: Vec<Received> = Vec::new();
    let mut failed = false;
    let (code, why) = loop {
        if !batch.is_empty() && (!fr.has_frame() || batch.len() >= MAX_APPLY_BATCH) {
            if let Err(e) = apply(&node, &up, std::mem::take(&mut batch)) {
                failed = true;
                break (CONFD_ERR_HA_CLOSED, e);
            }
        }
        let polled = fr.poll(&mut r);
        // Not running for a while (frozen): the primary's silence is ours; restart its clock.
        let gap = woke.elapsed();
        woke = Instant::now();
        if gap
            > poll.unwrap_or(Duration::from_millis(50))
                + crate::replication::external::primary::STALL_SLACK
        {
            last = woke;
        }
        match polled {
            Ok(Some(f)) => {
                last = Instant::now();
                *lock(&up.last_rx) = last;
                match PeerMsg::decode(&f) {
                    Ok(PeerMsg::Tick) => {}
                    Ok(PeerMsg::Txn { seq, txid, ops }) => {
                        // Seqs only grow; a gap is a seq the primary gave to a commit that
                        // failed there (never sent to anyone who stayed connected).
                        if seq < next {
                            break (
                                CONFD_ERR_HA_CLOSED,
                                format!(
                                    "protocol error: transaction {seq} arrived, expected {next} or later"
                                ),
                            );
                        }
                        next = seq + 1;
                        batch.push((seq, txid, ops));
                    }
                    Ok(m) => {
                        break (
                            CONFD_ERR_HA_CLOSED,
                            format!("protocol error: unexpected {m:?}"),
                        )
                    }
                    Err(e) => break (CONFD_ERR_HA_CLOSED, format!("protocol error: {e}")),
                }
            }
            Ok(None) => {}
            Err(ReadErr::Closed) => {
                break (
                    CONFD_ERR_HA_CLOSED,
                    "the primary closed the connection".into(),
                )
            }
            Err(e) => break (CONFD_ERR_HA_CLOSED, e.to_string()),
        }
        if let Some(d) = dead_after {
            // One clock reading for both checks: a freeze after the check above shows as a
            // gap here, and is ours, not the primary's.
            let now = Instant::now();
            if now.saturating_duration_since(woke)
                > poll.unwrap_or(Duration::from_millis(50))
                    + crate::replication::external::primary::STALL_SLACK
            {
                last = now;
                woke = now;
            } else if now.saturating_duration_since(last) > d {
                break (
                    CONFD_ERR_HA_NOTICK,
                    format!("no ticks from the primary for {} ms", d.as_millis()),
                );
            }
        }
    };
    // Everything fully received is applied before NOPRIMARY or another role.
    if !batch.is_empty() && !failed {
        let _ = apply(&node, &up, batch);
    }
    up.set_applied();
    if !up.is_stopped() {
        up.stop();
        node.upstream_lost(gen, code, &why);
    }
}

/// A transaction as read: seq, txid, operations.
type Received = (u64, String, Vec<StoreOp>);

/// Most transactions the reader applies in one batch.
const MAX_APPLY_BATCH: usize = 1024;

/// Applies one batch durably, then acknowledges it from this thread (sync mode on a relay:
/// once its sub-secondaries have it too). Applied even when the link is gone (it stopped):
/// what was fully received is made durable before the node reports NOPRIMARY or takes
/// another role. On a store error: a fault fail-stops the role (the link is stopped first,
/// so no loss is reported for it); anything else is returned (the link is then lost).
fn apply(node: &Arc<Node>, up: &Upstream, batch: Vec<Received>) -> Result<(), String> {
    {
        let mut cs = lock(&node.commit);
        let n = batch.len() as u64;
        let txns: Vec<(TxMeta, Vec<StoreOp>)> = batch
            .into_iter()
            .map(|(seq, txid, ops)| (TxMeta { seq, txid }, ops))
            .collect();
        // A relay forwards first, so its sub-secondaries apply in parallel.
        let down = cs.down.clone();
        let targets = down.as_ref().map(|d| d.forward(&txns)).unwrap_or_default();
        let last = txns.last().map(|t| t.0.clone()).unwrap_or_default();
        if let Err(e) = node.store.commit(&txns) {
            drop(cs);
            crate::error!("ha", "applying transactions up to {}: {e}", last.seq);
            if e.is_fault() {
                // Our disk, not the primary: leave the role with the local-store reason.
                up.stop();
                node.store_failed(&format!("applying transaction {}", last.seq), &e);
            }
            return Err(format!(
                "applying transactions up to {} failed: {e}",
                last.seq
            ));
        }
        cs.last = last.clone();
        cs.seq_floor = cs.seq_floor.max(last.seq);
        drop(cs);
        node.stats.txns_applied.fetch_add(n, Ordering::Relaxed);
        node.stats.last_txn_unix_ms.store(
            crate::node::unix_ms(std::time::Instant::now()) as u64,
            Ordering::Relaxed,
        );
        // Sync mode: a relay acknowledges once its sub-secondaries have the
        // transactions durable too (or were dropped), so a commit on the
        // primary returns when the whole tree has it. Half the primary's
        // deadline, so that a stalled sub-secondary is dropped here before
        // the primary gives up on the relay.
        if node.cfg.sync && !targets.is_empty() {
            if let Some(d) = &down {
                let _ = d.wait_acks(&targets, last.seq, node.cfg.ack_timeout() / 2);
            }
        }
        up.ack(last.seq);
    }
    Ok(())
}

/// What a full copy would discard of the local history.
struct Discard {
    /// The logged local transactions after the last common one, oldest first.
    txns: Vec<(TxMeta, Vec<StoreOp>)>,
    /// The last seq both histories share, if it was found.
    common: Option<u64>,
    /// Whether `txns` is everything the copy discards. False when the local log does not
    /// reach back to the common transaction (trimmed to `txlog-max-txns`, or emptied by an
    /// earlier full copy) or the common point cannot be established: then the complete local
    /// state goes to a state rollback file too.
    complete: bool,
}

/// The local transactions a full copy would discard: those after the last seq at which our
/// transaction log and the primary's `history` name the same txid (None: the local data is
/// in the primary's history, nothing is discarded).
fn discarded(
    node: &Node,
    last: &TxMeta,
    history: &[(u64, String)],
) -> Result<Option<Discard>, crate::store::StoreError> {
    if last.seq == 0
        || history
            .iter()
            .any(|(s, t)| *s == last.seq && *t == last.txid)
    {
        return Ok(None);
    }
    let theirs: std::collections::HashMap<u64, &str> =
        history.iter().map(|(s, t)| (*s, t.as_str())).collect();
    // From the first seq of the primary's history (it ends at the lower of the two last
    // seqs), so that everything committed here after the common transaction is named, however
    // far this node went on alone (bounded by its own log, txlog-max-txns).
    let lo = history
        .iter()
        .map(|(s, _)| *s)
        .min()
        .unwrap_or(last.seq)
        .min(
            last.seq
                .saturating_sub(crate::replication::external::primary::ROLLBACK_WINDOW_TXNS - 1),
        )
        .max(1);
    let mine = node.store.txlog_from(lo)?;
    let common = mine
        .iter()
        .rev()
        .find(|(m, _)| theirs.get(&m.seq) == Some(&m.txid.as_str()))
        .map(|(m, _)| m.seq);
    // Without a common transaction the itemised list is everything only if it starts at
    // seq 1 and runs without a gap to our last seq.
    let complete = common.is_some()
        || (mine.first().is_some_and(|(m, _)| m.seq == 1)
            && mine.last().is_some_and(|(m, _)| m.seq == last.seq)
            && mine.len() as u64 == last.seq);
    let txns: Vec<_> = mine
        .into_iter()
        .filter(|(m, _)| m.seq > common.unwrap_or(0))
        .collect();
    if !complete {
        // Only here is anything left unitemised: the state file written next (or the copy
        // refused if it cannot be) keeps it, so the message says so and nothing more.
        let why = if history.is_empty() {
            "the primary sent no history that reaches the local seqs"
        } else {
            "no transaction shared with the primary was found in it"
        };
        crate::warn!(
            "ha",
            "the local transaction log cannot itemise everything the full copy discards \
             ({why}; {} local transaction(s) itemised, local data at seq {} txid '{}'): the \
             complete local state goes to a state rollback file before the copy",
            txns.len(),
            last.seq,
            last.txid
        );
    }
    Ok(Some(Discard {
        txns,
        common,
        complete,
    }))
}

/// Writes the complete local state (as of `last`) to a state rollback file, streamed from a
/// store snapshot; returns its path and entry count.
fn write_rollback_state(
    node: &Node,
    primary: &str,
    reason: &str,
    last: &TxMeta,
    d: &Discard,
) -> Result<(std::path::PathBuf, u64), String> {
    let mut snap = node
        .store
        .snapshot()
        .map_err(|e| format!("cannot read the local store for a rollback file: {e}"))?;
    if snap.meta() != last {
        return Err(format!(
            "the local store moved (seq {} txid '{}', expected seq {} txid '{}') while writing \
             a rollback file",
            snap.meta().seq,
            snap.meta().txid,
            last.seq,
            last.txid
        ));
    }
    let itemised_from = d.txns.first().map(|(m, _)| m.seq).unwrap_or(last.seq + 1);
    let entries = snap.stats().entries;
    crate::rollback::write_state(
        &node.cfg.data_dir,
        &rollback_info(primary, reason, last, d.common),
        itemised_from,
        entries,
        || {
            snap.next_chunk(ROLLBACK_STATE_CHUNK_BYTES)
                .map_err(|e| format!("cannot read the local store for a rollback file: {e}"))
        },
    )
}

/// A state rollback file is streamed from the store in chunks of about this many bytes.
const ROLLBACK_STATE_CHUNK_BYTES: usize = 1 << 20;

fn rollback_info(
    primary: &str,
    reason: &str,
    last: &TxMeta,
    common: Option<u64>,
) -> crate::rollback::Info {
    crate::rollback::Info {
        reason: reason.to_string(),
        primary: primary.to_string(),
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64,
        local_seq: last.seq,
        local_txid: last.txid.clone(),
        common_seq: common,
    }
}

fn write_rollback(
    node: &Node,
    primary: &str,
    reason: &str,
    last: &TxMeta,
    txns: &[(TxMeta, Vec<StoreOp>)],
    common: Option<u64>,
) -> Result<std::path::PathBuf, String> {
    let info = rollback_info(primary, reason, last, common);
    let rb: Vec<crate::rollback::Txn> = txns
        .iter()
        .map(|(m, ops)| crate::rollback::Txn {
            seq: m.seq,
            txid: m.txid.clone(),
            ops: crate::store::ops_term(ops)
                .as_list()
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
        })
        .collect();
    crate::rollback::write(&node.cfg.data_dir, &info, &rb)
}
