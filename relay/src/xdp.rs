//! The AF_XDP I/O shell: one thread runs a [`RelayCore`] on [`XdpPorts`] (`--io xdp`).
//!
//! Frames arrive in UMEM frames lent by the ports. Each is parsed in place
//! ([`wavry_net::xdp::frame`]); its UDP payload goes through the core exactly as on the other
//! backends; a forward is rewritten in place (addresses, ports, checksums, Ethernet header)
//! and sent from the same frame on the interface the destination peer's own frames came in
//! on. Nothing is copied and nothing allocates per frame.
//!
//! Neighbours: the Ethernet address and interface of a peer come from its own frames (the
//! source MAC of a datagram the core accepted, and the local address it was sent to, which
//! becomes the source of what the relay sends it). A destination with no entry yet, a
//! datagram that crosses address families, and anything that arrived on the kernel's socket
//! (another interface, loopback, IP fragments) go through the kernel's socket bound to the
//! same port: slower, never dropped. Replies (LEASE_ACK / LEASE_REJECT) also take the kernel
//! path: they are rare and the kernel resolves the next hop.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use wavry_net::xdp::frame;
use wavry_net::xdp::{Action, XdpPorts};

use crate::core::stats::Stats;
use crate::core::{Now, REPLY_MAX, RelayCore, Verdict};
use crate::shell::{Clock, ShardOptions};

/// Most neighbours remembered; past it, new peers take the kernel path.
const MAX_NEIGHBOURS: usize = 65_536;
/// Busy rounds between looks at the kernel socket.
const KERNEL_EVERY: u32 = 64;
/// Largest datagram read from the kernel socket.
const KERNEL_BUF: usize = 65_536;

/// Where a peer is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Neighbour {
    /// Interface its frames came in on (index into the ports' interfaces).
    iface: usize,
    /// Source MAC of its frames (the peer, or the router in front of it).
    mac: [u8; 6],
    /// The relay address it sent to: the source of what the relay sends it.
    local: IpAddr,
}

/// Peers' link-layer addresses, learned from their frames.
#[derive(Debug)]
struct Neighbours {
    map: HashMap<IpAddr, Neighbour>,
}

impl Neighbours {
    fn new() -> Self {
        Self {
            map: HashMap::with_capacity(MAX_NEIGHBOURS),
        }
    }

    fn learn(&mut self, peer: IpAddr, n: Neighbour) {
        if let Some(e) = self.map.get_mut(&peer) {
            *e = n;
        } else if self.map.len() < MAX_NEIGHBOURS {
            self.map.insert(peer, n);
        }
    }

    fn get(&self, peer: IpAddr) -> Option<Neighbour> {
        self.map.get(&peer).copied()
    }
}

/// Sends through the kernel socket, counting a failure as backpressure.
fn kernel_send(sock: &UdpSocket, stats: &Stats, data: &[u8], to: SocketAddr) {
    if sock.send_to(data, to).is_err() {
        stats.backpressure_dropped_packets.inc();
    }
}

/// Runs the relay on AF_XDP ports until `stop` is set. `kernel` is a UDP socket bound to the
/// relay's address and port: it serves everything the XDP program leaves to the kernel.
pub fn run_xdp_shard(
    ports: &mut XdpPorts,
    kernel: &UdpSocket,
    core: &mut RelayCore,
    clock: Clock,
    opts: ShardOptions,
    stop: &AtomicBool,
) -> io::Result<()> {
    kernel.set_nonblocking(true)?;
    let port = kernel.local_addr()?.port();
    let macs: Vec<[u8; 6]> = ports.interfaces().iter().map(|i| i.mac).collect();
    let mut neighbours = Neighbours::new();
    let mut reply = [0u8; REPLY_MAX];
    let mut kbuf = vec![0u8; KERNEL_BUF];
    let cleanup_ns = u64::try_from(opts.cleanup_interval.as_nanos()).unwrap_or(u64::MAX);
    let mut next_cleanup = clock.now().mono_ns.saturating_add(cleanup_ns);
    let mut next_drops = 0;
    let stats = Arc::clone(core.stats());
    let kernel_fd = kernel.as_raw_fd();
    // While frames keep coming the loop does not poll (one syscall less per batch) and looks
    // at the kernel socket every KERNEL_EVERY rounds; idle, it sleeps in poll on both.
    let (mut busy, mut rounds) = (false, 0u32);
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now();
        if now.mono_ns >= next_cleanup {
            core.cleanup(now);
            next_cleanup = now.mono_ns.saturating_add(cleanup_ns);
            // With the cleanup, not per batch: reading the program's per-CPU counters
            // allocates (aya), and nothing on the per-frame path may.
            publish(ports, &stats);
        }
        if now.mono_ns >= next_drops {
            #[cfg(target_os = "linux")]
            crate::shell::publish_socket_drops(kernel, &stats);
            next_drops = now
                .mono_ns
                .saturating_add(crate::shell::SOCKET_DROPS_EVERY_NS);
        }
        let kernel_ready = if busy {
            rounds = rounds.wrapping_add(1);
            rounds % KERNEL_EVERY == 0
        } else {
            ports.wait(opts.poll, Some(kernel_fd))?
        };
        let now = clock.now();
        let start = Instant::now();
        let frames = ports.process(|iface, data| {
            on_frame(
                core,
                &mut neighbours,
                &macs,
                kernel,
                &stats,
                &mut reply,
                now,
                port,
                iface,
                data,
            )
        });
        busy = frames > 0;
        if frames > 0 {
            stats.histograms.batch_datagrams.observe(frames as u64);
            stats
                .histograms
                .forward_latency_ns
                .observe(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        if kernel_ready {
            drain_kernel(core, kernel, &stats, &mut kbuf, &mut reply, now);
        }
    }
    publish(ports, &stats);
    Ok(())
}

/// Copies the ports' counters into the shard's stats.
fn publish(ports: &XdpPorts, stats: &Stats) {
    let c = ports.counters();
    let x = &stats.xdp;
    x.redirected.store(c.program_redirected, Ordering::Relaxed);
    x.passed.store(c.program_passed, Ordering::Relaxed);
    x.kernel_rx_dropped
        .store(c.kernel_rx_dropped, Ordering::Relaxed);
    x.tx_ring_full.store(c.tx_ring_full, Ordering::Relaxed);
}

/// One frame from the AF_XDP path.
#[allow(clippy::too_many_arguments)]
fn on_frame(
    core: &mut RelayCore,
    neighbours: &mut Neighbours,
    macs: &[[u8; 6]],
    kernel: &UdpSocket,
    stats: &Stats,
    reply: &mut [u8; REPLY_MAX],
    now: Now,
    port: u16,
    iface: usize,
    data: &mut [u8],
) -> Action {
    let Ok(parsed) = frame::parse(data) else {
        stats.bad_frames.inc();
        stats.dropped_packets.inc();
        return Action::Drop;
    };
    let Some(payload) = data.get(parsed.payload.clone()) else {
        stats.bad_frames.inc();
        return Action::Drop;
    };
    let verdict = core.on_datagram(now, parsed.src, payload, reply);
    if verdict != Verdict::Drop {
        // The core accepted something from this source: remember where it is.
        neighbours.learn(
            parsed.src.ip(),
            Neighbour {
                iface,
                mac: parsed.src_mac,
                local: parsed.dst.ip(),
            },
        );
    }
    match verdict {
        Verdict::Drop => Action::Drop,
        Verdict::Reply(to, n) => {
            kernel_send(kernel, stats, &reply[..n], to);
            Action::Drop
        }
        Verdict::Forward(to) => {
            if let Some(nb) = neighbours.get(to.ip()) {
                let src = SocketAddr::new(nb.local, port);
                if let Some(&our_mac) = macs.get(nb.iface) {
                    if frame::rewrite(data, &parsed, our_mac, nb.mac, src, to).is_ok() {
                        return Action::Transmit {
                            iface: nb.iface,
                            len: data.len(),
                        };
                    }
                }
            }
            // No link-layer route (yet), or another address family: the kernel sends it.
            stats.kernel_path_forwards.inc();
            if let Some(payload) = data.get(parsed.payload.clone()) {
                kernel_send(kernel, stats, payload, to);
            }
            Action::Drop
        }
    }
}

/// Serves what the kernel socket received (non-XDP interfaces, loopback, fragments).
fn drain_kernel(
    core: &mut RelayCore,
    kernel: &UdpSocket,
    stats: &Stats,
    buf: &mut [u8],
    reply: &mut [u8; REPLY_MAX],
    now: Now,
) {
    for _ in 0..256 {
        let Ok((n, from)) = kernel.recv_from(buf) else {
            return;
        };
        match core.on_datagram(now, from, &buf[..n], reply) {
            Verdict::Drop => {}
            Verdict::Reply(to, len) => kernel_send(kernel, stats, &reply[..len], to),
            Verdict::Forward(to) => {
                stats.kernel_path_forwards.inc();
                kernel_send(kernel, stats, &buf[..n], to);
            }
        }
    }
}
