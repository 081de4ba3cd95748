//! Rollback files: the local transactions a re-join discarded (MongoDB's rollback files are
//! the model). One file per discard event in `<data-dir>/rollback/`, named
//! `seq<FIRST>-<LAST>.<UNIX_MS>.rollback` (the first and last discarded seq), holding one
//! Erlang term in the external term format (so that `binary_to_term/1` reads it too):
//!
//! ```text
//! {ha_node_rollback, 1, Info, [{Seq, TxId, [{set, Path, ValueEtf} | {delete, Path}]}]}
//! Info = [{reason, Bin}, {primary, Bin}, {time_ms, Int}, {local_seq, Int},
//!         {local_txid, Bin}, {common_seq, Int | undefined}]
//! ```
//!
//! `ValueEtf` is the value as the node stores it (the ETF of a ConfD value). The file is
//! written to a temporary name, fsynced, then renamed, so a file that exists is complete.
//! `ha-ctl rollback list` and `ha-ctl rollback show FILE` read them. Shared with ha-ctl
//! (`#[path]`): depends on std and confd_ha only.

use confd_ha::proto::term::Term;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The directory of rollback files inside the data directory.
pub const ROLLBACK_DIR: &str = "rollback";
const SUFFIX: &str = ".rollback";
/// A rollback file larger than this is not read by `ha-ctl rollback show`.
pub const MAX_ROLLBACK_FILE_BYTES: u64 = 1 << 30;

/// One discarded transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    pub seq: u64,
    pub txid: String,
    /// `{set, Path, ValueEtf}` or `{delete, Path}` terms.
    pub ops: Vec<Term>,
}

/// What the file says about the discard.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Info {
    pub reason: String,
    pub primary: String,
    pub time_ms: i64,
    pub local_seq: u64,
    pub local_txid: String,
    /// The last seq both histories share, if it was found.
    pub common_seq: Option<u64>,
}

fn u(n: u64) -> Term {
    Term::Int(i128::from(n))
}

/// Writes a rollback file durably into `<data_dir>/rollback/`; returns its path.
pub fn write(data_dir: &Path, info: &Info, txns: &[Txn]) -> Result<PathBuf, String> {
    let dir = data_dir.join(ROLLBACK_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let first = txns.first().map(|t| t.seq).unwrap_or(0);
    let last = txns.last().map(|t| t.seq).unwrap_or(0);
    let name = format!("seq{first}-{last}.{}{SUFFIX}", info.time_ms);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let info_t = Term::List(vec![
        Term::tuple(vec![Term::atom("reason"), Term::binary(&info.reason)]),
        Term::tuple(vec![Term::atom("primary"), Term::binary(&info.primary)]),
        Term::tuple(vec![Term::atom("time_ms"), Term::int(info.time_ms)]),
        Term::tuple(vec![Term::atom("local_seq"), u(info.local_seq)]),
        Term::tuple(vec![
            Term::atom("local_txid"),
            Term::binary(&info.local_txid),
        ]),
        Term::tuple(vec![
            Term::atom("common_seq"),
            info.common_seq
                .map(u)
                .unwrap_or_else(|| Term::atom("undefined")),
        ]),
    ]);
    let body = Term::tuple(vec![
        Term::atom("ha_node_rollback"),
        Term::int(1),
        info_t,
        Term::List(
            txns.iter()
                .map(|t| {
                    Term::tuple(vec![
                        u(t.seq),
                        Term::binary(&t.txid),
                        Term::List(t.ops.clone()),
                    ])
                })
                .collect(),
        ),
    ])
    .encode();
    let io = |e: std::io::Error| format!("cannot write rollback file {}: {e}", path.display());
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// The rollback files in `<data_dir>/rollback/`, sorted by name.
pub fn list(data_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(data_dir.join(ROLLBACK_DIR))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(SUFFIX) && !n.starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Reads a rollback file.
pub fn read(path: &Path) -> Result<(Info, Vec<Txn>), String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if len > MAX_ROLLBACK_FILE_BYTES {
        return Err(format!(
            "{} is {len} bytes, more than the {MAX_ROLLBACK_FILE_BYTES} bytes read",
            path.display()
        ));
    }
    let raw = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = |what: &str| format!("{} is not a rollback file ({what})", path.display());
    let t = Term::decode(&raw).map_err(|e| bad(&e.to_string()))?;
    let e = t.as_tuple().ok_or_else(|| bad("not a tuple"))?;
    if e.len() != 4 || !e[0].is_atom("ha_node_rollback") || e[1].as_int() != Some(1) {
        return Err(bad("unknown header or version"));
    }
    let text = |t: &Term| String::from_utf8_lossy(t.as_binary().unwrap_or_default()).into_owned();
    let num = |t: &Term| t.as_int().and_then(|i| u64::try_from(i).ok());
    let mut info = Info::default();
    for kv in e[2].as_list().ok_or_else(|| bad("info"))? {
        if let Some([k, v]) = kv.as_tuple() {
            match k.as_atom() {
                Some("reason") => info.reason = text(v),
                Some("primary") => info.primary = text(v),
                Some("time_ms") => info.time_ms = v.as_i64().unwrap_or(0),
                Some("local_seq") => info.local_seq = num(v).unwrap_or(0),
                Some("local_txid") => info.local_txid = text(v),
                Some("common_seq") => info.common_seq = num(v),
                _ => {}
            }
        }
    }
    let mut txns = Vec::new();
    for x in e[3].as_list().ok_or_else(|| bad("transactions"))? {
        match x.as_tuple() {
            Some([s, id, ops]) => txns.push(Txn {
                seq: num(s).ok_or_else(|| bad("seq"))?,
                txid: text(id),
                ops: ops.as_list().ok_or_else(|| bad("ops"))?.to_vec(),
            }),
            _ => return Err(bad("transaction")),
        }
    }
    Ok((info, txns))
}
