//! Checks on every Raft message from the network before raft-rs steps it. raft-rs trusts
//! its peers: a message no correct member sends can make it panic (`fatal!`) or break
//! the log's invariants. A peer that holds the cluster's token can send anything, so each
//! message is held to what a correct ha-node sends; one that fails is dropped with a
//! (throttled, escaped) WARN naming the peer, and the engine goes on.
//!
//! What raft-rs 0.7 would do with each kind of bad message, and the check that stops it:
//! - a message with term 0 is taken as local; a vote granted to it is sent with term 0:
//!   `fatal!("term should be set")` — every network message must carry a term;
//! - MsgPropose with no entries: `fatal!("stepped empty MsgProp")`; MsgTransferLeader
//!   from a node without progress: `unwrap()` on None; MsgReadIndex/MsgReadIndexResp,
//!   MsgPropose: ha-nodes never forward these — only the types ha-nodes exchange pass;
//! - MsgAppend whose entries are not contiguous after its index (an index underflow
//!   and a slice out of range in `maybe_append`, or a log with holes), carry terms that
//!   go down or exceed the message's term, or conflict with a committed entry
//!   (`fatal!("conflict with committed entry")`); whose log term is below the term of
//!   our committed entry, so that the rejection hint walks into the compacted log
//!   (`fatal!("term(..) must be valid")`); whose entries this node could not apply
//!   (bad data, an unknown conf change, the removal of the last voter: the engine would
//!   stop at apply);
//! - MsgHeartbeat whose commit index is past our last index: `fatal!("to_commit out of
//!   range")` — clamped (a correct leader does that when this node lost log entries);
//! - MsgSnapshot whose configuration raft-rs cannot restore (`fatal!("unable to restore
//!   config")`, `fatal!("invalid restore")`), or whose member addresses are bad;
//! - MsgAppendResponse on the leader acknowledging past the leader's last index (a
//!   `matched` beyond the log);
//! - from or to the wrong node id, or a second leader in one term (only a faulty or
//!   hostile node does that);
//! - a term above RAFT_MAX_TERM: taken, it would be saved, and the next election's term + 1
//!   wraps to 0 (`fatal!("term should be set")`) on every node, after restarts too (review:
//!   one heartbeat with term u64::MAX disabled HA Raft on the cluster).

use super::{decode_ops, storage, transport::id_of, Engine};

/// The highest term taken from a peer (2^48: an election every millisecond for 8,900
/// years); a message with a higher one is dropped, and a saved term above it refuses to
/// start (see `Engine::run`).
pub const RAFT_MAX_TERM: u64 = 1 << 48;
use protobuf::Message as _;
use raft::prelude::*;
use raft::StateRole;

impl Engine {
    /// The message, if it may be stepped (`with_data`: a MsgSnapshot whose data was
    /// staged); None when it was dropped (logged).
    pub(super) fn admit(&self, mut m: Message, with_data: bool) -> Option<Message> {
        match self.check(&mut m, with_data) {
            Ok(()) => Some(m),
            Err(why) => {
                self.count_dropped();
                let peer = self
                    .addr_of(m.from)
                    .unwrap_or_else(|| format!("node id {}", m.from));
                crate::peer_warn!(
                    "raft",
                    "{:?} from {peer} (term {}) dropped: {why}",
                    m.get_msg_type(),
                    m.term
                );
                None
            }
        }
    }

    fn check(&self, m: &mut Message, with_data: bool) -> Result<(), String> {
        use MessageType::*;
        let r = &self.raw.raft;
        if m.to != self.id {
            return Err(format!("addressed to node id {}, not this node", m.to));
        }
        if m.from == 0 || m.from == self.id {
            return Err(format!("bad sender id {}", m.from));
        }
        if m.term == 0 {
            return Err("no term".into());
        }
        if m.term > RAFT_MAX_TERM {
            return Err(format!("term above RAFT_MAX_TERM ({RAFT_MAX_TERM})"));
        }
        let t = m.get_msg_type();
        match t {
            MsgAppend
            | MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgTimeoutNow => {}
            MsgSnapshot if with_data => {}
            MsgSnapshot => return Err("a snapshot without its data".into()),
            other => return Err(format!("{other:?} is not sent between ha-nodes")),
        }
        let current = m.term >= r.term;
        // One leader per term: a message only a leader sends, from another node than the
        // leader this node knows in that term.
        if matches!(t, MsgAppend | MsgHeartbeat | MsgSnapshot | MsgTimeoutNow)
            && m.term == r.term
            && r.leader_id != 0
            && r.leader_id != m.from
        {
            return Err(format!(
                "node id {} is the leader in term {}, not the sender",
                r.leader_id, r.term
            ));
        }
        if t == MsgTimeoutNow && !(m.term == r.term && m.from == r.leader_id) {
            return Err("a handover (MsgTimeoutNow) from a node that is not the leader".into());
        }
        let committed = r.raft_log.committed;
        let last = r.raft_log.last_index();
        match t {
            MsgAppend => {
                if m.log_term > m.term {
                    return Err(format!(
                        "log term {} above the message's term {}",
                        m.log_term, m.term
                    ));
                }
                if m.index > u64::MAX / 2 {
                    return Err(format!("index {} out of range", m.index));
                }
                let mut prev_term = m.log_term;
                for (i, e) in m.entries.iter().enumerate() {
                    if e.index != m.index + 1 + i as u64 {
                        return Err(format!(
                            "entry {} where {} was due (entries must follow index {})",
                            e.index,
                            m.index + 1 + i as u64,
                            m.index
                        ));
                    }
                    if e.term < prev_term || e.term > m.term || e.term == 0 {
                        return Err(format!(
                            "entry {} has term {} (after term {prev_term}, message term {})",
                            e.index, e.term, m.term
                        ));
                    }
                    prev_term = e.term;
                    check_entry(e)?;
                }
                if m.entries
                    .iter()
                    .any(|e| e.get_entry_type() == EntryType::EntryConfChange)
                {
                    let voters: Vec<u64> = r.prs().conf().voters().ids().iter().collect();
                    keeps_a_voter(&voters, &m.entries)?;
                }
                if current && m.index >= committed {
                    // The sender's log holds our committed entry: its term at an index
                    // at or after it is no lower.
                    if let Ok(tc) = r.raft_log.term(committed) {
                        if m.log_term < tc {
                            return Err(format!(
                                "log term {} at index {} is below term {tc} of this node's \
                                 committed entry {committed}",
                                m.log_term, m.index
                            ));
                        }
                    }
                }
                // Entries at or below our commit index that differ from ours.
                for e in m.entries.iter().take_while(|e| e.index <= committed) {
                    if r.raft_log.term(e.index).is_ok_and(|t| t != e.term) {
                        return Err(format!(
                            "entry {} (term {}) conflicts with committed entry {committed}",
                            e.index, e.term
                        ));
                    }
                }
            }
            MsgHeartbeat if m.commit > last => {
                // A leader that still counts entries this node no longer has (it was
                // reset, or lost its raft.redb) sends a commit index past our log: ignore
                // the advance; the leader then finds the gap and sends what is missing.
                crate::debug!(
                    "raft",
                    "heartbeat commit {} past the last index {last}: not advanced",
                    m.commit
                );
                m.commit = committed;
            }
            MsgAppendResponse
                if r.state == StateRole::Leader
                    && m.term == r.term
                    && (m.index > last || m.reject_hint > last || m.request_snapshot > last) =>
            {
                return Err(format!(
                    "acknowledges index {} (hint {}) past this leader's last index {last}",
                    m.index, m.reject_hint
                ));
            }
            MsgSnapshot if current => check_snapshot(m.get_snapshot(), m.term)?,
            _ => {}
        }
        Ok(())
    }
}

/// An entry this node can apply: its operations decode, a conf change is one ha-nodes
/// make (add or remove a node named by its address).
fn check_entry(e: &Entry) -> Result<(), String> {
    match e.get_entry_type() {
        EntryType::EntryNormal => decode_ops(&e.data)
            .map(|_| ())
            .map_err(|x| format!("entry {}: {x}", e.index)),
        EntryType::EntryConfChange => {
            let cc = ConfChange::parse_from_bytes(&e.data)
                .map_err(|x| format!("entry {}: bad conf change: {x}", e.index))?;
            match cc.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::RemoveNode => {}
                other => return Err(format!("entry {}: {other:?} not used", e.index)),
            }
            let addr = std::str::from_utf8(&e.context)
                .ok()
                .filter(|a| a.parse::<std::net::SocketAddr>().is_ok())
                .ok_or_else(|| format!("entry {}: conf change without a node address", e.index))?;
            if cc.node_id != id_of(addr) {
                return Err(format!(
                    "entry {}: conf change for node id {} names {addr}",
                    e.index, cc.node_id
                ));
            }
            Ok(())
        }
        EntryType::EntryConfChangeV2 => Err(format!(
            "entry {}: joint conf changes are not used",
            e.index
        )),
    }
}

/// The conf changes among `ents`, applied in order to `voters` (this node's applied
/// configuration), never remove the last voter: raft-rs refuses that at apply, which
/// would stop the engine. (A change still pending in this node's log is not counted: a
/// correct leader's append is at worst dropped until that change is applied here.)
fn keeps_a_voter(voters: &[u64], ents: &[Entry]) -> Result<(), String> {
    let mut v: std::collections::BTreeSet<u64> = voters.iter().copied().collect();
    for e in ents {
        if e.get_entry_type() != EntryType::EntryConfChange {
            continue;
        }
        let Ok(cc) = ConfChange::parse_from_bytes(&e.data) else {
            continue; // refused by check_entry
        };
        match cc.get_change_type() {
            ConfChangeType::AddNode => {
                v.insert(cc.node_id);
            }
            ConfChangeType::RemoveNode => {
                v.remove(&cc.node_id);
                if v.is_empty() {
                    return Err(format!("entry {} removes the last voter", e.index));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A snapshot raft-rs can restore: a plain configuration (no joint state) whose members
/// have well-formed addresses in the snapshot's data.
fn check_snapshot(s: &Snapshot, term: u64) -> Result<(), String> {
    let meta = s.get_metadata();
    if meta.index == 0 || meta.term == 0 || meta.term > term {
        return Err(format!(
            "snapshot at index {} term {} (message term {term})",
            meta.index, meta.term
        ));
    }
    let cs = meta.get_conf_state();
    if !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty() || cs.auto_leave {
        return Err("snapshot in a joint configuration (not used)".into());
    }
    if cs.voters.is_empty() {
        return Err("snapshot with no voters".into());
    }
    let mut seen = std::collections::HashSet::new();
    for id in cs.voters.iter().chain(cs.learners.iter()) {
        if *id == 0 || !seen.insert(*id) {
            return Err(format!("snapshot configuration repeats node id {id}"));
        }
    }
    let addrs = storage::decode_addrs(&s.data).ok_or("snapshot with damaged member addresses")?;
    for (id, a) in &addrs {
        if a.parse::<std::net::SocketAddr>().is_err() || id_of(a) != *id {
            return Err(format!("snapshot names node id {id} as '{a}'"));
        }
    }
    if let Some(id) = cs.voters.iter().find(|id| !addrs.contains_key(id)) {
        return Err(format!("snapshot without the address of voter {id}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(index: u64, ty: ConfChangeType, id: u64) -> Entry {
        let mut c = ConfChange::default();
        c.set_change_type(ty);
        c.node_id = id;
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChange);
        e.index = index;
        e.data = c.write_to_bytes().unwrap().into();
        e
    }

    #[test]
    fn removing_the_last_voter_is_refused() {
        use ConfChangeType::*;
        assert!(keeps_a_voter(&[1, 2], &[cc(5, RemoveNode, 2)]).is_ok());
        assert!(keeps_a_voter(&[1], &[cc(5, RemoveNode, 1)]).is_err());
        assert!(keeps_a_voter(&[1, 2], &[cc(5, RemoveNode, 2), cc(6, RemoveNode, 1)]).is_err());
        assert!(keeps_a_voter(&[1], &[cc(5, AddNode, 2), cc(6, RemoveNode, 1)]).is_ok());
        assert!(keeps_a_voter(&[1], &[Entry::default()]).is_ok());
    }
}
