//! A synthetic 60 fps video stream from host to client and the deadline bookkeeping that the
//! acceptance criteria are stated in.

use std::time::{Duration, Instant};

use super::Pair;
use wavry_rift::session::{Event, FrameMeta};

pub struct StreamResult {
    pub sent: usize,
    pub on_time: usize,
    pub late_or_lost: usize,
    pub parity_bytes: u64,
    pub video_bytes: u64,
    pub fec_recovered: u64,
    pub retransmitted: u64,
}

impl StreamResult {
    pub fn on_time_ratio(&self) -> f64 {
        self.on_time as f64 / self.sent as f64
    }
    pub fn fec_overhead(&self) -> f64 {
        self.parity_bytes as f64 / self.video_bytes as f64
    }
}

/// Streams `seconds` of `bitrate` video at `fps`, frames due `interval + rtt/2 + 15 ms` after
/// they are sent; counts frames that completed on time.
pub fn stream(p: &mut Pair, seconds: u64, fps: u32, bitrate: u64, rtt: Duration) -> StreamResult {
    stream_with(p, seconds, fps, bitrate, rtt, |_| {})
}

/// [`stream`], calling `extra(pair)` after every step (other traffic alongside the video).
pub fn stream_with(
    p: &mut Pair,
    seconds: u64,
    fps: u32,
    bitrate: u64,
    rtt: Duration,
    mut extra: impl FnMut(&mut Pair),
) -> StreamResult {
    assert!(p.connect(Duration::from_secs(10)), "pair did not connect");
    let interval = Duration::from_secs(1) / fps;
    let frame_bytes = (bitrate / 8 / u64::from(fps)) as usize;
    let deadline_after = interval + rtt / 2 + Duration::from_millis(15);
    let frame: Vec<u8> = (0..frame_bytes * 3).map(|i| (i * 31) as u8).collect();
    let mut sent_at: Vec<Instant> = Vec::new();
    let start = p.now;
    let total = (seconds * u64::from(fps)) as usize;
    let events_before = p.client_events.len();
    let stats_before = p.host.as_ref().unwrap().stats();
    let mut next = p.now;
    p.run_until(
        start + Duration::from_secs(seconds) + Duration::from_millis(300),
        |p| {
            while p.now >= next && sent_at.len() < total {
                let i = sent_at.len();
                // Keyframes every 2 s are 3x larger; P-frames vary ±20 %.
                let len = if i % (2 * fps as usize) == 0 {
                    frame_bytes * 3
                } else {
                    frame_bytes * (80 + (i * 37) % 41) / 100
                };
                let meta = FrameMeta {
                    timestamp_us: i as u64 * interval.as_micros() as u64,
                    keyframe: i % 120 == 0,
                    ..FrameMeta::default()
                };
                p.host
                    .as_mut()
                    .unwrap()
                    .send_frame(p.now, &frame[..len], meta, interval)
                    .unwrap();
                sent_at.push(p.now);
                next += interval;
            }
            p.wake_at = (sent_at.len() < total).then_some(next);
            extra(p);
        },
    );
    let mut on_time = 0;
    for (at, e) in &p.client_events[events_before..] {
        if let Event::Frame(f) = e {
            let i = f.frame_id as usize;
            if i < sent_at.len() && *at <= sent_at[i] + deadline_after {
                on_time += 1;
            }
        }
    }
    let s = p.host.as_ref().unwrap().stats();
    StreamResult {
        sent: sent_at.len(),
        on_time,
        late_or_lost: sent_at.len() - on_time,
        parity_bytes: s.parity_bytes - stats_before.parity_bytes,
        video_bytes: s.video_bytes - stats_before.video_bytes,
        fec_recovered: p.client.stats().fec_recovered,
        retransmitted: s.retransmitted - stats_before.retransmitted,
    }
}
