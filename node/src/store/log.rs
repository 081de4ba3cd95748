//! The commit log: a sequential, checksummed record of every transaction, in front of the
//! redb tree (see the module documentation of `store` for how the two work together).
//!
//! Files: `<data-dir>/log/<segment number, 16 hex digits>.seg`. Segment numbers only grow.
//! A segment is preallocated to [`LOG_SEGMENT_BYTES`] (`fallocate`) or is a retired segment
//! renamed for reuse, so the steady-state write lands on allocated blocks and its fdatasync
//! need not update the file's metadata; a group larger than what is left starts a new segment
//! (and a group larger than a whole segment makes that segment longer).
//!
//! A record, 8-byte aligned (zero padding after the payload), little-endian:
//!
//! ```text
//!  0  u32  magic 0x4C4F_4748 ("HGOL")
//!  4  u32  payload length (≤ LOG_MAX_RECORD_BYTES)
//!  8  u32  CRC-32 of the segment number (u64 LE), bytes 12..32 and the payload
//! 12  u8   kind: 1 a transaction, 2 a seal (the segment ends here)
//! 13  [3]  zero
//! 16  u64  seq (0 for a seal)
//! 24  u64  durable-before: the log position (segment << 40 | offset) up to which the log was
//!          durable when this record was written (the start of its group)
//! 32  ...  payload: ETF {TxId, [{set, Path, Bin} | {delete, Path}]} (`log_record`)
//! ```
//!
//! Recovery reads every segment from `log-base` on (a redb meta key: the first segment of
//! the tree's current history; a full copy moves it past every older segment). Every segment
//! but the last one with records must end with a seal. In the last one, the first record that
//! is short, has a bad checksum or an impossible length ends the log: if no valid record
//! after it says the log was durable beyond it (durable-before), it is the torn tail of the
//! last group, which was never acknowledged, and is cut off with a WARN; otherwise durable
//! data was damaged, and the store refuses to open, naming the file and offset. After
//! recovery the tail segment is sealed and writing goes on in a fresh segment, so no stale
//! bytes of a torn group can ever follow new records.

use super::{log_record, parse_log_record, StoreError, StoreOp, TxMeta};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The log's directory inside the data directory.
pub const LOG_DIR: &str = "log";

/// Size a log segment is preallocated to, in bytes.
pub const LOG_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// Largest accepted record payload (one transaction), in bytes; a longer length field is
/// damage, never an allocation.
pub const LOG_MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

const HEADER: usize = 32;
const MAGIC: u32 = 0x4C4F_4748;
const KIND_TXN: u8 = 1;
const KIND_SEAL: u8 = 2;
const SEG_SHIFT: u32 = 40;

/// A log position: segment number and offset in one u64.
pub fn pos(seg: u64, off: u64) -> u64 {
    (seg << SEG_SHIFT) | off
}

fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

fn seg_name(no: u64) -> String {
    format!("{no:016x}.seg")
}

fn io_err(op: &'static str, what: &Path, e: std::io::Error) -> StoreError {
    StoreError::Db {
        op,
        msg: format!("commit log {}: {e}", what.display()),
    }
}

fn crc(seg: u64, head: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seg.to_le_bytes());
    h.update(&head[12..HEADER]);
    h.update(payload);
    h.finalize()
}

/// Appends one encoded record to `buf`.
fn encode(buf: &mut Vec<u8>, seg: u64, kind: u8, seq: u64, durable: u64, payload: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&MAGIC.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]);
    buf.extend_from_slice(&[kind, 0, 0, 0]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&durable.to_le_bytes());
    let c = crc(seg, &buf[start..start + HEADER], payload);
    buf[start + 8..start + 12].copy_from_slice(&c.to_le_bytes());
    buf.extend_from_slice(payload);
    buf.resize(start + align8((HEADER + payload.len()) as u64) as usize, 0);
}

/// The little-endian u32 at `at` of `b` (the caller has checked the length).
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The little-endian u64 at `at` of `b` (the caller has checked the length).
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A record's place in the log (for reading it back).
#[derive(Clone, Debug)]
pub struct Entry {
    pub seq: u64,
    pub txid: String,
    pub seg: u64,
    pub off: u64,
    pub len: u32,
}

/// What a record at an offset turned out to be.
enum Parsed {
    Txn {
        seq: u64,
        durable: u64,
        len: u64,
    },
    Seal,
    /// Not a record of this segment (zeros, stale bytes of a reused file): the end.
    End,
    /// Looks like a record of this segment but is damaged (torn or corrupt).
    Bad(String),
}

/// Where records are read from: a file (one record read back) or a whole segment in memory
/// (recovery, whose look-ahead tries every 8-byte offset).
trait Source {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()>;
}

impl Source for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        self.read_exact_at(buf, off)
    }
}

impl Source for [u8] {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let start = usize::try_from(off).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        match self.get(start..start.saturating_add(buf.len())) {
            Some(b) => {
                buf.copy_from_slice(b);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// Reads and checks the record at `off` of segment `seg` (`file_len` bytes long).
fn parse_at<S: Source + ?Sized>(
    seg: u64,
    f: &S,
    file_len: u64,
    off: u64,
    payload: &mut Vec<u8>,
) -> Parsed {
    if off + HEADER as u64 > file_len {
        return if off >= file_len {
            Parsed::End
        } else {
            Parsed::Bad(format!(
                "a short header: {} bytes left in the file",
                file_len - off
            ))
        };
    }
    let mut h = [0u8; HEADER];
    if f.read_at(&mut h, off).is_err() {
        return Parsed::Bad("the header cannot be read".into());
    }
    if u32_at(&h, 0) != MAGIC || u64_at(&h, 24) >> SEG_SHIFT != seg {
        return Parsed::End;
    }
    let len = u64::from(u32_at(&h, 4));
    if len > LOG_MAX_RECORD_BYTES {
        return Parsed::Bad(format!(
            "a length of {len} bytes (more than LOG_MAX_RECORD_BYTES)"
        ));
    }
    if off + HEADER as u64 + len > file_len {
        return Parsed::Bad(format!(
            "a short record: {len} payload bytes, {} left in the file",
            file_len - off - HEADER as u64
        ));
    }
    payload.clear();
    payload.resize(len as usize, 0);
    if f.read_at(payload, off + HEADER as u64).is_err() {
        return Parsed::Bad("the payload cannot be read".into());
    }
    if crc(seg, &h, payload) != u32_at(&h, 8) {
        return Parsed::Bad("a bad checksum".into());
    }
    match h[12] {
        KIND_TXN => Parsed::Txn {
            seq: u64_at(&h, 16),
            durable: u64_at(&h, 24),
            len: align8(HEADER as u64 + len),
        },
        KIND_SEAL => Parsed::Seal,
        k => Parsed::Bad(format!("an unknown record kind {k}")),
    }
}

/// One segment as recovery found it.
struct Scanned {
    no: u64,
    path: PathBuf,
    /// Transactions: (seq, txid, offset, record length).
    txns: Vec<(u64, String, u64, u32)>,
    sealed: bool,
    /// Where the records end (the seal's offset, or the first non-record).
    end: u64,
    /// The damaged record at `end`, if the log ended on one.
    bad: Option<String>,
    /// A valid record after `end` whose durable-before lies beyond `end`: durable data was
    /// damaged.
    durable_after: Option<u64>,
    /// Valid records after `end` (of the torn group) that are cut off with it.
    cut_records: u64,
}

fn scan(no: u64, path: &Path) -> Result<Scanned, StoreError> {
    // Read whole (a segment is LOG_SEGMENT_BYTES, or one group if that was larger): the
    // look-ahead below tries every 8-byte offset, which must not be a system call each.
    let bytes = std::fs::read(path).map_err(|e| io_err("open", path, e))?;
    let f: &[u8] = &bytes;
    let file_len = bytes.len() as u64;
    let mut s = Scanned {
        no,
        path: path.to_path_buf(),
        txns: Vec::new(),
        sealed: false,
        end: 0,
        bad: None,
        durable_after: None,
        cut_records: 0,
    };
    let mut payload = Vec::new();
    let mut off = 0u64;
    loop {
        match parse_at(no, f, file_len, off, &mut payload) {
            Parsed::Txn { seq, len, .. } => {
                let damaged = |why: String| StoreError::Damaged {
                    file: path.to_path_buf(),
                    why: format!("has a damaged record at offset {off} ({why})"),
                };
                let (txid, _) = parse_log_record(seq, &payload)
                    .map_err(|e| damaged(format!("its transaction cannot be read: {e}")))?;
                s.txns.push((seq, txid, off, len as u32));
                off += len;
            }
            Parsed::Seal => {
                s.sealed = true;
                s.end = off;
                return Ok(s);
            }
            Parsed::End => {
                s.end = off;
                break;
            }
            Parsed::Bad(why) => {
                s.end = off;
                s.bad = Some(why);
                break;
            }
        }
    }
    // Look past the end for valid records of this segment (8-byte steps).
    let mut o = s.end + 8;
    while o + HEADER as u64 <= file_len {
        if let Parsed::Txn { durable, len, .. } = parse_at(no, f, file_len, o, &mut payload) {
            if durable > pos(no, s.end) {
                s.durable_after = Some(o);
                break;
            }
            s.cut_records += 1;
            o += len;
            continue;
        }
        o += 8;
    }
    Ok(s)
}

/// What recovery hands to the store: the log, ready to append, and the transactions logged
/// at or after the tree's log position, to replay.
pub struct Recovered {
    pub log: Log,
    pub replay: Vec<(TxMeta, Vec<StoreOp>)>,
    /// The log position after the last replayed record.
    pub replay_end: u64,
    /// What recovery did, for the log (torn tail cut, segments removed).
    pub notes: Vec<String>,
}

/// The commit log's writer and index. Owned by the store behind a mutex.
pub struct Log {
    dir: PathBuf,
    /// The segment being written, its number and the next write offset.
    file: File,
    seg: u64,
    off: u64,
    /// The oldest segment still on disk (≥ log-base).
    first_seg: u64,
    /// A preallocated (or reused) segment with number `seg + 1`, if one is ready.
    spare: Option<File>,
    /// Every transaction in the segments on disk, oldest first.
    index: VecDeque<Entry>,
    /// Set after a failed write or fdatasync: the log refuses appends until reopened.
    failed: Option<String>,
    /// Bytes appended since the last checkpoint.
    pub since_checkpoint: u64,
    /// Records appended without a sync ([`Log::append`] with `sync` false), encoded for their
    /// places from `off` on and not yet written: the next synced append, [`Log::flush`]
    /// (every checkpoint) or [`Log::seal`] writes them with its own group. A crash loses
    /// them (the tree's durable checkpoint never covers them: a checkpoint flushes first).
    pending: Vec<u8>,
    pending_entries: Vec<Entry>,
    /// The seq of the last record written and synced (0: none since open or a reset).
    pub synced_seq: u64,
}

impl Log {
    /// Recovers the log in `data_dir/log` for a tree that holds every record before log
    /// position `tree_pos` and whose history starts at segment `log_base`: removes segments
    /// before it, checks every record, cuts a torn tail (WARN), refuses damage in the middle,
    /// and returns the transactions from `tree_pos` on.
    pub fn recover(data_dir: &Path, log_base: u64, tree_pos: u64) -> Result<Recovered, StoreError> {
        let dir = data_dir.join(LOG_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::CreateDir {
            dir: dir.clone(),
            source,
        })?;
        let mut notes = Vec::new();
        let mut nos = Vec::new();
        let rd = std::fs::read_dir(&dir).map_err(|e| io_err("open", &dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| io_err("open", &dir, e))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(hex) = name.strip_suffix(".seg") else {
                continue;
            };
            if hex.len() != 16 {
                continue;
            }
            if let Ok(no) = u64::from_str_radix(hex, 16) {
                nos.push(no);
            }
        }
        nos.sort_unstable();
        let mut removed = 0;
        for &no in nos.iter().filter(|&&n| n < log_base) {
            let p = dir.join(seg_name(no));
            std::fs::remove_file(&p).map_err(|e| io_err("open", &p, e))?;
            removed += 1;
        }
        if removed > 0 {
            notes.push(format!(
                "removed {removed} commit log segment(s) from before the last full copy"
            ));
        }
        nos.retain(|&n| n >= log_base);
        let mut scanned = Vec::new();
        for &no in &nos {
            scanned.push(scan(no, &dir.join(seg_name(no)))?);
        }
        // The last segment with anything in it; the ones after it are spares.
        let last = scanned
            .iter()
            .rposition(|s| !s.txns.is_empty() || s.sealed || s.bad.is_some());
        if let Some(last) = last {
            for w in scanned[..=last].windows(2) {
                if w[1].no != w[0].no + 1 {
                    return Err(StoreError::Damaged {
                        file: dir.join(seg_name(w[0].no + 1)),
                        why: "is missing (the commit log has a gap)".into(),
                    });
                }
            }
            for s in &scanned[..last] {
                if !s.sealed {
                    return Err(StoreError::Damaged {
                        file: s.path.clone(),
                        why: format!(
                            "has a damaged record at offset {} ({}), and later segments hold \
                             good records",
                            s.end,
                            s.bad
                                .as_deref()
                                .unwrap_or("the segment ends without a seal")
                        ),
                    });
                }
            }
            let t = &scanned[last];
            if let Some(at) = t.durable_after {
                return Err(StoreError::Damaged {
                    file: t.path.clone(),
                    why: format!(
                        "has a damaged record at offset {} ({}) followed by a good record at \
                         offset {at} written after it was durable",
                        t.end,
                        t.bad.as_deref().unwrap_or("not a record")
                    ),
                });
            }
            if t.bad.is_some() || t.cut_records > 0 {
                notes.push(format!(
                    "WARN: commit log {}: torn record at offset {} ({}){}: cut off (it was \
                     never acknowledged)",
                    t.path.display(),
                    t.end,
                    t.bad.as_deref().unwrap_or("not a record"),
                    if t.cut_records > 0 {
                        format!(", with {} record(s) of its group after it", t.cut_records)
                    } else {
                        String::new()
                    }
                ));
            }
        }
        // Every record before the tree's log position was durable (the tree was checkpointed
        // past it), so the log reaches at least that far; a shorter log lost durable records
        // (a segment emptied, cut or removed). Writing on from its end would put new records
        // before the tree's position, where the next recovery never replays them.
        let log_end = last.map_or(pos(log_base, 0), |l| pos(scanned[l].no, scanned[l].end));
        if tree_pos > log_end {
            let seg = tree_pos >> SEG_SHIFT;
            let off = tree_pos & ((1 << SEG_SHIFT) - 1);
            return Err(StoreError::Damaged {
                file: dir.join(seg_name(seg)),
                why: format!(
                    "is missing or shorter than the store's last checkpoint (which holds the \
                     records up to offset {off} of it; the commit log ends at offset {} of \
                     segment {:016x})",
                    log_end & ((1 << SEG_SHIFT) - 1),
                    log_end >> SEG_SHIFT
                ),
            });
        }
        // Spares beyond the first one after the tail are not needed.
        let tail_no = last.map(|l| scanned[l].no);
        let mut spare_no = None;
        for s in scanned.iter().skip(last.map_or(0, |l| l + 1)) {
            if spare_no.is_none() && tail_no.is_none_or(|t| s.no == t + 1) {
                spare_no = Some(s.no);
            } else {
                std::fs::remove_file(&s.path).map_err(|e| io_err("open", &s.path, e))?;
            }
        }
        let mut index = VecDeque::new();
        for s in scanned.iter().take(last.map_or(0, |l| l + 1)) {
            for (seq, txid, off, len) in &s.txns {
                index.push_back(Entry {
                    seq: *seq,
                    txid: txid.clone(),
                    seg: s.no,
                    off: *off,
                    len: *len,
                });
            }
        }
        // Where writing goes on: the tail is sealed (if it holds anything) and a fresh
        // segment starts; an empty log starts at log-base.
        let mut created = false;
        let (seg, file, spare) = match last {
            Some(l) => {
                let t = &scanned[l];
                if !t.sealed {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&t.path)
                        .map_err(|e| io_err("open", &t.path, e))?;
                    // Sealed where the good records end, and cut to that length: a sealed
                    // segment keeps no preallocated space, however many restarts leave one.
                    let mut buf = Vec::new();
                    encode(&mut buf, t.no, KIND_SEAL, 0, pos(t.no, t.end), &[]);
                    f.write_all_at(&buf, t.end)
                        .and_then(|()| f.set_len(t.end + buf.len() as u64))
                        .and_then(|()| f.sync_all())
                        .map_err(|e| io_err("open", &t.path, e))?;
                }
                let next = t.no + 1;
                let file = if spare_no == Some(next) {
                    open_rw(&dir.join(seg_name(next)))?
                } else {
                    created = true;
                    create_segment(&dir, next)?
                };
                (next, file, None)
            }
            None => {
                let no = spare_no.unwrap_or(log_base);
                let file = if spare_no.is_some() {
                    open_rw(&dir.join(seg_name(no)))?
                } else {
                    created = true;
                    create_segment(&dir, no)?
                };
                (no, file, None)
            }
        };
        if created || removed > 0 {
            sync_dir(&dir)?;
        }
        let first_seg = nos.first().copied().unwrap_or(seg).min(seg);
        let mut replay = Vec::new();
        let mut replay_end = tree_pos;
        let mut open: Option<(u64, File)> = None;
        for e in index.iter().filter(|e| pos(e.seg, e.off) >= tree_pos) {
            let p = dir.join(seg_name(e.seg));
            if open.as_ref().map(|(n, _)| *n) != Some(e.seg) {
                open = Some((e.seg, File::open(&p).map_err(|x| io_err("open", &p, x))?));
            }
            if let Some((_, f)) = &open {
                replay.push(read_entry(f, &p, e)?);
                replay_end = pos(e.seg, e.off + u64::from(e.len));
            }
        }
        let synced_seq = index.back().map_or(0, |e| e.seq);
        Ok(Recovered {
            log: Log {
                dir,
                file,
                seg,
                off: 0,
                first_seg,
                spare,
                index,
                failed: None,
                since_checkpoint: 0,
                pending: Vec::new(),
                pending_entries: Vec::new(),
                synced_seq,
            },
            replay,
            replay_end,
            notes,
        })
    }

    /// The segment the next record goes to (a full copy makes it the new log-base).
    pub fn next_base(&self) -> u64 {
        self.seg + 1
    }

    /// Appends the transactions as one group. With `sync`, the group (after any records
    /// appended before without a sync) is written and made durable: one write, one
    /// fdatasync. Without, the records are only encoded, in memory, for their places in the
    /// log, and are written with the next synced group, [`Log::flush`] or [`Log::seal`]; a
    /// crash before then loses them (a torn tail cannot result: they are written together
    /// with a later group, whose durable-before is where they start). After a failure the
    /// log refuses appends until reopened (what reached the disk is unknown).
    /// Returns the log position after the group.
    pub fn append(
        &mut self,
        txns: &[(TxMeta, Vec<StoreOp>)],
        sync: bool,
    ) -> Result<u64, StoreError> {
        if let Some(f) = &self.failed {
            return Err(StoreError::Db {
                op: "commit",
                msg: format!("the commit log failed earlier ({f}); reopening"),
            });
        }
        let payloads: Vec<Vec<u8>> = txns
            .iter()
            .map(|(m, ops)| log_record(&m.txid, ops))
            .collect();
        for (p, (m, _)) in payloads.iter().zip(txns) {
            if p.len() as u64 > LOG_MAX_RECORD_BYTES {
                return Err(StoreError::Db {
                    op: "commit",
                    msg: format!(
                        "transaction {} is {} bytes, more than the commit log's record limit \
                         of {LOG_MAX_RECORD_BYTES} bytes",
                        m.seq,
                        p.len()
                    ),
                });
            }
        }
        let total: u64 = payloads
            .iter()
            .map(|p| align8((HEADER + p.len()) as u64))
            .sum();
        let used = self.off + self.pending.len() as u64;
        if used > 0 && used + total > LOG_SEGMENT_BYTES {
            self.flush()?;
            self.roll()?;
        }
        // Everything before `off` is durable; the pending records (if any) start there.
        let durable = pos(self.seg, self.off);
        let mut buf = std::mem::take(&mut self.pending);
        buf.reserve(total as usize);
        let mut entries = std::mem::take(&mut self.pending_entries);
        for (p, (m, _)) in payloads.iter().zip(txns) {
            let at = self.off + buf.len() as u64;
            encode(&mut buf, self.seg, KIND_TXN, m.seq, durable, p);
            entries.push(Entry {
                seq: m.seq,
                txid: m.txid.clone(),
                seg: self.seg,
                off: at,
                len: (self.off + buf.len() as u64 - at) as u32,
            });
        }
        self.since_checkpoint += total;
        let end = pos(self.seg, self.off + buf.len() as u64);
        self.pending = buf;
        self.pending_entries = entries;
        if sync {
            self.flush()?;
        }
        Ok(end)
    }

    /// Writes and syncs the records appended without a sync (one write, one fdatasync; none
    /// if there are none).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Some(f) = &self.failed {
            return Err(StoreError::Db {
                op: "commit",
                msg: format!("the commit log failed earlier ({f}); reopening"),
            });
        }
        let buf = std::mem::take(&mut self.pending);
        let r = self
            .file
            .write_all_at(&buf, self.off)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = r {
            let e = io_err("commit", &self.dir.join(seg_name(self.seg)), e);
            self.failed = Some(e.to_string());
            self.pending_entries.clear();
            return Err(e);
        }
        self.off += buf.len() as u64;
        if let Some(e) = self.pending_entries.last() {
            self.synced_seq = e.seq;
        }
        self.index.extend(self.pending_entries.drain(..));
        Ok(())
    }

    /// Ends the current segment with a seal (durable before anything goes to the next one)
    /// and moves to the next segment (the spare if ready, else a new one).
    fn roll(&mut self) -> Result<(), StoreError> {
        let path = self.dir.join(seg_name(self.seg));
        let mut buf = Vec::new();
        encode(
            &mut buf,
            self.seg,
            KIND_SEAL,
            0,
            pos(self.seg, self.off),
            &[],
        );
        let fail = |log: &mut Log, e: StoreError| {
            log.failed = Some(e.to_string());
            e
        };
        if let Err(e) = self
            .file
            .write_all_at(&buf, self.off)
            .and_then(|()| self.file.sync_data())
        {
            let e = io_err("commit", &path, e);
            return Err(fail(self, e));
        }
        let next = self.seg + 1;
        let file = match self.spare.take() {
            Some(f) => f,
            None => match create_segment(&self.dir, next).and_then(|f| {
                sync_dir(&self.dir)?;
                Ok(f)
            }) {
                Ok(f) => f,
                Err(e) => return Err(fail(self, e)),
            },
        };
        self.file = file;
        self.seg = next;
        self.off = 0;
        Ok(())
    }

    /// Clean close: seals the segment being written where its records end and cuts it to that
    /// length, so that the next open finds a sealed tail (no repair, nothing to write there)
    /// and starts in the spare.
    pub fn seal(&mut self) -> Result<(), StoreError> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.flush()?;
        let path = self.dir.join(seg_name(self.seg));
        let mut buf = Vec::new();
        encode(
            &mut buf,
            self.seg,
            KIND_SEAL,
            0,
            pos(self.seg, self.off),
            &[],
        );
        let r = self
            .file
            .write_all_at(&buf, self.off)
            .and_then(|()| self.file.set_len(self.off + buf.len() as u64))
            .and_then(|()| self.file.sync_all());
        // Nothing more goes to this log (it is closed next).
        self.failed = Some("the log was closed".into());
        r.map_err(|e| io_err("close", &path, e))
    }

    /// Whether a spare segment should be prepared (and its number).
    pub fn wants_spare(&self) -> Option<u64> {
        if self.spare.is_none() {
            Some(self.seg + 1)
        } else {
            None
        }
    }

    /// Installs a segment prepared by [`prepare_segment`] as the spare, if still wanted.
    pub fn set_spare(&mut self, no: u64, f: File) -> bool {
        if self.spare.is_none() && no == self.seg + 1 {
            self.spare = Some(f);
            true
        } else {
            false
        }
    }

    /// The segments no longer needed: every record in them is in the durable tree (before
    /// log position `checkpoint_pos`) and older than the backlog of `max_txns` (as
    /// [`Log::backlog`]). Drops them from the index and returns their numbers (the caller
    /// removes or reuses the files).
    pub fn retire(&mut self, checkpoint_pos: u64, max_txns: u64) -> Vec<u64> {
        let keep_seq = self.backlog_floor(max_txns);
        let keep_seg = self
            .index
            .iter()
            .find(|e| e.seq >= keep_seq)
            .map_or(self.seg, |e| e.seg)
            .min(checkpoint_pos >> SEG_SHIFT)
            .min(self.seg);
        while self.index.front().is_some_and(|e| e.seg < keep_seg) {
            self.index.pop_front();
        }
        let out: Vec<u64> = (self.first_seg..keep_seg).collect();
        self.first_seg = self.first_seg.max(keep_seg);
        out
    }

    /// The lowest seq of the backlog: the transactions with seq > last − max_txns.
    fn backlog_floor(&self, max_txns: u64) -> u64 {
        let last = self.index.back().map_or(0, |e| e.seq);
        last.saturating_sub(max_txns.max(1) - 1)
    }

    /// The backlog entries with `lo <= seq <= hi`.
    pub fn backlog(&self, lo: u64, hi: u64, max_txns: u64) -> Vec<Entry> {
        let lo = lo.max(self.backlog_floor(max_txns));
        self.index
            .iter()
            .filter(|e| e.seq >= lo && e.seq <= hi)
            .cloned()
            .collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The history is replaced (a full copy whose meta names `base` as log-base is durable):
    /// every older segment goes, writing starts in a new segment `base`.
    pub fn reset(&mut self, base: u64) -> Result<Vec<u64>, StoreError> {
        let old: Vec<u64> = (self.first_seg..=self.seg).collect();
        self.index.clear();
        // Records not yet written belong to the replaced history.
        self.pending.clear();
        self.pending_entries.clear();
        self.synced_seq = 0;
        let file = match self.spare.take() {
            Some(f) if base == self.seg + 1 => f,
            _ => match create_segment(&self.dir, base) {
                Ok(f) => f,
                Err(e) => {
                    self.failed = Some(e.to_string());
                    return Err(e);
                }
            },
        };
        self.file = file;
        self.seg = base;
        self.off = 0;
        self.first_seg = base;
        self.since_checkpoint = 0;
        Ok(old)
    }

    /// The path of segment `no`.
    pub fn seg_path(&self, no: u64) -> PathBuf {
        self.dir.join(seg_name(no))
    }
}

/// Reads back one logged transaction (checking its checksum).
pub fn read_entry(f: &File, path: &Path, e: &Entry) -> Result<(TxMeta, Vec<StoreOp>), StoreError> {
    let bad = |why: &str| {
        StoreError::Corrupt(format!(
            "commit log {} record at offset {} (seq {}): {why}",
            path.display(),
            e.off,
            e.seq
        ))
    };
    let len = f.metadata().map_err(|x| io_err("read", path, x))?.len();
    let mut payload = Vec::new();
    match parse_at(e.seg, f, len, e.off, &mut payload) {
        Parsed::Txn { seq, .. } if seq == e.seq => {
            let (txid, ops) = parse_log_record(seq, &payload)?;
            Ok((TxMeta { seq, txid }, ops))
        }
        Parsed::Bad(why) => Err(bad(&why)),
        _ => Err(bad("not the record the index names")),
    }
}

fn open_rw(p: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .map_err(|e| io_err("open", p, e))
}

/// Creates segment `no`, preallocated to [`LOG_SEGMENT_BYTES`] (not yet synced to the
/// directory: call [`sync_dir`]).
pub fn create_segment(dir: &Path, no: u64) -> Result<File, StoreError> {
    let p = dir.join(seg_name(no));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .map_err(|e| io_err("create", &p, e))?;
    preallocate(&f, &p)?;
    Ok(f)
}

fn preallocate(f: &File, p: &Path) -> Result<(), StoreError> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a descriptor we own, with valid arguments.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, LOG_SEGMENT_BYTES as libc::off_t) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            // No fallocate on this file system: a sparse file (each fdatasync then also
            // writes the file's metadata).
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => f
                .set_len(LOG_SEGMENT_BYTES)
                .map_err(|e| io_err("create", p, e))?,
            _ => return Err(io_err("create", p, e)),
        }
    }
    f.sync_all().map_err(|e| io_err("create", p, e))
}

/// Prepares segment `no` as a spare: reuses the retired segment `reuse` (renamed, its
/// blocks already written) when given, else creates one. Durable in the directory.
pub fn prepare_segment(dir: &Path, no: u64, reuse: Option<u64>) -> Result<File, StoreError> {
    let p = dir.join(seg_name(no));
    let f = match reuse {
        Some(old) => {
            let from = dir.join(seg_name(old));
            std::fs::rename(&from, &p).map_err(|e| io_err("create", &p, e))?;
            open_rw(&p)?
        }
        None => create_segment(dir, no)?,
    };
    sync_dir(dir)?;
    Ok(f)
}

pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("ha-node-log-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn tx(seq: u64) -> (TxMeta, Vec<StoreOp>) {
        (
            TxMeta {
                seq,
                txid: format!("t{seq}"),
            },
            vec![StoreOp::Set(format!("/k{seq}"), vec![seq as u8; 50])],
        )
    }

    #[test]
    fn log_encode_parse_round_trip_and_alignment() {
        let d = scratch("enc");
        let Recovered {
            mut log, replay, ..
        } = Log::recover(&d, 0, 0).unwrap();
        assert!(replay.is_empty());
        log.append(&[tx(1), tx(2)], true).unwrap();
        log.append(&[tx(3)], true).unwrap();
        assert!(log.index.iter().all(|e| e.off % 8 == 0 && e.len % 8 == 0));
        let second = log.index[1].clone();
        drop(log);
        let r = Log::recover(&d, 0, pos(second.seg, second.off)).unwrap();
        assert_eq!(
            r.replay.iter().map(|t| t.0.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(r.replay[0], tx(2));
        assert_eq!(r.log.backlog(0, u64::MAX, 10).len(), 3);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn log_unsynced_records_are_written_with_the_next_group_or_lost() {
        let d = scratch("unsynced");
        let Recovered { mut log, .. } = Log::recover(&d, 0, 0).unwrap();
        log.append(&[tx(1)], true).unwrap();
        log.append(&[tx(2)], false).unwrap();
        log.append(&[tx(3)], false).unwrap();
        assert_eq!(log.synced_seq, 1);
        assert_eq!(log.backlog(0, u64::MAX, 10).len(), 1);
        // Lost in a crash (never written).
        drop(log);
        let Recovered {
            mut log, replay, ..
        } = Log::recover(&d, 0, 0).unwrap();
        assert_eq!(replay.iter().map(|t| t.0.seq).collect::<Vec<_>>(), vec![1]);
        // Written with the next synced group, at the positions they were given.
        log.append(&[tx(2)], false).unwrap();
        log.append(&[tx(3)], false).unwrap();
        log.append(&[tx(4)], true).unwrap();
        assert_eq!(log.synced_seq, 4);
        log.append(&[tx(5)], false).unwrap();
        log.flush().unwrap();
        assert_eq!(log.synced_seq, 5);
        drop(log);
        let r = Log::recover(&d, 0, 0).unwrap();
        assert_eq!(
            r.replay.iter().map(|t| t.0.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
