//! A small HA framework, as a real one would be written against the
//! library's Rust client (`confd_ha::client::ha`): it watches every node,
//! promotes the secondary with the highest seq when the primary is dead (or
//! has left its role), re-points the others (besecondary), demotes a second
//! primary (split brain), re-joins nodes that came back, and does planned
//! switchovers (benone on the old primary, beprimary on the new).
//!
//! It also owns the clients' route (the "virtual IP"): which node new
//! connections go to.

use crate::cluster::{ha_client, ORDER_TIMEOUT, PROBE_TIMEOUT};
use confd_ha::client::data::DataClient;
use confd_ha::client::ha::HaClient;
use confd_ha::proto::data::NodeState;
use confd_ha::proto::ha::{HaNode, STATE_NONE, STATE_PRIMARY, STATE_SECONDARY};
use confd_ha::value::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A primary that does not answer for this long is dead.
pub const PRIMARY_DEAD_AFTER: Duration = Duration::from_millis(1500);
/// A second primary is demoted after it has been seen for this long (a real
/// framework notices late; this lets split brain happen).
pub const SPLIT_BRAIN_NOTICE_AFTER: Duration = Duration::from_millis(1000);
/// Least time between two re-join attempts of one node.
pub const REJOIN_EVERY: Duration = Duration::from_millis(500);
/// How often the framework looks.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// Where the clients' requests go.
#[derive(Debug, Clone)]
pub struct Route {
    /// The node new connections go to (None while a switchover moves it).
    pub primary: Option<usize>,
    /// Clients already connected to these nodes keep using them even when
    /// they are no longer the primary (stale clients of a deposed primary:
    /// the split-brain scenarios).
    pub stale_ok: Vec<bool>,
}

pub struct Shared {
    pub route: RwLock<Route>,
    /// The framework cannot reach these nodes (it is on the other side of a
    /// partition), though the clients can.
    pub cut_off: Vec<AtomicBool>,
    /// What the framework did, with times (printed on failure).
    pub actions: Mutex<Vec<(Instant, String)>>,
    pub t0: Instant,
}

impl Shared {
    pub fn new(n: usize) -> Arc<Shared> {
        Arc::new(Shared {
            route: RwLock::new(Route {
                primary: None,
                stale_ok: vec![false; n],
            }),
            cut_off: (0..n).map(|_| AtomicBool::new(false)).collect(),
            actions: Mutex::new(Vec::new()),
            t0: Instant::now(),
        })
    }
    pub fn note(&self, what: String) {
        self.actions.lock().unwrap().push((Instant::now(), what));
    }
    pub fn primary(&self) -> Option<usize> {
        self.route.read().unwrap().primary
    }
    pub fn history(&self) -> String {
        self.actions
            .lock()
            .unwrap()
            .iter()
            .map(|(t, w)| format!("  {:>7.3}s {w}", (*t - self.t0).as_secs_f64()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub struct Framework {
    pub shared: Arc<Shared>,
    names: Vec<String>,
    ipc: Vec<String>,
    me: Vec<HaNode>,
    ha: Vec<Option<HaClient>>,
    /// The node the framework made primary.
    pub primary: usize,
    dead_since: Option<Instant>,
    dup_since: Vec<Option<Instant>>,
    last_rejoin: Vec<Option<Instant>>,
    pub failovers: u32,
}

fn name_of(v: &Value) -> String {
    match v {
        Value::Buf(b) => String::from_utf8_lossy(b).into_owned(),
        v => format!("{v:?}"),
    }
}

impl Framework {
    pub fn new(shared: Arc<Shared>, names: Vec<String>, ipc: Vec<String>, me: Vec<HaNode>) -> Self {
        let n = names.len();
        Framework {
            shared,
            names,
            ipc,
            me,
            ha: (0..n).map(|_| None).collect(),
            primary: 0,
            dead_since: None,
            dup_since: vec![None; n],
            last_rejoin: vec![None; n],
            failovers: 0,
        }
    }

    fn n(&self) -> usize {
        self.names.len()
    }

    /// One HA order on node `i` over its cached control connection.
    fn order<T>(
        &mut self,
        i: usize,
        what: &str,
        f: impl FnOnce(&mut HaClient) -> confd_ha::error::Result<T>,
    ) -> Result<T, String> {
        if self.shared.cut_off[i].load(Ordering::SeqCst) {
            return Err(format!("{} is cut off from the framework", self.names[i]));
        }
        if self.ha[i].is_none() {
            let c = ha_client(&self.ipc[i], PROBE_TIMEOUT)?;
            let _ = c.stream.set_read_timeout(Some(ORDER_TIMEOUT));
            self.ha[i] = Some(c);
        }
        let r = f(self.ha[i].as_mut().expect("connected"));
        let r = r.map_err(|e| format!("{what} on {}: {e}", self.names[i]));
        if r.is_err() {
            self.ha[i] = None;
        }
        self.shared.note(format!(
            "{what} on {}: {}",
            self.names[i],
            match &r {
                Ok(_) => "ok".to_string(),
                Err(e) => e.clone(),
            }
        ));
        r
    }

    fn beprimary(&mut self, i: usize) -> Result<(), String> {
        let me = self.names[i].clone();
        self.order(i, "beprimary", |h| h.beprimary(&me))
    }

    fn besecondary(&mut self, i: usize, p: usize) -> Result<(), String> {
        let me = self.names[i].clone();
        let prim = self.me[p].clone();
        self.last_rejoin[i] = Some(Instant::now());
        self.order(i, &format!("besecondary to {}", self.names[p]), |h| {
            h.besecondary(&me, &prim, true)
        })
    }

    fn benone(&mut self, i: usize) -> Result<(), String> {
        self.order(i, "benone", |h| h.benone())
    }

    /// Probes every node in parallel (None: no answer in time).
    pub fn probe_all(&self) -> Vec<Option<NodeState>> {
        let cut: Vec<bool> = self
            .shared
            .cut_off
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect();
        std::thread::scope(|s| {
            let hs: Vec<_> = self
                .ipc
                .iter()
                .zip(cut)
                .map(|(a, cut)| {
                    s.spawn(move || {
                        if cut {
                            return None;
                        }
                        let mut c: DataClient =
                            crate::cluster::data_client(a, PROBE_TIMEOUT).ok()?;
                        c.node_state().ok()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(None)).collect()
        })
    }

    /// Makes `p` primary and the others its secondaries (the cluster's start).
    pub fn start(&mut self, p: usize) -> Result<(), String> {
        self.beprimary(p)?;
        self.primary = p;
        for i in 0..self.n() {
            if i != p {
                self.besecondary(i, p)?;
            }
        }
        self.set_route(Some(p));
        Ok(())
    }

    fn set_route(&self, p: Option<usize>) {
        let mut r = self.shared.route.write().unwrap();
        r.primary = p;
        drop(r);
        self.shared.note(format!(
            "clients now go to {}",
            p.map(|p| self.names[p].clone())
                .unwrap_or_else(|| "nobody".into())
        ));
    }

    /// One round: look at every node, act on what is wrong.
    pub fn step(&mut self) {
        let st = self.probe_all();
        let p = self.primary;
        let primary_ok = matches!(&st[p], Some(s) if s.state == STATE_PRIMARY);
        if !primary_ok {
            let gone = st[p].is_none();
            let since = *self.dead_since.get_or_insert_with(Instant::now);
            // Unreachable: wait PRIMARY_DEAD_AFTER. Reachable but no longer
            // primary (it left its role, e.g. on a store fault): at once.
            if !gone || since.elapsed() >= PRIMARY_DEAD_AFTER {
                self.failover(&st, if gone { "no answer" } else { "left its role" });
            }
            return;
        }
        self.dead_since = None;
        for (i, s) in st.iter().enumerate() {
            if i == p {
                continue;
            }
            let Some(s) = s else {
                self.dup_since[i] = None;
                continue;
            };
            if s.state == STATE_PRIMARY {
                let since = *self.dup_since[i].get_or_insert_with(Instant::now);
                if since.elapsed() >= SPLIT_BRAIN_NOTICE_AFTER {
                    self.demote(i, p);
                }
                continue;
            }
            self.dup_since[i] = None;
            let follows_p = s.state == STATE_SECONDARY
                && s.primary.as_ref().map(|x| name_of(&x.node.id)) == Some(self.names[p].clone());
            if !follows_p && self.last_rejoin[i].is_none_or(|t| t.elapsed() >= REJOIN_EVERY) {
                let _ = self.besecondary(i, p);
            }
        }
    }

    /// Ends split brain: `i` (a second primary) joins `p`; its clients are
    /// no longer let through.
    fn demote(&mut self, i: usize, p: usize) {
        self.shared.note(format!(
            "split brain: {} is primary too; demoting it",
            self.names[i]
        ));
        self.shared.route.write().unwrap().stale_ok[i] = false;
        let _ = self.besecondary(i, p);
    }

    /// Promotes the reachable node with the highest seq.
    fn failover(&mut self, st: &[Option<NodeState>], why: &str) {
        let old = self.primary;
        let mut cands: Vec<(i64, usize)> = (0..self.n())
            .filter(|&i| i != old)
            .filter_map(|i| st[i].as_ref().map(|s| (s.seq, i)))
            .collect();
        // Highest seq first; ties by node order.
        cands.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        if cands.is_empty() {
            return;
        }
        self.shared.note(format!(
            "primary {} is dead ({why}); candidates (seq, node) {:?}",
            self.names[old],
            cands
                .iter()
                .map(|(s, i)| (*s, self.names[*i].clone()))
                .collect::<Vec<_>>()
        ));
        // The dead primary's clients are no longer routed anywhere.
        self.set_route(None);
        for (_, c) in cands {
            if self.beprimary(c).is_ok() {
                self.primary = c;
                self.failovers += 1;
                self.dead_since = None;
                for (i, s) in st.iter().enumerate() {
                    if i != c && i != old && s.is_some() {
                        let _ = self.besecondary(i, c);
                    }
                }
                self.set_route(Some(c));
                return;
            }
        }
    }

    /// Planned switchover from the current primary to `to`: clients are
    /// held, benone on the old primary, beprimary on the new, the others
    /// (the old primary too) join it.
    pub fn switchover(&mut self, to: usize) -> Result<(), String> {
        let old = self.primary;
        assert_ne!(old, to);
        self.set_route(None);
        self.benone(old)?;
        // Promote only a node that has everything the old primary had: the
        // chosen one, else the one with the highest seq if it is as far,
        // else the old primary again (the switchover is called off).
        let st = self.probe_all();
        let seq = |i: usize| st[i].as_ref().map_or(-1, |s| s.seq);
        let target = if seq(to) >= seq(old) {
            to
        } else {
            let best = (0..self.n())
                .filter(|&i| i != old)
                .max_by_key(|&i| seq(i))
                .filter(|&i| seq(i) >= seq(old))
                .unwrap_or(old);
            self.shared.note(format!(
                "switchover: {} is at seq {} behind {} at {}; promoting {} instead",
                self.names[to],
                seq(to),
                self.names[old],
                seq(old),
                self.names[best]
            ));
            best
        };
        self.beprimary(target)?;
        self.primary = target;
        self.set_route(Some(target));
        for i in 0..self.n() {
            if i != target {
                let _ = self.besecondary(i, target);
            }
        }
        Ok(())
    }

    /// Whether the cluster is whole: the primary is PRIMARY, every other
    /// node its SECONDARY, all at the same transaction.
    pub fn settled(&self) -> Result<(), String> {
        let st = self.probe_all();
        let p = self.primary;
        let ps = st[p]
            .as_ref()
            .ok_or_else(|| format!("primary {} does not answer", self.names[p]))?;
        if ps.state != STATE_PRIMARY {
            return Err(format!("{} is in state {}", self.names[p], ps.state));
        }
        for (i, s) in st.iter().enumerate() {
            if i == p {
                continue;
            }
            let s = s
                .as_ref()
                .ok_or_else(|| format!("{} does not answer", self.names[i]))?;
            if s.state != STATE_SECONDARY {
                return Err(format!(
                    "{} is in state {}{}",
                    self.names[i],
                    s.state,
                    if s.state == STATE_NONE { " (NONE)" } else { "" }
                ));
            }
            if (s.seq, &s.txid) != (ps.seq, &ps.txid) {
                return Err(format!(
                    "{} is at seq {} '{}', the primary at {} '{}'",
                    self.names[i], s.seq, s.txid, ps.seq, ps.txid
                ));
            }
        }
        Ok(())
    }
}

/// Runs `step` every [`POLL_EVERY`] until `stop`.
pub fn run(fw: Arc<Mutex<Framework>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("framework".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                fw.lock().unwrap().step();
                std::thread::sleep(POLL_EVERY);
            }
        })
        .expect("framework thread")
}
