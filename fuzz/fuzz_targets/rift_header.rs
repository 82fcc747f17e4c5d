//! RIFT physical header detection and decoding; a decoded header re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wavry_rift::wire::Header;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::decode(data) {
        let mut out = [0u8; 30];
        let n = h.encode(&mut out).expect("a decoded header re-encodes");
        assert_eq!(&out[..n], &data[..n]);
    }
});
