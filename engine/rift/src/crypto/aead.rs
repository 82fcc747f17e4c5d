//! ChaCha20-Poly1305 packet protection on `ring`, sealed and opened in place in the datagram
//! buffer. Nonce layout (spec RIFT §3.4, identical to Noise's ChaChaPoly nonce):
//! 4 zero bytes ‖ packet id as u64 little-endian. Keys are per direction, so a packet id is
//! never used twice under one key.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};

use super::CryptoError;

/// Poly1305 tag length appended to every sealed payload.
pub const TAG_LEN: usize = 16;
/// ChaCha20-Poly1305 key length.
pub const KEY_LEN: usize = 32;

/// One direction's AEAD key.
pub struct PacketKey(LessSafeKey);

impl std::fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PacketKey(..)")
    }
}

impl PacketKey {
    /// Builds a key from 32 raw bytes.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        // CHACHA20_POLY1305 takes any 32-byte key; this cannot fail for a [u8; 32].
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).unwrap_or_else(|_| unreachable!());
        Self(LessSafeKey::new(unbound))
    }

    /// The 12-byte nonce for `packet_id`.
    #[inline]
    pub fn nonce(packet_id: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&packet_id.to_le_bytes());
        n
    }

    /// Seals `buf[..len]` in place under an explicit nonce and writes the tag to
    /// `buf[len..len + 16]`. Returns `len + 16`. Lower-level than [`Self::seal`]; used for
    /// reference vectors.
    pub fn seal_with_nonce(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, CryptoError> {
        let need = len + TAG_LEN;
        if buf.len() < need {
            return Err(CryptoError::BufferTooSmall {
                len: buf.len(),
                need,
            });
        }
        let (data, rest) = buf.split_at_mut(len);
        let tag: Tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
            .map_err(|_| CryptoError::SealFailed)?;
        rest[..TAG_LEN].copy_from_slice(tag.as_ref());
        Ok(need)
    }

    /// Opens `buf` (ciphertext ‖ tag) in place under an explicit nonce; returns the plaintext
    /// length. On failure the buffer contents are unspecified and must be discarded.
    pub fn open_with_nonce(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, CryptoError> {
        if buf.len() < TAG_LEN {
            return Err(CryptoError::AuthFailed);
        }
        self.0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map(|p| p.len())
            .map_err(|_| CryptoError::AuthFailed)
    }

    /// Seals `buf[..len]` for `packet_id`, appending the tag. Returns the sealed length.
    #[inline]
    pub fn seal(
        &self,
        packet_id: u64,
        aad: &[u8],
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, CryptoError> {
        self.seal_with_nonce(Self::nonce(packet_id), aad, buf, len)
    }

    /// Opens `buf` (ciphertext ‖ tag) for `packet_id`; returns the plaintext length.
    #[inline]
    pub fn open(&self, packet_id: u64, aad: &[u8], buf: &mut [u8]) -> Result<usize, CryptoError> {
        self.open_with_nonce(Self::nonce(packet_id), aad, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8439 §2.8.2 AEAD test vector through our in-place seal and open.
    #[test]
    fn rfc8439_aead_vector() {
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = 0x80 + i as u8;
        }
        let nonce: [u8; 12] = [
            0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
        ];
        let aad = [
            0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
        ];
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let expect_ct_prefix = [0xd3, 0x1a, 0x8d, 0x34, 0x64, 0x8e, 0x60, 0xdb, 0x7b, 0x86];
        let expect_tag = [
            0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60,
            0x06, 0x91,
        ];
        let k = PacketKey::new(&key);
        let mut buf = [0u8; 256];
        buf[..pt.len()].copy_from_slice(pt);
        let n = k.seal_with_nonce(nonce, &aad, &mut buf, pt.len()).unwrap();
        assert_eq!(n, pt.len() + 16);
        assert_eq!(&buf[..10], &expect_ct_prefix);
        assert_eq!(&buf[pt.len()..n], &expect_tag);
        let m = k.open_with_nonce(nonce, &aad, &mut buf[..n]).unwrap();
        assert_eq!(&buf[..m], pt);
    }

    #[test]
    fn tampering_fails_authentication() {
        let k = PacketKey::new(&[9; 32]);
        let mut buf = [0u8; 64];
        buf[..10].copy_from_slice(b"0123456789");
        let n = k.seal(5, b"hdr", &mut buf, 10).unwrap();
        for i in 0..n {
            let mut t = buf;
            t[i] ^= 0x01;
            assert_eq!(k.open(5, b"hdr", &mut t[..n]), Err(CryptoError::AuthFailed));
        }
        let mut t = buf;
        assert_eq!(k.open(6, b"hdr", &mut t[..n]), Err(CryptoError::AuthFailed));
        let mut t = buf;
        assert_eq!(k.open(5, b"hdR", &mut t[..n]), Err(CryptoError::AuthFailed));
    }
}
