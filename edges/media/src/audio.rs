//! Audio edges: a synthetic tone source and Opus (48 kHz, 10 ms packets) through FFmpeg's
//! libopus encoder and its Opus decoder.

use ffmpeg_next::{self as ff, ChannelLayout, codec, format::Sample, format::sample, frame};

use crate::{AudioDecoder, AudioEncoder, AudioFormat, AudioSource, MediaError};

/// 48 kHz stereo, 10 ms packets: what RIFT's audio path carries.
pub const OPUS_48K_STEREO_10MS: AudioFormat = AudioFormat {
    sample_rate: 48_000,
    channels: 2,
    frame_samples: 480,
};

/// A sine tone, the headless audio default: the same wave on every channel.
#[derive(Debug)]
pub struct ToneSource {
    format: AudioFormat,
    hz: f64,
    /// Samples per channel produced so far.
    pos: u64,
    clock: fn() -> u64,
}

impl ToneSource {
    /// A tone of `hz` at a quarter of full scale.
    pub fn new(format: AudioFormat, hz: f64) -> Self {
        Self {
            format,
            hz,
            pos: 0,
            clock: crate::wall_clock_us,
        }
    }
}

impl AudioSource for ToneSource {
    fn name(&self) -> &'static str {
        "tone"
    }

    fn format(&self) -> AudioFormat {
        self.format
    }

    fn read(&mut self, pcm: &mut [i16]) -> Result<u64, MediaError> {
        let ch = usize::from(self.format.channels.max(1));
        let n = self.format.frame_samples as usize;
        if pcm.len() < n * ch {
            return Err(MediaError::invalid(
                "PCM buffer",
                format!("{} samples for a packet of {}", pcm.len(), n * ch),
            ));
        }
        let step = std::f64::consts::TAU * self.hz / f64::from(self.format.sample_rate);
        for (i, frame) in pcm[..n * ch].chunks_exact_mut(ch).enumerate() {
            let v = ((self.pos + i as u64) as f64 * step).sin() * 8192.0;
            frame.fill(v as i16);
        }
        self.pos += n as u64;
        Ok((self.clock)())
    }
}

fn layout(channels: u16) -> ChannelLayout {
    if channels == 1 {
        ChannelLayout::MONO
    } else {
        ChannelLayout::STEREO
    }
}

fn check_format(format: AudioFormat) -> Result<(), MediaError> {
    if format.sample_rate != 48_000
        || !(1..=2).contains(&format.channels)
        || ![120, 240, 480, 960, 1920, 2880].contains(&format.frame_samples)
    {
        return Err(MediaError::invalid(
            "audio format",
            format!("{format:?}: Opus here takes 48 kHz, 1 or 2 channels, 2.5-60 ms packets"),
        ));
    }
    Ok(())
}

/// An unopened Opus encoder context describing `format` (also the decoder's parameters).
fn opus_context(format: AudioFormat) -> Result<ff::encoder::audio::Audio, MediaError> {
    let codec = ff::encoder::find_by_name("libopus")
        .ok_or_else(|| MediaError::Unavailable("libopus", "FFmpeg was built without it".into()))?;
    let mut enc = codec::Context::new_with_codec(codec)
        .encoder()
        .audio()
        .map_err(MediaError::ff("creating the libopus context"))?;
    enc.set_rate(48_000);
    enc.set_channel_layout(layout(format.channels));
    enc.set_channels(i32::from(format.channels));
    enc.set_format(Sample::I16(sample::Type::Packed));
    enc.set_time_base(ff::Rational(1, 48_000));
    Ok(enc)
}

/// Opus through FFmpeg's libopus wrapper: low-delay application, fixed packet duration.
pub struct OpusEncoder {
    enc: ff::encoder::Audio,
    frame: frame::Audio,
    packet: ff::Packet,
    format: AudioFormat,
    pts: i64,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// Opens libopus for `format` at `bitrate_bps`.
    pub fn new(format: AudioFormat, bitrate_bps: u32) -> Result<Self, MediaError> {
        crate::init()?;
        check_format(format)?;
        let mut enc = opus_context(format)?;
        enc.set_bit_rate(bitrate_bps as usize);
        let ms = f64::from(format.frame_samples) / 48.0;
        let mut opts = ff::Dictionary::new();
        opts.set("application", "lowdelay");
        opts.set("frame_duration", &format!("{ms}"));
        let enc = enc
            .open_with(opts)
            .map_err(MediaError::ff("opening libopus"))?;
        let frame = frame::Audio::new(
            Sample::I16(sample::Type::Packed),
            format.frame_samples as usize,
            layout(format.channels),
        );
        Ok(Self {
            enc,
            frame,
            packet: ff::Packet::empty(),
            format,
            pts: 0,
        })
    }
}

impl OpusEncoder {
    /// The opened codec context (its parameters describe the stream, OpusHead included).
    pub fn context(&self) -> &codec::Context {
        &self.enc
    }
}

impl AudioEncoder for OpusEncoder {
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), MediaError> {
        let n = self.format.frame_samples as usize * usize::from(self.format.channels);
        if pcm.len() != n {
            return Err(MediaError::invalid(
                "PCM packet",
                format!("{} samples, expected {n}", pcm.len()),
            ));
        }
        let bytes = self.frame.data_mut(0);
        for (dst, s) in bytes.chunks_exact_mut(2).zip(pcm) {
            dst.copy_from_slice(&s.to_ne_bytes());
        }
        self.frame.set_pts(Some(self.pts));
        self.pts += i64::from(self.format.frame_samples);
        self.enc
            .send_frame(&self.frame)
            .map_err(MediaError::ff("libopus send_frame"))?;
        out.clear();
        loop {
            match self.enc.receive_packet(&mut self.packet) {
                Ok(()) => {
                    if let Some(d) = self.packet.data() {
                        out.extend_from_slice(d);
                    }
                }
                Err(e) if crate::h264::is_again(e) => break,
                Err(e) => return Err(MediaError::ff("libopus receive_packet")(e)),
            }
        }
        Ok(())
    }
}

/// FFmpeg's Opus decoder, output converted to interleaved i16.
pub struct OpusDecoder {
    dec: ff::decoder::Audio,
    frame: frame::Audio,
    channels: usize,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// Opens the decoder for packets of `format`.
    pub fn new(format: AudioFormat) -> Result<Self, MediaError> {
        crate::init()?;
        check_format(format)?;
        let params = codec::Parameters::from(&opus_context(format)?);
        let dec = codec::Context::from_parameters(params)
            .map_err(MediaError::ff("describing the Opus stream"))?
            .decoder()
            .audio()
            .map_err(MediaError::ff("opening the Opus decoder"))?;
        Ok(Self {
            dec,
            frame: frame::Audio::empty(),
            channels: usize::from(format.channels),
            scratch: Vec::new(),
        })
    }
}

impl AudioDecoder for OpusDecoder {
    fn decode(&mut self, packet: &[u8], pcm: &mut [i16]) -> Result<usize, MediaError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(packet);
        self.scratch.resize(packet.len() + 64, 0);
        let p = ff::Packet::borrow(&self.scratch[..packet.len()]);
        self.dec
            .send_packet(&p)
            .map_err(MediaError::ff("Opus decode"))?;
        let mut written = 0usize;
        loop {
            match self.dec.receive_frame(&mut self.frame) {
                Ok(()) => {
                    let n = self.frame.samples();
                    let ch = self.channels;
                    let room = pcm.len() / ch - written;
                    let n = n.min(room);
                    let out = &mut pcm[written * ch..(written + n) * ch];
                    let to_i16 = |v: f32| (v.clamp(-1.0, 1.0) * 32767.0) as i16;
                    match self.frame.format() {
                        Sample::F32(sample::Type::Planar) => {
                            for c in 0..ch {
                                let plane = self.frame.plane::<f32>(c.min(self.frame.planes() - 1));
                                for (i, v) in plane[..n].iter().enumerate() {
                                    out[i * ch + c] = to_i16(*v);
                                }
                            }
                        }
                        Sample::F32(sample::Type::Packed) => {
                            let data = self.frame.data(0);
                            for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                                let v = f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                                *o = to_i16(v);
                            }
                        }
                        Sample::I16(sample::Type::Packed) => {
                            let data = self.frame.data(0);
                            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                                *o = i16::from_ne_bytes([b[0], b[1]]);
                            }
                        }
                        other => {
                            return Err(MediaError::invalid(
                                "decoded audio",
                                format!("sample format {other:?}"),
                            ));
                        }
                    }
                    written += n;
                }
                Err(e) if crate::h264::is_again(e) => break,
                Err(e) => return Err(MediaError::ff("Opus receive_frame")(e)),
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Crossings of zero going up, in interleaved channel 0.
    fn rising_crossings(pcm: &[i16], ch: usize) -> usize {
        pcm.chunks_exact(ch)
            .map(|f| f[0])
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] < 0 && w[1] >= 0)
            .count()
    }

    #[test]
    fn a_tone_survives_opus_at_its_pitch() {
        let fmt = OPUS_48K_STEREO_10MS;
        let mut src = ToneSource::new(fmt, 440.0);
        let mut enc = OpusEncoder::new(fmt, 96_000).unwrap();
        let mut dec = OpusDecoder::new(fmt).unwrap();
        let mut pcm = vec![0i16; 960];
        let mut out = vec![0i16; 960 * 4];
        let mut packet = Vec::new();
        let mut decoded = Vec::new();
        for _ in 0..100 {
            src.read(&mut pcm).unwrap();
            enc.encode(&pcm, &mut packet).unwrap();
            assert!(!packet.is_empty() && packet.len() < 400, "{}", packet.len());
            let n = dec.decode(&packet, &mut out).unwrap();
            decoded.extend_from_slice(&out[..n * 2]);
        }
        // 1 s of audio; skip the first 100 ms (encoder delay and ramp-up).
        let tail = &decoded[9600..];
        let seconds = tail.len() as f64 / 2.0 / 48_000.0;
        let hz = rising_crossings(tail, 2) as f64 / seconds;
        assert!((hz - 440.0).abs() < 10.0, "decoded pitch {hz} Hz");
        let peak = tail.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((6000..=11000).contains(&peak), "peak {peak}");
    }

    #[test]
    fn refuses_formats_opus_does_not_take() {
        let bad = AudioFormat {
            sample_rate: 44_100,
            channels: 2,
            frame_samples: 441,
        };
        assert!(OpusEncoder::new(bad, 64_000).is_err());
        assert!(OpusDecoder::new(bad).is_err());
    }
}
