//! `wavry-rift`: the RIFT transport core. Sans-IO: no sockets, no clock, no threads; the
//! caller passes bytes and time in and owns every buffer.
//!
//! - [`wire`]: physical headers (30 B handshake, 18 B transport, 20 B relay), CRC-16/KERMIT.
//! - [`proto`]: the protobuf logical plane.
//! - [`crypto`]: Noise XX with mutual Wavry-ID authentication; in-place ChaCha20-Poly1305.
//! - [`replay`]: the 128-packet anti-replay window.
//! - [`identity`]: Ed25519 keys and Wavry IDs.
//! - [`lease`]: PASETO v4.public relay leases.
//! - [`rng`]: OS or seeded randomness (reproducible simulations).
//! - [`session`]: the sans-IO session and endpoint; [`transfer`]: its file/clipboard rules.

pub mod cc;
pub mod crypto;
pub mod fec;
pub mod feedback;
pub mod identity;
pub mod lease;
pub mod media;
pub mod pacer;
pub mod proto;
pub mod relay_client;
pub mod replay;
pub mod rng;
pub mod session;
pub mod transfer;
pub mod wire;
