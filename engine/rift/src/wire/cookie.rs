//! Wavry's extension of the RIFT handshake header: first-message padding and the stateless
//! cookie exchange a loaded host uses before it does any Diffie-Hellman (WireGuard's cookie
//! reply, QUIC's Retry). The handshake header's `packet_id` names the message:
//!
//! ```text
//! packet_id  direction     body after the 30-byte handshake header
//!   1  msg1          c -> h   noise msg1 (32) | zero padding      RIFT datagram >= 256 B
//!   2  msg2          h -> c   noise msg2
//!   3  msg3          c -> h   noise msg3
//!   4  cookie reply  h -> c   cookie (36)                          RIFT datagram = 66 B
//!   5  msg1+cookie   c -> h   cookie (36) | noise msg1 (32) | zero padding,  >= 256 B
//!
//! cookie = timestamp (u32 BE, host's coarse clock in seconds)
//!        | HMAC-SHA256(secret, ip16 | port u16 BE | handshake id u128 BE | timestamp)
//! ```
//! Every message carries the client's handshake id (`session_id`, 96 random bits), so an
//! off-path attacker cannot make a cookie reply the client accepts. The padding makes a first
//! message larger than anything the host answers before the client's address is validated.

use super::{HandshakeHeader, WireError};

/// Handshake message kinds (the handshake header's `packet_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeKind {
    /// Noise msg1, no cookie.
    Msg1,
    /// Noise msg2 (host's answer).
    Msg2,
    /// Noise msg3 (client's final message).
    Msg3,
    /// A loaded host's stateless answer to msg1: repeat msg1 with this cookie.
    CookieReply,
    /// Noise msg1 repeated with the host's cookie.
    Msg1Cookie,
}

impl HandshakeKind {
    /// The kind for a `packet_id`, if it is one.
    pub fn from_packet_id(id: u64) -> Option<Self> {
        Some(match id {
            1 => Self::Msg1,
            2 => Self::Msg2,
            3 => Self::Msg3,
            4 => Self::CookieReply,
            5 => Self::Msg1Cookie,
            _ => return None,
        })
    }

    /// The `packet_id` carrying this kind.
    pub fn packet_id(self) -> u64 {
        match self {
            Self::Msg1 => 1,
            Self::Msg2 => 2,
            Self::Msg3 => 3,
            Self::CookieReply => 4,
            Self::Msg1Cookie => 5,
        }
    }
}

/// Length of the Noise XX msg1 (the initiator's ephemeral X25519 key).
pub const NOISE_MSG1_LEN: usize = 32;
/// Smallest RIFT datagram (header included, relay header excluded) carrying a first message.
pub const MSG1_MIN_LEN: usize = 256;
/// Size of a cookie reply (RIFT header + cookie).
pub const COOKIE_REPLY_LEN: usize = HandshakeHeader::LEN + Cookie::LEN;

/// A host's address-validation cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie {
    /// Host's coarse clock when the cookie was made, seconds.
    pub timestamp: u32,
    /// HMAC-SHA256 over the client's address, handshake id and `timestamp`.
    pub tag: [u8; 32],
}

impl Cookie {
    /// Encoded size.
    pub const LEN: usize = 36;

    /// Parses a cookie from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        if buf.len() < Self::LEN {
            return Err(WireError::TooShort {
                len: buf.len(),
                need: Self::LEN,
            });
        }
        let mut tag = [0u8; 32];
        tag.copy_from_slice(&buf[4..Self::LEN]);
        Ok(Self {
            timestamp: u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]),
            tag,
        })
    }

    /// Writes the cookie into `out[..36]`.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if out.len() < Self::LEN {
            return Err(WireError::BufferTooSmall {
                len: out.len(),
                need: Self::LEN,
            });
        }
        out[..4].copy_from_slice(&self.timestamp.to_be_bytes());
        out[4..Self::LEN].copy_from_slice(&self.tag);
        Ok(Self::LEN)
    }

    /// The bytes the tag authenticates: client IP (IPv4 as mapped IPv6), port, handshake id,
    /// timestamp.
    pub fn mac_input(from: std::net::SocketAddr, handshake_id: u128, timestamp: u32) -> [u8; 38] {
        let ip = match from.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        let mut m = [0u8; 38];
        m[..16].copy_from_slice(&ip.octets());
        m[16..18].copy_from_slice(&from.port().to_be_bytes());
        m[18..34].copy_from_slice(&handshake_id.to_be_bytes());
        m[34..].copy_from_slice(&timestamp.to_be_bytes());
        m
    }
}

/// A decoded first message (msg1, with or without cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstMessage<'a> {
    /// The header.
    pub header: HandshakeHeader,
    /// The cookie, for [`HandshakeKind::Msg1Cookie`].
    pub cookie: Option<Cookie>,
    /// The Noise msg1 bytes.
    pub noise: &'a [u8],
}

impl<'a> FirstMessage<'a> {
    /// Parses a first message from a whole RIFT datagram (header included): checks the header,
    /// the kind, the padding to [`MSG1_MIN_LEN`], and splits cookie and Noise message.
    pub fn decode(datagram: &'a [u8]) -> Result<Self, WireError> {
        let header = HandshakeHeader::decode(datagram)?;
        let with_cookie = match HandshakeKind::from_packet_id(header.packet_id) {
            Some(HandshakeKind::Msg1) => false,
            Some(HandshakeKind::Msg1Cookie) => true,
            _ => return Err(WireError::BadHandshake("not a first message")),
        };
        if datagram.len() < MSG1_MIN_LEN {
            return Err(WireError::TooShort {
                len: datagram.len(),
                need: MSG1_MIN_LEN,
            });
        }
        let body = &datagram[HandshakeHeader::LEN..];
        let (cookie, rest) = if with_cookie {
            (Some(Cookie::decode(body)?), &body[Cookie::LEN..])
        } else {
            (None, body)
        };
        // MSG1_MIN_LEN leaves room for both: 30 + 36 + 32 < 256.
        let (noise, padding) = rest.split_at(NOISE_MSG1_LEN);
        if padding.iter().any(|&b| b != 0) {
            return Err(WireError::BadHandshake("non-zero padding"));
        }
        Ok(Self {
            header,
            cookie,
            noise,
        })
    }

    /// Writes a padded first message for `handshake_id` into `out` (at least
    /// [`MSG1_MIN_LEN`] bytes) and returns its length.
    pub fn encode(
        handshake_id: u128,
        cookie: Option<&Cookie>,
        noise: &[u8],
        out: &mut [u8],
    ) -> Result<usize, WireError> {
        if noise.len() != NOISE_MSG1_LEN {
            return Err(WireError::BadHandshake("noise msg1 length"));
        }
        if out.len() < MSG1_MIN_LEN {
            return Err(WireError::BufferTooSmall {
                len: out.len(),
                need: MSG1_MIN_LEN,
            });
        }
        let kind = if cookie.is_some() {
            HandshakeKind::Msg1Cookie
        } else {
            HandshakeKind::Msg1
        };
        HandshakeHeader {
            session_id: handshake_id,
            packet_id: kind.packet_id(),
        }
        .encode(out)?;
        out[HandshakeHeader::LEN..MSG1_MIN_LEN].fill(0);
        let mut at = HandshakeHeader::LEN;
        if let Some(c) = cookie {
            at += c.encode(&mut out[at..])?;
        }
        out[at..at + NOISE_MSG1_LEN].copy_from_slice(noise);
        Ok(MSG1_MIN_LEN)
    }
}

/// Parses a cookie reply from a whole RIFT datagram: its header and cookie.
pub fn decode_cookie_reply(datagram: &[u8]) -> Result<(HandshakeHeader, Cookie), WireError> {
    let header = HandshakeHeader::decode(datagram)?;
    if HandshakeKind::from_packet_id(header.packet_id) != Some(HandshakeKind::CookieReply) {
        return Err(WireError::BadHandshake("not a cookie reply"));
    }
    if datagram.len() != COOKIE_REPLY_LEN {
        return Err(WireError::BadHandshake("cookie reply length"));
    }
    Ok((header, Cookie::decode(&datagram[HandshakeHeader::LEN..])?))
}

/// Writes a cookie reply into `out` and returns its length ([`COOKIE_REPLY_LEN`]).
pub fn encode_cookie_reply(
    handshake_id: u128,
    cookie: &Cookie,
    out: &mut [u8],
) -> Result<usize, WireError> {
    if out.len() < COOKIE_REPLY_LEN {
        return Err(WireError::BufferTooSmall {
            len: out.len(),
            need: COOKIE_REPLY_LEN,
        });
    }
    HandshakeHeader {
        session_id: handshake_id,
        packet_id: HandshakeKind::CookieReply.packet_id(),
    }
    .encode(out)?;
    cookie.encode(&mut out[HandshakeHeader::LEN..])?;
    Ok(COOKIE_REPLY_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_message_round_trips_with_and_without_cookie() {
        let mut out = [0u8; 300];
        let cookie = Cookie {
            timestamp: 9,
            tag: [7; 32],
        };
        for c in [None, Some(&cookie)] {
            let n = FirstMessage::encode(42, c, &[5; 32], &mut out).unwrap();
            assert_eq!(n, MSG1_MIN_LEN);
            let m = FirstMessage::decode(&out[..n]).unwrap();
            assert_eq!(m.header.session_id, 42);
            assert_eq!(m.cookie.as_ref(), c);
            assert_eq!(m.noise, &[5; 32]);
        }
        // Unpadded, or with junk in the padding: refused.
        assert!(FirstMessage::decode(&out[..MSG1_MIN_LEN - 1]).is_err());
        out[MSG1_MIN_LEN - 1] = 1;
        assert!(FirstMessage::decode(&out[..MSG1_MIN_LEN]).is_err());
    }

    #[test]
    fn cookie_reply_round_trips_and_is_smaller_than_a_first_message() {
        let mut out = [0u8; 100];
        let cookie = Cookie {
            timestamp: u32::MAX,
            tag: [1; 32],
        };
        let n = encode_cookie_reply(77, &cookie, &mut out).unwrap();
        assert_eq!(n, COOKIE_REPLY_LEN);
        const { assert!(COOKIE_REPLY_LEN < MSG1_MIN_LEN) };
        assert_eq!(
            decode_cookie_reply(&out[..n]).unwrap(),
            (
                HandshakeHeader {
                    session_id: 77,
                    packet_id: 4
                },
                cookie
            )
        );
        assert!(decode_cookie_reply(&out[..n - 1]).is_err());
        assert!(decode_cookie_reply(&out[..=n]).is_err());
    }
}
