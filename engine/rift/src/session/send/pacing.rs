//! Pacing: the pacer's rate from the target bitrate, the latest frame's size and the path's
//! queue, and its burst from the rate and the driver's GSO batch.
//!
//! Latency wants a frame to leave at once; a bottleneck wants it spread. The floor is the
//! spread rule: a frame leaves within half an interval, at 1.5 to 4 × the target. Above it,
//! frames may leave within [`FAST_SHARE`] of an interval (about 1 ms at 60 fps) as long as the
//! path shows no queue: the burst cap opens by ×1.25 per feedback report while DELTA is
//! stable, the report lost nothing and the queueing delay is under [`QUIET_QUEUE`], and halves
//! (never below the spread rule) once it passes [`BUSY_QUEUE`], a report shows loss (a
//! shallow buffer drops a burst before it delays it), DELTA is Congested, or DELTA sees the
//! queue rise past [`QUIET_QUEUE`]. A rise below that is held, not punished: on a
//! sub-millisecond path the scheduler's noise alone makes DELTA see one, and closing the cap
//! on it once made frames leave at the spread rule's rate, 2-4 ms instead of 0.3 ms.
//! Each feedback's RTT comes from the newest datagram, the end of a burst, so a burst that
//! overruns a bottleneck shows as queueing within one report. On a free path frames leave in ~1 ms; on a bottleneck pacing
//! falls back to the spread rule.

use std::time::Duration;

use super::Sender;

/// Pacing rate relative to the target bitrate: frames drain within about 2/3 of an interval.
pub(super) const PACING_GAIN: f64 = 1.5;

/// Fastest spread pacing relative to the target, for frames much larger than average; also
/// where the burst cap starts and the lowest it closes to.
pub(super) const MAX_BURST_GAIN: f64 = 4.0;

/// Share of a frame interval a frame may take to leave when the path has room.
pub(super) const FAST_SHARE: f64 = 1.0 / 16.0;

/// Highest burst cap relative to the target.
const MAX_FAST_GAIN: f64 = 64.0;

/// Queueing delay under which the burst cap opens.
const QUIET_QUEUE: Duration = Duration::from_millis(1);

/// Queueing delay over which the burst cap halves.
const BUSY_QUEUE: Duration = Duration::from_millis(3);

/// What one feedback report says about the path, for the burst cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathView {
    /// DELTA is Stable and the report lost nothing.
    Calm,
    /// DELTA sees the queueing delay grow. On a sub-millisecond path scheduling noise alone
    /// does that, so it only closes the cap past [`QUIET_QUEUE`].
    Rising,
    /// The report lost packets or DELTA is Congested: a burst overran a buffer.
    Overrun,
}

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
        let spread = self
            .frame_bps
            .clamp(target * PACING_GAIN, target * MAX_BURST_GAIN);
        let cap = self
            .burst_cap
            .clamp(target * MAX_BURST_GAIN, target * MAX_FAST_GAIN);
        let rate = spread.max(self.fast_bps.min(cap));
        self.pacer.set_rate(rate as u64);
        self.resize_burst();
    }

    /// Opens or closes the burst cap from DELTA's view of the path after a feedback report
    /// (see the module docs): `queue` is the estimated queueing delay.
    pub(crate) fn on_queue_delay(&mut self, queue: Duration, path: PathView) {
        let target = self.target_bps as f64;
        let (low, high) = (target * MAX_BURST_GAIN, target * MAX_FAST_GAIN);
        let cap = self.burst_cap.clamp(low, high);
        let overrun = match path {
            PathView::Overrun => true,
            // A rising queue closes the cap once it is more than noise.
            PathView::Rising => queue >= QUIET_QUEUE,
            PathView::Calm => false,
        };
        self.burst_cap = if overrun || queue > BUSY_QUEUE {
            (cap / 2.0).max(low)
        } else if path == PathView::Calm && queue < QUIET_QUEUE {
            (cap * 1.25).min(high)
        } else {
            cap
        };
        self.pace();
    }
}
