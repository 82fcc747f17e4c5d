//! Traffic: senders (single datagrams round-robin over many flows, or GSO batches), the
//! receiver (GRO, loss and latency from the sequence number and send timestamp each datagram
//! carries), and the junk flood. One measurement = one forwarder, one load, one window.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use socket2::SockAddr;
use wavry_relay::peer::{encode_forward, encode_present};
use wavry_rift::identity::IdentityKey;
use wavry_rift::wire::PeerRole;

use super::forwarders::big_buffers;
use crate::net::raw;

/// Bytes of the relay header; the sequence number and send time follow it.
const HEADER: usize = 20;
/// Smallest datagram: header, sequence number, send timestamp.
pub(crate) const MIN_SIZE: usize = HEADER + 16;
/// The receiver stops this long after the last datagram once the senders are done.
const DRAIN: Duration = Duration::from_millis(150);
/// Datagrams per `sendmmsg` in the single shape: one `send_to` each left the sender, not the
/// forwarder, as the bottleneck (the relay was measured below saturation).
pub(crate) const SINGLE_BURST: usize = 8;

/// How valid traffic is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Shape {
    /// Separate datagrams, [`SINGLE_BURST`] per `sendmmsg` from one flow, round-robin over the
    /// flows (the relay sees no GRO: each arrives on its own).
    Single,
    /// GSO batches of `segments` datagrams per `sendmsg`, round-robin over the flows.
    Gso,
}

impl Shape {
    /// Its name in tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Single => "single",
            Shape::Gso => "gso",
        }
    }
}

/// The valid peers' sockets: flow `i` is the client of session `sids[i]`; every session's
/// server is the one receiver socket.
pub(crate) struct Flows {
    /// Client sockets, one per flow.
    pub(crate) socks: Vec<UdpSocket>,
    /// Session id of each flow.
    pub(crate) sids: Vec<[u8; 16]>,
    /// The receiving (server-side) socket, GRO on.
    pub(crate) receiver: UdpSocket,
}

impl Flows {
    /// Binds `n` client sockets in namespace `sender_ns` and the receiver in `receiver_ns`
    /// (each on every address of its namespace).
    #[cfg(target_os = "linux")]
    pub(crate) fn in_namespaces(
        n: usize,
        sender_ns: &str,
        receiver_ns: &str,
    ) -> anyhow::Result<Self> {
        let bind = || -> io::Result<UdpSocket> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            big_buffers(&s);
            Ok(s)
        };
        let receiver = wavry_netns::enter_namespace(receiver_ns, bind)??;
        let socks = wavry_netns::enter_namespace(sender_ns, || {
            (0..n).map(|_| bind()).collect::<io::Result<Vec<_>>>()
        })??;
        Ok(Self {
            socks,
            sids: (0..n).map(|_| super::setup::random_sid()).collect(),
            receiver,
        })
    }

    /// Binds `n` client sockets and the receiver.
    pub(crate) fn new(n: usize) -> anyhow::Result<Self> {
        let receiver = UdpSocket::bind("127.0.0.1:0")?;
        big_buffers(&receiver);
        let mut socks = Vec::with_capacity(n);
        for _ in 0..n {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            big_buffers(&s);
            socks.push(s);
        }
        Ok(Self {
            socks,
            sids: (0..n).map(|_| super::setup::random_sid()).collect(),
            receiver,
        })
    }
}

/// One load to apply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// How valid datagrams are sent.
    pub(crate) shape: Shape,
    /// Datagrams per second of valid traffic; `None` = as fast as the sender can.
    pub(crate) rate: Option<f64>,
    /// Seconds of sending.
    pub(crate) seconds: f64,
    /// Datagram size.
    pub(crate) size: usize,
    /// Datagrams per GSO batch.
    pub(crate) segments: usize,
    /// Run the junk flood beside the valid traffic at this many datagrams per second.
    pub(crate) junk: Option<f64>,
}

/// What one measurement saw.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Valid datagrams sent.
    pub(crate) sent: u64,
    /// Valid datagrams received (forwarded).
    pub(crate) received: u64,
    /// Seconds from the first send to the last receive.
    pub(crate) secs: f64,
    /// Forwarder CPU-seconds over the window.
    pub(crate) cpu_secs: f64,
    /// One-way latency to the receiving thread, nanoseconds.
    pub(crate) latency: Histogram<u64>,
    /// One-way latency to the receiving socket (the kernel's receive timestamp), nanoseconds:
    /// without the bench receiver's own wake-up, which is not the forwarder's.
    pub(crate) socket_latency: Histogram<u64>,
    /// Junk datagrams sent.
    pub(crate) junk_sent: u64,
}

/// Where a forwarder's CPU time is read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CpuProbe {
    /// A process (the relay).
    Process(u32),
    /// Threads of this process by name prefix.
    Thread(&'static str),
    /// Everything that ran on these CPUs (user, system, irq and softirq, from /proc/stat):
    /// a forwarder pinned to them with its NAPI threads, XDP work included.
    #[cfg(target_os = "linux")]
    Cpus(&'static [usize]),
    /// No forwarder (the direct path).
    None,
}

impl CpuProbe {
    fn read(self) -> io::Result<Duration> {
        match self {
            CpuProbe::Process(pid) => raw::pid_cpu_time(pid),
            CpuProbe::Thread(name) => Ok(raw::threads_cpu_time(&[name])),
            #[cfg(target_os = "linux")]
            CpuProbe::Cpus(cpus) => Ok(Duration::from_secs_f64(
                wavry_netns::CpuTime::read(cpus)?.seconds(),
            )),
            CpuProbe::None => Ok(Duration::ZERO),
        }
    }
}

/// Wall-clock nanoseconds since the Unix epoch: the clock of the kernel's receive timestamps,
/// so send stamps use it too.
fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn ns_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Timer slack of the paced senders' threads: their sleeps end within 1 us of the deadline.
const PACING_SLACK_NS: u64 = 1_000;

/// Sleeps until `at_ns` after `origin`. A paced sender sleeps between sends rather than spin
/// or yield: on a small machine a runnable load generator takes CPU time the forwarder under
/// test needs, and its wake-ups then set the forwarder's latency tail. A late wake-up only
/// shifts the next send; every datagram carries its own send time.
fn wait_until(origin: Instant, at_ns: u64) {
    let now = ns_since(origin);
    if at_ns > now {
        std::thread::sleep(Duration::from_nanos(at_ns - now));
    }
}

/// Sends valid traffic to `target` and measures what the receiver gets back.
pub(crate) fn measure(
    flows: &Flows,
    target: SocketAddr,
    cpu: CpuProbe,
    load: Load,
    junk: Option<&Junk>,
) -> anyhow::Result<Outcome> {
    drain(&flows.receiver)?;
    let origin = Instant::now();
    let done = AtomicBool::new(false);
    let cpu0 = cpu.read().context("reading forwarder CPU time")?;
    let junk_count = AtomicU64::new(0);
    let (sent, recv) = std::thread::scope(|s| -> anyhow::Result<_> {
        let rx = s.spawn(|| receive(&flows.receiver, origin, load.size, &done));
        let jh = junk.zip(load.junk).map(|(j, rate)| {
            let (done, count) = (&done, &junk_count);
            s.spawn(move || j.flood(target, rate, origin, done, count))
        });
        let sent = send(flows, target, origin, load);
        done.store(true, Ordering::Relaxed);
        if let Some(h) = jh {
            h.join()
                .map_err(|_| anyhow::anyhow!("junk thread panicked"))??;
        }
        let recv = rx
            .join()
            .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
        Ok((sent?, recv))
    })?;
    let junk_sent = junk_count.load(Ordering::Relaxed);
    let cpu1 = cpu.read().context("reading forwarder CPU time")?;
    let (received, last_ns, latency, socket_latency) = recv;
    Ok(Outcome {
        sent,
        received,
        secs: (last_ns as f64 / 1e9).max(1e-9),
        cpu_secs: (cpu1.saturating_sub(cpu0)).as_secs_f64(),
        latency,
        socket_latency,
        junk_sent,
    })
}

/// Reads and discards until nothing has arrived for `quiet` (at most `max`): a saturated
/// forwarder goes on delivering its backlog after its measurement ends.
pub(crate) fn settle(sock: &UdpSocket, quiet: Duration, max: Duration) -> io::Result<()> {
    sock.set_read_timeout(Some(quiet / 4))?;
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    let mut last = Instant::now();
    while start.elapsed() < max && last.elapsed() < quiet {
        if sock.recv(&mut buf).is_ok() {
            last = Instant::now();
        }
    }
    sock.set_read_timeout(None)
}

/// Empties the receiver's queue (leftovers of an earlier measurement).
pub(crate) fn drain(sock: &UdpSocket) -> io::Result<()> {
    sock.set_nonblocking(true)?;
    let mut buf = vec![0u8; 65_536];
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false)
}

fn send(flows: &Flows, target: SocketAddr, origin: Instant, load: Load) -> anyhow::Result<u64> {
    let per_send = match load.shape {
        Shape::Single => SINGLE_BURST,
        Shape::Gso => load.segments.max(1),
    };
    let seg = u16::try_from(load.size).context("--size")?;
    let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(flows.socks.len());
    for sid in &flows.sids {
        let mut b = vec![0u8; load.size * per_send];
        let pad = vec![0xA5u8; load.size - HEADER];
        for d in b.chunks_mut(load.size) {
            encode_forward(d, *sid, &pad)?;
        }
        bufs.push(b);
    }
    let to = SockAddr::from(target);
    let interval_ns = load.rate.map(|r| per_send as f64 * 1e9 / r.max(1.0));
    let end_ns = (load.seconds * 1e9) as u64;
    let (mut seq, mut sent, mut sends) = (0u64, 0u64, 0u64);
    let n = flows.socks.len();
    if interval_ns.is_some() {
        raw::set_timer_slack(PACING_SLACK_NS).context("timer slack")?;
    }
    loop {
        if let Some(iv) = interval_ns {
            wait_until(origin, (sends as f64 * iv) as u64);
        }
        if ns_since(origin) >= end_ns {
            break;
        }
        let i = (sends as usize) % n;
        let buf = &mut bufs[i];
        let ts = unix_ns();
        for d in buf.chunks_mut(load.size) {
            d[HEADER..HEADER + 8].copy_from_slice(&seq.to_le_bytes());
            d[HEADER + 8..HEADER + 16].copy_from_slice(&ts.to_le_bytes());
            seq += 1;
        }
        sent += match load.shape {
            Shape::Single => {
                raw::send_mmsg_each(&flows.socks[i], &to, buf.chunks(load.size)).unwrap_or(0) as u64
            }
            Shape::Gso => {
                let ok = raw::send_gso(&flows.socks[i], &to, buf, seg).is_ok();
                if ok { per_send as u64 } else { 0 }
            }
        };
        sends += 1;
    }
    Ok(sent)
}

/// Datagrams, ns from the origin to the last arrival, latency to the thread and to the socket.
type Received = (u64, u64, Histogram<u64>, Histogram<u64>);

fn receive(
    sock: &UdpSocket,
    origin: Instant,
    size: usize,
    done: &AtomicBool,
) -> anyhow::Result<Received> {
    wavry_net::cmsg::set_int(sock.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 1)?;
    raw::enable_rx_timestamps(sock)?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut at_socket = hist.clone();
    let mut buf = vec![0u8; 65_536];
    let (mut count, mut last_ns) = (0u64, 0u64);
    let mut idle_since: Option<Instant> = None;
    loop {
        match raw::recv_gro_stamped(sock, &mut buf) {
            Ok((len, stride, stamp)) => {
                idle_since = None;
                last_ns = ns_since(origin);
                let now = unix_ns();
                // Without a kernel stamp the thread's time stands in (never earlier).
                let queued = stamp.unwrap_or(now).min(now);
                for d in buf[..len].chunks(stride.max(1)) {
                    if d.len() != size {
                        continue;
                    }
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&d[HEADER + 8..HEADER + 16]);
                    let sent = u64::from_le_bytes(ts);
                    hist.saturating_record(now.saturating_sub(sent).max(1));
                    at_socket.saturating_record(queued.saturating_sub(sent).max(1));
                    count += 1;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if done.load(Ordering::Relaxed) {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= DRAIN {
                        break;
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((count, last_ns, hist, at_socket))
}

/// The junk flood: random bytes and FORWARDs with valid session ids from addresses that are
/// not the sessions' peers (GSO batches), forged PRESENTs (a token no master signed) and a
/// captured valid PRESENT replayed from another address.
pub(crate) struct Junk {
    socks: Vec<UdpSocket>,
    random: Vec<u8>,
    spoofed: Vec<u8>,
    forged: Vec<u8>,
    replayed: Vec<u8>,
    size: usize,
}

impl Junk {
    /// Builds the junk and binds its sockets: half on 127.0.0.2 (another source IP), half on
    /// 127.0.0.1 (the valid peers' IP, other ports: spoofing the peers' exact addresses would
    /// need raw sockets).
    pub(crate) fn new(
        flows: &Flows,
        captured: &[u8],
        size: usize,
        segments: usize,
    ) -> anyhow::Result<Self> {
        let mut socks = Vec::new();
        for i in 0..16 {
            let ip = if i % 2 == 0 {
                [127, 0, 0, 2]
            } else {
                [127, 0, 0, 1]
            };
            let s = UdpSocket::bind(SocketAddr::from((ip, 0)))?;
            big_buffers(&s);
            socks.push(s);
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let random: Vec<u8> = (0..size * segments)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut spoofed = vec![0u8; size * segments];
        let pad = vec![0x5Au8; size - HEADER];
        for (i, d) in spoofed.chunks_mut(size).enumerate() {
            encode_forward(d, flows.sids[i % flows.sids.len()], &pad)?;
        }
        let forger = IdentityKey::generate()?;
        let fake_token = format!("v4.public.{}", "A".repeat(300));
        let mut forged = vec![0u8; 1024];
        let n = encode_present(
            &mut forged,
            false,
            flows.sids[0],
            PeerRole::Client,
            &fake_token,
            Some((&forger, "wr-forged", super::setup::unix_ms())),
        )?;
        forged.truncate(n);
        Ok(Self {
            socks,
            random,
            spoofed,
            forged,
            replayed: captured.to_vec(),
            size,
        })
    }

    /// Sends junk at `rate` datagrams per second (paced per round of four sends) until
    /// `done`.
    fn flood(
        &self,
        target: SocketAddr,
        rate: f64,
        origin: Instant,
        done: &AtomicBool,
        count: &AtomicU64,
    ) -> anyhow::Result<()> {
        let to = SockAddr::from(target);
        let seg = u16::try_from(self.size)?;
        let per_batch = (self.random.len() / self.size) as u64;
        let per_round_ns = (2 * per_batch + 2) as f64 * 1e9 / rate.max(1.0);
        raw::set_timer_slack(PACING_SLACK_NS).context("timer slack")?;
        let mut i = 0usize;
        while !done.load(Ordering::Relaxed) {
            wait_until(origin, (i as f64 * per_round_ns) as u64);
            let s = &self.socks[i % self.socks.len()];
            let mut n = 0;
            if raw::send_gso(s, &to, &self.random, seg).is_ok() {
                n += per_batch;
            }
            if raw::send_gso(s, &to, &self.spoofed, seg).is_ok() {
                n += per_batch;
            }
            if s.send_to(&self.forged, target).is_ok() {
                n += 1;
            }
            if s.send_to(&self.replayed, target).is_ok() {
                n += 1;
            }
            count.fetch_add(n, Ordering::Relaxed);
            i += 1;
        }
        Ok(())
    }
}
