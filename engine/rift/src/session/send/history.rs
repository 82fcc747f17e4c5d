//! The history of sent packets: when each left (for RTT samples) and, for media, what it
//! carried, so a NACK can be served until the media's deadline.

use std::time::{Duration, Instant};

use super::{Body, Kind, Pending, Sender};

pub(super) const HISTORY: usize = 2048;

/// Retransmissions one sent packet gets for NACKs: a receiver asks twice at most.
const MAX_NACK_SERVES: u8 = 2;

#[derive(Debug, Default)]
pub(super) struct HistEntry {
    pub(super) packet_id: u64,
    pub(super) sent_at: Option<Instant>,
    /// What was sent, kept for NACK service (media only).
    body: Option<Body>,
    deadline: Option<Instant>,
    /// Retransmissions served for NACKs of this packet.
    served: u8,
}

impl Sender {
    pub(super) fn remember(
        &mut self,
        pid: u64,
        now: Instant,
        body: Body,
        deadline: Option<Instant>,
        kind: Kind,
    ) {
        let slot = (pid % HISTORY as u64) as usize;
        let keep = kind.is_media();
        let old = std::mem::replace(
            &mut self.history[slot],
            HistEntry {
                packet_id: pid,
                sent_at: Some(now),
                body: None,
                deadline,
                served: 0,
            },
        );
        if let Some(b) = old.body {
            self.recycle(b);
        }
        if keep {
            self.history[slot].body = Some(body);
        } else {
            self.recycle(body);
        }
        self.expire_history(now, pid);
    }

    /// Releases what sent media whose deadline has passed kept for NACKs, oldest first,
    /// stopping at the first one still useful (ids older than the history are skipped), so
    /// the buffers in circulation stay few and warm in cache.
    fn expire_history(&mut self, now: Instant, newest: u64) {
        self.history_expiry = self
            .history_expiry
            .max(newest.saturating_sub(HISTORY as u64 - 1));
        while self.history_expiry < newest {
            let e = &mut self.history[(self.history_expiry % HISTORY as u64) as usize];
            if e.packet_id == self.history_expiry && e.body.is_some() {
                if e.deadline.is_some_and(|d| d > now) {
                    return;
                }
                if let Some(b) = e.body.take() {
                    self.recycle(b);
                }
            }
            self.history_expiry += 1;
        }
    }

    /// A NACK listed these packet ids: re-queue those still useful before their deadline.
    pub(crate) fn on_nack(&mut self, now: Instant, ids: &[u64]) -> u32 {
        let half_rtt = self.srtt.unwrap_or(Duration::ZERO) / 2;
        let mut n = 0;
        for &pid in ids.iter().take(64) {
            let slot = (pid % HISTORY as u64) as usize;
            let e = &mut self.history[slot];
            if e.packet_id != pid
                || e.served >= MAX_NACK_SERVES
                || e.deadline.is_none_or(|d| d <= now + half_rtt)
            {
                self.nacks_ignored += 1;
                continue;
            }
            e.served += 1;
            let e = &self.history[slot];
            let deadline = e.deadline;
            let p = match &e.body {
                Some(Body::Buf(src)) => {
                    let mut b = self.pool.get();
                    b.extend_from_slice(src);
                    Pending::buf(b, deadline, Kind::Retransmit)
                }
                Some(sent) => {
                    let (Some(body), Some(len)) = (sent.frame_ref(), self.frame_ref_len(sent))
                    else {
                        continue;
                    };
                    Pending {
                        body,
                        len,
                        deadline,
                        kind: Kind::Retransmit,
                    }
                }
                None => continue,
            };
            self.media.push_front(p);
            n += 1;
        }
        n
    }
}
