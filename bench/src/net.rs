//! `wavry-bench net`: loopback packet I/O throughput of every path, in one run.
//!
//! For `--size`-byte datagrams (1200 by default) a pinned sender thread blasts unpaced for
//! `--seconds` (or `--packets`) while a pinned receiver counts what arrives. Paths: std
//! `send_to`/`recv_from` (the baseline), `sendmmsg`/`recvmmsg`, the portable backend, the uring
//! backend without GSO, with GSO/GRO, with GSO/GRO and SEND_ZC, and a raw GSO `sendmsg` / GRO
//! `recvmsg` pair (the ceiling), and the encrypted RIFT session stream (a host driver streaming
//! 64 KiB frames to a client driver) over each backend. Each row: received pps, Gbit/s, packets per CPU-second of the
//! whole process (getrusage), loss, and ratios against the baseline and the ceiling measured in
//! the same run. `--json` writes the same numbers.

use std::path::PathBuf;

/// Options of `wavry-bench net`.
#[derive(clap::Args, Debug)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // read only by the Linux paths
pub(crate) struct Args {
    /// Seconds each path is measured.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Stop a path after this many datagrams were sent (bounds the run together with --seconds).
    #[arg(long)]
    packets: Option<u64>,
    /// Datagram size in bytes.
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// Datagrams per GSO send (the kernel allows 65 507 B per send: 54 x 1200 B).
    #[arg(long, default_value_t = 54)]
    gso_segments: usize,
    /// Provided receive buffers per io_uring socket (power of two; each ~64 KiB).
    #[arg(long, default_value_t = wavry_net::Config::default().uring_buffers)]
    uring_buffers: u16,
    /// CPU for the sender thread.
    #[arg(long, default_value_t = 0)]
    sender_cpu: usize,
    /// CPU for the receiver thread.
    #[arg(long, default_value_t = 1)]
    receiver_cpu: usize,
    /// Comma-separated path ids to run (std, mmsg, portable, portable-nogso, uring-nogso,
    /// uring-gso, uring-zc, raw-gso, session-portable, session-uring, session-portable-burst,
    /// session-uring-burst); the baseline (std) and ceiling (raw-gso) always run.
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod raw;

#[cfg(target_os = "linux")]
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    linux::run(args)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("wavry-bench net measures Linux paths (io_uring, GSO/GRO, sendmmsg) only")
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{self, IoSliceMut};
    use std::net::{SocketAddr, UdpSocket};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, Instant};

    use anyhow::Context as _;
    use serde::Serialize;
    use socket2::SockAddr;
    use wavry_net::{Backend, Config, IoMode, NetSocket, RecvMeta, Transmit};

    use super::Args;
    use super::raw;

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

    /// One row of the table.
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
        /// Session paths: packets per CPU-second of the driver threads alone.
        transport_packets_per_cpu_s: Option<f64>,
        /// ... and that against the baseline's packets per CPU-second.
        transport_cpu_eff_vs_baseline: Option<f64>,
        pps_vs_baseline: f64,
        cpu_eff_vs_baseline: f64,
        pps_vs_ceiling: f64,
        cpu_eff_vs_ceiling: f64,
    }

    #[derive(Debug, Serialize)]
    struct Report<'a> {
        datagram_bytes: usize,
        gso_segments: usize,
        seconds_per_path: f64,
        packets_cap: Option<u64>,
        sender_cpu: usize,
        receiver_cpu: usize,
        baseline: &'static str,
        ceiling: &'static str,
        rows: &'a [Row],
    }

    const BASELINE: &str = "std send_to/recv_from";
    const CEILING: &str = "raw GSO/GRO (socket2+libc)";

    pub(super) fn run(args: &Args) -> anyhow::Result<()> {
        anyhow::ensure!(args.size > 0 && args.size <= 65_507, "--size out of range");
        anyhow::ensure!(
            args.gso_segments >= 1 && args.size * args.gso_segments <= wavry_net::MAX_UDP_PAYLOAD,
            "--gso-segments x --size exceeds 65 507 B"
        );
        let mut rows = Vec::new();
        let paths: [(&str, &'static str, Path); 10] = [
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
        for (id, name, path) in paths
            .into_iter()
            .chain(session.iter().copied())
            .filter(|(id, _, _)| wanted(id))
        {
            let m = if let Path::Session(mode, burst) = path {
                session::measure(args, mode, burst).with_context(|| format!("measuring {name}"))?
            } else {
                let (tx, rx) = path.open(args).with_context(|| format!("opening {name}"))?;
                measure(args, id, tx, rx).with_context(|| format!("measuring {name}"))?
            };
            rows.push((name, m));
        }
        let base = rows[0].1;
        let ceil = rows
            .iter()
            .find(|(n, _)| *n == CEILING)
            .map(|r| r.1)
            .context("ceiling row")?;
        let rows: Vec<Row> = rows
            .into_iter()
            .map(|(path, m)| m.row(path, base, ceil))
            .collect();
        print_table(args, &rows);
        if let Some(p) = &args.json {
            let report = Report {
                datagram_bytes: args.size,
                gso_segments: args.gso_segments,
                seconds_per_path: args.seconds,
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

    /// The encrypted RIFT session stream (host driver -> client driver, sealed, FEC-protected,
    /// paced, opened and reassembled) over each backend; see [`session::measure`].
    fn session_stream_paths() -> Vec<(&'static str, &'static str, Path)> {
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
    }

    impl Measured {
        fn pps(&self) -> f64 {
            self.received as f64 / self.secs
        }
        fn per_cpu(&self) -> f64 {
            self.received as f64 / self.cpu_secs.max(1e-9)
        }
        fn row(self, path: &'static str, base: Measured, ceil: Measured) -> Row {
            Row {
                path,
                sent: self.sent,
                received: self.received,
                loss_pct: if self.sent == 0 {
                    0.0
                } else {
                    100.0 * (1.0 - self.received as f64 / self.sent as f64)
                },
                seconds: self.secs,
                cpu_seconds: self.cpu_secs,
                pps: self.pps(),
                gbit_s: self.bytes as f64 * 8.0 / self.secs / 1e9,
                packets_per_cpu_s: self.per_cpu(),
                transport_packets_per_cpu_s: self
                    .transport_cpu_secs
                    .map(|c| self.received as f64 / c.max(1e-9)),
                transport_cpu_eff_vs_baseline: self
                    .transport_cpu_secs
                    .map(|c| self.received as f64 / c.max(1e-9) / base.per_cpu()),
                pps_vs_baseline: self.pps() / base.pps(),
                cpu_eff_vs_baseline: self.per_cpu() / base.per_cpu(),
                pps_vs_ceiling: self.pps() / ceil.pps(),
                cpu_eff_vs_ceiling: self.per_cpu() / ceil.per_cpu(),
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
        })
    }

    /// Pins the calling thread; an unpinned run still measures, only with more spread.
    fn pin(cpu: usize) {
        if let Err(e) = raw::pin_to_cpu(cpu) {
            eprintln!("warning: cannot pin to CPU {cpu} ({e}); figures will swing more");
        }
    }

    fn print_table(args: &Args, rows: &[Row]) {
        println!(
            "wavry-bench net: {} B datagrams, loopback, {:.1} s per path, sender CPU {} / receiver CPU {}",
            args.size, args.seconds, args.sender_cpu, args.receiver_cpu
        );
        println!(
            "{:<32} {:>10} {:>8} {:>12} {:>6} {:>8} {:>8} {:>8} {:>8}",
            "path",
            "pps",
            "Gbit/s",
            "pkts/CPU-s",
            "loss%",
            "xbase",
            "xbaseCPU",
            "xceil",
            "xceilCPU"
        );
        for r in rows {
            println!(
                "{:<32} {:>10.0} {:>8.2} {:>12.0} {:>6.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                r.path,
                r.pps,
                r.gbit_s,
                r.packets_per_cpu_s,
                r.loss_pct,
                r.pps_vs_baseline,
                r.cpu_eff_vs_baseline,
                r.pps_vs_ceiling,
                r.cpu_eff_vs_ceiling
            );
        }
        println!(
            "baseline = {BASELINE}; ceiling = {CEILING}; x* = ratio of pps / packets per CPU-second in this run"
        );
        let transport: Vec<_> = rows
            .iter()
            .filter_map(|r| {
                Some((
                    r,
                    r.transport_packets_per_cpu_s?,
                    r.transport_cpu_eff_vs_baseline?,
                ))
            })
            .collect();
        if !transport.is_empty() {
            println!(
                "\nsession rows, CPU of the two driver threads only (the transport; the rows above count the whole process, frame producer and consumer included):"
            );
            println!("{:<40} {:>12} {:>8}", "path", "pkts/CPU-s", "xbaseCPU");
            for (r, per_cpu, x) in transport {
                println!("{:<40} {per_cpu:>12.0} {x:>8.2}", r.path);
            }
        }
    }

    /// The encrypted session stream: a `HostDriver` streams video to a `ClientDriver`.
    mod session {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};

        use anyhow::Context as _;
        use wavry_net::{ClientDriver, Config, DriverConfig, DriverStats, HostDriver, IoMode};
        use wavry_rift::cc::DeltaConfig;
        use wavry_rift::crypto::PeerPolicy;
        use wavry_rift::identity::IdentityKey;
        use wavry_rift::session::{Endpoint, Event, FrameMeta, Role, SessionConfig, SessionHandle};

        use super::{Args, Measured, raw};

        /// Frame size the host streams (a large P-frame / small keyframe).
        const FRAME: usize = 64 << 10;
        /// Fixed DELTA rate (min = max = initial): far above what loopback carries here, so the
        /// pacer, not congestion control, is the only brake.
        const RATE_BPS: u64 = 40_000_000_000;
        /// Frame admission: media datagrams queued in the host session before the driver holds
        /// the next frame (about eight 64 KiB frames; ~3 ms of stream here, well inside a
        /// frame's deadline).
        const HIGH_WATER: usize = 512;
        const WAIT: Duration = Duration::from_secs(10);
        /// The session's default pacer burst (datagrams back to back).
        pub(super) const DEFAULT_BURST: usize = 4;
        /// A burst of one full GSO batch (54 x 1200 B = 64 800 B <= 65 507 B).
        pub(super) const GSO_BURST: usize = 54;

        /// Streams `--seconds` of 64 KiB frames over loopback and counts, from the drivers'
        /// own counters, the datagrams the host sent and the client received (data, parity
        /// and feedback) within the window; CPU is the whole process (both drivers and both
        /// application threads). `--size` does not apply: the session's MTU is 1200 B.
        pub(super) fn measure(args: &Args, mode: IoMode, burst: usize) -> anyhow::Result<Measured> {
            let host_key = Arc::new(IdentityKey::from_seed([0x48; 32])?);
            let client_key = Arc::new(IdentityKey::from_seed([0x43; 32])?);
            let mut host_cfg = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_key.id()));
            host_cfg.cc = DeltaConfig {
                min_bps: RATE_BPS,
                max_bps: RATE_BPS,
                initial_bps: RATE_BPS,
                ..DeltaConfig::default()
            };
            host_cfg.pacer_burst = burst;
            let client_cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
            let lo = "127.0.0.1:0".parse()?;
            let net = Config {
                uring_buffers: args.uring_buffers,
                ..Config::default()
            };
            let host = HostDriver::spawn(
                wavry_net::bind(lo, mode, &net)?,
                Endpoint::new(host_cfg, host_key, 1),
                DriverConfig {
                    command_capacity: 16,
                    media_high_water: Some(HIGH_WATER),
                    thread_name: "bench-host".into(),
                    ..DriverConfig::default()
                },
            )?;
            let client = ClientDriver::connect(
                wavry_net::bind(lo, mode, &net)?,
                client_cfg,
                client_key,
                host.local_addr(),
                DriverConfig {
                    thread_name: "bench-client".into(),
                    ..DriverConfig::default()
                },
            )?;
            let deadline = Instant::now() + WAIT;
            let session = loop {
                match host
                    .events()
                    .recv_deadline(deadline)
                    .context("host Connected")?
                {
                    (h, Event::Connected { .. }) => break h,
                    (_, Event::Closed(r)) => anyhow::bail!("host session closed: {r:?}"),
                    _ => {}
                }
            };
            loop {
                match client
                    .events()
                    .recv_deadline(deadline)
                    .context("client Connected")?
                {
                    Event::Connected { .. } => break,
                    Event::Closed(r) => anyhow::bail!("client session closed: {r:?}"),
                    _ => {}
                }
            }
            let stop = Arc::new(AtomicBool::new(false));
            let dur = Duration::from_secs_f64(args.seconds);
            let (h0, c0) = (counters(&host, session)?, client.snapshot(WAIT)?.driver);
            let cpu0 = raw::process_cpu_time();
            let transport0 = raw::threads_cpu_time(&["bench-host", "bench-client"]);
            let t0 = Instant::now();
            std::thread::scope(|s| -> anyhow::Result<()> {
                let producer = s.spawn(|| produce(&host, session, &stop));
                let consumer = s.spawn(|| consume(&client, &stop));
                // The measurement window itself: nothing to synchronise with, the streams run.
                std::thread::sleep(dur.saturating_sub(t0.elapsed()));
                stop.store(true, Ordering::Release);
                producer
                    .join()
                    .map_err(|_| anyhow::anyhow!("producer panicked"))??;
                consumer
                    .join()
                    .map_err(|_| anyhow::anyhow!("consumer panicked"))??;
                Ok(())
            })?;
            let (h1, c1) = (counters(&host, session)?, client.snapshot(WAIT)?.driver);
            let secs = t0.elapsed().as_secs_f64();
            let cpu = raw::process_cpu_time().saturating_sub(cpu0);
            let transport =
                raw::threads_cpu_time(&["bench-host", "bench-client"]).saturating_sub(transport0);
            client.shutdown()?;
            host.shutdown()?;
            Ok(Measured {
                sent: h1.datagrams_sent - h0.datagrams_sent,
                received: c1.datagrams_received - c0.datagrams_received,
                bytes: c1.bytes_received - c0.bytes_received,
                secs,
                cpu_secs: cpu.as_secs_f64(),
                transport_cpu_secs: Some(transport.as_secs_f64()),
            })
        }

        fn counters(host: &HostDriver, session: SessionHandle) -> anyhow::Result<DriverStats> {
            Ok(host
                .snapshot(session, WAIT)?
                .context("host session vanished")?
                .driver)
        }

        /// Sends frames as fast as the host driver admits them (its bounded command queue and
        /// media high-water mark block this thread while the pacer catches up).
        fn produce(
            host: &HostDriver,
            session: SessionHandle,
            stop: &AtomicBool,
        ) -> anyhow::Result<()> {
            // Capture timestamps in µs: the client's deadline buffer reads them.
            let epoch = Instant::now();
            while !stop.load(Ordering::Acquire) {
                let mut data = host.take_buffer();
                data.resize(FRAME, 0xa5);
                let meta = FrameMeta {
                    timestamp_us: epoch.elapsed().as_micros() as u64,
                    ..FrameMeta::default()
                };
                host.send_frame(session, data, meta, Duration::from_millis(2))?;
                while host.events().try_recv().is_ok() {}
            }
            Ok(())
        }

        /// Takes the client's events and recycles every frame.
        fn consume(client: &ClientDriver, stop: &AtomicBool) -> anyhow::Result<()> {
            while !stop.load(Ordering::Acquire) {
                match client.events().recv_timeout(Duration::from_millis(20)) {
                    Ok(Event::Frame(f)) => client.recycle(f)?,
                    Ok(Event::Closed(r)) => anyhow::bail!("client closed while streaming: {r:?}"),
                    Ok(_) | Err(_) => {}
                }
            }
            Ok(())
        }
    }
}
