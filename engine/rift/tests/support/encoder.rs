//! An encoder that follows the host session's `TargetBitrate` events, as the host runtime
//! does: one frame of `bitrate / 8 / fps` bytes every `1 / fps`.

use std::time::{Duration, Instant};

use wavry_rift::session::{Event, FrameMeta};

use super::Pair;

/// Sends frames from the pair's host at the rate its DELTA asks for.
pub struct FollowingEncoder {
    frame: Vec<u8>,
    /// The interval handed to `send_frame` (the stream's nominal frame time).
    interval: Duration,
    next: Instant,
    bitrate: u64,
    fps: u32,
    seen_events: usize,
    frames: u64,
}

impl FollowingEncoder {
    /// Starts at `start` with `bitrate` bit/s and `fps`.
    pub fn new(start: Instant, bitrate: u64, fps: u32) -> Self {
        Self {
            frame: vec![0x5A; 1 << 20],
            interval: Duration::from_secs(1) / fps,
            next: start,
            bitrate,
            fps,
            seen_events: 0,
            frames: 0,
        }
    }

    /// Runs the pair until `until`, sending every frame that falls due.
    pub fn drive(&mut self, p: &mut Pair, until: Instant) {
        p.run_until(until, |p| {
            for (_, e) in &p.host_events[self.seen_events..] {
                if let Event::TargetBitrate { bps, fps } = e {
                    self.bitrate = *bps;
                    self.fps = *fps;
                }
            }
            self.seen_events = p.host_events.len();
            while p.now >= self.next {
                let len = (self.bitrate / 8 / u64::from(self.fps)) as usize;
                let meta = FrameMeta {
                    timestamp_us: self.frames * 16_667,
                    ..FrameMeta::default()
                };
                p.host
                    .as_mut()
                    .unwrap()
                    .send_frame(p.now, &self.frame[..len], meta, self.interval)
                    .unwrap();
                self.frames += 1;
                self.next += Duration::from_secs(1) / self.fps;
            }
        });
    }
}
