//! The transport feedback report: counters since the previous one, the ack list of the
//! reliable channel, and the reporting schedule.

use std::time::{Duration, Instant};

use super::Receiver;
use crate::proto;

/// Feedback counters since the previous report.
#[derive(Debug, Default)]
pub(super) struct Acc {
    pub(super) received: u32,
    pub(super) lost: u32,
    pub(super) bytes: u64,
    pub(super) first_at: Option<Instant>,
    pub(super) highest: u64,
    pub(super) highest_at: Option<Instant>,
    pub(super) recovered: u32,
    pub(super) frame_losses: Vec<u32>,
    pub(super) acked: Vec<u64>,
}

impl Receiver {
    /// Feedback due at `now`, if any; `interval` is the reporting period.
    pub(crate) fn poll_feedback(
        &mut self,
        now: Instant,
        interval: Duration,
    ) -> Option<proto::Message> {
        let due = self.next_feedback?;
        if now < due {
            return None;
        }
        let a = &mut self.acc;
        if a.received == 0 && a.acked.is_empty() {
            self.next_feedback = None;
            return None;
        }
        let span = a
            .first_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let fb = proto::TransportFeedback {
            highest_packet_id: a.highest,
            ack_delay_us: a
                .highest_at
                .map_or(0, |t| now.saturating_duration_since(t).as_micros() as u32),
            received_packets: a.received,
            lost_packets: a.lost,
            received_bytes: a.bytes,
            interval_us: span.as_micros().min(u128::from(u32::MAX)) as u32,
            fec_recovered: a.recovered,
            jitter_us: self.jitter_us as u32,
            frame_losses: std::mem::take(&mut a.frame_losses),
            acked_reliable: std::mem::take(&mut a.acked),
        };
        a.received = 0;
        a.lost = 0;
        a.bytes = 0;
        a.first_at = Some(now);
        a.recovered = 0;
        self.next_feedback = Some(now + interval);
        Some(proto::Message {
            content: Some(proto::message::Content::Control(proto::ControlMessage {
                content: Some(proto::control_message::Content::Feedback(fb)),
            })),
            reliable_seq: 0,
        })
    }

    /// Gives the feedback message's vectors back after encoding (keeps their capacity).
    pub(crate) fn reclaim(&mut self, msg: proto::Message) {
        if let Some(proto::message::Content::Control(proto::ControlMessage {
            content: Some(proto::control_message::Content::Feedback(mut fb)),
        })) = msg.content
        {
            if self.acc.frame_losses.is_empty() {
                fb.frame_losses.clear();
                self.acc.frame_losses = fb.frame_losses;
            }
            if self.acc.acked.is_empty() {
                fb.acked_reliable.clear();
                self.acc.acked = fb.acked_reliable;
            }
        }
    }

    pub(crate) fn next_feedback_time(&self) -> Option<Instant> {
        self.next_feedback
    }
}
