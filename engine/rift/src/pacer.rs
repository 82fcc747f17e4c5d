//! Pacer: a token bucket that spreads media datagrams at `rate` so a frame never leaves as one
//! burst. The bucket holds at most `burst` bytes (a few datagrams), refilled continuously.

use std::time::{Duration, Instant};

/// Token-bucket pacer.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate_bps: u64,
    burst_bytes: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Pacer {
    /// A pacer at `rate_bps` allowing bursts of `burst_bytes`.
    pub fn new(rate_bps: u64, burst_bytes: usize) -> Self {
        Self {
            rate_bps: rate_bps.max(1),
            burst_bytes: burst_bytes as f64,
            tokens: burst_bytes as f64,
            last: None,
        }
    }

    /// Changes the pacing rate (takes effect from now on).
    pub fn set_rate(&mut self, rate_bps: u64) {
        self.rate_bps = rate_bps.max(1);
    }

    /// Changes the bucket size (tokens above the new size are dropped).
    pub fn set_burst(&mut self, burst_bytes: usize) {
        self.burst_bytes = burst_bytes as f64;
        self.tokens = self.tokens.min(self.burst_bytes);
    }

    /// Bucket size, bytes.
    pub fn burst_bytes(&self) -> usize {
        self.burst_bytes as usize
    }

    /// Current pacing rate, bit/s.
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate_bps as f64 / 8.0).min(self.burst_bytes);
        }
        self.last = Some(now);
    }

    /// When a datagram of `len` bytes may leave: `now` if allowed already. Does not change
    /// the bucket.
    pub fn next_send_time(&self, now: Instant, len: usize) -> Instant {
        let tokens = match self.last {
            Some(last) => {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                (self.tokens + dt * self.rate_bps as f64 / 8.0).min(self.burst_bytes)
            }
            None => self.tokens,
        };
        let need = len as f64 - tokens;
        if need <= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(need * 8.0 / self.rate_bps as f64)
        }
    }

    /// Records that `len` bytes left at `now`.
    pub fn on_sent(&mut self, now: Instant, len: usize) {
        self.refill(now);
        self.tokens -= len as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_datagrams_at_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(8_000_000, 2400); // 1 MB/s
        let mut now = t0;
        let mut sent = 0usize;
        while now < t0 + Duration::from_secs(1) {
            let at = p.next_send_time(now, 1200);
            now = at.max(now);
            p.on_sent(now, 1200);
            sent += 1200;
        }
        // ~1 MB in the first second plus the initial burst.
        assert!((1_000_000..=1_004_000).contains(&sent), "{sent}");
    }
}
