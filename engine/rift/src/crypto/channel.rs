//! The transport phase of a session: seals outgoing datagrams with the next packet id and
//! opens incoming ones with header check → replay check → AEAD → replay update, all in place.
//! The 18-byte RIFT transport header is the AEAD's associated data, so alias, version and
//! packet id are authenticated (the original left them unauthenticated).
//!
//! Rekeying (see `session/rekey.rs`): each direction has a key phase bit in the header. The
//! receiver selects the key by the bit: the current key, or, for the other bit, the next
//! generation's key once installed (the first packet that opens under it makes it current and,
//! on the side that has not switched yet, moves sending to the new generation) or the previous
//! key, kept for reordered packets until the session erases it. Packet ids (the nonces) keep
//! counting across generations, so one replay window covers all of them.

use super::{ChainKey, CryptoError, PacketKey, TAG_LEN};
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
    tx_phase: bool,
    rx: PacketKey,
    rx_phase: bool,
    /// The next generation's receive key (phase `!rx_phase`), once derived.
    rx_next: Option<PacketKey>,
    /// The send key to switch to when `rx_next` first opens a packet (the rekey responder).
    tx_on_next: Option<PacketKey>,
    /// The previous generation's receive key (phase `!rx_phase`), until erased.
    rx_prev: Option<PacketKey>,
    rotated: bool,
    /// Secret linking this key generation to the next (zeroized on drop and on replacement).
    chain: ChainKey,
    sealed_under_key: u64,
    opened_under_key: u64,
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
            tx_phase: false,
            rx,
            rx_phase: false,
            rx_next: None,
            tx_on_next: None,
            rx_prev: None,
            rotated: false,
            chain: ChainKey::new([0; 32]),
            sealed_under_key: 0,
            opened_under_key: 0,
            next_packet_id: 1,
            replay: ReplayWindow::new(),
            peer,
            handshake_hash,
        }
    }

    /// Sets the chain key the next rekey derives from (the handshake's initial one, then each
    /// generation's); the old one is zeroized.
    pub fn set_chain(&mut self, chain: ChainKey) {
        self.chain = chain;
    }

    /// The current chain key.
    pub fn chain(&self) -> &[u8; 32] {
        &self.chain
    }

    /// Installs the next generation's receive key; `tx_on_switch`, if given, becomes the send
    /// key when the first packet opens under the new receive key (the peer has switched, so it
    /// can open ours). A previous key still kept is erased (it shares the phase bit).
    pub fn install_next(&mut self, rx: PacketKey, tx_on_switch: Option<PacketKey>) {
        self.rx_prev = None;
        self.rx_next = Some(rx);
        self.tx_on_next = tx_on_switch;
    }

    /// Seals from now on under `tx`, the next generation's send key (the phase bit flips).
    pub fn switch_tx(&mut self, tx: PacketKey) {
        self.tx = tx;
        self.tx_phase = !self.tx_phase;
        self.sealed_under_key = 0;
    }

    /// Erases the previous generation's receive key (the grace period for reordered packets
    /// is over): packets sealed under it no longer open.
    pub fn drop_previous(&mut self) {
        self.rx_prev = None;
    }

    /// True while the previous generation's receive key is kept.
    pub fn has_previous(&self) -> bool {
        self.rx_prev.is_some()
    }

    /// True while a next generation's key is installed but no packet has opened under it.
    pub fn has_next(&self) -> bool {
        self.rx_next.is_some() || self.tx_on_next.is_some()
    }

    /// True once since the last call if a packet opened under the next receive key (which then
    /// became the current one).
    pub fn take_rotated(&mut self) -> bool {
        std::mem::take(&mut self.rotated)
    }

    /// Packets sealed or opened under the current keys (whichever is more), for the
    /// packet-count rekey trigger.
    pub fn key_use(&self) -> u64 {
        self.sealed_under_key.max(self.opened_under_key)
    }

    /// The send and receive key phase bits.
    pub fn phases(&self) -> (bool, bool) {
        (self.tx_phase, self.rx_phase)
    }

    /// The peer's authenticated identity.
    pub fn peer(&self) -> WavryId {
        self.peer
    }

    /// The Noise handshake hash (channel binding; equal on both sides).
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// The highest packet id received and authenticated so far (0: none).
    pub fn highest_received(&self) -> u64 {
        self.replay.highest()
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
        if packet_id >= TransportHeader::MAX_PACKET_ID {
            return Err(CryptoError::PacketIdExhausted);
        }
        let (head, body) = buf.split_at_mut(TransportHeader::LEN);
        TransportHeader {
            alias,
            packet_id,
            key_phase: self.tx_phase,
        }
        .encode(head)?;
        let n = self.tx.seal(packet_id, head, body, payload_len)?;
        self.next_packet_id += 1;
        self.sealed_under_key += 1;
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
        let n = if header.key_phase == self.rx_phase {
            let n = self.rx.open(header.packet_id, head, body)?;
            self.opened_under_key += 1;
            n
        } else if let Some(next) = &self.rx_next {
            let n = next.open(header.packet_id, head, body)?;
            self.promote_next();
            n
        } else if let Some(prev) = &self.rx_prev {
            prev.open(header.packet_id, head, body)?
        } else {
            return Err(CryptoError::KeyPhase);
        };
        self.replay.update(header.packet_id);
        Ok(Opened {
            header,
            payload: &mut body[..n],
        })
    }
}

impl SecureChannel {
    /// The next receive key opened a packet: it becomes current, the current one previous,
    /// and a pending send key takes over.
    fn promote_next(&mut self) {
        if let Some(next) = self.rx_next.take() {
            self.rx_prev = Some(std::mem::replace(&mut self.rx, next));
            self.rx_phase = !self.rx_phase;
            self.opened_under_key = 1;
            self.rotated = true;
        }
        if let Some(tx) = self.tx_on_next.take() {
            self.switch_tx(tx);
        }
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
            key_phase: false,
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
    fn key_phases_switch_without_a_gap_and_old_keys_end_at_erasure() {
        let (mut a, mut b) = pair();
        let mut d = [0u8; 64];
        let (_, n) = a.seal(9, &mut d, 4).unwrap();
        // b (the rekey initiator) has the new keys first: it sends under them at once and
        // expects a's new-phase packets; a installs the next receive key and switches when
        // the first packet opens under it.
        b.switch_tx(PacketKey::new(&[4; 32]));
        b.install_next(PacketKey::new(&[5; 32]), None);
        a.install_next(PacketKey::new(&[4; 32]), Some(PacketKey::new(&[5; 32])));
        // a's old-phase packet still opens at b (current key).
        b.open(&mut d[..n]).unwrap();
        let (_, m) = b.seal(9, &mut d, 4).unwrap();
        assert!(a.open(&mut d[..m]).is_ok());
        assert!(a.take_rotated());
        assert_eq!(a.phases(), (true, true));
        // a now seals under the new phase; b promotes its next key too.
        let (_, k) = a.seal(9, &mut d, 4).unwrap();
        b.open(&mut d[..k]).unwrap();
        assert!(b.take_rotated() && b.has_previous());
        // A reordered old-phase packet (sealed before the switch) opens with the previous key.
        let (_, r) = {
            let (mut a2, _) = pair();
            a2.skip_to(50);
            a2.seal(9, &mut d, 4).unwrap()
        };
        let reordered = d;
        let mut t = reordered;
        assert!(b.open(&mut t[..r]).is_ok());
        // After erasure, old-phase packets are refused by phase.
        b.drop_previous();
        let (_, r2) = {
            let (mut a3, _) = pair();
            a3.skip_to(60);
            a3.seal(9, &mut d, 4).unwrap()
        };
        assert_eq!(b.open(&mut d[..r2]), Err(CryptoError::KeyPhase));
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
