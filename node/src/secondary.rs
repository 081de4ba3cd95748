//! The receiving side of replication: joining a primary (or relay), the full
//! copy, then the reader thread (ticks, ordered txns) and the applier thread
//! (group apply, durable, then ack; a relay forwards to its subs first).

use crate::node::{lock, Node};
use crate::peer::{
    nonce, proof, verify_proof, writer_loop, FrameReader, Out, PeerMsg, ReadErr, WriterState,
    HA_PROTO_VSN, HA_PROTO_VSN_MIN,
};
use crate::store::{StoreOp, TxMeta};
use confd_ha::errcode::*;
use confd_ha::proto::ha::{HaNode, NodeAddr};
use confd_ha::value::Value;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The link to our primary.
#[allow(dead_code)]
pub struct Upstream {
    pub who: String,
    stream: TcpStream,
    tx: Sender<Out>,
    stopped: AtomicBool,
    pub last_rx: Mutex<Instant>,
    /// The node-to-node protocol version agreed with the primary.
    vsn: i64,
}

impl Upstream {
    /// A relay reports the nodes now behind it (protocol version 2 on; an
    /// older primary does not know the message and is not sent it).
    pub fn report_subs(&self, nodes: Vec<HaNode>) {
        if self.vsn >= 2 && !self.is_stopped() {
            let _ = self.tx.send(Out::Frame(Arc::new(
                PeerMsg::SubSecondaries(nodes).encode(),
            )));
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
    /// Cuts the link without stopping: the reader then reports the loss.
    fn cut(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
    fn ack(&self, seq: u64) {
        let _ = self
            .tx
            .send(Out::Frame(Arc::new(PeerMsg::Ack(seq).encode())));
    }
}

/// A completed join, not yet installed as the node's role.
pub struct Joined {
    pub by_copy: bool,
    stream: TcpStream,
    ctl: TcpStream,
    fr: FrameReader,
    tx: Sender<Out>,
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

    /// Starts the reader and applier threads for generation `gen`.
    pub fn start(self, node: Arc<Node>, gen: u64) -> Arc<Upstream> {
        let up = Arc::new(Upstream {
            who: self.who,
            stream: self.ctl,
            tx: self.tx,
            stopped: AtomicBool::new(false),
            last_rx: Mutex::new(Instant::now()),
            vsn: self.vsn,
        });
        let (atx, arx) = channel::<(u64, String, Vec<StoreOp>)>();
        let (n1, u1) = (node.clone(), up.clone());
        let stream = self.stream;
        let fr = self.fr;
        let next = self.next_seq;
        let r1 = std::thread::Builder::new()
            .name("ha-up-rd".into())
            .spawn(move || reader(n1, u1, gen, stream, fr, next, atx));
        let (n2, u2) = (node.clone(), up.clone());
        let r2 = std::thread::Builder::new()
            .name("ha-apply".into())
            .spawn(move || applier(n2, u2, arx));
        if r1.is_err() || r2.is_err() {
            crate::error!("ha", "cannot start the secondary's threads");
            up.stop();
        }
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
    let recv = |fr: &mut FrameReader, deadline: Instant| -> Result<PeerMsg, (i32, String)> {
        match fr.read_until(&s, deadline) {
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
                format!("primary {pname} sent nothing for {} ms", hs.as_millis()),
            )),
            Err(ReadErr::Closed) => Err((
                CONFD_ERR_HA_CLOSED,
                format!("primary {pname} closed the connection"),
            )),
            Err(e) => Err((CONFD_ERR_HA_CLOSED, format!("primary {pname}: {e}"))),
        }
    };
    let ns = nonce().map_err(|e| (CONFD_ERR_OS, e.to_string()))?;
    send(&PeerMsg::Hello {
        vsn: offer,
        nonce: ns.clone(),
    })?;
    let token = node.token();
    let (np, vsn) = match recv(&mut fr, Instant::now() + hs)? {
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
                return Err((
                    CONFD_ERR_HA_BADTOKEN,
                    format!("token mismatch: primary {pname} does not hold our token"),
                ));
            }
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
    let (copy, wseq) = match recv(&mut fr, Instant::now() + hs)? {
        PeerMsg::Welcome { copy, seq, txid } => {
            if !copy && (seq != last.seq || txid != last.txid) {
                return Err((
                    CONFD_ERR_HA_CLOSED,
                    format!("protocol error: primary {pname} skipped the copy for a different transaction"),
                ));
            }
            (copy, seq)
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
    std::thread::Builder::new()
        .name("ha-up-wr".into())
        .spawn(move || writer_loop(ws, rx, tick, Arc::new(WriterState::default()), wwho))
        .map_err(|e| (CONFD_ERR_OS, format!("cannot start a thread: {e}")))?;
    let fail = |tx: &Sender<Out>, e: (i32, String)| {
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = tx.send(Out::Stop);
        e
    };
    let next_seq;
    if copy {
        let t0 = Instant::now();
        let w = node.store.begin_copy().map_err(|e| {
            fail(
                &tx,
                (CONFD_ERR_INTERNAL, format!("cannot start the copy: {e}")),
            )
        })?;
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
                Some(Ok(Err(e))) => Err(format!("full copy from {pname}: {e}")),
                _ => Err("the copy thread failed".to_string()),
            }
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
            match recv(&mut fr, Instant::now() + silence) {
                Ok(PeerMsg::Tick) => {}
                Ok(PeerMsg::CopyChunk(c)) => {
                    entries += c.len();
                    let sent = ctx.as_ref().map(|t| t.send(c).is_ok()).unwrap_or(false);
                    if !sent {
                        let e = match finish_staging(&mut ctx) {
                            Err(e) => e,
                            Ok(_) => "the copy thread stopped".into(),
                        };
                        return Err(fail(&tx, (CONFD_ERR_INTERNAL, e)));
                    }
                }
                Ok(PeerMsg::CopyDone { seq, txid }) => {
                    let meta = TxMeta { seq, txid };
                    let w =
                        finish_staging(&mut ctx).map_err(|e| fail(&tx, (CONFD_ERR_INTERNAL, e)))?;
                    let mut cs = lock(&node.commit);
                    if node.gen_now.load(Ordering::SeqCst) != gen {
                        drop(cs);
                        return Err(fail(
                            &tx,
                            (CONFD_ERR_HA_CLOSED, "superseded by another order".into()),
                        ));
                    }
                    w.finish(&meta).map_err(|e| {
                        fail(
                            &tx,
                            (CONFD_ERR_INTERNAL, format!("full copy from {pname}: {e}")),
                        )
                    })?;
                    cs.last = meta;
                    drop(cs);
                    next_seq = seq + 1;
                    node.stats
                        .full_copies_received
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(Out::Frame(Arc::new(PeerMsg::Ack(seq).encode())));
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
    } else {
        next_seq = wseq + 1;
    }
    crate::debug!("ha", "joined {pname} at {addr}");
    let ctl = s
        .try_clone()
        .map_err(|e| fail(&tx, (CONFD_ERR_OS, format!("socket: {e}"))))?;
    Ok(Joined {
        by_copy: copy,
        ctl,
        stream: s,
        fr,
        tx,
        next_seq,
        who,
        vsn,
    })
}

fn reader(
    node: Arc<Node>,
    up: Arc<Upstream>,
    gen: u64,
    s: TcpStream,
    mut fr: FrameReader,
    mut next: u64,
    atx: Sender<(u64, String, Vec<StoreOp>)>,
) {
    let dead_after = node.cfg.dead_after();
    let poll = node
        .cfg
        .tick
        .map(|t| (t / 10).max(Duration::from_millis(5)));
    let _ = s.set_read_timeout(poll);
    let mut last = Instant::now();
    let mut r = &s;
    let (code, why) = loop {
        match fr.poll(&mut r) {
            Ok(Some(f)) => {
                last = Instant::now();
                *lock(&up.last_rx) = last;
                match PeerMsg::decode(&f) {
                    Ok(PeerMsg::Tick) => {}
                    Ok(PeerMsg::Txn { seq, txid, ops }) => {
                        if seq != next {
                            break (
                                CONFD_ERR_HA_CLOSED,
                                format!(
                                    "protocol error: transaction {seq} arrived, expected {next}"
                                ),
                            );
                        }
                        next += 1;
                        if atx.send((seq, txid, ops)).is_err() {
                            break (CONFD_ERR_HA_CLOSED, "the applier stopped".into());
                        }
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
            if last.elapsed() > d {
                break (
                    CONFD_ERR_HA_NOTICK,
                    format!("no ticks from the primary for {} ms", d.as_millis()),
                );
            }
        }
    };
    drop(atx);
    if !up.is_stopped() {
        up.stop();
        node.upstream_lost(gen, code, &why);
    }
}

fn applier(node: Arc<Node>, up: Arc<Upstream>, rx: Receiver<(u64, String, Vec<StoreOp>)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(t) => batch.push(t),
                Err(_) => break,
            }
        }
        let mut cs = lock(&node.commit);
        if up.is_stopped() {
            break;
        }
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
            up.cut();
            return;
        }
        cs.last = last.clone();
        drop(cs);
        node.stats.txns_applied.fetch_add(n, Ordering::Relaxed);
        // Sync mode: a relay acknowledges once its sub-secondaries have the
        // transactions durable too (or were dropped), so a commit on the
        // primary returns when the whole tree has it. Half the primary's
        // deadline, so that a stalled sub-secondary is dropped here before
        // the primary gives up on the relay.
        if node.cfg.sync && !targets.is_empty() {
            if let Some(d) = &down {
                d.wait_acks(&targets, last.seq, node.cfg.ack_timeout() / 2);
            }
        }
        up.ack(last.seq);
    }
}
