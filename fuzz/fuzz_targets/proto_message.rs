//! The protobuf logical plane: decoding never panics, and a decoded message round-trips.
//! Compared as bytes: float fields may hold NaN, which never equals itself structurally.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use wavry_rift::proto;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = proto::decode_message(data) {
        let bytes = m.encode_to_vec();
        let again = proto::decode_message(&bytes).expect("re-encoded message decodes");
        assert_eq!(again.encode_to_vec(), bytes);
    }
});
