//! The host's media loops: capture, encode, send and record a frame per interval; audio.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wavry_media::{
    AudioEncoder, AudioSource, RawFrame, Recorder, VideoEncoder, VideoSource,
    audio::{OPUS_48K_STEREO_10MS, OpusEncoder, ToneSource},
    h264::X264Encoder,
    record::FileRecorder,
};
use wavry_net::HostDriver;
use wavry_rift::session::FrameMeta;

use super::{MAX_CLIENTS, Shared};
use wavry_runtime::lock;

/// Frames per second to capture: the source's rate, or DELTA's lower step for the slowest
/// session (`target` 0: no target yet).
fn stream_fps(source: u32, target: u32) -> u32 {
    if target == 0 {
        source
    } else {
        target.clamp(1, source.max(1))
    }
}

/// The clock of a capture loop: one tick per interval; a loop that fell more than a tick
/// behind restarts the clock rather than catching up in a burst.
struct Ticker {
    next: Instant,
    interval: Duration,
}

impl Ticker {
    fn new(interval: Duration) -> Self {
        Self {
            next: Instant::now(),
            interval,
        }
    }

    /// Sleeps until the next tick.
    fn wait(&mut self) {
        if let Some(d) = self.next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        self.next += self.interval;
        if self.next < Instant::now() {
            self.next = Instant::now() + self.interval;
        }
    }

    /// A new interval, from the next tick on.
    fn set_interval(&mut self, interval: Duration) {
        self.next += interval.saturating_sub(self.interval);
        self.interval = interval;
    }
}

/// The connected sessions into `out`.
fn sessions(shared: &Shared, out: &mut Vec<wavry_rift::session::SessionHandle>) {
    out.clear();
    out.extend(lock(&shared.sessions).iter().copied());
}

/// Captures, encodes and queues a frame per 1/fps for every connected session; records.
pub(super) fn media_loop(
    host: &HostDriver,
    shared: &Shared,
    mut source: Box<dyn VideoSource>,
    mut encoder: X264Encoder,
    mut rec_encoder: Option<X264Encoder>,
    recorder: &Mutex<Option<FileRecorder>>,
) -> anyhow::Result<()> {
    let mut rec_buf = Vec::new();
    let source_fps = source.format().fps;
    let mut fps = source_fps;
    let mut raw = RawFrame::new(source.format().width, source.format().height);
    let mut targets = Vec::with_capacity(MAX_CLIENTS);
    let mut ticker = Ticker::new(Duration::from_secs_f64(1.0 / f64::from(fps)));
    let mut result = Ok(());
    while !shared.stop.load(Ordering::Acquire) {
        let want = stream_fps(source_fps, shared.target_fps.load(Ordering::Acquire));
        if want != fps {
            println!("wavry-server: frame rate {fps} -> {want} fps (congestion control)");
            fps = want;
            ticker.set_interval(Duration::from_secs_f64(1.0 / f64::from(fps)));
        }
        ticker.wait();
        sessions(shared, &mut targets);
        if targets.is_empty() && lock(recorder).is_none() {
            continue;
        }
        if let Err(e) = send_one(
            host,
            shared,
            source.as_mut(),
            &mut encoder,
            Recording {
                file: recorder,
                reencode: rec_encoder.as_mut().map(|e| (e, &mut rec_buf)),
            },
            &mut raw,
            &targets,
            ticker.interval,
        ) {
            result = Err(e);
            break;
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn send_one(
    host: &HostDriver,
    shared: &Shared,
    source: &mut dyn VideoSource,
    encoder: &mut X264Encoder,
    recording: Recording<'_>,
    raw: &mut RawFrame,
    targets: &[wavry_rift::session::SessionHandle],
    interval: Duration,
) -> anyhow::Result<()> {
    if shared.keyframe.swap(false, Ordering::AcqRel) {
        encoder.request_keyframe();
    }
    let bps = shared.target_bps.load(Ordering::Acquire);
    if bps > 0 && bps != encoder.bitrate() {
        encoder.set_bitrate(bps);
    }
    let t0 = Instant::now();
    source.capture(raw)?;
    let t1 = Instant::now();
    let mut buf = host.take_buffer();
    let encoded = encoder.encode(raw, &mut buf)?;
    let t2 = Instant::now();
    let passes_through = recording.passes_through();
    if let Some((rec_encoder, rec_buf)) = recording.reencode {
        if let Some(info) = rec_encoder.encode(raw, rec_buf)? {
            if let Some(r) = lock(recording.file).as_mut() {
                r.write_video(rec_buf, info.keyframe, info.capture_us)?;
            }
        }
    }
    let Some(info) = encoded else {
        return Ok(());
    };
    if passes_through {
        if let Some(r) = lock(recording.file).as_mut() {
            r.write_video(&buf, info.keyframe, info.capture_us)?;
        }
    }
    let meta = FrameMeta {
        timestamp_us: info.capture_us,
        keyframe: info.keyframe,
        capture_us: (t1 - t0).as_micros() as u32,
        encode_us: (t2 - t1).as_micros() as u32,
    };
    let Some((&last, rest)) = targets.split_last() else {
        return Ok(());
    };
    for &h in rest {
        let mut copy = host.take_buffer();
        copy.extend_from_slice(&buf);
        queue(host, shared, h, copy, meta, interval)?;
    }
    queue(host, shared, last, buf, meta, interval)
}

/// Where a captured frame goes besides the stream.
struct Recording<'a> {
    /// The recording, if `--record`.
    file: &'a Mutex<Option<FileRecorder>>,
    /// The recording's own encoder and its output buffer (`--record-quality high|low`).
    reencode: Option<(&'a mut X264Encoder, &'a mut Vec<u8>)>,
}

impl Recording<'_> {
    fn passes_through(&self) -> bool {
        self.reencode.is_none()
    }
}

fn queue(
    host: &HostDriver,
    shared: &Shared,
    h: wavry_rift::session::SessionHandle,
    data: Vec<u8>,
    meta: FrameMeta,
    interval: Duration,
) -> anyhow::Result<()> {
    match host.try_send_frame(h, data, meta, interval)? {
        None => {
            shared.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
        Some(_) => {
            // The queue is full: this frame is lost to the stream, so the next one must not
            // reference it.
            shared.frames_skipped.fetch_add(1, Ordering::Relaxed);
            shared.keyframe.store(true, Ordering::Release);
        }
    }
    Ok(())
}

/// Sends a 440 Hz tone as 10 ms Opus packets to every connected session (and the recording).
pub(super) fn audio_loop(
    host: &HostDriver,
    shared: &Shared,
    recorder: &Mutex<Option<FileRecorder>>,
) -> anyhow::Result<()> {
    let fmt = OPUS_48K_STEREO_10MS;
    let mut source = ToneSource::new(fmt, 440.0);
    let mut encoder = OpusEncoder::new(fmt, 64_000)?;
    let interval = Duration::from_micros(
        u64::from(fmt.frame_samples) * 1_000_000 / u64::from(fmt.sample_rate),
    );
    let mut pcm = vec![0i16; fmt.frame_samples as usize * usize::from(fmt.channels)];
    let mut packet = Vec::new();
    let mut targets = Vec::with_capacity(MAX_CLIENTS);
    let mut ticker = Ticker::new(interval);
    while !shared.stop.load(Ordering::Acquire) {
        ticker.wait();
        sessions(shared, &mut targets);
        let recording = lock(recorder).is_some();
        if targets.is_empty() && !recording {
            continue;
        }
        let captured = source.read(&mut pcm)?;
        encoder.encode(&pcm, &mut packet)?;
        if let Some(r) = lock(recorder).as_mut() {
            r.write_audio(&packet, captured)?;
        }
        for &h in &targets {
            // The driver command owns its bytes: one small copy per packet and session.
            let _ = host.send_audio(h, captured, packet.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::stream_fps;

    #[test]
    fn the_frame_rate_follows_the_slowest_sessions_step_never_above_the_source() {
        assert_eq!(stream_fps(60, 0), 60);
        assert_eq!(stream_fps(60, 45), 45);
        assert_eq!(stream_fps(60, 90), 60);
        assert_eq!(stream_fps(30, 1), 1);
    }
}
