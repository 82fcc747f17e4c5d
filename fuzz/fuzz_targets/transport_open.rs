//! Transport datagrams through the secure channel: never panics, never opens without the key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wavry_rift::{
    crypto::{PacketKey, SecureChannel},
    identity::WavryId,
};

fuzz_target!(|data: &[u8]| {
    let mut ch = SecureChannel::new(
        PacketKey::new(&[1; 32]),
        PacketKey::new(&[2; 32]),
        WavryId::from_bytes([0; 32]),
        [0; 32],
    );
    let mut buf = data.to_vec();
    assert!(ch.open(&mut buf).is_err());
});
