//! STUN Binding (RFC 8489, RFC 5389 on the wire) for learning a server-reflexive address, the
//! first step of UDP hole punching: a peer sends [`binding_request`] from its RIFT socket to a
//! STUN server (the gateway answers them), and [`parse_binding_success`] reads the address the
//! server saw. [`answer_binding_request`] is the server side.
//!
//! All parsing and writing goes through the `stun-types` crate; this module only decides which
//! messages are acceptable. Unlike the rest of [`crate::wire`], it returns owned messages
//! (`Vec<u8>`): STUN runs a few times per session, never on the media path.
//!
//! STUN shares the RIFT socket: [`is_stun`] tells the two apart from the first bytes (RIFT
//! datagrams start with `R`, relay datagrams with `W`, whose top bits are `01`; STUN's are
//! `00`, followed by the magic cookie at bytes 4..8).

use std::net::SocketAddr;

use stun_types::{
    attribute::{AttributeType, MappedSocketAddr, XorMappedAddress},
    message::{
        BINDING, Message, MessageClass, MessageHeader, MessageType, MessageWrite, MessageWriteExt,
        MessageWriteVec, StunParseError,
    },
};

/// A STUN transaction id (12 bytes).
pub type TransactionId = [u8; 12];

/// Length of a STUN message header; a Binding request without attributes is exactly this long.
pub const HEADER_LEN: usize = MessageHeader::LENGTH;

/// MAPPED-ADDRESS (RFC 8489 §14.1), which `stun-types` parses but does not name.
const MAPPED_ADDRESS: AttributeType = AttributeType::new(0x0001);

/// Why a datagram is not the STUN message expected.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StunError {
    /// Not a STUN message at all (see [`is_stun`]).
    #[error("not a STUN message")]
    NotStun,
    /// A STUN header, but the message is malformed (length, attributes, FINGERPRINT).
    #[error("malformed STUN message: {0}")]
    Malformed(&'static str),
    /// A well-formed STUN message that is not a Binding success response.
    #[error("not a STUN Binding success response")]
    NotBindingSuccess,
    /// A Binding success response for another transaction (stale, or not ours).
    #[error("STUN response for another transaction")]
    WrongTransaction,
    /// A Binding success response without a usable XOR-MAPPED-ADDRESS or MAPPED-ADDRESS.
    #[error("STUN Binding response without a (XOR-)MAPPED-ADDRESS")]
    NoMappedAddress,
    /// A well-formed STUN message that is not a Binding request (a server ignores it).
    #[error("not a STUN Binding request")]
    NotBindingRequest,
    /// The response could not be written (not expected to happen).
    #[error("cannot encode the STUN response")]
    Encode,
}

/// Cheap test used to demultiplex STUN from RIFT on one socket: the first two bits are 0 and
/// bytes 4..8 are the magic cookie 0x2112A442, length ≥ 20.
///
/// Says nothing about the rest of the message: the parsers below check it.
pub fn is_stun(buf: &[u8]) -> bool {
    MessageHeader::from_bytes(buf).is_ok()
}

/// A Binding request with this transaction id (20 bytes: a header, no attributes).
///
/// Draw `txid` at random for each request (RFC 8489 §6: 96 bits from a CSPRNG) and keep it to
/// match the answer with [`parse_binding_success`]; a retransmission reuses it.
pub fn binding_request(txid: TransactionId) -> Vec<u8> {
    Message::builder(
        MessageType::from_class_method(MessageClass::Request, BINDING),
        to_stun_txid(&txid),
        MessageWriteVec::with_capacity(HEADER_LEN),
    )
    .finish()
}

/// The reflexive address in a Binding success response for `txid` (XOR-MAPPED-ADDRESS
/// preferred, MAPPED-ADDRESS accepted).
///
/// A FINGERPRINT, when present, must match; MESSAGE-INTEGRITY is not checked (Binding
/// requests to the gateway carry no credentials).
pub fn parse_binding_success(buf: &[u8], txid: &TransactionId) -> Result<SocketAddr, StunError> {
    let msg = decode(buf)?;
    if !(msg.has_class(MessageClass::Success) && msg.has_method(BINDING)) {
        return Err(StunError::NotBindingSuccess);
    }
    let id = msg.transaction_id();
    if id != to_stun_txid(txid) {
        return Err(StunError::WrongTransaction);
    }
    if let Ok(xor) = msg.attribute::<XorMappedAddress>() {
        return Ok(xor.addr(id));
    }
    if let Some(raw) = msg.raw_attribute(MAPPED_ADDRESS) {
        if let Ok(mapped) = MappedSocketAddr::from_raw(&raw) {
            return Ok(mapped.addr());
        }
    }
    Err(StunError::NoMappedAddress)
}

/// Server side: the Binding success response telling `from` its address (XOR-MAPPED-ADDRESS),
/// for a Binding request; an error for anything else (which a server then ignores).
///
/// The answer is 32 bytes for an IPv4 `from`, 44 for IPv6. Attributes of the request are not
/// interpreted (no credentials, no unknown-attribute errors): every well-formed Binding request
/// gets the same kind of answer.
pub fn answer_binding_request(buf: &[u8], from: SocketAddr) -> Result<Vec<u8>, StunError> {
    let msg = decode(buf)?;
    if !(msg.has_class(MessageClass::Request) && msg.has_method(BINDING)) {
        return Err(StunError::NotBindingRequest);
    }
    let mapped = XorMappedAddress::new(from, msg.transaction_id());
    let mut out = Message::builder_success(
        &msg,
        MessageWriteVec::with_capacity(HEADER_LEN + 4 + usize::from(mapped_len(from))),
    );
    out.add_attribute(&mapped).map_err(|_| StunError::Encode)?;
    Ok(out.finish())
}

/// Parses a whole datagram as one STUN message: the header's length field must account for
/// every byte after the header (no trailing data), and a FINGERPRINT must match.
fn decode(buf: &[u8]) -> Result<Message<'_>, StunError> {
    // Fails exactly when `is_stun` is false (short, top bits set, no magic cookie).
    let header = MessageHeader::from_bytes(buf).map_err(|_| StunError::NotStun)?;
    if HEADER_LEN + usize::from(header.data_length()) != buf.len() {
        return Err(StunError::Malformed(
            "length field does not match the datagram",
        ));
    }
    Message::from_bytes(buf).map_err(parse_error)
}

fn parse_error(e: StunParseError) -> StunError {
    StunError::Malformed(match e {
        StunParseError::NotStun => return StunError::NotStun,
        StunParseError::Truncated { .. } => "truncated",
        StunParseError::TooLarge { .. } => "attribute too large",
        StunParseError::FingerprintMismatch => "FINGERPRINT does not match",
        StunParseError::AttributeAfterIntegrity(_)
        | StunParseError::AttributeAfterFingerprint(_) => {
            "attribute after MESSAGE-INTEGRITY or FINGERPRINT"
        }
        _ => "invalid attribute",
    })
}

fn to_stun_txid(txid: &TransactionId) -> stun_types::message::TransactionId {
    let mut wide = [0u8; 16];
    wide[4..].copy_from_slice(txid);
    u128::from_be_bytes(wide).into()
}

/// Value length of a (XOR-)MAPPED-ADDRESS for `addr`.
fn mapped_len(addr: SocketAddr) -> u16 {
    MappedSocketAddr::new(addr).length()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{HandshakeHeader, TransportHeader};
    use stun_types::message::{MessageIntegrityCredentials, ShortTermCredentials};

    const TXID: TransactionId = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    /// RFC 5769 §2.2 "Sample IPv4 Response" (password `VOkJxbRl1RmTxUk/WvJxBt`).
    const RFC5769_IPV4_RESPONSE: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, // Binding success, length 60
        0x21, 0x12, 0xa4, 0x42, // magic cookie
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, // txid
        0x80, 0x22, 0x00, 0x0b, // SOFTWARE, 11 bytes
        0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72,
        0x20, // "test vector "
        0x00, 0x20, 0x00, 0x08, // XOR-MAPPED-ADDRESS
        0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43, // IPv4, port and address XOR-ed
        0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY (HMAC-SHA1)
        0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba,
        0x53, 0xf0, 0x6b, 0xe7, 0xd7, //
        0x80, 0x28, 0x00, 0x04, // FINGERPRINT
        0xc0, 0x7d, 0x4c, 0x96,
    ];
    const RFC5769_TXID: TransactionId = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    fn round_trip(from: SocketAddr) {
        let req = binding_request(TXID);
        assert_eq!(req.len(), HEADER_LEN);
        assert!(is_stun(&req));
        let answer = answer_binding_request(&req, from).unwrap();
        assert!(is_stun(&answer));
        assert_eq!(answer.len(), HEADER_LEN + 4 + usize::from(mapped_len(from)));
        assert_eq!(parse_binding_success(&answer, &TXID), Ok(from));
        // The answer is not a request, and the request is not an answer.
        assert_eq!(
            answer_binding_request(&answer, from),
            Err(StunError::NotBindingRequest)
        );
        assert_eq!(
            parse_binding_success(&req, &TXID),
            Err(StunError::NotBindingSuccess)
        );
    }

    #[test]
    fn stun_round_trip_ipv4() {
        round_trip("203.0.113.7:40000".parse().unwrap());
    }

    #[test]
    fn stun_round_trip_ipv6() {
        round_trip("[2001:db8::1:2]:51234".parse().unwrap());
    }

    #[test]
    fn stun_wrong_transaction_rejected() {
        let from: SocketAddr = "198.51.100.1:9".parse().unwrap();
        let answer = answer_binding_request(&binding_request(TXID), from).unwrap();
        let mut other = TXID;
        other[11] ^= 1;
        assert_eq!(
            parse_binding_success(&answer, &other),
            Err(StunError::WrongTransaction)
        );
    }

    #[test]
    fn stun_rfc5769_ipv4_response() {
        let buf = &RFC5769_IPV4_RESPONSE;
        // The bytes are the RFC's: their HMAC-SHA1 under the RFC's password and their CRC-32
        // FINGERPRINT (checked by every parse) both match.
        let msg = Message::from_bytes(buf).unwrap();
        let creds = MessageIntegrityCredentials::ShortTerm(ShortTermCredentials::new(
            "VOkJxbRl1RmTxUk/WvJxBt".to_owned(),
        ));
        assert!(msg.validate_integrity(&creds).is_ok());
        assert!(is_stun(buf));
        assert_eq!(
            parse_binding_success(buf, &RFC5769_TXID),
            Ok("192.0.2.1:32853".parse().unwrap())
        );
        // A flipped bit in the body breaks the FINGERPRINT.
        let mut bad = *buf;
        bad[30] ^= 1;
        assert_eq!(
            parse_binding_success(&bad, &RFC5769_TXID),
            Err(StunError::Malformed("FINGERPRINT does not match"))
        );
    }

    #[test]
    fn stun_mapped_address_accepted() {
        let addr: SocketAddr = "192.0.2.44:6000".parse().unwrap();
        let req = binding_request(TXID);
        let req = Message::from_bytes(&req).unwrap();
        let mut b = Message::builder_success(&req, MessageWriteVec::new());
        let mapped = MappedSocketAddr::new(addr);
        let raw = mapped.to_raw(MAPPED_ADDRESS);
        b.add_attribute(&raw).unwrap();
        assert_eq!(parse_binding_success(&b.finish(), &TXID), Ok(addr));
        // No address at all.
        let empty = Message::builder_success(&req, MessageWriteVec::new()).finish();
        assert_eq!(
            parse_binding_success(&empty, &TXID),
            Err(StunError::NoMappedAddress)
        );
    }

    #[test]
    fn stun_error_response_is_not_success() {
        let req = binding_request(TXID);
        let req = Message::from_bytes(&req).unwrap();
        let err = Message::builder_error(&req, MessageWriteVec::new()).finish();
        assert_eq!(
            parse_binding_success(&err, &TXID),
            Err(StunError::NotBindingSuccess)
        );
        assert_eq!(
            answer_binding_request(&err, "127.0.0.1:1".parse().unwrap()),
            Err(StunError::NotBindingRequest)
        );
    }

    #[test]
    fn stun_rift_and_junk_are_not_stun() {
        let mut hs = [0u8; HandshakeHeader::LEN];
        HandshakeHeader {
            session_id: 0x2112_a442,
            packet_id: 1,
        }
        .encode(&mut hs)
        .unwrap();
        let mut tr = [0u8; 64];
        TransportHeader {
            alias: 0x2112_a442,
            packet_id: 7,
            key_phase: false,
        }
        .encode(&mut tr)
        .unwrap();
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for buf in [
            &hs[..],
            &tr[..],
            b"RIFT",
            b"",
            &[0u8; 19],
            &[0u8; 20],
            &[0xffu8; 40],
        ] {
            assert!(!is_stun(buf), "{buf:?}");
            assert_eq!(answer_binding_request(buf, from), Err(StunError::NotStun));
            assert_eq!(parse_binding_success(buf, &TXID), Err(StunError::NotStun));
        }
        // A request cut short of its header is not STUN either.
        let req = binding_request(TXID);
        assert!(!is_stun(&req[..19]));
    }

    #[test]
    fn stun_length_must_match_datagram() {
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut long = binding_request(TXID);
        long.extend_from_slice(&[0, 0, 0, 0]);
        assert!(is_stun(&long));
        assert!(matches!(
            answer_binding_request(&long, from),
            Err(StunError::Malformed(_))
        ));
        let answer = answer_binding_request(&binding_request(TXID), from).unwrap();
        assert!(matches!(
            parse_binding_success(&answer[..answer.len() - 4], &TXID),
            Err(StunError::Malformed(_))
        ));
    }
}
