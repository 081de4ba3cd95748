//! The HA-port message decoder: any frame payload decodes to a message or
//! an error, never a panic; a message re-encodes to what decodes to it.
#![no_main]

#[path = "peer_common.rs"]
mod peer_common;
// node/src/replication/peer.rs names `crate::store`.
pub(crate) use peer_common::store;
use peer_common::peer::{PeerMsg, MAC_LEN, NONCE_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(m) = PeerMsg::decode(data) else { return };
    match &m {
        PeerMsg::Hello { nonce, .. } => assert_eq!(nonce.len(), NONCE_LEN),
        PeerMsg::Challenge { nonce, mac, .. } => {
            assert_eq!(nonce.len(), NONCE_LEN);
            assert_eq!(mac.len(), MAC_LEN);
        }
        PeerMsg::Auth { mac, .. } => assert_eq!(mac.len(), MAC_LEN),
        _ => {}
    }
    let _ = format!("{:?}", m.to_term());
    assert_eq!(PeerMsg::decode(&m.encode()), Ok(m));
});
