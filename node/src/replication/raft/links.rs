//! Connections kept open to every member: a follower keeps one to the other followers
//! too (they carry keepalives only until an election), so that a candidate's vote
//! request goes out on an established connection rather than waiting for a dial and a
//! handshake (or being written into a connection the peer had closed as idle).

use super::Engine;
use crate::node::lock;
use std::sync::atomic::Ordering;

impl Engine {
    /// Asks the transport to keep a connection to each member (voters and learners).
    /// Cheap when the membership did not change (called on every turn of the loop).
    pub(super) fn keep_links(&mut self) {
        let members: Vec<(u64, String)> = {
            let s = lock(&self.store.0);
            let cs = s.conf_state();
            // A digest of the membership: the work below is done when it changes.
            let sig = cs
                .voters
                .iter()
                .chain(cs.learners.iter())
                .fold(s.initialized() as u64, |h, id| {
                    h.rotate_left(7) ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                })
                ^ s.addrs.len() as u64;
            if self.t.links_sig.swap(sig, Ordering::Relaxed) == sig {
                return;
            }
            if !s.initialized() {
                Vec::new()
            } else {
                let cs = s.conf_state();
                cs.voters
                    .iter()
                    .chain(cs.learners.iter())
                    .filter(|id| **id != self.id)
                    .filter_map(|id| s.addrs.get(id).map(|a| (*id, a.clone())))
                    .collect()
            }
        };
        self.t.keep_links(&members);
    }
}
