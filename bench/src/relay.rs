//! `wavry-bench relay`: a real `wavry-relay` process against a naive forwarder and a raw
//! forward ceiling, in the same run, under the same load.
//!
//! Per round and per load shape (single datagrams from many flows, eight per `sendmmsg` so that
//! the bench's sender is not the bottleneck; GSO batches): saturation
//! through the ceiling, the naive forwarder and the relay (forwarded pps, Gbit/s, forwarder
//! CPU-seconds from /proc, packets per forwarder CPU-second, loss); then, at half the relay's
//! saturation rate of that round, one-way latency through the relay and on the direct path
//! (added latency = the difference). Then a junk flood at the relay's GSO saturation rate
//! beside valid single datagrams at half the relay's single-datagram saturation rate (valid
//! loss). After the rounds: a session-count
//! run (N concurrent sessions admitted with real leases; relay RSS). Headline ratios are the
//! median of same-round ratios of packets per CPU-second, with min and max beside them.

mod forwarders;
mod load;
#[cfg(target_os = "linux")]
mod netns;
mod report;
mod setup;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Serialize;
use wavry_relay::peer::encode_forward;
use wavry_rift::identity::IdentityKey;
use wavry_rift::wire::PeerRole;

use crate::spread::Spread;

use self::load::{CpuProbe, Flows, Junk, Load, Outcome, Shape};
use self::report::{added_latency, p99_upper_bound, print_report, progress, ratio_spread};
use self::setup::{Presentation, RelayOptions, RelayProcess};

/// Options of `wavry-bench relay`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Measurement rounds, at least 1; every measurement runs once per round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds of sending per measurement (a round is about 11 measurements).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Session pairs (= client flows, one source port each) in the load runs.
    #[arg(long, default_value_t = 64)]
    sessions: usize,
    /// Datagram size in bytes (at least 36: header, sequence number, timestamp).
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// Datagrams per GSO batch in the gso shape (65 507 B per send: 54 x 1200 B).
    #[arg(long, default_value_t = 54)]
    gso_segments: usize,
    /// Concurrent sessions admitted in the session-count run (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    session_count: usize,
    /// Relay forwarding threads (`--threads`); the bench's sender and receiver need the rest.
    #[arg(long, default_value_t = 1)]
    relay_threads: usize,
    /// Relay I/O backend (`--io`: auto, uring, portable).
    #[arg(long, default_value = "auto")]
    relay_io: String,
    /// The wavry-relay binary (default: beside this one).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Junk datagrams per second in the junk-flood run (default: the relay's saturation rate
    /// with GSO input measured in the same round; junk goes out mostly in GSO batches).
    #[arg(long)]
    junk_rate: Option<f64>,
    /// Skip the junk-flood run.
    #[arg(long)]
    no_junk: bool,
    /// Smoke test: 1 round of 0.3 s, 8 sessions, 2000 in the session-count run.
    #[arg(long)]
    quick: bool,
    /// Where the forwarders run: loopback (this namespace; relay vs naive vs GSO ceiling) or
    /// netns (namespaces and veth pairs this run creates and removes, as root: the relay on
    /// AF_XDP vs the relay on io_uring vs naive, each pinned with its NAPI threads to
    /// --relay-cpus and charged all time on them).
    #[arg(long, default_value = "loopback", value_parser = ["loopback", "netns"])]
    topology: String,
    /// netns topology: CPUs of the forwarder under test (default: the last CPU).
    #[arg(long)]
    relay_cpus: Option<String>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The forwarders compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Fwd {
    Ceiling,
    Naive,
    /// The relay (on io_uring in the netns topology).
    Relay,
    /// The relay on AF_XDP (netns topology only).
    Xdp,
    Direct,
}

/// Figures of one measurement.
#[derive(Debug, Clone, Serialize)]
struct Figures {
    forwarder: Fwd,
    shape: Shape,
    sent: u64,
    received: u64,
    pps: f64,
    gbit_s: f64,
    cpu_seconds: f64,
    packets_per_cpu_s: f64,
    loss_pct: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    /// Latency to the receiving socket (kernel receive timestamp): without the bench
    /// receiver's own wake-up.
    socket_p50_us: f64,
    socket_p99_us: f64,
    socket_p999_us: f64,
    /// The relay's own p99 (receipt of a batch to its send submission, from the upper bounds
    /// of its /metrics histogram): the part of the added latency spent working, not waiting
    /// to run. Relay half-rate runs only.
    inside_p99_us: Option<f64>,
    junk_sent: u64,
    junk_pps: f64,
}

impl Figures {
    fn of(forwarder: Fwd, shape: Shape, size: usize, o: &Outcome) -> Self {
        let pps = o.received as f64 / o.secs;
        let q = |p: f64| o.latency.value_at_quantile(p) as f64 / 1e3;
        let qs = |p: f64| o.socket_latency.value_at_quantile(p) as f64 / 1e3;
        Self {
            forwarder,
            shape,
            sent: o.sent,
            received: o.received,
            pps,
            gbit_s: pps * size as f64 * 8.0 / 1e9,
            cpu_seconds: o.cpu_secs,
            packets_per_cpu_s: if o.cpu_secs > 0.0 {
                o.received as f64 / o.cpu_secs
            } else {
                0.0
            },
            loss_pct: if o.sent == 0 {
                0.0
            } else {
                100.0 * o.sent.saturating_sub(o.received) as f64 / o.sent as f64
            },
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            socket_p50_us: qs(0.5),
            socket_p99_us: qs(0.99),
            socket_p999_us: qs(0.999),
            inside_p99_us: None,
            junk_sent: o.junk_sent,
            junk_pps: o.junk_sent as f64 / o.secs,
        }
    }
}

/// One round: saturation and latency per shape, the junk run.
#[derive(Debug, Serialize)]
struct Round {
    index: u32,
    saturation: Vec<Figures>,
    latency: Vec<Figures>,
    junk: Option<Figures>,
    /// The same junk run against a second relay with `--kernel-filter prefix`.
    junk_prefix: Option<Figures>,
}

/// The session-count run.
#[derive(Debug, Serialize)]
struct SessionCount {
    sessions: usize,
    rss_before_bytes: u64,
    rss_after_bytes: u64,
    admit_seconds: f64,
    forwarded_after: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    size: usize,
    sessions: usize,
    gso_segments: usize,
    relay_threads: usize,
    relay_io: String,
    /// The relay's kernel filter in force (its /health).
    kernel_filter: String,
    rounds: Vec<Round>,
    ratios: Vec<RatioRow>,
    added_latency: Vec<AddedLatency>,
    session_count: Option<SessionCount>,
}

/// Latency the relay adds at half its saturation rate: relay minus direct path, same round.
#[derive(Debug, Serialize)]
struct AddedLatency {
    shape: Shape,
    /// p99 to the receiving thread.
    p99_us: Spread,
    /// p99 to the receiving socket (without the bench receiver's wake-up).
    socket_p99_us: Spread,
}

/// Headline ratios of one shape over the rounds.
#[derive(Debug, Serialize)]
struct RatioRow {
    shape: Shape,
    relay_vs_ceiling: Spread,
    relay_vs_naive: Spread,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let (rounds, seconds, sessions, count) = if args.quick {
        (1, 0.3, 8, 2000)
    } else {
        (args.rounds, args.seconds, args.sessions, args.session_count)
    };
    if args.size < load::MIN_SIZE || args.size > 1472 {
        bail!("--size must be within {}..=1472", load::MIN_SIZE);
    }
    let bin = match &args.relay_bin {
        Some(b) => b.clone(),
        None => wavry_control_testkit::sibling_binary(
            &std::env::current_exe().context("current exe")?,
            "wavry-relay",
        )
        .context("wavry-relay not found beside wavry-bench: `cargo build -p wavry-relay` (same profile) or pass --relay-bin")?,
    };
    if args.topology == "netns" {
        #[cfg(target_os = "linux")]
        return netns::run(args, &bin);
        #[cfg(not(target_os = "linux"))]
        bail!("--topology netns needs Linux");
    }
    let opts = RelayOptions {
        bin,
        threads: args.relay_threads.max(1),
        io: args.relay_io.clone(),
        max_sessions: sessions * 2 + 16,
        kernel_filter: "bound-peers",
        place: None,
    };
    let sessions = sessions.max(1);
    let keys = [IdentityKey::generate()?, IdentityKey::generate()?];
    eprintln!(
        "relay bench: {rounds} round(s) x {seconds} s, {sessions} sessions, {} B, relay --threads {} --io {}",
        args.size, opts.threads, opts.io
    );
    let relay = RelayProcess::start(&opts)?;
    let kernel_filter = relay.kernel_filter()?;
    eprintln!("relay kernel filter in force: {kernel_filter}");
    let flows = Flows::new(sessions)?;
    let captured = admit_flows(&relay, &flows, &keys, None)?;
    // The junk run's baseline: the same relay with only the classic prefix filter.
    let prefix_relay = if args.no_junk {
        None
    } else {
        let r = RelayProcess::start(&RelayOptions {
            kernel_filter: "prefix",
            ..opts.clone()
        })?;
        let captured = admit_flows(&r, &flows, &keys, None)?;
        let junk = Junk::new(&flows, &captured, args.size, args.gso_segments)?;
        Some((r, junk))
    };
    let naive = forwarders::naive()?;
    register_naive(&flows, naive.addr, naive.addr)?;
    let ceiling = forwarders::ceiling(flows.receiver.local_addr()?)?;
    let junk = Junk::new(&flows, &captured, args.size, args.gso_segments)?;
    let base = Load {
        shape: Shape::Single,
        rate: None,
        seconds,
        size: args.size,
        segments: args.gso_segments.max(1),
        junk: None,
    };
    let direct = flows.receiver.local_addr()?;
    let targets = [
        (
            Fwd::Ceiling,
            ceiling.addr,
            CpuProbe::Thread(forwarders::CEILING_THREAD),
        ),
        (
            Fwd::Naive,
            naive.addr,
            CpuProbe::Thread(forwarders::NAIVE_THREAD),
        ),
        (Fwd::Relay, relay.udp, CpuProbe::Process(relay.pid())),
    ];
    let mut report = Report {
        size: args.size,
        sessions,
        gso_segments: base.segments,
        relay_threads: opts.threads,
        relay_io: opts.io.clone(),
        kernel_filter,
        rounds: Vec::new(),
        ratios: Vec::new(),
        added_latency: Vec::new(),
        session_count: None,
    };
    for r in 1..=rounds {
        let mut round = Round {
            index: r,
            saturation: Vec::new(),
            latency: Vec::new(),
            junk: None,
            junk_prefix: None,
        };
        let (mut single_sat, mut gso_sat) = (0.0, 0.0);
        for shape in [Shape::Single, Shape::Gso] {
            let load = Load { shape, ..base };
            let mut relay_pps = 0.0;
            for (fwd, addr, probe) in targets {
                let o = load::measure(&flows, addr, probe, load, None)?;
                let f = Figures::of(fwd, shape, args.size, &o);
                progress(r, rounds, "saturation", &f);
                if fwd == Fwd::Relay {
                    relay_pps = f.pps;
                }
                round.saturation.push(f);
            }
            match shape {
                Shape::Single => single_sat = relay_pps,
                Shape::Gso => gso_sat = relay_pps,
            }
            let half = Load {
                rate: Some((relay_pps / 2.0).max(1000.0)),
                ..load
            };
            for (fwd, addr, probe) in [
                (Fwd::Direct, direct, CpuProbe::None),
                (Fwd::Relay, relay.udp, CpuProbe::Process(relay.pid())),
            ] {
                let before = (fwd == Fwd::Relay).then(|| relay.forward_latency_buckets());
                let o = load::measure(&flows, addr, probe, half, None)?;
                let mut f = Figures::of(fwd, shape, args.size, &o);
                if let Some(before) = before {
                    f.inside_p99_us = p99_upper_bound(&before?, &relay.forward_latency_buckets()?);
                }
                progress(r, rounds, "half-rate", &f);
                round.latency.push(f);
            }
        }
        if !args.no_junk {
            let load = Load {
                rate: Some((single_sat / 2.0).max(1000.0)),
                junk: Some(args.junk_rate.unwrap_or(gso_sat).max(1000.0)),
                ..base
            };
            let o = load::measure(
                &flows,
                relay.udp,
                CpuProbe::Process(relay.pid()),
                load,
                Some(&junk),
            )?;
            let f = Figures::of(Fwd::Relay, Shape::Single, args.size, &o);
            progress(r, rounds, "junk flood", &f);
            round.junk = Some(f);
            if let Some((pr, pjunk)) = &prefix_relay {
                let o = load::measure(
                    &flows,
                    pr.udp,
                    CpuProbe::Process(pr.pid()),
                    load,
                    Some(pjunk),
                )?;
                let f = Figures::of(Fwd::Relay, Shape::Single, args.size, &o);
                progress(r, rounds, "junk/prefx", &f);
                round.junk_prefix = Some(f);
            }
        }
        report.rounds.push(round);
    }
    drop((naive, ceiling, relay, prefix_relay));
    for shape in [Shape::Single, Shape::Gso] {
        if let (Some(c), Some(n)) = (
            ratio_spread(&report.rounds, shape, Fwd::Relay, Fwd::Ceiling),
            ratio_spread(&report.rounds, shape, Fwd::Relay, Fwd::Naive),
        ) {
            report.ratios.push(RatioRow {
                shape,
                relay_vs_ceiling: c,
                relay_vs_naive: n,
            });
        }
    }
    report.added_latency = added_latency(&report.rounds);
    if count > 0 {
        report.session_count = Some(session_count(&opts, count, &keys)?);
    }
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Admits every flow's session: the flow's socket as client, the receiver as server. With
/// `to`, clients present to its first address and the receiver to its second (a relay seen
/// at one address from each side); else all present to the relay's address.
fn admit_flows(
    relay: &RelayProcess,
    flows: &Flows,
    keys: &[IdentityKey; 2],
    to: Option<(SocketAddr, SocketAddr)>,
) -> anyhow::Result<Vec<u8>> {
    let mut socks: Vec<std::net::UdpSocket> = flows
        .socks
        .iter()
        .map(std::net::UdpSocket::try_clone)
        .collect::<Result<_, _>>()?;
    socks.push(flows.receiver.try_clone()?);
    // The last measurement may have left a full receive queue (a saturated forwarder keeps
    // delivering for a while): answers must not queue behind it.
    for s in &socks {
        load::drain(s)?;
    }
    let server = socks.len() - 1;
    let dests: Vec<SocketAddr> = match to {
        Some((client_to, server_to)) => (0..socks.len())
            .map(|i| if i == server { server_to } else { client_to })
            .collect(),
        None => Vec::new(),
    };
    let mut peers = Vec::with_capacity(flows.sids.len() * 2);
    for (i, sid) in flows.sids.iter().enumerate() {
        peers.push(Presentation {
            sock: i,
            sid: *sid,
            role: PeerRole::Client,
        });
        peers.push(Presentation {
            sock: server,
            sid: *sid,
            role: PeerRole::Server,
        });
    }
    setup::admit(relay, &socks, &dests, keys, &peers, |_| {})
}

/// Teaches the naive forwarder both peers of every session (it learns the first two source
/// addresses of a session, in either order): clients send to `client_to`, the receiver to
/// `server_to`.
fn register_naive(
    flows: &Flows,
    client_to: SocketAddr,
    server_to: SocketAddr,
) -> anyhow::Result<()> {
    let mut b = [0u8; 64];
    for (s, sid) in flows.socks.iter().zip(&flows.sids) {
        let n = encode_forward(&mut b, *sid, b"hello")?;
        s.send_to(&b[..n], client_to)?;
    }
    for sid in &flows.sids {
        let n = encode_forward(&mut b, *sid, b"hello")?;
        flows.receiver.send_to(&b[..n], server_to)?;
    }
    Ok(())
}

/// Admits `count` sessions on a fresh relay (one client and one server socket shared by all
/// sessions) and reads the relay's RSS before and after.
fn session_count(
    opts: &RelayOptions,
    count: usize,
    keys: &[IdentityKey; 2],
) -> anyhow::Result<SessionCount> {
    let relay = RelayProcess::start(&RelayOptions {
        max_sessions: count + count / 8 + 16,
        ..opts.clone()
    })?;
    let socks = [
        std::net::UdpSocket::bind("127.0.0.1:0")?,
        std::net::UdpSocket::bind("127.0.0.1:0")?,
    ];
    for s in &socks {
        forwarders::big_buffers(s);
    }
    let rss_before = setup::rss_bytes(relay.pid())?;
    let sids: Vec<[u8; 16]> = (0..count).map(|_| setup::random_sid()).collect();
    let mut peers = Vec::with_capacity(count * 2);
    for sid in &sids {
        peers.push(Presentation {
            sock: 0,
            sid: *sid,
            role: PeerRole::Client,
        });
        peers.push(Presentation {
            sock: 1,
            sid: *sid,
            role: PeerRole::Server,
        });
    }
    let t = std::time::Instant::now();
    let step = (count * 2 / 10).max(1);
    let mut next = step;
    setup::admit(&relay, &socks, &[], keys, &peers, |done| {
        if done >= next {
            eprintln!(
                "session count: {} / {} peers admitted",
                done.min(count * 2),
                count * 2
            );
            next += step;
        }
    })?;
    let admit_seconds = t.elapsed().as_secs_f64();
    let rss_after = setup::rss_bytes(relay.pid())?;
    // Every session still forwards: one datagram each, client to server.
    socks[1].set_read_timeout(Some(std::time::Duration::from_millis(300)))?;
    let mut b = [0u8; 64];
    let mut forwarded = 0u64;
    for chunk in sids.chunks(256) {
        for sid in chunk {
            let n = encode_forward(&mut b, *sid, b"count")?;
            socks[0].send_to(&b[..n], relay.udp)?;
        }
        let mut rx = [0u8; 128];
        for _ in chunk {
            if socks[1].recv(&mut rx).is_err() {
                break;
            }
            forwarded += 1;
        }
    }
    eprintln!(
        "session count: {count} sessions, relay RSS {:.1} MiB (before admission {:.1} MiB), {forwarded} forwarded",
        rss_after as f64 / 1_048_576.0,
        rss_before as f64 / 1_048_576.0
    );
    Ok(SessionCount {
        sessions: count,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        admit_seconds,
        forwarded_after: forwarded,
    })
}
