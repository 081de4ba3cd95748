//! libconfd_ha: ConfD's `confd_lib_ha` C API, implemented in Rust over the
//! ConfD IPC wire protocol, with a safe Rust client underneath.
//!
//! Layers, data flowing one way: [`proto`] (hello, framing, term codec,
//! message shapes; shared with `ha-node`) → [`client`] (safe blocking
//! clients) → `ffi` (the `extern "C"` functions of the generated headers).

pub mod client;
pub mod errcode;
pub mod error;
pub mod ffi;
pub mod proto;
pub mod value;

/// The library version, equal to the crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
