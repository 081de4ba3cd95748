//! The clients: writers that commit unique keys through the data API and
//! record every acknowledged commit, a sampler that records what each node
//! says about itself, and the checks made after a scenario has healed.

use crate::cluster::{connect, data_client, PROBE_TIMEOUT};
use crate::framework::Shared;
use confd_ha::client::{recv, send, Stream};
use confd_ha::proto::data::{parse_reply, DataRequest, Op};
use confd_ha::proto::ha::STATE_PRIMARY;
use confd_ha::proto::hello::CLIENT_HADATA;
use confd_ha::value::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A commit reply slower than this is given up (outcome unknown).
pub const WRITER_REPLY_TIMEOUT: Duration = Duration::from_secs(8);
/// How often the sampler asks each node for its stats.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// A node that says PRIMARY and writable for this long while refusing every
/// write (at least [`ZOMBIE_MIN_ERRORS`] errors, no success) is a zombie.
pub const ZOMBIE_AFTER: Duration = Duration::from_secs(3);
pub const ZOMBIE_MIN_ERRORS: usize = 3;

/// One acknowledged commit.
#[derive(Debug, Clone)]
pub struct Ack {
    pub key: String,
    pub val: String,
    pub txid: String,
    pub node: usize,
    pub sent: Instant,
    pub acked: Instant,
}

/// A commit the node answered with an error (its outcome is unknown).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub node: usize,
    pub at: Instant,
    pub code: i32,
    pub reason: String,
}

/// What a node said about itself at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub node: usize,
    pub at: Instant,
    pub state: i64,
    pub writable: i64,
    pub store_failed: Option<i64>,
}

#[derive(Default)]
pub struct Load {
    pub acks: Mutex<Vec<Ack>>,
    pub refusals: Mutex<Vec<Refusal>>,
    pub samples: Mutex<Vec<Sample>>,
    /// Commits whose reply never came (connection lost, timeout).
    pub unknown: AtomicU64,
    pub stop: AtomicBool,
    pub stop_sampler: AtomicBool,
}

fn stat(st: &[(String, i64)], k: &str) -> Option<i64> {
    st.iter().find(|(n, _)| n == k).map(|(_, v)| *v)
}

/// Commits `/f/w<w>/k<n>` = "<tag>-<w>-<n>" one after the other to the
/// node the route names, until `load.stop`.
pub fn writer(w: usize, tag: String, ipc: Vec<String>, shared: Arc<Shared>, load: Arc<Load>) {
    let mut conn: Option<(usize, Stream)> = None;
    let mut n: u64 = 0;
    while !load.stop.load(Ordering::SeqCst) {
        let Some((node, mut s)) = conn.take() else {
            let Some(p) = shared.primary() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            match connect(&ipc[p], CLIENT_HADATA, PROBE_TIMEOUT) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(WRITER_REPLY_TIMEOUT));
                    conn = Some((p, s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
            continue;
        };
        n += 1;
        let key = format!("/f/w{w}/k{n:07}");
        let val = format!("{tag}-{w}-{n}");
        let req = DataRequest::Commit(vec![Op::Set(key.clone(), Value::Buf(val.clone().into()))]);
        let sent = {
            // Checked and sent under the route's read lock: once the
            // framework has moved the route, no new commit reaches the old node.
            let r = shared.route.read().unwrap();
            if r.primary != Some(node) && !r.stale_ok[node] {
                continue;
            }
            if send(&mut s, &req.to_term()).is_err() {
                load.unknown.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Instant::now()
        };
        match recv(&mut s).map(|t| parse_reply(&t)) {
            Ok(Some(Ok(t))) => {
                let txid = t
                    .as_binary()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                load.acks.lock().unwrap().push(Ack {
                    key,
                    val,
                    txid,
                    node,
                    sent,
                    acked: Instant::now(),
                });
                conn = Some((node, s));
            }
            Ok(Some(Err((code, reason)))) => {
                load.refusals.lock().unwrap().push(Refusal {
                    node,
                    at: Instant::now(),
                    code,
                    reason,
                });
                // Back off a little, then reconnect to wherever the route points.
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                load.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Records every node's `state`, `writable` and `store_failed` until stopped.
pub fn sampler(ipc: Vec<String>, load: Arc<Load>) {
    while !load.stop_sampler.load(Ordering::SeqCst) {
        std::thread::scope(|sc| {
            for (i, a) in ipc.iter().enumerate() {
                let load = &load;
                sc.spawn(move || {
                    let Ok(mut c) = data_client(a, PROBE_TIMEOUT) else {
                        return;
                    };
                    let Ok(st) = c.stats() else { return };
                    let at = Instant::now();
                    if let (Some(state), Some(writable)) =
                        (stat(&st, "state"), stat(&st, "writable"))
                    {
                        load.samples.lock().unwrap().push(Sample {
                            node: i,
                            at,
                            state,
                            writable,
                            store_failed: stat(&st, "store_failed"),
                        });
                    }
                });
            }
        });
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// Every leaf under /f on a node: path -> value.
pub fn dump(addr: &str) -> Result<BTreeMap<String, Value>, String> {
    let mut c = data_client(addr, Duration::from_secs(30))?;
    let mut out = BTreeMap::new();
    let ws = match c.list("/f") {
        Ok(w) => w,
        Err(e) if e.errno() == confd_ha::errcode::CONFD_ERR_NOEXISTS => return Ok(out),
        Err(e) => return Err(format!("list /f on {addr}: {e}")),
    };
    for w in ws {
        let dir = format!("/f/{w}");
        for k in c.list(&dir).map_err(|e| format!("list {dir}: {e}"))? {
            let p = format!("{dir}/{k}");
            let v = c.get(&p).map_err(|e| format!("get {p}: {e}"))?;
            out.insert(p, v);
        }
    }
    Ok(out)
}

/// The first differences between two dumps, for a failure message.
pub fn diff(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>, max: usize) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => d.push(format!("{k} only on the first")),
            Some(w) if w != v => d.push(format!("{k}: {v:?} vs {w:?}")),
            _ => {}
        }
        if d.len() >= max {
            return d;
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            d.push(format!("{k} only on the second"));
            if d.len() >= max {
                break;
            }
        }
    }
    d
}

/// Zombie primaries: a node that, for [`ZOMBIE_AFTER`] after a commit it
/// refused, says PRIMARY and writable in every sample while refusing every
/// commit sent to it (at least [`ZOMBIE_MIN_ERRORS`], no success).
pub fn zombies(load: &Load, names: &[String]) -> Vec<String> {
    let samples = load.samples.lock().unwrap().clone();
    let refusals = load.refusals.lock().unwrap().clone();
    let acks = load.acks.lock().unwrap();
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.node == i).collect();
        let mut checked_until: Option<Instant> = None;
        for r in refusals.iter().filter(|r| r.node == i) {
            // One window per 200 ms of refusals is enough.
            if checked_until.is_some_and(|t| r.at < t) {
                continue;
            }
            checked_until = Some(r.at + Duration::from_millis(200));
            let (from, to) = (r.at, r.at + ZOMBIE_AFTER);
            let window: Vec<&&Sample> =
                mine.iter().filter(|s| s.at >= from && s.at <= to).collect();
            // Enough samples to say "all the time", all of them PRIMARY and writable.
            let all_writable_primary = window.len() >= 5
                && window
                    .iter()
                    .all(|s| s.state == STATE_PRIMARY as i64 && s.writable == 1);
            if !all_writable_primary {
                continue;
            }
            let errs = refusals
                .iter()
                .filter(|x| x.node == i && x.at >= from && x.at <= to)
                .count();
            let ok = acks
                .iter()
                .any(|a| a.node == i && a.acked >= from && a.acked <= to);
            if errs >= ZOMBIE_MIN_ERRORS && !ok {
                out.push(format!(
                    "{name} said PRIMARY and writable for {:.1}s while refusing every write \
                     ({errs} errors, the first: {} '{}')",
                    ZOMBIE_AFTER.as_secs_f64(),
                    r.code,
                    r.reason
                ));
                break;
            }
        }
        // A node that counts a store failure must not say writable as primary.
        for s in mine.iter().copied() {
            if s.store_failed.unwrap_or(0) > 0 && s.state == STATE_PRIMARY as i64 && s.writable == 1
            {
                // Allowed only if the store was reopened: then later commits succeed.
                let reopened = acks.iter().any(|a| a.node == i && a.acked >= s.at);
                if !reopened {
                    out.push(format!(
                        "{name} counted store_failed {} yet said PRIMARY and writable, and \
                         acknowledged nothing afterwards",
                        s.store_failed.unwrap_or(0)
                    ));
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(state: i64, writable: i64, ack_inside: bool) -> Load {
        let l = Load::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for k in 0..50 {
            l.samples.lock().unwrap().push(Sample {
                node: 0,
                at: at(k * 100),
                state,
                writable,
                store_failed: None,
            });
        }
        for k in 0..10 {
            l.refusals.lock().unwrap().push(Refusal {
                node: 0,
                at: at(100 + k * 300),
                code: 18,
                reason: "store commit failed".into(),
            });
        }
        if ack_inside {
            // Some commits still succeed: one a second.
            for k in 0..5 {
                l.acks.lock().unwrap().push(Ack {
                    key: format!("/f/w0/k{k}"),
                    val: "v".into(),
                    txid: "t".into(),
                    node: 0,
                    sent: at(500 + k * 1000),
                    acked: at(500 + k * 1000),
                });
            }
        }
        l
    }

    #[test]
    fn zombie_detector_flags_a_writable_primary_that_refuses_everything() {
        let names = vec!["n1".to_string()];
        let z = zombies(&load_with(STATE_PRIMARY as i64, 1, false), &names);
        assert_eq!(z.len(), 1, "{z:?}");
        assert!(z[0].contains("n1 said PRIMARY and writable"), "{z:?}");
        // Not when it still acknowledges some, says not writable, or is not primary.
        assert!(zombies(&load_with(STATE_PRIMARY as i64, 1, true), &names).is_empty());
        assert!(zombies(&load_with(STATE_PRIMARY as i64, 0, false), &names).is_empty());
        assert!(zombies(&load_with(1, 1, false), &names).is_empty());
    }

    #[test]
    fn diff_names_missing_and_different_keys() {
        let a: BTreeMap<String, Value> = [("/f/a".to_string(), Value::Int32(1))].into();
        let b: BTreeMap<String, Value> = [("/f/b".to_string(), Value::Int32(1))].into();
        assert_eq!(diff(&a, &a, 5), Vec::<String>::new());
        assert_eq!(
            diff(&a, &b, 5),
            vec!["/f/a only on the first", "/f/b only on the second"]
        );
    }
}
