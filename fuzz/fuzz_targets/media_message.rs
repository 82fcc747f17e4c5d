//! Hot-path decoders of plaintext messages: video/FEC/audio (`media::decode`, `message_len`)
//! and transport feedback (`feedback::decode`). A decoded video chunk re-encodes to the same
//! bytes when the input was canonical.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wavry_rift::{feedback, media};

fuzz_target!(|data: &[u8]| {
    let _ = media::message_len(data);
    if let Some(fb) = feedback::decode(data) {
        let _ = fb.frame_losses.iter().count();
        let _ = fb.acked_reliable.iter().count();
    }
    if let Ok(media::MediaRef::Video(v)) = media::decode(data) {
        let mut out = vec![0u8; v.encoded_len()];
        v.encode(&mut out).expect("re-encodes");
        assert_eq!(media::decode(&out), Ok(media::MediaRef::Video(v)));
    }
});
