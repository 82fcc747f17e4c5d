//! Hot-path decoders of plaintext messages: video/FEC/audio/file chunks (`media::decode`, `message_len`)
//! and transport feedback (`feedback::decode`). A decoded video or file chunk re-encodes to
//! bytes that decode to the same chunk.
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
    if let Ok(media::MediaRef::File(f)) = media::decode(data) {
        let mut out = Vec::new();
        assert_eq!(f.append_to(&mut out), f.encoded_len());
        assert_eq!(media::decode(&out), Ok(media::MediaRef::File(f)));
    }
});
