//! The Raft log file, `raft.log` in the data directory: the Raft entries, hard state
//! (term, vote, commit), configuration and compaction base, as an append-only sequence of
//! checksummed records. A persist of the Ready loop is one `pwrite` and one `fdatasync`.
//!
//! A record, 8-byte aligned (zero padding after the payload), little-endian:
//!
//! ```text
//!  0  u32  magic 0x4752_4C48 ("HLRG")
//!  4  u32  payload length (≤ RAFT_LOG_MAX_RECORD_BYTES)
//!  8  u32  CRC-32 of bytes 12..24 and the payload
//! 12  u8   kind: 1 an entry, 2 the hard state, 3 the configuration, 4 a compaction base,
//!          5 a reset (everything replaced: the first record of a file)
//! 13  [3]  zero
//! 16  u64  durable-before: the file offset up to which the file was durable when this
//!          record was written (the start of its group)
//! 24  ...  payload: entry, hard state: protobuf (raft-rs's eraftpb); configuration:
//!          u32 length, ConfState (protobuf), member addresses; base: u64 index, u64 term;
//!          reset: u64 index, u64 term, u32 length, HardState, u32 length, ConfState,
//!          member addresses
//! ```
//!
//! Replay applies the records in order: an entry at or below the last index replaces that
//! index and every later one (a follower's conflicting uncommitted tail), a base drops the
//! entries up to it. The file is preallocated with zeros ([`RAFT_LOG_GROW_BYTES`] at a
//! time), so a persist overwrites allocated, written blocks and its `fdatasync` writes no
//! file metadata. When compacted entries take most of the file (at least
//! [`RAFT_LOG_REWRITE_MIN_BYTES`]), the live state is written to a new file that replaces
//! the old one by rename.
//!
//! Recovery reads the file whole. The first record that is short, has a bad checksum or is
//! not a record ends the log: if no valid record after it says the file was durable beyond
//! it (durable-before), it is the torn tail of the last group, which was never
//! acknowledged, and is cut off with a WARN (the file is rewritten, so no stale bytes
//! follow new records); otherwise durable data was damaged, and opening is refused, naming
//! the file and offset.

use super::storage::{decode_addrs, encode_addrs, Addrs};
use protobuf::Message as _;
use raft::prelude::*;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file in the data directory.
pub const RAFT_LOG_FILE: &str = "raft.log";
/// Largest accepted record payload (one Raft entry), in bytes; a longer length field is
/// damage, never an allocation.
pub const RAFT_LOG_MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;
/// The file is extended (written with zeros) by this many bytes at a time.
pub const RAFT_LOG_GROW_BYTES: u64 = 8 * 1024 * 1024;
/// The file is rewritten with the live state once compacted records take at least this
/// many bytes and more than the live ones.
pub const RAFT_LOG_REWRITE_MIN_BYTES: u64 = 16 * 1024 * 1024;

const TMP_SUFFIX: &str = ".new";
const HEADER: usize = 24;
const MAGIC: u32 = 0x4752_4C48;
const K_ENTRY: u8 = 1;
const K_HS: u8 = 2;
const K_CONF: u8 = 3;
const K_BASE: u8 = 4;
const K_RESET: u8 = 5;

use crate::store::log::{u32_at, u64_at};

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn crc(head: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&head[12..HEADER]);
    h.update(payload);
    h.finalize()
}

/// The on-disk state, as replayed (and kept in memory by the Raft storage).
#[derive(Default)]
pub struct Mem {
    pub hs: HardState,
    pub cs: ConfState,
    /// The index and term of the last compacted entry (0, 0: none).
    pub base: (u64, u64),
    pub entries: Vec<Entry>,
    pub addrs: Addrs,
}

impl Mem {
    pub fn first(&self) -> u64 {
        self.base.0 + 1
    }
    pub fn last(&self) -> u64 {
        self.base.0 + self.entries.len() as u64
    }

    /// Appends entries that start at most one after the last (replacing what they overlap).
    pub fn append(&mut self, ents: &[Entry]) -> Result<(), String> {
        let Some(i) = ents.first().map(|e| e.index) else {
            return Ok(());
        };
        if i <= self.base.0 {
            return Err(format!(
                "entry {i} at or before the compacted index {}",
                self.base.0
            ));
        }
        if i > self.last() + 1 {
            return Err(format!("entry {i} leaves a gap after {}", self.last()));
        }
        for (k, e) in ents.iter().enumerate() {
            if e.index != i + k as u64 {
                return Err(format!("entry {} out of sequence", e.index));
            }
        }
        self.entries.truncate((i - self.first()) as usize);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    /// Drops the entries up to `upto` (term `term`); returns the bytes their records took.
    pub fn set_base(&mut self, upto: u64, term: u64) -> u64 {
        if upto <= self.base.0 {
            return 0;
        }
        let n = ((upto - self.base.0) as usize).min(self.entries.len());
        let dead: u64 = self.entries[..n]
            .iter()
            .map(|e| align8(HEADER + e.compute_size() as usize) as u64)
            .sum();
        self.entries.drain(..n);
        self.base = (upto, term);
        dead
    }

    pub fn reset(&mut self, base: (u64, u64), hs: HardState, cs: ConfState, addrs: Addrs) {
        self.entries.clear();
        self.base = base;
        self.hs = hs;
        self.cs = cs;
        self.addrs = addrs;
    }

    fn replay(&mut self, kind: u8, p: &[u8]) -> Result<(), String> {
        match kind {
            K_ENTRY => {
                let e = Entry::parse_from_bytes(p).map_err(|e| format!("a bad entry: {e}"))?;
                self.append(std::slice::from_ref(&e))
            }
            K_HS => {
                self.hs =
                    HardState::parse_from_bytes(p).map_err(|e| format!("a bad hard state: {e}"))?;
                Ok(())
            }
            K_CONF => {
                let (cs, rest) = conf_of(p).ok_or("a bad configuration record")?;
                self.cs = cs;
                self.addrs = decode_addrs(rest).ok_or("bad member addresses")?;
                Ok(())
            }
            K_BASE => {
                if p.len() != 16 {
                    return Err("a bad base record".into());
                }
                let (i, t) = (u64_at(p, 0), u64_at(p, 8));
                if i > self.last() {
                    return Err(format!("a base {i} after the last entry {}", self.last()));
                }
                self.set_base(i, t);
                Ok(())
            }
            K_RESET => {
                let bad = || "a bad reset record".to_string();
                if p.len() < 20 {
                    return Err(bad());
                }
                let base = (u64_at(p, 0), u64_at(p, 8));
                let n = u32_at(p, 16) as usize;
                let hb = p.get(20..20 + n).ok_or_else(bad)?;
                let hs = HardState::parse_from_bytes(hb).map_err(|_| bad())?;
                let (cs, rest) = conf_of(&p[20 + n..]).ok_or_else(bad)?;
                let addrs = decode_addrs(rest).ok_or_else(bad)?;
                self.reset(base, hs, cs, addrs);
                Ok(())
            }
            k => Err(format!("an unknown record kind {k}")),
        }
    }
}

/// A ConfState with a u32 length in front, and what follows it.
fn conf_of(p: &[u8]) -> Option<(ConfState, &[u8])> {
    let n = u32::from_le_bytes(p.get(..4)?.try_into().ok()?) as usize;
    let b = p.get(4..4 + n)?;
    Some((ConfState::parse_from_bytes(b).ok()?, &p[4 + n..]))
}

/// What the record at an offset turned out to be.
enum Parsed {
    Rec {
        kind: u8,
        durable: u64,
        /// Payload bytes.
        plen: usize,
        /// The whole record, aligned.
        len: usize,
    },
    /// Not a record (zeros, or damage that starts at the magic).
    End,
    /// Looks like a record but is damaged (torn or corrupt).
    Bad(String),
}

fn parse_at(b: &[u8], off: usize) -> Parsed {
    if off >= b.len() {
        return Parsed::End;
    }
    let Some(h) = b.get(off..off + HEADER) else {
        return if b[off..].iter().all(|x| *x == 0) {
            Parsed::End
        } else {
            Parsed::Bad(format!("a short header: {} bytes left", b.len() - off))
        };
    };
    if u32_at(h, 0) != MAGIC {
        return Parsed::End;
    }
    let len = u32_at(h, 4) as u64;
    if len > RAFT_LOG_MAX_RECORD_BYTES {
        return Parsed::Bad(format!(
            "a length of {len} bytes (more than RAFT_LOG_MAX_RECORD_BYTES)"
        ));
    }
    let Some(p) = b.get(off + HEADER..off + HEADER + len as usize) else {
        return Parsed::Bad(format!(
            "a short record: {len} payload bytes, {} left in the file",
            b.len() - off - HEADER
        ));
    };
    if crc(h, p) != u32_at(h, 8) {
        return Parsed::Bad("a bad checksum".into());
    }
    Parsed::Rec {
        kind: h[12],
        durable: u64_at(h, 16),
        plen: len as usize,
        len: align8(HEADER + len as usize),
    }
}

pub struct LogFile {
    f: File,
    path: PathBuf,
    /// Where the next record goes.
    end: u64,
    /// The file is durable up to here.
    synced: u64,
    /// The file is written (records or zeros) up to here.
    alloc: u64,
    /// Records not yet written.
    buf: Vec<u8>,
    /// Bytes of records of compacted entries (a rewrite drops them).
    dead: u64,
}

fn io(op: &str, p: &Path, e: std::io::Error) -> String {
    format!("{} : {op}: {e}", p.display())
}

pub fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync", dir, e))
}

impl LogFile {
    /// Opens `dir`/raft.log (None: there is none) and replays it.
    pub fn open(dir: &Path) -> Result<Option<(LogFile, Mem)>, String> {
        let path = dir.join(RAFT_LOG_FILE);
        let f = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open", &path, e)),
        };
        let mut b = Vec::new();
        {
            use std::io::Read;
            (&f).read_to_end(&mut b).map_err(|e| io("read", &path, e))?;
        }
        let mut m = Mem::default();
        let mut off = 0usize;
        let mut torn: Option<String> = None;
        let mut seen_reset = false;
        loop {
            match parse_at(&b, off) {
                Parsed::Rec {
                    kind, plen, len, ..
                } => {
                    if !seen_reset && kind != K_RESET {
                        return Err(format!(
                            "{} : offset 0: the file does not start with a reset record",
                            path.display()
                        ));
                    }
                    seen_reset = true;
                    m.replay(kind, &b[off + HEADER..off + HEADER + plen])
                        .map_err(|e| format!("{} : offset {off}: {e}", path.display()))?;
                    off += len;
                }
                Parsed::End => break,
                Parsed::Bad(why) => {
                    torn = Some(why);
                    break;
                }
            }
        }
        // Is anything after the end? A valid record saying the file was durable beyond
        // it: damage; anything else: the torn rest of the last group.
        let mut rest_nonzero = false;
        let mut at = off + 8;
        while at + HEADER <= b.len() {
            if let Parsed::Rec { durable, .. } = parse_at(&b, at) {
                if durable > off as u64 {
                    return Err(format!(
                        "{} : offset {off}: damaged ({}), but the file was durable beyond it \
                         (a valid record at offset {at}): refusing to open; the Raft log of \
                         this node is lost: remove this node from the cluster, clear its data \
                         directory and add it again",
                        path.display(),
                        torn.as_deref().unwrap_or("not a record")
                    ));
                }
            }
            at += 8;
        }
        if off < b.len() && b[off..].iter().any(|x| *x != 0) {
            rest_nonzero = true;
        }
        if !seen_reset {
            if rest_nonzero {
                return Err(format!(
                    "{} : offset 0: not a Raft log file ({})",
                    path.display(),
                    torn.as_deref().unwrap_or("no record")
                ));
            }
            // Created, never written: nothing.
            return Err(format!("{} : an empty Raft log file", path.display()));
        }
        let dir_ok = dir.to_path_buf();
        if rest_nonzero {
            crate::warn!(
                "raft",
                "{} : the tail at offset {off} cut off ({}): a torn last write (never \
                 acknowledged), or damage to the last record written (which this node may have \
                 acknowledged: a vote or an entry of it lost)",
                path.display(),
                torn.as_deref().unwrap_or("stale bytes")
            );
            drop(f);
            let lf = LogFile::create(&dir_ok, &m)?;
            return Ok(Some((lf, m)));
        }
        let alloc = b.len() as u64;
        // Everything but the live entries' records is garbage a rewrite drops (compacted
        // entries, replaced tails, older hard states): counted from the file, so that a node
        // that restarts still rewrites it (a count kept from 0 at each start let the file
        // grow without bound across restarts).
        let live: u64 = m
            .entries
            .iter()
            .map(|e| align8(HEADER + e.compute_size() as usize) as u64)
            .sum();
        let lf = LogFile {
            f,
            path,
            end: off as u64,
            synced: off as u64,
            alloc,
            buf: Vec::new(),
            dead: (off as u64).saturating_sub(live),
        };
        Ok(Some((lf, m)))
    }

    /// Writes `m` as a new file (a reset record and the entries), durable, in place of
    /// the old one.
    pub fn create(dir: &Path, m: &Mem) -> Result<LogFile, String> {
        let path = dir.join(RAFT_LOG_FILE);
        let tmp = dir.join(format!("{RAFT_LOG_FILE}{TMP_SUFFIX}"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io("create", &tmp, e))?;
        let mut lf = LogFile {
            f,
            path: tmp.clone(),
            end: 0,
            synced: 0,
            alloc: 0,
            buf: Vec::new(),
            dead: 0,
        };
        lf.push_reset(m.base, &m.hs, &m.cs, &m.addrs)?;
        for e in &m.entries {
            lf.push_entry(e)?;
        }
        lf.write(true)?;
        std::fs::rename(&tmp, &path).map_err(|e| io("rename", &path, e))?;
        sync_dir(dir)?;
        lf.path = path;
        Ok(lf)
    }

    pub fn dead(&self) -> u64 {
        self.dead
    }
    pub fn add_dead(&mut self, n: u64) {
        self.dead += n;
    }
    pub fn set_dead(&mut self, n: u64) {
        self.dead = n;
    }
    /// The data directory.
    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
    /// Bytes of records in the file.
    pub fn len(&self) -> u64 {
        self.end
    }

    fn begin(&mut self, kind: u8) -> usize {
        let s = self.buf.len();
        self.buf.resize(s + HEADER, 0);
        self.buf[s..s + 4].copy_from_slice(&MAGIC.to_le_bytes());
        self.buf[s + 12] = kind;
        s
    }

    fn finish(&mut self, s: usize) -> Result<(), String> {
        let len = self.buf.len() - s - HEADER;
        if len as u64 > RAFT_LOG_MAX_RECORD_BYTES {
            self.buf.truncate(s);
            return Err(format!(
                "{} : a record of {len} bytes (more than RAFT_LOG_MAX_RECORD_BYTES)",
                self.path.display()
            ));
        }
        self.buf[s + 4..s + 8].copy_from_slice(&(len as u32).to_le_bytes());
        self.buf[s + 16..s + 24].copy_from_slice(&self.synced.to_le_bytes());
        let c = crc(&self.buf[s..s + HEADER], &self.buf[s + HEADER..]);
        self.buf[s + 8..s + 12].copy_from_slice(&c.to_le_bytes());
        self.buf.resize(s + align8(HEADER + len), 0);
        Ok(())
    }

    fn pb<M: protobuf::Message>(&mut self, s: usize, m: &M) -> Result<(), String> {
        if let Err(e) = m.write_to_vec(&mut self.buf) {
            self.buf.truncate(s);
            return Err(format!("{} : encoding: {e}", self.path.display()));
        }
        Ok(())
    }

    pub fn push_entry(&mut self, e: &Entry) -> Result<(), String> {
        let s = self.begin(K_ENTRY);
        self.pb(s, e)?;
        self.finish(s)
    }

    pub fn push_hs(&mut self, hs: &HardState) -> Result<(), String> {
        let s = self.begin(K_HS);
        self.pb(s, hs)?;
        self.finish(s)
    }

    fn push_cs(&mut self, s: usize, cs: &ConfState) -> Result<(), String> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.pb(s, cs)?;
        let n = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&n.to_le_bytes());
        Ok(())
    }

    pub fn push_conf(&mut self, cs: &ConfState, addrs: &Addrs) -> Result<(), String> {
        let s = self.begin(K_CONF);
        self.push_cs(s, cs)?;
        self.buf.extend_from_slice(&encode_addrs(addrs));
        self.finish(s)
    }

    pub fn push_base(&mut self, index: u64, term: u64) -> Result<(), String> {
        let s = self.begin(K_BASE);
        self.buf.extend_from_slice(&index.to_le_bytes());
        self.buf.extend_from_slice(&term.to_le_bytes());
        self.finish(s)
    }

    pub fn push_reset(
        &mut self,
        base: (u64, u64),
        hs: &HardState,
        cs: &ConfState,
        addrs: &Addrs,
    ) -> Result<(), String> {
        let s = self.begin(K_RESET);
        self.buf.extend_from_slice(&base.0.to_le_bytes());
        self.buf.extend_from_slice(&base.1.to_le_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.pb(s, hs)?;
        let n = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&n.to_le_bytes());
        self.push_cs(s, cs)?;
        self.buf.extend_from_slice(&encode_addrs(addrs));
        self.finish(s)
    }

    /// Writes the pushed records in one write, and makes them durable when `sync` (one
    /// fdatasync). Unsynced records become durable with the next synced write. On an
    /// error the records are dropped and the file is as before them (its tail is torn at
    /// worst, which recovery cuts).
    pub fn write(&mut self, sync: bool) -> Result<(), String> {
        if self.buf.is_empty() {
            if sync && self.synced < self.end {
                self.f
                    .sync_data()
                    .map_err(|e| io("fdatasync", &self.path, e))?;
                self.synced = self.end;
            }
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.write_buf(&buf, sync);
        self.buf = buf;
        self.buf.clear();
        r
    }

    fn write_buf(&mut self, buf: &[u8], sync: bool) -> Result<(), String> {
        let need = self.end + buf.len() as u64;
        let grown = need > self.alloc;
        if grown {
            // Zeros past the records, so later writes land on written blocks.
            let to = need + RAFT_LOG_GROW_BYTES;
            let zeros = vec![0u8; 1024 * 1024];
            let mut at = need.max(self.alloc);
            while at < to {
                let n = (to - at).min(zeros.len() as u64) as usize;
                self.f
                    .write_all_at(&zeros[..n], at)
                    .map_err(|e| io("write", &self.path, e))?;
                at += n as u64;
            }
            self.alloc = to;
        }
        self.f
            .write_all_at(buf, self.end)
            .map_err(|e| io("write", &self.path, e))?;
        self.end = need;
        if sync || grown {
            self.f
                .sync_data()
                .map_err(|e| io("fdatasync", &self.path, e))?;
            self.synced = self.end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ha-raftlog-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 40].into(),
            ..Default::default()
        }
    }

    fn fresh(d: &Path) -> LogFile {
        let mut m = Mem::default();
        m.cs.voters = vec![1, 2, 3];
        m.addrs.insert(1, "127.0.0.1:1".into());
        LogFile::create(d, &m).expect("create")
    }

    fn persist(lf: &mut LogFile, ents: &[Entry], term: u64) {
        for e in ents {
            lf.push_entry(e).expect("push");
        }
        lf.push_hs(&HardState {
            term,
            vote: 2,
            commit: 0,
            ..Default::default()
        })
        .expect("push");
        lf.write(true).expect("write");
    }

    #[test]
    fn raft_log_replays_entries_truncation_base_and_hard_state() {
        let d = scratch("replay");
        let mut lf = fresh(&d);
        persist(&mut lf, &(1..=10).map(|i| ent(i, 1)).collect::<Vec<_>>(), 1);
        // A conflicting tail from 7 on, in term 2.
        persist(&mut lf, &(7..=8).map(|i| ent(i, 2)).collect::<Vec<_>>(), 2);
        lf.push_base(3, 1).expect("base");
        lf.write(false).expect("write");
        let cs = ConfState {
            voters: vec![1, 2],
            ..Default::default()
        };
        let mut a = Addrs::new();
        a.insert(2, "127.0.0.1:2".into());
        lf.push_conf(&cs, &a).expect("conf");
        lf.write(true).expect("write");
        drop(lf);
        let (_, m) = LogFile::open(&d).expect("open").expect("a log");
        assert_eq!(m.base, (3, 1));
        assert_eq!((m.first(), m.last()), (4, 8));
        assert_eq!(
            m.entries.iter().map(|e| e.term).collect::<Vec<_>>(),
            [1, 1, 1, 2, 2]
        );
        assert_eq!((m.hs.term, m.hs.vote), (2, 2));
        assert_eq!(m.cs.voters, [1, 2]);
        assert_eq!(m.addrs.get(&2).map(String::as_str), Some("127.0.0.1:2"));
        // Appends after a reopen go on from the end.
        let (mut lf, _) = LogFile::open(&d).expect("open").expect("a log");
        persist(&mut lf, &[ent(9, 2)], 2);
        drop(lf);
        let (_, m) = LogFile::open(&d).expect("open").expect("a log");
        assert_eq!(m.last(), 9);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn raft_log_torn_tail_is_cut_and_mid_file_damage_refused() {
        let d = scratch("torn");
        let mut lf = fresh(&d);
        persist(&mut lf, &(1..=5).map(|i| ent(i, 1)).collect::<Vec<_>>(), 1);
        let tail = lf.end;
        persist(&mut lf, &(6..=8).map(|i| ent(i, 1)).collect::<Vec<_>>(), 1);
        let end = lf.end;
        drop(lf);
        let p = d.join(RAFT_LOG_FILE);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open");
        // A torn last group: its second record damaged, the rest present.
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, tail + 10).expect("read");
        f.write_all_at(&[b[0] ^ 0xff], tail + 10).expect("write");
        let (lf, m) = LogFile::open(&d).expect("open").expect("a log");
        assert_eq!(m.last(), 5, "the torn group is cut");
        // The rewrite left nothing after the records.
        let tail = lf.end;
        let b = std::fs::read(&p).expect("read");
        assert!(b[tail as usize..].iter().all(|x| *x == 0));
        drop(lf);
        // Damage inside a durable group (later groups say it was durable): refused.
        let (mut lf, _) = LogFile::open(&d).expect("open").expect("a log");
        persist(&mut lf, &(6..=8).map(|i| ent(i, 1)).collect::<Vec<_>>(), 1);
        persist(&mut lf, &[ent(9, 1)], 1);
        drop(lf);
        let f = OpenOptions::new().write(true).open(&p).expect("open");
        f.write_all_at(&[0xee; 4], tail + 60).expect("write");
        let e = LogFile::open(&d).err().expect("refused");
        assert!(
            e.contains("raft.log") && e.contains(&format!("offset {tail}")),
            "{e}"
        );
        let _ = end;
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn raft_log_rewrite_keeps_the_live_state_only() {
        let d = scratch("rewrite");
        let mut lf = fresh(&d);
        persist(
            &mut lf,
            &(1..=100).map(|i| ent(i, 1)).collect::<Vec<_>>(),
            1,
        );
        drop(lf);
        let (_, mut m) = LogFile::open(&d).expect("open").expect("a log");
        m.set_base(90, 1);
        let lf = LogFile::create(&d, &m).expect("rewrite");
        let small = lf.end;
        drop(lf);
        let (_, m2) = LogFile::open(&d).expect("open").expect("a log");
        assert_eq!((m2.first(), m2.last(), m2.base), (91, 100, (90, 1)));
        assert!(small < 2000, "{small}");
        assert!(!d.join(format!("{RAFT_LOG_FILE}{TMP_SUFFIX}")).exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
