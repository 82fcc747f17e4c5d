//! The pixel code: a frame number and a capture timestamp written into the image itself, as a
//! strip of 8x8 luma blocks (black = 0, white = 1) along the top-left, so they survive lossy
//! H.264 and let a client measure glass to glass from what it decoded, not from metadata.
//!
//! 112 bits, most significant first: a magic byte `0xA5`, the frame number (u32), the capture
//! time in µs since the UNIX epoch (u64) and a CRC-8 over the 13 bytes before it. Blocks run
//! left to right, then down in rows of `width / 8` blocks. The blocks sit on the 8x8 grid of
//! H.264's transforms and are read from their inner 4x4 pixels against mid-grey, so even a
//! heavily quantised stream reads back exactly; a CRC mismatch reports the strip unreadable
//! rather than a wrong number.

use crate::RawFrame;

/// Side of one code block in pixels.
pub const BLOCK: u32 = 8;
/// Bits in the code.
pub const BITS: u32 = 112;
const MAGIC: u8 = 0xA5;
const BLACK: u8 = 16;
const WHITE: u8 = 235;
const CRC8: crc::Crc<u8> = crc::Crc::<u8>::new(&crc::CRC_8_SMBUS);

/// What the strip carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Frame number at the source.
    pub frame: u32,
    /// Capture time, µs since the UNIX epoch.
    pub capture_us: u64,
}

/// Height in pixels of the strip for frames `width` wide.
pub fn strip_height(width: u32) -> u32 {
    let per_row = (width / BLOCK).max(1);
    BITS.div_ceil(per_row) * BLOCK
}

fn bytes(s: Stamp) -> [u8; 14] {
    let mut b = [0u8; 14];
    b[0] = MAGIC;
    b[1..5].copy_from_slice(&s.frame.to_be_bytes());
    b[5..13].copy_from_slice(&s.capture_us.to_be_bytes());
    b[13] = CRC8.checksum(&b[..13]);
    b
}

/// Top-left pixel of block `i`.
fn block_origin(width: u32, i: u32) -> (usize, usize) {
    let per_row = width / BLOCK;
    (
        ((i % per_row) * BLOCK) as usize,
        ((i / per_row) * BLOCK) as usize,
    )
}

/// Writes `stamp` into the luma plane of `frame` (which must be at least 64 pixels wide and
/// [`strip_height`] tall); the rest of the strip's rows are painted mid-grey.
pub fn write(frame: &mut RawFrame, stamp: Stamp) {
    let width = frame.width;
    let stride = width as usize;
    let rows = strip_height(width) as usize;
    let code = bytes(stamp);
    let y = frame.y_mut();
    y[..rows * stride].fill(128);
    for i in 0..BITS {
        let bit = code[(i / 8) as usize] >> (7 - i % 8) & 1;
        let v = if bit == 1 { WHITE } else { BLACK };
        let (x0, y0) = block_origin(width, i);
        for row in y0..y0 + BLOCK as usize {
            let start = row * stride + x0;
            y[start..start + BLOCK as usize].fill(v);
        }
    }
}

/// Reads the stamp back from a (decoded) frame; `None` when the strip does not check out.
pub fn read(frame: &RawFrame) -> Option<Stamp> {
    let width = frame.width;
    if width < 64 || frame.height < strip_height(width) {
        return None;
    }
    let stride = width as usize;
    let y = frame.y();
    let mut code = [0u8; 14];
    for i in 0..BITS {
        let (x0, y0) = block_origin(width, i);
        let mut sum = 0u32;
        for row in y0 + 2..y0 + 6 {
            let start = row * stride + x0 + 2;
            sum += y[start..start + 4]
                .iter()
                .map(|&p| u32::from(p))
                .sum::<u32>();
        }
        if sum / 16 >= 128 {
            code[(i / 8) as usize] |= 1 << (7 - i % 8);
        }
    }
    if code[0] != MAGIC || CRC8.checksum(&code[..13]) != code[13] {
        return None;
    }
    Some(Stamp {
        frame: u32::from_be_bytes(code[1..5].try_into().ok()?),
        capture_us: u64::from_be_bytes(code[5..13].try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly_at_several_widths() {
        for (w, h) in [(64, 128), (320, 240), (1280, 720), (1920, 1080)] {
            let mut f = RawFrame::new(w, h);
            let s = Stamp {
                frame: 0xDEAD_BEEF,
                capture_us: 1_764_000_000_123_456,
            };
            write(&mut f, s);
            assert_eq!(read(&f), Some(s), "{w}x{h}");
        }
    }

    #[test]
    fn survives_noise_below_the_threshold_and_rejects_a_flipped_bit() {
        let mut f = RawFrame::new(320, 240);
        let s = Stamp {
            frame: 7,
            capture_us: 42,
        };
        write(&mut f, s);
        for (i, p) in f.y_mut().iter_mut().enumerate() {
            // ±60 of deterministic "noise": quantisation never moves a block this far.
            let n = i32::try_from(i * 7919 % 121).unwrap() - 60;
            *p = (i32::from(*p) + n).clamp(0, 255) as u8;
        }
        assert_eq!(read(&f), Some(s));
        // Invert one whole block (bit 20): the CRC catches it.
        let (x0, y0) = block_origin(320, 20);
        for row in y0..y0 + 8 {
            for x in x0..x0 + 8 {
                let p = &mut f.y_mut()[row * 320 + x];
                *p = 255 - *p;
            }
        }
        assert_eq!(read(&f), None);
    }

    #[test]
    fn blank_or_tiny_frames_are_unreadable() {
        assert_eq!(read(&RawFrame::new(320, 240)), None);
        assert_eq!(read(&RawFrame::new(64, 8)), None);
    }
}
