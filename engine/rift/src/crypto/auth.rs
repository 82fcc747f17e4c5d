//! The identity proof carried in Noise XX messages 2 and 3: `version ‖ Ed25519 public key ‖
//! Ed25519 signature`, where the signature covers a role label, the Noise handshake hash at
//! the point the proof is written, and the sender's Noise static key. Binding to the transcript
//! hash stops replay into another handshake; binding to the static key stops a MITM from
//! presenting someone else's proof with its own Noise key.

use super::CryptoError;
use crate::identity::{IdentityKey, SIGNATURE_LEN, WavryId};

/// Encoded proof length.
pub const AUTH_PAYLOAD_LEN: usize = 1 + 32 + SIGNATURE_LEN;
const AUTH_VERSION: u8 = 1;
const MAX_SIGNED: usize = 64 + 32 + 32;

/// A decoded identity proof (not yet verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthPayload {
    /// The identity the sender claims.
    pub identity: WavryId,
    /// Signature over `label ‖ handshake_hash ‖ noise_static`.
    pub signature: [u8; SIGNATURE_LEN],
}

fn signed_bytes<'a>(
    buf: &'a mut [u8; MAX_SIGNED],
    label: &[u8],
    hash: &[u8],
    noise_static: &[u8],
) -> &'a [u8] {
    let parts = [label, hash, noise_static];
    let mut at = 0;
    for p in parts {
        let p = &p[..p.len().min(MAX_SIGNED - at)];
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    &buf[..at]
}

impl AuthPayload {
    /// Creates a proof for `key` bound to `hash` and the local Noise static key.
    pub(crate) fn create(
        key: &IdentityKey,
        label: &[u8],
        hash: &[u8],
        noise_static: &[u8],
    ) -> Self {
        let mut buf = [0u8; MAX_SIGNED];
        let msg = signed_bytes(&mut buf, label, hash, noise_static);
        Self {
            identity: key.id(),
            signature: key.sign(msg),
        }
    }

    /// Verifies the proof against `hash` and the sender's Noise static key.
    pub(crate) fn verify(
        &self,
        label: &[u8],
        hash: &[u8],
        noise_static: &[u8],
    ) -> Result<(), CryptoError> {
        let mut buf = [0u8; MAX_SIGNED];
        let msg = signed_bytes(&mut buf, label, hash, noise_static);
        self.identity
            .verify(msg, &self.signature)
            .map_err(|_| CryptoError::BadAuthSignature(self.identity))
    }

    /// Parses a proof; the payload must be exactly [`AUTH_PAYLOAD_LEN`] bytes.
    pub fn decode(buf: &[u8]) -> Result<Self, CryptoError> {
        if buf.len() != AUTH_PAYLOAD_LEN {
            return Err(CryptoError::BadAuthPayload("wrong length"));
        }
        if buf[0] != AUTH_VERSION {
            return Err(CryptoError::BadAuthPayload("unknown version"));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&buf[1..33]);
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&buf[33..]);
        Ok(Self {
            identity: WavryId::from_bytes(id),
            signature,
        })
    }

    /// Writes the proof into `out[..AUTH_PAYLOAD_LEN]`.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, CryptoError> {
        if out.len() < AUTH_PAYLOAD_LEN {
            return Err(CryptoError::BufferTooSmall {
                len: out.len(),
                need: AUTH_PAYLOAD_LEN,
            });
        }
        out[0] = AUTH_VERSION;
        out[1..33].copy_from_slice(self.identity.as_bytes());
        out[33..AUTH_PAYLOAD_LEN].copy_from_slice(&self.signature);
        Ok(AUTH_PAYLOAD_LEN)
    }
}
