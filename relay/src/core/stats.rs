//! Per-shard counters: one writer (the shard's thread) adds with a relaxed load + store (no
//! locked read-modify-write on the hot path), any thread reads. The HTTP side sums shards.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning shard's thread may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Counters of one relay shard (spec RELAY §5 plus this relay's own).
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: Counter,)*
            /// Sessions in this shard's table (a gauge).
            pub active_sessions: AtomicU64,
            /// The backend's receive-buffer stalls (monotonic; the shell copies the backend's
            /// count after every batch).
            pub recv_buffer_stalls: AtomicU64,
            /// Datagrams the kernel dropped at this shard's socket: refused by the junk filter
            /// (not a relay header) or a full receive queue (monotonic; the shell copies the
            /// socket's count about once a second).
            pub socket_drops: AtomicU64,
            /// Batch-size and forwarding-latency histograms.
            pub histograms: Histograms,
            /// AF_XDP counters (monotonic; copied from the ports by the xdp shell).
            pub xdp: XdpGauges,
        }

        impl Stats {
            /// Every counter as (name without prefix, help, value), in a fixed order.
            pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), concat!($($doc),*).trim(), self.$name.get()),)*]
            }
        }
    };
}

counters! {
    /// Datagrams received.
    packets_rx,
    /// Bytes received.
    bytes_rx,
    /// Datagrams forwarded to the other peer.
    packets_forwarded,
    /// Bytes forwarded to the other peer.
    bytes_forwarded,
    /// LEASE_PRESENT datagrams received.
    lease_present_packets,
    /// LEASE_RENEW datagrams received.
    lease_renew_packets,
    /// Datagrams dropped for any reason.
    dropped_packets,
    /// Datagrams dropped by the per-source-IP or per-session rate limit.
    rate_limited_packets,
    /// Datagrams that are not relay datagrams or are malformed.
    invalid_packets,
    /// Lease presentations refused (any reason).
    auth_reject_packets,
    /// FORWARD for a session this shard does not hold.
    session_not_found_packets,
    /// FORWARD while the other peer has not presented yet, or a lease has expired.
    session_not_active_packets,
    /// FORWARD from an address no peer of the session is bound to.
    unknown_peer_packets,
    /// PRESENTs whose binding timestamp was not above the last accepted one (replays).
    replay_dropped_packets,
    /// Datagrams the I/O shell could not send (socket full or send error).
    backpressure_dropped_packets,
    /// Presentations refused because the relay is full.
    session_full_rejects,
    /// Presentations refused because the lease names another relay.
    wrong_relay_rejects,
    /// Presentations refused because the lease expired.
    expired_lease_rejects,
    /// Sessions removed because every lease in them expired.
    cleanup_expired_sessions,
    /// Sessions removed after the idle timeout.
    cleanup_idle_sessions,
    /// New sessions refused above the load-shed threshold.
    overload_shed_packets,
    /// Peer addresses moved by a signed re-PRESENT (NAT rebinding).
    nat_rebind_events,
    /// Presentations that would bind or move an address without a valid holder signature.
    binding_rejects,
    /// Presentations dropped because the global or per-source verification budget was spent.
    verify_budget_dropped,
    /// Lease verifications performed (Ed25519 + claims).
    lease_verifications,
    /// Presentations answered from the verified-lease cache.
    lease_cache_hits,
    /// Binding signatures verified.
    binding_verifications,
    /// LEASE_REJECTs sent.
    rejects_sent,
    /// LEASE_REJECTs withheld by the per-source or global reject rate limit.
    rejects_suppressed,
    /// Sessions created.
    sessions_created,
    /// Forwards sent through the kernel's socket by the xdp backend (the peer's Ethernet
    /// address was unknown, or the datagram came in on the kernel path).
    kernel_path_forwards,
    /// Frames on the AF_XDP path that were not well-formed Ethernet/IP/UDP.
    bad_frames,
}

/// AF_XDP counters the xdp shell copies from its ports (zero on other backends).
#[derive(Debug, Default)]
pub struct XdpGauges {
    /// Frames the XDP program redirected to the AF_XDP sockets.
    pub redirected: AtomicU64,
    /// Frames the XDP program passed to the kernel (ARP, ICMP, other ports and addresses).
    pub passed: AtomicU64,
    /// Frames the kernel dropped for want of room in the RX or fill ring.
    pub kernel_rx_dropped: AtomicU64,
    /// Frames to send that found a full TX ring.
    pub tx_ring_full: AtomicU64,
}

/// A histogram with fixed bucket bounds, one writer (the shard's thread) and any readers:
/// observing is a bucket search over a short constant array and two relaxed counter adds, no
/// allocation and no lock. Readers may see a count one observation ahead of the sum.
#[derive(Debug)]
pub struct FixedHistogram {
    bounds: &'static [u64],
    /// One counter per bound plus the overflow bucket (+Inf).
    buckets: Box<[Counter]>,
    sum: Counter,
}

impl FixedHistogram {
    /// A histogram with these inclusive upper bounds (ascending) and an overflow bucket.
    pub fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| Counter::default()).collect(),
            sum: Counter::default(),
        }
    }

    /// Records `v`. Only the owning shard's thread may call this.
    #[inline]
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.buckets[i].inc();
        self.sum.add(v);
    }

    /// Upper bounds (the overflow bucket is not listed).
    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// Per-bucket (not cumulative) counts, the overflow bucket last.
    pub fn counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.buckets.iter().map(Counter::get)
    }

    /// Sum of the observed values.
    pub fn sum(&self) -> u64 {
        self.sum.get()
    }
}

/// Bounds of [`Histograms::batch_datagrams`]: datagrams handled per receive batch.
pub const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
/// Bounds of [`Histograms::forward_latency_ns`]: nanoseconds from a batch's receipt to its
/// send submission.
pub const LATENCY_BOUNDS_NS: &[u64] = &[
    1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 5_000_000,
];

/// Histograms of one relay shard.
#[derive(Debug)]
pub struct Histograms {
    /// Datagrams handled per receive batch (one backend receive call, then one flush).
    pub batch_datagrams: FixedHistogram,
    /// Nanoseconds from the first datagram of a batch handed to the shard to the end of its
    /// send submission (the longest wait any datagram of the batch had inside the relay).
    pub forward_latency_ns: FixedHistogram,
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            batch_datagrams: FixedHistogram::new(BATCH_BOUNDS),
            forward_latency_ns: FixedHistogram::new(LATENCY_BOUNDS_NS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds_with_overflow() {
        let h = FixedHistogram::new(&[1, 4, 10]);
        for v in [0, 1, 2, 4, 5, 10, 11, 1000] {
            h.observe(v);
        }
        assert_eq!(h.counts().collect::<Vec<_>>(), [2, 2, 2, 2]);
        assert_eq!(h.sum(), 1033);
        assert_eq!(h.bounds(), &[1, 4, 10]);
    }
}
