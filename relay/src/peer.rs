//! The peer side of the relay handshake, for tests, the bench and (later) the endpoints:
//! building LEASE_PRESENT / LEASE_RENEW with the holder's binding signature, wrapping
//! datagrams in FORWARD, and reading the relay's answers.

use wavry_rift::identity::IdentityKey;
use wavry_rift::wire::{
    BINDING_MESSAGE_MAX, LeaseAck, LeasePresent, PeerRole, PresentBinding, RejectReason,
    RelayHeader, RelayType, WireError, binding_message,
};

/// Writes a LEASE_PRESENT (or LEASE_RENEW when `renew`) into `out` and returns its length.
/// With `holder = Some((key, relay_id, now_unix_ms))` it carries the binding signature that
/// lets the relay bind or move this peer's address.
pub fn encode_present(
    out: &mut [u8],
    renew: bool,
    session_id: [u8; 16],
    role: PeerRole,
    token: &str,
    holder: Option<(&IdentityKey, &str, u64)>,
) -> Result<usize, WireError> {
    let binding = match holder {
        Some((key, relay_id, ts)) => {
            let mut msg = [0u8; BINDING_MESSAGE_MAX];
            let n = binding_message(&session_id, role, relay_id, ts, &mut msg)?;
            Some(PresentBinding {
                timestamp_ms: ts,
                signature: key.sign(&msg[..n]),
            })
        }
        None => None,
    };
    let header = RelayHeader {
        kind: if renew {
            RelayType::LeaseRenew
        } else {
            RelayType::LeasePresent
        },
        flags: 0,
        session_id,
    };
    let h = header.encode(out)?;
    let p = LeasePresent {
        role,
        token,
        binding,
    }
    .encode(&mut out[h..])?;
    Ok(h + p)
}

/// Writes a FORWARD header followed by `payload` into `out`; returns the length.
pub fn encode_forward(
    out: &mut [u8],
    session_id: [u8; 16],
    payload: &[u8],
) -> Result<usize, WireError> {
    let h = RelayHeader {
        kind: RelayType::Forward,
        flags: 0,
        session_id,
    }
    .encode(out)?;
    let end = h + payload.len();
    if out.len() < end {
        return Err(WireError::BufferTooSmall {
            len: out.len(),
            need: end,
        });
    }
    out[h..end].copy_from_slice(payload);
    Ok(end)
}

/// A relay's answer to a presentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Admitted.
    Ack(LeaseAck),
    /// Refused.
    Reject(RejectReason),
}

/// Parses a LEASE_ACK or LEASE_REJECT datagram (with its session id).
pub fn decode_answer(datagram: &[u8]) -> Result<([u8; 16], Answer), WireError> {
    let h = RelayHeader::decode(datagram)?;
    let payload = &datagram[RelayHeader::LEN..];
    match h.kind {
        RelayType::LeaseAck => Ok((h.session_id, Answer::Ack(LeaseAck::decode(payload)?))),
        RelayType::LeaseReject => {
            Ok((h.session_id, Answer::Reject(RejectReason::decode(payload)?)))
        }
        _ => Err(WireError::BadRelayPayload(
            "not a LEASE_ACK or LEASE_REJECT",
        )),
    }
}
