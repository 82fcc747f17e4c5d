//! RIFT physical headers (spec RIFT §2): the 30-byte handshake header, the 18-byte transport
//! header, and header detection in the spec's order. Parsing borrows, encoding writes into the
//! caller's buffer: nothing here allocates.

use super::{WireError, checksum::crc16_kermit};

/// ASCII "RI", first two bytes of every RIFT datagram.
pub const MAGIC: [u8; 2] = *b"RI";
/// The only protocol version on the wire.
pub const VERSION: u16 = 1;

fn check_prefix(buf: &[u8], need: usize) -> Result<(), WireError> {
    if buf.len() < need {
        return Err(WireError::TooShort {
            len: buf.len(),
            need,
        });
    }
    if buf[0..2] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = u16::from_be_bytes([buf[2], buf[3]]);
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    Ok(())
}

fn check_crc(buf: &[u8], covered: usize) -> Result<(), WireError> {
    let carried = u16::from_be_bytes([buf[covered], buf[covered + 1]]);
    let computed = crc16_kermit(&buf[..covered]);
    if carried == computed {
        Ok(())
    } else {
        Err(WireError::BadChecksum { carried, computed })
    }
}

fn check_room(out: &[u8], need: usize) -> Result<(), WireError> {
    if out.len() < need {
        Err(WireError::BufferTooSmall {
            len: out.len(),
            need,
        })
    } else {
        Ok(())
    }
}

/// Handshake header: magic, version, 128-bit session id, packet id, CRC (30 bytes).
///
/// Wavry uses `packet_id` as the handshake step (1, 2, 3) and `session_id` as the initiator's
/// random handshake id; both must keep the top 32 bits of `session_id` zero so header detection
/// (spec §2.4) cannot mistake the packet for a transport packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandshakeHeader {
    /// Handshake id, below 2^96.
    pub session_id: u128,
    /// Handshake step / packet number.
    pub packet_id: u64,
}

impl HandshakeHeader {
    /// Encoded size in bytes.
    pub const LEN: usize = 30;
    /// Largest session id that header detection can tell apart from a transport header.
    pub const MAX_SESSION_ID: u128 = (1u128 << 96) - 1;

    /// Parses a handshake header from the start of `buf`, verifying magic, version and CRC.
    /// A session id over [`Self::MAX_SESSION_ID`] is refused like [`Self::encode`] refuses
    /// it: header detection would read such a datagram as transport, so a handshake decoder
    /// reached directly must not accept what no sender can produce.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        check_prefix(buf, Self::LEN)?;
        check_crc(buf, 28)?;
        if buf[4..8] != [0; 4] {
            return Err(WireError::SessionIdTooLarge);
        }
        let mut sid = [0u8; 16];
        sid.copy_from_slice(&buf[4..20]);
        let mut pid = [0u8; 8];
        pid.copy_from_slice(&buf[20..28]);
        Ok(Self {
            session_id: u128::from_be_bytes(sid),
            packet_id: u64::from_be_bytes(pid),
        })
    }

    /// Writes the header into `out[..30]` and returns 30.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if self.session_id > Self::MAX_SESSION_ID {
            return Err(WireError::SessionIdTooLarge);
        }
        check_room(out, Self::LEN)?;
        out[0..2].copy_from_slice(&MAGIC);
        out[2..4].copy_from_slice(&VERSION.to_be_bytes());
        out[4..20].copy_from_slice(&self.session_id.to_be_bytes());
        out[20..28].copy_from_slice(&self.packet_id.to_be_bytes());
        let crc = crc16_kermit(&out[..28]);
        out[28..30].copy_from_slice(&crc.to_be_bytes());
        Ok(Self::LEN)
    }
}

/// Transport header: magic, version, non-zero session alias, key phase and packet id, CRC
/// (18 bytes). Wavry extension: the top bit of the 64-bit packet id field is the key phase
/// (which key generation sealed the packet, alternating 0/1 at each rekey); packet ids are
/// 63-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransportHeader {
    /// Compact session id for demultiplexing; 0 is reserved.
    pub alias: u32,
    /// Per-sender, per-session packet counter; also the AEAD nonce. At most [`Self::MAX_PACKET_ID`].
    pub packet_id: u64,
    /// Key phase bit: selects the receive key (current, next or previous generation).
    pub key_phase: bool,
}

impl TransportHeader {
    /// Encoded size in bytes.
    pub const LEN: usize = 18;
    /// Largest packet id (the top bit of the field is the key phase).
    pub const MAX_PACKET_ID: u64 = (1 << 63) - 1;

    /// Parses a transport header from the start of `buf`, verifying magic, version, CRC and alias.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        check_prefix(buf, Self::LEN)?;
        check_crc(buf, 16)?;
        let alias = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if alias == 0 {
            return Err(WireError::ZeroAlias);
        }
        let mut pid = [0u8; 8];
        pid.copy_from_slice(&buf[8..16]);
        let raw = u64::from_be_bytes(pid);
        Ok(Self {
            alias,
            packet_id: raw & Self::MAX_PACKET_ID,
            key_phase: raw >> 63 == 1,
        })
    }

    /// Writes the header into `out[..18]` and returns 18.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if self.alias == 0 {
            return Err(WireError::ZeroAlias);
        }
        if self.packet_id > Self::MAX_PACKET_ID {
            return Err(WireError::PacketIdTooLarge);
        }
        check_room(out, Self::LEN)?;
        out[0..2].copy_from_slice(&MAGIC);
        out[2..4].copy_from_slice(&VERSION.to_be_bytes());
        out[4..8].copy_from_slice(&self.alias.to_be_bytes());
        let raw = self.packet_id | (u64::from(self.key_phase) << 63);
        out[8..16].copy_from_slice(&raw.to_be_bytes());
        let crc = crc16_kermit(&out[..16]);
        out[16..18].copy_from_slice(&crc.to_be_bytes());
        Ok(Self::LEN)
    }
}

/// A decoded RIFT physical header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Handshake packet (alias field 0, at least 30 bytes).
    Handshake(HandshakeHeader),
    /// Transport packet.
    Transport(TransportHeader),
}

impl Header {
    /// Size of this header on the wire (where the payload starts).
    pub fn len(&self) -> usize {
        match self {
            Self::Handshake(_) => HandshakeHeader::LEN,
            Self::Transport(_) => TransportHeader::LEN,
        }
    }

    /// Never true: a header always occupies bytes. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Detects and parses the header of a RIFT datagram in the order of spec §2.4:
    /// length, magic, version, then handshake (u32 at offset 4 is 0 and len ≥ 30) or transport,
    /// CRC last. Returns the header; the payload is `&buf[header.len()..]`.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        check_prefix(buf, TransportHeader::LEN)?;
        let alias_field = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if alias_field == 0 && buf.len() >= HandshakeHeader::LEN {
            HandshakeHeader::decode(buf).map(Self::Handshake)
        } else {
            TransportHeader::decode(buf).map(Self::Transport)
        }
    }

    /// Encodes the header into `out`, returning the number of bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        match self {
            Self::Handshake(h) => h.encode(out),
            Self::Transport(t) => t.encode(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_header_spec_vector() {
        let mut out = [0u8; 30];
        HandshakeHeader {
            session_id: 0,
            packet_id: 0,
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(&out[..4], &[0x52, 0x49, 0x00, 0x01]);
        assert!(out[4..28].iter().all(|&b| b == 0));
        assert_eq!(&out[28..], &[0xE6, 0x96]);
    }

    #[test]
    fn transport_header_spec_vector() {
        let mut out = [0u8; 18];
        TransportHeader {
            alias: 0x1234_5678,
            packet_id: 999,
            key_phase: false,
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(
            &out[..16],
            &[
                0x52, 0x49, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0, 0, 0x03, 0xE7
            ]
        );
        assert_eq!(u16::from_be_bytes([out[16], out[17]]), 0x3D23);
    }

    #[test]
    fn detection_order_and_errors() {
        assert_eq!(
            Header::decode(&[0x52; 17]),
            Err(WireError::TooShort { len: 17, need: 18 })
        );
        assert_eq!(Header::decode(&[0u8; 18]), Err(WireError::BadMagic));
        let mut b = [0u8; 30];
        HandshakeHeader {
            session_id: 7,
            packet_id: 1,
        }
        .encode(&mut b)
        .unwrap();
        assert!(matches!(Header::decode(&b), Ok(Header::Handshake(h)) if h.session_id == 7));
        b[3] = 2;
        assert_eq!(Header::decode(&b), Err(WireError::BadVersion(2)));
        b[3] = 1;
        b[25] ^= 1;
        assert!(matches!(
            Header::decode(&b),
            Err(WireError::BadChecksum { .. })
        ));
        // A 29-byte datagram with a zero alias field is parsed as transport and refused.
        let mut t = [0u8; 29];
        t[..30 - 1].copy_from_slice(
            &{
                let mut x = [0u8; 30];
                HandshakeHeader {
                    session_id: 0,
                    packet_id: 0,
                }
                .encode(&mut x)
                .unwrap();
                x
            }[..29],
        );
        assert!(Header::decode(&t).is_err());
    }

    #[test]
    fn key_phase_is_the_top_bit_of_the_packet_id_field() {
        let mut out = [0u8; 18];
        let h = TransportHeader {
            alias: 5,
            packet_id: 999,
            key_phase: true,
        };
        h.encode(&mut out).unwrap();
        assert_eq!(out[8], 0x80);
        assert_eq!(&out[14..16], &[0x03, 0xE7]);
        assert_eq!(TransportHeader::decode(&out), Ok(h));
        let big = TransportHeader {
            packet_id: 1 << 63,
            ..h
        };
        assert_eq!(big.encode(&mut out), Err(WireError::PacketIdTooLarge));
    }

    #[test]
    fn too_large_session_id_is_refused() {
        let mut out = [0u8; 30];
        let h = HandshakeHeader {
            session_id: 1u128 << 96,
            packet_id: 0,
        };
        assert_eq!(h.encode(&mut out), Err(WireError::SessionIdTooLarge));
        // Nor does one decode (found by the handshake_cookie fuzz target: a first message
        // decoded that could not be encoded again).
        let mut raw = [0u8; HandshakeHeader::LEN];
        HandshakeHeader {
            session_id: 1,
            packet_id: 1,
        }
        .encode(&mut raw)
        .unwrap();
        raw[5] = 4;
        let crc = crc16_kermit(&raw[..28]);
        raw[28..30].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            HandshakeHeader::decode(&raw),
            Err(WireError::SessionIdTooLarge)
        );
    }
}
