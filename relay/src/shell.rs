//! The I/O shell: one thread per shard runs a [`RelayCore`] on a `wavry-net` backend.
//!
//! Per receive batch (one datagram, or a GRO super-datagram of many from one source): each
//! datagram goes through the core; forwarded datagrams are named to the backend by their place
//! in the batch ([`wavry_net::Forwards`]) and go out from the receive buffer itself, never
//! copied: consecutive datagrams to the same destination with the same size (the last may be
//! shorter) form one GSO run, and on io_uring every run of a receive call goes out in one
//! submission whose completions return the buffers ([`Backend::forward_with`]). Replies
//! (LEASE_ACK / LEASE_REJECT, rare and small) are built in the shard's reply queue and sent
//! after the call. Nothing on this path allocates. Per receive call the shell records the
//! batches' datagrams and the time from the receipt of the first to the end of the send
//! submission in the shard's histograms.
//!
//! Shards: sockets share the port with `SO_REUSEPORT`, and a reuseport BPF program
//! ([`wavry_net::steer::steer_by_payload_u32`]) picks the socket from bytes 16..20 of the relay
//! header (the tail of the session id). Both peers of a session carry the same id, so both
//! legs land on the shard that owns it: tables are per shard, never shared, never locked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wavry_net::{Backend, NetSocket, SendQueue};

use crate::core::{Now, REPLY_MAX, RelayCore, Verdict};
use crate::kernel_filter::BindingSink;

/// Byte offset, in the UDP payload, of the u32 the reuseport program steers by.
pub const STEER_OFFSET: u32 = 16;
/// Bytes of reply arena per shard (replies are at most [`REPLY_MAX`] bytes each).
const ARENA: usize = 1 << 20;
/// Most reply sends queued per receive call.
const MAX_RUNS: usize = 4096;
/// How often a shard copies its socket's kernel drop count into its stats.
pub const SOCKET_DROPS_EVERY_NS: u64 = 1_000_000_000;

/// Copies the kernel's drop count of a shard's socket (its junk filter, a full receive queue)
/// into `stats`; a failed read leaves the last value.
#[cfg(target_os = "linux")]
pub fn publish_socket_drops(socket: &impl std::os::fd::AsFd, stats: &crate::core::stats::Stats) {
    if let Ok(d) = wavry_net::filter::socket_drops(socket) {
        stats.socket_drops.store(d, Ordering::Relaxed);
    }
}

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

/// How a shard runs.
#[derive(Debug, Clone, Copy)]
pub struct ShardOptions {
    /// How often expired and idle sessions are removed.
    pub cleanup_interval: Duration,
    /// Longest wait for a datagram before checking for stop and cleanup.
    pub poll: Duration,
}

/// Runs one shard until `stop` is set: receive a batch, decide, send the runs. With `bindings`
/// (the kernel's bound-peers filter) the core's binding changes go there after every batch
/// and cleanup, before the batch's replies: a peer's LEASE_ACK never overtakes its entry.
pub fn run_shard(
    socket: &mut NetSocket,
    core: &mut RelayCore,
    clock: Clock,
    opts: ShardOptions,
    stop: &AtomicBool,
    bindings: Option<&dyn BindingSink>,
) -> std::io::Result<()> {
    if bindings.is_some() {
        core.track_bindings();
    }
    let mut replies = SendQueue::new(socket.max_gso_segments(), ARENA, MAX_RUNS);
    let mut reply = [0u8; REPLY_MAX];
    let cleanup_ns = u64::try_from(opts.cleanup_interval.as_nanos()).unwrap_or(u64::MAX);
    let mut next_cleanup = clock.now().mono_ns.saturating_add(cleanup_ns);
    let mut next_drops = 0;
    let stats = Arc::clone(core.stats());
    let hist = &stats.histograms;
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now();
        if now.mono_ns >= next_cleanup {
            core.cleanup(now);
            if let Some(sink) = bindings
                && core.bindings_pending()
            {
                sink.apply(&mut core.drain_bindings());
            }
            next_cleanup = now.mono_ns.saturating_add(cleanup_ns);
        }
        if now.mono_ns >= next_drops {
            #[cfg(target_os = "linux")]
            publish_socket_drops(socket, &stats);
            next_drops = now.mono_ns.saturating_add(SOCKET_DROPS_EVERY_NS);
        }
        // Receipt of the batch's first datagram (one clock read per batch, not per datagram).
        let mut first: Option<Instant> = None;
        let mut datagrams = 0u64;
        let failures_before = socket.forward_failures();
        socket.forward_with(Some(opts.poll), &mut |meta, buf, fw| {
            if first.is_none() {
                first = Some(Instant::now());
            }
            let len = meta.len.min(buf.len());
            let stride = if meta.stride == 0 { len } else { meta.stride };
            if stride == 0 {
                return;
            }
            for (i, d) in buf[..len].chunks(stride).enumerate() {
                datagrams += 1;
                let queued = match core.on_datagram(now, meta.src, d, &mut reply) {
                    Verdict::Drop => true,
                    Verdict::Forward(dst) => {
                        let at = i * stride;
                        fw.push(dst, at..at + d.len())
                    }
                    Verdict::Reply(dst, n) => replies.push(dst, &reply[..n]),
                };
                if !queued {
                    stats.backpressure_dropped_packets.inc();
                }
            }
        })?;
        if let Some(sink) = bindings
            && core.bindings_pending()
        {
            sink.apply(&mut core.drain_bindings());
        }
        let failed = socket.forward_failures() - failures_before + replies.flush(socket);
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
