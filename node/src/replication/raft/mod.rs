//! HA Raft mode (`mode = "raft"`): placeholder while the engine lands.

use crate::commit::CommitReq;
use crate::node::Node;
use crate::replication::{Managed, Refusal};
use confd_ha::errcode::*;
use confd_ha::proto::data::NodeState;
use confd_ha::proto::ha::{HaReply, STATE_NONE};
use std::sync::Arc;

pub struct RaftMode {
    node_address: String,
}

pub fn start(node: &Arc<Node>) -> Result<Arc<RaftMode>, String> {
    let r = node.cfg.raft.as_ref().ok_or("not in Raft mode")?;
    Ok(Arc::new(RaftMode {
        node_address: r.node_address.to_string(),
    }))
}

impl Managed for RaftMode {
    fn order_refusal(&self) -> String {
        "this node is managed by HA Raft (mode = \"raft\"): external HA orders are refused".into()
    }
    fn check_writable(&self) -> Result<(), Refusal> {
        Err((CONFD_ERR_NOT_WRITABLE, "no Raft leader".into()))
    }
    fn commit(&self, batch: Vec<CommitReq>) {
        for r in batch {
            let _ = r
                .reply
                .send(Err((CONFD_ERR_NOT_WRITABLE, "no Raft leader".into())));
        }
    }
    fn read_barrier(&self) -> Result<(), Refusal> {
        Err((CONFD_ERR_NOT_WRITABLE, "no Raft leader".into()))
    }
    fn ha_status(&self) -> HaReply {
        HaReply::Status {
            state: STATE_NONE,
            nodes: vec![],
        }
    }
    fn state_code(&self) -> i32 {
        STATE_NONE
    }
    fn node_state(&self, base: NodeState) -> NodeState {
        base
    }
    fn action(&self, name: &str, _args: &[String]) -> Result<String, Refusal> {
        match name {
            "status" => Ok(format!(
                "{{\"role\":\"stalled\",\"node\":\"{}\",\"leader\":null,\"term\":0,\"members\":[],\"connected_nodes\":[],\"current_index\":0,\"applied_index\":0,\"followers\":[]}}",
                self.node_address
            )),
            _ => Err((CONFD_ERR_BADSTATE, "not implemented yet".into())),
        }
    }
    fn stop(&self) {}
}
