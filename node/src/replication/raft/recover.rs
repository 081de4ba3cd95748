//! At start, the configuration store and the Raft log must agree: the store's applied
//! index (its transaction seq) lies within the log (or is its base), and the log's entry
//! there is the one the store applied. A crash between installing a snapshot's data in
//! the store and recording the snapshot in the Raft log leaves the store ahead of the
//! log (or, within it, at an entry of another term): the store then *is* that snapshot,
//! and its txid `raft-TERM-INDEX` says which. The log is rebased on it (its stale
//! entries dropped), and the node asks the leader for a snapshot once it follows one,
//! because the membership recorded in the log may predate the snapshot's.

use super::storage::RaftStore;
use super::Engine;
use crate::node::lock;
use raft::prelude::*;
use raft::StateRole;

/// The term of a Raft txid `raft-TERM-INDEX` whose index is `seq`.
fn raft_term(txid: &str, seq: u64) -> Option<u64> {
    let rest = txid.strip_prefix("raft-")?;
    let (t, i) = rest.split_once('-')?;
    let (t, i) = (t.parse::<u64>().ok()?, i.parse::<u64>().ok()?);
    (i == seq && t > 0).then_some(t)
}

/// What to do at start with a store at `seq` (txid `txid`) and a log of entries
/// `first..=last` (`term_at`: a term in the log): Some(term) to rebase the log on
/// (seq, term); None to go on as is (or to refuse, the caller's check).
fn plan(
    seq: u64,
    txid: &str,
    first: u64,
    last: u64,
    term_at: impl Fn(u64) -> Option<u64>,
) -> Option<u64> {
    let t = raft_term(txid, seq)?;
    if seq + 1 < first {
        // Behind the log's first entry: entries are missing; not ours to repair.
        return None;
    }
    if seq > last {
        return Some(t);
    }
    match term_at(seq) {
        Some(lt) if lt != t => Some(t),
        _ => None,
    }
}

/// Rebases the log on the store when the store holds a snapshot the log does not
/// record (see the module's comment); true when it did.
pub(super) fn reconcile(s: &mut RaftStore, seq: u64, txid: &str) -> Result<bool, String> {
    use raft::Storage as _;
    let (first, last) = (s.first(), s.last());
    let Some(term) = plan(seq, txid, first, last, |i| s.term(i).ok()) else {
        return Ok(false);
    };
    crate::warn!(
        "raft",
        "the store (index {seq}, txid {txid}) is a snapshot the Raft log (entries \
         {first}..={last}) does not record (a crash while installing it): the log now starts \
         after it; a fresh snapshot is asked of the leader"
    );
    let meta = SnapshotMetadata {
        index: seq,
        term,
        conf_state: Some(s.conf_state().clone()).into(),
        ..Default::default()
    };
    let addrs = s.addrs.clone();
    s.apply_snapshot(&meta, &addrs)?;
    let mut hs = s.hard_state().clone();
    if hs.commit != seq {
        // Committed entries after `seq` are no longer in this log: the leader sends them.
        hs.commit = seq;
        s.persist(&[], Some(&hs))?;
    }
    Ok(true)
}

impl Engine {
    /// After a rebase: asks the leader for a snapshot (raft-rs takes the request once
    /// this node follows a leader and its last entry is of the current term).
    pub(super) fn ask_snapshot_after_rebase(&mut self) {
        if !self.resnap
            || self.raw.raft.state != StateRole::Follower
            || self.raw.raft.leader_id == 0
        {
            return;
        }
        if self.raw.request_snapshot().is_ok() {
            self.resnap = false;
            let leader = self.addr_of(self.raw.raft.leader_id).unwrap_or_default();
            let applied = lock(&self.store.0).applied;
            crate::info!(
                "raft",
                "asked the leader {leader} for a snapshot (this node's store is at index {applied})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_ahead_of_the_log_with_a_raft_txid_is_rebased() {
        let terms = |i: u64| (i <= 10).then_some(2);
        // Ahead: rebase on the txid's term.
        assert_eq!(plan(15, "raft-3-15", 5, 10, terms), Some(3));
        // Within the log, same term: as is; another term: rebase.
        assert_eq!(plan(8, "raft-2-8", 5, 10, terms), None);
        assert_eq!(plan(8, "raft-4-8", 5, 10, terms), Some(4));
        // The base itself.
        assert_eq!(plan(4, "raft-2-4", 5, 10, |i| (i == 4).then_some(2)), None);
        // Not a Raft txid, or one of another index: not ours (the caller refuses).
        assert_eq!(plan(15, "1700000000-abc", 5, 10, terms), None);
        assert_eq!(plan(15, "raft-3-14", 5, 10, terms), None);
        assert_eq!(plan(15, "raft-0-15", 5, 10, terms), None);
        // Behind the log's first index: refused by the caller.
        assert_eq!(plan(2, "raft-1-2", 5, 10, terms), None);
    }
}
