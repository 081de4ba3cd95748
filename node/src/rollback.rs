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
//! When the local transaction log does not reach back to the last transaction both histories
//! share (it keeps only the last `txlog-max-txns`, or the common point cannot be established),
//! the itemised file cannot name everything the copy discards. Then the node also writes a
//! *state file*, `state-seq<LOCAL_SEQ>.<UNIX_MS>.rollback`: the complete local data as it was
//! before the copy (path → value), streamed in chunks as a sequence of records, each a 4-byte
//! big-endian length followed by one ETF term:
//!
//! ```text
//! {ha_node_rollback_state, 1, Info ++ [{itemised_from, Seq}, {entries, N}, {note, Bin}]}
//! [{Path, ValueEtf}]          (zero or more chunks, key order)
//! {'end', N}                  (N entries written; a file without it is damaged)
//! ```
//!
//! Transactions before `itemised_from` are not itemised anywhere: their effect is in this
//! state. Written the same way (temporary name, fsync, rename) before the copy starts.
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

/// A record of a state file larger than this is refused when read.
pub const MAX_STATE_RECORD_BYTES: u32 = 256 << 20;
/// The name prefix of a state file.
const STATE_PREFIX: &str = "state-";

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
    let info_t = Term::List(info_terms(info));
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

fn info_terms(info: &Info) -> Vec<Term> {
    vec![
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
    ]
}

/// The header of a state file, besides [`Info`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateInfo {
    pub info: Info,
    /// Transactions before this seq are not itemised in any rollback file.
    pub itemised_from: u64,
    /// Entries the header announces.
    pub entries: u64,
    pub note: String,
}

/// Whether `path` names a state file (complete local data before a copy).
pub fn is_state_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(STATE_PREFIX))
}

fn put_record(f: &mut impl Write, t: &Term) -> std::io::Result<()> {
    let b = t.encode();
    let len = u32::try_from(b.len())
        .ok()
        .filter(|l| *l <= MAX_STATE_RECORD_BYTES)
        .ok_or_else(|| std::io::Error::other(format!("a record of {} bytes", b.len())))?;
    f.write_all(&len.to_be_bytes())?;
    f.write_all(&b)
}

/// Writes a state file durably into `<data_dir>/rollback/`: the header, then every chunk
/// `next` returns until `Ok(None)` (streamed: one chunk in memory at a time), then the end
/// record. Returns its path and the number of entries written. On any error the
/// temporary file is removed and nothing is left.
#[allow(clippy::type_complexity)]
pub fn write_state(
    data_dir: &Path,
    info: &Info,
    itemised_from: u64,
    entries: u64,
    mut next: impl FnMut() -> Result<Option<Vec<(String, Vec<u8>)>>, String>,
) -> Result<(PathBuf, u64), String> {
    let dir = data_dir.join(ROLLBACK_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = format!(
        "{STATE_PREFIX}seq{}.{}{SUFFIX}",
        info.local_seq, info.time_ms
    );
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let note = format!(
        "complete local state before the copy; transactions before seq {itemised_from} are \
         not itemised"
    );
    let mut hdr = info_terms(info);
    hdr.push(Term::tuple(vec![
        Term::atom("itemised_from"),
        u(itemised_from),
    ]));
    hdr.push(Term::tuple(vec![Term::atom("entries"), u(entries)]));
    hdr.push(Term::tuple(vec![Term::atom("note"), Term::binary(&note)]));
    let io = |e: std::io::Error| format!("cannot write rollback file {}: {e}", path.display());
    let res = (|| {
        let f = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::new(f);
        put_record(
            &mut w,
            &Term::tuple(vec![
                Term::atom("ha_node_rollback_state"),
                Term::int(1),
                Term::List(hdr),
            ]),
        )
        .map_err(io)?;
        let mut n = 0u64;
        while let Some(chunk) = next()? {
            n += chunk.len() as u64;
            let t = Term::List(
                chunk
                    .iter()
                    .map(|(p, v)| Term::tuple(vec![Term::binary(p), Term::binary(v)]))
                    .collect(),
            );
            put_record(&mut w, &t).map_err(io)?;
        }
        put_record(&mut w, &Term::tuple(vec![Term::atom("end"), u(n)])).map_err(io)?;
        let f = w.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)?;
        Ok(n)
    })();
    let n = match res {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok((path, n))
}

fn parse_info(list: &[Term]) -> (Info, u64, u64, String) {
    let text = |t: &Term| String::from_utf8_lossy(t.as_binary().unwrap_or_default()).into_owned();
    let num = |t: &Term| t.as_int().and_then(|i| u64::try_from(i).ok());
    let mut info = Info::default();
    let (mut from, mut entries, mut note) = (0, 0, String::new());
    for kv in list {
        if let Some([k, v]) = kv.as_tuple() {
            match k.as_atom() {
                Some("reason") => info.reason = text(v),
                Some("primary") => info.primary = text(v),
                Some("time_ms") => info.time_ms = v.as_i64().unwrap_or(0),
                Some("local_seq") => info.local_seq = num(v).unwrap_or(0),
                Some("local_txid") => info.local_txid = text(v),
                Some("common_seq") => info.common_seq = num(v),
                Some("itemised_from") => from = num(v).unwrap_or(0),
                Some("entries") => entries = num(v).unwrap_or(0),
                Some("note") => note = text(v),
                _ => {}
            }
        }
    }
    (info, from, entries, note)
}

/// Reads a state file: `on_header` gets its header, then `each` every (path, value ETF) in
/// order, one chunk in memory at a time. Returns the number of entries; an error if the
/// file is damaged or incomplete (no end record, or a count that does not match).
pub fn read_state(
    path: &Path,
    on_header: impl FnOnce(&StateInfo),
    mut each: impl FnMut(&str, &[u8]),
) -> Result<u64, String> {
    use std::io::Read;
    let bad = |what: &str| format!("{} is not a complete state file ({what})", path.display());
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut r = std::io::BufReader::new(f);
    let mut record = || -> Result<Option<Term>, String> {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        let len = u32::from_be_bytes(len);
        if len > MAX_STATE_RECORD_BYTES {
            return Err(bad(&format!("a record of {len} bytes")));
        }
        // Read through `take`: memory grows with the bytes that arrive, not with the
        // length the record claims.
        let mut buf = Vec::new();
        (&mut r)
            .take(u64::from(len))
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if buf.len() != len as usize {
            return Err(bad(&format!(
                "truncated record: {} of {len} bytes",
                buf.len()
            )));
        }
        Term::decode(&buf)
            .map(Some)
            .map_err(|e| bad(&e.to_string()))
    };
    let h = record()?.ok_or_else(|| bad("empty"))?;
    let e = h.as_tuple().ok_or_else(|| bad("header"))?;
    if e.len() != 3 || !e[0].is_atom("ha_node_rollback_state") || e[1].as_int() != Some(1) {
        return Err(bad("unknown header or version"));
    }
    let (info, itemised_from, entries, note) =
        parse_info(e[2].as_list().ok_or_else(|| bad("info"))?);
    on_header(&StateInfo {
        info,
        itemised_from,
        entries,
        note,
    });
    let mut n = 0u64;
    loop {
        let t = record()?.ok_or_else(|| bad("no end record"))?;
        if let Some(list) = t.as_list() {
            for kv in list {
                match kv.as_tuple() {
                    Some([p, v]) => {
                        let p = p.as_binary().ok_or_else(|| bad("path"))?;
                        let v = v.as_binary().ok_or_else(|| bad("value"))?;
                        each(&String::from_utf8_lossy(p), v);
                        n += 1;
                    }
                    _ => return Err(bad("entry")),
                }
            }
        } else if let Some([k, c]) = t.as_tuple() {
            if !k.is_atom("end") {
                return Err(bad("record"));
            }
            let c = c.as_int().and_then(|i| u64::try_from(i).ok());
            if c != Some(n) {
                return Err(bad(&format!("end says {c:?} entries, {n} read")));
            }
            return Ok(n);
        } else {
            return Err(bad("record"));
        }
    }
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
    read_limited(path, MAX_ROLLBACK_FILE_BYTES)
}

/// At most `limit` bytes of `path`, read through `take` so that a pipe, a device or a file
/// that grows is refused once more than `limit` bytes arrive (its metadata length is not
/// trusted).
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut raw = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if raw.len() as u64 > limit {
        return Err(format!(
            "{} is longer than {limit} bytes, the most a rollback file is read",
            path.display()
        ));
    }
    Ok(raw)
}

fn read_limited(path: &Path, limit: u64) -> Result<(Info, Vec<Txn>), String> {
    let raw = read_bounded(path, limit)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_never_ends_is_refused_with_a_bounded_read() {
        // /dev/zero reports length 0 and never ends: the limit must hold while reading.
        let e = read_limited(Path::new("/dev/zero"), 4096).unwrap_err();
        assert!(
            e.contains("/dev/zero") && e.contains("longer than 4096 bytes"),
            "{e}"
        );
        // A file within the limit is read (and then judged by its content).
        let e = read_limited(Path::new("/dev/null"), 4096).unwrap_err();
        assert!(e.contains("not a rollback file"), "{e}");
    }

    #[test]
    fn a_state_file_reads_back_and_a_truncated_one_is_refused() {
        let dir =
            std::env::temp_dir().join(format!("ha-node-rollback-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let info = Info {
            reason: "r".into(),
            local_seq: 42,
            local_txid: "t42".into(),
            time_ms: 1,
            ..Info::default()
        };
        let mut chunks = vec![
            vec![("/b".to_string(), vec![2u8])],
            vec![("/a".to_string(), vec![1u8]), ("/c".to_string(), vec![3u8])],
        ];
        let (path, n) = write_state(&dir, &info, 30, 3, || Ok(chunks.pop())).unwrap();
        assert_eq!(n, 3);
        assert!(is_state_file(&path));
        assert_eq!(list(&dir), vec![path.clone()]);
        let mut hdr = None;
        let mut seen = Vec::new();
        let got = read_state(
            &path,
            |h| hdr = Some(h.clone()),
            |p, v| seen.push((p.to_string(), v.to_vec())),
        )
        .unwrap();
        assert_eq!(got, 3);
        let hdr = hdr.unwrap();
        assert_eq!((hdr.itemised_from, hdr.entries), (30, 3));
        assert_eq!(hdr.info, info);
        assert!(hdr
            .note
            .contains("transactions before seq 30 are not itemised"));
        assert_eq!(seen[0], ("/a".to_string(), vec![1u8]));
        assert_eq!(seen.len(), 3);
        // Without its end record a state file is an error, not a shorter state.
        let raw = std::fs::read(&path).unwrap();
        std::fs::write(&path, &raw[..raw.len() - 3]).unwrap();
        assert!(read_state(&path, |_| {}, |_, _| {}).is_err());
        // A failing source leaves no file behind.
        let err = write_state(&dir, &info, 1, 1, || Err("boom".into())).unwrap_err();
        assert_eq!(err, "boom");
        assert_eq!(list(&dir).len(), 1);
        assert_eq!(
            std::fs::read_dir(dir.join(ROLLBACK_DIR)).unwrap().count(),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
