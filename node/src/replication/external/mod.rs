//! ConfD's external-HAFW mode: the HA framework orders each node's role
//! (`confd_ha_beprimary` and the rest); `primary` serves secondaries on the HA
//! port, `secondary` joins a primary and applies what it sends.

pub mod primary;
pub mod secondary;
