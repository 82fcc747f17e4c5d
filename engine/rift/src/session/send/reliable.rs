//! The reliable control channel: messages retransmitted until acknowledged, within a span
//! of sequence numbers the receiver's duplicate filter can tell apart.

use std::time::{Duration, Instant};

use super::{Class, Sender};
use crate::{proto, session::SessionError};

/// Reliable sequence numbers a sender may have in flight past the oldest unacknowledged
/// one. The receiver's duplicate filter is a 128-wide replay window, and it acknowledges
/// what falls below it as a duplicate; keeping every first transmission within 96 of the
/// oldest outstanding one makes "below the window" always mean "already delivered".
pub(super) const RELIABLE_SPAN: u64 = 96;

/// Reliable messages kept awaiting acknowledgement (each in a buffer of at most 2 KiB: about
/// 2 MiB). A peer that never acknowledges, while its Hellos or refused file offers each
/// queue a reliable answer, would otherwise grow the queue without bound: past this the
/// session closes ([`crate::session::CloseReason::ReliableQueueFull`]).
pub const MAX_UNACKED: usize = 1024;

#[derive(Debug)]
pub(super) struct Unacked {
    pub(super) seq: u64,
    pub(super) class: Class,
    pub(super) buf: Vec<u8>,
    pub(super) next_send: Instant,
    pub(super) sends: u32,
}

impl Sender {
    /// Retransmission timeout for the reliable channel. Acknowledgements ride the next
    /// feedback report, which goes out every `srtt / 4` (5..25 ms): that delay is added on
    /// top of the RTT estimate (QUIC's max_ack_delay), or every ack would race its timer.
    pub(super) fn rto(&self) -> Duration {
        self.srtt
            .map_or(Duration::from_millis(250), |s| {
                let ack_delay = (s / 4).clamp(Duration::from_millis(5), Duration::from_millis(25));
                s + 4 * self.rttvar + ack_delay + Duration::from_millis(5)
            })
            .max(Duration::from_millis(20))
    }

    /// Queues a message on the reliable channel: retransmitted until acknowledged.
    pub(crate) fn queue_reliable(
        &mut self,
        class: Class,
        mut msg: proto::Message,
        now: Instant,
    ) -> Result<u64, SessionError> {
        if self.unacked.len() >= MAX_UNACKED {
            self.reliable_overflow = true;
            return Err(SessionError::ReliableQueueFull);
        }
        let seq = self.alloc_seq();
        msg.reliable_seq = seq;
        let buf = self.encode(&msg)?;
        self.push_reliable_encoded(seq, class, buf, now)?;
        Ok(seq)
    }

    /// Takes the next reliable sequence number (for messages encoded by the caller).
    pub(crate) fn alloc_seq(&mut self) -> u64 {
        let seq = self.next_reliable;
        self.next_reliable += 1;
        seq
    }

    /// Queues an encoded reliable message whose `reliable_seq` came from [`Self::alloc_seq`].
    /// Refused (and the overflow flagged) when [`MAX_UNACKED`] messages already wait.
    pub(crate) fn push_reliable_encoded(
        &mut self,
        seq: u64,
        class: Class,
        buf: Vec<u8>,
        now: Instant,
    ) -> Result<(), SessionError> {
        if self.unacked.len() >= MAX_UNACKED {
            self.reliable_overflow = true;
            self.pool.put(buf);
            return Err(SessionError::ReliableQueueFull);
        }
        self.unacked.push_back(Unacked {
            seq,
            class,
            buf,
            next_send: now,
            sends: 0,
        });
        Ok(())
    }

    /// Index of reliable message `seq` in the queue (which is in sequence order).
    pub(super) fn unacked_index(&self, seq: u64) -> Option<usize> {
        self.unacked.binary_search_by_key(&seq, |u| u.seq).ok()
    }

    /// Sequence numbers that may still be allocated before first transmissions stall on
    /// [`RELIABLE_SPAN`].
    pub(crate) fn reliable_room(&self) -> u64 {
        let oldest = self.unacked.front().map_or(self.next_reliable, |u| u.seq);
        (oldest + RELIABLE_SPAN).saturating_sub(self.next_reliable)
    }

    /// Stops retransmitting `seq` (its transfer was abandoned).
    pub(crate) fn forget_reliable(&mut self, seq: u64) {
        if let Some(i) = self.unacked_index(seq) {
            if let Some(u) = self.unacked.remove(i) {
                self.pool.put(u.buf);
            }
        }
    }

    /// Reliable messages awaiting acknowledgement.
    pub(crate) fn unacked_len(&self) -> usize {
        self.unacked.len()
    }
}
