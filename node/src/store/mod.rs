//! The durable embedded store of ha-node: a schemaless tree of keypaths kept in one redb
//! database at `<data-dir>/store.redb`, behind a sequential commit log in `<data-dir>/log/`
//! (module [`log`]).
//!
//! Durability: [`Store::commit`] applies a group of transactions to a redb write transaction
//! (nothing is logged if that fails), appends one checksummed record per transaction to the
//! commit log with ONE write and ONE fdatasync — the group is durable then — and commits the
//! redb transaction with `Durability::None` (visible to readers, not yet durable in the
//! tree). A checkpointer thread makes the tree durable (a redb commit with
//! `Durability::Immediate` and quick-repair, so that opening after a crash needs no full
//! repair) every [`CHECKPOINT_INTERVAL_MS`] or [`CHECKPOINT_LOG_BYTES`], and retires the log
//! segments the tree and the backlog no longer need. Recovery at open replays the records
//! from the tree's `log_pos` on (the log position just after the last record the durable
//! tree holds). A clean close ([`Store::shutdown`], or dropping the store) writes a last
//! checkpoint. [`Store::commit_unsynced`] applies a group the same way but leaves its records
//! in memory, written and synced with the next group commit or checkpoint (for Raft mode,
//! whose own log is durable); [`Store::durable_seq`] says how far the store is durable.
//! The log is also the backlog of the last `txlog-max-txns` transactions
//! ([`Store::txlog_from`], [`Store::txlog_ids`]).
//!
//! Tables (record format 2):
//! - `data`: keypath (UTF-8 bytes) → record. A record is either `0x00 ++ value` (the value
//!   inline; the value bytes are opaque to the store, the daemon keeps the ETF encoding of a
//!   `Value` there) or `0x01 ++ blob u64 ++ offset u32 ++ length u32` (big-endian), a value
//!   packed into a blob by a full copy.
//! - `blobs`: u64 → bytes, the values of a full copy packed ~64 KiB at a time, and
//!   `blob_refs`: u64 → number of records pointing into that blob; a blob goes away with its
//!   last reference (overwritten or deleted), and a full copy replaces all of them.
//! - `meta`: `seq` (u64, 8 bytes big-endian), `txid` (UTF-8), `bytes` (u64 BE, the sum of
//!   key + value lengths, for [`Store::stats`]), `format` (u64 BE, the record format, 2),
//!   `log_base` (u64 BE: the first log segment of the tree's history; a full copy moves it
//!   past every older segment) and `log_pos` (u64 BE: segment << 40 | offset, where replay
//!   starts). Format 1 had a `txlog` table (seq → ETF record) instead of the commit log; it
//!   is converted at open (that backlog is dropped).
//!
//! Why blobs: redb rebuilds a whole 4 KiB leaf page on every insert, and a 4 KiB page holds
//! only two or three 1 KiB values, so a 100 MB copy of 1 KiB values as plain records costs
//! ~1.2 s of CPU and writes ~260 MB of pages; packed, the records are 17 bytes, leaves hold
//! ~80 of them and the copy takes about half the time. Commits write values inline.
//!
//! Space: pages of the replaced version are freed only after the next commit, and redb grows
//! its file by doubling, so after repeated full copies of 100 MB the file settles at ~540 MB
//! (it does not shrink; free pages are reused).
//!
//! The meta of a transaction is written in the same redb write transaction as its data, and
//! the log's record of it is durable before that transaction commits, so after a crash
//! (tree at its last checkpoint + replay) the store holds exactly the data of the
//! transaction named by [`Store::last_tx`], and every acknowledged commit.
//!
//! Paths are keypaths like `/servers/server{www}/port`: they start with '/', segments are
//! separated by '/', and a '/' inside `{...}` belongs to the segment (list keys may contain
//! slashes). A node "exists" if it is a key or has descendants; setting a path does not need
//! its parents. Deleting a path removes it and its whole subtree.
//!
//! Concurrency: reads (`get`, `exists`, `list`, `last_tx`, `snapshot`) run on MVCC read
//! transactions and never block. redb allows one writer at a time: `commit`, checkpoints and
//! [`Store::begin_copy`] wait for each other, so while a [`CopyWriter`] exists every `commit`
//! blocks (on a secondary receiving a full copy no writes are accepted, so that is fine). Do
//! not call `commit` on the thread that holds a `CopyWriter`: it would wait for itself.
//! A large copy keeps its dirty pages in redb's write cache (100 MB, then spilled to the file)
//! until `finish`.

// Not every item is used by the daemon yet (stats, entries, ...).
#![allow(dead_code)]

pub mod log;
use log::Log;

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use redb::{
    Database, Durability, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

/// Longest accepted keypath, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// The file name of the database inside the data directory.
pub const STORE_FILE: &str = "store.redb";

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");
const META_SEQ: &[u8] = b"seq";
const META_TXID: &[u8] = b"txid";
const META_BYTES: &[u8] = b"bytes";
const META_FORMAT: &[u8] = b"format";
/// The first commit-log segment of the tree's current history (u64 BE; absent = 0).
const META_LOG_BASE: &[u8] = b"log_base";
/// The commit-log position (segment << 40 | offset, u64 BE) just after the last record the
/// tree holds: recovery replays the records from there on (absent = 0).
const META_LOG_POS: &[u8] = b"log_pos";
const BLOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("blobs");
const BLOB_REFS: TableDefinition<u64, u64> = TableDefinition::new("blob_refs");
/// Record format 1 kept the transaction log in this table (seq → ETF record); format 2 keeps
/// it in the commit log. Only opened to drop it when converting a format-1 store.
const TXLOG_V1: TableDefinition<u64, &[u8]> = TableDefinition::new("txlog");

/// One transaction of the backlog: its (seq, txid) and its operations.
pub type LoggedTxn = (TxMeta, Vec<StoreOp>);

/// The backlog (`txlog_from`, `txlog_ids`) keeps this many transactions by default (by seq:
/// those with seq > last − this); config key `txlog-max-txns`.
pub const TXLOG_MAX_TXNS: u64 = 10_000;

/// A store file shorter than this cannot hold a redb database (its header alone is larger):
/// it was truncated.
const MIN_STORE_FILE_BYTES: u64 = 512;

/// The record format this code reads and writes (meta `format`): 2 = the tree plus the
/// commit log (1 = the tree with a `txlog` table, converted at open).
const FORMAT: u64 = 2;

/// In a full copy, values up to this many bytes are stored inline, longer ones in blobs.
pub const INLINE_MAX: usize = 64;

/// A full copy packs values into blobs of at most this size (unless one value is larger):
/// 64 KiB less room for redb's leaf header, so that a blob fills a 64 KiB page (redb
/// allocates power-of-two pages; 64 KiB of values would take a 128 KiB page).
pub const BLOB_TARGET: usize = 64 * 1024 - 256;

/// Identity of the last transaction applied to a store. `seq` 0 with txid "" is the empty
/// store that never saw a commit.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TxMeta {
    pub seq: u64,
    pub txid: String,
}

/// One change inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Set the value of a path (parents need not exist).
    Set(String, Vec<u8>),
    /// Remove a path and its whole subtree (no error if nothing is there).
    Delete(String),
}

/// Size of the data, for status output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Number of keys in the data table.
    pub entries: u64,
    /// Sum of key and value lengths, in bytes (the file is larger: pages, free space).
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An invalid keypath; the message names the path and what is wrong with it.
    #[error("bad path {0}")]
    BadPath(String),
    /// The data directory could not be created.
    #[error("cannot create store directory {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// Another process (or another `Store` in this process) holds the database.
    #[error("store {} is already open (is another ha-node using this data directory?)", file.display())]
    AlreadyOpen { file: PathBuf },
    /// The database file or a record in it is damaged.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// Any other storage failure (I/O error, ...); `op` says what we were doing.
    #[error("store {op} failed: {msg}")]
    Db { op: &'static str, msg: String },
    /// The store file exists but is damaged beyond what redb repairs (empty, truncated).
    #[error("store file {} {why}: refusing to start on it. Its data cannot be read; move the \
             data directory away (or delete the file) to start with an empty store, and let \
             the node get a full copy from the primary", file.display())]
    Damaged { file: PathBuf, why: String },
    /// The database was closed after an I/O error and is not reopened yet.
    #[error("store {} is closed after an I/O error (reopening)", file.display())]
    Closed { file: PathBuf },
}

impl StoreError {
    /// True for a failure of the storage itself (I/O error, damaged data, closed), as
    /// opposed to a bad request such as an invalid path.
    pub fn is_fault(&self) -> bool {
        !matches!(self, StoreError::BadPath(_))
    }
}

/// Maps a redb error into a `StoreError`, keeping corruption distinguishable.
fn db_err<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| match e.into() {
        redb::Error::Corrupted(msg) => StoreError::Corrupt(format!("{op}: {msg}")),
        other => StoreError::Db {
            op,
            msg: other.to_string(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Keypaths

/// A path shortened for error messages (a 100 KiB path is not repeated in full).
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 120;
        if self.0.len() <= MAX {
            return write!(f, "{:?}", self.0);
        }
        let mut end = MAX;
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{:?}... ({} bytes)", &self.0[..end], self.0.len())
    }
}

fn bad(path: &str, why: impl fmt::Display) -> StoreError {
    StoreError::BadPath(format!("{}: {why}", Shown(path)))
}

/// Checks a keypath. `allow_root` accepts "/" (for `list` and `exists`).
fn validate_path(path: &str, allow_root: bool) -> Result<(), StoreError> {
    if path.len() > MAX_PATH_LEN {
        return Err(bad(
            path,
            format_args!(
                "path of {} bytes exceeds the {MAX_PATH_LEN}-byte limit",
                path.len()
            ),
        ));
    }
    if path.is_empty() {
        return Err(bad(path, "empty path"));
    }
    if !path.starts_with('/') {
        return Err(bad(path, "a path must start with '/'"));
    }
    if path == "/" {
        return if allow_root {
            Ok(())
        } else {
            Err(bad(path, "the root is not a node that holds a value"))
        };
    }
    let bytes = path.as_bytes();
    let mut depth = 0usize;
    let mut seg_start = 1usize;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            0 => return Err(bad(path, format_args!("NUL byte at offset {i}"))),
            b'{' => depth += 1,
            b'}' => {
                if depth == 0 {
                    return Err(bad(path, format_args!("unbalanced '}}' at offset {i}")));
                }
                depth -= 1;
            }
            b'/' if depth == 0 => {
                if i == seg_start {
                    return Err(bad(path, format_args!("empty segment at offset {i}")));
                }
                seg_start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(bad(path, "unclosed '{'"));
    }
    if seg_start == bytes.len() {
        return Err(bad(path, "a path must not end with '/'"));
    }
    Ok(())
}

/// Splits off the first segment of `rest` (a keypath without its leading '/'), honouring
/// braces: returns the segment and whether more segments follow.
fn first_segment(rest: &str) -> (&str, bool) {
    let mut depth = 0usize;
    for (i, b) in rest.bytes().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            // '/' is ASCII, so `i` is a char boundary.
            b'/' if depth == 0 => return (&rest[..i], true),
            _ => {}
        }
    }
    (rest, false)
}

/// The segments of a valid keypath (brace-aware).
pub fn segments(path: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = path.strip_prefix('/').unwrap_or(path);
    while !rest.is_empty() {
        let (seg, more) = first_segment(rest);
        out.push(seg);
        if !more {
            break;
        }
        rest = &rest[seg.len() + 1..];
    }
    out
}

/// The key range `[start, end)` that holds exactly the strict descendants of `path`
/// ("/a/b" → ["/a/b/", "/a/b0"); '0' is the byte after '/'). The root gives every key.
fn subtree_range(path: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = Vec::with_capacity(path.len() + 1);
    start.extend_from_slice(path.as_bytes());
    if path != "/" {
        start.push(b'/');
    }
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last = b'0';
    }
    (start, end)
}

fn key_str(key: &[u8]) -> Result<&str, StoreError> {
    std::str::from_utf8(key).map_err(|e| {
        StoreError::Corrupt(format!(
            "key {:?} is not UTF-8: {e}",
            String::from_utf8_lossy(&key[..key.len().min(120)])
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Records: meta values and data entries

fn decode_u64(what: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        StoreError::Corrupt(format!("{what} has {} bytes, expected 8", bytes.len()))
    })?;
    Ok(u64::from_be_bytes(arr))
}

fn read_meta<T: ReadableTable<&'static [u8], &'static [u8]>>(
    meta: &T,
) -> Result<TxMeta, StoreError> {
    let seq = match meta.get(META_SEQ).map_err(db_err("read"))? {
        Some(v) => decode_u64("meta seq", v.value())?,
        None => 0,
    };
    let txid = match meta.get(META_TXID).map_err(db_err("read"))? {
        Some(v) => String::from_utf8(v.value().to_vec())
            .map_err(|e| StoreError::Corrupt(format!("meta txid is not UTF-8: {e}")))?,
        None => String::new(),
    };
    Ok(TxMeta { seq, txid })
}

fn read_bytes_counter<T: ReadableTable<&'static [u8], &'static [u8]>>(
    meta: &T,
) -> Result<u64, StoreError> {
    match meta.get(META_BYTES).map_err(db_err("read"))? {
        Some(v) => decode_u64("meta bytes", v.value()),
        None => Ok(0),
    }
}

fn write_meta(
    txn: &WriteTransaction,
    meta: &TxMeta,
    bytes: u64,
    op: &'static str,
) -> Result<(), StoreError> {
    let mut t = txn.open_table(META).map_err(db_err(op))?;
    t.insert(META_SEQ, meta.seq.to_be_bytes().as_slice())
        .map_err(db_err(op))?;
    t.insert(META_TXID, meta.txid.as_bytes())
        .map_err(db_err(op))?;
    t.insert(META_BYTES, bytes.to_be_bytes().as_slice())
        .map_err(db_err(op))?;
    Ok(())
}

fn read_log_pos<T: ReadableTable<&'static [u8], &'static [u8]>>(
    meta: &T,
) -> Result<u64, StoreError> {
    match meta.get(META_LOG_POS).map_err(db_err("read"))? {
        Some(v) => decode_u64("meta log_pos", v.value()),
        None => Ok(0),
    }
}

fn write_log_pos(txn: &WriteTransaction, at: u64, op: &'static str) -> Result<(), StoreError> {
    txn.open_table(META)
        .map_err(db_err(op))?
        .insert(META_LOG_POS, at.to_be_bytes().as_slice())
        .map_err(db_err(op))?;
    Ok(())
}

/// A decoded `data` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry<'a> {
    /// The value itself (written by `commit`, and small values of a full copy).
    Inline(&'a [u8]),
    /// `len` bytes at `off` in blob `blob` (larger values of a full copy).
    Ref { blob: u64, off: u32, len: u32 },
}

const TAG_INLINE: u8 = 0;
const TAG_REF: u8 = 1;
const REF_LEN: usize = 17;

impl<'a> Entry<'a> {
    fn decode(key: &[u8], raw: &'a [u8]) -> Result<Entry<'a>, StoreError> {
        match raw.split_first() {
            Some((&TAG_INLINE, v)) => Ok(Entry::Inline(v)),
            Some((&TAG_REF, r)) if raw.len() == REF_LEN => {
                let blob = decode_u64("a blob reference", &r[0..8])?;
                let mut off = [0u8; 4];
                let mut len = [0u8; 4];
                off.copy_from_slice(&r[8..12]);
                len.copy_from_slice(&r[12..16]);
                Ok(Entry::Ref {
                    blob,
                    off: u32::from_be_bytes(off),
                    len: u32::from_be_bytes(len),
                })
            }
            _ => Err(StoreError::Corrupt(format!(
                "record of {} has an unknown form ({} bytes, tag {:?})",
                Shown(&String::from_utf8_lossy(key)),
                raw.len(),
                raw.first()
            ))),
        }
    }

    fn encode_ref(blob: u64, off: u32, len: u32) -> [u8; REF_LEN] {
        let mut r = [0u8; REF_LEN];
        r[0] = TAG_REF;
        r[1..9].copy_from_slice(&blob.to_be_bytes());
        r[9..13].copy_from_slice(&off.to_be_bytes());
        r[13..17].copy_from_slice(&len.to_be_bytes());
        r
    }

    /// Length of the value this entry stands for, and the blob it uses.
    fn summary(&self) -> (u64, Option<u64>) {
        match self {
            Entry::Inline(v) => (v.len() as u64, None),
            Entry::Ref { blob, len, .. } => (u64::from(*len), Some(*blob)),
        }
    }
}

/// The value of a referenced entry, checked against the blob's real size.
fn slice_blob<'b>(
    key: &[u8],
    blob_id: u64,
    blob: Option<&'b [u8]>,
    off: u32,
    len: u32,
) -> Result<&'b [u8], StoreError> {
    let missing = |what: &str| {
        StoreError::Corrupt(format!(
            "record of {} refers to {what} (blob {blob_id}, offset {off}, length {len})",
            Shown(&String::from_utf8_lossy(key))
        ))
    };
    let blob = blob.ok_or_else(|| missing("a missing blob"))?;
    let start = off as usize;
    let end = start.saturating_add(len as usize);
    blob.get(start..end)
        .ok_or_else(|| missing(&format!("bytes beyond the blob's {} bytes", blob.len())))
}

/// Reads the value of a raw `data` record.
fn resolve<T: ReadableTable<u64, &'static [u8]>>(
    blobs: &T,
    key: &[u8],
    raw: &[u8],
) -> Result<Vec<u8>, StoreError> {
    match Entry::decode(key, raw)? {
        Entry::Inline(v) => Ok(v.to_vec()),
        Entry::Ref { blob, off, len } => {
            let g = blobs.get(blob).map_err(db_err("read"))?;
            Ok(slice_blob(key, blob, g.as_ref().map(|g| g.value()), off, len)?.to_vec())
        }
    }
}

fn inline_record(value: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(value.len() + 1);
    r.push(TAG_INLINE);
    r.extend_from_slice(value);
    r
}

/// The tables of a write transaction, with the bookkeeping every change needs: the byte
/// counter and the reference counts of blobs (a blob is removed with its last reference).
struct Writer<'t> {
    data: redb::Table<'t, &'static [u8], &'static [u8]>,
    blobs: redb::Table<'t, u64, &'static [u8]>,
    refs: redb::Table<'t, u64, u64>,
    /// Blob id → references released, applied by `finish`.
    unrefs: std::collections::BTreeMap<u64, u64>,
    bytes: u64,
    op: &'static str,
}

impl<'t> Writer<'t> {
    fn open(txn: &'t WriteTransaction, bytes: u64, op: &'static str) -> Result<Self, StoreError> {
        Ok(Writer {
            data: txn.open_table(DATA).map_err(db_err(op))?,
            blobs: txn.open_table(BLOBS).map_err(db_err(op))?,
            refs: txn.open_table(BLOB_REFS).map_err(db_err(op))?,
            unrefs: std::collections::BTreeMap::new(),
            bytes,
            op,
        })
    }

    /// Accounts for a record that was removed or replaced (`summary` of [`Entry::summary`]).
    /// Blob references are only counted here and released by [`Writer::finish`], once per
    /// blob (a subtree delete of a copied tree drops thousands of references to each blob).
    fn release(&mut self, key: &[u8], summary: (u64, Option<u64>)) {
        let (value_len, blob) = summary;
        self.bytes = self.bytes.saturating_sub(key.len() as u64 + value_len);
        if let Some(blob) = blob {
            *self.unrefs.entry(blob).or_insert(0) += 1;
        }
    }

    /// Applies the released blob references (a blob goes with its last reference) and
    /// returns the byte counter. Must be called before the transaction commits.
    fn finish(mut self) -> Result<u64, StoreError> {
        for (blob, n) in std::mem::take(&mut self.unrefs) {
            let count = match self.refs.get(blob).map_err(db_err(self.op))? {
                Some(c) => c.value(),
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "blob {blob} is used but has no reference count"
                    )))
                }
            };
            if count <= n {
                if count < n {
                    return Err(StoreError::Corrupt(format!(
                        "blob {blob} has {count} references but {n} records used it"
                    )));
                }
                self.refs.remove(blob).map_err(db_err(self.op))?;
                self.blobs.remove(blob).map_err(db_err(self.op))?;
            } else {
                self.refs.insert(blob, count - n).map_err(db_err(self.op))?;
            }
        }
        Ok(self.bytes)
    }

    /// Writes a record (an encoded entry) for `key` whose value is `value_len` bytes long.
    fn put(&mut self, key: &[u8], record: &[u8], value_len: u64) -> Result<(), StoreError> {
        let old = match self.data.insert(key, record).map_err(db_err(self.op))? {
            Some(g) => Some(Entry::decode(key, g.value())?.summary()),
            None => None,
        };
        if let Some(old) = old {
            self.release(key, old);
        }
        self.bytes = self.bytes.saturating_add(key.len() as u64 + value_len);
        Ok(())
    }

    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put(key.as_bytes(), &inline_record(value), value.len() as u64)
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let old = match self.data.remove(key).map_err(db_err(self.op))? {
            Some(g) => Some(Entry::decode(key, g.value())?.summary()),
            None => None,
        };
        if let Some(old) = old {
            self.release(key, old);
        }
        Ok(())
    }

    /// Applies the changes of one transaction.
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        for op in ops {
            match op {
                StoreOp::Set(p, v) => self.set(p, v)?,
                StoreOp::Delete(p) => self.delete(p)?,
            }
        }
        Ok(())
    }

    /// Removes `path` and every descendant.
    ///
    /// Done in batches of keys (bounded memory) removed one by one: redb's `retain_in` /
    /// `extract_from_if` copy a page per removed entry (they cannot modify the tree they
    /// iterate), which made a 100k-entry delete take seconds and grow the file by gigabytes.
    fn delete(&mut self, path: &str) -> Result<(), StoreError> {
        const BATCH: usize = 4096;
        self.remove(path.as_bytes())?;
        let (start, end) = subtree_range(path);
        loop {
            let mut keys: Vec<Vec<u8>> = Vec::new();
            {
                let range = self
                    .data
                    .range::<&[u8]>(start.as_slice()..end.as_slice())
                    .map_err(db_err(self.op))?;
                for item in range.take(BATCH) {
                    let (k, _) = item.map_err(db_err(self.op))?;
                    keys.push(k.value().to_vec());
                }
            }
            if keys.is_empty() {
                return Ok(());
            }
            for k in &keys {
                self.remove(k)?;
            }
        }
    }
}

/// ETF `{TxId, [{set, Path, Bin} | {delete, Path}]}`: one transaction-log record (also the
/// shape of a transaction in a rollback file).
pub fn log_record(txid: &str, ops: &[StoreOp]) -> Vec<u8> {
    use confd_ha::proto::term::Term;
    Term::Tuple(vec![Term::binary(txid), ops_term(ops)]).encode()
}

/// `[{set, Path, Bin} | {delete, Path}]`.
pub fn ops_term(ops: &[StoreOp]) -> confd_ha::proto::term::Term {
    use confd_ha::proto::term::Term;
    Term::List(
        ops.iter()
            .map(|o| match o {
                StoreOp::Set(p, v) => {
                    Term::Tuple(vec![Term::atom("set"), Term::binary(p), Term::binary(v)])
                }
                StoreOp::Delete(p) => Term::Tuple(vec![Term::atom("delete"), Term::binary(p)]),
            })
            .collect(),
    )
}

pub(crate) fn parse_log_record(seq: u64, raw: &[u8]) -> Result<(String, Vec<StoreOp>), StoreError> {
    use confd_ha::proto::term::Term;
    let bad = || StoreError::Corrupt(format!("transaction log record {seq} is damaged"));
    let t = Term::decode(raw).map_err(|_| bad())?;
    let e = t.as_tuple().filter(|e| e.len() == 2).ok_or_else(bad)?;
    let txid = String::from_utf8(e[0].as_binary().ok_or_else(bad)?.to_vec()).map_err(|_| bad())?;
    let text = |t: &Term| -> Result<String, StoreError> {
        String::from_utf8(t.as_binary().ok_or_else(bad)?.to_vec()).map_err(|_| bad())
    };
    let mut ops = Vec::new();
    for o in e[1].as_list().ok_or_else(bad)? {
        let f = o.as_tuple().ok_or_else(bad)?;
        ops.push(match (f.first().and_then(|a| a.as_atom()), f.len()) {
            (Some("set"), 3) => {
                StoreOp::Set(text(&f[1])?, f[2].as_binary().ok_or_else(bad)?.to_vec())
            }
            (Some("delete"), 2) => StoreOp::Delete(text(&f[1])?),
            _ => return Err(bad()),
        });
    }
    Ok((txid, ops))
}

// ---------------------------------------------------------------------------------------------
// Store

/// After this long without a checkpoint (and with something logged since), the background
/// checkpointer makes the tree durable and retires log segments. It bounds the replay after a
/// crash, together with [`CHECKPOINT_LOG_BYTES`].
pub const CHECKPOINT_INTERVAL_MS: u64 = 1000;

/// A checkpoint is also started once this many bytes were logged since the last one.
pub const CHECKPOINT_LOG_BYTES: u64 = 32 * 1024 * 1024;

/// A clean close waits at most this long for its last checkpoint.
pub const SHUTDOWN_CHECKPOINT_WAIT_MS: u64 = 5000;

/// The durable store. `Send + Sync`; share it with `Arc`. Dropping it closes it cleanly
/// (checkpoint, then the database is closed), as [`Store::shutdown`] does.
pub struct Store {
    inner: Arc<Inner>,
    /// The checkpointer thread and the channel it closes when it ends.
    checkpointer: Mutex<Option<(std::thread::JoinHandle<()>, std::sync::mpsc::Receiver<()>)>>,
}

/// What the store and its checkpointer thread share.
///
/// Lock order: a redb write transaction, then `files`, then `log`.
struct Inner {
    /// None while closed after an I/O error (see [`Store::reopen`]).
    db: RwLock<Option<Arc<Database>>>,
    /// The commit log; None while closed.
    log: Mutex<Option<Log>>,
    /// Held for reading while logged records are read back from segment files, for writing
    /// while segments are removed or renamed.
    files: RwLock<()>,
    dir: PathBuf,
    file: PathBuf,
    /// How many transactions the backlog keeps (≥ 1).
    txlog_max_txns: AtomicU64,
    /// A failed background checkpoint (until the store is reopened): commits refuse.
    fault: Mutex<Option<String>>,
    /// Wakes the checkpointer: (stop, checkpoint now).
    wake: Mutex<(bool, bool)>,
    wake_cv: Condvar,
    /// fdatasyncs of the commit log (one per group commit) and checkpoints, since start.
    log_syncs: AtomicU64,
    checkpoints: AtomicU64,
    /// The seq the tree was durable at when opened, reopened or replaced by a full copy
    /// (with the log's synced seq: [`Store::durable_seq`]).
    durable_base: AtomicU64,
    /// The last attempt to prepare a spare segment failed (warned once per streak).
    spare_failed: std::sync::atomic::AtomicBool,
}

fn lk<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("file", &self.inner.file)
            .finish()
    }
}

impl Inner {
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| self.closed())
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            file: self.file.clone(),
        }
    }

    /// Makes the tree durable up to the last commit (a durable redb commit, with redb's
    /// quick-repair state so that opening after a crash needs no full repair), then retires
    /// the log segments nobody needs (removed, or the first one renamed to be the spare) and
    /// keeps a spare segment ready. Returns whether a checkpoint was written.
    fn checkpoint(&self) -> Result<bool, StoreError> {
        const OP: &str = "checkpoint";
        if let Some(f) = lk(&self.fault).clone() {
            return Err(StoreError::Db { op: OP, msg: f });
        }
        let Ok(db) = self.db() else { return Ok(false) };
        let mut txn = db.begin_write().map_err(db_err(OP))?;
        let logged = match lk(&self.log).as_mut() {
            Some(log) => std::mem::take(&mut log.since_checkpoint),
            None => return Ok(false),
        };
        let mut wrote = false;
        let at = if logged > 0 {
            txn.set_durability(Durability::Immediate);
            txn.set_quick_repair(true);
            let at = {
                let meta = txn.open_table(META).map_err(db_err(OP))?;
                read_log_pos(&meta)?
            };
            // Records committed without a sync are written first: the durable tree never
            // holds a record the log could lose (`at` is past them).
            if let Some(log) = lk(&self.log).as_mut() {
                log.flush()?;
            }
            txn.commit().map_err(db_err(OP))?;
            self.checkpoints.fetch_add(1, Ordering::Relaxed);
            wrote = true;
            Some(at)
        } else {
            drop(txn);
            None
        };
        drop(db);
        let _files = self.files.write().unwrap_or_else(|e| e.into_inner());
        let mut lg = lk(&self.log);
        let Some(log) = lg.as_mut() else {
            return Ok(wrote);
        };
        let retired = match at {
            Some(at) => log.retire(at, self.txlog_max_txns.load(Ordering::Relaxed)),
            None => Vec::new(),
        };
        let mut reuse = None;
        let want = log.wants_spare();
        for no in retired {
            if want.is_some() && reuse.is_none() {
                reuse = Some(no);
                continue;
            }
            let p = log.seg_path(no);
            std::fs::remove_file(&p).map_err(|e| StoreError::Db {
                op: OP,
                msg: format!("removing {}: {e}", p.display()),
            })?;
        }
        if let Some(no) = want {
            match log::prepare_segment(log.dir(), no, reuse) {
                Ok(f) => {
                    log.set_spare(no, f);
                    self.spare_failed.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    // Not a fault: the writer creates the next segment itself when it needs
                    // one (and fails the commit then if it cannot). Warned once per streak.
                    let _ = std::fs::remove_file(log.seg_path(no));
                    if !self.spare_failed.swap(true, Ordering::Relaxed) {
                        crate::warn!("store", "preparing the next commit log segment: {e}");
                    }
                }
            }
        }
        Ok(wrote)
    }

    fn kick(&self) {
        lk(&self.wake).1 = true;
        self.wake_cv.notify_one();
    }

    /// The checkpointer thread: a checkpoint every [`CHECKPOINT_INTERVAL_MS`], or sooner when
    /// kicked; a failure is kept in `fault` (commits refuse, the node reopens the store).
    fn checkpointer(self: Arc<Self>) {
        let every = std::time::Duration::from_millis(CHECKPOINT_INTERVAL_MS);
        loop {
            {
                let mut w = lk(&self.wake);
                if !w.0 && !w.1 {
                    w = self
                        .wake_cv
                        .wait_timeout(w, every)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                if w.0 {
                    return;
                }
                w.1 = false;
            }
            if lk(&self.fault).is_some() {
                continue;
            }
            if let Err(e) = self.checkpoint() {
                crate::error!("store", "checkpoint of {} failed: {e}", self.file.display());
                lk(&self.fault).get_or_insert_with(|| e.to_string());
            }
        }
    }

    /// Opens the database and recovers the log: transactions logged after the tree's last
    /// checkpoint are replayed, then checkpointed.
    fn open_parts(dir: &Path, file: &Path) -> Result<(Database, Log), StoreError> {
        let db = Store::open_db(file)?;
        let (tree, log_base, log_pos) = {
            let txn = db.begin_read().map_err(db_err("open"))?;
            let meta = txn.open_table(META).map_err(db_err("open"))?;
            let base = match meta.get(META_LOG_BASE).map_err(db_err("open"))? {
                Some(v) => decode_u64("meta log_base", v.value())?,
                None => 0,
            };
            (read_meta(&meta)?, base, read_log_pos(&meta)?)
        };
        let rec = Log::recover(dir, log_base, log_pos)?;
        for n in &rec.notes {
            match n.strip_prefix("WARN: ") {
                Some(w) => crate::warn!("store", "{w}"),
                None => crate::info!("store", "{n}"),
            }
        }
        if let Some((last, _)) = rec.replay.last() {
            const OP: &str = "recovery";
            let mut txn = db.begin_write().map_err(db_err(OP))?;
            txn.set_durability(Durability::Immediate);
            txn.set_quick_repair(true);
            let bytes = {
                let meta = txn.open_table(META).map_err(db_err(OP))?;
                read_bytes_counter(&meta)?
            };
            let bytes = {
                let mut w = Writer::open(&txn, bytes, OP)?;
                for (_, ops) in &rec.replay {
                    w.apply(ops)?;
                }
                w.finish()?
            };
            write_meta(&txn, last, bytes, OP)?;
            write_log_pos(&txn, rec.replay_end, OP)?;
            txn.commit().map_err(db_err(OP))?;
            crate::info!(
                "store",
                "replayed {} transaction(s) from the commit log (seq {}..={}) onto the tree \
                 at seq {}",
                rec.replay.len(),
                rec.replay[0].0.seq,
                last.seq,
                tree.seq
            );
        }
        Ok((db, rec.log))
    }
}

impl Store {
    /// Opens (or creates) `<dir>/store.redb` and the commit log in `<dir>/log/`, creating
    /// `dir` if needed, and starts the checkpointer thread. Recovery: transactions logged
    /// after the tree's last checkpoint are replayed; a torn record at the log's tail is cut
    /// off (WARN); a damaged record followed by good ones is refused
    /// ([`StoreError::Damaged`], naming the segment file and offset).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let file = dir.join(STORE_FILE);
        let (db, log) = Inner::open_parts(dir, &file)?;
        let inner = Arc::new(Inner {
            db: RwLock::new(Some(Arc::new(db))),
            log: Mutex::new(Some(log)),
            files: RwLock::new(()),
            dir: dir.to_path_buf(),
            file,
            txlog_max_txns: AtomicU64::new(TXLOG_MAX_TXNS),
            fault: Mutex::new(None),
            wake: Mutex::new((false, false)),
            wake_cv: Condvar::new(),
            log_syncs: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            durable_base: AtomicU64::new(0),
            spare_failed: std::sync::atomic::AtomicBool::new(false),
        });
        let i = inner.clone();
        let (done, ended) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(move || {
                i.checkpointer();
                drop(done);
            })
            .map_err(|e| StoreError::Db {
                op: "open",
                msg: format!("cannot start the checkpointer thread: {e}"),
            })?;
        let s = Store {
            inner,
            checkpointer: Mutex::new(Some((t, ended))),
        };
        let seq = s.last_tx()?.seq;
        s.inner.durable_base.store(seq, Ordering::Relaxed);
        Ok(s)
    }

    /// Sets how many transactions the backlog (`txlog_from`, `txlog_ids`) keeps (at least 1).
    pub fn set_txlog_max_txns(&self, n: u64) {
        self.inner.txlog_max_txns.store(n.max(1), Ordering::Relaxed);
    }

    /// Closes the database and the log and opens them again (after an I/O error redb and the
    /// log refuse every operation until then); recovery replays the log as at open. Fails
    /// while a snapshot or copy still holds the old database, or while the fault persists;
    /// call again later. Returns the last transaction.
    pub fn reopen(&self) -> Result<TxMeta, StoreError> {
        let i = &self.inner;
        let mut g = i.db.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = g.take() {
            if Arc::strong_count(&old) > 1 {
                *g = Some(old);
                return Err(StoreError::Db {
                    op: "reopen",
                    msg: "the database is still in use (a full copy?)".into(),
                });
            }
            drop(old);
        }
        lk(&i.log).take();
        let (db, log) = Inner::open_parts(&i.dir, &i.file)?;
        *g = Some(Arc::new(db));
        *lk(&i.log) = Some(log);
        lk(&i.fault).take();
        drop(g);
        let m = self.last_tx()?;
        i.durable_base.store(m.seq, Ordering::Relaxed);
        Ok(m)
    }

    /// Closes the database and the log after an I/O error, without a checkpoint (operations
    /// fail with `Closed` until [`Store::reopen`]).
    pub fn close(&self) {
        let mut g = self.inner.db.write().unwrap_or_else(|e| e.into_inner());
        g.take();
        lk(&self.inner.log).take();
    }

    /// Clean close, for a stopping node: stops the checkpointer, writes a last checkpoint
    /// (so that the next open replays nothing and needs no repair) and closes the database
    /// and the log. Later operations fail with `Closed`. Idempotent.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        let t = lk(&self.checkpointer).take();
        let Some((t, ended)) = t else { return Ok(()) };
        lk(&self.inner.wake).0 = true;
        self.inner.wake_cv.notify_one();
        // A checkpoint in progress may wait for an open write (a full copy being received):
        // wait a bounded time, then leave the thread to end on its own.
        let wait = std::time::Duration::from_millis(SHUTDOWN_CHECKPOINT_WAIT_MS);
        if !matches!(
            ended.recv_timeout(wait),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        ) {
            let _ = t.join();
        }
        let r = if lk(&self.inner.fault).is_none() {
            // On a helper thread, waited for a bounded time: a write transaction that is still
            // open (a full copy being received) would make the checkpoint wait for it.
            let (tx, rx) = std::sync::mpsc::channel();
            let i = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("checkpoint".into())
                .spawn(move || {
                    let _ = tx.send(i.checkpoint().map(|_| ()));
                });
            match spawned {
                Ok(_) => rx
                    .recv_timeout(std::time::Duration::from_millis(
                        SHUTDOWN_CHECKPOINT_WAIT_MS,
                    ))
                    .unwrap_or_else(|_| {
                        Err(StoreError::Db {
                            op: "close",
                            msg: format!(
                                "no checkpoint within {SHUTDOWN_CHECKPOINT_WAIT_MS} ms (a write \
                                 such as a full copy is still open): closing without one (the \
                                 next open replays the commit log)"
                            ),
                        })
                    }),
                Err(e) => Err(StoreError::Db {
                    op: "close",
                    msg: format!("cannot start a thread: {e}"),
                }),
            }
        } else {
            Ok(())
        };
        let sealed = match lk(&self.inner.log).as_mut() {
            Some(log) if r.is_ok() => log.seal(),
            _ => Ok(()),
        };
        self.close();
        r.and(sealed)
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.inner.db()
    }

    /// fdatasyncs of the commit log since start (one per group commit).
    pub fn log_syncs(&self) -> u64 {
        self.inner.log_syncs.load(Ordering::Relaxed)
    }

    /// Checkpoints written since start.
    pub fn checkpoints(&self) -> u64 {
        self.inner.checkpoints.load(Ordering::Relaxed)
    }

    /// Writes a checkpoint now (tests and benchmarks; the checkpointer does this on its own).
    pub fn checkpoint(&self) -> Result<bool, StoreError> {
        self.inner.checkpoint()
    }

    /// The commit log's directory.
    pub fn log_dir(&self) -> PathBuf {
        self.inner.dir.join(log::LOG_DIR)
    }

    /// Refuses an empty or truncated file (redb would treat a 0-byte file as a new empty
    /// database, and may panic on a truncated one), then opens or creates the database.
    fn open_db(file: &Path) -> Result<Database, StoreError> {
        let file = file.to_path_buf();
        match std::fs::metadata(&file) {
            Ok(m) if m.len() == 0 => {
                return Err(StoreError::Damaged {
                    file,
                    why: "is empty (0 bytes)".into(),
                })
            }
            Ok(m) if m.len() < MIN_STORE_FILE_BYTES => {
                return Err(StoreError::Damaged {
                    file,
                    why: format!("is truncated ({} bytes)", m.len()),
                })
            }
            _ => {}
        }
        // redb asserts on some truncations: catch that (quietly: the error below says it).
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let opened = std::panic::catch_unwind(|| Database::create(&file));
        std::panic::set_hook(hook);
        let opened = match opened {
            Ok(r) => r,
            Err(p) => {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                return Err(StoreError::Damaged {
                    file,
                    why: format!("is damaged or truncated (reading it failed: {what})"),
                });
            }
        };
        let db = opened.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StoreError::AlreadyOpen { file: file.clone() }
            }
            other => match db_err::<redb::DatabaseError>("open")(other) {
                StoreError::Db { msg, .. } => StoreError::Db {
                    op: "open",
                    msg: format!("{}: {msg}", file.display()),
                },
                e => e,
            },
        })?;
        // Create the tables once so that readers never see a missing table, and check (or
        // set) the record format.
        let damaged = |e: StoreError| match e {
            StoreError::Corrupt(why) => StoreError::Damaged {
                file: file.clone(),
                why: format!("is damaged ({why})"),
            },
            e => e,
        };
        let mut txn = db.begin_write().map_err(db_err("open")).map_err(damaged)?;
        txn.set_durability(Durability::Immediate);
        txn.set_quick_repair(true);
        let mut from_v1 = false;
        let mut changed = false;
        {
            let data = txn.open_table(DATA).map_err(db_err("open"))?;
            txn.open_table(BLOBS).map_err(db_err("open"))?;
            txn.open_table(BLOB_REFS).map_err(db_err("open"))?;
            let mut meta = txn.open_table(META).map_err(db_err("open"))?;
            let format = match meta.get(META_FORMAT).map_err(db_err("open"))? {
                Some(v) => Some(decode_u64("meta format", v.value())?),
                None => None,
            };
            let refuse = |what: String| StoreError::Db {
                op: "open",
                msg: format!(
                    "{}: {what}; this ha-node reads record format {FORMAT} (move the data \
                     directory away and let the node get a full copy)",
                    file.display()
                ),
            };
            match format {
                Some(FORMAT) => {
                    // Nothing to write unless a table is new.
                    changed = data.is_empty().map_err(db_err("open"))?;
                }
                Some(1) => {
                    // Format 1 kept the transaction log in a redb table and every commit
                    // durable in the tree: the tree needs no replay; the old backlog goes.
                    from_v1 = true;
                    meta.insert(META_FORMAT, FORMAT.to_be_bytes().as_slice())
                        .map_err(db_err("open"))?;
                }
                Some(other) => {
                    return Err(refuse(format!("record format {other} is not supported")))
                }
                None if !data.is_empty().map_err(db_err("open"))? => {
                    return Err(refuse(
                        "the data was written by an early ha-node build without a record \
                         format"
                            .into(),
                    ))
                }
                None => {
                    changed = true;
                    meta.insert(META_FORMAT, FORMAT.to_be_bytes().as_slice())
                        .map_err(db_err("open"))?;
                }
            }
        }
        if from_v1 {
            txn.delete_table(TXLOG_V1).map_err(db_err("open"))?;
            // Segments left by anything else are not this tree's history.
            let base = 1u64;
            txn.open_table(META)
                .map_err(db_err("open"))?
                .insert(META_LOG_BASE, base.to_be_bytes().as_slice())
                .map_err(db_err("open"))?;
            write_log_pos(&txn, log::pos(base, 0), "open")?;
        }
        if changed || from_v1 {
            txn.commit().map_err(db_err("open"))?;
        } else {
            txn.abort().map_err(db_err("open"))?;
        }
        if from_v1 {
            crate::warn!(
                "store",
                "{}: converted from record format 1 to {FORMAT} (the transaction log moves to \
                 the commit log; the old backlog is dropped)",
                file.display()
            );
        }
        Ok(db)
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.inner.file
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        self.db()?.begin_read().map_err(db_err("read"))
    }

    /// The value stored at `path`, if any.
    pub fn get(&self, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        validate_path(path, false)?;
        let txn = self.read()?;
        let t = txn.open_table(DATA).map_err(db_err("read"))?;
        let Some(raw) = t.get(path.as_bytes()).map_err(db_err("read"))? else {
            return Ok(None);
        };
        let blobs = txn.open_table(BLOBS).map_err(db_err("read"))?;
        resolve(&blobs, path.as_bytes(), raw.value()).map(Some)
    }

    /// Whether `path` is a key or has descendants. The root "/" always exists.
    pub fn exists(&self, path: &str) -> Result<bool, StoreError> {
        validate_path(path, true)?;
        if path == "/" {
            return Ok(true);
        }
        let txn = self.read()?;
        let t = txn.open_table(DATA).map_err(db_err("read"))?;
        if t.get(path.as_bytes()).map_err(db_err("read"))?.is_some() {
            return Ok(true);
        }
        let (start, end) = subtree_range(path);
        let mut r = t
            .range::<&[u8]>(start.as_slice()..end.as_slice())
            .map_err(db_err("read"))?;
        match r.next() {
            Some(item) => {
                item.map_err(db_err("read"))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The names of the immediate children of `path` ("/" for the top level), sorted and
    /// without duplicates. A missing path has no children (empty list, not an error).
    ///
    /// Cost: one seek per child that has descendants plus one step per child that is a key,
    /// not a scan of the whole subtree.
    pub fn list(&self, path: &str) -> Result<Vec<String>, StoreError> {
        validate_path(path, true)?;
        let txn = self.read()?;
        let t = txn.open_table(DATA).map_err(db_err("read"))?;
        let (prefix, end) = subtree_range(path);
        let plen = prefix.len();
        let mut names = BTreeSet::new();
        let mut start = prefix.clone();
        loop {
            let mut reseek: Option<Vec<u8>> = None;
            let range = t
                .range::<&[u8]>(start.as_slice()..end.as_slice())
                .map_err(db_err("read"))?;
            for item in range {
                let (k, _) = item.map_err(db_err("read"))?;
                let key = key_str(k.value())?;
                let rest = key.get(plen..).unwrap_or("");
                let (child, more) = first_segment(rest);
                if child.is_empty() {
                    return Err(StoreError::Corrupt(format!(
                        "key {} has an empty segment",
                        Shown(key)
                    )));
                }
                names.insert(child.to_string());
                if more {
                    // Skip the rest of this child's subtree: [prefix child '/', prefix child '0').
                    let mut next = Vec::with_capacity(plen + child.len() + 1);
                    next.extend_from_slice(&prefix);
                    next.extend_from_slice(child.as_bytes());
                    next.push(b'0');
                    reseek = Some(next);
                    break;
                }
            }
            match reseek {
                Some(next) => start = next,
                None => break,
            }
        }
        Ok(names.into_iter().collect())
    }

    /// The meta of the last committed transaction (default for an empty store).
    pub fn last_tx(&self) -> Result<TxMeta, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(META).map_err(db_err("read"))?;
        read_meta(&t)
    }

    /// Group commit: applies the transactions in order, as one group: ONE log write and ONE
    /// fdatasync of the commit log make them all durable, then the tree (redb) is updated
    /// without durability (the checkpointer makes it durable later); the meta of the last one
    /// becomes current. `Delete` removes the path and its subtree. Every path is checked, and
    /// every change applied to a redb write transaction, before anything is logged: on any
    /// error before the log write nothing is applied. An empty slice is a no-op. Blocks while
    /// a [`CopyWriter`] exists.
    ///
    /// A failed log write or fdatasync is a fault: the log refuses appends until
    /// [`Store::reopen`] (the outcome of the failed group is unknown: it may be durable).
    pub fn commit(&self, txns: &[(TxMeta, Vec<StoreOp>)]) -> Result<(), StoreError> {
        self.commit_group(txns, true)
    }

    /// As [`Store::commit`], but returns without waiting for the commit log's fdatasync: the
    /// transactions are applied to the tree (visible to readers at once) and their log
    /// records are written and synced with the next group commit or checkpoint (at most
    /// [`CHECKPOINT_INTERVAL_MS`] later). After a crash before then the store comes back at
    /// an earlier transaction (never a partial one, never with a hole): for a caller whose
    /// transactions are durable elsewhere and re-applied from there (Raft mode's log).
    /// [`Store::durable_seq`] says how far the store is durable.
    pub fn commit_unsynced(&self, txns: &[(TxMeta, Vec<StoreOp>)]) -> Result<(), StoreError> {
        self.commit_group(txns, false)
    }

    /// The seq of the last transaction that is durable (its log record synced, or the tree
    /// checkpointed with it): a crash now leaves the store at this seq or later.
    pub fn durable_seq(&self) -> u64 {
        let i = &self.inner;
        let logged = lk(&i.log).as_ref().map_or(0, |l| l.synced_seq);
        logged.max(i.durable_base.load(Ordering::Relaxed))
    }

    /// Writes and syncs the records of [`Store::commit_unsynced`] not yet written (one
    /// fdatasync; none if there are none): [`Store::durable_seq`] is the last commit after.
    /// A failure is a fault, as a failed group commit.
    pub fn sync_log(&self) -> Result<(), StoreError> {
        let mut lg = lk(&self.inner.log);
        let log = lg.as_mut().ok_or_else(|| self.inner.closed())?;
        log.flush()?;
        self.inner.log_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn commit_group(&self, txns: &[(TxMeta, Vec<StoreOp>)], sync: bool) -> Result<(), StoreError> {
        let Some((last_meta, _)) = txns.last() else {
            return Ok(());
        };
        for (_, ops) in txns {
            for op in ops {
                match op {
                    StoreOp::Set(p, _) | StoreOp::Delete(p) => validate_path(p, false)?,
                }
            }
        }
        const OP: &str = "commit";
        if let Some(f) = lk(&self.inner.fault).clone() {
            return Err(StoreError::Db {
                op: "checkpoint",
                msg: f,
            });
        }
        let db = self.db()?;
        let mut txn = db.begin_write().map_err(db_err(OP))?;
        txn.set_durability(Durability::None);
        let bytes = {
            let meta = txn.open_table(META).map_err(db_err(OP))?;
            read_bytes_counter(&meta)?
        };
        let bytes = {
            let mut w = Writer::open(&txn, bytes, OP)?;
            for (_, ops) in txns {
                w.apply(ops)?;
            }
            w.finish()?
        };
        write_meta(&txn, last_meta, bytes, OP)?;
        let kick = {
            let mut lg = lk(&self.inner.log);
            let log = lg.as_mut().ok_or_else(|| self.inner.closed())?;
            let r = log.append(txns, sync);
            if sync {
                self.inner.log_syncs.fetch_add(1, Ordering::Relaxed);
            }
            write_log_pos(&txn, r?, OP)?;
            log.since_checkpoint >= CHECKPOINT_LOG_BYTES
        };
        txn.commit().map_err(db_err(OP))?;
        if kick {
            self.inner.kick();
        }
        Ok(())
    }

    /// The logged transactions with seq >= `from`, oldest first: the backlog, i.e. at most
    /// the transactions with seq > (last logged seq − `txlog-max-txns`), read back from the
    /// commit log. Transactions that came by a full copy are not there (a copy starts a new
    /// history).
    pub fn txlog_from(&self, from: u64) -> Result<Vec<LoggedTxn>, StoreError> {
        Ok(self.txlog_within(from, usize::MAX)?.unwrap_or_default())
    }

    /// As [`Store::txlog_from`], but None, without reading any of them, when their records
    /// in the commit log take more than `max_bytes` in all (a bound on what one read costs
    /// in memory).
    pub fn txlog_within(
        &self,
        from: u64,
        max_bytes: usize,
    ) -> Result<Option<Vec<LoggedTxn>>, StoreError> {
        let i = &self.inner;
        let _files = i.files.read().unwrap_or_else(|e| e.into_inner());
        let (entries, dir) = {
            let mut lg = lk(&i.log);
            let log = lg.as_mut().ok_or_else(|| i.closed())?;
            // The backlog is read from the segment files: unsynced records are written first.
            log.flush()?;
            (
                log.backlog(from, u64::MAX, i.txlog_max_txns.load(Ordering::Relaxed)),
                log.dir().to_path_buf(),
            )
        };
        let bytes: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
        if bytes > max_bytes as u64 {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(entries.len());
        let mut open: Option<(u64, std::fs::File)> = None;
        for e in &entries {
            let p = dir.join(format!("{:016x}.seg", e.seg));
            if open.as_ref().map(|(n, _)| *n) != Some(e.seg) {
                let f = std::fs::File::open(&p).map_err(|x| StoreError::Db {
                    op: "read",
                    msg: format!("commit log {}: {x}", p.display()),
                })?;
                open = Some((e.seg, f));
            }
            if let Some((_, f)) = &open {
                out.push(log::read_entry(f, &p, e)?);
            }
        }
        Ok(Some(out))
    }

    /// The (seq, txid) of the backlog's transactions with `lo <= seq <= hi`, oldest first
    /// (from memory: no file is read).
    pub fn txlog_ids(&self, lo: u64, hi: u64) -> Result<Vec<(u64, String)>, StoreError> {
        if lo > hi {
            return Ok(Vec::new());
        }
        let i = &self.inner;
        let mut lg = lk(&i.log);
        let log = lg.as_mut().ok_or_else(|| i.closed())?;
        log.flush()?;
        Ok(log
            .backlog(lo, hi, i.txlog_max_txns.load(Ordering::Relaxed))
            .into_iter()
            .map(|e| (e.seq, e.txid))
            .collect())
    }

    /// A consistent read view for a full copy: its meta and all (path, value) pairs, streamed
    /// in key order by [`Snapshot::next_chunk`]. Commits made after this call are not seen.
    /// Holding a snapshot for long keeps the pages of its version alive (the file grows if
    /// many commits happen meanwhile) but blocks nobody.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        const OP: &str = "snapshot";
        let db = self.db()?;
        let txn = db.begin_read().map_err(db_err(OP))?;
        let meta_t = txn.open_table(META).map_err(db_err(OP))?;
        let meta = read_meta(&meta_t)?;
        let bytes = read_bytes_counter(&meta_t)?;
        let data = txn.open_table(DATA).map_err(db_err(OP))?;
        let blobs = txn.open_table(BLOBS).map_err(db_err(OP))?;
        let entries = data.len().map_err(db_err(OP))?;
        let range = data.range::<&[u8]>(..).map_err(db_err(OP))?;
        Ok(Snapshot {
            range,
            blobs,
            blob: None,
            pending: None,
            done: false,
            meta,
            stats: StoreStats { entries, bytes },
            _txn: txn,
            _db: db,
        })
    }

    /// Starts receiving a full copy. The chunks are staged in a redb write transaction that
    /// first clears the data; [`CopyWriter::finish`] commits it durably with the new meta,
    /// replacing everything atomically, and the commit log's history with it (the copy's
    /// meta is the new base: `txlog_from` is empty after it). Dropping the writer (or an
    /// error) aborts: the old data
    /// and meta stay. Reads keep working meanwhile (they see the old data); `commit` blocks
    /// until the writer is finished or dropped.
    pub fn begin_copy(&self) -> Result<CopyWriter, StoreError> {
        const OP: &str = "full copy";
        let db = self.db()?;
        let mut txn = db.begin_write().map_err(db_err(OP))?;
        txn.set_durability(Durability::Immediate);
        txn.delete_table(DATA).map_err(db_err(OP))?;
        txn.delete_table(BLOBS).map_err(db_err(OP))?;
        txn.delete_table(BLOB_REFS).map_err(db_err(OP))?;
        // Recreate them empty, so that a copy of nothing still leaves valid tables.
        drop(Writer::open(&txn, 0, OP)?);
        Ok(CopyWriter {
            txn: Some(txn),
            stats: StoreStats::default(),
            next_blob: 1,
            inner: self.inner.clone(),
            _db: db,
        })
    }

    /// Number of keys and approximate data size. Returns zeros if the store cannot be read
    /// (the error shows up on the next real operation).
    pub fn stats(&self) -> StoreStats {
        self.try_stats().unwrap_or_default()
    }

    fn try_stats(&self) -> Result<StoreStats, StoreError> {
        let txn = self.read()?;
        let data = txn.open_table(DATA).map_err(db_err("read"))?;
        let meta = txn.open_table(META).map_err(db_err("read"))?;
        Ok(StoreStats {
            entries: data.len().map_err(db_err("read"))?,
            bytes: read_bytes_counter(&meta)?,
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            crate::warn!("store", "closing {}: {e}", self.inner.file.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot

/// A consistent read view of the whole store (see [`Store::snapshot`]). `Send`.
///
/// It keeps the database open: drop it before opening the same directory again.
pub struct Snapshot {
    // Field order = drop order: the iterator and tables, then the transaction, then the database.
    range: redb::Range<'static, &'static [u8], &'static [u8]>,
    blobs: redb::ReadOnlyTable<u64, &'static [u8]>,
    /// The blob read last (entries of one copy chunk share a blob and come in order).
    blob: Option<(u64, redb::AccessGuard<'static, &'static [u8]>)>,
    pending: Option<(String, Vec<u8>)>,
    done: bool,
    meta: TxMeta,
    stats: StoreStats,
    _txn: ReadTransaction,
    _db: Arc<Database>,
}

impl Snapshot {
    /// The transaction this view is at.
    pub fn meta(&self) -> &TxMeta {
        &self.meta
    }

    /// Number of entries and data bytes in this view (for progress logs).
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    fn value_of(&mut self, key: &[u8], raw: &[u8]) -> Result<Vec<u8>, StoreError> {
        match Entry::decode(key, raw)? {
            Entry::Inline(v) => Ok(v.to_vec()),
            Entry::Ref { blob, off, len } => {
                if self.blob.as_ref().map(|(id, _)| *id) != Some(blob) {
                    self.blob = None;
                    if let Some(g) = self.blobs.get(blob).map_err(db_err("snapshot"))? {
                        self.blob = Some((blob, g));
                    }
                }
                let b = self.blob.as_ref().map(|(_, g)| g.value());
                Ok(slice_blob(key, blob, b, off, len)?.to_vec())
            }
        }
    }

    /// The next (path, value) pairs in key order, at most `max_bytes` of key + value bytes
    /// in total — except that a chunk always holds at least one entry, so one value larger
    /// than `max_bytes` comes alone. `Ok(None)` once everything was returned. Each entry is
    /// returned exactly once. An error (I/O, corruption) ends the copy: never treat a
    /// snapshot that failed as complete.
    #[allow(clippy::type_complexity)]
    pub fn next_chunk(
        &mut self,
        max_bytes: usize,
    ) -> Result<Option<Vec<(String, Vec<u8>)>>, StoreError> {
        let mut out = Vec::new();
        let mut size = 0usize;
        if let Some((k, v)) = self.pending.take() {
            size = k.len() + v.len();
            out.push((k, v));
        }
        while !self.done {
            let Some(item) = self.range.next() else {
                self.done = true;
                break;
            };
            let (k, v) = item.map_err(db_err("snapshot"))?;
            let key = key_str(k.value())?.to_string();
            let value = self.value_of(k.value(), v.value())?;
            let n = key.len() + value.len();
            if !out.is_empty() && size.saturating_add(n) > max_bytes {
                self.pending = Some((key, value));
                break;
            }
            size += n;
            out.push((key, value));
            if size >= max_bytes {
                break;
            }
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }
}

// ---------------------------------------------------------------------------------------------
// CopyWriter

/// Receives a full copy (see [`Store::begin_copy`]). `Send`. Dropping it aborts the copy.
pub struct CopyWriter {
    txn: Option<WriteTransaction>,
    stats: StoreStats,
    next_blob: u64,
    inner: Arc<Inner>,
    _db: Arc<Database>,
}

impl CopyWriter {
    /// Stages a chunk of (path, value) pairs. Paths are checked; a path given twice keeps the
    /// last value. Nothing is visible to readers before `finish`.
    ///
    /// Values longer than [`INLINE_MAX`] bytes are packed into blobs of about [`BLOB_TARGET`]
    /// bytes and the `data` records point into them: redb rebuilds a 4 KiB leaf on every
    /// insert, and 1 KiB values fill leaves with two or three entries, so packing halves the
    /// time of a large copy (see the module documentation).
    pub fn put_chunk(&mut self, chunk: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        const OP: &str = "full copy";
        for (p, v) in chunk {
            validate_path(p, false)?;
            if v.len() > u32::MAX as usize {
                return Err(StoreError::Db {
                    op: OP,
                    msg: format!("value of {} is too large ({} bytes)", Shown(p), v.len()),
                });
            }
        }
        let txn = self.txn.as_ref().ok_or_else(|| StoreError::Db {
            op: OP,
            msg: "copy writer already finished".into(),
        })?;
        let mut w = Writer::open(txn, self.stats.bytes, OP)?;
        let mut blob: Vec<u8> = Vec::new();
        let mut packed: Vec<(&str, u32, u32)> = Vec::new();
        for (p, v) in chunk {
            if v.len() <= INLINE_MAX {
                w.set(p, v)?;
                continue;
            }
            if !blob.is_empty() && blob.len() + v.len() > BLOB_TARGET {
                self.next_blob = flush_blob(&mut w, self.next_blob, &blob, &packed)?;
                blob.clear();
                packed.clear();
            }
            // Offsets fit in u32: a blob grows past BLOB_TARGET only by its last value, and
            // a value longer than u32::MAX was refused above.
            let off = u32::try_from(blob.len()).map_err(|_| StoreError::Db {
                op: OP,
                msg: format!("blob offset {} out of range", blob.len()),
            })?;
            packed.push((p.as_str(), off, v.len() as u32));
            blob.extend_from_slice(v);
        }
        if !blob.is_empty() {
            self.next_blob = flush_blob(&mut w, self.next_blob, &blob, &packed)?;
        }
        self.stats.bytes = w.finish()?;
        self.stats.entries = {
            let t = txn.open_table(DATA).map_err(db_err(OP))?;
            t.len().map_err(db_err(OP))?
        };
        Ok(())
    }

    /// Entries and bytes staged so far.
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// Makes the copy current: writes `meta` with the data and commits durably (fsync), in one
    /// atomic step. Accepts `TxMeta` or `&TxMeta`.
    pub fn finish(mut self, meta: impl Borrow<TxMeta>) -> Result<(), StoreError> {
        const OP: &str = "full copy";
        let txn = self.txn.take().ok_or_else(|| StoreError::Db {
            op: OP,
            msg: "copy writer already finished".into(),
        })?;
        let mut txn = txn;
        write_meta(&txn, meta.borrow(), self.stats.bytes, OP)?;
        // The log's history is replaced too, atomically with the data: the new log-base is
        // a segment after every existing one, so recovery never replays older records onto
        // the copy.
        let i = self.inner.clone();
        let _files = i.files.write().unwrap_or_else(|e| e.into_inner());
        let mut lg = lk(&i.log);
        let log = lg.as_mut().ok_or_else(|| i.closed())?;
        let base = log.next_base();
        txn.open_table(META)
            .map_err(db_err(OP))?
            .insert(META_LOG_BASE, base.to_be_bytes().as_slice())
            .map_err(db_err(OP))?;
        write_log_pos(&txn, log::pos(base, 0), OP)?;
        txn.set_quick_repair(true);
        txn.commit().map_err(db_err(OP))?;
        i.durable_base.store(meta.borrow().seq, Ordering::Relaxed);
        for no in log.reset(base)? {
            let p = log.seg_path(no);
            if let Err(e) = std::fs::remove_file(&p) {
                // Recovery removes segments before log-base anyway.
                crate::warn!("store", "cannot remove {}: {e}", p.display());
            }
        }
        log::sync_dir(log.dir())?;
        Ok(())
    }
}

/// Stores one blob with its reference count, then the records that point into it; returns
/// the next free blob id.
fn flush_blob(
    w: &mut Writer<'_>,
    id: u64,
    blob: &[u8],
    packed: &[(&str, u32, u32)],
) -> Result<u64, StoreError> {
    w.blobs.insert(id, blob).map_err(db_err(w.op))?;
    w.refs
        .insert(id, packed.len() as u64)
        .map_err(db_err(w.op))?;
    for &(p, off, len) in packed {
        w.put(
            p.as_bytes(),
            &Entry::encode_ref(id, off, len),
            u64::from(len),
        )?;
    }
    Ok(id + 1)
}

impl Drop for CopyWriter {
    fn drop(&mut self) {
        if let Some(txn) = self.txn.take() {
            // Aborting only discards staged pages; an error here changes nothing on disk.
            let _ = txn.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// A fresh directory removed on drop (no tempfile crate in ha-node).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "ha-node-store-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn meta(seq: u64) -> TxMeta {
        TxMeta {
            seq,
            txid: format!("tx-{seq}"),
        }
    }

    fn set(p: &str, v: &str) -> StoreOp {
        StoreOp::Set(p.to_string(), v.as_bytes().to_vec())
    }

    fn del(p: &str) -> StoreOp {
        StoreOp::Delete(p.to_string())
    }

    fn open(dir: &TempDir) -> Store {
        Store::open(&dir.0).expect("open store")
    }

    fn commit1(s: &Store, seq: u64, ops: Vec<StoreOp>) {
        s.commit(&[(meta(seq), ops)]).expect("commit");
    }

    fn get_s(s: &Store, p: &str) -> Option<String> {
        s.get(p)
            .expect("get")
            .map(|v| String::from_utf8(v).expect("utf8 value"))
    }

    /// Sum of key + value lengths, computed the slow way, to check the `bytes` counter.
    fn real_stats(s: &Store) -> StoreStats {
        let mut snap = s.snapshot().expect("snapshot");
        let mut st = StoreStats::default();
        while let Some(chunk) = snap.next_chunk(1 << 20).expect("chunk") {
            for (k, v) in chunk {
                st.entries += 1;
                st.bytes += (k.len() + v.len()) as u64;
            }
        }
        st
    }

    #[test]
    fn store_types_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Store>();
        send::<Snapshot>();
        send::<CopyWriter>();
        send_sync::<StoreError>();
    }

    #[test]
    fn store_empty_store() {
        let d = TempDir::new("empty");
        let s = open(&d);
        assert!(d.0.join("store.redb").is_file());
        assert_eq!(s.last_tx().unwrap(), TxMeta::default());
        assert_eq!(s.get("/a").unwrap(), None);
        assert!(!s.exists("/a").unwrap());
        assert!(s.exists("/").unwrap());
        assert_eq!(s.list("/").unwrap(), Vec::<String>::new());
        assert_eq!(s.stats(), StoreStats::default());
        // An empty group commit changes nothing.
        s.commit(&[]).unwrap();
        assert_eq!(s.last_tx().unwrap(), TxMeta::default());
    }

    #[test]
    fn store_set_get_exists_list() {
        let d = TempDir::new("basic");
        let s = open(&d);
        commit1(
            &s,
            1,
            vec![
                set("/sys/name", "n1"),
                set("/sys/ntp/server", "10.0.0.1"),
                set("/top", "t"),
            ],
        );
        assert_eq!(s.last_tx().unwrap(), meta(1));
        assert_eq!(get_s(&s, "/sys/name").as_deref(), Some("n1"));
        assert_eq!(get_s(&s, "/sys/ntp/server").as_deref(), Some("10.0.0.1"));
        // Parents exist through their descendants but hold no value.
        assert_eq!(get_s(&s, "/sys"), None);
        assert!(s.exists("/sys").unwrap());
        assert!(s.exists("/sys/ntp").unwrap());
        assert!(s.exists("/sys/ntp/server").unwrap());
        assert!(!s.exists("/sys/nt").unwrap());
        assert!(!s.exists("/sy").unwrap());
        assert!(!s.exists("/sys/name/x").unwrap());
        assert_eq!(s.list("/").unwrap(), vec!["sys", "top"]);
        assert_eq!(s.list("/sys").unwrap(), vec!["name", "ntp"]);
        assert_eq!(s.list("/sys/ntp").unwrap(), vec!["server"]);
        assert_eq!(s.list("/sys/name").unwrap(), Vec::<String>::new());
        assert_eq!(s.list("/nothing").unwrap(), Vec::<String>::new());
        // Overwrite; a node can hold a value and have children.
        commit1(&s, 2, vec![set("/sys/name", "n2"), set("/sys", "v")]);
        assert_eq!(get_s(&s, "/sys/name").as_deref(), Some("n2"));
        assert_eq!(get_s(&s, "/sys").as_deref(), Some("v"));
        assert_eq!(s.list("/sys").unwrap(), vec!["name", "ntp"]);
        assert_eq!(s.last_tx().unwrap(), meta(2));
        // Empty and binary values are kept as they are.
        s.commit(&[(
            meta(3),
            vec![
                StoreOp::Set("/bin".into(), vec![0, 255, 0x83, 0]),
                StoreOp::Set("/empty".into(), vec![]),
            ],
        )])
        .unwrap();
        assert_eq!(s.get("/bin").unwrap(), Some(vec![0, 255, 0x83, 0]));
        assert_eq!(s.get("/empty").unwrap(), Some(vec![]));
        assert!(s.exists("/empty").unwrap());
        assert_eq!(s.stats(), real_stats(&s));
        assert_eq!(s.stats().entries, 6);
    }

    #[test]
    fn store_delete_removes_subtree_only() {
        let d = TempDir::new("delete");
        let s = open(&d);
        let keys = [
            "/a/b",
            "/a/b/c",
            "/a/b/c/d",
            "/a/b{x/y}",
            "/a/b{k}/z",
            "/a/bc",
            "/a/b-x",
            "/a/b0",
            "/a/b.c",
            "/a/ba/b",
            "/a/c/b",
            "/ab",
        ];
        commit1(&s, 1, keys.iter().map(|k| set(k, k)).collect());
        commit1(&s, 2, vec![del("/a/b")]);
        for k in ["/a/b", "/a/b/c", "/a/b/c/d"] {
            assert_eq!(s.get(k).unwrap(), None, "{k} should be deleted");
        }
        assert!(!s.exists("/a/b").unwrap());
        assert!(!s.exists("/a/b/c").unwrap());
        for k in [
            "/a/b{x/y}",
            "/a/b{k}/z",
            "/a/bc",
            "/a/b-x",
            "/a/b0",
            "/a/b.c",
            "/a/ba/b",
            "/a/c/b",
            "/ab",
        ] {
            assert_eq!(get_s(&s, k).as_deref(), Some(k), "{k} must survive");
        }
        // Deleting a node without a value of its own removes its descendants.
        commit1(&s, 3, vec![del("/a/c")]);
        assert!(!s.exists("/a/c").unwrap());
        assert_eq!(get_s(&s, "/a/bc").as_deref(), Some("/a/bc"));
        // Deleting a missing path is a no-op.
        commit1(&s, 4, vec![del("/zzz"), del("/a/b")]);
        // A list-key entry with '/' inside braces is deleted with its subtree only.
        commit1(&s, 5, vec![set("/a/b{x/y}/q", "q"), del("/a/b{x/y}")]);
        assert!(!s.exists("/a/b{x/y}").unwrap());
        assert_eq!(get_s(&s, "/a/b{k}/z").as_deref(), Some("/a/b{k}/z"));
        assert_eq!(
            s.list("/a").unwrap(),
            vec!["b-x", "b.c", "b0", "ba", "bc", "b{k}"]
        );
        assert_eq!(s.stats(), real_stats(&s));
        assert_eq!(s.last_tx().unwrap(), meta(5));
    }

    #[test]
    fn store_list_with_braces_and_tricky_prefixes() {
        let d = TempDir::new("list");
        let s = open(&d);
        commit1(
            &s,
            1,
            vec![
                set("/servers/server{www}/port", "80"),
                set("/servers/server{www}/ip", "1.2.3.4"),
                set("/servers/server{a/b}/port", "81"),
                set("/servers/server{a/b}", "x"),
                set("/servers/server{c/d/e}/x/y", "1"),
                set("/servers/server{n{e/s}t}/p", "1"),
                set("/servers/x", "1"),
                // Children whose names sort around the separator: '-' < '/' < '0'.
                set("/t/a", "1"),
                set("/t/a-b", "1"),
                set("/t/a/x", "1"),
                set("/t/a/y/z", "1"),
                set("/t/a0", "1"),
                set("/t/a0/q", "1"),
                set("/t/a.b/c", "1"),
                set("/t/b", "1"),
                set("/t/{}", "1"),
                set("/tt/q", "1"),
                set("/t-x", "1"),
            ],
        );
        assert_eq!(s.list("/").unwrap(), vec!["servers", "t", "t-x", "tt"]);
        assert_eq!(
            s.list("/servers").unwrap(),
            vec![
                "server{a/b}",
                "server{c/d/e}",
                "server{n{e/s}t}",
                "server{www}",
                "x"
            ]
        );
        assert_eq!(s.list("/servers/server{www}").unwrap(), vec!["ip", "port"]);
        assert_eq!(s.list("/servers/server{a/b}").unwrap(), vec!["port"]);
        assert_eq!(s.list("/servers/server{c/d/e}").unwrap(), vec!["x"]);
        assert_eq!(s.list("/servers/server{n{e/s}t}").unwrap(), vec!["p"]);
        assert!(s.exists("/servers/server{c/d/e}").unwrap());
        assert!(!s.exists("/servers/server{c}").unwrap());
        assert_eq!(
            s.list("/t").unwrap(),
            vec!["a", "a-b", "a.b", "a0", "b", "{}"]
        );
        assert_eq!(s.list("/t/a").unwrap(), vec!["x", "y"]);
        assert_eq!(s.list("/t/a0").unwrap(), vec!["q"]);
        assert_eq!(
            segments("/servers/server{a/b}/port"),
            vec!["servers", "server{a/b}", "port"]
        );
        assert_eq!(segments("/x"), vec!["x"]);
    }

    #[test]
    fn store_list_many_children_is_complete() {
        let d = TempDir::new("listmany");
        let s = open(&d);
        let mut ops = Vec::new();
        let mut want = BTreeSet::new();
        for i in 0..300 {
            let name = format!("n{i}");
            // Mix leaves, subtrees and both.
            match i % 3 {
                0 => ops.push(set(&format!("/r/{name}"), "v")),
                1 => {
                    for j in 0..5 {
                        ops.push(set(&format!("/r/{name}/c{j}"), "v"));
                    }
                }
                _ => {
                    ops.push(set(&format!("/r/{name}"), "v"));
                    ops.push(set(&format!("/r/{name}/c/d"), "v"));
                }
            }
            want.insert(name);
        }
        commit1(&s, 1, ops);
        let got = s.list("/r").unwrap();
        assert_eq!(got, want.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn store_bad_paths_are_rejected_with_clear_messages() {
        let d = TempDir::new("badpath");
        let s = open(&d);
        let long = format!("/{}", "x".repeat(MAX_PATH_LEN));
        let cases: &[(&str, &str)] = &[
            ("", "empty path"),
            ("a/b", "must start with '/'"),
            ("/", "root"),
            ("//", "empty segment"),
            ("/a/", "must not end with '/'"),
            ("/a//b", "empty segment at offset 3"),
            ("/a{b", "unclosed '{'"),
            ("/a}b", "unbalanced '}'"),
            ("/a/b}{", "unbalanced '}'"),
            ("/a\0b", "NUL byte"),
            (&long, "exceeds the 4096-byte limit"),
        ];
        for (p, why) in cases {
            let err = s.get(p).expect_err(p);
            let msg = err.to_string();
            assert!(matches!(err, StoreError::BadPath(_)), "{p:?}: {err:?}");
            assert!(msg.contains(why), "{p:?}: message {msg:?} lacks {why:?}");
            if p.len() < 100 {
                assert!(msg.contains(&format!("{p:?}")), "{msg:?} must name {p:?}");
            } else {
                assert!(msg.len() < 300, "long path message not shortened: {msg}");
            }
            // The same check guards every operation.
            assert!(matches!(
                s.commit(&[(meta(1), vec![set(p, "v")])]),
                Err(StoreError::BadPath(_))
            ));
            assert!(matches!(
                s.commit(&[(meta(1), vec![del(p)])]),
                Err(StoreError::BadPath(_))
            ));
            if *p != "/" {
                assert!(matches!(s.exists(p), Err(StoreError::BadPath(_))));
                assert!(matches!(s.list(p), Err(StoreError::BadPath(_))));
            }
        }
        // Exactly at the limit is fine.
        let max = format!("/{}", "y".repeat(MAX_PATH_LEN - 1));
        commit1(&s, 1, vec![set(&max, "v")]);
        assert!(s.exists(&max).unwrap());
        // A bad path anywhere in a group commit means nothing is applied.
        let err = s
            .commit(&[
                (meta(2), vec![set("/ok", "1")]),
                (meta(3), vec![set("/fine", "1"), set("/bad/", "1")]),
            ])
            .unwrap_err();
        assert!(err.to_string().starts_with("bad path \"/bad/\""), "{err}");
        assert_eq!(s.get("/ok").unwrap(), None);
        assert_eq!(s.last_tx().unwrap(), meta(1));
    }

    #[test]
    fn store_group_commit_applies_in_order_and_keeps_last_meta() {
        let d = TempDir::new("group");
        let s = open(&d);
        s.commit(&[
            (meta(1), vec![set("/a/x", "1"), set("/a/y", "1")]),
            (meta(2), vec![del("/a"), set("/b", "2")]),
            (meta(3), vec![set("/a/z", "3"), set("/b", "3")]),
        ])
        .unwrap();
        assert_eq!(s.last_tx().unwrap(), meta(3));
        assert_eq!(s.list("/a").unwrap(), vec!["z"]);
        assert_eq!(get_s(&s, "/b").as_deref(), Some("3"));
        assert_eq!(s.stats(), real_stats(&s));
    }

    #[test]
    fn store_reopen_keeps_data_and_meta() {
        let d = TempDir::new("reopen");
        {
            let s = open(&d);
            commit1(&s, 7, vec![set("/k{a/b}/v", "hello"), set("/x", "y")]);
            s.commit(&[(
                TxMeta {
                    seq: 8,
                    txid: "1700000000-abc".into(),
                },
                vec![del("/x")],
            )])
            .unwrap();
            // A second open of the same file is refused while the first is alive.
            let err = Store::open(&d.0).unwrap_err();
            assert!(matches!(err, StoreError::AlreadyOpen { .. }), "{err:?}");
            assert!(err.to_string().contains("store.redb"), "{err}");
        }
        let s = open(&d);
        assert_eq!(
            s.last_tx().unwrap(),
            TxMeta {
                seq: 8,
                txid: "1700000000-abc".into()
            }
        );
        assert_eq!(get_s(&s, "/k{a/b}/v").as_deref(), Some("hello"));
        assert_eq!(s.get("/x").unwrap(), None);
        assert_eq!(s.stats(), real_stats(&s));
    }

    /// Runs `f` in a forked child that ends with `_exit` (no destructors, no clean close of
    /// the database: like kill -9 right after `f`), and checks that the child succeeded.
    fn in_child_then_vanish(f: impl FnOnce()) {
        // SAFETY: the child runs only `f` on this thread (store code, no locks shared with
        // other test threads except malloc's, which glibc resets at fork) and leaves with
        // _exit; a panic there becomes exit status 1.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed: status {status}"
        );
    }

    #[test]
    fn store_unclean_stop_keeps_every_commit_and_copy() {
        let d = TempDir::new("unclean");
        let dir = d.0.clone();
        in_child_then_vanish(|| {
            let s = Store::open(&dir).unwrap();
            let mut w = s.begin_copy().unwrap();
            w.put_chunk(&[("/c/a".into(), big(1, 3000)), ("/c/b".into(), big(2, 30))])
                .unwrap();
            w.finish(meta(10)).unwrap();
            s.commit(&[
                (meta(11), vec![set("/x", "1")]),
                (meta(12), vec![set("/x", "2"), del("/c/b")]),
            ])
            .unwrap();
            // A copy in progress when the process dies must leave no trace.
            let mut w = s.begin_copy().unwrap();
            w.put_chunk(&[("/junk".into(), big(3, 5000))]).unwrap();
            std::mem::forget(w);
            std::mem::forget(s);
        });
        let s = open(&d);
        assert_eq!(s.last_tx().unwrap(), meta(12));
        assert_eq!(get_s(&s, "/x").as_deref(), Some("2"));
        assert_eq!(s.get("/c/a").unwrap(), Some(big(1, 3000)));
        assert_eq!(s.list("/").unwrap(), vec!["c", "x"]);
        assert_eq!(s.list("/c").unwrap(), vec!["a"]);
        assert_eq!(s.stats(), real_stats(&s));
        check_refs(&s);
    }

    /// The segment files of the commit log, oldest first.
    fn segments_of(d: &TempDir) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d.0.join(log::LOG_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        v.sort();
        v
    }

    /// Record offsets of a segment: walks the headers (magic, length) from offset 0.
    fn record_offsets(bytes: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut off = 0usize;
        while off + 32 <= bytes.len() && bytes[off..off + 4] == 0x4C4F_4748u32.to_le_bytes() {
            let len = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap()) as usize;
            let total = (32 + len + 7) & !7;
            out.push((off, total));
            off += total;
        }
        out
    }

    /// Commits seq 1..=n (one group each) in a child that then vanishes (kill -9: no
    /// checkpoint, no clean close); returns the segment holding the records.
    fn logged_then_vanished(d: &TempDir, n: u64) -> PathBuf {
        let dir = d.0.clone();
        in_child_then_vanish(|| {
            let s = Store::open(&dir).unwrap();
            for i in 1..=n {
                commit1(&s, i, vec![set(&format!("/k{i}"), &format!("v{i}"))]);
            }
            std::mem::forget(s);
        });
        segments_of(d)
            .into_iter()
            .find(|p| !record_offsets(&std::fs::read(p).unwrap()).is_empty())
            .expect("a segment with records")
    }

    #[test]
    fn store_log_replays_after_an_unclean_stop_and_keeps_the_backlog() {
        let d = TempDir::new("replay");
        logged_then_vanished(&d, 20);
        let s = open(&d);
        assert_eq!(s.last_tx().unwrap(), meta(20));
        for i in 1..=20 {
            assert_eq!(get_s(&s, &format!("/k{i}")), Some(format!("v{i}")));
        }
        assert_eq!(s.stats(), real_stats(&s));
        let log = s.txlog_from(15).unwrap();
        assert_eq!(
            log.iter().map(|t| t.0.seq).collect::<Vec<_>>(),
            (15..=20).collect::<Vec<_>>()
        );
        assert_eq!(log[0].1, vec![set("/k15", "v15")]);
        assert_eq!(
            s.txlog_ids(19, 25).unwrap(),
            vec![(19, meta(19).txid), (20, meta(20).txid)]
        );
        // Replayed data is checkpointed: a second unclean stop replays nothing new.
        commit1(&s, 21, vec![set("/k21", "v21")]);
        drop(s);
        let s = open(&d);
        assert_eq!(s.last_tx().unwrap(), meta(21));
        assert_eq!(s.txlog_from(0).unwrap().len(), 21);
    }

    #[test]
    fn store_log_torn_record_at_the_tail_is_cut_off() {
        // A partial record at the tail (crash in the middle of a log write): the header of a
        // record of this segment and part of its payload, the rest never written.
        let d = TempDir::new("torn");
        let seg = logged_then_vanished(&d, 3);
        let mut bytes = std::fs::read(&seg).unwrap();
        let recs = record_offsets(&bytes);
        let (last, len) = *recs.last().unwrap();
        let end = last + len;
        let copy: Vec<u8> = bytes[last..last + 40].to_vec();
        bytes[end..end + 40].copy_from_slice(&copy);
        std::fs::write(&seg, &bytes).unwrap();
        let s = open(&d);
        assert_eq!(s.last_tx().unwrap(), meta(3));
        commit1(&s, 4, vec![set("/k4", "v4")]);
        drop(s);
        let s = open(&d);
        assert_eq!(s.last_tx().unwrap(), meta(4));
        assert_eq!(get_s(&s, "/k3").as_deref(), Some("v3"));
        assert_eq!(get_s(&s, "/k4").as_deref(), Some("v4"));

        // The last record itself torn (bad checksum): it is cut, the ones before stay.
        let d = TempDir::new("torn2");
        let seg = logged_then_vanished(&d, 3);
        let mut bytes = std::fs::read(&seg).unwrap();
        let (last, len) = *record_offsets(&bytes).last().unwrap();
        for b in &mut bytes[last + 40..last + len] {
            *b = 0;
        }
        std::fs::write(&seg, &bytes).unwrap();
        let s = open(&d);
        assert_eq!(s.last_tx().unwrap(), meta(2));
        assert_eq!(get_s(&s, "/k3"), None);
        commit1(&s, 3, vec![set("/k3", "again")]);
        drop(s);
        let s = open(&d);
        assert_eq!(get_s(&s, "/k3").as_deref(), Some("again"));

        // A short file: the segment ends in the middle of the last record's header.
        let d = TempDir::new("torn3");
        let seg = logged_then_vanished(&d, 3);
        let bytes = std::fs::read(&seg).unwrap();
        let (last, _) = *record_offsets(&bytes).last().unwrap();
        std::fs::write(&seg, &bytes[..last + 20]).unwrap();
        let s = open(&d);
        assert_eq!(s.last_tx().unwrap(), meta(2));
    }

    #[test]
    fn store_log_shorter_than_the_checkpoint_is_refused() {
        // The tree was checkpointed at a log position; the segment holding the records
        // before it is lost (emptied or removed) between runs. Without a check, writing
        // went on at offset 0 of that segment, before the tree's log position, so a crash
        // before the next checkpoint dropped those acknowledged commits on replay.
        for emptied in [true, false] {
            let d = TempDir::new(if emptied { "logempty" } else { "loggone" });
            let s = open(&d);
            for i in 1..=3 {
                commit1(&s, i, vec![set(&format!("/k{i}"), &format!("v{i}"))]);
            }
            drop(s);
            let seg = segments_of(&d)
                .into_iter()
                .find(|p| !record_offsets(&std::fs::read(p).unwrap()).is_empty())
                .expect("a segment with records");
            if emptied {
                std::fs::write(&seg, b"").unwrap();
            } else {
                std::fs::remove_file(&seg).unwrap();
            }
            let err = match Store::open(&d.0) {
                Err(e) => e,
                Ok(_) => panic!("a log missing checkpointed records was accepted"),
            };
            assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("checkpoint"), "{msg}");
        }
    }

    #[test]
    fn store_log_corrupt_record_in_the_middle_is_refused() {
        let d = TempDir::new("midcorrupt");
        let seg = logged_then_vanished(&d, 5);
        let mut bytes = std::fs::read(&seg).unwrap();
        let (second, _) = record_offsets(&bytes)[1];
        bytes[second + 40] ^= 0x55;
        std::fs::write(&seg, &bytes).unwrap();
        let err = Store::open(&d.0).unwrap_err();
        assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&seg.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("offset {second}")), "{msg}");
        assert!(msg.contains("refusing to start"), "{msg}");
        // Still refused on the next try (nothing was cut).
        assert!(matches!(Store::open(&d.0), Err(StoreError::Damaged { .. })));
    }

    #[test]
    fn store_log_kill9_at_random_moments_loses_no_acknowledged_commit() {
        // A child commits in a loop and reports each acknowledged seq on a pipe; it is
        // killed with SIGKILL at a random moment; every acknowledged seq must be there.
        let d = TempDir::new("kill9");
        let mut acked = 0u64;
        for round in 0..8u64 {
            let mut fds = [0i32; 2];
            // SAFETY: pipe(2) into a local array.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            let start = acked + 1;
            // SAFETY: the child runs store code only and never returns (killed or _exit).
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                unsafe { libc::close(fds[0]) };
                let s = Store::open(&d.0).unwrap();
                let mut seq = start;
                loop {
                    let ops = vec![set(&format!("/w/{}", seq % 50), &seq.to_string())];
                    s.commit(&[(meta(seq), ops)]).unwrap();
                    let b = seq.to_le_bytes();
                    // SAFETY: writing 8 bytes from a local array to our pipe.
                    unsafe { libc::write(fds[1], b.as_ptr().cast(), 8) };
                    seq += 1;
                }
            }
            unsafe { libc::close(fds[1]) };
            let t = Instant::now();
            let wait = std::time::Duration::from_millis(
                30 + (round * 37 + t.elapsed().subsec_nanos() as u64) % 120,
            );
            std::thread::sleep(wait);
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let mut st = 0;
            unsafe { libc::waitpid(pid, &mut st, 0) };
            let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut all).unwrap();
            for c in all.chunks_exact(8) {
                acked = acked.max(u64::from_le_bytes(c.try_into().unwrap()));
            }
            let s = open(&d);
            let last = s.last_tx().unwrap();
            assert!(
                last.seq >= acked,
                "round {round}: acked {acked}, store at {last:?}"
            );
            // The store may hold one more (durable, not yet acknowledged): go on from there.
            acked = last.seq;
            for k in 0..50u64 {
                let newest = (1..=acked).rev().find(|q| q % 50 == k);
                assert_eq!(
                    get_s(&s, &format!("/w/{k}")),
                    newest.map(|q| q.to_string()),
                    "round {round}, key {k}"
                );
            }
            assert_eq!(s.stats(), real_stats(&s));
        }
        assert!(acked > 8, "the writer made progress: {acked}");
    }

    #[test]
    fn store_log_copy_replaces_the_history_and_segments_are_retired() {
        let d = TempDir::new("logcopy");
        let s = open(&d);
        s.set_txlog_max_txns(5);
        for i in 1..=10 {
            commit1(&s, i, vec![set("/a", &i.to_string())]);
        }
        assert!(s.checkpoint().unwrap());
        // The backlog is the last 5 by seq.
        assert_eq!(
            s.txlog_ids(0, 100)
                .unwrap()
                .iter()
                .map(|t| t.0)
                .collect::<Vec<_>>(),
            vec![6, 7, 8, 9, 10]
        );
        let w = s.begin_copy().unwrap();
        w.finish(meta(3)).unwrap();
        assert!(s.txlog_from(0).unwrap().is_empty());
        commit1(&s, 4, vec![set("/b", "4")]);
        drop(s);
        // Only the new history's segments (and a spare) remain; reopening replays nothing of
        // the old history onto the copy.
        assert!(segments_of(&d).len() <= 3, "{:?}", segments_of(&d));
        let s = open(&d);
        assert_eq!(s.last_tx().unwrap(), meta(4));
        assert_eq!(s.get("/a").unwrap(), None);
        assert_eq!(
            s.txlog_ids(0, 100)
                .unwrap()
                .iter()
                .map(|t| t.0)
                .collect::<Vec<_>>(),
            vec![4]
        );
    }

    #[test]
    fn store_shutdown_during_an_open_copy_does_not_hang() {
        let d = TempDir::new("shutdown-copy");
        let s = open(&d);
        commit1(&s, 1, vec![set("/a", "1")]);
        let mut w = s.begin_copy().unwrap();
        w.put_chunk(&[("/b".into(), b"2".to_vec())]).unwrap();
        let t = Instant::now();
        let err = s.shutdown().unwrap_err();
        assert!(err.to_string().contains("no checkpoint within"), "{err}");
        assert!(t.elapsed() < std::time::Duration::from_secs(60));
        // The copy cannot finish on a closed store; the old data is intact after a restart.
        assert!(w.finish(meta(9)).is_err());
        drop(s);
        // The abandoned checkpoint lets go of the database once the copy is gone.
        let t = Instant::now();
        let s = loop {
            match Store::open(&d.0) {
                Err(StoreError::AlreadyOpen { .. })
                    if t.elapsed() < std::time::Duration::from_secs(30) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                r => break r.unwrap(),
            }
        };
        assert_eq!(s.last_tx().unwrap(), meta(1));
        assert_eq!(get_s(&s, "/a").as_deref(), Some("1"));
    }

    #[test]
    fn store_log_one_fdatasync_per_group_commit() {
        let d = TempDir::new("group-sync");
        let s = open(&d);
        let before = s.log_syncs();
        s.commit(
            &(1..=50)
                .map(|i| (meta(i), vec![set("/g", &i.to_string())]))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(s.log_syncs() - before, 1);
        commit1(&s, 51, vec![set("/g", "51")]);
        assert_eq!(s.log_syncs() - before, 2);
        assert_eq!(s.txlog_from(0).unwrap().len(), 51);
    }

    #[test]
    fn store_open_fails_clearly_on_bad_dir() {
        let d = TempDir::new("baddir");
        std::fs::create_dir_all(&d.0).unwrap();
        let file = d.0.join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = Store::open(&file.join("sub")).unwrap_err();
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains("plain-file"), "{err}");
        // A file that is not a redb database.
        let junk = d.0.join("junk");
        std::fs::create_dir_all(&junk).unwrap();
        std::fs::write(junk.join(STORE_FILE), vec![0x5au8; 8192]).unwrap();
        let err = Store::open(&junk).unwrap_err();
        assert!(err.to_string().contains("store"), "{err}");
    }

    #[test]
    fn store_refuses_empty_and_truncated_files() {
        let d = TempDir::new("damaged");
        let s = open(&d);
        for i in 1..=20 {
            commit1(&s, i, vec![set(&format!("/k{i}"), &"v".repeat(300))]);
        }
        drop(s);
        let file = d.0.join(STORE_FILE);
        let good = std::fs::read(&file).unwrap();
        for cut in [0, 100, 4096, good.len() / 2] {
            std::fs::write(&file, &good[..cut]).unwrap();
            let err = Store::open(&d.0).unwrap_err();
            assert!(matches!(err, StoreError::Damaged { .. }), "{cut}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains("store.redb"), "{msg}");
            assert!(msg.contains("move the data directory away"), "{msg}");
            if cut == 0 {
                assert!(msg.contains("empty (0 bytes)"), "{msg}");
            }
        }
        std::fs::write(&file, &good).unwrap();
        let s = Store::open(&d.0).unwrap();
        assert_eq!(s.last_tx().unwrap(), meta(20));
    }

    #[test]
    fn store_txlog_keeps_the_last_transactions_and_a_copy_clears_it() {
        let d = TempDir::new("txlog");
        let s = open(&d);
        commit1(&s, 1, vec![set("/a", "1")]);
        s.commit(&[
            (meta(2), vec![set("/b", "2"), del("/a")]),
            (meta(3), vec![set("/c", "3")]),
        ])
        .unwrap();
        let log = s.txlog_from(2).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].0, meta(2));
        assert_eq!(log[0].1, vec![set("/b", "2"), del("/a")]);
        assert_eq!(
            s.txlog_ids(1, 2).unwrap(),
            vec![(1, meta(1).txid), (2, meta(2).txid)]
        );
        assert!(s.txlog_ids(3, 2).unwrap().is_empty());
        // Read only within a byte budget: over it, nothing is read.
        let all = s.txlog_within(1, usize::MAX).unwrap().unwrap();
        assert_eq!(all.len(), 3);
        assert!(s.txlog_within(1, 10).unwrap().is_none());
        assert_eq!(s.txlog_within(3, 1 << 20).unwrap().unwrap().len(), 1);
        // Trimmed to TXLOG_MAX_TXNS.
        let far = TXLOG_MAX_TXNS + 10;
        commit1(&s, far, vec![set("/z", "z")]);
        let log = s.txlog_from(0).unwrap();
        assert_eq!(
            log.len(),
            1,
            "{:?}",
            log.iter().map(|t| t.0.seq).collect::<Vec<_>>()
        );
        // A full copy replaces the history.
        let w = s.begin_copy().unwrap();
        w.finish(meta(50)).unwrap();
        assert!(s.txlog_from(0).unwrap().is_empty());
    }

    #[test]
    fn store_close_and_reopen() {
        let d = TempDir::new("reopen");
        let s = open(&d);
        commit1(&s, 1, vec![set("/a", "1")]);
        s.close();
        let err = s.get("/a").unwrap_err();
        assert!(matches!(err, StoreError::Closed { .. }), "{err:?}");
        assert!(err.is_fault());
        assert_eq!(s.reopen().unwrap(), meta(1));
        assert_eq!(get_s(&s, "/a").as_deref(), Some("1"));
        // Refused while a snapshot holds the database.
        let sn = s.snapshot().unwrap();
        assert!(s.reopen().is_err());
        drop(sn);
        assert_eq!(s.reopen().unwrap(), meta(1));
    }

    #[test]
    fn store_corrupt_meta_is_an_error_not_a_panic() {
        let d = TempDir::new("corrupt");
        let s = open(&d);
        commit1(&s, 1, vec![set("/a", "1")]);
        // Damage the records behind the store's back.
        let txn = s.db().unwrap().begin_write().unwrap();
        {
            let mut m = txn.open_table(META).unwrap();
            m.insert(META_SEQ, [1u8, 2, 3].as_slice()).unwrap();
            let mut t = txn.open_table(DATA).unwrap();
            t.insert([b'/', 0xff, 0xfe].as_slice(), b"v".as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        let err = s.last_tx().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().contains("seq has 3 bytes"), "{err}");
        let err = s.list("/").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        assert!(matches!(s.snapshot(), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn store_copy_finish_replaces_everything_atomically() {
        let d = TempDir::new("copy");
        let s = Arc::new(open(&d));
        commit1(
            &s,
            5,
            vec![set("/old/a", "1"), set("/old/b", "2"), set("/keep", "old")],
        );
        let mut w = s.begin_copy().unwrap();
        w.put_chunk(&[
            ("/keep".into(), b"new".to_vec()),
            ("/n/a".into(), b"x".to_vec()),
        ])
        .unwrap();
        // Readers (on other threads) still see the old data and meta during the copy.
        let s2 = s.clone();
        std::thread::spawn(move || {
            assert_eq!(get_s(&s2, "/keep").as_deref(), Some("old"));
            assert!(s2.exists("/old/a").unwrap());
            assert!(!s2.exists("/n").unwrap());
            assert_eq!(s2.list("/").unwrap(), vec!["keep", "old"]);
            assert_eq!(s2.last_tx().unwrap(), meta(5));
        })
        .join()
        .unwrap();
        w.put_chunk(&[
            ("/n/b{1/2}".into(), b"y".to_vec()),
            ("/n/a".into(), b"x2".to_vec()),
        ])
        .unwrap();
        assert_eq!(w.stats().entries, 3);
        // A bad path in a chunk is refused; the copy can still be aborted cleanly.
        assert!(matches!(
            w.put_chunk(&[("no-slash".into(), vec![])]),
            Err(StoreError::BadPath(_))
        ));
        w.finish(TxMeta {
            seq: 9,
            txid: "primary-9".into(),
        })
        .unwrap();
        assert_eq!(
            s.last_tx().unwrap(),
            TxMeta {
                seq: 9,
                txid: "primary-9".into()
            }
        );
        assert!(!s.exists("/old").unwrap());
        assert_eq!(get_s(&s, "/keep").as_deref(), Some("new"));
        assert_eq!(get_s(&s, "/n/a").as_deref(), Some("x2"));
        assert_eq!(s.list("/n").unwrap(), vec!["a", "b{1/2}"]);
        assert_eq!(s.stats(), real_stats(&s));
        // Commits work again after the copy, and everything survives a reopen.
        commit1(&s, 10, vec![set("/after", "1")]);
        drop(s);
        let s = open(&d);
        assert_eq!(s.last_tx().unwrap(), meta(10));
        assert_eq!(s.list("/").unwrap(), vec!["after", "keep", "n"]);
    }

    #[test]
    fn store_copy_dropped_half_way_keeps_old_data_and_meta() {
        let d = TempDir::new("copyabort");
        let s = Arc::new(open(&d));
        commit1(&s, 3, vec![set("/a", "1"), set("/b/c", "2")]);
        let before = real_stats(&s);
        let mut w = s.begin_copy().unwrap();
        for i in 0..50 {
            w.put_chunk(&[(format!("/new/{i}"), vec![7u8; 100])])
                .unwrap();
        }
        // A commit issued now waits for the copy writer (one writer at a time) ...
        let s2 = s.clone();
        let committer = std::thread::spawn(move || commit1(&s2, 4, vec![set("/late", "1")]));
        drop(w); // ... and proceeds once it is gone.
        committer.join().unwrap();
        assert_eq!(s.last_tx().unwrap(), meta(4));
        assert_eq!(get_s(&s, "/a").as_deref(), Some("1"));
        assert_eq!(get_s(&s, "/b/c").as_deref(), Some("2"));
        assert!(!s.exists("/new").unwrap());
        assert_eq!(s.stats().entries, before.entries + 1);
        // And after a restart too.
        drop(s);
        let s = open(&d);
        assert_eq!(s.last_tx().unwrap(), meta(4));
        assert_eq!(s.list("/").unwrap(), vec!["a", "b", "late"]);
        assert_eq!(s.stats(), real_stats(&s));
    }

    #[test]
    fn store_snapshot_chunks_cover_everything_once_and_stay_consistent() {
        let d = TempDir::new("snap");
        let s = Arc::new(open(&d));
        let mut ops = Vec::new();
        let mut want = std::collections::BTreeMap::new();
        for i in 0..2000u32 {
            let k = format!("/data/item{{{i}}}/v{}", i % 7);
            let v = vec![(i % 251) as u8; (i as usize * 37) % 700];
            want.insert(k.clone(), v.clone());
            ops.push(StoreOp::Set(k, v));
        }
        s.commit(&[(meta(1), ops)]).unwrap();
        let mut snap = s.snapshot().unwrap();
        assert_eq!(snap.meta(), &meta(1));
        assert_eq!(snap.stats().entries, 2000);
        const BUDGET: usize = 4096;
        let mut got = Vec::new();
        let mut first = true;
        while let Some(chunk) = snap.next_chunk(BUDGET).unwrap() {
            assert!(!chunk.is_empty());
            let size: usize = chunk.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(size <= BUDGET || chunk.len() == 1, "chunk of {size} bytes");
            if first {
                // Change and delete data while the snapshot is being read, from another
                // thread: the snapshot must not see any of it.
                first = false;
                let s2 = s.clone();
                std::thread::spawn(move || {
                    s2.commit(&[(
                        meta(2),
                        vec![
                            del("/data"),
                            set("/data/item{zzz}/v0", "new"),
                            set("/data/item{0}/v0", "changed"),
                        ],
                    )])
                    .unwrap();
                })
                .join()
                .unwrap();
                assert_eq!(s.last_tx().unwrap(), meta(2));
            }
            got.extend(chunk);
        }
        assert!(snap.next_chunk(BUDGET).unwrap().is_none());
        let want: Vec<(String, Vec<u8>)> = want.into_iter().collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "snapshot differs from the data at its meta");
    }

    #[test]
    fn store_snapshot_big_value_comes_alone() {
        let d = TempDir::new("snapbig");
        let s = open(&d);
        s.commit(&[(
            meta(1),
            vec![
                StoreOp::Set("/a".into(), vec![1; 10]),
                StoreOp::Set("/b".into(), vec![2; 5000]),
                StoreOp::Set("/c".into(), vec![3; 10]),
                StoreOp::Set("/d".into(), vec![4; 10]),
            ],
        )])
        .unwrap();
        let mut snap = s.snapshot().unwrap();
        let sizes: Vec<Vec<usize>> = std::iter::from_fn(|| snap.next_chunk(100).unwrap())
            .map(|c| c.iter().map(|(_, v)| v.len()).collect())
            .collect();
        assert_eq!(sizes, vec![vec![10], vec![5000], vec![10, 10]]);
        // A snapshot of an empty store yields nothing.
        let d2 = TempDir::new("snapempty");
        let e = open(&d2);
        let mut snap = e.snapshot().unwrap();
        assert_eq!(snap.meta(), &TxMeta::default());
        assert!(snap.next_chunk(100).unwrap().is_none());
    }

    #[test]
    fn store_full_copy_between_two_stores() {
        let (da, db) = (TempDir::new("srcA"), TempDir::new("dstB"));
        let (a, b) = (open(&da), open(&db));
        let mut ops = Vec::new();
        for i in 0..500 {
            ops.push(set(&format!("/s/server{{h{i}/x}}/port"), &i.to_string()));
        }
        a.commit(&[(meta(41), ops)]).unwrap();
        commit1(&b, 3, vec![set("/stale", "1")]);
        let mut snap = a.snapshot().unwrap();
        let mut w = b.begin_copy().unwrap();
        while let Some(chunk) = snap.next_chunk(1000).unwrap() {
            w.put_chunk(&chunk).unwrap();
        }
        w.finish(snap.meta()).unwrap();
        assert_eq!(b.last_tx().unwrap(), meta(41));
        assert_eq!(real_stats(&a), real_stats(&b));
        assert_eq!(b.stats(), a.stats());
        assert_eq!(b.list("/s").unwrap(), a.list("/s").unwrap());
        assert!(!b.exists("/stale").unwrap());
    }

    fn blob_tables(s: &Store) -> (u64, u64) {
        let txn = s.db().unwrap().begin_read().unwrap();
        let b = txn.open_table(BLOBS).unwrap().len().unwrap();
        let r = txn.open_table(BLOB_REFS).unwrap().len().unwrap();
        (b, r)
    }

    /// Every blob's reference count equals the records that point into it, and no blob is
    /// left without references.
    fn check_refs(s: &Store) {
        let txn = s.db().unwrap().begin_read().unwrap();
        let data = txn.open_table(DATA).unwrap();
        let mut counted = std::collections::BTreeMap::new();
        for item in data.iter().unwrap() {
            let (k, v) = item.unwrap();
            if let Entry::Ref { blob, .. } = Entry::decode(k.value(), v.value()).unwrap() {
                *counted.entry(blob).or_insert(0u64) += 1;
            }
        }
        let refs = txn.open_table(BLOB_REFS).unwrap();
        let stored: std::collections::BTreeMap<u64, u64> = refs
            .iter()
            .unwrap()
            .map(|i| {
                let (k, v) = i.unwrap();
                (k.value(), v.value())
            })
            .collect();
        assert_eq!(counted, stored, "reference counts");
        let blobs = txn.open_table(BLOBS).unwrap();
        let ids: Vec<u64> = blobs
            .iter()
            .unwrap()
            .map(|i| i.unwrap().0.value())
            .collect();
        assert_eq!(ids, stored.keys().copied().collect::<Vec<_>>(), "blob ids");
    }

    fn big(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    #[test]
    fn store_copy_packs_large_values_into_blobs() {
        let d = TempDir::new("blobs");
        let s = open(&d);
        let mut want = std::collections::BTreeMap::new();
        let mut w = s.begin_copy().unwrap();
        for c in 0..5 {
            let mut chunk = Vec::new();
            for i in 0..200 {
                let n = c * 200 + i;
                // Inline (<= INLINE_MAX), small blob values, values near and above the blob
                // target size.
                let len = match n % 5 {
                    0 => n % (INLINE_MAX + 1),
                    1 => INLINE_MAX + 1,
                    2 => 1024,
                    3 => 3000,
                    _ if n % 50 == 4 => BLOB_TARGET + 10,
                    _ => 700,
                };
                let k = format!("/l/e{{{n:04}}}/v");
                chunk.push((k.clone(), big(n, len)));
                want.insert(k, big(n, len));
            }
            // The same path twice in one chunk and again in the next: the last value wins.
            chunk.push(("/dup".to_string(), big(1, 2000)));
            chunk.push(("/dup".to_string(), big(2, 2100)));
            want.insert("/dup".to_string(), big(c + 3, 1500));
            chunk.push(("/dup".to_string(), big(c + 3, 1500)));
            w.put_chunk(&chunk).unwrap();
        }
        assert_eq!(w.stats().entries, want.len() as u64);
        w.finish(meta(77)).unwrap();
        let (blobs, refs) = blob_tables(&s);
        assert!(blobs > 5, "expected several blobs, got {blobs}");
        assert_eq!(blobs, refs);
        check_refs(&s);
        for (k, v) in &want {
            assert_eq!(s.get(k).unwrap().as_ref(), Some(v), "{k}");
        }
        let mut snap = s.snapshot().unwrap();
        let mut got = Vec::new();
        while let Some(c) = snap.next_chunk(50_000).unwrap() {
            got.extend(c);
        }
        assert!(got == want.clone().into_iter().collect::<Vec<_>>());
        drop(snap);
        assert_eq!(s.stats(), real_stats(&s));
        assert_eq!(s.stats().entries, want.len() as u64);

        // A snapshot taken now still reads every blob-backed value after a commit that
        // deletes them all (and with them their blobs) in the middle of the read.
        let mut snap = s.snapshot().unwrap();
        let mut got = snap.next_chunk(10_000).unwrap().unwrap();
        s.commit(&[(meta(90), vec![del("/l"), del("/dup")])])
            .unwrap();
        assert_eq!(blob_tables(&s), (0, 0));
        assert!(!s.exists("/l").unwrap());
        while let Some(c) = snap.next_chunk(10_000).unwrap() {
            got.extend(c);
        }
        assert_eq!(snap.meta(), &meta(77));
        assert!(got == want.clone().into_iter().collect::<Vec<_>>());
        drop(snap);
        // Put the copy back (a second copy) and go on from there.
        let mut w = s.begin_copy().unwrap();
        for c in got.chunks(100) {
            w.put_chunk(c).unwrap();
        }
        w.finish(meta(77)).unwrap();
        assert_eq!(s.stats(), real_stats(&s));
        assert_eq!(s.stats().entries, want.len() as u64);

        // Overwriting and deleting every packed value releases every blob.
        let keys: Vec<String> = want.keys().cloned().collect();
        let (half1, half2) = keys.split_at(keys.len() / 2);
        s.commit(&[(
            meta(78),
            half1.iter().map(|k| set(k, "now inline")).collect(),
        )])
        .unwrap();
        assert_eq!(get_s(&s, &half1[0]).as_deref(), Some("now inline"));
        for k in half2 {
            assert_eq!(s.get(k).unwrap().as_ref(), want.get(k), "{k}");
        }
        assert_eq!(s.stats(), real_stats(&s));
        check_refs(&s);
        let (fewer, _) = blob_tables(&s);
        assert!(fewer > 0 && fewer < blobs, "{fewer} of {blobs} blobs left");
        // Deleting part of a blob-backed subtree keeps the rest readable.
        let some: Vec<StoreOp> = half2.iter().step_by(3).map(|k| del(k)).collect();
        s.commit(&[(meta(78), some)]).unwrap();
        check_refs(&s);
        for (i, k) in half2.iter().enumerate() {
            let want_v = if i % 3 == 0 { None } else { want.get(k) };
            assert_eq!(s.get(k).unwrap().as_ref(), want_v, "{k}");
        }
        s.commit(&[(meta(79), vec![del("/l"), del("/dup")])])
            .unwrap();
        assert_eq!(
            blob_tables(&s),
            (0, 0),
            "blobs must go with their last reference"
        );
        assert_eq!(s.stats(), real_stats(&s));
        // Survives a reopen, and a second copy replaces blobs too.
        drop(s);
        let s = open(&d);
        assert_eq!(s.last_tx().unwrap(), meta(79));
        let mut w = s.begin_copy().unwrap();
        w.put_chunk(&[("/x".into(), big(9, 5000))]).unwrap();
        w.finish(meta(80)).unwrap();
        assert_eq!(blob_tables(&s), (1, 1));
        assert_eq!(s.get("/x").unwrap(), Some(big(9, 5000)));
        let mut w = s.begin_copy().unwrap();
        w.put_chunk(&[("/y".into(), big(8, 100))]).unwrap();
        drop(w);
        assert_eq!(blob_tables(&s), (1, 1));
        assert_eq!(s.list("/").unwrap(), vec!["x"]);
    }

    #[test]
    fn store_damaged_records_are_errors_not_panics() {
        let d = TempDir::new("badrec");
        let s = open(&d);
        let mut w = s.begin_copy().unwrap();
        w.put_chunk(&[("/a".into(), big(1, 500)), ("/b".into(), big(2, 500))])
            .unwrap();
        w.finish(meta(1)).unwrap();
        let txn = s.db().unwrap().begin_write().unwrap();
        {
            let mut t = txn.open_table(DATA).unwrap();
            t.insert(b"/a".as_slice(), Entry::encode_ref(1, 700, 500).as_slice())
                .unwrap();
            t.insert(b"/c".as_slice(), Entry::encode_ref(99, 0, 1).as_slice())
                .unwrap();
            t.insert(b"/d".as_slice(), [7u8, 1, 2].as_slice()).unwrap();
            t.insert(b"/e".as_slice(), [].as_slice()).unwrap();
            t.insert(b"/f".as_slice(), [TAG_REF, 1, 2].as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        for (p, why) in [
            ("/a", "beyond the blob's 1000 bytes"),
            ("/c", "missing blob"),
            ("/d", "unknown form"),
            ("/e", "unknown form"),
            ("/f", "unknown form"),
        ] {
            let err = s.get(p).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt(_)), "{p}: {err:?}");
            assert!(err.to_string().contains(why), "{p}: {err}");
            assert!(err.to_string().contains(p), "{p}: {err}");
        }
        assert_eq!(s.get("/b").unwrap(), Some(big(2, 500)));
        let mut snap = s.snapshot().unwrap();
        assert!(matches!(
            snap.next_chunk(1 << 20),
            Err(StoreError::Corrupt(_))
        ));
        // A commit that would release a damaged record fails cleanly and changes nothing.
        assert!(matches!(
            s.commit(&[(meta(2), vec![del("/d")])]),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(s.last_tx().unwrap(), meta(1));
    }

    #[test]
    fn store_refuses_an_unknown_record_format() {
        let d = TempDir::new("format");
        {
            let s = open(&d);
            let txn = s.db().unwrap().begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(META_FORMAT, 9u64.to_be_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(&d.0).unwrap_err();
        assert!(
            err.to_string().contains("record format 9 is not supported"),
            "{err}"
        );
        // Data without a format mark (the very first builds) is refused, not misread.
        let d2 = TempDir::new("noformat");
        {
            let s = open(&d2);
            let txn = s.db().unwrap().begin_write().unwrap();
            txn.open_table(META).unwrap().remove(META_FORMAT).unwrap();
            txn.open_table(DATA)
                .unwrap()
                .insert(b"/a".as_slice(), [131u8, 97, 1].as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(&d2.0).unwrap_err();
        assert!(err.to_string().contains("without a record format"), "{err}");
    }

    /// Timing, not a test: how long `open` takes after an unclean stop (redb repairs the file).
    /// `cargo test -p ha-node --release store_bench_repair -- --ignored --nocapture --test-threads=1`
    #[test]
    #[ignore]
    fn store_bench_repair() {
        let d = TempDir::new("repair");
        // SAFETY: the child only runs store code on its own thread and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let s = Store::open(&d.0).unwrap();
            let mut w = s.begin_copy().unwrap();
            for c in 0..100 {
                let chunk: Vec<(String, Vec<u8>)> = (0..1000)
                    .map(|i| {
                        let n = c * 1000 + i;
                        (format!("/config/item{{{n:06}}}/blob"), big(n, 1024))
                    })
                    .collect();
                w.put_chunk(&chunk).unwrap();
            }
            w.finish(meta(5)).unwrap();
            commit1(&s, 6, vec![set("/after", "1")]);
            // Like kill -9: no destructor runs, the file is not marked clean.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0);
        let t = Instant::now();
        let s = open(&d);
        println!(
            "open after an unclean stop of a 100 MB store: {:?}",
            t.elapsed()
        );
        assert_eq!(s.last_tx().unwrap(), meta(6));
        assert_eq!(s.stats().entries, 100_001);
        drop(s);
        let t = Instant::now();
        let _s = open(&d);
        println!("open after a clean stop: {:?}", t.elapsed());
    }

    /// Timing, not a test: open time of a 1 GiB store after a clean close and after kill -9
    /// under load (the replay is bounded by the checkpoint interval).
    /// `cargo test -p ha-node --release store_bench_open_1gib -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn store_bench_open_1gib() {
        let d = TempDir::new("open1g");
        let gib: usize = std::env::var("GIB_ENTRIES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1 << 20);
        {
            let s = open(&d);
            let t = Instant::now();
            let mut w = s.begin_copy().unwrap();
            for c in 0..gib / 1000 {
                let chunk: Vec<(String, Vec<u8>)> = (0..1000)
                    .map(|i| {
                        let n = c * 1000 + i;
                        (format!("/config/item{{{n:07}}}/blob"), big(n, 1024))
                    })
                    .collect();
                w.put_chunk(&chunk).unwrap();
            }
            w.finish(meta(5)).unwrap();
            for i in 6..106 {
                commit1(&s, i, vec![set(&format!("/small/{i}"), "v")]);
            }
            println!(
                "built: {} entries, {} MB of data, file {} MB, in {:?}",
                s.stats().entries,
                s.stats().bytes >> 20,
                std::fs::metadata(s.file()).unwrap().len() >> 20,
                t.elapsed()
            );
        } // clean close (drop = shutdown: last checkpoint, database closed)
        let t = Instant::now();
        drop(Database::create(d.0.join(STORE_FILE)).unwrap());
        println!(
            "(redb alone: open + close of the clean file: {:?})",
            t.elapsed()
        );
        let t = Instant::now();
        let s = open(&d);
        println!("open after a clean close: {:?}", t.elapsed());
        assert_eq!(s.last_tx().unwrap(), meta(105));
        drop(s);
        let dir = d.0.clone();
        in_child_then_vanish(|| {
            let s = Store::open(&dir).unwrap();
            // Commits for 900 ms (a little less than the checkpoint interval), then gone.
            let t = Instant::now();
            let mut seq = 106;
            while t.elapsed() < std::time::Duration::from_millis(900) {
                commit1(&s, seq, vec![set(&format!("/small/{}", seq % 1000), "w")]);
                seq += 1;
            }
            std::mem::forget(s);
        });
        let t = Instant::now();
        let s = open(&d);
        let took = t.elapsed();
        let last = s.last_tx().unwrap();
        println!(
            "open after kill -9 under load: {took:?} (store at seq {}, {} commits in the last \
             900 ms before the kill)",
            last.seq,
            last.seq - 105
        );
        drop(s);
        // As before the commit log: durable redb commits without quick-repair, then kill -9;
        // the next open repairs the whole file.
        let file = d.0.join(STORE_FILE);
        in_child_then_vanish(|| {
            let db = Database::create(&file).unwrap();
            for i in 0..100u64 {
                let mut txn = db.begin_write().unwrap();
                txn.set_durability(Durability::Immediate);
                txn.open_table(DATA)
                    .unwrap()
                    .insert(format!("/old/{i}").as_bytes(), [0u8, 1].as_slice())
                    .unwrap();
                txn.commit().unwrap();
            }
            std::mem::forget(db);
        });
        let t = Instant::now();
        let _s = open(&d);
        println!(
            "open after kill -9 of redb Immediate commits without quick-repair (the store \
             before the commit log): {:?}",
            t.elapsed()
        );
    }

    /// CPU time of the calling thread (redb does its work on the caller's thread).
    fn thread_cpu() -> std::time::Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// Timing, not a test:
    /// `cargo test -p ha-node --release store_bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn store_bench() {
        let d = TempDir::new("bench");
        let s = open(&d);
        let mb = |s: &Store| std::fs::metadata(s.file()).unwrap().len() / 1_000_000;
        // 1. Small commits: each one is a durable redb commit.
        let n = 100u64;
        let t = Instant::now();
        for i in 1..=n {
            commit1(&s, i, vec![set(&format!("/bench/small{i}"), "v")]);
        }
        let per = t.elapsed() / n as u32;
        // Raw fsync cost on the same file system for comparison.
        let f = std::fs::File::create(d.0.join("fsync-probe")).unwrap();
        let t = Instant::now();
        for _ in 0..n {
            use std::io::Write;
            (&f).write_all(b"x").unwrap();
            f.sync_data().unwrap();
        }
        let fsync = t.elapsed() / n as u32;
        println!("small commit: {per:?} per commit; raw write+fdatasync: {fsync:?}");

        // 2. Full copy of 100k x 1 KiB (~100 MB) into a CopyWriter, 1 MiB chunks, 3 rounds
        //    (the later ones replace 100 MB).
        let chunks: Vec<Vec<(String, Vec<u8>)>> = (0..100)
            .map(|c| {
                (0..1000)
                    .map(|i| {
                        let n = c * 1000 + i;
                        (format!("/config/item{{{n:06}}}/blob"), big(n, 1024))
                    })
                    .collect()
            })
            .collect();
        let rounds: u64 = std::env::var("ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        for round in 0..rounds {
            let t = Instant::now();
            let c0 = thread_cpu();
            let mut w = s.begin_copy().unwrap();
            for c in &chunks {
                w.put_chunk(c).unwrap();
            }
            let staged = t.elapsed();
            w.finish(meta(1000 + round)).unwrap();
            let total = t.elapsed();
            let cpu = thread_cpu() - c0;
            let st = s.stats();
            println!(
                "full copy {round}: {} entries, {} MB: put_chunk {staged:?}, +finish {total:?} \
                 (thread CPU {cpu:?}); file {} MB",
                st.entries,
                st.bytes / 1_000_000,
                mb(&s)
            );
        }
        let t = Instant::now();
        commit1(&s, 2000, vec![set("/bench/x", "1")]);
        let first = t.elapsed();
        let t = Instant::now();
        commit1(&s, 2001, vec![set("/bench/x", "2")]);
        println!(
            "small commit on the 100 MB store: first {first:?} (frees the old copy's pages), \
             next {:?}",
            t.elapsed()
        );

        // 3. Reading it as a snapshot in 1 MiB chunks.
        let t = Instant::now();
        let mut snap = s.snapshot().unwrap();
        let mut n = 0;
        while let Some(c) = snap.next_chunk(1 << 20).unwrap() {
            n += c.len();
        }
        println!("snapshot read: {n} entries in {:?}", t.elapsed());
        drop(snap);

        // 4. End to end inside one process: snapshot of this store into a second store.
        let d2 = TempDir::new("bench2");
        let s2 = open(&d2);
        let t = Instant::now();
        let mut snap = s.snapshot().unwrap();
        let mut w = s2.begin_copy().unwrap();
        while let Some(c) = snap.next_chunk(1 << 20).unwrap() {
            w.put_chunk(&c).unwrap();
        }
        w.finish(snap.meta()).unwrap();
        println!("snapshot -> copy into another store: {:?}", t.elapsed());
        drop(snap);

        // 5. list, subtree delete, reopen.
        let t = Instant::now();
        let top = s.list("/config").unwrap();
        println!("list /config ({} children): {:?}", top.len(), t.elapsed());
        let t = Instant::now();
        commit1(
            &s,
            2002,
            vec![
                del("/config/item{000500}"),
                del("/config/item{000700}/blob"),
            ],
        );
        println!("delete of one entry: {:?}", t.elapsed());
        let t = Instant::now();
        commit1(&s, 2003, vec![del("/config")]);
        println!("delete of the 100k-entry subtree: {:?}", t.elapsed());
        assert_eq!(blob_tables(&s), (0, 0));
        println!("file size: {} MB", mb(&s));
        drop(s);
        let t = Instant::now();
        let _s = open(&d);
        println!("reopen: {:?}", t.elapsed());
    }
}
