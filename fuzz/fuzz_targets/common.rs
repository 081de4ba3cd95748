//! What both targets do with a frame payload.

use confd_ha::proto::data::{self, DataRequest, NodeState, Op};
use confd_ha::proto::ha::{self, HaEvent, HaNode, HaReply, HaRequest, NodeAddr, Subscription};
use confd_ha::proto::term::Term;
use confd_ha::value::Value;

/// Decodes `bytes` and runs every message decoder on the term; a term that
/// decodes must re-encode to bytes that decode to the same term.
pub fn payload(bytes: &[u8]) {
    let Ok(t) = Term::decode(bytes) else { return };
    let _ = HaRequest::from_term(&t);
    let _ = HaReply::from_term(&t);
    let _ = DataRequest::from_term(&t);
    let _ = Value::from_term(&t);
    let _ = HaNode::from_term(&t);
    let _ = NodeAddr::from_term(&t);
    let _ = HaEvent::from_inner(&t);
    if let Some([_, inner]) = t.as_tuple() {
        let _ = HaEvent::from_inner(inner);
    }
    let _ = Subscription::from_term(&t);
    let _ = Op::from_term(&t);
    let _ = data::parse_reply(&t);
    let _ = data::stats_from_term(&t);
    let _ = NodeState::from_term(&t);
    let _ = ha::parse_error(&t);
    let _ = format!("{t:?}");
    // Compared as bytes, so that NaN payloads count as equal.
    let once = t.encode();
    let back = Term::decode(&once).expect("our own encoding decodes");
    assert_eq!(back.encode(), once, "re-encoding changed {t:?}");
}
