//! The Raft log, hard state (term, vote, commit) and configuration, durable in
//! `raft.redb` in the data directory, with an in-memory copy that raft-rs reads through
//! the `Storage` trait. Entries before `base` are compacted away: the configuration store
//! (applied up to at least `base`) stands for them, and a follower that needs them gets a
//! snapshot (the store's full copy).

// The closures given to `write` return redb's own (large) error type, as redb does.
#![allow(clippy::result_large_err)]

use protobuf::Message as _;
use raft::prelude::*;
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{Database, Durability, TableDefinition};
use std::collections::BTreeMap;
use std::path::Path;

/// The file in the data directory.
pub const RAFT_FILE: &str = "raft.redb";

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

/// Node id -> node address, for the members (and nodes heard of).
pub type Addrs = BTreeMap<u64, String>;

pub struct RaftStore {
    db: Database,
    hs: HardState,
    cs: ConfState,
    /// The index and term of the last compacted entry (0, 0: none).
    base: (u64, u64),
    entries: Vec<Entry>,
    pub addrs: Addrs,
    /// The configuration store's applied index (kept by the raft thread).
    pub applied: u64,
}

fn err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

fn s_err(e: impl std::fmt::Display) -> String {
    format!("{} : {e}", RAFT_FILE)
}

pub fn encode_addrs(a: &Addrs) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, addr) in a {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&(addr.len() as u16).to_be_bytes());
        out.extend_from_slice(addr.as_bytes());
    }
    out
}

/// Bounded by the input: each record is at least 10 bytes.
pub fn decode_addrs(mut b: &[u8]) -> Option<Addrs> {
    let mut m = Addrs::new();
    while !b.is_empty() {
        if b.len() < 10 {
            return None;
        }
        let id = u64::from_be_bytes(b[..8].try_into().ok()?);
        let n = u16::from_be_bytes([b[8], b[9]]) as usize;
        let s = b.get(10..10 + n)?;
        m.insert(id, String::from_utf8(s.to_vec()).ok()?);
        b = &b[10 + n..];
    }
    Some(m)
}

impl RaftStore {
    pub fn open(dir: &Path) -> Result<RaftStore, String> {
        let db = Database::create(dir.join(RAFT_FILE)).map_err(s_err)?;
        let mut st = RaftStore {
            db,
            hs: HardState::default(),
            cs: ConfState::default(),
            base: (0, 0),
            entries: Vec::new(),
            addrs: Addrs::new(),
            applied: 0,
        };
        {
            let w = st.db.begin_write().map_err(s_err)?;
            w.open_table(ENTRIES).map_err(s_err)?;
            w.open_table(STATE).map_err(s_err)?;
            w.commit().map_err(s_err)?;
        }
        let r = st.db.begin_read().map_err(s_err)?;
        let t = r.open_table(STATE).map_err(s_err)?;
        let get = |k: &str| -> Result<Option<Vec<u8>>, String> {
            Ok(t.get(k).map_err(s_err)?.map(|v| v.value().to_vec()))
        };
        if let Some(b) = get("hard_state")? {
            st.hs = HardState::parse_from_bytes(&b).map_err(s_err)?;
        }
        if let Some(b) = get("conf_state")? {
            st.cs = ConfState::parse_from_bytes(&b).map_err(s_err)?;
        }
        if let Some(b) = get("base")? {
            if b.len() != 16 {
                return Err(s_err("damaged base record"));
            }
            st.base = (
                u64::from_be_bytes(b[..8].try_into().expect("8")),
                u64::from_be_bytes(b[8..].try_into().expect("8")),
            );
        }
        if let Some(b) = get("addrs")? {
            st.addrs = decode_addrs(&b).ok_or_else(|| s_err("damaged addrs record"))?;
        }
        let e = r.open_table(ENTRIES).map_err(s_err)?;
        for item in e.range(st.base.0 + 1..).map_err(s_err)? {
            let (k, v) = item.map_err(s_err)?;
            let en = Entry::parse_from_bytes(v.value()).map_err(s_err)?;
            let want = st.base.0 + 1 + st.entries.len() as u64;
            if en.index != k.value() || en.index != want {
                return Err(s_err(format!(
                    "log entry {} out of sequence (expected {want})",
                    k.value()
                )));
            }
            st.entries.push(en);
        }
        drop(e);
        drop(t);
        drop(r);
        Ok(st)
    }

    /// In a cluster (has a configuration).
    pub fn initialized(&self) -> bool {
        !self.cs.voters.is_empty() || !self.cs.learners.is_empty()
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hs
    }
    pub fn conf_state(&self) -> &ConfState {
        &self.cs
    }

    pub fn first(&self) -> u64 {
        self.base.0 + 1
    }
    pub fn last(&self) -> u64 {
        self.base.0 + self.entries.len() as u64
    }

    fn write<F>(&self, f: F) -> Result<(), String>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    {
        let mut w = self.db.begin_write().map_err(s_err)?;
        w.set_durability(Durability::Immediate);
        f(&w).map_err(s_err)?;
        w.commit().map_err(s_err)
    }

    /// Makes new entries (which may overwrite a conflicting tail) and the hard state
    /// durable, in one fsync.
    pub fn persist(&mut self, ents: &[Entry], hs: Option<&HardState>) -> Result<(), String> {
        if ents.is_empty() && hs.is_none() {
            return Ok(());
        }
        let last = self.last();
        let first_new = ents.first().map(|e| e.index);
        if let Some(i) = first_new {
            if i <= self.base.0 {
                return Err(s_err(format!(
                    "entry {i} at or before the compacted index {}",
                    self.base.0
                )));
            }
            if i > last + 1 {
                return Err(s_err(format!("entry {i} leaves a gap after {last}")));
            }
        }
        let hs_bytes = hs.map(|h| h.write_to_bytes()).transpose().map_err(s_err)?;
        let mut recs = Vec::with_capacity(ents.len());
        for e in ents {
            recs.push((e.index, e.write_to_bytes().map_err(s_err)?));
        }
        self.write(|w| {
            let mut t = w.open_table(ENTRIES)?;
            if let Some(i) = first_new {
                if i <= last {
                    t.retain_in(i.., |_, _| false)?;
                }
            }
            for (i, b) in &recs {
                t.insert(*i, b.as_slice())?;
            }
            if let Some(b) = &hs_bytes {
                w.open_table(STATE)?.insert("hard_state", b.as_slice())?;
            }
            Ok(())
        })?;
        if let Some(i) = first_new {
            self.entries.truncate((i - self.first()) as usize);
            self.entries.extend_from_slice(ents);
        }
        if let Some(h) = hs {
            self.hs = h.clone();
        }
        Ok(())
    }

    /// The commit index moved. Kept in memory and written with the next hard state: it is
    /// not needed for safety (at start the commit index is at least the store's applied
    /// index), and writing it now would cost one more fsync per batch.
    pub fn set_commit(&mut self, c: u64) {
        self.hs.commit = self.hs.commit.max(c);
    }

    pub fn set_conf(&mut self, cs: &ConfState, addrs: &Addrs) -> Result<(), String> {
        let b = cs.write_to_bytes().map_err(s_err)?;
        let a = encode_addrs(addrs);
        self.write(|w| {
            let mut t = w.open_table(STATE)?;
            t.insert("conf_state", b.as_slice())?;
            t.insert("addrs", a.as_slice())?;
            Ok(())
        })?;
        self.cs = cs.clone();
        self.addrs = addrs.clone();
        Ok(())
    }

    /// Forms a one-member cluster whose log starts after `base_index` (the store's data so
    /// far): a joining node gets a snapshot first.
    pub fn bootstrap(&mut self, me: u64, addr: &str, base_index: u64) -> Result<(), String> {
        let cs = ConfState {
            voters: vec![me],
            ..Default::default()
        };
        let hs = HardState {
            term: 1,
            commit: base_index,
            ..Default::default()
        };
        let mut addrs = Addrs::new();
        addrs.insert(me, addr.to_string());
        self.reset_to(base_index, 1, &hs, &cs, &addrs)
    }

    /// Replaces everything: the log is empty after (index, term).
    fn reset_to(
        &mut self,
        index: u64,
        term: u64,
        hs: &HardState,
        cs: &ConfState,
        addrs: &Addrs,
    ) -> Result<(), String> {
        let hb = hs.write_to_bytes().map_err(s_err)?;
        let cb = cs.write_to_bytes().map_err(s_err)?;
        let a = encode_addrs(addrs);
        let mut base = index.to_be_bytes().to_vec();
        base.extend_from_slice(&term.to_be_bytes());
        self.write(|w| {
            w.open_table(ENTRIES)?.retain(|_, _| false)?;
            let mut t = w.open_table(STATE)?;
            t.insert("hard_state", hb.as_slice())?;
            t.insert("conf_state", cb.as_slice())?;
            t.insert("addrs", a.as_slice())?;
            t.insert("base", base.as_slice())?;
            Ok(())
        })?;
        self.entries.clear();
        self.base = (index, term);
        self.hs = hs.clone();
        self.cs = cs.clone();
        self.addrs = addrs.clone();
        Ok(())
    }

    /// Forgets the cluster (`raft reset`): stalled afterwards.
    pub fn wipe(&mut self) -> Result<(), String> {
        self.reset_to(
            0,
            0,
            &HardState::default(),
            &ConfState::default(),
            &Addrs::new(),
        )
    }

    /// A snapshot was installed (the store holds its data): the log restarts after it.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata, addrs: &Addrs) -> Result<(), String> {
        let mut hs = self.hs.clone();
        hs.commit = hs.commit.max(meta.index);
        if hs.term < meta.term {
            hs.term = meta.term;
        }
        self.reset_to(meta.index, meta.term, &hs, meta.get_conf_state(), addrs)
    }

    /// Drops the entries up to `upto` (applied), keeping its term as the base.
    pub fn compact(&mut self, upto: u64) -> Result<(), String> {
        if upto <= self.base.0 || upto > self.last() || upto > self.applied {
            return Ok(());
        }
        let term = self.term_of(upto).map_err(s_err)?;
        let mut base = upto.to_be_bytes().to_vec();
        base.extend_from_slice(&term.to_be_bytes());
        self.write(|w| {
            w.open_table(ENTRIES)?.retain_in(..=upto, |_, _| false)?;
            w.open_table(STATE)?.insert("base", base.as_slice())?;
            Ok(())
        })?;
        self.entries.drain(..(upto - self.base.0) as usize);
        self.base = (upto, term);
        Ok(())
    }

    fn term_of(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.base.0 {
            return Ok(self.base.1);
        }
        if idx < self.base.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.base.0 - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }
}

impl raft::Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hs.clone(), self.cs.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.base.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(err(format!(
                "entries up to {high} asked, last is {}",
                self.last()
            )));
        }
        let max = max_size.into().unwrap_or(u64::MAX);
        let off = self.base.0 + 1;
        let mut out = Vec::new();
        let mut size = 0u64;
        for e in &self.entries[(low - off) as usize..(high - off) as usize] {
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_of(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// The store's state at the applied index (its data is streamed by the transport);
    /// `data` carries the member addresses.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.applied < request_index || self.applied < self.base.0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut s = Snapshot::default();
        let m = s.mut_metadata();
        m.index = self.applied;
        m.term = self.term_of(self.applied)?;
        m.set_conf_state(self.cs.clone());
        s.data = encode_addrs(&self.addrs).into();
        Ok(s)
    }
}
