//! The data API client (project-defined client id 42, see `proto::data`).

use super::{call, Endpoint, Stream};
use crate::error::{Error, Result};
use crate::proto::data::{parse_reply, stats_from_term, DataRequest, NodeState, Op};
use crate::proto::hello::CLIENT_HADATA;
use crate::proto::term::Term;
use crate::value::Value;
use std::io::{Read, Write};

/// An owned data connection.
#[derive(Debug)]
pub struct DataClient {
    pub stream: Stream,
}

/// A transaction being built; nothing reaches the node before `commit`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Txn {
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }
    pub fn set(&mut self, path: &str, v: Value) -> &mut Self {
        self.ops.push(Op::Set(path.into(), v));
        self
    }
    pub fn delete(&mut self, path: &str) -> &mut Self {
        self.ops.push(Op::Delete(path.into()));
        self
    }
}

/// Sends a request and returns the `X` of `{ok, X}`.
pub fn request<S: std::io::Read + std::io::Write + ?Sized>(
    s: &mut S,
    req: &DataRequest,
) -> Result<Term> {
    let reply = call(s, &req.to_term())?;
    match parse_reply(&reply) {
        Some(Ok(x)) => Ok(x),
        Some(Err((code, reason))) => Err(Error::Remote { code, reason }),
        None => Err(Error::Protocol(format!("unexpected reply {reply:?}"))),
    }
}

fn text(t: &Term) -> Result<String> {
    t.as_binary()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| Error::Protocol(format!("expected a binary, got {t:?}")))
}

impl DataClient {
    pub fn connect(ep: &Endpoint) -> Result<DataClient> {
        Ok(DataClient {
            stream: ep.connect(CLIENT_HADATA)?,
        })
    }
    pub fn get(&mut self, path: &str) -> Result<Value> {
        get(&mut self.stream, path)
    }
    /// A linearizable read (Raft mode, on the leader only: read index).
    pub fn get_linearizable(&mut self, path: &str) -> Result<Value> {
        get_linearizable(&mut self.stream, path)
    }
    /// A Raft-mode action (`status` gives JSON; the others a message). See the README's
    /// "Raft mode".
    pub fn raft(&mut self, action: &str, args: &[&str]) -> Result<String> {
        raft(&mut self.stream, action, args)
    }
    pub fn exists(&mut self, path: &str) -> Result<bool> {
        exists(&mut self.stream, path)
    }
    pub fn list(&mut self, path: &str) -> Result<Vec<String>> {
        list(&mut self.stream, path)
    }
    /// Commits the transaction; returns its transaction id.
    pub fn commit(&mut self, txn: &Txn) -> Result<String> {
        commit(&mut self.stream, txn)
    }
    /// The node's counters (`commits`, `seq`, `full_copies_received`, ...).
    pub fn stats(&mut self) -> Result<Vec<(String, i64)>> {
        stats(&mut self.stream)
    }
    /// Role, ids, peers, last transaction and last ticks of the node.
    pub fn node_state(&mut self) -> Result<NodeState> {
        node_state(&mut self.stream)
    }
    /// The last committed transaction id ("" if none).
    pub fn txid(&mut self) -> Result<String> {
        txid(&mut self.stream)
    }
}

// The requests of [`DataClient`] over any connected stream (the C layer
// passes the caller's descriptor as a borrowed `FdStream`).

/// The value at `path` (`CONFD_ERR_NOEXISTS` if there is none).
/// A linearizable read: Raft mode, on the leader only (read index); elsewhere
/// CONFD_ERR_NOT_WRITABLE (a follower, naming the leader) or CONFD_ERR_BADSTATE (external
/// mode).
pub fn get_linearizable<S: Read + Write + ?Sized>(s: &mut S, path: &str) -> Result<Value> {
    let t = request(s, &DataRequest::GetLinearizable(path.into()))?;
    Value::from_term(&t).map_err(|e| Error::Protocol(e.to_string()))
}

/// A Raft-mode action: `status` (args `["json"]` or `["text"]`), `create-cluster`,
/// `adjust-membership`, `handover`, `reset`, `disconnect`; the reply text (JSON for
/// status). In external mode: CONFD_ERR_BADSTATE.
pub fn raft<S: Read + Write + ?Sized>(s: &mut S, action: &str, args: &[&str]) -> Result<String> {
    let t = request(
        s,
        &DataRequest::Raft(action.into(), args.iter().map(|a| a.to_string()).collect()),
    )?;
    text(&t)
}

pub fn get<S: Read + Write + ?Sized>(s: &mut S, path: &str) -> Result<Value> {
    let t = request(s, &DataRequest::Get(path.into()))?;
    Value::from_term(&t).map_err(|e| Error::Protocol(e.to_string()))
}

/// Whether `path` is a leaf or has descendants.
pub fn exists<S: Read + Write + ?Sized>(s: &mut S, path: &str) -> Result<bool> {
    let t = request(s, &DataRequest::Exists(path.into()))?;
    Ok(t.is_atom("true"))
}

/// The names of the immediate children of `path`, sorted.
pub fn list<S: Read + Write + ?Sized>(s: &mut S, path: &str) -> Result<Vec<String>> {
    let t = request(s, &DataRequest::List(path.into()))?;
    t.as_list()
        .ok_or_else(|| Error::Protocol(format!("expected a list, got {t:?}")))?
        .iter()
        .map(text)
        .collect()
}

/// Commits `txn`; returns its transaction id.
pub fn commit<S: Read + Write + ?Sized>(s: &mut S, txn: &Txn) -> Result<String> {
    let t = request(s, &DataRequest::Commit(txn.ops.clone()))?;
    text(&t)
}

/// The node's counters.
pub fn stats<S: Read + Write + ?Sized>(s: &mut S) -> Result<Vec<(String, i64)>> {
    let t = request(s, &DataRequest::Stats)?;
    stats_from_term(&t).ok_or_else(|| Error::Protocol(format!("malformed stats {t:?}")))
}

/// Role, ids, peers, last transaction and last ticks of the node.
pub fn node_state<S: Read + Write + ?Sized>(s: &mut S) -> Result<NodeState> {
    let t = request(s, &DataRequest::NodeState)?;
    NodeState::from_term(&t).ok_or_else(|| Error::Protocol(format!("malformed node state {t:?}")))
}

/// The last committed transaction id ("" if none).
pub fn txid<S: Read + Write + ?Sized>(s: &mut S) -> Result<String> {
    let t = request(s, &DataRequest::TxId)?;
    text(&t)
}
