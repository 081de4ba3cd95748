//! Replication between nodes. `peer` is the node-to-node wire protocol (frames,
//! the HMAC handshake, message terms); `external` is ConfD's external-HAFW mode,
//! where an HA framework gives each node its role (`primary` and `secondary`
//! are its two sides).

pub mod external;
pub mod peer;
