//! The headless default source: a moving test pattern stamped with its frame number and
//! capture time ([`crate::stamp`]).

use crate::{MediaError, RawFrame, VideoFormat, VideoSource, stamp};

/// A moving pattern: diagonal bands scrolling right, a bright square bouncing across, colour
/// that drifts; the top strip carries the frame number and capture timestamp.
#[derive(Debug)]
pub struct SyntheticSource {
    format: VideoFormat,
    frame: u32,
    clock: fn() -> u64,
    /// One row of the moving bands, 256 pixels wider than the frame.
    band: Vec<u8>,
    /// One row of the U plane.
    chroma: Vec<u8>,
}

impl SyntheticSource {
    /// A source of `format` frames; timestamps from [`crate::wall_clock_us`].
    pub fn new(format: VideoFormat) -> Result<Self, MediaError> {
        Self::with_clock(format, crate::wall_clock_us)
    }

    /// A source whose capture timestamps come from `clock` (µs), for deterministic tests.
    pub fn with_clock(format: VideoFormat, clock: fn() -> u64) -> Result<Self, MediaError> {
        format.validate()?;
        if format.height < stamp::strip_height(format.width) + 16 {
            return Err(MediaError::invalid(
                "video size",
                format!(
                    "{}x{} leaves no room below the frame code",
                    format.width, format.height
                ),
            ));
        }
        Ok(Self {
            format,
            frame: 0,
            clock,
            band: Vec::new(),
            chroma: Vec::new(),
        })
    }

    /// Number the next captured frame will carry.
    pub fn next_frame_number(&self) -> u32 {
        self.frame
    }
}

impl VideoSource for SyntheticSource {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn format(&self) -> VideoFormat {
        self.format
    }

    fn capture(&mut self, frame: &mut RawFrame) -> Result<(), MediaError> {
        let (w, h) = (self.format.width, self.format.height);
        frame.reshape(w, h);
        let n = self.frame;
        let shift = (n as usize).wrapping_mul(4);
        let side = (h / 4).max(16) as usize;
        let span_x = (w as usize).saturating_sub(side).max(1);
        let span_y = (h as usize).saturating_sub(side).max(1);
        let bounce = |t: usize, span: usize| {
            let p = t % (2 * span);
            if p < span { p } else { 2 * span - p }
        };
        let bx = bounce(n as usize * 7, span_x);
        let by = bounce(n as usize * 5, span_y);
        // Every luma row is a window into one precomputed band row, every U row the same
        // row, every V row one value: row copies, cheap even in an unoptimised build.
        let w_us = w as usize;
        self.band.resize(w_us + 256, 0);
        for (t, p) in self.band.iter_mut().enumerate() {
            let t = t & 0xff;
            // Triangle wave: smooth bands the encoder can follow.
            let tri = (if t < 128 { t } else { 255 - t }) as u8;
            *p = 32 + tri + tri / 4;
        }
        let hue = (n % 256) as usize;
        self.chroma.resize(w_us / 2, 0);
        for (x, p) in self.chroma.iter_mut().enumerate() {
            *p = (64 + ((x + hue) & 0x7f)) as u8;
        }
        let [(y_plane, ys), (u_plane, cs), (v_plane, _)] = frame.planes_mut();
        for (row, line) in y_plane.chunks_exact_mut(ys).enumerate() {
            let off = (row / 2 + shift) & 0xff;
            line.copy_from_slice(&self.band[off..off + w_us]);
            if (by..by + side).contains(&row) {
                line[bx..bx + side].fill(235);
            }
        }
        for (row, (u, v)) in u_plane
            .chunks_exact_mut(cs)
            .zip(v_plane.chunks_exact_mut(cs))
            .enumerate()
        {
            u.copy_from_slice(&self.chroma);
            v.fill((64 + ((row + hue) & 0x7f)) as u8);
        }
        frame.capture_us = (self.clock)();
        stamp::write(
            frame,
            stamp::Stamp {
                frame: n,
                capture_us: frame.capture_us,
            },
        );
        self.frame = n.wrapping_add(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_consecutive_numbers_and_move() {
        let fmt = VideoFormat {
            width: 320,
            height: 240,
            fps: 30,
        };
        let mut src = SyntheticSource::with_clock(fmt, || 1_000).unwrap();
        let mut a = RawFrame::new(1, 1);
        let mut b = RawFrame::new(1, 1);
        src.capture(&mut a).unwrap();
        src.capture(&mut b).unwrap();
        assert_eq!(stamp::read(&a).map(|s| s.frame), Some(0));
        assert_eq!(
            stamp::read(&b).map(|s| (s.frame, s.capture_us)),
            Some((1, 1_000))
        );
        let strip = (stamp::strip_height(320) * 320) as usize;
        assert_ne!(a.y()[strip..], b.y()[strip..], "the picture moves");
    }

    #[test]
    fn refuses_sizes_without_room_for_the_code() {
        let fmt = VideoFormat {
            width: 64,
            height: 64,
            fps: 30,
        };
        assert!(SyntheticSource::new(fmt).is_err());
        let odd = VideoFormat {
            width: 321,
            height: 240,
            fps: 30,
        };
        assert!(SyntheticSource::new(odd).is_err());
    }
}
