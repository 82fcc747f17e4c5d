//! The transport phase of a session: seals outgoing datagrams with the next packet id and
//! opens incoming ones with header check → replay check → AEAD → replay update, all in place.
//! The 18-byte RIFT transport header is the AEAD's associated data, so alias, version and
//! packet id are authenticated (the original left them unauthenticated).

use super::{CryptoError, PacketKey, TAG_LEN};
use crate::{identity::WavryId, replay::ReplayWindow, wire::TransportHeader};

/// Bytes a sealed datagram adds around the plaintext: header in front, tag behind.
pub const OVERHEAD: usize = TransportHeader::LEN + TAG_LEN;

/// A decrypted datagram: its header and the plaintext, borrowed from the caller's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The authenticated transport header.
    pub header: TransportHeader,
    /// The plaintext payload.
    pub payload: &'a mut [u8],
}

/// Keys, send counter and replay window of one established session.
#[derive(Debug)]
pub struct SecureChannel {
    tx: PacketKey,
    rx: PacketKey,
    next_packet_id: u64,
    replay: ReplayWindow,
    peer: WavryId,
    handshake_hash: [u8; 32],
}

impl SecureChannel {
    /// Wraps direction keys from a finished handshake. Packet ids start at 1.
    pub fn new(tx: PacketKey, rx: PacketKey, peer: WavryId, handshake_hash: [u8; 32]) -> Self {
        Self {
            tx,
            rx,
            next_packet_id: 1,
            replay: ReplayWindow::new(),
            peer,
            handshake_hash,
        }
    }

    /// The peer's authenticated identity.
    pub fn peer(&self) -> WavryId {
        self.peer
    }

    /// The Noise handshake hash (channel binding; equal on both sides).
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// The packet id the next `seal` will use.
    pub fn next_packet_id(&self) -> u64 {
        self.next_packet_id
    }

    /// Moves the send counter forward to `packet_id` (never back, so no packet id, and no
    /// nonce, is ever sealed twice). Ids skipped are simply never used.
    pub fn skip_to(&mut self, packet_id: u64) {
        self.next_packet_id = self.next_packet_id.max(packet_id);
    }

    /// Seals a datagram in place. The plaintext must already sit at
    /// `buf[18..18 + payload_len]`; the header is written to `buf[..18]` and the tag after the
    /// payload. Returns `(packet_id, datagram_len)`.
    pub fn seal(
        &mut self,
        alias: u32,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Result<(u64, usize), CryptoError> {
        let need = payload_len + OVERHEAD;
        if buf.len() < need {
            return Err(CryptoError::BufferTooSmall {
                len: buf.len(),
                need,
            });
        }
        let packet_id = self.next_packet_id;
        if packet_id == u64::MAX {
            return Err(CryptoError::PacketIdExhausted);
        }
        let (head, body) = buf.split_at_mut(TransportHeader::LEN);
        TransportHeader { alias, packet_id }.encode(head)?;
        let n = self.tx.seal(packet_id, head, body, payload_len)?;
        self.next_packet_id += 1;
        Ok((packet_id, TransportHeader::LEN + n))
    }

    /// Opens a datagram in place: header and CRC, replay check, AEAD with the header as
    /// associated data, then the replay window moves. A packet that fails any step leaves the
    /// window untouched.
    pub fn open<'a>(&mut self, buf: &'a mut [u8]) -> Result<Opened<'a>, CryptoError> {
        let header = TransportHeader::decode(buf)?;
        self.open_decoded(header, buf)
    }

    /// [`Self::open`] for a caller that has already decoded (and CRC-checked) `header` from
    /// `buf[..18]`, so the header is not parsed twice. The AEAD still authenticates the header
    /// bytes in `buf` as associated data.
    pub fn open_decoded<'a>(
        &mut self,
        header: TransportHeader,
        buf: &'a mut [u8],
    ) -> Result<Opened<'a>, CryptoError> {
        if buf.len() < TransportHeader::LEN {
            return Err(CryptoError::AuthFailed);
        }
        self.replay.check(header.packet_id)?;
        let (head, body) = buf.split_at_mut(TransportHeader::LEN);
        let n = self.rx.open(header.packet_id, head, body)?;
        self.replay.update(header.packet_id);
        Ok(Opened {
            header,
            payload: &mut body[..n],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{replay::ReplayError, wire::WireError};

    fn pair() -> (SecureChannel, SecureChannel) {
        let id = WavryId::from_bytes([3; 32]);
        let a = SecureChannel::new(
            PacketKey::new(&[1; 32]),
            PacketKey::new(&[2; 32]),
            id,
            [0; 32],
        );
        let b = SecureChannel::new(
            PacketKey::new(&[2; 32]),
            PacketKey::new(&[1; 32]),
            id,
            [0; 32],
        );
        (a, b)
    }

    #[test]
    fn every_tampered_byte_is_a_typed_error() {
        let (mut a, mut b) = pair();
        let mut d = [0u8; 64];
        d[18..28].copy_from_slice(b"0123456789");
        let (_, n) = a.seal(9, &mut d, 10).unwrap();
        for i in 0..n {
            let mut t = d;
            t[i] ^= 0x20;
            let err = b.open(&mut t[..n]).unwrap_err();
            assert!(
                matches!(err, CryptoError::AuthFailed | CryptoError::Wire(_)),
                "byte {i}: {err:?}"
            );
        }
        // After all that, the genuine packet still opens (failed packets did not move the window).
        assert_eq!(b.open(&mut d[..n]).unwrap().payload, b"0123456789");
    }

    #[test]
    fn header_fields_are_authenticated_even_with_a_fixed_crc() {
        let (mut a, mut b) = pair();
        let mut d = [0u8; 64];
        let (_, n) = a.seal(9, &mut d, 4).unwrap();
        // Change the alias and recompute the CRC: only the AEAD can notice.
        TransportHeader {
            alias: 10,
            packet_id: 1,
        }
        .encode(&mut d)
        .unwrap();
        assert_eq!(b.open(&mut d[..n]), Err(CryptoError::AuthFailed));
    }

    #[test]
    fn replay_and_truncation_are_refused() {
        let (mut a, mut b) = pair();
        let mut d = [0u8; 64];
        let (pid, n) = a.seal(9, &mut d, 4).unwrap();
        let copy = d;
        let mut cut = copy;
        assert_eq!(b.open(&mut cut[..n - 1]), Err(CryptoError::AuthFailed));
        b.open(&mut d[..n]).unwrap();
        let mut again = copy;
        assert_eq!(
            b.open(&mut again[..n]),
            Err(CryptoError::Replay(ReplayError::Duplicate(pid)))
        );
        let mut short = copy;
        assert_eq!(
            b.open(&mut short[..10]),
            Err(CryptoError::Wire(WireError::TooShort { len: 10, need: 18 }))
        );
    }

    #[test]
    fn packet_ids_count_up_from_one() {
        let (mut a, _) = pair();
        let mut d = [0u8; 64];
        assert_eq!(a.seal(1, &mut d, 0).unwrap().0, 1);
        assert_eq!(a.seal(1, &mut d, 0).unwrap().0, 2);
        assert!(a.seal(1, &mut d[..20], 4).is_err());
    }
}
