//! What status and the metrics read of the engine beyond the Raft state itself: a
//! follower's lag in milliseconds, and the Raft series of the Prometheus endpoint.

use super::{Engine, RaftMode};
use crate::node::lock;
use crate::replication::ModeSample;
use std::time::Instant;

impl Engine {
    /// How long follower `id` (at `matched`) has lacked the entry after `matched`, as this
    /// leader sees it: the age of that entry when this leader proposed it; else (an older
    /// entry, e.g. a follower that has acknowledged nothing since this node became leader)
    /// the time since this node became leader or the follower became a member, whichever
    /// is later — a lower bound, never 0 while it lacks entries.
    pub(super) fn lag_ms_of(&self, id: u64, matched: u64, now: Instant) -> u64 {
        let tracked = self
            .proposed_at
            .iter()
            .find(|(i, _)| *i > matched)
            .filter(|(i, _)| *i == matched + 1)
            .map(|(_, t)| *t);
        let since = tracked.or_else(|| {
            [self.leader_since, self.voter_since.get(&id).copied()]
                .into_iter()
                .flatten()
                .max()
        });
        since
            .map(|t| now.saturating_duration_since(t).as_millis() as u64)
            .unwrap_or(0)
            .max(1)
    }

    /// A message from a peer was dropped (guard.rs).
    pub(super) fn count_dropped(&self) {
        self.view().msgs_dropped += 1;
    }
}

impl RaftMode {
    /// The Raft series (README, "Metrics"): `ha_node_raft_*`.
    pub(super) fn samples(&self) -> Vec<ModeSample> {
        let v = lock(&self.view).clone();
        let g = |name, help, value: u64| ModeSample {
            name,
            help,
            counter: false,
            labels: Vec::new(),
            value: value.min(i64::MAX as u64) as i64,
        };
        let mut out = vec![
            g("raft_term", "Current Raft term", v.term),
            g(
                "raft_commit_index",
                "Highest Raft log index known committed",
                v.commit,
            ),
            g(
                "raft_applied_index",
                "Raft log index applied to the store",
                v.applied,
            ),
            g("raft_last_index", "Last index in the Raft log", v.current),
            g(
                "raft_members",
                "Voting members in this node's configuration",
                v.members.len() as u64,
            ),
            g(
                "raft_connected_nodes",
                "Members heard from within the election timeout",
                v.connected.len() as u64,
            ),
            ModeSample {
                name: "raft_leader_changes",
                help: "Times this node saw a new Raft leader (itself included)",
                counter: true,
                labels: Vec::new(),
                value: v.leader_changes as i64,
            },
            ModeSample {
                name: "raft_messages_dropped",
                help: "Raft messages from peers dropped by the checks before the engine",
                counter: true,
                labels: Vec::new(),
                value: v.msgs_dropped as i64,
            },
        ];
        for r in ["leader", "follower", "candidate", "stalled", "disabled"] {
            out.push(ModeSample {
                name: "raft_role",
                help: "1 for this node's current Raft role, else 0",
                counter: false,
                labels: vec![("role", r.to_string())],
                value: i64::from(v.role == r),
            });
        }
        for f in &v.followers {
            let l = || vec![("node", f.addr.clone())];
            let fg = |name, help, value: u64| ModeSample {
                name,
                help,
                counter: false,
                labels: l(),
                value: value.min(i64::MAX as u64) as i64,
            };
            out.push(fg(
                "raft_follower_match_index",
                "On the leader: the follower's last index known to match the leader's log",
                f.index,
            ));
            out.push(fg(
                "raft_follower_lag_entries",
                "On the leader: entries the follower lacks",
                f.lag_entries,
            ));
            out.push(fg(
                "raft_follower_lag_milliseconds",
                "On the leader: how long the follower has lacked its first missing entry",
                f.lag_ms,
            ));
            out.push(fg(
                "raft_follower_reachable",
                "On the leader: 1 when the follower was heard from within the election timeout",
                u64::from(f.state != "unreachable"),
            ));
        }
        out
    }
}
