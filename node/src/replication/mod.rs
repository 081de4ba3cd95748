//! Replication between nodes, in one of two modes chosen by the configuration's `mode`:
//!
//! - `external` (the default, ConfD's model): an HA framework orders each node's role
//!   (`confd_ha_beprimary` and the rest). Its code is `external` (the primary and secondary
//!   sides) and the role machinery in `node.rs`; `peer` is its node-to-node wire protocol.
//! - `raft` (NSO's HA Raft): the nodes elect a leader by majority; `raft` runs it on the
//!   raft-rs engine.
//!
//! The seam is [`Managed`]: when a mode manages the node by itself (Raft), `Node::managed`
//! holds it and the committer, the IPC server (orders, data requests, status) and the
//! availability-group view ask it; when none is set, the node follows the external orders
//! exactly as before. Neither mode's code names the other.

pub mod external;
pub mod peer;
pub mod raft;

use crate::commit::CommitReq;
use confd_ha::proto::data::NodeState;
use confd_ha::proto::ha::HaReply;

/// A failure for a client: a ConfD error code and a message.
pub type Refusal = (i32, String);

/// What the committer, the IPC server and the status ask of a self-managing replication
/// mode (Raft). Every call is cheap unless it says it waits.
pub trait Managed: Send + Sync {
    /// Why the external-mode orders (`beprimary`, `besecondary`, `benone`, `berelay`,
    /// `secondary_dead`) are refused: they get CONFD_ERR_BADSTATE with this message.
    fn order_refusal(&self) -> String;
    /// Writes are accepted here now (Ok) or refused (CONFD_ERR_NOT_WRITABLE naming the
    /// leader). Checked before a commit is queued; the commit itself checks again.
    fn check_writable(&self) -> Result<(), Refusal>;
    /// Takes a batch of commit requests from the committer and answers each (later): OK
    /// with the transaction id once a majority has it durable and it is applied here.
    fn commit(&self, batch: Vec<CommitReq>);
    /// Waits until a read here sees every commit acknowledged before the call (read
    /// index on the leader); refused on other roles.
    fn read_barrier(&self) -> Result<(), Refusal>;
    /// `confd_ha_get_status`: the state and the nodes.
    fn ha_status(&self) -> HaReply;
    /// The ConfD state code (STATE_PRIMARY, STATE_SECONDARY, STATE_NONE).
    fn state_code(&self) -> i32;
    /// The availability-group view; `seq`, `txid` and `last_txn_ms` come filled in.
    fn node_state(&self, base: NodeState) -> NodeState;
    /// A mode action (`ha-ctl raft ...`): `status` (args `json` or `text`) and the others.
    fn action(&self, name: &str, args: &[String]) -> Result<String, Refusal>;
    /// At shutdown.
    fn stop(&self);
    /// The mode's own metrics series (Prometheus endpoint), read at each scrape.
    fn metrics(&self) -> Vec<ModeSample> {
        Vec::new()
    }
}

/// One sample of a mode's metrics: `name` without the `ha_node_` prefix (a counter's
/// without `_total`), its help text, whether it is a counter, its labels and value.
pub struct ModeSample {
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    pub labels: Vec<(&'static str, String)>,
    pub value: i64,
}
