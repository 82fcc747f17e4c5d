//! H.264 through FFmpeg (`ffmpeg-next`): libx264 for encoding (ultrafast, zerolatency, no
//! B-frames, keyframes on request, bitrate changeable between frames) and FFmpeg's own decoder
//! (one thread, low delay: a frame in, a picture out).

use ffmpeg_next::{self as ff, codec, format::Pixel, frame, picture};

use crate::{EncodedInfo, MediaError, RawFrame, VideoDecoder, VideoEncoder, VideoFormat};

/// Settings of [`X264Encoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Frame size and rate.
    pub format: VideoFormat,
    /// Starting bitrate, bit/s.
    pub bitrate_bps: u64,
    /// Longest time between keyframes, ms (0: only on request).
    pub keyframe_interval_ms: u32,
}

/// Hardware H.264/HEVC/AV1 encoders FFmpeg was built with, and whether this machine can use
/// them: `(name, Ok(()))` or `(name, Err(why not))`. Probing opens nothing.
pub fn probe_hardware_encoders() -> Vec<(&'static str, Result<(), String>)> {
    if let Err(e) = crate::init() {
        return vec![("ffmpeg", Err(e.to_string()))];
    }
    let dri = std::path::Path::new("/dev/dri").exists();
    let nvidia = std::path::Path::new("/dev/nvidia0").exists();
    [
        "h264_vaapi",
        "hevc_vaapi",
        "av1_vaapi",
        "h264_nvenc",
        "hevc_nvenc",
        "av1_nvenc",
    ]
    .into_iter()
    .map(|name| {
        let r = if ff::encoder::find_by_name(name).is_none() {
            Err("not compiled into this FFmpeg".to_owned())
        } else if name.ends_with("_vaapi") && !dri {
            Err("no /dev/dri render node".to_owned())
        } else if name.ends_with("_nvenc") && !nvidia {
            Err("no NVIDIA device (/dev/nvidia0)".to_owned())
        } else {
            Ok(())
        };
        (name, r)
    })
    .collect()
}

/// libx264 through FFmpeg, tuned for interactive streaming.
pub struct X264Encoder {
    enc: ff::encoder::Video,
    picture: frame::Video,
    packet: ff::Packet,
    next_pts: i64,
    keyframe_pending: bool,
    bitrate: u64,
}

impl std::fmt::Debug for X264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X264Encoder")
            .field("bitrate", &self.bitrate)
            .field("next_pts", &self.next_pts)
            .finish_non_exhaustive()
    }
}

impl X264Encoder {
    /// Opens libx264 for `cfg`: preset ultrafast, tune zerolatency (no lookahead, no frame
    /// threads), no B-frames, IDR keyframes, SPS/PPS repeated in every keyframe so a receiver
    /// can join at any of them.
    pub fn new(cfg: EncoderConfig) -> Result<Self, MediaError> {
        let enc = open_x264(cfg, false)?;
        Ok(Self {
            enc,
            picture: frame::Video::new(Pixel::YUV420P, cfg.format.width, cfg.format.height),
            packet: ff::Packet::empty(),
            next_pts: 0,
            keyframe_pending: false,
            bitrate: cfg.bitrate_bps,
        })
    }
}

/// Opens libx264 for `cfg` (see [`X264Encoder::new`]). With `global_header` the SPS/PPS go
/// into the context's extradata instead of every keyframe: what a container that stores them
/// once (Matroska's CodecPrivate) needs from a reference encoder.
fn open_x264(cfg: EncoderConfig, global_header: bool) -> Result<ff::encoder::Video, MediaError> {
    crate::init()?;
    cfg.format.validate()?;
    let codec = ff::encoder::find_by_name("libx264")
        .ok_or_else(|| MediaError::Unavailable("libx264", "FFmpeg was built without it".into()))?;
    let mut enc = codec::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(MediaError::ff("creating the libx264 context"))?;
    let fps = i32::try_from(cfg.format.fps).unwrap_or(60);
    enc.set_width(cfg.format.width);
    enc.set_height(cfg.format.height);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base(ff::Rational(1, fps));
    enc.set_frame_rate(Some(ff::Rational(fps, 1)));
    enc.set_max_b_frames(0);
    if global_header {
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let gop = if cfg.keyframe_interval_ms == 0 {
        u32::MAX / 2
    } else {
        (u64::from(cfg.keyframe_interval_ms) * u64::from(cfg.format.fps) / 1000).max(1) as u32
    };
    enc.set_gop(gop);
    // ABR alone spends budget saved earlier long after the target drops; VBV with the
    // maxrate following the target makes a change bite once the buffer drained. The buffer
    // is 200 ms of the starting rate and stays (FFmpeg reconfigures x264's maxrate and
    // bitrate between frames, the buffer size only at open).
    let bps = clamp_bps(cfg.bitrate_bps);
    enc.set_bit_rate(bps);
    enc.set_max_bit_rate(bps);
    let mut opts = ff::Dictionary::new();
    opts.set("bufsize", &(bps / 5).to_string());
    opts.set("preset", "ultrafast");
    opts.set("tune", "zerolatency");
    opts.set("forced-idr", "1");
    enc.open_with(opts)
        .map_err(MediaError::ff("opening libx264"))
}

/// Stream parameters of an H.264 stream of `format` as this build's libx264 writes it,
/// SPS/PPS in the extradata: an encoder opened for its parameters only, like the Opus track's
/// (`ffmpeg-next` has no safe way to set a stream's extradata from received parameter sets).
pub(crate) fn reference_parameters(format: VideoFormat) -> Result<ff::encoder::Video, MediaError> {
    open_x264(
        EncoderConfig {
            format,
            bitrate_bps: 10_000_000,
            keyframe_interval_ms: 1000,
        },
        true,
    )
}

fn clamp_bps(bps: u64) -> usize {
    bps.clamp(50_000, 500_000_000) as usize
}

/// Copies packed planes into an FFmpeg frame whose rows may be padded.
fn copy_into_frame(src: &RawFrame, dst: &mut frame::Video) {
    for (i, (plane, stride)) in src.planes().into_iter().enumerate() {
        let dst_stride = dst.stride(i);
        let data = dst.data_mut(i);
        for (row, line) in plane.chunks_exact(stride).enumerate() {
            data[row * dst_stride..row * dst_stride + stride].copy_from_slice(line);
        }
    }
}

/// Copies an FFmpeg YUV 4:2:0 picture into packed planes. The packed layout needs even,
/// non-zero dimensions; a stream that decodes to anything else (legal H.264 with cropping,
/// or corrupt input) is refused rather than copied out of bounds.
fn copy_from_frame(src: &frame::Video, dst: &mut RawFrame) -> Result<(), MediaError> {
    let (w, h) = (src.width(), src.height());
    if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 {
        return Err(MediaError::invalid(
            "decoded picture",
            format!("size {w}x{h}: the packed 4:2:0 layout needs even, non-zero dimensions"),
        ));
    }
    dst.reshape(w, h);
    for (i, (plane, stride)) in dst.planes_mut().into_iter().enumerate() {
        let src_stride = src.stride(i);
        let data = src.data(i);
        for (row, line) in plane.chunks_exact_mut(stride).enumerate() {
            let from = row * src_stride;
            let Some(bytes) = data.get(from..from + stride) else {
                return Err(MediaError::invalid(
                    "decoded picture",
                    format!("plane {i} is shorter than {w}x{h} needs"),
                ));
            };
            line.copy_from_slice(bytes);
        }
    }
    Ok(())
}

pub(crate) fn is_again(e: ff::Error) -> bool {
    matches!(e, ff::Error::Other { errno } if errno == ff::util::error::EAGAIN)
        || matches!(e, ff::Error::Eof)
}

impl VideoEncoder for X264Encoder {
    fn name(&self) -> &'static str {
        "libx264"
    }

    fn encode(
        &mut self,
        frame: &RawFrame,
        out: &mut Vec<u8>,
    ) -> Result<Option<EncodedInfo>, MediaError> {
        if frame.width != self.picture.width() || frame.height != self.picture.height() {
            return Err(MediaError::invalid(
                "frame",
                format!(
                    "{}x{} given to an encoder opened for {}x{}",
                    frame.width,
                    frame.height,
                    self.picture.width(),
                    self.picture.height()
                ),
            ));
        }
        copy_into_frame(frame, &mut self.picture);
        self.picture.set_pts(Some(self.next_pts));
        self.next_pts += 1;
        let kind = if std::mem::take(&mut self.keyframe_pending) {
            picture::Type::I
        } else {
            picture::Type::None
        };
        self.picture.set_kind(kind);
        self.enc
            .send_frame(&self.picture)
            .map_err(MediaError::ff("libx264 send_frame"))?;
        out.clear();
        let mut keyframe = false;
        let mut got = false;
        loop {
            match self.enc.receive_packet(&mut self.packet) {
                Ok(()) => {
                    got = true;
                    keyframe |= self.packet.is_key();
                    if let Some(d) = self.packet.data() {
                        out.extend_from_slice(d);
                    }
                }
                Err(e) if is_again(e) => break,
                Err(e) => return Err(MediaError::ff("libx264 receive_packet")(e)),
            }
        }
        Ok(got.then_some(EncodedInfo {
            keyframe,
            capture_us: frame.capture_us,
            len: out.len(),
        }))
    }

    fn request_keyframe(&mut self) {
        self.keyframe_pending = true;
    }

    fn set_bitrate(&mut self, bps: u64) {
        // FFmpeg's libx264 wrapper compares the context's bit_rate with x264's before every
        // frame and reconfigures the running encoder when it changed.
        self.bitrate = bps;
        self.enc.set_bit_rate(clamp_bps(bps));
        self.enc.set_max_bit_rate(clamp_bps(bps));
    }

    fn bitrate(&self) -> u64 {
        self.bitrate
    }
}

/// FFmpeg's H.264 decoder: one thread, low delay, so each access unit yields its picture at
/// once.
pub struct FfmpegDecoder {
    dec: ff::decoder::Video,
    picture: frame::Video,
    /// Input copied here with zeroed padding after it: FFmpeg's bit readers may read up to
    /// 64 bytes past the end of a packet.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for FfmpegDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfmpegDecoder").finish_non_exhaustive()
    }
}

/// Zero bytes FFmpeg may read past the end of a packet (AV_INPUT_BUFFER_PADDING_SIZE).
const PADDING: usize = 64;

impl FfmpegDecoder {
    /// Opens FFmpeg's H.264 decoder.
    pub fn h264() -> Result<Self, MediaError> {
        crate::init()?;
        let codec = ff::decoder::find(codec::Id::H264).ok_or_else(|| {
            MediaError::Unavailable("H.264 decoder", "FFmpeg was built without it".into())
        })?;
        let mut ctx = codec::Context::new_with_codec(codec);
        ctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Slice,
            count: 1,
            ..Default::default()
        });
        ctx.set_flags(codec::Flags::LOW_DELAY);
        let dec = ctx
            .decoder()
            .video()
            .map_err(MediaError::ff("opening the H.264 decoder"))?;
        Ok(Self {
            dec,
            picture: frame::Video::empty(),
            scratch: Vec::new(),
        })
    }
}

impl VideoDecoder for FfmpegDecoder {
    fn name(&self) -> &'static str {
        "ffmpeg-h264"
    }

    fn decode(
        &mut self,
        data: &[u8],
        capture_us: u64,
        out: &mut RawFrame,
    ) -> Result<bool, MediaError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(data);
        self.scratch.resize(data.len() + PADDING, 0);
        let packet = ff::Packet::borrow(&self.scratch[..data.len()]);
        self.dec
            .send_packet(&packet)
            .map_err(MediaError::ff("H.264 decode"))?;
        let mut got = false;
        loop {
            match self.dec.receive_frame(&mut self.picture) {
                Ok(()) => {
                    if self.picture.format() != Pixel::YUV420P
                        && self.picture.format() != Pixel::YUVJ420P
                    {
                        return Err(MediaError::invalid(
                            "decoded picture",
                            format!(
                                "pixel format {:?}, expected YUV 4:2:0",
                                self.picture.format()
                            ),
                        ));
                    }
                    copy_from_frame(&self.picture, out)?;
                    out.capture_us = capture_us;
                    got = true;
                }
                Err(e) if is_again(e) => break,
                Err(e) => return Err(MediaError::ff("H.264 receive_frame")(e)),
            }
        }
        Ok(got)
    }
}
