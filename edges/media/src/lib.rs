//! `wavry-media`: the media edges of the Wavry runtimes, small and synchronous at the boundary.
//!
//! Each edge is a trait ([`VideoSource`], [`VideoEncoder`], [`VideoDecoder`], [`AudioSource`],
//! [`AudioEncoder`], [`AudioDecoder`], [`InputSink`], [`Recorder`], [`Presenter`]) with its
//! backends in their own modules. The defaults work headless on any Linux box:
//!
//! - [`synthetic::SyntheticSource`]: a moving test pattern whose top strip carries the frame
//!   number and the capture timestamp as big black/white blocks ([`stamp`]), so a client reads
//!   them back from decoded pixels and measures glass to glass without trusting metadata;
//! - [`h264::X264Encoder`] (libx264 through `ffmpeg-next`: ultrafast, zerolatency, no B-frames,
//!   keyframes on request, bitrate changeable while running) and [`h264::FfmpegDecoder`];
//! - [`audio::ToneSource`] with Opus through FFmpeg ([`audio::OpusEncoder`],
//!   [`audio::OpusDecoder`]: 48 kHz, 10 ms packets);
//! - [`input::LoggingInputSink`], [`present::HeadlessPresenter`];
//! - X11 ([`x11::X11Source`] capture of a display, [`x11::XTestSink`] input through XTEST);
//! - [`record::FileRecorder`]: H.264 into MP4 through FFmpeg's muxer, timestamps from
//!   capture time.
//!
//! Every call is synchronous: a runtime drives the edges from its own threads and hands
//! buffers across without the edges knowing about the transport.

#![warn(missing_docs)]

use std::fmt;

pub mod audio;
pub mod h264;
pub mod input;
#[cfg(target_os = "linux")]
pub mod pipewire;
pub mod present;
pub mod record;
pub mod stamp;
pub mod synthetic;
pub mod window;
pub mod x11;

/// Errors of the media edges.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// An FFmpeg call failed.
    #[error("{context}: {source}")]
    Ffmpeg {
        /// What was being done.
        context: &'static str,
        /// FFmpeg's error.
        #[source]
        source: ffmpeg_next::Error,
    },
    /// A codec or backend is not available in this build or on this machine.
    #[error("{0} is not available: {1}")]
    Unavailable(&'static str, String),
    /// A frame or parameter does not fit what the edge supports.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which input.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl MediaError {
    pub(crate) fn ff(context: &'static str) -> impl FnOnce(ffmpeg_next::Error) -> Self {
        move |source| Self::Ffmpeg { context, source }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

/// Initialises FFmpeg and silences its log entirely: for callers that feed it corrupt input on
/// purpose (fuzzing), where every error line would be noise.
pub fn init_quiet() -> Result<(), MediaError> {
    init()?;
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Quiet);
    Ok(())
}

/// Initialises FFmpeg once per process (idempotent) and keeps its log quiet unless asked.
pub fn init() -> Result<(), MediaError> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        ffmpeg_next::init().map_err(|e| e.to_string())?;
        let level = if std::env::var_os("WAVRY_FFMPEG_LOG").is_some() {
            ffmpeg_next::util::log::Level::Info
        } else {
            ffmpeg_next::util::log::Level::Error
        };
        ffmpeg_next::util::log::set_level(level);
        Ok(())
    })
    .clone()
    .map_err(|e| MediaError::Unavailable("FFmpeg", e))
}

/// Shape and rate of a video stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFormat {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Nominal frames per second.
    pub fps: u32,
}

impl VideoFormat {
    /// Checks the constraints every edge relies on: even sizes within 64..=8192, fps 1..=240.
    pub fn validate(&self) -> Result<(), MediaError> {
        let ok_dim = |d: u32| (64..=8192).contains(&d) && d % 2 == 0;
        if !ok_dim(self.width) || !ok_dim(self.height) {
            return Err(MediaError::invalid(
                "video size",
                format!(
                    "{}x{}: width and height must be even and within 64..=8192",
                    self.width, self.height
                ),
            ));
        }
        if !(1..=240).contains(&self.fps) {
            return Err(MediaError::invalid(
                "frame rate",
                format!("{} fps: must be within 1..=240", self.fps),
            ));
        }
        Ok(())
    }
}

/// An uncompressed frame in planar YUV 4:2:0 (I420, BT.601 limited range), planes packed
/// without padding: `width * height` luma bytes, then the U and V planes of a quarter each.
#[derive(Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Y, U and V planes, back to back.
    pub data: Vec<u8>,
    /// Capture time, µs since the UNIX epoch on the capturing machine's clock.
    pub capture_us: u64,
}

impl fmt::Debug for RawFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("bytes", &self.data.len())
            .field("capture_us", &self.capture_us)
            .finish()
    }
}

impl RawFrame {
    /// A black frame of the given size.
    pub fn new(width: u32, height: u32) -> Self {
        let mut f = Self {
            width: 0,
            height: 0,
            data: Vec::new(),
            capture_us: 0,
        };
        f.reshape(width, height);
        f
    }

    /// Bytes an I420 frame of this size takes.
    pub fn len_for(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        w * h + 2 * (w / 2) * (h / 2)
    }

    /// Resizes the buffer for `width` x `height` (contents unspecified when the size changes).
    pub fn reshape(&mut self, width: u32, height: u32) {
        if self.width != width || self.height != height {
            self.width = width;
            self.height = height;
            let len = Self::len_for(width, height);
            self.data.resize(len, 0);
            let luma = (width * height) as usize;
            self.data[..luma].fill(16);
            self.data[luma..].fill(128);
        }
    }

    /// The luma plane.
    pub fn y(&self) -> &[u8] {
        &self.data[..(self.width * self.height) as usize]
    }

    /// The luma plane, writable.
    pub fn y_mut(&mut self) -> &mut [u8] {
        let n = (self.width * self.height) as usize;
        &mut self.data[..n]
    }

    /// The three planes, writable, with their row strides.
    pub fn planes_mut(&mut self) -> [(&mut [u8], usize); 3] {
        let (w, h) = (self.width as usize, self.height as usize);
        let (y, uv) = self.data.split_at_mut(w * h);
        let (u, v) = uv.split_at_mut((w / 2) * (h / 2));
        [(y, w), (u, w / 2), (v, w / 2)]
    }

    /// The three planes with their row strides.
    pub fn planes(&self) -> [(&[u8], usize); 3] {
        let (w, h) = (self.width as usize, self.height as usize);
        let (y, uv) = self.data.split_at(w * h);
        let (u, v) = uv.split_at((w / 2) * (h / 2));
        [(y, w), (u, w / 2), (v, w / 2)]
    }
}

/// Microseconds since the UNIX epoch now (the clock capture timestamps use).
pub fn wall_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Produces raw frames: a screen, a window, a test pattern.
pub trait VideoSource: Send {
    /// Backend name for logs (`synthetic`, `x11grab`, …).
    fn name(&self) -> &'static str;
    /// What the frames will look like.
    fn format(&self) -> VideoFormat;
    /// Captures the next frame into `frame` (its buffer is reused), stamped with the capture
    /// time. Pacing is the caller's: a source captures when asked.
    fn capture(&mut self, frame: &mut RawFrame) -> Result<(), MediaError>;
}

/// What an encoder produced for one input frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedInfo {
    /// The output decodes on its own (IDR).
    pub keyframe: bool,
    /// Capture time of the frame it encodes (copied from [`RawFrame::capture_us`]).
    pub capture_us: u64,
    /// Bytes written.
    pub len: usize,
}

/// Compresses raw frames, one access unit out per frame in (no reordering delay).
pub trait VideoEncoder: Send {
    /// Backend name for logs (`libx264`, `h264_vaapi`, …).
    fn name(&self) -> &'static str;
    /// Encodes `frame`, replacing `out`'s contents with the access unit (Annex B for H.264).
    /// `Ok(None)` when the encoder produced nothing for this frame.
    fn encode(
        &mut self,
        frame: &RawFrame,
        out: &mut Vec<u8>,
    ) -> Result<Option<EncodedInfo>, MediaError>;
    /// The next encoded frame is a keyframe (a peer lost a frame, or a recording starts).
    fn request_keyframe(&mut self);
    /// New target bitrate in bit/s, effective from the next frame.
    fn set_bitrate(&mut self, bps: u64);
    /// The current target bitrate in bit/s.
    fn bitrate(&self) -> u64;
}

/// Decompresses access units into raw frames.
pub trait VideoDecoder: Send {
    /// Backend name for logs.
    fn name(&self) -> &'static str;
    /// Decodes one access unit; `Ok(true)` when `out` now holds a picture (its `capture_us`
    /// is set to `capture_us`), `Ok(false)` when the decoder needs more input (e.g. waiting for
    /// a keyframe). Corrupt input is an error; the decoder stays usable.
    fn decode(
        &mut self,
        data: &[u8],
        capture_us: u64,
        out: &mut RawFrame,
    ) -> Result<bool, MediaError>;
}

/// Shape of an audio stream: interleaved signed 16-bit PCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Channels (interleaved).
    pub channels: u16,
    /// Samples per channel in one packet (480 = 10 ms at 48 kHz).
    pub frame_samples: u32,
}

/// Produces PCM audio in packets of [`AudioFormat::frame_samples`].
pub trait AudioSource: Send {
    /// Backend name for logs.
    fn name(&self) -> &'static str;
    /// What the samples look like.
    fn format(&self) -> AudioFormat;
    /// Fills `pcm` (`frame_samples * channels` samples) and returns its capture time, µs since
    /// the UNIX epoch.
    fn read(&mut self, pcm: &mut [i16]) -> Result<u64, MediaError>;
}

/// Compresses PCM packets (Opus).
pub trait AudioEncoder: Send {
    /// Encodes one packet of PCM into `out` (replacing its contents).
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), MediaError>;
}

/// Decompresses audio packets into PCM.
pub trait AudioDecoder: Send {
    /// Decodes one packet into `pcm`; returns the samples per channel written.
    fn decode(&mut self, packet: &[u8], pcm: &mut [i16]) -> Result<usize, MediaError>;
}

/// One input event from a client, in the transport-neutral form the sinks take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputEvent {
    /// A key went down or up (Linux evdev key code).
    Key {
        /// evdev key code.
        code: u32,
        /// Down (true) or up.
        pressed: bool,
    },
    /// The pointer moved to a position normalised to 0..=1 over the captured area.
    MouseMove {
        /// Horizontal position, 0 = left.
        x: f32,
        /// Vertical position, 0 = top.
        y: f32,
    },
    /// A mouse button went down or up (1 left, 2 middle, 3 right).
    MouseButton {
        /// Button number.
        button: u32,
        /// Down (true) or up.
        pressed: bool,
    },
    /// Wheel or touchpad scroll.
    Scroll {
        /// Horizontal steps.
        dx: f32,
        /// Vertical steps.
        dy: f32,
    },
    /// A gamepad axis moved.
    GamepadAxis {
        /// Gamepad index.
        pad: u32,
        /// Axis number.
        axis: u32,
        /// Position, -1..=1.
        value: f32,
    },
    /// A gamepad button went down or up.
    GamepadButton {
        /// Gamepad index.
        pad: u32,
        /// Button number.
        button: u32,
        /// Down (true) or up.
        pressed: bool,
    },
}

/// Applies a client's input on the host (XTest, uinput, or a log).
pub trait InputSink: Send {
    /// Backend name for logs.
    fn name(&self) -> &'static str;
    /// Injects one event.
    fn inject(&mut self, event: &InputEvent) -> Result<(), MediaError>;
}

/// Writes the encoded stream to a file.
pub trait Recorder: Send {
    /// Appends one encoded video access unit captured at `capture_us`.
    fn write_video(
        &mut self,
        data: &[u8],
        keyframe: bool,
        capture_us: u64,
    ) -> Result<(), MediaError>;
    /// Appends one encoded audio packet captured at `capture_us` (ignored by a recorder
    /// without an audio track, and before the first video keyframe).
    fn write_audio(&mut self, data: &[u8], capture_us: u64) -> Result<(), MediaError>;
    /// Writes the trailer and closes the file; returns what was written.
    fn finish(&mut self) -> Result<RecordingSummary, MediaError>;
}

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingSummary {
    /// The file.
    pub path: std::path::PathBuf,
    /// Video frames written.
    pub frames: u64,
    /// Audio packets written.
    pub audio_packets: u64,
    /// From the first frame's capture time to the last frame's end, seconds.
    pub duration_s: f64,
}

/// Shows decoded frames (a window) or stands in for it (headless). Not `Send`: a window
/// stays on the thread that opened it.
pub trait Presenter {
    /// Backend name for logs.
    fn name(&self) -> &'static str;
    /// Shows `frame`. Returns `false` once the user closed the window.
    fn present(&mut self, frame: &RawFrame) -> Result<bool, MediaError>;
    /// Reads the window's pending events without drawing, so that input between pictures
    /// is not held until the next one. Returns `false` once the user closed the window.
    fn poll(&mut self) -> bool {
        true
    }
    /// Appends the input the user gave the window since the last call (keys as Linux evdev
    /// codes, the pointer normalised to the picture, buttons, wheel). Headless: nothing.
    fn input(&mut self, _out: &mut Vec<InputEvent>) {}
}
