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
//!
//! Paths and transaction ids are binaries; values are the terms of spec §D.6.
//!
//! [`CLIENT_HADATA`]: super::hello::CLIENT_HADATA

use super::ha::{error_term, parse_error};
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

/// A request on the data socket.
#[derive(Debug, Clone, PartialEq)]
pub enum DataRequest {
    Get(String),
    Exists(String),
    List(String),
    Commit(Vec<Op>),
    TxId,
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
        ] {
            assert_eq!(DataRequest::from_term(&r.to_term()).unwrap(), r);
        }
        assert!(DataRequest::from_term(&Term::atom("get")).is_err());
        assert!(
            DataRequest::from_term(&Term::Tuple(vec![Term::atom("get"), Term::int(1)])).is_err()
        );
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
