//! The client's video thread: decodes each frame, reads its pixel stamp, presents it, records
//! it, and reads the window's input between pictures.
//!
//! It runs beside the event loop so that nothing waits behind a decode (1-2 ms per 720p
//! frame on a small machine): audio packets, control messages and file data are handled as
//! they arrive, and window input is read every [`WINDOW_POLL`] rather than once per picture
//! (up to a frame interval late).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use wavry_media::{
    InputEvent, Presenter, RawFrame, Recorder, VideoDecoder, h264::FfmpegDecoder,
    present::HeadlessPresenter, record::FileRecorder, stamp, window::WindowPresenter,
};
use wavry_net::ClientDriver;
use wavry_rift::session::Frame;
use wavry_runtime::Latencies;

/// How often the window's input is read while no picture arrives.
pub(super) const WINDOW_POLL: Duration = Duration::from_millis(2);

/// What the event loop hands the video thread, in arrival order.
pub(super) enum ToVideo {
    /// A complete frame.
    Frame(Frame),
    /// The session gave a frame up: later frames reference it until the next keyframe.
    Dropped,
}

/// What the video thread saw, over the whole run (every path).
#[derive(Debug, Default)]
pub(super) struct VideoTally {
    /// Pictures the decoder produced.
    pub(super) pictures: u64,
    /// Pictures whose pixel code was read (synthetic source).
    pub(super) decoded: u64,
    pub(super) unreadable: u64,
    /// Pixel timestamp differs from the frame's metadata: a picture from the wrong frame.
    pub(super) mismatched: u64,
    /// Pixel frame number not above the previous one.
    pub(super) out_of_order: u64,
    pub(super) decode_errors: u64,
    pub(super) skipped_until_keyframe: u64,
    pub(super) first: Option<u32>,
    pub(super) last: Option<u32>,
    pub(super) g2g: Latencies,
    pub(super) decode: Latencies,
    /// Handing a picture to the window (or the headless presenter).
    pub(super) present: Latencies,
    /// Input events the window gave and the client sent, and how many were keys.
    pub(super) window_input: u64,
    pub(super) window_keys: u64,
}

/// Why the video thread stopped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum VideoEnd {
    /// The event loop hung up (the stream ended or its path was lost).
    Stopped,
    /// The user closed the window.
    WindowClosed,
}

/// What the video thread shares with the event loop.
pub(super) struct Shared<'a> {
    pub(super) client: &'a ClientDriver,
    /// The recording (audio is written by the event loop).
    pub(super) recorder: &'a Mutex<Option<&'a mut FileRecorder>>,
    /// Glass to glass since the last stats line (the event loop prints and resets it).
    pub(super) sec_g2g: &'a Mutex<Latencies>,
}

/// Decodes and presents frames from `frames` until it hangs up or the window closes.
pub(super) fn run(
    window: Option<(u32, u32)>,
    shared: &Shared<'_>,
    frames: &Receiver<ToVideo>,
    tally: &mut VideoTally,
) -> anyhow::Result<VideoEnd> {
    let mut decoder = FfmpegDecoder::h264()?;
    let mut presenter: Box<dyn Presenter> = match window {
        Some((w, h)) => Box::new(WindowPresenter::open("Wavry", w, h)?),
        None => Box::new(HeadlessPresenter::default()),
    };
    // Headless there is no input to read: wait for frames only.
    let poll = if window.is_some() {
        WINDOW_POLL
    } else {
        Duration::from_secs(3600)
    };
    let mut picture = RawFrame::new(2, 2);
    let mut input = Vec::new();
    let mut need_keyframe = true;
    loop {
        let shown = match frames.recv_timeout(poll) {
            Ok(ToVideo::Dropped) => {
                need_keyframe = true;
                true
            }
            Ok(ToVideo::Frame(f)) => {
                let shown = if need_keyframe && !f.meta.keyframe {
                    tally.skipped_until_keyframe += 1;
                    true
                } else {
                    need_keyframe = false;
                    show(
                        shared,
                        tally,
                        &f,
                        &mut decoder,
                        presenter.as_mut(),
                        &mut picture,
                        &mut need_keyframe,
                    )?
                };
                shared.client.recycle(f)?;
                shown
            }
            Err(RecvTimeoutError::Timeout) => presenter.poll(),
            Err(RecvTimeoutError::Disconnected) => return Ok(VideoEnd::Stopped),
        };
        presenter.input(&mut input);
        for e in input.drain(..) {
            tally.window_input += 1;
            if matches!(e, InputEvent::Key { .. }) {
                tally.window_keys += 1;
            }
            shared.client.send_input(wavry_runtime::input_message(
                &e,
                wavry_media::wall_clock_us(),
            ))?;
        }
        if !shown {
            return Ok(VideoEnd::WindowClosed);
        }
    }
}

/// Records, decodes and presents one frame; `false` once the user closed the window. A
/// frame that does not decode is counted and the stream goes on from the next keyframe.
fn show(
    shared: &Shared<'_>,
    tally: &mut VideoTally,
    f: &Frame,
    decoder: &mut FfmpegDecoder,
    presenter: &mut dyn Presenter,
    picture: &mut RawFrame,
    need_keyframe: &mut bool,
) -> anyhow::Result<bool> {
    if let Some(r) = wavry_runtime::lock(shared.recorder).as_deref_mut() {
        r.write_video(&f.data, f.meta.keyframe, f.meta.timestamp_us)?;
    }
    let t0 = Instant::now();
    match decoder.decode(&f.data, f.meta.timestamp_us, picture) {
        Ok(true) => {}
        Ok(false) => return Ok(true),
        Err(e) => {
            tracing::debug!("decode: {e}");
            tally.decode_errors += 1;
            *need_keyframe = true;
            return Ok(true);
        }
    }
    tally.decode.record_us(t0.elapsed().as_micros() as u64);
    tally.pictures += 1;
    check_picture(shared, tally, picture, f.meta.timestamp_us);
    let t1 = Instant::now();
    let shown = presenter.present(picture)?;
    tally.present.record_us(t1.elapsed().as_micros() as u64);
    Ok(shown)
}

/// Reads the pixel code of a decoded picture and checks it against the frame's metadata.
fn check_picture(
    shared: &Shared<'_>,
    tally: &mut VideoTally,
    picture: &RawFrame,
    meta_capture_us: u64,
) {
    let Some(s) = stamp::read(picture) else {
        tally.unreadable += 1;
        return;
    };
    tally.decoded += 1;
    if s.capture_us != meta_capture_us {
        tally.mismatched += 1;
    }
    if tally.last.is_some_and(|l| s.frame <= l) {
        tally.out_of_order += 1;
    }
    tally.first.get_or_insert(s.frame);
    tally.last = Some(s.frame);
    // Same clock on the same machine; across machines this needs synchronised clocks.
    let g2g = wavry_media::wall_clock_us().saturating_sub(s.capture_us);
    tally.g2g.record_us(g2g);
    wavry_runtime::lock(shared.sec_g2g).record_us(g2g);
}
