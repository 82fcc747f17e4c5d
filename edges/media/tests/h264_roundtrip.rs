//! Real libx264 and FFmpeg decoding: synthetic frames survive encoding with their pixel codes,
//! keyframes come on request, bitrate changes take effect, MP4 and MKV recordings with an
//! Opus track pass ffprobe and decode whole.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use wavry_media::{
    AudioEncoder, AudioSource, RawFrame, Recorder, VideoDecoder, VideoEncoder, VideoFormat,
    VideoSource,
    audio::{OPUS_48K_STEREO_10MS, OpusEncoder, ToneSource},
    h264::{EncoderConfig, FfmpegDecoder, X264Encoder},
    record::FileRecorder,
    stamp,
    synthetic::SyntheticSource,
};

const FMT: VideoFormat = VideoFormat {
    width: 320,
    height: 240,
    fps: 30,
};

fn encoder(bitrate_bps: u64, keyframe_interval_ms: u32) -> X264Encoder {
    X264Encoder::new(EncoderConfig {
        format: FMT,
        bitrate_bps,
        keyframe_interval_ms,
    })
    .unwrap()
}

#[test]
fn decoded_frames_carry_exact_frame_numbers_and_timestamps() {
    let mut src = SyntheticSource::new(FMT).unwrap();
    let mut enc = encoder(1_000_000, 1000);
    let mut dec = FfmpegDecoder::h264().unwrap();
    let (mut raw, mut out) = (RawFrame::new(2, 2), RawFrame::new(2, 2));
    let mut au = Vec::new();
    let mut read = Vec::new();
    for _ in 0..90 {
        src.capture(&mut raw).unwrap();
        let info = enc
            .encode(&raw, &mut au)
            .unwrap()
            .expect("zerolatency: one AU per frame");
        assert_eq!(info.capture_us, raw.capture_us);
        assert!(
            dec.decode(&au, info.capture_us, &mut out).unwrap(),
            "one picture per AU"
        );
        assert_eq!((out.width, out.height), (320, 240));
        let s = stamp::read(&out).expect("pixel code readable after H.264");
        assert_eq!(s.capture_us, raw.capture_us, "timestamp from pixels");
        read.push(s.frame);
    }
    assert_eq!(read, (0..90).collect::<Vec<u32>>());
}

const STARVED_BPS: u64 = 150_000;

#[test]
fn code_survives_a_starved_bitrate() {
    // 150 kbit/s (VBV-capped, ~600 B a frame) for 320x240 moving video: the picture smears,
    // the 8x8 blocks must not. A fixed clock keeps the pixels, so x264's output, the same
    // run to run.
    let mut src = SyntheticSource::with_clock(FMT, || 1_764_000_000_000_000).unwrap();
    let mut enc = encoder(STARVED_BPS, 0);
    let mut dec = FfmpegDecoder::h264().unwrap();
    let (mut raw, mut out) = (RawFrame::new(2, 2), RawFrame::new(2, 2));
    let mut au = Vec::new();
    for n in 0..60u32 {
        src.capture(&mut raw).unwrap();
        enc.encode(&raw, &mut au).unwrap().unwrap();
        assert!(dec.decode(&au, 0, &mut out).unwrap());
        assert_eq!(stamp::read(&out).map(|s| s.frame), Some(n));
    }
}

#[test]
fn keyframes_come_on_request_and_only_then() {
    let mut src = SyntheticSource::new(FMT).unwrap();
    let mut enc = encoder(1_000_000, 0);
    let mut raw = RawFrame::new(2, 2);
    let mut au = Vec::new();
    let mut keys = Vec::new();
    for n in 0..40 {
        if n == 25 {
            enc.request_keyframe();
        }
        src.capture(&mut raw).unwrap();
        if enc.encode(&raw, &mut au).unwrap().unwrap().keyframe {
            keys.push(n);
        }
    }
    assert_eq!(keys, vec![0, 25]);
    // A decoder that joins at the requested keyframe decodes from there.
    let mut late = FfmpegDecoder::h264().unwrap();
    enc.request_keyframe();
    src.capture(&mut raw).unwrap();
    let info = enc.encode(&raw, &mut au).unwrap().unwrap();
    assert!(info.keyframe);
    let mut out = RawFrame::new(2, 2);
    assert!(late.decode(&au, 0, &mut out).unwrap());
    assert_eq!(stamp::read(&out).map(|s| s.frame), Some(40));
}

#[test]
fn bitrate_changes_while_running() {
    let mut src = SyntheticSource::new(FMT).unwrap();
    let mut enc = encoder(3_000_000, 0);
    let mut raw = RawFrame::new(2, 2);
    let mut au = Vec::new();
    let mut sizes = Vec::new();
    for n in 0..140 {
        if n == 60 {
            enc.set_bitrate(150_000);
        }
        src.capture(&mut raw).unwrap();
        sizes.push(enc.encode(&raw, &mut au).unwrap().unwrap().len);
    }
    assert_eq!(enc.bitrate(), 150_000);
    // Skip the first frames after each setting while rate control settles (and the VBV
    // buffer filled at the old rate drains).
    let high: usize = sizes[20..60].iter().sum();
    let low: usize = sizes[100..140].iter().sum();
    assert!(
        low * 4 < high,
        "40 frames at 3 Mbit/s took {high} B, at 150 kbit/s {low} B"
    );
}

fn ffprobe(path: &std::path::Path) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height:format=duration",
            "-of",
            "default=noprint_wrappers=1",
        ])
        .arg(path)
        .output()
        .expect("ffprobe is installed (cargo xtask test installs ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn field<'a>(probe: &'a str, key: &str) -> &'a str {
    probe
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing in {probe}"))
}

/// Records 3 s of 30 fps frames to `take.<ext>` stamped 1/30 s apart (a fake clock, so the test does not wait),
/// starting with two non-keyframes the recorder must skip.
fn record(ext: &str, tick: fn() -> u64) {
    let dir = std::env::temp_dir().join(format!("wavry-media-rec-{ext}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("take.{ext}"));
    let mut rec = FileRecorder::with_opus(&path, FMT, OPUS_48K_STEREO_10MS).unwrap();
    let mut tone = ToneSource::new(OPUS_48K_STEREO_10MS, 440.0);
    let mut opus = OpusEncoder::new(OPUS_48K_STEREO_10MS, 64_000).unwrap();
    let (mut pcm, mut packet) = (vec![0i16; 960], Vec::new());
    // Audio captured on the video's clock, 10 ms apart, from the first recorded frame on.
    let mut audio_us: Option<u64> = None;
    let mut src = SyntheticSource::with_clock(FMT, tick).unwrap();
    let mut enc = encoder(800_000, 1000);
    let mut raw = RawFrame::new(2, 2);
    let mut au = Vec::new();
    // Two frames the "receiver" got before joining: not keyframes, so not written.
    src.capture(&mut raw).unwrap();
    enc.encode(&raw, &mut au).unwrap();
    for _ in 0..2 {
        src.capture(&mut raw).unwrap();
        let info = enc.encode(&raw, &mut au).unwrap().unwrap();
        assert!(!info.keyframe);
        rec.write_video(&au, info.keyframe, info.capture_us)
            .unwrap();
    }
    enc.request_keyframe();
    for _ in 0..90 {
        src.capture(&mut raw).unwrap();
        let info = enc.encode(&raw, &mut au).unwrap().unwrap();
        rec.write_video(&au, info.keyframe, info.capture_us)
            .unwrap();
        let a = audio_us.get_or_insert(info.capture_us);
        while *a < info.capture_us + 33_333 {
            tone.read(&mut pcm).unwrap();
            opus.encode(&pcm, &mut packet).unwrap();
            rec.write_audio(&packet, *a).unwrap();
            *a += 10_000;
        }
    }
    let summary = rec.finish().unwrap();
    assert_eq!(summary.frames, 90);
    assert_eq!(summary.audio_packets, 300);
    let audio = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=codec_name,sample_rate,channels",
            "-of",
            "default=noprint_wrappers=1",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let audio = String::from_utf8(audio.stdout).unwrap();
    assert_eq!(field(&audio, "codec_name"), "opus", "{audio}");
    assert_eq!(field(&audio, "sample_rate"), "48000", "{audio}");
    assert_eq!(field(&audio, "channels"), "2", "{audio}");
    let probe = ffprobe(&path);
    assert_eq!(field(&probe, "codec_name"), "h264");
    assert_eq!(field(&probe, "width"), "320");
    assert_eq!(field(&probe, "height"), "240");
    let duration: f64 = field(&probe, "duration").parse().unwrap();
    assert!(
        (duration - 3.0).abs() <= 0.15,
        "duration {duration} s, expected 3 s ± 5 %"
    );
    // Every recorded frame decodes.
    let decoded = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "default=noprint_wrappers=1",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let decoded = String::from_utf8(decoded.stdout).unwrap();
    assert_eq!(field(&decoded, "nb_read_frames"), "90", "{decoded}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fake 30 fps capture clock per test (tests run in parallel).
macro_rules! clock {
    () => {{
        static CLOCK: AtomicU64 = AtomicU64::new(0);
        fn tick() -> u64 {
            CLOCK.fetch_add(33_333, Ordering::Relaxed) + 1_000_000
        }
        tick
    }};
}

#[test]
fn mp4_recording_passes_ffprobe() {
    record("mp4", clock!());
}

#[test]
fn mkv_recording_passes_ffprobe() {
    record("mkv", clock!());
}

#[test]
fn recorder_refuses_containers_it_cannot_write_with_a_reason() {
    for (name, why) in [("take.avi", ".mp4 or .mkv"), ("take", ".mp4 or .mkv")] {
        let p = std::env::temp_dir().join(format!("wavry-media-{name}"));
        let err = FileRecorder::create(&p, FMT).unwrap_err().to_string();
        assert!(err.contains(why), "{name}: {err}");
        assert!(!p.exists(), "{name}: nothing created");
    }
}

/// A fuzz finding: this access unit decodes to a picture of odd size, which the packed 4:2:0
/// layout cannot hold. It must come back as an error (or no picture), never a panic.
#[test]
fn a_picture_of_odd_size_is_refused_not_a_panic() {
    let input =
        include_bytes!("../../../fuzz/corpus/media_decode/seed-regression-odd-size-picture");
    let (_, body) = input.split_first().unwrap();
    let mut dec = FfmpegDecoder::h264().unwrap();
    let mut out = RawFrame::new(2, 2);
    for _ in 0..2 {
        // An error or no picture is fine; a picture must have the promised shape.
        if let Ok(true) = dec.decode(body, 1, &mut out) {
            assert_eq!(out.data.len(), RawFrame::len_for(out.width, out.height));
            assert!(out.width % 2 == 0 && out.height % 2 == 0 && out.width > 0);
        }
    }
}
