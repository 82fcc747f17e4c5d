//! Network bytes into the media decoders: the first byte picks FFmpeg's H.264 decoder (even)
//! or the Opus decoder (odd) as `wavry-client` drives them; the rest is one access unit or
//! packet. Corrupt input must come back as an error (or no picture), never a panic, and a
//! picture must have the shape the wrapper promises.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wavry_media::{
    AudioDecoder, RawFrame, VideoDecoder,
    audio::{OPUS_48K_STEREO_10MS, OpusDecoder},
    h264::FfmpegDecoder,
};

fuzz_target!(|data: &[u8]| {
    wavry_media::init_quiet().expect("FFmpeg initialises");
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let mut dec = FfmpegDecoder::h264().expect("H.264 decoder opens");
        let mut out = RawFrame::new(2, 2);
        // Twice: a second access unit may complete a picture the first began.
        for _ in 0..2 {
            if let Ok(true) = dec.decode(body, 1, &mut out) {
                assert_eq!(out.data.len(), RawFrame::len_for(out.width, out.height));
                assert_eq!(out.capture_us, 1);
                let _ = wavry_media::stamp::read(&out);
            }
        }
    } else {
        let mut dec = OpusDecoder::new(OPUS_48K_STEREO_10MS).expect("Opus decoder opens");
        let mut pcm = vec![0i16; 5760 * 2];
        if let Ok(n) = dec.decode(body, &mut pcm) {
            assert!(n <= 5760);
        }
    }
});
