//! Prometheus metrics (`--metrics-addr`, off by default): `GET /metrics` answers with the
//! OpenMetrics text of the node's role, seq, per-secondary lag and state, commit latency,
//! copies, dropped secondaries and connection counts (the README lists every series).
//!
//! The listener is bounded so that it is no attack surface: at most
//! [`MAX_METRICS_CONNECTIONS`] requests are served at once (more are closed at accept),
//! a request must arrive whole within [`METRICS_READ_DEADLINE_MS`] and in at most
//! [`MAX_METRICS_REQUEST_BYTES`], the reply is written within
//! [`METRICS_WRITE_DEADLINE_MS`], one request per connection, and only `GET /metrics` is
//! served (other paths 404, other methods 405, anything malformed 400). The series are built
//! from the node's state at each scrape; nothing a client sends is stored.

use crate::node::{lock, Node, Role};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// Most metrics requests served at once; more connections are closed at accept.
pub const MAX_METRICS_CONNECTIONS: usize = 4;
/// A request (line and headers) must arrive whole within this many milliseconds.
pub const METRICS_READ_DEADLINE_MS: u64 = 2_000;
/// The reply must be written within this many milliseconds.
pub const METRICS_WRITE_DEADLINE_MS: u64 = 5_000;
/// Largest request (line and headers) read, in bytes; a larger one gets 400.
pub const MAX_METRICS_REQUEST_BYTES: usize = 8_192;
/// Most headers parsed in a request.
pub const MAX_METRICS_HEADERS: usize = 32;
/// Commit latency buckets: upper bounds from this many seconds, doubling.
const COMMIT_LATENCY_FIRST_BUCKET_S: f64 = 0.000_25;
/// ... this many of them (0.25 ms .. about 8 s, then +Inf).
const COMMIT_LATENCY_BUCKETS: u16 = 16;

/// Time from a client's commit request reaching the committer's queue to its successful
/// reply (local durability, plus the secondaries' acks in sync mode).
pub static COMMIT_LATENCY: LazyLock<Histogram> = LazyLock::new(|| {
    Histogram::new(exponential_buckets(
        COMMIT_LATENCY_FIRST_BUCKET_S,
        2.0,
        COMMIT_LATENCY_BUCKETS,
    ))
});

static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Connections closed at accept because MAX_METRICS_CONNECTIONS were being served.
static REFUSED: AtomicU64 = AtomicU64::new(0);

struct Active;
impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Binds the metrics address (an error names it).
pub fn bind(a: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(a).map_err(|e| format!("cannot bind metrics address {a}: {e}"))
}

/// Accepts scrapes forever.
pub fn serve(node: Arc<Node>, l: TcpListener) {
    for s in l.incoming() {
        let Ok(s) = s else {
            // EMFILE and the like: do not spin.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if ACTIVE.fetch_add(1, Ordering::SeqCst) >= MAX_METRICS_CONNECTIONS {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            REFUSED.fetch_add(1, Ordering::Relaxed);
            continue; // dropped: closed
        }
        let active = Active;
        let n = node.clone();
        let _ = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                let _a = active;
                handle(&n, s);
            });
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq)]
enum Ask {
    Metrics,
    Status(u16, &'static str),
}

/// Parses a request head; None: incomplete.
fn parse(buf: &[u8]) -> Option<Ask> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_METRICS_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(Ask::Status(400, "Bad Request")),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            Some(if req.method != Some("GET") {
                Ask::Status(405, "Method Not Allowed")
            } else if path != "/metrics" {
                Ask::Status(404, "Not Found")
            } else {
                Ask::Metrics
            })
        }
    }
}

fn handle(node: &Node, mut s: TcpStream) {
    let deadline = Instant::now() + Duration::from_millis(METRICS_READ_DEADLINE_MS);
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let ask = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Ask::Status(408, "Request Timeout");
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(a) = parse(&buf) {
                    break a;
                }
                if buf.len() > MAX_METRICS_REQUEST_BYTES {
                    break Ask::Status(400, "Bad Request");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break Ask::Status(408, "Request Timeout")
            }
            Err(_) => return,
        }
    };
    let (status, reason, ctype, body) = match ask {
        Ask::Metrics => (
            200,
            "OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(node),
        ),
        Ask::Status(c, r) => (c, r, "text/plain; charset=utf-8", format!("{r}\n")),
    };
    let _ = s.set_write_timeout(Some(Duration::from_millis(METRICS_WRITE_DEADLINE_MS)));
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body.as_bytes());
    let _ = s.flush();
    let _ = s.shutdown(std::net::Shutdown::Write);
}

type Labels = Vec<(&'static str, String)>;

fn gauge(r: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    r.register(name, help, g);
}

fn fgauge(r: &mut Registry, name: &str, help: &str, v: f64) {
    let g: Gauge<f64, AtomicU64> = Gauge::default();
    g.set(v);
    r.register(name, help, g);
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    r.register(name, help, c);
}

/// Registers a mode's samples, one family per name (in the order first seen).
fn mode_series(r: &mut Registry, samples: Vec<crate::replication::ModeSample>) {
    let mut gauges: Vec<(&'static str, &'static str, Family<Labels, Gauge>)> = Vec::new();
    let mut counters: Vec<(&'static str, &'static str, Family<Labels, Counter>)> = Vec::new();
    for s in samples {
        if s.counter {
            let i = match counters.iter().position(|(n, _, _)| *n == s.name) {
                Some(i) => i,
                None => {
                    counters.push((s.name, s.help, Family::default()));
                    counters.len() - 1
                }
            };
            counters[i]
                .2
                .get_or_create(&s.labels)
                .inc_by(s.value.max(0) as u64);
        } else {
            let i = match gauges.iter().position(|(n, _, _)| *n == s.name) {
                Some(i) => i,
                None => {
                    gauges.push((s.name, s.help, Family::default()));
                    gauges.len() - 1
                }
            };
            gauges[i].2.get_or_create(&s.labels).set(s.value);
        }
    }
    for (n, h, f) in gauges {
        r.register(n, h, f);
    }
    for (n, h, f) in counters {
        r.register(n, h, f);
    }
}

/// The OpenMetrics text of the node's state now.
pub fn render(node: &Node) -> String {
    let mut r = Registry::with_prefix("ha_node");
    let stats: std::collections::HashMap<&str, i64> = node.stats_list().into_iter().collect();
    let st = |k: &str| stats.get(k).copied().unwrap_or(0);
    let ns = node.node_state();

    let roles: Family<Labels, Gauge> = Family::default();
    for (code, name) in [
        (confd_ha::proto::ha::STATE_NONE, "none"),
        (confd_ha::proto::ha::STATE_SECONDARY, "secondary"),
        (confd_ha::proto::ha::STATE_PRIMARY, "primary"),
        (
            confd_ha::proto::ha::STATE_SECONDARY_RELAY,
            "secondary-relay",
        ),
    ] {
        roles
            .get_or_create(&vec![("role", name.to_string())])
            .set(i64::from(ns.state == code));
    }
    r.register("role", "1 for the node's current HA role, else 0", roles);
    gauge(
        &mut r,
        "writable",
        "1 when the node accepts commits (primary or none, min-secondaries met, store ok)",
        st("writable"),
    );
    gauge(
        &mut r,
        "seq",
        "Seq of the last transaction durable here",
        ns.seq,
    );
    let upstream = match &lock(&node.state).role {
        Role::Secondary { .. } => 1,
        _ => 0,
    };
    gauge(
        &mut r,
        "secondaries",
        "Secondaries (or a relay's sub-secondaries) connected to this node",
        ns.secondaries.len() as i64,
    );
    gauge(
        &mut r,
        "ha_connections",
        "Node-to-node connections: connected secondaries plus 1 for a link to a primary",
        ns.secondaries.len() as i64 + upstream,
    );
    gauge(
        &mut r,
        "ipc_connections",
        "Client IPC connections being served",
        crate::ipc::live_connections() as i64,
    );
    gauge(
        &mut r,
        "metrics_connections",
        "Metrics requests being served (this one included)",
        ACTIVE.load(Ordering::SeqCst) as i64,
    );
    counter(
        &mut r,
        "metrics_refused_connections",
        "Metrics connections closed at accept (MAX_METRICS_CONNECTIONS busy)",
        REFUSED.load(Ordering::Relaxed),
    );
    let n = |k: &str| st(k).max(0) as u64;
    counter(
        &mut r,
        "commits",
        "Transactions committed here as primary",
        n("commits"),
    );
    counter(
        &mut r,
        "store_log_fdatasyncs",
        "fdatasyncs of the store's commit log (one per group commit)",
        n("store_log_fdatasyncs"),
    );
    counter(
        &mut r,
        "store_checkpoints",
        "Checkpoints of the store's tree (durable redb commits)",
        n("store_checkpoints"),
    );
    counter(
        &mut r,
        "transactions_applied",
        "Transactions applied here from a primary",
        n("txns_applied"),
    );
    counter(
        &mut r,
        "full_copies_sent",
        "Full copies sent to secondaries",
        n("full_copies_sent"),
    );
    counter(
        &mut r,
        "full_copies_received",
        "Full copies received from a primary",
        n("full_copies_received"),
    );
    counter(
        &mut r,
        "catch_ups_sent",
        "Re-joining secondaries sent only the transactions they missed",
        n("catch_ups_sent"),
    );
    counter(
        &mut r,
        "catch_ups_received",
        "Re-joins of this node that received only the transactions it missed",
        n("catch_ups_received"),
    );
    counter(
        &mut r,
        "secondaries_dropped",
        "Secondaries dropped (dead, disconnected, cut off) since the start",
        n("secondaries_dropped"),
    );
    if let Some(t) = ns.last_txn_ms {
        fgauge(
            &mut r,
            "last_transaction_age_seconds",
            "On a secondary: seconds since the last transaction from the primary was applied",
            (crate::node::unix_ms(Instant::now()) - t).max(0) as f64 / 1000.0,
        );
    }
    r.register(
        "commit_latency_seconds",
        "Time from a commit request to its successful reply",
        COMMIT_LATENCY.clone(),
    );

    if let Some(m) = node.managed() {
        mode_series(&mut r, m.metrics());
    }

    let acked: Family<Labels, Gauge> = Family::default();
    let lag_txns: Family<Labels, Gauge> = Family::default();
    let lag_s: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
    let tick_s: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
    let in_sync: Family<Labels, Gauge> = Family::default();
    let copies: Family<Labels, Counter> = Family::default();
    let catch_ups: Family<Labels, Counter> = Family::default();
    let now = crate::node::unix_ms(Instant::now());
    for p in &ns.secondaries {
        let labels: Labels = vec![
            ("node_id", p.node.id.to_string()),
            ("address", p.node.addr.to_string()),
        ];
        if let Some(t) = p.last_tick_ms {
            tick_s
                .get_or_create(&labels)
                .set((now - t).max(0) as f64 / 1000.0);
        }
        let Some(l) = &p.lag else { continue };
        acked.get_or_create(&labels).set(l.acked_seq);
        lag_txns.get_or_create(&labels).set(l.lag_txns);
        lag_s.get_or_create(&labels).set(l.lag_ms as f64 / 1000.0);
        in_sync.get_or_create(&labels).set(i64::from(!l.copying));
        copies
            .get_or_create(&labels)
            .inc_by(l.full_copies.max(0) as u64);
        catch_ups
            .get_or_create(&labels)
            .inc_by(l.catch_ups.max(0) as u64);
    }
    r.register(
        "secondary_acked_seq",
        "Highest seq the secondary acknowledged as durable",
        acked,
    );
    r.register(
        "secondary_lag_transactions",
        "This node's seq minus the secondary's acknowledged seq",
        lag_txns,
    );
    r.register(
        "secondary_lag_seconds",
        "Age of the oldest transaction sent to the secondary and not acknowledged (0: caught up)",
        lag_s,
    );
    r.register(
        "secondary_last_tick_age_seconds",
        "Seconds since anything (tick or ack) arrived from the secondary",
        tick_s,
    );
    r.register(
        "secondary_in_sync",
        "1 when the secondary holds this node's data, 0 while its full copy is going on",
        in_sync,
    );
    r.register(
        "secondary_full_copies",
        "Full copies sent to this node id since this node started serving",
        copies,
    );
    r.register(
        "secondary_catch_ups",
        "Re-joins of this secondary served by a catch-up (only the missed transactions)",
        catch_ups,
    );
    let mut out = String::new();
    if encode(&mut out, &r).is_err() {
        out = "# EOF\n".into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Ask::Metrics)
        );
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Ask::Metrics)
        );
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost"), None);
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Ask::Status(405, "Method Not Allowed"))
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Some(Ask::Status(404, "Not Found"))
        );
        assert_eq!(
            parse(b"\x00\x01 junk\r\n\r\n"),
            Some(Ask::Status(400, "Bad Request"))
        );
    }
}
