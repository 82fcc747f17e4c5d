//! Forwarding received datagrams on without copying them: the caller names, per received
//! batch, which datagrams go where ([`Forwards`]); the backend groups them into GSO runs and
//! sends them straight from its receive buffer ([`crate::Backend::forward_with`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;

use crate::MAX_UDP_PAYLOAD;

/// Most forwards one received batch can name: a GRO batch holds at most 64 datagrams.
pub const MAX_FORWARDS: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Item {
    dst: SocketAddr,
    start: u32,
    len: u32,
}

/// The datagrams of one received batch to send on, in order, as byte ranges of that batch.
///
/// Filled by the callback of [`crate::Backend::forward_with`]; fixed capacity
/// ([`MAX_FORWARDS`]), never allocates.
#[derive(Debug, Clone)]
pub struct Forwards {
    items: [Item; MAX_FORWARDS],
    n: usize,
}

impl Default for Forwards {
    fn default() -> Self {
        Self {
            items: [Item {
                dst: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                start: 0,
                len: 0,
            }; MAX_FORWARDS],
            n: 0,
        }
    }
}

/// Consecutive forwards to one destination that go out as one send (GSO when `count > 1`):
/// `len` bytes from `start`, cut into `seg`-byte datagrams (the last may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) dst: SocketAddr,
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) seg: usize,
    pub(crate) count: usize,
}

impl Forwards {
    /// Sends bytes `range` of the batch to `dst`. False (nothing queued) when the range is
    /// empty, longer than a UDP payload, or [`MAX_FORWARDS`] are already queued; the caller
    /// counts the drop. Ranges outside the batch are refused by the backend.
    #[inline]
    pub fn push(&mut self, dst: SocketAddr, range: Range<usize>) -> bool {
        let len = range.end.saturating_sub(range.start);
        if self.n == MAX_FORWARDS || len == 0 || len > MAX_UDP_PAYLOAD {
            return false;
        }
        let (Ok(start), Ok(len)) = (u32::try_from(range.start), u32::try_from(len)) else {
            return false;
        };
        self.items[self.n] = Item { dst, start, len };
        self.n += 1;
        true
    }

    /// Forwards queued.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub(crate) fn clear(&mut self) {
        self.n = 0;
    }

    /// Forwards whose range lies outside a batch of `batch_len` bytes (dropped by
    /// [`Self::runs`]).
    pub(crate) fn out_of_bounds(&self, batch_len: usize) -> usize {
        self.items[..self.n]
            .iter()
            .filter(|i| i.start as usize + i.len as usize > batch_len)
            .count()
    }

    /// Groups the queued forwards into sends: consecutive forwards to one destination whose
    /// bytes are adjacent in the batch and of one size (the last may be shorter) share a send
    /// of at most `max_segments` datagrams and [`MAX_UDP_PAYLOAD`] bytes. Forwards outside a
    /// batch of `batch_len` bytes are skipped.
    pub(crate) fn runs(
        &self,
        batch_len: usize,
        max_segments: usize,
    ) -> impl Iterator<Item = Run> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || self.next_run(&mut at, batch_len, max_segments))
    }

    /// The run starting at forward `*at` (see [`Self::runs`]); advances `*at` past it. A
    /// cursor rather than an iterator, so a caller can change other state between runs.
    pub(crate) fn next_run(
        &self,
        at: &mut usize,
        batch_len: usize,
        max_segments: usize,
    ) -> Option<Run> {
        let fits = |i: &Item| i.start as usize + i.len as usize <= batch_len;
        let items = &self.items[..self.n];
        while *at < items.len() && !fits(&items[*at]) {
            *at += 1;
        }
        let first = items.get(*at)?;
        *at += 1;
        let mut run = Run {
            dst: first.dst,
            start: first.start as usize,
            len: first.len as usize,
            seg: first.len as usize,
            count: 1,
        };
        while let Some(next) = items.get(*at) {
            let n = next.len as usize;
            let joins = fits(next)
                && next.dst == run.dst
                && next.start as usize == run.start + run.len
                && n <= run.seg
                && run.len % run.seg == 0
                && run.count < max_segments.max(1)
                && run.len + n <= MAX_UDP_PAYLOAD;
            if !joins {
                break;
            }
            run.len += n;
            run.count += 1;
            *at += 1;
        }
        Some(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(f: &Forwards, batch: usize, max: usize) -> Vec<(u16, usize, usize, usize)> {
        f.runs(batch, max)
            .map(|r| (r.dst.port(), r.start, r.seg, r.count))
            .collect()
    }

    #[test]
    fn adjacent_equal_datagrams_to_one_destination_share_a_send() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut f = Forwards::default();
        for i in 0..4 {
            assert!(f.push(a, i * 100..i * 100 + 100));
        }
        assert!(f.push(a, 400..450)); // shorter: joins as the run's last
        assert!(f.push(a, 450..550)); // after a short one: new run
        assert!(f.push(b, 550..650)); // other destination
        assert!(f.push(b, 700..800)); // not adjacent (a dropped datagram in between)
        assert_eq!(
            shape(&f, 800, 64),
            [
                (1, 0, 100, 5),
                (1, 450, 100, 1),
                (2, 550, 100, 1),
                (2, 700, 100, 1)
            ]
        );
        // At most `max_segments` per send, and 1 without GSO.
        assert_eq!(shape(&f, 800, 3)[..2], [(1, 0, 100, 3), (1, 300, 100, 2)]);
        assert_eq!(shape(&f, 800, 1).len(), 8);
    }

    #[test]
    fn bad_ranges_are_refused_or_skipped_and_capacity_is_bounded() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut f = Forwards::default();
        assert!(!f.push(a, 5..5));
        assert!(!f.push(a, 0..MAX_UDP_PAYLOAD + 1));
        assert!(f.push(a, 0..100));
        assert!(f.push(a, 100..300)); // larger than the run's segment: its own send
        assert!(f.push(a, 900..1000)); // past a 500-byte batch
        assert_eq!(f.out_of_bounds(500), 1);
        assert_eq!(shape(&f, 500, 64), [(1, 0, 100, 1), (1, 100, 200, 1)]);
        f.clear();
        for i in 0..MAX_FORWARDS {
            assert!(f.push(a, i..i + 1));
        }
        assert!(!f.push(a, 0..1));
        assert_eq!(f.len(), MAX_FORWARDS);
    }
}
