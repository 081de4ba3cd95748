//! ha-node's node-to-node decoder (node/src/replication/peer.rs), compiled into the fuzz
//! targets as it is: the two things it takes from the daemon are given here.

#[path = "../../node/src/replication/peer.rs"]
#[allow(dead_code)]
pub mod peer;

pub mod store {
    /// The daemon's store operation (node/src/store/mod.rs), as the decoder sees it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum StoreOp {
        Set(String, Vec<u8>),
        Delete(String),
    }
}

#[macro_export]
macro_rules! debug {
    ($t:expr, $($a:tt)*) => {{
        let _ = ($t, format_args!($($a)*));
    }};
}
