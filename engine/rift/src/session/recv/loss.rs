//! Loss detection: gaps in the authenticated packet ids, and the NACKs that ask for them.

use std::time::{Duration, Instant};

use super::{MAX_MISSING, Receiver};
use crate::proto;

/// Packet ids per NACK message: 64 ids of up to 10 bytes fit any datagram (and a sender
/// serves no more than 64 per NACK).
const MAX_NACK_IDS: usize = 64;

impl Receiver {
    /// Counts an authenticated datagram for feedback and loss detection.
    pub(crate) fn on_packet(&mut self, now: Instant, pid: u64, wire_len: usize) {
        let a = &mut self.acc;
        a.received = a.received.saturating_add(1);
        a.bytes = a.bytes.saturating_add(wire_len as u64);
        a.first_at.get_or_insert(now);
        if pid >= a.highest {
            a.highest = pid;
            a.highest_at = Some(now);
        }
        if pid >= self.expected {
            let gaps = pid - self.expected;
            // Only the newest MAX_MISSING gaps fit the NACK list: older ones would be evicted
            // as soon as they were pushed, so a far jump (a peer's id leaping to 2^62) is one
            // step, not a walk over every id it skipped.
            let from = if gaps > MAX_MISSING as u64 {
                self.packet_id_jumps += 1;
                self.missing.clear();
                pid - MAX_MISSING as u64
            } else {
                self.expected
            };
            for gap in from..pid {
                if self.missing.len() == MAX_MISSING {
                    self.missing.pop_front();
                }
                self.missing.push_back((gap, now, 0));
            }
            a.lost = a
                .lost
                .saturating_add(u32::try_from(gaps).unwrap_or(u32::MAX));
            self.expected = pid.saturating_add(1);
        } else if let Some(i) = self.missing.iter().position(|&(m, _, _)| m == pid) {
            // Reordered, not lost.
            self.missing.remove(i);
            a.lost = a.lost.saturating_sub(1);
        }
        if self.next_feedback.is_none() {
            self.next_feedback = Some(now);
        }
    }

    /// A NACK for packets missing longer than `hold`, re-asked every `retry` (twice at most).
    pub(crate) fn poll_nack(
        &mut self,
        now: Instant,
        hold: Duration,
        retry: Duration,
    ) -> Option<proto::Message> {
        let mut ids = Vec::new();
        for m in &mut self.missing {
            if ids.len() == MAX_NACK_IDS {
                // The rest go in the next NACK: one must fit a datagram.
                break;
            }
            let wait = if m.2 == 0 { hold } else { retry };
            if now.saturating_duration_since(m.1) >= wait && m.2 < 2 {
                ids.push(m.0);
                m.1 = now;
                m.2 += 1;
            }
        }
        while self
            .missing
            .front()
            .is_some_and(|m| m.2 >= 2 && now.saturating_duration_since(m.1) >= retry)
        {
            self.missing.pop_front();
        }
        (!ids.is_empty()).then_some(proto::Message {
            content: Some(proto::message::Content::Control(proto::ControlMessage {
                content: Some(proto::control_message::Content::Nack(proto::Nack {
                    packet_ids: ids,
                })),
            })),
            reliable_seq: 0,
        })
    }

    /// Next instant a NACK could become due.
    pub(crate) fn next_nack_time(&self, hold: Duration, retry: Duration) -> Option<Instant> {
        self.missing
            .iter()
            .filter(|m| m.2 < 2)
            .map(|m| m.1 + if m.2 == 0 { hold } else { retry })
            .min()
    }
}
