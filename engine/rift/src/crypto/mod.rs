//! RIFT cryptography: the mutually authenticated Noise XX handshake as a step function,
//! in-place ChaCha20-Poly1305 packet protection, and the per-session secure channel that
//! combines them with the replay window.

mod aead;
mod auth;
mod channel;
mod handshake;
mod rekey;

pub use aead::{KEY_LEN, PacketKey, TAG_LEN};
pub use auth::{AUTH_PAYLOAD_LEN, AuthPayload};
pub use channel::{OVERHEAD, Opened, SecureChannel};
pub use handshake::{
    Handshake, HandshakeRole, HandshakeStep, MAX_HANDSHAKE_MSG, NOISE_PARAMS, PROLOGUE, PeerPolicy,
};
pub use rekey::{
    ChainKey, Ephemeral, NextKeys, REKEY_PUBLIC_LEN, derive as derive_rekey, initial_chain,
};

use crate::{identity::WavryId, replay::ReplayError, wire::WireError};

/// Every way the crypto layer can refuse input or fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The datagram header did not decode.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The AEAD tag did not verify: the packet was altered or sealed under another key/nonce.
    #[error("packet authentication failed")]
    AuthFailed,
    /// Sealing failed inside the AEAD implementation.
    #[error("packet sealing failed")]
    SealFailed,
    /// The packet id was seen before or is older than the replay window.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The 64-bit packet counter is used up; the session must be re-established.
    #[error("packet id space exhausted: re-establish the session")]
    PacketIdExhausted,
    /// A buffer is too small for the output.
    #[error("buffer too small: {len} bytes, need {need}")]
    BufferTooSmall { len: usize, need: usize },
    /// The Noise layer refused a message (bad MAC, wrong length, wrong turn).
    #[error("noise handshake: {0}")]
    Noise(String),
    /// The peer's identity proof in the handshake is malformed.
    #[error("malformed identity proof: {0}")]
    BadAuthPayload(&'static str),
    /// The peer's identity signature does not verify over this handshake's transcript.
    #[error("identity proof signature does not verify for {0}")]
    BadAuthSignature(WavryId),
    /// The peer proved an identity that the local policy does not accept.
    #[error("peer identity {0} is not allowed by the local policy")]
    PeerRejected(WavryId),
    /// A rekey message carried an unusable public key.
    #[error("rekey refused: {0}")]
    BadRekey(&'static str),
    /// A transport packet names a key phase whose keys are gone (erased after a rekey's grace
    /// period) or not yet installed.
    #[error("no keys for this packet's key phase")]
    KeyPhase,
    /// A handshake method was called out of order.
    #[error("handshake called out of order: {0}")]
    OutOfOrder(&'static str),
}

impl CryptoError {
    /// True for a handshake message that failed before anything in it authenticated (it does
    /// not decrypt, is truncated or oversized): anyone who knows the handshake id and address
    /// can send one, so it is dropped and counted rather than ending the handshake.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, Self::Noise(_))
    }
}

impl From<snow::Error> for CryptoError {
    fn from(e: snow::Error) -> Self {
        Self::Noise(e.to_string())
    }
}
