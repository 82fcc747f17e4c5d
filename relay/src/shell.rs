//! The I/O shell: one thread per shard runs a [`RelayCore`] on a `wavry-net` backend.
//!
//! Per receive batch (one datagram, or a GRO super-datagram of many from one source): each
//! datagram goes through the core; forwarded datagrams and replies are copied once into the
//! shard's send arena, where consecutive datagrams to the same destination with the same size
//! (the last may be shorter) form one GSO run; after the batch, runs go out in one `send` of
//! up to [`SEND_CHUNK`] transmits. Nothing on this path allocates. Per batch (not per
//! datagram) the shell records its size and the time from the receipt of its first datagram
//! to the end of its send submission in the shard's histograms.
//!
//! Shards: sockets share the port with `SO_REUSEPORT`, and a reuseport BPF program
//! ([`wavry_net::steer::steer_by_payload_u32`]) picks the socket from bytes 16..20 of the relay
//! header (the tail of the session id). Both peers of a session carry the same id, so both
//! legs land on the shard that owns it: tables are per shard, never shared, never locked.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wavry_net::{Backend, MAX_UDP_PAYLOAD, NetSocket, Transmit};

use crate::core::{Now, REPLY_MAX, RelayCore, Verdict};

/// Transmits handed to the backend per `send` call.
pub const SEND_CHUNK: usize = 64;
/// Byte offset, in the UDP payload, of the u32 the reuseport program steers by.
pub const STEER_OFFSET: u32 = 16;
/// Bytes of send arena per shard (what one receive call can produce, with room to spare).
const ARENA: usize = 8 << 20;
/// Most GSO runs per flush.
const MAX_RUNS: usize = 16_384;

/// Reads the two clocks the core needs.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Now {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Now {
            mono_ns: u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX),
            unix_ms,
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy)]
struct Run {
    dst: SocketAddr,
    start: usize,
    len: usize,
    seg: usize,
    count: usize,
    closed: bool,
}

/// Datagrams waiting to be sent, grouped into GSO runs; allocated once.
#[derive(Debug)]
pub struct SendQueue {
    arena: Box<[u8]>,
    used: usize,
    runs: Vec<Run>,
    max_segments: usize,
}

impl SendQueue {
    /// A queue whose runs hold at most `max_segments` datagrams (1 without GSO).
    pub fn new(max_segments: usize) -> Self {
        Self {
            arena: vec![0u8; ARENA].into_boxed_slice(),
            used: 0,
            runs: Vec::with_capacity(MAX_RUNS),
            max_segments: max_segments.max(1),
        }
    }

    /// Queues one datagram for `dst`; false when the queue is full (the caller counts a drop).
    #[inline]
    pub fn push(&mut self, dst: SocketAddr, bytes: &[u8]) -> bool {
        let n = bytes.len();
        if self.used + n > self.arena.len() {
            return false;
        }
        if let Some(r) = self.runs.last_mut() {
            if r.dst == dst
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

    /// Sends every run (up to [`SEND_CHUNK`] transmits per call) and empties the queue.
    /// Returns the datagrams whose send failed.
    pub fn flush(&mut self, socket: &mut impl Backend) -> u64 {
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
                tracing::debug!(error = %e, "relay send failed");
                failed += chunk.iter().map(|r| r.count as u64).sum::<u64>();
            }
        }
        self.runs.clear();
        self.used = 0;
        failed
    }
}

/// How a shard runs.
#[derive(Debug, Clone, Copy)]
pub struct ShardOptions {
    /// How often expired and idle sessions are removed.
    pub cleanup_interval: Duration,
    /// Longest wait for a datagram before checking for stop and cleanup.
    pub poll: Duration,
}

/// Runs one shard until `stop` is set: receive a batch, decide, send the runs.
pub fn run_shard(
    socket: &mut NetSocket,
    core: &mut RelayCore,
    clock: Clock,
    opts: ShardOptions,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut out = SendQueue::new(socket.max_gso_segments());
    let mut reply = [0u8; REPLY_MAX];
    let cleanup_ns = u64::try_from(opts.cleanup_interval.as_nanos()).unwrap_or(u64::MAX);
    let mut next_cleanup = clock.now().mono_ns.saturating_add(cleanup_ns);
    let stats = Arc::clone(core.stats());
    let hist = &stats.histograms;
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now();
        if now.mono_ns >= next_cleanup {
            core.cleanup(now);
            next_cleanup = now.mono_ns.saturating_add(cleanup_ns);
        }
        // Receipt of the batch's first datagram (one clock read per batch, not per datagram).
        let mut first: Option<Instant> = None;
        let mut datagrams = 0u64;
        socket.recv_with(Some(opts.poll), &mut |meta, buf| {
            if first.is_none() {
                first = Some(Instant::now());
            }
            let len = meta.len.min(buf.len());
            let stride = if meta.stride == 0 { len } else { meta.stride };
            if stride == 0 {
                return;
            }
            for d in buf[..len].chunks(stride) {
                datagrams += 1;
                let queued = match core.on_datagram(now, meta.src, d, &mut reply) {
                    Verdict::Drop => true,
                    Verdict::Forward(dst) => out.push(dst, d),
                    Verdict::Reply(dst, n) => out.push(dst, &reply[..n]),
                };
                if !queued {
                    stats.backpressure_dropped_packets.inc();
                }
            }
        })?;
        let failed = out.flush(socket);
        if failed > 0 {
            stats.backpressure_dropped_packets.add(failed);
        }
        if let Some(t) = first {
            hist.batch_datagrams.observe(datagrams);
            hist.forward_latency_ns
                .observe(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            stats
                .recv_buffer_stalls
                .store(socket.recv_buffer_stalls(), Ordering::Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_coalesce_same_destination_and_size_only() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut q = SendQueue::new(3);
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
}
