//! Recording: the encoded H.264 stream into MP4 or MKV through FFmpeg's muxers, passed through
//! without re-encoding, timestamped from each frame's capture time (not its arrival).
//!
//! The file starts at the first keyframe (earlier frames cannot be decoded on their own). The
//! MP4 muxer takes the SPS/PPS from that keyframe (libx264 repeats them in every keyframe).
//! FFmpeg 5.1's Matroska muxer wants them as extradata before the header, and `ffmpeg-next`
//! has no safe way to set a stream's extradata, so an MKV's video track is described by a local
//! libx264 opened for the same picture size and settings (global header), as the Opus track is
//! by a local libopus: its CodecPrivate matches what this build's host sends, and the stream's
//! own SPS/PPS, repeated in every keyframe the file holds from its first frame on, win for any
//! decoder when another encoder made the stream. Each frame is held until the next one arrives so its duration is the real capture interval; the
//! last one gets the nominal interval. Writing copies each access unit into an FFmpeg packet
//! (one allocation per frame, off the transport's path).
//!
//! An Opus audio track ([`FileRecorder::with_opus`]) is described by a local libopus encoder
//! opened with the stream's parameters, whose OpusHead is the one the peer's identical encoder
//! produced; its packets are stamped from their capture time on the same clock as the video.

use std::path::{Path, PathBuf};

use ffmpeg_next::{self as ff, codec, format::Pixel};

use crate::{AudioFormat, MediaError, Recorder, RecordingSummary, VideoFormat};

/// Time base of the timestamps handed to the muxer: microseconds.
const US: ff::Rational = ff::Rational(1, 1_000_000);

/// Records H.264 access units to an MP4 file.
pub struct FileRecorder {
    path: PathBuf,
    octx: ff::format::context::Output,
    format: VideoFormat,
    started: bool,
    finished: bool,
    first_us: u64,
    last_pts: Option<i64>,
    held: Option<(ff::Packet, i64)>,
    frames: u64,
    end_us: i64,
    /// Stream index and packet duration (µs) of the audio track, if any.
    audio: Option<(usize, i64)>,
    audio_packets: u64,
    last_audio_pts: Option<i64>,
}

impl std::fmt::Debug for FileRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRecorder")
            .field("path", &self.path)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl FileRecorder {
    /// Creates `path` (`.mp4` or `.mkv`) for an H.264 stream of `format`.
    pub fn create(path: &Path, format: VideoFormat) -> Result<Self, MediaError> {
        crate::init()?;
        format.validate()?;
        let matroska = match path.extension().and_then(|e| e.to_str()) {
            Some("mp4") => false,
            Some("mkv") => true,
            _ => {
                return Err(MediaError::invalid(
                    "recording path",
                    format!("{}: the name must end in .mp4 or .mkv", path.display()),
                ));
            }
        };
        let mut octx =
            ff::format::output(path).map_err(MediaError::ff("creating the recording"))?;
        // The video track's parameters: for MKV from a reference libx264 (SPS/PPS as
        // extradata), for MP4 a bare description (the muxer takes the SPS/PPS in-band).
        let (reference, params);
        let ctx: &codec::Context = if matroska {
            reference = crate::h264::reference_parameters(format)?;
            &reference
        } else {
            let codec = ff::decoder::find(codec::Id::H264).ok_or_else(|| {
                MediaError::Unavailable("H.264", "FFmpeg was built without an H.264 decoder".into())
            })?;
            let mut p = codec::Context::new_with_codec(codec)
                .encoder()
                .video()
                .map_err(MediaError::ff("describing the recorded stream"))?;
            p.set_width(format.width);
            p.set_height(format.height);
            p.set_format(Pixel::YUV420P);
            p.set_time_base(US);
            params = p;
            &params
        };
        let mut stream = octx
            .add_stream_with(ctx)
            .map_err(MediaError::ff("adding the video stream"))?;
        stream.set_time_base(US);
        stream.set_avg_frame_rate(ff::Rational(i32::try_from(format.fps).unwrap_or(60), 1));
        Ok(Self {
            path: path.to_owned(),
            octx,
            format,
            started: false,
            finished: false,
            first_us: 0,
            last_pts: None,
            held: None,
            frames: 0,
            end_us: 0,
            audio: None,
            audio_packets: 0,
            last_audio_pts: None,
        })
    }

    /// Like [`Self::create`], plus an Opus track for packets of `audio` (the format the peer's
    /// encoder uses: 48 kHz, 1 or 2 channels).
    pub fn with_opus(
        path: &Path,
        format: VideoFormat,
        audio: AudioFormat,
    ) -> Result<Self, MediaError> {
        let mut rec = Self::create(path, format)?;
        // Opened only for its parameters: libopus writes the OpusHead the muxer needs.
        let reference = crate::audio::OpusEncoder::new(audio, 64_000)?;
        let mut stream = rec
            .octx
            .add_stream_with(reference.context())
            .map_err(MediaError::ff("adding the audio stream"))?;
        stream.set_time_base(US);
        let index = stream.index();
        let duration = i64::from(audio.frame_samples) * 1_000_000 / i64::from(audio.sample_rate);
        rec.audio = Some((index, duration));
        Ok(rec)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the held packet with `duration` µs.
    fn flush_held(&mut self, duration: i64) -> Result<(), MediaError> {
        let Some((mut pkt, pts)) = self.held.take() else {
            return Ok(());
        };
        pkt.set_duration(duration.max(1));
        let tb = self
            .octx
            .stream(0)
            .map(|s| s.time_base())
            .ok_or_else(|| MediaError::invalid("recording", "stream 0 vanished"))?;
        pkt.rescale_ts(US, tb);
        pkt.set_stream(0);
        pkt.write_interleaved(&mut self.octx)
            .map_err(MediaError::ff("writing a recorded frame"))?;
        self.frames += 1;
        self.end_us = pts + duration.max(1);
        Ok(())
    }

    fn nominal_interval(&self) -> i64 {
        1_000_000 / i64::from(self.format.fps.max(1))
    }
}

impl Recorder for FileRecorder {
    fn write_video(
        &mut self,
        data: &[u8],
        keyframe: bool,
        capture_us: u64,
    ) -> Result<(), MediaError> {
        if self.finished {
            return Err(MediaError::invalid("recording", "already finished"));
        }
        if !self.started {
            if !keyframe {
                return Ok(());
            }
            self.octx
                .write_header()
                .map_err(MediaError::ff("writing the recording header"))?;
            self.started = true;
            self.first_us = capture_us;
        }
        let mut pts =
            i64::try_from(capture_us.saturating_sub(self.first_us)).unwrap_or(i64::MAX / 2);
        if let Some(last) = self.last_pts {
            // A wall clock stepped back (or two frames share a microsecond): keep order.
            pts = pts.max(last + 1);
            self.flush_held(pts - last)?;
        }
        self.last_pts = Some(pts);
        let mut pkt = ff::Packet::copy(data);
        pkt.set_pts(Some(pts));
        pkt.set_dts(Some(pts));
        if keyframe {
            pkt.set_flags(ff::packet::Flags::KEY);
        }
        self.held = Some((pkt, pts));
        Ok(())
    }

    fn write_audio(&mut self, data: &[u8], capture_us: u64) -> Result<(), MediaError> {
        let Some((index, duration)) = self.audio else {
            return Ok(());
        };
        if !self.started || self.finished || capture_us < self.first_us {
            return Ok(());
        }
        let mut pts = i64::try_from(capture_us - self.first_us).unwrap_or(i64::MAX / 2);
        if let Some(last) = self.last_audio_pts {
            pts = pts.max(last + 1);
        }
        self.last_audio_pts = Some(pts);
        let tb = self
            .octx
            .stream(index)
            .map(|s| s.time_base())
            .ok_or_else(|| MediaError::invalid("recording", "audio stream vanished"))?;
        let mut pkt = ff::Packet::copy(data);
        pkt.set_pts(Some(pts));
        pkt.set_dts(Some(pts));
        pkt.set_duration(duration);
        pkt.rescale_ts(US, tb);
        pkt.set_stream(index);
        pkt.write_interleaved(&mut self.octx)
            .map_err(MediaError::ff("writing a recorded audio packet"))?;
        self.audio_packets += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<RecordingSummary, MediaError> {
        if !self.finished {
            self.finished = true;
            if self.started {
                let d = self.nominal_interval();
                self.flush_held(d)?;
                self.octx
                    .write_trailer()
                    .map_err(MediaError::ff("writing the recording trailer"))?;
            }
        }
        Ok(RecordingSummary {
            path: self.path.clone(),
            frames: self.frames,
            audio_packets: self.audio_packets,
            duration_s: self.end_us as f64 / 1e6,
        })
    }
}

impl Drop for FileRecorder {
    fn drop(&mut self) {
        // A recording dropped without `finish` (an error path) still gets its trailer.
        if !self.finished {
            if let Err(e) = self.finish() {
                tracing::warn!(path = %self.path.display(), error = %e, "finishing recording");
            }
        }
    }
}
