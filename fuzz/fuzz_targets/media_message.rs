//! Hot-path decoders of plaintext messages: video/FEC/audio/file chunks (`media::decode`,
//! `message_len`, `unpadded`) and transport feedback (`feedback::decode`). What `unpadded`
//! cuts is a suffix starting with a zero byte; `decode`'s fast path for video chunks agrees
//! with the general field walk. A decoded video or file chunk re-encodes to
//! bytes that decode to the same chunk.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wavry_rift::{feedback, media};

fuzz_target!(|data: &[u8]| {
    let _ = media::message_len(data);
    let message = media::unpadded(data);
    assert!(data.starts_with(message));
    if message.len() < data.len() {
        assert_eq!(data[message.len()], 0);
    }
    if let Some(fb) = feedback::decode(data) {
        let _ = fb.frame_losses.iter().count();
        let _ = fb.acked_reliable.iter().count();
    }
    // The fast path for chunks as Wavry sends them agrees with the general field walk.
    assert_eq!(media::decode(data), media::decode_general(data));
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
