//! Per-link counters and per-delivery samples, with range queries for scenario assertions.

use std::ops::Range;
use std::time::{Duration, Instant};

/// One delivered datagram as recorded for statistics (compact: times are nanoseconds since the
/// simulator's start instant).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) at: u64,
    pub(crate) queue_delay: u64,
    pub(crate) bytes: u32,
}

/// A delivered datagram's statistics record, as returned by [`LinkStats::samples`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySample {
    /// When the datagram was delivered.
    pub at: Instant,
    /// How long it waited in the bottleneck queue before its serialisation began.
    pub queue_delay: Duration,
    /// Its size in bytes.
    pub bytes: usize,
}

/// Percentiles of bottleneck queueing delay over a time range
/// (see [`LinkStats::queue_delay_summary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDelaySummary {
    /// Number of deliveries in the range.
    pub count: usize,
    /// Median queueing delay.
    pub p50: Duration,
    /// 95th percentile queueing delay.
    pub p95: Duration,
    /// 99th percentile queueing delay.
    pub p99: Duration,
    /// Largest queueing delay.
    pub max: Duration,
}

/// What happened on one directional link, so scenario tests can assert on the network's view.
///
/// Counters: `sent` counts every datagram offered to the link; each is then lost
/// (`dropped_loss`), tail-dropped (`dropped_queue`) or admitted. `delivered` and
/// `bytes_delivered` count copies handed to the receiver (duplicates included) and grow only as
/// [`crate::Netsim::poll_delivery`] hands them over. `duplicated` and `corrupted` count copies
/// made and bits flipped when the datagram was sent. `reordered` counts deliveries that arrived
/// while a datagram sent earlier on the link was still in flight (each overtaking datagram is
/// counted once, however many it passed).
///
/// Time-range queries take half-open ranges `start..end` of delivery instants.
#[derive(Debug, Clone)]
pub struct LinkStats {
    /// Datagrams offered with [`crate::Netsim::send`].
    pub sent: u64,
    /// Copies delivered to the receiver (duplicates included).
    pub delivered: u64,
    /// Datagrams lost by the loss model.
    pub dropped_loss: u64,
    /// Datagrams tail-dropped at a full bottleneck queue.
    pub dropped_queue: u64,
    /// Extra copies scheduled by the duplicate impairment.
    pub duplicated: u64,
    /// Copies that had a bit flipped.
    pub corrupted: u64,
    /// Deliveries that overtook a datagram sent earlier on the same link.
    pub reordered: u64,
    /// Payload bytes delivered (duplicates included).
    pub bytes_delivered: u64,
    origin: Instant,
    samples: Vec<Sample>,
}

impl LinkStats {
    pub(crate) fn new(origin: Instant) -> Self {
        Self {
            sent: 0,
            delivered: 0,
            dropped_loss: 0,
            dropped_queue: 0,
            duplicated: 0,
            corrupted: 0,
            reordered: 0,
            bytes_delivered: 0,
            origin,
            samples: Vec::new(),
        }
    }

    pub(crate) fn record(&mut self, sample: Sample) {
        self.samples.push(sample);
    }

    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Samples delivered within `range` (samples are kept in delivery order).
    fn slice(&self, range: &Range<Instant>) -> &[Sample] {
        let (a, b) = (self.ns(range.start), self.ns(range.end));
        let lo = self.samples.partition_point(|s| s.at < a);
        let hi = self.samples.partition_point(|s| s.at < b).max(lo);
        &self.samples[lo..hi]
    }

    /// Every recorded delivery, in delivery order. Empty when sample recording is off
    /// ([`crate::Netsim::set_record_samples`]).
    pub fn samples(&self) -> impl Iterator<Item = DeliverySample> + '_ {
        self.samples.iter().map(|s| DeliverySample {
            at: self.origin + Duration::from_nanos(s.at),
            queue_delay: Duration::from_nanos(s.queue_delay),
            bytes: s.bytes as usize,
        })
    }

    /// The `q`-quantile (`q` in `[0, 1]`, e.g. 0.95) of queueing delay among deliveries in
    /// `range`, by the nearest-rank rule: the `ceil(q·n)`-th smallest of `n` values. `None`
    /// when nothing was delivered in the range.
    pub fn queue_delay_quantile(&self, range: Range<Instant>, q: f64) -> Option<Duration> {
        let mut delays: Vec<u64> = self.slice(&range).iter().map(|s| s.queue_delay).collect();
        quantile(&mut delays, q).map(Duration::from_nanos)
    }

    /// p50, p95, p99 and max queueing delay over deliveries in `range`; `None` when empty.
    pub fn queue_delay_summary(&self, range: Range<Instant>) -> Option<QueueDelaySummary> {
        let mut delays: Vec<u64> = self.slice(&range).iter().map(|s| s.queue_delay).collect();
        if delays.is_empty() {
            return None;
        }
        delays.sort_unstable();
        let at = |q: f64| Duration::from_nanos(delays[nearest_rank(delays.len(), q)]);
        Some(QueueDelaySummary {
            count: delays.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: Duration::from_nanos(*delays.last()?),
        })
    }

    /// Number of deliveries in `range`.
    pub fn delivered_in(&self, range: Range<Instant>) -> usize {
        self.slice(&range).len()
    }

    /// Payload bytes delivered in `range`.
    pub fn bytes_delivered_in(&self, range: Range<Instant>) -> u64 {
        self.slice(&range).iter().map(|s| u64::from(s.bytes)).sum()
    }

    /// Delivered throughput over `range` in bits per second: payload bits delivered in the
    /// range divided by the range's length (0 for an empty range).
    pub fn delivered_bps(&self, range: Range<Instant>) -> f64 {
        let secs = range
            .end
            .saturating_duration_since(range.start)
            .as_secs_f64();
        if secs == 0.0 {
            return 0.0;
        }
        self.bytes_delivered_in(range) as f64 * 8.0 / secs
    }
}

/// Index of the nearest-rank `q`-quantile in a sorted slice of `n > 0` values.
fn nearest_rank(n: usize, q: f64) -> usize {
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    ((q * n as f64).ceil() as usize).clamp(1, n) - 1
}

fn quantile(values: &mut [u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let k = nearest_rank(values.len(), q);
    Some(*values.select_nth_unstable(k).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(quantile(&mut v, 0.5), Some(50));
        assert_eq!(quantile(&mut v, 0.95), Some(95));
        assert_eq!(quantile(&mut v, 0.0), Some(1));
        assert_eq!(quantile(&mut v, 1.0), Some(100));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn range_queries_are_half_open() {
        let t0 = Instant::now();
        let mut s = LinkStats::new(t0);
        for i in 0..10u64 {
            s.record(Sample {
                at: i * 1_000_000_000,
                queue_delay: i,
                bytes: 100,
            });
        }
        let sec = |n| t0 + Duration::from_secs(n);
        assert_eq!(s.delivered_in(sec(2)..sec(5)), 3);
        assert_eq!(s.bytes_delivered_in(sec(2)..sec(5)), 300);
        assert!((s.delivered_bps(sec(0)..sec(10)) - 800.0).abs() < 1e-9);
        let sum = s.queue_delay_summary(sec(0)..sec(10)).unwrap();
        assert_eq!(sum.count, 10);
        assert_eq!(sum.p50, Duration::from_nanos(4));
        assert_eq!(sum.max, Duration::from_nanos(9));
        assert!(s.queue_delay_summary(sec(20)..sec(30)).is_none());
        assert_eq!(s.samples().count(), 10);
    }
}
