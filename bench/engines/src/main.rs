//! Side-by-side commit latency of the storage-engine candidates for ha-node's store (issue 11).
//!
//! One "commit" is one transaction of one ~100-byte write (a 30-byte keypath, a 70-byte
//! value), durable when the call returns. The candidates run interleaved, round by round, in
//! one process on one file system (the directory given, default `./engines-data`), so that
//! noise falls on all alike:
//!
//! - `floor-append`: a sequential 4 KiB write + fdatasync on a growing file (the floor the
//!   issue names),
//! - `floor-overwrite`: the same on a file whose blocks were written before (no metadata),
//! - `redb-immediate`: ha-node's store before issue 11: one redb write transaction with
//!   `Durability::Immediate` holding the data and a txlog record (seq → ETF-sized record),
//! - `redb-immediate-notxlog`: the same without the txlog table,
//! - `log-append` / `log-fallocate` / `log-overwrite`: the commit log alone (a checksummed
//!   record written + fdatasync) on a growing file, on an fallocate'd one (unwritten extents)
//!   and on a file whose blocks were written before (a reused segment),
//! - `redb-none+log-*`: the log as above, then the redb write transaction committed with
//!   `Durability::None` (ha-node's store after issue 11; checkpoints are not in the timed path:
//!   one durable redb commit every 1000 commits, outside the timing),
//! - `fjall`: fjall 2 (an LSM tree with a journal): insert + `persist(SyncData)`.
//!
//! `cargo run --release -- [DIR] [ROUNDS] [COMMITS_PER_ROUND]`; prints p50/p90/p99 in µs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SEGMENT_BYTES: u64 = 64 << 20;
const CHECKPOINT_EVERY: u64 = 1000;

const DATA: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("data");
const TXLOG: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("txlog");

fn key(i: u64) -> Vec<u8> {
    format!("/bench/item{{{:08}}}/value", i % 5000).into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    let mut v = format!("value-{i:012}-").into_bytes();
    v.resize(70, b'x');
    v
}

/// A log record as ha-node's store writes it: a 32-byte header (magic, length, crc, seq,
/// position) and the ETF-sized payload (txid + ops).
fn record(seq: u64, pos: u64) -> Vec<u8> {
    let mut payload = format!("node-a-{seq}-1764460000000000").into_bytes();
    payload.extend_from_slice(&key(seq));
    payload.extend_from_slice(&value(seq));
    payload.extend_from_slice(&[0u8; 20]);
    let mut r = Vec::with_capacity(32 + payload.len());
    r.extend_from_slice(&0x4841_4c47u32.to_le_bytes());
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&seq.to_le_bytes());
    r.extend_from_slice(&pos.to_le_bytes());
    r.extend_from_slice(&payload);
    let crc = crc32fast::hash(&r[12..]);
    r[8..12].copy_from_slice(&crc.to_le_bytes());
    r
}

#[derive(Clone, Copy, PartialEq)]
enum Prealloc {
    Append,
    Fallocate,
    Overwrite,
}

/// The commit log: one segment file, records written at `pos`, fdatasync per commit.
struct Log {
    file: File,
    pos: u64,
    how: Prealloc,
    path: PathBuf,
}

impl Log {
    fn new(path: PathBuf, how: Prealloc) -> Log {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut l = Log {
            file,
            pos: 0,
            how,
            path,
        };
        l.prepare();
        l
    }

    fn prepare(&mut self) {
        match self.how {
            Prealloc::Append => {
                self.file.set_len(0).unwrap();
            }
            Prealloc::Fallocate => {
                self.file.set_len(0).unwrap();
                // SAFETY: fallocate on our own open descriptor.
                let r = unsafe { libc::fallocate(fd(&self.file), 0, 0, SEGMENT_BYTES as i64) };
                assert_eq!(r, 0, "fallocate");
            }
            Prealloc::Overwrite => {
                if self.file.metadata().unwrap().len() < SEGMENT_BYTES {
                    let zeros = vec![0u8; 1 << 20];
                    for i in 0..(SEGMENT_BYTES >> 20) {
                        self.file.write_all_at(&zeros, i << 20).unwrap();
                    }
                }
            }
        }
        self.file.sync_all().unwrap();
        sync_dir(self.path.parent().unwrap());
        self.pos = 0;
    }

    fn append(&mut self, rec: &[u8]) {
        if self.pos + rec.len() as u64 > SEGMENT_BYTES {
            self.prepare();
        }
        self.file.write_all_at(rec, self.pos).unwrap();
        self.pos += rec.len() as u64;
        self.file.sync_data().unwrap();
    }
}

fn fd(f: &File) -> i32 {
    use std::os::fd::AsRawFd;
    f.as_raw_fd()
}

fn sync_dir(d: &Path) {
    File::open(d).unwrap().sync_all().unwrap();
}

trait Candidate {
    fn name(&self) -> String;
    /// One durable commit of transaction `i`.
    fn commit(&mut self, i: u64);
    /// Work between rounds (outside the timing): checkpoints.
    fn between(&mut self) {}
}

struct Floor {
    file: File,
    pos: u64,
    overwrite: bool,
}

impl Candidate for Floor {
    fn name(&self) -> String {
        if self.overwrite {
            "floor-overwrite (4 KiB)".into()
        } else {
            "floor-append (4 KiB)".into()
        }
    }
    fn commit(&mut self, _i: u64) {
        let page = [0x5au8; 4096];
        if self.pos + 4096 > SEGMENT_BYTES {
            self.pos = 0;
            if !self.overwrite {
                self.file.set_len(0).unwrap();
                self.file.sync_all().unwrap();
            }
        }
        self.file.write_all_at(&page, self.pos).unwrap();
        self.pos += 4096;
        self.file.sync_data().unwrap();
    }
}

struct RedbImmediate {
    db: redb::Database,
    txlog: bool,
}

impl Candidate for RedbImmediate {
    fn name(&self) -> String {
        if self.txlog {
            "redb-immediate (data + txlog)".into()
        } else {
            "redb-immediate-notxlog".into()
        }
    }
    fn commit(&mut self, i: u64) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(redb::Durability::Immediate);
        {
            let mut t = txn.open_table(DATA).unwrap();
            t.insert(key(i).as_slice(), value(i).as_slice()).unwrap();
            if self.txlog {
                let mut l = txn.open_table(TXLOG).unwrap();
                l.insert(i, record(i, 0).as_slice()).unwrap();
                if i > 10_000 {
                    l.remove(i - 10_000).unwrap();
                }
            }
        }
        txn.commit().unwrap();
    }
}

struct LogOnly {
    log: Log,
    redb: Option<redb::Database>,
    since_checkpoint: u64,
}

impl Candidate for LogOnly {
    fn name(&self) -> String {
        let how = match self.log.how {
            Prealloc::Append => "append",
            Prealloc::Fallocate => "fallocate",
            Prealloc::Overwrite => "overwrite",
        };
        if self.redb.is_some() {
            format!("redb-none+log-{how}")
        } else {
            format!("log-{how}")
        }
    }
    fn commit(&mut self, i: u64) {
        // As the store does it: the redb transaction is built first (a failing change is
        // refused before anything is logged), the log record made durable, then the redb
        // transaction committed without durability (it becomes visible).
        let txn = self.redb.as_ref().map(|db| {
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(redb::Durability::None);
            {
                let mut t = txn.open_table(DATA).unwrap();
                t.insert(key(i).as_slice(), value(i).as_slice()).unwrap();
            }
            txn
        });
        let rec = record(i, self.log.pos);
        self.log.append(&rec);
        if let Some(txn) = txn {
            txn.commit().unwrap();
            self.since_checkpoint += 1;
        }
    }
    fn between(&mut self) {
        if let Some(db) = &self.redb {
            if self.since_checkpoint >= CHECKPOINT_EVERY {
                let mut txn = db.begin_write().unwrap();
                txn.set_durability(redb::Durability::Immediate);
                txn.set_quick_repair(true);
                txn.commit().unwrap();
                self.since_checkpoint = 0;
            }
        }
    }
}

/// As `LogOnly` with redb, but the fdatasync runs on a sync thread while this thread builds
/// the redb transaction (the record is written first; the redb commit waits for the sync).
struct Overlap {
    log: Log,
    db: redb::Database,
    to_sync: std::sync::mpsc::SyncSender<File>,
    synced: std::sync::mpsc::Receiver<File>,
    since_checkpoint: u64,
}

impl Overlap {
    fn new(log: Log, db: redb::Database) -> Overlap {
        let (to_sync, rx) = std::sync::mpsc::sync_channel::<File>(1);
        let (tx, synced) = std::sync::mpsc::sync_channel::<File>(1);
        std::thread::spawn(move || {
            while let Ok(f) = rx.recv() {
                f.sync_data().unwrap();
                if tx.send(f).is_err() {
                    return;
                }
            }
        });
        Overlap {
            log,
            db,
            to_sync,
            synced,
            since_checkpoint: 0,
        }
    }
}

impl Candidate for Overlap {
    fn name(&self) -> String {
        "redb-none+log-overwrite, sync thread".into()
    }
    fn commit(&mut self, i: u64) {
        let rec = record(i, self.log.pos);
        if self.log.pos + rec.len() as u64 > SEGMENT_BYTES {
            self.log.prepare();
        }
        self.log.file.write_all_at(&rec, self.log.pos).unwrap();
        self.log.pos += rec.len() as u64;
        self.to_sync.send(self.log.file.try_clone().unwrap()).unwrap();
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(redb::Durability::None);
        {
            let mut t = txn.open_table(DATA).unwrap();
            t.insert(key(i).as_slice(), value(i).as_slice()).unwrap();
        }
        let _f = self.synced.recv().unwrap();
        txn.commit().unwrap();
        self.since_checkpoint += 1;
    }
    fn between(&mut self) {
        if self.since_checkpoint >= CHECKPOINT_EVERY {
            let mut txn = self.db.begin_write().unwrap();
            txn.set_durability(redb::Durability::Immediate);
            txn.set_quick_repair(true);
            txn.commit().unwrap();
            self.since_checkpoint = 0;
        }
    }
}

/// As `LogOnly` with redb, in one thread: the record is written and its writeback started
/// (`sync_file_range`), the redb transaction is built meanwhile, then fdatasync waits for the
/// write and flushes, and the redb transaction commits.
struct EarlyWrite {
    log: Log,
    db: redb::Database,
    since_checkpoint: u64,
}

impl Candidate for EarlyWrite {
    fn name(&self) -> String {
        "redb-none+log-overwrite, early write".into()
    }
    fn commit(&mut self, i: u64) {
        use std::os::fd::AsRawFd;
        let rec = record(i, self.log.pos);
        if self.log.pos + rec.len() as u64 > SEGMENT_BYTES {
            self.log.prepare();
        }
        self.log.file.write_all_at(&rec, self.log.pos).unwrap();
        // SAFETY: sync_file_range on our own descriptor.
        unsafe {
            libc::sync_file_range(
                self.log.file.as_raw_fd(),
                self.log.pos as i64,
                rec.len() as i64,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        self.log.pos += rec.len() as u64;
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(redb::Durability::None);
        {
            let mut t = txn.open_table(DATA).unwrap();
            t.insert(key(i).as_slice(), value(i).as_slice()).unwrap();
        }
        self.log.file.sync_data().unwrap();
        txn.commit().unwrap();
        self.since_checkpoint += 1;
    }
    fn between(&mut self) {
        if self.since_checkpoint >= CHECKPOINT_EVERY {
            let mut txn = self.db.begin_write().unwrap();
            txn.set_durability(redb::Durability::Immediate);
            txn.set_quick_repair(true);
            txn.commit().unwrap();
            self.since_checkpoint = 0;
        }
    }
}

/// The redb non-durable commit alone (no log, not durable): what the log adds it to.
struct RedbNone {
    db: redb::Database,
}

impl Candidate for RedbNone {
    fn name(&self) -> String {
        "redb-none alone (not durable)".into()
    }
    fn commit(&mut self, i: u64) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(redb::Durability::None);
        {
            let mut t = txn.open_table(DATA).unwrap();
            t.insert(key(i).as_slice(), value(i).as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    fn between(&mut self) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(redb::Durability::Immediate);
        txn.commit().unwrap();
    }
}

struct Fjall {
    ks: fjall::Keyspace,
    part: fjall::PartitionHandle,
}

impl Candidate for Fjall {
    fn name(&self) -> String {
        "fjall (insert + persist SyncData)".into()
    }
    fn commit(&mut self, i: u64) {
        self.part.insert(key(i), value(i)).unwrap();
        self.ks.persist(fjall::PersistMode::SyncData).unwrap();
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(args.first().map(String::as_str).unwrap_or("engines-data"));
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let per: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let open_file = |name: &str, prefill: bool| {
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join(name))
            .unwrap();
        if prefill {
            let zeros = vec![0u8; 1 << 20];
            for i in 0..(SEGMENT_BYTES >> 20) {
                f.write_all_at(&zeros, i << 20).unwrap();
            }
            f.sync_all().unwrap();
        }
        f
    };
    let redb_at = |name: &str| redb::Database::create(dir.join(name)).unwrap();
    let fj = fjall::Config::new(dir.join("fjall")).open().unwrap();
    let part = fj
        .open_partition("data", fjall::PartitionCreateOptions::default())
        .unwrap();
    let mut cands: Vec<Box<dyn Candidate>> = vec![
        Box::new(Floor {
            file: open_file("floor-append", false),
            pos: 0,
            overwrite: false,
        }),
        Box::new(Floor {
            file: open_file("floor-overwrite", true),
            pos: 0,
            overwrite: true,
        }),
        Box::new(RedbImmediate {
            db: redb_at("immediate.redb"),
            txlog: true,
        }),
        Box::new(RedbImmediate {
            db: redb_at("immediate-notxlog.redb"),
            txlog: false,
        }),
        Box::new(LogOnly {
            log: Log::new(dir.join("log-append"), Prealloc::Append),
            redb: None,
            since_checkpoint: 0,
        }),
        Box::new(LogOnly {
            log: Log::new(dir.join("log-fallocate"), Prealloc::Fallocate),
            redb: None,
            since_checkpoint: 0,
        }),
        Box::new(LogOnly {
            log: Log::new(dir.join("log-overwrite"), Prealloc::Overwrite),
            redb: None,
            since_checkpoint: 0,
        }),
        Box::new(LogOnly {
            log: Log::new(dir.join("rlog-append"), Prealloc::Append),
            redb: Some(redb_at("none-append.redb")),
            since_checkpoint: 0,
        }),
        Box::new(LogOnly {
            log: Log::new(dir.join("rlog-fallocate"), Prealloc::Fallocate),
            redb: Some(redb_at("none-fallocate.redb")),
            since_checkpoint: 0,
        }),
        Box::new(LogOnly {
            log: Log::new(dir.join("rlog-overwrite"), Prealloc::Overwrite),
            redb: Some(redb_at("none-overwrite.redb")),
            since_checkpoint: 0,
        }),
        Box::new(Overlap::new(
            Log::new(dir.join("olog-overwrite"), Prealloc::Overwrite),
            redb_at("none-overlap.redb"),
        )),
        Box::new(EarlyWrite {
            log: Log::new(dir.join("elog-overwrite"), Prealloc::Overwrite),
            db: redb_at("none-early.redb"),
            since_checkpoint: 0,
        }),
        Box::new(RedbNone {
            db: redb_at("none-alone.redb"),
        }),
        Box::new(Fjall { ks: fj, part }),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cands.len()];
    let mut i = 1u64;
    for round in 0..rounds {
        // Rotate the order each round so that no candidate always follows the same one.
        for k in 0..cands.len() {
            let c = (k + round) % cands.len();
            for _ in 0..per {
                let t = Instant::now();
                cands[c].commit(i);
                times[c].push(t.elapsed());
                i += 1;
            }
            cands[c].between();
        }
    }
    let floor = {
        let mut s = times[0].clone();
        s.sort();
        pct(&s, 0.5)
    };
    println!(
        "{} rounds x {per} commits of ~100 bytes each, in {}",
        rounds,
        dir.display()
    );
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>12}",
        "candidate", "p50 µs", "p90 µs", "p99 µs", "p50/floor"
    );
    for (c, t) in cands.iter().zip(times.iter_mut()) {
        t.sort();
        println!(
            "{:<36} {:>9.1} {:>9.1} {:>9.1} {:>11.2}x",
            c.name(),
            pct(t, 0.5),
            pct(t, 0.9),
            pct(t, 0.99),
            pct(t, 0.5) / floor
        );
    }
    drop(cands);
    let _ = std::fs::remove_dir_all(&dir);
}
