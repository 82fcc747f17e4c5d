//! Relay header (spec RELAY §1): 20 bytes in front of every datagram that crosses a relay,
//! and the small control payloads of LEASE_PRESENT / LEASE_ACK / LEASE_REJECT.

use super::WireError;

/// First byte of every relay datagram ('W'); RIFT datagrams start with 'R'.
pub const RELAY_MAGIC: u8 = 0x57;
/// Relay header version.
pub const RELAY_VERSION: u8 = 1;
/// Largest relay datagram accepted, header included.
pub const MAX_RELAY_DATAGRAM: usize = 1500;
/// Largest PASETO token accepted in LEASE_PRESENT.
pub const MAX_LEASE_TOKEN: usize = 8192;

/// Relay packet type (byte 2 of the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RelayType {
    /// Peer → relay: present a lease.
    LeasePresent = 0x01,
    /// Relay → peer: lease accepted.
    LeaseAck = 0x02,
    /// Relay → peer: lease refused, with a reason.
    LeaseReject = 0x03,
    /// Peer → relay: extend the session from a registered address.
    LeaseRenew = 0x04,
    /// Both ways: opaque RIFT datagram to forward.
    Forward = 0x10,
}

impl TryFrom<u8> for RelayType {
    type Error = WireError;
    fn try_from(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            0x01 => Self::LeasePresent,
            0x02 => Self::LeaseAck,
            0x03 => Self::LeaseReject,
            0x04 => Self::LeaseRenew,
            0x10 => Self::Forward,
            other => return Err(WireError::UnknownRelayType(other)),
        })
    }
}

/// The 20-byte relay header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayHeader {
    /// Packet type.
    pub kind: RelayType,
    /// Reserved flags (sent as 0, ignored on receive).
    pub flags: u8,
    /// Relay session id (UUID bytes, RFC 4122 order); never nil.
    pub session_id: [u8; 16],
}

impl RelayHeader {
    /// Encoded size in bytes.
    pub const LEN: usize = 20;

    /// Cheap pre-check used on the relay's hot path before full parsing.
    #[inline]
    pub fn looks_like_relay(buf: &[u8]) -> bool {
        buf.len() >= Self::LEN && buf[0] == RELAY_MAGIC && buf[1] == RELAY_VERSION
    }

    /// Parses the header at the start of `buf`; the payload is `&buf[20..]`.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        if buf.len() < Self::LEN {
            return Err(WireError::TooShort {
                len: buf.len(),
                need: Self::LEN,
            });
        }
        if buf[0] != RELAY_MAGIC {
            return Err(WireError::BadMagic);
        }
        if buf[1] != RELAY_VERSION {
            return Err(WireError::BadVersion(u16::from(buf[1])));
        }
        let kind = RelayType::try_from(buf[2])?;
        let mut session_id = [0u8; 16];
        session_id.copy_from_slice(&buf[4..20]);
        if session_id == [0u8; 16] {
            return Err(WireError::NilSession);
        }
        Ok(Self {
            kind,
            flags: buf[3],
            session_id,
        })
    }

    /// Writes the header into `out[..20]` and returns 20.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if self.session_id == [0u8; 16] {
            return Err(WireError::NilSession);
        }
        if out.len() < Self::LEN {
            return Err(WireError::BufferTooSmall {
                len: out.len(),
                need: Self::LEN,
            });
        }
        out[0] = RELAY_MAGIC;
        out[1] = RELAY_VERSION;
        out[2] = self.kind as u8;
        out[3] = self.flags;
        out[4..20].copy_from_slice(&self.session_id);
        Ok(Self::LEN)
    }
}

/// Role byte in LEASE_PRESENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// The viewing side.
    Client = 0,
    /// The host (server) side.
    Server = 1,
}

/// Domain label that starts every address-binding message (see [`binding_message`]).
pub const BINDING_DOMAIN: &[u8] = b"wavry-relay-bind-v1";
/// Longest relay id a binding message covers (the master accepts ids of at most 64 bytes).
pub const MAX_RELAY_ID: usize = 64;
/// Size of the buffer [`binding_message`] writes into.
pub const BINDING_MESSAGE_MAX: usize = BINDING_DOMAIN.len() + 1 + 16 + 1 + 1 + MAX_RELAY_ID + 8;

/// Proof that the lease holder itself asks for the address a LEASE_PRESENT comes from: an
/// Ed25519 signature by the holder's identity key (the Wavry ID in the lease) over
/// [`binding_message`]. The token travels in clear, so without this a captured token could
/// move a peer's address; the relay accepts a binding's timestamp only within ±30 s of its
/// clock and strictly above the last one it accepted for that peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresentBinding {
    /// Sender's wall clock, Unix milliseconds.
    pub timestamp_ms: u64,
    /// Ed25519 signature over [`binding_message`].
    pub signature: [u8; 64],
}

impl PresentBinding {
    /// Encoded size in bytes: timestamp u64 ‖ signature.
    pub const LEN: usize = 8 + 64;
}

/// Writes the message a [`PresentBinding`] signs into `out` and returns its length:
/// `"wavry-relay-bind-v1" ‖ 0x00 ‖ session_id (16) ‖ role u8 ‖ relay_id_len u8 ‖ relay_id ‖
/// timestamp_ms u64` (big-endian). Fails when `relay_id` is empty or longer than
/// [`MAX_RELAY_ID`].
pub fn binding_message(
    session_id: &[u8; 16],
    role: PeerRole,
    relay_id: &str,
    timestamp_ms: u64,
    out: &mut [u8; BINDING_MESSAGE_MAX],
) -> Result<usize, WireError> {
    let rid = relay_id.as_bytes();
    if rid.is_empty() || rid.len() > MAX_RELAY_ID {
        return Err(WireError::BadRelayPayload("relay id length out of range"));
    }
    let mut n = 0;
    let mut put = |b: &[u8]| {
        out[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    };
    put(BINDING_DOMAIN);
    put(&[0]);
    put(session_id);
    put(&[role as u8, rid.len() as u8]);
    put(rid);
    put(&timestamp_ms.to_be_bytes());
    Ok(n)
}

/// LEASE_PRESENT (and LEASE_RENEW) payload: role, a length-prefixed UTF-8 PASETO token
/// (borrowed), then optionally a [`PresentBinding`] (timestamp u64 ‖ 64-byte signature).
/// A payload that ends after the token (the original layout) decodes with `binding: None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePresent<'a> {
    /// Which slot of the relay session the sender claims.
    pub role: PeerRole,
    /// The lease token, as sent.
    pub token: &'a str,
    /// The holder's signature over this address binding, when present.
    pub binding: Option<PresentBinding>,
}

impl<'a> LeasePresent<'a> {
    /// Parses the payload that follows the relay header.
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        if payload.len() < 3 {
            return Err(WireError::TooShort {
                len: payload.len(),
                need: 3,
            });
        }
        let role = match payload[0] {
            0 => PeerRole::Client,
            1 => PeerRole::Server,
            _ => return Err(WireError::BadRelayPayload("role byte must be 0 or 1")),
        };
        let len = usize::from(u16::from_be_bytes([payload[1], payload[2]]));
        if len == 0 {
            return Err(WireError::BadRelayPayload("empty lease token"));
        }
        if len > MAX_LEASE_TOKEN {
            return Err(WireError::BadRelayPayload("lease token too large"));
        }
        let bytes = payload.get(3..3 + len).ok_or(WireError::TooShort {
            len: payload.len(),
            need: 3 + len,
        })?;
        let token = std::str::from_utf8(bytes)
            .map_err(|_| WireError::BadRelayPayload("lease token is not UTF-8"))?;
        let binding = match &payload[3 + len..] {
            [] => None,
            tail if tail.len() == PresentBinding::LEN => {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&tail[..8]);
                let mut signature = [0u8; 64];
                signature.copy_from_slice(&tail[8..]);
                Some(PresentBinding {
                    timestamp_ms: u64::from_be_bytes(ts),
                    signature,
                })
            }
            _ => {
                return Err(WireError::BadRelayPayload(
                    "bytes after the lease token are not a 72-byte binding",
                ));
            }
        };
        Ok(Self {
            role,
            token,
            binding,
        })
    }

    /// Writes the payload into `out` and returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = self.token.len();
        if len == 0 || len > MAX_LEASE_TOKEN {
            return Err(WireError::BadRelayPayload(
                "lease token length out of range",
            ));
        }
        let tail = if self.binding.is_some() {
            PresentBinding::LEN
        } else {
            0
        };
        let need = 3 + len + tail;
        if out.len() < need {
            return Err(WireError::BufferTooSmall {
                len: out.len(),
                need,
            });
        }
        out[0] = self.role as u8;
        out[1..3].copy_from_slice(&(len as u16).to_be_bytes());
        out[3..3 + len].copy_from_slice(self.token.as_bytes());
        if let Some(b) = &self.binding {
            out[3 + len..3 + len + 8].copy_from_slice(&b.timestamp_ms.to_be_bytes());
            out[3 + len + 8..need].copy_from_slice(&b.signature);
        }
        Ok(need)
    }
}

/// LEASE_ACK payload: when the relay-side lease ends and the session's bitrate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAck {
    /// Relay-side expiry, Unix milliseconds.
    pub expires_unix_ms: u64,
    /// Soft limit, kbit/s.
    pub soft_limit_kbps: u32,
    /// Hard limit, kbit/s.
    pub hard_limit_kbps: u32,
}

impl LeaseAck {
    /// Encoded size in bytes.
    pub const LEN: usize = 16;

    /// Parses the payload that follows the relay header.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let b: &[u8; 16] = payload
            .get(..Self::LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::TooShort {
                len: payload.len(),
                need: Self::LEN,
            })?;
        Ok(Self {
            expires_unix_ms: u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            soft_limit_kbps: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            hard_limit_kbps: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        })
    }

    /// Writes the payload into `out[..16]` and returns 16.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if out.len() < Self::LEN {
            return Err(WireError::BufferTooSmall {
                len: out.len(),
                need: Self::LEN,
            });
        }
        out[0..8].copy_from_slice(&self.expires_unix_ms.to_be_bytes());
        out[8..12].copy_from_slice(&self.soft_limit_kbps.to_be_bytes());
        out[12..16].copy_from_slice(&self.hard_limit_kbps.to_be_bytes());
        Ok(Self::LEN)
    }
}

/// Reason carried by LEASE_REJECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The lease (or the relay session) has expired.
    Expired,
    /// Bad token, signature, role or key id.
    InvalidSignature,
    /// The lease names another relay.
    WrongRelay,
    /// The relay is full or shedding load.
    SessionFull,
    /// The peer is banned.
    Banned,
    /// A per-IP or per-identity limit was hit.
    RateLimited,
    /// A code this implementation does not know (kept, not dropped).
    Other(u16),
}

impl RejectReason {
    /// The 16-bit wire code.
    pub fn code(self) -> u16 {
        match self {
            Self::Expired => 1,
            Self::InvalidSignature => 2,
            Self::WrongRelay => 3,
            Self::SessionFull => 4,
            Self::Banned => 5,
            Self::RateLimited => 6,
            Self::Other(c) => c,
        }
    }

    /// Maps a wire code to a reason.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => Self::Expired,
            2 => Self::InvalidSignature,
            3 => Self::WrongRelay,
            4 => Self::SessionFull,
            5 => Self::Banned,
            6 => Self::RateLimited,
            c => Self::Other(c),
        }
    }

    /// Parses a LEASE_REJECT payload.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        match payload {
            [a, b, ..] => Ok(Self::from_code(u16::from_be_bytes([*a, *b]))),
            _ => Err(WireError::TooShort {
                len: payload.len(),
                need: 2,
            }),
        }
    }

    /// Writes the 2-byte payload.
    pub fn encode(self, out: &mut [u8]) -> Result<usize, WireError> {
        if out.len() < 2 {
            return Err(WireError::BufferTooSmall {
                len: out.len(),
                need: 2,
            });
        }
        out[..2].copy_from_slice(&self.code().to_be_bytes());
        Ok(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_header_errors_are_typed() {
        let sid = [7u8; 16];
        let mut b = [0u8; 20];
        RelayHeader {
            kind: RelayType::Forward,
            flags: 0,
            session_id: sid,
        }
        .encode(&mut b)
        .unwrap();
        assert_eq!(RelayHeader::decode(&b).unwrap().kind, RelayType::Forward);
        assert!(RelayHeader::looks_like_relay(&b));
        let mut bad = b;
        bad[2] = 0x99;
        assert_eq!(
            RelayHeader::decode(&bad),
            Err(WireError::UnknownRelayType(0x99))
        );
        let mut nil = b;
        nil[4..].fill(0);
        assert_eq!(RelayHeader::decode(&nil), Err(WireError::NilSession));
        assert!(matches!(
            RelayHeader::decode(&b[..19]),
            Err(WireError::TooShort { .. })
        ));
    }

    #[test]
    fn lease_present_bounds() {
        let mut out = [0u8; 64];
        let n = LeasePresent {
            role: PeerRole::Server,
            token: "v4.public.x",
            binding: None,
        }
        .encode(&mut out)
        .unwrap();
        let p = LeasePresent::decode(&out[..n]).unwrap();
        assert_eq!(p.token, "v4.public.x");
        assert_eq!(p.role, PeerRole::Server);
        assert_eq!(p.binding, None);
        assert!(LeasePresent::decode(&out[..n - 1]).is_err());
        // With a binding: 72 more bytes; any other tail length is refused.
        let mut big = [0u8; 128];
        let bound = LeasePresent {
            role: PeerRole::Client,
            token: "v4.public.x",
            binding: Some(PresentBinding {
                timestamp_ms: 0x0102_0304_0506_0708,
                signature: [9; 64],
            }),
        };
        let m = bound.encode(&mut big).unwrap();
        assert_eq!(m, n + PresentBinding::LEN);
        assert_eq!(LeasePresent::decode(&big[..m]).unwrap(), bound);
        assert!(LeasePresent::decode(&big[..m - 1]).is_err());
        assert!(LeasePresent::decode(&big[..=n]).is_err());
        assert!(LeasePresent::decode(&[2, 0, 1, b'a']).is_err());
        assert!(LeasePresent::decode(&[0, 0, 0]).is_err());
    }

    #[test]
    fn binding_message_covers_every_field() {
        let mut a = [0u8; BINDING_MESSAGE_MAX];
        let n = binding_message(&[1; 16], PeerRole::Client, "relay-1", 42, &mut a).unwrap();
        assert!(a[..n].starts_with(BINDING_DOMAIN));
        let mut b = [0u8; BINDING_MESSAGE_MAX];
        for (sid, role, rid, ts) in [
            ([2; 16], PeerRole::Client, "relay-1", 42),
            ([1; 16], PeerRole::Server, "relay-1", 42),
            ([1; 16], PeerRole::Client, "relay-2", 42),
            ([1; 16], PeerRole::Client, "relay-1", 43),
        ] {
            let m = binding_message(&sid, role, rid, ts, &mut b).unwrap();
            assert_ne!(&a[..n], &b[..m]);
        }
        assert!(binding_message(&[1; 16], PeerRole::Client, "", 1, &mut b).is_err());
        let long = "r".repeat(MAX_RELAY_ID + 1);
        assert!(binding_message(&[1; 16], PeerRole::Client, &long, 1, &mut b).is_err());
    }
}
