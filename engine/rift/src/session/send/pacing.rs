//! Pacing: the pacer's rate from the target bitrate and the latest frame's size, and its
//! burst from the rate and the driver's GSO batch.

use super::Sender;

/// Pacing rate relative to the target bitrate: frames drain within about 2/3 of an interval.
pub(super) const PACING_GAIN: f64 = 1.5;

/// Fastest pacing relative to the target, for frames much larger than average.
const MAX_BURST_GAIN: f64 = 4.0;

impl Sender {
    /// Sizes the pacer's bucket like TCP's TSO autosizing: about 1 ms of the pacing rate, at
    /// least the configured burst, at most one batch the driver can send at once (GSO). At
    /// tens of Mbit/s this is the configured burst; on a fast path it lets a whole GSO batch
    /// leave in one send instead of a few datagrams per loop turn, while still spreading a
    /// frame over its pacing interval.
    pub(super) fn resize_burst(&mut self) {
        let per_ms = usize::try_from(self.pacer.rate_bps() / 8_000).unwrap_or(usize::MAX);
        let cap = self.batch.saturating_mul(self.max_datagram);
        let burst = self.base_burst.max(per_ms.min(cap));
        if burst != self.pacer.burst_bytes() {
            self.pacer.set_burst(burst);
        }
    }

    /// The encoder's share of `bps` once parity for a typical frame is paid for.
    pub(crate) fn encoder_budget(&self, bps: u64) -> u64 {
        let n = 32;
        let p = self.fec_policy.parity_for(n);
        bps * n as u64 / (n + p) as u64
    }

    pub(crate) fn set_target(&mut self, bps: u64) {
        self.target_bps = bps;
        self.pace();
    }

    /// Sets the pacer from the target and the latest frame's need. Latency first: a frame
    /// should leave within half an interval, so large frames (keyframes) are paced faster,
    /// but never above MAX_BURST_GAIN × target, so a keyframe cannot flood a bottleneck DELTA
    /// has measured. A target change re-clamps the frame's rate rather than replacing it: a
    /// change mid-keyframe once slowed the keyframe's tail to PACING_GAIN × target and it
    /// expired unsent (test `a_target_change_mid_keyframe_keeps_its_burst_rate`).
    pub(super) fn pace(&mut self) {
        let target = self.target_bps as f64;
        let rate = self
            .frame_bps
            .clamp(target * PACING_GAIN, target * MAX_BURST_GAIN);
        self.pacer.set_rate(rate as u64);
        self.resize_burst();
    }
}
