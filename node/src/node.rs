//! The node: its HA role, the six HA orders with ConfD's semantics, and the
//! state shared by the committer, the primary side and the secondary side.
//!
//! Locks, always taken in this order: `order` (serialises role changes) →
//! `state` (the role, held briefly) → `commit` (last transaction, downstream,
//! writability; held by the committer / applier across one batch) →
//! `Downstream::peers`. Events are never emitted while `state` or `commit` is held.

use crate::commit::CommitReq;
use crate::config::Config;
use crate::events::Events;
use crate::replication::external::primary::Downstream;
use crate::replication::external::secondary::{self, Upstream};
use crate::store::{Store, TxMeta};
use confd_ha::client::Stream;
use confd_ha::errcode::*;
use confd_ha::proto::data::{NodeState, PeerState};
use confd_ha::proto::ha::{
    HaEvent, HaNode, HaReply, HaRequest, NodeAddr, STATE_NONE, STATE_PRIMARY, STATE_SECONDARY,
    STATE_SECONDARY_RELAY,
};
use confd_ha::value::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

/// The reason code of a failure of this node's own store: the NOPRIMARY event a secondary
/// sends when its store fails, and the error of a commit or an order refused for it. The
/// primary is never blamed (CONFD_ERR_HA_CLOSED) for the local disk.
pub const LOCAL_STORE_ERR: i32 = CONFD_ERR_OS;
/// The name in the txids of transactions committed in NONE: `none.` and the first 8 hex
/// digits of this process's random instance id. Node ids are unique among connected nodes;
/// this keeps two nodes in NONE (which have no node id) from naming different transactions
/// at the same seq and microsecond alike, since a txid must name one transaction forever
/// (a re-join's catch-up trusts equal (seq, txid) to mean equal history).
pub fn none_name(instance: &[u8]) -> String {
    let hex: String = instance
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("none.{hex}")
}

/// Exit status of `--on-store-error exit`.
pub const STORE_ERROR_EXIT_STATUS: i32 = 3;
/// After a store I/O error, how often the store is reopened until that works.
pub const STORE_REOPEN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2000);
/// The file in the data directory that remembers the highest seq ever given out, when a
/// commit failed after its transactions were sent (so that no seq names two transactions).
pub const SEQ_FLOOR_FILE: &str = "seq-floor";

#[derive(Default)]
pub struct Counters {
    pub full_copies_received: AtomicU64,
    pub full_copies_sent: AtomicU64,
    /// Re-joins served by sending only the missed transactions (primary or relay side).
    pub catch_ups_sent: AtomicU64,
    /// Re-joins of this node that received only the missed transactions.
    pub catch_ups_received: AtomicU64,
    pub commits: AtomicU64,
    pub txns_applied: AtomicU64,
    /// Local transactions discarded by re-joins since the start (kept in rollback files).
    pub discarded_txns: AtomicU64,
    /// Secondaries (or a relay's sub-secondaries) dropped since the start, for any reason.
    pub secondaries_dropped: AtomicU64,
    /// When the last transaction (or full copy) from a primary was applied here, in Unix ms
    /// (0: never).
    pub last_txn_unix_ms: AtomicU64,
    /// State rollback files written by re-joins since the start (complete local data before
    /// a copy whose discarded transactions the transaction log could not itemise).
    pub rollback_snapshots: AtomicU64,
}

/// What the committer and the applier need under one lock.
pub struct CommitState {
    /// The last transaction made durable here.
    pub last: TxMeta,
    /// Where committed transactions are streamed (primary or relay).
    pub down: Option<Arc<Downstream>>,
    /// Writes allowed (NONE and PRIMARY); else `refusal` says why.
    pub writable: bool,
    pub refusal: String,
    /// This node's id, for transaction ids.
    pub my_id: String,
    /// The highest seq ever given to a transaction here (>= `last.seq`; higher after a
    /// commit that failed): the next transaction gets the seq after it.
    pub seq_floor: u64,
    /// The transaction the last full copy received by this process brought: the store's
    /// transaction log holds only the ones after it, so a secondary whose last transaction is
    /// exactly this one can still catch up from here (None: no copy since the start).
    pub copy_base: Option<TxMeta>,
}

pub enum Role {
    None,
    Primary {
        me: Value,
        down: Arc<Downstream>,
    },
    /// besecondary in progress (reported as NONE, not writable).
    #[allow(dead_code)]
    Joining {
        me: Value,
        primary: HaNode,
    },
    Secondary {
        me: Value,
        primary: HaNode,
        up: Arc<Upstream>,
        relay: Option<Arc<Downstream>>,
    },
}

pub struct HaState {
    /// Bumped by every role change; background threads act only on their own generation.
    pub gen: u64,
    pub role: Role,
}

pub struct Node {
    pub cfg: Config,
    pub store: Arc<Store>,
    pub events: Arc<Events>,
    pub stats: Counters,
    pub state: Mutex<HaState>,
    order: Mutex<()>,
    /// Mirror of `state.gen`, readable under the commit lock.
    pub gen_now: AtomicU64,
    /// Non-zero while the commit path is a PRIMARY's: that role's generation + 1. Written
    /// under the commit lock (with the commit path), read without it by data sessions (the
    /// committer holds the lock across a batch's fsync). A session opened to (or committing
    /// on) the primary is bound to it; once the node has left that PRIMARY role, the
    /// session's commits are refused (see [`crate::commit::CommitReq::session`]).
    pub primary_term_now: AtomicU64,
    pub commit: Mutex<CommitState>,
    pub commit_tx: Mutex<Option<Sender<CommitReq>>>,
    /// Committed batches waiting for their replies, in commit order.
    pub pipeline: crate::commit::Pipeline,
    ha_conn: Mutex<Option<(u64, Stream)>>,
    token: Mutex<Arc<Vec<u8>>>,
    /// Set when the store failed (why, naming the local store); cleared when it reopened.
    store_fault: Mutex<Option<String>>,
    /// min-secondaries was met at the last check (for the log line marking a change).
    min_met: AtomicBool,
    /// Random id of this process, sent when joining a primary, so that the
    /// primary can tell our re-join from another node using our node id.
    pub instance: Vec<u8>,
    /// Mutual TLS on the HA port (`ha-tls-*`); None: plain TCP.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// The token is weak: no TLS and shorter than tls::MIN_TOKEN_BYTES.
    short_token: AtomicBool,
    /// Set in Raft mode: the mode that manages the role (replication::Managed); unset,
    /// the node follows the external orders.
    pub managed: std::sync::OnceLock<Arc<dyn crate::replication::Managed>>,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn err(code: i32, reason: impl Into<String>) -> HaReply {
    HaReply::Error {
        code,
        reason: reason.into(),
    }
}

/// A node id as text (for logs and transaction ids).
pub fn id_str(v: &Value) -> String {
    v.to_string()
}

impl Node {
    pub fn new(cfg: Config, store: Arc<Store>) -> Result<Arc<Node>, String> {
        let last = store
            .last_tx()
            .map_err(|e| format!("cannot read the store's last transaction: {e}"))?;
        let seq_floor = std::fs::read_to_string(cfg.data_dir.join(SEQ_FLOOR_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .max(last.seq);
        let min_met = AtomicBool::new(cfg.min_secondaries == 0);
        let sync_timeout = cfg.info_sync_timeout;
        let tls = match &cfg.ha_tls {
            Some(f) => Some(Arc::new(crate::tls::Tls::load(f, cfg.ha_addr)?)),
            None => None,
        };
        let instance =
            crate::replication::peer::nonce().map_err(|e| format!("node instance id: {e}"))?;
        let none_name = none_name(&instance);
        Ok(Arc::new(Node {
            cfg,
            store,
            events: Arc::new(Events::with_sync_timeout(sync_timeout)),
            stats: Counters::default(),
            state: Mutex::new(HaState {
                gen: 0,
                role: Role::None,
            }),
            order: Mutex::new(()),
            gen_now: AtomicU64::new(0),
            primary_term_now: AtomicU64::new(0),
            commit: Mutex::new(CommitState {
                last,
                down: None,
                writable: true,
                refusal: String::new(),
                my_id: none_name,
                seq_floor,
                copy_base: None,
            }),
            commit_tx: Mutex::new(None),
            pipeline: Default::default(),
            ha_conn: Mutex::new(None),
            token: Mutex::new(Arc::new(Vec::new())),
            store_fault: Mutex::new(None),
            min_met,
            instance,
            tls,
            short_token: AtomicBool::new(false),
            managed: std::sync::OnceLock::new(),
        }))
    }

    pub fn token(&self) -> Arc<Vec<u8>> {
        lock(&self.token).clone()
    }

    /// A new HA control connection: closes the previous one and sets the token.
    /// Makes connection `id` the HA control connection and sets the token,
    /// closing the previous one. Connection ids grow in accept order, so a
    /// connection accepted earlier than the current one (its token frame
    /// merely arrived later) is the stale one: it is refused (false) and
    /// the current connection and token stay.
    pub fn set_ha_conn(&self, id: u64, s: Stream, token: Vec<u8>) -> bool {
        let mut c = lock(&self.ha_conn);
        if matches!(&*c, Some((cur, _)) if *cur > id) {
            return false;
        }
        let weak = crate::tls::token_is_weak(self.tls.is_some(), token.len(), id);
        self.short_token.store(weak, Ordering::Relaxed);
        *lock(&self.token) = Arc::new(token);
        if let Some((old, os)) = c.replace((id, s)) {
            crate::info!("ipc", "HA connection #{id} replaces HA connection #{old}");
            os.shutdown();
        }
        true
    }

    pub fn clear_ha_conn(&self, id: u64) {
        let mut c = lock(&self.ha_conn);
        if matches!(&*c, Some((i, _)) if *i == id) {
            *c = None;
        }
    }

    /// Why the local store is out of service, if it is.
    pub fn store_fault(&self) -> Option<String> {
        lock(&self.store_fault).clone()
    }

    /// The self-managing replication mode, if one runs (Raft).
    pub fn managed(&self) -> Option<&Arc<dyn crate::replication::Managed>> {
        self.managed.get()
    }

    pub fn state_code(&self) -> i32 {
        if let Some(m) = self.managed() {
            return m.state_code();
        }
        if self.store_fault().is_some() {
            // The role is being left (or was): never report PRIMARY on a failed store.
            return STATE_NONE;
        }
        match &lock(&self.state).role {
            Role::None | Role::Joining { .. } => STATE_NONE,
            Role::Primary { .. } => STATE_PRIMARY,
            Role::Secondary { relay: None, .. } => STATE_SECONDARY,
            Role::Secondary { relay: Some(_), .. } => STATE_SECONDARY_RELAY,
        }
    }

    /// Sets the commit path for the role of generation `gen`; does nothing when a newer role
    /// change has overtaken it (an upstream loss noticed while beprimary ran must not turn
    /// the new primary's commit path into NONE's: it then committed without replicating).
    fn set_commit(
        &self,
        gen: u64,
        writable: bool,
        refusal: String,
        down: Option<Arc<Downstream>>,
        me: Option<&Value>,
    ) {
        let fault = self.store_fault();
        let mut c = lock(&self.commit);
        if self.gen_now.load(Ordering::SeqCst) != gen {
            return;
        }
        c.writable = writable && fault.is_none();
        c.refusal = fault
            .map(|f| format!("{f}: writes are refused"))
            .unwrap_or(refusal);
        let term = if writable && down.is_some() {
            gen + 1
        } else {
            0
        };
        self.primary_term_now.store(term, Ordering::SeqCst);
        c.down = down;
        if let Some(me) = me {
            c.my_id = id_str(me);
        }
    }

    /// Stops whatever the old role ran (listeners, peers, the upstream link). A secondary's
    /// applier first makes every transaction it fully received durable.
    fn teardown(old: Role) {
        match old {
            Role::None | Role::Joining { .. } => {}
            Role::Primary { down, .. } => down.stop(),
            Role::Secondary { up, relay, .. } => {
                if let Some(r) = relay {
                    r.stop();
                }
                up.stop();
                up.wait_applied();
            }
        }
    }

    /// Before a role change on a primary or relay: stop taking new commits, then let the
    /// transactions already sent finish on the live secondaries (at most 3 ticks), so that
    /// stopping the downstream does not leave a sent commit unconfirmed.
    fn quiesce(&self, why: &str) {
        let down = match &lock(&self.state).role {
            Role::Primary { down, .. } => Some(down.clone()),
            Role::Secondary { relay: Some(r), .. } => Some(r.clone()),
            _ => None,
        };
        let Some(d) = down else { return };
        {
            let mut c = lock(&self.commit);
            c.writable = false;
            c.refusal = format!("node is changing its HA role ({why}): writes are refused");
        }
        d.drain(self.cfg.ack_timeout());
    }

    /// Why this node refuses to take a role, if it does (its store failed).
    fn refuse_role(&self, order: &str) -> Option<HaReply> {
        self.store_fault().map(|f| {
            crate::warn!("ha", "{order} refused: {f}");
            err(LOCAL_STORE_ERR, format!("{order} refused: {f}"))
        })
    }

    /// Whether min-secondaries is met now (always with 0; with N, only on a primary with at
    /// least N connected in-sync secondaries).
    pub fn min_secondaries_met(&self) -> bool {
        let n = self.cfg.min_secondaries;
        if n == 0 {
            return true;
        }
        match &lock(&self.state).role {
            Role::Primary { down, .. } => down.in_sync() >= n,
            _ => false,
        }
    }

    /// The set of in-sync secondaries changed: log when min-secondaries stops or starts
    /// being met.
    pub fn in_sync_changed(&self) {
        let n = self.cfg.min_secondaries;
        if n == 0 {
            return;
        }
        let met = self.min_secondaries_met();
        if self.min_met.swap(met, Ordering::SeqCst) != met {
            if met {
                crate::info!(
                    "ha",
                    "min-secondaries {n} met: {n} or more in-sync secondaries; writes are accepted"
                );
            } else {
                crate::warn!(
                    "ha",
                    "min-secondaries {n} not met: fewer than {n} in-sync secondaries; writes are refused"
                );
            }
        }
    }

    /// The store failed (`during` says doing what). Fail-stop: refuse writes and joins at
    /// once, leave the HA role (IS_NONE on a primary; NOPRIMARY with LOCAL_STORE_ERR, then
    /// IS_NONE, on a secondary), and reopen the store in the background until that works;
    /// or exit if configured so. Safe to call from the committer and the applier (the role
    /// change runs on its own thread: it may wait for them).
    pub fn store_failed(self: &Arc<Self>, during: &str, e: &crate::store::StoreError) {
        let reason = format!(
            "the local store {} failed ({during}): {e}",
            self.store.file().display()
        );
        {
            let mut f = lock(&self.store_fault);
            if f.is_some() {
                return;
            }
            *f = Some(reason.clone());
        }
        {
            let mut c = lock(&self.commit);
            c.writable = false;
            c.refusal = format!("{reason}: writes are refused");
        }
        crate::error!("store", "{reason}");
        if self.cfg.exit_on_store_error {
            crate::error!(
                "store",
                "exiting with status {STORE_ERROR_EXIT_STATUS} (on-store-error exit)"
            );
            std::process::exit(STORE_ERROR_EXIT_STATUS);
        }
        self.store.close();
        let node = self.clone();
        let spawned = std::thread::Builder::new()
            .name("store-fault".into())
            .spawn(move || node.store_fault_thread(reason));
        if let Err(e) = spawned {
            crate::error!("store", "cannot start the store-fault thread: {e}; exiting");
            std::process::exit(STORE_ERROR_EXIT_STATUS);
        }
    }

    fn store_fault_thread(self: Arc<Self>, reason: String) {
        {
            let _o = lock(&self.order);
            let (gen, old) = self.switch_role(&mut lock(&self.state), Role::None);
            let what = match &old {
                Role::Primary { .. } => Some(false),
                Role::Secondary { .. } => Some(true),
                _ => None,
            };
            Self::teardown(old);
            self.set_commit(gen, false, String::new(), None, None);
            match what {
                Some(true) => {
                    crate::warn!(
                        "ha",
                        "leaving the secondary role: {reason}; this node is now NONE"
                    );
                    self.events.emit(HaEvent::NoPrimary {
                        reason: LOCAL_STORE_ERR,
                    });
                    self.events.emit(HaEvent::IsNone);
                }
                Some(false) => {
                    crate::warn!(
                        "ha",
                        "leaving the primary role: {reason}; this node is now NONE"
                    );
                    self.events.emit(HaEvent::IsNone);
                }
                None => {}
            }
        }
        let mut tries = 0u64;
        loop {
            std::thread::sleep(STORE_REOPEN_INTERVAL);
            tries += 1;
            match self.store.reopen() {
                Ok(last) => {
                    let _o = lock(&self.order);
                    *lock(&self.store_fault) = None;
                    let none = matches!(lock(&self.state).role, Role::None);
                    {
                        let mut c = lock(&self.commit);
                        c.seq_floor = c.seq_floor.max(last.seq);
                        c.last = last.clone();
                        if none {
                            c.writable = true;
                            c.refusal.clear();
                        }
                    }
                    crate::info!(
                        "store",
                        "store {} reopened after the failure (last transaction {} '{}'); \
                         the node is in NONE and takes orders again",
                        self.store.file().display(),
                        last.seq,
                        last.txid
                    );
                    return;
                }
                Err(e) => {
                    if tries == 1 || tries.is_multiple_of(30) {
                        crate::warn!("store", "reopening the store failed (try {tries}): {e}");
                    }
                    self.store.close();
                }
            }
        }
    }

    /// Remembers (best effort, durably) that seqs up to `seq` were given out.
    pub fn save_seq_floor(&self, seq: u64) {
        let path = self.cfg.data_dir.join(SEQ_FLOOR_FILE);
        let r = std::fs::File::create(&path).and_then(|mut f| {
            use std::io::Write;
            writeln!(f, "{seq}")?;
            f.sync_all()
        });
        if let Err(e) = r {
            crate::warn!("store", "cannot write {}: {e}", path.display());
        }
    }

    /// Handles one order; `None` means no reply (async besecondary).
    pub fn order(self: &Arc<Self>, req: HaRequest) -> Option<HaReply> {
        if let Some(m) = self.managed() {
            if req == HaRequest::GetStatus {
                return Some(m.ha_status());
            }
            let why = m.order_refusal();
            crate::info!("ha", "order {req:?} refused: {why}");
            return Some(err(CONFD_ERR_BADSTATE, why));
        }
        if req == HaRequest::GetStatus {
            return Some(self.get_status());
        }
        let _o = lock(&self.order);
        self.events.wait_synced();
        crate::debug!("ha", "order {req:?}");
        match &req {
            HaRequest::BeNone => self.quiesce("benone"),
            HaRequest::BeSecondary { .. } => self.quiesce("besecondary"),
            HaRequest::BePrimary { .. }
                if !matches!(lock(&self.state).role, Role::Primary { .. }) =>
            {
                self.quiesce("beprimary")
            }
            _ => {}
        }
        Some(match req {
            HaRequest::GetStatus => self.get_status(),
            HaRequest::BePrimary { me } => self.beprimary(me),
            HaRequest::BeNone => self.benone(),
            HaRequest::SecondaryDead { node } => self.secondary_dead(&node),
            HaRequest::BeRelay => self.berelay(),
            HaRequest::BeSecondary {
                me,
                primary,
                wait_reply,
            } => return self.besecondary(me, primary, wait_reply),
        })
    }

    fn get_status(&self) -> HaReply {
        if self.store_fault().is_some() {
            return HaReply::Status {
                state: STATE_NONE,
                nodes: vec![],
            };
        }
        let st = lock(&self.state);
        let (state, nodes) = match &st.role {
            Role::None => (STATE_NONE, vec![]),
            // As ConfD: right after besecondary the node is SECONDARY of the
            // primary it was ordered to join (an async join still running).
            Role::Joining { primary, .. } => (STATE_SECONDARY, vec![primary.clone()]),
            Role::Primary { down, .. } => (STATE_PRIMARY, down.nodes()),
            Role::Secondary {
                primary,
                relay: None,
                ..
            } => (STATE_SECONDARY, vec![primary.clone()]),
            Role::Secondary {
                primary,
                relay: Some(r),
                ..
            } => {
                let mut n = vec![primary.clone()];
                n.extend(r.nodes());
                (STATE_SECONDARY_RELAY, n)
            }
        };
        HaReply::Status { state, nodes }
    }

    fn beprimary(self: &Arc<Self>, me: Value) -> HaReply {
        if let Some(r) = self.refuse_role("beprimary") {
            return r;
        }
        {
            let mut st = lock(&self.state);
            match &mut st.role {
                Role::Primary { me: cur, .. } => {
                    if *cur != me {
                        crate::warn!(
                            "ha",
                            "beprimary {me}: already primary as {cur}; keeping {cur}"
                        );
                    }
                    return HaReply::Ok;
                }
                // A relay gives up its listeners first (they use the same HA address).
                Role::Secondary { relay, .. } => {
                    if let Some(r) = relay.take() {
                        r.stop();
                    }
                }
                _ => {}
            }
        }
        let down = match Downstream::start(self.clone(), me.clone(), false) {
            Ok(d) => d,
            Err(e) => {
                crate::error!("ha", "beprimary {me}: {e}");
                return err(CONFD_ERR_HA_BIND, e);
            }
        };
        let (gen, old) = self.switch_role(
            &mut lock(&self.state),
            Role::Primary {
                me: me.clone(),
                down: down.clone(),
            },
        );
        let was_secondary = matches!(old, Role::Secondary { .. });
        Self::teardown(old);
        self.set_commit(gen, true, String::new(), Some(down), Some(&me));
        crate::info!(
            "ha",
            "this node is now PRIMARY {me}{} (last transaction seq {})",
            if was_secondary {
                ", promoted from secondary"
            } else {
                ""
            },
            lock(&self.commit).last.seq
        );
        self.events.emit(HaEvent::IsPrimary);
        self.in_sync_changed();
        HaReply::Ok
    }

    /// Installs `role` as a new generation (background threads of the old
    /// one stop acting); returns the new generation and the old role, which
    /// the caller tears down after releasing `state`.
    fn switch_role(&self, st: &mut HaState, role: Role) -> (u64, Role) {
        st.gen += 1;
        self.gen_now.store(st.gen, Ordering::SeqCst);
        (st.gen, std::mem::replace(&mut st.role, role))
    }

    fn benone(&self) -> HaReply {
        let (gen, old) = self.switch_role(&mut lock(&self.state), Role::None);
        Self::teardown(old);
        self.set_commit(gen, true, String::new(), None, None);
        // Transactions committed in NONE are named for no HA role (as at start), but for
        // this node process, so that no two nodes in NONE name two transactions alike.
        let mut c = lock(&self.commit);
        if self.gen_now.load(Ordering::SeqCst) == gen {
            c.my_id = none_name(&self.instance);
        }
        drop(c);
        crate::info!("ha", "this node is now NONE (benone)");
        self.events.emit(HaEvent::IsNone);
        self.in_sync_changed();
        HaReply::Ok
    }

    fn secondary_dead(&self, node: &Value) -> HaReply {
        let down = match &lock(&self.state).role {
            Role::Primary { down, .. } => Some(down.clone()),
            Role::Secondary { relay: Some(r), .. } => Some(r.clone()),
            _ => None,
        };
        match down {
            Some(d) if d.kill_by_id(node, "secondary_dead order") => {}
            _ => crate::info!(
                "ha",
                "secondary_dead {node}: no such secondary here; ignored"
            ),
        }
        HaReply::Ok
    }

    fn berelay(self: &Arc<Self>) -> HaReply {
        let me = match &lock(&self.state).role {
            Role::Secondary { relay: Some(_), .. } => return HaReply::Ok,
            Role::Secondary { me, .. } => me.clone(),
            _ => {
                return err(CONFD_ERR_BADSTATE, "berelay: node is not a secondary");
            }
        };
        let down = match Downstream::start(self.clone(), me.clone(), true) {
            Ok(d) => d,
            Err(e) => {
                crate::error!("ha", "berelay: {e}");
                return err(CONFD_ERR_HA_BIND, e);
            }
        };
        let mut st = lock(&self.state);
        match &mut st.role {
            Role::Secondary {
                relay, primary, up, ..
            } => {
                *relay = Some(down.clone());
                down.set_upstream(up.clone());
                let reason = relay_refusal(primary);
                lock(&self.commit).down = Some(down);
                lock(&self.commit).refusal = reason;
                crate::info!("ha", "this node is now SECONDARY_RELAY {me}");
                HaReply::Ok
            }
            _ => {
                drop(st);
                down.stop();
                err(CONFD_ERR_BADSTATE, "berelay: node is no longer a secondary")
            }
        }
    }

    fn besecondary(self: &Arc<Self>, me: Value, primary: HaNode, wait: bool) -> Option<HaReply> {
        if let Some(r) = self.refuse_role("besecondary") {
            if wait {
                return Some(r);
            }
            self.events.emit(HaEvent::BeSecondaryResult {
                result: LOCAL_STORE_ERR,
            });
            return None;
        }
        // Already a secondary of that primary: a relay drops its subs, else nothing to do.
        {
            let mut st = lock(&self.state);
            if let Role::Secondary {
                me: cur_me,
                primary: cur,
                up,
                relay,
            } = &mut st.role
            {
                if *cur == primary && *cur_me == me && !up.is_stopped() {
                    if let Some(r) = relay.take() {
                        crate::info!("ha", "besecondary: relay becomes a plain secondary; dropping its sub-secondaries");
                        r.stop();
                        lock(&self.commit).down = None;
                        lock(&self.commit).refusal = secondary_refusal(&primary);
                    }
                    drop(st);
                    return if wait {
                        Some(HaReply::Ok)
                    } else {
                        self.events.emit(HaEvent::BeSecondaryResult { result: 0 });
                        None
                    };
                }
            }
        }
        let (gen, old) = self.switch_role(
            &mut lock(&self.state),
            Role::Joining {
                me: me.clone(),
                primary: primary.clone(),
            },
        );
        Self::teardown(old);
        self.in_sync_changed();
        self.set_commit(
            gen,
            false,
            format!(
                "node is joining primary {} at {}: writes are refused",
                primary.id, primary.addr
            ),
            None,
            Some(&me),
        );
        crate::info!(
            "ha",
            "besecondary {me}: joining primary {} at {} ({})",
            primary.id,
            primary.addr,
            if wait { "waiting" } else { "async" }
        );
        if wait {
            let r = secondary::join(self, gen, &me, &primary);
            Some(self.finish_join(gen, me, primary, r, true))
        } else {
            let node = self.clone();
            let spawned = std::thread::Builder::new()
                .name("ha-join".into())
                .spawn(move || {
                    let r = secondary::join(&node, gen, &me, &primary);
                    node.finish_join(gen, me, primary, r, false);
                });
            if let Err(e) = spawned {
                crate::error!("ha", "cannot start a join thread: {e}");
                let mut st = lock(&self.state);
                if st.gen == gen {
                    st.role = Role::None;
                    drop(st);
                    self.set_commit(gen, true, String::new(), None, None);
                }
                self.events.emit(HaEvent::BeSecondaryResult {
                    result: CONFD_ERR_INTERNAL,
                });
            }
            None
        }
    }

    fn finish_join(
        self: &Arc<Self>,
        gen: u64,
        me: Value,
        primary: HaNode,
        r: Result<secondary::Joined, (i32, String)>,
        wait: bool,
    ) -> HaReply {
        let r = r.and_then(|j| {
            let mut st = lock(&self.state);
            if st.gen != gen {
                drop(st);
                j.abandon();
                return Err((
                    CONFD_ERR_HA_CLOSED,
                    "besecondary was superseded by another order".to_string(),
                ));
            }
            let (by_copy, caught_up) = (j.by_copy, j.caught_up);
            let up = j.start(self.clone(), gen);
            st.role = Role::Secondary {
                me: me.clone(),
                primary: primary.clone(),
                up,
                relay: None,
            };
            lock(&self.commit).refusal = secondary_refusal(&primary);
            Ok((by_copy, caught_up))
        });
        match r {
            Ok((by_copy, caught_up)) => {
                crate::info!(
                    "ha",
                    "this node is now SECONDARY {me} of primary {} at {} ({})",
                    primary.id,
                    primary.addr,
                    if by_copy {
                        "initialized by a full copy".to_string()
                    } else if caught_up > 0 {
                        format!("caught up {caught_up} missed transactions, no copy")
                    } else {
                        "same transaction id, no copy".to_string()
                    }
                );
                self.events.emit(HaEvent::SecondaryInitialized { by_copy });
                if !wait {
                    self.events.emit(HaEvent::BeSecondaryResult { result: 0 });
                }
                HaReply::Ok
            }
            Err((code, reason)) => {
                crate::error!(
                    "ha",
                    "besecondary {me} to {} at {} failed: {} ({reason})",
                    primary.id,
                    primary.addr,
                    name(code).unwrap_or("?")
                );
                {
                    let mut st = lock(&self.state);
                    if st.gen == gen {
                        let (gen, _) = self.switch_role(&mut st, Role::None);
                        drop(st);
                        self.set_commit(gen, true, String::new(), None, None);
                    }
                }
                if !wait {
                    self.events
                        .emit(HaEvent::BeSecondaryResult { result: code });
                }
                err(code, reason)
            }
        }
    }

    /// The link to the primary of generation `gen` is gone: back to NONE.
    pub fn upstream_lost(&self, gen: u64, code: i32, why: &str) {
        let old = {
            let mut st = lock(&self.state);
            if st.gen != gen || !matches!(st.role, Role::Secondary { .. }) {
                return;
            }
            self.switch_role(&mut st, Role::None)
        };
        let (gen, old) = old;
        let primary = match &old {
            Role::Secondary { primary, .. } => format!("{} at {}", primary.id, primary.addr),
            _ => String::new(),
        };
        Self::teardown(old);
        self.set_commit(gen, true, String::new(), None, None);
        if self.gen_now.load(Ordering::SeqCst) != gen {
            // An order (beprimary, besecondary) came while the old link was torn down:
            // the node is in that order's role now, and says so, not NONE.
            crate::info!(
                "ha",
                "lost primary {primary}: {why} ({}); a newer HA order has already replaced                  the secondary role",
                name(code).unwrap_or("?")
            );
            return;
        }
        crate::warn!(
            "ha",
            "lost primary {primary}: {why} ({}); this node is now NONE",
            name(code).unwrap_or("?")
        );
        self.events.emit(HaEvent::NoPrimary { reason: code });
        self.events.emit(HaEvent::IsNone);
    }

    /// Counters for the `{stats}` data request.
    pub fn stats_list(&self) -> Vec<(&'static str, i64)> {
        let c = lock(&self.commit);
        let (seq, writable) = (c.last.seq, c.writable);
        drop(c);
        let store_failed = self.store_fault().is_some();
        let min_met = self.min_secondaries_met();
        let (peers, state) = {
            let st = lock(&self.state);
            let peers = match &st.role {
                Role::Primary { down, .. } => down.count(),
                Role::Secondary { relay: Some(r), .. } => r.count(),
                _ => 0,
            };
            (peers, st.gen)
        };
        let lags: Vec<_> = self
            .node_state()
            .secondaries
            .into_iter()
            .filter_map(|p| p.lag)
            .collect();
        let last_txn = self.stats.last_txn_unix_ms.load(Ordering::Relaxed) as i64;
        let now_ms = unix_ms(std::time::Instant::now());
        let s = &self.stats;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        vec![
            ("full_copies_received", n(&s.full_copies_received)),
            ("full_copies_sent", n(&s.full_copies_sent)),
            ("catch_ups_received", n(&s.catch_ups_received)),
            ("catch_ups_sent", n(&s.catch_ups_sent)),
            ("commits", n(&s.commits)),
            ("store_log_fdatasyncs", self.store.log_syncs() as i64),
            ("store_checkpoints", self.store.checkpoints() as i64),
            ("txns_applied", n(&s.txns_applied)),
            ("seq", seq as i64),
            ("secondaries", peers as i64),
            ("state", self.state_code().into()),
            (
                "writable",
                match self.managed() {
                    Some(m) => i64::from(m.check_writable().is_ok() && !store_failed),
                    None => i64::from(
                        writable && !store_failed && (min_met || self.cfg.min_secondaries == 0),
                    ),
                },
            ),
            ("generation", state as i64),
            ("min_secondaries", self.cfg.min_secondaries as i64),
            ("min_secondaries_met", i64::from(min_met)),
            ("store_failed", i64::from(store_failed)),
            ("discarded_txns", n(&s.discarded_txns)),
            ("secondaries_dropped", n(&s.secondaries_dropped)),
            (
                "secondaries_copying",
                lags.iter().filter(|l| l.copying).count() as i64,
            ),
            (
                "secondaries_in_sync",
                lags.iter().filter(|l| !l.copying).count() as i64,
            ),
            (
                "max_lag_txns",
                lags.iter().map(|l| l.lag_txns).max().unwrap_or(0),
            ),
            (
                "max_lag_ms",
                lags.iter().map(|l| l.lag_ms).max().unwrap_or(0),
            ),
            ("catch_ups", lags.iter().map(|l| l.catch_ups).sum()),
            (
                "last_txn_ms_ago",
                if last_txn > 0 {
                    (now_ms - last_txn).max(0)
                } else {
                    -1
                },
            ),
            ("rollback_snapshots", n(&s.rollback_snapshots)),
            (
                "rollback_files",
                crate::rollback::list(&self.cfg.data_dir).len() as i64,
            ),
            (
                "short_token",
                i64::from(self.short_token.load(Ordering::Relaxed)),
            ),
        ]
    }

    /// The availability-group view of this node (`{node_state}`).
    pub fn node_state(&self) -> NodeState {
        let (seq, txid) = {
            let c = lock(&self.commit);
            (c.last.seq as i64, c.last.txid.clone())
        };
        let state = self.state_code();
        let st = lock(&self.state);
        let (node_id, primary, secondaries) = match &st.role {
            Role::None => (None, None, vec![]),
            Role::Joining { me, .. } => (Some(me.clone()), None, vec![]),
            Role::Primary { me, down } => (Some(me.clone()), None, down.peer_states(seq as u64)),
            Role::Secondary {
                me,
                primary,
                up,
                relay,
            } => (
                Some(me.clone()),
                Some(PeerState {
                    node: primary.clone(),
                    last_tick_ms: Some(unix_ms(*lock(&up.last_rx))),
                    lag: None,
                }),
                relay
                    .as_ref()
                    .map(|r| r.peer_states(seq as u64))
                    .unwrap_or_default(),
            ),
        };
        let last_txn_ms = match (
            primary.is_some(),
            self.stats.last_txn_unix_ms.load(Ordering::Relaxed),
        ) {
            (true, t) if t > 0 => Some(t as i64),
            _ => None,
        };
        let ns = NodeState {
            state,
            node_id,
            primary,
            secondaries,
            seq,
            txid,
            last_txn_ms,
        };
        match self.managed() {
            Some(m) => m.node_state(ns),
            None => ns,
        }
    }

    /// Stops everything that listens or talks to peers (at shutdown), after letting the
    /// commits already sent finish.
    pub fn stop(&self) {
        if let Some(m) = self.managed() {
            m.stop();
        }
        self.quiesce("shutdown");
        let (_, old) = self.switch_role(&mut lock(&self.state), Role::None);
        Self::teardown(old);
    }
}

/// An `Instant` in the past as Unix milliseconds.
pub fn unix_ms(t: std::time::Instant) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(t.elapsed()).as_millis() as i64
}

pub fn secondary_refusal(p: &HaNode) -> String {
    format!(
        "node is a secondary: writes are refused (primary is {} at {})",
        p.id, p.addr
    )
}

pub fn relay_refusal(p: &HaNode) -> String {
    format!(
        "node is a relay secondary: writes are refused (primary is {} at {})",
        p.id, p.addr
    )
}

/// The address a peer connected from, as reported in status and events.
pub fn node_addr(a: std::net::SocketAddr) -> NodeAddr {
    match a.ip() {
        std::net::IpAddr::V4(v) => NodeAddr::V4(v),
        std::net::IpAddr::V6(v) => match v.to_ipv4_mapped() {
            Some(v4) => NodeAddr::V4(v4),
            None => NodeAddr::V6(v),
        },
    }
}
