//! [`SendQueue`]: datagrams copied into one arena and grouped into GSO runs, for senders that
//! build many small datagrams between two sends (a forwarder's replies, single datagrams
//! forwarded from many flows to one peer). Allocated once; pushing never allocates.

use std::net::{Ipv4Addr, SocketAddr};

use crate::{Backend, MAX_UDP_PAYLOAD, Transmit};

/// Transmits handed to the backend per `send` call by [`SendQueue::flush`].
pub const SEND_CHUNK: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Run {
    dst: SocketAddr,
    start: usize,
    len: usize,
    seg: usize,
    count: usize,
    closed: bool,
}

/// Datagrams waiting to be sent, copied into an arena; consecutive datagrams to the same
/// destination with the same size (the last may be shorter) form one GSO run.
#[derive(Debug)]
pub struct SendQueue {
    arena: Box<[u8]>,
    used: usize,
    runs: Vec<Run>,
    max_segments: usize,
}

impl SendQueue {
    /// A queue of `arena_bytes` bytes and at most `max_runs` sends, whose runs hold at most
    /// `max_segments` datagrams (1 without GSO).
    pub fn new(max_segments: usize, arena_bytes: usize, max_runs: usize) -> Self {
        Self {
            arena: vec![0u8; arena_bytes].into_boxed_slice(),
            used: 0,
            runs: Vec::with_capacity(max_runs.max(1)),
            max_segments: max_segments.max(1),
        }
    }

    /// Queues one datagram for `dst`; false when the queue is full (the caller counts a drop
    /// or sends it another way).
    #[inline]
    pub fn push(&mut self, dst: SocketAddr, bytes: &[u8]) -> bool {
        let n = bytes.len();
        if self.used + n > self.arena.len() {
            return false;
        }
        if let Some(r) = self.runs.last_mut()
            && r.dst == dst
            && !r.closed
            && r.count < self.max_segments
            && n <= r.seg
            && n > 0
            && r.len + n <= MAX_UDP_PAYLOAD
            && r.start + r.len == self.used
        {
            self.arena[self.used..self.used + n].copy_from_slice(bytes);
            self.used += n;
            r.len += n;
            r.count += 1;
            r.closed = n < r.seg;
            return true;
        }
        if self.runs.len() == self.runs.capacity() {
            return false;
        }
        self.arena[self.used..self.used + n].copy_from_slice(bytes);
        self.runs.push(Run {
            dst,
            start: self.used,
            len: n,
            seg: n,
            count: 1,
            closed: false,
        });
        self.used += n;
        true
    }

    /// Datagrams queued.
    pub fn datagrams(&self) -> usize {
        self.runs.iter().map(|r| r.count).sum()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Limits runs to `max_segments` datagrams from now on (GSO refused by the device).
    pub fn set_max_segments(&mut self, max_segments: usize) {
        self.max_segments = max_segments.max(1);
    }

    /// Sends every run (up to [`SEND_CHUNK`] transmits per call) and empties the queue.
    /// Returns the datagrams whose send failed.
    pub fn flush(&mut self, socket: &mut (impl Backend + ?Sized)) -> u64 {
        let mut failed = 0u64;
        let blank = Transmit {
            dst: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            segment_size: None,
            ecn: None,
            contents: &[],
        };
        for chunk in self.runs.chunks(SEND_CHUNK) {
            let mut tx = [blank; SEND_CHUNK];
            for (t, r) in tx.iter_mut().zip(chunk) {
                *t = Transmit {
                    dst: r.dst,
                    segment_size: (r.count > 1).then_some(r.seg),
                    ecn: None,
                    contents: &self.arena[r.start..r.start + r.len],
                };
            }
            if let Err(e) = socket.send(&tx[..chunk.len()]) {
                tracing::debug!(error = %e, "queued send failed");
                failed += chunk.iter().map(|r| r.count as u64).sum::<u64>();
            }
        }
        self.runs.clear();
        self.used = 0;
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_coalesce_same_destination_and_size_only() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut q = SendQueue::new(3, 1 << 16, 64);
        for _ in 0..4 {
            assert!(q.push(a, &[1; 100]));
        }
        assert!(q.push(a, &[1; 50])); // shorter: ends the second run
        assert!(q.push(a, &[1; 100]));
        assert!(q.push(b, &[1; 100]));
        assert!(q.push(a, &[1; 200])); // larger than the run's segment: new run
        let shape: Vec<(u16, usize, usize)> = q
            .runs
            .iter()
            .map(|r| (r.dst.port(), r.seg, r.count))
            .collect();
        assert_eq!(
            shape,
            [
                (1, 100, 3),
                (1, 100, 2),
                (1, 100, 1),
                (2, 100, 1),
                (1, 200, 1)
            ]
        );
        assert_eq!(q.datagrams(), 8);
    }

    #[test]
    fn a_full_queue_refuses_instead_of_growing() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut q = SendQueue::new(64, 250, 2);
        assert!(q.push(a, &[1; 100]));
        assert!(q.push(b, &[1; 100]));
        assert!(!q.push(a, &[1; 10]), "no third run");
        assert!(q.push(b, &[1; 50]), "joins the last run");
        assert!(!q.push(b, &[1; 1]), "arena full");
        assert_eq!(q.datagrams(), 3);
    }
}
