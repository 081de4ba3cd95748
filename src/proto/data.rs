//! The data API (project-defined, client id [`CLIENT_HADATA`]): one request
//! term per frame, one reply per request. Requests:
//!
//! | request | reply |
//! |---|---|
//! | `{get, Path}` | `{ok, Value}` or `{error, 1, Reason}` (CONFD_ERR_NOEXISTS) |
//! | `{exists, Path}` | `{ok, true \| false}` |
//! | `{list, Path}` | `{ok, [Name, ...]}` (child names, binaries, sorted) |
//! | `{commit, [Op, ...]}` | `{ok, TxId}`; Op is `{set, Path, Value}` or `{delete, Path}` |
//! | `{txid}` | `{ok, TxId}` (the last committed transaction id, `<<>>` if none) |
//! | `{stats}` | `{ok, [{Name, Int}, ...]}` (counters: `commits`, `seq`, `full_copies_received`, ...) |
//! | `{node_state}` | `{ok, NodeState}` (see [`NodeState::to_term`]) |
//!
//! Paths and transaction ids are binaries; values are the terms of spec §D.6.
//!
//! [`CLIENT_HADATA`]: super::hello::CLIENT_HADATA

use super::ha::{error_term, parse_error, HaNode, NodeAddr};
use super::term::Term;
use crate::value::Value;

/// One write in a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Set(String, Value),
    Delete(String),
}

impl Op {
    pub fn to_term(&self) -> Term {
        match self {
            Op::Set(p, v) => Term::Tuple(vec![Term::atom("set"), Term::binary(p), v.to_term()]),
            Op::Delete(p) => Term::Tuple(vec![Term::atom("delete"), Term::binary(p)]),
        }
    }
    pub fn from_term(t: &Term) -> Result<Op, String> {
        let e = t
            .as_tuple()
            .ok_or_else(|| format!("operation {t:?} is not a tuple"))?;
        match e {
            [op, p, v] if op.is_atom("set") => Ok(Op::Set(
                path_of(p)?,
                Value::from_term(v).map_err(|e| e.to_string())?,
            )),
            [op, p] if op.is_atom("delete") => Ok(Op::Delete(path_of(p)?)),
            _ => Err(format!("unknown operation {t:?}")),
        }
    }
}

fn path_of(t: &Term) -> Result<String, String> {
    let b = t
        .as_binary()
        .ok_or_else(|| format!("path {t:?} is not a binary"))?;
    String::from_utf8(b.to_vec()).map_err(|_| "path is not UTF-8".to_string())
}

/// Most arguments of one `{raft, Action, Args}` request.
pub const MAX_RAFT_ACTION_ARGS: usize = 64;

/// A request on the data socket.
#[derive(Debug, Clone, PartialEq)]
pub enum DataRequest {
    Get(String),
    Exists(String),
    List(String),
    Commit(Vec<Op>),
    TxId,
    Stats,
    NodeState,
    /// `{get, Path, linearizable}`: a read on the Raft leader that first confirms its
    /// leadership with a majority and waits until the store has applied everything
    /// committed before the read (Raft's read index). Refused outside Raft mode's leader.
    GetLinearizable(String),
    /// `{raft, Action, [Arg]}`: a Raft-mode action (`status`, `create-cluster`,
    /// `adjust-membership`, `handover`, `reset`, `disconnect`); the reply is a binary, JSON
    /// for `status`, else a message.
    Raft(String, Vec<String>),
}

impl DataRequest {
    pub fn to_term(&self) -> Term {
        let pair = |a: &str, p: &str| Term::Tuple(vec![Term::atom(a), Term::binary(p)]);
        match self {
            DataRequest::Get(p) => pair("get", p),
            DataRequest::Exists(p) => pair("exists", p),
            DataRequest::List(p) => pair("list", p),
            DataRequest::Commit(ops) => Term::Tuple(vec![
                Term::atom("commit"),
                Term::List(ops.iter().map(Op::to_term).collect()),
            ]),
            DataRequest::TxId => Term::Tuple(vec![Term::atom("txid")]),
            DataRequest::Stats => Term::Tuple(vec![Term::atom("stats")]),
            DataRequest::NodeState => Term::Tuple(vec![Term::atom("node_state")]),
            DataRequest::GetLinearizable(p) => Term::Tuple(vec![
                Term::atom("get"),
                Term::binary(p),
                Term::atom("linearizable"),
            ]),
            DataRequest::Raft(a, args) => Term::Tuple(vec![
                Term::atom("raft"),
                Term::binary(a),
                Term::List(args.iter().map(Term::binary).collect()),
            ]),
        }
    }
    pub fn from_term(t: &Term) -> Result<DataRequest, String> {
        let e = t
            .as_tuple()
            .ok_or_else(|| format!("request {t:?} is not a tuple"))?;
        let name = e.first().and_then(Term::as_atom).unwrap_or("");
        Ok(match (name, e) {
            ("get", [_, p]) => DataRequest::Get(path_of(p)?),
            ("exists", [_, p]) => DataRequest::Exists(path_of(p)?),
            ("list", [_, p]) => DataRequest::List(path_of(p)?),
            ("commit", [_, Term::List(ops)]) => {
                DataRequest::Commit(ops.iter().map(Op::from_term).collect::<Result<_, _>>()?)
            }
            ("txid", [_]) => DataRequest::TxId,
            ("stats", [_]) => DataRequest::Stats,
            ("node_state", [_]) => DataRequest::NodeState,
            ("get", [_, p, o]) if o.is_atom("linearizable") => {
                DataRequest::GetLinearizable(path_of(p)?)
            }
            ("raft", [_, a, Term::List(args)]) if args.len() <= MAX_RAFT_ACTION_ARGS => {
                DataRequest::Raft(
                    path_of(a)?,
                    args.iter().map(path_of).collect::<Result<_, _>>()?,
                )
            }
            _ => return Err(format!("unknown data request {t:?}")),
        })
    }
}

/// `{ok, X}`.
pub fn ok_term(x: Term) -> Term {
    Term::Tuple(vec![Term::ok(), x])
}

/// A reply: `Ok(X)` from `{ok, X}`, `Err((code, reason))` from an error,
/// `None` for any other shape.
pub fn parse_reply(t: &Term) -> Option<Result<Term, (i32, String)>> {
    if let Some(e) = parse_error(t) {
        return Some(Err(e));
    }
    match t.as_tuple()? {
        [ok, x] if ok.is_atom("ok") => Some(Ok(x.clone())),
        _ => None,
    }
}

pub fn error_reply(code: i32, reason: &str) -> Term {
    error_term(code, reason)
}

/// Counters as `[{Name, Int}]`.
pub fn stats_to_term(stats: &[(String, i64)]) -> Term {
    Term::List(
        stats
            .iter()
            .map(|(k, v)| Term::Tuple(vec![Term::binary(k), Term::int(*v)]))
            .collect(),
    )
}

pub fn stats_from_term(t: &Term) -> Option<Vec<(String, i64)>> {
    t.as_list()?
        .iter()
        .map(|e| match e.as_tuple()? {
            [k, v] => Some((
                String::from_utf8_lossy(k.as_binary()?).into_owned(),
                v.as_i64()?,
            )),
            _ => None,
        })
        .collect()
}

/// A peer as the node state reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerState {
    pub node: HaNode,
    /// When the last tick (or any frame) arrived from this peer, in Unix
    /// milliseconds; `None` if none yet or ticks are disabled.
    pub last_tick_ms: Option<i64>,
    /// How far behind this node the secondary is (secondaries of a primary or
    /// relay only; `None` for a secondary's primary and from an older node).
    pub lag: Option<Lag>,
}

/// Replication progress of one secondary, as its primary (or relay) sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lag {
    /// Highest seq the secondary acknowledged as durable (0 while its full copy
    /// is unacknowledged).
    pub acked_seq: i64,
    /// The serving node's seq minus `acked_seq`, in transactions (>= 0).
    pub lag_txns: i64,
    /// Age in milliseconds of the oldest transaction sent to it and not yet
    /// acknowledged (during a full copy: since the copy began); 0 when caught up.
    pub lag_ms: i64,
    /// A full copy is being sent or is unacknowledged (`copying`), else `in-sync`.
    pub copying: bool,
    /// Full copies sent to this node id since the serving node started.
    pub full_copies: i64,
    /// Re-joins of this node id served by an incremental catch-up (only the missed
    /// transactions) since the serving node started.
    pub catch_ups: i64,
}

/// What a node says about itself (`{node_state}`): the availability-group
/// view of issue 4.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    /// `STATE_NONE` .. `STATE_SECONDARY_RELAY`.
    pub state: i32,
    /// This node's id, when it has been given one.
    pub node_id: Option<Value>,
    /// The node's primary (the immediate parent for a relay's sub-secondary).
    pub primary: Option<PeerState>,
    /// Connected secondaries (on a primary or relay).
    pub secondaries: Vec<PeerState>,
    pub seq: i64,
    pub txid: String,
    /// On a secondary or relay: when its last transaction (or full copy) from the
    /// primary was applied, in Unix milliseconds (`None` if none since it started).
    pub last_txn_ms: Option<i64>,
}

fn opt(t: Option<Term>) -> Term {
    t.unwrap_or_else(|| Term::atom("undefined"))
}

impl PeerState {
    fn to_term(&self) -> Term {
        Term::Tuple(vec![
            self.node.id.to_term(),
            self.node.addr.to_term(),
            opt(self.last_tick_ms.map(Term::int)),
        ])
    }
    fn from_term(t: &Term) -> Option<PeerState> {
        match t.as_tuple()? {
            [id, addr, tick] => Some(PeerState {
                node: HaNode {
                    id: Value::from_term(id).ok()?,
                    addr: NodeAddr::from_term(addr)?,
                },
                last_tick_ms: if tick.is_atom("undefined") {
                    None
                } else {
                    Some(tick.as_i64()?)
                },
                lag: None,
            }),
            _ => None,
        }
    }
}

impl Lag {
    /// `[{acked_seq, N}, {lag_txns, N}, {lag_ms, N}, {state, copying | 'in-sync'},
    /// {full_copies, N}, {catch_ups, N}]`; decoders ignore unknown keys.
    pub fn to_term(&self) -> Term {
        let kv = |k: &str, v: Term| Term::Tuple(vec![Term::atom(k), v]);
        Term::List(vec![
            kv("acked_seq", Term::int(self.acked_seq)),
            kv("lag_txns", Term::int(self.lag_txns)),
            kv("lag_ms", Term::int(self.lag_ms)),
            kv(
                "state",
                Term::atom(if self.copying { "copying" } else { "in-sync" }),
            ),
            kv("full_copies", Term::int(self.full_copies)),
            kv("catch_ups", Term::int(self.catch_ups)),
        ])
    }
    pub fn from_term(t: &Term) -> Option<Lag> {
        let mut l = Lag::default();
        for e in t.as_list()? {
            let [k, v] = e.as_tuple()? else { return None };
            match k.as_atom()? {
                "acked_seq" => l.acked_seq = v.as_i64()?,
                "lag_txns" => l.lag_txns = v.as_i64()?,
                "lag_ms" => l.lag_ms = v.as_i64()?,
                "state" => l.copying = v.is_atom("copying"),
                "full_copies" => l.full_copies = v.as_i64()?,
                "catch_ups" => l.catch_ups = v.as_i64()?,
                _ => {}
            }
        }
        Some(l)
    }
}

impl NodeState {
    /// `[{state, S}, {node_id, Id | undefined}, {primary, Peer | undefined},
    /// {secondaries, [Peer]}, {seq, N}, {txid, Bin}, {secondary_lag, [Lag]},
    /// {last_txn_ms, Ms | undefined}]` with Peer =
    /// `{Id, Addr, LastTickMs | undefined}` and Lag as [`Lag::to_term`], one per
    /// secondary in the same order (`[]` when a secondary has none: then all
    /// are omitted). Decoders ignore unknown keys, so an older decoder still
    /// reads the first six.
    pub fn to_term(&self) -> Term {
        let kv = |k: &str, v: Term| Term::Tuple(vec![Term::atom(k), v]);
        let lags: Option<Vec<Term>> = self
            .secondaries
            .iter()
            .map(|p| p.lag.as_ref().map(Lag::to_term))
            .collect();
        Term::List(vec![
            kv("state", Term::int(self.state)),
            kv("node_id", opt(self.node_id.as_ref().map(Value::to_term))),
            kv(
                "primary",
                opt(self.primary.as_ref().map(PeerState::to_term)),
            ),
            kv(
                "secondaries",
                Term::List(self.secondaries.iter().map(PeerState::to_term).collect()),
            ),
            kv("seq", Term::int(self.seq)),
            kv("txid", Term::binary(&self.txid)),
            kv("secondary_lag", Term::List(lags.unwrap_or_default())),
            kv("last_txn_ms", opt(self.last_txn_ms.map(Term::int))),
        ])
    }
    pub fn from_term(t: &Term) -> Option<NodeState> {
        let mut st = NodeState {
            state: 0,
            node_id: None,
            primary: None,
            secondaries: Vec::new(),
            seq: 0,
            txid: String::new(),
            last_txn_ms: None,
        };
        let mut lags: Vec<Lag> = Vec::new();
        for e in t.as_list()? {
            let [k, v] = e.as_tuple()? else { return None };
            let undefined = v.is_atom("undefined");
            match k.as_atom()? {
                "state" => st.state = i32::try_from(v.as_int()?).ok()?,
                "node_id" if !undefined => st.node_id = Some(Value::from_term(v).ok()?),
                "primary" if !undefined => st.primary = Some(PeerState::from_term(v)?),
                "secondaries" => {
                    st.secondaries = v
                        .as_list()?
                        .iter()
                        .map(PeerState::from_term)
                        .collect::<Option<_>>()?
                }
                "seq" => st.seq = v.as_i64()?,
                "txid" => st.txid = String::from_utf8_lossy(v.as_binary()?).into_owned(),
                "secondary_lag" => {
                    lags = v
                        .as_list()?
                        .iter()
                        .map(Lag::from_term)
                        .collect::<Option<_>>()?
                }
                "last_txn_ms" if !undefined => st.last_txn_ms = Some(v.as_i64()?),
                _ => {}
            }
        }
        if !lags.is_empty() {
            if lags.len() != st.secondaries.len() {
                return None;
            }
            for (p, l) in st.secondaries.iter_mut().zip(lags) {
                p.lag = Some(l);
            }
        }
        (1..=4).contains(&st.state).then_some(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            DataRequest::Get("/system/hostname".into()),
            DataRequest::Exists("/a".into()),
            DataRequest::List("/servers".into()),
            DataRequest::Commit(vec![
                Op::Set("/servers/server{www}/port".into(), Value::UInt16(80)),
                Op::Delete("/old".into()),
            ]),
            DataRequest::TxId,
            DataRequest::Stats,
            DataRequest::NodeState,
        ] {
            assert_eq!(DataRequest::from_term(&r.to_term()).unwrap(), r);
        }
        assert!(DataRequest::from_term(&Term::atom("get")).is_err());
        assert!(
            DataRequest::from_term(&Term::Tuple(vec![Term::atom("get"), Term::int(1)])).is_err()
        );
    }

    #[test]
    fn node_state_and_stats_round_trip() {
        let peer = |id: &str, ip: &str, tick| PeerState {
            node: HaNode {
                id: Value::Buf(id.into()),
                addr: NodeAddr::parse(ip),
            },
            last_tick_ms: tick,
            lag: Some(Lag {
                acked_seq: 5,
                lag_txns: 2,
                lag_ms: 40,
                copying: false,
                full_copies: 1,
                catch_ups: 0,
            }),
        };
        let st = NodeState {
            state: crate::proto::ha::STATE_PRIMARY,
            node_id: Some(Value::Buf(b"n1".to_vec())),
            primary: None,
            secondaries: vec![
                peer("n2", "127.0.0.2", Some(1_700_000_000_000)),
                peer("n3", "::1", None),
            ],
            seq: 7,
            txid: "n1-7-123".into(),
            last_txn_ms: Some(1_700_000_000_001),
        };
        assert_eq!(
            NodeState::from_term(&Term::decode(&st.to_term().encode()).unwrap()),
            Some(st)
        );
        assert_eq!(NodeState::from_term(&Term::List(vec![])), None);
        let s = vec![("commits".to_string(), 3i64), ("seq".to_string(), 9)];
        assert_eq!(stats_from_term(&stats_to_term(&s)), Some(s));
    }

    #[test]
    fn replies_parse() {
        assert_eq!(parse_reply(&ok_term(Term::int(3))), Some(Ok(Term::int(3))));
        assert_eq!(
            parse_reply(&error_reply(1, "no such path")),
            Some(Err((1, "no such path".into())))
        );
        assert_eq!(parse_reply(&Term::ok()), None);
    }
}
