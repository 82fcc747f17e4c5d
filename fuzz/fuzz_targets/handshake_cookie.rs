//! Wavry's handshake extension: first messages (padded, with or without a cookie) and cookie
//! replies. Decoding never panics; what decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wavry_rift::wire::{
    COOKIE_REPLY_LEN, Cookie, FirstMessage, MSG1_MIN_LEN, decode_cookie_reply, encode_cookie_reply,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = FirstMessage::decode(data) {
        let mut out = [0u8; MSG1_MIN_LEN];
        let n = FirstMessage::encode(m.header.session_id, m.cookie.as_ref(), m.noise, &mut out)
            .expect("a decoded first message re-encodes");
        assert_eq!(&out[..n], &data[..n]);
    }
    if let Ok((h, c)) = decode_cookie_reply(data) {
        let mut out = [0u8; COOKIE_REPLY_LEN];
        encode_cookie_reply(h.session_id, &c, &mut out).expect("re-encodes");
        assert_eq!(&out[..], data);
    }
    let _ = Cookie::decode(data);
});
