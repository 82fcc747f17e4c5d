//! Transport feedback from the peer: reliable acknowledgements, the RTT estimate, the
//! delivery rate, and the loss figures that steer the FEC policy.

use std::time::{Duration, Instant};

use super::{HISTORY, MAX_DATAGRAM_BUF, Sender};

/// Most acknowledgements taken from one feedback report (a receiver lists at most 64).
const MAX_ACKS_PER_REPORT: usize = 256;

/// Largest acknowledgement delay believed from feedback: a receiver reports every 5..25 ms,
/// so more is a lie that would shave the RTT sample towards zero.
const MAX_ACK_DELAY: Duration = Duration::from_millis(100);

impl Sender {
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Processes transport feedback: RTT sample, delivery rate, reliable acks, FEC policy.
    /// Returns (rtt sample, delivery rate bps).
    /// `congested`: the path's queue is over DELTA's limit, so losses in this report are
    /// congestion drops that parity would only worsen; they do not raise the FEC rate.
    pub(crate) fn on_feedback(
        &mut self,
        now: Instant,
        fb: &crate::feedback::FeedbackRef<'_>,
        congested: bool,
    ) -> (Option<Duration>, Option<u64>) {
        for seq in fb.acked_reliable.iter().take(MAX_ACKS_PER_REPORT) {
            if let Some(i) = self.unacked_index(seq) {
                if let Some(u) = self.unacked.remove(i) {
                    self.pool.put(u.buf);
                }
            }
        }
        if !congested {
            self.fec_policy.on_feedback(
                fb.received_packets,
                fb.lost_packets,
                fb.frame_losses
                    .iter()
                    .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
            );
        }
        let ack_delay = Duration::from_micros(u64::from(fb.ack_delay_us));
        let mut clamped = ack_delay > MAX_ACK_DELAY;
        let e = &self.history[(fb.highest_packet_id % HISTORY as u64) as usize];
        let rtt = (e.packet_id == fb.highest_packet_id)
            .then_some(e.sent_at)
            .flatten()
            .map(|t| {
                now.saturating_duration_since(t)
                    .saturating_sub(ack_delay.min(MAX_ACK_DELAY))
            })
            .filter(|r| !r.is_zero());
        if let Some(r) = rtt {
            match self.srtt {
                None => {
                    self.srtt = Some(r);
                    self.rttvar = r / 2;
                }
                Some(s) => {
                    let diff = s.abs_diff(r);
                    self.rttvar = (self.rttvar * 3 + diff) / 4;
                    self.srtt = Some((s * 7 + r) / 8);
                }
            }
        }
        if fb.interval_us > 0 {
            // A datagram is at most MAX_DATAGRAM_BUF bytes: a report cannot claim more.
            let most = u64::from(fb.received_packets).saturating_mul(MAX_DATAGRAM_BUF as u64);
            clamped |= fb.received_bytes > most;
            if self.delivery.len() == 64 {
                self.delivery.pop_front();
            }
            self.delivery
                .push_back((now, fb.received_bytes.min(most), fb.interval_us));
        }
        // Delivery rate over the most recent ≥ 100 ms of feedback.
        let mut bytes = 0u64;
        let mut us = 0u64;
        for &(_, b, i) in self.delivery.iter().rev() {
            bytes = bytes.saturating_add(b);
            us += u64::from(i);
            if us >= 100_000 {
                break;
            }
        }
        let rate = (us >= 20_000).then(|| {
            let bps = u128::from(bytes) * 8 * 1_000_000 / u128::from(us);
            // Nothing arrives faster than this side sends: at most its pacing rate (which
            // runs ahead of the target), with room for bursts.
            let most = self.pacer.rate_bps().saturating_mul(2);
            clamped |= bps > u128::from(most);
            u64::try_from(bps).unwrap_or(u64::MAX).min(most)
        });
        if clamped {
            self.feedback_clamped += 1;
        }
        (rtt, rate)
    }
}
