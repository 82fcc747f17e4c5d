//! Lease tokens as a relay receives them: token parsing, signature check, claim checks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wavry_rift::lease::{LeaseRole, LeaseVerifier, verify_raw};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let pk = [0x1e; 32];
    let _ = verify_raw(&pk, token, b"", b"");
    let v = LeaseVerifier::new(pk, Some("k1".into()), "relay");
    let now = time::OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time");
    assert!(v.verify(token, now, uuid::Uuid::from_bytes([1; 16]), LeaseRole::Client).is_err());
});
