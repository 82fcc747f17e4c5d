//! The RIFT logical plane: prost types generated from `proto/rift.proto` (field numbers per
//! spec RIFT §6) and a decoder that never panics on bad bytes.

#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::pedantic,
    clippy::all,
    rust_2018_idioms
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/rift.rs"));
}

pub use generated::*;

/// Decodes a `rift.Message` from plaintext bytes.
pub fn decode_message(bytes: &[u8]) -> Result<Message, prost::DecodeError> {
    prost::Message::decode(bytes)
}
