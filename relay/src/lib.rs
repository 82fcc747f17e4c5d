//! `wavry-relay`: the lease-gated blind UDP forwarder (spec RELAY).
//!
//! [`core`] is the sans-IO state machine (no sockets, no clock); [`peer`] builds what peers
//! send it. The binary `wavry-relay` (src/main.rs) adds the I/O shell on `wavry-net`
//! backends ([`shell`], and [`xdp`] on AF_XDP), what the kernel drops before the shards see it
//! ([`kernel_filter`]), the HTTP surface and master registration.

pub mod core;
pub mod kernel_filter;
pub mod peer;
pub mod shell;
pub mod xdp;

pub use crate::core::{BindingEvent, CoreConfig, LeaseAuth, Now, REPLY_MAX, RelayCore, Verdict};
