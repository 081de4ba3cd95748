//! The ConfD IPC wire protocol: hello, framing, the Erlang term codec and the
//! message shapes. Shared by the library and by `ha-node`; no I/O policy here
//! beyond reading and writing whole frames.

pub mod data;
pub mod frame;
pub mod ha;
pub mod hello;
pub mod term;
