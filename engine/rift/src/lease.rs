//! Relay leases: PASETO v4.public tokens (via `pasetors`) that the master signs and a relay
//! verifies once per session. Time is a parameter (`now`), never read from a clock here.
//!
//! Claims use PASETO's registered names (`sub`, `exp`, `nbf`, `iat`, `jti`, RFC 3339 times)
//! plus Wavry's own: `sid` (relay session UUID), `role`, `rid` (relay id), `kid` (master key id),
//! `slimit`/`hlimit` (kbit/s), `wavry_id`.

use pasetors::{
    Public,
    keys::{AsymmetricPublicKey, AsymmetricSecretKey},
    token::UntrustedToken,
    version4::{PublicToken, V4},
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::identity::IdentityKey;

/// Largest token a verifier looks at (bytes).
pub const MAX_TOKEN_LEN: usize = crate::wire::MAX_LEASE_TOKEN;
/// Allowed clock difference between master and relay.
pub const CLOCK_SKEW: Duration = Duration::seconds(30);
/// Longest lease a relay accepts, counted from now.
pub const MAX_HORIZON: Duration = Duration::seconds(3600);

/// Why a lease was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Not a well-formed v4.public token, too large, or empty.
    #[error("malformed lease token: {0}")]
    Malformed(String),
    /// The signature does not verify under the master's key (or footer/assertion differ).
    #[error("lease signature does not verify")]
    BadSignature,
    /// The claims are not valid JSON of the expected shape.
    #[error("lease claims invalid: {0}")]
    BadClaims(String),
    /// `exp` has passed (beyond the skew allowance).
    #[error("lease expired")]
    Expired,
    /// `nbf` or `iat` lies in the future (beyond the skew allowance).
    #[error("lease not yet valid")]
    NotYetValid,
    /// `exp` lies further ahead than a relay accepts.
    #[error("lease lifetime exceeds the maximum horizon")]
    TooFarInFuture,
    /// `sid` is not the session the datagram names.
    #[error("lease is for another session")]
    WrongSession,
    /// `role` is not the role the peer claims.
    #[error("lease is for the other role")]
    WrongRole,
    /// `rid` names another relay.
    #[error("lease is for another relay")]
    WrongRelay,
    /// `kid` names another master key.
    #[error("lease was signed under another key id")]
    WrongKeyId,
    /// Signing failed.
    #[error("lease signing failed: {0}")]
    Sign(String),
}

/// The role a lease grants in a relay session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseRole {
    /// The viewing side.
    Client,
    /// The host side.
    Server,
}

impl From<crate::wire::PeerRole> for LeaseRole {
    fn from(r: crate::wire::PeerRole) -> Self {
        match r {
            crate::wire::PeerRole::Client => Self::Client,
            crate::wire::PeerRole::Server => Self::Server,
        }
    }
}

/// The claims of a relay lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseClaims {
    /// Holder's identity (Wavry ID or account name); never empty.
    pub sub: String,
    /// Holder's Wavry ID, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wavry_id: Option<String>,
    /// Relay session id.
    pub sid: Uuid,
    /// Role granted.
    pub role: LeaseRole,
    /// Relay this lease is for.
    pub rid: String,
    /// Master key id that signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Unique token id (for revocation lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Issued at.
    #[serde(with = "time::serde::rfc3339")]
    pub iat: OffsetDateTime,
    /// Not before.
    #[serde(with = "time::serde::rfc3339")]
    pub nbf: OffsetDateTime,
    /// Expires at.
    #[serde(with = "time::serde::rfc3339")]
    pub exp: OffsetDateTime,
    /// Soft bitrate limit, kbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slimit: Option<u32>,
    /// Hard bitrate limit, kbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hlimit: Option<u32>,
}

/// Default key id for a master public key: `"k"` + hex of its first 8 bytes.
pub fn default_key_id(public_key: &[u8; 32]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(17);
    s.push('k');
    for b in &public_key[..8] {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The master's signing side.
pub struct LeaseSigner {
    key: AsymmetricSecretKey<V4>,
    public: [u8; 32],
    kid: String,
}

impl std::fmt::Debug for LeaseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl LeaseSigner {
    /// Builds a signer from an Ed25519 identity key; `kid` defaults to [`default_key_id`].
    pub fn new(key: &IdentityKey, kid: Option<String>) -> Result<Self, LeaseError> {
        let public = *key.id().as_bytes();
        let mut pair = [0u8; 64];
        pair[..32].copy_from_slice(key.seed());
        pair[32..].copy_from_slice(&public);
        let key =
            AsymmetricSecretKey::<V4>::from(&pair).map_err(|e| LeaseError::Sign(e.to_string()))?;
        let kid = kid.unwrap_or_else(|| default_key_id(&public));
        Ok(Self { key, public, kid })
    }

    /// The public key relays verify with.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// The key id placed in `kid` claims.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` as a v4.public token (no footer, no implicit assertion).
    pub fn issue(&self, claims: &LeaseClaims) -> Result<String, LeaseError> {
        let json = serde_json::to_vec(claims).map_err(|e| LeaseError::Sign(e.to_string()))?;
        self.sign_raw(&json, b"", b"")
    }

    /// Signs an arbitrary payload (token level, for tests against the PASETO vectors).
    pub fn sign_raw(
        &self,
        payload: &[u8],
        footer: &[u8],
        implicit: &[u8],
    ) -> Result<String, LeaseError> {
        PublicToken::sign(&self.key, payload, Some(footer), Some(implicit))
            .map_err(|e| LeaseError::Sign(e.to_string()))
    }
}

/// Verifies a v4.public token's signature (token level) and returns its payload bytes.
/// `footer` must equal the token's footer; `implicit` is the implicit assertion.
pub fn verify_raw(
    public_key: &[u8; 32],
    token: &str,
    footer: &[u8],
    implicit: &[u8],
) -> Result<Vec<u8>, LeaseError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(LeaseError::Malformed(format!(
            "token length {} out of range",
            token.len()
        )));
    }
    let pk = AsymmetricPublicKey::<V4>::from(public_key)
        .map_err(|e| LeaseError::Malformed(e.to_string()))?;
    let untrusted = UntrustedToken::<Public, V4>::try_from(token)
        .map_err(|e| LeaseError::Malformed(e.to_string()))?;
    // pasetors treats `Some(b"")` as "a footer must be present": pass `None` for "no footer"
    // and compare the authenticated footer afterwards.
    let expect_footer = if footer.is_empty() {
        None
    } else {
        Some(footer)
    };
    let trusted = PublicToken::verify(&pk, &untrusted, expect_footer, Some(implicit))
        .map_err(|_| LeaseError::BadSignature)?;
    if trusted.footer() != footer {
        return Err(LeaseError::BadSignature);
    }
    Ok(trusted.payload().as_bytes().to_vec())
}

/// What the verifying relay expects of a lease, besides a valid signature.
#[derive(Debug, Clone)]
pub struct LeaseVerifier {
    public_key: [u8; 32],
    key_id: Option<String>,
    relay_id: String,
}

impl LeaseVerifier {
    /// A verifier for leases signed by `public_key` for relay `relay_id`. When `key_id` is
    /// known (from registration), leases must carry the same `kid`.
    pub fn new(public_key: [u8; 32], key_id: Option<String>, relay_id: impl Into<String>) -> Self {
        Self {
            public_key,
            key_id,
            relay_id: relay_id.into(),
        }
    }

    /// Verifies signature, times (with [`CLOCK_SKEW`]), session, role, relay and key id.
    pub fn verify(
        &self,
        token: &str,
        now: OffsetDateTime,
        session_id: Uuid,
        role: LeaseRole,
    ) -> Result<LeaseClaims, LeaseError> {
        let payload = verify_raw(&self.public_key, token, b"", b"")?;
        let claims: LeaseClaims =
            serde_json::from_slice(&payload).map_err(|e| LeaseError::BadClaims(e.to_string()))?;
        if claims.sub.is_empty() {
            return Err(LeaseError::BadClaims("empty sub".into()));
        }
        if claims.sid.is_nil() {
            return Err(LeaseError::BadClaims("nil sid".into()));
        }
        if claims.exp <= now - CLOCK_SKEW {
            return Err(LeaseError::Expired);
        }
        if claims.exp > now + MAX_HORIZON + CLOCK_SKEW {
            return Err(LeaseError::TooFarInFuture);
        }
        if claims.nbf > now + CLOCK_SKEW || claims.iat > now + CLOCK_SKEW {
            return Err(LeaseError::NotYetValid);
        }
        if claims.iat >= claims.exp {
            return Err(LeaseError::BadClaims("iat is not before exp".into()));
        }
        if claims.sid != session_id {
            return Err(LeaseError::WrongSession);
        }
        if claims.role != role {
            return Err(LeaseError::WrongRole);
        }
        if claims.rid != self.relay_id {
            return Err(LeaseError::WrongRelay);
        }
        if let Some(kid) = &self.key_id {
            if claims.kid.as_deref() != Some(kid.as_str()) {
                return Err(LeaseError::WrongKeyId);
            }
        }
        Ok(claims)
    }
}
