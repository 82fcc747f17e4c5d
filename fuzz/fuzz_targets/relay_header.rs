//! Relay header and its control payloads (LEASE_PRESENT, LEASE_ACK, LEASE_REJECT).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wavry_rift::wire::{LeaseAck, LeasePresent, RejectReason, RelayHeader, RelayType};

fuzz_target!(|data: &[u8]| {
    let _ = RelayHeader::looks_like_relay(data);
    if let Ok(h) = RelayHeader::decode(data) {
        let mut out = [0u8; 20];
        h.encode(&mut out).expect("a decoded relay header re-encodes");
        assert_eq!(&out[..], &data[..20]);
        let payload = &data[20..];
        match h.kind {
            RelayType::LeasePresent => {
                if let Ok(p) = LeasePresent::decode(payload) {
                    let mut buf = vec![0u8; payload.len()];
                    let n = p.encode(&mut buf).expect("re-encodes");
                    assert_eq!(&buf[..n], &payload[..n]);
                }
            }
            RelayType::LeaseAck => {
                let _ = LeaseAck::decode(payload);
            }
            RelayType::LeaseReject => {
                let _ = RejectReason::decode(payload);
            }
            RelayType::LeaseRenew | RelayType::Forward => {}
        }
    }
});
