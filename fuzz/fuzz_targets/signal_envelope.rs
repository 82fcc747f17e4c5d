//! The signaling envelope as master and gateway receive it on `/ws`: decoding never panics,
//! and a message that decodes re-encodes to something that decodes to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wavry_signal::Envelope;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(msg) = Envelope::decode(text) {
        let again = Envelope::decode(&Envelope::encode(&msg)).expect("re-encoded message decodes");
        assert_eq!(again, msg);
    }
});
