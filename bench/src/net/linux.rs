//! The Linux measurement of `wavry-bench net`: the paths, one measurement, the rounds and
//! the table (see the parent module for what is measured and how it is reported).

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use socket2::SockAddr;
use wavry_net::{Backend, Config, IoMode, NetSocket, RecvMeta, Transmit};

use self::table::print_table;
use super::Args;
use super::raw;
use crate::spread::Spread;

const SLOT: usize = 1 << 16;
const RX_SLOTS: usize = 8;
/// How long an idle receiver waits before checking whether the sender stopped.
const IDLE: Duration = Duration::from_millis(20);

/// The sending half of a path: one call sends some datagrams and says how many.
trait Tx: Send {
    fn send(&mut self) -> io::Result<u64>;
}

/// The receiving half: one call waits up to `IDLE` and returns (datagrams, bytes).
trait Rx: Send {
    fn recv(&mut self) -> io::Result<(u64, u64)>;
}

/// One row of the table: one path's best round (see [`best_round`]; for the transport
/// figures of session paths [`best_transport_round`]), its ratios against the baseline's and
/// the ceiling's best rounds, and every round's figures.
#[derive(Debug, Serialize)]
struct Row {
    path: &'static str,
    sent: u64,
    received: u64,
    loss_pct: f64,
    seconds: f64,
    cpu_seconds: f64,
    pps: f64,
    gbit_s: f64,
    packets_per_cpu_s: f64,
    /// Session paths: packets per CPU-second of the driver threads alone, best of the
    /// rounds by this figure itself (see `transport_best_round`).
    transport_packets_per_cpu_s: Option<f64>,
    /// ... and that against the baseline's packets per CPU-second.
    transport_cpu_eff_vs_baseline: Option<f64>,
    /// Session paths: the host's mean GSO batch in the best round, in datagrams (the
    /// kernel's cost per datagram falls steeply with it).
    datagrams_per_send: Option<f64>,
    pps_vs_baseline: f64,
    cpu_eff_vs_baseline: f64,
    pps_vs_ceiling: f64,
    cpu_eff_vs_ceiling: f64,
    /// The round (1-based) the figures above come from (the `transport_*` ones aside).
    best_round: usize,
    /// Session paths: the round (1-based) with the most packets per CPU-second of the
    /// driver threads, which `transport_packets_per_cpu_s` comes from.
    transport_best_round: Option<usize>,
    /// Packets per CPU-second over all rounds.
    packets_per_cpu_s_spread: Spread,
    /// Session paths: the driver threads' packets per CPU-second over all rounds.
    transport_packets_per_cpu_s_spread: Option<Spread>,
    /// Round by round, packets per CPU-second against the baseline's in the same round
    /// (measured seconds apart), over the rounds: the ratio's own spread.
    cpu_eff_vs_baseline_by_round: Spread,
    /// Session paths: the same for the driver threads' figure.
    transport_cpu_eff_vs_baseline_by_round: Option<Spread>,
    /// Every round's own figures, in measurement order.
    rounds: Vec<RoundFigures>,
}

impl Row {
    /// The row of a path measured in `rounds` (`None` when there are none), against the
    /// baseline's and the ceiling's best rounds (and the baseline's rounds, `base_rounds`,
    /// one by one).
    fn new(
        path: &'static str,
        rounds: &[Measured],
        base_rounds: &[Measured],
        ceil: Measured,
    ) -> Option<Row> {
        let (_, base) = best_round(base_rounds)?;
        let (best_round, m) = best_round(rounds)?;
        let paired = || rounds.iter().zip(base_rounds);
        let transport = best_transport_round(rounds);
        Some(Row {
            path,
            sent: m.sent,
            received: m.received,
            loss_pct: m.loss_pct(),
            seconds: m.secs,
            cpu_seconds: m.cpu_secs,
            pps: m.pps(),
            gbit_s: m.gbit_s(),
            packets_per_cpu_s: m.per_cpu(),
            transport_packets_per_cpu_s: transport.map(|(_, t)| t),
            transport_cpu_eff_vs_baseline: transport.map(|(_, t)| t / base.per_cpu()),
            datagrams_per_send: m.datagrams_per_send(),
            pps_vs_baseline: m.pps() / base.pps(),
            cpu_eff_vs_baseline: m.per_cpu() / base.per_cpu(),
            pps_vs_ceiling: m.pps() / ceil.pps(),
            cpu_eff_vs_ceiling: m.per_cpu() / ceil.per_cpu(),
            best_round,
            transport_best_round: transport.map(|(i, _)| i),
            packets_per_cpu_s_spread: Spread::of(rounds.iter().map(Measured::per_cpu))?,
            transport_packets_per_cpu_s_spread: Spread::of(
                rounds.iter().filter_map(Measured::transport_per_cpu),
            ),
            cpu_eff_vs_baseline_by_round: Spread::of(
                paired().map(|(m, b)| m.per_cpu() / b.per_cpu()),
            )?,
            transport_cpu_eff_vs_baseline_by_round: Spread::of(
                paired().filter_map(|(m, b)| Some(m.transport_per_cpu()? / b.per_cpu())),
            ),
            rounds: (1..).zip(rounds).map(|(i, m)| m.figures(i)).collect(),
        })
    }
}

/// One round of one path, as measured.
#[derive(Debug, Serialize)]
struct RoundFigures {
    /// 1-based.
    round: usize,
    sent: u64,
    received: u64,
    loss_pct: f64,
    seconds: f64,
    cpu_seconds: f64,
    pps: f64,
    gbit_s: f64,
    packets_per_cpu_s: f64,
    /// Session paths: packets per CPU-second of the driver threads alone.
    transport_packets_per_cpu_s: Option<f64>,
    /// Session paths: the host's mean GSO batch, in datagrams.
    datagrams_per_send: Option<f64>,
}

/// Best of N: the round (1-based) with the most packets per CPU-second, and its figures;
/// `None` for no rounds. Other tenants of a shared machine only ever add CPU time (steal,
/// cache and TLB pollution) or stalls to a measurement and never remove any, so the best
/// round is the closest to the path's true cost, and comparing best with best cancels most
/// of the noise that comparing two single measurements seconds apart suffers.
fn best_round(rounds: &[Measured]) -> Option<(usize, Measured)> {
    (1..)
        .zip(rounds.iter().copied())
        .max_by(|(_, a), (_, b)| a.per_cpu().total_cmp(&b.per_cpu()))
}

/// Best of N for the transport figure of session paths: the round (1-based) with the most
/// packets per CPU-second of the driver threads, and that figure; `None` for other paths.
/// Chosen on its own, by the same reasoning as [`best_round`]: the driver threads' CPU is
/// measured apart from the whole process's, and noise inflates each separately.
fn best_transport_round(rounds: &[Measured]) -> Option<(usize, f64)> {
    (1..)
        .zip(rounds)
        .filter_map(|(i, m)| Some((i, m.transport_per_cpu()?)))
        .max_by(|(_, a), (_, b)| a.total_cmp(b))
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    datagram_bytes: usize,
    gso_segments: usize,
    seconds_per_path: f64,
    /// Rounds each path was measured in; every row is its path's best round.
    rounds: u32,
    packets_cap: Option<u64>,
    sender_cpu: usize,
    receiver_cpu: usize,
    baseline: &'static str,
    ceiling: &'static str,
    rows: &'a [Row],
}

const BASELINE: &str = "std send_to/recv_from";
const CEILING: &str = "raw GSO/GRO (socket2+libc)";

/// A selectable path: its `--paths` id, its table name, and how it is measured.
type PathEntry = (&'static str, &'static str, Path);

pub(super) fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.size > 0 && args.size <= 65_507, "--size out of range");
    anyhow::ensure!(
        args.gso_segments >= 1 && args.size * args.gso_segments <= wavry_net::MAX_UDP_PAYLOAD,
        "--gso-segments x --size exceeds 65 507 B"
    );
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let paths = selected_paths(args)?;
    let rounds = measure_rounds(args, &paths)?;
    let rounds_of = |name: &str| {
        paths
            .iter()
            .zip(&rounds)
            .find(|((_, n, _), _)| *n == name)
            .map(|(_, ms)| ms.as_slice())
    };
    let base = rounds_of(BASELINE).context("baseline row")?;
    let (_, ceil) = rounds_of(CEILING)
        .and_then(best_round)
        .context("ceiling row")?;
    let rows: Vec<Row> = paths
        .iter()
        .zip(&rounds)
        .map(|((_, name, _), ms)| Row::new(name, ms, base, ceil))
        .collect::<Option<_>>()
        .context("a path without a measured round")?;
    print_table(args, &rows);
    if let Some(p) = &args.json {
        let report = Report {
            datagram_bytes: args.size,
            gso_segments: args.gso_segments,
            seconds_per_path: args.seconds,
            rounds: args.rounds,
            packets_cap: args.packets,
            sender_cpu: args.sender_cpu,
            receiver_cpu: args.receiver_cpu,
            baseline: BASELINE,
            ceiling: CEILING,
            rows: &rows,
        };
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// The paths `--paths` selects, in table order; the baseline (std, first) and the ceiling
/// (raw-gso) always.
fn selected_paths(args: &Args) -> anyhow::Result<Vec<PathEntry>> {
    let paths: [PathEntry; 10] = [
        ("std", BASELINE, Path::Std),
        ("mmsg", "sendmmsg/recvmmsg", Path::Mmsg),
        (
            "portable",
            "portable (quinn-udp, GSO/GRO)",
            Path::Backend(IoMode::Portable, Gso::On, false),
        ),
        (
            "portable-borrow",
            "portable GSO/GRO, borrowed rx",
            Path::Backend(IoMode::Portable, Gso::Borrow, false),
        ),
        (
            "portable-nogso",
            "portable, no GSO (batch 32)",
            Path::Backend(IoMode::Portable, Gso::Off, false),
        ),
        (
            "uring-nogso",
            "uring, no GSO (batch 32)",
            Path::Backend(IoMode::Uring, Gso::Off, false),
        ),
        (
            "uring-gso",
            "uring GSO/GRO",
            Path::Backend(IoMode::Uring, Gso::On, false),
        ),
        (
            "uring-borrow",
            "uring GSO/GRO, borrowed rx",
            Path::Backend(IoMode::Uring, Gso::Borrow, false),
        ),
        (
            "uring-zc",
            "uring GSO/GRO + SEND_ZC",
            Path::Backend(IoMode::Uring, Gso::On, true),
        ),
        ("raw-gso", CEILING, Path::RawGso),
    ];
    let session = session_stream_paths();
    for p in &args.paths {
        anyhow::ensure!(
            paths.iter().chain(&session).any(|(id, _, _)| id == p),
            "unknown path {p:?}"
        );
    }
    let wanted = |id: &str| {
        args.paths.is_empty()
            || id == "std"
            || id == "raw-gso"
            || args.paths.iter().any(|p| p == id)
    };
    Ok(paths
        .into_iter()
        .chain(session)
        .filter(|(id, _, _)| wanted(id))
        .collect())
}

/// Measures every path once per round, round-robin, so a change in the machine's load
/// between rounds hits every path alike; returns each path's rounds, in `paths` order.
/// Progress goes to stderr.
fn measure_rounds(args: &Args, paths: &[PathEntry]) -> anyhow::Result<Vec<Vec<Measured>>> {
    let n = args.rounds;
    let mut rounds = vec![Vec::with_capacity(n as usize); paths.len()];
    for round in 1..=n {
        for (&(id, name, path), ms) in paths.iter().zip(&mut rounds) {
            eprintln!("round {round}/{n}: {name} ...");
            let m =
                measure_path(args, id, name, path).with_context(|| format!("round {round}/{n}"))?;
            ms.push(m);
        }
    }
    Ok(rounds)
}

/// One measurement of one path.
fn measure_path(args: &Args, id: &str, name: &str, path: Path) -> anyhow::Result<Measured> {
    if let Path::Session(mode, burst) = path {
        session::measure(args, mode, burst).with_context(|| format!("measuring {name}"))
    } else {
        let (tx, rx) = path.open(args).with_context(|| format!("opening {name}"))?;
        measure(args, id, tx, rx).with_context(|| format!("measuring {name}"))
    }
}

/// The encrypted RIFT session stream (host driver -> client driver, sealed, FEC-protected,
/// paced, opened and reassembled) over each backend; see [`session::measure`].
fn session_stream_paths() -> Vec<PathEntry> {
    vec![
        (
            "session-portable",
            "encrypted session (portable)",
            Path::Session(IoMode::Portable, session::DEFAULT_BURST),
        ),
        (
            "session-uring",
            "encrypted session (uring)",
            Path::Session(IoMode::Uring, session::DEFAULT_BURST),
        ),
        (
            "session-portable-burst",
            "encrypted session (portable) burst 54",
            Path::Session(IoMode::Portable, session::GSO_BURST),
        ),
        (
            "session-uring-burst",
            "encrypted session (uring) burst 54",
            Path::Session(IoMode::Uring, session::GSO_BURST),
        ),
    ]
}

/// How a backend path batches: GSO sends and copying receive, GSO sends and borrowed
/// receive (`recv_with`), or one datagram per transmit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gso {
    On,
    Borrow,
    Off,
}

#[derive(Debug, Clone, Copy)]
enum Path {
    Std,
    Mmsg,
    Backend(IoMode, Gso, bool),
    RawGso,
    /// The encrypted session stream over a backend with this pacer burst (datagrams),
    /// measured by [`session::measure`].
    Session(IoMode, usize),
}

impl Path {
    fn open(self, args: &Args) -> anyhow::Result<(Box<dyn Tx>, Box<dyn Rx>)> {
        let payload = vec![0xa5u8; args.size];
        Ok(match self {
            Path::Std => {
                let (s, r) = std_pair(false)?;
                let dst = r.local_addr()?;
                (
                    Box::new(StdTx { s, dst, payload }),
                    Box::new(StdRx {
                        r,
                        buf: vec![0; SLOT],
                    }),
                )
            }
            Path::Mmsg => {
                let (s, r) = std_pair(false)?;
                let dst = SockAddr::from(r.local_addr()?);
                (
                    Box::new(MmsgTx { s, dst, payload }),
                    Box::new(MmsgRx {
                        r,
                        slots: vec![0; raw::MMSG_SLOT * raw::MMSG_BATCH],
                    }),
                )
            }
            Path::RawGso => {
                let (s, r) = std_pair(true)?;
                let dst = SockAddr::from(r.local_addr()?);
                (
                    Box::new(RawGsoTx {
                        s,
                        dst,
                        payload: vec![0xa5; args.size * args.gso_segments],
                        segment: args.size as u16,
                        segments: args.gso_segments as u64,
                    }),
                    Box::new(RawGroRx {
                        r,
                        buf: vec![0; SLOT],
                    }),
                )
            }
            Path::Session(..) => {
                anyhow::bail!("session paths are measured by session::measure")
            }
            Path::Backend(mode, gso, send_zc) => {
                let cfg = Config {
                    send_zc,
                    uring_buffers: args.uring_buffers,
                    ..Config::default()
                };
                let lo: SocketAddr = "127.0.0.1:0".parse()?;
                let s = wavry_net::bind(lo, mode, &cfg)?;
                let r = wavry_net::bind(lo, mode, &cfg)?;
                let dst = r.local_addr()?;
                let (per, count) = match gso {
                    // Two GSO transmits per call: one submission carries both on uring.
                    Gso::On | Gso::Borrow => (args.gso_segments.min(s.max_gso_segments()), 2),
                    Gso::Off => (1, 32),
                };
                (
                    Box::new(BackendTx {
                        s,
                        dst,
                        payload: vec![0xa5; args.size * per],
                        size: args.size,
                        per,
                        count,
                    }),
                    Box::new(BackendRx {
                        r,
                        storage: vec![0; SLOT * RX_SLOTS],
                        borrowed: gso == Gso::Borrow,
                    }),
                )
            }
        })
    }
}

/// A sender and a receiver socket on loopback with the same buffers the backends get.
fn std_pair(gro: bool) -> anyhow::Result<(UdpSocket, UdpSocket)> {
    use std::os::fd::AsFd;
    let cfg = Config::default();
    let s = UdpSocket::bind("127.0.0.1:0")?;
    let r = UdpSocket::bind("127.0.0.1:0")?;
    for (sock, opt, v) in [
        (&r, libc::SO_RCVBUFFORCE, cfg.recv_buffer),
        (&s, libc::SO_SNDBUFFORCE, cfg.send_buffer),
    ] {
        let v = i32::try_from(v).unwrap_or(i32::MAX);
        if wavry_net::cmsg::set_int(sock.as_fd(), libc::SOL_SOCKET, opt, v).is_err() {
            let plain = if opt == libc::SO_RCVBUFFORCE {
                libc::SO_RCVBUF
            } else {
                libc::SO_SNDBUF
            };
            wavry_net::cmsg::set_int(sock.as_fd(), libc::SOL_SOCKET, plain, v)?;
        }
    }
    if gro {
        wavry_net::cmsg::set_int(r.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 1)?;
    }
    r.set_read_timeout(Some(IDLE))?;
    Ok((s, r))
}

/// Timeouts surface as WouldBlock/TimedOut from a blocking socket with SO_RCVTIMEO.
fn idle(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

struct StdTx {
    s: UdpSocket,
    dst: SocketAddr,
    payload: Vec<u8>,
}

impl Tx for StdTx {
    fn send(&mut self) -> io::Result<u64> {
        self.s.send_to(&self.payload, self.dst).map(|_| 1)
    }
}

struct StdRx {
    r: UdpSocket,
    buf: Vec<u8>,
}

impl Rx for StdRx {
    fn recv(&mut self) -> io::Result<(u64, u64)> {
        match self.r.recv_from(&mut self.buf) {
            Ok((n, _)) => Ok((1, n as u64)),
            Err(e) if idle(&e) => Ok((0, 0)),
            Err(e) => Err(e),
        }
    }
}

struct MmsgTx {
    s: UdpSocket,
    dst: SockAddr,
    payload: Vec<u8>,
}

impl Tx for MmsgTx {
    fn send(&mut self) -> io::Result<u64> {
        raw::send_mmsg(&self.s, &self.dst, &self.payload, raw::MMSG_BATCH).map(|n| n as u64)
    }
}

struct MmsgRx {
    r: UdpSocket,
    slots: Vec<u8>,
}

impl Rx for MmsgRx {
    fn recv(&mut self) -> io::Result<(u64, u64)> {
        match raw::recv_mmsg(&self.r, &mut self.slots) {
            Ok((n, b)) => Ok((n as u64, b as u64)),
            Err(e) if idle(&e) => Ok((0, 0)),
            Err(e) => Err(e),
        }
    }
}

struct RawGsoTx {
    s: UdpSocket,
    dst: SockAddr,
    payload: Vec<u8>,
    segment: u16,
    segments: u64,
}

impl Tx for RawGsoTx {
    fn send(&mut self) -> io::Result<u64> {
        raw::send_gso(&self.s, &self.dst, &self.payload, self.segment).map(|()| self.segments)
    }
}

struct RawGroRx {
    r: UdpSocket,
    buf: Vec<u8>,
}

impl Rx for RawGroRx {
    fn recv(&mut self) -> io::Result<(u64, u64)> {
        match raw::recv_gro(&self.r, &mut self.buf) {
            Ok((len, n)) => Ok((n as u64, len as u64)),
            Err(e) if idle(&e) => Ok((0, 0)),
            Err(e) => Err(e),
        }
    }
}

struct BackendTx {
    s: NetSocket,
    dst: SocketAddr,
    payload: Vec<u8>,
    size: usize,
    /// Datagrams per transmit (GSO segments, or 1).
    per: usize,
    /// Transmits per `send` call.
    count: usize,
}

impl Tx for BackendTx {
    fn send(&mut self) -> io::Result<u64> {
        let t = Transmit {
            dst: self.dst,
            segment_size: (self.per > 1).then_some(self.size),
            ecn: None,
            contents: &self.payload,
        };
        let batch = [t; 32];
        self.s.send(&batch[..self.count])?;
        Ok((self.per * self.count) as u64)
    }
}

struct BackendRx {
    r: NetSocket,
    storage: Vec<u8>,
    borrowed: bool,
}

impl Rx for BackendRx {
    fn recv(&mut self) -> io::Result<(u64, u64)> {
        if self.borrowed {
            let (mut d, mut b) = (0u64, 0u64);
            self.r.recv_with(Some(IDLE), &mut |m, bytes| {
                d += m.datagrams() as u64;
                b += bytes.len() as u64;
            })?;
            return Ok((d, b));
        }
        let mut chunks = self.storage.chunks_mut(SLOT);
        let mut iovs: [IoSliceMut<'_>; RX_SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let mut meta = [RecvMeta::default(); RX_SLOTS];
        let n = self.r.recv(&mut iovs, &mut meta, Some(IDLE))?;
        Ok(meta[..n].iter().fold((0, 0), |(d, b), m| {
            (d + m.datagrams() as u64, b + m.len as u64)
        }))
    }
}

/// Raw figures of one path.
#[derive(Debug, Clone, Copy)]
pub(super) struct Measured {
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) bytes: u64,
    pub(super) secs: f64,
    pub(super) cpu_secs: f64,
    /// Session paths: CPU of the two driver threads alone (the transport), without the
    /// application's frame producer and consumer.
    pub(super) transport_cpu_secs: Option<f64>,
    /// Session paths: the host driver's transmits (one per GSO batch) in the window.
    pub(super) sends: Option<u64>,
}

impl Measured {
    fn pps(&self) -> f64 {
        self.received as f64 / self.secs
    }
    fn per_cpu(&self) -> f64 {
        self.received as f64 / self.cpu_secs.max(1e-9)
    }
    fn gbit_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.secs / 1e9
    }
    fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * (1.0 - self.received as f64 / self.sent as f64)
        }
    }
    /// Session paths: the host's mean GSO batch, in datagrams.
    fn datagrams_per_send(&self) -> Option<f64> {
        self.sends.map(|n| self.sent as f64 / n.max(1) as f64)
    }
    /// Session paths: packets per CPU-second of the driver threads alone.
    fn transport_per_cpu(&self) -> Option<f64> {
        self.transport_cpu_secs
            .map(|c| self.received as f64 / c.max(1e-9))
    }
    /// This measurement as round `round` of its row.
    fn figures(&self, round: usize) -> RoundFigures {
        RoundFigures {
            round,
            sent: self.sent,
            received: self.received,
            loss_pct: self.loss_pct(),
            seconds: self.secs,
            cpu_seconds: self.cpu_secs,
            pps: self.pps(),
            gbit_s: self.gbit_s(),
            packets_per_cpu_s: self.per_cpu(),
            transport_packets_per_cpu_s: self.transport_per_cpu(),
            datagrams_per_send: self.datagrams_per_send(),
        }
    }
}

/// Runs one path: pinned sender and receiver threads, unpaced, bounded by time and count.
fn measure(
    args: &Args,
    id: &str,
    mut tx: Box<dyn Tx>,
    mut rx: Box<dyn Rx>,
) -> anyhow::Result<Measured> {
    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(Barrier::new(3));
    let dur = Duration::from_secs_f64(args.seconds);
    let cap = args.packets.unwrap_or(u64::MAX);
    let (scpu, rcpu) = (args.sender_cpu, args.receiver_cpu);
    let cpu0 = raw::process_cpu_time();
    let sender = {
        let (stop, go) = (stop.clone(), go.clone());
        std::thread::Builder::new().name(format!("t:{id}")).spawn(
            move || -> io::Result<(u64, Duration)> {
                pin(scpu);
                go.wait();
                let t0 = Instant::now();
                let mut sent = 0u64;
                let r = loop {
                    if sent >= cap || t0.elapsed() >= dur {
                        break Ok(());
                    }
                    match tx.send() {
                        Ok(n) => sent += n,
                        Err(e) => break Err(e),
                    }
                };
                let el = t0.elapsed();
                stop.store(true, Ordering::Release);
                r.map(|()| (sent, el))
            },
        )?
    };
    let receiver = {
        let (stop, go) = (stop.clone(), go.clone());
        std::thread::Builder::new().name(format!("r:{id}")).spawn(
            move || -> io::Result<(u64, u64)> {
                pin(rcpu);
                go.wait();
                let (mut n, mut b) = (0u64, 0u64);
                loop {
                    let (dn, db) = rx.recv()?;
                    n += dn;
                    b += db;
                    if dn == 0 && stop.load(Ordering::Acquire) {
                        return Ok((n, b));
                    }
                }
            },
        )?
    };
    go.wait();
    let (sent, el) = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let (received, bytes) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    let cpu = raw::process_cpu_time().saturating_sub(cpu0);
    Ok(Measured {
        sent,
        received,
        bytes,
        secs: el.as_secs_f64(),
        cpu_secs: cpu.as_secs_f64(),
        transport_cpu_secs: None,
        sends: None,
    })
}

/// Pins the calling thread; an unpinned run still measures, only with more spread.
fn pin(cpu: usize) {
    if let Err(e) = raw::pin_to_cpu(cpu) {
        eprintln!("warning: cannot pin to CPU {cpu} ({e}); figures will swing more");
    }
}

/// The encrypted session stream: a `HostDriver` streams video to a `ClientDriver`.
mod session;
/// The text table.
mod table;

#[cfg(test)]
mod tests;
