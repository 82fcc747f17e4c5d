//! The peer side of the relay handshake, for tests and the bench: building LEASE_PRESENT /
//! LEASE_RENEW with the holder's binding signature and reading the relay's answers (both
//! from `wavry_rift::relay_client`, which the endpoints use), and wrapping datagrams in
//! FORWARD.

pub use wavry_rift::relay_client::{Answer, decode_answer, encode_present};
use wavry_rift::wire::{RelayHeader, RelayType, WireError};

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
