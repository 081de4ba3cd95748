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
use crate::primary::Downstream;
use crate::secondary::{self, Upstream};
use crate::store::{Store, TxMeta};
use confd_ha::client::Stream;
use confd_ha::errcode::*;
use confd_ha::proto::data::{NodeState, PeerState};
use confd_ha::proto::ha::{
    HaEvent, HaNode, HaReply, HaRequest, NodeAddr, STATE_NONE, STATE_PRIMARY, STATE_SECONDARY,
    STATE_SECONDARY_RELAY,
};
use confd_ha::value::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
pub struct Counters {
    pub full_copies_received: AtomicU64,
    pub full_copies_sent: AtomicU64,
    pub commits: AtomicU64,
    pub txns_applied: AtomicU64,
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
    pub commit: Mutex<CommitState>,
    pub commit_tx: Mutex<Option<Sender<CommitReq>>>,
    ha_conn: Mutex<Option<(u64, Stream)>>,
    token: Mutex<Arc<Vec<u8>>>,
    /// Random id of this process, sent when joining a primary, so that the
    /// primary can tell our re-join from another node using our node id.
    pub instance: Vec<u8>,
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
        Ok(Arc::new(Node {
            cfg,
            store,
            events: Arc::new(Events::new()),
            stats: Counters::default(),
            state: Mutex::new(HaState {
                gen: 0,
                role: Role::None,
            }),
            order: Mutex::new(()),
            gen_now: AtomicU64::new(0),
            commit: Mutex::new(CommitState {
                last,
                down: None,
                writable: true,
                refusal: String::new(),
                my_id: "none".into(),
            }),
            commit_tx: Mutex::new(None),
            ha_conn: Mutex::new(None),
            token: Mutex::new(Arc::new(Vec::new())),
            instance: crate::peer::nonce().map_err(|e| format!("node instance id: {e}"))?,
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

    pub fn state_code(&self) -> i32 {
        match &lock(&self.state).role {
            Role::None | Role::Joining { .. } => STATE_NONE,
            Role::Primary { .. } => STATE_PRIMARY,
            Role::Secondary { relay: None, .. } => STATE_SECONDARY,
            Role::Secondary { relay: Some(_), .. } => STATE_SECONDARY_RELAY,
        }
    }

    fn set_commit(
        &self,
        writable: bool,
        refusal: String,
        down: Option<Arc<Downstream>>,
        me: Option<&Value>,
    ) {
        let mut c = lock(&self.commit);
        c.writable = writable;
        c.refusal = refusal;
        c.down = down;
        if let Some(me) = me {
            c.my_id = id_str(me);
        }
    }

    /// Stops whatever the old role ran (listeners, peers, the upstream link).
    fn teardown(old: Role) {
        match old {
            Role::None | Role::Joining { .. } => {}
            Role::Primary { down, .. } => down.stop(),
            Role::Secondary { up, relay, .. } => {
                if let Some(r) = relay {
                    r.stop();
                }
                up.stop();
            }
        }
    }

    /// Handles one order; `None` means no reply (async besecondary).
    pub fn order(self: &Arc<Self>, req: HaRequest) -> Option<HaReply> {
        if req == HaRequest::GetStatus {
            return Some(self.get_status());
        }
        let _o = lock(&self.order);
        self.events.wait_synced();
        crate::debug!("ha", "order {req:?}");
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
        let (_, old) = self.switch_role(
            &mut lock(&self.state),
            Role::Primary {
                me: me.clone(),
                down: down.clone(),
            },
        );
        let was_secondary = matches!(old, Role::Secondary { .. });
        Self::teardown(old);
        self.set_commit(true, String::new(), Some(down), Some(&me));
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
        let (_, old) = self.switch_role(&mut lock(&self.state), Role::None);
        Self::teardown(old);
        self.set_commit(true, String::new(), None, None);
        crate::info!("ha", "this node is now NONE (benone)");
        self.events.emit(HaEvent::IsNone);
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
        self.set_commit(
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
                    self.set_commit(true, String::new(), None, None);
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
            let by_copy = j.by_copy;
            let up = j.start(self.clone(), gen);
            st.role = Role::Secondary {
                me: me.clone(),
                primary: primary.clone(),
                up,
                relay: None,
            };
            lock(&self.commit).refusal = secondary_refusal(&primary);
            Ok(by_copy)
        });
        match r {
            Ok(by_copy) => {
                crate::info!(
                    "ha",
                    "this node is now SECONDARY {me} of primary {} at {} ({})",
                    primary.id,
                    primary.addr,
                    if by_copy {
                        "initialized by a full copy"
                    } else {
                        "same transaction id, no copy"
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
                        self.switch_role(&mut st, Role::None);
                        drop(st);
                        self.set_commit(true, String::new(), None, None);
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
            self.switch_role(&mut st, Role::None).1
        };
        let primary = match &old {
            Role::Secondary { primary, .. } => format!("{} at {}", primary.id, primary.addr),
            _ => String::new(),
        };
        Self::teardown(old);
        self.set_commit(true, String::new(), None, None);
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
        let (peers, state) = {
            let st = lock(&self.state);
            let peers = match &st.role {
                Role::Primary { down, .. } => down.count(),
                Role::Secondary { relay: Some(r), .. } => r.count(),
                _ => 0,
            };
            (peers, st.gen)
        };
        let s = &self.stats;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        vec![
            ("full_copies_received", n(&s.full_copies_received)),
            ("full_copies_sent", n(&s.full_copies_sent)),
            ("commits", n(&s.commits)),
            ("txns_applied", n(&s.txns_applied)),
            ("seq", seq as i64),
            ("secondaries", peers as i64),
            ("state", self.state_code().into()),
            ("writable", i64::from(writable)),
            ("generation", state as i64),
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
            Role::Primary { me, down } => (Some(me.clone()), None, down.peer_states()),
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
                }),
                relay.as_ref().map(|r| r.peer_states()).unwrap_or_default(),
            ),
        };
        NodeState {
            state,
            node_id,
            primary,
            secondaries,
            seq,
            txid,
        }
    }

    /// Stops everything that listens or talks to peers (at shutdown).
    pub fn stop(&self) {
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
