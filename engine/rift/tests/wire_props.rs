//! Property tests: encode∘decode is the identity for every header layout, and no input makes
//! any decoder of network bytes panic.

use std::sync::Arc;

use proptest::prelude::*;
use wavry_rift::{
    crypto::{AuthPayload, Handshake, HandshakeRole, PacketKey, PeerPolicy, SecureChannel},
    identity::{IdentityKey, WavryId},
    lease::verify_raw,
    proto,
    wire::{
        HandshakeHeader, Header, LeaseAck, LeasePresent, PeerRole, PresentBinding, RejectReason,
        RelayHeader, RelayType, TransportHeader,
    },
};

fn relay_type() -> impl Strategy<Value = RelayType> {
    prop_oneof![
        Just(RelayType::LeasePresent),
        Just(RelayType::LeaseAck),
        Just(RelayType::LeaseReject),
        Just(RelayType::LeaseRenew),
        Just(RelayType::Forward),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn handshake_header_round_trips(sid in 0u128..=HandshakeHeader::MAX_SESSION_ID, pid: u64, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let h = HandshakeHeader { session_id: sid, packet_id: pid };
        let mut buf = vec![0u8; 30 + tail.len()];
        prop_assert_eq!(h.encode(&mut buf).unwrap(), 30);
        buf[30..].copy_from_slice(&tail);
        prop_assert_eq!(HandshakeHeader::decode(&buf).unwrap(), h);
        prop_assert_eq!(Header::decode(&buf).unwrap(), Header::Handshake(h));
    }

    #[test]
    fn transport_header_round_trips(alias in 1u32.., pid in 0..=TransportHeader::MAX_PACKET_ID, key_phase: bool, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let h = TransportHeader { alias, packet_id: pid, key_phase };
        let mut buf = vec![0u8; 18 + tail.len()];
        prop_assert_eq!(h.encode(&mut buf).unwrap(), 18);
        buf[18..].copy_from_slice(&tail);
        prop_assert_eq!(TransportHeader::decode(&buf).unwrap(), h);
        prop_assert_eq!(Header::decode(&buf).unwrap(), Header::Transport(h));
    }

    #[test]
    fn relay_header_round_trips(kind in relay_type(), flags: u8, sid in any::<[u8; 16]>().prop_filter("non-nil", |s| *s != [0; 16])) {
        let h = RelayHeader { kind, flags, session_id: sid };
        let mut buf = [0u8; 20];
        h.encode(&mut buf).unwrap();
        prop_assert_eq!(RelayHeader::decode(&buf).unwrap(), h);
    }

    #[test]
    fn relay_payloads_round_trip(server: bool, token in "[ -~]{1,300}", exp: u64, soft: u32, hard: u32, code: u16, bound: Option<(u64, u8)>) {
        let role = if server { PeerRole::Server } else { PeerRole::Client };
        let binding = bound.map(|(timestamp_ms, b)| PresentBinding { timestamp_ms, signature: [b; 64] });
        let p = LeasePresent { role, token: &token, binding };
        let mut buf = vec![0u8; 3 + token.len() + if binding.is_some() { PresentBinding::LEN } else { 0 }];
        p.encode(&mut buf).unwrap();
        prop_assert_eq!(LeasePresent::decode(&buf).unwrap(), p);
        let a = LeaseAck { expires_unix_ms: exp, soft_limit_kbps: soft, hard_limit_kbps: hard };
        let mut b = [0u8; 16];
        a.encode(&mut b).unwrap();
        prop_assert_eq!(LeaseAck::decode(&b).unwrap(), a);
        let r = RejectReason::from_code(code);
        let mut c = [0u8; 2];
        r.encode(&mut c).unwrap();
        prop_assert_eq!(RejectReason::decode(&c).unwrap().code(), code);
    }

    #[test]
    fn no_decoder_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let _ = Header::decode(&bytes);
        let _ = RelayHeader::decode(&bytes);
        let _ = LeasePresent::decode(&bytes);
        let _ = LeaseAck::decode(&bytes);
        let _ = RejectReason::decode(&bytes);
        let _ = AuthPayload::decode(&bytes);
        let _ = proto::decode_message(&bytes);
        let _ = verify_raw(&[1; 32], &String::from_utf8_lossy(&bytes), b"", b"");
        let mut ch = SecureChannel::new(PacketKey::new(&[1; 32]), PacketKey::new(&[2; 32]), WavryId::from_bytes([0; 32]), [0; 32]);
        let mut b = bytes.clone();
        prop_assert!(ch.open(&mut b).is_err());
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn handshake_rejects_arbitrary_bytes_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let key = Arc::new(IdentityKey::from_seed([5; 32]).unwrap());
        let mut r = Handshake::new(HandshakeRole::Responder, key.clone(), PeerPolicy::AnyAuthenticated).unwrap();
        let mut out = [0u8; 256];
        // msg1 is unauthenticated (32 bytes of ephemeral key); anything else must be refused.
        let res = r.step(Some(&bytes), &mut out);
        if bytes.len() != 32 {
            prop_assert!(res.is_err());
        }
        let mut i = Handshake::new(HandshakeRole::Initiator, key, PeerPolicy::AnyAuthenticated).unwrap();
        i.step(None, &mut out).unwrap();
        prop_assert!(i.step(Some(&bytes), &mut out).is_err());
    }
}
