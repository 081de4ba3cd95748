//! The event manager (client id 11): any number of subscribers, each with its
//! own bounded queue and writer thread, one ordered stream of HA events, the
//! HA_INFO_SYNC hold, and heartbeats.
//!
//! HA_INFO_SYNC: an event is delivered at once; the *next* HA event (and the
//! next HA order, see `wait_synced`) waits until every HA_INFO_SYNC subscriber
//! has acknowledged all events it was sent, or has gone away. So a caller that
//! reads the event and acknowledges it later in the same thread never deadlocks,
//! and the next role change is held until the ack.

use confd_ha::client::Stream;
use confd_ha::proto::frame::write_frame;
use confd_ha::proto::ha::{
    ha_sync_ack, heartbeat_term_for, legacy_ha_sync_ack, HaEvent, Subscription, NOTIF_HA_INFO,
    NOTIF_HA_INFO_SYNC, NOTIF_HEARTBEAT,
};
use confd_ha::proto::term::Term;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Events queued per subscriber before it is dropped as not reading.
pub const QUEUE_LEN: usize = 4096;
/// A subscriber whose socket write blocks this long is dropped (ConfD: 15 s).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

struct Sub {
    id: u64,
    who: String,
    ha: bool,
    sync: bool,
    /// Frames for the writer; `None` tells it to stop.
    tx: SyncSender<Option<Arc<Vec<u8>>>>,
    /// HA events sent to it / acknowledged by it (HA_INFO_SYNC).
    sent: AtomicU64,
    acked: AtomicU64,
    gone: AtomicBool,
    stream: Stream,
}

impl Sub {
    fn drop_it(&self, why: &str) {
        if !self.gone.swap(true, Ordering::SeqCst) {
            crate::warn!("events", "dropping event subscriber {}: {why}", self.who);
        }
        self.stream.shutdown();
    }
}

pub struct Events {
    subs: Mutex<Vec<Arc<Sub>>>,
    cv: Condvar,
    emit_lock: Mutex<()>,
    next_id: AtomicU64,
    /// Longest an HA_INFO_SYNC subscriber may hold HA processing
    /// (`info-sync-timeout`); then it is dropped.
    sync_timeout: Duration,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    pub fn new() -> Events {
        Events::with_sync_timeout(Duration::from_secs(30))
    }

    pub fn with_sync_timeout(sync_timeout: Duration) -> Events {
        Events {
            subs: Mutex::new(Vec::new()),
            cv: Condvar::new(),
            emit_lock: Mutex::new(()),
            next_id: AtomicU64::new(0),
            sync_timeout,
        }
    }

    /// Waits until every HA_INFO_SYNC subscriber has acknowledged every event it
    /// was sent (or went away). One that has not within `info-sync-timeout`
    /// is dropped with a WARN, and HA processing goes on. Returns whether it
    /// had to wait.
    pub fn wait_synced(&self) -> bool {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        let start = Instant::now();
        let mut warned = 0u64;
        let mut held = false;
        loop {
            let pending: Vec<&Arc<Sub>> = subs
                .iter()
                .filter(|s| {
                    s.sync
                        && !s.gone.load(Ordering::SeqCst)
                        && s.acked.load(Ordering::SeqCst) < s.sent.load(Ordering::SeqCst)
                })
                .collect();
            if pending.is_empty() {
                return held;
            }
            held = true;
            if start.elapsed() >= self.sync_timeout {
                for p in pending {
                    p.drop_it(&format!(
                        "no ha_sync_ack within {} ms (info-sync-timeout); HA processing goes on",
                        self.sync_timeout.as_millis()
                    ));
                }
                self.cv.notify_all();
                continue;
            }
            let waited = start.elapsed().as_secs() / 15;
            if waited > warned {
                warned = waited;
                crate::warn!(
                    "events",
                    "HA processing held for {} s waiting for ha_sync_ack from {}",
                    start.elapsed().as_secs(),
                    pending
                        .iter()
                        .map(|s| s.who.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            subs = self
                .cv
                .wait_timeout(subs, Duration::from_millis(500))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sends an HA event to every HA_INFO subscriber, in order with all others.
    pub fn emit(&self, ev: HaEvent) {
        let _g = self.emit_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.wait_synced();
        crate::info!("events", "HA event {}", describe(&ev));
        let frame = Arc::new(ev.to_term().encode());
        let subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        for s in subs
            .iter()
            .filter(|s| s.ha && !s.gone.load(Ordering::SeqCst))
        {
            s.sent.fetch_add(1, Ordering::SeqCst);
            match s.tx.try_send(Some(frame.clone())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => s.drop_it("its event queue is full (not reading)"),
                Err(TrySendError::Disconnected(_)) => s.drop_it("its writer stopped"),
            }
        }
    }

    fn remove(&self, id: u64) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| s.id != id);
        self.cv.notify_all();
    }

    /// Serves one subscriber connection after a hello of protocol version
    /// `proto_vsn`: reads the subscription (the 4-tuple of ConfD 6.x or the
    /// 5-tuple with verbosity, whatever the version) by `until` (the hello's
    /// deadline), replies `ok`, then streams events (heartbeats in that
    /// version's shape) until the peer goes.
    pub fn serve(
        self: &Arc<Self>,
        mut stream: Stream,
        who: String,
        proto_vsn: u16,
        until: Instant,
    ) {
        let sub = match crate::ipc::recv_small(&mut stream, Some(until)) {
            Ok(t) => match Subscription::from_term(&t) {
                Some(s) => s,
                None => {
                    crate::warn!(
                        "events",
                        "{who}: bad subscription {}; closing",
                        crate::replication::peer::short(&t)
                    );
                    let _ = confd_ha::client::send(
                        &mut stream,
                        &confd_ha::proto::ha::error_term(
                            confd_ha::errcode::CONFD_ERR_PROTOUSAGE,
                            "bad subscription term",
                        ),
                    );
                    return;
                }
            },
            Err(e) => {
                crate::warn!("events", "{who}: no subscription: {e}; closing");
                return;
            }
        };
        let _ = stream.set_read_timeout(None);
        let ha = sub.mask & (NOTIF_HA_INFO | NOTIF_HA_INFO_SYNC) != 0;
        let sync = sub.mask & NOTIF_HA_INFO_SYNC != 0;
        let hb = (sub.mask & NOTIF_HEARTBEAT != 0)
            .then(|| Duration::from_millis(sub.heartbeat_ms.max(1000) as u64));
        let (Ok(wstream), Ok(sstream)) = (stream.try_clone(), stream.try_clone()) else {
            crate::warn!("events", "{who}: cannot clone the socket");
            return;
        };
        match &wstream {
            Stream::Tcp(t) => {
                let _ = t.set_write_timeout(Some(WRITE_TIMEOUT));
            }
            Stream::Unix(u) => {
                let _ = u.set_write_timeout(Some(WRITE_TIMEOUT));
            }
        }
        let (tx, rx) = sync_channel(QUEUE_LEN);
        let s = Arc::new(Sub {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            who: who.clone(),
            ha,
            sync,
            tx,
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            gone: AtomicBool::new(false),
            stream: sstream,
        });
        // `emit` delivers to all subscribers under this lock, so the stream
        // starts at an event boundary (without waiting for a held HA_INFO_SYNC).
        self.subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.clone());
        // Registered before the reply: every event after `ok` is in the stream.
        if let Err(e) = confd_ha::client::send(&mut stream, &Term::ok()) {
            crate::warn!("events", "{who}: {e}");
            s.gone.store(true, Ordering::SeqCst);
            self.remove(s.id);
            return;
        }
        crate::info!(
            "events",
            "{who}: subscribed, mask {:#x}{}{}",
            sub.mask,
            if sync { " (HA_INFO_SYNC)" } else { "" },
            hb.map(|d| format!(", heartbeat every {} ms", d.as_millis()))
                .unwrap_or_default()
        );
        let ws = s.clone();
        let writer = std::thread::Builder::new()
            .name("ev-writer".into())
            .spawn(move || writer(wstream, rx, hb, ws, proto_vsn));
        if writer.is_err() {
            crate::error!("events", "{who}: cannot start a writer thread");
            self.remove(s.id);
            return;
        }
        // Reader: acknowledgements, or the end of the connection. The
        // acknowledgement is the bare atom `ha_synced` (what ConfD's libraries
        // send, in any atom encoding). libconfd_ha 0.1 sent
        // `{0, ha_info_synced}`; it is still taken (with a warning), which is
        // harmless: no other sender uses that term, and a program statically
        // linked with the old library keeps working instead of being cut off.
        // Anything else closes the socket, as ConfD does (its socket's events
        // and any HA_INFO_SYNC hold on it end with it).
        let ack = ha_sync_ack();
        let legacy_ack = legacy_ha_sync_ack();
        let mut warned_legacy = false;
        loop {
            match crate::ipc::recv_small(&mut stream, None) {
                Ok(t) if t == ack || t == legacy_ack => {
                    if t == legacy_ack && !warned_legacy {
                        warned_legacy = true;
                        crate::warn!(
                            "events",
                            "{who}: acknowledges HA events with {{0,ha_info_synced}} (libconfd_ha 0.1); accepted, but ConfD would close this socket"
                        );
                    }
                    s.acked.fetch_add(1, Ordering::SeqCst);
                    let _g = self.subs.lock().unwrap_or_else(|e| e.into_inner());
                    self.cv.notify_all();
                }
                Ok(t) => {
                    crate::warn!(
                        "events",
                        "{who}: unexpected message {} (the HA_INFO_SYNC acknowledgement is ha_synced); closing, as ConfD does",
                        crate::replication::peer::short(&t)
                    );
                    break;
                }
                Err(e) => {
                    if !s.gone.load(Ordering::SeqCst) {
                        if e == "closed" {
                            crate::info!("events", "{who}: subscriber closed its socket");
                        } else {
                            crate::warn!("events", "{who}: {e}; closing");
                        }
                    }
                    break;
                }
            }
        }
        s.gone.store(true, Ordering::SeqCst);
        s.stream.shutdown();
        // Wake the writer now, whatever its heartbeat interval: it holds a
        // descriptor and a thread until it sees this. A full queue means it
        // is writing, and its write fails on the shut-down socket.
        let _ = s.tx.try_send(None);
        self.remove(s.id);
    }
}

fn writer(
    mut s: Stream,
    rx: Receiver<Option<Arc<Vec<u8>>>>,
    hb: Option<Duration>,
    sub: Arc<Sub>,
    proto_vsn: u16,
) {
    let hb_frame = heartbeat_term_for(proto_vsn).encode();
    let mut next_hb = hb.map(|d| Instant::now() + d);
    loop {
        if sub.gone.load(Ordering::SeqCst) {
            break;
        }
        let msg = match next_hb {
            Some(t) => {
                let now = Instant::now();
                if now >= t {
                    if let Err(e) = write_frame(&mut s, &hb_frame) {
                        sub.drop_it(&format!("heartbeat write failed: {e}"));
                        break;
                    }
                    next_hb = hb.map(|d| t.max(now - d) + d);
                    continue;
                }
                match rx.recv_timeout(t - now) {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        if let Err(e) = write_frame(&mut s, &msg) {
            let why = if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                format!(
                    "a write blocked for more than {} s",
                    WRITE_TIMEOUT.as_secs()
                )
            } else {
                format!("write failed: {e}")
            };
            sub.drop_it(&why);
            break;
        }
    }
}

pub fn describe(ev: &HaEvent) -> String {
    match ev {
        HaEvent::NoPrimary { reason } => format!(
            "NOPRIMARY ({})",
            confd_ha::errcode::name(*reason).unwrap_or("?")
        ),
        HaEvent::SecondaryDied(n) => format!("SECONDARY_DIED {} at {}", n.id, n.addr),
        HaEvent::SecondaryArrived(n) => format!("SECONDARY_ARRIVED {} at {}", n.id, n.addr),
        HaEvent::SecondaryInitialized { by_copy } => {
            format!("SECONDARY_INITIALIZED (by copy: {by_copy})")
        }
        HaEvent::IsPrimary => "IS_PRIMARY".into(),
        HaEvent::IsNone => "IS_NONE".into(),
        HaEvent::BeSecondaryResult { result } => format!("BESECONDARY_RESULT {result}"),
        HaEvent::Unknown { info_type, .. } => format!("HA_INFO type {info_type}"),
    }
}
